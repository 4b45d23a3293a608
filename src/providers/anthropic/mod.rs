//! Translation between OpenAI chat completions and Anthropic Messages, as pure functions
//! tested without I/O. This holds the request side; no provider kind uses it yet.

pub mod request;
