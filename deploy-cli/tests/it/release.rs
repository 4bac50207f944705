//! Releases in the registries: `release check`, and an incomplete release that neither
//! `watch` nor `promote` deploys.

use serde_json::Value;

use crate::support::{FIRST, SECOND, Sandbox};

/// A release CI pushes without its `api` image (a failed CI job).
const INCOMPLETE: &str = "cafe0000beef";

/// Pushes [`INCOMPLETE`] to staging without `api`.
fn push_incomplete(s: &Sandbox) {
    let run = s.json(&[
        "sandbox", "push", "--env", "staging", "--tag", INCOMPLETE, "--skip", "api",
    ]);
    run.expect_code(0);
    let pushed = run.result()["pushed"].as_array().expect("pushed").clone();
    assert_eq!(pushed.len(), 2, "every image but api: {pushed:?}");
}

#[test]
fn release_check_of_a_replicated_release_in_prod_has_three_digests() {
    let s = Sandbox::new();
    let run = s.json(&["release", "check", "--env", "prod", "--tag", SECOND]);
    run.expect_code(0);
    let result = run.result();
    assert_eq!(result["complete"], true, "{result:#}");
    let digests = result["release"]["digests"]
        .as_object()
        .expect("a complete release has digests");
    assert_eq!(digests.len(), 3, "{digests:?}");
    for (service, d) in digests {
        assert!(
            d.as_str().is_some_and(|d| d.starts_with("sha256:")),
            "{service}: {d}"
        );
    }
}

#[test]
fn release_check_of_an_incomplete_release_exits_3_and_names_the_missing_image() {
    let s = Sandbox::new();
    push_incomplete(&s);
    let run = s.run(&["release", "check", "--env", "staging", "--tag", INCOMPLETE]);
    run.expect_code(3);
    let missing = format!("111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/api:{INCOMPLETE}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("missing") && l.contains(&missing)),
        "the output names {missing} as missing:\n{}",
        run.stdout
    );
    for present in ["staging/worker", "staging/logserver"] {
        assert!(
            !run.stdout
                .lines()
                .any(|l| l.contains("missing") && l.contains(present)),
            "{present} is not missing:\n{}",
            run.stdout
        );
    }
    let json = s.json(&["release", "check", "--env", "staging", "--tag", INCOMPLETE]);
    json.expect_code(3);
    let result = json.result();
    assert_eq!(result["complete"], false);
    assert!(result["release"].is_null(), "no release: {result:#}");
    let services: Vec<&str> = result["check"]["missing"]
        .as_array()
        .expect("missing list")
        .iter()
        .filter_map(|m| m["service"].as_str())
        .collect();
    assert_eq!(services, ["api"], "{result:#}");
}

#[test]
fn an_incomplete_release_is_neither_watched_into_staging_nor_promoted_to_prod() {
    let s = Sandbox::new();
    push_incomplete(&s);
    let staging_before: Vec<String> = s.status("staging").into_iter().map(|r| r.desired).collect();
    assert_eq!(staging_before, [SECOND; 3]);

    let watch = s.json(&["watch", "--env", "staging", "--once"]);
    watch.expect_code(0);
    let poll = watch.result();
    assert_eq!(poll["newest"], INCOMPLETE, "{poll:#}");
    let incomplete: Vec<&Value> = poll["incomplete"].as_array().unwrap().iter().collect();
    assert_eq!(incomplete.len(), 1, "{poll:#}");
    assert_eq!(incomplete[0]["tag"], INCOMPLETE, "{poll:#}");
    assert_eq!(poll["written"], serde_json::json!([]), "{poll:#}");
    for r in s.status("staging") {
        assert_eq!(
            r.desired, SECOND,
            "staging stays at the previous release: {r:?}"
        );
    }

    let prod_before = s.status("prod");
    let run = s.json(&["promote", "--env", "prod", "--tag", INCOMPLETE, "--yes"]);
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["outcome"], "gate_failed", "{result:#}");
    assert_eq!(result["changed"], 0, "{result:#}");
    let prod_after = s.status("prod");
    assert_eq!(
        prod_after.iter().map(|r| &r.raw).collect::<Vec<_>>(),
        prod_before.iter().map(|r| &r.raw).collect::<Vec<_>>(),
        "prod is unchanged"
    );
    assert!(
        prod_after.iter().all(|r| r.desired == FIRST),
        "{prod_after:?}"
    );
    let leases = s.state().map(|st| st["leases"].clone());
    assert_eq!(
        leases,
        Some(serde_json::json!({})),
        "a failed gate takes no lock"
    );
}
