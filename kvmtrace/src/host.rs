//! Facts about the host (kernel, KVM backend, CPU), privilege checks, and discovery of the
//! VMs and vCPU threads already running.

use std::collections::BTreeMap;
use std::path::Path;

pub use kvmtrace_analysis::host::{qemu_version_from_cmdline, HostFacts, VirtFacts};
use kvmtrace_analysis::threads::vcpu_from_comm;

/// Reads the facts of the machine this runs on.
pub fn read_facts() -> HostFacts {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let cmdline = read("/proc/cmdline");
    HostFacts {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        kvm_backend: kvm_backend(Path::new("/sys/module")),
        kvm_device: Path::new("/dev/kvm").exists(),
        cpu_model,
        ncpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        virt: read_virt(&cpuinfo, Path::new("/sys/class/dmi/id"), &cmdline),
        cmdline,
        clock: "CLOCK_MONOTONIC".to_string(),
    }
}

/// Reads what says this host is a VM (`sys_class_dmi` is normally `/sys/class/dmi/id`).
pub fn read_virt(cpuinfo: &str, sys_class_dmi: &Path, cmdline: &str) -> VirtFacts {
    let dmi = |name: &str| {
        std::fs::read_to_string(sys_class_dmi.join(name))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let hypervisor_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    VirtFacts {
        hypervisor_flag,
        cpuid_signature: if hypervisor_flag {
            cpuid_hypervisor_signature()
        } else {
            None
        },
        sys_vendor: dmi("sys_vendor"),
        product_name: dmi("product_name"),
        product_version: dmi("product_version"),
        bios_version: dmi("bios_version"),
        qemu_version: qemu_version_from_cmdline(cmdline),
    }
}

/// The hypervisor's CPUID signature (leaf 0x4000_0000, EBX ECX EDX), NULs trimmed.
#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor_signature() -> Option<String> {
    // Leaf 0x4000_0000 is reserved for hypervisors: callers ask only when the CPU's
    // hypervisor flag is set (on bare metal it returns another leaf's data).
    let r = std::arch::x86_64::__cpuid(0x4000_0000);
    let mut bytes = Vec::with_capacity(12);
    for w in [r.ebx, r.ecx, r.edx] {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let s: String = bytes
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim().to_string();
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')).then_some(s)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor_signature() -> Option<String> {
    None
}

/// The loaded KVM backend module, from `/sys/module/kvm_*`.
pub fn kvm_backend(sys_module: &Path) -> Option<String> {
    if !sys_module.join("kvm").exists() {
        return None;
    }
    let mut backends: Vec<String> = std::fs::read_dir(sys_module)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("kvm_") && n != "kvm_common")
        .collect();
    backends.sort();
    Some(
        backends
            .into_iter()
            .next()
            .unwrap_or_else(|| "kvm".to_string()),
    )
}

/// Capabilities kvmtrace needs to load and attach its probes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivilegeError {
    #[error(
        "kvmtrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load its probes; missing: \
         {missing}. Run it as root, or grant them with `setcap cap_bpf,cap_perfmon+ep` on the binary"
    )]
    Missing { missing: String },
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities in `status` (the text of /proc/self/status).
pub fn check_privileges(status: &str) -> Result<(), PrivilegeError> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Err(PrivilegeError::Missing {
        missing: missing.join(", "),
    })
}

