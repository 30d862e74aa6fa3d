//! Loading and attaching the eBPF programs: the only module that talks to aya.
//!
//! Field offsets come from tracefs format files at start-up and are handed to the programs
//! as a read-only global; a tracepoint or field the kernel lacks disables only what depends
//! on it, and [`Probes::status`] says which.
//!
//! Each tracepoint whose arguments carry its fields also has a BTF program (`<name>_btf`):
//! it is attached instead of the classic one when the kernel's BTF describes the tracepoint
//! and the struct fields it reads, and the classic program is the fallback (older kernels,
//! no BTF, KVM built as a module, or a BTF program the verifier refuses).
//! [`ProbeStatus::mode`] says which runs.

pub mod btf;
pub use kvmtrace_analysis::format;
pub mod features;
pub mod stacks;
pub mod tracefs;

use std::collections::BTreeMap;

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        tp_btf::BtfTracePointLink, trace_point::TracePointLink, BtfTracePoint, ProgramError,
        TracePoint,
    },
    Btf, Ebpf, EbpfError, EbpfLoader,
};
use kvmtrace_common::{
    filter, limits, names, BtfOffsets, Config, ExitHist, ExitKey, Kind, VcpuThread, NTRACEPOINTS,
};

use self::btf::KernelBtf;
use self::tracefs::{Tracefs, TracefsError};
use kvmtrace_analysis::capture::{ProbeMode, ProbeStatus};
use kvmtrace_analysis::format::Format;

/// The eBPF object, built by build.rs from kvmtrace-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kvmtrace"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    NoMap(&'static str),
    #[error("no probe could be attached: {0}")]
    NothingAttached(String),
}

/// Why one tracepoint's program is not attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {0} is missing from the eBPF object")]
    NoProgram(&'static str),
    #[error("program {program} is not a tracepoint program: {source}")]
    NotATracepoint {
        program: &'static str,
        source: ProgramError,
    },
    #[error("program {program} is not a BTF tracepoint program: {source}")]
    NotABtfTracepoint {
        program: String,
        source: ProgramError,
    },
    /// The kernel refused to load it; `summary` is the verifier's last words.
    #[error("loading {program}: {summary}")]
    Load { program: String, summary: String },
    #[error("attaching {tracepoint}: {source}")]
    Attach {
        tracepoint: String,
        source: ProgramError,
    },
}

/// Options for [`Probes::load`].
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Trace only these VMM processes; empty = every VM.
    pub pids: Vec<u32>,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Attach the BTF programs where the kernel allows (else classic tracepoints only).
    pub btf: bool,
    /// Stream every exit (the in-kernel histograms count them all either way).
    pub all_exits: bool,
    /// Stream an exit that took at least this long.
    pub exit_threshold_ns: u64,
    /// How long an interrupt raise, a wake-up or a switch-in streams a vCPU's exits.
    pub stream_hold_ns: u64,
    /// `--stacks`: also attach the stack programs (docs/stacks.md).
    pub stacks: Option<stacks::StackOptions>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            pids: Vec::new(),
            ring_bytes: kvmtrace_common::limits::DEFAULT_RING_BYTES,
            btf: true,
            all_exits: false,
            exit_threshold_ns: Config::zeroed().exit_threshold_ns,
            stream_hold_ns: Config::zeroed().stream_hold_ns,
            stacks: None,
        }
    }
}

/// An attached program's link; dropping it detaches the program (the links are only ever
/// dropped).
#[allow(dead_code)]
enum Link {
    Tracepoint(TracePointLink),
    Btf(BtfTracePointLink),
}

/// The loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    pub tracefs: Tracefs,
    /// One entry per tracepoint, in [`Kind`] order.
    pub status: Vec<ProbeStatus>,
    /// The format files used, by tracepoint name.
    pub formats: BTreeMap<String, Format>,
    vcpu_tids: HashMap<MapData, u32, VcpuThread>,
    vm_tgids: HashMap<MapData, u32, u32>,
    drops: PerCpuArray<MapData, u64>,
    emitted: PerCpuArray<MapData, u64>,
    agg_misses: PerCpuArray<MapData, u64>,
    exit_hist: HashMap<MapData, ExitKey, ExitHist>,
    /// Owned here so that [`Drop`] can detach them in parallel.
    links: Vec<Link>,
    /// The stack programs and their map, with `--stacks`.
    pub stacks: Option<stacks::StackProbes>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The programs' configuration, and what the format files said.
