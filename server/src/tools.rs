//! `tools`, `tool_choice` and `parallel_tool_calls`: validated into a
//! [`ToolRequest`], the conversation kept as OpenAI-shaped JSON so the template
//! sees assistant `tool_calls` and `role: "tool"` results, and the model's
//! answer split into content and `tool_calls` (engine::tools does the per-family
//! rendering, grammar and parsing). `tool_choice: "none"` leaves the tools out
//! entirely: the prompt is as if none were offered, and nothing is constrained.

use std::sync::atomic::{AtomicU64, Ordering};

use owl_engine::service::ChatMessage;
use owl_engine::constrain::Trigger;
use owl_engine::tools::{Choice, Family, ToolCall};
use serde_json::{json, Value};

use crate::error::ApiError;

/// A request's tools, when they take part (not `tool_choice: "none"`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    /// The `tools` array as given (each `{"type": "function", "function": {...}}`).
    pub tools: Vec<Value>,
    pub choice: Choice,
    pub parallel: bool,
}

fn names(tools: &[Value]) -> Vec<&str> {
    tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect()
}

/// Validates the three fields; `None` when no tools take part.
pub fn parse(
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolRequest>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(ApiError::invalid(
            "tools",
            "`tools` must be an array of {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )),
    };
    for (i, t) in tools.iter().enumerate() {
        let ty = t.get("type");
        if ty.is_some_and(|ty| ty != "function") {
            let field = format!("tools[{i}].type");
            return Err(ApiError::invalid(
                &field,
                format!("`{field}` must be \"function\", got {}", ty.unwrap()),
            ));
        }
        let Some(f) = t.get("function").filter(|f| f.is_object()) else {
            let field = format!("tools[{i}].function");
            return Err(ApiError::invalid(
                &field,
                format!("`{field}` must be an object with a `name`"),
            ));
        };
        if !f
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            let field = format!("tools[{i}].function.name");
            return Err(ApiError::invalid(
                &field,
                format!("`{field}` must be a non-empty string"),
            ));
        }
        if let Some(p) = f.get("parameters").filter(|p| !p.is_null()) {
            if !p.is_object() {
                let field = format!("tools[{i}].function.parameters");
                return Err(ApiError::invalid(
                    &field,
                    format!("`{field}` must be a JSON Schema object"),
                ));
            }
        }
    }
    let bad_choice = || {
        ApiError::invalid(
            "tool_choice",
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )
    };
    let choice = match tool_choice {
        None | Some(Value::Null) => Some(Choice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(Choice::Auto),
            "none" => None,
            "required" => Some(Choice::Required),
            _ => return Err(bad_choice()),
        },
        Some(v @ Value::Object(_)) => {
            if v.get("type").is_some_and(|t| t != "function") {
                return Err(bad_choice());
            }
            let name = v["function"]["name"].as_str().ok_or_else(bad_choice)?;
            if !names(&tools).contains(&name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "`tool_choice` names the function {name:?}, which is not in `tools` (they are: {})",
                        names(&tools).join(", ")
                    ),
                ));
            }
            Some(Choice::Named(name.to_string()))
        }
        Some(_) => return Err(bad_choice()),
    };
    match choice {
        Some(Choice::Required) if tools.is_empty() => Err(ApiError::invalid(
            "tool_choice",
            "`tool_choice` is \"required\" but `tools` is empty",
        )),
        Some(choice) if !tools.is_empty() => Ok(Some(ToolRequest {
            tools,
            choice,
            parallel: parallel.unwrap_or(true),
        })),
        _ => Ok(None),
    }
}

/// The conversation as the template sees it with tools: the validated roles and
/// text, plus assistant `tool_calls` (arguments as JSON objects, as templates
/// expect) and the `tool_call_id`/`name` of tool results.
pub fn messages(raw: &Value, checked: &[ChatMessage]) -> Vec<Value> {
    let raw = raw.as_array().map(Vec::as_slice).unwrap_or_default();
    checked
        .iter()
        .zip(raw)
        .map(|(m, r)| {
            let mut out = json!({"role": m.role, "content": m.content});
            // reasoning_content: an earlier turn's thinking, which templates such as
            // Qwen3's render back (Anthropic `thinking` blocks arrive as it too).
            for key in ["tool_call_id", "name", "reasoning_content"] {
                if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
                    out[key] = v.clone();
                }
            }
            if let Some(calls) = r.get("tool_calls").and_then(Value::as_array) {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        if let Some(Value::String(a)) = c.pointer("/function/arguments") {
                            if let Ok(obj @ Value::Object(_)) = serde_json::from_str::<Value>(a) {
                                c["function"]["arguments"] = obj;
                            }
                        }
                        c
                    })
                    .collect();
                out["tool_calls"] = Value::Array(calls);
            }
            out
        })
        .collect()
}

