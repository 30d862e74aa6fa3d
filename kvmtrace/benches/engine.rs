//! Attribution engine throughput and memory on a large synthetic stream.
//!
//! `cargo bench --bench engine` prints events/s on one core and the process's resident
//! memory after streams of increasing length with 64 vCPUs (figures in
//! docs/performance.md). Under `cargo test` it runs a short pass that checks the stream
//! really produces samples.

use std::time::Instant;

use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_common::{ev, Comm, Event, Origin, Payload};

const VCPUS: u32 = 64;
const CPUS: u32 = 32;
const VM: u32 = 4242;

/// A VMX host's event mix, generated on the fly: per vCPU, guest runs of ~5 us between
/// exits (external interrupts, HLT, I/O, EPT violations), an MSI every 50 exits injected at
/// the next entry, host IRQs and softirqs on its CPU, and an occasional preemption; one
/// event in 8 delivered after the next.
struct Stream {
    t: u64,
    n: u64,
    rng: u64,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            t: 1_000_000,
            n: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn ev(&self, tid: u32, cpu: u32, p: Payload) -> Event {
        p.event(Origin {
            ts_ns: self.t,
            tid,
            tgid: VM,
            cpu,
        })
    }

    /// Appends the next round (one exit/entry per vCPU, and what goes with it) to `out`.
    fn round(&mut self, out: &mut Vec<Event>) {
        let first = out.len();
        for v in 0..VCPUS {
            let tid = 10_000 + v;
            let cpu = v % CPUS;
            let id = u64::from(v);
            self.t += 80 + self.rand() % 80;
            self.n += 1;
            let r = self.rand();
            let reason = [1u64, 12, 30, 48][(r % 4) as usize];
            out.push(self.ev(
                tid,
                cpu,
                Payload::KvmExit(ev::KvmExit {
                    exit_reason: reason,
                    isa: Some(1),
                    vcpu_id: Some(id),
                    ..Default::default()
                }),
            ));
            if self.n.is_multiple_of(50) {
                // An MSI from the VMM's I/O thread (irq_comm.c kvm_set_msi), accepted by
                // the vCPU's LAPIC, injected at its next entry.
                let io = (cpu + 1) % CPUS;
                out.push(self.ev(
                    99,
                    io,
                    Payload::KvmMsiSetIrq(ev::KvmMsiSetIrq {
                        address: 0xfee0_0000 | (id << 12),
                        data: 0x41,
                    }),
                ));
                out.push(self.ev(
                    99,
                    io,
                    Payload::KvmApicAcceptIrq(ev::KvmApicAcceptIrq {
                        apicid: id,
                        vec: 0x41,
                        dm: Some(0),
                        tm: Some(0),
                    }),
                ));
                out.push(self.ev(
                    tid,
                    cpu,
                    Payload::KvmInjVirq(ev::KvmInjVirq {
                        vector: 0x41,
                        soft: Some(0),
                        reinjected: Some(0),
                    }),
                ));
            }
            if r.is_multiple_of(97) {
                out.push(self.ev(
                    0,
                    cpu,
                    Payload::IrqHandlerEntry(ev::IrqHandlerEntry { irq: 24 }),
                ));
                self.t += 2_000;
                out.push(self.ev(
                    0,
                    cpu,
                    Payload::IrqHandlerExit(ev::IrqHandlerExit { irq: 24, ret: 1 }),
                ));
                out.push(self.ev(0, cpu, Payload::SoftirqEntry(ev::SoftirqEntry { vec: 3 })));
                self.t += 3_000;
                out.push(self.ev(0, cpu, Payload::SoftirqExit(ev::SoftirqExit { vec: 3 })));
            }
            if r.is_multiple_of(211) {
                let switch = |prev: u64, next: u64| {
                    Payload::SchedSwitch(ev::SchedSwitch {
                        prev_pid: prev,
                        prev_state: 0x100,
                        next_pid: next,
                        next_comm: Comm::default(),
                    })
                };
                out.push(self.ev(tid, cpu, switch(u64::from(tid), 777)));
                self.t += 20_000;
                out.push(self.ev(777, cpu, switch(777, u64::from(tid))));
            }
            self.t += 500 + r % 1500;
            out.push(self.ev(
                tid,
                cpu,
                Payload::KvmEntry(ev::KvmEntry {
                    vcpu_id: Some(id),
                    ..Default::default()
                }),
            ));
        }
        // As the ring buffer delivers them: a program takes its timestamp before it
        // reserves space, so one event in 8 lands after the next one (the engine's reorder
        // buffer puts it back; events of the same nanosecond keep their order, as
        // nothing could restore it).
        for i in first..out.len().saturating_sub(1) {
            if self.rand().is_multiple_of(8) && out[i].ts_ns < out[i + 1].ts_ns {
                out.swap(i, i + 1);
            }
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let checkpoints: &[u64] = if full {
        &[2_000_000, 10_000_000, 30_000_000]
    } else {
        &[200_000]
    };
    let mut engine = Engine::new(EngineConfig::default());
    let mut stream = Stream::new();
    let mut buf = Vec::with_capacity(4096);
    let mut fed = 0u64;
    let mut busy = std::time::Duration::ZERO;
    println!("| events fed | engine events/s (one core) | RSS MiB | vCPUs |");
    println!("|---:|---:|---:|---:|");
    for &target in checkpoints {
        while fed < target {
            buf.clear();
            stream.round(&mut buf);
            let t0 = Instant::now();
            for ev in &buf {
                engine.push(ev);
            }
            busy += t0.elapsed();
            fed += buf.len() as u64;
        }
        println!(
            "| {fed} | {:.2} M | {:.1} | {VCPUS} |",
            fed as f64 / busy.as_secs_f64() / 1e6,
            rss_kib() as f64 / 1024.0
        );
    }
    engine.flush();
    let samples: u64 = engine.vcpus().map(|v| v.stats.irq_to_guest.len()).sum();
    let exits: u64 = engine
        .vcpus()
        .map(|v| v.stats.exits.values().map(|h| h.latency.len()).sum::<u64>())
        .sum();
    println!("\n{samples} interrupt-to-guest samples, {exits} exits measured");
    assert_eq!(engine.vcpus().count(), VCPUS as usize);
    assert!(samples > 0 && exits > 0);
    assert_eq!(engine.late_events(), 0);
}
