//! Developer tasks: `cargo xtask setup | demo | test | bench`.
//!
//! `setup` installs what building and testing kvmtrace needs on a fresh Debian machine (the
//! nightly's rust-src, bpf-linker built against the nightly's own LLVM, the Debian tools the
//! tests and benchmarks use) and says what it installs; it does nothing when all is there.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    /// Install the toolchain pieces and Debian packages kvmtrace needs (idempotent), and
    /// build target/release/kvmtrace.
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
    /// Setup, then run the benchmarks whose figures go in docs/performance.md.
    Bench,
    /// Setup, then fuzz the capture reader and the text importer, alone and through the
    /// engine and the report.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        secs: u32,
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
    ("tmux", "tmux", "the real-terminal test"),
    (
        "util-linux",
        "setpriv",
        "running a test as an unprivileged user",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => {
            setup()?;
            run(Command::new("cargo").args(["build", "--release", "-p", "kvmtrace"]))
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
            // A short fuzz run first, so that cargo test's summary closes the output.
            fuzz(&root, 20)?;
            run(Command::new("cargo")
                .args(["test", "--all-targets"])
                .args(&args))
        }
        Task::Fuzz { secs } => {
            setup()?;
            fuzz(&root, secs)
        }
        Task::Bench => {
            setup()?;
            run(Command::new("cargo").args(["build", "--release", "-p", "kvmtrace"]))?;
            run(Command::new("cargo").args(["bench", "-p", "kvmtrace"]))
        }
    }
}

/// The readers alone, then the whole pipeline (reader, engine, report) from each input.
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
    let missing: Vec<&(&str, &str, &str)> =
        PACKAGES.iter().filter(|(_, cmd, _)| !have(cmd)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (pkg, _, why) in &missing {
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
