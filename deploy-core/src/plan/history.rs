//! `deploy history`: the runs of an environment, newest first, from its audit records.
//!
//! A run leaves two records (one when it takes the lock, one when it ends); this pairs them
//! by run id. A run with only its first record was killed, or is still running. The end
//! record repeats what the first one says, so a reader may pass only the end records
//! (`deploy_engine::observe::trail::newest` does).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::model::Release;
use crate::trail::{Actor, AppReport, AppState, AuditRecord, Outcome, RunKind};

/// One promotion or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// The run's id.
    pub run_id: String,
    /// Promote or rollback.
    pub kind: RunKind,
    /// Environment.
    pub environment: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended; `None` when no end was recorded.
    pub finished_at: Option<Timestamp>,
    /// How long it ran; `None` when no end was recorded.
    #[serde(with = "opt_secs")]
    pub duration: Option<Duration>,
    /// Who.
    pub actor: Actor,
    /// The release, with every digest.
    pub release: Release,
    /// Clusters the run synced (from its end record), else every cluster it planned.
    pub clusters: Vec<String>,
    /// Clusters already at the release.
    pub skipped: Vec<String>,
    /// How it ended; [`Outcome::Started`] when no end was recorded.
    pub outcome: Outcome,
    /// Why, in one line.
    pub message: String,
    /// Whether the run's end is recorded (`false`: killed, or still running).
    pub ended: bool,
    /// Where each Application was left, from the end record (empty when there is none, or
    /// in a record older than this field).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppReport>,
}

impl HistoryRow {
    /// The outcome as a person reads it.
    pub fn outcome_text(&self) -> String {
        if self.ended {
            self.outcome.to_string()
        } else {
            "started (no end recorded: killed?)".to_owned()
        }
    }
}

