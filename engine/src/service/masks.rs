//! The grammar masks of a step, computed while the backend runs its forward pass.
//!
//! A constrained sequence's mask for the token it samples this step depends only
//! on the tokens its matcher has consumed, all known before the step starts. So
//! the worker hands every such matcher to one helper thread (a scoped thread: it is
//! joined before the step goes on, so no mask outlives its step, whatever happens
//! to its sequence) and runs the forward pass meanwhile; the masks then go on the
//! logits exactly as the sequential path puts them, so the tokens are the same.
//! With the overlap off (`OWL_MASK_OVERLAP=0`, or [`Engine::set_mask_overlap`]),
//! or with no constrained sequence sampling this step, the masks are computed
//! after the forward pass, on the worker thread.
//!
//! [`Engine::set_mask_overlap`]: super::Engine::set_mask_overlap

use crate::constrain::{Mask, SeqConstraint};
use crate::EngineError;

/// A sequence's mask for this step: None when nothing is masked (no grammar, or
/// a lazy one still waiting for its trigger); Err when the grammar failed.
pub(super) type StepMask = Result<Option<Mask>, String>;

/// Whether masks overlap the forward pass unless told otherwise: `OWL_MASK_OVERLAP=0`
/// (or `off`, `false`) turns it off.
pub(super) fn overlap_default() -> bool {
    !matches!(
        std::env::var("OWL_MASK_OVERLAP")
            .ok()
            .as_deref()
            .map(str::trim),
        Some("0" | "off" | "false" | "no")
    )
}

/// Runs `forward`; the masks of `constrained` (a step index and its matcher,
/// for each constrained sequence that samples this step) are computed on a helper
/// thread meanwhile when `overlap` is set, else after it. Returns the forward's
/// result, each index's mask in the order given, and whether they were computed
/// during the forward pass.
pub(super) fn forward_with_masks(
    constrained: Vec<(usize, &mut SeqConstraint)>,
    overlap: bool,
    forward: impl FnOnce() -> Result<(), EngineError>,
) -> (Result<(), EngineError>, Vec<(usize, StepMask)>, bool) {
    let compute = |cs: Vec<(usize, &mut SeqConstraint)>| -> Vec<(usize, StepMask)> {
        cs.into_iter().map(|(i, c)| (i, c.compute_mask())).collect()
    };
    if !overlap || constrained.is_empty() {
        let r = forward();
        return (r, compute(constrained), false);
    }
    let ids: Vec<usize> = constrained.iter().map(|c| c.0).collect();
    // Shared with the helper so that the worker can still compute the masks itself
    // if no thread can be started.
    let slot = std::sync::Mutex::new(Some(constrained));
    let take = || {
        slot.lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    };
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("owl-mask".into())
            .spawn_scoped(scope, || compute(take()));
        let Ok(helper) = helper else {
            let r = forward();
            return (r, compute(take()), false);
        };
        let r = forward();
        let masks = helper.join().unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            ids.iter()
                .map(|&i| (i, Err(format!("the grammar mask failed: {msg}"))))
                .collect()
        });
        (r, masks, true)
    })
}
