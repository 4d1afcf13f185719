//! The line REPL (what `owl chat` is on a pipe) over the stand-in model.

use std::time::Duration;

use owl_tui::app::Settings;
use owl_tui::fake::EchoLoader;
use owl_tui::runtime::{run_repl, ChatError, ChatOptions};

fn repl(input: &str, n_ctx: usize, settings: Settings) -> (Result<(), ChatError>, String, String) {
    let loader = EchoLoader {
        n_ctx,
        delay: Duration::ZERO,
    };
    let opts = ChatOptions {
        model: "echo".into(),
        system: None,
        settings,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = run_repl(opts, &loader, input.as_bytes(), &mut out, &mut err);
    (
        r,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn each_line_gets_a_streamed_answer() {
    let (r, out, err) = repl("hello there\nsecond line\n", 1024, Settings::default());
    r.unwrap();
    assert_eq!(out, "You said: hello there \nYou said: second line \n");
    assert_eq!(err, "");
}

#[test]
fn slash_commands_work_and_errors_go_to_stderr() {
    let (r, out, err) = repl(
        "/help\n/temp hot\n/max-tokens 2\nab cd ef\n/stats\n",
        1024,
        Settings::default(),
    );
    r.unwrap();
    assert!(out.starts_with("Commands:\n"), "{out}");
    assert!(out.contains("/regen") && out.contains("/quit"));
    assert!(out.contains("max-tokens = 2\nYou said: \n"), "{out}");
    assert!(out.contains("Engine: echo · 1 requests"), "{out}");
    assert_eq!(
        err.trim(),
        "error: temperature must be a number from 0 to 100, not 'hot'"
    );
}

#[test]
fn quit_stops_reading() {
    let (r, out, _) = repl("one\n/quit\ntwo\n", 1024, Settings::default());
    r.unwrap();
    assert_eq!(out, "You said: one \n");
}

#[test]
fn a_full_context_is_reported_and_drop_sends_again() {
    // Room for the answer is n_ctx/4 = 10 tokens; each message costs 4 + its words.
    let text = "one two three four five six seven eight nine ten\n";
    let input = format!("{text}{text}/drop\n");
    let (r, out, _) = repl(&input, 40, Settings::default());
    r.unwrap();
    let answers = out.matches("You said: one two").count();
    assert_eq!(answers, 2, "{out}");
    assert!(out.contains("no longer fits the context"), "{out}");
    assert!(out.contains("Dropped 2 messages"), "{out}");
}

#[test]
fn save_and_load_through_files() {
    let dir = std::env::temp_dir().join(format!("owl-tui-repl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.json");
    let input = format!(
        "/system terse\nhi\n/save {f}\n/clear\n/load {f}\n/regen\n",
        f = file.display()
    );
    let (r, out, err) = repl(&input, 1024, Settings::default());
    r.unwrap();
    assert_eq!(err, "");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["system"], "terse");
    assert_eq!(saved["messages"][1]["content"], "You said: hi ");
    assert!(out.contains("Loaded 2 messages"), "{out}");
    assert_eq!(
        out.matches("You said: hi").count(),
        2,
        "/regen answered again: {out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_that_cannot_load_is_an_error() {
    let loader = EchoLoader {
        n_ctx: 64,
        delay: Duration::ZERO,
    };
    let opts = ChatOptions {
        model: "missing".into(),
        system: None,
        settings: Settings::default(),
    };
    let r = run_repl(
        opts,
        &loader,
        "hi\n".as_bytes(),
        &mut Vec::new(),
        &mut Vec::new(),
    );
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot load missing: unknown model missing; known models: echo"
    );
}
