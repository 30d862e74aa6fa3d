//! What thread and process names say: a vCPU thread's id from the names VMMs give their vCPU
//! threads, and a VM's name from its VMM's command line.

/// The vCPU id in a VMM's vCPU thread name: QEMU `CPU 3/KVM`, Firecracker `fc_vcpu 3`,
/// cloud-hypervisor `vcpu3`, crosvm `crosvm_vcpu3`, kvmtool `kvm-vcpu-3` (builtin-run.c
/// `kvm_cpu_thread`).
///
/// QEMU's number is its `cpu_index`, not KVM's vcpu_id (the APIC id), which differs when the
/// topology leaves gaps: use it only when KVM itself (a `kvm_exit`/`kvm_entry` `vcpu_id`, or
/// KVM's debugfs) does not say.
pub fn vcpu_from_comm(comm: &str) -> Option<u32> {
    let id = if let Some(rest) = comm.strip_prefix("CPU ") {
        rest.strip_suffix("/KVM")?
    } else if let Some(rest) = comm.strip_prefix("fc_vcpu") {
        rest
    } else if let Some(rest) = comm.strip_prefix("crosvm_vcpu") {
        rest
    } else if let Some(rest) = comm.strip_prefix("kvm-vcpu-") {
        rest
    } else {
        comm.strip_prefix("vcpu")?
    };
    id.trim().parse().ok()
}

/// A VM's name from its VMM's command line: QEMU's `-name guest=NAME,...` or `-name NAME`,
/// else the program's file name.
pub fn vm_name_from_cmdline(cmdline: &[u8]) -> String {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if let Some(i) = args.iter().position(|a| a == "-name") {
        if let Some(v) = args.get(i + 1) {
            let first = v.split(',').next().unwrap_or(v);
            return first.strip_prefix("guest=").unwrap_or(first).to_string();
        }
    }
    args.first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_ids_from_thread_names() {
        assert_eq!(vcpu_from_comm("CPU 0/KVM"), Some(0));
        assert_eq!(vcpu_from_comm("CPU 12/KVM"), Some(12));
        assert_eq!(vcpu_from_comm("qemu-system-x86"), None);
        assert_eq!(vcpu_from_comm("CPU x/KVM"), None);
        assert_eq!(vcpu_from_comm("fc_vcpu 2"), Some(2));
        assert_eq!(vcpu_from_comm("vcpu7"), Some(7));
        assert_eq!(vcpu_from_comm("crosvm_vcpu1"), Some(1));
        assert_eq!(vcpu_from_comm("kvm-vcpu-3"), Some(3));
        assert_eq!(vcpu_from_comm("vcpu_thread"), None);
    }

    #[test]
    fn vm_names() {
        assert_eq!(
            vm_name_from_cmdline(
                b"/usr/bin/qemu-system-x86_64\0-name\0guest=vnf-fw1,debug-threads=on\0-m\x001024\0"
            ),
            "vnf-fw1"
        );
        assert_eq!(vm_name_from_cmdline(b"qemu\0-name\0router\0"), "router");
        assert_eq!(
            vm_name_from_cmdline(b"/opt/fc/firecracker\0--api-sock\0x\0"),
            "firecracker"
        );
        assert_eq!(vm_name_from_cmdline(b""), "");
    }
}
