//! Event text (what follows `event:`) to typed records, one parser per tracepoint, as the
//! kernel's print formats (Linux 3.x to 6.18) and libtraceevent's plugins (`trace-cmd report`)
//! write it. A field the text does not show stays absent (`None` in the record).

use kvmtrace_common::{ev, limits, Comm, Kind, Payload};

use super::line::next_token;
use super::reasons;
use super::APIC_TIMER_FN_MARKER;
use crate::names::{self, ISA_SVM, ISA_VMX};

/// A parsed event.
#[derive(Debug, Clone)]
pub(super) struct Parsed<'a> {
    pub payload: Payload,
    /// The vCPU id the event names (`kvm_exit`, `kvm_entry`).
    pub vcpu: Option<u32>,
    /// Other tasks the event names, with their comm (sched events): (tid, comm).
    pub names: [Option<(u32, &'a str)>; 2],
    /// `kvm_exit`: what the line says about the exit's isa.
    pub exit_isa: Option<ExitIsa>,
}

impl<'a> Parsed<'a> {
    fn of(payload: Payload) -> Parsed<'a> {
        Parsed {
            payload,
            vcpu: None,
            names: [None, None],
            exit_isa: None,
        }
    }

    pub fn kind(&self) -> Kind {
        self.payload.kind()
    }

    /// The tracefs system of the event (`kvm` for `kvm_other` records of `kvm:*` events).
    pub fn system(&self) -> &'static str {
        match self.payload {
            Payload::KvmOther(o) => o.event().map_or("kvm", |e| e.system),
            p => p.kind().category(),
        }
    }
}

/// What a `kvm_exit` line says about its isa. When it says nothing the importer decides by
/// the other exits of the same text (`import`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExitIsa {
    /// An unambiguous name, a VMX flag (`FAILED_VMENTRY`) or the `isa` field: the record has
    /// its isa.
    Said(u64),
    /// A name both isas have (Linux 2.6.3x's lower-case VMX names `cpuid`, `invlpg`,
    /// `hypercall`, `wbinvd`, `task_switch`): its code in each.
    Ambiguous { vmx: u32, svm: u32 },
    /// A number (`0x4e`, libtraceevent's `UNKNOWN (78)`): the record has the code only.
    Unknown,
}

/// Why an event's text was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fail {
    /// Not a tracepoint kvmtrace knows.
    Unknown,
    /// A field is absent or unreadable.
    Field(&'static str),
    /// A `kvm_exit` reason in neither table and not a number.
    ExitReason(String),
    /// A number that names a CPU, vCPU, task, vector... beyond what can exist.
    Range(&'static str),
}

/// `v` when it is at most `max`, else `Fail::Range(what)`: numbers the text gives that are
/// later used to find a CPU, vCPU or task are bounded here, not trusted.
fn bounded(v: u64, max: u64, what: &'static str) -> Result<u64, Fail> {
    if v <= max {
        Ok(v)
    } else {
        Err(Fail::Range(what))
    }
}

const U32: u64 = u32::MAX as u64;
/// Highest CPU number a text may name (`kvmtrace_common::limits::MAX_CPUS` CPUs).
const MAX_CPU: u64 = limits::MAX_CPUS as u64 - 1;
/// Interrupt vectors are 8-bit.
const MAX_VECTOR: u64 = 0xff;

type Parser = for<'a> fn(&'a str) -> Result<Parsed<'a>, Fail>;

/// The parser of each tracepoint kvmtrace records, by name.
const PARSERS: &[(Kind, Parser)] = &[
    (Kind::KvmExit, kvm_exit),
    (Kind::KvmEntry, kvm_entry),
    (Kind::KvmUserspaceExit, kvm_userspace_exit),
    (Kind::KvmInjVirq, kvm_inj_virq),
    (Kind::KvmApicAcceptIrq, kvm_apic_accept_irq),
    (Kind::KvmSetIrq, kvm_set_irq),
    (Kind::KvmMsiSetIrq, kvm_msi_set_irq),
    (Kind::KvmPicSetIrq, kvm_pic_set_irq),
    (Kind::KvmIoapicSetIrq, kvm_ioapic_set_irq),
    (Kind::KvmVcpuWakeup, kvm_vcpu_wakeup),
    (Kind::KvmPio, kvm_pio),
    (Kind::KvmMmio, kvm_mmio),
    (Kind::KvmMsr, kvm_msr),
    (Kind::SchedSwitch, sched_switch),
    (Kind::SchedWakeup, sched_wakeup),
    (Kind::SchedWakeupNew, sched_wakeup_new),
    (Kind::SchedMigrateTask, sched_migrate_task),
    (Kind::IrqHandlerEntry, irq_handler_entry),
    (Kind::IrqHandlerExit, irq_handler_exit),
    (Kind::SoftirqEntry, softirq_entry),
    (Kind::SoftirqExit, softirq_exit),
    (Kind::LocalTimerEntry, local_timer_entry),
    (Kind::LocalTimerExit, local_timer_exit),
    (Kind::RescheduleEntry, reschedule_entry),
    (Kind::RescheduleExit, reschedule_exit),
    (Kind::CallFunctionEntry, call_function_entry),
    (Kind::CallFunctionExit, call_function_exit),
    (Kind::CallFunctionSingleEntry, call_function_single_entry),
    (Kind::CallFunctionSingleExit, call_function_single_exit),
    (Kind::HrtimerExpireEntry, hrtimer_expire_entry),
    (Kind::HrtimerExpireExit, hrtimer_expire_exit),
    (Kind::ContentionBegin, contention_begin),
    (Kind::ContentionEnd, contention_end),
    (Kind::KvmApicvAcceptIrq, kvm_apicv_accept_irq),
    (Kind::KvmApicIpi, kvm_apic_ipi),
    (Kind::KvmWaitLapicExpire, kvm_wait_lapic_expire),
    (Kind::HrtimerStart, hrtimer_start),
    (Kind::KvmPageFault, kvm_page_fault),
    (Kind::KvmEoi, kvm_eoi),
];

/// Parses the text of event `name`: a tracepoint kvmtrace has a kind for, or any other KVM
/// tracepoint (a `kvm_other` record with the first three numbers of its text).
pub(super) fn parse<'a>(name: &str, body: &'a str) -> Result<Parsed<'a>, Fail> {
    match PARSERS.iter().find(|(k, _)| k.name() == name) {
        Some((_, parser)) => parser(body),
        None => ev::KvmOther::named(name, first_numbers(body))
            .map(|r| Parsed::of(Payload::KvmOther(r)))
            .ok_or(Fail::Unknown),
    }
}

/// Is `name` a tracepoint this importer reads (a kind of its own, or a KVM tracepoint)?
pub(super) fn is_known(name: &str) -> bool {
    PARSERS.iter().any(|(k, _)| k.name() == name)
        || kvmtrace_common::kvm_events::kvm_event_id(name).is_some()
}

/// The first three numbers of an event's text (`0x..` hex or decimal, `key=value` values;
/// words, `a:b` pairs and bare hex are skipped).
fn first_numbers(body: &str) -> [Option<u64>; 3] {
    let mut out = [None; 3];
    let mut n = 0;
    for tok in body.split_whitespace() {
        let t = tok.trim_matches(|c: char| ",;()[]{}\"'".contains(c));
        let t = t.rsplit_once('=').map_or(t, |(_, v)| v);
        let t = t.trim_end_matches(':');
        if t.contains(':') {
            continue;
        }
        if let Some(v) = num(t) {
            out[n] = Some(v);
            n += 1;
            if n == out.len() {
                break;
            }
        }
    }
    out
}

