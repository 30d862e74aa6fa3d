//! The files in contrib/ that operators install: the alert rules pass promtool's checks and
//! unit tests (Debian's `prometheus` package ships promtool), the Grafana dashboard and the
//! rules use only metrics the exporter exports, and the systemd unit passes
//! `systemd-analyze verify`. Unprivileged.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvmtrace::exporter::metrics::{Metrics, MetricsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (installed by `cargo xtask setup`): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    let dir = contrib().join("prometheus");
    let out = run(Command::new("promtool")
        .args(["check", "rules", "kvmtrace-alerts.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new("promtool")
        .args(["test", "rules", "kvmtrace-alerts.test.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Metric names (`kvmtrace_...`) used in a text, without the series suffixes.
fn names_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("kvmtrace_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn dashboard_and_rules_use_only_exported_metrics() {
    let exposition = Metrics::new(
        MetricsConfig::default(),
        vec![("kvm_exit".into(), true)],
        vec![("version", "x".into())],
    )
    .encode(true)
    .unwrap();
    let families: Vec<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(families.len() >= 10, "{exposition}");
    let exported = |name: &str| {
        families.iter().any(|f| {
            name == f
                || ["_bucket", "_sum", "_count", "_total", "_info"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f))
        })
    };
    let dash_text =
        std::fs::read_to_string(contrib().join("grafana/kvmtrace-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text).expect("the dashboard is JSON");
    assert!(dash["uid"].is_string() && dash["panels"].as_array().unwrap().len() >= 8);
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(
            !p["targets"].as_array().unwrap().is_empty(),
            "{}",
            p["title"]
        );
    }
    let rules = std::fs::read_to_string(contrib().join("prometheus/kvmtrace-alerts.yml")).unwrap();
    for (file, text) in [("dashboard", &dash_text), ("alert rules", &rules)] {
        let used = names_in(text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        for n in used {
            // `kvmtrace:` recording rules are the rules' own; everything else is exported.
            assert!(
                exported(&n),
                "{file} uses {n}, which the exporter does not export"
            );
        }
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit =
        std::fs::read_to_string(contrib().join("systemd/kvmtrace-exporter.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/kvmtrace exporter"));
    // Verified with the binary just built in place of the installed one.
    let dir = std::env::temp_dir().join(format!("kvmtrace-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kvmtrace-exporter.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/kvmtrace", BIN)).unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("kvmtrace-exporter.service"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
