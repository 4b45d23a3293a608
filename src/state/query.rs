//! Reading the audit log a page at a time, newest first: the store is read from its end
//! and only until the page is full, so a query costs what it returns (plus what its
//! filters skip), not the size of the log. Runs on a blocking thread (it reads files).

use std::time::SystemTime;

use serde::Serialize;

use super::{AuditEntry, Kind, Store, StoreError};

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
    fn matches(&self, e: &AuditEntry) -> bool {
        let t = humantime::parse_rfc3339_weak(&e.time).ok();
        self.flag.as_ref().is_none_or(|f| e.changes.iter().any(|c| c.kind == Kind::Flag && &c.key == f))
            && self.since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| t.is_some_and(|t| t <= u))
    }

    /// The page this query asks for.
    pub fn run(&self, store: &dyn Store) -> Result<AuditPage, StoreError> {
        let mut entries = Vec::new();
        if self.limit > 0 {
            store.audit_back(&mut |e| {
                if self.before.is_none_or(|b| e.revision < b) && self.matches(&e) {
                    entries.push(e);
                }
                entries.len() < self.limit
            })?;
        }
        let next =
            (self.limit > 0 && entries.len() == self.limit).then(|| entries.last().map(|e| e.revision)).flatten();
        Ok(AuditPage { entries, next })
    }
}
