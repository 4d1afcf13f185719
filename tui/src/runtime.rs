//! The runtime: turns terminal and backend events into [`Msg`]s, runs `update`,
//! carries out its [`Effect`]s, and redraws when something changed. Also the
//! plain REPL used when stdin or stdout is not a terminal.
//!
//! It talks to the model through [`ChatBackend`] and [`Loader`]; the owl Engine
//! service implements them (module `engine`), tests use fakes.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::{mpsc, Arc};
use std::thread;

use crossterm::event::{self, Event as TermEvent, KeyboardEnhancementFlags};
use crossterm::{execute, terminal};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::app::{
    App, Effect, Entry, Finish, LastRun, ModelStatus, Msg, Refusal, Settings, Turn,
    DEFAULT_ANSWER_ROOM,
};
use crate::view;

/// What comes back for one submitted conversation, in order: `Started`, any
/// number of `Token`, then one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Started {
        prompt_tokens: usize,
        cached_tokens: usize,
    },
    Token(String),
    Done {
        finish: Finish,
        run: LastRun,
    },
    Failed(String),
}

impl Reply {
    pub fn into_msg(self, id: u64) -> Msg {
        match self {
            Reply::Started {
                prompt_tokens,
                cached_tokens,
            } => Msg::Started {
                id,
                prompt_tokens,
                cached_tokens,
            },
            Reply::Token(text) => Msg::Token { id, text },
            Reply::Done { finish, run } => Msg::Done { id, finish, run },
            Reply::Failed(error) => Msg::Failed { id, error },
        }
    }
}

/// A request in flight.
pub struct ReplyStream {
    /// Blocks for the next reply; None once the request is over.
    pub next: Box<dyn FnMut() -> Option<Reply> + Send>,
    /// Stops the request; callable from any thread, any number of times.
    pub cancel: Arc<dyn Fn() + Send + Sync>,
}

/// A loaded model the chat can talk to.
pub trait ChatBackend: Send {
    fn status(&self) -> ModelStatus;
    /// Checks the conversation (plus [`answer_room`]) against the context and submits it.
    fn submit(&self, turns: &[Turn], settings: &Settings) -> Result<ReplyStream, Refusal>;
    /// Counters for `/stats`.
    fn stats(&self) -> String;
}

/// Fetches and loads models (the first one, and `/model NAME`).
pub trait Loader: Send + Sync + 'static {
    /// Makes `model` available locally (pulls it); with `progress`, may draw on stderr.
    fn prepare(&self, model: &str, progress: bool) -> Result<(), String>;
    fn load(&self, model: &str) -> Result<Box<dyn ChatBackend>, String>;
    /// The models `/model` can switch to, as text.
    fn models(&self, current: Option<&str>) -> Result<String, String>;
}

/// Room kept for the answer when checking a prompt against the context.
pub fn answer_room(settings: &Settings, n_ctx: usize) -> usize {
    settings
        .max_tokens
        .unwrap_or(DEFAULT_ANSWER_ROOM)
        .min(n_ctx / 4)
        .max(1)
}

/// How `owl chat` starts.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// A models.lock name or a `.gguf` path.
    pub model: String,
    pub system: Option<String>,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("cannot load {model}: {message}")]
    Load { model: String, message: String },
    #[error("terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs `owl chat`: the full-screen chat on a terminal, else the line REPL.
pub fn run(opts: ChatOptions, loader: Arc<dyn Loader>) -> Result<(), ChatError> {
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        run_tui(opts, loader)
    } else {
        run_repl(
            opts,
            loader.as_ref(),
            io::stdin().lock(),
            &mut io::stdout().lock(),
            &mut io::stderr(),
        )
    }
}

/// Effects that need no backend, shared by both front ends.
fn file_effect(effect: &Effect, loader: &dyn Loader, current: Option<&str>) -> Option<Msg> {
    match effect {
        Effect::Save { path, json } => Some(match std::fs::write(path, json) {
            Ok(()) => Msg::Info(format!("Saved the conversation to {}.", path.display())),
            Err(e) => Msg::Error(format!("cannot save {}: {e}", path.display())),
        }),
        Effect::Load { path } => Some(Msg::FileLoaded {
            path: path.clone(),
            contents: std::fs::read_to_string(path).map_err(|e| e.to_string()),
        }),
        Effect::ListModels => Some(match loader.models(current) {
            Ok(s) => Msg::Info(s),
            Err(e) => Msg::Error(e),
        }),
        _ => None,
    }
}

// ----- the full-screen chat -----

/// What the event loop receives.
enum Input {
    App(Msg),
    Loaded {
        name: String,
        result: Result<Box<dyn ChatBackend>, String>,
    },
}

/// Puts the terminal back: on drop (every return path) and from the panic hook.
struct TerminalGuard {
    enhanced: bool,
}

