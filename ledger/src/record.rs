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
    /// How the request was routed (`owl serve` only; older lines have none of these).
    #[serde(default, flatten, skip_serializing_if = "Routing::is_empty")]
    pub routing: Routing,
}

/// Where `owl serve` sent a request and why (server/src/route). Every field is
/// optional, so ledger lines written before routing existed still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// "local" or "upstream".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// header, model, too_long, low_confidence, confident, upstream_error or default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The confidence probe's score in [0, 1], when the probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_score: Option<f64>,
    /// The upstream's name, when one answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// What the upstream charged for the answer, USD (its `usage.cost`, else its
    /// price on its `usage` tokens); part of `cost_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_usd: Option<f64>,
    /// The upstream's stream was cut before it said what it used (the upstream broke
    /// off, or the client went away): charged for what was relayed, its prompt and
    /// completion tokens counted by owl (see server/src/route/relay.rs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

impl Routing {
    pub fn is_empty(&self) -> bool {
        *self == Routing::default()
    }

    /// The group `owl cost --by route` puts a record in: `local/confident`,
    /// `upstream:big/low_confidence`, or `local` for records without routing.
    pub fn key(&self) -> String {
        let route = match (self.route.as_deref(), &self.upstream) {
            (Some("upstream"), Some(name)) => format!("upstream:{name}"),
            (Some(r), _) => r.to_string(),
            (None, _) => "local".to_string(),
        };
        match &self.reason {
            Some(reason) => format!("{route}/{reason}"),
            None => route,
        }
    }
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
            routing: Routing::default(),
        }
    }

    /// The record of a request an upstream answered: its tokens (from the upstream's
    /// `usage`) priced on the baseline as usual; its cost is `upstream_usd` plus the
    /// local busy time `s` spent before escalating (a dropped probe draft).
    pub fn upstream_record(
        &self,
        time: f64,
        model: &str,
        client: &str,
        s: &Served,
        upstream_usd: f64,
        routing: Routing,
    ) -> Record {
        let mut r = self.record(time, "server", model, client, s);
        r.cost_usd += upstream_usd;
        r.savings_usd = r.baseline_usd - r.cost_usd;
        r.routing = Routing {
            upstream_usd: Some(upstream_usd),
            ..routing
        };
        r
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

    #[test]
    fn upstream_records_add_the_upstream_cost_and_keep_routing() {
        let cfg = CostConfig::default();
        let p = Pricer::with_baseline(&cfg, &PriceTable::builtin(), "gpt-4.1").unwrap();
        let s = Served {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            decode_s: 3600.0,
            ..Served::default()
        };
        let routing = Routing {
            route: Some("upstream".into()),
            reason: Some("low_confidence".into()),
            probe_score: Some(0.25),
            upstream: Some("big".into()),
            upstream_usd: None,
            cut: false,
        };
        let r = p.upstream_record(1.0, "qwen", "local", &s, 3.0, routing);
        assert!((r.cost_usd - (3.0 + 0.0245)).abs() < 1e-9);
        assert!((r.savings_usd - (10.0 - 3.0 - 0.0245)).abs() < 1e-9);
        assert_eq!(r.routing.upstream_usd, Some(3.0));
        assert_eq!(r.routing.key(), "upstream:big/low_confidence");
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""reason":"low_confidence""#), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }

    #[test]
    fn lines_without_routing_still_read_and_write_back_unchanged() {
        let old = r#"{"time":1.0,"source":"server","model":"m","client":"local","prompt_tokens":3,"cached_tokens":0,"completion_tokens":4,"prefill_s":0.5,"decode_s":0.5,"cost_usd":0.1,"baseline_model":"gpt-4.1-mini","baseline_usd":0.2,"savings_usd":0.1}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert!(r.routing.is_empty());
        assert_eq!(r.routing.key(), "local");
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
    }
}
