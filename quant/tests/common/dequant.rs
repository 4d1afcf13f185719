//! Checking a model's tensors against a fixture written by tests/gen_fixtures.py
//! (gguf.quants.dequantize): shared by quant's tests and, through `#[path]`, by
//! engine/tests/dequant_synthetic.rs (the synthetic models, some made by engine).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use owl_quant::{dequantize, GgmlType};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// quant/tests/fixtures, from quant's tests or engine's.
pub fn fixtures_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let quant = if root.ends_with("quant") {
        root.to_path_buf()
    } else {
        root.join("../quant")
    };
    quant.join("tests/fixtures")
}

pub fn load_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}

pub fn u(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("fixture field {key} missing in {v}")) as usize
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks every tensor of `model` against its fixture; returns the types seen.
pub fn check_model(model: &Path, fixture: &Path) -> BTreeSet<&'static str> {
    let fx = load_json(fixture);
    let mut file = File::open(model).unwrap_or_else(|e| {
        panic!(
            "model {} is missing ({e}); run `owl pull` / the test script first, \
             or set OWL_HOME",
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
