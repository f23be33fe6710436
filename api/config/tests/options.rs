//! Option strings, the configuration's JSON shape and their error messages.

use hvflush_config::{ApiSocketConfig, Endpoint, EventMonitorConfig, OptionError};
use hvflush_config::{
    ConfigError, FlushMode, HypervFlushConfig, HypervFlushUpdate, L2Mode, PortError,
    VendorSignature, free_port_ranges, validate_hypercall_port,
};

const FREE: &str = "0x22-0x3f, 0x44-0x5f, 0x62-0x63, 0x65-0x6f, 0x72-0x7f, 0x81-0x91, \
                    0x93-0x9f, 0xa2-0xbf, 0xe0-0xe8, 0xea-0xef";

use hvflush_api::error_chain as chain;

fn parse_err(s: &str) -> Vec<String> {
    chain(&HypervFlushConfig::parse(s).expect_err(s))
}

#[test]
fn defaults() {
    let c = HypervFlushConfig::parse("").unwrap();
    assert_eq!(c, HypervFlushConfig::default());
    assert_eq!(
        c.to_option_string(),
        "mode=auto,l1=on,l2=auto,ex_masks=on,xmm_input=on,extended_ranges=on,vendor=microsoft,\
         hypercall_port=0x99"
    );
    assert!(HypervFlushConfig::syntax().contains("mode=auto|offload|userspace|off"));
}

#[test]
fn option_string_round_trips() {
    let cases = [
        "mode=offload,l1=off,l2=on,ex_masks=off,xmm_input=off,extended_ranges=off,vendor=kvm,hypercall_port=0x22",
        "mode=userspace",
        "mode=off,l2=off",
        "vendor=kvm,hypercall_port=0xef",
    ];
    for s in cases {
        let c = HypervFlushConfig::parse(s).unwrap();
        assert_eq!(
            HypervFlushConfig::parse(&c.to_option_string()).unwrap(),
            c,
            "{s}"
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<HypervFlushConfig>(&json).unwrap(), c);
        let u = HypervFlushUpdate::parse(s).unwrap();
        assert_eq!(
            HypervFlushUpdate::parse(&u.to_option_string()).unwrap(),
            u,
            "{s}"
        );
    }
    let c = HypervFlushConfig::parse(cases[0]).unwrap();
    assert_eq!(c.mode, FlushMode::Offload);
    assert!(!c.l1);
    assert_eq!(c.l2, L2Mode::On);
    assert_eq!(c.vendor, VendorSignature::Kvm);
    assert_eq!(c.hypercall_port, 0x22);
    // Decimal ports and Cloud Hypervisor's true/false toggles.
    let c = HypervFlushConfig::parse("hypercall_port=153,l1=false,ex_masks=true").unwrap();
    assert_eq!((c.hypercall_port, c.l1, c.ex_masks), (0x99, false, true));
}

