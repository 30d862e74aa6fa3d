//! The attribution engine's model as report sections (JSON keys in docs/report-schema.md)
//! and as rtla-style text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use kvmtrace_common::{Event, FieldValue};
use serde::Serialize;

use crate::engine::fxhash::FxHashMap;
use crate::engine::{is_halt_exit, Cause, Engine, Sample};
use crate::names::{exit_reason_label, isa_name};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VcpuLatency {
    pub exits: Exits,
    /// Exits were counted in the kernel and only those near interrupt windows traced: the
    /// guest / exit-handling split of `out_of_guest_ns` is approximate outside windows.
    /// Absent in JSON when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub state_split_approximate: bool,
    pub irq_to_guest: IrqToGuest,
    /// State -> ns over the whole run (the states of docs/attribution.md).
    pub out_of_guest_ns: BTreeMap<String, u64>,
    /// Time the vCPU was followed (first to last event).
    pub wall_ns: u64,
    /// Share of `wall_ns` outside the guest (`guest` and `kvm_run` count as inside).
    pub out_of_guest_pct: f64,
    /// `kvm_wait_lapic_expire`: the LAPIC timer's lateness at entry as the guest sees it
    /// (TSC-deadline and hv-timer modes only).
    pub timer_lateness: TimerLateness,
}

