//! The chat's state, the messages that change it, and `update`.
//!
//! `update` does no I/O: what must happen outside (submit a request, cancel it,
//! write a file, load a model) comes back as [`Effect`]s for the runtime to
//! carry out, and their results come back as [`Msg`]s. The TUI and the pipe
//! REPL share it.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::{Deserialize, Serialize};

use crate::editor::Editor;

/// Room kept free for the answer when `max_tokens` is unset.
pub const DEFAULT_ANSWER_ROOM: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of the conversation as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

impl Turn {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Turn {
            role,
            content: content.into(),
        }
    }
}

/// Sampling settings the slash commands change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// None: a random seed per request.
    pub seed: Option<u64>,
    /// None: until the model stops or the context is full.
    pub max_tokens: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: None,
            max_tokens: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    Cancelled,
}

/// What the transcript shows.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Message {
        role: Role,
        text: String,
        /// Removed from the context with `/drop`; still shown, dimmed.
        dropped: bool,
        /// Shown after an answer: "stopped", "length limit".
        note: Option<String>,
    },
    /// Help, command results, notices.
    Info(String),
    Error(String),
}

impl Entry {
    fn message(role: Role, text: impl Into<String>) -> Self {
        Entry::Message {
            role,
            text: text.into(),
            dropped: false,
            note: None,
        }
    }
}

/// The loaded model, as the status line shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStatus {
    pub name: String,
    pub device: String,
    pub n_ctx: usize,
    /// The API model answers are priced against ("" when the backend does not price them).
    pub baseline: String,
}

/// Speeds and sizes of the last finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LastRun {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_tps: f64,
    pub gen_tps: f64,
    /// Its local cost (its share of busy time at this machine's rate) and what the
    /// same tokens cost on the baseline API, USD.
    pub cost_usd: f64,
    pub baseline_usd: f64,
}

/// What this conversation's answers cost so far, USD.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    pub cost_usd: f64,
    pub baseline_usd: f64,
    pub answers: usize,
}

impl Spent {
    pub fn savings_usd(&self) -> f64 {
        self.baseline_usd - self.cost_usd
    }
}

/// Dollars as people read them: cents, or two significant digits below a cent.
pub fn usd(x: f64) -> String {
    let a = x.abs();
    if a >= 0.01 || a == 0.0 {
        format!("${x:.2}")
    } else {
        let decimals = (-a.log10()).ceil() as usize + 1;
        format!("${x:.decimals$}")
    }
}

/// The request in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub id: u64,
    /// Transcript index of the assistant entry being written.
    pub entry: usize,
    /// Transcript index of the user entry this answers, when it was typed just now
    /// (so a refused or failed request can hand the text back to the input).
    pub fresh_user: Option<usize>,
    pub prompt_tokens: usize,
    pub tokens: usize,
}

/// Why the runtime did not submit a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The conversation plus room for the answer exceeds the context.
    ContextFull {
        n_prompt: usize,
        room: usize,
        n_ctx: usize,
    },
    Other(String),
}

/// Everything that can change the state.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Paste(String),
    Resize(u16, u16),
    /// A whole input line (the pipe REPL, or Enter in the TUI).
    Submit(String),
    Started {
        id: u64,
        prompt_tokens: usize,
        cached_tokens: usize,
    },
    Token {
        id: u64,
        text: String,
    },
    Done {
        id: u64,
        finish: Finish,
        run: LastRun,
    },
    Failed {
        id: u64,
        error: String,
    },
    Refused {
        id: u64,
        reason: Refusal,
    },
    ModelReady(ModelStatus),
    ModelFailed {
        name: String,
        error: String,
    },
    /// Contents of a `/load` file, or why it could not be read.
    FileLoaded {
        path: PathBuf,
        contents: Result<String, String>,
    },
    Info(String),
    Error(String),
}

