//! Text traces taken with other tools, read into kvmtrace's event records.
//!
//! `kvmtrace report --from-text FILE` analyses what people already captured with
//! - ftrace: `/sys/kernel/tracing/trace` or `trace_pipe` (with or without the irq-info
//!   column, with or without `record-tgid`),
//! - `trace-cmd report` (its sched_switch/kvm/hrtimer plugins' layouts included, `-t`
//!   nanosecond timestamps, `-l` latency columns, `-R` raw fields, `--ts-diff`, instance
//!   buffers' `name:` prefix),
//! - `perf script` (`comm tid` or `comm pid/tid`, with or without the CPU column, `--ns`,
//!   `kvm:` categories; callchain lines are skipped),
//!
//! and what people paste of them into mails, bug trackers and READMEs: records wrapped onto
//! the next line, columns cut away, odd whitespace. docs/text-formats.md lists every layout.
//!
//! The three share one line parser ([`TextFormat`] is told apart only to report it) and one
//! parser per tracepoint that reads the kernel's print formats (Linux 2.6.3x to 6.18) into
//! the slots [`Kind::slots`](kvmtrace_common::Kind::slots) names. Events come out sorted by
//! time (a stable sort: lines with the same timestamp keep their order).
//!
//! What text does not say, and what this module does about it:
//! - **Records over several lines**: a line that is not an event line continues the record
//!   before it when that record (a) is only the columns, its event on the next line, (b) has
//!   no columns and the line is indented deeper (a cut trace-cmd report), or (c) reads
//!   better with it: it fails to parse alone and parses joined, or it parses to different
//!   fields joined (a mail client wrapped it after `rip`, `reason` or `address`). A
//!   timeline-only event (`kvm_other`) is only continued by a line at column 0 after a line
//!   that ended in a space (`format=flowed` mail). Joined lines are counted in
//!   [`ImportStats::continued`]; anything else is a line of its own.
//! - **Whitespace**: every Unicode space (no-break spaces from mail clients, tabs) and the
//!   replacement character U+FFFD (a no-break space in a text that was not UTF-8) is read as
//!   a plain space.
//! - **Time**: `seconds.fraction` as printed (microseconds, or nanoseconds when 9 digits),
//!   in ns. A trace taken with a counter or TSC clock (no fraction) is not understood.
//!   Excerpts with no timestamp at all (`  kvm_exit: reason ...`) are read at time 0: their
//!   exits count, but no latency can be measured, so their `kvm_entry` lines are skipped
//!   (an entry at the same time would claim a 0 ns exit) and say so in
//!   [`ImportStats::notes`].
//! - **Threads**: a line without a task column (`ts: event: ...`, or no columns at all)
//!   belongs to one anonymous thread, [`ANONYMOUS_TID`], on CPU 0. A line without a CPU
//!   column (perf `-F` without `cpu`) is on CPU 0.
//! - **Processes**: ftrace and trace-cmd print a thread's pid, not its process. A line
//!   that shows the process (perf's `pid/tid`, ftrace's `record-tgid` column) gives the
//!   real tgid; otherwise every thread that emits any `kvm`/`kvmmmu` event gets the synthetic
//!   tgid [`IMPORTED_VM_TGID`], i.e. **all KVM threads of a text trace are taken as one VM**,
//!   and other threads get tgid = tid.
//! - **Names and vCPUs**: one [`Kind::ThreadInfo`](kvmtrace_common::Kind::ThreadInfo) record
//!   per thread (any task that owns a line, or that a sched event names), at its first
//!   appearance, with its comm and its vCPU id: from its own `kvm_exit`/`kvm_entry`
//!   (`vcpu N`) anywhere in the trace, else from a VMM thread name (`CPU 3/KVM`, see
//!   [`crate::threads::vcpu_from_comm`]), else unknown. ftrace's `<...>` (name not saved)
//!   and `<idle>` are replaced by a name a sched event gives, when one does.
//! - **Exit reasons** are printed as names in several spellings (the kernel's, libtraceevent's
//!   kvm plugin's, Linux 2.6.3x's: [`crate::names::exit_reason_spelling`]); the name gives
//!   the isa. Five Linux 2.6.3x VMX names are also SVM names (`cpuid`, `invlpg`,
//!   `hypercall`, `wbinvd`, `task_switch`), and a reason printed as a number says no isa at
//!   all: those take the isa the other exits of the same text say by a majority vote (an
//!   unambiguous name, a `FAILED_VMENTRY` flag or an `isa=` field is a vote), and with no
//!   vote SVM for the names (its lower-case names are today's; the VMX ones are 2.6.3x's) and
//!   VMX for numbers (libtraceevent's default when `isa` is missing).
//! - **KVM events without a kind of their own** (`kvm_fpu`, `kvm_cr`, `kvm_msr`...: every
//!   tracepoint of `kvm` and `kvmmmu`, see [`kvmtrace_common::kvm_events`]) become
//!   `kvm_other` records with the first three numbers of their text: shown in timelines,
//!   counted by name, never "not understood".
//! - **Symbols**: `hrtimer_expire_entry` prints the callback's name, not its address: the
//!   `function` slot is [`APIC_TIMER_FN_MARKER`] for KVM's LAPIC timer (`apic_timer_fn`) and
//!   0 for anything else, so configure the engine with
//!   `EngineConfig { apic_timer_fn: APIC_TIMER_FN_MARKER, .. }` for imported traces.
//!   Pointers printed hashed (`%p`) are stored as printed.
//! - **Partial fields**: `kvm_pic_set_irq` prints only this pin's IMR bit;
//!   `kvm_ioapic_set_irq` and `kvm_msi_set_irq` print the entry/address/data as decoded
//!   fields, rebuilt here into the raw bits the engine reads. Fields a layout lacks (older
//!   kernels) have their `missing` bit set.
//! - **Numbers that name things**: a CPU beyond `kvmtrace_common::limits::MAX_CPUS`, a pid or
//!   vCPU or APIC id beyond u32, a vector beyond 255 make the line not understood (`cpu out of
//!   range`, ...): nothing is sized or looked up by a number the text gives.
//! - **Lost events**: ftrace's `CPU:1 [LOST 37 EVENTS]` and trace-cmd's `EVENTS DROPPED`
//!   markers become [`Kind::Drops`](kvmtrace_common::Kind::Drops) records (a checkpoint with
//!   the count before and one after), at the time of the next event line, so the engine
//!   marks the windows open across the loss incomplete.
//!
//! Nothing is dropped silently: blank, comment (`#`) and header lines (`cpus=2`,
//! `CPU 0 is empty`) are skipped, every other line becomes a record, continues one, or is
//! counted in [`ImportStats::not_understood`] with a reason (`unknown event foo`,
//! `bad field kvm_exit.vcpu`, `not an event line`, `cpu out of range`, ...).
//!
//! A text with no event line at all is an error: [`ImportError::Empty`] when it has nothing
//! but blank, comment and header lines (an empty file included), [`ImportError::Unrecognised`]
//! when it has other lines but none is an event line of any of the formats.

