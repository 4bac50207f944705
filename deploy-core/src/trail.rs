//! The audit trail: two records per promotion or rollback (who, what, where, when, outcome,
//! and where each cluster was left), and how a command reads the newest of them without
//! reading the whole trail (`deploy_engine::observe::trail::newest`).
//!
//! A store lists its records cheaply (an S3 listing carries each record's time, run and kind
//! in its key) and reads each body at a cost (one GET). So a reader lists back from now in
//! widening windows until it has seen enough runs, then reads one record per run, newest
//! first, and only as many as it needs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::check::{Phase, Verdict};
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
    pub checks: Vec<crate::trail::Measurement>,
    /// Where each Application was left at the end, in wave order: deployed, skipped, rolled
    /// back, or a rollback that did not complete (with why). Empty in a run's first record,
    /// and in records written before this field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppReport>,
}

impl AuditRecord {
    /// This record as a listing shows it, kept at `id`: its time is its run's start for the
    /// first record, its end for the other.
    pub fn entry(&self, id: impl Into<String>) -> Entry {
        let started = self.outcome == Outcome::Started;
        Entry {
            id: id.into(),
            run_id: self.run_id.clone(),
            at: if started {
                self.started_at
            } else {
                self.finished_at
            },
            started,
        }
    }
}

/// Which records a listing asks for: those of `environment` (`None`: every environment the
/// store keeps) written at or after `since` and before `before` (no bound when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listing<'a> {
    /// The environment, or every one.
    pub environment: Option<&'a str>,
    /// From this time on.
    pub since: Option<Timestamp>,
    /// Before this time.
    pub before: Option<Timestamp>,
}

impl Listing<'_> {
    /// Whether `entry` was written in `[since, before)` (its environment is for the store to
    /// match, as it keys them).
    pub fn contains(&self, entry: &Entry) -> bool {
        self.since.is_none_or(|s| entry.at >= s) && self.before.is_none_or(|b| entry.at < b)
    }
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

// ---------------------------------------------------------------- reading

/// One record as a store lists it, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the store keeps it (an S3 key, a line number), for `AuditLog::read`.
    pub id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// When it was written: its run's start, or its end.
    pub at: Timestamp,
    /// The run's first record (else its end).
    pub started: bool,
}

/// What a store gave, and what it skipped: one line each, for the caller to show (a damaged
/// record costs only itself, never the command).
#[derive(Debug, Clone, PartialEq)]
pub struct Found<T> {
    /// What was read, in the order asked for (a listing: oldest first).
    pub items: Vec<T>,
    /// What could not be read, and why.
    pub warnings: Vec<String>,
}

impl<T> Default for Found<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// How far back a listing looks, widening until it has seen enough runs; then the whole
/// trail. Most runs are recent, so the newest few are found in a day's or a week's keys.
pub const WINDOWS: [Duration; 4] = [
    Duration::from_secs(86_400),
    Duration::from_secs(7 * 86_400),
    Duration::from_secs(30 * 86_400),
    Duration::from_secs(366 * 86_400),
];

/// Records `deploy_engine::observe::newest` reads first (then twice as many each time).
pub const BATCH: usize = 10;

/// How many runs back a command searches the trail for a fact it only adds to what Argo CD
/// says (who promoted a cluster for `status`, a release's digests for `rollback`): the runs
/// of a few months for most teams, and at most this many reads.
pub const SEARCH_RUNS: usize = 100;

/// One entry per run, the newest `runs` runs first. A run whose first record was not listed
/// started before `since` (the oldest time listed), so it ranks no newer than that.
pub fn pick(entries: Vec<Entry>, since: Option<Timestamp>, runs: usize) -> Vec<Entry> {
    let mut by_run: HashMap<String, (Option<Entry>, Option<Entry>)> = HashMap::new();
    for e in entries {
        let slot = by_run.entry(e.run_id.clone()).or_default();
        let (first, end) = slot;
        if e.started {
            if first.as_ref().is_none_or(|f| e.at < f.at) {
                *first = Some(e);
            }
        } else if end.as_ref().is_none_or(|x| e.at >= x.at) {
            *end = Some(e);
        }
    }
    let mut chosen: Vec<(Timestamp, Entry)> = by_run
        .into_values()
        .filter_map(|(first, end)| {
            let start = match (&first, &end, since) {
                (Some(f), _, _) => f.at,
                (None, Some(e), Some(s)) => e.at.min(s),
                (None, Some(e), None) => e.at,
                (None, None, _) => return None,
            };
            Some((start, end.or(first)?))
        })
        .collect();
    chosen.sort_by(|(a, x), (b, y)| b.cmp(a).then_with(|| y.run_id.cmp(&x.run_id)));
    chosen.truncate(runs);
    chosen.into_iter().map(|(_, e)| e).collect()
}

/// Sample values in JSON: finite ones as numbers, the others as Prometheus spells them. A
/// `null` (what serde_json writes for a non-finite `f64`, in records from before) reads as NaN.
pub mod samples {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Sample {
        Number(f64),
        Word(String),
        Null(()),
    }

