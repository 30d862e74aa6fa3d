//! Developer tasks: `cargo xtask setup | demo | test | bench | fuzz | svm-host | svm-demo`.
//!
//! `setup` installs what building and testing kvmtrace needs on a fresh Debian machine (the
//! nightly's rust-src, bpf-linker built against the nightly's own LLVM, the Debian tools the
//! tests and benchmarks use) and says what it installs; it does nothing when all is there.
//! It then builds target/release/kvmtrace and installs the shell completions and man pages
//! the build generated (kvmtrace/build.rs) under /usr/local/share.
//!
//! `svm-host` and `svm-demo` run kvmtrace inside a real AMD SVM KVM host under QEMU (svm.rs).

mod svm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and Debian packages kvmtrace needs (idempotent), build
    /// target/release/kvmtrace, and install its shell completions and man pages.
    Setup,
    /// Setup, build the release binary, record the embedded demo guest and report on it.
    Demo {
        /// Seconds to record.
        #[arg(long, default_value_t = 5)]
        duration: u32,
    },
    /// Setup, then run the whole test suite, privileged tests included.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Setup, then measure what tracing costs a guest's exits: kvmtrace beside bpftrace,
    /// perf record and ftrace, one table (docs/performance.md keeps its figures).
    Bench {
        /// Also the engine and TUI benchmarks.
        #[arg(long)]
        all: bool,
        /// Arguments for the probe-cost bench (`--rounds N`, `--secs S`,
        /// `--kvmtrace LABEL=PATH[,ARG...]`, ...).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Setup, then fuzz the capture reader and the text importer, alone and through the
    /// engine and the report.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        secs: u32,
    },
    /// Boot a real AMD SVM KVM host under QEMU (TCG) with kvmtrace inside, run a command
    /// there and copy the files it names back (docs/svm-host.md). Needs `cargo xtask setup`.
    SvmHost {
        /// Seconds for one boot + command + copy; QEMU is killed after that.
        #[arg(long, default_value_t = 240, value_name = "S")]
        timeout: u64,
        /// A file to copy back after the command (absolute path inside); repeatable.
        #[arg(long = "copy-out", value_name = "PATH_INSIDE")]
        copy_out: Vec<String>,
        /// Where the copied files and the console log go [default: target/svm-host/out].
        #[arg(long, value_name = "DIR")]
        keep_dir: Option<PathBuf>,
        /// QEMU CPU model; it must expose SVM.
        #[arg(long, default_value = "max")]
        cpu: String,
        /// vCPUs of the SVM host (2 sometimes froze the inner kernel on 2-core machines).
        #[arg(long, default_value_t = 1)]
        smp: u32,
        /// Show the console only when something fails.
        #[arg(long)]
        quiet: bool,
        /// Another program to put in `/bin` inside, with its libraries (e.g. bpftool, a
        /// benchmark); repeatable.
        #[arg(long = "bin", value_name = "PATH")]
        bins: Vec<PathBuf>,
        /// The command, after `--` (e.g. `-- kvmtrace record --demo -d 3 -o /tmp/a.kvmtrace`).
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Record the demo guest inside the SVM host and leave the capture at OUTPUT here, then
    /// print its report.
    SvmDemo {
        /// Capture file to write on this machine.
        output: PathBuf,
        /// Seconds to record.
        #[arg(long, default_value_t = 3.0, value_name = "S")]
        duration: f64,
        /// Seconds for the whole boot + recording + copy.
        #[arg(long, default_value_t = 240, value_name = "S")]
        timeout: u64,
        /// Also write the raw ftrace text (tracefs `trace`) of the same run here.
        #[arg(long, value_name = "FILE")]
        ftrace: Option<PathBuf>,
        /// Keep N lines of the ftrace text, from the middle of the run.
        #[arg(long, default_value_t = 4000, value_name = "N")]
        ftrace_lines: u32,
        /// Overwrite OUTPUT (and the ftrace file) if they exist.
        #[arg(long)]
        force: bool,
        /// Show the console only when something fails.
        #[arg(long)]
        quiet: bool,
        /// Arguments for `kvmtrace record --demo`, last (e.g. `--demo-args --demo-path msi`).
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARGS")]
        demo_args: Vec<String>,
    },
}

