//! Building a run's [`Ports`] and [`RunOptions`] without naming every field: the ports of an
//! in-memory `World` (`Ports::of_world`, beside it in `memory::world`) with the few that differ
//! swapped in, and a run's identity with the
//! options a caller changes. Tests, benches, the demo and embedders build their runs here, so
//! that a new port or option is a default in one place rather than a field in every set-up.

use std::time::Duration;

use tokio::sync::watch;

use deploy_core::port::{ArgoCd, Clock, Lock, Metrics};
use deploy_core::trail::Actor;

use super::{Ports, RunOptions, StopRequest};

impl<'a> Ports<'a> {
    /// These ports with `argocd` instead (a REST client, a fault-injecting wrapper).
    pub fn with_argocd(self, argocd: &'a dyn ArgoCd) -> Self {
        Self { argocd, ..self }
    }

    /// These ports with `lock` instead.
    pub fn with_lock(self, lock: &'a dyn Lock) -> Self {
        Self { lock, ..self }
    }

    /// These ports with `clock` instead.
    pub fn with_clock(self, clock: &'a dyn Clock) -> Self {
        Self { clock, ..self }
    }

    /// These ports with `metrics` instead; `None`: no check can run.
    pub fn with_metrics(self, metrics: Option<&'a dyn Metrics>) -> Self {
        Self { metrics, ..self }
    }
}

impl RunOptions {
    /// The run `run_id`, holding the lock `lock_key` as `holder`; every other option is its
    /// default ([`RunOptions::default`]).
    pub fn new(
        run_id: impl Into<String>,
        holder: impl Into<String>,
        lock_key: impl Into<String>,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            holder: holder.into(),
            lock_key: lock_key.into(),
            ..Self::default()
        }
    }

    /// This run, by `actor` (recorded in the audit trail and the operations).
    pub fn by(self, actor: Actor) -> Self {
        Self { actor, ..self }
    }

    /// This run with `holder` as the lock holder identity.
    pub fn with_holder(self, holder: impl Into<String>) -> Self {
        Self {
            holder: holder.into(),
            ..self
        }
    }

    /// This run, stopped through `stop`.
    pub fn with_stop(self, stop: watch::Receiver<StopRequest>) -> Self {
        Self {
            stop: Some(stop),
            ..self
        }
    }

    /// This run, with `grace` for running syncs after a graceful stop.
    pub fn with_grace(self, grace: Duration) -> Self {
        Self { grace, ..self }
    }

    /// This run, waiting up to `wait` for sync windows.
    pub fn with_window_wait(self, wait: Duration) -> Self {
        Self {
            window_wait: wait,
            ..self
        }
    }
}
