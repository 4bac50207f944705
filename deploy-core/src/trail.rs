//! The audit trail: one record per promotion or rollback (who, what, where, when, outcome).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::Release;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `deploy promote`.
    Promote,
    /// `deploy rollback`.
    Rollback,
    /// `deploy unlock`: someone removed a promotion lock by hand (who, whose, which id).
    Unlock,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run took the lock and is under way (the first of its two records; a run killed
    /// before its end leaves only this one).
    Started,
    /// Every application runs the release, Healthy.
    Succeeded,
    /// Nothing to do: every application already ran the release, Healthy.
    UpToDate,
    /// A cluster failed; what this run changed was returned to the previous release.
    RolledBack,
    /// A cluster failed and the run stopped without rollback (or the rollback failed).
    Failed,
    /// Stopped by a signal; re-running resumes.
    Interrupted,
    /// A check was inconclusive: halted without rollback for a person to decide (promote
    /// again continues, rollback goes back).
    Inconclusive,
    /// Stopped before the end for a decision or a wait, without rollback (a sync window
    /// blocks the next wave); re-running continues.
    Halted,
    /// `deploy unlock` removed the lock a run had left.
    Unlocked,
}

impl Outcome {
    /// Succeeded or up to date.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::UpToDate)
    }
}

/// Who started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Actor {
    /// The OS user.
    pub os_user: String,
    /// The Argo CD user, when known.
    pub argocd_user: Option<String>,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.argocd_user {
            Some(a) if a != &self.os_user => write!(f, "{} ({a})", self.os_user),
            _ => f.write_str(&self.os_user),
        }
    }
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The run's id.
    pub run_id: String,
    /// Promote or rollback.
    pub kind: RunKind,
    /// Environment.
    pub environment: String,
    /// Who.
    pub actor: Actor,
    /// The release deployed, with every digest.
    pub release: Release,
    /// Cluster → the tag it ran before this run changed it.
    pub previous: BTreeMap<String, Option<String>>,
    /// Clusters this run synced.
    pub changed: Vec<String>,
    /// Clusters already at the release.
    pub skipped: Vec<String>,
    /// When the run started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in one line.
    pub message: String,
    /// Every check measurement of the run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::engine::check::Measurement>,
}

impl std::fmt::Display for Outcome {
    /// As in the JSON and the audit trail: `succeeded`, `up_to_date`, `rolled_back`, …
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::UpToDate => "up_to_date",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Inconclusive => "inconclusive",
            Self::Halted => "halted",
            Self::Unlocked => "unlocked",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_displays_as_in_json() {
        for (outcome, expect) in [
            (Outcome::Succeeded, "succeeded"),
            (Outcome::UpToDate, "up_to_date"),
            (Outcome::RolledBack, "rolled_back"),
            (Outcome::Failed, "failed"),
            (Outcome::Interrupted, "interrupted"),
            (Outcome::Inconclusive, "inconclusive"),
        ] {
            assert_eq!(outcome.to_string(), expect);
            assert_eq!(serde_json::to_value(outcome).unwrap(), expect);
        }
    }
}
