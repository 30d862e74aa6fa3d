//! One vCPU in detail. Left: its interrupt-to-guest histogram with percentile marks and
//! where the latency went (stacked bar and breakdown). Right: its worst samples (Enter opens
//! one), exits by reason, time by state. Side by side from 100 cells, stacked below.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget};

use super::EmptyState;
use crate::tui::app::App;
use crate::tui::model::Row;
use crate::tui::theme::THEME;
use crate::tui::widgets::{breakdown, pct, stacked_bar, us};

/// The selected vCPU's detail.
pub struct DetailView<'a>(pub &'a App);

impl Widget for DetailView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let Some(r) = app.selected_row() else {
            return EmptyState(app).render(area, buf);
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
        block.render(area, buf);
        let wide = inner.width >= 100;
        let [left, right] = if wide {
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(inner)
        } else {
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner)
        };
        Paragraph::new(latency_lines(r, left.width, wide, app.threshold_us)).render(left, buf);
        Paragraph::new(side_lines(app, r, right.width, wide)).render(right, buf);
    }
}

/// The histogram (buckets from the first with samples; past the rows there is room for,
/// the tail merged in one row) and the cause breakdown.
fn latency_lines(r: &Row, width: u16, wide: bool, threshold_us: u64) -> Vec<Line<'static>> {
    let i = &r.latency.irq_to_guest;
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "interrupt-to-guest: {} samples  p50 {}  p99 {}  max {} us",
            i.count,
            us(i.p50_ns),
            us(i.p99_ns),
            us(i.max_ns)
        ),
        THEME.title,
    ))];
    let used: &[(u64, u64)] = {
        let first = r.irq_buckets.iter().position(|b| b.1 > 0);
        let last = r.irq_buckets.iter().rposition(|b| b.1 > 0);
        match (first, last) {
            (Some(a), Some(b)) => &r.irq_buckets[a..=b],
            _ => &[],
        }
    };
    let hist_rows = if wide { 10 } else { 4 };
    let mut shown: Vec<(u64, u64, u64)> = used.iter().map(|(hi, c)| (hi / 2, *hi, *c)).collect();
    if shown.len() > hist_rows && hist_rows > 1 {
        let tail = shown.split_off(hist_rows - 1);
        let lo = tail.first().map_or(0, |t| t.0);
        let hi = tail.last().map_or(0, |t| t.1);
        shown.push((lo, hi, tail.iter().map(|t| t.2).sum()));
    }
    let maxc = shown.iter().map(|b| b.2).max().unwrap_or(0);
    let bar_w = (width as usize).saturating_sub(30).clamp(4, 40);
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
            Span::styled("▇".repeat(n), THEME.latency(lo, threshold_us)),
            Span::raw(format!(" {c}{marks}")),
        ]));
    }
    let mut causes: Vec<(String, u64)> = i.causes_ns.iter().map(|(k, v)| (k.clone(), *v)).collect();
    causes.sort_by_key(|c| std::cmp::Reverse(c.1));
    lines.push(Line::from(Span::styled(
        "where the latency went",
        THEME.title,
    )));
    if causes.is_empty() {
        lines.push(Line::from("  no complete sample yet"));
    } else {
        lines.push(stacked_bar(&causes, width));
    }
    lines.extend(breakdown(&causes, width, if wide { 12 } else { 3 }));
    lines
}

/// What a kernel developer opens next: the worst samples (the one under the cursor
/// highlighted), exits by reason, time by state.
fn side_lines(app: &App, r: &Row, width: u16, wide: bool) -> Vec<Line<'static>> {
    let mut rl = vec![Line::from(Span::styled(
        "worst samples (Enter: timeline)",
        THEME.title,
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
            THEME.selected
        } else {
            THEME.latency(w.total_ns, app.threshold_us)
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
        THEME.title,
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
        THEME.title,
    )));
    rl.extend(breakdown(&states, width, if wide { 8 } else { 3 }));
    rl
}