/// A required field: `Fail::Field(name)` when absent.
fn need<T>(v: Option<T>, field: &'static str) -> Result<T, Fail> {
    v.ok_or(Fail::Field(field))
}

/// `kvm_exit`, in any of its layouts:
/// - 5.12+: `vcpu 0 reason EXTERNAL_INTERRUPT rip 0x.. info1 0x.. info2 0x.. intr_info 0x..
///   error_code 0x..` (some 6.x add `requests 0x..`);
/// - 5.x: `vcpu 0 reason HLT rip 0x.. info 0 0`;
/// - before: `reason HLT rip 0x.. info 0 0`; 2.6.3x: `reason apic_access rip 0x..`;
///   libtraceevent's kvm plugin (trace-cmd, perf) prints this one too, `reason UNKNOWN (78)`
///   for a code it has no name for;
/// - raw fields (`trace-cmd report -R`, other tools): `exit_reason=30 guest_rip=0x.. isa=1
///   info1=.. info2=..`, in any order.
///
/// Fields are found by their names, in any order; the reason is the words after `reason` up
/// to the next field name: a VMX name (maybe followed by `FAILED_VMENTRY`), an SVM name
/// (`npf`, `GP excp`, `EXIT_NPF`), or a number (`0x4e`, `UNKNOWN (78)`).
fn kvm_exit(body: &str) -> Result<Parsed<'_>, Fail> {
    if eq_start(body, "exit_reason").is_some() {
        return kvm_exit_raw(body);
    }
    const KEYS: &[&str] = &[
        "vcpu",
        "rip",
        "info",
        "info1",
        "info2",
        "intr_info",
        "intr",
        "error_code",
        "requests",
        "isa",
    ];
    let words: Vec<&str> = body
        .split_whitespace()
        .map(|t| t.trim_end_matches(','))
        .filter(|t| !t.is_empty())
        .collect();
    let at = words
        .iter()
        .position(|w| *w == "reason")
        .ok_or(Fail::Field("exit_reason"))?;
    let reason: Vec<&str> = words[at + 1..]
        .iter()
        .take_while(|w| !KEYS.contains(w))
        .copied()
        .collect();
    if reason.is_empty() {
        return Err(Fail::Field("exit_reason"));
    }
    let (code, exit_isa) = exit_reason(&reason.join(" "))?;
    let vcpu_id = vcpu_word(body)?;
    let mut p = Parsed::of(Payload::KvmExit(ev::KvmExit {
        exit_reason: u64::from(code),
        isa: said(exit_isa),
        vcpu_id,
        guest_rip: word_after(body, "rip").and_then(hex),
        info1: word_after(body, "info1")
            .or_else(|| word_after(body, "info"))
            .and_then(hex),
    }));
    p.vcpu = vcpu_id.and_then(|v| u32::try_from(v).ok());
    p.exit_isa = Some(exit_isa);
    Ok(p)
}

/// `kvm_exit` as raw `field=value` pairs.
fn kvm_exit_raw(body: &str) -> Result<Parsed<'_>, Fail> {
    const K: &[&str] = &[
        "exit_reason",
        "guest_rip",
        "isa",
        "info1",
        "info2",
        "intr_info",
        "error_code",
        "vcpu_id",
        "requests",
    ];
    let code = need(eq(body, "exit_reason", K).and_then(num), "exit_reason")?;
    let code = bounded(code, U32, "exit reason")? as u32;
    let isa = eq(body, "isa", K)
        .and_then(num)
        .filter(|i| *i == ISA_VMX || *i == ISA_SVM);
    let vcpu_id = match eq(body, "vcpu_id", K).and_then(num) {
        Some(v) => Some(bounded(v, U32, "vcpu id")?),
        None => None,
    };
    let mut p = Parsed::of(Payload::KvmExit(ev::KvmExit {
        exit_reason: u64::from(code),
        isa,
        vcpu_id,
        guest_rip: eq(body, "guest_rip", K).and_then(num),
        info1: eq(body, "info1", K).and_then(num),
    }));
    p.vcpu = vcpu_id.and_then(|v| u32::try_from(v).ok());
    p.exit_isa = Some(isa.map_or(ExitIsa::Unknown, ExitIsa::Said));
    Ok(p)
}

/// The isa a line says.
fn said(e: ExitIsa) -> Option<u64> {
    match e {
        ExitIsa::Said(isa) => Some(isa),
        _ => None,
    }
}

/// `vcpu N` (`vcpu N,` / `vcpu N:`): None when absent or not a number, a range failure when
/// it cannot be a vCPU id.
fn vcpu_word(body: &str) -> Result<Option<u64>, Fail> {
    match word_after(body, "vcpu")
        .map(|v| v.trim_end_matches(':'))
        .and_then(num)
    {
        Some(v) => Ok(Some(bounded(v, U32, "vcpu id")?)),
        None => Ok(None),
    }
}

/// (code, what it says about the isa) of a printed exit reason.
fn exit_reason(text: &str) -> Result<(u32, ExitIsa), Fail> {
    let mut name = text;
    let mut flags = 0u32;
    'flags: loop {
        for &(flag, bit) in names::VMX_EXIT_FLAGS {
            if let Some(rest) = name.strip_suffix(flag) {
                if rest.ends_with(' ') {
                    name = rest.trim_end();
                    flags |= bit;
                    continue 'flags;
                }
            }
        }
        break;
    }
    if let Some(n) = names::exit_reason_spelling(name) {
        return Ok(match (n.vmx, n.svm) {
            (Some(vmx), Some(_)) if flags != 0 => (vmx | flags, ExitIsa::Said(ISA_VMX)),
            (Some(vmx), Some(svm)) => (vmx, ExitIsa::Ambiguous { vmx, svm }),
            (Some(vmx), None) => (vmx | flags, ExitIsa::Said(ISA_VMX)),
            (None, Some(svm)) => (svm, ExitIsa::Said(ISA_SVM)),
            (None, None) => return Err(Fail::ExitReason(name.chars().take(40).collect())),
        });
    }
    let number = name
        .strip_prefix("UNKNOWN (")
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or(name);
    match num(number).and_then(|n| u32::try_from(n).ok()) {
        Some(code) if flags != 0 => Ok((code | flags, ExitIsa::Said(ISA_VMX))),
        Some(code) => Ok((code, ExitIsa::Unknown)),
        None => Err(Fail::ExitReason(name.chars().take(40).collect())),
    }
}

/// `kvm_entry`: "vcpu 0, rip 0xffffffff81000000 intr_info 0x00000000 error_code 0x00000000"
/// (rip since ~5.9, intr_info since 6.18), "[immediate exit]" appended when KVM forces an
/// exit right after the entry (since ~6.9); older "vcpu 0".
fn kvm_entry(body: &str) -> Result<Parsed<'_>, Fail> {
    let rec = if eq_start(body, "vcpu_id").is_some() {
        // Raw fields: "vcpu_id=0 rip=0x.. immediate_exit=0".
        const K: &[&str] = &["vcpu_id", "rip", "intr_info", "immediate_exit"];
        ev::KvmEntry {
            vcpu_id: Some(need(eq(body, "vcpu_id", K).and_then(num), "vcpu")?),
            rip: eq(body, "rip", K).and_then(num),
            intr_info: eq(body, "intr_info", K).and_then(num),
            immediate_exit: eq(body, "immediate_exit", K).and_then(num),
        }
    } else {
        ev::KvmEntry {
            vcpu_id: Some(need(vcpu_word(body)?, "vcpu")?),
            rip: word_after(body, "rip").and_then(hex),
            intr_info: word_after(body, "intr_info").and_then(hex),
            // Printed only when set: its absence does not say the kernel has the field.
            immediate_exit: body.contains("[immediate exit]").then_some(1),
        }
    };
    let vcpu = bounded(rec.vcpu_id.unwrap_or(0), U32, "vcpu id")?;
    let mut p = Parsed::of(Payload::KvmEntry(rec));
    p.vcpu = u32::try_from(vcpu).ok();
    Ok(p)
}

