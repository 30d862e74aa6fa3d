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
