//! In-kernel aggregation of exit-handling latency, shared by the programs and userspace.
//!
//! `kvm_exit` and `kvm_entry` fire hundreds of thousands of times a second per busy vCPU.
//! The programs pair them per vCPU thread ([`VcpuThread`]) and add the latency
//! (`kvm_exit` -> next `kvm_entry` of the thread) to a histogram per (thread, isa, exit
//! reason) in a map ([`ExitKey`] -> [`ExitHist`]). An exit and its entry are streamed to
//! userspace only when the attribution needs them: the thread may have an interrupt window
//! open (it was armed less than `Config::stream_hold_ns` ago by an interrupt accepted for
//! it, a PIC raise in its VM, its wake-up, switch-in, `kvm_vcpu_wakeup` or `kvm_inj_virq`;
//! an entry also when the thread was armed at any time during its exit), the exit took at
//! least `Config::exit_threshold_ns`, or `Config::all_exits` is set. The histograms count
//! every exit either way; userspace turns
//! their growth into [`Kind::ExitBuckets`](crate::Kind::ExitBuckets) records in the stream.
//!
//! Buckets are log-linear: exact below 8 ns, then 8 per power of two (each at most 1/8 of
//! its lower bound wide), up to 2^34 ns (17 s); longer exits fall in the last bucket. The
//! engine uses the same buckets for these records, so a quantile read from them is a
//! bucket's midpoint: within 1/16 (6.25 %) of the value the exact exits would give.

use crate::Event;

/// Buckets per histogram.
pub const NBUCKETS: usize = 256;

/// The bucket of a latency of `ns` nanoseconds.
#[inline(always)]
pub const fn bucket(ns: u64) -> usize {
    if ns < 8 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros() as u64;
    let sub = (ns >> (msb - 3)) & 7;
    let i = (msb - 2) * 8 + sub;
    if i >= NBUCKETS as u64 {
        NBUCKETS - 1
    } else {
        i as usize
    }
}

/// The lowest latency of bucket `i`.
pub const fn bucket_low(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let msb = (i / 8) as u64 + 2;
    let sub = (i % 8) as u64;
    (8 + sub) << (msb - 3)
}

/// The latency one past bucket `i`'s highest.
pub const fn bucket_high(i: usize) -> u64 {
    if i < 8 {
        return i as u64 + 1;
    }
    bucket_low(i) + (1 << ((i / 8) as u64 + 2 - 3))
}

/// The value a quantile that falls in bucket `i` reads as: its midpoint.
pub const fn bucket_mid(i: usize) -> u64 {
    (bucket_low(i) + bucket_high(i) - 1) / 2
}

/// Key of the exit histograms map: one vCPU thread's exits of one reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExitKey {
    pub tid: u32,
    /// `kvm_exit.exit_reason`.
    pub reason: u32,
    /// `kvm_exit.isa` (1 VMX, 2 SVM; 0 when the kernel lacks the field).
    pub isa: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ExitKey>() == 16);

impl ExitKey {
    /// The key as one number (`isa << 32 | reason`), as [`Kind::ExitBuckets`] records carry
    /// it (the thread is the record's `tid`).
    ///
    /// [`Kind::ExitBuckets`]: crate::Kind::ExitBuckets
    pub const fn packed(&self) -> u64 {
        ((self.isa as u64) << 32) | self.reason as u64
    }
}

/// The histogram of one [`ExitKey`]: exits whose entry was seen, by latency.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitHist {
    /// Exits counted (= the sum of `buckets`).
    pub count: u64,
    /// Sum of their latencies, ns.
    pub sum_ns: u64,
    /// The longest, ns.
    pub max_ns: u64,
    /// Exits per latency bucket ([`bucket`]); u32 counters wrap after 4 G exits in one
    /// bucket, which userspace's deltas (read every second) tolerate.
    pub buckets: [u32; NBUCKETS],
}

const _: () = assert!(core::mem::size_of::<ExitHist>() == 24 + 4 * NBUCKETS);

impl ExitHist {
    pub const fn zeroed() -> ExitHist {
        ExitHist {
            count: 0,
            sum_ns: 0,
            max_ns: 0,
            buckets: [0; NBUCKETS],
        }
    }
}

/// `VcpuThread::flags`: an exit was seen and its entry not yet.
pub const EXIT_PENDING: u32 = 1;
/// `VcpuThread::flags`: the pending exit was streamed when it happened (so its entry is too).
pub const EXIT_STREAMED: u32 = 2;
/// `VcpuThread::flags`: the thread's vCPU id is in `VCPU_BY_ID` (kept across exits).
pub const VCPU_ID_KNOWN: u32 = 4;

/// Key of `VCPU_BY_ID`: a VM's vCPU by its id (`tgid << 32 | vcpu_id`), from `kvm_exit` and
/// `kvm_entry`; an accepted interrupt (`kvm_apic_accept_irq.apicid` is the target's vCPU id)
/// arms exactly its target this way.
pub const fn vcpu_key(tgid: u32, vcpu_id: u32) -> u64 {
    ((tgid as u64) << 32) | vcpu_id as u64
}

/// Per vCPU thread (the value of `VCPU_TIDS`): its process, and its pending exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuThread {
    /// The VMM's tgid (never 0 for a registered thread).
    pub tgid: u32,
    /// [`EXIT_PENDING`], [`EXIT_STREAMED`], [`VCPU_ID_KNOWN`].
    pub flags: u32,
    /// Stream this thread's exits until this time (CLOCK_MONOTONIC ns).
    pub stream_until: u64,
    /// The pending `kvm_exit` record, as it would have been streamed: its entry decides
    /// whether it is (late, with its own time), and its time and reason key the histogram.
    pub exit: Event,
}

