//! `--output json`: JSON Lines on stdout, one `{"type","data"}` object a line, the last of
//! type `result`, and nothing else — for every kind of command, failures included.

use crate::support::Sandbox;

/// Runs `args` with `--output json`, expecting exit `code`; checks the envelope of every
/// line and returns the line types.
#[track_caller]
fn check(s: &Sandbox, args: &[&str], code: i32) -> Vec<String> {
    let run = s.json(args);
    run.expect_code(code);
    run.lines()
        .iter()
        .map(|l| l["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_command_writes_json_lines_ending_in_one_result() {
    let s = Sandbox::new();
    let status = check(&s, &["status"], 0);
    assert_eq!(
        status.iter().filter(|t| *t == "application").count(),
        9,
        "one application line per environment × cluster: {status:?}"
    );
    check(&s, &["status", "--env", "prod"], 0);
    check(
        &s,
        &["release", "check", "--env", "prod", "--tag", "0a1b2c3d4e5f"],
        0,
    );
    check(&s, &["release", "latest", "--env", "staging"], 0);
    check(&s, &["audit"], 0);
    check(
        &s,
        &[
            "build",
            "plan",
            "--env",
            "staging",
            "--sha",
            "0123456789abcdef0123",
        ],
        0,
    );
    check(
        &s,
        &[
            "sandbox",
            "push",
            "--env",
            "staging",
            "--tag",
            "cafe0000beef",
            "--skip",
            "api",
        ],
        0,
    );
    check(
        &s,
        &[
            "release",
            "check",
            "--env",
            "staging",
            "--tag",
            "cafe0000beef",
        ],
        3,
    );
    let watch = check(&s, &["watch", "--env", "staging", "--once"], 0);
    assert!(watch.contains(&"poll".to_owned()), "{watch:?}");
    // A failing gate, then errors: the result line carries them.
    check(&s, &["plan", "--env", "prod", "--tag", "cafe0000beef"], 3);
    check(
        &s,
        &["promote", "--env", "prod", "--tag", "cafe0000beef", "--yes"],
        3,
    );
    check(&s, &["promote", "--env", "nowhere", "--yes"], 2);
    check(
        &s,
        &["release", "check", "--env", "prod", "--tag", "no/such:tag"],
        2,
    );
}

#[test]
fn status_spells_sync_health_and_operation_as_argo_cd_does() {
    let s = Sandbox::new();
    for row in s.status("prod") {
        assert_eq!(
            (row.sync.as_str(), row.health.as_str()),
            ("Synced", "Healthy"),
            "{:#}",
            row.raw
        );
        let operation = row.raw["operation"].as_str().unwrap_or("Succeeded");
        let phase = operation.split(" (").next().unwrap_or_default();
        assert!(
            ["Running", "Terminating", "Succeeded", "Failed", "Error"].contains(&phase),
            "operation {operation:?} is an upstream phase: {:#}",
            row.raw
        );
    }
    let text = s.run(&["status", "--env", "prod"]);
    text.expect_code(0);
    assert!(
        text.stdout.contains("Synced") && text.stdout.contains("Healthy"),
        "{}",
        text.stdout
    );
}

#[test]
fn an_error_result_carries_the_message_and_the_exit_code() {
    let s = Sandbox::new();
    let run = s.json(&["promote", "--env", "nowhere", "--yes"]);
    run.expect_code(2);
    let result = run.result();
    assert_eq!(result["exit_code"], 2, "{result:#}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("nowhere")),
        "{result:#}"
    );
    assert!(
        run.stderr.contains("nowhere"),
        "the error is also on stderr for people: {}",
        run.stderr
    );
}

#[test]
fn a_promotion_writes_events_then_its_report() {
    let s = Sandbox::new();
    s.wait_staging_healthy(crate::support::SECOND);
    let types = check(&s, &["promote", "--env", "prod", "--dry-run"], 0);
    assert_eq!(types, ["plan", "result"]);
}
