//! Interrupt-to-guest windows: opened when an interrupt is raised for a vCPU, closed when the
//! guest runs with it; closed samples wait for the next drop checkpoint, then count (or are
//! discarded as incomplete); the worst are kept with their timelines.
//!
//! A vCPU may have several windows open, one per pending vector (docs/attribution.md). Each
//! collects the vCPU's segments while it is open, so its causes add up to its total.

use kvmtrace_common::Event;

use super::vcpu::{Ctx, Sched, Vcpu};
use super::{Cause, Engine, StackAcc, StackKey};
use crate::capture::Trigger;

/// Windows a vCPU may have open at once; one more is counted, not opened.
pub const MAX_WINDOWS: usize = 16;

/// How a window was closed: the delivery evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndMarker {
    /// `kvm_inj_virq` of the window's vector, then the `kvm_entry` that runs the guest
    /// with it (VMX/SVM without APICv/AVIC).
    KvmEntry,
    /// Posted (`kvm_apicv_accept_irq`) while the vCPU was out of the guest: the next
    /// `kvm_entry` (PIR/vIRR synced before it).
    PostedEntry,
    /// Posted into the running guest: delivered by hardware at the posting.
    PostedInGuest,
    /// A halted vCPU woken with no visible raise (VT-d posting, IPI virtualization, AVIC
    /// doorbell): its next `kvm_entry`.
    WokenEntry,
    /// The stream has no `kvm_inj_virq` (not traced): the first `kvm_entry` after the
    /// raise, which may be early when the guest could not take the interrupt then.
    FirstEntry,
    /// No `kvm_entry` on this kernel (the PVM backend): the first exit the guest caused
    /// after it could run.
    FirstGuestExit,
}

impl EndMarker {
    pub fn name(self) -> &'static str {
        match self {
            EndMarker::KvmEntry => "kvm_entry",
            EndMarker::PostedEntry => "posted_entry",
            EndMarker::PostedInGuest => "posted_in_guest",
            EndMarker::WokenEntry => "woken_entry",
            EndMarker::FirstEntry => "first_entry",
            EndMarker::FirstGuestExit => "first_guest_exit",
        }
    }
}

/// What opened a window: the first event of the raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenedBy {
    /// `kvm_set_irq` (`KVM_IRQ_LINE`, an irqfd's slow path, the PIT), through the PIC or
    /// the IOAPIC.
    SetIrq,
    /// `kvm_msi_set_irq` (`KVM_SIGNAL_MSI`, an irqfd's MSI route).
    MsiSetIrq,
    /// `kvm_apic_accept_irq` with no raise-side event before it (an EOI re-delivery, a PV
    /// IPI, an async-PF notification).
    ApicAcceptIrq,
    /// `kvm_apic_ipi`: another vCPU's IPI.
    Ipi,
    /// The LAPIC timer's hrtimer (`apic_timer_fn`) expiring.
    LapicTimer,
    /// A VMX `PREEMPTION_TIMER` exit (the LAPIC timer on the hv timer).
    PreemptionTimer,
    /// A halted vCPU woken with no visible raise.
    Wakeup,
}

impl OpenedBy {
    /// The name reports use (`opened_by` in docs/report-schema.md).
    pub fn name(self) -> &'static str {
        match self {
            OpenedBy::SetIrq => "SetIrq",
            OpenedBy::MsiSetIrq => "MsiSetIrq",
            OpenedBy::ApicAcceptIrq => "ApicAcceptIrq",
            OpenedBy::Ipi => "Ipi",
            OpenedBy::LapicTimer => "LapicTimer",
            OpenedBy::PreemptionTimer => "PreemptionTimer",
            OpenedBy::Wakeup => "Wakeup",
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
    /// The interrupt's vector, when the raise or the delivery said.
    pub vector: Option<u32>,
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
    /// With kernel stacks: the causes split over stacks, largest first (docs/stacks.md).
    pub stacks: Vec<(Cause, StackKey, u64)>,
}

/// A closed window waiting for the next drop checkpoint.
pub(super) struct Closed {
    sample: Sample,
}

pub(super) struct Window {
    pub open_ns: u64,
    pub opened_by: OpenedBy,
    /// The vector, once known (an accept, an MSI, an IOAPIC entry; a PIC's at its injection;
    /// a timer's at its accept in the vCPU thread).
    pub vector: Option<u32>,
    /// Posted by APICv/AVIC (`kvm_apicv_accept_irq`): delivered at the next entry.
    pub posted: bool,
    /// `kvm_inj_virq` of this window's interrupt seen: delivered at the next entry.
    pub injected: bool,
    /// An entry since the window opened did not deliver it: guest time from then on waits
    /// for the guest (IF=0, TPR).
    pub undelivered_entry: bool,
    /// An interrupt-window exit (VMX `INTERRUPT_WINDOW`, SVM `vintr`) followed such an entry.
    pub irq_window_exit: bool,
    /// The vCPU could run the guest since the window opened (not halted at open, or woken):
    /// for kernels without `kvm_entry`.
    pub can_run: bool,
    pub incomplete: bool,
    /// Opened on each of several vCPUs that the raise may have been for (the same vCPU id in
    /// several VMs, a raise from a task of no VM): the first to show evidence keeps it, the
    /// others are dropped. The group's id.
    pub tentative: Option<u64>,
    causes: Vec<(Cause, u64)>,
    events: Vec<Event>,
    events_dropped: u32,
    segments: Vec<(u64, u64, Cause)>,
    /// The causes split over kernel stacks (stacks.rs).
    pub stacks: StackAcc,
}

impl Window {
    /// Adds a segment; returns the cause it was given (guest time after an undelivering
    /// entry is the guest holding the interrupt off).
    pub(super) fn add_segment(&mut self, start: u64, end: u64, cause: Cause, cap: usize) -> Cause {
        // Guest time after an entry that delivered nothing is the guest holding it off.
        let cause = if cause == Cause::Guest && self.undelivered_entry {
            Cause::GuestUndelivered
        } else {
            cause
        };
        self.add(cause, end - start);
        let n = self.segments.len();
        match self.segments.last_mut() {
            Some(last) if last.2 == cause && last.1 == start => last.1 = end,
            _ if n < cap => self.segments.push((start, end, cause)),
            _ => {}
        }
        cause
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
        self.stacks.relabel(from, to);
    }

