//! Per vCPU thread: its scheduling state and KVM context, the segments of its time and their
//! causes; per CPU: the stack of host interrupt work running there. The handlers of the
//! events that change them (the vCPU's own KVM events, sched events, host IRQs, locks).

use hdrhistogram::Histogram;
use kvmtrace_common::{ev, switch_prev_runnable, Event, ThreadInfoIs};

use super::fxhash::FxHashMap;
use super::window::{EndMarker, Window};
use super::{Cause, Engine, Threads};
use crate::hist::latency_histogram;
use crate::threads::vcpu_from_comm;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sched {
    Unknown,
    OnCpu,
    Preempted { by: u32 },
    Waking,
    Blocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ctx {
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

/// One exit reason's statistics.
pub struct ExitStat {
    /// Every `kvm_exit` with this reason, as `perf kvm stat` counts them.
    pub count: u64,
    /// `kvm_exit` -> next `kvm_entry` of the vCPU, for the exits whose entry was seen
    /// (`latency.len()` of `count`).
    pub latency: Histogram<u64>,
}

impl ExitStat {
    fn new() -> ExitStat {
        ExitStat {
            count: 0,
            latency: latency_histogram(),
        }
    }
}

/// Accumulated statistics of one vCPU.
pub struct VcpuStats {
    /// By (isa, exit reason).
    pub exits: FxHashMap<(u8, u32), ExitStat>,
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
    pub(super) fn new() -> VcpuStats {
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
    pub(super) sched: Sched,
    pub(super) ctx: Ctx,
    cpu: Option<u32>,
    in_lock: bool,
    pub(super) seg_start: u64,
    seen_entry: bool,
    exit_start: Option<(u64, u8, u32)>,
    pub(super) window: Option<Window>,
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
            w.relabel(from, to);
        }
    }
}

#[derive(Default)]
pub(super) struct CpuState {
    pub overlays: Vec<Cause>,
    /// The vCPU thread that last ran here.
    pub last_vcpu: Option<u32>,
}

impl Engine {
    /// A recorder's thread record: vCPU ids announced before the thread's first event.
    pub(super) fn on_thread_info(&mut self, e: &Event, t: &ev::ThreadInfo) {
        let ThreadInfoIs::Thread { vcpu } = t.is() else {
            return;
        };
        let vcpu = vcpu.or_else(|| vcpu_from_comm(&t.comm.to_string_lossy()));
        if let Some(v) = self.vcpus.get_mut(&e.tid) {
            if v.vcpu_id.is_none() {
                v.vcpu_id = vcpu;
            }
        } else if vcpu.is_some() {
            self.announced.insert(e.tid, (e.tgid, vcpu));
        }
    }

    pub(super) fn vcpu_entry(&mut self, tid: u32, tgid: u32, ts: u64) -> &mut Vcpu {
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
    pub(super) fn known(&mut self, tid: u32, ts: u64) -> bool {
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
    fn cause_of(v: &Vcpu, cpus: &[CpuState], threads: &Threads) -> Cause {
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
            Sched::Preempted { by } => overlay.unwrap_or(threads.preempted_by(by)),
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
    pub(super) fn account(&mut self, tid: u32, ts: u64) {
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        let now = ts.max(v.seg_start);
        let ns = now - v.seg_start;
        if ns > 0 {
            let cause = Self::cause_of(v, &self.cpus, &self.threads);
            *v.stats.state_ns.entry(cause).or_default() += ns;
            if let Some(w) = &mut v.window {
                w.add_segment(v.seg_start, now, cause, self.cfg.timeline_events);
            }
        }
        v.seg_start = now;
        v.stats.last_ns = now;
    }

    /// What every event from a vCPU thread's own KVM context does first: the thread is a
    /// vCPU, it runs on this CPU, and what was undecided about its past is decided. Returns
    /// the vCPU.
    fn vcpu_event(&mut self, e: &Event, ts: u64, is_wakeup: bool) -> Option<&mut Vcpu> {
        let tid = e.tid;
        self.vcpu_entry(tid, e.tgid, ts);
        self.account(tid, ts);
        self.note_in_window(tid, e);
        self.cpu_mut(e.cpu).last_vcpu = Some(tid);
        let v = self.vcpus.get_mut(&tid)?;
        // An event from the thread means it is running here, whatever we believed.
        if v.sched != Sched::OnCpu {
            if let (Some(w), Sched::Blocked | Sched::Preempted { .. }) = (&mut v.window, v.sched) {
                // We missed its switch-in: the window's attribution has a hole.
                w.incomplete = true;
            }
            v.sched = Sched::OnCpu;
        }
        v.cpu = Some(e.cpu);
        v.resolve(Cause::UnresolvedWaiting, Cause::Wakeup);
        if let Ctx::MaybeHalt { vmm_reason } = v.ctx {
            let (blocked, running) = if is_wakeup {
                (Cause::Halted, Cause::KvmRun)
            } else {
                let vmm = Cause::Vmm { reason: vmm_reason };
                (vmm, vmm)
            };
            v.resolve(Cause::UnresolvedBlocked, blocked);
            v.resolve(Cause::UnresolvedRunning, running);
            v.ctx = Ctx::KvmRun;
        }
        Some(v)
    }

    /// A vCPU-context event that changes nothing but says the thread runs (kept in the
    /// window's timeline).
    pub(super) fn on_vcpu_note(&mut self, e: &Event, ts: u64) {
        self.vcpu_event(e, ts, false);
    }

    pub(super) fn on_kvm_exit(&mut self, e: &Event, x: &ev::KvmExit, ts: u64) {
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        let reason = x.exit_reason as u32;
        let isa = x.isa.unwrap_or(0) as u8;
        if let (Some(id), None) = (x.vcpu_id, v.vcpu_id) {
            v.vcpu_id = Some(id as u32);
        }
        v.ctx = Ctx::Exit { isa, reason };
        v.exit_start = Some((ts, isa, reason));
        v.stats
            .exits
            .entry((isa, reason))
            .or_insert_with(ExitStat::new)
            .count += 1;
    }

    pub(super) fn on_kvm_entry(&mut self, e: &Event, x: &ev::KvmEntry, ts: u64) {
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        v.seen_entry = true;
        if let (Some(id), None) = (x.vcpu_id, v.vcpu_id) {
            v.vcpu_id = Some(id as u32);
        }
        if let Some((start, isa, reason)) = v.exit_start.take() {
            let st = v
                .stats
                .exits
                .entry((isa, reason))
                .or_insert_with(ExitStat::new);
            let _ = st.latency.record(ts.saturating_sub(start).max(1));
        }
        v.ctx = Ctx::Guest;
        let close = v.window.as_ref().map(|w| {
            if w.opened_in_guest && !w.injected {
                // Accepted while the guest ran and never injected: posted straight into
                // the running guest, no host latency.
                EndMarker::PostedInGuest
            } else {
                EndMarker::KvmEntry
            }
        });
        if let Some(marker) = close {
            self.close_window(e.tid, ts, marker);
        }
    }

    pub(super) fn on_userspace_exit(&mut self, e: &Event, x: &ev::KvmUserspaceExit, ts: u64) {
        if let Some(v) = self.vcpu_event(e, ts, false) {
            v.ctx = Ctx::Vmm {
                reason: x.reason.unwrap_or(0) as u32,
            };
        }
    }

    pub(super) fn on_inj_virq(&mut self, e: &Event, ts: u64) {
        if let Some(w) = self
            .vcpu_event(e, ts, false)
            .and_then(|v| v.window.as_mut())
        {
            w.injected = true;
        }
    }

    pub(super) fn on_kvm_vcpu_wakeup(&mut self, e: &Event, ts: u64) {
        if let Some(v) = self.vcpu_event(e, ts, true) {
            v.ctx = Ctx::KvmRun;
            if let Some(w) = &mut v.window {
                w.can_run = true;
            }
        }
    }

    /// `kvm_pio`, `kvm_mmio`, `kvm_msr`: an exit the guest caused.
    pub(super) fn on_guest_caused_exit(&mut self, e: &Event, ts: u64) {
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        // Guest-caused: back in KVM_RUN if we thought otherwise.
        if matches!(v.ctx, Ctx::Vmm { .. } | Ctx::Unknown | Ctx::Halt) {
            v.ctx = Ctx::KvmRun;
        }
        if !v.seen_entry && v.window.as_ref().is_some_and(|w| w.can_run) {
            self.close_window(e.tid, ts, EndMarker::FirstGuestExit);
        }
    }

    pub(super) fn on_switch(&mut self, e: &Event, x: &ev::SchedSwitch, ts: u64) {
        let prev = x.prev_pid as u32;
        let next = x.next_pid as u32;
        let runnable = switch_prev_runnable(x.prev_state);
        if next != 0 && !x.next_comm.is_empty() {
            self.threads.note_sched_name(x.next_pid, &x.next_comm);
        }
        let cpu = e.cpu;
        if self.known(prev, ts) {
            self.account(prev, ts);
            self.note_in_window(prev, e);
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
            let waited = if prev != 0 {
                self.threads.preempted_by(prev)
            } else {
                Cause::Wakeup
            };
            if let Some(v) = self.vcpus.get_mut(&next) {
                v.resolve(Cause::UnresolvedWaiting, waited);
            }
            self.note_in_window(next, e);
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

    pub(super) fn on_wakeup(&mut self, e: &Event, x: &ev::SchedWakeup, ts: u64) {
        let pid = x.pid as u32;
        if !self.known(pid, ts) {
            return;
        }
        self.account(pid, ts);
        self.note_in_window(pid, e);
        if let Some(v) = self.vcpus.get_mut(&pid) {
            if v.sched != Sched::OnCpu {
                v.sched = Sched::Waking;
            }
            v.cpu = Some(x.target_cpu.unwrap_or(0) as u32);
            if let Some(w) = &mut v.window {
                w.can_run = true;
            }
        }
    }

    pub(super) fn on_migrate(&mut self, e: &Event, x: &ev::SchedMigrateTask, ts: u64) {
        let pid = x.pid as u32;
        if !self.known(pid, ts) {
            return;
        }
        self.account(pid, ts);
        self.note_in_window(pid, e);
        if let Some(v) = self.vcpus.get_mut(&pid) {
            v.cpu = Some(x.dest_cpu as u32);
        }
    }

    /// `lock:contention_begin/end` in a vCPU thread.
    pub(super) fn on_contention(&mut self, e: &Event, ts: u64, begin: bool) {
        if !self.vcpus.contains_key(&e.tid) {
            return;
        }
        self.account(e.tid, ts);
        self.note_in_window(e.tid, e);
        if let Some(v) = self.vcpus.get_mut(&e.tid) {
            v.in_lock = begin;
        }
    }

    /// A host interrupt handler starts (`Some`) or ends (`None`) on `e.cpu`.
    pub(super) fn overlay(&mut self, e: &Event, ts: u64, start: Option<Cause>) {
        let cpu = e.cpu;
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
            self.note_in_window(tid, e);
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
}
