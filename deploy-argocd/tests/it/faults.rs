//! Faults: a watch stream cut mid-operation, a stream endpoint that does not work, 500/503/429,
//! malformed and truncated JSON, an answer slower than the timeout, a collision that clears,
//! a retried sync that had landed, and a token that never shows in any output.

use deploy_core::port::ArgoCdInventory as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_argocd::rest::RestOptions;
use deploy_core::Error;
use deploy_core::port::{ArgoCd, Health, OPERATION_INFO_KEY, OverrideValue, SyncRequest};
use deploy_engine::conformance::argocd::{ArgoCdFixture, finished, seed, wait_for};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use deploy_argocd::fake::{FakeArgo, TOKEN, client, client_with};

const LIMIT: Duration = Duration::from_secs(20);

fn request(op: &str) -> SyncRequest {
    SyncRequest {
        prune: true,
        operation_id: op.into(),
    }
}

fn app_json(name: &str) -> serde_json::Value {
    deploy_argocd::fake::application(&seed(name, "v1"), 7, "2026-06-01T00:00:00Z")
}

async fn sync_and_finish(
    port: &dyn ArgoCd,
    name: &str,
    op: &str,
) -> deploy_core::port::Application {
    port.set_override(
        name,
        &OverrideValue::Helm {
            parameter: "image.tag".into(),
            value: "v2".into(),
            digests: Default::default(),
        },
    )
    .await
    .unwrap();
    port.sync(name, &request(op)).await.unwrap();
    wait_for(port, name, LIMIT, |a| {
        finished(op)(a) && a.health != Health::Progressing
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn watch_reconnects_from_the_last_resource_version_when_cut_mid_operation() {
    // Every stream carries one controller step, then the connection is cut.
    let fake = FakeArgo::start_with(1).await;
    let port = client(&fake.server);
    fake.create_application(&seed("cut", "v1")).await;
    let app = sync_and_finish(&port, "cut", "op-cut").await;
    assert_eq!(app.health, Health::Healthy);
    assert_eq!(
        app.images,
        ["111111111111.dkr.ecr.us-west-2.amazonaws.com/api:v2"]
    );
    let streams: Vec<String> = fake
        .server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/v1/stream/applications")
        .map(|r| r.url.query().unwrap_or_default().to_owned())
        .collect();
    assert!(streams.len() >= 2, "reconnected: {streams:?}");
    assert!(
        streams.iter().all(|q| q.contains("name=cut")),
        "{streams:?}"
    );
    // The first connection needs no resourceVersion: its first event is the current state.
    assert!(!streams[0].contains("resourceVersion="), "{streams:?}");
    assert!(
        streams[1..].iter().all(|q| q.contains("resourceVersion=")),
        "every reconnect resumes from the last resourceVersion: {streams:?}"
    );
}

#[tokio::test]
async fn watch_falls_back_to_polling_when_the_stream_does_not_work() {
    let fake = FakeArgo::start().await;
    // A proxy that does not pass the stream.
    Mock::given(method("GET"))
        .and(path("/api/v1/stream/applications"))
        .respond_with(ResponseTemplate::new(502))
        .with_priority(1)
        .expect(1..)
        .mount(&fake.server)
        .await;
    let port = client(&fake.server);
    fake.create_application(&seed("poll", "v1")).await;
    let app = sync_and_finish(&port, "poll", "op-poll").await;
    assert_eq!(app.health, Health::Healthy);
}

#[tokio::test]
async fn watch_stream_with_garbage_lines_recovers() {
    let fake = FakeArgo::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/stream/applications"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("{\"result\":{\"type\":\"MOD", "application/json"),
        )
        .with_priority(1)
        .up_to_n_times(2)
        .expect(2)
        .mount(&fake.server)
        .await;
    let port = client(&fake.server);
    fake.create_application(&seed("garbage", "v1")).await;
    let app = sync_and_finish(&port, "garbage", "op-garbage").await;
    assert_eq!(app.health, Health::Healthy);
}

async fn server_with(template: ResponseTemplate, times: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(template)
        .expect(times)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn internal_error_on_a_read_is_retried_then_transient() {
    // 1 attempt + `RestOptions::fast()`'s 3 retries.
    let server = server_with(
        ResponseTemplate::new(500)
            .set_body_json(json!({"error": "boom", "code": 13, "message": "boom"})),
        4,
    )
    .await;
    let got = client(&server).application("a").await;
    assert!(
        matches!(&got, Err(Error::Transient { message, .. }) if message.contains("boom")),
        "{got:?}"
    );
}

#[tokio::test]
async fn internal_error_on_a_write_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/applications/a/sync"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"error": "boom", "code": 13, "message": "boom"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let request = deploy_core::port::SyncRequest {
        prune: false,
        operation_id: "op".into(),
    };
    let got = client(&server).sync("a", &request).await;
    assert!(matches!(&got, Err(Error::Transient { .. })), "{got:?}");
}

#[tokio::test]
async fn unavailable_is_retried_until_it_clears() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(app_json("a")))
        .expect(1)
        .mount(&server)
        .await;
    let app = client(&server).application("a").await.unwrap();
    assert_eq!(app.name, "a");
}

#[tokio::test]
async fn unavailable_for_good_gives_up_after_the_retries() {
    let server = server_with(ResponseTemplate::new(503), 4).await;
    let got = client_with(&server, RestOptions::fast().with_retries(3))
        .application("a")
        .await;
    assert!(matches!(got, Err(Error::Transient { .. })), "{got:?}");
}

#[tokio::test]
async fn throttling_is_retried_after_the_servers_delay() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"error": "slow down", "code": 8, "message": "slow down"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(app_json("a")))
        .expect(1)
        .mount(&server)
        .await;
    client(&server).application("a").await.unwrap();
}

