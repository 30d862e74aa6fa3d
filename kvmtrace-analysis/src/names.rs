//! The kernel's name tables, in one place: VM exit reasons (VMX and SVM, chosen by
//! `kvm_exit`'s `isa` field, as the kernel prints them: copied from the `kvm_exit` format file
//! of Linux 6.18), `KVM_EXIT_*` userspace exit reasons and softirq vectors. Unknown codes are
//! shown as numbers by the callers.
//!
//! Exit reasons are read back from text in every spelling found in the wild
//! ([`exit_reason_spelling`]): the kernel's (`EXTERNAL_INTERRUPT`, `npf`, `GP excp`),
//! libtraceevent's kvm plugin's (`PENDING_INTERRUPT`, `EXIT_NPF`, `EXIT_EXCP_GP`) and Linux
//! 2.6.3x's lower-case VMX names (`apic_access`, `io_instruction`); reports always name them
//! the kernel's way ([`exit_reason_label`]).

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

/// libtraceevent's kvm plugin (`plugins/plugin_kvm.c`, used by `trace-cmd report` and by
/// perf when it has the plugin): the VMX names it spells differently from today's kernel
/// (the kernel's own table said `PENDING_INTERRUPT` too, before Linux 5.6).
const VMX_PLUGIN: &[(u32, &str)] = &[(7, "PENDING_INTERRUPT")];

/// Linux 2.6.3x (`vmx_exit_reasons_str[]` in arch/x86/kvm/vmx.c): lower-case VMX names.
/// Five of them are also SVM names (`cpuid`, `invlpg`, `hypercall`, `wbinvd`,
/// `task_switch`): see [`ExitReasonName`].
const VMX_OLD: &[(u32, &str)] = &[
    (0, "exception"),
    (1, "ext_irq"),
    (2, "triple_fault"),
    (7, "interrupt_window"),
    (8, "nmi_window"),
    (9, "task_switch"),
    (10, "cpuid"),
    (12, "halt"),
    (14, "invlpg"),
    (18, "hypercall"),
    (28, "cr_access"),
    (29, "dr_access"),
    (30, "io_instruction"),
    (31, "rdmsr"),
    (32, "wrmsr"),
    (43, "tpr_below_thres"),
    (44, "apic_access"),
    (48, "ept_violation"),
    (54, "wbinvd"),
];

