//! Where gengate may send requests on a client's behalf (callbacks, input
//! images): never to loopback, private, link-local, multicast or cloud
//! metadata addresses, unless configuration allows the network. Names are
//! checked when they are resolved for the connection itself, so a name that
//! turns private after it was accepted (DNS rebinding) is refused then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// An IP network, `10.0.0.0/8` or `::1/128` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (like 10.0.0.0/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses no request made for a client may reach by default.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => is_internal_v4(a),
        IpAddr::V6(a) => is_internal_v6(a),
    }
}

fn is_internal_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local() // 169.254/16, cloud metadata included
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_unspecified()
        || a.is_documentation()
        || o0 == 0
        || (o0 == 100 && (o1 & 0xC0) == 64) // 100.64/10, carrier-grade NAT
        || (o0 == 192 && o1 == 0 && a.octets()[2] == 0) // 192.0.0/24, IETF protocol assignments
        || (o0 == 198 && (o1 & 0xFE) == 18) // 198.18/15, benchmarking
        || o0 >= 240 // reserved
}

fn is_internal_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (first & 0xFE00) == 0xFC00 // fc00::/7 unique local, AWS metadata fd00:ec2::254 included
        || (first & 0xFFC0) == 0xFE80 // fe80::/10 link-local
        || a.to_ipv4().is_some_and(|v4| a.segments()[..6] == [0; 6] && is_internal_v4(v4)) // ::a.b.c.d
}

#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Arc<Vec<Cidr>>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<Cidr>) -> AddressPolicy {
        AddressPolicy {
            allowed: Arc::new(allowed),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|c| c.contains(ip)) || !is_internal(ip)
    }

    fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        if addrs.is_empty() {
            return Err(format!("{host} does not resolve"));
        }
        match addrs.iter().find(|a| !self.permits(a.ip())) {
            Some(bad) => Err(format!(
                "{host} resolves to {}, an internal address gengate does not send requests to",
                bad.ip()
            )),
            None => Ok(()),
        }
    }

    /// Resolve the URL's host and refuse it if any of its addresses is not
    /// permitted, or if it does not resolve: for a URL about to be used.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        self.judge(url, false).await
    }

    /// [`check_url`](Self::check_url) for a URL a client gives, to be used
    /// later: a name that does not resolve yet is taken (each use resolves
    /// it again and refuses it then if it must), an address or a name that
    /// resolves to one not permitted is refused.
    pub async fn check_url_at_accept(&self, url: &str) -> Result<(), String> {
        self.judge(url, true).await
    }

    async fn judge(&self, url: &str, unresolved_ok: bool) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        let host = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => {
                return self.check_addrs(url, &[SocketAddr::new(ip.into(), 0)]);
            }
            Some(url::Host::Ipv6(ip)) => {
                return self.check_addrs(url, &[SocketAddr::new(ip.into(), 0)]);
            }
            Some(url::Host::Domain(d)) => d.to_string(),
            None => return Err("the URL has no host".into()),
        };
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
            Ok(found) => found.collect(),
            Err(_) if unresolved_ok => return Ok(()),
            Err(e) => return Err(format!("{host} does not resolve: {e}")),
        };
        if addrs.is_empty() && unresolved_ok {
            return Ok(());
        }
        self.check_addrs(&host, &addrs)
    }

    /// An HTTP client whose every connection is checked against the policy.
    pub fn client(&self, timeout: Duration, follow_redirects: bool) -> reqwest::Client {
        let redirects = if follow_redirects {
            reqwest::redirect::Policy::limited(3)
        } else {
            reqwest::redirect::Policy::none()
        };
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(redirects)
            .dns_resolver(Arc::new(Resolver(self.clone())))
            .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    }
}

/// Resolution for outbound connections, refusing internal addresses.
struct Resolver(AddressPolicy);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy
                .check_addrs(&host, &addrs)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let p = AddressPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} should be refused");
        }
        for good in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(p.permits(ip(good)), "{good} should be permitted");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_themselves() {
        let p = AddressPolicy::new(vec![
            "127.0.0.2/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        assert!(p.permits(ip("127.0.0.2")));
        assert!(!p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("10.200.0.1")));
        assert!(!p.permits(ip("11.0.0.1")) || !is_internal(ip("11.0.0.1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert_eq!("::1".parse::<Cidr>().unwrap().prefix, 128);
    }

    #[tokio::test]
    async fn urls_are_judged_by_what_they_resolve_to() {
        let p = AddressPolicy::new(vec!["127.0.0.2/32".parse().unwrap()]);
        assert!(p.check_url("http://127.0.0.2:9/hook").await.is_ok());
        assert!(p.check_url("http://127.0.0.1:9/hook").await.is_err());
        assert!(p.check_url("http://localhost:9/hook").await.is_err());
        assert!(p.check_url("http://[::1]:9/hook").await.is_err());
        // At accept, only what resolves (or is) an internal address is refused.
        assert!(
            p.check_url_at_accept("http://localhost:9/hook")
                .await
                .is_err()
        );
        assert!(p.check_url_at_accept("http://10.0.0.1/hook").await.is_err());
        let unknown = "http://no-such-host.invalid/hook";
        assert!(p.check_url_at_accept(unknown).await.is_ok());
        assert!(p.check_url(unknown).await.is_err());
    }
}
