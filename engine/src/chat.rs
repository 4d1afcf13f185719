//! Chat templates: a conversation rendered into the prompt text the model was
//! trained on.
//!
//! The template is, in order of precedence: an override (`--chat-template FILE`),
//! the GGUF's `tokenizer.chat_template` (a Hugging Face Jinja template, rendered
//! with minijinja plus its Python-compatibility methods), the architecture's own
//! format where the file has none (Gemma's `<start_of_turn>` turns), and ChatML as
//! the last resort. Rendering follows Hugging Face's `apply_chat_template`:
//! `trim_blocks` and `lstrip_blocks` on, `messages`, `add_generation_prompt`,
//! `bos_token` and `eos_token` defined, `raise_exception` and `strftime_now`
//! available. When the tokenizer adds BOS itself, a BOS at the start of the
//! rendered text is removed so it is not doubled (as llama.cpp does).

use std::borrow::Cow;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::gguf::{Gguf, GgufError, Metadata};
use crate::tokenizer::{adds_bos, TokenizerError};

#[derive(Debug, Error)]
pub enum ChatError {
    #[error("chat template metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error("chat template: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("the {origin} chat template does not parse: {msg}")]
    Syntax { origin: TemplateOrigin, msg: String },
    #[error("rendering the {origin} chat template: {msg}")]
    Render { origin: TemplateOrigin, msg: String },
    /// The template ran past [`MAX_RENDER_FUEL`] steps or wrote past [`MAX_RENDER_BYTES`]
    /// (a hostile or broken template: it loops or renders megabytes).
    #[error("the {origin} chat template was stopped: {what}; fix the template or pass --chat-template FILE")]
    Limit {
        origin: TemplateOrigin,
        what: String,
    },
}

/// Most template instructions one render may run (minijinja fuel). A real template
/// over a long conversation uses a few hundred per message; this many take about a
/// second at most, then rendering stops with [`ChatError::Limit`]. minijinja also charges
/// one fuel per 64 bytes a template builds, so this bounds its memory too (~320 MB).
pub const MAX_RENDER_FUEL: u64 = 5_000_000;
/// Most bytes one rendered prompt may hold: far past any context window (the
/// server's default body limit is 4 MiB), so only a runaway template reaches it.
pub const MAX_RENDER_BYTES: usize = 64 << 20;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Where the template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// Given by the user (`--chat-template`).
    Override,
    /// The GGUF's `tokenizer.chat_template`.
    Gguf,
    /// owl's built-in format for the model's architecture.
    Builtin(&'static str),
    /// ChatML, used when nothing else applies.
    ChatMl,
}

impl std::fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateOrigin::Override => f.write_str("override"),
            TemplateOrigin::Gguf => f.write_str("GGUF (tokenizer.chat_template)"),
            TemplateOrigin::Builtin(name) => write!(f, "built-in {name}"),
            TemplateOrigin::ChatMl => f.write_str("ChatML fallback"),
        }
    }
}

/// ChatML, the format of Qwen, SmolLM and many others.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// Gemma's turn format, as Gemma 3's official template writes it: `assistant` is
/// called `model`, and system text is folded into the first user turn (Gemma has
/// no system role).
pub const GEMMA_TEMPLATE: &str = "{{- bos_token -}}\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') -}}\
{{- message['content'] | trim -}}\
{{- '<end_of_turn>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}";

/// The built-in template for an architecture whose file carries none.
fn builtin_for_arch(arch: &str) -> Option<(&'static str, &'static str)> {
    match arch {
        "gemma" | "gemma2" | "gemma3" | "gemma3n" => Some(("gemma", GEMMA_TEMPLATE)),
        _ => None,
    }
}

