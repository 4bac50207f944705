//! `plan`, `promote` and `rollback` of prod over the sandbox: gates, waves, confirmation,
//! dry run, failure with rollback, and the lock.

use crate::support::{DEADLINE, FIRST, SECOND, Sandbox, changes};

/// A sandbox whose staging runs [`SECOND`] everywhere, Synced and Healthy: prod can be
/// promoted to it.
fn staging_ready() -> Sandbox {
    let s = Sandbox::new();
    s.wait_staging_healthy(SECOND);
    s
}

#[test]
fn plan_prod_passes_four_gates_and_changes_three_applications() {
    let s = staging_ready();
    let run = s.json(&["plan", "--env", "prod"]);
    run.expect_code(0);
    let plan = run.result();
    let gates = plan["gates"].as_array().expect("gates");
    assert_eq!(gates.len(), 4, "{gates:#?}");
    assert!(
        gates.iter().all(|g| g["passed"] == true),
        "every gate passes: {gates:#?}"
    );
    assert_eq!(plan["release"]["tag"], SECOND);
    assert_eq!(changes(&plan), 3, "{plan:#}");
    let waves: Vec<usize> = plan["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["apps"].as_array().unwrap().len())
        .collect();
    assert_eq!(waves, [1, 2], "the waves of the example configuration");
    // Planning changes nothing.
    for r in s.status("prod") {
        assert_eq!(
            (r.desired.as_str(), r.live.as_str()),
            (FIRST, FIRST),
            "{r:?}"
        );
    }
}

#[test]
fn promote_prod_then_replan_is_a_no_op_and_repromote_is_up_to_date() {
    let s = staging_ready();
    let run = s.json(&["promote", "--env", "prod", "--yes"]);
    run.expect_code(0);
    let report = run.result();
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    s.assert_runs("prod", SECOND);

    let again = s.json(&["plan", "--env", "prod"]);
    again.expect_code(0);
    assert_eq!(
        changes(&again.result()),
        0,
        "re-planning after success is a no-op"
    );

    let twice = s.json(&["promote", "--env", "prod", "--yes"]);
    twice.expect_code(0);
    assert_eq!(twice.result()["outcome"], "up_to_date");
    s.assert_runs("prod", SECOND);
}

#[test]
fn promote_prod_without_yes_off_a_terminal_is_a_usage_error_and_changes_nothing() {
    let s = staging_ready();
    let before = s.status("prod");
    // The harness closes stdin, so it is not a terminal and nobody can confirm.
    let run = s.run(&["promote", "--env", "prod"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--yes"),
        "the error says how to confirm: {}",
        run.stderr
    );
    assert_eq!(
        s.status("prod").iter().map(|r| &r.raw).collect::<Vec<_>>(),
        before.iter().map(|r| &r.raw).collect::<Vec<_>>(),
        "prod is unchanged"
    );
}

#[test]
fn promote_prod_dry_run_changes_nothing() {
    let s = staging_ready();
    let before = s.status("prod");
    let run = s.json(&["promote", "--env", "prod", "--dry-run"]);
    run.expect_code(0);
    let result = run.result();
    assert_eq!(result["outcome"], "dry_run", "{result:#}");
    assert_eq!(
        changes(&result["plan"]),
        3,
        "the dry run shows what would change"
    );
    assert_eq!(
        s.status("prod").iter().map(|r| &r.raw).collect::<Vec<_>>(),
        before.iter().map(|r| &r.raw).collect::<Vec<_>>(),
        "prod is unchanged"
    );
}

#[test]
fn a_degraded_cluster_halts_the_promotion_and_rolls_every_change_back() {
    let s = staging_ready();
    s.run(&[
        "sandbox",
        "break",
        "--env",
        "prod",
        "--cluster",
        "eu-west-1",
        "--how",
        "degraded",
    ])
    .expect_code(0);
    let run = s.json(&["promote", "--env", "prod", "--yes"]);
    run.expect_code(1);
    let report = run.result();
    assert_eq!(report["outcome"], "rolled_back", "{report:#}");
    s.assert_runs("prod", FIRST);
}

#[test]
fn rollback_after_a_promotion_returns_prod_to_the_previous_release() {
    let s = staging_ready();
    s.json(&["promote", "--env", "prod", "--yes"])
        .expect_code(0);
    s.assert_runs("prod", SECOND);
    let run = s.json(&["rollback", "--env", "prod", "--yes"]);
    run.expect_code(0);
    let report = run.result();
    assert_eq!(report["release"]["tag"], FIRST, "{report:#}");
    s.assert_runs("prod", FIRST);
}

#[test]
fn a_second_promotion_while_one_runs_exits_4_and_names_the_holder() {
    let s = staging_ready();
    let mut first = s.spawn(
        s.command(&["--output", "json", "promote", "--env", "prod", "--yes"]),
        &["promote --env prod --yes (first)"],
    );
    // The running promotion saves the sandbox before it reports an event, so once it says
    // it holds the lock, its lease is in the sandbox's state for the second run to find.
    first.wait_for_event(
        "the first promotion to take the lock",
        |e| e["event"] == "lock_acquired",
        DEADLINE,
    );
    assert!(
        s.state()
            .and_then(|st| st["leases"].as_object().map(|l| !l.is_empty()))
            .unwrap_or(false),
        "the lease is in the sandbox state"
    );
    let second = s.run(&["promote", "--env", "prod", "--yes"]);
    second.expect_code(4);
    let pid = format!("pid {}", first.id());
    assert!(
        second.stderr.contains(&pid),
        "the error names the holder ({pid}): {}",
        second.stderr
    );
    // The first promotion is unaffected and finishes.
    let first = first.wait(DEADLINE);
    first.expect_code(0);
    assert_eq!(first.result()["outcome"], "succeeded");
    s.assert_runs("prod", SECOND);
}

#[test]
fn ctrl_c_finishes_the_running_wave_exits_130_and_a_rerun_resumes() {
    let s = staging_ready();
    let mut first = s.spawn(
        s.command(&["--output", "json", "promote", "--env", "prod", "--yes"]),
        &["promote --env prod --yes (interrupted)"],
    );
    // Wait until the promotion says wave 1's sync runs.
    first.wait_for_event(
        "wave 1's sync",
        |e| e["event"] == "app_syncing" && e["cluster"] == "us-west-2",
        DEADLINE,
    );
    let kill = std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let first = first.wait(DEADLINE);
    first.expect_code(130);
    let result = first.result();
    assert_eq!(result["outcome"], "interrupted", "{result}");
    let events: Vec<String> = first
        .lines()
        .iter()
        .filter(|l| l["type"] == "event")
        .map(|l| l["data"]["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(events.contains(&"interrupting".to_owned()), "{events:?}");
    // Wave 1's sync was allowed to finish; wave 2 never started.
    let apps = result["apps"].as_array().expect("apps");
    let state = |cluster: &str| {
        apps.iter()
            .find(|a| a["cluster"] == cluster)
            .map(|a| a["state"]["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(state("us-west-2"), "deployed", "{apps:?}");
    assert_eq!(state("eu-west-1"), "not_started", "{apps:?}");

    // The same command resumes: wave 1, at the release but never soaked there, is soaked
    // again (not synced again), wave 2 is deployed.
    let again = s.json(&["promote", "--env", "prod", "--yes"]);
    again.expect_code(0);
    let apps = again.result()["apps"].as_array().expect("apps").clone();
    let state = |cluster: &str| {
        apps.iter()
            .find(|a| a["cluster"] == cluster)
            .map(|a| a["state"]["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(state("us-west-2"), "soaked_again", "{apps:?}");
    assert_eq!(state("us-east-1"), "deployed", "{apps:?}");
    s.assert_runs("prod", SECOND);
}
