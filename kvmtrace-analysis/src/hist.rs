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