/// Strings that end an assistant turn in the known formats.
const TURN_ENDS: &[&str] = &[
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
];

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: TemplateOrigin,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS, so a rendered leading BOS is removed.
    strip_leading_bos: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("strip_leading_bos", &self.strip_leading_bos)
            .finish_non_exhaustive()
    }
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// The template for a model: `override_template` if given, else the file's.
    pub fn from_gguf(
        gguf: &Gguf,
        override_template: Option<String>,
    ) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::from_metadata(gguf.metadata(), override_template)
    }

    /// As [`ChatTemplate::from_gguf`], from the metadata alone.
    pub fn from_metadata(
        md: &Metadata,
        override_template: Option<String>,
    ) -> Result<ChatTemplate, ChatError> {
        let (source, origin) = match override_template {
            Some(t) => (t, TemplateOrigin::Override),
            None => match md.get_opt::<String>("tokenizer.chat_template")? {
                Some(t) => (t, TemplateOrigin::Gguf),
                None => match md.arch().and_then(builtin_for_arch) {
                    Some((name, t)) => (t.to_string(), TemplateOrigin::Builtin(name)),
                    None => (CHATML_TEMPLATE.to_string(), TemplateOrigin::ChatMl),
                },
            },
        };
        let tokens: Vec<&str> = md.get_opt("tokenizer.ggml.tokens")?.unwrap_or_default();
        let token_text = |key: &str| -> Result<String, GgufError> {
            Ok(md
                .get_opt::<i64>(key)?
                .and_then(|id| usize::try_from(id).ok())
                .and_then(|id| tokens.get(id))
                .map(|t| t.to_string())
                .unwrap_or_default())
        };
        let bos_token = token_text("tokenizer.ggml.bos_token_id")?;
        let eos_token = token_text("tokenizer.ggml.eos_token_id")?;
        let strip_leading_bos =
            !bos_token.is_empty() && md.contains_key("tokenizer.ggml.model") && adds_bos(md)?;
        ChatTemplate::new(source, origin, bos_token, eos_token, strip_leading_bos)
    }

    /// A template from its source and the model's BOS/EOS texts.
    pub fn new(
        source: String,
        origin: TemplateOrigin,
        bos_token: String,
        eos_token: String,
        strip_leading_bos: bool,
    ) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax {
                origin,
                msg: describe(&e),
            })?;
        env.set_syntax(syntax);
        // Sandbox: no loader is set, so `include`/`import`/`extends` find nothing (no file
        // access), no function reads the environment, and fuel bounds the time.
        env.set_fuel(Some(MAX_RENDER_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |format: String| -> Value {
            Value::from(strftime_now(&format))
        });
        let cleaned = strip_generation_tags(&source).into_owned();
        env.add_template_owned(TEMPLATE_NAME, cleaned)
            .map_err(|e| ChatError::Syntax {
                origin,
                msg: describe(&e),
            })?;
        Ok(ChatTemplate {
            env,
            source,
            origin,
            bos_token,
            eos_token,
            strip_leading_bos,
        })
    }

    /// Renders the conversation; `add_generation_prompt` appends the opening of
    /// an assistant turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| self.render_error(&e))?;
        let ctx = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        self.finish(self.render_bounded(&tmpl, ctx)?)
    }

    /// Renders into a buffer that refuses to grow past [`MAX_RENDER_BYTES`].
    fn render_bounded(
        &self,
        tmpl: &minijinja::Template<'_, '_>,
        ctx: Value,
    ) -> Result<String, ChatError> {
        let mut out = CappedWriter::default();
        // minijinja can panic on hostile input (its `format` filter slicing inside a
        // multi-byte char, found by fuzz/chat_template): that is an error, not a crash.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tmpl.render_captured_to(ctx, &mut out).map(|_| ())
        }));
        let Ok(rendered) = rendered else {
            return Err(ChatError::Render {
                origin: self.origin,
                msg: "the template engine failed on this template (a minijinja bug)".into(),
            });
        };
        if let Err(e) = rendered {
            return Err(if out.over {
                ChatError::Limit {
                    origin: self.origin,
                    what: format!("it rendered more than {} MiB", MAX_RENDER_BYTES >> 20),
                }
            } else if e.kind() == ErrorKind::OutOfFuel {
                ChatError::Limit {
                    origin: self.origin,
                    what: format!("it ran more than {MAX_RENDER_FUEL} steps (does it loop?)"),
                }
            } else {
                self.render_error(&e)
            });
        }
        // minijinja writes whole `str`s and the cap never cut one (it errs instead).
        String::from_utf8(out.buf).map_err(|e| {
            self.render_error(&JinjaError::new(ErrorKind::BadSerialization, e.to_string()))
        })
    }

    /// Renders a conversation given as OpenAI-shaped JSON messages (assistant
    /// `tool_calls`, `role: "tool"` results) with `tools` (the OpenAI function
    /// list) in the template's context. A template that does not render tools
    /// gets them in the system prompt instead ([`crate::tools::generic_messages`]).
    pub fn render_with_tools(
        &self,
        messages: &[serde_json::Value],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let family = self.tool_family();
        let rewritten;
        let messages = if family.template_renders_tools() || tools.is_empty() {
            messages
        } else {
            rewritten = crate::tools::generic_messages(messages, tools);
            &rewritten
        };
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| self.render_error(&e))?;
        let tools_value = if tools.is_empty() || !family.template_renders_tools() {
            Value::UNDEFINED
        } else {
            Value::from(minijinja::value::Serde(tools))
        };
        let ctx = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            tools => tools_value,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        self.finish(self.render_bounded(&tmpl, ctx)?)
    }

    /// The rendered text, less a leading BOS the tokenizer adds itself.
    fn finish(&self, text: String) -> Result<String, ChatError> {
        if self.strip_leading_bos {
            if let Some(rest) = text.strip_prefix(self.bos_token.as_str()) {
                return Ok(rest.to_string());
            }
        }
        Ok(text)
    }

    /// How this template's model writes tool calls.
    pub fn tool_family(&self) -> crate::tools::Family {
        crate::tools::Family::detect(&self.source)
    }

    fn render_error(&self, e: &JinjaError) -> ChatError {
        ChatError::Render {
            origin: self.origin,
            msg: describe(e),
        }
    }

    /// Where the template came from.
    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    /// The template source as given (before `{% generation %}` tags are removed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Texts that end an assistant turn in this template's format (`<|im_end|>`,
    /// `<end_of_turn>`, ...), plus EOS; a front end can stop on them when the
    /// model writes them as plain text.
    pub fn stop_strings(&self) -> Vec<String> {
        let mut out: Vec<String> = TURN_ENDS
            .iter()
            .filter(|s| self.source.contains(*s))
            .map(|s| s.to_string())
            .collect();
        if !self.eos_token.is_empty() && !out.contains(&self.eos_token) {
            out.push(self.eos_token.clone());
        }
        out
    }
}

