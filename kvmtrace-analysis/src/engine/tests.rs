//! Deterministic scenarios on synthetic event streams, one per cause at least.

use std::collections::HashMap;

use kvmtrace_common::{ev, Comm, Event, Kind, Origin, Payload, Record};

use super::*;

const VM: u32 = 100;
const V0: u32 = 101;
const V1: u32 = 102;
const IOT: u32 = 110; // the VMM's I/O thread
const BUSY: u32 = 999;
const VMX: u64 = 1;
const SVM: u64 = 2;

/// A timeline builder: `at(us)` sets the clock, each method appends one event then.
struct Sim {
    t: u64,
    evs: Vec<Event>,
}

impl Sim {
    fn new() -> Sim {
        let mut s = Sim {
            t: 0,
            evs: Vec::new(),
        };
        s.thread(V0, Some(0), "CPU 0/KVM");
        s.thread(V1, Some(1), "CPU 1/KVM");
        s
    }

    fn at(&mut self, us: f64) -> &mut Self {
        self.t = (us * 1000.0) as u64;
        self
    }

    /// Appends `rec` as fired in thread `tid` on `cpu` now.
    fn ev<R: Record>(&mut self, tid: u32, cpu: u32, rec: R) -> &mut Self {
        let tgid = if tid == BUSY { BUSY } else { VM };
        let at = Origin {
            ts_ns: self.t,
            tid,
            tgid,
            cpu,
        };
        self.evs.push(Event::new(at, &rec));
        self
    }

    fn thread(&mut self, tid: u32, vcpu: Option<u32>, comm: &str) -> &mut Self {
        self.ev(tid, 0, ev::ThreadInfo::thread(vcpu, comm))
    }
    fn exit(&mut self, tid: u32, cpu: u32, isa: u64, reason: u64) -> &mut Self {
        let vcpu = u64::from(tid - V0);
        let exit = ev::KvmExit {
            exit_reason: reason,
            isa: Some(isa),
            vcpu_id: Some(vcpu),
            ..Default::default()
        };
        self.ev(tid, cpu, exit)
    }
    fn entry(&mut self, tid: u32, cpu: u32) -> &mut Self {
        let entry = ev::KvmEntry {
            vcpu_id: Some(u64::from(tid - V0)),
            ..Default::default()
        };
        self.ev(tid, cpu, entry)
    }
    fn uexit(&mut self, tid: u32, cpu: u32, reason: u64) -> &mut Self {
        let exit = ev::KvmUserspaceExit {
            reason: Some(reason),
            errno: Some(0),
        };
        self.ev(tid, cpu, exit)
    }
    fn pio(&mut self, tid: u32, cpu: u32, port: u64) -> &mut Self {
        let pio = ev::KvmPio {
            rw: 1,
            port,
            size: 2,
            val: Some(1),
        };
        self.ev(tid, cpu, pio)
    }
    fn kvm_wakeup(&mut self, tid: u32, cpu: u32) -> &mut Self {
        let w = ev::KvmVcpuWakeup {
            ns: 1000,
            waited: 1,
            valid: Some(1),
        };
        self.ev(tid, cpu, w)
    }
    /// `kvm_apicv_accept_irq`: APICv/AVIC posted vector 0x30 to `apicid`.
    fn posted(&mut self, from: u32, cpu: u32, apicid: u64) -> &mut Self {
        let p = ev::KvmApicvAcceptIrq {
            apicid,
            vec: 0x30,
            dm: Some(0),
            tm: Some(0),
        };
        self.ev(from, cpu, p)
    }
    fn inj(&mut self, tid: u32, cpu: u32) -> &mut Self {
        let inj = ev::KvmInjVirq {
            vector: 0x30,
            soft: Some(0),
            reinjected: Some(0),
        };
        self.ev(tid, cpu, inj)
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
    fn wakeup(&mut self, pid: u32, target: u32) -> &mut Self {
        let w = ev::SchedWakeup {
            pid: u64::from(pid),
            target_cpu: Some(u64::from(target)),
            prio: Some(120),
            comm: Comm::default(),
        };
        self.ev(IOT, 0, w)
    }
    /// The demo's raise: kvm_set_irq then kvm_pic_set_irq, from the I/O thread.
    fn raise_pic(&mut self) -> &mut Self {
        let set = ev::KvmSetIrq {
            gsi: 0,
            level: 1,
            irq_source_id: Some(0),
        };
        self.ev(IOT, 0, set);
        self.ev(IOT, 0, ev::KvmPicSetIrq::default())
    }
    /// A `KVM_SIGNAL_MSI` from the VMM's I/O thread: `kvm_msi_set_irq` then the target's
    /// `kvm_apic_accept_irq` (irq_comm.c `kvm_set_msi` → lapic.c `__apic_accept_irq`).
    fn msi(&mut self, dest: u64) -> &mut Self {
        let msi = ev::KvmMsiSetIrq {
            address: 0xfee0_0000 | (dest << 12),
            data: 0x30,
        };
        self.ev(IOT, 0, msi);
        self.accept(IOT, 0, dest)
    }
    fn accept(&mut self, from: u32, cpu: u32, apicid: u64) -> &mut Self {
        let acc = ev::KvmApicAcceptIrq {
            apicid,
            vec: 0x30,
            dm: Some(0),
            tm: Some(0),
        };
        self.ev(from, cpu, acc)
    }
    fn irq(&mut self, cpu: u32, n: u64, entry: bool) -> &mut Self {
        if entry {
            self.ev(0, cpu, ev::IrqHandlerEntry { irq: n })
        } else {
            self.ev(0, cpu, ev::IrqHandlerExit { irq: n, ret: 0 })
        }
    }
    fn softirq(&mut self, cpu: u32, vec: u64, entry: bool) -> &mut Self {
        if entry {
            self.ev(0, cpu, ev::SoftirqEntry { vec })
        } else {
            self.ev(0, cpu, ev::SoftirqExit { vec })
        }
    }
    fn local_timer(&mut self, cpu: u32, entry: bool) -> &mut Self {
        if entry {
            self.ev(0, cpu, ev::LocalTimerEntry { vector: 0xec })
        } else {
            self.ev(0, cpu, ev::LocalTimerExit { vector: 0xec })
        }
    }
    fn lock(&mut self, tid: u32, cpu: u32, begin: bool) -> &mut Self {
        let lock_addr = 0xffff_8880_0000_1000;
        if begin {
            self.ev(
                tid,
                cpu,
                ev::ContentionBegin {
                    lock_addr,
                    flags: 0,
                },
            )
        } else {
            self.ev(tid, cpu, ev::ContentionEnd { lock_addr, ret: 0 })
        }
    }
    fn drops(&mut self, n: u64) -> &mut Self {
        self.ev(
            0,
            0,
            ev::Drops {
                kernel: n,
                userspace: 0,
                not_run: 0,
            },
        )
    }

    fn run(&self) -> Engine {
        run(&self.evs, EngineConfig::default())
    }
}

fn run(evs: &[Event], cfg: EngineConfig) -> Engine {
    let mut e = Engine::new(cfg);
    for ev in evs {
        e.push(ev);
    }
    e.flush();
    e
}

fn us(x: f64) -> u64 {
    (x * 1000.0) as u64
}

/// The single sample's causes as labels -> ns.
fn causes(e: &Engine) -> HashMap<String, u64> {
    assert_eq!(e.worst().len(), 1, "one sample expected: {:?}", e.worst());
    let s = &e.worst()[0];
    let sum: u64 = s.causes.iter().map(|c| c.1).sum();
    assert_eq!(sum, s.total_ns, "causes add up to the total");
    s.causes
        .iter()
        .map(|(c, ns)| (c.label(e.threads().names()), *ns))
        .collect()
}

fn expect(e: &Engine, want: &[(&str, f64)]) {
    let got = causes(e);
    let want: HashMap<String, u64> = want.iter().map(|(k, v)| (k.to_string(), us(*v))).collect();
    assert_eq!(got, want);
}

/// vCPU 0 running its guest on CPU 0 from t=0.
fn running_guest() -> Sim {
    let mut s = Sim::new();
    s.at(0.0).switch(0, 0, false, V0, "CPU 0/KVM").entry(V0, 0);
    s
}

#[test]
fn vmx_exit_lets_the_interrupt_in() {
    let mut s = running_guest();
    s.at(10.0).msi(0);
    s.at(30.0).exit(V0, 0, VMX, 1); // EXTERNAL_INTERRUPT
    s.at(31.0).inj(V0, 0);
    s.at(34.0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("guest", 20.0), ("exit:EXTERNAL_INTERRUPT", 4.0)]);
    let w = &e.worst()[0];
    assert_eq!(w.end_marker, EndMarker::KvmEntry);
    assert_eq!(w.opened_by, OpenedBy::MsiSetIrq);
    let v = e.vcpus().find(|v| v.tid == V0).unwrap();
    let h = &v.stats.exits[&(1, 1)].latency;
    assert_eq!(h.len(), 1);
    assert!(h.max() >= us(4.0) && h.max() <= us(4.05), "{}", h.max());
    assert_eq!(v.vcpu_id, Some(0));
}

