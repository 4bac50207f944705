//! The one backoff rule of the REST client: capped exponential backoff with full jitter.
//!
//! Every retry of the client (a transient failure of a unary call, an operation that cannot
//! be terminated yet, a stale read of the REST lock) waits [`Backoff::delay`]. Without jitter,
//! N Applications that fail together retry together, in lockstep, and hit a recovering Argo CD
//! at the same instant again. "Full jitter" (a uniform wait in `[0, min(cap, base × 2^attempt)]`,
//! as the AWS SDKs do) spreads them out. A server's `Retry-After` is a floor: the wait is that
//! delay plus the jitter, so a throttled herd does not come back at one instant either.
//!
//! The randomness enters through [`Jitter`], so tests can pin it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the jitter's randomness comes from: a fraction in `[0, 1]`.
#[derive(Clone)]
pub(crate) struct Jitter(Arc<dyn Fn() -> f64 + Send + Sync>);

impl Jitter {
    /// Random fractions (SipHash with per-process random keys over a counter: no
    /// cryptographic strength needed, only spread between Applications and runs).
    pub(crate) fn random() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        Self(Arc::new(|| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            // 53 bits: the mantissa of an f64.
            (h.finish() >> 11) as f64 / (1u64 << 53) as f64
        }))
    }

    /// Always `fraction` (tests).
    #[cfg(test)]
    pub(crate) fn fixed(fraction: f64) -> Self {
        Self(Arc::new(move || fraction))
    }

    fn fraction(&self) -> f64 {
        (self.0)().clamp(0.0, 1.0)
    }
}

impl std::fmt::Debug for Jitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jitter")
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration, jitter: Jitter) -> Self {
        Self { base, max, jitter }
    }

    /// The exponential ceiling of retry `attempt` (0 for the first retry).
    fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max)
    }

    /// How long to wait before retry `attempt`: a uniform draw in `[0, ceiling]`, on top of
    /// the server's `Retry-After` (capped at the maximum backoff) when it sent one.
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.ceiling(attempt).mul_f64(self.jitter.fraction());
        retry_after.map_or(jittered, |r| r.min(self.max) + jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2), jitter)
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let b = backoff(Jitter::fixed(1.0));
        let check = |attempt: u32, want_ms: u64| {
            assert_eq!(
                b.delay(attempt, None),
                Duration::from_millis(want_ms),
                "attempt {attempt}"
            );
        };
        check(0, 100);
        check(1, 200);
        check(4, 1600);
        check(5, 2000);
        check(u32::MAX, 2000);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(backoff(Jitter::fixed(0.0)).delay(3, None), Duration::ZERO);
        assert_eq!(
            backoff(Jitter::fixed(0.5)).delay(3, None),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn retry_after_is_a_floor_with_jitter_on_top_and_capped() {
        let b = backoff(Jitter::fixed(0.5));
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(1))),
            Duration::from_millis(1050)
        );
        // A server asking for an hour gets the cap (plus the jitter).
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_millis(2050)
        );
    }

    #[test]
    fn random_jitter_spreads_retries_that_fail_together() {
        let b = backoff(Jitter::random());
        let waits: Vec<Duration> = (0..64).map(|_| b.delay(2, None)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(400)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        // Before jitter, all 64 were exactly 400 ms: the herd retried in lockstep.
        assert!(distinct.len() > 32, "{waits:?}");
    }
}
