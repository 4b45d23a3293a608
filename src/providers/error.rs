//! Why an upstream call failed, classified so the proxy can answer 502 or 504 and
//! count the failure by kind.

use std::error::Error as _;

/// An upstream failure before the response head arrived.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum UpstreamError {
    #[error("could not connect to the provider")]
    Connect,
    #[error("timed out connecting to the provider")]
    ConnectTimeout,
    #[error("the provider did not answer within the first-byte timeout")]
    FirstByteTimeout,
    #[error("the provider closed the connection or sent an invalid response")]
    Protocol,
    #[error("the upstream request could not be built")]
    InvalidRequest,
    #[error("the provider's response broke off before it was complete")]
    StreamBroken,
    #[error("the provider went silent for longer than the idle timeout")]
    IdleTimeout,
}

impl UpstreamError {
    /// Classify a hyper-util client error.
    pub fn from_client(e: &hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            let mut source = e.source();
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    if io.kind() == std::io::ErrorKind::TimedOut {
                        return UpstreamError::ConnectTimeout;
                    }
                }
                if s.to_string().contains("timed out") {
                    return UpstreamError::ConnectTimeout;
                }
                source = s.source();
            }
            return UpstreamError::Connect;
        }
        UpstreamError::Protocol
    }

    /// Whether this is a timeout (504) rather than a bad gateway (502).
    pub fn is_timeout(self) -> bool {
        matches!(self, UpstreamError::ConnectTimeout | UpstreamError::FirstByteTimeout | UpstreamError::IdleTimeout)
    }
}

/// Why [`super::Provider::send`] gave no response.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SendError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request cannot go to this provider as it is (a 400 for the app).
    #[error("{message}")]
    Refused { param: &'static str, message: String },
    /// The body is not JSON this provider's translation can read (nested deeper than its
    /// parser takes, a lone surrogate in a string…): a 400 for the app, like `Refused`.
    #[error("{0}")]
    Untranslatable(String),
}
