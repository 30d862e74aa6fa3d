//! The attribution engine: events in, per-vCPU latency model out. Pure: no aya, no tokio,
//! no I/O, so it is tested on synthetic streams. The model is stated in docs/attribution.md.
//!
//! Per vCPU thread it keeps a scheduling state (on a CPU, preempted, waking, blocked) and a
//! KVM context (in guest, handling an exit, in the userspace VMM, in KVM_RUN, halted), plus,
//! per CPU, a stack of host interrupt overlays (hardirq, softirq, APIC vectors). Every change
//! closes a *segment* of the vCPU's time and gives it to exactly one [`Cause`]; an
//! interrupt-to-guest window collects the segments between its open and close, so its
//! causes add up to its total by construction.

pub mod cause;
pub mod exit_reasons;
pub mod fxhash;
#[cfg(test)]
mod proptests;
pub mod reorder;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use self::fxhash::FxHashMap;

use hdrhistogram::Histogram;
use kvmtrace_common::{
    switch_prev_runnable, Event, Kind, THREAD_INFO_NAME_ONLY, THREAD_INFO_VM_NAME, VCPU_UNKNOWN,
};

pub use self::cause::{ApicVector, Cause};
use self::reorder::Reorder;
use crate::host::vcpu_from_comm;
use crate::report::{comm_from_slots, latency_histogram};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How far out of order events may arrive.
    pub reorder_ns: u64,
    /// Worst samples kept.
    pub worst: usize,
    /// Events kept in a sample's timeline.
    pub timeline_events: usize,
    /// A window still open after this long is closed as incomplete (its close was lost).
    pub max_window_ns: u64,
    /// KVM's LAPIC timer callback (`apic_timer_fn`) on the recording host, 0 if unknown.
    pub apic_timer_fn: u64,
    /// Collect samples at least this long for [`Engine::take_triggers`] (flight recorder).
    pub trigger_ns: Option<u64>,
}

/// A sample over the trigger threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub tid: u32,
    pub open_ns: u64,
    pub total_ns: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            reorder_ns: 2_000_000,
            worst: 20,
            timeline_events: 256,
            max_window_ns: 1_000_000_000,
            apic_timer_fn: 0,
            trigger_ns: None,
        }
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sched {
    Unknown,
    OnCpu,
    Preempted { by: u32 },
    Waking,
    Blocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Unknown,
    Guest,
    Exit {
        isa: u8,
        reason: u32,
    },
    Vmm {
        reason: u32,
    },
    KvmRun,
    Halt,
    /// Blocked (or back from blocking) after a userspace exit, on a kernel without
    /// `kvm_entry`: either halted inside KVM_RUN or waiting in the VMM. Resolved by the
    /// thread's next KVM event: `kvm_vcpu_wakeup` means it was a halt.
    MaybeHalt {
        vmm_reason: u32,
    },
}

/// A closed window waiting for the next drop checkpoint.
struct Closed {
    sample: Sample,
}

struct Window {
    open_ns: u64,
    opened_by: OpenedBy,
    /// The vCPU was running its guest when the interrupt arrived.
    opened_in_guest: bool,
    /// `kvm_inj_virq` seen since the window opened.
    injected: bool,
    /// The vCPU could run the guest since the window opened (not halted at open, or woken).
    can_run: bool,
    incomplete: bool,
    causes: Vec<(Cause, u64)>,
    events: Vec<Event>,
    events_dropped: u32,
    segments: Vec<(u64, u64, Cause)>,
}

