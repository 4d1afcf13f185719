//! OpenAI request types and their validation into engine requests.
//!
//! A body is parsed once into a JSON value (malformed JSON is a 400), then into
//! the fields shared by `/v1/chat/completions` and `/v1/completions`
//! ([`GenerationParams`]) and the endpoint's own fields. Unknown fields are
//! ignored, as OpenAI-compatible servers do; known fields with a wrong type or
//! value are a 400 naming the field.

use owl_engine::constrain::Constraint;
use owl_engine::service::{ChatMessage, Prompt, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Most stop strings per request, and most bytes in one.
const MAX_STOP: usize = 16;
const MAX_STOP_LEN: usize = 256;
/// Most choices per request (`n`): each is a sequence of its own in the engine.
pub const MAX_N: usize = 16;
/// OpenAI's limits for alternatives per token.
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// Parses a request body: malformed JSON and wrong field types are 400s that
/// name the field.
pub fn parse_body<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid(&path, format!("invalid value for `{path}`: {inner}"))
        }
    })
}

/// Parses bytes as a JSON object.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct GenerationParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Extension (llama-server).
    pub top_k: Option<i64>,
    /// Extension (llama-server).
    pub min_p: Option<f64>,
    /// Extension (llama-server).
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    /// A string or an array of strings.
    pub stop: Option<Value>,
    pub n: Option<i64>,
    /// OpenAI's legacy server-side best-of-n: not built, so anything but 1 is refused.
    pub best_of: Option<i64>,
    /// Token id (as a string) to a bias in [-100, 100].
    pub logit_bias: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Extension (llama-server): keep generating past end-of-generation tokens.
    pub ignore_eos: Option<bool>,
    /// `text`, `json_object` or `json_schema` (see server/src/format.rs).
    pub response_format: Option<Value>,
    /// Extension (llama-server): a Lark or GBNF grammar.
    pub grammar: Option<Value>,
    /// Extension (llama-server): a JSON Schema the output follows.
    pub json_schema: Option<Value>,
    /// The functions the model may call (server/src/tools.rs).
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// Extension (owl): seconds this request may run; the server's `--request-timeout`, if
    /// shorter, still holds (deadline.rs).
    pub timeout: Option<f64>,
}

/// `/v1/chat/completions`' own fields.
#[derive(Debug, Deserialize)]
pub struct ChatParams {
    pub messages: Vec<InMessage>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// vLLM's and llama-server's "continue the last assistant message": not built,
    /// so `true` is refused rather than answered with a fresh turn.
    pub continue_final_message: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    /// A string, an array of content parts, or null.
    #[serde(default)]
    pub content: Value,
}

/// `/v1/completions`' own fields.
#[derive(Debug, Deserialize)]
pub struct CompletionParams {
    pub prompt: Value,
    /// Number of alternatives per token (0 = only the chosen token's logprob).
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
}

/// A validated generation request, before the engine-dependent checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub model: Option<String>,
    pub sampling: SamplingParams,
    pub max_tokens: Option<usize>,
    /// The field the limit came from, for error messages.
    pub max_tokens_field: &'static str,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
    pub constraint: Option<Constraint>,
    /// Tools offered (and not `tool_choice: "none"`); their constraint depends on the template.
    pub tools: Option<crate::tools::ToolRequest>,
    /// The request's own deadline, seconds.
    pub timeout: Option<f64>,
    /// Choices asked for (`n`, 1..=MAX_N); choice i samples with seed + i.
    pub n: usize,
}

fn check_range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x >= lo && x <= hi => Ok(Some(x as f32)),
        Some(x) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}"),
        )),
    }
}

