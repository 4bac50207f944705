//! Metric checks during the soak, on tokio's paused clock: a good metric passes, a bad one
//! halts and rolls back, no data follows `no_data`, an unreachable source counts against
//! the consecutive-error limit and is never a pass, inconclusive halts without rollback.

use deploy_core::check::{Phase, Verdict};
use deploy_core::plan::promotion::Intent;
use deploy_core::port::{AuditLog, Health};
use deploy_core::rollout::event::Event;
use deploy_core::trail::AppState;
use deploy_core::trail::Outcome;
use deploy_engine::engine::{Engine, EngineError};
use deploy_engine::memory::Answer;

use crate::support::{Fixture, T1, T2};

/// The example's 5xx-ratio query on `cluster`.
fn query(f: &Fixture, cluster: &str) -> String {
    let prod = f.config.environment("prod").unwrap();
    let c = f.config.cluster(cluster).unwrap();
    prod.checks[0]
        .resolve(&deploy_core::check::Scope {
            cluster: &c.name,
            region: &c.region,
            env: "prod",
            app: &f.config.app,
            release: T2,
        })
        .query
}

fn measured<'e>(events: &'e [Event], on: &str) -> Vec<(&'e [f64], Phase, Verdict)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CheckMeasured {
                cluster,
                values,
                phase,
                verdict,
                ..
            } if cluster == on => Some((values.as_slice(), *phase, *verdict)),
            _ => None,
        })
        .collect()
}

