//! Kernel stacks (docs/stacks.md): which stack each segment of a vCPU's time goes to.
//!
//! Additive to the attribution: `account` asks [`Stacks::segment`] how to split each
//! segment it closes over [`StackKey`]s, and the split always adds up to the segment, so
//! the stack weights of a vCPU's time, of a window and of its committed latency add up to
//! their causes exactly. Nothing here changes a cause, a state or a window.
//!
//! The stack programs' `stack_at` records and userspace's definitions are side-band:
//! indexed as they are pushed, before the reorder buffer releases the events around them,
//! so the stack a culprit left at the switch that ends a segment is known when that switch
//! closes it. Profile ticks (`stack_sample`) go through the reorder buffer like events: a
//! tick belongs to the segment open at its time.

use std::collections::{BTreeMap, VecDeque};

use kvmtrace_common::{ev, limits, stack, Event, Payload};

use super::fxhash::FxHashMap;
use super::vcpu::{Sched, Vcpu};
use super::{Cause, Engine};

/// Where a piece of time's stack comes from: the marker frame of a folded line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackSource {
    /// `cpu-clock` profile ticks during the segment, the time split by their count.
    Sampled,
    /// The culprit's stack where it switched out, at the end of a segment no tick fell in.
    SwitchedOut,
    /// The vCPU thread's own stack where it went to sleep.
    Blocked,
    /// The vCPU thread's stack at lock contention.
    Contended,
    /// The stack at the host interrupt's (or softirq's) entry.
    IrqEntry,
}

impl StackSource {
    /// The marker frame in folded output.
    pub fn marker(self) -> &'static str {
        match self {
            StackSource::Sampled => "[sampled]",
            StackSource::SwitchedOut => "[switched out]",
            StackSource::Blocked => "[blocked]",
            StackSource::Contended => "[contended]",
            StackSource::IrqEntry => "[irq entry]",
        }
    }

    /// As in JSON (`source` of a worst sample's stack).
    pub fn name(self) -> &'static str {
        match self {
            StackSource::Sampled => "sampled",
            StackSource::SwitchedOut => "switched_out",
            StackSource::Blocked => "blocked",
            StackSource::Contended => "contended",
            StackSource::IrqEntry => "irq_entry",
        }
    }
}

/// A kernel stack, or why a stack program's record has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackRef {
    /// The id of a stack whose frames the stream defines ([`StackTables::frames`]).
    Id(u32),
    /// A profile tick in user space: no kernel stack.
    User,
    /// Taken but not stored: the kernel's errno (`EEXIST`: the stack map had no room).
    Lost(u16),
}

impl StackRef {
    fn of(stack: u64, error: u64) -> StackRef {
        match error {
            0 => StackRef::Id(stack as u32),
            stack::EFAULT => StackRef::User,
            e => StackRef::Lost(e.min(u64::from(u16::MAX)) as u16),
        }
    }
}

/// Where a piece of a vCPU's time goes besides its cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackKey {
    Stack {
        source: StackSource,
        stack: StackRef,
        /// The task the stack is of, when it is not the vCPU thread's own: whoever had the
        /// CPU while the vCPU waited for it.
        task: Option<u32>,
    },
    /// Guest time: no host stack.
    Guest,
    /// No tick fell in the segment and no event stack applies.
    NotSampled,
    /// Time before the stream's first stack record, or beyond the bookkeeping's bounds.
    NoData,
}

/// Entries an accumulator keeps; more (cause, key) pairs go to `NoData`.
const MAX_ACC: usize = 1 << 16;

/// Nanoseconds by (cause, stack key).
#[derive(Clone, Debug, Default)]
pub struct StackAcc {
    ns: FxHashMap<(Cause, StackKey), u64>,
    /// Keys per cause: a relabel of a cause with none (the common case: the engine renames
    /// placeholders at every event of a vCPU) costs one lookup, not a scan.
    keys: FxHashMap<Cause, u32>,
}

impl StackAcc {
    /// Adds a segment of `cause` split over stack keys.
    pub(super) fn add(&mut self, cause: Cause, split: &[(StackKey, u64)]) {
        for &(key, ns) in split {
            self.add_one(cause, key, ns);
        }
    }