/// An output buffer that fails the write that would take it past [`MAX_RENDER_BYTES`].
#[derive(Default)]
struct CappedWriter {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > MAX_RENDER_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error with its cause chain, on one line.
fn describe(e: &JinjaError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Removes Hugging Face's `{% generation %}` / `{% endgeneration %}` markers
/// (used for assistant masks in training; Jinja engines other than HF's reject them).
fn strip_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let after = &rest[start + 2..];
        let inner = after.strip_prefix('-').unwrap_or(after).trim_start();
        let word_len = if inner.starts_with("endgeneration") {
            "endgeneration".len()
        } else if inner.starts_with("generation") {
            "generation".len()
        } else {
            0
        };
        if word_len > 0 {
            let tail = inner[word_len..].trim_start();
            let tail = tail.strip_prefix('-').unwrap_or(tail);
            if let Some(end) = tail.strip_prefix("%}") {
                out.push_str(&rest[..start]);
                rest = end;
                continue;
            }
        }
        out.push_str(&rest[..start + 2]);
        rest = &rest[start + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Python's `strftime` on the current UTC time, for the directives templates use
/// (`%d %B %Y`, `%Y-%m-%d`, ...). Unknown directives are kept as written.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{:03}", doy_in_year(year, month, day))),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn doy_in_year(year: i64, month: i64, day: i64) -> i64 {
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    CUM[(month - 1) as usize] + day + i64::from(leap && month > 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(template: Option<&str>, arch: &str) -> Metadata {
        let mut md = Metadata::new();
        md.insert("general.architecture", arch);
        md.insert("tokenizer.ggml.model", "llama");
        md.insert("tokenizer.ggml.tokens", vec!["<unk>", "<s>", "</s>", "hi"]);
        md.insert("tokenizer.ggml.bos_token_id", 1u32);
        md.insert("tokenizer.ggml.eos_token_id", 2u32);
        if let Some(t) = template {
            md.insert("tokenizer.chat_template", t);
        }
        md
    }

    fn conv() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ]
    }

    #[test]
    fn strftime_known_dates() {
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", 0), "1970-01-01 00:00:00");
        // 2024-07-26 12:34:56 UTC, a Friday, day 208 of a leap year.
        assert_eq!(
            strftime("%d %B %Y %a %j %b %y", 1_721_997_296),
            "26 July 2024 Fri 208 Jul 24"
        );
        assert_eq!(
            strftime("%H:%M:%S 100%% %Q", 1_721_997_296),
            "12:34:56 100% %Q"
        );
        assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
    }

    #[test]
    fn generation_tags_are_removed() {
        let src = "a{% generation %}b{%- endgeneration -%}c{% if x %}d{% endif %}";
        assert_eq!(strip_generation_tags(src), "abc{% if x %}d{% endif %}");
        assert_eq!(
            strip_generation_tags("{{ generation }}"),
            "{{ generation }}"
        );
    }

    #[test]
    fn chatml_is_the_last_resort() {
        let t = ChatTemplate::from_metadata(&md(None, "llama"), None).unwrap();
        assert_eq!(t.origin(), TemplateOrigin::ChatMl);
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.stop_strings(),
            vec!["<|im_end|>".to_string(), "</s>".to_string()]
        );
    }

