//! What requests cost: each finished request is priced (its share of busy time at this
//! machine's rate, and the baseline API on the same tokens), appended to the ledger and
//! summed. `/v1/owl/cost` answers the sums, `/metrics` the counters, and
//! `usage.owl` / `x-owl-*` headers each request's own figures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use owl_engine::service::{Event, MetricsSnapshot, RequestHandle, Timings, Usage};
use owl_ledger::{
    CostConfig, GroupBy, Ledger, Price, PriceTable, Pricer, Record, Routing, Served, Totals,
};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::ApiError;

/// Hours of per-hour totals kept for the dashboard's tokens-per-hour chart.
const HOURS_KEPT: usize = 48;

/// The caller's name in the ledger: the API key's label, or "local" when no keys are set.
#[derive(Clone, Debug, PartialEq)]
pub struct Client(pub String);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Client>()
            .cloned()
            .unwrap_or_else(|| Client("local".into())))
    }
}

#[derive(Default)]
struct Sums {
    all: Totals,
    by_day: BTreeMap<String, Totals>,
    by_hour: BTreeMap<String, Totals>,
    by_model: BTreeMap<String, Totals>,
    by_client: BTreeMap<String, Totals>,
    by_route: BTreeMap<String, Totals>,
    first_time: Option<f64>,
}

impl Sums {
    fn add(&mut self, r: &Record) {
        self.all.add(r);
        for (map, by) in [
            (&mut self.by_day, GroupBy::Day),
            (&mut self.by_hour, GroupBy::Hour),
            (&mut self.by_model, GroupBy::Model),
            (&mut self.by_client, GroupBy::Client),
            (&mut self.by_route, GroupBy::Route),
        ] {
            map.entry(by.key(r)).or_default().add(r);
        }
        while self.by_hour.len() > HOURS_KEPT {
            self.by_hour.pop_first();
        }
        self.first_time = Some(self.first_time.map_or(r.time, |t| t.min(r.time)));
    }
}

/// Prices, the cost config, the ledger (unless `--no-ledger`) and the sums.
pub struct CostBook {
    pricer: Pricer,
    prices: PriceTable,
    cfg: CostConfig,
    ledger: Option<Ledger>,
    /// Everything in the ledger (with `--no-ledger`: this process's requests).
    sums: Mutex<Sums>,
    /// This process's requests only (the /metrics counters).
    process: Mutex<Totals>,
    started: Instant,
}

impl std::fmt::Debug for CostBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostBook")
            .field("baseline", &self.pricer.baseline_model)
            .field("ledger", &self.ledger)
            .finish()
    }
}

impl CostBook {
    /// `ledger`: the opened ledger, whose records so far are read into the sums
    /// (a line that is not a record is skipped with a warning on stderr).
    pub fn new(
        cfg: CostConfig,
        prices: PriceTable,
        ledger: Option<Ledger>,
    ) -> Result<CostBook, owl_ledger::Error> {
        let pricer = Pricer::new(&cfg, &prices)?;
        let mut sums = Sums::default();
        if let Some(l) = &ledger {
            let (records, warnings) = owl_ledger::store::read_all(l.dir());
            for w in warnings {
                eprintln!("owl: warning: {w}");
            }
            for r in &records {
                sums.add(r);
            }
        }
        Ok(CostBook {
            pricer,
            prices,
            cfg,
            ledger,
            sums: Mutex::new(sums),
            process: Mutex::new(Totals::default()),
            started: Instant::now(),
        })
    }

    /// Laptop defaults, the built-in prices, no ledger.
    pub fn in_memory() -> CostBook {
        CostBook::new(CostConfig::default(), PriceTable::builtin(), None)
            .expect("the built-in prices hold the default baseline")
    }

    /// Prices a finished local request, adds it to the sums and, with a ledger, waits
    /// until its record is fsynced: the answer is sent only after that.
    pub async fn charge(
        &self,
        model: &str,
        client: &str,
        usage: &Usage,
        t: &Timings,
        routing: &Routing,
    ) -> Record {
        let served = Served {
            prompt_tokens: usage.prompt_tokens as u64,
            cached_tokens: usage.cached_tokens as u64,
            completion_tokens: usage.completion_tokens as u64,
            prefill_s: t.prefill_s,
            decode_s: t.decode_s,
        };
        let mut rec = self
            .pricer
            .record(owl_ledger::now_unix(), "server", model, client, &served);
        rec.routing = routing.clone();
        self.commit(rec).await
    }

    /// A price from the price table (an upstream's `price=`), or an error naming the known models.
    pub fn price(&self, model: &str) -> Result<&Price, owl_ledger::Error> {
        self.prices.get(model)
    }

