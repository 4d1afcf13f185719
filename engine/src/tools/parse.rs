//! The model's answer parsed into content and tool calls, per [`Family`].
//! A call whose JSON does not parse, or has no name, stays in the content as
//! text: nothing is dropped, and only well-formed calls become calls.

use serde_json::Value;

use super::Family;

/// One call the model made: `arguments` is the JSON text of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// An answer split into its text and its calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

/// A call from a JSON object with `name` and `arguments` (or Llama's `parameters`).
fn call_from(v: &Value) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters"));
    let arguments = match args {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::Object(_)) => args?.to_string(),
        // Some models write the arguments as a JSON string; it must hold an object.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(o @ Value::Object(_)) => o.to_string(),
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

fn calls_from_json(text: &str) -> Option<Vec<ToolCall>> {
    match serde_json::from_str::<Value>(text.trim()).ok()? {
        Value::Array(items) => items.iter().map(call_from).collect(),
        v @ Value::Object(_) => Some(vec![call_from(&v)?]),
        _ => None,
    }
}

fn hermes(text: &str) -> Parsed {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut out = Parsed::default();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let body_start = start + OPEN.len();
        let (body, next) = match rest[body_start..].find(CLOSE) {
            Some(end) => (
                &rest[body_start..body_start + end],
                body_start + end + CLOSE.len(),
            ),
            None => (&rest[body_start..], rest.len()),
        };
        match calls_from_json(body) {
            Some(calls) => {
                out.content.push_str(&rest[..start]);
                out.calls.extend(calls);
            }
            None => out.content.push_str(&rest[..next]),
        }
        rest = &rest[next..];
    }
    out.content.push_str(rest);
    out.content = out.content.trim().to_string();
    // Small Qwen models often write the call's JSON bare, without the tags (the
    // lazy grammar starts at `{"name": "`), maybe in a fence the grammar leaves
    // open. The grammar lets only a closing tag or more tagged calls follow it, so
    // a bare call counts when nothing else does: text after it is prose, kept whole.
    let mut bare = Vec::new();
    let mut from = 0;
    while let Some(at) = out.content[from..].find(super::BARE_CALL).map(|i| from + i) {
        let Some((call, len)) = first_call(&out.content[at..]) else {
            from = at + 1;
            continue;
        };
        let after = out.content[at + len..].trim_start();
        let after = after
            .strip_prefix("</tool_call>")
            .unwrap_or(after)
            .trim_start();
        if !(after.is_empty() || after.starts_with("<tool_call>")) {
            from = at + 1;
            continue;
        }
        let before = without_fence_opener(out.content[..at].trim_end()).to_string();
        out.content = if after.is_empty() || before.is_empty() {
            format!("{before}{after}")
        } else {
            format!("{before}\n{after}")
        };
        from = before.len();
        bare.push(call);
    }
    if !bare.is_empty() {
        bare.append(&mut out.calls);
        out.calls = bare;
        out.content = out.content.trim().to_string();
    }
    out
}

/// The call whose JSON object starts `text`, and the bytes it spans; text may follow it.
/// Untagged, only an object with both `name` and `arguments` counts: prose that
/// merely shows `{"name": ...}` stays prose.
fn first_call(text: &str) -> Option<(ToolCall, usize)> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let v = values.next()?.ok()?;
    v.get("arguments")?;
    Some((call_from(&v)?, values.byte_offset()))
}

/// Text before a call less a Markdown fence opened for it (`` ```json ``): the call
/// grammar ends the answer at the call's end, so the fence is never closed.
fn without_fence_opener(text: &str) -> &str {
    for opener in ["```json", "```"] {
        if let Some(t) = text.strip_suffix(opener) {
            return t.trim_end();
        }
    }
    text
}

fn prefixed(text: &str, tag: &str) -> Parsed {
    if let Some(start) = text.find(tag) {
        if let Some(calls) = calls_from_json(&text[start + tag.len()..]) {
            return Parsed {
                content: text[..start].trim().to_string(),
                calls,
            };
        }
    }
    Parsed {
        content: text.to_string(),
        calls: Vec::new(),
    }
}

