use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{CommandFactory as _, FromArgMatches as _};
use kvmtrace::cli::{
    CheckArgs, Cli, Command, ExporterArgs, RecordArgs, ReportArgs, TargetArgs, TopArgs,
};
use kvmtrace::record::{record, RecordOptions};
use kvmtrace::source::{demo::DemoConfig, session::SessionOptions};

/// `-V`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("KVMTRACE_GIT"),
    ")"
);

fn main() -> ExitCode {
    let mut cmd = Cli::command().version(VERSION);
    // `--version` also says what the kernel offers; looked up only when asked for.
    if std::env::args_os().any(|a| a == "--version") {
        let kernel = kvmtrace::probes::features::KernelFeatures::detect();
        cmd = cmd.long_version(format!("{VERSION}\n{kernel}"));
    }
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Top(args) => run_top(args),
        Command::Record(args) => run_record(args),
        Command::Report(args) => run_report(args),
        Command::Exporter(args) => run_exporter(args),
        Command::Check(args) => run_check(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvmtrace: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many errors print their cause in their own
/// message (`{path}: {source}`) and also return it as their source, which `{:#}` would print
/// a second time ("... (os error 2): No such file or directory (os error 2)").
fn error_text(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn session_options(t: &TargetArgs) -> anyhow::Result<SessionOptions> {
    if !t.ring_mib.is_power_of_two() || t.ring_mib > 1024 {
        bail!(
            "--ring-mib must be a power of two up to 1024, not {}",
            t.ring_mib
        );
    }
    if t.stack_hz > 20_000 {
        bail!(
            "--stack-hz must be at most 20000 (the kernel throttles faster sampling), not {}",
            t.stack_hz
        );
    }
    let paths = t
        .demo_path
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--demo-path: {e}"))?;
    Ok(SessionOptions {
        pids: t.pids.clone(),
        demo: t.demo.then(|| DemoConfig {
            irq_period: Duration::from_micros(t.demo_period_us),
            slow_io: Duration::from_micros(t.demo_slow_io_us),
            vcpu_cpu: t.demo_cpu,
            paths,
            irqoff: Duration::from_micros(t.demo_irqoff_us),
            ..DemoConfig::default()
        }),
        ring_bytes: Some(t.ring_mib << 20),
        all_exits: t.all_exits,
        exit_threshold_ns: Some(t.exit_threshold_us.saturating_mul(1000)),
        stream_hold_ns: Some(t.stream_hold_us.saturating_mul(1000)),
        no_btf: t.no_btf,
        stacks: t
            .stacks
            .then_some(kvmtrace::probes::stacks::StackOptions { hz: t.stack_hz }),
        housekeeping: t.housekeeping.parse()?,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn run_record(args: RecordArgs) -> anyhow::Result<()> {
    let duration = match args.duration {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            bail!("--duration must be a positive number of seconds")
        }
        Some(d) => Some(Duration::from_secs_f64(d)),
        None => None,
    };
    let secs = |v: f64, what: &str| -> anyhow::Result<Duration> {
        if v >= 0.0 && v.is_finite() && v <= 3600.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            bail!("--{what} must be between 0 and 3600 seconds")
        }
    };
    let trigger = match args.trigger_us {
        Some(us) => {
            if args.max_triggers == 0 {
                bail!("--max-triggers must be at least 1");
            }
            Some(kvmtrace::record::TriggerOptions {
                threshold: Duration::from_micros(us),
                pre: secs(args.pre, "pre")?,
                post: secs(args.post, "post")?,
                max_triggers: args.max_triggers,
            })
        }
        None => None,
    };
    let opts = RecordOptions {
        output: args.output,
        force: args.force,
        duration,
        session: session_options(&args.target)?,
        trigger,
    };
    let summary = runtime()?.block_on(record(&opts))?;
    eprintln!(
        "kvmtrace: {} events in {:.1} s to {} (stopped by {}); dropped: {} in the kernel, {} undecodable",
        summary.events,
        summary.elapsed.as_secs_f64(),
        opts.output.display(),
        summary.stop_reason,
        summary.kernel_drops,
        summary.malformed,
    );
    if summary.not_run > 0 {
        eprintln!(
            "kvmtrace: {} tracepoint hits the kernel ran no kvmtrace program for (another BPF \
             program or a map syscall held that CPU; most on CPUs kvmtrace ignores)",
            summary.not_run
        );
    }
    if opts.trigger.is_some() {
        eprintln!(
            "kvmtrace: {} slow sample(s) in the windows written",
            summary.triggers.len()
        );
        for t in summary.triggers.iter().take(5) {
            eprintln!(
                "kvmtrace:   {:.1} us on tid {} at {} ns",
                t.total_ns as f64 / 1e3,
                t.tid,
                t.open_ns
            );
        }
    }
    eprintln!(
        "kvmtrace: its own CPU time: {:.3} s ({:.1} % of one CPU)",
        summary.tracer_cpu_ns as f64 / 1e9,
        100.0 * summary.tracer_cpu_ns as f64 / summary.elapsed.as_nanos().max(1) as f64
    );
    if let Some(d) = summary.demo {
        eprintln!(
            "kvmtrace: demo guest: {} interrupts raised, {} acknowledged, {} port I/O exits",
            d.raised, d.acked, d.work_exits
        );
        for p in kvmtrace::source::demo::DemoPath::ALL {
            let c = d.path(p);
            if c.raised + c.acked > 0 {
                eprintln!(
                    "kvmtrace:   {:<7} {} {}, {} acknowledged",
                    p.name(),
                    c.raised,
                    if p == kvmtrace::source::demo::DemoPath::Timer {
                        "periods"
                    } else {
                        "raised"
                    },
                    c.acked
                );
            }
        }
        if d.msi_blocked > 0 {
            eprintln!(
                "kvmtrace:   {} MSIs refused by the guest's LAPIC",
                d.msi_blocked
            );
        }
    }
    eprintln!("kvmtrace: see `kvmtrace report {}`", opts.output.display());
    Ok(())
}

fn run_top(args: TopArgs) -> anyhow::Result<()> {
    if !(50..=60_000).contains(&args.interval) {
        bail!("--interval must be between 50 and 60000 ms");
    }
    let interval = Duration::from_millis(args.interval);
    let rt = runtime()?;
    match &args.replay {
        Some(path) => rt.block_on(kvmtrace::tui::run_replay(path, interval)),
        None => {
            let opts = kvmtrace::tui::TopOptions {
                session: session_options(&args.target)?,
                interval,
            };
            rt.block_on(kvmtrace::tui::run_live(&opts))
        }
    }
}

fn run_report(args: ReportArgs) -> anyhow::Result<()> {
    use kvmtrace_analysis::report::{analyse_capture, analyse_text, export, stacks};
    let cfg = kvmtrace_analysis::engine::EngineConfig {
        worst: args.worst,
        ..Default::default()
    };
    let (report, engine) = match (&args.from_text, &args.file) {
        (Some(text), _) => analyse_text(text, cfg)?,
        (None, Some(file)) => analyse_capture(file, cfg)?,
        (None, None) => bail!("give a capture FILE or --from-text TEXT"),
    };
    if let Some(p) = &args.hdr_log {
        let n = export::write_hdr_log(p, args.force, &engine)?;
        eprintln!("kvmtrace: wrote {n} histograms to {}", p.display());
    }
    if let Some(p) = &args.chrome_trace {
        let n = export::write_chrome_trace(p, args.force, &engine)?;
        eprintln!(
            "kvmtrace: wrote {n} trace events ({} worst samples) to {}",
            engine.worst().len(),
            p.display()
        );
    }
    let fold = stacks::Fold {
        weight: args.stack_weight.parse().map_err(anyhow::Error::msg)?,
        exact: args.stack_exact,
    };
    if let Some(p) = &args.folded {
        let f = stacks::write_folded(p, args.force, &engine, fold)?;
        eprintln!(
            "kvmtrace: wrote {} folded stacks ({} weight, {:.1} us) to {}",
            f.lines,
            fold.weight.name(),
            f.total_ns as f64 / 1e3,
            p.display()
        );
    }
    if let Some(p) = &args.flamegraph {
        let f = stacks::write_flamegraph(p, args.force, &engine, fold)?;
        eprintln!(
            "kvmtrace: wrote a flame graph of {} stacks ({} weight) to {}",
            f.lines,
            fold.weight.name(),
            p.display()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn run_exporter(args: ExporterArgs) -> anyhow::Result<()> {
    if args.max_series == 0 || args.max_series > 100_000 {
        bail!("--max-series must be between 1 and 100000");
    }
    if !(args.vm_grace >= 0.0 && args.vm_grace.is_finite() && args.vm_grace <= 86_400.0) {
        bail!("--vm-grace must be between 0 and 86400 seconds");
    }
    if args.worst > 1000 {
        bail!("--worst must be at most 1000");
    }
    let opts = kvmtrace::exporter::ExporterOptions {
        listen: args.listen,
        session: session_options(&args.target)?,
        metrics: kvmtrace::exporter::metrics::MetricsConfig {
            max_series: args.max_series,
            vm_grace_ns: Duration::from_secs_f64(args.vm_grace).as_nanos() as u64,
            ..Default::default()
        },
        worst: args.worst,
    };
    runtime()?.block_on(kvmtrace::exporter::run(&opts))
}

fn run_check(args: CheckArgs) -> anyhow::Result<()> {
    kvmtrace::check::run(&args.root, args.capture.as_deref(), args.json)
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: cannot open: {source}")]
    struct Open {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn os_errors_are_said_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(Open {
            path: "x.kvmtrace".into(),
            source: io,
        })
        .context("reading the capture");
        let text = error_text(&e);
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(text.starts_with("reading the capture: x.kvmtrace: cannot open: "));
    }
}
