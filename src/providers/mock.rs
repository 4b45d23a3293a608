//! The `mock` kind: the fake provider (`sluice-mock`) called in-process, OpenAI-shaped;
//! the config's `mock:` block sets its knobs.

use super::dialect::{join_path, Dialect, Kind, Plain, Prepared, Target};
use super::{SendError, UpstreamRequest};
use crate::config::ProviderConfig;
use sluice_mock::MockSettings;

#[derive(Debug)]
struct Mock;

pub(super) fn build(cfg: &ProviderConfig) -> Result<Kind, String> {
    let answer = cfg.mock.as_ref().and_then(|m| m.answer.as_ref());
    if let Some(answer) = answer.filter(|a| a.len() > sluice_mock::MAX_ANSWER) {
        return Err(format!("mock.answer is {} bytes, at most {} allowed", answer.len(), sluice_mock::MAX_ANSWER));
    }
    Ok(Kind { dialect: Box::new(Mock), target: Target::InProcess(settings(cfg)) })
}

impl Dialect for Mock {
    fn prepare(&self, req: UpstreamRequest<'_>) -> Result<Prepared, SendError> {
        Ok(Prepared {
            path_and_query: join_path("/v1", req.endpoint.path(), req.query),
            headers: req.headers,
            body: req.body,
            translated: false,
            reply: Box::new(Plain),
        })
    }
}

fn settings(cfg: &ProviderConfig) -> MockSettings {
    let mut s = MockSettings::default();
    if let Some(m) = &cfg.mock {
        if let Some(v) = m.latency {
            s.latency = v.0;
        }
        if let Some(v) = m.error_rate {
            s.error_rate = v;
        }
        if let Some(v) = m.error_status {
            s.error_status = v;
        }
        if let Some(v) = m.chunks {
            s.chunks = v;
        }
        if let Some(v) = m.chunk_delay {
            s.chunk_delay = v.0;
        }
        if let Some(v) = &m.answer {
            s.answer = Some(v.clone());
        }
        if let Some(v) = m.judge {
            s.judge = v;
        }
    }
    s
}
