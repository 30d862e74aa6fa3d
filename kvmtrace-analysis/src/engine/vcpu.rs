//! Per vCPU thread: its scheduling state and KVM context, the segments of its time and their
//! causes; per CPU: the stack of host interrupt work running there. The handlers of the
//! events that change them (the vCPU's own KVM events, sched events, host IRQs, locks), and
//! the delivery evidence that closes windows (docs/attribution.md, "closing").

use hdrhistogram::Histogram;
use kvmtrace_common::{ev, limits, switch_prev_runnable, Event, ThreadInfoIs};

use super::fxhash::FxHashMap;
use super::window::{EndMarker, OpenedBy, Opening, Window};
use super::{Cause, Engine, StackAcc, Threads};
use crate::hist::{latency_histogram, ExitBucketHist};
use crate::names::{ISA_SVM, ISA_VMX};
use crate::threads::vcpu_from_comm;

/// VMX exit reasons and SVM exit codes the rules name (arch/x86/include/uapi/asm/vmx.h,
/// svm.h).
pub(super) mod exits {
    pub const VMX_HLT: u32 = 12;
    pub const VMX_INTERRUPT_WINDOW: u32 = 7;
    pub const VMX_MWAIT: u32 = 36;
    pub const VMX_PREEMPTION_TIMER: u32 = 52;
    pub const SVM_VINTR: u32 = 0x64;
    pub const SVM_HLT: u32 = 0x78;
    pub const SVM_MWAIT: u32 = 0x8b;
}

/// Is `(isa, reason)` a halt: the vCPU waits for its next interrupt (HLT; MWAIT only when
/// the VMM lets KVM treat it as a halt).
pub fn is_halt_exit(isa: u8, reason: u32) -> bool {
    match u64::from(isa) {
        ISA_VMX => matches!(reason & 0xffff, exits::VMX_HLT | exits::VMX_MWAIT),
        ISA_SVM => matches!(reason, exits::SVM_HLT | exits::SVM_MWAIT),
        _ => false,
    }
}

/// Is `(isa, reason)` an interrupt-window exit: the guest can now take the interrupt KVM
/// could not inject (x86.c `enable_irq_window`).
fn is_irq_window_exit(isa: u8, reason: u32) -> bool {
    match u64::from(isa) {
        ISA_VMX => reason & 0xffff == exits::VMX_INTERRUPT_WINDOW,
        ISA_SVM => reason == exits::SVM_VINTR,
        _ => false,
    }
}

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
    /// Out of the guest before its `kvm_exit` was traced: a host interrupt ran in the vCPU
    /// thread while it was "in guest". On Linux 6.1 SVM `kvm_exit` comes from
    /// `svm_handle_exit`, after the host IRQ that caused the exit (6.1: svm.c:3446,
    /// x86.c:10986-11019); the reason comes with that `kvm_exit`.
    ExitPending,
    Halt,
    /// Blocked with no exit reason to say why (kernels without `kvm_exit`, or an exit not
    /// seen): a halt or another sleep, told apart by the thread's next KVM event:
    /// `kvm_vcpu_wakeup` means it was a halt. After a userspace exit on a kernel without
    /// `kvm_entry` the other possibility is a wait in the VMM (`vmm_reason`).
    MaybeHalt {
        vmm_reason: Option<u32>,
    },
}

/// Where a vCPU's id came from, weakest first: a later source of at least the same strength
/// replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum IdSource {
    /// The VMM's thread name (QEMU's `CPU n/KVM` is its cpu_index, not KVM's vcpu_id).
    Name,
    /// KVM's own: its debugfs, or `vcpu_id` in the thread's `kvm_exit`/`kvm_entry`.
    Kvm,
}

/// One exit reason's statistics.
pub struct ExitStat {
    /// Every `kvm_exit` with this reason in the stream, as `perf kvm stat` counts them.
    pub count: u64,
    /// `kvm_exit` -> next `kvm_entry` of the vCPU, for the exits in the stream whose entry
    /// was seen (`latency.len()` of `count`).
    pub latency: Histogram<u64>,
    /// The same latency counted in the kernel for every exit, streamed or not
    /// (`exit_buckets` records of a live recording; empty for imported traces). When it has
    /// exits it is the complete figure, the stream's only a sample of it.
    pub kernel: ExitBucketHist,
}

