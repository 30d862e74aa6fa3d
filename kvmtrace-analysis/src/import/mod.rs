//! Text traces taken with other tools, read into kvmtrace's event records.
//!
//! `kvmtrace report --from-text FILE` analyses what people already captured with
//! - ftrace: `/sys/kernel/tracing/trace` or `trace_pipe` (with or without the irq-info
//!   column, with or without `record-tgid`),
//! - `trace-cmd report` (its sched_switch/kvm/hrtimer plugins' layouts included, `-t`
//!   nanosecond timestamps, instance buffers' `name:` prefix),
//! - `perf script` (`comm tid` or `comm pid/tid`, `--ns`).
//!
//! The three share one line parser ([`TextFormat`] is told apart only to report it) and one
//! parser per tracepoint that reads the kernel's print formats (Linux 3.x to 6.18) into the
//! slots [`Kind::slots`] names. Events come out sorted by time (a stable sort: lines with the
//! same timestamp keep their order).
//!
//! What text does not say, and what this module does about it:
//! - **Time**: `seconds.fraction` as printed (microseconds, or nanoseconds when 9 digits),
//!   in ns. A trace taken with a counter or TSC clock (no fraction) is not understood.
//! - **Processes**: ftrace and trace-cmd print a thread's pid, not its process. A line
//!   that shows the process (perf's `pid/tid`, ftrace's `record-tgid` column) gives the
//!   real tgid; otherwise every thread that emits any `kvm:*` event gets the synthetic tgid
//!   [`IMPORTED_VM_TGID`], i.e. **all KVM threads of a text trace are taken as one VM**,
//!   and other threads get tgid = tid.
//! - **Names and vCPUs**: one [`Kind::ThreadInfo`] record per thread (any task that owns a
//!   line, or that a sched event names), at its first appearance, with its comm and its
//!   vCPU id: from its own `kvm_exit`/`kvm_entry` (`vcpu N`) anywhere in the trace, else from
//!   a VMM thread name (`CPU 3/KVM`, see [`crate::threads::vcpu_from_comm`]), else
//!   unknown. ftrace's `<...>` (name not saved) and `<idle>` are replaced by a name a
//!   sched event gives, when one does.
//! - **Exit reasons** are printed as names; the name gives the isa (the VMX names are upper
//!   case, the SVM ones lower case). A reason printed as a number (a code the kernel has no
//!   name for) gets isa 0 with its missing bit set. See [`exit_reason_code`].
//! - **Symbols**: `hrtimer_expire_entry` prints the callback's name, not its address: the
//!   `function` slot is [`APIC_TIMER_FN_MARKER`] for KVM's LAPIC timer (`apic_timer_fn`) and
//!   0 for anything else, so configure the engine with
//!   `EngineConfig { apic_timer_fn: APIC_TIMER_FN_MARKER, .. }` for imported traces.
//!   Pointers printed hashed (`%p`) are stored as printed.
//! - **Partial fields**: `kvm_pic_set_irq` prints only this pin's IMR bit;
//!   `kvm_ioapic_set_irq` and `kvm_msi_set_irq` print the entry/address/data as decoded
//!   fields, rebuilt here into the raw bits the engine reads. Fields a layout lacks (older
//!   kernels) have their `missing` bit set.
//! - **Lost events**: ftrace's `CPU:1 [LOST 37 EVENTS]` and trace-cmd's `EVENTS DROPPED`
//!   markers become [`Kind::Drops`] records (a checkpoint with the count before and one
//!   after), at the time of the next event line, so the engine marks the windows open
//!   across the loss incomplete.
//!
//! Nothing is dropped silently: blank, comment (`#`) and header lines (`cpus=2`,
//! `CPU 0 is empty`) are skipped, every other line becomes a record or is counted in
//! [`ImportStats::not_understood`] with a reason (`unknown event kvm_fpu`,
//! `bad field kvm_exit.vcpu`, `not an event line`, ...).
//!
//! A text with no event line at all is an error: [`ImportError::Empty`] when it has nothing
//! but blank, comment and header lines (an empty file included), [`ImportError::Unrecognised`]
//! when it has other lines but none is an event line of any of the three formats.

