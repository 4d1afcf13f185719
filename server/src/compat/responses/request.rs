//! A Responses request as a chat body: `instructions` and `input` the messages,
//! `tools`/`tool_choice` in chat's form, `text.format` the `response_format`.

use serde_json::{json, Map, Value};

use crate::error::ApiError;

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(field, msg)
}

/// The text of a message's `content`: a string or `input_text`/`output_text` parts.
fn content_text(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => out.push_str(t),
                    (ty, _) => {
                        return Err(bad(
                            &format!("{field}[{i}]"),
                            format!(
                                "`{field}[{i}]` must be a text part {{\"type\": \"input_text\", \"text\": ...}}, got type {}",
                                ty.unwrap_or("(none)")
                            ),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            field,
            format!("`{field}` must be a string or an array of text parts"),
        )),
    }
}

/// `instructions` and `input` as chat messages.
fn messages(v: &Value) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    match &v["instructions"] {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::String(s) => out.push(json!({"role": "system", "content": s})),
        _ => return Err(bad("instructions", "`instructions` must be a string")),
    }
    let items = match &v["input"] {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(out);
        }
        Value::Array(items) => items,
        Value::Null => {
            return Err(bad(
                "input",
                "`input` is required: a string or an array of input items",
            ))
        }
        _ => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of input items",
            ))
        }
    };
    for (i, it) in items.iter().enumerate() {
        let field = format!("input[{i}]");
        let ty = it["type"].as_str().unwrap_or("message");
        match ty {
            "message" => {
                let role = match it["role"].as_str() {
                    Some(r @ ("user" | "assistant" | "system")) => r,
                    Some("developer") => "system",
                    _ => {
                        return Err(bad(
                            &format!("{field}.role"),
                            format!("`{field}.role` must be user, assistant, system or developer, got {}", it["role"]),
                        ))
                    }
                };
                let text = content_text(&it["content"], &format!("{field}.content"))?;
                out.push(json!({"role": role, "content": text}));
            }
            "function_call" => {
                let (Some(id), Some(name)) = (it["call_id"].as_str(), it["name"].as_str()) else {
                    return Err(bad(&field, format!("`{field}`: a function_call item needs `call_id` and `name`")));
                };
                let args = it["arguments"].as_str().unwrap_or("{}");
                let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
                // Consecutive calls are one assistant turn, as the model made them.
                let open_turn = out
                    .last_mut()
                    .filter(|last| last["role"] == "assistant")
                    .and_then(|last| last["tool_calls"].as_array_mut());
                match open_turn {
                    Some(calls) => calls.push(call),
                    None => out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let Some(id) = it["call_id"].as_str() else {
                    return Err(bad(&field, format!("`{field}`: a function_call_output item needs `call_id`")));
                };
                let output = match &it["output"] {
                    Value::String(s) => s.clone(),
                    other => content_text(other, &format!("{field}.output"))?,
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
            other => {
                return Err(bad(
                    &field,
                    format!("input items of type {other:?} are not supported; use message, function_call or function_call_output"),
                ))
            }
        }
    }
    Ok(out)
}

/// `tools`, `tool_choice` and `parallel_tool_calls` in chat's form.
fn tools(v: &Value, body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(list) = v["tools"].as_array() {
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            if t["type"] != "function" {
                return Err(bad(
                    &format!("tools[{i}].type"),
                    format!(
                        "only function tools are served, got `tools[{i}].type` {}",
                        t["type"]
                    ),
                ));
            }
            let Some(name) = t["name"].as_str() else {
                return Err(bad(
                    &format!("tools[{i}].name"),
                    format!("`tools[{i}].name` is required"),
                ));
            };
            let mut f = json!({"name": name, "parameters": t["parameters"]});
            for k in ["description", "strict"] {
                if !t[k].is_null() {
                    f[k] = t[k].clone();
                }
            }
            out.push(json!({"type": "function", "function": f}));
        }
        body.insert("tools".into(), Value::Array(out));
    } else if !v["tools"].is_null() {
        return Err(bad("tools", "`tools` must be an array"));
    }
    match &v["tool_choice"] {
        Value::Null => {}
        c @ Value::String(_) => {
            body.insert("tool_choice".into(), c.clone());
        }
        c if c["type"] == "function" => {
            body.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": c["name"]}}),
            );
        }
        _ => return Err(bad(
            "tool_choice",
            "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"name\": ...}",
        )),
    }
    if let Some(p) = v.get("parallel_tool_calls").filter(|p| !p.is_null()) {
        body.insert("parallel_tool_calls".into(), p.clone());
    }
    Ok(())
}

/// `text.format` as chat's `response_format`.
fn format(v: &Value) -> Result<Option<Value>, ApiError> {
    let f = &v["text"]["format"];
    Ok(match f["type"].as_str() {
        None if f.is_null() => None,
        Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut js = json!({"name": f["name"], "schema": f["schema"]});
            if !f["strict"].is_null() {
                js["strict"] = f["strict"].clone();
            }
            Some(json!({"type": "json_schema", "json_schema": js}))
        }
        _ => {
            return Err(bad(
                "text.format",
                "`text.format.type` must be text, json_object or json_schema",
            ))
        }
    })
}

/// The chat body of a Responses request.
pub(crate) fn to_chat(v: &Value) -> Result<Value, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if !v["previous_response_id"].is_null() {
        // POST /v1/responses resolves it against the store before it gets here.
        return Err(bad(
            "previous_response_id",
            "`previous_response_id` names a stored response; send it to POST /v1/responses, or send the whole conversation in `input`",
        ));
    }
    if v["conversation"].is_string() || v["conversation"].is_object() {
        return Err(bad(
            "conversation",
            "conversations are not served: use `previous_response_id`, or send the whole conversation in `input` (earlier outputs as assistant messages and function_call items)",
        ));
    }
    if v["background"] == true {
        return Err(bad(
            "background",
            "background responses are not served; leave `background` unset",
        ));
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages(v)?));
    crate::compat::copy_fields(v, &mut body, &[
        ("model", "model"),
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
    ]);
    tools(v, &mut body)?;
    if let Some(f) = format(v)? {
        body.insert("response_format".into(), f);
    }
    if v["stream"] == true {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_maps_to_chat() {
        let v = json!({
            "model": "m", "instructions": "Be brief.", "max_output_tokens": 9, "temperature": 0,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"city\":\"Bergen\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "5C"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        });
        let b = to_chat(&v).unwrap();
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            b["messages"][1],
            json!({"role": "user", "content": "Weather in Oslo?"})
        );
        assert_eq!(b["messages"][2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "5C"})
        );
        assert_eq!(
            (b["max_tokens"].as_i64(), b["model"].as_str()),
            (Some(9), Some("m"))
        );
        assert_eq!(b["tools"][0]["function"]["strict"], true);
        assert_eq!(b["tool_choice"]["function"]["name"], "weather");
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        assert_eq!(
            to_chat(&json!({"input": "hi"})).unwrap()["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (v, field) in [
            (json!({}), "input"),
            (json!({"input": 5}), "input"),
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"input": "x", "background": true}), "background"),
            (
                json!({"input": [{"role": "wizard", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input[0].content[0]",
            ),
            (json!({"input": [{"type": "reasoning"}]}), "input[0]"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format",
            ),
            (json!({"input": "x", "instructions": 3}), "instructions"),
        ] {
            let e = to_chat(&v).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{v}: {}", e.message);
        }
    }
}
