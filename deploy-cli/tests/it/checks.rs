//! Metric checks in the commands: `deploy plan` lists each wave's checks resolved per cluster
//! (text and JSON), `deploy sandbox metric` makes the sandbox's simulated metric go bad for
//! one release on one cluster, and `deploy audit` flags a check whose source cannot be
//! reached or rejects the query now (against the real adapters: a closed loopback port and
//! a server answering Prometheus' error body).

use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{FIRST, SECOND, Sandbox, example_config};

/// The example's check, as `deploy plan` resolves it on `cluster`.
fn query(cluster: &str) -> String {
    format!(
        r#"sum(rate(http_requests_total{{cluster="{cluster}",code=~"5.."}}[2m])) / sum(rate(http_requests_total{{cluster="{cluster}"}}[2m]))"#
    )
}

/// A sandbox over the example configuration with `edit` applied, its staging at
/// [`SECOND`]; the directory holding the configuration comes along.
fn sandbox_with(edit: impl FnOnce(String) -> String) -> (Sandbox, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = std::fs::read_to_string(example_config()).expect("examples/deploy.toml");
    let path: PathBuf = dir.path().join("deploy.toml");
    std::fs::write(&path, edit(text)).expect("write deploy.toml");
    let s = Sandbox::with_config(path);
    s.wait_staging_healthy(SECOND);
    (s, dir)
}

