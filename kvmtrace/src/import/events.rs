//! Event text (what follows `event:`) to slots, per tracepoint, as the kernel's print formats
//! (Linux 3.x to 6.18) and libtraceevent's plugins (`trace-cmd report`) write it.

use kvmtrace_common::{Kind, NSLOTS};

use super::reasons;
use super::APIC_TIMER_FN_MARKER;
use crate::engine::exit_reasons::ISA_VMX;
use crate::report::comm_to_slots;

/// A parsed event.
#[derive(Debug, Clone)]
pub(super) struct Parsed<'a> {
    pub kind: Kind,
    pub slots: [u64; NSLOTS],
    pub missing: u8,
    /// The vCPU id the event names (`kvm_exit`, `kvm_entry`).
    pub vcpu: Option<u32>,
    /// Other tasks the event names, with their comm (sched events): (tid, comm).
    pub names: [Option<(u32, &'a str)>; 2],
}

/// Why an event's text was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fail {
    /// Not a tracepoint kvmtrace records.
    Unknown,
    /// A field is absent or unreadable.
    Field(&'static str),
    /// A `kvm_exit` reason in neither table and not a number.
    ExitReason(String),
}

impl<'a> Parsed<'a> {
    fn new(kind: Kind) -> Self {
        // Every named field starts absent; setting it clears its bit.
        let mut missing = 0u8;
        for (i, name) in kind.slots().iter().enumerate() {
            if !name.is_empty() {
                missing |= 1 << i;
            }
        }
        Parsed {
            kind,
            slots: [0; NSLOTS],
            missing,
            vcpu: None,
            names: [None, None],
        }
    }

    fn set(&mut self, i: usize, v: u64) {
        if let Some(s) = self.slots.get_mut(i) {
            *s = v;
            self.missing &= !(1u8 << i);
        }
    }

    /// Sets slot `i` when the value is there; leaves it absent otherwise.
    fn maybe(&mut self, i: usize, v: Option<u64>) {
        if let Some(v) = v {
            self.set(i, v);
        }
    }

    /// A comm, 16 bytes in slots `i` and `i + 1`.
    fn comm(&mut self, i: usize, comm: &str) {
        let (lo, hi) = comm_to_slots(comm);
        self.set(i, lo);
        self.set(i + 1, hi);
    }
}

/// The tracepoint kind of an event name.
pub(super) fn kind_by_name(name: &str) -> Option<Kind> {
    Kind::ALL
        .iter()
        .copied()
        .find(|k| k.is_tracepoint() && k.name() == name)
}

/// Parses the text of event `name`.
pub(super) fn parse<'a>(name: &str, body: &'a str) -> Result<Parsed<'a>, Fail> {
    let kind = kind_by_name(name).ok_or(Fail::Unknown)?;
    let mut p = Parsed::new(kind);
    let f = Fail::Field;
    match kind {
        Kind::KvmExit => kvm_exit(&mut p, body)?,
        Kind::KvmEntry => {
            // "vcpu 0, rip 0xffffffff81000000 intr_info 0x00000000 error_code 0x00000000"
            // (rip since 4.x, intr_info since 6.x); older "vcpu 0".
            let vcpu = word_after(body, "vcpu").and_then(num).ok_or(f("vcpu"))?;
            p.set(0, vcpu);
            p.vcpu = u32::try_from(vcpu).ok();
            p.maybe(1, word_after(body, "rip").and_then(hex));
            p.maybe(2, word_after(body, "intr_info").and_then(hex));
        }
        Kind::KvmUserspaceExit => kvm_userspace_exit(&mut p, body)?,
        Kind::KvmInjVirq => {
            // "IRQ 0xec", "Soft/INTn 0x80 [reinjected]" (6.x); "irq 236" (older).
            let (first, rest) = super::line::next_token(body).ok_or(f("vector"))?;
            let (v, _) = super::line::next_token(rest).ok_or(f("vector"))?;
            match first {
                "IRQ" | "Soft/INTn" => {
                    p.set(0, num(v).ok_or(f("vector"))?);
                    p.set(1, u64::from(first == "Soft/INTn"));
                    p.set(2, u64::from(body.contains("[reinjected]")));
                }
                "irq" => p.set(0, num(v).ok_or(f("vector"))?),
                _ => return Err(f("vector")),
            }
        }
        Kind::KvmApicAcceptIrq => {
            // "apicid 0 vec 236 (Fixed|edge)" (older kernels add " (coalesced)").
            p.set(
                0,
                word_after(body, "apicid")
                    .and_then(hex)
                    .ok_or(f("apicid"))?,
            );
            p.set(1, word_after(body, "vec").and_then(num).ok_or(f("vec"))?);
            if let Some(g) = group(body) {
                let mut parts = g.split('|');
                p.maybe(
                    2,
                    parts
                        .next()
                        .and_then(reasons::delivery_mode)
                        .map(|m| m << 8),
                );
                p.maybe(3, parts.next().and_then(trigger));
            }
        }
        Kind::KvmSetIrq => {
            // "gsi 0 level 1 source 0"
            p.set(0, word_after(body, "gsi").and_then(num).ok_or(f("gsi"))?);
            p.set(
                1,
                word_after(body, "level").and_then(num).ok_or(f("level"))?,
            );
            p.maybe(2, word_after(body, "source").and_then(num));
        }
        Kind::KvmMsiSetIrq => {
            // "dst 0 vec 34 (Fixed|physical|edge)", "|rh" appended for redirection hint.
            let dst = word_after(body, "dst").and_then(hex).ok_or(f("dst"))?;
            let vec = word_after(body, "vec").and_then(num).ok_or(f("vec"))?;
            let g = group(body).ok_or(f("data"))?;
            let parts: Vec<&str> = g.split('|').collect();
            let mode = parts
                .first()
                .and_then(|m| reasons::delivery_mode(m))
                .ok_or(f("data"))?;
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
            p.set(0, address);
            p.set(1, data);
        }
        Kind::KvmPicSetIrq => {
            // "chip 0 pin 3 (edge|masked) (coalesced)"; older "chip PIC master pin 3 (edge)".
            let chip = between(body, "chip ", " pin ").ok_or(f("chip"))?;
            let chip = num(chip)
                .or_else(|| reasons::irqchip(chip))
                .ok_or(f("chip"))?;
            let pin = word_after(body, "pin").and_then(num).ok_or(f("pin"))?;
            let g = group(body).ok_or(f("imr"))?;
            p.set(0, chip);
            p.set(1, pin);
            // Only this pin's IMR bit is printed.
            let masked = g.split('|').any(|s| s == "masked");
            p.set(2, if masked { 1 << (pin & 7) } else { 0 });
            p.set(3, u64::from(body.contains("(coalesced)")));
        }
        Kind::KvmIoapicSetIrq => {
            // "pin 4 dst 1 vec 36 (Fixed|physical|edge|masked) (coalesced)"
            let pin = word_after(body, "pin").and_then(num).ok_or(f("pin"))?;
            let dst = word_after(body, "dst").and_then(hex).ok_or(f("e"))?;
            let vec = word_after(body, "vec").and_then(num).ok_or(f("e"))?;
            let g = group(body).ok_or(f("e"))?;
            let parts: Vec<&str> = g.split('|').collect();
            let mode = parts
                .first()
                .and_then(|m| reasons::delivery_mode(m))
                .ok_or(f("e"))?;
            let e = ((dst & 0xff) << 56)
                | (vec & 0xff)
                | (mode << 8)
                | (u64::from(parts.contains(&"logical")) << 11)
                | (u64::from(parts.contains(&"level")) << 15)
                | (u64::from(parts.contains(&"masked")) << 16);
            p.set(0, e);
            p.set(1, pin);
            p.set(2, u64::from(body.contains("(coalesced)")));
        }
        Kind::KvmVcpuWakeup => {
            // "wait time 12345 ns, polling valid"
            let (how, _) = super::line::next_token(body).ok_or(f("waited"))?;
            let waited = match how {
                "wait" => 1,
                "poll" => 0,
                _ => return Err(f("waited")),
            };
            p.set(0, word_after(body, "time").and_then(num).ok_or(f("ns"))?);
            p.set(1, waited);
            p.maybe(
                2,
                word_after(body, "polling").and_then(|v| match v {
                    "valid" => Some(1),
                    "invalid" => Some(0),
                    _ => None,
                }),
            );
        }
        Kind::KvmPio => {
            // "pio_write at 0x80 size 1 count 1 val 0x0 "
            let rw = match super::line::next_token(body).map(|t| t.0) {
                Some("pio_write") => 1,
                Some("pio_read") => 0,
                _ => return Err(f("rw")),
            };
            p.set(0, rw);
            p.set(1, word_after(body, "at").and_then(hex).ok_or(f("port"))?);
            p.set(2, word_after(body, "size").and_then(num).ok_or(f("size"))?);
            p.maybe(3, word_after(body, "val").and_then(hex));
        }
        Kind::KvmMmio => {
            // "mmio write len 4 gpa 0xfee000b0 val 0x0"
            let ty = word_after(body, "mmio").ok_or(f("type"))?;
            p.set(
                0,
                reasons::mmio_type(ty)
                    .or_else(|| num(ty))
                    .ok_or(f("type"))?,
            );
            p.set(1, word_after(body, "len").and_then(num).ok_or(f("len"))?);
            p.set(2, word_after(body, "gpa").and_then(hex).ok_or(f("gpa"))?);
            p.maybe(3, word_after(body, "val").and_then(hex));
        }
        Kind::KvmMsr => {
            // "msr_write 6e0 = 0x1234" plus " (#GP)" when it faulted.
            let (op, rest) = super::line::next_token(body).ok_or(f("write"))?;
            let write = match op {
                "msr_write" => 1,
                "msr_read" => 0,
                _ => return Err(f("write")),
            };
            let (ecx, _) = super::line::next_token(rest).ok_or(f("ecx"))?;
            p.set(0, write);
            p.set(1, hex(ecx).ok_or(f("ecx"))?);
            p.set(2, word_after(body, "=").and_then(hex).ok_or(f("data"))?);
            p.set(3, u64::from(body.contains("(#GP)")));
        }
        Kind::SchedSwitch => sched_switch(&mut p, body)?,
        Kind::SchedWakeup | Kind::SchedWakeupNew => sched_wakeup(&mut p, body)?,
        Kind::SchedMigrateTask => {
            // "comm=x pid=1 prio=120 orig_cpu=1 dest_cpu=0"
            const K: &[&str] = &["comm", "pid", "prio", "orig_cpu", "dest_cpu"];
            let pid = eq(body, "pid", K).and_then(num).ok_or(f("pid"))?;
            p.set(0, pid);
            p.set(
                1,
                eq(body, "orig_cpu", K).and_then(num).ok_or(f("orig_cpu"))?,
            );
            p.set(
                2,
                eq(body, "dest_cpu", K).and_then(num).ok_or(f("dest_cpu"))?,
            );
            if let (Ok(pid), Some(comm)) = (u32::try_from(pid), eq(body, "comm", K)) {
                p.names[0] = Some((pid, comm));
            }
        }
        Kind::IrqHandlerEntry => {
            // "irq=24 name=virtio0-input.0"
            let v = eq(body, "irq", &["irq", "name"]).and_then(num);
            p.set(0, v.ok_or(f("irq"))?);
        }
        Kind::IrqHandlerExit => {
            // "irq=24 ret=handled"
            const K: &[&str] = &["irq", "ret"];
            p.set(0, eq(body, "irq", K).and_then(num).ok_or(f("irq"))?);
            let ret = eq(body, "ret", K).and_then(|r| match r {
                "handled" => Some(1),
                "unhandled" => Some(0),
                other => num(other),
            });
            p.set(1, ret.ok_or(f("ret"))?);
        }
        Kind::SoftirqEntry | Kind::SoftirqExit => {
            // "vec=3 [action=NET_RX]"
            const K: &[&str] = &["vec", "action"];
            let v = eq(body, "vec", K).and_then(num).or_else(|| {
                eq(body, "action", K)
                    .map(|a| a.trim_end_matches(']'))
                    .and_then(reasons::softirq_vec)
            });
            p.set(0, v.ok_or(f("vec"))?);
        }
        Kind::LocalTimerEntry
        | Kind::LocalTimerExit
        | Kind::RescheduleEntry
        | Kind::RescheduleExit
        | Kind::CallFunctionEntry
        | Kind::CallFunctionExit
        | Kind::CallFunctionSingleEntry
        | Kind::CallFunctionSingleExit => {
            // "vector=236"
            p.set(
                0,
                eq(body, "vector", &["vector"])
                    .and_then(num)
                    .ok_or(f("vector"))?,
            );
        }
        Kind::HrtimerExpireEntry => {
            // ftrace "hrtimer=00000000c1a2b3c4 function=apic_timer_fn now=123" (%p is
            // hashed), perf "hrtimer=0xffff... function=apic_timer_fn now=123", trace-cmd
            // "hrtimer=0xffff... now=123 function=apic_timer_fn/0x0"; a module symbol may
            // read "apic_timer_fn [kvm]".
            const K: &[&str] = &["hrtimer", "function", "now"];
            p.set(0, eq(body, "hrtimer", K).and_then(hex).ok_or(f("hrtimer"))?);
            let func = eq(body, "function", K).ok_or(f("function"))?;
            let name = func.split(['/', '+', ' ', '[']).next().unwrap_or_default();
            // The symbol's address is not in the text: a marker stands for KVM's LAPIC
            // timer callback, 0 for any other function.
            p.set(
                1,
                if name == "apic_timer_fn" {
                    APIC_TIMER_FN_MARKER
                } else {
                    0
                },
            );
            p.maybe(2, eq(body, "now", K).and_then(num));
        }
        Kind::HrtimerExpireExit => {
            p.set(
                0,
                eq(body, "hrtimer", &["hrtimer"])
                    .and_then(hex)
                    .ok_or(f("hrtimer"))?,
            );
        }
        Kind::ContentionBegin => {
            // "ffff888100a1b2c0 (flags=SPIN|READ)"
            let (addr, _) = super::line::next_token(body).ok_or(f("lock_addr"))?;
            p.set(0, hex(addr).ok_or(f("lock_addr"))?);
            let flags = eq(body, "flags", &["flags"]).ok_or(f("flags"))?;
            let flags = flags.trim_end_matches(')');
            let mut v = 0;
            for part in flags.split('|').filter(|s| !s.is_empty()) {
                v |= reasons::lock_flag(part)
                    .or_else(|| num(part))
                    .ok_or(f("flags"))?;
            }
            p.set(1, v);
        }
        Kind::ContentionEnd => {
            // "ffff888100a1b2c0 (ret=0)"
            let (addr, _) = super::line::next_token(body).ok_or(f("lock_addr"))?;
            p.set(0, hex(addr).ok_or(f("lock_addr"))?);
            let ret = eq(body, "ret", &["ret"]).map(|r| r.trim_end_matches(')'));
            p.set(1, ret.and_then(num).ok_or(f("ret"))?);
        }
        Kind::ThreadInfo | Kind::DemoAck | Kind::Drops => return Err(Fail::Unknown),
    }
    Ok(p)
}

