//! `owl cost` end to end: the built binary prints the shipped price table and the
//! golden break-even, and a broken price file is one error line naming file and line.

use std::process::{Command, Output};

fn owl(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(args)
        .env("OWL_HOME", home.path()) // no config.toml: the defaults
        .env_remove("OWL_PRICES")
        .output()
        .unwrap()
}

fn stdout_json(args: &[&str]) -> serde_json::Value {
    let out = owl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cost_prices_json_lists_the_shipped_table() {
    let v = stdout_json(&["cost", "prices", "-o", "json"]);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 12);
    let get = |name: &str| {
        models
            .iter()
            .find(|m| m["model"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let m = get("gpt-4.1");
    assert_eq!(
        (m["input_per_1m"].as_f64(), m["output_per_1m"].as_f64()),
        (Some(2.0), Some(8.0))
    );
    assert_eq!(m["as_of"], "2025-05");
    assert_eq!(m["source"], "OpenAI API pricing page");
    assert!(m["cached_input_per_1m"].is_null());
    let m = get("gpt-4o");
    assert_eq!(
        (m["input_per_1m"].as_f64(), m["output_per_1m"].as_f64()),
        (Some(5.0), Some(15.0))
    );
    assert_eq!(m["as_of"], "2024-05");
    assert_eq!(
        get("claude-3.7-sonnet")["output_per_1m"].as_f64(),
        Some(15.0)
    );
    assert_eq!(get("gemini-2.0-flash")["input_per_1m"].as_f64(), Some(0.10));
    assert_eq!(v["prices_from"], "built-in ledger/prices.toml");
}

#[test]
fn cost_breakeven_golden_315_8m_tokens_a_month() {
    let args = [
        "cost",
        "breakeven",
        "--fixed-monthly",
        "3000",
        "--api-per-1m",
        "10",
        "--local-per-1m",
        "0.5",
    ];
    let out = owl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("break-even: 315.8M tokens/month"), "{text}");
    assert!(
        text.contains("| fixed_monthly_usd | 3000  | flag --fixed-monthly |"),
        "{text}"
    );

    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let v = stdout_json(&json_args);
    let t = v["breakeven_tokens_per_month"].as_f64().unwrap();
    assert!((t - 315_789_473.68).abs() < 1.0, "{t}");
    assert_eq!(v["inputs"]["local_per_1m"]["from"], "flag --local-per-1m");
    assert_eq!(v["saved_per_1m"].as_f64(), Some(9.5));
}

#[test]
fn cost_breakeven_from_the_baseline_and_no_breakeven() {
    // default baseline gpt-4.1-mini at 75% input: 0.75 x 0.40 + 0.25 x 1.60 = $0.70 per 1M
    let v = stdout_json(&[
        "cost",
        "breakeven",
        "--local-per-1m",
        "0.1",
        "--fixed-monthly",
        "60",
        "-o",
        "json",
    ]);
    assert!(
        (v["api_per_1m"].as_f64().unwrap() - 0.70).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["inputs"]["baseline"]["value"], "gpt-4.1-mini");
    assert_eq!(v["inputs"]["baseline"]["from"], "default");
    assert_eq!(v["inputs"]["input_share"]["from"], "default");
    assert!(
        (v["breakeven_tokens_per_month"].as_f64().unwrap() - 100e6).abs() < 1.0,
        "{v}"
    );

    let v = stdout_json(&[
        "cost",
        "breakeven",
        "--api-per-1m",
        "0.5",
        "--local-per-1m",
        "0.5",
        "--fixed-monthly",
        "1",
        "-o",
        "json",
    ]);
    assert!(v["breakeven_tokens_per_month"].is_null(), "{v}");
    assert!(
        v["summary"].as_str().unwrap().starts_with("no break-even"),
        "{v}"
    );
}

#[test]
fn a_broken_price_file_is_one_error_line_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prices.toml");
    std::fs::write(
        &p,
        "[models.m]\ninput_per_1m = 1.0\noutput_per_1m = 2.0\nas_of = \"2025-05\"\nsource = \"x\"\nsorce = \"y\"\n",
    )
    .unwrap();
    let out = owl(&["cost", "--prices", p.to_str().unwrap(), "prices"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {}:6:", p.display())),
        "{err}"
    );
    assert!(err.contains("sorce"), "{err}");
}