fn restore_terminal(enhanced: bool) {
    let mut out = io::stdout();
    if enhanced {
        let _ = execute!(out, event::PopKeyboardEnhancementFlags);
    }
    let _ = execute!(
        out,
        event::DisableBracketedPaste,
        terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = terminal::disable_raw_mode();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal(self.enhanced);
    }
}

fn enter_terminal() -> io::Result<TerminalGuard> {
    terminal::enable_raw_mode()?;
    let mut out = io::stdout();
    // From here on a panic must restore the terminal before it prints.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal(true);
        prev(info);
    }));
    execute!(
        out,
        terminal::EnterAlternateScreen,
        event::EnableBracketedPaste
    )?;
    // Shift+Enter is only told apart from Enter where the terminal speaks the
    // kitty keyboard protocol; Alt+Enter and Ctrl-J work everywhere.
    let enhanced = matches!(terminal::supports_keyboard_enhancement(), Ok(true))
        && execute!(
            out,
            event::PushKeyboardEnhancementFlags(
                KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES
            )
        )
        .is_ok();
    Ok(TerminalGuard { enhanced })
}

fn spawn_loader(tx: &mpsc::Sender<Input>, loader: &Arc<dyn Loader>, name: String) {
    let tx = tx.clone();
    let loader = Arc::clone(loader);
    thread::spawn(move || {
        // No progress bars here: the screen belongs to the chat.
        let result = loader
            .prepare(&name, false)
            .and_then(|()| loader.load(&name));
        let _ = tx.send(Input::Loaded { name, result });
    });
}

fn run_tui(opts: ChatOptions, loader: Arc<dyn Loader>) -> Result<(), ChatError> {
    // A missing model is pulled before the screen is taken, so its progress
    // shows on the plain terminal; loading happens behind the chat.
    loader
        .prepare(&opts.model, io::stderr().is_terminal())
        .map_err(|message| ChatError::Load {
            model: opts.model.clone(),
            message,
        })?;

    let (tx, rx) = mpsc::channel::<Input>();
    spawn_loader(&tx, &loader, opts.model.clone());

    let guard = enter_terminal().map_err(ChatError::Terminal)?;
    let mut term =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(ChatError::Terminal)?;

    // Terminal events arrive on their own thread.
    let ttx = tx.clone();
    thread::spawn(move || loop {
        let msg = match event::read() {
            Ok(TermEvent::Key(k)) => Msg::Key(k),
            Ok(TermEvent::Paste(s)) => Msg::Paste(s),
            Ok(TermEvent::Resize(w, h)) => Msg::Resize(w, h),
            Ok(_) => continue,
            Err(_) => break,
        };
        if ttx.send(Input::App(msg)).is_err() {
            break;
        }
    });

    let mut app = App::new(opts.system.clone(), opts.settings.clone());
    app.loading = Some(opts.model.clone());
    let size = term.size().map_err(ChatError::Terminal)?;
    app.update(Msg::Resize(size.width, size.height));
    let mut backend: Option<Box<dyn ChatBackend>> = None;
    let mut running: HashMap<u64, Arc<dyn Fn() + Send + Sync>> = HashMap::new();
    let mut first_load_error: Option<String> = None;

    'outer: loop {
        draw(&mut term, &mut app)?;
        // Block for one input, then take whatever else is queued before redrawing.
        let Ok(first) = rx.recv() else { break };
        let mut next = Some(first);
        while let Some(input) = next.take() {
            let msg = match input {
                Input::App(m) => m,
                Input::Loaded { result: Ok(b), .. } => {
                    let status = b.status();
                    // The previous model (if any) shuts down here.
                    backend = Some(b);
                    Msg::ModelReady(status)
                }
                Input::Loaded {
                    name,
                    result: Err(error),
                } => {
                    if backend.is_none() {
                        first_load_error = Some(error);
                        break 'outer;
                    }
                    Msg::ModelFailed { name, error }
                }
            };
            if let Msg::Done { id, .. } | Msg::Failed { id, .. } = &msg {
                running.remove(id);
            }
            let mut queue = app.update(msg);
            while !queue.is_empty() {
                let fx = queue.remove(0);
                let current = app.model.as_ref().map(|m| m.name.clone());
                let reply = if let Some(r) = file_effect(&fx, loader.as_ref(), current.as_deref()) {
                    Some(r)
                } else {
                    match fx {
                        Effect::Submit {
                            id,
                            turns,
                            settings,
                        } => match &backend {
                            None => Some(Msg::Refused {
                                id,
                                reason: Refusal::Other("no model is loaded".into()),
                            }),
                            Some(b) => match b.submit(&turns, &settings) {
                                Ok(stream) => {
                                    running.insert(id, Arc::clone(&stream.cancel));
                                    forward(stream, id, tx.clone());
                                    None
                                }
                                Err(reason) => Some(Msg::Refused { id, reason }),
                            },
                        },
                        Effect::Cancel { id } => {
                            if let Some(c) = running.remove(&id) {
                                c();
                            }
                            None
                        }
                        Effect::SwitchModel(name) => {
                            spawn_loader(&tx, &loader, name);
                            None
                        }
                        Effect::Stats => backend.as_ref().map(|b| Msg::Info(b.stats())),
                        Effect::Quit
                        | Effect::Save { .. }
                        | Effect::Load { .. }
                        | Effect::ListModels => None,
                    }
                };
                if let Some(r) = reply {
                    queue.extend(app.update(r));
                }
            }
            if app.quit {
                break 'outer;
            }
            next = rx.try_recv().ok();
        }
    }
    for cancel in running.values() {
        cancel();
    }
    drop(term);
    drop(guard);
    match first_load_error {
        Some(message) => Err(ChatError::Load {
            model: opts.model.clone(),
            message,
        }),
        None => Ok(()),
    }
}