mod events;
mod line;
mod reasons;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use kvmtrace_common::{ev, limits, Event, Origin, Payload};

use self::events::{ExitIsa, Fail, Parsed};
use self::line::Line;
pub use crate::names::exit_reason_code;
use crate::names::{ISA_SVM, ISA_VMX};

/// The tgid given to threads that emit `kvm:*` events when the text does not show their
/// process: all of them are taken as one VM.
pub const IMPORTED_VM_TGID: u32 = 1;

/// The thread of lines that have no task column (excerpts with the columns cut away): one
/// thread, beyond any pid Linux gives (`PID_MAX_LIMIT` is 2^22).
pub const ANONYMOUS_TID: u32 = u32::MAX - 1;

/// `hrtimer_expire_entry`'s `function` slot for KVM's LAPIC timer callback
/// (`apic_timer_fn`) in imported traces: set `EngineConfig::apic_timer_fn` to it.
pub const APIC_TIMER_FN_MARKER: u64 = 1;

/// Lines kept as examples of what was not understood.
const EXAMPLES: usize = 5;
/// An example line is cut to this many characters.
const EXAMPLE_CHARS: usize = 200;
/// Event lines [`detect`] looks at before it decides.
const DETECT_LINES: usize = 200;
/// A record joins at most this many lines (a runaway continuation stops here).
const MAX_RECORD_LINES: u64 = 64;

