//! Housekeeping: where kvmtrace's own threads run, and what they cost.
//!
//! A tracer must not land on the CPUs it measures: on an NFV host the vCPUs sit on isolated
//! CPUs, and a reader thread woken there delays the very interrupts it times (rtla has
//! `-H/--house-keeping` for this). By default kvmtrace's threads (the reader, the writer, the
//! TUI's input thread) are confined to CPUs that host no traced vCPU and are not isolated
//! (`isolcpus`, `nohz_full`); when every CPU it may use hosts a vCPU it says so and takes the
//! least busy one. `--housekeeping CPUS` chooses the CPUs instead, `off` leaves the threads
//! where the scheduler puts them.
//!
//! The demo guest's vCPU and interrupt threads live in kvmtrace's process but are the traced
//! workload (a guest and its device), not the tracer: they are never moved (the vCPU thread
//! stays where `--demo-cpu` pins it, the interrupt thread where the scheduler puts it) and
//! never counted as the tracer.
//!
//! What is left of the observer effect is measured: time a vCPU waits behind one of
//! kvmtrace's threads is the `tracer` cause, and [`tracer_cpu_ns`] gives kvmtrace's own CPU
//! time for the report and the TUI.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::str::FromStr;

pub use kvmtrace_analysis::capture::Placement;
pub use kvmtrace_analysis::host::{cpu_list, parse_cpulist};

/// Largest CPU number a `cpu_set_t` holds.
const MAX_CPUS: u32 = libc::CPU_SETSIZE as u32;
const _: () = assert!(kvmtrace_analysis::host::MAX_CPUS == MAX_CPUS);

/// What `--housekeeping` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Housekeeping {
    /// Leave kvmtrace's threads where the scheduler puts them (the library's default, so a
    /// program embedding a session keeps its own placement).
    #[default]
    Off,
    /// CPUs hosting no traced vCPU and not isolated (the command line's default).
    Auto,
    /// These CPUs.
    Cpus(Vec<u32>),
}

impl FromStr for Housekeeping {
    type Err = PlacementError;

    /// `auto`, `off`, or a cpulist (`0`, `0-3,8`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Housekeeping::Auto),
            "off" => Ok(Housekeeping::Off),
            list => {
                let cpus = parse_cpulist(list).map_err(PlacementError::Parse)?;
                if cpus.is_empty() {
                    return Err(PlacementError::Parse(format!(
                        "`{list}` names no CPU (give a cpulist such as 0 or 0-3,8, or auto or off)"
                    )));
                }
                Ok(Housekeeping::Cpus(cpus))
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("--housekeeping: {0}")]
    Parse(String),
    #[error("--housekeeping: CPU {cpu} is not online (online: {online})")]
    NotOnline { cpu: u32, online: String },
    #[error(
        "--housekeeping: CPU {cpu} is outside the CPUs kvmtrace may run on (its cpuset: {allowed})"
    )]
    NotAllowed { cpu: u32, allowed: String },
    #[error("no CPU is online that kvmtrace may run on")]
    NoCpu,
    #[error("confining kvmtrace's thread {tid} to CPUs {cpus}: {errno}")]
    Pin {
        tid: u32,
        cpus: String,
        errno: String,
    },
}

/// CPUs isolated on the kernel command line: `isolcpus=[flags,]LIST` and `nohz_full=LIST`.
pub fn isolated_from_cmdline(cmdline: &str) -> Vec<u32> {
    let mut out = BTreeSet::new();
    for arg in cmdline.split_whitespace() {
        let list = if let Some(v) = arg.strip_prefix("isolcpus=") {
            // Flags (`nohz`, `domain`, `managed_irq`) come first; the list is what is left.
            v.split(',')
                .skip_while(|p| p.starts_with(|c: char| c.is_ascii_alphabetic()))
                .collect::<Vec<_>>()
                .join(",")
        } else if let Some(v) = arg.strip_prefix("nohz_full=") {
            v.to_string()
        } else {
            continue;
        };
        if let Ok(cpus) = parse_cpulist(&list) {
            out.extend(cpus);
        }
    }
    out.into_iter().collect()
}

/// The host's CPUs as placement sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuFacts {
    pub online: Vec<u32>,
    /// What kvmtrace's cpuset lets it use (all online CPUs without a cpuset limit).
    pub allowed: Vec<u32>,
    /// Isolated from the scheduler: `isolcpus`, `nohz_full` (sysfs and the command line).
    pub isolated: Vec<u32>,
}

