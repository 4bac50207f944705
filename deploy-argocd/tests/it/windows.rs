//! Sync windows in a time zone over REST, against the fake Argo CD on the wall clock: Argo CD's
//! `canSync` (computed in the zone) decides whether a sync may run now, the AppProject's
//! windows (with `timeZone`) say until when, and without them (403) nobody says.

use deploy_argocd::fake::{FakeArgo, client};
use deploy_core::port::{ArgoCd, SyncRequest};
use deploy_core::rollout::window::app_verdict;
use deploy_core::window::Verdict;
use deploy_engine::conformance::argocd::{ArgoCdFixture, seed};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const ZONES: [&str; 2] = ["Asia/Kolkata", "America/Los_Angeles"];

/// A daily deny window from `hour` for 3 h in `zone`, over every Application.
fn deny(hour: i8, zone: &str) -> serde_json::Value {
    json!([{ "kind": "deny", "schedule": format!("0 {hour} * * *"), "duration": "3h",
             "applications": ["*"], "timeZone": zone }])
}

/// One hour before the present hour of `zone`'s wall clock (UTC's hour, read in UTC).
fn hour_before(zone: &TimeZone, now: Timestamp) -> i8 {
    (now.to_zoned(zone.clone()).hour() + 23) % 24
}

async fn sync(port: &impl ArgoCd, name: &str) -> deploy_core::Result<()> {
    port.sync(
        name,
        &SyncRequest {
            prune: false,
            operation_id: "op-window".into(),
        },
    )
    .await
}

#[tokio::test]
async fn a_zoned_deny_that_is_not_active_in_its_zone_lets_the_sync_run() {
    // The window starts an hour before the present UTC hour for 3 h: read in UTC it is
    // active, in Kolkata (UTC+05:30) it was over hours ago, in Los Angeles it is hours away.
    for zone in ZONES {
        for readable in [true, false] {
            let fake = FakeArgo::start().await;
            let port = client(&fake.server);
            fake.create_application(&seed("app", "v1")).await;
            let now = Timestamp::now();
            fake.set_sync_windows("default", deny(hour_before(&TimeZone::UTC, now), zone));
            fake.set_projects_unreadable(!readable);
            let windows = port.sync_windows("app").await.unwrap();
            assert_eq!(windows.zoned, readable, "{zone}");
            assert_eq!(
                windows.assigned[0].time_zone.as_deref(),
                readable.then_some(zone),
                "{zone}: the zone only from the AppProject"
            );
            assert_eq!(
                app_verdict(&windows, Timestamp::now(), true),
                Verdict::Open,
                "{zone} readable={readable}: {windows:?}"
            );
            sync(&port, "app").await.expect("Argo CD runs the sync");
        }
    }
}

#[tokio::test]
async fn a_zoned_deny_active_in_its_zone_blocks_and_the_project_says_until_when() {
    // The window starts an hour before the present hour of the zone's wall clock: active
    // there, and not at that hour read in UTC.
    for zone in ZONES {
        let tz = TimeZone::get(zone).unwrap();
        for readable in [true, false] {
            let fake = FakeArgo::start().await;
            let port = client(&fake.server);
            fake.create_application(&seed("app", "v1")).await;
            let now = Timestamp::now();
            fake.set_sync_windows("default", deny(hour_before(&tz, now), zone));
            fake.set_projects_unreadable(!readable);
            let windows = port.sync_windows("app").await.unwrap();
            assert!(
                windows.answer.as_ref().is_some_and(|a| !a.can_sync),
                "{zone}: {windows:?}"
            );
            let verdict = app_verdict(&windows, Timestamp::now(), true);
            if readable {
                // It ends 2 h after the start of the zone's present hour.
                let hour = now.to_zoned(tz.clone());
                let start = hour
                    .with()
                    .minute(0)
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()
                    .unwrap()
                    .timestamp();
                let until = start.checked_add(SignedDuration::from_hours(2)).unwrap();
                assert_eq!(
                    verdict,
                    Verdict::Blocked {
                        window: format!(
                            "deny \"0 {} * * *\" for 3h ({zone})",
                            hour_before(&tz, now)
                        ),
                        until: Some(until),
                    },
                    "{zone}"
                );
            } else {
                assert_eq!(
                    verdict,
                    Verdict::Unsaid {
                        window: format!("deny \"0 {} * * *\" for 3h", hour_before(&tz, now)),
                    },
                    "{zone}"
                );
            }
            let refused = sync(&port, "app")
                .await
                .expect_err("Argo CD refuses the sync");
            assert!(
                refused
                    .to_string()
                    .contains("Cannot sync: Blocked by sync window"),
                "{refused}"
            );
        }
    }
}

#[tokio::test]
async fn the_project_is_read_only_for_its_windows_zones() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("app", "v1")).await;
    port.sync_windows("app").await.unwrap();
    let paths: Vec<String> = fake
        .server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        paths,
        [
            "GET /api/v1/applications/app/syncwindows",
            "GET /api/v1/applications/app",
            "GET /api/v1/projects/default",
        ],
        "{paths:?}"
    );
}
