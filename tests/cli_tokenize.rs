//! `owl tokenize` end to end, through the built binary, against llama.cpp's
//! tokenization (engine/tests/fixtures/tokenizer/). The models come from the owl
//! model cache ($OWL_HOME/models, default ~/.cache/owl/models).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn model_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("OWL_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
            .join(".cache/owl/models"),
    };
    let path = dir.join(format!("{name}.gguf"));
    assert!(
        path.exists(),
        "model file {} is missing (`owl pull` fetches it)",
        path.display()
    );
    path
}

fn owl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run owl");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("owl output")
}

fn reference(name: &str) -> Vec<(String, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("engine/tests/fixtures/tokenizer/{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (v["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn json_ids(out: &Output) -> Vec<u32> {
    assert!(
        out.status.success(),
        "owl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON id array ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn tokenize_json_matches_llama_cpp() {
    for name in ["SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m"] {
        let path = model_path(name);
        let path = path.to_str().unwrap();
        for (text, want) in reference(name) {
            // As an argument...
            let got = json_ids(&owl(&["tokenize", "--model", path, "--json", &text], None));
            assert_eq!(got, want, "{name}: {text:?}");
            // ...and from stdin, byte for byte (a trailing newline is text too).
            let got = json_ids(&owl(
                &["tokenize", "--model", path, "--json", "-"],
                Some(text.as_bytes()),
            ));
            assert_eq!(got, want, "{name} (stdin): {text:?}");
        }
    }
}

#[test]
fn tokenize_plain_and_pieces_output() {
    let path = model_path("SmolLM2-135M-Instruct.Q4_1");
    let path = path.to_str().unwrap();
    let out = owl(&["tokenize", "-m", path, "Hello world"], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "19556 905\n");

    let out = owl(
        &[
            "tokenize",
            "-m",
            path,
            "--pieces",
            "<|im_start|>Hello world",
        ],
        None,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "      1 -> \"\"",
            "  19556 -> \"Hello\"",
            "    905 -> \" world\""
        ]
    );

    let with_newline = owl(
        &["tokenize", "-m", path, "--json", "-"],
        Some(b"Hello world\n"),
    );
    assert_eq!(json_ids(&with_newline), vec![19556, 905, 198]);
}

#[test]
fn tokenize_no_special_and_no_parse_special() {
    // Gemma 3 adds BOS (2): --no-special leaves it out.
    let gemma = model_path("gemma-3-270m-q4_k_m");
    let gemma = gemma.to_str().unwrap();
    let with = json_ids(&owl(&["tokenize", "-m", gemma, "--json", "Hello"], None));
    assert_eq!(with.first(), Some(&2));
    let without = json_ids(&owl(
        &["tokenize", "-m", gemma, "--json", "--no-special", "Hello"],
        None,
    ));
    assert_eq!(without, with[1..]);

    // --no-parse-special spells <|im_start|> (id 1) out as plain text.
    let smol = model_path("SmolLM2-135M-Instruct.Q4_1");
    let smol = smol.to_str().unwrap();
    let text = "<|im_start|>Hello";
    let parsed = json_ids(&owl(&["tokenize", "-m", smol, "--json", text], None));
    assert_eq!(parsed, [1, 19556]);
    let literal = json_ids(&owl(
        &["tokenize", "-m", smol, "--json", "--no-parse-special", text],
        None,
    ));
    assert!(!literal.contains(&1) && literal.len() > 2, "{literal:?}");
    assert_eq!(literal.last(), Some(&19556));
}

#[test]
fn tokenize_reports_errors_in_one_line() {
    let out = owl(&["tokenize", "--model", "/no/such/model.gguf", "hi"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let path = model_path("SmolLM2-135M-Instruct.Q4_1");
    let out = owl(
        &["tokenize", "--model", path.to_str().unwrap(), "-"],
        Some(b"\xff\xfe"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}
