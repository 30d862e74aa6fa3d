//! Privileged: every probe loads and attaches on this kernel, and field offsets come from
//! the live format files.

#[path = "support/privileged.rs"]
mod privileged;

use kvmtrace::probes::{tracefs::Tracefs, ProbeOptions, Probes};
use kvmtrace_common::Kind;

#[test]
fn every_available_tracepoint_gets_an_attached_probe() {
    if !privileged::privileged("every_available_tracepoint_gets_an_attached_probe") {
        return;
    }
    let probes = Probes::load(&ProbeOptions::default()).expect("load and attach");
    assert_eq!(probes.status.len(), kvmtrace_common::NTRACEPOINTS);
    let tracefs = Tracefs::find_or_mount().unwrap();
    for (kind, st) in Kind::ALL.iter().zip(&probes.status) {
        let exists = tracefs.event_dir(kind.category(), kind.name()).is_dir();
        assert_eq!(
            st.tracepoint,
            format!("{}:{}", kind.category(), kind.name())
        );
        if exists {
            assert!(
                st.attached,
                "{} exists but did not attach: {:?}",
                st.tracepoint, st.reason
            );
            assert!(
                st.missing_fields.is_empty(),
                "{}: {:?}",
                st.tracepoint,
                st.missing_fields
            );
        } else {
            assert!(!st.attached);
            assert!(st
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("does not exist"));
        }
    }
    // This kernel has all of them (ENVIRONMENT.md); a new kernel that loses one should
    // be noticed here.
    assert!(
        probes.status.iter().all(|s| s.attached),
        "{:#?}",
        probes.status
    );
    // The offsets handed to the programs are the ones in the live format file, read here
    // by a second, minimal parser: the `field:...next_pid;\toffset:N;` line.
    let text =
        std::fs::read_to_string(tracefs.event_dir("sched", "sched_switch").join("format")).unwrap();
    let offset: usize = text
        .lines()
        .find(|l| l.contains(" next_pid;"))
        .and_then(|l| l.split("offset:").nth(1))
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("next_pid's offset in the format file");
    let fmt = &probes.formats["sched_switch"];
    assert_eq!(fmt.field("next_pid").unwrap().offset, offset);
    assert_eq!(probes.drops(), 0);
}

