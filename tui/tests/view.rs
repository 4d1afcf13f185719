//! The view rendered into a ratatui `Buffer` for given states, with no terminal.

use owl_tui::app::{App, Finish, LastRun, ModelStatus, Msg, Settings};
use owl_tui::view::{self, render};
use ratatui::buffer::Buffer;
use ratatui::layout::{Position, Rect};
use ratatui::style::Modifier;

fn app(w: u16, h: u16) -> App {
    let mut app = App::new(None, Settings::default());
    app.update(Msg::Resize(w, h));
    app.update(Msg::ModelReady(ModelStatus {
        name: "smol".into(),
        device: "cpu".into(),
        n_ctx: 512,
        ..Default::default()
    }));
    app
}

fn draw(app: &App) -> (Buffer, Option<Position>) {
    let area = Rect::new(0, 0, app.size.0, app.size.1);
    let mut buf = Buffer::empty(area);
    let cursor = render(app, area, &mut buf);
    (buf, cursor)
}

fn rows(buf: &Buffer) -> Vec<String> {
    let a = buf.area;
    (0..a.height)
        .map(|y| {
            (0..a.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

/// Runs a full exchange through `update`.
fn exchange(app: &mut App, question: &str, answer: &str) {
    let fx = app.update(Msg::Submit(question.into()));
    let id = match fx.first() {
        Some(owl_tui::app::Effect::Submit { id, .. }) => *id,
        other => panic!("{other:?}"),
    };
    app.update(Msg::Started {
        id,
        prompt_tokens: 30,
        cached_tokens: 0,
    });
    app.update(Msg::Token {
        id,
        text: answer.into(),
    });
    let run = LastRun {
        prompt_tokens: 30,
        cached_tokens: 0,
        completion_tokens: 12,
        prompt_tps: 812.34,
        gen_tps: 95.67,
        ..Default::default()
    };
    app.update(Msg::Done {
        id,
        finish: Finish::Stop,
        run,
    });
}

#[test]
fn empty_chat_shows_welcome_input_box_and_status() {
    let app = app(60, 8);
    let (buf, cursor) = draw(&app);
    let expected = Buffer::with_lines([
        "owl chat with smol. Type a message and press Enter;",
        "Alt+Enter adds a line; /help lists commands.",
        "",
        "",
        "╭ message ─────────────────────────────────────────────────╮",
        "│                                                          │",
        "╰───────────────── Enter send · Alt+Enter new line · /help ╯",
        " smol · cpu · ctx 0/512 · pp – tok/s · tg – tok/s     /help ",
    ]);
    assert_eq!(rows(&buf), rows(&expected));
    assert_eq!(cursor, Some(Position::new(1, 5)));
    // The status line is set apart (reversed).
    assert!(buf[(3, 7)].modifier.contains(Modifier::REVERSED));
}

#[test]
fn transcript_shows_the_exchange_and_status_shows_speeds() {
    let mut app = app(50, 12);
    exchange(&mut app, "What is 2+2?", "It is 4.");
    let (buf, _) = draw(&app);
    let r = rows(&buf);
    assert_eq!(
        r[..5],
        [
            "▌ you".to_string(),
            "  What is 2+2?".into(),
            "".into(),
            "▌ smol".into(),
            "  It is 4.".into()
        ]
    );
    // At 50 columns the device gives way so the speeds fit.
    assert_eq!(r[11], " smol · ctx 42/512 · pp 812.3 · tg 95.7 tok/s");
    app.update(Msg::Resize(80, 12));
    let r = rows(&draw(&app).0);
    assert_eq!(
        r[11],
        format!(
            " smol · cpu · ctx 42/512 · pp 812.3 tok/s · tg 95.7 tok/s{}/help",
            " ".repeat(17)
        )
    );
}

#[test]
fn code_blocks_are_set_apart() {
    let mut app = app(40, 14);
    exchange(
        &mut app,
        "code?",
        "Here:\n```rust\nfn main() {}\n```\nDone.",
    );
    let (buf, _) = draw(&app);
    let r = rows(&buf);
    let at = r
        .iter()
        .position(|l| l == "  ╭─ rust")
        .expect("fence header");
    assert_eq!(r[at + 1], "  │ fn main() {}");
    assert_eq!(r[at + 2], "  ╰─");
    assert_eq!(r[at + 3], "  Done.");
    // Code has its own style, prose does not.
    let code_cell = &buf[(4, at as u16 + 1)];
    assert_eq!(code_cell.style().fg, view::code_style().fg);
    assert_eq!(code_cell.style().bg, view::code_style().bg);
    assert_ne!(buf[(2, at as u16 + 3)].style().bg, view::code_style().bg);
}

#[test]
fn streaming_answer_shows_a_cursor_and_the_stop_hint() {
    let mut app = app(50, 10);
    let fx = app.update(Msg::Submit("hi".into()));
    let Some(owl_tui::app::Effect::Submit { id, .. }) = fx.first() else {
        panic!()
    };
    let (buf, _) = draw(&app);
    let r = rows(&buf);
    assert_eq!(r[4], "  …▍");
    assert!(r[6].contains("answering… Esc stops"), "{}", r[6]);
    assert!(r[9].ends_with("0 tok · Esc"), "{}", r[9]);
    app.update(Msg::Token {
        id: *id,
        text: "Hello".into(),
    });
    let r = rows(&draw(&app).0);
    assert_eq!(r[4], "  Hello▍");
    assert!(r[9].ends_with("1 tok · Esc"), "{}", r[9]);
    app.update(Msg::Resize(90, 10));
    let r = rows(&draw(&app).0);
    assert!(r[9].ends_with("answering · 1 tok · Esc stops"), "{}", r[9]);
}

#[test]
fn resizing_reflows_the_transcript() {
    let mut app = app(40, 12);
    exchange(
        &mut app,
        "q",
        "alpha beta gamma delta epsilon zeta eta theta",
    );
    let wide = rows(&draw(&app).0);
    assert_eq!(wide[4], "  alpha beta gamma delta epsilon zeta");
    assert_eq!(wide[5], "  eta theta");
    app.update(Msg::Resize(20, 12));
    let narrow = rows(&draw(&app).0);
    assert_eq!(
        narrow[4..8],
        [
            "  alpha beta gamma",
            "  delta epsilon",
            "  zeta eta theta",
            ""
        ]
        .map(String::from)
    );
}

#[test]
fn page_up_shows_earlier_lines() {
    let mut app = app(30, 10);
    for i in 0..6 {
        exchange(&mut app, &format!("question {i}"), &format!("answer {i}"));
    }
    let bottom = rows(&draw(&app).0);
    assert!(bottom[..6].iter().any(|l| l.contains("answer 5")));
    assert!(!bottom.iter().any(|l| l.contains("question 0")));
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    app.update(Msg::Key(KeyEvent::from(KeyCode::PageUp)));
    let one_page = rows(&draw(&app).0);
    assert_ne!(one_page, bottom);
    assert!(one_page[9].contains("scrolled"), "{}", one_page[9]);
    app.update(Msg::Key(KeyEvent::new(
        KeyCode::Home,
        KeyModifiers::CONTROL,
    )));
    let max = view::max_scroll(&app);
    app.clamp_scroll(max);
    let top = rows(&draw(&app).0);
    assert_eq!(top[0], "▌ you");
    assert_eq!(top[1], "  question 0");
    assert!(top[9].contains("scrolled"), "{}", top[9]);
}

#[test]
fn multiline_input_grows_the_box_and_places_the_cursor() {
    let mut app = app(30, 12);
    app.input.set_text("first line\nsecond");
    let (buf, cursor) = draw(&app);
    let r = rows(&buf);
    assert_eq!(r[8], "│first line                  │");
    assert_eq!(r[9], "│second                      │");
    assert_eq!(cursor, Some(Position::new(7, 9)));
}

#[test]
fn wrap_breaks_at_spaces_and_splits_long_words() {
    assert_eq!(view::wrap("hello world foo", 11), ["hello", "world foo"]);
    assert_eq!(view::wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    assert_eq!(view::wrap("", 4), [""]);
    assert_eq!(
        view::wrap("日本語のテキスト", 6),
        ["日本語", "のテキ", "スト"]
    );
}

#[test]
fn scrolled_up_view_stays_put_while_an_answer_streams() {
    let mut app = app(30, 10);
    for i in 0..4 {
        exchange(&mut app, &format!("question {i}"), &format!("answer {i}"));
    }
    let fx = app.update(Msg::Submit("more".into()));
    let Some(owl_tui::app::Effect::Submit { id, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::PageUp,
    )));
    let before = rows(&draw(&app).0);
    for _ in 0..5 {
        app.update(Msg::Token {
            id: *id,
            text: "word word word\n".into(),
        });
    }
    let after = rows(&draw(&app).0);
    assert_eq!(before[..6], after[..6], "the lines being read did not move");
    // Back at the bottom the new text shows.
    app.update(Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::End,
        crossterm::event::KeyModifiers::CONTROL,
    )));
    assert!(rows(&draw(&app).0)[..6]
        .iter()
        .any(|l| l.contains("word word word")));
}

#[test]
fn the_status_line_shows_the_conversations_cost_and_savings() {
    let mut app = App::new(None, Settings::default());
    app.update(Msg::Resize(100, 8));
    app.update(Msg::ModelReady(ModelStatus { name: "smol".into(), device: "cpu".into(), n_ctx: 512, baseline: "gpt-4.1-mini".into() }));
    let fx = app.update(Msg::Submit("hi".into()));
    let id = match fx.first() {
        Some(owl_tui::app::Effect::Submit { id, .. }) => *id,
        other => panic!("{other:?}"),
    };
    app.update(Msg::Started { id, prompt_tokens: 30, cached_tokens: 0 });
    app.update(Msg::Token { id, text: "hello".into() });
    let run = LastRun { prompt_tokens: 30, completion_tokens: 12, prompt_tps: 800.0, gen_tps: 95.0, cost_usd: 0.000021, baseline_usd: 0.0000312, ..Default::default() };
    app.update(Msg::Done { id, finish: Finish::Stop, run });
    let (buf, _) = draw(&app);
    let status = rows(&buf).last().unwrap().clone();
    assert_eq!(status, " smol · cpu · ctx 42/512 · pp 800.0 tok/s · tg 95.0 tok/s · $0.000021 · saved $0.000010       /help");
}