fn all_at(t: &str) -> Vec<(String, String, Health)> {
    ["us-west-2", "us-east-1", "eu-west-1"]
        .iter()
        .map(|c| (c.to_string(), t.to_string(), Health::Healthy))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_good_metric_passes_and_is_recorded() {
    let f = Fixture::with_staging_at_t2().await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    assert!(plan.waves[1].apps[1].checks[0].query.contains("eu-west-1"));
    let (report, events) = f.run(&plan, f.options("run-ok", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let m = measured(&events, "us-west-2");
    // Every 30 s through a 5 m soak: at 0 s … 300 s, passed at the end.
    assert_eq!(m.len(), 11, "{m:?}");
    assert!(
        m.iter()
            .all(|(v, p, _)| *v == [0.0] && *p == Phase::Successful)
    );
    assert_eq!(m.last().unwrap().2, Verdict::Passed);
    let record = f.world.audit.records().await.unwrap().pop().unwrap();
    assert_eq!(record.checks.len(), 33, "3 clusters × 11");
    assert_eq!(record.checks[0].check, "5xx-ratio");
}

#[tokio::test(start_paused = true)]
async fn a_bad_metric_in_wave_two_halts_and_rolls_back_waves_one_and_two() {
    let f = Fixture::with_staging_at_t2().await;
    let q = query(&f, "eu-west-1");
    f.world
        .metrics
        .script(&q, [Answer::Values(vec![0.001]), Answer::Values(vec![0.2])]);
    let (report, events) = f.promote(f.options("run-bad", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report
            .message
            .contains("eu-west-1: check 5xx-ratio failed at 0.2"),
        "{}",
        report.message
    );
    assert!(report.apps.iter().all(|a| a.state == AppState::RolledBack));
    assert_eq!(f.prod_images().await, all_at(T1));
    assert_eq!(
        measured(&events, "eu-west-1").last().map(|m| (m.1, m.2)),
        Some((Phase::Failed, Verdict::Failed))
    );
    let record = f.world.audit.records().await.unwrap().pop().unwrap();
    assert_eq!(record.outcome, Outcome::RolledBack);
    assert!(record.checks.iter().any(|m| m.values == [0.2]));
}

/// The first check to fail ends the wave's soak at once: the other clusters' checks stop
/// measuring, whichever cluster comes first in the wave.
#[tokio::test(start_paused = true)]
async fn a_failed_check_ends_the_soak_at_once() {
    let f = Fixture::with_staging_at_t2().await;
    // eu-west-1 is the second Application of wave 2, us-east-1 the first.
    f.world.metrics.set(&query(&f, "eu-west-1"), vec![0.2]);
    let started = tokio::time::Instant::now();
    let (report, events) = f.promote(f.options("run-first-fails", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(measured(&events, "eu-west-1").len(), 1);
    assert_eq!(
        measured(&events, "us-east-1").len(),
        1,
        "us-east-1 stops measuring when eu-west-1 fails"
    );
    let plan = f.plan(Intent::Promote { tag: None }).await;
    assert!(
        started.elapsed() < 2 * plan.soak,
        "the run ended {:?} after it started: wave 2 soaked on after its check failed",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn no_data_fails_by_default() {
    let f = Fixture::with_staging_at_t2().await;
    f.world.metrics.set(&query(&f, "us-west-2"), vec![]);
    let (report, events) = f.promote(f.options("run-empty", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("failed at no data"),
        "{}",
        report.message
    );
    assert_eq!(measured(&events, "us-west-2").len(), 1, "failure_limit = 0");
    assert_eq!(f.prod_images().await, all_at(T1));
}

#[tokio::test(start_paused = true)]
async fn no_data_can_pass_or_be_inconclusive() {
    for (no_data, want) in [
        ("pass", Outcome::Succeeded),
        ("inconclusive", Outcome::Inconclusive),
    ] {
        let mut f = Fixture::with_staging_at_t2().await;
        let text = deploy_core::config::EXAMPLE
            .replace("no_data = \"fail\"", &format!("no_data = \"{no_data}\""));
        f.config = deploy_core::config::Config::parse("deploy.toml", &text).unwrap();
        f.world.metrics.set(&query(&f, "us-west-2"), vec![]);
        let (report, _) = f.promote(f.options("run-nd", None)).await;
        assert_eq!(report.unwrap().outcome, want, "no_data = {no_data}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_source_counts_against_the_limit_and_never_passes() {
    let f = Fixture::with_staging_at_t2().await;
    let q = query(&f, "us-west-2");
    // Errors below the limit (4 in a row) are tolerated ...
    f.world.metrics.script(
        &q,
        [
            Answer::Unreachable,
            Answer::Unreachable,
            Answer::Unreachable,
            Answer::Values(vec![0.0]),
        ],
    );
    let (report, events) = f.promote(f.options("run-flaky", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    let m = measured(&events, "us-west-2");
    assert_eq!(m[..3].iter().filter(|m| m.1 == Phase::Error).count(), 3);

    // ... but a source that never answers fails the check: 5 errors in a row > 4.
    let f = Fixture::with_staging_at_t2().await;
    f.world.metrics.script(&q, [Answer::Unreachable]);
    let (report, events) = f.promote(f.options("run-down", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("5 error(s) in a row"),
        "{}",
        report.message
    );
    let m = measured(&events, "us-west-2");
    assert_eq!(m.len(), 5);
    assert!(
        m.iter()
            .all(|m| m.1 == Phase::Error && m.2 != Verdict::Passed)
    );
    assert_eq!(f.prod_images().await, all_at(T1));
}

#[tokio::test(start_paused = true)]
async fn inconclusive_halts_without_rollback() {
    let f = Fixture::with_staging_at_t2().await;
    // Between success (< 0.01) and failure (>= 0.05).
    f.world.metrics.set(&query(&f, "us-east-1"), vec![0.02]);
    let (report, events) = f.promote(f.options("run-unsure", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Inconclusive, "{}", report.message);
    assert!(
        report.message.contains("run promote again"),
        "{}",
        report.message
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::RollingBack { .. }))
    );
    assert_eq!(f.prod_images().await, all_at(T2), "nothing rolled back");
    let record = f.world.audit.records().await.unwrap().pop().unwrap();
    assert_eq!(record.outcome, Outcome::Inconclusive);
}

#[tokio::test(start_paused = true)]
async fn checks_without_a_metrics_backend_change_nothing() {
    let f = Fixture::with_staging_at_t2().await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let ports = f.ports().with_metrics(None);
    let err = Engine::new(ports, f.options("run-nom", None))
        .run(&plan, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Port(_)), "{err}");
    assert!(err.to_string().contains("no metrics backend"), "{err}");
    assert!(f.world.audit.records().await.unwrap().is_empty());
    assert_eq!(f.prod_images().await, all_at(T1));
}

/// A check measuring beyond the soak (20 measurements 30 s apart: 9 m 30 s against a 5 m
/// soak) keeps the health watch: eu-west-1 going Degraded 7 m into the last wave's soak,
/// while its metric is still good, fails the wave and rolls it back.
#[tokio::test(start_paused = true)]
async fn the_health_watch_is_kept_while_checks_lengthen_the_soak() {
    let mut f = Fixture::with_staging_at_t2().await;
    let text = deploy_core::config::EXAMPLE.replace(
        "interval = \"30s\"\nno_data",
        "interval = \"30s\"\ncount = 20\nno_data",
    );
    assert_ne!(text, deploy_core::config::EXAMPLE);
    f.config = deploy_core::config::Config::parse("deploy.toml", &text).unwrap();
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let eu = f.app_name("prod", "eu-west-1");
    let soak_started = std::sync::Mutex::new(None);
    let mut events = Vec::new();
    let engine = Engine::new(f.ports(), f.options("run-long", None));
    let run = engine.run(&plan, |e| {
        if let Event::SoakStarted {
            wave: 2,
            duration_ms,
        } = &e
        {
            *soak_started.lock().unwrap() = Some((tokio::time::Instant::now(), *duration_ms));
        }
        events.push(e);
    });
    let script = async {
        let (at, duration_ms) = loop {
            if let Some(s) = *soak_started.lock().unwrap() {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        };
        assert_eq!(duration_ms, 570_000, "the soak lasts as long as its checks");
        tokio::time::sleep_until(at + std::time::Duration::from_secs(7 * 60)).await;
        f.world.argocd.set_health(&eu, Health::Degraded);
    };
    let (report, ()) = tokio::join!(run, script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("eu-west-1: Degraded"),
        "{}",
        report.message
    );
    assert_eq!(f.prod_images().await, all_at(T1));
    // The metric was good all along: it was the health watch that failed the wave.
    assert!(
        measured(&events, "eu-west-1")
            .iter()
            .all(|(v, p, _)| *v == [0.0] && *p == Phase::Successful)
    );
}

/// An embedder spawns the run on a multi-threaded runtime: its future is `Send`, checks,
/// windows and soak included (a closure held across an await once made it not).
#[tokio::test(start_paused = true)]
async fn the_run_is_a_send_future() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let f = Fixture::with_staging_at_t2().await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let engine = Engine::new(f.ports(), f.options("run-send", None));
    let report = send(engine.run(&plan, |_| {})).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
}
