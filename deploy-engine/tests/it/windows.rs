//! Sync windows in the engine, on tokio's paused clock: a wave waits for its windows within
//! `window_wait`, a run refuses before its first write, and a window that closes mid-run
//! halts it before the blocked wave without rolling back what it deployed. Windows in a time
//! zone are Argo CD's to judge (the in-memory Argo CD answers as the REST API does: `canSync`
//! in the zone, windows without it unless the AppProject may be read).

use std::sync::Arc;
use std::time::Duration;

use deploy_core::trail::AppState;

use deploy_engine::engine::{EngineError, RunOptions};

use deploy_core::port::{AuditLog, Clock, Health};

use deploy_core::window::{SyncWindow, WindowKind};

use deploy_core::rollout::event::Event;
use deploy_core::trail::Outcome;
use deploy_engine::clock::TokioClock;
use jiff::{SignedDuration, Timestamp};

use crate::support::{Fixture, T1, T2};

/// A deny window of every Application it is given to: `schedule` for `duration` in `zone`.
fn deny_in(zone: &str, schedule: &str, duration: &str) -> SyncWindow {
    SyncWindow {
        time_zone: Some(zone.into()),
        schedule: schedule.into(),
        ..deny_from(Timestamp::UNIX_EPOCH, duration)
    }
}

/// The world with its clock at `at`; `window` on wave 1's Application; the AppProject
/// readable or not.
async fn zoned_world(at: &str, window: SyncWindow, project_readable: bool) -> (Fixture, String) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(at.parse().unwrap()));
    let f = Fixture::with_staging_at_t2_on(clock).await;
    let app = f.app_name("prod", "us-west-2");
    f.world.argocd.set_sync_windows(&app, vec![window]);
    f.world.argocd.set_projects_unreadable(!project_readable);
    (f, app)
}

