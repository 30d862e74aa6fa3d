//! Privileged, real kernel: run the embedded demo guest under the probes and check that the
//! events that fire on this machine arrive with the right thread and vCPU, that an unrelated
//! busy process is filtered out in the kernel, and that nothing is dropped.

#[path = "support/privileged.rs"]
mod privileged;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kvmtrace::source::demo::{DemoConfig, ACK_PORT, WORK_PORT};
use kvmtrace::source::session::{Session, SessionOptions};
use kvmtrace_common::{ev, Event, Kind, ThreadInfoIs};

struct Busy(Child);
impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn busy_process() -> Busy {
    Busy(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn a busy loop"),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn demo_guest_events_arrive_with_the_right_thread_and_vcpu() {
    if !privileged::privileged("demo_guest_events_arrive_with_the_right_thread_and_vcpu") {
        return;
    }
    let busy = busy_process();
    let busy_pid = busy.0.id();
    let mut session = Session::start(&SessionOptions {
        demo: Some(DemoConfig::default()),
        ..Default::default()
    })
    .expect("start session");
    let vcpu_tid = session.demo_vcpu_tid().unwrap();
    let irq_tid = session.demo_irq_tid().unwrap();
    let pid = std::process::id();

    let mut events: Vec<Event> = Vec::new();
    session.initial_records(&mut events).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        session
            .read(&mut events, Duration::from_millis(100))
            .await
            .unwrap();
    }
    let end = session.finish(&mut events);
    let stats = end.demo.unwrap().expect("demo stopped cleanly");
    drop(busy);

    let mut by_kind: BTreeMap<Kind, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        by_kind
            .entry(Kind::try_from(e.kind).unwrap())
            .or_default()
            .push(e);
    }
    let count = |k: Kind| by_kind.get(&k).map_or(0, |v| v.len());

    // The vCPU thread is announced with its id from the `CPU 0/KVM` name.
    let info: Vec<_> = by_kind[&Kind::ThreadInfo]
        .iter()
        .filter(|e| e.tid == vcpu_tid)
        .collect();
    assert_eq!(info.len(), 1);
    let ti = info[0].get::<ev::ThreadInfo>().expect("a thread_info");
    assert_eq!(ti.is(), ThreadInfoIs::Thread { vcpu: Some(0) }, "vCPU id 0");
    assert_eq!(ti.comm.to_string_lossy(), "CPU 0/KVM");

    // vCPU-context KVM events come from the vCPU thread of this process.
    for k in [Kind::KvmUserspaceExit, Kind::KvmPio, Kind::KvmVcpuWakeup] {
        assert!(count(k) > 100, "{k:?}: only {} events", count(k));
        for e in &by_kind[&k] {
            assert_eq!(
                (e.tid, e.tgid),
                (vcpu_tid, pid),
                "{k:?} from the wrong thread"
            );
        }
    }
    let ports: Vec<u64> = by_kind[&Kind::KvmPio]
        .iter()
        .filter_map(|e| e.get::<ev::KvmPio>())
        .map(|p| p.port)
        .collect();
    assert!(ports.contains(&u64::from(ACK_PORT)));
    assert!(ports.contains(&u64::from(WORK_PORT)));
    // Every acknowledged interrupt shows as an exit to userspace on the ack port.
    let acks = ports.iter().filter(|&&p| p == u64::from(ACK_PORT)).count() as u64;
    assert!(
        acks + 2 >= stats.acked && acks <= stats.acked + 2,
        "{acks} vs {stats:?}"
    );

    // The interrupt is raised from the VMM's interrupt thread.
    for k in [Kind::KvmSetIrq, Kind::KvmPicSetIrq] {
        assert!(
            count(k) as u64 >= stats.raised,
            "{k:?}: {} < {}",
            count(k),
            stats.raised
        );
        assert!(
            by_kind[&k].iter().all(|e| e.tid == irq_tid),
            "{k:?} from the wrong thread"
        );
    }

    // The scheduler sees the vCPU thread woken and switched in.
    let vcpu = u64::from(vcpu_tid);
    assert!(by_kind[&Kind::SchedWakeup]
        .iter()
        .filter_map(|e| e.get::<ev::SchedWakeup>())
        .any(|w| w.pid == vcpu));
    let switches: Vec<ev::SchedSwitch> = by_kind[&Kind::SchedSwitch]
        .iter()
        .filter_map(|e| e.get::<ev::SchedSwitch>())
        .collect();
    assert!(switches.iter().any(|s| s.next_pid == vcpu));
    // Other switches only on a CPU the vCPU waits for: woken or migrated there, or
    // preempted there, since the CPU last went idle (a vCPU switched in leaves the mark,
    // another may wait; a switch to idle clears it, unless the vCPU itself goes out
    // runnable). Followed here in time order; a switch may read the state a wake-up on
    // another CPU set a moment after its own timestamp was taken, so a state set within
    // 10 us after counts.
    let mut sched: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                Kind::try_from(e.kind),
                Ok(Kind::SchedSwitch | Kind::SchedWakeup | Kind::SchedMigrateTask)
            )
        })
        .collect();
    sched.sort_by_key(|e| e.ts_ns);
    let mut waiting: BTreeMap<u32, bool> = BTreeMap::new();
    let mut set_at: Vec<(u32, u64)> = Vec::new();
    let mut host_only: Vec<(u32, u64, ev::SchedSwitch)> = Vec::new();
    for e in &sched {
        if let Some(w) = e.get::<ev::SchedWakeup>() {
            if w.pid == vcpu {
                let cpu = w.target_cpu.expect("target_cpu") as u32;
                waiting.insert(cpu, true);
                set_at.push((cpu, e.ts_ns));
            }
        } else if let Some(m) = e.get::<ev::SchedMigrateTask>() {
            if m.pid == vcpu {
                waiting.insert(m.dest_cpu as u32, true);
                set_at.push((m.dest_cpu as u32, e.ts_ns));
            }
        } else if let Some(s) = e.get::<ev::SchedSwitch>() {
            // Judged by the state before the switch, as the probe does.
            if s.prev_pid != vcpu
                && s.next_pid != vcpu
                && !waiting.get(&e.cpu).copied().unwrap_or(false)
            {
                host_only.push((e.cpu, e.ts_ns, s));
            }
            let runnable =
                s.prev_pid == vcpu && kvmtrace_common::switch_prev_runnable(s.prev_state);
            if s.next_pid == 0 {
                waiting.insert(e.cpu, runnable);
            } else if runnable {
                waiting.insert(e.cpu, true);
            }
            if runnable {
                set_at.push((e.cpu, e.ts_ns));
            }
        }
    }
    let others = switches
        .iter()
        .filter(|s| s.prev_pid != vcpu && s.next_pid != vcpu)
        .count();
    eprintln!(
        "{others} of {} switches between other tasks on a CPU the vCPU waited for",
        switches.len()
    );
    for (cpu, ts, s) in &host_only {
        assert!(
            set_at
                .iter()
                .any(|&(c, t)| c == *cpu && t >= *ts && t - ts <= 10_000),
            "a sched_switch on cpu {cpu} at {ts} while no traced vCPU waited there got \
             through: {s:?}"
        );
    }

    // The busy process is filtered out in the kernel: none of its own events arrive.
    for e in &events {
        let kind = Kind::try_from(e.kind).unwrap();
        if kind.is_vcpu_context() || kind == Kind::SchedWakeup {
            assert_ne!(e.tgid, busy_pid, "{kind:?} from the busy process");
        }
        if let Some(w) = e.get::<ev::SchedWakeup>() {
            assert_ne!(w.pid, u64::from(busy_pid), "a wake-up of the busy process");
        }
        if kind == Kind::ContentionBegin || kind == Kind::ContentionEnd {
            assert_ne!(e.tgid, busy_pid);
        }
    }

    // The demo's ground truth arrived, and nothing was lost.
    assert!(count(Kind::DemoAck) as u64 >= stats.acked.saturating_sub(1));
    assert!(stats.acked > 1000, "{stats:?}");
    assert_eq!(end.kernel_drops, 0, "ring buffer drops at the demo's rate");
    assert_eq!(end.malformed, 0);
}
