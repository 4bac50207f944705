//! How a run ends, typed, and as a pure function of what happened. [`Failure`] says what
//! failed, where ([`Place`]: wave, cluster, Application) and why ([`Cause`], which keeps the
//! port's [`Error`] where a call failed); [`Halt`] is how a step of the run stops short (a
//! failure or a stop request); [`End`] gathers the failure, what became of the rollback
//! ([`RollbackResult`]) and what the run observed, and [`End::conclude`] gives the outcome and
//! its one-line message. The engine builds these; every rendering (the summary, the JSON
//! result, the notifications, the exit code) starts from them, and none reads a message to
//! decide.

use std::fmt;
use std::time::Duration;

use crate::check::show_values;
use crate::error::Error;
use crate::model::Tag;
use crate::rollout::lease::LeaseLost;
use crate::rollout::window::Blocked;
use crate::trail::{AppState, Outcome};

/// Which Application: its wave, cluster and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The wave (1-based).
    pub wave: usize,
    /// Cluster.
    pub cluster: String,
    /// Application.
    pub application: String,
}

/// Where in the run an Application failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Being brought to the release: the wave's writes and waits.
    Deploy,
    /// Its wave's soak.
    Soak,
    /// The read of every Application at the end of the run.
    End,
}

/// The call to Argo CD that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reading the Application.
    Read,
    /// Watching it (while waiting for an operation, or at the end).
    Watch,
    /// Writing the image override.
    SetOverride,
    /// Starting the sync.
    Sync,
    /// Watching or reading it during the soak, with an error waiting cannot fix.
    Observe,
}

/// Why an Application did not get to, or stay at, the release.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// What Argo CD reports of it says so: the operation failed, Degraded, another release
    /// (the words of [`assess`](crate::rollout::assess) and [`vigil`](crate::rollout::vigil)).
    Observed(String),
    /// A call to Argo CD failed; the port's error, typed (a sync window's refusal is
    /// [`Error::BlockedByWindow`]).
    Port {
        /// Which call.
        call: Call,
        /// The error.
        error: Error,
    },
    /// The wave's timeout passed first.
    TimedOut {
        /// The wave's timeout.
        after: Duration,
        /// Argo CD's message when it holds the operation Running for a sync window that closed
        /// after it accepted the sync ([`OperationState::held_by_window`](crate::port::OperationState::held_by_window)).
        held_by_window: Option<String>,
    },
    /// Not observed Healthy at the release for an unbroken soak before the deadline.
    NotObserved {
        /// The release.
        tag: Tag,
        /// The soak.
        soak: Duration,
        /// How long nothing had been observed.
        blind_for: Duration,
        /// The last thing that stood in the way.
        last: String,
    },
    /// Not Healthy at the release within the timeout when read at the end of the run.
    NotHealthy {
        /// The release.
        tag: Tag,
        /// The wave's timeout.
        within: Duration,
    },
    /// A check cannot run: no metrics backend.
    NoMetrics {
        /// The check.
        check: String,
    },
}

impl Cause {
    /// Why, in words, of `application`.
    pub fn reason(&self, application: &str) -> String {
        Said(self, application).to_string()
    }
}

/// A [`Cause`] of the named Application, as it reads.
struct Said<'a>(&'a Cause, &'a str);