/// What the runtime must do after an update.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Check the prompt against the context, then submit it.
    Submit {
        id: u64,
        turns: Vec<Turn>,
        settings: Settings,
    },
    Cancel {
        id: u64,
    },
    Save {
        path: PathBuf,
        json: String,
    },
    Load {
        path: PathBuf,
    },
    /// Start an engine for another model (answer with ModelReady or ModelFailed).
    SwitchModel(String),
    /// Answer with Info listing the models.
    ListModels,
    /// Answer with Info holding the engine's counters.
    Stats,
    Quit,
}

/// The saved form of a conversation (`/save`, `/load`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    pub messages: Vec<Turn>,
}

/// Commands `/help` lists: (usage, what it does).
pub const COMMANDS: &[(&str, &str)] = &[
    ("/help", "show this help"),
    ("/clear", "start a new conversation"),
    (
        "/system TEXT",
        "set the system prompt (no TEXT: show it; '-': remove it)",
    ),
    ("/temp X", "sampling temperature (0 = greedy)"),
    ("/top-k N", "keep the N most likely tokens (0 = off)"),
    ("/top-p X", "nucleus sampling (1 = off)"),
    (
        "/min-p X",
        "drop tokens below X x the top probability (0 = off)",
    ),
    (
        "/seed N",
        "fixed sampling seed ('random' for a new one each time)",
    ),
    (
        "/max-tokens N",
        "longest answer in tokens ('none' = no limit)",
    ),
    ("/regen", "answer the last message again"),
    (
        "/drop [N]",
        "remove the N oldest exchanges from the context (default 1)",
    ),
    ("/save FILE", "write the conversation as JSON"),
    ("/load FILE", "read a conversation saved with /save"),
    (
        "/model [NAME]",
        "switch to another model (no NAME: list them)",
    ),
    ("/stats", "speeds, token counts and engine counters"),
    ("/quit", "leave (also Ctrl-D, or Ctrl-C when idle)"),
];

const KEYS_HELP: &str =
    "Keys: Enter send · Alt+Enter or Shift+Enter new line · Esc or Ctrl-C stop an answer · \
Up/Down earlier inputs · PageUp/PageDown scroll · Ctrl-D quit";

pub fn help_text() -> String {
    let w = COMMANDS.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    let mut s = String::from("Commands:\n");
    for (usage, what) in COMMANDS {
        s.push_str(&format!("  {usage:<w$}  {what}\n"));
    }
    s.push_str(KEYS_HELP);
    s
}

/// The whole chat state.
#[derive(Debug)]
pub struct App {
    /// None while the first model loads.
    pub model: Option<ModelStatus>,
    /// A model being loaded (first start or `/model`).
    pub loading: Option<String>,
    pub system: Option<String>,
    pub settings: Settings,
    pub transcript: Vec<Entry>,
    pub input: Editor,
    pub history: Vec<String>,
    /// Index into `history` while recalling with Up/Down.
    history_pos: Option<usize>,
    /// What was typed before recalling started.
    history_draft: String,
    /// Transcript lines scrolled up from the bottom (0 follows new output).
    pub scroll: usize,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    pub generation: Option<Generation>,
    next_id: u64,
    /// Tokens the conversation holds in the context (last prompt + answer).
    pub ctx_used: usize,
    pub last: Option<LastRun>,
    /// This conversation's cost and savings (reset with it).
    pub spent: Spent,
    /// A message the context had no room for, sent again after `/drop`.
    pub held: Option<String>,
    /// Info and errors not yet taken by the front end (the REPL prints them).
    notices: Vec<Entry>,
    pub quit: bool,
}

impl App {
    pub fn new(system: Option<String>, settings: Settings) -> Self {
        App {
            model: None,
            loading: None,
            system,
            settings,
            transcript: Vec::new(),
            input: Editor::default(),
            history: Vec::new(),
            history_pos: None,
            history_draft: String::new(),
            scroll: 0,
            size: (80, 24),
            generation: None,
            next_id: 1,
            ctx_used: 0,
            last: None,
            spent: Spent::default(),
            held: None,
            notices: Vec::new(),
            quit: false,
        }
    }

