//! The view: a pure function of [`App`] into a ratatui [`Buffer`].
//!
//! Layout, top to bottom: the transcript (wrapped to the width, so resizing
//! reflows it), the input box, and one status line.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Widget};
use unicode_width::UnicodeWidthChar;

use crate::app::{App, Entry, Role};

/// Most input lines shown before the box scrolls.
const MAX_INPUT_ROWS: usize = 8;
const INDENT: &str = "  ";

fn user_style() -> Style {
    Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
}
fn assistant_style() -> Style {
    Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
}
/// Code blocks are set apart by a gutter and their own colours.
pub fn code_style() -> Style {
    Style::new().fg(Color::Yellow).bg(Color::Rgb(30, 30, 30))
}
fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Splits `s` into rows no wider than `width` columns, breaking at spaces when it can.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut row_w = 0;
    // Position (bytes, width) in `row` just after its last space.
    let mut last_space: Option<(usize, usize)> = None;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if row_w + cw > width && row_w > 0 {
            match last_space {
                Some((b, w)) if b < row.len() => {
                    let rest = row.split_off(b);
                    rows.push(row.trim_end().to_string());
                    row = rest;
                    row_w -= w;
                }
                _ => {
                    rows.push(std::mem::take(&mut row).trim_end().to_string());
                    row_w = 0;
                }
            }
            last_space = None;
            if c == ' ' && row.is_empty() {
                continue;
            }
        }
        row.push(c);
        row_w += cw;
        if c == ' ' {
            last_space = Some((row.len(), row_w));
        }
    }
    rows.push(row);
    rows
}

/// Hard-wraps `s` at `width` columns (code keeps its spaces).
fn wrap_hard(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = vec![String::new()];
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > width && w > 0 {
            rows.push(String::new());
            w = 0;
        }
        if let Some(r) = rows.last_mut() {
            r.push(c);
        }
        w += cw;
    }
    rows
}

/// Message text as lines: prose wrapped at words, fenced code blocks in a gutter.
fn message_lines(text: &str, width: usize, base: Style, out: &mut Vec<Line<'static>>) {
    let inner = width.saturating_sub(INDENT.len()).max(1);
    let mut in_code = false;
    for raw in text.split('\n') {
        let fence = raw.trim_start();
        if let Some(lang) = fence.strip_prefix("```") {
            if in_code {
                out.push(Line::from(Span::styled(format!("{INDENT}╰─"), dim())));
            } else {
                let label = if lang.trim().is_empty() {
                    "code".to_string()
                } else {
                    lang.trim().to_string()
                };
                out.push(Line::from(Span::styled(
                    format!("{INDENT}╭─ {label}"),
                    dim(),
                )));
            }
            in_code = !in_code;
            continue;
        }
        if in_code {
            for row in wrap_hard(raw, inner.saturating_sub(2).max(1)) {
                out.push(Line::from(vec![
                    Span::styled(format!("{INDENT}│ "), dim()),
                    Span::styled(row, code_style()),
                ]));
            }
        } else {
            for row in wrap(raw, inner) {
                out.push(Line::from(Span::styled(format!("{INDENT}{row}"), base)));
            }
        }
    }
    if in_code {
        // An open fence (still streaming, or never closed) gets its end drawn too.
        out.push(Line::from(Span::styled(format!("{INDENT}╰─"), dim())));
    }
}

/// Rows a message's text takes at `width` (as the transcript draws it).
pub fn message_rows(text: &str, width: usize) -> usize {
    let mut out = Vec::new();
    message_lines(text, width, Style::new(), &mut out);
    out.len()
}

