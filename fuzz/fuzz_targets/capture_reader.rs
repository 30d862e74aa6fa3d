//! Any bytes given to the capture reader: an error or events, never a panic or a hang.
#![no_main]

use kvmtrace_analysis::capture::CaptureReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::new(std::path::Path::new("fuzz"), data) else {
        return;
    };
    let mut n = 0u64;
    while let Ok(Some(_)) = r.next_event() {
        n += 1;
        // A block holds at most 16 Ki events, and the input bounds the blocks.
        assert!(n <= 16384 * (data.len() as u64 / 16 + 1));
    }
});
