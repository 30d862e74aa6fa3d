//! `kvmtrace report`: the engine's model of a capture or a text trace as a [`Report`]: the
//! capture and host, event counts and drops, per vCPU its interrupt-to-guest latency split
//! into causes, its exits and time by state, the worst samples with their timelines, and the
//! demo's ground truth; as text ([`Report::to_text`]) or JSON (schema in
//! docs/report-schema.md). The report reads the engine's model and interprets no event
//! itself.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::capture::{CaptureHeader, CaptureTrailer, Damage, Placement, StopReason, Trigger};
use crate::hist::LatencySummary;
use crate::host::HostFacts;

pub mod export;
pub mod latency;
pub mod stacks;
mod text;

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
    /// kvmtrace itself during the recording: where it ran, its CPU time, what it cost the
    /// vCPUs (absent for older captures and text traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer: Option<TracerReport>,
    /// What became of the targets: `-p` pids that ran no vCPU, VMs that exited.
    #[serde(skip_serializing_if = "Targets::is_empty")]
    pub targets: Targets,
    /// For `--from-text`: what the importer made of the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportInfo>,
    /// With `--stacks`: the stack records the capture holds (docs/stacks.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<stacks::StackSummary>,
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
    pub stop_reason: Option<StopReason>,
    pub host: HostFacts,
    /// Time between the first and the last event.
    pub duration_ns: u64,
    /// CLOCK_MONOTONIC of the first and the last tracepoint event (0 when there is none).
    pub first_event_ns: u64,
    pub last_event_ns: u64,
    pub probes_attached: usize,
    /// Of those, how many run as BTF tracepoint programs (absent when none: classic
    /// programs only, or a capture from before kvmtrace recorded it).
    #[serde(skip_serializing_if = "is_zero")]
    pub probes_btf: usize,
    pub probes_unavailable: Vec<Unavailable>,
    /// Flight recorder: the samples that triggered the windows written.
    pub triggers: Vec<Trigger>,
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
    /// Events lost: in the kernel (a full ring buffer, a trace's LOST events), plus records
    /// userspace could not decode.
    pub dropped: u64,
    pub dropped_kernel: u64,
    pub dropped_userspace: u64,
    /// Tracepoint hits the kernel ran no program for because another BPF program, or a map
    /// syscall, held that CPU (most on CPUs the filters would have ignored; not drops).
    #[serde(default)]
    pub not_run: u64,
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

/// The observer effect: kvmtrace's own placement and CPU time, and the interrupt-to-guest
/// time it took from the vCPUs (the `tracer` cause).
#[derive(Clone, Debug, Serialize)]
pub struct TracerReport {
    /// Where its threads ran (absent when the capture does not say).
    pub placement: Option<Placement>,
    /// CPU time of kvmtrace's own threads during the recording.
    pub cpu_ns: Option<u64>,
    /// The recording's length (start of tracing to the trailer).
    pub wall_ns: u64,
    /// `cpu_ns` as a share of one CPU over `wall_ns`.
    pub cpu_pct: Option<f64>,
    /// Interrupt-to-guest time given to the `tracer` cause, all vCPUs together.
    pub irq_to_guest_ns: u64,
}

/// Notes on the traced processes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Targets {
    /// `-p` pids none of whose threads ran a vCPU during the capture.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_vcpu: Vec<u32>,
    /// VMs whose VMM process exited during the capture (their samples are kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exited: Vec<VmExit>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.without_vcpu.is_empty() && self.exited.is_empty()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VmExit {
    pub pid: u32,
    pub vm_name: String,
    /// When the recorder saw it gone (CLOCK_MONOTONIC; within its 0.5 s poll).
    pub at_ns: u64,
    /// `at_ns` after the start of the recording (or of the first event, when the capture
    /// does not say when it started).
    pub after_ns: u64,
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

