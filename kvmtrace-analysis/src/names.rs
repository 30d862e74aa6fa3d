//! The kernel's name tables, in one place: VM exit reasons (VMX and SVM, chosen by
//! `kvm_exit`'s `isa` field, as the kernel prints them: copied from the `kvm_exit` format file
//! of Linux 6.18), `KVM_EXIT_*` userspace exit reasons and softirq vectors. Unknown codes are
//! shown as numbers by the callers.

use std::collections::HashMap;
use std::sync::OnceLock;

/// `kvm_exit.isa` for Intel VMX.
pub const ISA_VMX: u64 = 1;
/// `kvm_exit.isa` for AMD SVM.
pub const ISA_SVM: u64 = 2;

const VMX: &[(u32, &str)] = &[
    (0, "EXCEPTION_NMI"),
    (1, "EXTERNAL_INTERRUPT"),
    (2, "TRIPLE_FAULT"),
    (3, "INIT_SIGNAL"),
    (4, "SIPI_SIGNAL"),
    (7, "INTERRUPT_WINDOW"),
    (8, "NMI_WINDOW"),
    (9, "TASK_SWITCH"),
    (10, "CPUID"),
    (12, "HLT"),
    (13, "INVD"),
    (14, "INVLPG"),
    (15, "RDPMC"),
    (16, "RDTSC"),
    (18, "VMCALL"),
    (19, "VMCLEAR"),
    (20, "VMLAUNCH"),
    (21, "VMPTRLD"),
    (22, "VMPTRST"),
    (23, "VMREAD"),
    (24, "VMRESUME"),
    (25, "VMWRITE"),
    (26, "VMOFF"),
    (27, "VMON"),
    (28, "CR_ACCESS"),
    (29, "DR_ACCESS"),
    (30, "IO_INSTRUCTION"),
    (31, "MSR_READ"),
    (32, "MSR_WRITE"),
    (33, "INVALID_STATE"),
    (34, "MSR_LOAD_FAIL"),
    (36, "MWAIT_INSTRUCTION"),
    (37, "MONITOR_TRAP_FLAG"),
    (39, "MONITOR_INSTRUCTION"),
    (40, "PAUSE_INSTRUCTION"),
    (41, "MCE_DURING_VMENTRY"),
    (43, "TPR_BELOW_THRESHOLD"),
    (44, "APIC_ACCESS"),
    (45, "EOI_INDUCED"),
    (46, "GDTR_IDTR"),
    (47, "LDTR_TR"),
    (48, "EPT_VIOLATION"),
    (49, "EPT_MISCONFIG"),
    (50, "INVEPT"),
    (51, "RDTSCP"),
    (52, "PREEMPTION_TIMER"),
    (53, "INVVPID"),
    (54, "WBINVD"),
    (55, "XSETBV"),
    (56, "APIC_WRITE"),
    (57, "RDRAND"),
    (58, "INVPCID"),
    (59, "VMFUNC"),
    (60, "ENCLS"),
    (61, "RDSEED"),
    (62, "PML_FULL"),
    (63, "XSAVES"),
    (64, "XRSTORS"),
    (67, "UMWAIT"),
    (68, "TPAUSE"),
    (74, "BUS_LOCK"),
    (75, "NOTIFY"),
    (77, "TDCALL"),
    (84, "MSR_READ_IMM"),
    (85, "MSR_WRITE_IMM"),
];