#[tokio::test]
async fn throttling_that_persists_reports_the_retry_hint() {
    let server = server_with(
        ResponseTemplate::new(429).insert_header("retry-after", "0"),
        2,
    )
    .await;
    let got = client_with(&server, RestOptions::fast().with_retries(1))
        .application("a")
        .await;
    assert!(
        matches!(got, Err(Error::Transient { retry_after: Some(d), .. }) if d == Duration::ZERO),
        "{got:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_invalid_and_not_retried() {
    let server = server_with(
        ResponseTemplate::new(200).set_body_raw("this is not json", "application/json"),
        1,
    )
    .await;
    let got = client(&server).application("a").await;
    assert!(
        matches!(&got, Err(Error::Invalid { message }) if message.contains("malformed")),
        "{got:?}"
    );
}

#[tokio::test]
async fn truncated_json_is_invalid_and_not_retried() {
    let whole = app_json("a").to_string();
    let server = server_with(
        ResponseTemplate::new(200).set_body_raw(&whole[..whole.len() / 2], "application/json"),
        1,
    )
    .await;
    let got = client(&server).application("a").await;
    assert!(
        matches!(&got, Err(Error::Invalid { message }) if message.contains("malformed")),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_retried_then_transient() {
    let server = server_with(
        ResponseTemplate::new(200)
            .set_body_json(app_json("a"))
            .set_delay(Duration::from_secs(3)),
        2,
    )
    .await;
    let options = RestOptions::fast()
        .with_timeout(Duration::from_millis(200))
        .with_retries(1);
    let got = client_with(&server, options).application("a").await;
    assert!(
        matches!(&got, Err(Error::Transient { message, .. }) if message.contains("timed out")),
        "{got:?}"
    );
}

fn collision() -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({
        "error": "another operation is already in progress",
        "code": 9,
        "message": "error setting app operation: rpc error: code = FailedPrecondition desc = another operation is already in progress",
        "details": []
    }))
}

#[tokio::test]
async fn a_collision_that_clears() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/applications/a/sync"))
        .respond_with(collision())
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/applications/a/sync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(app_json("a")))
        .expect(1)
        .mount(&server)
        .await;
    let mut foreign = app_json("a");
    foreign["operation"] = json!({"sync": {}, "initiatedBy": {"username": "alice"}});
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(foreign))
        .expect(1)
        .mount(&server)
        .await;
    let port = client(&server);
    let got = port.sync("a", &request("op-1")).await;
    assert!(matches!(got, Err(Error::Collision { .. })), "{got:?}");
    port.sync("a", &request("op-1")).await.unwrap();
}

#[tokio::test]
async fn a_retried_sync_that_had_landed_is_not_a_collision() {
    let server = MockServer::start().await;
    // The gateway timed out, but Argo CD recorded the operation.
    Mock::given(method("POST"))
        .and(path("/api/v1/applications/a/sync"))
        .respond_with(ResponseTemplate::new(504))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/applications/a/sync"))
        .respond_with(collision())
        .expect(1)
        .mount(&server)
        .await;
    let mut ours = app_json("a");
    ours["operation"] =
        json!({"sync": {"prune": true}, "info": [{"name": OPERATION_INFO_KEY, "value": "op-1"}]});
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ours))
        .expect(1)
        .mount(&server)
        .await;
    client(&server).sync("a", &request("op-1")).await.unwrap();
}

#[tokio::test]
async fn sync_window_is_a_refusal() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/applications/a/sync"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "error": "cannot sync: blocked by sync window", "code": 7,
            "message": "cannot sync: blocked by sync window"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server).sync("a", &request("op")).await;
    assert!(
        matches!(&got, Err(Error::BlockedByWindow { message }) if message.contains("sync window")),
        "{got:?}"
    );
}

/// A writer the test subscriber appends to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_appears_in_logs_errors_or_debug_output() {
    // `log` records (reqwest, hyper) are turned into tracing events as well.
    let _ = tracing_log::LogTracer::init();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not per thread: with a thread-local default, a callsite first hit by another
    // test's thread (with no subscriber) can stay disabled here. Capturing every test's
    // events only widens the net for a leaked token.
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other test sets a global subscriber");

    let fake = FakeArgo::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/clusters"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&fake.server)
        .await;
    let port = client(&fake.server);
    fake.create_application(&seed("secret", "v1")).await;
    let mut outputs = vec![format!("{port:?}"), format!("{port:#?}")];
    sync_and_finish(&port, "secret", "op-secret").await;
    outputs.push(format!("{:?}", port.clusters().await.unwrap()));
    let missing = port.application("missing").await.unwrap_err();
    outputs.push(format!("{missing:?} {missing}"));
    let config = deploy_core::config::ArgoCdConfig {
        server: Some(fake.server.uri()),
        plaintext: false,
        insecure: true,
        namespace: "argocd".into(),
    };
    let secret: secrecy::SecretString = TOKEN.to_owned().into();
    outputs.push(format!("{secret:?}"));
    let bad = deploy_argocd::rest::RestArgoCd::with_options(
        &config,
        format!("{TOKEN}\n\u{7f}x").into(),
        RestOptions::fast(),
    )
    .unwrap_err();
    outputs.push(format!("{bad:?} {bad}"));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("argocd request"), "the capture works: {logs}");
    assert!(logs.contains("retrying"), "retries are logged");
    for text in outputs.iter().chain([&logs]) {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains(&TOKEN[..12]), "token prefix leaked: {text}");
    }
    // The token was sent all the same.
    let requests = fake.server.received_requests().await.unwrap();
    assert!(requests.iter().all(
        |r| r.headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(format!("Bearer {TOKEN}").as_str())
    ));
}
