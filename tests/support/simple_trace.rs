//! An independent, deliberately simple reference parser for KVM text traces
//! (ftrace `trace`/`trace_pipe`, `trace-cmd report`, `perf script`), used to
//! cross-check `kvmtrace report --from-text` on real published traces.
//!
//! Written from the output formats themselves, std only, no regex:
//!
//! * ftrace:    `comm-PID [ (TGID)] [CPU] [irq flags] SECS.USECS: event: text`
//! * trace-cmd: `comm-PID [CPU] [latency flags (-l)] SECS.USECS|SECS.NSECS: event: text`
//! * perf:      `comm PID[/TID] [CPU] SECS.NSECS: [sys:]event: text`
//!
//! A *record* starts on a line holding a `SECS.FRAC:` timestamp token, or on a
//! line that starts with a bare `event_name:` (traces pasted without their
//! header columns).  Any other non-blank, non-`#` line continues the record
//! before it (mail clients and terminals wrap long lines), and so does a bare
//! `event:` line that follows a header-only line (`comm-PID [CPU] TS:`).
//!
//! Every `kvm_exit` record is counted under a canonical reason key; for each
//! thread (ftrace PID, perf TID; one anonymous thread when a trace carries no
//! task column) a `kvm_exit` is paired with the next `kvm_entry` of the same
//! thread, and the largest exit->entry gap is kept per reason.
//!
//! Choices worth knowing when comparing against it:
//! * the key is the reason name only: a VMX flag printed after it
//!   (`reason INVALID_STATE FAILED_VMENTRY`) is not part of the key;
//! * a `kvm_exit` cut off before its reason counts under `(none)`;
//! * a later `kvm_exit` of the same thread replaces an unpaired earlier one;
//! * `exits` and `entries` count every `kvm_exit` / `kvm_entry` record,
//!   timed or not; records without a timestamp are never timed.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

pub struct ExitStats {
    pub by_reason: BTreeMap<String, u64>,
    pub max_exit_to_entry_ns: BTreeMap<String, u64>,
    pub exits: u64,
    pub entries: u64,
}

/// Linux arch/x86/include/uapi/asm/vmx.h, VMX_EXIT_REASONS (code, name); only
/// used to name numeric reasons.  Names as printed are kept as they are.
#[rustfmt::skip]
const VMX: &[(u64, &str)] = &[
    (0, "EXCEPTION_NMI"), (1, "EXTERNAL_INTERRUPT"), (2, "TRIPLE_FAULT"), (7, "PENDING_INTERRUPT"),
    (8, "NMI_WINDOW"), (9, "TASK_SWITCH"), (10, "CPUID"), (12, "HLT"), (13, "INVD"), (14, "INVLPG"),
    (15, "RDPMC"), (16, "RDTSC"), (18, "VMCALL"), (19, "VMCLEAR"), (20, "VMLAUNCH"), (21, "VMPTRLD"),
    (22, "VMPTRST"), (23, "VMREAD"), (24, "VMRESUME"), (25, "VMWRITE"), (26, "VMOFF"), (27, "VMON"),
    (28, "CR_ACCESS"), (29, "DR_ACCESS"), (30, "IO_INSTRUCTION"), (31, "MSR_READ"), (32, "MSR_WRITE"),
    (33, "INVALID_STATE"), (36, "MWAIT_INSTRUCTION"), (39, "MONITOR_INSTRUCTION"),
    (40, "PAUSE_INSTRUCTION"), (41, "MCE_DURING_VMENTRY"), (43, "TPR_BELOW_THRESHOLD"),
    (44, "APIC_ACCESS"), (45, "EOI_INDUCED"), (46, "GDTR_IDTR"), (47, "LDTR_TR"), (48, "EPT_VIOLATION"),
    (49, "EPT_MISCONFIG"), (50, "INVEPT"), (51, "RDTSCP"), (52, "PREEMPTION_TIMER"), (53, "INVVPID"),
    (54, "WBINVD"), (55, "XSETBV"), (56, "APIC_WRITE"), (57, "RDRAND"), (58, "INVPCID"), (59, "VMFUNC"),
    (60, "ENCLS"), (61, "RDSEED"), (62, "PML_FULL"), (63, "XSAVES"), (64, "XRSTORS"), (67, "UMWAIT"),
    (68, "TPAUSE"), (74, "BUS_LOCK"), (75, "NOTIFY"), (77, "TDCALL"), (84, "MSR_READ_IMM"),
    (85, "MSR_WRITE_IMM"),
];

