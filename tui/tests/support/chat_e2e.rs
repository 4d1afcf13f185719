//! The end-to-end scenarios of `owl chat`, shared by the root test (the real
//! `owl` binary and model, tests/chat_tmux.rs) and owl-tui's test over the echo
//! model (tui/tests/chat_tmux_echo.rs): the full-screen chat driven inside tmux
//! (send-keys in, capture-pane out), and the line REPL over a pipe.
//! tmux must be installed (scripts/test installs it).

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The program under test: `program args… --model MODEL --ctx …`.
pub struct Target {
    pub program: String,
    /// Arguments before the chat flags (`chat` for owl).
    pub args: Vec<String>,
    /// The model's name; `--model` is left out when `default_model` is set.
    pub model: String,
    /// Run without `--model`: the program's default (which must be `model`).
    pub default_model: bool,
}

impl Target {
    fn command_line(&self, extra: &str) -> String {
        let model = if self.default_model {
            String::new()
        } else {
            format!("--model {} ", self.model)
        };
        format!("{} {} {model}{extra}", self.program, self.args.join(" "))
    }
}

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `tag` keeps tests that run at once on servers of their own.
    fn start(tag: &str, width: u16, height: u16) -> Tmux {
        let socket = format!("owl-chat-test-{}-{tag}", std::process::id());
        let t = Tmux { socket };
        let out = t.cmd(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env PS1='shell$ ' bash --norc --noprofile",
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed (is tmux installed? scripts/test installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .env("OWL_HOME", owl_home())
            .output()
            .expect("cannot run tmux: install it (scripts/test does: apt-get install -y tmux)")
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        assert!(self
            .cmd(&["send-keys", "-t", "chat", "-l", text])
            .status
            .success());
    }

    /// Presses keys by tmux name ("Enter", "M-Enter", "Escape", "C-d").
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "chat"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    fn screen(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", "chat"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `pred` holds for the screen while the chat runs; fails at
    /// once if the chat exits, and with the screen after `secs`.
    fn wait_for(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        self.wait(what, secs, true, pred)
    }

    /// Waits for the shell (before the chat starts or after it ends).
    fn wait_shell(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        self.wait(what, secs, false, pred)
    }

    fn wait(
        &self,
        what: &str,
        secs: u64,
        chat_running: bool,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            // The chat ended (the shell printed its status): no use waiting.
            if chat_running && exit_line(&s).is_some() {
                panic!("the chat exited while waiting for {what}; the screen was:\n{s}");
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("timed out after {secs}s waiting for {what}; the screen was:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The "EXIT=<status>" line the shell prints when the chat ends (the typed
/// command line holds "EXIT=$?", which does not count).
fn exit_line(screen: &str) -> Option<&str> {
    screen.lines().map(str::trim).find(|l| {
        l.strip_prefix("EXIT=")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn owl_home() -> String {
    std::env::var("OWL_HOME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{}/.cache/owl", std::env::var("HOME").unwrap_or_default()))
}

/// "tg 12.3 tok/s" with a real number (not the "–" shown before any answer).
fn has_gen_speed(screen: &str) -> bool {
    screen.split("tg ").skip(1).any(|rest| {
        let num: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        !num.is_empty()
            && rest[num.len()..].starts_with(" tok/s")
            && num.parse::<f64>().is_ok_and(|v| v > 0.0)
    })
}

/// Ask a question in the full-screen chat: the answer streams in, the status
/// line shows tok/s, `/help` lists the commands, `/quit` leaves a clean shell.
pub fn tmux_answer_help_quit(t: &Target) {
    let tmux = Tmux::start("answer", 100, 30);
    tmux.wait_shell("the shell prompt", 10, |s| s.contains("shell$"));
    tmux.type_text(&format!(
        "{}; echo EXIT=$?",
        t.command_line("--ctx 1024 --max-tokens 24 --temp 0 --threads 2")
    ));
    tmux.keys(&["Enter"]);

    // Loaded: the status line names the model and the device, the input box is there.
    let s = tmux.wait_for("the model to load", 120, |s| {
        s.contains(&t.model)
            && s.contains("ctx 0/1024")
            && s.contains("message")
            && !s.contains("loading")
    });
    assert!(s.contains("· cpu"), "status line shows the device:\n{s}");
    assert!(
        s.contains("tg – tok/s"),
        "no speed before the first answer:\n{s}"
    );

    // Alt+Enter makes a new line in the input instead of sending.
    tmux.type_text("first line");
    tmux.keys(&["M-Enter"]);
    tmux.type_text("second line");
    let s = tmux.wait_for("a two-line input", 10, |s| {
        s.contains("│first line") && s.contains("│second line")
    });
    assert!(!s.contains("▌ you"), "nothing was sent yet:\n{s}");
    // Clear it (Ctrl-U twice, joining the lines with a Backspace between).
    tmux.keys(&["C-u", "BSpace", "C-u"]);
    tmux.wait_for("an empty input", 10, |s| {
        !s.contains("first line") && !s.contains("second line")
    });

    // Ask; the answer streams in and the status line reports tok/s.
    tmux.type_text("What is the capital of France?");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("an answer and the speeds", 120, has_gen_speed);
    assert!(
        s.contains("▌ you") && s.contains("What is the capital of France?"),
        "{s}"
    );
    let after = s
        .split(&format!("▌ {}", t.model))
        .nth(1)
        .expect("the assistant's header");
    let answer: String = after
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        answer.trim().len() > 3,
        "an answer streamed in, got {answer:?} in:\n{s}"
    );
    assert!(
        s.contains("pp ") && !s.contains("ctx 0/1024"),
        "context use is shown:\n{s}"
    );

    // /help lists the commands.
    tmux.type_text("/help");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the help", 10, |s| {
        s.contains("/regen") && s.contains("/quit")
    });
    for c in [
        "/clear", "/system", "/temp", "/top-k", "/top-p", "/min-p", "/seed", "/save", "/load",
        "/model", "/stats",
    ] {
        assert!(s.contains(c), "{c} missing from /help:\n{s}");
    }

    // /quit leaves the alternate screen and the shell sees exit status 0.
    tmux.type_text("/quit");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_shell("the shell after /quit", 20, |s| exit_line(s).is_some());
    assert_eq!(exit_line(&s), Some("EXIT=0"), "exit status 0:\n{s}");
    assert!(
        !s.contains("tok/s") && !s.contains("╭"),
        "the chat screen is gone:\n{s}"
    );
    // The terminal is usable: a command echoes normally (raw mode is off).
    tmux.type_text("echo back-to-normal");
    tmux.keys(&["Enter"]);
    tmux.wait_shell("the shell to answer", 10, |s| {
        s.lines().any(|l| l.trim() == "back-to-normal")
    });
}

/// With no `--model`, the chat loads the default model and answers a plain question
/// sensibly: "What is the capital of France?" gets an answer naming Paris.
pub fn tmux_default_model_knows_paris(t: &Target) {
    let tmux = Tmux::start("paris", 100, 30);
    tmux.wait_shell("the shell prompt", 10, |s| s.contains("shell$"));
    tmux.type_text(&format!(
        "{}; echo EXIT=$?",
        t.command_line("--ctx 1024 --max-tokens 32 --temp 0 --threads 2")
    ));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the default model to load", 300, |s| {
        s.contains(&t.model) && s.contains("ctx 0/1024") && !s.contains("loading")
    });
    tmux.type_text("What is the capital of France?");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("an answer and the speeds", 180, has_gen_speed);
    let answer = s
        .split(&format!("▌ {}", t.model))
        .nth(1)
        .expect("the assistant's header");
    assert!(answer.contains("Paris"), "the answer names Paris:\n{s}");
    tmux.keys(&["C-d"]);
    let s = tmux.wait_shell("the shell after Ctrl-D", 20, |s| exit_line(s).is_some());
    assert_eq!(exit_line(&s), Some("EXIT=0"), "{s}");
}

/// Esc stops an answer without leaving; Ctrl-D leaves with status 0.
pub fn tmux_esc_stops_ctrl_d_exits(t: &Target) {
    let tmux = Tmux::start("stop", 100, 24);
    tmux.wait_shell("the shell prompt", 10, |s| s.contains("shell$"));
    tmux.type_text(&format!(
        "{}; echo EXIT=$?",
        t.command_line("--ctx 1024 --max-tokens 400 --temp 0 --threads 2")
    ));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the model to load", 120, |s| {
        s.contains("ctx 0/1024") && !s.contains("loading")
    });
    tmux.type_text("Write a long story about a dragon.");
    tmux.keys(&["Enter"]);
    tmux.wait_for("tokens to stream", 60, |s| {
        s.contains("answering ·") && !s.contains("answering · 0 tok")
    });
    tmux.keys(&["Escape"]);
    let s = tmux.wait_for("the stop", 20, |s| !s.contains("answering"));
    assert!(
        s.contains("[stopped]") || s.contains("Stopped before any answer"),
        "{s}"
    );
    assert_eq!(exit_line(&s), None, "Esc does not leave:\n{s}");
    tmux.keys(&["C-d"]);
    let s = tmux.wait_shell("the shell after Ctrl-D", 20, |s| exit_line(s).is_some());
    assert_eq!(exit_line(&s), Some("EXIT=0"), "{s}");
}

fn pipe_chat(t: &Target, input: &str) -> Output {
    let mut child = Command::new(&t.program)
        .args(&t.args)
        .args([
            "--model",
            &t.model,
            "--ctx",
            "1024",
            "--max-tokens",
            "16",
            "--temp",
            "0",
            "--threads",
            "2",
        ])
        .env("OWL_HOME", owl_home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", t.program));
    // A program that exits early closes the pipe; its status tells why.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// On a pipe, each line gets an answer; slash commands work.
pub fn pipe_repl(t: &Target) {
    let out = pipe_chat(t, "What is 2+2?\n/help\nName a color.\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit status {:?}; stderr: {stderr}",
        out.status
    );
    assert!(
        !stdout.contains('\x1b'),
        "no escape sequences on a pipe: {stdout:?}"
    );
    let (first, rest) = stdout
        .split_once("Commands:")
        .expect("/help output in the REPL");
    assert!(
        first.trim().len() > 3,
        "the first answer was printed: {stdout:?}"
    );
    assert!(
        rest.contains("/regen") && rest.contains("/quit"),
        "{stdout}"
    );
    let last = rest
        .rsplit_once("Ctrl-D quit")
        .map(|(_, a)| a)
        .unwrap_or("");
    assert!(
        last.trim().len() > 3,
        "the second answer was printed after the help: {stdout:?}"
    );
}

/// On a pipe, bad commands are reported on stderr and `/quit` stops reading.
pub fn pipe_bad_command_and_quit(t: &Target) {
    let out = pipe_chat(t, "/temp hot\n/quit\nthis is never answered\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("temperature must be a number"), "{stderr}");
    assert!(
        stdout.trim().is_empty(),
        "nothing answered after /quit: {stdout:?}"
    );
}