/// A text trace, read.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Records sorted by `ts_ns`: the events, one ThreadInfo per thread, and Drops
    /// checkpoints where the text says events were lost.
    pub events: Vec<Event>,
    pub stats: ImportStats,
    pub format: TextFormat,
}

/// What the import made of each line.
///
/// `lines == skipped + events + not_understood + continued`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportStats {
    /// Lines in the text.
    pub lines: u64,
    /// Records turned into events, counted at their first line (the ThreadInfo and Drops
    /// records made on top are not counted).
    pub events: u64,
    /// Records that are neither events nor skipped, counted at their first line.
    pub not_understood: u64,
    /// Why records were not understood: `unknown event foo`, `bad field kvm_exit.vcpu`,
    /// `not an event line`, `cpu out of range`, ... -> records.
    pub by_reason: BTreeMap<String, u64>,
    /// Up to 5 of them: (line number from 1, the record, cut to 200 characters).
    pub first_unparsed: Vec<(u64, String)>,
    /// Blank, comment and header lines, lost-event markers, perf callchain lines, and
    /// records deliberately left out (see `notes`).
    pub skipped: u64,
    /// Lines that continue the record before them (wrapped records, columns on one line and
    /// the event on the next).
    pub continued: u64,
    /// What was done to lines that were read differently from the rest, -> lines: `perf
    /// callchain line (skipped)`, `kvm_entry without a timestamp (skipped: ...)`, ...
    pub notes: BTreeMap<String, u64>,
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
    /// The file could not be read. The I/O error is part of the message and not also
    /// reported as the error's source, so a chain printer (`{:#}`) shows it once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
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
    let bytes = std::fs::read(path).map_err(|error| ImportError::Io {
        path: path.to_path_buf(),
        error,
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
    let mut im = Importer::default();
    for (i, l) in text.lines().enumerate() {
        im.line(i as u64 + 1, l);
        if im.votes.events >= DETECT_LINES {
            break;
        }
    }
    im.flush();
    im.votes.decide()
}

#[derive(Default)]
struct Votes {
    hint: Option<TextFormat>,
    /// Event lines per layout: ftrace, trace-cmd, perf.
    by_style: [usize; 3],
    events: usize,
}

impl Votes {
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

/// How a record's first line looked, which decides what may continue it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    /// Task/CPU/time columns (or some of them) and an event.
    Columns,
    /// Only the columns: the event is on the next line.
    HeaderOnly,
    /// No columns at all (`  event: text`), indented this much.
    Bare { indent: usize },
    /// A line that is no record by itself: not understood, for `why`, unless the next line
    /// completes its columns (a record wrapped inside them: `comm-pid [cpu] flags` and the
    /// timestamp and event on the next line).
    Orphan { why: &'static str },
}

/// A record being assembled from one or more lines.
struct Pending {
    /// Line number of its first line.
    no: u64,
    text: String,
    shape: Shape,
    lines: u64,
    /// The last line joined ended in a space (a `format=flowed` soft break).
    trailing_space: bool,
    /// The columns of a one-line record, as parsed when it came (not parsed twice).
    columns: Option<Columns>,
}

/// A [`Line`] whose text parts are kept as byte ranges of the record's text.
struct Columns {
    comm: Range<usize>,
    tid: Option<u32>,
    tgid: Option<u32>,
    cpu: Option<u32>,
    ts: Option<Range<usize>>,
    system: Option<Range<usize>>,
    event: Range<usize>,
    body: Range<usize>,
    style: TextFormat,
}

impl Columns {
    /// `l`'s parts as ranges of `base`, the text it was parsed from; None if one is not in it.
    fn of(l: &Line<'_>, base: &str) -> Option<Columns> {
        let range = |part: &str| -> Option<Range<usize>> {
            if part.is_empty() {
                return Some(0..0);
            }
            let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
            let end = start.checked_add(part.len())?;
            (end <= base.len() && base.is_char_boundary(start) && base.is_char_boundary(end))
                .then_some(start..end)
        };
        Some(Columns {
            comm: range(l.comm)?,
            tid: l.tid,
            tgid: l.tgid,
            cpu: l.cpu,
            ts: match l.ts {
                Some(t) => Some(range(t)?),
                None => None,
            },
            system: match l.system {
                Some(s) => Some(range(s)?),
                None => None,
            },
            event: range(l.event)?,
            body: range(l.body)?,
            style: l.style,
        })
    }

    /// The line again, from the text its ranges are of.
    fn line<'a>(&self, text: &'a str) -> Option<Line<'a>> {
        Some(Line {
            comm: text.get(self.comm.clone())?,
            tid: self.tid,
            tgid: self.tgid,
            cpu: self.cpu,
            ts: match &self.ts {
                Some(r) => Some(text.get(r.clone())?),
                None => None,
            },
            system: match &self.system {
                Some(r) => Some(text.get(r.clone())?),
                None => None,
            },
            event: text.get(self.event.clone())?,
            body: text.get(self.body.clone())?,
            style: self.style,
        })
    }
}

