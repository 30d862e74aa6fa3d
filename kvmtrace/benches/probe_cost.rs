//! What tracing costs a guest's exits: kvmtrace beside the usual tools, on the same workload.
//!
//! `cargo xtask bench` (or, as root, `cargo bench -p kvmtrace --bench probe_cost -- --bench`)
//! prints the figures kept in docs/performance.md:
//!
//! 1. **ns per exit** of a guest doing port I/O exits in a tight loop (the embedded demo guest
//!    with a backlog of work exits, in its own process), untraced and under each tracer:
//!    `kvmtrace record -p PID`, a bpftrace one-liner that only counts the same tracepoints,
//!    `perf record -a -e <the same tracepoints>`, and raw ftrace (the same events in a tracefs
//!    instance, `trace_pipe` copied to a file). Rounds are interleaved (each round runs every
//!    tracer once, starting one further along) and the medians reported, so a load change on
//!    this shared machine hits every tracer alike. `kernel.bpf_stats_enabled` is off here.
//! 2. **BPF run time per event** (`kernel.bpf_stats_enabled=1`, `run_time_ns / run_cnt` from
//!    `bpftool prog show`) of each kvmtrace program and of bpftrace's counting program on the
//!    same tracepoint, both attached in the same run so they see the same events.
//!
//! Options (after `--`): `--rounds N` (5), `--cost-rounds N` (3), `--secs S` per run (4),
//! `--work N` work exits per interrupt (2000: more than a millisecond of exits, so the guest
//! never idles), `--kvmtrace-only` (no bpftrace, perf, ftrace rounds), and
//! `--kvmtrace LABEL=PATH[,ARG...]` (repeatable) to compare kvmtrace binaries or options in
//! the same interleaved run, e.g. `--kvmtrace base=/tmp/kvmtrace-27e4406`.
//!
//! Under `cargo test` (no `--bench` argument) it runs one short round of kvmtrace and the
//! untraced guest, checking that the measurement itself works.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvmtrace::source::demo::{monotonic_ns, DemoConfig, DemoGuest};
use kvmtrace_common::Kind;
use serde_json::Value;

/// Set in the environment of the child that runs the guest: `SECS:WORK`.
const GUEST_ENV: &str = "KVMTRACE_BENCH_GUEST";