#[test]
fn svm_exit_reasons_are_named_by_isa() {
    let mut s = running_guest();
    s.at(5.0).exit(V0, 0, SVM, 0x7b); // io
    s.at(6.0).msi(0);
    s.at(16.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("exit:io", 10.0)]);
}

#[test]
fn userspace_vmm_time_by_reason() {
    let mut s = running_guest();
    s.at(5.0).exit(V0, 0, VMX, 30).uexit(V0, 0, 2); // IO_INSTRUCTION -> KVM_EXIT_IO
    s.at(10.0).msi(0);
    s.at(60.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("vmm:IO", 50.0)]);
}

#[test]
fn preemption_names_the_task_that_took_the_cpu() {
    let mut s = running_guest();
    s.at(5.0).exit(V0, 0, VMX, 1);
    s.at(7.0).switch(0, V0, true, BUSY, "stress-ng");
    s.at(10.0).msi(0);
    s.at(110.0).switch(0, BUSY, true, V0, "CPU 0/KVM");
    s.at(112.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(
        &e,
        &[
            ("preempted:stress-ng:999", 100.0),
            ("exit:EXTERNAL_INTERRUPT", 2.0),
        ],
    );
}

/// The demo's flow on a kernel without kvm_entry (PVM): halted, raised, woken, switched in,
/// back in KVM_RUN, and the handler's port write closes the window.
#[test]
fn halted_vcpu_without_kvm_entry_uses_the_first_guest_exit() {
    let mut s = Sim::new();
    s.at(0.0).switch(1, 0, false, V0, "CPU 0/KVM");
    s.at(1.0).kvm_wakeup(V0, 1).pio(V0, 1, 0xe4).uexit(V0, 1, 2);
    s.at(3.0).pio(V0, 1, 0xe4);
    s.at(5.0).switch(1, V0, false, 0, "swapper/1"); // halts
    s.at(100.0).raise_pic();
    s.at(110.0).wakeup(V0, 1);
    s.at(125.0).switch(1, 0, true, V0, "CPU 0/KVM");
    s.at(130.0).kvm_wakeup(V0, 1);
    s.at(150.0).pio(V0, 1, 0xe2);
    let e = s.run();
    expect(&e, &[("halted", 10.0), ("wakeup", 15.0), ("kvm_run", 25.0)]);
    let w = &e.worst()[0];
    let labels: Vec<(u64, u64, String)> = w
        .segments
        .iter()
        .map(|(a, b, c)| (*a, *b, c.label(e.threads().names())))
        .collect();
    assert_eq!(
        labels,
        vec![
            (us(100.0), us(110.0), "halted".into()),
            (us(110.0), us(125.0), "wakeup".into()),
            (us(125.0), us(150.0), "kvm_run".into()),
        ],
        "segments tile the window, placeholders resolved"
    );
    assert_eq!(w.end_marker, EndMarker::FirstGuestExit);
    assert_eq!(w.opened_by, OpenedBy::SetIrq);
    assert_eq!(w.open_ns, us(100.0), "opened at kvm_set_irq");
    assert!(w.events.iter().any(|e| e.kind() == Ok(Kind::SchedWakeup)));
}

#[test]
fn waiting_for_a_busy_cpu_after_wakeup_is_preemption() {
    let mut s = Sim::new();
    s.at(0.0)
        .switch(1, 0, false, V0, "CPU 0/KVM")
        .kvm_wakeup(V0, 1);
    s.at(5.0).switch(1, V0, false, BUSY, "hog");
    s.at(100.0).raise_pic();
    s.at(110.0).wakeup(V0, 1);
    s.at(2110.0).switch(1, BUSY, true, V0, "CPU 0/KVM");
    s.at(2115.0).kvm_wakeup(V0, 1);
    s.at(2120.0).pio(V0, 1, 0xe2);
    let e = s.run();
    expect(
        &e,
        &[
            ("halted", 10.0),
            ("preempted:hog:999", 2000.0),
            ("kvm_run", 10.0),
        ],
    );
}

/// The hog runs out its slice, then a kernel thread runs before the vCPU: each gets the
/// time it held the CPU (the wait is not all given to the task switched from last).
#[test]
fn a_wait_behind_several_tasks_is_split_between_them() {
    const RCU: u32 = 15;
    let mut s = Sim::new();
    s.at(0.0)
        .switch(1, 0, false, V0, "CPU 0/KVM")
        .kvm_wakeup(V0, 1);
    s.at(5.0).switch(1, V0, false, BUSY, "hog");
    s.at(100.0).raise_pic();
    s.at(110.0).wakeup(V0, 1);
    s.at(4110.0).switch(1, BUSY, true, RCU, "rcu_preempt");
    s.at(4125.0).switch(1, RCU, false, V0, "CPU 0/KVM");
    s.at(4130.0).kvm_wakeup(V0, 1);
    s.at(4140.0).pio(V0, 1, 0xe2);
    let e = s.run();
    expect(
        &e,
        &[
            ("halted", 10.0),
            ("preempted:hog:999", 4000.0),
            ("preempted:rcu_preempt:15", 15.0),
            ("kvm_run", 15.0),
        ],
    );
}

/// Preempted after an exit (a host interrupt took it out of the guest), the vCPU waits
/// behind the hog, then behind a kworker.
#[test]
fn a_preempted_vcpu_waits_behind_each_task_that_ran() {
    const KWORKER: u32 = 77;
    let mut s = running_guest();
    s.at(10.0).msi(0);
    s.at(18.0).exit(V0, 0, VMX, 1); // EXTERNAL_INTERRUPT
    s.at(20.0).switch(0, V0, true, BUSY, "hog");
    s.at(520.0).switch(0, BUSY, true, KWORKER, "kworker/0:1");
    s.at(540.0).switch(0, KWORKER, true, V0, "CPU 0/KVM");
    s.at(545.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(
        &e,
        &[
            ("guest", 8.0),
            ("exit:EXTERNAL_INTERRUPT", 2.0 + 5.0),
            ("preempted:hog:999", 500.0),
            ("preempted:kworker/0:1:77", 20.0),
        ],
    );
}

/// Switched out runnable to the idle task (CFS bandwidth throttling, core scheduling's
/// forced idle): the wait is behind no task, `wakeup` as for an idle CPU, not a task pid 0.
#[test]
fn runnable_while_the_cpu_idles_is_no_tasks_doing() {
    let mut s = running_guest();
    s.at(10.0).msi(0);
    s.at(18.0).exit(V0, 0, VMX, 1); // EXTERNAL_INTERRUPT
    s.at(20.0).switch(0, V0, true, 0, "swapper/0");
    s.at(320.0).switch(0, 0, false, V0, "CPU 0/KVM");
    s.at(325.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(
        &e,
        &[
            ("guest", 8.0),
            ("exit:EXTERNAL_INTERRUPT", 2.0 + 5.0),
            ("wakeup", 300.0),
        ],
    );
}

/// Preempted on CPU 0 behind the hog, then pulled to CPU 1 where a kworker runs: the hog
/// has the time until the migration, the kworker the rest.
#[test]
fn a_vcpu_migrated_while_it_waits_waits_behind_the_new_cpus_task() {
    const KWORKER: u32 = 77;
    let mut s = running_guest();
    s.at(1.0).switch(1, 0, false, KWORKER, "kworker/1:1");
    s.at(10.0).msi(0);
    s.at(18.0).exit(V0, 0, VMX, 1);
    s.at(20.0).switch(0, V0, true, BUSY, "hog");
    s.at(120.0).ev(
        KWORKER,
        1,
        ev::SchedMigrateTask {
            pid: u64::from(V0),
            orig_cpu: 0,
            dest_cpu: 1,
        },
    );
    s.at(220.0).switch(1, KWORKER, true, V0, "CPU 0/KVM");
    s.at(225.0).inj(V0, 1).entry(V0, 1);
    let e = s.run();
    expect(
        &e,
        &[
            ("guest", 8.0),
            ("exit:EXTERNAL_INTERRUPT", 2.0 + 5.0),
            ("preempted:hog:999", 100.0),
            ("preempted:kworker/1:1:77", 100.0),
        ],
    );
}

/// A wake-up that names no target CPU (a text trace without `target_cpu`): the vCPU's old
/// CPU is not where it waits, so a switch there charges nobody; the wait goes to the task it
/// is switched in from.
#[test]
fn a_wakeup_without_a_target_cpu_charges_no_task_on_the_old_cpu() {
    const OTHER: u32 = 55;
    let mut s = Sim::new();
    s.at(0.0)
        .switch(1, 0, false, V0, "CPU 0/KVM")
        .kvm_wakeup(V0, 1);
    s.at(5.0).switch(1, V0, false, 0, "swapper/1");
    s.at(6.0).switch(0, 0, false, BUSY, "hog");
    s.at(100.0).raise_pic();
    s.at(110.0).ev(
        IOT,
        0,
        ev::SchedWakeup {
            pid: u64::from(V0),
            target_cpu: None,
            prio: None,
            comm: Comm::default(),
        },
    );
    s.at(150.0).switch(1, 0, false, OTHER, "other");
    s.at(300.0).switch(0, BUSY, true, V0, "CPU 0/KVM");
    s.at(305.0).kvm_wakeup(V0, 0);
    s.at(310.0).pio(V0, 0, 0xe2);
    let e = s.run();
    expect(
        &e,
        &[
            ("halted", 10.0),
            ("preempted:hog:999", 190.0),
            ("kvm_run", 10.0),
        ],
    );
}

/// An IRQ during exit handling during a preemption, a softirq after it, the local timer.
#[test]
fn nested_causes_irq_in_exit_handling_and_in_preemption() {
    let mut s = running_guest();
    s.at(10.0).msi(0);
    s.at(20.0).exit(V0, 0, VMX, 48); // EPT_VIOLATION
    s.at(22.0).irq(0, 24, true);
    s.at(26.0).irq(0, 24, false);
    s.at(30.0).switch(0, V0, true, BUSY, "hog");
    s.at(40.0).irq(0, 24, true);
    s.at(41.0).softirq(0, 3, true); // NET_RX inside the hardirq's tail
    s.at(45.0).softirq(0, 3, false);
    s.at(46.0).irq(0, 24, false);
    s.at(50.0).local_timer(0, true);
    s.at(52.0).local_timer(0, false);
    s.at(80.0).switch(0, BUSY, true, V0, "CPU 0/KVM");
    s.at(85.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(
        &e,
        &[
            ("guest", 10.0),
            ("exit:EPT_VIOLATION", 2.0 + 4.0 + 5.0),
            ("hardirq:24", 4.0 + 1.0 + 1.0),
            ("softirq:NET_RX", 4.0),
            ("apic:local_timer", 2.0),
            ("preempted:hog:999", 10.0 + 4.0 + 28.0),
        ],
    );
}

#[test]
fn lock_contention_in_the_vcpu_thread() {
    let mut s = running_guest();
    s.at(10.0).exit(V0, 0, VMX, 48);
    s.at(11.0).msi(0);
    s.at(12.0).lock(V0, 0, true);
    s.at(42.0).lock(V0, 0, false);
    s.at(44.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("exit:EPT_VIOLATION", 3.0), ("lock", 30.0)]);
}

#[test]
fn posted_into_a_running_guest_is_delivered_at_the_posting() {
    // APICv: accepted and posted while the target runs its guest: the hardware delivers
    // it there (vmx.c `vmx_deliver_posted_interrupt`), no exit, no injection.
    let mut s = running_guest();
    s.at(10.0).accept(IOT, 1, 0);
    s.at(11.0).posted(IOT, 1, 0);
    s.at(500.0).exit(V0, 0, VMX, 48);
    s.at(510.0).entry(V0, 0);
    let e = s.run();
    let w = &e.worst()[0];
    assert_eq!(
        (w.total_ns, w.end_marker),
        (us(1.0), EndMarker::PostedInGuest)
    );
    expect(&e, &[("guest", 1.0)]);

    // Posted while handling an exit: delivered at the next entry.
    let mut s = running_guest();
    s.at(10.0).exit(V0, 0, VMX, 48);
    s.at(12.0).accept(V1, 1, 0).posted(V1, 1, 0);
    s.at(20.0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("exit:EPT_VIOLATION", 8.0)]);
    assert_eq!(e.worst()[0].end_marker, EndMarker::PostedEntry);
    assert_eq!(e.worst()[0].opened_by, OpenedBy::ApicAcceptIrq);

    // Not posted (no APICv): an entry without kvm_inj_virq delivers nothing; the one after
    // the injection does.
    let mut s = running_guest();
    s.at(10.0).exit(V0, 0, VMX, 48);
    s.at(12.0).accept(V1, 1, 0);
    s.at(20.0).entry(V0, 0);
    s.at(50.0).exit(V0, 0, VMX, 7); // INTERRUPT_WINDOW
    s.at(52.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(
        &e,
        &[
            ("exit:EPT_VIOLATION", 8.0),
            ("guest:irqs-off", 30.0),
            ("exit:INTERRUPT_WINDOW", 2.0),
        ],
    );
    assert_eq!(e.worst()[0].end_marker, EndMarker::KvmEntry);
}

#[test]
fn drops_mark_open_windows_incomplete() {
    let mut s = running_guest();
    s.at(1.0).drops(0);
    s.at(10.0).msi(0);
    s.at(20.0).drops(5); // open window: lost
    s.at(30.0).exit(V0, 0, VMX, 1);
    s.at(35.0).inj(V0, 0).entry(V0, 0);
    s.at(40.0).msi(0);
    s.at(50.0).exit(V0, 0, VMX, 1);
    s.at(52.0).inj(V0, 0).entry(V0, 0);
    s.at(60.0).drops(5); // checkpoint, nothing new lost: the second sample stands
    s.at(70.0).msi(0);
    s.at(80.0).exit(V0, 0, VMX, 1);
    s.at(81.0).inj(V0, 0).entry(V0, 0);
    s.at(90.0).drops(6); // lost since the last checkpoint: the third sample may be wrong
    let e = s.run();
    let v = e.vcpus().find(|v| v.tid == V0).unwrap();
    assert_eq!(v.stats.incomplete, 2);
    assert_eq!(v.stats.irq_to_guest.len(), 1, "only the clean sample");
    assert_eq!(e.dropped, 6);
    expect(&e, &[("guest", 10.0), ("exit:EXTERNAL_INTERRUPT", 2.0)]);
}

#[test]
fn a_capture_starting_mid_exit_gives_no_wrong_sample() {
    let mut s = Sim::new();
    // The first thing seen of vCPU 0 is an entry: no exit sample, state known from here.
    s.at(0.0).msi(0); // before anything is known of vCPU 0: unresolvable
    s.at(1.0).entry(V0, 0);
    s.at(5.0).exit(V0, 0, VMX, 1);
    s.at(9.0).entry(V0, 0);
    let e = s.run();
    let v = e.vcpus().find(|v| v.tid == V0).unwrap();
    assert_eq!(v.stats.exits[&(1, 1)].latency.len(), 1);
    assert_eq!(v.stats.exits[&(1, 1)].count, 1);
    assert!(e.worst().is_empty());
    assert_eq!(e.unresolved_raises(), 1);

    // A window opened while the vCPU's state is unknown is incomplete.
    let mut s = Sim::new();
    s.at(0.0).pio(V0, 0, 0x80); // known to exist, state partly known
    let mut e = Engine::new(EngineConfig::default());
    for ev in &s.evs {
        e.push(ev);
    }
    e.flush();
    assert!(e.worst().is_empty());
}

#[test]
fn reordering_within_the_window_gives_the_same_result() {
    let mut s = running_guest();
    s.at(10.0).msi(0);
    s.at(20.0).exit(V0, 0, VMX, 48);
    s.at(22.0).irq(0, 24, true);
    s.at(26.0).irq(0, 24, false);
    s.at(30.0).switch(0, V0, true, BUSY, "hog");
    s.at(80.0).switch(0, BUSY, true, V0, "CPU 0/KVM");
    // One thread's events never swap (one CPU's ring is in order): apart in time here.
    s.at(84.0).inj(V0, 0);
    s.at(85.0).entry(V0, 0);
    let ordered = s.run();
    let mut shuffled = s.evs.clone();
    // Swap neighbours pairwise (bounded disorder, as across CPUs).
    for i in (1..shuffled.len() - 1).step_by(2) {
        shuffled.swap(i, i + 1);
    }
    let e = run(&shuffled, EngineConfig::default());
    assert_eq!(causes(&e), causes(&ordered));
    assert_eq!(e.late_events(), 0);
}

#[test]
fn interrupts_go_to_the_vcpu_they_name() {
    let mut s = running_guest();
    s.at(0.0).switch(1, 0, false, V1, "CPU 1/KVM").entry(V1, 1);
    s.at(10.0).msi(1);
    s.at(12.0).exit(V1, 1, VMX, 1);
    s.at(15.0).inj(V1, 1).entry(V1, 1);
    let e = s.run();
    assert_eq!(e.worst()[0].tid, V1);
    let v0 = e.vcpus().find(|v| v.tid == V0).unwrap();
    assert!(v0.stats.irq_to_guest.is_empty());
}

#[test]
fn a_second_raise_while_one_is_pending_is_coalesced() {
    let mut s = running_guest();
    s.at(10.0).msi(0);
    s.at(12.0).msi(0);
    s.at(20.0).exit(V0, 0, VMX, 1).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    let v = e.vcpus().find(|v| v.tid == V0).unwrap();
    assert_eq!(v.stats.coalesced, 1);
    assert_eq!(e.worst()[0].total_ns, us(10.0));
}

#[test]
fn out_of_guest_time_covers_the_whole_run() {
    let mut s = running_guest();
    s.at(10.0).exit(V0, 0, VMX, 12); // HLT
    s.at(12.0).switch(0, V0, false, 0, "swapper/0");
    s.at(100.0).wakeup(V0, 0);
    s.at(103.0).switch(0, 0, true, V0, "CPU 0/KVM");
    s.at(104.0).entry(V0, 0);
    s.at(200.0).exit(V0, 0, VMX, 1);
    let e = s.run();
    let v = e.vcpus().find(|v| v.tid == V0).unwrap();
    let total: u64 = v.stats.state_ns.values().sum();
    assert_eq!(total, us(200.0));
    assert_eq!(v.stats.state_ns[&Cause::Guest], us(10.0 + 96.0));
    assert_eq!(v.stats.state_ns[&Cause::Halted], us(88.0));
    assert_eq!(
        v.stats.state_ns[&Cause::Exit { isa: 1, reason: 12 }],
        us(2.0)
    );
    assert_eq!(
        v.stats.state_ns[&Cause::KvmRun],
        us(1.0),
        "woken, back in KVM_RUN"
    );
}

#[test]
fn unknown_vcpu_ids_fall_back_to_the_only_vcpu() {
    let mut s = Sim::new();
    s.evs.clear();
    s.thread(V0, None, "vcpu-thread");
    s.at(0.0)
        .switch(0, 0, false, V0, "vcpu-thread")
        .pio(V0, 0, 0x80);
    s.at(1.0).switch(0, V0, false, 0, "swapper/0");
    s.at(10.0).raise_pic();
    s.at(20.0).wakeup(V0, 0);
    s.at(21.0).switch(0, 0, true, V0, "vcpu-thread");
    s.at(25.0).pio(V0, 0, 0xe2);
    let e = s.run();
    // No kvm_vcpu_wakeup says the sleep was a halt (kvm_main.c `kvm_vcpu_halt`).
    expect(&e, &[("blocked", 10.0), ("wakeup", 1.0), ("kvm_run", 4.0)]);
}

#[test]
fn another_vms_vcpu_named_as_a_preempter_is_not_taken_for_a_vcpu() {
    let mut s = running_guest();
    // The other VM's vCPU thread, announced by name only.
    s.ev(555, 0, ev::ThreadInfo::name_only("CPU 0/KVM"));
    s.at(5.0).exit(V0, 0, VMX, 1);
    s.at(7.0).switch(0, V0, true, 555, "CPU 0/KVM");
    s.at(10.0).msi(0);
    s.at(50.0).switch(0, 555, true, V0, "CPU 0/KVM");
    s.at(52.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    assert_eq!(e.vcpus().count(), 1, "only the traced vCPU");
    expect(
        &e,
        &[
            ("preempted:CPU 0/KVM:555", 40.0),
            ("exit:EXTERNAL_INTERRUPT", 2.0),
        ],
    );
}

/// kvmtrace's own threads are the `tracer`, whether they take the CPU from the running vCPU
/// or keep a woken one waiting (any other task is `preempted`, as the tests above show).
#[test]
fn time_lost_to_the_tracers_own_threads_is_the_tracer_cause() {
    const TRACER: u32 = 777;
    let mut s = running_guest();
    s.ev(TRACER, 0, ev::ThreadInfo::tracer("kvmtrace"));
    s.at(5.0).exit(V0, 0, VMX, 1);
    s.at(7.0).switch(0, V0, true, TRACER, "kvmtrace");
    s.at(10.0).msi(0);
    s.at(50.0).switch(0, TRACER, true, V0, "CPU 0/KVM");
    s.at(52.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("tracer", 40.0), ("exit:EXTERNAL_INTERRUPT", 2.0)]);
    assert!(e.threads().is_tracer(TRACER) && !e.threads().is_tracer(BUSY));

    // Woken while the tracer has its CPU: the wait is the tracer's too.
    let mut s = Sim::new();
    s.ev(TRACER, 0, ev::ThreadInfo::tracer("kvmtrace"));
    s.at(0.0)
        .switch(1, 0, false, V0, "CPU 0/KVM")
        .kvm_wakeup(V0, 1);
    s.at(5.0).switch(1, V0, false, TRACER, "kvmtrace");
    s.at(100.0).raise_pic();
    s.at(110.0).wakeup(V0, 1);
    s.at(610.0).switch(1, TRACER, true, V0, "CPU 0/KVM");
    s.at(615.0).kvm_wakeup(V0, 1);
    s.at(620.0).pio(V0, 1, 0xe2);
    let e = s.run();
    expect(
        &e,
        &[("halted", 10.0), ("tracer", 500.0), ("kvm_run", 10.0)],
    );
}

#[test]
fn exits_whose_entry_is_not_in_the_trace_are_counted_not_measured() {
    let mut s = Sim::new();
    s.at(1.0).exit(V0, 0, VMX, 48);
    s.at(3.0).entry(V0, 0);
    s.at(5.0).exit(V0, 0, VMX, 48);
    s.at(6.0).exit(V1, 1, SVM, 0x400); // the trace ends inside these two exits
    let e = s.run();
    let st = &e.vcpu(V0).unwrap().stats.exits[&(1, 48)];
    assert_eq!((st.count, st.latency.len()), (2, 1));
    assert!(st.latency.equivalent(st.latency.max(), us(2.0)));
    let st = &e.vcpu(V1).unwrap().stats.exits[&(2, 0x400)];
    assert_eq!((st.count, st.latency.len()), (1, 0));
    let r = crate::report::Report::build("x", &Default::default(), None, None, &e);
    let text = r.to_text();
    assert!(
        text.contains("exits: 1 exit, none with its entry in the trace"),
        "{text}"
    );
    assert!(
        text.contains("exits: 2 exits, 1 with their entry"),
        "{text}"
    );
}

/// A second VM whose vCPU 0 shares the id: a raise from a task of neither VM (a kworker)
/// opens a tentative window on both, and the one it wakes keeps it.
#[test]
fn a_raise_from_no_vm_goes_to_the_vcpu_it_wakes() {
    const OTHER_VM: u32 = 200;
    const W0: u32 = 201;
    const KWORKER: u32 = 300;
    let mut s = Sim::new();
    let at = |t: u64, tid: u32, tgid: u32, cpu: u32| Origin {
        ts_ns: t,
        tid,
        tgid,
        cpu,
    };
    s.evs.push(Event::new(
        at(0, W0, OTHER_VM, 1),
        &ev::ThreadInfo::vcpu_thread(0, "CPU 0/KVM"),
    ));
    // Both vCPU 0s halt: V0 on CPU 0, W0 on CPU 1.
    s.at(1.0)
        .switch(0, 0, false, V0, "CPU 0/KVM")
        .exit(V0, 0, VMX, 12);
    s.at(2.0).switch(0, V0, false, 0, "swapper/0");
    s.evs.push(Event::new(
        at(1_000, W0, OTHER_VM, 1),
        &ev::KvmExit {
            exit_reason: 12,
            isa: Some(1),
            vcpu_id: Some(0),
            ..Default::default()
        },
    ));
    s.evs.push(Event::new(
        at(2_000, W0, OTHER_VM, 1),
        &ev::SchedSwitch {
            prev_pid: u64::from(W0),
            prev_state: 1,
            next_pid: 0,
            next_comm: Comm::new("swapper/1"),
        },
    ));
    // A kworker's slow-path irqfd for vector 0x30 on vcpu_id 0, of one of the two VMs.
    let kw = |t: u64| at(t, KWORKER, KWORKER, 1);
    s.evs.push(Event::new(
        kw(10_000),
        &ev::KvmSetIrq {
            gsi: 24,
            level: 1,
            irq_source_id: Some(0),
        },
    ));
    s.evs.push(Event::new(
        kw(11_000),
        &ev::KvmApicAcceptIrq {
            apicid: 0,
            vec: 0x30,
            dm: Some(0),
            tm: Some(0),
        },
    ));
    s.evs.push(Event::new(
        kw(12_000),
        &ev::SchedWakeup {
            pid: u64::from(W0),
            target_cpu: Some(1),
            prio: Some(120),
            comm: Comm::default(),
        },
    ));
    s.evs.push(Event::new(
        at(20_000, 0, 0, 1),
        &ev::SchedSwitch {
            prev_pid: 0,
            prev_state: 0,
            next_pid: u64::from(W0),
            next_comm: Comm::new("CPU 0/KVM"),
        },
    ));
    for (t, p) in [
        (
            21_000,
            Payload::KvmVcpuWakeup(ev::KvmVcpuWakeup {
                ns: 1,
                waited: 1,
                valid: Some(1),
            }),
        ),
        (
            22_000,
            Payload::KvmInjVirq(ev::KvmInjVirq {
                vector: 0x30,
                soft: Some(0),
                reinjected: Some(0),
            }),
        ),
        (
            23_000,
            Payload::KvmEntry(ev::KvmEntry {
                vcpu_id: Some(0),
                ..Default::default()
            }),
        ),
    ] {
        s.evs.push(p.event(at(t, W0, OTHER_VM, 1)));
    }
    let e = s.run();
    assert_eq!(e.worst().len(), 1, "{:?}", e.worst());
    let w = &e.worst()[0];
    assert_eq!((w.tid, w.total_ns, w.open_ns), (W0, us(13.0), us(10.0)));
    assert_eq!(w.vector, Some(0x30));
    assert!(
        e.vcpu(V0).unwrap().windows.is_empty(),
        "the other candidate's dropped"
    );
    assert_eq!(e.vcpu(V0).unwrap().stats.incomplete, 0);
    assert_eq!(e.unresolved_raises(), 0);
}

/// QEMU routes a GSI to the PIC first, then the IOAPIC: when the IOAPIC's accept follows in
/// the same raise, the PIC's window is dropped (one raise, one interrupt).
#[test]
fn a_raise_through_the_pic_and_a_lapic_is_one_interrupt() {
    let mut s = running_guest();
    s.at(5.0).exit(V0, 0, VMX, 48);
    s.at(10.0).raise_pic();
    s.at(11.0).accept(IOT, 0, 0);
    s.at(20.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("exit:EPT_VIOLATION", 10.0)]);
    let v = e.vcpu(V0).unwrap();
    assert!(v.windows.is_empty());
    assert_eq!((v.stats.coalesced, v.stats.incomplete), (0, 0));
}

/// A vCPU asleep in an EPT violation (a page being swapped in, userfaultfd) is not halted:
/// `blocked:exit:EPT_VIOLATION` (mmu.c `__kvm_faultin_pfn` may sleep; no kvm_vcpu_wakeup).
#[test]
fn a_sleep_inside_an_exit_is_blocked_in_that_exit() {
    let mut s = running_guest();
    s.at(5.0).exit(V0, 0, VMX, 48);
    s.at(6.0).switch(0, V0, false, 0, "swapper/0");
    s.at(10.0).msi(0);
    s.at(2010.0).wakeup(V0, 0);
    s.at(2012.0).switch(0, 0, true, V0, "CPU 0/KVM");
    s.at(2015.0).inj(V0, 0).entry(V0, 0);
    let e = s.run();
    expect(
        &e,
        &[
            ("blocked:exit:EPT_VIOLATION", 2000.0),
            ("wakeup", 2.0),
            ("exit:EPT_VIOLATION", 3.0),
        ],
    );
}

/// A halted vCPU woken with no raise seen (VT-d posted interrupt: `pi_wakeup_handler` →
/// `kvm_vcpu_wake_up`, posted_intr.c:218-232) opens a window at the wake-up; one that goes
/// back to the VMM before entering was woken by a signal and is dropped.
#[test]
fn a_wakeup_without_a_raise_opens_a_window_on_vmx_and_svm_hosts() {
    let mut s = running_guest();
    s.at(5.0).exit(V0, 0, VMX, 12);
    s.at(6.0).switch(0, V0, false, 0, "swapper/0");
    s.at(100.0).wakeup(V0, 0);
    s.at(103.0).switch(0, 0, true, V0, "CPU 0/KVM");
    s.at(104.0).kvm_wakeup(V0, 0);
    s.at(106.0).entry(V0, 0);
    // Again, but this time a signal: the vCPU leaves for the VMM.
    s.at(110.0).exit(V0, 0, VMX, 12);
    s.at(111.0).switch(0, V0, false, 0, "swapper/0");
    s.at(200.0).wakeup(V0, 0);
    s.at(201.0).switch(0, 0, true, V0, "CPU 0/KVM");
    s.at(202.0).uexit(V0, 0, 10);
    let e = s.run();
    expect(&e, &[("wakeup", 3.0), ("kvm_run", 3.0)]);
    let w = &e.worst()[0];
    assert_eq!(
        (w.opened_by, w.end_marker),
        (OpenedBy::Wakeup, EndMarker::WokenEntry)
    );
    assert_eq!(e.coverage().without_raise, 1);
    assert_eq!(
        e.vcpu(V0).unwrap().stats.incomplete,
        0,
        "the signal's dropped"
    );
}

/// The LAPIC timer armed by vCPU 0 on CPU 0 fires on housekeeping CPU 1 (nohz_full): the
/// hrtimer, not the CPU, says whose it is.
#[test]
fn a_lapic_timer_goes_to_the_vcpu_that_armed_it_wherever_it_fires() {
    const TIMER_FN: u64 = 0xffff_ffff_c0de_0000;
    let mut s = running_guest();
    s.at(0.0).switch(1, 0, false, V1, "CPU 1/KVM").entry(V1, 1);
    s.at(2.0).exit(V0, 0, VMX, 32);
    s.ev(
        V0,
        0,
        ev::HrtimerStart {
            hrtimer: 0xabc0,
            function: TIMER_FN,
            expires: 0,
            mode: Some(0),
        },
    );
    s.at(3.0).entry(V0, 0);
    s.at(50.0).ev(
        0,
        1,
        ev::HrtimerExpireEntry {
            hrtimer: 0xabc0,
            function: TIMER_FN,
            now: None,
        },
    );
    s.at(60.0).exit(V0, 0, VMX, 1);
    s.at(61.0).ev(
        V0,
        0,
        ev::KvmApicAcceptIrq {
            apicid: 0,
            vec: 0xec,
            dm: Some(0),
            tm: Some(0),
        },
    );
    s.ev(
        V0,
        0,
        ev::KvmInjVirq {
            vector: 0xec,
            soft: Some(0),
            reinjected: Some(0),
        },
    );
    s.at(63.0).entry(V0, 0);
    let evs = s.evs.clone();
    let e = run(
        &evs,
        EngineConfig {
            apic_timer_fn: TIMER_FN,
            ..EngineConfig::default()
        },
    );
    expect(&e, &[("guest", 10.0), ("exit:EXTERNAL_INTERRUPT", 3.0)]);
    let w = &e.worst()[0];
    assert_eq!(
        (w.tid, w.opened_by, w.vector),
        (V0, OpenedBy::LapicTimer, Some(0xec))
    );
    assert!(e.vcpu(V1).unwrap().stats.irq_to_guest.is_empty());
}

/// The LAPIC timer on the VMX preemption timer: the exit is the raise (vmx.c
/// `handle_fastpath_preemption_timer`); after an `[immediate exit]` entry it is KVM's own.
#[test]
fn a_preemption_timer_exit_is_the_timers_raise_unless_kvm_asked_for_it() {
    let mut s = running_guest();
    s.at(10.0).exit(V0, 0, VMX, 52);
    s.at(11.0).ev(
        V0,
        0,
        ev::KvmApicAcceptIrq {
            apicid: 0,
            vec: 0xec,
            dm: Some(0),
            tm: Some(0),
        },
    );
    s.ev(
        V0,
        0,
        ev::KvmInjVirq {
            vector: 0xec,
            soft: Some(0),
            reinjected: Some(0),
        },
    );
    s.at(12.0).ev(
        V0,
        0,
        ev::KvmEntry {
            vcpu_id: Some(0),
            immediate_exit: Some(1),
            ..Default::default()
        },
    );
    s.at(13.0).exit(V0, 0, VMX, 52); // KVM's own
    s.at(14.0).entry(V0, 0);
    let e = s.run();
    expect(&e, &[("exit:PREEMPTION_TIMER", 2.0)]);
    assert_eq!(e.worst()[0].opened_by, OpenedBy::PreemptionTimer);
    assert!(e.vcpu(V0).unwrap().windows.is_empty());
}

/// Two vectors pending at once: each its own window, delivered one entry at a time
/// (x86.c `kvm_check_and_inject_events` injects one per entry); the same vector raised again
/// while pending is coalesced.
#[test]
fn several_vectors_pending_each_have_a_window() {
    let mut s = running_guest();
    s.at(10.0).exit(V0, 0, VMX, 48);
    s.at(11.0).accept(IOT, 1, 0); // 0x30
    s.at(12.0).ev(
        IOT,
        1,
        ev::KvmApicAcceptIrq {
            apicid: 0,
            vec: 0x31,
            dm: Some(0),
            tm: Some(0),
        },
    );
    s.at(13.0).accept(IOT, 1, 0); // 0x30 again, still pending
    s.at(20.0).inj(V0, 0).entry(V0, 0); // 0x30
    s.at(30.0).exit(V0, 0, VMX, 7);
    s.at(31.0).ev(
        V0,
        0,
        ev::KvmInjVirq {
            vector: 0x31,
            soft: Some(0),
            reinjected: Some(0),
        },
    );
    s.at(32.0).entry(V0, 0);
    let e = s.run();
    let v = e.vcpu(V0).unwrap();
    assert_eq!(v.stats.irq_to_guest.len(), 2);
    assert_eq!(v.stats.coalesced, 1);
    let totals: Vec<(Option<u32>, u64)> =
        e.worst().iter().map(|s| (s.vector, s.total_ns)).collect();
    assert_eq!(totals, vec![(Some(0x31), us(20.0)), (Some(0x30), us(9.0))]);
    let late = &e.worst()[0];
    let causes: HashMap<String, u64> = late
        .causes
        .iter()
        .map(|(c, ns)| (c.label(e.threads().names()), *ns))
        .collect();
    assert_eq!(causes["guest:irqs-off"], us(10.0));
}

/// A VM that exited takes no more raises: the next VM's vCPU 0 gets its own, even before
/// the engine knows its id (the exporter's churn: one VM after another).
#[test]
fn a_gone_vms_vcpu_does_not_take_a_new_vms_raises() {
    const NEW_VM: u32 = 300;
    const N0: u32 = 301;
    const NIOT: u32 = 310;
    let mut s = running_guest();
    let at = |t: u64, tid: u32, tgid: u32| Origin {
        ts_ns: t,
        tid,
        tgid,
        cpu: 1,
    };
    s.at(5.0).ev(VM, 0, ev::ThreadInfo::vm_gone("old"));
    // The new VM's vCPU runs (its id not known yet), then its I/O thread raises an MSI.
    s.evs
        .push(Event::new(at(10_000, N0, NEW_VM), &ev::KvmEntry::default()));
    s.evs.push(Event::new(
        at(20_000, NIOT, NEW_VM),
        &ev::KvmApicAcceptIrq {
            apicid: 0,
            vec: 0x30,
            dm: Some(0),
            tm: Some(0),
        },
    ));
    s.evs.push(Event::new(
        at(25_000, N0, NEW_VM),
        &ev::KvmExit {
            exit_reason: 1,
            isa: Some(1),
            ..Default::default()
        },
    ));
    for (t, p) in [
        (
            26_000,
            Payload::KvmInjVirq(ev::KvmInjVirq {
                vector: 0x30,
                soft: Some(0),
                reinjected: Some(0),
            }),
        ),
        (27_000, Payload::KvmEntry(ev::KvmEntry::default())),
    ] {
        s.evs.push(p.event(at(t, N0, NEW_VM)));
    }
    let e = s.run();
    assert_eq!(e.worst().len(), 1, "{:?}", e.worst());
    assert_eq!((e.worst()[0].tid, e.worst()[0].total_ns), (N0, us(7.0)));
    assert!(e.vcpu(V0).unwrap().windows.is_empty());
}

/// KVM's debugfs `vcpu<N>/pid` reads 0 before the vCPU's first KVM_RUN (kvm_main.c:
/// 4206-4214): a capture of a VM started paused (`qemu -S`) may announce tid 0 as vCPU 0.
/// The idle task switching in and out must not become a vCPU.
#[test]
fn the_idle_task_is_never_a_vcpu() {
    let mut s = Sim::new();
    s.evs.push(Event::new(
        Origin {
            ts_ns: 0,
            tid: 0,
            tgid: VM,
            cpu: 0,
        },
        &ev::ThreadInfo::vcpu_thread(0, ""),
    ));
    s.at(1.0).switch(0, 0, false, V0, "CPU 0/KVM").entry(V0, 0);
    s.at(10.0).exit(V0, 0, VMX, 12);
    s.at(11.0).switch(0, V0, false, 0, "swapper/0");
    let e = s.run();
    let tids: Vec<u32> = e.vcpus().map(|v| v.tid).collect();
    assert_eq!(tids, vec![V0]);
    let threads: Vec<u32> = e
        .threads()
        .iter()
        .filter(|(_, t)| t.is_vcpu)
        .map(|(tid, _)| tid)
        .collect();
    assert_eq!(threads, vec![V0, V1], "the threads the stream announced");
    assert_eq!(e.vcpu(V0).and_then(|v| v.vcpu_id), Some(0));
}

/// KVM_RUN returning an error: -EINTR is a signal's `KVM_EXIT_INTR` whatever the traced reason
/// says (a text trace says only `restart`), another errno is `vmm:error` (x86.c: -EAGAIN for
/// an AP woken from wait-for-SIPI, its stale exit reason 0).
#[test]
fn kvm_run_errors_are_named_as_the_kernel_prints_them() {
    let uexit = |s: &mut Sim, reason: Option<u64>, errno: u64| {
        s.ev(
            V0,
            0,
            ev::KvmUserspaceExit {
                reason,
                errno: Some(errno),
            },
        );
    };
    let mut s = running_guest();
    s.at(10.0);
    uexit(&mut s, None, 0u64.wrapping_sub(4)); // imported `reason restart (4)`
    s.at(20.0).pio(V0, 0, 0x70);
    s.at(30.0);
    uexit(&mut s, Some(10), 0xffff_fffc); // -EINTR widened as a u32
    s.at(45.0).pio(V0, 0, 0x70);
    s.at(50.0);
    uexit(&mut s, Some(0), 0u64.wrapping_sub(11)); // -EAGAIN, stale reason 0
    s.at(80.0).pio(V0, 0, 0x70);
    let e = s.run();
    let v = e.vcpu(V0).unwrap();
    let comms = HashMap::new();
    let by: HashMap<String, u64> = v
        .stats
        .state_ns
        .iter()
        .map(|(c, ns)| (c.label(&comms), *ns))
        .collect();
    assert_eq!(by.get("vmm:INTR"), Some(&us(10.0 + 15.0)), "{by:?}");
    assert_eq!(by.get("vmm:error"), Some(&us(30.0)), "{by:?}");
    assert_eq!(by.get("vmm:UNKNOWN"), None, "{by:?}");
}

/// The in-kernel PIT raises IRQ 0 from its own kernel thread, `kvm-pit/<VMM pid>` (i8254.c
/// `kvm_create_pit` names it, `pit_do_work` raises): the raise is the named VM's, here the
/// only one traced. One named after a process that is no VM here (another VM, untraced: with
/// `-p` its raises still come through on a traced vCPU's CPU) is no traced vCPU's, though
/// the only-VM rule would otherwise take it.
#[test]
fn pit_kernel_thread_raises_go_to_the_vm_it_names() {
    const PIT: u32 = 120;
    const OTHER_PIT: u32 = 121;
    let mut s = Sim::new();
    let kthread = |s: &mut Sim, tid: u32, rec: Event| {
        let mut e = rec;
        e.tid = tid;
        e.tgid = tid;
        e.cpu = 1;
        e.ts_ns = s.t;
        s.evs.push(e);
    };
    let origin = Origin {
        ts_ns: 0,
        tid: 0,
        tgid: 0,
        cpu: 1,
    };
    let pulse = |s: &mut Sim, tid: u32| {
        kthread(
            s,
            tid,
            Event::new(
                origin,
                &ev::KvmSetIrq {
                    gsi: 0,
                    level: 1,
                    irq_source_id: Some(2),
                },
            ),
        );
        kthread(s, tid, Event::new(origin, &ev::KvmPicSetIrq::default()));
    };
    s.at(0.0);
    kthread(
        &mut s,
        PIT,
        Event::new(origin, &ev::ThreadInfo::name_only("kvm-pit/100")),
    );
    kthread(
        &mut s,
        OTHER_PIT,
        Event::new(origin, &ev::ThreadInfo::name_only("kvm-pit/555")),
    );
    // vCPU 0 halts on CPU 0.
    s.at(1.0)
        .switch(0, 0, false, V0, "CPU 0/KVM")
        .kvm_wakeup(V0, 0);
    s.at(5.0).switch(0, V0, false, 0, "swapper/0");
    // The other VM's PIT ticks: nothing for vCPU 0.
    s.at(50.0);
    pulse(&mut s, OTHER_PIT);
    // This VM's: vCPU 0 is woken and takes it.
    s.at(100.0);
    pulse(&mut s, PIT);
    s.at(110.0).wakeup(V0, 0);
    s.at(120.0).switch(0, 0, false, V0, "CPU 0/KVM");
    s.at(125.0).kvm_wakeup(V0, 0);
    s.at(130.0).pio(V0, 0, 0x20);
    let e = s.run();
    let got: Vec<(u64, u64)> = e.worst().iter().map(|w| (w.open_ns, w.total_ns)).collect();
    assert_eq!(got, vec![(us(100.0), us(30.0))]);
}
