//! Privileged: every probe loads and attaches on this kernel, and field offsets come from
//! the live format files.

#[path = "support/privileged.rs"]
mod privileged;

use kvmtrace::probes::{tracefs::Tracefs, ProbeOptions, Probes};
use kvmtrace_common::Kind;

#[test]
fn every_available_tracepoint_gets_an_attached_probe() {
    if !privileged::privileged("every_available_tracepoint_gets_an_attached_probe") {
        return;
    }
    let probes = Probes::load(&ProbeOptions::default()).expect("load and attach");
    assert_eq!(probes.status.len(), kvmtrace_common::NTRACEPOINTS);
    let tracefs = Tracefs::find_or_mount().unwrap();
    for (kind, st) in Kind::ALL.iter().zip(&probes.status) {
        let exists = tracefs.event_dir(kind.category(), kind.name()).is_dir();
        assert_eq!(
            st.tracepoint,
            format!("{}:{}", kind.category(), kind.name())
        );
        if exists {
            assert!(
                st.attached,
                "{} exists but did not attach: {:?}",
                st.tracepoint, st.reason
            );
            assert!(
                st.missing_fields.is_empty(),
                "{}: {:?}",
                st.tracepoint,
                st.missing_fields
            );
        } else {
            assert!(!st.attached);
            assert!(st
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("does not exist"));
        }
    }
    // This kernel has all of them (ENVIRONMENT.md); a new kernel that loses one should
    // be noticed here.
    assert!(
        probes.status.iter().all(|s| s.attached),
        "{:#?}",
        probes.status
    );
    // The offsets handed to the programs are the ones in the live format file, read here
    // by a second, minimal parser: the `field:...next_pid;\toffset:N;` line.
    let text =
        std::fs::read_to_string(tracefs.event_dir("sched", "sched_switch").join("format")).unwrap();
    let offset: usize = text
        .lines()
        .find(|l| l.contains(" next_pid;"))
        .and_then(|l| l.split("offset:").nth(1))
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("next_pid's offset in the format file");
    let fmt = &probes.formats["sched_switch"];
    assert_eq!(fmt.field("next_pid").unwrap().offset, offset);
    assert_eq!(probes.drops(), 0);
}

/// Our programs must not hide events from other perf users of the same tracepoints (a
/// program attached through perf that returns 0 drops the event for all of them).
#[test]
fn perf_still_sees_the_tracepoints_while_kvmtrace_is_attached() {
    if !privileged::privileged("perf_still_sees_the_tracepoints_while_kvmtrace_is_attached") {
        return;
    }
    let probes = Probes::load(&ProbeOptions::default()).expect("load and attach");
    assert!(probes
        .status
        .iter()
        .any(|s| s.tracepoint == "sched:sched_switch" && s.attached));
    let out = std::process::Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "sched:sched_switch",
            "-a",
            "--",
            "sleep",
            "0.5",
        ])
        .output()
        .expect("perf (installed by `cargo xtask setup`)");
    let text = String::from_utf8_lossy(&out.stderr);
    let count: u64 = text
        .lines()
        .find(|l| l.contains("sched:sched_switch"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in perf's output: {text}"));
    assert!(
        count > 0,
        "perf counted no context switch while kvmtrace was attached"
    );
    drop(probes);
}
