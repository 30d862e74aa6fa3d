//! lock:contention_* in traced vCPU threads (a classic and a BTF program each).

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{ev, Event, Kind};

use crate::{
    btf::{arg, arg_i32, arg_u32},
    filter::{cpu_interesting, is_vcpu},
    record::{current_ids, emit, read_event_of, this_cpu, typed_event},
    PASS,
};

/// Contention in a vCPU thread itself (the cheap per-CPU test first, then the thread).
#[inline(always)]
fn in_vcpu_thread(make: impl FnOnce(u32, (u32, u32)) -> Event) -> u32 {
    let cpu = this_cpu();
    if cpu_interesting(cpu) {
        let ids = current_ids();
        if is_vcpu(ids.0) {
            emit(&make(cpu, ids));
        }
    }
    PASS
}

program! {
    pub fn contention_begin(ctx: TracePointContext) -> u32 {
        in_vcpu_thread(|cpu, ids| read_event_of(&ctx, Kind::ContentionBegin, cpu, ids))
    }
}

program! {
    pub fn contention_end(ctx: TracePointContext) -> u32 {
        in_vcpu_thread(|cpu, ids| read_event_of(&ctx, Kind::ContentionEnd, cpu, ids))
    }
}

btf_program! {
    // (void *lock, unsigned int flags)
    pub fn contention_begin_btf(ctx: BtfTracePointContext) -> u32 {
        in_vcpu_thread(|cpu, ids| {
            let rec = ev::ContentionBegin {
                lock_addr: arg(&ctx, 0),
                flags: arg_u32(&ctx, 1),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (void *lock, int ret)
    pub fn contention_end_btf(ctx: BtfTracePointContext) -> u32 {
        in_vcpu_thread(|cpu, ids| {
            let rec = ev::ContentionEnd {
                lock_addr: arg(&ctx, 0),
                ret: arg_i32(&ctx, 1),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}