impl Report {
    /// The report of what `engine` made of a stream, with what the capture file says about
    /// itself.
    pub fn build(
        path: &str,
        header: &CaptureHeader,
        trailer: Option<&CaptureTrailer>,
        damage: Option<&Damage>,
        engine: &Engine,
    ) -> Report {
        let threads = engine.threads();
        let counts = threads.counts();
        let drops_kernel = trailer
            .map_or(0, |t| t.kernel_drops)
            .max(counts.drops_kernel);
        let drops_user = trailer
            .map_or(0, |t| t.malformed)
            .max(counts.drops_userspace);
        let mut vcpus: Vec<VcpuReport> = threads
            .iter()
            .filter(|(_, t)| t.is_vcpu)
            .map(|(tid, t)| VcpuReport {
                latency: latency::vcpu_latency(engine, tid).unwrap_or_default(),
                vm_name: threads.vm_name(t.tgid).unwrap_or_default().to_string(),
                pid: t.tgid,
                tid,
                // The engine's id (KVM's own when the stream gave it) over the name's.
                vcpu: engine.vcpu(tid).and_then(|v| v.vcpu_id).or(t.vcpu),
                comm: t.comm.clone(),
                events: t.by_kind.total(),
                events_by_kind: kind_counts(&t.by_kind, &t.kvm_other),
            })
            .collect();
        vcpus.sort_by_key(|v| (v.pid, v.vcpu.unwrap_or(u32::MAX), v.tid));
        let truth = engine.demo_truth();
        let (paths, irqoff_ns) = engine.demo_truth_by_path();
        let demo = (header.demo || !truth.is_empty()).then(|| DemoReport {
            irq_ack_latency_ns: LatencySummary::from_histogram(truth),
            by_path: paths
                .iter()
                .map(|(p, h)| {
                    let name = kvmtrace_common::demo_path::name(*p).to_string();
                    (name, LatencySummary::from_histogram(h))
                })
                .collect(),
            irqoff_ns,
        });
        let tracer_cpu = trailer.and_then(|t| t.tracer_cpu_ns);
        let tracer = (header.placement.is_some() || tracer_cpu.is_some()).then(|| {
            let wall_ns = trailer.map_or(0, |t| t.end_ns.saturating_sub(header.start_ns));
            TracerReport {
                placement: header.placement.clone(),
                cpu_ns: tracer_cpu,
                wall_ns,
                cpu_pct: tracer_cpu
                    .filter(|_| wall_ns > 0)
                    .map(|c| 100.0 * c as f64 / wall_ns as f64),
                irq_to_guest_ns: vcpus
                    .iter()
                    .filter_map(|v| v.latency.irq_to_guest.causes_ns.get("tracer"))
                    .sum(),
            }
        });
        let mut targets = Targets {
            without_vcpu: header
                .pids
                .iter()
                .copied()
                .filter(|&p| !vcpus.iter().any(|v| v.pid == p))
                .collect(),
            exited: threads
                .vms_gone()
                .map(|(pid, at_ns)| VmExit {
                    pid,
                    vm_name: threads.vm_name(pid).unwrap_or_default().to_string(),
                    at_ns,
                    after_ns: at_ns.saturating_sub(if header.start_ns > 0 {
                        header.start_ns
                    } else {
                        counts.first_ns.unwrap_or(at_ns)
                    }),
                })
                .collect(),
        };
        targets.without_vcpu.sort_unstable();
        targets.without_vcpu.dedup();
        targets.exited.sort_by_key(|e| (e.at_ns, e.pid));
        Report {
            schema: SCHEMA,
            capture: CaptureInfo {
                path: path.to_string(),
                complete: trailer.is_some() && damage.is_none(),
                damage: damage.cloned(),
                stop_reason: trailer.map(|t| t.stop_reason),
                host: header.host.clone(),
                duration_ns: counts.first_ns.map_or(0, |f| counts.last_ns - f),
                first_event_ns: counts.first_ns.unwrap_or(0),
                last_event_ns: counts.last_ns,
                probes_attached: header.probes.iter().filter(|p| p.attached).count(),
                probes_btf: header
                    .probes
                    .iter()
                    .filter(|p| p.attached && p.mode == Some(crate::capture::ProbeMode::TpBtf))
                    .count(),
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
                total: counts.total,
                dropped: drops_kernel + drops_user,
                dropped_kernel: drops_kernel,
                dropped_userspace: drops_user,
                not_run: counts.not_run,
                by_kind: kind_counts(&counts.by_kind, &counts.kvm_other),
                unknown_kinds: counts.unknown_kinds,
            },
            vcpus,
            worst: latency::worst_samples(engine),
            attribution: latency::attribution_info(engine),
            demo,
            tracer,
            targets,
            import: None,
            stacks: stacks::summary(engine, header),
        }
    }
}

