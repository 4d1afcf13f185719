//! `owl cost`: API prices and the break-even of owning this machine (the ledger's
//! summary and `estimate` are in cost_report.rs). The arithmetic lives in owl-ledger;
//! this file reads flags, prints the inputs it used and where each came from, then the result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use owl_ledger::{BreakEven, CostConfig, Origin, PriceTable, Sourced};
use serde_json::json;

#[derive(clap::Args)]
pub struct CostArgs {
    /// Price table (TOML, like ledger/prices.toml) instead of the built-in one; also OWL_PRICES.
    #[arg(long, global = true, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Cost config with a [cost] table, instead of $OWL_HOME/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<CostCommand>,
    /// Without a subcommand: the ledger's requests, tokens, local and baseline cost, savings.
    #[command(flatten)]
    report: crate::cost_report::ReportArgs,
}

#[derive(clap::Subcommand)]
enum CostCommand {
    /// The API price table: USD per 1M input, output and cached input tokens, as of when, from where.
    Prices {
        /// Output: md (table) or json.
        #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
        output: String,
    },
    /// Tokens a month from which owning costs less than the API: fixed monthly cost
    /// / (API $/token - local $/token). Prints every input and where it came from.
    Breakeven(BreakevenArgs),
    /// What N tokens a month would cost on this machine (from the ledger's measured
    /// throughput, or a short bench run when it is empty) against every API in the price table.
    Estimate(crate::cost_report::EstimateArgs),
}

#[derive(clap::Args)]
struct BreakevenArgs {
    /// Fixed cost of owning, USD a month (people, upkeep); default: config fixed_monthly_usd.
    #[arg(long, value_name = "USD")]
    fixed_monthly: Option<f64>,
    /// API model to compare with, priced from the table (default: config baseline).
    #[arg(long, value_name = "MODEL", conflicts_with = "api_per_1m")]
    baseline: Option<String>,
    /// API price per 1M tokens, instead of the baseline's.
    #[arg(long, value_name = "USD")]
    api_per_1m: Option<f64>,
    /// Local cost per 1M tokens.
    #[arg(long, value_name = "USD", conflicts_with = "tokens_per_second")]
    local_per_1m: Option<f64>,
    /// This machine's throughput (e.g. `owl bench`'s tg figure): the local price per
    /// 1M tokens is then the config's busy $/s (hourly_usd + watts x kwh_usd) over it.
    #[arg(long, value_name = "N")]
    tokens_per_second: Option<f64>,
    /// Share of the tokens that are input (prompt) tokens, for the baseline's blended price.
    #[arg(long, value_name = "0..1")]
    input_share: Option<f64>,
    /// Output: md or json.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
    output: String,
}

const DEFAULT_INPUT_SHARE: f64 = 0.75;

pub fn cmd_cost(a: CostArgs, owl_home: &Path) -> Result<ExitCode> {
    let prices = || -> Result<PriceTable> {
        let env = std::env::var_os("OWL_PRICES")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Ok(PriceTable::resolve(a.prices.as_deref(), env.as_deref())?)
    };
    match &a.command {
        Some(CostCommand::Prices { output }) => print_prices(&prices()?, output),
        Some(CostCommand::Breakeven(b)) => {
            let cfg = CostConfig::resolve(a.config.as_deref(), owl_home)?;
            let (dir, records) = crate::cost_report::ledger_records(owl_home);
            let measured = owl_ledger::Totals::of(&records);
            cmd_breakeven(b, cfg, prices, (dir.display().to_string(), measured))
        }
        Some(CostCommand::Estimate(e)) => {
            let cfg = CostConfig::resolve(a.config.as_deref(), owl_home)?;
            crate::cost_report::cmd_estimate(e, &cfg, &prices()?, owl_home)
        }
        None => {
            let cfg = CostConfig::resolve(a.config.as_deref(), owl_home)?;
            crate::cost_report::cmd_report(&a.report, &cfg, prices, owl_home)
        }
    }
}

