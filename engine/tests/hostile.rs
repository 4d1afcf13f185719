//! Hostile model files: a GGUF whose header claims absurd sizes is refused by the
//! loader with one clear error, before anything is sized by the claim, and a chat
//! template that loops or renders megabytes is stopped. Each file is the committed
//! tiny-llama-F32.gguf with one thing changed (metadata rewritten by GgufWriter, or
//! bytes patched where the writer would refuse), then loaded the way `owl run` does.

use std::path::Path;

use owl_engine::chat::{ChatError, ChatMessage, ChatTemplate};
use owl_engine::gguf::{Gguf, GgufWriter, Metadata, Value};
use owl_engine::service::{Engine, EngineConfig};

#[path = "common/fixtures.rs"]
mod fixtures;

fn base() -> Gguf {
    Gguf::open(&fixtures::synthetic("tiny-llama-F32.gguf")).unwrap()
}

/// The tiny model with its metadata changed by `edit`, as file bytes.
fn with_metadata(edit: impl FnOnce(&mut Metadata)) -> Vec<u8> {
    let g = base();
    let mut md = g.metadata().clone();
    edit(&mut md);
    let mut w = GgufWriter::new()
        .with_version(g.version())
        .with_metadata(md);
    for t in g.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, g.tensor_data(t))
            .unwrap();
    }
    w.to_bytes().unwrap()
}

fn original() -> Vec<u8> {
    std::fs::read(fixtures::synthetic("tiny-llama-F32.gguf")).unwrap()
}

/// Byte offset just past `name` written as a GGUF string (u64 length + bytes).
fn after_string(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("'{name}' not in the file"));
    at + needle.len()
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Loads `bytes` as `owl run` would (file, tokenizer, template, weights, KV) and
/// returns the error, checking it is one line.
fn load_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = match start(&path) {
        Ok(_) => panic!("the hostile file loaded"),
        Err(e) => e,
    };
    assert!(!err.contains('\n'), "error is not one line: {err}");
    err
}

fn start(path: &Path) -> Result<Engine, String> {
    Engine::start(EngineConfig {
        model: path.to_str().unwrap().into(),
        n_ctx: 256,
        n_parallel: 1,
        threads: Some(1),
        pull_if_missing: false,
        ..Default::default()
    })
    .map_err(|e| e.to_string())
}

#[test]
fn the_unchanged_file_loads() {
    // So each failure below is about the one thing changed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.gguf");
    std::fs::write(&path, with_metadata(|_| {})).unwrap();
    let engine = start(&path).unwrap();
    assert_eq!(engine.info().n_vocab, 608);
}

#[test]
fn absurd_hyperparameters_are_refused_by_name() {
    let cases: &[(&str, Value, &str)] = &[
        ("llama.context_length", Value::U64(1 << 40), "llama.context_length = 1099511627776"),
        ("llama.block_count", Value::U64(1 << 40), "llama.block_count = 1099511627776"),
        ("llama.block_count", Value::U64(u64::MAX), "llama.block_count = 18446744073709551615"),
        ("llama.embedding_length", Value::U64(1 << 40), "llama.embedding_length = 1099511627776"),
        ("llama.feed_forward_length", Value::U64(1 << 62), "llama.feed_forward_length = 4611686018427387904"),
        ("llama.attention.key_length", Value::U64(1 << 40), "llama.attention.key_length = 1099511627776"),
        ("llama.attention.head_count", Value::U32(0), "inconsistent heads: 0 heads"),
        ("llama.attention.head_count_kv", Value::U32(0), "0 kv heads"),
        ("llama.expert_count", Value::U64(1 << 40), "llama.expert_count = 1099511627776"),
    ];
    for (key, value, want) in cases {
        let bytes = with_metadata(|md| {
            md.insert(*key, value.clone());
        });
        let e = load_err(&bytes);
        assert!(e.contains(want), "{key} = {value}: {e}");
    }
    // n_head 0: no division by zero, one error naming the heads.
    let e = load_err(&with_metadata(|md| {
        md.insert("llama.attention.head_count", Value::U32(0));
        md.remove("llama.attention.head_count_kv");
    }));
    assert!(e.contains("inconsistent heads: 0 heads"), "{e}");
    // A count of the wrong type is named too, not read as a default.
    let e = load_err(&with_metadata(|md| {
        md.insert("llama.block_count", Value::String("2".into()));
    }));
    assert!(e.contains("llama.block_count") && e.contains("string"), "{e}");
}

#[test]
fn absurd_lengths_in_the_bytes_are_refused_before_allocating() {
    // A vocabulary array claiming 2^31 entries in a 7 MiB file.
    let mut b = original();
    let at = after_string(&b, "tokenizer.ggml.tokens") + 4 + 4; // value type, element type
    put_u64(&mut b, at, 1 << 31);
    let e = load_err(&b);
    assert!(e.contains("array of 2147483648 string") && e.contains("tokenizer.ggml.tokens"), "{e}");
    // A string (general.name) claiming 2^40 bytes.
    let mut b = original();
    let at = after_string(&b, "general.name") + 4;
    put_u64(&mut b, at, 1 << 40);
    let e = load_err(&b);
    assert!(e.contains("truncated") && e.contains("general.name"), "{e}");
    // token_embd claiming 2^31 rows (a vocab of 2^31): a tensor larger than the file.
    let mut b = original();
    let at = after_string(&b, "token_embd.weight") + 4 + 8; // n_dims, dims[0]
    put_u64(&mut b, at, 1 << 31);
    let e = load_err(&b);
    assert!(e.contains("token_embd.weight") && e.contains("lies outside the file"), "{e}");
    // A tensor offset that overflows when added to the data start.
    let mut b = original();
    let at = after_string(&b, "output_norm.weight") + 4 + 8 + 4; // n_dims, dims, type
    put_u64(&mut b, at, u64::MAX - 31);
    let e = load_err(&b);
    assert!(e.contains("output_norm.weight") && e.contains("lies outside the file"), "{e}");
    // The file cut inside its tensor data.
    let b = original();
    let e = load_err(&b[..b.len() / 2]);
    assert!(e.contains("lies outside the file"), "{e}");
}

