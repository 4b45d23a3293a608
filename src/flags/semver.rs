//! Semantic versions as LaunchDarkly compares them: SemVer 2.0 precedence, but a
//! missing minor or patch counts as 0 (`"2"` = `"2.0"` = `"2.0.0"`). Parsing borrows
//! the pre-release part, so comparing a context's value allocates nothing.

use std::cmp::Ordering;

/// A parsed version; `pre` is the pre-release part without the `-` (build metadata is
/// ignored, as SemVer says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemVer<'a> {
    major: u64,
    minor: u64,
    patch: u64,
    pre: &'a str,
}

fn numeric(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn valid_identifiers(s: &str, check_leading_zero: bool) -> bool {
    s.split('.').all(|id| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !(check_leading_zero && id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

impl<'a> SemVer<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        if build.is_some_and(|b| !valid_identifiers(b, false)) {
            return None;
        }
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, p),
            None => (rest, ""),
        };
        if rest.contains('-') && !valid_identifiers(pre, true) {
            return None;
        }
        let mut parts = core.split('.');
        let major = numeric(parts.next()?)?;
        let minor = parts.next().map_or(Some(0), numeric)?;
        let patch = parts.next().map_or(Some(0), numeric)?;
        if parts.next().is_some() {
            return None;
        }
        Some(SemVer { major, minor, patch, pre })
    }

    /// An owned copy, for a compiled clause value.
    pub fn to_owned(self) -> OwnedSemVer {
        OwnedSemVer { major: self.major, minor: self.minor, patch: self.patch, pre: self.pre.into() }
    }
}

/// A version kept in a compiled flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSemVer {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Box<str>,
}

impl OwnedSemVer {
    pub fn as_ref(&self) -> SemVer<'_> {
        SemVer { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

impl Ord for SemVer<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(self.pre, other.pre))
    }
}

impl PartialOrd for SemVer<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Pre-release precedence: a release is above any pre-release; identifiers compare
/// numerically when both are numeric, numeric below alphanumeric, else as text.
fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut ia = a.split('.');
    let mut ib = b.split('.');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(n), Ok(m))
                        if x.bytes().all(|c| c.is_ascii_digit()) && y.bytes().all(|c| c.is_ascii_digit()) =>
                    {
                        n.cmp(&m)
                    }
                    (Ok(_), Err(_)) if x.bytes().all(|c| c.is_ascii_digit()) => Ordering::Less,
                    (Err(_), Ok(_)) if y.bytes().all(|c| c.is_ascii_digit()) => Ordering::Greater,
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SemVer<'_> {
        SemVer::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_like_launchdarkly() {
        assert_eq!(v("2"), v("2.0.0"));
        assert_eq!(v("2.0-rc"), v("2.0.0-rc"));
        assert_eq!(v("2.0.0+build"), v("2.0.0"));
        for bad in ["02.0.0", "v2.0.0", "2.0.0.0", "", "2.", "2.0.0-", "2.0.0-01", "a.b.c", "2.0.0+"] {
            assert!(SemVer::parse(bad).is_none(), "{bad} should not parse");
        }
    }

    #[test]
    fn orders_by_semver_precedence() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2",
            "2.1",
            "2.1.1",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert!(v("2.0.0-rc.2.green") < v("2.0.0-rc.10.green"));
        assert!(v("2.0.0-rc.2.green") < v("2.0.0-rc.2.red"));
    }
}
