//! `App::update` driven by key sequences and engine messages, with no terminal and no model.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use owl_tui::app::{
    App, Effect, Entry, Finish, LastRun, ModelStatus, Msg, Refusal, Role, Settings, Turn,
};

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}
fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}
fn alt_enter() -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT))
}

fn ready_app() -> App {
    let mut app = App::new(None, Settings::default());
    app.update(Msg::ModelReady(ModelStatus {
        name: "tiny".into(),
        device: "cpu".into(),
        n_ctx: 512,
        ..Default::default()
    }));
    app
}

fn type_str(app: &mut App, s: &str) -> Vec<Effect> {
    let mut fx = Vec::new();
    for c in s.chars() {
        fx.extend(app.update(key(KeyCode::Char(c))));
    }
    fx
}

/// Types `s`, presses Enter, and returns the effects.
fn send(app: &mut App, s: &str) -> Vec<Effect> {
    let mut fx = type_str(app, s);
    fx.extend(app.update(key(KeyCode::Enter)));
    fx
}

fn submit_id(fx: &[Effect]) -> u64 {
    match fx.iter().find(|e| matches!(e, Effect::Submit { .. })) {
        Some(Effect::Submit { id, .. }) => *id,
        other => panic!("expected a Submit effect, got {other:?} in {fx:?}"),
    }
}

fn answer(app: &mut App, id: u64, text: &str) {
    app.update(Msg::Started {
        id,
        prompt_tokens: 20,
        cached_tokens: 0,
    });
    for piece in text.split_inclusive(' ') {
        app.update(Msg::Token {
            id,
            text: piece.to_string(),
        });
    }
    let run = LastRun {
        prompt_tokens: 20,
        cached_tokens: 0,
        completion_tokens: 3,
        prompt_tps: 100.0,
        gen_tps: 50.0,
        ..Default::default()
    };
    app.update(Msg::Done {
        id,
        finish: Finish::Stop,
        run,
    });
}

fn last_info(app: &App) -> String {
    app.transcript
        .iter()
        .rev()
        .find_map(|e| match e {
            Entry::Info(s) | Entry::Error(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn enter_sends_the_whole_conversation_and_tokens_stream_in() {
    let mut app = App::new(Some("be brief".into()), Settings::default());
    app.update(Msg::ModelReady(ModelStatus {
        name: "tiny".into(),
        device: "cpu".into(),
        n_ctx: 512,
        ..Default::default()
    }));
    let fx = send(&mut app, "hi there");
    assert!(app.input.is_empty(), "the input is cleared after sending");
    let Some(Effect::Submit {
        id,
        turns,
        settings,
    }) = fx.first()
    else {
        panic!("{fx:?}")
    };
    assert_eq!(
        turns,
        &vec![
            Turn::new(Role::System, "be brief"),
            Turn::new(Role::User, "hi there")
        ]
    );
    assert_eq!(settings, &Settings::default());
    assert!(app.is_generating());

    app.update(Msg::Started {
        id: *id,
        prompt_tokens: 12,
        cached_tokens: 0,
    });
    app.update(Msg::Token {
        id: *id,
        text: "Hel".into(),
    });
    app.update(Msg::Token {
        id: *id,
        text: "lo!".into(),
    });
    assert!(
        matches!(&app.transcript[1], Entry::Message { role: Role::Assistant, text, .. } if text == "Hello!")
    );
    assert_eq!(app.ctx_used, 14);
    let run = LastRun {
        prompt_tokens: 12,
        cached_tokens: 0,
        completion_tokens: 2,
        prompt_tps: 300.0,
        gen_tps: 40.0,
        ..Default::default()
    };
    app.update(Msg::Done {
        id: *id,
        finish: Finish::Stop,
        run,
    });
    assert!(!app.is_generating());
    assert_eq!(app.last, Some(run));

    // The next message carries the earlier exchange (the engine reuses its KV).
    let fx = send(&mut app, "and again");
    let Some(Effect::Submit { turns, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[2], Turn::new(Role::Assistant, "Hello!"));
    assert_eq!(turns[3], Turn::new(Role::User, "and again"));
}

#[test]
fn alt_enter_and_ctrl_j_insert_newlines_instead_of_sending() {
    let mut app = ready_app();
    type_str(&mut app, "line one");
    assert!(app.update(alt_enter()).is_empty());
    type_str(&mut app, "line two");
    app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT)));
    app.update(ctrl('j'));
    type_str(&mut app, "four");
    assert_eq!(app.input.text(), "line one\nline two\n\nfour");
    let fx = app.update(key(KeyCode::Enter));
    let Some(Effect::Submit { turns, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(turns[0].content, "line one\nline two\n\nfour");
}

#[test]
fn esc_stops_a_generation_keeping_the_partial_answer_and_later_events_are_ignored() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "count to 100"));
    app.update(Msg::Token {
        id,
        text: "1, 2, 3".into(),
    });
    let fx = app.update(key(KeyCode::Esc));
    assert_eq!(fx, vec![Effect::Cancel { id }]);
    assert!(!app.is_generating());
    assert!(!app.quit, "Esc never leaves");
    assert!(
        matches!(&app.transcript[1], Entry::Message { text, note: Some(n), .. } if text == "1, 2, 3" && n == "stopped")
    );
    // Tokens still in flight for the cancelled request change nothing.
    app.update(Msg::Token {
        id,
        text: ", 4".into(),
    });
    assert!(matches!(&app.transcript[1], Entry::Message { text, .. } if text == "1, 2, 3"));
    // The stopped answer stays in the conversation.
    assert_eq!(app.conversation().len(), 2);
}

#[test]
fn ctrl_c_stops_when_answering_and_quits_when_idle() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "hello"));
    assert_eq!(app.update(ctrl('c')), vec![Effect::Cancel { id }]);
    assert!(!app.quit);
    // Stopped before any token: the exchange is taken back and the text returns to the input.
    assert!(app
        .transcript
        .iter()
        .all(|e| !matches!(e, Entry::Message { .. })));
    assert_eq!(app.input.text(), "hello");
    assert_eq!(app.update(ctrl('c')), vec![Effect::Quit]);
    assert!(app.quit);
}

