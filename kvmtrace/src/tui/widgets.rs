//! Small pieces several views share: number formats, the rtla-style breakdown (name, µs,
//! %, bar) and the stacked cause bar. They build [`Line`]s for the views' paragraphs.

use ratatui::text::{Line, Span};

use super::theme::THEME;

/// Latency in µs for a column: `12.3`, `1234`.
pub fn us(ns: u64) -> String {
    let v = ns as f64 / 1000.0;
    if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A rate for a narrow column: `950`, `48k`, `1.2M`.
pub fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `part` as a percentage of `total` (0 when there is no total).
pub fn pct(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

/// rtla-style lines: name, µs, % of the items' total, and a bar; at most `max_lines`, then
/// how many more there are.
pub fn breakdown(items: &[(String, u64)], width: u16, max_lines: usize) -> Vec<Line<'static>> {
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
                Span::styled("█".repeat(n), THEME.bar),
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

/// The causes as one bar across the width, a colour and initial per cause (largest first).
pub fn stacked_bar(causes: &[(String, u64)], width: u16) -> Line<'static> {
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
        spans.push(Span::styled(label, THEME.stacked(n)));
        used += cells;
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(us(12_345), "12.3");
        assert_eq!(us(1_234_567), "1235");
        assert_eq!(rate(950.0), "950");
        assert_eq!(rate(48_300.0), "48k");
        assert_eq!(rate(1_250_000.0), "1.2M");
        assert_eq!(pct(1, 0), 0.0);
    }

    #[test]
    fn the_stacked_bar_never_overflows_and_takes_empty_input() {
        let causes = vec![("a".to_string(), 1), ("b".to_string(), 1)];
        for w in [0, 1, 3, 80] {
            let line = stacked_bar(&causes, w);
            assert!(line.width() <= usize::from(w).saturating_sub(2).max(1));
        }
        assert_eq!(stacked_bar(&[], 80).width(), 0);
        assert!(breakdown(&[], 80, 3).is_empty());
        let many: Vec<(String, u64)> = (0..5).map(|i| (format!("c{i}"), 10)).collect();
        let lines = breakdown(&many, 80, 3);
        assert_eq!(lines.len(), 4, "three, then `... 2 more`");
    }
}
