//! Who is who in the stream: which threads are vCPUs and their ids, thread and VM names,
//! and how many events of each kind the stream and each thread had. Derived once, here, for
//! the engine's attribution and for the report.

use std::collections::{BTreeMap, HashMap, HashSet};

use kvmtrace_common::{ev, Comm, Event, Kind, Payload, ThreadInfoIs, NTRACEPOINTS};

use super::fxhash::FxHashMap;
use super::Cause;
use crate::threads::vcpu_from_comm;

/// Threads whose per-kind counts are kept; events about further threads are counted in
/// [`StreamCounts::untracked_threads`] only (a host with more live threads than this is
/// unusual, and the map must not grow with the input without bound).
pub const MAX_THREADS: usize = 1 << 16;

/// Events by kind: the tracepoints in a dense array (counted on every event, so no map
/// lookup), any other kind (`kvm_other`) in a short list beside.
#[derive(Clone, Debug)]
pub struct KindCounts {
    tracepoints: [u64; NTRACEPOINTS],
    others: Vec<(Kind, u64)>,
}

impl Default for KindCounts {
    fn default() -> KindCounts {
        KindCounts {
            tracepoints: [0; NTRACEPOINTS],
            others: Vec::new(),
        }
    }
}

impl KindCounts {
    pub fn add(&mut self, kind: Kind) {
        let i = kind as usize;
        if i < NTRACEPOINTS {
            self.tracepoints[i] += 1;
        } else if let Some((_, n)) = self.others.iter_mut().find(|(k, _)| *k == kind) {
            *n += 1;
        } else {
            // Bounded: one entry per kind (`Kind` has a fixed number of values).
            self.others.push((kind, 1));
            self.others.sort_unstable();
        }
    }

    /// The kinds seen, in kind order, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        let tracepoints = self
            .tracepoints
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(i, n)| Some((Kind::try_from(i as u16).ok()?, *n)));
        tracepoints.chain(self.others.iter().copied())
    }

    pub fn get(&self, kind: Kind) -> u64 {
        let i = kind as usize;
        if i < NTRACEPOINTS {
            self.tracepoints[i]
        } else {
            self.others
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0, |(_, n)| *n)
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = Kind> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn total(&self) -> u64 {
        self.tracepoints.iter().sum::<u64>() + self.others.iter().map(|(_, n)| n).sum::<u64>()
    }
}

/// What the stream says about one thread.
#[derive(Clone, Debug, Default)]
pub struct ThreadRec {
    /// Its process (the VMM's pid for a vCPU thread), when known.
    pub tgid: u32,
    /// The vCPU id: from KVM's own events (`kvm_exit`/`kvm_entry` `vcpu_id`, the latest
    /// wins), else from the recorder's thread record (KVM's debugfs or the thread name).
    pub vcpu: Option<u32>,
    /// A vCPU thread: it emitted a vCPU-context KVM event, or the recorder said so.
    pub is_vcpu: bool,
    /// Its name: the recorder's thread record, else the first `sched_switch` to it.
    pub comm: String,
    /// Events about it (its own, and sched events naming it), by kind.
    pub by_kind: KindCounts,
    /// Its `kvm_other` events by tracepoint (`name_id`).
    pub kvm_other: BTreeMap<u64, u64>,
}

/// Counts over the whole stream.
#[derive(Clone, Debug, Default)]
pub struct StreamCounts {
    /// Tracepoint events (userspace bookkeeping records not included).
    pub total: u64,
    pub by_kind: KindCounts,
    /// The `kvm_other` events by tracepoint (`name_id`, see `kvmtrace_common::kvm_events`).
    pub kvm_other: BTreeMap<u64, u64>,
    /// Records of a kind this kvmtrace does not know (from a newer version).
    pub unknown_kinds: u64,
    /// The largest cumulative drop counters seen in checkpoints.
    pub drops_kernel: u64,
    pub drops_userspace: u64,
    /// The largest count of tracepoint hits the kernel ran no program for (`not_run`).
    pub not_run: u64,
    /// First and last tracepoint event time.
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    /// Events about threads beyond [`MAX_THREADS`].
    pub untracked_threads: u64,
}

/// The registry.
#[derive(Default)]
pub struct Threads {
    recs: FxHashMap<u32, ThreadRec>,
    /// The latest name any record or sched event gave each task (to name the tasks that
    /// delayed a vCPU).
    names: HashMap<u32, String>,
    /// VMM pid -> VM name.
    vm_names: HashMap<u32, String>,
    /// kvmtrace's own threads: a vCPU waiting behind one of them waits for the tracer.
    tracers: HashSet<u32>,
    /// VMM pid -> when the recorder saw it exit.
    vm_gone: HashMap<u32, u64>,
    counts: StreamCounts,
}

/// The threads an event is about: the switched/woken/migrated task for sched events, the
/// current task otherwise. For sched_switch both sides are.
fn subjects(e: &Event, p: &Payload) -> [Option<u32>; 2] {
    match p {
        Payload::SchedSwitch(s) => [Some(s.prev_pid as u32), Some(s.next_pid as u32)],
        Payload::SchedWakeup(w) => [Some(w.pid as u32), None],
        Payload::SchedWakeupNew(w) => [Some(w.pid as u32), None],
        Payload::SchedMigrateTask(m) => [Some(m.pid as u32), None],
        _ => [Some(e.tid), None],
    }
}

