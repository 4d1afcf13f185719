//! The grammar of a family's call syntax, with each function's arguments
//! following its `parameters` JSON schema (llguidance Lark with `%json`), so a
//! constrained call always parses and validates. With `tool_choice: auto` the
//! grammar is lazy: it starts at the family's trigger and covers what follows it.

use serde_json::{json, Value};

use super::Family;
use crate::constrain::{Constraint, Grammar};

/// Which calls the model must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Free text, or calls once the family's trigger appears.
    Auto,
    /// At least one call, from the first token.
    Required,
    /// A call to this function, from the first token.
    Named(String),
}

/// A Lark string literal (JSON escapes).
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The function's name and `parameters` schema (any object when absent), compact as the
/// other JSON grammars (`", "` and `": "`, no free whitespace).
fn function(tool: &Value) -> (String, Value) {
    let f = tool.get("function").unwrap_or(tool);
    let name = f["name"].as_str().unwrap_or_default().to_string();
    let mut params = match f.get("parameters") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => json!({"type": "object"}),
    };
    if let Some(obj) = params.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(
            || json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    (name, params)
}

/// The constraint for `choice` over `tools` as `family` writes calls.
pub fn constraint(family: Family, tools: &[Value], choice: &Choice, parallel: bool) -> Constraint {
    let args_key = if family == Family::Llama3 {
        "parameters"
    } else {
        "arguments"
    };
    let mut rules = Vec::new();
    let mut alts = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let (name, params) = function(tool);
        if matches!(choice, Choice::Named(n) if *n != name) {
            continue;
        }
        let head = format!("{{\"name\": {}, \"{args_key}\": ", lit(&name));
        rules.push(format!("fn_{i}: {} args_{i} \"}}\"", lit(&head)));
        // What follows the Hermes lazy trigger (`{"name": "`).
        let tail = format!("{}, \"{args_key}\": ", lit(&name));
        rules.push(format!("rest_{i}: {} args_{i} \"}}\"", lit(&tail[1..])));
        rules.push(format!("args_{i}: %json {params}"));
        alts.push(format!("fn_{i}"));
    }
    rules.push(format!("call: {}", alts.join(" | ")));
    let rests: Vec<String> = alts.iter().map(|a| a.replace("fn_", "rest_")).collect();
    rules.push(format!("rest: {}", rests.join(" | ")));
    let lazy = *choice == Choice::Auto;
    let start = match family {
        Family::Hermes => {
            let block = "\"<tool_call>\\n\" call \"\\n</tool_call>\"";
            let more = if parallel {
                format!(" (\"\\n\" {block})*")
            } else {
                String::new()
            };
            if lazy {
                // After `{"name": "`, bare or inside the tag; the closing tag is optional.
                format!("rest (\"\\n</tool_call>\")?{more}")
            } else {
                format!("{block}{more}")
            }
        }
        Family::Mistral => {
            let list = if parallel {
                "\"[\" call (\", \" call)* \"]\""
            } else {
                "\"[\" call \"]\""
            };
            if lazy {
                list.to_string()
            } else {
                format!("\"[TOOL_CALLS]\" {list}")
            }
        }
        // Llama 3.x writes one bare call (after `<|python_tag|>` when lazy).
        Family::Llama3 => "call".to_string(),
        Family::Generic => {
            let list = if parallel {
                "call (\", \" call)*"
            } else {
                "call"
            };
            if lazy {
                format!("\": [\" {list} \"]}}\"")
            } else {
                format!("\"{{\\\"tool_calls\\\": [\" {list} \"]}}\"")
            }
        }
    };
    rules.insert(0, format!("start: {start}"));
    Constraint {
        grammar: Grammar::Lark(rules.join("\n")),
        trigger: lazy.then(|| family.lazy_trigger()),
        repeat: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llguidance::toktrie::TokRxInfo;

    use super::*;
    use crate::constrain::ConstraintEnv;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
            json!({"type": "function", "function": {"name": "now"}}),
        ]
    }

    /// Whether `text` (fed byte by byte, after the trigger when lazy) is accepted to its end.
    fn accepts(c: &Constraint, text: &str) -> bool {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        words.push(b"\xFF<|end|>".to_vec());
        let info = TokRxInfo::new(words.len() as u32, words.len() as u32 - 1);
        let env = Arc::new(ConstraintEnv::from_words(info, &words).unwrap());
        let mut m = env.matcher(c).expect("the grammar compiles");
        for b in text.bytes() {
            let mut logits = vec![0.0f32; words.len()];
            m.apply(&mut logits).unwrap();
            if !logits[b as usize].is_finite() {
                return false;
            }
            if m.advance(b as u32).is_err() {
                return false;
            }
        }
        let mut logits = vec![0.0f32; words.len()];
        m.apply(&mut logits).unwrap();
        logits[env.eos as usize].is_finite()
    }

    #[test]
    fn required_hermes_calls_follow_the_parameters_schema() {
        let c = constraint(Family::Hermes, &tools(), &Choice::Required, true);
        assert_eq!(c.trigger, None);
        let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert!(accepts(&c, call));
        assert!(accepts(&c, &format!("{call}\n{call}")), "parallel calls");
        assert!(!accepts(&c, "Sure!"), "text is not a call");
        assert!(!accepts(
            &c,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>"
        ));
        assert!(!accepts(
            &c,
            "<tool_call>\n{\"name\": \"rain\", \"arguments\": {}}\n</tool_call>"
        ));
        let one = constraint(Family::Hermes, &tools(), &Choice::Required, false);
        assert!(!accepts(&one, &format!("{call}\n{call}")), "one call only");
    }

    #[test]
    fn named_choice_allows_only_that_function() {
        let c = constraint(Family::Hermes, &tools(), &Choice::Named("now".into()), true);
        assert!(accepts(
            &c,
            "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"
        ));
        assert!(!accepts(
            &c,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
        ));
    }

    #[test]
    fn auto_is_lazy_from_the_trigger() {
        let c = constraint(Family::Hermes, &tools(), &Choice::Auto, false);
        assert_eq!(c.trigger.as_ref().unwrap().text, "{\"name\": \"");
        let bare = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}";
        assert!(accepts(&c, bare), "a bare call");
        assert!(!accepts(
            &c,
            "{\"name\": \"get_weather\", \"arguments\": {}}"
        ));
        let free = "It is sunny. <tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        assert!(accepts(&c, free));
        assert!(!accepts(&c, "Hi <tool_call>\n{\"name\": \"now\"}"));
        let g = constraint(Family::Generic, &tools(), &Choice::Auto, true);
        assert!(accepts(
            &g,
            "{\"tool_calls\": [{\"name\": \"now\", \"arguments\": {}}, {\"name\": \"now\", \"arguments\": {}}]}"
        ));
        let g = constraint(Family::Generic, &tools(), &Choice::Required, false);
        assert!(accepts(
            &g,
            "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]}"
        ));
        let l = constraint(Family::Llama3, &tools(), &Choice::Required, false);
        assert!(accepts(
            &l,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"
        ));
        let m = constraint(Family::Mistral, &tools(), &Choice::Required, true);
        assert!(accepts(
            &m,
            "[TOOL_CALLS][{\"name\": \"now\", \"arguments\": {}}, {\"name\": \"now\", \"arguments\": {}}]"
        ));
    }

    #[test]
    fn a_pretty_printed_call_fires_the_lazy_trigger() {
        let c = constraint(Family::Hermes, &tools(), &Choice::Auto, false);
        // From `"name": "` on the grammar holds: the rest is written as it writes calls.
        for opener in ["```json\n{\n  \"name\": \"", "{\n\"name\":\"", "Sure.\n{ \"name\" : \""] {
            let call = format!("{opener}get_weather\", \"arguments\": {{\"city\": \"Oslo\"}}}}");
            assert!(accepts(&c, &call), "{call}");
            // Once fired, the arguments must follow `parameters`, and prose cannot follow the call.
            let bad = format!("{opener}get_weather\", \"arguments\": {{\"town\": \"Oslo\"}}}}");
            assert!(!accepts(&c, &bad), "{bad}");
            let prose = format!("{opener}now\", \"arguments\": {{}}}}\n```\nDone.");
            assert!(!accepts(&c, &prose), "{prose}");
        }
        // The generic family's `{"tool_calls"` trigger tolerates whitespace too.
        let g = constraint(Family::Generic, &tools(), &Choice::Auto, false);
        assert!(accepts(&g, "{\n  \"tool_calls\": [{\"name\": \"now\", \"arguments\": {}}]}"));
        assert!(!accepts(&g, "{\n  \"tool_calls\": [{\"name\": \"rain\", \"arguments\": {}}]}"));
    }
}
