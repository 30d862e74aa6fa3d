//! Probe cost and pipeline throughput on the real kernel, with the demo guest as the load.
//!
//! `cargo bench --bench pipeline` (as root) prints the figures recorded in
//! docs/performance.md:
//! 1. mean BPF run time per event of each kvmtrace program (kernel.bpf_stats_enabled=1),
//!    beside a bpftrace one-liner that only counts the same tracepoints, same run;
//! 2. the event rate the pipeline carried, and its drops;
//! 3. the demo guest's exit-loop rate and interrupt latency without and with kvmtrace.
//!
//! Under `cargo test` (no `--bench` argument) it runs a short smoke pass that checks the
//! measurement itself works, so the benchmark cannot silently rot.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvmtrace::source::demo::{DemoConfig, DemoGuest, DemoSample};
use kvmtrace::source::session::{Session, SessionOptions};
use kvmtrace_analysis::hist::{latency_histogram, LatencySummary};
use serde_json::Value;

/// Port I/O exits the guest makes after each interrupt: enough to keep the exit loop busy
/// for most of each 1 ms period.
const WORK_EXITS: u32 = 100;

struct Run {
    secs: f64,
    work_exits: u64,
    acked: u64,
    latency: LatencySummary,
    events: u64,
    drops: u64,
}

fn demo_config() -> DemoConfig {
    DemoConfig {
        work_exits_per_irq: WORK_EXITS,
        ..DemoConfig::default()
    }
}

fn summarise(samples: &mpsc::Receiver<DemoSample>) -> LatencySummary {
    let mut h = latency_histogram();
    for s in samples.try_iter() {
        let _ = h.record(s.acked_ns.saturating_sub(s.raised_ns).max(1));
    }
    LatencySummary::from_histogram(&h)
}

fn untraced(dur: Duration) -> Run {
    let (tx, rx) = mpsc::channel();
    let guest = DemoGuest::start(demo_config(), tx).expect("demo guest");
    let t0 = Instant::now();
    std::thread::sleep(dur);
    let stats = guest.stop().expect("demo stop");
    Run {
        secs: t0.elapsed().as_secs_f64(),
        work_exits: stats.work_exits,
        acked: stats.acked,
        latency: summarise(&rx),
        events: 0,
        drops: 0,
    }
}

type Stats = BTreeMap<u32, (String, u64, u64)>;

/// Runs the demo under kvmtrace; calls `during` once the probes are attached. Returns the
/// run, our program ids and the BPF statistics taken just before the probes are removed.
fn traced(
    dur: Duration,
    during: impl FnOnce(&[(String, u32)]),
) -> (Run, Vec<(String, u32)>, Stats) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut session = Session::start(&SessionOptions {
            demo: Some(demo_config()),
            ..Default::default()
        })
        .expect("session");
        let ids = session.probes().program_ids();
        during(&ids);
        let mut buf = Vec::with_capacity(1 << 16);
        let mut events = 0u64;
        let mut acks = latency_histogram();
        let t0 = Instant::now();
        while t0.elapsed() < dur {
            session
                .read(&mut buf, Duration::from_millis(50))
                .await
                .expect("read");
            count(&mut buf, &mut events, &mut acks);
        }
        let stats_at_end = bpf_stats();
        let end = session.finish(&mut buf);
        count(&mut buf, &mut events, &mut acks);
        let stats = end.demo.expect("demo ran").expect("demo stop");
        (
            Run {
                secs: t0.elapsed().as_secs_f64(),
                work_exits: stats.work_exits,
                acked: stats.acked,
                latency: LatencySummary::from_histogram(&acks),
                events,
                drops: end.kernel_drops + end.malformed,
            },
            ids,
            stats_at_end,
        )
    })
}

fn count(
    buf: &mut Vec<kvmtrace_common::Event>,
    events: &mut u64,
    acks: &mut hdrhistogram::Histogram<u64>,
) {
    use kvmtrace_common::{ev, Kind};
    for e in buf.drain(..) {
        if let Some(a) = e.get::<ev::DemoAck>() {
            let _ = acks.record(a.latency_ns().max(1));
        } else if e.kind().is_ok_and(Kind::is_tracepoint) {
            *events += 1;
        }
    }
}

/// (run_time_ns, run_cnt) per program id, from `bpftool prog show -j`.
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

/// Tracepoints that fire here, for the per-program comparison.
const COMPARED: &[&str] = &[
    "kvm:kvm_pio",
    "kvm:kvm_userspace_exit",
    "kvm:kvm_set_irq",
    "kvm:kvm_pic_set_irq",
    "kvm:kvm_vcpu_wakeup",
    "sched:sched_switch",
    "sched:sched_wakeup",
    "irq:irq_handler_entry",
    "irq:softirq_entry",
    "timer:hrtimer_expire_entry",
];

