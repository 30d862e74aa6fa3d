//! Interrupt-to-guest windows: opened by a raise, closed when the guest runs with the
//! interrupt; closed samples wait for the next drop checkpoint, then count (or are
//! discarded as incomplete); the worst are kept with their timelines.

use kvmtrace_common::Event;

use super::vcpu::{Ctx, Sched};
use super::{Cause, Engine};
use crate::capture::Trigger;

/// How a window was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndMarker {
    /// The `kvm_entry` that runs the guest with the interrupt (VMX/SVM hosts).
    KvmEntry,
    /// No `kvm_entry` on this kernel: the first exit the guest caused after it could run.
    FirstGuestExit,
    /// Posted into the running guest (no injection before the next entry): latency 0.
    PostedInGuest,
}

impl EndMarker {
    pub fn name(self) -> &'static str {
        match self {
            EndMarker::KvmEntry => "kvm_entry",
            EndMarker::FirstGuestExit => "first_guest_exit",
            EndMarker::PostedInGuest => "posted_in_guest",
        }
    }
}

/// What opened a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenedBy {
    SetIrq,
    MsiSetIrq,
    ApicAcceptIrq,
    LapicTimer,
}

impl OpenedBy {
    /// The name reports use (`opened_by` in docs/report-schema.md).
    pub fn name(self) -> &'static str {
        match self {
            OpenedBy::SetIrq => "SetIrq",
            OpenedBy::MsiSetIrq => "MsiSetIrq",
            OpenedBy::ApicAcceptIrq => "ApicAcceptIrq",
            OpenedBy::LapicTimer => "LapicTimer",
        }
    }
}

/// One interrupt-to-guest latency, attributed.
#[derive(Clone, Debug)]
pub struct Sample {
    pub tid: u32,
    pub tgid: u32,
    pub open_ns: u64,
    pub total_ns: u64,
    /// Causes, largest first; they add up to `total_ns`.
    pub causes: Vec<(Cause, u64)>,
    pub end_marker: EndMarker,
    pub opened_by: OpenedBy,
    /// Events inside the window, in order (capped at `timeline_events`).
    pub events: Vec<Event>,
    pub events_dropped: u32,
    /// The window's time as consecutive (start ns, end ns, cause) stretches, adjacent ones
    /// of the same cause merged (capped at `timeline_events`; the causes stay exact).
    pub segments: Vec<(u64, u64, Cause)>,
}

/// A closed window waiting for the next drop checkpoint.
pub(super) struct Closed {
    sample: Sample,
}

pub(super) struct Window {
    pub open_ns: u64,
    pub opened_by: OpenedBy,
    /// The vCPU was running its guest when the interrupt arrived.
    pub opened_in_guest: bool,
    /// `kvm_inj_virq` seen since the window opened.
    pub injected: bool,
    /// The vCPU could run the guest since the window opened (not halted at open, or woken).
    pub can_run: bool,
    pub incomplete: bool,
    causes: Vec<(Cause, u64)>,
    events: Vec<Event>,
    events_dropped: u32,
    segments: Vec<(u64, u64, Cause)>,
}

impl Window {
    pub(super) fn add_segment(&mut self, start: u64, end: u64, cause: Cause, cap: usize) {
        self.add(cause, end - start);
        let n = self.segments.len();
        match self.segments.last_mut() {
            Some(last) if last.2 == cause && last.1 == start => last.1 = end,
            _ if n < cap => self.segments.push((start, end, cause)),
            _ => {}
        }
    }

    fn add(&mut self, cause: Cause, ns: u64) {
        if ns == 0 {
            return;
        }
        match self.causes.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, t)) => *t += ns,
            None => self.causes.push((cause, ns)),
        }
    }

    /// Gives the time of placeholder cause `from` to `to`.
    pub(super) fn relabel(&mut self, from: Cause, to: Cause) {
        if let Some(i) = self.causes.iter().position(|(c, _)| *c == from) {
            let (_, ns) = self.causes.swap_remove(i);
            self.add(to, ns);
        }
        for seg in self.segments.iter_mut().filter(|s| s.2 == from) {
            seg.2 = to;
        }
    }
}

impl Engine {
    pub(super) fn note_in_window(&mut self, tid: u32, e: &Event) {
        let cap = self.cfg.timeline_events;
        if let Some(w) = self.vcpus.get_mut(&tid).and_then(|v| v.window.as_mut()) {
            if w.events.len() < cap {
                w.events.push(*e);
            } else {
                w.events_dropped += 1;
            }
        }
    }

