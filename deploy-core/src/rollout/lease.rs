//! The lease a run holds: why it can no longer be trusted ([`LeaseLost`]) and how long it
//! lasts ([`lease_ttl`]). Pure; `deploy_engine`'s lease keeper acts on them.

use std::fmt;
use std::time::Duration;

use crate::plan::promotion::PromotionPlan;

/// Why the lease can no longer be trusted for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLost {
    /// Another run provably holds the lock now.
    Taken {
        /// Who.
        holder: String,
    },
    /// The lease could be neither renewed nor taken again before it ran out (the backend
    /// was unreachable or refused us, or this machine slept past the expiry). The run stops
    /// starting new work and rolls nothing back: a lock it cannot hold says nothing about
    /// the health of what it deployed.
    Expired {
        /// The lock: its key and, when known, its backend.
        lock: String,
        /// The last error, if any.
        reason: String,
    },
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Taken { holder } => write!(f, "lost the promotion lock: {holder} holds it now"),
            Self::Expired { lock, reason } => write!(
                f,
                "the promotion lock {lock} could be neither renewed nor taken again before it ran out: {reason}"
            ),
        }
    }
}

/// How long the lease lasts unless renewed: long enough for a wave (its timeout), its
/// longest soak as the checks make it ([`crate::check::least_soak`]), a soak extended by
/// lapses up to the timeout again, and a margin. It is renewed at every wave, before writes
/// close to its expiry, and every third of it during a soak.
pub fn lease_ttl(plan: &PromotionPlan) -> Duration {
    let longest_soak = plan
        .waves
        .iter()
        .flat_map(|w| &w.apps)
        .map(|a| crate::check::least_soak(plan.soak, &a.checks))
        .fold(plan.soak, Duration::max);
    plan.timeout
        .saturating_mul(2)
        .saturating_add(longest_soak)
        .saturating_add(Duration::from_secs(600))
}
