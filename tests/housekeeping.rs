//! Privileged, real kernel: kvmtrace keeps its own threads off the traced vCPU's CPU, and
//! what its threads still take from a vCPU is the `tracer` cause, never `preempted`.
//!
//! The demo's vCPU is pinned to CPU 1. By default kvmtrace's threads must then run on CPU 0
//! only: checked from outside while it records (each thread's allowed CPUs and the CPU it
//! last ran on, sampled every 20 ms) and from the capture (no event of a kvmtrace thread on
//! CPU 1, no context switch there from or to one). With `--housekeeping 1` it shares the
//! vCPU's CPU on purpose, and the time it takes shows as `tracer`.

#[path = "support/privileged.rs"]
mod privileged;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmtrace_analysis::capture::CaptureReader;
use kvmtrace_analysis::engine::EngineConfig;
use kvmtrace_analysis::report::analyse_capture;
use kvmtrace_common::{ev, ThreadInfoIs};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");
/// The vCPU's CPU.
const VCPU_CPU: u32 = 1;

/// One demo guest at a time.
static KVM: Mutex<()> = Mutex::new(());

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmtrace-hk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn two_cpus() -> bool {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        eprintln!("SKIPPED: placement needs two CPUs, this machine has {n}");
    }
    n >= 2
}

/// What the sampler saw of one kvmtrace thread on the vCPU's CPU (printed when it fails).
#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Seen {
    tid: u32,
    comm: String,
    allowed: String,
    last_cpu: u32,
}

/// kvmtrace's threads but the demo's (the traced workload), from /proc: (tid, comm, allowed
/// CPUs, CPU last ran on).
fn threads_of(pid: u32) -> Vec<(u32, String, String, u32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|e| {
            let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let dir = format!("/proc/{pid}/task/{tid}");
            let comm = std::fs::read_to_string(format!("{dir}/comm")).ok()?;
            let comm = comm.trim_end().to_string();
            // The demo's vCPU and device threads, and KVM's worker for the VM: the traced
            // workload, not the tracer.
            if comm == "CPU 0/KVM" || comm == "kvmtrace-irq" || comm.starts_with("kvm-") {
                return None;
            }
            let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_string();
            let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let last_cpu = rest.split_whitespace().nth(36)?.parse().ok()?;
            Some((tid, comm, allowed, last_cpu))
        })
        .collect()
}

fn cpus(list: &str) -> Vec<u32> {
    kvmtrace_analysis::host::parse_cpulist(list).unwrap()
}

struct Run {
    pid: u32,
    capture: PathBuf,
    /// kvmtrace threads seen allowed on, or having last run on, the vCPU's CPU.
    on_vcpu_cpu: Vec<Seen>,
    samples: usize,
}

