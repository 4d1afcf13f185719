//! `owl`: the command line. Each subcommand's handler is its own function.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

mod bench;
mod capture;
mod charge;
mod cost;
mod cost_report;
mod embed;
mod kld;
mod perplexity;
mod quantize;
mod route_cli;
mod route_eval;
mod route_probe;
mod run;
mod synth;
use clap::{Parser, Subcommand};
use owl_engine::gguf::Gguf;
use owl_engine::registry::{self, format_size, PullOptions, PullOutcome, Registry};

#[derive(Parser)]
#[command(
    name = "owl",
    version,
    about = "owl — own weights locally: a local-first LLM runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model from models.lock into the model cache (verified by size and sha256).
    Pull {
        /// Model name (default: the lock's default model).
        name: Option<String>,
    },
    /// List the models in models.lock and whether they are pulled.
    List,
    /// Remove a pulled model from the cache.
    Rm {
        /// Model name.
        name: String,
    },
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        /// Model name or path to a .gguf file.
        model: String,
        /// Show at most this many items of each array.
        #[arg(long, default_value_t = 8)]
        max_items: usize,
        /// Skip the tensor table.
        #[arg(long)]
        no_tensors: bool,
    },
    /// Generate text from a prompt (chat template applied unless --raw), streamed to stdout.
    Run(run::RunArgs),
    /// Chat with a model in the terminal (a line-by-line REPL when stdin or stdout is not a terminal).
    Chat(ChatArgs),
    /// OpenAI-compatible HTTP server (loopback only unless --host says otherwise).
    Serve(ServeArgs),
    /// Benchmark prompt processing (pp) and generation (tg) like llama-bench.
    Bench(bench::BenchArgs),
    /// Tokenize text with a model's tokenizer, exactly as llama.cpp does (BOS/EOS as
    /// the model asks, special-token texts such as <|im_start|> parsed; each can be
    /// turned off).
    Tokenize {
        /// Model name or path to a .gguf file (default: the lock's default model).
        #[arg(long, short)]
        model: Option<String>,
        /// Print a JSON array of token ids.
        #[arg(long)]
        json: bool,
        /// Show each token id with its piece of text.
        #[arg(long)]
        pieces: bool,
        /// Add no BOS/EOS (llama.cpp's add_special = false).
        #[arg(long)]
        no_special: bool,
        /// Tokenize special-token texts such as <|im_start|> as plain text
        /// (llama.cpp's parse_special = false).
        #[arg(long)]
        no_parse_special: bool,
        /// The text; `-` reads it from stdin, byte for byte.
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// Write a seeded random-weight model of an architecture (small test fixtures).
    Synth(synth::SynthArgs),
    /// List compute devices: the CPU and every wgpu adapter (name, API, limits, features).
    Devices,
    /// Embeddings of texts from an embedding model (default nomic-embed-text-v1.5): one JSON array a line.
    Embed(embed::EmbedArgs),
    /// What serving cost and saved (the ledger, `owl cost --by day`), API prices, break-even, estimates.
    Cost(cost::CostArgs),
    /// Rewrite a GGUF model in another type as llama-quantize does (`owl quantize in.gguf out.gguf Q4_K_M`).
    Quantize(quantize::QuantizeArgs),
    /// What `owl serve --capture` kept: `owl capture stats FILE`, `owl capture export FILE`.
    Capture(capture::CaptureArgs),
    /// Routing to upstreams: `owl route calibrate --escalate 0.2 --from-ledger`.
    Route(route_cli::RouteArgs),
    /// Perplexity of a model on a text, as llama-perplexity measures it (`owl perplexity -m MODEL -f TEXT`).
    Perplexity(perplexity::PerplexityArgs),
}

