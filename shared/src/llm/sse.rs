//! Server-sent events read straight off an HTTP body: the `data` of each event, which is all an
//! OpenAI-compatible stream carries.
//!
//! Why not a crate's event stream: async-openai forwards every event of a stream through a task
//! of its own and an unbounded channel, so each of a reply's chunks woke two tasks, and the
//! event parser allocated a `String` per field. A reply is fifty chunks and a worker reads tens of
//! thousands a second under load; here a chunk is parsed where it lands, in the buffer it was read
//! into, and handed to the caller as a `&str`.
//!
//! The parser follows the SSE specification's line rules (LF, CR or CRLF, a line split across
//! reads, comments, `field: value` with one optional space, data lines joined by LF, an empty
//! line ending the event) and skips the events named `keepalive` that some servers send.

/// Splits a byte stream into events; keeps what is left of an unfinished line between reads.
#[derive(Default)]
pub(crate) struct SseParser {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The event's data lines so far, joined by `\n`.
    data: String,
    has_data: bool,
    keepalive: bool,
    /// The last read ended in `\r`: a `\n` first in the next one belongs to that line end.
    after_cr: bool,
}

impl SseParser {
    /// Reads the next bytes of the body, calling `on_data` with the data of each event they end.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], on_data: &mut impl FnMut(&str)) {
        if bytes.is_empty() {
            return;
        }
        if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
            bytes = &bytes[1..];
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.partial.is_empty() {
                self.line(&bytes[..end], on_data);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[..end]);
                self.line(&line, on_data);
                line.clear();
                self.partial = line;
            }
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            bytes = &bytes[next..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The body ended: an event whose data lines all arrived is handed over even without the
    /// empty line that should end it (some servers close right after their last chunk); a line
    /// cut off midway is dropped.
    pub(crate) fn finish(&mut self, on_data: &mut impl FnMut(&str)) {
        self.partial.clear();
        self.dispatch(on_data);
    }

    fn line(&mut self, line: &[u8], on_data: &mut impl FnMut(&str)) {
        if line.is_empty() {
            return self.dispatch(on_data);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.keepalive = value == b"keepalive",
            _ => {}
        }
    }

    fn dispatch(&mut self, on_data: &mut impl FnMut(&str)) {
        if !self.data.is_empty() && !self.keepalive {
            on_data(&self.data);
        }
        self.data.clear();
        self.has_data = false;
        self.keepalive = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of every event in `body` read in pieces split at `cuts` (byte offsets): for tests.
    fn events_of(body: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut on_data = |data: &str| events.push(data.to_owned());
        let mut start = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            parser.feed(&body[start..cut], &mut on_data);
            start = cut;
        }
        parser.finish(&mut on_data);
        events
    }

    const STREAM: &str = ": OPENROUTER PROCESSING\r\n\r\ndata: {\"a\":\"诸葛亮\"}\r\n\r\nevent: keepalive\ndata: {}\n\n\
                          data:{\"b\":1}\r\ndata: {\"c\":2}\rdata: 3\r\r\nid: 7\nretry: 10\ndata: [DONE]\n\n";

    #[test]
    fn events_are_read_whatever_the_line_ends() {
        assert_eq!(events_of(STREAM.as_bytes(), &[]), ["{\"a\":\"诸葛亮\"}", "{\"b\":1}\n{\"c\":2}\n3", "[DONE]"]);
    }

    #[test]
    fn a_body_split_at_any_byte_reads_the_same() {
        let body = STREAM.as_bytes();
        let whole = events_of(body, &[]);
        for cut in 0..=body.len() {
            assert_eq!(events_of(body, &[cut]), whole, "split at byte {cut}");
        }
        for first in 0..=body.len() {
            for second in first..=body.len() {
                assert_eq!(events_of(body, &[first, second]), whole, "split at bytes {first} and {second}");
            }
        }
    }

    #[test]
    fn the_last_event_counts_without_its_blank_line_but_a_cut_line_does_not() {
        assert_eq!(events_of(b"data: {\"x\":1}\n\ndata: last\n", &[]), ["{\"x\":1}", "last"]);
        assert_eq!(events_of(b"data: {\"x\":1}\n\ndata: {\"cut", &[]), ["{\"x\":1}"]);
    }

    #[test]
    fn empty_data_and_comments_are_not_events() {
        assert!(events_of(b"data:\n\n:comment\n\ndata: \n\n\n\n", &[]).is_empty());
    }
}