mod events;
mod line;
mod reasons;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kvmtrace_common::{ev, Event, Origin};

pub use crate::names::exit_reason_code;

/// The tgid given to threads that emit `kvm:*` events when the text does not show their
/// process: all of them are taken as one VM.
pub const IMPORTED_VM_TGID: u32 = 1;

/// `hrtimer_expire_entry`'s `function` slot for KVM's LAPIC timer callback
/// (`apic_timer_fn`) in imported traces: set `EngineConfig::apic_timer_fn` to it.
pub const APIC_TIMER_FN_MARKER: u64 = 1;

/// Lines kept as examples of what was not understood.
const EXAMPLES: usize = 5;
/// An example line is cut to this many characters.
const EXAMPLE_CHARS: usize = 200;
/// Event lines [`detect`] looks at before it decides.
const DETECT_LINES: usize = 200;

/// A text trace, read.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Records sorted by `ts_ns`: the events, one [`Kind::ThreadInfo`] per thread, and
    /// [`Kind::Drops`] checkpoints where the text says events were lost.
    pub events: Vec<Event>,
    pub stats: ImportStats,
    pub format: TextFormat,
}

/// What the import made of each line.
///
/// `lines == skipped + events + not_understood`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportStats {
    /// Lines in the text.
    pub lines: u64,
    /// Event lines turned into records (the ThreadInfo and Drops records made on top are
    /// not counted).
    pub events: u64,
    /// Lines that are neither events nor skipped.
    pub not_understood: u64,
    /// Why lines were not understood: `unknown event foo`, `bad field kvm_exit.vcpu`,
    /// `not an event line`, ... -> lines.
    pub by_reason: BTreeMap<String, u64>,
    /// Up to 5 of them: (line number from 1, the line, cut to 200 characters).
    pub first_unparsed: Vec<(u64, String)>,
    /// Blank, comment and header lines, and lost-event markers.
    pub skipped: u64,
    /// Events the text's markers say were lost.
    pub lost_events: u64,
    /// ThreadInfo records made (one per thread).
    pub threads: u64,
}

/// Which tool wrote the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TextFormat {
    /// `/sys/kernel/tracing/trace` or `trace_pipe`.
    Ftrace,
    /// `trace-cmd report`.
    TraceCmd,
    /// `perf script`.
    PerfScript,
}

impl TextFormat {
    pub fn name(self) -> &'static str {
        match self {
            TextFormat::Ftrace => "ftrace",
            TextFormat::TraceCmd => "trace-cmd report",
            TextFormat::PerfScript => "perf script",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: no line looks like ftrace, trace-cmd report or perf script output",
        path.display()
    )]
    Unrecognised { path: PathBuf },
    #[error("{}: no events (the text is empty or has only headers and comments)", path.display())]
    Empty { path: PathBuf },
}

/// Reads and imports a text trace. Bytes that are not UTF-8 are replaced (task names may
/// hold anything).
pub fn import_text(path: &Path) -> Result<Imported, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    import_at(&String::from_utf8_lossy(&bytes), path)
}

/// Imports a text trace held in memory (errors name the path `<text>`).
pub fn import_str(text: &str) -> Result<Imported, ImportError> {
    import_at(text, Path::new("<text>"))
}

/// Which tool wrote `text`, from its headers and the layout of its first event lines; None
/// when no line is an event line.
pub fn detect(text: &str) -> Option<TextFormat> {
    let mut votes = Votes::default();
    for l in text.lines() {
        votes.line(l);
        if votes.events >= DETECT_LINES {
            break;
        }
    }
    votes.decide()
}

#[derive(Default)]
struct Votes {
    hint: Option<TextFormat>,
    /// Event lines per layout: ftrace, trace-cmd, perf.
    by_style: [usize; 3],
    events: usize,
}

impl Votes {
    fn line(&mut self, l: &str) {
        if let Some(h) = line::header_hint(l) {
            self.hint.get_or_insert(h);
        } else if !line::is_header(l) {
            if let Ok(p) = line::parse_line(l) {
                self.style(p.style);
            }
        }
    }

