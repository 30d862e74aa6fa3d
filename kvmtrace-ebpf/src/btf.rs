//! What the BTF tracepoint (`tp_btf`) programs share: their typed arguments and the kernel
//! struct fields behind them.
//!
//! A `tp_btf` program is called straight from the tracepoint with the tracepoint's own C
//! arguments; no perf record is built for it (a classic tracepoint program first has the
//! kernel fill the event's raw record in the per-CPU perf buffer, a cost that does not show
//! in the program's run time but does in the traced code's). The arguments are an array of
//! u64 the program loads directly; a pointer argument to a struct (`struct task_struct *`) is
//! typed by BTF, so the program loads its fields directly too (the verifier turns those
//! loads into fault-safe ones), at offsets the loader found in the kernel's BTF
//! ([`kvmtrace_common::BtfOffsets`]) and hands over in `CONFIG` like the format-file offsets.
//! Pointers to anything else (`const void *data`, `ktime_t *now`) are plain numbers and are
//! read with `bpf_probe_read_kernel`, as the classic tracepoint's assignment reads them.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::BtfTracePointContext};
use kvmtrace_common::{BtfOffsets, Comm};

use crate::CONFIG;

/// Defines a BTF tracepoint program:
/// `btf_program! { pub fn NAME_btf(ctx: BtfTracePointContext) -> u32 {..} }`.
///
/// The loader attaches `<tracepoint>_btf` to `<tracepoint>` when the kernel's BTF describes
/// it, and the classic program of the same tracepoint otherwise. A raw tracepoint ignores
/// the program's return value.
macro_rules! btf_program {
    (pub fn $name:ident($ctx:ident: BtfTracePointContext) -> u32 $body:block) => {
        #[no_mangle]
        #[link_section = "tp_btf"]
        pub fn $name(raw: *mut ::core::ffi::c_void) -> i32 {
            #[inline(always)]
            fn body($ctx: ::aya_ebpf::programs::BtfTracePointContext) -> u32 $body
            let _ = body(::aya_ebpf::programs::BtfTracePointContext::new(raw));
            0
        }
    };
}

/// Argument `n` as the raw u64 the kernel passed (integers arrive zero- or sign-extended
/// from their C type, as `CAST_TO_U64` made them).
#[inline(always)]
pub fn arg(ctx: &BtfTracePointContext, n: usize) -> u64 {
    ctx.arg::<u64>(n)
}

/// Argument `n`, a C `unsigned int` / `u32`.
#[inline(always)]
pub fn arg_u32(ctx: &BtfTracePointContext, n: usize) -> u64 {
    arg(ctx, n) as u32 as u64
}

/// Argument `n`, a C `int` / `s32`: sign-extended into the slot, as a classic tracepoint's
/// signed 4-byte field is.
#[inline(always)]
pub fn arg_i32(ctx: &BtfTracePointContext, n: usize) -> u64 {
    arg(ctx, n) as u32 as i32 as i64 as u64
}

/// Argument `n`, a C `u16`.
#[inline(always)]
pub fn arg_u16(ctx: &BtfTracePointContext, n: usize) -> u64 {
    arg(ctx, n) as u16 as u64
}

/// Argument `n`, a C `u8` or `bool`.
#[inline(always)]
pub fn arg_u8(ctx: &BtfTracePointContext, n: usize) -> u64 {
    arg(ctx, n) as u8 as u64
}

/// Argument `n`, a pointer to a struct the kernel's BTF describes.
#[inline(always)]
pub fn arg_ptr(ctx: &BtfTracePointContext, n: usize) -> *const u8 {
    ctx.arg::<*const u8>(n)
}

#[inline(always)]
fn offsets() -> BtfOffsets {
    // SAFETY: plain read of a .rodata global the loader set before load (`CONFIG`); volatile
    // so the zeroed initialiser is not folded in.
    unsafe { core::ptr::read_volatile(&CONFIG.btf) }
}

/// Loads a `T` at byte `off` of a BTF-typed kernel object.
///
/// # Safety
/// `p` must be a BTF-typed pointer argument of the program and `off` a loader-provided offset
/// of a field of `T`'s size in its type: the verifier checks the access against the type and
/// makes the load fault-safe.
#[inline(always)]
unsafe fn load<T: Copy>(p: *const u8, off: u32) -> T {
    // SAFETY: see the function's contract.
    unsafe { (p.add(off as usize) as *const T).read_volatile() }
}