/// libtraceevent's kvm plugin: SVM names (`EXIT_NPF`, `EXIT_EXCP_GP`, ...).
const SVM_PLUGIN: &[(u32, &str)] = &[
    (0x000, "EXIT_READ_CR0"),
    (0x003, "EXIT_READ_CR3"),
    (0x004, "EXIT_READ_CR4"),
    (0x008, "EXIT_READ_CR8"),
    (0x010, "EXIT_WRITE_CR0"),
    (0x013, "EXIT_WRITE_CR3"),
    (0x014, "EXIT_WRITE_CR4"),
    (0x018, "EXIT_WRITE_CR8"),
    (0x020, "EXIT_READ_DR0"),
    (0x021, "EXIT_READ_DR1"),
    (0x022, "EXIT_READ_DR2"),
    (0x023, "EXIT_READ_DR3"),
    (0x024, "EXIT_READ_DR4"),
    (0x025, "EXIT_READ_DR5"),
    (0x026, "EXIT_READ_DR6"),
    (0x027, "EXIT_READ_DR7"),
    (0x030, "EXIT_WRITE_DR0"),
    (0x031, "EXIT_WRITE_DR1"),
    (0x032, "EXIT_WRITE_DR2"),
    (0x033, "EXIT_WRITE_DR3"),
    (0x034, "EXIT_WRITE_DR4"),
    (0x035, "EXIT_WRITE_DR5"),
    (0x036, "EXIT_WRITE_DR6"),
    (0x037, "EXIT_WRITE_DR7"),
    (0x040, "EXIT_EXCP_DE"),
    (0x041, "EXIT_EXCP_DB"),
    (0x043, "EXIT_EXCP_BP"),
    (0x044, "EXIT_EXCP_OF"),
    (0x045, "EXIT_EXCP_BR"),
    (0x046, "EXIT_EXCP_UD"),
    (0x047, "EXIT_EXCP_NM"),
    (0x048, "EXIT_EXCP_DF"),
    (0x04a, "EXIT_EXCP_TS"),
    (0x04b, "EXIT_EXCP_NP"),
    (0x04c, "EXIT_EXCP_SS"),
    (0x04d, "EXIT_EXCP_GP"),
    (0x04e, "EXIT_EXCP_PF"),
    (0x050, "EXIT_EXCP_MF"),
    (0x051, "EXIT_EXCP_AC"),
    (0x052, "EXIT_EXCP_MC"),
    (0x053, "EXIT_EXCP_XF"),
    (0x060, "EXIT_INTR"),
    (0x061, "EXIT_NMI"),
    (0x062, "EXIT_SMI"),
    (0x063, "EXIT_INIT"),
    (0x064, "EXIT_VINTR"),
    (0x065, "EXIT_CR0_SEL_WRITE"),
    (0x066, "EXIT_IDTR_READ"),
    (0x067, "EXIT_GDTR_READ"),
    (0x068, "EXIT_LDTR_READ"),
    (0x069, "EXIT_TR_READ"),
    (0x06a, "EXIT_IDTR_WRITE"),
    (0x06b, "EXIT_GDTR_WRITE"),
    (0x06c, "EXIT_LDTR_WRITE"),
    (0x06d, "EXIT_TR_WRITE"),
    (0x06e, "EXIT_RDTSC"),
    (0x06f, "EXIT_RDPMC"),
    (0x070, "EXIT_PUSHF"),
    (0x071, "EXIT_POPF"),
    (0x072, "EXIT_CPUID"),
    (0x073, "EXIT_RSM"),
    (0x074, "EXIT_IRET"),
    (0x075, "EXIT_SWINT"),
    (0x076, "EXIT_INVD"),
    (0x077, "EXIT_PAUSE"),
    (0x078, "EXIT_HLT"),
    (0x079, "EXIT_INVLPG"),
    (0x07a, "EXIT_INVLPGA"),
    (0x07b, "EXIT_IOIO"),
    (0x07c, "EXIT_MSR"),
    (0x07d, "EXIT_TASK_SWITCH"),
    (0x07e, "EXIT_FERR_FREEZE"),
    (0x07f, "EXIT_SHUTDOWN"),
    (0x080, "EXIT_VMRUN"),
    (0x081, "EXIT_VMMCALL"),
    (0x082, "EXIT_VMLOAD"),
    (0x083, "EXIT_VMSAVE"),
    (0x084, "EXIT_STGI"),
    (0x085, "EXIT_CLGI"),
    (0x086, "EXIT_SKINIT"),
    (0x087, "EXIT_RDTSCP"),
    (0x088, "EXIT_ICEBP"),
    (0x089, "EXIT_WBINVD"),
    (0x08a, "EXIT_MONITOR"),
    (0x08b, "EXIT_MWAIT"),
    (0x08c, "EXIT_MWAIT_COND"),
    (0x08d, "EXIT_XSETBV"),
    (0x400, "EXIT_NPF"),
    (0x401, "EXIT_AVIC_INCOMPLETE_IPI"),
    (0x402, "EXIT_AVIC_UNACCELERATED_ACCESS"),
    (0xffff_ffff, "EXIT_ERR"),
];

/// What a printed exit reason name says: its code in the VMX tables and in the SVM tables.
/// Both are set for the five lower-case names Linux 2.6.3x used for VMX exits that are also
/// SVM names (`cpuid`, `invlpg`, `hypercall`, `wbinvd`, `task_switch`); the importer decides
/// those by the other exits of the same text (see `import`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitReasonName {
    pub vmx: Option<u32>,
    pub svm: Option<u32>,
}

impl ExitReasonName {
    /// The isa and code when only one table has the name.
    pub fn unambiguous(self) -> Option<(u64, u32)> {
        match (self.vmx, self.svm) {
            (Some(c), None) => Some((ISA_VMX, c)),
            (None, Some(c)) => Some((ISA_SVM, c)),
            _ => None,
        }
    }

    /// The code for `isa`, if that table has the name.
    pub fn code(self, isa: u64) -> Option<u32> {
        match isa {
            ISA_VMX => self.vmx,
            ISA_SVM => self.svm,
            _ => None,
        }
    }
}

/// Every spelling of every exit reason: the kernel's tables (Linux 6.18), libtraceevent's
/// kvm plugin's (`PENDING_INTERRUPT`, `EXIT_NPF`, ...) and Linux 2.6.3x's lower-case VMX names.
fn spellings() -> &'static HashMap<&'static str, ExitReasonName> {
    static TABLE: OnceLock<HashMap<&'static str, ExitReasonName>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m: HashMap<&'static str, ExitReasonName> = HashMap::new();
        // The kernel's names first: a code has one kernel name per isa, and the older and
        // the plugin's spellings never take a name the kernel uses for another code.
        for &(code, name) in VMX.iter().chain(VMX_PLUGIN).chain(VMX_OLD) {
            m.entry(name).or_default().vmx.get_or_insert(code);
        }
        for &(code, name) in SVM.iter().chain(SVM_PLUGIN) {
            m.entry(name).or_default().svm.get_or_insert(code);
        }
        m
    })
}

