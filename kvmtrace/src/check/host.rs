//! What `kvmtrace check` reads of a host: the settings that matter for interrupt latency,
//! from a `/proc` and `/sys` tree under a root directory (`/` on a live host, a fake tree
//! in the tests). Absent files leave their setting unknown; nothing here fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kvmtrace_analysis::threads::{vcpu_from_comm, vm_name_from_cmdline};

/// A set of CPU numbers.
pub type Cpus = BTreeSet<u32>;

/// Parses a kernel CPU list (`0-3,8,10-11`); flags such as `isolcpus=`'s `domain,managed_irq`
/// are skipped. Ranges are capped at 8192 CPUs.
pub fn parse_cpu_list(s: &str) -> Cpus {
    let mut out = Cpus::new();
    for part in s.trim().split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                if a <= b && b < 8192 {
                    out.extend(a..=b);
                }
            }
        } else if let Ok(c) = part.parse::<u32>() {
            if c < 8192 {
                out.insert(c);
            }
        }
    }
    out
}

/// A CPU set as a kernel CPU list (`0-3,8`).
pub fn cpu_list(cpus: &Cpus) -> String {
    let mut parts = Vec::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(",")
    }
}

/// A vCPU thread and how it is scheduled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuThread {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub vm: String,
    /// CPUs it may run on (`Cpus_allowed_list`).
    pub allowed: Cpus,
    /// The CPU it last ran on.
    pub cpu: Option<u32>,
    /// 0 SCHED_OTHER, 1 SCHED_FIFO, 2 SCHED_RR, 3 SCHED_BATCH, 5 SCHED_IDLE, 6 SCHED_DEADLINE.
    pub policy: u32,
    pub rt_priority: u32,
}

/// A host interrupt line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    pub irq: u32,
    /// Its device name(s), from /proc/interrupts.
    pub name: String,
    /// Where it may be delivered (`effective_affinity_list`, else `smp_affinity_list`).
    pub affinity: Cpus,
    /// CPU -> times it fired there (/proc/interrupts).
    pub fired: BTreeMap<u32, u64>,
}

/// An idle state of a CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdleState {
    pub name: String,
    /// Exit latency in µs.
    pub latency_us: u64,
    pub disabled: bool,
}

/// A VM's memory: how much is resident and how it is backed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmMemory {
    pub rss_kib: u64,
    /// In transparent huge pages.
    pub anon_huge_kib: u64,
    /// Mapped from hugetlbfs (pages of 2 MiB or more).
    pub hugetlb_kib: u64,
    /// NUMA node -> pages (numa_maps).
    pub numa_pages: BTreeMap<u32, u64>,
}

/// A kernel thread of interest (kdamond, ksmd, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub comm: String,
    pub allowed: Cpus,
}

/// Everything `check` looks at.
#[derive(Clone, Debug, Default)]
pub struct HostView {
    pub root: PathBuf,
    pub hostname: String,
    pub kernel_release: String,
    /// `uname -v`: says `PREEMPT_RT`, `PREEMPT_DYNAMIC`, `PREEMPT`.
    pub kernel_version: String,
    pub cmdline: String,
    pub online: Cpus,
    pub isolated: Cpus,
    pub nohz_full: Cpus,
    /// `rcu_nocbs=` (nohz_full CPUs are offloaded too).
    pub rcu_nocbs: Cpus,
    pub vcpus: Vec<VcpuThread>,
    pub irqs: Vec<Irq>,
    pub halt_poll_ns: Option<u64>,
    pub governors: BTreeMap<u32, String>,
    pub idle_states: BTreeMap<u32, Vec<IdleState>>,
    /// The selected mode of transparent_hugepage/enabled.
    pub thp: Option<String>,
    pub ksm_run: Option<u32>,
    pub kdamonds: Vec<Task>,
    /// VMM pid -> its memory.
    pub vm_memory: BTreeMap<u32, VmMemory>,
    /// NUMA node -> its CPUs.
    pub numa_nodes: BTreeMap<u32, Cpus>,
    /// The preemption mode from debugfs (`none`, `voluntary`, `full`, `lazy`), if mounted.
    pub preempt_mode: Option<String>,
    /// /sys/kernel/realtime says 1.
    pub realtime: bool,
    pub timer_migration: Option<u32>,
    /// The loaded KVM backend module (`kvm_intel`, `kvm_amd`, `kvm_pvm`, ...).
    pub kvm_backend: Option<String>,
    /// kvm_intel's enable_apicv or kvm_amd's avic, when that module is loaded.
    pub apicv: Option<bool>,
}

