//! `kvmtrace top`: the live TUI, and the same views over a capture (`--replay`).
//!
//! One task owns everything: the [`App`] (plain data), the data source (a live session or a
//! capture reader) and the engines. Keys arrive from an input thread and signals from
//! signal tasks over one channel; the screen is redrawn after a key or a refresh, never from
//! the data path. The terminal is restored by a guard's `Drop` and by ratatui's panic hook.

pub mod app;
pub mod model;
mod stack_view;
pub mod theme;
pub mod view;
pub mod widgets;

#[cfg(test)]
mod snapshots;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crossterm::event::{self, Event as TermEvent, KeyEvent, KeyEventKind};
use kvmtrace_common::{ev, Event, Kind};
use tokio::sync::mpsc;

use self::app::{App, Command};
use self::model::{Header, TopModel, TracerLoad};
use crate::source::session::{Session, SessionOptions};
use kvmtrace_analysis::capture::{CaptureHeader, CaptureReader};
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::threads::vm_name_from_cmdline;

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(
        "kvmtrace top needs a terminal on stdout; without one, capture with \
         `kvmtrace record -o FILE` and read it with `kvmtrace report FILE`"
    )]
    NotATerminal,
}

/// Fails unless stdout is a terminal.
pub fn check_tty() -> Result<(), TuiError> {
    if std::io::stdout().is_terminal() {
        Ok(())
    } else {
        Err(TuiError::NotATerminal)
    }
}

/// Gathers events into two engines (since start, and the current interval) and turns them
/// into models at each refresh.
pub struct Collector {
    total: Engine,
    interval: Engine,
    header: Header,
    start_ns: Option<u64>,
    interval_start_ns: u64,
    interval_events: u64,
    names: HashMap<u32, String>,
    /// Read VM names from /proc (live only).
    live: bool,
}

impl Collector {
    pub fn new(capture: &CaptureHeader, interval_ms: u64, source: String, live: bool) -> Self {
        let cfg = EngineConfig::default().for_capture(capture);
        let h = &capture.host;
        Collector {
            total: Engine::new(cfg.clone()),
            interval: Engine::new(cfg),
            header: Header {
                host: h.hostname.clone(),
                kernel: h.kernel.clone(),
                kvm_backend: h.kvm_backend.clone().unwrap_or_else(|| "none".into()),
                probes_attached: capture.probes.iter().filter(|p| p.attached).count(),
                probes_unavailable: capture
                    .probes
                    .iter()
                    .filter(|p| !p.attached)
                    .map(|p| p.tracepoint.clone())
                    .collect(),
                interval_ms,
                source,
                tracer: capture.placement.as_ref().map(|p| TracerLoad {
                    cpu_pct: None,
                    cpus: kvmtrace_analysis::host::cpu_list(&p.cpus),
                }),
                ..Header::default()
            },
            start_ns: None,
            interval_start_ns: 0,
            interval_events: 0,
            names: HashMap::new(),
            live,
        }
    }

    pub fn feed(&mut self, events: &[Event]) {
        for ev in events {
            match ev.kind() {
                Ok(Kind::Drops) => {
                    if let Some(d) = ev.get::<ev::Drops>() {
                        self.header.drops = d.total();
                    }
                }
                Ok(k) if k.is_tracepoint() => {
                    self.interval_events += 1;
                    if self.start_ns.is_none() {
                        self.start_ns = Some(ev.ts_ns);
                        self.interval_start_ns = ev.ts_ns;
                    }
                }
                _ => {}
            }
            self.total.push(ev);
            self.interval.push(ev);
        }
    }

    /// Models for the interval that just ended and since start; starts a new interval.
    pub fn refresh(&mut self, now_ns: u64) -> (TopModel, TopModel) {
        for (pid, name) in self.total.threads().vm_names() {
            self.names.entry(pid).or_insert_with(|| name.to_string());
        }
        if self.live {
            for v in self.total.vcpus() {
                self.names.entry(v.tgid).or_insert_with(|| {
                    std::fs::read(format!("/proc/{}/cmdline", v.tgid))
                        .map(|c| vm_name_from_cmdline(&c))
                        .unwrap_or_default()
                });
            }
        }
        let start = self.start_ns.unwrap_or(now_ns);
        let span = now_ns.saturating_sub(self.interval_start_ns).max(1);
        self.header.event_rate = self.interval_events as f64 / (span as f64 / 1e9);
        self.header.traced_ns = now_ns.saturating_sub(start);
        let interval = TopModel::build(&self.interval, span, self.header.clone(), &self.names);
        let total = TopModel::build(
            &self.total,
            now_ns.saturating_sub(start).max(1),
            self.header.clone(),
            &self.names,
        );
        self.interval.reset_stats();
        self.interval_events = 0;
        self.interval_start_ns = now_ns;
        (interval, total)
    }

