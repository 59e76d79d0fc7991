//! A small Server-Sent Events client for the command-line client, the tests and the load
//! generator: parses `text/event-stream` per the WHATWG rules we rely on (`id`, `event`,
//! multi-line `data`, comments ignored, an event ends at a blank line, a trailing partial event is
//! discarded).

use futures::{Stream, StreamExt};

/// One received event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: serde_json::Value,
}

/// Turns a response body into its events. The stream ends when the body ends.
pub fn events(response: reqwest::Response) -> impl Stream<Item = anyhow::Result<SseEvent>> + Send + Unpin {
    let bytes = response.bytes_stream();
    Box::pin(futures::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut bytes, mut buffer, mut ended)| async move {
            loop {
                if let Some(end) = find_event_end(&buffer) {
                    let block: Vec<u8> = buffer.drain(..end).collect();
                    match parse_block(&block) {
                        Ok(Some(event)) => return Some((Ok(event), (bytes, buffer, ended))),
                        Ok(None) => continue, // a comment (keep-alive)
                        Err(error) => return Some((Err(error), (bytes, buffer, ended))),
                    }
                }
                if ended {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(error)) => {
                        ended = true;
                        return Some((Err(error.into()), (bytes, buffer, ended)));
                    }
                    None => ended = true,
                }
            }
        },
    ))
}

/// The length of the first complete event block including its blank-line terminator.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    (0..buffer.len()).find_map(|i| {
        let rest = &buffer[i..];
        if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else {
            None
        }
    })
}

fn parse_block(block: &[u8]) -> anyhow::Result<Option<SseEvent>> {
    let text = std::str::from_utf8(block)?;
    let mut id = None;
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => id = Some(value.parse()?),
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(existing) => {
                    existing.push('\n');
                    existing.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    let Some(data) = data else { return Ok(None) };
    Ok(Some(SseEvent { id, event: event.unwrap_or_else(|| "message".into()), data: serde_json::from_str(&data)? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_skips_comments() {
        let block = b"id: 3\nevent: progress\ndata: {\"done\":1}\n\n";
        let event = parse_block(block).unwrap().unwrap();
        assert_eq!(event.id, Some(3));
        assert_eq!(event.event, "progress");
        assert_eq!(event.data["done"], 1);
        assert_eq!(parse_block(b":\n\n").unwrap(), None);
        assert_eq!(find_event_end(b"data: 1\n\nrest"), Some(9));
        assert_eq!(find_event_end(b"data: 1\n"), None);
    }
}
