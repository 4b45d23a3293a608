//! Response tokens: what a routed response carries so that a later signal (feedback,
//! tracking) lands on the arm that served it, with no lookup table. A token names the
//! flag, the variation, the AI config and its version, the experiment iteration, a digest
//! of the context, when it was issued and a random nonce, and is signed with
//! HMAC-SHA-256 (ring's, the crypto rustls already uses) under a key every sluice of a
//! deployment shares — so any of them, after any restart, can check it and read it.
//!
//! Shape: `sr1.` then unpadded base64url of the payload and the first 16 bytes of its MAC:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format (1) |
//! | 1 | bits: 1 = the context key was random (the request named no context) |
//! | 8 | issued, ms since the Unix epoch (big-endian) |
//! | 8 | nonce |
//! | 4 | experiment iteration (0: none) |
//! | 4 | AI config version |
//! | 8 | an HMAC of the context's (kind, key) pairs under the same key, truncated |
//! | 1 + n, 1 + n, 1 + n | flag, variation, AI config key (length-prefixed, each ≤ 255 bytes) |
//!
//! The payload is readable by anyone who holds the token (it is not encrypted): it holds
//! names from the configuration and a keyed digest of the context (which says nothing of
//! the context without the key), never a context key or any request data.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use std::hash::BuildHasher;

/// The prefix of every token of this format.
pub const PREFIX: &str = "sr1.";
const FORMAT: u8 = 1;
const MAC_BYTES: usize = 16;
/// Domain separation: the MAC of a token can never be mistaken for another use of the key.
const DOMAIN: &[u8] = b"sluice response token v1\0";
const CONTEXT_DOMAIN: &[u8] = b"sluice context digest v1\0";
/// Longest token accepted (the three names at their longest).
pub const MAX_LEN: usize = PREFIX.len() + (35 + 3 * 256 + MAC_BYTES).div_ceil(3) * 4;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issued_ms: u64,
    pub nonce: [u8; 8],
    pub random_context: bool,
    pub iteration: u32,
    pub version: u32,
    pub context: [u8; 8],
    pub flag: String,
    pub variation: String,
    pub ai_config: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a sluice response token")]
    Malformed,
    #[error("the token's signature does not match: it was altered, or signed with another key")]
    BadSignature,
}

/// Signs and checks tokens with one key.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Signer { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// The digest a token keeps of a context: an HMAC of its (kind, key) pairs, in order,
    /// each part length-prefixed, under this key — so it tells whether two tokens are of
    /// one context, and nothing about the context to whoever lacks the key (a plain hash
    /// of a user key is guessed in seconds).
    pub fn context_digest<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> [u8; 8] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(CONTEXT_DOMAIN);
        for part in pairs.into_iter().flat_map(|(kind, key)| [kind, key]) {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let tag = ctx.sign();
        let mut out = [0; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        out
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(DOMAIN);
        ctx.update(payload);
        let tag = ctx.sign();
        let mut out = [0; MAC_BYTES];
        out.copy_from_slice(&tag.as_ref()[..MAC_BYTES]);
        out
    }

    /// The token of `claims`; `None` when a name is longer than 255 bytes.
    pub fn sign(&self, c: &Claims) -> Option<String> {
        let names = [&c.flag, &c.variation, &c.ai_config];
        let mut payload = Vec::with_capacity(35 + names.iter().map(|n| n.len() + 1).sum::<usize>() + MAC_BYTES);
        payload.push(FORMAT);
        payload.push(u8::from(c.random_context));
        payload.extend_from_slice(&c.issued_ms.to_be_bytes());
        payload.extend_from_slice(&c.nonce);
        payload.extend_from_slice(&c.iteration.to_be_bytes());
        payload.extend_from_slice(&c.version.to_be_bytes());
        payload.extend_from_slice(&c.context);
        for name in names {
            payload.push(u8::try_from(name.len()).ok()?);
            payload.extend_from_slice(name.as_bytes());
        }
        let mac = self.mac(&payload);
        payload.extend_from_slice(&mac);
        let mut out = String::with_capacity(PREFIX.len() + payload.len().div_ceil(3) * 4);
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        Some(out)
    }

    /// Check a token and read it. The signature is compared in constant time and checked
    /// before any field is read.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let body = token.strip_prefix(PREFIX).filter(|_| token.len() <= MAX_LEN).ok_or(TokenError::Malformed)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
        if raw.len() < 35 + 3 + MAC_BYTES {
            return Err(TokenError::Malformed);
        }
        let (payload, mac) = raw.split_at(raw.len() - MAC_BYTES);
        let expected = self.mac(payload);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], mac)) {
            return Err(TokenError::BadSignature);
        }
        parse(payload).ok_or(TokenError::Malformed)
    }
}

