//! What a run leaves in its audit trail at its end: where each cluster was left, a
//! half-failed rollback included, and a report that says when that record could not be
//! written.

use async_trait::async_trait;
use deploy_core::plan::promotion::Intent;
use deploy_core::port::AuditLog;
use deploy_core::sim::Script;
use deploy_core::trail::AppState;
use deploy_core::trail::{AuditRecord, Entry, Found, Listing, Outcome};
use deploy_core::{Error, Result};
use deploy_engine::engine::Engine;

use crate::support::{Fixture, T1, T2};

/// eu-west-1 goes Degraded in wave 2, and again when rolled back: the end record says that
/// us-west-2 and us-east-1 are back on the previous release and eu-west-1's rollback did not
/// complete, and `history` shows it after the process is gone.
#[tokio::test(start_paused = true)]
async fn a_half_failed_rollback_is_recorded_per_cluster() {
    let f = Fixture::with_staging_at_t2().await;
    let eu = f.app_name("prod", "eu-west-1");
    f.world.argocd.push_script(&eu, Script::Degraded);
    f.world.argocd.push_script(&eu, Script::Degraded);
    let (report, _) = f.promote(f.options("run-half", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);

    let records = f.world.audit.records().await.unwrap();
    let end = records.last().unwrap();
    assert_eq!(end.outcome, Outcome::Failed);
    assert_eq!(
        end.apps, report.apps,
        "the end record keeps the report's table"
    );
    let left: Vec<(&str, &AppState, &str, &str)> = end
        .apps
        .iter()
        .map(|a| (a.cluster.as_str(), &a.state, a.from.as_str(), a.to.as_str()))
        .collect();
    assert!(
        left.contains(&("us-west-2", &AppState::RolledBack, T1, T2)),
        "{left:#?}"
    );
    assert!(
        left.iter()
            .any(|(c, s, ..)| *c == "eu-west-1" && matches!(s, AppState::RollbackFailed(_))),
        "{left:#?}"
    );
    assert!(
        records[0].apps.is_empty(),
        "the first record has no result yet"
    );
    // What the trail shows later, from the end record alone.
    let rows = deploy_core::plan::history::history(&records[1..], "prod", None);
    assert_eq!(rows[0].apps, report.apps);
}

/// An audit log that writes a run's first record and refuses its end, as a full disk or an
/// audit directory replaced by a file would.
#[derive(Debug)]
struct RefusesEnds<'a>(&'a dyn AuditLog);

#[async_trait]
impl AuditLog for RefusesEnds<'_> {
    async fn append(&self, record: &AuditRecord) -> Result<()> {
        if record.outcome == Outcome::Started {
            self.0.append(record).await
        } else {
            Err(Error::invalid("appending to the audit log: Is a directory"))
        }
    }
    async fn list(&self, listing: Listing<'_>) -> Result<Found<Entry>> {
        self.0.list(listing).await
    }
    async fn read(&self, entries: &[Entry]) -> Result<Found<AuditRecord>> {
        self.0.read(entries).await
    }
}

/// The promotion stands (every cluster at the release), but the report says its end record
/// is missing, which the CLI turns into exit 1.
#[tokio::test(start_paused = true)]
async fn an_end_record_that_cannot_be_written_is_in_the_report() {
    let f = Fixture::with_staging_at_t2().await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let audit = RefusesEnds(&f.world.audit);
    let mut ports = f.ports();
    ports.audit = &audit;
    let report = Engine::new(ports, f.options("run-unrecorded", None))
        .run(&plan, |_| {})
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let why = report
        .record_error
        .as_deref()
        .expect("the missing record is reported");
    assert!(why.contains("Is a directory"), "{why}");
    assert!(
        report.message.contains("could NOT be written"),
        "{}",
        report.message
    );
    let records = f.world.audit.records().await.unwrap();
    assert_eq!(records.len(), 1, "only the first record landed");

    // With the record written, nothing is reported.
    let f = Fixture::with_staging_at_t2().await;
    let (report, _) = f.promote(f.options("run-recorded", None)).await;
    assert_eq!(report.unwrap().record_error, None);
}
