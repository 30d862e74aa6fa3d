//! Kernel stacks where latency is spent (docs/stacks.md). Attached only with `--stacks`,
//! beside the per-tracepoint programs (several programs may attach to one tracepoint):
//! each takes the current task's kernel stack into [`KSTACKS`] and sends a small record with
//! the stack id. The programs read no tracepoint field: the current task and CPU say all
//! they need, so they depend on nothing the loader locates.

use core::cell::UnsafeCell;
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{bpf_map_def, bpf_map_type::BPF_MAP_TYPE_STACK_TRACE},
    helpers::{bpf_get_stackid, bpf_ktime_get_ns},
    macros::perf_event,
    programs::{PerfEventContext, TracePointContext},
    EbpfContext,
};
use kvmtrace_common::{limits, stack, Event, Kind};

use crate::{
    filter::{cpu_interesting, is_vcpu},
    record::{current_ids, emit, this_cpu},
    PASS,
};

/// A stack-trace map definition with [`limits::STACK_DEPTH`] frames per stack: aya-ebpf's
/// `StackTrace` fixes 127, twice the memory for frames a kernel stack rarely has.
#[repr(transparent)]
pub struct StackMap(UnsafeCell<bpf_map_def>);

// SAFETY: the definition is never written at run time: the loader reads it from the object
// and the programs only pass its address to `bpf_get_stackid` (relocated to the map's fd).
unsafe impl Sync for StackMap {}

/// Kernel stacks by id. No `BPF_F_REUSE_STACKID`: a stack is never replaced, so an id in a
/// record stays valid until userspace reads it; a stack whose bucket is taken is lost
/// (`EEXIST`, counted per record). The loader sets `max_entries` to 1 without `--stacks`.
#[link_section = "maps"]
#[export_name = "KSTACKS"]
static KSTACKS: StackMap = StackMap(UnsafeCell::new(bpf_map_def {
    type_: BPF_MAP_TYPE_STACK_TRACE,
    key_size: 4,
    value_size: 8 * limits::STACK_DEPTH,
    max_entries: limits::MAX_STACKS,
    map_flags: 0,
    id: 0,
    pinning: 0,
}));

/// The current kernel stack's id in [`KSTACKS`], or the errno why there is none.
#[inline(always)]
fn stack_id(ctx: *mut c_void) -> (u64, u64) {
    // SAFETY: `ctx` is this program's context and the map pointer is `KSTACKS`'s
    // definition, which the loader relocates to the map; the helper checks both.
    let r = unsafe { bpf_get_stackid(ctx, KSTACKS.0.get().cast(), 0) };
    if r >= 0 {
        (r as u64, 0)
    } else {
        (0, r.unsigned_abs())
    }
}

/// Sends a stack record of `kind` for the current task. Built field by field: a zeroed
/// array first would become a byte-wise memset call in BPF.
#[inline(always)]
fn send(kind: Kind, slots: [u64; 3], cpu: u32, ids: (u32, u32)) {
    // SAFETY: a helper without arguments or side effects.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    emit(&Event {
        ts_ns,
        tid: ids.0,
        tgid: ids.1,
        cpu,
        kind: kind as u16,
        missing: 0,
        _pad: 0,
        slots: [slots[0], slots[1], slots[2], 0, 0],
    });
}

#[inline(always)]
fn stack_at(ctx: &TracePointContext, what: u64, cpu: u32, ids: (u32, u32)) {
    let (id, error) = stack_id(ctx.as_ptr());
    send(Kind::StackAt, [id, what, error], cpu, ids);
}

// The task switched out (still current at the tracepoint): a vCPU thread going to sleep or
// preempted, anywhere; any other task on a CPU where a traced vCPU runs or waits (the
// culprit handing the CPU back). The idle task's stack says nothing.
program! {
    pub fn stack_sched_switch(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        let ids = current_ids();
        if ids.0 != 0 && (is_vcpu(ids.0) || cpu_interesting(cpu)) {
            stack_at(&ctx, stack::SWITCH, cpu, ids);
        }
        PASS
    }
}

// A vCPU thread contending on a lock: which lock path.
program! {
    pub fn stack_contention_begin(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        if cpu_interesting(cpu) {
            let ids = current_ids();
            if is_vcpu(ids.0) {
                stack_at(&ctx, stack::CONTENTION, cpu, ids);
            }
        }
        PASS
    }
}

// Host interrupt work starting on a traced vCPU's CPU: the entry path and what it
// interrupted (a cpu-clock profile cannot sample inside a hard IRQ handler).
program! {
    pub fn stack_irq_handler_entry(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        if cpu_interesting(cpu) {
            stack_at(&ctx, stack::HARDIRQ, cpu, current_ids());
        }
        PASS
    }
}

program! {
    pub fn stack_softirq_entry(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        if cpu_interesting(cpu) {
            stack_at(&ctx, stack::SOFTIRQ, cpu, current_ids());
        }
        PASS
    }
}

/// The profile: a `cpu-clock` tick on a CPU where a traced vCPU runs or waits. The stack
/// is the interrupted context's; a tick in user space has none (`EFAULT`). Returns 0: the
/// perf event's own sample output is not wanted (nobody reads it).
#[perf_event]
pub fn stack_profile(ctx: PerfEventContext) -> u32 {
    let cpu = this_cpu();
    if cpu_interesting(cpu) {
        let (id, error) = stack_id(ctx.as_ptr());
        send(Kind::StackSample, [id, error, 0], cpu, current_ids());
    }
    0
}
