//! `kvmtrace record`: a live session written to a capture file until a duration passes,
//! Ctrl-C or SIGTERM; whatever was captured is flushed and the file closed cleanly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kvmtrace_common::Event;

use crate::capture::{create_output, CaptureTrailer, CaptureWriter};
use crate::source::demo::DemoStats;
use crate::source::session::{Session, SessionOptions};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub output: PathBuf,
    pub force: bool,
    pub duration: Option<Duration>,
    pub session: SessionOptions,
}

#[derive(Debug)]
pub struct RecordSummary {
    /// Drop after reporting: detaches the probes (about a second).
    pub detach: crate::source::session::Detach,
    pub events: u64,
    pub kernel_drops: u64,
    pub malformed: u64,
    pub stop_reason: String,
    pub elapsed: Duration,
    pub demo: Option<DemoStats>,
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
        "kvmtrace: recording to {} with {attached} probes{} (Ctrl-C to stop)",
        opts.output.display(),
        opts.duration
            .map(|d| format!(" for {:.1} s", d.as_secs_f64()))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let mut buf: Vec<Event> = Vec::with_capacity(16 * 1024);
    session.initial_records(&mut buf)?;
    let mut write_error = None;
    let stop_reason = loop {
        if let Err(e) = buf.iter().try_for_each(|ev| writer.push(ev)) {
            write_error = Some(e);
            break "write-error".to_string();
        }
        buf.clear();
        match stop.load(Ordering::SeqCst) {
            SIGINT => break "SIGINT".to_string(),
            SIGTERM => break "SIGTERM".to_string(),
            _ => {}
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break "duration".to_string();
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
    for ev in &buf {
        writer.push(ev)?;
    }
    let events = writer.events();
    writer.finish(&CaptureTrailer {
        events,
        kernel_drops: end.kernel_drops,
        malformed: end.malformed,
        end_ns: crate::source::demo::monotonic_ns(),
        stop_reason: stop_reason.clone(),
    })?;
    Ok(RecordSummary {
        detach: end.detach,
        events,
        kernel_drops: end.kernel_drops,
        malformed: end.malformed,
        stop_reason,
        elapsed: started.elapsed(),
        demo,
    })
}