/// A signed payload's fields (a signed payload of another shape is still refused).
fn parse(p: &[u8]) -> Option<Claims> {
    let mut at = 0;
    let mut take = |n: usize| {
        let s = p.get(at..at + n)?;
        at += n;
        Some(s)
    };
    if take(1)? != [FORMAT] {
        return None;
    }
    let bits = take(1)?[0];
    let issued_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let nonce: [u8; 8] = take(8)?.try_into().ok()?;
    let iteration = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let version = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let context: [u8; 8] = take(8)?.try_into().ok()?;
    let mut name = || {
        let n = usize::from(take(1)?[0]);
        String::from_utf8(take(n)?.to_vec()).ok()
    };
    let (flag, variation, ai_config) = (name()?, name()?, name()?);
    (at == p.len()).then_some(Claims {
        issued_ms,
        nonce,
        random_context: bits & 1 == 1,
        iteration,
        version,
        context,
        flag,
        variation,
        ai_config,
    })
}

/// A (token, metric) pair, as the de-duplication set keeps it.
type Seen = (u64, u64, u64);

/// The (token, metric) pairs accepted and not yet expired: a second signal for the same
/// pair is a duplicate. Bounded: an entry lives until its token expires (after that the
/// token is refused as too old anyway) and at most `capacity` entries are kept — past
/// that, new pairs are refused rather than risk counting one twice. With a fleet store, a
/// pair this set takes is then claimed for the whole fleet too ([`SharedDedup`]), so the
/// same signal sent to two instances counts once.
pub struct Dedup {
    capacity: std::sync::atomic::AtomicUsize,
    inner: std::sync::Mutex<DedupInner>,
    shared: std::sync::OnceLock<std::sync::Arc<dyn SharedDedup>>,
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup").field("capacity", &self.capacity).field("shared", &self.shared.get().is_some()).finish()
    }
}

/// A de-duplication set shared by every instance (the fleet's, in Redis).
pub trait SharedDedup: Send + Sync {
    /// Claim each of `pairs` for `ttl_ms`: per pair, `true` when it is new to the fleet,
    /// `false` when an instance claimed it before; an error when that cannot be told now.
    /// Blocking.
    fn claim(&self, pairs: &[String], ttl_ms: u64) -> Result<Vec<bool>, String>;
}

#[derive(Debug, Default)]
struct DedupInner {
    seen: std::collections::HashSet<Seen>,
    /// (expiry ms, pair), oldest expiry first.
    by_expiry: std::collections::BTreeSet<(u64, Seen)>,
}

/// Expired pairs removed by one take (more only when the set is full).
const SWEEP: usize = 64;

impl DedupInner {
    /// Forget at most `most` pairs expired at `now_ms`.
    fn expire(&mut self, now_ms: u64, most: usize) {
        for _ in 0..most {
            match self.by_expiry.first() {
                Some(&(expiry, old)) if expiry <= now_ms => {
                    self.by_expiry.pop_first();
                    self.seen.remove(&old);
                }
                _ => break,
            }
        }
    }
}