const _: () = assert!(core::mem::size_of::<VcpuThread>() == 80);

impl VcpuThread {
    pub const fn new(tgid: u32) -> VcpuThread {
        VcpuThread {
            tgid,
            flags: 0,
            stream_until: 0,
            exit: Event {
                ts_ns: 0,
                tid: 0,
                tgid: 0,
                cpu: 0,
                kind: 0,
                missing: 0,
                _pad: 0,
                slots: [0; crate::NSLOTS],
            },
        }
    }
}

/// How a value of a [`Kind::ExitBuckets`](crate::Kind::ExitBuckets) record is packed: a
/// 16-bit code and a 48-bit value. Codes below [`NBUCKETS`] are buckets (the value: exits
/// added to it since the previous record of the key); [`CODE_SUM`] carries the latencies'
/// sum added, [`CODE_MAX`] the longest latency so far; 0 is an empty slot.
pub const fn pack(code: u16, value: u64) -> u64 {
    ((code as u64) << 48) | (value & VALUE_MASK)
}

/// The (code, value) of a packed [`Kind::ExitBuckets`](crate::Kind::ExitBuckets) value.
pub const fn unpack(v: u64) -> (u16, u64) {
    ((v >> 48) as u16, v & VALUE_MASK)
}

/// What histogram `new` gained since `old` (the same key read earlier), as packed values for
/// [`Kind::ExitBuckets`](crate::Kind::ExitBuckets) records, given to `f` in order: each
/// bucket that grew, then the latencies' sum and the maximum when anything grew. Counters
/// are compared with wrapping arithmetic (the kernel's u32 buckets wrap).
pub fn deltas(old: &ExitHist, new: &ExitHist, mut f: impl FnMut(u64)) {
    let mut any = false;
    let mut i = 0;
    while i < NBUCKETS {
        let d = new.buckets[i].wrapping_sub(old.buckets[i]);
        if d != 0 {
            f(pack(i as u16, d as u64));
            any = true;
        }
        i += 1;
    }
    if !any {
        return;
    }
    let sum = new.sum_ns.wrapping_sub(old.sum_ns);
    f(pack(
        CODE_SUM,
        if sum > VALUE_MASK { VALUE_MASK } else { sum },
    ));
    if new.max_ns != old.max_ns {
        let max = new.max_ns;
        f(pack(
            CODE_MAX,
            if max > VALUE_MASK { VALUE_MASK } else { max },
        ));
    }
}

/// The [`Kind::ExitBuckets`](crate::Kind::ExitBuckets) records that carry `values` (packed
/// as [`deltas`] gives them) for `key`: four per record, the last one's unused slots 0.
pub fn bucket_records<'a>(
    key: &ExitKey,
    values: &'a [u64],
) -> impl Iterator<Item = crate::ev::ExitBuckets> + 'a {
    let key = key.packed();
    values.chunks(4).map(move |c| {
        let b = |i: usize| c.get(i).copied().unwrap_or(0);
        crate::ev::ExitBuckets {
            key,
            b0: b(0),
            b1: b(1),
            b2: b(2),
            b3: b(3),
        }
    })
}

/// Largest value a packed slot holds.
pub const VALUE_MASK: u64 = (1 << 48) - 1;
/// Code of the latencies' sum (ns) added since the previous record.
pub const CODE_SUM: u16 = 0xfffe;
/// Code of the longest latency (ns) so far.
pub const CODE_MAX: u16 = 0xffff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_ordered_and_narrow() {
        let mut prev_high = 0;
        for i in 0..NBUCKETS {
            let (lo, hi) = (bucket_low(i), bucket_high(i));
            assert_eq!(
                lo,
                prev_high,
                "bucket {i} starts where {} ended",
                i.max(1) - 1
            );
            assert!(hi > lo);
            assert_eq!(bucket(lo), i);
            assert_eq!(bucket(hi - 1), i);
            if lo >= 8 {
                assert!(
                    (hi - lo) * 8 <= lo,
                    "bucket {i} [{lo}, {hi}) wider than 1/8"
                );
                let mid = bucket_mid(i);
                assert!(mid.abs_diff(lo) * 16 <= lo && (hi - 1).abs_diff(mid) * 16 <= lo);
            }
            prev_high = hi;
        }
        assert_eq!(bucket(u64::MAX), NBUCKETS - 1);
        assert!(bucket_high(NBUCKETS - 1) >= 1 << 34, "covers 17 s");
    }

    #[test]
    fn deltas_carry_what_grew() {
        let mut old = ExitHist::zeroed();
        old.buckets[3] = u32::MAX; // about to wrap
        old.sum_ns = 100;
        let mut new = old;
        new.buckets[3] = 1; // 2 more, wrapped
        new.buckets[200] = 5;
        new.sum_ns = 1100;
        new.max_ns = 900;
        let mut got = [0u64; 8];
        let mut n = 0;
        deltas(&old, &new, |v| {
            got[n] = v;
            n += 1;
        });
        assert_eq!(
            &got[..n],
            &[
                pack(3, 2),
                pack(200, 5),
                pack(CODE_SUM, 1000),
                pack(CODE_MAX, 900)
            ]
        );
        deltas(&new, &new, |_| panic!("nothing grew"));
    }

    #[test]
    fn packing_round_trips() {
        assert_eq!(unpack(pack(17, 12345)), (17, 12345));
        assert_eq!(unpack(pack(CODE_MAX, VALUE_MASK)), (CODE_MAX, VALUE_MASK));
        assert_eq!(unpack(0), (0, 0));
        assert_eq!(
            ExitKey {
                tid: 1,
                reason: 30,
                isa: 1,
                _pad: 0
            }
            .packed(),
            (1 << 32) | 30
        );
    }
}