/// The runs of `environment` in `records`, newest first (by start, then run id), at most
/// `limit` of them.
pub fn history(
    records: &[AuditRecord],
    environment: &str,
    limit: Option<usize>,
) -> Vec<HistoryRow> {
    let mut runs: BTreeMap<&str, (Option<&AuditRecord>, Option<&AuditRecord>)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.environment == environment) {
        let entry = runs.entry(r.run_id.as_str()).or_default();
        if r.outcome == Outcome::Started {
            entry.0.get_or_insert(r);
        } else {
            // The last end record wins (there is one per run; a retry writes the same).
            entry.1 = Some(r);
        }
    }
    let mut rows: Vec<HistoryRow> = runs
        .into_values()
        .filter_map(|(started, end)| {
            let base = end.or(started)?;
            let started_at = started.map_or(base.started_at, |s| s.started_at);
            let finished_at = end.map(|e| e.finished_at);
            Some(HistoryRow {
                run_id: base.run_id.clone(),
                kind: base.kind,
                environment: base.environment.clone(),
                started_at,
                finished_at,
                duration: finished_at.map(|f| {
                    f.duration_since(started_at)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                }),
                actor: base.actor.clone(),
                release: base.release.clone(),
                clusters: match end {
                    Some(e) => e.changed.clone(),
                    None => base.previous.keys().cloned().collect(),
                },
                skipped: base.skipped.clone(),
                outcome: base.outcome,
                message: base.message.clone(),
                ended: end.is_some(),
                apps: end.map(|e| e.apps.clone()).unwrap_or_default(),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
    if let Some(n) = limit {
        rows.truncate(n);
    }
    rows
}

/// The syncs of an environment as Argo CD's history of its Applications tells them, for when
/// its state store has no record (a trail that was lost, or promotions made by hand): one row
/// per release in time order, across the clusters that synced it in a row. Who ran it is not
/// known there; every history entry is a successful sync. Newest first, at most `limit`.
pub fn from_argocd(
    environment: &str,
    apps: &[(&str, &crate::port::Application)],
    kind: &crate::config::ImageOverride,
    limit: Option<usize>,
) -> Vec<HistoryRow> {
    let mut entries: Vec<(Timestamp, crate::model::Tag, &str)> = apps
        .iter()
        .flat_map(|(cluster, app)| {
            app.history.iter().filter_map(move |h| {
                let v = h.override_value.as_ref().filter(|v| v.is_kind(kind))?;
                let [tag] = v.tags().try_into().ok()?;
                Some((h.deployed_at?, crate::model::Tag::new(tag).ok()?, *cluster))
            })
        })
        .collect();
    entries.sort();
    let mut rows: Vec<HistoryRow> = Vec::new();
    for (at, tag, cluster) in entries {
        match rows.last_mut() {
            Some(r) if r.release.tag == tag && !r.clusters.iter().any(|c| c == cluster) => {
                r.clusters.push(cluster.to_owned());
                r.finished_at = Some(at);
                r.duration = at.duration_since(r.started_at).try_into().ok();
            }
            _ => rows.push(HistoryRow {
                run_id: format!("argocd-{}", at.as_second()),
                kind: RunKind::Promote,
                environment: environment.to_owned(),
                started_at: at,
                finished_at: Some(at),
                duration: Some(Duration::ZERO),
                actor: Actor {
                    os_user: "unknown (Argo CD history)".into(),
                    argocd_user: None,
                },
                release: Release {
                    tag,
                    digests: BTreeMap::new(),
                },
                clusters: vec![cluster.to_owned()],
                skipped: Vec::new(),
                outcome: Outcome::Succeeded,
                message: "from Argo CD's history: the state store has no record of it".into(),
                ended: true,
                apps: Vec::new(),
            }),
        }
    }
    rows.reverse();
    if let Some(n) = limit {
        rows.truncate(n);
    }
    rows
}

/// Where one Application was left, as a person reads it in a table whose columns name the
/// releases (`deploy history`, the summary table of a run).
pub fn result_text(a: &AppReport) -> String {
    left(a, false)
}

/// Where one Application was left, in words: the one rendering of [`AppState`], for a table
/// ([`result_text`]) and for a line that must name the release itself (`release_named`: a
/// notification).
pub fn left(a: &AppReport, release_named: bool) -> String {
    let release = if release_named {
        a.to.as_str()
    } else {
        "the release"
    };
    match &a.state {
        AppState::Skipped if release_named => "already there".to_owned(),
        AppState::Skipped => "skipped (already there)".to_owned(),
        AppState::Deployed if release_named => format!("deployed {}, Healthy", a.to),
        AppState::Deployed => "deployed, Healthy".to_owned(),
        AppState::Unsoaked => format!("at {release}, not soaked there"),
        AppState::SoakedAgain if release_named => format!("at {}, soaked again, Healthy", a.to),
        AppState::SoakedAgain => "soaked again, Healthy".to_owned(),
        AppState::Failed(r) => format!("FAILED: {r}"),
        AppState::RolledBack => format!("rolled back to {}", a.from),
        AppState::RollbackFailed(r) => format!("ROLLBACK FAILED: {r}"),
        AppState::NotStarted => "not started".to_owned(),
        AppState::Interrupted => "interrupted".to_owned(),
    }
}

mod opt_secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tag;

    fn record(run: &str, env: &str, start_min: i64, outcome: Outcome, end_min: i64) -> AuditRecord {
        let at = |m: i64| Timestamp::from_second(1_700_000_000 + m * 60).unwrap();
        AuditRecord {
            run_id: run.into(),
            kind: RunKind::Promote,
            environment: env.into(),
            actor: Actor {
                os_user: "alice".into(),
                argocd_user: None,
            },
            release: Release {
                tag: Tag::new(format!("tag-{run}")).unwrap(),
                digests: BTreeMap::new(),
            },
            previous: BTreeMap::from([("us-west-2".into(), None), ("eu-west-1".into(), None)]),
            changed: if outcome == Outcome::Started {
                vec![]
            } else {
                vec!["us-west-2".into()]
            },
            skipped: vec![],
            started_at: at(start_min),
            finished_at: at(end_min),
            outcome,
            message: String::new(),
            checks: vec![],
            apps: vec![],
        }
    }

    #[track_caller]
    fn check(records: &[AuditRecord], limit: Option<usize>, expect: &[(&str, &str, Option<u64>)]) {
        let got: Vec<(String, String, Option<u64>)> = history(records, "prod", limit)
            .iter()
            .map(|r| {
                (
                    r.run_id.clone(),
                    r.outcome_text(),
                    r.duration.map(|d| d.as_secs()),
                )
            })
            .collect();
        let expect: Vec<(String, String, Option<u64>)> = expect
            .iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), *c))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn pairs_runs_newest_first() {
        let records = [
            record("r1", "prod", 0, Outcome::Started, 0),
            record("s1", "staging", 1, Outcome::Started, 1),
            record("r1", "prod", 0, Outcome::Succeeded, 3),
            record("r2", "prod", 10, Outcome::Started, 10),
            record("r3", "prod", 20, Outcome::Started, 20),
            record("r3", "prod", 20, Outcome::RolledBack, 25),
        ];
        let killed = "started (no end recorded: killed?)";
        check(
            &records,
            None,
            &[
                ("r3", "rolled_back", Some(300)),
                ("r2", killed, None),
                ("r1", "succeeded", Some(180)),
            ],
        );
        check(&records, Some(1), &[("r3", "rolled_back", Some(300))]);
        check(&records[..0], None, &[]);
        // An end without its start (a trail cut short) is still a run.
        check(&records[2..3], None, &[("r1", "succeeded", Some(180))]);
        let rows = history(&records, "prod", None);
        assert_eq!(rows[0].clusters, ["us-west-2"], "what the run synced");
        assert_eq!(
            rows[1].clusters,
            ["eu-west-1", "us-west-2"],
            "what it planned"
        );
        assert!(!rows[1].ended);
    }

    /// The end record says where each cluster was left, a half-failed rollback included,
    /// and `history` passes it on; a record from before the field still reads.
    #[test]
    fn rows_say_where_each_cluster_was_left() {
        let app = |cluster: &str, state: AppState| AppReport {
            wave: 1,
            cluster: cluster.into(),
            application: format!("myapp-prod-{cluster}"),
            from: "v1".into(),
            to: "v2".into(),
            state,
            elapsed_ms: 0,
        };
        let mut end = record("r1", "prod", 0, Outcome::Failed, 3);
        end.apps = vec![
            app("us-west-2", AppState::RolledBack),
            app("eu-west-1", AppState::RollbackFailed("Degraded".into())),
        ];
        let records = [record("r1", "prod", 0, Outcome::Started, 0), end.clone()];
        let rows = history(&records, "prod", None);
        assert_eq!(rows[0].apps, end.apps);
        let left: Vec<String> = rows[0].apps.iter().map(result_text).collect();
        assert_eq!(left, ["rolled back to v1", "ROLLBACK FAILED: Degraded"]);
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["apps"][1]["cluster"], "eu-west-1");
        assert_eq!(json["apps"][1]["state"]["state"], "rollback_failed");
        // Only the end record, as `trail::newest` reads it: the same row.
        assert_eq!(history(&records[1..], "prod", None), rows);

        // A record written before `apps` existed.
        let mut old =
            serde_json::to_value(record("r0", "prod", 0, Outcome::RolledBack, 1)).unwrap();
        assert!(old.get("apps").is_none(), "not written when empty");
        old.as_object_mut().unwrap().remove("apps");
        let old: AuditRecord = serde_json::from_value(old).unwrap();
        assert!(history(&[old], "prod", None)[0].apps.is_empty());
    }

    /// One wording of where an Application was left: in a table (the release in its own
    /// column) and in a notification's line (the release named).
    #[test]
    fn where_an_application_was_left_reads_in_both_forms() {
        let at = |state| AppReport {
            wave: 1,
            cluster: "eu".into(),
            application: "myapp-prod-eu".into(),
            from: "v1".into(),
            to: "v2".into(),
            state,
            elapsed_ms: 0,
        };
        let cases = [
            (
                AppState::Skipped,
                "skipped (already there)",
                "already there",
            ),
            (
                AppState::Deployed,
                "deployed, Healthy",
                "deployed v2, Healthy",
            ),
            (
                AppState::Unsoaked,
                "at the release, not soaked there",
                "at v2, not soaked there",
            ),
            (
                AppState::SoakedAgain,
                "soaked again, Healthy",
                "at v2, soaked again, Healthy",
            ),
            (AppState::Failed("x".into()), "FAILED: x", "FAILED: x"),
            (
                AppState::RolledBack,
                "rolled back to v1",
                "rolled back to v1",
            ),
            (
                AppState::RollbackFailed("y".into()),
                "ROLLBACK FAILED: y",
                "ROLLBACK FAILED: y",
            ),
            (AppState::NotStarted, "not started", "not started"),
            (AppState::Interrupted, "interrupted", "interrupted"),
        ];
        for (state, table, line) in cases {
            let a = at(state);
            assert_eq!(result_text(&a), table);
            assert_eq!(left(&a, true), line);
        }
    }

    #[test]
    fn argo_cd_history_when_the_store_has_nothing() {
        use crate::port::{HistoryEntry, OverrideValue};
        let helm = crate::config::ImageOverride::Helm {
            parameter: "image.tag".into(),
        };
        let app = |tags: &[(&str, i64)]| {
            let mut a = crate::port::test_app("a", &[]);
            a.history = tags
                .iter()
                .enumerate()
                .map(|(i, (t, s))| HistoryEntry {
                    id: i as i64,
                    revision: "HEAD".into(),
                    deployed_at: Some(Timestamp::from_second(1_700_000_000 + s).unwrap()),
                    override_value: Some(OverrideValue::Helm {
                        parameter: "image.tag".into(),
                        value: (*t).into(),
                        digests: Default::default(),
                    }),
                })
                .collect();
            a
        };
        let west = app(&[("v1", 0), ("v2", 100), ("v1", 400)]);
        let east = app(&[("v1", 1), ("v2", 200)]);
        let rows = from_argocd("prod", &[("west", &west), ("east", &east)], &helm, None);
        let got: Vec<(String, Vec<String>)> = rows
            .iter()
            .map(|r| (r.release.tag.to_string(), r.clusters.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("v1".into(), vec!["west".into()]),
                ("v2".into(), vec!["west".into(), "east".into()]),
                ("v1".into(), vec!["west".into(), "east".into()]),
            ]
        );
        assert_eq!(rows[1].duration, Some(Duration::from_secs(100)));
        assert_eq!(
            from_argocd("prod", &[("west", &west)], &helm, Some(1)).len(),
            1
        );
    }
}
