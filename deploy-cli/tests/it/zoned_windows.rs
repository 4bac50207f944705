//! Issue 17 item 3 end to end: sync windows in a time zone, judged as Argo CD judges them. The
//! real binary against the fake Argo CD (whose syncwindows answer leaves `timeZone` out, as
//! upstream's `convertSyncWindows` does) and moto.

use serde_json::json;

use crate::e2e::{NEW, PROMOTE, Replication, World, json_args};

/// A deny window in Kolkata (UTC+05:30) from an hour before the present UTC hour, for 3 h: at
/// that hour read in UTC it would be active, in Kolkata it ended hours ago. The token may not
/// read the AppProject, so the windows `deploy` sees have no zone; Argo CD answers
/// `canSync: true`, and neither `plan` nor `promote` may refuse (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zoned_deny_not_active_in_its_zone_blocks_neither_plan_nor_promote() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let hour = (jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .hour()
        + 23)
        % 24;
    world.argo.set_sync_windows(
        "default",
        json!([{ "kind": "deny", "schedule": format!("0 {hour} * * *"), "duration": "3h",
                 "applications": ["myapp-prod-*"], "timeZone": "Asia/Kolkata" }]),
    );
    world.argo.set_projects_unreadable(true);

    let plan = world.run(&["plan", "--env", "prod"]).await;
    plan.expect_code(0);
    for wanted in [
        "sync windows:",
        "wave 1: could sync now",
        "wave 2: could sync now",
    ] {
        assert!(
            plan.stdout.contains(wanted),
            "{wanted:?} not in:\n{}",
            plan.stdout
        );
    }
    assert!(!plan.stdout.contains("could NOT"), "{}", plan.stdout);

    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);
    assert_eq!(run.result()["outcome"], "succeeded", "{}", run.stdout);
    world.assert_prod_runs(NEW);
}
