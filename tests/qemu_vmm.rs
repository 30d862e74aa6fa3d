//! Privileged, real kernel, a real VMM: QEMU with `-accel kvm` running its own firmware
//! (SeaBIOS, no disk, no NIC), recorded by `kvmtrace record -p` from its first instruction.
//! QEMU starts paused (`-S`: its vCPU threads exist but have never entered KVM_RUN, so
//! KVM's debugfs says pid 0 for them) and is let go over QMP once kvmtrace records.
//!
//! What is checked comes from QEMU and SeaBIOS, not from kvmtrace:
//! - the vCPU threads are the ones QEMU runs its CPUs on (QMP `query-cpus-fast`), named
//!   `CPU n/KVM` (`-name ...,debug-threads=on`, read from /proc), with vCPU id n, and only
//!   they (without debug-threads=on too, the ids then from KVM's debugfs); QEMU's other threads
//!   (main loop, `call_rcu`, the monitor's I/O thread, KVM's `kvm-nx-lpage-re` worker)
//!   are never vCPUs, and the VM carries its `-name`;
//! - SeaBIOS finds QEMU by writing the fw_cfg selector port 0x510 (SeaBIOS
//!   src/fw/paravirt.c `qemu_cfg_detect`, `PORT_QEMU_CFG_CTL`) from the boot vCPU, an
//!   exit QEMU handles in userspace (KVM_EXIT_IO);
//! - SeaBIOS brings up the second vCPU with INIT then SIPI to all but itself (src/fw/smp.c
//!   `smp_scan`: ICR 0xc4500, then 0xc46xx), which KVM traces as `kvm_apic_ipi` and
//!   `kvm_apic_accept_irq` for APIC id 1 (lapic.c `kvm_apic_send_ipi`, `__apic_accept_irq`),
//!   after which vCPU 1's thread runs guest code (its first KVM event follows the SIPI);
//! - INIT and SIPI are not interrupts to a guest: vCPU 1, which nothing else targets
//!   (every accept for APIC id 1 in the capture is INIT or SIPI), has no
//!   interrupt-to-guest sample;
//! - no event is dropped.

#[path = "support/privileged.rs"]
mod privileged;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvmtrace_analysis::capture::CaptureReader;
use kvmtrace_common::{ev, Event, Kind};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

/// One QEMU at a time: the PIT test pins threads to CPUs and counts raises on a CPU the
/// others would share (and two cores are few).
static ONE_QEMU: std::sync::Mutex<()> = std::sync::Mutex::new(());
const QEMU: &str = "qemu-system-x86_64";
const VM_NAME: &str = "kvmtrace-qemu";

/// QEMU, killed when dropped.
struct Qemu {
    child: Child,
    qmp: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.qmp);
    }
}

