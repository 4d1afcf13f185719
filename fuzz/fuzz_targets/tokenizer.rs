//! Arbitrary bytes through encode and the incremental decoder of real vocabularies:
//! SentencePiece (tiny-llama fixture, Gemma 3 when cached) and byte-level BPE
//! (SmolLM2, Qwen2.5-Coder when cached). First byte: vocabulary and flags; the rest
//! is the text, and also read as raw token ids (valid or not) for the decoder.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use owl_engine::gguf::Gguf;
use owl_engine::tokenizer::{IncrementalDecoder, Tokenizer};

fn vocabs() -> &'static [Tokenizer] {
    static V: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    V.get_or_init(|| {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../engine/tests/fixtures/synthetic/tiny-llama-F32.gguf");
        let models = owl_engine::registry::models_dir();
        let mut paths = vec![fixture];
        for f in [
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "gemma-3-270m-q4_k_m.gguf",
            "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        ] {
            if models.join(f).is_file() {
                paths.push(models.join(f));
            }
        }
        let v: Vec<Tokenizer> = paths
            .iter()
            .map(|p| {
                let g = Gguf::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            })
            .collect();
        eprintln!("tokenizer fuzz: {} vocabularies ({:?})", v.len(), v.iter().map(|t| t.kind()).collect::<Vec<_>>());
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let vs = vocabs();
    let tok = &vs[(sel as usize >> 2) % vs.len()];
    let text = String::from_utf8_lossy(rest);
    if let Ok(ids) = tok.encode(&text, sel & 1 != 0, sel & 2 != 0) {
        let mut d = IncrementalDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&d.push(tok, id));
        }
        out.push_str(&d.flush());
        std::hint::black_box(tok.decode(&ids));
    }
    // Raw ids, in range or not, through the incremental decoder.
    let n = tok.vocab_size() as u32;
    let mut d = IncrementalDecoder::new();
    for c in rest.chunks_exact(4) {
        let raw = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let id = if raw & 1 == 0 { raw % n } else { raw >> 1 };
        let _ = d.push(tok, id);
        let _ = tok.token_text(id);
    }
    let _ = d.flush();
});
