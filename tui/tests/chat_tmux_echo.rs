//! The end-to-end scenarios of `owl chat` (tui/tests/support/chat_e2e.rs) run
//! over the echo stand-in model (examples/echo_chat.rs): the real terminal
//! loop in tmux, keys, redraws, terminal restore, and the pipe REPL, with no
//! weights. tmux must be installed (scripts/test installs it).

mod support {
    pub mod chat_e2e;
}

use support::chat_e2e::{self, Target};

/// `cargo test` builds the examples next to the test binaries' `deps` folder.
fn echo() -> Target {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let program = dir.join("examples").join("echo_chat");
    assert!(
        program.is_file(),
        "{} is missing: `cargo test -p owl-tui` builds it (examples/echo_chat.rs)",
        program.display()
    );
    Target {
        program: program.display().to_string(),
        // Slow enough words that Esc lands mid-answer.
        args: vec!["--delay-ms".into(), "250".into()],
        model: "echo".into(),
        default_model: false,
    }
}

#[test]
fn chat_in_tmux_streams_an_answer_shows_speed_help_and_quits_cleanly() {
    chat_e2e::tmux_answer_help_quit(&echo());
}

#[test]
fn chat_in_tmux_esc_stops_and_ctrl_d_exits() {
    chat_e2e::tmux_esc_stops_ctrl_d_exits(&echo());
}

#[test]
fn chat_over_a_pipe_is_a_line_repl() {
    chat_e2e::pipe_repl(&echo());
}

#[test]
fn chat_over_a_pipe_reports_bad_commands_and_stops_at_quit() {
    chat_e2e::pipe_bad_command_and_quit(&echo());
}
