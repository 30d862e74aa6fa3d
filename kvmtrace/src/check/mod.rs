//! `kvmtrace check`: a host tuning audit for interrupt latency.
//!
//! [`host::HostView`] reads the settings (from a root directory, so that tests use fake
//! `/proc` and `/sys` trees); [`audit`] turns them into [`Finding`]s, each with a stable id,
//! what was seen, why it matters and the command or kernel parameter that fixes it; with a
//! capture, [`rank`] gives each finding the interrupt-to-guest latency the report attributed
//! to the causes it explains (`preempted:kdamond.0:77` to `kdamond-running`, `hardirq:N` to
//! `irq-affinity-on-vcpu-cpu`, `halted` to halt polling and idle states, ...) and sorts the
//! findings by it. The ids and the mapping are listed in docs/check.md.

pub mod host;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use self::host::{cpu_list, Cpus, HostView};

pub const SCHEMA: &str = "kvmtrace-check/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Likely to add latency to the vCPUs.
    Warning,
    /// Worth knowing; may add latency in some setups.
    Info,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable identifier (docs/check.md).
    pub id: &'static str,
    pub severity: Severity,
    /// What was seen on the host (and, with a capture, what the capture attributed).
    pub seen: String,
    /// Why it matters for interrupt latency.
    pub why: String,
    /// The command or kernel parameter that fixes it.
    pub fix: String,
    /// Interrupt-to-guest latency the capture's report attributed to the causes this
    /// finding explains, summed over its vCPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributed_ns: Option<u64>,
    /// Those causes, with their ns.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub causes: BTreeMap<String, u64>,
}

impl Finding {
    fn new(id: &'static str, severity: Severity, seen: String, why: &str, fix: String) -> Self {
        Finding {
            id,
            severity,
            seen,
            why: why.to_string(),
            fix,
            attributed_ns: None,
            causes: BTreeMap::new(),
        }
    }
}

/// Idle states with an exit latency above this (µs) count as deep.
const DEEP_IDLE_US: u64 = 10;

fn policy_name(p: u32) -> &'static str {
    match p {
        0 => "SCHED_OTHER",
        1 => "SCHED_FIFO",
        2 => "SCHED_RR",
        3 => "SCHED_BATCH",
        5 => "SCHED_IDLE",
        6 => "SCHED_DEADLINE",
        _ => "unknown",
    }
}

/// CPUs for vCPUs and for the host: the vCPUs' CPUs, or (with no VM running, or vCPUs
/// that may run anywhere) every CPU but the first.
fn partition(h: &HostView) -> (Cpus, Cpus) {
    let vcpu = h.vcpu_cpus();
    let want: Cpus = if vcpu.is_empty() || vcpu == h.online {
        h.online.iter().copied().skip(1).collect()
    } else {
        vcpu
    };
    let housekeeping = h.online.difference(&want).copied().collect();
    (want, housekeeping)
}