/// An exit whose isa the text does not say: decided at the end by the vote.
struct Undecided {
    /// Index in `Importer::events`.
    at: usize,
    isa: ExitIsa,
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
    pending: Option<Pending>,
    /// A line with columns was seen: lines without any are not records of their own.
    seen_columns: bool,
    /// Exits that said their isa: [VMX, SVM].
    isa_votes: [u64; 2],
    undecided: Vec<Undecided>,
}

fn import_at(text: &str, path: &Path) -> Result<Imported, ImportError> {
    let mut im = Importer::default();
    for (i, l) in text.lines().enumerate() {
        im.line(i as u64 + 1, l);
    }
    im.flush();
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

/// Every Unicode space (NBSP from mail clients, tabs, ...) and U+FFFD (what a no-break
/// space becomes in a text that was not UTF-8) as a plain space.
fn normalise(l: &str) -> Cow<'_, str> {
    let odd = |c: char| c != ' ' && (c.is_whitespace() || c == '\u{fffd}');
    // Most lines are plain ASCII with plain spaces: a byte scan tells.
    let maybe_odd = l.bytes().any(|b| b >= 0x80 || (0x09..=0x0d).contains(&b));
    if maybe_odd && l.contains(odd) {
        Cow::Owned(l.chars().map(|c| if odd(c) { ' ' } else { c }).collect())
    } else {
        Cow::Borrowed(l)
    }
}

/// A perf callchain line: `\t ffffffff81234567 vmx_vcpu_run+0x12 ([kvm_intel])`.
fn callchain(l: &str) -> bool {
    if !l.starts_with(char::is_whitespace) {
        return false;
    }
    let mut words = l.split_whitespace();
    let (Some(addr), Some(_)) = (words.next(), words.next()) else {
        return false;
    };
    addr.len() >= 4
        && addr.bytes().all(|b| b.is_ascii_hexdigit())
        && l.trim_end().ends_with(')')
        && l.contains(" (")
}

/// A record's text parsed: its columns and its event.
type ParsedRecord<'a> = (Line<'a>, Result<Parsed<'a>, Fail>);

