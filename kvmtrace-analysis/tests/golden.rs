//! Golden reports: `report --json` (and the text report) of the committed text fixtures and
//! demo captures, compared byte for byte with files taken before the analysis moved into its
//! own crate (tests/golden/). A change that moves any number shows here; a change meant to
//! move numbers regenerates the files (`KVMTRACE_BLESS=1 cargo test -p kvmtrace-analysis
//! --test golden`) and says why in its commit.

use std::path::{Path, PathBuf};

use kvmtrace_analysis::engine::EngineConfig;
use kvmtrace_analysis::report::{analyse_capture, analyse_text, Report};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Compares `got` with the golden file `name`, or writes it when blessing.
fn check(name: &str, got: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("KVMTRACE_BLESS").is_some() {
        std::fs::write(&path, got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n want: {}\n  got: {}",
            line + 1,
            want.lines().nth(line).unwrap_or("<end>"),
            got.lines().nth(line).unwrap_or("<end>")
        );
    }
}

/// The report as the CLI prints it, with the input named as the golden files were made
/// (paths relative to the workspace root).
fn outputs(report: &Report) -> (String, String) {
    let json = serde_json::to_string_pretty(report).expect("serialise") + "\n";
    (json, report.to_text())
}

#[test]
fn text_fixtures_report_as_before() {
    let dir = root().join("tests/fixtures/text");
    let mut n = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    for path in names {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let rel = format!("tests/fixtures/text/{stem}.txt");
        let (mut report, _) = analyse_text(&path, EngineConfig::default()).expect("import");
        report.capture.path = rel;
        let (json, text) = outputs(&report);
        check(&format!("text-{stem}.json"), &json);
        check(&format!("text-{stem}.txt"), &text);
        n += 1;
    }
    assert!(n >= 9, "only {n} fixtures");
}

#[test]
fn demo_captures_report_as_before() {
    for (file, golden) in [
        (
            "tests/fixtures/captures/demo-pvm.kvmtrace",
            "capture-demo-pvm",
        ),
        (
            "fuzz/seeds/capture_reader/demo.kvmtrace",
            "capture-fuzz-seed",
        ),
    ] {
        let (mut report, _) =
            analyse_capture(&root().join(file), EngineConfig::default()).expect("read");
        report.capture.path = file.to_string();
        let (json, text) = outputs(&report);
        check(&format!("{golden}.json"), &json);
        if golden == "capture-demo-pvm" {
            check(&format!("{golden}.txt"), &text);
        }
    }
}
