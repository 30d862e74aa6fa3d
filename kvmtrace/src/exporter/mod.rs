//! `kvmtrace exporter`: the live session and attribution engine behind an HTTP endpoint, for
//! Prometheus to scrape.
//!
//! One task owns the session, the engine and the exported state ([`metrics::Metrics`]); the
//! HTTP handlers (axum, on the same current-thread runtime) send it a request over a bounded
//! channel and wait for its answer, so every scrape reads the engine's model at that moment
//! and nothing is shared behind a lock. Every second the owner also syncs the exported
//! state, drops the series of VMs gone for longer than `--vm-grace`, and replaces the engine
//! when it holds vCPUs of VMs that went away (memory stays bounded on a host where VMs come
//! and go, and a new VM's raises are never taken for a gone VM's vCPU). SIGTERM or SIGINT stops the server, detaches the probes and exits 0.
//!
//! Endpoints: `/metrics` (OpenMetrics when the scraper accepts it, else Prometheus text
//! 0.0.4), `/report` (the JSON report of `kvmtrace report --json`, schema
//! docs/report-schema.md, over what the current engine saw), `/` (an index).

pub mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kvmtrace_common::{ev, Event, Origin};
use tokio::sync::{mpsc, oneshot, watch};

use self::metrics::{Metrics, MetricsConfig};
use crate::source::session::{Session, SessionOptions};
use kvmtrace_analysis::capture::CaptureHeader;
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::threads::vm_name_from_cmdline;

/// Settings of `kvmtrace exporter`.
#[derive(Clone, Debug)]
pub struct ExporterOptions {
    pub listen: SocketAddr,
    pub session: SessionOptions,
    pub metrics: MetricsConfig,
    /// Worst samples kept for `/report`.
    pub worst: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(
        "cannot listen on {addr}: the address is already in use (another exporter running? \
         choose another with --listen)"
    )]
    AddressInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long a handler waits for the owner's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests may take after a stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

enum Request {
    Metrics {
        openmetrics: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Report {
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// Binds the listening socket, with errors that say what to do.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ExporterError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => ExporterError::AddressInUse { addr },
            _ => ExporterError::Listen { addr, source },
        })
}

/// What the owner task holds.
struct Owner {
    engine: Engine,
    engine_cfg: EngineConfig,
    metrics: Metrics,
    header: CaptureHeader,
    /// VMM pids of the engine's vCPUs found gone, and when (CLOCK_MONOTONIC ns, the
    /// events' clock).
    gone_seen: HashMap<u32, u64>,
}

/// How long a gone VM's vCPUs stay in the engine at most when no later event shows the
/// engine has caught up with the moment it was found gone.
const GONE_DRAIN_NS: u64 = 1_000_000_000;

fn proc_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

