//! Which I/O port the hypercall page's trap may use.

/// Port ranges the hypercall trap must not use: standard PC devices, KVM's
/// in-kernel devices (PIC, PIT and its speaker port) and the reference
/// VMM's own ports. Inclusive ranges.
const RESERVED_PORTS: &[(u16, u16, &str)] = &[
    (0xE9, 0xE9, "reference VMM's debug console"),
    (0xF4, 0xF4, "reference VMM's exit port"),
    (0x00, 0x1F, "primary DMA controller"),
    (0x20, 0x21, "primary PIC"),
    (0x40, 0x43, "PIT"),
    (0x60, 0x60, "keyboard controller"),
    (0x61, 0x61, "PC speaker / NMI status port"),
    (0x64, 0x64, "keyboard controller"),
    (0x70, 0x71, "RTC/CMOS"),
    (0x80, 0x80, "POST diagnostic port"),
    (0x92, 0x92, "system control port A"),
    (0xA0, 0xA1, "secondary PIC"),
    (0xC0, 0xDF, "secondary DMA controller"),
    (0xF0, 0xFF, "FPU error ports"),
];

/// Highest usable port: the hypercall page stub is `out imm8, al; ret`.
pub const MAX_HYPERCALL_PORT: u16 = 0xFF;

/// Why a hypercall port cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Above the 8-bit immediate range.
    #[error(
        "Above 0xff, the limit of the `out imm8, al` stub (allowed: {})",
        free_port_ranges()
    )]
    TooLarge,
    /// Taken by a device.
    #[error("Used by the {device} (allowed: {allowed})", allowed = free_port_ranges())]
    Reserved {
        /// The device using it.
        device: &'static str,
    },
}

/// Checks that `port` fits the hypercall stub and collides with no device.
pub fn validate_hypercall_port(port: u16) -> Result<(), PortError> {
    if port > MAX_HYPERCALL_PORT {
        return Err(PortError::TooLarge);
    }
    match RESERVED_PORTS
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&port))
    {
        Some((_, _, device)) => Err(PortError::Reserved { device }),
        None => Ok(()),
    }
}

/// The usable hypercall ports as a list of ranges, e.g. "0x22-0x3f, ...".
pub fn free_port_ranges() -> String {
    let mut ranges: Vec<String> = Vec::new();
    let mut start: Option<u16> = None;
    for port in 0..=MAX_HYPERCALL_PORT + 1 {
        let free = port <= MAX_HYPERCALL_PORT && is_free_port(port);
        match (free, start) {
            (true, None) => start = Some(port),
            (false, Some(s)) => {
                let end = port - 1;
                ranges.push(if s == end {
                    format!("{s:#04x}")
                } else {
                    format!("{s:#04x}-{end:#04x}")
                });
                start = None;
            }
            _ => {}
        }
    }
    ranges.join(", ")
}

fn is_free_port(port: u16) -> bool {
    !RESERVED_PORTS
        .iter()
        .any(|(lo, hi, _)| (*lo..=*hi).contains(&port))
}