impl CpuFacts {
    /// Reads /sys/devices/system/cpu/{online,isolated,nohz_full}, /proc/cmdline and the
    /// cgroup's effective cpuset.
    pub fn read() -> CpuFacts {
        let list = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| parse_cpulist(&s).ok())
                .unwrap_or_default()
        };
        let mut online = list("/sys/devices/system/cpu/online");
        if online.is_empty() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            online = (0..n as u32).collect();
        }
        let mut isolated: BTreeSet<u32> = list("/sys/devices/system/cpu/isolated")
            .into_iter()
            .chain(list("/sys/devices/system/cpu/nohz_full"))
            .collect();
        isolated.extend(isolated_from_cmdline(
            &std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        ));
        let cpuset = cgroup_cpuset();
        let allowed: Vec<u32> = match cpuset {
            Some(set) if !set.is_empty() => {
                online.iter().copied().filter(|c| set.contains(c)).collect()
            }
            _ => online.clone(),
        };
        CpuFacts {
            online,
            allowed,
            isolated: isolated.into_iter().collect(),
        }
    }
}

/// The effective cpuset of kvmtrace's cgroup (v2), when the controller is on.
fn cgroup_cpuset() -> Option<Vec<u32>> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let file = Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("cpuset.cpus.effective");
    parse_cpulist(&std::fs::read_to_string(file).ok()?).ok()
}

/// Fields of /proc/.../stat after the `(comm)` (which may hold spaces and parentheses).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The CPUs a vCPU thread occupies: the ones it is pinned to, or, when it may run anywhere,
/// the one it last ran on. None when the thread is gone.
pub fn vcpu_cpus_of(tgid: u32, tid: u32, online: &[u32]) -> Option<Vec<u32>> {
    let dir = format!("/proc/{tgid}/task/{tid}");
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|v| parse_cpulist(v).ok())
        .unwrap_or_default();
    let pinned = !allowed.is_empty() && online.iter().any(|c| !allowed.contains(c));
    if pinned {
        return Some(allowed);
    }
    // `processor` is field 39 of stat; the fields after `(comm)` start at field 3.
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let last = stat_fields(&stat).get(36)?.parse::<u32>().ok()?;
    Some(vec![last])
}

/// Decides where kvmtrace's threads go. `least_busy` picks one CPU from candidates (it
/// samples /proc/stat; a parameter so the choice is tested without the host).
pub fn choose(
    facts: &CpuFacts,
    vcpu_cpus: &[u32],
    wanted: &Housekeeping,
    least_busy: impl FnOnce(&[u32]) -> Option<u32>,
) -> Result<Placement, PlacementError> {
    let mut placement = Placement {
        cpus: Vec::new(),
        how: String::new(),
        vcpu_cpus: vcpu_cpus.to_vec(),
        isolated: facts.isolated.clone(),
        note: None,
        since_ns: 0,
    };
    match wanted {
        Housekeeping::Off => placement.how = "off".into(),
        Housekeeping::Cpus(cpus) => {
            for &cpu in cpus {
                if !facts.online.contains(&cpu) {
                    return Err(PlacementError::NotOnline {
                        cpu,
                        online: cpu_list(&facts.online),
                    });
                }
                if !facts.allowed.contains(&cpu) {
                    return Err(PlacementError::NotAllowed {
                        cpu,
                        allowed: cpu_list(&facts.allowed),
                    });
                }
            }
            let shared: Vec<u32> = cpus
                .iter()
                .copied()
                .filter(|c| vcpu_cpus.contains(c))
                .collect();
            if !shared.is_empty() {
                placement.note = Some(format!(
                    "--housekeeping puts kvmtrace on CPU {} where a traced vCPU runs: what it takes from the vCPU there shows as `tracer`",
                    cpu_list(&shared)
                ));
            }
            placement.cpus = cpus.clone();
            placement.how = "--housekeeping".into();
        }
        Housekeeping::Auto => {
            placement.how = "auto".into();
            let usable: Vec<u32> = facts
                .allowed
                .iter()
                .copied()
                .filter(|c| !facts.isolated.contains(c))
                .collect();
            let free: Vec<u32> = usable
                .iter()
                .copied()
                .filter(|c| !vcpu_cpus.contains(c))
                .collect();
            if !free.is_empty() {
                placement.cpus = free;
            } else {
                // Every CPU kvmtrace may use hosts a vCPU (or is isolated): the least busy
                // one, and say so.
                let pool = if usable.is_empty() {
                    &facts.allowed
                } else {
                    &usable
                };
                let cpu = least_busy(pool)
                    .or_else(|| pool.first().copied())
                    .ok_or(PlacementError::NoCpu)?;
                placement.cpus = vec![cpu];
                placement.note = Some(format!(
                    "every CPU kvmtrace may use hosts a traced vCPU or is isolated: it runs on CPU {cpu}, the least busy; what it takes from the vCPUs there shows as `tracer`"
                ));
            }
        }
    }
    Ok(placement)
}