/// The transcript as display rows for a given width.
pub fn transcript_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = Vec::new();
    if app.transcript.is_empty() {
        let name = app
            .model
            .as_ref()
            .map_or_else(|| "the model".to_string(), |m| m.name.clone());
        for row in wrap(
            &format!("owl chat with {name}. Type a message and press Enter; Alt+Enter adds a line; /help lists commands."),
            width,
        ) {
            out.push(Line::from(Span::styled(row, dim())));
        }
        return out;
    }
    let pending = app.generation.as_ref().map(|g| g.entry);
    let model_name = app.model.as_ref().map_or("assistant", |m| m.name.as_str());
    for (i, e) in app.transcript.iter().enumerate() {
        if i > 0 {
            out.push(Line::default());
        }
        match e {
            Entry::Message {
                role,
                text,
                dropped,
                note,
            } => {
                let (name, style) = match role {
                    Role::User => ("you", user_style()),
                    Role::Assistant => (model_name, assistant_style()),
                    Role::System => ("system", dim()),
                };
                let mut head = vec![Span::styled(format!("▌ {name}"), style)];
                if *dropped {
                    head.push(Span::styled("  (dropped from the context)", dim()));
                }
                out.push(Line::from(head));
                let base = if *dropped { dim() } else { Style::new() };
                let writing = pending == Some(i);
                if writing && text.is_empty() {
                    out.push(Line::from(Span::styled(format!("{INDENT}…"), dim())));
                } else {
                    message_lines(text, width, base, &mut out);
                }
                if writing {
                    if let Some(last) = out.last_mut() {
                        last.spans
                            .push(Span::styled("▍", Style::new().fg(Color::Magenta)));
                    }
                }
                if let Some(n) = note {
                    out.push(Line::from(Span::styled(
                        format!("{INDENT}[{n}]"),
                        dim().add_modifier(Modifier::ITALIC),
                    )));
                }
            }
            Entry::Info(s) => {
                for raw in s.split('\n') {
                    for row in wrap(raw, width.saturating_sub(2).max(1)) {
                        out.push(Line::from(Span::styled(
                            format!("· {row}"),
                            Style::new().fg(Color::Cyan),
                        )));
                    }
                }
            }
            Entry::Error(s) => {
                for raw in s.split('\n') {
                    for row in wrap(raw, width.saturating_sub(2).max(1)) {
                        out.push(Line::from(Span::styled(
                            format!("! {row}"),
                            Style::new().fg(Color::Red),
                        )));
                    }
                }
            }
        }
    }
    out
}

/// Input rows after wrapping at `width`, and the cursor's (row, column) among them.
fn input_rows(app: &App, width: usize) -> (Vec<String>, (usize, usize)) {
    let (crow, ccol) = app.input.cursor();
    let mut rows = Vec::new();
    let mut cursor = (0, 0);
    for (r, line) in app.input.lines().iter().enumerate() {
        let wrapped = wrap_hard(line, width);
        if r == crow {
            // Find the wrapped row holding char `ccol`.
            let mut left = ccol;
            let mut placed = false;
            for (k, seg) in wrapped.iter().enumerate() {
                let n = seg.chars().count();
                if left < n || (left == n && k + 1 == wrapped.len()) {
                    let col: usize = seg.chars().take(left).map(|c| c.width().unwrap_or(0)).sum();
                    cursor = (rows.len() + k, col);
                    placed = true;
                    break;
                }
                left -= n;
            }
            if !placed {
                cursor = (rows.len() + wrapped.len() - 1, 0);
            }
        }
        rows.extend(wrapped);
    }
    // A cursor at the very end of a full row goes to the start of the next.
    if cursor.1 >= width {
        cursor = (cursor.0 + 1, 0);
        if cursor.0 >= rows.len() {
            rows.push(String::new());
        }
    }
    (rows, cursor)
}

