//! kvm:* tracepoints: a classic program for each, and a BTF one for those whose arguments
//! carry their fields (the loader picks the BTF one when KVM's tracepoints are in the
//! kernel's BTF, i.e. KVM is built in; a module's tracepoints attach classic).
//!
//! `kvm_exit` and `kvm_entry` are in `exits.rs` (aggregated in the kernel). They,
//! `kvm_page_fault` and `kvm_eoi` have no BTF program: their fields are computed by vendor
//! code at the tracepoint (`get_exit_info`, `kvm_rip_read`, the LAPIC's vCPU), which a
//! program cannot call.

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{ev, Event, Kind};

use crate::{
    btf::{arg, arg_i32, arg_u16, arg_u32, arg_u8, read_kernel},
    exits::{arm_raise, arm_target, arm_thread},
    filter::{cpu_interesting, is_vm, register_vcpu, vcpu_thread, vm_selected},
    record::{current_ids, emit, read_event_of, this_cpu, typed_event},
    PASS,
};

/// Whom an event arms for exit streaming (`exits.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arm {
    No,
    /// The vCPU thread itself (it is being woken or given an interrupt).
    Thread,
}

/// An event that fires in a vCPU thread: it also identifies that thread as a vCPU.
/// `make(cpu, (tid, tgid))` builds the record once the event is known to be wanted.
#[inline(always)]
fn vcpu_event(arm: Arm, make: impl FnOnce(u32, (u32, u32)) -> Event) -> u32 {
    let (tid, tgid) = current_ids();
    // A known vCPU was selected when it was registered: one lookup in the common case.
    let mut t = vcpu_thread(tid);
    if t.is_none() {
        if !vm_selected(tgid) {
            return PASS;
        }
        register_vcpu(tid, tgid);
        if arm == Arm::Thread {
            t = vcpu_thread(tid);
        }
    }
    let e = make(this_cpu(), (tid, tgid));
    match arm {
        Arm::Thread => {
            if let Some(t) = t {
                arm_thread(t, e.ts_ns);
            }
        }
        Arm::No => {}
    }
    emit(&e);
    PASS
}

/// How an interrupt event arms exit streaming (`exits.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Raise {
    /// Nothing: the accept that follows names the target.
    No,
    /// Its VM's vCPUs: a PIC raise names no target (and no accept follows).
    Vm,
    /// The vCPU in slot 0 of the record (`apicid`: the target's vCPU id).
    Target,
}

/// An interrupt being raised or accepted: it may fire in any thread (a VMM I/O thread, a
/// vhost worker, a timer callback on another vCPU's CPU).
#[inline(always)]
fn irq_event(raise: Raise, make: impl FnOnce(u32, (u32, u32)) -> Event) -> u32 {
    let ids = current_ids();
    let cpu = this_cpu();
    // The VM the raiser works for: its own process, or the one a kernel thread is named
    // after; 0 when neither (a plain integer: an Option's unset payload spilled to the
    // stack is an uninitialised read to older verifiers, 6.1's among them).
    let owner: u32 = if is_vm(ids.1) { ids.1 } else { kthread_owner() };
    let selected = vm_selected(ids.1) || (owner != 0 && vm_selected(owner));
    if !selected && !cpu_interesting(cpu) {
        return PASS;
    }
    let e = make(cpu, ids);
    // The raiser's VM, or its own process when it names none.
    let vm = if owner != 0 { owner } else { ids.1 };
    match raise {
        Raise::No => {}
        Raise::Vm => arm_raise(vm, owner != 0 && is_vm(vm), e.ts_ns),
        Raise::Target => arm_target(vm, e.slots[0] as u32, e.ts_ns),
    }
    emit(&e);
    PASS
}

/// The VMM a kernel thread that raises interrupts for it is named after: the in-kernel PIT's
/// `kvm-pit/PID` (arch/x86/kvm/i8254.c:681-684, 6.12: `pid_vnr`, the pid as the VMM's own
/// pid namespace sees it), or a vhost worker `vhost-PID` when it is a kernel thread (before
/// Linux 6.4, or with vhost's fork_from_owner off; PID is the task that called
/// VHOST_SET_OWNER, drivers/vhost/vhost.c:850). Their tgid is their own, so only the name ties
/// their raises to the VM; they run on whatever CPU, often one no traced vCPU uses. One
/// helper call, for raises from outside a known VMM only. 0 when the name says nothing.
#[inline(always)]
fn kthread_owner() -> u32 {
    let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm() else {
        return 0;
    };
    let digits = if comm.starts_with(b"kvm-pit/") {
        8
    } else if comm.starts_with(b"vhost-") {
        6
    } else {
        return 0;
    };
    let mut pid: u32 = 0;
    for &c in &comm[digits..] {
        if !c.is_ascii_digit() {
            break;
        }
        pid = pid.wrapping_mul(10).wrapping_add(u32::from(c - b'0'));
    }
    pid
}

