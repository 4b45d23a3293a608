//! The mock's response body: the same type as the gateway's `sluice::wire::body::Body`
//! (`UnsyncBoxBody<Bytes, BoxError>`), so the gateway forwards an in-process answer as is.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Error type carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type every route returns.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from a buffer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}
