//! The nomic-bert encoder (nomic-embed-text-v1.5, F16) against llama.cpp's
//! `llama-embedding` (mean pooling, L2-normalised), on the inputs in
//! fixtures/reference/nomic-embed-text-v1.5.f16.embeddings.jsonl with the token
//! ids llama.cpp gave them. The model comes through `owl pull nomic-embed-text-v1.5`.

use std::path::PathBuf;

use owl_engine::gguf::Gguf;
use owl_engine::models::bert::{cosine, Encoder, Pooling};
use serde_json::Value;

fn encoder() -> Encoder {
    let p = owl_engine::registry::models_dir().join("nomic-embed-text-v1.5.f16.gguf");
    assert!(p.is_file(), "{} is missing: run `owl pull nomic-embed-text-v1.5` (scripts/test does) before the tests", p.display());
    let g = Gguf::open(&p).unwrap();
    Encoder::load(&g, owl_backends::open("cpu", None).unwrap(), 512).unwrap()
}

fn fixture() -> Vec<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/nomic-embed-text-v1.5.f16.embeddings.jsonl");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn nomic_embeddings_match_llama_cpp() {
    let mut enc = encoder();
    assert_eq!((enc.cfg.n_embd, enc.cfg.n_layer, enc.cfg.pooling), (768, 12, Pooling::Mean));
    let refs = fixture();
    let g = Gguf::open(&owl_engine::registry::models_dir().join("nomic-embed-text-v1.5.f16.gguf")).unwrap();
    let tok = owl_engine::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let mut got_all = Vec::new();
    for d in &refs {
        let tokens: Vec<u32> = d["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(d["text"].as_str().unwrap(), true, false).unwrap(), tokens, "WordPiece tokens of {:?}", d["text"]);
        let want = floats(&d["embedding"]);
        let got = enc.embed(&tokens).unwrap();
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = cosine(&got, &want);
        eprintln!("cosine {cos:.6} (|v| {norm:.4}) {:?}", d["text"].as_str().unwrap());
        assert!((norm - 1.0).abs() < 1e-4, "the embedding is L2-normalised, |v| = {norm}");
        assert!(cos >= 0.999, "cosine {cos} with llama.cpp's embedding of {:?}", d["text"]);
        got_all.push(got);
    }
    // The same input embeds to the same vector whatever ran before it.
    let tokens: Vec<u32> = refs[0]["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(enc.embed(&tokens).unwrap(), got_all[0]);
    // Different sentences are different vectors (not a constant answer).
    assert!(cosine(&got_all[0], &got_all[2]) < 0.9);
    // All of them in one batch (each attending only to itself) give the same vectors.
    let all: Vec<Vec<u32>> = refs.iter().map(|d| d["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()).collect();
    let batch = enc.embed_many(&all.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    assert_eq!(batch.len(), all.len());
    for (i, (b, one)) in batch.iter().zip(&got_all).enumerate() {
        let worst = b.iter().zip(one).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "input {i}: batched differs from alone by {worst}");
    }
}

#[test]
fn encoder_inputs_are_checked() {
    let mut enc = encoder();
    assert!(enc.embed(&[]).unwrap_err().to_string().contains("empty"));
    assert!(enc.embed(&[101, 40000, 102]).unwrap_err().to_string().contains("outside the vocabulary"));
    let long = vec![1996u32; 513];
    assert!(enc.embed(&long).unwrap_err().to_string().contains("over the encoder"));
}

/// Plain `bert` (BGE-style: absolute positions, biases, GELU, CLS pooling) on the
/// committed synthetic tiny-bert-Q8_0.gguf (`owl synth --arch bert --type Q8_0 --seed 1`)
/// against llama.cpp's `llama-embedding` for it (fixtures/synthetic/tiny-bert-Q8_0.embeddings.jsonl:
/// text, llama.cpp's token ids, embedding).
#[test]
fn bert_embeddings_match_llama_cpp() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let g = Gguf::open(&dir.join("tiny-bert-Q8_0.gguf")).unwrap();
    let mut enc = Encoder::load(&g, owl_backends::open("cpu", None).unwrap(), 512).unwrap();
    assert_eq!((enc.cfg.arch.as_str(), enc.cfg.n_embd, enc.cfg.n_layer, enc.cfg.pooling), ("bert", 256, 2, Pooling::Cls));
    let tok = owl_engine::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let p = dir.join("tiny-bert-Q8_0.embeddings.jsonl");
    let refs: Vec<Value> = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(refs.len() >= 3);
    let mut got_all = Vec::new();
    for d in &refs {
        let tokens: Vec<u32> = d["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(d["text"].as_str().unwrap(), true, false).unwrap(), tokens, "WordPiece tokens of {:?}", d["text"]);
        let want = floats(&d["embedding"]);
        let got = enc.embed(&tokens).unwrap();
        let cos = cosine(&got, &want);
        eprintln!("bert cosine {cos:.6} {:?}", d["text"].as_str().unwrap());
        assert!(cos >= 0.999, "cosine {cos} with llama.cpp's embedding of {:?}", d["text"]);
        got_all.push(got);
    }
    // Position embeddings count: the same tokens in another order are another vector.
    let first: Vec<u32> = refs[0]["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let mut swapped = first.clone();
    let last = swapped.len() - 2;
    swapped[1..=last].reverse();
    // (Without them only the summation order would change: a cosine of 1 within rounding.)
    let c = cosine(&enc.embed(&swapped).unwrap(), &got_all[0]);
    assert!(c < 0.9999, "reordering the words left the embedding at cosine {c}");
}
