//! lock:contention_* in traced vCPU threads.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::Kind;

use crate::{
    filter::{cpu_interesting, is_vcpu},
    record::{current_ids, emit, read_event, this_cpu},
    PASS,
};

/// Contention in a vCPU thread itself (the cheap per-CPU test first, then the thread).
#[inline(always)]
fn in_vcpu_thread(ctx: &TracePointContext, kind: Kind) -> u32 {
    let cpu = this_cpu();
    if cpu_interesting(cpu) && is_vcpu(current_ids().0) {
        emit(&read_event(ctx, kind, cpu));
    }
    PASS
}

program! {
    pub fn contention_begin(ctx: TracePointContext) -> u32 {
        in_vcpu_thread(&ctx, Kind::ContentionBegin)
    }
}

program! {
    pub fn contention_end(ctx: TracePointContext) -> u32 {
        in_vcpu_thread(&ctx, Kind::ContentionEnd)
    }
}