/// `kvm_userspace_exit`: `reason KVM_EXIT_IO (2)`; on an error return from KVM_RUN, 6.x
/// prints `reason restart (4)` (-EINTR) or `reason error (14)` (the errno), older kernels
/// `reason error (4)`; a reason without a name prints as a number (`reason 0x27 (39)`).
fn kvm_userspace_exit(body: &str) -> Result<Parsed<'_>, Fail> {
    let rest = need(body.strip_prefix("reason "), "reason")?.trim();
    let (name, paren) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((name, n)) => (name.trim(), Some(need(num(n), "errno")?)),
        None => (rest, None),
    };
    let rec = match name {
        "restart" | "error" => ev::KvmUserspaceExit {
            reason: None,
            // The errno field is signed and negative.
            errno: Some(0u64.wrapping_sub(need(paren, "errno")?)),
        },
        _ => {
            let reason = match name.strip_prefix("KVM_EXIT_") {
                Some(n) => names::kvm_exit_code(n).or(paren),
                None => num(name),
            };
            ev::KvmUserspaceExit {
                reason: Some(need(reason, "reason")?),
                errno: paren.map(|_| 0),
            }
        }
    };
    Ok(Parsed::of(Payload::KvmUserspaceExit(rec)))
}

/// `kvm_inj_virq`: "IRQ 0xec", "Soft/INTn 0x80 [reinjected]" (6.x); "irq 236" (older).
fn kvm_inj_virq(body: &str) -> Result<Parsed<'_>, Fail> {
    let (first, rest) = need(next_token(body), "vector")?;
    let (v, _) = need(next_token(rest), "vector")?;
    let vector = bounded(need(num(v), "vector")?, MAX_VECTOR, "vector")?;
    let rec = match first {
        "IRQ" | "Soft/INTn" => ev::KvmInjVirq {
            vector,
            soft: Some(u64::from(first == "Soft/INTn")),
            reinjected: Some(u64::from(body.contains("[reinjected]"))),
        },
        "irq" => ev::KvmInjVirq {
            vector,
            soft: None,
            reinjected: None,
        },
        _ => return Err(Fail::Field("vector")),
    };
    Ok(Parsed::of(Payload::KvmInjVirq(rec)))
}

/// `kvm_apic_accept_irq` and `kvm_apicv_accept_irq`: "apicid 0 vec 236 (Fixed|edge)"
/// (older kernels add " (coalesced)" to the first): (apicid, vec, dm, tm).
fn accept(body: &str) -> Result<(u64, u64, Option<u64>, Option<u64>), Fail> {
    let apicid = need(word_after(body, "apicid").and_then(hex), "apicid")?;
    let apicid = bounded(apicid, U32, "apic id")?;
    let vec = need(word_after(body, "vec").and_then(num), "vec")?;
    let vec = bounded(vec, MAX_VECTOR, "vector")?;
    let (mut dm, mut tm) = (None, None);
    if let Some(g) = group(body) {
        let mut parts = g.split('|');
        dm = parts
            .next()
            .and_then(reasons::delivery_mode)
            .map(|m| m << 8);
        tm = parts.next().and_then(trigger);
    }
    Ok((apicid, vec, dm, tm))
}

fn kvm_apic_accept_irq(body: &str) -> Result<Parsed<'_>, Fail> {
    let (apicid, vec, dm, tm) = accept(body)?;
    Ok(Parsed::of(Payload::KvmApicAcceptIrq(
        ev::KvmApicAcceptIrq {
            apicid,
            vec,
            dm,
            tm,
        },
    )))
}

fn kvm_apicv_accept_irq(body: &str) -> Result<Parsed<'_>, Fail> {
    let (apicid, vec, dm, tm) = accept(body)?;
    Ok(Parsed::of(Payload::KvmApicvAcceptIrq(
        ev::KvmApicvAcceptIrq {
            apicid,
            vec,
            dm,
            tm,
        },
    )))
}

/// `kvm_apic_ipi`: "dst 1 vec 253 (Fixed|physical|assert|edge|dst)", rebuilt into the ICR's
/// low word (vector, delivery mode << 8, logical << 11, assert << 14, level << 15,
/// shorthand << 18).
fn kvm_apic_ipi(body: &str) -> Result<Parsed<'_>, Fail> {
    let dest_id = need(word_after(body, "dst").and_then(hex), "dest_id")?;
    let vec = need(word_after(body, "vec").and_then(num), "icr_low")?;
    let g = need(group(body), "icr_low")?;
    let parts: Vec<&str> = g.split('|').collect();
    let mode = need(
        parts.first().and_then(|m| reasons::delivery_mode(m)),
        "icr_low",
    )?;
    let shorthand = match parts.get(4).copied() {
        Some("self") => 1,
        Some("all") => 2,
        Some("all-self") => 3,
        _ => 0,
    };
    let icr_low = (vec & 0xff)
        | (mode << 8)
        | (u64::from(parts.contains(&"logical")) << 11)
        | (u64::from(parts.contains(&"assert")) << 14)
        | (u64::from(parts.contains(&"level")) << 15)
        | (shorthand << 18);
    Ok(Parsed::of(Payload::KvmApicIpi(ev::KvmApicIpi {
        icr_low,
        dest_id,
    })))
}

/// `kvm_wait_lapic_expire`: "vcpu 0: delta -1234 (early)".
fn kvm_wait_lapic_expire(body: &str) -> Result<Parsed<'_>, Fail> {
    let vcpu = need(vcpu_word(body)?, "vcpu_id")?;
    let delta = need(word_after(body, "delta").and_then(num), "delta")?;
    let mut p = Parsed::of(Payload::KvmWaitLapicExpire(ev::KvmWaitLapicExpire {
        vcpu_id: vcpu,
        delta,
    }));
    p.vcpu = u32::try_from(vcpu).ok();
    Ok(p)
}

/// `hrtimer_start`: "hrtimer=0xffff... function=apic_timer_fn [kvm] expires=123
/// softexpires=123 mode=ABS|HARD was_armed=0" (`was_armed` since 6.x backports; older
/// kernels: no mode).
fn hrtimer_start(body: &str) -> Result<Parsed<'_>, Fail> {
    const K: &[&str] = &[
        "hrtimer",
        "function",
        "expires",
        "softexpires",
        "mode",
        "was_armed",
    ];
    let func = need(eq(body, "function", K), "function")?;
    Ok(Parsed::of(Payload::HrtimerStart(ev::HrtimerStart {
        hrtimer: need(eq(body, "hrtimer", K).and_then(hex), "hrtimer")?,
        function: function_marker(func),
        expires: need(eq(body, "expires", K).and_then(num), "expires")?,
        mode: eq(body, "mode", K).and_then(reasons::hrtimer_mode),
    })))
}

/// `kvm_page_fault`: 6.x "vcpu 0 rip 0xffffffff81000000 address 0x00000000fee00000
/// error_code 0x181"; older "address fee00000 error_code 181".
fn kvm_page_fault(body: &str) -> Result<Parsed<'_>, Fail> {
    let vcpu_id = vcpu_word(body)?;
    let mut p = Parsed::of(Payload::KvmPageFault(ev::KvmPageFault {
        vcpu_id,
        guest_rip: word_after(body, "rip").and_then(hex),
        fault_address: need(word_after(body, "address").and_then(hex), "fault_address")?,
        error_code: need(word_after(body, "error_code").and_then(hex), "error_code")?,
    }));
    p.vcpu = vcpu_id.and_then(|v| u32::try_from(v).ok());
    Ok(p)
}

