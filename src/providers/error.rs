//! Why an upstream call failed, classified so the proxy can answer 502 or 504 and
//! count the failure by kind.

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
    /// Classify a connector's error: a timeout, or any other failure to connect.
    pub fn from_connect(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut source = Some(e);
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
        UpstreamError::Connect
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
