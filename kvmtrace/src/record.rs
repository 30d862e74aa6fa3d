//! `kvmtrace record`: a live session written to a capture file until a duration passes,
//! Ctrl-C or SIGTERM; whatever was captured is flushed and the file closed cleanly.
//!
//! With a trigger it is a flight recorder: events are kept in memory for `pre` seconds and
//! run through the attribution engine; when an interrupt-to-guest sample reaches the
//! threshold, the window before it is written, then everything until `post` seconds after
//! it, and tracing goes on (up to `max_triggers` windows).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use anyhow::Context as _;
use kvmtrace_common::{Event, Kind};

use crate::source::demo::DemoStats;
use crate::source::session::{Session, SessionOptions};
use kvmtrace_analysis::capture::{
    create_output, CaptureError, CaptureHeader, CaptureTrailer, CaptureWriter, StopReason, Trigger,
};
use kvmtrace_analysis::engine::{Engine, EngineConfig};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub output: PathBuf,
    pub force: bool,
    pub duration: Option<Duration>,
    pub session: SessionOptions,
    pub trigger: Option<TriggerOptions>,
}

/// Flight-recorder settings.
#[derive(Clone, Copy, Debug)]
pub struct TriggerOptions {
    /// Interrupt-to-guest latency that triggers a write.
    pub threshold: Duration,
    /// Kept in memory and written before a trigger.
    pub pre: Duration,
    /// Written after a trigger.
    pub post: Duration,
    /// Stop after this many windows.
    pub max_triggers: u32,
}

/// The flight recorder's state: a rolling window of events and an engine that watches for
/// slow samples.
struct Flight {
    opts: TriggerOptions,
    ring: VecDeque<Event>,
    engine: Engine,
    /// While a window is being written: write until this time.
    writing_until: Option<u64>,
    windows: u32,
    triggers: Vec<Trigger>,
    latest_ns: u64,
}

impl Flight {
    fn new(opts: TriggerOptions, header: &CaptureHeader) -> Flight {
        Flight {
            opts,
            ring: VecDeque::new(),
            engine: Engine::new(
                EngineConfig {
                    trigger_ns: Some(opts.threshold.as_nanos() as u64),
                    worst: 0,
                    ..EngineConfig::default()
                }
                .for_capture(header),
            ),
            writing_until: None,
            windows: 0,
            triggers: Vec::new(),
            latest_ns: 0,
        }
    }

    /// Takes a batch; returns true once the last window is complete.
    fn handle(
        &mut self,
        batch: &[Event],
        writer: &mut CaptureWriter,
    ) -> Result<bool, CaptureError> {
        for ev in batch {
            self.engine.push(ev);
            let kind = Kind::try_from(ev.kind);
            if matches!(
                kind,
                Ok(Kind::ThreadInfo | Kind::StackFrames | Kind::Symbol)
            ) {
                // Names and vCPU ids are always needed to read a window, and so are the
                // definitions of the stacks it may use (written once, when first seen).
                writer.push(ev)?;
                continue;
            }
            if kind.is_ok_and(|k| k.is_tracepoint()) {
                self.latest_ns = self.latest_ns.max(ev.ts_ns);
            }
            if self.writing_until.is_some() {
                writer.push(ev)?;
            } else {
                self.ring.push_back(*ev);
            }
        }
        let keep_from = self
            .latest_ns
            .saturating_sub(self.opts.pre.as_nanos() as u64);
        while self.ring.front().is_some_and(|e| e.ts_ns < keep_from) {
            self.ring.pop_front();
        }
        for t in self.engine.take_triggers() {
            let end = t.open_ns + t.total_ns + self.opts.post.as_nanos() as u64;
            match self.writing_until {
                // Inside a window being written: noted, the window is not stretched (a
                // steady stream of slow samples must still end it).
                Some(_) => {}
                None if self.windows < self.opts.max_triggers => {
                    self.windows += 1;
                    log::info!(
                        "trigger: {:.1} us interrupt-to-guest latency on tid {}",
                        t.total_ns as f64 / 1e3,
                        t.tid
                    );
                    for ev in self.ring.drain(..) {
                        writer.push(&ev)?;
                    }
                    self.writing_until = Some(end);
                }
                None => continue,
            }
            self.triggers.push(t);
        }
        if self.writing_until.is_some_and(|u| self.latest_ns >= u) {
            self.writing_until = None;
            writer.flush_block()?;
            return Ok(self.windows >= self.opts.max_triggers);
        }
        Ok(false)
    }
}

