//! Kernel stacks in the report (docs/stacks.md): folded stacks weighted by attributed
//! nanoseconds (Brendan Gregg's format, for flamegraph.pl, inferno and speedscope), the
//! same as a flame graph SVG (inferno), and the dominant stack of a worst sample.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use super::export::ExportError;
use crate::capture::create_output;
use crate::engine::fxhash::FxHashMap;
use crate::engine::{
    Cause, Engine, Sample, StackAcc, StackKey, StackRef, StackSource, StackTables,
};

/// What the folded weights are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StackWeight {
    /// Interrupt-to-guest latency of the committed samples, by cause and stack: the
    /// report's "where the latency went", split by stack.
    #[default]
    Latency,
    /// The vCPU threads' whole run by state and stack (guest time as its own line).
    Time,
}

impl StackWeight {
    pub fn name(self) -> &'static str {
        match self {
            StackWeight::Latency => "latency",
            StackWeight::Time => "time",
        }
    }
}

impl std::str::FromStr for StackWeight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latency" => Ok(StackWeight::Latency),
            "time" => Ok(StackWeight::Time),
            _ => Err(format!("unknown stack weight {s:?} (latency or time)")),
        }
    }
}

/// Turns stack keys into frames: symbol names from the capture, markers for the rest.
pub struct Frames<'a> {
    tables: &'a StackTables,
    names: &'a HashMap<u32, String>,
    symbols: FxHashMap<u64, String>,
}

/// A frame name folded output can carry (`;` separates frames).
fn clean(s: &str) -> String {
    s.replace(';', ":")
}

impl<'a> Frames<'a> {
    pub fn new(engine: &'a Engine) -> Frames<'a> {
        Frames {
            tables: engine.stacks().tables(),
            names: engine.threads().names(),
            symbols: FxHashMap::default(),
        }
    }

    /// The kernel function `ip` is in, or the address when the capture names none.
    fn symbol(&mut self, ip: u64) -> String {
        let tables = self.tables;
        self.symbols
            .entry(ip)
            .or_insert_with(|| match tables.symbol(ip) {
                Some(s) => clean(&s),
                None => format!("{ip:#x}"),
            })
            .clone()
    }

    /// A task as a frame: `[task COMM:PID]`.
    fn task(&self, tid: u32) -> String {
        match (tid, self.names.get(&tid)) {
            (0, _) => "[task idle]".to_string(),
            (_, Some(c)) if !c.is_empty() => format!("[task {}:{tid}]", clean(c)),
            _ => format!("[task pid:{tid}]"),
        }
    }

    /// The kernel frames of a stack, innermost first.
    pub fn kernel(&mut self, stack: StackRef) -> Vec<String> {
        match stack {
            StackRef::User => vec!["[user]".to_string()],
            StackRef::Lost(_) => vec!["[stack lost]".to_string()],
            StackRef::Id(id) => match self.tables.frames(id) {
                Some(f) => f.iter().map(|&ip| self.symbol(ip)).collect(),
                None => vec![format!("[stack {id} not in capture]")],
            },
        }
    }

    /// The frames below `cause` for `key`, root first (a task the cause names is not
    /// repeated).
    pub fn below_cause(&mut self, cause: Cause, key: StackKey) -> Vec<String> {
        match key {
            StackKey::Guest => Vec::new(),
            StackKey::NotSampled => vec!["[not sampled]".to_string()],
            StackKey::NoData => vec!["[no stack data]".to_string()],
            StackKey::Stack {
                source,
                stack,
                task,
            } => {
                let mut out = vec![source.marker().to_string()];
                if let Some(t) = task.filter(|&t| !names_task(cause, t)) {
                    out.push(self.task(t));
                }
                let mut k = self.kernel(stack);
                k.reverse();
                out.extend(k);
                out
            }
        }
    }
}

/// Does `cause` name task `tid` (`preempted:COMM:TID`)?
fn names_task(cause: Cause, tid: u32) -> bool {
    matches!(cause, Cause::Preempted { pid } if pid == tid)
}

/// How folded stacks are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fold {
    pub weight: StackWeight,
    /// Keep the time of segments no profile tick fell in as `[not sampled]`, instead of
    /// spreading it over the same cause's sampled stacks in proportion (the profile's
    /// estimate of where that time went, docs/stacks.md).
    pub exact: bool,
}

