//! A live tracing session: probes attached, the ring buffer read, the demo guest (when
//! asked for) running, and bookkeeping records (thread names, vCPU ids, demo ground truth,
//! drop counters) merged into the one event stream that `record` and `top` consume.

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use kvmtrace_common::{ev, Event, Kind, Origin};

use super::demo::{self, DemoConfig, DemoError, DemoGuest, DemoSample, DemoStats};
use super::live::LiveRing;
use crate::host;
use crate::probes::stacks::StackOptions;
use crate::probes::{ProbeError, ProbeOptions, Probes};
use kvmtrace_analysis::capture::CaptureHeader;
use kvmtrace_analysis::ksyms::Ksyms;
use kvmtrace_analysis::threads::{vcpu_from_comm, vm_name_from_cmdline};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Privileges(#[from] host::PrivilegeError),
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
    /// `--stacks`: kernel stacks and the profile (docs/stacks.md).
    pub stacks: Option<StackOptions>,
}

/// A running session.
pub struct Session {
    probes: Probes,
    ring: LiveRing,
    demo: Option<(DemoGuest, Receiver<DemoSample>)>,
    known_threads: HashSet<u32>,
    known_vms: HashSet<u32>,
    last_drops: (u64, u64),
    last_drop_warning: Option<Instant>,
    /// With `--stacks`: the stack and symbol definitions already in the stream.
    stack_defs: StackDefs,
    pub header: CaptureHeader,
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
    pub demo: Option<Result<DemoStats, DemoError>>,
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
    /// Checks privileges, attaches the probes, starts the demo guest if asked, and registers
    /// the vCPU threads already running.
    pub fn start(opts: &SessionOptions) -> Result<Session, SessionError> {
        host::check_own_privileges()?;
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
            stacks: opts.stacks,
            ..Default::default()
        };
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
        };
        let mut session = Session {
            probes,
            ring,
            demo: None,
            known_threads: HashSet::new(),
            known_vms: HashSet::new(),
            last_drops: (0, 0),
            last_drop_warning: None,
            stack_defs,
            header,
        };
        if let Some(cfg) = &opts.demo {
            let (tx, rx) = mpsc::channel();
            let guest = DemoGuest::start(cfg.clone(), tx)?;
            session
                .probes
                .add_vcpu(guest.vcpu_tid(), std::process::id())?;
            session.demo = Some((guest, rx));
        }
        Ok(session)
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
        Ok(())
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
        self.known_threads.insert(tid);
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
        let start = out.len();
        self.ring.read(out, timeout).await?;
        self.after_read(out, start);
        Ok(())
    }

    fn after_read(&mut self, out: &mut Vec<Event>, start: usize) {
        let end = out.len();
        for i in start..end {
            let e = out[i];
            if let Some(sw) = e.get::<ev::SchedSwitch>() {
                // A task a vCPU was switched in from may have delayed it: name it once
                // (the event itself carries only the next task's name).
                let prev = sw.prev_pid as u32;
                if prev != 0 && !self.known_threads.contains(&prev) {
                    self.note_other_thread(prev, out);
                }
            } else if e.kind().is_ok_and(|k| k.is_vcpu_context())
                && !self.known_threads.contains(&e.tid)
            {
                self.note_thread(e.tid, e.tgid, out);
            } else if let Some(id) = stack_id(&e) {
                self.define_stack(id, &e, out);
                // A profile tick names the task that had the CPU (the culprit, when a
                // vCPU waited for it).
                if e.kind == Kind::StackSample as u16
                    && e.tid != 0
                    && !self.known_threads.contains(&e.tid)
                {
                    self.note_other_thread(e.tid, out);
                }
            }
        }
        if let Some((guest, rx)) = &self.demo {
            let tid = guest.vcpu_tid();
            let pid = std::process::id();
            out.extend(rx.try_iter().map(|s| demo_ack(&s, tid, pid)));
        }
        // A drop-counter checkpoint after every read: the engine holds samples until the
        // next one, and drops those that a loss since the previous one may have touched.
        self.push_drops(out);
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
        };
        out.push(Event::new(self::now(0, 0), &drops));
        self.last_drops = now;
    }

    /// Stops the demo guest, drains what is left and appends the final counters.
    pub fn finish(mut self, out: &mut Vec<Event>) -> SessionEnd {
        let demo = self.demo.take().map(|(guest, rx)| {
            let tid = guest.vcpu_tid();
            (guest.stop(), rx, tid)
        });
        let start = out.len();
        self.ring.drain(out);
        self.after_read(out, start);
        let mut demo_stats = None;
        if let Some((stats, rx, tid)) = demo {
            let pid = std::process::id();
            out.extend(rx.try_iter().map(|s| demo_ack(&s, tid, pid)));
            demo_stats = Some(stats);
        }
        self.push_drops(out);
        SessionEnd {
            kernel_drops: self.last_drops.0,
            malformed: self.last_drops.1,
            demo: demo_stats,
            detach: Detach(self.probes),
        }
    }
}

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
    };
    Event::new(at, &ack)
}