/// The audit of a host.
pub fn audit(h: &HostView) -> Vec<Finding> {
    use Severity::{Info, Warning};
    let mut out = Vec::new();
    let vcpu_cpus = h.vcpu_cpus();
    let (want, hk) = partition(h);
    let (want_s, hk_s) = (cpu_list(&want), cpu_list(&hk));
    // The CPUs the CPU-level checks look at: the vCPUs', else those one would isolate.
    let target: Cpus = if vcpu_cpus.is_empty() {
        want.clone()
    } else {
        vcpu_cpus.clone()
    };
    let where_ = if vcpu_cpus.is_empty() {
        format!("no VM is running (CPUs {want_s} would be the ones to reserve for vCPUs)")
    } else {
        format!("vCPU threads run on CPUs {}", cpu_list(&vcpu_cpus))
    };

    for v in &h.vcpus {
        if v.allowed.len() != 1 {
            out.push(Finding::new(
                "vcpu-not-pinned",
                Warning,
                format!(
                    "vCPU thread \"{}\" (tid {}, VM {} pid {}) may run on CPUs {}",
                    v.comm,
                    v.tid,
                    v.vm,
                    v.pid,
                    cpu_list(&v.allowed)
                ),
                "an unpinned vCPU is moved between CPUs by the scheduler and shares them with \
                 every other task: it waits behind them and loses its cache on each move",
                format!(
                    "pin each vCPU to one isolated CPU: `taskset -pc CPU {}` (libvirt: \
                     `<vcpupin vcpu='N' cpuset='CPU'/>`; QEMU: pin the `CPU n/KVM` threads)",
                    v.tid
                ),
            ));
        }
    }
    if vcpu_cpus.is_empty() && h.isolated.is_empty() {
        out.push(Finding::new(
            "no-isolated-cpus",
            Warning,
            "no VM is running and no CPU is isolated (isolcpus= is not set)".into(),
            "without isolated CPUs, the vCPUs will share their CPUs with host tasks, \
             kernel threads and timers",
            format!(
                "reserve CPUs for vCPUs at boot: `isolcpus=managed_irq,domain,{want_s} \
                 nohz_full={want_s} rcu_nocbs={want_s}`, then pin the vCPUs there"
            ),
        ));
    }
    let not_isolated: Cpus = vcpu_cpus.difference(&h.isolated).copied().collect();
    if !not_isolated.is_empty() {
        out.push(Finding::new(
            "vcpu-cpu-not-isolated",
            Warning,
            format!(
                "{where_}; of those, CPUs {} are not isolated (isolated: {})",
                cpu_list(&not_isolated),
                cpu_list(&h.isolated)
            ),
            "the scheduler puts other tasks and kernel threads (kworkers, ksoftirqd) on \
             those CPUs: a woken vCPU waits until they give the CPU up",
            format!(
                "boot with `isolcpus=managed_irq,domain,{want_s}` (or the tuned profile \
                 `cpu-partitioning` with isolated_cores={want_s}) and pin the vCPUs there; \
                 keep host tasks on {hk_s}"
            ),
        ));
    }
    let tick: Cpus = target.difference(&h.nohz_full).copied().collect();
    if !tick.is_empty() {
        out.push(Finding::new(
            "vcpu-cpu-not-nohz-full",
            Info,
            format!(
                "{where_}; CPUs {} keep the periodic scheduler tick (nohz_full: {})",
                cpu_list(&tick),
                cpu_list(&h.nohz_full)
            ),
            "the tick interrupts the CPU (and exits the guest) every 1-4 ms even when one \
             vCPU runs alone there",
            format!("boot with `nohz_full={want_s}`"),
        ));
    }
    let rcu: Cpus = target.difference(&h.rcu_nocbs).copied().collect();
    if !rcu.is_empty() {
        out.push(Finding::new(
            "vcpu-cpu-rcu-callbacks",
            Info,
            format!(
                "{where_}; RCU callbacks run on CPUs {} (rcu_nocbs: {})",
                cpu_list(&rcu),
                cpu_list(&h.rcu_nocbs)
            ),
            "RCU callbacks run in softirq context on the CPU that queued them, delaying \
             the vCPU there",
            format!("boot with `rcu_nocbs={want_s} rcu_nocb_poll` (nohz_full= implies rcu_nocbs=)"),
        ));
    }
    irq_findings(h, &target, &hk_s, &where_, &mut out);
    for v in &h.vcpus {
        if !matches!(v.policy, 1 | 2) {
            out.push(Finding::new(
                "vcpu-not-realtime",
                Info,
                format!(
                    "vCPU thread \"{}\" (tid {}, VM {}) runs {} (priority {})",
                    v.comm,
                    v.tid,
                    v.vm,
                    policy_name(v.policy),
                    v.rt_priority
                ),
                "a normal-priority vCPU thread is preempted by any task of equal or higher \
                 weight that wakes on its CPU",
                format!(
                    "on an isolated CPU with housekeeping threads moved away: `chrt -f -p 1 {}` \
                     (libvirt: `<vcpusched vcpus='N' scheduler='fifo' priority='1'/>`)",
                    v.tid
                ),
            ));
        }
    }
    if h.halt_poll_ns == Some(0) {
        out.push(Finding::new(
            "halt-poll-disabled",
            Info,
            "kvm.halt_poll_ns is 0".into(),
            "a halted vCPU is put to sleep at once, so every interrupt to it pays a full \
             wake-up and context switch (the report's `halted` and `wakeup` time)",
            "`echo 200000 > /sys/module/kvm/parameters/halt_poll_ns` (boot: \
             `kvm.halt_poll_ns=200000`)"
                .into(),
        ));
    }
    let slow: Vec<String> = target
        .iter()
        .filter_map(|c| {
            let g = h.governors.get(c)?;
            (g != "performance").then(|| format!("CPU {c}: {g}"))
        })
        .collect();
    if !slow.is_empty() {
        out.push(Finding::new(
            "cpufreq-not-performance",
            Warning,
            format!("{where_}; cpufreq governors: {}", slow.join(", ")),
            "a CPU that idles clocks down and needs time to ramp up after the interrupt",
            format!("`cpupower -c {want_s} frequency-set -g performance` (or tuned `realtime-virtual-host`)"),
        ));
    }
    let deep: Vec<String> = target
        .iter()
        .filter_map(|c| {
            let s: Vec<String> = h
                .idle_states
                .get(c)?
                .iter()
                .filter(|s| !s.disabled && s.latency_us > DEEP_IDLE_US)
                .map(|s| format!("{} ({} us)", s.name, s.latency_us))
                .collect();
            (!s.is_empty()).then(|| format!("CPU {c}: {}", s.join(", ")))
        })
        .collect();
    if !deep.is_empty() {
        out.push(Finding::new(
            "deep-idle-states",
            Warning,
            format!(
                "{where_}; idle states deeper than {DEEP_IDLE_US} us enabled: {}",
                deep.join("; ")
            ),
            "a CPU woken from a deep C-state takes its exit latency before it handles the \
             interrupt and runs the vCPU",
            format!(
                "`cpupower -c {want_s} idle-set -D {DEEP_IDLE_US}` (boot: \
                 `intel_idle.max_cstate=1 processor.max_cstate=1`)"
            ),
        ));
    }
    if h.thp.as_deref() == Some("always") {
        out.push(Finding::new(
            "thp-always",
            Info,
            "transparent_hugepage/enabled is `always`".into(),
            "khugepaged and direct compaction collapse pages behind the VMs' backs: \
             page-table locks and stalls at unpredictable times",
            "`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` (boot: \
             `transparent_hugepage=madvise`) and back guests with static huge pages"
                .into(),
        ));
    }
    for (pid, m) in &h.vm_memory {
        if m.rss_kib >= 64 * 1024 && m.hugetlb_kib == 0 && m.anon_huge_kib * 2 < m.rss_kib {
            let vm = h.vcpus.iter().find(|v| v.pid == *pid).map_or("", |v| &v.vm);
            out.push(Finding::new(
                "vm-memory-not-hugepages",
                Warning,
                format!(
                    "VM {vm} (pid {pid}): {} MiB resident, none from hugetlbfs, {} MiB in \
                     transparent huge pages",
                    m.rss_kib / 1024,
                    m.anon_huge_kib / 1024
                ),
                "guest memory in 4 KiB pages costs TLB misses and longer page walks on \
                 every exit and entry, and can be reclaimed, compacted or migrated",
                "reserve huge pages at boot (`default_hugepagesz=1G hugepagesz=1G \
                 hugepages=N`) and back the guest with them (libvirt: \
                 `<memoryBacking><hugepages/><locked/></memoryBacking>`; QEMU: \
                 `-object memory-backend-file,mem-path=/dev/hugepages,prealloc=on,...`)"
                    .into(),
            ));
        }
        numa_finding(h, *pid, m, &mut out);
    }
    if h.ksm_run == Some(1) {
        out.push(Finding::new(
            "ksm-running",
            Warning,
            "KSM is running (/sys/kernel/mm/ksm/run is 1)".into(),
            "ksmd scans and merges guest pages: its CPU time, copy-on-write faults and \
             page-table locks land on the VMs",
            "`echo 2 > /sys/kernel/mm/ksm/run` (unmerge and stop); `systemctl disable --now \
             ksm ksmtuned` where installed"
                .into(),
        ));
    }
    for k in &h.kdamonds {
        let on_vcpu = k.allowed.is_empty() || k.allowed.intersection(&target).next().is_some();
        out.push(Finding::new(
            "kdamond-running",
            if on_vcpu { Warning } else { Info },
            format!(
                "DAMON is running: {} (pid {}) may run on CPUs {} ({where_})",
                k.comm,
                k.pid,
                cpu_list(&k.allowed)
            ),
            "the DAMON monitor samples memory access every few milliseconds on whatever CPU \
             it is given, preempting a vCPU there",
            format!(
                "stop it: `echo off > /sys/kernel/mm/damon/admin/kdamonds/N/state` (sysfs \
                 DAMON), `echo N > /sys/module/damon_reclaim/parameters/enabled` (likewise \
                 damon_lru_sort, damon_stat; boot: `damon_reclaim.enabled=N \
                 damon_stat.enabled=N`), or keep it off the vCPU CPUs: `taskset -pc {hk_s} {}`",
                k.pid
            ),
        ));
    }
    preempt_finding(h, &mut out);
    if h.timer_migration == Some(1) {
        out.push(Finding::new(
            "timer-migration",
            Info,
            "kernel.timer_migration is 1".into(),
            "timers of idle CPUs may be moved to busy ones, including vCPU CPUs, and run \
             there as softirqs",
            "`sysctl -w kernel.timer_migration=0` (persist in /etc/sysctl.d/)".into(),
        ));
    }
    match (h.kvm_backend.as_deref(), h.apicv) {
        (Some(b @ ("kvm_intel" | "kvm_amd")), Some(false)) => {
            let (param, fix) = if b == "kvm_intel" {
                ("enable_apicv", "`modprobe -r kvm_intel && modprobe kvm_intel enable_apicv=1` (boot: `kvm_intel.enable_apicv=1`)")
            } else {
                (
                    "avic",
                    "`modprobe -r kvm_amd && modprobe kvm_amd avic=1` (boot: `kvm_amd.avic=1`)",
                )
            };
            out.push(Finding::new(
                "apicv-disabled",
                Warning,
                format!("{b}.{param} is off"),
                "without APICv/AVIC, interrupts cannot be posted into a running guest: each \
                 one needs an exit and an injection on the next entry, and guest EOIs exit",
                fix.into(),
            ));
        }
        (Some(b), None) if b != "kvm_intel" && b != "kvm_amd" => out.push(Finding::new(
            "apicv-unavailable",
            Info,
            format!("the KVM backend is {b}: no APICv/AVIC, no posted interrupts"),
            "every interrupt to a guest is injected on a VM entry, so it waits for the \
             next exit when the vCPU is running",
            "nothing to set on this backend; latency-critical guests belong on a host with \
             VMX/SVM and APICv/AVIC enabled"
                .into(),
        )),
        _ => {}
    }
    out
}