/// Adds without overflowing (a corrupt input's times can be anything).
fn add(m: &mut FxHashMap<Cause, u64>, c: Cause, ns: u64) {
    let t = m.entry(c).or_default();
    *t = t.saturating_add(ns);
}

/// Spreads each cause's `[not sampled]` time over that cause's sampled stacks, in
/// proportion to their time; the total per cause is unchanged.
fn spread_unsampled(entries: &mut Vec<(Cause, StackKey, u64)>) {
    let mut sampled: FxHashMap<Cause, u64> = FxHashMap::default();
    let mut unsampled: FxHashMap<Cause, u64> = FxHashMap::default();
    for &(c, k, ns) in entries.iter() {
        match k {
            StackKey::Stack {
                source: StackSource::Sampled,
                ..
            } => add(&mut sampled, c, ns),
            StackKey::NotSampled => add(&mut unsampled, c, ns),
            _ => {}
        }
    }
    entries.retain(|&(c, k, _)| !(k == StackKey::NotSampled && sampled.contains_key(&c)));
    let mut given: FxHashMap<Cause, u64> = FxHashMap::default();
    for (c, k, ns) in entries.iter_mut() {
        let (Some(&total), Some(&extra)) = (sampled.get(c), unsampled.get(c)) else {
            continue;
        };
        if let StackKey::Stack {
            source: StackSource::Sampled,
            ..
        } = k
        {
            let part = (u128::from(extra) * u128::from(*ns) / u128::from(total.max(1))) as u64;
            *ns = ns.saturating_add(part);
            add(&mut given, *c, part);
        }
    }
    // Rounding: what is left of a cause's spread goes to its largest sampled stack.
    for (c, extra) in unsampled {
        let left = extra.saturating_sub(given.get(&c).copied().unwrap_or(0));
        if left == 0 || !sampled.contains_key(&c) {
            continue;
        }
        let largest = entries
            .iter_mut()
            .filter(|e| {
                e.0 == c
                    && matches!(
                        e.1,
                        StackKey::Stack {
                            source: StackSource::Sampled,
                            ..
                        }
                    )
            })
            .max_by_key(|e| (e.2, std::cmp::Reverse(e.1)));
        if let Some(e) = largest {
            e.2 = e.2.saturating_add(left);
        }
    }
}

/// (cause, key, ns) of every vCPU for `weight`, with what the split lacks per cause (time
/// before the first stack record) as `[no stack data]`, so the weights add up to the
/// report's figures.
fn weighted(engine: &Engine, fold: Fold) -> Vec<(Cause, StackKey, u64)> {
    let mut all = Vec::new();
    for v in engine.vcpus() {
        let mut out = Vec::new();
        let (causes, acc): (&FxHashMap<Cause, u64>, &StackAcc) = match fold.weight {
            StackWeight::Latency => (&v.stats.irq_causes, &v.stats.irq_stack_ns),
            StackWeight::Time => (&v.stats.state_ns, &v.stats.stack_ns),
        };
        let mut have: FxHashMap<Cause, u64> = FxHashMap::default();
        for (c, k, ns) in acc.iter() {
            add(&mut have, c, ns);
            out.push((c, k, ns));
        }
        for (&c, &ns) in causes {
            let got = have.get(&c).copied().unwrap_or(0);
            if ns > got {
                out.push((c, StackKey::NoData, ns - got));
            }
        }
        if !fold.exact {
            spread_unsampled(&mut out);
        }
        all.append(&mut out);
    }
    all
}

/// The folded lines for `weight`: `frames` (root first, `;`-separated, the cause first) ->
/// nanoseconds, sorted by line.
pub fn folded(engine: &Engine, fold: Fold) -> BTreeMap<String, u64> {
    let names = engine.threads().names();
    let mut frames = Frames::new(engine);
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for (cause, key, ns) in weighted(engine, fold) {
        if ns == 0 {
            continue;
        }
        let mut line = clean(&cause.label(names));
        for f in frames.below_cause(cause, key) {
            line.push(';');
            line.push_str(&f);
        }
        let w = lines.entry(line).or_default();
        *w = w.saturating_add(ns);
    }
    lines
}

/// What a folded or flame graph export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folded {
    pub lines: usize,
    pub total_ns: u64,
}

fn require_stacks(path: &Path, engine: &Engine) -> Result<(), ExportError> {
    if engine.stacks().is_on() {
        Ok(())
    } else {
        Err(ExportError::NoStacks {
            path: path.to_path_buf(),
        })
    }
}

