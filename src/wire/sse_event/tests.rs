use proptest::prelude::*;

use super::*;

/// Feed `pieces` to a reader: every event read, and the rest.
fn read(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>, Events) {
    let mut events = Events::default();
    let mut got = Vec::new();
    for piece in pieces {
        events.push(piece);
        while let Some(e) = events.next_event() {
            got.push(e.to_vec());
        }
    }
    let rest = events.take_rest();
    (got, rest, events)
}

/// The data of every event that has some.
fn datas(events: &[Vec<u8>]) -> Vec<Vec<u8>> {
    events.iter().filter_map(|e| data_of(e).map(|(d, _)| d.into_owned())).collect()
}

#[test]
fn events_split_anywhere_come_back_whole() {
    let stream = b"data: a\n\nevent: x\r\ndata: b\r\n\r\ndata: c\r\rdata: d";
    let (whole, rest, _) = read(&[stream]);
    assert_eq!(whole, [&b"data: a\n\n"[..], b"event: x\r\ndata: b\r\n\r\n", b"data: c\r\r"]);
    assert_eq!(rest, b"data: d");
    for cut in 0..=stream.len() {
        let (got, rest, _) = read(&[&stream[..cut], &stream[cut..]]);
        assert_eq!(datas(&got), [&b"a"[..], b"b", b"c"], "cut at {cut}");
        assert_eq!([got.concat(), rest.clone()].concat(), stream, "cut at {cut}: the bytes are the stream's");
        assert_eq!(rest, b"data: d", "cut at {cut}");
    }
}

#[test]
fn a_crlf_cut_between_its_cr_and_lf_is_one_line_ending() {
    // The event ends at the CR; the LF that completes it comes back alone, with no field.
    let (got, rest, _) = read(&[b"data: a\r\n\r", b"\ndata: b\r", b"\n\r\n"]);
    assert_eq!(got, [&b"data: a\r\n\r"[..], b"\n", b"data: b\r\n\r\n"]);
    assert!(rest.is_empty());
    // A CR-only stream: each event ends at its second CR, as it arrives.
    let (got, _, _) = read(&[b"data: a\r\r", b"data: b\r\r"]);
    assert_eq!(got, [&b"data: a\r\r"[..], b"data: b\r\r"]);
}

#[test]
fn multi_line_data_with_any_line_ending() {
    for ending in ["\n", "\r", "\r\n"] {
        let event = format!("event: e{ending}data: one{ending}data: two{ending}{ending}");
        let (data, single) = data_of(event.as_bytes()).unwrap();
        assert_eq!((&*data, single), (&b"one\ntwo"[..], false), "{ending:?}");
    }
}

#[test]
fn an_event_that_never_ends_is_cut_at_the_cap_and_released() {
    let mut events = Events::default();
    events.push(b"data: first\n\ndata: {\"x\":\"");
    assert_eq!(events.next_event(), Some(&b"data: first\n\n"[..]));
    let piece = vec![b'A'; 64 * 1024];
    let mut pushed = 0;
    while !events.too_large() {
        events.push(&piece);
        pushed += piece.len();
        assert!(events.next_event().is_none());
        assert!(pushed <= MAX_EVENT + piece.len(), "cut once past the cap");
    }
    assert_eq!(events.buf.capacity(), 0, "what it held is released");
    events.push(b"\n\ndata: later\n\n");
    assert!(events.next_event().is_none(), "nothing more is read");
}

#[test]
fn each_byte_is_scanned_once_however_small_the_pieces() {
    // A 300 KB event fed one byte at a time, then its end: the splitter scans the stream's
    // length, not the square of it.
    let mut events = Events::default();
    let mut stream = b"data: ".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 300_000));
    stream.extend_from_slice(b"\n\ndata: y\n\n");
    let mut n = 0;
    for byte in stream.chunks(1) {
        events.push(byte);
        while events.next_event().is_some() {
            n += 1;
        }
    }
    assert_eq!(n, 2);
    assert_eq!(events.splitter.scanned, stream.len());
}

/// Events of lines (each `data: <text>` or a comment), every line — and the blank line
/// that ends the event — ended by LF, CR or CRLF as `k` says; and the data of each event.
fn stream_of(events: &[(Vec<(bool, String)>, u8)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    // A CR then an LF would be one CRLF: after a CR, an LF ending is written as CRLF.
    let end_line = |bytes: &mut Vec<u8>, k: u8| {
        let e: &[u8] = match k % 3 {
            0 if bytes.last() == Some(&b'\r') => b"\r\n",
            0 => b"\n",
            1 => b"\r",
            _ => b"\r\n",
        };
        bytes.extend_from_slice(e);
    };
    for (lines, k) in events {
        let mut data = Vec::new();
        for (i, (is_data, text)) in lines.iter().enumerate() {
            bytes.extend_from_slice(if *is_data { b"data: " } else { b": " });
            bytes.extend_from_slice(text.as_bytes());
            if *is_data {
                data.push(text.as_bytes().to_vec());
            }
            end_line(&mut bytes, k.wrapping_add(i as u8 + 1));
        }
        end_line(&mut bytes, *k);
        if !data.is_empty() {
            expected.push(data.join(&b'\n'));
        }
    }
    (bytes, expected)
}

proptest! {
    #[test]
    fn any_split_with_any_line_endings_gives_the_same_events(
        events in proptest::collection::vec(
            (proptest::collection::vec((any::<bool>(), "[a-z{}\":, ]{0,12}"), 1..4), any::<u8>()),
            1..8,
        ),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let (stream, expected) = stream_of(&events);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for to in at {
            pieces.push(&stream[from..to]);
            from = to;
        }
        pieces.push(&stream[from..]);
        let (got, rest, _) = read(&pieces);
        prop_assert_eq!(datas(&got), expected);
        prop_assert!(rest.is_empty(), "every event ended: {:?}", String::from_utf8_lossy(&rest));
        prop_assert_eq!(got.concat(), stream.clone());
    }
}
