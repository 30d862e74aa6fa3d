//! Every key and what it does.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};

use crate::tui::app::KEYS;
use crate::tui::theme::THEME;

/// The key list ([`KEYS`]).
pub struct HelpView;

impl Widget for HelpView {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let mut lines: Vec<Line> = KEYS
            .iter()
            .map(|(k, what)| {
                Line::from(vec![
                    Span::styled(format!("{k:<14}"), THEME.title),
                    Span::raw(*what),
                ])
            })
            .collect();
        lines.push(Line::from(""));
        lines.push(Line::from(
            "Latencies are interrupt-to-guest (us); causes add up to 100 %: see docs/attribution.md.",
        ));
        Paragraph::new(lines)
            .block(Block::new().borders(Borders::TOP).title(" keys "))
            .wrap(Wrap { trim: false })
            .render(area, buf);
    }
}
