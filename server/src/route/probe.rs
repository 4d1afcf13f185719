//! The confidence probe: how sure the local model is of its first tokens.
//!
//! The local model generates its first `--route-probe-tokens` tokens (default 16)
//! as usual, with the chosen tokens' log-probabilities `l_i` (natural log, <= 0).
//! Three signals (Gupta et al. 2024 found a low quantile beats the mean), each
//! mapped into [0, 1]:
//!
//! - `p_mean = exp(mean l_i)`: the geometric mean of the chosen tokens' probabilities;
//! - `p_q10  = exp(q10)`, `q10` the 10th percentile of `l_i` (nearest rank: the
//!   `ceil(0.1 n)`-th smallest): how bad the worst tokens are;
//! - `sure   = 1 - share of l_i below ln(0.1)` (tokens the model gave under 10%).
//!
//! `score = (p_mean + p_q10 + sure) / 3`, in [0, 1]. No tokens at all (the model
//! ended at once) scores 0: an empty answer is not a confident one.
//! The request escalates when `score < T` (`--route-threshold T`); T = 0 keeps
//! everything local, T = 1 sends everything upstream (even a score of exactly 1),
//! without probing: the router skips the draft when [`always_escalates`].

/// Tokens below this logprob count as unsure: ln(0.1).
pub const FLOOR: f32 = -std::f32::consts::LN_10;

/// The confidence score of a draft's chosen-token logprobs, in [0, 1].
pub fn score(logprobs: &[f32]) -> f64 {
    let l: Vec<f64> = logprobs
        .iter()
        .map(|&x| {
            if x.is_finite() {
                f64::from(x.min(0.0))
            } else {
                -1e3
            }
        })
        .collect();
    if l.is_empty() {
        return 0.0;
    }
    let n = l.len();
    let mean = l.iter().sum::<f64>() / n as f64;
    let mut sorted = l.clone();
    sorted.sort_by(f64::total_cmp);
    let rank = ((0.1 * n as f64).ceil() as usize).clamp(1, n);
    let q10 = sorted[rank - 1];
    let unsure = l.iter().filter(|&&x| x < f64::from(FLOOR)).count() as f64 / n as f64;
    ((mean.exp() + q10.exp() + (1.0 - unsure)) / 3.0).clamp(0.0, 1.0)
}

/// Whether a draft with `score` escalates under threshold `t`.
pub fn escalates(score: f64, t: f64) -> bool {
    always_escalates(t) || score < t
}

/// Whether threshold `t` keeps every score local, so that the probe need hold
/// nothing back (a stream sends its tokens as they come).
pub fn never_escalates(t: f64) -> bool {
    t <= 0.0
}

/// Whether threshold `t` escalates every score, so that the probe need not run.
pub fn always_escalates(t: f64) -> bool {
    t >= 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_tokens_score_one_and_unsure_ones_less() {
        assert!((score(&[0.0; 16]) - 1.0).abs() < 1e-12);
        assert_eq!(score(&[]), 0.0);
        // Every token at probability 0.5: exp(mean) = exp(q10) = 0.5, none under 10%.
        let half = score(&[0.5f32.ln(); 8]);
        assert!((half - (0.5 + 0.5 + 1.0) / 3.0).abs() < 1e-6, "{half}");
        // One very unsure token among ten drags the quantile and the share down.
        let mut one_bad = vec![0.0f32; 10];
        one_bad[3] = 0.01f32.ln();
        let s = score(&one_bad);
        let want = ((0.01f64.ln() / 10.0).exp() + 0.01 + 0.9) / 3.0;
        assert!((s - want).abs() < 1e-6, "{s} vs {want}");
        assert!(s < half);
        assert!(score(&[f32::NEG_INFINITY, 0.0]) < 0.6);
    }

    #[test]
    fn thresholds_zero_and_one_are_the_extremes() {
        for s in [0.0, 0.3, 1.0] {
            assert!(!escalates(s, 0.0));
            assert!(escalates(s, 1.0));
        }
        assert!(always_escalates(1.0) && !always_escalates(0.999) && !always_escalates(0.0));
        assert!(never_escalates(0.0) && !never_escalates(1e-9) && !never_escalates(1.0));
        for s in [0.0, 1e-12, 0.5] {
            assert!(
                !escalates(s, 0.0),
                "what never escalates must never escalate"
            );
        }
        assert!(escalates(0.4, 0.5) && !escalates(0.6, 0.5));
    }
}