const SVM: &[(u32, &str)] = &[
    (0x0, "read_cr0"),
    (0x2, "read_cr2"),
    (0x3, "read_cr3"),
    (0x4, "read_cr4"),
    (0x8, "read_cr8"),
    (0x10, "write_cr0"),
    (0x12, "write_cr2"),
    (0x13, "write_cr3"),
    (0x14, "write_cr4"),
    (0x18, "write_cr8"),
    (0x20, "read_dr0"),
    (0x21, "read_dr1"),
    (0x22, "read_dr2"),
    (0x23, "read_dr3"),
    (0x24, "read_dr4"),
    (0x25, "read_dr5"),
    (0x26, "read_dr6"),
    (0x27, "read_dr7"),
    (0x30, "write_dr0"),
    (0x31, "write_dr1"),
    (0x32, "write_dr2"),
    (0x33, "write_dr3"),
    (0x34, "write_dr4"),
    (0x35, "write_dr5"),
    (0x36, "write_dr6"),
    (0x37, "write_dr7"),
    (0x40, "DE excp"),
    (0x41, "DB excp"),
    (0x43, "BP excp"),
    (0x44, "OF excp"),
    (0x45, "BR excp"),
    (0x46, "UD excp"),
    (0x47, "NM excp"),
    (0x48, "DF excp"),
    (0x4a, "TS excp"),
    (0x4b, "NP excp"),
    (0x4c, "SS excp"),
    (0x4d, "GP excp"),
    (0x4e, "PF excp"),
    (0x50, "MF excp"),
    (0x51, "AC excp"),
    (0x52, "MC excp"),
    (0x53, "XF excp"),
    (0x60, "interrupt"),
    (0x61, "nmi"),
    (0x62, "smi"),
    (0x63, "init"),
    (0x64, "vintr"),
    (0x65, "cr0_sel_write"),
    (0x66, "read_idtr"),
    (0x67, "read_gdtr"),
    (0x68, "read_ldtr"),
    (0x69, "read_rt"),
    (0x6a, "write_idtr"),
    (0x6b, "write_gdtr"),
    (0x6c, "write_ldtr"),
    (0x6d, "write_rt"),
    (0x6e, "rdtsc"),
    (0x6f, "rdpmc"),
    (0x70, "pushf"),
    (0x71, "popf"),
    (0x72, "cpuid"),
    (0x73, "rsm"),
    (0x74, "iret"),
    (0x75, "swint"),
    (0x76, "invd"),
    (0x77, "pause"),
    (0x78, "hlt"),
    (0x79, "invlpg"),
    (0x7a, "invlpga"),
    (0x7b, "io"),
    (0x7c, "msr"),
    (0x7d, "task_switch"),
    (0x7e, "ferr_freeze"),
    (0x7f, "shutdown"),
    (0x80, "vmrun"),
    (0x81, "hypercall"),
    (0x82, "vmload"),
    (0x83, "vmsave"),
    (0x84, "stgi"),
    (0x85, "clgi"),
    (0x86, "skinit"),
    (0x87, "rdtscp"),
    (0x88, "icebp"),
    (0x89, "wbinvd"),
    (0x8a, "monitor"),
    (0x8b, "mwait"),
    (0x8d, "xsetbv"),
    (0x8f, "write_efer_trap"),
    (0x90, "write_cr0_trap"),
    (0x94, "write_cr4_trap"),
    (0x98, "write_cr8_trap"),
    (0xa2, "invpcid"),
    (0xa5, "buslock"),
    (0xa6, "idle-halt"),
    (0x400, "npf"),
    (0x401, "avic_incomplete_ipi"),
    (0x402, "avic_unaccelerated_access"),
    (0x403, "vmgexit"),
    (0x80000001, "vmgexit_mmio_read"),
    (0x80000002, "vmgexit_mmio_write"),
    (0x80000003, "vmgexit_nmi_complete"),
    (0x80000004, "vmgexit_ap_hlt_loop"),
    (0x80000005, "vmgexit_ap_jump_table"),
    (0x80000010, "vmgexit_page_state_change"),
    (0x80000011, "vmgexit_guest_request"),
    (0x80000012, "vmgexit_ext_guest_request"),
    (0x80000013, "vmgexit_ap_creation"),
    (0x8000fffd, "vmgexit_hypervisor_feature"),
    (0xffffffff, "invalid_guest_state"),
];

