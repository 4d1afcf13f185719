//! Tool calls: the OpenAI `tools` list rendered into the prompt, and the
//! model's answer parsed back into calls.
//!
//! The call syntax depends on the template family ([`Family`], detected from the
//! template source): Hermes/Qwen 2.5 write `<tool_call>{json}</tool_call>`,
//! Llama 3.x `<|python_tag|>` or a bare `{"name", "parameters"}` object,
//! Mistral `[TOOL_CALLS][{...}]`. A template that never mentions `tools` gets
//! the generic format (as llama.cpp's generic handler): the tools are listed
//! as JSON in the system prompt and the model answers with
//! `{"tool_calls": [...]}` or `{"response": "..."}`.

mod grammar;
mod parse;
mod render;

pub use grammar::{constraint, Choice};
pub use parse::{parse, Parsed, ToolCall};
pub use render::generic_messages;

use crate::constrain::Trigger;

/// How a Hermes-family call's JSON opens: small Qwen models write it bare,
/// without `<tool_call>`, so with `tool_choice: auto` this (which the tagged form
/// contains too) is what starts the lazy grammar.
pub const BARE_CALL: &str = "{\"name\": \"";

/// How a template's model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Hermes, Qwen 2.5).
    Hermes,
    /// `<|python_tag|>{...}` or a bare `{"name": ..., "parameters": {...}}` (Llama 3.x).
    Llama3,
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}}]`.
    Mistral,
    /// Tools in the system prompt; `{"tool_calls": [...]}` or `{"response": ...}`.
    Generic,
}

impl Family {
    /// The family of a chat template, from its source.
    pub fn detect(source: &str) -> Family {
        if !source.contains("tools") {
            Family::Generic
        } else if source.contains("<tool_call>") {
            Family::Hermes
        } else if source.contains("[TOOL_CALLS]") {
            Family::Mistral
        } else if source.contains("<|python_tag|>") || source.contains("<|start_header_id|>") {
            Family::Llama3
        } else {
            Family::Generic
        }
    }

    /// Whether the template renders `tools` itself.
    pub fn template_renders_tools(self) -> bool {
        self != Family::Generic
    }

    /// The text that opens a call (Hermes: its tag; see [`BARE_CALL`] for its lazy trigger).
    pub fn trigger(self) -> &'static str {
        match self {
            Family::Hermes => "<tool_call>",
            Family::Llama3 => "<|python_tag|>",
            Family::Mistral => "[TOOL_CALLS]",
            Family::Generic => "{\"tool_calls\"",
        }
    }

    /// What starts the lazy grammar for `tool_choice: auto`. The JSON ones tolerate
    /// whitespace, so a pretty-printed call (`{\n  "name": "`) fires them too.
    pub fn lazy_trigger(self) -> Trigger {
        match self {
            Family::Hermes => Trigger::json(BARE_CALL),
            Family::Generic => Trigger::json(self.trigger()),
            other => Trigger::exact(other.trigger()),
        }
    }

    /// Texts a streamed answer holds back from its content: any could open a call.
    /// The JSON ones tolerate whitespace, as the lazy trigger does.
    pub fn call_openers(self) -> Vec<Trigger> {
        match self {
            // A fence opened for a bare call is held with it: the parsed answer drops it.
            Family::Hermes => vec![
                Trigger::exact("<tool_call>"),
                Trigger::json(BARE_CALL),
                Trigger::json(&format!("```json {BARE_CALL}")),
                Trigger::json(&format!("``` {BARE_CALL}")),
            ],
            Family::Llama3 => vec![Trigger::exact("<|python_tag|>"), Trigger::json("{\"name\"")],
            Family::Mistral => vec![Trigger::exact("[TOOL_CALLS]")],
            Family::Generic => vec![Trigger::json("{\"tool_calls\"")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_template_source() {
        assert_eq!(
            Family::detect("{% for m in messages %}{% endfor %}"),
            Family::Generic
        );
        assert_eq!(
            Family::detect("{% if tools %}<tool_call>{% endif %}"),
            Family::Hermes
        );
        assert_eq!(
            Family::detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            Family::Mistral
        );
        assert_eq!(
            Family::detect("{% if tools %}<|python_tag|>{% endif %}"),
            Family::Llama3
        );
    }
}

#[cfg(test)]
mod render_tests {
    use crate::chat::{ChatTemplate, TemplateOrigin, CHATML_TEMPLATE};
    use serde_json::json;

    /// The tools part of Qwen 2.5's template, cut down.
    const QWEN_LIKE: &str = "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\
{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools><|im_end|>\n{%- endif %}\
{%- for message in messages %}\
{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\
{%- for tool_call in message.tool_calls %}\n<tool_call>\n{\"name\": \"{{ tool_call.function.name }}\", \"arguments\": {{ tool_call.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n\
{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n\
{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}{%- endfor %}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}";

    fn tools() -> Vec<serde_json::Value> {
        vec![
            json!({"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
        ]
    }

    #[test]
    fn template_with_tools_gets_them_in_context_and_renders_a_round_trip() {
        let t = ChatTemplate::new(
            QWEN_LIKE.into(),
            TemplateOrigin::Override,
            String::new(),
            String::new(),
            false,
        )
        .unwrap();
        assert_eq!(t.tool_family(), super::Family::Hermes);
        let msgs = vec![
            json!({"role": "user", "content": "Weather in Paris?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "21 C and sunny"}),
        ];
        let text = t.render_with_tools(&msgs, &tools(), true).unwrap();
        assert!(text.contains("<tools>{\"function\": {\"description\": \"Weather of a city\", \"name\": \"get_weather\""), "{text}");
        assert!(text.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"), "{text}");
        assert!(
            text.contains("<tool_response>\n21 C and sunny\n</tool_response>"),
            "{text}"
        );
        assert!(text.ends_with("<|im_end|><|im_start|>assistant"), "{text}");
    }

    #[test]
    fn template_without_tools_gets_the_generic_system_prompt() {
        let t = ChatTemplate::new(
            CHATML_TEMPLATE.into(),
            TemplateOrigin::ChatMl,
            String::new(),
            String::new(),
            false,
        )
        .unwrap();
        assert_eq!(t.tool_family(), super::Family::Generic);
        let text = t
            .render_with_tools(
                &[json!({"role": "user", "content": "Weather in Paris?"})],
                &tools(),
                true,
            )
            .unwrap();
        assert!(
            text.starts_with("<|im_start|>system\nYou can call these tools:"),
            "{text}"
        );
        assert!(
            text.contains("\"get_weather\"") && text.contains("{\"response\""),
            "{text}"
        );
        assert!(
            text.contains("<|im_start|>user\nWeather in Paris?<|im_end|>"),
            "{text}"
        );
    }
}
