//! The part of a line every format shares: who, where, when and which event.
//!
//! ```text
//! ftrace:     "       CPU 0/KVM-4242    [001] d..2.  5678.123456: kvm_exit: vcpu 0 ..."
//!             "           <...>-1234    (   1200) [001] ....  5678.123456: ..."  (record-tgid)
//!             "            bash-16114   [001]  5678.123456: ..."                 (no irq-info)
//! trace-cmd:  "       CPU 0/KVM-4242  [001]  5678.123456: kvm_exit:             vcpu 0 ..."
//!             "       CPU 0/KVM-4242  [001] d..2.  5678.123456: kvm_exit:       vcpu 0 ..." (3.x)
//!             "instance:  CPU 0/KVM-4242  [001]  5678.123456: ..."  (a buffer other than the top)
//!             "CPU 0/KV-4242    1d..2.  5678.123456: kvm_exit: ..."  (-l: latency columns)
//!             "       CPU 0/KVM-4242  [001]-0x1  5678.123456: ..."  (-R: raw flags)
//!             "       CPU 0/KVM-4242  [001]  5678.123456: (+12)    kvm_exit: ..."  (--ts-diff)
//! perf:       "       CPU 0/KVM  4242 [001]  5678.123456:     kvm:kvm_exit: vcpu 0 ..."
//!             "       CPU 0/KVM  4200/4242 [001]  5678.123456789: kvm:kvm_exit: ..."
//!             "       CPU 0/KVM  4242  5678.123456: kvm:kvm_exit: ..."  (no CPU column)
//! perf-prof:  "2021-12-12 16:11:10.214139  <...> 206966 .N.. [017] 15504452.408994: kvm:..."
//! excerpts:   "qemu-system-x86-5665  [000] ....   280.971121:"  (the event on the next line)
//!             " 6204.951631: kvm_exit: vcpu 0 reason hlt ..."   (no task or CPU column)
//!             "  kvm_exit:             reason EXIT_RSM ..."        (no columns at all: [`bare`])
//! ```
//!
//! One tolerant parser reads them all; the format is only told apart for reporting. Lines are
//! given with odd whitespace already made plain spaces (see `import::normalise`).

use super::TextFormat;

/// An event line's common part.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line<'a> {
    /// Task name as printed (`<...>` when ftrace did not save it, `<idle>` for pid 0); empty
    /// when the line has no task column.
    pub comm: &'a str,
    /// The task's thread id; None when the line has no task column.
    pub tid: Option<u32>,
    /// The process id, when the line shows it (perf `pid/tid`, ftrace `record-tgid`).
    pub tgid: Option<u32>,
    /// None when the line has no CPU column.
    pub cpu: Option<u32>,
    /// The timestamp as printed, without the colon (`5678.123456`); None for a line with no
    /// columns at all ([`bare`]).
    pub ts: Option<&'a str>,
    /// perf's event category (`kvm` in `kvm:kvm_exit`).
    pub system: Option<&'a str>,
    /// Empty for a line that holds only the columns (its event is on the next line).
    pub event: &'a str,
    /// The event's own text, trimmed.
    pub body: &'a str,
    /// Which tool's layout this line has (a guess for ftrace vs trace-cmd).
    pub style: TextFormat,
}

impl Line<'_> {
    /// Only the columns: the event follows on the next line.
    pub fn header_only(&self) -> bool {
        self.event.is_empty()
    }
}

/// Why a line is not an event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineError {
    /// No `[cpu] timestamp: event:` in it.
    NotEvent,
    /// The task's `comm-pid` (or perf's `comm pid`) could not be read.
    BadPid,
}

impl LineError {
    pub fn reason(self) -> &'static str {
        match self {
            LineError::NotEvent => "not an event line",
            LineError::BadPid => "bad task pid",
        }
    }
}

/// Parses an event line (or a line of columns whose event follows on the next line).
pub(super) fn parse_line(line: &str) -> Result<Line<'_>, LineError> {
    // trace-cmd names the buffer first for instances: "name:  comm-pid [cpu] ...". Task
    // columns are right-aligned in a 16-wide field, so a real line starts with a space.
    if !line.starts_with(char::is_whitespace) {
        if let Some((name, rest)) = line.split_once(':') {
            if !name.is_empty()
                && !name.contains(char::is_whitespace)
                && rest.starts_with(char::is_whitespace)
            {
                if let Ok(mut l) = parse_core(rest) {
                    l.style = TextFormat::TraceCmd;
                    return Ok(l);
                }
            }
        }
    }
    parse_core(line)
}

