//! Privileged, real kernel: the attribution engine on live events from the demo guest.
//! (a) its interrupt-to-guest latencies agree with the demo VMM's own ground truth;
//! (b) a busy task on the vCPU's CPU is named as the preempting task;
//! (c) a slow VMM shows up as userspace-VMM time.

#[path = "support/hog.rs"]
mod hog;
#[path = "support/privileged.rs"]
mod privileged;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvmtrace::source::demo::DemoConfig;
use kvmtrace::source::session::{Session, SessionOptions};
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::report::latency::{vcpu_latency, worst_samples};

/// One guest at a time: two demo guests on two cores would disturb each other.
static KVM: Mutex<()> = Mutex::new(());

struct Traced {
    engine: Engine,
    vcpu_tid: u32,
    acked: u64,
}

fn trace_demo(cfg: DemoConfig, dur: Duration) -> Traced {
    trace_demo_to(cfg, dur, None)
}

/// Runs the demo under the probes into an engine, and into a capture at `capture` if given.
fn trace_demo_to(cfg: DemoConfig, dur: Duration, capture: Option<&std::path::Path>) -> Traced {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut session = Session::start(&SessionOptions {
            demo: Some(cfg),
            ..Default::default()
        })
        .expect("session");
        let vcpu_tid = session.demo_vcpu_tid().unwrap();
        let mut engine = Engine::new(
            EngineConfig {
                worst: 50,
                ..EngineConfig::default()
            }
            .for_capture(&session.header),
        );
        let mut writer = capture.map(|p| {
            kvmtrace_analysis::capture::CaptureWriter::create(p, true, &session.header).unwrap()
        });
        let mut feed = |buf: &mut Vec<kvmtrace_common::Event>, engine: &mut Engine| {
            for e in buf.drain(..) {
                engine.push(&e);
                if let Some(w) = &mut writer {
                    w.push(&e).unwrap();
                }
            }
        };
        let mut buf = Vec::new();
        session.initial_records(&mut buf).unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < dur {
            session
                .read(&mut buf, Duration::from_millis(100))
                .await
                .unwrap();
            feed(&mut buf, &mut engine);
        }
        let end = session.finish(&mut buf);
        feed(&mut buf, &mut engine);
        engine.flush();
        if let Some(w) = writer {
            w.finish(&kvmtrace_analysis::capture::CaptureTrailer::default())
                .unwrap();
        }
        let stats = end.demo.unwrap().unwrap();
        assert_eq!(end.kernel_drops, 0);
        Traced {
            engine,
            vcpu_tid,
            acked: stats.acked,
        }
    })
}

#[test]
fn interrupt_to_guest_agrees_with_the_demo_vmm_ground_truth() {
    if !privileged::privileged("interrupt_to_guest_agrees_with_the_demo_vmm_ground_truth") {
        return;
    }
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let t = trace_demo(DemoConfig::default(), Duration::from_secs(2));
    let l = vcpu_latency(&t.engine, t.vcpu_tid).expect("the vCPU was followed");
    let i = &l.irq_to_guest;
    let truth = t.engine.demo_truth();
    eprintln!(
        "engine: n={} p50={} p99={} | truth: n={} p50={} p99={} | causes {:?}",
        i.count,
        i.p50_ns,
        i.p99_ns,
        truth.len(),
        truth.value_at_quantile(0.5),
        truth.value_at_quantile(0.99),
        i.causes_ns
    );
    // Every acknowledged interrupt is a sample, bar the few at the edges of the run.
    assert!(
        i.count + 5 >= t.acked && i.count <= t.acked + 5,
        "{} vs {}",
        i.count,
        t.acked
    );
    assert_eq!(i.end_marker.as_deref(), Some("first_guest_exit"));
    assert_eq!(i.incomplete, 0);
    // The window ends at the guest's port write (kvm_pio); the VMM's clock stops after
    // KVM_RUN returns to it: the engine's median is below the truth by that exit to
    // userspace, a few microseconds (docs/attribution.md: tolerance 0..25 us at the median).
    let (e50, t50) = (i.p50_ns as i64, truth.value_at_quantile(0.5) as i64);
    assert!(
        e50 <= t50 + 2_000,
        "engine p50 {e50} ns above truth p50 {t50} ns"
    );
    assert!(
        t50 - e50 <= 25_000,
        "engine p50 {e50} ns too far below truth p50 {t50} ns"
    );
    // The parts add up, and the demo's flow shows: halted, woken, back in KVM_RUN.
    let sum: u64 = i.causes_ns.values().sum();
    let total = t.engine.vcpus().next().unwrap().stats.irq_total_ns;
    assert_eq!(sum, total);
    for c in ["halted", "kvm_run"] {
        assert!(
            i.causes_ns.contains_key(c),
            "{c} missing from {:?}",
            i.causes_ns
        );
    }
}