fn tmpdir(what: &str) -> PathBuf {
    // One directory per test: the tests of this file run in parallel.
    let d = std::env::temp_dir().join(format!("kvmtrace-qemu-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Is QEMU installed (`cargo xtask setup` installs it)? Missing under CI is a failure.
fn have_qemu() -> bool {
    let ok = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = format!("{QEMU} is not installed (run `cargo xtask setup`)");
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{msg}; CI=true, so this is a failure"
        );
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

fn start_qemu(dir: &Path, debug_threads: bool) -> Qemu {
    let qmp = dir.join("qmp.sock");
    let name = if debug_threads {
        format!("{VM_NAME},debug-threads=on")
    } else {
        VM_NAME.to_string()
    };
    let child = Command::new(QEMU)
        .args(["-accel", "kvm", "-S", "-name", &name])
        .args(["-m", "64", "-smp", "2", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start QEMU");
    let q = Qemu { child, qmp };
    let t0 = Instant::now();
    while !q.qmp.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "QEMU made no QMP socket in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    q
}

/// QEMU's threads from /proc: tid -> comm.
fn threads(pid: u32) -> BTreeMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("QEMU's threads")
        .filter_map(|e| {
            let tid = e.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            Some((tid, comm.trim_end().to_string()))
        })
        .collect()
}

/// A QMP connection.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    /// Connects and leaves capabilities negotiation (QMP answers once the machine is built).
    fn connect(path: &Path) -> Qmp {
        let sock = UnixStream::connect(path).expect("QMP");
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut q = Qmp {
            r: BufReader::new(sock.try_clone().unwrap()),
            w: sock,
        };
        let mut greeting = String::new();
        q.r.read_line(&mut greeting).unwrap();
        assert!(greeting.contains("QMP"), "{greeting}");
        q.cmd("qmp_capabilities");
        q
    }

    /// One command, its answer's `return` (events QEMU sends meanwhile are skipped).
    fn cmd(&mut self, cmd: &str) -> serde_json::Value {
        writeln!(self.w, "{{\"execute\": \"{cmd}\"}}").unwrap();
        self.w.flush().unwrap();
        loop {
            let mut line = String::new();
            assert!(
                self.r.read_line(&mut line).unwrap() > 0,
                "QMP closed on {cmd}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v.get("event").is_none() {
                assert!(v.get("error").is_none(), "QMP {cmd}: {v}");
                return v["return"].clone();
            }
        }
    }
}

/// One recording of QEMU from its first instruction.
struct Run {
    pid: u32,
    /// QEMU's vCPU threads by its own account (`query-cpus-fast`): tid -> cpu-index (with
    /// -smp 2 and no topology, the APIC id, which is KVM's vcpu_id).
    vcpus: BTreeMap<u32, u32>,
    /// QEMU's threads and their names from /proc, as it started.
    threads: BTreeMap<u32, String>,
    cap: PathBuf,
    dir: PathBuf,
}

/// Starts QEMU paused, records it with `kvmtrace record -p` for 4 s, lets it go once
/// kvmtrace records, then quits it. `setup` runs before kvmtrace starts, given QEMU's pid.
fn record_qemu<T>(test: &str, debug_threads: bool, setup: impl FnOnce(u32) -> T) -> (Run, T) {
    let _one = ONE_QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tmpdir(test);
    let qemu = start_qemu(&dir, debug_threads);
    let pid = qemu.child.id();
    let mut qmp = Qmp::connect(&qemu.qmp);
    let vcpus: BTreeMap<u32, u32> = qmp
        .cmd("query-cpus-fast")
        .as_array()
        .expect("CPUs")
        .iter()
        .map(|c| {
            (
                c["thread-id"].as_u64().unwrap() as u32,
                c["cpu-index"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert_eq!(vcpus.len(), 2, "QEMU's vCPUs: {vcpus:?}");
    let threads = threads(pid);
    let prepared = setup(pid);

    let cap = dir.join("qemu.kvmtrace");
    let mut rec = Command::new(BIN)
        .args(["record", "-p", &pid.to_string(), "--duration", "4", "-o"])
        .arg(&cap)
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvmtrace record");
    let (tx, rx) = mpsc::channel();
    let stderr = rec.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Let QEMU go once the probes are attached.
    let t0 = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60).saturating_sub(t0.elapsed()))
            .expect("kvmtrace says it records within 60 s");
        if line.contains("recording to") {
            break;
        }
    }
    qmp.cmd("cont");
    let status = rec.wait().expect("kvmtrace record");
    let err = reader.join().unwrap();
    assert!(status.success(), "kvmtrace record failed:\n{err}");
    assert!(err.contains("dropped: 0 in the kernel"), "{err}");
    qmp.cmd("quit");
    drop(qemu);
    (
        Run {
            pid,
            vcpus,
            threads,
            cap,
            dir,
        },
        prepared,
    )
}

/// `kvmtrace report --json` of a capture.
fn report(cap: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["report", "--json"])
        .arg(cap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The report's vCPU rows: tid -> vCPU id, each in `pid`'s VM named [`VM_NAME`].
fn report_vcpus(j: &serde_json::Value, pid: u32) -> BTreeMap<u32, u32> {
    j["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["pid"], pid, "{v}");
            assert_eq!(v["vm_name"], VM_NAME, "{v}");
            (
                v["tid"].as_u64().unwrap() as u32,
                v["vcpu"].as_u64().expect("a vCPU id") as u32,
            )
        })
        .collect()
}

fn events(cap: &Path) -> Vec<Event> {
    let mut r = CaptureReader::open(cap).expect("the capture");
    let mut out = Vec::new();
    while let Some(e) = r.next_event().expect("a complete capture") {
        out.push(e);
    }
    out.sort_by_key(|e| e.ts_ns);
    out
}

fn is_vcpu_context(e: &Event) -> bool {
    Kind::try_from(e.kind).is_ok_and(|k| k.is_vcpu_context())
}

#[test]
fn seabios_under_qemu_kvm_is_seen_with_qemus_own_threads() {
    if !privileged::privileged("seabios_under_qemu_kvm_is_seen_with_qemus_own_threads")
        || !have_qemu()
    {
        return;
    }
    let (run, ()) = record_qemu("seabios", true, |_| ());
    let (pid, cap) = (run.pid, &run.cap);
    // QEMU named its vCPU threads `CPU n/KVM` (debug-threads=on), n its cpu-index.
    let named: BTreeMap<u32, u32> = run
        .threads
        .iter()
        .filter_map(|(&tid, comm)| {
            let n = comm.strip_prefix("CPU ")?.strip_suffix("/KVM")?;
            Some((tid, n.parse().ok()?))
        })
        .collect();
    assert_eq!(named, run.vcpus, "QEMU's threads: {:?}", run.threads);

    // The report's vCPUs are QEMU's vCPU threads, in QEMU's VM.
    let j = report(cap);
    assert_eq!(
        report_vcpus(&j, pid),
        named,
        "the report's vCPU threads and ids"
    );
    let by_id: BTreeMap<u32, u32> = named.iter().map(|(&t, &n)| (n, t)).collect();
    let (bsp, ap) = (by_id[&0], by_id[&1]);

    let evs = events(cap);
    // KVM's vCPU-context events come from the vCPU threads only.
    let from: BTreeSet<u32> = evs
        .iter()
        .filter(|e| is_vcpu_context(e) && e.tgid == pid)
        .map(|e| e.tid)
        .collect();
    assert!(
        from.iter().all(|t| named.contains_key(t)),
        "vCPU-context events from {from:?}, vCPU threads {named:?}"
    );

    // SeaBIOS looks for fw_cfg from the boot vCPU: a write of the selector, handled in QEMU.
    let of = |tid: u32| evs.iter().filter(move |e| e.tid == tid);
    let selector_writes = of(bsp)
        .filter_map(|e| e.get::<ev::KvmPio>())
        .filter(|p| p.port == 0x510 && p.rw == 1)
        .count();
    let io_exits = of(bsp)
        .filter_map(|e| e.get::<ev::KvmUserspaceExit>())
        .filter(|x| x.reason == Some(2))
        .count();
    assert!(selector_writes >= 1, "no fw_cfg selector write");
    assert!(
        io_exits >= selector_writes,
        "{io_exits} KVM_EXIT_IO for {selector_writes} fw_cfg selector writes"
    );

    // SMP bring-up: INIT, then SIPI, to all but the boot vCPU; then the AP runs.
    let mode = |icr: u64| (icr >> 8) & 7;
    let ipis: Vec<u64> = of(bsp)
        .filter_map(|e| e.get::<ev::KvmApicIpi>())
        .map(|i| i.icr_low)
        .collect();
    let init = ipis.iter().position(|&i| mode(i) == 5);
    let sipi = ipis.iter().position(|&i| mode(i) == 6);
    assert!(
        matches!((init, sipi), (Some(a), Some(b)) if a < b),
        "INIT then SIPI: {ipis:x?}"
    );
    assert!(
        ipis.iter().all(|&i| (i >> 18) & 3 == 3),
        "to all excluding self: {ipis:x?}"
    );
    let accepts: Vec<(u64, u64)> = evs
        .iter()
        .filter_map(|e| Some((e.ts_ns, e.get::<ev::KvmApicAcceptIrq>()?)))
        .filter(|(_, a)| a.apicid == 1)
        .map(|(ts, a)| (ts, a.dm.map_or(u64::MAX, mode)))
        .collect();
    assert!(
        accepts.iter().all(|&(_, m)| m == 5 || m == 6),
        "APIC id 1 took only INIT and SIPI: {accepts:?}"
    );
    let sipi_at = accepts
        .iter()
        .find(|&&(_, m)| m == 6)
        .map(|&(ts, _)| ts)
        .expect("a SIPI accepted for APIC id 1");
    assert!(
        of(ap).any(|e| e.ts_ns > sipi_at && e.get::<ev::KvmMsr>().is_some()),
        "vCPU 1 ran guest code (SeaBIOS's AP copies the MTRRs) after the SIPI"
    );

    // INIT and SIPI are not interrupts to a guest: vCPU 1 has no sample.
    let v1 = j["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vcpu"] == 1)
        .unwrap();
    assert_eq!(v1["irq_to_guest"]["count"], 0, "{}", v1["irq_to_guest"]);
    std::fs::remove_dir_all(&run.dir).unwrap();
}

/// Without `debug-threads=on` every QEMU thread is called `qemu-system-x86`: the vCPUs are
/// found by their KVM events and their ids come from KVM's debugfs (which kvmtrace mounts
/// when it is not), read once each thread has run KVM_RUN: QEMU starts paused, so at the
/// start KVM's debugfs says pid 0 for both.
#[test]
fn unnamed_qemu_vcpu_threads_get_kvms_ids() {
    if !privileged::privileged("unnamed_qemu_vcpu_threads_get_kvms_ids") || !have_qemu() {
        return;
    }
    let (run, ()) = record_qemu("unnamed", false, |_| ());
    assert!(
        run.vcpus
            .keys()
            .all(|t| run.threads.get(t).is_some_and(|c| !c.contains("KVM"))),
        "QEMU named its threads: {:?}",
        run.threads
    );
    let j = report(&run.cap);
    assert_eq!(report_vcpus(&j, run.pid), run.vcpus);
    std::fs::remove_dir_all(&run.dir).unwrap();
}

/// Pins every QEMU thread (all of `pid`'s tasks) to CPU 0.
fn pin_process(pid: u32, cpu: u32) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset -a -p -c {cpu} {pid}");
}

/// The in-kernel PIT's worker of VM `pid` (i8254.c `kvm_create_pit`: `kvm-pit/<pid>`).
fn kvm_pit_thread(pid: u32) -> u32 {
    let want = format!("kvm-pit/{pid}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|t| {
            std::fs::read_to_string(format!("/proc/{t}/comm")).is_ok_and(|c| c.trim_end() == want)
        })
        .unwrap_or_else(|| panic!("no {want} kernel thread (QEMU runs the PIT in the kernel)"))
}

/// `perf record` of `kvm:kvm_set_irq` on every CPU, in CLOCK_MONOTONIC (the clock of
/// kvmtrace's timestamps), until stopped.
struct PerfRecord {
    child: Child,
    data: PathBuf,
}

impl PerfRecord {
    fn start(dir: &Path) -> PerfRecord {
        let data = dir.join("perf.data");
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-a",
                "-k",
                "CLOCK_MONOTONIC",
                "-e",
                "kvm:kvm_set_irq",
            ])
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf record (cargo xtask setup installs linux-perf)");
        // perf opens its events before it writes anything; give it a moment.
        std::thread::sleep(Duration::from_millis(1500));
        PerfRecord { child, data }
    }

    /// Stops it; the (tid, CLOCK_MONOTONIC ns) of every event, from `perf script`.
    fn stop(mut self) -> Vec<(u32, u64)> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let st = self.child.wait().unwrap();
        // perf writes its file, then raises the signal again to die of it.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            st.success() || st.signal() == Some(libc::SIGINT),
            "perf record: {st}"
        );
        let out = Command::new("perf")
            .args(["script", "--ns", "-F", "tid,time", "-i"])
            .arg(&self.data)
            .output()
            .expect("perf script");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(dir) = self.data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let tid = it.next()?.parse().ok()?;
                let (s, ns) = it.next()?.trim_end_matches(':').split_once('.')?;
                Some((
                    tid,
                    s.parse::<u64>().ok()? * 1_000_000_000 + ns.parse::<u64>().ok()?,
                ))
            })
            .collect()
    }
}

