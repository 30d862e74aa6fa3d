//! Drawing: one function per view, from the [`App`] alone (no I/O, no clock).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TRow, Table, TableState, Wrap};
use ratatui::Frame;

use super::app::{App, Prompt, Span as Window, View, KEYS};
use super::model::Row;

/// Latency in µs for a column: `12.3`, `1234`.
pub fn us(ns: u64) -> String {
    let v = ns as f64 / 1000.0;
    if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Red at or above the threshold, yellow above half of it.
fn lat_style(ns: u64, threshold_us: u64) -> Style {
    let t = threshold_us.saturating_mul(1000);
    if t > 0 && ns >= t {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else if t > 0 && ns >= t / 2 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

pub fn render(app: &App, frame: &mut Frame) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(app, frame, header);
    match app.view {
        View::Table => render_table(app, frame, body),
        View::Detail => render_detail(app, frame, body),
        View::Sample(i) => render_sample(app, frame, body, i),
        View::Help => render_help(frame, body),
    }
    render_footer(app, frame, footer);
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
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
            Span::styled("kvmtrace top", Style::new().bold()),
            Span::raw("  starting..."),
        ])
    } else {
        Line::from(vec![
            Span::styled("kvmtrace top", Style::new().bold()),
            Span::raw(format!(
                "  {} | {} | KVM {} | {probes}",
                h.host, h.kernel, h.kvm_backend
            )),
        ])
    };
    let secs = h.traced_ns / 1_000_000_000;
    let drops = Span::styled(
        format!("drops {}", h.drops),
        if h.drops > 0 {
            Style::new().fg(Color::White).bg(Color::Red).bold()
        } else {
            Style::new()
        },
    );
    let state = if app.paused {
        Span::styled("PAUSED", Style::new().fg(Color::Black).bg(Color::Yellow))
    } else if app.replay && !app.playing {
        Span::styled("STOPPED", Style::new().fg(Color::Black).bg(Color::Yellow))
    } else {
        Span::styled(
            if app.replay { "PLAYING" } else { "LIVE" },
            Style::new().fg(Color::Green),
        )
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
    frame.render_widget(Paragraph::new(vec![line1, line2]), area);
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let text = match &app.prompt {
        Some(Prompt::Threshold(s)) => {
            format!("latency threshold (us): {s}_   Enter set, Esc cancel")
        }
        Some(Prompt::Filter(s)) => format!("filter VM (name or pid): {s}_   Enter set, Esc cancel"),
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
    frame.render_widget(
        Paragraph::new(text).style(Style::new().fg(Color::Black).bg(Color::Gray)),
        area,
    );
}

fn empty_state(app: &App, frame: &mut Frame, area: Rect) {
    let msg = if app.model().rows.is_empty() {
        vec![
            Line::from("No vCPU seen yet."),
            Line::from("Waiting for VMs: any process running /dev/kvm is picked up when it runs."),
        ]
    } else {
        vec![Line::from(format!(
            "No VM matches the filter \"{}\".",
            app.filter
        ))]
    };
    frame.render_widget(
        Paragraph::new(msg)
            .block(Block::new().borders(Borders::TOP).title(" vCPUs "))
            .wrap(Wrap { trim: true }),
        area,
    );
}

fn render_table(app: &App, frame: &mut Frame, area: Rect) {
    let rows = app.rows();
    if rows.is_empty() {
        return empty_state(app, frame, area);
    }
    let wide = area.width >= 110;
    let mut head = vec!["VM", "vCPU"];
    let mut widths = vec![
        Constraint::Length(if wide { 18 } else { 10 }),
        Constraint::Length(4),
    ];
    if wide {
        head.push("TID");
        widths.push(Constraint::Length(7));
    }
    head.extend(["CPU", "exits/s"]);
    widths.extend([Constraint::Length(3), Constraint::Length(7)]);
    if wide {
        head.extend(["exit p99", "exit max"]);
        widths.extend([Constraint::Length(8), Constraint::Length(8)]);
    }
    head.extend(["irqs", "p50 us", "p99 us", "max us", "out%", "top cause"]);
    widths.extend([
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Min(10),
    ]);
    let t = app.threshold_us;
    let body: Vec<TRow> = rows
        .iter()
        .map(|r: &&Row| {
            let vm = if r.vm_name.is_empty() {
                r.vm_pid.to_string()
            } else if wide {
                format!("{} {}", r.vm_pid, r.vm_name)
            } else {
                r.vm_name.clone()
            };
            let mut cells = vec![
                Cell::from(vm),
                Cell::from(r.vcpu.map_or("?".into(), |v| v.to_string())),
            ];
            if wide {
                cells.push(Cell::from(r.tid.to_string()));
            }
            cells.push(Cell::from(r.cpu.map_or("-".into(), |c| c.to_string())));
            cells.push(Cell::from(rate(r.exits_per_s)));
            if wide {
                cells.push(Cell::from(Span::styled(
                    us(r.exit_p99_ns),
                    lat_style(r.exit_p99_ns, t),
                )));
                cells.push(Cell::from(Span::styled(
                    us(r.exit_max_ns),
                    lat_style(r.exit_max_ns, t),
                )));
            }
            cells.extend([
                Cell::from(r.irq_count.to_string()),
                Cell::from(Span::styled(us(r.irq_p50_ns), lat_style(r.irq_p50_ns, t))),
                Cell::from(Span::styled(us(r.irq_p99_ns), lat_style(r.irq_p99_ns, t))),
                Cell::from(Span::styled(us(r.irq_max_ns), lat_style(r.irq_max_ns, t))),
                Cell::from(format!("{:.0}", r.out_of_guest_pct)),
                Cell::from(
                    r.top_cause
                        .as_ref()
                        .map_or("-".into(), |(c, pct)| format!("{c} {pct:.0}%")),
                ),
            ]);
            TRow::new(cells)
        })
        .collect();
    let table = Table::new(body, widths)
        .header(TRow::new(head).style(Style::new().bold().underlined()))
        .row_highlight_style(Style::new().reversed())
        .block(Block::new().borders(Borders::TOP).title(format!(
            " {} vCPUs, sorted by {}{} ",
            rows.len(),
            app.sort.name(),
            if app.reverse { " (reversed)" } else { "" }
        )));
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn pct(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

/// rtla-style lines: name, µs, %, and a bar.
fn breakdown(items: &[(String, u64)], width: u16, max_lines: usize) -> Vec<Line<'static>> {
    let total: u64 = items.iter().map(|i| i.1).sum();
    let name_w = (width as usize).saturating_sub(34).clamp(16, 32);
    let bar_w = (width as usize).saturating_sub(name_w + 22).clamp(4, 40);
    let mut out: Vec<Line> = items
        .iter()
        .take(max_lines)
        .map(|(name, ns)| {
            let p = pct(*ns, total);
            let n = ((p / 100.0) * bar_w as f64).round() as usize;
            Line::from(vec![
                Span::raw(format!(
                    "{name:<name_w$.name_w$} {:>10} us {p:>5.1}% ",
                    us(*ns)
                )),
                Span::styled("█".repeat(n), Style::new().fg(Color::Cyan)),
            ])
        })
        .collect();
    if items.len() > max_lines {
        out.push(Line::from(format!(
            "  ... {} more",
            items.len() - max_lines
        )));
    }
    out
}

const PALETTE: [Color; 6] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Blue,
    Color::Red,
];

/// The causes as one bar across the width, a colour and initial per cause (largest first).
fn stacked_bar(causes: &[(String, u64)], width: u16) -> Line<'static> {
    let total: u64 = causes.iter().map(|c| c.1).sum();
    let w = (width as usize).saturating_sub(2).max(1);
    let mut spans = Vec::new();
    let mut used = 0;
    for (n, (name, ns)) in causes.iter().enumerate() {
        let cells = if total == 0 {
            0
        } else {
            ((*ns as f64 / total as f64) * w as f64).round() as usize
        };
        let cells = cells.min(w - used);
        if cells == 0 {
            continue;
        }
        let initial = name.chars().next().unwrap_or('?').to_string();
        let label = if cells >= 3 {
            initial.repeat(cells)
        } else {
            " ".repeat(cells)
        };
        spans.push(Span::styled(
            label,
            Style::new().fg(Color::Black).bg(PALETTE[n % PALETTE.len()]),
        ));
        used += cells;
    }
    Line::from(spans)
}

