//! The TUI's state as plain data, and what each key does to it. No terminal, no I/O: the
//! event loop feeds it keys and models, and asks it what to draw.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{Row, TopModel};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Table,
    Detail,
    /// A worst sample's timeline (index in the selected vCPU's worst list).
    Sample(usize),
    Help,
}

/// Statistics over the last refresh interval, or since start (or the last reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Interval,
    SinceStart,
}

/// Sortable columns of the vCPU table, in the order `s` cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    IrqP99,
    IrqMax,
    IrqP50,
    IrqCount,
    ExitsPerS,
    ExitP99,
    OutOfGuest,
    Vm,
    Vcpu,
    Cpu,
}

impl SortKey {
    pub const ALL: [SortKey; 10] = [
        SortKey::IrqP99,
        SortKey::IrqMax,
        SortKey::IrqP50,
        SortKey::IrqCount,
        SortKey::ExitsPerS,
        SortKey::ExitP99,
        SortKey::OutOfGuest,
        SortKey::Vm,
        SortKey::Vcpu,
        SortKey::Cpu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::IrqP99 => "irq p99",
            SortKey::IrqMax => "irq max",
            SortKey::IrqP50 => "irq p50",
            SortKey::IrqCount => "irqs",
            SortKey::ExitsPerS => "exits/s",
            SortKey::ExitP99 => "exit p99",
            SortKey::OutOfGuest => "out %",
            SortKey::Vm => "VM",
            SortKey::Vcpu => "vCPU",
            SortKey::Cpu => "CPU",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }

    /// Latencies and rates sort largest first by default; identities smallest first.
    fn descending(self) -> bool {
        !matches!(self, SortKey::Vm | SortKey::Vcpu | SortKey::Cpu)
    }
}

/// A line being typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Threshold(String),
    Filter(String),
}

/// What the data side must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Forget the statistics gathered so far.
    Reset,
    /// Replay: start or stop playing.
    PlayPause,
    /// Replay: move by one interval.
    Step(i8),
}

pub struct App {
    pub view: View,
    /// Where `?` was pressed from.
    pub before_help: View,
    pub selected: usize,
    pub sample: usize,
    pub sort: SortKey,
    pub reverse: bool,
    pub span: Span,
    /// The display is frozen; collection goes on.
    pub paused: bool,
    /// Latencies at or above this are highlighted.
    pub threshold_us: u64,
    pub filter: String,
    pub prompt: Option<Prompt>,
    pub quit: bool,
    /// True when browsing a capture.
    pub replay: bool,
    pub playing: bool,
    /// The model on screen, per span.
    pub interval: TopModel,
    pub since_start: TopModel,
}

impl App {
    pub fn new(replay: bool) -> App {
        App {
            view: View::Table,
            before_help: View::Table,
            selected: 0,
            sample: 0,
            sort: SortKey::IrqP99,
            reverse: false,
            span: Span::Interval,
            paused: false,
            threshold_us: 100,
            filter: String::new(),
            prompt: None,
            quit: false,
            replay,
            playing: false,
            interval: TopModel::default(),
            since_start: TopModel::default(),
        }
    }

    /// New data from the collector (ignored while paused).
    pub fn update(&mut self, interval: TopModel, since_start: TopModel) {
        if !self.paused {
            self.interval = interval;
            self.since_start = since_start;
            self.clamp();
        }
    }

    pub fn model(&self) -> &TopModel {
        match self.span {
            Span::Interval => &self.interval,
            Span::SinceStart => &self.since_start,
        }
    }

    /// The rows shown: filtered by VM, sorted.
    pub fn rows(&self) -> Vec<&Row> {
        let f = self.filter.to_lowercase();
        let mut rows: Vec<&Row> = self
            .model()
            .rows
            .iter()
            .filter(|r| {
                f.is_empty()
                    || r.vm_name.to_lowercase().contains(&f)
                    || r.vm_pid.to_string().contains(&f)
            })
            .collect();
        let key = self.sort;
        rows.sort_by(|a, b| {
            let ord = match key {
                SortKey::IrqP99 => a.irq().p99_ns.cmp(&b.irq().p99_ns),
                SortKey::IrqMax => a.irq().max_ns.cmp(&b.irq().max_ns),
                SortKey::IrqP50 => a.irq().p50_ns.cmp(&b.irq().p50_ns),
                SortKey::IrqCount => a.irq().count.cmp(&b.irq().count),
                SortKey::ExitsPerS => a.exits_per_s.total_cmp(&b.exits_per_s),
                SortKey::ExitP99 => a.exit_p99_ns().cmp(&b.exit_p99_ns()),
                SortKey::OutOfGuest => a.out_of_guest_pct().total_cmp(&b.out_of_guest_pct()),
                SortKey::Vm => (a.vm_pid, a.vcpu).cmp(&(b.vm_pid, b.vcpu)),
                SortKey::Vcpu => (a.vcpu, a.vm_pid).cmp(&(b.vcpu, b.vm_pid)),
                SortKey::Cpu => a.cpu.cmp(&b.cpu),
            };
            let ord = if key.descending() { ord.reverse() } else { ord };
            let ord = if self.reverse { ord.reverse() } else { ord };
            ord.then(a.tid.cmp(&b.tid))
        });
        rows
    }