fn irq_findings(h: &HostView, target: &Cpus, hk_s: &str, where_: &str, out: &mut Vec<Finding>) {
    let mut may = Vec::new();
    let mut fired = Vec::new();
    for irq in &h.irqs {
        if irq.affinity.intersection(target).next().is_none() {
            continue;
        }
        let label = if irq.name.is_empty() {
            irq.irq.to_string()
        } else {
            format!("{} ({})", irq.irq, irq.name)
        };
        let there: u64 = target.iter().filter_map(|c| irq.fired.get(c)).sum();
        if there > 0 {
            fired.push(format!("{label} {there} times"));
        }
        may.push(irq.irq);
    }
    if may.is_empty() {
        return;
    }
    let list: Vec<String> = may.iter().map(u32::to_string).collect();
    out.push(Finding::new(
        "irq-affinity-on-vcpu-cpu",
        Severity::Warning,
        format!(
            "{where_}; {} IRQ(s) may be delivered there: {}; fired there so far: {}",
            may.len(),
            list.join(" "),
            if fired.is_empty() {
                "none".to_string()
            } else {
                fired.join(", ")
            }
        ),
        "a device interrupt on a vCPU's CPU runs its handler (and softirqs after it) \
         instead of the vCPU, and exits the guest",
        format!(
            "`for i in {}; do echo {hk_s} > /proc/irq/$i/smp_affinity_list; done`; tell \
             irqbalance (IRQBALANCE_BANNED_CPULIST=<vCPU CPUs>) or stop it; boot with \
             `isolcpus=managed_irq,...` for managed IRQs",
            list.join(" ")
        ),
    ));
}

