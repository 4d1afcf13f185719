//! End-to-end tests of `owl chat` with the built binary: the default model
//! (qwen2.5-coder-0.5b-instruct) answers a question, and the rest of the
//! scenarios run on smollm2-135m-instruct for speed (pulled into the model cache if missing), a small
//! context and few tokens so they stay quick. The scenarios live in
//! tui/tests/support/chat_e2e.rs (owl-tui runs the same ones over its echo model).
//! tmux must be installed (scripts/test installs it).

#[path = "../tui/tests/support/chat_e2e.rs"]
mod chat_e2e;

use chat_e2e::Target;

fn owl() -> Target {
    Target {
        program: env!("CARGO_BIN_EXE_owl").to_string(),
        args: vec!["chat".into()],
        model: "smollm2-135m-instruct".into(),
        default_model: false,
    }
}

/// The default model (qwen2.5-coder-0.5b-instruct), chosen by leaving out `--model`.
#[test]
fn chat_with_the_default_model_knows_the_capital_of_france() {
    chat_e2e::tmux_default_model_knows_paris(&Target {
        program: env!("CARGO_BIN_EXE_owl").to_string(),
        args: vec!["chat".into()],
        model: owl_engine::registry::default_model().into(),
        default_model: true,
    });
}

#[test]
fn chat_in_tmux_streams_an_answer_shows_speed_help_and_quits_cleanly() {
    chat_e2e::tmux_answer_help_quit(&owl());
}

#[test]
fn chat_in_tmux_esc_stops_and_ctrl_d_exits() {
    chat_e2e::tmux_esc_stops_ctrl_d_exits(&owl());
}

#[test]
fn chat_over_a_pipe_is_a_line_repl() {
    chat_e2e::pipe_repl(&owl());
}

#[test]
fn chat_over_a_pipe_reports_bad_commands_and_stops_at_quit() {
    chat_e2e::pipe_bad_command_and_quit(&owl());
}
