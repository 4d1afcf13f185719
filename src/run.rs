//! `owl run`: one prompt in, the answer streamed to stdout, a summary on stderr.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use owl_engine::{ChatMessage, Engine, EngineConfig, Event, FinishReason, Prompt, Request, SamplingParams};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The prompt (`-` reads it from stdin).
    #[arg(allow_hyphen_values = true)]
    pub prompt: String,
    /// Model name from models.lock or a path to a .gguf file.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Skip the chat template: tokenize the prompt as llama.cpp does (BOS per metadata, special tokens parsed).
    #[arg(long)]
    pub raw: bool,
    /// System message (chat mode).
    #[arg(long)]
    pub system: Option<String>,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    pub n_predict: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// Context (KV cache) size in tokens.
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    /// cpu (wgpu and cuda answer "not available" until their backends land).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A Jinja chat template file overriding the model's.
    #[arg(long)]
    pub chat_template: Option<std::path::PathBuf>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub charge: crate::charge::ChargeArgs,
}

pub fn engine_config(model: Option<&str>, device: &str, ctx: usize, threads: Option<usize>, parallel: usize, template: Option<&std::path::Path>) -> Result<EngineConfig> {
    let chat_template = match template {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read the chat template {}", p.display()))?),
        None => None,
    };
    if ctx == 0 {
        bail!("--ctx must be at least 1");
    }
    Ok(EngineConfig {
        model: model.map(str::to_string).unwrap_or_else(|| owl_engine::registry::default_model().to_string()),
        device: device.to_string(),
        n_ctx: ctx,
        n_parallel: parallel,
        threads,
        chat_template,
        queue_capacity: 64,
        pull_if_missing: true,
    })
}

pub fn cmd_run(a: RunArgs) -> Result<ExitCode> {
    let text = if a.prompt == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("cannot read the prompt from stdin")?;
        s
    } else {
        a.prompt.clone()
    };
    let cfg = engine_config(a.model.as_deref(), &a.device, a.ctx, a.threads, 1, a.chat_template.as_deref())?;
    let charger = crate::charge::local_charger(&a.charge, &owl_engine::registry::cache_dir(), "run")?;
    let engine = Engine::start(cfg)?;
    let prompt = if a.raw {
        Prompt::Text(text)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage { role: "system".into(), content: s.clone() });
        }
        msgs.push(ChatMessage { role: "user".into(), content: text });
        Prompt::Chat(msgs)
    };
    let mut req = Request::new(prompt);
    req.max_tokens = Some(a.n_predict);
    req.stop_at_eog = !a.ignore_eos;
    req.sampling = SamplingParams { temperature: a.temp, top_k: a.top_k, top_p: a.top_p, min_p: a.min_p, repeat_penalty: a.repeat_penalty, seed: a.seed, ..Default::default() };
    let mut h = engine.submit(req)?;
    let mut out = std::io::stdout().lock();
    while let Some(ev) = h.next_blocking() {
        match ev {
            Event::Started { .. } => {}
            Event::Token { text, .. } => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            Event::Done { finish_reason, usage, timings, .. } => {
                writeln!(out)?;
                let why = match finish_reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                    FinishReason::Cancelled => "cancelled",
                };
                let served = owl_ledger::Served {
                    prompt_tokens: usage.prompt_tokens as u64,
                    cached_tokens: usage.cached_tokens as u64,
                    completion_tokens: usage.completion_tokens as u64,
                    prefill_s: timings.prefill_s,
                    decode_s: timings.decode_s,
                };
                let rec = charger.charge(&engine.info().name, "local", &served);
                eprintln!(
                    "owl: {} prompt tokens, {} generated ({why}); pp {:.1} t/s, tg {:.1} t/s [{}]; cost ${:.8} here, ${:.8} on {}",
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    timings.prompt_tps,
                    timings.gen_tps,
                    engine.info().device,
                    rec.cost_usd,
                    rec.baseline_usd,
                    rec.baseline_model,
                );
                return Ok(ExitCode::SUCCESS);
            }
            Event::Error(e) => bail!("{e}"),
        }
    }
    bail!("the engine stopped unexpectedly")
}
