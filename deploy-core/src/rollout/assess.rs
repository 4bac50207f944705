//! The completion rule: whether an Application has reached the release through an operation
//! that is ours, judged from one observed state. Pure, and tested alone (kube-runtime's
//! `wait::conditions` are the model: the wait owns time, the condition owns meaning).

use jiff::Timestamp;

use crate::model::Release;
use crate::plan::live::live_at;
use crate::port::{Application, Health, OperationPhase, SyncStatus};

/// Where an Application stands against a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Keep waiting.
    Pending,
    /// Our operation Succeeded; Synced, Healthy, running the release.
    Done,
    /// It will not get there.
    Failed(String),
}

/// Which operation counts as ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ours<'a> {
    /// We started a sync carrying this id in its info.
    Operation(&'a str),
    /// Argo CD syncs by itself (automated environments): only what happened after `Baseline`
    /// counts, judged by the controller's own timestamps, never by the local clock.
    After(Baseline),
}

/// The controller's timestamps as they were when we wrote the override (or, when nothing was
/// written, when we began waiting): an operation that started later, or a reconcile that
/// happened later, is a reaction to what the spec says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Baseline {
    /// `operationState.startedAt` then.
    pub op_started: Option<Timestamp>,
    /// `reconciledAt` then.
    pub reconciled: Option<Timestamp>,
}

impl Baseline {
    /// The baseline of an observed state.
    pub fn of(app: &Application) -> Self {
        Self {
            op_started: app.operation_state.as_ref().and_then(|s| s.started_at),
            reconciled: app.reconciled_at,
        }
    }
}

