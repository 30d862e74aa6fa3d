//! What the running kernel offers kvmtrace, in one line for `kvmtrace --version`: BTF,
//! BTF tracepoints (`tp_btf`), the KVM backend and tracefs. Cheap, and without privileges:
//! the one check that needs them (loading a BPF program) then says `unknown (needs root)`.

use std::fmt;
use std::path::Path;

use aya::Btf;
use aya_obj::btf::BtfKind;

use crate::host;

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Yes,
    No(String),
    Unknown(String),
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Yes => f.write_str("yes"),
            Check::No(why) => write!(f, "no ({why})"),
            Check::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// The kernel's features, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    pub release: String,
    /// `/sys/kernel/btf/vmlinux` is there.
    pub btf: bool,
    /// A BTF tracepoint program loads and attaches (to `sched_switch`).
    pub tp_btf: Check,
    /// The loaded KVM backend module, and whether `/dev/kvm` exists.
    pub kvm: Option<String>,
    pub kvm_device: bool,
    /// Where tracefs is mounted, or None.
    pub tracefs: Option<String>,
    /// The kernel knows tracefs (kvmtrace mounts it when it is not mounted).
    pub tracefs_known: bool,
}

impl KernelFeatures {
    /// Looks: a few files under /proc and /sys, and (with the privileges to load BPF) one
    /// two-instruction program loaded, attached and closed.
    pub fn detect() -> KernelFeatures {
        let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
        let tp_btf = if !btf {
            Check::No("no BTF".into())
        } else if host::check_own_privileges().is_err() {
            Check::Unknown("needs root".into())
        } else {
            tp_btf_attaches()
        };
        let facts = host::read_facts();
        KernelFeatures {
            release: facts.kernel,
            btf,
            tp_btf,
            kvm: facts.kvm_backend,
            kvm_device: facts.kvm_device,
            tracefs: tracefs_mount(),
            tracefs_known: std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("tracefs"))
            }),
        }
    }
}

impl fmt::Display for KernelFeatures {
    /// `kernel 6.18.44: BTF yes, tp_btf yes, KVM kvm_pvm, tracefs /sys/kernel/tracing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kvm = match (&self.kvm, self.kvm_device) {
            (Some(b), true) => b.clone(),
            (Some(b), false) => format!("{b} (no /dev/kvm)"),
            (None, _) => "none loaded".into(),
        };
        let tracefs = match (&self.tracefs, self.tracefs_known) {
            (Some(p), _) => p.clone(),
            (None, true) => "not mounted (kvmtrace mounts it)".into(),
            (None, false) => "unavailable".into(),
        };
        write!(
            f,
            "kernel {}: BTF {}, tp_btf {}, KVM {kvm}, tracefs {tracefs}",
            self.release,
            if self.btf { "yes" } else { "no" },
            self.tp_btf
        )
    }
}

/// Where tracefs is mounted, from /proc/mounts (readable by anyone, unlike tracefs itself).
fn tracefs_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (_dev, dir, fstype) = (it.next()?, it.next()?, it.next()?);
        (fstype == "tracefs").then(|| dir.to_string())
    })
}

/// The prefix of `union bpf_attr` that `BPF_PROG_LOAD` reads (linux/bpf.h), with explicit
/// padding so every byte passed is initialised; the kernel zero-fills what it knows beyond.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 120);

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTpOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;

/// Loads `r0 = 0; exit` as a BTF tracepoint program on `sched_switch` and attaches it:
/// what `#[btf_tracepoint]` programs need (the verifier and the kernel's lockdown decide).
fn tp_btf_attaches() -> Check {
    let btf = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => return Check::No(format!("reading BTF: {e}")),
    };
    let id = match btf.id_by_type_name_kind("btf_trace_sched_switch", BtfKind::Typedef) {
        Ok(id) => id,
        Err(e) => return Check::No(format!("{e}")),
    };
    // mov64 r0, 0; exit.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"kvmtrace_f");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_TRACE_RAW_TP,
        prog_btf_fd: 0,
        func_info_rec_size: 0,
        func_info: 0,
        func_info_cnt: 0,
        line_info_rec_size: 0,
        line_info: 0,
        line_info_cnt: 0,
        attach_btf_id: id,
        attach_prog_fd: 0,
        _pad: 0,
    };
    // SAFETY: BPF_PROG_LOAD reads `size` bytes of `attr`, all initialised; the pointers in
    // it (instructions, license) stay valid for the call.
    let prog = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if prog < 0 {
        return Check::No(format!("load: {}", std::io::Error::last_os_error()));
    }
    let open = RawTpOpenAttr {
        name: 0,
        prog_fd: prog as u32,
        _pad: 0,
    };
    // SAFETY: BPF_RAW_TRACEPOINT_OPEN reads `size` initialised bytes; a tracing program
    // carries its attach point, so the name is null.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            &open as *const RawTpOpenAttr,
            std::mem::size_of::<RawTpOpenAttr>() as libc::c_uint,
        )
    };
    let result = if link < 0 {
        Check::No(format!("attach: {}", std::io::Error::last_os_error()))
    } else {
        Check::Yes
    };
    for fd in [link, prog].into_iter().filter(|&fd| fd >= 0) {
        // SAFETY: fd is a descriptor this function opened and nothing else holds.
        unsafe { libc::close(fd as libc::c_int) };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_summary() {
        let k = KernelFeatures {
            release: "6.18.44".into(),
            btf: true,
            tp_btf: Check::Unknown("needs root".into()),
            kvm: Some("kvm_pvm".into()),
            kvm_device: true,
            tracefs: None,
            tracefs_known: true,
        };
        assert_eq!(
            k.to_string(),
            "kernel 6.18.44: BTF yes, tp_btf unknown (needs root), KVM kvm_pvm, \
             tracefs not mounted (kvmtrace mounts it)"
        );
        let k = KernelFeatures {
            btf: false,
            tp_btf: Check::No("no BTF".into()),
            kvm: None,
            tracefs: Some("/sys/kernel/tracing".into()),
            ..k
        };
        assert_eq!(
            k.to_string(),
            "kernel 6.18.44: BTF no, tp_btf no (no BTF), KVM none loaded, tracefs /sys/kernel/tracing"
        );
    }

    #[test]
    fn detection_runs_anywhere() {
        // Whatever the machine: it answers, and says why when it cannot tell.
        let k = KernelFeatures::detect();
        assert!(!k.release.is_empty());
        if !k.btf {
            assert_eq!(k.tp_btf, Check::No("no BTF".into()));
        }
    }
}
