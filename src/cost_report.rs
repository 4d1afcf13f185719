//! `owl cost` (the ledger's sums over a window, by day, model, client or route) and
//! `owl cost estimate` (what N tokens a month would cost on this machine, from its
//! measured throughput, against every API in the price table). The sums live in
//! owl-ledger; this file picks records, prints the inputs it used, then the table.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use owl_ledger::{report, CostConfig, GroupBy, PriceTable, Record, Totals};
use serde_json::json;

use crate::cost::{num, print_md, table_origin, usd};

/// Hours in an average month (8766 h a year / 12).
pub const HOURS_PER_MONTH: f64 = 730.5;

#[derive(clap::Args, Debug, Default)]
pub struct ReportArgs {
    /// Only requests newer than this: 30m, 12h, 7d, 4w ("all" for everything).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub since: String,
    /// One row per day (UTC), model, client or route (route/reason: what each tier served and saved).
    #[arg(long, value_parser = ["day", "model", "client", "route"])]
    pub by: Option<String>,
    /// Price the same tokens on this API instead of the one each record was priced on.
    #[arg(long, value_name = "MODEL")]
    pub baseline: Option<String>,
    /// Output: md (table), json or csv.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json", "csv"])]
    pub output: String,
}

/// Every record in this machine's ledger, with a warning printed for each skipped line.
pub fn ledger_records(owl_home: &Path) -> (std::path::PathBuf, Vec<Record>) {
    let dir = owl_ledger::store::default_dir(owl_home);
    let (records, warnings) = owl_ledger::store::read_all(&dir);
    for w in warnings {
        eprintln!("owl: warning: {w}");
    }
    (dir, records)
}

/// A group's row: the recorded sums, re-priced on another baseline when asked.
struct Row {
    key: String,
    t: Totals,
    baseline_usd: f64,
    window_s: f64,
}

impl Row {
    fn savings(&self) -> f64 {
        self.baseline_usd - self.t.cost_usd
    }
    fn utilisation(&self) -> f64 {
        if self.window_s > 0.0 {
            self.t.busy_s() / self.window_s
        } else {
            0.0
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "key": self.key, "requests": self.t.requests, "prompt_tokens": self.t.prompt_tokens,
            "cached_tokens": self.t.cached_tokens, "completion_tokens": self.t.completion_tokens,
            "total_tokens": self.t.tokens(), "busy_s": self.t.busy_s(), "cost_usd": self.t.cost_usd,
            "baseline_usd": self.baseline_usd, "savings_usd": self.savings(), "upstream_usd": self.t.upstream_usd,
            "local_per_1m": self.t.local_per_1m(), "utilisation": self.utilisation(), "window_s": self.window_s,
        })
    }
    fn cells(&self, routes: bool) -> Vec<String> {
        let mut c = vec![
            self.key.clone(),
            self.t.requests.to_string(),
            self.t.prompt_tokens.to_string(),
            self.t.completion_tokens.to_string(),
            format!("{:.3}", self.t.busy_s()),
            usd(self.t.cost_usd),
            usd(self.baseline_usd),
            usd(self.savings()),
            self.t
                .local_per_1m()
                .map_or("-".into(), |x| format!("{x:.4}")),
            format!("{:.2}%", 100.0 * self.utilisation()),
        ];
        if routes {
            c.insert(6, usd(self.t.upstream_usd));
        }
        c
    }
}

const HEADER: [&str; 10] = [
    "group",
    "requests",
    "prompt tokens",
    "completion tokens",
    "busy s",
    "local $",
    "baseline $",
    "saved $",
    "local $/1M",
    "utilisation",
];