impl Owner {
    fn sync(&mut self) {
        let engine = &self.engine;
        self.metrics.sync(engine, &mut |pid| {
            engine
                .threads()
                .vm_name(pid)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| vm_name_from_cmdline(&c))
                        .unwrap_or_default()
                })
        });
    }

    /// The once-a-second upkeep: sync, drop gone VMs, replace the engine if it holds too
    /// many of them.
    fn upkeep(&mut self, now_ns: u64) {
        self.sync();
        let dropped = self.metrics.prune(now_ns, &mut proc_alive);
        if dropped > 0 {
            log::info!("dropped the series of {dropped} vCPU(s) of VMs gone for --vm-grace");
        }
        let gone: Vec<u32> = self
            .engine
            .vcpus()
            .filter(|v| !proc_alive(v.tgid))
            .map(|v| v.tgid)
            .collect();
        self.gone_seen.retain(|pid, _| gone.contains(pid));
        for &pid in &gone {
            self.gone_seen.entry(pid).or_insert(now_ns);
        }
        // The VM's last events may still be in the ring buffer or the reorder window when
        // its process is found gone: the engine is replaced once it has processed events
        // up to that moment, or a second later at most (an idle host sends none).
        let clock = self.engine.clock();
        let drained = self
            .gone_seen
            .values()
            .all(|&seen| clock >= seen || now_ns.saturating_sub(seen) >= GONE_DRAIN_NS);
        if !gone.is_empty() && drained {
            log::info!(
                "replacing the attribution engine to forget {} vCPU(s) of gone VMs",
                gone.len()
            );
            self.replace_engine(&mut proc_alive);
            self.gone_seen.clear();
        }
    }

    /// Forgets the vCPUs of VMs that went away: the engine is flushed (windows open now
    /// count as incomplete), its last numbers go into the exported state, and a new engine
    /// starts, told the live vCPU threads' ids and names and the VMs' names as the session
    /// told the old one. A gone vCPU left in the engine would keep its vCPU id, and raises
    /// of a new VM could be taken for it.
    fn replace_engine(&mut self, alive: &mut dyn FnMut(u32) -> bool) {
        self.engine.flush();
        self.sync();
        let seed = seed_records(&self.engine, alive);
        self.engine = Engine::new(self.engine_cfg.clone());
        self.metrics.engine_replaced();
        for e in &seed {
            self.engine.push(e);
        }
    }

    fn answer(&mut self, req: Request) {
        match req {
            Request::Metrics { openmetrics, reply } => {
                self.sync();
                let text = self
                    .metrics
                    .encode(openmetrics)
                    .map_err(|_| "encoding the metrics failed".to_string());
                let _ = reply.send(text);
            }
            Request::Report { reply } => {
                let report = kvmtrace_analysis::report::Report::build(
                    "live",
                    &self.header,
                    None,
                    None,
                    &self.engine,
                );
                let _ =
                    reply.send(serde_json::to_string_pretty(&report).map_err(|e| e.to_string()));
            }
        }
    }
}

/// What a new engine needs to know of the live VMs: each vCPU thread's id and name and
/// each VM's name, as the session's thread records said them.
fn seed_records(engine: &Engine, alive: &mut dyn FnMut(u32) -> bool) -> Vec<Event> {
    let at = |tid, tgid| Origin {
        ts_ns: engine.clock(),
        tid,
        tgid,
        cpu: 0,
    };
    let mut out = Vec::new();
    let mut vms = std::collections::BTreeSet::new();
    for v in engine.vcpus().filter(|v| alive(v.tgid)) {
        let comm = engine
            .threads()
            .get(v.tid)
            .map(|t| t.comm.clone())
            .unwrap_or_default();
        out.push(Event::new(
            at(v.tid, v.tgid),
            &ev::ThreadInfo::thread(v.vcpu_id, &comm),
        ));
        vms.insert(v.tgid);
    }
    for pid in vms {
        if let Some(name) = engine.threads().vm_name(pid) {
            out.push(Event::new(at(pid, pid), &ev::ThreadInfo::vm_name(name)));
        }
    }
    out
}

/// Sends SIGTERM / SIGINT's name to `stop`.
fn watch_signals(stop: watch::Sender<Option<&'static str>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let mut s = signal(kind).context("installing a signal handler")?;
        let stop = stop.clone();
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                stop.send_replace(Some(name));
            }
        });
    }
    Ok(())
}

