//! Snapshot tests of every view, at 80x24 and 120x40, from a fixed model (and empty).
//! Review changes with `cargo insta review`; CI fails on any difference.

use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::App;
use super::model::{Header, Row, TopModel, TracerLoad};
use super::view;
use kvmtrace_analysis::report::latency::{
    CauseNs, ExitReason, Exits, IrqToGuest, TimelineEvent, VcpuLatency, WorstSample,
};

fn header() -> Header {
    Header {
        host: "compute-07".into(),
        kernel: "6.18.44".into(),
        kvm_backend: "kvm_intel".into(),
        probes_attached: 33,
        probes_unavailable: vec![],
        event_rate: 184_220.0,
        drops: 0,
        traced_ns: 3_723_000_000_000,
        interval_ms: 1000,
        source: "live".into(),
        tracer: Some(TracerLoad {
            cpu_pct: Some(2.1),
            cpus: "0-1".into(),
        }),
    }
}

fn worst(tid: u32, total: u64) -> WorstSample {
    WorstSample {
        vcpu: Some(1),
        tid,
        pid: 4242,
        open_ns: 1_000_000,
        total_ns: total,
        opened_by: "MsiSetIrq".into(),
        end_marker: "kvm_entry".into(),
        causes: vec![
            CauseNs {
                cause: "preempted:ksoftirqd/3:31".into(),
                ns: total * 7 / 10,
            },
            CauseNs {
                cause: "exit:EPT_VIOLATION".into(),
                ns: total * 2 / 10,
            },
            CauseNs {
                cause: "hardirq:24".into(),
                ns: total - total * 7 / 10 - total * 2 / 10,
            },
        ],
        events: vec![
            TimelineEvent {
                offset_ns: 0,
                cpu: 2,
                tid: 4250,
                event: "kvm_msi_set_irq".into(),
                fields: "address=0xfee01000 data=0x41".into(),
            },
            TimelineEvent {
                offset_ns: 1_250,
                cpu: 3,
                tid,
                event: "kvm_exit".into(),
                fields: "exit_reason=48 isa=1 vcpu_id=1 guest_rip=0xffffffff81a0 info1=0x181"
                    .into(),
            },
            TimelineEvent {
                offset_ns: 4_800,
                cpu: 3,
                tid,
                event: "sched_switch".into(),
                fields: "prev_pid=4252 prev_state=256 next_pid=31 next_comm=ksoftirqd/3".into(),
            },
            TimelineEvent {
                offset_ns: total as i64,
                cpu: 3,
                tid,
                event: "kvm_entry".into(),
                fields: "vcpu_id=1 rip=0xffffffff81a0 intr_info=0x80000041".into(),
            },
        ],
        events_truncated: 0,
        stack: None,
    }
}

