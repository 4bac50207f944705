//! The S3 promotion lock end to end: the real binary against moto S3 and the fake Argo CD.
//! A lock object deleted during a soak is taken again and nothing is rolled back (N3), and
//! `deploy unlock` removes a lock left in S3 and records who did in the S3 trail (item 8).

use deploy_engine::conformance::argocd::{ArgoCdFixture as _, Script};

use crate::e2e::{
    CLUSTERS, NEW, PROMOTE, Replication, STATE_BUCKET, World, events_of, json_args, soak_started,
};

const LOCK_OBJECT: &str = "deploy/prod/lock.json";

/// Item 2: a person deletes `lock.json` (as the README once said to) while wave 1 soaks.
/// Wave 2's renewal finds nobody holding the lock and takes it again with `If-None-Match`;
/// the run goes on, nothing is rolled back, and the lock is released at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_lock_deleted_during_a_soak_is_taken_again_and_nothing_rolls_back() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    world.set_prod_timings("5s", "60s");
    let running = world.spawn(&json_args(&PROMOTE));
    running
        .wait_for_event("the soak of wave 1", soak_started(1))
        .await;
    let keys = deploy_aws::moto::list_keys(&world.prod_moto.endpoint, STATE_BUCKET).await;
    assert!(keys.contains(&LOCK_OBJECT.to_owned()), "{keys:?}");
    deploy_aws::moto::delete_key(&world.prod_moto.endpoint, STATE_BUCKET, LOCK_OBJECT).await;

    let run = running.wait().await;
    run.expect_code(0);
    let report = run.result();
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let events = events_of(&run);
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "halted" || e["event"] == "rolling_back"),
        "{events:#?}"
    );
    for cluster in CLUSTERS {
        assert_eq!(
            world.syncs(&format!("myapp-prod-{cluster}")).await,
            1,
            "{cluster}: synced once, never rolled back"
        );
    }
    world.assert_prod_runs(NEW);
    let keys = deploy_aws::moto::list_keys(&world.prod_moto.endpoint, STATE_BUCKET).await;
    assert!(
        !keys.contains(&LOCK_OBJECT.to_owned()),
        "the re-taken lock is released: {keys:?}"
    );
}

/// Item 8: a run on another machine ("ci") holds the S3 lock while its sync hangs; the
/// second run exits 4 printing `deploy unlock --env prod --id ID`; `deploy unlock` on this
/// machine shows the lock, refuses it while live, removes it with `--force`, and the S3
/// trail records who unlocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_removes_the_s3_lock_of_a_lost_runner_and_records_it_in_s3() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    world.argo.script(crate::e2e::WAVE1_APP, Script::Hang).await;
    let first = world.spawn(&json_args(&PROMOTE));
    crate::e2e::wait_until("the first run's sync of wave 1", || async {
        world.syncs(crate::e2e::WAVE1_APP).await > 0
    })
    .await;

    let second = world.run_on("ci", &PROMOTE).await;
    second.expect_code(4);
    let command = "deploy unlock --env prod --id ";
    let said = format!("{}{}", second.stdout, second.stderr);
    let at = said.find(command).unwrap_or_else(|| panic!("{said}"));
    let id: String = said[at + command.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(id.len(), 8, "{said}");

    let live = world
        .run_on("ci", &json_args(&["unlock", "--env", "prod", "--id", &id]))
        .await;
    live.expect_code(4);
    assert_eq!(live.result()["outcome"], "refused");

    // The first run is lost with its machine (killed; its lock stays in S3).
    let killed = first.kill();
    assert_eq!(killed.code, None, "{killed:?}");
    let keys = deploy_aws::moto::list_keys(&world.prod_moto.endpoint, STATE_BUCKET).await;
    assert!(keys.contains(&LOCK_OBJECT.to_owned()), "{keys:?}");
    let removed = world
        .run_on(
            "ci",
            &json_args(&["unlock", "--env", "prod", "--id", &id, "--force"]),
        )
        .await;
    removed.expect_code(0);
    assert_eq!(
        removed.result()["outcome"],
        "unlocked",
        "{}",
        removed.stdout
    );
    let keys = deploy_aws::moto::list_keys(&world.prod_moto.endpoint, STATE_BUCKET).await;
    assert!(!keys.contains(&LOCK_OBJECT.to_owned()), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("deploy/prod/records/") && k.contains("unlock-")),
        "the unlock is recorded in the S3 trail: {keys:?}"
    );
}
