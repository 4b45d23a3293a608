//! `GET /admin/v1/audit?flag=&since=&until=&before=&limit=` (times in RFC 3339), newest
//! first, a page at a time: `next` in the answer is the `before` of the next page. The
//! log is read from its end on the blocking pool, never on the admin runtime (which also
//! answers health checks).

use std::sync::Arc;

use http::{Response, StatusCode};

use super::{api, invalid, json_response, percent_decode, ApiError};
use crate::state::{AuditQuery, State};
use crate::wire::body::Body;

/// Most entries one page holds.
pub const MAX_LIMIT: usize = 1000;

/// The query's parameters.
fn parse(query: &str) -> Result<AuditQuery, ApiError> {
    let mut q = AuditQuery { limit: 100, ..AuditQuery::default() };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let time =
            |name: &str| humantime::parse_rfc3339_weak(&v).map_err(|_| invalid(name, "must be an RFC 3339 time"));
        let number = |name: &str| v.parse::<u64>().map_err(|_| invalid(name, "must be a number"));
        match k {
            "flag" => q.flag = Some(v.clone()),
            "since" => q.since = Some(time("since")?),
            "until" => q.until = Some(time("until")?),
            "before" => q.before = Some(number("before")?),
            "limit" => {
                q.limit = usize::try_from(number("limit")?).unwrap_or(usize::MAX);
                if q.limit > MAX_LIMIT {
                    return Err(invalid("limit", &format!("at most {MAX_LIMIT} (page on with `before`)")));
                }
            }
            _ => return Err(invalid(k, "unknown parameter (use flag, since, until, before, limit)")),
        }
    }
    Ok(q)
}

/// One page of the audit log.
pub async fn page(state: Arc<State>, query: &str) -> Result<Response<Body>, ApiError> {
    let q = parse(query)?;
    let revision = state.revision();
    let page = tokio::task::spawn_blocking(move || state.audit(&q))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the audit read was interrupted"))?
        .map_err(|e| {
            if let crate::state::StoreError::Unavailable(why) | crate::state::StoreError::Unknown(why) = e {
                return ApiError::unavailable(
                    "store_unavailable",
                    format!("the shared store is unreachable: {why}"),
                    1,
                );
            }
            tracing::error!(error = %e, "the audit log could not be read");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "audit_read_failed",
                "the audit log could not be read (sluice's log says why)",
            )
        })?;
    Ok(json_response(StatusCode::OK, &api::AuditPageAnswer { revision, entries: page.entries, next: page.next }))
}