    /// Does an injection of `vector` deliver this window's interrupt? A known vector must
    /// match; an unknown one (a PIC interrupt, a timer not yet accepted) takes any.
    pub(super) fn takes(&self, vector: u32) -> bool {
        self.vector.is_none_or(|v| v == vector)
    }
}

/// A new window, for [`Engine::open_window`].
pub(super) struct Opening {
    pub at: u64,
    pub by: OpenedBy,
    pub vector: Option<u32>,
    pub tentative: Option<u64>,
}

impl Engine {
    pub(super) fn note_in_window(&mut self, tid: u32, e: &Event) {
        let cap = self.cfg.timeline_events;
        if let Some(v) = self.vcpus.get_mut(&tid) {
            for w in &mut v.windows {
                if w.events.len() < cap {
                    w.events.push(*e);
                } else {
                    w.events_dropped += 1;
                }
            }
        }
    }

    /// Opens a window on vCPU `tid`, or counts the raise as coalesced when one for the same
    /// vector is already open. Returns whether a window was opened.
    pub(super) fn open_window(&mut self, tid: u32, o: Opening, e: &Event) -> bool {
        self.account(tid, o.at);
        let cap = self.cfg.timeline_events;
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return false;
        };
        if let Some(w) = v.windows.iter_mut().find(|w| same_interrupt(w, &o)) {
            // Raised again while pending: the LAPIC's IRR bit (or the PIC's) is already set
            // and the two merge into one delivery.
            if w.tentative.is_some() && o.tentative.is_none() {
                w.tentative = None;
            }
            if w.vector.is_none() {
                w.vector = o.vector;
            }
            if w.opened_by == OpenedBy::Wakeup {
                // The raise behind a wake-up seen first (posted delivery traces after the
                // wake): the window is the raise's.
                w.opened_by = o.by;
            } else if o.tentative.is_none() {
                v.stats.coalesced += 1;
            }
            return false;
        }
        if v.windows.len() >= MAX_WINDOWS {
            v.stats.windows_overflow += 1;
            return false;
        }
        let halted =
            v.sched == Sched::Blocked && matches!(v.ctx, Ctx::Halt | Ctx::MaybeHalt { .. });
        let mut events = Vec::with_capacity(cap.min(64));
        events.push(*e);
        v.windows.push(Window {
            open_ns: o.at.max(v.seg_start),
            opened_by: o.by,
            vector: o.vector,
            posted: false,
            injected: false,
            undelivered_entry: false,
            irq_window_exit: false,
            can_run: !halted,
            incomplete: v.sched == Sched::Unknown || v.ctx == Ctx::Unknown,
            tentative: o.tentative,
            causes: Vec::with_capacity(8),
            events,
            events_dropped: 0,
            segments: Vec::with_capacity(16),
            stacks: StackAcc::default(),
        });
        true
    }

    /// Closes window `i` of vCPU `tid` at `ts`.
    pub(super) fn close_window(&mut self, tid: u32, i: usize, ts: u64, marker: EndMarker) {
        self.account(tid, ts);
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        if i >= v.windows.len() {
            return;
        }
        let mut w = v.windows.remove(i);
        if let Some(g) = w.tentative {
            // Evidence for this vCPU: the raise was its own; the other candidates' go.
            self.tentative_resolved(g, tid);
        }
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        if w.incomplete {
            v.stats.incomplete += 1;
            return;
        }
        let blocked = if w.irq_window_exit {
            Cause::GuestIrqsOff
        } else {
            Cause::GuestPending
        };
        w.relabel(Cause::GuestUndelivered, blocked);
        let total = v.seg_start.saturating_sub(w.open_ns);
        w.causes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let closed = Closed {
            sample: Sample {
                tid,
                tgid: v.tgid,
                open_ns: w.open_ns,
                total_ns: total,
                vector: w.vector,
                causes: w.causes,
                end_marker: marker,
                opened_by: w.opened_by,
                events: w.events,
                events_dropped: w.events_dropped,
                segments: w.segments,
                stacks: w.stacks.into_sorted(),
            },
        };
        if w.opened_by == OpenedBy::Wakeup {
            self.coverage.without_raise += 1;
        } else {
            self.coverage.with_raise += 1;
        }
        if self.checkpointed {
            self.pending.push(closed);
        } else {
            self.commit(closed);
        }
    }

