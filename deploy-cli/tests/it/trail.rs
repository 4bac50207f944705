//! The audit trail through the real binary: `history --limit 10` over 2,000 records in moto's
//! S3 costs one listing and ten GETs (counted in moto's request log), shows where each
//! cluster was left, and skips a damaged record with a warning; a promotion whose end record
//! cannot be written exits 1.

use std::collections::BTreeMap;
use std::time::Duration;

use deploy_aws::moto::put_object;
use deploy_core::model::{Release, Tag};
use deploy_core::trail::{Actor, AuditRecord, Outcome, RunKind};
use deploy_core::trail::{AppReport, AppState};
use futures::StreamExt as _;
use jiff::Timestamp;

use crate::e2e::{PROMOTE, Replication, STATE_BUCKET, WAVE1_APP, World, json_args, wait_until};
use crate::support::{FIRST, SECOND, Sandbox};

/// Runs (two records each) seeded for the history measurement.
const RUNS: u64 = 1000;

fn record(run: &str, at: Timestamp, outcome: Outcome) -> AuditRecord {
    let app = |cluster: &str, state: AppState| AppReport {
        wave: 1,
        cluster: cluster.into(),
        application: format!("myapp-prod-{cluster}"),
        from: "0a1b2c3".into(),
        to: "9f8e7d6".into(),
        state,
        elapsed_ms: 1,
    };
    AuditRecord {
        run_id: run.into(),
        kind: RunKind::Promote,
        environment: "prod".into(),
        actor: Actor {
            os_user: "ci".into(),
            argocd_user: None,
        },
        release: Release {
            tag: Tag::new("9f8e7d6").unwrap(),
            digests: BTreeMap::new(),
        },
        previous: BTreeMap::new(),
        changed: vec!["us-west-2".into(), "eu-west-1".into()],
        skipped: vec![],
        started_at: at,
        finished_at: at.checked_add(Duration::from_secs(90)).unwrap(),
        outcome,
        message: String::new(),
        checks: vec![],
        apps: if outcome == Outcome::Failed {
            vec![
                app("us-west-2", AppState::RolledBack),
                app("eu-west-1", AppState::RollbackFailed("Degraded".into())),
            ]
        } else {
            vec![]
        },
    }
}

/// The key the S3 trail keeps `record` at (ARCHITECTURE.md, "state.rs"): written here by
/// hand, as another machine would have.
fn key(record: &AuditRecord) -> String {
    let (at, which) = match record.outcome {
        Outcome::Started => (record.started_at, "started"),
        _ => (record.finished_at, "end"),
    };
    format!(
        "deploy/prod/records/{}-{}-{which}.json",
        at.strftime("%Y%m%dT%H%M%S.%9fZ"),
        record.run_id
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limit_10_at_2000_records_lists_once_and_gets_10() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    let now = Timestamp::now();
    // A run an hour, the newest an hour ago; the newest run's rollback half failed.
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..RUNS {
        let run = format!("20250101T000000Z-{i:04}");
        let at = now
            .checked_sub(Duration::from_secs(3600 * (RUNS - i)))
            .unwrap();
        let end = if i == RUNS - 1 {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        for r in [record(&run, at, Outcome::Started), record(&run, at, end)] {
            objects.push((key(&r), serde_json::to_vec(&r).unwrap()));
        }
    }
    // The newest run's end record is damaged: skipped with a warning, never a failed
    // command.
    let newest = record(
        "20250101T000000Z-9999",
        now.checked_sub(Duration::from_secs(600)).unwrap(),
        Outcome::Started,
    );
    objects.push((key(&newest), serde_json::to_vec(&newest).unwrap()));
    let mut end = newest.clone();
    end.outcome = Outcome::Succeeded;
    let damaged = key(&end);
    objects.push((damaged.clone(), b"{\"run_id\": ".to_vec()));
    let endpoint = &world.prod_moto.endpoint;
    futures::stream::iter(objects)
        .for_each_concurrent(16, |(key, body)| async move {
            put_object(endpoint, STATE_BUCKET, &key, body).await;
        })
        .await;

    let before = world.prod_moto.requests().await.len();
    let run = world
        .run(&json_args(&["history", "--env", "prod", "--limit", "10"]))
        .await;
    let requests = world.prod_moto.requests().await;
    run.expect_code(0);
    let seen = &requests[before..];
    let lists = seen.iter().filter(|r| r.contains("list-type=2")).count();
    let gets = seen
        .iter()
        .filter(|r| r.starts_with(&format!("GET /{STATE_BUCKET}/deploy/prod/records/")))
        .count();
    assert_eq!(
        (lists, gets, seen.len()),
        (1, 10, 11),
        "one listing and the 10 newest runs' end records: {seen:#?}"
    );

    let lines = run.lines();
    let runs: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "run")
        .map(|l| &l["data"])
        .collect();
    assert_eq!(runs.len(), 9, "the damaged run is left out: {}", run.stdout);
    assert_eq!(
        runs[0]["run_id"],
        format!("20250101T000000Z-{:04}", RUNS - 1)
    );
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[0]["apps"][1]["cluster"], "eu-west-1");
    assert_eq!(runs[0]["apps"][1]["state"]["state"], "rollback_failed");
    let warnings = run.result()["warnings"].clone();
    assert!(
        warnings.to_string().contains(&damaged),
        "the damaged record is named: {warnings}"
    );

    // The text table says where each cluster was left.
    let text = world
        .run(&["history", "--env", "prod", "--limit", "2"])
        .await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("eu-west-1: ROLLBACK FAILED: Degraded")
            && text.stdout.contains("us-west-2: rolled back to 0a1b2c3"),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains(&damaged), "warned: {}", text.stderr);
}