/// Checks this process's privileges.
pub fn check_own_privileges() -> Result<(), PrivilegeError> {
    check_privileges(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// A thread known to run a vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuThread {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub vcpu: Option<u32>,
}

/// vCPU threads from KVM's debugfs (`/sys/kernel/debug/kvm/<pid>-<fd>/vcpu<N>/pid`), when
/// debugfs is mounted: tid -> (VMM pid, vCPU id). Works whatever the VMM names its threads.
pub fn debugfs_vcpu_threads(kvm_debugfs: &Path) -> BTreeMap<u32, (u32, u32)> {
    let mut out = BTreeMap::new();
    let Ok(vms) = std::fs::read_dir(kvm_debugfs) else {
        return out;
    };
    for vm in vms.filter_map(|e| e.ok()) {
        let name = vm.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(vcpus) = std::fs::read_dir(vm.path()) else {
            continue;
        };
        for vcpu in vcpus.filter_map(|e| e.ok()) {
            let Some(id) = vcpu
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vcpu"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // 0 until the vCPU's first KVM_RUN (`pid_nr(NULL)`, kvm_main.c:4206-4214): a VM
            // started paused, or a vCPU not yet brought up.
            if let Some(tid) = std::fs::read_to_string(vcpu.path().join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|&tid| tid != 0)
            {
                out.insert(tid, (pid, id));
            }
        }
    }
    out
}

/// Reads a thread's comm.
pub fn thread_comm(tgid: u32, tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Is this process a VMM (does it hold a vCPU file descriptor)? Returns the vCPU ids it has.
fn vcpu_fds(proc_dir: &Path) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("anon_inode:kvm-vcpu:")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// vCPU threads of running VMs: from KVM's debugfs where mounted, and from processes
/// holding `kvm-vcpu` file descriptors whose threads carry a known vCPU thread name.
/// `pids` limits the search when not empty. Others are found later, from their first KVM
/// event.
pub fn discover_vcpu_threads(pids: &[u32]) -> BTreeMap<u32, VcpuThread> {
    let mut out = BTreeMap::new();
    for (tid, (tgid, vcpu)) in debugfs_vcpu_threads(Path::new("/sys/kernel/debug/kvm")) {
        if pids.is_empty() || pids.contains(&tgid) {
            out.insert(
                tid,
                VcpuThread {
                    tgid,
                    tid,
                    comm: thread_comm(tgid, tid).unwrap_or_default(),
                    vcpu: Some(vcpu),
                },
            );
        }
    }
    let candidates: Vec<u32> = if pids.is_empty() {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    } else {
        pids.to_vec()
    };
    for tgid in candidates {
        let dir = Path::new("/proc").join(tgid.to_string());
        if vcpu_fds(&dir).is_empty() {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
            continue;
        };
        for tid in tasks.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let Some(comm) = thread_comm(tgid, tid) else {
                continue;
            };
            if let Some(vcpu) = vcpu_from_comm(&comm) {
                out.entry(tid).or_insert(VcpuThread {
                    tgid,
                    tid,
                    comm,
                    vcpu: Some(vcpu),
                });
            }
        }
    }
    out
}

/// What /proc says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    /// Its thread group: differs from `pid` when `pid` is a thread of another process.
    pub tgid: u32,
    pub comm: String,
    /// Start time in clock ticks since boot: a reused pid has another.
    pub start_ticks: u64,
    /// A zombie (exited, not yet reaped) or dead.
    pub exited: bool,
}

/// Reads /proc/PID/{stat,status}; None when there is no such process.
pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3 and starttime field 22 (0 and 19 after `(comm)`).
    let exited = matches!(f.first(), Some(&("Z" | "X" | "x")));
    let start_ticks = f.get(19)?.parse().ok()?;
    let tgid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(pid);
    Some(ProcInfo {
        pid,
        tgid,
        comm,
        start_ticks,
        exited,
    })
}

/// A `-p` target that cannot be traced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("-p {pid}: no such process")]
    NoSuchProcess { pid: u32 },
    #[error("-p {pid}: {pid} is a thread of process {tgid}; give the process id (-p {tgid})")]
    NotAProcess { pid: u32, tgid: u32 },
}

/// Checks that `pid` names a running process (perf refuses a pid that does not exist).
pub fn check_target(pid: u32) -> Result<ProcInfo, TargetError> {
    let info = proc_info(pid)
        .filter(|i| !i.exited)
        .ok_or(TargetError::NoSuchProcess { pid })?;
    if info.tgid != pid {
        return Err(TargetError::NotAProcess {
            pid,
            tgid: info.tgid,
        });
    }
    Ok(info)
}

/// Does process `pid` run a vCPU now (a `kvm-vcpu` file descriptor, or a vCPU in KVM's
/// debugfs)?
pub fn runs_vcpus(pid: u32) -> bool {
    !vcpu_fds(&Path::new("/proc").join(pid.to_string())).is_empty()
        || debugfs_vcpu_threads(Path::new("/sys/kernel/debug/kvm"))
            .values()
            .any(|&(p, _)| p == pid)
}

/// KVM's LAPIC timer callback address from /proc/kallsyms (0 when hidden or absent).
pub fn apic_timer_fn_address() -> u64 {
    std::fs::read_to_string("/proc/kallsyms")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                let addr = it.next()?;
                let _ty = it.next()?;
                (it.next()? == "apic_timer_fn")
                    .then(|| u64::from_str_radix(addr, 16).ok())
                    .flatten()
            })
        })
        .unwrap_or(0)
}