/// Per-CPU busy time (jiffies: everything but idle and iowait) from /proc/stat.
fn busy_jiffies() -> Vec<(u32, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let cpu = it.next()?.strip_prefix("cpu")?.parse::<u32>().ok()?;
            let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some((cpu, total.saturating_sub(idle)))
        })
        .collect()
}

/// The candidate that was least busy over the next 100 ms.
pub fn least_busy(candidates: &[u32]) -> Option<u32> {
    let before = busy_jiffies();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let after = busy_jiffies();
    candidates.iter().copied().min_by_key(|c| {
        let at = |v: &[(u32, u64)]| v.iter().find(|(n, _)| n == c).map_or(0, |x| x.1);
        (at(&after).saturating_sub(at(&before)), *c)
    })
}

/// `PF_KTHREAD` and `PF_USER_WORKER` (linux/sched.h): tasks the kernel made. KVM runs its
/// per-VM worker (`kvm-nx-lpage-recovery`) as a user worker inside the VMM's process: with
/// the demo, inside kvmtrace's. It belongs to the VM, not to the tracer.
const PF_KERNEL_MADE: u64 = 0x0020_0000 | 0x0000_4000;

/// Is task `tid` of this process one the kernel made (its stat `flags`, field 9)?
fn kernel_made(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| stat_fields(&s).get(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KERNEL_MADE != 0)
}

/// kvmtrace's threads now: the tasks of this process, but those the kernel made.
pub fn own_threads() -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid| !kernel_made(tid))
        .collect();
    out.sort_unstable();
    out
}

/// Is `tid` one of kvmtrace's threads (a task of this process the kernel did not make)?
pub fn is_own_thread(tid: u32) -> bool {
    Path::new("/proc/self/task").join(tid.to_string()).exists() && !kernel_made(tid)
}

/// Confines thread `tid` to `cpus` (each checked below `CPU_SETSIZE` by the parser).
pub fn pin(tid: u32, cpus: &[u32]) -> Result<(), PlacementError> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < MAX_CPUS) {
        // SAFETY: cpu < CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; a tid that has exited only
    // makes the call fail with ESRCH.
    let rc = unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(PlacementError::Pin {
        tid,
        cpus: cpu_list(cpus),
        errno: io::Error::last_os_error().to_string(),
    })
}

/// CPU time (user + system, ns) of this process's threads but `workload` (the demo guest's
/// threads, which are the traced workload): the process clock, which keeps the time of
/// threads that already ended, less the workload threads' own run time.
pub fn tracer_cpu_ns(workload: &[u32]) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; the process CPU clock always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let process = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    let workload: u64 = workload.iter().map(|&t| thread_cpu_ns(t)).sum();
    process.saturating_sub(workload)
}

