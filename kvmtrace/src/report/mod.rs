//! `kvmtrace report`: per-vCPU event counts, drop counters and the demo's ground truth, as
//! text or as JSON (schema in docs/report-schema.md).
//!
//! [`ReportBuilder`] is pure: events in, [`Report`] out; reading files is the caller's job.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use kvmtrace_common::{Event, Kind, VCPU_UNKNOWN};
use serde::Serialize;

use crate::capture::{CaptureHeader, CaptureTrailer, Damage};
use crate::host::{vcpu_from_comm, HostFacts};

pub mod export;
pub mod latency;

use self::latency::{AttributionInfo, VcpuLatency, WorstSample};
use crate::engine::{Engine, EngineConfig};

pub const SCHEMA: &str = "kvmtrace-report/1";

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub capture: CaptureInfo,
    pub events: EventCounts,
    pub vcpus: Vec<VcpuReport>,
    /// The largest interrupt-to-guest latencies, each with its causes and timeline.
    pub worst: Vec<WorstSample>,
    pub attribution: AttributionInfo,
    pub demo: Option<DemoReport>,
    /// For `--from-text`: what the importer made of the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImportInfo {
    /// `ftrace`, `trace-cmd`, `perf-script`.
    pub format: String,
    pub stats: crate::import::ImportStats,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaptureInfo {
    pub path: String,
    /// The recording ended cleanly (trailer present, no damage).
    pub complete: bool,
    pub damage: Option<Damage>,
    pub stop_reason: Option<String>,
    pub host: HostFacts,
    /// Time between the first and the last event.
    pub duration_ns: u64,
    /// CLOCK_MONOTONIC of the first and the last tracepoint event (0 when there is none).
    pub first_event_ns: u64,
    pub last_event_ns: u64,
    pub probes_attached: usize,
    pub probes_unavailable: Vec<Unavailable>,
    /// Flight recorder: the samples that triggered the windows written.
    pub triggers: Vec<crate::engine::Trigger>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unavailable {
    pub tracepoint: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EventCounts {
    /// Tracepoint events read (userspace bookkeeping records not included).
    pub total: u64,
    /// Events lost: kernel ring buffer full, plus records userspace could not decode.
    pub dropped: u64,
    pub dropped_kernel: u64,
    pub dropped_userspace: u64,
    /// Tracepoint name -> count.
    pub by_kind: BTreeMap<String, u64>,
    /// Records of a kind this kvmtrace does not know (from a newer version).
    pub unknown_kinds: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VcpuReport {
    /// The VMM's process id.
    pub pid: u32,
    pub tid: u32,
    /// vCPU id, when known (from kvm_exit/kvm_entry or a `CPU n/KVM` thread name).
    pub vcpu: Option<u32>,
    /// The VM's name (QEMU's `-name guest=`), or the VMM's program name.
    pub vm_name: String,
    pub comm: String,
    pub events: u64,
    pub events_by_kind: BTreeMap<String, u64>,
    /// Exit latency by reason, interrupt-to-guest latency and its causes, time by state.
    #[serde(flatten)]
    pub latency: VcpuLatency,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Interrupt raised (KVM_IRQ_LINE) -> the guest's handler acknowledged it (port write
    /// seen by the demo VMM): the ground truth the tracer is checked against.
    pub irq_ack_latency_ns: LatencySummary,
    /// The same by interrupt path (`pic`, `msi`, `timer`, `irqoff`), for the paths that ran.
    pub by_path: BTreeMap<String, LatencySummary>,
    /// How long the guest kept interrupts disabled after each `irqoff` raise (0: no such
    /// phase).
    pub irqoff_ns: u64,
}

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

/// A new latency histogram: 1 ns .. 60 s, 2 significant digits (1 % resolution, about
/// 30 KiB: the engine keeps one per vCPU and exit reason).
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000_000, 2) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts; fall back to auto-resize.
        Err(_) => Histogram::new(2).unwrap_or_else(|_| unreachable!("2 sigfigs is valid")),
    }
}

