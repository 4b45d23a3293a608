//! Server-sent events as bytes: where an event ends and what its `data` is. Shared by the
//! SSE tap on OpenAI-shaped streams and the Anthropic stream translation.

/// The largest event sluice holds while it waits for the event's end (1 MiB): a stream
/// with a longer pending event is cut with an error, and what it held is released.
/// Real events are a few hundred bytes; a whole non-streamed answer rarely reaches this.
pub const MAX_EVENT: usize = 1 << 20;

/// Where events end in a stream read in pieces split anywhere, per the SSE spec: a line
/// ends with CRLF, LF or CR, and an empty line ends an event. Each byte is scanned once:
/// the splitter remembers the line it is in between pieces.
///
/// An event ends right after its empty line. When that line ends with a CR that is the last
/// byte of a piece, the event ends there; an LF opening the next piece completes that CRLF
/// and is returned as an event of its own (one byte, no field), so the bytes of every
/// event, put back together, are the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Splitter {
    /// The current line has bytes.
    mid_line: bool,
    /// The last byte scanned was a CR: an LF right after it belongs to the same line ending.
    after_cr: bool,
    /// The current event has bytes.
    pending: bool,
    /// Bytes scanned, all calls together (each byte of the stream counts once).
    #[cfg(test)]
    pub(crate) scanned: usize,
}

impl Splitter {
    /// Scan `bytes`, the stream's next bytes. `Some(n)`: the current event ends after
    /// `bytes[..n]` (call again with `bytes[n..]` for the next one); `None`: all of `bytes`
    /// belongs to the current event, which has not ended.
    pub fn end_in(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        if self.after_cr {
            match bytes.first() {
                None => return None,
                Some(b'\n') => {
                    self.after_cr = false;
                    if !self.pending {
                        self.count(1);
                        return Some(1);
                    }
                    i = 1;
                }
                Some(_) => self.after_cr = false,
            }
        }
        while let Some(k) = memchr::memchr2(b'\n', b'\r', &bytes[i..]) {
            let t = i + k;
            let blank = k == 0 && !self.mid_line;
            let mut end = t + 1;
            if bytes[t] == b'\r' {
                match bytes.get(end) {
                    Some(b'\n') => end += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.mid_line = false;
            if blank {
                self.pending = false;
                self.count(end);
                return Some(end);
            }
            i = end;
        }
        if i < bytes.len() {
            self.mid_line = true;
        }
        self.pending |= !bytes.is_empty();
        self.count(bytes.len());
        None
    }

    #[cfg(test)]
    fn count(&mut self, n: usize) {
        self.scanned += n;
    }

    #[cfg(not(test))]
    fn count(&mut self, _: usize) {}
}

/// The lines of a whole event (CRLF, LF and CR end a line).
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    // A CRLF reads as a line and an empty one, which has no field: harmless.
    event.split(|&b| b == b'\n' || b == b'\r')
}

/// The data of an event: its `data:` lines joined by newlines, and whether there was
/// exactly one (then the data is a slice of the event).
pub fn data_of(event: &[u8]) -> Option<(std::borrow::Cow<'_, [u8]>, bool)> {
    let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
    let mut count = 0;
    for line in lines(event) {
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
/// feeds only the current partial event is kept, and at most [`MAX_EVENT`] of it: past
/// that the reader gives up ([`Events::too_large`]) and releases it. Each byte is copied
/// once and scanned once.
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<u8>,
    /// Where the next event starts in `buf` (the bytes before it were read).
    at: usize,
    /// How far the splitter has scanned `buf`.
    scanned: usize,
    splitter: Splitter,
    too_large: bool,
}

impl Events {
    /// Add the next piece of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.too_large {
            return;
        }
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.scanned -= self.at;
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event (through its blank line); `None` once only a partial event
    /// (or nothing) is left, which is then all that is kept.
    pub fn next_event(&mut self) -> Option<&[u8]> {
        let Some(len) = self.splitter.end_in(&self.buf[self.scanned..]) else {
            self.scanned = self.buf.len();
            if self.buf.len() - self.at > MAX_EVENT {
                self.too_large = true;
                self.buf = Vec::new();
                (self.at, self.scanned) = (0, 0);
            }
            return None;
        };
        let start = self.at;
        self.scanned += len;
        self.at = self.scanned;
        Some(&self.buf[start..self.at])
    }

    /// Whether the stream had an event longer than [`MAX_EVENT`] (nothing more is read).
    pub fn too_large(&self) -> bool {
        self.too_large
    }

    /// The bytes not yet read as an event (an event that never ended); the reader is then empty.
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.at);
        self.buf.clear();
        (self.at, self.scanned) = (0, 0);
        self.splitter = Splitter::default();
        rest
    }
}

#[cfg(test)]
mod tests;
