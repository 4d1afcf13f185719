//! The cost of owning this machine: the `[cost]` table of `$OWL_HOME/config.toml`
//! (or `--config FILE`). Every value remembers where it came from, so whatever uses
//! it can print it ([`CostConfig::sources`]). The same file's `[[upstream]]` tables
//! (where `owl serve` may send requests, and what they are priced as) are read here
//! too, as plain strings: the server checks them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::{line_col, parse_error, Error, Result};

/// Laptop defaults: about $0.02 an hour of hardware (a $1,400 machine written off
/// over 8 years of hours), 30 W busy at $0.15/kWh, no fixed monthly cost.
pub const DEFAULT_HOURLY_USD: f64 = 0.02;
pub const DEFAULT_WATTS: f64 = 30.0;
pub const DEFAULT_KWH_USD: f64 = 0.15;
pub const DEFAULT_FIXED_MONTHLY_USD: f64 = 0.0;
pub const DEFAULT_BASELINE: &str = "gpt-4.1-mini";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// owl's built-in default.
    Default,
    /// A config file (its path).
    Config(String),
    /// A command-line flag (its name).
    Flag(String),
    /// An environment variable (its name).
    Env(String),
    /// Computed from other values (how).
    Derived(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Config(p) => write!(f, "config {p}"),
            Origin::Flag(n) => write!(f, "flag {n}"),
            Origin::Env(n) => write!(f, "env {n}"),
            Origin::Derived(how) => f.write_str(how),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Sourced<T> {
    pub fn new(value: T, origin: Origin) -> Self {
        Self { value, origin }
    }
    pub fn default(value: T) -> Self {
        Self::new(value, Origin::Default)
    }
    /// Replaces the value with a flag's, when the flag was given.
    pub fn set_flag(&mut self, flag: &str, value: Option<T>) {
        if let Some(v) = value {
            *self = Self::new(v, Origin::Flag(flag.to_string()));
        }
    }
}

/// The `[cost]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CostConfig {
    /// USD per hour of owning the machine: hardware amortised or rented, plus hosting.
    pub hourly_usd: Sourced<f64>,
    /// Power drawn while busy, W.
    pub watts: Sourced<f64>,
    /// Electricity price, USD per kWh.
    pub kwh_usd: Sourced<f64>,
    /// People and upkeep, USD per month; used for break-even only.
    pub fixed_monthly_usd: Sourced<f64>,
    /// The API model local cost is compared with.
    pub baseline: Sourced<String>,
    /// `[[upstream]]` tables, in file order.
    pub upstreams: Vec<UpstreamTable>,
    /// The `[route]` table: `owl serve`'s defaults for `--route-threshold` (written by
    /// `owl route calibrate`) and `--route-probe-tokens`.
    pub route: RouteTable,
}

/// The `[route]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub threshold: Option<f64>,
    pub probe_tokens: Option<usize>,
    /// `--capture FILE`'s default.
    pub capture: Option<std::path::PathBuf>,
}

/// One `[[upstream]]` table: the fields of `owl serve --upstream
/// NAME=URL[,key_env=VAR][,model=MODEL][,price=MODEL][,ca=FILE]`. There is no key field: keys
/// come from the environment variable `key_env` names, never from a file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTable {
    pub name: String,
    pub url: String,
    pub key_env: Option<String>,
    pub model: Option<String>,
    pub price: Option<String>,
    /// A PEM file of the CA(s) an `https://` upstream's certificate must chain to.
    pub ca: Option<String>,
    /// Where the table is: "config.toml:12" (filled in when read).
    #[serde(skip)]
    pub at: String,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            hourly_usd: Sourced::default(DEFAULT_HOURLY_USD),
            watts: Sourced::default(DEFAULT_WATTS),
            kwh_usd: Sourced::default(DEFAULT_KWH_USD),
            fixed_monthly_usd: Sourced::default(DEFAULT_FIXED_MONTHLY_USD),
            baseline: Sourced::default(DEFAULT_BASELINE.to_string()),
            upstreams: Vec::new(),
            route: RouteTable::default(),
        }
    }
}

// Other tables of config.toml belong to other parts of owl; only [cost] is checked here.
#[derive(Deserialize)]
struct RawFile {
    cost: Option<RawCost>,
    #[serde(default)]
    upstream: Vec<Spanned<UpstreamTable>>,
    route: Option<Spanned<RouteTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCost {
    hourly_usd: Option<Spanned<f64>>,
    watts: Option<Spanned<f64>>,
    kwh_usd: Option<Spanned<f64>>,
    fixed_monthly_usd: Option<Spanned<f64>>,
    baseline: Option<String>,
}

impl CostConfig {
    /// `$OWL_HOME/config.toml` (`owl_home` is that folder; a missing file means the
    /// defaults), or `explicit` (`--config FILE`, which must exist).
    pub fn resolve(explicit: Option<&Path>, owl_home: &Path) -> Result<Self> {
        match explicit {
            Some(p) => Self::load(p),
            None => {
                let p = Self::default_path(owl_home);
                if p.exists() {
                    Self::load(&p)
                } else {
                    Ok(Self::default())
                }
            }
        }
    }