    /// The vCPU under the cursor.
    pub fn selected_row(&self) -> Option<&Row> {
        self.rows().get(self.selected).copied()
    }

    fn clamp(&mut self) {
        let n = self.rows().len();
        self.selected = self.selected.min(n.saturating_sub(1));
        let samples = self.selected_row().map_or(0, |r| r.worst.len());
        self.sample = self.sample.min(samples.saturating_sub(1));
        if let View::Sample(i) = self.view {
            if i >= samples {
                self.view = View::Detail;
            }
        }
    }

    /// Applies a key; returns what the data side must do, if anything.
    pub fn key(&mut self, k: KeyEvent) -> Option<Command> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        if let Some(p) = &mut self.prompt {
            match k.code {
                KeyCode::Esc => self.prompt = None,
                KeyCode::Enter => {
                    match p.clone() {
                        Prompt::Threshold(s) => {
                            if let Ok(v) = s.trim().parse() {
                                self.threshold_us = v;
                            }
                        }
                        Prompt::Filter(s) => {
                            self.filter = s;
                            self.selected = 0;
                        }
                    }
                    self.prompt = None;
                    self.clamp();
                }
                KeyCode::Backspace => match p {
                    Prompt::Threshold(s) | Prompt::Filter(s) => {
                        s.pop();
                    }
                },
                KeyCode::Char(c) => match p {
                    Prompt::Threshold(s) if c.is_ascii_digit() && s.len() < 9 => s.push(c),
                    Prompt::Filter(s) if s.len() < 64 => s.push(c),
                    _ => {}
                },
                _ => {}
            }
            return None;
        }
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => {
                if self.view == View::Help {
                    self.view = self.before_help;
                } else {
                    self.before_help = self.view;
                    self.view = View::Help;
                }
            }
            KeyCode::Esc | KeyCode::Backspace => {
                self.view = match self.view {
                    View::Sample(_) => View::Detail,
                    View::Help => self.before_help,
                    _ => View::Table,
                }
            }
            KeyCode::Enter => match self.view {
                View::Table if self.selected_row().is_some() => {
                    self.view = View::Detail;
                    self.sample = 0;
                }
                View::Detail if self.selected_row().is_some_and(|r| !r.worst.is_empty()) => {
                    self.view = View::Sample(self.sample)
                }
                _ => {}
            },
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.reverse = false;
            }
            KeyCode::Char('S') => self.reverse = !self.reverse,
            KeyCode::Char('c') => {
                self.span = match self.span {
                    Span::Interval => Span::SinceStart,
                    Span::SinceStart => Span::Interval,
                };
                self.clamp();
            }
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('r') => return Some(Command::Reset),
            KeyCode::Char('t') => {
                self.prompt = Some(Prompt::Threshold(self.threshold_us.to_string()))
            }
            KeyCode::Char('/') => self.prompt = Some(Prompt::Filter(self.filter.clone())),
            KeyCode::Char(' ') if self.replay => {
                self.playing = !self.playing;
                return Some(Command::PlayPause);
            }
            KeyCode::Left if self.replay => return Some(Command::Step(-1)),
            KeyCode::Right if self.replay => return Some(Command::Step(1)),
            _ => {}
        }
        None
    }

    fn move_by(&mut self, d: i64) {
        let step = |v: usize, n: usize| {
            if n == 0 {
                0
            } else {
                (v as i64 + d).clamp(0, n as i64 - 1) as usize
            }
        };
        match self.view {
            View::Table => self.selected = step(self.selected, self.rows().len()),
            View::Detail => {
                let n = self.selected_row().map_or(0, |r| r.worst.len());
                self.sample = step(self.sample, n);
            }
            _ => {}
        }
    }
}

