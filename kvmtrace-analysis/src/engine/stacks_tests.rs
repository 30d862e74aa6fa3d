//! Scenarios for the stack split (docs/stacks.md), and its invariant on generated streams:
//! every segment's split adds up to the segment, so the stack weights of a vCPU's time, of
//! each sample and of its committed latency add up to their causes.

use std::collections::HashMap;

use kvmtrace_common::{ev, stack, Comm, Event, Kind, Origin, Payload, Record};
use proptest::prelude::*;

use super::super::{Cause, Engine, EngineConfig};
use super::{StackKey, StackRef, StackSource};

const VM: u32 = 100;
const V0: u32 = 101;
const IOT: u32 = 110;
const HOG: u32 = 999;

/// A timeline builder, as in the engine's scenarios, with stack records.
struct Sim {
    t: u64,
    evs: Vec<Event>,
}

impl Sim {
    /// vCPU 0 named, and stacks 1..=9 defined (the recorder defines them when first seen;
    /// the engine does not need them before the report).
    fn new() -> Sim {
        let mut s = Sim {
            t: 0,
            evs: Vec::new(),
        };
        s.ev(V0, 0, ev::ThreadInfo::thread(Some(0), "CPU 0/KVM"));
        for id in 1..=9u32 {
            let frames = [0x1000 * u64::from(id) + 0x10, 0x1000 * u64::from(id) + 0x20];
            for r in ev::StackFrames::chunks(id, &frames).collect::<Vec<_>>() {
                s.ev(0, 0, r);
            }
        }
        s
    }

    fn at(&mut self, us: f64) -> &mut Self {
        self.t = (us * 1000.0) as u64;
        self
    }

    fn ev<R: Record>(&mut self, tid: u32, cpu: u32, rec: R) -> &mut Self {
        let at = Origin {
            ts_ns: self.t,
            tid,
            tgid: if tid == HOG { HOG } else { VM },
            cpu,
        };
        self.evs.push(Event::new(at, &rec));
        self
    }

    fn switch(&mut self, cpu: u32, prev: u32, runnable: bool, next: u32, comm: &str) -> &mut Self {
        let sw = ev::SchedSwitch {
            prev_pid: u64::from(prev),
            prev_state: if runnable { 0x100 } else { 1 },
            next_pid: u64::from(next),
            next_comm: Comm::new(comm),
        };
        self.ev(prev, cpu, sw)
    }

    /// A stack program's record half a microsecond after the event it belongs to (the
    /// second program on the tracepoint runs after the first).
    fn stack_at(&mut self, tid: u32, cpu: u32, what: u64, id: u32) -> &mut Self {
        self.t += 500;
        let r = ev::StackAt {
            stack: u64::from(id),
            what,
            error: 0,
        };
        self.ev(tid, cpu, r);
        self.t -= 500;
        self
    }

    fn tick(&mut self, tid: u32, cpu: u32, id: u32) -> &mut Self {
        let r = ev::StackSample {
            stack: u64::from(id),
            error: 0,
        };
        self.ev(tid, cpu, r)
    }

    fn user_tick(&mut self, tid: u32, cpu: u32) -> &mut Self {
        let r = ev::StackSample {
            stack: 0,
            error: stack::EFAULT,
        };
        self.ev(tid, cpu, r)
    }

    fn wakeup(&mut self, pid: u32, target: u32) -> &mut Self {
        let w = ev::SchedWakeup {
            pid: u64::from(pid),
            target_cpu: Some(u64::from(target)),
            prio: Some(120),
            comm: Comm::default(),
        };
        self.ev(IOT, 1, w)
    }

    fn raise_pic(&mut self) -> &mut Self {
        let set = ev::KvmSetIrq {
            gsi: 0,
            level: 1,
            irq_source_id: Some(0),
        };
        self.ev(IOT, 1, set);
        self.ev(IOT, 1, ev::KvmPicSetIrq::default())
    }

    fn kvm_wakeup(&mut self, cpu: u32) -> &mut Self {
        let w = ev::KvmVcpuWakeup {
            ns: 1000,
            waited: 1,
            valid: Some(1),
        };
        self.ev(V0, cpu, w)
    }

    fn pio(&mut self, cpu: u32) -> &mut Self {
        let pio = ev::KvmPio {
            rw: 1,
            port: 0xe2,
            size: 2,
            val: Some(1),
        };
        self.ev(V0, cpu, pio)
    }

