//! The part of a line every format shares: who, where, when and which event.
//!
//! ```text
//! ftrace:     "       CPU 0/KVM-4242    [001] d..2.  5678.123456: kvm_exit: vcpu 0 ..."
//!             "           <...>-1234    (   1200) [001] ....  5678.123456: ..."  (record-tgid)
//!             "            bash-16114   [001]  5678.123456: ..."                 (no irq-info)
//! trace-cmd:  "       CPU 0/KVM-4242  [001]  5678.123456: kvm_exit:             vcpu 0 ..."
//!             "instance:  CPU 0/KVM-4242  [001]  5678.123456: ..."  (a buffer other than the top)
//! perf:       "       CPU 0/KVM  4242 [001]  5678.123456:     kvm:kvm_exit: vcpu 0 ..."
//!             "       CPU 0/KVM  4200/4242 [001]  5678.123456789: kvm:kvm_exit: ..."
//! ```
//!
//! One tolerant parser reads all three; the format is only told apart for reporting.

use super::TextFormat;

/// An event line's common part.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line<'a> {
    /// Task name as printed (`<...>` when ftrace did not save it, `<idle>` for pid 0).
    pub comm: &'a str,
    pub tid: u32,
    /// The process id, when the line shows it (perf `pid/tid`, ftrace `record-tgid`).
    pub tgid: Option<u32>,
    pub cpu: u32,
    /// The timestamp as printed, without the colon (`5678.123456`).
    pub ts: &'a str,
    /// perf's event category (`kvm` in `kvm:kvm_exit`).
    pub system: Option<&'a str>,
    pub event: &'a str,
    /// The event's own text, trimmed.
    pub body: &'a str,
    /// Which tool's layout this line has (a guess for ftrace vs trace-cmd).
    pub style: TextFormat,
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

/// Parses an event line.
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
        let style = if task.perf || tail.system.is_some() {
            TextFormat::PerfScript
        } else if tail.padded {
            TextFormat::TraceCmd
        } else {
            TextFormat::Ftrace
        };
        return Ok(Line {
            comm: task.comm,
            tid: task.tid,
            tgid: task.tgid,
            cpu,
            ts: tail.ts,
            system: tail.system,
            event: tail.event,
            body: tail.body,
            style,
        });
    }
    Err(LineError::NotEvent)
}

struct Tail<'a> {
    ts: &'a str,
    system: Option<&'a str>,
    event: &'a str,
    body: &'a str,
    /// Two or more spaces between the event name and its text (trace-cmd aligns them).
    padded: bool,
}

/// What follows `[cpu]`: optional irq flags (`d..2.`), `seconds.fraction:`, `event:`.
fn after_cpu(rest: &str) -> Option<Tail<'_>> {
    let (first, r1) = next_token(rest)?;
    let (ts, r2) = if let Some(ts) = timestamp_token(first) {
        (ts, r1)
    } else {
        if !is_flags(first) {
            return None;
        }
        let (second, r2) = next_token(r1)?;
        (timestamp_token(second)?, r2)
    };
    let (ev, r3) = next_token(r2)?;
    let ev = ev.strip_suffix(':')?;
    let (system, event) = match ev.split_once(':') {
        Some((s, e)) => (Some(s), e),
        None => (None, ev),
    };
    let ident =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ident(event) || !system.is_none_or(ident) {
        return None;
    }
    Some(Tail {
        ts,
        system,
        event,
        body: r3.trim(),
        padded: r3.starts_with("  "),
    })
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

struct Task<'a> {
    comm: &'a str,
    tid: u32,
    tgid: Option<u32>,
    /// perf's `comm pid` (a space, not a dash).
    perf: bool,
}

/// The task column: `comm-pid` with an optional `(tgid)`, or perf's `comm pid[/tid]`.
fn task(text: &str) -> Result<Task<'_>, LineError> {
    let mut text = text.trim();
    let mut tgid = None;
    if let Some(inner) = text.strip_suffix(')') {
        // ftrace with record-tgid: "comm-pid (  tgid)"; "(-------)" when unknown.
        let (head, group) = inner.rsplit_once('(').ok_or(LineError::BadPid)?;
        tgid = group.trim().parse::<u32>().ok();
        text = head.trim_end();
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
        assert_eq!((l.comm, l.tid, l.tgid, l.cpu), ("CPU 0/KVM", 4242, None, 1));
        assert_eq!((l.ts, l.system, l.event), ("5678.123456", None, "kvm_exit"));
        assert_eq!(l.body, "vcpu 0 reason HLT");
        assert_eq!(l.style, TextFormat::Ftrace);

        let l = parse_line(
            "    tmux: client-16122   [001] dnh..  3057.296486: reschedule_entry: vector=253",
        )
        .unwrap();
        assert_eq!((l.comm, l.tid), ("tmux: client", 16122));

        let l =
            parse_line("           <...>-1234    (   1200) [003] ....  17.000001: sched_wakeup: x")
                .unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.cpu),
            ("<...>", 1234, Some(1200), 3)
        );
        let l = parse_line("            bash-1977    (-------) [000] .... 1.5: irq_handler_exit: irq=1 ret=handled").unwrap();
        assert_eq!((l.tid, l.tgid), (1977, None));

        // No irq-info column; a comm with brackets and dashes.
        let l = parse_line(" my[x]-task-77 [002]  10.000002: softirq_entry: vec=1 [action=TIMER]")
            .unwrap();
        assert_eq!((l.comm, l.tid, l.cpu), ("my[x]-task", 77, 2));
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
            ("CPU 0/KVM", 16065, "kvm_userspace_exit")
        );
        assert_eq!(l.style, TextFormat::TraceCmd);

        let l = parse_line(
            "       CPU 0/KVM  4242 [001]  5678.123456:     kvm:kvm_exit: vcpu 0 reason HLT",
        )
        .unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.system, l.event),
            ("CPU 0/KVM", 4242, None, Some("kvm"), "kvm_exit")
        );
        assert_eq!(l.style, TextFormat::PerfScript);
        let l = parse_line("     migration/0    18/19    [000]  3090.082748123:               sched:sched_migrate_task: comm=perf pid=16507 prio=120 orig_cpu=0 dest_cpu=1").unwrap();
        assert_eq!(
            (l.comm, l.tid, l.tgid, l.ts),
            ("migration/0", 19, Some(18), "3090.082748123")
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