/// Sends a request's replies into the event loop from a thread of their own.
fn forward(mut stream: ReplyStream, id: u64, tx: mpsc::Sender<Input>) {
    thread::spawn(move || {
        while let Some(r) = (stream.next)() {
            if tx.send(Input::App(r.into_msg(id))).is_err() {
                (stream.cancel)(); // the chat is gone
                break;
            }
        }
    });
}

fn draw(term: &mut Terminal<CrosstermBackend<io::Stdout>>, app: &mut App) -> Result<(), ChatError> {
    let max = view::max_scroll(app);
    app.clamp_scroll(max);
    // The transcript shows notices; only the REPL prints them.
    app.take_notices();
    term.draw(|f| {
        let area = f.area();
        if let Some(pos) = view::render(app, area, f.buffer_mut()) {
            f.set_cursor_position(pos);
        }
    })
    .map_err(ChatError::Terminal)?;
    Ok(())
}

// ----- the line REPL -----

/// Reads lines from `input` and streams each answer to `out`; `/help`, `/stats`
/// and other notices go to `out` too, errors to `err`. Slash commands work as in
/// the full-screen chat. Ends at EOF or `/quit`.
pub fn run_repl(
    opts: ChatOptions,
    loader: &dyn Loader,
    input: impl BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), ChatError> {
    let progress = io::stderr().is_terminal();
    let load = |name: &str| {
        loader
            .prepare(name, progress)
            .and_then(|()| loader.load(name))
    };
    let mut backend = load(&opts.model).map_err(|message| ChatError::Load {
        model: opts.model.clone(),
        message,
    })?;
    let mut app = App::new(opts.system.clone(), opts.settings.clone());
    app.update(Msg::ModelReady(backend.status()));
    app.take_notices();

    for line in input.lines() {
        let line = line?;
        let mut queue = app.update(Msg::Submit(line));
        print_notices(&mut app, out, err)?;
        while !queue.is_empty() {
            let fx = queue.remove(0);
            let current = app.model.as_ref().map(|m| m.name.clone());
            let reply = match fx {
                Effect::Submit {
                    id,
                    turns,
                    settings,
                } => match backend.submit(&turns, &settings) {
                    Ok(mut stream) => {
                        let mut printed = false;
                        while let Some(r) = (stream.next)() {
                            if let Reply::Token(text) = &r {
                                write!(out, "{text}")?;
                                out.flush()?;
                                printed |= !text.is_empty();
                            }
                            let done = matches!(r, Reply::Done { .. } | Reply::Failed(_));
                            queue.extend(app.update(r.into_msg(id)));
                            if done {
                                break;
                            }
                        }
                        if printed {
                            writeln!(out)?;
                        }
                        None
                    }
                    Err(reason) => Some(Msg::Refused { id, reason }),
                },
                Effect::SwitchModel(name) => match load(&name) {
                    Ok(b) => {
                        backend = b;
                        Some(Msg::ModelReady(backend.status()))
                    }
                    Err(error) => Some(Msg::ModelFailed { name, error }),
                },
                Effect::Stats => Some(Msg::Info(backend.stats())),
                Effect::Cancel { .. } | Effect::Quit => None,
                other => file_effect(&other, loader, current.as_deref()),
            };
            if let Some(r) = reply {
                queue.extend(app.update(r));
            }
            print_notices(&mut app, out, err)?;
        }
        if app.quit {
            break;
        }
    }
    Ok(())
}

/// Info goes to `out` (it is what `/help` or `/stats` asked for); errors to `err`.
fn print_notices(app: &mut App, out: &mut impl Write, err: &mut impl Write) -> io::Result<()> {
    for n in app.take_notices() {
        match n {
            Entry::Error(s) => writeln!(err, "error: {s}")?,
            Entry::Info(s) => writeln!(out, "{s}")?,
            Entry::Message { .. } => {}
        }
    }
    out.flush()
}
