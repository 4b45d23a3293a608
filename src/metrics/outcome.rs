//! How a request ended: the low-cardinality `outcome` label of every request metric.

/// Where a failure came from; doubles as the low-cardinality `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientError,
    UpstreamError,
    Timeout,
    Cancelled,
    GatewayError,
    /// A guardrail in `block` mode refused the provider's answer.
    Blocked,
}

impl Outcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::ClientError,
        Outcome::UpstreamError,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::GatewayError,
        Outcome::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::GatewayError => "gateway_error",
            Outcome::Blocked => "blocked",
        }
    }
}
