//! `deploy unlock` in the sandbox: the exit-4 message prints the exact command, the lock is
//! shown with its id, a wrong id or a live lease without `--force` is refused, and who
//! unlocked is in the audit trail.

use crate::support::{DEADLINE, SECOND, Sandbox};

/// The id in the `deploy unlock --env prod --id ID` that `text` prints.
#[track_caller]
fn printed_id(text: &str) -> String {
    let command = "deploy unlock --env prod --id ";
    let at = text
        .find(command)
        .unwrap_or_else(|| panic!("no `{command}…` in:\n{text}"));
    text[at + command.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[test]
fn a_lock_left_by_a_lost_run_is_removed_by_unlock_with_its_id_and_recorded() {
    let s = Sandbox::new();
    s.wait_staging_healthy(SECOND);
    let mut first = s.spawn(
        s.command(&["--output", "json", "promote", "--env", "prod", "--yes"]),
        &["promote --env prod --yes (lost)"],
    );
    first.wait_for_event(
        "the first promotion to take the lock",
        |e| e["event"] == "lock_acquired",
        DEADLINE,
    );
    let pid = first.id();

    // Exit 4 prints the exact command that removes the lock.
    let second = s.run(&["promote", "--env", "prod", "--yes"]);
    second.expect_code(4);
    let id = printed_id(&second.stderr);
    assert_eq!(id.len(), 8, "{}", second.stderr);

    // `deploy status` shows who holds it, with the id.
    let status = s.json(&["status", "--env", "prod"]);
    status.expect_code(0);
    let envs = &status.result()["environments"];
    assert_eq!(envs[0]["lock"]["id"], id.as_str(), "{envs}");

    // Without --id it is only shown: holder, id, expiry.
    let shown = s.json(&["unlock", "--env", "prod"]);
    shown.expect_code(0);
    let lock = &shown.result()["lock"];
    assert_eq!(lock["id"], id.as_str(), "{lock}");
    assert!(
        lock["holder"]
            .as_str()
            .is_some_and(|h| h.contains(&format!("pid {pid} "))),
        "{lock}"
    );
    assert_eq!(lock["expired"], false, "{lock}");
    let text = s.run(&["unlock", "--env", "prod"]);
    text.expect_code(0);
    for part in ["holder", "expires", &id] {
        assert!(text.stdout.contains(part), "{part:?} in:\n{}", text.stdout);
    }

    // The run is lost (SIGKILL: no release, no end record).
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    first.wait(DEADLINE);

    // Another id is never removed, even with --force.
    let wrong = s.run(&["unlock", "--env", "prod", "--id", "0badc0de", "--force"]);
    wrong.expect_code(4);
    assert!(wrong.stdout.contains("not unlocked"), "{}", wrong.stdout);
    // Renewed within its ttl: refused without --force.
    let live = s.run(&["unlock", "--env", "prod", "--id", &id]);
    live.expect_code(4);
    assert!(live.stdout.contains("--force"), "{}", live.stdout);
    assert!(
        s.state()
            .and_then(|st| st["leases"].as_object().map(|l| !l.is_empty()))
            .unwrap_or(false),
        "nothing was removed"
    );

    let removed = s.json(&["unlock", "--env", "prod", "--id", &id, "--force"]);
    removed.expect_code(0);
    let result = removed.result();
    assert_eq!(result["outcome"], "unlocked", "{result}");
    assert_eq!(result["lock"]["id"], id.as_str(), "{result}");
    assert!(
        s.state()
            .and_then(|st| st["leases"].as_object().map(serde_json::Map::is_empty))
            .unwrap_or(false),
        "the lease is gone: {:?}",
        s.state().map(|st| st["leases"].clone())
    );
    // Nothing left to remove: a second unlock says so.
    s.run(&["unlock", "--env", "prod", "--id", &id])
        .expect_code(0);

    // The trail says who removed whose lock.
    let history = s.json(&["history", "--env", "prod"]);
    history.expect_code(0);
    let unlock = history
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "run")
        .map(|l| l["data"].clone())
        .find(|r| r["kind"] == "unlock")
        .unwrap_or_else(|| panic!("no unlock in the history:\n{}", history.stdout));
    assert_eq!(unlock["outcome"], "unlocked", "{unlock}");
    let message = unlock["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("pid {pid} ")) && message.contains(&id),
        "{unlock}"
    );
}
