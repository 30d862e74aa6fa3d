//! Names the kernel prints for numeric fields, back to their numbers.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::engine::exit_reasons::{exit_reason_name, ISA_SVM, ISA_VMX};

/// Exit reason names of both tables: name -> (isa, code). The VMX names are upper case and
/// the SVM names lower case (or `XX excp`), so one map holds both without collisions.
fn exit_reasons() -> &'static HashMap<&'static str, (u64, u32)> {
    static TABLE: OnceLock<HashMap<&'static str, (u64, u32)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m = HashMap::new();
        // VMX basic reasons are below 0x100; SVM's go up to 0x403 and then the SEV-ES
        // vmgexit codes and -1.
        for code in 0..=0x500u32 {
            for isa in [ISA_VMX, ISA_SVM] {
                if let Some(name) = exit_reason_name(isa, u64::from(code)) {
                    m.entry(name).or_insert((isa, code));
                }
            }
        }
        let high = (0x8000_0000u32..=0x8000_0020).chain([0x8000_fffd, 0xffff_ffff]);
        for code in high {
            if let Some(name) = exit_reason_name(ISA_SVM, u64::from(code)) {
                m.entry(name).or_insert((ISA_SVM, code));
            }
        }
        m
    })
}

/// The code of exit reason `name` (as `kvm_exit` prints it) for `isa` (1 = VMX, 2 = SVM),
/// or None when that table has no such name.
pub fn exit_reason_code(isa: u64, name: &str) -> Option<u32> {
    match exit_reasons().get(name) {
        Some(&(i, code)) if i == isa => Some(code),
        _ => None,
    }
}

/// The isa and code of an exit reason name, whichever table has it.
pub(super) fn exit_reason_any(name: &str) -> Option<(u64, u32)> {
    exit_reasons().get(name).copied()
}

/// VMX exit reason flag names (`__print_flags` in `kvm_exit`'s format) and their bits.
pub(super) const VMX_EXIT_FLAGS: &[(&str, u32)] =
    &[("FAILED_VMENTRY", 0x8000_0000), ("ENCLAVE_MODE", 1 << 27)];

/// `KVM_EXIT_*` names (`kvm_userspace_exit`), by code, from `include/uapi/linux/kvm.h`.
const KVM_EXITS: &[&str] = &[
    "UNKNOWN",
    "EXCEPTION",
    "IO",
    "HYPERCALL",
    "DEBUG",
    "HLT",
    "MMIO",
    "IRQ_WINDOW_OPEN",
    "SHUTDOWN",
    "FAIL_ENTRY",
    "INTR",
    "SET_TPR",
    "TPR_ACCESS",
    "S390_SIEIC",
    "S390_RESET",
    "DCR",
    "NMI",
    "INTERNAL_ERROR",
    "OSI",
    "PAPR_HCALL",
    "S390_UCONTROL",
    "WATCHDOG",
    "S390_TSCH",
    "EPR",
    "SYSTEM_EVENT",
    "S390_STSI",
    "IOAPIC_EOI",
    "HYPERV",
    "ARM_NISV",
    "X86_RDMSR",
    "X86_WRMSR",
    "DIRTY_RING_FULL",
    "AP_RESET_HOLD",
    "X86_BUS_LOCK",
    "XEN",
    "RISCV_SBI",
    "RISCV_CSR",
    "NOTIFY",
    "LOONGARCH_IOCSR",
    "MEMORY_FAULT",
    "TDX",
];

/// The code of `KVM_EXIT_<name>` (`name` without the prefix).
pub(super) fn kvm_exit_code(name: &str) -> Option<u64> {
    KVM_EXITS.iter().position(|n| *n == name).map(|i| i as u64)
}

/// Softirq vector names (`softirq_entry`'s `action=`).
const SOFTIRQS: &[&str] = &[
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

pub(super) fn softirq_vec(name: &str) -> Option<u64> {
    SOFTIRQS.iter().position(|n| *n == name).map(|i| i as u64)
}

/// APIC delivery modes as KVM's irq tracepoints print them (`(dm >> 8) & 7`).
const DELIVERY_MODES: &[&str] = &[
    "Fixed", "LowPrio", "SMI", "Res3", "NMI", "INIT", "SIPI", "ExtINT",
];

pub(super) fn delivery_mode(name: &str) -> Option<u64> {
    DELIVERY_MODES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u64)
}

/// `kvm_pic_set_irq`'s chip as older kernels print it (newer print the number).
pub(super) fn irqchip(name: &str) -> Option<u64> {
    match name {
        "PIC master" => Some(0),
        "PIC slave" => Some(1),
        "IOAPIC" => Some(2),
        _ => None,
    }
}

/// `contention_begin` flag names (`LCB_F_*`).
pub(super) fn lock_flag(name: &str) -> Option<u64> {
    Some(match name {
        "SPIN" => 1,
        "READ" => 1 << 1,
        "WRITE" => 1 << 2,
        "RT" => 1 << 3,
        "PERCPU" => 1 << 4,
        "MUTEX" => 1 << 5,
        _ => return None,
    })
}

