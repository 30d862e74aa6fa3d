//! The vCPU table: one row per vCPU, sortable and filtered by the app, latencies coloured
//! against the threshold; narrower columns below 110 cells.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{
    Block, Borders, Cell, Row as TRow, StatefulWidget, Table, TableState, Widget,
};

use super::EmptyState;
use crate::tui::app::App;
use crate::tui::model::Row;
use crate::tui::theme::THEME;
use crate::tui::widgets::{rate, us};

/// The table of vCPUs (the app's rows, in its order, the cursor on its selection).
pub struct TableView<'a>(pub &'a App);

impl Widget for TableView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let rows = app.rows();
        if rows.is_empty() {
            return EmptyState(app).render(area, buf);
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
        let body: Vec<TRow> = rows
            .iter()
            .map(|r| row_cells(r, wide, app.threshold_us))
            .collect();
        let table = Table::new(body, widths)
            .header(TRow::new(head).style(THEME.table_header))
            .row_highlight_style(THEME.selected)
            .block(Block::new().borders(Borders::TOP).title(format!(
                " {} vCPUs, sorted by {}{} ",
                rows.len(),
                app.sort.name(),
                if app.reverse { " (reversed)" } else { "" }
            )));
        let mut state = TableState::default().with_selected(Some(app.selected));
        StatefulWidget::render(table, area, buf, &mut state);
    }
}

/// One vCPU's cells, latencies styled against `threshold_us`.
fn row_cells(r: &Row, wide: bool, threshold_us: u64) -> TRow<'static> {
    let lat = |ns: u64| Cell::from(Span::styled(us(ns), THEME.latency(ns, threshold_us)));
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
        cells.push(lat(r.exit_p99_ns()));
        cells.push(lat(r.exit_max_ns()));
    }
    let irq = r.irq();
    cells.extend([
        Cell::from(irq.count.to_string()),
        lat(irq.p50_ns),
        lat(irq.p99_ns),
        lat(irq.max_ns),
        Cell::from(format!("{:.0}", r.out_of_guest_pct())),
        Cell::from(
            r.top_cause()
                .map_or("-".into(), |(c, pct)| format!("{c} {pct:.0}%")),
        ),
    ]);
    TRow::new(cells)
}