    fn add_one(&mut self, cause: Cause, key: StackKey, ns: u64) {
        let key = if self.ns.len() >= MAX_ACC && !self.ns.contains_key(&(cause, key)) {
            StackKey::NoData
        } else {
            key
        };
        match self.ns.entry((cause, key)) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let t = o.get_mut();
                *t = t.saturating_add(ns);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(ns);
                *self.keys.entry(cause).or_default() += 1;
            }
        }
    }

    /// Gives placeholder cause `from`'s time to `to` (as the cause split does).
    pub(super) fn relabel(&mut self, from: Cause, to: Cause) {
        if self.keys.remove(&from).is_none() {
            return;
        }
        let moved: Vec<(StackKey, u64)> = self
            .ns
            .iter()
            .filter(|((c, _), _)| *c == from)
            .map(|((_, k), ns)| (*k, *ns))
            .collect();
        for (k, ns) in moved {
            self.ns.remove(&(from, k));
            self.add_one(to, k, ns);
        }
    }

    /// Adds a committed sample's split.
    pub(super) fn merge(&mut self, split: &[(Cause, StackKey, u64)]) {
        for &(c, k, ns) in split {
            self.add_one(c, k, ns);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// Every (cause, key, ns), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Cause, StackKey, u64)> + '_ {
        self.ns.iter().map(|(&(c, k), &ns)| (c, k, ns))
    }

    /// The entries, largest first.
    pub(super) fn into_sorted(self) -> Vec<(Cause, StackKey, u64)> {
        if self.ns.is_empty() {
            return Vec::new();
        }
        let mut v: Vec<(Cause, StackKey, u64)> =
            self.ns.into_iter().map(|((c, k), ns)| (c, k, ns)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        v
    }
}

/// Stack definitions kept; more are counted and their stacks show as not in the capture.
pub const MAX_STACK_DEFS: usize = 1 << 16;
/// Symbols kept.
pub const MAX_SYMBOLS: usize = 1 << 18;

/// One function's range and name, assembled from its `symbol` records.
#[derive(Clone, Debug)]
struct SymbolDef {
    end: u64,
    text: Vec<u8>,
}

/// The stacks' frames and the functions' names the stream defined.
#[derive(Debug, Default)]
pub struct StackTables {
    /// Stack id -> frames, innermost first (0 where a piece has not arrived).
    stacks: FxHashMap<u32, Vec<u64>>,
    /// Function start -> its end and name.
    symbols: BTreeMap<u64, SymbolDef>,
    /// Definitions beyond the bounds, not kept.
    pub dropped: u64,
}

impl StackTables {
    fn add_frames(&mut self, r: &ev::StackFrames) {
        let Ok(id) = u32::try_from(r.stack) else {
            self.dropped += 1;
            return;
        };
        let total = r.total().min(limits::STACK_DEPTH as usize);
        if !self.stacks.contains_key(&id) && self.stacks.len() >= MAX_STACK_DEFS {
            self.dropped += 1;
            return;
        }
        let frames = self.stacks.entry(id).or_insert_with(|| vec![0; total]);
        for (i, ip) in r.frames() {
            if let Some(f) = frames.get_mut(i) {
                *f = ip;
            }
        }
    }

    fn add_symbol(&mut self, r: &ev::Symbol) {
        let len = r.len().min(stack::MAX_TEXT);
        if !self.symbols.contains_key(&r.start) && self.symbols.len() >= MAX_SYMBOLS {
            self.dropped += 1;
            return;
        }
        let s = self.symbols.entry(r.start).or_insert_with(|| SymbolDef {
            end: r.end,
            text: vec![0; len],
        });
        let at = r.offset();
        for (i, b) in r.piece().iter().enumerate() {
            if let Some(t) = s.text.get_mut(at.saturating_add(i)) {
                *t = *b;
            }
        }
    }

    /// Stack `id`'s frames, innermost first; None when the stream does not define it.
    pub fn frames(&self, id: u32) -> Option<&[u64]> {
        self.stacks.get(&id).map(Vec::as_slice)
    }

    /// The name of the function `ip` is in (`name` or `name [module]`).
    pub fn symbol(&self, ip: u64) -> Option<String> {
        let (_, s) = self.symbols.range(..=ip).next_back()?;
        (ip < s.end).then(|| {
            let end = s.text.iter().position(|&b| b == 0).unwrap_or(s.text.len());
            String::from_utf8_lossy(&s.text[..end]).into_owned()
        })
    }

    /// Stacks and symbols defined.
    pub fn counts(&self) -> (usize, usize) {
        (self.stacks.len(), self.symbols.len())
    }
}

/// What the stream's stack records were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounts {
    /// `stack_at` records (stacks at events).
    pub at_events: u64,
    /// `stack_sample` records (profile ticks).
    pub samples: u64,
    /// Profile ticks in user space (no kernel stack).
    pub user: u64,
    /// Stacks taken but not stored by the kernel (`EEXIST`: the stack map had no room).
    pub lost: u64,
}