#[derive(Debug)]
pub struct RecordSummary {
    /// Flight recorder: the samples that triggered a write.
    pub triggers: Vec<Trigger>,
    /// Drop after reporting: detaches the probes (about a second).
    pub detach: crate::source::session::Detach,
    pub events: u64,
    pub kernel_drops: u64,
    pub malformed: u64,
    /// Tracepoint hits the kernel ran no program for (another BPF program held the CPU).
    pub not_run: u64,
    pub stop_reason: StopReason,
    pub elapsed: Duration,
    pub demo: Option<DemoStats>,
    /// CPU time of kvmtrace's own threads while tracing.
    pub tracer_cpu_ns: u64,
}

const RUNNING: u8 = 0;
const SIGINT: u8 = 1;
const SIGTERM: u8 = 2;

/// Sets `flag` on SIGINT / SIGTERM.
fn watch_signals(flag: Arc<AtomicU8>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, value) in [
        (SignalKind::interrupt(), SIGINT),
        (SignalKind::terminate(), SIGTERM),
    ] {
        let mut s = signal(kind).context("installing a signal handler")?;
        let flag = flag.clone();
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                flag.store(value, Ordering::SeqCst);
            }
        });
    }
    Ok(())
}

pub async fn record(opts: &RecordOptions) -> anyhow::Result<RecordSummary> {
    // Fail on a bad output path before attaching anything.
    let file = create_output(&opts.output, opts.force)?;
    let session = match Session::start(&opts.session) {
        Ok(s) => s,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&opts.output);
            return Err(e.into());
        }
    };
    let stop = Arc::new(AtomicU8::new(RUNNING));
    watch_signals(stop.clone())?;
    run(session, file, opts, &stop).await
}

