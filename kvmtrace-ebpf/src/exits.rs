//! `kvm_exit` / `kvm_entry`: exit-handling latency aggregated in the kernel, exits streamed
//! only when the attribution may need them (`kvmtrace_common::exits` has the scheme).
//!
//! Per exit, the programs do what a counting one-liner does plus a little: `kvm_exit` reads
//! its record into the thread's `VCPU_TIDS` value (the lookup that tells a vCPU thread
//! anyway), `kvm_entry` adds the latency to the thread's histogram (one more lookup). Only
//! the exits of an armed thread, long exits, or every exit with `all_exits` reach the ring.
//!
//! Arming: an interrupt accepted for a vCPU (`kvm_apic_accept_irq`, `kvm_apicv_accept_irq`:
//! their `apicid` is the target's vCPU id) arms that vCPU's thread, found in `VCPU_BY_ID`
//! (filled from `kvm_exit`/`kvm_entry`'s `vcpu_id`); when the target's thread is not known
//! it arms every vCPU (`GLOBAL_STREAM`). A PIC raise (`kvm_pic_set_irq`, no accept follows)
//! arms its VM (`VM_STREAM`). A vCPU thread's wake-up, switch-in, `kvm_vcpu_wakeup` and
//! `kvm_inj_virq` arm the thread itself. An armed thread streams its exits for
//! `CONFIG.stream_hold_ns`: an interrupt-to-guest window stays armed as long as its events
//! keep coming (a wake-up, a switch-in, the injection), an exit streamed when it happened
//! always has its entry streamed too, and so has an exit armed at any time while it was
//! pending (its entry may be what delivers the interrupt). (`kvm_set_irq`, `kvm_msi_set_irq` and
//! `kvm_ioapic_set_irq` arm nothing: the accept follows within a microsecond.)

use aya_ebpf::programs::TracePointContext;
use kvmtrace_common::{
    exits::{bucket, vcpu_key, EXIT_PENDING, EXIT_STREAMED, NBUCKETS, VCPU_ID_KNOWN},
    limits, Event, ExitKey, Kind, VcpuThread,
};

use crate::{
    filter::{register_vcpu, vcpu_thread, vm_selected},
    record::{count, current_ids, emit, read_event_of, this_cpu},
    AGG_MISSES, CONFIG, EXIT_HIST, GLOBAL_STREAM, PASS, VCPU_BY_ID, VM_STREAM, ZERO_HIST,
};

/// `bpf_map_update_elem` flag: only insert a key that is not there.
const BPF_NOEXIST: u64 = 1;

#[inline(always)]
fn all_exits() -> bool {
    // SAFETY: plain read of a .rodata global the loader set before load (`CONFIG`).
    unsafe { core::ptr::read_volatile(&CONFIG.all_exits) != 0 }
}

#[inline(always)]
fn threshold_ns() -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&CONFIG.exit_threshold_ns) }
}

#[inline(always)]
fn hold_ns() -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&CONFIG.stream_hold_ns) }
}

#[inline(always)]
fn vm_slot(tgid: u32) -> u32 {
    tgid % limits::VM_STREAM_SLOTS
}

/// Arms vCPU thread `t`: its exits are streamed until `now` + the hold.
#[inline(always)]
pub fn arm_thread(t: *mut VcpuThread, now: u64) {
    // SAFETY: `t` points to a `VCPU_TIDS` value; an 8-byte aligned store, so a racing
    // reader sees the old or the new deadline.
    unsafe { (*t).stream_until = now + hold_ns() };
}

/// An interrupt was accepted at `now` for vCPU `vcpu_id` of the VM run by `tgid` (the
/// current process): arms that vCPU's thread, or every vCPU when it is not known.
#[inline(always)]
pub fn arm_target(tgid: u32, vcpu_id: u32, now: u64) {
    // SAFETY: a lookup in a map of plain integers; the value is copied out.
    let tid = unsafe { VCPU_BY_ID.get(vcpu_key(tgid, vcpu_id)).copied() };
    match tid.and_then(vcpu_thread) {
        Some(t) => arm_thread(t, now),
        None => arm_raise(tgid, false, now),
    }
}

/// An interrupt was raised at `now` from process `tgid` for no named vCPU: arms that VM if
/// `is_vm`, else every VM (the engine routes it).
#[inline(always)]
pub fn arm_raise(tgid: u32, is_vm: bool, now: u64) {
    let until = now + hold_ns();
    let p = if is_vm {
        VM_STREAM.get_ptr_mut(vm_slot(tgid))
    } else {
        GLOBAL_STREAM.get_ptr_mut(0)
    };
    if let Some(p) = p {
        // SAFETY: an element of an array map; see `arm_thread`.
        unsafe { *p = until };
    }
}

/// Was thread `t` (of its VM) armed at any time after `since`? (At `now` when `since` is
/// `now`: a deadline later than the time.)
#[inline(always)]
fn armed(t: &VcpuThread, since: u64) -> bool {
    if all_exits() || since < t.stream_until {
        return true;
    }
    let vm = VM_STREAM.get(vm_slot(t.tgid)).copied().unwrap_or(0);
    let global = GLOBAL_STREAM.get(0).copied().unwrap_or(0);
    since < vm || since < global
}

