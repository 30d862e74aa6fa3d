//! A live tracing session: probes attached, the ring buffer read, the demo guest (when
//! asked for) running, and bookkeeping records (thread names, vCPU ids, kvmtrace's own
//! threads, VMs that exit, demo ground truth, drop counters) merged into the one event
//! stream that `record` and `top` consume. The session also keeps kvmtrace's own threads off
//! the traced vCPUs' CPUs (see [`crate::housekeeping`]).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use kvmtrace_common::{ev, exits, Event, ExitHist, ExitKey, Kind, Origin};

use super::demo::{self, DemoConfig, DemoError, DemoGuest, DemoSample, DemoStats};
use super::live::LiveRing;
use crate::host;
use crate::housekeeping::{self, CpuFacts, Housekeeping, Placement, PlacementError};
use crate::probes::stacks::StackOptions;
use crate::probes::{ProbeError, ProbeOptions, Probes};
use kvmtrace_analysis::capture::CaptureHeader;
use kvmtrace_analysis::ksyms::Ksyms;
use kvmtrace_analysis::threads::{vcpu_from_comm, vm_name_from_cmdline};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Target(#[from] host::TargetError),
    #[error(transparent)]
    Privileges(#[from] host::PrivilegeError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("the demo guest: {0}")]
    Demo(#[from] DemoError),
    #[error("--demo needs KVM: {0}")]
    DemoNeedsKvm(String),
    #[error("reading the ring buffer: {0}")]
    Ring(#[from] std::io::Error),
}

#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// VMM pids to trace; empty (and no demo) = every VM.
    pub pids: Vec<u32>,
    /// Run the embedded demo guest and trace it.
    pub demo: Option<DemoConfig>,
    pub ring_bytes: Option<u32>,
    /// Stream every exit (`--all-exits`); by default exits are counted in the kernel and
    /// streamed only near interrupt windows or when long.
    pub all_exits: bool,
    /// Stream an exit that took at least this long (default: the probes' 1 ms).
    pub exit_threshold_ns: Option<u64>,
    /// How long an interrupt for a vCPU (its acceptance, wake-up, switch-in, injection)
    /// streams its exits (default: the probes' 50 us).
    pub stream_hold_ns: Option<u64>,
    /// Classic tracepoint programs only (no BTF tracepoints).
    pub no_btf: bool,
    /// `--stacks`: kernel stacks and the profile (docs/stacks.md).
    pub stacks: Option<StackOptions>,
    /// Where kvmtrace's own threads run (`Off` by default here; the command line's default
    /// is `Auto`).
    pub housekeeping: Housekeeping,
}

/// How often the session looks for new threads of its own and for VMs that exited.
const POLL: Duration = Duration::from_millis(500);

/// A VM whose exit the session watches for.
struct Watched {
    pid: u32,
    start_ticks: u64,
    name: String,
}

/// A running session.
pub struct Session {
    probes: Probes,
    ring: LiveRing,
    demo: Option<(DemoGuest, Receiver<DemoSample>)>,
    /// Threads announced with a full record (a VMM's thread, or one of kvmtrace's own).
    known_threads: HashSet<u32>,
    /// Other tasks named by a name-only record: a thread here may still become a vCPU
    /// (QEMU's AP thread runs before its first KVM_RUN) and get its full record.
    named_tasks: HashSet<u32>,
    known_vms: HashSet<u32>,
    /// The demo guest's threads: the traced workload, never the tracer.
    workload: Vec<u32>,
    /// kvmtrace's own threads already announced (and placed).
    own: HashSet<u32>,
    /// Tasks named by a sched_switch already checked for being one of kvmtrace's threads.
    looked_up: HashSet<u32>,
    /// VMs not yet seen to exit.
    watched: Vec<Watched>,
    last_poll: Option<Instant>,
    /// kvmtrace's CPU time when tracing started.
    cpu_start: u64,
    last_drops: (u64, u64),
    /// The programs' `recursion_misses` at the last look, and when that was (one syscall
    /// per program: looked at every [`POLL`] and at the end, not at every read).
    not_run: u64,
    not_run_read: Option<Instant>,
    last_drop_warning: Option<Instant>,
    exits: ExitSnapshots,
    /// With `--stacks`: the stack and symbol definitions already in the stream.
    stack_defs: StackDefs,
    pub header: CaptureHeader,
}

/// How often the kernel's exit histograms are read into `exit_buckets` records.
const EXIT_SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// The kernel's exit histograms as last read, to turn their growth into records.
#[derive(Default)]
struct ExitSnapshots {
    prev: HashMap<ExitKey, ExitHist>,
    last: Option<Instant>,
    warned_misses: bool,
    /// The latest event read so far: the records' time. ("Now" would run ahead of events
    /// still in the ring when the reader lags, and make them late in the engine's reorder
    /// buffer.)
    latest_ns: u64,
}

/// What the stream has been told about kernel stacks (docs/stacks.md): each stack id's
/// frames and each function's name, written once, the first time they are used.
#[derive(Default)]
struct StackDefs {
    ksyms: Option<Ksyms>,
    /// Kernel stack ids defined (at most the stack map's size).
    stacks: HashSet<u32>,
    /// Function start addresses named (at most the kernel's text symbols).
    symbols: HashSet<u64>,
}

/// How a session ended.
#[derive(Debug)]
pub struct SessionEnd {
    pub kernel_drops: u64,
    pub malformed: u64,
    /// Tracepoint hits the kernel ran no program for ([`Probes::recursion_misses`]).
    pub not_run: u64,
    pub demo: Option<Result<DemoStats, DemoError>>,
    /// CPU time kvmtrace's own threads used from the start of tracing (the demo guest's
    /// threads not included).
    pub tracer_cpu_ns: u64,
    /// The probes, still attached; dropping this detaches them, which takes about a second
    /// (the kernel waits for an RCU grace period per tracepoint): drop it after the results
    /// are safe.
    pub detach: Detach,
}

/// Attached probes waiting to be detached (see [`SessionEnd::detach`]).
pub struct Detach(#[allow(dead_code)] Probes);

impl std::fmt::Debug for Detach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Detach(..)")
    }
}

impl Session {
    /// Checks the targets and privileges, attaches the probes, starts the demo guest if
    /// asked, and places kvmtrace's own threads.
    pub fn start(opts: &SessionOptions) -> Result<Session, SessionError> {
        // A pid that does not exist is refused before anything else (it needs no privilege).
        let targets = opts
            .pids
            .iter()
            .map(|&p| host::check_target(p))
            .collect::<Result<Vec<_>, _>>()?;
        host::check_own_privileges()?;
        for t in &targets {
            if !host::runs_vcpus(t.pid) {
                log::warn!(
                    "pid {} ({}) runs no vCPU now (it holds no KVM vCPU): it is traced in case it starts one",
                    t.pid,
                    t.comm
                );
            }
        }
        let facts = host::read_facts();
        if let Some(problem) = facts.kvm_problem() {
            if opts.demo.is_some() {
                return Err(SessionError::DemoNeedsKvm(problem));
            }
            log::warn!("{problem}");
        }
        let mut pids = opts.pids.clone();
        if opts.demo.is_some() {
            pids.push(std::process::id());
        }
        let mut probe_opts = ProbeOptions {
            pids: pids.clone(),
            all_exits: opts.all_exits,
            btf: !opts.no_btf,
            stacks: opts.stacks,
            ..Default::default()
        };
        if let Some(ns) = opts.exit_threshold_ns {
            probe_opts.exit_threshold_ns = ns;
        }
        if let Some(ns) = opts.stream_hold_ns {
            probe_opts.stream_hold_ns = ns;
        }
        if let Some(b) = opts.ring_bytes {
            probe_opts.ring_bytes = b;
        }
        let mut probes = Probes::load(&probe_opts)?;
        let ring = LiveRing::new(probes.take_ring()?)?;
        let mut stack_defs = StackDefs::default();
        let mut stacks_header = probes.stacks.as_ref().map(|s| s.capture.clone());
        if let Some(h) = &mut stacks_header {
            match host::kernel_symbols() {
                Ok(k) => stack_defs.ksyms = Some(k),
                Err(e) => {
                    log::warn!("--stacks: {e}; stack frames will show as addresses");
                    h.symbols_problem = Some(e);
                }
            }
        }
        let header = CaptureHeader {
            tool: "kvmtrace".to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            start_ns: demo::monotonic_ns(),
            host: facts,
            pids: opts.pids.clone(),
            demo: opts.demo.is_some(),
            probes: probes.status.clone(),
            formats: probes.formats.clone(),
            apic_timer_fn: host::apic_timer_fn_address(),
            stacks: stacks_header,
            placement: None,
        };
        let watched = targets
            .iter()
            .map(|t| Watched {
                pid: t.pid,
                start_ticks: t.start_ticks,
                name: vm_name(t.pid),
            })
            .collect();
        let mut session = Session {
            probes,
            ring,
            demo: None,
            known_threads: HashSet::new(),
            named_tasks: HashSet::new(),
            known_vms: HashSet::new(),
            workload: Vec::new(),
            own: HashSet::new(),
            looked_up: HashSet::new(),
            watched,
            last_poll: None,
            cpu_start: 0,
            last_drops: (0, 0),
            not_run: 0,
            not_run_read: None,
            last_drop_warning: None,
            exits: ExitSnapshots::default(),
            stack_defs,
            header,
        };
        if let Some(cfg) = &opts.demo {
            let (tx, rx) = mpsc::channel();
            let guest = DemoGuest::start(cfg.clone(), tx)?;
            session
                .probes
                .add_vcpu(guest.vcpu_tid(), std::process::id())?;
            session.workload = vec![guest.vcpu_tid(), guest.irq_tid()];
            session.demo = Some((guest, rx));
        }
        session.place(&opts.housekeeping, &pids)?;
        session.cpu_start = housekeeping::tracer_cpu_ns(&session.workload);
        Ok(session)
    }

    /// Chooses the housekeeping CPUs (off the CPUs the traced vCPUs occupy now) and
    /// confines kvmtrace's threads to them; threads started later inherit the placement
    /// from the thread that starts them, and [`Session::read`] places any other.
    fn place(&mut self, wanted: &Housekeeping, pids: &[u32]) -> Result<(), SessionError> {
        let facts = CpuFacts::read();
        let mut vcpus: Vec<(u32, u32)> = host::discover_vcpu_threads(pids)
            .into_values()
            .map(|t| (t.tgid, t.tid))
            .collect();
        if let Some(tid) = self.demo_vcpu_tid() {
            vcpus.push((std::process::id(), tid));
        }
        let mut vcpu_cpus: Vec<u32> = vcpus
            .iter()
            .filter_map(|&(tgid, tid)| housekeeping::vcpu_cpus_of(tgid, tid, &facts.online))
            .flatten()
            .collect();
        vcpu_cpus.sort_unstable();
        vcpu_cpus.dedup();
        let placement = housekeeping::choose(&facts, &vcpu_cpus, wanted, housekeeping::least_busy)?;
        if let Some(note) = &placement.note {
            log::warn!("{note}");
        }
        if !placement.cpus.is_empty() {
            let list = |c: &[u32]| match housekeeping::cpu_list(c) {
                l if l.is_empty() => "none".to_string(),
                l => l,
            };
            log::info!(
                "kvmtrace's threads run on CPU {} ({}; traced vCPUs on {}, isolated CPUs {})",
                list(&placement.cpus),
                placement.how,
                list(&placement.vcpu_cpus),
                list(&placement.isolated)
            );
        }
        let explicit = matches!(wanted, Housekeeping::Cpus(_));
        self.header.placement = Some(Placement {
            since_ns: demo::monotonic_ns(),
            ..placement
        });
        for tid in housekeeping::own_threads() {
            if let Err(e) = self.place_thread(tid) {
                if explicit {
                    return Err(e.into());
                }
                log::warn!("{e}; kvmtrace's threads stay where the scheduler puts them");
                if let Some(p) = &mut self.header.placement {
                    p.cpus.clear();
                    p.note = Some(format!("placement failed: {e}"));
                }
                break;
            }
        }
        Ok(())
    }

    /// Confines one of kvmtrace's threads to the housekeeping CPUs (the workload's are
    /// left alone).
    fn place_thread(&self, tid: u32) -> Result<(), PlacementError> {
        match &self.header.placement {
            Some(p) if !p.cpus.is_empty() && !self.workload.contains(&tid) => {
                housekeeping::pin(tid, &p.cpus)
            }
            _ => Ok(()),
        }
    }

    /// CPU time kvmtrace's own threads used since tracing started.
    pub fn tracer_cpu_ns(&self) -> u64 {
        housekeeping::tracer_cpu_ns(&self.workload).saturating_sub(self.cpu_start)
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// The demo guest's vCPU thread id, when the demo runs.
    pub fn demo_vcpu_tid(&self) -> Option<u32> {
        self.demo.as_ref().map(|(g, _)| g.vcpu_tid())
    }

    /// The demo's interrupt-raising thread id, when the demo runs.
    pub fn demo_irq_tid(&self) -> Option<u32> {
        self.demo.as_ref().map(|(g, _)| g.irq_tid())
    }

    /// Records describing the vCPU threads already running; call once before reading.
    pub fn initial_records(&mut self, out: &mut Vec<Event>) -> Result<(), SessionError> {
        let mut pids = self.header.pids.clone();
        if self.demo.is_some() {
            pids.push(std::process::id());
        }
        // The traced VMs' vCPU threads (every VM's when `pids` is empty), so their
        // scheduling is followed before their first KVM event.
        for (tid, t) in host::discover_vcpu_threads(&pids) {
            self.probes.add_vcpu(tid, t.tgid)?;
            self.note_thread(tid, t.tgid, out);
        }
        if let Some(tid) = self.demo_vcpu_tid() {
            self.note_thread(tid, std::process::id(), out);
        }
        self.scan_own_threads(out);
        Ok(())
    }

    /// Announces (and places) kvmtrace's threads not announced yet.
    fn scan_own_threads(&mut self, out: &mut Vec<Event>) {
        for tid in housekeeping::own_threads() {
            self.note_own_thread(tid, out);
        }
    }

    /// A thread of this process: the tracer's unless it is the demo's workload.
    fn note_own_thread(&mut self, tid: u32, out: &mut Vec<Event>) {
        if self.workload.contains(&tid) || !self.own.insert(tid) {
            return;
        }
        self.known_threads.insert(tid);
        if let Err(e) = self.place_thread(tid) {
            log::warn!("{e}");
        }
        let comm = host::thread_comm(std::process::id(), tid).unwrap_or_default();
        out.push(Event::new(
            now(tid, std::process::id()),
            &ev::ThreadInfo::tracer(&comm),
        ));
    }

    /// Notes VMs that exited since the last look (a pid that is gone, a zombie, or reused
    /// by another process).
    fn poll_vms(&mut self, out: &mut Vec<Event>) {
        let mut i = 0;
        while i < self.watched.len() {
            let w = &self.watched[i];
            let alive =
                host::proc_info(w.pid).is_some_and(|p| !p.exited && p.start_ticks == w.start_ticks);
            if alive {
                i += 1;
                continue;
            }
            let w = self.watched.swap_remove(i);
            log::warn!(
                "VM pid {} ({}) exited; its samples so far are kept",
                w.pid,
                w.name
            );
            out.push(Event::new(
                now(w.pid, w.pid),
                &ev::ThreadInfo::vm_gone(&w.name),
            ));
        }
    }

    fn note_thread(&mut self, tid: u32, tgid: u32, out: &mut Vec<Event>) {
        if !self.known_threads.insert(tid) {
            return;
        }
        if self.known_vms.insert(tgid) {
            // The VM's name, so that captures show it too.
            if let Ok(cmdline) = std::fs::read(format!("/proc/{tgid}/cmdline")) {
                let name = vm_name_from_cmdline(&cmdline);
                out.push(Event::new(now(tgid, tgid), &ev::ThreadInfo::vm_name(&name)));
            }
            // Watch for its exit (the demo's VM ends with kvmtrace).
            let watched = self.watched.iter().any(|w| w.pid == tgid);
            if tgid != std::process::id() && !watched {
                if let Some(p) = host::proc_info(tgid).filter(|p| !p.exited) {
                    self.watched.push(Watched {
                        pid: tgid,
                        start_ticks: p.start_ticks,
                        name: vm_name(tgid),
                    });
                }
            }
        }
        let comm = host::thread_comm(tgid, tid).unwrap_or_default();
        // KVM's debugfs (when mounted) says which vcpu_id the thread runs; the thread's name
        // is QEMU's cpu_index, which differs when the topology leaves APIC-id gaps.
        let kvm_id = host::debugfs_vcpu_threads(std::path::Path::new("/sys/kernel/debug/kvm"))
            .get(&tid)
            .map(|&(_, id)| id);
        let info = match kvm_id {
            Some(id) => ev::ThreadInfo::vcpu_thread(id, &comm),
            None => ev::ThreadInfo::thread(vcpu_from_comm(&comm), &comm),
        };
        out.push(Event::new(now(tid, tgid), &info));
    }

    /// A thread that is not a vCPU: its name only, from /proc (gone if it already exited).
    fn note_other_thread(&mut self, tid: u32, out: &mut Vec<Event>) {
        if self.known_threads.contains(&tid) || self.named_tasks.contains(&tid) {
            return;
        }
        // Bounded: past this many, start again (a task is then named once more).
        if self.named_tasks.len() >= MAX_NAMED_TASKS {
            self.named_tasks.clear();
        }
        self.named_tasks.insert(tid);
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{tid}/comm")) else {
            return;
        };
        out.push(Event::new(
            now(tid, 0),
            &ev::ThreadInfo::name_only(comm.trim_end()),
        ));
    }

    /// Waits up to `timeout` for events and appends them, with any bookkeeping records, to
    /// `out`.
    pub async fn read(
        &mut self,
        out: &mut Vec<Event>,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        // Before the events: the engine must know a tracer thread before the events that
        // name it (bookkeeping records are not reordered).
        if self.last_poll.is_none_or(|t| t.elapsed() >= POLL) {
            self.last_poll = Some(Instant::now());
            self.scan_own_threads(out);
            self.poll_vms(out);
        }
        let start = out.len();
        self.ring.read(out, timeout).await?;
        self.after_read(out, start);
        Ok(())
    }

    fn after_read(&mut self, out: &mut Vec<Event>, start: usize) {
        let end = out.len();
        if let Some(ts) = out[start..end]
            .iter()
            .filter(|e| e.kind().is_ok_and(|k| k.is_tracepoint()))
            .map(|e| e.ts_ns)
            .max()
        {
            self.exits.latest_ns = self.exits.latest_ns.max(ts);
        }
        let mut own = Vec::new();
        for i in start..end {
            let e = out[i];
            if let Some(sw) = e.get::<ev::SchedSwitch>() {
                // One of kvmtrace's threads started since the last look: announced before
                // this batch's events, so the engine counts it as the tracer.
                // Each task is looked up once.
                for tid in [sw.prev_pid as u32, sw.next_pid as u32] {
                    if tid != 0
                        && !self.known_threads.contains(&tid)
                        && self.looked_up.insert(tid)
                        && housekeeping::is_own_thread(tid)
                    {
                        self.note_own_thread(tid, &mut own);
                    }
                }
                // A task that held a CPU a vCPU waited for may have delayed it: name it
                // once (the event itself carries only the next task's name).
                let prev = sw.prev_pid as u32;
                if prev != 0 {
                    self.note_other_thread(prev, out);
                }
            } else if e.kind().is_ok_and(|k| k.is_vcpu_context())
                && !self.known_threads.contains(&e.tid)
            {
                self.note_thread(e.tid, e.tgid, out);
            } else if e.kind().is_ok_and(|k| k.is_raise())
                && e.tid != 0
                && !self.known_vms.contains(&e.tgid)
            {
                // A raise from outside a VMM: its task's name may say whose it is
                // (`kvm-pit/PID`, `vhost-PID`); the engine routes by it.
                self.note_other_thread(e.tid, out);
            } else if let Some(id) = stack_id(&e) {
                self.define_stack(id, &e, out);
                // A profile tick names the task that had the CPU (the culprit, when a
                // vCPU waited for it), unless it is one of kvmtrace's own.
                if e.kind == Kind::StackSample as u16
                    && e.tid != 0
                    && !self.known_threads.contains(&e.tid)
                {
                    if self.looked_up.insert(e.tid) && housekeeping::is_own_thread(e.tid) {
                        self.note_own_thread(e.tid, &mut own);
                    } else {
                        self.note_other_thread(e.tid, out);
                    }
                }
            }
        }
        if let Some((guest, rx)) = &self.demo {
            let tid = guest.vcpu_tid();
            let pid = std::process::id();
            out.extend(rx.try_iter().map(|s| demo_ack(&s, tid, pid)));
        }
        if self
            .exits
            .last
            .is_none_or(|t| t.elapsed() >= EXIT_SNAPSHOT_EVERY)
        {
            self.push_exit_buckets(out);
        }
        // A drop-counter checkpoint after every read: the engine holds samples until the
        // next one, and drops those that a loss since the previous one may have touched.
        self.push_drops(out);
        if !own.is_empty() {
            out.splice(start..start, own);
        }
    }

    /// Reads the kernel's exit histograms and appends what each gained since the previous
    /// read as `exit_buckets` records; forgets the histograms of threads that are gone.
    fn push_exit_buckets(&mut self, out: &mut Vec<Event>) {
        self.exits.last = Some(Instant::now());
        let current = self.probes.exit_hists();
        for (key, hist) in &current {
            let old = self.exits.prev.get(key);
            let values = exit_deltas(old, hist);
            if !values.is_empty() {
                let tgid = self.probes.vcpu_tgid(key.tid).unwrap_or(0);
                if tgid != 0 && !self.known_threads.contains(&key.tid) {
                    self.note_thread(key.tid, tgid, out);
                }
                for rec in kvmtrace_common::exits::bucket_records(key, &values) {
                    let mut at = now(key.tid, tgid);
                    if self.exits.latest_ns != 0 {
                        at.ts_ns = self.exits.latest_ns;
                    }
                    out.push(Event::new(at, &rec));
                }
            }
            self.exits.prev.insert(*key, *hist);
            if !std::path::Path::new(&format!("/proc/{}", key.tid)).exists() {
                self.probes.remove_exit_hist(key);
                self.exits.prev.remove(key);
            }
        }
        if !self.exits.warned_misses && self.probes.exit_agg_misses() > 0 {
            self.exits.warned_misses = true;
            log::warn!(
                "the kernel's exit histograms are full ({} keys): further exits are streamed, \
                 not counted there",
                kvmtrace_common::limits::MAX_EXIT_KEYS
            );
        }
    }

    /// The first time kernel stack `id` is used: its frames from the stack map, and the
    /// name of each function they fall in that the stream has not named yet (docs/stacks.md).
    fn define_stack(&mut self, id: u32, at: &Event, out: &mut Vec<Event>) {
        let Some(stacks) = &self.probes.stacks else {
            return;
        };
        if !self.stack_defs.stacks.insert(id) {
            return;
        }
        let frames = match stacks.frames(id) {
            Ok(f) => f,
            Err(e) => {
                // Shown as a stack not in the capture.
                log::debug!("reading kernel stack {id}: {e}");
                return;
            }
        };
        let origin = Origin {
            ts_ns: at.ts_ns,
            tid: 0,
            tgid: 0,
            cpu: at.cpu,
        };
        out.extend(ev::StackFrames::chunks(id, &frames).map(|r| Event::new(origin, &r)));
        let Some(ksyms) = &self.stack_defs.ksyms else {
            return;
        };
        for &ip in &frames {
            let Some(sym) = ksyms.lookup(ip) else {
                continue;
            };
            if self.stack_defs.symbols.insert(sym.start) {
                out.extend(
                    ev::Symbol::chunks(sym.start, sym.end, sym.text)
                        .map(|r| Event::new(origin, &r)),
                );
            }
        }
    }

    fn push_drops(&mut self, out: &mut Vec<Event>) {
        let now = (self.probes.drops(), self.ring.malformed);
        if self.not_run_read.is_none_or(|t| t.elapsed() >= POLL) {
            self.not_run_read = Some(Instant::now());
            self.not_run = self.probes.recursion_misses();
        }
        let not_run = self.not_run;
        let quiet = self
            .last_drop_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if now != self.last_drops && quiet {
            self.last_drop_warning = Some(Instant::now());
            log::warn!(
                "{} events lost so far (ring buffer full: {}, undecodable: {})",
                now.0 + now.1,
                now.0,
                now.1
            );
        }
        let drops = ev::Drops {
            kernel: now.0,
            userspace: now.1,
            not_run,
        };
        out.push(Event::new(self::now(0, 0), &drops));
        self.last_drops = now;
    }

    /// Stops the demo guest, drains what is left and appends the final counters.
    pub fn finish(mut self, out: &mut Vec<Event>) -> SessionEnd {
        // Before the demo's threads end: their time is told apart by their ids.
        let tracer_cpu_ns = self.tracer_cpu_ns();
        self.poll_vms(out);
        let demo = self.demo.take().map(|(guest, rx)| {
            let tid = guest.vcpu_tid();
            (guest.stop(), rx, tid)
        });
        let start = out.len();
        self.ring.drain(out);
        // The last exits of the run: read the histograms whatever the time since the last.
        self.exits.last = None;
        self.after_read(out, start);
        let mut demo_stats = None;
        if let Some((stats, rx, tid)) = demo {
            let pid = std::process::id();
            out.extend(rx.try_iter().map(|s| demo_ack(&s, tid, pid)));
            demo_stats = Some(stats);
        }
        // The final count, however recent the last look.
        self.not_run_read = None;
        self.push_drops(out);
        SessionEnd {
            kernel_drops: self.last_drops.0,
            malformed: self.last_drops.1,
            not_run: self.not_run,
            demo: demo_stats,
            tracer_cpu_ns,
            detach: Detach(self.probes),
        }
    }
}

/// What a histogram gained since `old` (none: since zero), as packed record values.
fn exit_deltas(old: Option<&ExitHist>, new: &ExitHist) -> Vec<u64> {
    let mut values = Vec::new();
    exits::deltas(old.unwrap_or(&ExitHist::zeroed()), new, |v| values.push(v));
    values
}

/// Tasks named by name-only records before the set starts again.
const MAX_NAMED_TASKS: usize = 65_536;

/// The kernel stack id a stack program's record carries, if it has one.
fn stack_id(e: &Event) -> Option<u32> {
    let (stack, error) = if let Some(s) = e.get::<ev::StackAt>() {
        (s.stack, s.error)
    } else {
        let s = e.get::<ev::StackSample>()?;
        (s.stack, s.error)
    };
    (error == 0).then_some(stack as u32)
}

/// The name of the VM run by process `pid`, from its command line.
fn vm_name(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| vm_name_from_cmdline(&c))
        .unwrap_or_default()
}

/// A bookkeeping record's origin: now, about `tid` of process `tgid`.
fn now(tid: u32, tgid: u32) -> Origin {
    Origin {
        ts_ns: demo::monotonic_ns(),
        tid,
        tgid,
        cpu: 0,
    }
}

/// The demo VMM's ground truth for one interrupt, as a record at its acknowledgement.
fn demo_ack(s: &DemoSample, vcpu_tid: u32, pid: u32) -> Event {
    let at = Origin {
        ts_ns: s.acked_ns,
        tid: vcpu_tid,
        tgid: pid,
        cpu: 0,
    };
    let ack = ev::DemoAck {
        seq: s.seq,
        raised_ns: s.raised_ns,
        acked_ns: s.acked_ns,
        path: s.path.code(),
        irqoff_ns: s.irqoff_ns,
    };
    Event::new(at, &ack)
}
