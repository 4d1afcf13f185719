//! The generic tool format: for templates that do not render `tools`, the tool
//! list and the answer format go into the system prompt (llama.cpp's generic
//! handler), and earlier calls and results become plain message text.

use serde_json::{json, Value};

/// The system-prompt text that lists the tools and the answer format.
fn generic_system(tools: &[Value]) -> String {
    let list = serde_json::to_string_pretty(tools).unwrap_or_default();
    format!(
        "You can call these tools:\n{list}\n\nAnswer with one JSON object and nothing else: \
either {{\"tool_calls\": [{{\"name\": \"<tool name>\", \"arguments\": {{...}}}}]}} to call tools, \
or {{\"response\": \"<your answer>\"}} to answer the user."
    )
}

/// The conversation rewritten for a template without tools support: the tool
/// list in the (first) system message, assistant calls as the JSON the model is
/// told to write, and tool results as user-visible text.
pub fn generic_messages(messages: &[Value], tools: &[Value]) -> Vec<Value> {
    let sys = generic_system(tools);
    let mut out = Vec::with_capacity(messages.len() + 1);
    match messages.first() {
        Some(m) if m["role"] == "system" => {
            let content = m["content"].as_str().unwrap_or_default();
            out.push(json!({"role": "system", "content": format!("{content}\n\n{sys}")}));
        }
        _ => out.push(json!({"role": "system", "content": sys})),
    }
    for m in messages.iter().skip(usize::from(
        messages.first().is_some_and(|m| m["role"] == "system"),
    )) {
        match m["role"].as_str() {
            Some("assistant") if m.get("tool_calls").is_some_and(|c| !c.is_null()) => {
                let calls: Vec<Value> = m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let f = c.get("function").unwrap_or(c);
                        json!({"name": f["name"], "arguments": f["arguments"]})
                    })
                    .collect();
                out.push(json!({"role": "assistant", "content": json!({"tool_calls": calls}).to_string()}));
            }
            Some("tool") => {
                let name = m.get("name").and_then(Value::as_str).unwrap_or("tool");
                let content = m["content"].as_str().unwrap_or_default();
                out.push(
                    json!({"role": "user", "content": format!("Result of {name}: {content}")}),
                );
            }
            _ => out.push(m.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_format_lists_tools_and_rewrites_turns() {
        let tools = vec![
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}),
        ];
        let msgs = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Weather in Paris?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "21 C"}),
        ];
        let out = generic_messages(&msgs, &tools);
        assert_eq!(out.len(), 4);
        let sys = out[0]["content"].as_str().unwrap();
        assert!(sys.starts_with("Be brief."), "{sys}");
        assert!(
            sys.contains("\"get_weather\"") && sys.contains("{\"tool_calls\""),
            "{sys}"
        );
        let call: Value = serde_json::from_str(out[2]["content"].as_str().unwrap()).unwrap();
        assert_eq!(call["tool_calls"][0]["arguments"]["city"], "Paris");
        assert_eq!(out[3]["role"], "user");
        assert!(out[3]["content"].as_str().unwrap().contains("21 C"));
    }
}
