//! Invariants on generated streams: for any sequence of events, every sample's causes add
//! up to its total, per-vCPU cause totals match sample totals, the run's state times tile
//! the followed time, and nothing panics (no negative durations).

use kvmtrace_common::{ev, Comm, Event, Origin, Payload};
use proptest::prelude::*;

use super::*;

const VM: u32 = 100;
/// The LAPIC timer callback's address in the generated streams.
const TIMER_FN: u64 = 0xffff_ffff_c0de_0000;

/// One generated step: (time delta in ns, operation, vCPU 0/1, CPU 0/1, a value).
fn step() -> impl Strategy<Value = (u64, u8, u32, u32, u64)> {
    (0u64..50_000, 0u8..30, 0u32..2, 0u32..2, 0u64..64)
}

fn build(steps: &[(u64, u8, u32, u32, u64)], shuffle: bool) -> Vec<Event> {
    let mut t = 1_000;
    let mut evs = Vec::new();
    for (i, name) in ["CPU 0/KVM", "CPU 1/KVM"].iter().enumerate() {
        let at = Origin {
            tid: 101 + i as u32,
            tgid: VM,
            ..Default::default()
        };
        evs.push(Event::new(
            at,
            &ev::ThreadInfo::thread(Some(i as u32), name),
        ));
    }
    for &(dt, op, v, cpu, x) in steps {
        t += dt;
        let tid = 101 + v;
        let vcpu = u64::from(v);
        let other = if x % 3 == 0 { 0 } else { 900 + x as u32 % 3 };
        let (tid, p) = match op {
            0 => (
                tid,
                Payload::KvmExit(ev::KvmExit {
                    exit_reason: x % 60,
                    isa: Some(1 + x % 2),
                    vcpu_id: Some(vcpu),
                    ..Default::default()
                }),
            ),
            1 | 2 => (
                tid,
                Payload::KvmEntry(ev::KvmEntry {
                    vcpu_id: Some(vcpu),
                    ..Default::default()
                }),
            ),
            3 => (
                tid,
                Payload::KvmUserspaceExit(ev::KvmUserspaceExit {
                    reason: Some(2),
                    errno: Some(0),
                }),
            ),
            4 => (
                tid,
                Payload::KvmPio(ev::KvmPio {
                    rw: 1,
                    port: 0xe2,
                    size: 2,
                    val: Some(1),
                }),
            ),
            5 => (
                tid,
                Payload::KvmVcpuWakeup(ev::KvmVcpuWakeup {
                    ns: 5,
                    waited: 1,
                    valid: Some(1),
                }),
            ),
            6 => (
                tid,
                Payload::KvmInjVirq(ev::KvmInjVirq {
                    vector: 0x30,
                    soft: Some(0),
                    reinjected: Some(0),
                }),
            ),
            7 => (
                110,
                Payload::KvmSetIrq(ev::KvmSetIrq {
                    gsi: 0,
                    level: x % 2,
                    irq_source_id: Some(0),
                }),
            ),
            8 => (110, Payload::KvmPicSetIrq(ev::KvmPicSetIrq::default())),
            9 => (
                110,
                Payload::KvmMsiSetIrq(ev::KvmMsiSetIrq {
                    address: 0xfee0_0000 | (vcpu << 12),
                    data: 0,
                }),
            ),
            10 => (
                other,
                Payload::KvmApicAcceptIrq(ev::KvmApicAcceptIrq {
                    apicid: vcpu,
                    vec: 0xec,
                    dm: Some(0),
                    tm: Some(0),
                }),
            ),
            11 => (
                tid,
                Payload::SchedSwitch(ev::SchedSwitch {
                    prev_pid: u64::from(tid),
                    prev_state: (x % 2) * 0x100 + u64::from(x % 3 == 1),
                    next_pid: u64::from(other),
                    next_comm: Comm::default(),
                }),
            ),
            12 => (
                other,
                Payload::SchedSwitch(ev::SchedSwitch {
                    prev_pid: u64::from(other),
                    prev_state: 0x100,
                    next_pid: u64::from(tid),
                    next_comm: Comm::default(),
                }),
            ),
            13 => (
                110,
                Payload::SchedWakeup(ev::SchedWakeup {
                    pid: u64::from(tid),
                    target_cpu: Some(u64::from(cpu)),
                    prio: Some(120),
                    comm: Comm::default(),
                }),
            ),
            14 => (
                0,
                Payload::IrqHandlerEntry(ev::IrqHandlerEntry { irq: x % 4 }),
            ),
            15 => (
                0,
                Payload::IrqHandlerExit(ev::IrqHandlerExit { irq: x % 4, ret: 0 }),
            ),
            16 => (0, Payload::SoftirqEntry(ev::SoftirqEntry { vec: x % 10 })),
            17 => (0, Payload::SoftirqExit(ev::SoftirqExit { vec: x % 10 })),
            18 => (
                tid,
                Payload::ContentionBegin(ev::ContentionBegin {
                    lock_addr: 1,
                    flags: 0,
                }),
            ),
            19 => (
                tid,
                Payload::ContentionEnd(ev::ContentionEnd {
                    lock_addr: 1,
                    ret: 0,
                }),
            ),
            20 => (
                110,
                Payload::SchedMigrateTask(ev::SchedMigrateTask {
                    pid: u64::from(tid),
                    orig_cpu: 0,
                    dest_cpu: u64::from(cpu),
                }),
            ),
            21 => (
                0,
                Payload::Drops(ev::Drops {
                    kernel: x / 8,
                    userspace: 0,
                    not_run: 0,
                }),
            ),
            // The VMX/SVM delivery paths: posting, timers, IPIs, interrupt windows.
            22 => (
                other,
                Payload::KvmApicvAcceptIrq(ev::KvmApicvAcceptIrq {
                    apicid: vcpu,
                    vec: 0xe0 + x % 3,
                    dm: Some(0),
                    tm: Some(0),
                }),
            ),
            23 => (
                tid,
                Payload::HrtimerStart(ev::HrtimerStart {
                    hrtimer: 0x1000 + vcpu,
                    function: TIMER_FN,
                    expires: 0,
                    mode: Some(0),
                }),
            ),
            24 => (
                other,
                Payload::HrtimerExpireEntry(ev::HrtimerExpireEntry {
                    hrtimer: 0x1000 + x % 3,
                    function: TIMER_FN,
                    now: None,
                }),
            ),
            25 => (
                tid,
                Payload::KvmExit(ev::KvmExit {
                    exit_reason: [7, 52, 12][x as usize % 3],
                    isa: Some(1),
                    vcpu_id: Some(vcpu),
                    ..Default::default()
                }),
            ),
            26 => (
                tid,
                Payload::KvmInjVirq(ev::KvmInjVirq {
                    vector: 0xe0 + x % 3,
                    soft: Some(x % 2),
                    reinjected: Some(0),
                }),
            ),
            27 => (
                tid,
                Payload::KvmApicIpi(ev::KvmApicIpi {
                    icr_low: 0xe0,
                    dest_id: 1 - vcpu,
                }),
            ),
            28 => (
                0,
                Payload::LocalTimerEntry(ev::LocalTimerEntry { vector: 0xec }),
            ),
            _ => (
                tid,
                Payload::KvmEntry(ev::KvmEntry {
                    vcpu_id: Some(vcpu),
                    intr_info: Some((1 << 31) | (0xe0 + x % 3)),
                    immediate_exit: Some(x % 2),
                    ..Default::default()
                }),
            ),
        };
        // Now and then a CPU number no machine has (a corrupt input): skipped, not sized by.
        let cpu = if x == 63 && op == 28 {
            4_000_000_000
        } else {
            cpu
        };
        evs.push(p.event(Origin {
            ts_ns: t,
            tid,
            tgid: if tid >= 900 || tid == 0 { tid } else { VM },
            cpu,
        }));
    }
    if shuffle {
        // Bounded disorder, as across CPUs: swap neighbours.
        for i in (3..evs.len().saturating_sub(1)).step_by(3) {
            evs.swap(i, i + 1);
        }
    }
    evs
}

