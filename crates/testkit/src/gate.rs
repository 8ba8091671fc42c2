//! A TCP pass-through to a local server that a test can shut: while shut,
//! every connection (pooled ones included) is cut and new ones are closed
//! at once, as when the server behind it is down.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpGate {
    /// `127.0.0.1:<port>` to connect to instead of the server.
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl TcpGate {
    /// A gate to `target`, open.
    pub async fn to(target: SocketAddr) -> TcpGate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let (open, rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        TcpGate { addr, open }
    }

    /// Cut every connection and refuse new ones until [`open`](Self::open).
    pub fn shut(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}
