//! In-kernel filters: keep only the traced VMs' threads and the CPUs they run on.

use kvmtrace_common::{cpu_state, filter, VcpuThread};

use crate::{CONFIG, CPU_STATE, TRACED_TGIDS, VCPU_TIDS, VM_TGIDS};

#[inline(always)]
fn filter_mode() -> u32 {
    // SAFETY: plain read of a .rodata global the loader set before load (`CONFIG`).
    unsafe { core::ptr::read_volatile(&CONFIG.filter_mode) }
}

#[inline(always)]
pub fn apic_timer_fn() -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&CONFIG.apic_timer_fn) }
}

/// Is `tgid` one of the VMs we trace?
#[inline(always)]
pub fn vm_selected(tgid: u32) -> bool {
    if filter_mode() == filter::PIDS {
        // SAFETY: the value is only tested for presence.
        unsafe { TRACED_TGIDS.get(tgid).is_some() }
    } else {
        true
    }
}

/// Is `tid` a known vCPU thread?
#[inline(always)]
pub fn is_vcpu(tid: u32) -> bool {
    // Reading the value (a tgid, never 0) keeps the result a scalar: testing two lookups'
    // pointers for null lets LLVM OR the pointers, which the verifier rejects.
    // SAFETY: a lookup in a map of plain integers; the reference does not escape.
    unsafe { VCPU_TIDS.get(tid).is_some_and(|t| t.tgid != 0) }
}

/// The state of vCPU thread `tid`, if it is one.
#[inline(always)]
pub fn vcpu_thread(tid: u32) -> Option<*mut VcpuThread> {
    VCPU_TIDS.get_ptr_mut(tid)
}

/// Is `tgid` a process known to run vCPUs?
#[inline(always)]
pub fn is_vm(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { VM_TGIDS.get(tgid).is_some() }
}

/// Remembers `tid` as a vCPU thread of `tgid` (first KVM event in vCPU context).
#[inline(always)]
pub fn register_vcpu(tid: u32, tgid: u32) {
    let _ = VCPU_TIDS.insert(tid, VcpuThread::new(tgid), 0);
    let _ = VM_TGIDS.insert(tgid, 1, 0);
}

#[inline(always)]
pub fn cpu_state_of(cpu: u32) -> u32 {
    match CPU_STATE.get(cpu) {
        Some(s) => *s,
        None => 0,
    }
}

/// Is a traced vCPU running on `cpu`, or may one wait there (`cpu_state::WAITING`, kept until
/// the CPU idles)?
#[inline(always)]
pub fn cpu_interesting(cpu: u32) -> bool {
    cpu_state_of(cpu) != 0
}

#[inline(always)]
pub fn set_cpu_state(cpu: u32, state: u32) {
    if let Some(p) = CPU_STATE.get_ptr_mut(cpu) {
        // SAFETY: an element of an array map; a racing update from another CPU only makes
        // the filter let a few more (or fewer) host events through.
        unsafe { *p = state };
    }
}

/// Marks that a traced vCPU is runnable on `cpu`.
#[inline(always)]
pub fn mark_waiting(cpu: u32) {
    let s = cpu_state_of(cpu);
    if s & cpu_state::WAITING == 0 {
        set_cpu_state(cpu, s | cpu_state::WAITING);
    }
}