/// The lower-case names of Linux <= 2.6.3x (vmx.c `vmx_exit_reasons_str[]`) and
/// the current VMX name for the same exit code.
#[rustfmt::skip]
const OLD_VMX: &[(&str, &str)] = &[
    ("exception", "EXCEPTION_NMI"), ("ext_irq", "EXTERNAL_INTERRUPT"), ("triple_fault", "TRIPLE_FAULT"),
    ("nmi_window", "NMI_WINDOW"), ("io_instruction", "IO_INSTRUCTION"), ("cr_access", "CR_ACCESS"),
    ("dr_access", "DR_ACCESS"), ("cpuid", "CPUID"), ("rdmsr", "MSR_READ"), ("wrmsr", "MSR_WRITE"),
    ("interrupt_window", "PENDING_INTERRUPT"), ("halt", "HLT"), ("invlpg", "INVLPG"),
    ("hypercall", "VMCALL"), ("tpr_below_thres", "TPR_BELOW_THRESHOLD"), ("apic_access", "APIC_ACCESS"),
    ("wbinvd", "WBINVD"), ("task_switch", "TASK_SWITCH"), ("ept_violation", "EPT_VIOLATION"),
];

/// Linux arch/x86/include/uapi/asm/svm.h, SVM_EXIT_REASONS (code, name), as of
/// 6.x (incl. write_cr4_trap/write_cr8_trap, buslock, idle-halt).  These are the
/// canonical SVM keys.
#[rustfmt::skip]
const SVM: &[(u64, &str)] = &[
    (0x000, "read_cr0"), (0x002, "read_cr2"), (0x003, "read_cr3"), (0x004, "read_cr4"), (0x008, "read_cr8"),
    (0x010, "write_cr0"), (0x012, "write_cr2"), (0x013, "write_cr3"), (0x014, "write_cr4"),
    (0x018, "write_cr8"), (0x020, "read_dr0"), (0x021, "read_dr1"), (0x022, "read_dr2"), (0x023, "read_dr3"),
    (0x024, "read_dr4"), (0x025, "read_dr5"), (0x026, "read_dr6"), (0x027, "read_dr7"), (0x030, "write_dr0"),
    (0x031, "write_dr1"), (0x032, "write_dr2"), (0x033, "write_dr3"), (0x034, "write_dr4"),
    (0x035, "write_dr5"), (0x036, "write_dr6"), (0x037, "write_dr7"), (0x040, "DE excp"), (0x041, "DB excp"),
    (0x043, "BP excp"), (0x044, "OF excp"), (0x045, "BR excp"), (0x046, "UD excp"), (0x047, "NM excp"),
    (0x048, "DF excp"), (0x04a, "TS excp"), (0x04b, "NP excp"), (0x04c, "SS excp"), (0x04d, "GP excp"),
    (0x04e, "PF excp"), (0x050, "MF excp"), (0x051, "AC excp"), (0x052, "MC excp"), (0x053, "XF excp"),
    (0x060, "interrupt"), (0x061, "nmi"), (0x062, "smi"), (0x063, "init"), (0x064, "vintr"),
    (0x065, "cr0_sel_write"), (0x066, "read_idtr"), (0x067, "read_gdtr"), (0x068, "read_ldtr"),
    (0x069, "read_rt"), (0x06a, "write_idtr"), (0x06b, "write_gdtr"), (0x06c, "write_ldtr"),
    (0x06d, "write_rt"), (0x06e, "rdtsc"), (0x06f, "rdpmc"), (0x070, "pushf"), (0x071, "popf"),
    (0x072, "cpuid"), (0x073, "rsm"), (0x074, "iret"), (0x075, "swint"), (0x076, "invd"), (0x077, "pause"),
    (0x078, "hlt"), (0x079, "invlpg"), (0x07a, "invlpga"), (0x07b, "io"), (0x07c, "msr"),
    (0x07d, "task_switch"), (0x07e, "ferr_freeze"), (0x07f, "shutdown"), (0x080, "vmrun"),
    (0x081, "hypercall"), (0x082, "vmload"), (0x083, "vmsave"), (0x084, "stgi"), (0x085, "clgi"),
    (0x086, "skinit"), (0x087, "rdtscp"), (0x088, "icebp"), (0x089, "wbinvd"), (0x08a, "monitor"),
    (0x08b, "mwait"), (0x08d, "xsetbv"), (0x08f, "write_efer_trap"), (0x090, "write_cr0_trap"),
    (0x094, "write_cr4_trap"), (0x098, "write_cr8_trap"), (0x0a2, "invpcid"), (0x0a5, "buslock"),
    (0x0a6, "idle-halt"), (0x400, "npf"), (0x401, "avic_incomplete_ipi"),
    (0x402, "avic_unaccelerated_access"), (0x403, "vmgexit"), (u64::MAX, "invalid_guest_state"),
];

