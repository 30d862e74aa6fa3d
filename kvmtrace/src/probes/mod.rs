//! Loading and attaching the eBPF programs: the only module that talks to aya.
//!
//! Field offsets come from tracefs format files at start-up and are handed to the programs
//! as a read-only global; a tracepoint or field the kernel lacks disables only what depends
//! on it, and [`Probes::status`] says which.

pub use kvmtrace_analysis::format;
pub mod features;
pub mod stacks;
pub mod tracefs;

use std::collections::BTreeMap;

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{trace_point::TracePointLink, ProgramError, TracePoint},
    Ebpf, EbpfError, EbpfLoader,
};
use kvmtrace_common::{filter, limits, names, Config, Kind, NTRACEPOINTS};

use self::tracefs::{Tracefs, TracefsError};
use kvmtrace_analysis::capture::ProbeStatus;
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
    /// The kernel refused to load it; `summary` is the verifier's last words.
    #[error("loading {program}: {summary}")]
    Load {
        program: &'static str,
        summary: String,
    },
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
    /// `--stacks`: also attach the stack programs (docs/stacks.md).
    pub stacks: Option<stacks::StackOptions>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            pids: Vec::new(),
            ring_bytes: kvmtrace_common::limits::DEFAULT_RING_BYTES,
            stacks: None,
        }
    }
}

/// The loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    pub tracefs: Tracefs,
    /// One entry per tracepoint, in [`Kind`] order.
    pub status: Vec<ProbeStatus>,
    /// The format files used, by tracepoint name.
    pub formats: BTreeMap<String, Format>,
    vcpu_tids: HashMap<MapData, u32, u32>,
    vm_tgids: HashMap<MapData, u32, u32>,
    drops: PerCpuArray<MapData, u64>,
    /// Owned here so that [`Drop`] can detach them in parallel.
    links: Vec<TracePointLink>,
    /// The stack programs and their map, with `--stacks`.
    pub stacks: Option<stacks::StackProbes>,
}

impl Drop for Probes {
    /// Detaching a tracepoint waits for an RCU grace period (tens of ms in a VM); one at a
    /// time, 33 of them held `record` up for seconds after Ctrl-C. Detach them in parallel.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for link in self.links.drain(..) {
                s.spawn(move || drop(link));
            }
        });
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
        let ConfigPlan {
            mut config,
            formats,
            found,
        } = build_config(&tracefs, opts);
        config.apic_timer_fn = crate::host::apic_timer_fn_address();

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
                },
                Ok(missing_fields) => match attach(&mut ebpf, kind) {
                    Ok(link) => {
                        links.push(link);
                        ProbeStatus {
                            tracepoint,
                            attached: true,
                            reason: None,
                            missing_fields,
                        }
                    }
                    Err(e) => ProbeStatus {
                        tracepoint,
                        attached: false,
                        reason: Some(e.to_string()),
                        missing_fields,
                    },
                },
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
            Some(o) => Some(stacks::StackProbes::attach(&mut ebpf, o, &mut links)?),
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
        let drops_map = ebpf
            .take_map(names::DROPS)
            .ok_or(ProbeError::NoMap(names::DROPS))?;
        let drops = PerCpuArray::try_from(drops_map).map_err(|source| ProbeError::Map {
            name: names::DROPS,
            source,
        })?;
        Ok(Probes {
            ebpf,
            tracefs,
            status,
            formats,
            vcpu_tids,
            vm_tgids,
            drops,
            links,
            stacks,
        })
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
    pub fn add_vcpu(&mut self, tid: u32, tgid: u32) -> Result<(), ProbeError> {
        self.vcpu_tids
            .insert(tid, tgid, 0)
            .map_err(|source| ProbeError::Map {
                name: names::VCPU_TIDS,
                source,
            })?;
        self.vm_tgids
            .insert(tgid, 1, 0)
            .map_err(|source| ProbeError::Map {
                name: names::VM_TGIDS,
                source,
            })
    }

    /// Records lost because the ring buffer was full, summed over CPUs.
    pub fn drops(&self) -> u64 {
        match self.drops.get(&0, 0) {
            Ok(v) => v.iter().sum(),
            Err(e) => {
                log::warn!("reading the drop counter: {e}");
                0
            }
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

fn take_hash(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, u32, u32>, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::NoMap(name))?;
    HashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn attach(ebpf: &mut Ebpf, kind: Kind) -> Result<TracePointLink, AttachError> {
    let program = kind.name();
    let prog = ebpf
        .program_mut(program)
        .ok_or(AttachError::NoProgram(program))?;
    let tp: &mut TracePoint = prog
        .try_into()
        .map_err(|source| AttachError::NotATracepoint { program, source })?;
    tp.load().map_err(|e| AttachError::Load {
        program,
        summary: short_load_error(&e.to_string()),
    })?;
    let tracepoint = format!("{}:{}", kind.category(), kind.name());
    let id = tp
        .attach(kind.category(), kind.name())
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