/// Debian packages: the command each provides, and why kvmtrace wants it.
const PACKAGES: &[(&str, &str, &str)] = &[
    (
        "bpftool",
        "bpftool",
        "per-program BPF run time in the benchmarks",
    ),
    (
        "bpftrace",
        "bpftrace",
        "the one-liner the probe cost is compared with",
    ),
    (
        "linux-perf",
        "perf",
        "perf record in the probe-cost bench, and the test that perf still sees events",
    ),
    ("tmux", "tmux", "the real-terminal test"),
    ("man-db", "man", "the test that renders the man page"),
    (
        "prometheus",
        "prometheus",
        "the exporter test scrapes kvmtrace with a real Prometheus server; promtool checks the alert rules",
    ),
    (
        "systemd",
        "systemd-analyze",
        "checking the exporter's systemd unit",
    ),
    (
        "util-linux",
        "setpriv",
        "running a test as an unprivileged user",
    ),
    (
        "qemu-system-x86",
        "qemu-system-x86_64",
        "the SVM host: a real AMD SVM KVM under QEMU's emulation (svm-host, tests/svm_host.rs)",
    ),
    ("busybox-static", "busybox", "the SVM host's initramfs"),
    ("cpio", "cpio", "packing the SVM host's initramfs"),
    ("kmod", "kmod", "the kernel package's module hooks"),
];

/// The kernel the SVM host boots: installed beside the running one, which it does not touch.
const SVM_KERNEL_PACKAGE: (&str, &str) = (
    "linux-image-amd64",
    "the kernel and kvm-amd module the SVM host boots (the running kernel is not touched)",
);

const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => {
            setup()?;
            let assets = build_release_assets()?;
            install_assets(&assets)
        }
        Task::Demo { duration } => {
            setup()?;
            run(Command::new("cargo").args(["build", "--release", "-p", "kvmtrace"]))?;
            let bin = root.join("target/release/kvmtrace");
            let capture = root.join("target/demo.kvmtrace");
            run(Command::new(&bin)
                .args(["record", "--demo", "--force", "--duration"])
                .arg(duration.to_string())
                .arg("-o")
                .arg(&capture))?;
            run(Command::new(&bin).arg("report").arg(&capture))
        }
        Task::Test { args } => {
            setup()?;
            // Formatting and lints first: they fail fast and cost little.
            run(Command::new("cargo").args(["fmt", "--all", "--check"]))
                .context("the tree is not formatted: run `cargo fmt --all`")?;
            run(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))
                .context("clippy found warnings")?;
            // tests/svm_host.rs boots the release binary inside the SVM host.
            run(Command::new("cargo").args(["build", "--release", "-p", "kvmtrace"]))?;
            // A short fuzz run first, so that cargo test's summary closes the output.
            fuzz(&root, 20)?;
            // Every test binary runs even after one fails: one run shows every failure.
            run(Command::new("cargo")
                .args(["test", "--all-targets", "--no-fail-fast"])
                .args(&args))
        }
        Task::Fuzz { secs } => {
            setup()?;
            fuzz(&root, secs)
        }
        Task::Bench { all, args } => {
            setup()?;
            run(Command::new("cargo").args(["build", "--release", "-p", "kvmtrace"]))?;
            run(Command::new("cargo")
                .args([
                    "bench",
                    "-p",
                    "kvmtrace",
                    "--bench",
                    "probe_cost",
                    "--",
                    "--bench",
                ])
                .args(&args))?;
            if all {
                for b in ["engine", "tui"] {
                    run(Command::new("cargo").args(["bench", "-p", "kvmtrace", "--bench", b]))?;
                }
            }
            Ok(())
        }
        Task::SvmHost {
            timeout,
            copy_out,
            keep_dir,
            cpu,
            smp,
            quiet,
            bins,
            cmd,
        } => {
            let target = target_dir(&root);
            let opts = svm::Options {
                kvmtrace: build_release(&target)?,
                extra_bins: bins,
                cmd,
                copy_out,
                out_dir: keep_dir.unwrap_or_else(|| target.join("svm-host/out")),
                work_dir: target.join("svm-host"),
                timeout: Duration::from_secs(timeout),
                cpu,
                smp,
                echo: !quiet,
            };
            let o = svm::run(&opts)?;
            let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
            eprintln!(
                "xtask: svm-host: kernel {}, QEMU {}, {} attempt(s); /init at {:.1} s, command at {:.1} s, done at {:.1} s",
                o.kernel,
                o.qemu_version,
                o.attempts,
                secs(o.init_after),
                secs(o.command_after),
                o.total.as_secs_f64()
            );
            for f in &o.files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Task::SvmDemo {
            output,
            duration,
            timeout,
            ftrace,
            ftrace_lines,
            force,
            quiet,
            demo_args,
        } => svm_demo(
            &root,
            SvmDemo {
                output,
                duration,
                timeout,
                ftrace,
                ftrace_lines,
                force,
                quiet,
                demo_args,
            },
        ),
    }
}

