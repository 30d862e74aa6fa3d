//! Privileged: every probe loads and attaches on this kernel, and field offsets come from
//! the live format files.

use kvmtrace::probes::{tracefs::Tracefs, ProbeOptions, Probes};
use kvmtrace_common::Kind;

#[test]
fn every_available_tracepoint_gets_an_attached_probe() {
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
    // The offsets handed to the programs are the ones in the live format file.
    let fmt = &probes.formats["sched_switch"];
    assert_eq!(fmt.field("next_pid").unwrap().offset, 56);
    assert_eq!(probes.drops(), 0);
}