/// Our programs must not hide events from other perf users of the same tracepoints (a
/// program attached through perf that returns 0 drops the event for all of them).
#[test]
fn perf_still_sees_the_tracepoints_while_kvmtrace_is_attached() {
    if !privileged::privileged("perf_still_sees_the_tracepoints_while_kvmtrace_is_attached") {
        return;
    }
    let probes = Probes::load(&ProbeOptions::default()).expect("load and attach");
    assert!(probes
        .status
        .iter()
        .any(|s| s.tracepoint == "sched:sched_switch" && s.attached));
    let out = std::process::Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "sched:sched_switch",
            "-a",
            "--",
            "sleep",
            "0.5",
        ])
        .output()
        .expect("perf (installed by `cargo xtask setup`)");
    let text = String::from_utf8_lossy(&out.stderr);
    let count: u64 = text
        .lines()
        .find(|l| l.contains("sched:sched_switch"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in perf's output: {text}"));
    assert!(
        count > 0,
        "perf counted no context switch while kvmtrace was attached"
    );
    drop(probes);
}

/// The BTF programs (typed arguments, `task_struct` fields at BTF offsets) and the classic
/// ones (the perf record at format-file offsets) must produce the same records: both sets are
/// attached at once to the same demo guest and their streams compared event by event.
#[test]
fn btf_and_classic_programs_record_the_same_fields() {
    use kvmtrace::source::demo::{DemoConfig, DemoGuest};
    use kvmtrace_analysis::capture::ProbeMode;
    use kvmtrace_common::Event;
    use std::time::{Duration, Instant};

    if !privileged::privileged("btf_and_classic_programs_record_the_same_fields") {
        return;
    }
    let pid = std::process::id();
    let load = |btf: bool| {
        Probes::load(&ProbeOptions {
            pids: vec![pid],
            btf,
            // Gated exits depend on when each set's programs read the clock.
            all_exits: true,
            ..Default::default()
        })
        .expect("load and attach")
    };
    let mut classic = load(false);
    let mut typed = load(true);
    assert!(classic
        .status
        .iter()
        .all(|s| !s.attached || s.mode == Some(ProbeMode::Tracepoint)));
    // Every tracepoint but the four whose fields vendor code computes (kvm_exit, kvm_entry,
    // kvm_page_fault, kvm_eoi) and the hrtimer ones runs as tp_btf; KVM's only when KVM is
    // built in (its tracepoints are then in vmlinux's BTF), as on the development machines.
    let kvm_in_vmlinux =
        kvmtrace::probes::btf::KernelBtf::from_sys_fs().is_ok_and(|b| b.has_tracepoint("kvm_pio"));
    for st in &typed.status {
        let vendor = [
            "kvm:kvm_exit",
            "kvm:kvm_entry",
            "kvm:kvm_page_fault",
            "kvm:kvm_eoi",
            // Kept classic (probes::btf_wanted says why).
            "timer:hrtimer_expire_entry",
            "timer:hrtimer_expire_exit",
            "timer:hrtimer_start",
        ]
        .contains(&st.tracepoint.as_str());
        let btf = !vendor && (kvm_in_vmlinux || !st.tracepoint.starts_with("kvm:"));
        let want = if btf {
            ProbeMode::TpBtf
        } else {
            ProbeMode::Tracepoint
        };
        assert_eq!(st.mode, Some(want), "{st:?}");
    }
    let mut rings = [classic.take_ring().unwrap(), typed.take_ring().unwrap()];
    let (tx, _rx) = std::sync::mpsc::channel();
    let guest = DemoGuest::start(DemoConfig::default(), tx).expect("demo guest");
    classic.add_vcpu(guest.vcpu_tid(), pid).unwrap();
    typed.add_vcpu(guest.vcpu_tid(), pid).unwrap();
    // This test's guest only: the other tests here run beside it in this process, one with
    // a demo guest of its own, started before this test's probes were both attached.
    let (vcpu, irq) = (guest.vcpu_tid(), guest.irq_tid());
    let mut got: [Vec<Event>; 2] = [Vec::new(), Vec::new()];
    let drain = |rings: &mut [aya::maps::RingBuf<aya::maps::MapData>; 2],
                 got: &mut [Vec<Event>; 2]| {
        for (r, out) in rings.iter_mut().zip(got.iter_mut()) {
            while let Some(item) = r.next() {
                out.extend(Event::from_le_bytes(&item));
            }
        }
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
        drain(&mut rings, &mut got);
    }
    guest.stop().expect("demo stop");
    drain(&mut rings, &mut got);
    assert_eq!((classic.drops(), typed.drops()), (0, 0));

    // The vCPU thread's own KVM events, and the scheduler's events about it. (Events that
    // depend on the per-CPU filter state may differ at the edges: each program set keeps
    // its own.)
    let about_vcpu = |e: &Event| {
        let kind = Kind::try_from(e.kind).unwrap();
        if kind.is_vcpu_context() {
            return e.tid == vcpu;
        }
        match e.payload() {
            Some(kvmtrace_common::Payload::SchedSwitch(s)) => {
                s.prev_pid == u64::from(vcpu) || s.next_pid == u64::from(vcpu)
            }
            Some(kvmtrace_common::Payload::SchedWakeup(w)) => w.pid == u64::from(vcpu),
            Some(kvmtrace_common::Payload::KvmSetIrq(_))
            | Some(kvmtrace_common::Payload::KvmPicSetIrq(_))
            | Some(kvmtrace_common::Payload::KvmIoapicSetIrq(_)) => e.tid == irq,
            _ => false,
        }
    };
    // Everything but the time, which the two programs read a few hundred ns apart; kind by
    // kind, in each kind's order (events of different CPUs reach the two rings in different
    // orders).
    let key = |e: &Event| (e.kind, e.tid, e.tgid, e.cpu, e.missing, e.slots);
    let [a, b] = got.map(|v| {
        let mut k: Vec<_> = v.iter().filter(|e| about_vcpu(e)).map(key).collect();
        // Stable: each kind keeps its own order.
        k.sort_by_key(|k| k.0);
        k
    });
    assert!(a.len() > 1000, "only {} events", a.len());
    for k in [
        Kind::KvmPio,
        Kind::KvmUserspaceExit,
        Kind::SchedSwitch,
        Kind::SchedWakeup,
    ] {
        assert!(a.iter().any(|e| e.0 == k as u16), "no {k:?}");
    }
    // The same records, but those the kernel ran no program for (a classic tracepoint's
    // program is skipped while another BPF program, or a map syscall, holds the CPU's
    // guard; the kernel counts each such miss).
    let misses = classic.recursion_misses() + typed.recursion_misses();
    let mut only = std::collections::BTreeMap::new();
    for k in &a {
        *only.entry(k).or_insert(0i64) += 1;
    }
    for k in &b {
        *only.entry(k).or_insert(0i64) -= 1;
    }
    only.retain(|_, n| *n != 0);
    let differ: i64 = only.values().map(|n| n.abs()).sum();
    assert!(
        differ as u64 <= misses,
        "the BTF and classic records differ in {differ} records ({} only in one set, first \
         {:?}) with {misses} recursion misses",
        only.len(),
        only.iter().next()
    );
    if misses == 0 {
        // Nothing missed: the same records in the same order, kind by kind.
        let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
        assert_eq!(
            first_diff.map(|i| (&a[i], &b[i])),
            None,
            "the BTF and classic records differ"
        );
        assert_eq!(a.len(), b.len());
    } else {
        eprintln!("{differ} records in one set only, {misses} recursion misses");
    }
}

/// A ring buffer far too small for the demo guest: records are lost, and the drop counter
/// says exactly how many: every record a program tried to send was either read or counted.
#[test]
fn a_full_ring_counts_exactly_what_it_drops() {
    use kvmtrace::source::demo::{DemoConfig, DemoGuest};
    use kvmtrace_common::Event;
    use std::time::{Duration, Instant};

    if !privileged::privileged("a_full_ring_counts_exactly_what_it_drops") {
        return;
    }
    let pid = std::process::id();
    let mut probes = Probes::load(&ProbeOptions {
        pids: vec![pid],
        // One page: 56 records.
        ring_bytes: 4096,
        ..Default::default()
    })
    .expect("load and attach");
    let mut ring = probes.take_ring().unwrap();
    let (tx, _rx) = std::sync::mpsc::channel();
    let guest = DemoGuest::start(
        DemoConfig {
            work_exits_per_irq: 50,
            ..DemoConfig::default()
        },
        tx,
    )
    .expect("demo guest");
    probes.add_vcpu(guest.vcpu_tid(), pid).unwrap();
    let mut received = 0u64;
    let mut work_pio = 0u64;
    let mut drain = |ring: &mut aya::maps::RingBuf<aya::maps::MapData>| {
        while let Some(item) = ring.next() {
            let e = Event::from_le_bytes(&item).expect("a whole record");
            received += 1;
            if e.get::<kvmtrace_common::ev::KvmPio>()
                .is_some_and(|p| p.port == u64::from(kvmtrace::source::demo::WORK_PORT))
            {
                work_pio += 1;
            }
        }
    };
    // Read rarely: the ring fills between reads.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
        drain(&mut ring);
    }
    let stats = guest.stop().expect("demo stop");
    // No program runs after this: the counters are final, and what is left is drained.
    probes.detach();
    drain(&mut ring);
    let (emitted, drops) = (probes.emitted(), probes.drops());
    assert!(
        drops > 1000,
        "only {drops} drops: the ring did not overflow"
    );
    assert_eq!(
        received + drops,
        emitted,
        "{received} read + {drops} dropped != {emitted} sent"
    );
    // Every work exit made a kvm_pio on the work port: each was read or dropped.
    assert!(work_pio <= stats.work_exits && stats.work_exits <= work_pio + drops);
}
