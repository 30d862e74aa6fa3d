//! Any text through the whole `report --from-text` pipeline: import, engine, report, its text
//! and JSON, the Chrome trace: never a panic, the report's numbers add up.
#![no_main]

use kvmtrace_analysis::capture::CaptureHeader;
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::import::{import_str, APIC_TIMER_FN_MARKER};
use kvmtrace_analysis::report::{export, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(imported) = import_str(&text) else {
        return;
    };
    let mut engine = Engine::new(EngineConfig {
        apic_timer_fn: APIC_TIMER_FN_MARKER,
        // Small, so the fuzzer reaches the limits.
        worst: 4,
        timeline_events: 16,
        ..EngineConfig::default()
    });
    for ev in &imported.events {
        engine.push(ev);
    }
    engine.flush();
    let report = Report::build("fuzz", &CaptureHeader::default(), None, None, &engine);
    check(&report);
    let _ = report.to_text();
    let json = serde_json::to_string(&report).expect("a report serialises");
    assert!(json.starts_with('{'));
    let _ = export::chrome_trace(&engine).to_string();
});

/// Every exit counted at least as often as measured; causes add up to the samples' total.
fn check(r: &Report) {
    let kinds: u64 = r.events.by_kind.values().sum();
    assert_eq!(kinds, r.events.total);
    for v in &r.vcpus {
        for e in &v.latency.exits.by_reason {
            assert!(e.measured <= e.count, "{e:?}");
            assert!(e.p50_ns <= e.max_ns && e.p99_ns <= e.max_ns, "{e:?}");
        }
    }
    for w in &r.worst {
        let sum: u64 = w.causes.iter().map(|c| c.ns).sum();
        assert_eq!(sum, w.total_ns, "{w:?}");
    }
}
