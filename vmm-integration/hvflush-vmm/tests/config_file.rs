//! The reference VMM's VM config file (`hvflush-vmm run --config`), the
//! "command line overrides file" merge and their error messages.

use std::error::Error as _;

use hvflush_api::error_chain as chain;
use hvflush_config::{FlushMode, HypervFlushConfig, VendorSignature};
use hvflush_vmm::config_file::{ConfigFileError, merge_config, parse_vm_config};

fn file_err(text: &str) -> Vec<String> {
    chain(&parse_vm_config(text, "vm.json".as_ref()).expect_err(text))
}

#[test]
fn vm_config_file() {
    let text = r#"{
        "cpus": {"boot_vcpus": 4, "anything": [1, 2]},
        "memory": {"size": 536870912},
        "hyperv_flush": {"mode": "Userspace", "l1": false}
    }"#;
    let c = parse_vm_config(text, "vm.json".as_ref()).unwrap();
    assert_eq!(
        c,
        HypervFlushConfig {
            mode: FlushMode::Userspace,
            l1: false,
            ..Default::default()
        }
    );
    assert_eq!(
        parse_vm_config(r#"{"cpus": {}}"#, "vm.json".as_ref()).unwrap(),
        HypervFlushConfig::default()
    );

    // Nothing after the document.
    let e = file_err(r#"{"hyperv_flush": {}} {}"#);
    assert_eq!(e[0], "Invalid `(document)` in VM config file vm.json");
    assert!(e[1].starts_with("trailing characters"), "{e:?}");
    // Arrays are not objects: neither the document nor the section.
    let e = file_err(r#"[{"mode": "Off"}]"#);
    assert_eq!(e[0], "Invalid `(document)` in VM config file vm.json");
    assert!(
        e[1].starts_with("invalid type: sequence, expected a JSON object"),
        "{e:?}"
    );
    let e = file_err(r#"{"hyperv_flush": [null, null]}"#);
    assert_eq!(e[0], "Invalid `hyperv_flush` in VM config file vm.json");
    assert!(e[1].starts_with("invalid type: sequence"), "{e:?}");

    let e = file_err(r#"{"hyperv_flush": {"l3": true}}"#);
    assert_eq!(e[0], "Invalid `hyperv_flush.l3` in VM config file vm.json");
    assert!(
        e[1].starts_with("unknown field `l3`, expected one of `mode`"),
        "{e:?}"
    );
    let e = file_err(r#"{"hyperv_flush": {"mode": "Fast"}}"#);
    assert_eq!(
        e[0],
        "Invalid `hyperv_flush.mode` in VM config file vm.json"
    );
    assert!(
        e[1].starts_with(
            "unknown variant `Fast`, expected one of `Auto`, `Offload`, `Userspace`, `Off`"
        ),
        "{e:?}"
    );
    let e = file_err(r#"{"hyperv_flush": {"l1": "on"}}"#);
    assert_eq!(e[0], "Invalid `hyperv_flush.l1` in VM config file vm.json");
    assert!(
        e[1].starts_with("invalid type: string \"on\", expected a boolean"),
        "{e:?}"
    );
    let e = file_err(r#"{"hyperv_flush": {"hypercall_port": 96}}"#);
    assert_eq!(
        e,
        [
            "Invalid `hyperv_flush` section in VM config file vm.json".to_owned(),
            "Invalid value `0x60` for `hypercall_port`".to_owned(),
            format!(
                "Used by the keyboard controller (allowed: {})",
                hvflush_config::free_port_ranges()
            ),
        ]
    );
    let e = file_err("{\"hyperv_flush\": ");
    assert!(e[0].starts_with("Invalid `"), "{e:?}");
    assert!(e[1].contains("EOF while parsing"), "{e:?}");
}

#[test]
fn documented_file_error() {
    // The example of docs/api.md, word for word.
    let text = "{\n  \"cpus\": {\"boot_vcpus\": 4},\n  \"hyperv_flush\": {\n    \"mode\": \"Fast\"\n  }\n}\n";
    assert_eq!(
        file_err(text).join(": "),
        "Invalid `hyperv_flush.mode` in VM config file vm.json: unknown variant `Fast`, expected \
         one of `Auto`, `Offload`, `Userspace`, `Off` at line 4 column 18"
    );
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    assert!(doc.contains(&file_err(text).join(": ")));
    assert!(doc.contains(text.trim_end()));
}

#[test]
fn command_line_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.json");
    std::fs::write(
        &path,
        r#"{"hyperv_flush": {"l1": false, "ex_masks": false, "vendor": "Kvm"}, "payload": {}}"#,
    )
    .unwrap();
    let c = merge_config(Some(&path), Some("ex_masks=on,mode=userspace")).unwrap();
    assert_eq!(
        c,
        HypervFlushConfig {
            l1: false,
            ex_masks: true,
            vendor: VendorSignature::Kvm,
            mode: FlushMode::Userspace,
            ..Default::default()
        }
    );
    assert_eq!(
        merge_config(Some(&path), None).unwrap().vendor,
        VendorSignature::Kvm
    );
    assert!(!merge_config(None, Some("l1=off")).unwrap().l1);
    assert_eq!(
        merge_config(None, None).unwrap(),
        HypervFlushConfig::default()
    );
    let e = merge_config(Some(&path), Some("l1=perhaps")).unwrap_err();
    assert!(matches!(e, ConfigFileError::Option(_)));
    assert_eq!(
        chain(&e),
        [
            "Invalid --hyperv-flush option",
            "Invalid value `perhaps` for `l1` (allowed: on, off)"
        ]
    );
    let missing = dir.path().join("missing.json");
    let e = merge_config(Some(&missing), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Cannot read VM config file {}", missing.display())
    );
    assert!(e.source().is_some());
}
