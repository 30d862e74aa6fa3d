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