/// Remembers which thread runs vCPU `vcpu_id` of its VM (once per thread), for the
/// interrupts accepted for it.
#[inline(always)]
fn learn_vcpu_id(t: *mut VcpuThread, ids: (u32, u32), e: &Event, slot: usize) {
    // SAFETY: `t` points to this thread's `VCPU_TIDS` value (see `kvm_exit`).
    let flags = unsafe { (*t).flags };
    if flags & VCPU_ID_KNOWN != 0 || e.missing & (1 << slot) != 0 {
        return;
    }
    let key = vcpu_key(ids.1, e.slots[slot] as u32);
    if VCPU_BY_ID.insert(key, ids.0, 0).is_ok() {
        // SAFETY: as above.
        unsafe { (*t).flags = flags | VCPU_ID_KNOWN };
    }
}

/// The vCPU thread state of the current task, registering it on its first exit if its VM
/// is traced.
#[inline(always)]
fn current_vcpu() -> Option<((u32, u32), *mut VcpuThread)> {
    let ids = current_ids();
    if let Some(t) = vcpu_thread(ids.0) {
        return Some((ids, t));
    }
    if !vm_selected(ids.1) {
        return None;
    }
    register_vcpu(ids.0, ids.1);
    vcpu_thread(ids.0).map(|t| (ids, t))
}

program! {
    pub fn kvm_exit(ctx: TracePointContext) -> u32 {
        let Some((ids, t)) = current_vcpu() else {
            return PASS;
        };
        let e = read_event_of(&ctx, Kind::KvmExit, this_cpu(), ids);
        // Slot 2 of kvm_exit is `vcpu_id`.
        learn_vcpu_id(t, ids, &e, 2);
        // SAFETY: `t` points to this thread's `VCPU_TIDS` value; only the thread's own
        // exit and entry write `exit` and `flags`, and a thread runs on one CPU at a time.
        unsafe {
            let mut flags = EXIT_PENDING | ((*t).flags & VCPU_ID_KNOWN);
            if armed(&*t, e.ts_ns) {
                emit(&e);
                flags |= EXIT_STREAMED;
            }
            (*t).exit = e;
            (*t).flags = flags;
        }
        PASS
    }
}

program! {
    pub fn kvm_entry(ctx: TracePointContext) -> u32 {
        let Some((ids, t)) = current_vcpu() else {
            return PASS;
        };
        let e = read_event_of(&ctx, Kind::KvmEntry, this_cpu(), ids);
        // Slot 0 of kvm_entry is `vcpu_id`.
        learn_vcpu_id(t, ids, &e, 0);
        let now = e.ts_ns;
        // SAFETY: as in `kvm_exit`.
        let flags = unsafe { (*t).flags };
        // SAFETY: as above; the pending exit is read in place.
        let exit = unsafe { &(*t).exit };
        let pending = flags & EXIT_PENDING != 0;
        // Armed at any time during the pending exit: a window opened while the vCPU was out
        // of the guest (an interrupt posted during a long exit, APICv, no `kvm_inj_virq`)
        // closes at this entry, however long after the arming it comes.
        let since = if pending { exit.ts_ns } else { now };
        let mut stream = flags & EXIT_STREAMED != 0 || armed(unsafe { &*t }, since);
        if pending {
            let latency = now.saturating_sub(exit.ts_ns);
            if !aggregate(ids.0, exit, latency) || latency >= threshold_ns() {
                stream = true;
            }
            if stream && flags & EXIT_STREAMED == 0 {
                // Late, with its own time: the reader's reorder window puts it in place
                // when the exit was short, the engine takes it as late when it was not.
                emit(exit);
            }
            // SAFETY: as above.
            unsafe { (*t).flags = flags & VCPU_ID_KNOWN };
        }
        if stream {
            emit(&e);
        }
        PASS
    }
}

/// Adds an exit of `latency` ns to thread `tid`'s histogram of its reason; false when the
/// map is full (the caller streams the exit instead, and it is counted in `AGG_MISSES`).
#[inline(always)]
fn aggregate(tid: u32, exit: &Event, latency: u64) -> bool {
    let key = ExitKey {
        tid,
        reason: exit.slots[0] as u32,
        // Slot 1 is `isa`; absent on kernels without it (read as 0, as the engine does).
        isa: if exit.missing & 0b10 != 0 {
            0
        } else {
            exit.slots[1] as u32
        },
        _pad: 0,
    };
    let mut h = EXIT_HIST.get_ptr_mut(key);
    if h.is_none() {
        if let Some(zero) = ZERO_HIST.get(0) {
            let _ = EXIT_HIST.insert(key, zero, BPF_NOEXIST);
        }
        h = EXIT_HIST.get_ptr_mut(key);
    }
    let Some(h) = h else {
        count(AGG_MISSES.get_ptr_mut(0));
        return false;
    };
    // `& (NBUCKETS - 1)` restates the bound for the verifier (bucket() < NBUCKETS).
    let b = bucket(latency) & (NBUCKETS - 1);
    // SAFETY: `h` points to this thread's histogram value; only this thread's entries
    // update it (the thread is in the key), and a thread runs on one CPU at a time, so
    // plain read-modify-writes do not race. Userspace reads it concurrently and may see a
    // count one exit ahead of a bucket, which the next read settles.
    unsafe {
        (*h).count += 1;
        (*h).sum_ns += latency;
        if latency > (*h).max_ns {
            (*h).max_ns = latency;
        }
        (*h).buckets[b] = (*h).buckets[b].wrapping_add(1);
    }
    true
}