/// The name of exit `reason` for `isa`, or None when the code is not in the table.
pub fn exit_reason_name(isa: u64, reason: u64) -> Option<&'static str> {
    let (table, code) = match isa {
        // VMX: the basic exit reason is the low 16 bits; the high bits are flags.
        ISA_VMX => (VMX, (reason & 0xffff) as u32),
        ISA_SVM => (SVM, reason as u32),
        _ => return None,
    };
    table.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// "VMX"/"SVM"/"isa N".
pub fn isa_name(isa: u64) -> String {
    match isa {
        ISA_VMX => "VMX".to_string(),
        ISA_SVM => "SVM".to_string(),
        n => format!("isa {n}"),
    }
}

/// A printable reason: its name, or the raw number.
pub fn exit_reason_label(isa: u64, reason: u64) -> String {
    exit_reason_name(isa, reason).map_or_else(|| format!("{reason:#x}"), str::to_string)
}

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
pub fn exit_reason_any(name: &str) -> Option<(u64, u32)> {
    exit_reasons().get(name).copied()
}

/// VMX exit reason flag names (`__print_flags` in `kvm_exit`'s format) and their bits.
pub const VMX_EXIT_FLAGS: &[(&str, u32)] =
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
pub fn kvm_exit_code(name: &str) -> Option<u64> {
    KVM_EXITS.iter().position(|n| *n == name).map(|i| i as u64)
}

/// Softirq vector names (`softirq_entry`'s `action=`).
const SOFTIRQS: &[&str] = &[
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// The vector of softirq `name` (`softirq_entry`'s `action=`).
pub fn softirq_vec(name: &str) -> Option<u64> {
    SOFTIRQS.iter().position(|n| *n == name).map(|i| i as u64)
}

/// The name of `KVM_EXIT_*` code `code` (without the prefix).
pub fn kvm_exit_name(code: u64) -> Option<&'static str> {
    usize::try_from(code)
        .ok()
        .and_then(|i| KVM_EXITS.get(i))
        .copied()
}

/// The name of softirq vector `vec` (`NET_RX`, ...).
pub fn softirq_name(vec: u64) -> Option<&'static str> {
    usize::try_from(vec)
        .ok()
        .and_then(|i| SOFTIRQS.get(i))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_isa() {
        assert_eq!(exit_reason_name(ISA_VMX, 12), Some("HLT"));
        assert_eq!(exit_reason_name(ISA_VMX, 30), Some("IO_INSTRUCTION"));
        assert_eq!(
            exit_reason_name(ISA_VMX, 0x8000_0021),
            Some("INVALID_STATE"),
            "flag bits ignored"
        );
        assert_eq!(exit_reason_name(ISA_SVM, 0x78), Some("hlt"));
        assert_eq!(exit_reason_name(ISA_SVM, 0x400), Some("npf"));
        assert_eq!(exit_reason_name(ISA_SVM, 12), None);
        assert_eq!(exit_reason_label(ISA_SVM, 0x999), "0x999");
        assert_eq!(exit_reason_name(7, 1), None);
    }

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
    fn userspace_exits_and_softirqs_both_ways() {
        assert_eq!(kvm_exit_code("IO"), Some(2));
        assert_eq!(kvm_exit_code("MMIO"), Some(6));
        assert_eq!(kvm_exit_code("X86_WRMSR"), Some(30));
        assert_eq!(kvm_exit_code("TDX"), Some(40));
        assert_eq!(kvm_exit_name(2), Some("IO"));
        assert_eq!(
            kvm_exit_name(37),
            Some("NOTIFY"),
            "include/uapi/linux/kvm.h"
        );
        assert_eq!(kvm_exit_name(999), None);
        assert_eq!(softirq_vec("NET_RX"), Some(3));
        assert_eq!(softirq_vec("RCU"), Some(9));
        assert_eq!(softirq_name(3), Some("NET_RX"));
        assert_eq!(softirq_name(10), None);
    }
}