    /// Drops window `i` of `tid` without a sample (a tentative candidate that was not the
    /// target, a wake-up that delivered no interrupt).
    pub(super) fn drop_window(&mut self, tid: u32, i: usize) {
        if let Some(v) = self.vcpus.get_mut(&tid) {
            if i < v.windows.len() {
                v.windows.remove(i);
            }
        }
    }

    /// Closes windows whose end was lost (checked every 10 ms of stream time).
    pub(super) fn expire_windows(&mut self, ts: u64) {
        if ts < self.next_expiry_check {
            return;
        }
        self.next_expiry_check = ts + 10_000_000;
        let max = self.cfg.max_window_ns;
        let mut unresolved = 0;
        for v in self.vcpus.values_mut() {
            let before = v.windows.len();
            let mut expired_tentative = 0;
            v.windows.retain(|w| {
                let keep = ts.saturating_sub(w.open_ns) <= max;
                if !keep && w.tentative.is_some() {
                    expired_tentative += 1;
                }
                keep
            });
            let expired = before - v.windows.len();
            // A tentative window that never got evidence was another vCPU's (or nobody's):
            // not this vCPU's incomplete sample.
            v.stats.incomplete += (expired - expired_tentative) as u64;
            unresolved += expired_tentative as u64;
        }
        self.unresolved_raises += unresolved;
    }

    /// A drop-counter checkpoint (the session writes one after every read of the ring
    /// buffer). Events lost since the previous checkpoint may belong to any window open now
    /// or closed since then: those are incomplete; the others are committed. Host interrupt
    /// work open on any CPU may have lost its exit: cleared.
    pub(super) fn on_drops(&mut self, total: u64) {
        self.checkpointed = true;
        let pending = std::mem::take(&mut self.pending);
        if total > self.last_drops {
            self.dropped += total - self.last_drops;
            self.last_drops = total;
            for v in self.vcpus.values_mut() {
                for w in &mut v.windows {
                    w.incomplete = true;
                }
            }
            for c in &mut self.cpus {
                c.overlays.clear();
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
        *v.stats.opened_by.entry(s.opened_by.name()).or_default() += 1;
        for &(cause, ns) in &s.causes {
            *v.stats.irq_causes.entry(cause).or_default() += ns;
        }
        v.stats.irq_stack_ns.merge(&s.stacks);
        let n = self.cfg.worst;
        let smallest = self.worst.last().map_or(0, |w| w.total_ns);
        if n > 0 && (self.worst.len() < n || s.total_ns > smallest) {
            let at = self.worst.partition_point(|w| w.total_ns >= s.total_ns);
            self.worst.insert(at, s);
            self.worst.truncate(n);
        }
    }

    /// Tentative group `g` got its evidence on `winner`: the other candidates' windows of
    /// that group are dropped, the winner's is made firm.
    pub(super) fn tentative_resolved(&mut self, g: u64, winner: u32) {
        let Some(tids) = self.tentative.remove(&g) else {
            return;
        };
        for tid in tids {
            let Some(v) = self.vcpus.get_mut(&tid) else {
                continue;
            };
            if tid == winner {
                for w in v.windows.iter_mut().filter(|w| w.tentative == Some(g)) {
                    w.tentative = None;
                }
            } else {
                v.windows.retain(|w| w.tentative != Some(g));
            }
        }
    }
}

/// Would `o` be the same pending interrupt as window `w`? The same vector, or, when the
/// vectors are unknown, the same kind of raise (a second PIC raise while one is pending).
fn same_interrupt(w: &Window, o: &Opening) -> bool {
    match (w.vector, o.vector) {
        (Some(a), Some(b)) => a == b,
        (None, None) => w.opened_by == o.by || w.opened_by == OpenedBy::Wakeup,
        // A wake-up window's vector is learnt from the raise behind it.
        (None, Some(_)) => w.opened_by == OpenedBy::Wakeup,
        (Some(_), None) => false,
    }
}

impl Vcpu {
    /// Index of the open window an injection of `vector` delivers: the one with that vector,
    /// else the oldest of unknown vector.
    pub(super) fn window_for_injection(&self, vector: u32) -> Option<usize> {
        self.windows
            .iter()
            .position(|w| w.vector == Some(vector))
            .or_else(|| self.windows.iter().position(|w| w.takes(vector)))
    }
}