/// The target directory cargo uses here (`CARGO_TARGET_DIR` or `target/`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d))
}

/// Builds the release kvmtrace and returns its path.
fn build_release(target: &Path) -> anyhow::Result<PathBuf> {
    run(Command::new("cargo").args(["build", "--release", "-p", "kvmtrace"]))?;
    Ok(target.join("release/kvmtrace"))
}

struct SvmDemo {
    output: PathBuf,
    duration: f64,
    timeout: u64,
    ftrace: Option<PathBuf>,
    ftrace_lines: u32,
    force: bool,
    quiet: bool,
    demo_args: Vec<String>,
}

/// The tracepoints kvmtrace attaches (kvmtrace-common's `kinds!` table), as tracefs
/// `events/` paths: what the raw ftrace text of `svm-demo --ftrace` holds.
const FTRACE_EVENTS: &[&str] = &[
    "kvm/kvm_exit",
    "kvm/kvm_entry",
    "kvm/kvm_userspace_exit",
    "kvm/kvm_inj_virq",
    "kvm/kvm_apic_accept_irq",
    "kvm/kvm_set_irq",
    "kvm/kvm_msi_set_irq",
    "kvm/kvm_pic_set_irq",
    "kvm/kvm_ioapic_set_irq",
    "kvm/kvm_vcpu_wakeup",
    "kvm/kvm_pio",
    "kvm/kvm_mmio",
    "kvm/kvm_msr",
    "sched/sched_switch",
    "sched/sched_wakeup",
    "sched/sched_wakeup_new",
    "sched/sched_migrate_task",
    "irq/irq_handler_entry",
    "irq/irq_handler_exit",
    "irq/softirq_entry",
    "irq/softirq_exit",
    "irq_vectors/local_timer_entry",
    "irq_vectors/local_timer_exit",
    "irq_vectors/reschedule_entry",
    "irq_vectors/reschedule_exit",
    "irq_vectors/call_function_entry",
    "irq_vectors/call_function_exit",
    "irq_vectors/call_function_single_entry",
    "irq_vectors/call_function_single_exit",
    "timer/hrtimer_expire_entry",
    "timer/hrtimer_expire_exit",
    "lock/contention_begin",
    "lock/contention_end",
    "kvm/kvm_apicv_accept_irq",
    "kvm/kvm_apic_ipi",
    "kvm/kvm_wait_lapic_expire",
    "timer/hrtimer_start",
    "kvm/kvm_page_fault",
    "kvm/kvm_eoi",
];

