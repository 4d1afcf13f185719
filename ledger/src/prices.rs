//! The API price table: USD per 1M tokens for each model, with when and where each
//! price was read. The table shipped in `ledger/prices.toml` is built in; a file
//! given with `--prices` or `OWL_PRICES` replaces it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::{line_col, parse_error, Error, Origin, Result};

/// The table shipped with owl (`ledger/prices.toml`).
pub const BUILTIN_PRICES: &str = include_str!("../prices.toml");

/// One model's list price, USD per 1M tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub input_per_1m: f64,
    pub output_per_1m: f64,
    /// Cached prompt tokens; `None`: billed as ordinary input.
    pub cached_input_per_1m: Option<f64>,
    /// When the price was read, e.g. "2025-05".
    pub as_of: String,
    /// Where it was read, in words, e.g. "OpenAI API pricing page".
    pub source: String,
}

impl Price {
    /// USD for `input` prompt tokens (of which `cached` were cache hits) and
    /// `output` completion tokens. `cached` is part of `input`, as in OpenAI's usage.
    pub fn cost_usd(&self, input: u64, cached: u64, output: u64) -> f64 {
        let cached = cached.min(input);
        let cached_rate = self.cached_input_per_1m.unwrap_or(self.input_per_1m);
        ((input - cached) as f64 * self.input_per_1m
            + cached as f64 * cached_rate
            + output as f64 * self.output_per_1m)
            / 1e6
    }