/// A stack taken at an event.
#[derive(Clone, Copy, Debug)]
struct AtStack {
    ts: u64,
    tid: u32,
    what: u64,
    stack: StackRef,
}

/// How far apart a stack record and the event it belongs to may be (two programs run one
/// after the other on one tracepoint: a few microseconds at most).
const NEAR_NS: u64 = 50_000;
/// Event stacks kept per CPU and per vCPU thread.
const PER_CPU: usize = 512;
const PER_VCPU: usize = 64;
/// Ticks kept per vCPU segment (about 0.8 s at 4999 Hz): the split of a longer segment
/// uses the first ones.
const MAX_TICKS: usize = 4096;
/// An irq entry stack older than this is not the one still running.
const IRQ_SPAN_NS: u64 = 10_000_000;
/// A profile tick this soon after a `local_timer_entry` on its CPU fired in that interrupt.
const TICK_IN_TIMER_NS: u64 = 100_000;

/// Per vCPU thread: its own recent stacks, and the ticks since its segment began.
#[derive(Default)]
struct VcpuStacks {
    /// Its switch-out and contention stacks, oldest first.
    own: VecDeque<AtStack>,
    /// End of its last segment on a CPU, and of its last one not contended.
    ran_until: u64,
    uncontended_until: u64,
    /// (task that had the CPU, its stack) per tick on the vCPU's CPU.
    ticks: Vec<(u32, StackRef)>,
}

/// The engine's stack bookkeeping (docs/stacks.md).
#[derive(Default)]
pub struct Stacks {
    /// A stack record was seen: segments are split from then on.
    on: bool,
    tables: StackTables,
    counts: StackCounts,
    /// Per CPU: recent event stacks, oldest first.
    recent: Vec<VecDeque<AtStack>>,
    /// Per CPU: the `local_timer_entry` of the timer interrupt running there (the one a
    /// profile tick fires in), 0 when none is.
    timer_entry: Vec<u64>,
    vcpus: FxHashMap<u32, VcpuStacks>,
    split: Vec<(StackKey, u64)>,
    keyed: Vec<(StackKey, u64)>,
}

/// What [`Engine::push`] does with an event after [`Engine::stacks_push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Not a stack record: counted and processed as usual.
    Event,
    /// A definition or an event stack: indexed, nothing more.
    Consumed,
    /// A profile tick, timed at the interrupt it fired in: not counted as an event,
    /// processed in time order.
    Tick(Event),
}

fn push_bounded(q: &mut VecDeque<AtStack>, cap: usize, s: AtStack) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(s);
}

impl Stacks {
    /// Is stack bookkeeping on (the stream has stack records)?
    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn tables(&self) -> &StackTables {
        &self.tables
    }

    pub fn counts(&self) -> StackCounts {
        self.counts
    }

    /// The local APIC timer interrupt on `e.cpu` began at `entry` (0: it ended).
    fn note_timer(&mut self, e: &Event, entry: u64) {
        if e.cpu >= limits::MAX_CPUS {
            return;
        }
        let i = e.cpu as usize;
        if self.timer_entry.len() <= i {
            self.timer_entry.resize(i + 1, 0);
        }
        if let Some(t) = self.timer_entry.get_mut(i) {
            *t = entry;
        }
    }

    /// A profile tick fires inside the local APIC timer interrupt (`cpu-clock` is an
    /// hrtimer), whose `local_timer_entry` opened an `apic:local_timer` segment a few
    /// microseconds before the tick's own clock read; but its stack is of the context the
    /// interrupt came in on. Timed just before that entry, the tick falls in the segment of
    /// the code it sampled. (Both records are from one CPU, in order, so the entry is
    /// already indexed when the tick is pushed.)
    /// Not before `released` (what the reorder buffer has let go): a tick read just after
    /// a ring-buffer read whose checkpoint released its interrupt's entry keeps its time
    /// rather than arrive late.
    fn tick_time(&self, e: &Event, released: u64) -> Event {
        let entry = self.timer_entry.get(e.cpu as usize).copied().unwrap_or(0);
        let mut tick = *e;
        if entry > released && entry <= e.ts_ns && e.ts_ns - entry <= TICK_IN_TIMER_NS {
            tick.ts_ns = entry - 1;
        }
        tick
    }

