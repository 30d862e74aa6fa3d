//! The exporter's own cumulative state, derived from the attribution engine's model, and its
//! Prometheus/OpenMetrics encoding.
//!
//! The engine's statistics only grow while the engine lives, but the exporter replaces its
//! engine now and then (to forget the vCPUs of VMs that went away), so it never exports the
//! engine's numbers directly: at each [`Metrics::sync`] it adds what changed since the last
//! sync (per vCPU thread, per histogram bucket, per cause) to counters of its own. Counters
//! and histograms are therefore monotonic across scrapes and across engine replacements.
//!
//! Cardinality is bounded: at most `max_series` (VM, vCPU) series; a VM whose process is gone
//! keeps its series for `vm_grace` (so the last values are scraped) and is then dropped;
//! per vCPU at most `max_causes` cause labels and `max_exit_reasons` exit reasons, the rest
//! summed under `overflow`. Preempting tasks are labelled by name without their pid
//! (`preempted:kdamond.0`), so short-lived tasks do not each make a series.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use hdrhistogram::Histogram;
use kvmtrace_analysis::engine::{Cause, Engine};
use kvmtrace_analysis::names::{exit_reason_label, isa_name};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the interrupt-to-guest histogram buckets, in ns: 1 µs to 100 ms, denser
/// where NFV guests' latencies sit (10–200 µs).
pub const IRQ_BUCKETS_NS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    25_000,
    30_000,
    35_000,
    40_000,
    50_000,
    60_000,
    75_000,
    100_000,
    150_000,
    200_000,
    300_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
];

/// Upper bounds of the exit-handling histogram buckets, in ns: 1 µs to 100 ms, 1-2-5.
pub const EXIT_BUCKETS_NS: &[u64] = &[
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
];

/// The label kept for what goes over a per-vCPU limit.
pub const OVERFLOW: &str = "overflow";

/// Limits on what is exported.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// (VM, vCPU) series exported at most; vCPUs beyond are counted in
    /// `kvmtrace_vcpus_unexported`.
    pub max_series: usize,
    /// How long a VM's series stay after its process is gone.
    pub vm_grace_ns: u64,
    /// Cause labels per vCPU; further causes are summed under `overflow`.
    pub max_causes: usize,
    /// Exit reasons per vCPU; further reasons are summed under `overflow`.
    pub max_exit_reasons: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series: 256,
            vm_grace_ns: 300_000_000_000,
            max_causes: 32,
            max_exit_reasons: 32,
        }
    }
}

/// A counter fed with an engine's cumulative value: adds what grew since the last value seen.
#[derive(Clone, Copy, Debug, Default)]
struct Mono {
    total: u64,
    seen: u64,
}

impl Mono {
    fn update(&mut self, now: u64) {
        self.total += now.saturating_sub(self.seen);
        self.seen = now;
    }
}

/// A histogram as exported: counts per bucket (the last one is +Inf), count and sum (ns).
#[derive(Clone, Debug, PartialEq)]
pub struct HistOut {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ns: f64,
}

impl HistOut {
    fn new(bounds: &[u64]) -> HistOut {
        HistOut {
            buckets: vec![0; bounds.len() + 1],
            count: 0,
            sum_ns: 0.0,
        }
    }
}

/// What was last seen of one engine histogram.
#[derive(Clone, Debug, Default)]
struct HistSeen {
    buckets: Vec<u64>,
    sum_ns: f64,
}

/// Counts per bucket of an HDR histogram: a value goes to the first bound at or above it.
/// The HDR histogram keeps values to 1 % (2 significant digits): a value is placed by the
/// lowest value it is equivalent to, so values up to 1 % above a bound may count under it.
pub fn bucket_counts(h: &Histogram<u64>, bounds: &[u64]) -> Vec<u64> {
    let mut out = vec![0; bounds.len() + 1];
    for v in h.iter_recorded() {
        let low = h.lowest_equivalent(v.value_iterated_to());
        let i = bounds.partition_point(|&b| b < low);
        out[i] += v.count_at_value();
    }
    out
}

/// Adds to `out` what `h` (whose sum is `sum_ns`) gained since `seen`.
fn add_delta(out: &mut HistOut, seen: &mut HistSeen, h: &Histogram<u64>, sum_ns: f64, b: &[u64]) {
    let now = bucket_counts(h, b);
    seen.buckets.resize(now.len(), 0);
    for (i, (n, s)) in now.iter().zip(seen.buckets.iter_mut()).enumerate() {
        let d = n.saturating_sub(*s);
        out.buckets[i] += d;
        out.count += d;
        *s = *n;
    }
    out.sum_ns += (sum_ns - seen.sum_ns).max(0.0);
    seen.sum_ns = sum_ns;
}