/// `kvm_eoi`: "apicid 0 vector 236".
fn kvm_eoi(body: &str) -> Result<Parsed<'_>, Fail> {
    Ok(Parsed::of(Payload::KvmEoi(ev::KvmEoi {
        apicid: bounded(
            need(word_after(body, "apicid").and_then(hex), "apicid")?,
            U32,
            "apic id",
        )?,
        // A signed field: -1 when no vector was in service.
        vector: match need(word_after(body, "vector").and_then(num), "vector")? {
            u64::MAX => u64::MAX,
            v => bounded(v, MAX_VECTOR, "vector")?,
        },
    })))
}

/// `kvm_set_irq`: "gsi 0 level 1 source 0".
fn kvm_set_irq(body: &str) -> Result<Parsed<'_>, Fail> {
    Ok(Parsed::of(Payload::KvmSetIrq(ev::KvmSetIrq {
        gsi: need(word_after(body, "gsi").and_then(num), "gsi")?,
        level: need(word_after(body, "level").and_then(num), "level")?,
        irq_source_id: word_after(body, "source").and_then(num),
    })))
}

/// `kvm_msi_set_irq`: "dst 0 vec 34 (Fixed|physical|edge)", "|rh" appended for redirection
/// hint; rebuilt into the raw address and data.
fn kvm_msi_set_irq(body: &str) -> Result<Parsed<'_>, Fail> {
    let dst = need(word_after(body, "dst").and_then(hex), "dst")?;
    let vec = need(word_after(body, "vec").and_then(num), "vec")?;
    let g = need(group(body), "data")?;
    let parts: Vec<&str> = g.split('|').collect();
    let mode = need(
        parts.first().and_then(|m| reasons::delivery_mode(m)),
        "data",
    )?;
    let logical = parts.contains(&"logical");
    let level = parts.contains(&"level");
    let rh = parts.contains(&"rh");
    // The format prints (u8)(address >> 12) | ((address >> 32) & 0xffffff00).
    let address = 0xfee0_0000
        | ((dst & 0xff) << 12)
        | ((dst & !0xff) << 32)
        | (u64::from(logical) << 2)
        | (u64::from(rh) << 3);
    let data = (vec & 0xff) | (mode << 8) | (u64::from(level) << 15);
    Ok(Parsed::of(Payload::KvmMsiSetIrq(ev::KvmMsiSetIrq {
        address,
        data,
    })))
}

/// `kvm_pic_set_irq`: "chip 0 pin 3 (edge|masked) (coalesced)"; older "chip PIC master pin 3
/// (edge)". Only this pin's IMR bit is printed.
fn kvm_pic_set_irq(body: &str) -> Result<Parsed<'_>, Fail> {
    let chip = need(between(body, "chip ", " pin "), "chip")?;
    let chip = need(num(chip).or_else(|| reasons::irqchip(chip)), "chip")?;
    let pin = need(word_after(body, "pin").and_then(num), "pin")?;
    let g = need(group(body), "imr")?;
    let masked = g.split('|').any(|s| s == "masked");
    Ok(Parsed::of(Payload::KvmPicSetIrq(ev::KvmPicSetIrq {
        chip,
        pin,
        imr: if masked { 1 << (pin & 7) } else { 0 },
        coalesced: u64::from(body.contains("(coalesced)")),
    })))
}

/// `kvm_ioapic_set_irq`: "pin 4 dst 1 vec 36 (Fixed|physical|edge|masked) (coalesced)",
/// rebuilt into the raw redirection entry.
fn kvm_ioapic_set_irq(body: &str) -> Result<Parsed<'_>, Fail> {
    let pin = need(word_after(body, "pin").and_then(num), "pin")?;
    let dst = need(word_after(body, "dst").and_then(hex), "e")?;
    let vec = need(word_after(body, "vec").and_then(num), "e")?;
    let g = need(group(body), "e")?;
    let parts: Vec<&str> = g.split('|').collect();
    let mode = need(parts.first().and_then(|m| reasons::delivery_mode(m)), "e")?;
    let e = ((dst & 0xff) << 56)
        | (vec & 0xff)
        | (mode << 8)
        | (u64::from(parts.contains(&"logical")) << 11)
        | (u64::from(parts.contains(&"level")) << 15)
        | (u64::from(parts.contains(&"masked")) << 16);
    Ok(Parsed::of(Payload::KvmIoapicSetIrq(ev::KvmIoapicSetIrq {
        e,
        pin,
        coalesced: u64::from(body.contains("(coalesced)")),
    })))
}

/// `kvm_vcpu_wakeup`: "wait time 12345 ns, polling valid".
fn kvm_vcpu_wakeup(body: &str) -> Result<Parsed<'_>, Fail> {
    let (how, _) = need(next_token(body), "waited")?;
    let waited = match how {
        "wait" => 1,
        "poll" => 0,
        _ => return Err(Fail::Field("waited")),
    };
    Ok(Parsed::of(Payload::KvmVcpuWakeup(ev::KvmVcpuWakeup {
        ns: need(word_after(body, "time").and_then(num), "ns")?,
        waited,
        valid: word_after(body, "polling").and_then(|v| match v {
            "valid" => Some(1),
            "invalid" => Some(0),
            _ => None,
        }),
    })))
}

/// `kvm_pio`: "pio_write at 0x80 size 1 count 1 val 0x0 ".
fn kvm_pio(body: &str) -> Result<Parsed<'_>, Fail> {
    let rw = match next_token(body).map(|t| t.0) {
        Some("pio_write") => 1,
        Some("pio_read") => 0,
        _ => return Err(Fail::Field("rw")),
    };
    Ok(Parsed::of(Payload::KvmPio(ev::KvmPio {
        rw,
        port: need(word_after(body, "at").and_then(hex), "port")?,
        size: need(word_after(body, "size").and_then(num), "size")?,
        val: word_after(body, "val").and_then(hex),
    })))
}

/// `kvm_mmio`: "mmio write len 4 gpa 0xfee000b0 val 0x0".
fn kvm_mmio(body: &str) -> Result<Parsed<'_>, Fail> {
    let ty = need(word_after(body, "mmio"), "type")?;
    Ok(Parsed::of(Payload::KvmMmio(ev::KvmMmio {
        mmio_type: need(reasons::mmio_type(ty).or_else(|| num(ty)), "type")?,
        len: need(word_after(body, "len").and_then(num), "len")?,
        gpa: need(word_after(body, "gpa").and_then(hex), "gpa")?,
        val: word_after(body, "val").and_then(hex),
    })))
}

/// `kvm_msr`: "msr_write 6e0 = 0x1234" plus " (#GP)" when it faulted.
fn kvm_msr(body: &str) -> Result<Parsed<'_>, Fail> {
    let (op, rest) = need(next_token(body), "write")?;
    let write = match op {
        "msr_write" => 1,
        "msr_read" => 0,
        _ => return Err(Fail::Field("write")),
    };
    let (ecx, _) = need(next_token(rest), "ecx")?;
    Ok(Parsed::of(Payload::KvmMsr(ev::KvmMsr {
        write,
        ecx: need(hex(ecx), "ecx")?,
        data: need(word_after(body, "=").and_then(hex), "data")?,
        exception: u64::from(body.contains("(#GP)")),
    })))
}

