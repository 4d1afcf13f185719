//! A hostile chat template and hostile messages: the input is the template, a 0 byte,
//! then messages as `role\x01content` separated by `\x02`. Rendering must end (fuel)
//! with bounded output, and never panic; libFuzzer's -timeout catches a render that hangs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use owl_engine::chat::{ChatMessage, ChatTemplate, TemplateOrigin, MAX_RENDER_BYTES};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (template, rest) = text.split_once('\0').unwrap_or((&text, "user\x01hi"));
    let messages: Vec<ChatMessage> = rest
        .split('\x02')
        .map(|m| {
            let (role, content) = m.split_once('\x01').unwrap_or(("user", m));
            ChatMessage::new(role, content)
        })
        .collect();
    let Ok(t) = ChatTemplate::new(
        template.to_string(),
        TemplateOrigin::Override,
        "<s>".into(),
        "</s>".into(),
        true,
    ) else {
        return;
    };
    if let Ok(out) = t.render(&messages, true) {
        assert!(out.len() <= MAX_RENDER_BYTES);
    }
    let json: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    let tools = [serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})];
    if let Ok(out) = t.render_with_tools(&json, &tools, true) {
        assert!(out.len() <= MAX_RENDER_BYTES);
    }
    let _ = t.stop_strings();
});
