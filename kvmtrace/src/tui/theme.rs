//! Every colour and style `kvmtrace top` uses, in one place (ratatui demo2's `THEME`).
//! Views name what they draw (`THEME.title`, `THEME.latency(ns, threshold)`), never a colour.

use ratatui::style::{Color, Modifier, Style};

pub struct Theme {
    /// Section titles and the program name.
    pub title: Style,
    /// The table's column headings.
    pub table_header: Style,
    /// The row or worst sample under the cursor.
    pub selected: Style,
    /// A latency at or above the threshold.
    pub latency_high: Style,
    /// A latency at or above half the threshold.
    pub latency_warn: Style,
    /// The drop counter when events were lost.
    pub drops_alert: Style,
    /// `PAUSED` / `STOPPED` in the header.
    pub halted: Style,
    /// `LIVE` / `PLAYING` in the header.
    pub running: Style,
    /// The key line at the bottom.
    pub footer: Style,
    /// Bars of the rtla-style breakdowns.
    pub bar: Style,
    /// Text on the stacked cause bar (its background is the cause's palette colour).
    pub stacked_text: Color,
    /// One colour per cause on the stacked bar, largest cause first.
    pub palette: [Color; 6],
}

pub const THEME: Theme = Theme {
    title: Style::new().add_modifier(Modifier::BOLD),
    table_header: Style::new().add_modifier(Modifier::BOLD.union(Modifier::UNDERLINED)),
    selected: Style::new().add_modifier(Modifier::REVERSED),
    latency_high: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    latency_warn: Style::new().fg(Color::Yellow),
    drops_alert: Style::new()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD),
    halted: Style::new().fg(Color::Black).bg(Color::Yellow),
    running: Style::new().fg(Color::Green),
    footer: Style::new().fg(Color::Black).bg(Color::Gray),
    bar: Style::new().fg(Color::Cyan),
    stacked_text: Color::Black,
    palette: [
        Color::Cyan,
        Color::Magenta,
        Color::Yellow,
        Color::Green,
        Color::Blue,
        Color::Red,
    ],
};

impl Theme {
    /// A latency against the highlight threshold: high at or above it, a warning above half
    /// of it, plain otherwise (and always plain with a threshold of 0).
    pub fn latency(&self, ns: u64, threshold_us: u64) -> Style {
        let t = threshold_us.saturating_mul(1000);
        if t > 0 && ns >= t {
            self.latency_high
        } else if t > 0 && ns >= t / 2 {
            self.latency_warn
        } else {
            Style::new()
        }
    }

    /// The `n`th cause's segment of the stacked bar.
    pub fn stacked(&self, n: usize) -> Style {
        Style::new()
            .fg(self.stacked_text)
            .bg(self.palette[n % self.palette.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_styles_follow_the_threshold() {
        assert_eq!(THEME.latency(100_000, 100), THEME.latency_high);
        assert_eq!(THEME.latency(50_000, 100), THEME.latency_warn);
        assert_eq!(THEME.latency(49_999, 100), Style::new());
        assert_eq!(THEME.latency(u64::MAX, 0), Style::new(), "0 turns it off");
        assert_ne!(THEME.stacked(0), THEME.stacked(1));
        assert_eq!(THEME.stacked(0), THEME.stacked(THEME.palette.len()));
    }
}
