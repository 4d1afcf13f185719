//! Request deadlines: `owl serve --request-timeout SECS` and a request's own
//! `timeout` field (seconds; the shorter of the two holds, so a client can
//! shorten the operator's limit but never lengthen it).
//!
//! A timer cancels the engine request when its time is up, whether or not the
//! client is still reading: a stream whose client stopped reading cannot keep
//! its sequence (and its KV pages) past the deadline. The answer then ends with
//! a 408 (or, once a stream has started, an error chunk) saying which limit it hit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use owl_engine::service::CancelToken;
use tokio::sync::oneshot;

use crate::error::ApiError;

/// The longest `timeout` a request may give, seconds (a day).
pub const MAX_TIMEOUT_S: f64 = 86_400.0;

/// Checks a request's `timeout` field: seconds in (0, a day].
pub fn check(t: Option<f64>) -> Result<Option<f64>, ApiError> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_TIMEOUT_S => Ok(Some(s)),
        Some(s) => Err(ApiError::invalid(
            "timeout",
            format!(
                "`timeout` must be a number of seconds above 0 and at most {MAX_TIMEOUT_S}, got {s}"
            ),
        )),
    }
}

/// The limit that holds: the shorter of the server's and the request's.
pub fn effective(server: Option<Duration>, request: Option<f64>) -> Option<Duration> {
    let request = request.map(Duration::from_secs_f64);
    match (server, request) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A running deadline. Dropped (the answer is done), its timer stops.
pub struct Deadline {
    limit: Duration,
    fired: Arc<AtomicBool>,
    _stop: oneshot::Sender<()>,
}

impl Deadline {
    /// Starts the timer: at `limit` it marks the deadline passed and cancels the request.
    pub fn start(limit: Duration, cancel: CancelToken) -> Deadline {
        let fired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = oneshot::channel::<()>();
        let flag = fired.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {
                    flag.store(true, Ordering::SeqCst);
                    cancel.cancel();
                }
                _ = stopped => {}
            }
        });
        Deadline {
            limit,
            fired,
            _stop: stop,
        }
    }

    pub fn passed(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub fn error(&self) -> ApiError {
        ApiError::timeout(self.limit.as_secs_f64())
    }
}

/// The error of a request whose deadline passed, if it did.
pub fn passed(d: &Option<Deadline>) -> Option<ApiError> {
    d.as_ref().filter(|d| d.passed()).map(Deadline::error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_limit_holds_and_bad_values_are_400() {
        let s = Some(Duration::from_secs(10));
        assert_eq!(effective(s, Some(2.5)), Some(Duration::from_millis(2500)));
        assert_eq!(
            effective(s, Some(60.0)),
            s,
            "a request cannot lengthen the server's limit"
        );
        assert_eq!(effective(None, Some(1.0)), Some(Duration::from_secs(1)));
        assert_eq!(effective(None, None), None);
        assert_eq!(check(Some(3.0)).unwrap(), Some(3.0));
        assert_eq!(check(None).unwrap(), None);
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            let e = check(Some(bad)).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), Some("timeout"));
            assert!(e.message.contains("at most 86400"), "{}", e.message);
        }
    }
}