impl ExitStat {
    fn new() -> ExitStat {
        ExitStat {
            count: 0,
            latency: latency_histogram(),
            kernel: ExitBucketHist::default(),
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
    /// Complete samples by what opened them (`OpenedBy::name`).
    pub opened_by: FxHashMap<&'static str, u64>,
    pub incomplete: u64,
    /// Coalesced: the same vector raised again while it was still pending.
    pub coalesced: u64,
    /// Raises not followed because [`super::window::MAX_WINDOWS`] were open.
    pub windows_overflow: u64,
    /// `kvm_wait_lapic_expire`: the LAPIC timer's deadline against the guest TSC at entry,
    /// in guest TSC cycles; late ones (> 0) in the histogram, early ones counted.
    pub timer_late_cycles: Histogram<u64>,
    pub timer_early: u64,
    pub state_ns: FxHashMap<Cause, u64>,
    /// Exits were counted in the kernel (`exit_buckets` records): those outside interrupt
    /// windows are not in the stream, so the split of `state_ns` between the guest and exit
    /// handling is approximate there (the windows' own attribution is not).
    pub exits_in_kernel: bool,
    /// With kernel stacks (docs/stacks.md): `state_ns` split over stacks, and
    /// `irq_causes` likewise (from the committed samples).
    pub stack_ns: StackAcc,
    pub irq_stack_ns: StackAcc,
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
            opened_by: FxHashMap::default(),
            incomplete: 0,
            coalesced: 0,
            windows_overflow: 0,
            timer_late_cycles: latency_histogram(),
            timer_early: 0,
            state_ns: FxHashMap::default(),
            exits_in_kernel: false,
            stack_ns: StackAcc::default(),
            irq_stack_ns: StackAcc::default(),
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
    pub(super) id_source: IdSource,
    pub(super) sched: Sched,
    pub(super) ctx: Ctx,
    cpu: Option<u32>,
    in_lock: bool,
    pub(super) seg_start: u64,
    seen_entry: bool,
    /// The last `kvm_entry` asked for an immediate exit: the next exit is KVM's own.
    immediate_exit: bool,
    exit_start: Option<(u64, u8, u32)>,
    pub(super) windows: Vec<Window>,
    pub stats: VcpuStats,
}

impl Vcpu {
    /// The CPU the vCPU thread runs on, or last ran or waits on.
    pub fn cpu(&self) -> Option<u32> {
        self.cpu
    }

    /// Is it in its guest now (entered, no exit since, on a CPU)?
    pub(super) fn in_guest(&self) -> bool {
        self.sched == Sched::OnCpu && self.ctx == Ctx::Guest
    }

    /// Is it halted, waiting for an interrupt?
    pub(super) fn halted(&self) -> bool {
        self.sched == Sched::Blocked && matches!(self.ctx, Ctx::Halt | Ctx::MaybeHalt { .. })
    }

    /// The stream ended: placeholders still undecided become what is certain of them.
    pub(super) fn resolve_at_end(&mut self) {
        if let Ctx::MaybeHalt { vmm_reason } = self.ctx {
            let blocked = vmm_reason.map_or(Cause::Blocked, |reason| Cause::Vmm { reason });
            self.resolve(Cause::UnresolvedBlocked, blocked);
            self.resolve(Cause::UnresolvedRunning, Cause::KvmRun);
        }
        self.resolve(Cause::UnresolvedWaiting, Cause::Wakeup);
    }

    /// Moves the time given to a placeholder cause to the cause it turned out to be.
    fn resolve(&mut self, from: Cause, to: Cause) {
        if let Some(ns) = self.stats.state_ns.remove(&from) {
            *self.stats.state_ns.entry(to).or_default() += ns;
        }
        self.stats.stack_ns.relabel(from, to);
        for w in &mut self.windows {
            w.relabel(from, to);
        }
    }
}

/// One piece of host interrupt work open on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Overlay {
    pub cause: Cause,
    /// The task that was current when it started (the one a softirq on PREEMPT_RT runs in).
    pub tid: u32,
}

#[derive(Default)]
pub(super) struct CpuState {
    pub overlays: Vec<Overlay>,
    /// The vCPU thread that last ran here.
    pub last_vcpu: Option<u32>,
}

/// Why the vCPU thread is in the VMM after `kvm_userspace_exit`. KVM traces the exit
/// reason and KVM_RUN's return value (kvm_main.c `kvm_vcpu_ioctl`, KVM_RUN); on an error
/// return the reason is whatever `run->exit_reason` held: -EINTR is a signal or an
/// immediate exit (QEMU's kick), `KVM_EXIT_INTR` (x86.c sets it on the signal paths; a text
/// trace says only `restart`); any other errno is `error` (-EAGAIN: an AP woken from
/// wait-for-SIPI, x86.c `kvm_arch_vcpu_ioctl_run`).
fn vmm_reason(x: &ev::KvmUserspaceExit) -> u32 {
    const EINTR: i32 = 4;
    const KVM_EXIT_INTR: u32 = 10;
    // An `int`: its low 32 bits, however the record widened it.
    match x.errno.map(|e| e as i32) {
        Some(e) if e == -EINTR => KVM_EXIT_INTR,
        Some(e) if e < 0 => Cause::VMM_ERROR,
        _ => x.reason.unwrap_or(0) as u32,
    }
}

/// Host interrupt work nested deeper than this on one CPU is not followed.
const MAX_OVERLAYS: usize = 8;

impl Engine {
    /// A recorder's thread record: vCPU ids announced before the thread's first event.
    pub(super) fn on_thread_info(&mut self, e: &Event, t: &ev::ThreadInfo) {
        if t.is() == ThreadInfoIs::VmGone {
            // Its vCPUs take no more raises: a new VM's vCPU 0 is not the gone one's.
            self.vms.remove(&e.tgid);
            let gone: Vec<u32> = self
                .vcpus
                .values()
                .filter(|v| v.tgid == e.tgid)
                .map(|v| v.tid)
                .collect();
            for tids in self.by_id.values_mut() {
                tids.retain(|t| !gone.contains(t));
            }
            return;
        }
        let ThreadInfoIs::Thread { vcpu } = t.is() else {
            return;
        };
        if e.tid == 0 {
            // The idle task is nobody's vCPU. (KVM's debugfs `vcpu<N>/pid` reads 0 until the
            // vCPU's first KVM_RUN, kvm_main.c:4206-4214; kvmtrace 0.1 captures of a VM
            // started paused carry that 0 as a thread record.)
            return;
        }
        let (vcpu, source) = match vcpu {
            Some(id) if t.vcpu_from_kvm() => (Some(id), IdSource::Kvm),
            Some(id) => (Some(id), IdSource::Name),
            None => (vcpu_from_comm(&t.comm.to_string_lossy()), IdSource::Name),
        };
        if self.vcpus.contains_key(&e.tid) {
            if let Some(id) = vcpu {
                self.set_vcpu_id(e.tid, id, source);
            }
        } else if vcpu.is_some() {
            self.announced.insert(e.tid, (e.tgid, vcpu, source));
        }
    }

