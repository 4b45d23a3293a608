use super::*;

const WITH_USAGE: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
    "data: [DONE]\n\n",
);
const WITHOUT_USAGE: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// Feed `stream` split into pieces of `size` bytes; the forwarded bytes and the
/// piece index of the first token and usage.
fn run(stream: &str, size: usize, strip: bool) -> (String, Option<usize>, Option<(usize, Usage)>) {
    let mut tap = Tap::new(strip);
    let mut out = Vec::new();
    let (mut first, mut usage) = (None, None);
    for (i, piece) in stream.as_bytes().chunks(size).enumerate() {
        let (bytes, seen) = tap.feed(Bytes::copy_from_slice(piece));
        out.extend_from_slice(&bytes);
        if seen.first_token {
            assert!(first.is_none(), "the first token is seen once");
            first = Some(i);
        }
        if let Some(u) = seen.usage {
            usage = Some((i, u));
        }
    }
    if let Some(rest) = tap.finish() {
        out.extend_from_slice(&rest);
    }
    (String::from_utf8(out).unwrap(), first, usage)
}

#[test]
fn stripping_gives_the_stream_without_usage_whatever_the_split() {
    for size in [1, 2, 3, 7, 50, 97, 1000] {
        let (out, first, usage) = run(WITH_USAGE, size, true);
        assert_eq!(out, WITHOUT_USAGE, "split into {size}-byte pieces");
        assert!(first.is_some());
        assert_eq!(usage.unwrap().1, Usage { input: 9, output: 2, cached: 0 });
    }
}

#[test]
fn passing_through_changes_nothing_and_still_reads_usage() {
    for size in [1, 5, 64, 1000] {
        let (out, first, usage) = run(WITH_USAGE, size, false);
        assert_eq!(out, WITH_USAGE);
        assert!(first.is_some());
        assert_eq!(usage.unwrap().1, Usage { input: 9, output: 2, cached: 0 });
    }
    let (out, _, usage) = run(WITHOUT_USAGE, 10, false);
    assert_eq!(out, WITHOUT_USAGE);
    assert!(usage.is_none());
}

#[test]
fn the_first_token_is_the_first_chunk_with_content() {
    // Whole stream in one frame: the role-only chunk does not count, "Hi" does.
    let (_, first, _) = run(WITH_USAGE, 10_000, true);
    assert_eq!(first, Some(0));
    let role_only = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    let mut tap = Tap::new(false);
    assert!(!tap.feed(Bytes::from_static(role_only.as_bytes())).1.first_token);
    let tool = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n";
    assert!(tap.feed(Bytes::from_static(tool.as_bytes())).1.first_token);
    let text = "data: {\"choices\":[{\"text\":\"x\"}]}\n\n";
    assert!(!tap.feed(Bytes::from_static(text.as_bytes())).1.first_token, "only the first");
    let mut legacy = Tap::new(false);
    assert!(legacy.feed(Bytes::from_static(text.as_bytes())).1.first_token);
}

#[test]
fn crlf_events_comments_and_errors() {
    let s = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n: ping\n\ndata: [DONE]\r\n\r\n";
    let (out, _, usage) = run(s, 4, true);
    assert_eq!(out, ": ping\n\ndata: [DONE]\r\n\r\n");
    assert_eq!(usage.unwrap().1, Usage { input: 1, output: 2, cached: 0 });
    let mut tap = Tap::new(false);
    let err = "data: {\"error\":{\"message\":\"boom\"}}\n\n";
    assert!(tap.feed(Bytes::from_static(err.as_bytes())).1.error);
}

#[test]
fn whole_unchanged_frames_are_not_copied() {
    let frame = Bytes::from_static(WITHOUT_USAGE.as_bytes());
    let (out, _) = Tap::new(true).feed(frame.clone());
    assert_eq!(out.as_ptr(), frame.as_ptr());
}

/// `stream` with every LF replaced by `ending`.
fn with_endings(stream: &str, ending: &str) -> String {
    stream.replace('\n', ending)
}

/// Feed `stream` cut at `cuts`; the forwarded bytes.
fn run_cut(stream: &[u8], cuts: &[usize], strip: bool) -> Vec<u8> {
    let mut tap = Tap::new(strip);
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&stream.len()]) {
        out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(&stream[from..to])).0);
        from = to;
    }
    if let Some(rest) = tap.finish() {
        out.extend_from_slice(&rest);
    }
    out
}