/// The audit file is replaced by a directory while wave 1 soaks: the promotion itself
/// succeeds, but its end record cannot be written, so it exits 1 and says why (N13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_whose_end_record_cannot_be_written_exits_1() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.set_prod_timings("3s", "60s");
    let running = world.spawn(&json_args(&PROMOTE));
    wait_until("the sync of wave 1", || async {
        world.syncs(WAVE1_APP).await > 0
    })
    .await;
    let audit = world.audit_log();
    assert_eq!(world.audit().len(), 1, "the run's first record is written");
    std::fs::remove_file(&audit).unwrap();
    std::fs::create_dir(&audit).unwrap();
    let run = running.wait().await;
    run.expect_code(1);
    let result = run.result();
    assert_eq!(
        result["outcome"], "succeeded",
        "what happened stands: {result:#}"
    );
    assert!(
        result["record_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{result:#}"
    );
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("could NOT be written")),
        "{result:#}"
    );
}

/// `rollback --to` a release the trail recorded takes its digests from the trail (read from
/// its newest runs, not all of it): gate 2 says so in the plan.
#[test]
fn rollback_to_a_recorded_release_uses_its_recorded_digests() {
    let s = Sandbox::new();
    s.wait_staging_healthy(SECOND);
    s.json(&["promote", "--env", "prod", "--yes"])
        .expect_code(0);
    s.json(&["rollback", "--env", "prod", "--yes"])
        .expect_code(0);
    s.assert_runs("prod", FIRST);
    let run = s.json(&["rollback", "--env", "prod", "--to", SECOND, "--dry-run"]);
    run.expect_code(0);
    let plan = &run.result()["plan"];
    let gate = plan["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .find(|g| g["name"] == "source_complete")
        .expect("gate 2")
        .clone();
    assert_eq!(
        gate["summary"], "digests recorded in the audit trail",
        "{plan:#}"
    );
    assert_eq!(plan["release"]["tag"], SECOND);
}

/// `status` reads no record while every Application says who promoted it; when one lost its
/// annotations (an ApplicationSet without preservedFields), it reads the newest runs until
/// that cluster is found: one GET here, never the whole trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_trail_only_for_a_cluster_without_annotations() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    world.run(&json_args(&PROMOTE)).await.expect_code(0);
    let bill = |seen: &[String]| {
        let lists = seen.iter().filter(|r| r.contains("list-type=2")).count();
        let gets = seen
            .iter()
            .filter(|r| r.starts_with(&format!("GET /{STATE_BUCKET}/deploy/prod/records/")))
            .count();
        (lists, gets)
    };
    let promoted_by = |run: &crate::support::Run, cluster: &str| {
        run.lines()
            .iter()
            .find(|l| l["type"] == "application" && l["data"]["cluster"] == cluster)
            .map(|l| l["data"]["promoted_by"].clone())
            .expect("the cluster's row")
    };

    let before = world.prod_moto.requests().await.len();
    let run = world.run(&json_args(&["status", "--env", "prod"])).await;
    let requests = world.prod_moto.requests().await;
    run.expect_code(0);
    assert_eq!(
        bill(&requests[before..]),
        (0, 0),
        "the annotations say it all"
    );

    world.argo.edit("myapp-prod-eu-west-1", |app| {
        app["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove("deploy/promoted-by");
    });
    let before = requests.len();
    let run = world.run(&json_args(&["status", "--env", "prod"])).await;
    let requests = world.prod_moto.requests().await;
    run.expect_code(0);
    let (lists, gets) = bill(&requests[before..]);
    assert_eq!(gets, 1, "the one run's end record");
    assert!(lists <= 5, "at most one listing per window: {lists}");
    let by = promoted_by(&run, "eu-west-1");
    assert!(
        by.as_str().is_some_and(|b| b.starts_with("e2e")),
        "from the trail: {by}"
    );
}