fn svm_demo(root: &Path, a: SvmDemo) -> anyhow::Result<()> {
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--duration must be between 0 and 600 seconds");
    }
    for p in std::iter::once(&a.output).chain(a.ftrace.as_ref()) {
        if p.exists() && !a.force {
            bail!("{} exists: give --force to overwrite it", p.display());
        }
    }
    const CAPTURE: &str = "/tmp/svm-demo.kvmtrace";
    const FTRACE: &str = "/tmp/svm-demo.ftrace.txt";
    let mut record = vec![
        "kvmtrace".to_string(),
        "record".into(),
        "--demo".into(),
        "--force".into(),
        "--duration".into(),
        a.duration.to_string(),
        "-o".into(),
        CAPTURE.into(),
    ];
    record.extend(a.demo_args.iter().cloned());
    let record = record
        .iter()
        .map(|w| svm::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let mut copy_out = vec![CAPTURE.to_string()];
    let script = if a.ftrace.is_some() {
        copy_out.push(FTRACE.to_string());
        let enable = FTRACE_EVENTS
            .iter()
            .map(|e| format!("echo 1 > $T/events/{e}/enable"))
            .collect::<Vec<_>>()
            .join("; ");
        // The excerpt: ftrace's header, then N lines from the middle of the run (its
        // start is the host before the demo runs).
        format!(
            "set -e; T=/sys/kernel/tracing; echo 0 > $T/tracing_on; echo > $T/trace; \
             echo 4096 > $T/buffer_size_kb; {enable}; echo 1 > $T/tracing_on; {record}; \
             echo 0 > $T/tracing_on; total=$(wc -l < $T/trace); \
             {{ grep '^#' $T/trace; tail -n +$((total / 2)) $T/trace | grep -v '^#' | head -n {}; }} \
             > {FTRACE}",
            a.ftrace_lines
        )
    } else {
        format!("set -e; {record}")
    };
    let target = target_dir(root);
    let kvmtrace = build_release(&target)?;
    let out_dir = target.join(format!("svm-host/demo-{}", std::process::id()));
    let opts = svm::Options {
        kvmtrace: kvmtrace.clone(),
        extra_bins: Vec::new(),
        cmd: vec!["sh".into(), "-c".into(), script],
        copy_out,
        out_dir: out_dir.clone(),
        work_dir: target.join("svm-host"),
        timeout: Duration::from_secs(a.timeout),
        cpu: "max".into(),
        smp: 1,
        echo: !a.quiet,
    };
    let o = svm::run(&opts)?;
    let moved = |from: &str, to: &Path| -> anyhow::Result<()> {
        let src = out_dir.join(svm::base_name(from));
        std::fs::copy(&src, to)
            .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
        Ok(())
    };
    moved(CAPTURE, &a.output)?;
    if let Some(f) = &a.ftrace {
        moved(FTRACE, f)?;
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    eprintln!(
        "xtask: svm-demo: {} from kernel {} under QEMU {} ({:.1} s{})",
        a.output.display(),
        o.kernel,
        o.qemu_version,
        o.total.as_secs_f64(),
        if o.attempts > 1 {
            ", after a retry"
        } else {
            ""
        }
    );
    run(Command::new(&kvmtrace).arg("report").arg(&a.output))
}

/// Builds target/release/kvmtrace; returns where its build script put the completions and
/// man pages (`$OUT_DIR/assets`, named in cargo's `build-script-executed` message).
fn build_release_assets() -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "-p",
        "kvmtrace",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo")?;
    if !out.status.success() {
        bail!("building kvmtrace failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            // `path+file:///.../kvmtrace#0.1.0` (or the older `kvmtrace 0.1.0 (path+...)`).
            let id = m["package_id"].as_str().unwrap_or_default();
            id.contains("/kvmtrace#") || id.starts_with("kvmtrace ")
        })
        .find_map(|m| m["out_dir"].as_str().map(|d| Path::new(d).join("assets")))
        .context("cargo did not say where kvmtrace's build script wrote its output")
}

/// Where each generated file goes (the directories bash-completion, zsh, fish and man-db
/// search under /usr/local).
const ASSETS: &[(&str, &str)] = &[
    ("kvmtrace.bash", "bash-completion/completions/kvmtrace"),
    ("_kvmtrace", "zsh/site-functions/_kvmtrace"),
    ("kvmtrace.fish", "fish/vendor_completions.d/kvmtrace.fish"),
];

/// Copies the completions and man pages under /usr/local/share (as root; otherwise says
/// where they are). Files already up to date are left alone.
fn install_assets(dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<(PathBuf, PathBuf)> = ASSETS
        .iter()
        .map(|(from, to)| (dir.join(from), Path::new("/usr/local/share").join(to)))
        .collect();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "1") {
            let name = p
                .file_name()
                .context("a man page without a name")?
                .to_owned();
            files.push((p, Path::new("/usr/local/share/man/man1").join(name)));
        }
    }
    if !is_root() {
        eprintln!(
            "xtask: shell completions and man pages are in {}; installing them under /usr/local/share needs root",
            dir.display()
        );
        return Ok(());
    }
    for (from, to) in &files {
        let new = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        if std::fs::read(to).is_ok_and(|old| old == new) {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(to, &new).with_context(|| format!("writing {}", to.display()))?;
        eprintln!("xtask: installed {}", to.display());
    }
    Ok(())
}

