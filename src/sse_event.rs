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

/// A stream's bytes, fed in pieces split anywhere, read back as whole events. Between
/// feeds only the current partial event is kept.
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<u8>,
    /// Where the next event starts in `buf` (the bytes before it were read).
    at: usize,
}

impl Events {
    /// Add the next piece of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.at);
        self.at = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event (through its blank line); `None` once only a partial event
    /// (or nothing) is left, which is then all that is kept.
    pub fn next_event(&mut self) -> Option<&[u8]> {
        let Some(len) = event_len(&self.buf[self.at..]) else {
            self.buf.drain(..self.at);
            self.at = 0;
            return None;
        };
        let start = self.at;
        self.at += len;
        Some(&self.buf[start..self.at])
    }

    /// The bytes not yet read as an event (an event that never ended); the reader is then empty.
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.at);
        self.buf.clear();
        self.at = 0;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_back_whole() {
        let stream = b"data: a\n\nevent: x\r\ndata: b\r\n\r\ndata: c";
        for cut in 0..=stream.len() {
            let mut events = Events::default();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                events.push(piece);
                while let Some(e) = events.next_event() {
                    got.push(e.to_vec());
                }
            }
            assert_eq!(got, [&b"data: a\n\n"[..], b"event: x\r\ndata: b\r\n\r\n"], "cut at {cut}");
            assert_eq!(events.take_rest(), b"data: c");
            assert!(events.take_rest().is_empty());
        }
    }
}
