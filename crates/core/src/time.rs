//! Time formats the dialects answer in.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::task::Millis;

/// RFC 3339 with milliseconds and `Z`, as the seed writes `created_at`.
pub fn rfc3339_ms(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An instant given as Unix milliseconds or RFC 3339.
pub fn parse_instant(s: &str) -> Option<Millis> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_the_seed() {
        assert_eq!(
            super::rfc3339_ms(1_734_874_720_139),
            "2024-12-22T13:38:40.139Z"
        );
    }
}
