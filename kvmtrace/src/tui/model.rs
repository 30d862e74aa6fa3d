//! What `kvmtrace top` shows, as plain data: built from the attribution engine at each
//! refresh, rendered without touching the engine, I/O or the clock.

use std::collections::HashMap;

use kvmtrace_analysis::engine::Engine;
use kvmtrace_analysis::report::latency::{vcpu_latency, worst_samples, VcpuLatency, WorstSample};

/// Facts for the header line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub host: String,
    pub kernel: String,
    pub kvm_backend: String,
    pub probes_attached: usize,
    pub probes_unavailable: Vec<String>,
    /// Events per second over the last refresh.
    pub event_rate: f64,
    /// Events lost so far (ring buffer full, undecodable).
    pub drops: u64,
    /// Time traced so far.
    pub traced_ns: u64,
    pub interval_ms: u64,
    /// `live`, or `replay FILE` with its position.
    pub source: String,
}

/// One vCPU's row, and what its detail view shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub vm_pid: u32,
    /// The VM's name (QEMU's `-name guest=...`), or the VMM's command name.
    pub vm_name: String,
    pub vcpu: Option<u32>,
    pub tid: u32,
    pub cpu: Option<u32>,
    pub exits_per_s: f64,
    pub exit_p99_ns: u64,
    pub exit_max_ns: u64,
    pub irq_count: u64,
    pub irq_p50_ns: u64,
    pub irq_p99_ns: u64,
    pub irq_max_ns: u64,
    pub out_of_guest_pct: f64,
    /// The largest cause of interrupt-to-guest latency and its share (%).
    pub top_cause: Option<(String, f64)>,
    /// Interrupt-to-guest histogram: (upper bound ns, count) per power-of-two bucket.
    pub irq_buckets: Vec<(u64, u64)>,
    pub latency: VcpuLatency,
    /// This vCPU's worst samples, largest first.
    pub worst: Vec<WorstSample>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopModel {
    pub header: Header,
    pub rows: Vec<Row>,
}

/// Power-of-two buckets from 1 µs to ~1 s: (upper bound, count).
fn buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut lo = 0u64;
    let mut hi = 1_000u64;
    while hi <= 1_073_741_824_000 / 1024 {
        let n = if h.is_empty() {
            0
        } else {
            h.count_between(lo, hi.saturating_sub(1))
        };
        out.push((hi, n));
        lo = hi;
        hi *= 2;
    }
    // Everything above the last bound goes in the last bucket.
    if let Some(last) = out.last_mut() {
        if !h.is_empty() && h.max() >= lo {
            last.1 += h.count_between(lo, h.max());
        }
    }
    out
}

impl TopModel {
    /// Builds the rows from `engine` (statistics over `span_ns` of trace time). `names`
    /// maps a VMM pid to its VM name.
    pub fn build(
        engine: &Engine,
        span_ns: u64,
        header: Header,
        names: &HashMap<u32, String>,
    ) -> TopModel {
        let secs = (span_ns as f64 / 1e9).max(1e-9);
        let worst = worst_samples(engine);
        let mut rows: Vec<Row> = engine
            .vcpus()
            .filter_map(|v| {
                let latency = vcpu_latency(engine, v.tid)?;
                let exits: u64 = latency.exits.by_reason.iter().map(|e| e.count).sum();
                let mut p99 = 0;
                let mut max = 0;
                for st in v.stats.exits.values().filter(|st| !st.latency.is_empty()) {
                    p99 = p99.max(st.latency.value_at_quantile(0.99));
                    max = max.max(st.latency.max());
                }
                let i = &latency.irq_to_guest;
                let total: u64 = i.causes_ns.values().sum();
                let top_cause = i
                    .causes_ns
                    .iter()
                    .max_by_key(|(_, ns)| **ns)
                    .filter(|_| total > 0)
                    .map(|(c, ns)| (c.clone(), 100.0 * *ns as f64 / total as f64));
                Some(Row {
                    vm_pid: v.tgid,
                    vm_name: names.get(&v.tgid).cloned().unwrap_or_default(),
                    vcpu: v.vcpu_id,
                    tid: v.tid,
                    cpu: v.cpu(),
                    exits_per_s: exits as f64 / secs,
                    exit_p99_ns: p99,
                    exit_max_ns: max,
                    irq_count: i.count,
                    irq_p50_ns: i.p50_ns,
                    irq_p99_ns: i.p99_ns,
                    irq_max_ns: i.max_ns,
                    out_of_guest_pct: latency.out_of_guest_pct,
                    top_cause,
                    irq_buckets: buckets(&v.stats.irq_to_guest),
                    worst: worst.iter().filter(|w| w.tid == v.tid).cloned().collect(),
                    latency,
                })
            })
            .collect();
        rows.sort_by_key(|r| (r.vm_pid, r.vcpu.unwrap_or(u32::MAX), r.tid));
        TopModel { header, rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_every_sample() {
        let mut h = kvmtrace_analysis::hist::latency_histogram();
        for v in [500u64, 1_500, 30_000, 31_000, 2_000_000_000] {
            h.record(v).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 5);
        assert_eq!(b[0], (1_000, 1));
        assert_eq!(b[1], (2_000, 1));
    }
}