impl GenerationParams {
    pub fn validate(self) -> Result<Generation, ApiError> {
        let mut s = SamplingParams::default();
        if let Some(t) = check_range("temperature", self.temperature, 0.0, 2.0)? {
            s.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(p.is_finite() && p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "top_p",
                    format!("`top_p` must be in (0, 1], got {p}"),
                ));
            }
            s.top_p = p as f32;
        }
        if let Some(k) = self.top_k {
            if k < 0 {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("`top_k` must be 0 (off) or more, got {k}"),
                ));
            }
            s.top_k = k as usize;
        }
        if let Some(m) = check_range("min_p", self.min_p, 0.0, 1.0)? {
            s.min_p = m;
        }
        if let Some(r) = check_range("repeat_penalty", self.repeat_penalty, 0.0, 10.0)? {
            s.repeat_penalty = r;
        }
        if let Some(p) = check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)? {
            s.presence_penalty = p;
        }
        if let Some(p) = check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)? {
            s.frequency_penalty = p;
        }
        s.seed = self.seed.map(|x| x as u64);
        s.logit_bias = parse_logit_bias(self.logit_bias)?;

        let n = match self.n {
            None => 1,
            Some(n) if (1..=MAX_N as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "n",
                    format!("`n` must be between 1 and {MAX_N}, got {n}"),
                ));
            }
        };
        if let Some(b) = self.best_of.filter(|&b| b != 1) {
            return Err(ApiError::invalid(
                "best_of",
                format!("`best_of` = {b} is not supported; ask for `n` choices and pick among them"),
            ));
        }
        // max_completion_tokens is the newer name; it wins when both are given.
        let (field, raw) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => ("max_completion_tokens", Some(v)),
            (None, Some(v)) => ("max_tokens", Some(v)),
            (None, None) => ("max_tokens", None),
        };
        let max_tokens = match raw {
            None => None,
            Some(v) if v < 1 => {
                return Err(ApiError::invalid(
                    field,
                    format!("`{field}` must be at least 1, got {v}"),
                ));
            }
            Some(v) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
        };

        let stop = parse_stop(self.stop)?;
        let stream = self.stream.unwrap_or(false);
        let include_usage = self
            .stream_options
            .map(|o| o.include_usage)
            .unwrap_or(false);
        let tools = crate::tools::parse(self.tools, self.tool_choice, self.parallel_tool_calls)?;
        let constraint =
            crate::format::constraint(self.response_format, self.grammar, self.json_schema)?;
        if tools.is_some() && constraint.is_some() {
            return Err(ApiError::invalid(
                "tools",
                "give either `tools` or an output format (`response_format`, `grammar`, `json_schema`), not both",
            ));
        }
        let timeout = crate::deadline::check(self.timeout)?;
        Ok(Generation {
            n,
            timeout,
            constraint,
            tools,
            model: self.model,
            sampling: s,
            max_tokens,
            max_tokens_field: field,
            stop,
            stream,
            include_usage,
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

/// Most entries in `logit_bias` (OpenAI allows 300; llama-server has no limit).
const MAX_LOGIT_BIAS: usize = 1024;

/// `{"<token id>": bias}` with biases in [-100, 100], as OpenAI takes it. Ids past
/// the vocabulary are refused at submit, where the vocabulary is known.
fn parse_logit_bias(v: Option<Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let field = "logit_bias";
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::invalid(
                field,
                "`logit_bias` must be an object mapping token ids to biases, e.g. {\"50256\": -100}",
            ))
        }
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            field,
            format!("`logit_bias` has {} entries; at most {MAX_LOGIT_BIAS} are allowed", map.len()),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (k, b) in map {
        let id: u32 = k.trim().parse().map_err(|_| {
            ApiError::invalid(field, format!("`logit_bias` key {k:?} is not a token id (a non-negative integer)"))
        })?;
        let bias = b
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                ApiError::invalid(field, format!("`logit_bias` for token {id} must be a number from -100 to 100, got {b}"))
            })?;
        out.push((id, bias as f32));
    }
    out.sort_by_key(|&(id, _)| id);
    Ok(out)
}

fn parse_stop(v: Option<Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(ApiError::invalid(
                    "stop",
                    format!("`stop` entries must be strings, got {other}"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!("`stop` must be a string or an array of strings, got {other}"),
            ))
        }
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOP} stop strings, got {}", list.len()),
        ));
    }
    if list.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(ApiError::invalid(
            "stop",
            format!("stop strings must be 1 to {MAX_STOP_LEN} bytes"),
        ));
    }
    Ok(list)
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

