//! A worst sample's dominant stack in the sample view (docs/stacks.md): what it is, then
//! its kernel frames, innermost first. Plain lines from the model: no I/O, no clock.

use ratatui::text::{Line, Span};

use kvmtrace_analysis::report::stacks::SampleStack;

use super::theme::THEME;
use super::widgets::us;

/// At most `max_frames` frames; a line says how many more there are.
pub fn lines(st: &SampleStack, max_frames: usize) -> Vec<Line<'static>> {
    let task = st
        .task
        .as_deref()
        .map(|t| format!(" {t}"))
        .unwrap_or_default();
    let mut out = vec![Line::from(Span::styled(
        format!(
            "stack of {} ({}{task}, {} of {} us)",
            st.cause,
            st.source,
            us(st.ns),
            us(st.cause_ns)
        ),
        THEME.title,
    ))];
    out.extend(
        st.frames
            .iter()
            .take(max_frames)
            .map(|f| Line::from(format!("  {f}"))),
    );
    if st.frames.len() > max_frames {
        out.push(Line::from(format!(
            "  ... {} more frames",
            st.frames.len() - max_frames
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_is_a_title_then_its_frames_innermost_first() {
        let st = SampleStack {
            cause: "preempted:kdamond.0:77".into(),
            source: "sampled".into(),
            task: None,
            ns: 1_100_000,
            cause_ns: 1_295_000,
            frames: [
                "damon_va_check_accesses",
                "kdamond_fn",
                "kthread",
                "ret_from_fork",
            ]
            .map(String::from)
            .to_vec(),
        };
        let text: Vec<String> = lines(&st, 3).iter().map(|l| l.to_string()).collect();
        assert_eq!(
            text,
            [
                "stack of preempted:kdamond.0:77 (sampled, 1100 of 1295 us)",
                "  damon_va_check_accesses",
                "  kdamond_fn",
                "  kthread",
                "  ... 1 more frames",
            ]
        );
    }
}
