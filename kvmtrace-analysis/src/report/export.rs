//! Exports for other tools: HdrHistogram interval logs (per vCPU and metric) and the worst
//! samples' timelines as Chrome trace-event JSON (Perfetto's UI opens it).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use serde_json::{json, Value};

use super::latency::describe;
use crate::capture::{create_output, CaptureError};
use crate::engine::Engine;
use crate::names::exit_reason_label;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Create(#[from] CaptureError),
    #[error("{path}: write failed: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: histogram {tag}: {what}")]
    Histogram {
        path: PathBuf,
        tag: String,
        what: String,
    },
    #[error("{path}: not written: the capture has no kernel stacks (record with --stacks)")]
    NoStacks { path: PathBuf },
}

/// A tag the interval-log format accepts: no spaces, commas or colons... kept readable.
fn tag_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The interval-log format version the Java `HistogramLogWriter` writes (and
/// HistogramLogAnalyzer reads to choose its parser); readers that do not know it (the Java
/// `HistogramLogReader`, the Rust crate's `IntervalLogIterator`) take it for a comment.
pub const HDR_LOG_FORMAT_VERSION: &str = "1.3";

/// The header lines, as the Java writer orders them: format version, a comment, the start
/// time, the column legend.
fn hdr_log_header(start: std::time::SystemTime) -> String {
    let secs = start
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    format!(
        "#[Histogram log format version {HDR_LOG_FORMAT_VERSION}]\n\
         #kvmtrace: latency histograms per vCPU and metric, values in nanoseconds\n\
         #[StartTime: {secs:.3} (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
    )
}

/// Writes one interval (the whole run) per vCPU and metric: `irq_to_guest` and each exit
/// reason, tagged `pid<P>.vcpu<N>.tid<T>.<metric>`; values in nanoseconds.
pub fn write_hdr_log(path: &Path, force: bool, engine: &Engine) -> Result<usize, ExportError> {
    let werr = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = create_output(path, force)?;
    let mut buf = hdr_log_header(std::time::SystemTime::now()).into_bytes();
    let mut serializer = V2DeflateSerializer::new();
    let mut n = 0;
    {
        let mut log = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut buf, &mut serializer)
            .map_err(werr)?;
        let mut vcpus: Vec<_> = engine.vcpus().collect();
        vcpus.sort_by_key(|v| (v.tgid, v.vcpu_id, v.tid));
        for v in vcpus {
            let span = v.stats.last_ns.saturating_sub(v.stats.first_ns);
            let dur = std::time::Duration::from_nanos(span);
            let prefix = format!(
                "pid{}.vcpu{}.tid{}",
                v.tgid,
                v.vcpu_id.map_or("unknown".into(), |i| i.to_string()),
                v.tid
            );
            let mut metrics = vec![(format!("{prefix}.irq_to_guest"), &v.stats.irq_to_guest)];
            let mut exits: Vec<_> = v.stats.exits.iter().collect();
            exits.sort_by_key(|((isa, code), _)| (*isa, *code));
            for ((isa, code), h) in exits {
                let name = exit_reason_label(u64::from(*isa), u64::from(*code));
                metrics.push((format!("{prefix}.exit.{}", tag_text(&name)), &h.latency));
            }
            for (tag, h) in metrics {
                if h.is_empty() {
                    continue;
                }
                let t = Tag::new(&tag).ok_or_else(|| ExportError::Histogram {
                    path: path.to_path_buf(),
                    tag: tag.clone(),
                    what: "not a valid tag".into(),
                })?;
                log.write_histogram(h, std::time::Duration::ZERO, dur, Some(t))
                    .map_err(|e| ExportError::Histogram {
                        path: path.to_path_buf(),
                        tag: tag.clone(),
                        what: format!("{e:?}"),
                    })?;
                n += 1;
            }
        }
    }
    file.write_all(&buf).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(n)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The worst samples as Chrome trace events: per sample a slice for the whole window on the
/// vCPU thread's track, nested slices for its cause segments, and instant events for the
/// tracepoints inside it (on the track of the thread they fired in).
pub fn chrome_trace(engine: &Engine) -> Value {
    let mut events: Vec<Value> = Vec::new();
    let mut named = std::collections::HashSet::new();
    for (n, s) in engine.worst().iter().enumerate() {
        let vcpu = engine.vcpu(s.tid).and_then(|v| v.vcpu_id);
        if named.insert(u64::from(s.tgid)) {
            let name = engine
                .threads()
                .vm_name(s.tgid)
                .map_or_else(|| format!("VMM {}", s.tgid), str::to_string);
            events.push(json!({"ph": "M", "name": "process_name", "pid": s.tgid,
                "args": {"name": name}}));
        }
        if named.insert(u64::from(s.tid) << 32) {
            let name = vcpu.map_or_else(
                || format!("vCPU ? (tid {})", s.tid),
                |v| format!("vCPU {v} (tid {})", s.tid),
            );
            events.push(json!({"ph": "M", "name": "thread_name", "pid": s.tgid,
                "tid": s.tid, "args": {"name": name}}));
        }
        let causes: serde_json::Map<String, Value> = s
            .causes
            .iter()
            .map(|(c, ns)| (c.label(engine.threads().names()), json!(ns)))
            .collect();
        events.push(json!({
            "ph": "X", "cat": "irq_to_guest",
            "name": format!("#{} interrupt-to-guest {:.1} us", n + 1, us(s.total_ns)),
            "pid": s.tgid, "tid": s.tid,
            "ts": us(s.open_ns), "dur": us(s.total_ns),
            "args": {"causes_ns": causes, "opened_by": format!("{:?}", s.opened_by),
                "end_marker": s.end_marker.name()},
        }));
        for (start, end, cause) in &s.segments {
            events.push(json!({
                "ph": "X", "cat": "cause", "name": cause.label(engine.threads().names()),
                "pid": s.tgid, "tid": s.tid,
                "ts": us(*start), "dur": us(end - start),
            }));
        }
        for ev in &s.events {
            let (name, fields) = describe(ev);
            let tid = if ev.tid == 0 { s.tid } else { ev.tid };
            events.push(json!({
                "ph": "i", "s": "t", "cat": "event", "name": name,
                "pid": s.tgid, "tid": tid, "ts": us(ev.ts_ns),
                "args": {"cpu": ev.cpu, "fields": fields},
            }));
        }
    }
    json!({"traceEvents": events, "displayTimeUnit": "ns",
        "otherData": {"tool": "kvmtrace", "samples": engine.worst().len()}})
}

pub fn write_chrome_trace(path: &Path, force: bool, engine: &Engine) -> Result<usize, ExportError> {
    let werr = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = create_output(path, force)?;
    let v = chrome_trace(engine);
    let n = v["traceEvents"].as_array().map_or(0, |a| a.len());
    serde_json::to_writer(&mut file, &v).map_err(|e| werr(e.into()))?;
    file.sync_all().map_err(werr)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use kvmtrace_common::{ev, Comm, Event, Origin, Payload};

    use super::*;
    use crate::engine::EngineConfig;

    /// A halted vCPU woken by a PIC interrupt that reaches the guest 20 µs later.
    fn engine_with_a_sample() -> Engine {
        let at = |ts: u64, tid: u32, p: Payload| {
            p.event(Origin {
                ts_ns: ts,
                tid,
                tgid: 100,
                cpu: 0,
            })
        };
        let switch = |prev: u64, state: u64, next: u64| {
            Payload::SchedSwitch(ev::SchedSwitch {
                prev_pid: prev,
                prev_state: state,
                next_pid: next,
                next_comm: Comm::new("x"),
            })
        };
        let t = 1_000_000;
        let events: Vec<Event> = vec![
            at(
                0,
                101,
                Payload::ThreadInfo(ev::ThreadInfo::thread(Some(0), "CPU 0/KVM")),
            ),
            at(t / 2, 101, switch(101, 1, 0)),
            at(
                t,
                110,
                Payload::KvmSetIrq(ev::KvmSetIrq {
                    gsi: 0,
                    level: 1,
                    irq_source_id: Some(0),
                }),
            ),
            at(
                t + 1,
                110,
                Payload::KvmPicSetIrq(ev::KvmPicSetIrq::default()),
            ),
            at(
                t + 2,
                110,
                Payload::SchedWakeup(ev::SchedWakeup {
                    pid: 101,
                    target_cpu: Some(0),
                    prio: Some(120),
                    comm: Comm::default(),
                }),
            ),
            at(t + 3, 0, switch(0, 0, 101)),
            at(
                t + 4,
                101,
                Payload::KvmVcpuWakeup(ev::KvmVcpuWakeup {
                    ns: 1,
                    waited: 1,
                    valid: Some(1),
                }),
            ),
            at(
                t + 20_000,
                101,
                Payload::KvmPio(ev::KvmPio {
                    rw: 1,
                    port: 0xe2,
                    size: 2,
                    val: Some(1),
                }),
            ),
            at(t + 30_000, 0, Payload::Drops(ev::Drops::default())),
        ];
        let mut e = Engine::new(EngineConfig::default());
        for ev in &events {
            e.push(ev);
        }
        e.flush();
        e
    }

    #[test]
    fn the_hdr_log_says_its_format_version_and_reads_back() {
        let engine = engine_with_a_sample();
        let p = std::env::temp_dir().join(format!("kvmtrace-hlog-{}", std::process::id()));
        let n = write_hdr_log(&p, true, &engine).unwrap();
        assert_eq!(n, 1, "one irq_to_guest histogram");
        let text = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let first = text.split(|b| *b == b'\n').next().unwrap();
        assert_eq!(first, b"#[Histogram log format version 1.3]");
        // The Rust reader skips the version line and the legend, reads the start time and
        // the interval.
        let entries: Vec<LogEntry> = IntervalLogIterator::new(&text)
            .collect::<Result<_, _>>()
            .expect("the log parses");
        assert!(matches!(entries[0], LogEntry::StartTime(_)), "{entries:?}");
        let LogEntry::Interval(h) = &entries[1] else {
            panic!("{entries:?}");
        };
        assert_eq!(
            h.tag().map(|t| t.as_str()),
            Some("pid100.vcpu0.tid101.irq_to_guest")
        );
        assert_eq!(entries.len(), 2);
    }
}