/// Writes the folded lines (`FRAMES NS` per line) to `path`.
pub fn write_folded(
    path: &Path,
    force: bool,
    engine: &Engine,
    fold: Fold,
) -> Result<Folded, ExportError> {
    require_stacks(path, engine)?;
    let lines = folded(engine, fold);
    let werr = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut out = std::io::BufWriter::new(create_output(path, force)?);
    for (line, ns) in &lines {
        writeln!(out, "{line} {ns}").map_err(werr)?;
    }
    out.flush().map_err(werr)?;
    out.get_ref().sync_all().map_err(werr)?;
    Ok(Folded {
        lines: lines.len(),
        total_ns: lines.values().sum(),
    })
}

/// Renders folded lines as a flame graph SVG (inferno).
pub fn flamegraph_svg(
    lines: &BTreeMap<String, u64>,
    weight: StackWeight,
    out: impl std::io::Write,
) -> std::io::Result<()> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = match weight {
        StackWeight::Latency => "kvmtrace: interrupt-to-guest latency by cause and kernel stack",
        StackWeight::Time => "kvmtrace: vCPU thread time by state and kernel stack",
    }
    .to_string();
    opts.subtitle = Some("weights in ns of attributed time (docs/stacks.md)".to_string());
    opts.count_name = "ns".to_string();
    opts.deterministic = true;
    let text: Vec<String> = lines.iter().map(|(l, ns)| format!("{l} {ns}")).collect();
    inferno::flamegraph::from_lines(&mut opts, text.iter().map(String::as_str), out)
}

/// Writes the flame graph of `weight` to `path`.
pub fn write_flamegraph(
    path: &Path,
    force: bool,
    engine: &Engine,
    fold: Fold,
) -> Result<Folded, ExportError> {
    require_stacks(path, engine)?;
    let lines = folded(engine, fold);
    let werr = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut out = std::io::BufWriter::new(create_output(path, force)?);
    flamegraph_svg(&lines, fold.weight, &mut out).map_err(werr)?;
    out.flush().map_err(werr)?;
    out.get_ref().sync_all().map_err(werr)?;
    Ok(Folded {
        lines: lines.len(),
        total_ns: lines.values().sum(),
    })
}

/// A worst sample's dominant cause and the stack most of its time went to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampleStack {
    /// The sample's largest cause.
    pub cause: String,
    /// Where the stack comes from: `sampled`, `switched_out`, `blocked`, `contended`,
    /// `irq_entry` (docs/stacks.md).
    pub source: String,
    /// The task the stack is of, when the cause does not name it.
    pub task: Option<String>,
    /// Of the cause's time, how much went to this stack.
    pub ns: u64,
    pub cause_ns: u64,
    /// Kernel frames, innermost first (`[user]`, `[stack lost]` when there are none).
    pub frames: Vec<String>,
}

/// The dominant cause's largest stack in `s`, if it has one.
pub fn sample_stack(engine: &Engine, s: &Sample) -> Option<SampleStack> {
    let &(cause, cause_ns) = s.causes.first()?;
    let (key, ns) = s
        .stacks
        .iter()
        .filter(|(c, k, _)| *c == cause && matches!(k, StackKey::Stack { .. }))
        .map(|&(_, k, ns)| (k, ns))
        .max_by_key(|&(k, ns)| (ns, std::cmp::Reverse(k)))?;
    let StackKey::Stack {
        source,
        stack,
        task,
    } = key
    else {
        return None;
    };
    let mut frames = Frames::new(engine);
    Some(SampleStack {
        cause: cause.label(engine.threads().names()),
        source: source.name().to_string(),
        task: task
            .filter(|&t| !names_task(cause, t))
            .map(|t| frames.task(t)),
        ns,
        cause_ns,
        frames: frames.kernel(stack),
    })
}

/// The stream's stack records, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StackSummary {
    /// The profile's frequency per CPU (0: none); from the capture header.
    pub hz: u32,
    /// Stack programs attached, of those tried.
    pub programs_attached: usize,
    pub programs: usize,
    /// Stacks taken at events (switch-out, contention, irq entry).
    pub at_events: u64,
    /// Profile ticks, and those in user space (no kernel stack).
    pub samples: u64,
    pub user: u64,
    /// Stacks the kernel's map had no room for.
    pub lost: u64,
    /// Distinct stacks and functions the capture defines.
    pub stacks: usize,
    pub symbols: usize,
    /// Why the recorder could not name frames, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols_problem: Option<String>,
}