/// The text between `from` and the next line that starts like it (or the end).
fn section<'a>(text: &'a str, from: &str) -> &'a str {
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("no {from:?} in:\n{text}"));
    let rest = &text[at + from.len()..];
    let end = rest.find("\n    wave ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn plan_lists_each_waves_checks_with_their_resolved_queries() {
    let s = Sandbox::new();
    s.wait_staging_healthy(SECOND);
    let run = s.run(&["plan", "--env", "prod"]);
    run.expect_code(0);
    let out = &run.stdout;
    // The sandbox compresses time 60×: the example's 5m soak is 5s, its 30s interval 500ms.
    let rule = "5xx-ratio: Prometheus http://prometheus.monitoring:9090; success result < 0.01, \
                failure result >= 0.05; first after 0s, then every 500ms, until the soak ends; \
                tolerates 0 failed, 0 inconclusive, 4 error(s) in a row; no data: fail";
    let wave1 = section(out, "    wave 1 (soak 5s):");
    let wave2 = section(out, "    wave 2 (soak 5s):");
    assert!(wave1.contains(rule) && wave2.contains(rule), "{out}");
    assert!(
        wave1.contains(&format!("        us-west-2: {}", query("us-west-2"))),
        "{out}"
    );
    assert!(!wave1.contains("eu-west-1"), "{out}");
    for c in ["us-east-1", "eu-west-1"] {
        assert!(
            wave2.contains(&format!("        {c}: {}", query(c))),
            "{out}"
        );
    }

    // The JSON plan carries the same, per Application.
    let run = s.json(&["plan", "--env", "prod"]);
    run.expect_code(0);
    let plan = run.result();
    for (w, cluster) in [(0, "us-west-2"), (1, "us-east-1"), (1, "eu-west-1")] {
        let app = plan["waves"][w]["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["cluster"] == cluster)
            .unwrap_or_else(|| panic!("{cluster} in wave {}: {plan:#}", w + 1));
        let check = &app["checks"][0];
        assert_eq!(check["name"], "5xx-ratio", "{check:#}");
        assert_eq!(check["query"], query(cluster), "{check:#}");
        assert_eq!(check["source"]["kind"], "prometheus", "{check:#}");
        assert_eq!(
            check["source"]["url"], "http://prometheus.monitoring:9090",
            "{check:#}"
        );
        assert_eq!(check["success"], "result < 0.01", "{check:#}");
        assert_eq!(check["failure"], "result >= 0.05", "{check:#}");
        assert_eq!(check["interval"], 500, "{check:#}");
        assert_eq!(check["no_data"], "fail", "{check:#}");
    }
}

#[test]
fn plan_shows_alarm_names_per_cluster_and_the_soak_checks_lengthen() {
    let (s, _dir) = sandbox_with(|text| {
        let text = text.replace(
            "interval = \"30s\"\nno_data = \"fail\"",
            "interval = \"30s\"\ncount = 20\nno_data = \"fail\"",
        );
        format!(
            "{text}\n[[environments.prod.checks]]\nname = \"alarms\"\n\
             cloudwatch_alarms = {{ names = [\"myapp-{{region}}-5xx\", \"myapp-{{region}}-latency\"], region = \"{{region}}\" }}\n"
        )
    });
    let run = s.run(&["plan", "--env", "prod"]);
    run.expect_code(0);
    let out = &run.stdout;
    // 20 measurements every 500ms: the last at 9.5s, past the 5s soak.
    let wave2 = section(
        out,
        "    wave 2 (soak 5s, at least 9s 500ms with its checks):",
    );
    assert!(
        wave2.contains("then every 500ms, 20 measurement(s);"),
        "{out}"
    );
    // The alarms' region differs by cluster, so each cluster names its source.
    assert!(wave2.contains("      alarms: success "), "{out}");
    for c in ["us-east-1", "eu-west-1"] {
        assert!(
            wave2.contains(&format!(
                "        {c}: [CloudWatch alarms in {c}] myapp-{c}-5xx, myapp-{c}-latency"
            )),
            "{out}"
        );
    }
}

/// The `check_measured` events of a JSON run on `cluster`: (values, phase).
fn measured(run: &crate::support::Run, cluster: &str) -> Vec<(Value, String)> {
    run.lines()
        .into_iter()
        .filter(|l| l["type"] == "event" && l["data"]["event"] == "check_measured")
        .filter(|l| l["data"]["cluster"] == cluster)
        .map(|l| {
            (
                l["data"]["values"].clone(),
                l["data"]["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_metric_that_goes_bad_with_the_release_halts_and_rolls_back() {
    let s = Sandbox::new();
    s.wait_staging_healthy(SECOND);
    let set = s.json(&[
        "sandbox",
        "metric",
        "--env",
        "prod",
        "--cluster",
        "eu-west-1",
        "--release",
        SECOND,
        "--value",
        "0.2",
    ]);
    set.expect_code(0);
    assert_eq!(set.result()["query"], query("eu-west-1"));
    let run = s.json(&["promote", "--env", "prod", "--yes"]);
    run.expect_code(1);
    let report = run.result();
    assert_eq!(report["outcome"], "rolled_back", "{report:#}");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("eu-west-1: check 5xx-ratio failed at 0.2"),
        "{message}"
    );
    let eu = measured(&run, "eu-west-1");
    assert_eq!(eu, [(serde_json::json!([0.2]), "failed".to_owned())]);
    let us = measured(&run, "us-west-2");
    assert!(
        !us.is_empty()
            && us
                .iter()
                .all(|(v, p)| *v == serde_json::json!([0.0]) && p == "successful"),
        "{us:?}"
    );
    s.assert_runs("prod", FIRST);
}

#[test]
fn sandbox_metric_names_what_is_wrong() {
    let s = Sandbox::new();
    for (args, want) in [
        (
            vec!["--check", "latency", "--cluster", "eu-west-1"],
            "environment prod has no check \"latency\"; its checks: 5xx-ratio",
        ),
        (
            vec!["--cluster", "mars-1"],
            "no cluster \"mars-1\" in the configuration",
        ),
    ] {
        let mut all = vec!["sandbox", "metric", "--env", "prod", "--release", SECOND];
        all.extend(args);
        let run = s.run(&all);
        run.expect_code(2);
        assert!(run.stderr.contains(want), "{}", run.stderr);
    }
    let (s, _dir) = sandbox_with(|text| {
        format!(
            "{text}\n[[environments.prod.checks]]\nname = \"alarms\"\n\
             cloudwatch_alarms = {{ names = [\"myapp-{{region}}-5xx\"], region = \"{{region}}\" }}\n"
        )
    });
    let run = s.run(&[
        "sandbox",
        "metric",
        "--env",
        "prod",
        "--cluster",
        "eu-west-1",
        "--release",
        SECOND,
        "--value",
        "1",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("environment prod has 2 checks (5xx-ratio, alarms): say which with --check"),
        "{}",
        run.stderr
    );
}
