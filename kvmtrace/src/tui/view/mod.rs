//! Drawing, from the [`App`] alone (no I/O, no clock, no engine): the screen is a header,
//! the body of the current view and a footer. One module per view, each a widget over the
//! app: [`table`], [`detail`], [`sample`], [`help`]; colours come from [`super::theme`],
//! shared pieces from [`super::widgets`].

pub mod detail;
pub mod help;
pub mod sample;
pub mod table;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};
use ratatui::Frame;

use super::app::{App, Prompt, Span as Window, View};
use super::model::TracerLoad;
use super::theme::THEME;
use super::widgets::rate;

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    frame.render_widget(app, frame.area());
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(area);
        Header(self).render(header, buf);
        match self.view {
            View::Table => table::TableView(self).render(body, buf),
            View::Detail => detail::DetailView(self).render(body, buf),
            View::Sample(i) => sample::SampleView(self, i).render(body, buf),
            View::Help => help::HelpView.render(body, buf),
        }
        Footer(self).render(footer, buf);
    }
}

/// Two lines: the host and probes; the event rate, drops, time traced, state and settings.
struct Header<'a>(&'a App);

impl Widget for Header<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let h = &app.model().header;
        let probes = if h.probes_unavailable.is_empty() {
            format!("probes {}", h.probes_attached)
        } else {
            format!(
                "probes {} ({} unavailable)",
                h.probes_attached,
                h.probes_unavailable.len()
            )
        };
        let line1 = if h.kernel.is_empty() {
            Line::from(vec![
                Span::styled("kvmtrace top", THEME.title),
                Span::raw("  starting..."),
            ])
        } else {
            Line::from(vec![
                Span::styled("kvmtrace top", THEME.title),
                Span::raw(format!(
                    "  {} | {} | KVM {} | {probes}{}",
                    h.host,
                    h.kernel,
                    h.kvm_backend,
                    tracer_text(h.tracer.as_ref(), area.width >= 100)
                )),
            ])
        };
        let secs = h.traced_ns / 1_000_000_000;
        let drops = Span::styled(
            format!("drops {}", h.drops),
            if h.drops > 0 {
                THEME.drops_alert
            } else {
                Style::new()
            },
        );
        let state = if app.paused {
            Span::styled("PAUSED", THEME.halted)
        } else if app.replay && !app.playing {
            Span::styled("STOPPED", THEME.halted)
        } else {
            Span::styled(if app.replay { "PLAYING" } else { "LIVE" }, THEME.running)
        };
        let span = match app.span {
            Window::Interval => "last interval",
            Window::SinceStart => "since start",
        };
        let line2 = Line::from(vec![
            Span::raw(format!("{} ev/s | ", rate(h.event_rate))),
            drops,
            Span::raw(format!(
                " | {:02}:{:02}:{:02} | {} ms | ",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                h.interval_ms
            )),
            state,
            Span::raw(format!(
                " | {span}{} | thr {} us{}",
                if h.source == "live" || h.source.is_empty() {
                    String::new()
                } else {
                    format!(" | {}", h.source)
                },
                app.threshold_us,
                if app.filter.is_empty() {
                    String::new()
                } else {
                    format!(" | VM ~ {}", app.filter)
                }
            )),
        ]);
        Paragraph::new(vec![line1, line2]).render(area, buf);
    }
}

/// kvmtrace's own CPU use and CPUs, short below 100 cells: ` | self 2.1% CPU`.
fn tracer_text(t: Option<&TracerLoad>, wide: bool) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let cpu = t.cpu_pct.map(|p| format!("{p:.1}% CPU"));
    let on = (!t.cpus.is_empty()).then(|| format!("on CPU {}", t.cpus));
    match (cpu, on, wide) {
        (Some(c), Some(o), true) => format!(" | kvmtrace itself {c} {o}"),
        (Some(c), None, true) => format!(" | kvmtrace itself {c}"),
        (Some(c), _, false) => format!(" | self {c}"),
        (None, Some(o), _) => format!(" | kvmtrace {o}"),
        (None, None, _) => String::new(),
    }
}

/// The keys that work here, or the prompt being typed.
struct Footer<'a>(&'a App);

impl Widget for Footer<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let text = match &app.prompt {
            Some(Prompt::Threshold(s)) => {
                format!("latency threshold (us): {s}_   Enter set, Esc cancel")
            }
            Some(Prompt::Filter(s)) => {
                format!("filter VM (name or pid): {s}_   Enter set, Esc cancel")
            }
            None => match app.view {
                View::Table => format!(
                    "q quit  ? help  Enter detail  s sort ({}{})  c span  p pause  t thr  / filter",
                    app.sort.name(),
                    if app.reverse { ", reversed" } else { "" }
                ),
                View::Detail => {
                    "Esc back  Up/Down pick a worst sample  Enter its timeline  ? help".into()
                }
                View::Sample(_) => "Esc back  ? help  q quit".into(),
                View::Help => "Esc back".into(),
            },
        };
        Paragraph::new(text).style(THEME.footer).render(area, buf);
    }
}

/// What a view shows when it has nothing to show: no vCPU yet, or none matching the filter.
struct EmptyState<'a>(&'a App);

impl Widget for EmptyState<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let msg = if app.model().rows.is_empty() {
            vec![
                Line::from("No vCPU seen yet."),
                Line::from(
                    "Waiting for VMs: any process running /dev/kvm is picked up when it runs.",
                ),
            ]
        } else {
            vec![Line::from(format!(
                "No VM matches the filter \"{}\".",
                app.filter
            ))]
        };
        Paragraph::new(msg)
            .block(Block::new().borders(Borders::TOP).title(" vCPUs "))
            .wrap(Wrap { trim: true })
            .render(area, buf);
    }
}
