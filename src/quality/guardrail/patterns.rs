//! Built-in detectors: secrets, personal data, refusals.
//!
//! Each regex is compiled once, on first use; a detector is a scan of the answer with no
//! allocation. Word boundaries are ASCII (`(?-u:\b)`) so that the lazy DFA serves every
//! answer, also non-ASCII ones (a Unicode `\b` falls back to a slower engine there).

use std::sync::LazyLock;

use regex::Regex;

use crate::config::guardrails::compile_regex;

/// API keys and tokens of well-known shapes. Prefixes are fixed; `sk-` keys and bearer
/// tokens are vetted by [`looks_random`], as their alphabet also spells words.
static SECRETS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile_regex(concat!(
        // OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-api03-…).
        r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
        // AWS access key ids.
        r"|(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
        // GitHub classic and fine-grained tokens.
        r"|(?-u:\b)gh[pousr]_[A-Za-z0-9]{36}(?-u:\b)",
        r"|(?-u:\b)github_pat_[A-Za-z0-9_]{22,}",
        // Slack bot, user, app, refresh and legacy tokens.
        r"|(?-u:\b)xox[bpaors]-[A-Za-z0-9-]{10,}",
        // Google API keys.
        r"|(?-u:\b)AIza[0-9A-Za-z_-]{35}",
        // PEM / OpenSSH / PGP private keys.
        r"|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        // `Authorization: Bearer <token>`, token of 20+ token characters.
        r"|(?-u:\b)Bearer[ \t]+[A-Za-z0-9._~+/=-]{20,}",
    ))
    .ok()
});

/// Whether the built-in regexes compile (they do; checked when a guardrail compiles so
/// that a broken build fails the config, never silently passes answers).
pub(super) fn builtins_ok() -> bool {
    SECRETS.is_some() && EMAIL.is_some() && REFUSAL.is_some()
}

/// Whether `text` holds a secret.
pub(super) fn has_secret(text: &str) -> bool {
    let Some(re) = SECRETS.as_ref() else { return false };
    re.find_iter(text).any(|m| {
        let s = m.as_str();
        match s.strip_prefix("sk-").or_else(|| s.strip_prefix("Bearer")) {
            Some(token) => looks_random(token.trim_start()),
            None => true,
        }
    })
}

/// A generated token mixes at least two of digits, lower- and upper-case letters; words
/// and placeholders (`sk-learn-is-a-library`, `YOUR_API_KEY_HERE`) do not.
fn looks_random(token: &str) -> bool {
    let (mut digit, mut lower, mut upper) = (false, false, false);
    for b in token.bytes() {
        digit |= b.is_ascii_digit();
        lower |= b.is_ascii_lowercase();
        upper |= b.is_ascii_uppercase();
    }
    u8::from(digit) + u8::from(lower) + u8::from(upper) >= 2
}

/// An e-mail address: RFC 5322's common subset — a dot-atom local part, `@`, and a domain
/// of dot-separated labels ending in an alphabetic TLD of 2+ letters (`user@localhost` is
/// not matched; quoted local parts and IP-literal domains are not either).
static EMAIL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile_regex(
        r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?-u:\b)",
    )
    .ok()
});

/// Whether `text` holds an e-mail address.
pub(super) fn has_email(text: &str) -> bool {
    EMAIL.as_ref().is_some_and(|re| re.is_match(text))
}

/// Refusals in English: "I'm sorry, but I can't…", "I cannot help with…", "As an AI
/// language model…", "I must decline…". An apology alone ("sorry for the delay") is not one.
/// Spaces are ASCII whitespace: a Unicode `\s` under `(?i)` costs the regex its literal
/// prefilters (about 25× slower on a typical answer).
static REFUSAL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    const CANNOT: &str = r"(?:can't|can’t|cannot|can(?-u:\s)+not|won't|won’t|will(?-u:\s)+not|am(?-u:\s)+(?:not(?-u:\s)+able|unable)|(?:'|’)m(?-u:\s)+(?:not(?-u:\s)+able|unable)|am(?-u:\s)+not(?-u:\s)+(?:allowed|permitted)|must(?-u:\s)+(?:respectfully(?-u:\s)+)?(?:decline|refuse))";
    const DO: &str = r"(?:help|assist|provide|comply|fulfil|do(?-u:\s)+that|do(?-u:\s)+this|answer|support|engage|share|create|generate|write|give|discuss|participate)";
    let apology = r"(?:(?:i'm|i’m|i(?-u:\s)+am)(?-u:\s)+(?:so(?-u:\s)+|really(?-u:\s)+|very(?-u:\s)+)?(?:sorry|afraid)|i(?-u:\s)+apologi[sz]e|sorry)";
    compile_regex(&format!(
        r"(?i)(?-u:\b){apology}[,.!]?(?-u:\s)+(?:but(?-u:\s)+)?i(?-u:\s)+{CANNOT}|(?-u:\b)i(?-u:\s)+{CANNOT}(?-u:\s)+(?:to(?-u:\s)+)?{DO}(?-u:\b)|(?-u:\b)as(?-u:\s)+an(?-u:\s)+ai(?:(?-u:\s)+language)?(?-u:\s)+model(?-u:\b)|(?-u:\b)i(?-u:\s)+must(?-u:\s)+(?:respectfully(?-u:\s)+)?(?:decline|refuse)(?-u:\b)"
    ))
    .ok()
});

