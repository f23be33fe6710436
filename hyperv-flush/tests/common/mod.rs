//! Fixtures shared by the integration tests: an in-memory guest, synthetic
//! hypercall registers and an encoder that lays a flush call out exactly as
//! a guest does (TLFS §3.7 register/memory layout; Linux
//! `struct hv_tlb_flush` / `struct hv_tlb_flush_ex`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyperv_flush::abi::{
    GvaRange, HV_GENERIC_SET_ALL, HV_GENERIC_SET_SPARSE_4K, HvStatus, HypercallControl,
};
use hyperv_flush::decode::{FlushCall, HypercallRegisters, ProcessorSet};
use hyperv_flush::engine::{Level, Partition, VcpuKicker, VcpuSet};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The test guest's memory.
pub type Mem = GuestMemoryMmap<()>;

/// RAM is `0..HOLE` and `HOLE + HOLE_SIZE..+RAM_TAIL`; the hole is not RAM.
pub const HOLE: u64 = 0x4000;
/// Size of the hole.
pub const HOLE_SIZE: u64 = 0x4000;
/// Where calls put their input by default.
pub const INPUT_GPA: u64 = 0x1000;
/// 4 KiB.
pub const PAGE: u64 = 4096;

/// Guest memory with a hole at [`HOLE`].
pub fn memory() -> Mem {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), HOLE as usize),
        (GuestAddress(HOLE + HOLE_SIZE), 0x4000),
    ])
    .expect("test guest memory")
}

/// Synthetic registers; counts XMM fetches (memory calls must not fetch).
#[derive(Clone, Debug, Default)]
pub struct Regs {
    /// RCX.
    pub control: u64,
    /// RDX.
    pub rdx: u64,
    /// R8.
    pub r8: u64,
    /// XMM0-5.
    pub xmm: [u128; 6],
    /// How often `xmm()` was called.
    pub xmm_reads: usize,
}

impl HypercallRegisters for Regs {
    fn control(&self) -> u64 {
        self.control
    }
    fn input(&self) -> u64 {
        self.rdx
    }
    fn output(&self) -> u64 {
        self.r8
    }
    fn xmm(&mut self) -> [u128; 6] {
        self.xmm_reads += 1;
        self.xmm
    }
}

/// The processor set a test call names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpSet {
    /// Non-Ex `processor_mask`.
    Mask(u64),
    /// Ex sparse set: `banks` are the present banks, lowest first.
    Sparse {
        /// Present banks.
        valid_bank_mask: u64,
        /// Their contents, in bank order.
        banks: Vec<u64>,
    },
    /// Ex `HV_GENERIC_SET_ALL`, optionally still carrying banks.
    ExAll {
        /// Valid bank mask sent along.
        valid_bank_mask: u64,
        /// Banks sent along.
        banks: Vec<u64>,
    },
}

impl VpSet {
    /// An Ex sparse set holding `vps`.
    pub fn sparse(vps: &[u32]) -> Self {
        let mut all = [0u64; 64];
        for &vp in vps {
            all[vp as usize / 64] |= 1 << (vp % 64);
        }
        let mut valid_bank_mask = 0;
        let mut banks = Vec::new();
        for (i, b) in all.iter().enumerate() {
            if *b != 0 {
                valid_bank_mask |= 1 << i;
                banks.push(*b);
            }
        }
        Self::Sparse {
            valid_bank_mask,
            banks,
        }
    }
}

/// A flush call as a guest would issue it.
#[derive(Clone, Debug)]
pub struct Call {
    /// Which call.
    pub call: FlushCall,
    /// Register input.
    pub fast: bool,
    /// `address_space`.
    pub address_space: u64,
    /// `flags`.
    pub flags: u64,
    /// Processor set (must match `call.is_ex()`).
    pub vps: VpSet,
    /// Raw GVA list entries (List calls).
    pub gvas: Vec<u64>,
    /// Rep start index.
    pub rep_start: u16,
    /// Overrides for malformed calls.
    pub control_or: u64,
    /// Variable header size override.
    pub var_header: Option<u16>,
    /// Rep count override.
    pub rep_count: Option<u16>,
}

impl Call {
    /// A well-formed call of `call` to VP 0 with `gvas`.
    pub fn new(call: FlushCall, fast: bool) -> Self {
        let vps = if call.is_ex() {
            VpSet::sparse(&[0])
        } else {
            VpSet::Mask(1)
        };
        let gvas = if call.is_list() {
            vec![0x7000_1000, 0x7000_5003]
        } else {
            Vec::new()
        };
        Self {
            call,
            fast,
            address_space: 0x1234_5000,
            flags: 0,
            vps,
            gvas,
            rep_start: 0,
            control_or: 0,
            var_header: None,
            rep_count: None,
        }
    }