/// The kernel keeps 15 characters of a program's name.
fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// Kills bpftrace however the benchmark ends.
struct Bpftrace(Child);
impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bpftrace_counting() -> Bpftrace {
    let script: String = COMPARED
        .iter()
        .enumerate()
        .map(|(i, tp)| format!("tracepoint:{tp} {{ @c{i} = count(); }} "))
        .collect();
    Command::new("bpftrace")
        .arg("-e")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Bpftrace)
        .expect("bpftrace (installed by `cargo xtask setup`)")
}

fn wait_for_bpftrace(ours: &[(String, u32)]) {
    let ours: Vec<u32> = ours.iter().map(|(_, id)| *id).collect();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let n = bpf_stats()
            .iter()
            .filter(|(id, (name, _, _))| {
                !ours.contains(id)
                    && COMPARED
                        .iter()
                        .any(|tp| kernel_name(tp.split(':').nth(1).unwrap_or(tp)) == name)
            })
            .count();
        if n >= COMPARED.len() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("bpftrace did not attach its probes within 30 s");
}

fn set_bpf_stats(on: bool) -> String {
    let path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, if on { "1" } else { "0" }).expect("enable kernel.bpf_stats_enabled");
    old.trim().to_string()
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dur = Duration::from_secs(if full { 10 } else { 2 });
    let old_stats = set_bpf_stats(true);

    // 1 + 2: per-program cost beside bpftrace, and the pipeline's rate.
    let before = bpf_stats();
    let mut bt: Option<Bpftrace> = None;
    let (traced_run, our_ids, after) = traced(dur, |ours| {
        if full {
            bt = Some(bpftrace_counting());
            wait_for_bpftrace(ours);
        }
    });
    let ours: BTreeMap<&str, u32> = our_ids.iter().map(|(n, id)| (n.as_str(), *id)).collect();
    let delta = |id: u32| {
        let (_, t1, c1) = after.get(&id).cloned().unwrap_or_default();
        let (_, t0, c0) = before.get(&id).cloned().unwrap_or_default();
        (t1 - t0, c1 - c0)
    };
    println!(
        "## BPF run time per event ({:.0} s, demo guest, {} work exits per interrupt)\n",
        dur.as_secs_f64(),
        WORK_EXITS
    );
    println!("| tracepoint | kvmtrace runs | kvmtrace ns/run | bpftrace count ns/run |");
    println!("|---|---:|---:|---:|");
    let mut checked = 0;
    for tp in COMPARED {
        let name = tp.split(':').nth(1).unwrap_or(tp);
        let Some(&id) = ours.get(name) else { continue };
        let (t, c) = delta(id);
        let theirs = after
            .iter()
            .filter(|(i, (n, _, _))| {
                n == kernel_name(name) && !our_ids.iter().any(|(_, o)| o == *i)
            })
            .map(|(_, (_, t, c))| (*t, *c))
            .fold((0u64, 0u64), |a, b| (a.0 + b.0, a.1 + b.1));
        let theirs = if theirs.1 > 0 {
            format!("{:.0}", theirs.0 as f64 / theirs.1 as f64)
        } else {
            "-".to_string()
        };
        let mean = if c > 0 {
            format!("{:.0}", t as f64 / c as f64)
        } else {
            "-".to_string()
        };
        if c > 0 {
            checked += 1;
        }
        println!("| {tp} | {c} | {mean} | {theirs} |");
    }
    drop(bt);
    println!(
        "\n## Pipeline\n\n{} events in {:.1} s = {:.0} events/s delivered, {} dropped\n",
        traced_run.events,
        traced_run.secs,
        traced_run.events as f64 / traced_run.secs,
        traced_run.drops
    );

    // 3: the guest's exit loop and interrupt latency without and with kvmtrace.
    let bare = untraced(dur);
    let (with, _, _) = traced(dur, |_| {});
    println!("## Demo guest without and with kvmtrace\n");
    println!("| | work exits/s | interrupts acked | ack p50 us | ack p99 us | ack max us |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, r) in [("untraced", &bare), ("traced", &with)] {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} |",
            r.work_exits as f64 / r.secs,
            r.acked,
            us(r.latency.p50),
            us(r.latency.p99),
            us(r.latency.max)
        );
    }
    let slow = 1.0 - (with.work_exits as f64 / with.secs) / (bare.work_exits as f64 / bare.secs);
    println!(
        "\nexit-loop slowdown with kvmtrace attached: {:.1} %",
        slow * 100.0
    );
    let _ = set_bpf_stats(old_stats == "1");

    // The smoke pass checks that every figure above was actually measured.
    assert!(
        checked >= 4,
        "BPF run-time statistics missing for our programs"
    );
    assert!(traced_run.events > 1000 && with.events > 1000);
    assert_eq!(traced_run.drops + with.drops, 0, "drops at the demo's rate");
    assert!(bare.work_exits > 0 && with.work_exits > 0 && bare.latency.count > 0);
}