/// libtraceevent plugins/plugin_kvm.c, SVM_EXIT_REASONS (`_ER(EXIT_..., code)`), the
/// names trace-cmd/perf print when the kvm plugin formats `kvm_exit`.  Mapped to
/// the kernel name through the code.
#[rustfmt::skip]
const PLUGIN_SVM: &[(&str, u64)] = &[
    ("READ_CR0", 0x000), ("READ_CR3", 0x003), ("READ_CR4", 0x004), ("READ_CR8", 0x008),
    ("WRITE_CR0", 0x010), ("WRITE_CR3", 0x013), ("WRITE_CR4", 0x014), ("WRITE_CR8", 0x018),
    ("READ_DR0", 0x020), ("READ_DR1", 0x021), ("READ_DR2", 0x022), ("READ_DR3", 0x023),
    ("READ_DR4", 0x024), ("READ_DR5", 0x025), ("READ_DR6", 0x026), ("READ_DR7", 0x027),
    ("WRITE_DR0", 0x030), ("WRITE_DR1", 0x031), ("WRITE_DR2", 0x032), ("WRITE_DR3", 0x033),
    ("WRITE_DR4", 0x034), ("WRITE_DR5", 0x035), ("WRITE_DR6", 0x036), ("WRITE_DR7", 0x037),
    ("EXCP_DE", 0x040), ("EXCP_DB", 0x041), ("EXCP_BP", 0x043), ("EXCP_OF", 0x044), ("EXCP_BR", 0x045),
    ("EXCP_UD", 0x046), ("EXCP_NM", 0x047), ("EXCP_DF", 0x048), ("EXCP_TS", 0x04a), ("EXCP_NP", 0x04b),
    ("EXCP_SS", 0x04c), ("EXCP_GP", 0x04d), ("EXCP_PF", 0x04e), ("EXCP_MF", 0x050), ("EXCP_AC", 0x051),
    ("EXCP_MC", 0x052), ("EXCP_XF", 0x053), ("INTR", 0x060), ("NMI", 0x061), ("SMI", 0x062),
    ("INIT", 0x063), ("VINTR", 0x064), ("CR0_SEL_WRITE", 0x065), ("IDTR_READ", 0x066),
    ("GDTR_READ", 0x067), ("LDTR_READ", 0x068), ("TR_READ", 0x069), ("IDTR_WRITE", 0x06a),
    ("GDTR_WRITE", 0x06b), ("LDTR_WRITE", 0x06c), ("TR_WRITE", 0x06d), ("RDTSC", 0x06e),
    ("RDPMC", 0x06f), ("PUSHF", 0x070), ("POPF", 0x071), ("CPUID", 0x072), ("RSM", 0x073),
    ("IRET", 0x074), ("SWINT", 0x075), ("INVD", 0x076), ("PAUSE", 0x077), ("HLT", 0x078),
    ("INVLPG", 0x079), ("INVLPGA", 0x07a), ("IOIO", 0x07b), ("MSR", 0x07c), ("TASK_SWITCH", 0x07d),
    ("FERR_FREEZE", 0x07e), ("SHUTDOWN", 0x07f), ("VMRUN", 0x080), ("VMMCALL", 0x081),
    ("VMLOAD", 0x082), ("VMSAVE", 0x083), ("STGI", 0x084), ("CLGI", 0x085), ("SKINIT", 0x086),
    ("RDTSCP", 0x087), ("ICEBP", 0x088), ("WBINVD", 0x089), ("MONITOR", 0x08a), ("MWAIT", 0x08b),
    ("MWAIT_COND", 0x08c), ("XSETBV", 0x08d), ("NPF", 0x400), ("AVIC_INCOMPLETE_IPI", 0x401),
    ("AVIC_UNACCELERATED_ACCESS", 0x402), ("ERR", u64::MAX),
];

