//! Bit-exactness against the `gguf` Python package (fixtures written by
//! tests/gen_fixtures.py): dequantization of every tensor of both real models,
//! and quantization of seeded inputs. The synthetic models' dequantization is
//! checked in engine/tests/dequant_synthetic.rs (engine makes their quantized files).
//!
//! Models are read, never skipped: a missing file fails the test with the path
//! and how to get it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use owl_quant::{quantize, GgmlType};

mod common;
use common::dequant::{check_model, fixtures_dir, load_json, u};

fn models_dir() -> PathBuf {
    match std::env::var_os("OWL_HOME") {
        Some(h) => PathBuf::from(h).join("models"),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/owl/models")
        }
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("bad hex"))
        .collect()
}

#[test]
fn dequantize_smollm2_matches_gguf_py() {
    let seen = check_model(
        &models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &fixtures_dir().join("dequant/SmolLM2-135M-Instruct.Q4_1.json"),
    );
    assert_eq!(seen, BTreeSet::from(["F32", "Q4_1", "Q8_0"]));
}

#[test]
fn dequantize_gemma3_matches_gguf_py() {
    let seen = check_model(
        &models_dir().join("gemma-3-270m-q4_k_m.gguf"),
        &fixtures_dir().join("dequant/gemma-3-270m-q4_k_m.json"),
    );
    assert_eq!(
        seen,
        BTreeSet::from(["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"])
    );
}

#[test]
fn quantize_matches_gguf_py() {
    let fx = load_json(&fixtures_dir().join("quantize.json"));
    let input: Vec<f32> = hex_decode(fx["input_f32_le"].as_str().unwrap())
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(input.len(), u(&fx, "n"));
    let mut checked = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let ty = GgmlType::from_id(u(case, "type") as u32).unwrap();
        let want = hex_decode(case["bytes"].as_str().unwrap());
        let mut got = vec![0u8; ty.row_bytes(input.len()).unwrap()];
        quantize(ty, &input, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{ty}: byte count");
        let per = ty.row_bytes(32).unwrap();
        for (i, (g, w)) in got.chunks(per).zip(want.chunks(per)).enumerate() {
            assert_eq!(
                g,
                w,
                "{ty}: block {i} differs from gguf.quants.quantize; input {:?}",
                &input[32 * i..32 * i + 32]
            );
        }
        checked.push(ty);
    }
    assert_eq!(
        checked,
        [
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0
        ]
    );
}