/// `sched_switch`: the kernel's `prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==>
/// next_comm=b next_pid=2 next_prio=120`, or libtraceevent's sched_switch plugin (trace-cmd,
/// older perf): `a:1 [120] S ==> b:2 [120]`.
fn sched_switch(body: &str) -> Result<Parsed<'_>, Fail> {
    let f = Fail::Field;
    let (prev_comm, prev_pid, state, next_comm, next_pid) = if eq_start(body, "prev_comm").is_some()
    {
        const K: &[&str] = &[
            "prev_comm",
            "prev_pid",
            "prev_prio",
            "prev_state",
            "next_comm",
            "next_pid",
            "next_prio",
        ];
        let state = eq(body, "prev_state", K).ok_or(f("prev_state"))?;
        let state = state.strip_suffix("==>").unwrap_or(state).trim();
        (
            eq(body, "prev_comm", K).ok_or(f("prev_comm"))?,
            eq(body, "prev_pid", K).and_then(num).ok_or(f("prev_pid"))?,
            reasons::prev_state(state, false).ok_or(f("prev_state"))?,
            eq(body, "next_comm", K).ok_or(f("next_comm"))?,
            eq(body, "next_pid", K).and_then(num).ok_or(f("next_pid"))?,
        )
    } else {
        let (left, right) = body.split_once(" ==> ").ok_or(f("prev_pid"))?;
        let (left, state) = left.trim().rsplit_once(' ').ok_or(f("prev_state"))?;
        let (prev_comm, prev_pid) = plugin_task(left).ok_or(f("prev_pid"))?;
        let (next_comm, next_pid) = plugin_task(right).ok_or(f("next_pid"))?;
        let state = reasons::prev_state(state, true).ok_or(f("prev_state"))?;
        (prev_comm, prev_pid, state, next_comm, next_pid)
    };
    let prev_pid = bounded(prev_pid, U32, "pid")?;
    let next_pid = bounded(next_pid, U32, "pid")?;
    let mut p = Parsed::of(Payload::SchedSwitch(ev::SchedSwitch {
        prev_pid,
        prev_state: state,
        next_pid,
        next_comm: Comm::new(next_comm),
    }));
    p.names = [
        u32::try_from(prev_pid).ok().map(|t| (t, prev_comm)),
        u32::try_from(next_pid).ok().map(|t| (t, next_comm)),
    ];
    Ok(p)
}

/// What a `sched_wakeup[_new]` says: (comm, pid, prio, target cpu).
type Woken<'a> = (&'a str, u64, Option<u64>, Option<u64>);

/// The task a `sched_wakeup[_new]` names: `comm=x pid=1 prio=120 target_cpu=001` (kernels
/// before 4.x also print `success=1`), or the plugin's `x:1 [120] CPU:001` (`success=1` in
/// between on older kernels).
fn woken(body: &str) -> Result<Woken<'_>, Fail> {
    let (comm, pid, prio, cpu) = woken_fields(body)?;
    let cpu = match cpu {
        Some(c) => Some(bounded(c, MAX_CPU, "cpu")?),
        None => None,
    };
    Ok((comm, bounded(pid, U32, "pid")?, prio, cpu))
}

fn woken_fields(body: &str) -> Result<Woken<'_>, Fail> {
    let f = Fail::Field;
    Ok(if eq_start(body, "comm").is_some() {
        const K: &[&str] = &["comm", "pid", "prio", "success", "target_cpu"];
        (
            eq(body, "comm", K).ok_or(f("comm"))?,
            eq(body, "pid", K).and_then(num).ok_or(f("pid"))?,
            eq(body, "prio", K).and_then(num),
            eq(body, "target_cpu", K).and_then(num),
        )
    } else {
        let end = [" [", " success=", " CPU:"]
            .iter()
            .filter_map(|m| body.find(m))
            .min()
            .unwrap_or(body.len());
        let (comm, pid) = plugin_task(&body[..end]).ok_or(f("pid"))?;
        let rest = &body[end..];
        let prio = between(rest, "[", "]").and_then(num);
        let cpu = rest
            .find("CPU:")
            .and_then(|i| next_token(&rest[i + "CPU:".len()..]).and_then(|(c, _)| num(c)));
        (comm, pid, prio, cpu)
    })
}

fn sched_wakeup(body: &str) -> Result<Parsed<'_>, Fail> {
    let (comm, pid, prio, target_cpu) = woken(body)?;
    let mut p = Parsed::of(Payload::SchedWakeup(ev::SchedWakeup {
        pid,
        target_cpu,
        prio,
        comm: Comm::new(comm),
    }));
    p.names[0] = u32::try_from(pid).ok().map(|t| (t, comm));
    Ok(p)
}

fn sched_wakeup_new(body: &str) -> Result<Parsed<'_>, Fail> {
    let (comm, pid, prio, target_cpu) = woken(body)?;
    let mut p = Parsed::of(Payload::SchedWakeupNew(ev::SchedWakeupNew {
        pid,
        target_cpu,
        prio,
        comm: Comm::new(comm),
    }));
    p.names[0] = u32::try_from(pid).ok().map(|t| (t, comm));
    Ok(p)
}

/// `sched_migrate_task`: "comm=x pid=1 prio=120 orig_cpu=1 dest_cpu=0".
fn sched_migrate_task(body: &str) -> Result<Parsed<'_>, Fail> {
    const K: &[&str] = &["comm", "pid", "prio", "orig_cpu", "dest_cpu"];
    let pid = bounded(need(eq(body, "pid", K).and_then(num), "pid")?, U32, "pid")?;
    let orig_cpu = need(eq(body, "orig_cpu", K).and_then(num), "orig_cpu")?;
    let dest_cpu = need(eq(body, "dest_cpu", K).and_then(num), "dest_cpu")?;
    let mut p = Parsed::of(Payload::SchedMigrateTask(ev::SchedMigrateTask {
        pid,
        orig_cpu: bounded(orig_cpu, MAX_CPU, "cpu")?,
        dest_cpu: bounded(dest_cpu, MAX_CPU, "cpu")?,
    }));
    if let (Ok(pid), Some(comm)) = (u32::try_from(pid), eq(body, "comm", K)) {
        p.names[0] = Some((pid, comm));
    }
    Ok(p)
}

/// `irq_handler_entry`: "irq=24 name=virtio0-input.0".
fn irq_handler_entry(body: &str) -> Result<Parsed<'_>, Fail> {
    let irq = need(eq(body, "irq", &["irq", "name"]).and_then(num), "irq")?;
    let irq = bounded(irq, U32, "irq")?;
    Ok(Parsed::of(Payload::IrqHandlerEntry(ev::IrqHandlerEntry {
        irq,
    })))
}

/// `irq_handler_exit`: "irq=24 ret=handled".
fn irq_handler_exit(body: &str) -> Result<Parsed<'_>, Fail> {
    const K: &[&str] = &["irq", "ret"];
    let ret = eq(body, "ret", K).and_then(|r| match r {
        "handled" => Some(1),
        "unhandled" => Some(0),
        other => num(other),
    });
    Ok(Parsed::of(Payload::IrqHandlerExit(ev::IrqHandlerExit {
        irq: bounded(need(eq(body, "irq", K).and_then(num), "irq")?, U32, "irq")?,
        ret: need(ret, "ret")?,
    })))
}

/// A softirq's vector: "vec=3 [action=NET_RX]" (or only the action).
fn softirq_vec(body: &str) -> Result<u64, Fail> {
    const K: &[&str] = &["vec", "action"];
    let v = eq(body, "vec", K).and_then(num).or_else(|| {
        eq(body, "action", K)
            .map(|a| a.trim_end_matches(']'))
            .and_then(names::softirq_vec)
    });
    bounded(need(v, "vec")?, U32, "softirq vector")
}

