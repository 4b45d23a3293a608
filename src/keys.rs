//! Keys and tokens as sluice keeps them: SHA-256 digests, the one [`KeyRing`] that gateway
//! keys and admin tokens are looked up in (a presented key is hashed once and compared with
//! every digest in constant time), the one reading of a configured key ([`configured`]:
//! in clear or as a hex digest, which config validation reports on), and the one
//! `Authorization: Bearer` parser.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A SHA-256 digest of a gateway key.
pub type KeyDigest = [u8; 32];

/// The credential of an `Authorization: Bearer <token>` header value, surrounding spaces
/// trimmed; the scheme is case-insensitive (RFC 9110 §11.1). The one parser for gateway
/// keys and admin tokens.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => Some(value[7..].trim_ascii()),
        _ => None,
    }
}

/// SHA-256 of `key`.
pub fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// Parse a hex SHA-256 digest (64 hex digits, either case).
pub fn parse_digest(hex: &str) -> Option<KeyDigest> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Why a configured key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// Given in clear and shorter than the minimum (`0` characters when the minimum is 1).
    TooShort { min_len: usize },
    /// Its `…_sha256` form is not 64 hex digits.
    BadDigest,
    /// Given both ways, or neither.
    NotExactlyOne,
}

/// The digest of a key configured either in clear (at least `min_len` characters) or as
/// its hex SHA-256 digest; exactly one of the two.
pub fn configured(clear: Option<&str>, hex: Option<&str>, min_len: usize) -> Result<KeyDigest, KeyProblem> {
    match (clear, hex) {
        (Some(key), None) if key.len() < min_len => Err(KeyProblem::TooShort { min_len }),
        (Some(key), None) => Ok(digest(key.as_bytes())),
        (None, Some(hex)) => parse_digest(hex).ok_or(KeyProblem::BadDigest),
        _ => Err(KeyProblem::NotExactlyOne),
    }
}

/// Keys as digests, each with what it opens (a gateway client, an admin token's name and
/// role). No key is kept in clear.
#[derive(Debug)]
pub struct KeyRing<T> {
    entries: Vec<(KeyDigest, T)>,
}

impl<T> Default for KeyRing<T> {
    fn default() -> Self {
        KeyRing { entries: Vec::new() }
    }
}

impl<T> FromIterator<(KeyDigest, T)> for KeyRing<T> {
    fn from_iter<I: IntoIterator<Item = (KeyDigest, T)>>(iter: I) -> Self {
        KeyRing { entries: iter.into_iter().collect() }
    }
}

impl<T> KeyRing<T> {
    /// What `key` opens. `key` is hashed once and compared with every digest, match or
    /// not, in constant time: neither the key nor which entry matched shows in the timing.
    pub fn open(&self, key: &[u8]) -> Option<&T> {
        let presented = digest(key);
        let mut found = None;
        for (candidate, value) in &self.entries {
            if bool::from(candidate.ct_eq(&presented)) {
                found = Some(value);
            }
        }
        found
    }

    /// Every entry's value.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_opens_only_for_its_keys() {
        let ring: KeyRing<&str> = [(digest(b"k1"), "one"), (digest(b"k2"), "two")].into_iter().collect();
        assert_eq!(ring.open(b"k2"), Some(&"two"));
        assert_eq!(ring.open(b"k1"), Some(&"one"));
        assert_eq!(ring.open(b"k3"), None);
        assert_eq!(ring.open(b""), None);
        assert_eq!(ring.values().count(), 2);
    }

    #[test]
    fn a_configured_key_is_read_one_way_only() {
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(configured(Some("abc"), None, 1), Ok(digest(b"abc")));
        assert_eq!(configured(None, Some(hex), 16), Ok(digest(b"abc")));
        assert_eq!(configured(Some("short"), None, 16), Err(KeyProblem::TooShort { min_len: 16 }));
        assert_eq!(configured(None, Some("zz"), 1), Err(KeyProblem::BadDigest));
        assert_eq!(configured(Some("abc"), Some(hex), 1), Err(KeyProblem::NotExactlyOne));
        assert_eq!(configured(None, None, 1), Err(KeyProblem::NotExactlyOne));
    }

    #[test]
    fn digest_round_trips_through_hex() {
        let d = digest(b"abc");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(parse_digest(&hex.to_uppercase()), Some(d));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_trimmed() {
        for v in ["Bearer tok", "bearer tok", "BEARER  tok ", "bEaReR tok"] {
            assert_eq!(bearer(v.as_bytes()), Some(&b"tok"[..]), "{v}");
        }
        for v in ["Basic tok", "Bearertok", "Bear", ""] {
            assert_eq!(bearer(v.as_bytes()), None, "{v}");
        }
    }
}