/// The labels of one (VM, vCPU) series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesLabels {
    pub vm: String,
    pub pid: u32,
    /// The vCPU id, or `tid:N` while KVM has not said which vCPU the thread runs.
    pub vcpu: String,
}

impl SeriesLabels {
    fn set(&self) -> [(&'static str, String); 3] {
        [
            ("vm", self.vm.clone()),
            ("pid", self.pid.to_string()),
            ("vcpu", self.vcpu.clone()),
        ]
    }
}

/// One exported vCPU.
#[derive(Clone, Debug)]
struct Series {
    labels: SeriesLabels,
    irq: HistOut,
    irq_seen: HistSeen,
    incomplete: Mono,
    coalesced: Mono,
    /// Cause -> its label, kept once given (so a counter never moves to another label).
    cause_label: HashMap<Cause, String>,
    cause_seen: HashMap<Cause, u64>,
    causes: BTreeMap<String, u64>,
    exit_label: HashMap<(u8, u32), (String, String)>,
    exit_seen: HashMap<(u8, u32), HistSeen>,
    exits: BTreeMap<(String, String), HistOut>,
    /// When the VM's process was first seen gone.
    gone_since: Option<u64>,
}

impl Series {
    fn new(labels: SeriesLabels) -> Series {
        Series {
            labels,
            irq: HistOut::new(IRQ_BUCKETS_NS),
            irq_seen: HistSeen::default(),
            incomplete: Mono::default(),
            coalesced: Mono::default(),
            cause_label: HashMap::new(),
            cause_seen: HashMap::new(),
            causes: BTreeMap::new(),
            exit_label: HashMap::new(),
            exit_seen: HashMap::new(),
            exits: BTreeMap::new(),
            gone_since: None,
        }
    }

