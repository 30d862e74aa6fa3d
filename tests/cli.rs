//! The `kvmtrace` binary as a user runs it: record the demo guest, report on it as text and
//! JSON, and every bad input ends in a clear error that loses nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmtrace-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn kvmtrace(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run kvmtrace")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn report_json(path: &Path) -> Value {
    let out = kvmtrace(&["report", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("report --json is JSON")
}

#[test]
fn record_demo_then_report_text_and_json() {
    let dir = tmpdir("demo");
    let cap = dir.join("demo.kvmtrace");
    let out = kvmtrace(&[
        "record",
        "--demo",
        "--duration",
        "1.5",
        "-o",
        cap.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped by duration"),
        "{}",
        stderr(&out)
    );

    let j = report_json(&cap);
    assert_eq!(j["schema"], "kvmtrace-report/1");
    assert_eq!(j["capture"]["complete"], true);
    assert_eq!(j["events"]["dropped"], 0);
    let total = j["events"]["total"].as_u64().unwrap();
    let by_kind = j["events"]["by_kind"].as_object().unwrap();
    assert_eq!(
        by_kind.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        total
    );
    for k in [
        "kvm_pio",
        "kvm_userspace_exit",
        "kvm_set_irq",
        "sched_switch",
    ] {
        assert!(by_kind[k].as_u64().unwrap() > 100, "{k}: {}", by_kind[k]);
    }
    let vcpus = j["vcpus"].as_array().unwrap();
    assert_eq!(
        j["vcpus"][0]["vm_name"], "kvmtrace",
        "the demo VMM is kvmtrace itself"
    );
    assert_eq!(vcpus.len(), 1, "{vcpus:#?}");
    assert_eq!(vcpus[0]["vcpu"], 0);
    assert_eq!(vcpus[0]["comm"], "CPU 0/KVM");
    assert!(vcpus[0]["pid"].as_u64().unwrap() > 0);
    assert!(
        vcpus[0]["events_by_kind"]["kvm_vcpu_wakeup"]
            .as_u64()
            .unwrap()
            > 100
    );
    let demo = &j["demo"]["irq_ack_latency_ns"];
    assert!(demo["count"].as_u64().unwrap() > 1000, "{demo}");
    let (p50, p99, max) = (
        demo["p50"].as_u64().unwrap(),
        demo["p99"].as_u64().unwrap(),
        demo["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{demo}");

    let text = kvmtrace(&["report", cap.to_str().unwrap()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("vCPU 0  pid"), "{text}");
    assert!(text.contains("demo ground truth"), "{text}");

    // No clobbering without --force, and the existing capture is untouched.
    let before = std::fs::read(&cap).unwrap();
    let out = kvmtrace(&[
        "record",
        "--demo",
        "--duration",
        "1",
        "-o",
        cap.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already exists (use --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&cap).unwrap(), before);

    // A truncated capture still reports what its complete blocks hold, and says so.
    let cut = dir.join("cut.kvmtrace");
    std::fs::write(&cut, &before[..before.len() * 2 / 3]).unwrap();
    let j = report_json(&cut);
    assert_eq!(j["capture"]["complete"], false);
    assert!(j["capture"]["damage"]["offset"].as_u64().unwrap() > 0);
    let kept = j["events"]["total"].as_u64().unwrap();
    assert!(kept > 0 && kept < total, "{kept} of {total}");
    let text = kvmtrace(&["report", cut.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("INCOMPLETE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_flushes_and_closes_the_capture() {
    let dir = tmpdir("sigint");
    let cap = dir.join("int.kvmtrace");
    let child = Command::new(BIN)
        .args(["record", "--demo", "-o", cap.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: sending a signal to our own child process by pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let j = report_json(&cap);
    assert_eq!(j["capture"]["complete"], true);
    assert_eq!(j["capture"]["stop_reason"], "SIGINT");
    assert!(j["events"]["by_kind"]["kvm_pio"].as_u64().unwrap() > 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tmpdir("bad");
    let junk = dir.join("junk");
    std::fs::write(&junk, b"this is not a capture at all").unwrap();
    let out = kvmtrace(&["report", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a kvmtrace capture"),
        "{}",
        stderr(&out)
    );

    let out = kvmtrace(&["report", dir.join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open"), "{}", stderr(&out));

    let out = kvmtrace(&["record", "--duration", "1", "-o", "/proc/kvmtrace-no/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot create"), "{}", stderr(&out));

    let out = kvmtrace(&[
        "record",
        "--duration",
        "-1",
        "-o",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        !dir.join("x").exists(),
        "no file left behind by a refused run"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unprivileged_user_is_told_which_capabilities_are_missing() {
    let dir = tmpdir("nopriv");
    // The unprivileged user must be able to write the output directory.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let cap = dir.join("x.kvmtrace");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(BIN)
        .args(["record", "--duration", "1", "-o", cap.to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux) is installed by `cargo xtask setup`");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("needs CAP_BPF and CAP_PERFMON"), "{err}");
    assert!(err.contains("missing: CAP_BPF, CAP_PERFMON"), "{err}");
    assert!(!cap.exists(), "a refused recording leaves no empty file");
    std::fs::remove_dir_all(&dir).unwrap();
}
