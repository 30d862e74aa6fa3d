//! kvmtrace's eBPF programs: one per tracepoint, named after it.
//!
//! Each program filters early (is this a traced VM's thread? is a traced vCPU on this CPU?),
//! copies the tracepoint fields the loader located in the format files into an
//! [`Event`](kvmtrace_common::Event), and sends it to userspace through one ring buffer.
//! No string formatting, no per-event allocation; a full ring buffer is counted in `DROPS`.
#![no_std]
#![no_main]

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
use kvmtrace_common::{limits, Config};

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

/// vCPU thread id -> its VMM's tgid. Filled by the programs (first vCPU-context KVM event of
/// a thread) and by userspace (threads found in /proc at start-up).
#[map]
static VCPU_TIDS: HashMap<u32, u32> = HashMap::with_max_entries(limits::MAX_VCPU_THREADS, 0);

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