async fn run(
    mut session: Session,
    file: std::fs::File,
    opts: &RecordOptions,
    stop: &AtomicU8,
) -> anyhow::Result<RecordSummary> {
    let mut writer = CaptureWriter::new(file, &opts.output, &session.header)?;
    let attached = session.probes().attached().count();
    eprintln!(
        "kvmtrace: recording to {} with {attached} probes{} (Ctrl-C to stop){}",
        opts.output.display(),
        opts.duration
            .map(|d| format!(" for {:.1} s", d.as_secs_f64()))
            .unwrap_or_default(),
        match &session.header.placement {
            Some(p) if !p.cpus.is_empty() => format!(
                "; its own threads on CPU {}",
                crate::housekeeping::cpu_list(&p.cpus)
            ),
            _ => String::new(),
        }
    );
    let started = Instant::now();
    let mut buf: Vec<Event> = Vec::with_capacity(16 * 1024);
    session.initial_records(&mut buf)?;
    let mut flight = opts.trigger.map(|t| Flight::new(t, &session.header));
    if let Some(t) = &opts.trigger {
        eprintln!(
            "kvmtrace: flight recorder: writing {:.1} s before and {:.1} s after each interrupt-to-guest latency of {} us or more (up to {})",
            t.pre.as_secs_f64(),
            t.post.as_secs_f64(),
            t.threshold.as_micros(),
            t.max_triggers
        );
    }
    let mut write_error = None;
    let stop_reason = loop {
        let written = match &mut flight {
            Some(f) => f.handle(&buf, &mut writer),
            None => buf
                .iter()
                .try_for_each(|ev| writer.push(ev))
                .map(|()| false),
        };
        match written {
            Ok(true) => break StopReason::Triggers,
            Ok(false) => {}
            Err(e) => {
                write_error = Some(e);
                break StopReason::WriteError;
            }
        }
        buf.clear();
        match stop.load(Ordering::SeqCst) {
            SIGINT => break StopReason::Sigint,
            SIGTERM => break StopReason::Sigterm,
            _ => {}
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::Duration;
        }
        session.read(&mut buf, Duration::from_millis(100)).await?;
    };
    let end = session.finish(&mut buf);
    let mut demo = None;
    if let Some(stats) = end.demo {
        match stats {
            Ok(s) => demo = Some(s),
            Err(e) => log::warn!("the demo guest did not stop cleanly: {e}"),
        }
    }
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context(
            "the capture holds the events up to the last complete block before the failure",
        ));
    }
    let triggers = match &mut flight {
        Some(f) => {
            // What is left belongs in the file only inside a window being written.
            f.handle(&buf, &mut writer)?;
            std::mem::take(&mut f.triggers)
        }
        None => {
            for ev in &buf {
                writer.push(ev)?;
            }
            Vec::new()
        }
    };
    let events = writer.events();
    writer.finish(&CaptureTrailer {
        events,
        kernel_drops: end.kernel_drops,
        malformed: end.malformed,
        end_ns: crate::source::demo::monotonic_ns(),
        stop_reason,
        triggers: triggers.clone(),
        tracer_cpu_ns: Some(end.tracer_cpu_ns),
    })?;
    Ok(RecordSummary {
        triggers,
        detach: end.detach,
        events,
        kernel_drops: end.kernel_drops,
        malformed: end.malformed,
        not_run: end.not_run,
        stop_reason,
        elapsed: started.elapsed(),
        demo,
        tracer_cpu_ns: end.tracer_cpu_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmtrace_analysis::capture::CaptureReader;
    use kvmtrace_common::{ev, Comm, Origin, Payload};

    const MS: u64 = 1_000_000;

    fn ev(ts: u64, tid: u32, p: Payload) -> Event {
        p.event(Origin {
            ts_ns: ts,
            tid,
            tgid: 100,
            cpu: 0,
        })
    }

    fn switch(prev: u64, prev_state: u64, next: u64, comm: &str) -> Payload {
        Payload::SchedSwitch(ev::SchedSwitch {
            prev_pid: prev,
            prev_state,
            next_pid: next,
            next_comm: Comm::new(comm),
        })
    }

    /// A halted vCPU woken every millisecond; the interrupt at `slow_at` takes 3 ms.
    fn stream(until: u64, slow_at: u64) -> Vec<Event> {
        let info = ev::ThreadInfo::thread(None, "CPU 0/KVM");
        let mut out = vec![ev(0, 101, Payload::ThreadInfo(info))];
        out.push(ev(MS / 2, 101, switch(101, 1, 0, "")));
        let set = Payload::KvmSetIrq(ev::KvmSetIrq {
            gsi: 0,
            level: 1,
            irq_source_id: Some(0),
        });
        let pic = Payload::KvmPicSetIrq(ev::KvmPicSetIrq::default());
        let wake = Payload::SchedWakeup(ev::SchedWakeup {
            pid: 101,
            target_cpu: Some(0),
            prio: Some(120),
            comm: Comm::default(),
        });
        let kvm_wake = Payload::KvmVcpuWakeup(ev::KvmVcpuWakeup {
            ns: 1,
            waited: 1,
            valid: Some(1),
        });
        let pio = Payload::KvmPio(ev::KvmPio {
            rw: 1,
            port: 0xe2,
            size: 2,
            val: Some(1),
        });
        let drops = Payload::Drops(ev::Drops::default());
        let mut t = MS;
        while t < until {
            let lat = if t == slow_at { 3 * MS } else { 20_000 };
            out.push(ev(t, 110, set));
            out.push(ev(t + 1, 110, pic));
            out.push(ev(t + 2, 110, wake));
            out.push(ev(t + 3, 0, switch(0, 0, 101, "CPU 0/KVM")));
            out.push(ev(t + 4, 101, kvm_wake));
            out.push(ev(t + lat, 101, pio));
            out.push(ev(t + lat + 10, 101, switch(101, 1, 0, "")));
            out.push(ev(t + lat + 20, 0, drops));
            t += if t == slow_at { 4 * MS } else { MS };
        }
        out
    }

    fn fly(events: &[Event], opts: TriggerOptions) -> (Vec<Event>, Vec<Trigger>) {
        let p = std::env::temp_dir().join(format!(
            "kvmtrace-flight-{}-{}",
            std::process::id(),
            opts.pre.as_millis()
        ));
        let mut w = CaptureWriter::create(&p, true, &CaptureHeader::default()).unwrap();
        let mut f = Flight::new(opts, &CaptureHeader::default());
        let mut done = false;
        for chunk in events.chunks(50) {
            if f.handle(chunk, &mut w).unwrap() {
                done = true;
                break;
            }
        }
        assert!(done, "the last window completes and ends the recording");
        w.finish(&CaptureTrailer::default()).unwrap();
        let mut r = CaptureReader::open(&p).unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            out.push(e);
        }
        std::fs::remove_file(&p).unwrap();
        (out, f.triggers)
    }

    #[test]
    fn writes_the_pre_window_the_trigger_and_the_post_window_only() {
        let slow = 1500 * MS;
        let opts = TriggerOptions {
            threshold: Duration::from_millis(1),
            pre: Duration::from_millis(500),
            post: Duration::from_millis(200),
            max_triggers: 1,
        };
        let (written, triggers) = fly(&stream(3000 * MS, slow), opts);
        assert_eq!(triggers.len(), 1);
        assert_eq!(
            triggers[0].open_ns, slow,
            "the slow interrupt, opened at kvm_set_irq"
        );
        assert_eq!(triggers[0].total_ns, 3 * MS);
        let ts: Vec<u64> = written
            .iter()
            .filter(|e| Kind::try_from(e.kind).is_ok_and(|k| k.is_tracepoint()))
            .map(|e| e.ts_ns)
            .collect();
        let (first, last) = (ts[0], ts[ts.len() - 1]);
        // From `pre` before the moment the trigger was seen (the sample's end) ...
        assert!(first >= slow + 3 * MS - 500 * MS - MS, "first {first}");
        assert!(
            first <= slow - 400 * MS,
            "first {first}: the pre-window is missing"
        );
        // ... to `post` after the sample.
        assert!(last >= slow + 3 * MS + 200 * MS, "last {last}");
        assert!(
            last <= slow + 3 * MS + 260 * MS,
            "last {last}: wrote past the window"
        );
        assert!(
            written.iter().any(|e| e.kind == Kind::ThreadInfo as u16),
            "names kept"
        );
    }

    #[test]
    fn nothing_is_written_while_no_sample_is_slow() {
        let opts = TriggerOptions {
            threshold: Duration::from_millis(10),
            pre: Duration::from_millis(100),
            post: Duration::from_millis(100),
            max_triggers: 1,
        };
        let p = std::env::temp_dir().join(format!("kvmtrace-flight-none-{}", std::process::id()));
        let mut w = CaptureWriter::create(&p, true, &CaptureHeader::default()).unwrap();
        let mut f = Flight::new(opts, &CaptureHeader::default());
        for chunk in stream(1000 * MS, u64::MAX).chunks(50) {
            assert!(!f.handle(chunk, &mut w).unwrap());
        }
        assert!(f.triggers.is_empty());
        assert_eq!(w.events(), 1, "only the thread's name");
        std::fs::remove_file(&p).unwrap();
    }
}
