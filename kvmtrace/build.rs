//! Builds kvmtrace-ebpf for bpfel-unknown-none with the nightly toolchain and bpf-linker, so
//! the object can be embedded in the binary with `include_bytes_aligned!`; records the git
//! commit for `--version`; and generates the shell completions (bash, zsh, fish) and man
//! pages from the command line's definitions into `$OUT_DIR/assets` (`cargo xtask setup`
//! installs them).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context as _};
use clap::CommandFactory as _;

/// The command line, the binary's own definitions (src/cli.rs uses only clap and std).
#[allow(dead_code)]
mod cli {
    include!("src/cli.rs");
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?,
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let commit = git_commit(&manifest);
    println!("cargo:rustc-env=KVMTRACE_GIT={commit}");
    assets(&out.join("assets"), &commit)?;

    let ebpf_dir = manifest
        .parent()
        .context("kvmtrace has no parent directory")?
        .join("kvmtrace-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not installed: run `cargo xtask setup` (it installs the nightly \
             rust-src component and bpf-linker), then build again"
        ));
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "kvmtrace-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// The short commit of the checkout being built, or `unknown` outside a git checkout (a
/// source tarball). Rebuilt when HEAD or the branch it names moves.
fn git_commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_string();
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
    }
    let common = git(&["rev-parse", "--git-common-dir"]).map(|c| dir.join(c));
    if let (Some(common), Some(reference)) =
        (common, git(&["rev-parse", "--symbolic-full-name", "HEAD"]))
    {
        let loose = common.join(&reference);
        let watch = if loose.is_file() {
            loose
        } else {
            common.join("packed-refs")
        };
        println!("cargo:rerun-if-changed={}", watch.display());
    }
    commit
}

/// Shell completions and man pages (`kvmtrace.1` and one per subcommand).
fn assets(dir: &Path, commit: &str) -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    // From scratch: a subcommand that went away must not leave its page behind.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let version = format!("{} (git {commit})", env!("CARGO_PKG_VERSION"));
    let cmd = || cli::Cli::command().version(version.clone());
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd(), "kvmtrace", dir)
            .with_context(|| format!("generating the {shell} completion"))?;
    }
    // A fresh command: completing one adds the `help` subcommand, which needs no page.
    clap_mangen::generate_to(cmd(), dir).context("generating the man pages")?;
    Ok(())
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
