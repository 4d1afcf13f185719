//! `owl route eval`: quality, cost and share escalated of a routing `owl serve`,
//! each prompt asked three ways: `x-owl-route: local`, `x-owl-route: upstream`, and
//! routed by the server's policy (no header). Cost is what the server charged
//! (`usage.owl.cost_usd`, the ledger record of each answer).
//!
//! An answer passes when, for a numeric reference, the last number in it equals the
//! reference, and otherwise when it contains the reference (ignoring case).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cost::{print_md, usd};

/// The built-in evaluation set (eval/route_eval.jsonl).
const BUILTIN: &str = include_str!("../eval/route_eval.jsonl");

#[derive(clap::Args)]
pub struct EvalArgs {
    /// JSONL, one {"messages": [...], "answer": "..."} a line (default: the built-in set).
    file: Option<PathBuf>,
    /// The routing server's base URL (owl serve with --upstream; a server with keys
    /// takes $OWL_API_KEY).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Output: md (table) or json.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
    output: String,
}

struct Item {
    messages: Value,
    answer: String,
}

fn items(a: &EvalArgs) -> Result<(String, Vec<Item>)> {
    let (name, text) = match &a.file {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => ("the built-in set".to_string(), BUILTIN.to_string()),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{name}:{}: not JSON", i + 1))?;
        match (v["messages"].is_array(), v["answer"].as_str()) {
            (true, Some(ans)) => out.push(Item {
                messages: v["messages"].clone(),
                answer: ans.to_string(),
            }),
            _ => bail!(
                "{name}:{}: each line needs \"messages\" (an array) and \"answer\" (a string)",
                i + 1
            ),
        }
    }
    if out.is_empty() {
        bail!("{name} has no prompts");
    }
    Ok((name, out))
}

/// Numbers in `s`, as written (digits with an optional fraction; commas between digits dropped).
fn numbers(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let cs: Vec<char> = s.chars().collect();
    for (i, &c) in cs.iter().enumerate() {
        let next_digit = cs.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c.is_ascii_digit() || (!cur.is_empty() && (c == '.' || c == ',') && next_digit) {
            if c != ',' {
                cur.push(c);
            }
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether `reply` answers `reference` (see the module doc).
pub fn passes(reply: &str, reference: &str) -> bool {
    let r = reference.trim();
    if !r.is_empty() && r.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let norm = |x: &str| x.parse::<f64>().ok();
        return numbers(reply).last().and_then(|n| norm(n)) == norm(r);
    }
    reply.to_lowercase().contains(&r.to_lowercase())
}

/// One POST to `{base}/v1/chat/completions`: the answer's JSON and its headers.
fn post(
    base: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<(Value, Vec<(String, String)>)> {
    let rest = base
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url {base:?} must start with http://"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches("/v1")),
        None => (rest, ""),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = TcpStream::connect(&addr)
        .with_context(|| format!("cannot connect to {base}: is owl serve running there?"))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let payload = body.to_string();
    let mut req = format!(
        "POST {prefix}/v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        payload.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(payload.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{base} sent no HTTP answer"))?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    let hs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if hs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        bail!("{base} answered in chunks; owl route eval reads owl serve's plain JSON answers");
    }
    let v: Value = serde_json::from_str(body)
        .with_context(|| format!("{base} answered {status:?} with a body that is not JSON"))?;
    if !status.contains(" 200") {
        bail!(
            "{base} answered {status}: {}",
            v["error"]["message"].as_str().unwrap_or(body)
        );
    }
    Ok((v, hs))
}

#[derive(Default)]
struct Row {
    passed: usize,
    escalated: usize,
    cost: f64,
    baseline: f64,
}

pub fn cmd_eval(a: &EvalArgs) -> Result<ExitCode> {
    let (name, items) = items(a)?;
    // A server with keys: its key from the environment, never from the command line.
    let auth = std::env::var("OWL_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(|k| format!("Bearer {k}"));
    let modes: [(&str, Option<&str>); 3] = [
        ("local only", Some("local")),
        ("upstream only", Some("upstream")),
        ("routed", None),
    ];
    let mut rows = Vec::new();
    for (mode, route) in modes {
        let mut row = Row::default();
        for it in &items {
            let body =
                json!({"messages": it.messages, "max_tokens": a.max_tokens, "temperature": 0});
            let mut hs: Vec<(&str, &str)> = Vec::new();
            if let Some(r) = route {
                hs.push(("x-owl-route", r));
            }
            if let Some(k) = &auth {
                hs.push(("authorization", k));
            }
            let (v, headers) = post(&a.url, &body, &hs)?;
            let reply = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
            row.passed += usize::from(passes(reply, &it.answer));
            let went = headers
                .iter()
                .find(|(k, _)| k == "x-owl-route")
                .map(|(_, v)| v.as_str());
            if went.is_none() {
                bail!(
                    "{} did not say how it routed (no x-owl-route header): is it an owl serve?",
                    a.url
                );
            }
            row.escalated += usize::from(went == Some("upstream"));
            row.cost += v["usage"]["owl"]["cost_usd"].as_f64().unwrap_or(0.0);
            row.baseline += v["usage"]["owl"]["baseline_usd"].as_f64().unwrap_or(0.0);
        }
        rows.push((mode, row));
    }
    let n = items.len();
    if a.output == "json" {
        let doc = json!({
            "prompts": name, "items": n, "url": a.url, "max_tokens": a.max_tokens,
            "modes": rows.iter().map(|(m, r)| json!({
                "mode": m, "passed": r.passed, "quality": r.passed as f64 / n as f64,
                "escalated": r.escalated as f64 / n as f64, "cost_usd": r.cost, "baseline_usd": r.baseline,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{n} prompts from {name} through {} (max_tokens {}, temperature 0)\n",
        a.url, a.max_tokens
    );
    print_md(
        &[
            "mode",
            "passed",
            "quality",
            "escalated",
            "cost $",
            "baseline $",
        ],
        rows.iter().map(|(m, r)| {
            vec![
                m.to_string(),
                format!("{}/{n}", r.passed),
                format!("{:.1}%", 100.0 * r.passed as f64 / n as f64),
                format!("{:.1}%", 100.0 * r.escalated as f64 / n as f64),
                usd(r.cost),
                usd(r.baseline),
            ]
        }),
    );
    println!("\npassed: the last number equals a numeric reference, else the reference appears (any case); cost: what the server charged (usage.owl)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn numeric_references_match_the_last_number_and_words_appear() {
        assert!(passes("7 + 5 = 12", "12"));
        assert!(!passes("12 is wrong, it is 13", "12"));
        assert!(!passes("117", "17"));
        assert!(passes("It costs 1,000 dollars: 1,000", "1000"));
        assert!(passes("The answer is 150.", "150"));
        assert!(passes("The capital is paris.", "Paris"));
        assert!(!passes("Lyon", "Paris"));
        assert!(
            super::items(&super::EvalArgs {
                file: None,
                url: String::new(),
                max_tokens: 1,
                output: "md".into()
            })
            .unwrap()
            .1
            .len()
                >= 50
        );
    }
}
