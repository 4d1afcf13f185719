//! Tokenization against llama.cpp's reference output (tests/fixtures/tokenizer/,
//! taken from llama.cpp outputs, committed here), decoding, and the incremental decoder.
//!
//! The real models are read from the owl model cache ($OWL_HOME/models, default
//! ~/.cache/owl/models; `owl pull` puts them there); the tiny synthetic models from
//! engine/tests/fixtures/synthetic (quantized ones made on first use, tests/common/fixtures.rs). A missing file fails the
//! test with a message saying where it was looked for.

use std::path::{Path, PathBuf};

use owl_engine::gguf::Gguf;
use owl_engine::tokenizer::{IncrementalDecoder, Tokenizer, VocabKind};
use serde_json::Value;

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1";
const GEMMA: &str = "gemma-3-270m-q4_k_m";
const QWEN05: &str = "qwen2.5-coder-0.5b-instruct-awq-q4_k_m";
const QWEN15: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m";

fn model_dir() -> PathBuf {
    match std::env::var_os("OWL_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
            .join(".cache/owl/models"),
    }
}

fn open(path: &Path) -> Tokenizer {
    assert!(
        path.exists(),
        "model file {} is missing (real models: `owl pull`; synthetic ones: engine/tests/fixtures/synthetic)",
        path.display()
    );
    let gguf = Gguf::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn real_model(name: &str) -> Tokenizer {
    open(&model_dir().join(format!("{name}.gguf")))
}

#[path = "common/fixtures.rs"]
mod fixtures;

fn synthetic(name: &str) -> Tokenizer {
    open(&fixtures::synthetic(&format!("{name}.gguf")))
}

/// The fixture's lines: `{"text", "tokens"[, "greedy", "greedy_text"]}`.
fn fixture(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/tokenizer/{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check_against_reference(tok: &Tokenizer, fixture_name: &str) {
    let cases = fixture(fixture_name);
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().expect("text");
        let want = ids(&case["tokens"]);
        let got = tok.encode(text, true, true).expect("encode");
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} strings differ from llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_tokenizes_like_llama_cpp() {
    let tok = real_model(SMOLLM);
    assert_eq!(tok.kind(), VocabKind::Bpe);
    check_against_reference(&tok, SMOLLM);
}

#[test]
fn gemma3_tokenizes_like_llama_cpp() {
    let tok = real_model(GEMMA);
    assert_eq!(tok.kind(), VocabKind::Spm);
    assert_eq!(tok.vocab_size(), 262144);
    check_against_reference(&tok, GEMMA);
}

/// Both Qwen 2.5 Coder models (qwen2 pre-tokenizer, 151,936 tokens, no BOS added).
#[test]
fn qwen25_tokenizes_like_llama_cpp() {
    for name in [QWEN05, QWEN15] {
        let tok = real_model(name);
        assert_eq!(tok.kind(), VocabKind::Bpe, "{name}");
        assert_eq!(tok.vocab_size(), 151936, "{name}");
        check_against_reference(&tok, name);
    }
}

#[test]
fn synthetic_models_tokenize_like_llama_cpp() {
    for name in [
        "tiny-llama-Q8_0",
        "tiny-llama-F32",
        "tiny-qwen2-Q8_0",
        "tiny-qwen3-Q4_K_M",
    ] {
        let tok = synthetic(name);
        assert_eq!(tok.kind(), VocabKind::Spm, "{name}");
        check_against_reference(&tok, "tiny-synthetic");
    }
}

#[test]
fn special_ids_and_end_of_generation() {
    let smol = real_model(SMOLLM);
    assert_eq!(smol.bos(), Some(1));
    assert_eq!(smol.eos(), Some(2));
    let im_end = smol.token_id("<|im_end|>").unwrap();
    let endoftext = smol.token_id("<|endoftext|>").unwrap();
    assert!(smol.is_eog(im_end) && smol.is_eog(endoftext) && smol.is_eog(2));
    assert!(!smol.is_eog(smol.token_id("<|im_start|>").unwrap()));
    assert!(!smol.is_eog(smol.encode("Hello", false, false).unwrap()[0]));
    // add_bos_token = false in the file: no BOS even with add_special.
    assert_eq!(
        smol.encode("Hello world", true, true).unwrap(),
        vec![19556, 905]
    );

    let gemma = real_model(GEMMA);
    assert_eq!(gemma.bos(), Some(2));
    assert_eq!(gemma.eos(), Some(1));
    let eot = gemma.token_id("<end_of_turn>").unwrap();
    assert_eq!(gemma.eot(), Some(eot));
    assert!(gemma.is_eog(eot) && gemma.is_eog(1));
    assert!(!gemma.is_eog(gemma.token_id("<start_of_turn>").unwrap()));
}

#[test]
fn parse_special_controls_special_tokens() {
    let smol = real_model(SMOLLM);
    let text = "<|im_start|>user\nhi<|im_end|>";
    let parsed = smol.encode(text, false, true).unwrap();
    assert_eq!(parsed.first(), smol.token_id("<|im_start|>").as_ref());
    assert_eq!(parsed.last(), smol.token_id("<|im_end|>").as_ref());
    let literal = smol.encode(text, false, false).unwrap();
    assert!(literal.len() > parsed.len());
    assert!(!literal.contains(&smol.token_id("<|im_start|>").unwrap()));
    assert_eq!(smol.decode(&literal), text);
    // Control tokens render as nothing.
    assert_eq!(smol.decode(&parsed), "user\nhi");

    let gemma = real_model(GEMMA);
    let bos = gemma.bos().unwrap();
    assert_eq!(gemma.encode("<bos>hi", false, true).unwrap()[0], bos);
    assert_ne!(gemma.encode("<bos>hi", false, false).unwrap()[0], bos);
}

fn round_trip_strings() -> Vec<String> {
    fixture(SMOLLM)
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn decode_round_trips() {
    for tok in [real_model(SMOLLM), real_model(GEMMA)] {
        for text in round_trip_strings() {
            let ids = tok.encode(&text, false, false).unwrap();
            assert_eq!(tok.decode(&ids), text, "{:?}", tok.kind());
        }
    }
    // The tiny vocabulary has no `▁` token: a space it cannot merge into a word is
    // spelled as the bytes of `▁`, and llama.cpp renders those bytes as `▁`. Text
    // whose spaces all start known pieces round-trips.
    let tiny = synthetic("tiny-llama-Q8_0");
    for text in [
        "the old man said that the world was good",
        "the first day of the year",
    ] {
        let ids = tiny.encode(text, false, false).unwrap();
        assert_eq!(tiny.decode(&ids), text);
    }
}

#[test]
fn decode_matches_llama_cpp_greedy_text() {
    for name in [SMOLLM, GEMMA] {
        let tok = real_model(name);
        let mut n = 0;
        for case in fixture(name).iter().filter(|c| c.get("greedy").is_some()) {
            let greedy = ids(&case["greedy"]);
            let want = case["greedy_text"].as_str().unwrap();
            // llama.cpp's greedy_text joins token_to_piece pieces without the
            // first-token space strip; SmolLM and Gemma add no space prefix.
            assert_eq!(tok.decode(&greedy), want, "{name}");
            let mut dec = IncrementalDecoder::new();
            let streamed: String = greedy
                .iter()
                .map(|&id| dec.push(&tok, id))
                .collect::<String>()
                + &dec.flush();
            assert_eq!(streamed, want, "{name}");
            n += 1;
        }
        assert_eq!(n, 10, "{name}");
    }
}

#[test]
fn incremental_decoder_holds_back_split_characters() {
    // The tiny vocabulary has no CJK or emoji tokens: every such character is
    // spelled with byte-fallback tokens, so characters are split across tokens.
    let tok = synthetic("tiny-llama-Q8_0");
    for text in ["日本語のテキストと中文字符", "Emoji test 😀🚀👍🏽 and ❤️"]
    {
        let ids = tok.encode(text, true, true).unwrap();
        let want = tok.decode(&ids);
        let mut dec = IncrementalDecoder::new();
        let mut streamed = String::new();
        let mut held_back = 0;
        for &id in &ids {
            let chunk = dec.push(&tok, id);
            if chunk.is_empty() && !tok.token_to_piece(id).is_empty() {
                held_back += 1;
            }
            assert!(
                !chunk.contains('\u{FFFD}'),
                "{text:?}: broken UTF-8 mid-stream"
            );
            streamed.push_str(&chunk);
        }
        assert_eq!(dec.flush(), "");
        assert!(held_back > 0, "{text:?}: expected split characters");
        assert_eq!(streamed, want);
        assert!(!want.contains('\u{FFFD}'));
        // Every character survives; the prefix space (and a space before an emoji)
        // has no piece of its own here and comes back as `▁`, as in llama.cpp.
        assert_eq!(want.replace('▁', " ").trim_start(), text);
    }

    // A 4-byte character fed one byte token at a time comes out whole at the end.
    let bytes: Vec<u32> = "😀"
        .bytes()
        .map(|b| tok.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let mut dec = IncrementalDecoder::new();
    let chunks: Vec<String> = bytes.iter().map(|&id| dec.push(&tok, id)).collect();
    assert_eq!(chunks, ["", "", "", "😀"]);

    // A stream that ends mid-character flushes as U+FFFD, not as nothing.
    let mut dec = IncrementalDecoder::new();
    assert_eq!(dec.push(&tok, bytes[0]), "");
    assert_eq!(dec.flush(), "\u{FFFD}");
}

#[test]
fn sentencepiece_space_prefix() {
    let tok = synthetic("tiny-llama-Q8_0");
    assert!(tok.add_space_prefix());
    let ids = tok.encode("the man", false, false).unwrap();
    // "▁the" and "▁man": the prefix space is added, then dropped on decode.
    assert_eq!(
        ids,
        vec![tok.token_id("▁the").unwrap(), tok.token_id("▁man").unwrap()]
    );
    assert_eq!(tok.decode(&ids), "the man");
    assert_eq!(tok.token_to_piece(ids[1]), b" man");
    let mut dec = IncrementalDecoder::new();
    assert_eq!(dec.push(&tok, ids[0]), "the");
    assert_eq!(dec.push(&tok, ids[1]), " man");
    // BOS is added (default for SentencePiece, and the file says so).
    assert_eq!(
        tok.encode("the", true, true).unwrap()[0],
        tok.bos().unwrap()
    );
    assert_eq!(
        tok.encode("", true, true).unwrap(),
        vec![tok.bos().unwrap()]
    );
    assert_eq!(tok.encode("", false, true).unwrap(), Vec::<u32>::new());
}
