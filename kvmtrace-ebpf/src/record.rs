//! Building and sending an [`Event`] from a tracepoint context.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    programs::TracePointContext,
    EbpfContext as _,
};
use kvmtrace_common::{Event, FieldSpec, Kind, Origin, Record, NSLOTS, RAW_BYTES};

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use crate::{CONFIG, DROPS, EMITTED, EVENTS, SINCE_WAKEUP};

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
            2 if !off.is_multiple_of(2) => {
                let v = (at as *const u16).read_unaligned();
                if signed {
                    v as i16 as i64 as u64
                } else {
                    v as u64
                }
            }
            2 if signed => *(at as *const i16) as i64 as u64,
            2 => *(at as *const u16) as u64,
            4 if !off.is_multiple_of(4) => {
                let v = (at as *const u32).read_unaligned();
                if signed {
                    v as i32 as i64 as u64
                } else {
                    v as u64
                }
            }
            4 if signed => *(at as *const i32) as i64 as u64,
            4 => *(at as *const u32) as u64,
            8 if !off.is_multiple_of(8) => (at as *const u64).read_unaligned(),
            8 => *(at as *const u64),
            _ => return None,
        })
    }
}

/// The head of the raw tracepoint record (the bytes up to the end of the last field `kind`
/// uses, at most `RAW_BYTES`), read straight from the context.
///
/// A classic tracepoint program may load from its context at any constant, size-aligned
/// offset from 8 up (the verifier's `tp_prog_is_valid_access`; the first 8 bytes are the
/// common fields, which no slot uses), so a few plain loads replace one
/// `bpf_probe_read_kernel` helper call. Three rules shape the code:
/// - the offset must be a constant in the load instruction (the verifier refuses a context
///   pointer moved by a register), so every word has its own instantiation of [`word`];
/// - attaching fails when the program loads past the end of the tracepoint's record (the
///   kernel compares the verifier's `max_ctx_offset` with the record size), so each load is
///   guarded by the head length computed from the loader's field specs: those are .rodata
///   constants, the verifier knows every guard's outcome and never walks (nor counts) the
///   loads a tracepoint's record cannot hold;
/// - a word that the head ends inside is read in naturally aligned 4-, 2- and 1-byte pieces.
#[inline(always)]
fn read_head(ctx: &TracePointContext, kind: Kind) -> [u64; RAW_BYTES / 8] {
    let p = ctx.as_ptr() as *const u8;
    let n = head_bytes(kind);
    [
        0,
        word::<1>(p, n),
        word::<2>(p, n),
        word::<3>(p, n),
        word::<4>(p, n),
        word::<5>(p, n),
        word::<6>(p, n),
        word::<7>(p, n),
        word::<8>(p, n),
        word::<9>(p, n),
    ]
}

/// Bytes of the record `kind`'s fields span: the end of the field that ends last.
#[inline(always)]
fn head_bytes(kind: Kind) -> usize {
    let mut end = 0;
    let mut i = 0;
    while i < NSLOTS {
        let sp = spec(kind, i);
        let e = sp.offset as usize + sp.size as usize;
        if sp.size != 0 && e > end {
            end = e;
        }
        i += 1;
    }
    end
}

