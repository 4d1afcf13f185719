//! The synthetic models of engine/tests/fixtures/synthetic, for every test that
//! reads them (engine's tests and, through `#[path]`, the CLI's).
//!
//! tiny-llama-F32.gguf is committed; its 14 quantized forms are not. On first
//! use each is made from the F32 file with owl's quantizer (byte-identical to
//! llama-quantize with default options) into the fixtures dir, written to a
//! temporary name and renamed so parallel tests never see half a file, and
//! checked against the sha256 of llama-quantize's file pinned in SHA256SUMS.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use owl_engine::gguf::Gguf;
use owl_engine::quantize::{self, Target};

/// The quantized forms of tiny-llama-F32.gguf, made on first use.
pub const QUANTIZED: [&str; 14] = [
    "BF16", "F16", "IQ4_NL", "IQ4_XS", "Q2_K", "Q3_K_M", "Q4_0", "Q4_1", "Q4_K_M", "Q5_0", "Q5_1",
    "Q5_K_M", "Q6_K", "Q8_0",
];

pub fn synthetic_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = if root.join("engine").is_dir() {
        root.join("engine")
    } else {
        root.to_path_buf()
    };
    engine.join("tests/fixtures/synthetic")
}

/// The path of synthetic model `file` (e.g. "tiny-llama-Q4_0.gguf"), made first
/// if it is a quantized tiny-llama. Panics with the file's name if it is
/// missing or not the pinned file.
pub fn synthetic(file: &str) -> PathBuf {
    let path = synthetic_dir().join(file);
    let ty = file
        .strip_prefix("tiny-llama-")
        .and_then(|s| s.strip_suffix(".gguf"));
    match ty {
        Some(ty) if QUANTIZED.contains(&ty) => {
            ensure(ty);
        }
        _ => assert!(
            path.is_file(),
            "{} is missing: it is committed in engine/tests/fixtures/synthetic",
            path.display()
        ),
    }
    path
}

/// Makes every quantized tiny-llama file (for tests that read the whole dir).
pub fn ensure_all() {
    for ty in QUANTIZED {
        ensure(ty);
    }
}

/// The sha256 of llama-quantize's tiny-llama-`ty`.gguf, from SHA256SUMS.
pub fn pinned_sha256(ty: &str) -> String {
    let sums = synthetic_dir().join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", sums.display()));
    let name = format!("tiny-llama-{ty}.gguf");
    text.lines()
        .find_map(|l| {
            let (hash, file) = l.split_once("  ")?;
            (file.trim() == name).then(|| hash.to_string())
        })
        .unwrap_or_else(|| panic!("{name} has no line in {}", sums.display()))
}

/// Quantizes tiny-llama-F32.gguf to `ty` at `out` (owl's quantizer, default options).
pub fn quantize_to(ty: &str, out: &Path) {
    let src_path = synthetic_dir().join("tiny-llama-F32.gguf");
    let src =
        Gguf::open(&src_path).unwrap_or_else(|e| panic!("cannot open {}: {e}", src_path.display()));
    let target = Target::parse(ty).unwrap_or_else(|e| panic!("{ty}: {e}"));
    let plan = quantize::plan(&src, target, false).unwrap_or_else(|e| panic!("{ty}: {e}"));
    quantize::write(&src, &plan, out, None, |_| {})
        .unwrap_or_else(|e| panic!("quantizing to {}: {e}", out.display()));
}

fn sha256(path: &Path) -> String {
    owl_engine::registry::sha256_file_hex(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn ensure(ty: &str) -> PathBuf {
    let path = synthetic_dir().join(format!("tiny-llama-{ty}.gguf"));
    let want = pinned_sha256(ty);
    if !path.is_file() {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("gguf.{}.{n}.tmp", std::process::id()));
        quantize_to(ty, &tmp);
        let got = sha256(&tmp);
        if got != want {
            let _ = std::fs::remove_file(&tmp);
            panic!(
                "owl quantized tiny-llama-F32.gguf to {ty} with sha256 {got}, but llama-quantize's \
                 tiny-llama-{ty}.gguf is {want} (engine/tests/fixtures/synthetic/SHA256SUMS)"
            );
        }
        std::fs::rename(&tmp, &path).unwrap_or_else(|e| {
            panic!("cannot rename {} to {}: {e}", tmp.display(), path.display())
        });
    }
    if let Err(e) = verify(&path, ty) {
        panic!("{e}: delete it and it is made again");
    }
    path
}

/// Whether `path` is llama-quantize's tiny-llama-`ty`.gguf by its pinned sha256;
/// the error names the file and both hashes.
pub fn verify(path: &Path, ty: &str) -> Result<(), String> {
    let (got, want) = (sha256(path), pinned_sha256(ty));
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{} is not llama-quantize's tiny-llama-{ty}.gguf: sha256 {got}, SHA256SUMS pins {want}",
            path.display()
        ))
    }
}