#[derive(clap::Args)]
struct ChatArgs {
    /// Model name from models.lock, or a path to a .gguf file (default: the lock's default model).
    #[arg(long, short)]
    model: Option<String>,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Compute device: cpu, wgpu (the best adapter) or wgpu:N (see `owl devices`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Context size in tokens (the conversation and the answer must fit in it).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// CPU worker threads (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens below this fraction of the top probability (0 = off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Sampling seed (default: random per answer).
    #[arg(long)]
    seed: Option<u64>,
    /// Longest answer in tokens (default: until the model stops or the context is full).
    #[arg(long)]
    max_tokens: Option<usize>,
    #[command(flatten)]
    charge: charge::ChargeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pull { name } => cmd_pull(name.as_deref()),
        Command::List => cmd_list(),
        Command::Rm { name } => cmd_rm(&name),
        Command::Inspect {
            model,
            max_items,
            no_tensors,
        } => cmd_inspect(&model, max_items, !no_tensors),
        Command::Run(a) => run::cmd_run(a),
        Command::Chat(args) => cmd_chat(args),
        Command::Serve(args) => cmd_serve(args),
        Command::Bench(a) => bench::cmd_bench(a),
        Command::Tokenize {
            model,
            json,
            pieces,
            no_special,
            no_parse_special,
            text,
        } => cmd_tokenize(
            model.as_deref(),
            json,
            pieces,
            !no_special,
            !no_parse_special,
            &text,
        ),
        Command::Synth(a) => synth::cmd_synth(a),
        Command::Devices => cmd_devices(),
        Command::Embed(a) => embed::cmd_embed(a),
        Command::Cost(a) => cost::cmd_cost(a, &registry::cache_dir()),
        Command::Quantize(a) => quantize::cmd_quantize(a),
        Command::Capture(a) => capture::cmd_capture(a),
        Command::Route(a) => route_cli::cmd_route(a, &registry::cache_dir()),
        Command::Perplexity(a) => perplexity::cmd_perplexity(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`owl inspect m | head`) is not an error.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_pull(name: Option<&str>) -> Result<ExitCode> {
    let reg = Registry::load()?;
    let name = name.unwrap_or(&reg.lock().default).to_string();
    let size = reg.entry(&name)?.size;
    match reg.pull(&name, &PullOptions::default())? {
        PullOutcome::AlreadyPresent(p) => {
            println!("{name} is up to date: {}", p.display());
        }
        PullOutcome::Downloaded(p) => {
            println!("pulled {name} ({}): {}", format_size(size), p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_list() -> Result<ExitCode> {
    let reg = Registry::load()?;
    let rows: Vec<[String; 6]> = reg
        .list()
        .into_iter()
        .map(|s| {
            let name = if s.is_default {
                format!("{} (default)", s.entry.name)
            } else {
                s.entry.name.clone()
            };
            [
                name,
                s.entry.arch.clone(),
                s.entry.quant.clone(),
                format_size(s.entry.size),
                match (&s.changed, s.pulled) {
                    (Some(_), _) => format!("CHANGED: run `owl pull {}`", s.entry.name),
                    (None, true) => "yes".to_string(),
                    (None, false) => "no".to_string(),
                },
                s.path.display().to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "ARCH", "QUANT", "SIZE", "PULLED", "PATH"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_rm(name: &str) -> Result<ExitCode> {
    let reg = Registry::load()?;
    let path = reg.path(reg.entry(name)?);
    if reg.rm(name)? {
        println!("removed {name}: {}", path.display());
    } else {
        println!("{name} is not in the cache ({})", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_inspect(model: &str, max_items: usize, tensors: bool) -> Result<ExitCode> {
    let path = registry::resolve_model(model, false)?;
    let g = Gguf::open(&path).with_context(|| format!("cannot inspect {model}"))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    print_inspect(&mut out, &path, &g, max_items, tensors)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_inspect(
    out: &mut impl Write,
    path: &Path,
    g: &Gguf,
    max_items: usize,
    tensors: bool,
) -> Result<()> {
    let file_len: u64 = g
        .paths()
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    writeln!(
        out,
        "file:      {} ({})",
        path.display(),
        format_size(file_len)
    )?;
    if g.paths().len() > 1 {
        writeln!(out, "parts:     {}", g.paths().len())?;
    }
    writeln!(
        out,
        "gguf:      version {}, alignment {}",
        g.version(),
        g.alignment()
    )?;
    writeln!(out, "arch:      {}", g.arch().unwrap_or("(none)"))?;
    writeln!(
        out,
        "tensors:   {} ({} of data)",
        g.tensors().len(),
        format_size(g.tensor_bytes())
    )?;
    let mut by_type: Vec<(&str, usize, u64)> = Vec::new();
    for t in g.tensors() {
        match by_type.iter_mut().find(|(n, _, _)| *n == t.ty.name()) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.size as u64;
            }
            None => by_type.push((t.ty.name(), 1, t.size as u64)),
        }
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(n, c, b)| format!("{n} x{c} ({})", format_size(*b)))
        .collect();
    writeln!(out, "types:     {}", types.join(", "))?;

    let md = g.metadata();
    writeln!(out, "\nmetadata ({} keys):", md.len())?;
    let key_w = md.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in md.iter() {
        let shown = value.display_abbrev(max_items, 80);
        let ty = match value.as_array() {
            Some(_) => format!("  ({})", value.type_desc()),
            None => String::new(),
        };
        writeln!(out, "  {key:<key_w$} = {shown}{ty}")?;
    }

    if tensors {
        writeln!(out, "\ntensors ({}):", g.tensors().len())?;
        let name_w = g.tensors().iter().map(|t| t.name.len()).max().unwrap_or(4);
        writeln!(
            out,
            "  {:<name_w$}  {:<6}  {:<22}  {:>10}  {:>12}",
            "NAME", "TYPE", "DIMS", "SIZE", "OFFSET"
        )?;
        for t in g.tensors() {
            let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
            let offset = if g.paths().len() > 1 {
                format!("{}:{}", t.file + 1, t.offset)
            } else {
                t.offset.to_string()
            };
            writeln!(
                out,
                "  {:<name_w$}  {:<6}  {:<22}  {:>10}  {:>12}",
                t.name,
                t.ty.name(),
                dims.join(" x "),
                format_size(t.size as u64),
                offset
            )?;
        }
    }
    Ok(())
}

fn cmd_chat(a: ChatArgs) -> Result<ExitCode> {
    let loader = owl_tui::engine::EngineLoader {
        device: a.device,
        n_ctx: a.ctx,
        threads: a.threads,
        charger: Some(std::sync::Arc::new(charge::local_charger(&a.charge, &registry::cache_dir(), "chat")?)),
    };
    let opts = owl_tui::runtime::ChatOptions {
        model: a.model.unwrap_or_else(|| registry::default_model().to_string()),
        system: a.system,
        settings: owl_tui::app::Settings {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            seed: a.seed,
            max_tokens: a.max_tokens,
        },
    };
    owl_tui::runtime::run(opts, std::sync::Arc::new(loader))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A models.lock name or a path to a .gguf file (default: the lock's default model).
    #[arg(long, short)]
    model: Option<String>,
    /// An embedding model for /v1/embeddings (e.g. nomic-embed-text-v1.5), loaded beside the chat model.
    #[arg(long)]
    embedding_model: Option<String>,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed when listening).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` (or `x-api-key: KEY`) on every endpoint but /health and /dashboard
    /// [default: $OWL_API_KEY]. Repeat as LABEL:KEY for several keys; the ledger records each
    /// request under its key's label.
    #[arg(long, value_name = "[LABEL:]KEY")]
    api_key: Vec<String>,
    /// A file of API keys, one LABEL:KEY a line (# comments).
    #[arg(long, value_name = "FILE")]
    api_keys: Option<std::path::PathBuf>,
    #[command(flatten)]
    charge: charge::ChargeArgs,
    /// Most sequences decoded at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Total KV budget in tokens, shared by all sequences.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// Allow browser requests from this origin ("*" for any); CORS is off by default.
    #[arg(long)]
    cors: Option<String>,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// A Jinja chat template file that overrides the model's.
    #[arg(long)]
    chat_template: Option<std::path::PathBuf>,
    /// Requests that may wait for a free sequence before new ones get 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Stop a generation still running after SECONDS (queue wait included) and answer 408,
    /// freeing its sequence even when its client stopped reading; a request's `timeout` field
    /// may shorten it [default: no limit].
    #[arg(long, value_name = "SECONDS")]
    request_timeout: Option<f64>,
    /// The most tokens an answer gets when its request sets no limit (llama-server's
    /// --n-predict) [default: up to the context]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: Option<u32>,
    /// The sampling seed of requests that set none (llama-server's --seed): the same request
    /// then gets the same answer; with `n` > 1, choice i uses seed + i [default: random]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// An OpenAI-compatible upstream (repeatable; also [[upstream]] tables in the config), e.g.
    /// big=http://127.0.0.1:8081/v1; its key is read from the environment variable key_env names,
    /// never from the command line; price=MODEL prices its tokens from the price table. An
    /// https:// URL's certificate is checked against the public roots, or only against the
    /// PEM CA(s) in ca=FILE (a private CA).
    #[arg(long, value_name = "NAME=URL[,key_env=VAR][,model=MODEL][,price=MODEL][,ca=FILE]")]
    upstream: Vec<String>,
    /// Seconds to wait for an upstream (connect, first answer, each chunk) before retrying once and answering locally.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    upstream_timeout: u64,
    /// Prompts with more tokens than this go to the first upstream.
    #[arg(long, value_name = "TOKENS")]
    route_max_local_tokens: Option<usize>,
    /// Another name for the loaded model (repeatable), listed in /v1/models and /api/tags.
    #[arg(long, value_name = "NAME")]
    alias: Vec<String>,
    /// Answer 404 to a request whose `model` names neither the loaded model nor an --alias
    /// (by default any name is served by the loaded model and echoed back).
    #[arg(long)]
    strict_model_names: bool,
    /// On SIGTERM or Ctrl-C, refuse new requests (503) and give those in flight this long to finish.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    drain_seconds: u64,
    /// Drop a connection whose client has read nothing for SECS while the server had data to
    /// send (a client that stopped reading and never closed); its request and buffered events
    /// are freed with it. 0 turns the deadline off.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    write_timeout: f64,
    /// Probe every undecided request: escalate to the first upstream when the local model's
    /// confidence score of its first tokens is under T (0: all local, 1: all upstream)
    /// [default: the config's [route] threshold, which `owl route calibrate` writes].
    #[arg(long, value_name = "T")]
    route_threshold: Option<f64>,
    /// Tokens the confidence probe reads before deciding [default: the config's [route]
    /// probe_tokens, else 16].
    #[arg(long, value_name = "N")]
    route_probe_tokens: Option<usize>,
    /// Append every complete upstream chat answer to FILE (OpenAI chat fine-tuning JSONL, mode
    /// 0600) for distillation; `x-owl-capture: off` opts a request out [default: the config's
    /// [route] capture].
    #[arg(long, value_name = "FILE")]
    capture: Option<std::path::PathBuf>,
    /// With --capture: capture local answers too (for evaluation), each with its reason.
    #[arg(long)]
    capture_all: bool,
}

fn cmd_serve(args: ServeArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(args.ctx >= 16, "--ctx must be at least 16 tokens");
    if let Some(t) = args.request_timeout {
        anyhow::ensure!(t.is_finite() && t > 0.0, "--request-timeout must be a number of seconds above 0, e.g. --request-timeout 300");
    }
    anyhow::ensure!(args.write_timeout.is_finite() && args.write_timeout >= 0.0, "--write-timeout must be a number of seconds (0 turns it off), e.g. --write-timeout 60");
    anyhow::ensure!(args.alias.iter().all(|a| !a.trim().is_empty()), "--alias needs a model name, e.g. --alias gpt-4o-mini");
    let mut keys = Vec::new();
    for k in &args.api_key {
        keys.push(charge::parse_key(k)?);
    }
    if keys.is_empty() {
        if let Some(k) = std::env::var("OWL_API_KEY").ok().filter(|k| !k.is_empty()) {
            keys.push(charge::parse_key(&k)?);
        }
    }
    if let Some(f) = &args.api_keys {
        keys.extend(charge::read_keys_file(f)?);
    }
    let owl_home = registry::cache_dir();
    let (cost_cfg, prices) = charge::setup(&args.charge, &owl_home)?;
    // --upstream flags first (the first upstream is where too_long and low_confidence go),
    // then the config file's [[upstream]] tables.
    let mut upstreams = Vec::new();
    for spec in &args.upstream {
        upstreams.push(owl_server::route::Upstream::parse(spec).map_err(anyhow::Error::msg)?);
    }
    for t in &cost_cfg.upstreams {
        let up = owl_server::route::Upstream::new(&t.name, &t.url, t.key_env.clone(), t.model.clone(), t.price.clone(), t.ca.clone());
        upstreams.push(up.map_err(|e| anyhow::anyhow!("{}: [[upstream]] {e}", t.at))?);
    }
    for (i, up) in upstreams.iter().enumerate() {
        anyhow::ensure!(upstreams[..i].iter().all(|u| u.name != up.name), "upstream {} is given twice (--upstream flags and [[upstream]] tables share names)", up.name);
    }
    anyhow::ensure!(args.upstream_timeout >= 1, "--upstream-timeout must be at least 1 second");
    anyhow::ensure!(
        args.route_max_local_tokens.is_none() || !upstreams.is_empty(),
        "--route-max-local-tokens needs an --upstream to send long prompts to"
    );
    anyhow::ensure!(
        args.route_threshold.is_none() || !upstreams.is_empty(),
        "--route-threshold needs an --upstream to escalate to"
    );
    for up in &upstreams {
        if let Some(p) = &up.price {
            prices.get(p).with_context(|| format!("--upstream {}: price={p}", up.name))?;
        }
    }
    let mut route = owl_server::route::RouteConfig::new(
        upstreams,
        std::time::Duration::from_secs(args.upstream_timeout),
        args.route_max_local_tokens,
    );
    let threshold = match (args.route_threshold, cost_cfg.route.threshold) {
        (Some(t), _) => Some(t),
        (None, Some(_)) if route.upstreams.is_empty() => {
            eprintln!("owl: the config's [route] threshold is unused: there is no upstream to escalate to");
            None
        }
        (None, t) => t,
    };
    if let Some(t) = threshold {
        let n = args.route_probe_tokens.or(cost_cfg.route.probe_tokens).unwrap_or(owl_server::route::DEFAULT_PROBE_TOKENS);
        route = route.with_probe(t, n).map_err(anyhow::Error::msg)?;
    }
    anyhow::ensure!(
        !args.capture_all || args.capture.is_some() || cost_cfg.route.capture.is_some(),
        "--capture-all needs --capture FILE (or [route] capture in the config)"
    );
    if let Some(f) = args.capture.as_ref().or(cost_cfg.route.capture.as_ref()) {
        anyhow::ensure!(!route.upstreams.is_empty(), "--capture needs an --upstream whose answers it keeps");
        let c = owl_server::route::capture::Capture::open(f).with_context(|| format!("cannot open capture file {}", f.display()))?;
        route = route.with_capture(c, args.capture_all);
    }
    let ledger = charge::open_ledger(&args.charge, &owl_home)?;
    let cost = std::sync::Arc::new(owl_server::cost::CostBook::new(cost_cfg, prices, ledger)?);
    let chat_template = match &args.chat_template {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read chat template {}", p.display()))?),
        None => None,
    };
    // models.lock entries for /v1/models and model-name checks; a broken lock only loses the list.
    let known_models = registry::ModelsLock::load()
        .map(|lock| {
            lock.models
                .iter()
                .map(|m| owl_server::KnownModel { name: m.name.clone(), file: m.file.clone(), aliases: Vec::new() })
                .collect()
        })
        .unwrap_or_default();
    let cfg = owl_server::ServeConfig {
        engine: owl_engine::service::EngineConfig {
            model: args.model.unwrap_or_else(|| registry::default_model().to_string()),
            device: args.device,
            n_ctx: args.ctx,
            n_parallel: args.parallel,
            threads: args.threads,
            chat_template,
            queue_capacity: args.queue,
            pull_if_missing: true,
        },
        host: args.host,
        port: args.port,
        options: owl_server::ServerOptions { api_keys: keys, cost: Some(cost), cors: args.cors, known_models, route: std::sync::Arc::new(route), aliases: args.alias, strict_model_names: args.strict_model_names, request_timeout: args.request_timeout.map(std::time::Duration::from_secs_f64), default_max_tokens: args.max_tokens.map(|n| n as usize), default_seed: args.seed, ..Default::default() },
        embedding_model: args.embedding_model,
        drain_seconds: args.drain_seconds,
        write_timeout: (args.write_timeout > 0.0).then(|| std::time::Duration::from_secs_f64(args.write_timeout)),
    };
    owl_server::run_blocking(cfg)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_tokenize(
    model: Option<&str>,
    json: bool,
    pieces: bool,
    add_special: bool,
    parse_special: bool,
    text: &str,
) -> Result<ExitCode> {
    use owl_engine::tokenizer::Tokenizer;
    use std::io::Read;

    let model = match model {
        Some(m) => m.to_string(),
        None => Registry::load()?.lock().default.clone(),
    };
    let stdin_text;
    let text = if text == "-" {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("cannot read the text from stdin")?;
        stdin_text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "the text on stdin is not UTF-8 (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            )
        })?;
        &stdin_text
    } else {
        text
    };
    let path = registry::resolve_model(&model, false)?;
    let gguf = Gguf::open(&path).with_context(|| format!("cannot open {model}"))?;
    let tok = Tokenizer::from_gguf(&gguf)
        .with_context(|| format!("cannot build the tokenizer of {model}"))?;
    let ids = tok
        .encode(text, add_special, parse_special)
        .context("cannot tokenize")?;

    let mut out = io::BufWriter::new(io::stdout().lock());
    // A piece may be part of a UTF-8 character (byte fallback): shown as bytes then.
    let show_piece = |id: u32| {
        let piece = tok.token_to_piece(id);
        match std::str::from_utf8(&piece) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("b\"{}\"", piece.escape_ascii()),
        }
    };
    match (json, pieces) {
        (true, false) => serde_json::to_writer(&mut out, &ids)?,
        (true, true) => {
            let items: Vec<serde_json::Value> = ids
                .iter()
                .map(|&id| {
                    serde_json::json!({
                        "id": id,
                        "piece": String::from_utf8_lossy(&tok.token_to_piece(id)),
                        "text": tok.token_text(id),
                    })
                })
                .collect();
            serde_json::to_writer(&mut out, &items)?;
        }
        (false, true) => {
            for &id in &ids {
                writeln!(out, "{id:>7} -> {}", show_piece(id))?;
            }
        }
        (false, false) => {
            let line: Vec<String> = ids.iter().map(u32::to_string).collect();
            write!(out, "{}", line.join(" "))?;
        }
    }
    // --pieces without --json ends each line itself.
    if !pieces || json {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_devices() -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let cpu = owl_backends::open("cpu", None)?;
    writeln!(out, "cpu      {}", cpu.name())?;
    let adapters = owl_backends::wgpu::adapters();
    if adapters.is_empty() {
        writeln!(
            out,
            "wgpu     no usable adapter (Vulkan, Metal or DX12): install a GPU driver, or mesa-vulkan-drivers for the lavapipe CPU emulation"
        )?;
    }
    const MIB: u64 = 1 << 20;
    for a in &adapters {
        let tag = format!("wgpu:{}", a.index);
        let best = if a.index == 0 { " (--device wgpu)" } else { "" };
        writeln!(out, "{tag:<8} {} [{}, {}]{best}", a.name, a.backend, a.device_type)?;
        if !a.driver.is_empty() {
            writeln!(out, "         driver: {}", a.driver)?;
        }
        writeln!(
            out,
            "         memory: max buffer {} MiB, max storage binding {} MiB, workgroup storage {} KiB (wgpu does not report total memory)",
            a.max_buffer_size / MIB,
            a.max_storage_binding / MIB,
            a.max_workgroup_storage / 1024
        )?;
        let f = if a.features.is_empty() { "none of shader-f16, subgroup, shader-int64, timestamp-query".to_string() } else { a.features.join(", ") };
        writeln!(out, "         features: {f}")?;
    }
    Ok(ExitCode::SUCCESS)
}
