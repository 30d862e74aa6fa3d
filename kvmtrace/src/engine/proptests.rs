//! Invariants on generated streams: for any sequence of events, every sample's causes add
//! up to its total, per-vCPU cause totals match sample totals, the run's state times tile
//! the followed time, and nothing panics (no negative durations).

use kvmtrace_common::{Event, Kind};
use proptest::prelude::*;

use super::*;
use crate::report::comm_to_slots;

const VM: u32 = 100;

/// One generated step: (time delta in ns, operation, vCPU 0/1, CPU 0/1, a value).
fn step() -> impl Strategy<Value = (u64, u8, u32, u32, u64)> {
    (0u64..50_000, 0u8..22, 0u32..2, 0u32..2, 0u64..64)
}

fn build(steps: &[(u64, u8, u32, u32, u64)], shuffle: bool) -> Vec<Event> {
    let mut t = 1_000;
    let mut evs = Vec::new();
    for (i, name) in ["CPU 0/KVM", "CPU 1/KVM"].iter().enumerate() {
        let (a, b) = comm_to_slots(name);
        evs.push(Event {
            tid: 101 + i as u32,
            tgid: VM,
            kind: Kind::ThreadInfo as u16,
            slots: [i as u64, 0, 0, a, b],
            ..Default::default()
        });
    }
    for &(dt, op, v, cpu, x) in steps {
        t += dt;
        let tid = 101 + v;
        let other = if x % 3 == 0 { 0 } else { 900 + x as u32 % 3 };
        let (kind, tid, slots) = match op {
            0 => (Kind::KvmExit, tid, [x % 60, 1 + x % 2, u64::from(v), 0, 0]),
            1 | 2 => (Kind::KvmEntry, tid, [u64::from(v), 0, 0, 0, 0]),
            3 => (Kind::KvmUserspaceExit, tid, [2, 0, 0, 0, 0]),
            4 => (Kind::KvmPio, tid, [1, 0xe2, 2, 1, 0]),
            5 => (Kind::KvmVcpuWakeup, tid, [5, 1, 1, 0, 0]),
            6 => (Kind::KvmInjVirq, tid, [0x30, 0, 0, 0, 0]),
            7 => (Kind::KvmSetIrq, 110, [0, x % 2, 0, 0, 0]),
            8 => (Kind::KvmPicSetIrq, 110, [0, 0, 0, 0, 0]),
            9 => (
                Kind::KvmMsiSetIrq,
                110,
                [0xfee0_0000 | (u64::from(v) << 12), 0, 0, 0, 0],
            ),
            10 => (Kind::KvmApicAcceptIrq, other, [u64::from(v), 0xec, 0, 0, 0]),
            11 => (
                Kind::SchedSwitch,
                tid,
                [
                    u64::from(tid),
                    (x % 2) * 0x100 + (x % 3 == 1) as u64,
                    u64::from(other),
                    0,
                    0,
                ],
            ),
            12 => (
                Kind::SchedSwitch,
                other,
                [u64::from(other), 0x100, u64::from(tid), 0, 0],
            ),
            13 => (
                Kind::SchedWakeup,
                110,
                [u64::from(tid), u64::from(cpu), 120, 0, 0],
            ),
            14 => (Kind::IrqHandlerEntry, 0, [x % 4, 0, 0, 0, 0]),
            15 => (Kind::IrqHandlerExit, 0, [x % 4, 0, 0, 0, 0]),
            16 => (Kind::SoftirqEntry, 0, [x % 10, 0, 0, 0, 0]),
            17 => (Kind::SoftirqExit, 0, [x % 10, 0, 0, 0, 0]),
            18 => (Kind::ContentionBegin, tid, [1, 0, 0, 0, 0]),
            19 => (Kind::ContentionEnd, tid, [1, 0, 0, 0, 0]),
            20 => (
                Kind::SchedMigrateTask,
                110,
                [u64::from(tid), 0, u64::from(cpu), 0, 0],
            ),
            _ => (Kind::Drops, 0, [x / 8, 0, 0, 0, 0]),
        };
        evs.push(Event {
            ts_ns: t,
            tid,
            tgid: if tid >= 900 || tid == 0 { tid } else { VM },
            cpu,
            kind: kind as u16,
            slots,
            ..Default::default()
        });
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
        for h in v.stats.exits.values() {
            assert!(h.max() <= span.max(1));
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
