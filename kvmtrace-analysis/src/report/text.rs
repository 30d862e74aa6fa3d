//! The report as text: rtla-style breakdowns, one section after another.

use std::fmt::Write as _;

use super::{latency, Report};
use crate::host::cpu_list;

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

impl Report {
    /// The human-readable report: where it comes from, the events, a table of the vCPUs,
    /// each vCPU's breakdowns, the worst samples, and the demo's ground truth.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.source_text(&mut s);
        self.events_text(&mut s);
        self.summary_table(&mut s);
        self.vcpus_text(&mut s);
        latency::worst_text(&mut s, &self.worst, 3);
        self.attribution_text(&mut s);
        self.demo_text(&mut s);
        s
    }

    /// The capture or text trace, its completeness, the host and the probes.
    fn source_text(&self, s: &mut String) {
        let c = &self.capture;
        let state = if c.complete {
            format!(
                "complete, stopped by {}",
                c.stop_reason.map_or("?", |r| r.name())
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
            if st.continued > 0 {
                let _ = writeln!(
                    s,
                    "  {} lines continue the record before them (wrapped or split records)",
                    st.continued
                );
            }
            for (what, n) in &st.notes {
                let _ = writeln!(s, "  note: {n} x {what}");
            }
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
            let btf = if c.probes_btf > 0 {
                format!(" ({} as BTF tracepoints)", c.probes_btf)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "probes: {} attached{btf}, {} unavailable",
                c.probes_attached,
                c.probes_unavailable.len()
            );
        }
        for u in &c.probes_unavailable {
            let _ = writeln!(s, "  unavailable {}: {}", u.tracepoint, u.reason);
        }
        if let Some(st) = &self.stacks {
            let profile = if st.hz > 0 {
                format!("cpu-clock profile at {} Hz", st.hz)
            } else {
                "no profile".to_string()
            };
            let _ = writeln!(
                s,
                "stacks: {} of {} stack programs, {profile}; {} stacks at events, {} profile ticks ({} in user space), {} lost; {} stacks and {} functions defined (report --folded / --flamegraph)",
                st.programs_attached,
                st.programs,
                st.at_events,
                st.samples,
                st.user,
                st.lost,
                st.stacks,
                st.symbols
            );
            if let Some(p) = &st.symbols_problem {
                let _ = writeln!(s, "  frames are not named: {p}");
            }
        }
        self.targets_text(s);
        self.tracer_text(s);
    }

    /// `-p` pids that ran no vCPU, VMs that exited.
    fn targets_text(&self, s: &mut String) {
        for pid in &self.targets.without_vcpu {
            let _ = writeln!(s, "warning: pid {pid} ran no vCPU during the capture");
        }
        for e in &self.targets.exited {
            let _ = writeln!(
                s,
                "VM pid {} ({}) exited {:.3} s into the capture; its samples are kept",
                e.pid,
                e.vm_name,
                e.after_ns as f64 / 1e9
            );
        }
    }

    /// kvmtrace's own cost: its CPU time, where it ran, what it took from the vCPUs.
    fn tracer_text(&self, s: &mut String) {
        let Some(t) = &self.tracer else {
            return;
        };
        let cpu = match (t.cpu_ns, t.cpu_pct) {
            (Some(ns), Some(p)) => format!(
                "{:.3} s of CPU over {:.1} s ({p:.1} % of one CPU)",
                ns as f64 / 1e9,
                t.wall_ns as f64 / 1e9
            ),
            (Some(ns), None) => format!("{:.3} s of CPU", ns as f64 / 1e9),
            _ => "CPU time not recorded".to_string(),
        };
        let place = match &t.placement {
            Some(p) if p.cpus.is_empty() => format!(", threads not placed ({})", p.how),
            Some(p) => {
                let vcpus = if p.vcpu_cpus.is_empty() {
                    String::new()
                } else {
                    format!("; vCPUs on {}", cpu_list(&p.vcpu_cpus))
                };
                format!(", threads on CPU {} ({}{vcpus})", cpu_list(&p.cpus), p.how)
            }
            None => String::new(),
        };
        let _ = writeln!(s, "kvmtrace itself: {cpu}{place}");
        if let Some(note) = t.placement.as_ref().and_then(|p| p.note.as_ref()) {
            let _ = writeln!(s, "  {note}");
        }
        let _ = writeln!(
            s,
            "  interrupt-to-guest time it took from the vCPUs (tracer): {} us",
            us(t.irq_to_guest_ns)
        );
    }

    /// Event counts and drops.
    fn events_text(&self, s: &mut String) {
        let c = &self.capture;
        let e = &self.events;
        let _ = writeln!(
            s,
            "events: {} in {:.3} s, dropped {} (in the kernel {}, undecodable {}){}",
            e.total,
            c.duration_ns as f64 / 1e9,
            e.dropped,
            e.dropped_kernel,
            e.dropped_userspace,
            if e.dropped > 0 { "  <-- DROPS" } else { "" }
        );
        if e.not_run > 0 {
            let _ = writeln!(
                s,
                "  {} tracepoint hits the kernel ran no kvmtrace program for: another BPF \
                 program or a map syscall held that CPU (most on CPUs kvmtrace ignores)",
                e.not_run
            );
        }
        if e.unknown_kinds > 0 {
            let _ = writeln!(s, "  {} records of unknown kinds skipped", e.unknown_kinds);
        }
        for (k, n) in &e.by_kind {
            let _ = writeln!(s, "  {k:<28} {n:>10}");
        }
    }

    /// One line per vCPU: its latency percentiles and top cause.
    fn summary_table(&self, s: &mut String) {
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
    }

    /// Each vCPU's breakdowns and event counts.
    fn vcpus_text(&self, s: &mut String) {
        for v in &self.vcpus {
            let id = v.vcpu.map_or("?".to_string(), |n| n.to_string());
            let _ = writeln!(
                s,
                "\nvCPU {id}  pid {} ({}) tid {} \"{}\"  {} events",
                v.pid, v.vm_name, v.tid, v.comm, v.events
            );
            latency::vcpu_text(s, &v.latency);
            let _ = writeln!(s, "  events:");
            for (k, n) in &v.events_by_kind {
                let _ = writeln!(s, "    {k:<28} {n:>10}");
            }
        }
    }

    /// What could not be attributed.
    fn attribution_text(&self, s: &mut String) {
        let a = &self.attribution;
        if a.incomplete + a.late_events + a.unresolved_raises > 0 {
            let _ = writeln!(
                s,
                "\nattribution: {} samples, {} incomplete (events lost or state unknown), {} late events, {} interrupts with no known target vCPU",
                a.samples, a.incomplete, a.late_events, a.unresolved_raises
            );
        }
        if a.wakeup_only > 0 {
            let _ = writeln!(
                s,
                "coverage: {} of {} deliveries had a raise seen; {} were first seen as the wake-up of a halted vCPU (posted interrupts, IPI virtualization or AVIC: no raise tracepoint)",
                a.with_raise,
                a.with_raise + a.wakeup_only,
                a.wakeup_only
            );
        }
        if a.overlays_cleared + a.cpu_out_of_range > 0 {
            let _ = writeln!(
                s,
                "input problems: {} host interrupt handlers whose exit was lost (their windows incomplete), {} events with an impossible CPU number skipped",
                a.overlays_cleared, a.cpu_out_of_range
            );
        }
    }

    /// The demo VMM's own measurement.
    fn demo_text(&self, s: &mut String) {
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
    }
}