/// Parses a record's text: the columns as its shape says, then the event.
fn parse_record(text: &str, shape: Shape) -> Result<ParsedRecord<'_>, line::LineError> {
    let l = match shape {
        Shape::Bare { .. } => {
            let b = line::bare(text).ok_or(line::LineError::NotEvent)?;
            Line {
                comm: "",
                tid: None,
                tgid: None,
                cpu: None,
                ts: None,
                system: b.system,
                event: b.event,
                body: b.body,
                style: if b.padded {
                    TextFormat::TraceCmd
                } else {
                    TextFormat::Ftrace
                },
            }
        }
        Shape::Columns | Shape::HeaderOnly => line::parse_line(text)?,
        Shape::Orphan { .. } => return Err(line::LineError::NotEvent),
    };
    let ev = event_of(&l);
    Ok((l, ev))
}

/// The event of a record's columns (none for columns alone).
fn event_of<'a>(l: &Line<'a>) -> Result<Parsed<'a>, Fail> {
    if l.header_only() {
        Err(Fail::Field("event"))
    } else {
        events::parse(l.event, l.body)
    }
}

impl Importer {
    fn line(&mut self, no: u64, raw: &str) {
        self.stats.lines += 1;
        let l = normalise(raw);
        let l = l.as_ref();
        if let Some(h) = line::header_hint(l) {
            self.votes.hint.get_or_insert(h);
        }
        if line::is_header(l) {
            self.flush();
            self.stats.skipped += 1;
            return;
        }
        self.content_lines += 1;
        if let Some((cpu, n)) = line::lost_marker(l) {
            self.flush();
            self.stats.skipped += 1;
            self.stats.lost_events = self.stats.lost_events.saturating_add(n);
            let pending = self.lost_pending.get_or_insert((cpu, 0));
            pending.1 = pending.1.saturating_add(n);
            return;
        }
        if callchain(l) {
            self.note("perf callchain line (skipped)");
            self.stats.skipped += 1;
            return;
        }
        match line::parse_line(l) {
            Ok(p) if p.tid.is_none() && self.completes_columns(l) => self.join(l),
            Ok(p) => {
                let shape = if p.header_only() {
                    Shape::HeaderOnly
                } else {
                    Shape::Columns
                };
                let columns = Columns::of(&p, l);
                self.flush();
                self.seen_columns = true;
                self.start(no, l, shape);
                if let Some(pending) = &mut self.pending {
                    pending.columns = columns;
                }
            }
            Err(e) => {
                let bare = line::bare(l);
                let known = bare.is_some_and(|b| events::is_known(b.event));
                if self.continues(l, known) {
                    return self.join(l);
                }
                self.flush();
                match bare {
                    Some(b) if known && !self.seen_columns => {
                        self.start(no, l, Shape::Bare { indent: b.indent });
                    }
                    Some(_) if known => {
                        self.fail(no, l, "event line without task, CPU and time columns");
                    }
                    _ => self.start(no, l, Shape::Orphan { why: e.reason() }),
                }
            }
        }
    }

    fn start(&mut self, no: u64, l: &str, shape: Shape) {
        self.pending = Some(Pending {
            no,
            text: l.trim_end().to_string(),
            shape,
            lines: 1,
            trailing_space: l.ends_with(' '),
            columns: None,
        });
    }

