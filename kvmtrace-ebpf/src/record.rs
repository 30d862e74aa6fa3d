//! Building and sending an [`Event`] from a tracepoint context.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    programs::TracePointContext,
};
use kvmtrace_common::{Event, FieldSpec, Kind, NSLOTS};

use crate::{CONFIG, DROPS, EVENTS};

/// The CPU this program runs on.
#[inline(always)]
pub fn this_cpu() -> u32 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_get_smp_processor_id() }
}

/// (tid, tgid) of the current task.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    (id as u32, (id >> 32) as u32)
}

/// Where this kernel keeps `kind`'s fields (read from .rodata, so constant to the verifier).
#[inline(always)]
fn specs(kind: Kind) -> [FieldSpec; NSLOTS] {
    // SAFETY: CONFIG is a plain `repr(C)` static; the volatile read keeps the compiler from
    // folding the zeroed initialiser that the loader replaces before load.
    unsafe { core::ptr::read_volatile(&CONFIG.fields[kind as usize]) }
}

#[inline(always)]
fn read_field(ctx: &TracePointContext, spec: FieldSpec) -> Option<u64> {
    let off = spec.offset as usize;
    let signed = spec.signed != 0;
    // SAFETY: `read_at` goes through bpf_probe_read_kernel, which checks the address; the
    // offset and size come from this kernel's format file for this tracepoint.
    unsafe {
        Some(match spec.size {
            1 if signed => ctx.read_at::<i8>(off).ok()? as i64 as u64,
            1 => ctx.read_at::<u8>(off).ok()? as u64,
            2 if signed => ctx.read_at::<i16>(off).ok()? as i64 as u64,
            2 => ctx.read_at::<u16>(off).ok()? as u64,
            4 if signed => ctx.read_at::<i32>(off).ok()? as i64 as u64,
            4 => ctx.read_at::<u32>(off).ok()? as u64,
            8 => ctx.read_at::<u64>(off).ok()?,
            _ => return None,
        })
    }
}

/// Fills an event of `kind` with the current task, time, CPU and the tracepoint's fields.
#[inline(always)]
pub fn read_event(ctx: &TracePointContext, kind: Kind, cpu: u32) -> Event {
    let (tid, tgid) = current_ids();
    let mut ev = Event {
        // SAFETY: a helper without arguments or side effects.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tid,
        tgid,
        cpu,
        kind: kind as u16,
        missing: 0,
        _pad: 0,
        slots: [0; NSLOTS],
    };
    let specs = specs(kind);
    let mut i = 0;
    while i < NSLOTS {
        let spec = specs[i];
        if spec.size == 16 {
            // A `char[16]` comm: two slots.
            if i + 1 < NSLOTS {
                // SAFETY: as in `read_field`.
                if let Ok(w) = unsafe { ctx.read_at::<[u64; 2]>(spec.offset as usize) } {
                    ev.slots[i] = w[0];
                    ev.slots[i + 1] = w[1];
                }
            }
            i += 2;
            continue;
        }
        if spec.size != 0 {
            match read_field(ctx, spec) {
                Some(v) => ev.slots[i] = v,
                None => ev.missing |= 1 << i,
            }
        } else if i < kind.slots().len() && !kind.slots()[i].is_empty() {
            ev.missing |= 1 << i;
        }
        i += 1;
    }
    ev
}

/// Sends `ev` to userspace; a full ring buffer is counted, never hidden.
#[inline(always)]
pub fn emit(ev: &Event) {
    if EVENTS.output::<Event>(ev, 0).is_err() {
        if let Some(n) = DROPS.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot: only this CPU writes it while this program runs.
            unsafe { *n += 1 };
        }
    }
}