    fn run(&self) -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        for ev in &self.evs {
            e.push(ev);
        }
        e.flush();
        e
    }
}

fn us(x: f64) -> u64 {
    (x * 1000.0) as u64
}

fn key(source: StackSource, id: u32, task: Option<u32>) -> StackKey {
    StackKey::Stack {
        source,
        stack: StackRef::Id(id),
        task,
    }
}

/// The single sample's stack split as (cause label, key) -> ns, checked to add up to its
/// causes.
fn split(e: &Engine) -> HashMap<(String, StackKey), u64> {
    assert_eq!(e.worst().len(), 1, "one sample expected");
    let s = &e.worst()[0];
    for &(c, ns) in &s.causes {
        let st: u64 = s.stacks.iter().filter(|x| x.0 == c).map(|x| x.2).sum();
        assert_eq!(st, ns, "{c:?}: the stacks add up to the cause");
    }
    s.stacks
        .iter()
        .map(|&(c, k, ns)| ((c.label(e.threads().names()), k), ns))
        .collect()
}

/// vCPU 0 runs on CPU 0, halts at 5 µs (its sleep stack 5) while a hog takes the CPU; an
/// interrupt is raised at 100 µs and the vCPU woken at 110 µs, but waits for the hog until
/// 1110 µs (the hog's stack 3 where it hands the CPU back); its guest's port write at
/// 1120 µs is the delivery.
fn preempted_after_wakeup(ticks: &[(f64, u32)]) -> Sim {
    let mut s = Sim::new();
    s.at(0.0).switch(0, 0, false, V0, "CPU 0/KVM").kvm_wakeup(0);
    s.at(5.0)
        .switch(0, V0, false, HOG, "hog")
        .stack_at(V0, 0, stack::SWITCH, 5);
    s.at(100.0).raise_pic();
    s.at(110.0).wakeup(V0, 0);
    for &(t, id) in ticks {
        s.at(t).tick(HOG, 0, id);
    }
    s.at(1110.0)
        .switch(0, HOG, true, V0, "CPU 0/KVM")
        .stack_at(HOG, 0, stack::SWITCH, 3);
    s.at(1115.0).kvm_wakeup(0);
    s.at(1120.0).pio(0);
    s
}