/// A thread's run time in ns: /proc/self/task/TID/schedstat (ns), else stat's utime+stime
/// (clock ticks); 0 once it is gone.
fn thread_cpu_ns(tid: u32) -> u64 {
    let dir = format!("/proc/self/task/{tid}");
    if let Some(ns) = std::fs::read_to_string(format!("{dir}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return ns;
    }
    let Ok(stat) = std::fs::read_to_string(format!("{dir}/stat")) else {
        return 0;
    };
    let f = stat_fields(&stat);
    // utime and stime are fields 14 and 15 (11 and 12 after `(comm)`).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks.saturating_mul(1_000_000_000) / (hz.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_argument() {
        assert_eq!("auto".parse(), Ok(Housekeeping::Auto));
        assert_eq!("off".parse(), Ok(Housekeeping::Off));
        assert_eq!("0,2".parse(), Ok(Housekeeping::Cpus(vec![0, 2])));
        assert!("".parse::<Housekeeping>().is_err());
        assert!("2-1".parse::<Housekeeping>().is_err());
    }

    #[test]
    fn isolated_cpus_from_the_command_line() {
        let c = "BOOT_IMAGE=/vmlinuz isolcpus=domain,managed_irq,2-5 nohz_full=2-7 quiet";
        assert_eq!(isolated_from_cmdline(c), vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(isolated_from_cmdline("isolcpus=1,3"), vec![1, 3]);
        assert_eq!(isolated_from_cmdline("isolcpus=nohz,4"), vec![4]);
        assert!(isolated_from_cmdline("quiet").is_empty());
    }

    fn facts(online: u32, isolated: &[u32]) -> CpuFacts {
        CpuFacts {
            online: (0..online).collect(),
            allowed: (0..online).collect(),
            isolated: isolated.to_vec(),
        }
    }

    #[test]
    fn auto_avoids_vcpus_and_isolated_cpus() {
        let never = |_: &[u32]| -> Option<u32> { panic!("no fallback needed") };
        // This machine: two CPUs, the demo vCPU pinned to CPU 1.
        let p = choose(&facts(2, &[]), &[1], &Housekeeping::Auto, never).unwrap();
        assert_eq!((p.cpus, p.how.as_str(), p.note), (vec![0], "auto", None));
        // An NFV host: vCPUs on isolated 2-7, housekeeping 0-1.
        let p = choose(
            &facts(8, &[2, 3, 4, 5, 6, 7]),
            &[2, 3],
            &Housekeeping::Auto,
            never,
        );
        assert_eq!(p.unwrap().cpus, vec![0, 1]);
    }

    #[test]
    fn auto_says_so_when_every_cpu_hosts_a_vcpu() {
        let p = choose(&facts(2, &[]), &[0, 1], &Housekeeping::Auto, |c| {
            assert_eq!(c, [0, 1]);
            Some(1)
        })
        .unwrap();
        assert_eq!(p.cpus, vec![1]);
        assert!(p.note.unwrap().contains("least busy"));
        // Only isolated CPUs left free: still not on them; the least busy vCPU CPU.
        let p = choose(&facts(3, &[2]), &[0, 1], &Housekeeping::Auto, |c| {
            assert_eq!(c, [0, 1]);
            None
        })
        .unwrap();
        assert_eq!(p.cpus, vec![0]);
    }

    #[test]
    fn explicit_cpus_are_checked() {
        let f = CpuFacts {
            online: vec![0, 1, 2, 3],
            allowed: vec![0, 1, 2],
            isolated: vec![],
        };
        let none = |_: &[u32]| None;
        let want = |c: Vec<u32>| Housekeeping::Cpus(c);
        assert!(matches!(
            choose(&f, &[], &want(vec![7]), none),
            Err(PlacementError::NotOnline { cpu: 7, .. })
        ));
        assert!(matches!(
            choose(&f, &[], &want(vec![3]), none),
            Err(PlacementError::NotAllowed { cpu: 3, .. })
        ));
        let p = choose(&f, &[1], &want(vec![1, 2]), none).unwrap();
        assert_eq!((p.cpus, p.how.as_str()), (vec![1, 2], "--housekeeping"));
        assert!(p.note.unwrap().contains("CPU 1 where a traced vCPU runs"));
        let p = choose(&f, &[1], &Housekeeping::Off, none).unwrap();
        assert!(p.cpus.is_empty() && p.how == "off");
    }

    #[test]
    fn own_threads_and_their_cpu_time() {
        let me = own_threads();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(me.contains(&tid) && is_own_thread(tid));
        assert!(!is_own_thread(u32::MAX));
        // Burn 150 ms of CPU in a thread, then leave it out as if it were the workload.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let own_cpu = || {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `ts` is a valid out pointer.
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
            };
            let mut x = 0u64;
            while own_cpu() < 150_000_000 {
                x = x.wrapping_add(1);
            }
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(unsafe { libc::gettid() } as u32);
            let _ = done_rx.recv();
            x
        });
        let wtid = rx.recv().unwrap();
        let all = tracer_cpu_ns(&[]);
        let without = tracer_cpu_ns(&[wtid]);
        assert!(
            all >= without + 140_000_000,
            "the worker's 150 ms are left out: {all} vs {without}"
        );
        done_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}