/// Records the demo (vCPU on CPU 1) for 3 s with `extra` arguments, sampling kvmtrace's
/// threads from /proc from the moment it says it records until it ends.
fn record(dir: &Path, extra: &[&str]) -> Run {
    let capture = dir.join("demo.kvmtrace");
    let mut child = Command::new(BIN)
        .args([
            "record",
            "--demo",
            "--demo-cpu",
            "1",
            "--duration",
            "3",
            "-o",
        ])
        .arg(&capture)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let recording = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let stderr = child.stderr.take().unwrap();
    let log = {
        let recording = recording.clone();
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("recording to") {
                    recording.store(true, Ordering::SeqCst);
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        })
    };
    let sampler = {
        let (recording, done) = (recording.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut samples = 0;
            while !done.load(Ordering::SeqCst) {
                if recording.load(Ordering::SeqCst) {
                    for (tid, comm, allowed, last_cpu) in threads_of(pid) {
                        samples += 1;
                        if cpus(&allowed).contains(&VCPU_CPU) || last_cpu == VCPU_CPU {
                            seen.push(Seen {
                                tid,
                                comm,
                                allowed,
                                last_cpu,
                            });
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (seen, samples)
        })
    };
    let status = child.wait().unwrap();
    done.store(true, Ordering::SeqCst);
    let err = log.join().unwrap();
    assert!(status.success(), "{err}");
    let (on_vcpu_cpu, samples) = sampler.join().unwrap();
    Run {
        pid,
        capture,
        on_vcpu_cpu,
        samples,
    }
}

/// kvmtrace's own threads, as the capture announces them.
fn tracer_tids(capture: &Path, pid: u32) -> HashSet<u32> {
    let mut r = CaptureReader::open(capture).unwrap();
    let mut out = HashSet::new();
    while let Some(e) = r.next_event().unwrap() {
        if let Some(t) = e.get::<ev::ThreadInfo>() {
            if t.is() == ThreadInfoIs::Tracer {
                assert_eq!(e.tgid, pid, "only kvmtrace's own threads are the tracer");
                out.insert(e.tid);
            }
        }
    }
    out
}

#[test]
fn kvmtraces_threads_stay_off_the_vcpus_cpu() {
    if !privileged::privileged("kvmtraces_threads_stay_off_the_vcpus_cpu") || !two_cpus() {
        return;
    }
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tmp("off");
    let run = record(&dir, &[]);
    assert!(
        run.samples > 50,
        "only {} samples of its threads",
        run.samples
    );
    assert!(
        run.on_vcpu_cpu.is_empty(),
        "kvmtrace threads on the vCPU's CPU {VCPU_CPU}: {:?}",
        run.on_vcpu_cpu
    );

    let tracers = tracer_tids(&run.capture, run.pid);
    assert!(tracers.contains(&run.pid), "the main thread is announced");
    let mut r = CaptureReader::open(&run.capture).unwrap();
    let placement = r.header.placement.clone().expect("the header says where");
    assert_eq!(
        (placement.cpus, placement.vcpu_cpus),
        (vec![0], vec![VCPU_CPU]),
        "placed on CPU 0, away from the vCPU"
    );
    assert!(placement.since_ns >= r.header.start_ns);
    let (mut switches_on_vcpu_cpu, mut events) = (0, 0);
    while let Some(e) = r.next_event().unwrap() {
        // Before the placement: loading the probes and starting the demo, anywhere.
        if !e.kind().is_ok_and(|k| k.is_tracepoint()) || e.ts_ns < placement.since_ns {
            continue;
        }
        events += 1;
        assert!(
            !(tracers.contains(&e.tid) && e.cpu == VCPU_CPU),
            "an event of kvmtrace thread {} on CPU {VCPU_CPU}: {e:?}",
            e.tid
        );
        if let Some(sw) = e.get::<ev::SchedSwitch>() {
            if e.cpu == VCPU_CPU {
                switches_on_vcpu_cpu += 1;
                for t in [sw.prev_pid as u32, sw.next_pid as u32] {
                    assert!(!tracers.contains(&t), "kvmtrace thread {t} ran on CPU 1");
                }
            }
        }
    }
    assert!(
        events > 10_000 && switches_on_vcpu_cpu > 100,
        "the vCPU ran"
    );

    let (report, _) = analyse_capture(&run.capture, EngineConfig::default()).unwrap();
    let v = &report.vcpus[0];
    let causes = &v.latency.irq_to_guest.causes_ns;
    for t in &tracers {
        assert!(
            !causes
                .keys()
                .any(|c| c == &format!("preempted:kvmtrace:{t}")),
            "{causes:?}"
        );
    }
    let tracer = report.tracer.as_ref().expect("the tracer section");
    assert!(tracer.cpu_ns.is_some_and(|c| c > 0), "{tracer:?}");
    // Off the vCPU's CPU, kvmtrace cannot hold it up by running there.
    assert_eq!(causes.get("tracer").copied().unwrap_or(0), 0, "{causes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn time_kvmtrace_takes_from_a_vcpu_is_the_tracer_cause() {
    if !privileged::privileged("time_kvmtrace_takes_from_a_vcpu_is_the_tracer_cause") || !two_cpus()
    {
        return;
    }
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tmp("on");
    // On purpose on the vCPU's CPU.
    let run = record(&dir, &["--housekeeping", "1"]);
    assert!(
        run.on_vcpu_cpu.iter().all(|s| s.allowed == "1"),
        "confined to CPU 1: {:?}",
        run.on_vcpu_cpu
    );
    let tracers = tracer_tids(&run.capture, run.pid);
    let (report, _) = analyse_capture(&run.capture, EngineConfig::default()).unwrap();
    let causes = &report.vcpus[0].latency.irq_to_guest.causes_ns;
    eprintln!("tracers {tracers:?}; causes {causes:?}");
    for t in &tracers {
        assert!(
            !causes.contains_key(&format!("preempted:kvmtrace:{t}")),
            "kvmtrace's wait is not preemption by another task: {causes:?}"
        );
    }
    let tracer = causes.get("tracer").copied().unwrap_or(0);
    assert!(
        tracer > 0,
        "sharing the vCPU's CPU for 3 s costs it something: {causes:?}"
    );
    assert_eq!(
        report.tracer.as_ref().map(|t| t.irq_to_guest_ns),
        Some(tracer)
    );
    let text = report.to_text();
    assert!(
        text.contains("--housekeeping puts kvmtrace on CPU 1 where a traced vCPU runs"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