#[derive(Clone, Copy, PartialEq)]
enum Isa {
    Vmx,
    Svm,
    Unknown,
}

enum Raw {
    Name(String),
    Num(u64),
}

struct Record {
    thread: String,
    ts_ns: Option<u64>,
    event: String,
    reason: Option<Raw>,
    isa: Option<u64>,
}

pub fn exit_stats(text: &str) -> ExitStats {
    let records: Vec<Record> = logical_records(text)
        .iter()
        .filter_map(|r| parse_record(r))
        .collect();
    // One ISA guess for the whole file, used only where a name or number is ambiguous.
    let (mut vmx, mut svm) = (0, 0);
    for r in records.iter().filter(|r| r.event == "kvm_exit") {
        match (&r.reason, r.isa) {
            (_, Some(1)) => vmx += 1,
            (_, Some(2)) => svm += 1,
            (Some(Raw::Name(s)), _) if s.starts_with("EXIT_") => svm += 1,
            (Some(Raw::Name(s)), _) if is_svm_name(s) && old_vmx(s).is_none() => svm += 1,
            (Some(Raw::Name(s)), _) if old_vmx(s).is_some() && !is_svm_name(s) => vmx += 1,
            (Some(Raw::Name(s)), _)
                if s != "UNKNOWN" && s.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                vmx += 1
            }
            _ => {}
        }
    }
    let isa = if vmx > 0 && svm == 0 {
        Isa::Vmx
    } else if svm > 0 && vmx == 0 {
        Isa::Svm
    } else {
        Isa::Unknown
    };

    let mut st = ExitStats {
        by_reason: BTreeMap::new(),
        max_exit_to_entry_ns: BTreeMap::new(),
        exits: 0,
        entries: 0,
    };
    let mut pending: HashMap<String, (String, Option<u64>)> = HashMap::new();
    for r in &records {
        if r.event == "kvm_exit" {
            let rec_isa = match r.isa {
                Some(1) => Isa::Vmx,
                Some(2) => Isa::Svm,
                _ => isa,
            };
            let key = match &r.reason {
                Some(raw) => canonical(raw, rec_isa),
                None => "(none)".to_string(),
            };
            st.exits += 1;
            *st.by_reason.entry(key.clone()).or_insert(0) += 1;
            pending.insert(r.thread.clone(), (key, r.ts_ns));
        } else if r.event == "kvm_entry" {
            st.entries += 1;
            if let Some((key, Some(t0))) = pending.remove(&r.thread) {
                if let Some(t1) = r.ts_ns.filter(|t1| *t1 >= t0) {
                    let m = st.max_exit_to_entry_ns.entry(key).or_insert(0);
                    *m = (*m).max(t1 - t0);
                }
            }
        }
    }
    st
}

