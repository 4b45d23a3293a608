//! Server-sent events as bytes: where an event ends and what its `data` is. Shared by the
//! SSE tap on OpenAI-shaped streams and the Anthropic stream translation.

/// The length of the first complete event of `buf` (through its blank line), if any.
pub fn event_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let nl = from + i;
        match &buf[nl + 1..] {
            [b'\n', ..] => return Some(nl + 2),
            [b'\r', b'\n', ..] => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

/// The data of an event: its `data:` lines joined by newlines, and whether there was
/// exactly one (then the data is a slice of the event).
pub fn data_of(event: &[u8]) -> Option<(std::borrow::Cow<'_, [u8]>, bool)> {
    let mut lines = event.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
    let mut count = 0;
    for line in lines.by_ref() {
        let Some(rest) = line.strip_prefix(b"data:") else { continue };
        let value = rest.strip_prefix(b" ").unwrap_or(rest);
        count += 1;
        data = Some(match data {
            None => std::borrow::Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                std::borrow::Cow::Owned(joined)
            }
        });
    }
    data.map(|d| (d, count == 1))
}
