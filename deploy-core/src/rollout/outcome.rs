//! How a run ends, as a pure function of what happened: [`Failure`] says why a run stopped,
//! [`RollbackResult`] what became of the rollback, and [`conclude`] gives the outcome and its
//! one-line message.

use std::fmt;

use crate::check::show_values;
use crate::model::Tag;
use crate::rollout::lease::LeaseLost;
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
    /// An Application was not Healthy at the release when the run read every one at its end.
    Final {
        /// Cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// The lock can no longer be trusted.
    Lock(LeaseLost),
    /// A wave's sync windows would keep it waiting past `--window-wait`: the run halts
    /// before writing that wave, and what it deployed stays.
    Window(crate::rollout::window::Blocked),
}

impl Failure {
    /// Whether another run provably holds the lock now (so this one must not write again).
    pub fn lock_taken(&self) -> bool {
        matches!(self, Self::Lock(LeaseLost::Taken { .. }))
    }

    /// The cluster it is about, if one.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Self::App { cluster, .. }
            | Self::Soak { cluster, .. }
            | Self::Check { cluster, .. }
            | Self::Inconclusive { cluster, .. }
            | Self::Final { cluster, .. } => Some(cluster),
            Self::Lock(_) | Self::Window(_) => None,
        }
    }

    /// Whether the run halts for a decision (nothing is rolled back).
    pub fn awaits_decision(&self) -> bool {
        matches!(self, Self::Inconclusive { .. })
    }

    /// Whether the run stops starting new work and rolls nothing back, because nothing
    /// deployed is known to be bad: a check that could not decide, a sync window (a rollback
    /// would need the very syncs it forbids), a lock that could not be held (it says nothing
    /// about what runs; another run may be starting, and a rollback would write unlocked).
    pub fn keeps_what_is_deployed(&self) -> bool {
        matches!(
            self,
            Self::Inconclusive { .. } | Self::Window(_) | Self::Lock(LeaseLost::Expired { .. })
        )
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
            Self::Final { cluster, reason } => {
                write!(f, "{cluster}: {reason} at the end of the run")
            }
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
        /// How many of them an interrupted run had brought to the release (this run soaked
        /// them again, wrote nothing to them, and returned them).
        resumed: usize,
    },
    /// Some did not make it back.
    Incomplete,
}

/// What a run observed of its Applications, for [`conclude`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Brought to the release by this run and soaked there.
    pub deployed: usize,
    /// Found at the release unsoaked (an interrupted run), and soaked there by this run.
    pub soaked_again: usize,
    /// Every Application of the plan.
    pub clusters: usize,
}

/// The outcome and its message. Pure. A run succeeds only without a failure, and the
/// engine makes "not Healthy at the release when every Application was read at the end"
/// a failure ([`Failure::Final`]): no run reports success it did not see at its end.
pub fn conclude(
    failure: Option<&Failure>,
    rollback: RollbackResult,
    interrupted: bool,
    observed: Observed,
    tag: &Tag,
) -> (Outcome, String) {
    if let Some(failure @ Failure::Lock(LeaseLost::Expired { .. })) = failure {
        return (
            Outcome::Halted,
            format!(
                "{failure}; halted without rollback: what is deployed was Healthy and stays. \
                 Check the lock's store (its credentials, its object), then run the same command \
                 again to resume"
            ),
        );
    }
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
            RollbackResult::Done { count, resumed } => (
                Outcome::RolledBack,
                match resumed {
                    0 => format!(
                        "{failure}; rolled back {count} application(s) to their previous release"
                    ),
                    r => format!(
                        "{failure}; rolled back {count} application(s) to their previous release \
                         ({r} of them brought to {tag} by an interrupted run)"
                    ),
                },
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
    let Observed {
        deployed,
        soaked_again,
        clusters,
    } = observed;
    if deployed == 0 && soaked_again == 0 {
        return (
            Outcome::UpToDate,
            format!("every application already runs {tag}"),
        );
    }
    let again = match soaked_again {
        0 => String::new(),
        n => {
            format!(" ({n} found there unsoaked after an interrupted run, now soaked and checked)")
        }
    };
    (
        Outcome::Succeeded,
        format!("{tag} runs on {clusters} cluster(s){again}"),
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
        let observed = Observed {
            deployed,
            soaked_again: 0,
            clusters: 3,
        };
        let (outcome, message) = conclude(failure.as_ref(), rollback, interrupted, observed, &tag);
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
            Done {
                count: 2,
                resumed: 0,
            },
            false,
            2,
            Outcome::RolledBack,
            "eu: Degraded: x; rolled back 2",
        );
        check(
            soak(),
            Done {
                count: 1,
                resumed: 0,
            },
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
            Done {
                count: 2,
                resumed: 0,
            },
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
        // A lock that could not be held halts: exit 5, nothing rolled back, the lock named.
        let lost = Some(Failure::Lock(LeaseLost::Expired {
            lock: "deploy-myapp-prod (S3 s3://state/deploy)".into(),
            reason: "403 AccessDenied".into(),
        }));
        check(
            lost,
            NothingChanged,
            false,
            1,
            Outcome::Halted,
            "lock deploy-myapp-prod (S3 s3://state/deploy) could be neither renewed nor taken again before it ran out: 403 AccessDenied; halted without rollback",
        );
        let end = Some(Failure::Final {
            cluster: "eu".into(),
            reason: "Degraded oom".into(),
        });
        check(
            end,
            Done {
                count: 3,
                resumed: 1,
            },
            false,
            2,
            Outcome::RolledBack,
            "eu: Degraded oom at the end of the run; rolled back 3 application(s) to their previous release (1 of them brought to v2 by an interrupted run)",
        );
    }

    #[test]
    fn soaked_again_is_a_success_not_up_to_date() {
        let tag = Tag::new("v2").unwrap();
        let observed = |deployed, soaked_again| Observed {
            deployed,
            soaked_again,
            clusters: 3,
        };
        let done = |o| conclude(None, RollbackResult::NothingChanged, false, o, &tag);
        assert_eq!(done(observed(0, 0)).0, Outcome::UpToDate);
        let (outcome, message) = done(observed(0, 1));
        assert_eq!(outcome, Outcome::Succeeded);
        assert!(message.contains("1 found there unsoaked"), "{message}");
        assert_eq!(done(observed(2, 1)).0, Outcome::Succeeded);
    }
}
