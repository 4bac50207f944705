//! Engine scenarios on tokio's paused clock: success, Degraded with rollback, timeout,
//! a foreign operation, interruption and resume, a held lock, a failing gate.

use std::time::Duration;

use deploy_core::trail::AppState;

use deploy_engine::engine::{EngineError, StopRequest};

use deploy_core::plan::promotion::{GateName, Intent};
use deploy_core::port::{ArgoCd, AuditLog, Health, Lock};
use deploy_core::rollout::event::Event;
use deploy_core::trail::Outcome;
use deploy_engine::memory::argocd::Script;

use crate::support::{Fixture, T1, T2, tag};

fn healthy_at(t: &str) -> Vec<(String, String, Health)> {
    ["us-west-2", "us-east-1", "eu-west-1"]
        .iter()
        .map(|c| (c.to_string(), t.to_string(), Health::Healthy))
        .collect()
}

fn position(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().position(pred).expect("event not found")
}

#[tokio::test(start_paused = true)]
async fn promotes_wave_by_wave() {
    let f = Fixture::with_staging_at_t2().await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    assert!(plan.is_go(), "{:#?}", plan.gates);
    assert_eq!(plan.release.as_ref().unwrap().tag, tag(T2));
    assert_eq!(plan.changes(), 3);
    let (report, events) = f.run(&plan, f.options("run-1", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert!(
        report.apps.iter().all(|a| a.state == AppState::Deployed),
        "{:#?}",
        report.apps
    );
    assert_eq!(f.prod_images().await, healthy_at(T2));

    // Wave 2 starts only after wave 1 is healthy and soaked.
    let w1_healthy = position(
        &events,
        |e| matches!(e, Event::AppHealthy { cluster, .. } if cluster == "us-west-2"),
    );
    let soak1 = position(&events, |e| matches!(e, Event::SoakFinished { wave: 1 }));
    let w2 = position(&events, |e| matches!(e, Event::WaveStarted { wave: 2, .. }));
    assert!(w1_healthy < soak1 && soak1 < w2);
    assert!(matches!(
        events.last(),
        Some(Event::Finished {
            outcome: Outcome::Succeeded,
            ..
        })
    ));

    let records = f.world.audit.records().await.unwrap();
    assert_eq!(
        records.len(),
        2,
        "one record when the lock is taken, one at the end"
    );
    assert_eq!(records[0].outcome, Outcome::Started);
    assert_eq!(records[0].run_id, records[1].run_id);
    let r = &records[1];
    assert_eq!(
        (r.outcome, r.release.tag.as_str(), r.changed.len()),
        (Outcome::Succeeded, T2, 3)
    );
    assert_eq!(
        r.previous.get("eu-west-1").cloned().flatten().as_deref(),
        Some(T1)
    );
    assert_eq!(r.release.digests.len(), 3);
    let app = f
        .world
        .argocd
        .application(&f.app_name("prod", "eu-west-1"))
        .await
        .unwrap();
    assert_eq!(
        app.annotations.get("deploy/release").map(String::as_str),
        Some(T2)
    );
    assert_eq!(
        app.annotations.get("deploy/run").map(String::as_str),
        Some("run-1")
    );
    // The lock was released.
    f.world
        .lock
        .acquire("myapp-prod", "next", Duration::from_secs(60))
        .await
        .unwrap();

    // Re-planning after success is a no-op, and running it changes nothing.
    let again = f.plan(Intent::Promote { tag: None }).await;
    assert_eq!(again.changes(), 0);
}

#[tokio::test(start_paused = true)]
async fn degraded_in_wave_two_rolls_back_waves_one_and_two() {
    let f = Fixture::with_staging_at_t2().await;
    f.world
        .argocd
        .push_script(&f.app_name("prod", "eu-west-1"), Script::Degraded);
    let (report, events) = f.promote(f.options("run-2", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("eu-west-1: Degraded"),
        "{}",
        report.message
    );
    assert!(
        report.apps.iter().all(|a| a.state == AppState::RolledBack),
        "{:#?}",
        report.apps
    );
    assert_eq!(f.prod_images().await, healthy_at(T1));
    let halted = position(&events, |e| matches!(e, Event::Halted { .. }));
    let rolled: Vec<&Event> = events[halted..]
        .iter()
        .filter(|e| matches!(e, Event::AppRolledBack { ok: true, .. }))
        .collect();
    assert_eq!(rolled.len(), 3);
    let r = f.world.audit.records().await.unwrap();
    assert_eq!(r.last().unwrap().outcome, Outcome::RolledBack);
}

#[tokio::test(start_paused = true)]
async fn no_rollback_leaves_the_failure_in_place() {
    let f = Fixture::with_staging_at_t2().await;
    f.world
        .argocd
        .push_script(&f.app_name("prod", "us-east-1"), Script::Failed);
    let mut opts = f.options("run-nr", None);
    opts.rollback_on_failure = false;
    let (report, _) = f.promote(opts).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    let images = f.prod_images().await;
    assert_eq!(images[0].1, T2, "wave 1 stays at the release");
    assert_eq!(images[1].1, T1, "the failed sync left the old images");
}

#[tokio::test(start_paused = true)]
async fn wave_timeout_halts_and_rolls_back() {
    let f = Fixture::with_staging_at_t2().await;
    f.world
        .argocd
        .push_script(&f.app_name("prod", "us-west-2"), Script::Hang);
    let (report, events) = f.promote(f.options("run-3", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("timed out after 15m"),
        "{}",
        report.message
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::WaveStarted { wave: 2, .. })),
        "wave 2 must not start"
    );
    assert_eq!(f.prod_images().await, healthy_at(T1));
}

#[tokio::test(start_paused = true)]
async fn foreign_operation_is_waited_out() {
    let f = Fixture::with_staging_at_t2().await;
    f.world.argocd.start_foreign(
        &f.app_name("prod", "us-east-1"),
        Some(Duration::from_secs(400)),
    );
    let plan = f.plan(Intent::Promote { tag: None }).await;
    assert!(plan.is_go());
    assert!(
        plan.gates
            .iter()
            .any(|g| g.name == GateName::Applications && g.summary.contains("1 busy")),
        "{:#?}",
        plan.gates
    );
    let (report, events) = f.run(&plan, f.options("run-4", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    assert!(events.iter().any(|e| matches!(e, Event::AppWaiting { cluster, operation_by, .. } if cluster == "us-east-1" && operation_by.contains("alice"))));
    assert_eq!(f.prod_images().await, healthy_at(T2));
}

/// Wave 1 was interrupted during its soak: the rerun syncs nothing there, but soaks it again.
#[tokio::test(start_paused = true)]
async fn interrupted_run_resumes_without_redeploying_wave_one() {
    let f = Fixture::with_staging_at_t2().await;
    let (tx, rx) = tokio::sync::watch::channel(StopRequest::None);
    // Interrupt during wave 1's soak.
    let cancel = async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(StopRequest::Graceful).unwrap();
    };
    let ((report, _), ()) = tokio::join!(f.promote(f.options("run-5", Some(rx))), cancel);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Interrupted);
    let images = f.prod_images().await;
    assert_eq!(images[0].1, T2);
    assert_eq!((images[1].1.as_str(), images[2].1.as_str()), (T1, T1));

    let w1 = f
        .world
        .argocd
        .application(&f.app_name("prod", "us-west-2"))
        .await
        .unwrap();
    let (report, events) = f.promote(f.options("run-6", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::AppSoakingAgain { cluster, .. } if cluster == "us-west-2"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SoakFinished { wave: 1 }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::AppSyncing { cluster, .. } if cluster == "us-west-2"))
    );
    let w1_after = f
        .world
        .argocd
        .application(&f.app_name("prod", "us-west-2"))
        .await
        .unwrap();
    assert_eq!(
        w1.history.len(),
        w1_after.history.len(),
        "wave 1 was synced again"
    );
    assert_eq!(f.prod_images().await, healthy_at(T2));
}

#[tokio::test(start_paused = true)]
async fn held_lock_changes_nothing() {
    let f = Fixture::with_staging_at_t2().await;
    f.world
        .lock
        .acquire("myapp-prod", "bob@laptop pid 7", Duration::from_secs(600))
        .await
        .unwrap();
    let before = f.world.argocd.state();
    let (result, _) = f.promote(f.options("run-7", None)).await;
    match result {
        Err(EngineError::Locked { holder, .. }) => assert_eq!(holder, "bob@laptop pid 7"),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        format!("{:?}", f.world.argocd.state()),
        format!("{before:?}")
    );
    assert!(f.world.audit.records().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failing_gate_changes_nothing() {
    let f = Fixture::with_staging_at_t2().await;
    // T3 is pushed to staging while eu-west-1 replication is broken.
    f.world.registry.set_replication_failure(
        "222222222222",
        "eu-west-1",
        Some("REPLICATION_ACCESS_DENIED"),
    );
    f.release_to_staging("3333333ccccc").await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let failed = plan.failed_gate().expect("a gate fails");
    assert_eq!(failed.name, GateName::TargetDigests);
    assert_eq!(failed.details.len(), 3, "{:#?}", failed.details);
    assert!(
        failed.details[0].contains("eu-west-1")
            && failed.details[0].contains("replication failed: REPLICATION_ACCESS_DENIED"),
        "{:#?}",
        failed.details
    );
    let before = format!("{:?}", f.world.argocd.state());
    let (result, _) = f.run(&plan, f.options("run-8", None)).await;
    assert!(matches!(result, Err(EngineError::GateFailed(_))));
    assert_eq!(format!("{:?}", f.world.argocd.state()), before);
}

#[tokio::test(start_paused = true)]
async fn automated_prod_application_fails_gate_four() {
    let f = Fixture::with_staging_at_t2().await;
    f.world.argocd.set_sync_mode(
        &f.app_name("prod", "us-east-1"),
        deploy_core::model::SyncMode::Automated {
            prune: false,
            self_heal: true,
        },
    );
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let failed = plan.failed_gate().unwrap();
    assert_eq!(failed.name, GateName::Applications);
    assert!(
        failed
            .summary
            .contains("myapp-prod-us-east-1: has automated sync"),
        "{}",
        failed.summary
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_returns_to_the_previous_release() {
    let f = Fixture::with_staging_at_t2().await;
    let (report, _) = f.promote(f.options("run-9", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    let plan = f
        .plan(Intent::Rollback {
            tag: tag(T1),
            recorded: None,
        })
        .await;
    assert!(plan.is_go(), "{:#?}", plan.gates);
    let (report, _) = f.run(&plan, f.options("run-10", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    assert_eq!(f.prod_images().await, healthy_at(T1));
    let records = f.world.audit.records().await.unwrap();
    assert_eq!(
        records.last().unwrap().kind,
        deploy_core::trail::RunKind::Rollback
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_returns_to_what_ran_even_when_the_spec_already_named_the_release() {
    let f = Fixture::with_staging_at_t2().await;
    // An image updater (or an interrupted run) already wrote T2 into wave 1's spec; T1 still runs.
    let w1 = f.app_name("prod", "us-west-2");
    f.world
        .argocd
        .set_override(
            &w1,
            &deploy_core::port::OverrideValue::Helm {
                parameter: "image.tag".into(),
                value: T2.into(),
                digests: Default::default(),
            },
        )
        .await
        .unwrap();
    f.world
        .argocd
        .push_script(&f.app_name("prod", "eu-west-1"), Script::Degraded);
    let (report, _) = f.promote(f.options("run-r", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(f.prod_images().await, healthy_at(T1));
    let spec = f
        .world
        .argocd
        .application(&w1)
        .await
        .unwrap()
        .helm_parameters["image.tag"]
        .clone();
    assert_eq!(spec, T1, "the spec says what runs again");
}

#[tokio::test(start_paused = true)]
async fn a_plan_made_stale_by_another_run_changes_nothing() {
    let f = Fixture::with_staging_at_t2().await;
    let stale = f.plan(Intent::Promote { tag: None }).await;
    let (report, _) = f.promote(f.options("run-other", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    let before = format!("{:?}", f.world.argocd.state());
    let (result, _) = f.run(&stale, f.options("run-stale", None)).await;
    match result {
        Err(EngineError::Stale(why)) => {
            assert!(why.contains("myapp-prod-us-west-2 now runs"), "{why}")
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(format!("{:?}", f.world.argocd.state()), before);
    f.world
        .lock
        .acquire("myapp-prod", "next", Duration::from_secs(60))
        .await
        .expect("the lock was released");
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_ctrl_c_is_still_rolled_back() {
    let f = Fixture::with_staging_at_t2().await;
    f.world
        .argocd
        .push_script(&f.app_name("prod", "us-west-2"), Script::Degraded);
    let (tx, rx) = tokio::sync::watch::channel(StopRequest::None);
    // Stop while wave 1's sync runs; it then goes Degraded within the grace period.
    let cancel = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(StopRequest::Graceful).unwrap();
    };
    let ((report, _), ()) = tokio::join!(f.promote(f.options("run-c", Some(rx))), cancel);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(f.prod_images().await, healthy_at(T1));
}
