use which::which;

/// Make sure the eBPF crate is rebuilt when bpf-linker changes (a new linker can change the
/// object even when no source did).
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
