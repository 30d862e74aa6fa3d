//! Latency histograms: one shape for every latency kvmtrace keeps, and their summary.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A new latency histogram: 1 ns .. 60 s, 2 significant digits (1 % resolution, about
/// 30 KiB: the engine keeps one per vCPU and exit reason).
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000_000, 2) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts; fall back to auto-resize.
        Err(_) => Histogram::new(2).unwrap_or_else(|_| unreachable!("2 sigfigs is valid")),
    }
}

/// Count, extremes, median, p99 and mean of a latency histogram, in ns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Exit-handling latencies in the kernel's histogram buckets ([`kvmtrace_common::exits`]),
/// accumulated from [`Kind::ExitBuckets`](kvmtrace_common::Kind::ExitBuckets) records.
///
/// A quantile reads as the midpoint of the bucket it falls in (capped by the exact
/// maximum): within 1/16 (6.25 %) of what the exact latencies give, where a histogram built
/// from the traced exits (1 % resolution) is within 1 %.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitBucketHist {
    /// Exits per bucket (empty until the first record).
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
}

impl ExitBucketHist {
    /// Adds one packed value of an `ExitBuckets` record.
    pub fn add_packed(&mut self, v: u64) {
        use kvmtrace_common::exits::{unpack, CODE_MAX, CODE_SUM, NBUCKETS};
        match unpack(v) {
            (0, 0) => {}
            (CODE_SUM, ns) => self.sum_ns = self.sum_ns.saturating_add(ns),
            (CODE_MAX, ns) => self.max_ns = self.max_ns.max(ns),
            (b, n) if (b as usize) < NBUCKETS => {
                if self.buckets.is_empty() {
                    self.buckets = vec![0; NBUCKETS];
                }
                self.buckets[b as usize] += n;
                self.count += n;
            }
            // A code this kvmtrace does not know: ignored.
            _ => {}
        }
    }

    /// Adds one latency (what the kernel does per exit; for tests and models).
    pub fn record(&mut self, ns: u64) {
        use kvmtrace_common::exits::{bucket, NBUCKETS};
        if self.buckets.is_empty() {
            self.buckets = vec![0; NBUCKETS];
        }
        self.buckets[bucket(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The latency at quantile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // The rank HdrHistogram uses: the smallest value with at least q of the count at
        // or below it.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return kvmtrace_common::exits::bucket_mid(i).min(self.max_ns.max(1));
            }
        }
        self.max_ns
    }
}
