//! One ledger record per request served, and how a request's numbers become one:
//! local cost from its share of busy time, baseline cost from the price table on the
//! same token counts. Never any prompt or completion text.

use serde::{Deserialize, Serialize};

use crate::{CostConfig, Price, PriceTable, Result};

/// What one request cost. Times are seconds; money is USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When it finished, Unix seconds.
    pub time: f64,
    /// Where it was served: "server", "run" or "chat".
    pub source: String,
    pub model: String,
    /// The API key's label when keys are set, else "local".
    pub client: String,
    pub prompt_tokens: u64,
    /// Prompt tokens whose KV was reused (part of prompt_tokens).
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Its share of the engine's busy time on its prompt and on generating.
    pub prefill_s: f64,
    pub decode_s: f64,
    pub cost_usd: f64,
    pub baseline_model: String,
    pub baseline_usd: f64,
    pub savings_usd: f64,
}

impl Record {
    pub fn busy_s(&self) -> f64 {
        self.prefill_s + self.decode_s
    }
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Token counts and busy seconds of one finished request: what a front end hands over.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Served {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// Prices requests: this machine's busy rate against one baseline API.
#[derive(Debug, Clone)]
pub struct Pricer {
    /// USD per busy second (CostConfig::local_usd_per_second).
    pub usd_per_s: f64,
    pub baseline_model: String,
    pub baseline: Price,
}

impl Pricer {
    /// The config's busy rate and its baseline, priced from `prices` (an unknown
    /// baseline is an error naming the models the table knows).
    pub fn new(cfg: &CostConfig, prices: &PriceTable) -> Result<Pricer> {
        Self::with_baseline(cfg, prices, &cfg.baseline.value)
    }

    pub fn with_baseline(cfg: &CostConfig, prices: &PriceTable, baseline: &str) -> Result<Pricer> {
        Ok(Pricer {
            usd_per_s: cfg.local_usd_per_second(),
            baseline_model: baseline.to_string(),
            baseline: prices.get(baseline)?.clone(),
        })
    }

    pub fn record(&self, time: f64, source: &str, model: &str, client: &str, s: &Served) -> Record {
        let cost_usd = (s.prefill_s + s.decode_s) * self.usd_per_s;
        let baseline_usd =
            self.baseline
                .cost_usd(s.prompt_tokens, s.cached_tokens, s.completion_tokens);
        Record {
            time,
            source: source.to_string(),
            model: model.to_string(),
            client: client.to_string(),
            prompt_tokens: s.prompt_tokens,
            cached_tokens: s.cached_tokens,
            completion_tokens: s.completion_tokens,
            prefill_s: s.prefill_s,
            decode_s: s.decode_s,
            cost_usd,
            baseline_model: self.baseline_model.clone(),
            baseline_usd,
            savings_usd: baseline_usd - cost_usd,
        }
    }
}

/// Prices requests of one front end and appends them to the ledger (when there is one),
/// waiting until each record is fsynced.
#[derive(Debug)]
pub struct Charger {
    pub pricer: Pricer,
    pub ledger: Option<crate::Ledger>,
    /// "run" or "chat".
    pub source: &'static str,
}

impl Charger {
    /// The record of one finished request (also appended; a failed write is a warning on stderr).
    pub fn charge(&self, model: &str, client: &str, s: &Served) -> Record {
        let rec = self
            .pricer
            .record(now_unix(), self.source, model, client, s);
        if let Some(l) = &self.ledger {
            if let Err(e) = l.append_sync(rec.clone()) {
                eprintln!("owl: warning: {e}");
            }
        }
        rec
    }
}

/// Unix seconds now, with a fraction.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_prices_busy_time_and_the_same_tokens_on_the_api() {
        let cfg = CostConfig::default();
        let prices = PriceTable::builtin();
        let p = Pricer::with_baseline(&cfg, &prices, "gpt-4.1").unwrap();
        let s = Served {
            prompt_tokens: 1_000_000,
            cached_tokens: 0,
            completion_tokens: 1_000_000,
            prefill_s: 1800.0,
            decode_s: 1800.0,
        };
        let r = p.record(1.0, "server", "m", "local", &s);
        // gpt-4.1: $2 + $8; one busy hour at the laptop default $0.0245/h.
        assert!((r.baseline_usd - 10.0).abs() < 1e-9);
        assert!((r.cost_usd - 0.0245).abs() < 1e-12);
        assert!((r.savings_usd - (10.0 - 0.0245)).abs() < 1e-9);
        assert!(Pricer::with_baseline(&cfg, &prices, "no-such-api").is_err());
    }
}
