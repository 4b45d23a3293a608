//! The one response body type every handler returns.
//!
//! Responses are either a complete buffer (errors, small JSON) or a stream forwarded
//! frame by frame. Boxing costs one allocation per response and keeps every handler's
//! signature identical; hyper needs `Send` but not `Sync`, hence `UnsyncBoxBody`.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Error type carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type used across sluice.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from a buffer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A complete response of `content_type`: the one helper every handler's own answers use.
pub fn response(status: StatusCode, content_type: &'static str, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A complete `application/json` response.
pub fn json(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    response(status, "application/json", bytes)
}

/// A complete `text/plain` response.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", text)
}
