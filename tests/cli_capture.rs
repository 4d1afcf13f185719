//! `owl capture stats` and `owl capture export` over a capture file in the shape
//! `owl serve --capture` writes (tests/py/test_route.py checks the server writes it).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

fn owl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(args)
        .output()
        .unwrap()
}

fn record(user: &str, answer: &str, reason: &str, draft: Option<&str>) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!", "weight": 0},
            {"role": "user", "content": user}, {"role": "assistant", "content": answer, "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
        "metadata": {"id": "chatcmpl-1", "time": 1.0, "teacher": "qwen", "reason": reason, "probe_score": 0.2,
                     "usage": {"prompt_tokens": 20, "completion_tokens": 3}, "local_draft": draft},
    })
}

fn write(dir: &Path) -> (std::path::PathBuf, Vec<Value>) {
    let recs = vec![
        record("2+2?", "4", "low_confidence", Some("5")),
        record("2+2?", "Four.", "low_confidence", Some("22")),
        record("Capital of France?", "Paris.", "header", None),
    ];
    let p = dir.join("cap.jsonl");
    let text: String = recs.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&p, text).unwrap();
    (p, recs)
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn stats_count_records_tokens_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write(dir.path());
    let out = owl(&["capture", "stats", p.to_str().unwrap(), "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records"], 3);
    assert_eq!(
        (&v["prompt_tokens"], &v["completion_tokens"]),
        (&json!(60), &json!(9))
    );
    assert_eq!(v["by_reason"], json!({"header": 1, "low_confidence": 2}));
    assert_eq!(v["with_local_draft"], 2);
    let md = owl(&["capture", "stats", p.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&md.stdout);
    let row = |l: &str| -> Vec<String> {
        l.split('|')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert!(
        text.lines()
            .any(|l| row(l) == ["reason", "low_confidence", "2"]),
        "{text}"
    );
}

#[test]
fn export_round_trips_the_conversations_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let (p, recs) = write(dir.path());
    let openai = lines(&owl(&["capture", "export", p.to_str().unwrap()]));
    assert_eq!(openai.len(), 3);
    for (e, r) in openai.iter().zip(&recs) {
        // messages (weights kept) and tools, nothing of the metadata.
        assert_eq!(e, &json!({"messages": r["messages"], "tools": r["tools"]}));
    }
    let out = dir.path().join("trl.jsonl");
    let o = owl(&[
        "capture",
        "export",
        p.to_str().unwrap(),
        "--format",
        "trl",
        "--dedupe",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("exported 2 of 3"));
    let trl: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trl.len(), 2);
    assert_eq!(
        trl[0]["completion"],
        json!([{"role": "assistant", "content": "4"}])
    );
    assert_eq!(trl[0]["prompt"].as_array().unwrap().len(), 4);
    assert_eq!(
        trl[0]["prompt"][2],
        json!({"role": "assistant", "content": "Hello!"})
    );
    assert_eq!(trl[1]["completion"][0]["content"], "Paris.");
}

#[test]
fn min_weight_leaves_out_answers_marked_down_in_review() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mut recs) = write(dir.path());
    // A reviewer marked the second answer bad; the third has no weight (it counts as 1).
    recs[1]["messages"][4]["weight"] = json!(0);
    recs[2]["messages"][4]
        .as_object_mut()
        .unwrap()
        .remove("weight");
    let text: String = recs.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&p, text).unwrap();
    let file = p.to_str().unwrap();
    let kept = lines(&owl(&["capture", "export", file, "--min-weight", "1"]));
    let answers: Vec<&Value> = kept.iter().map(|k| &k["messages"][4]["content"]).collect();
    assert_eq!(answers, [&json!("4"), &json!("Paris.")]);
    assert_eq!(kept[0]["messages"], recs[0]["messages"]);
    assert_eq!(lines(&owl(&["capture", "export", file])).len(), 3);
    let trl = lines(&owl(&[
        "capture",
        "export",
        file,
        "--format",
        "trl",
        "--min-weight",
        "0.5",
    ]));
    assert_eq!(trl.len(), 2);
    let o = owl(&["capture", "export", file, "--min-weight", "NaN"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--min-weight"));
}

#[test]
fn completions_export_as_prompt_completion_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cap.jsonl");
    let meta = json!({"id": "cmpl-1", "time": 1.0, "teacher": "qwen", "reason": "header", "probe_score": null,
                      "usage": {"prompt_tokens": 5, "completion_tokens": 4}, "local_draft": null});
    let done = json!({"prompt": "def add(a, b):", "completion": " return a + b", "metadata": meta});
    let text = format!("{done}\n{}\n{done}\n", record("2+2?", "4", "header", None));
    std::fs::write(&p, text).unwrap();
    let file = p.to_str().unwrap();
    for format in ["openai", "trl"] {
        let out = lines(&owl(&[
            "capture", "export", file, "--format", format, "--dedupe",
        ]));
        assert_eq!(out.len(), 2, "{format}");
        assert_eq!(
            out[0],
            json!({"prompt": "def add(a, b):", "completion": " return a + b"})
        );
    }
    let v: Value =
        serde_json::from_slice(&owl(&["capture", "stats", file, "-o", "json"]).stdout).unwrap();
    assert_eq!(
        (&v["records"], &v["completion_tokens"]),
        (&json!(3), &json!(11))
    );
}

#[test]
fn a_bad_line_is_one_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        format!("{}\nnot json\n", record("a", "b", "header", None)),
    )
    .unwrap();
    let o = owl(&["capture", "export", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bad.jsonl:2"), "{err}");
    let o = owl(&["capture", "stats", "/nonexistent/cap.jsonl"]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("/nonexistent/cap.jsonl")
    );
}
