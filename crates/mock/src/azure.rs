//! Azure OpenAI's additions to the OpenAI answers: content filter results on the prompt
//! and on every choice, fixed at compile time (the mock's filter never triggers unless
//! scripted with `content_filter`).

/// Expands to a content filter result where nothing was filtered.
macro_rules! filter_ok {
    () => {
        r#"{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}"#
    };
}

/// Expands to the `prompt_filter_results` array.
macro_rules! prompt_filter_results {
    () => {
        r#"[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]"#
    };
}

/// A choice's `content_filter_results` where nothing was filtered.
pub(crate) const FILTER_RESULTS: &str = filter_ok!();

/// The top-level `prompt_filter_results` of an answer.
pub(crate) const PROMPT_FILTER_RESULTS: &str = prompt_filter_results!();

/// The first event of an Azure stream: the prompt's filter results, no choice.
pub(crate) const STREAM_PROMPT_EVENT: &str = concat!(
    r#"data: {"choices":[],"prompt_filter_results":"#,
    prompt_filter_results!(),
    r#","id":"","model":"","object":"","created":0}"#,
    "\n\n"
);
