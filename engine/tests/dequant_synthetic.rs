//! Bit-exactness of owl-quant's dequantization against the `gguf` Python package
//! on every tensor of every synthetic model (fixtures in quant/tests/fixtures/dequant,
//! written by quant/tests/gen_fixtures.py). It lives in engine because the quantized
//! tiny-llama files are made by engine's quantizer (tests/common/fixtures.rs).

use std::collections::BTreeSet;

use owl_quant::GgmlType;

#[path = "../../quant/tests/common/dequant.rs"]
mod dequant;
#[path = "common/fixtures.rs"]
mod fixtures;

#[test]
fn dequantize_synthetic_models_match_gguf_py() {
    let dir = dequant::fixtures_dir().join("dequant");
    let mut seen = BTreeSet::new();
    let mut n_models = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if !stem.starts_with("tiny-") {
            continue;
        }
        let model = fixtures::synthetic(&format!("{stem}.gguf"));
        seen.extend(dequant::check_model(&model, &path));
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