/// `kvm_exit`, in any of its layouts:
/// - 5.12+: `vcpu 0 reason EXTERNAL_INTERRUPT rip 0x.. info1 0x.. info2 0x.. intr_info 0x..
///   error_code 0x..` (6.x adds `requests 0x..`);
/// - 5.x: `vcpu 0 reason HLT rip 0x.. info 0 0`;
/// - before: `reason HLT rip 0x.. info 0 0`; libtraceevent's kvm plugin (trace-cmd) prints
///   this one too, `reason UNKNOWN (78)` for a code it has no name for.
///
/// The reason is a VMX name (`EXTERNAL_INTERRUPT`, maybe followed by `FAILED_VMENTRY`), an
/// SVM name (`io`, `npf`, `GP excp`) or a number (`0x4e`); the name gives the isa.
fn kvm_exit(p: &mut Parsed<'_>, body: &str) -> Result<(), Fail> {
    let after = match body.find("reason ") {
        Some(i) if i == 0 || body[..i].ends_with(' ') => &body[i + "reason ".len()..],
        _ => return Err(Fail::Field("exit_reason")),
    };
    let (reason, tail) = match after.find(" rip ") {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let (isa, code) = exit_reason(reason.trim())?;
    p.set(0, u64::from(code));
    p.maybe(1, isa);
    if let Some(v) = word_after(body, "vcpu").and_then(num) {
        p.set(2, v);
        p.vcpu = u32::try_from(v).ok();
    }
    p.maybe(3, word_after(tail, "rip").and_then(hex));
    p.maybe(
        4,
        word_after(tail, "info1")
            .or_else(|| word_after(tail, "info"))
            .and_then(hex),
    );
    Ok(())
}

/// (isa if known, code) of a printed exit reason.
fn exit_reason(text: &str) -> Result<(Option<u64>, u32), Fail> {
    let mut name = text;
    let mut flags = 0u32;
    'flags: loop {
        for &(flag, bit) in reasons::VMX_EXIT_FLAGS {
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
    let vmx_flags = (flags != 0).then_some(ISA_VMX);
    if let Some((isa, code)) = reasons::exit_reason_any(name) {
        return Ok((Some(isa), code | flags));
    }
    let number = name
        .strip_prefix("UNKNOWN (")
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or(name);
    match num(number).and_then(|n| u32::try_from(n).ok()) {
        Some(code) => Ok((vmx_flags, code | flags)),
        None => Err(Fail::ExitReason(name.chars().take(40).collect())),
    }
}

/// `kvm_userspace_exit`: `reason KVM_EXIT_IO (2)`; on an error return from KVM_RUN, 6.x
/// prints `reason restart (4)` (-EINTR) or `reason error (14)` (the errno), older kernels
/// `reason error (4)`; a reason without a name prints as a number (`reason 0x27 (39)`).
fn kvm_userspace_exit(p: &mut Parsed<'_>, body: &str) -> Result<(), Fail> {
    let f = Fail::Field;
    let rest = body.strip_prefix("reason ").ok_or(f("reason"))?.trim();
    let (name, paren) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((name, n)) => (name.trim(), Some(num(n).ok_or(f("errno"))?)),
        None => (rest, None),
    };
    match name {
        "restart" | "error" => {
            let errno = paren.ok_or(f("errno"))?;
            // The errno field is signed and negative.
            p.set(1, 0u64.wrapping_sub(errno));
        }
        _ => {
            let reason = match name.strip_prefix("KVM_EXIT_") {
                Some(n) => reasons::kvm_exit_code(n).or(paren),
                None => num(name),
            };
            p.set(0, reason.ok_or(f("reason"))?);
            if paren.is_some() {
                p.set(1, 0);
            }
        }
    }
    Ok(())
}

/// `sched_switch`: the kernel's `prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==>
/// next_comm=b next_pid=2 next_prio=120`, or libtraceevent's sched_switch plugin (trace-cmd,
/// older perf): `a:1 [120] S ==> b:2 [120]`.
fn sched_switch<'a>(p: &mut Parsed<'a>, body: &'a str) -> Result<(), Fail> {
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
    p.set(0, prev_pid);
    p.set(1, state);
    p.set(2, next_pid);
    p.comm(3, next_comm);
    p.names = [
        u32::try_from(prev_pid).ok().map(|t| (t, prev_comm)),
        u32::try_from(next_pid).ok().map(|t| (t, next_comm)),
    ];
    Ok(())
}