    pub fn default_path(owl_home: &Path) -> PathBuf {
        owl_home.join("config.toml")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, &path.display().to_string())
    }

    /// Parses a config file; `file` names it in errors and in each value's origin.
    pub fn parse(src: &str, file: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(src).map_err(|e| parse_error(file, src, &e))?;
        let mut c = Self::default();
        for u in raw.upstream {
            let line = line_col(src, u.span().start).0;
            let mut t = u.into_inner();
            t.at = format!("{file}:{line}");
            c.upstreams.push(t);
        }
        if let Some(r) = raw.route {
            let line = line_col(src, r.span().start).0;
            let r = r.into_inner();
            if let Some(t) = r.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
                return Err(Error::Invalid {
                    file: file.to_string(),
                    line,
                    message: format!("route.threshold = {t}: must be between 0 and 1"),
                });
            }
            if r.probe_tokens == Some(0) {
                return Err(Error::Invalid {
                    file: file.to_string(),
                    line,
                    message: "route.probe_tokens = 0: must be at least 1".into(),
                });
            }
            c.route = r;
        }
        let Some(cost) = raw.cost else {
            return Ok(c);
        };
        let origin = || Origin::Config(file.to_string());
        let take = |slot: &mut Sourced<f64>, v: Option<Spanned<f64>>, name: &str| {
            if let Some(v) = v {
                let x = *v.get_ref();
                if !(x.is_finite() && x >= 0.0) {
                    return Err(Error::Invalid {
                        file: file.to_string(),
                        line: line_col(src, v.span().start).0,
                        message: format!("cost.{name} = {x}: must be a finite number, 0 or more"),
                    });
                }
                *slot = Sourced::new(x, origin());
            }
            Ok(())
        };
        take(&mut c.hourly_usd, cost.hourly_usd, "hourly_usd")?;
        take(&mut c.watts, cost.watts, "watts")?;
        take(&mut c.kwh_usd, cost.kwh_usd, "kwh_usd")?;
        take(
            &mut c.fixed_monthly_usd,
            cost.fixed_monthly_usd,
            "fixed_monthly_usd",
        )?;
        if let Some(b) = cost.baseline {
            c.baseline = Sourced::new(b, origin());
        }
        Ok(c)
    }

    /// USD per hour of busy time: ownership plus energy.
    pub fn busy_usd_per_hour(&self) -> f64 {
        self.hourly_usd.value + self.watts.value / 1000.0 * self.kwh_usd.value
    }

    /// USD per second of busy time, the rate a request's local cost is charged at.
    pub fn local_usd_per_second(&self) -> f64 {
        self.busy_usd_per_hour() / 3600.0
    }

    /// Each value as (name, value, where it came from), for printing where it is used.
    pub fn sources(&self) -> Vec<(&'static str, String, String)> {
        let f = |s: &Sourced<f64>| (format!("{}", s.value), s.origin.to_string());
        let mut out = Vec::new();
        for (name, s) in [
            ("hourly_usd", &self.hourly_usd),
            ("watts", &self.watts),
            ("kwh_usd", &self.kwh_usd),
            ("fixed_monthly_usd", &self.fixed_monthly_usd),
        ] {
            let (v, o) = f(s);
            out.push((name, v, o));
        }
        out.push((
            "baseline",
            self.baseline.value.clone(),
            self.baseline.origin.to_string(),
        ));
        out
    }
}

