//! One sequence's constraint: an llguidance matcher, plus the optional trigger
//! that holds it back until the output contains a given text.

use std::sync::Arc;
use std::time::Instant;

use llguidance::toktrie::TokTrie;
use llguidance::Matcher;

use super::trigger::Scan;
use super::{ConstraintEnv, Trigger};

/// The tokens a sequence may sample next (a bit per vocabulary id).
#[derive(Debug)]
pub struct Mask(llguidance::toktrie::SimpleVob);

/// What a sampled token did to the constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advance {
    /// Generation goes on.
    Continue,
    /// The grammar is complete and allows nothing more: stop after this token.
    Complete,
}

pub struct SeqConstraint {
    env: Arc<ConstraintEnv>,
    matcher: Matcher,
    /// Text that switches the grammar on; None once it has been seen (or there was none).
    trigger: Option<Trigger>,
    /// Output bytes so far while waiting for the trigger.
    seen: Vec<u8>,
    /// Where in `seen` the trigger may still start (earlier starts failed).
    scan_from: usize,
    /// Start over when the grammar completes (`owl bench --json-schema`).
    repeat: bool,
    /// Seconds spent computing masks and advancing the grammar.
    busy_s: f64,
}

impl std::fmt::Debug for SeqConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqConstraint")
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}

impl SeqConstraint {
    pub(super) fn new(
        env: Arc<ConstraintEnv>,
        matcher: Matcher,
        trigger: Option<Trigger>,
        repeat: bool,
    ) -> SeqConstraint {
        SeqConstraint {
            env,
            matcher,
            trigger,
            seen: Vec::new(),
            scan_from: 0,
            repeat,
            busy_s: 0.0,
        }
    }

    /// Seconds this sequence has spent in the grammar: masks and token advances.
    pub fn busy_s(&self) -> f64 {
        self.busy_s
    }

    /// Whether the grammar applies to the next token (false while waiting for the trigger).
    pub fn is_active(&self) -> bool {
        self.trigger.is_none()
    }

    /// Sets every logit the grammar does not allow to -inf (ids past the vocabulary too).
    /// The end-of-sequence token is allowed only where the grammar accepts.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), String> {
        if let Some(mask) = self.compute_mask()? {
            self.apply_mask(&mask, logits);
        }
        Ok(())
    }

    /// The mask for the next token (None while waiting for the trigger: nothing is
    /// masked). It depends only on the tokens fed so far, so it may be computed on
    /// another thread while the forward pass that makes the logits runs.
    pub fn compute_mask(&mut self) -> Result<Option<Mask>, String> {
        if !self.is_active() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let mask = self.matcher.compute_mask_or_eos();
        self.busy_s += t0.elapsed().as_secs_f64();
        let mask = mask.map_err(|e| e.to_string())?;
        if mask.num_set() == 0 {
            return Err("the grammar allows no further token".into());
        }
        Ok(Some(Mask(mask)))
    }

    /// Puts a mask from [`SeqConstraint::compute_mask`] on a logits row.
    pub fn apply_mask(&self, mask: &Mask, logits: &mut [f32]) {
        for (i, l) in logits.iter_mut().enumerate() {
            if i >= self.env.n_vocab || !mask.0.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// The grammar ended the sequence with this token (its EOS, allowed only when it accepts):
    /// the token is not part of the output.
    pub fn ends_with(&self, id: u32) -> bool {
        self.is_active() && id == self.env.eos && !self.repeat
    }

    /// Feeds a sampled token (not the one `ends_with` stopped at).
    pub fn advance(&mut self, id: u32) -> Result<Advance, String> {
        let t0 = Instant::now();
        let r = self.advance_inner(id);
        self.busy_s += t0.elapsed().as_secs_f64();
        r
    }

    fn advance_inner(&mut self, id: u32) -> Result<Advance, String> {
        let trie = self.env.tok_env().tok_trie();
        if let Some(trigger) = &self.trigger {
            let bytes = if (id as usize) < self.env.n_vocab {
                trie.token(id)
            } else {
                &[]
            };
            let bytes = bytes
                .strip_prefix(&[TokTrie::SPECIAL_TOKEN_MARKER])
                .unwrap_or(bytes);
            self.seen.extend_from_slice(bytes);
            let end = match trigger.scan(&self.seen, self.scan_from) {
                Scan::Found { end, .. } => end,
                Scan::Pending { from } => {
                    self.scan_from = from;
                    return Ok(Advance::Continue);
                }
            };
            // The grammar applies to what follows the trigger, including the rest of this token.
            let rest = self.seen[end..].to_vec();
            self.trigger = None;
            self.seen = Vec::new();
            if !rest.is_empty() {
                let toks = self.env.tok_env().tokenize_bytes(&rest);
                self.matcher.consume_tokens(&toks).map_err(|e| {
                    format!("the text after the trigger does not fit the grammar: {e}")
                })?;
            }
            return self.state();
        }
        self.matcher.consume_token(id).map_err(|e| e.to_string())?;
        self.state()
    }

    fn state(&mut self) -> Result<Advance, String> {
        if !self.matcher.is_stopped() {
            return Ok(Advance::Continue);
        }
        if self.repeat {
            self.matcher.reset().map_err(|e| e.to_string())?;
            return Ok(Advance::Continue);
        }
        Ok(Advance::Complete)
    }
}