fn parse_core(line: &str) -> Result<Line<'_>, LineError> {
    let mut from = 0;
    // The first "[digits]" followed by "[flags] timestamp: event:" is the CPU column; a
    // task name may itself contain brackets.
    while let Some(rel) = line.get(from..).and_then(|s| s.find('[')) {
        let open = from + rel;
        from = open + 1;
        let Some(after_open) = line.get(open + 1..) else {
            break;
        };
        let Some(close_rel) = after_open.find(']') else {
            break;
        };
        let cpu_text = &after_open[..close_rel];
        if cpu_text.is_empty() || !cpu_text.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cpu) = cpu_text.parse::<u32>() else {
            continue;
        };
        let Some(tail) = after_cpu(&after_open[close_rel + 1..]) else {
            continue;
        };
        let task = task(&line[..open])?;
        return Ok(line_of(Some(task), Some(cpu), tail));
    }
    unbracketed(line)
}

fn line_of<'a>(task: Option<Task<'a>>, cpu: Option<u32>, tail: Tail<'a>) -> Line<'a> {
    let perf = task.as_ref().is_some_and(|t| t.perf);
    let style = if perf || tail.system.is_some() {
        TextFormat::PerfScript
    } else if tail.padded {
        TextFormat::TraceCmd
    } else {
        TextFormat::Ftrace
    };
    Line {
        comm: task.as_ref().map_or("", |t| t.comm),
        tid: task.as_ref().map(|t| t.tid),
        tgid: task.as_ref().and_then(|t| t.tgid),
        cpu,
        ts: Some(tail.ts),
        system: tail.system,
        event: tail.event,
        body: tail.body,
        style,
    }
}

/// A line without a `[cpu]` column: `ts: event: ...` alone (an excerpt), perf without its
/// CPU column (`comm tid ts: ...`), or trace-cmd's latency format (`comm-pid  3d..2. ts:`,
/// the CPU number run into the irq flags).
fn unbracketed(line: &str) -> Result<Line<'_>, LineError> {
    let mut at = 0;
    while let Some((tok, rest)) = next_token(&line[at..]) {
        let start = line.len() - rest.len() - tok.len();
        at = line.len() - rest.len();
        let Some(ts) = timestamp_token(tok).filter(|t| t.contains('.')) else {
            continue;
        };
        let Some(tail) = after_ts(ts, rest) else {
            continue;
        };
        let columns = line[..start].trim();
        if columns.is_empty() {
            return Ok(line_of(None, None, tail));
        }
        let (task_text, cpu) = match columns.rsplit_once(char::is_whitespace) {
            Some((head, last)) => match latency_cpu(last) {
                Some(cpu) => (head, Some(cpu)),
                None => (columns, None),
            },
            None => (columns, None),
        };
        return Ok(line_of(Some(task(task_text)?), cpu, tail));
    }
    Err(LineError::NotEvent)
}

/// trace-cmd `-l`: the CPU number run into the latency flags, `3d..2.`.
fn latency_cpu(tok: &str) -> Option<u32> {
    let digits = tok.bytes().take_while(u8::is_ascii_digit).count();
    let (cpu, flags) = tok.split_at(digits);
    if cpu.is_empty() || flags.is_empty() || !is_flags(flags) {
        return None;
    }
    cpu.parse().ok()
}

/// A line of no columns at all, as pasted from a report whose columns were cut:
/// `event: text` or `system:event: text`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bare<'a> {
    pub system: Option<&'a str>,
    pub event: &'a str,
    pub body: &'a str,
    /// Spaces before the event name (continuation lines are indented deeper).
    pub indent: usize,
    /// trace-cmd's padding after the event name.
    pub padded: bool,
}

/// A bare `event: text` line; None when the first word is not `name:` or `system:name:`.
pub(super) fn bare(line: &str) -> Option<Bare<'_>> {
    let indent = line.len() - line.trim_start().len();
    let (tok, rest) = next_token(line)?;
    let (system, event) = event_token(tok)?;
    Some(Bare {
        system,
        event,
        body: rest.trim(),
        indent,
        padded: rest.starts_with("  "),
    })
}