    /// Does line `l` (not an event line of its own) continue the pending record?
    fn continues(&self, l: &str, known_event: bool) -> bool {
        let Some(p) = &self.pending else {
            return false;
        };
        if p.lines >= MAX_RECORD_LINES {
            return false;
        }
        let indent = l.len() - l.trim_start().len();
        match p.shape {
            Shape::HeaderOnly => return true,
            Shape::Bare { indent: first } if indent > first => return true,
            Shape::Orphan { .. } => return false,
            _ => {}
        }
        if known_event {
            // A record of its own, not a continuation.
            return false;
        }
        let alone = parse_record(&p.text, p.shape);
        let joined_text = format!("{} {}", p.text, l.trim());
        let joined = parse_record(&joined_text, p.shape);
        match (alone, joined) {
            (_, Err(_)) | (_, Ok((_, Err(_)))) => false,
            (Err(_), Ok(_)) | (Ok((_, Err(_))), Ok(_)) => true,
            (Ok((_, Ok(a))), Ok((_, Ok(b)))) => {
                if matches!(a.payload, Payload::KvmOther(_)) {
                    p.trailing_space && indent == 0 && a.payload != b.payload
                } else {
                    a.payload != b.payload
                }
            }
        }
    }

    /// Does line `l` (columns without a task: `ts: event: ...`) complete the columns of the
    /// pending line that was no record by itself?
    fn completes_columns(&self, l: &str) -> bool {
        let Some(p) = &self.pending else {
            return false;
        };
        if !matches!(p.shape, Shape::Orphan { .. }) {
            return false;
        }
        let joined = format!("{} {}", p.text, l.trim());
        line::parse_line(&joined).is_ok_and(|j| j.tid.is_some())
    }

    fn join(&mut self, l: &str) {
        if let Some(p) = &mut self.pending {
            p.text.push(' ');
            p.text.push_str(l.trim());
            p.lines += 1;
            p.trailing_space = l.ends_with(' ');
            p.columns = None;
            match p.shape {
                // The columns have their event text now; further lines continue it only as
                // any record's would.
                Shape::HeaderOnly => p.shape = Shape::Columns,
                Shape::Orphan { .. } => {
                    p.shape = match line::parse_line(&p.text) {
                        Ok(j) if j.header_only() => Shape::HeaderOnly,
                        _ => Shape::Columns,
                    }
                }
                _ => {}
            }
        }
        self.stats.continued += 1;
    }