/// The kernel's text symbols from /proc/kallsyms (modules included), to name stack frames.
pub fn kernel_symbols() -> Result<kvmtrace_analysis::ksyms::Ksyms, String> {
    let text = std::fs::read_to_string("/proc/kallsyms")
        .map_err(|e| format!("reading /proc/kallsyms: {e}"))?;
    kvmtrace_analysis::ksyms::Ksyms::parse(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_threads_from_kvm_debugfs() {
        let dir = std::env::temp_dir().join(format!("kvmtrace-dbg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (vm, vcpu, tid) in [
            ("4242-12", 0, "4250"),
            ("4242-12", 1, "4251"),
            ("77-9", 0, "80"),
            // Never run yet (a VM started paused): KVM says 0.
            ("77-9", 1, "0"),
        ] {
            let d = dir.join(vm).join(format!("vcpu{vcpu}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("pid"), format!("{tid}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.join("not-a-vm")).unwrap();
        let m = debugfs_vcpu_threads(&dir);
        assert_eq!(m.len(), 3);
        assert_eq!(m[&4251], (4242, 1));
        assert_eq!(m[&80], (77, 0));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(debugfs_vcpu_threads(&dir).is_empty());
    }

    #[test]
    fn privileges_from_capeff() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(check_privileges(root), Ok(()));
        let bpf_perfmon = format!("CapEff:\t{:016x}\n", (1u64 << 39) | (1u64 << 38));
        assert_eq!(check_privileges(&bpf_perfmon), Ok(()));
        let only_bpf = format!("CapEff:\t{:016x}\n", 1u64 << 39);
        let e = check_privileges(&only_bpf).unwrap_err();
        assert!(e.to_string().contains("missing: CAP_PERFMON"), "{e}");
        let none = "CapEff:\t0000000000000000\n";
        assert!(check_privileges(none)
            .unwrap_err()
            .to_string()
            .contains("CAP_BPF, CAP_PERFMON"));
    }

    #[test]
    fn targets_are_checked() {
        let me = std::process::id();
        let info = check_target(me).expect("this process");
        assert_eq!((info.pid, info.tgid, info.exited), (me, me, false));
        assert!(info.start_ticks > 0);
        // A pid above the kernel's pid_max (4194304 at most) never exists.
        assert_eq!(
            check_target(4_999_999),
            Err(TargetError::NoSuchProcess { pid: 4_999_999 })
        );
        let e = check_target(4_999_999).unwrap_err().to_string();
        assert_eq!(e, "-p 4999999: no such process");
        // A thread of this process is not a process.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(unsafe { libc::gettid() } as u32);
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(
            check_target(tid),
            Err(TargetError::NotAProcess { pid: tid, tgid: me })
        );
        stop_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(!runs_vcpus(me), "the test process holds no vCPU");
    }

    #[test]
    fn backend_detection() {
        let dir = std::env::temp_dir().join(format!("kvmtrace-mod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kvm")).unwrap();
        assert_eq!(kvm_backend(&dir).as_deref(), Some("kvm"));
        std::fs::create_dir_all(dir.join("kvm_intel")).unwrap();
        assert_eq!(kvm_backend(&dir).as_deref(), Some("kvm_intel"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(kvm_backend(&dir), None);
    }

    #[test]
    fn virtual_machine_facts() {
        let dir = std::env::temp_dir().join(format!("kvmtrace-dmi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm svm\n";
        // Nothing at all: bare metal as far as anyone can tell.
        let bare = read_virt("flags\t: fpu svm\n", &dir, "quiet");
        assert_eq!(bare, VirtFacts::default());
        assert_eq!(bare.summary(), None);
        // QEMU's SMBIOS strings and the version xtask passes on the command line.
        for (f, v) in [
            ("sys_vendor", "QEMU\n"),
            ("product_name", "Standard PC (Q35 + ICH9, 2009)\n"),
            ("product_version", "pc-q35-7.2\n"),
            ("bios_version", "1.16.2-debian-1.16.2-1\n"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let mut v = read_virt(
            cpuinfo,
            &dir,
            "console=ttyS0 kvmtrace.qemu=7.2.22 kvmtrace.accel=tcg",
        );
        assert!(v.hypervisor_flag);
        assert_eq!(v.sys_vendor.as_deref(), Some("QEMU"));
        assert_eq!(v.product_version.as_deref(), Some("pc-q35-7.2"));
        assert_eq!(v.bios_version.as_deref(), Some("1.16.2-debian-1.16.2-1"));
        assert_eq!(v.qemu_version.as_deref(), Some("7.2.22"));
        v.cpuid_signature = Some("TCGTCGTCGTCG".into());
        assert_eq!(
            v.summary().as_deref(),
            Some("VM on QEMU 7.2.22 (TCG, pc-q35-7.2)")
        );
        // A KVM guest without DMI (Firecracker): the CPUID signature names the hypervisor.
        let fc = VirtFacts {
            hypervisor_flag: true,
            cpuid_signature: Some("KVMKVMKVM".into()),
            ..VirtFacts::default()
        };
        assert_eq!(fc.summary().as_deref(), Some("VM on KVM"));
        let unknown = VirtFacts {
            hypervisor_flag: true,
            ..VirtFacts::default()
        };
        assert_eq!(
            unknown.summary().as_deref(),
            Some("VM on an unidentified hypervisor")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(qemu_version_from_cmdline("kvmtrace.qemu= x"), None);
    }
}