    /// The engine this series was fed from was replaced: its values start again from 0.
    fn forget_seen(&mut self) {
        self.irq_seen = HistSeen::default();
        self.incomplete.seen = 0;
        self.coalesced.seen = 0;
        self.cause_seen.clear();
        self.exit_seen.clear();
    }
}

/// A cause's label in the metrics: the report's label, but a preempting task by its name
/// up to the first space or slash, without its pid (`kworker/3:1H` -> `kworker`, a
/// compiler's `opt 1sh6vtmjkgc` threads -> `opt`), so that per-instance names do not each
/// make a series.
pub fn cause_label(c: Cause, names: &HashMap<u32, String>) -> String {
    match c {
        Cause::Preempted { pid, .. } => {
            let name = names
                .get(&pid)
                .and_then(|n| n.split([' ', '/']).next())
                .filter(|n| !n.is_empty());
            match name {
                Some(n) => format!("preempted:{n}"),
                None => "preempted:unnamed".to_string(),
            }
        }
        c => c.label(names),
    }
}

/// Everything exported, kept across scrapes and engine replacements.
#[derive(Debug)]
pub struct Metrics {
    cfg: MetricsConfig,
    series: BTreeMap<(u32, u32), Series>,
    /// vCPU threads not exported because `max_series` was reached.
    unexported: BTreeMap<(u32, u32), ()>,
    /// Series dropped after their VM went away, still in the engine: not exported again.
    /// Cleared with the engine that holds them.
    evicted_keys: BTreeMap<(u32, u32), ()>,
    events: Mono,
    late_events: Mono,
    unresolved_raises: Mono,
    drops_kernel: u64,
    drops_userspace: u64,
    /// Tracepoint hits the kernel ran no program for (cumulative, as the drops).
    not_run: u64,
    evicted: u64,
    engine_replacements: u64,
    /// (tracepoint, attached).
    probes: Vec<(String, bool)>,
    info: Vec<(&'static str, String)>,
}

impl Metrics {
    pub fn new(
        cfg: MetricsConfig,
        probes: Vec<(String, bool)>,
        info: Vec<(&'static str, String)>,
    ) -> Metrics {
        Metrics {
            cfg,
            series: BTreeMap::new(),
            unexported: BTreeMap::new(),
            evicted_keys: BTreeMap::new(),
            events: Mono::default(),
            late_events: Mono::default(),
            unresolved_raises: Mono::default(),
            drops_kernel: 0,
            drops_userspace: 0,
            not_run: 0,
            evicted: 0,
            engine_replacements: 0,
            probes,
            info,
        }
    }

    /// Adds what `engine` gained since the last sync. `vm_name(pid)` names a new series' VM.
    pub fn sync(&mut self, engine: &Engine, vm_name: &mut dyn FnMut(u32) -> String) {
        let names = engine.threads().names();
        for v in engine.vcpus() {
            let key = (v.tgid, v.tid);
            let vcpu_id = v
                .vcpu_id
                .or_else(|| engine.threads().get(v.tid).and_then(|t| t.vcpu));
            if !self.series.contains_key(&key) {
                if self.evicted_keys.contains_key(&key) {
                    continue;
                }
                if self.series.len() >= self.cfg.max_series {
                    self.unexported.insert(key, ());
                    continue;
                }
                let vcpu = vcpu_id.map_or_else(|| format!("tid:{}", v.tid), |id| id.to_string());
                let labels = SeriesLabels {
                    vm: vm_name(v.tgid),
                    pid: v.tgid,
                    vcpu,
                };
                self.unexported.remove(&key);
                self.series.insert(key, Series::new(labels));
            }
            let Some(s) = self.series.get_mut(&key) else {
                continue;
            };
            if let (Some(id), true) = (vcpu_id, s.labels.vcpu.starts_with("tid:")) {
                // KVM said which vCPU the thread runs only after its series was made: the
                // series takes its proper label from now on (a new series to Prometheus).
                s.labels.vcpu = id.to_string();
            }
            let st = &v.stats;
            add_delta(
                &mut s.irq,
                &mut s.irq_seen,
                &st.irq_to_guest,
                st.irq_total_ns as f64,
                IRQ_BUCKETS_NS,
            );
            s.incomplete.update(st.incomplete);
            s.coalesced.update(st.coalesced);
            for (&cause, &ns) in &st.irq_causes {
                let seen = s.cause_seen.entry(cause).or_default();
                let d = ns.saturating_sub(*seen);
                *seen = ns;
                if d == 0 {
                    continue;
                }
                let now = cause_label(cause, names);
                let label = match s.cause_label.get(&cause) {
                    // A task named since: its time from now on goes to its name.
                    Some(l) if l == "preempted:unnamed" && now != *l => None,
                    Some(l) => Some(l.clone()),
                    None => None,
                };
                let label = label.unwrap_or_else(|| {
                    let l = if s.causes.contains_key(&now) || s.causes.len() < self.cfg.max_causes {
                        now
                    } else {
                        OVERFLOW.to_string()
                    };
                    s.cause_label.insert(cause, l.clone());
                    l
                });
                *s.causes.entry(label).or_default() += d;
            }
            for (&(isa, reason), h) in &st.exits {
                let labels = match s.exit_label.get(&(isa, reason)) {
                    Some(l) => l.clone(),
                    None => {
                        let mut l = (
                            isa_name(u64::from(isa)),
                            exit_reason_label(u64::from(isa), u64::from(reason)),
                        );
                        if !s.exits.contains_key(&l) && s.exits.len() >= self.cfg.max_exit_reasons {
                            l.1 = OVERFLOW.to_string();
                        }
                        s.exit_label.insert((isa, reason), l.clone());
                        l
                    }
                };
                let out = s
                    .exits
                    .entry(labels)
                    .or_insert_with(|| HistOut::new(EXIT_BUCKETS_NS));
                let seen = s.exit_seen.entry((isa, reason)).or_default();
                let h = &h.latency;
                let sum = if h.is_empty() {
                    0.0
                } else {
                    h.mean() * h.len() as f64
                };
                add_delta(out, seen, h, sum, EXIT_BUCKETS_NS);
            }
        }
        let counts = engine.threads().counts();
        self.events.update(counts.total);
        self.late_events.update(engine.late_events());
        self.unresolved_raises.update(engine.unresolved_raises());
        // The session's drop counters are cumulative over the whole run, whatever the engine.
        self.drops_kernel = self.drops_kernel.max(counts.drops_kernel);
        self.drops_userspace = self.drops_userspace.max(counts.drops_userspace);
        self.not_run = self.not_run.max(counts.not_run);
    }

    /// The engine was replaced by a new one: its counts start again from zero.
    pub fn engine_replaced(&mut self) {
        for s in self.series.values_mut() {
            s.forget_seen();
        }
        self.events.seen = 0;
        self.late_events.seen = 0;
        self.unresolved_raises.seen = 0;
        self.unexported.clear();
        self.evicted_keys.clear();
        self.engine_replacements += 1;
    }

    /// Drops the series of VMs whose process has been gone for the grace period; returns
    /// how many were dropped.
    pub fn prune(&mut self, now_ns: u64, alive: &mut dyn FnMut(u32) -> bool) -> usize {
        let grace = self.cfg.vm_grace_ns;
        let mut alive_memo: HashMap<u32, bool> = HashMap::new();
        let mut is_alive = |pid: u32| *alive_memo.entry(pid).or_insert_with(|| alive(pid));
        let before = self.series.len();
        let evicted = &mut self.evicted_keys;
        self.series.retain(|&key, s| {
            if is_alive(s.labels.pid) {
                s.gone_since = None;
                return true;
            }
            let since = *s.gone_since.get_or_insert(now_ns);
            let keep = now_ns.saturating_sub(since) < grace;
            if !keep {
                evicted.insert(key, ());
            }
            keep
        });
        self.unexported.retain(|&(pid, _), _| is_alive(pid));
        let dropped = before - self.series.len();
        self.evicted += dropped as u64;
        dropped
    }

    /// (VM, vCPU) series exported now.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The labels of the series exported now.
    pub fn series_labels(&self) -> impl Iterator<Item = &SeriesLabels> {
        self.series.values().map(|s| &s.labels)
    }

    /// The interrupt-to-guest histogram exported for (pid, tid).
    pub fn irq_hist(&self, pid: u32, tid: u32) -> Option<&HistOut> {
        self.series.get(&(pid, tid)).map(|s| &s.irq)
    }

    /// The text exposition: OpenMetrics, or Prometheus text 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut registry = Registry::with_prefix("kvmtrace");
        registry.register_collector(Box::new(Snapshot::of(self)));
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
        Ok(out)
    }
}

/// One vCPU's values in a snapshot.
#[derive(Debug)]
struct SeriesSnap {
    labels: SeriesLabels,
    irq: HistOut,
    incomplete: u64,
    coalesced: u64,
    causes: BTreeMap<String, u64>,
}

/// What one scrape encodes (the collector must own its data).
#[derive(Debug)]
struct Snapshot {
    series: Vec<SeriesSnap>,
    exits: Vec<(SeriesLabels, String, String, HistOut)>,
    unexported: usize,
    events: u64,
    late_events: u64,
    unresolved_raises: u64,
    drops_kernel: u64,
    drops_userspace: u64,
    not_run: u64,
    evicted: u64,
    engine_replacements: u64,
    probes: Vec<(String, bool)>,
    info: Vec<(&'static str, String)>,
}

impl Snapshot {
    fn of(m: &Metrics) -> Snapshot {
        Snapshot {
            series: m
                .series
                .values()
                .map(|s| SeriesSnap {
                    labels: s.labels.clone(),
                    irq: s.irq.clone(),
                    incomplete: s.incomplete.total,
                    coalesced: s.coalesced.total,
                    causes: s.causes.clone(),
                })
                .collect(),
            exits: m
                .series
                .values()
                .flat_map(|s| {
                    s.exits.iter().map(|((isa, reason), h)| {
                        (s.labels.clone(), isa.clone(), reason.clone(), h.clone())
                    })
                })
                .collect(),
            unexported: m.unexported.len(),
            events: m.events.total,
            late_events: m.late_events.total,
            unresolved_raises: m.unresolved_raises.total,
            drops_kernel: m.drops_kernel,
            drops_userspace: m.drops_userspace,
            not_run: m.not_run,
            evicted: m.evicted,
            engine_replacements: m.engine_replacements,
            probes: m.probes.clone(),
            info: m.info.clone(),
        }
    }