#[test]
fn ctrl_d_and_slash_quit_exit() {
    let mut app = ready_app();
    assert_eq!(app.update(ctrl('d')), vec![Effect::Quit]);
    let mut app = ready_app();
    assert_eq!(send(&mut app, "/quit"), vec![Effect::Quit]);
    assert!(app.quit);
}

#[test]
fn enter_while_answering_keeps_the_input() {
    let mut app = ready_app();
    submit_id(&send(&mut app, "first"));
    let fx = send(&mut app, "second");
    assert!(fx.is_empty());
    assert_eq!(app.input.text(), "second");
    assert!(last_info(&app).contains("Esc"));
}

#[test]
fn up_and_down_recall_earlier_inputs_and_restore_the_draft() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "first"));
    answer(&mut app, id, "one");
    send(&mut app, "/temp 0.5");
    type_str(&mut app, "draft");
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "/temp 0.5");
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "first");
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "first", "stays at the oldest");
    app.update(key(KeyCode::Down));
    assert_eq!(app.input.text(), "/temp 0.5");
    app.update(key(KeyCode::Down));
    assert_eq!(app.input.text(), "draft");
}

#[test]
fn up_moves_within_a_multiline_input_before_recalling() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "old"));
    answer(&mut app, id, "x");
    type_str(&mut app, "a");
    app.update(alt_enter());
    type_str(&mut app, "b");
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "a\nb", "first Up moves the cursor");
    assert_eq!(app.input.cursor().0, 0);
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "old");
}