fn numa_finding(h: &HostView, pid: u32, m: &host::VmMemory, out: &mut Vec<Finding>) {
    if h.numa_nodes.len() < 2 || m.numa_pages.is_empty() {
        return;
    }
    let cpus: Cpus = h
        .vcpus
        .iter()
        .filter(|v| v.pid == pid)
        .flat_map(|v| v.allowed.iter().copied())
        .collect();
    let nodes: Vec<u32> = h
        .numa_nodes
        .iter()
        .filter(|(_, c)| c.intersection(&cpus).next().is_some())
        .map(|(n, _)| *n)
        .collect();
    let total: u64 = m.numa_pages.values().sum();
    let remote: u64 = m
        .numa_pages
        .iter()
        .filter(|(n, _)| !nodes.contains(n))
        .map(|(_, p)| p)
        .sum();
    if total == 0 || remote * 10 <= total {
        return;
    }
    out.push(Finding::new(
        "numa-remote-memory",
        Severity::Warning,
        format!(
            "VM pid {pid}: vCPUs on node(s) {nodes:?}, {:.0} % of its memory on other nodes ({:?} pages by node)",
            100.0 * remote as f64 / total as f64,
            m.numa_pages
        ),
        "remote memory makes every guest memory access and every exit's work slower",
        "bind the VM's CPUs and memory to one node: `numactl --cpunodebind=N --membind=N` \
         (libvirt: `<numatune><memory mode='strict' nodeset='N'/></numatune>`)"
            .into(),
    ));
}

