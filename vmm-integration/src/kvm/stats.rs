//! KVM binary statistics (`KVM_GET_STATS_FD`, Documentation/virt/kvm/api.rst
//! 4.133): per-VM and per-vCPU counters read by name.
//!
//! Layout: `kvm_stats_header` at offset 0; `num_desc` descriptors of
//! `16 + name_size` bytes at `desc_offset`; values (u64 each) at
//! `data_offset + desc.offset`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use kvm_ioctls::{VcpuFd, VmFd};
use serde::Serialize;

use super::sys::{self, SysError};

/// Descriptors a stats file may have; real kernels have a few dozen.
const MAX_DESCRIPTORS: u32 = 4096;
/// Longest name (with NUL) accepted; the kernel uses 48.
const MAX_NAME_SIZE: u32 = 256;
/// Fixed part of `kvm_stats_desc`.
const DESC_FIXED: usize = 16;

/// Errors of the statistics reader.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The stats fd could not be obtained.
    #[error("Cannot open the binary statistics")]
    Fd(#[source] SysError),
    /// Reading the stats file failed.
    #[error("Cannot read the binary statistics")]
    Read(#[source] std::io::Error),
    /// The header is outside the limits this reader accepts.
    #[error("Malformed statistics header")]
    Header,
}

/// One statistic's descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatDesc {
    /// Name, e.g. "hypercalls".
    pub name: String,
    /// `KVM_STATS_TYPE_*`, unit and base bits.
    pub flags: u32,
    /// Number of u64 values.
    pub size: u16,
    /// Offset of the values in the data block.
    pub offset: u32,
}

/// An open statistics file with its parsed descriptors.
#[derive(Debug)]
pub struct KvmStats {
    file: File,
    data_offset: u64,
    descs: Vec<StatDesc>,
}

/// Parses descriptors from `bytes` (the descriptor block).
fn parse_descs(bytes: &[u8], num: u32, name_size: u32) -> Result<Vec<StatDesc>, StatsError> {
    let stride = DESC_FIXED + name_size as usize;
    let mut out = Vec::with_capacity(num as usize);
    for chunk in bytes.chunks_exact(stride).take(num as usize) {
        let u32_at =
            |i: usize| u32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
        let name_bytes = &chunk[DESC_FIXED..];
        let end = name_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_bytes.len());
        out.push(StatDesc {
            name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
            flags: u32_at(0),
            size: u16::from_le_bytes([chunk[6], chunk[7]]),
            offset: u32_at(8),
        });
    }
    if out.len() != num as usize {
        return Err(StatsError::Header);
    }
    Ok(out)
}

impl KvmStats {
    /// Statistics of one vCPU.
    pub fn for_vcpu(vcpu: &VcpuFd) -> Result<Self, StatsError> {
        Self::from_file(sys::stats_fd(vcpu).map_err(StatsError::Fd)?)
    }

    /// Statistics of a VM.
    pub fn for_vm(vm: &VmFd) -> Result<Self, StatsError> {
        Self::from_file(sys::stats_fd(vm).map_err(StatsError::Fd)?)
    }