fn after(t: Option<Timestamp>, baseline: Option<Timestamp>) -> bool {
    match (t, baseline) {
        (Some(t), Some(b)) => t > b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Judges `app` against a deployment of `release` through `ours`. Pure.
///
/// The operation that counts must be finished (`operation` cleared, `finishedAt` set), the
/// app reconciled at or after its end, and it must be ours: our id (we synced), or started
/// after the baseline (Argo CD synced by itself). Only then does the state say anything:
/// a phase other than Succeeded fails, Degraded fails, and Synced + Healthy + the release's
/// images is done (their digests where they carry them: [`live_at`]). Someone else's operation, however it ended, is never taken for ours.
pub fn assess(
    app: &Application,
    ours: Ours<'_>,
    images: &[(String, String)],
    release: &Release,
) -> Assessment {
    if app.operation_pending {
        return Assessment::Pending;
    }
    let state = app.operation_state.as_ref();
    match ours {
        Ours::Operation(op) => {
            let Some(s) = state.filter(|s| s.deploy_operation() == Some(op)) else {
                return Assessment::Pending;
            };
            let Some(finished) = s.finished_at.filter(|_| s.phase.is_completed()) else {
                return Assessment::Pending;
            };
            if app.reconciled_at.is_none_or(|r| r < finished) {
                return Assessment::Pending;
            }
            if s.phase != OperationPhase::Succeeded {
                return Assessment::Failed(format!("sync {:?}: {}", s.phase, s.message));
            }
        }
        Ours::After(base) => match state.filter(|s| after(s.started_at, base.op_started)) {
            Some(s) => {
                let Some(finished) = s.finished_at.filter(|_| s.phase.is_completed()) else {
                    return Assessment::Pending;
                };
                if app.reconciled_at.is_none_or(|r| r < finished) {
                    return Assessment::Pending;
                }
                if s.phase != OperationPhase::Succeeded {
                    return Assessment::Failed(format!(
                        "automated sync {:?}: {}",
                        s.phase, s.message
                    ));
                }
            }
            // No operation since: only a reconcile after the baseline says the spec we see
            // was compared (the images may already match, so nothing needed to sync).
            None if after(app.reconciled_at, base.reconciled) => {}
            None => return Assessment::Pending,
        },
    }
    if app.health == Health::Degraded {
        let msg = app.health_message.as_deref().unwrap_or("no message");
        return Assessment::Failed(format!("Degraded: {msg}"));
    }
    if app.sync_status == SyncStatus::Synced
        && app.health == Health::Healthy
        && live_at(app, images, release).tag() == Some(release.tag.as_str())
    {
        return Assessment::Done;
    }
    Assessment::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{OPERATION_INFO_KEY, OperationState, test_app};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// An app whose operation `op` (ours when `op == "ours"`) started at t=10, ended in
    /// `phase` at t=20, reconciled at `reconciled`.
    fn app(
        op: &str,
        phase: OperationPhase,
        reconciled: i64,
        health: Health,
        tag: &str,
    ) -> Application {
        let mut a = test_app("a", &[&format!("r/api:{tag}")]);
        a.health = health;
        a.reconciled_at = Some(ts(reconciled));
        a.operation_state = Some(OperationState {
            phase,
            message: "msg".into(),
            started_at: Some(ts(10)),
            finished_at: phase.is_completed().then(|| ts(20)),
            initiated_by: Some("deploy".into()),
            info: [(OPERATION_INFO_KEY.to_owned(), op.to_owned())].into(),
        });
        a
    }

    #[track_caller]
    fn check(a: Application, ours: Ours<'_>, want: &str) {
        let images = [("api".to_owned(), "r/api".to_owned())];
        let release = Release {
            tag: crate::model::Tag::new("v2").unwrap(),
            digests: [(
                "api".to_owned(),
                crate::model::Digest::new(format!("sha256:{}", "a".repeat(64))).unwrap(),
            )]
            .into(),
        };
        let got = match assess(&a, ours, &images, &release) {
            Assessment::Pending => "pending".to_owned(),
            Assessment::Done => "done".to_owned(),
            Assessment::Failed(why) => format!("failed: {why}"),
        };
        assert!(got.starts_with(want), "got {got}, want {want}");
    }

    const OURS: Ours<'static> = Ours::Operation("ours");

    #[test]
    fn our_operation_must_finish_reconcile_and_reach_the_release() {
        use Health::*;
        use OperationPhase::*;
        check(app("ours", Succeeded, 20, Healthy, "v2"), OURS, "done");
        check(app("ours", Succeeded, 19, Healthy, "v2"), OURS, "pending"); // reconciledAt < finishedAt
        check(app("other", Succeeded, 20, Healthy, "v2"), OURS, "pending"); // not our operation
        check(app("other", Failed, 20, Healthy, "v2"), OURS, "pending"); // someone else's failure is not ours
        check(app("ours", Running, 20, Healthy, "v2"), OURS, "pending");
        check(
            app("ours", Succeeded, 20, Progressing, "v2"),
            OURS,
            "pending",
        );
        check(app("ours", Succeeded, 20, Healthy, "v1"), OURS, "pending"); // old images still run
        // Pinned by digest: the release's digest is done, the release's tag on other bytes
        // (pushed again after the gate) never is.
        let (a, c) = ("a".repeat(64), "c".repeat(64));
        check(
            app("ours", Succeeded, 20, Healthy, &format!("v2@sha256:{a}")),
            OURS,
            "done",
        );
        check(
            app("ours", Succeeded, 20, Healthy, &format!("v2@sha256:{c}")),
            OURS,
            "pending",
        );
        check(
            app("ours", Failed, 20, Healthy, "v1"),
            OURS,
            "failed: sync Failed",
        );
        check(
            app("ours", Failed, 20, Healthy, "v2"),
            OURS,
            "failed: sync Failed",
        ); // a failed PostSync hook
        check(
            app("ours", Error, 20, Healthy, "v1"),
            OURS,
            "failed: sync Error",
        );
        check(
            app("ours", Succeeded, 20, Degraded, "v2"),
            OURS,
            "failed: Degraded",
        );
        let mut pending = app("ours", Succeeded, 20, Healthy, "v2");
        pending.operation_pending = true;
        check(pending, OURS, "pending");
        let mut out_of_sync = app("ours", Succeeded, 20, Healthy, "v2");
        out_of_sync.sync_status = SyncStatus::OutOfSync;
        check(out_of_sync, OURS, "pending");
    }

    #[test]
    fn automated_sync_counts_only_after_the_baseline() {
        use Health::*;
        use OperationPhase::*;
        let before = |op: i64, rec: i64| {
            Ours::After(Baseline {
                op_started: Some(ts(op)),
                reconciled: Some(ts(rec)),
            })
        };
        // Argo CD's own operation started (t=10) after our write (baseline op at t=5).
        check(app("", Succeeded, 20, Healthy, "v2"), before(5, 6), "done");
        check(
            app("", Failed, 20, Healthy, "v1"),
            before(5, 6),
            "failed: automated sync Failed",
        );
        check(
            app("", Succeeded, 19, Healthy, "v2"),
            before(5, 6),
            "pending",
        );
        // The failed operation is the one we saw at our write (or one before it): not ours.
        check(
            app("", Failed, 20, Healthy, "v1"),
            before(10, 21),
            "pending",
        );
        check(
            app("", Failed, 20, Healthy, "v1"),
            before(12, 21),
            "pending",
        );
        // No operation since, but reconciled after the write: the spec was compared.
        check(
            app("", Succeeded, 30, Healthy, "v2"),
            before(10, 21),
            "done",
        );
        check(
            app("", Succeeded, 21, Healthy, "v2"),
            before(10, 21),
            "pending",
        ); // not reconciled since
        check(
            app("", Succeeded, 30, Degraded, "v2"),
            before(10, 21),
            "failed: Degraded",
        );
        check(
            app("", Succeeded, 21, Degraded, "v2"),
            before(10, 21),
            "pending",
        ); // a stale Degraded
        // No baseline operation: any finished operation is after it.
        check(
            app("", Succeeded, 20, Healthy, "v2"),
            Ours::After(Baseline::default()),
            "done",
        );
    }
}
