//! Chat templates of the real models (from the owl model cache: $OWL_HOME/models,
//! default ~/.cache/owl/models; `owl pull` puts them there).

use std::path::PathBuf;

use owl_engine::chat::{ChatMessage, ChatTemplate, TemplateOrigin};
use owl_engine::gguf::Gguf;
use owl_engine::tokenizer::Tokenizer;

fn model_dir() -> PathBuf {
    match std::env::var_os("OWL_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
            .join(".cache/owl/models"),
    }
}

fn model(name: &str) -> Gguf {
    let dir = model_dir();
    let path = dir.join(format!("{name}.gguf"));
    assert!(
        path.exists(),
        "model file {} is missing (`owl pull` fetches it)",
        path.display()
    );
    Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "What is 2+2?"),
    ]
}

#[test]
fn smollm2_renders_its_chatml_template() {
    let gguf = model("SmolLM2-135M-Instruct.Q4_1");
    let t = ChatTemplate::from_gguf(&gguf, None).unwrap();
    assert_eq!(t.origin(), TemplateOrigin::Gguf);
    let text = t.render(&conversation(), true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    // The reference prompt in the public set is exactly this conversation.
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let ids = tok.encode(&text, true, true).unwrap();
    assert_eq!(
        ids,
        [
            1, 9690, 198, 2683, 359, 253, 5356, 11173, 30, 2, 198, 1, 4093, 198, 1780, 314, 216,
            34, 27, 34, 47, 2, 198, 1, 520, 9531, 198
        ]
    );
    // Without a system message the template adds SmolLM's own.
    let text = t.render(&conversation()[1..], false).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
        "{text}"
    );
    assert!(
        text.ends_with("<|im_start|>user\nWhat is 2+2?<|im_end|>\n"),
        "{text}"
    );
    // EOS is <|im_end|> too: listed once.
    assert_eq!(t.stop_strings(), vec!["<|im_end|>".to_string()]);
}

#[test]
fn gemma3_without_a_template_uses_gemma_turns() {
    let gguf = model("gemma-3-270m-q4_k_m");
    let t = ChatTemplate::from_gguf(&gguf, None).unwrap();
    assert_eq!(t.origin(), TemplateOrigin::Builtin("gemma"));
    let text = t.render(&conversation(), true).unwrap();
    // No "<bos>" in the text: the tokenizer adds it.
    assert_eq!(
        text,
        "<start_of_turn>user\nYou are a helpful assistant.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    );
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let ids = tok.encode(&text, true, true).unwrap();
    let bos = tok.bos().unwrap();
    assert_eq!(ids[0], bos);
    assert_ne!(ids[1], bos, "BOS doubled");
    assert_eq!(ids[1], tok.token_id("<start_of_turn>").unwrap());
    assert!(t.stop_strings().contains(&"<end_of_turn>".to_string()));
}

#[test]
fn override_template_wins_over_the_file() {
    let gguf = model("SmolLM2-135M-Instruct.Q4_1");
    let src = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";
    let t = ChatTemplate::from_gguf(&gguf, Some(src.to_string())).unwrap();
    assert_eq!(t.origin(), TemplateOrigin::Override);
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        "[system] You are a helpful assistant.\n[user] What is 2+2?\n[assistant] "
    );
    assert!(ChatTemplate::from_gguf(&gguf, Some("{{ unclosed".into())).is_err());
}

#[test]
fn qwen_coder_renders_tools_and_a_tool_result() {
    let name = std::fs::read_dir(model_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| {
            n.to_lowercase().starts_with("qwen2.5-coder-0.5b-instruct") && n.ends_with(".gguf")
        })
        .expect("qwen2.5-coder-0.5b-instruct is missing (`owl pull` fetches it)");
    let t = ChatTemplate::from_gguf(&model(name.trim_end_matches(".gguf")), None).unwrap();
    assert_eq!(t.tool_family(), owl_engine::tools::Family::Hermes);
    let tools = vec![
        serde_json::json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
    ];
    let msgs = vec![
        serde_json::json!({"role": "user", "content": "Weather in Paris?"}),
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
        serde_json::json!({"role": "tool", "tool_call_id": "c1", "content": "21 C"}),
    ];
    let text = t.render_with_tools(&msgs, &tools, true).unwrap();
    assert!(
        text.contains("<tools>") && text.contains("\"name\": \"get_weather\""),
        "{text}"
    );
    assert!(
        text.contains(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"
        ),
        "{text}"
    );
    assert!(
        text.contains("<tool_response>\n21 C\n</tool_response>"),
        "{text}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
}