struct Tail<'a> {
    ts: &'a str,
    system: Option<&'a str>,
    event: &'a str,
    body: &'a str,
    /// Two or more spaces between the event name and its text (trace-cmd aligns them).
    padded: bool,
}

/// What follows `[cpu]`: trace-cmd `-R`'s raw flags (`-0x1`) or ftrace's irq flags
/// (`d..2.`), then `seconds.fraction:` and `event:`.
fn after_cpu(rest: &str) -> Option<Tail<'_>> {
    let mut rest = rest;
    if let Some(raw) = rest.strip_prefix("-0x") {
        let end = raw.find(char::is_whitespace).unwrap_or(raw.len());
        if end == 0 || !raw[..end].bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        rest = &raw[end..];
    }
    let (first, r1) = next_token(rest)?;
    if let Some(ts) = timestamp_token(first) {
        return after_ts(ts, r1);
    }
    if !is_flags(first) {
        return None;
    }
    let (second, r2) = next_token(r1)?;
    after_ts(timestamp_token(second)?, r2)
}

/// What follows the timestamp: trace-cmd `--ts-diff`'s `(+12)`, then `event:` and its text;
/// or nothing at all (the event is on the next line).
fn after_ts<'a>(ts: &'a str, rest: &'a str) -> Option<Tail<'a>> {
    let mut rest = rest;
    if let Some((tok, r)) = next_token(rest) {
        if tok.starts_with("(+") && tok.ends_with(')') {
            rest = r;
        }
    }
    let Some((ev, r3)) = next_token(rest) else {
        return Some(Tail {
            ts,
            system: None,
            event: "",
            body: "",
            padded: false,
        });
    };
    let (system, event) = event_token(ev)?;
    Some(Tail {
        ts,
        system,
        event,
        body: r3.trim(),
        padded: r3.starts_with("  "),
    })
}

/// `event:` or `system:event:` (identifiers) -> (system, event).
fn event_token(tok: &str) -> Option<(Option<&str>, &str)> {
    let ev = tok.strip_suffix(':')?;
    let (system, event) = match ev.split_once(':') {
        Some((s, e)) => (Some(s), e),
        None => (None, ev),
    };
    let ident =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (ident(event) && system.is_none_or(ident)).then_some((system, event))
}

/// `5678.123456:` -> `5678.123456`; also a bare `5678:` (counter clocks), rejected later.
fn timestamp_token(tok: &str) -> Option<&str> {
    let ts = tok.strip_suffix(':')?;
    let (secs, frac) = match ts.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (ts, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(secs) && frac.is_none_or(digits)).then_some(ts)
}

/// ftrace's irq-info column: `d..2.`, `dNh3.`, `....` (4 or 5 characters in practice).
fn is_flags(tok: &str) -> bool {
    !tok.is_empty() && tok.len() <= 8 && tok.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

/// The irq flags perf-prof prints between the pid and the CPU (`.N..`, `d...`): flag
/// characters and at least one `.`, so neither a pid nor a word.
fn is_dotted_flags(tok: &str) -> bool {
    (3..=8).contains(&tok.len())
        && tok.contains('.')
        && tok
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_digit() || b"dDXnNhHsSbBpPzZ".contains(&b))
}

/// A wall-clock time some tools print first (`2021-12-12 16:11:10.214139`): the rest of the
/// text after it.
fn strip_datetime(text: &str) -> &str {
    let b = text.as_bytes();
    let shape = b"dddd-dd-dd dd:dd:dd";
    if b.len() < shape.len() {
        return text;
    }
    for (c, want) in b.iter().zip(shape) {
        let ok = match want {
            b'd' => c.is_ascii_digit(),
            b' ' => *c == b' ' || *c == b'T',
            w => c == w,
        };
        if !ok {
            return text;
        }
    }
    let mut rest = &text[shape.len()..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if rest.starts_with(char::is_whitespace) {
        rest.trim_start()
    } else {
        text
    }
}

struct Task<'a> {
    comm: &'a str,
    tid: u32,
    tgid: Option<u32>,
    /// perf's `comm pid` (a space, not a dash).
    perf: bool,
}