/// Every key, for the help view and the README.
pub const KEYS: &[(&str, &str)] = &[
    ("Up/Down, j/k", "move"),
    ("Enter", "vCPU detail; on a worst sample: its timeline"),
    ("Esc", "back"),
    ("s / S", "cycle the sort column / reverse it"),
    ("c", "last interval <-> since start"),
    ("p", "pause the display (collection goes on)"),
    ("r", "reset the statistics"),
    ("t", "set the latency threshold (us) for highlighting"),
    ("/", "filter by VM name or pid"),
    ("space", "replay: play / pause"),
    ("Left/Right", "replay: step back / forward one interval"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn row(pid: u32, vcpu: u32, p99: u64, name: &str) -> Row {
        let mut r = Row {
            vm_pid: pid,
            vm_name: name.into(),
            vcpu: Some(vcpu),
            tid: pid * 10 + vcpu,
            ..Default::default()
        };
        r.latency.irq_to_guest.p99_ns = p99;
        r.latency.irq_to_guest.count = u64::from(vcpu) + 1;
        r
    }

    fn app() -> App {
        let mut a = App::new(false);
        let m = TopModel {
            rows: vec![
                row(100, 0, 5_000, "vnf-a"),
                row(100, 1, 90_000, "vnf-a"),
                row(200, 0, 20_000, "router"),
            ],
            ..Default::default()
        };
        a.update(m.clone(), m);
        a
    }

    fn tids(a: &App) -> Vec<u32> {
        a.rows().iter().map(|r| r.tid).collect()
    }

    #[test]
    fn sorting_cycles_and_reverses() {
        let mut a = app();
        assert_eq!(tids(&a), vec![1001, 2000, 1000], "irq p99, largest first");
        a.key(key(KeyCode::Char('S')));
        assert_eq!(tids(&a), vec![1000, 2000, 1001]);
        for _ in 0..3 {
            a.key(key(KeyCode::Char('s')));
        }
        assert_eq!(a.sort, SortKey::IrqCount);
        assert!(!a.reverse, "a new column starts in its natural order");
        assert_eq!(tids(&a), vec![1001, 1000, 2000]);
    }

    #[test]
    fn drill_in_and_out() {
        let mut a = app();
        a.key(key(KeyCode::Down));
        a.key(key(KeyCode::Char('j')));
        a.key(key(KeyCode::Down));
        assert_eq!(a.selected, 2, "stops at the last row");
        a.key(key(KeyCode::Enter));
        assert_eq!(a.view, View::Detail);
        assert_eq!(a.selected_row().unwrap().tid, 1000);
        a.key(key(KeyCode::Enter));
        assert_eq!(a.view, View::Detail, "no worst sample to open");
        a.key(key(KeyCode::Char('?')));
        assert_eq!(a.view, View::Help);
        a.key(key(KeyCode::Esc));
        assert_eq!(a.view, View::Detail);
        a.key(key(KeyCode::Esc));
        assert_eq!(a.view, View::Table);
    }

    #[test]
    fn pause_freezes_the_display() {
        let mut a = app();
        a.key(key(KeyCode::Char('p')));
        a.update(TopModel::default(), TopModel::default());
        assert_eq!(a.rows().len(), 3, "still the old data");
        a.key(key(KeyCode::Char('p')));
        a.update(TopModel::default(), TopModel::default());
        assert!(a.rows().is_empty());
        assert_eq!(a.selected, 0);
    }

    #[test]
    fn filter_threshold_and_reset() {
        let mut a = app();
        a.key(key(KeyCode::Char('/')));
        for c in "rout".chars() {
            a.key(key(KeyCode::Char(c)));
        }
        a.key(key(KeyCode::Enter));
        assert_eq!(tids(&a), vec![2000]);
        a.key(key(KeyCode::Char('/')));
        for _ in 0..4 {
            a.key(key(KeyCode::Backspace));
        }
        a.key(key(KeyCode::Char('1')));
        a.key(key(KeyCode::Char('0')));
        a.key(key(KeyCode::Enter));
        assert_eq!(tids(&a), vec![1001, 1000], "pid 100");
        a.key(key(KeyCode::Char('t')));
        a.key(key(KeyCode::Backspace));
        a.key(key(KeyCode::Backspace));
        a.key(key(KeyCode::Backspace));
        a.key(key(KeyCode::Char('x')));
        a.key(key(KeyCode::Char('5')));
        a.key(key(KeyCode::Char('0')));
        a.key(key(KeyCode::Enter));
        assert_eq!(a.threshold_us, 50);
        assert_eq!(a.key(key(KeyCode::Char('r'))), Some(Command::Reset));
        a.key(key(KeyCode::Char('c')));
        assert_eq!(a.span, Span::SinceStart);
        assert_eq!(
            a.key(key(KeyCode::Char(' '))),
            None,
            "play/pause only in replay"
        );
        a.key(key(KeyCode::Char('q')));
        assert!(a.quit);
    }

    #[test]
    fn ctrl_c_quits_even_while_typing() {
        let mut a = app();
        a.key(key(KeyCode::Char('/')));
        a.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(a.quit);
    }

    #[test]
    fn replay_keys() {
        let mut a = App::new(true);
        assert_eq!(a.key(key(KeyCode::Char(' '))), Some(Command::PlayPause));
        assert!(a.playing);
        assert_eq!(a.key(key(KeyCode::Left)), Some(Command::Step(-1)));
        assert_eq!(a.key(key(KeyCode::Right)), Some(Command::Step(1)));
    }

    #[test]
    fn empty_data_never_panics() {
        let mut a = App::new(false);
        for c in [
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::Enter,
            KeyCode::Enter,
            KeyCode::Char('s'),
            KeyCode::Esc,
            KeyCode::Char('c'),
        ] {
            a.key(key(c));
        }
        assert!(a.selected_row().is_none());
        assert_eq!(a.view, View::Table);
    }
}
