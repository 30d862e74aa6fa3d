//! The stack programs (docs/stacks.md): loaded and attached only with `--stacks`, beside
//! the per-tracepoint programs, and the kernel stack map they fill.

use std::time::Duration;

use aya::{
    maps::{MapData, MapError, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventLink, PerfEventScope, SamplePolicy, SoftwareEvent},
        trace_point::TracePointLink,
        PerfEvent,
    },
    Ebpf,
};
use kvmtrace_analysis::capture::{StackCapture, StackProgram};
use kvmtrace_common::{limits, names};

use super::{attach_tracepoint, short_load_error, AttachError, ProbeError};

/// `--stacks` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackOptions {
    /// The profile's `cpu-clock` frequency per CPU; 0 = no profile.
    pub hz: u32,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            hz: limits::DEFAULT_STACK_HZ,
        }
    }
}

/// The stack programs that take a stack at a tracepoint: (program, category, tracepoint).
const AT_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("stack_sched_switch", "sched", "sched_switch"),
    ("stack_contention_begin", "lock", "contention_begin"),
    ("stack_irq_handler_entry", "irq", "irq_handler_entry"),
    ("stack_softirq_entry", "irq", "softirq_entry"),
];

/// The profile program, attached to a `cpu-clock` perf event on every online CPU.
const PROFILE: &str = "stack_profile";

/// The attached stack programs and their stack map.
pub struct StackProbes {
    map: StackTraceMap<MapData>,
    /// The profile's perf events, one per CPU (closed, and so detached, on drop).
    _profile: Vec<PerfEventLink>,
    /// What the capture header records.
    pub capture: StackCapture,
}

impl StackProbes {
    /// Loads and attaches the stack programs; the tracepoint links go to `links`, so they
    /// are detached in parallel with the others. Fails only when none could be attached.
    pub(super) fn attach(
        ebpf: &mut Ebpf,
        opts: &StackOptions,
        links: &mut Vec<TracePointLink>,
    ) -> Result<StackProbes, ProbeError> {
        let mut programs = Vec::new();
        for &(program, category, name) in AT_TRACEPOINTS {
            let attach = format!("{category}:{name}");
            programs.push(match attach_tracepoint(ebpf, program, category, name) {
                Ok(link) => {
                    links.push(link);
                    status(program, attach, true, None)
                }
                Err(e) => status(program, attach, false, Some(e.to_string())),
            });
        }
        let mut profile = Vec::new();
        if opts.hz > 0 {
            let attach = "perf:cpu-clock".to_string();
            programs.push(match attach_profile(ebpf, opts.hz, &mut profile) {
                // Partly attached: sampled where it could be, and said so.
                Ok(missing) => status(PROFILE, attach, true, missing),
                Err(e) => status(PROFILE, attach, false, Some(e)),
            });
        }
        for p in programs.iter().filter(|p| p.reason.is_some()) {
            log::warn!(
                "--stacks: {} ({}) not attached: {}",
                p.program,
                p.attach,
                p.reason.as_deref().unwrap_or("?")
            );
        }
        if !programs.iter().any(|p| p.attached) {
            return Err(ProbeError::NothingAttached(
                "no stack program could be attached (--stacks)".to_string(),
            ));
        }
        let map = ebpf
            .take_map(names::KSTACKS)
            .ok_or(ProbeError::NoMap(names::KSTACKS))?;
        let map = StackTraceMap::try_from(map).map_err(|source| ProbeError::Map {
            name: names::KSTACKS,
            source,
        })?;
        Ok(StackProbes {
            map,
            _profile: profile,
            capture: StackCapture {
                hz: opts.hz,
                max_stacks: limits::MAX_STACKS,
                depth: limits::STACK_DEPTH,
                programs,
                symbols_problem: None,
            },
        })
    }

    /// The frames of kernel stack `id`, innermost first.
    pub fn frames(&self, id: u32) -> Result<Vec<u64>, MapError> {
        Ok(self
            .map
            .get(&id, 0)?
            .frames()
            .iter()
            .map(|f| f.ip)
            .collect())
    }
}

fn status(program: &str, attach: String, attached: bool, reason: Option<String>) -> StackProgram {
    StackProgram {
        program: program.to_string(),
        attach,
        attached,
        reason,
    }
}

/// The profile on every online CPU (the program keeps only ticks on CPUs where a traced
/// vCPU runs or waits, so a vCPU that moves is followed without reopening anything).
/// Ok(the CPUs it could not be opened on, if any).
fn attach_profile(
    ebpf: &mut Ebpf,
    hz: u32,
    out: &mut Vec<PerfEventLink>,
) -> Result<Option<String>, String> {
    let cpus = aya::util::online_cpus().map_err(|(path, e)| format!("reading {path}: {e}"))?;
    let prog = ebpf
        .program_mut(PROFILE)
        .ok_or_else(|| AttachError::NoProgram(PROFILE).to_string())?;
    let pe: &mut PerfEvent = prog
        .try_into()
        .map_err(|e| format!("{PROFILE} is not a perf_event program: {e}"))?;
    pe.load()
        .map_err(|e| format!("loading {PROFILE}: {}", short_load_error(&e.to_string())))?;
    // cpu-clock counts nanoseconds: a fixed period, so every tick stands for the same time.
    let period = Duration::from_secs(1).as_nanos() as u64 / u64::from(hz.max(1));
    let mut failed = Vec::new();
    for cpu in cpus {
        let attached = pe
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(period),
                false,
            )
            .and_then(|id| pe.take_link(id));
        match attached {
            Ok(link) => out.push(link),
            Err(e) => failed.push(format!("cpu {cpu}: {e}")),
        }
    }
    let failed = failed.join("; ");
    match (out.is_empty(), failed.is_empty()) {
        (_, true) => Ok(None),
        (true, false) => Err(format!("perf_event_open(cpu-clock) failed: {failed}")),
        (false, false) => Ok(Some(format!("not sampled on {failed}"))),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    /// src/cli.rs uses only clap and std (the build script compiles it for completions and
    /// man pages), so its default frequency is a literal: the same as the limits'.
    #[test]
    fn the_command_lines_default_frequency_is_the_limits() {
        let cli = Cli::parse_from(["kvmtrace", "record", "-o", "x", "--stacks"]);
        let Command::Record(r) = cli.command else {
            panic!("record");
        };
        assert!(r.target.stacks);
        assert_eq!(r.target.stack_hz, super::limits::DEFAULT_STACK_HZ);
    }
}