fn preempt_finding(h: &HostView, out: &mut Vec<Finding>) {
    let v = &h.kernel_version;
    if h.realtime || v.contains("PREEMPT_RT") {
        return;
    }
    let mode = h
        .preempt_mode
        .clone()
        .or_else(|| host::cmdline_param(&h.cmdline, "preempt").map(str::to_string));
    let low = matches!(mode.as_deref(), Some("none" | "voluntary"));
    let seen = format!(
        "the kernel is not PREEMPT_RT (`{v}`), preemption mode {}",
        mode.as_deref()
            .unwrap_or("unknown (mount debugfs to see /sys/kernel/debug/sched/preempt)")
    );
    out.push(Finding::new(
        "kernel-not-preempt-rt",
        if low { Severity::Warning } else { Severity::Info },
        seen,
        "a woken vCPU thread waits until the running kernel code reaches a preemption \
         point; without PREEMPT_RT, interrupt handlers and softirqs are not preemptible",
        if v.contains("PREEMPT_DYNAMIC") {
            "boot with `preempt=full` (this kernel is PREEMPT_DYNAMIC), or run a PREEMPT_RT kernel (Debian: linux-image-rt-amd64)".into()
        } else {
            "run a PREEMPT_RT kernel (Debian: linux-image-rt-amd64)".into()
        },
    ));
}

