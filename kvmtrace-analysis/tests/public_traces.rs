//! Real, published KVM trace excerpts (tests/fixtures/text/public, sources in SOURCES.md)
//! read by `report --from-text` (import, engine, report) and by an independent simple parser
//! written from the formats alone (tests/support/simple_trace.rs): per-reason exit counts must
//! be equal and per-reason maxima of exit -> next entry of the same thread must agree within
//! the report's histogram resolution (1 %, or 1 ns for the 0 ns gaps the engine records as
//! 1 ns), summed (counts) or maximised (maxima) over vCPUs.
//!
//! Reason names: the report names reasons the kernel's way today (`exit_reason_label`); the
//! simple parser keys VMX exits by the names Linux printed when most of these traces were
//! taken. [`simple_key`] maps a report label to the simple parser's key: VMX exit 7 is
//! `INTERRUPT_WINDOW` today and `PENDING_INTERRUPT` there (libtraceevent's and pre-5.6
//! kernels' name), and a code neither names is `0x4e` here and `UNKNOWN(78)` there. Every
//! other name is the same in both.

#[path = "../../tests/support/simple_trace.rs"]
mod simple_trace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvmtrace_analysis::engine::EngineConfig;
use kvmtrace_analysis::report::{analyse_text, Report};

fn public_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("tests/fixtures/text/public")
}

/// The simple parser's key for a reason the report labels `label` on `isa`.
fn simple_key(isa: &str, label: &str) -> String {
    if isa == "VMX" && label == "INTERRUPT_WINDOW" {
        return "PENDING_INTERRUPT".to_string();
    }
    if let Some(hex) = label.strip_prefix("0x") {
        if let Ok(code) = u64::from_str_radix(hex, 16) {
            return format!("UNKNOWN({code})");
        }
    }
    label.to_string()
}

/// Exit counts and maxima by the simple parser's keys, over every vCPU of the report.
fn report_exits(r: &Report) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut counts = BTreeMap::new();
    let mut maxima: BTreeMap<String, u64> = BTreeMap::new();
    for v in &r.vcpus {
        for e in &v.latency.exits.by_reason {
            let key = simple_key(&e.isa, &e.reason);
            *counts.entry(key.clone()).or_default() += e.count;
            if e.measured > 0 {
                let m = maxima.entry(key).or_default();
                *m = (*m).max(e.max_ns);
            }
        }
    }
    (counts, maxima)
}

/// Within the histogram's resolution: 1 %, and 1 ns (a 0 ns gap is recorded as 1 ns).
fn close(report: u64, simple: u64) -> bool {
    report.abs_diff(simple) <= simple / 100 + 1
}