    /// Parses the header and descriptors of an open stats file.
    pub fn from_file(file: File) -> Result<Self, StatsError> {
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, 0)
            .map_err(StatsError::Read)?;
        let field = |i: usize| {
            u32::from_le_bytes([
                header[i * 4],
                header[i * 4 + 1],
                header[i * 4 + 2],
                header[i * 4 + 3],
            ])
        };
        let (name_size, num_desc, desc_offset, data_offset) =
            (field(1), field(2), field(4), field(5));
        if num_desc > MAX_DESCRIPTORS || name_size > MAX_NAME_SIZE || name_size == 0 {
            return Err(StatsError::Header);
        }
        let mut block = vec![0u8; (DESC_FIXED + name_size as usize) * num_desc as usize];
        file.read_exact_at(&mut block, u64::from(desc_offset))
            .map_err(StatsError::Read)?;
        let descs = parse_descs(&block, num_desc, name_size)?;
        Ok(Self {
            file,
            data_offset: u64::from(data_offset),
            descs,
        })
    }

    /// The descriptors.
    pub fn descriptors(&self) -> &[StatDesc] {
        &self.descs
    }

    /// The first value of the statistic `name`, `None` if this kernel has
    /// no such statistic.
    pub fn read(&self, name: &str) -> Result<Option<u64>, StatsError> {
        let Some(d) = self.descs.iter().find(|d| d.name == name) else {
            return Ok(None);
        };
        read_u64_at(&self.file, self.data_offset + u64::from(d.offset)).map(Some)
    }

    /// A reader of the statistic `name` alone, keeping this file open;
    /// `None` if this kernel has no such statistic.
    pub fn into_stat(self, name: &str) -> Option<StatReader> {
        let d = self.descs.iter().find(|d| d.name == name)?;
        Some(StatReader {
            offset: self.data_offset + u64::from(d.offset),
            file: self.file,
        })
    }

    /// The flush-related counters of a vCPU in offload mode.
    pub fn offload_counters(&self) -> Result<OffloadCounters, StatsError> {
        Ok(OffloadCounters {
            hypercalls: self.read("hypercalls")?,
            tlb_flush: self.read("tlb_flush")?,
        })
    }
}

/// One statistic's first value, read with one `pread` (any thread).
#[derive(Debug)]
pub struct StatReader {
    file: File,
    offset: u64,
}

impl StatReader {
    /// The current value.
    pub fn read(&self) -> Result<u64, StatsError> {
        read_u64_at(&self.file, self.offset)
    }
}

/// One value of the data block.
fn read_u64_at(file: &File, offset: u64) -> Result<u64, StatsError> {
    let mut value = [0u8; 8];
    file.read_exact_at(&mut value, offset)
        .map_err(StatsError::Read)?;
    Ok(u64::from_le_bytes(value))
}

/// Per-vCPU counters KVM keeps for the offload path (`None`: this kernel
/// has no such statistic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OffloadCounters {
    /// Every hypercall the vCPU made (`hypercalls`).
    pub hypercalls: Option<u64>,
    /// TLB flushes KVM performed for the vCPU (`tlb_flush`).
    pub tlb_flush: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, flags: u32, size: u16, offset: u32, name_size: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&0i16.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        v.extend_from_slice(&n);
        v
    }

    #[test]
    fn descriptors_parse_names_and_offsets() {
        let mut block = desc("hypercalls", 0, 1, 0, 48);
        block.extend(desc("tlb_flush", 0, 1, 8, 48));
        let d = parse_descs(&block, 2, 48).unwrap();
        assert_eq!(d[0].name, "hypercalls");
        assert_eq!(d[1].name, "tlb_flush");
        assert_eq!(d[1].offset, 8);
    }

    #[test]
    fn short_descriptor_block_is_rejected() {
        let block = desc("hypercalls", 0, 1, 0, 48);
        assert!(matches!(
            parse_descs(&block, 2, 48),
            Err(StatsError::Header)
        ));
    }

    #[test]
    fn real_vcpu_has_hypercall_counter() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("skipped: /dev/kvm cannot be opened");
            return;
        };
        if sys::check_extension(&kvm, sys::CAP_BINARY_STATS_FD) <= 0 {
            eprintln!("skipped: KVM_CAP_BINARY_STATS_FD absent");
            return;
        }
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let stats = KvmStats::for_vcpu(&vcpu).unwrap();
        assert!(stats.descriptors().len() > 1);
        let c = stats.offload_counters().unwrap();
        assert_eq!(c.hypercalls, Some(0), "a fresh vCPU made no hypercall");
        assert_eq!(stats.read("no_such_stat").unwrap(), None);
    }
}