    fn style(&mut self, s: TextFormat) {
        self.by_style[s as usize] += 1;
        self.events += 1;
    }

    fn decide(&self) -> Option<TextFormat> {
        if self.events == 0 {
            return None;
        }
        let [ftrace, trace_cmd, perf] = self.by_style;
        // perf's `cat:name:` and `comm pid` are unmistakable; ftrace and trace-cmd differ
        // in their headers and in trace-cmd's aligned event text.
        Some(if perf * 2 > self.events {
            TextFormat::PerfScript
        } else if let Some(h) = self.hint {
            h
        } else if trace_cmd > ftrace {
            TextFormat::TraceCmd
        } else {
            TextFormat::Ftrace
        })
    }
}

/// What the text says about one thread.
struct Thread {
    first_ts: u64,
    cpu: u32,
    /// The name its own lines show (not `<...>`/`<idle>`).
    comm: Option<String>,
    /// A name a sched event gives it.
    named: Option<String>,
    tgid: Option<u32>,
    vcpu: Option<u32>,
    kvm: bool,
}

#[derive(Default)]
struct Importer {
    stats: ImportStats,
    events: Vec<Event>,
    threads: HashMap<u32, Thread>,
    /// Thread ids in order of first appearance.
    order: Vec<u32>,
    votes: Votes,
    content_lines: u64,
    lost_total: u64,
    /// Lost events not placed yet: (cpu, count), placed at the next event line.
    lost_pending: Option<(u32, u64)>,
    last_ts: u64,
}

fn import_at(text: &str, path: &Path) -> Result<Imported, ImportError> {
    let mut im = Importer::default();
    for (i, l) in text.lines().enumerate() {
        im.line(i as u64 + 1, l);
    }
    let Some(format) = im.votes.decide() else {
        return Err(if im.content_lines == 0 {
            ImportError::Empty {
                path: path.to_path_buf(),
            }
        } else {
            ImportError::Unrecognised {
                path: path.to_path_buf(),
            }
        });
    };
    let (events, stats) = im.finish();
    Ok(Imported {
        events,
        stats,
        format,
    })
}

/// Placeholder names ftrace prints for a task whose name it did not keep, and pid 0.
fn placeholder(comm: &str) -> bool {
    comm.is_empty() || comm == "<...>" || comm == "<idle>"
}

impl Importer {
    fn line(&mut self, no: u64, l: &str) {
        self.stats.lines += 1;
        if let Some(h) = line::header_hint(l) {
            self.votes.hint.get_or_insert(h);
        }
        if line::is_header(l) {
            self.stats.skipped += 1;
            return;
        }
        self.content_lines += 1;
        if let Some((cpu, n)) = line::lost_marker(l) {
            self.stats.skipped += 1;
            self.stats.lost_events = self.stats.lost_events.saturating_add(n);
            let pending = self.lost_pending.get_or_insert((cpu, 0));
            pending.1 = pending.1.saturating_add(n);
            return;
        }
        let parsed = match line::parse_line(l) {
            Ok(p) => p,
            Err(e) => return self.fail(no, l, e.reason().to_string()),
        };
        self.votes.style(parsed.style);
        let Some(ts) = line::ts_ns(parsed.ts) else {
            return self.fail(no, l, "timestamp is not seconds.fraction".to_string());
        };
        let ev = match events::parse(parsed.event, parsed.body) {
            // perf names the category: an event of another one is not the tracepoint.
            Ok(ev) if parsed.system.is_some_and(|s| s != ev.kind().category()) => {
                let system = parsed.system.unwrap_or_default();
                return self.fail(no, l, format!("unknown event {system}:{}", parsed.event));
            }
            Ok(ev) => ev,
            Err(events::Fail::Unknown) => {
                return self.fail(no, l, format!("unknown event {}", parsed.event));
            }
            Err(events::Fail::Field(field)) => {
                return self.fail(no, l, format!("bad field {}.{field}", parsed.event));
            }
            Err(events::Fail::ExitReason(r)) => {
                return self.fail(no, l, format!("unknown exit reason {r}"));
            }
        };
        self.place_lost(ts);
        self.last_ts = ts;

        let t = self.thread(parsed.tid, ts, parsed.cpu);
        if t.comm.is_none() && !placeholder(parsed.comm) {
            t.comm = Some(parsed.comm.to_string());
        }
        if t.tgid.is_none() {
            t.tgid = parsed.tgid;
        }
        if ev.kind().category() == "kvm" {
            t.kvm = true;
        }
        if t.vcpu.is_none() {
            t.vcpu = ev.vcpu;
        }
        for (tid, comm) in ev.names.iter().flatten() {
            let t = self.thread(*tid, ts, parsed.cpu);
            if t.named.is_none() && !placeholder(comm) {
                t.named = Some((*comm).to_string());
            }
        }
        self.stats.events += 1;
        self.events.push(ev.payload.event(Origin {
            ts_ns: ts,
            tid: parsed.tid,
            tgid: 0,
            cpu: parsed.cpu,
        }));
    }

