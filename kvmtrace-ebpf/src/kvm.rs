//! kvm:* tracepoints.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::Kind;

use crate::{
    filter::{cpu_interesting, is_vcpu, register_vcpu, vm_selected},
    record::{current_ids, emit, read_event, read_event_of, this_cpu},
    PASS,
};

/// An event that fires in a vCPU thread: it also identifies that thread as a vCPU.
#[inline(always)]
fn vcpu_event(ctx: &TracePointContext, kind: Kind) -> u32 {
    let (tid, tgid) = current_ids();
    // A known vCPU was selected when it was registered: one lookup in the common case.
    if !is_vcpu(tid) {
        if !vm_selected(tgid) {
            return PASS;
        }
        register_vcpu(tid, tgid);
    }
    emit(&read_event_of(ctx, kind, this_cpu(), (tid, tgid)));
    PASS
}

/// An interrupt being raised or accepted: it may fire in any thread (a VMM I/O thread, a
/// vhost worker, a timer callback on another vCPU's CPU).
#[inline(always)]
fn irq_event(ctx: &TracePointContext, kind: Kind) -> u32 {
    let (_, tgid) = current_ids();
    let cpu = this_cpu();
    if !vm_selected(tgid) && !cpu_interesting(cpu) {
        return PASS;
    }
    emit(&read_event(ctx, kind, cpu));
    PASS
}

macro_rules! vcpu_programs {
    ($($name:ident => $kind:ident),* $(,)?) => {$(
        program! {
            pub fn $name(ctx: TracePointContext) -> u32 {
                vcpu_event(&ctx, Kind::$kind)
            }
        }
    )*};
}

macro_rules! irq_programs {
    ($($name:ident => $kind:ident),* $(,)?) => {$(
        program! {
            pub fn $name(ctx: TracePointContext) -> u32 {
                irq_event(&ctx, Kind::$kind)
            }
        }
    )*};
}

vcpu_programs! {
    kvm_exit => KvmExit,
    kvm_entry => KvmEntry,
    kvm_userspace_exit => KvmUserspaceExit,
    kvm_inj_virq => KvmInjVirq,
    kvm_vcpu_wakeup => KvmVcpuWakeup,
    kvm_pio => KvmPio,
    kvm_mmio => KvmMmio,
    kvm_msr => KvmMsr,
    kvm_apic_ipi => KvmApicIpi,
    kvm_wait_lapic_expire => KvmWaitLapicExpire,
    kvm_page_fault => KvmPageFault,
    kvm_eoi => KvmEoi,
}

irq_programs! {
    kvm_apic_accept_irq => KvmApicAcceptIrq,
    kvm_set_irq => KvmSetIrq,
    kvm_msi_set_irq => KvmMsiSetIrq,
    kvm_pic_set_irq => KvmPicSetIrq,
    kvm_ioapic_set_irq => KvmIoapicSetIrq,
    kvm_apicv_accept_irq => KvmApicvAcceptIrq,
}