/// Dollars as people write them: cents, or more digits below a cent.
pub(crate) fn usd(x: f64) -> String {
    if x.abs() >= 0.01 || x == 0.0 {
        format!("${x:.2}")
    } else {
        format!("${}", num(x))
    }
}

/// A number without float noise: at most 6 decimals, trailing zeros dropped.
pub(crate) fn num(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

pub(crate) fn table_origin(t: &PriceTable) -> String {
    match &t.origin {
        Origin::Default => "built-in ledger/prices.toml".to_string(),
        o => format!("{} ({o})", t.file),
    }
}

fn print_prices(t: &PriceTable, output: &str) -> Result<ExitCode> {
    if output == "json" {
        let models: Vec<_> = t
            .models
            .iter()
            .map(|(name, p)| {
                json!({
                    "model": name,
                    "input_per_1m": p.input_per_1m,
                    "output_per_1m": p.output_per_1m,
                    "cached_input_per_1m": p.cached_input_per_1m,
                    "as_of": p.as_of,
                    "source": p.source,
                })
            })
            .collect();
        let doc = json!({ "prices_from": table_origin(t), "unit": "USD per 1M tokens", "models": models });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "API list prices, USD per 1M tokens, from {}:\n",
        table_origin(t)
    );
    let rows = t.models.iter().map(|(name, p)| {
        vec![
            name.clone(),
            format!("{:.2}", p.input_per_1m),
            format!("{:.2}", p.output_per_1m),
            p.cached_input_per_1m
                .map_or("-".into(), |c| format!("{c:.2}")),
            p.as_of.clone(),
            p.source.clone(),
        ]
    });
    print_md(
        &[
            "model",
            "input",
            "output",
            "cached input",
            "as_of",
            "source",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_md(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&w)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(header.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        w.iter()
            .map(|&w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r);
    }
}

fn check(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => {
            bail!("{name} must be a number, 0 or more (got {x})")
        }
        v => Ok(v),
    }
}

fn cmd_breakeven(
    b: &BreakevenArgs,
    mut cfg: CostConfig,
    prices: impl FnOnce() -> Result<PriceTable>,
    (ledger_dir, measured): (String, owl_ledger::Totals),
) -> Result<ExitCode> {
    let from_ledger = |what: &str| format!("the ledger {ledger_dir} ({} requests, {what})", measured.requests);
    cfg.fixed_monthly_usd.set_flag(
        "--fixed-monthly",
        check("--fixed-monthly", b.fixed_monthly)?,
    );
    cfg.baseline.set_flag("--baseline", b.baseline.clone());
    let mut share = match measured.input_share() {
        Some(s) => Sourced::new(s, Origin::Derived(from_ledger("prompt / all tokens"))),
        None => Sourced::default(DEFAULT_INPUT_SHARE),
    };
    share.set_flag("--input-share", b.input_share);
    if !(0.0..=1.0).contains(&share.value) {
        bail!(
            "--input-share must be between 0 and 1 (got {})",
            share.value
        );
    }
    // (name, value, where it came from), in the order they are used.
    let mut inputs: Vec<(String, String, String)> = Vec::new();
    let mut push =
        |name: &str, value: String, from: String| inputs.push((name.into(), value, from));
    let fixed = cfg.fixed_monthly_usd.value;
    push(
        "fixed_monthly_usd",
        num(fixed),
        cfg.fixed_monthly_usd.origin.to_string(),
    );

    let api = match check("--api-per-1m", b.api_per_1m)? {
        Some(x) => Sourced::new(x, Origin::Flag("--api-per-1m".into())),
        None => {
            let t = prices()?;
            let model = &cfg.baseline.value;
            let p = t.get(model)?;
            push("baseline", model.clone(), cfg.baseline.origin.to_string());
            push(
                "baseline_input_per_1m",
                num(p.input_per_1m),
                format!("{}, as of {}", table_origin(&t), p.as_of),
            );
            push(
                "baseline_output_per_1m",
                num(p.output_per_1m),
                format!("{}, as of {}", table_origin(&t), p.as_of),
            );
            push("input_share", num(share.value), share.origin.to_string());
            let how = format!(
                "{model}: {} x {} + {} x {}",
                num(share.value),
                num(p.input_per_1m),
                num(1.0 - share.value),
                num(p.output_per_1m)
            );
            Sourced::new(p.blended_per_1m(share.value), Origin::Derived(how))
        }
    };
    push("api_per_1m", num(api.value), api.origin.to_string());

    let measured_tps = measured.tokens_per_busy_s();
    let local = match (check("--local-per-1m", b.local_per_1m)?, b.tokens_per_second.or(measured_tps)) {
        (Some(x), _) => Sourced::new(x, Origin::Flag("--local-per-1m".into())),
        (None, Some(tps)) => {
            if !(tps.is_finite() && tps > 0.0) {
                bail!("--tokens-per-second must be more than 0 (got {tps})");
            }
            for (name, v, from) in cfg.sources().into_iter().take(3) {
                push(name, v, from);
            }
            let tps_from = if b.tokens_per_second.is_some() { "flag --tokens-per-second".to_string() } else { from_ledger("tokens per busy second") };
            push("tokens_per_second", num(tps), tps_from);
            let how = format!(
                "busy ${}/h over {} tok/s",
                num(cfg.busy_usd_per_hour()),
                num(tps)
            );
            Sourced::new(owl_ledger::local_per_1m(cfg.local_usd_per_second(), tps), Origin::Derived(how))
        }
        (None, None) => bail!(
            "the local price per 1M tokens needs this machine's throughput: pass --tokens-per-second N \
             (e.g. owl bench's tg figure) or --local-per-1m USD; busy time here costs ${}/h \
             (hourly_usd {} from {}, watts {} from {}, kwh_usd {} from {})",
            num(cfg.busy_usd_per_hour()),
            num(cfg.hourly_usd.value),
            cfg.hourly_usd.origin,
            num(cfg.watts.value),
            cfg.watts.origin,
            num(cfg.kwh_usd.value),
            cfg.kwh_usd.origin,
        ),
    };
    push("local_per_1m", num(local.value), local.origin.to_string());

    let result = owl_ledger::breakeven(fixed, api.value, local.value);
    let saved_per_1m = api.value - local.value;
    let summary = match result {
        BreakEven::Tokens(_) if fixed == 0.0 => format!(
            "no fixed monthly cost: owning is cheaper from the first token ({} saved per 1M tokens)",
            usd(saved_per_1m)
        ),
        BreakEven::Tokens(t) => format!(
            "break-even: {} tokens/month ({:.0} tokens; {} saved per 1M tokens pays {} a month)",
            owl_ledger::format_tokens(t),
            t,
            usd(saved_per_1m),
            usd(fixed)
        ),
        BreakEven::Never => format!(
            "no break-even: a local token ({} per 1M) costs as much as an API token ({} per 1M) or more, \
             so owning never pays back its fixed cost",
            usd(local.value),
            usd(api.value)
        ),
    };
    if b.output == "json" {
        let inputs: serde_json::Map<String, serde_json::Value> = inputs
            .iter()
            .map(|(n, v, from)| {
                let value = v.parse::<f64>().map_or_else(|_| json!(v), |x| json!(x));
                (n.clone(), json!({ "value": value, "from": from }))
            })
            .collect();
        let tokens = match result {
            BreakEven::Tokens(t) => json!(t),
            BreakEven::Never => serde_json::Value::Null,
        };
        let doc = json!({
            "inputs": inputs,
            "api_per_1m": api.value,
            "local_per_1m": local.value,
            "fixed_monthly_usd": fixed,
            "saved_per_1m": saved_per_1m,
            "breakeven_tokens_per_month": tokens,
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("inputs (USD; per 1M tokens where named so):\n");
    print_md(
        &["input", "value", "from"],
        inputs.into_iter().map(|(n, v, f)| vec![n, v, f]),
    );
    println!("\n{summary}");
    Ok(ExitCode::SUCCESS)
}