fn render_detail(app: &App, frame: &mut Frame, area: Rect) {
    let Some(r) = app.selected_row() else {
        return empty_state(app, frame, area);
    };
    let title = format!(
        " vCPU {} | VM {} {} | tid {} | CPU {} ",
        r.vcpu.map_or("?".into(), |v| v.to_string()),
        r.vm_pid,
        r.vm_name,
        r.tid,
        r.cpu.map_or("-".into(), |c| c.to_string())
    );
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let wide = inner.width >= 100;
    let [left, right] = if wide {
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(inner)
    } else {
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner)
    };

    // Left: histogram with percentile markers, then the cause breakdown.
    let i = &r.latency.irq_to_guest;
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "interrupt-to-guest: {} samples  p50 {}  p99 {}  max {} us",
            i.count,
            us(i.p50_ns),
            us(i.p99_ns),
            us(i.max_ns)
        ),
        Style::new().bold(),
    ))];
    let used: Vec<&(u64, u64)> = {
        let first = r.irq_buckets.iter().position(|b| b.1 > 0);
        let last = r.irq_buckets.iter().rposition(|b| b.1 > 0);
        match (first, last) {
            (Some(a), Some(b)) => r.irq_buckets[a..=b].iter().collect(),
            _ => Vec::new(),
        }
    };
    let hist_rows = if wide { 10 } else { 4 };
    // Buckets from the first with samples; past `hist_rows`, the tail is merged in one row.
    let mut shown: Vec<(u64, u64, u64)> = used.iter().map(|(hi, c)| (hi / 2, *hi, *c)).collect();
    if shown.len() > hist_rows && hist_rows > 1 {
        let tail = shown.split_off(hist_rows - 1);
        let lo = tail.first().map_or(0, |t| t.0);
        let hi = tail.last().map_or(0, |t| t.1);
        shown.push((lo, hi, tail.iter().map(|t| t.2).sum()));
    }
    let maxc = shown.iter().map(|b| b.2).max().unwrap_or(0);
    let bar_w = (left.width as usize).saturating_sub(30).clamp(4, 40);
    for (lo, hi, c) in shown {
        let mut marks = String::new();
        if (lo..hi).contains(&i.p50_ns) {
            marks.push_str(" <p50");
        }
        if (lo..hi).contains(&i.p99_ns) {
            marks.push_str(" <p99");
        }
        let n = if maxc > 0 {
            ((c as f64 / maxc as f64) * bar_w as f64).ceil() as usize
        } else {
            0
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{:>7}-{:<7} ", us(lo), us(hi))),
            Span::styled("▇".repeat(n), lat_style(lo, app.threshold_us)),
            Span::raw(format!(" {c}{marks}")),
        ]));
    }
    let mut causes: Vec<(String, u64)> = i.causes_ns.iter().map(|(k, v)| (k.clone(), *v)).collect();
    causes.sort_by_key(|c| std::cmp::Reverse(c.1));
    lines.push(Line::from(Span::styled(
        "where the latency went",
        Style::new().bold(),
    )));
    if causes.is_empty() {
        lines.push(Line::from("  no complete sample yet"));
    } else {
        lines.push(stacked_bar(&causes, left.width));
    }
    lines.extend(breakdown(&causes, left.width, if wide { 12 } else { 3 }));
    frame.render_widget(Paragraph::new(lines), left);

    // Right: worst samples (what a kernel developer opens next), exits by reason, time by
    // state.
    let mut rl = vec![Line::from(Span::styled(
        "worst samples (Enter: timeline)",
        Style::new().bold(),
    ))];
    if r.worst.is_empty() {
        rl.push(Line::from("  none yet"));
    }
    let shown = if wide { 10 } else { 4 };
    let first = app.sample.saturating_sub(shown - 1);
    for (n, w) in r.worst.iter().enumerate().skip(first).take(shown) {
        let top = w.causes.first().map_or(String::new(), |c| {
            format!("{} {:.0}%", c.cause, pct(c.ns, w.total_ns))
        });
        let style = if n == app.sample {
            Style::new().reversed()
        } else {
            lat_style(w.total_ns, app.threshold_us)
        };
        rl.push(Line::from(Span::styled(
            format!("#{:<2} {:>9} us  {top}", n + 1, us(w.total_ns)),
            style,
        )));
    }
    rl.push(Line::from(Span::styled(
        format!(
            "{:<20} {:>8} {:>8} {:>8} {:>8}",
            "exit reason", "count", "p50 us", "p99 us", "max us"
        ),
        Style::new().bold(),
    )));
    if r.latency.exits.by_reason.is_empty() {
        rl.push(Line::from("  none (kvm_exit does not fire on this kernel)"));
    }
    for e in r
        .latency
        .exits
        .by_reason
        .iter()
        .take(if wide { 8 } else { 2 })
    {
        rl.push(Line::from(format!(
            "{:<20.20} {:>8} {:>8} {:>8} {:>8}",
            e.reason,
            e.count,
            us(e.p50_ns),
            us(e.p99_ns),
            us(e.max_ns)
        )));
    }
    let mut states: Vec<(String, u64)> = r
        .latency
        .out_of_guest_ns
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    states.sort_by_key(|c| std::cmp::Reverse(c.1));
    rl.push(Line::from(Span::styled(
        format!(
            "time by state ({:.1} % out of guest)",
            r.latency.out_of_guest_pct
        ),
        Style::new().bold(),
    )));
    rl.extend(breakdown(&states, right.width, if wide { 8 } else { 3 }));
    frame.render_widget(Paragraph::new(rl), right);
}