/// `sched_wakeup[_new]`: `comm=x pid=1 prio=120 target_cpu=001` (kernels before 4.x also
/// print `success=1`), or the plugin's `x:1 [120] CPU:001` (`success=1` in between on older
/// kernels).
fn sched_wakeup<'a>(p: &mut Parsed<'a>, body: &'a str) -> Result<(), Fail> {
    let f = Fail::Field;
    let (comm, pid, prio, cpu) = if eq_start(body, "comm").is_some() {
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
        let cpu = rest.find("CPU:").and_then(|i| {
            super::line::next_token(&rest[i + "CPU:".len()..]).and_then(|(c, _)| num(c))
        });
        (comm, pid, prio, cpu)
    };
    p.set(0, pid);
    p.maybe(1, cpu);
    p.maybe(2, prio);
    p.comm(3, comm);
    p.names[0] = u32::try_from(pid).ok().map(|t| (t, comm));
    Ok(())
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
    use super::*;

    fn ok(name: &str, body: &str) -> Parsed<'static> {
        let body: &'static str = Box::leak(body.to_string().into_boxed_str());
        match parse(name, body) {
            Ok(p) => p,
            Err(e) => panic!("{name}: {body}: {e:?}"),
        }
    }

    fn slot(p: &Parsed<'_>, field: &str) -> Option<u64> {
        let i = p.kind.slot_of(field).unwrap();
        (p.missing & (1 << i) == 0).then_some(p.slots[i])
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
        assert_eq!(
            crate::report::comm_from_slots(p.slots[3], p.slots[4]),
            "kworker/0:1"
        );
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
        assert_eq!(parse("kvm_fpu", "load").unwrap_err(), Fail::Unknown);
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
