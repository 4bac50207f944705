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
        r#"(sum(rate(http_requests_total{{cluster="{cluster}",code=~"5.."}}[2m])) or vector(0)) / sum(rate(http_requests_total{{cluster="{cluster}"}}[2m]))"#
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

/// A Prometheus stand-in answering every `/api/v1/query` with HTTP `status` and `body`.
async fn prometheus_answering(status: u16, body: &str) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/api/v1/query"))
        .respond_with(
            wiremock::ResponseTemplate::new(status)
                .set_body_raw(body.to_owned(), "application/json"),
        )
        .mount(&server)
        .await;
    server
}

/// `deploy audit` measures each check once on each cluster through the real adapters: a
/// source that does not answer and a rejected query are errors naming the check, the
/// cluster and the fix, no data is a warning, and a check that answers is no finding,
/// whatever its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_flags_checks_that_cannot_be_measured_now() {
    let Some(world) = crate::e2e::World::start(crate::e2e::Replication::Complete).await else {
        return;
    };
    let rejecting = prometheus_answering(
        400,
        r#"{"status":"error","errorType":"bad_data","error":"1:32: parse error: unclosed left parenthesis"}"#,
    )
    .await;
    let answering = prometheus_answering(
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.2"]}]}}"#,
    )
    .await;
    let empty = prometheus_answering(
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    )
    .await;
    // A loopback port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        l.local_addr().expect("its address").port()
    };
    let check = |name: &str, url: &str, query: &str| {
        format!(
            "[[environments.prod.checks]]\nname = \"{name}\"\nprometheus = {{ url = \"{url}\" }}\n\
             query = '{query}'\nsuccess = \"result < 0.01\"\n"
        )
    };
    world.append_config(
        &[
            check(
                "down",
                &format!("http://127.0.0.1:{closed}"),
                r#"up{cluster="{cluster}"}"#,
            ),
            check(
                "typo",
                &rejecting.uri(),
                r#"sum(rate(http_requests_total{cluster="{cluster}"}[2m])"#,
            ),
            check("errors", &answering.uri(), r#"errors{cluster="{cluster}"}"#),
            check("silent", &empty.uri(), r#"nothing{cluster="{cluster}"}"#),
        ]
        .join("\n"),
    );

    let run = world
        .run(&crate::e2e::json_args(&["audit", "--env", "prod"]))
        .await;
    run.expect_code(1);
    let result = run.result();
    let findings: Vec<(String, String, String)> = result["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| {
            f["subject"]
                .as_str()
                .unwrap_or_default()
                .starts_with("check/")
        })
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("severity"), s("subject"), s("message"))
        })
        .collect();
    let on = |subject: &str| {
        findings
            .iter()
            .find(|(_, s, _)| s == subject)
            .unwrap_or_else(|| panic!("no finding for {subject}: {findings:#?}"))
    };
    for c in crate::e2e::CLUSTERS {
        let (severity, _, message) = on(&format!("check/down on {c}"));
        assert_eq!(severity, "error");
        assert!(
            message.contains(&format!(
                "cannot be measured now: http://127.0.0.1:{closed} does not answer"
            )) && message.contains("halt after 5 in a row"),
            "{message}"
        );
        let (severity, _, message) = on(&format!("check/typo on {c}"));
        assert_eq!(severity, "error");
        assert!(
            message.contains("the query is rejected by")
                && message.contains("bad_data: 1:32: parse error: unclosed left parenthesis")
                && message.contains("fix `query` of typo in [[environments.prod.checks]]"),
            "{message}"
        );
        let (severity, _, message) = on(&format!("check/silent on {c}"));
        assert_eq!(severity, "warning");
        assert!(message.contains("returns no data now"), "{message}");
    }
    // 0.2 fails `result < 0.01` now: the service's state, not a finding.
    assert_eq!(findings.len(), 9, "{findings:#?}");
    let probes = result["checks"].as_array().expect("checks measured");
    assert_eq!(probes.len(), 12, "4 checks × 3 clusters: {probes:#?}");
    assert!(
        probes.iter().any(|p| p["check"]["name"] == "errors"
            && p["cluster"] == "eu-west-1"
            && p["answer"] == serde_json::json!({"kind": "values", "detail": [0.2]})),
        "{probes:#?}"
    );
    // Each cluster's query, resolved, reached the source once.
    let sent: Vec<String> = rejecting
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter().any(|b| b.contains("eu-west-1")),
        "the query is resolved per cluster: {sent:?}"
    );

    // In text: the table of what each check measures now.
    let run = world.run(&["audit", "--env", "prod"]).await;
    run.expect_code(1);
    assert!(run.stdout.contains("MEASURED NOW"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("errors") && l.contains("eu-west-1") && l.contains("0.2")),
        "{}",
        run.stdout
    );
}