/// Why a pair was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupError {
    Duplicate,
    Full,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity: std::sync::atomic::AtomicUsize::new(capacity),
            inner: std::sync::Mutex::default(),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Claim every pair this set takes for the whole fleet too (once, at start).
    pub fn share(&self, shared: std::sync::Arc<dyn SharedDedup>) {
        let _ = self.shared.set(shared);
    }

    /// The fleet's set, with a fleet store.
    pub fn shared(&self) -> Option<std::sync::Arc<dyn SharedDedup>> {
        self.shared.get().cloned()
    }

    fn pair(c: &Claims, metric: &str) -> Seen {
        (u64::from_be_bytes(c.nonce), c.issued_ms, foldhash::fast::FixedState::with_seed(0).hash_one(metric))
    }

    /// The pair (token `c`, `metric`) as the fleet's set names it: the same on every
    /// instance (the token's nonce and time, and the metric's name), never the token.
    pub fn pair_name(c: &Claims, metric: &str) -> String {
        format!("{:016x}:{}:{metric}", u64::from_be_bytes(c.nonce), c.issued_ms)
    }

    /// Forget a pair taken here that the fleet could not be asked about (so that the
    /// signal, sent again, is not refused as a duplicate of one that never counted).
    pub fn forget(&self, c: &Claims, metric: &str, expires_ms: u64) {
        let key = Self::pair(c, metric);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.seen.remove(&key);
        inner.by_expiry.remove(&(expires_ms, key));
    }

    /// Take the pair (token `c`, `metric`), which expires at `expires_ms`, at time `now_ms`.
    pub fn take(&self, c: &Claims, metric: &str, expires_ms: u64, now_ms: u64) -> Result<(), DedupError> {
        let key = Self::pair(c, metric);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A few expired pairs go with each take, so the lock is held briefly; all of them
        // only when the set is full.
        inner.expire(now_ms, SWEEP);
        if inner.seen.contains(&key) {
            return Err(DedupError::Duplicate);
        }
        if inner.seen.len() >= self.capacity() {
            inner.expire(now_ms, usize::MAX);
            if inner.seen.len() >= self.capacity() {
                return Err(DedupError::Full);
            }
        }
        inner.seen.insert(key);
        inner.by_expiry.insert((expires_ms, key));
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new bound (a reload): the pairs already taken stay; below the new bound, new ones
    /// are refused until enough expire.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_taken_once_until_it_expires_and_the_set_is_bounded() {
        let d = Dedup::new(2);
        let a = claims();
        let b = Claims { nonce: [9; 8], ..claims() };
        let c = Claims { nonce: [10; 8], ..claims() };
        assert_eq!(d.take(&a, "thumbs_up", 100, 0), Ok(()));
        assert_eq!(d.take(&a, "thumbs_up", 100, 1), Err(DedupError::Duplicate));
        // Another metric of the same token is another pair.
        assert_eq!(d.take(&a, "task_seconds", 200, 1), Ok(()));
        assert_eq!(d.take(&b, "thumbs_up", 300, 2), Err(DedupError::Full));
        // Once the first pair expires, it leaves room (and is forgotten: its token is too old by then).
        assert_eq!(d.take(&b, "thumbs_up", 300, 100), Ok(()));
        assert_eq!(d.len(), 2);
        assert_eq!(d.take(&c, "thumbs_up", 300, 250), Ok(()));
        assert_eq!(d.take(&b, "thumbs_up", 300, 250), Err(DedupError::Duplicate));
    }

    fn claims() -> Claims {
        Claims {
            issued_ms: 1_764_600_000_000,
            nonce: [1, 2, 3, 4, 5, 6, 7, 8],
            random_context: false,
            iteration: 3,
            version: 2,
            context: Signer::new(&[7; 32]).context_digest([("user", "u-1")]),
            flag: "support-bot".into(),
            variation: "candidate".into(),
            ai_config: "support-prompt".into(),
        }
    }

    #[test]
    fn a_token_reads_back_what_was_signed() {
        let s = Signer::new(&[7; 32]);
        let t = s.sign(&claims()).unwrap();
        assert!(t.starts_with(PREFIX) && t.len() < 128, "{t} ({} chars)", t.len());
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{t}");
        assert_eq!(s.verify(&t), Ok(claims()));
        let random = Claims { random_context: true, ..claims() };
        assert_eq!(s.verify(&s.sign(&random).unwrap()), Ok(random));
    }

    #[test]
    fn an_altered_or_foreign_token_is_refused() {
        let s = Signer::new(&[7; 32]);
        let t = s.sign(&claims()).unwrap();
        // Every single-character change of the body is caught.
        for i in PREFIX.len()..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(b).unwrap();
            assert!(s.verify(&altered).is_err(), "altered at {i}: {altered}");
        }
        assert_eq!(Signer::new(&[8; 32]).verify(&t), Err(TokenError::BadSignature));
        for bad in ["", "sr1.", "sr1.!!!!", "sr2.AAAA", "0123456789abcdef", &"sr1.A".repeat(400)] {
            assert_eq!(s.verify(bad), Err(TokenError::Malformed), "{bad}");
        }
        // Truncated: the MAC no longer lines up.
        assert!(s.verify(&t[..t.len() - 4]).is_err());
    }

    #[test]
    fn names_longer_than_a_length_byte_get_no_token() {
        let s = Signer::new(&[7; 32]);
        let long = Claims { flag: "f".repeat(256), ..claims() };
        assert_eq!(s.sign(&long), None);
        let longest =
            Claims { flag: "f".repeat(255), variation: "v".repeat(255), ai_config: "a".repeat(255), ..claims() };
        let t = s.sign(&longest).unwrap();
        assert!(t.len() <= MAX_LEN);
        assert_eq!(s.verify(&t), Ok(longest));
    }

    #[test]
    fn the_context_digest_depends_on_every_pair_and_on_the_key() {
        let s = Signer::new(&[7; 32]);
        let a = s.context_digest([("user", "a")]);
        assert_eq!(a, s.context_digest([("user", "a")]));
        assert_ne!(a, s.context_digest([("user", "b")]));
        assert_ne!(a, s.context_digest([("org", "a")]));
        assert_ne!(s.context_digest([("user", "a:b")]), s.context_digest([("user:a", "b")]));
        // Without the key, a guessed user key gives another digest.
        assert_ne!(a, Signer::new(&[8; 32]).context_digest([("user", "a")]));
    }
}
