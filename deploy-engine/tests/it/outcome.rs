//! How a run ends, typed: the report carries the failure (what, where, why, with the port's
//! error), its words come from it, and a panicking event callback costs an event, not the run.

use deploy_core::rollout::event::Event;
use deploy_core::rollout::outcome::{Cause, End, Failure, Place, RollbackResult, Stage};
use deploy_core::sim::Script;
use deploy_core::trail::{AppState, Outcome};
use deploy_engine::engine::Engine;

use crate::support::Fixture;

/// The report's words are its typed end's.
#[track_caller]
fn end_of(report: &deploy_core::rollout::event::RunReport) -> &End {
    let end = report
        .end
        .as_ref()
        .expect("the engine's report carries its end");
    assert_eq!(
        end.conclude(),
        (report.outcome, report.message.clone()),
        "outcome and message come from the typed end"
    );
    end
}

#[tokio::test(start_paused = true)]
async fn a_panicking_event_callback_loses_one_event_not_the_run() {
    let f = Fixture::with_staging_at_t2().await;
    let p = f
        .plan(deploy_core::plan::promotion::Intent::Promote { tag: None })
        .await;
    let mut events = Vec::new();
    let mut panicked = false;
    let report = Engine::new(f.ports(), f.options("run-panic", None))
        .run(&p, |e| {
            if matches!(e, Event::WaveStarted { wave: 1, .. }) && !panicked {
                panicked = true;
                panic!("a renderer bug");
            }
            events.push(e);
        })
        .await
        .expect("the run took the lock");
    assert!(panicked);
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert!(end_of(&report).failure.is_none());
    // Every later event still reached the callback, the end included.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
    );
    assert!(matches!(
        events.last(),
        Some(Event::Finished {
            outcome: Outcome::Succeeded,
            ..
        })
    ));
    // The lock was released: the next run takes it.
    assert!(!f.world.lock.state().contains_key("myapp-prod"));
}

#[tokio::test(start_paused = true)]
async fn the_report_says_what_failed_where_and_why() {
    let f = Fixture::with_staging_at_t2().await;
    let eu = f.app_name("prod", "eu-west-1");
    f.world.argocd.push_script(&eu, Script::Degraded);
    let (report, _) = f.promote(f.options("run-typed", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    let end = end_of(&report);
    let Some(Failure::App { at, stage, cause }) = &end.failure else {
        panic!("{:?}", end.failure);
    };
    assert_eq!(
        at,
        &Place {
            wave: 2,
            cluster: "eu-west-1".into(),
            application: eu,
        }
    );
    assert_eq!(*stage, Stage::Deploy);
    assert!(
        matches!(cause, Cause::Observed(why) if why.starts_with("Degraded")),
        "{cause:?}"
    );
    assert!(matches!(
        end.rollback,
        RollbackResult::Done { count: 3, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_window_comes_typed_from_the_port_not_from_its_words() {
    let (report, _, app) = crate::windows::held_by_a_window(true).await;
    let end = end_of(&report);
    // Held Running by a window past the wave's timeout: the timeout, with Argo CD's message.
    let Some(Failure::App {
        at,
        stage: Stage::Deploy,
        cause: Cause::TimedOut {
            held_by_window: Some(held),
            ..
        },
    }) = &end.failure
    else {
        panic!("{:?}", end.failure);
    };
    assert_eq!(at.application, app);
    assert_eq!(held, "Sync operation blocked by sync window");
    // The rollback's sync was refused by the same window: the port said so typed
    // (`Error::BlockedByWindow`), and the words follow from that kind.
    let state = &report
        .apps
        .iter()
        .find(|a| a.application == app)
        .unwrap()
        .state;
    assert!(
        matches!(state, AppState::RollbackFailed(why) if why.starts_with("blocked by a sync window: Argo CD refused the sync")),
        "{state:?}"
    );
}