fn main() {
    if let Ok(spec) = std::env::var(GUEST_ENV) {
        guest_main(&spec);
        return;
    }
    let opts = Options::parse();
    let tracefs = kvmtrace::probes::tracefs::Tracefs::find_or_mount().expect("tracefs");
    let tracepoints: Vec<(&str, &str)> = Kind::ALL
        .iter()
        .filter(|k| k.is_tracepoint())
        .filter(|k| tracefs.event_dir(k.category(), k.name()).is_dir())
        .map(|k| (k.category(), k.name()))
        .collect();
    // KVMTRACE_BENCH_TMP: somewhere else for the captures and perf.data (e.g. /tmp inside
    // the SVM host, where the build's directory does not exist).
    let tmp = std::env::var_os("KVMTRACE_BENCH_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probe-cost"));
    std::fs::create_dir_all(&tmp).expect("bench scratch directory");
    let env = Env {
        tracepoints,
        tracefs: tracefs.root.clone(),
        tmp,
        secs: opts.secs,
        work: opts.work,
    };
    let old_stats = set_bpf_stats(false);
    let load_before = loadavg();

    // 1. ns per exit, interleaved rounds.
    let mut tracers = vec![Tracer::None];
    tracers.extend(opts.kvmtrace.iter().cloned().map(Tracer::Kvmtrace));
    if opts.full && opts.others {
        // The tools this machine has (the SVM host has neither bpftrace nor perf).
        for (tool, t) in [("bpftrace", Tracer::Bpftrace), ("perf", Tracer::Perf)] {
            if have(tool) {
                tracers.push(t);
            } else {
                eprintln!("{tool} is not installed: its rounds are skipped");
            }
        }
        tracers.push(Tracer::Ftrace);
    }
    let mut runs: BTreeMap<usize, Vec<RunResult>> = BTreeMap::new();
    for round in 0..opts.rounds {
        for i in 0..tracers.len() {
            let t = (round + i) % tracers.len();
            let r = run_once(&env, &tracers[t], false);
            eprintln!(
                "round {} {:<28} {:>7.0} ns/exit {:>7.0} cpu ns/exit  load {}",
                round + 1,
                tracers[t].label(),
                r.ns_per_exit(),
                r.cpu_per_exit(),
                loadavg()
            );
            runs.entry(t).or_default().push(r);
        }
    }

    // 2. BPF run time per event, kvmtrace and bpftrace attached together.
    let mut costs: BTreeMap<String, Vec<ProgCosts>> = BTreeMap::new();
    if opts.full && !have("bpftool") {
        eprintln!("bpftool is not installed: no BPF run times");
    }
    if opts.full && have("bpftool") {
        let _ = set_bpf_stats(true);
        for round in 0..opts.cost_rounds {
            for k in &opts.kvmtrace {
                let r = run_once(&env, &Tracer::Kvmtrace(k.clone()), have("bpftrace"));
                eprintln!("cost round {} {}: done", round + 1, k.label);
                costs.entry(k.label.clone()).or_default().push(r.costs);
            }
        }
    }
    let _ = set_bpf_stats(old_stats == "1");
    let load_after = loadavg();

    print_tables(
        &opts,
        &env,
        &tracers,
        &runs,
        &costs,
        &load_before,
        &load_after,
    );

    // The smoke pass checks that every figure above was actually measured.
    for (t, rs) in &runs {
        for r in rs {
            assert!(
                r.work_exits > 0,
                "{}: the guest made no exit",
                tracers[*t].label()
            );
            if let Tracer::Kvmtrace(_) = tracers[*t] {
                assert!(
                    r.events.unwrap_or(0) > 1000,
                    "kvmtrace recorded nothing: {r:?}"
                );
                assert_eq!(r.drops, Some(0), "drops at the demo's rate");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Options

#[derive(Clone, Debug)]
struct KvmtraceBin {
    label: String,
    path: PathBuf,
    args: Vec<String>,
}

struct Options {
    full: bool,
    /// Also bpftrace, perf and ftrace (off with `--kvmtrace-only`).
    others: bool,
    rounds: usize,
    cost_rounds: usize,
    secs: f64,
    work: u32,
    kvmtrace: Vec<KvmtraceBin>,
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let mut o = Options {
            full,
            others: !args.iter().any(|a| a == "--kvmtrace-only"),
            rounds: if full { 5 } else { 1 },
            cost_rounds: 3,
            secs: if full { 4.0 } else { 1.5 },
            work: 2000,
            kvmtrace: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().unwrap_or_default();
            match a.as_str() {
                "--rounds" => o.rounds = val().parse().expect("--rounds N"),
                "--cost-rounds" => o.cost_rounds = val().parse().expect("--cost-rounds N"),
                "--secs" => o.secs = val().parse().expect("--secs S"),
                "--work" => o.work = val().parse().expect("--work N"),
                "--kvmtrace" => {
                    let v = val();
                    let (label, rest) = v.split_once('=').expect("--kvmtrace LABEL=PATH[,ARG..]");
                    let mut parts = rest.split(',');
                    let path = PathBuf::from(parts.next().unwrap_or_default());
                    o.kvmtrace.push(KvmtraceBin {
                        label: label.to_string(),
                        path,
                        args: parts.map(str::to_string).collect(),
                    });
                }
                _ => {}
            }
        }
        if o.kvmtrace.is_empty() {
            o.kvmtrace.push(KvmtraceBin {
                label: "kvmtrace".to_string(),
                path: PathBuf::from(env!("CARGO_BIN_EXE_kvmtrace")),
                args: Vec::new(),
            });
        }
        o
    }
}

// ---------------------------------------------------------------------------------------
// The guest, in its own process

/// Child side: waits for `go` on stdin, runs the demo guest for SECS, prints its counters.
fn guest_main(spec: &str) {
    let (secs, work) = spec.split_once(':').expect("SECS:WORK");
    let secs: f64 = secs.parse().expect("SECS");
    let work: u32 = work.parse().expect("WORK");
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("go");
    let (tx, rx) = mpsc::channel();
    let guest = DemoGuest::start(
        DemoConfig {
            work_exits_per_irq: work,
            ..DemoConfig::default()
        },
        tx,
    )
    .expect("demo guest");
    let t0 = monotonic_ns();
    let cpu0 = cpu_ns();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let stats = guest.stop().expect("demo guest stop");
    let elapsed = monotonic_ns() - t0;
    let cpu = cpu_ns() - cpu0;
    let lat: Vec<u64> = rx
        .try_iter()
        .map(|s| s.acked_ns.saturating_sub(s.raised_ns))
        .collect();
    let out = serde_json::json!({
        "work_exits": stats.work_exits,
        "acked": stats.acked,
        "raised": stats.raised,
        "elapsed_ns": elapsed,
        "cpu_ns": cpu,
        "ack_p50_ns": percentile(&lat, 0.5),
    });
    println!("{out}");
}

/// CPU time (user + system) of this process's threads: the vCPU thread's exits, and what
/// the tracers' in-kernel handlers add to them, whatever else runs on the machine.
fn cpu_ns() -> u64 {
    // SAFETY: all-zero is a valid rusage to be filled in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out pointer for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Guest {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Guest {
    fn spawn(secs: f64, work: u32) -> Guest {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(GUEST_ENV, format!("{secs}:{work}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the guest process");
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("guest ready");
        assert_eq!(line.trim(), "ready");
        Guest {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) {
        self.stdin.write_all(b"go\n").expect("guest go");
    }

    fn result(mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("guest result");
        let _ = self.child.wait();
        serde_json::from_str(&line).expect("guest JSON")
    }
}

// ---------------------------------------------------------------------------------------
// The tracers

#[derive(Clone, Debug)]
enum Tracer {
    None,
    Kvmtrace(KvmtraceBin),
    Bpftrace,
    Perf,
    Ftrace,
}

impl Tracer {
    fn label(&self) -> String {
        match self {
            Tracer::None => "untraced".to_string(),
            Tracer::Kvmtrace(k) => format!("kvmtrace record ({})", k.label),
            Tracer::Bpftrace => "bpftrace count".to_string(),
            Tracer::Perf => "perf record -a".to_string(),
            Tracer::Ftrace => "ftrace trace_pipe".to_string(),
        }
    }
}

struct Env {
    tracepoints: Vec<(&'static str, &'static str)>,
    tracefs: PathBuf,
    tmp: PathBuf,
    secs: f64,
    work: u32,
}

/// A running tracer, stopped (and cleaned up) on drop.
struct Running(Option<Inner>);

enum Inner {
    Child {
        child: Child,
        stderr: Option<mpsc::Receiver<String>>,
    },
    Ftrace {
        cat: Child,
        instance: PathBuf,
    },
}

fn sigint(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we have not reaped: it is ours.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

impl Running {
    /// Stops it; returns what it printed on stderr (kvmtrace's summary).
    fn stop(&mut self) -> Vec<String> {
        match self.0.take() {
            None => Vec::new(),
            Some(Inner::Child { mut child, stderr }) => {
                sigint(&child);
                let deadline = Instant::now() + Duration::from_secs(30);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
                stderr.map(|rx| rx.try_iter().collect()).unwrap_or_default()
            }
            Some(Inner::Ftrace { mut cat, instance }) => {
                let _ = std::fs::write(instance.join("tracing_on"), "0");
                let _ = cat.kill();
                let _ = cat.wait();
                // Removing an instance also disables its events.
                let _ = std::fs::remove_dir(&instance);
                Vec::new()
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lines of a child's stderr, as they come.
fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn start_kvmtrace(env: &Env, k: &KvmtraceBin, pid: u32) -> Running {
    let mut child = Command::new(&k.path)
        .args(["record", "--force", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(env.tmp.join("capture.kvmtrace"))
        .args(&k.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", k.path.display()));
    let rx = lines_of(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("recording to") => break,
            Ok(l) => seen.push(l),
            Err(_) if Instant::now() > deadline => {
                panic!("kvmtrace did not start within 30 s: {seen:?}")
            }
            Err(_) => {
                if child.try_wait().ok().flatten().is_some() {
                    panic!("kvmtrace exited at start: {seen:?}");
                }
            }
        }
    }
    Running(Some(Inner::Child {
        child,
        stderr: Some(rx),
    }))
}

fn start_bpftrace(env: &Env) -> Running {
    let probes: Vec<String> = env
        .tracepoints
        .iter()
        .map(|(c, n)| format!("tracepoint:{c}:{n}"))
        .collect();
    let script = format!("{} {{ @[probe] = count(); }}", probes.join(","));
    let before = prog_ids();
    let child = Command::new("bpftrace")
        .arg("-e")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace (installed by `cargo xtask setup`)");
    // Ready once all its programs are loaded (it attaches each right after loading it).
    let deadline = Instant::now() + Duration::from_secs(60);
    while prog_ids().difference(&before).count() < env.tracepoints.len() {
        assert!(Instant::now() < deadline, "bpftrace did not attach in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    Running(Some(Inner::Child {
        child,
        stderr: None,
    }))
}

fn start_perf(env: &Env) -> Running {
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-a", "-q", "-o"])
        .arg(env.tmp.join("perf.data"));
    for (c, n) in &env.tracepoints {
        cmd.arg("-e").arg(format!("{c}:{n}"));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf (installed by `cargo xtask setup`)");
    // perf says nothing when it is ready: give it time to open its events on every CPU.
    std::thread::sleep(Duration::from_millis(1500));
    Running(Some(Inner::Child {
        child,
        stderr: None,
    }))
}

fn start_ftrace(env: &Env) -> Running {
    let instance = env.tracefs.join("instances/kvmtrace-bench");
    if instance.exists() {
        let _ = std::fs::remove_dir(&instance);
    }
    std::fs::create_dir(&instance).expect("a tracefs instance");
    for (c, n) in &env.tracepoints {
        let en = instance.join("events").join(c).join(n).join("enable");
        std::fs::write(&en, "1").unwrap_or_else(|e| panic!("{}: {e}", en.display()));
    }
    let out = std::fs::File::create(env.tmp.join("ftrace.txt")).expect("ftrace output");
    let cat = Command::new("cat")
        .arg(instance.join("trace_pipe"))
        .stdout(out)
        .spawn()
        .expect("cat");
    std::thread::sleep(Duration::from_millis(200));
    Running(Some(Inner::Ftrace { cat, instance }))
}

// ---------------------------------------------------------------------------------------
// One run

/// Per program name: (run_time_ns, runs).
type ProgCosts = BTreeMap<String, (u64, u64)>;

#[derive(Debug, Default)]
struct RunResult {
    work_exits: u64,
    elapsed_ns: u64,
    cpu_ns: u64,
    ack_p50_ns: u64,
    /// kvmtrace: events written and dropped.
    events: Option<u64>,
    drops: Option<u64>,
    /// With stats on: (run_time_ns, runs) per program, by tracepoint name for kvmtrace's,
    /// `bpftrace:NAME` for bpftrace's.
    costs: ProgCosts,
}

impl RunResult {
    fn ns_per_exit(&self) -> f64 {
        self.elapsed_ns as f64 / self.work_exits.max(1) as f64
    }

    /// CPU time of the guest's process per exit.
    fn cpu_per_exit(&self) -> f64 {
        self.cpu_ns as f64 / self.work_exits.max(1) as f64
    }
}

fn run_once(env: &Env, tracer: &Tracer, with_bpftrace: bool) -> RunResult {
    let mut guest = Guest::spawn(env.secs, env.work);
    let ids0 = prog_ids();
    let mut running = match tracer {
        Tracer::None => Running(None),
        Tracer::Kvmtrace(k) => start_kvmtrace(env, k, guest.pid()),
        Tracer::Bpftrace => start_bpftrace(env),
        Tracer::Perf => start_perf(env),
        Tracer::Ftrace => start_ftrace(env),
    };
    let ids1 = prog_ids();
    let mut extra = with_bpftrace.then(|| start_bpftrace(env));
    let ids2 = prog_ids();
    let ours: BTreeSet<u32> = ids1.difference(&ids0).copied().collect();
    let theirs: BTreeSet<u32> = ids2.difference(&ids1).copied().collect();
    let before = prog_stats();
    guest.go();
    let g = guest.result();
    let after = prog_stats();
    if let Some(b) = &mut extra {
        b.stop();
    }
    let stderr = running.stop();
    let mut r = RunResult {
        work_exits: g["work_exits"].as_u64().unwrap_or(0),
        elapsed_ns: g["elapsed_ns"].as_u64().unwrap_or(0),
        cpu_ns: g["cpu_ns"].as_u64().unwrap_or(0),
        ack_p50_ns: g["ack_p50_ns"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    if let Tracer::Kvmtrace(_) = tracer {
        // "kvmtrace: N events in S s to F (stopped by ...); dropped: K in the kernel, M undecodable"
        let summary = stderr.iter().find(|l| l.contains(" events in ")).cloned();
        let num_after = |l: &str, pat: &str| -> Option<u64> {
            let at = l.find(pat)? + pat.len();
            l[at..]
                .split_whitespace()
                .next()?
                .trim_end_matches(',')
                .parse()
                .ok()
        };
        if let Some(l) = summary {
            r.events = num_after(&l, "kvmtrace: ");
            r.drops = num_after(&l, "dropped: ");
        }
    }
    {
        for (set, prefix) in [(&ours, ""), (&theirs, "bpftrace:")] {
            for id in set {
                let (Some(a), Some(b)) = (after.get(id), before.get(id)) else {
                    continue;
                };
                // bpftrace's programs carry no BTF, so the kernel keeps only 15 characters
                // of their names: match those to the tracepoint names.
                let short = a.0.trim_end_matches("_btf");
                let full = env
                    .tracepoints
                    .iter()
                    .map(|(_, n)| *n)
                    .find(|n| *n == short || (short.len() == 15 && n.starts_with(short)))
                    .unwrap_or(short);
                let name = format!("{prefix}{full}");
                let e = r.costs.entry(name).or_default();
                e.0 += a.1 - b.1;
                e.1 += a.2 - b.2;
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// bpftool, sysctl, /proc

/// Ids of the loaded BPF programs.
fn prog_ids() -> BTreeSet<u32> {
    prog_stats().keys().copied().collect()
}

/// id -> (full name, run_time_ns, run_cnt), from `bpftool prog show -j`.
fn prog_stats() -> BTreeMap<u32, (String, u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| matches!(p["type"].as_str(), Some("tracepoint" | "tracing")))
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

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn set_bpf_stats(on: bool) -> String {
    let path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, if on { "1" } else { "0" }).expect("kernel.bpf_stats_enabled");
    old.trim().to_string()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    s[((s.len() - 1) as f64 * q).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------
// Output

fn print_tables(
    opts: &Options,
    env: &Env,
    tracers: &[Tracer],
    runs: &BTreeMap<usize, Vec<RunResult>>,
    costs: &BTreeMap<String, Vec<ProgCosts>>,
    load_before: &str,
    load_after: &str,
) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\n## Exit loop under each tracer ({} rounds x {:.1} s, {} work exits per interrupt)\n",
        opts.rounds, env.secs, env.work
    );
    println!(
        "{} CPUs, {cpu}, Linux {}; load average before {load_before}, after {load_after}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    );
    let base: Vec<f64> = runs
        .get(&0)
        .map(|rs| rs.iter().map(RunResult::ns_per_exit).collect())
        .unwrap_or_default();
    let base_cpu: Vec<f64> = runs
        .get(&0)
        .map(|rs| rs.iter().map(RunResult::cpu_per_exit).collect())
        .unwrap_or_default();
    println!("| tracer | ns/exit | slowdown | guest CPU ns/exit | CPU added per exit | ns/exit per round | interrupt p50 us | kvmtrace events, drops |");
    println!("|---|---:|---:|---:|---:|---|---:|---|");
    // The change of each round against the same round's untraced run, then the median.
    let vs_base = |v: &[f64], b: &[f64], pct: bool| -> Vec<f64> {
        v.iter()
            .zip(b)
            .map(|(n, b)| if pct { 100.0 * (n / b - 1.0) } else { n - b })
            .collect()
    };
    for (t, tracer) in tracers.iter().enumerate() {
        let Some(rs) = runs.get(&t) else { continue };
        let ns: Vec<f64> = rs.iter().map(RunResult::ns_per_exit).collect();
        let cpu: Vec<f64> = rs.iter().map(RunResult::cpu_per_exit).collect();
        let p50: Vec<f64> = rs.iter().map(|r| r.ack_p50_ns as f64 / 1e3).collect();
        let ev = match rs.first().and_then(|r| r.events) {
            Some(_) => {
                let e: Vec<f64> = rs.iter().map(|r| r.events.unwrap_or(0) as f64).collect();
                let d: u64 = rs.iter().map(|r| r.drops.unwrap_or(0)).sum();
                format!("{:.0}/s, {d}", median(&e) / env.secs)
            }
            None => String::new(),
        };
        let (slow, added) = if t == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:+.1} %", median(&vs_base(&ns, &base, true))),
                format!("{:+.0} ns", median(&vs_base(&cpu, &base_cpu, false))),
            )
        };
        println!(
            "| {} | {:.0} | {slow} | {:.0} | {added} | {} | {:.1} | {ev} |",
            tracer.label(),
            median(&ns),
            median(&cpu),
            ns.iter()
                .map(|n| format!("{n:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            median(&p50),
        );
    }
    if costs.is_empty() {
        return;
    }
    println!("\n## BPF run time per event (kernel.bpf_stats_enabled=1, same runs, medians of {} rounds)\n", opts.cost_rounds);
    // In the order given on the command line.
    let labels: Vec<&String> = opts
        .kvmtrace
        .iter()
        .map(|k| &k.label)
        .filter(|l| costs.contains_key(*l))
        .collect();
    let mut head = "| tracepoint | runs/s |".to_string();
    let mut rule = "|---|---:|".to_string();
    for l in &labels {
        head += &format!(" kvmtrace ({l}) ns |");
        rule += "---:|";
    }
    head += " bpftrace count ns |";
    rule += "---:|";
    println!("{head}\n{rule}");
    for (c, n) in &env.tracepoints {
        let mut row = format!("| {c}:{n} |");
        let mut any = false;
        let mut runs_per_s = Vec::new();
        let mut theirs = Vec::new();
        let mut cells = Vec::new();
        for l in &labels {
            let per: Vec<f64> = costs[*l]
                .iter()
                .filter_map(|pc| pc.get(*n).copied())
                .filter(|(_, cnt)| *cnt > 0)
                .map(|(t, cnt)| {
                    runs_per_s.push(cnt as f64 / env.secs);
                    t as f64 / cnt as f64
                })
                .collect();
            any |= !per.is_empty();
            cells.push(if per.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", median(&per))
            });
            theirs.extend(
                costs[*l]
                    .iter()
                    .filter_map(|pc| pc.get(&format!("bpftrace:{n}")).copied())
                    .filter(|(_, cnt)| *cnt > 0)
                    .map(|(t, cnt)| t as f64 / cnt as f64),
            );
        }
        if !any {
            continue;
        }
        row += &format!(" {:.0} |", median(&runs_per_s));
        for c in cells {
            row += &format!(" {c} |");
        }
        row += &if theirs.is_empty() {
            " - |".to_string()
        } else {
            format!(" {:.0} |", median(&theirs))
        };
        println!("{row}");
    }
}
