//! Any text given to the importer: an error or records, never a panic; every line is
//! accounted for.
#![no_main]

use kvmtrace_analysis::import::import_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(imported) = import_str(&text) {
        let s = &imported.stats;
        assert_eq!(
            s.lines,
            s.skipped + s.events + s.not_understood + s.continued
        );
        assert!(imported.events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        // Nothing the text names is out of the bounds the engine may rely on.
        let max_cpus = kvmtrace_common::limits::MAX_CPUS;
        assert!(imported.events.iter().all(|e| e.cpu < max_cpus));
    }
});