#[test]
fn cr_lf_and_crlf_endings_strip_the_same_whatever_the_split() {
    for ending in ["\n", "\r", "\r\n"] {
        let (with, without) = (with_endings(WITH_USAGE, ending), with_endings(WITHOUT_USAGE, ending));
        for size in [1, 2, 3, 7, 50, 1000] {
            let (out, first, usage) = run(&with, size, true);
            assert_eq!(out, without, "{ending:?}, {size}-byte pieces");
            assert!(first.is_some(), "{ending:?}");
            assert_eq!(usage.unwrap().1, Usage { input: 9, output: 2, cached: 0 }, "{ending:?}");
            assert_eq!(run(&with, size, false).0, with, "{ending:?}: passed through unchanged");
        }
    }
}

proptest::proptest! {
    #[test]
    fn any_split_of_any_line_endings_gives_the_same_bytes(
        ending in proptest::sample::select(vec!["\n", "\r", "\r\n"]),
        cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..10),
    ) {
        let with = with_endings(WITH_USAGE, ending);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(with.len() + 1)).collect();
        at.sort_unstable();
        proptest::prop_assert_eq!(run_cut(with.as_bytes(), &at, true), with_endings(WITHOUT_USAGE, ending).into_bytes());
        proptest::prop_assert_eq!(run_cut(with.as_bytes(), &at, false), with.clone().into_bytes());
    }
}

#[test]
fn an_event_that_never_ends_is_cut_past_the_cap_and_released() {
    for strip in [true, false] {
        let mut tap = Tap::new(strip);
        let first = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        let (out, seen) = tap.feed(Bytes::from(format!("{first}data: {{\"x\":\"")));
        assert_eq!((&out[..], seen.first_token), (first.as_bytes(), true), "whole events go on at once");
        let piece = Bytes::from(vec![b'A'; 64 * 1024]);
        let mut fed = 0;
        loop {
            let (out, seen) = tap.feed(piece.clone());
            fed += piece.len();
            assert!(out.is_empty(), "the partial event is held back");
            if seen.too_large {
                break;
            }
            assert!(fed <= MAX_EVENT, "cut once past {MAX_EVENT} bytes");
        }
        assert_eq!(tap.partial.capacity(), 0, "what was held is released");
        assert!(!tap.has_partial() && tap.finish().is_none());
        assert!(tap.feed(Bytes::from_static(b"\n\ndata: [DONE]\n\n")).0.is_empty(), "nothing more is read");
    }
}

#[test]
fn a_partial_event_is_scanned_once_however_small_the_frames() {
    // 300 KB of one event in 1-byte frames: the scan and the copy are linear in the
    // stream, not quadratic in the event (no rescan of what is held).
    let mut stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 300_000));
    stream.extend_from_slice(b"\"}}]}\n\ndata: [DONE]\n\n");
    let mut tap = Tap::new(true);
    let mut out = Vec::new();
    for byte in stream.chunks(1) {
        out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(byte)).0);
    }
    assert_eq!(out, stream);
    assert_eq!(tap.splitter.scanned, stream.len(), "each byte scanned once");
}

mod responses {
    use super::*;

    fn run(events: &[&str]) -> Seen {
        let mut tap = Tap::responses();
        let mut all = Seen::default();
        for e in events {
            let (out, seen) = tap.feed(Bytes::from(format!("event: x\ndata: {e}\n\n")));
            assert_eq!(out.len(), e.len() + 17, "a Responses stream passes unchanged");
            all.first_token |= seen.first_token;
            all.error |= seen.error;
            all.usage = seen.usage.or(all.usage);
        }
        all
    }

    #[test]
    fn first_output_delta_terminal_usage_and_errors() {
        let usage = r#""usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}"#;
        let seen = run(&[
            r#"{"type":"response.created","response":{"model":"m","usage":null}}"#,
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            &format!(r#"{{"type":"response.completed","response":{{"status":"completed",{usage}}}}}"#),
        ]);
        assert_eq!(
            (seen.first_token, seen.error, seen.usage),
            (true, false, Some(Usage { input: 5, output: 2, cached: 0 }))
        );
        let incomplete = format!(r#"{{"type":"response.incomplete","response":{{"status":"incomplete",{usage}}}}}"#);
        assert!(!run(&[&incomplete]).error, "a length limit is not an error");
        let failed = format!(r#"{{"type":"response.failed","response":{{"status":"failed",{usage}}}}}"#);
        assert!(run(&[&failed]).error);
        assert!(run(&[r#"{"type":"error","message":"boom"}"#]).error);
    }
}