/// Word `I` (bytes `8 * I ..`) of the record head, or the part of it below `n` bytes.
///
/// Each arm loads at offsets that are constants of the instantiation, so each load is one
/// instruction at `ctx + constant`; a runtime-chosen offset added to the context pointer is
/// what the verifier refuses ("dereference of modified ctx ptr").
#[inline(always)]
fn word<const I: usize>(p: *const u8, n: usize) -> u64 {
    let at = 8 * I;
    if n <= at {
        return 0;
    }
    // SAFETY: every load below is at a constant offset inside the first `n` bytes of the
    // record, naturally aligned (see `read_head`); volatile keeps each one a single load of
    // its own size at that offset.
    unsafe {
        let u8_at = |o: usize| p.add(o).read_volatile() as u64;
        let u16_at = |o: usize| (p.add(o) as *const u16).read_volatile() as u64;
        let u32_at = |o: usize| (p.add(o) as *const u32).read_volatile() as u64;
        match n - at {
            1 => u8_at(at),
            2 => u16_at(at),
            3 => u16_at(at) | u8_at(at + 2) << 16,
            4 => u32_at(at),
            5 => u32_at(at) | u8_at(at + 4) << 32,
            6 => u32_at(at) | u16_at(at + 4) << 32,
            7 => u32_at(at) | u16_at(at + 4) << 32 | u8_at(at + 6) << 48,
            _ => (p.add(at) as *const u64).read_volatile(),
        }
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
    let raw = read_head(ctx, kind);
    // Each slot is computed as a scalar and the record built in one go: zero-filling an
    // array first would become a byte-by-byte memset call in BPF.
    let mut missing = 0u8;
    let mut slot = |i: usize| {
        let (v, ok) = slot_value(&raw, kind, i);
        if !ok {
            missing |= 1 << i;
        }
        v
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

/// An event of `R`'s kind from fields the program already has (a BTF tracepoint's typed
/// arguments): the time, and the task and CPU the caller passes.
#[inline(always)]
pub fn typed_event<R: Record>(cpu: u32, ids: (u32, u32), rec: &R) -> Event {
    // SAFETY: a helper without arguments or side effects.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    Event::new(
        Origin {
            ts_ns,
            tid: ids.0,
            tgid: ids.1,
            cpu,
        },
        rec,
    )
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

/// Adds one to an exact per-CPU counter.
///
/// Atomically: BTF tracepoint programs nest on one CPU (a hard interrupt's program runs in
/// the middle of a task's), and a plain read-modify-write would then lose a count. (Classic
/// tracepoint programs never nest: the kernel skips a program while another runs on the
/// CPU.) An uncontended locked add on a per-CPU line costs a few cycles.
#[inline(always)]
pub fn count(slot: Option<*mut u64>) {
    if let Some(n) = slot {
        // SAFETY: `n` is an 8-byte aligned u64 map value, valid for the program's run. The
        // bpfel target has no `AtomicU64::fetch_add`; the intrinsic becomes BPF's atomic add
        // (`lock *(u64 *)(r + 0) += r`), which the verifier accepts on map memory.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, 1) };
    }
}

/// `bpf_ringbuf_submit` flags.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Records this CPU may submit before it wakes the reader (from the loader; at least 1).
#[inline(always)]
fn wakeup_every() -> u32 {
    // SAFETY: plain read of a .rodata global the loader set before load (`CONFIG`).
    unsafe { core::ptr::read_volatile(&CONFIG.wakeup_every) }
}

/// Sends `ev` to userspace; a full ring buffer is counted, never hidden.
///
/// `bpf_ringbuf_reserve` + a write in place + `bpf_ringbuf_submit` instead of
/// `bpf_ringbuf_output`, which copies the record from the stack.
///
/// The reader is woken once per `CONFIG.wakeup_every` records of this CPU (it also polls on a
/// short timer, so a trickle of events is never stuck): one wake-up per record would cost a
/// context switch per VM exit on the reader's side. Counting per CPU in an inlined per-CPU
/// array lookup replaces a `bpf_ringbuf_query` helper call per record.
#[inline(always)]
pub fn emit(ev: &Event) {
    count(EMITTED.get_ptr_mut(0));
    let mut flags = BPF_RB_NO_WAKEUP;
    if let Some(n) = SINCE_WAKEUP.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot: only this CPU touches it while this program runs (programs
        // do not nest on one CPU for the tracepoints we attach, and a rare lost increment
        // only delays a wake-up).
        unsafe {
            *n += 1;
            if *n >= wakeup_every() {
                *n = 0;
                flags = BPF_RB_FORCE_WAKEUP;
            }
        }
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            slot.submit(flags);
        }
        None => {
            count(DROPS.get_ptr_mut(0));
        }
    }
}
