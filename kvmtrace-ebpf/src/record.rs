//! Building and sending an [`Event`] from a tracepoint context.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    programs::TracePointContext,
};
use kvmtrace_common::{Event, FieldSpec, Kind, RAW_BYTES};

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

/// Where this kernel keeps slot `i` of `kind` (read from .rodata at a constant address, so
/// the verifier sees a constant and can check the stack reads below).
#[inline(always)]
fn spec(kind: Kind, i: usize) -> FieldSpec {
    // SAFETY: CONFIG is a plain `repr(C)` static; the volatile read keeps the compiler from
    // folding the zeroed initialiser that the loader replaces before load.
    unsafe { core::ptr::read_volatile(&CONFIG.fields[kind as usize][i]) }
}

/// Takes one field out of the copied raw record.
#[inline(always)]
fn field(raw: &[u64; RAW_BYTES / 8], spec: FieldSpec) -> Option<u64> {
    let off = spec.offset as usize;
    let size = spec.size as usize;
    if off + size > RAW_BYTES {
        return None;
    }
    let signed = spec.signed != 0;
    let p = raw.as_ptr() as *const u8;
    // SAFETY: `off + size <= RAW_BYTES`, so every read stays inside `raw`; unaligned reads
    // because tracepoint fields are packed by the kernel's own layout.
    unsafe {
        let at = p.add(off);
        Some(match size {
            1 if signed => *(at as *const i8) as i64 as u64,
            1 => *at as u64,
            // The kernel lays fields out at their natural alignment and `raw` is 8-aligned:
            // aligned loads (the unaligned path is kept for packed layouts).
            2 if off % 2 != 0 => {
                let v = (at as *const u16).read_unaligned();
                if signed {
                    v as i16 as i64 as u64
                } else {
                    v as u64
                }
            }
            2 if signed => *(at as *const i16) as i64 as u64,
            2 => *(at as *const u16) as u64,
            4 if off % 4 != 0 => {
                let v = (at as *const u32).read_unaligned();
                if signed {
                    v as i32 as i64 as u64
                } else {
                    v as u64
                }
            }
            4 if signed => *(at as *const i32) as i64 as u64,
            4 => *(at as *const u32) as u64,
            8 if off % 8 != 0 => (at as *const u64).read_unaligned(),
            8 => *(at as *const u64),
            _ => return None,
        })
    }
}

/// Fills an event of `kind` with the current task, time, CPU and the tracepoint's fields.
#[inline(always)]
pub fn read_event(ctx: &TracePointContext, kind: Kind, cpu: u32) -> Event {
    read_event_of(ctx, kind, cpu, current_ids())
}

/// [`read_event`] for a caller that already has the current (tid, tgid).
#[inline(always)]
pub fn read_event_of(ctx: &TracePointContext, kind: Kind, cpu: u32, ids: (u32, u32)) -> Event {
    let (tid, tgid) = ids;
    // SAFETY: a helper without arguments or side effects.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    // One copy of the record's head instead of a helper call per field. The record lives in
    // the per-CPU perf trace buffer, so reading past a short record's end stays in it.
    // SAFETY: bpf_probe_read_kernel checks the address.
    let raw: Option<[u64; RAW_BYTES / 8]> = unsafe { ctx.read_at(0) }.ok();
    // Each slot is computed as a scalar and the record built in one go: zero-filling an
    // array first would become a byte-by-byte memset call in BPF.
    let mut missing = 0u8;
    let mut slot = |i: usize| match &raw {
        Some(raw) => {
            let (v, ok) = slot_value(raw, kind, i);
            if !ok {
                missing |= 1 << i;
            }
            v
        }
        None => {
            missing |= 1 << i;
            0
        }
    };
    // Unrolled by hand: a loop would load the spec through a variable stack index and the
    // verifier would lose the constant offsets.
    let slots = [slot(0), slot(1), slot(2), slot(3), slot(4)];
    Event {
        ts_ns,
        tid,
        tgid,
        cpu,
        kind: kind as u16,
        missing,
        _pad: 0,
        slots,
    }
}

/// Slot `i`'s value and whether this kernel provides it. A 16-byte comm at slot `i` fills
/// slots `i` and `i + 1`.
#[inline(always)]
fn slot_value(raw: &[u64; RAW_BYTES / 8], kind: Kind, i: usize) -> (u64, bool) {
    let sp = spec(kind, i);
    if sp.size == 16 {
        let lo = FieldSpec { size: 8, ..sp };
        return field(raw, lo).map_or((0, false), |v| (v, true));
    }
    if i > 0 {
        let prev = spec(kind, i - 1);
        if prev.size == 16 {
            let hi = FieldSpec {
                offset: prev.offset + 8,
                size: 8,
                signed: 0,
            };
            return field(raw, hi).map_or((0, false), |v| (v, true));
        }
    }
    if sp.size == 0 {
        let wanted = i < kind.slots().len() && !kind.slots()[i].is_empty();
        return (0, !wanted);
    }
    field(raw, sp).map_or((0, false), |v| (v, true))
}

/// `bpf_ringbuf_query` flag: bytes not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;
/// `bpf_ringbuf_output` flags.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// Wake the reader only once this much is waiting; it also polls on a short timer, so a
/// trickle of events is never stuck. One wake-up per event would cost a context switch per
/// VM exit on the reader's side.
const WAKEUP_BYTES: u64 = 256 << 10;

/// Sends `ev` to userspace; a full ring buffer is counted, never hidden.
#[inline(always)]
pub fn emit(ev: &Event) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<Event>(ev, flags).is_err() {
        if let Some(n) = DROPS.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot: only this CPU writes it while this program runs.
            unsafe { *n += 1 };
        }
    }
}