/// The task column: `comm-pid` with an optional `(tgid)`, or perf's `comm pid[/tid]`.
fn task(text: &str) -> Result<Task<'_>, LineError> {
    let mut text = strip_datetime(text.trim());
    let mut tgid = None;
    if let Some(inner) = text.strip_suffix(')') {
        // ftrace with record-tgid: "comm-pid (  tgid)"; "(-------)" when unknown.
        let (head, group) = inner.rsplit_once('(').ok_or(LineError::BadPid)?;
        tgid = group.trim().parse::<u32>().ok();
        text = head.trim_end();
    }
    // perf-prof: "comm pid flags" before the CPU.
    if let Some((head, last)) = text.rsplit_once(char::is_whitespace) {
        if is_dotted_flags(last) && !head.trim().is_empty() {
            text = head.trim_end();
        }
    }
    if let Some((comm, last)) = text.rsplit_once(char::is_whitespace) {
        let (pid, tid) = match last.split_once('/') {
            Some((p, t)) => (Some(p), t),
            None => (None, last),
        };
        let is_num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if is_num(tid) && pid.is_none_or(is_num) && !comm.trim().is_empty() {
            let tid = tid.parse().map_err(|_| LineError::BadPid)?;
            let tgid = match pid {
                Some(p) => Some(p.parse().map_err(|_| LineError::BadPid)?),
                None => tgid,
            };
            return Ok(Task {
                comm: comm.trim(),
                tid,
                tgid,
                perf: true,
            });
        }
    }
    let (comm, pid) = text.rsplit_once('-').ok_or(LineError::BadPid)?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::BadPid);
    }
    Ok(Task {
        comm: comm.trim_start(),
        tid: pid.parse().map_err(|_| LineError::BadPid)?,
        tgid,
        perf: false,
    })
}

/// The next whitespace-separated token and what follows it.
pub(super) fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    Some(match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    })
}