impl fmt::Display for Said<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let span = humantime::format_duration;
        let Self(cause, application) = self;
        match cause {
            Cause::Observed(why) => f.write_str(why),
            Cause::Port { call, error } => match (call, error) {
                (Call::Read, e) => write!(f, "{e}"),
                (Call::Watch, e) => write!(f, "watching {application}: {e}"),
                (Call::SetOverride, e) => write!(f, "setting the image override: {e}"),
                // As Argo CD says it: argocd-server's Sync answers "cannot sync: blocked by
                // sync window" (`server/application/application.go`).
                (Call::Sync, e @ Error::BlockedByWindow { .. }) => write!(
                    f,
                    "blocked by a sync window: Argo CD refused the sync ({e})"
                ),
                (Call::Sync, e) => write!(f, "sync refused: {e}"),
                (Call::Observe, e) => write!(f, "cannot be observed: {e}"),
            },
            Cause::TimedOut {
                after,
                held_by_window,
            } => {
                if let Some(message) = held_by_window {
                    write!(
                        f,
                        "blocked by a sync window: Argo CD accepted the sync, then a window closed and it holds the operation Running until its windows let it sync ({message}); "
                    )?;
                }
                write!(f, "timed out after {} (the wave's timeout)", span(*after))
            }
            Cause::NotObserved {
                tag,
                soak,
                blind_for,
                last,
            } => write!(
                f,
                "not observed Healthy at {tag} for an unbroken {} before the deadline (nothing observed for {}; last: {last})",
                span(*soak),
                span(Duration::from_secs(blind_for.as_secs())),
            ),
            Cause::NotHealthy { tag, within } => {
                write!(f, "not Healthy at {tag} within {}", span(*within))
            }
            Cause::NoMetrics { check } => {
                write!(f, "check {check} cannot run: no metrics backend")
            }
        }
    }
}

/// Why a run stopped before the end: what failed, where, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An Application did not reach the release (a failed sync, Degraded, a timeout), did not
    /// stay observed Healthy at it through its soak, or was not Healthy at it at the end.
    App {
        /// Which.
        at: Place,
        /// When.
        stage: Stage,
        /// Why.
        cause: Cause,
    },
    /// A metric check failed on a cluster during the soak.
    Check {
        /// Where.
        at: Place,
        /// The check.
        check: String,
        /// The last measurement's values.
        values: Vec<f64>,
        /// Why, in a few words (the tally of its measurements).
        reason: String,
    },
    /// A metric check was inconclusive: the run halts without rollback for a person to
    /// decide.
    Inconclusive {
        /// Where.
        at: Place,
        /// The check.
        check: String,
        /// The last measurement's values.
        values: Vec<f64>,
    },
    /// The lock can no longer be trusted.
    Lock(LeaseLost),
    /// A wave's sync windows would keep it waiting past `--window-wait`: the run halts
    /// before writing that wave, and what it deployed stays.
    Window(Blocked),
}

impl Failure {
    /// Whether another run provably holds the lock now (so this one must not write again).
    pub fn lock_taken(&self) -> bool {
        matches!(self, Self::Lock(LeaseLost::Taken { .. }))
    }

    /// The Application it is about, if one.
    pub fn place(&self) -> Option<&Place> {
        match self {
            Self::App { at, .. } | Self::Check { at, .. } | Self::Inconclusive { at, .. } => {
                Some(at)
            }
            Self::Lock(_) | Self::Window(_) => None,
        }
    }

    /// The port's error behind it, if a call failed.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Self::App {
                cause: Cause::Port { error, .. },
                ..
            } => Some(error),
            _ => None,
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

    /// Why, without where: the words the Application's own report and event carry.
    pub fn reason(&self) -> String {
        match self {
            Self::App {
                at,
                stage: Stage::End,
                cause: cause @ Cause::Port { .. },
            } => format!("cannot be read: {}", cause.reason(&at.application)),
            Self::App { at, cause, .. } => cause.reason(&at.application),
            Self::Check { reason, .. } => reason.clone(),
            Self::Inconclusive { values, .. } => show_values(values),
            Self::Lock(lost) => lost.to_string(),
            Self::Window(b) => b.to_string(),
        }
    }

    /// How the Application it is about was left, when the failure marks it: failed while
    /// deployed or soaked (a check's failure says where, as its whole line), not for what the
    /// end-of-run read found (that one is returned by the rollback, or kept), nor for a check
    /// that could not decide.
    pub fn left(&self) -> Option<(&str, AppState)> {
        match self {
            Self::App {
                at,
                stage: Stage::Deploy | Stage::Soak,
                ..
            } => Some((&at.cluster, AppState::Failed(self.reason()))),
            Self::Check { at, .. } => Some((&at.cluster, AppState::Failed(self.to_string()))),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::App { at, stage, .. } => {
                let when = match stage {
                    Stage::Deploy => "",
                    Stage::Soak => " during soak",
                    Stage::End => " at the end of the run",
                };
                write!(f, "{}: {}{when}", at.cluster, self.reason())
            }
            Self::Check {
                at,
                check,
                values,
                reason,
            } => write!(
                f,
                "{}: check {check} failed at {} ({reason}) during soak",
                at.cluster,
                show_values(values)
            ),
            Self::Inconclusive { at, check, values } => write!(
                f,
                "{}: check {check} was inconclusive at {} during soak",
                at.cluster,
                show_values(values)
            ),
            Self::Lock(lost) => lost.fmt(f),
            Self::Window(b) => b.fmt(f),
        }
    }
}

