//! What `--stacks` costs (docs/performance.md, docs/stacks.md), on the real kernel with the
//! demo guest as the load (as `benches/pipeline.rs`, whose helpers are repeated here so the
//! two benchmarks change independently):
//! 1. mean BPF run time of each stack program per run (kernel.bpf_stats_enabled=1), and
//!    how often each ran;
//! 2. the demo guest's exit-loop rate and interrupt latency, and the stream's records per
//!    second, with kvmtrace without and with `--stacks` (runs alternated, medians);
//! 3. the share of `apic:local_timer` in the attributed latency (the profile's own timer
//!    interrupts on the vCPU's CPU) without and with `--stacks`.
//!
//! Under `cargo test` (no `--bench` argument) a short pass checks the measurement works.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kvmtrace::probes::stacks::StackOptions;
use kvmtrace::source::demo::DemoConfig;
use kvmtrace::source::session::{Session, SessionOptions};
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::hist::{latency_histogram, LatencySummary};
use kvmtrace_analysis::report::latency::vcpu_latency;
use kvmtrace_common::{ev, limits, Kind};
use serde_json::Value;

/// Port I/O exits per interrupt, as in the pipeline benchmark.
const WORK_EXITS: u32 = 100;

type Stats = BTreeMap<u32, (String, u64, u64)>;

fn bpf_stats() -> Stats {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()? as u32,
                (
                    p["name"].as_str()?.to_string(),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect()
}

fn set_bpf_stats(on: bool) -> String {
    let path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, if on { "1" } else { "0" }).expect("enable kernel.bpf_stats_enabled");
    old.trim().to_string()
}

struct Run {
    secs: f64,
    work_exits: u64,
    acked: u64,
    ack: LatencySummary,
    /// Tracepoint records, stack records (probes), definitions (userspace), per second.
    tracepoints: f64,
    stack_records: f64,
    definitions: f64,
    drops: u64,
    /// apic:local_timer's share of the attributed interrupt-to-guest latency, %.
    local_timer_pct: f64,
    /// Per stack program: (name, runs, ns per run).
    programs: Vec<(String, u64, f64)>,
}

