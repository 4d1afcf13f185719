//! `owl capture stats FILE` and `owl capture export FILE`: what `owl serve --capture`
//! kept, counted, and turned into a clean fine-tuning dataset (OpenAI's chat format,
//! or TRL's conversational prompt/completion form). Captured `/v1/completions`
//! answers are `{"prompt", "completion"}` records and export as that in both formats.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cost::print_md;

#[derive(clap::Args)]
pub struct CaptureArgs {
    #[command(subcommand)]
    command: CaptureCommand,
}

#[derive(clap::Subcommand)]
enum CaptureCommand {
    /// Records, tokens, reasons and teachers in a capture file.
    Stats {
        file: PathBuf,
        /// Output: md (table) or json.
        #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
        output: String,
    },
    /// A clean dataset on stdout (or --out FILE): `openai` keeps `messages` (with weights)
    /// and `tools`; `trl` writes `prompt` (the conversation) and `completion` (the answer).
    Export {
        file: PathBuf,
        #[arg(long, default_value = "openai", value_parser = ["openai", "trl"])]
        format: String,
        /// Keep only the first record of each conversation (same messages before the answer).
        #[arg(long)]
        dedupe: bool,
        /// Leave out records whose answer's weight is under W (an answer without one weighs
        /// 1): mark a reviewed bad answer `"weight": 0` and export with --min-weight 1.
        #[arg(long, value_name = "W", default_value_t = 0.0)]
        min_weight: f64,
        /// Write here instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub fn cmd_capture(a: CaptureArgs) -> Result<ExitCode> {
    match a.command {
        CaptureCommand::Stats { file, output } => stats(&file, &output),
        CaptureCommand::Export {
            file,
            format,
            dedupe,
            min_weight,
            out,
        } => export(&file, &format, dedupe, min_weight, out.as_deref()),
    }
}

/// Every record of a capture file; a line that is not a record is an error naming it.
fn read(file: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read capture file {}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a JSON record (a capture file holds one a line)",
                file.display(),
                i + 1
            )
        })?;
        let ok = v["messages"]
            .as_array()
            .is_some_and(|m| m.last().is_some_and(|l| l["role"] == "assistant"))
            || (v["prompt"].is_string() && v["completion"].is_string());
        if !ok {
            bail!(
                "{}:{}: a record needs `messages` ending with the assistant's answer (or a `prompt` and a `completion`)",
                file.display(),
                i + 1
            );
        }
        out.push(v);
    }
    Ok(out)
}

fn stats(file: &Path, output: &str) -> Result<ExitCode> {
    let recs = read(file)?;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (mut prompt, mut completion) = (0, 0);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut teachers: BTreeMap<String, u64> = BTreeMap::new();
    let mut drafts = 0;
    for r in &recs {
        let m = &r["metadata"];
        prompt += n(&m["usage"]["prompt_tokens"]);
        completion += n(&m["usage"]["completion_tokens"]);
        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
        *reasons.entry(s(&m["reason"])).or_default() += 1;
        *teachers.entry(s(&m["teacher"])).or_default() += 1;
        drafts += u64::from(m["local_draft"].is_string());
    }
    if output == "json" {
        let doc = json!({
            "file": file.display().to_string(), "records": recs.len(), "prompt_tokens": prompt,
            "completion_tokens": completion, "with_local_draft": drafts, "by_reason": reasons, "by_teacher": teachers,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} · {} records · {prompt} prompt + {completion} completion tokens (the teacher's usage) · {drafts} with a local draft\n",
        file.display(),
        recs.len()
    );
    let rows = reasons
        .iter()
        .map(|(k, v)| vec!["reason".into(), k.clone(), v.to_string()])
        .chain(
            teachers
                .iter()
                .map(|(k, v)| vec!["teacher".into(), k.clone(), v.to_string()]),
        );
    print_md(&["by", "key", "records"], rows);
    Ok(ExitCode::SUCCESS)
}

fn export(
    file: &Path,
    format: &str,
    dedupe: bool,
    min_weight: f64,
    out: Option<&Path>,
) -> Result<ExitCode> {
    if !min_weight.is_finite() {
        bail!("--min-weight {min_weight}: must be a number (answers weigh 0 or 1)");
    }
    let recs = read(file)?;
    let mut seen = HashSet::new();
    let mut text = String::new();
    let mut kept = 0;
    for r in &recs {
        if r["prompt"].is_string() {
            // A completion: the same prompt/completion pair in both formats.
            if dedupe && !seen.insert(r["prompt"].to_string()) {
                continue;
            }
            let line = json!({"prompt": r["prompt"], "completion": r["completion"]});
            text.push_str(&line.to_string());
            text.push('\n');
            kept += 1;
            continue;
        }
        let messages = r["messages"].as_array().cloned().unwrap_or_default();
        let (answer, prompt) = messages.split_last().expect("read checked the answer");
        if answer["weight"].as_f64().unwrap_or(1.0) < min_weight {
            continue;
        }
        if dedupe && !seen.insert(Value::Array(prompt.to_vec()).to_string()) {
            continue;
        }
        let mut line = match format {
            "trl" => {
                // TRL's conversational prompt/completion: no weights, the answer alone.
                let strip = |m: &Value| {
                    let mut m = m.clone();
                    if let Some(o) = m.as_object_mut() {
                        o.remove("weight");
                    }
                    m
                };
                json!({"prompt": prompt.iter().map(strip).collect::<Vec<_>>(), "completion": [strip(answer)]})
            }
            _ => json!({"messages": messages}),
        };
        if let Some(t) = r.get("tools").filter(|t| !t.is_null()) {
            line["tools"] = t.clone();
        }
        text.push_str(&line.to_string());
        text.push('\n');
        kept += 1;
    }
    match out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    eprintln!(
        "owl: exported {kept} of {} records ({format}{}{})",
        recs.len(),
        if dedupe { ", deduplicated" } else { "" },
        if min_weight > 0.0 {
            format!(", answers of weight {min_weight} or more")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