/// Is this a KVM event that only fires in the vCPU thread itself?
pub fn is_vcpu_context(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::KvmExit
            | Kind::KvmEntry
            | Kind::KvmUserspaceExit
            | Kind::KvmInjVirq
            | Kind::KvmVcpuWakeup
            | Kind::KvmPio
            | Kind::KvmMmio
            | Kind::KvmMsr
    )
}

/// The thread an event is about: the switched/woken/migrated task for sched events, the
/// current task otherwise. For sched_switch both sides are candidates.
pub fn subjects(ev: &Event, kind: Kind) -> [Option<u32>; 2] {
    match kind {
        Kind::SchedSwitch => [Some(ev.slots[0] as u32), Some(ev.slots[2] as u32)],
        Kind::SchedWakeup | Kind::SchedWakeupNew | Kind::SchedMigrateTask => {
            [Some(ev.slots[0] as u32), None]
        }
        _ => [Some(ev.tid), None],
    }
}

/// Decodes a NUL-padded comm from two slots.
pub fn comm_from_slots(a: u64, b: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(16);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Encodes a comm into two slots (the inverse of [`comm_from_slots`]).
pub fn comm_to_slots(comm: &str) -> (u64, u64) {
    let mut bytes = [0u8; 16];
    let n = comm.len().min(15);
    bytes[..n].copy_from_slice(&comm.as_bytes()[..n]);
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    b.copy_from_slice(&bytes[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

#[derive(Default)]
struct Thread {
    tgid: u32,
    vcpu: Option<u32>,
    comm: String,
    is_vcpu: bool,
    by_kind: BTreeMap<Kind, u64>,
}

/// Accumulates a report from an event stream.
pub struct ReportBuilder {
    threads: HashMap<u32, Thread>,
    by_kind: BTreeMap<Kind, u64>,
    total: u64,
    unknown: u64,
    drops_kernel: u64,
    drops_user: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    demo: Histogram<u64>,
    /// By `DemoAck` path code.
    demo_paths: BTreeMap<u64, Histogram<u64>>,
    demo_irqoff_ns: u64,
}

impl Default for ReportBuilder {
    fn default() -> Self {
        ReportBuilder {
            threads: HashMap::new(),
            by_kind: BTreeMap::new(),
            total: 0,
            unknown: 0,
            drops_kernel: 0,
            drops_user: 0,
            first_ns: None,
            last_ns: 0,
            demo: latency_histogram(),
            demo_paths: BTreeMap::new(),
            demo_irqoff_ns: 0,
        }
    }
}

impl ReportBuilder {
    pub fn push(&mut self, ev: &Event) {
        let Ok(kind) = Kind::try_from(ev.kind) else {
            self.unknown += 1;
            return;
        };
        match kind {
            Kind::ThreadInfo if ev.slots[1] == kvmtrace_common::THREAD_INFO_VM_NAME => return,
            Kind::ThreadInfo if ev.slots[1] == kvmtrace_common::THREAD_INFO_NAME_ONLY => {
                self.threads.entry(ev.tid).or_default().comm =
                    comm_from_slots(ev.slots[3], ev.slots[4]);
                return;
            }
            Kind::ThreadInfo => {
                let t = self.threads.entry(ev.tid).or_default();
                t.tgid = ev.tgid;
                t.comm = comm_from_slots(ev.slots[3], ev.slots[4]);
                if ev.slots[0] != VCPU_UNKNOWN {
                    t.vcpu = Some(ev.slots[0] as u32);
                    t.is_vcpu = true;
                } else if let Some(v) = vcpu_from_comm(&t.comm) {
                    t.vcpu = Some(v);
                    t.is_vcpu = true;
                }
                return;
            }
            Kind::DemoAck => {
                let lat = ev.slots[2].saturating_sub(ev.slots[1]).max(1);
                let _ = self.demo.record(lat);
                let _ = self
                    .demo_paths
                    .entry(ev.slots[3])
                    .or_insert_with(latency_histogram)
                    .record(lat);
                if ev.slots[3] == kvmtrace_common::demo_path::IRQOFF {
                    self.demo_irqoff_ns = self.demo_irqoff_ns.max(ev.slots[4]);
                }
                return;
            }
            Kind::Drops => {
                // Cumulative counters: keep the largest seen.
                self.drops_kernel = self.drops_kernel.max(ev.slots[0]);
                self.drops_user = self.drops_user.max(ev.slots[1]);
                return;
            }
            _ => {}
        }
        self.total += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        self.first_ns = Some(self.first_ns.map_or(ev.ts_ns, |f| f.min(ev.ts_ns)));
        self.last_ns = self.last_ns.max(ev.ts_ns);

        if is_vcpu_context(kind) {
            let t = self.threads.entry(ev.tid).or_default();
            t.is_vcpu = true;
            t.tgid = ev.tgid;
            if matches!(kind, Kind::KvmExit | Kind::KvmEntry) {
                let slot = if kind == Kind::KvmExit { 2 } else { 0 };
                if ev.missing & (1 << slot) == 0 {
                    t.vcpu = Some(ev.slots[slot] as u32);
                }
            }
        }
        for tid in subjects(ev, kind).into_iter().flatten() {
            let t = self.threads.entry(tid).or_default();
            *t.by_kind.entry(kind).or_default() += 1;
            if kind == Kind::SchedSwitch && tid == ev.slots[2] as u32 && t.comm.is_empty() {
                t.comm = comm_from_slots(ev.slots[3], ev.slots[4]);
            }
        }
    }

    pub fn finish(
        self,
        path: &str,
        header: &CaptureHeader,
        trailer: Option<&CaptureTrailer>,
        damage: Option<&Damage>,
        engine: &Engine,
    ) -> Report {
        let drops_kernel = trailer.map_or(0, |t| t.kernel_drops).max(self.drops_kernel);
        let drops_user = trailer.map_or(0, |t| t.malformed).max(self.drops_user);
        let mut vcpus: Vec<VcpuReport> = self
            .threads
            .into_iter()
            .filter(|(_, t)| t.is_vcpu)
            .map(|(tid, t)| VcpuReport {
                latency: latency::vcpu_latency(engine, tid).unwrap_or_default(),
                vm_name: engine.vm_names.get(&t.tgid).cloned().unwrap_or_default(),
                pid: t.tgid,
                tid,
                vcpu: t.vcpu,
                comm: t.comm,
                events: t.by_kind.values().sum(),
                events_by_kind: t
                    .by_kind
                    .into_iter()
                    .map(|(k, n)| (k.name().to_string(), n))
                    .collect(),
            })
            .collect();
        vcpus.sort_by_key(|v| (v.pid, v.vcpu.unwrap_or(u32::MAX), v.tid));
        let demo = (header.demo || !self.demo.is_empty()).then(|| DemoReport {
            irq_ack_latency_ns: LatencySummary::from_histogram(&self.demo),
            by_path: self
                .demo_paths
                .iter()
                .map(|(p, h)| {
                    let name = kvmtrace_common::demo_path::name(*p).to_string();
                    (name, LatencySummary::from_histogram(h))
                })
                .collect(),
            irqoff_ns: self.demo_irqoff_ns,
        });
        Report {
            schema: SCHEMA,
            capture: CaptureInfo {
                path: path.to_string(),
                complete: trailer.is_some() && damage.is_none(),
                damage: damage.cloned(),
                stop_reason: trailer.map(|t| t.stop_reason.clone()),
                host: header.host.clone(),
                duration_ns: self.first_ns.map_or(0, |f| self.last_ns - f),
                first_event_ns: self.first_ns.unwrap_or(0),
                last_event_ns: self.last_ns,
                probes_attached: header.probes.iter().filter(|p| p.attached).count(),
                triggers: trailer.map(|t| t.triggers.clone()).unwrap_or_default(),
                probes_unavailable: header
                    .probes
                    .iter()
                    .filter(|p| !p.attached)
                    .map(|p| Unavailable {
                        tracepoint: p.tracepoint.clone(),
                        reason: p.reason.clone().unwrap_or_default(),
                    })
                    .collect(),
            },
            events: EventCounts {
                total: self.total,
                dropped: drops_kernel + drops_user,
                dropped_kernel: drops_kernel,
                dropped_userspace: drops_user,
                by_kind: self
                    .by_kind
                    .into_iter()
                    .map(|(k, n)| (k.name().to_string(), n))
                    .collect(),
                unknown_kinds: self.unknown,
            },
            vcpus,
            worst: latency::worst_samples(engine),
            attribution: latency::attribution_info(engine),
            demo,
            import: None,
        }
    }
}

/// Reads a capture through the report builder and the attribution engine (whose model the
/// exports use), streaming: memory does not grow with the capture.
pub fn analyse_capture(
    path: &std::path::Path,
    cfg: EngineConfig,
) -> Result<(Report, Engine), crate::capture::CaptureError> {
    let mut reader = crate::capture::CaptureReader::open(path)?;
    let mut b = ReportBuilder::default();
    let mut engine = Engine::new(EngineConfig {
        apic_timer_fn: reader.header.apic_timer_fn,
        ..cfg
    });
    let mut progress = Progress::new(path);
    while let Some(ev) = reader.next_event()? {
        b.push(&ev);
        engine.push(&ev);
        progress.tick(reader.offset());
    }
    progress.done();
    engine.flush();
    let report = b.finish(
        &path.display().to_string(),
        &reader.header,
        reader.trailer.as_ref(),
        reader.damage.as_ref(),
        &engine,
    );
    Ok((report, engine))
}

/// A progress line on stderr for large captures, when stderr is a terminal.
struct Progress {
    total: u64,
    next: u64,
    shown: bool,
}

impl Progress {
    const LARGE: u64 = 64 << 20;

    fn new(path: &std::path::Path) -> Progress {
        use std::io::IsTerminal as _;
        let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let on = total >= Self::LARGE && std::io::stderr().is_terminal();
        Progress {
            total: if on { total } else { 0 },
            next: 0,
            shown: false,
        }
    }

    fn tick(&mut self, offset: u64) {
        if self.total == 0 || offset < self.next {
            return;
        }
        self.next = offset + self.total / 200;
        self.shown = true;
        eprint!(
            "\rkvmtrace: reading {:>5.1} % ({} of {} MiB)",
            100.0 * offset as f64 / self.total as f64,
            offset >> 20,
            self.total >> 20
        );
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// The same analysis of a text trace (ftrace, trace-cmd report, perf script).
pub fn analyse_text(
    path: &std::path::Path,
    cfg: EngineConfig,
) -> Result<(Report, Engine), crate::import::ImportError> {
    let imported = crate::import::import_text(path)?;
    let mut b = ReportBuilder::default();
    let mut engine = Engine::new(EngineConfig {
        apic_timer_fn: crate::import::APIC_TIMER_FN_MARKER,
        ..cfg
    });
    for ev in &imported.events {
        b.push(ev);
        engine.push(ev);
    }
    engine.flush();
    let header = CaptureHeader {
        tool: format!("import ({})", imported.format.name()),
        ..CaptureHeader::default()
    };
    let mut report = b.finish(&path.display().to_string(), &header, None, None, &engine);
    report.capture.complete = imported.stats.not_understood == 0;
    report.import = Some(ImportInfo {
        format: imported.format.name().to_string(),
        stats: imported.stats,
    });
    Ok((report, engine))
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

impl Report {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let c = &self.capture;
        let state = if c.complete {
            format!(
                "complete, stopped by {}",
                c.stop_reason.as_deref().unwrap_or("?")
            )
        } else {
            "INCOMPLETE".to_string()
        };
        if let Some(i) = &self.import {
            let st = &i.stats;
            let _ = writeln!(
                s,
                "text trace: {} ({} format): {} lines, {} events, {} skipped, {} not understood",
                c.path, i.format, st.lines, st.events, st.skipped, st.not_understood
            );
            for (why, n) in &st.by_reason {
                let _ = writeln!(s, "  not understood: {n} x {why}");
            }
            for (line, text) in &st.first_unparsed {
                let _ = writeln!(s, "    line {line}: {text}");
            }
        } else {
            let _ = writeln!(s, "capture: {} ({state})", c.path);
        }
        for t in &c.triggers {
            let _ = writeln!(
                s,
                "flight recorder trigger: {} us interrupt-to-guest on tid {} at {} ns",
                us(t.total_ns),
                t.tid,
                t.open_ns
            );
        }
        if let Some(d) = &c.damage {
            let _ = writeln!(
                s,
                "warning: {} (at offset {}); reporting the events before it",
                d.what, d.offset
            );
        }
        let h = &c.host;
        if self.import.is_none() {
            let _ = writeln!(
                s,
                "host: {} | kernel {} | KVM {} | {} CPUs | {}{}",
                h.hostname,
                h.kernel,
                h.kvm_backend.as_deref().unwrap_or("not loaded"),
                h.ncpus,
                h.cpu_model,
                h.virt
                    .summary()
                    .map_or(String::new(), |v| format!(" | {v}"))
            );
            let _ = writeln!(
                s,
                "probes: {} attached, {} unavailable",
                c.probes_attached,
                c.probes_unavailable.len()
            );
        }
        for u in &c.probes_unavailable {
            let _ = writeln!(s, "  unavailable {}: {}", u.tracepoint, u.reason);
        }
        let e = &self.events;
        let _ = writeln!(
            s,
            "events: {} in {:.3} s, dropped {} (kernel ring buffer {}, undecodable {}){}",
            e.total,
            c.duration_ns as f64 / 1e9,
            e.dropped,
            e.dropped_kernel,
            e.dropped_userspace,
            if e.dropped > 0 { "  <-- DROPS" } else { "" }
        );
        if e.unknown_kinds > 0 {
            let _ = writeln!(s, "  {} records of unknown kinds skipped", e.unknown_kinds);
        }
        for (k, n) in &e.by_kind {
            let _ = writeln!(s, "  {k:<28} {n:>10}");
        }
        if self.vcpus.is_empty() {
            let _ = writeln!(s, "\nno vCPU threads seen");
        } else {
            let _ = writeln!(
                s,
                "\n{:<8} {:<5} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>5}  top cause",
                "pid", "vCPU", "tid", "irqs", "p50 us", "p99 us", "p99.9 us", "max us", "out%"
            );
            for v in &self.vcpus {
                let i = &v.latency.irq_to_guest;
                let total: u64 = i.causes_ns.values().sum();
                let top = i
                    .causes_ns
                    .iter()
                    .max_by_key(|(_, ns)| **ns)
                    .filter(|_| total > 0)
                    .map_or("-".to_string(), |(c, ns)| {
                        format!("{c} {:.0}%", 100.0 * *ns as f64 / total as f64)
                    });
                let _ = writeln!(
                    s,
                    "{:<8} {:<5} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>5.1}  {top}",
                    v.pid,
                    v.vcpu.map_or("?".to_string(), |n| n.to_string()),
                    v.tid,
                    i.count,
                    us(i.p50_ns),
                    us(i.p99_ns),
                    us(i.p999_ns),
                    us(i.max_ns),
                    v.latency.out_of_guest_pct
                );
            }
        }
        for v in &self.vcpus {
            let id = v.vcpu.map_or("?".to_string(), |n| n.to_string());
            let _ = writeln!(
                s,
                "\nvCPU {id}  pid {} ({}) tid {} \"{}\"  {} events",
                v.pid, v.vm_name, v.tid, v.comm, v.events
            );
            latency::vcpu_text(&mut s, &v.latency);
            let _ = writeln!(s, "  events:");
            for (k, n) in &v.events_by_kind {
                let _ = writeln!(s, "    {k:<28} {n:>10}");
            }
        }
        latency::worst_text(&mut s, &self.worst, 3);
        let a = &self.attribution;
        if a.incomplete + a.late_events + a.unresolved_raises > 0 {
            let _ = writeln!(
                s,
                "\nattribution: {} samples, {} incomplete (events lost or state unknown), {} late events, {} interrupts with no known target vCPU",
                a.samples, a.incomplete, a.late_events, a.unresolved_raises
            );
        }
        if let Some(d) = &self.demo {
            let l = &d.irq_ack_latency_ns;
            let _ = writeln!(
                s,
                "\ndemo ground truth, interrupt raised -> guest handler ack (measured by the demo VMM):"
            );
            let _ = writeln!(
                s,
                "  count {}  min {} us  p50 {} us  p99 {} us  max {} us",
                l.count,
                us(l.min),
                us(l.p50),
                us(l.p99),
                us(l.max)
            );
            // By path, once there is more than the PIC (older captures have only it).
            if d.by_path.keys().any(|p| p != "pic") {
                for (path, l) in &d.by_path {
                    let note = match path.as_str() {
                        "timer" => " (from when the tick was due)".to_string(),
                        "irqoff" => format!(
                            " (interrupts disabled {} us after each raise)",
                            us(d.irqoff_ns)
                        ),
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        s,
                        "  {path:<7} count {}  min {} us  p50 {} us  p99 {} us  max {} us{note}",
                        l.count,
                        us(l.min),
                        us(l.p50),
                        us(l.p99),
                        us(l.max)
                    );
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, tid: u32, kind: Kind, slots: [u64; 5]) -> Event {
        Event {
            ts_ns: ts,
            tid,
            tgid: 100,
            cpu: 0,
            kind: kind as u16,
            slots,
            ..Default::default()
        }
    }

    #[test]
    fn counts_per_vcpu_and_drops_and_demo() {
        let (a, b) = comm_to_slots("CPU 0/KVM");
        let (ba, bb) = comm_to_slots("busy");
        let stream = [
            ev(0, 101, Kind::ThreadInfo, [VCPU_UNKNOWN, 0, 0, a, b]),
            ev(10, 101, Kind::KvmPio, [1, 0x80, 2, 1, 0]),
            ev(20, 101, Kind::KvmUserspaceExit, [2, 0, 0, 0, 0]),
            ev(30, 5, Kind::SchedSwitch, [101, 0, 555, ba, bb]),
            ev(40, 7, Kind::SchedWakeup, [101, 0, 120, 0, 0]),
            ev(50, 7, Kind::IrqHandlerEntry, [11, 0, 0, 0, 0]),
            ev(60, 102, Kind::KvmExit, [30, 1, 1, 0, 0]),
            ev(60, 101, Kind::DemoAck, [1, 1000, 36_000, 0, 0]),
            ev(61, 101, Kind::DemoAck, [2, 2000, 12_000, 0, 0]),
            ev(70, 0, Kind::Drops, [3, 1, 0, 0, 0]),
            ev(80, 0, Kind::Drops, [2, 0, 0, 0, 0]),
            Event {
                kind: 999,
                ..Default::default()
            },
        ];
        let mut b = ReportBuilder::default();
        for e in &stream {
            b.push(e);
        }
        let mut engine = Engine::new(EngineConfig::default());
        for e in &stream {
            engine.push(e);
        }
        engine.flush();
        let r = b.finish("x", &CaptureHeader::default(), None, None, &engine);
        assert_eq!(r.events.total, 6);
        assert_eq!(r.events.dropped, 4, "the largest cumulative counters");
        assert_eq!(r.events.unknown_kinds, 1);
        assert_eq!(r.events.by_kind["kvm_pio"], 1);
        assert_eq!(r.vcpus.len(), 2);
        let v0 = &r.vcpus[0];
        assert_eq!(
            (v0.tid, v0.vcpu, v0.comm.as_str()),
            (101, Some(0), "CPU 0/KVM")
        );
        assert_eq!(v0.events_by_kind["sched_switch"], 1);
        assert_eq!(v0.events_by_kind["sched_wakeup"], 1);
        assert!(!v0.events_by_kind.contains_key("irq_handler_entry"));
        assert_eq!(r.vcpus[1].vcpu, Some(1), "from kvm_exit's vcpu_id");
        let demo = r.demo.clone().unwrap();
        let d = demo.irq_ack_latency_ns;
        assert_eq!(d.count, 2);
        assert!(d.max >= 35_000 && d.max <= 35_100, "{}", d.max);
        // Records from before paths existed read as the PIC's.
        assert_eq!(demo.by_path.keys().collect::<Vec<_>>(), ["pic"]);
        assert_eq!(demo.by_path["pic"].count, 2);
        let text = r.to_text();
        assert!(
            !text.contains("  pic "),
            "one path: no per-path lines\n{text}"
        );
        assert!(text.contains("vCPU 0  pid 100 () tid 101"), "{text}");
        assert!(text.contains("<-- DROPS"));
        assert!(!r.capture.complete);
    }

    #[test]
    fn demo_ground_truth_by_path() {
        use kvmtrace_common::demo_path;
        let ack = |seq, raised, acked, path, irqoff| {
            ev(
                acked,
                101,
                Kind::DemoAck,
                [seq, raised, acked, path, irqoff],
            )
        };
        let stream = [
            ack(1, 1_000, 31_000, demo_path::PIC, 0),
            ack(1, 2_000, 12_000, demo_path::MSI, 0),
            ack(2, 3_000, 15_000, demo_path::MSI, 0),
            ack(1, 4_000, 54_000, demo_path::TIMER, 0),
            ack(1, 5_000, 260_000, demo_path::IRQOFF, 200_000),
            ack(1, 6_000, 7_000, 9, 0),
        ];
        let mut b = ReportBuilder::default();
        let mut engine = Engine::new(EngineConfig::default());
        for e in &stream {
            b.push(e);
            engine.push(e);
        }
        engine.flush();
        let r = b.finish("x", &CaptureHeader::default(), None, None, &engine);
        let d = r.demo.clone().unwrap();
        assert_eq!(d.irq_ack_latency_ns.count, 6);
        let counts: Vec<(&str, u64)> = d
            .by_path
            .iter()
            .map(|(p, l)| (p.as_str(), l.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("irqoff", 1),
                ("msi", 2),
                ("pic", 1),
                ("timer", 1),
                ("unknown", 1)
            ]
        );
        assert!(d.by_path["irqoff"].p50 >= 254_000 && d.by_path["irqoff"].p50 <= 256_000);
        assert_eq!(d.irqoff_ns, 200_000);
        let text = r.to_text();
        for want in [
            "  msi     count 2",
            "  timer   count 1",
            "(from when the tick was due)",
            "(interrupts disabled 200.0 us after each raise)",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["demo"]["by_path"]["timer"]["count"], 1);
        assert_eq!(json["demo"]["irqoff_ns"], 200_000);
    }

    #[test]
    fn comm_round_trip() {
        let (a, b) = comm_to_slots("CPU 12/KVM");
        assert_eq!(comm_from_slots(a, b), "CPU 12/KVM");
        let (a, b) = comm_to_slots("a-very-long-thread-name");
        assert_eq!(comm_from_slots(a, b), "a-very-long-thr");
    }
}