    /// Charges a request an upstream answered. `usage` is the upstream's `usage` object;
    /// its cost is `usage.cost` when the upstream reports one (as some gateways do), else
    /// `price` on its tokens, else an owl upstream's own `usage.owl.cost_usd`, else 0.
    /// `draft` is the local busy time spent before escalating (a dropped probe draft).
    pub async fn charge_upstream(
        &self,
        model: &str,
        client: &str,
        usage: &Value,
        price: Option<&Price>,
        draft: Option<&Timings>,
        routing: Routing,
    ) -> Record {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let prompt = n(&usage["prompt_tokens"]);
        let cached = n(&usage["prompt_tokens_details"]["cached_tokens"]);
        let completion = n(&usage["completion_tokens"]);
        let upstream_usd = usage["cost"]
            .as_f64()
            .or_else(|| price.map(|p| p.cost_usd(prompt, cached, completion)))
            .or_else(|| usage["owl"]["cost_usd"].as_f64())
            .filter(|c| c.is_finite() && *c >= 0.0)
            .unwrap_or(0.0);
        let served = Served {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
            prefill_s: draft.map_or(0.0, |t| t.prefill_s),
            decode_s: draft.map_or(0.0, |t| t.decode_s),
        };
        let rec = self.pricer.upstream_record(
            owl_ledger::now_unix(),
            model,
            client,
            &served,
            upstream_usd,
            routing,
        );
        self.commit(rec).await
    }

    async fn commit(&self, rec: Record) -> Record {
        if let Some(l) = &self.ledger {
            let (tx, rx) = tokio::sync::oneshot::channel();
            l.append(rec.clone(), Some(Box::new(move |r| drop(tx.send(r)))));
            // A failed write is reported by the writer; the answer still goes out.
            let _ = rx.await;
        }
        lock(&self.sums).add(&rec);
        lock(&self.process).add(&rec);
        rec
    }

    /// Prometheus lines for this process's cost counters and the engine's busy time.
    pub fn metrics_text(&self, m: &MetricsSnapshot) -> String {
        let p = *lock(&self.process);
        let mut out = String::new();
        for (name, help, v) in [
            ("owl_cost_usd_total", "Local cost of the requests served (their busy-time shares at the configured rate), USD.", p.cost_usd),
            ("owl_baseline_cost_usd_total", "What the same tokens would have cost on the baseline API, USD.", p.baseline_usd),
            ("owl_savings_usd_total", "Baseline cost minus local cost, USD.", p.savings_usd),
            ("owl_busy_seconds_total", "Wall time of the engine's forward steps, seconds.", m.busy_seconds_total),
            ("owl_idle_seconds_total", "Time the engine waited with nothing to run, seconds.", m.idle_seconds_total),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        }
        out
    }

    /// The body of `GET /v1/owl/cost`.
    pub fn summary(&self, m: Option<&MetricsSnapshot>) -> Value {
        let s = lock(&self.sums);
        let all = s.all;
        let list = |map: &BTreeMap<String, Totals>| -> Vec<Value> {
            map.iter().map(|(k, t)| totals_json(Some(k), t)).collect()
        };
        let input_share = all.input_share().unwrap_or(DEFAULT_INPUT_SHARE);
        let local_per_1m = all.local_per_1m();
        let apis: Vec<Value> = self
            .prices
            .models
            .iter()
            .map(|(name, p)| {
                let cost = all.priced_on(p);
                json!({
                    "model": name, "input_per_1m": p.input_per_1m, "output_per_1m": p.output_per_1m,
                    "blended_per_1m": p.blended_per_1m(input_share), "as_of": p.as_of,
                    "cost_usd": cost, "savings_usd": cost - all.cost_usd,
                })
            })
            .collect();
        let api_per_1m = self.pricer.baseline.blended_per_1m(input_share);
        let fixed = self.cfg.fixed_monthly_usd.value;
        let breakeven = local_per_1m.map(|l| match owl_ledger::breakeven(fixed, api_per_1m, l) {
            owl_ledger::BreakEven::Tokens(t) => json!(t),
            owl_ledger::BreakEven::Never => Value::Null,
        });
        let uptime = self.started.elapsed().as_secs_f64();
        let util = m.map(|m| {
            let denom = m.busy_seconds_total + m.idle_seconds_total;
            json!({
                "busy_s": m.busy_seconds_total, "idle_s": m.idle_seconds_total, "uptime_s": uptime,
                "utilisation": if denom > 0.0 { m.busy_seconds_total / denom } else { 0.0 },
            })
        });
        json!({
            "object": "owl.cost",
            "ledger": {
                "enabled": self.ledger.is_some(),
                "dir": self.ledger.as_ref().map(|l| l.dir().display().to_string()),
                "covers": if self.ledger.is_some() { "every record in the ledger" } else { "this process's requests (--no-ledger)" },
                "first_time": s.first_time,
            },
            "config": {
                "hourly_usd": self.cfg.hourly_usd.value, "watts": self.cfg.watts.value, "kwh_usd": self.cfg.kwh_usd.value,
                "fixed_monthly_usd": fixed, "busy_usd_per_hour": self.cfg.busy_usd_per_hour(),
                "from": self.cfg.sources().into_iter().map(|(n, _, o)| (n.to_string(), json!(o))).collect::<serde_json::Map<_, _>>(),
            },
            "baseline_model": self.pricer.baseline_model,
            "totals": totals_json(None, &all),
            "by_model": list(&s.by_model),
            "by_client": list(&s.by_client),
            "by_route": list(&s.by_route),
            "by_day": list(&s.by_day),
            "by_hour": list(&s.by_hour),
            "utilisation": util,
            "input_share": input_share,
            "local_per_1m": local_per_1m,
            "apis": apis,
            "breakeven": {
                "fixed_monthly_usd": fixed, "api_per_1m": api_per_1m, "local_per_1m": local_per_1m,
                "tokens_per_month": breakeven.unwrap_or(Value::Null),
            },
        })
    }
}