/// Event counts by tracepoint name: the kinds' names, with `kvm_other` records counted under
/// their own tracepoint's name (`kvm_fpu`, `kvm_cr`, ...; `kvm_other#N` for an index this
/// kvmtrace does not know).
fn kind_counts(
    by_kind: &crate::engine::KindCounts,
    kvm_other: &BTreeMap<u64, u64>,
) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = by_kind
        .iter()
        .filter(|(k, _)| *k != kvmtrace_common::Kind::KvmOther)
        .map(|(k, n)| (k.name().to_string(), n))
        .collect();
    for (id, n) in kvm_other {
        let name = kvmtrace_common::kvm_events::kvm_event(*id)
            .map_or_else(|| format!("kvm_other#{id}"), |e| e.name.to_string());
        *out.entry(name).or_default() += n;
    }
    out
}

/// Reads a capture through the attribution engine (whose model the report and the exports
/// read), streaming: memory does not grow with the capture.
pub fn analyse_capture(
    path: &std::path::Path,
    cfg: EngineConfig,
) -> Result<(Report, Engine), crate::capture::CaptureError> {
    let mut reader = crate::capture::CaptureReader::open(path)?;
    let mut engine = Engine::new(cfg.for_capture(&reader.header));
    let mut progress = Progress::new(path);
    while let Some(ev) = reader.next_event()? {
        engine.push(&ev);
        progress.tick(reader.offset());
    }
    progress.done();
    engine.flush();
    let report = Report::build(
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
    let mut engine = Engine::new(
        EngineConfig {
            apic_timer_fn: crate::import::APIC_TIMER_FN_MARKER,
            ..cfg
        }
        .for_events(&imported.events),
    );
    for ev in &imported.events {
        engine.push(ev);
    }
    engine.flush();
    let header = CaptureHeader {
        tool: format!("import ({})", imported.format.name()),
        ..CaptureHeader::default()
    };
    let mut report = Report::build(&path.display().to_string(), &header, None, None, &engine);
    report.capture.complete = imported.stats.not_understood == 0;
    report.import = Some(ImportInfo {
        format: imported.format.name().to_string(),
        stats: imported.stats,
    });
    Ok((report, engine))
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use kvmtrace_common::{ev, Comm, Event, Origin, Record};

    use super::*;

    /// `-p 100 -p 999` where 999 ran no vCPU and 100 exited; kvmtrace's own CPU time and
    /// placement from the header and trailer; the tracer's share of the samples.
    #[test]
    fn targets_and_the_tracer_are_reported() {
        let at = |ts: u64, tid: u32, tgid: u32, rec: &ev::ThreadInfo| {
            let o = Origin {
                ts_ns: ts,
                tid,
                tgid,
                cpu: 0,
            };
            Event::new(o, rec)
        };
        let mut engine = Engine::new(EngineConfig::default());
        for e in [
            at(0, 101, 100, &ev::ThreadInfo::thread(Some(0), "CPU 0/KVM")),
            at(0, 100, 100, &ev::ThreadInfo::vm_name("vnf")),
            at(0, 7, 7, &ev::ThreadInfo::tracer("kvmtrace")),
            at(2_500_000_000, 100, 100, &ev::ThreadInfo::vm_gone("vnf")),
        ] {
            engine.push(&e);
        }
        engine.push(&Event::new(
            Origin {
                ts_ns: 1_000_000_000,
                tid: 101,
                tgid: 100,
                cpu: 1,
            },
            &ev::KvmPio {
                rw: 1,
                port: 0x80,
                size: 1,
                val: Some(0),
            },
        ));
        engine.flush();
        let header = CaptureHeader {
            pids: vec![100, 999],
            start_ns: 1_000_000_000,
            placement: Some(Placement {
                cpus: vec![0],
                how: "auto".into(),
                vcpu_cpus: vec![1],
                ..Placement::default()
            }),
            ..CaptureHeader::default()
        };
        let trailer = CaptureTrailer {
            end_ns: 3_000_000_000,
            tracer_cpu_ns: Some(50_000_000),
            ..CaptureTrailer::default()
        };
        let r = Report::build("x", &header, Some(&trailer), None, &engine);
        assert_eq!(r.targets.without_vcpu, vec![999]);
        assert_eq!(r.targets.exited.len(), 1);
        assert_eq!(
            (r.targets.exited[0].pid, r.targets.exited[0].at_ns),
            (100, 2_500_000_000)
        );
        let t = r.tracer.as_ref().expect("tracer section");
        assert_eq!((t.cpu_ns, t.wall_ns), (Some(50_000_000), 2_000_000_000));
        assert!((t.cpu_pct.unwrap() - 2.5).abs() < 1e-9);
        let text = r.to_text();
        assert!(
            text.contains("warning: pid 999 ran no vCPU during the capture"),
            "{text}"
        );
        assert!(
            text.contains("VM pid 100 (vnf) exited 1.500 s into the capture; its samples are kept"),
            "{text}"
        );
        assert!(
            text.contains("kvmtrace itself: 0.050 s of CPU over 2.0 s (2.5 % of one CPU)"),
            "{text}"
        );
        assert!(text.contains("on CPU 0 (auto; vCPUs on 1)"), "{text}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["targets"]["without_vcpu"][0], 999);
        assert_eq!(j["tracer"]["placement"]["cpus"][0], 0);
    }

    fn at<R: Record>(ts: u64, tid: u32, rec: R) -> Event {
        let o = Origin {
            ts_ns: ts,
            tid,
            tgid: 100,
            cpu: 0,
        };
        Event::new(o, &rec)
    }

    #[test]
    fn counts_per_vcpu_and_drops_and_demo() {
        let pio = ev::KvmPio {
            rw: 1,
            port: 0x80,
            size: 2,
            val: Some(1),
        };
        let stream = [
            at(0, 101, ev::ThreadInfo::thread(None, "CPU 0/KVM")),
            at(10, 101, pio),
            at(
                20,
                101,
                ev::KvmUserspaceExit {
                    reason: Some(2),
                    errno: Some(0),
                },
            ),
            at(
                30,
                5,
                ev::SchedSwitch {
                    prev_pid: 101,
                    prev_state: 0,
                    next_pid: 555,
                    next_comm: Comm::new("busy"),
                },
            ),
            at(
                40,
                7,
                ev::SchedWakeup {
                    pid: 101,
                    target_cpu: Some(0),
                    prio: Some(120),
                    comm: Comm::default(),
                },
            ),
            at(50, 7, ev::IrqHandlerEntry { irq: 11 }),
            at(
                60,
                102,
                ev::KvmExit {
                    exit_reason: 30,
                    isa: Some(1),
                    vcpu_id: Some(1),
                    ..Default::default()
                },
            ),
            at(
                60,
                101,
                ev::DemoAck {
                    seq: 1,
                    raised_ns: 1000,
                    acked_ns: 36_000,
                    ..Default::default()
                },
            ),
            at(
                61,
                101,
                ev::DemoAck {
                    seq: 2,
                    raised_ns: 2000,
                    acked_ns: 12_000,
                    ..Default::default()
                },
            ),
            at(
                70,
                0,
                ev::Drops {
                    kernel: 3,
                    userspace: 1,
                    not_run: 7,
                },
            ),
            at(
                80,
                0,
                ev::Drops {
                    kernel: 2,
                    userspace: 0,
                    not_run: 0,
                },
            ),
            Event {
                kind: 999,
                ..Default::default()
            },
        ];
        let mut engine = Engine::new(EngineConfig::default());
        for e in &stream {
            engine.push(e);
        }
        engine.flush();
        let r = Report::build("x", &CaptureHeader::default(), None, None, &engine);
        assert_eq!(r.events.total, 6);
        assert_eq!(r.events.dropped, 4, "the largest cumulative counters");
        assert_eq!(r.events.not_run, 7, "not counted as drops");
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
        let d = r.demo.clone().unwrap().irq_ack_latency_ns;
        assert_eq!(d.count, 2);
        assert!(d.max >= 35_000 && d.max <= 35_100, "{}", d.max);
        let text = r.to_text();
        assert!(
            text.contains("  7 tracepoint hits the kernel ran no kvmtrace program for"),
            "{text}"
        );
        assert!(text.contains("vCPU 0  pid 100 () tid 101"), "{text}");
        assert!(
            r.tracer.is_none() && r.targets.is_empty(),
            "nothing said, nothing shown"
        );
        assert!(text.contains("<-- DROPS"));
        assert!(!r.capture.complete);
        // Records from before paths existed read as the PIC's; one path: no per-path lines.
        let demo = r.demo.clone().unwrap();
        assert_eq!(demo.by_path.keys().collect::<Vec<_>>(), ["pic"]);
        assert!(!text.contains("  pic "), "{text}");
    }

    #[test]
    fn demo_ground_truth_by_path() {
        use kvmtrace_common::demo_path;
        let ack = |seq, raised, acked, path, irqoff| {
            at(
                acked,
                101,
                ev::DemoAck {
                    seq,
                    raised_ns: raised,
                    acked_ns: acked,
                    path,
                    irqoff_ns: irqoff,
                },
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
        let mut engine = Engine::new(EngineConfig::default());
        for e in &stream {
            engine.push(e);
        }
        engine.flush();
        let r = Report::build("x", &CaptureHeader::default(), None, None, &engine);
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
}
