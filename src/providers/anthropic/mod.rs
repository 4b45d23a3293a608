//! Translation between OpenAI chat completions and Anthropic Messages, as pure functions
//! tested without I/O: the request, the response, the streaming state machine and errors.
//!
//! The request side also returns a [`Reply`]: what the response and stream sides need to
//! know about the app's request.

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;

/// What the translation of the answer needs to know about the app's request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The app asked for a final usage chunk (`stream_options.include_usage` of the OpenAI body).
    pub include_usage: bool,
    /// The name of the forced tool that carries `response_format` JSON output, if any.
    pub json_tool: Option<String>,
}

#[cfg(test)]
mod mock_plan_tests;
