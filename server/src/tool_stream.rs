//! Tool calls streamed as OpenAI streams them: a first delta per call with
//! `index`, `id`, `type` and `function.name` (empty `arguments`), then the
//! arguments in fragments as the model writes them.
//!
//! Calls are read from the text after the family's first opener, where the call
//! grammar has the model write each call as `{"name": "NAME", "arguments": {...}}`
//! (`parameters` for Llama 3). A call's first delta goes out once its name is
//! complete; its arguments go out as far as they are known, tracked by JSON
//! depth so the object's end is found without waiting for the answer's end.
//! At the end the whole answer is parsed as the non-streamed one is: calls the
//! scan did not see go out whole, so the streamed calls equal the parsed ones.

use owl_engine::constrain::{Scan, Trigger};
use owl_engine::tools::{Family, ToolCall};
use serde_json::{json, Value};

/// How a call opens; whitespace-tolerant, as the lazy trigger is.
fn name_key() -> Trigger {
    Trigger::json(owl_engine::tools::BARE_CALL)
}

/// One call seen so far in the text: its name, the arguments' text so far,
/// and whether the arguments' object is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<'a> {
    pub name: &'a str,
    pub args: &'a str,
    pub complete: bool,
}

/// How far a JSON object at the start of `s` goes: `(len, complete)`.
/// `None` when `s` does not open an object.
fn object_extent(s: &str) -> Option<(usize, bool)> {
    if !s.is_empty() && !s.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, b) in s.bytes().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some((i + 1, true));
                }
            }
            _ => {}
        }
    }
    Some((s.len(), false))
}

/// The calls in `text` (written as the call grammar writes them), in order; the
/// scan stops at the first text that is not such a call's start.
pub fn scan(text: &str) -> Vec<Seen<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    let key = name_key();
    while let Scan::Found { end, .. } = key.scan(rest.as_bytes(), 0) {
        let after = &rest[end..];
        let Some(name_end) = after.find('"') else {
            break;
        };
        let name = &after[..name_end];
        let tail = &after[name_end..];
        let key = ["\", \"arguments\": ", "\", \"parameters\": "]
            .into_iter()
            .find(|k| tail.starts_with(k));
        let Some(key) = key else {
            break;
        };
        let args_text = &tail[key.len()..];
        let Some((len, complete)) = object_extent(args_text) else {
            break;
        };
        out.push(Seen {
            name,
            args: &args_text[..len],
            complete,
        });
        if !complete {
            break;
        }
        rest = &args_text[len..];
    }
    out
}

/// What has been sent of the calls in a stream.
#[derive(Debug, Default)]
pub struct CallStream {
    /// Per call sent: its name and how many bytes of its arguments went out.
    sent: Vec<(String, usize)>,
}

impl CallStream {
    /// The deltas (`delta.tool_calls` items) that `text`, the answer from the
    /// first call opener on, adds to what was sent.
    pub fn feed(&mut self, text: &str, new_id: &mut dyn FnMut() -> String) -> Vec<Value> {
        let mut out = Vec::new();
        for (i, seen) in scan(text).into_iter().enumerate() {
            if i == self.sent.len() {
                out.push(json!({"index": i, "id": new_id(), "type": "function",
                    "function": {"name": seen.name, "arguments": ""}}));
                self.sent.push((seen.name.to_string(), 0));
            }
            let done = self.sent[i].1;
            if seen.args.len() > done && seen.args.is_char_boundary(done) {
                out.push(json!({"index": i, "function": {"arguments": &seen.args[done..]}}));
                self.sent[i].1 = seen.args.len();
            }
        }
        out
    }

    /// How many calls have had their first delta.
    pub fn started(&self) -> usize {
        self.sent.len()
    }

    /// The end of the answer: the parsed calls that were not streamed, whole.
    pub fn finish(
        &mut self,
        parsed: &[ToolCall],
        new_id: &mut dyn FnMut() -> String,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for (i, call) in parsed.iter().enumerate().skip(self.sent.len()) {
            out.push(json!({"index": i, "id": new_id(), "type": "function",
                "function": {"name": call.name, "arguments": ""}}));
            out.push(json!({"index": i, "function": {"arguments": call.arguments}}));
            self.sent.push((call.name.clone(), call.arguments.len()));
        }
        out
    }
}

/// Where the calls of `all` start: the first of the family's openers.
pub fn calls_start(family: Family, all: &str) -> Option<usize> {
    family
        .call_openers()
        .iter()
        .filter_map(|o| o.find(all))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_stream_as_they_grow_and_end_at_their_object() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}";
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("call_{n}")
        };
        let mut cs = CallStream::default();
        let mut deltas = Vec::new();
        for end in 1..=text.len() {
            deltas.extend(cs.feed(&text[..end], &mut id));
        }
        assert_eq!(deltas[0]["id"], "call_1");
        assert_eq!(deltas[0]["function"]["name"], "get_weather");
        assert_eq!(deltas[0]["function"]["arguments"], "");
        let args = |i: u64| -> String {
            deltas
                .iter()
                .filter(|d| d["index"] == i && d.get("id").is_none())
                .map(|d| d["function"]["arguments"].as_str().unwrap())
                .collect()
        };
        assert_eq!(args(0), "{\"city\": \"Pa\"}");
        assert_eq!(args(1), "{}");
        // Fragments, not the whole object at once.
        assert!(deltas.iter().filter(|d| d["index"] == 0).count() > 3);
        assert_eq!(cs.started(), 2);
        // A brace inside a string does not end the object.
        let s = scan("{\"name\": \"f\", \"arguments\": {\"q\": \"a}b\\\"}\"}, tail");
        assert_eq!(s[0].args, "{\"q\": \"a}b\\\"}\"}");
        assert!(s[0].complete);
    }

    #[test]
    fn a_name_is_sent_only_when_complete_and_unseen_calls_come_at_the_end() {
        assert!(scan("{\"name\": \"get_wea").is_empty());
        assert!(scan("{\"name\": \"f\", \"argu").is_empty());
        assert!(scan("{\"name\": \"f\", \"arguments\": 3}").is_empty());
        let mut id = || "call_x".to_string();
        let mut cs = CallStream::default();
        assert!(cs.feed("{\"tool_calls\": [", &mut id).is_empty());
        let parsed = vec![ToolCall {
            name: "now".into(),
            arguments: "{}".into(),
        }];
        let end = cs.finish(&parsed, &mut id);
        assert_eq!(end.len(), 2);
        assert_eq!(end[1]["function"]["arguments"], "{}");
        assert!(cs.finish(&parsed, &mut id).is_empty());
    }
}
