//! `kvmtrace top` in a real terminal (tmux): the demo vCPU's row appears with interrupts
//! counted, `q` quits cleanly and restores the terminal; without a terminal it refuses.

#[path = "support/privileged.rs"]
mod privileged;

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn capture(name: &str) -> String {
    let out = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", name])
        .output()
        .expect("tmux (installed by `cargo xtask setup`)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The demo's row: `PID kvmtrace VCPU TID CPU exits/s exit-p99 exit-max IRQS ...` at the
/// wide layout (the demo VMM runs inside kvmtrace, so its VM name is `kvmtrace`, live and in
/// a capture alike).
fn demo_irqs(screen: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let t: Vec<&str> = l.split_whitespace().collect();
        (t.len() > 9 && t[1] == "kvmtrace" && t[2] == "0").then(|| t[8].parse().ok())?
    })
}

#[test]
fn top_demo_shows_the_vcpu_and_quits_cleanly() {
    if !privileged::privileged("top_demo_shows_the_vcpu_and_quits_cleanly") {
        return;
    }
    let name = format!("kvmtrace-test-{}", std::process::id());
    let exit_file = std::env::temp_dir().join(format!("{name}.exit"));
    let _ = std::fs::remove_file(&exit_file);
    let cmd = format!(
        "{BIN} top --demo --interval 500; echo $? > {}; sleep 60",
        exit_file.display()
    );
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "120",
            "-y",
            "40",
            &cmd,
        ])
        .status()
        .expect("tmux (installed by `cargo xtask setup`)");
    assert!(ok.success());
    let _session = Session(name.clone());

    let t0 = Instant::now();
    let mut screen = String::new();
    let mut irqs = None;
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        screen = capture(&name);
        irqs = demo_irqs(&screen);
        if irqs.is_some_and(|n| n > 0) {
            break;
        }
    }
    assert!(
        irqs.is_some_and(|n| n > 0),
        "no demo vCPU row with interrupts:\n{screen}"
    );
    assert!(screen.contains("kvmtrace top"), "{screen}");
    assert!(screen.contains("drops 0"), "{screen}");

    // Into the detail view and out, then quit.
    for key in ["Enter", "Escape", "q"] {
        Command::new("tmux")
            .args(["send-keys", "-t", &name, key])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let t0 = Instant::now();
    while !exit_file.exists() && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let code = std::fs::read_to_string(&exit_file).expect("kvmtrace top did not exit on q");
    assert_eq!(code.trim(), "0", "exit status");
    // The terminal is back to normal: the shell's output is on the restored screen.
    let after = capture(&name);
    assert!(
        !after.contains("q quit  ? help"),
        "TUI still on screen:\n{after}"
    );
    let _ = std::fs::remove_file(&exit_file);
}

#[test]
fn top_without_a_terminal_points_at_record_and_report() {
    let out = Command::new(BIN).args(["top", "--demo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(
        err.contains("kvmtrace record") && err.contains("kvmtrace report"),
        "{err}"
    );
}

#[test]
fn top_replays_a_capture_with_the_same_views() {
    if !privileged::privileged("top_replays_a_capture_with_the_same_views") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kvmtrace-top-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("demo.kvmtrace");
    let out = Command::new(BIN)
        .args(["record", "--demo", "--duration", "2", "-o"])
        .arg(&cap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let name = format!("kvmtrace-replay-{}", std::process::id());
    let exit_file = dir.join("exit");
    let cmd = format!(
        "{BIN} top --replay {} --interval 500; echo $? > {}; sleep 60",
        cap.display(),
        exit_file.display()
    );
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "120",
            "-y",
            "40",
            &cmd,
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let _session = Session(name.clone());
    let t0 = Instant::now();
    let mut screen = String::new();
    while t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(300));
        screen = capture(&name);
        if demo_irqs(&screen).is_some() {
            break;
        }
    }
    assert!(screen.contains("replay demo.kvmtrace @ 0.5 s"), "{screen}");
    let first = demo_irqs(&screen).expect("the demo vCPU's row");
    assert!(first > 0, "{screen}");
    // Step forward: the position moves on and the interval still holds the demo's interrupts.
    Command::new("tmux")
        .args(["send-keys", "-t", &name, "Right"])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let screen = capture(&name);
    assert!(screen.contains("@ 1.0 s"), "{screen}");
    assert!(demo_irqs(&screen).is_some_and(|n| n > 0), "{screen}");
    Command::new("tmux")
        .args(["send-keys", "-t", &name, "q"])
        .status()
        .unwrap();
    let t0 = Instant::now();
    while !exit_file.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
    let _ = std::fs::remove_dir_all(&dir);
}