macro_rules! vcpu_programs {
    ($($name:ident => $kind:ident $(, $arm:ident)?);* $(;)?) => {$(
        program! {
            pub fn $name(ctx: TracePointContext) -> u32 {
                vcpu_event(
                    arm!($($arm)?),
                    |cpu, ids| read_event_of(&ctx, Kind::$kind, cpu, ids),
                )
            }
        }
    )*};
}

macro_rules! arm {
    () => {
        Arm::No
    };
    ($arm:ident) => {
        Arm::$arm
    };
}

macro_rules! irq_programs {
    ($($name:ident => $kind:ident, $raise:ident);* $(;)?) => {$(
        program! {
            pub fn $name(ctx: TracePointContext) -> u32 {
                irq_event(Raise::$raise, |cpu, ids| read_event_of(&ctx, Kind::$kind, cpu, ids))
            }
        }
    )*};
}

// kvm_exit and kvm_entry are in exits.rs (aggregated in the kernel).
vcpu_programs! {
    kvm_userspace_exit => KvmUserspaceExit;
    kvm_inj_virq => KvmInjVirq, Thread;
    kvm_vcpu_wakeup => KvmVcpuWakeup, Thread;
    kvm_pio => KvmPio;
    kvm_mmio => KvmMmio;
    kvm_msr => KvmMsr;
    kvm_apic_ipi => KvmApicIpi;
    kvm_wait_lapic_expire => KvmWaitLapicExpire;
    kvm_page_fault => KvmPageFault;
    kvm_eoi => KvmEoi;
}

irq_programs! {
    kvm_apic_accept_irq => KvmApicAcceptIrq, Target;
    kvm_set_irq => KvmSetIrq, No;
    kvm_msi_set_irq => KvmMsiSetIrq, No;
    kvm_pic_set_irq => KvmPicSetIrq, Vm;
    kvm_ioapic_set_irq => KvmIoapicSetIrq, No;
    kvm_apicv_accept_irq => KvmApicvAcceptIrq, Target;
}

// BTF programs: the arguments in the order of each tracepoint's TP_PROTO
// (arch/x86/kvm/trace.h, include/trace/events/kvm.h), assigned as its TP_fast_assign does.

