//! Sync windows with `--core`: the AppProject object has the windows' zones, and the engine's
//! reading of them (no API server answers `canSync`) honours them, through jiff's tz database.

use deploy_core::port::ArgoCd;
use deploy_core::rollout::window::app_verdict;
use deploy_core::window::Verdict;
use deploy_engine::conformance::argocd::{ArgoCdFixture, seed};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;

use super::{NS, setup};

const PROJECTS: &str = "argoproj.io/v1alpha1/appprojects";

#[tokio::test]
async fn the_appproject_gives_core_the_zones_and_they_are_honoured() {
    let (api, controller, port) = setup();
    controller.create_application(&seed("app", "v1")).await;
    let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
    let now = Timestamp::now();
    // From an hour before the present hour, for 3 h: `hour_in` of the zone's wall clock.
    let from = |tz: &TimeZone| (now.to_zoned(tz.clone()).hour() + 23) % 24;
    for (hour, open) in [(from(&kolkata), false), (from(&TimeZone::UTC), true)] {
        api.put(
            PROJECTS,
            NS,
            json!({ "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
                    "metadata": { "name": "default", "namespace": NS },
                    "spec": { "syncWindows": [{ "kind": "deny", "schedule": format!("0 {hour} * * *"),
                        "duration": "3h", "applications": ["*"], "timeZone": "Asia/Kolkata" }] } }),
        );
        let windows = port.sync_windows("app").await.unwrap();
        assert!(windows.zoned && windows.answer.is_none(), "{windows:?}");
        assert_eq!(
            windows.assigned[0].time_zone.as_deref(),
            Some("Asia/Kolkata")
        );
        let verdict = app_verdict(&windows, Timestamp::now(), true);
        if open {
            // Active at that hour read in UTC, long over in Kolkata.
            assert_eq!(verdict, Verdict::Open, "{windows:?}");
        } else {
            assert!(
                matches!(verdict, Verdict::Blocked { until: Some(_), ref window } if window.contains("Asia/Kolkata")),
                "{verdict:?}"
            );
        }
    }
}
