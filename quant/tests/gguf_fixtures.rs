//! Bit-exactness against the `gguf` Python package (fixtures written by
//! tests/gen_fixtures.py): dequantization of every tensor of both real models and
//! of every synthetic model, and quantization of seeded inputs.
//!
//! Models are read, never skipped: a missing file fails the test with the path
//! and how to get it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use owl_quant::{dequantize, quantize, GgmlType};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn synthetic_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/synthetic")
}

fn models_dir() -> PathBuf {
    match std::env::var_os("OWL_HOME") {
        Some(h) => PathBuf::from(h).join("models"),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/owl/models")
        }
    }
}

fn load_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}

fn u(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("fixture field {key} missing in {v}")) as usize
}

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("bad hex"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks every tensor of `model` against its fixture; returns the types seen.
fn check_model(model: &Path, fixture: &Path) -> BTreeSet<&'static str> {
    let fx = load_json(fixture);
    let mut file = File::open(model).unwrap_or_else(|e| {
        panic!(
            "model {} is missing ({e}); run `owl pull` / the test script first, \
             or set OWL_HOME (synthetic models live in engine/tests/fixtures/synthetic)",
            model.display()
        )
    });
    let len = file.metadata().expect("stat model").len() as usize;
    assert_eq!(
        len,
        u(&fx, "file_bytes"),
        "{} is not the file the fixture was made from",
        model.display()
    );

    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    let tensors = fx["tensors"].as_array().expect("tensors array");
    assert!(!tensors.is_empty());
    let mut raw = Vec::new();
    let mut out = Vec::new();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let ty = GgmlType::from_id(u(t, "type") as u32)
            .unwrap_or_else(|| panic!("{name}: unsupported type id {}", t["type"]));
        seen.insert(ty.name());
        let (n, ne0, off, nb) = (u(t, "n"), u(t, "ne0"), u(t, "offset"), u(t, "n_bytes"));
        assert_eq!(
            ty.row_bytes(n),
            Some(nb),
            "{name}: row_bytes disagrees with gguf"
        );

        raw.resize(nb, 0);
        file.seek(SeekFrom::Start(off as u64)).unwrap();
        file.read_exact(&mut raw).unwrap();

        // Dequantize row by row in chunks (the embedding tables are large).
        let row_bytes = ty.row_bytes(ne0).unwrap();
        let rows_per_chunk = ((1 << 22) / ne0).max(1);
        let mut h = Sha256::new();
        let mut head = Vec::new();
        for chunk in raw.chunks(rows_per_chunk * row_bytes) {
            let m = chunk.len() / row_bytes * ne0;
            out.resize(m, 0f32);
            dequantize(ty, chunk, &mut out).unwrap_or_else(|e| panic!("{name}: {e}"));
            for v in &out {
                h.update(v.to_le_bytes());
            }
            if head.is_empty() {
                head = out[..4].iter().map(|v| v.to_bits()).collect();
            }
        }
        let want_head: Vec<u32> = t["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = hex(&h.finalize());
        if got != t["sha256"].as_str().unwrap() || head != want_head {
            failures.push(format!(
                "{name} ({ty}): sha {got} head {head:?}, want head {want_head:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} tensors differ from gguf.quants.dequantize:\n{}",
        model.display(),
        failures.len(),
        tensors.len(),
        failures.join("\n")
    );
    seen
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
fn dequantize_synthetic_models_match_gguf_py() {
    let dir = fixtures_dir().join("dequant");
    let mut seen = BTreeSet::new();
    let mut n_models = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if !stem.starts_with("tiny-") {
            continue;
        }
        seen.extend(check_model(
            &synthetic_dir().join(format!("{stem}.gguf")),
            &path,
        ));
        n_models += 1;
    }
    assert_eq!(n_models, 17, "expected a fixture per synthetic model");
    // Every weight type owl-quant supports appears in some model.
    for ty in GgmlType::ALL {
        if !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K) {
            assert!(seen.contains(ty.name()), "no synthetic tensor of type {ty}");
        }
    }
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