/// Prompt share assumed before anything was served.
const DEFAULT_INPUT_SHARE: f64 = 0.75;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn totals_json(key: Option<&str>, t: &Totals) -> Value {
    let mut v = json!({
        "requests": t.requests, "prompt_tokens": t.prompt_tokens, "cached_tokens": t.cached_tokens,
        "completion_tokens": t.completion_tokens, "total_tokens": t.tokens(),
        "prefill_s": t.prefill_s, "decode_s": t.decode_s, "busy_s": t.busy_s(),
        "cost_usd": t.cost_usd, "baseline_usd": t.baseline_usd, "savings_usd": t.savings_usd,
        "upstream_usd": t.upstream_usd, "local_per_1m": t.local_per_1m(),
    });
    if let Some(k) = key {
        v["key"] = json!(k);
    }
    v
}

/// A request handle that still gets charged when its client goes away: dropped before
/// the engine's `Done`, it cancels the request and hands the events to a task that
/// waits for the `Done` (Cancelled, with the busy time spent so far) and records it.
pub struct Guarded {
    handle: Option<RequestHandle>,
    cost: Arc<CostBook>,
    model: String,
    client: String,
    routing: Routing,
    /// A further choice of an `n` > 1 request: its prompt is the first choice's, counted
    /// (and charged) there once, so its own record carries only its completion.
    shares_prompt: bool,
}

/// A further choice's usage: the prompt is the first choice's (see [`Guarded::share_prompt`]).
fn without_prompt(u: &mut Usage) {
    u.prompt_tokens = 0;
    u.cached_tokens = 0;
}

impl CostBook {
    pub fn guard(
        self: &Arc<Self>,
        handle: RequestHandle,
        model: &str,
        client: &str,
        routing: &Routing,
    ) -> Guarded {
        Guarded {
            handle: Some(handle),
            cost: self.clone(),
            model: model.to_string(),
            client: client.to_string(),
            routing: routing.clone(),
            shares_prompt: false,
        }
    }
}

impl Guarded {
    /// Marks a further choice of an `n` > 1 request: its Done reports (and its record
    /// charges) no prompt tokens, so usage summed over the choices counts the prompt once.
    pub fn share_prompt(&mut self) {
        self.shares_prompt = true;
    }

    /// The next engine event, with a further choice's prompt left out of its usage.
    pub async fn recv(&mut self) -> Option<Event> {
        let shares = self.shares_prompt;
        let mut ev = self.handle.as_mut()?.events.recv().await;
        if let (true, Some(Event::Done { usage, .. })) = (shares, ev.as_mut()) {
            without_prompt(usage);
        }
        ev
    }

    /// The route recorded when the request is charged on drop.
    pub fn set_routing(&mut self, r: Routing) {
        self.routing = r;
    }

    /// The handle, no longer charged on drop: the caller charges the request itself
    /// (a probe draft dropped for an upstream answer is part of that answer's record).
    pub fn disarm(mut self) -> RequestHandle {
        self.handle
            .take()
            .expect("a guarded handle is only taken once")
    }
}

impl std::ops::Deref for Guarded {
    type Target = RequestHandle;
    fn deref(&self) -> &RequestHandle {
        self.handle
            .as_ref()
            .expect("a guarded handle is only taken on drop")
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut RequestHandle {
        self.handle
            .as_mut()
            .expect("a guarded handle is only taken on drop")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let Some(mut h) = self.handle.take() else {
            return;
        };
        // After a Done the engine has dropped its sender: the task ends at once, nothing charged twice.
        h.cancel.cancel();
        let shares = self.shares_prompt;
        let (cost, model, client, routing) = (
            self.cost.clone(),
            std::mem::take(&mut self.model),
            std::mem::take(&mut self.client),
            std::mem::take(&mut self.routing),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                while let Some(ev) = h.events.recv().await {
                    if let Event::Done { mut usage, timings, .. } = ev {
                        if shares {
                            without_prompt(&mut usage);
                        }
                        cost.charge(&model, &client, &usage, &timings, &routing)
                            .await;
                        return;
                    }
                }
            });
        }
    }
}

/// `usage.owl` of a response.
pub fn usage_owl(r: &Record) -> Value {
    json!({"cost_usd": r.cost_usd, "baseline_usd": r.baseline_usd, "baseline_model": r.baseline_model, "savings_usd": r.savings_usd})
}

/// `GET /v1/owl/cost`.
pub async fn cost_summary(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let m = st.engine().ok().map(|e| e.metrics());
    Ok(Json(st.cost().summary(m.as_ref())))
}