/// What exit reason `name` is, in any spelling; None when no table has it.
pub fn exit_reason_spelling(name: &str) -> Option<ExitReasonName> {
    spellings().get(name).copied()
}

/// The code of exit reason `name` (any spelling) for `isa` (1 = VMX, 2 = SVM), or None when
/// that isa has no such name.
pub fn exit_reason_code(isa: u64, name: &str) -> Option<u32> {
    exit_reason_spelling(name).and_then(|n| n.code(isa))
}

/// The isa and code of an exit reason name that only one isa has.
pub fn exit_reason_any(name: &str) -> Option<(u64, u32)> {
    exit_reason_spelling(name).and_then(ExitReasonName::unambiguous)
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
                    // Linux 2.6.3x used five SVM names for VMX exits too.
                    let old = ["cpuid", "invlpg", "hypercall", "wbinvd", "task_switch"];
                    if !old.contains(&name) {
                        let other = if isa == ISA_VMX { ISA_SVM } else { ISA_VMX };
                        assert_eq!(exit_reason_code(other, name), None, "{name} in both");
                        assert_eq!(exit_reason_any(name), Some((isa, code)), "{name}");
                    }
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
    fn every_spelling_of_an_exit_reason() {
        // libtraceevent's kvm plugin.
        assert_eq!(exit_reason_any("PENDING_INTERRUPT"), Some((ISA_VMX, 7)));
        assert_eq!(exit_reason_label(ISA_VMX, 7), "INTERRUPT_WINDOW");
        for (plugin, kernel) in [
            ("EXIT_NPF", "npf"),
            ("EXIT_MSR", "msr"),
            ("EXIT_WRITE_CR4", "write_cr4"),
            ("EXIT_CR0_SEL_WRITE", "cr0_sel_write"),
            ("EXIT_EXCP_GP", "GP excp"),
            ("EXIT_IOIO", "io"),
            ("EXIT_VMMCALL", "hypercall"),
            ("EXIT_INTR", "interrupt"),
            ("EXIT_RSM", "rsm"),
            ("EXIT_ERR", "invalid_guest_state"),
        ] {
            let (isa, code) = exit_reason_any(plugin).unwrap();
            assert_eq!(isa, ISA_SVM, "{plugin}");
            assert_eq!(
                exit_reason_name(isa, u64::from(code)),
                Some(kernel),
                "{plugin}"
            );
        }
        // Every plugin SVM name but EXIT_MWAIT_COND (0x8c, not in the kernel's table).
        for &(code, name) in SVM_PLUGIN {
            assert_eq!(exit_reason_any(name), Some((ISA_SVM, code)), "{name}");
            assert!(code == 0x8c || exit_reason_name(ISA_SVM, u64::from(code)).is_some());
        }
        // Linux 2.6.3x VMX names.
        assert_eq!(exit_reason_any("apic_access"), Some((ISA_VMX, 44)));
        assert_eq!(exit_reason_any("io_instruction"), Some((ISA_VMX, 30)));
        assert_eq!(exit_reason_any("halt"), Some((ISA_VMX, 12)));
        assert_eq!(exit_reason_any("hlt"), Some((ISA_SVM, 0x78)));
        // The five names both isas have.
        for (name, vmx, svm) in [
            ("cpuid", 10, 0x72),
            ("invlpg", 14, 0x79),
            ("hypercall", 18, 0x81),
            ("wbinvd", 54, 0x89),
            ("task_switch", 9, 0x7d),
        ] {
            let n = exit_reason_spelling(name).unwrap();
            assert_eq!((n.vmx, n.svm), (Some(vmx), Some(svm)), "{name}");
            assert_eq!(exit_reason_any(name), None, "{name} is ambiguous");
            assert_eq!(exit_reason_code(ISA_VMX, name), Some(vmx));
            assert_eq!(exit_reason_code(ISA_SVM, name), Some(svm));
        }
        let mut both = 0;
        for &(_, name) in VMX.iter().chain(VMX_PLUGIN).chain(VMX_OLD) {
            if exit_reason_spelling(name).unwrap().svm.is_some() {
                both += 1;
            }
        }
        assert_eq!(both, 5, "only the five old VMX names are SVM names too");
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