impl Threads {
    /// Counts an event as it arrives (order does not matter for counts).
    pub(super) fn count(&mut self, e: &Event) {
        let Some(p) = e.payload() else {
            self.counts.unknown_kinds += 1;
            return;
        };
        match p {
            Payload::ThreadInfo(t) => return self.thread_info(e, &t),
            Payload::DemoAck(_) => return,
            Payload::Drops(d) => {
                // Cumulative counters: keep the largest seen.
                let c = &mut self.counts;
                c.drops_kernel = c.drops_kernel.max(d.kernel);
                c.drops_userspace = c.drops_userspace.max(d.userspace);
                c.not_run = c.not_run.max(d.not_run);
                return;
            }
            _ => {}
        }
        let kind = p.kind();
        let c = &mut self.counts;
        c.total += 1;
        c.by_kind.add(kind);
        if let Payload::KvmOther(o) = p {
            *c.kvm_other.entry(o.name_id).or_default() += 1;
        }
        c.first_ns = Some(c.first_ns.map_or(e.ts_ns, |f| f.min(e.ts_ns)));
        c.last_ns = c.last_ns.max(e.ts_ns);

        if kind.is_vcpu_context() || matches!(p, Payload::KvmOther(o) if o.is_vcpu_context()) {
            if let Some(t) = self.rec(e.tid) {
                t.is_vcpu = true;
                t.tgid = e.tgid;
                let said = match p {
                    Payload::KvmExit(x) => x.vcpu_id,
                    Payload::KvmEntry(x) => x.vcpu_id,
                    _ => None,
                };
                if let Some(v) = said {
                    t.vcpu = Some(v as u32);
                }
            }
        }
        for tid in subjects(e, &p).into_iter().flatten() {
            let Some(t) = self.rec(tid) else {
                continue;
            };
            t.by_kind.add(kind);
            if let Payload::KvmOther(o) = p {
                *t.kvm_other.entry(o.name_id).or_default() += 1;
            }
            if let Payload::SchedSwitch(s) = p {
                if tid == s.next_pid as u32 && t.comm.is_empty() {
                    t.comm = s.next_comm.to_string_lossy();
                }
            }
        }
    }

    fn thread_info(&mut self, e: &Event, t: &ev::ThreadInfo) {
        let comm = t.comm.to_string_lossy();
        match t.is() {
            ThreadInfoIs::VmName => {
                self.vm_names.insert(e.tgid, comm);
            }
            ThreadInfoIs::VmGone => {
                self.vm_gone.entry(e.tgid).or_insert(e.ts_ns);
            }
            ThreadInfoIs::NameOnly | ThreadInfoIs::Tracer => {
                if t.is() == ThreadInfoIs::Tracer {
                    self.tracers.insert(e.tid);
                }
                self.names.insert(e.tid, comm.clone());
                if let Some(r) = self.rec(e.tid) {
                    r.comm = comm;
                }
            }
            // The idle task is nobody's thread (vcpu.rs `on_thread_info`).
            ThreadInfoIs::Thread { .. } if e.tid == 0 => {}
            ThreadInfoIs::Thread { vcpu } => {
                self.names.insert(e.tid, comm.clone());
                let from_name = vcpu_from_comm(&comm);
                let Some(r) = self.rec(e.tid) else {
                    return;
                };
                r.tgid = e.tgid;
                r.comm = comm;
                if let Some(v) = vcpu.or(from_name) {
                    r.vcpu = Some(v);
                    r.is_vcpu = true;
                }
            }
        }
    }

    /// The record of `tid`, created when there is room.
    fn rec(&mut self, tid: u32) -> Option<&mut ThreadRec> {
        if self.recs.len() >= MAX_THREADS && !self.recs.contains_key(&tid) {
            self.counts.untracked_threads += 1;
            return None;
        }
        Some(self.recs.entry(tid).or_default())
    }

    /// A task name a sched event gives (the switched-in task, a new task).
    pub(super) fn note_sched_name(&mut self, tid: u64, comm: &Comm) {
        self.names.insert(tid as u32, comm.to_string_lossy());
    }

    /// Is `tid` one of kvmtrace's own threads?
    pub fn is_tracer(&self, tid: u32) -> bool {
        self.tracers.contains(&tid)
    }

    /// The cause of a vCPU's wait while task `pid` had its CPU: the tracer's or another
    /// task's.
    pub(super) fn preempted_by(&self, pid: u32) -> Cause {
        if self.tracers.contains(&pid) {
            Cause::Tracer
        } else {
            Cause::Preempted { pid }
        }
    }

    /// The stream's counts.
    pub fn counts(&self) -> &StreamCounts {
        &self.counts
    }

    /// Every thread the stream said something about.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ThreadRec)> {
        self.recs.iter().map(|(t, r)| (*t, r))
    }

    pub fn get(&self, tid: u32) -> Option<&ThreadRec> {
        self.recs.get(&tid)
    }

    /// The latest name seen for a task (any record or sched event).
    pub fn name(&self, tid: u32) -> Option<&str> {
        self.names.get(&tid).map(String::as_str)
    }

    /// Every task name, by tid (for labelling causes).
    pub fn names(&self) -> &HashMap<u32, String> {
        &self.names
    }

    /// Every VM name, by VMM pid.
    pub fn vm_names(&self) -> impl Iterator<Item = (u32, &str)> {
        self.vm_names.iter().map(|(p, n)| (*p, n.as_str()))
    }

    /// VMs that exited during the stream: (VMM pid, when the recorder saw it gone).
    pub fn vms_gone(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.vm_gone.iter().map(|(p, t)| (*p, *t))
    }

    /// The VM run by process `tgid`: QEMU's `-name guest=`, or the VMM's program name.
    pub fn vm_name(&self, tgid: u32) -> Option<&str> {
        self.vm_names.get(&tgid).map(String::as_str)
    }
}