/// What `kvm_wait_lapic_expire` said (lapic.c `__kvm_wait_lapic_expire`: `delta` =
/// guest TSC - deadline, in guest TSC cycles).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimerLateness {
    /// Expiries KVM delivered early (it then waits, up to `timer_advance_ns`).
    pub early: u64,
    /// Late ones and their lateness in guest TSC cycles.
    pub late: u64,
    pub late_p50_cycles: u64,
    pub late_p99_cycles: u64,
    pub late_max_cycles: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Exits {
    pub by_reason: Vec<ExitReason>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExitReason {
    pub reason: String,
    pub isa: String,
    pub code: u32,
    /// A halt (HLT): the exit->entry time is the guest idling, not exit handling; the text
    /// report lists these apart.
    pub idle: bool,
    /// Every `kvm_exit` with this reason (what `perf kvm stat` counts).
    pub count: u64,
    /// Exits whose `kvm_entry` was seen: the latency percentiles are theirs.
    pub measured: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Where the figures come from: `trace` (the exits in the stream; percentiles within
    /// 1 %) or `kernel` (the in-kernel histograms, every exit; percentiles are bucket
    /// midpoints, within 6.25 %, the maximum exact). Absent in JSON for `trace`.
    #[serde(skip_serializing_if = "is_trace")]
    pub source: &'static str,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IrqToGuest {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// How windows were closed (the most used marker; see `end_markers` for all).
    pub end_marker: Option<String>,
    pub end_markers: BTreeMap<String, u64>,
    /// Samples discarded because events were lost or the state was unknown.
    pub incomplete: u64,
    /// The same vector raised again while it was still pending (one delivery for both).
    pub coalesced: u64,
    /// Complete samples by what opened them (`SetIrq`, `MsiSetIrq`, `ApicAcceptIrq`, `Ipi`,
    /// `LapicTimer`, `PreemptionTimer`, `Wakeup`).
    pub opened_by: BTreeMap<String, u64>,
    /// Raises not followed because the vCPU had 16 windows open already.
    pub windows_overflow: u64,
    /// Cause -> total ns over all complete samples; sums to the samples' total.
    pub causes_ns: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CauseNs {
    pub cause: String,
    pub ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEvent {
    /// Time since the window opened.
    pub offset_ns: i64,
    pub cpu: u32,
    pub tid: u32,
    pub event: String,
    pub fields: String,
}

impl TimelineEvent {
    /// One line of a timeline: `+12.345 us cpu1  tid 4242    kvm_pio rw=1 port=226 ...`.
    pub fn line(&self) -> String {
        format!(
            "{:>+11.3} us cpu{:<3} tid {:<7} {} {}",
            self.offset_ns as f64 / 1000.0,
            self.cpu,
            self.tid,
            self.event,
            self.fields
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorstSample {
    pub vcpu: Option<u32>,
    pub tid: u32,
    pub pid: u32,
    pub open_ns: u64,
    pub total_ns: u64,
    pub opened_by: String,
    pub end_marker: String,
    pub causes: Vec<CauseNs>,
    pub events: Vec<TimelineEvent>,
    pub events_truncated: u32,
    /// With kernel stacks: the stack most of the dominant cause's time went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<super::stacks::SampleStack>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttributionInfo {
    pub samples: u64,
    pub incomplete: u64,
    /// Events that arrived later than the reorder window (processed at the current time).
    pub late_events: u64,
    /// Interrupts whose target vCPU could not be identified.
    pub unresolved_raises: u64,
    /// Of the samples closed (complete or not), how many had a raise seen before them, and
    /// how many only a wake-up of a halted vCPU (VT-d posted interrupts, IPI
    /// virtualization, AVIC doorbells have no raise tracepoint).
    pub with_raise: u64,
    pub wakeup_only: u64,
    /// Host interrupt work found open where it could no longer be (its exit was lost); the
    /// windows it touched are incomplete.
    pub overlays_cleared: u64,
    /// Events with a CPU number beyond what kvmtrace follows (4096), skipped.
    pub cpu_out_of_range: u64,
}

fn is_trace(source: &&'static str) -> bool {
    *source == "trace"
}

fn q(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

fn labelled(map: &FxHashMap<Cause, u64>, comms: &HashMap<u32, String>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (c, ns) in map {
        *out.entry(c.label(comms)).or_default() += ns;
    }
    out
}

/// The model of vCPU thread `tid`, if the engine followed it.
pub fn vcpu_latency(engine: &Engine, tid: u32) -> Option<VcpuLatency> {
    let v = engine.vcpu(tid)?;
    let st = &v.stats;
    let mut by_reason: Vec<ExitReason> = st
        .exits
        .iter()
        .map(|(&(isa, code), st)| {
            let (count, measured, p50_ns, p99_ns, max_ns, source) = if st.kernel.is_empty() {
                (
                    st.count,
                    st.latency.len(),
                    q(&st.latency, 0.5),
                    q(&st.latency, 0.99),
                    st.latency.max(),
                    "trace",
                )
            } else {
                // Counted in the kernel at each entry: every exit, each with its latency.
                let k = &st.kernel;
                let (p50, p99) = (k.quantile(0.5), k.quantile(0.99));
                (k.count, k.count, p50, p99, k.max_ns, "kernel")
            };
            ExitReason {
                reason: exit_reason_label(u64::from(isa), u64::from(code)),
                isa: isa_name(u64::from(isa)),
                code,
                idle: is_halt_exit(isa, code),
                count,
                measured,
                p50_ns,
                p99_ns,
                max_ns,
                source,
            }
        })
        .collect();
    by_reason.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
    let h = &st.irq_to_guest;
    let end_markers: BTreeMap<String, u64> = st
        .end_markers
        .iter()
        .map(|(m, n)| (m.name().to_string(), *n))
        .collect();
    let end_marker = st
        .end_markers
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, _)| m.name().to_string());
    let wall: u64 = st.state_ns.values().sum();
    let out: u64 = st
        .state_ns
        .iter()
        .filter(|(c, _)| c.out_of_guest())
        .map(|(_, ns)| ns)
        .sum();
    Some(VcpuLatency {
        exits: Exits { by_reason },
        state_split_approximate: st.exits_in_kernel,
        irq_to_guest: IrqToGuest {
            count: h.len(),
            p50_ns: q(h, 0.5),
            p99_ns: q(h, 0.99),
            p999_ns: q(h, 0.999),
            max_ns: if h.is_empty() { 0 } else { h.max() },
            end_marker,
            end_markers,
            incomplete: st.incomplete,
            coalesced: st.coalesced,
            opened_by: st
                .opened_by
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            windows_overflow: st.windows_overflow,
            causes_ns: labelled(&st.irq_causes, engine.threads().names()),
        },
        out_of_guest_ns: labelled(&st.state_ns, engine.threads().names()),
        wall_ns: wall,
        timer_lateness: {
            let h = &st.timer_late_cycles;
            TimerLateness {
                early: st.timer_early,
                late: h.len(),
                late_p50_cycles: q(h, 0.5),
                late_p99_cycles: q(h, 0.99),
                late_max_cycles: if h.is_empty() { 0 } else { h.max() },
            }
        },
        out_of_guest_pct: if wall > 0 {
            100.0 * out as f64 / wall as f64
        } else {
            0.0
        },
    })
}

/// An event's name and its fields as `name=value` text.
pub fn describe(e: &Event) -> (String, String) {
    let Ok(kind) = e.kind() else {
        return (format!("kind {}", e.kind), String::new());
    };
    if let Some(o) = e.get::<kvmtrace_common::ev::KvmOther>() {
        // A KVM tracepoint without a kind of its own: its name, and the numbers kept.
        let name = o.event().map_or_else(
            || format!("kvm_other#{}", o.name_id),
            |k| k.name.to_string(),
        );
        let mut fields = String::new();
        for (n, v) in [("a", o.a), ("b", o.b), ("c", o.c)] {
            if let Some(v) = v {
                if !fields.is_empty() {
                    fields.push(' ');
                }
                let _ = if v > 0xffff {
                    write!(fields, "{n}={v:#x}")
                } else {
                    write!(fields, "{n}={v}")
                };
            }
        }
        return (name, fields);
    }
    let mut fields = String::new();
    // Absent fields show as 0, as the kernel's own record would.
    for f in e.fields() {
        if !fields.is_empty() {
            fields.push(' ');
        }
        let name = f.name;
        let _ = match f.value {
            FieldValue::Comm(c) => write!(fields, "{name}={}", c.to_string_lossy()),
            // A signed field is sign-extended: -1 (kvm_eoi's vector when no ISR bit is
            // set, lapic.c apic_set_eoi) shows as -1. The top 64 KiB of the address space
            // hold no kernel address, so no pointer is shown negative.
            FieldValue::Num(v) if v >= 0xffff_ffff_ffff_0000 => {
                write!(fields, "{name}={}", v as i64)
            }
            FieldValue::Num(v) if v > 0xffff => write!(fields, "{name}={v:#x}"),
            FieldValue::Num(v) => write!(fields, "{name}={v}"),
        };
    }
    (kind.name().to_string(), fields)
}

/// The exit table: every exit counted, latencies from those whose entry was seen; says so
/// when no exit was seen, or none with its entry.
fn exits_text(out: &mut String, exits: &Exits) {
    let count: u64 = exits.by_reason.iter().map(|e| e.count).sum();
    let measured: u64 = exits.by_reason.iter().map(|e| e.measured).sum();
    if count == 0 {
        let _ = writeln!(
            out,
            "  exits: none seen (kvm_exit/kvm_entry do not fire on this kernel)"
        );
        return;
    }
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    if measured == 0 {
        let _ = writeln!(
            out,
            "  exits: {count} exit{}, none with its entry in the trace (no exit latency)",
            plural(count)
        );
    } else if measured < count {
        let _ = writeln!(
            out,
            "  exits: {count} exit{}, {measured} with their entry (latencies from those)",
            plural(count)
        );
    }
    if exits.by_reason.iter().any(|e| e.source == "kernel") {
        let _ = writeln!(
            out,
            "  exits: {count} exit{} counted in the kernel (percentiles within 6.25 %, max exact)",
            plural(count)
        );
    }
    let _ = writeln!(
        out,
        "  {:<28} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "exit reason", "isa", "count", "measured", "p50 us", "p99 us", "max us"
    );
    // Halts last and apart: their exit->entry time is the guest idling.
    let rows = exits
        .by_reason
        .iter()
        .filter(|e| !e.idle)
        .chain(exits.by_reason.iter().filter(|e| e.idle));
    for e in rows {
        let _ = writeln!(
            out,
            "  {:<28} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}{}",
            e.reason,
            e.isa,
            e.count,
            e.measured,
            us(e.p50_ns),
            us(e.p99_ns),
            us(e.max_ns),
            if e.idle {
                "  (idle: the guest halted)"
            } else {
                ""
            }
        );
    }
}

fn worst_sample(engine: &Engine, s: &Sample) -> WorstSample {
    let v = engine.vcpu(s.tid);
    WorstSample {
        vcpu: v.and_then(|v| v.vcpu_id),
        tid: s.tid,
        pid: s.tgid,
        open_ns: s.open_ns,
        total_ns: s.total_ns,
        opened_by: s.opened_by.name().to_string(),
        end_marker: s.end_marker.name().to_string(),
        causes: s
            .causes
            .iter()
            .map(|(c, ns)| CauseNs {
                cause: c.label(engine.threads().names()),
                ns: *ns,
            })
            .collect(),
        events: s
            .events
            .iter()
            .map(|ev| {
                let (event, fields) = describe(ev);
                TimelineEvent {
                    offset_ns: ev.ts_ns as i64 - s.open_ns as i64,
                    cpu: ev.cpu,
                    tid: ev.tid,
                    event,
                    fields,
                }
            })
            .collect(),
        events_truncated: s.events_dropped,
        stack: super::stacks::sample_stack(engine, s),
    }
}

/// The worst samples, largest first.
pub fn worst_samples(engine: &Engine) -> Vec<WorstSample> {
    engine
        .worst()
        .iter()
        .map(|s| worst_sample(engine, s))
        .collect()
}

pub fn attribution_info(engine: &Engine) -> AttributionInfo {
    let cov = engine.coverage();
    let mut info = AttributionInfo {
        late_events: engine.late_events(),
        unresolved_raises: engine.unresolved_raises(),
        with_raise: cov.with_raise,
        wakeup_only: cov.without_raise,
        overlays_cleared: engine.overlays_cleared(),
        cpu_out_of_range: engine.cpu_out_of_range(),
        ..Default::default()
    };
    for v in engine.vcpus() {
        info.samples += v.stats.irq_to_guest.len();
        info.incomplete += v.stats.incomplete;
    }
    info
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// rtla-style lines: component, µs, share of the total; the shares add up to 100 %.
pub fn breakdown_lines(out: &mut String, indent: &str, causes: &[(String, u64)]) {
    let total: u64 = causes.iter().map(|c| c.1).sum();
    for (name, ns) in causes {
        let pct = if total > 0 {
            100.0 * *ns as f64 / total as f64
        } else {
            0.0
        };
        let _ = writeln!(out, "{indent}{name:<32} {:>12} us {pct:>6.1} %", us(*ns));
    }
    let _ = writeln!(
        out,
        "{indent}{:<32} {:>12} us {:>6.1} %",
        "total",
        us(total),
        100.0
    );
}

/// The latency part of a vCPU's text report.
pub fn vcpu_text(out: &mut String, l: &VcpuLatency) {
    let i = &l.irq_to_guest;
    if i.count == 0 && i.incomplete == 0 {
        let _ = writeln!(out, "  interrupt-to-guest: no samples");
    } else {
        let _ = writeln!(
            out,
            "  interrupt-to-guest: {} samples (closed at {}), p50 {} us, p99 {} us, p99.9 {} us, max {} us; {} incomplete, {} coalesced",
            i.count,
            i.end_marker.as_deref().unwrap_or("-"),
            us(i.p50_ns),
            us(i.p99_ns),
            us(i.p999_ns),
            us(i.max_ns),
            i.incomplete,
            i.coalesced
        );
        let mut causes: Vec<(String, u64)> =
            i.causes_ns.iter().map(|(k, v)| (k.clone(), *v)).collect();
        causes.sort_by_key(|c| std::cmp::Reverse(c.1));
        if !causes.is_empty() {
            let _ = writeln!(out, "  where the latency went (all samples):");
            breakdown_lines(out, "    ", &causes);
        }
    }
    exits_text(out, &l.exits);
    let t = &l.timer_lateness;
    if t.early + t.late > 0 {
        let _ = writeln!(
            out,
            "  LAPIC timer at entry (kvm_wait_lapic_expire): {} early, {} late (p50 {} p99 {} max {} guest TSC cycles)",
            t.early, t.late, t.late_p50_cycles, t.late_p99_cycles, t.late_max_cycles
        );
    }
    let mut states: Vec<(String, u64)> = l
        .out_of_guest_ns
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    states.sort_by_key(|c| std::cmp::Reverse(c.1));
    if !states.is_empty() {
        let _ = writeln!(
            out,
            "  time of the run by state ({:.1} % outside the guest):",
            l.out_of_guest_pct
        );
        if l.state_split_approximate {
            let _ = writeln!(
                out,
                "    (guest vs exit handling approximate outside interrupt windows: exits there were counted in the kernel, not traced)"
            );
        }
        breakdown_lines(out, "    ", &states);
    }
}

/// A sample's dominant stack: what it is, then its frames, innermost first.
pub fn stack_text(out: &mut String, indent: &str, st: &super::stacks::SampleStack) {
    let _ = writeln!(
        out,
        "{indent}stack of {} ({}{}, {} of its {} us):",
        st.cause,
        st.source,
        st.task
            .as_deref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default(),
        us(st.ns),
        us(st.cause_ns)
    );
    for f in &st.frames {
        let _ = writeln!(out, "{indent}  {f}");
    }
}

/// The worst samples, each with its breakdown; the first `timelines` with their events.
pub fn worst_text(out: &mut String, worst: &[WorstSample], timelines: usize) {
    if worst.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nworst interrupt-to-guest samples:");
    for (n, w) in worst.iter().enumerate() {
        let id = w.vcpu.map_or("?".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "#{} vCPU {id} (pid {} tid {}): {} us, opened by {}, closed at {}",
            n + 1,
            w.pid,
            w.tid,
            us(w.total_ns),
            w.opened_by,
            w.end_marker
        );
        let causes: Vec<(String, u64)> = w.causes.iter().map(|c| (c.cause.clone(), c.ns)).collect();
        breakdown_lines(out, "    ", &causes);
        if let Some(st) = &w.stack {
            stack_text(out, "    ", st);
        }
        if n < timelines {
            let _ = writeln!(out, "    timeline:");
            for e in &w.events {
                let _ = writeln!(out, "     {}", e.line());
            }
            if w.events_truncated > 0 {
                let _ = writeln!(out, "      ... {} more events", w.events_truncated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kvmtrace_common::{ev, Event, Origin};

    use super::describe;

    #[test]
    fn negative_fields_show_signed_and_addresses_in_hex() {
        let at = Origin::default();
        // kvm_eoi's vector is an int, -1 when no ISR bit is set (lapic.c apic_set_eoi).
        let eoi = Event::new(
            at,
            &ev::KvmEoi {
                apicid: 0,
                vector: -1i64 as u64,
            },
        );
        assert_eq!(
            describe(&eoi),
            ("kvm_eoi".to_string(), "apicid=0 vector=-1".to_string())
        );
        let expire = Event::new(
            at,
            &ev::HrtimerExpireEntry {
                hrtimer: 0xffff_8881_3fd1_e2a0,
                function: 0xffff_ffff_81c3_a4b2,
                now: Some(0x7081),
            },
        );
        assert_eq!(
            describe(&expire).1,
            "hrtimer=0xffff88813fd1e2a0 function=0xffffffff81c3a4b2 now=28801"
        );
    }
}