    fn cpu(&mut self, cpu: u32) -> Option<&mut VecDeque<AtStack>> {
        if cpu >= limits::MAX_CPUS {
            return None;
        }
        let i = cpu as usize;
        if self.recent.len() <= i {
            self.recent.resize_with(i + 1, VecDeque::new);
        }
        self.recent.get_mut(i)
    }

    /// The split of the segment of `v` that ends at `end` and goes to `cause` (the engine
    /// then adds it wherever it adds the cause). Empty while the stream has no stacks.
    pub(super) fn segment(&mut self, v: &Vcpu, cause: Cause, end: u64) -> &[(StackKey, u64)] {
        self.split.clear();
        if !self.on {
            return &self.split;
        }
        let start = v.seg_start;
        let ns = end.saturating_sub(start);
        let cpu = v.cpu();
        let on_cpu = matches!(v.sched, Sched::OnCpu | Sched::Unknown);
        let vs = self.vcpus.entry(v.tid).or_default();
        let ticks = std::mem::take(&mut vs.ticks);
        let own = &vs.own;
        let (ran_until, uncontended_until) = (vs.ran_until, vs.uncontended_until);
        let recent = cpu.and_then(|c| self.recent.get(c as usize));
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        // The tick split for a rule: Some(task key) keeps a tick.
        let mut sampled = |keep: &dyn Fn(u32) -> Option<Option<u32>>| {
            for &(task, stack) in &ticks {
                if let Some(task) = keep(task) {
                    let source = StackSource::Sampled;
                    keyed.push((
                        StackKey::Stack {
                            source,
                            stack,
                            task,
                        },
                        1,
                    ));
                }
            }
            !keyed.is_empty()
        };
        // The latest own stack of `what` taken after `after` (and by the segment's start).
        let own_stack = |what: u64, after: u64| {
            own.iter()
                .rev()
                .find(|s| {
                    s.what == what
                        && s.ts <= start.saturating_add(NEAR_NS)
                        && s.ts.saturating_add(NEAR_NS) >= after
                })
                .map(|s| s.stack)
        };
        let tid = v.tid;
        let fallback = match cause {
            Cause::Guest | Cause::GuestIrqsOff | Cause::GuestPending | Cause::GuestUndelivered => {
                Some(StackKey::Guest)
            }
            Cause::Hardirq { .. } | Cause::Softirq { .. } | Cause::Apic(_) => {
                if sampled(&|_| Some(None)) {
                    None
                } else {
                    let what = match cause {
                        Cause::Hardirq { .. } => stack::HARDIRQ,
                        Cause::Softirq { .. } => stack::SOFTIRQ,
                        _ => 0,
                    };
                    let entry = recent.and_then(|r| {
                        r.iter().rev().find(|s| {
                            s.what == what
                                && s.ts <= start.saturating_add(NEAR_NS)
                                && s.ts.saturating_add(IRQ_SPAN_NS) >= start
                        })
                    });
                    Some(entry.map_or(StackKey::NotSampled, |s| StackKey::Stack {
                        source: StackSource::IrqEntry,
                        stack: s.stack,
                        task: None,
                    }))
                }
            }
            Cause::Preempted { .. } | Cause::Tracer | Cause::Wakeup | Cause::UnresolvedWaiting => {
                // The task is kept even when the cause names it: a waiting placeholder is
                // named only at the switch-in (the report leaves out a task its cause names).
                if sampled(&|t| (t != tid).then_some(Some(t))) {
                    None
                } else {
                    // The culprit handing the CPU back at the end of the segment.
                    let out = recent.and_then(|r| {
                        r.iter()
                            .filter(|s| s.what == stack::SWITCH && s.tid != tid)
                            .filter(|s| s.ts.abs_diff(end) <= NEAR_NS)
                            .min_by_key(|s| s.ts.abs_diff(end))
                    });
                    Some(out.map_or(StackKey::NotSampled, |s| StackKey::Stack {
                        source: StackSource::SwitchedOut,
                        stack: s.stack,
                        task: Some(s.tid),
                    }))
                }
            }
            Cause::Halted
            | Cause::Blocked
            | Cause::BlockedExit { .. }
            | Cause::UnresolvedBlocked => Some(blocked(own_stack(stack::SWITCH, ran_until))),
            Cause::Lock | Cause::Vmm { .. } if !on_cpu => {
                let b = own_stack(stack::SWITCH, ran_until);
                Some(match (b, cause) {
                    (None, Cause::Lock) => {
                        contended(own_stack(stack::CONTENTION, uncontended_until))
                    }
                    _ => blocked(b),
                })
            }
            Cause::Lock => {
                if sampled(&|t| (t == tid).then_some(None)) {
                    None
                } else {
                    Some(contended(own_stack(stack::CONTENTION, uncontended_until)))
                }
            }
            Cause::KvmRun
            | Cause::Exit { .. }
            | Cause::Vmm { .. }
            | Cause::Other
            | Cause::UnresolvedRunning
            | Cause::UnresolvedExit => {
                if sampled(&|t| (t == tid).then_some(None)) {
                    None
                } else {
                    Some(StackKey::NotSampled)
                }
            }
        };
        match fallback {
            Some(key) => self.split.push((key, ns)),
            None => split_by_count(&mut keyed, ns, &mut self.split),
        }
        self.keyed = keyed;
        let vs = self.vcpus.entry(tid).or_default();
        if v.sched == Sched::OnCpu {
            vs.ran_until = end;
        }
        if cause != Cause::Lock {
            vs.uncontended_until = end;
        }
        let mut ticks = ticks;
        ticks.clear();
        vs.ticks = ticks;
        &self.split
    }
}

