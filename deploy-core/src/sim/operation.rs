//! One operation's life as Argo CD's application controller runs it: Running (perhaps held by
//! a sync window), then Succeeded or Failed at a time the [`Timing`] and the [`Script`] decide,
//! then the health that follows a sync. Every skin asks [`Run::step`] what happens next and
//! writes the answer in its own representation.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::seed::{Script, Timing};
use crate::port::{Health, OperationPhase, OperationState, OverrideValue};
use crate::window::{self, SyncWindow};

/// Who starts an automated sync: `initiatedBy.automated` upstream, `"automated"` here.
pub const AUTOMATED: &str = "automated";
/// The user someone else's operation runs as, in the simulations that do not name one.
pub const FOREIGN_USER: &str = "alice@example.com";
/// `operationState.message` while an operation runs.
pub const RUNNING_MESSAGE: &str = "one or more tasks are running";
/// `operationState.message` of an operation a sync window holds (argo-cd controller/sync.go).
pub const HELD_MESSAGE: &str = "Sync operation blocked by sync window";
/// `operationState.message` of a successful sync.
pub const SUCCEEDED_MESSAGE: &str = "successfully synced (all tasks run)";
/// `operationState.message` of a sync that failed to apply.
pub const FAILED_MESSAGE: &str =
    "one or more objects failed to apply, reason: admission webhook denied the request";
/// `operationState.message` of someone else's sync whose PostSync hook failed after every
/// resource was applied: gitops-engine pkg/sync/sync_context.go (`Sync`: a completed task that
/// was not successful makes it `setOperationFailed(..., "one or more synchronization tasks
/// completed unsuccessfully")`).
pub const HOOK_FAILED_MESSAGE: &str = "one or more synchronization tasks completed unsuccessfully";
/// `operationState.message` of a terminated operation (gitops-engine's `Terminate`).
pub const TERMINATED_MESSAGE: &str = "Operation terminated";
/// The health message while a Deployment rolls.
pub const PROGRESSING_MESSAGE: &str =
    "Waiting for rollout to finish: 1 old replicas are pending termination";
/// The health message of a Deployment that did not become ready.
pub const DEGRADED_MESSAGE: &str = "Deployment \"api\" exceeded its progress deadline";
/// The health message of a Deployment whose pods crash after it was Healthy.
pub const CRASHING_MESSAGE: &str = "Back-off restarting failed container api";

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunKind {
    /// Sync to the spec's override.
    Sync,
    /// Sync to a history entry's override.
    Rollback(Option<OverrideValue>),
    /// Someone else's operation, ending at the given time or when finished by hand.
    Foreign(Option<Timestamp>),
}

/// An operation in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// What it does.
    pub kind: RunKind,
    /// How it ends.
    pub script: Script,
    /// When it started.
    pub started_at: Timestamp,
    /// Its `info` entries.
    pub info: BTreeMap<String, String>,
    /// Its initiator: a user, or [`AUTOMATED`].
    pub initiated_by: String,
    /// Whether someone asked to terminate it.
    pub terminating: bool,
    /// When a sync window held it Running, the time it was let go (its work starts then).
    #[serde(default)]
    pub resumed_at: Option<Timestamp>,
}

/// What the controller does with a [`Run`] at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Still running; nothing changes.
    Wait,
    /// A sync window holds it Running ([`HELD_MESSAGE`]).
    Held,
    /// It ended.
    Ended(Ending),
}

/// How and when an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// When (never before it started).
    pub at: Timestamp,
    /// Succeeded or Failed.
    pub phase: OperationPhase,
    /// `operationState.message`.
    pub message: &'static str,
    /// For a sync of ours that succeeded: the health its resources reach once they roll.
    /// Someone else's operation deploys nothing of ours, and a failed sync leaves the old
    /// resources running.
    pub deploys: Option<Health>,
}

impl Run {
    /// A new operation, started at `now`.
    pub fn new(kind: RunKind, script: Script, now: Timestamp, by: &str) -> Self {
        Self {
            kind,
            script,
            started_at: now,
            info: BTreeMap::new(),
            initiated_by: by.to_owned(),
            terminating: false,
            resumed_at: None,
        }
    }