/// `kvmtrace exporter`.
pub async fn run(opts: &ExporterOptions) -> anyhow::Result<()> {
    // The port first: a busy port fails before any probe is attached.
    let listener = bind(opts.listen).await?;
    let addr = listener.local_addr().unwrap_or(opts.listen);
    let mut session = Session::start(&opts.session)?;
    let (stop_tx, mut stop_rx) = watch::channel(None);
    watch_signals(stop_tx.clone())?;

    let (tx, mut rx) = mpsc::channel::<Request>(16);
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/report", get(report_handler))
        .route("/", get(index))
        .with_state(tx);
    let mut server_stop = stop_tx.subscribe();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(Option::is_some).await;
            })
            .await
    });

    // As record and top: the header says which delivery evidence the probes give.
    let engine_cfg = EngineConfig {
        worst: opts.worst,
        ..EngineConfig::default()
    }
    .for_capture(&session.header);
    let h = &session.header;
    let probes = h
        .probes
        .iter()
        .map(|p| (p.tracepoint.clone(), p.attached))
        .collect();
    let info = vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("hostname", h.host.hostname.clone()),
        ("kernel", h.host.kernel.clone()),
        (
            "kvm_backend",
            h.host.kvm_backend.clone().unwrap_or_else(|| "none".into()),
        ),
    ];
    let mut owner = Owner {
        engine: Engine::new(engine_cfg.clone()),
        engine_cfg,
        metrics: Metrics::new(opts.metrics.clone(), probes, info),
        header: session.header.clone(),
        gone_seen: HashMap::new(),
    };
    eprintln!(
        "kvmtrace: exporter serving http://{addr}/metrics with {} probes ({}); SIGTERM stops it",
        session.probes().attached().count(),
        if opts.session.demo.is_some() {
            "the demo guest".to_string()
        } else if opts.session.pids.is_empty() {
            "every VM".to_string()
        } else {
            format!("VMM pids {:?}", opts.session.pids)
        }
    );

    let mut buf: Vec<Event> = Vec::with_capacity(16 * 1024);
    session.initial_records(&mut buf)?;
    for e in buf.drain(..) {
        owner.engine.push(&e);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            _ = stop_rx.changed() => break Ok(()),
            Some(req) = rx.recv() => owner.answer(req),
            _ = tick.tick() => owner.upkeep(crate::source::demo::monotonic_ns()),
            r = session.read(&mut buf, Duration::from_millis(100)) => {
                if let Err(e) = r {
                    break Err(e.into());
                }
                for e in buf.drain(..) {
                    owner.engine.push(&e);
                }
            }
        }
    };
    // Stop serving (also after an error), then detach.
    let reason = (*stop_tx.borrow()).unwrap_or("error");
    stop_tx.send_replace(Some(reason));
    drop(rx);
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => log::warn!("the HTTP server ended with an error: {e}"),
        Ok(Err(e)) => log::warn!("the HTTP server task failed: {e}"),
        Err(_) => log::warn!("HTTP requests still open after {SHUTDOWN_TIMEOUT:?}; stopping"),
    }
    let end = session.finish(&mut buf);
    if let Some(Err(e)) = &end.demo {
        log::warn!("the demo guest did not stop cleanly: {e}");
    }
    result?;
    eprintln!(
        "kvmtrace: exporter stopped by {}; {} events lost while tracing",
        stop_rx.borrow().unwrap_or("request"),
        end.kernel_drops + end.malformed
    );
    drop(end.detach);
    Ok(())
}

async fn ask(
    tx: &mpsc::Sender<Request>,
    make: impl FnOnce(oneshot::Sender<Result<String, String>>) -> Request,
) -> Result<String, (StatusCode, String)> {
    let (reply, answer) = oneshot::channel();
    // A full queue means scrapes arrive faster than they are answered: refuse, do not queue.
    tx.try_send(make(reply)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight\n".to_string(),
        ),
        mpsc::error::TrySendError::Closed(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the exporter is stopping\n".to_string(),
        ),
    })?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(text))) => Ok(text),
        Ok(Ok(Err(e))) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))),
        Ok(Err(_)) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the exporter is stopping\n".to_string(),
        )),
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer in time\n".to_string(),
        )),
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Does the scraper accept OpenMetrics? (Prometheus says so in its Accept header.)
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics_handler(State(tx): State<mpsc::Sender<Request>>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(&headers);
    match ask(&tx, |reply| Request::Metrics { openmetrics, reply }).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                if openmetrics {
                    OPENMETRICS
                } else {
                    PROMETHEUS_TEXT
                },
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn report_handler(State(tx): State<mpsc::Sender<Request>>) -> Response {
    match ask(&tx, |reply| Request::Report { reply }).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn index() -> &'static str {
    "kvmtrace exporter\n\n/metrics  Prometheus / OpenMetrics metrics\n/report   the JSON report (docs/report-schema.md) of what the exporter saw\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_chosen_from_prometheus_accept_header() {
        let mut h = HeaderMap::new();
        assert!(!wants_openmetrics(&h));
        h.insert(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
                .parse()
                .unwrap(),
        );
        assert!(wants_openmetrics(&h));
    }

    #[test]
    fn a_busy_port_is_named_in_the_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = first.local_addr().unwrap();
            let e = bind(addr).await.unwrap_err();
            assert!(matches!(e, ExporterError::AddressInUse { .. }));
            assert!(e.to_string().contains("already in use"), "{e}");
        });
    }
}