    fn thread(&mut self, tid: u32, ts: u64, cpu: u32) -> &mut Thread {
        let order = &mut self.order;
        let t = self.threads.entry(tid).or_insert_with(|| {
            order.push(tid);
            Thread {
                first_ts: ts,
                cpu,
                comm: None,
                named: None,
                tgid: None,
                vcpu: None,
                kvm: false,
            }
        });
        if ts < t.first_ts {
            t.first_ts = ts;
            t.cpu = cpu;
        }
        t
    }

    /// Lost events seen since the last event line: a checkpoint with the total before the
    /// loss (commits what closed before it) and one after (marks what is open).
    fn place_lost(&mut self, ts: u64) {
        let Some((cpu, n)) = self.lost_pending.take() else {
            return;
        };
        let after = self.lost_total.saturating_add(n);
        for total in [self.lost_total, after] {
            let at = Origin {
                ts_ns: ts,
                cpu,
                ..Default::default()
            };
            self.events.push(Event::new(
                at,
                &ev::Drops {
                    kernel: total,
                    userspace: 0,
                },
            ));
        }
        self.lost_total = after;
    }

    fn fail(&mut self, no: u64, l: &str, reason: String) {
        self.stats.not_understood += 1;
        *self.stats.by_reason.entry(reason).or_default() += 1;
        if self.stats.first_unparsed.len() < EXAMPLES {
            self.stats
                .first_unparsed
                .push((no, l.chars().take(EXAMPLE_CHARS).collect()));
        }
    }

    fn finish(mut self) -> (Vec<Event>, ImportStats) {
        let last = self.last_ts;
        self.place_lost(last);
        let tgid_of =
            |tid: u32, t: &Thread| t.tgid.unwrap_or(if t.kvm { IMPORTED_VM_TGID } else { tid });
        let mut out = Vec::with_capacity(self.order.len() + self.events.len());
        for &tid in &self.order {
            let Some(t) = self.threads.get(&tid) else {
                continue;
            };
            let comm = t.comm.as_deref().or(t.named.as_deref()).unwrap_or("");
            let at = Origin {
                ts_ns: t.first_ts,
                tid,
                tgid: tgid_of(tid, t),
                cpu: t.cpu,
            };
            // An id from the thread's own kvm_exit/kvm_entry is KVM's; one from its name
            // (QEMU's cpu_index) only a guess.
            let info = match t.vcpu {
                Some(id) => ev::ThreadInfo::vcpu_thread(id, comm),
                None => ev::ThreadInfo::thread(crate::threads::vcpu_from_comm(comm), comm),
            };
            out.push(Event::new(at, &info));
        }
        self.stats.threads = out.len() as u64;
        for mut e in self.events {
            if e.get::<ev::Drops>().is_none() {
                if let Some(t) = self.threads.get(&e.tid) {
                    e.tgid = tgid_of(e.tid, t);
                }
            }
            out.push(e);
        }
        // Stable: ThreadInfo records (first) stay ahead of the events at their timestamp.
        out.sort_by_key(|e| e.ts_ns);
        (out, self.stats)
    }
}