btf_program! {
    // (u32 reason, int errno)
    pub fn kvm_userspace_exit_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::No, |cpu, ids| {
            let rec = ev::KvmUserspaceExit {
                reason: Some(arg_u32(&ctx, 0)),
                errno: Some(arg_i32(&ctx, 1)),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (unsigned int rw, unsigned int port, unsigned int size, unsigned int count,
    //  const void *data): `val` is the first element behind `data`, `size` bytes wide.
    pub fn kvm_pio_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::No, |cpu, ids| {
            let size = arg_u32(&ctx, 2);
            let val = read_kernel::<u32>(arg(&ctx, 4)).map(|v| match size {
                1 => v as u8 as u64,
                2 => v as u16 as u64,
                _ => v as u64,
            });
            let rec = ev::KvmPio {
                rw: arg_u32(&ctx, 0),
                port: arg_u32(&ctx, 1),
                size,
                val,
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (int type, int len, u64 gpa, void *val), stored as u32 type and len; `val` holds
    // min(len, 8) bytes, 0 when null.
    pub fn kvm_mmio_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::No, |cpu, ids| {
            let len = arg_u32(&ctx, 1);
            let p = arg(&ctx, 3);
            let val = if p == 0 {
                Some(0)
            } else {
                read_kernel::<u64>(p).map(|v| match len {
                    1 => v as u8 as u64,
                    2 => v as u16 as u64,
                    3 => v & 0xff_ffff,
                    4 => v as u32 as u64,
                    5 => v & 0xff_ffff_ffff,
                    6 => v & 0xffff_ffff_ffff,
                    7 => v & 0xff_ffff_ffff_ffff,
                    _ => v,
                })
            };
            let rec = ev::KvmMmio {
                mmio_type: arg_u32(&ctx, 0),
                len,
                gpa: arg(&ctx, 2),
                val,
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (unsigned int write, u32 ecx, u64 data, bool exception)
    pub fn kvm_msr_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::No, |cpu, ids| {
            let rec = ev::KvmMsr {
                write: arg_u32(&ctx, 0),
                ecx: arg_u32(&ctx, 1),
                data: arg(&ctx, 2),
                exception: arg_u8(&ctx, 3),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (unsigned int vector, bool soft, bool reinjected)
    pub fn kvm_inj_virq_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::Thread, |cpu, ids| {
            let rec = ev::KvmInjVirq {
                vector: arg_u32(&ctx, 0),
                soft: Some(arg_u8(&ctx, 1)),
                reinjected: Some(arg_u8(&ctx, 2)),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u64 ns, bool waited, bool valid)
    pub fn kvm_vcpu_wakeup_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::Thread, |cpu, ids| {
            let rec = ev::KvmVcpuWakeup {
                ns: arg(&ctx, 0),
                waited: arg_u8(&ctx, 1),
                valid: Some(arg_u8(&ctx, 2)),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u32 icr_low, u32 dest_id)
    pub fn kvm_apic_ipi_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::No, |cpu, ids| {
            let rec = ev::KvmApicIpi {
                icr_low: arg_u32(&ctx, 0),
                dest_id: arg_u32(&ctx, 1),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (unsigned int vcpu_id, s64 delta)
    pub fn kvm_wait_lapic_expire_btf(ctx: BtfTracePointContext) -> u32 {
        vcpu_event(Arm::No, |cpu, ids| {
            let rec = ev::KvmWaitLapicExpire {
                vcpu_id: arg_u32(&ctx, 0),
                delta: arg(&ctx, 1),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u32 apicid, u16 dm, u16 tm, u8 vec)
    pub fn kvm_apic_accept_irq_btf(ctx: BtfTracePointContext) -> u32 {
        irq_event(Raise::Target, |cpu, ids| {
            let rec = ev::KvmApicAcceptIrq {
                apicid: arg_u32(&ctx, 0),
                vec: arg_u8(&ctx, 3),
                dm: Some(arg_u16(&ctx, 1)),
                tm: Some(arg_u16(&ctx, 2)),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u32 apicid, u16 dm, u16 tm, u8 vec)
    pub fn kvm_apicv_accept_irq_btf(ctx: BtfTracePointContext) -> u32 {
        irq_event(Raise::Target, |cpu, ids| {
            let rec = ev::KvmApicvAcceptIrq {
                apicid: arg_u32(&ctx, 0),
                vec: arg_u8(&ctx, 3),
                dm: Some(arg_u16(&ctx, 1)),
                tm: Some(arg_u16(&ctx, 2)),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (unsigned int gsi, int level, int irq_source_id)
    pub fn kvm_set_irq_btf(ctx: BtfTracePointContext) -> u32 {
        irq_event(Raise::No, |cpu, ids| {
            let rec = ev::KvmSetIrq {
                gsi: arg_u32(&ctx, 0),
                level: arg_i32(&ctx, 1),
                irq_source_id: Some(arg_i32(&ctx, 2)),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u64 address, u64 data)
    pub fn kvm_msi_set_irq_btf(ctx: BtfTracePointContext) -> u32 {
        irq_event(Raise::No, |cpu, ids| {
            let rec = ev::KvmMsiSetIrq {
                address: arg(&ctx, 0),
                data: arg(&ctx, 1),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u8 chip, u8 pin, u8 elcr, u8 imr, bool coalesced)
    pub fn kvm_pic_set_irq_btf(ctx: BtfTracePointContext) -> u32 {
        irq_event(Raise::Vm, |cpu, ids| {
            let rec = ev::KvmPicSetIrq {
                chip: arg_u8(&ctx, 0),
                pin: arg_u8(&ctx, 1),
                imr: arg_u8(&ctx, 3),
                coalesced: arg_u8(&ctx, 4),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}

btf_program! {
    // (u64 e, int pin, bool coalesced)
    pub fn kvm_ioapic_set_irq_btf(ctx: BtfTracePointContext) -> u32 {
        irq_event(Raise::No, |cpu, ids| {
            let rec = ev::KvmIoapicSetIrq {
                e: arg(&ctx, 0),
                pin: arg_i32(&ctx, 1),
                coalesced: arg_u8(&ctx, 2),
            };
            typed_event(cpu, ids, &rec)
        })
    }
}