/// A task's thread id (`task_struct.pid`).
#[inline(always)]
pub fn task_pid(task: *const u8) -> u32 {
    // SAFETY: `task` is a `struct task_struct *` argument; `task_pid` is the offset of its
    // `pid_t pid`.
    unsafe { load::<i32>(task, offsets().task_pid) as u32 }
}

/// A task's process id (`task_struct.tgid`).
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    // SAFETY: as above, `pid_t tgid`.
    unsafe { load::<i32>(task, offsets().task_tgid) as u32 }
}

/// A task's priority (`task_struct.prio`), as `sched_wakeup`'s `prio` field holds it.
#[inline(always)]
pub fn task_prio(task: *const u8) -> u64 {
    // SAFETY: as above, `int prio`.
    unsafe { load::<i32>(task, offsets().task_prio) as i64 as u64 }
}

/// The CPU a task is on (`task_cpu(p)`).
#[inline(always)]
pub fn task_cpu(task: *const u8) -> u64 {
    // SAFETY: as above, `unsigned int cpu` of its thread_info (or the task).
    unsafe { load::<u32>(task, offsets().task_cpu) as u64 }
}

/// A task's name (`task_struct.comm`, 16 bytes), in two 8-byte loads.
#[inline(always)]
pub fn task_comm(task: *const u8) -> Comm {
    let off = offsets().task_comm;
    // SAFETY: as above, `char comm[16]`: both loads stay inside the array.
    let (lo, hi) = unsafe { (load::<u64>(task, off), load::<u64>(task, off + 8)) };
    Comm::from_slots(lo, hi)
}

/// `sched_switch`'s `prev_state` field as the classic tracepoint computes it
/// (`__trace_sched_switch_state`, include/trace/events/sched.h, kernels since 6.1): the
/// preempted task's `TASK_REPORT_MAX`, else one bit for the task's reported state.
#[inline(always)]
pub fn switch_prev_state(preempt: bool, prev_state: u32, prev: *const u8) -> u64 {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_IDLE: u32 = 0x402;
    const TASK_UNINTERRUPTIBLE: u32 = 0x2;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    const TASK_FROZEN: u32 = 0x8000;
    const TASK_REPORT_IDLE: u32 = 0x80;
    const TASK_REPORT_MAX: u64 = 0x100;
    if preempt {
        return TASK_REPORT_MAX;
    }
    // SAFETY: `prev` is the `struct task_struct *prev` argument; `int exit_state`.
    let exit_state = unsafe { load::<i32>(prev, offsets().task_exit_state) } as u32;
    let mut state = (prev_state | exit_state) & TASK_REPORT;
    if prev_state & TASK_IDLE == TASK_IDLE {
        state = TASK_REPORT_IDLE;
    }
    if prev_state & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        state = TASK_UNINTERRUPTIBLE;
    }
    // `state ? 1 << (fls(state) - 1) : 0`: the highest set bit (state < 0x100).
    let mut top = 0u64;
    let mut bit = 0x80u32;
    while bit != 0 {
        if state & bit != 0 {
            top = bit as u64;
            break;
        }
        bit >>= 1;
    }
    top
}

/// `hrtimer.function` of an `struct hrtimer *` argument.
#[inline(always)]
pub fn hrtimer_function(timer: *const u8) -> u64 {
    // SAFETY: `timer` is a `struct hrtimer *` argument; a function pointer member.
    unsafe { load::<u64>(timer, offsets().hrtimer_function) }
}

/// `hrtimer_get_expires(timer)`: `hrtimer.node.expires`.
#[inline(always)]
pub fn hrtimer_expires(timer: *const u8) -> u64 {
    // SAFETY: as above, `ktime_t expires` of its `timerqueue_node`.
    unsafe { load::<i64>(timer, offsets().hrtimer_expires) as u64 }
}

/// Reads a `T` behind an untyped kernel pointer (`const void *`, `ktime_t *`).
#[inline(always)]
pub fn read_kernel<T: Copy>(p: u64) -> Option<T> {
    if p == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly on a bad one.
    unsafe { bpf_probe_read_kernel(p as *const T) }.ok()
}
