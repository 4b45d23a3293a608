//! The ground floor: the wire vocabulary every floor above speaks — the one response body
//! type and its helpers (`body`), SSE events as bytes (`sse_event`), the OpenAI endpoints
//! sluice forwards, Azure's URL forms, and the request body read and spliced as raw JSON
//! (`json_body`). Nothing here depends on another module of the crate.

mod azure_url;
pub mod body;
pub mod json_body;
pub mod sse_event;

pub use azure_url::AzureUrl;
pub use json_body::{BodyError, JsonBody};

/// An OpenAI API endpoint sluice forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 4] =
        [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Responses];

    /// The path after the provider's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
        }
    }

    /// The name used in the config (`endpoints:` of a flag).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
        }
    }
}