/// Groups physical lines into records (see the module comment).
fn logical_records(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let l = line.trim_end();
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            out.extend(cur.take());
            continue;
        }
        let header_only = cur
            .as_deref()
            .and_then(split_ts)
            .is_some_and(|(_, _, rest)| rest.trim().is_empty());
        let starts = split_ts(l).is_some() || (is_bare_event(l) && !header_only);
        match cur.as_mut() {
            Some(c) if !starts => {
                c.push(' ');
                c.push_str(l.trim());
            }
            _ => {
                out.extend(cur.take());
                cur = Some(l.to_string());
            }
        }
    }
    out.extend(cur);
    out
}

/// Splits at the first `SECS.FRAC:` token: (text before, timestamp in ns, text after).
fn split_ts(line: &str) -> Option<(&str, u64, &str)> {
    let mut pos = 0;
    for tok in line.split_whitespace() {
        let start = pos + line[pos..].find(tok)?;
        pos = start + tok.len();
        let t = match tok.strip_suffix(':') {
            Some(t) => t,
            None => continue,
        };
        let (s, f) = match t.split_once('.') {
            Some(x) => x,
            None => continue,
        };
        if s.is_empty()
            || f.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || !f.bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let mut frac: String = f.chars().take(9).collect();
        while frac.len() < 9 {
            frac.push('0');
        }
        let ns = s
            .parse::<u64>()
            .ok()?
            .checked_mul(1_000_000_000)?
            .checked_add(frac.parse().ok()?)?;
        return Some((&line[..start], ns, &line[pos..]));
    }
    None
}

/// `event:` or `sys:event:` (lower-case identifier) as the first token of the line.
fn is_bare_event(line: &str) -> bool {
    let tok = line.split_whitespace().next().unwrap_or("");
    match tok.strip_suffix(':') {
        Some(name) => {
            !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.split(':').all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        }
        None => false,
    }
}

fn parse_record(rec: &str) -> Option<Record> {
    let (head, ts_ns, rest) = match split_ts(rec) {
        Some((h, t, r)) => (h, Some(t), r),
        None => ("", None, rec),
    };
    let mut toks = rest.split_whitespace();
    let ev = toks.next()?.trim_end_matches(':');
    let event = ev.rsplit(':').next()?.to_string(); // "kvm:kvm_exit" -> "kvm_exit"
    let toks: Vec<&str> = toks.collect();
    let mut reason = None;
    let mut isa = None;
    for (i, t) in toks.iter().enumerate() {
        if let Some(v) = t.strip_prefix("isa=") {
            isa = parse_num(v);
        }
        if reason.is_some() {
            continue;
        }
        if let Some(v) = t.strip_prefix("exit_reason=") {
            reason = parse_num(v).map(Raw::Num);
        }
        if *t == "reason" && i + 1 < toks.len() {
            let v = toks[i + 1].trim_end_matches(',');
            let next = toks.get(i + 2).copied().unwrap_or("");
            reason = Some(if next == "excp" {
                Raw::Name(format!("{} excp", v)) // SVM "GP excp"
            } else if v == "UNKNOWN" && next.starts_with('(') {
                parse_num(next.trim_matches(|c| c == '(' || c == ')'))
                    .map(Raw::Num)
                    .unwrap_or(Raw::Name(v.to_string()))
            } else {
                parse_num(v)
                    .map(Raw::Num)
                    .unwrap_or(Raw::Name(v.to_string()))
            });
        }
    }
    Some(Record {
        thread: thread_of(head).unwrap_or_default(),
        ts_ns,
        event,
        reason,
        isa,
    })
}

