//! `owl bench`: llama-bench's two figures through the Engine service —
//! pp (a prompt of p tokens in one batch) and tg (n tokens one at a time),
//! mean ± standard deviation over r repetitions after a warm-up.
//!
//! `--json-schema FILE` draws every tg token under the schema's llguidance mask,
//! exactly as a `response_format` request is served (the mask computed and applied
//! in the worker before sampling, the token fed to the matcher after). When the
//! schema's value is complete (or the model takes the end token where it may), the
//! matcher restarts, so tg runs all its n tokens constrained.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use owl_engine::constrain::{Constraint, Grammar};
use owl_engine::{Engine, Event, Prompt, Request, SamplingParams, Timings};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model name from models.lock or a path to a .gguf file.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Prompt tokens for the pp test (0: skip).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens for the tg test (0: skip).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output: md (table) or json (llama-bench's field names).
    #[arg(short = 'o', long, default_value = "md")]
    pub output: String,
    /// Constrain tg to this JSON Schema (a file): the cost of the grammar's mask.
    #[arg(long = "json-schema", value_name = "FILE")]
    pub json_schema: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct TestResult {
    model_filename: String,
    model_type: String,
    backends: String,
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
    /// The schema file tg was constrained to (`--json-schema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<String>,
    /// Mean grammar time per generated token, ms (masks and matcher advances).
    #[serde(skip_serializing_if = "Option::is_none")]
    mask_ms_per_token: Option<f64>,
}

fn run_once(engine: &Engine, tokens: Vec<u32>, n_gen: usize, constraint: Option<&Constraint>) -> Result<(Timings, usize)> {
    let mut req = Request::new(Prompt::Tokens(tokens));
    req.max_tokens = Some(n_gen.max(1));
    req.stop_at_eog = false;
    req.sampling = SamplingParams::greedy();
    req.constraint = constraint.cloned();
    let mut h = engine.submit(req)?;
    while let Some(ev) = h.next_blocking() {
        match ev {
            Event::Done { timings, usage, .. } => return Ok((timings, usage.completion_tokens)),
            Event::Error(e) => bail!("{e}"),
            _ => {}
        }
    }
    bail!("the engine stopped unexpectedly")
}

/// Distinct pseudo-random prompt per repetition so the prefix cache never helps.
fn prompt(n: usize, rep: usize, n_vocab: usize) -> Vec<u32> {
    let mut rng = owl_engine::sampler::Rng::new(0x0_0c1_u64.wrapping_add(rep as u64 * 7919));
    (0..n).map(|_| 100 + (rng.next_u64() % (n_vocab as u64 - 200)) as u32).collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 } else { 0.0 };
    (m, var.sqrt())
}

pub fn cmd_bench(a: BenchArgs) -> Result<ExitCode> {
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    if a.output != "md" && a.output != "json" {
        bail!("-o must be md or json");
    }
    let constraint = match &a.json_schema {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read the JSON schema {}", p.display()))?;
            let schema: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
            let mut c = Constraint::new(Grammar::JsonSchema(schema));
            c.repeat = true;
            Some(c)
        }
        None => None,
    };
    let ctx = (a.n_prompt + a.n_gen + 16).max(256);
    let cfg = crate::run::engine_config(a.model.as_deref(), &a.device, ctx, a.threads, 1, None)?;
    let engine = Engine::start(cfg)?;
    let info = engine.info().clone();
    let mut results = Vec::new();
    let mut tests = Vec::new();
    if a.n_prompt > 0 {
        tests.push((a.n_prompt, 0));
    }
    if a.n_gen > 0 {
        tests.push((0, a.n_gen));
    }
    for (np, ng) in tests {
        // Warm-up, then r measured runs.
        let mut samples = Vec::new();
        let (mut mask_ms, mut n_tokens) = (0.0, 0);
        for rep in 0..=a.reps {
            let t = if np > 0 {
                let (t, _) = run_once(&engine, prompt(np, rep, info.n_vocab), 1, None)?;
                np as f64 / (t.prompt_ms / 1e3)
            } else {
                let (t, n) = run_once(&engine, prompt(1, rep, info.n_vocab), ng + 1, constraint.as_ref())?;
                if rep > 0 {
                    mask_ms += t.constrain_ms;
                    n_tokens += n;
                }
                t.gen_tps
            };
            if rep > 0 {
                samples.push(t);
            }
        }
        let constrained = np == 0 && constraint.is_some();
        let (avg, sd) = mean_sd(&samples);
        results.push(TestResult {
            model_filename: info.path.display().to_string(),
            model_type: format!("{} {}", info.arch, info.quant),
            backends: info.device.clone(),
            n_threads: info.threads,
            n_prompt: np,
            n_gen: ng,
            avg_ts: avg,
            stddev_ts: sd,
            samples_ts: samples,
            json_schema: a.json_schema.as_ref().filter(|_| constrained).map(|p| p.display().to_string()),
            mask_ms_per_token: constrained.then(|| mask_ms / n_tokens.max(1) as f64),
        });
    }
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("| model | backend | threads | test | t/s |");
        println!("| --- | --- | ---: | ---: | ---: |");
        for r in &results {
            let mut test = if r.n_prompt > 0 { format!("pp{}", r.n_prompt) } else { format!("tg{}", r.n_gen) };
            if let Some(ms) = r.mask_ms_per_token {
                test.push_str(&format!(" json-schema (mask {ms:.3} ms/token)"));
            }
            println!("| {} | {} | {} | {} | {:.2} ± {:.2} |", r.model_type, r.backends, r.n_threads, test, r.avg_ts, r.stddev_ts);
        }
    }
    Ok(ExitCode::SUCCESS)
}