    /// Whether someone else started it.
    pub fn is_foreign(&self) -> bool {
        matches!(self.kind, RunKind::Foreign(_))
    }

    /// `status.operationState` while it runs.
    pub fn running_state(&self) -> OperationState {
        OperationState {
            phase: OperationPhase::Running,
            message: RUNNING_MESSAGE.into(),
            started_at: Some(self.started_at),
            finished_at: None,
            initiated_by: Some(self.initiated_by.clone()),
            info: self.info.clone(),
        }
    }

    /// `status.operationState` once it ended as `ending` says.
    pub fn ended_state(&self, ending: &Ending) -> OperationState {
        OperationState {
            phase: ending.phase,
            message: ending.message.into(),
            started_at: Some(self.started_at),
            finished_at: Some(ending.at),
            initiated_by: Some(self.initiated_by.clone()),
            info: self.info.clone(),
        }
    }

    /// Finishes someone else's operation at `now` (a no-op on ours).
    pub fn finish_foreign(&mut self, now: Timestamp) {
        if self.is_foreign() {
            self.kind = RunKind::Foreign(Some(now));
        }
    }

    /// What happens to it at `now`, with `windows` (the sync windows that match its
    /// Application) read at `windows_now`: the wall clock, where progress runs on another.
    ///
    /// As the controller's `SyncAppState`: while `syncWindowPreventsSync` (the windows
    /// matching the app, `CanSync(isManual)` with isManual from the operation's initiator; an
    /// invalid window holds it too), a Running operation is held Running with the message
    /// "Sync operation blocked by sync window", and goes on once a window lets it (argo-cd
    /// controller/sync.go). Its work starts when it is let go. A terminated operation, ours or
    /// someone else's, ends at once, Failed (gitops-engine's `Terminate`); someone else's
    /// otherwise ends when its owner says.
    pub fn step(
        &mut self,
        now: Timestamp,
        timing: Timing,
        windows: &[SyncWindow],
        windows_now: Timestamp,
    ) -> Step {
        let manual = self.initiated_by != AUTOMATED;
        if !self.is_foreign()
            && !self.terminating
            && !window::can_sync(windows, windows_now, manual).unwrap_or(false)
        {
            self.resumed_at = Some(now);
            return Step::Held;
        }
        let began = self.resumed_at.unwrap_or(self.started_at);
        let ends = match &self.kind {
            _ if self.terminating => Some(self.started_at),
            RunKind::Foreign(end) => *end,
            _ if self.script == Script::Hang => None,
            _ => began.checked_add(timing.sync).ok(),
        };
        let Some(at) = ends.filter(|e| *e <= now) else {
            return Step::Wait;
        };
        let (phase, message) = if self.terminating {
            (OperationPhase::Failed, TERMINATED_MESSAGE)
        } else if self.script == Script::Failed {
            (OperationPhase::Failed, FAILED_MESSAGE)
        } else {
            (OperationPhase::Succeeded, SUCCEEDED_MESSAGE)
        };
        let deploys = (phase == OperationPhase::Succeeded && !self.is_foreign()).then_some(
            if self.script == Script::Degraded {
                Health::Degraded
            } else {
                Health::Healthy
            },
        );
        Step::Ended(Ending {
            at: at.max(self.started_at),
            phase,
            message,
            deploys,
        })
    }
}

/// Health on its way to a final value after a sync: Progressing until `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settling {
    /// When it settles.
    pub at: Timestamp,
    /// The health it settles at.
    pub health: Health,
}

impl Settling {
    /// What a sync that ended at `ended` leaves behind: the resources roll (Progressing for
    /// `timing.health`) when the images changed or the health will; else nothing moves.
    pub fn after_sync(
        ended: Timestamp,
        timing: Timing,
        images_changed: bool,
        current: Health,
        target: Health,
    ) -> Option<Self> {
        (images_changed || target != current).then(|| Self {
            at: ended.checked_add(timing.health).unwrap_or(ended),
            health: target,
        })
    }

    /// The health message at `health`, the final one.
    pub fn message(health: Health) -> Option<String> {
        (health == Health::Degraded).then(|| DEGRADED_MESSAGE.to_owned())
    }
}