pub struct ConfigPlan {
    pub config: Config,
    /// The format files found, by tracepoint name.
    pub formats: BTreeMap<String, Format>,
    /// Per tracepoint: Ok(fields it lacks) or Err(why it cannot be traced).
    pub found: Vec<(Kind, Result<Vec<String>, String>)>,
}

/// Builds the programs' configuration from the format files found in `tracefs`.
pub fn build_config(tracefs: &Tracefs, opts: &ProbeOptions) -> ConfigPlan {
    let mut config = Config::zeroed();
    config.all_exits = u32::from(opts.all_exits);
    config.exit_threshold_ns = opts.exit_threshold_ns;
    config.stream_hold_ns = opts.stream_hold_ns;
    config.filter_mode = if opts.pids.is_empty() {
        filter::ALL_VMS
    } else {
        filter::PIDS
    };
    let mut formats = BTreeMap::new();
    let mut found = Vec::new();
    for &kind in Kind::ALL.iter().filter(|k| k.is_tracepoint()) {
        match tracefs.format(kind.category(), kind.name()) {
            Ok(fmt) => {
                let (specs, missing) = fmt.specs_for(kind);
                config.fields[kind as usize] = specs;
                formats.insert(kind.name().to_string(), fmt);
                found.push((kind, Ok(missing.iter().map(|e| e.to_string()).collect())));
            }
            Err(e) => found.push((kind, Err(e.to_string()))),
        }
    }
    ConfigPlan {
        config,
        formats,
        found,
    }
}

impl Probes {
    /// Loads the object, attaches one program per available tracepoint.
    pub fn load(opts: &ProbeOptions) -> Result<Probes, ProbeError> {
        raise_memlock_rlimit();
        let tracefs = Tracefs::find_or_mount()?;
        tracefs::ensure_debugfs();
        let ConfigPlan {
            mut config,
            formats,
            found,
        } = build_config(&tracefs, opts);
        config.apic_timer_fn = crate::host::apic_timer_fn_address();
        config.wakeup_every = wakeup_every(opts.ring_bytes, possible_cpus());
        let kernel_btf = if opts.btf { load_btf() } else { None };
        if let Some((kbtf, _)) = &kernel_btf {
            config.btf = kbtf.offsets();
        }

        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .map_max_entries(
                names::KSTACKS,
                opts.stacks.map_or(1, |_| limits::MAX_STACKS),
            )
            .load(OBJECT)?;

        let mut status = Vec::with_capacity(NTRACEPOINTS);
        let mut links = Vec::with_capacity(NTRACEPOINTS);
        for (kind, fields) in found {
            let tracepoint = format!("{}:{}", kind.category(), kind.name());
            let st = match fields {
                Err(reason) => ProbeStatus {
                    tracepoint,
                    attached: false,
                    reason: Some(reason),
                    missing_fields: Vec::new(),
                    mode: None,
                },
                Ok(missing_fields) => {
                    let btf = kernel_btf
                        .as_ref()
                        .filter(|(kbtf, _)| btf_wanted(kind, kbtf, &config.btf));
                    match attach_either(&mut ebpf, kind, btf.map(|(_, b)| b)) {
                        Ok((link, mode)) => {
                            links.push(link);
                            ProbeStatus {
                                tracepoint,
                                attached: true,
                                reason: None,
                                // A BTF program takes every field from the arguments.
                                missing_fields: match mode {
                                    ProbeMode::TpBtf => Vec::new(),
                                    ProbeMode::Tracepoint => missing_fields,
                                },
                                mode: Some(mode),
                            }
                        }
                        Err(e) => ProbeStatus {
                            tracepoint,
                            attached: false,
                            reason: Some(e.to_string()),
                            missing_fields,
                            mode: None,
                        },
                    }
                }
            };
            if let Some(reason) = &st.reason {
                log::warn!("{}: not traced: {reason}", st.tracepoint);
            }
            for f in &st.missing_fields {
                log::warn!("{}: {f}; what depends on it is disabled", st.tracepoint);
            }
            status.push(st);
        }
        let stacks = match &opts.stacks {
            Some(o) => {
                let mut stack_links = Vec::new();
                let s = stacks::StackProbes::attach(&mut ebpf, o, &mut stack_links)?;
                links.extend(stack_links.into_iter().map(Link::Tracepoint));
                Some(s)
            }
            None => None,
        };
        if !status.iter().any(|s| s.attached) {
            let reasons: Vec<String> = status
                .iter()
                .filter_map(|s| Some(format!("{}: {}", s.tracepoint, s.reason.as_ref()?)))
                .take(3)
                .collect();
            return Err(ProbeError::NothingAttached(reasons.join("; ")));
        }

        let vcpu_tids = take_hash(&mut ebpf, names::VCPU_TIDS)?;
        let vm_tgids = take_hash(&mut ebpf, names::VM_TGIDS)?;
        let mut traced: HashMap<MapData, u32, u32> = take_hash(&mut ebpf, names::TRACED_TGIDS)?;
        for &pid in &opts.pids {
            traced.insert(pid, 1, 0).map_err(|source| ProbeError::Map {
                name: names::TRACED_TGIDS,
                source,
            })?;
        }
        Ok(Probes {
            drops: take_per_cpu(&mut ebpf, names::DROPS)?,
            emitted: take_per_cpu(&mut ebpf, names::EMITTED)?,
            agg_misses: take_per_cpu(&mut ebpf, names::AGG_MISSES)?,
            exit_hist: take_hash(&mut ebpf, names::EXIT_HIST)?,
            ebpf,
            tracefs,
            status,
            formats,
            vcpu_tids,
            vm_tgids,
            links,
            stacks,
        })
    }