/// One file compared: None when they agree, else what differs.
fn compare(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).expect("read the fixture");
    let simple = simple_trace::exit_stats(&text);
    let (report, _) = match analyse_text(path, EngineConfig::default()) {
        Ok(r) => r,
        Err(e) => return Some(format!("import failed: {e}")),
    };
    let (counts, maxima) = report_exits(&report);
    let mut diffs = Vec::new();
    if counts != simple.by_reason {
        diffs.push(format!(
            "counts: report {counts:?}, simple {:?}",
            simple.by_reason
        ));
    }
    let keys: std::collections::BTreeSet<&String> = maxima
        .keys()
        .chain(simple.max_exit_to_entry_ns.keys())
        .collect();
    for k in keys {
        match (maxima.get(k), simple.max_exit_to_entry_ns.get(k)) {
            (Some(a), Some(b)) if close(*a, *b) => {}
            (a, b) => diffs.push(format!("max {k}: report {a:?} ns, simple {b:?} ns")),
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

#[test]
fn public_traces_agree_with_the_simple_parser() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(public_dir())
        .expect("the public fixtures")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 16, "only {} public fixtures", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        match compare(f) {
            None => eprintln!("match     {name}"),
            Some(why) => {
                eprintln!("MISMATCH  {name}: {why}");
                bad.push(format!("{name}: {why}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} files differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Layouts no public trace shows (ftrace's tgid column, trace-cmd -l, perf script wrapped by
/// a terminal, raw fields, no-break spaces), written by hand in the tools' formats: both
/// parsers must read them the same way too.
#[test]
fn hand_written_layouts_agree_with_the_simple_parser() {
    let texts = [
        // ftrace with record-tgid and irq-info; trace-cmd -l.
        " CPU 0/KVM-301     ( 300) [003] d..1.   10.000001: kvm_exit: reason CPUID rip 0x1 info 0 0
 CPU 0/KVM-301     ( 300) [003] d..1.   10.000003: kvm_entry: vcpu 0
CPU 1/KV-302     5d..2  10.000010: kvm_exit:             reason CPUID rip 0x1 info 0 0
CPU 1/KV-302     5d..2  10.000013: kvm_entry:            vcpu 1
",
        // perf script, pid/tid, ns, records wrapped by the terminal, a callchain.
        " qemu-system-x86 4200/4242 [000]  7.000001000:    kvm:kvm_exit: reason EPT_VIOLATION rip
0xffffffff81000000 info 181 0
\tffffffffc0a1b2c3 vmx_handle_exit+0x12 ([kvm_intel])
      vhost-4200 4200/4251 [001]  7.000001200:    kvm:kvm_fpu: load
 qemu-system-x86 4200/4242 [000]  7.000002500:    kvm:kvm_entry: vcpu 0
 qemu-system-x86 4200/4242 [000]  7.000003000:    kvm:kvm_exit: exit_reason=120 guest_rip=0x1 isa=2 info1=0 info2=0
 qemu-system-x86 4200/4242 [000]  7.000004000:    kvm:kvm_entry: vcpu 0
",
        // No-break spaces and a format=flowed wrap (Thunderbird), SVM plugin names.
        "     CPU-77\u{a0}[001]\u{a0}100.000001:\u{a0}kvm_exit:\u{a0}\u{a0}reason \nEXIT_NPF rip 0x1 info 0 0
     CPU-77 [001] 100.000004: kvm_entry:            vcpu 1, rip \n0x1
     CPU-77 [001] 100.000005: kvm_exit:             reason EXIT_IOIO rip 0x1 info 0 0
     CPU-77 [001] 100.000009: kvm_entry:            vcpu 1, rip 0x1
",
    ];
    for (i, t) in texts.iter().enumerate() {
        let path = std::env::temp_dir().join(format!(
            "kvmtrace-hand-layout-{}-{i}.txt",
            std::process::id()
        ));
        std::fs::write(&path, t).expect("write a temporary file");
        let got = compare(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(got, None, "text {i}");
        let simple = simple_trace::exit_stats(t);
        assert!(simple.exits >= 2, "text {i}: {:?}", simple.by_reason);
    }
}

/// Nothing in the public traces is left as "not understood" but lines that are not trace
/// records (prose, tool banners, a line cut by Ctrl-C) and events of other subsystems.
#[test]
fn public_traces_leave_nothing_kvm_not_understood() {
    for e in std::fs::read_dir(public_dir()).expect("the public fixtures") {
        let path = e.expect("an entry").path();
        if path.extension().is_none_or(|x| x != "txt") {
            continue;
        }
        let (report, _) = analyse_text(&path, EngineConfig::default()).expect("import");
        let stats = &report.import.expect("an import").stats;
        for why in stats.by_reason.keys() {
            let ok = why == "not an event line"
                || why == "unknown event tracing_mark_write"
                || why == "bad task pid";
            assert!(ok, "{}: {why} ({:?})", path.display(), stats.first_unparsed);
        }
    }
}

#[test]
#[ignore = "prints the reports (debugging aid)"]
fn print_public_reports() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(public_dir())
        .expect("the public fixtures")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    for f in files {
        let (report, _) = analyse_text(&f, EngineConfig::default()).expect("import");
        println!("==== {}\n{}", f.display(), report.to_text());
    }
}