/// Whether an automated sync starts now: Argo CD starts one by itself when an automated app is
/// OutOfSync and nothing runs, unless its windows say `CanSync(false)` is false ("Sync
/// prevented by sync window", argo-cd controller/appcontroller.go `processAppRefreshQueueItem`).
pub fn automated_sync_due(
    automated: bool,
    out_of_sync: bool,
    running: bool,
    windows: &[SyncWindow],
    now: Timestamp,
) -> bool {
    automated && out_of_sync && !running && window::can_sync(windows, now, false).unwrap_or(false)
}

/// Whether a manual sync may start, as argocd-server's Sync checks it before it sets the
/// operation: `proj.Spec.SyncWindows.Matches(a).CanSync(true, nil)` (argo-cd
/// server/application/application.go), else PermissionDenied "cannot sync: blocked by sync
/// window", or "cannot sync: invalid sync window" for a window it cannot read.
pub fn manual_sync_allowed(
    windows: &[SyncWindow],
    now: Timestamp,
) -> Result<bool, window::InvalidWindow> {
    window::can_sync(windows, now, true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T: Timing = Timing {
        sync: Duration::from_secs(2),
        health: Duration::from_secs(3),
    };

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn ours(script: Script) -> Run {
        Run::new(RunKind::Sync, script, at(0), "ci-bot")
    }

    fn ended(step: Step) -> Ending {
        match step {
            Step::Ended(e) => e,
            other => panic!("not ended: {other:?}"),
        }
    }

    #[test]
    fn a_sync_ends_when_its_timing_says_as_its_script_says() {
        let mut run = ours(Script::Degraded);
        assert_eq!(run.step(at(1), T, &[], at(1)), Step::Wait);
        let e = ended(run.step(at(5), T, &[], at(5)));
        assert_eq!((e.at, e.phase), (at(2), OperationPhase::Succeeded));
        assert_eq!(e.deploys, Some(Health::Degraded));
        let e = ended(ours(Script::Failed).step(at(2), T, &[], at(2)));
        assert_eq!(
            (e.phase, e.message, e.deploys),
            (OperationPhase::Failed, FAILED_MESSAGE, None)
        );
        assert_eq!(ours(Script::Hang).step(at(99), T, &[], at(99)), Step::Wait);
    }

    #[test]
    fn terminating_ends_any_operation_at_once_and_foreign_ones_end_when_finished() {
        let mut run = ours(Script::Hang);
        run.terminating = true;
        let e = ended(run.step(at(1), T, &[], at(1)));
        assert_eq!((e.at, e.message), (at(0), TERMINATED_MESSAGE));
        let mut foreign = Run::new(RunKind::Foreign(None), Script::Healthy, at(0), FOREIGN_USER);
        assert_eq!(foreign.step(at(50), T, &[], at(50)), Step::Wait);
        foreign.finish_foreign(at(60));
        let e = ended(foreign.step(at(60), T, &[], at(60)));
        assert_eq!(
            (e.at, e.phase, e.deploys),
            (at(60), OperationPhase::Succeeded, None)
        );
    }

    #[test]
    fn a_window_holds_a_running_sync_and_its_work_starts_when_let_go() {
        let windows = [super::super::first_hour_denied()];
        let mut run = ours(Script::Healthy);
        assert_eq!(run.step(at(10), T, &windows, at(10)), Step::Held);
        assert_eq!(run.step(at(3599), T, &windows, at(3599)), Step::Held);
        // Last held at 3599: its two seconds of work run from then.
        let e = ended(run.step(at(4000), T, &windows, at(4000)));
        assert_eq!(e.at, at(3601));
    }

    #[test]
    fn health_rolls_only_when_something_changed() {
        let s = Settling::after_sync(at(2), T, true, Health::Healthy, Health::Healthy).unwrap();
        assert_eq!((s.at, s.health), (at(5), Health::Healthy));
        assert!(Settling::after_sync(at(2), T, false, Health::Healthy, Health::Healthy).is_none());
        assert!(Settling::after_sync(at(2), T, false, Health::Healthy, Health::Degraded).is_some());
    }
}
