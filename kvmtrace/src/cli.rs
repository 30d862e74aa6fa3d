// Command-line interface: clap definitions only (std and clap, nothing of this crate), so
// that build.rs can include this file to generate the shell completions and man pages.
// The module's documentation is on `pub mod cli` in lib.rs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Explains why interrupts reach KVM guests late: eBPF probes on KVM, scheduler, IRQ and
/// lock tracepoints, attributed per vCPU.
#[derive(Debug, Parser)]
#[command(
    name = "kvmtrace",
    version,
    propagate_version = true,
    after_long_help = EXAMPLES
)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  kvmtrace top --demo
      the live view, on the embedded demo guest
  kvmtrace top -p $(pidof qemu-system-x86_64)
      the live view of one VM
  kvmtrace record -p 4242 --duration 60 -o vm.kvmtrace
      a minute of one VM to a capture file
  kvmtrace record --trigger-us 200 -o slow.kvmtrace
      keep only the windows around samples of 200 us or more
  kvmtrace report vm.kvmtrace --hdr-log vm.hlog
      the report, and HdrHistogram logs per vCPU
  kvmtrace report --from-text trace.txt
      the same report from ftrace, trace-cmd or perf script text

kvmtrace's own threads run on CPUs that host no traced vCPU and are
not isolated (--housekeeping); what they still take from a vCPU is
reported as the `tracer` cause. Documentation: README.md and docs/
in the source tree.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live view of every vCPU's interrupt-to-guest latency and its causes (a terminal UI).
    Top(TopArgs),
    /// Trace to a capture file until --duration passes or Ctrl-C / SIGTERM.
    Record(RecordArgs),
    /// Summarise a capture file.
    Report(ReportArgs),
    /// Serve the live per-vCPU latency model as Prometheus/OpenMetrics metrics over HTTP.
    Exporter(ExporterArgs),
    /// Audit the host's settings that matter for interrupt latency (and rank them by a
    /// capture's attributed latency).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Trace only this VMM process (QEMU, Firecracker, ...); repeat for more. Default: every VM.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Run the embedded demo guest (a device interrupt every --demo-period-us) and trace it.
    #[arg(long)]
    pub demo: bool,
    /// Interrupt period of the demo guest, in microseconds.
    #[arg(long, default_value_t = 1000, value_name = "US", requires = "demo")]
    pub demo_period_us: u64,
    /// Extra time the demo VMM spends on each port I/O exit, in microseconds (a slow VMM).
    #[arg(long, default_value_t = 0, value_name = "US", requires = "demo")]
    pub demo_slow_io_us: u64,
    /// Pin the demo's vCPU thread to this host CPU.
    #[arg(long, value_name = "CPU", requires = "demo")]
    pub demo_cpu: Option<usize>,
    /// The demo's interrupt paths, comma-separated: pic (KVM_IRQ_LINE through the PIC), msi
    /// (KVM_SIGNAL_MSI into the LAPIC), timer (the guest's LAPIC timer), irqoff (an MSI while
    /// the guest has interrupts disabled), or all.
    #[arg(long, default_value = "pic", value_name = "PATHS", requires = "demo",
          value_parser = demo_paths)]
    pub demo_path: String,
    /// How long each irqs-off phase of the demo guest lasts, in microseconds.
    #[arg(long, default_value_t = 200, value_name = "US", requires = "demo")]
    pub demo_irqoff_us: u64,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    pub ring_mib: u32,
    /// Stream every kvm_exit/kvm_entry. By default each exit's latency is counted in the
    /// kernel (per vCPU and exit reason, every exit) and exits are streamed only near
    /// interrupt windows or when they take at least --exit-threshold-us.
    #[arg(long)]
    pub all_exits: bool,
    /// Stream an exit that took at least this long, in microseconds.
    #[arg(long, default_value_t = 1000, value_name = "US")]
    pub exit_threshold_us: u64,
    /// How long an interrupt accepted for a vCPU, its wake-up, switch-in or injection
    /// streams its exits, in microseconds.
    #[arg(long, default_value_t = 50, value_name = "US")]
    pub stream_hold_us: u64,
    /// Attach classic tracepoint programs only, even where the kernel's BTF allows the
    /// cheaper BTF ones (for kernels where those misbehave, and to compare the two).
    #[arg(long)]
    pub no_btf: bool,
    /// Also take kernel stacks where latency is spent, and a cpu-clock profile of the CPUs
    /// running traced vCPUs (docs/stacks.md; costs in docs/performance.md).
    #[arg(long)]
    pub stacks: bool,
    /// The profile's sampling frequency per CPU, in Hz (0: stacks at events only; the
    /// default is `limits::DEFAULT_STACK_HZ`, checked by a test: this file uses only clap).
    #[arg(long, default_value_t = 4999, value_name = "HZ", requires = "stacks")]
    pub stack_hz: u32,
    /// CPUs for kvmtrace's own threads (a cpulist such as 0 or 0-3,8). `auto`: those that
    /// host no traced vCPU and are not isolated (isolcpus, nohz_full); `off`: wherever the
    /// scheduler puts them.
    #[arg(long, default_value = "auto", value_name = "CPUS")]
    pub housekeeping: String,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Capture file to write (created 0600).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Overwrite FILE if it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Flight recorder: keep events in memory and write only the windows around
    /// interrupt-to-guest latencies of at least US microseconds.
    #[arg(long, value_name = "US")]
    pub trigger_us: Option<u64>,
    /// Seconds written before each trigger.
    #[arg(
        long,
        default_value_t = 5.0,
        value_name = "SECS",
        requires = "trigger_us"
    )]
    pub pre: f64,
    /// Seconds written after each trigger.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        requires = "trigger_us"
    )]
    pub post: f64,
    /// Stop after this many windows.
    #[arg(long, default_value_t = 1, value_name = "K", requires = "trigger_us")]
    pub max_triggers: u32,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Refresh interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval: u64,
    /// Browse a capture instead of tracing live (space: play/pause, Left/Right: step).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pids", "demo"])]
    pub replay: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Capture file written by `kvmtrace record`.
    #[arg(
        value_name = "FILE",
        required_unless_present = "from_text",
        conflicts_with = "from_text"
    )]
    pub file: Option<PathBuf>,
    /// Analyse a text trace instead: /sys/kernel/tracing/trace or trace_pipe output,
    /// `trace-cmd report`, or `perf script` (detected automatically).
    #[arg(long, value_name = "TEXT")]
    pub from_text: Option<PathBuf>,
    /// Print JSON (schema: docs/report-schema.md).
    #[arg(long)]
    pub json: bool,
    /// Worst samples to keep, with their breakdown and timeline.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub worst: usize,
    /// Also write an HdrHistogram interval log per vCPU and metric to FILE.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Also write the worst samples' timelines as Chrome trace-event JSON to FILE (opens in
    /// Perfetto's UI).
    #[arg(long, value_name = "FILE")]
    pub chrome_trace: Option<PathBuf>,
    /// Also write the kernel stacks of a `--stacks` capture as folded stacks to FILE, one
    /// line per (cause, stack) weighted in nanoseconds (flamegraph.pl, inferno, speedscope).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Also write them as a flame graph SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,
    /// What the stack weights are: `latency` (interrupt-to-guest latency by cause) or
    /// `time` (the vCPU threads' whole run by state).
    #[arg(long, default_value = "latency", value_name = "WEIGHT",
          value_parser = ["latency", "time"])]
    pub stack_weight: String,
    /// Keep the time of segments no profile tick fell in as `[not sampled]` instead of
    /// spreading it over the same cause's sampled stacks in proportion.
    #[arg(long)]
    pub stack_exact: bool,
    /// Overwrite export files that exist.
    #[arg(short, long)]
    pub force: bool,
}

/// `--demo-path`: comma-separated `pic`, `msi`, `timer`, `irqoff` or `all` (checked here;
/// the demo reads the words).
fn demo_paths(s: &str) -> Result<String, String> {
    for word in s.split(',').map(str::trim) {
        if !["pic", "msi", "timer", "irqoff", "all"].contains(&word) {
            return Err(format!(
                "unknown demo path {word:?}: give pic, msi, timer, irqoff or all, comma-separated"
            ));
        }
    }
    Ok(s.to_string())
}

#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Address to serve /metrics and /report on (0.0.0.0:PORT for every interface).
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// (VM, vCPU) series exported at most; further vCPUs are counted, not exported.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_series: usize,
    /// Seconds a VM's series are kept after its process is gone.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub vm_grace: f64,
    /// Worst samples kept for /report.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub worst: usize,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rank the findings by the latency this capture's report attributes to them.
    #[arg(value_name = "CAPTURE")]
    pub capture: Option<PathBuf>,
    /// Print JSON (a `findings` list).
    #[arg(long)]
    pub json: bool,
    /// Read /proc and /sys under this directory instead of / (a copy of another host's).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
}
