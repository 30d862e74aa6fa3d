//! Host interrupt work on a traced vCPU's CPU: irq:*, irq_vectors:*, timer:hrtimer_*.
//! A classic program per tracepoint and a BTF one (the arguments are the fields).

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{ev, Event, Kind};

use crate::{
    btf::{arg, arg_i32, arg_ptr, arg_u32, hrtimer_expires, hrtimer_function, read_kernel},
    filter::{apic_timer_fn, cpu_interesting, is_vcpu},
    record::{current_ids, emit, read_event, this_cpu, typed_event},
    PASS,
};

/// Emits the event `make(cpu)` builds only when a traced vCPU runs or waits on this CPU.
#[inline(always)]
pub fn on_vcpu_cpu(make: impl FnOnce(u32) -> Event) -> u32 {
    let cpu = this_cpu();
    if cpu_interesting(cpu) {
        emit(&make(cpu));
    }
    PASS
}

macro_rules! cpu_programs {
    ($($name:ident => $kind:ident),* $(,)?) => {$(
        program! {
            pub fn $name(ctx: TracePointContext) -> u32 {
                on_vcpu_cpu(|cpu| read_event(&ctx, Kind::$kind, cpu))
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

/// A guest's LAPIC timer is a host hrtimer (`apic_timer_fn`): keep its expiry wherever it
/// fires, and any other hrtimer only on a traced vCPU's CPU.
#[inline(always)]
fn hrtimer_expiry_wanted(cpu: u32, function: u64) -> bool {
    cpu_interesting(cpu) || is_lapic_timer(function)
}

#[inline(always)]
fn is_lapic_timer(function: u64) -> bool {
    let lapic = apic_timer_fn();
    lapic != 0 && function == lapic
}

/// A guest arming its LAPIC timer: an hrtimer with KVM's `apic_timer_fn` started from a
/// traced vCPU thread. Which hrtimer that is maps the timer's expiry, wherever it fires, to
/// the vCPU (docs/kvm-source-notes.md 1.10). Every other hrtimer_start is dropped after the
/// one lookup.
#[inline(always)]
fn hrtimer_start_wanted(function: u64) -> bool {
    let lapic = apic_timer_fn();
    lapic == 0 || function == lapic
}

program! {
    pub fn hrtimer_expire_entry(ctx: TracePointContext) -> u32 {
        let cpu = this_cpu();
        let e = read_event(&ctx, Kind::HrtimerExpireEntry, cpu);
        let function = e.get::<ev::HrtimerExpireEntry>().map_or(0, |h| h.function);
        if hrtimer_expiry_wanted(cpu, function) {
            emit(&e);
        }
        PASS
    }
}

program! {
    pub fn hrtimer_start(ctx: TracePointContext) -> u32 {
        let (tid, _) = current_ids();
        if !is_vcpu(tid) {
            return PASS;
        }
        let e = read_event(&ctx, Kind::HrtimerStart, this_cpu());
        let function = e.get::<ev::HrtimerStart>().map_or(0, |h| h.function);
        if hrtimer_start_wanted(function) {
            emit(&e);
        }
        PASS
    }
}

// BTF programs (include/trace/events/irq.h, irq_vectors.h, timer.h).

macro_rules! btf_cpu_programs {
    ($($name:ident => $kind:ident { $($field:ident: $get:ident($n:literal)),* }),* $(,)?) => {$(
        btf_program! {
            pub fn $name(ctx: BtfTracePointContext) -> u32 {
                on_vcpu_cpu(|cpu| {
                    let rec = ev::$kind { $($field: $get(&ctx, $n)),* };
                    typed_event(cpu, current_ids(), &rec)
                })
            }
        }
    )*};
}

btf_cpu_programs! {
    // (int irq, struct irqaction *action)
    irq_handler_entry_btf => IrqHandlerEntry { irq: arg_i32(0) },
    // (int irq, struct irqaction *action, int ret)
    irq_handler_exit_btf => IrqHandlerExit { irq: arg_i32(0), ret: arg_i32(2) },
    // (unsigned int vec_nr)
    softirq_entry_btf => SoftirqEntry { vec: arg_u32(0) },
    softirq_exit_btf => SoftirqExit { vec: arg_u32(0) },
    // (int vector)
    local_timer_entry_btf => LocalTimerEntry { vector: arg_i32(0) },
    local_timer_exit_btf => LocalTimerExit { vector: arg_i32(0) },
    reschedule_entry_btf => RescheduleEntry { vector: arg_i32(0) },
    reschedule_exit_btf => RescheduleExit { vector: arg_i32(0) },
    call_function_entry_btf => CallFunctionEntry { vector: arg_i32(0) },
    call_function_exit_btf => CallFunctionExit { vector: arg_i32(0) },
    call_function_single_entry_btf => CallFunctionSingleEntry { vector: arg_i32(0) },
    call_function_single_exit_btf => CallFunctionSingleExit { vector: arg_i32(0) },
    // (struct hrtimer *hrtimer)
    hrtimer_expire_exit_btf => HrtimerExpireExit { hrtimer: arg(0) },
}

btf_program! {
    // (struct hrtimer *hrtimer, ktime_t *now)
    pub fn hrtimer_expire_entry_btf(ctx: BtfTracePointContext) -> u32 {
        let cpu = this_cpu();
        let timer = arg_ptr(&ctx, 0);
        let function = hrtimer_function(timer);
        if hrtimer_expiry_wanted(cpu, function) {
            let rec = ev::HrtimerExpireEntry {
                hrtimer: timer as u64,
                function,
                now: read_kernel::<i64>(arg(&ctx, 1)).map(|n| n as u64),
            };
            emit(&typed_event(cpu, current_ids(), &rec));
        }
        PASS
    }
}

btf_program! {
    // (struct hrtimer *hrtimer, enum hrtimer_mode mode, bool was_armed)
    pub fn hrtimer_start_btf(ctx: BtfTracePointContext) -> u32 {
        let ids = current_ids();
        if !is_vcpu(ids.0) {
            return PASS;
        }
        let timer = arg_ptr(&ctx, 0);
        let function = hrtimer_function(timer);
        if hrtimer_start_wanted(function) {
            let rec = ev::HrtimerStart {
                hrtimer: timer as u64,
                function,
                expires: hrtimer_expires(timer),
                mode: Some(arg_u32(&ctx, 1)),
            };
            emit(&typed_event(this_cpu(), ids, &rec));
        }
        PASS
    }
}