/// The task id in the columns before the timestamp: the last `PID` or `PID/TID`
/// token (perf; TID wins), else the first `comm-PID` token (ftrace, trace-cmd).
fn thread_of(head: &str) -> Option<String> {
    let cols: Vec<&str> = head.split_whitespace().collect();
    let end = cols
        .iter()
        .position(|t| t.starts_with('[') && t.ends_with(']'))
        .unwrap_or(cols.len());
    let cols = &cols[..end];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    for t in cols.iter().rev() {
        match t.split_once('/') {
            Some((p, tid)) if digits(p) && digits(tid) => return Some(tid.to_string()),
            None if digits(t) => return Some(t.to_string()),
            _ => {}
        }
    }
    cols.iter().find_map(|t| {
        t.rsplit_once('-')
            .filter(|(_, p)| digits(p))
            .map(|(_, p)| p.to_string())
    })
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn is_svm_name(s: &str) -> bool {
    SVM.iter().any(|(_, n)| *n == s)
}
fn old_vmx(s: &str) -> Option<&'static str> {
    OLD_VMX.iter().find(|(o, _)| *o == s).map(|(_, n)| *n)
}

fn canonical(raw: &Raw, isa: Isa) -> String {
    match raw {
        Raw::Num(n) => {
            let table = if isa == Isa::Svm { SVM } else { VMX }; // libtraceevent also defaults to VMX
            table
                .iter()
                .find(|(c, _)| c == n)
                .map(|(_, s)| s.to_string())
                .unwrap_or(format!("UNKNOWN({})", n))
        }
        Raw::Name(s) => {
            if let Some(p) = s.strip_prefix("EXIT_") {
                let code = PLUGIN_SVM.iter().find(|(n, _)| *n == p).map(|(_, c)| *c);
                code.and_then(|c| SVM.iter().find(|(k, _)| *k == c))
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_else(|| p.to_ascii_lowercase())
            } else if is_svm_name(s) && !(isa == Isa::Vmx && old_vmx(s).is_some()) {
                s.clone()
            } else if let Some(n) = old_vmx(s) {
                n.to_string()
            } else {
                s.to_ascii_uppercase()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(m: &BTreeMap<String, u64>, k: &str) -> Option<u64> {
        m.get(k).copied()
    }

    #[test]
    fn ftrace_new_layout_pairs_per_thread() {
        // Two vCPU threads interleaved; 6.x layout with irq flags; a nested
        // vmexit that must not count.  Hand count: 3 exits, 2 entries;
        // 100: EPT 1.000010 -> 1.000030 (20 us); 200: HLT 1.000020 -> 1.000500 (480 us);
        // 100: HLT 1.000040, no entry after it.
        let t = "\
 CPU 0/KVM-100     [001] d.... 1.000010: kvm_exit: vcpu 0 reason EPT_VIOLATION rip 0x1 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0
 CPU 1/KVM-200     [002] d.... 1.000020: kvm_exit: vcpu 1 reason HLT rip 0x2 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0
 CPU 0/KVM-100     [001] ..... 1.000025: kvm_nested_vmexit: vcpu 0 reason EPT_VIOLATION rip 0x1
 CPU 0/KVM-100     [001] d.... 1.000030: kvm_entry: vcpu 0, rip 0x1
 CPU 1/KVM-200     [002] d.... 1.000500: kvm_entry: vcpu 1, rip 0x2
 CPU 0/KVM-100     [001] d.... 1.000040: kvm_exit: vcpu 0 reason HLT rip 0x3 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0
";
        let s = exit_stats(t);
        assert_eq!((s.exits, s.entries), (3, 2));
        assert_eq!(get(&s.by_reason, "EPT_VIOLATION"), Some(1));
        assert_eq!(get(&s.by_reason, "HLT"), Some(2));
        assert_eq!(get(&s.max_exit_to_entry_ns, "EPT_VIOLATION"), Some(20_000));
        assert_eq!(get(&s.max_exit_to_entry_ns, "HLT"), Some(480_000));
    }

    #[test]
    fn perf_wrapped_records_and_tid() {
        // perf script, pid/tid, a record wrapped after "rip", ns timestamps.
        // Hand count: 1 EPT_VIOLATION exit, 1 entry, 1500 ns.
        let t = "\
 qemu-system-x86 4200/4242 [000]  7.000001000:    kvm:kvm_exit: reason EPT_VIOLATION rip
0xffffffff81000000 info 181 0
      vhost-4200 4200/4251 [001]  7.000001200:    kvm:kvm_entry: vcpu 1
 qemu-system-x86 4200/4242 [000]  7.000002500:    kvm:kvm_entry: vcpu 0
";
        let s = exit_stats(t);
        assert_eq!((s.exits, s.entries), (1, 2));
        assert_eq!(get(&s.max_exit_to_entry_ns, "EPT_VIOLATION"), Some(1_500));
    }

    #[test]
    fn header_only_lines_wrap_before_the_event() {
        // Hand count: 1 EXTERNAL_INTERRUPT exit, 1 entry, 1 us; comments ignored.
        let t = "\
qemu-system-x86-5665  [000] ....   280.971121:
 kvm_exit: reason EXTERNAL_INTERRUPT rip 0x22da info 0 800000fd
 # a comment
qemu-system-x86-5665  [000] d..1   280.971122:
 kvm_entry: vcpu 0, rip 0x22da
";
        let s = exit_stats(t);
        assert_eq!((s.exits, s.entries), (1, 1));
        assert_eq!(
            get(&s.max_exit_to_entry_ns, "EXTERNAL_INTERRUPT"),
            Some(1_000)
        );
    }

    #[test]
    fn svm_plugin_and_kernel_names() {
        // trace-cmd plugin names and kernel names for the same exits.
        // Hand count: npf 2, GP excp 2, msr 1, write_cr4 1, hypercall 1.
        let t = "\
 a-1 [000] 1.000001: kvm_exit:             reason EXIT_NPF rip 0x1 info 0 0
 a-1 [000] 1.000002: kvm_exit:             reason EXIT_EXCP_GP rip 0x1 info 0 0
 a-1 [000] 1.000003: kvm_exit:             reason EXIT_WRITE_CR4 rip 0x1 info 0 0
 a-1 [000] 1.000004: kvm_exit:             reason EXIT_VMMCALL rip 0x1 info 0 0
 a-1 [000] 1.000005: kvm_exit: vcpu 0 reason npf rip 0x1 info 0 0
 a-1 [000] 1.000006: kvm_exit: reason GP excp rip 0x1 info 0 0
 a-1 [000] 1.000007: kvm_exit: vcpu 0 reason msr rip 0x1 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0
";
        let s = exit_stats(t);
        assert_eq!(s.exits, 7);
        assert_eq!(get(&s.by_reason, "npf"), Some(2));
        assert_eq!(get(&s.by_reason, "GP excp"), Some(2));
        assert_eq!(get(&s.by_reason, "write_cr4"), Some(1));
        assert_eq!(get(&s.by_reason, "hypercall"), Some(1));
        assert_eq!(get(&s.by_reason, "msr"), Some(1));
    }

    #[test]
    fn numeric_reasons() {
        // VMX file: "reason 48" = EPT_VIOLATION, 0x1e = IO_INSTRUCTION, 999 unknown.
        let v = " a-1 [000] 1.0: kvm_exit: reason HLT rip 0x1\n a-1 [000] 1.1: kvm_exit: reason 48 rip 0x1\n \
                 a-1 [000] 1.2: kvm_exit: reason 0x1e rip 0x1\n a-1 [000] 1.3: kvm_exit: reason 999 rip 0x1\n";
        let s = exit_stats(v);
        assert_eq!(get(&s.by_reason, "EPT_VIOLATION"), Some(1));
        assert_eq!(get(&s.by_reason, "IO_INSTRUCTION"), Some(1));
        assert_eq!(get(&s.by_reason, "UNKNOWN(999)"), Some(1));
        // SVM file: plugin "UNKNOWN (124)" = 0x7c = msr; raw "exit_reason=120 isa=2" = hlt.
        let a = " a-1 [000] 1.0: kvm_exit: reason EXIT_NPF rip 0x1 info 0 0\n \
                 a-1 [000] 1.1: kvm_exit: reason UNKNOWN (124) rip 0x1 info 0 0\n \
                 a-1 [000] 1.2: kvm_exit: exit_reason=120 guest_rip=0x1 isa=2 info1=0 info2=0\n";
        let s = exit_stats(a);
        assert_eq!(get(&s.by_reason, "msr"), Some(1));
        assert_eq!(get(&s.by_reason, "hlt"), Some(1));
        assert_eq!(get(&s.by_reason, "npf"), Some(1));
    }

    #[test]
    fn tgid_and_latency_columns() {
        // ftrace with the tgid column, trace-cmd -l latency flags.  Hand count:
        // CPUID 2 exits, max 3 us (tid 301: 2 us, tid 302: 3 us).
        let t = "\
 CPU 0/KVM-301     ( 300) [003] d..1.   10.000001: kvm_exit: reason CPUID rip 0x1 info 0 0
 CPU 0/KVM-301     ( 300) [003] d..1.   10.000003: kvm_entry: vcpu 0
 CPU 1/KVM-302  [005] d..2  10.000010: kvm_exit:             reason CPUID rip 0x1 info 0 0
 CPU 1/KVM-302  [005] d..2  10.000013: kvm_entry:            vcpu 1
";
        let s = exit_stats(t);
        assert_eq!((s.exits, s.entries), (2, 2));
        assert_eq!(get(&s.max_exit_to_entry_ns, "CPUID"), Some(3_000));
    }

    #[test]
    fn headerless_lines_and_old_names() {
        // No task/time columns: counted, never timed.  Continuation lines
        // (indented, no "event:") stay with their record.
        let t = "  kvm_exit:             reason EXIT_NPF rip 0x1 info\n    200000006 1ab000\n  kvm_entry:            vcpu 0\n";
        let s = exit_stats(t);
        assert_eq!((s.exits, s.entries), (1, 1));
        assert!(s.max_exit_to_entry_ns.is_empty());
        // 2.6.3x lower-case VMX names; "cpuid" is shared with SVM and is resolved
        // by the other (VMX-only) names in the file.
        let o = " kvm-1 [000] 5.000001: kvm_exit: reason apic_access rip 0x1\n kvm-1 [000] 5.000002: kvm_entry: vcpu 0\n \
                 kvm-1 [000] 5.000003: kvm_exit: reason cpuid rip 0x1\n";
        let s = exit_stats(o);
        assert_eq!(get(&s.by_reason, "APIC_ACCESS"), Some(1));
        assert_eq!(get(&s.by_reason, "CPUID"), Some(1));
        assert_eq!(get(&s.max_exit_to_entry_ns, "APIC_ACCESS"), Some(1_000));
    }

    #[test]
    fn truncated_and_missing_entries() {
        // A kvm_exit cut before its reason, and an exit whose entry never comes.
        let t =
            " a-7 [000] 1.000001: kvm_exit: reason HLT rip 0x1\n a-7 [000] 1.000002: kvm_exit\n";
        let s = exit_stats(t);
        assert_eq!(s.exits, 2);
        assert_eq!(get(&s.by_reason, "(none)"), Some(1));
        assert!(s.max_exit_to_entry_ns.is_empty());
    }
}
