//! `kvmtrace check` on this machine (privileged: it reads other processes' /proc files).
//!
//! (a) The machine's known settings (docs/check.md, "On the development machines") show up
//!     as their findings, and a running demo VM's vCPU thread is found and audited.
//! (b) With a capture of the demo guest while a CPU hog shares the vCPU's CPU, the finding
//!     naming the hog is ranked first.

#[path = "support/hog.rs"]
mod hog;

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

/// One guest at a time: two demo guests on two cores would disturb each other.
static KVM: Mutex<()> = Mutex::new(());

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check_json(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check --json is JSON")
}

fn ids(j: &Value) -> Vec<String> {
    j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn this_machines_known_settings_and_a_running_vm() {
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    // What these machines are known to have (docs/check.md); if one changes, say which.
    let known = [
        ("/proc/sys/kernel/timer_migration", "1", "timer-migration"),
        ("/sys/devices/system/cpu/isolated", "", "no isolated CPU"),
    ];
    for (file, want, what) in known {
        assert_eq!(
            read(file),
            want,
            "{file} changed on this machine ({what}): update the test"
        );
    }
    assert!(
        std::path::Path::new("/sys/module/kvm_pvm").exists(),
        "the KVM backend of these machines is kvm_pvm"
    );

    // A demo VM running meanwhile, so that its vCPU thread is audited.
    let dir = std::env::temp_dir().join(format!("kvmtrace-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("vm.kvmtrace");
    let rec = Kill(
        Command::new(BIN)
            .args(["record", "--demo", "--duration", "4", "--force", "-o"])
            .arg(&cap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let vmm = rec.0.id();
    std::thread::sleep(Duration::from_millis(2500));
    let j = check_json(&[]);
    drop(rec);
    let got = ids(&j);
    eprintln!("{got:?}");
    for id in [
        "timer-migration",
        "apicv-unavailable",
        "kernel-not-preempt-rt",
        "vcpu-cpu-not-isolated",
        "vcpu-not-pinned",
        "vcpu-not-realtime",
        "irq-affinity-on-vcpu-cpu",
    ] {
        assert!(got.iter().any(|g| g == id), "{id} missing from {got:?}");
    }
    let vcpu = j["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pid"] == vmm)
        .unwrap_or_else(|| panic!("the demo VM's vCPU was not found: {}", j["vcpus"]));
    assert_eq!(vcpu["comm"], "CPU 0/KVM");
    assert_eq!(vcpu["vm"], "kvmtrace");
    assert_eq!(vcpu["policy"], "SCHED_OTHER");
    let pinned = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["id"] == "vcpu-not-pinned"
                && f["seen"].as_str().unwrap().contains(&format!("pid {vmm}"))
        })
        .expect("the demo's unpinned vCPU is named");
    assert!(pinned["fix"].as_str().unwrap().contains("taskset -pc"));
    for f in j["findings"].as_array().unwrap() {
        assert!(
            f["attributed_ns"].is_null(),
            "no capture, nothing attributed: {f}"
        );
    }
    // DAMON runs on these machines (README: kdamond.0 preempted the demo vCPU).
    if read("/proc/77/comm").starts_with("kdamond") {
        assert!(got.iter().any(|g| g == "kdamond-running"), "{got:?}");
    }
    // Text: one block per finding.
    let out = Command::new(BIN).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("finding(s):") && text.contains("    fix:  "),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_a_capture_the_hog_that_preempts_the_vcpu_is_ranked_first() {
    let _g = KVM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("kvmtrace-check-hog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("hog.kvmtrace");
    let hog = hog::busy_on(1);
    let hog_pid = hog.pid();
    let out = Command::new(BIN)
        .args([
            "record",
            "--demo",
            "--demo-cpu",
            "1",
            "--duration",
            "2",
            "--force",
            "-o",
        ])
        .arg(&cap)
        .output()
        .unwrap();
    drop(hog);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = check_json(&[cap.to_str().unwrap()]);
    let first = &j["findings"][0];
    eprintln!("{:#}", &j["findings"][0]);
    assert_eq!(first["id"], "task-preempts-vcpu", "{:#}", j["findings"]);
    // The hog is among the tasks it names, with a real share. (Not necessarily the largest:
    // the demo's interrupt thread also runs where the vCPU is woken (README), and on a busy
    // machine other tasks on that CPU take their part.)
    let hog = first["causes"][format!("preempted:sh:{hog_pid}")]
        .as_u64()
        .unwrap_or_else(|| panic!("the hog is not among {}", first["causes"]));
    assert!(hog > 5_000_000, "the hog cost more than 5 ms: {hog}");
    assert!(first["seen"]
        .as_str()
        .unwrap()
        .contains("other tasks held a vCPU's CPU"));
    // The ranked findings come first, by attributed latency.
    let att: Vec<u64> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map_while(|f| f["attributed_ns"].as_u64())
        .collect();
    assert!(att.windows(2).all(|w| w[0] >= w[1]), "{att:?}");
    assert!(j["capture"]["samples"].as_u64().unwrap() > 100);
    let text = Command::new(BIN).arg("check").arg(&cap).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("[1] WARNING task-preempts-vcpu"), "{text}");
    assert!(text.contains("ranked by capture"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
