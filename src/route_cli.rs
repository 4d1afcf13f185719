//! `owl route calibrate --escalate SHARE --from-ledger | PROMPTS_FILE`: the
//! `--route-threshold` under which that share of the probe scores fall (RouteLLM
//! calibrates by quantile the same way), written to the config's `[route] threshold`.
//! The scores are the ledger's probed requests, or the probe run here on each prompt
//! of a file, with the model `owl serve` will run; and
//! `owl route eval [PROMPTS.jsonl] --url URL`: every prompt through a running routing
//! `owl serve` local-only, upstream-only and routed, with quality, cost and the share
//! escalated (the table a threshold is picked from).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct RouteArgs {
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(clap::Subcommand)]
enum RouteCommand {
    /// Set the config's [route] threshold so that a share of requests escalates, from the
    /// probe scores in the ledger (serve with --route-threshold 0 to collect them first), or
    /// from the probe run here on each prompt of PROMPTS_FILE.
    Calibrate {
        /// Share of requests to escalate, 0 to 1.
        #[arg(long, value_name = "SHARE")]
        escalate: f64,
        /// Read the probe scores from the ledger ($OWL_HOME/ledger).
        #[arg(long, conflicts_with = "prompts")]
        from_ledger: bool,
        /// Prompts to probe here, one a line: JSON with "messages" (the `owl route eval`
        /// format) or "prompt" (a string), or plain text (one user message).
        #[arg(value_name = "PROMPTS_FILE")]
        prompts: Option<PathBuf>,
        /// The local model to probe with (the one `owl serve` runs) [default: the default model].
        #[arg(long, short = 'm')]
        model: Option<String>,
        /// Tokens the probe reads [default: the config's [route] probe_tokens, else 16].
        #[arg(long, value_name = "N")]
        probe_tokens: Option<usize>,
        /// Threads for the probe's model.
        #[arg(long, short = 't')]
        threads: Option<usize>,
        /// Only requests newer than this: 30m, 12h, 7d ("all" for everything).
        #[arg(long, default_value = "all", value_name = "DURATION")]
        since: String,
        /// The config file to write instead of $OWL_HOME/config.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run prompts (JSONL: messages and a reference answer; default: the built-in set of
    /// 52 arithmetic, factual and multi-step items) through a routing `owl serve` three
    /// ways: local only, upstream only and routed; print quality, cost and share escalated.
    Eval(crate::route_eval::EvalArgs),
}

pub fn cmd_route(a: RouteArgs, owl_home: &Path) -> Result<ExitCode> {
    let (escalate, from_ledger, prompts, model, probe_tokens, threads, since, config) =
        match a.command {
            RouteCommand::Eval(e) => return crate::route_eval::cmd_eval(&e),
            RouteCommand::Calibrate {
                escalate,
                from_ledger,
                prompts,
                model,
                probe_tokens,
                threads,
                since,
                config,
            } => (
                escalate,
                from_ledger,
                prompts,
                model,
                probe_tokens,
                threads,
                since,
                config,
            ),
        };
    if !(0.0..=1.0).contains(&escalate) {
        bail!("--escalate {escalate}: must be a share between 0 and 1");
    }
    let path = config.unwrap_or_else(|| owl_ledger::CostConfig::default_path(owl_home));
    let src = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // The file must stay a valid config: check it before and after.
    let cfg = owl_ledger::CostConfig::parse(&src, &path.display().to_string())?;
    let (mut scores, what) = match (&prompts, from_ledger) {
        (Some(file), _) => {
            let n = probe_tokens
                .or(cfg.route.probe_tokens)
                .unwrap_or(owl_server::route::DEFAULT_PROBE_TOKENS);
            if n == 0 {
                bail!("--probe-tokens must be at least 1");
            }
            (crate::route_probe::probe_file(file, model.as_deref(), threads, n)?, "prompts")
        }
        (None, true) => (ledger_scores(owl_home, &since)?, "probed requests"),
        (None, false) => bail!(
            "owl route calibrate needs the scores to calibrate on: --from-ledger, or a PROMPTS_FILE to probe"
        ),
    };
    scores.sort_by(f64::total_cmp);
    let t = threshold(&scores, escalate);
    let below = scores.iter().filter(|&&s| s < t).count();
    let new = owl_ledger::config::with_route_threshold(&src, t);
    owl_ledger::CostConfig::parse(&new, &path.display().to_string())?;
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "threshold {t}: {below} of {} {what} ({:.1}%) score under it (asked: {:.1}%); written to {} as [route] threshold",
        scores.len(),
        100.0 * below as f64 / scores.len() as f64,
        100.0 * escalate,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The probe scores of the ledger's records newer than `since`.
fn ledger_scores(owl_home: &Path, since: &str) -> Result<Vec<f64>> {
    let cutoff = match since {
        "all" => f64::NEG_INFINITY,
        s => {
            owl_ledger::now_unix()
                - owl_ledger::report::parse_duration(s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--since {s:?}: expected a duration like 30m, 12h or 7d, or all"
                    )
                })?
        }
    };
    let (dir, records) = crate::cost_report::ledger_records(owl_home);
    let scores: Vec<f64> = records
        .iter()
        .filter(|r| r.time >= cutoff)
        .filter_map(|r| r.routing.probe_score)
        .filter(|s| s.is_finite())
        .collect();
    if scores.is_empty() {
        bail!(
            "the ledger {} has no probe scores: serve with --upstream and --route-threshold 0 (everything stays local, every score is recorded), then calibrate",
            dir.display()
        );
    }
    Ok(scores)
}

/// The threshold under which `share` of the sorted `scores` fall: halfway between the
/// k-th and (k+1)-th smallest score, k = round(share x n); 0 for none, 1 for all.
fn threshold(sorted: &[f64], share: f64) -> f64 {
    let n = sorted.len();
    let k = ((share * n as f64).round() as usize).min(n);
    match k {
        0 => 0.0,
        k if k == n => 1.0,
        k => (sorted[k - 1] + sorted[k]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::threshold;

    #[test]
    fn the_threshold_splits_the_scores_at_the_share() {
        let s: Vec<f64> = (1..=10).map(|i| i as f64 / 10.0).collect();
        assert!((threshold(&s, 0.2) - 0.25).abs() < 1e-12);
        assert_eq!(threshold(&s, 0.0), 0.0);
        assert_eq!(threshold(&s, 1.0), 1.0);
        assert!((threshold(&s, 0.5) - 0.55).abs() < 1e-12);
    }
}