fn softirq_entry(body: &str) -> Result<Parsed<'_>, Fail> {
    let vec = softirq_vec(body)?;
    Ok(Parsed::of(Payload::SoftirqEntry(ev::SoftirqEntry { vec })))
}

fn softirq_exit(body: &str) -> Result<Parsed<'_>, Fail> {
    let vec = softirq_vec(body)?;
    Ok(Parsed::of(Payload::SoftirqExit(ev::SoftirqExit { vec })))
}

/// An APIC vector handler's "vector=236".
fn vector(body: &str) -> Result<u64, Fail> {
    let v = need(eq(body, "vector", &["vector"]).and_then(num), "vector")?;
    bounded(v, MAX_VECTOR, "vector")
}

macro_rules! vector_parsers {
    ($($f:ident => $variant:ident),* $(,)?) => {$(
        fn $f(body: &str) -> Result<Parsed<'_>, Fail> {
            let vector = vector(body)?;
            Ok(Parsed::of(Payload::$variant(ev::$variant { vector })))
        }
    )*};
}

vector_parsers! {
    local_timer_entry => LocalTimerEntry,
    local_timer_exit => LocalTimerExit,
    reschedule_entry => RescheduleEntry,
    reschedule_exit => RescheduleExit,
    call_function_entry => CallFunctionEntry,
    call_function_exit => CallFunctionExit,
    call_function_single_entry => CallFunctionSingleEntry,
    call_function_single_exit => CallFunctionSingleExit,
}

/// `hrtimer_expire_entry`: ftrace "hrtimer=00000000c1a2b3c4 function=apic_timer_fn now=123"
/// (%p is hashed), perf "hrtimer=0xffff... function=apic_timer_fn now=123", trace-cmd
/// "hrtimer=0xffff... now=123 function=apic_timer_fn/0x0"; a module symbol may read
/// "apic_timer_fn [kvm]".
fn hrtimer_expire_entry(body: &str) -> Result<Parsed<'_>, Fail> {
    const K: &[&str] = &["hrtimer", "function", "now"];
    let func = need(eq(body, "function", K), "function")?;
    Ok(Parsed::of(Payload::HrtimerExpireEntry(
        ev::HrtimerExpireEntry {
            hrtimer: need(eq(body, "hrtimer", K).and_then(hex), "hrtimer")?,
            function: function_marker(func),
            now: eq(body, "now", K).and_then(num),
        },
    )))
}

/// The symbol's address is not in the text: [`APIC_TIMER_FN_MARKER`] stands for KVM's LAPIC
/// timer callback (`apic_timer_fn`, `apic_timer_fn/0x0`, `apic_timer_fn [kvm]`), 0 for any
/// other function.
fn function_marker(func: &str) -> u64 {
    let name = func.split(['/', '+', ' ', '[']).next().unwrap_or_default();
    if name == "apic_timer_fn" {
        APIC_TIMER_FN_MARKER
    } else {
        0
    }
}

fn hrtimer_expire_exit(body: &str) -> Result<Parsed<'_>, Fail> {
    let hrtimer = need(eq(body, "hrtimer", &["hrtimer"]).and_then(hex), "hrtimer")?;
    Ok(Parsed::of(Payload::HrtimerExpireExit(
        ev::HrtimerExpireExit { hrtimer },
    )))
}

/// `contention_begin`: "ffff888100a1b2c0 (flags=SPIN|READ)".
fn contention_begin(body: &str) -> Result<Parsed<'_>, Fail> {
    let (addr, _) = need(next_token(body), "lock_addr")?;
    let flags = need(eq(body, "flags", &["flags"]), "flags")?;
    let mut v = 0;
    for part in flags
        .trim_end_matches(')')
        .split('|')
        .filter(|s| !s.is_empty())
    {
        v |= need(reasons::lock_flag(part).or_else(|| num(part)), "flags")?;
    }
    Ok(Parsed::of(Payload::ContentionBegin(ev::ContentionBegin {
        lock_addr: need(hex(addr), "lock_addr")?,
        flags: v,
    })))
}

/// `contention_end`: "ffff888100a1b2c0 (ret=0)".
fn contention_end(body: &str) -> Result<Parsed<'_>, Fail> {
    let (addr, _) = need(next_token(body), "lock_addr")?;
    let ret = eq(body, "ret", &["ret"]).map(|r| r.trim_end_matches(')'));
    Ok(Parsed::of(Payload::ContentionEnd(ev::ContentionEnd {
        lock_addr: need(hex(addr), "lock_addr")?,
        ret: need(ret.and_then(num), "ret")?,
    })))
}

/// The plugin's `comm:pid` with an optional ` [prio]` after it.
fn plugin_task(text: &str) -> Option<(&str, u64)> {
    let mut t = text.trim();
    if t.ends_with(']') {
        t = t.rsplit_once(" [")?.0.trim_end();
    }
    let (comm, pid) = t.rsplit_once(':')?;
    Some((comm, num(pid)?))
}

/// The token after the first token equal to `key` (commas around tokens ignored).
fn word_after<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let mut toks = body
        .split_whitespace()
        .map(|t| t.trim_end_matches(','))
        .filter(|t| !t.is_empty());
    toks.by_ref().find(|t| *t == key)?;
    toks.next()
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(body: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = body.find(start)? + start.len();
    let rest = body.get(from..)?;
    Some(&rest[..rest.find(end)?])
}

/// The inside of the first `(...)` group.
fn group(body: &str) -> Option<&str> {
    between(body, "(", ")")
}

/// Where the value of `key=` starts: `key` at the start of the text or after a space, `[`
/// or `(`.
fn eq_start(body: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(rel) = body.get(from..).and_then(|s| s.find(key)) {
        let at = from + rel;
        let end = at + key.len();
        let boundary = body[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || c == '[' || c == '(');
        if boundary && body[end..].starts_with('=') {
            return Some(end + 1);
        }
        from = end;
    }
    None
}

/// The value of `key=` in `key=value other=value` text: up to the next ` k=` for any `k` in
/// `keys` (a value may contain spaces: `prev_comm=CPU 0/KVM prev_pid=...`).
fn eq<'a>(body: &'a str, key: &str, keys: &[&str]) -> Option<&'a str> {
    let start = eq_start(body, key)?;
    let rest = body.get(start..)?;
    let mut end = rest.len();
    for k in keys {
        // The next key must follow whitespace (its value start minus "k=").
        if let Some(v) = eq_start(rest, k) {
            // `rest[..at]` ends where the key starts; a `[` or `(` before it belongs to it.
            let at = v - k.len() - 1;
            let before = rest[..at].trim_end_matches(['[', '(']);
            if !before.is_empty() && before.ends_with(char::is_whitespace) {
                end = end.min(before.len());
            }
        }
    }
    Some(rest[..end].trim())
}

/// `edge` / `level`.
fn trigger(s: &str) -> Option<u64> {
    match s {
        "edge" => Some(0),
        "level" => Some(1),
        _ => None,
    }
}

/// A number as the kernel prints it: `0x` hex, or decimal (negative ones sign-extended, as
/// signed fields are in slots).
pub(super) fn num(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(',');
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    if s.starts_with('-') {
        return s.parse::<i64>().ok().map(|v| v as u64);
    }
    if s.starts_with('+') {
        return None;
    }
    s.parse().ok()
}

/// Hex with or without `0x` (`%x`, `%llx`, `%p`).
fn hex(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(',');
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(h, 16).ok()
}