    /// Writes the values, non-finite ones as words.
    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|v| match *v {
            v if v.is_finite() => Sample::Number(v),
            v if v.is_nan() => Sample::Word("NaN".into()),
            v if v > 0.0 => Sample::Word("+Inf".into()),
            _ => Sample::Word("-Inf".into()),
        }))
    }

    /// Reads the values written by [`serialize`] (or `null` for NaN).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Sample>::deserialize(d)?
            .into_iter()
            .map(|s| match s {
                Sample::Number(v) => Ok(v),
                Sample::Null(()) => Ok(f64::NAN),
                Sample::Word(w) => match w.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "+Inf" | "Inf" => Ok(f64::INFINITY),
                    "-Inf" => Ok(f64::NEG_INFINITY),
                    _ => Err(serde::de::Error::custom(format!(
                        "{w:?} is not a sample value"
                    ))),
                },
            })
            .collect()
    }
}

/// One measurement, as the audit record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The check.
    pub check: String,
    /// The cluster.
    pub cluster: String,
    /// The wave.
    pub wave: usize,
    /// The query as sent (resolved).
    pub query: String,
    /// The values measured (empty: no data, or an error). NaN and ±Inf are written as
    /// Prometheus writes them (`"NaN"`, `"+Inf"`, `"-Inf"`): JSON has no such numbers.
    #[serde(with = "samples")]
    pub values: Vec<f64>,
    /// The measurement's phase.
    pub phase: Phase,
    /// The check's verdict after it.
    pub verdict: Verdict,
    /// Why, for an error or no data.
    pub error: Option<String>,
    /// When.
    pub at: jiff::Timestamp,
}

/// Where one Application ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum AppState {
    /// Already at the release.
    Skipped,
    /// Now at the release, Healthy.
    Deployed,
    /// At the release (an interrupted run brought it there), not yet soaked there.
    Unsoaked,
    /// At the release (an interrupted run brought it there), now soaked and checked there.
    SoakedAgain,
    /// Failed (and not rolled back).
    Failed(String),
    /// Failed or part of a failed run, returned to its previous release.
    RolledBack,
    /// Rollback did not reach the previous release.
    RollbackFailed(String),
    /// The run stopped before reaching it.
    NotStarted,
    /// Stopped while in flight.
    Interrupted,
}

/// One Application's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    /// Wave (1-based).
    pub wave: usize,
    /// Cluster.
    pub cluster: String,
    /// Application.
    pub application: String,
    /// Tag before.
    pub from: String,
    /// Release tag.
    pub to: String,
    /// Where it ended.
    pub state: AppState,
    /// Milliseconds spent.
    pub elapsed_ms: u64,
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

#[cfg(test)]
mod measurement {
    use super::*;
    use crate::check::show_values;

    #[test]
    fn values_in_one_line() {
        assert_eq!(show_values(&[]), "no data");
        assert_eq!(show_values(&[0.25]), "0.25");
        assert_eq!(show_values(&[0.1, f64::NAN]), "[0.1, NaN]");
    }

    /// A measurement of NaN or ±Inf (an error ratio with no traffic is 0/0) is kept in the
    /// audit record and read back: JSON has no such numbers, and serde_json writes them as
    /// `null`, which no longer decodes as a number. Each line: the values, their JSON.
    #[test]
    fn every_value_survives_the_audit_record() {
        #[track_caller]
        fn check(values: &[f64], json: &str) {
            let m = Measurement {
                check: "c".into(),
                cluster: "eu-west-1".into(),
                wave: 1,
                query: "q".into(),
                values: values.to_vec(),
                phase: Phase::Error,
                verdict: Verdict::Running,
                error: None,
                at: jiff::Timestamp::UNIX_EPOCH,
            };
            let text = serde_json::to_string(&m).unwrap();
            assert!(text.contains(&format!("\"values\":{json}")), "{text}");
            let back: Measurement = serde_json::from_str(&text).expect("reads back");
            assert_eq!(show_values(&back.values), show_values(values));
        }
        check(&[], "[]");
        check(&[0.25, 1.0, -3.5e-7], "[0.25,1.0,-3.5e-7]");
        check(&[f64::NAN], "[\"NaN\"]");
        check(
            &[f64::INFINITY, f64::NEG_INFINITY, 0.0],
            "[\"+Inf\",\"-Inf\",0.0]",
        );
        // Records written before non-finite values were spelled out hold `null`.
        let old = serde_json::to_string(&serde_json::json!({
            "check": "c", "cluster": "x", "wave": 1, "query": "q", "values": [null, 2.0],
            "phase": "error", "verdict": "running", "error": null, "at": "1970-01-01T00:00:00Z",
        }))
        .unwrap();
        let back: Measurement = serde_json::from_str(&old).expect("an old record reads");
        assert_eq!(show_values(&back.values), "[NaN, 2]");
    }
}
