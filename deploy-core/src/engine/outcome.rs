//! How a run ends, as a pure function of what happened: [`Failure`] says why a run stopped,
//! [`RollbackResult`] what became of the rollback, and [`conclude`] gives the outcome and its
//! one-line message.

use std::fmt;

use crate::engine::check::show_values;
use crate::engine::lock::LeaseLost;
use crate::model::Tag;
use crate::trail::Outcome;

/// Why a run stopped before the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An Application did not reach the release (a failed sync, Degraded, a timeout).
    App {
        /// Cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// An Application did not stay observed Healthy at the release through its soak.
    Soak {
        /// Cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// A metric check failed on a cluster during the soak.
    Check {
        /// The check.
        check: String,
        /// Cluster.
        cluster: String,
        /// The last measurement's values.
        values: Vec<f64>,
        /// Why, in a few words.
        reason: String,
    },
    /// A metric check was inconclusive: the run halts without rollback for a person to
    /// decide.
    Inconclusive {
        /// The check.
        check: String,
        /// Cluster.
        cluster: String,
        /// The last measurement's values.
        values: Vec<f64>,
    },
    /// The lock can no longer be trusted.
    Lock(LeaseLost),
    /// A wave's sync windows would keep it waiting past `--window-wait`: the run halts
    /// before writing that wave, and what it deployed stays.
    Window(crate::engine::window::Blocked),
}

impl Failure {
    /// Whether another run provably holds the lock now (so this one must not write again).
    pub fn lock_taken(&self) -> bool {
        matches!(self, Self::Lock(LeaseLost::Taken { .. }))
    }

    /// Whether the run halts for a decision (nothing is rolled back).
    pub fn awaits_decision(&self) -> bool {
        matches!(self, Self::Inconclusive { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::App { cluster, reason } => write!(f, "{cluster}: {reason}"),
            Self::Soak { cluster, reason } => write!(f, "{cluster}: {reason} during soak"),
            Self::Check {
                check,
                cluster,
                values,
                reason,
            } => write!(
                f,
                "{cluster}: check {check} failed at {} ({reason}) during soak",
                show_values(values)
            ),
            Self::Inconclusive {
                check,
                cluster,
                values,
            } => write!(
                f,
                "{cluster}: check {check} was inconclusive at {} during soak",
                show_values(values)
            ),
            Self::Lock(lost) => lost.fmt(f),
            Self::Window(b) => b.fmt(f),
        }
    }
}

/// What became of the rollback after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackResult {
    /// The run changed nothing, so there is nothing to return.
    NothingChanged,
    /// Rollback was turned off for this run.
    Disabled,
    /// Another run holds the lock: writing now would fight it.
    LockTaken,
    /// Every changed Application is back at its previous release.
    Done {
        /// How many.
        count: usize,
    },
    /// Some did not make it back.
    Incomplete,
}

/// The outcome and its message. Pure.
pub fn conclude(
    failure: Option<&Failure>,
    rollback: RollbackResult,
    interrupted: bool,
    deployed: usize,
    clusters: usize,
    tag: &Tag,
) -> (Outcome, String) {
    if let Some(failure @ Failure::Window(b)) = failure {
        return (
            Outcome::Halted,
            format!(
                "{failure}; halted before wave {}, nothing rolled back: run the same command again when the window allows (done waves are kept)",
                b.wave
            ),
        );
    }
    if let Some(failure) = failure.filter(|f| f.awaits_decision()) {
        return (
            Outcome::Inconclusive,
            format!(
                "{failure}; halted for a decision, nothing rolled back: run promote again to continue, or rollback"
            ),
        );
    }
    if let Some(failure) = failure {
        return match rollback {
            RollbackResult::Done { count } => (
                Outcome::RolledBack,
                format!("{failure}; rolled back {count} application(s) to their previous release"),
            ),
            RollbackResult::Incomplete => (
                Outcome::Failed,
                format!("{failure}; rollback did not complete, see the table"),
            ),
            RollbackResult::NothingChanged => (
                Outcome::Failed,
                format!("{failure}; nothing had been changed"),
            ),
            RollbackResult::Disabled => (
                Outcome::Failed,
                format!("{failure}; not rolled back (rollback is turned off)"),
            ),
            RollbackResult::LockTaken => (
                Outcome::Failed,
                format!(
                    "{failure}; another run holds the lock, so nothing was rolled back: check where each cluster stands"
                ),
            ),
        };
    }
    if interrupted {
        return (
            Outcome::Interrupted,
            "interrupted; run the same command again to resume".to_owned(),
        );
    }
    if deployed == 0 {
        return (
            Outcome::UpToDate,
            format!("every application already runs {tag}"),
        );
    }
    (
        Outcome::Succeeded,
        format!("{tag} runs on {clusters} cluster(s)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(
        failure: Option<Failure>,
        rollback: RollbackResult,
        interrupted: bool,
        deployed: usize,
        want: Outcome,
        says: &str,
    ) {
        let tag = Tag::new("v2").unwrap();
        let (outcome, message) =
            conclude(failure.as_ref(), rollback, interrupted, deployed, 3, &tag);
        assert_eq!(outcome, want, "{message}");
        assert!(message.contains(says), "{message:?} lacks {says:?}");
    }

    #[test]
    fn outcomes() {
        use RollbackResult::*;
        let app = || {
            Some(Failure::App {
                cluster: "eu".into(),
                reason: "Degraded: x".into(),
            })
        };
        let soak = || {
            Some(Failure::Soak {
                cluster: "eu".into(),
                reason: "not observed".into(),
            })
        };
        check(
            None,
            NothingChanged,
            false,
            3,
            Outcome::Succeeded,
            "v2 runs on 3 cluster(s)",
        );
        check(
            None,
            NothingChanged,
            false,
            0,
            Outcome::UpToDate,
            "already runs v2",
        );
        check(
            None,
            NothingChanged,
            true,
            1,
            Outcome::Interrupted,
            "again to resume",
        );
        check(
            app(),
            Done { count: 2 },
            false,
            2,
            Outcome::RolledBack,
            "eu: Degraded: x; rolled back 2",
        );
        check(
            soak(),
            Done { count: 1 },
            false,
            1,
            Outcome::RolledBack,
            "during soak",
        );
        check(
            app(),
            Incomplete,
            false,
            2,
            Outcome::Failed,
            "did not complete",
        );
        check(
            app(),
            NothingChanged,
            false,
            0,
            Outcome::Failed,
            "nothing had been changed",
        );
        check(app(), Disabled, false, 2, Outcome::Failed, "turned off");
        check(
            app(),
            LockTaken,
            true,
            2,
            Outcome::Failed,
            "another run holds the lock",
        );
        let metric = Some(Failure::Check {
            check: "5xx-ratio".into(),
            cluster: "eu".into(),
            values: vec![0.2],
            reason: "1 failed".into(),
        });
        check(
            metric,
            Done { count: 2 },
            false,
            2,
            Outcome::RolledBack,
            "eu: check 5xx-ratio failed at 0.2 (1 failed) during soak; rolled back 2",
        );
        let unsure = Some(Failure::Inconclusive {
            check: "5xx-ratio".into(),
            cluster: "eu".into(),
            values: vec![0.02],
        });
        check(
            unsure,
            NothingChanged,
            false,
            2,
            Outcome::Inconclusive,
            "inconclusive at 0.02 during soak; halted for a decision",
        );
        let lost = Some(Failure::Lock(LeaseLost::Expired {
            reason: "503".into(),
        }));
        check(
            lost,
            Done { count: 1 },
            false,
            1,
            Outcome::RolledBack,
            "ran out",
        );
    }
}