/// The finding a report cause is explained by: its id and, for one made from the capture
/// alone, its subject.
fn finding_for_cause(cause: &str) -> Vec<&'static str> {
    if let Some(rest) = cause.strip_prefix("preempted:") {
        let comm = rest.rsplit_once(':').map_or(rest, |(c, _)| c);
        return vec![match comm {
            c if c.starts_with("kdamond") => "kdamond-running",
            "ksmd" => "ksm-running",
            c if c == "khugepaged" || c.starts_with("kcompactd") => "thp-always",
            c if [
                "kworker",
                "ksoftirqd",
                "migration",
                "rcu",
                "cpuhp",
                "watchdog",
                "kthreadd",
            ]
            .iter()
            .any(|p| c.starts_with(p)) =>
            {
                "vcpu-cpu-not-isolated"
            }
            _ => "task-preempts-vcpu",
        }];
    }
    if cause.starts_with("hardirq:") {
        return vec!["irq-affinity-on-vcpu-cpu"];
    }
    match cause {
        "apic:local_timer" | "softirq:TIMER" | "softirq:HRTIMER" => vec!["vcpu-cpu-not-nohz-full"],
        "apic:reschedule"
        | "apic:call_function"
        | "apic:call_function_single"
        | "softirq:SCHED" => vec!["vcpu-cpu-not-isolated"],
        "softirq:RCU" => vec!["vcpu-cpu-rcu-callbacks"],
        "softirq:NET_RX" | "softirq:NET_TX" | "softirq:BLOCK" | "softirq:IRQ_POLL"
        | "softirq:TASKLET" => vec!["irq-affinity-on-vcpu-cpu"],
        "halted" => vec![
            "halt-poll-disabled",
            "deep-idle-states",
            "cpufreq-not-performance",
        ],
        "wakeup" => vec![
            "halt-poll-disabled",
            "deep-idle-states",
            "cpufreq-not-performance",
            "kernel-not-preempt-rt",
        ],
        _ => vec![],
    }
}

/// What a capture says: per report cause, the interrupt-to-guest ns over all vCPUs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureCauses {
    pub path: String,
    pub duration_ns: u64,
    pub samples: u64,
    pub causes_ns: BTreeMap<String, u64>,
}