    /// Builder: processor set.
    pub fn vps(mut self, vps: VpSet) -> Self {
        self.vps = vps;
        self
    }

    /// Builder: GVA entries.
    pub fn gvas(mut self, gvas: Vec<u64>) -> Self {
        self.gvas = gvas;
        self
    }

    /// Builder: flags.
    pub fn flags(mut self, flags: u64) -> Self {
        self.flags = flags;
        self
    }

    /// The variable header size the call declares.
    pub fn var_header(&self) -> u16 {
        self.var_header.unwrap_or(match &self.vps {
            VpSet::Mask(_) => 0,
            VpSet::Sparse { banks, .. } | VpSet::ExAll { banks, .. } => banks.len() as u16,
        })
    }

    /// The control word (RCX).
    pub fn control(&self) -> u64 {
        let reps = self.rep_count.unwrap_or(self.gvas.len() as u16);
        let c = HypercallControl::new()
            .with_code(self.call.code().0)
            .with_fast(self.fast)
            .with_variable_header_size(self.var_header())
            .with_rep_count(reps)
            .with_rep_start(self.rep_start);
        u64::from(c) | self.control_or
    }

    /// The input qwords in order: fixed header, variable header, GVAs.
    pub fn qwords(&self) -> Vec<u64> {
        let mut q = vec![self.address_space, self.flags];
        match &self.vps {
            VpSet::Mask(m) => q.push(*m),
            VpSet::Sparse {
                valid_bank_mask,
                banks,
            } => {
                q.extend([HV_GENERIC_SET_SPARSE_4K, *valid_bank_mask]);
                q.extend(banks);
            }
            VpSet::ExAll {
                valid_bank_mask,
                banks,
            } => {
                q.extend([HV_GENERIC_SET_ALL, *valid_bank_mask]);
                q.extend(banks);
            }
        }
        q.extend(&self.gvas);
        q
    }

    /// Lays the call out: memory input at `gpa` (if RAM), or registers
    /// (qwords past XMM5 are dropped: they do not exist).
    pub fn place(&self, mem: &Mem, gpa: u64) -> Regs {
        let q = self.qwords();
        let mut regs = Regs {
            control: self.control(),
            ..Regs::default()
        };
        if self.fast {
            regs.rdx = q[0];
            regs.r8 = q[1];
            for (i, pair) in q[2..].chunks(2).take(6).enumerate() {
                let lo = u128::from(pair[0]);
                let hi = u128::from(*pair.get(1).unwrap_or(&0));
                regs.xmm[i] = lo | hi << 64;
            }
        } else {
            for (i, v) in q.iter().enumerate() {
                // Parts outside RAM simply stay unwritten (unreadable input).
                let _ = mem.write_obj(*v, GuestAddress(gpa.wrapping_add(8 * i as u64)));
            }
            regs.rdx = gpa;
            regs.r8 = 0;
        }
        regs
    }
}

/// A kicker that records kicks; tests with no running targets assert none.
#[derive(Default)]
pub struct RecordingKicker {
    /// Every kick, in order.
    pub kicks: Mutex<Vec<usize>>,
    /// Number of kicks.
    pub count: AtomicUsize,
}

impl VcpuKicker for RecordingKicker {
    fn kick(&self, vcpu: usize) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.kicks.lock().unwrap().push(vcpu);
    }
}

impl RecordingKicker {
    /// Kicks so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// The vCPUs `set` routes to from `caller` at `level`, in order.
pub fn routed(p: &Partition, caller: usize, level: Level, set: &ProcessorSet) -> Vec<usize> {
    let mut out = VcpuSet::default();
    p.route(caller, level, set, &mut out).expect("route");
    out.iter().collect()
}

/// Places `c` in guest memory and makes the call from `caller`.
pub fn call(
    p: &Partition,
    mem: &Mem,
    caller: usize,
    level: Level,
    c: &Call,
    kicker: &dyn VcpuKicker,
) -> HvStatus {
    let mut regs = c.place(mem, INPUT_GPA);
    p.handle_hypercall(caller, level, &mut regs, mem, kicker)
        .expect("caller exists")
        .status
}

/// `n` page-aligned GVAs, one page apart.
pub fn pages(n: u64) -> Vec<u64> {
    (0..n).map(|i| 0x7000_0000 + (i << 12)).collect()
}

/// The one-page ranges of `gvas`.
pub fn ranges(gvas: &[u64]) -> Vec<GvaRange> {
    gvas.iter().map(|g| GvaRange::from_simple(*g)).collect()
}