#[cfg(test)]
mod tests {
    use kvmtrace_common::FieldValue;

    use super::*;

    fn ok(name: &str, body: &str) -> Parsed<'static> {
        let body: &'static str = Box::leak(body.to_string().into_boxed_str());
        match parse(name, body) {
            Ok(p) => p,
            Err(e) => panic!("{name}: {body}: {e:?}"),
        }
    }

    /// A field by its tracefs name; None when absent.
    fn slot(p: &Parsed<'_>, field: &str) -> Option<u64> {
        assert!(p.kind().slot_of(field).is_some(), "no field {field}");
        let ev = p.payload.event(Default::default());
        match ev.field(field) {
            Some(FieldValue::Num(n)) => Some(n),
            _ => None,
        }
    }

    #[test]
    fn kvm_exit_layouts() {
        let p = ok("kvm_exit", "vcpu 3 reason EXTERNAL_INTERRUPT rip 0xffffffff81000000 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x800000ec error_code 0x00000000");
        assert_eq!(slot(&p, "exit_reason"), Some(1));
        assert_eq!(slot(&p, "isa"), Some(1));
        assert_eq!(slot(&p, "vcpu_id"), Some(3));
        assert_eq!(slot(&p, "guest_rip"), Some(0xffff_ffff_8100_0000));
        assert_eq!(slot(&p, "info1"), Some(0));
        assert_eq!(p.vcpu, Some(3));

        let p = ok(
            "kvm_exit",
            "reason io rip 0xffffffff81488d3c info 3f80211 ffffffff81488d3d",
        );
        assert_eq!(slot(&p, "exit_reason"), Some(0x7b));
        assert_eq!(slot(&p, "isa"), Some(2));
        assert_eq!(slot(&p, "vcpu_id"), None);
        assert_eq!(slot(&p, "info1"), Some(0x3f8_0211));

        let p = ok("kvm_exit", "vcpu 0 reason GP excp rip 0x1000 info 0 0");
        assert_eq!(
            (slot(&p, "exit_reason"), slot(&p, "isa")),
            (Some(0x4d), Some(2))
        );

        let p = ok(
            "kvm_exit",
            "vcpu 1 reason INVALID_STATE FAILED_VMENTRY rip 0xfff0 info1 0x0",
        );
        assert_eq!(slot(&p, "exit_reason"), Some(0x8000_0021));
        assert_eq!(slot(&p, "isa"), Some(1));

        let p = ok("kvm_exit", "vcpu 1 reason 0x4e rip 0xfff0 info1 0x0");
        assert_eq!(slot(&p, "exit_reason"), Some(0x4e));
        assert_eq!(slot(&p, "isa"), None, "a number says nothing about the isa");
        let p = ok("kvm_exit", "reason UNKNOWN (78) rip 0xfff0 info 0 0");
        assert_eq!((slot(&p, "exit_reason"), slot(&p, "isa")), (Some(78), None));

        assert_eq!(
            parse("kvm_exit", "vcpu 0 reason NO_SUCH_THING rip 0x0").unwrap_err(),
            Fail::ExitReason("NO_SUCH_THING".into())
        );
        assert_eq!(
            parse("kvm_exit", "vcpu 0 rip 0x0").unwrap_err(),
            Fail::Field("exit_reason")
        );
    }

    #[test]
    fn kvm_events() {
        let p = ok("kvm_entry", "vcpu 2, rip 0xffffffff81c3a4b2 intr_info 0x80000022 error_code 0x00000000[immediate exit]");
        assert_eq!(
            (slot(&p, "vcpu_id"), slot(&p, "rip"), slot(&p, "intr_info")),
            (Some(2), Some(0xffff_ffff_81c3_a4b2), Some(0x8000_0022))
        );
        let p = ok("kvm_entry", "vcpu 0");
        assert_eq!((slot(&p, "vcpu_id"), slot(&p, "rip")), (Some(0), None));

        let p = ok("kvm_userspace_exit", "reason KVM_EXIT_IO (2)");
        assert_eq!((slot(&p, "reason"), slot(&p, "errno")), (Some(2), Some(0)));
        let p = ok("kvm_userspace_exit", "reason restart (4)");
        assert_eq!(
            (slot(&p, "reason"), slot(&p, "errno")),
            (None, Some(-4i64 as u64))
        );
        let p = ok("kvm_userspace_exit", "reason 0x27 (39)");
        assert_eq!(slot(&p, "reason"), Some(0x27));
        let p = ok("kvm_userspace_exit", "reason 2");
        assert_eq!((slot(&p, "reason"), slot(&p, "errno")), (Some(2), None));
        let p = ok("kvm_userspace_exit", "reason KVM_EXIT_SOMETHING_NEW (45)");
        assert_eq!(slot(&p, "reason"), Some(45));

        let p = ok("kvm_pio", "pio_write at 0x80 size 1 count 1 val 0x0 ");
        assert_eq!(
            (
                slot(&p, "rw"),
                slot(&p, "port"),
                slot(&p, "size"),
                slot(&p, "val")
            ),
            (Some(1), Some(0x80), Some(1), Some(0))
        );
        let p = ok("kvm_pio", "pio_read at 0x3fd size 1 count 4 val 0x60 (...)");
        assert_eq!((slot(&p, "rw"), slot(&p, "port")), (Some(0), Some(0x3fd)));

        let p = ok(
            "kvm_mmio",
            "mmio unsatisfied-read len 4 gpa 0xfee00300 val 0x0",
        );
        assert_eq!(
            (slot(&p, "type"), slot(&p, "len"), slot(&p, "gpa")),
            (Some(0), Some(4), Some(0xfee0_0300))
        );
        let p = ok("kvm_msr", "msr_write 6e0 = 0x2a1b4c3e7d0 (#GP)");
        assert_eq!(
            (
                slot(&p, "write"),
                slot(&p, "ecx"),
                slot(&p, "data"),
                slot(&p, "exception")
            ),
            (Some(1), Some(0x6e0), Some(0x2a1b4c3e7d0), Some(1))
        );

        let p = ok("kvm_inj_virq", "IRQ 0xec");
        assert_eq!(
            (slot(&p, "vector"), slot(&p, "soft"), slot(&p, "reinjected")),
            (Some(236), Some(0), Some(0))
        );
        let p = ok("kvm_inj_virq", "Soft/INTn 0x80 [reinjected]");
        assert_eq!(
            (slot(&p, "vector"), slot(&p, "soft"), slot(&p, "reinjected")),
            (Some(0x80), Some(1), Some(1))
        );
        let p = ok("kvm_inj_virq", "irq 236");
        assert_eq!((slot(&p, "vector"), slot(&p, "soft")), (Some(236), None));

        let p = ok(
            "kvm_apic_accept_irq",
            "apicid 1a vec 236 (LowPrio|level) (coalesced)",
        );
        assert_eq!(
            (
                slot(&p, "apicid"),
                slot(&p, "vec"),
                slot(&p, "dm"),
                slot(&p, "tm")
            ),
            (Some(0x1a), Some(236), Some(0x100), Some(1))
        );

        let p = ok("kvm_set_irq", "gsi 11 level -1 source 0");
        assert_eq!(
            (
                slot(&p, "gsi"),
                slot(&p, "level"),
                slot(&p, "irq_source_id")
            ),
            (Some(11), Some(u64::MAX), Some(0))
        );

        let p = ok(
            "kvm_pic_set_irq",
            "chip PIC slave pin 3 (level|masked) (coalesced)",
        );
        assert_eq!(
            (
                slot(&p, "chip"),
                slot(&p, "pin"),
                slot(&p, "imr"),
                slot(&p, "coalesced")
            ),
            (Some(1), Some(3), Some(8), Some(1))
        );
        let p = ok("kvm_pic_set_irq", "chip 0 pin 0 (edge)");
        assert_eq!(
            (slot(&p, "chip"), slot(&p, "imr"), slot(&p, "coalesced")),
            (Some(0), Some(0), Some(0))
        );

        let p = ok(
            "kvm_ioapic_set_irq",
            "pin 4 dst 3 vec 36 (LowPrio|logical|level|masked) (coalesced)",
        );
        let e = slot(&p, "e").unwrap();
        assert_eq!((e >> 56, e & 0xff, (e >> 8) & 7), (3, 36, 1));
        assert_eq!((e >> 11 & 1, e >> 15 & 1, e >> 16 & 1), (1, 1, 1));
        assert_eq!((slot(&p, "pin"), slot(&p, "coalesced")), (Some(4), Some(1)));

        let p = ok("kvm_msi_set_irq", "dst 2 vec 34 (Fixed|physical|edge)");
        let (a, d) = (slot(&p, "address").unwrap(), slot(&p, "data").unwrap());
        assert_eq!(
            ((a >> 12) & 0xff, a >> 2 & 1, d & 0xff, d >> 15 & 1),
            (2, 0, 34, 0)
        );
        // Bits 8..31 of the printed dst are the address's bits 40..63 (x2APIC ids).
        let p = ok(
            "kvm_msi_set_irq",
            "dst 1201 vec 35 (ExtINT|logical|level|rh)",
        );
        let (a, d) = (slot(&p, "address").unwrap(), slot(&p, "data").unwrap());
        assert_eq!(((a >> 12) & 0xff, (a >> 32) & 0xffff_ff00), (1, 0x1200));
        assert_eq!((a >> 2 & 1, a >> 3 & 1), (1, 1));
        assert_eq!(((d >> 8) & 7, d >> 15 & 1), (7, 1));

        let p = ok("kvm_vcpu_wakeup", "poll time 12345 ns, polling invalid");
        assert_eq!(
            (slot(&p, "ns"), slot(&p, "waited"), slot(&p, "valid")),
            (Some(12345), Some(0), Some(0))
        );
    }

    #[test]
    fn sched_and_irq_events() {
        let p = ok("sched_switch", "prev_comm=CPU 0/KVM prev_pid=4242 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=12 next_prio=120");
        assert_eq!(
            (
                slot(&p, "prev_pid"),
                slot(&p, "prev_state"),
                slot(&p, "next_pid")
            ),
            (Some(4242), Some(0x100), Some(12))
        );
        match p.payload {
            Payload::SchedSwitch(sw) => assert_eq!(sw.next_comm, Comm::new("kworker/0:1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.names,
            [Some((4242, "CPU 0/KVM")), Some((12, "kworker/0:1"))]
        );
        let p = ok(
            "sched_switch",
            "CPU 0/KVM:17999 [120] S ==> rustc:17984 [120]",
        );
        assert_eq!(
            (
                slot(&p, "prev_pid"),
                slot(&p, "prev_state"),
                slot(&p, "next_pid")
            ),
            (Some(17999), Some(1), Some(17984))
        );
        assert_eq!(
            p.names,
            [Some((17999, "CPU 0/KVM")), Some((17984, "rustc"))]
        );

        let p = ok(
            "sched_wakeup",
            "comm=CPU 0/KVM pid=4242 prio=120 target_cpu=003",
        );
        assert_eq!(
            (slot(&p, "pid"), slot(&p, "target_cpu"), slot(&p, "prio")),
            (Some(4242), Some(3), Some(120))
        );
        let p = ok(
            "sched_wakeup",
            "comm=a b pid=7 prio=120 success=1 target_cpu=001",
        );
        assert_eq!(
            (slot(&p, "pid"), slot(&p, "target_cpu")),
            (Some(7), Some(1))
        );
        assert_eq!(p.names[0], Some((7, "a b")));
        let p = ok(
            "sched_wakeup_new",
            "kvmtrace-irq:16067 [120] success=1 CPU:001",
        );
        assert_eq!(
            (slot(&p, "pid"), slot(&p, "target_cpu"), slot(&p, "prio")),
            (Some(16067), Some(1), Some(120))
        );

        let p = ok("softirq_entry", "vec=3 [action=NET_RX]");
        assert_eq!(slot(&p, "vec"), Some(3));
        let p = ok("softirq_exit", "[action=RCU]");
        assert_eq!(slot(&p, "vec"), Some(9));
        let p = ok("irq_handler_exit", "irq=24 ret=unhandled");
        assert_eq!((slot(&p, "irq"), slot(&p, "ret")), (Some(24), Some(0)));

        let p = ok(
            "hrtimer_expire_entry",
            "hrtimer=00000000c1a2b3c4 function=apic_timer_fn [kvm] now=10451990011234",
        );
        assert_eq!(
            (slot(&p, "hrtimer"), slot(&p, "function"), slot(&p, "now")),
            (
                Some(0xc1a2_b3c4),
                Some(APIC_TIMER_FN_MARKER),
                Some(10_451_990_011_234)
            )
        );
        let p = ok(
            "hrtimer_expire_entry",
            "hrtimer=0xffff888627c1c6f8 now=3133464023040 function=apic_timer_fn/0x0",
        );
        assert_eq!(slot(&p, "function"), Some(APIC_TIMER_FN_MARKER));
        let p = ok(
            "hrtimer_expire_entry",
            "hrtimer=0xffff888627c1c6f8 function=tick_nohz_handler now=1",
        );
        assert_eq!(slot(&p, "function"), Some(0));

        let p = ok("contention_begin", "00000000e3b75997 (flags=SPIN|WRITE)");
        assert_eq!(
            (slot(&p, "lock_addr"), slot(&p, "flags")),
            (Some(0xe3b7_5997), Some(5))
        );
        let p = ok("contention_end", "0xffff8881003c35ec (ret=-4)");
        assert_eq!(
            (slot(&p, "lock_addr"), slot(&p, "ret")),
            (Some(0xffff_8881_003c_35ec), Some(-4i64 as u64))
        );
    }

    #[test]
    fn bad_fields_and_unknown_events() {
        assert_eq!(parse("tracing_mark_write", "x").unwrap_err(), Fail::Unknown);
        match parse("kvm_fpu", "load").unwrap().payload {
            Payload::KvmOther(o) => assert_eq!(o.event().unwrap().name, "kvm_fpu"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("thread_info", "x").unwrap_err(), Fail::Unknown);
        assert_eq!(
            parse("kvm_pio", "pio_xx at 0x80").unwrap_err(),
            Fail::Field("rw")
        );
        assert_eq!(
            parse(
                "sched_switch",
                "prev_comm=a prev_pid=1 prev_state=Q ==> next_comm=b next_pid=2"
            )
            .unwrap_err(),
            Fail::Field("prev_state")
        );
        assert_eq!(
            parse("irq_handler_entry", "irq=x name=y").unwrap_err(),
            Fail::Field("irq")
        );
        assert_eq!(
            parse("local_timer_entry", "").unwrap_err(),
            Fail::Field("vector")
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(num("0x1f"), Some(31));
        assert_eq!(num("12,"), Some(12));
        assert_eq!(num("-1"), Some(u64::MAX));
        assert_eq!(num("+1"), None);
        assert_eq!(num(""), None);
        assert_eq!(hex("ffff"), Some(0xffff));
        assert_eq!(hex("0x"), None);
        assert_eq!(hex("+f"), None);
    }
}
