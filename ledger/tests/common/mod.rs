//! What the ledger's integration tests share.
#![allow(dead_code)]

use owl_ledger::Record;

/// A record whose every count derives from `i`, so records compare by identity.
pub fn rec(i: u64) -> Record {
    Record {
        time: i as f64,
        source: "server".into(),
        model: "m".into(),
        client: "local".into(),
        prompt_tokens: i,
        cached_tokens: 0,
        completion_tokens: 2 * i,
        prefill_s: 0.5,
        decode_s: 0.25,
        cost_usd: 1e-6,
        baseline_model: "gpt-4.1-mini".into(),
        baseline_usd: 2e-6,
        savings_usd: 1e-6,
        routing: Default::default(),
    }
}
