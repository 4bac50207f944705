//! End to end (issue 17, item 1): a promotion cancelled with SIGINT during wave 1's soak is
//! run again. The rerun must not take wave 1 for done because it runs the release: no
//! finished soak observed it there, so the rerun soaks it again (without a sync), and a
//! canary that turns Degraded then fails the rerun and is rolled back. The real binary, its
//! lock and trail in moto's S3, and the fake Argo CD.

use serde_json::json;

use crate::e2e::{
    NEW, OLD, PROMOTE, Replication, WAVE1_APP, World, json_args, soak_started, tag_parameter,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_in_wave_one_soak_then_a_degraded_canary_fails_the_rerun() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    // A soak long enough to be interrupted in.
    world.set_prod_timings("30s", "60s");
    let first = world.spawn(&json_args(&PROMOTE));
    first.wait_for_event("wave 1's soak", soak_started(1)).await;
    first.signal("INT");
    let first = first.wait().await;
    first.expect_code(130);
    assert_eq!(first.result()["outcome"], "interrupted");
    assert_eq!(tag_parameter(&world.prod_app("us-west-2")), NEW);

    // The rerun plans wave 1 as "soak again", not "skip".
    let plan = world.run(&json_args(&["plan", "--env", "prod"])).await;
    plan.expect_code(0);
    let waves = &plan.result()["waves"];
    assert_eq!(waves[0]["apps"][0]["action"]["kind"], "soak", "{waves:#}");

    // The canary turns Degraded as the rerun reaches wave 1.
    let second = world.spawn(&json_args(&PROMOTE));
    second
        .wait_for_event("the rerun's wave 1", |e| {
            e["event"] == "wave_started" && e["wave"] == 1
        })
        .await;
    world.argo.edit(WAVE1_APP, |app| {
        app["status"]["health"] = json!({
            "status": "Degraded",
            "message": "Back-off restarting failed container api"
        });
    });
    let second = second.wait().await;
    second.expect_code(1);
    let report = second.result();
    assert_eq!(report["outcome"], "rolled_back", "{report:#}");
    let wave1 = report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["cluster"] == "us-west-2")
        .expect("wave 1 in the report")
        .clone();
    assert_eq!(wave1["state"]["state"], "rolled_back", "{wave1:#}");
    assert_eq!(tag_parameter(&world.prod_app("us-west-2")), OLD);
    for cluster in ["us-east-1", "eu-west-1"] {
        assert_eq!(
            world.syncs(&format!("myapp-prod-{cluster}")).await,
            0,
            "wave 2 never started"
        );
    }
}
