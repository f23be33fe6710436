//! Reading an event file back: the inverse of the monitor's format, for
//! tools and tests that consume `--event-monitor` output.

use serde_json::Value;
use thiserror::Error;

/// Errors reading an event stream.
#[derive(Debug, Error)]
pub enum EventStreamError {
    /// The stream does not end with an object and a blank line.
    #[error("Event stream does not end with a complete event and a blank line")]
    Truncated,
    /// One event is valid JSON but not an object.
    #[error("Event {index} is not a JSON object")]
    NotAnObject {
        /// Position of the event in the stream, from 0.
        index: usize,
    },
    /// One event is not valid JSON.
    #[error("Event {index} does not parse")]
    Event {
        /// Position of the event in the stream, from 0.
        index: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Splits `text` into its events: JSON objects, each followed by one blank
/// line (Cloud Hypervisor's event-monitor format).
pub fn parse_event_stream(text: &str) -> Result<Vec<Value>, EventStreamError> {
    if !text.is_empty() && !text.ends_with("}\n\n") {
        return Err(EventStreamError::Truncated);
    }
    text.split_terminator("\n\n")
        .enumerate()
        .map(|(index, chunk)| {
            match serde_json::from_str(chunk) {
                Ok(event @ Value::Object(_)) => Ok(event),
                // Only the last chunk's `}` is checked above: `1` or `[]`
                // before it would pass for an event (found by fuzzing,
                // tests/fuzz `event_stream`).
                Ok(_) => Err(EventStreamError::NotAnObject { index }),
                Err(source) => Err(EventStreamError::Event { index, source }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_and_refuses_a_cut_stream() {
        let text = "{\n  \"event\": \"a\"\n}\n\n{\n  \"event\": \"b\"\n}\n\n";
        let events = parse_event_stream(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["event"], "b");
        assert!(parse_event_stream("").unwrap().is_empty());
        assert!(matches!(
            parse_event_stream(&text[..text.len() - 1]),
            Err(EventStreamError::Truncated)
        ));
        assert!(matches!(
            parse_event_stream("{\n\n"),
            Err(EventStreamError::Truncated)
        ));
        assert!(matches!(
            parse_event_stream("{]}\n\n"),
            Err(EventStreamError::Event { index: 0, .. })
        ));
        assert!(matches!(
            parse_event_stream("{}\n\n4\n\n{}\n\n"),
            Err(EventStreamError::NotAnObject { index: 1 })
        ));
    }
}