fn row(vcpu: u32, p99: u64, name: &str, pid: u32) -> Row {
    let tid = pid + 10 + vcpu;
    let mut causes = BTreeMap::new();
    causes.insert("guest".to_string(), 41_000_000);
    causes.insert("exit:EXTERNAL_INTERRUPT".to_string(), 12_000_000);
    causes.insert(format!("preempted:ksoftirqd/{vcpu}:31"), p99 * 300);
    causes.insert("softirq:NET_RX".to_string(), 3_500_000);
    let mut states = BTreeMap::new();
    states.insert("guest".to_string(), 940_000_000);
    states.insert("exit:EPT_VIOLATION".to_string(), 31_000_000);
    states.insert("halted".to_string(), 20_000_000);
    states.insert("vmm:IO".to_string(), 9_000_000);
    Row {
        vm_pid: pid,
        vm_name: name.into(),
        vcpu: Some(vcpu),
        tid,
        cpu: Some(vcpu + 2),
        exits_per_s: 48_300.0 + f64::from(vcpu) * 1000.0,
        irq_buckets: vec![
            (1_000, 0),
            (2_000, 10),
            (4_000, 420),
            (8_000, 510),
            (16_000, 40),
            (32_000, 15),
            (64_000, 4),
            (128_000, 1),
        ],
        latency: VcpuLatency {
            exits: Exits {
                by_reason: vec![
                    ExitReason {
                        reason: "EXTERNAL_INTERRUPT".into(),
                        isa: "VMX".into(),
                        code: 1,
                        idle: false,
                        count: 30_000,
                        measured: 30_000,
                        p50_ns: 2_100,
                        p99_ns: 6_000,
                        max_ns: 41_000,
                        source: "trace",
                    },
                    ExitReason {
                        reason: "EPT_VIOLATION".into(),
                        isa: "VMX".into(),
                        code: 48,
                        idle: false,
                        count: 12_000,
                        measured: 12_000,
                        p50_ns: 3_400,
                        p99_ns: 9_400,
                        max_ns: 88_000,
                        source: "trace",
                    },
                ],
            },
            state_split_approximate: false,
            irq_to_guest: IrqToGuest {
                count: 1000,
                p50_ns: 4_100,
                p99_ns: p99,
                p999_ns: p99 * 2,
                max_ns: p99 * 3,
                end_marker: Some("kvm_entry".into()),
                causes_ns: causes,
                ..Default::default()
            },
            out_of_guest_ns: states,
            wall_ns: 1_000_000_000,
            out_of_guest_pct: 6.0,
            timer_lateness: Default::default(),
        },
        worst: vec![worst(tid, p99 * 3), worst(tid, p99 * 2)],
    }
}

fn model() -> TopModel {
    TopModel {
        header: header(),
        rows: vec![
            row(0, 12_000, "vnf-fw1", 4242),
            row(1, 143_000, "vnf-fw1", 4242),
            row(0, 61_000, "ran-du", 5151),
        ],
    }
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| view::render(app, f)).expect("draw");
    format!("{}", t.backend())
}

fn press(app: &mut App, c: KeyCode) {
    app.key(KeyEvent::new(c, KeyModifiers::NONE));
}

fn app_with_model() -> App {
    let mut a = App::new(false);
    a.update(model(), model());
    a
}

#[test]
fn empty_state() {
    let a = App::new(false);
    insta::assert_snapshot!("empty_80x24", draw(&a, 80, 24));
    insta::assert_snapshot!("empty_120x40", draw(&a, 120, 40));
}

#[test]
fn table_view() {
    let a = app_with_model();
    insta::assert_snapshot!("table_80x24", draw(&a, 80, 24));
    insta::assert_snapshot!("table_120x40", draw(&a, 120, 40));
}

#[test]
fn table_with_drops_filter_and_pause() {
    let mut a = App::new(false);
    let mut m = model();
    m.header.drops = 1234;
    a.update(m.clone(), m);
    press(&mut a, KeyCode::Char('/'));
    for c in "ran".chars() {
        press(&mut a, KeyCode::Char(c));
    }
    press(&mut a, KeyCode::Enter);
    press(&mut a, KeyCode::Char('p'));
    insta::assert_snapshot!("table_filtered_paused_80x24", draw(&a, 80, 24));
}

#[test]
fn detail_view() {
    let mut a = app_with_model();
    press(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("detail_80x24", draw(&a, 80, 24));
    insta::assert_snapshot!("detail_120x40", draw(&a, 120, 40));
}

#[test]
fn sample_view() {
    let mut a = app_with_model();
    press(&mut a, KeyCode::Enter);
    press(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("sample_80x24", draw(&a, 80, 24));
    insta::assert_snapshot!("sample_120x40", draw(&a, 120, 40));
}

#[test]
fn help_view() {
    let mut a = app_with_model();
    press(&mut a, KeyCode::Char('?'));
    insta::assert_snapshot!("help_80x24", draw(&a, 80, 24));
    insta::assert_snapshot!("help_120x40", draw(&a, 120, 40));
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut a = app_with_model();
    for (w, h) in [(1, 1), (10, 3), (40, 10), (80, 5)] {
        draw(&a, w, h);
        press(&mut a, KeyCode::Enter);
        draw(&a, w, h);
    }
}