#[tokio::test(start_paused = true)]
async fn a_zoned_deny_not_active_in_its_zone_does_not_refuse_though_it_would_be_in_utc() {
    // 19:10 UTC is 00:40 in Kolkata (UTC+05:30) and 11:10 in Los Angeles (UTC-08:00): a
    // deny at 19:00 for an hour there is not active, read in UTC it would be.
    for zone in ["Asia/Kolkata", "America/Los_Angeles"] {
        for readable in [true, false] {
            let (f, _) = zoned_world(
                "2026-12-01T19:10:00Z",
                deny_in(zone, "0 19 * * *", "1h"),
                readable,
            )
            .await;
            let (report, events) = f.promote(f.options("w-zone", None)).await;
            let report = report.unwrap_or_else(|e| panic!("{zone} readable={readable}: {e}"));
            assert_eq!(
                report.outcome,
                Outcome::Succeeded,
                "{zone} readable={readable}: {}",
                report.message
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::WaveBlocked { .. })),
                "{zone} readable={readable}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_zoned_deny_active_in_its_zone_refuses_and_says_until_when_if_the_project_says() {
    // 19:00 for an hour is 13:30-14:30 UTC in Kolkata, 03:00-04:00 UTC in Los Angeles.
    for (zone, now, until) in [
        (
            "Asia/Kolkata",
            "2026-12-01T13:40:00Z",
            "2026-12-01T14:30:00Z",
        ),
        (
            "America/Los_Angeles",
            "2026-12-02T03:10:00Z",
            "2026-12-02T04:00:00Z",
        ),
    ] {
        for readable in [true, false] {
            let (f, app) = zoned_world(now, deny_in(zone, "0 19 * * *", "1h"), readable).await;
            let before = format!("{:?}", f.world.argocd.state());
            let (result, _) = f.promote(f.options("w-zone", None)).await;
            let Err(EngineError::WindowBlocked(b)) = result else {
                panic!("{zone} readable={readable}: expected WindowBlocked, got {result:?}");
            };
            assert_eq!(b.application, app);
            if readable {
                assert_eq!(b.until, Some(until.parse().unwrap()), "{zone}");
                assert!(b.window.contains(zone) && !b.until_unknown, "{b}");
            } else {
                assert_eq!(b.until, None, "{zone}");
                assert!(b.until_unknown, "{b}");
                assert!(
                    b.to_string()
                        .contains("blocked by a sync window (deny \"0 19 * * *\" for 1h); Argo CD does not say until when"),
                    "{b}"
                );
            }
            assert_eq!(format!("{:?}", f.world.argocd.state()), before);
            assert!(f.world.audit.records().await.unwrap().is_empty());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_project_a_blocked_wave_polls_argo_cd_within_window_wait() {
    let (f, _) = zoned_world(
        "2026-12-01T13:40:00Z",
        deny_in("Asia/Kolkata", "0 19 * * *", "1h"),
        false,
    )
    .await;
    let opens: Timestamp = "2026-12-01T14:30:00Z".parse().unwrap();
    let (report, events) = f
        .promote(with_wait(
            f.options("w-poll", None),
            Duration::from_secs(3600),
        ))
        .await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let blocked = events
        .iter()
        .position(|e| {
            matches!(e, Event::WaveBlocked { wave: 1, until: None, window, .. }
                if window.contains("Argo CD does not say until when"))
        })
        .expect("a WaveBlocked event without a time");
    let started = events
        .iter()
        .position(|e| matches!(e, Event::WaveStarted { wave: 1, .. }))
        .unwrap();
    assert!(blocked < started);
    assert!(f.world.clock.now() >= opens);
    // Within a window_wait that ends before the window, it halts instead, nothing changed.
    let (f, _) = zoned_world(
        "2026-12-01T13:40:00Z",
        deny_in("Asia/Kolkata", "0 19 * * *", "1h"),
        false,
    )
    .await;
    let (report, _) = f
        .promote(with_wait(
            f.options("w-poll-2", None),
            Duration::from_secs(600),
        ))
        .await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Halted, "{}", report.message);
    assert!(
        report.message.contains("Argo CD does not say until when"),
        "{}",
        report.message
    );
    assert!(f.prod_images().await.iter().all(|(_, t, _)| t == T1));
}

#[tokio::test(start_paused = true)]
async fn across_a_dst_change_the_wave_waits_as_long_as_argo_cd_blocks_it() {
    // US spring forward (2026-03-08 02:00 PST → 03:00 PDT): 01:00-04:00 on the wall clock is
    // 09:00-11:00 UTC, two hours. Fall back (2026-11-01 02:00 PDT → 01:00 PST): 01:00-03:00
    // is 08:00-11:00 UTC, three hours.
    for (now, schedule, duration) in [
        ("2026-03-08T09:30:00Z", "0 1 8 3 *", "3h"),
        ("2026-11-01T08:30:00Z", "0 1 1 11 *", "2h"),
    ] {
        let (f, _) = zoned_world(
            now,
            deny_in("America/Los_Angeles", schedule, duration),
            true,
        )
        .await;
        let opens: Timestamp = format!("{}11:00:00Z", &now[..11]).parse().unwrap();
        let (report, events) = f
            .promote(with_wait(
                f.options("w-dst", None),
                Duration::from_secs(4 * 3600),
            ))
            .await;
        let report = report.unwrap();
        assert_eq!(
            report.outcome,
            Outcome::Succeeded,
            "{now}: {}",
            report.message
        );
        assert!(
            events.iter().any(
                |e| matches!(e, Event::WaveBlocked { wave: 1, until: Some(u), .. } if *u == opens)
            ),
            "{now}: {events:?}"
        );
        assert!(f.world.clock.now() >= opens);
    }
}

/// A deny window of every Application it is given to, active from `start` + 1 s for `duration`
/// (a yearly schedule at `start`'s minute, UTC).
fn deny_from(start: Timestamp, duration: &str) -> SyncWindow {
    SyncWindow {
        kind: WindowKind::Deny,
        schedule: start.strftime("%-M %-H %-d %-m *").to_string(),
        duration: duration.into(),
        manual_sync: false,
        time_zone: None,
        applications: vec!["*".into()],
        namespaces: vec![],
        clusters: vec![],
        and_operator: false,
    }
}

/// The start of the minute of `t`, minus `minutes`.
fn minute_of(t: Timestamp, minutes: i64) -> Timestamp {
    let s = t.as_second();
    Timestamp::from_second(s - s.rem_euclid(60) + minutes * 60).unwrap()
}

fn with_wait(mut o: RunOptions, wait: Duration) -> RunOptions {
    o.window_wait = wait;
    o
}

#[tokio::test(start_paused = true)]
async fn a_deny_window_on_the_first_wave_refuses_with_nothing_changed() {
    let f = Fixture::with_staging_at_t2().await;
    let now = f.world.clock.now();
    let app = f.app_name("prod", "us-west-2");
    f.world
        .argocd
        .set_sync_windows(&app, vec![deny_from(minute_of(now, -1), "2h")]);
    let before = format!("{:?}", f.world.argocd.state());
    let (result, _) = f.promote(f.options("w-1", None)).await;
    match result {
        Err(EngineError::WindowBlocked(b)) => {
            assert_eq!((b.wave, b.application.as_str()), (1, app.as_str()));
            assert!(b.window.starts_with("deny"), "{}", b.window);
            assert!(b.until.is_some());
        }
        other => panic!("expected WindowBlocked, got {other:?}"),
    }
    assert_eq!(format!("{:?}", f.world.argocd.state()), before);
    assert!(f.world.audit.records().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wave_waits_for_a_window_that_ends_within_the_bound() {
    let f = Fixture::with_staging_at_t2().await;
    let now = f.world.clock.now();
    let app = f.app_name("prod", "us-west-2");
    // Active since the start of this minute, for 10 minutes.
    let start = minute_of(now, 0);
    f.world
        .argocd
        .set_sync_windows(&app, vec![deny_from(start, "10m")]);
    let until = start.checked_add(SignedDuration::from_mins(10)).unwrap();
    let (report, events) = f
        .promote(with_wait(
            f.options("w-2", None),
            Duration::from_secs(15 * 60),
        ))
        .await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let blocked = events
        .iter()
        .position(
            |e| matches!(e, Event::WaveBlocked { wave: 1, until: Some(u), .. } if *u == until),
        )
        .expect("a WaveBlocked event for wave 1");
    let started = events
        .iter()
        .position(|e| matches!(e, Event::WaveStarted { wave: 1, .. }))
        .unwrap();
    assert!(blocked < started);
    assert!(f.world.clock.now() >= until);
    assert!(
        f.prod_images()
            .await
            .iter()
            .all(|(_, t, h)| t == T2 && *h == Health::Healthy)
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_that_closes_mid_run_halts_before_its_wave_without_rollback() {
    let f = Fixture::with_staging_at_t2().await;
    let now = f.world.clock.now();
    // Wave 2 (us-east-1, eu-west-1) starts after wave 1 and its 5 minute soak; the window
    // opens two minutes from now, when the run is already in wave 1.
    let app = f.app_name("prod", "us-east-1");
    f.world
        .argocd
        .set_sync_windows(&app, vec![deny_from(minute_of(now, 2), "1h")]);
    let (report, events) = f
        .promote(with_wait(f.options("w-3", None), Duration::from_secs(60)))
        .await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Halted, "{}", report.message);
    assert!(
        report.message.contains("blocked by sync window deny")
            && report.message.contains("nothing rolled back"),
        "{}",
        report.message
    );
    let states: Vec<(&str, &AppState)> = report
        .apps
        .iter()
        .map(|a| (a.cluster.as_str(), &a.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("us-west-2", &AppState::Deployed),
            ("us-east-1", &AppState::NotStarted),
            ("eu-west-1", &AppState::NotStarted),
        ]
    );
    let images = f.prod_images().await;
    assert_eq!(images[0].1, T2);
    assert_eq!((images[1].1.as_str(), images[2].1.as_str()), (T1, T1));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::RollingBack { .. }))
    );
    let records = f.world.audit.records().await.unwrap();
    assert_eq!(records.last().unwrap().outcome, Outcome::Halted);

    // When the window has passed, the same command continues with wave 2.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (report, _) = f.promote(f.options("w-4", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert_eq!(report.apps[0].state, AppState::Skipped);
}

/// A window that closes after wave 1's sync was accepted: Argo CD holds the operation
/// Running ("Sync operation blocked by sync window") until the window ends, then finishes it.
/// `long`: the window outlasts the wave's timeout, and the failure says why.
pub(crate) async fn held_by_a_window(
    long: bool,
) -> (deploy_core::rollout::event::RunReport, Vec<Event>, String) {
    use deploy_core::sim::Timing;
    let f = Fixture::with_staging_at_t2().await;
    let now = f.world.clock.now();
    let app = f.app_name("prod", "us-west-2");
    // The sync takes 3 minutes; the window opens within the first one.
    f.world.argocd.set_app_timing(
        &app,
        Timing {
            sync: Duration::from_secs(180),
            health: Duration::from_secs(3),
        },
    );
    let duration = if long { "1h" } else { "5m" };
    f.world
        .argocd
        .set_sync_windows(&app, vec![deny_from(minute_of(now, 1), duration)]);
    let (report, events) = f.promote(f.options("w-held", None)).await;
    let held = events
        .iter()
        .any(|e| matches!(e, Event::AppProgress { cluster, .. } if cluster == "us-west-2"));
    assert!(held, "the held operation was followed");
    (report.unwrap(), events, app)
}

#[tokio::test(start_paused = true)]
async fn an_operation_held_by_a_window_goes_on_when_it_ends() {
    let (report, events, _) = held_by_a_window(false).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    // Healthy only after the window (opened ≤ 60 s in, for 5 m) let the sync go on.
    let healthy = events.iter().find_map(|e| match e {
        Event::AppHealthy {
            cluster,
            elapsed_ms,
            ..
        } if cluster == "us-west-2" => Some(*elapsed_ms),
        _ => None,
    });
    assert!(healthy.is_some_and(|ms| ms > 300_000), "{healthy:?}");
}

#[tokio::test(start_paused = true)]
async fn an_operation_held_past_the_timeout_is_reported_as_blocked_by_the_window() {
    let (report, _, _) = held_by_a_window(true).await;
    // The rollback's own sync is refused by the same window: nothing rolled back.
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);
    assert!(
        report.message.contains(
            "us-west-2: blocked by a sync window: Argo CD accepted the sync, then a window closed"
        ) && report.message.contains("timed out after 15m"),
        "{}",
        report.message
    );
}
