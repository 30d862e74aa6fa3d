//! What a capture records about the machine it was taken on. Reading these facts from
//! `/proc` and `/sys` is the recorder's job (the `kvmtrace` crate); this is the record.

use serde::{Deserialize, Serialize};

/// What a capture records about the machine it was taken on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    /// `kvm_intel`, `kvm_amd`, `kvm_pvm`, ... or None when no KVM module is loaded.
    pub kvm_backend: Option<String>,
    pub kvm_device: bool,
    pub cpu_model: String,
    pub ncpus: usize,
    pub cmdline: String,
    /// Clock of every timestamp: CLOCK_MONOTONIC (bpf_ktime_get_ns).
    pub clock: String,
    /// Whether this host is itself a virtual machine, and on what (absent in captures
    /// written before it existed: read as "nothing known").
    #[serde(default)]
    pub virt: VirtFacts,
}

/// What the CPU, the firmware and the kernel command line say about a hypervisor under this
/// host. Every field is empty when nothing says so (bare metal, or not known).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VirtFacts {
    /// The `hypervisor` flag in /proc/cpuinfo: the CPU says this is a virtual machine.
    pub hypervisor_flag: bool,
    /// The hypervisor's CPUID signature (leaf 0x4000_0000): `KVMKVMKVM`, `TCGTCGTCGTCG`,
    /// `Microsoft Hv`, `VMwareVMware`, ... (read only when the flag is set).
    pub cpuid_signature: Option<String>,
    /// DMI (SMBIOS) strings from /sys/class/dmi/id. Under QEMU `sys_vendor` is `QEMU` and
    /// `product_version` the machine type (`pc-q35-7.2`).
    pub sys_vendor: Option<String>,
    pub product_name: Option<String>,
    pub product_version: Option<String>,
    pub bios_version: Option<String>,
    /// QEMU's version, when whoever started this host put `kvmtrace.qemu=VERSION` on the
    /// kernel command line (`cargo xtask svm-host` does).
    pub qemu_version: Option<String>,
}

impl VirtFacts {
    /// One phrase for the report's host line (`VM on QEMU 7.2.22 (TCG, pc-q35-7.2)`), or None
    /// when nothing says this host is a virtual machine.
    pub fn summary(&self) -> Option<String> {
        let dmi_qemu = self.sys_vendor.as_deref() == Some("QEMU");
        if !self.hypervisor_flag && self.cpuid_signature.is_none() && !dmi_qemu {
            return None;
        }
        let by_cpuid = self.cpuid_signature.as_deref().map(hypervisor_name);
        let mut on = match (&self.qemu_version, by_cpuid, dmi_qemu) {
            (Some(v), _, _) => format!("QEMU {v}"),
            (None, _, true) => "QEMU".to_string(),
            (None, Some(h), false) => h.to_string(),
            (None, None, false) => match &self.sys_vendor {
                Some(v) => v.clone(),
                None => "an unidentified hypervisor".to_string(),
            },
        };
        let mut details = Vec::new();
        if let Some(h) = by_cpuid {
            if !on.starts_with(h) {
                details.push(h.to_string());
            }
        }
        if let Some(m) = &self.product_version {
            details.push(m.clone());
        }
        if !details.is_empty() {
            on = format!("{on} ({})", details.join(", "));
        }
        Some(format!("VM on {on}"))
    }
}

/// The hypervisor a CPUID signature names (the signature itself when unknown).
pub fn hypervisor_name(signature: &str) -> &str {
    match signature {
        "KVMKVMKVM" => "KVM",
        "TCGTCGTCGTCG" => "TCG",
        "Microsoft Hv" => "Hyper-V",
        "VMwareVMware" => "VMware",
        "XenVMMXenVMM" => "Xen",
        "bhyve bhyve" => "bhyve",
        "ACRNACRNACRN" => "ACRN",
        "QNXQVMBSQG" => "QNX",
        "VBoxVBoxVBox" => "VirtualBox",
        other => other,
    }
}

/// `kvmtrace.qemu=7.2.22` on a kernel command line.
pub fn qemu_version_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("kvmtrace.qemu="))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl HostFacts {
    /// One line saying what is missing for KVM tracing, or None when KVM is there.
    pub fn kvm_problem(&self) -> Option<String> {
        match (&self.kvm_backend, self.kvm_device) {
            (Some(_), true) => None,
            (None, _) => Some(
                "no KVM module is loaded (no kvm_intel, kvm_amd or other backend in /sys/module): \
                 the kvm:* tracepoints are missing; host-side tracing (sched, irq, lock) still runs"
                    .to_string(),
            ),
            (Some(b), false) => Some(format!(
                "KVM backend {b} is loaded but /dev/kvm does not exist: no VM can run here"
            )),
        }
    }
}

/// Largest CPU number a cpulist may name (the kernel's `CPU_SETSIZE` for a `cpu_set_t`).
pub const MAX_CPUS: u32 = 1024;

/// Parses a kernel cpulist (`0-3,8,10-11`, as in sysfs and on the command line); empty or
/// `(null)` is none. The CPUs come back sorted, each once.
pub fn parse_cpulist(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    let mut out = std::collections::BTreeSet::new();
    if s.is_empty() || s == "(null)" {
        return Ok(Vec::new());
    }
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|&c| c < MAX_CPUS)
                .ok_or_else(|| format!("`{v}` in `{s}` is not a CPU number below {MAX_CPUS}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("`{part}` in `{s}` is a backwards range"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Sorted CPUs as a cpulist: `0-3,6`.
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            out.push_str(&format!("{}-{}", cpus[i], cpus[j]));
        } else {
            out.push_str(&cpus[i].to_string());
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpulist(""), Ok(vec![]));
        assert_eq!(parse_cpulist("(null)\n"), Ok(vec![]));
        assert_eq!(parse_cpulist("3,1,1"), Ok(vec![1, 3]));
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("x").is_err());
        assert!(parse_cpulist("4096").is_err(), "beyond CPU_SETSIZE");
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[]), "");
        for s in ["0", "0-1", "0,2-5,7"] {
            assert_eq!(cpu_list(&parse_cpulist(s).unwrap()), s);
        }
    }
}