    pub fn is_generating(&self) -> bool {
        self.generation.is_some()
    }

    /// The conversation sent to the model: the system prompt, then every message
    /// not dropped, except the answer being written.
    pub fn conversation(&self) -> Vec<Turn> {
        let pending = self.generation.as_ref().map(|g| g.entry);
        let mut turns = Vec::new();
        if let Some(s) = &self.system {
            turns.push(Turn::new(Role::System, s.clone()));
        }
        for (i, e) in self.transcript.iter().enumerate() {
            if let Entry::Message {
                role,
                text,
                dropped: false,
                ..
            } = e
            {
                if Some(i) != pending {
                    turns.push(Turn::new(*role, text.clone()));
                }
            }
        }
        turns
    }

    fn info(&mut self, s: impl Into<String>) {
        let e = Entry::Info(s.into());
        self.notices.push(e.clone());
        self.transcript.push(e);
        self.scroll = 0;
    }

    fn error(&mut self, s: impl Into<String>) {
        let e = Entry::Error(s.into());
        self.notices.push(e.clone());
        self.transcript.push(e);
        self.scroll = 0;
    }

    /// Info and error entries added since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.notices)
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => self.on_key(k),
            Msg::Paste(s) => {
                self.input.insert_str(&s);
                vec![]
            }
            Msg::Resize(w, h) => {
                self.size = (w, h);
                vec![]
            }
            Msg::Submit(text) => self.submit(&text).0,
            Msg::Started {
                id, prompt_tokens, ..
            } => {
                if let Some(g) = self.generation.as_mut().filter(|g| g.id == id) {
                    g.prompt_tokens = prompt_tokens;
                    self.ctx_used = prompt_tokens;
                }
                vec![]
            }
            Msg::Token { id, text } => {
                if let Some(g) = self.generation.as_mut().filter(|g| g.id == id) {
                    g.tokens += 1;
                    let idx = g.entry;
                    self.ctx_used = g.prompt_tokens + g.tokens;
                    let width = self.size.0 as usize;
                    let scrolled = self.scroll > 0;
                    if let Some(Entry::Message { text: t, .. }) = self.transcript.get_mut(idx) {
                        let before = if scrolled {
                            crate::view::message_rows(t, width)
                        } else {
                            0
                        };
                        t.push_str(&text);
                        // Scrolled up to read: keep the same lines in view while the answer grows.
                        if scrolled {
                            self.scroll +=
                                crate::view::message_rows(t, width).saturating_sub(before);
                        }
                    }
                }
                vec![]
            }
            Msg::Done { id, finish, run } => {
                let Some(g) = self.generation.take_if(|g| g.id == id) else {
                    return vec![];
                };
                self.last = Some(run);
                self.spent.cost_usd += run.cost_usd;
                self.spent.baseline_usd += run.baseline_usd;
                self.spent.answers += 1;
                self.ctx_used = run.prompt_tokens + run.completion_tokens;
                let note = match finish {
                    Finish::Stop => None,
                    Finish::Length => Some("length limit"),
                    Finish::Cancelled => Some("stopped"),
                };
                self.finish_entry(g, note);
                vec![]
            }
            Msg::Failed { id, error } => {
                if let Some(g) = self.generation.take_if(|g| g.id == id) {
                    let back = self.give_back(g);
                    self.error(format!("generation failed: {error}{back}"));
                }
                vec![]
            }
            Msg::Refused { id, reason } => {
                if let Some(g) = self.generation.take_if(|g| g.id == id) {
                    match reason {
                        Refusal::ContextFull {
                            n_prompt,
                            room,
                            n_ctx,
                        } => {
                            let held = self.abandon(g);
                            let what = if held.is_some() {
                                " and send your message again"
                            } else {
                                ""
                            };
                            self.held = held;
                            self.info(format!(
                                "The conversation no longer fits the context: {n_prompt} tokens plus {room} for the \
                                 answer is over {n_ctx}. Type /drop to remove the oldest exchange{what}, /clear to \
                                 start over, or restart with a larger --ctx."
                            ));
                        }
                        Refusal::Other(e) => {
                            let back = self.give_back(g);
                            self.error(format!("{e}{back}"));
                        }
                    }
                }
                vec![]
            }
            Msg::ModelReady(m) => {
                self.loading = None;
                let ctx = m.n_ctx;
                let first = self.model.is_none();
                let line = format!("{} loaded on {} (context {ctx} tokens)", m.name, m.device);
                self.model = Some(m);
                if !first {
                    self.ctx_used = 0;
                    self.info(line);
                }
                vec![]
            }
            Msg::ModelFailed { name, error } => {
                self.loading = None;
                let keep = match &self.model {
                    Some(m) => format!("; still using {}", m.name),
                    None => String::new(),
                };
                self.error(format!("could not load {name}: {error}{keep}"));
                vec![]
            }
            Msg::FileLoaded { path, contents } => {
                match contents
                    .map_err(|e| e.to_string())
                    .and_then(|c| parse_session(&c))
                {
                    Ok(s) => self.load_session(s, &path),
                    Err(e) => self.error(format!("cannot load {}: {e}", path.display())),
                }
                vec![]
            }
            Msg::Info(s) => {
                self.info(s);
                vec![]
            }
            Msg::Error(s) => {
                self.error(s);
                vec![]
            }
        }
    }

    /// Ends the answer in `g`: keeps what was written, or when nothing was,
    /// takes the exchange back (a conversation must alternate user/assistant).
    fn finish_entry(&mut self, g: Generation, note: Option<&str>) {
        let empty = matches!(self.transcript.get(g.entry), Some(Entry::Message { text, .. }) if text.trim().is_empty());
        if empty && note.is_some() {
            let back = self.give_back(g);
            self.info(format!("Stopped before any answer.{back}"));
            return;
        }
        if let Some(Entry::Message { note: n, .. }) = self.transcript.get_mut(g.entry) {
            *n = note.map(str::to_string);
        }
    }

    /// Removes the unanswered exchange of `g` from the transcript and returns
    /// the text of the message typed for it, if it was typed just now.
    fn abandon(&mut self, g: Generation) -> Option<String> {
        if g.entry < self.transcript.len() {
            self.transcript.remove(g.entry);
        }
        let u = g.fresh_user.filter(|&u| u < self.transcript.len())?;
        match self.transcript.remove(u) {
            Entry::Message { text, .. } => Some(text),
            _ => None,
        }
    }

    /// [`abandon`](Self::abandon), then puts the message back into the input
    /// when that is empty; returns a sentence saying so.
    fn give_back(&mut self, g: Generation) -> &'static str {
        match self.abandon(g) {
            Some(text) if self.input.is_empty() => {
                self.input.set_text(&text);
                " Your message is back in the input."
            }
            _ => "",
        }
    }

    /// Stops the answer being written (Esc, Ctrl-C, or a command that changes the conversation).
    fn stop(&mut self) -> Vec<Effect> {
        match self.generation.take() {
            Some(g) => {
                let id = g.id;
                self.finish_entry(g, Some("stopped"));
                vec![Effect::Cancel { id }]
            }
            None => vec![],
        }
    }

    fn send_message(&mut self, message: String) -> Vec<Effect> {
        self.transcript.push(Entry::message(Role::User, message));
        let user = self.transcript.len() - 1;
        self.start_generation(Some(user))
    }

    fn start_generation(&mut self, fresh_user: Option<usize>) -> Vec<Effect> {
        let id = self.next_id;
        self.next_id += 1;
        let turns = self.conversation();
        self.transcript.push(Entry::message(Role::Assistant, ""));
        self.generation = Some(Generation {
            id,
            entry: self.transcript.len() - 1,
            fresh_user,
            prompt_tokens: 0,
            tokens: 0,
        });
        self.scroll = 0;
        vec![Effect::Submit {
            id,
            turns,
            settings: self.settings.clone(),
        }]
    }

    /// Handles a line from the input: a slash command or a message.
    /// The bool says whether it was taken (false: keep it in the input).
    pub fn submit(&mut self, text: &str) -> (Vec<Effect>, bool) {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return (vec![], true);
        }
        if self.history.last().map(String::as_str) != Some(text) {
            self.history.push(text.to_string());
        }
        self.history_pos = None;
        // "//text" sends "/text" as a message.
        let message = if let Some(rest) = trimmed.strip_prefix("//") {
            format!("/{rest}")
        } else if trimmed.starts_with('/') {
            return (self.command(trimmed), true);
        } else {
            text.trim_end().to_string()
        };
        if self.is_generating() {
            self.error("Still answering: press Esc to stop it first.");
            return (vec![], false);
        }
        if self.model.is_none() || self.loading.is_some() {
            self.error("The model is still loading; send again when it is ready.");
            return (vec![], false);
        }
        self.held = None;
        (self.send_message(message), true)
    }

    fn command(&mut self, line: &str) -> Vec<Effect> {
        let (cmd, arg) = match line.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (line, ""),
        };
        match cmd {
            "/help" | "/?" => {
                self.info(help_text());
                vec![]
            }
            "/quit" | "/exit" | "/bye" => {
                let mut fx = self.stop();
                self.quit = true;
                fx.push(Effect::Quit);
                fx
            }
            "/clear" => {
                let fx = self.stop();
                self.transcript.clear();
                self.ctx_used = 0;
                self.spent = Spent::default();
                match self.held.take() {
                    Some(text) if self.input.is_empty() => {
                        self.input.set_text(&text);
                        self.info("Conversation cleared. Your unsent message is in the input.");
                    }
                    _ => self.info("Conversation cleared."),
                }
                fx
            }
            "/system" => {
                match arg {
                    "" => match &self.system {
                        Some(s) => self.info(format!("System prompt: {s}")),
                        None => self.info("No system prompt."),
                    },
                    "-" => {
                        self.system = None;
                        self.info("System prompt removed.");
                    }
                    s => {
                        self.system = Some(s.to_string());
                        self.info(format!("System prompt set: {s}"));
                    }
                }
                vec![]
            }
            "/temp" => self.set_number(arg, "temperature", 0.0..=100.0, |s, v| s.temperature = v),
            "/top-p" => self.set_number(arg, "top-p", 0.0..=1.0, |s, v| s.top_p = v),
            "/min-p" => self.set_number(arg, "min-p", 0.0..=1.0, |s, v| s.min_p = v),
            "/top-k" => {
                match arg.parse::<usize>() {
                    Ok(k) => {
                        self.settings.top_k = k;
                        self.info(format!("top-k = {k}"));
                    }
                    Err(_) => self.error(format!("/top-k needs a whole number, not '{arg}'")),
                }
                vec![]
            }
            "/seed" => {
                match arg {
                    "random" | "none" => {
                        self.settings.seed = None;
                        self.info("seed = random");
                    }
                    a => match a.parse::<u64>() {
                        Ok(n) => {
                            self.settings.seed = Some(n);
                            self.info(format!("seed = {n}"));
                        }
                        Err(_) => {
                            self.error(format!("/seed needs a whole number or 'random', not '{a}'"))
                        }
                    },
                }
                vec![]
            }
            "/max-tokens" => {
                match arg {
                    "none" | "0" => {
                        self.settings.max_tokens = None;
                        self.info("max-tokens = none");
                    }
                    a => match a.parse::<usize>() {
                        Ok(n) => {
                            self.settings.max_tokens = Some(n);
                            self.info(format!("max-tokens = {n}"));
                        }
                        Err(_) => self.error(format!(
                            "/max-tokens needs a whole number or 'none', not '{a}'"
                        )),
                    },
                }
                vec![]
            }
            "/regen" => self.regen(),
            "/drop" => {
                let n = if arg.is_empty() {
                    Ok(1)
                } else {
                    arg.parse::<usize>()
                };
                match n {
                    Ok(n) if n > 0 => {
                        let mut fx = self.stop();
                        if self.drop_oldest(n) {
                            if let Some(text) = self.held.take() {
                                fx.extend(self.send_message(text));
                            }
                        }
                        fx
                    }
                    _ => {
                        self.error(format!(
                            "/drop needs a positive number of exchanges, not '{arg}'"
                        ));
                        vec![]
                    }
                }
            }
            "/save" => {
                if arg.is_empty() {
                    self.error("/save needs a file name");
                    return vec![];
                }
                let file = SessionFile {
                    model: self.model.as_ref().map(|m| m.name.clone()),
                    system: self.system.clone(),
                    settings: Some(self.settings.clone()),
                    messages: self
                        .conversation()
                        .into_iter()
                        .filter(|t| t.role != Role::System)
                        .collect(),
                };
                match serde_json::to_string_pretty(&file) {
                    Ok(json) => vec![Effect::Save {
                        path: PathBuf::from(arg),
                        json,
                    }],
                    Err(e) => {
                        self.error(format!("cannot encode the conversation: {e}"));
                        vec![]
                    }
                }
            }
            "/load" => {
                if arg.is_empty() {
                    self.error("/load needs a file name");
                    return vec![];
                }
                vec![Effect::Load {
                    path: PathBuf::from(arg),
                }]
            }
            "/model" => {
                if arg.is_empty() {
                    return vec![Effect::ListModels];
                }
                if self.loading.is_some() {
                    self.error("A model is already loading.");
                    return vec![];
                }
                let mut fx = self.stop();
                self.loading = Some(arg.to_string());
                self.info(format!("Loading {arg}…"));
                fx.push(Effect::SwitchModel(arg.to_string()));
                fx
            }
            "/stats" => {
                let mut s = String::new();
                let turns = self
                    .conversation()
                    .iter()
                    .filter(|t| t.role != Role::System)
                    .count();
                let n_ctx = self.model.as_ref().map_or(0, |m| m.n_ctx);
                s.push_str(&format!(
                    "Conversation: {turns} messages, {} of {n_ctx} context tokens\n",
                    self.ctx_used
                ));
                match &self.last {
                    Some(l) => s.push_str(&format!(
                        "Last answer: prompt {} tokens ({} cached) at {:.1} tok/s, {} tokens generated at {:.1} tok/s\n",
                        l.prompt_tokens, l.cached_tokens, l.prompt_tps, l.completion_tokens, l.gen_tps
                    )),
                    None => s.push_str("No answer yet\n"),
                }
                let baseline = self.model.as_ref().map_or("", |m| m.baseline.as_str());
                if !baseline.is_empty() {
                    let sp = self.spent;
                    s.push_str(&format!(
                        "Cost of this conversation: {} on this machine ({} answers), {} on {baseline}: saved {}\n",
                        usd(sp.cost_usd),
                        sp.answers,
                        usd(sp.baseline_usd),
                        usd(sp.savings_usd())
                    ));
                }
                let st = &self.settings;
                s.push_str(&format!(
                    "Sampling: temp {} · top-k {} · top-p {} · min-p {} · seed {} · max-tokens {}",
                    st.temperature,
                    st.top_k,
                    st.top_p,
                    st.min_p,
                    st.seed.map_or("random".to_string(), |v| v.to_string()),
                    st.max_tokens.map_or("none".to_string(), |v| v.to_string()),
                ));
                self.info(s);
                vec![Effect::Stats]
            }
            other => {
                self.error(format!("Unknown command {other}; /help lists them (start with // to send a message beginning with /)."));
                vec![]
            }
        }
    }

    fn set_number(
        &mut self,
        arg: &str,
        name: &str,
        range: std::ops::RangeInclusive<f32>,
        set: impl FnOnce(&mut Settings, f32),
    ) -> Vec<Effect> {
        match arg.parse::<f32>() {
            Ok(v) if range.contains(&v) => {
                set(&mut self.settings, v);
                self.info(format!("{name} = {v}"));
            }
            _ => self.error(format!(
                "{name} must be a number from {} to {}, not '{arg}'",
                range.start(),
                range.end()
            )),
        }
        vec![]
    }

    fn regen(&mut self) -> Vec<Effect> {
        let mut fx = self.stop();
        if self.model.is_none() || self.loading.is_some() {
            self.error("The model is still loading.");
            return fx;
        }
        let last = self
            .transcript
            .iter()
            .rposition(|e| matches!(e, Entry::Message { dropped: false, .. }));
        match last.map(|i| (i, &self.transcript[i])) {
            Some((
                i,
                Entry::Message {
                    role: Role::Assistant,
                    ..
                },
            )) => {
                self.transcript.remove(i);
            }
            Some((
                _,
                Entry::Message {
                    role: Role::User, ..
                },
            )) => {}
            _ => {
                self.error("Nothing to answer again.");
                return fx;
            }
        }
        fx.extend(self.start_generation(None));
        fx
    }

    /// Marks the `n` oldest exchanges dropped; false if there was nothing to drop.
    fn drop_oldest(&mut self, n: usize) -> bool {
        let mut dropped = 0;
        let mut exchanges = 0;
        let mut seen_user = false;
        for e in self.transcript.iter_mut() {
            if let Entry::Message {
                role,
                dropped: d @ false,
                ..
            } = e
            {
                // An exchange is a user message and the answers up to the next one.
                if *role == Role::User {
                    if seen_user {
                        exchanges += 1;
                    }
                    if exchanges == n {
                        break;
                    }
                    seen_user = true;
                }
                *d = true;
                dropped += 1;
            }
        }
        if dropped == 0 {
            self.info("Nothing to drop.");
            return false;
        }
        let left = self
            .conversation()
            .iter()
            .filter(|t| t.role != Role::System)
            .count();
        self.info(format!(
            "Dropped {dropped} messages from the context (still shown, dimmed); {left} remain."
        ));
        true
    }

    fn load_session(&mut self, s: SessionFile, path: &std::path::Path) {
        let mut last = Role::Assistant;
        for t in &s.messages {
            let ok = match t.role {
                Role::System => false,
                Role::User => last == Role::Assistant,
                Role::Assistant => last == Role::User,
            };
            if !ok {
                self.error(format!(
                    "cannot load {}: messages must alternate user/assistant, starting with user",
                    path.display()
                ));
                return;
            }
            last = t.role;
        }
        self.stop();
        self.transcript.clear();
        self.ctx_used = 0;
        self.spent = Spent::default();
        if s.system.is_some() {
            self.system = s.system;
        }
        if let Some(st) = s.settings {
            self.settings = st;
        }
        let n = s.messages.len();
        self.transcript.extend(
            s.messages
                .into_iter()
                .map(|t| Entry::message(t.role, t.content)),
        );
        self.info(format!("Loaded {n} messages from {}.", path.display()));
    }

    // ----- keys -----

    fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if k.kind == KeyEventKind::Release {
            return vec![];
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        let shift = k.modifiers.contains(KeyModifiers::SHIFT);
        match k.code {
            KeyCode::Char('c') if ctrl => {
                if self.is_generating() {
                    self.stop()
                } else {
                    self.quit = true;
                    vec![Effect::Quit]
                }
            }
            KeyCode::Char('d') if ctrl => {
                let mut fx = self.stop();
                self.quit = true;
                fx.push(Effect::Quit);
                fx
            }
            KeyCode::Esc => self.stop(),
            KeyCode::Enter | KeyCode::Char('\n' | '\r') if alt || shift => {
                self.input.newline();
                vec![]
            }
            // Ctrl-J is a line feed: a newline on terminals that send nothing else for Shift+Enter.
            KeyCode::Char('j') if ctrl => {
                self.input.newline();
                vec![]
            }
            KeyCode::Enter => {
                let text = self.input.text();
                self.input.clear();
                let (fx, taken) = self.submit(&text);
                if !taken {
                    self.input.set_text(&text);
                }
                fx
            }
            KeyCode::Char('u') if ctrl => {
                self.input.kill_to_start();
                vec![]
            }
            KeyCode::Char('w') if ctrl => {
                self.input.delete_word();
                vec![]
            }
            KeyCode::Backspace if ctrl || alt => {
                self.input.delete_word();
                vec![]
            }
            KeyCode::Char('a') if ctrl => {
                self.input.home();
                vec![]
            }
            KeyCode::Char('e') if ctrl => {
                self.input.end();
                vec![]
            }
            KeyCode::Char('l') if ctrl => vec![],
            KeyCode::Char(c) if !ctrl => {
                self.input.insert_char(c);
                vec![]
            }
            KeyCode::Backspace => {
                self.input.backspace();
                vec![]
            }
            KeyCode::Delete => {
                self.input.delete();
                vec![]
            }
            KeyCode::Left => {
                self.input.left();
                vec![]
            }
            KeyCode::Right => {
                self.input.right();
                vec![]
            }
            KeyCode::Home if ctrl => {
                self.scroll = usize::MAX / 2;
                vec![]
            }
            KeyCode::End if ctrl => {
                self.scroll = 0;
                vec![]
            }
            KeyCode::Home => {
                self.input.home();
                vec![]
            }
            KeyCode::End => {
                self.input.end();
                vec![]
            }
            KeyCode::Up => {
                if !self.input.up() {
                    self.history_prev();
                }
                vec![]
            }
            KeyCode::Down => {
                if !self.input.down() {
                    self.history_next();
                }
                vec![]
            }
            KeyCode::PageUp => {
                self.scroll = self.scroll.saturating_add(self.page());
                vec![]
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(self.page());
                vec![]
            }
            _ => vec![],
        }
    }

    /// Lines one PageUp moves: most of the transcript's height.
    fn page(&self) -> usize {
        (self.size.1 as usize).saturating_sub(6).max(1)
    }

    fn history_prev(&mut self) {
        if self.history.is_empty() {
            return;
        }
        let pos = match self.history_pos {
            None => {
                self.history_draft = self.input.text();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(p) => p - 1,
        };
        self.history_pos = Some(pos);
        self.input.set_text(&self.history[pos].clone());
    }

    fn history_next(&mut self) {
        let Some(p) = self.history_pos else { return };
        if p + 1 < self.history.len() {
            self.history_pos = Some(p + 1);
            self.input.set_text(&self.history[p + 1].clone());
        } else {
            self.history_pos = None;
            let draft = std::mem::take(&mut self.history_draft);
            self.input.set_text(&draft);
        }
    }

    /// Clamps `scroll` to what the transcript holds (the view knows the line count).
    pub fn clamp_scroll(&mut self, max: usize) {
        self.scroll = self.scroll.min(max);
    }
}

/// Reads a conversation: the `/save` format, an object with `messages`, or a bare array of messages.
pub fn parse_session(text: &str) -> Result<SessionFile, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut file: SessionFile = if v.is_array() {
        let messages: Vec<Turn> = serde_json::from_value(v).map_err(|e| e.to_string())?;
        SessionFile {
            model: None,
            system: None,
            settings: None,
            messages,
        }
    } else {
        serde_json::from_value(v).map_err(|e| e.to_string())?
    };
    // A leading system message (OpenAI style) becomes the system prompt.
    if let Some(i) = file.messages.iter().position(|t| t.role == Role::System) {
        if i == 0 {
            let t = file.messages.remove(0);
            file.system = Some(t.content);
        }
    }
    Ok(file)
}