    #[test]
    fn gemma_builtin_folds_system_and_strips_bos() {
        let t = ChatTemplate::from_metadata(&md(None, "gemma3"), None).unwrap();
        assert_eq!(t.origin(), TemplateOrigin::Builtin("gemma"));
        let conv = vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Bye"),
        ];
        assert_eq!(
            t.render(&conv, true).unwrap(),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        // A tokenizer that adds no BOS keeps the template's.
        let mut m = md(None, "gemma3");
        m.insert("tokenizer.ggml.add_bos_token", false);
        let t = ChatTemplate::from_metadata(&m, None).unwrap();
        assert!(t
            .render(&conv[1..2], false)
            .unwrap()
            .starts_with("<s><start_of_turn>user\nHi"));
    }

    #[test]
    fn override_wins_and_variables_are_defined() {
        let src = "{{ bos_token }}|{% for m in messages %}{{ m.role|upper }}={{ m.content }};{% endfor %}\
                   {% if add_generation_prompt %}GO{% endif %}|{{ eos_token }}|{{ strftime_now('%Y')|length }}";
        let t =
            ChatTemplate::from_metadata(&md(Some("{{ 'file' }}"), "llama"), Some(src.to_string()))
                .unwrap();
        assert_eq!(t.origin(), TemplateOrigin::Override);
        // BOS is added by the tokenizer (SentencePiece default), so it is stripped.
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "|SYSTEM=Be brief.;USER=Hi;GO|</s>|4"
        );
        assert_eq!(
            t.render(&conv(), false).unwrap(),
            "|SYSTEM=Be brief.;USER=Hi;|</s>|4"
        );
    }

    #[test]
    fn python_methods_work() {
        let src = "{% for m in messages %}{{ m['content'].strip().upper() }}{% if m['role'].startswith('sys') %}!{% endif %}{% endfor %}";
        let t = ChatTemplate::from_metadata(&md(None, "llama"), Some(src.to_string())).unwrap();
        assert_eq!(
            t.render(
                &[
                    ChatMessage::new("system", "  a "),
                    ChatMessage::new("user", "b")
                ],
                false
            )
            .unwrap(),
            "A!B"
        );
    }

    #[test]
    fn broken_templates_are_errors() {
        let err =
            ChatTemplate::from_metadata(&md(None, "llama"), Some("{% for m in messages %}".into()))
                .unwrap_err();
        assert!(
            matches!(
                err,
                ChatError::Syntax {
                    origin: TemplateOrigin::Override,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("does not parse"), "{err}");

        let t = ChatTemplate::from_metadata(
            &md(Some("{% if messages|length > 1 %}{{ raise_exception('only one message') }}{% endif %}"), "llama"),
            None,
        )
        .unwrap();
        let err = t.render(&conv(), true).unwrap_err();
        assert!(matches!(
            err,
            ChatError::Render {
                origin: TemplateOrigin::Gguf,
                ..
            }
        ));
        assert!(err.to_string().contains("only one message"), "{err}");

        let t =
            ChatTemplate::from_metadata(&md(Some("{{ messages[0].content + 1 }}"), "llama"), None)
                .unwrap();
        assert!(t.render(&conv(), false).is_err());
    }
}