/// serde's derive would read a struct from an array of its fields; the
/// configuration types take JSON objects only.
#[test]
fn json_arrays_are_refused() {
    for text in [
        "[]",
        "[null, null]",
        r#"["Auto", true]"#,
        "null",
        "5",
        r#""l1""#,
    ] {
        let e = serde_json::from_str::<HypervFlushUpdate>(text).expect_err(text);
        assert!(
            e.to_string()
                .contains("expected a JSON object of hyperv_flush keys"),
            "{text}: {e}"
        );
        assert!(
            serde_json::from_str::<HypervFlushConfig>(text).is_err(),
            "{text}"
        );
    }
    let e = serde_json::from_str::<HypervFlushUpdate>("[null, null]").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid type: sequence, expected a JSON object of hyperv_flush keys"),
        "{e}"
    );
    // `null` is not a value of any key (absent keys are the way to leave
    // one unchanged).
    let e = serde_json::from_str::<HypervFlushUpdate>(r#"{"xmm_input": null}"#).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid type: null, expected a boolean"),
        "{e}"
    );
    let u: HypervFlushUpdate = serde_json::from_str(r#"{"xmm_input": false}"#).unwrap();
    assert_eq!(u.xmm_input, Some(false));
    assert_eq!(u.l1, None);
    // Fields still report their own errors.
    let e = serde_json::from_str::<HypervFlushUpdate>(r#"{"l1": []}"#).unwrap_err();
    assert!(e.to_string().contains("expected a boolean"), "{e}");
}

#[test]
fn json_shape_is_cloud_hypervisor_style() {
    let json = serde_json::to_value(HypervFlushConfig::default()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "mode": "Auto", "l1": true, "l2": "Auto", "ex_masks": true, "xmm_input": true,
            "extended_ranges": true, "vendor": "Microsoft", "hypercall_port": 153
        })
    );
    let partial: HypervFlushConfig = serde_json::from_str(r#"{"l1": false}"#).unwrap();
    assert_eq!(
        partial,
        HypervFlushConfig {
            l1: false,
            ..Default::default()
        }
    );
    assert!(serde_json::from_str::<HypervFlushConfig>(r#"{"l3": 1}"#).is_err());
    let update: HypervFlushUpdate = serde_json::from_str(r#"{"mode": "Userspace"}"#).unwrap();
    assert_eq!(
        serde_json::to_string(&update).unwrap(),
        r#"{"mode":"Userspace"}"#
    );
    assert!(serde_json::from_str::<HypervFlushUpdate>(r#"{"speed": 1}"#).is_err());
}

#[test]
fn every_option_error_message() {
    let keys = "mode, l1, l2, ex_masks, xmm_input, extended_ranges, vendor, hypercall_port";
    assert_eq!(
        parse_err("l1"),
        ["Option `l1` is not of the form key=value"]
    );
    assert_eq!(
        parse_err("l3=on"),
        [format!("Unknown option `l3` (allowed: {keys})")]
    );
    assert_eq!(
        parse_err("l1=on,l1=off"),
        ["Option `l1` given more than once"]
    );
    assert_eq!(
        parse_err("vendor=\"kvm"),
        ["Unterminated quote in `vendor=\"kvm`"]
    );
    assert_eq!(
        parse_err("mode=fast"),
        ["Invalid value `fast` for `mode` (allowed: auto, offload, userspace, off)"]
    );
    assert_eq!(
        parse_err("l1=maybe"),
        ["Invalid value `maybe` for `l1` (allowed: on, off)"]
    );
    assert_eq!(
        parse_err("l2=yes"),
        ["Invalid value `yes` for `l2` (allowed: auto, on, off)"]
    );
    assert_eq!(
        parse_err("ex_masks=1"),
        ["Invalid value `1` for `ex_masks` (allowed: on, off)"]
    );
    assert_eq!(
        parse_err("vendor=xen"),
        ["Invalid value `xen` for `vendor` (allowed: microsoft, kvm)"]
    );
    assert_eq!(
        parse_err("hypercall_port=abc"),
        [format!(
            "Invalid value `abc` for `hypercall_port` (allowed: a free port in 0x00-0xff: {FREE})"
        )]
    );
    assert_eq!(
        parse_err("hypercall_port=0x70"),
        [
            "Invalid configuration".to_owned(),
            "Invalid value `0x70` for `hypercall_port`".to_owned(),
            format!("Used by the RTC/CMOS (allowed: {FREE})"),
        ]
    );
    assert_eq!(
        parse_err("hypercall_port=0x100")[2],
        format!("Above 0xff, the limit of the `out imm8, al` stub (allowed: {FREE})")
    );
    assert_eq!(
        parse_err("hypercall_port=0xf4")[2],
        format!("Used by the reference VMM's exit port (allowed: {FREE})")
    );
    assert_eq!(
        parse_err("hypercall_port=233")[2],
        format!("Used by the reference VMM's debug console (allowed: {FREE})")
    );
}

#[test]
fn hypercall_port_table() {
    assert_eq!(free_port_ranges(), FREE);
    let reserved: &[(u16, &str)] = &[
        (0x00, "primary DMA controller"),
        (0x1f, "primary DMA controller"),
        (0x20, "primary PIC"),
        (0xa1, "secondary PIC"),
        (0x43, "PIT"),
        (0x60, "keyboard controller"),
        (0x64, "keyboard controller"),
        (0x61, "PC speaker / NMI status port"),
        (0x71, "RTC/CMOS"),
        (0x80, "POST diagnostic port"),
        (0x92, "system control port A"),
        (0xc0, "secondary DMA controller"),
        (0xdf, "secondary DMA controller"),
        (0xf0, "FPU error ports"),
        (0xff, "FPU error ports"),
    ];
    for (port, device) in reserved {
        assert_eq!(
            validate_hypercall_port(*port),
            Err(PortError::Reserved { device }),
            "{port:#x}"
        );
    }
    for port in [0x22, 0x3f, 0x44, 0x99, 0xe8, 0xea, 0xef] {
        assert_eq!(validate_hypercall_port(port), Ok(()), "{port:#x}");
    }
    assert_eq!(validate_hypercall_port(0x100), Err(PortError::TooLarge));
    assert_eq!(validate_hypercall_port(u16::MAX), Err(PortError::TooLarge));
    let free = (0..=0xffu16)
        .filter(|p| validate_hypercall_port(*p).is_ok())
        .count();
    assert_eq!(free, 30 + 28 + 2 + 11 + 14 + 17 + 13 + 30 + 9 + 6);
}

#[test]
fn update_apply_and_diff() {
    let base = HypervFlushConfig::default();
    let u = HypervFlushUpdate::parse("l1=off,vendor=kvm").unwrap();
    let next = u.apply_to(&base).unwrap();
    assert_eq!(
        next,
        HypervFlushConfig {
            l1: false,
            vendor: VendorSignature::Kvm,
            ..base.clone()
        }
    );
    assert_eq!(HypervFlushUpdate::diff(&base, &next), u);
    assert!(HypervFlushUpdate::diff(&base, &base).is_empty());
    let bad = HypervFlushUpdate {
        hypercall_port: Some(0x80),
        ..Default::default()
    };
    assert!(matches!(
        bad.apply_to(&base),
        Err(ConfigError::InvalidPort { value: 0x80, .. })
    ));
    assert!(bad.validate().is_err());
}

#[test]
fn endpoints() {
    assert_eq!(
        ApiSocketConfig::parse("path=/run/vm.sock").unwrap().0,
        Endpoint::Path("/run/vm.sock".into())
    );
    assert_eq!(
        ApiSocketConfig::parse("path=\"/tmp/a,b.sock\"").unwrap().0,
        Endpoint::Path("/tmp/a,b.sock".into())
    );
    assert_eq!(
        EventMonitorConfig::parse("fd=3").unwrap().0,
        Endpoint::Fd(3)
    );
    let err = |s: &str| ApiSocketConfig::parse(s).unwrap_err().to_string();
    assert_eq!(
        err(""),
        format!("No option given (expected: {})", ApiSocketConfig::SYNTAX)
    );
    assert_eq!(
        err("path=/a,fd=3"),
        "Options `path` and `fd` exclude each other"
    );
    assert_eq!(err("file=/a"), "Unknown option `file` (allowed: path, fd)");
    assert_eq!(
        err("/tmp/x"),
        "Option `/tmp/x` is not of the form key=value"
    );
    assert_eq!(
        err("fd=2"),
        "Invalid value `2` for `fd` (allowed: a file descriptor number from 3 up)"
    );
    assert_eq!(
        err("fd=x"),
        "Invalid value `x` for `fd` (allowed: a file descriptor number from 3 up)"
    );
    assert_eq!(
        err("path="),
        "Invalid value `` for `path` (allowed: a non-empty path)"
    );
    assert!(matches!(
        EventMonitorConfig::parse("fd=3,fd=4"),
        Err(OptionError::Duplicate(_))
    ));
}

/// The key table of `docs/api.md` is the one `ConfigKey` defines: same
/// keys in the same order, same values, defaults and meaning.
#[test]
fn docs_key_table_matches_the_definition() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let rows: Vec<Vec<String>> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| key | values | default | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    let want: Vec<Vec<String>> = hvflush_config::ConfigKey::ALL
        .iter()
        .map(|k| {
            vec![
                format!("`{}`", k.name()),
                k.allowed(),
                format!("`{}`", k.default_value()),
                k.meaning().to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn more_vcpus_than_vp_indices_are_refused_unless_off() {
    let on = HypervFlushConfig::default();
    assert_eq!(on.validate_vcpus(hvflush_config::MAX_VP_INDICES), Ok(()));
    let e = on.validate_vcpus(8192).unwrap_err();
    assert_eq!(
        e.to_string(),
        "8192 vCPUs with Hyper-V flush enlightenments: Hyper-V VP indices address at most 4096 vCPUs; lower the vCPU count or set mode=off"
    );
    let off = HypervFlushConfig::parse("mode=off").unwrap();
    assert_eq!(off.validate_vcpus(8192), Ok(()));
}

#[test]
fn disabled_is_mode_off_with_every_other_default() {
    let off = HypervFlushConfig::disabled();
    assert_eq!(off.mode, FlushMode::Off);
    assert_eq!(
        HypervFlushConfig {
            mode: FlushMode::Auto,
            ..off
        },
        HypervFlushConfig::default()
    );
}