/// Whether `text` is (or contains) a refusal, by the built-in pattern.
pub(super) fn has_refusal(text: &str) -> bool {
    REFUSAL.as_ref().is_some_and(|re| re.is_match(text))
}

/// The end of the maximal run at `start` of digits joined by single separators from `seps`.
fn digit_run(b: &[u8], start: usize, seps: &[u8]) -> usize {
    let mut i = start;
    while i < b.len() {
        let joins = seps.contains(&b[i]) && i > start && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !(b[i].is_ascii_digit() || joins) {
            break;
        }
        i += 1;
    }
    i
}

/// Whether the byte before `i` lets a number start at `i` (not part of a word or number).
fn starts_token(b: &[u8], i: usize) -> bool {
    i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Whether the byte at `i` (the end of a number) ends it (not followed by a word or number).
fn ends_token(b: &[u8], i: usize) -> bool {
    b.get(i).is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
}

/// Whether `text` holds a payment card number: 13–19 digits, optionally grouped by single
/// spaces or dashes, passing the Luhn check, and not part of a longer digit run or word
/// (the whole run is the number: 20 digits with a valid 16-digit stretch inside is not one).
pub(super) fn has_card(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let end = digit_run(b, i, b" -");
        if starts_token(b, i) && ends_token(b, end) && card_number(&b[i..end]) {
            return true;
        }
        i = end.max(i + 1);
    }
    false
}

/// 13–19 digits whose Luhn sum is a multiple of 10; when grouped, every group has 3+
/// digits (card groups are 4-4-4-4, 4-6-5, …; `1 2 3 …` is a list, not a card).
pub(super) fn card_number(run: &[u8]) -> bool {
    if run.split(|c| !c.is_ascii_digit()).any(|g| g.len() < 3) {
        return false;
    }
    let (mut n, mut sum) = (0u32, 0u32);
    for d in run.iter().rev().filter(|c| c.is_ascii_digit()).map(|c| u32::from(c - b'0')) {
        sum += if n % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        n += 1;
    }
    (13..=19).contains(&n) && sum % 10 == 0
}

/// Whether `text` holds a phone number. The rule (deliberately conservative: answers are
/// full of order ids, dates and amounts):
///
/// - a number is digit groups joined by one space, `-` or `.`, optionally led by `+` and
///   with one group in parentheses (`(555) 123-4567`), not touching a letter or digit;
/// - with a leading `+` (E.164, `+14155552671`, `+44 20 7946 0958`): 10–15 digits;
/// - without (national formats, `555-123-4567`, `020 7946 0958`, `01 23 45 67 89`):
///   10 or 11 digits in two or more groups of 2+ digits (a leading `1` may stand alone:
///   `1-555-123-4567`), all joined by the same separator — so a bare digit run (an order
///   id) never counts, and neither does a date and time (`2024-01-15 10:30`).
///
/// The separator after a `+` country code or after a parenthesized group may differ from
/// the rest (`+1 555-123-4567`, `(555) 123-4567`); scanning stops at the first other
/// change of separator, so `555-123-4567 2 times` still finds the number.
pub(super) fn has_phone(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let opens = c.is_ascii_digit() || ((c == b'+' || c == b'(') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !opens || !starts_token(b, i) {
            i += 1;
            continue;
        }
        let (is_phone, end) = phone_at(b, i);
        if is_phone {
            return true;
        }
        i = end.max(i + 1);
    }
    false
}

/// Parse a phone-shaped number at `start`: whether it is one, and where it ends.
fn phone_at(b: &[u8], start: usize) -> (bool, usize) {
    let plus = b[start] == b'+';
    let mut i = start + usize::from(plus);
    let (mut digits, mut groups, mut first_len, mut short_groups) = (0usize, 0usize, 0usize, 0usize);
    let mut parens = false;
    let mut sep: Option<u8> = None;
    loop {
        // One group: digits, or `(digits)` once.
        let paren = b.get(i) == Some(&b'(');
        if paren {
            if parens {
                return (false, i);
            }
            parens = true;
            i += 1;
        }
        let group_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let len = i - group_start;
        if len == 0 || (paren && b.get(i) != Some(&b')')) {
            return (false, i);
        }
        i += usize::from(paren);
        digits += len;
        groups += 1;
        if groups == 1 {
            first_len = len;
        } else if len < 2 {
            short_groups += 1;
        }
        // The separator after a country code or a parenthesized group is free.
        let free = paren || (plus && groups == 1);
        let group_follows = |at: usize| b.get(at).is_some_and(|c| c.is_ascii_digit() || (*c == b'(' && !parens));
        match b.get(i).copied() {
            Some(s @ (b' ' | b'-' | b'.')) if group_follows(i + 1) => {
                if !free {
                    match sep {
                        Some(x) if x != s => break,
                        _ => sep = Some(s),
                    }
                }
                i += 1;
            }
            Some(c) if paren && c.is_ascii_digit() => {}
            _ => break,
        }
    }
    if !ends_token(b, i) {
        return (false, i);
    }
    let ok = if plus {
        (10..=15).contains(&digits)
    } else {
        (10..=11).contains(&digits)
            && groups >= 2
            && short_groups == 0
            && (first_len >= 2 || (first_len == 1 && digits == 11 && b[start] == b'1'))
    };
    (ok, i)
}
