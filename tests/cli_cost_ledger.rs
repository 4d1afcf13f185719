//! `owl cost` over a ledger: the summary, its groups and re-pricing on another baseline,
//! break-even defaults from the ledger's measurements, and `owl cost estimate` from the
//! ledger's throughput (or a short bench run of smollm2-135m-instruct when it is empty).

use std::path::Path;
use std::process::{Command, Output};

fn owl_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(args)
        .env("OWL_HOME", home)
        .env_remove("OWL_PRICES")
        .output()
        .unwrap()
}

fn json_in(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = owl_in(home, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Two records a day apart: (unix time, model, client, prompt, completion, busy seconds, cost).
fn write_ledger(home: &Path, now: f64) {
    let dir = home.join("ledger");
    std::fs::create_dir_all(&dir).unwrap();
    let rows = [
        (
            now - 86_400.0,
            "smollm2-135m-instruct",
            "alice",
            1_000_000u64,
            1_000_000u64,
            1000.0,
            0.0068,
        ),
        (now - 60.0, "qwen", "bob", 300_000, 100_000, 200.0, 0.00136),
    ];
    let mut text = String::new();
    for (t, model, client, p, c, busy, cost) in rows {
        let baseline = (p as f64 * 0.40 + c as f64 * 1.60) / 1e6;
        text.push_str(
            &serde_json::json!({
                "time": t, "source": "server", "model": model, "client": client, "prompt_tokens": p,
                "cached_tokens": 0, "completion_tokens": c, "prefill_s": busy / 2.0, "decode_s": busy / 2.0,
                "cost_usd": cost, "baseline_model": "gpt-4.1-mini", "baseline_usd": baseline, "savings_usd": baseline - cost,
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(dir.join("ledger.jsonl"), text).unwrap();
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_summary_sums_groups_and_reprices_the_ledger() {
    let home = tempfile::tempdir().unwrap();
    write_ledger(home.path(), now());
    let v = json_in(
        home.path(),
        &["cost", "--since", "all", "--by", "client", "-o", "json"],
    );
    let t = &v["totals"];
    assert_eq!(t["requests"], 2);
    assert_eq!(t["total_tokens"], 2_400_000);
    assert!((t["cost_usd"].as_f64().unwrap() - 0.00816).abs() < 1e-12);
    // gpt-4.1-mini on the same tokens: 1.3M x $0.40 + 1.1M x $1.60 per 1M = $2.28.
    assert!((t["baseline_usd"].as_f64().unwrap() - 2.28).abs() < 1e-9);
    assert!((t["local_per_1m"].as_f64().unwrap() - 0.0034).abs() < 1e-12);
    let keys: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["alice", "bob"]);
    // The last hour holds only bob's request.
    let v = json_in(home.path(), &["cost", "--since", "1h", "-o", "json"]);
    assert_eq!(v["totals"]["requests"], 1);
    // Golden: gpt-4.1 prices 1M input + 1M output tokens at $10.00.
    let v = json_in(
        home.path(),
        &[
            "cost",
            "--since",
            "all",
            "--by",
            "model",
            "--baseline",
            "gpt-4.1",
            "-o",
            "json",
        ],
    );
    let smol = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "smollm2-135m-instruct")
        .unwrap()
        .clone();
    assert!(
        (smol["baseline_usd"].as_f64().unwrap() - 10.0).abs() < 1e-9,
        "{smol}"
    );
    assert_eq!(v["baseline_model"], "gpt-4.1");
    let md = owl_in(home.path(), &["cost", "--since", "all", "--by", "day"]);
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.status.success() && text.contains("| total") && text.contains("gpt-4.1-mini"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("| 20")).count(),
        2,
        "{text}"
    );
}

#[test]
fn breakeven_takes_its_local_price_and_mix_from_the_ledger() {
    let home = tempfile::tempdir().unwrap();
    write_ledger(home.path(), now());
    let v = json_in(
        home.path(),
        &["cost", "breakeven", "--fixed-monthly", "3000", "-o", "json"],
    );
    let inputs = &v["inputs"];
    // 2.4M tokens in 1200 busy s: 2000 tok/s; 1.3M of 2.4M are prompt tokens.
    assert_eq!(inputs["tokens_per_second"]["value"], 2000.0);
    assert!(
        inputs["tokens_per_second"]["from"]
            .as_str()
            .unwrap()
            .starts_with("the ledger"),
        "{inputs}"
    );
    assert!((inputs["input_share"]["value"].as_f64().unwrap() - 1.3 / 2.4).abs() < 1e-6);
    assert!(inputs["input_share"]["from"]
        .as_str()
        .unwrap()
        .starts_with("the ledger"));
    // local: $0.0245/h / 2000 tok/s = $0.0034 per 1M.
    assert!((v["local_per_1m"].as_f64().unwrap() - 0.0245 / 3600.0 / 2000.0 * 1e6).abs() < 1e-12);
    // Flags still win, and the golden figure stays.
    let v = json_in(
        home.path(),
        &[
            "cost",
            "breakeven",
            "--fixed-monthly",
            "3000",
            "--api-per-1m",
            "10",
            "--local-per-1m",
            "0.5",
            "-o",
            "json",
        ],
    );
    assert!(
        (v["breakeven_tokens_per_month"].as_f64().unwrap() - 315_789_473.684_210_5).abs() < 1e-3
    );
}

#[test]
fn estimate_from_the_ledger_prices_every_api_and_counts_machines() {
    let home = tempfile::tempdir().unwrap();
    write_ledger(home.path(), now());
    // 2000 tok/s busy: 2000 x 730.5 h x 3600 s = 5.26B tokens a month per machine.
    let v = json_in(
        home.path(),
        &[
            "cost",
            "estimate",
            "--tokens-per-month",
            "10000000000",
            "-o",
            "json",
        ],
    );
    assert_eq!(v["tokens_per_second"], 2000.0);
    assert_eq!(v["machines"], 2.0);
    let apis = v["apis"].as_array().unwrap();
    assert_eq!(apis.len(), 12);
    let share = 1.3 / 2.4;
    let gpt41 = apis.iter().find(|a| a["model"] == "gpt-4.1").unwrap();
    assert!(
        (gpt41["monthly_usd"].as_f64().unwrap() - (share * 2.0 + (1.0 - share) * 8.0) * 10_000.0)
            .abs()
            < 1e-6
    );
    // Owning: 2 machines x $0.02/h x 730.5 h + energy for 5M busy seconds at 30 W and $0.15/kWh.
    let energy = 1e10 / 2000.0 / 3600.0 * 0.030 * 0.15;
    assert!(
        (v["owning_monthly_usd"]["total"].as_f64().unwrap() - (2.0 * 0.02 * 730.5 + energy)).abs()
            < 1e-9
    );
    let md = owl_in(
        home.path(),
        &["cost", "estimate", "--tokens-per-month", "1e9"],
    );
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.status.success() && text.contains("needs 1 machine like it") && text.contains("| o1"),
        "{text}"
    );
}

#[test]
fn estimate_on_an_empty_ledger_measures_a_short_bench_run() {
    let home = tempfile::tempdir().unwrap();
    let real = std::env::var_os("OWL_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .filter(|p| p.is_absolute());
            cache
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
                })
                .join("owl")
        });
    std::os::unix::fs::symlink(real.join("models"), home.path().join("models")).unwrap();
    let v = json_in(
        home.path(),
        &[
            "cost",
            "estimate",
            "--tokens-per-month",
            "1000000",
            "--model",
            "smollm2-135m-instruct",
            "-o",
            "json",
        ],
    );
    let tps = v["tokens_per_second"].as_f64().unwrap();
    assert!(tps > 10.0, "{v}");
    assert!(
        v["inputs"]["tokens_per_busy_second"]["from"]
            .as_str()
            .unwrap()
            .starts_with("a bench run of smollm2-135m-instruct"),
        "{v}"
    );
    assert!(
        !home.path().join("ledger").exists(),
        "a bench run is not a request served"
    );
}

