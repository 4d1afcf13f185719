//! Busy time and its fair split: each forward step's wall time is shared among the
//! sequences in that step by the tokens each processed, prompt (prefill) tokens and
//! generated (decode) tokens counted apart, so a long prompt pays for its prefill.
//! Time the engine waits with nothing to run is idle: counted, charged to no one.

/// Tokens one sequence put into a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StepRows {
    pub prefill: usize,
    pub decode: usize,
}

/// Splits `elapsed` seconds among sequences by their rows: (prefill_s, decode_s) each.
/// The parts add up to `elapsed` (up to float rounding); a step with no rows charges no one.
pub(super) fn split(elapsed: f64, rows: &[StepRows]) -> Vec<(f64, f64)> {
    let total: usize = rows.iter().map(|r| r.prefill + r.decode).sum();
    if total == 0 {
        return vec![(0.0, 0.0); rows.len()];
    }
    let per_row = elapsed / total as f64;
    rows.iter()
        .map(|r| (r.prefill as f64 * per_row, r.decode as f64 * per_row))
        .collect()
}

/// The engine's running totals of busy and idle time, seconds.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Clock {
    pub busy_s: f64,
    pub idle_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_by_tokens_and_adds_up() {
        let rows = [
            StepRows {
                prefill: 6,
                decode: 0,
            },
            StepRows {
                prefill: 0,
                decode: 1,
            },
            StepRows {
                prefill: 0,
                decode: 1,
            },
        ];
        let parts = split(0.8, &rows);
        assert!((parts[0].0 - 0.6).abs() < 1e-12 && parts[0].1 == 0.0);
        assert!((parts[1].1 - 0.1).abs() < 1e-12 && parts[1].0 == 0.0);
        assert_eq!(parts[1], parts[2]);
        let sum: f64 = parts.iter().map(|p| p.0 + p.1).sum();
        assert!((sum - 0.8).abs() < 1e-12);
        // Alone in a step: the whole step.
        assert_eq!(
            split(
                0.25,
                &[StepRows {
                    prefill: 3,
                    decode: 0
                }]
            ),
            vec![(0.25, 0.0)]
        );
        assert_eq!(split(0.25, &[StepRows::default()]), vec![(0.0, 0.0)]);
    }
}
