//! Waiting for a stream's first event before committing its status, so that a provider
//! that fails before it — no answer in time, a break, an end, bytes that hold no event —
//! still gets a proper error status (and a fallback) instead of a 200 with a broken or
//! empty stream.
//!
//! The first event is the first with a `data` field: empty frames (a rewritten provider's
//! keep-alives and dropped annotations), comments and field-less events before it do not
//! commit the status. What was read before it is held, at most [`MAX_EVENT`] bytes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::providers::UpstreamError;
use crate::wire::body::Body;
use crate::wire::sse_event::{data_of, Splitter, MAX_EVENT};

/// Read `inner` until its first event, within `first_byte`. Returns every byte read, from
/// the stream's start through the frame that completed that event.
pub async fn first_event(inner: &mut Body, first_byte: Duration) -> Result<Bytes, UpstreamError> {
    let deadline = tokio::time::Instant::now() + first_byte;
    let mut held = BytesMut::new();
    let mut splitter = Splitter::default();
    // Where the current event starts, in the bytes read so far.
    let mut event_start = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, inner.frame()).await {
            Err(_) => return Err(UpstreamError::FirstByteTimeout),
            // The stream ended before its first event.
            Ok(None) => return Err(UpstreamError::StreamBroken),
            Ok(Some(Err(e))) => {
                return Err(e.downcast_ref::<UpstreamError>().copied().unwrap_or(UpstreamError::StreamBroken))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers before any event: no event will come.
        let Ok(data) = frame.into_data() else { return Err(UpstreamError::StreamBroken) };
        let base = held.len();
        let mut at = 0;
        let mut found = false;
        while let Some(n) = splitter.end_in(&data[at..]) {
            let end = at + n;
            let has_data = if event_start >= base {
                data_of(&data[event_start - base..end]).is_some()
            } else {
                let mut event = held[event_start..].to_vec();
                event.extend_from_slice(&data[..end]);
                data_of(&event).is_some()
            };
            if has_data {
                found = true;
                break;
            }
            event_start = base + end;
            at = end;
        }
        if found && held.is_empty() {
            return Ok(data);
        }
        if !found && held.len() + data.len() > MAX_EVENT {
            return Err(UpstreamError::Protocol);
        }
        held.extend_from_slice(&data);
        if found {
            return Ok(held.freeze());
        }
    }
}