/// How a step of a run (a wave's window wait, an Application's deployment, a soak) stopped
/// short.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// It failed.
    Failed(Failure),
    /// A stop was requested.
    Interrupted,
}

impl From<Failure> for Halt {
    fn from(f: Failure) -> Self {
        Self::Failed(f)
    }
}

impl From<LeaseLost> for Halt {
    fn from(lost: LeaseLost) -> Self {
        Self::Failed(Failure::Lock(lost))
    }
}

impl Halt {
    /// Why, in words: the failure's [`Failure::reason`], or "interrupted".
    pub fn reason(&self) -> String {
        match self {
            Self::Failed(f) => f.reason(),
            Self::Interrupted => "interrupted".to_owned(),
        }
    }
}

/// What became of the rollback after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RollbackResult {
    /// The run changed nothing, so there is nothing to return.
    #[default]
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

/// What a run observed of its Applications, for [`End::conclude`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Brought to the release by this run and soaked there.
    pub deployed: usize,
    /// Found at the release unsoaked (an interrupted run), and soaked there by this run.
    pub soaked_again: usize,
    /// Every Application of the plan.
    pub clusters: usize,
}

/// How a run ended, typed: the one value the outcome, its message and every rendering come
/// from.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// The release.
    pub tag: Tag,
    /// Why it stopped before the end, if it did.
    pub failure: Option<Failure>,
    /// A stop was requested (and nothing failed first).
    pub interrupted: bool,
    /// What became of the rollback.
    pub rollback: RollbackResult,
    /// What it observed.
    pub observed: Observed,
}

impl End {
    /// The outcome and its message. Pure. A run succeeds only without a failure, and the
    /// engine makes "not Healthy at the release when every Application was read at the end"
    /// a failure ([`Stage::End`]): no run reports success it did not see at its end.
    pub fn conclude(&self) -> (Outcome, String) {
        let tag = &self.tag;
        match &self.failure {
            Some(failure) => failed(failure, self.rollback, tag),
            None if self.interrupted => (
                Outcome::Interrupted,
                "interrupted; run the same command again to resume".to_owned(),
            ),
            None => done(self.observed, tag),
        }
    }
}

/// The outcome of a run that stopped on `failure`.
fn failed(failure: &Failure, rollback: RollbackResult, tag: &Tag) -> (Outcome, String) {
    if let Failure::Lock(LeaseLost::Expired { .. }) = failure {
        return (
            Outcome::Halted,
            format!(
                "{failure}; halted without rollback: what is deployed was Healthy and stays. \
                 Check the lock's store (its credentials, its object), then run the same command \
                 again to resume"
            ),
        );
    }
    if let Failure::Window(b) = failure {
        return (
            Outcome::Halted,
            format!(
                "{failure}; halted before wave {}, nothing rolled back: run the same command again when the window allows (done waves are kept)",
                b.wave
            ),
        );
    }
    if failure.awaits_decision() {
        return (
            Outcome::Inconclusive,
            format!(
                "{failure}; halted for a decision, nothing rolled back: run promote again to continue, or rollback"
            ),
        );
    }
    match rollback {
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
    }
}