/// `mmio` access types of `kvm_mmio`.
pub(super) fn mmio_type(name: &str) -> Option<u64> {
    match name {
        "unsatisfied-read" => Some(0),
        "read" => Some(1),
        "write" => Some(2),
        _ => None,
    }
}

/// `sched_switch.prev_state` letters, as the kernel prints them (`prev_state=S|D`, with a
/// trailing `+` for a preempted task, `R` alone for running), or as libtraceevent's
/// sched_switch plugin does (`trace-cmd report`: `S`, `D`, ... with its own, older, bit
/// order). Only "runnable or not" matters downstream: any letter but `R` gives a non-zero
/// low byte. None for anything else.
pub(super) fn prev_state(text: &str, plugin: bool) -> Option<u64> {
    let (letters, preempted) = match text.strip_suffix('+') {
        Some(l) => (l, true),
        None => (text, false),
    };
    if letters.is_empty() {
        return None;
    }
    let mut state = 0u64;
    for part in letters.split('|') {
        let bit = match (part, plugin) {
            ("R", _) => 0,
            ("S", _) => 0x1,
            ("D", _) => 0x2,
            ("T", _) => 0x4,
            ("t", _) => 0x8,
            // Linux >= 4.14 (TASK_REPORT).
            ("X", false) => 0x10,
            ("Z", false) => 0x20,
            ("P", false) => 0x40,
            ("I", false) => 0x80,
            // libtraceevent's "SDTtZXxW".
            ("Z", true) => 0x10,
            ("X", true) => 0x20,
            ("x", true) => 0x40,
            ("W", true) => 0x80,
            // Older kernels' extra letters (x dead, K wakekill, W waking, P parked,
            // N noload): none of them is runnable.
            ("x" | "K" | "W" | "N" | "P" | "I", _) => 0x80,
            _ => return None,
        };
        state |= bit;
    }
    if preempted {
        // TASK_REPORT_MAX: preempted while runnable.
        state |= 0x100;
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_exit_reason_round_trips() {
        let mut n = 0;
        for isa in [ISA_VMX, ISA_SVM] {
            let codes = (0..=0x500u32)
                .chain(0x8000_0000..=0x8000_0020)
                .chain([0x8000_fffd, 0xffff_ffff]);
            for code in codes {
                // VMX names only for the basic reason (the high bits are flags).
                if isa == ISA_VMX && code > 0xffff {
                    continue;
                }
                if let Some(name) = exit_reason_name(isa, u64::from(code)) {
                    assert_eq!(exit_reason_code(isa, name), Some(code), "{name}");
                    let other = if isa == ISA_VMX { ISA_SVM } else { ISA_VMX };
                    assert_eq!(exit_reason_code(other, name), None, "{name} in both tables");
                    n += 1;
                }
            }
        }
        assert!(n > 150, "only {n} names");
        assert_eq!(exit_reason_code(ISA_VMX, "EXTERNAL_INTERRUPT"), Some(1));
        assert_eq!(exit_reason_code(ISA_VMX, "HLT"), Some(12));
        assert_eq!(exit_reason_code(ISA_SVM, "hlt"), Some(0x78));
        assert_eq!(exit_reason_code(ISA_SVM, "npf"), Some(0x400));
        assert_eq!(exit_reason_code(ISA_SVM, "DE excp"), Some(0x40));
        assert_eq!(
            exit_reason_code(ISA_SVM, "invalid_guest_state"),
            Some(0xffff_ffff)
        );
        assert_eq!(exit_reason_code(ISA_SVM, "HLT"), None);
        assert_eq!(exit_reason_code(7, "HLT"), None);
        assert_eq!(exit_reason_code(ISA_VMX, "NO_SUCH_REASON"), None);
    }

    #[test]
    fn small_tables() {
        assert_eq!(kvm_exit_code("IO"), Some(2));
        assert_eq!(kvm_exit_code("MMIO"), Some(6));
        assert_eq!(kvm_exit_code("X86_WRMSR"), Some(30));
        assert_eq!(kvm_exit_code("TDX"), Some(40));
        assert_eq!(softirq_vec("NET_RX"), Some(3));
        assert_eq!(softirq_vec("RCU"), Some(9));
        assert_eq!(delivery_mode("ExtINT"), Some(7));
        assert_eq!(prev_state("R", false), Some(0));
        assert_eq!(prev_state("R+", false), Some(0x100));
        assert_eq!(prev_state("S", false), Some(1));
        assert_eq!(prev_state("D|K", false), Some(0x82));
        assert_eq!(prev_state("W", true), Some(0x80));
        assert_eq!(prev_state("", false), None);
        assert_eq!(prev_state("+", false), None);
        assert_eq!(prev_state("Q", false), None);
    }
}
