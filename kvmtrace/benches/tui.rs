//! One `kvmtrace top` refresh with 64 vCPUs: building the models from the engines (interval
//! and since start) and drawing the table and a detail view, as the live loop does once per
//! interval. `cargo bench --bench tui` prints the time per refresh and the share of one core
//! at the default 1 s interval (docs/performance.md); under `cargo test` a short pass.

use std::collections::HashMap;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kvmtrace::tui::app::App;
use kvmtrace::tui::model::{Header, TopModel};
use kvmtrace::tui::view;
use kvmtrace_analysis::engine::{Engine, EngineConfig};
use kvmtrace_common::{Event, Kind};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const VCPUS: u32 = 64;

/// One second of a busy host: per vCPU, exits of four kinds, interrupts, a preemption.
fn feed(engines: &mut [&mut Engine], t0: u64) -> u64 {
    let mut t = t0;
    let mut n = 0;
    for round in 0..400u64 {
        for v in 0..VCPUS {
            let tid = 10_000 + v;
            let cpu = v % 32;
            let ev = |t: u64, kind: Kind, tid: u32, slots: [u64; 5]| Event {
                ts_ns: t,
                tid,
                tgid: 4242 + v / 8,
                cpu,
                kind: kind as u16,
                slots,
                ..Default::default()
            };
            t += 30;
            let reason = [1u64, 12, 30, 48][(round % 4) as usize];
            let mut evs = vec![ev(
                t,
                Kind::KvmExit,
                tid,
                [reason, 1, u64::from(v % 8), 0, 0],
            )];
            if round % 5 == 0 {
                evs.push(ev(
                    t + 5,
                    Kind::KvmMsiSetIrq,
                    99,
                    [0xfee0_0000 | (u64::from(v % 8) << 12), 0, 0, 0, 0],
                ));
                evs.push(ev(t + 9, Kind::KvmInjVirq, tid, [0x41, 0, 0, 0, 0]));
            }
            evs.push(ev(
                t + 900 + round % 700,
                Kind::KvmEntry,
                tid,
                [u64::from(v % 8), 0, 0, 0, 0],
            ));
            for e in &evs {
                for eng in engines.iter_mut() {
                    eng.push(e);
                }
            }
            n += evs.len() as u64;
        }
    }
    n
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 30 } else { 3 };
    let mut total = Engine::new(EngineConfig::default());
    let mut interval = Engine::new(EngineConfig::default());
    let mut app = App::new(false);
    let mut term = Terminal::new(TestBackend::new(160, 50)).expect("terminal");
    let names: HashMap<u32, String> = (0..8).map(|i| (4242 + i, format!("vnf-{i}"))).collect();
    let mut t = 1_000_000;
    let mut spent = std::time::Duration::ZERO;
    for _ in 0..rounds {
        t += 1_000_000_000;
        feed(&mut [&mut total, &mut interval], t);
        let start = Instant::now();
        let i = TopModel::build(&interval, 1_000_000_000, Header::default(), &names);
        let s = TopModel::build(&total, 1_000_000_000, Header::default(), &names);
        interval.reset_stats();
        app.update(i, s);
        term.draw(|f| view::render(&app, f)).expect("draw");
        app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        term.draw(|f| view::render(&app, f)).expect("draw");
        app.key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        spent += start.elapsed();
    }
    let per = spent / rounds;
    println!(
        "one refresh with {VCPUS} vCPUs (2 models + table + detail view at 160x50): {:.2} ms = {:.2} % of a core at a 1 s interval",
        per.as_secs_f64() * 1e3,
        per.as_secs_f64() * 100.0
    );
    assert_eq!(app.rows().len(), VCPUS as usize);
}
