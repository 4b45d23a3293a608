//! Translation between OpenAI chat completions and Anthropic Messages, as pure functions
//! tested without I/O. This holds the request, response, streaming and error sides; no provider kind uses them yet.

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;