fn blocked(s: Option<StackRef>) -> StackKey {
    s.map_or(StackKey::NotSampled, |stack| StackKey::Stack {
        source: StackSource::Blocked,
        stack,
        task: None,
    })
}

fn contended(s: Option<StackRef>) -> StackKey {
    s.map_or(StackKey::NotSampled, |stack| StackKey::Stack {
        source: StackSource::Contended,
        stack,
        task: None,
    })
}

/// Splits `ns` over the keys in proportion to how often each occurs in `keyed` (which it
/// sorts), into `out`; the parts add up to `ns` exactly (the remainder goes to the most
/// frequent key).
fn split_by_count(keyed: &mut [(StackKey, u64)], ns: u64, out: &mut Vec<(StackKey, u64)>) {
    keyed.sort_unstable_by_key(|k| k.0);
    let total = keyed.len() as u128;
    let start = out.len();
    let mut given = 0u64;
    let mut i = 0;
    while i < keyed.len() {
        let key = keyed[i].0;
        let n = keyed[i..].iter().take_while(|k| k.0 == key).count();
        let part = (u128::from(ns) * n as u128 / total) as u64;
        given += part;
        out.push((key, part));
        i += n;
    }
    if let Some(most) = out[start..].iter_mut().max_by_key(|p| p.1) {
        most.1 += ns - given;
    }
}

impl Engine {
    /// The stream's kernel stacks: definitions, counts (docs/stacks.md).
    pub fn stacks(&self) -> &Stacks {
        &self.stacks
    }

    /// Takes a stack record as it is pushed: definitions and event stacks are indexed at
    /// once (side-band); a profile tick waits for its time like an event.
    pub(super) fn stacks_push(&mut self, e: &Event) -> Pushed {
        if !e.kind().is_ok_and(|k| k.is_stack_record()) {
            if self.stacks.on {
                if e.get::<ev::LocalTimerEntry>().is_some() {
                    self.stacks.note_timer(e, e.ts_ns);
                } else if e.get::<ev::LocalTimerExit>().is_some() {
                    self.stacks.note_timer(e, 0);
                }
            }
            return Pushed::Event;
        }
        self.stacks.on = true;
        match e.payload() {
            Some(Payload::StackFrames(r)) => self.stacks.tables.add_frames(&r),
            Some(Payload::Symbol(r)) => self.stacks.tables.add_symbol(&r),
            Some(Payload::StackAt(r)) => {
                self.stacks.counts.at_events += 1;
                let s = AtStack {
                    ts: e.ts_ns,
                    tid: e.tid,
                    what: r.what,
                    stack: StackRef::of(r.stack, r.error),
                };
                if matches!(s.stack, StackRef::Lost(_)) {
                    self.stacks.counts.lost += 1;
                }
                let own = matches!(r.what, stack::SWITCH | stack::CONTENTION)
                    && (self.vcpus.contains_key(&e.tid) || self.announced.contains_key(&e.tid));
                if own {
                    let q = &mut self.stacks.vcpus.entry(e.tid).or_default().own;
                    push_bounded(q, PER_VCPU, s);
                }
                if let Some(q) = self.stacks.cpu(e.cpu) {
                    push_bounded(q, PER_CPU, s);
                }
            }
            Some(Payload::StackSample(_)) => {
                return Pushed::Tick(self.stacks.tick_time(e, self.reorder.released))
            }
            _ => {}
        }
        Pushed::Consumed
    }

