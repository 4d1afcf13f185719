//! `owl quantize` against llama-quantize: tiny-llama-F32.gguf quantized to each
//! type must equal tiny-llama-T.gguf as llama-quantize made it from that F32
//! file with default options, byte for byte: its sha256 is pinned in
//! fixtures/synthetic/SHA256SUMS. On a mismatch the test names owl's tensor types.

use std::path::Path;

use owl_engine::gguf::Gguf;
use owl_engine::quantize::{self, QuantizeError, Target};

#[path = "common/fixtures.rs"]
mod fixtures;

use fixtures::{pinned_sha256, synthetic};

fn source() -> Gguf {
    Gguf::open(&synthetic("tiny-llama-F32.gguf")).expect("tiny-llama-F32.gguf is committed")
}

/// Quantizes the F32 source to `ty` in `dir` and compares its sha256 with that of
/// llama-quantize's file, pinned in fixtures/synthetic/SHA256SUMS.
fn check(ty: &str, dir: &Path) -> Result<(), String> {
    let out = dir.join(format!("{ty}.gguf"));
    fixtures::quantize_to(ty, &out);
    let got = owl_engine::registry::sha256_file_hex(&out).map_err(|e| e.to_string())?;
    let want = pinned_sha256(ty);
    if got == want {
        return Ok(());
    }
    let g = Gguf::open(&out).map_err(|e| e.to_string())?;
    let types: Vec<String> = g
        .tensors()
        .iter()
        .map(|t| format!("{}={}", t.name, t.ty))
        .collect();
    Err(format!(
        "{ty}: sha256 {got}, llama-quantize's {want}; owl's tensor types: {}",
        types.join(" ")
    ))
}

fn check_all(types: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let failures: Vec<String> = types
        .iter()
        .filter_map(|ty| check(ty, dir.path()).err())
        .collect();
    assert!(
        failures.is_empty(),
        "not byte-identical to llama-quantize:\n{}",
        failures.join("\n")
    );
}

#[test]
fn float_and_q8_0_files_are_byte_identical() {
    check_all(&["F16", "BF16", "Q8_0"]);
}

#[test]
fn legacy_quant_files_are_byte_identical() {
    check_all(&["Q4_0", "Q4_1", "Q5_0", "Q5_1"]);
}

#[test]
fn k_quant_small_and_large_mixes_are_byte_identical() {
    // Checked against llama-quantize 11434's files, made from the same F32 file.
    check_all(&["Q3_K_S", "Q3_K_L", "Q4_K_S", "Q5_K_S"]);
}

#[test]
fn q2_k_s_without_an_importance_matrix_is_refused_as_llama_quantize_refuses_it() {
    let err = quantize::plan(&source(), Target::parse("Q2_K_S").unwrap(), false)
        .err()
        .expect("Q2_K_S without an imatrix must be refused");
    let msg = err.to_string();
    assert!(msg.contains("importance matrix") && msg.contains("Q2_K"), "{msg}");
}

#[test]
fn k_quant_files_are_byte_identical() {
    check_all(&["Q6_K", "Q4_K_M", "Q5_K_M", "Q2_K", "Q3_K_M"]);
}

#[test]
fn iq4_files_are_byte_identical() {
    check_all(&["IQ4_NL", "IQ4_XS"]);
}

#[test]
fn a_changed_fixture_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama-Q4_0.gguf");
    std::fs::copy(synthetic("tiny-llama-Q4_0.gguf"), &path).unwrap();
    assert_eq!(fixtures::verify(&path, "Q4_0"), Ok(()));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = fixtures::verify(&path, "Q4_0").unwrap_err();
    assert!(
        err.contains(&path.display().to_string()) && err.contains(&pinned_sha256("Q4_0")),
        "{err}"
    );
}

#[test]
fn requantizing_needs_the_flag() {
    let q = Gguf::open(&synthetic("tiny-llama-Q4_0.gguf")).unwrap();
    let err = quantize::plan(&q, Target::parse("Q8_0").unwrap(), false).unwrap_err();
    assert!(matches!(err, QuantizeError::Requantize { .. }), "{err}");
    assert!(err.to_string().contains("--allow-requantize"), "{err}");
    let plan = quantize::plan(&q, Target::parse("Q8_0").unwrap(), true).unwrap();
    assert!(!plan.requantized.is_empty());
    // COPY rewrites nothing: every tensor keeps its type.
    let copy = quantize::plan(&q, Target::Copy, false).unwrap();
    assert!(copy.tensors.iter().all(|e| e.from == e.to));
    assert_eq!(copy.file_type, 2);
}

