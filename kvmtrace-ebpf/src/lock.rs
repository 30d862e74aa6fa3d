//! lock:contention_* in traced vCPU threads.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use kvmtrace_common::Kind;

use crate::irq::on_vcpu_cpu;

#[tracepoint]
pub fn contention_begin(ctx: TracePointContext) -> u32 {
    on_vcpu_cpu(&ctx, Kind::ContentionBegin)
}

#[tracepoint]
pub fn contention_end(ctx: TracePointContext) -> u32 {
    on_vcpu_cpu(&ctx, Kind::ContentionEnd)
}
