//! The audit on fake `/proc` and `/sys` trees: an untuned host that shows every finding,
//! a tuned one that shows none, and the ranking by a capture's causes.

use std::path::{Path, PathBuf};

use super::host::HostView;
use super::*;

/// A fake root directory, removed at the end.
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Tree {
    /// A new tree, unique to the call: tests run in parallel.
    fn new(name: &str) -> Tree {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("kvmtrace-check-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tree(d)
    }

    fn file(&self, rel: &str, content: &str) -> &Tree {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn link(&self, rel: &str, target: &str) -> &Tree {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// A vCPU thread of VMM `pid`: allowed CPUs, and (last CPU, policy, RT priority).
    fn vcpu(&self, pid: u32, tid: u32, id: u32, allowed: &str, sched: (u32, u32, u32)) {
        let (cpu, policy, prio) = sched;
        let mut f: Vec<String> = (3..=52).map(|_| "0".to_string()).collect();
        f[39 - 3] = cpu.to_string();
        f[40 - 3] = prio.to_string();
        f[41 - 3] = policy.to_string();
        let t = format!("proc/{pid}/task/{tid}");
        self.file(&format!("{t}/comm"), &format!("CPU {id}/KVM\n"))
            .file(
                &format!("{t}/stat"),
                &format!("{tid} (CPU {id}/KVM) S {}\n", f[1..].join(" ")),
            )
            .file(
                &format!("{t}/status"),
                &format!("Name:\tCPU {id}/KVM\nCpus_allowed_list:\t{allowed}\n"),
            );
    }

    /// A QEMU process `pid` named `name` holding a vCPU fd, with its memory.
    fn vmm(&self, pid: u32, name: &str, smaps: &str, numa_maps: &str) {
        let p = format!("proc/{pid}");
        self.file(&format!("{p}/comm"), "qemu-system-x86\n")
            .file(
                &format!("{p}/cmdline"),
                &format!("qemu-system-x86_64\0-name\0guest={name},debug-threads=on\0"),
            )
            .link(&format!("{p}/fd/12"), "anon_inode:kvm-vcpu:0")
            .link(&format!("{p}/fd/3"), "/dev/kvm")
            .file(&format!("{p}/smaps"), smaps)
            .file(&format!("{p}/numa_maps"), numa_maps);
        self.vcpu(pid, pid, 99, "0-3", (0, 0, 0));
        // The main thread is no vCPU.
        self.file(&format!("{p}/task/{pid}/comm"), "qemu-system-x86\n");
    }

    /// What both trees share.
    fn base(&self) {
        self.file("proc/sys/kernel/hostname", "nfv-1\n")
            .file("proc/sys/kernel/osrelease", "6.1.0-27-amd64\n")
            .file("sys/devices/system/cpu/online", "0-3\n")
            .file("sys/devices/system/node/node0/cpulist", "0-1\n")
            .file("sys/devices/system/node/node1/cpulist", "2-3\n")
            .file("sys/module/kvm/parameters/halt_poll_ns", "200000\n")
            .file("sys/module/kvm_intel/parameters/enable_apicv", "Y\n")
            .file(
                "proc/interrupts",
                "           CPU0       CPU1       CPU2       CPU3\n 30:        100          0          7          0   IR-PCI-MSIX-0000:3b:00.0   0-edge      ens1f0-TxRx-0\n 31:         50          0          0          0   IR-IO-APIC   8-edge      rtc0\nLOC:   1 2 3 4   Local timer interrupts\n",
            );
        for c in 0..4 {
            let s = format!("sys/devices/system/cpu/cpu{c}/cpuidle");
            self.file(&format!("{s}/state0/name"), "POLL\n")
                .file(&format!("{s}/state0/latency"), "0\n")
                .file(&format!("{s}/state0/disable"), "0\n")
                .file(&format!("{s}/state1/name"), "C1\n")
                .file(&format!("{s}/state1/latency"), "2\n")
                .file(&format!("{s}/state1/disable"), "0\n")
                .file(&format!("{s}/state2/name"), "C6\n")
                .file(&format!("{s}/state2/latency"), "133\n");
        }
    }
}

const SMAPS_4K: &str = "7f0000000000-7f0040000000 rw-p 00000000 00:00 0\nSize:            1048576 kB\nKernelPageSize:        4 kB\nRss:             1048576 kB\nAnonHugePages:     0 kB\n";
const SMAPS_1G: &str = "7f0000000000-7f0040000000 rw-s 00000000 00:2d 1 /dev/hugepages/qemu\nSize:            1048576 kB\nKernelPageSize:  1048576 kB\nRss:                   0 kB\nAnonHugePages:         0 kB\n7f0100000000-7f0100800000 rw-p 00000000 00:00 0\nSize:               8192 kB\nKernelPageSize:        4 kB\nRss:                8192 kB\nAnonHugePages:         0 kB\n";

fn untuned() -> Tree {
    let t = Tree::new("untuned");
    t.base();
    t.file("proc/cmdline", "BOOT_IMAGE=/vmlinuz ro quiet\n")
        .file(
            "proc/sys/kernel/version",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1\n",
        )
        .file("proc/sys/kernel/timer_migration", "1\n")
        .file("sys/devices/system/cpu/isolated", "\n")
        .file("sys/module/kvm/parameters/halt_poll_ns", "0\n")
        .file("sys/module/kvm_intel/parameters/enable_apicv", "N\n")
        .file(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        )
        .file("sys/kernel/mm/ksm/run", "1\n")
        .file(
            "sys/kernel/debug/sched/preempt",
            "none (voluntary) full lazy\n",
        )
        .file("proc/irq/30/smp_affinity_list", "0-3\n")
        .file("proc/irq/31/smp_affinity_list", "0\n")
        .file("proc/77/comm", "kdamond.0\n")
        .file(
            "proc/77/status",
            "Name:\tkdamond.0\nCpus_allowed_list:\t0-3\n",
        );
    for c in 0..4 {
        t.file(
            &format!("sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"),
            "powersave\n",
        )
        .file(
            &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state2/disable"),
            "0\n",
        );
    }
    // vCPU 0 pinned to CPU 2 (node 1), vCPU 1 free on 2-3; memory mostly on node 0.
    t.vmm(
        1000,
        "vnf-fw1",
        SMAPS_4K,
        "7f0000000000 default anon=262144 dirty=262144 N0=235930 N1=26214\n",
    );
    t.vcpu(1000, 1001, 0, "2", (2, 0, 0));
    t.vcpu(1000, 1002, 1, "2-3", (3, 0, 0));
    t
}

fn tuned() -> Tree {
    let t = Tree::new("tuned");
    t.base();
    t.file(
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz ro isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3 default_hugepagesz=1G hugepages=4 -- isolcpus=0\n",
    )
    .file("proc/sys/kernel/version", "#1 SMP PREEMPT_RT Debian 6.1.115-1\n")
    .file("proc/sys/kernel/timer_migration", "0\n")
    .file("sys/devices/system/cpu/isolated", "2-3\n")
    .file("sys/devices/system/cpu/nohz_full", "2-3\n")
    .file("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    .file("sys/kernel/mm/ksm/run", "0\n")
    .file("proc/irq/30/smp_affinity_list", "0-3\n")
    .file("proc/irq/30/effective_affinity_list", "0\n")
    .file("proc/irq/31/smp_affinity_list", "0-1\n");
    for c in 0..4 {
        t.file(
            &format!("sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"),
            "performance\n",
        )
        .file(
            &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state2/disable"),
            "1\n",
        );
    }
    t.vmm(
        1000,
        "vnf-fw1",
        SMAPS_1G,
        "7f0000000000 bind:1 file=/dev/hugepages/qemu huge N1=1\n",
    );
    t.vcpu(1000, 1001, 0, "2", (2, 1, 1));
    t.vcpu(1000, 1002, 1, "3", (3, 1, 1));
    t
}

fn ids(r: &CheckReport) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = r.findings.iter().map(|f| f.id).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn an_untuned_host_shows_every_finding() {
    let t = untuned();
    let h = HostView::read(t.path());
    assert_eq!(
        h.vcpus.len(),
        2,
        "the QEMU main thread is no vCPU: {:?}",
        h.vcpus
    );
    assert_eq!(h.vcpus[0].vm, "vnf-fw1");
    let r = check(&h, None);
    let want = [
        "apicv-disabled",
        "cpufreq-not-performance",
        "deep-idle-states",
        "halt-poll-disabled",
        "irq-affinity-on-vcpu-cpu",
        "kdamond-running",
        "kernel-not-preempt-rt",
        "ksm-running",
        "numa-remote-memory",
        "thp-always",
        "timer-migration",
        "vcpu-cpu-not-isolated",
        "vcpu-cpu-not-nohz-full",
        "vcpu-cpu-rcu-callbacks",
        "vcpu-not-pinned",
        "vcpu-not-realtime",
        "vm-memory-not-hugepages",
    ];
    assert_eq!(ids(&r), want);
    let f = |id: &str| r.findings.iter().find(|f| f.id == id).unwrap();
    // Each says what was seen, with the host's own values, and a fix.
    assert!(
        f("vcpu-not-pinned").seen.contains("tid 1002"),
        "{:?}",
        f("vcpu-not-pinned")
    );
    assert!(f("vcpu-not-pinned").fix.contains("taskset -pc CPU 1002"));
    assert!(f("vcpu-cpu-not-isolated")
        .seen
        .contains("CPUs 2-3 are not isolated"));
    assert!(f("vcpu-cpu-not-isolated")
        .fix
        .contains("isolcpus=managed_irq,domain,2-3"));
    let irq = f("irq-affinity-on-vcpu-cpu");
    assert!(
        irq.seen.contains("1 IRQ(s) may be delivered there: 30"),
        "{}",
        irq.seen
    );
    assert!(
        irq.seen.contains("30 (ens1f0-TxRx-0) 7 times"),
        "{}",
        irq.seen
    );
    assert!(
        irq.fix
            .contains("echo 0-1 > /proc/irq/$i/smp_affinity_list"),
        "{}",
        irq.fix
    );
    assert!(f("deep-idle-states").seen.contains("C6 (133 us)"));
    assert!(!f("deep-idle-states").seen.contains("C1"));
    assert!(f("kdamond-running").seen.contains("kdamond.0 (pid 77)"));
    assert_eq!(f("kdamond-running").severity, Severity::Warning);
    assert!(f("kernel-not-preempt-rt").seen.contains("mode voluntary"));
    assert!(f("kernel-not-preempt-rt").fix.contains("preempt=full"));
    assert_eq!(f("kernel-not-preempt-rt").severity, Severity::Warning);
    assert!(
        f("numa-remote-memory").seen.contains("90 %"),
        "{}",
        f("numa-remote-memory").seen
    );
    assert!(f("vm-memory-not-hugepages")
        .seen
        .contains("1024 MiB resident"));
    assert!(f("apicv-disabled")
        .seen
        .contains("kvm_intel.enable_apicv is off"));
    for f in &r.findings {
        assert!(
            !f.why.is_empty() && !f.fix.is_empty() && !f.seen.is_empty(),
            "{f:?}"
        );
        assert!(f.attributed_ns.is_none());
    }
    // Warnings first without a capture.
    let first_info = r
        .findings
        .iter()
        .position(|f| f.severity == Severity::Info)
        .unwrap();
    assert!(r.findings[first_info..]
        .iter()
        .all(|f| f.severity == Severity::Info));
    let text = r.to_text();
    assert!(
        text.contains("18 finding(s):"),
        "one vcpu-not-realtime per vCPU: {text}"
    );
    assert!(text.contains("[1] WARNING"), "{text}");
    assert!(text.contains("    fix:  "), "{text}");
}

#[test]
fn a_tuned_host_shows_no_finding() {
    let t = tuned();
    let h = HostView::read(t.path());
    let r = check(&h, None);
    assert_eq!(ids(&r), Vec::<&str>::new(), "{:#?}", r.findings);
    let text = r.to_text();
    assert!(text.contains("no findings"), "{text}");
    assert!(
        text.contains("VM vnf-fw1 pid 1000 tid 1001 \"CPU 0/KVM\" on CPUs 2 (SCHED_FIFO)"),
        "{text}"
    );
}

#[test]
fn a_host_without_vms_or_isolation_and_another_backend() {
    let t = Tree::new("novm");
    t.base();
    t.file("proc/cmdline", "ro\n")
        .file("proc/sys/kernel/version", "#1 SMP PREEMPT_RT\n")
        .file("sys/module/kvm_pvm/parameters/x", "1\n");
    std::fs::remove_dir_all(t.path().join("sys/module/kvm_intel")).unwrap();
    let r = check(&HostView::read(t.path()), None);
    let got = ids(&r);
    assert!(got.contains(&"no-isolated-cpus"), "{got:?}");
    assert!(got.contains(&"apicv-unavailable"), "{got:?}");
    assert!(
        !got.contains(&"vcpu-cpu-not-isolated"),
        "no vCPU, no vCPU finding"
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "no-isolated-cpus")
        .unwrap();
    assert!(
        f.fix.contains("isolcpus=managed_irq,domain,1-3"),
        "{}",
        f.fix
    );
    assert!(r.to_text().contains("vCPU threads: none running"));
}

#[test]
fn a_capture_ranks_the_findings_by_attributed_latency() {
    let t = untuned();
    let h = HostView::read(t.path());
    let cap = CaptureCauses {
        path: "demo.kvmtrace".into(),
        duration_ns: 3_000_000_000,
        samples: 3000,
        causes_ns: [
            ("preempted:kdamond.0:77", 2_500_000),
            ("preempted:stress:4242", 4_000_000),
            ("preempted:qemu-io:900", 1_000_000),
            ("preempted:kworker/0:1:33", 300_000),
            ("hardirq:30", 100_000),
            ("halted", 1_000_000),
            ("kvm_run", 50_000_000),
            ("softirq:RCU", 10_000),
        ]
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect(),
    };
    let r = check(&h, Some(cap));
    let order: Vec<(&str, Option<u64>)> =
        r.findings.iter().map(|f| (f.id, f.attributed_ns)).collect();
    assert_eq!(
        order[0],
        ("task-preempts-vcpu", Some(5_000_000)),
        "{order:?}"
    );
    assert_eq!(order[1], ("kdamond-running", Some(2_500_000)), "{order:?}");
    // Every other task in one finding, the largest first and named in the fix.
    let t = &r.findings[0];
    assert!(
        t.seen
            .contains("5.000 ms of interrupt-to-guest latency in all: stress (pid 4242) 4.000 ms, qemu-io (pid 900) 1.000 ms"),
        "{}",
        t.seen
    );
    assert!(
        t.fix
            .contains("`taskset -pc <housekeeping CPUs> PID` for 4242, 900"),
        "{}",
        t.fix
    );
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| f.id == "task-preempts-vcpu")
            .count(),
        1
    );
    let k = &r.findings[1];
    assert!(
        k.seen.contains("preempted:kdamond.0:77 cost 2.500 ms") && k.seen.contains("3.0 s"),
        "{}",
        k.seen
    );
    let got = |id: &str| {
        r.findings
            .iter()
            .find(|f| f.id == id)
            .unwrap()
            .attributed_ns
    };
    assert_eq!(got("halt-poll-disabled"), Some(1_000_000));
    assert_eq!(got("deep-idle-states"), Some(1_000_000));
    assert_eq!(got("vcpu-cpu-not-isolated"), Some(300_000));
    assert_eq!(got("irq-affinity-on-vcpu-cpu"), Some(100_000));
    assert_eq!(got("vcpu-cpu-rcu-callbacks"), Some(10_000));
    assert_eq!(got("ksm-running"), None, "nothing attributed, ranked after");
    // Ranked ones first, by attributed time; the rest after.
    let attributed: Vec<u64> = r.findings.iter().map_while(|f| f.attributed_ns).collect();
    assert!(
        attributed.windows(2).all(|w| w[0] >= w[1]),
        "{attributed:?}"
    );
    assert!(r.findings[attributed.len()..]
        .iter()
        .all(|f| f.attributed_ns.is_none()));

    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["schema"], SCHEMA);
    let f0 = &j["findings"][0];
    for k in ["id", "severity", "seen", "why", "fix", "attributed_ns"] {
        assert!(!f0[k].is_null(), "{k} missing in {f0}");
    }
    assert_eq!(f0["severity"], "warning");
    assert!(j["findings"].as_array().unwrap().last().unwrap()["attributed_ns"].is_null());
}
