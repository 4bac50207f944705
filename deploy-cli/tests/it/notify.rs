//! Notifications of a sandbox promotion against local HTTP servers: the Slack text, the
//! webhook bodies (the run's own events, HMAC-signed), a 500 retried, and dead endpoints
//! (refused, hanging) that change nothing about the outcome and add at most the flush bound.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Run, SECOND, Sandbox, example_config};

const SECRET: &str = "webhook-secret-for-the-test";
const SECRET_VAR: &str = "DEPLOY_IT_WEBHOOK_SECRET";
const DEAD_SLACK_VAR: &str = "DEPLOY_IT_DEAD_SLACK";

/// The flush bound of `deploy_cli::notify::FLUSH`.
const FLUSH: Duration = deploy_cli::notify::FLUSH;

/// The example configuration with `notify` on prod, written next to the sandbox.
pub(crate) fn config_with_notify(dir: &std::path::Path, notify: &str) -> PathBuf {
    let text = std::fs::read_to_string(example_config()).unwrap();
    let text = text.replacen(
        "soak = \"5m\"",
        &format!("soak = \"5m\"\nnotify = {notify}"),
        1,
    );
    assert!(text.contains("notify = "), "the example has a soak");
    let p = dir.join("deploy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A port that accepts connections and never answers.
fn hanging_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    format!("http://127.0.0.1:{port}/hook")
}

/// A port nothing listens on.
fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/services/T0/B0/X")
}

/// Promotes prod in `s` (staging made ready first); the run and how long `promote` took.
fn promote(s: &Sandbox, env: &[(&str, &str)]) -> (Run, Duration) {
    s.wait_staging_healthy(SECOND);
    let mut cmd = s.command(&["--output", "json", "promote", "--env", "prod", "--yes"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let run = s.finish(
        cmd,
        &["promote", "--env", "prod", "--yes"],
        crate::support::DEADLINE,
    );
    (run, t.elapsed())
}

fn lines_of<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == kind)
        .map(|l| &l["data"])
        .collect()
}