/// Reads a file under the root, trimmed; None when absent or unreadable.
fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

fn numeric_dirs(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// The value of `key=` on the kernel command line (the last one wins, as in the kernel).
pub fn cmdline_param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .take_while(|a| *a != "--")
        .filter_map(|a| a.strip_prefix(key)?.strip_prefix('='))
        .last()
}

/// Processes scanned at most when looking for VMs and kernel threads.
const MAX_PROCS: usize = 100_000;
/// Threads of one process looked at.
const MAX_TASKS: usize = 4096;

/// `/proc/PID/task/TID/stat` after the comm: (processor, rt_priority, policy).
fn sched_of(stat: &str) -> Option<(u32, u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 39, 40, 41 of proc_pid_stat(5); `rest` starts at field 3.
    Some((
        f.get(36)?.parse().ok()?,
        f.get(37)?.parse().ok()?,
        f.get(38)?.parse().ok()?,
    ))
}

fn allowed_of(status: &str) -> Cpus {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(parse_cpu_list)
        .unwrap_or_default()
}

/// Does this process hold a KVM vCPU file descriptor?
fn is_vmm(proc_dir: &Path) -> bool {
    std::fs::read_dir(proc_dir.join("fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|l| l.to_string_lossy().starts_with("anon_inode:kvm-vcpu"))
}

fn memory_of(proc_dir: &Path) -> VmMemory {
    let mut m = VmMemory::default();
    let kib = |l: &str| -> u64 {
        l.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    if let Ok(smaps) = std::fs::read_to_string(proc_dir.join("smaps")) {
        let mut size = 0;
        for l in smaps.lines() {
            if l.starts_with("Size:") {
                size = kib(l);
            } else if l.starts_with("Rss:") {
                m.rss_kib += kib(l);
            } else if l.starts_with("AnonHugePages:") {
                m.anon_huge_kib += kib(l);
            } else if l.starts_with("KernelPageSize:") && kib(l) >= 2048 {
                m.hugetlb_kib += size;
            }
        }
    }
    if let Ok(numa) = std::fs::read_to_string(proc_dir.join("numa_maps")) {
        for tok in numa.split_whitespace() {
            if let Some((n, pages)) = tok.strip_prefix('N').and_then(|t| t.split_once('=')) {
                if let (Ok(n), Ok(p)) = (n.parse::<u32>(), pages.parse::<u64>()) {
                    *m.numa_pages.entry(n).or_default() += p;
                }
            }
        }
    }
    m
}

/// /proc/interrupts: IRQ number -> (CPU -> count, name).
fn interrupts(text: &str) -> BTreeMap<u32, (BTreeMap<u32, u64>, String)> {
    let mut lines = text.lines();
    let cpus: Vec<u32> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let mut out = BTreeMap::new();
    for l in lines {
        let Some((irq, rest)) = l.split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.trim().parse::<u32>() else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let mut fired = BTreeMap::new();
        for &cpu in &cpus {
            match fields.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => {
                    fired.insert(cpu, n);
                }
                None => break,
            }
        }
        // Chip, hwirq and type, then the device names.
        let name = fields.skip(2).collect::<Vec<_>>().join(" ");
        out.insert(irq, (fired, name));
    }
    out
}

impl HostView {
    /// Reads the host under `root` (`/` for this machine). `extra_pids` are VMM pids known
    /// from elsewhere (a capture) whose threads count as vCPUs when named like them.
    pub fn read(root: &Path) -> HostView {
        let mut h = HostView {
            root: root.to_path_buf(),
            hostname: read(root, "proc/sys/kernel/hostname").unwrap_or_default(),
            kernel_release: read(root, "proc/sys/kernel/osrelease").unwrap_or_default(),
            kernel_version: read(root, "proc/sys/kernel/version").unwrap_or_default(),
            cmdline: read(root, "proc/cmdline").unwrap_or_default(),
            ..HostView::default()
        };
        let cpu = root.join("sys/devices/system/cpu");
        h.online = read(root, "sys/devices/system/cpu/online")
            .map(|s| parse_cpu_list(&s))
            .unwrap_or_default();
        let from_cmdline = |k: &str| {
            cmdline_param(&h.cmdline, k)
                .map(parse_cpu_list)
                .unwrap_or_default()
        };
        h.isolated = read(root, "sys/devices/system/cpu/isolated")
            .map(|s| parse_cpu_list(&s))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| from_cmdline("isolcpus"));
        h.nohz_full = read(root, "sys/devices/system/cpu/nohz_full")
            .map(|s| parse_cpu_list(&s))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| from_cmdline("nohz_full"));
        h.rcu_nocbs = from_cmdline("rcu_nocbs");
        h.rcu_nocbs.extend(h.nohz_full.iter().copied());
        for &c in &h.online {
            let base = format!("cpu{c}");
            if let Some(g) = read(&cpu, &format!("{base}/cpufreq/scaling_governor")) {
                h.governors.insert(c, g);
            }
            let idle = cpu.join(&base).join("cpuidle");
            let states: Vec<IdleState> = std::fs::read_dir(&idle)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("state"))
                .filter_map(|e| {
                    let p = e.path();
                    Some(IdleState {
                        name: read(&p, "name")?,
                        latency_us: read(&p, "latency")?.parse().ok()?,
                        disabled: read(&p, "disable").is_some_and(|d| d == "1"),
                    })
                })
                .collect();
            if !states.is_empty() {
                h.idle_states.insert(c, states);
            }
        }
        let nodes = root.join("sys/devices/system/node");
        for e in std::fs::read_dir(&nodes).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<u32>().ok())
            {
                if let Some(list) = read(&e.path(), "cpulist") {
                    h.numa_nodes.insert(n, parse_cpu_list(&list));
                }
            }
        }
        h.halt_poll_ns =
            read(root, "sys/module/kvm/parameters/halt_poll_ns").and_then(|s| s.parse().ok());
        h.thp = read(root, "sys/kernel/mm/transparent_hugepage/enabled").and_then(|s| {
            let start = s.find('[')? + 1;
            let end = start + s[start..].find(']')?;
            Some(s[start..end].to_string())
        });
        h.ksm_run = read(root, "sys/kernel/mm/ksm/run").and_then(|s| s.parse().ok());
        h.timer_migration =
            read(root, "proc/sys/kernel/timer_migration").and_then(|s| s.parse().ok());
        h.realtime = read(root, "sys/kernel/realtime").is_some_and(|s| s == "1");
        h.preempt_mode = read(root, "sys/kernel/debug/sched/preempt").and_then(|s| {
            let start = s.find('(')? + 1;
            let end = start + s[start..].find(')')?;
            Some(s[start..end].to_string())
        });
        h.kvm_backend = crate::host::kvm_backend(&root.join("sys/module"));
        h.apicv = match h.kvm_backend.as_deref() {
            Some("kvm_intel") => read(root, "sys/module/kvm_intel/parameters/enable_apicv"),
            Some("kvm_amd") => read(root, "sys/module/kvm_amd/parameters/avic"),
            _ => None,
        }
        .map(|v| matches!(v.as_str(), "Y" | "y" | "1"));

        let fired = read(root, "proc/interrupts")
            .map(|t| interrupts(&t))
            .unwrap_or_default();
        let irq_dir = root.join("proc/irq");
        for irq in numeric_dirs(&irq_dir) {
            let d = irq_dir.join(irq.to_string());
            let affinity = read(&d, "effective_affinity_list")
                .or_else(|| read(&d, "smp_affinity_list"))
                .map(|s| parse_cpu_list(&s))
                .unwrap_or_default();
            let (counts, name) = fired.get(&irq).cloned().unwrap_or_default();
            h.irqs.push(Irq {
                irq,
                name,
                affinity,
                fired: counts,
            });
        }

        h.read_processes(root);
        h
    }

    /// VMs, their vCPU threads and memory; DAMON's threads.
    fn read_processes(&mut self, root: &Path) {
        let proc_dir = root.join("proc");
        let debugfs = crate::host::debugfs_vcpu_threads(&root.join("sys/kernel/debug/kvm"));
        for pid in numeric_dirs(&proc_dir).into_iter().take(MAX_PROCS) {
            let dir = proc_dir.join(pid.to_string());
            let comm = read(&dir, "comm").unwrap_or_default();
            if comm.starts_with("kdamond") {
                self.kdamonds.push(Task {
                    pid,
                    comm,
                    allowed: read(&dir, "status")
                        .map(|s| allowed_of(&s))
                        .unwrap_or_default(),
                });
                continue;
            }
            let debugfs_vm = debugfs.values().any(|&(p, _)| p == pid);
            if !debugfs_vm && !is_vmm(&dir) {
                continue;
            }
            let vm = std::fs::read(dir.join("cmdline"))
                .map(|c| vm_name_from_cmdline(&c))
                .unwrap_or_default();
            for tid in numeric_dirs(&dir.join("task")).into_iter().take(MAX_TASKS) {
                let t = dir.join("task").join(tid.to_string());
                let tcomm = read(&t, "comm").unwrap_or_default();
                if vcpu_from_comm(&tcomm).is_none() && !debugfs.contains_key(&tid) {
                    continue;
                }
                let (cpu, rt_priority, policy) = read(&t, "stat")
                    .and_then(|s| sched_of(&s))
                    .map_or((None, 0, 0), |(c, r, p)| (Some(c), r, p));
                self.vcpus.push(VcpuThread {
                    pid,
                    tid,
                    comm: tcomm,
                    vm: vm.clone(),
                    allowed: read(&t, "status")
                        .map(|s| allowed_of(&s))
                        .unwrap_or_default(),
                    cpu,
                    policy,
                    rt_priority,
                });
            }
            self.vm_memory.insert(pid, memory_of(&dir));
        }
    }

    /// The CPUs vCPU threads may run on.
    pub fn vcpu_cpus(&self) -> Cpus {
        self.vcpus
            .iter()
            .flat_map(|v| v.allowed.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        let s = parse_cpu_list("0-3,8,10-11");
        assert_eq!(s.len(), 7);
        assert_eq!(cpu_list(&s), "0-3,8,10-11");
        assert_eq!(cpu_list(&parse_cpu_list("domain,managed_irq,2-3")), "2-3");
        assert_eq!(cpu_list(&Cpus::new()), "none");
        assert!(parse_cpu_list("0-999999").is_empty(), "bounded");
    }

    #[test]
    fn cmdline_params_stop_at_the_init_arguments() {
        let c = "ro isolcpus=2-3 quiet nohz_full=1 nohz_full=2-3 -- isolcpus=9";
        assert_eq!(cmdline_param(c, "isolcpus"), Some("2-3"));
        assert_eq!(cmdline_param(c, "nohz_full"), Some("2-3"));
        assert_eq!(cmdline_param(c, "rcu_nocbs"), None);
    }

    #[test]
    fn proc_stat_fields_after_a_comm_with_spaces_and_parens() {
        // proc_pid_stat(5): ... processor (39), rt_priority (40), policy (41) ...
        let mut f: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        f[39 - 3] = "3".into();
        f[40 - 3] = "10".into();
        f[41 - 3] = "1".into();
        let stat = format!("4242 (CPU 0/KVM (x)) {}", f.join(" "));
        assert_eq!(sched_of(&stat), Some((3, 10, 1)));
    }

    #[test]
    fn interrupts_table() {
        let t = "           CPU0       CPU1\n  0:         40          0   IO-APIC   2-edge      timer\n 26:          0         13  IO-APIC   4-edge      ttyS0\nLOC:     100   200   Local timer interrupts\n";
        let m = interrupts(t);
        assert_eq!(m[&26].0[&1], 13);
        assert_eq!(m[&26].1, "ttyS0");
        assert_eq!(m[&0].1, "timer");
        assert_eq!(m.len(), 2);
    }
}
