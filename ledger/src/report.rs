//! Sums over ledger records: totals, and totals by day, hour, model, client or route.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Price, Record};

/// Sums of a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub prefill_s: f64,
    pub decode_s: f64,
    pub cost_usd: f64,
    pub baseline_usd: f64,
    pub savings_usd: f64,
    /// What upstreams charged (part of cost_usd).
    pub upstream_usd: f64,
}

impl Totals {
    pub fn add(&mut self, r: &Record) {
        self.requests += 1;
        self.prompt_tokens += r.prompt_tokens;
        self.cached_tokens += r.cached_tokens;
        self.completion_tokens += r.completion_tokens;
        self.prefill_s += r.prefill_s;
        self.decode_s += r.decode_s;
        self.cost_usd += r.cost_usd;
        self.baseline_usd += r.baseline_usd;
        self.savings_usd += r.savings_usd;
        self.upstream_usd += r.routing.upstream_usd.unwrap_or(0.0);
    }

    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Totals {
        let mut t = Totals::default();
        for r in records {
            t.add(r);
        }
        t
    }

    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn busy_s(&self) -> f64 {
        self.prefill_s + self.decode_s
    }

    /// Local USD per 1M tokens (prompt + completion), from measured busy time; None without tokens.
    pub fn local_per_1m(&self) -> Option<f64> {
        (self.tokens() > 0).then(|| self.cost_usd / self.tokens() as f64 * 1e6)
    }

    /// Tokens per busy second: this machine's measured throughput.
    pub fn tokens_per_busy_s(&self) -> Option<f64> {
        (self.busy_s() > 0.0 && self.tokens() > 0).then(|| self.tokens() as f64 / self.busy_s())
    }

    /// Share of the tokens that were prompt tokens; None without tokens.
    pub fn input_share(&self) -> Option<f64> {
        (self.tokens() > 0).then(|| self.prompt_tokens as f64 / self.tokens() as f64)
    }

    /// What these tokens would have cost on `price` (another baseline than the recorded one).
    pub fn priced_on(&self, price: &Price) -> f64 {
        price.cost_usd(
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens,
        )
    }
}

/// How records are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Hour,
    Model,
    Client,
    /// `local/confident`, `upstream:big/low_confidence`, ... ([`crate::Routing::key`]).
    Route,
}

impl GroupBy {
    pub fn key(&self, r: &Record) -> String {
        match self {
            GroupBy::Day => day(r.time),
            GroupBy::Hour => hour(r.time),
            GroupBy::Model => r.model.clone(),
            GroupBy::Client => r.client.clone(),
            GroupBy::Route => r.routing.key(),
        }
    }
}

/// Totals per group, in key order (days and hours sort in time order).
pub fn group<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    by: GroupBy,
) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for r in records {
        out.entry(by.key(r)).or_default().add(r);
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The UTC day of Unix time `t`: "2026-12-02".
pub fn day(t: f64) -> String {
    let (y, m, d) = civil((t / 86_400.0).floor() as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The UTC hour of Unix time `t`: "2026-12-02T18".
pub fn hour(t: f64) -> String {
    let h = ((t.rem_euclid(86_400.0)) / 3600.0).floor() as u32;
    format!("{}T{h:02}", day(t))
}

/// A duration like `7d`, `12h`, `30m`, `90s` or `2w`, in seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let mul = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return None,
    };
    Some(n * mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_hours_in_utc() {
        assert_eq!(day(0.0), "1970-01-01");
        assert_eq!(day(951_782_400.0), "2000-02-29");
        assert_eq!(hour(1_796_233_565.0), "2026-12-02T17");
        assert_eq!(day(1_796_233_565.0), "2026-12-02");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Some(604_800.0));
        assert_eq!(parse_duration("12h"), Some(43_200.0));
        assert_eq!(parse_duration("1.5m"), Some(90.0));
        assert_eq!(parse_duration("7"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("3y"), None);
    }
}
