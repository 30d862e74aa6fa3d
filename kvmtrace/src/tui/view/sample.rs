//! One worst sample: its cause breakdown and its event timeline.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget};

use super::EmptyState;
use crate::tui::app::App;
use crate::tui::theme::THEME;
use crate::tui::widgets::{breakdown, us};

/// Worst sample number `.1` (from 0) of the selected vCPU.
pub struct SampleView<'a>(pub &'a App, pub usize);

impl Widget for SampleView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (app, i) = (self.0, self.1);
        let Some(w) = app.selected_row().and_then(|r| r.worst.get(i)) else {
            return EmptyState(app).render(area, buf);
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
        block.render(area, buf);
        let causes: Vec<(String, u64)> = w.causes.iter().map(|c| (c.cause.clone(), c.ns)).collect();
        let mut lines = breakdown(&causes, inner.width, 6);
        if let Some(st) = &w.stack {
            lines.extend(crate::tui::stack_view::lines(st, 12));
        }
        lines.push(Line::from(Span::styled("timeline", THEME.title)));
        for e in &w.events {
            lines.push(Line::from(e.line()));
        }
        if w.events_truncated > 0 {
            lines.push(Line::from(format!(
                "... {} more events",
                w.events_truncated
            )));
        }
        Paragraph::new(lines).render(inner, buf);
    }
}
