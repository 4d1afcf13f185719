//! The model's answer parsed into content and tool calls, per [`Family`].
//! A call whose JSON does not parse, or has no name, stays in the content as
//! text: nothing is dropped, and only well-formed calls become calls.

use serde_json::Value;

use super::Family;
use crate::constrain::Trigger;

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

/// The length of the JSON value that starts `s` (no leading whitespace).
fn value_len(s: &str) -> Option<usize> {
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<serde::de::IgnoredAny>();
    it.next()?.ok()?;
    Some(it.byte_offset())
}

/// The raw text of each member of the JSON object `s` (trimmed), by key, in order.
fn members(s: &str) -> Option<Vec<(String, &str)>> {
    let s = s.trim();
    let mut rest = s.strip_prefix('{')?.trim_start();
    let mut out = Vec::new();
    if let Some(r) = rest.strip_prefix('}') {
        return r.trim().is_empty().then_some(out);
    }
    loop {
        let klen = value_len(rest)?;
        let key: String = serde_json::from_str(&rest[..klen]).ok()?;
        rest = rest[klen..].trim_start().strip_prefix(':')?.trim_start();
        let vlen = value_len(rest)?;
        out.push((key, &rest[..vlen]));
        rest = rest[vlen..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else {
            return rest.strip_prefix('}')?.trim().is_empty().then_some(out);
        }
    }
}

/// The raw text of each item of the JSON array `s` (trimmed).
fn items(s: &str) -> Option<Vec<&str>> {
    let mut rest = s.trim().strip_prefix('[')?.trim_start();
    let mut out = Vec::new();
    if let Some(r) = rest.strip_prefix(']') {
        return r.trim().is_empty().then_some(out);
    }
    loop {
        let len = value_len(rest)?;
        out.push(&rest[..len]);
        rest = rest[len..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else {
            return rest.strip_prefix(']')?.trim().is_empty().then_some(out);
        }
    }
}

/// A call from the JSON object `raw` with `name` and `arguments` (or Llama's
/// `parameters`). `arguments` is the model's own text of the object, as a stream
/// sends it, so streamed and non-streamed calls are equal byte for byte.
fn call_from(raw: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(raw.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let key = ["arguments", "parameters"].into_iter().find(|k| v.get(*k).is_some());
    let arguments = match key.map(|k| (k, &v[k])) {
        None | Some((_, Value::Null)) => "{}".to_string(),
        Some((k, Value::Object(_))) => {
            let m = members(raw)?;
            m.iter().rev().find(|(mk, _)| mk == k)?.1.to_string()
        }
        // Some models write the arguments as a JSON string; it must hold an object.
        Some((_, Value::String(s))) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(_)) => s.trim().to_string(),
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

fn calls_from_json(text: &str) -> Option<Vec<ToolCall>> {
    let t = text.trim();
    if t.starts_with('[') {
        items(t)?.into_iter().map(call_from).collect()
    } else if t.starts_with('{') {
        Some(vec![call_from(t)?])
    } else {
        None
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
    // The search tolerates JSON whitespace, as the lazy trigger does (`{\n  "name": "`).
    let opener = Trigger::json(super::BARE_CALL);
    while let Some(at) = opener.find(&out.content[from..]).map(|i| from + i) {
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
    let len = value_len(text)?;
    let v: Value = serde_json::from_str(&text[..len]).ok()?;
    v.get("arguments")?;
    Some((call_from(&text[..len])?, len))
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
    if v.get("tool_calls").is_some_and(Value::is_array) {
        let raw_items = members(text).and_then(|m| m.into_iter().rev().find(|(k, _)| k == "tool_calls"));
        let calls = raw_items.and_then(|(_, a)| items(a)?.into_iter().map(call_from).collect::<Option<Vec<_>>>());
        if let Some(calls) = calls {
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
                call("get_weather", "{\"city\": \"Paris\"}"),
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
                call("get_weather", "{\"city\": \"Paris\"}"),
                call("get_time", "{}")
            ]
        );
        // Cut off before the closing tag: the call still parses.
        let p = parse(
            Family::Hermes,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
        );
        assert_eq!(p.calls, vec![call("f", "{\"a\": 1}")]);
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
                call("get_weather", "{\"city\": \"Paris\"}"),
                call("get_weather", "{\"city\": \"Lyon\"}")
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
        assert_eq!(p.calls, vec![call("f", "{\"x\": 1}")]);
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
        assert_eq!(p.calls, vec![call("a", "{}"), call("b", "{\"y\": \"z\"}")]);
        let p = parse(Family::Generic, r#"{"response": "It is sunny."}"#);
        assert_eq!((p.content.as_str(), p.calls.len()), ("It is sunny.", 0));
        let p = parse(
            Family::Generic,
            r#"{"tool_calls": [{"name": "f", "arguments": {"q": 1}}]}"#,
        );
        assert_eq!(p.calls, vec![call("f", "{\"q\": 1}")]);
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
        assert_eq!(p.calls, vec![call("get_weather", "{\"city\": \"Paris\"}")]);
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

    #[test]
    fn a_pretty_printed_call_in_an_open_fence_is_a_call() {
        // What the grammar lets through once the whitespace-tolerant trigger fires: the
        // model's own opener, the constrained rest, and a fence it never closes.
        let text = "Let me look.\n```json\n{\n  \"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        let p = parse(Family::Hermes, text);
        assert_eq!(p.calls, vec![call("get_weather", "{\"city\": \"Paris\"}")]);
        assert_eq!(p.content, "Let me look.");
        let p = parse(Family::Hermes, "{\n\t\"name\" : \"now\", \"arguments\": {}}\n</tool_call>");
        assert_eq!((p.content.as_str(), p.calls), ("", vec![call("now", "{}")]));
    }

    #[test]
    fn arguments_are_the_models_text_byte_for_byte() {
        // A stream sends the model's text of the arguments; the parsed call holds the same.
        let args = "{\"city\":  \"Paris\",\n \"days\": [1, 2.50], \"q\": {\"a\": \"}\\\"\"}}";
        for (family, text) in [
            (Family::Hermes, format!("<tool_call>\n{{\"name\": \"f\", \"arguments\": {args}}}\n</tool_call>")),
            (Family::Hermes, format!("{{\"name\": \"f\", \"arguments\": {args}}}")),
            (Family::Llama3, format!("{{\"name\": \"f\", \"parameters\": {args}}}")),
            (Family::Mistral, format!("[TOOL_CALLS][{{\"name\": \"g\", \"arguments\": {{}}}}, {{\"name\": \"f\", \"arguments\": {args}}}]")),
            (Family::Generic, format!("{{\"tool_calls\": [{{\"name\": \"f\", \"arguments\": {args}}}]}}")),
        ] {
            let p = parse(family, &text);
            assert_eq!(p.calls.last().map(|c| c.arguments.as_str()), Some(args), "{family:?} {text}");
        }
        // A repeated key: the last one wins, as in the parsed JSON.
        let p = parse(Family::Hermes, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"arguments\": {\"b\": 2}}</tool_call>");
        assert_eq!(p.calls, vec![call("f", "{\"b\": 2}")]);
    }
}

