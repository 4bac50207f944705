//! What a run leaves behind: the annotations on each Application it deployed, and its audit
//! records (one when it takes the lock, one when it ends).

use std::collections::BTreeMap;

use jiff::Timestamp;

use deploy_core::trail::{AppReport, AppState};

use crate::engine::RunOptions;
use deploy_core::model::Release;
use deploy_core::model::annotation;
use deploy_core::plan::promotion::{AppPlan, Intent, PromotionPlan};
use deploy_core::trail::{AuditRecord, Outcome, RunKind};

/// The annotations of a deployed Application.
pub(crate) fn annotations(
    opts: &RunOptions,
    release: &Release,
    now: Timestamp,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (annotation::RELEASE.to_owned(), release.tag.to_string()),
        (annotation::RUN.to_owned(), opts.run_id.clone()),
        (annotation::BY.to_owned(), opts.actor.to_string()),
        (annotation::AT.to_owned(), now.to_string()),
    ])
}

/// What a run has done so far, for its records.
pub(crate) struct Progress<'a> {
    pub changed: &'a [&'a AppPlan],
    pub apps: &'a [AppReport],
    pub finished_at: Timestamp,
    pub outcome: Outcome,
    pub message: String,
    pub checks: Vec<deploy_core::trail::Measurement>,
}

/// The record of a run: at its start (`Outcome::Started`, nothing changed yet) or its end.
pub(crate) fn record(
    plan: &PromotionPlan,
    opts: &RunOptions,
    release: &Release,
    started_at: Timestamp,
    progress: Progress<'_>,
) -> AuditRecord {
    AuditRecord {
        run_id: opts.run_id.clone(),
        kind: match plan.intent {
            Intent::Promote { .. } => RunKind::Promote,
            Intent::Rollback { .. } => RunKind::Rollback,
        },
        environment: plan.environment.clone(),
        actor: opts.actor.clone(),
        release: release.clone(),
        previous: plan
            .waves
            .iter()
            .flat_map(|w| &w.apps)
            .map(|a| (a.cluster.clone(), a.live.tag().map(str::to_owned)))
            .collect(),
        changed: progress.changed.iter().map(|a| a.cluster.clone()).collect(),
        skipped: progress
            .apps
            .iter()
            .filter(|r| r.state == AppState::Skipped)
            .map(|r| r.cluster.clone())
            .collect(),
        started_at,
        finished_at: progress.finished_at,
        outcome: progress.outcome,
        message: progress.message,
        checks: progress.checks,
        // Where each cluster was left, so that a half-finished rollback is on record after
        // the terminal that showed its table is gone.
        apps: progress.apps.to_vec(),
    }
}