/// `perf record` sampling cpu-clock at `hz` on every CPU (kernel stacks, to a file), for
/// the cost of the sampling interrupts themselves beside the BPF profile's.
struct Perf(std::process::Child);
impl Drop for Perf {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn perf_sampling(hz: u32) -> Option<Perf> {
    let out = std::env::temp_dir().join(format!("kvmtrace-bench-{}.perf", std::process::id()));
    Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            &hz.to_string(),
            "-a",
            "-g",
            "-o",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
        .map(Perf)
}

fn run(dur: Duration, stacks: Option<StackOptions>) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut session = Session::start(&SessionOptions {
            demo: Some(DemoConfig {
                work_exits_per_irq: WORK_EXITS,
                ..DemoConfig::default()
            }),
            stacks,
            ..Default::default()
        })
        .expect("session");
        let ids = session.probes().program_ids();
        let header = session.header.clone();
        // Kept in memory and analysed after the run: during it only the session runs, as
        // in `record` (the engine's own cost is section 4 of docs/performance.md).
        let mut kept: Vec<kvmtrace_common::Event> = Vec::with_capacity(1 << 20);
        let before = bpf_stats();
        let mut buf = Vec::with_capacity(1 << 16);
        let (mut tracepoints, mut stack_records, mut definitions) = (0u64, 0u64, 0u64);
        let mut acks = latency_histogram();
        let mut take = |buf: &mut Vec<kvmtrace_common::Event>, kept: &mut Vec<_>| {
            for e in buf.drain(..) {
                kept.push(e);
                match e.kind() {
                    Ok(Kind::StackAt | Kind::StackSample) => stack_records += 1,
                    Ok(Kind::StackFrames | Kind::Symbol) => definitions += 1,
                    Ok(k) if k.is_tracepoint() => tracepoints += 1,
                    _ => {
                        if let Some(a) = e.get::<ev::DemoAck>() {
                            let _ = acks.record(a.latency_ns().max(1));
                        }
                    }
                }
            }
        };
        session.initial_records(&mut buf).expect("initial records");
        let t0 = Instant::now();
        while t0.elapsed() < dur {
            session
                .read(&mut buf, Duration::from_millis(50))
                .await
                .expect("read");
            take(&mut buf, &mut kept);
        }
        let after = bpf_stats();
        let secs = t0.elapsed().as_secs_f64();
        let end = session.finish(&mut buf);
        take(&mut buf, &mut kept);
        let mut engine = Engine::new(EngineConfig::default().for_capture(&header));
        for e in &kept {
            engine.push(e);
        }
        engine.flush();
        let demo = end.demo.expect("demo ran").expect("demo stop");
        let programs = ids
            .iter()
            .filter(|(name, _)| name.starts_with("stack_"))
            .map(|(name, id)| {
                let (_, t1, c1) = after.get(id).cloned().unwrap_or_default();
                let (_, t0, c0) = before.get(id).cloned().unwrap_or_default();
                let runs = c1 - c0;
                let per = if runs > 0 {
                    (t1 - t0) as f64 / runs as f64
                } else {
                    0.0
                };
                (name.clone(), runs, per)
            })
            .collect();
        let local_timer_pct = engine
            .vcpus()
            .filter_map(|v| vcpu_latency(&engine, v.tid))
            .map(|l| {
                let c = &l.irq_to_guest.causes_ns;
                let total: u64 = c.values().sum();
                let lt = c.get("apic:local_timer").copied().unwrap_or(0);
                100.0 * lt as f64 / total.max(1) as f64
            })
            .next()
            .unwrap_or(0.0);
        Run {
            secs,
            work_exits: demo.work_exits,
            acked: demo.acked,
            ack: LatencySummary::from_histogram(&acks),
            tracepoints: tracepoints as f64 / secs,
            stack_records: stack_records as f64 / secs,
            definitions: definitions as f64 / secs,
            drops: end.kernel_drops + end.malformed,
            local_timer_pct,
            programs,
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (dur, pairs) = if full {
        (Duration::from_secs(5), 3)
    } else {
        (Duration::from_secs(1), 1)
    };
    let old_stats = set_bpf_stats(true);
    // Runs alternate between the settings, so a load that comes and goes on the machine
    // touches each alike.
    let settings: [(&str, Option<StackOptions>); 5] = [
        ("without", None),
        ("--stacks --stack-hz 0", Some(StackOptions { hz: 0 })),
        ("--stacks --stack-hz 999", Some(StackOptions { hz: 999 })),
        ("--stacks", Some(StackOptions::default())),
        ("without, perf record -F 4999 -a -g beside", None),
    ];
    let mut runs: Vec<Vec<Run>> = settings.iter().map(|_| Vec::new()).collect();
    for _ in 0..pairs {
        for (i, (name, opts)) in settings.iter().enumerate() {
            let _perf = name
                .contains("perf record")
                .then(|| perf_sampling(limits::DEFAULT_STACK_HZ))
                .flatten();
            runs[i].push(run(dur, *opts));
        }
    }
    let _ = set_bpf_stats(old_stats == "1");
    let (off, on) = (&runs[0], &runs[3]);

    println!(
        "## Stack programs ({} runs of {:.0} s with --stacks, demo guest, {WORK_EXITS} work exits per interrupt)\n",
        pairs,
        dur.as_secs_f64()
    );
    println!("| program | runs/s | ns/run (median of runs) |");
    println!("|---|---:|---:|");
    let mut names: Vec<String> = on[0].programs.iter().map(|p| p.0.clone()).collect();
    names.sort();
    for name in &names {
        let per_s = median(
            on.iter()
                .map(|r| {
                    r.programs
                        .iter()
                        .find(|p| &p.0 == name)
                        .map_or(0.0, |p| p.1 as f64 / r.secs)
                })
                .collect(),
        );
        let ns = median(
            on.iter()
                .map(|r| {
                    r.programs
                        .iter()
                        .find(|p| &p.0 == name)
                        .map_or(0.0, |p| p.2)
                })
                .collect(),
        );
        println!("| {name} | {per_s:.0} | {ns:.0} |");
    }
    println!("\n## The demo guest under kvmtrace without and with --stacks (median of {pairs} runs each)\n");
    println!(
        "| | work exits/s | acked/s | ack p50 us | ack p99 us | tracepoint records/s | stack records/s | definitions/s | apic:local_timer % of latency | drops |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((name, _), runs) in settings.iter().zip(&runs) {
        let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
        println!(
            "| {name} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            m(&|r| r.work_exits as f64 / r.secs),
            m(&|r| r.acked as f64 / r.secs),
            us(m(&|r| r.ack.p50 as f64) as u64),
            us(m(&|r| r.ack.p99 as f64) as u64),
            m(&|r| r.tracepoints),
            m(&|r| r.stack_records),
            m(&|r| r.definitions),
            m(&|r| r.local_timer_pct),
            runs.iter().map(|r| r.drops).sum::<u64>()
        );
    }
    let rate = |runs: &[Run]| median(runs.iter().map(|r| r.work_exits as f64 / r.secs).collect());
    println!();
    for ((name, _), r) in settings.iter().zip(&runs).skip(1) {
        println!(
            "exit-loop rate with {name} relative to without: {:+.1} %",
            100.0 * (rate(r) / rate(off) - 1.0)
        );
    }

    // The smoke pass checks that every figure above was measured.
    assert!(
        off.iter().all(|r| r.programs.is_empty()),
        "no stack program without --stacks"
    );
    assert!(
        on.iter().all(|r| r.programs.len() == 5),
        "five stack programs with --stacks"
    );
    assert!(on
        .iter()
        .all(|r| r.stack_records > 0.0 && r.definitions > 0.0));
    assert!(off.iter().all(|r| r.stack_records == 0.0));
    assert!(runs.iter().flatten().all(|r| r.acked > 0));
}
