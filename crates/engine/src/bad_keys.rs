//! Failed key attempts per client address. Past [`STRIKES`] wrong keys in
//! [`WINDOW`], an address is refused (429) for [`COOL_DOWN`], with a valid
//! key or not: keys cannot be tried at speed, and a flood of wrong keys
//! stops before the key store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gengate_core::ApiError;

/// Wrong keys an address may present in one window.
pub const STRIKES: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const COOL_DOWN: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond, the oldest windows go first.
const ADDRESSES: usize = 100_000;

#[derive(Clone, Copy)]
struct Record {
    strikes: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Default)]
pub struct BadKeys(Mutex<HashMap<IpAddr, Record>>);

impl BadKeys {
    /// Refuse an address that is cooling down, before its key is looked at.
    pub fn admit(&self, from: IpAddr, now: Instant) -> Result<(), ApiError> {
        let Ok(records) = self.0.lock() else {
            return Ok(());
        };
        match records.get(&client(from)).and_then(|r| r.blocked_until) {
            Some(until) if until > now => Err(ApiError::RateLimited {
                // Whole seconds, rounded up: never a Retry-After of 0.
                retry_after_secs: (until - now).as_millis().div_ceil(1000).max(1) as u64,
            }),
            _ => Ok(()),
        }
    }

    /// Count a wrong key from `from`; true when it starts a cool-down.
    pub fn strike(&self, from: IpAddr, now: Instant) -> bool {
        let Ok(mut records) = self.0.lock() else {
            return false;
        };
        let from = client(from);
        if records.len() >= ADDRESSES && !records.contains_key(&from) {
            // Forget finished windows; under a flood from this many
            // addresses, the oldest unblocked ones too, but never a
            // cool-down in progress.
            records.retain(|_, r| {
                now.duration_since(r.since) < WINDOW || r.blocked_until.is_some_and(|u| u > now)
            });
            if records.len() >= ADDRESSES {
                records.retain(|_, r| r.blocked_until.is_some_and(|u| u > now));
            }
            if records.len() >= ADDRESSES {
                return false;
            }
        }
        let fresh = Record {
            strikes: 0,
            since: now,
            blocked_until: None,
        };
        let record = records.entry(from).or_insert(fresh);
        if now.duration_since(record.since) >= WINDOW
            && record.blocked_until.is_none_or(|u| u <= now)
        {
            *record = fresh;
        }
        record.strikes += 1;
        if record.strikes > STRIKES && record.blocked_until.is_none_or(|u| u <= now) {
            record.blocked_until = Some(now + COOL_DOWN);
            return true;
        }
        false
    }
}

/// The client an address stands for: an IPv6 address by its /64, which
/// one subscriber holds whole (counting each address would let it try
/// 2^64 keys a window).
fn client(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_is_refused_after_too_many_wrong_keys_then_forgiven() {
        let bad = BadKeys::default();
        let t0 = Instant::now();
        for _ in 0..STRIKES {
            assert!(!bad.strike(addr(1), t0));
        }
        assert!(
            bad.admit(addr(1), t0).is_ok(),
            "the burst itself is allowed"
        );
        assert!(bad.strike(addr(1), t0), "one more starts the cool-down");
        let Err(ApiError::RateLimited { retry_after_secs }) = bad.admit(addr(1), t0) else {
            panic!("a cooling address is refused");
        };
        assert_eq!(retry_after_secs, COOL_DOWN.as_secs());
        assert!(bad.admit(addr(2), t0).is_ok(), "other addresses are not");
        assert!(bad.admit(addr(1), t0 + COOL_DOWN).is_ok());
        // A new window starts from nothing.
        assert!(!bad.strike(addr(1), t0 + COOL_DOWN + WINDOW));
        assert!(bad.admit(addr(1), t0 + COOL_DOWN + WINDOW).is_ok());
    }

    #[test]
    fn an_ipv6_subscriber_is_counted_by_its_64() {
        let bad = BadKeys::default();
        let t0 = Instant::now();
        let in_64 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for i in 0..=STRIKES {
            bad.strike(in_64(i as u16), t0);
        }
        assert!(
            bad.admit(in_64(999), t0).is_err(),
            "the whole /64 cools down"
        );
        let elsewhere = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(bad.admit(elsewhere, t0).is_ok());
    }

    #[test]
    fn strikes_spread_over_windows_never_block() {
        let bad = BadKeys::default();
        let t0 = Instant::now();
        for window in 0..5u32 {
            for _ in 0..STRIKES {
                assert!(!bad.strike(addr(1), t0 + WINDOW * window));
            }
        }
        assert!(bad.admit(addr(1), t0 + WINDOW * 5).is_ok());
    }
}
