//! LaunchDarkly's bucketing: a context's position in `[0, 1)` for a flag or segment.
//!
//! `SHA-1(prefix + "." + id)`, the first 15 hex digits as an integer, divided by
//! `0xFFFFFFFFFFFFFFF` — in 32-bit floats, as LaunchDarkly's evaluators compute it, so
//! edge cases land in the same bucket. `prefix` is `key + "." + salt`, or the decimal
//! seed of an experiment. Nothing is allocated: the hash is fed piece by piece.

use sha1::{Digest, Sha1};

/// The scale of the 60-bit hash prefix.
const LONG_SCALE: u64 = 0x0FFF_FFFF_FFFF_FFFF;

/// The bucket of `id` under `prefix`.
pub fn bucket(prefix: &str, id: &str) -> f32 {
    let mut h = Sha1::new();
    h.update(prefix.as_bytes());
    h.update(b".");
    h.update(id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 15 hex digits = the top 60 bits.
    let value = u64::from_be_bytes(first) >> 4;
    value as f32 / LONG_SCALE as f32
}

/// The text LaunchDarkly buckets a value by: a string as is, an integral number in
/// decimal; anything else cannot be bucketed. Writes into `buf` to avoid allocating.
pub fn bucketable<'a>(value: &'a serde_json::Value, buf: &'a mut [u8; 24]) -> Option<&'a str> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 || !f.is_finite() || f.abs() >= 9.2e18 {
                return None;
            }
            Some(format_int(f as i64, buf))
        }
        _ => None,
    }
}

fn format_int(mut n: i64, buf: &mut [u8; 24]) -> &str {
    let negative = n < 0;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10).unsigned_abs() as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        buf[i] = b'-';
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_reference_vectors() {
        let cases: [(&str, &str, f64); 6] = [
            ("hashKey.saltyA", "userKeyA", 0.42157587),
            ("hashKey.saltyA", "userKeyB", 0.67084850),
            ("hashKey.saltyA", "userKeyC", 0.10343106),
            ("61", "userKeyA", 0.09801207),
            ("61", "userKeyB", 0.14483777),
            ("61", "userKeyC", 0.92426409),
        ];
        for (prefix, id, expected) in cases {
            let b = f64::from(bucket(prefix, id));
            assert!((b - expected).abs() < 1e-7, "{prefix}.{id}: {b} != {expected}");
        }
    }

    #[test]
    fn integers_bucket_as_decimal_text() {
        let mut buf = [0u8; 24];
        assert_eq!(bucketable(&serde_json::json!(33), &mut buf), Some("33"));
        assert_eq!(bucketable(&serde_json::json!(-7.0), &mut buf), Some("-7"));
        assert_eq!(bucketable(&serde_json::json!(1.5), &mut buf), None);
        assert_eq!(bucketable(&serde_json::json!(true), &mut buf), None);
        assert_eq!(bucketable(&serde_json::json!("k"), &mut buf), Some("k"));
    }
}