/// Where each cluster ended, without timings.
fn states(result: &Value) -> Vec<(String, Value)> {
    result["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["cluster"].as_str().unwrap().to_owned(),
                a["state"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_promotion_notifies_slack_and_a_signed_webhook_and_dead_endpoints_change_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(MockServer::start());
    rt.block_on(async {
        Mock::given(method("POST"))
            .and(path("/slack"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .expect(4)
            .mount(&server)
            .await;
        // The webhook's first request fails: it is retried.
        Mock::given(method("POST"))
            .and(path("/deploy"))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/deploy"))
            .respond_with(ResponseTemplate::new(204))
            .expect(4)
            .mount(&server)
            .await;
    });
    let notify = format!(
        "[{{ slack = \"{uri}/slack\" }}, {{ webhook = \"{uri}/deploy\", secret_env = \"{SECRET_VAR}\" }}, \
         {{ slack_env = \"{DEAD_SLACK_VAR}\" }}, {{ webhook = \"{hanging}\", secret_env = \"{SECRET_VAR}\" }}]",
        uri = server.uri(),
        hanging = hanging_url(),
    );
    let dead_slack = refused_url();
    let configs = tempfile::tempdir().unwrap();
    let notified = Sandbox::with_config(config_with_notify(configs.path(), &notify));
    let baseline = Sandbox::new();
    // The same promotion with and without notifications, side by side.
    let ((run, took), (base, base_took)) = std::thread::scope(|scope| {
        let n = scope.spawn(|| {
            promote(
                &notified,
                &[(SECRET_VAR, SECRET), (DEAD_SLACK_VAR, dead_slack.as_str())],
            )
        });
        let b = scope.spawn(|| promote(&baseline, &[]));
        (n.join().unwrap(), b.join().unwrap())
    });
    base.expect_code(0);
    run.expect_code(0);

    // The outcome is the baseline's.
    let (result, base_result) = (run.result(), base.result());
    assert_eq!(result["outcome"], "succeeded", "{result:#}");
    assert_eq!(result["outcome"], base_result["outcome"]);
    assert_eq!(states(&result), states(&base_result));
    // And so, within the flush bound, is its time.
    assert!(
        took <= base_took + FLUSH + Duration::from_secs(3),
        "with dead endpoints {took:?}, without notifications {base_took:?}"
    );

    // Slack: readable text for the start, each wave, and the end.
    let received = rt.block_on(server.received_requests()).unwrap();
    let slack: Vec<Value> = received
        .iter()
        .filter(|r| r.url.path() == "/slack")
        .map(|r| r.body_json().unwrap())
        .collect();
    let texts: Vec<&str> = slack.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    assert!(
        texts[0].starts_with(&format!("prod: promote {SECOND} in 2 wave(s), by ")),
        "{texts:#?}"
    );
    assert_eq!(
        texts[1],
        format!("prod: wave 1 of 2 done (us-west-2) at {SECOND}")
    );
    assert_eq!(
        texts[2],
        format!("prod: wave 2 of 2 done (us-east-1, eu-west-1) at {SECOND}")
    );
    assert!(
        texts[3].starts_with(&format!("prod: promote {SECOND} succeeded in ")),
        "{texts:#?}"
    );
    let end = slack[3]["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        end.contains(&format!("• eu-west-1 (wave 2): deployed {SECOND}, Healthy")),
        "{end}"
    );

    // The webhook: every body signed; together, after the retried one, the run's events.
    let secret = SecretString::from(SECRET);
    let hooks: Vec<_> = received
        .iter()
        .filter(|r| r.url.path() == "/deploy")
        .collect();
    assert_eq!(hooks.len(), 5, "one 500, then four notices");
    for r in &hooks {
        let sig = r.headers.get(deploy_notify::SIGNATURE_HEADER).unwrap();
        assert!(deploy_notify::verify(
            &secret,
            &r.body,
            sig.to_str().unwrap()
        ));
    }
    assert_eq!(
        hooks[0].body, hooks[1].body,
        "the retry sends the same body"
    );
    let bodies: Vec<Value> = hooks[1..].iter().map(|r| r.body_json().unwrap()).collect();
    let notices: Vec<&Value> = bodies.iter().map(|b| &b["notice"]).collect();
    assert_eq!(notices, ["started", "wave_done", "wave_done", "finished"]);
    let posted: Vec<Value> = bodies
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .collect();
    let lines = run.lines();
    let events: Vec<Value> = lines_of(&lines, "event").into_iter().cloned().collect();
    assert_eq!(posted, events, "the webhook bodies carry the run's events");
    assert_eq!(bodies[3]["outcome"], "succeeded");

    // Every delivery is reported; the dead ones as failures, on stderr too.
    let deliveries = lines_of(&lines, "notification");
    let by = |label: &str| -> Vec<&Value> {
        deliveries
            .iter()
            .copied()
            .filter(|d| d["channel"].as_str().unwrap().starts_with(label))
            .collect()
    };
    assert_eq!(by("slack http").len(), 4);
    assert!(by("slack http").iter().all(|d| d["delivered"] == true));
    let hook = by(&format!("webhook {}/deploy", server.uri()));
    assert_eq!(hook[0]["attempts"], 2, "{hook:#?}");
    let dead = by(&format!("slack ({DEAD_SLACK_VAR})"));
    assert_eq!(dead.len(), 4, "{deliveries:#?}");
    assert!(
        dead.iter()
            .all(|d| d["delivered"] == false && d["attempts"] == 3)
    );
    assert!(
        run.stderr.contains(&format!(
            "to slack ({DEAD_SLACK_VAR}) failed after 3 attempt(s)"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("gave up on ") && run.stderr.contains("the outcome stands"),
        "the hanging endpoint is given up at the bound: {}",
        run.stderr
    );
    // No secret is ever printed.
    for secret in [SECRET, dead_slack.as_str()] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    rt.block_on(server.verify());
}