const FUZZ_TARGETS: &[&str] = &[
    "capture_reader",
    "text_import",
    "text_report",
    "capture_report",
];

/// Runs each fuzz target for `secs` seconds from the committed seeds; new inputs go to
/// target/fuzz-corpus, crashes to fuzz/artifacts (and fail the run).
fn fuzz(root: &Path, secs: u32) -> anyhow::Result<()> {
    for t in FUZZ_TARGETS {
        let corpus = root.join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        run(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", t])
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(t))
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-rss_limit_mb=2048"))
        .with_context(|| format!("fuzz target {t} failed: see fuzz/artifacts/{t}/"))?;
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).as_deref() == Some("0")
}

fn setup() -> anyhow::Result<()> {
    apt_packages()?;
    stable_components()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn apt_packages() -> anyhow::Result<()> {
    let mut missing: Vec<(&str, &str)> = PACKAGES
        .iter()
        .filter(|(_, cmd, _)| !have(cmd))
        .map(|(pkg, _, why)| (*pkg, *why))
        .collect();
    if svm::find_kernel(Path::new("/boot"), Path::new("/lib/modules")).is_err() {
        missing.push(SVM_KERNEL_PACKAGE);
    }
    if missing.is_empty() {
        return Ok(());
    }
    for (pkg, why) in &missing {
        eprintln!("xtask: installing Debian package {pkg} ({why})");
    }
    if !is_root() {
        bail!(
            "installing Debian packages needs root: run `apt-get install {}` as root, or run this as root",
            missing.iter().map(|m| m.0).collect::<Vec<_>>().join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(missing.iter().map(|m| m.0))
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// rustfmt and clippy for the default toolchain (`cargo xtask test` checks both).
fn stable_components() -> anyhow::Result<()> {
    let fmt = output(Command::new("cargo").args(["fmt", "--version"])).is_some();
    let clippy = output(Command::new("cargo").args(["clippy", "--version"])).is_some();
    if fmt && clippy {
        return Ok(());
    }
    eprintln!("xtask: installing rustfmt and clippy (the test run checks formatting and lints)");
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
        .context("`rustup component add rustfmt clippy` failed")
}

fn nightly_sysroot() -> Option<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).map(PathBuf::from)
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!("xtask: installing the nightly toolchain (the eBPF programs need -Z build-std)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("rustup could not install nightly; install it by hand with `rustup toolchain install nightly`")?;
    }
    let sysroot = nightly_sysroot().context("rustc +nightly does not run")?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly (build-std=core for bpfel-unknown-none)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("`rustup component add rust-src --toolchain nightly` failed")
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"]))
        .is_some_and(|v| v.contains(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (the fuzz targets in fuzz/)");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("installing cargo-fuzz failed")
}

/// The nightly's own libLLVM (`libLLVM.so.22.1-rust-...`) and its major version.
fn nightly_llvm(sysroot: &Path) -> anyhow::Result<(String, u32)> {
    let lib = sysroot.join("lib");
    let name = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so")))
        .with_context(|| {
            format!(
                "no libLLVM in {}: the nightly toolchain is incomplete",
                lib.display()
            )
        })?;
    let digits: String = name
        .trim_start_matches("libLLVM.so.")
        .trim_start_matches("libLLVM-")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let major = digits
        .parse()
        .with_context(|| format!("cannot read the LLVM version from {name}"))?;
    Ok((name, major))
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(v) = output(Command::new("bpf-linker").arg("--version")) {
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!("xtask: found {v}; installing bpf-linker {BPF_LINKER_VERSION} instead");
    }
    let sysroot = nightly_sysroot().context("rustc +nightly does not run")?;
    let (libname, major) = nightly_llvm(&sysroot)?;
    let link = sysroot.join("lib/libLLVM.so");
    if !link.exists() {
        std::os::unix::fs::symlink(&libname, &link)
            .with_context(|| format!("linking {} -> {libname}", link.display()))?;
    }
    eprintln!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about a minute)"
    );
    run(Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &sysroot))
    .context("building bpf-linker failed")
}
