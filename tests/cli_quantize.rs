//! `owl quantize` from the command line: the written file equals llama-quantize's,
//! `--dry-run` prints the recipe and writes nothing, and every bad input is one
//! clear line with nothing left under the output name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../engine/tests/common/fixtures.rs"]
mod fixtures;

fn fixture(name: &str) -> PathBuf {
    fixtures::synthetic(name)
}

fn owl_quantize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owl"))
        .arg("quantize")
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file in `dir`, so a test can see that no temporary file was left behind.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn writes_llama_quantizes_bytes_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let o = owl_quantize(&[s(&fixture("tiny-llama-F32.gguf")), s(&out), "q4_k_m"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("wrote") && stdout.contains("Q4_K_M"),
        "{stdout}"
    );
    // llama-quantize's file, by its pinned sha256.
    assert_eq!(
        owl_engine::registry::sha256_file_hex(&out).unwrap(),
        fixtures::pinned_sha256("Q4_K_M")
    );
    assert_eq!(files_in(dir.path()), vec!["q.gguf".to_string()]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o644,
            "output mode {mode:o}, not the temp file's 0600"
        );
    }
}

#[test]
fn dry_run_prints_the_recipe_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let o = owl_quantize(&[
        s(&fixture("tiny-llama-F32.gguf")),
        s(&out),
        "Q4_K_M",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // tensor, shape (3 words), from, to, bytes
    assert_eq!(row("output.weight")[4..], ["F32", "Q6_K", "127680"]);
    assert_eq!(row("output_norm.weight")[2..], ["F32", "F32", "1024"]);
    assert_eq!(row("blk.0.ffn_down.weight")[5], "Q4_K");
    assert_eq!(row("blk.1.ffn_down.weight")[5], "Q6_K");
    assert_eq!(row("blk.1.attn_v.weight")[1..4], ["256", "x", "128"]);
    assert!(text.contains("general.file_type = 15"), "{text}");
    assert!(
        files_in(dir.path()).is_empty(),
        "--dry-run wrote {:?}",
        files_in(dir.path())
    );
}

/// Runs a failing quantize: one line on stderr containing every `want`, and
/// nothing in `dir` afterwards.
fn fails_cleanly(args: &[&str], dir: &Path, want: &[&str]) {
    let o = owl_quantize(args);
    assert!(!o.status.success(), "owl quantize {args:?} succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: `{w}` not in: {err}");
    }
    assert!(
        files_in(dir).is_empty(),
        "{args:?} left {:?}",
        files_in(dir)
    );
}

#[test]
fn bad_inputs_are_one_clear_line_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let f32 = fixture("tiny-llama-F32.gguf");
    fails_cleanly(
        &[s(&f32), s(&out), "Q4_K_X"],
        dir.path(),
        &["unknown quantization type `Q4_K_X`", "Q4_K_M"],
    );
    fails_cleanly(
        &[s(&dir.path().join("missing.gguf")), s(&out), "Q4_0"],
        dir.path(),
        &["missing.gguf"],
    );
    let nodir = dir.path().join("no/such/dir/q.gguf");
    fails_cleanly(
        &[s(&f32), s(&nodir), "Q4_0"],
        dir.path(),
        &["no/such/dir", "does not exist"],
    );
    fails_cleanly(
        &[s(&f32), s(&out), "Q4_0", "--split-max-size", "5K"],
        dir.path(),
        &["--split-max-size `5K`", "500M"],
    );
    fails_cleanly(
        &[s(&f32), s(&out), "Q4_0", "--output-tensor-type", "Q9"],
        dir.path(),
        &["--output-tensor-type `Q9`", "Q6_K"],
    );
    let q4 = fixture("tiny-llama-Q4_0.gguf");
    fails_cleanly(
        &[s(&q4), s(&out), "Q8_0"],
        dir.path(),
        &[
            "'output.weight' is already quantized (Q6_K)",
            "--allow-requantize",
        ],
    );
}

#[test]
fn allow_requantize_dequantizes_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let o = owl_quantize(&[
        s(&fixture("tiny-llama-Q8_0.gguf")),
        s(&out),
        "Q4_0",
        "--allow-requantize",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: requantizing"));
    let g = owl_engine::gguf::Gguf::open(&out).unwrap();
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ty, owl_quant::GgmlType::Q4_0);
    // Q8_0 -> Q4_0 of a tensor stays close to the Q4_0 made from the F32 original.
    let direct = owl_engine::gguf::Gguf::open(&fixture("tiny-llama-Q4_0.gguf")).unwrap();
    let deq = |g: &owl_engine::gguf::Gguf| {
        let t = g.tensor("blk.0.ffn_up.weight").unwrap();
        let mut v = vec![0f32; t.n_elements() as usize];
        owl_quant::dequantize(t.ty, g.tensor_data(t), &mut v).unwrap();
        v
    };
    let (a, b) = (deq(&g), deq(&direct));
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert!(
        rms(&diff) < 0.1 * rms(&b),
        "requantized weights drift: rms diff {} vs rms {}",
        rms(&diff),
        rms(&b)
    );
}
