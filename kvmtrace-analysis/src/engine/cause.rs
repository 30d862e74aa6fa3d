//! What a stretch of a vCPU's time is attributed to.

use std::collections::HashMap;

use crate::names::{exit_reason_label, kvm_exit_name, softirq_name};

/// Which APIC vector handler ran on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApicVector {
    LocalTimer,
    Reschedule,
    CallFunction,
    CallFunctionSingle,
}

/// One cause. The attribution engine assigns every nanosecond of a vCPU's time, and of each
/// interrupt-to-guest window, to exactly one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// In the guest (after `kvm_entry`); inside a window: the guest ran on until an exit let
    /// the interrupt in.
    Guest,
    /// Inside KVM_RUN, guest or host kernel: this kernel emits no `kvm_entry`, so the two
    /// cannot be told apart.
    KvmRun,
    /// Handling a VM exit in the kernel (`kvm_exit` → `kvm_entry`), by reason.
    Exit {
        isa: u8,
        reason: u32,
    },
    /// In the userspace VMM after `kvm_userspace_exit`, by KVM_EXIT_* reason
    /// ([`Cause::VMM_ERROR`] when KVM_RUN failed).
    Vmm {
        reason: u32,
    },
    /// Runnable but another task had the CPU.
    Preempted {
        pid: u32,
    },
    /// Runnable but one of kvmtrace's own threads had the CPU: the tracer's observer
    /// effect, measured apart from `Preempted` (threads named by a tracer `thread_info`).
    Tracer,
    /// Woken, not yet running, with the CPU idle or its task unknown.
    Wakeup,
    /// Halted (blocked in KVM_RUN) and not yet woken: inside a window, the host's interrupt
    /// delivery path.
    Halted,
    /// Blocked outside a halt, with nothing known of why.
    Blocked,
    /// Asleep while handling a VM exit other than HLT: an EPT violation or NPF waiting for
    /// a page (swap-in, userfaultfd post-copy, reclaim, mmap_lock), a mutex in an exit
    /// handler (docs/kvm-source-notes.md 3.2).
    BlockedExit {
        isa: u8,
        reason: u32,
    },
    /// In the guest after an entry that did not deliver the pending interrupt, until an
    /// interrupt-window exit (VMX `INTERRUPT_WINDOW`, SVM `vintr`): the guest ran with
    /// interrupts disabled (x86.c `kvm_check_and_inject_events` → `enable_irq_window`).
    GuestIrqsOff,
    /// In the guest after an entry that did not deliver the pending interrupt, and no
    /// interrupt-window exit followed: the guest's priority (TPR/PPR, a higher vector in
    /// service) held it, or it was not injectable for another reason.
    GuestPending,
    /// A host hard interrupt handler on the vCPU's CPU.
    Hardirq {
        irq: u32,
    },
    /// A host softirq on the vCPU's CPU.
    Softirq {
        vec: u32,
    },
    /// A host APIC vector handler on the vCPU's CPU.
    Apic(ApicVector),
    /// Spinning on a contended lock in the vCPU thread.
    Lock,
    /// Nothing observed explains it (the state is not known yet).
    Other,
    /// Placeholders while the engine cannot yet tell a halt from a VMM wait (no
    /// `kvm_entry`); resolved at the thread's next KVM event, they never reach a report
    /// unless the stream ends first.
    UnresolvedBlocked,
    UnresolvedRunning,
    /// Placeholder for a woken vCPU waiting for its CPU: at the switch-in it becomes
    /// `Preempted` by the task that had the CPU, or `Wakeup` when the CPU was idle.
    UnresolvedWaiting,
    /// Placeholder for host time after the guest exited but before its `kvm_exit` was
    /// traced (6.1 SVM): the exit's reason when it comes.
    UnresolvedExit,
    /// Placeholder, per window, for guest time after an entry that delivered nothing:
    /// `GuestIrqsOff` or `GuestPending` when the window closes.
    GuestUndelivered,
}

impl Cause {
    /// `Vmm`'s reason when KVM_RUN returned an error other than -EINTR (its exit reason is
    /// then stale): the kernel's `kvm_userspace_exit` prints `reason error`.
    pub const VMM_ERROR: u32 = u32::MAX;

