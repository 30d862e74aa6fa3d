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
#[cfg(test)]
mod tests;
pub mod threads;
mod vcpu;
mod window;

use hdrhistogram::Histogram;
use kvmtrace_common::{Event, Payload};

pub use self::cause::{ApicVector, Cause};
use self::fxhash::FxHashMap;
use self::reorder::Reorder;
pub use self::threads::{StreamCounts, ThreadRec, Threads};
use self::vcpu::CpuState;
pub use self::vcpu::{ExitStat, Vcpu, VcpuStats};
use self::window::Closed;
pub use self::window::{EndMarker, OpenedBy, Sample};
use crate::capture::Trigger;
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
    announced: FxHashMap<u32, (u32, Option<u32>)>,
    /// Raising thread -> its last `kvm_set_irq`: Some(time) raised, None lowered.
    pending_raise: FxHashMap<u32, Option<u64>>,
    worst: Vec<Sample>,
    last_drops: u64,
    dropped: u64,
    unresolved_raises: u64,
    demo_truth: Histogram<u64>,
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
            threads: Threads::default(),
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
        self.threads.count(ev);
        match ev.payload() {
            // Bookkeeping records describe the stream rather than a moment in it.
            Some(Payload::ThreadInfo(t)) => return self.on_thread_info(ev, &t),
            Some(Payload::DemoAck(a)) => {
                let _ = self.demo_truth.record(a.latency_ns().max(1));
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

    /// The demo VMM's own raise-to-acknowledgement latencies (ground truth).
    pub fn demo_truth(&self) -> &Histogram<u64> {
        &self.demo_truth
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

    /// One event in timestamp order: dispatched to the handler of its kind, grouped by what
    /// it changes (a vCPU's state, a CPU's host-interrupt overlays, a raise on its way, the
    /// windows).
    fn process(&mut self, ev: &Event) {
        let Some(payload) = ev.payload() else {
            return;
        };
        // Late events (beyond the reorder window) are processed at the current time.
        let ts = ev.ts_ns.max(self.clock);
        self.clock = ts;
        self.expire_windows(ts);
        match payload {
            // The vCPU thread's own KVM events (vcpu.rs).
            Payload::KvmExit(x) => self.on_kvm_exit(ev, &x, ts),
            Payload::KvmEntry(x) => self.on_kvm_entry(ev, &x, ts),
            Payload::KvmUserspaceExit(x) => self.on_userspace_exit(ev, &x, ts),
            Payload::KvmInjVirq(_) => self.on_inj_virq(ev, ts),
            Payload::KvmVcpuWakeup(_) => self.on_kvm_vcpu_wakeup(ev, ts),
            Payload::KvmPio(_) | Payload::KvmMmio(_) | Payload::KvmMsr(_) => {
                self.on_guest_caused_exit(ev, ts)
            }
            Payload::KvmApicIpi(_)
            | Payload::KvmWaitLapicExpire(_)
            | Payload::KvmPageFault(_)
            | Payload::KvmEoi(_) => self.on_vcpu_note(ev, ts),
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
                self.overlay(ev, ts, Some(Cause::Hardirq { irq: x.irq as u32 }))
            }
            Payload::SoftirqEntry(x) => {
                self.overlay(ev, ts, Some(Cause::Softirq { vec: x.vec as u32 }))
            }
            Payload::LocalTimerEntry(_) => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::LocalTimer)))
            }
            Payload::RescheduleEntry(_) => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::Reschedule)))
            }
            Payload::CallFunctionEntry(_) => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::CallFunction)))
            }
            Payload::CallFunctionSingleEntry(_) => {
                self.overlay(ev, ts, Some(Cause::Apic(ApicVector::CallFunctionSingle)))
            }
            Payload::IrqHandlerExit(_)
            | Payload::SoftirqExit(_)
            | Payload::LocalTimerExit(_)
            | Payload::RescheduleExit(_)
            | Payload::CallFunctionExit(_)
            | Payload::CallFunctionSingleExit(_) => self.overlay(ev, ts, None),
            // Interrupts on their way to a vCPU (route.rs).
            Payload::KvmSetIrq(x) => self.on_set_irq(ev, &x, ts),
            Payload::KvmPicSetIrq(x) => self.on_pic_set_irq(ev, &x, ts),
            Payload::KvmIoapicSetIrq(x) => self.on_ioapic_set_irq(ev, &x, ts),
            Payload::KvmMsiSetIrq(x) => self.on_msi_set_irq(ev, &x, ts),
            Payload::KvmApicAcceptIrq(x) => self.on_apic_accept_irq(ev, &x, ts),
            Payload::HrtimerExpireEntry(x) => self.on_hrtimer_expire(ev, &x, ts),
            // Drop checkpoints (window.rs).
            Payload::Drops(d) => self.on_drops(d.total()),
            Payload::KvmApicvAcceptIrq(_) | Payload::HrtimerStart(_) => {}
            Payload::HrtimerExpireExit(_) | Payload::ThreadInfo(_) | Payload::DemoAck(_) => {}
        }
    }

    fn cpu_mut(&mut self, cpu: u32) -> &mut CpuState {
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize_with(i + 1, CpuState::default);
        }
        &mut self.cpus[i]
    }
}