/// The in-kernel PIT raises IRQ 0 from its own kernel thread, `kvm-pit/<QEMU pid>`, whose
/// tgid is not QEMU's. With `-p`, kvmtrace keeps an interrupt event from a task outside the
/// traced VMs only on a CPU where a traced vCPU runs or waits, or from a kernel thread that
/// names a traced VM. Here QEMU's threads are pinned to CPU 0 and the PIT thread to CPU 1:
/// every PIT raise `perf` saw (the reference: `perf record -a -k CLOCK_MONOTONIC`) while
/// kvmtrace recorded is in the capture.
#[test]
fn pit_raises_from_the_kvm_pit_thread_are_kept_on_a_cpu_no_vcpu_uses() {
    if !privileged::privileged("pit_raises_from_the_kvm_pit_thread_are_kept_on_a_cpu_no_vcpu_uses")
        || !have_qemu()
    {
        return;
    }
    let (run, (pit, perf)) = record_qemu("pit", true, |pid| {
        pin_process(pid, 0);
        let pit = kvm_pit_thread(pid);
        let ok = Command::new("taskset")
            .args(["-p", "-c", "1", &pit.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset -p -c 1 {pit}");
        (pit, PerfRecord::start(&tmpdir("pit-perf")))
    });
    let seen = perf.stop();
    let evs = events(&run.cap);
    let (first, last) = (evs[0].ts_ns, evs[evs.len() - 1].ts_ns);
    let ours: Vec<u64> = evs
        .iter()
        .filter(|e| e.tid == pit && e.kind == Kind::KvmSetIrq as u16)
        .map(|e| e.ts_ns)
        .collect();
    // perf's time and the probe's are taken microseconds apart in the same tracepoint
    // call: match within 100 us, away from the capture's edges.
    let theirs: Vec<u64> = seen
        .iter()
        .filter(|&&(tid, ts)| tid == pit && ts > first + 1_000_000 && ts + 1_000_000 < last)
        .map(|&(_, ts)| ts)
        .collect();
    assert!(
        !theirs.is_empty(),
        "perf saw no PIT raise from {pit} while kvmtrace recorded ({} events in all)",
        seen.len()
    );
    let missing: Vec<u64> = theirs
        .iter()
        .copied()
        .filter(|&t| !ours.iter().any(|&o| o.abs_diff(t) < 100_000))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} PIT raises perf saw are not in the capture (first at {:?}); the capture \
         has {} from kvm-pit",
        missing.len(),
        theirs.len(),
        missing.first(),
        ours.len()
    );
    eprintln!(
        "{} PIT raises from kvm-pit/{} on CPU 1, all in the capture",
        theirs.len(),
        run.pid
    );
    // Each PIT tick is a pulse of IRQ 0 (i8254.c `pit_do_work`: kvm_set_irq level 1, then
    // 0), which the PIC takes unless IRQ 0 is masked or already pending (KVM's
    // kvm_pic_set_irq says which: `imr`, `coalesced`). Every pulse KVM says it delivered is
    // one interrupt-to-guest sample of vCPU 0 (the BSP, where ExtINT goes), opened by the
    // raise: the engine routes the kvm-pit thread's raises to its VM by the thread's name.
    let mut delivered = 0u64;
    let mut level = 0;
    for e in evs.iter().filter(|e| e.tid == pit) {
        if let Some(s) = e.get::<ev::KvmSetIrq>() {
            level = s.level;
        } else if let Some(p) = e.get::<ev::KvmPicSetIrq>() {
            if level == 1 && (p.chip, p.pin) == (0, 0) && p.imr & 1 == 0 && p.coalesced == 0 {
                delivered += 1;
            }
        }
    }
    // QEMU's own device models raise nothing here: SeaBIOS with no disk and no NIC only
    // lowers their lines.
    let others: Vec<String> = evs
        .iter()
        .filter(|e| e.tgid == run.pid)
        .filter_map(|e| Some((e.tid, e.get::<ev::KvmSetIrq>()?)))
        .filter(|(_, s)| s.level == 1)
        .map(|(tid, s)| format!("gsi {} from {tid}", s.gsi))
        .collect();
    assert!(others.is_empty(), "other raises: {others:?}");
    let j = report(&run.cap);
    let v0 = j["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vcpu"] == 0)
        .unwrap();
    let samples = v0["irq_to_guest"]["count"].as_u64().unwrap();
    // The last may still be open when the recording ends.
    assert!(
        samples <= delivered && samples + 1 >= delivered,
        "{samples} samples for {delivered} PIT pulses KVM delivered: {}",
        v0["irq_to_guest"]
    );
    std::fs::remove_dir_all(&run.dir).unwrap();
}
