//! The attribution engine: events in, per-vCPU latency model out. Pure: no I/O, so it is
//! tested on synthetic streams. The model is stated in docs/attribution.md.
//!
//! The engine is the stream's one interpreter: it derives which threads are vCPUs (and
//! their ids), thread and VM names, the demo's ground truth and the stream's counters, and
//! the report only reads its model. Its parts, one file each:
//!
//! - [`threads`](self::threads): who is who (names, vCPU ids, VMs) and the stream's counts;
//! - `vcpu`: per vCPU thread, a scheduling state (on a CPU, preempted, waking, blocked)
//!   and a KVM context (in guest, handling an exit, in the userspace VMM, in KVM_RUN,
//!   halted), plus per CPU a stack of host interrupt overlays (hardirq, softirq, APIC
//!   vectors). Every change closes a *segment* of the vCPU's time and gives it to exactly
//!   one [`Cause`];
//! - `route`: interrupt raises (chips, MSIs, timers) to the vCPU they target;
//! - `window`: interrupt-to-guest windows, opened by a raise and closed at the guest's
//!   entry with the interrupt; a window collects the segments between its open and close,
//!   so its causes add up to its total by construction; closed windows wait for the next
//!   drop checkpoint, then count (or are discarded as incomplete).

pub mod cause;
pub mod fxhash;
#[cfg(test)]
mod proptests;
pub mod reorder;
mod route;
mod stacks;
#[cfg(test)]
mod tests;
pub mod threads;
mod vcpu;
mod window;

use hdrhistogram::Histogram;
use kvmtrace_common::{limits, Event, Kind, Payload};

pub use self::cause::{ApicVector, Cause};
use self::fxhash::FxHashMap;
use self::reorder::Reorder;
pub use self::stacks::{
    StackAcc, StackCounts, StackKey, StackRef, StackSource, StackTables, Stacks,
};
pub use self::threads::{KindCounts, StreamCounts, ThreadRec, Threads};
pub use self::vcpu::{is_halt_exit, ExitStat, Vcpu, VcpuStats};
use self::vcpu::{CpuState, IdSource};
use self::window::Closed;
pub use self::window::{EndMarker, OpenedBy, Sample};
use crate::capture::{CaptureHeader, Trigger};
use crate::hist::latency_histogram;

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
    /// The stream has `kvm_inj_virq` (its probe attached, or the text shows it): without
    /// APICv/AVIC a window closes only at an entry after its injection. When false, the
    /// first entry after the raise closes it (end marker `first_entry`).
    pub injections_traced: bool,
    /// The stream has `kvm_apic_accept_irq`: targets come from accepts only, and raise-side
    /// events never decode a destination. When false, MSI and IOAPIC destinations in
    /// physical mode name the vCPU id.
    pub accepts_traced: bool,
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
            injections_traced: true,
            accepts_traced: true,
        }
    }
}

impl EngineConfig {
    /// What a capture's header says about its stream: KVM's LAPIC timer callback address,
    /// and whether the probes that carry delivery evidence were attached. A header that
    /// lists no probes (written by another tool) leaves the defaults.
    pub fn for_capture(self, h: &CaptureHeader) -> EngineConfig {
        let attached = |name: &str| {
            h.probes.is_empty() || h.probes.iter().any(|p| p.attached && p.tracepoint == name)
        };
        EngineConfig {
            apic_timer_fn: h.apic_timer_fn,
            injections_traced: attached("kvm:kvm_inj_virq"),
            accepts_traced: attached("kvm:kvm_apic_accept_irq"),
            ..self
        }
    }