#[test]
fn sampling_commands_change_the_next_request() {
    let mut app = ready_app();
    for cmd in [
        "/temp 0.2",
        "/top-k 7",
        "/top-p 0.5",
        "/min-p 0.1",
        "/seed 42",
        "/max-tokens 16",
    ] {
        assert!(send(&mut app, cmd).is_empty(), "{cmd}");
    }
    let fx = send(&mut app, "go");
    let Some(Effect::Submit { settings, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(
        settings,
        &Settings {
            temperature: 0.2,
            top_k: 7,
            top_p: 0.5,
            min_p: 0.1,
            seed: Some(42),
            max_tokens: Some(16)
        }
    );
}

#[test]
fn bad_arguments_are_reported_not_applied() {
    let mut app = ready_app();
    send(&mut app, "/temp hot");
    assert!(last_info(&app).contains("temperature must be a number"));
    send(&mut app, "/top-p 3");
    send(&mut app, "/seed -1");
    send(&mut app, "/frobnicate");
    assert!(last_info(&app).contains("Unknown command /frobnicate"));
    assert_eq!(app.settings, Settings::default());
}

#[test]
fn help_lists_every_command() {
    let mut app = ready_app();
    send(&mut app, "/help");
    let help = last_info(&app);
    for c in [
        "/clear", "/system", "/temp", "/top-k", "/top-p", "/min-p", "/seed", "/regen", "/save",
        "/load", "/model", "/stats", "/quit", "/drop",
    ] {
        assert!(help.contains(c), "{c} missing from help:\n{help}");
    }
}

#[test]
fn system_clear_and_double_slash() {
    let mut app = ready_app();
    send(&mut app, "/system You are a pirate.");
    assert_eq!(app.system.as_deref(), Some("You are a pirate."));
    let id = submit_id(&send(&mut app, "hi"));
    answer(&mut app, id, "arr");
    send(&mut app, "/clear");
    assert_eq!(
        app.conversation(),
        vec![Turn::new(Role::System, "You are a pirate.")]
    );
    assert_eq!(app.ctx_used, 0);
    send(&mut app, "/system -");
    assert_eq!(app.system, None);
    let fx = send(&mut app, "//help is a path");
    let Some(Effect::Submit { turns, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(turns[0].content, "/help is a path");
}

#[test]
fn regen_replaces_the_last_answer() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "tell a joke"));
    answer(&mut app, id, "bad joke");
    let fx = send(&mut app, "/regen");
    let Some(Effect::Submit { id: id2, turns, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_ne!(*id2, id);
    assert_eq!(turns, &vec![Turn::new(Role::User, "tell a joke")]);
    answer(&mut app, *id2, "better joke");
    let answers: Vec<_> = app
        .conversation()
        .into_iter()
        .filter(|t| t.role == Role::Assistant)
        .collect();
    assert_eq!(answers, vec![Turn::new(Role::Assistant, "better joke")]);
}

#[test]
fn context_full_says_so_and_drop_frees_room_without_losing_the_message() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "one"));
    answer(&mut app, id, "first answer");
    let id = submit_id(&send(&mut app, "two"));
    answer(&mut app, id, "second answer");
    let id = submit_id(&send(&mut app, "three"));
    app.update(Msg::Refused {
        id,
        reason: Refusal::ContextFull {
            n_prompt: 500,
            room: 256,
            n_ctx: 512,
        },
    });
    assert!(!app.is_generating());
    let notice = last_info(&app);
    assert!(
        notice.contains("no longer fits") && notice.contains("/drop") && notice.contains("/clear"),
        "{notice}"
    );
    assert!(app.input.is_empty());
    assert_eq!(app.conversation().len(), 4, "nothing dropped silently");
    assert_eq!(app.held.as_deref(), Some("three"));

    // /drop removes the oldest exchange and sends the held message again.
    let fx = send(&mut app, "/drop");
    let Some(Effect::Submit { turns, .. }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(
        turns,
        &vec![
            Turn::new(Role::User, "two"),
            Turn::new(Role::Assistant, "second answer"),
            Turn::new(Role::User, "three")
        ]
    );
    assert!(app
        .transcript
        .iter()
        .any(|e| matches!(e, Entry::Info(s) if s.contains("Dropped 2 messages"))));
    // Dropped turns are still in the transcript, marked.
    assert!(matches!(
        &app.transcript[0],
        Entry::Message { dropped: true, .. }
    ));
    assert!(matches!(
        &app.transcript[1],
        Entry::Message { dropped: true, .. }
    ));
    assert!(matches!(
        &app.transcript[2],
        Entry::Message { dropped: false, .. }
    ));
}

#[test]
fn clear_after_context_full_puts_the_message_in_the_input() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "long question"));
    app.update(Msg::Refused {
        id,
        reason: Refusal::ContextFull {
            n_prompt: 600,
            room: 16,
            n_ctx: 512,
        },
    });
    assert!(send(&mut app, "/clear").is_empty());
    assert_eq!(app.input.text(), "long question");
    assert_eq!(app.held, None);
}