impl Window {
    fn add_segment(&mut self, start: u64, end: u64, cause: Cause, cap: usize) {
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
}

/// Accumulated statistics of one vCPU.
pub struct VcpuStats {
    pub exits: FxHashMap<(u8, u32), Histogram<u64>>,
    pub irq_to_guest: Histogram<u64>,
    pub irq_causes: FxHashMap<Cause, u64>,
    /// Sum of the complete samples' totals (equals the sum of `irq_causes`).
    pub irq_total_ns: u64,
    pub end_markers: FxHashMap<EndMarker, u64>,
    pub incomplete: u64,
    /// Coalesced: an interrupt raised while a window was already open.
    pub coalesced: u64,
    pub state_ns: FxHashMap<Cause, u64>,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl VcpuStats {
    fn new() -> VcpuStats {
        VcpuStats {
            exits: FxHashMap::default(),
            irq_to_guest: latency_histogram(),
            irq_causes: FxHashMap::default(),
            irq_total_ns: 0,
            end_markers: FxHashMap::default(),
            incomplete: 0,
            coalesced: 0,
            state_ns: FxHashMap::default(),
            first_ns: 0,
            last_ns: 0,
        }
    }
}

/// One vCPU thread.
pub struct Vcpu {
    pub tid: u32,
    pub tgid: u32,
    pub vcpu_id: Option<u32>,
    sched: Sched,
    ctx: Ctx,
    cpu: Option<u32>,
    in_lock: bool,
    seg_start: u64,
    seen_entry: bool,
    exit_start: Option<(u64, u8, u32)>,
    window: Option<Window>,
    pub stats: VcpuStats,
}

impl Vcpu {
    /// The CPU the vCPU thread runs on, or last ran or waits on.
    pub fn cpu(&self) -> Option<u32> {
        self.cpu
    }