fn render_sample(app: &App, frame: &mut Frame, area: Rect, i: usize) {
    let Some(w) = app.selected_row().and_then(|r| r.worst.get(i)) else {
        return empty_state(app, frame, area);
    };
    let block = Block::new().borders(Borders::TOP).title(format!(
        " worst sample #{} | vCPU {} tid {} | {} us | opened by {} | closed at {} ",
        i + 1,
        w.vcpu.map_or("?".into(), |v| v.to_string()),
        w.tid,
        us(w.total_ns),
        w.opened_by,
        w.end_marker
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let causes: Vec<(String, u64)> = w.causes.iter().map(|c| (c.cause.clone(), c.ns)).collect();
    let mut lines = breakdown(&causes, inner.width, 6);
    if let Some(st) = &w.stack {
        lines.extend(super::stack_view::lines(st, 12));
    }
    lines.push(Line::from(Span::styled("timeline", Style::new().bold())));
    for e in &w.events {
        lines.push(Line::from(e.line()));
    }
    if w.events_truncated > 0 {
        lines.push(Line::from(format!(
            "... {} more events",
            w.events_truncated
        )));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_help(frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<14}"), Style::new().bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(
        "Latencies are interrupt-to-guest (us); causes add up to 100 %: see docs/attribution.md.",
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::new().borders(Borders::TOP).title(" keys "))
            .wrap(Wrap { trim: false }),
        area,
    );
}