    pub(super) fn open_window(&mut self, tid: u32, ts: u64, by: OpenedBy, e: &Event) {
        self.account(tid, ts);
        let cap = self.cfg.timeline_events;
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        if let Some(w) = &v.window {
            // The same raise reaching the vCPU through a second chip (PIC and IOAPIC) is
            // not a second interrupt.
            if w.open_ns != ts {
                v.stats.coalesced += 1;
            }
            return;
        }
        let halted =
            v.sched == Sched::Blocked && matches!(v.ctx, Ctx::Halt | Ctx::MaybeHalt { .. });
        let in_guest = v.sched == Sched::OnCpu && v.ctx == Ctx::Guest;
        let mut events = Vec::with_capacity(cap.min(64));
        events.push(*e);
        v.window = Some(Window {
            open_ns: ts.max(v.seg_start),
            opened_by: by,
            opened_in_guest: in_guest,
            injected: false,
            can_run: !halted,
            incomplete: v.sched == Sched::Unknown || v.ctx == Ctx::Unknown,
            causes: Vec::with_capacity(8),
            events,
            events_dropped: 0,
            segments: Vec::with_capacity(16),
        });
    }

    pub(super) fn close_window(&mut self, tid: u32, ts: u64, marker: EndMarker) {
        self.account(tid, ts);
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        let Some(mut w) = v.window.take() else {
            return;
        };
        if w.incomplete {
            v.stats.incomplete += 1;
            return;
        }
        let total = if marker == EndMarker::PostedInGuest {
            w.causes.clear();
            w.segments.clear();
            0
        } else {
            v.seg_start - w.open_ns
        };
        w.causes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let closed = Closed {
            sample: Sample {
                tid,
                tgid: v.tgid,
                open_ns: w.open_ns,
                total_ns: total,
                causes: w.causes,
                end_marker: marker,
                opened_by: w.opened_by,
                events: w.events,
                events_dropped: w.events_dropped,
                segments: w.segments,
            },
        };
        if self.checkpointed {
            self.pending.push(closed);
        } else {
            self.commit(closed);
        }
    }

    /// Closes windows whose end was lost (checked every 10 ms of stream time).
    pub(super) fn expire_windows(&mut self, ts: u64) {
        if ts < self.next_expiry_check {
            return;
        }
        self.next_expiry_check = ts + 10_000_000;
        let max = self.cfg.max_window_ns;
        for v in self.vcpus.values_mut() {
            if v.window
                .as_ref()
                .is_some_and(|w| ts.saturating_sub(w.open_ns) > max)
            {
                v.window = None;
                v.stats.incomplete += 1;
            }
        }
    }

    /// A drop-counter checkpoint (the session writes one after every read of the ring
    /// buffer). Events lost since the previous checkpoint may belong to any window open now
    /// or closed since then: those are incomplete; the others are committed.
    pub(super) fn on_drops(&mut self, total: u64) {
        self.checkpointed = true;
        let pending = std::mem::take(&mut self.pending);
        if total > self.last_drops {
            self.dropped += total - self.last_drops;
            self.last_drops = total;
            for v in self.vcpus.values_mut() {
                if let Some(w) = &mut v.window {
                    w.incomplete = true;
                }
            }
            for c in pending {
                if let Some(v) = self.vcpus.get_mut(&c.sample.tid) {
                    v.stats.incomplete += 1;
                }
            }
        } else {
            for c in pending {
                self.commit(c);
            }
        }
    }

    /// Samples over `trigger_ns` committed since the last call.
    pub fn take_triggers(&mut self) -> Vec<Trigger> {
        std::mem::take(&mut self.triggers)
    }

    /// Counts a complete sample.
    pub(super) fn commit(&mut self, c: Closed) {
        let s = c.sample;
        if self.cfg.trigger_ns.is_some_and(|t| s.total_ns >= t) && self.triggers.len() < 1024 {
            self.triggers.push(Trigger {
                tid: s.tid,
                open_ns: s.open_ns,
                total_ns: s.total_ns,
            });
        }
        let Some(v) = self.vcpus.get_mut(&s.tid) else {
            return;
        };
        let _ = v.stats.irq_to_guest.record(s.total_ns.max(1));
        v.stats.irq_total_ns += s.total_ns;
        *v.stats.end_markers.entry(s.end_marker).or_default() += 1;
        for &(cause, ns) in &s.causes {
            *v.stats.irq_causes.entry(cause).or_default() += ns;
        }
        let n = self.cfg.worst;
        let smallest = self.worst.last().map_or(0, |w| w.total_ns);
        if n > 0 && (self.worst.len() < n || s.total_ns > smallest) {
            let at = self.worst.partition_point(|w| w.total_ns >= s.total_ns);
            self.worst.insert(at, s);
            self.worst.truncate(n);
        }
    }
}