    /// kvmtrace's own CPU time since tracing started (`wall_ns` ago), for the header.
    pub fn tracer_cpu(&mut self, cpu_ns: u64, wall_ns: u64) {
        let pct = 100.0 * cpu_ns as f64 / wall_ns.max(1) as f64;
        self.header
            .tracer
            .get_or_insert_with(TracerLoad::default)
            .cpu_pct = Some(pct);
    }

    /// Forget everything gathered so far (the `r` key).
    pub fn reset(&mut self, now_ns: u64) {
        self.total.reset_stats();
        self.interval.reset_stats();
        self.start_ns = Some(now_ns);
        self.interval_start_ns = now_ns;
        self.interval_events = 0;
    }
}

enum Input {
    Key(KeyEvent),
    Redraw,
    Quit,
}

/// Reads the terminal on a thread of its own (crossterm's reads block) until `stop`.
fn spawn_input(tx: mpsc::UnboundedSender<Input>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => {
                        let _ = tx.send(Input::Key(k));
                    }
                    Ok(TermEvent::Resize(..)) => {
                        let _ = tx.send(Input::Redraw);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                Ok(false) => {}
                Err(_) => break,
            }
        }
    });
}

/// SIGTERM, SIGINT and SIGHUP end the TUI cleanly.
fn spawn_signals(tx: mpsc::UnboundedSender<Input>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        let mut s = signal(kind).context("installing a signal handler")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                let _ = tx.send(Input::Quit);
            }
        });
    }
    Ok(())
}

/// Restores the terminal however the TUI ends.
struct TerminalGuard {
    stop_input: Arc<AtomicBool>,
    /// Log lines would be written over the screen: off while the TUI has it (drops are in
    /// the header, exited VMs in their rows), back on after.
    log_level: log::LevelFilter,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        self.stop_input.store(true, Ordering::Relaxed);
        ratatui::restore();
        log::set_max_level(self.log_level);
    }
}

