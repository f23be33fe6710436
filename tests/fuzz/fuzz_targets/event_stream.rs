//! The event-file reader, `hvflush_api::events::parse_event_stream`, on
//! any text: no panic; whatever it accepts is a list of JSON objects (the
//! format, docs/api.md "Events") that, written back in the monitor's
//! format (pretty JSON, a blank line after each), reads back the same.
#![no_main]

use hvflush_api::events::parse_event_stream;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// `v` with its non-integer numbers blanked: serde_json reads floats
/// with its fast, not always exact, algorithm (no `float_roundtrip`), so
/// only their position survives a round trip. The monitor writes none.
fn exact(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::Null,
        Value::Array(a) => Value::Array(a.iter().map(exact).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), exact(v))).collect()),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(events) = parse_event_stream(text) else {
        return;
    };
    let mut written = String::new();
    for e in &events {
        written.push_str(&serde_json::to_string_pretty(e).expect("values serialise"));
        written.push_str("\n\n");
    }
    assert!(
        events.iter().all(Value::is_object),
        "accepted a non-object event: {events:?}"
    );
    let back = parse_event_stream(&written).expect("the monitor's format reads back");
    assert_eq!(
        back.iter().map(exact).collect::<Vec<_>>(),
        events.iter().map(exact).collect::<Vec<_>>()
    );
});
