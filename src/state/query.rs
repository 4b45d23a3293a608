//! Reading the audit log a page at a time, newest first: the store is read from its end
//! (from `before`, found by a binary search over the file: lines are sorted by revision)
//! and only until the page is full; an entry the filters skip is parsed only as far as its
//! head ([`EntryHead`]: no documents built). So a page costs what it returns plus a light
//! pass over what its filters skip, never the entries after `before`. Runs on a blocking thread (it reads files).

use std::time::SystemTime;

use serde::Serialize;

use super::{AuditEntry, EntryHead, Kind, Store, StoreError};

/// Which entries, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only revisions that changed this flag.
    pub flag: Option<String>,
    /// Only revisions at or after / at or before these times.
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only revisions before this one (the `next` of the previous page).
    pub before: Option<u64>,
    /// At most this many entries.
    pub limit: usize,
}

/// One page of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The `before` of the next page, when this one is full (there may be more).
    pub next: Option<u64>,
}

impl AuditQuery {
    fn matches(&self, e: &EntryHead) -> bool {
        let t = humantime::parse_rfc3339_weak(&e.time).ok();
        self.flag.as_ref().is_none_or(|f| e.changes.iter().any(|c| c.kind == Kind::Flag && &c.key == f))
            && self.since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| t.is_some_and(|t| t <= u))
    }

    /// The page this query asks for.
    pub fn run(&self, store: &dyn Store) -> Result<AuditPage, StoreError> {
        let mut entries = Vec::new();
        if self.limit > 0 {
            store.audit_back(self.before, &|h| self.matches(h), &mut |e| {
                entries.push(e);
                entries.len() < self.limit
            })?;
        }
        let next =
            (self.limit > 0 && entries.len() == self.limit).then(|| entries.last().map(|e| e.revision)).flatten();
        Ok(AuditPage { entries, next })
    }
}