/// Takes over the terminal (restored by the guard, or by ratatui's panic hook) and starts
/// the input thread and the signal tasks, all sending to the returned channel.
fn start_terminal() -> anyhow::Result<(
    ratatui::DefaultTerminal,
    TerminalGuard,
    mpsc::UnboundedReceiver<Input>,
)> {
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_signals(tx.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let log_level = log::max_level();
    log::set_max_level(log::LevelFilter::Off);
    let terminal = ratatui::init();
    let guard = TerminalGuard {
        stop_input: stop.clone(),
        log_level,
    };
    spawn_input(tx, stop);
    Ok((terminal, guard, rx))
}

fn monotonic_ns() -> u64 {
    crate::source::demo::monotonic_ns()
}

#[derive(Clone, Debug)]
pub struct TopOptions {
    pub session: SessionOptions,
    pub interval: Duration,
}

/// `kvmtrace top`: live.
pub async fn run_live(opts: &TopOptions) -> anyhow::Result<()> {
    check_tty()?;
    // Errors (privileges, probes, KVM) are printed before the screen is taken over.
    let mut session = Session::start(&opts.session)?;
    let interval_ms = opts.interval.as_millis() as u64;
    let mut collector = Collector::new(&session.header, interval_ms, "live".into(), true);
    let mut buf: Vec<Event> = Vec::with_capacity(16 * 1024);
    session.initial_records(&mut buf)?;
    collector.feed(&buf);
    buf.clear();

    let (mut terminal, guard, mut rx) = start_terminal()?;
    let started = monotonic_ns();
    let mut app = App::new(false);
    let (i, t) = collector.refresh(monotonic_ns());
    app.update(i, t);
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    while !app.quit {
        if dirty {
            terminal.draw(|f| view::render(&app, f))?;
            dirty = false;
        }
        tokio::select! {
            input = rx.recv() => {
                match input {
                    Some(Input::Key(k)) => {
                        if app.key(k) == Some(Command::Reset) {
                            collector.reset(monotonic_ns());
                            let (i, t) = collector.refresh(monotonic_ns());
                            app.update(i, t);
                        }
                    }
                    Some(Input::Redraw) => {}
                    Some(Input::Quit) | None => app.quit = true,
                }
                dirty = true;
            }
            _ = tick.tick() => {
                let now = monotonic_ns();
                collector.tracer_cpu(session.tracer_cpu_ns(), now.saturating_sub(started));
                let (i, t) = collector.refresh(now);
                app.update(i, t);
                dirty = true;
            }
            r = session.read(&mut buf, Duration::from_millis(100)) => {
                r?;
                collector.feed(&buf);
                buf.clear();
            }
        }
    }
    drop(terminal);
    drop(guard);
    let end = session.finish(&mut buf);
    if end.kernel_drops > 0 {
        eprintln!(
            "kvmtrace: {} events were lost while tracing",
            end.kernel_drops
        );
    }
    Ok(())
}

/// Where a replay is.
struct Replay {
    path: PathBuf,
    reader: CaptureReader<std::io::BufReader<std::fs::File>>,
    /// An event read but past the current position.
    held: Option<Event>,
    /// Capture time shown up to.
    pos_ns: u64,
    first_ns: Option<u64>,
    step_ns: u64,
}

impl Replay {
    fn open(path: &Path, step_ns: u64) -> anyhow::Result<Replay> {
        Ok(Replay {
            path: path.to_path_buf(),
            reader: CaptureReader::open(path)?,
            held: None,
            pos_ns: 0,
            first_ns: None,
            step_ns,
        })
    }

    /// Feeds the collector up to `until` (capture time); false at the end of the capture.
    fn advance(&mut self, collector: &mut Collector, until: u64) -> anyhow::Result<bool> {
        let mut batch = Vec::new();
        loop {
            let ev = match self.held.take() {
                Some(e) => e,
                None => match self.reader.next_event()? {
                    Some(e) => e,
                    None => {
                        collector.feed(&batch);
                        return Ok(false);
                    }
                },
            };
            let is_tp = Kind::try_from(ev.kind).is_ok_and(|k| k.is_tracepoint());
            if is_tp && self.first_ns.is_none() {
                self.first_ns = Some(ev.ts_ns);
                self.pos_ns = ev.ts_ns;
            }
            if is_tp && ev.ts_ns > until && self.first_ns.is_some() {
                self.held = Some(ev);
                collector.feed(&batch);
                return Ok(true);
            }
            batch.push(ev);
        }
    }

    fn label(&self) -> String {
        let name = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let at = self
            .pos_ns
            .saturating_sub(self.first_ns.unwrap_or(self.pos_ns));
        format!("replay {name} @ {:.1} s", at as f64 / 1e9)
    }
}

/// Moves a replay by `steps` intervals (back = start again from the beginning) and returns
/// the models at the new position.
fn replay_step(
    replay: &mut Replay,
    collector: &mut Collector,
    header: &CaptureHeader,
    interval_ms: u64,
    steps: i64,
) -> anyhow::Result<(TopModel, TopModel, bool)> {
    if steps < 0 {
        let target = replay
            .pos_ns
            .saturating_sub(replay.step_ns * steps.unsigned_abs())
            .max(replay.first_ns.unwrap_or(0));
        let first = replay.first_ns;
        *replay = Replay::open(&replay.path, replay.step_ns)?;
        *collector = Collector::new(header, interval_ms, String::new(), false);
        // Replay up to the interval before the target, then step into it.
        if let Some(f) = first {
            let prev = target.saturating_sub(replay.step_ns).max(f);
            replay.advance(collector, prev)?;
            collector.refresh(prev);
            replay.pos_ns = prev;
        }
        let more = replay.advance(collector, target)?;
        replay.pos_ns = target;
        collector.header.source = replay.label();
        let (i, t) = collector.refresh(target);
        return Ok((i, t, more));
    }
    let until = if replay.first_ns.is_none() {
        // First call: find the first event, then step from there.
        replay.advance(collector, 0)?;
        replay.pos_ns + replay.step_ns
    } else {
        replay.pos_ns + replay.step_ns * steps as u64
    };
    let more = replay.advance(collector, until)?;
    replay.pos_ns = until;
    collector.header.source = replay.label();
    let (i, t) = collector.refresh(until);
    Ok((i, t, more))
}

/// `kvmtrace top --replay FILE`: the same views over a capture, stepping through its time.
pub async fn run_replay(path: &Path, interval: Duration) -> anyhow::Result<()> {
    check_tty()?;
    let interval_ms = interval.as_millis() as u64;
    let step_ns = interval.as_nanos() as u64;
    let mut replay = Replay::open(path, step_ns)?;
    let header = replay.reader.header.clone();
    let mut collector = Collector::new(&header, interval_ms, String::new(), false);
    let mut app = App::new(true);
    let (i, t, _) = replay_step(&mut replay, &mut collector, &header, interval_ms, 1)?;
    app.update(i, t);

    let (mut terminal, _guard, mut rx) = start_terminal()?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    while !app.quit {
        if dirty {
            terminal.draw(|f| view::render(&app, f))?;
            dirty = false;
        }
        let steps = tokio::select! {
            input = rx.recv() => {
                dirty = true;
                match input {
                    Some(Input::Key(k)) => match app.key(k) {
                        Some(Command::Step(d)) => i64::from(d),
                        Some(Command::Reset) => {
                            collector.reset(replay.pos_ns);
                            0
                        }
                        _ => 0,
                    },
                    Some(Input::Redraw) => 0,
                    Some(Input::Quit) | None => {
                        app.quit = true;
                        0
                    }
                }
            }
            _ = tick.tick() => i64::from(app.playing),
        };
        if steps != 0 {
            let was_paused = app.paused;
            app.paused = false;
            let (i, t, more) =
                replay_step(&mut replay, &mut collector, &header, interval_ms, steps)?;
            app.update(i, t);
            app.paused = was_paused;
            if !more {
                app.playing = false;
            }
            dirty = true;
        }
    }
    Ok(())
}