impl ChatParams {
    /// The conversation, and the number of alternatives per token when logprobs are asked for.
    pub fn validate(self) -> Result<(Vec<ChatMessage>, Option<usize>), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ));
        }
        if self.continue_final_message == Some(true) {
            return Err(ApiError::invalid(
                "continue_final_message",
                "`continue_final_message` is not supported: owl always starts a new assistant turn; put the text to continue in a completion prompt (/v1/completions) instead",
            ));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let param = format!("messages[{i}]");
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ApiError::invalid(
                    &format!("{param}.role"),
                    format!(
                        "unknown role {:?} in {param}; expected one of {}",
                        m.role,
                        ROLES.join(", ")
                    ),
                ));
            }
            let content = message_text(&m.content).map_err(|msg| {
                let field = format!("{param}.content");
                ApiError::invalid(&field, format!("`{field}`: {msg}"))
            })?;
            // Templates know system, user and assistant; OpenAI's "developer" is the system prompt.
            let role = if m.role == "developer" {
                "system".to_string()
            } else {
                m.role
            };
            out.push(ChatMessage { role, content });
        }
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (_, Some(k)) if !(0..=MAX_TOP_LOGPROBS).contains(&k) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
                ))
            }
            (false, Some(_)) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs` set to true",
                ));
            }
            (true, k) => Some(k.unwrap_or(0) as usize),
            (false, None) => None,
        };
        Ok((out, logprobs))
    }
}

/// The text of a message: a string, text parts concatenated, or null (empty).
fn message_text(v: &Value) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) if kind != "text" => {
                        return Err(format!(
                            "content parts of type {kind:?} are not supported; only text"
                        ))
                    }
                    _ => {
                        return Err(
                            "a content part must be {\"type\": \"text\", \"text\": \"...\"}".into(),
                        )
                    }
                }
            }
            Ok(text)
        }
        other => Err(format!(
            "message content must be a string or an array of text parts, got {other}"
        )),
    }
}

impl CompletionParams {
    /// The prompt, and the number of alternatives per token when logprobs are asked for.
    pub fn validate(self) -> Result<(Prompt, Option<usize>), ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::invalid("echo", "`echo` is not supported"));
        }
        let logprobs = match self.logprobs {
            None => None,
            Some(k) if (0..=MAX_TOP_LOGPROBS).contains(&k) => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    "logprobs",
                    format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
                ))
            }
        };
        Ok((parse_prompt(self.prompt)?, logprobs))
    }
}

fn token_ids(items: &[Value]) -> Option<Vec<u32>> {
    items
        .iter()
        .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
        .collect()
}

fn parse_prompt(v: Value) -> Result<Prompt, ApiError> {
    let bad = || {
        ApiError::invalid(
            "prompt",
            "`prompt` must be a string, an array of one string, or an array of token ids (one prompt per request)",
        )
    };
    match v {
        Value::String(s) => Ok(Prompt::Text(s)),
        Value::Array(items) => match items.as_slice() {
            [] => Err(ApiError::invalid("prompt", "`prompt` must not be empty")),
            [Value::String(s)] => Ok(Prompt::Text(s.clone())),
            [Value::Array(inner)] => token_ids(inner).map(Prompt::Tokens).ok_or_else(bad),
            [Value::Number(_), ..] => token_ids(&items).map(Prompt::Tokens).ok_or_else(bad),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gen(v: Value) -> Result<Generation, ApiError> {
        parse_body::<GenerationParams>(&v)?.validate()
    }

    #[test]
    fn defaults_and_overrides() {
        let g = gen(json!({"model": "m", "temperature": 0, "top_k": 5, "seed": 7, "stop": "\n"}))
            .unwrap();
        assert_eq!(g.sampling.temperature, 0.0);
        assert_eq!(g.sampling.top_k, 5);
        assert_eq!(g.sampling.seed, Some(7));
        assert_eq!(g.stop, vec!["\n".to_string()]);
        assert_eq!(g.max_tokens, None);
        let g = gen(json!({"max_tokens": 5, "max_completion_tokens": 9})).unwrap();
        assert_eq!(
            (g.max_tokens, g.max_tokens_field),
            (Some(9), "max_completion_tokens")
        );
    }

    #[test]
    fn n_choices_up_to_the_cap() {
        assert_eq!(gen(json!({})).unwrap().n, 1);
        assert_eq!(gen(json!({"n": 3})).unwrap().n, 3);
        assert_eq!(gen(json!({"n": MAX_N})).unwrap().n, MAX_N);
    }

    #[test]
    fn logit_bias_is_parsed_sorted() {
        let g = gen(json!({"logit_bias": {"42": -100, "7": 2.5}})).unwrap();
        assert_eq!(g.sampling.logit_bias, vec![(7, 2.5), (42, -100.0)]);
        assert!(gen(json!({})).unwrap().sampling.logit_bias.is_empty());
    }

    #[test]
    fn bad_values_name_the_field() {
        for (body, param) in [
            (json!({"max_tokens": -1}), "max_tokens"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": "ten"}), "max_tokens"),
            (json!({"temperature": 3}), "temperature"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"n": 0}), "n"),
            (json!({"n": 17}), "n"),
            (json!({"n": "two"}), "n"),
            (json!({"best_of": 3}), "best_of"),
            (json!({"stop": [1]}), "stop"),
            (json!({"stop": vec!["a"; 17]}), "stop"),
            (json!({"logit_bias": [1, 2]}), "logit_bias"),
            (json!({"logit_bias": {"x": 1}}), "logit_bias"),
            (json!({"logit_bias": {"-3": 1}}), "logit_bias"),
            (json!({"logit_bias": {"3": 101}}), "logit_bias"),
            (json!({"logit_bias": {"3": "ban"}}), "logit_bias"),
        ] {
            let e = gen(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.contains(param), "{}", e.message);
        }
    }

    #[test]
    fn chat_messages() {
        let p: ChatParams = parse_body(&json!({"messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null}
        ], "logprobs": true, "top_logprobs": 3}))
        .unwrap();
        let (m, lp) = p.validate().unwrap();
        assert_eq!(
            m[0],
            ChatMessage {
                role: "system".into(),
                content: "be brief".into()
            }
        );
        assert_eq!(m[1].content, "ab");
        assert_eq!(m[2].content, "");
        assert_eq!(lp, Some(3));

        let cont: ChatParams = parse_body(&json!({"messages": [{"role": "user", "content": "a"}],
            "continue_final_message": true}))
        .unwrap();
        assert_eq!(
            cont.validate().unwrap_err().param.as_deref(),
            Some("continue_final_message")
        );

        let empty: ChatParams = parse_body(&json!({"messages": []})).unwrap();
        assert_eq!(
            empty.validate().unwrap_err().param.as_deref(),
            Some("messages")
        );
        let missing = parse_body::<ChatParams>(&json!({"model": "x"})).unwrap_err();
        assert!(missing.message.contains("messages"), "{}", missing.message);
        let role: ChatParams =
            parse_body(&json!({"messages": [{"role": "wizard", "content": "x"}]})).unwrap();
        assert_eq!(
            role.validate().unwrap_err().param.as_deref(),
            Some("messages[0].role")
        );
        let image: ChatParams = parse_body(
            &json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        )
        .unwrap();
        assert!(image.validate().unwrap_err().message.contains("image_url"));
        let lp: ChatParams =
            parse_body(&json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}))
                .unwrap();
        assert_eq!(
            lp.validate().unwrap_err().param.as_deref(),
            Some("top_logprobs")
        );
    }

    #[test]
    fn completion_prompts() {
        let p = |v: Value| {
            parse_body::<CompletionParams>(&json!({"prompt": v}))
                .unwrap()
                .validate()
        };
        assert!(matches!(p(json!("hi")).unwrap().0, Prompt::Text(ref s) if s == "hi"));
        assert!(matches!(p(json!(["hi"])).unwrap().0, Prompt::Text(ref s) if s == "hi"));
        assert!(matches!(p(json!([1, 2, 3])).unwrap().0, Prompt::Tokens(ref t) if t == &[1, 2, 3]));
        assert!(matches!(p(json!([[4, 5]])).unwrap().0, Prompt::Tokens(ref t) if t == &[4, 5]));
        for bad in [
            json!([]),
            json!(["a", "b"]),
            json!([1, -2]),
            json!(5),
            json!([1, "a"]),
        ] {
            assert_eq!(
                p(bad.clone()).unwrap_err().param.as_deref(),
                Some("prompt"),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_json() {
        assert_eq!(parse_json(b"{\"a\":").unwrap_err().status, 400);
        assert!(parse_json(b"[1]").unwrap_err().message.contains("object"));
    }
}