#[test]
fn a_culprits_time_goes_to_its_sampled_stacks() {
    let e = preempted_after_wakeup(&[(300.0, 1), (500.0, 1), (700.0, 2)]).run();
    let got = split(&e);
    let p = "preempted:hog:999".to_string();
    let want: HashMap<(String, StackKey), u64> = [
        (
            ("halted".to_string(), key(StackSource::Blocked, 5, None)),
            us(10.0),
        ),
        (
            (p.clone(), key(StackSource::Sampled, 1, Some(HOG))),
            666_667,
        ),
        ((p, key(StackSource::Sampled, 2, Some(HOG))), 333_333),
        (("kvm_run".to_string(), StackKey::NotSampled), us(10.0)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn without_a_tick_a_culprits_time_goes_to_where_it_switched_out() {
    // The hog's stack record comes after the switch that ends the wait: indexed as it
    // arrives, it is found when that switch closes the segment.
    let e = preempted_after_wakeup(&[]).run();
    let got = split(&e);
    assert_eq!(
        got.get(&(
            "preempted:hog:999".to_string(),
            key(StackSource::SwitchedOut, 3, Some(HOG))
        )),
        Some(&us(1000.0))
    );
}

#[test]
fn a_tick_in_the_timer_interrupt_samples_the_code_it_interrupted() {
    let mut s = Sim::new();
    s.at(0.0).switch(0, 0, false, V0, "CPU 0/KVM").kvm_wakeup(0);
    s.at(10.0).raise_pic();
    // The profile's hrtimer interrupt: entry, the tick a few µs later, exit.
    s.at(50.0)
        .ev(V0, 0, ev::LocalTimerEntry { vector: 0xec })
        .at(54.0)
        .tick(V0, 0, 7)
        .at(60.0)
        .ev(V0, 0, ev::LocalTimerExit { vector: 0xec });
    s.at(70.0).user_tick(V0, 0);
    s.at(80.0).pio(0);
    let e = s.run();
    let got = split(&e);
    // kvm_run [10, 50) holds the tick (timed at its interrupt's entry); [60, 80) the user
    // space one; the timer interrupt itself has none.
    assert_eq!(
        got.get(&("kvm_run".to_string(), key(StackSource::Sampled, 7, None))),
        Some(&us(40.0))
    );
    let user = StackKey::Stack {
        source: StackSource::Sampled,
        stack: StackRef::User,
        task: None,
    };
    assert_eq!(got.get(&("kvm_run".to_string(), user)), Some(&us(20.0)));
    assert_eq!(
        got.get(&("apic:local_timer".to_string(), StackKey::NotSampled)),
        Some(&us(10.0))
    );
    assert_eq!(e.late_events(), 0);
}

#[test]
fn lock_and_host_interrupts_take_their_entry_stacks() {
    let mut s = Sim::new();
    s.at(0.0).switch(0, 0, false, V0, "CPU 0/KVM").kvm_wakeup(0);
    s.at(10.0).raise_pic();
    s.at(20.0)
        .ev(
            V0,
            0,
            ev::ContentionBegin {
                lock_addr: 1,
                flags: 0,
            },
        )
        .stack_at(V0, 0, stack::CONTENTION, 4);
    s.at(30.0).ev(
        V0,
        0,
        ev::ContentionEnd {
            lock_addr: 1,
            ret: 0,
        },
    );
    s.at(40.0)
        .ev(0, 0, ev::IrqHandlerEntry { irq: 24 })
        .stack_at(V0, 0, stack::HARDIRQ, 6);
    s.at(45.0).ev(0, 0, ev::IrqHandlerExit { irq: 24, ret: 1 });
    s.at(50.0).pio(0);
    let e = s.run();
    let got = split(&e);
    assert_eq!(
        got.get(&("lock".to_string(), key(StackSource::Contended, 4, None))),
        Some(&us(10.0))
    );
    assert_eq!(
        got.get(&(
            "hardirq:24".to_string(),
            key(StackSource::IrqEntry, 6, None)
        )),
        Some(&us(5.0))
    );
}

#[test]
fn a_stream_without_stacks_splits_nothing() {
    let mut s = preempted_after_wakeup(&[]);
    s.evs
        .retain(|e| !e.kind().is_ok_and(|k| k.is_stack_record()));
    let e = s.run();
    assert!(!e.stacks().is_on());
    assert!(e.worst()[0].stacks.is_empty());
    for v in e.vcpus() {
        assert!(v.stats.stack_ns.is_empty() && v.stats.irq_stack_ns.is_empty());
    }
}

#[test]
fn stack_records_are_not_events_of_the_stream() {
    let e = preempted_after_wakeup(&[(300.0, 1)]).run();
    let counts = e.threads().counts();
    assert!(!counts.by_kind.keys().any(|k| k.is_stack_record()));
    let c = e.stacks().counts();
    assert_eq!((c.at_events, c.samples, c.user, c.lost), (2, 1, 0, 0));
    assert_eq!(e.stacks().tables().counts().0, 9);
}

/// Each cause's stack time equals its time, per vCPU (run and committed latency) and per
/// sample.
fn check_adds_up(e: &Engine) {
    fn by_cause<'a>(it: impl Iterator<Item = (Cause, u64)> + 'a) -> HashMap<Cause, u64> {
        let mut m = HashMap::new();
        for (c, ns) in it {
            *m.entry(c).or_insert(0) += ns;
        }
        m.retain(|_, ns| *ns > 0);
        m
    }
    for s in e.worst() {
        let causes = by_cause(s.causes.iter().copied());
        let stacks = by_cause(s.stacks.iter().map(|x| (x.0, x.2)));
        assert_eq!(causes, stacks, "sample at {}", s.open_ns);
    }
    for v in e.vcpus() {
        let st = &v.stats;
        let state = by_cause(st.state_ns.iter().map(|(c, ns)| (*c, *ns)));
        assert_eq!(state, by_cause(st.stack_ns.iter().map(|x| (x.0, x.2))));
        let irq = by_cause(st.irq_causes.iter().map(|(c, ns)| (*c, *ns)));
        assert_eq!(irq, by_cause(st.irq_stack_ns.iter().map(|x| (x.0, x.2))));
    }
}

/// A generated stream: a vCPU halting, woken, preempted, in host interrupts and lock
/// contention on two CPUs, with ticks and event stacks in between (some lost or in user
/// space), slightly out of order.
fn generated(steps: &[(u64, u8, u32, u64)]) -> Vec<Event> {
    let mut s = Sim::new();
    let mut t = 1_000u64;
    for &(dt, op, cpu, x) in steps {
        t += dt;
        s.t = t;
        let other = 900 + (x % 3) as u32;
        let id = (x % 9) as u32 + 1;
        match op {
            0 => s.switch(cpu, V0, x % 2 == 0, other, "t"),
            1 => s.switch(cpu, other, true, V0, "CPU 0/KVM"),
            2 => s.wakeup(V0, cpu),
            3 => s.raise_pic(),
            4 => s.kvm_wakeup(cpu),
            5 => s.pio(cpu),
            6 => s.ev(0, cpu, ev::IrqHandlerEntry { irq: x % 2 }),
            7 => s.ev(0, cpu, ev::IrqHandlerExit { irq: x % 2, ret: 1 }),
            8 => s.ev(0, cpu, ev::SoftirqEntry { vec: 3 }),
            9 => s.ev(0, cpu, ev::SoftirqExit { vec: 3 }),
            10 => s.ev(
                V0,
                cpu,
                ev::ContentionBegin {
                    lock_addr: 1,
                    flags: 0,
                },
            ),
            11 => s.ev(
                V0,
                cpu,
                ev::ContentionEnd {
                    lock_addr: 1,
                    ret: 0,
                },
            ),
            12 => s.ev(0, cpu, ev::LocalTimerEntry { vector: 0xec }),
            13 => s.ev(0, cpu, ev::LocalTimerExit { vector: 0xec }),
            14 => s.tick(if x % 2 == 0 { V0 } else { other }, cpu, id),
            15 => s.user_tick(if x % 2 == 0 { V0 } else { other }, cpu),
            16 => s.ev(
                0,
                cpu,
                ev::StackSample {
                    stack: 0,
                    error: stack::EEXIST,
                },
            ),
            17 => s.stack_at(if x % 2 == 0 { V0 } else { other }, cpu, 1 + x % 4, id),
            _ => s.ev(
                0,
                0,
                ev::Drops {
                    kernel: 0,
                    userspace: 0,
                    not_run: 0,
                },
            ),
        };
    }
    let mut evs = s.evs;
    for i in (25..evs.len().saturating_sub(1)).step_by(4) {
        evs.swap(i, i + 1);
    }
    evs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn stack_splits_add_up_to_the_causes(
        steps in prop::collection::vec((0u64..40_000, 0u8..19, 0u32..2, 0u64..64), 0..400)
    ) {
        let evs = generated(&steps);
        let mut e = Engine::new(EngineConfig { worst: 1000, ..EngineConfig::default() });
        for ev in &evs {
            e.push(ev);
        }
        e.flush();
        check_adds_up(&e);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Stack records with any values (a corrupt or hostile capture), among the events that
    /// split segments: never a panic, an overflow or an unbounded table.
    #[test]
    fn any_stack_record_is_taken_without_a_panic(
        recs in prop::collection::vec(
            (any::<u64>(), 0u16..4, prop::array::uniform5(any::<u64>()), 0u32..3, any::<bool>()),
            0..200,
        )
    ) {
        let mut e = Engine::new(EngineConfig::default());
        let mut s = Sim::new();
        s.at(0.0).switch(0, 0, false, V0, "CPU 0/KVM");
        for ev in &s.evs {
            e.push(ev);
        }
        for (ts, k, slots, cpu, sched) in recs {
            let kind = [Kind::StackAt, Kind::StackSample, Kind::StackFrames, Kind::Symbol]
                [k as usize];
            let mut ev = Event {
                ts_ns: ts,
                tid: if sched { V0 } else { 999 },
                tgid: VM,
                cpu,
                kind: kind as u16,
                slots,
                ..Default::default()
            };
            e.push(&ev);
            if sched {
                ev = Event::new(
                    Origin { ts_ns: ts, tid: V0, tgid: VM, cpu },
                    &ev::LocalTimerEntry { vector: 0xec },
                );
                e.push(&ev);
            }
        }
        e.flush();
        let (stacks, symbols) = e.stacks().tables().counts();
        prop_assert!(stacks <= super::MAX_STACK_DEFS && symbols <= super::MAX_SYMBOLS);
        check_adds_up(&e);
    }
}

#[test]
fn the_split_of_a_payload_kind_is_never_a_guess_about_an_unknown_one() {
    // A kind this kvmtrace does not know is skipped, not taken for a stack record.
    let mut e = Engine::new(EngineConfig::default());
    e.push(&Event {
        kind: 150,
        ..Default::default()
    });
    assert!(!e.stacks().is_on());
    assert!(Payload::StackSample(ev::StackSample::default())
        .kind()
        .is_stack_record());
}
