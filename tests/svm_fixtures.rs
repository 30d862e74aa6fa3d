//! Unprivileged: the real SVM host recordings in tests/fixtures/svm/ (made by
//! `cargo xtask svm-demo`, see the README there) read back, and their raw ftrace text,
//! taken in the same runs, imports completely with SVM's exit names. The full checks of
//! tests/svm_host.rs run on them with `KVMTRACE_SVM_CAPTURES=tests/fixtures/svm`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");
const PATHS: [&str; 4] = ["pic", "msi", "timer", "irqoff"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/svm/{name}"))
}

fn report_json(args: &[&str]) -> Value {
    let out: Output = Command::new(BIN)
        .args(["report", "--json"])
        .args(args)
        .output()
        .expect("run kvmtrace report");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report --json is JSON")
}

fn exit_reasons(j: &Value) -> Vec<String> {
    j["vcpus"][0]["exits"]["by_reason"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| format!("{}:{}", r["isa"].as_str().unwrap_or("?"), r["reason"]))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn svm_captures_read_back_with_their_host_and_ground_truth() {
    for path in PATHS {
        let file = fixture(&format!("{path}.kvmtrace"));
        let j = report_json(&[file.to_str().unwrap()]);
        assert_eq!(j["capture"]["complete"], true, "{path}");
        assert_eq!(j["events"]["dropped"], 0, "{path}");
        let host = &j["capture"]["host"];
        assert_eq!(host["kvm_backend"], "kvm_amd", "{path}");
        assert_eq!(host["virt"]["cpuid_signature"], "TCGTCGTCGTCG");
        assert!(host["virt"]["qemu_version"].is_string(), "{host}");
        // The exits that only VMX/SVM emit are there, with SVM's names.
        let by_kind = &j["events"]["by_kind"];
        for k in ["kvm_exit", "kvm_entry", "kvm_inj_virq"] {
            assert!(by_kind[k].as_u64().unwrap_or(0) > 100, "{path}: {k}");
        }
        let reasons = exit_reasons(&j);
        assert!(reasons.iter().all(|r| r.starts_with("SVM:")), "{reasons:?}");
        assert!(reasons.contains(&"SVM:\"io\"".to_string()), "{reasons:?}");
        // The demo's ground truth for the path recorded (irqoff brings msi along).
        let by_path = &j["demo"]["by_path"];
        assert!(
            by_path[path]["count"].as_u64().unwrap_or(0) > 100,
            "{path}: {by_path}"
        );
        if path == "irqoff" {
            assert!(by_path["msi"]["count"].as_u64().unwrap_or(0) > 100);
            assert_eq!(j["demo"]["irqoff_ns"], 200_000);
        } else {
            assert_eq!(by_path.as_object().map(|o| o.len()), Some(1), "{by_path}");
        }
        // The committed report is what this kvmtrace makes of the capture (the schema's
        // keys at least: a changed number means a changed engine, not a broken file).
        let committed: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("{path}.report.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(committed["schema"], j["schema"]);
        assert_eq!(committed["events"], j["events"], "{path}");
        assert_eq!(committed["demo"], j["demo"], "{path}");
    }
}

#[test]
fn svm_ftrace_text_imports_completely() {
    for path in PATHS {
        let file = fixture(&format!("{path}.ftrace.txt"));
        let j = report_json(&["--from-text", file.to_str().unwrap()]);
        assert_eq!(j["import"]["format"], "ftrace", "{path}");
        let stats = &j["import"]["stats"];
        assert_eq!(stats["not_understood"], 0, "{path}: {stats}");
        assert!(
            stats["events"].as_u64().unwrap_or(0) >= 800,
            "{path}: {stats}"
        );
        let by_kind = &j["events"]["by_kind"];
        for k in ["kvm_exit", "kvm_entry", "kvm_inj_virq", "kvm_pio"] {
            assert!(
                by_kind[k].as_u64().unwrap_or(0) > 0,
                "{path}: no {k} in {by_kind}"
            );
        }
        // The demo's vCPU thread, its exits named from SVM's table, and samples closed
        // at kvm_entry (this kernel emits it).
        let v = &j["vcpus"][0];
        assert_eq!(v["comm"], "CPU 0/KVM", "{path}");
        let reasons = exit_reasons(&j);
        assert!(
            !reasons.is_empty() && reasons.iter().all(|r| r.starts_with("SVM:")),
            "{path}: {reasons:?}"
        );
        assert!(
            v["irq_to_guest"]["count"].as_u64().unwrap_or(0) > 0,
            "{path}"
        );
        assert_eq!(v["irq_to_guest"]["end_marker"], "kvm_entry", "{path}");
    }
    // Acceptance at the LAPIC shows for the LAPIC paths, never for the PIC's.
    let accepted = |path: &str| {
        let file = fixture(&format!("{path}.ftrace.txt"));
        let j = report_json(&["--from-text", file.to_str().unwrap()]);
        j["events"]["by_kind"]["kvm_apic_accept_irq"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(accepted("pic"), 0);
    assert!(accepted("msi") > 0);
}