/// The summary of the stream's stacks; None when it has none.
pub fn summary(engine: &Engine, header: &crate::capture::CaptureHeader) -> Option<StackSummary> {
    let st = engine.stacks();
    if !st.is_on() && header.stacks.is_none() {
        return None;
    }
    let c = st.counts();
    let (stacks, symbols) = st.tables().counts();
    let h = header.stacks.clone().unwrap_or_default();
    Some(StackSummary {
        hz: h.hz,
        programs_attached: h.programs.iter().filter(|p| p.attached).count(),
        programs: h.programs.len(),
        at_events: c.at_events,
        samples: c.samples,
        user: c.user,
        lost: c.lost,
        stacks,
        symbols,
        symbols_problem: h.symbols_problem,
    })
}

#[cfg(test)]
mod tests {
    use kvmtrace_common::{ev, stack, Comm, Event, Origin, Record};

    use super::*;
    use crate::engine::EngineConfig;

    const V0: u32 = 101;
    const HOG: u32 = 999;
    /// Function addresses of the symbols the stream defines.
    const HALT: u64 = 0xffff_ffff_8100_1000;
    const SCHED: u64 = 0xffff_ffff_8100_2000;
    const HOG_FN: u64 = 0xffff_ffff_8100_3000;
    const UNNAMED: u64 = 0xffff_ffff_8200_0000;

    fn at<R: Record>(us: f64, tid: u32, rec: R) -> Event {
        let o = Origin {
            ts_ns: (us * 1000.0) as u64,
            tid,
            tgid: if tid == HOG { HOG } else { 100 },
            cpu: 0,
        };
        Event::new(o, &rec)
    }

    fn switch(us: f64, prev: u32, runnable: bool, next: u32, comm: &str) -> Event {
        let sw = ev::SchedSwitch {
            prev_pid: u64::from(prev),
            prev_state: if runnable { 0x100 } else { 1 },
            next_pid: u64::from(next),
            next_comm: Comm::new(comm),
        };
        at(us, prev, sw)
    }

    fn stack_at(us: f64, tid: u32, id: u64) -> Event {
        let r = ev::StackAt {
            stack: id,
            what: stack::SWITCH,
            error: 0,
        };
        at(us, tid, r)
    }

    fn tick(us: f64, tid: u32, id: u64) -> Event {
        at(
            us,
            tid,
            ev::StackSample {
                stack: id,
                error: 0,
            },
        )
    }