    /// Detaches every program (the maps stay readable: the counters are final once this
    /// returns). Detaching a tracepoint waits for an RCU grace period (tens of ms in a VM);
    /// one at a time, 33 of them held `record` up for seconds after Ctrl-C, so they go in
    /// parallel.
    pub fn detach(&mut self) {
        std::thread::scope(|s| {
            for link in self.links.drain(..) {
                s.spawn(move || drop(link));
            }
        });
    }

    /// The ring buffer the programs write to (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(ProbeError::NoMap(names::EVENTS))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: names::EVENTS,
            source,
        })
    }

    /// Tells the programs that `tid` of process `tgid` is a vCPU thread.
    ///
    /// A thread the programs already registered (at its first KVM event) is left as it is:
    /// overwriting it would drop its pending exit, and that exit would then be missing from
    /// the kernel's histograms while its entry reaches the stream.
    pub fn add_vcpu(&mut self, tid: u32, tgid: u32) -> Result<(), ProbeError> {
        /// `bpf_map_update_elem` flag: only a key that is not there.
        const BPF_NOEXIST: u64 = 1;
        match self
            .vcpu_tids
            .insert(tid, VcpuThread::new(tgid), BPF_NOEXIST)
        {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(ProbeError::Map {
                    name: names::VCPU_TIDS,
                    source,
                })
            }
        }
        self.vm_tgids
            .insert(tgid, 1, 0)
            .map_err(|source| ProbeError::Map {
                name: names::VM_TGIDS,
                source,
            })
    }

    /// Records lost because the ring buffer was full, summed over CPUs.
    pub fn drops(&self) -> u64 {
        sum_per_cpu(&self.drops, names::DROPS)
    }

    /// Tracepoint hits the kernel ran no program for because a BPF program was already
    /// running on that CPU, or a map operation from userspace held it (classic tracepoints
    /// share one per-CPU guard, `bpf_prog_active`: kernel/trace/bpf_trace.c
    /// `trace_call_bpf`; a map lookup or update by syscall raises it and may be preempted
    /// with it raised; tp_btf programs guard only against themselves, `__bpf_trace_run`).
    /// The kernel counts them per program (`recursion_misses`, Linux 5.12+; 0 before).
    /// Events lost, like [`Probes::drops`].
    pub fn recursion_misses(&self) -> u64 {
        use std::os::fd::AsFd;
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| prog_recursion_misses(fd.as_fd()))
            .sum()
    }

    /// Records the programs tried to send (sent + [`Probes::drops`]), summed over CPUs.
    pub fn emitted(&self) -> u64 {
        sum_per_cpu(&self.emitted, names::EMITTED)
    }

    /// Exits not counted in the kernel's histograms because their map was full (they were
    /// streamed instead).
    pub fn exit_agg_misses(&self) -> u64 {
        sum_per_cpu(&self.agg_misses, names::AGG_MISSES)
    }

    /// The kernel's exit histograms, by (vCPU thread, isa, reason). A map of at most
    /// `limits::MAX_EXIT_KEYS` small values; read key by key.
    pub fn exit_hists(&self) -> Vec<(ExitKey, ExitHist)> {
        self.exit_hist
            .iter()
            .filter_map(|r| {
                r.map_err(|e| log::debug!("reading {}: {e}", names::EXIT_HIST))
                    .ok()
            })
            .collect()
    }

    /// The VMM process of vCPU thread `tid`, if the programs know it.
    pub fn vcpu_tgid(&self, tid: u32) -> Option<u32> {
        self.vcpu_tids.get(&tid, 0).ok().map(|t| t.tgid)
    }

    /// Forgets the histograms of `key` (its thread is gone).
    pub fn remove_exit_hist(&mut self, key: &ExitKey) {
        if let Err(e) = self.exit_hist.remove(key) {
            log::debug!("removing a key of {}: {e}", names::EXIT_HIST);
        }
    }

    /// Kernel program ids of the loaded programs, by program (= tracepoint) name; for
    /// matching `bpftool prog show` statistics.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| Some((name.to_string(), p.info().ok()?.id())))
            .collect()
    }

    pub fn attached(&self) -> impl Iterator<Item = &ProbeStatus> {
        self.status.iter().filter(|s| s.attached)
    }
}