/// Nanoseconds from `seconds.fraction` (any number of fraction digits; more than 9 are
/// cut). None for a timestamp without a fraction (a counter or TSC clock: not time).
pub(super) fn ts_ns(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.')?;
    if secs.is_empty() || frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let frac = frac.get(..frac.len().min(9))?;
    let mut ns: u64 = frac.parse().ok()?;
    for _ in frac.len()..9 {
        ns *= 10;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// Lines a tool prints around its events that carry nothing to import.
pub(super) fn is_header(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return true;
    }
    // trace-cmd report: "cpus=2", "CPU 3 is empty".
    if let Some(n) = t.strip_prefix("cpus=") {
        return !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    }
    if let Some(n) = t
        .strip_prefix("CPU ")
        .and_then(|r| r.strip_suffix(" is empty"))
    {
        return !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    }
    false
}

/// ftrace's `# tracer:` or trace-cmd's `cpus=` header: which tool wrote the text.
pub(super) fn header_hint(line: &str) -> Option<TextFormat> {
    let t = line.trim();
    if t.starts_with("# tracer:") {
        Some(TextFormat::Ftrace)
    } else if t.starts_with("cpus=") || (t.starts_with("CPU ") && t.ends_with(" is empty")) {
        Some(TextFormat::TraceCmd)
    } else {
        None
    }
}

/// A lost-events marker: ftrace's `CPU:1 [LOST 37 EVENTS]`, trace-cmd's
/// `CPU:1 [37 EVENTS DROPPED]` or `CPU:1 [EVENTS DROPPED]` (count unknown: taken as 1).
/// Returns (cpu, events lost).
pub(super) fn lost_marker(line: &str) -> Option<(u32, u64)> {
    let t = line.trim();
    let rest = t.strip_prefix("CPU:")?;
    let (cpu, rest) = rest.split_once(char::is_whitespace)?;
    let cpu = cpu.parse().ok()?;
    let inner = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
    let count = if let Some(n) = inner
        .strip_prefix("LOST ")
        .and_then(|r| r.strip_suffix(" EVENTS"))
    {
        n.parse().ok()?
    } else if inner == "EVENTS DROPPED" {
        1
    } else {
        inner.strip_suffix(" EVENTS DROPPED")?.parse().ok()?
    };
    Some((cpu, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftrace_task_columns() {
        let l = parse_line(
            "       CPU 0/KVM-4242    [001] d..2.  5678.123456: kvm_exit: vcpu 0 reason HLT",
        )
        .unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.cpu),
            ("CPU 0/KVM", Some(4242), None, Some(1))
        );
        assert_eq!(
            (l.ts, l.system, l.event),
            (Some("5678.123456"), None, "kvm_exit")
        );
        assert_eq!(l.body, "vcpu 0 reason HLT");
        assert_eq!(l.style, TextFormat::Ftrace);

        let l = parse_line(
            "    tmux: client-16122   [001] dnh..  3057.296486: reschedule_entry: vector=253",
        )
        .unwrap();
        assert_eq!((l.comm, l.tid), ("tmux: client", Some(16122)));

        let l =
            parse_line("           <...>-1234    (   1200) [003] ....  17.000001: sched_wakeup: x")
                .unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.cpu),
            ("<...>", Some(1234), Some(1200), Some(3))
        );
        let l = parse_line("            bash-1977    (-------) [000] .... 1.5: irq_handler_exit: irq=1 ret=handled").unwrap();
        assert_eq!((l.tid, l.tgid), (Some(1977), None));

        // No irq-info column; a comm with brackets and dashes.
        let l = parse_line(" my[x]-task-77 [002]  10.000002: softirq_entry: vec=1 [action=TIMER]")
            .unwrap();
        assert_eq!((l.comm, l.tid, l.cpu), ("my[x]-task", Some(77), Some(2)));
        assert_eq!(l.body, "vec=1 [action=TIMER]");
    }

    #[test]
    fn trace_cmd_and_perf_columns() {
        let l = parse_line("       CPU 0/KVM-17999 [000]  3133.492649: kvm_vcpu_wakeup:      wait time 904948 ns, polling valid").unwrap();
        assert_eq!(l.style, TextFormat::TraceCmd);
        assert_eq!(l.body, "wait time 904948 ns, polling valid");
        let l = parse_line("kvmtrace_import_fixture:        CPU 0/KVM-16065 [000]  3057.049932: kvm_userspace_exit:   reason KVM_EXIT_IO (2)").unwrap();
        assert_eq!(
            (l.comm, l.tid, l.event),
            ("CPU 0/KVM", Some(16065), "kvm_userspace_exit")
        );
        assert_eq!(l.style, TextFormat::TraceCmd);

        let l = parse_line(
            "       CPU 0/KVM  4242 [001]  5678.123456:     kvm:kvm_exit: vcpu 0 reason HLT",
        )
        .unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.system, l.event),
            ("CPU 0/KVM", Some(4242), None, Some("kvm"), "kvm_exit")
        );
        assert_eq!(l.style, TextFormat::PerfScript);
        let l = parse_line("     migration/0    18/19    [000]  3090.082748123:               sched:sched_migrate_task: comm=perf pid=16507 prio=120 orig_cpu=0 dest_cpu=1").unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.ts),
            ("migration/0", Some(19), Some(18), Some("3090.082748123"))
        );
    }

    #[test]
    fn columns_seen_in_published_traces() {
        // trace-cmd report -l: the CPU run into the latency flags, no brackets.
        let l = parse_line("CPU 0/KV-4242    1d..2. 5678.123456: kvm_exit: reason HLT").unwrap();
        assert_eq!(
            (l.comm, l.tid, l.cpu, l.event),
            ("CPU 0/KV", Some(4242), Some(1), "kvm_exit")
        );
        let l = parse_line("  <idle>-0       0d.h2. 12.000001: irq_handler_entry: irq=1 name=x")
            .unwrap();
        assert_eq!((l.comm, l.tid, l.cpu), ("<idle>", Some(0), Some(0)));
        // trace-cmd report -R (raw flags after the CPU) and --ts-diff.
        let l = parse_line("       CPU 0/KVM-4242  [001]-0x1  5678.123456: kvm_entry: vcpu_id=0")
            .unwrap();
        assert_eq!(
            (l.cpu, l.event, l.body),
            (Some(1), "kvm_entry", "vcpu_id=0")
        );
        let l = parse_line(
            "       CPU 0/KVM-4242  [001]  5678.123456: (+12)    kvm_entry:            vcpu 0",
        )
        .unwrap();
        assert_eq!((l.event, l.body), ("kvm_entry", "vcpu 0"));
        // perf script without the CPU column.
        let l =
            parse_line(" qemu-system-x86  4242  5678.123456789: kvm:kvm_exit: reason HLT").unwrap();
        assert_eq!(
            (l.comm, l.tid, l.cpu, l.system),
            ("qemu-system-x86", Some(4242), None, Some("kvm"))
        );
        // perf-prof: a wall-clock time first, irq flags between the pid and the CPU.
        let l = parse_line("2021-12-12 16:11:10.214139            <...> 206966 .N.. [017] 15504452.408994: kvm:kvm_exit: reason EXTERNAL_INTERRUPT rip 0xffffffff81c01f58 info 0 800000fd").unwrap();
        assert_eq!(
            (l.comm, l.tid, l.cpu, l.ts),
            ("<...>", Some(206966), Some(17), Some("15504452.408994"))
        );
        // Columns only: the event follows on the next line.
        let l = parse_line("qemu-system-x86-5665  [000] ....   280.971121:").unwrap();
        assert!(l.header_only());
        assert_eq!((l.tid, l.ts), (Some(5665), Some("280.971121")));
        // A timestamp alone, no task or CPU column.
        let l = parse_line(" 6204.951632: kvm_exit: vcpu 0 reason hlt rip 0x4004ad").unwrap();
        assert_eq!((l.tid, l.cpu, l.event), (None, None, "kvm_exit"));
        // No columns at all.
        let b = bare("  kvm_exit:             reason EXIT_RSM rip 0x7ffbb280 info 0 0").unwrap();
        assert_eq!((b.event, b.indent, b.padded), ("kvm_exit", 2, true));
        assert!(bare("    200000006 1ab000").is_none());
        assert_eq!(
            bare("kvm:kvm_fpu: load").map(|b| b.system),
            Some(Some("kvm"))
        );
        assert_eq!(strip_datetime("2022-04-22 17:39:26.535148  x"), "x");
        assert_eq!(
            strip_datetime("2022-04-22 17:39:26x"),
            "2022-04-22 17:39:26x"
        );
    }

    #[test]
    fn not_event_lines() {
        for bad in [
            "",
            "hello world",
            "[001] 12.5: kvm_exit: x",
            "  bash-12 [001]  12.5 kvm_exit: x",
            "  bash-12 [001]  12.5: sys_close <-do_syscall_64",
            "  bash-12 [0x1]  12.5: kvm_exit: x",
            "  bash-12 [001]  toolongflags 12.5: kvm_exit: x",
            "Lorem ipsum dolor sit amet [1] 3.14: consectetur",
            "2021-12-12 16:11:10.437325 ",
            "     kvm-exit latency(ns) : count    distribution",
            "  6204.951631 kvm_exit: x",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_line("  bash-x [001] 1.5: kvm_exit: x").unwrap_err(),
            LineError::BadPid
        );
        assert_eq!(
            parse_line("  bash [001] 1.5: kvm_exit: x").unwrap_err(),
            LineError::BadPid
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(ts_ns("5678.123456"), Some(5_678_123_456_000));
        assert_eq!(ts_ns("5678.123456789"), Some(5_678_123_456_789));
        assert_eq!(ts_ns("0.5"), Some(500_000_000));
        assert_eq!(ts_ns("1.1234567891"), Some(1_123_456_789));
        assert_eq!(ts_ns("5678"), None);
        assert_eq!(ts_ns("5678."), None);
        assert_eq!(ts_ns("99999999999999999999.1"), None);
        assert_eq!(ts_ns("18446744073.709551616"), None, "overflow");
    }

    #[test]
    fn headers_and_markers() {
        for h in ["", "   ", "# tracer: nop", "#", "cpus=2", "CPU 0 is empty"] {
            assert!(is_header(h), "{h:?}");
        }
        for h in ["cpus=", "CPU x is empty", "tracer: nop"] {
            assert!(!is_header(h), "{h:?}");
        }
        assert_eq!(lost_marker("CPU:1 [LOST 37 EVENTS]"), Some((1, 37)));
        assert_eq!(lost_marker("CPU:0 [12 EVENTS DROPPED]"), Some((0, 12)));
        assert_eq!(lost_marker("CPU:3 [EVENTS DROPPED]"), Some((3, 1)));
        assert_eq!(lost_marker("CPU:3 [LOST x EVENTS]"), None);
        assert_eq!(lost_marker("CPU:3"), None);
    }
}
