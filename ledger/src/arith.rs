//! The break-even arithmetic: pure functions of dollars and tokens.

/// Break-even between owning and renting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakEven {
    /// Owning is cheaper from this many tokens a month on (0 when there is no fixed cost).
    Tokens(f64),
    /// A local token costs as much as an API token or more: owning never pays back
    /// its fixed cost, however many tokens run.
    Never,
}

/// Tokens a month at which owning pays for itself:
/// `fixed_monthly_usd / (api $/token - local $/token)`, prices given per 1M tokens.
pub fn breakeven(fixed_monthly_usd: f64, api_per_1m: f64, local_per_1m: f64) -> BreakEven {
    let saving_per_token = (api_per_1m - local_per_1m) / 1e6;
    if saving_per_token.is_nan() || saving_per_token <= 0.0 {
        return BreakEven::Never;
    }
    BreakEven::Tokens(fixed_monthly_usd.max(0.0) / saving_per_token)
}

/// USD per 1M tokens of a machine that costs `usd_per_second` while busy and
/// produces `tokens_per_second`.
pub fn local_per_1m(usd_per_second: f64, tokens_per_second: f64) -> f64 {
    usd_per_second / tokens_per_second * 1e6
}

/// A token count the way people say it: 315.8M, 12.0k, 1.2B, 950.
pub fn format_tokens(n: f64) -> String {
    let (div, unit) = if n >= 1e12 {
        (1e12, "T")
    } else if n >= 1e9 {
        (1e9, "B")
    } else if n >= 1e6 {
        (1e6, "M")
    } else if n >= 1e3 {
        (1e3, "k")
    } else {
        return format!("{n:.0}");
    };
    format!("{:.1}{unit}", n / div)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_breakeven_3000_a_month_api_10_local_half() {
        let BreakEven::Tokens(t) = breakeven(3000.0, 10.0, 0.5) else {
            panic!("expected a break-even");
        };
        // 3000 / (9.5e-6) = 315,789,473.68...
        assert!((t - 315_789_473.684_210_5).abs() < 1e-3, "{t}");
        assert_eq!(format_tokens(t), "315.8M");
    }

    #[test]
    fn no_breakeven_when_local_is_not_cheaper() {
        assert_eq!(breakeven(3000.0, 0.5, 0.5), BreakEven::Never);
        assert_eq!(breakeven(3000.0, 0.5, 10.0), BreakEven::Never);
        assert_eq!(breakeven(0.0, 0.5, 10.0), BreakEven::Never);
        assert_eq!(breakeven(3000.0, f64::NAN, 1.0), BreakEven::Never);
    }

    #[test]
    fn no_fixed_cost_pays_from_the_first_token() {
        assert_eq!(breakeven(0.0, 10.0, 0.5), BreakEven::Tokens(0.0));
    }

    #[test]
    fn local_price_from_rate_and_throughput() {
        // $0.0245/h at 50 tok/s: 0.0245/3600/50*1e6 = 0.1361 $/1M
        let p = local_per_1m(0.0245 / 3600.0, 50.0);
        assert!((p - 0.136_111).abs() < 1e-5, "{p}");
    }

    #[test]
    fn token_counts_read_like_people_say_them() {
        assert_eq!(format_tokens(950.0), "950");
        assert_eq!(format_tokens(12_000.0), "12.0k");
        assert_eq!(format_tokens(1.25e9), "1.2B");
    }
}
