//! What `kvmtrace top` shows, as plain data: built from the attribution engine at each
//! refresh, rendered without touching the engine, I/O or the clock.

use std::collections::HashMap;

use kvmtrace_analysis::engine::Engine;
use kvmtrace_analysis::report::latency::{
    vcpu_latency, worst_samples, IrqToGuest, VcpuLatency, WorstSample,
};

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
    /// kvmtrace's own cost: where its threads run, and (live) its CPU use since it started.
    pub tracer: Option<TracerLoad>,
}

/// kvmtrace's own threads, for the header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracerLoad {
    /// CPU time of kvmtrace's threads as a share of one CPU since tracing started (live).
    pub cpu_pct: Option<f64>,
    /// The housekeeping CPUs its threads are confined to (a cpulist; empty: not placed).
    pub cpus: String,
}

/// One vCPU's row, and what its detail view shows. The numbers are the report's
/// [`VcpuLatency`]; the accessors below read them for the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub vm_pid: u32,
    /// The VM's name (QEMU's `-name guest=...`), or the VMM's command name.
    pub vm_name: String,
    pub vcpu: Option<u32>,
    pub tid: u32,
    pub cpu: Option<u32>,
    /// Exits per second over the model's span (the one figure not in `latency`).
    pub exits_per_s: f64,
    /// Interrupt-to-guest histogram: (upper bound ns, count) per power-of-two bucket.
    pub irq_buckets: Vec<(u64, u64)>,
    /// The report's model of this vCPU: the table's numbers are read from it, not copied.
    pub latency: VcpuLatency,
    /// This vCPU's worst samples, largest first.
    pub worst: Vec<WorstSample>,
}

impl Row {
    /// Interrupt-to-guest latency: count, percentiles, causes.
    pub fn irq(&self) -> &IrqToGuest {
        &self.latency.irq_to_guest
    }

    /// The largest p99 exit-handling latency over the exit reasons.
    pub fn exit_p99_ns(&self) -> u64 {
        let reasons = self.latency.exits.by_reason.iter();
        reasons.map(|e| e.p99_ns).max().unwrap_or(0)
    }

    /// The longest exit handled, any reason.
    pub fn exit_max_ns(&self) -> u64 {
        let reasons = self.latency.exits.by_reason.iter();
        reasons.map(|e| e.max_ns).max().unwrap_or(0)
    }

    /// Share of the time outside the guest (%).
    pub fn out_of_guest_pct(&self) -> f64 {
        self.latency.out_of_guest_pct
    }

    /// The largest cause of interrupt-to-guest latency and its share (%), when there is any.
    pub fn top_cause(&self) -> Option<(&str, f64)> {
        let causes = &self.irq().causes_ns;
        let total: u64 = causes.values().sum();
        causes
            .iter()
            .max_by_key(|(_, ns)| **ns)
            .filter(|_| total > 0)
            .map(|(c, ns)| (c.as_str(), 100.0 * *ns as f64 / total as f64))
    }
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
        let gone: Vec<u32> = engine.threads().vms_gone().map(|(pid, _)| pid).collect();
        let mut rows: Vec<Row> = engine
            .vcpus()
            .filter_map(|v| {
                let latency = vcpu_latency(engine, v.tid)?;
                let exits: u64 = latency.exits.by_reason.iter().map(|e| e.count).sum();
                Some(Row {
                    vm_pid: v.tgid,
                    vm_name: match names.get(&v.tgid) {
                        // A VM that exited keeps its rows (its samples), marked.
                        Some(n) if gone.contains(&v.tgid) => format!("{n} (exited)"),
                        Some(n) => n.clone(),
                        None if gone.contains(&v.tgid) => "(exited)".to_string(),
                        None => String::new(),
                    },
                    vcpu: v.vcpu_id,
                    tid: v.tid,
                    cpu: v.cpu(),
                    exits_per_s: exits as f64 / secs,
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
    fn a_vm_that_exited_keeps_its_rows_marked() {
        use kvmtrace_analysis::engine::EngineConfig;
        use kvmtrace_common::{ev, Event, Origin};
        let at = |ts: u64, tid: u32| Origin {
            ts_ns: ts,
            tid,
            tgid: 100,
            cpu: 0,
        };
        let mut engine = Engine::new(EngineConfig::default());
        engine.push(&Event::new(
            at(0, 101),
            &ev::ThreadInfo::thread(Some(0), "CPU 0/KVM"),
        ));
        let pio = ev::KvmPio {
            rw: 1,
            port: 0x80,
            size: 1,
            val: Some(0),
        };
        engine.push(&Event::new(at(10, 101), &pio));
        engine.flush();
        let names: HashMap<u32, String> = [(100, "vnf".to_string())].into();
        let m = TopModel::build(&engine, 1, Header::default(), &names);
        assert_eq!(m.rows[0].vm_name, "vnf");
        engine.push(&Event::new(at(20, 100), &ev::ThreadInfo::vm_gone("vnf")));
        let m = TopModel::build(&engine, 1, Header::default(), &names);
        assert_eq!(m.rows.len(), 1, "its samples stay");
        assert_eq!(m.rows[0].vm_name, "vnf (exited)");
    }

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