fn llama3(text: &str) -> Parsed {
    if text.contains("<|python_tag|>") {
        return prefixed(text, "<|python_tag|>");
    }
    let t = text.trim();
    if t.starts_with('{') {
        if let Some(calls) = calls_from_json(t) {
            return Parsed {
                content: String::new(),
                calls,
            };
        }
    }
    Parsed {
        content: text.to_string(),
        calls: Vec::new(),
    }
}

fn generic(text: &str) -> Parsed {
    let raw = Parsed {
        content: text.to_string(),
        calls: Vec::new(),
    };
    let Ok(v) = serde_json::from_str::<Value>(text.trim()) else {
        return raw;
    };
    if let Some(items) = v.get("tool_calls").and_then(Value::as_array) {
        if let Some(calls) = items.iter().map(call_from).collect::<Option<Vec<_>>>() {
            return Parsed {
                content: String::new(),
                calls,
            };
        }
        return raw;
    }
    match v.get("response") {
        Some(Value::String(s)) => Parsed {
            content: s.clone(),
            calls: Vec::new(),
        },
        Some(other) => Parsed {
            content: other.to_string(),
            calls: Vec::new(),
        },
        None => raw,
    }
}

/// Splits a whole answer into content and calls as `family` writes them.
pub fn parse(family: Family, text: &str) -> Parsed {
    match family {
        Family::Hermes => hermes(text),
        Family::Llama3 => llama3(text),
        Family::Mistral => prefixed(text, "[TOOL_CALLS]"),
        Family::Generic => generic(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn hermes_bare_json_calls_are_calls() {
        let p = parse(
            Family::Hermes,
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
        );
        assert_eq!(p.content, "");
        assert_eq!(
            p.calls,
            vec![
                call("get_weather", "{\"city\":\"Paris\"}"),
                call("now", "{}")
            ]
        );
        let p = parse(
            Family::Hermes,
            "{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
        );
        assert_eq!((p.content.as_str(), p.calls), ("", vec![call("now", "{}")]));
        let p = parse(Family::Hermes, "Use {\"name\": \"x\"} as the key.");
        assert!(p.calls.is_empty());
        assert_eq!(p.content, "Use {\"name\": \"x\"} as the key.");
    }

    #[test]
    fn hermes_calls_leave_no_markup_in_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        let p = parse(Family::Hermes, text);
        assert_eq!(p.content, "Let me check.");
        assert_eq!(
            p.calls,
            vec![
                call("get_weather", "{\"city\":\"Paris\"}"),
                call("get_time", "{}")
            ]
        );
        // Cut off before the closing tag: the call still parses.
        let p = parse(
            Family::Hermes,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
        );
        assert_eq!(p.calls, vec![call("f", "{\"a\":1}")]);
        assert_eq!(p.content, "");
    }

    #[test]
    fn a_bare_call_then_tagged_calls_leaves_only_the_cut_call_as_text() {
        // qwen2.5-coder-0.5b after a tool result, cut by max_tokens: a bare call, a
        // stray closing tag, a tagged call, and a call cut off mid-arguments.
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lyon\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"";
        let p = parse(Family::Hermes, text);
        assert_eq!(
            p.calls,
            vec![
                call("get_weather", "{\"city\":\"Paris\"}"),
                call("get_weather", "{\"city\":\"Lyon\"}")
            ]
        );
        // Nothing is dropped: the cut call stays as text, and only it.
        assert_eq!(
            p.content,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\""
        );
        // Prose before a bare call stays, and a bare mention that is no call stays too.
        let p = parse(
            Family::Hermes,
            "Checking.\n{\"name\": \"now\", \"arguments\": {}}",
        );
        assert_eq!(
            (p.content.as_str(), p.calls),
            ("Checking.", vec![call("now", "{}")])
        );
        let p = parse(
            Family::Hermes,
            "Write {\"name\": \"x\" and then {\"name\": \"now\", \"arguments\": {}}",
        );
        assert_eq!(
            (p.content.as_str(), p.calls),
            ("Write {\"name\": \"x\" and then", vec![call("now", "{}")])
        );
    }

    #[test]
    fn bad_json_stays_content() {
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": </tool_call>";
        let p = parse(Family::Hermes, text);
        assert!(p.calls.is_empty());
        assert_eq!(p.content, text);
        let p = parse(Family::Mistral, "[TOOL_CALLS][{\"name\": 3}]");
        assert!(p.calls.is_empty());
        // Arguments given as a string must hold an object.
        assert!(parse(
            Family::Generic,
            r#"{"tool_calls":[{"name":"f","arguments":"[1]"}]}"#
        )
        .calls
        .is_empty());
        assert_eq!(
            parse(
                Family::Generic,
                r#"{"tool_calls":[{"name":"f","arguments":"{\"x\":2}"}]}"#
            )
            .calls,
            vec![call("f", "{\"x\":2}")]
        );
    }

    #[test]
    fn llama3_mistral_and_generic() {
        let p = parse(
            Family::Llama3,
            "{\"name\": \"f\", \"parameters\": {\"x\": 1}}",
        );
        assert_eq!(p.calls, vec![call("f", "{\"x\":1}")]);
        let p = parse(
            Family::Llama3,
            "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}",
        );
        assert_eq!((p.content.as_str(), p.calls.len()), ("", 1));
        assert_eq!(
            parse(Family::Llama3, "Hello {there}").content,
            "Hello {there}"
        );
        let p = parse(Family::Mistral, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": {\"y\": \"z\"}}]");
        assert_eq!(p.calls, vec![call("a", "{}"), call("b", "{\"y\":\"z\"}")]);
        let p = parse(Family::Generic, r#"{"response": "It is sunny."}"#);
        assert_eq!((p.content.as_str(), p.calls.len()), ("It is sunny.", 0));
        let p = parse(
            Family::Generic,
            r#"{"tool_calls": [{"name": "f", "arguments": {"q": 1}}]}"#,
        );
        assert_eq!(p.calls, vec![call("f", "{\"q\":1}")]);
        assert_eq!(parse(Family::Generic, "plain words").content, "plain words");
    }

    /// What small models write instead of a clean call: a parser that guesses would
    /// return a broken call, so each is either a well-formed call or text, unchanged.
    #[test]
    fn fences_and_prose_never_make_broken_calls() {
        // qwen2.5-coder-0.5b's answer to a two-city question (no trigger: pretty-printed).
        let fenced = "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\n    \"city\": \"Paris\"\n  }\n}\n```";
        for family in [
            Family::Hermes,
            Family::Llama3,
            Family::Mistral,
            Family::Generic,
        ] {
            let p = parse(family, fenced);
            assert!(p.calls.is_empty(), "{family:?}");
            assert_eq!(p.content, fenced, "{family:?}");
        }
        // A compact call in a fence the grammar left open (it ends the answer at the call).
        let p = parse(
            Family::Hermes,
            "Here:\n```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
        );
        assert_eq!(p.calls, vec![call("get_weather", "{\"city\":\"Paris\"}")]);
        assert_eq!(p.content, "Here:");
        // A closed fence holds text after the JSON: not a call (the grammar never writes it).
        let closed = "```json\n{\"name\": \"f\", \"arguments\": {}}\n```";
        assert_eq!(parse(Family::Hermes, closed).content, closed);
        assert!(parse(Family::Hermes, closed).calls.is_empty());
        // Prose that names the tag, a tool or a call's shape is text.
        for text in [
            "Wrap each call in <tool_call> tags.",
            "Use <tool_call> and </tool_call> around the JSON.",
            "I can call get_weather for that.",
            "<tool_call>{\"city\": \"Paris\"}</tool_call>",
            "<tool_call>\n{\"name\": \"f\", \"arguments\": [1]}\n</tool_call>",
            "{\"name\": \"f\", \"arguments\": {}} and then I would answer.",
        ] {
            let p = parse(Family::Hermes, text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
        for (family, text) in [
            (Family::Mistral, "[TOOL_CALLS] is how I call tools."),
            (Family::Llama3, "<|python_tag|> starts code."),
            (Family::Llama3, "{\"answer\": 42}"),
            (Family::Generic, "{\"tool_calls\": \"none yet\"}"),
            (
                Family::Generic,
                "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {",
            ),
        ] {
            let p = parse(family, text);
            assert!(p.calls.is_empty(), "{family:?} {text}");
            assert_eq!(p.content, text, "{family:?}");
        }
        // Every call that does come out has arguments that parse as an object.
        for text in [
            fenced,
            "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>",
        ] {
            for c in parse(Family::Hermes, text).calls {
                assert!(serde_json::from_str::<Value>(&c.arguments)
                    .unwrap()
                    .is_object());
            }
        }
    }
}