fn check(evs: &[Event]) {
    let mut e = Engine::new(EngineConfig {
        worst: 1000,
        apic_timer_fn: TIMER_FN,
        ..EngineConfig::default()
    });
    for ev in evs {
        e.push(ev);
    }
    e.flush();
    let span = evs.iter().map(|e| e.ts_ns).max().unwrap_or(0);
    for s in e.worst() {
        let sum: u64 = s.causes.iter().map(|c| c.1).sum();
        assert_eq!(sum, s.total_ns, "causes add up: {s:?}");
        assert!(s.total_ns <= span);
    }
    for v in e.vcpus() {
        let causes: u64 = v.stats.irq_causes.values().sum();
        assert_eq!(causes, v.stats.irq_total_ns);
        let states: u64 = v.stats.state_ns.values().sum();
        assert!(states <= span, "{states} > {span}");
        for st in v.stats.exits.values() {
            assert!(st.latency.max() <= span.max(1));
            assert!(
                st.latency.len() <= st.count,
                "measured exits are counted exits"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn causes_always_add_up(steps in prop::collection::vec(step(), 0..400)) {
        check(&build(&steps, false));
    }

    #[test]
    fn reordered_streams_keep_the_invariants(steps in prop::collection::vec(step(), 0..400)) {
        check(&build(&steps, true));
    }
}