#[test]
fn a_busy_task_on_the_vcpus_cpu_is_named_as_the_preempter() {
    if !privileged::privileged("a_busy_task_on_the_vcpus_cpu_is_named_as_the_preempter") {
        return;
    }
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let cpu = 1;
    let busy = hog::busy_on(cpu);
    let pid = busy.pid();
    let t = trace_demo(
        DemoConfig {
            vcpu_cpu: Some(cpu),
            ..DemoConfig::default()
        },
        Duration::from_secs(2),
    );
    drop(busy);
    let want = format!("preempted:sh:{pid}");
    let worst = worst_samples(&t.engine);
    assert!(!worst.is_empty());
    let named = worst
        .iter()
        .filter(|w| w.causes.iter().any(|c| c.cause == want))
        .count();
    eprintln!(
        "{named} of {} worst samples name {want}; worst: {:?}",
        worst.len(),
        worst[0].causes
    );
    // At least half the worst samples name it. The hog costs the vCPU whole scheduler
    // slices, so in the samples of half a millisecond or more the wait behind it is the
    // largest part (a kworker or rcu_preempt that runs before the vCPU gets only its own
    // share: the engine follows every switch on a CPU a vCPU waits for); in three in four of
    // them, not all: a busy 2-core machine has other tasks that hold the CPU for long.
    // Shorter samples among the worst 50 are whatever else the run had: a halted vCPU woken
    // late, the VMM's exit.
    assert!(
        named * 2 >= worst.len(),
        "only {named} of {} name {want}",
        worst.len()
    );
    let long: Vec<_> = worst.iter().filter(|w| w.total_ns >= 500_000).collect();
    let largest = long.iter().filter(|w| w.causes[0].cause == want).count();
    for w in long.iter().filter(|w| w.causes[0].cause != want) {
        eprintln!(
            "  {} ns opened by {}: {:?}",
            w.total_ns, w.opened_by, w.causes
        );
    }
    eprintln!(
        "{want} largest in {largest} of {} samples >= 500 us",
        long.len()
    );
    assert!(
        long.len() >= 5,
        "only {} samples of 500 us or more beside a busy task",
        long.len()
    );
    assert!(
        largest * 4 >= long.len() * 3,
        "{want} largest in only {largest} of {} samples >= 500 us",
        long.len()
    );
}

#[test]
fn a_slow_vmm_shows_up_as_userspace_vmm_time() {
    if !privileged::privileged("a_slow_vmm_shows_up_as_userspace_vmm_time") {
        return;
    }
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let t = trace_demo(
        DemoConfig {
            slow_io: Duration::from_micros(300),
            ..DemoConfig::default()
        },
        Duration::from_secs(2),
    );
    let l = vcpu_latency(&t.engine, t.vcpu_tid).unwrap();
    let causes = &l.irq_to_guest.causes_ns;
    eprintln!("{causes:?}");
    let vmm = causes.get("vmm:IO").copied().unwrap_or(0);
    let total: u64 = causes.values().sum();
    assert!(
        vmm * 5 > total,
        "vmm:IO should be a large share with a slow VMM: {vmm} of {total}: {causes:?}"
    );
    assert!(worst_samples(&t.engine)[0]
        .causes
        .iter()
        .any(|c| c.cause == "vmm:IO"));
}

#[test]
fn a_capture_reports_exactly_what_the_live_run_saw() {
    if !privileged::privileged("a_capture_reports_exactly_what_the_live_run_saw") {
        return;
    }
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join(format!("kvmtrace-roundtrip-{}", std::process::id()));
    let t = trace_demo_to(DemoConfig::default(), Duration::from_secs(2), Some(&path));
    let live = vcpu_latency(&t.engine, t.vcpu_tid).unwrap();
    let (report, replayed) = kvmtrace_analysis::report::analyse_capture(
        &path,
        EngineConfig {
            worst: 50,
            ..EngineConfig::default()
        },
    )
    .expect("the capture reads back");
    std::fs::remove_file(&path).unwrap();
    let from_file = vcpu_latency(&replayed, t.vcpu_tid).unwrap();
    assert!(live.irq_to_guest.count > 1000);
    assert_eq!(from_file, live, "same samples, causes, exits and states");
    assert_eq!(worst_samples(&replayed), worst_samples(&t.engine));
    let v = report.vcpus.iter().find(|v| v.tid == t.vcpu_tid).unwrap();
    assert_eq!(v.latency, live);
}
