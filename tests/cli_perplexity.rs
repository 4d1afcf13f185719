//! `owl perplexity` from the command line: on the first 8 chunks of 512 tokens of
//! the Devil's Dictionary, SmolLM2's and Gemma 3's perplexity equals
//! llama-perplexity's (tests/fixtures/text/perplexity-reference.json) within 0.5%,
//! and each bad input is one clear error line.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn text_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/text")
        .join(name)
}

fn owl_perplexity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owl"))
        .arg("perplexity")
        .args(args)
        .output()
        .unwrap()
}

fn reference(file: &str) -> Value {
    let p = text_fixture("perplexity-reference.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["models"][file].clone()
}

/// The running estimates `[1]x,[2]y,...` and the final `PPL = x +/- err` of owl's output.
fn parse(stdout: &str) -> (Vec<f64>, f64, f64) {
    let mut running = Vec::new();
    for (k, part) in stdout
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let (idx, v) = part
            .trim_start_matches('[')
            .split_once(']')
            .unwrap_or_else(|| panic!("{part:?} in {stdout}"));
        assert_eq!(idx.parse::<usize>().unwrap(), k + 1, "{stdout}");
        running.push(v.parse().unwrap());
    }
    let last = stdout
        .lines()
        .find(|l| l.starts_with("Final estimate: PPL = "))
        .unwrap_or_else(|| panic!("no final estimate in {stdout}"));
    let (ppl, err) = last
        .trim_start_matches("Final estimate: PPL = ")
        .split_once(" +/- ")
        .unwrap();
    (running, ppl.parse().unwrap(), err.parse().unwrap())
}

fn matches_llama_perplexity(name: &str, file: &str) {
    let text = text_fixture("devils-dictionary.txt");
    let o = owl_perplexity(&[
        "-m",
        name,
        "-f",
        text.to_str().unwrap(),
        "--ctx",
        "512",
        "--chunks",
        "8",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    let (running, ppl, err) = parse(&stdout);
    let r = reference(file);
    let want = r["ppl"].as_f64().unwrap();
    assert_eq!(running.len(), 8, "{stdout}");
    assert_eq!(
        running[7], ppl,
        "the last running estimate is the final one: {stdout}"
    );
    let rel = (ppl - want).abs() / want;
    eprintln!(
        "{name}: owl PPL {ppl:.4} +/- {err:.5}, llama-perplexity {want:.4} ({:.3}% apart)",
        rel * 100.0
    );
    assert!(
        rel < 0.005,
        "{name}: owl's PPL {ppl} is {:.3}% from llama-perplexity's {want}",
        rel * 100.0
    );
    let want_err = r["ppl_err"].as_f64().unwrap();
    assert!(
        (err - want_err).abs() / want_err < 0.01,
        "{name}: error {err} vs llama-perplexity's {want_err}"
    );
}

#[test]
fn smollm2_matches_llama_perplexity() {
    matches_llama_perplexity("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn gemma3_matches_llama_perplexity() {
    matches_llama_perplexity("gemma3-270m", "gemma-3-270m-q4_k_m.gguf");
}

/// A failed run: exit status not 0, nothing on stdout, and one `error:` line saying `what`.
fn one_error_line(o: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(what),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt");
    one_error_line(
        &owl_perplexity(&[
            "-m",
            "smollm2-135m-instruct",
            "-f",
            missing.to_str().unwrap(),
        ]),
        "cannot read the text",
    );

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Too short to measure anything on.\n").unwrap();
    let o = owl_perplexity(&[
        "-m",
        "smollm2-135m-instruct",
        "-f",
        short.to_str().unwrap(),
        "--ctx",
        "512",
    ]);
    one_error_line(&o, "needs at least 1024");

    // SmolLM2 was trained on 8192 tokens.
    let o = owl_perplexity(&[
        "-m",
        "smollm2-135m-instruct",
        "-f",
        short.to_str().unwrap(),
        "--ctx",
        "9000",
    ]);
    one_error_line(&o, "over the model's training context of 8192");

    std::fs::write(&short, [0xffu8, 0xfe, 0x00]).unwrap();
    one_error_line(
        &owl_perplexity(&["-m", "smollm2-135m-instruct", "-f", short.to_str().unwrap()]),
        "not UTF-8",
    );
}

/// The value after `label` in `--kl-divergence`'s report (`Mean    KLD:   0.001234 ± ...`).
fn stat(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in {report}"));
    line[label.len()..]
        .trim_start_matches([' ', ':'])
        .split([' ', '%'])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn kl_divergence_of_a_model_and_of_its_requant() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.kld");
    let (b, text) = (
        base.to_str().unwrap(),
        text_fixture("devils-dictionary.txt"),
    );
    // Steps of 128 tokens (4 a chunk) here; the comparisons below put both chunks in one step.
    let o = owl_perplexity(&[
        "-m",
        "smollm2-135m-instruct",
        "-f",
        text.to_str().unwrap(),
        "--chunks",
        "2",
        "-b",
        "128",
        "--kl-divergence-base",
        b,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, base_ppl, _) = parse(&String::from_utf8_lossy(&o.stdout));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["base.kld"],
        "the partial file was renamed, nothing else left"
    );

    let o = owl_perplexity(&[
        "-m",
        "smollm2-135m-instruct",
        "--kl-divergence",
        "--kl-divergence-base",
        b,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let same = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        (stat(&same, "Mean PPL(Q)") - base_ppl).abs() < 1e-3 * base_ppl,
        "the batch changed the numbers: {same}"
    );
    // The base's log-probs are kept in 16 bits: only that rounding separates a model from itself.
    assert!(
        (stat(&same, "Mean PPL(base)") - base_ppl).abs() < 1e-3 * base_ppl,
        "{same}"
    );
    assert!(stat(&same, "Maximum KLD").abs() < 1e-3, "{same}");
    assert!(stat(&same, "Same top p") > 99.5, "{same}");

    let q = dir.path().join("q4_0.gguf");
    let model = owl_engine::registry::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args([
            "quantize",
            model.to_str().unwrap(),
            q.to_str().unwrap(),
            "Q4_0",
            "--allow-requantize",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = owl_perplexity(&[
        "-m",
        q.to_str().unwrap(),
        "--kl-divergence",
        "--kl-divergence-base",
        b,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let req = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        (stat(&req, "Mean PPL(base)") - base_ppl).abs() < 1e-3 * base_ppl,
        "{req}"
    );
    let kld = stat(&req, "Mean    KLD");
    assert!(
        kld > 0.01 && kld < 2.0,
        "requantizing Q4_1 to Q4_0 costs something, not everything: {req}"
    );
    assert!(
        stat(&req, "Same top p") < 99.5 && stat(&req, "Same top p") > 50.0,
        "{req}"
    );
    assert!(stat(&req, "Mean PPL(Q)") > base_ppl, "{req}");

    // Another model's vocabulary: one line.
    one_error_line(
        &owl_perplexity(&[
            "-m",
            "gemma3-270m",
            "--kl-divergence",
            "--kl-divergence-base",
            b,
        ]),
        "compare quants of the same model",
    );
    std::fs::write(&base, b"_logits_").unwrap();
    one_error_line(
        &owl_perplexity(&[
            "-m",
            "smollm2-135m-instruct",
            "--kl-divergence",
            "--kl-divergence-base",
            b,
        ]),
        "too short to hold a header",
    );
}
