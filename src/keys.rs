//! Keys and tokens as sluice keeps them: SHA-256 digests (a presented key is hashed once
//! and compared in constant time by its users), hex digests from the config, and the one
//! `Authorization: Bearer` parser for gateway keys and admin tokens.

use sha2::{Digest, Sha256};

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

#[cfg(test)]
mod tests {
    use super::*;

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