    /// USD per 1M tokens at a mix where `input_share` of the tokens are prompt tokens.
    pub fn blended_per_1m(&self, input_share: f64) -> f64 {
        input_share * self.input_per_1m + (1.0 - input_share) * self.output_per_1m
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    models: BTreeMap<String, RawPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_1m: Spanned<f64>,
    output_per_1m: Spanned<f64>,
    cached_input_per_1m: Option<Spanned<f64>>,
    as_of: String,
    source: String,
}

/// Model name -> price, and where the table came from.
#[derive(Debug, Clone)]
pub struct PriceTable {
    pub models: BTreeMap<String, Price>,
    /// "built-in", or the file's path.
    pub file: String,
    pub origin: Origin,
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_PRICES, "built-in prices.toml", Origin::Default)
            .expect("ledger/prices.toml is valid (tested)")
    }

    /// The table to use: `flag` (`--prices`) wins over `env` (`OWL_PRICES`), which
    /// wins over the built-in one.
    pub fn resolve(flag: Option<&Path>, env: Option<&Path>) -> Result<Self> {
        match (flag, env) {
            (Some(p), _) => Self::load(p, Origin::Flag("--prices".into())),
            (None, Some(p)) => Self::load(p, Origin::Env("OWL_PRICES".into())),
            (None, None) => Ok(Self::builtin()),
        }
    }

    pub fn load(path: &Path, origin: Origin) -> Result<Self> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, &path.display().to_string(), origin)
    }

    /// Parses a price table; `file` names it in errors.
    pub fn parse(src: &str, file: &str, origin: Origin) -> Result<Self> {
        let raw: RawTable = toml::from_str(src).map_err(|e| parse_error(file, src, &e))?;
        let mut models = BTreeMap::new();
        for (name, p) in raw.models {
            let check = |v: &Spanned<f64>, field: &str| -> Result<f64> {
                let x = *v.get_ref();
                if x.is_finite() && x >= 0.0 {
                    return Ok(x);
                }
                Err(Error::Invalid {
                    file: file.to_string(),
                    line: line_col(src, v.span().start).0,
                    message: format!(
                        "{name}.{field} = {x}: a price must be a finite number of USD, 0 or more"
                    ),
                })
            };
            let price = Price {
                input_per_1m: check(&p.input_per_1m, "input_per_1m")?,
                output_per_1m: check(&p.output_per_1m, "output_per_1m")?,
                cached_input_per_1m: p
                    .cached_input_per_1m
                    .as_ref()
                    .map(|v| check(v, "cached_input_per_1m"))
                    .transpose()?,
                as_of: p.as_of,
                source: p.source,
            };
            models.insert(name, price);
        }
        Ok(Self {
            models,
            file: file.to_string(),
            origin,
        })
    }

    /// The price of `model`, or an error listing the models the table knows.
    pub fn get(&self, model: &str) -> Result<&Price> {
        self.models.get(model).ok_or_else(|| Error::UnknownModel {
            model: model.to_string(),
            file: self.file.clone(),
            known: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<PriceTable> {
        PriceTable::parse(src, "p.toml", Origin::Default)
    }

    #[test]
    fn builtin_table_has_the_seeded_list_prices() {
        let t = PriceTable::builtin();
        let want = [
            ("gpt-4.1", 2.00, 8.00, "2025-05"),
            ("gpt-4.1-mini", 0.40, 1.60, "2025-05"),
            ("gpt-4.1-nano", 0.10, 0.40, "2025-05"),
            ("o3-mini", 1.10, 4.40, "2025-05"),
            ("o1", 15.00, 60.00, "2025-05"),
            ("gpt-4o", 5.00, 15.00, "2024-05"),
            ("gpt-4o-mini", 0.15, 0.60, "2025-05"),
            ("claude-3.7-sonnet", 3.00, 15.00, "2025-05"),
            ("claude-3.5-haiku", 1.00, 5.00, "2025-05"),
            ("claude-3-haiku", 0.25, 1.25, "2025-05"),
            ("gemini-2.5-flash", 0.15, 0.60, "2025-05"),
            ("gemini-2.0-flash", 0.10, 0.40, "2025-05"),
        ];
        assert_eq!(t.models.len(), want.len());
        for (name, i, o, as_of) in want {
            let p = t.get(name).unwrap();
            assert_eq!((p.input_per_1m, p.output_per_1m), (i, o), "{name}");
            assert_eq!(p.as_of, as_of, "{name}");
            assert!(
                p.source.ends_with("page") || p.source.contains("page ("),
                "{name}"
            );
            assert!(
                !p.source.contains("://") && !p.source.contains(".com"),
                "{name}"
            );
        }
    }

    #[test]
    fn golden_gpt_4_1_one_million_in_and_out_costs_ten_dollars() {
        let t = PriceTable::builtin();
        let c = t.get("gpt-4.1").unwrap().cost_usd(1_000_000, 0, 1_000_000);
        assert!((c - 10.00).abs() < 1e-9, "{c}");
        assert_eq!(format!("{c:.2}"), "10.00");
    }

    #[test]
    fn cached_tokens_are_part_of_input_at_the_cached_rate() {
        let p = parse(
            "[models.m]\ninput_per_1m = 2.0\noutput_per_1m = 8.0\ncached_input_per_1m = 0.5\n\
             as_of = \"2025-05\"\nsource = \"x page\"\n",
        )
        .unwrap();
        let p = p.get("m").unwrap();
        // 600k fresh at 2.0 + 400k cached at 0.5 + 0 output
        assert!((p.cost_usd(1_000_000, 400_000, 0) - 1.4).abs() < 1e-12);
        // no cached rate: cached tokens bill as input
        let q = Price {
            cached_input_per_1m: None,
            ..p.clone()
        };
        assert!((q.cost_usd(1_000_000, 400_000, 0) - 2.0).abs() < 1e-12);
        assert!((p.blended_per_1m(0.75) - 3.5).abs() < 1e-12);
    }

    #[test]
    fn bad_toml_names_the_file_and_line() {
        let e = parse("[models.m]\ninput_per_1m = 2.0\noutput_per_1m = = 8\n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("p.toml:3:"), "{s}");
        assert!(!s.contains('\n'), "one line: {s}");
    }

    #[test]
    fn unknown_field_is_an_error_at_its_line() {
        let src = "[models.m]\ninput_per_1m = 2.0\noutput_per_1m = 8.0\nas_of = \"2025-05\"\n\
                   source = \"x\"\noutput_per_1M = 9.0\n";
        let s = parse(src).unwrap_err().to_string();
        assert!(s.starts_with("p.toml:6:"), "{s}");
        assert!(s.contains("output_per_1M"), "{s}");
    }

    #[test]
    fn missing_field_and_wrong_type_are_errors() {
        let s = parse("[models.m]\ninput_per_1m = 2.0\nas_of = \"x\"\nsource = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("output_per_1m"), "{s}");
        let s = parse(
            "[models.m]\ninput_per_1m = \"2\"\noutput_per_1m = 8.0\nas_of = \"x\"\nsource = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(s.starts_with("p.toml:2:"), "{s}");
    }

    #[test]
    fn negative_price_is_rejected_with_its_line() {
        let src =
            "[models.m]\ninput_per_1m = 2.0\noutput_per_1m = -8.0\nas_of = \"x\"\nsource = \"x\"\n";
        let s = parse(src).unwrap_err().to_string();
        assert!(s.starts_with("p.toml:3: m.output_per_1m = -8"), "{s}");
        let src =
            "[models.m]\ninput_per_1m = nan\noutput_per_1m = 8.0\nas_of = \"x\"\nsource = \"x\"\n";
        assert!(parse(src).unwrap_err().to_string().starts_with("p.toml:2:"));
    }

    #[test]
    fn resolve_prefers_flag_then_env_then_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        let one = |n: &str| {
            format!("[models.{n}]\ninput_per_1m = 1.0\noutput_per_1m = 2.0\nas_of = \"x\"\nsource = \"x\"\n")
        };
        std::fs::write(&a, one("a")).unwrap();
        std::fs::write(&b, one("b")).unwrap();
        let t = PriceTable::resolve(Some(&a), Some(&b)).unwrap();
        assert!(t.get("a").is_ok() && matches!(t.origin, Origin::Flag(_)));
        let t = PriceTable::resolve(None, Some(&b)).unwrap();
        assert!(t.get("b").is_ok() && matches!(t.origin, Origin::Env(_)));
        let t = PriceTable::resolve(None, None).unwrap();
        assert!(t.get("gpt-4.1").is_ok() && t.origin == Origin::Default);
        let e = PriceTable::resolve(Some(&dir.path().join("none.toml")), None).unwrap_err();
        assert!(e.to_string().contains("none.toml"), "{e}");
        let e = t.get("gpt-5").unwrap_err().to_string();
        assert!(e.contains("gpt-5") && e.contains("gpt-4.1-mini"), "{e}");
    }
}