/// `src` (a config file's text) with `[route] threshold = t`: the line replaced where
/// the table has one, else added under `[route]`, else a `[route]` table appended.
/// Everything else in the file is kept as it was.
pub fn with_route_threshold(src: &str, t: f64) -> String {
    let line = format!("threshold = {t}");
    let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
    let header = lines.iter().position(|l| l.trim() == "[route]");
    match header {
        Some(h) => {
            let end = lines[h + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |i| h + 1 + i);
            let key = lines[h + 1..end].iter().position(|l| {
                l.trim_start()
                    .strip_prefix("threshold")
                    .is_some_and(|r| r.trim_start().starts_with('='))
            });
            match key {
                Some(k) => lines[h + 1 + k] = line,
                None => lines.insert(h + 1, line),
            }
        }
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push("[route]".into());
            lines.push(line);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_default_file_gives_laptop_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = CostConfig::resolve(None, dir.path()).unwrap();
        assert_eq!(c, CostConfig::default());
        assert!(c.sources().iter().all(|(_, _, o)| o == "default"));
        // 0.02 $/h + 30 W * 0.15 $/kWh = 0.0245 $/h
        assert!((c.busy_usd_per_hour() - 0.0245).abs() < 1e-12);
        assert!((c.local_usd_per_second() - 0.0245 / 3600.0).abs() < 1e-15);
    }

    #[test]
    fn config_file_values_say_they_came_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = CostConfig::default_path(dir.path());
        std::fs::write(
            &p,
            "[server]\nport = 1\n\n[cost]\nhourly_usd = 2.5\nbaseline = \"gpt-4.1\"\n",
        )
        .unwrap();
        let c = CostConfig::resolve(None, dir.path()).unwrap();
        assert_eq!(c.hourly_usd.value, 2.5);
        assert_eq!(c.hourly_usd.origin, Origin::Config(p.display().to_string()));
        assert_eq!(c.baseline.value, "gpt-4.1");
        assert_eq!(c.watts, Sourced::default(DEFAULT_WATTS));
        let mut c = c;
        c.watts.set_flag("--watts", Some(700.0));
        let s = c.sources();
        assert_eq!(s[1], ("watts", "700".into(), "flag --watts".into()));
        assert!(s[0].2.starts_with("config "), "{:?}", s[0]);
    }

    #[test]
    fn upstream_tables_are_read_with_their_place_and_keys_are_refused() {
        let src = "[cost]\nwatts = 30\n\n[[upstream]]\nname = \"big\"\nurl = \"http://127.0.0.1:8081/v1\"\nkey_env = \"BIG_KEY\"\nprice = \"gpt-4.1\"\n\n[[upstream]]\nname = \"other\"\nurl = \"http://h/v1\"\n";
        let c = CostConfig::parse(src, "c.toml").unwrap();
        assert_eq!(c.upstreams.len(), 2);
        let u = &c.upstreams[0];
        assert_eq!(
            (
                u.name.as_str(),
                u.url.as_str(),
                u.key_env.as_deref(),
                u.price.as_deref(),
                u.model.as_deref()
            ),
            (
                "big",
                "http://127.0.0.1:8081/v1",
                Some("BIG_KEY"),
                Some("gpt-4.1"),
                None
            )
        );
        assert!(u.at.starts_with("c.toml:"), "{}", u.at);
        assert_eq!(c.watts.value, 30.0);
        let e = CostConfig::parse(
            "[[upstream]]\nname = \"a\"\nurl = \"http://h\"\nkey = \"sk-1\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("key") && !e.to_string().contains("sk-1"),
            "{e}"
        );
        let e = CostConfig::parse("[[upstream]]\nname = \"a\"\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
    }

    #[test]
    fn the_route_table_is_read_checked_and_rewritten_in_place() {
        let src = "[cost]\nwatts = 30\n\n[route]\nprobe_tokens = 8\nthreshold = 0.5 # old\n\n[[upstream]]\nname = \"a\"\nurl = \"http://h\"\n";
        let c = CostConfig::parse(src, "c.toml").unwrap();
        assert_eq!(
            (c.route.threshold, c.route.probe_tokens),
            (Some(0.5), Some(8))
        );
        let new = with_route_threshold(src, 0.25);
        let c2 = CostConfig::parse(&new, "c.toml").unwrap();
        assert_eq!(
            (c2.route.threshold, c2.route.probe_tokens),
            (Some(0.25), Some(8))
        );
        assert_eq!((c2.watts.value, c2.upstreams.len()), (30.0, 1));
        assert_eq!(new.matches("threshold").count(), 1);
        let appended = with_route_threshold("[cost]\nwatts = 1\n", 0.75);
        assert_eq!(appended, "[cost]\nwatts = 1\n\n[route]\nthreshold = 0.75\n");
        assert_eq!(
            CostConfig::parse(&with_route_threshold("", 1.0), "c.toml")
                .unwrap()
                .route
                .threshold,
            Some(1.0)
        );
        let e = CostConfig::parse("[route]\nthreshold = 1.5\n", "c.toml").unwrap_err();
        assert!(
            e.to_string().starts_with("c.toml:1: route.threshold = 1.5"),
            "{e}"
        );
    }

    #[test]
    fn explicit_config_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let e = CostConfig::resolve(Some(&dir.path().join("nope.toml")), dir.path()).unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }

    #[test]
    fn bad_values_name_file_and_line() {
        let e = CostConfig::parse("[cost]\nwatts = 30\nkwh_usd = -0.1\n", "c.toml").unwrap_err();
        assert!(
            e.to_string().starts_with("c.toml:3: cost.kwh_usd = -0.1"),
            "{e}"
        );
        let e = CostConfig::parse("[cost]\nwatt = 30\n", "c.toml").unwrap_err();
        assert!(
            e.to_string().starts_with("c.toml:2:") && e.to_string().contains("watt"),
            "{e}"
        );
        let e = CostConfig::parse("[cost\n", "c.toml").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:1:"), "{e}");
    }
}