#[test]
fn by_route_groups_routed_records_and_reads_lines_from_before_routing() {
    let home = tempfile::tempdir().unwrap();
    let t = now();
    // write_ledger's two lines have no routing fields (written before routing existed).
    write_ledger(home.path(), t);
    let routed = [
        serde_json::json!({
            "time": t - 30.0, "source": "server", "model": "smollm2-135m-instruct", "client": "local",
            "prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 5, "prefill_s": 0.1, "decode_s": 0.2,
            "cost_usd": 0.001, "baseline_model": "gpt-4.1-mini", "baseline_usd": 0.004, "savings_usd": 0.003,
            "route": "local", "reason": "confident", "probe_score": 0.9,
        }),
        serde_json::json!({
            "time": t - 20.0, "source": "server", "model": "qwen", "client": "local",
            "prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 5, "prefill_s": 0.1, "decode_s": 0.2,
            "cost_usd": 0.251, "baseline_model": "gpt-4.1-mini", "baseline_usd": 0.004, "savings_usd": -0.247,
            "route": "upstream", "reason": "low_confidence", "probe_score": 0.1, "upstream": "big", "upstream_usd": 0.25,
        }),
    ];
    let path = home.path().join("ledger").join("ledger.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for r in routed {
        text.push_str(&format!("{r}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let out = owl_in(
        home.path(),
        &["cost", "--since", "all", "--by", "route", "-o", "json"],
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups: Vec<(String, u64, f64)> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                g["requests"].as_u64().unwrap(),
                g["upstream_usd"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("local".to_string(), 2, 0.0),
            ("local/confident".to_string(), 1, 0.0),
            ("upstream:big/low_confidence".to_string(), 1, 0.25),
        ]
    );
    assert_eq!(v["totals"]["requests"], 4);
    assert!((v["totals"]["upstream_usd"].as_f64().unwrap() - 0.25).abs() < 1e-12);
    let md = owl_in(home.path(), &["cost", "--since", "all", "--by", "route"]);
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(
        text.contains("upstream $") && text.contains("| upstream:big/low_confidence"),
        "{text}"
    );
}

#[test]
fn route_calibrate_sets_the_threshold_from_the_ledgers_probe_scores() {
    let home = tempfile::tempdir().unwrap();
    let err = |args: &[&str]| {
        let o = owl_in(home.path(), args);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let cal = ["route", "calibrate", "--escalate", "0.2", "--from-ledger"];
    assert!(err(&cal).contains("no probe scores"));
    assert!(
        err(&["route", "calibrate", "--escalate", "2", "--from-ledger"])
            .contains("between 0 and 1")
    );
    let dir = home.path().join("ledger");
    std::fs::create_dir_all(&dir).unwrap();
    let t = now();
    let mut text = String::new();
    for i in 1..=10 {
        text.push_str(&format!(
            "{}\n",
            serde_json::json!({
                "time": t - 10.0, "source": "server", "model": "m", "client": "local", "prompt_tokens": 1,
                "cached_tokens": 0, "completion_tokens": 1, "prefill_s": 0.0, "decode_s": 0.0, "cost_usd": 0.0,
                "baseline_model": "gpt-4.1-mini", "baseline_usd": 0.0, "savings_usd": 0.0,
                "route": "local", "reason": "confident", "probe_score": i as f64 / 10.0,
            })
        ));
    }
    std::fs::write(dir.join("ledger.jsonl"), text).unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(&cfg, "[cost]\nwatts = 45\n").unwrap();
    let o = owl_in(home.path(), &cal);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 of 10 probed requests"));
    let written = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(written, "[cost]\nwatts = 45\n\n[route]\nthreshold = 0.25\n");
    // Again with another share: the line is replaced, nothing else changes.
    let o = owl_in(
        home.path(),
        &["route", "calibrate", "--escalate", "0.5", "--from-ledger"],
    );
    assert!(o.status.success());
    let written = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(written, "[cost]\nwatts = 45\n\n[route]\nthreshold = 0.55\n");
}