    /// Records `tid`'s vCPU id unless a stronger source already gave one.
    pub(super) fn set_vcpu_id(&mut self, tid: u32, id: u32, source: IdSource) {
        let Some(v) = self.vcpus.get_mut(&tid) else {
            return;
        };
        if v.vcpu_id == Some(id) {
            // KVM confirming a name's guess makes it KVM's.
            v.id_source = v.id_source.max(source);
            return;
        }
        if v.vcpu_id.is_some() && source < v.id_source {
            return;
        }
        if let Some(old) = v.vcpu_id {
            if let Some(tids) = self.by_id.get_mut(&old) {
                tids.retain(|t| *t != tid);
            }
        }
        v.vcpu_id = Some(id);
        v.id_source = source;
        let tids = self.by_id.entry(id).or_default();
        if !tids.contains(&tid) {
            tids.push(tid);
        }
    }

    pub(super) fn vcpu_entry(&mut self, tid: u32, tgid: u32, ts: u64) -> &mut Vcpu {
        if !self.vcpus.contains_key(&tid) {
            let announced = self.announced.remove(&tid);
            *self.vms.entry(announced.map_or(tgid, |a| a.0)).or_default() += 1;
            let mut stats = VcpuStats::new();
            stats.first_ns = ts;
            self.vcpus.insert(
                tid,
                Vcpu {
                    tid,
                    tgid: announced.map_or(tgid, |a| a.0),
                    vcpu_id: None,
                    id_source: IdSource::Name,
                    sched: Sched::Unknown,
                    ctx: Ctx::Unknown,
                    cpu: None,
                    in_lock: false,
                    seg_start: ts,
                    seen_entry: false,
                    immediate_exit: false,
                    exit_start: None,
                    windows: Vec::new(),
                    stats,
                },
            );
            if let Some((_, Some(id), source)) = announced {
                self.set_vcpu_id(tid, id, source);
            }
        }
        self.vcpus
            .get_mut(&tid)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Is `tid` a vCPU thread? Threads announced by `thread_info` (a `CPU n/KVM` name) become
    /// vCPUs here, so their scheduling is followed before their first KVM event.
    pub(super) fn known(&mut self, tid: u32, ts: u64) -> bool {
        if self.vcpus.contains_key(&tid) {
            return true;
        }
        match self.announced.get(&tid) {
            Some(&(tgid, _, _)) => {
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
            .and_then(|c| c.overlays.last().map(|o| o.cause));
        match v.sched {
            Sched::Blocked => match v.ctx {
                _ if v.in_lock => Cause::Lock,
                Ctx::Halt => Cause::Halted,
                Ctx::MaybeHalt { .. } => Cause::UnresolvedBlocked,
                Ctx::Vmm { reason } => Cause::Vmm { reason },
                Ctx::Exit { isa, reason } => Cause::BlockedExit { isa, reason },
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
                    Ctx::ExitPending => Cause::UnresolvedExit,
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
            // Its stacks (stacks.rs; empty without them), wherever the cause goes.
            let split = self.stacks.segment(v, cause, now);
            v.stats.stack_ns.add(cause, split);
            for w in &mut v.windows {
                let c = w.add_segment(v.seg_start, now, cause, self.cfg.timeline_events);
                w.stacks.add(c, split);
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
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_vcpu = Some(tid);
        }
        let v = self.vcpus.get_mut(&tid)?;
        // An event from the thread means it is running here, whatever we believed.
        if v.sched != Sched::OnCpu {
            if matches!(v.sched, Sched::Blocked | Sched::Preempted { .. }) {
                // We missed its switch-in: the windows' attribution has a hole.
                for w in &mut v.windows {
                    w.incomplete = true;
                }
            }
            v.sched = Sched::OnCpu;
        }
        v.cpu = Some(e.cpu);
        v.resolve(Cause::UnresolvedWaiting, Cause::Wakeup);
        if let Ctx::MaybeHalt { vmm_reason } = v.ctx {
            let (blocked, running) = match (is_wakeup, vmm_reason) {
                (true, _) => (Cause::Halted, Cause::KvmRun),
                (false, Some(reason)) => {
                    let vmm = Cause::Vmm { reason };
                    (vmm, vmm)
                }
                (false, None) => (Cause::Blocked, Cause::KvmRun),
            };
            v.resolve(Cause::UnresolvedBlocked, blocked);
            v.resolve(Cause::UnresolvedRunning, running);
            v.ctx = Ctx::KvmRun;
        }
        Some(v)
    }

    /// A vCPU-context event that changes nothing but says the thread runs (kept in the
    /// windows' timelines).
    pub(super) fn on_vcpu_note(&mut self, e: &Event, ts: u64) {
        self.vcpu_event(e, ts, false);
    }

    /// `kvm_wait_lapic_expire`: the timer lateness the guest sees.
    pub(super) fn on_wait_lapic_expire(&mut self, e: &Event, x: &ev::KvmWaitLapicExpire, ts: u64) {
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        let delta = x.delta as i64;
        if delta > 0 {
            let _ = v.stats.timer_late_cycles.record(delta as u64);
        } else {
            v.stats.timer_early += 1;
        }
    }

    pub(super) fn on_kvm_exit(&mut self, e: &Event, x: &ev::KvmExit, ts: u64) {
        let tid = e.tid;
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        let reason = x.exit_reason as u32;
        let isa = x.isa.unwrap_or(0) as u8;
        v.resolve(Cause::UnresolvedExit, Cause::Exit { isa, reason });
        v.ctx = Ctx::Exit { isa, reason };
        v.exit_start = Some((ts, isa, reason));
        v.stats
            .exits
            .entry((isa, reason))
            .or_insert_with(ExitStat::new)
            .count += 1;
        if is_irq_window_exit(isa, reason) {
            for w in v.windows.iter_mut().filter(|w| w.undelivered_entry) {
                w.irq_window_exit = true;
            }
        }
        let kvm_own_exit = std::mem::take(&mut v.immediate_exit);
        let timer = u64::from(isa) == ISA_VMX
            && reason & 0xffff == exits::VMX_PREEMPTION_TIMER
            && !kvm_own_exit;
        if let Some(id) = x.vcpu_id {
            self.set_vcpu_id(tid, id as u32, IdSource::Kvm);
        }
        if timer {
            // The LAPIC timer on the VMX preemption timer: no hrtimer, the exit is the
            // raise (vmx.c `handle_fastpath_preemption_timer`).
            let o = Opening {
                at: ts,
                by: OpenedBy::PreemptionTimer,
                vector: None,
                tentative: None,
            };
            self.open_window(tid, o, e);
        }
    }

    pub(super) fn on_kvm_entry(&mut self, e: &Event, x: &ev::KvmEntry, ts: u64) {
        let tid = e.tid;
        self.saw_entry = true;
        self.clear_stale_overlays(e.cpu);
        let injections_traced = self.cfg.injections_traced;
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        v.seen_entry = true;
        v.immediate_exit = x.immediate_exit.is_some_and(|i| i != 0);
        if let Some((start, isa, reason)) = v.exit_start.take() {
            let st = v
                .stats
                .exits
                .entry((isa, reason))
                .or_insert_with(ExitStat::new);
            let _ = st.latency.record(ts.saturating_sub(start).max(1));
        }
        v.ctx = Ctx::Guest;
        // Linux 6.18+ says what this entry injects: an external interrupt's vector is its
        // delivery, as a kvm_inj_virq would be.
        if let Some(info) = x.intr_info {
            let valid = info & (1 << 31) != 0;
            let external = (info >> 8) & 7 == 0;
            if valid && external {
                if let Some(i) = v.window_for_injection((info & 0xff) as u32) {
                    v.windows[i].injected = true;
                }
            }
        }
        // Which open windows this entry delivers (docs/attribution.md, closing rules).
        let mut close = Vec::new();
        for (i, w) in v.windows.iter_mut().enumerate() {
            let marker = if w.posted {
                Some(EndMarker::PostedEntry)
            } else if w.injected {
                Some(EndMarker::KvmEntry)
            } else if w.opened_by == OpenedBy::Wakeup {
                Some(EndMarker::WokenEntry)
            } else if !injections_traced {
                Some(EndMarker::FirstEntry)
            } else {
                // Entered without delivering it: the guest holds it off from here on.
                w.undelivered_entry = true;
                None
            };
            if let Some(m) = marker {
                close.push((i, m));
            }
        }
        if let Some(id) = x.vcpu_id {
            self.set_vcpu_id(tid, id as u32, IdSource::Kvm);
        }
        for (i, m) in close.into_iter().rev() {
            self.close_window(tid, i, ts, m);
        }
    }

    /// What the kernel's exit histogram of `e.tid` gained since its previous record.
    pub(super) fn on_exit_buckets(&mut self, e: &Event, x: &ev::ExitBuckets, ts: u64) {
        let isa = (x.key >> 32) as u8;
        let reason = x.key as u32;
        let v = self.vcpu_entry(e.tid, e.tgid, ts);
        v.stats.exits_in_kernel = true;
        let st = v
            .stats
            .exits
            .entry((isa, reason))
            .or_insert_with(ExitStat::new);
        for b in [x.b0, x.b1, x.b2, x.b3] {
            st.kernel.add_packed(b);
        }
    }

    pub(super) fn on_userspace_exit(&mut self, e: &Event, x: &ev::KvmUserspaceExit, ts: u64) {
        let tid = e.tid;
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        v.ctx = Ctx::Vmm {
            reason: vmm_reason(x),
        };
        // A vCPU woken without a raise that leaves for the VMM before entering its guest
        // was woken by a signal or a request, not an interrupt.
        let spurious: Vec<usize> = v
            .windows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.opened_by == OpenedBy::Wakeup)
            .map(|(i, _)| i)
            .collect();
        for i in spurious.into_iter().rev() {
            self.drop_window(tid, i);
        }
    }

    /// `kvm_inj_virq`: KVM injects a vector at the coming entry (no APICv/AVIC, or a PIC
    /// interrupt). A soft interrupt (`INTn` re-injected) is not an interrupt's delivery.
    pub(super) fn on_inj_virq(&mut self, e: &Event, x: &ev::KvmInjVirq, ts: u64) {
        let tid = e.tid;
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        if x.soft.is_some_and(|s| s != 0) {
            return;
        }
        let vector = x.vector as u32;
        if let Some(i) = v.window_for_injection(vector) {
            let w = &mut v.windows[i];
            w.injected = true;
            w.vector.get_or_insert(vector);
            if let Some(g) = w.tentative {
                self.tentative_resolved(g, tid);
            }
        }
    }

    pub(super) fn on_kvm_vcpu_wakeup(&mut self, e: &Event, ts: u64) {
        if let Some(v) = self.vcpu_event(e, ts, true) {
            v.ctx = Ctx::KvmRun;
            for w in &mut v.windows {
                w.can_run = true;
            }
        }
    }

    /// `kvm_pio`, `kvm_mmio`, `kvm_msr`: an exit the guest caused. On kernels without
    /// `kvm_entry` the first one after the vCPU could run closes its windows.
    pub(super) fn on_guest_caused_exit(&mut self, e: &Event, ts: u64) {
        let tid = e.tid;
        let Some(v) = self.vcpu_event(e, ts, false) else {
            return;
        };
        // Guest-caused: back in KVM_RUN if we thought otherwise.
        if matches!(v.ctx, Ctx::Vmm { .. } | Ctx::Unknown | Ctx::Halt) {
            v.ctx = Ctx::KvmRun;
        }
        if v.seen_entry {
            return;
        }
        let ready: Vec<usize> = v
            .windows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.can_run)
            .map(|(i, _)| i)
            .collect();
        for i in ready.into_iter().rev() {
            self.close_window(tid, i, ts, EndMarker::FirstGuestExit);
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
        // No hard interrupt handler runs across a context switch.
        self.clear_switched_overlays(cpu, prev, ts);
        self.hand_over_waiters(cpu, prev, next, ts);
        if self.known(prev, ts) {
            self.account(prev, ts);
            self.note_in_window(prev, e);
            if let Some(v) = self.vcpus.get_mut(&prev) {
                if runnable {
                    v.in_lock = false;
                    // Runnable but the CPU idles (CFS bandwidth throttling, core
                    // scheduling's forced idle): waiting, behind no task.
                    v.sched = if next != 0 {
                        Sched::Preempted { by: next }
                    } else {
                        Sched::Waking
                    };
                } else {
                    // A sleep after lock contention stays `lock` until contention_end.
                    v.sched = Sched::Blocked;
                    v.ctx = match v.ctx {
                        // Blocked in a halt (kvm_vcpu_halt).
                        Ctx::Exit { isa, reason } if is_halt_exit(isa, reason) => Ctx::Halt,
                        // Blocked handling another exit: a page fault waiting for its page,
                        // a mutex in the handler (cause `blocked:exit:REASON`).
                        c @ Ctx::Exit { .. } => c,
                        // No exit says why: a halt if the next KVM event is kvm_vcpu_wakeup.
                        Ctx::KvmRun | Ctx::Guest | Ctx::Unknown => {
                            Ctx::MaybeHalt { vmm_reason: None }
                        }
                        // After a userspace exit the VMM may have called KVM_RUN again and
                        // halted there (no event says so before kvm_vcpu_wakeup), or it
                        // waits in the VMM: decided likewise.
                        Ctx::Vmm { reason } => Ctx::MaybeHalt {
                            vmm_reason: Some(reason),
                        },
                        c => c,
                    };
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
                for w in &mut v.windows {
                    w.can_run = true;
                }
            }
            if let Some(c) = self.cpu_mut(cpu) {
                c.last_vcpu = Some(next);
            }
        }
    }

    /// A switch on `cpu` between two other tasks while vCPUs wait for that CPU (woken onto
    /// it, or preempted there): their wait until now was behind `prev` (the CPU was idle
    /// when `prev` is 0), from now it is behind `next` (`sched_switch` is traced in
    /// `__schedule` as the CPU passes from one to the other, kernel/sched/core.c:6749,
    /// 6.12). Each task that held the CPU gets the time it held it, not only the one the
    /// vCPU is finally switched in from.
    fn hand_over_waiters(&mut self, cpu: u32, prev: u32, next: u32, ts: u64) {
        let waiting: Vec<u32> = self
            .vcpus
            .values()
            .filter(|v| {
                v.cpu == Some(cpu)
                    && v.tid != prev
                    && v.tid != next
                    && matches!(v.sched, Sched::Waking | Sched::Preempted { .. })
            })
            .map(|v| v.tid)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let behind = if prev != 0 {
            self.threads.preempted_by(prev)
        } else {
            Cause::Wakeup
        };
        for tid in waiting {
            self.account(tid, ts);
            if let Some(v) = self.vcpus.get_mut(&tid) {
                v.resolve(Cause::UnresolvedWaiting, behind);
                // To the idle task: no task is runnable there, so the belief that this vCPU
                // waits here is stale (a missed migration); it is waiting, for an unknown CPU.
                v.sched = if next != 0 {
                    Sched::Preempted { by: next }
                } else {
                    Sched::Waking
                };
            }
        }
    }

    pub(super) fn on_wakeup(&mut self, e: &Event, x: &ev::SchedWakeup, ts: u64) {
        let pid = x.pid as u32;
        if !self.known(pid, ts) {
            return;
        }
        self.account(pid, ts);
        self.note_in_window(pid, e);
        let saw_entry = self.saw_entry;
        let Some(v) = self.vcpus.get_mut(&pid) else {
            return;
        };
        let halted = v.halted();
        if v.sched != Sched::OnCpu {
            v.sched = Sched::Waking;
        }
        // Where it waits; unknown without a target CPU (no task there is charged with the
        // wait until the vCPU is switched in). A running vCPU stays where it runs.
        match x.target_cpu.filter(|c| *c < u64::from(limits::MAX_CPUS)) {
            Some(c) => v.cpu = Some(c as u32),
            None if v.sched != Sched::OnCpu => v.cpu = None,
            None => {}
        }
        for w in &mut v.windows {
            w.can_run = true;
        }
        // The raise woke this candidate: the interrupt was its own.
        let groups: Vec<u64> = v.windows.iter().filter_map(|w| w.tentative).collect();
        let no_window = v.windows.is_empty();
        for g in groups {
            self.tentative_resolved(g, pid);
        }
        if halted && no_window && saw_entry {
            // A halted vCPU woken with no raise seen (VT-d posting, IPI virtualization,
            // AVIC): the wake-up is the first sign of its interrupt.
            let o = Opening {
                at: ts,
                by: OpenedBy::Wakeup,
                vector: None,
                tentative: None,
            };
            self.open_window(pid, o, e);
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
            v.cpu = (x.dest_cpu < u64::from(limits::MAX_CPUS)).then_some(x.dest_cpu as u32);
            // Waiting elsewhere now (`set_task_cpu` traces the move, kernel/sched/core.c:3305,
            // 6.12): behind whoever holds the new CPU, known at its next switch (or the
            // vCPU's switch-in).
            if matches!(v.sched, Sched::Preempted { .. }) {
                v.sched = Sched::Waking;
            }
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

    /// The vCPUs on `cpu`, into the scratch list.
    fn vcpus_on(&mut self, cpu: u32) -> Vec<u32> {
        let mut here = std::mem::take(&mut self.scratch);
        here.clear();
        here.extend(
            self.vcpus
                .values()
                .filter(|v| v.cpu == Some(cpu))
                .map(|v| v.tid),
        );
        here
    }

    /// A host interrupt handler starts (`Some`) or ends (`None`, with the cause it ends) on
    /// `e.cpu`. An exit ends the innermost open work of the same kind; one with nothing to
    /// end (its entry was lost, or the trace starts inside it) is ignored.
    pub(super) fn overlay(&mut self, e: &Event, ts: u64, start: Option<Cause>, end: Option<Cause>) {
        let cpu = e.cpu;
        let here = self.vcpus_on(cpu);
        for &tid in &here {
            self.account(tid, ts);
            self.note_in_window(tid, e);
        }
        self.scratch = here;
        let Some(c) = self.cpu_mut(cpu) else {
            return;
        };
        if let Some(cause) = start {
            if c.overlays.len() < MAX_OVERLAYS {
                c.overlays.push(Overlay { cause, tid: e.tid });
            }
        }
        if let Some(cause) = end {
            if let Some(i) = c.overlays.iter().rposition(|o| o.cause == cause) {
                c.overlays.truncate(i);
            }
        }
        // A host interrupt in the vCPU thread itself while it was in its guest: the guest
        // has exited (its kvm_exit is yet to be traced).
        if start.is_some_and(|c| !matches!(c, Cause::Softirq { .. })) {
            if let Some(v) = self.vcpus.get_mut(&e.tid) {
                if v.ctx == Ctx::Guest && v.cpu == Some(cpu) {
                    v.ctx = Ctx::ExitPending;
                }
            }
        }
    }

    /// At a context switch on `cpu`: hard interrupt and APIC vector work open there lost its
    /// exit (none spans a switch), and a softirq of the task switched out (PREEMPT_RT runs
    /// them in task context) is suspended with it. The windows of vCPUs on that CPU that were
    /// charged with it are incomplete.
    fn clear_switched_overlays(&mut self, cpu: u32, prev: u32, ts: u64) {
        let Some(c) = self.cpu_mut(cpu) else {
            return;
        };
        // A softirq suspended with its task is no loss; a hardirq or an APIC vector handler
        // still open is one (its exit never came).
        let stale = c
            .overlays
            .iter()
            .any(|o| !matches!(o.cause, Cause::Softirq { .. }));
        c.overlays
            .retain(|o| matches!(o.cause, Cause::Softirq { .. }) && o.tid != prev);
        if stale {
            self.overlays_cleared += 1;
            self.overlay_loss_on(cpu, ts);
        }
    }

    /// At a `kvm_entry` on `cpu`: interrupts are off, no host interrupt work is running.
    fn clear_stale_overlays(&mut self, cpu: u32) {
        let Some(c) = self.cpu_mut(cpu) else {
            return;
        };
        if c.overlays.is_empty() {
            return;
        }
        c.overlays.clear();
        self.overlays_cleared += 1;
        self.overlay_loss_on(cpu, self.clock);
    }

    /// Host interrupt work on `cpu` lost its exit: the windows of the vCPUs there overlapped
    /// the loss (their time since was charged to it) and are incomplete.
    fn overlay_loss_on(&mut self, cpu: u32, ts: u64) {
        let here = self.vcpus_on(cpu);
        for &tid in &here {
            self.account(tid, ts);
            if let Some(v) = self.vcpus.get_mut(&tid) {
                for w in &mut v.windows {
                    w.incomplete = true;
                }
            }
        }
        self.scratch = here;
    }
}
