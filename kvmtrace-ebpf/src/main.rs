//! kvmtrace's eBPF programs: one per tracepoint, named after it.
//!
//! Each program filters early (is this a traced VM's thread? is a traced vCPU on this CPU?),
//! copies the tracepoint fields the loader located in the format files into an
//! [`Event`](kvmtrace_common::Event), and sends it to userspace through one ring buffer.
//! No string formatting, no per-event allocation; a full ring buffer is counted in `DROPS`.
#![no_std]
#![no_main]
// `atomic_xadd` for exact per-CPU counters (record::count): the bpfel target offers no
// `fetch_add` on its atomics. The crate builds with nightly anyway (-Z build-std).
#![feature(core_intrinsics)]
#![allow(internal_features)]

/// Defines a tracepoint program: `program! { pub fn NAME(ctx: TracePointContext) -> u32 {..} }`.
///
/// aya-ebpf 0.2's `#[tracepoint]` discards the function's value and returns 0, and for a
/// program attached through perf, 0 tells the kernel to drop the event for every other perf
/// consumer of the tracepoint. This returns what the body returns ([`PASS`]).
macro_rules! program {
    (pub fn $name:ident($ctx:ident: TracePointContext) -> u32 $body:block) => {
        #[no_mangle]
        #[link_section = "tracepoint"]
        pub fn $name(raw: *mut ::core::ffi::c_void) -> u32 {
            let $ctx = TracePointContext::new(raw);
            $body
        }
    };
}

#[macro_use]
mod btf;
mod exits;
mod filter;
mod irq;
mod kvm;
mod lock;
mod record;
mod sched;
mod stacks;

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use kvmtrace_common::{limits, Config, ExitHist, ExitKey, VcpuThread};

/// What every program returns. For a tracepoint program attached through perf, 0 tells the
/// kernel to drop the event for *every* perf consumer of that tracepoint: an operator's
/// `perf record` or `perf stat` running beside kvmtrace would silently see nothing. 1 lets
/// them have it.
pub const PASS: u32 = 1;

/// Loader-provided configuration (field offsets from the format files, filter knobs).
/// Lives in .rodata: the verifier sees constants and prunes what this kernel lacks.
#[no_mangle]
static CONFIG: Config = Config::zeroed();

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(limits::DEFAULT_RING_BYTES, 0);

/// Records that did not fit in `EVENTS`, per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Records submitted on this CPU since it last woke the reader (see `record::emit`).
#[map]
static SINCE_WAKEUP: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Records the programs tried to send, per CPU (sent + `DROPS`).
#[map]
static EMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// vCPU thread id -> its VMM's tgid and its pending exit. Filled by the programs (first
/// vCPU-context KVM event of a thread) and by userspace (threads found in /proc at start-up).
#[map]
static VCPU_TIDS: HashMap<u32, VcpuThread> = HashMap::with_max_entries(limits::MAX_VCPU_THREADS, 0);

/// `vcpu_key(tgid, vcpu_id)` -> the vCPU's thread id (`exits.rs`).
#[map]
static VCPU_BY_ID: HashMap<u64, u32> = HashMap::with_max_entries(limits::MAX_VCPU_THREADS, 0);

/// (vCPU thread, isa, exit reason) -> histogram of exit-handling latency (`exits.rs`).
#[map]
static EXIT_HIST: HashMap<ExitKey, ExitHist> = HashMap::with_max_entries(limits::MAX_EXIT_KEYS, 0);

/// One all-zero histogram: where a new key's value is copied from (a 1 KiB value cannot be
/// built on the 512-byte BPF stack).
#[map]
static ZERO_HIST: Array<ExitHist> = Array::with_max_entries(1, 0);

/// Exits not in `EXIT_HIST` because it was full (they are streamed instead), per CPU.
#[map]
static AGG_MISSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per VM (slot `tgid % VM_STREAM_SLOTS`): stream its vCPUs' exits until this time; set by
/// a PIC interrupt raised from the VMM's process (the PIC path names no target vCPU).
#[map]
static VM_STREAM: Array<u64> = Array::with_max_entries(limits::VM_STREAM_SLOTS, 0);

/// Stream every vCPU's exits until this time: set by an interrupt whose target thread is
/// not known (accepted in a thread of no known VM, e.g. a LAPIC timer firing in another
/// task, or for a vCPU whose id was not seen yet).
#[map]
static GLOBAL_STREAM: Array<u64> = Array::with_max_entries(1, 0);

/// tgids of processes known to run vCPUs.
#[map]
static VM_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(limits::MAX_VMS, 0);

/// tgids selected with `-p` (used when `CONFIG.filter_mode == filter::PIDS`).
#[map]
static TRACED_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(limits::MAX_VMS, 0);

/// Per CPU id: `cpu_state` bits (a traced vCPU runs or waits there).
#[map]
static CPU_STATE: Array<u32> = Array::with_max_entries(limits::MAX_CPUS, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