    /// Is this time spent outside the guest? (`KvmRun` is counted as in-guest: it cannot be
    /// split on kernels without `kvm_entry`.)
    pub fn out_of_guest(self) -> bool {
        !matches!(
            self,
            Cause::Guest
                | Cause::KvmRun
                | Cause::GuestIrqsOff
                | Cause::GuestPending
                | Cause::GuestUndelivered
        )
    }

    /// Is this a wait inside KVM_RUN for the guest's next event: a halt (or a halt not
    /// yet told apart from a VMM wait)?
    pub fn is_idle(self) -> bool {
        matches!(self, Cause::Halted)
    }

    /// A stable, human-readable key: `exit:HLT`, `vmm:IO`, `preempted:stress:4242`,
    /// `hardirq:24`, `softirq:NET_RX`, `apic:local_timer`, ...
    pub fn label(self, comms: &HashMap<u32, String>) -> String {
        match self {
            Cause::Guest => "guest".into(),
            Cause::KvmRun => "kvm_run".into(),
            Cause::Exit { isa, reason } => {
                format!(
                    "exit:{}",
                    exit_reason_label(u64::from(isa), u64::from(reason))
                )
            }
            Cause::Vmm {
                reason: Cause::VMM_ERROR,
            } => "vmm:error".into(),
            Cause::Vmm { reason } => match kvm_exit_name(u64::from(reason)) {
                Some(n) => format!("vmm:{n}"),
                None => format!("vmm:{reason}"),
            },
            Cause::Preempted { pid } => match comms.get(&pid) {
                Some(c) if !c.is_empty() => format!("preempted:{c}:{pid}"),
                _ => format!("preempted:pid:{pid}"),
            },
            Cause::Tracer => "tracer".into(),
            Cause::Wakeup => "wakeup".into(),
            Cause::Halted => "halted".into(),
            Cause::Blocked => "blocked".into(),
            Cause::BlockedExit { isa, reason } => format!(
                "blocked:exit:{}",
                exit_reason_label(u64::from(isa), u64::from(reason))
            ),
            Cause::GuestIrqsOff => "guest:irqs-off".into(),
            Cause::GuestPending => "guest:pending".into(),
            Cause::GuestUndelivered => "guest:undelivered".into(),
            Cause::UnresolvedExit => "exit:pending".into(),
            Cause::Hardirq { irq } => format!("hardirq:{irq}"),
            Cause::Softirq { vec } => match softirq_name(u64::from(vec)) {
                Some(n) => format!("softirq:{n}"),
                None => format!("softirq:{vec}"),
            },
            Cause::Apic(v) => match v {
                ApicVector::LocalTimer => "apic:local_timer",
                ApicVector::Reschedule => "apic:reschedule",
                ApicVector::CallFunction => "apic:call_function",
                ApicVector::CallFunctionSingle => "apic:call_function_single",
            }
            .into(),
            Cause::Lock => "lock".into(),
            Cause::Other => "other".into(),
            Cause::UnresolvedBlocked => "blocked:halt_or_vmm".into(),
            Cause::UnresolvedRunning => "running:halt_or_vmm".into(),
            Cause::UnresolvedWaiting => "wakeup".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let mut comms = HashMap::new();
        comms.insert(42, "stress".to_string());
        let l = |c: Cause| c.label(&comms);
        assert_eq!(l(Cause::Exit { isa: 1, reason: 12 }), "exit:HLT");
        assert_eq!(
            l(Cause::Exit {
                isa: 2,
                reason: 0x7b
            }),
            "exit:io"
        );
        assert_eq!(
            l(Cause::Exit {
                isa: 1,
                reason: 999
            }),
            "exit:0x3e7"
        );
        assert_eq!(l(Cause::Vmm { reason: 2 }), "vmm:IO");
        assert_eq!(l(Cause::Vmm { reason: 77 }), "vmm:77");
        assert_eq!(
            l(Cause::Vmm {
                reason: Cause::VMM_ERROR
            }),
            "vmm:error"
        );
        assert_eq!(l(Cause::Preempted { pid: 42 }), "preempted:stress:42");
        assert_eq!(l(Cause::Preempted { pid: 43 }), "preempted:pid:43");
        assert_eq!(l(Cause::Tracer), "tracer");
        assert_eq!(l(Cause::Softirq { vec: 3 }), "softirq:NET_RX");
        assert_eq!(l(Cause::Apic(ApicVector::LocalTimer)), "apic:local_timer");
        assert!(!Cause::Guest.out_of_guest());
        assert!(Cause::Hardirq { irq: 1 }.out_of_guest());
    }
}