    /// What a text trace's events say: `kvm_inj_virq` and `kvm_apic_accept_irq` count as
    /// traced when the text has at least one of them (a trace taken without them cannot
    /// be told apart from one where none fired: the closing and opening rules then fall
    /// back, and the report's end markers say so).
    pub fn for_events(self, events: &[Event]) -> EngineConfig {
        let has = |k: Kind| events.iter().any(|e| e.kind == k as u16);
        EngineConfig {
            injections_traced: has(Kind::KvmInjVirq),
            accepts_traced: has(Kind::KvmApicAcceptIrq),
            ..self
        }
    }
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    reorder: Reorder,
    batch: Vec<Event>,
    vcpus: FxHashMap<u32, Vcpu>,
    cpus: Vec<CpuState>,
    /// Who is who: names, vCPU ids, VMs, and the stream's counts.
    threads: Threads,
    /// vCPU ids announced by thread_info before the thread's first event.
    announced: FxHashMap<u32, (u32, Option<u32>, IdSource)>,
    /// KVM vcpu_id -> the vCPU threads (of any VM) with that id.
    by_id: FxHashMap<u32, Vec<u32>>,
    /// VMM pid -> its vCPU threads followed.
    vms: FxHashMap<u32, u32>,
    /// Raises in progress, by (raising task, CPU).
    chains: FxHashMap<(u32, u32), route::Chain>,
    /// Tentative window groups: id -> the candidate vCPU threads.
    tentative: FxHashMap<u64, Vec<u32>>,
    next_group: u64,
    /// LAPIC timer hrtimer address -> the vCPU thread that armed it.
    timers: FxHashMap<u64, u32>,
    /// A `kvm_entry` was seen (a VMX or SVM host): wake-ups can open windows.
    saw_entry: bool,
    coverage: Coverage,
    /// Host interrupt work found open when it could no longer be (its exit was lost).
    overlays_cleared: u64,
    /// Events whose CPU number is beyond `limits::MAX_CPUS` (skipped).
    cpu_out_of_range: u64,
    worst: Vec<Sample>,
    last_drops: u64,
    dropped: u64,
    unresolved_raises: u64,
    demo_truth: Histogram<u64>,
    /// The same by the demo's interrupt path (`kvmtrace_common::demo_path`).
    demo_paths: std::collections::BTreeMap<u64, Histogram<u64>>,
    /// How long the demo guest kept interrupts disabled after each `irqoff` raise.
    demo_irqoff_ns: u64,
    /// Time of the last processed event.
    clock: u64,
    next_expiry_check: u64,
    /// Seen a drop-counter checkpoint: samples wait for the next one before they count.
    checkpointed: bool,
    triggers: Vec<Trigger>,
    pending: Vec<Closed>,
    scratch: Vec<u32>,
    /// Kernel stacks, when the stream has them (stacks.rs).
    stacks: Stacks,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            reorder: Reorder::new(cfg.reorder_ns),
            cfg,
            batch: Vec::new(),
            vcpus: FxHashMap::default(),
            cpus: Vec::new(),
            threads: Threads::default(),
            announced: FxHashMap::default(),
            by_id: FxHashMap::default(),
            vms: FxHashMap::default(),
            chains: FxHashMap::default(),
            tentative: FxHashMap::default(),
            next_group: 0,
            timers: FxHashMap::default(),
            saw_entry: false,
            coverage: Coverage::default(),
            overlays_cleared: 0,
            cpu_out_of_range: 0,
            worst: Vec::new(),
            last_drops: 0,
            dropped: 0,
            unresolved_raises: 0,
            demo_truth: latency_histogram(),
            demo_paths: std::collections::BTreeMap::new(),
            demo_irqoff_ns: 0,
            clock: 0,
            next_expiry_check: 0,
            checkpointed: false,
            triggers: Vec::new(),
            pending: Vec::new(),
            scratch: Vec::new(),
            stacks: Stacks::default(),
        }
    }

    /// Feeds one event (in any order within the reorder window).
    pub fn push(&mut self, ev: &Event) {
        // Stack records (stacks.rs) are not events of the stream; a profile tick is timed at
        // the interrupt it fired in.
        let tick;
        let ev = match self.stacks_push(ev) {
            stacks::Pushed::Event => {
                self.threads.count(ev);
                ev
            }
            stacks::Pushed::Consumed => return,
            stacks::Pushed::Tick(t) => {
                tick = t;
                &tick
            }
        };
        match ev.payload() {
            // Bookkeeping records describe the stream rather than a moment in it.
            Some(Payload::ThreadInfo(t)) => return self.on_thread_info(ev, &t),
            Some(Payload::DemoAck(a)) => {
                let lat = a.latency_ns().max(1);
                let _ = self.demo_truth.record(lat);
                if self.demo_paths.len() < 16 || self.demo_paths.contains_key(&a.path) {
                    let _ = self
                        .demo_paths
                        .entry(a.path)
                        .or_insert_with(latency_histogram)
                        .record(lat);
                }
                if a.path == kvmtrace_common::demo_path::IRQOFF {
                    self.demo_irqoff_ns = self.demo_irqoff_ns.max(a.irqoff_ns);
                }
                return;
            }
            Some(_) => {}
            None => return,
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
                // A sleep the stream ended before telling apart: blocked, reason unknown.
                v.resolve_at_end();
                // Still open when the stream ended: its delivery is not in it. A tentative
                // window that got no evidence was probably another vCPU's.
                let open = v.windows.iter().filter(|w| w.tentative.is_none()).count();
                v.stats.incomplete += open as u64;
                v.windows.clear();
            }
        }
    }

    /// Events released late (beyond the reorder window): processed with their time clamped.
    pub fn late_events(&self) -> u64 {
        self.reorder.late
    }

    /// Every vCPU thread followed, in no particular order.
    pub fn vcpus(&self) -> impl Iterator<Item = &Vcpu> {
        self.vcpus.values()
    }

    /// The vCPU thread `tid`, if it is one the engine followed.
    pub fn vcpu(&self, tid: u32) -> Option<&Vcpu> {
        self.vcpus.get(&tid)
    }

    /// Who is who: thread and VM names, vCPU ids, and the stream's event counts.
    pub fn threads(&self) -> &Threads {
        &self.threads
    }

    /// Worst samples, largest first.
    pub fn worst(&self) -> &[Sample] {
        &self.worst
    }

    /// Time of the last event processed (CLOCK_MONOTONIC ns).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Events lost according to the drop checkpoints processed so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Interrupts whose target vCPU could not be identified.
    pub fn unresolved_raises(&self) -> u64 {
        self.unresolved_raises
    }

    /// Of the closed windows, how many had a raise seen and how many only a wake-up.
    pub fn coverage(&self) -> Coverage {
        self.coverage
    }

    /// Host interrupt work found open where it could no longer be: its exit was lost.
    pub fn overlays_cleared(&self) -> u64 {
        self.overlays_cleared
    }

    /// Events skipped because their CPU number is beyond what the engine follows.
    pub fn cpu_out_of_range(&self) -> u64 {
        self.cpu_out_of_range
    }

    /// The demo VMM's own raise-to-acknowledgement latencies (ground truth).
    pub fn demo_truth(&self) -> &Histogram<u64> {
        &self.demo_truth
    }

    /// The demo's ground truth by interrupt path code, and the irqs-off phase's length.
    pub fn demo_truth_by_path(&self) -> (&std::collections::BTreeMap<u64, Histogram<u64>>, u64) {
        (&self.demo_paths, self.demo_irqoff_ns)
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
        self.demo_paths.clear();
    }

    /// One event in timestamp order: dispatched to the handler of its kind, grouped by what
    /// it changes (a vCPU's state, a CPU's host-interrupt overlays, a raise on its way, the
    /// windows).
    fn process(&mut self, ev: &Event) {
        let Some(payload) = ev.payload() else {
            return;
        };
        if ev.cpu >= limits::MAX_CPUS {
            // A CPU number no machine has: from a corrupt or hand-edited input. Nothing
            // per CPU is sized by it.
            self.cpu_out_of_range += 1;
            return;
        }
        // Late events (beyond the reorder window) are processed at the current time.
        let ts = ev.ts_ns.max(self.clock);
        self.clock = ts;
        self.expire_windows(ts);
        match payload {
            // The vCPU thread's own KVM events (vcpu.rs).
            Payload::KvmExit(x) => self.on_kvm_exit(ev, &x, ts),
            Payload::KvmEntry(x) => self.on_kvm_entry(ev, &x, ts),
            Payload::KvmUserspaceExit(x) => self.on_userspace_exit(ev, &x, ts),
            Payload::KvmInjVirq(x) => self.on_inj_virq(ev, &x, ts),
            Payload::KvmVcpuWakeup(_) => self.on_kvm_vcpu_wakeup(ev, ts),
            Payload::KvmPio(_) | Payload::KvmMmio(_) | Payload::KvmMsr(_) => {
                self.on_guest_caused_exit(ev, ts)
            }
            Payload::KvmWaitLapicExpire(x) => self.on_wait_lapic_expire(ev, &x, ts),
            Payload::KvmPageFault(_) | Payload::KvmEoi(_) => self.on_vcpu_note(ev, ts),
            Payload::KvmApicIpi(_) => {
                self.on_vcpu_note(ev, ts);
                self.on_apic_ipi(ev, ts);
            }
            // Timeline-only KVM events: a note when the tracepoint fires only in vCPU threads.
            Payload::KvmOther(x) if x.is_vcpu_context() => self.on_vcpu_note(ev, ts),
            Payload::KvmOther(_) => {}
            // Scheduling of vCPU threads (vcpu.rs).
            Payload::SchedSwitch(x) => self.on_switch(ev, &x, ts),
            Payload::SchedWakeup(x) => self.on_wakeup(ev, &x, ts),
            Payload::SchedWakeupNew(x) => self.threads.note_sched_name(x.pid, &x.comm),
            Payload::SchedMigrateTask(x) => self.on_migrate(ev, &x, ts),
            Payload::ContentionBegin(_) => self.on_contention(ev, ts, true),
            Payload::ContentionEnd(_) => self.on_contention(ev, ts, false),
            // Host interrupt work on a CPU (vcpu.rs).
            Payload::IrqHandlerEntry(x) => {
                let c = Cause::Hardirq { irq: x.irq as u32 };
                self.overlay(ev, ts, Some(c), None)
            }
            Payload::IrqHandlerExit(x) => {
                let c = Cause::Hardirq { irq: x.irq as u32 };
                self.overlay(ev, ts, None, Some(c))
            }
            Payload::SoftirqEntry(x) => {
                let c = Cause::Softirq { vec: x.vec as u32 };
                self.overlay(ev, ts, Some(c), None)
            }
            Payload::SoftirqExit(x) => {
                let c = Cause::Softirq { vec: x.vec as u32 };
                self.overlay(ev, ts, None, Some(c))
            }
            Payload::LocalTimerEntry(_) => self.apic_overlay(ev, ts, ApicVector::LocalTimer, true),
            Payload::LocalTimerExit(_) => self.apic_overlay(ev, ts, ApicVector::LocalTimer, false),
            Payload::RescheduleEntry(_) => self.apic_overlay(ev, ts, ApicVector::Reschedule, true),
            Payload::RescheduleExit(_) => self.apic_overlay(ev, ts, ApicVector::Reschedule, false),
            Payload::CallFunctionEntry(_) => {
                self.apic_overlay(ev, ts, ApicVector::CallFunction, true)
            }
            Payload::CallFunctionExit(_) => {
                self.apic_overlay(ev, ts, ApicVector::CallFunction, false)
            }
            Payload::CallFunctionSingleEntry(_) => {
                self.apic_overlay(ev, ts, ApicVector::CallFunctionSingle, true)
            }
            Payload::CallFunctionSingleExit(_) => {
                self.apic_overlay(ev, ts, ApicVector::CallFunctionSingle, false)
            }
            // Interrupts on their way to a vCPU (route.rs).
            Payload::KvmSetIrq(x) => self.on_set_irq(ev, &x, ts),
            Payload::KvmPicSetIrq(x) => self.on_pic_set_irq(ev, &x, ts),
            Payload::KvmIoapicSetIrq(x) => self.on_ioapic_set_irq(ev, &x, ts),
            Payload::KvmMsiSetIrq(x) => self.on_msi_set_irq(ev, &x, ts),
            Payload::KvmApicAcceptIrq(x) => self.on_apic_accept_irq(ev, &x, ts),
            Payload::KvmApicvAcceptIrq(x) => self.on_apicv_accept_irq(ev, &x, ts),
            Payload::HrtimerExpireEntry(x) => self.on_hrtimer_expire(ev, &x, ts),
            Payload::HrtimerStart(x) => self.on_hrtimer_start(ev, &x),
            // Drop checkpoints (window.rs).
            Payload::Drops(d) => self.on_drops(d.total()),
            // The kernel's exit histograms (vcpu.rs), in time order like the events they
            // summarise, so a vCPU is never first seen through them.
            Payload::ExitBuckets(x) => self.on_exit_buckets(ev, &x, ts),
            Payload::HrtimerExpireExit(_) | Payload::ThreadInfo(_) | Payload::DemoAck(_) => {}
            // Kernel stacks (stacks.rs): ticks in time order; the rest is side-band.
            Payload::StackSample(x) => self.on_stack_sample(ev, &x),
            Payload::StackAt(_) | Payload::StackFrames(_) | Payload::Symbol(_) => {}
        }
    }

    /// The state of `cpu`; None beyond `limits::MAX_CPUS` (never sized by input).
    fn cpu_mut(&mut self, cpu: u32) -> Option<&mut CpuState> {
        if cpu >= limits::MAX_CPUS {
            return None;
        }
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize_with(i + 1, CpuState::default);
        }
        self.cpus.get_mut(i)
    }

    fn apic_overlay(&mut self, ev: &Event, ts: u64, v: ApicVector, entry: bool) {
        let c = Cause::Apic(v);
        if entry {
            self.overlay(ev, ts, Some(c), None)
        } else {
            self.overlay(ev, ts, None, Some(c))
        }
    }
}

/// Of the windows closed, how many had a raise seen before them, and how many only a
/// wake-up (a VT-d posted interrupt, IPI virtualization, an AVIC doorbell: raises with no
/// tracepoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub with_raise: u64,
    pub without_raise: u64,
}
