//! The configuration's text inputs: the `--hyperv-flush` option string
//! (`HypervFlushConfig::parse`, `HypervFlushUpdate::parse`, which
//! `hvflush-remote set` uses too), the `PUT` body's serde form
//! (`HypervFlushUpdate` from JSON) and the VM config file's section
//! (`hvflush_vmm::config_file::parse_vm_config`).
//!
//! Invariants: no panic; JSON is accepted only as objects (the document
//! and the section) and never with `null` for a key; every accepted value is valid (`validate`);
//! parse → `to_option_string` → parse gives the same value; JSON →
//! serialise → JSON gives the same value, and a valid JSON update has an
//! option string that parses back to it; a config file's section is the
//! same configuration as its option string.
#![no_main]

use std::path::Path;

use hvflush_config::{HypervFlushConfig, HypervFlushUpdate};
use hvflush_vmm::config_file::parse_vm_config;
use libfuzzer_sys::fuzz_target;

fn option_string(text: &str) {
    if let Ok(update) = HypervFlushUpdate::parse(text) {
        update.validate().expect("parsed updates are valid");
        let again = HypervFlushUpdate::parse(&update.to_option_string())
            .unwrap_or_else(|e| panic!("{:?} does not parse back: {e}", update.to_option_string()));
        assert_eq!(again, update, "round trip of {text:?}");
    }
    if let Ok(config) = HypervFlushConfig::parse(text) {
        config.validate().expect("parsed configurations are valid");
        let printed = config.to_option_string();
        assert_eq!(HypervFlushConfig::parse(&printed).as_ref(), Ok(&config));
        assert_eq!(printed, config.to_string());
        // The option string and the update agree on the keys given.
        let update = HypervFlushUpdate::parse(text).expect("a config's string is an update");
        assert_eq!(update.apply_to(&HypervFlushConfig::default()), Ok(config));
    }
}

fn json(bytes: &[u8]) {
    if let Ok(update) = serde_json::from_slice::<HypervFlushUpdate>(bytes) {
        let value: serde_json::Value = serde_json::from_slice(bytes).expect("valid JSON");
        assert!(value.is_object(), "an update from a non-object: {value}");
        assert!(
            value.as_object().unwrap().values().all(|v| !v.is_null()),
            "an update with a null value: {value}"
        );
        let text = serde_json::to_string(&update).expect("updates serialise");
        let back: HypervFlushUpdate = serde_json::from_str(&text).expect("own JSON parses");
        assert_eq!(back, update);
        if update.validate().is_ok() {
            let again = HypervFlushUpdate::parse(&update.to_option_string()).expect("valid");
            assert_eq!(again, update);
        }
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(config) = parse_vm_config(text, Path::new("fuzz.json")) {
        // The VMM's other sections are skipped unread, so they may hold
        // what `Value` refuses (a number beyond f64, valid JSON all the
        // same): the document is then only known to be an object.
        let json_space = [' ', '\t', '\n', '\r'];
        assert!(
            text.trim_start_matches(json_space).starts_with('{'),
            "a VM config from a non-object: {text:?}"
        );
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            assert!(
                value
                    .get("hyperv_flush")
                    .is_none_or(serde_json::Value::is_object),
                "a section from a non-object: {value}"
            );
        }
        config.validate().expect("a loaded section is valid");
        assert_eq!(
            HypervFlushConfig::parse(&config.to_option_string()).as_ref(),
            Ok(&config)
        );
        let text = serde_json::to_string(&config).expect("configs serialise");
        let back: HypervFlushConfig = serde_json::from_str(&text).expect("own JSON parses");
        assert_eq!(back, config);
    }
}

fuzz_target!(|data: &[u8]| {
    // One input feeds both forms: the option string as UTF-8 (as the
    // command line and `hvflush-remote` see it), and the bytes as JSON.
    if let Ok(text) = std::str::from_utf8(data) {
        option_string(text);
    }
    json(data);
});
