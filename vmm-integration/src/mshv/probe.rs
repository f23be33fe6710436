//! Probing /dev/mshv: device presence, VMM capabilities and the synthetic
//! processor features this VMM may assign.

use mshv_bindings::hv_partition_property_code_HV_PARTITION_PROPERTY_ASSIGNABLE_SYNTHETIC_PROC_FEATURES as ASSIGNABLE_PROPERTY;
use mshv_ioctls::Mshv;

use crate::facts::{CpuVendor, MshvFacts};

/// Errors of the MSHV probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// /dev/mshv does not exist: not an MSHV root partition.
    #[error("No /dev/mshv: not running on a Microsoft hypervisor root partition")]
    Absent,
    /// /dev/mshv exists but cannot be opened.
    #[error("Cannot open /dev/mshv")]
    Open(#[source] mshv_ioctls::MshvError),
    /// `get_vmm_caps` failed.
    #[error("Cannot read the MSHV VMM capabilities")]
    VmmCaps(#[source] mshv_ioctls::MshvError),
    /// /dev/mshv could not be opened for the raw property read.
    #[error("Cannot open /dev/mshv")]
    Reopen(#[source] std::io::Error),
    /// The assignable features property could not be read.
    #[error("Cannot read the assignable synthetic processor features")]
    Assignable(#[source] vmm_sys_util::errno::Error),
}

/// Opens /dev/mshv and probes it.
pub fn probe_mshv() -> Result<MshvFacts, ProbeError> {
    if !std::path::Path::new("/dev/mshv").exists() {
        return Err(ProbeError::Absent);
    }
    let mshv = Mshv::new().map_err(ProbeError::Open)?;
    let caps = mshv.get_vmm_caps().map_err(ProbeError::VmmCaps)?;
    // SAFETY: both union members are 8 bytes of plain bits; any pattern is valid.
    let assignable_query =
        unsafe { caps.__bindgen_anon_1.__bindgen_anon_1 }.assignable_synthetic_proc_features() == 1;
    let assignable_features = if assignable_query {
        // mshv-ioctls does not lend its fd, so the raw call uses its own.
        let dev = std::fs::File::open("/dev/mshv").map_err(ProbeError::Reopen)?;
        Some(
            super::sys::host_property_ex_bank0(&dev, ASSIGNABLE_PROPERTY)
                .map_err(ProbeError::Assignable)?,
        )
    } else {
        None
    };
    Ok(MshvFacts {
        vendor: host_vendor(),
        assignable_query,
        assignable_features,
    })
}

/// The host CPU vendor, from /proc/cpuinfo (the root partition sees the
/// real one).
fn host_vendor() -> CpuVendor {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    vendor_from_cpuinfo(&text)
}

fn vendor_from_cpuinfo(text: &str) -> CpuVendor {
    let vendor = text
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id"))
        .and_then(|rest| rest.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("");
    let mut sig = [0u8; 12];
    if vendor.len() == 12 {
        sig.copy_from_slice(vendor.as_bytes());
    }
    CpuVendor::from_signature(&sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_from_cpuinfo_lines() {
        let intel = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n";
        assert_eq!(vendor_from_cpuinfo(intel), CpuVendor::Intel);
        assert_eq!(
            vendor_from_cpuinfo("vendor_id : AuthenticAMD\n"),
            CpuVendor::Amd
        );
        assert_eq!(vendor_from_cpuinfo("vendor_id : Other\n"), CpuVendor::Other);
        assert_eq!(vendor_from_cpuinfo(""), CpuVendor::Other);
    }

    #[test]
    fn probe_reports_absence_or_facts() {
        match probe_mshv() {
            Err(ProbeError::Absent) => eprintln!("skipped: no /dev/mshv on this host"),
            Err(e) => eprintln!("skipped: /dev/mshv unusable: {e}"),
            Ok(facts) => assert_eq!(facts.assignable_query, facts.assignable_features.is_some()),
        }
    }
}