/// Records per CPU between two wake-ups of the reader: a ring holds
/// `ring_bytes / (record + 8-byte header)` records; half of it shared by every CPU, so all
/// CPUs together cannot fill the ring before one of them wakes the reader; at most 4096
/// (256 KiB) so the reader still drains in sizeable batches on big rings.
pub fn wakeup_every(ring_bytes: u32, cpus: u32) -> u32 {
    let records = ring_bytes as u64 / (kvmtrace_common::Event::SIZE as u64 + 8);
    (records / (2 * u64::from(cpus.max(1)))).clamp(1, 4096) as u32
}

/// CPUs the kernel may bring online (per-CPU maps have one slot each).
fn possible_cpus() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::NoMap(name))?;
    HashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn take_per_cpu(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<MapData, u64>, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::NoMap(name))?;
    PerCpuArray::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

/// A one-slot per-CPU counter, summed over CPUs (0 with a warning if it cannot be read).
fn sum_per_cpu(map: &PerCpuArray<MapData, u64>, name: &str) -> u64 {
    match map.get(&0, 0) {
        Ok(v) => v.iter().sum(),
        Err(e) => {
            log::warn!("reading {name}: {e}");
            0
        }
    }
}

/// The kernel's BTF, parsed twice: by aya to load BTF programs against, and by us for the
/// tracepoint typedefs and struct offsets. None (classic tracepoints only) when the kernel
/// has no BTF.
fn load_btf() -> Option<(KernelBtf, Btf)> {
    let ours = KernelBtf::from_sys_fs()
        .map_err(|e| log::info!("no kernel BTF ({e}): classic tracepoints only"))
        .ok()?;
    let aya = Btf::from_sys_fs()
        .map_err(|e| log::info!("aya cannot read the kernel BTF ({e}): classic tracepoints only"))
        .ok()?;
    Some((ours, aya))
}

/// Should `kind` try its BTF program: the kernel's BTF describes the tracepoint (KVM's only
/// when KVM is built in) and the struct fields the program reads were found.
fn btf_wanted(kind: Kind, kbtf: &KernelBtf, offsets: &BtfOffsets) -> bool {
    if !kbtf.has_tracepoint(kind.name()) {
        return false;
    }
    match kind {
        // Fields computed by vendor code at the tracepoint: no BTF program.
        Kind::KvmExit | Kind::KvmEntry | Kind::KvmPageFault | Kind::KvmEoi => false,
        Kind::SchedSwitch | Kind::SchedWakeup | Kind::SchedWakeupNew | Kind::SchedMigrateTask => {
            offsets.has_task()
        }
        // Kept classic for now. A classic program is skipped when it fires while another
        // classic program runs on the CPU (the kernel's bpf_prog_active guard), so timer
        // expiries in a hard interrupt that lands inside a KVM tracepoint's program are not
        // seen; the BTF ones see them all. On the SVM host (where BPF programs run slowly
        // enough for this to be common) those extra LAPIC-timer expiries made the engine's
        // timer windows go wrong (p50 19 ms for a ground truth of 0.3 ms, same run, same
        // records otherwise): the BTF programs are right, the engine's LAPIC-timer routing
        // is not ready for the complete stream. `hrtimer_expiry_btf_is_usable` below says
        // what would turn them on.
        Kind::HrtimerExpireEntry | Kind::HrtimerExpireExit | Kind::HrtimerStart => {
            hrtimer_expiry_btf_is_usable() && offsets.has_hrtimer()
        }
        _ => true,
    }
}