/// The outcome of a run that neither failed nor was interrupted.
fn done(observed: Observed, tag: &Tag) -> (Outcome, String) {
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

    fn at(cluster: &str) -> Place {
        Place {
            wave: 1,
            cluster: cluster.into(),
            application: format!("myapp-prod-{cluster}"),
        }
    }

    fn app(stage: Stage, cause: Cause) -> Failure {
        Failure::App {
            at: at("eu"),
            stage,
            cause,
        }
    }

    #[track_caller]
    fn check(
        failure: Option<Failure>,
        rollback: RollbackResult,
        interrupted: bool,
        deployed: usize,
        want: Outcome,
        says: &str,
    ) {
        let end = End {
            tag: Tag::new("v2").unwrap(),
            failure,
            interrupted,
            rollback,
            observed: Observed {
                deployed,
                soaked_again: 0,
                clusters: 3,
            },
        };
        let (outcome, message) = end.conclude();
        assert_eq!(outcome, want, "{message}");
        assert!(message.contains(says), "{message:?} lacks {says:?}");
    }

    #[test]
    fn outcomes() {
        use RollbackResult::*;
        let degraded = || Some(app(Stage::Deploy, Cause::Observed("Degraded: x".into())));
        let soak = || Some(app(Stage::Soak, Cause::Observed("not observed".into())));
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
            degraded(),
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
            degraded(),
            Incomplete,
            false,
            2,
            Outcome::Failed,
            "did not complete",
        );
        check(
            degraded(),
            NothingChanged,
            false,
            0,
            Outcome::Failed,
            "nothing had been changed",
        );
        check(
            degraded(),
            Disabled,
            false,
            2,
            Outcome::Failed,
            "turned off",
        );
        check(
            degraded(),
            LockTaken,
            true,
            2,
            Outcome::Failed,
            "another run holds the lock",
        );
        let metric = Some(Failure::Check {
            at: at("eu"),
            check: "5xx-ratio".into(),
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
            at: at("eu"),
            check: "5xx-ratio".into(),
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
        let end = Some(app(Stage::End, Cause::Observed("Degraded oom".into())));
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
        let done = |deployed, soaked_again| {
            End {
                tag: Tag::new("v2").unwrap(),
                failure: None,
                interrupted: false,
                rollback: RollbackResult::NothingChanged,
                observed: Observed {
                    deployed,
                    soaked_again,
                    clusters: 3,
                },
            }
            .conclude()
        };
        assert_eq!(done(0, 0).0, Outcome::UpToDate);
        let (outcome, message) = done(0, 1);
        assert_eq!(outcome, Outcome::Succeeded);
        assert!(message.contains("1 found there unsoaked"), "{message}");
        assert_eq!(done(2, 1).0, Outcome::Succeeded);
    }

    /// The words of each cause, as the reports and events have always carried them; a sync
    /// window's refusal is named from the error's kind, never from its text.
    #[test]
    fn causes_read_as_before() {
        let port = |call, error| Cause::Port { call, error };
        let refused = Error::BlockedByWindow {
            message: "application a: cannot sync: blocked by sync window".into(),
        };
        let said = |stage, cause| app(stage, cause).reason();
        assert_eq!(
            said(Stage::Deploy, port(Call::Sync, refused.clone())),
            "blocked by a sync window: Argo CD refused the sync (application a: cannot sync: blocked by sync window)"
        );
        // The same words in another kind of error are a plain refusal.
        let other = Error::Refused {
            message: "blocked by sync window".into(),
        };
        assert_eq!(
            said(Stage::Deploy, port(Call::Sync, other)),
            "sync refused: blocked by sync window"
        );
        let gone = Error::not_found("application myapp-prod-eu");
        assert_eq!(
            said(Stage::End, port(Call::Watch, gone.clone())),
            "cannot be read: watching myapp-prod-eu: application myapp-prod-eu not found"
        );
        assert_eq!(
            said(Stage::Soak, port(Call::Observe, gone.clone())),
            "cannot be observed: application myapp-prod-eu not found"
        );
        let held = Cause::TimedOut {
            after: Duration::from_secs(600),
            held_by_window: Some("Sync operation blocked by sync window".into()),
        };
        assert!(said(Stage::Deploy, held).ends_with(
            "holds the operation Running until its windows let it sync (Sync operation blocked by sync window); timed out after 10m (the wave's timeout)"
        ));
        let f = app(Stage::Deploy, port(Call::Sync, refused.clone()));
        assert_eq!(f.error(), Some(&refused));
        assert_eq!(f.place().map(|p| p.wave), Some(1));
        assert_eq!(f.left(), Some(("eu", AppState::Failed(f.reason()))));
        assert_eq!(app(Stage::End, port(Call::Watch, gone)).left(), None);
    }
}
