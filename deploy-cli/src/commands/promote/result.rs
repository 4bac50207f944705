//! How `deploy promote` and `deploy rollback` end, said once: [`RunResult`] is the run's
//! report or why nothing ran, and [`RunResult::render`] gives its text, its JSON `result` line
//! and its exit code.

use serde::Serialize;

use deploy_core::config::Environment;
use deploy_core::plan::promotion::{Intent, PromotionPlan};
use deploy_core::rollout::event::RunReport;
use deploy_core::trail::Outcome;

use super::verb;
use crate::exit::Exit;
use crate::output::{Output, table};

/// How `deploy promote` or `deploy rollback` ended: the one result of both commands, from
/// which come its text, its JSON `result` line and its exit code ([`RunResult::render`]).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RunResult {
    /// The run took the lock: its report (the engine's typed end, in words).
    Ran(Box<RunReport>),
    /// It wrote nothing, or was aborted.
    NotRun(NotRun),
}

/// Why a run wrote nothing (or was aborted): the `outcome` of its JSON result.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NotRun {
    /// A gate is not met.
    GateFailed {
        /// The first gate that failed.
        gate: deploy_core::plan::promotion::Gate,
        /// Always 0.
        changed: usize,
    },
    /// `--dry-run`.
    DryRun {
        /// The plan.
        plan: Box<PromotionPlan>,
    },
    /// Every Application already runs the release, Healthy, soaked.
    UpToDate {
        /// The release.
        release: Option<deploy_core::model::Release>,
    },
    /// A person did not confirm.
    NotConfirmed,
    /// The first wave that writes is blocked by a sync window beyond `--window-wait`.
    WindowBlocked {
        /// The window.
        blocked: deploy_core::rollout::window::Blocked,
        /// Always 0.
        changed: usize,
    },
    /// A third interrupt aborted the process.
    Interrupted {
        /// Why.
        message: String,
        /// 130.
        exit_code: u8,
    },
}

impl RunResult {
    /// Says it: the text (text mode), the `result` line (JSON mode); returns the exit code.
    pub fn render(
        &self,
        out: Output,
        env: &Environment,
        p: &PromotionPlan,
        rollback: bool,
    ) -> Exit {
        let (text, exit) = match self {
            Self::Ran(report) => {
                summarize(out, env, p, report, rollback);
                (None, Exit::of_report(report))
            }
            Self::NotRun(n) => n.said(env, p),
        };
        if let Some(text) = text {
            out.text(text);
        }
        out.result(self);
        exit
    }
}

impl NotRun {
    /// Its line of text, if it has one, and its exit code.
    fn said(&self, env: &Environment, p: &PromotionPlan) -> (Option<String>, Exit) {
        match self {
            Self::GateFailed { gate, .. } => (
                Some(format!(
                    "not promoted: gate \"{}\" is not met; nothing was changed",
                    gate.name
                )),
                Exit::GateNotMet,
            ),
            Self::DryRun { .. } => (
                Some("dry run: nothing was changed".to_owned()),
                Exit::Success,
            ),
            Self::UpToDate { release } => (
                Some(format!(
                    "nothing to do: every application of {} already runs {}, Healthy, soaked",
                    env.name,
                    release
                        .as_ref()
                        .map(|r| r.tag.to_string())
                        .unwrap_or_default()
                )),
                Exit::Success,
            ),
            Self::NotConfirmed => (
                Some("not confirmed: nothing was changed".to_owned()),
                Exit::Success,
            ),
            Self::WindowBlocked { blocked, .. } => (
                Some(format!(
                    "not {}: {blocked}; nothing was changed (wait for the window, or pass --window-wait)",
                    match p.intent {
                        Intent::Promote { .. } => "promoted",
                        Intent::Rollback { .. } => "rolled back",
                    }
                )),
                Exit::GateNotMet,
            ),
            Self::Interrupted { .. } => (None, Exit::Interrupted),
        }
    }
}

/// The summary of a run that took the lock: the table, the outcome's line and what to do
/// next.
fn summarize(
    out: Output,
    env: &Environment,
    p: &PromotionPlan,
    report: &RunReport,
    rollback: bool,
) {
    print_summary(out, report);
    if report.outcome == Outcome::Interrupted {
        out.note(format!(
            "interrupted: run `deploy {} --env {}` again to resume; finished clusters are skipped",
            verb(p),
            env.name
        ));
    }
    if report.outcome == Outcome::Halted {
        out.note(format!(
            "halted, nothing rolled back: run `deploy {} --env {}` again when the sync window allows (or with --window-wait); finished clusters are skipped",
            verb(p),
            env.name
        ));
    }
    if matches!(report.outcome, Outcome::Failed) && !rollback {
        out.note(
            "not rolled back (--no-rollback): `deploy rollback` returns to the previous release",
        );
    }
}

/// Prints the per-cluster summary table.
pub fn print_summary(out: Output, report: &RunReport) {
    let mut t = table(&[
        "WAVE",
        "CLUSTER",
        "APPLICATION",
        "FROM",
        "TO",
        "RESULT",
        "TIME",
    ]);
    for a in &report.apps {
        let state = deploy_core::plan::history::result_text(a);
        t.add_row(vec![
            a.wave.to_string(),
            a.cluster.clone(),
            a.application.clone(),
            a.from.clone(),
            a.to.clone(),
            state,
            format!("{:.1}s", a.elapsed_ms as f64 / 1000.0),
        ]);
    }
    out.text(t);
    out.text(format!("{}: {}", report.outcome, report.message));
}
