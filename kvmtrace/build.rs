//! Builds kvmtrace-ebpf for bpfel-unknown-none with the nightly toolchain and bpf-linker, so
//! the object can be embedded in the binary with `include_bytes_aligned!`.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?,
    );
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

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
