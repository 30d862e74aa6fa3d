//! Any bytes as a capture through the whole `report` pipeline: reader, engine, report, its
//! text and JSON, the Chrome trace: never a panic, the report's numbers add up.
//! Records naming any CPU number reach the engine unfiltered: it bounds its per-CPU state
//! itself (tests/defects.rs `engine_bounds_cpu_numbers_it_is_given`).
#![no_main]

use kvmtrace_analysis::capture::CaptureReader;
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_analysis::report::{export, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::new(std::path::Path::new("fuzz"), data) else {
        return;
    };
    let mut engine = Engine::new(EngineConfig {
        apic_timer_fn: r.header.apic_timer_fn,
        worst: 4,
        timeline_events: 16,
        ..EngineConfig::default()
    });
    let mut n = 0u64;
    while let Ok(Some(ev)) = r.next_event() {
        n += 1;
        assert!(n <= 16384 * (data.len() as u64 / 16 + 1));
        engine.push(&ev);
    }
    engine.flush();
    let report = Report::build(
        "fuzz",
        &r.header,
        r.trailer.as_ref(),
        r.damage.as_ref(),
        &engine,
    );
    for v in &report.vcpus {
        for e in &v.latency.exits.by_reason {
            assert!(e.measured <= e.count, "{e:?}");
        }
    }
    for w in &report.worst {
        let sum: u64 = w.causes.iter().map(|c| c.ns).sum();
        assert_eq!(sum, w.total_ns, "{w:?}");
    }
    let _ = report.to_text();
    let json = serde_json::to_string(&report).expect("a report serialises");
    assert!(json.starts_with('{'));
    let _ = export::chrome_trace(&engine).to_string();
});