    /// Turns the pending record into an event, or counts it as not understood.
    fn flush(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if let Shape::Orphan { why } = p.shape {
            return self.fail(p.no, &p.text, why);
        }
        let parsed = match p.columns.as_ref().and_then(|c| c.line(&p.text)) {
            Some(l) => Ok((l, event_of(&l))),
            None => parse_record(&p.text, p.shape),
        };
        let (l, ev) = match parsed {
            Ok(r) => r,
            Err(e) => return self.fail(p.no, &p.text, e.reason()),
        };
        self.votes.style(l.style);
        if l.header_only() {
            return self.fail(p.no, &p.text, "no event after the columns");
        }
        let ts = match l.ts {
            Some(t) => match line::ts_ns(t) {
                Some(ts) => Some(ts),
                None => return self.fail(p.no, &p.text, "timestamp is not seconds.fraction"),
            },
            None => None,
        };
        let cpu = l.cpu.unwrap_or(0);
        if cpu >= limits::MAX_CPUS {
            return self.fail(p.no, &p.text, "cpu out of range");
        }
        let ev = match ev {
            // perf names the category: an event of another one is not the tracepoint.
            Ok(ev) if l.system.is_some_and(|s| s != ev.system()) => {
                let system = l.system.unwrap_or_default();
                let why = format!("unknown event {system}:{}", l.event);
                return self.fail(p.no, &p.text, &why);
            }
            Ok(ev) => ev,
            Err(f) => {
                let why = match f {
                    Fail::Unknown => format!("unknown event {}", l.event),
                    Fail::Field(field) => format!("bad field {}.{field}", l.event),
                    Fail::ExitReason(r) => format!("unknown exit reason {r}"),
                    Fail::Range(what) => format!("{what} out of range"),
                };
                return self.fail(p.no, &p.text, &why);
            }
        };
        let ts = match ts {
            Some(ts) => ts,
            None => {
                // Excerpts without timestamps: exits count, no latency is measured.
                if ev.kind() == kvmtrace_common::Kind::KvmEntry {
                    self.note(
                        "kvm_entry without a timestamp (skipped: no exit latency can be measured)",
                    );
                    self.stats.skipped += 1;
                    return;
                }
                self.note("event without a timestamp (read at time 0)");
                0
            }
        };
        self.place_lost(ts);
        self.last_ts = self.last_ts.max(ts);

        let tid = l.tid.unwrap_or(ANONYMOUS_TID);
        let t = self.thread(tid, ts, cpu);
        if t.comm.is_none() && !placeholder(l.comm) {
            t.comm = Some(l.comm.to_string());
        }
        if t.tgid.is_none() {
            t.tgid = l.tgid;
        }
        if matches!(ev.system(), "kvm" | "kvmmmu") {
            t.kvm = true;
        }
        if t.vcpu.is_none() {
            t.vcpu = ev.vcpu;
        }
        for (tid, comm) in ev.names.iter().flatten() {
            let t = self.thread(*tid, ts, cpu);
            if t.named.is_none() && !placeholder(comm) {
                t.named = Some((*comm).to_string());
            }
        }
        match ev.exit_isa {
            Some(ExitIsa::Said(ISA_VMX)) => self.isa_votes[0] += 1,
            Some(ExitIsa::Said(ISA_SVM)) => self.isa_votes[1] += 1,
            Some(isa @ (ExitIsa::Ambiguous { .. } | ExitIsa::Unknown)) => {
                self.undecided.push(Undecided {
                    at: self.events.len(),
                    isa,
                });
            }
            _ => {}
        }
        self.stats.events += 1;
        self.events.push(ev.payload.event(Origin {
            ts_ns: ts,
            tid,
            tgid: 0,
            cpu,
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
                cpu: cpu.min(limits::MAX_CPUS - 1),
                ..Default::default()
            };
            self.events.push(Event::new(
                at,
                &ev::Drops {
                    kernel: total,
                    userspace: 0,
                    not_run: 0,
                },
            ));
        }
        self.lost_total = after;
    }

    fn note(&mut self, what: &str) {
        *self.stats.notes.entry(what.to_string()).or_default() += 1;
    }

    fn fail(&mut self, no: u64, l: &str, reason: &str) {
        self.stats.not_understood += 1;
        *self.stats.by_reason.entry(reason.to_string()).or_default() += 1;
        if self.stats.first_unparsed.len() < EXAMPLES {
            self.stats
                .first_unparsed
                .push((no, l.chars().take(EXAMPLE_CHARS).collect()));
        }
    }

    /// The isa of exits whose line did not say it: the text's majority, else SVM for a name
    /// both isas have and VMX for a number (see the module doc).
    fn decide_isas(&mut self) {
        let [vmx, svm] = self.isa_votes;
        let vote = match vmx.cmp(&svm) {
            std::cmp::Ordering::Greater => Some(ISA_VMX),
            std::cmp::Ordering::Less => Some(ISA_SVM),
            std::cmp::Ordering::Equal => None,
        };
        for u in std::mem::take(&mut self.undecided) {
            let Some(e) = self.events.get_mut(u.at) else {
                continue;
            };
            let Some(mut x) = e.get::<ev::KvmExit>() else {
                continue;
            };
            match u.isa {
                ExitIsa::Ambiguous { vmx, svm } => {
                    let isa = vote.unwrap_or(ISA_SVM);
                    x.exit_reason = u64::from(if isa == ISA_VMX { vmx } else { svm });
                    x.isa = Some(isa);
                }
                ExitIsa::Unknown => x.isa = Some(vote.unwrap_or(ISA_VMX)),
                ExitIsa::Said(_) => continue,
            }
            *e = Event::new(e.origin(), &x);
        }
    }

    fn finish(mut self) -> (Vec<Event>, ImportStats) {
        let last = self.last_ts;
        self.place_lost(last);
        self.decide_isas();
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