#[test]
fn split_output_opens_as_the_same_model() {
    let src = source();
    let dir = tempfile::tempdir().unwrap();
    let plan = quantize::plan(&src, Target::parse("Q8_0").unwrap(), false).unwrap();
    let max = quantize::parse_split_size("1M").unwrap();
    assert_eq!(max, 1_000_000);
    let out = dir.path().join("tiny.gguf");
    let (paths, _) = quantize::write(&src, &plan, &out, Some(max), |_| {}).unwrap();
    // 1.9 MiB of Q8_0 tensors in parts of at most 1 MB.
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert_eq!(paths[0], dir.path().join("tiny-00001-of-00003.gguf"));
    assert!(!out.exists());
    for p in &paths {
        let part = Gguf::from_bytes(std::sync::Arc::new(std::fs::read(p).unwrap())).unwrap();
        let data: u64 = part
            .tensors()
            .iter()
            .map(|t| t.size.next_multiple_of(32) as u64)
            .sum();
        assert!(
            data <= max || part.tensors().len() == 1,
            "{} holds {data} bytes",
            p.display()
        );
    }
    let split = Gguf::open(&paths[0]).unwrap();
    let whole = Gguf::open(&synthetic("tiny-llama-Q8_0.gguf")).unwrap();
    assert_eq!(split.tensors().len(), whole.tensors().len());
    for t in whole.tensors() {
        let s = split.tensor(&t.name).unwrap();
        assert_eq!((s.ty, &s.dims), (t.ty, &t.dims), "{}", t.name);
        assert!(
            split.tensor_data(s) == whole.tensor_data(t),
            "{} differs",
            t.name
        );
    }
    assert_eq!(split.metadata().get::<u32>("general.file_type").unwrap(), 7);
    for bad in ["0M", "12", "5K", "M", "-1G"] {
        assert!(quantize::parse_split_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn copy_of_a_llama_quantize_file_is_that_file() {
    // COPY keeps every tensor; a file llama-quantize wrote already has its
    // tensors in loader order and its quantization keys last, so nothing moves.
    let dir = tempfile::tempdir().unwrap();
    for ty in ["Q4_K_M", "IQ4_XS"] {
        let path = synthetic(&format!("tiny-llama-{ty}.gguf"));
        let g = Gguf::open(&path).unwrap();
        let plan = quantize::plan(&g, Target::Copy, false).unwrap();
        let out = dir.path().join("copy.gguf");
        quantize::write(&g, &plan, &out, None, |_| {}).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&path).unwrap(),
            "COPY of {ty} changed the file"
        );
    }
}

/// The recipe on real files llama-quantize made: asked for their own file type,
/// owl chooses every tensor's type exactly as they hold it (gemma3-270m's
/// Q4_K_M: tied embeddings as the output, rows of 640 falling back from K-quants,
/// attn_v/ffn_down raised by layer; smollm2's Q4_1 with its Q8_0 embeddings).
#[test]
fn recipe_reproduces_real_llama_quantize_files() {
    for (model, ty) in [("gemma3-270m", "Q4_K_M"), ("smollm2-135m-instruct", "Q4_1")] {
        let path = owl_engine::registry::resolve_model(model, false).unwrap_or_else(|e| {
            panic!("{model} must be in the model cache (scripts/test pulls it): {e}")
        });
        let g = Gguf::open(&path).unwrap();
        let plan = quantize::plan(&g, Target::parse(ty).unwrap(), true).unwrap();
        let wrong: Vec<String> = plan
            .tensors
            .iter()
            .filter(|e| e.from != e.to)
            .map(|e| format!("{}: file has {}, recipe says {}", e.name, e.from, e.to))
            .collect();
        assert!(wrong.is_empty(), "{model} {ty}:\n{}", wrong.join("\n"));
        assert!(plan.requantized.is_empty());
        assert_eq!(plan.tensors.len(), g.tensors().len());
    }
}

#[test]
fn pure_leave_output_and_type_overrides() {
    use owl_engine::gguf::GgmlType as G;
    use owl_engine::quantize::PlanOptions;
    let src = source();
    let q4km = Target::parse("Q4_K_M").unwrap();
    let types = |opts: &PlanOptions| -> std::collections::HashMap<String, G> {
        let plan = quantize::plan_with(&src, q4km, opts).unwrap();
        plan.tensors.into_iter().map(|e| (e.name, e.to)).collect()
    };
    let pure = types(&PlanOptions {
        pure: true,
        ..Default::default()
    });
    for (name, ty) in &pure {
        let want = if name.ends_with("_norm.weight") {
            G::F32
        } else {
            G::Q4_K
        };
        assert_eq!(*ty, want, "--pure {name}");
    }
    let kept = types(&PlanOptions {
        leave_output: true,
        ..Default::default()
    });
    assert_eq!(kept["output.weight"], G::F32);
    assert_eq!(
        kept["blk.1.ffn_down.weight"],
        G::Q6_K,
        "the rest of the recipe still applies"
    );
    let over = types(&PlanOptions {
        output_type: Some(G::Q8_0),
        token_embd_type: Some(G::Q6_K),
        ..Default::default()
    });
    assert_eq!(
        (over["output.weight"], over["token_embd.weight"]),
        (G::Q8_0, G::Q6_K)
    );
    // --pure has no fallback: gemma3-270m's rows of 640 do not divide into
    // Q4_K's 256, which is an error naming the tensor, not a panic.
    let gemma =
        Gguf::open(&owl_engine::registry::resolve_model("gemma3-270m", false).unwrap()).unwrap();
    let opts = PlanOptions {
        pure: true,
        allow_requantize: true,
        ..Default::default()
    };
    let err = quantize::plan_with(&gemma, q4km, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token_embd.weight") && err.contains("640") && err.contains("Q4_K"),
        "{err}"
    );
}