/// A fresh call id (`call_…`).
pub fn call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("call_{:x}{n:04x}", nanos & 0xffff_ffff_ffff)
}

/// One call in OpenAI's shape.
pub fn call_json(c: &ToolCall, id: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
}

/// Whether the answer's text may still hold a call: everything once an opener
/// is in it, or the end of it that could be an opener's start (JSON openers
/// tolerate whitespace). Returns how many bytes of `pending` can go out as content now.
pub fn releasable_any(pending: &str, openers: &[Trigger]) -> usize {
    openers
        .iter()
        .map(|t| t.releasable(pending))
        .min()
        .unwrap_or(pending.len())
}

/// Whether a family's answer is streamed as content until its trigger (else held whole).
pub fn streams_content(family: Family, choice: &Choice) -> bool {
    *choice == Choice::Auto && family != Family::Generic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    }

    #[test]
    fn choices_and_refusals_by_field() {
        let p = |t, c| parse(t, c, None);
        assert_eq!(
            p(Some(tools()), None).unwrap().unwrap().choice,
            Choice::Auto
        );
        assert_eq!(p(Some(tools()), Some(json!("none"))).unwrap(), None);
        assert_eq!(p(None, Some(json!("auto"))).unwrap(), None);
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(
            p(Some(tools()), Some(named)).unwrap().unwrap().choice,
            Choice::Named("get_weather".into())
        );
        let param = |r: Result<Option<ToolRequest>, ApiError>| r.unwrap_err().param.unwrap();
        let unknown = json!({"type": "function", "function": {"name": "rain"}});
        assert_eq!(param(p(Some(tools()), Some(unknown))), "tool_choice");
        assert_eq!(
            param(p(Some(tools()), Some(json!("always")))),
            "tool_choice"
        );
        assert_eq!(param(p(None, Some(json!("required")))), "tool_choice");
        assert_eq!(
            param(p(Some(json!([{"type": "function", "function": {}}])), None)),
            "tools[0].function.name"
        );
        assert_eq!(
            param(p(
                Some(json!([{"type": "code", "function": {"name": "f"}}])),
                None
            )),
            "tools[0].type"
        );
        assert_eq!(param(p(Some(json!({"a": 1})), None)), "tools");
        assert_eq!(
            param(p(
                Some(json!([{"type": "function", "function": {"name": "f", "parameters": 3}}])),
                None
            )),
            "tools[0].function.parameters"
        );
    }

    #[test]
    fn trigger_prefixes_are_held_back() {
        let tag = [Trigger::exact("<tool_call>")];
        assert_eq!(releasable_any("Hello", &tag), 5);
        assert_eq!(releasable_any("Hello <tool", &tag), 6);
        assert_eq!(releasable_any("Hi <tool_call>\n{", &tag), 3);
        assert_eq!(releasable_any("a < b", &tag), 5);
        assert_eq!(releasable_any("<", &tag), 0);
        let openers = Family::Hermes.call_openers();
        assert_eq!(releasable_any("Sure: {\"na", &openers), 6);
        assert_eq!(releasable_any("Sure: <tool_c", &openers), 6);
        // A pretty-printed call in a fence is held from the fence on (the parsed answer drops it).
        assert_eq!(releasable_any("Sure:\n```json\n{\n  \"na", &openers), 6);
        assert_eq!(releasable_any("Sure:\n```json\n{\n  \"name\": \"f", &openers), 6);
        assert_eq!(releasable_any("Sure:\n```\n{\"name\": \"f", &openers), 6);
        // Other fences go out once they cannot open a call.
        assert_eq!(releasable_any("Sure:\n```python\nx = 1", &openers), 21);
        assert_eq!(releasable_any("Sure:\n```json\n{\"a\": 1}", &openers), 22);
        assert_eq!(releasable_any("a {b} c", &openers), 7);
    }

    #[test]
    fn round_trip_messages_keep_calls_and_ids() {
        let raw = json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}
        ]);
        let checked = vec![
            ChatMessage::new("user", "Weather?"),
            ChatMessage::new("assistant", ""),
            ChatMessage::new("tool", "21 C"),
        ];
        let m = messages(&raw, &checked);
        assert_eq!(
            m[1]["tool_calls"][0]["function"]["arguments"]["city"],
            "Paris"
        );
        assert_eq!(m[2]["tool_call_id"], "call_1");
        assert_eq!(m[2]["content"], "21 C");
    }
}