    /// Moves the time given to a placeholder cause to the cause it turned out to be.
    fn resolve(&mut self, from: Cause, to: Cause) {
        if let Some(ns) = self.stats.state_ns.remove(&from) {
            *self.stats.state_ns.entry(to).or_default() += ns;
        }
        if let Some(w) = &mut self.window {
            if let Some(i) = w.causes.iter().position(|(c, _)| *c == from) {
                let (_, ns) = w.causes.swap_remove(i);
                w.add(to, ns);
            }
            for seg in w.segments.iter_mut().filter(|s| s.2 == from) {
                seg.2 = to;
            }
        }
    }
}

#[derive(Default)]
struct CpuState {
    overlays: Vec<Cause>,
    /// The vCPU thread that last ran here.
    last_vcpu: Option<u32>,
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    reorder: Reorder,
    batch: Vec<Event>,
    vcpus: FxHashMap<u32, Vcpu>,
    cpus: Vec<CpuState>,
    /// tid -> comm, for naming preempting tasks.
    pub comms: HashMap<u32, String>,
    /// VMM pid -> VM name, from `thread_info` records.
    pub vm_names: HashMap<u32, String>,
    /// vCPU ids announced by thread_info before the thread's first event.
    announced: FxHashMap<u32, (u32, Option<u32>)>,
    /// Raising thread -> its last `kvm_set_irq`: Some(time) raised, None lowered.
    pending_raise: FxHashMap<u32, Option<u64>>,
    worst: Vec<Sample>,
    last_drops: u64,
    pub dropped: u64,
    pub unresolved_raises: u64,
    pub demo_truth: Histogram<u64>,
    /// Time of the last processed event.
    clock: u64,
    next_expiry_check: u64,
    /// Seen a drop-counter checkpoint: samples wait for the next one before they count.
    checkpointed: bool,
    triggers: Vec<Trigger>,
    pending: Vec<Closed>,
    scratch: Vec<u32>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            reorder: Reorder::new(cfg.reorder_ns),
            cfg,
            batch: Vec::new(),
            vcpus: FxHashMap::default(),
            cpus: Vec::new(),
            comms: HashMap::new(),
            vm_names: HashMap::new(),
            announced: FxHashMap::default(),
            pending_raise: FxHashMap::default(),
            worst: Vec::new(),
            last_drops: 0,
            dropped: 0,
            unresolved_raises: 0,
            demo_truth: latency_histogram(),
            clock: 0,
            next_expiry_check: 0,
            checkpointed: false,
            triggers: Vec::new(),
            pending: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Feeds one event (in any order within the reorder window).
    pub fn push(&mut self, ev: &Event) {
        match Kind::try_from(ev.kind) {
            // Bookkeeping records describe the stream rather than a moment in it.
            Ok(Kind::ThreadInfo) => return self.on_thread_info(ev),
            Ok(Kind::DemoAck) => {
                let lat = ev.slots[2].saturating_sub(ev.slots[1]);
                let _ = self.demo_truth.record(lat.max(1));
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.reorder.push(*ev, &mut batch);
        for e in batch.drain(..) {
            self.process(&e);
        }
        self.batch = batch;
    }

    /// Releases everything held and closes what is still open (as incomplete).
    pub fn flush(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        self.reorder.flush(&mut batch);
        for e in batch.drain(..) {
            self.process(&e);
        }
        self.batch = batch;
        // The stream ended without a later checkpoint: nothing says these saw a loss.
        for c in std::mem::take(&mut self.pending) {
            self.commit(c);
        }
        let end = self.reorder.released;
        let tids: Vec<u32> = self.vcpus.keys().copied().collect();
        for tid in tids {
            self.account(tid, end);
            if let Some(v) = self.vcpus.get_mut(&tid) {
                if v.window.take().is_some() {
                    v.stats.incomplete += 1;
                }
            }
        }
    }

    /// Events released late (beyond the reorder window): processed with their time clamped.
    pub fn late_events(&self) -> u64 {
        self.reorder.late
    }

    pub fn vcpus(&self) -> impl Iterator<Item = &Vcpu> {
        self.vcpus.values()
    }

    /// Worst samples, largest first.
    pub fn worst(&self) -> &[Sample] {
        &self.worst
    }

    /// Time of the last event processed (CLOCK_MONOTONIC ns).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Forgets the statistics (histograms, causes, worst samples) and keeps following the
    /// vCPUs' states, so the next interval starts from a correct state machine.
    pub fn reset_stats(&mut self) {
        for v in self.vcpus.values_mut() {
            let mut st = VcpuStats::new();
            st.first_ns = self.clock;
            v.stats = st;
        }
        self.worst.clear();
        self.pending.clear();
        self.demo_truth.reset();
    }

    fn on_thread_info(&mut self, ev: &Event) {
        let comm = comm_from_slots(ev.slots[3], ev.slots[4]);
        if ev.slots[1] == THREAD_INFO_VM_NAME {
            self.vm_names.insert(ev.tgid, comm);
            return;
        }
        if ev.slots[1] == THREAD_INFO_NAME_ONLY {
            self.comms.insert(ev.tid, comm);
            return;
        }
        let vcpu = if ev.slots[0] != VCPU_UNKNOWN {
            Some(ev.slots[0] as u32)
        } else {
            vcpu_from_comm(&comm)
        };
        self.comms.insert(ev.tid, comm);
        if let Some(v) = self.vcpus.get_mut(&ev.tid) {
            if v.vcpu_id.is_none() {
                v.vcpu_id = vcpu;
            }
        } else if vcpu.is_some() {
            self.announced.insert(ev.tid, (ev.tgid, vcpu));
        }
    }

    /// A drop-counter checkpoint (the session writes one after every read of the ring
    /// buffer). Events lost since the previous checkpoint may belong to any window open now
    /// or closed since then: those are incomplete; the others are committed.
    fn on_drops(&mut self, total: u64) {
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

    fn cpu_mut(&mut self, cpu: u32) -> &mut CpuState {
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize_with(i + 1, CpuState::default);
        }
        &mut self.cpus[i]
    }

    fn vcpu_entry(&mut self, tid: u32, tgid: u32, ts: u64) -> &mut Vcpu {
        let announced = self.announced.remove(&tid);
        self.vcpus.entry(tid).or_insert_with(|| {
            let mut stats = VcpuStats::new();
            stats.first_ns = ts;
            Vcpu {
                tid,
                tgid: announced.map_or(tgid, |a| a.0),
                vcpu_id: announced.and_then(|a| a.1),
                sched: Sched::Unknown,
                ctx: Ctx::Unknown,
                cpu: None,
                in_lock: false,
                seg_start: ts,
                seen_entry: false,
                exit_start: None,
                window: None,
                stats,
            }
        })
    }

    /// Is `tid` a vCPU thread? Threads announced by `thread_info` (a `CPU n/KVM` name) become
    /// vCPUs here, so their scheduling is followed before their first KVM event.
    fn known(&mut self, tid: u32, ts: u64) -> bool {
        if self.vcpus.contains_key(&tid) {
            return true;
        }
        match self.announced.get(&tid) {
            Some(&(tgid, _)) => {
                self.vcpu_entry(tid, tgid, ts);
                true
            }
            None => false,
        }
    }

    /// The cause of the vCPU's current segment.
    fn cause_of(v: &Vcpu, cpus: &[CpuState]) -> Cause {
        let overlay = v
            .cpu
            .and_then(|c| cpus.get(c as usize))
            .and_then(|c| c.overlays.last().copied());
        match v.sched {
            Sched::Blocked => match v.ctx {
                Ctx::Halt => Cause::Halted,
                Ctx::MaybeHalt { .. } => Cause::UnresolvedBlocked,
                Ctx::Vmm { reason } => Cause::Vmm { reason },
                _ => Cause::Blocked,
            },
            Sched::Preempted { by } => overlay.unwrap_or(Cause::Preempted { pid: by }),
            Sched::Waking => overlay.unwrap_or(Cause::UnresolvedWaiting),
            Sched::OnCpu | Sched::Unknown => {
                if let Some(o) = overlay {
                    return o;
                }
                if v.in_lock {
                    return Cause::Lock;
                }
                match v.ctx {
                    Ctx::Guest => Cause::Guest,
                    Ctx::Exit { isa, reason } => Cause::Exit { isa, reason },
                    Ctx::Vmm { reason } => Cause::Vmm { reason },
                    Ctx::KvmRun | Ctx::Halt => Cause::KvmRun,
                    Ctx::MaybeHalt { .. } => Cause::UnresolvedRunning,
                    Ctx::Unknown => Cause::Other,
                }
            }
        }
    }

    /// Closes the vCPU's current segment at `ts` and gives it to its cause.
    fn account(&mut self, tid: u32, ts: u64) {
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        let now = ts.max(v.seg_start);
        let ns = now - v.seg_start;
        if ns > 0 {
            let cause = Self::cause_of(v, &self.cpus);
            *v.stats.state_ns.entry(cause).or_default() += ns;
            if let Some(w) = &mut v.window {
                w.add_segment(v.seg_start, now, cause, self.cfg.timeline_events);
            }
        }
        v.seg_start = now;
        v.stats.last_ns = now;
    }

    fn note_in_window(&mut self, tid: u32, ev: &Event) {
        let cap = self.cfg.timeline_events;
        if let Some(w) = self.vcpus.get_mut(&tid).and_then(|v| v.window.as_mut()) {
            if w.events.len() < cap {
                w.events.push(*ev);
            } else {
                w.events_dropped += 1;
            }
        }
    }

    fn process(&mut self, ev: &Event) {
        let Ok(kind) = Kind::try_from(ev.kind) else {
            return;
        };
        // Late events (beyond the reorder window) are processed at the current time.
        let ts = ev.ts_ns.max(self.clock);
        self.clock = ts;
        self.expire_windows(ts);
        match kind {
            Kind::KvmExit
            | Kind::KvmEntry
            | Kind::KvmUserspaceExit
            | Kind::KvmInjVirq
            | Kind::KvmVcpuWakeup
            | Kind::KvmPio
            | Kind::KvmMmio
            | Kind::KvmMsr => self.on_vcpu_event(kind, ev, ts),
            Kind::KvmSetIrq => {
                // Level 1 raises; the chips' events that follow in the same thread say where
                // it goes. Level 0 lowers the line.
                let level = (ev.slots[1] != 0).then_some(ts);
                self.pending_raise.insert(ev.tid, level);
            }
            Kind::KvmPicSetIrq => {
                let pin = ev.slots[1] as u32;
                let imr = ev.slots[2];
                let coalesced = ev.slots[3] != 0;
                let raised = self.raised_at(ev.tid, ts);
                if let (Some(at), true) = (raised, imr & (1 << (pin & 7)) == 0) {
                    // The PIC's INTR line goes to the bootstrap processor (vCPU 0).
                    if coalesced {
                        self.count_coalesced(ev.tgid, Some(0));
                    } else {
                        self.raise(ev, at, Some(0), OpenedBy::SetIrq);
                    }
                }
            }
            Kind::KvmIoapicSetIrq => {
                let e = ev.slots[0];
                let coalesced = ev.slots[2] != 0;
                let masked = e & (1 << 16) != 0;
                let raised = self.raised_at(ev.tid, ts);
                if let (Some(at), true) = (raised, !masked && !coalesced) {
                    let dest = ((e >> 56) & 0xff) as u32;
                    let logical = e & (1 << 11) != 0;
                    let target = if logical {
                        (dest != 0).then(|| dest.trailing_zeros())
                    } else {
                        Some(dest)
                    };
                    self.raise(ev, at, target, OpenedBy::SetIrq);
                }
            }
            Kind::KvmMsiSetIrq => {
                let dest = ((ev.slots[0] >> 12) & 0xff) as u32;
                self.raise(ev, ts, Some(dest), OpenedBy::MsiSetIrq);
            }
            Kind::KvmApicAcceptIrq => {
                let apicid = ev.slots[0] as u32;
                self.raise(ev, ts, Some(apicid), OpenedBy::ApicAcceptIrq);
            }
            Kind::HrtimerExpireEntry => {
                if self.cfg.apic_timer_fn != 0 && ev.slots[1] == self.cfg.apic_timer_fn {
                    let target = self.cpus.get(ev.cpu as usize).and_then(|c| c.last_vcpu);
                    match target {
                        Some(tid) => self.open_window(tid, ts, OpenedBy::LapicTimer, ev),
                        None => self.unresolved_raises += 1,
                    }
                }
            }
            Kind::SchedSwitch => self.on_switch(ev, ts),
            Kind::SchedWakeup => {
                let pid = ev.slots[0] as u32;
                if self.known(pid, ts) {
                    self.account(pid, ts);
                    self.note_in_window(pid, ev);
                    if let Some(v) = self.vcpus.get_mut(&pid) {
                        if v.sched != Sched::OnCpu {
                            v.sched = Sched::Waking;
                        }
                        v.cpu = Some(ev.slots[1] as u32);
                        if let Some(w) = &mut v.window {
                            w.can_run = true;
                        }
                    }
                }
            }
            Kind::SchedWakeupNew => {
                let comm = comm_from_slots(ev.slots[3], ev.slots[4]);
                self.comms.insert(ev.slots[0] as u32, comm);
            }
            Kind::SchedMigrateTask => {
                let pid = ev.slots[0] as u32;
                if self.known(pid, ts) {
                    self.account(pid, ts);
                    self.note_in_window(pid, ev);
                    if let Some(v) = self.vcpus.get_mut(&pid) {
                        v.cpu = Some(ev.slots[2] as u32);
                    }
                }
            }
            Kind::IrqHandlerEntry => self.overlay(
                ev,
                ts,
                Some(Cause::Hardirq {
                    irq: ev.slots[0] as u32,
                }),
            ),
            Kind::SoftirqEntry => self.overlay(
                ev,
                ts,
                Some(Cause::Softirq {
                    vec: ev.slots[0] as u32,
                }),
            ),
            Kind::LocalTimerEntry => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::LocalTimer)))
            }
            Kind::RescheduleEntry => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::Reschedule)))
            }
            Kind::CallFunctionEntry => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::CallFunction)))
            }
            Kind::CallFunctionSingleEntry => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::CallFunctionSingle)))
            }
            Kind::IrqHandlerExit
            | Kind::SoftirqExit
            | Kind::LocalTimerExit
            | Kind::RescheduleExit
            | Kind::CallFunctionExit
            | Kind::CallFunctionSingleExit => self.overlay(ev, ts, None),
            Kind::ContentionBegin | Kind::ContentionEnd => {
                if self.vcpus.contains_key(&ev.tid) {
                    self.account(ev.tid, ts);
                    self.note_in_window(ev.tid, ev);
                    if let Some(v) = self.vcpus.get_mut(&ev.tid) {
                        v.in_lock = kind == Kind::ContentionBegin;
                    }
                }
            }
            Kind::Drops => self.on_drops(ev.slots[0] + ev.slots[1]),
            Kind::HrtimerExpireExit | Kind::ThreadInfo | Kind::DemoAck => {}
        }
    }

    /// A raise the chip merged with one still pending.
    fn count_coalesced(&mut self, tgid: u32, target: Option<u32>) {
        if let Some(tid) = self.resolve(tgid, target) {
            if let Some(v) = self.vcpus.get_mut(&tid) {
                v.stats.coalesced += 1;
            }
        }
    }

    /// When the line a chip event reports was raised: at the thread's `kvm_set_irq`
    /// (level 1), never for a lowered line, or at the chip event when no `kvm_set_irq` was
    /// seen from this thread.
    fn raised_at(&self, tid: u32, ts: u64) -> Option<u64> {
        match self.pending_raise.get(&tid) {
            Some(level) => *level,
            None => Some(ts),
        }
    }

    /// Closes windows whose end was lost (checked every 10 ms of stream time).
    fn expire_windows(&mut self, ts: u64) {
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

    fn on_vcpu_event(&mut self, kind: Kind, ev: &Event, ts: u64) {
        let tid = ev.tid;
        self.vcpu_entry(tid, ev.tgid, ts);
        self.account(tid, ts);
        self.note_in_window(tid, ev);
        let cpu = ev.cpu;
        self.cpu_mut(cpu).last_vcpu = Some(tid);
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        // An event from the thread means it is running here, whatever we believed.
        if v.sched != Sched::OnCpu {
            if let (Some(w), Sched::Blocked | Sched::Preempted { .. }) = (&mut v.window, v.sched) {
                // We missed its switch-in: the window's attribution has a hole.
                w.incomplete = true;
            }
            v.sched = Sched::OnCpu;
        }
        v.cpu = Some(cpu);
        v.resolve(Cause::UnresolvedWaiting, Cause::Wakeup);
        if let Ctx::MaybeHalt { vmm_reason } = v.ctx {
            let (blocked, running) = if kind == Kind::KvmVcpuWakeup {
                (Cause::Halted, Cause::KvmRun)
            } else {
                let vmm = Cause::Vmm { reason: vmm_reason };
                (vmm, vmm)
            };
            v.resolve(Cause::UnresolvedBlocked, blocked);
            v.resolve(Cause::UnresolvedRunning, running);
            v.ctx = Ctx::KvmRun;
        }
        let mut close = None;
        match kind {
            Kind::KvmExit => {
                let reason = ev.slots[0] as u32;
                let isa = ev.slots[1] as u8;
                if ev.missing & (1 << 2) == 0 && v.vcpu_id.is_none() {
                    v.vcpu_id = Some(ev.slots[2] as u32);
                }
                v.ctx = Ctx::Exit { isa, reason };
                v.exit_start = Some((ts, isa, reason));
            }
            Kind::KvmEntry => {
                v.seen_entry = true;
                if ev.missing & 1 == 0 && v.vcpu_id.is_none() {
                    v.vcpu_id = Some(ev.slots[0] as u32);
                }
                if let Some((start, isa, reason)) = v.exit_start.take() {
                    let h = v
                        .stats
                        .exits
                        .entry((isa, reason))
                        .or_insert_with(latency_histogram);
                    let _ = h.record(ts.saturating_sub(start).max(1));
                }
                v.ctx = Ctx::Guest;
                if let Some(w) = &v.window {
                    close = Some(if w.opened_in_guest && !w.injected {
                        // Accepted while the guest ran and never injected: posted straight
                        // into the running guest, no host latency.
                        EndMarker::PostedInGuest
                    } else {
                        EndMarker::KvmEntry
                    });
                }
            }
            Kind::KvmUserspaceExit => {
                v.ctx = Ctx::Vmm {
                    reason: ev.slots[0] as u32,
                }
            }
            Kind::KvmInjVirq => {
                if let Some(w) = &mut v.window {
                    w.injected = true;
                }
            }
            Kind::KvmVcpuWakeup => {
                v.ctx = Ctx::KvmRun;
                if let Some(w) = &mut v.window {
                    w.can_run = true;
                }
            }
            Kind::KvmPio | Kind::KvmMmio | Kind::KvmMsr => {
                // Guest-caused: back in KVM_RUN if we thought otherwise.
                if matches!(v.ctx, Ctx::Vmm { .. } | Ctx::Unknown | Ctx::Halt) {
                    v.ctx = Ctx::KvmRun;
                }
                if !v.seen_entry && v.window.as_ref().is_some_and(|w| w.can_run) {
                    close = Some(EndMarker::FirstGuestExit);
                }
            }
            _ => {}
        }
        if let Some(marker) = close {
            self.close_window(tid, ts, marker);
        }
    }

    fn on_switch(&mut self, ev: &Event, ts: u64) {
        let prev = ev.slots[0] as u32;
        let next = ev.slots[2] as u32;
        let runnable = switch_prev_runnable(ev.slots[1]);
        let comm = comm_from_slots(ev.slots[3], ev.slots[4]);
        if next != 0 && !comm.is_empty() {
            self.comms.insert(next, comm);
        }
        let cpu = ev.cpu;
        if self.known(prev, ts) {
            self.account(prev, ts);
            self.note_in_window(prev, ev);
            if let Some(v) = self.vcpus.get_mut(&prev) {
                v.in_lock = false;
                if runnable {
                    v.sched = Sched::Preempted { by: next };
                } else {
                    v.sched = Sched::Blocked;
                    match v.ctx {
                        Ctx::KvmRun | Ctx::Guest | Ctx::Unknown | Ctx::Exit { .. } => {
                            // Blocked inside KVM_RUN: halted (kvm_vcpu_block).
                            v.ctx = Ctx::Halt;
                        }
                        Ctx::Vmm { reason } if !v.seen_entry => {
                            // No kvm_entry to say it went back into KVM_RUN: decide later.
                            v.ctx = Ctx::MaybeHalt { vmm_reason: reason };
                        }
                        _ => {}
                    }
                }
                v.cpu = Some(cpu);
            }
        }
        if self.known(next, ts) {
            self.account(next, ts);
            // Time spent waiting for this CPU while another task ran is that task's doing.
            if let Some(v) = self.vcpus.get_mut(&next) {
                let waited = if prev != 0 {
                    Cause::Preempted { pid: prev }
                } else {
                    Cause::Wakeup
                };
                v.resolve(Cause::UnresolvedWaiting, waited);
            }
            self.note_in_window(next, ev);
            if let Some(v) = self.vcpus.get_mut(&next) {
                v.sched = Sched::OnCpu;
                v.cpu = Some(cpu);
                if let Some(w) = &mut v.window {
                    w.can_run = true;
                }
            }
            self.cpu_mut(cpu).last_vcpu = Some(next);
        }
    }

    /// A host interrupt handler starts (`Some`) or ends (`None`) on `ev.cpu`.
    fn overlay(&mut self, ev: &Event, ts: u64, start: Option<Cause>) {
        let cpu = ev.cpu;
        let mut here = std::mem::take(&mut self.scratch);
        here.clear();
        here.extend(
            self.vcpus
                .values()
                .filter(|v| v.cpu == Some(cpu))
                .map(|v| v.tid),
        );
        for &tid in &here {
            self.account(tid, ts);
            self.note_in_window(tid, ev);
        }
        self.scratch = here;
        let c = self.cpu_mut(cpu);
        match start {
            Some(cause) => {
                if c.overlays.len() < 8 {
                    c.overlays.push(cause);
                }
            }
            None => {
                c.overlays.pop();
            }
        }
    }

    /// An interrupt raised for vCPU `target` of the raising thread's VM.
    fn raise(&mut self, ev: &Event, ts: u64, target: Option<u32>, by: OpenedBy) {
        match self.resolve(ev.tgid, target) {
            Some(tid) => self.open_window(tid, ts, by, ev),
            None => self.unresolved_raises += 1,
        }
    }

    /// The vCPU thread with id `target` in the VM of `tgid` (or the only VM, when the event
    /// fired in interrupt context).
    fn resolve(&self, tgid: u32, target: Option<u32>) -> Option<u32> {
        let in_vm: Vec<&Vcpu> = {
            let own: Vec<&Vcpu> = self.vcpus.values().filter(|v| v.tgid == tgid).collect();
            if own.is_empty() {
                let mut vms: Vec<u32> = self.vcpus.values().map(|v| v.tgid).collect();
                vms.sort_unstable();
                vms.dedup();
                if vms.len() != 1 {
                    return None;
                }
                self.vcpus.values().collect()
            } else {
                own
            }
        };
        let target = target?;
        if let Some(v) = in_vm.iter().find(|v| v.vcpu_id == Some(target)) {
            return Some(v.tid);
        }
        // vCPU ids unknown and a single vCPU: it is the one.
        (in_vm.len() == 1 && in_vm[0].vcpu_id.is_none()).then(|| in_vm[0].tid)
    }

    fn open_window(&mut self, tid: u32, ts: u64, by: OpenedBy, ev: &Event) {
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
        events.push(*ev);
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

    fn close_window(&mut self, tid: u32, ts: u64, marker: EndMarker) {
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

    /// Samples over `trigger_ns` committed since the last call.
    pub fn take_triggers(&mut self) -> Vec<Trigger> {
        std::mem::take(&mut self.triggers)
    }

    /// Counts a complete sample.
    fn commit(&mut self, c: Closed) {
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