#[test]
fn hostile_vocab_metadata_is_refused() {
    let e = load_err(&with_metadata(|md| {
        md.insert("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); 3]));
    }));
    assert!(e.contains("tokenizer.ggml.scores"), "{e}");
    // An id past the vocabulary is ignored, as llama.cpp does: the default BOS stays.
    let mut md = base().metadata().clone();
    md.insert("tokenizer.ggml.bos_token_id", Value::U32(1 << 31));
    assert_eq!(owl_engine::tokenizer::Tokenizer::from_metadata(&md).unwrap().bos(), Some(1));
    // A vocabulary larger than the embedding table.
    let e = load_err(&with_metadata(|md| {
        let mut tokens = md.value("tokenizer.ggml.tokens").unwrap().as_array().unwrap().to_vec();
        tokens.extend((0..100).map(|i| Value::String(format!("extra{i}"))));
        md.insert("tokenizer.ggml.tokens", Value::Array(tokens));
        md.remove("tokenizer.ggml.scores");
        md.remove("tokenizer.ggml.token_type");
    }));
    assert!(e.contains("708 tokens but the embedding has 608 rows"), "{e}");
    let e = load_err(&with_metadata(|md| {
        md.insert("tokenizer.ggml.tokens", Value::Array(vec![]));
    }));
    assert!(e.contains("tokenizer.ggml.tokens") || e.contains("empty"), "{e}");
}

fn conv() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "hi")]
}

/// The tiny model with `template` as its tokenizer.chat_template, rendered.
fn render_file_template(template: &str) -> Result<String, ChatError> {
    let bytes = with_metadata(|md| {
        md.insert("tokenizer.chat_template", Value::String(template.into()));
    });
    let g = Gguf::from_bytes(std::sync::Arc::new(bytes)).unwrap();
    ChatTemplate::from_gguf(&g, None)?.render(&conv(), true)
}

#[test]
fn a_template_that_loops_is_stopped() {
    let loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let e = render_file_template(loops).unwrap_err();
    assert!(matches!(e, ChatError::Limit { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("GGUF") && e.contains("steps"), "{e}");
    // Recursion through a macro is bounded too.
    let recurse = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    assert!(render_file_template(recurse).is_err());
}

#[test]
fn a_template_that_renders_megabytes_is_stopped() {
    let big = "{% for i in range(100000) %}{{ 'a' * 100000 }}{% endfor %}";
    let e = render_file_template(big).unwrap_err();
    assert!(matches!(e, ChatError::Limit { .. }), "{e}");
    assert!(e.to_string().contains("MiB"), "{e}");
    // Doubling a string in memory, never written out: fuel charges what it builds.
    let doubling = "{% set ns = namespace(s='x' * 1000000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    let e = render_file_template(doubling).unwrap_err();
    assert!(matches!(e, ChatError::Limit { .. }), "{e}");
    // One huge repeat is refused by minijinja itself.
    assert!(render_file_template("{{ 'a' * 1000000000000 }}").is_err());
}

#[test]
fn a_template_has_no_file_or_environment_access() {
    for t in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/passwd' as p %}",
        "{% extends '/etc/passwd' %}",
    ] {
        let e = render_file_template(t).unwrap_err().to_string();
        assert!(!e.contains("root:"), "{t}: {e}");
    }
    // No `env`, `os` or `self` leaks anything.
    let out = render_file_template("[{{ env }}{{ os }}{{ environ }}]").unwrap();
    assert_eq!(out, "[]");
}

#[test]
fn real_templates_stay_under_the_bounds_on_long_conversations() {
    // ChatML over 5,000 turns of 1 KiB each: 5 MiB, past the server's body limit.
    let t = ChatTemplate::new(
        owl_engine::chat::CHATML_TEMPLATE.into(),
        owl_engine::chat::TemplateOrigin::ChatMl,
        String::new(),
        String::new(),
        false,
    )
    .unwrap();
    let msg = "x".repeat(1024);
    let conv: Vec<ChatMessage> = (0..5000)
        .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, msg.clone()))
        .collect();
    let out = t.render(&conv, true).unwrap();
    assert!(out.len() > 5000 * 1024);
}

#[test]
fn fuzz_found_format_panic_is_an_error() {
    // fuzz/chat_template: minijinja's `format` slices inside a multi-byte char and panics.
    // The crashing input (fuzz/artifacts/chat_template/crash-ce8d684e...), as the target read it.
    let t = format!("{{{{ \"!!!'!!!\x0c\x0c{{{{{{%(%%%%{}%%%%%%%%%%%%@%%%%%%{{ !%s!!\" | format(0) }}}}", "\u{fffd}".repeat(56));
    let e = render_file_template(&t).unwrap_err();
    assert!(matches!(e, ChatError::Render { .. }), "{e}");
}