    /// The demo's flow with a hog: vCPU 0 halts (stack 1: the halt), an interrupt is
    /// raised at 100 µs, the vCPU woken at 110 µs waits for the hog until 1110 µs (ticks of
    /// the hog's stack 2 at 300 and 500 µs), back in KVM_RUN until its port write at
    /// 1120 µs. Stacks and symbols are defined as the recorder defines them.
    fn engine() -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        for ev in &stream() {
            e.push(ev);
        }
        e.flush();
        e
    }

    fn stream() -> Vec<Event> {
        let mut evs = vec![at(0.0, V0, ev::ThreadInfo::thread(Some(0), "CPU 0/KVM"))];
        let defs: [(u32, &[u64]); 2] = [
            (1, &[SCHED + 4, HALT + 0x10]),
            (2, &[HOG_FN + 8, UNNAMED, SCHED + 8]),
        ];
        for (id, frames) in defs {
            evs.extend(ev::StackFrames::chunks(id, frames).map(|r| at(0.0, 0, r)));
        }
        for (start, name) in [
            (HALT, "kvm_vcpu_halt [kvm]"),
            (SCHED, "schedule"),
            (HOG_FN, "hog;fn"),
        ] {
            evs.extend(ev::Symbol::chunks(start, start + 0x100, name).map(|r| at(0.0, 0, r)));
        }
        let wake = ev::KvmVcpuWakeup {
            ns: 1,
            waited: 1,
            valid: Some(1),
        };
        let pio = ev::KvmPio {
            rw: 1,
            port: 0xe2,
            size: 2,
            val: Some(1),
        };
        evs.extend([
            switch(0.0, 0, false, V0, "CPU 0/KVM"),
            at(0.0, V0, wake),
            switch(5.0, V0, false, HOG, "hog"),
            stack_at(5.5, V0, 1),
            at(
                100.0,
                110,
                ev::KvmSetIrq {
                    gsi: 0,
                    level: 1,
                    irq_source_id: Some(0),
                },
            ),
            at(100.0, 110, ev::KvmPicSetIrq::default()),
            at(
                110.0,
                110,
                ev::SchedWakeup {
                    pid: u64::from(V0),
                    target_cpu: Some(0),
                    prio: Some(120),
                    comm: Comm::default(),
                },
            ),
            tick(300.0, HOG, 2),
            tick(500.0, HOG, 2),
            switch(1110.0, HOG, true, V0, "CPU 0/KVM"),
            at(1115.0, V0, wake),
            at(1120.0, V0, pio),
        ]);
        evs
    }

    fn exact(weight: StackWeight) -> Fold {
        Fold {
            weight,
            exact: true,
        }
    }

    #[test]
    fn folded_lines_are_the_causes_over_their_stacks_weighted_in_ns() {
        let e = engine();
        let lines = folded(&e, exact(StackWeight::Latency));
        let want: BTreeMap<String, u64> = [
            ("halted;[blocked];kvm_vcpu_halt [kvm];schedule", 10_000),
            (
                "preempted:hog:999;[sampled];schedule;0xffffffff82000000;hog:fn",
                1_000_000,
            ),
            ("kvm_run;[not sampled]", 10_000),
        ]
        .into_iter()
        .map(|(l, ns)| (l.to_string(), ns))
        .collect();
        assert_eq!(lines, want);
        let total: u64 = lines.values().sum();
        let v = e.vcpus().next().unwrap();
        assert_eq!(total, v.stats.irq_total_ns, "the weights are the latency");
    }

    #[test]
    fn time_weight_covers_the_run_and_pads_what_has_no_split() {
        let e = engine();
        let lines = folded(&e, exact(StackWeight::Time));
        let v = e.vcpus().next().unwrap();
        let run: u64 = v.stats.state_ns.values().sum();
        assert_eq!(lines.values().sum::<u64>(), run);
        let halted = lines.get("halted;[blocked];kvm_vcpu_halt [kvm];schedule");
        assert_eq!(
            halted,
            Some(&105_000),
            "the whole halt, not only the window's part"
        );
        assert_eq!(lines.get("kvm_run;[not sampled]"), Some(&15_000));
    }

    #[test]
    fn time_before_the_first_stack_record_is_said_to_have_no_stack_data() {
        // A stream whose stack records start more than the reorder window after the vCPU
        // was followed: its first segments were accounted without a split, and the fold
        // says so rather than drop their time.
        let mut e = Engine::new(EngineConfig::default());
        let evs = [
            at(0.0, V0, ev::ThreadInfo::thread(Some(0), "CPU 0/KVM")),
            switch(0.0, 0, false, V0, "CPU 0/KVM"),
            switch(50.0, V0, true, HOG, "hog"),
            switch(3000.0, HOG, true, V0, "CPU 0/KVM"),
            stack_at(3000.5, HOG, 2),
            switch(3100.0, V0, true, HOG, "hog"),
        ];
        for ev in &evs {
            e.push(ev);
        }
        e.flush();
        let lines = folded(&e, exact(StackWeight::Time));
        let want: BTreeMap<String, u64> = [
            ("other;[no stack data]", 50_000),
            // Split (stacks were on by then): the hog's switch-out stack, which this
            // stream never defines (as in a capture cut before its definition).
            (
                "preempted:hog:999;[switched out];[stack 2 not in capture]",
                2_950_000,
            ),
            ("other;[not sampled]", 100_000),
        ]
        .into_iter()
        .map(|(l, ns)| (l.to_string(), ns))
        .collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn unsampled_time_is_spread_over_the_causes_sampled_stacks_unless_exact() {
        let mut entries = vec![
            (Cause::KvmRun, StackKey::NotSampled, 100),
            (
                Cause::KvmRun,
                StackKey::Stack {
                    source: StackSource::Sampled,
                    stack: StackRef::Id(1),
                    task: None,
                },
                30,
            ),
            (
                Cause::KvmRun,
                StackKey::Stack {
                    source: StackSource::Sampled,
                    stack: StackRef::Id(2),
                    task: None,
                },
                10,
            ),
            (Cause::Halted, StackKey::NotSampled, 7),
        ];
        spread_unsampled(&mut entries);
        entries.sort();
        let ns: Vec<u64> = entries.iter().map(|e| e.2).collect();
        assert_eq!(
            ns,
            vec![105, 35, 7],
            "3:1 of 100, and a cause with no samples kept"
        );
        assert_eq!(entries.iter().map(|e| e.2).sum::<u64>(), 147);
    }

    #[test]
    fn a_worst_sample_shows_its_dominant_causes_stack() {
        let e = engine();
        let s = &e.worst()[0];
        let st = sample_stack(&e, s).expect("a stack");
        assert_eq!(st.cause, "preempted:hog:999");
        assert_eq!(st.source, "sampled");
        assert_eq!(st.task, None, "the cause names the task");
        assert_eq!((st.ns, st.cause_ns), (1_000_000, 1_000_000));
        assert_eq!(st.frames, vec!["hog:fn", "0xffffffff82000000", "schedule"]);
        let text = {
            let mut t = String::new();
            crate::report::latency::stack_text(&mut t, "", &st);
            t
        };
        assert!(text.starts_with("stack of preempted:hog:999 (sampled, 1000.0 of its 1000.0 us):"));
    }

    #[test]
    fn the_flame_graph_is_valid_svg_with_the_frames() {
        let e = engine();
        let lines = folded(&e, Fold::default());
        let mut svg = Vec::new();
        flamegraph_svg(&lines, StackWeight::Latency, &mut svg).unwrap();
        let text = String::from_utf8(svg).unwrap();
        // Well-formed XML, an <svg> root, and a <title> per frame naming it.
        let mut reader = quick_xml::Reader::from_str(&text);
        let mut depth = 0i32;
        let mut root = None;
        let mut titles = Vec::new();
        let mut in_title = false;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Start(t)) => {
                    let name = String::from_utf8_lossy(t.name().as_ref()).into_owned();
                    root.get_or_insert_with(|| name.clone());
                    in_title = name == "title";
                    depth += 1;
                }
                Ok(quick_xml::events::Event::End(_)) => {
                    in_title = false;
                    depth -= 1;
                }
                Ok(quick_xml::events::Event::Text(t)) if in_title => {
                    titles.push(String::from_utf8_lossy(&t).into_owned());
                }
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(err) => panic!("not well-formed at {}: {err}", reader.buffer_position()),
            }
        }
        assert_eq!(depth, 0, "every element closed");
        assert_eq!(root.as_deref(), Some("svg"));
        for frame in [
            "preempted:hog:999",
            "kvm_vcpu_halt [kvm]",
            "hog:fn",
            "[blocked]",
        ] {
            assert!(
                titles.iter().any(|t| t.starts_with(frame)),
                "{frame} not in {titles:?}"
            );
        }
    }

    #[test]
    fn stack_records_round_trip_through_a_capture() {
        use crate::capture::{CaptureHeader, CaptureTrailer, CaptureWriter};
        let p = std::env::temp_dir().join(format!("kvmtrace-stacks-{}", std::process::id()));
        let mut w = CaptureWriter::create(&p, true, &CaptureHeader::default()).unwrap();
        for ev in &stream() {
            w.push(ev).unwrap();
        }
        w.finish(&CaptureTrailer::default()).unwrap();
        let (report, replayed) = crate::report::analyse_capture(&p, EngineConfig::default())
            .expect("the capture reads back");
        std::fs::remove_file(&p).unwrap();
        let direct = engine();
        for weight in [StackWeight::Latency, StackWeight::Time] {
            assert_eq!(
                folded(&replayed, exact(weight)),
                folded(&direct, exact(weight))
            );
        }
        let st = report
            .stacks
            .expect("the report says the capture has stacks");
        assert_eq!(
            (st.at_events, st.samples, st.stacks, st.symbols),
            (1, 2, 2, 3)
        );
        let w = &report.worst[0];
        assert_eq!(
            w.stack.as_ref().map(|s| s.frames[0].as_str()),
            Some("hog:fn")
        );
    }

    #[test]
    fn exports_refuse_a_capture_without_stacks() {
        let e = Engine::new(EngineConfig::default());
        let p = std::env::temp_dir().join(format!("kvmtrace-nostacks-{}", std::process::id()));
        let err = write_folded(&p, true, &e, Fold::default()).unwrap_err();
        assert!(err.to_string().contains("no kernel stacks"), "{err}");
        assert!(!p.exists(), "nothing written");
    }
}
