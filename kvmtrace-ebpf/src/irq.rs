//! Host interrupt work on a traced vCPU's CPU: irq:*, irq_vectors:*, timer:hrtimer_*.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{ev, Kind};

use crate::{
    filter::{apic_timer_fn, cpu_interesting, is_vcpu},
    record::{current_ids, emit, read_event, this_cpu},
    PASS,
};

/// Emits `kind` only when a traced vCPU runs or waits on this CPU.
#[inline(always)]
pub fn on_vcpu_cpu(ctx: &TracePointContext, kind: Kind) -> u32 {
    let cpu = this_cpu();
    if cpu_interesting(cpu) {
        emit(&read_event(ctx, kind, cpu));
    }
    PASS
}

macro_rules! cpu_programs {
    ($($name:ident => $kind:ident),* $(,)?) => {$(
        program! {
            pub fn $name(ctx: TracePointContext) -> u32 {
                on_vcpu_cpu(&ctx, Kind::$kind)
            }
        }
    )*};
}

cpu_programs! {
    irq_handler_entry => IrqHandlerEntry,
    irq_handler_exit => IrqHandlerExit,
    softirq_entry => SoftirqEntry,
    softirq_exit => SoftirqExit,
    local_timer_entry => LocalTimerEntry,
    local_timer_exit => LocalTimerExit,
    reschedule_entry => RescheduleEntry,
    reschedule_exit => RescheduleExit,
    call_function_entry => CallFunctionEntry,
    call_function_exit => CallFunctionExit,
    call_function_single_entry => CallFunctionSingleEntry,
    call_function_single_exit => CallFunctionSingleExit,
    hrtimer_expire_exit => HrtimerExpireExit,
}

// A guest's LAPIC timer is a host hrtimer (`apic_timer_fn`): keep its expiry wherever it
// fires, and any other hrtimer only on a traced vCPU's CPU.
program! {
    pub fn hrtimer_expire_entry(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        let e = read_event(&ctx, Kind::HrtimerExpireEntry, cpu);
        let lapic = apic_timer_fn();
        let function = e.get::<ev::HrtimerExpireEntry>().map_or(0, |h| h.function);
        if cpu_interesting(cpu) || (lapic != 0 && function == lapic) {
            emit(&e);
        }
        PASS
    }
}

// A guest arming its LAPIC timer: an hrtimer with KVM's `apic_timer_fn` started from a
// traced vCPU thread. Which hrtimer that is maps the timer's expiry, wherever it fires, to the
// vCPU (docs/kvm-source-notes.md 1.10). Every other hrtimer_start is dropped after the one
// lookup.
program! {
    pub fn hrtimer_start(ctx: TracePointContext) -> u32 {
        let (tid, _) = current_ids();
        if !is_vcpu(tid) {
            return PASS;
        }
        let e = read_event(&ctx, Kind::HrtimerStart, this_cpu());
        let lapic = apic_timer_fn();
        let function = e.get::<ev::HrtimerStart>().map_or(0, |h| h.function);
        if lapic == 0 || function == lapic {
            emit(&e);
        }
        PASS
    }
}
