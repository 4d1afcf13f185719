//! What `owl serve`, `owl run` and `owl chat` share about cost: the prices and the
//! [cost] config they charge with, the ledger they append to (unless --no-ledger),
//! and the API keys with the labels the ledger records requests under.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use owl_ledger::{Charger, CostConfig, Ledger, PriceTable, Pricer};

/// The flags every serving command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChargeArgs {
    /// Record nothing in the cost ledger ($OWL_HOME/ledger).
    #[arg(long)]
    pub no_ledger: bool,
    /// Price table (TOML, like ledger/prices.toml) instead of the built-in one; also OWL_PRICES.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Cost config with a [cost] table, instead of $OWL_HOME/config.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API model the local cost is compared with (default: config baseline, else gpt-4.1-mini).
    #[arg(long, value_name = "MODEL")]
    pub baseline: Option<String>,
}

/// The price table: `--prices`, else OWL_PRICES, else the built-in one.
pub fn prices(flag: Option<&Path>) -> Result<PriceTable> {
    let env = std::env::var_os("OWL_PRICES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    Ok(PriceTable::resolve(flag, env.as_deref())?)
}

/// Config, prices and baseline as the flags say.
pub fn setup(a: &ChargeArgs, owl_home: &Path) -> Result<(CostConfig, PriceTable)> {
    let mut cfg = CostConfig::resolve(a.config.as_deref(), owl_home)?;
    cfg.baseline.set_flag("--baseline", a.baseline.clone());
    let prices = prices(a.prices.as_deref())?;
    prices.get(&cfg.baseline.value)?;
    Ok((cfg, prices))
}

/// The ledger under `owl_home`, or None with --no-ledger. A torn last line is cut with a warning.
pub fn open_ledger(a: &ChargeArgs, owl_home: &Path) -> Result<Option<Ledger>> {
    if a.no_ledger {
        return Ok(None);
    }
    let dir = owl_ledger::store::default_dir(owl_home);
    let (l, warnings) = Ledger::open(&dir, Default::default())
        .with_context(|| format!("cannot open the cost ledger in {}", dir.display()))?;
    for w in warnings {
        eprintln!("owl: warning: {w}");
    }
    Ok(Some(l))
}

/// The charger of `owl run` / `owl chat` (source "run" / "chat").
pub fn local_charger(a: &ChargeArgs, owl_home: &Path, source: &'static str) -> Result<Charger> {
    let (cfg, prices) = setup(a, owl_home)?;
    Ok(Charger {
        pricer: Pricer::new(&cfg, &prices)?,
        ledger: open_ledger(a, owl_home)?,
        source,
    })
}

/// One `LABEL:KEY` (a bare KEY is labelled "default").
pub fn parse_key(s: &str) -> Result<(String, String)> {
    let s = s.trim();
    let (label, key) = match s.split_once(':') {
        Some((l, k)) => (l.trim(), k.trim()),
        None => ("default", s),
    };
    if label.is_empty() || key.is_empty() {
        bail!("an API key must be KEY or LABEL:KEY with neither part empty");
    }
    Ok((label.to_string(), key.to_string()))
}

/// A keys file: one `LABEL:KEY` a line; blank lines and `#` comments are skipped.
pub fn read_keys_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API keys file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.contains(':') {
            bail!("{}:{}: expected LABEL:KEY", path.display(), i + 1);
        }
        out.push(parse_key(line).with_context(|| format!("{}:{}", path.display(), i + 1))?);
    }
    if out.is_empty() {
        bail!(
            "the API keys file {} holds no LABEL:KEY line",
            path.display()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_and_without_labels() {
        assert_eq!(parse_key("ci:abc").unwrap(), ("ci".into(), "abc".into()));
        assert_eq!(parse_key("abc").unwrap(), ("default".into(), "abc".into()));
        assert!(parse_key("ci:").is_err());
    }
}