/// Whether the hrtimer tracepoints may run as BTF programs: not until the engine's
/// LAPIC-timer windows are checked against a stream that has every expiry (see
/// `btf_wanted`; the programs exist and record the same fields as the classic ones).
const fn hrtimer_expiry_btf_is_usable() -> bool {
    false
}

/// Attaches `kind`'s BTF program when `btf` is given and it loads, else its classic one.
fn attach_either(
    ebpf: &mut Ebpf,
    kind: Kind,
    btf: Option<&Btf>,
) -> Result<(Link, ProbeMode), AttachError> {
    if let Some(btf) = btf {
        match attach_btf(ebpf, kind, btf) {
            Ok(link) => return Ok((Link::Btf(link), ProbeMode::TpBtf)),
            Err(e) => log::warn!(
                "{}: BTF program not used, classic tracepoint instead: {e}",
                kind.name()
            ),
        }
    }
    attach(ebpf, kind).map(|l| (Link::Tracepoint(l), ProbeMode::Tracepoint))
}

fn attach_btf(ebpf: &mut Ebpf, kind: Kind, btf: &Btf) -> Result<BtfTracePointLink, AttachError> {
    let program = format!("{}_btf", kind.name());
    let prog = ebpf
        .program_mut(&program)
        .ok_or(AttachError::NoProgram(kind.name()))?;
    let tp: &mut BtfTracePoint =
        prog.try_into()
            .map_err(|source| AttachError::NotABtfTracepoint {
                program: program.clone(),
                source,
            })?;
    tp.load(kind.name(), btf).map_err(|e| AttachError::Load {
        program: program.clone(),
        summary: short_load_error(&e.to_string()),
    })?;
    let tracepoint = format!("{}:{} (tp_btf)", kind.category(), kind.name());
    let id = tp.attach().map_err(|source| AttachError::Attach {
        tracepoint: tracepoint.clone(),
        source,
    })?;
    tp.take_link(id)
        .map_err(|source| AttachError::Attach { tracepoint, source })
}

fn attach(ebpf: &mut Ebpf, kind: Kind) -> Result<TracePointLink, AttachError> {
    attach_tracepoint(ebpf, kind.name(), kind.category(), kind.name())
}

/// Loads program `program` and attaches it to the classic tracepoint `category:name`.
pub(crate) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<TracePointLink, AttachError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or(AttachError::NoProgram(program))?;
    let tp: &mut TracePoint = prog
        .try_into()
        .map_err(|source| AttachError::NotATracepoint { program, source })?;
    tp.load().map_err(|e| AttachError::Load {
        program: program.to_string(),
        summary: short_load_error(&e.to_string()),
    })?;
    let tracepoint = format!("{category}:{name}");
    let id = tp
        .attach(category, name)
        .map_err(|source| AttachError::Attach {
            tracepoint: tracepoint.clone(),
            source,
        })?;
    tp.take_link(id)
        .map_err(|source| AttachError::Attach { tracepoint, source })
}

/// A load error without the whole verifier log: its first line and the log's last lines,
/// where the verifier says what it refused.
fn short_load_error(full: &str) -> String {
    let Some((head, log)) = full.split_once("Verifier output:") else {
        return full.to_string();
    };
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("verification time"))
        .filter(|l| !l.starts_with("stack depth") && !l.starts_with("processed "))
        .take(2)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().map(str::trim).collect();
    format!("{}verifier: {}", head, tail.join(" / "))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memcg. Raising it
/// needs CAP_SYS_RESOURCE, which a container may lack: that is not an error.
fn raise_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to an initialised rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels that account BPF memory to memcg",
            std::io::Error::last_os_error()
        );
    }
}

/// A program's `recursion_misses` (`BPF_OBJ_GET_INFO_BY_FD`; aya's `ProgramInfo` does not
/// expose it). 0 when the kernel does not say.
fn prog_recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    use std::os::fd::AsRawFd;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `union bpf_attr`'s `info` member.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: a struct of integers and bitfield bytes, for which all zeroes is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: `attr` and the `info` buffer it points to outlive the call, which writes at
    // most `info_len` bytes there.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return 0;
    }
    info.recursion_misses
}