#[test]
fn save_then_load_round_trips_the_conversation() {
    let mut app = ready_app();
    send(&mut app, "/system short answers");
    let id = submit_id(&send(&mut app, "q1"));
    answer(&mut app, id, "a1");
    let fx = send(&mut app, "/save chat.json");
    let Some(Effect::Save { path, json }) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(path.to_str(), Some("chat.json"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["messages"][0]["role"], "user");
    assert_eq!(v["messages"][1]["content"], "a1");
    assert_eq!(v["system"], "short answers");

    let mut other = ready_app();
    let fx = send(&mut other, "/load chat.json");
    assert_eq!(
        fx,
        vec![Effect::Load {
            path: "chat.json".into()
        }]
    );
    other.update(Msg::FileLoaded {
        path: "chat.json".into(),
        contents: Ok(json.clone()),
    });
    assert_eq!(other.conversation(), app.conversation());

    other.update(Msg::FileLoaded {
        path: "x.json".into(),
        contents: Ok("[{\"role\":\"assistant\",\"content\":\"hi\"}]".into()),
    });
    assert!(last_info(&other).contains("must alternate"));
    other.update(Msg::FileLoaded {
        path: "y.json".into(),
        contents: Ok("{nope".into()),
    });
    assert!(last_info(&other).contains("not JSON"));
    assert_eq!(
        other.conversation(),
        app.conversation(),
        "a bad file changes nothing"
    );
}

#[test]
fn model_switch_and_refusal_while_loading() {
    let mut app = ready_app();
    assert_eq!(send(&mut app, "/model"), vec![Effect::ListModels]);
    assert_eq!(
        send(&mut app, "/model gemma"),
        vec![Effect::SwitchModel("gemma".into())]
    );
    assert_eq!(app.loading.as_deref(), Some("gemma"));
    assert!(send(&mut app, "hello").is_empty());
    assert_eq!(app.input.text(), "hello", "kept until the model is ready");
    app.update(Msg::ModelFailed {
        name: "gemma".into(),
        error: "no such model".into(),
    });
    assert!(last_info(&app).contains("still using tiny"));
    app.input.clear();
    assert!(matches!(
        send(&mut app, "hello").first(),
        Some(Effect::Submit { .. })
    ));
}

#[test]
fn failure_hands_the_message_back() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "boom"));
    app.update(Msg::Failed {
        id,
        error: "backend exploded".into(),
    });
    assert!(!app.is_generating());
    assert_eq!(app.input.text(), "boom");
    assert!(last_info(&app).contains("backend exploded"));
}

#[test]
fn page_keys_scroll_and_sending_returns_to_the_bottom() {
    let mut app = ready_app();
    app.update(Msg::Resize(40, 20));
    app.update(key(KeyCode::PageUp));
    assert_eq!(app.scroll, 14);
    app.update(key(KeyCode::PageUp));
    app.update(key(KeyCode::PageDown));
    assert_eq!(app.scroll, 14);
    send(&mut app, "hi");
    assert_eq!(app.scroll, 0);
}

fn priced_answer(app: &mut App, id: u64, cost_usd: f64, baseline_usd: f64) {
    app.update(Msg::Started { id, prompt_tokens: 20, cached_tokens: 0 });
    app.update(Msg::Token { id, text: "ok".into() });
    let run = LastRun { prompt_tokens: 20, completion_tokens: 3, cost_usd, baseline_usd, ..Default::default() };
    app.update(Msg::Done { id, finish: Finish::Stop, run });
}

#[test]
fn stats_show_this_conversations_cost_and_savings_until_cleared() {
    let mut app = App::new(None, Settings::default());
    app.update(Msg::ModelReady(ModelStatus { name: "tiny".into(), device: "cpu".into(), n_ctx: 512, baseline: "gpt-4.1-mini".into() }));
    let id = submit_id(&send(&mut app, "one"));
    priced_answer(&mut app, id, 0.000012, 0.0015);
    let id = submit_id(&send(&mut app, "two"));
    priced_answer(&mut app, id, 0.000018, 0.0025);
    send(&mut app, "/stats");
    let s = last_info(&app);
    assert!(
        s.contains("Cost of this conversation: $0.000030 on this machine (2 answers), $0.0040 on gpt-4.1-mini: saved $0.0040"),
        "{s}"
    );
    send(&mut app, "/clear");
    send(&mut app, "/stats");
    let s = last_info(&app);
    assert!(s.contains("Cost of this conversation: $0.00 on this machine (0 answers)"), "{s}");
}

#[test]
fn an_unpriced_backend_shows_no_cost_line() {
    let mut app = ready_app();
    let id = submit_id(&send(&mut app, "one"));
    answer(&mut app, id, "fine thanks");
    send(&mut app, "/stats");
    assert!(!last_info(&app).contains("Cost of this conversation"), "{}", last_info(&app));
}