/// The status line: model, device, context used/total, last speeds, and what is
/// going on. Parts give way, least useful first, when the terminal is narrow.
fn status_line(app: &App) -> Line<'static> {
    let width = app.size.0 as usize;
    let (name, device, ctx) = match &app.model {
        Some(m) => (
            m.name.clone(),
            Some(m.device.clone()),
            Some(format!("ctx {}/{}", app.ctx_used, m.n_ctx)),
        ),
        None => ("no model".to_string(), None, None),
    };
    let (pp, tg) = match &app.last {
        Some(l) => (format!("{:.1}", l.prompt_tps), format!("{:.1}", l.gen_tps)),
        None => ("–".to_string(), "–".to_string()),
    };
    let (right, right_short) = if let Some(m) = &app.loading {
        (format!("loading {m}… "), "loading… ".to_string())
    } else if let Some(g) = &app.generation {
        (
            format!("answering · {} tok · Esc stops ", g.tokens),
            format!("{} tok · Esc ", g.tokens),
        )
    } else if app.scroll > 0 {
        (
            "scrolled · PageDown returns ".to_string(),
            "scrolled ".to_string(),
        )
    } else {
        ("/help ".to_string(), String::new())
    };
    let join = |parts: &[Option<&str>]| {
        format!(
            " {}",
            parts
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join(" · ")
        )
    };
    // This conversation's cost and savings, once something was priced.
    let cost = (app.spent.answers > 0 && app.model.as_ref().is_some_and(|m| !m.baseline.is_empty())).then(|| {
        format!("{} · saved {}", crate::app::usd(app.spent.cost_usd), crate::app::usd(app.spent.savings_usd()))
    });
    let long_speed = format!("pp {pp} tok/s · tg {tg} tok/s");
    let short_speed = format!("pp {pp} · tg {tg} tok/s");
    let tg_speed = format!("tg {tg} tok/s");
    let candidates = [
        (
            join(&[
                Some(&name),
                device.as_deref(),
                ctx.as_deref(),
                Some(&long_speed),
                cost.as_deref(),
            ]),
            &right,
        ),
        (
            join(&[Some(&name), ctx.as_deref(), Some(&short_speed), cost.as_deref()]),
            &right,
        ),
        (
            join(&[Some(&name), device.as_deref(), ctx.as_deref(), Some(&long_speed)]),
            &right,
        ),
        (
            join(&[Some(&name), ctx.as_deref(), Some(&long_speed)]),
            &right,
        ),
        (
            join(&[Some(&name), ctx.as_deref(), Some(&short_speed)]),
            &right,
        ),
        (
            join(&[Some(&name), ctx.as_deref(), Some(&short_speed)]),
            &right_short,
        ),
        (join(&[ctx.as_deref(), Some(&short_speed)]), &right_short),
        (join(&[ctx.as_deref(), Some(&tg_speed)]), &right_short),
        (join(&[Some(&tg_speed)]), &right_short),
    ];
    let fits = |(l, r): &(String, &String)| l.chars().count() + r.chars().count() < width;
    let (left, right) = candidates
        .iter()
        .find(|c| fits(c))
        .unwrap_or(&candidates[candidates.len() - 1]);
    let used = left.chars().count() + right.chars().count();
    let pad = " ".repeat(width.saturating_sub(used).max(1));
    Line::from(vec![
        Span::raw(left.clone()),
        Span::raw(pad),
        Span::raw((*right).clone()),
    ])
}

/// Draws `app` into `buf` over `area`; returns where the terminal cursor goes.
pub fn render(app: &App, area: Rect, buf: &mut Buffer) -> Option<Position> {
    if area.width < 4 || area.height < 4 {
        return None;
    }
    let inner_w = area.width.saturating_sub(2) as usize;
    let (rows, cursor) = input_rows(app, inner_w);
    let input_h = rows.len().clamp(1, MAX_INPUT_ROWS) as u16 + 2;
    let input_h = input_h.min(area.height.saturating_sub(2));
    let [top, mid, bottom] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(input_h),
        Constraint::Length(1),
    ])
    .areas(area);

    // Transcript: the last `top.height` rows, moved up by `scroll`.
    let lines = transcript_lines(app, top.width as usize);
    let h = top.height as usize;
    let max_scroll = lines.len().saturating_sub(h);
    let scroll = app.scroll.min(max_scroll);
    let end = lines.len() - scroll;
    let start = end.saturating_sub(h);
    Paragraph::new(lines[start..end].to_vec()).render(top, buf);

    // Input box.
    let title = if app.generation.is_some() {
        " answering… Esc stops "
    } else {
        " message "
    };
    let block = Block::new()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(dim())
        .title(Span::styled(title, Style::new().fg(Color::Gray)))
        .title_bottom(Line::from(" Enter send · Alt+Enter new line · /help ").right_aligned());
    let inner = block.inner(mid);
    block.render(mid, buf);
    let visible = inner.height as usize;
    let first = (cursor.0 + 1).saturating_sub(visible);
    let shown: Vec<Line> = rows
        .iter()
        .skip(first)
        .take(visible)
        .map(|r| Line::raw(r.clone()))
        .collect();
    Paragraph::new(shown).render(inner, buf);

    // Status line.
    Paragraph::new(status_line(app))
        .style(Style::new().add_modifier(Modifier::REVERSED))
        .render(bottom, buf);

    let cy = cursor.0 - first;
    if cy < visible {
        Some(Position::new(
            inner.x + cursor.1 as u16,
            inner.y + cy as u16,
        ))
    } else {
        None
    }
}

/// Most lines the transcript can be scrolled up at this size.
pub fn max_scroll(app: &App) -> usize {
    let area = Rect::new(0, 0, app.size.0, app.size.1);
    let inner_w = area.width.saturating_sub(2) as usize;
    let (rows, _) = input_rows(app, inner_w);
    let input_h = rows.len().clamp(1, MAX_INPUT_ROWS) + 2;
    let h = (area.height as usize).saturating_sub(input_h + 1);
    transcript_lines(app, area.width as usize)
        .len()
        .saturating_sub(h)
}
