//! Privileged tests need root (CAP_BPF, CAP_PERFMON, tracefs, /dev/kvm). Run without it,
//! they say why and stop; under `CI=true` that is a failure, not a skip, so a CI machine
//! that lost its privileges cannot pass silently.

/// True when this process runs as root. Otherwise prints why `test` cannot run, and panics
/// when `CI` is set to `true`.
pub fn privileged(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid == Some(0) {
        return true;
    }
    let why = format!(
        "{test}: needs root (it loads eBPF programs, mounts tracefs and runs a KVM guest); \
         effective uid is {}",
        euid.map_or("unknown".to_string(), |u| u.to_string())
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {why}");
    false
}