pub fn cmd_report(
    a: &ReportArgs,
    cfg: &CostConfig,
    prices: impl FnOnce() -> Result<PriceTable>,
    owl_home: &Path,
) -> Result<ExitCode> {
    let now = owl_ledger::now_unix();
    let since = match a.since.as_str() {
        "all" => None,
        s => Some(report::parse_duration(s).ok_or_else(|| {
            anyhow::anyhow!("--since {s:?}: expected a duration like 30m, 12h, 7d or 4w, or all")
        })?),
    };
    let cutoff = since.map_or(f64::NEG_INFINITY, |s| now - s);
    let (dir, all) = ledger_records(owl_home);
    let records: Vec<&Record> = all.iter().filter(|r| r.time >= cutoff).collect();
    let baseline_price = match &a.baseline {
        Some(m) => Some((m.clone(), prices()?.get(m)?.clone())),
        None => None,
    };
    let baseline_name = match (&baseline_price, records.last()) {
        (Some((m, _)), _) => m.clone(),
        (None, Some(r)) => r.baseline_model.clone(),
        (None, None) => cfg.baseline.value.clone(),
    };
    // Utilisation is busy time over the window: from the cutoff (or the first record) to now.
    let start = records.first().map_or(now, |r| r.time).max(cutoff).min(now);
    let row = |key: String, t: Totals, window_s: f64| {
        let baseline_usd = baseline_price
            .as_ref()
            .map_or(t.baseline_usd, |(_, p)| t.priced_on(p));
        Row {
            key,
            t,
            baseline_usd,
            window_s,
        }
    };
    let total = row(
        "total".into(),
        Totals::of(records.iter().copied()),
        now - start,
    );
    let by = match a.by.as_deref() {
        Some("day") => Some(GroupBy::Day),
        Some("model") => Some(GroupBy::Model),
        Some("client") => Some(GroupBy::Client),
        Some("route") => Some(GroupBy::Route),
        _ => None,
    };
    // By route, cost is local busy time plus what upstreams charged, shown on its own.
    let routes = by == Some(GroupBy::Route);
    let mut header: Vec<&str> = HEADER.to_vec();
    if routes {
        header[5] = "cost $";
        header.insert(6, "upstream $");
    }
    let rows: Vec<Row> = match by {
        None => Vec::new(),
        Some(b) => report::group(records.iter().copied(), b)
            .into_iter()
            .map(|(k, t)| {
                let w = if b == GroupBy::Day {
                    let d0 = records
                        .iter()
                        .find(|r| report::day(r.time) == k)
                        .map_or(start, |r| (r.time / 86_400.0).floor() * 86_400.0);
                    (d0 + 86_400.0).min(now) - d0.max(start)
                } else {
                    now - start
                };
                row(k, t, w)
            })
            .collect(),
    };
    let window = match since {
        Some(_) => format!("the last {}", a.since),
        None => "all time".into(),
    };
    let rate = format!(
        "busy time at ${}/h (hourly_usd {} from {}, watts {} from {}, kwh_usd {} from {})",
        num(cfg.busy_usd_per_hour()),
        num(cfg.hourly_usd.value),
        cfg.hourly_usd.origin,
        num(cfg.watts.value),
        cfg.watts.origin,
        num(cfg.kwh_usd.value),
        cfg.kwh_usd.origin
    );
    let baseline_from = if a.baseline.is_some() {
        "flag --baseline".to_string()
    } else {
        "as each request was priced".to_string()
    };
    match a.output.as_str() {
        "json" => {
            let doc = json!({
                "ledger_dir": dir.display().to_string(), "window": window, "since_unix": since.map(|_| cutoff),
                "baseline_model": baseline_name, "baseline_from": baseline_from,
                "busy_usd_per_hour": cfg.busy_usd_per_hour(),
                "groups": rows.iter().map(Row::json).collect::<Vec<_>>(), "by": a.by, "totals": total.json(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        "csv" => {
            println!("{}", header.join(","));
            for r in rows.iter().chain(std::iter::once(&total)) {
                let c = r.json();
                let mut cells = vec![
                    csv_field(&r.key),
                    r.t.requests.to_string(),
                    r.t.prompt_tokens.to_string(),
                    r.t.completion_tokens.to_string(),
                    r.t.busy_s().to_string(),
                    r.t.cost_usd.to_string(),
                    r.baseline_usd.to_string(),
                    r.savings().to_string(),
                    c["local_per_1m"]
                        .as_f64()
                        .map_or(String::new(), |x| x.to_string()),
                    r.utilisation().to_string(),
                ];
                if routes {
                    cells.insert(6, r.t.upstream_usd.to_string());
                }
                println!("{}", cells.join(","));
            }
        }
        _ => {
            println!(
                "ledger {} · {window} · {} requests",
                dir.display(),
                total.t.requests
            );
            println!("local cost: {rate}");
            println!("baseline: {baseline_name} ({baseline_from})\n");
            if records.is_empty() {
                println!("no requests in {window}: serve some with owl serve, owl run or owl chat (unless --no-ledger)");
                return Ok(ExitCode::SUCCESS);
            }
            print_md(
                &header,
                rows.iter()
                    .chain(std::iter::once(&total))
                    .map(|r| r.cells(routes)),
            );
            println!(
                "\nlocal $/1M = local cost / (prompt + completion tokens) x 1M, from measured busy time; \
                 utilisation = busy s / wall s of the window"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[derive(clap::Args, Debug)]
pub struct EstimateArgs {
    /// Tokens (prompt + completion) a month to price.
    #[arg(long, value_name = "N")]
    pub tokens_per_month: f64,
    /// Measure this model (the ledger's records of it, or a short bench run); default: the
    /// ledger's records of every model, or the default model when the ledger is empty.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Device for the bench run when the ledger has nothing to measure.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output: md or json.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
    pub output: String,
}

/// Throughput (tokens per busy second) and input share, and where they came from.
struct Measured {
    tokens_per_s: f64,
    input_share: f64,
    from: String,
}

/// One request of 192 prompt and 64 generated tokens (the ledger's default 3:1 mix),
/// after a warm-up: its tokens over its busy seconds.
fn bench(model: &str, device: &str) -> Result<Measured> {
    use owl_engine::{Engine, Event, Prompt, Request, SamplingParams};
    eprintln!(
        "owl: the ledger has no requests to measure; running a short bench of {model} on {device}…"
    );
    let cfg = crate::run::engine_config(Some(model), device, 1024, None, 1, None)?;
    let engine = Engine::start(cfg)?;
    let n_vocab = engine.info().n_vocab as u32;
    let mut last = None;
    for rep in 0..2u32 {
        let tokens: Vec<u32> = (0..192u32)
            .map(|i| (1000 + 7 * i + rep * 13) % n_vocab)
            .collect();
        let mut req = Request::new(Prompt::Tokens(tokens));
        req.max_tokens = Some(64);
        req.stop_at_eog = false;
        req.sampling = SamplingParams::greedy();
        let mut h = engine.submit(req)?;
        loop {
            match h.next_blocking() {
                Some(Event::Done { usage, timings, .. }) => {
                    last = Some((
                        (usage.prompt_tokens + usage.completion_tokens) as f64,
                        timings.busy_s(),
                    ));
                    break;
                }
                Some(Event::Error(e)) => bail!("{e}"),
                None => bail!("the engine stopped"),
                _ => {}
            }
        }
    }
    let (tokens, busy) = last.unwrap_or((0.0, 0.0));
    if busy <= 0.0 {
        bail!("the bench run measured no busy time");
    }
    let info = engine.info();
    Ok(Measured {
        tokens_per_s: tokens / busy,
        input_share: 0.75,
        from: format!(
            "a bench run of {} on {} (192 prompt + 64 generated tokens, {} threads)",
            info.name, info.device, info.threads
        ),
    })
}

pub fn cmd_estimate(
    a: &EstimateArgs,
    cfg: &CostConfig,
    prices: &PriceTable,
    owl_home: &Path,
) -> Result<ExitCode> {
    let n = a.tokens_per_month;
    if !(n.is_finite() && n > 0.0) {
        bail!("--tokens-per-month must be more than 0 (got {n})");
    }
    let (dir, all) = ledger_records(owl_home);
    let mine: Vec<&Record> = all
        .iter()
        .filter(|r| a.model.as_ref().is_none_or(|m| &r.model == m))
        .collect();
    let t = Totals::of(mine.iter().copied());
    let m = match (t.tokens_per_busy_s(), t.input_share()) {
        (Some(tps), Some(share)) => Measured {
            tokens_per_s: tps,
            input_share: share,
            from: format!(
                "the ledger {} ({} requests{}, {} tokens in {:.2} busy s)",
                dir.display(),
                t.requests,
                a.model
                    .as_ref()
                    .map_or(String::new(), |m| format!(" of {m}")),
                t.tokens(),
                t.busy_s()
            ),
        },
        _ => bench(
            a.model
                .as_deref()
                .unwrap_or(owl_engine::registry::default_model()),
            &a.device,
        )?,
    };
    let busy_s = n / m.tokens_per_s;
    let capacity = m.tokens_per_s * HOURS_PER_MONTH * 3600.0;
    let machines = (n / capacity).ceil().max(1.0);
    let utilisation = n / (machines * capacity);
    let energy = busy_s / 3600.0 * cfg.watts.value / 1000.0 * cfg.kwh_usd.value;
    let hardware = machines * cfg.hourly_usd.value * HOURS_PER_MONTH;
    let fixed = cfg.fixed_monthly_usd.value;
    let owning = hardware + energy + fixed;
    let local_per_1m = owl_ledger::local_per_1m(cfg.local_usd_per_second(), m.tokens_per_s);
    let apis: Vec<(String, f64, f64)> = prices
        .models
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                p.blended_per_1m(m.input_share),
                p.blended_per_1m(m.input_share) * n / 1e6,
            )
        })
        .collect();
    let inputs: Vec<(&str, String, String)> = vec![
        (
            "tokens_per_month",
            format!("{n:.0}"),
            "flag --tokens-per-month".into(),
        ),
        (
            "tokens_per_busy_second",
            format!("{:.1}", m.tokens_per_s),
            m.from.clone(),
        ),
        (
            "input_share",
            num(m.input_share),
            if m.from.starts_with("the ledger") {
                "the ledger's prompt/(prompt+completion)".into()
            } else {
                "default 3:1".into()
            },
        ),
        (
            "hourly_usd",
            num(cfg.hourly_usd.value),
            cfg.hourly_usd.origin.to_string(),
        ),
        ("watts", num(cfg.watts.value), cfg.watts.origin.to_string()),
        (
            "kwh_usd",
            num(cfg.kwh_usd.value),
            cfg.kwh_usd.origin.to_string(),
        ),
        (
            "fixed_monthly_usd",
            num(fixed),
            cfg.fixed_monthly_usd.origin.to_string(),
        ),
        (
            "hours_per_month",
            num(HOURS_PER_MONTH),
            "8766 h a year / 12".into(),
        ),
        ("prices", table_origin(prices), String::new()),
    ];
    if a.output == "json" {
        let doc = json!({
            "inputs": inputs.iter().map(|(k, v, f)| (k.to_string(), json!({"value": v.parse::<f64>().map_or_else(|_| json!(v), |x| json!(x)), "from": f}))).collect::<serde_json::Map<_, _>>(),
            "tokens_per_month": n, "tokens_per_second": m.tokens_per_s, "busy_hours_per_month": busy_s / 3600.0,
            "machines": machines, "utilisation": utilisation, "local_per_1m": local_per_1m,
            "owning_monthly_usd": {"hardware": hardware, "energy": energy, "fixed": fixed, "total": owning},
            "apis": apis.iter().map(|(name, per1m, cost)| json!({"model": name, "blended_per_1m": per1m, "monthly_usd": cost, "savings_usd": cost - owning})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("inputs:\n");
    print_md(
        &["input", "value", "from"],
        inputs
            .into_iter()
            .map(|(k, v, f)| vec![k.to_string(), v, f]),
    );
    println!(
        "\nthis machine: {:.1} tokens/s busy, {} tokens a month at most; {} tokens a month needs {machines} machine{} like it \
         ({:.1}% busy), {:.1} busy hours",
        m.tokens_per_s,
        owl_ledger::format_tokens(capacity),
        owl_ledger::format_tokens(n),
        if machines == 1.0 { "" } else { "s" },
        100.0 * utilisation,
        busy_s / 3600.0
    );
    println!(
        "owning: {} a month = hardware {} ({machines} x {}/h x {} h) + energy {} + fixed {}; busy time alone is {} per 1M tokens\n",
        usd(owning),
        usd(hardware),
        usd(cfg.hourly_usd.value),
        num(HOURS_PER_MONTH),
        usd(energy),
        usd(fixed),
        usd(local_per_1m)
    );
    let mut rows: Vec<Vec<String>> = vec![vec![
        "this machine (measured)".into(),
        format!("{:.4}", owning / n * 1e6),
        usd(owning),
        "-".into(),
    ]];
    for (name, per1m, cost) in &apis {
        rows.push(vec![
            name.clone(),
            format!("{per1m:.4}"),
            usd(*cost),
            usd(cost - owning),
        ]);
    }
    print_md(
        &["where", "$ per 1M tokens", "a month", "owning saves"],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}