impl CaptureCauses {
    pub fn from_report(r: &kvmtrace_analysis::report::Report) -> CaptureCauses {
        let mut causes_ns = BTreeMap::new();
        let mut samples = 0;
        for v in &r.vcpus {
            samples += v.latency.irq_to_guest.count;
            for (c, ns) in &v.latency.irq_to_guest.causes_ns {
                *causes_ns.entry(c.clone()).or_default() += ns;
            }
        }
        CaptureCauses {
            path: r.capture.path.clone(),
            duration_ns: r.capture.duration_ns,
            samples,
            causes_ns,
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// `task-preempts-vcpu`'s text: the tasks by cost, the largest named in the fix.
fn task_text(f: &mut Finding, by_cost: &[(String, u64)], secs: f64, samples: u64, total: u64) {
    const SHOWN: usize = 6;
    let tasks: Vec<(&str, &str, u64)> = by_cost
        .iter()
        .map(|(c, ns)| {
            let t = c.trim_start_matches("preempted:");
            let (comm, pid) = t.rsplit_once(':').unwrap_or((t, "?"));
            (comm, pid, *ns)
        })
        .collect();
    let mut listed: Vec<String> = tasks
        .iter()
        .take(SHOWN)
        .map(|(comm, pid, ns)| format!("{comm} (pid {pid}) {}", ms(*ns)))
        .collect();
    if tasks.len() > SHOWN {
        listed.push(format!("and {} more", tasks.len() - SHOWN));
    }
    f.seen = format!(
        "in the capture ({secs:.1} s, {samples} samples), other tasks held a vCPU's CPU while an \
         interrupt waited, {} of interrupt-to-guest latency in all: {}",
        ms(total),
        listed.join(", ")
    );
    let pids: Vec<&str> = tasks.iter().take(3).map(|t| t.1).collect();
    f.fix = format!(
        "move them off the vCPU CPUs (`taskset -pc <housekeeping CPUs> PID` for {}; for a \
         service, CPUAffinity=; for the VMM's own threads, libvirt `<emulatorpin>`), isolate \
         the vCPU CPUs (isolcpus=) and pin the vCPUs there",
        pids.join(", ")
    );
}

/// Gives each finding the latency attributed to the causes it explains, adds findings for
/// causes that only the capture shows (a task preempting a vCPU, an IRQ no longer routed
/// there), and sorts: most attributed latency first, then warnings, then by id.
pub fn rank(findings: &mut Vec<Finding>, cap: &CaptureCauses) {
    let secs = cap.duration_ns as f64 / 1e9;
    for (cause, &ns) in &cap.causes_ns {
        if ns == 0 {
            continue;
        }
        let ids = finding_for_cause(cause);
        let mut hit = false;
        for id in &ids {
            for f in findings.iter_mut().filter(|f| f.id == *id) {
                f.causes.insert(cause.clone(), ns);
                hit = true;
            }
        }
        if hit {
            continue;
        }
        let Some(&id) = ids.first() else {
            continue;
        };
        // Seen in the capture only.
        let f = match id {
            // One finding for every task that preempted a vCPU: `seen` and `fix` are
            // written below, once all of them are known, largest first.
            "task-preempts-vcpu" => Finding::new(
                "task-preempts-vcpu",
                Severity::Warning,
                String::new(),
                "the vCPU thread was runnable but these tasks had its CPU: they share the \
                 vCPU CPUs, or the vCPU thread runs where they do",
                String::new(),
            ),
            "irq-affinity-on-vcpu-cpu" => Finding::new(
                id,
                Severity::Warning,
                format!("in the capture, {cause} ran on a vCPU's CPU"),
                "a device interrupt on a vCPU's CPU runs its handler (and softirqs after it) instead of the vCPU",
                "route the IRQ to housekeeping CPUs: `echo <CPUs> > /proc/irq/N/smp_affinity_list`".into(),
            ),
            "kdamond-running" => Finding::new(
                id,
                Severity::Warning,
                format!("in the capture, DAMON's {cause} held a vCPU's CPU"),
                "the DAMON monitor samples memory access every few milliseconds on whatever CPU it is given",
                "stop DAMON (`echo off > /sys/kernel/mm/damon/admin/kdamonds/N/state`, `damon_reclaim.enabled=N`) or keep it off the vCPU CPUs with taskset".into(),
            ),
            _ => Finding::new(
                "vcpu-cpu-not-isolated",
                Severity::Warning,
                format!("in the capture, {cause} delayed a vCPU"),
                "host work on the vCPU's CPU delays it",
                "isolate the vCPU CPUs (isolcpus=managed_irq,domain,..., nohz_full=, rcu_nocbs=) and pin the vCPUs there".into(),
            ),
        };
        let mut f = f;
        f.causes.insert(cause.clone(), ns);
        findings.push(f);
    }
    for f in findings.iter_mut() {
        if f.causes.is_empty() {
            continue;
        }
        let total: u64 = f.causes.values().sum();
        f.attributed_ns = Some(total);
        let mut by_cost: Vec<(String, u64)> =
            f.causes.iter().map(|(c, n)| (c.clone(), *n)).collect();
        by_cost.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if f.id == "task-preempts-vcpu" {
            task_text(f, &by_cost, secs, cap.samples, total);
            continue;
        }
        let parts: Vec<String> = by_cost
            .iter()
            .map(|(c, ns)| format!("{c} cost {}", ms(*ns)))
            .collect();
        let _ = write!(
            f.seen,
            "; the capture ({:.1} s, {} samples) attributes {} of interrupt-to-guest latency to it: {}",
            secs,
            cap.samples,
            ms(total),
            parts.join(", ")
        );
    }
    findings.sort_by(|a, b| {
        b.attributed_ns
            .unwrap_or(0)
            .cmp(&a.attributed_ns.unwrap_or(0))
            .then(a.severity.cmp(&b.severity))
            .then(a.id.cmp(b.id))
    });
}

/// `kvmtrace check --json`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub schema: &'static str,
    pub hostname: String,
    pub kernel: String,
    pub kvm_backend: Option<String>,
    /// vCPU threads found: VM, pid, tid, allowed CPUs.
    pub vcpus: Vec<VcpuSummary>,
    pub capture: Option<CaptureCauses>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct VcpuSummary {
    pub vm: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cpus: String,
    pub policy: &'static str,
}

pub fn check(h: &HostView, capture: Option<CaptureCauses>) -> CheckReport {
    let mut findings = audit(h);
    if let Some(c) = &capture {
        rank(&mut findings, c);
    } else {
        findings.sort_by(|a, b| a.severity.cmp(&b.severity).then(a.id.cmp(b.id)));
    }
    CheckReport {
        schema: SCHEMA,
        hostname: h.hostname.clone(),
        kernel: h.kernel_release.clone(),
        kvm_backend: h.kvm_backend.clone(),
        vcpus: h
            .vcpus
            .iter()
            .map(|v| VcpuSummary {
                vm: v.vm.clone(),
                pid: v.pid,
                tid: v.tid,
                comm: v.comm.clone(),
                cpus: cpu_list(&v.allowed),
                policy: policy_name(v.policy),
            })
            .collect(),
        capture,
        findings,
    }
}

impl CheckReport {
    /// rtla/tuned-adm style: one block per finding.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kvmtrace check: host {} (kernel {}, KVM {})",
            self.hostname,
            self.kernel,
            self.kvm_backend.as_deref().unwrap_or("not loaded")
        );
        if self.vcpus.is_empty() {
            let _ = writeln!(out, "vCPU threads: none running");
        }
        for v in &self.vcpus {
            let _ = writeln!(
                out,
                "vCPU thread: VM {} pid {} tid {} \"{}\" on CPUs {} ({})",
                v.vm, v.pid, v.tid, v.comm, v.cpus, v.policy
            );
        }
        if let Some(c) = &self.capture {
            let _ = writeln!(
                out,
                "ranked by capture {} ({:.1} s, {} interrupt-to-guest samples)",
                c.path,
                c.duration_ns as f64 / 1e9,
                c.samples
            );
        }
        if self.findings.is_empty() {
            let _ = writeln!(
                out,
                "\nno findings: every setting kvmtrace checks is tuned for low interrupt latency"
            );
            return out;
        }
        let _ = writeln!(out, "\n{} finding(s):", self.findings.len());
        for (i, f) in self.findings.iter().enumerate() {
            let _ = writeln!(out);
            let attributed = f
                .attributed_ns
                .map(|ns| format!("  [{} attributed]", ms(ns)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "[{}] {:<7} {}{attributed}",
                i + 1,
                f.severity.label(),
                f.id
            );
            let _ = writeln!(out, "    seen: {}", f.seen);
            let _ = writeln!(out, "    why:  {}", f.why);
            let _ = writeln!(out, "    fix:  {}", f.fix);
        }
        out
    }
}

/// `kvmtrace check [--json] [CAPTURE]`.
pub fn run(root: &Path, capture: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let cap = match capture {
        Some(p) => {
            let (report, _) = kvmtrace_analysis::report::analyse_capture(
                p,
                kvmtrace_analysis::engine::EngineConfig::default(),
            )?;
            Some(CaptureCauses::from_report(&report))
        }
        None => None,
    };
    let h = HostView::read(root);
    let report = check(&h, cap);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