    /// A profile tick, in time order: it belongs to the current segment of each vCPU
    /// thread on (or waiting for) its CPU.
    pub(super) fn on_stack_sample(&mut self, e: &Event, x: &ev::StackSample) {
        let stack = StackRef::of(x.stack, x.error);
        let c = &mut self.stacks.counts;
        c.samples += 1;
        match stack {
            StackRef::User => c.user += 1,
            StackRef::Lost(_) => c.lost += 1,
            StackRef::Id(_) => {}
        }
        for v in self.vcpus.values() {
            if v.cpu() != Some(e.cpu) || v.sched == Sched::Blocked {
                continue;
            }
            let ticks = &mut self.stacks.vcpus.entry(v.tid).or_default().ticks;
            if ticks.len() < MAX_TICKS {
                ticks.push((e.tid, stack));
            }
        }
    }
}

#[cfg(test)]
#[path = "stacks_tests.rs"]
mod scenarios;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> StackKey {
        StackKey::Stack {
            source: StackSource::Sampled,
            stack: StackRef::Id(id),
            task: None,
        }
    }

    #[test]
    fn a_split_by_count_adds_up_exactly() {
        let mut keyed = vec![(key(2), 1), (key(1), 1), (key(2), 1)];
        let mut out = Vec::new();
        split_by_count(&mut keyed, 1000, &mut out);
        assert_eq!(out.iter().map(|p| p.1).sum::<u64>(), 1000);
        assert_eq!(out, vec![(key(1), 333), (key(2), 667)]);
        out.clear();
        split_by_count(&mut [(key(7), 1)], 5, &mut out);
        assert_eq!(out, vec![(key(7), 5)]);
    }

    #[test]
    fn an_accumulator_relabels_placeholders_and_stays_bounded() {
        let mut a = StackAcc::default();
        a.add(Cause::UnresolvedWaiting, &[(key(1), 10), (key(2), 5)]);
        a.add(Cause::Preempted { pid: 9 }, &[(key(1), 1)]);
        a.relabel(Cause::UnresolvedWaiting, Cause::Preempted { pid: 9 });
        let mut v = a.clone().into_sorted();
        v.sort();
        assert_eq!(
            v,
            vec![
                (Cause::Preempted { pid: 9 }, key(1), 11),
                (Cause::Preempted { pid: 9 }, key(2), 5)
            ]
        );
        let mut big = StackAcc::default();
        for i in 0..(MAX_ACC as u32 + 10) {
            big.add(Cause::KvmRun, &[(key(i), 1)]);
        }
        assert_eq!(big.ns.len(), MAX_ACC + 1, "the rest went to NoData");
        assert_eq!(big.iter().map(|e| e.2).sum::<u64>(), MAX_ACC as u64 + 10);
    }

    #[test]
    fn tables_assemble_definitions_from_their_pieces() {
        let mut t = StackTables::default();
        let frames = [0xffff_0010, 0xffff_0120, 0xffff_0130, 0xffff_0200];
        for r in ev::StackFrames::chunks(3, &frames)
            .collect::<Vec<_>>()
            .iter()
            .rev()
        {
            t.add_frames(r);
        }
        assert_eq!(t.frames(3), Some(&frames[..]));
        assert_eq!(t.frames(4), None);
        for r in ev::Symbol::chunks(0xffff_0100, 0xffff_0180, "kvm_vcpu_ioctl_with_a_long_name") {
            t.add_symbol(&r);
        }
        assert_eq!(
            t.symbol(0xffff_0120).as_deref(),
            Some("kvm_vcpu_ioctl_with_a_long_name")
        );
        assert_eq!(t.symbol(0xffff_0180), None, "past the function's end");
        assert_eq!(t.symbol(0xffff_0010), None, "no symbol below");
        assert_eq!(t.counts(), (1, 1));
    }
}