    /// A counter per vCPU series.
    fn vcpu_counter(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&SeriesSnap) -> u64,
    ) -> fmt::Result {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for s in &self.series {
            m.encode_family(&s.labels.set())?
                .encode_counter::<NoLabelSet, u64, f64>(&value(s), None)?;
        }
        Ok(())
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn buckets(h: &HistOut, bounds: &[u64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .map(|&b| secs(b))
        .chain(std::iter::once(f64::INFINITY))
        .zip(h.buckets.iter().copied())
        .collect()
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    prometheus_client::metrics::counter::ConstCounter::new(v).encode(m)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let mut m = enc.encode_descriptor(
            "irq_to_guest_latency",
            "Interrupt-to-guest latency per vCPU: an interrupt raised for the vCPU until the guest runs with it (complete samples only).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for s in &self.series {
            let h = &s.irq;
            m.encode_family(&s.labels.set())?
                .encode_histogram::<NoLabelSet>(
                    h.sum_ns / 1e9,
                    h.count,
                    &buckets(h, IRQ_BUCKETS_NS),
                    None,
                )?;
        }
        self.vcpu_counter(
            &mut enc,
            "irq_to_guest_samples",
            "Complete interrupt-to-guest samples per vCPU (the histogram's count).",
            |s| s.irq.count,
        )?;
        self.vcpu_counter(
            &mut enc,
            "irq_to_guest_incomplete_samples",
            "Interrupt-to-guest samples discarded because an event may have been lost or the vCPU's state was unknown.",
            |s| s.incomplete,
        )?;
        self.vcpu_counter(
            &mut enc,
            "irq_to_guest_coalesced",
            "Interrupts raised while one was already on its way to the same vCPU.",
            |s| s.coalesced,
        )?;
        let mut m = enc.encode_descriptor(
            "irq_to_guest_cause",
            "Interrupt-to-guest latency by cause (docs/attribution.md); per vCPU the causes add up to the histogram's sum.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for s in &self.series {
            for (cause, ns) in &s.causes {
                let mut set = s.labels.set().to_vec();
                set.push(("cause", cause.clone()));
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, f64, f64>(&secs(*ns), None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "exit_latency",
            "VM exit handling latency (kvm_exit to kvm_entry) per vCPU and exit reason.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (l, isa, reason, h) in &self.exits {
            let mut set = l.set().to_vec();
            set.push(("isa", isa.clone()));
            set.push(("reason", reason.clone()));
            m.encode_family(&set)?.encode_histogram::<NoLabelSet>(
                h.sum_ns / 1e9,
                h.count,
                &buckets(h, EXIT_BUCKETS_NS),
                None,
            )?;
        }
        let m = enc.encode_descriptor(
            "vcpus_unexported",
            "vCPU threads traced but not exported because --max-series was reached.",
            None,
            MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(self.unexported as u64).encode(m)?;
        counter(
            &mut enc,
            "series_evicted",
            "vCPU series dropped after their VM's process was gone for --vm-grace.",
            None,
            self.evicted,
        )?;
        counter(
            &mut enc,
            "engine_replacements",
            "Times the attribution engine was replaced to forget VMs that went away (windows open then count as incomplete).",
            None,
            self.engine_replacements,
        )?;
        counter(
            &mut enc,
            "events",
            "Tracepoint events read.",
            None,
            self.events,
        )?;
        let mut m = enc.encode_descriptor(
            "events_dropped",
            "Events lost: in the kernel (a full ring buffer), or a record userspace could not decode.",
            None,
            MetricType::Counter,
        )?;
        for (place, v) in [
            ("kernel", self.drops_kernel),
            ("userspace", self.drops_userspace),
        ] {
            m.encode_family(&[("where", place)])?
                .encode_counter::<NoLabelSet, u64, f64>(&v, None)?;
        }
        counter(
            &mut enc,
            "events_not_run",
            "Tracepoint hits the kernel ran no kvmtrace program for: another BPF program or a map syscall held that CPU (most on CPUs kvmtrace ignores; not counted as dropped).",
            None,
            self.not_run,
        )?;
        counter(
            &mut enc,
            "late_events",
            "Events that arrived later than the reorder window.",
            None,
            self.late_events,
        )?;
        counter(
            &mut enc,
            "unresolved_raises",
            "Interrupts whose target vCPU could not be identified.",
            None,
            self.unresolved_raises,
        )?;
        let mut m = enc.encode_descriptor(
            "probe_attached",
            "1 when the probe on this tracepoint is attached, 0 when the kernel lacks it.",
            None,
            MetricType::Gauge,
        )?;
        for (tp, attached) in &self.probes {
            m.encode_family(&[("tracepoint", tp.as_str())])?
                .encode_gauge(&u64::from(*attached))?;
        }
        let mut m = enc.encode_descriptor(
            "build",
            "kvmtrace's version and the host it traces.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&self.info)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kvmtrace_analysis::engine::EngineConfig;
    use kvmtrace_common::{ev, Comm, Event, Origin, Payload};

    use super::*;

    const US: u64 = 1_000;

    fn at(ts: u64, tid: u32, tgid: u32, p: Payload) -> Event {
        p.event(Origin {
            ts_ns: ts,
            tid,
            tgid,
            cpu: 0,
        })
    }

    /// A halted vCPU of process `pid` woken by `n` interrupts of `lat` each, one every ms,
    /// starting at `t0`; each one's wait is given to `hog` (a task that had the CPU).
    fn stream(pid: u32, tid: u32, t0: u64, n: u64, lat: u64, hog: u32) -> Vec<Event> {
        let e = |ts, tid, p| at(ts, tid, pid, p);
        let mut out = vec![e(
            t0,
            tid,
            Payload::ThreadInfo(ev::ThreadInfo::thread(Some(0), "CPU 0/KVM")),
        )];
        out.push(e(
            t0 + 1,
            tid,
            Payload::SchedSwitch(ev::SchedSwitch {
                prev_pid: u64::from(tid),
                prev_state: 1,
                next_pid: 0,
                next_comm: Comm::default(),
            }),
        ));
        let mut t = t0 + 1_000 * US;
        for _ in 0..n {
            out.push(e(
                t,
                tid + 1,
                Payload::KvmSetIrq(ev::KvmSetIrq {
                    gsi: 0,
                    level: 1,
                    irq_source_id: Some(0),
                }),
            ));
            out.push(e(
                t + 1,
                tid + 1,
                Payload::KvmPicSetIrq(ev::KvmPicSetIrq::default()),
            ));
            out.push(e(
                t + 2,
                tid + 1,
                Payload::SchedWakeup(ev::SchedWakeup {
                    pid: u64::from(tid),
                    target_cpu: Some(0),
                    prio: Some(120),
                    comm: Comm::default(),
                }),
            ));
            out.push(e(
                t + lat / 2,
                hog,
                Payload::SchedSwitch(ev::SchedSwitch {
                    prev_pid: u64::from(hog),
                    prev_state: 0,
                    next_pid: u64::from(tid),
                    next_comm: Comm::new("CPU 0/KVM"),
                }),
            ));
            out.push(e(
                t + lat / 2 + 1,
                tid,
                Payload::KvmVcpuWakeup(ev::KvmVcpuWakeup {
                    ns: 1,
                    waited: 1,
                    valid: Some(1),
                }),
            ));
            out.push(e(
                t + lat,
                tid,
                Payload::KvmPio(ev::KvmPio {
                    rw: 1,
                    port: 0xe2,
                    size: 2,
                    val: Some(1),
                }),
            ));
            out.push(e(
                t + lat + 10,
                tid,
                Payload::SchedSwitch(ev::SchedSwitch {
                    prev_pid: u64::from(tid),
                    prev_state: 1,
                    next_pid: 0,
                    next_comm: Comm::default(),
                }),
            ));
            out.push(e(t + lat + 20, 0, Payload::Drops(ev::Drops::default())));
            t += 1_000 * US;
        }
        // Pushes the last checkpoint out of the reorder window.
        out.push(e(t + 10_000 * US, 0, Payload::Drops(ev::Drops::default())));
        out
    }

    fn feed(engine: &mut Engine, events: &[Event]) {
        for e in events {
            engine.push(e);
        }
    }

    fn name(pid: u32) -> String {
        format!("vm{pid}")
    }

    fn metrics(max_series: usize) -> Metrics {
        Metrics::new(
            MetricsConfig {
                max_series,
                vm_grace_ns: 10_000_000_000,
                ..MetricsConfig::default()
            },
            vec![("kvm_exit".into(), true), ("kvm_entry".into(), false)],
            vec![("version", "0.1.0".into())],
        )
    }

    #[test]
    fn bucket_counts_put_each_value_at_the_first_bound_at_or_above_it() {
        let mut h = kvmtrace_analysis::hist::latency_histogram();
        for v in [500, 1_000, 1_020, 30_000, 31_000, 200_000_000] {
            h.record(v).unwrap();
        }
        let b = bucket_counts(&h, IRQ_BUCKETS_NS);
        assert_eq!(b.len(), IRQ_BUCKETS_NS.len() + 1);
        assert_eq!(b[0], 2, "500 ns and 1 us go to le=1us");
        assert_eq!(b[1], 1, "1.02 us to le=2.5us");
        let i30 = IRQ_BUCKETS_NS.iter().position(|&x| x == 30_000).unwrap();
        assert_eq!(b[i30], 1);
        assert_eq!(b[i30 + 1], 1, "31 us to le=35us");
        assert_eq!(*b.last().unwrap(), 1, "200 ms to +Inf");
        assert_eq!(b.iter().sum::<u64>(), 6);
    }

    #[test]
    fn counters_stay_monotonic_across_syncs_and_an_engine_replacement() {
        let mut m = metrics(8);
        let mut engine = Engine::new(EngineConfig::default());
        let s = stream(100, 101, 0, 50, 40 * US, 77);
        feed(&mut engine, &s[..s.len() / 2]);
        m.sync(&engine, &mut name);
        let first = m.irq_hist(100, 101).unwrap().clone();
        assert!(first.count > 10, "{first:?}");
        feed(&mut engine, &s[s.len() / 2..]);
        m.sync(&engine, &mut name);
        m.sync(&engine, &mut name);
        let second = m.irq_hist(100, 101).unwrap().clone();
        assert_eq!(second.count, 50, "no sample counted twice");
        assert!(second
            .buckets
            .iter()
            .zip(&first.buckets)
            .all(|(a, b)| a >= b));
        let i40 = IRQ_BUCKETS_NS.iter().position(|&x| x == 40_000).unwrap();
        assert_eq!(second.buckets[i40], 50, "40 us samples in le=40us");
        assert!(
            (second.sum_ns - 50.0 * 40_000.0).abs() < 1.0,
            "{}",
            second.sum_ns
        );

        // A new engine starts from zero; the exported counters go on from where they were.
        engine.flush();
        m.sync(&engine, &mut name);
        let mut engine = Engine::new(EngineConfig::default());
        m.engine_replaced();
        feed(
            &mut engine,
            &stream(100, 101, 200_000 * US, 10, 40 * US, 77),
        );
        m.sync(&engine, &mut name);
        let third = m.irq_hist(100, 101).unwrap();
        assert_eq!(third.count, 60);
        let text = m.encode(true).unwrap();
        assert!(
            text.contains(
                "kvmtrace_irq_to_guest_samples_total{vm=\"vm100\",pid=\"100\",vcpu=\"0\"} 60"
            ),
            "{text}"
        );
        assert!(
            text.contains("kvmtrace_engine_replacements_total 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    /// The session's drop records are cumulative: the largest is exported, ring drops as
    /// `events_dropped`, programs the kernel did not run apart.
    #[test]
    fn drops_and_programs_not_run_are_exported_apart() {
        let mut m = metrics(8);
        let mut engine = Engine::new(EngineConfig::default());
        let mut s = stream(100, 101, 0, 5, 40 * US, 77);
        for (ts, kernel, not_run) in [(1_000, 2, 3), (2_000, 4, 9)] {
            let d = ev::Drops {
                kernel,
                userspace: 1,
                not_run,
            };
            s.push(at(ts * US, 0, 0, Payload::Drops(d)));
        }
        s.sort_by_key(|e| e.ts_ns);
        feed(&mut engine, &s);
        engine.flush();
        m.sync(&engine, &mut name);
        let text = m.encode(true).unwrap();
        for line in [
            "kvmtrace_events_dropped_total{where=\"kernel\"} 4",
            "kvmtrace_events_dropped_total{where=\"userspace\"} 1",
            "kvmtrace_events_not_run_total 9",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }

    #[test]
    fn causes_are_counted_by_task_name_without_pid_and_add_up_to_the_sum() {
        let mut m = metrics(8);
        let mut engine = Engine::new(EngineConfig::default());
        // The hog is named by a sched_switch to it before the samples.
        let mut s = vec![at(
            1,
            0,
            0,
            Payload::SchedSwitch(ev::SchedSwitch {
                prev_pid: 0,
                prev_state: 0,
                next_pid: 77,
                next_comm: Comm::new("kdamond.0"),
            }),
        )];
        s.extend(stream(100, 101, 10, 20, 100 * US, 77));
        feed(&mut engine, &s);
        m.sync(&engine, &mut name);
        let text = m.encode(false).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("cause=\"preempted:kdamond.0\""))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.starts_with("kvmtrace_irq_to_guest_cause_seconds_total{"),
            "{line}"
        );
        assert!(!text.contains("kdamond.0:77"), "no pid in cause labels");
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("kvmtrace_irq_to_guest_cause_seconds_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let sum: f64 = text
            .lines()
            .find(|l| l.starts_with("kvmtrace_irq_to_guest_latency_seconds_sum{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert!((total - sum).abs() < 1e-9, "causes {total} vs sum {sum}");
        assert!((sum - 20.0 * 100e-6).abs() < 1e-9, "{sum}");
        // Prometheus text 0.0.4: no EOF marker, counters keep _total.
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE kvmtrace_irq_to_guest_latency_seconds histogram"));
        assert!(text.contains("kvmtrace_probe_attached{tracepoint=\"kvm_entry\"} 0"));
        assert!(text.contains("kvmtrace_irq_to_guest_latency_seconds_bucket{vm=\"vm100\",pid=\"100\",vcpu=\"0\",le=\"+Inf\"} 20"), "{text}");
    }

    #[test]
    fn series_are_bounded_and_gone_vms_dropped_after_the_grace_period() {
        let mut m = metrics(2);
        let mut engine = Engine::new(EngineConfig::default());
        for (i, pid) in [100u32, 200, 300].into_iter().enumerate() {
            let t0 = i as u64 * 100_000 * US;
            feed(&mut engine, &stream(pid, pid + 1, t0, 5, 30 * US, 77));
        }
        m.sync(&engine, &mut name);
        assert_eq!(m.series_count(), 2, "max_series");
        let text = m.encode(true).unwrap();
        assert!(text.contains("kvmtrace_vcpus_unexported 1"), "{text}");

        // VM 100 goes away: kept through the grace period, then dropped; the unexported
        // vCPU takes its place at the next sync.
        let mut alive = |pid: u32| pid != 100;
        assert_eq!(m.prune(1_000, &mut alive), 0);
        assert_eq!(m.prune(1_000 + 9_999_999_999, &mut alive), 0);
        assert_eq!(m.prune(1_000 + 10_000_000_000, &mut alive), 1);
        m.sync(&engine, &mut name);
        let pids: Vec<u32> = m.series_labels().map(|l| l.pid).collect();
        assert_eq!(pids.len(), 2);
        assert!(!pids.contains(&100), "{pids:?}");
        let text = m.encode(true).unwrap();
        assert!(text.contains("kvmtrace_series_evicted_total 1"), "{text}");
        // A VM that comes back within the grace period keeps its series.
        let mut none_alive = |_: u32| false;
        m.prune(0, &mut none_alive);
        let mut all_alive = |_: u32| true;
        m.prune(5_000_000_000, &mut all_alive);
        assert_eq!(m.prune(20_000_000_000, &mut none_alive), 0);
    }

    #[test]
    fn a_vcpu_id_learnt_later_replaces_the_tid_label() {
        let mut m = metrics(8);
        let mut engine = Engine::new(EngineConfig::default());
        let pio = Payload::KvmPio(ev::KvmPio {
            rw: 1,
            port: 0x80,
            size: 1,
            val: Some(0),
        });
        feed(
            &mut engine,
            &[at(10, 101, 100, pio), at(5_000_000, 101, 100, pio)],
        );
        m.sync(&engine, &mut name);
        let labels: Vec<String> = m.series_labels().map(|l| l.vcpu.clone()).collect();
        assert_eq!(labels, ["tid:101"]);
        let info = ev::ThreadInfo::thread(Some(3), "vcpu-thread");
        feed(
            &mut engine,
            &[at(6_000_000, 101, 100, Payload::ThreadInfo(info))],
        );
        m.sync(&engine, &mut name);
        let labels: Vec<String> = m.series_labels().map(|l| l.vcpu.clone()).collect();
        assert_eq!(labels, ["3"]);
    }

    #[test]
    fn preempting_tasks_are_labelled_by_name_without_instance() {
        let names: HashMap<u32, String> = [
            (1, "kworker/3:1H".to_string()),
            (2, "opt 1sh6vtmjkgc".to_string()),
            (3, "kdamond.0".to_string()),
            (4, String::new()),
        ]
        .into_iter()
        .collect();
        let l = |pid| cause_label(Cause::Preempted { pid }, &names);
        assert_eq!(l(1), "preempted:kworker");
        assert_eq!(l(2), "preempted:opt");
        assert_eq!(l(3), "preempted:kdamond.0");
        assert_eq!(l(4), "preempted:unnamed");
        assert_eq!(l(5), "preempted:unnamed");
        assert_eq!(
            cause_label(Cause::Hardirq { irq: 24 }, &names),
            "hardirq:24"
        );
    }

    #[test]
    fn cause_labels_per_vcpu_are_bounded() {
        let mut m = Metrics::new(
            MetricsConfig {
                max_causes: 2,
                ..MetricsConfig::default()
            },
            vec![],
            vec![],
        );
        let mut engine = Engine::new(EngineConfig::default());
        // Each interrupt's wait goes to a different, unnamed... and named task.
        let mut s = Vec::new();
        for (i, hog) in [501u32, 502, 503, 504].into_iter().enumerate() {
            s.push(at(
                i as u64 * 50_000 * US,
                0,
                0,
                Payload::SchedSwitch(ev::SchedSwitch {
                    prev_pid: 0,
                    prev_state: 0,
                    next_pid: u64::from(hog),
                    next_comm: Comm::new(&format!("task{i}")),
                }),
            ));
            s.extend(stream(
                100,
                101,
                i as u64 * 50_000 * US + 10,
                3,
                50 * US,
                hog,
            ));
        }
        s.sort_by_key(|e| e.ts_ns);
        feed(&mut engine, &s);
        m.sync(&engine, &mut name);
        let text = m.encode(true).unwrap();
        let causes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kvmtrace_irq_to_guest_cause_seconds_total{"))
            .collect();
        assert!(causes.len() <= 3, "two causes and overflow: {causes:#?}");
        assert!(
            causes.iter().any(|l| l.contains("cause=\"overflow\"")),
            "{causes:#?}"
        );
    }
}
