//! Resource bounds and transport rules of the REST client: answer and stream-line size limits,
//! requests in flight, redirects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_argocd::rest::RestOptions;
use deploy_core::Error;
use deploy_core::port::ArgoCd;
use deploy_engine::conformance::argocd::{ArgoCdFixture, seed};
use futures::StreamExt;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use deploy_argocd::fake::{FakeArgo, client_with};

fn app_json(name: &str) -> serde_json::Value {
    deploy_argocd::fake::application(&seed(name, "v1"), 7, "2026-06-01T00:00:00Z")
}

/// An Application with a `size`-byte annotation.
fn big_app(name: &str, size: usize) -> serde_json::Value {
    let mut app = app_json(name);
    app["metadata"]["annotations"] = json!({ "big": "x".repeat(size) });
    app
}

#[tokio::test]
async fn an_answer_over_the_body_limit_fails_naming_the_path_and_the_limit() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/huge"))
        .respond_with(ResponseTemplate::new(200).set_body_json(big_app("huge", 2 << 20)))
        // Not retried: a second try would be as large.
        .expect(1)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast().with_max_body(1 << 20));
    let got = port.application("huge").await;
    assert!(
        matches!(&got, Err(Error::Invalid { message })
            if message.contains("/api/v1/applications/huge")
                && message.contains("1 MiB")
                && message.contains("max_body")),
        "{got:?}"
    );
}

#[tokio::test]
async fn an_answer_under_the_body_limit_is_read_whole() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/big"))
        .respond_with(ResponseTemplate::new(200).set_body_json(big_app("big", 2 << 20)))
        .expect(1)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast().with_max_body(3 << 20));
    assert_eq!(port.application("big").await.unwrap().name, "big");
}

fn stream_of(events: &[serde_json::Value]) -> ResponseTemplate {
    let body: String = events
        .iter()
        .map(|a| {
            format!(
                "{}\n",
                json!({"result": {"type": "ADDED", "application": a}})
            )
        })
        .collect();
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

#[tokio::test]
async fn a_stream_line_over_the_limit_ends_the_watch_with_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/stream/applications"))
        .respond_with(stream_of(&[big_app("wide", 64 << 10)]))
        .expect(1)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast().with_max_stream_line(32 << 10));
    let got = port.watch("wide").await.map(|_| ());
    assert!(
        matches!(&got, Err(Error::Invalid { message })
            if message.contains("application wide")
                && message.contains("/api/v1/stream/applications")
                && message.contains("32768 bytes")
                && message.contains("max_stream_line")),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_big_event_in_many_chunks_parses() {
    // 4 MiB on one line: the body reaches the client in many TCP reads.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/stream/applications"))
        .respond_with(stream_of(&[big_app("large", 4 << 20)]))
        .expect(1..)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast());
    let mut stream = port.watch("large").await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.name, "large");
}

/// Records when each request arrived; answers after `delay`.
#[derive(Clone)]
struct Arrivals {
    at: Arc<Mutex<Vec<Instant>>>,
    delay: Duration,
}

impl Respond for Arrivals {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.at.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200)
            .set_body_json(app_json("a"))
            .set_delay(self.delay)
    }
}

#[tokio::test]
async fn at_most_max_in_flight_requests_are_in_flight() {
    const LIMIT: usize = 3;
    const CALLERS: usize = 12;
    let delay = Duration::from_millis(200);
    let server = MockServer::start().await;
    let arrivals = Arrivals {
        at: Arc::default(),
        delay,
    };
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(arrivals.clone())
        .expect(CALLERS as u64)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast().with_max_in_flight(LIMIT));
    let calls = (0..CALLERS).map(|_| {
        let port = port.clone();
        async move { port.application("a").await }
    });
    for got in futures::future::join_all(calls).await {
        got.unwrap();
    }
    let mut at = arrivals.at.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), CALLERS);
    // The server answers `delay` after a request arrives, and a caller can only send once
    // an earlier request of the LIMIT in flight has its answer: so the request LIMIT places
    // later arrived at least `delay` after. Without the limit all 12 arrive together.
    let tolerance = Duration::from_millis(10);
    for i in LIMIT..CALLERS {
        let gap = at[i] - at[i - LIMIT];
        assert!(
            gap + tolerance >= delay,
            "request {i} arrived {gap:?} after request {}: more than {LIMIT} in flight",
            i - LIMIT
        );
    }
    // And the limit is used: the first LIMIT went out together.
    assert!(at[LIMIT - 1] - at[0] < delay, "{at:?}");
}

#[tokio::test]
async fn watch_streams_do_not_hold_permits() {
    // A limit of one request in flight and three open watches: unary calls still go through.
    let fake = FakeArgo::start_with(1).await;
    for name in ["w1", "w2", "w3"] {
        fake.create_application(&seed(name, "v1")).await;
    }
    let port = client_with(&fake.server, RestOptions::fast().with_max_in_flight(1));
    let mut watches = Vec::new();
    for name in ["w1", "w2", "w3"] {
        watches.push(port.watch(name).await.unwrap());
    }
    assert_eq!(port.application("w1").await.unwrap().name, "w1");
    assert_eq!(port.application("w3").await.unwrap().name, "w3");
    drop(watches);
}

#[tokio::test]
async fn a_redirect_loop_is_refused_after_a_few_hops_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/loop"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", "/api/v1/applications/loop"),
        )
        // The first request and five redirects; reqwest's default would follow ten, and the
        // client would retry the whole chain.
        .expect(6)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast());
    let got = port.application("loop").await;
    assert!(
        matches!(&got, Err(Error::Invalid { message }) if message.contains("redirects")),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_another_server_is_followed_without_the_token() {
    let target = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/moved/a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(app_json("a")))
        .expect(1)
        .mount(&target)
        .await;
    let origin = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/moved/a", target.uri())),
        )
        .expect(1)
        .mount(&origin)
        .await;
    let port = client_with(&origin, RestOptions::fast());
    port.application("a").await.unwrap();
    let seen = target.received_requests().await.unwrap();
    assert!(
        seen[0].headers.get("authorization").is_none(),
        "{:?}",
        seen[0].headers
    );
}

fn with_rv(mut app: serde_json::Value, rv: &str) -> serde_json::Value {
    app["metadata"]["resourceVersion"] = json!(rv);
    app
}

#[tokio::test]
async fn a_new_watch_never_goes_back_to_an_older_state() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/stream/applications"))
        .respond_with(stream_of(&[with_rv(app_json("a"), "7")]))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    // Then an API server replica whose informer lags: it serves version 5 (upstream would
    // not even send it to a watch resuming from 7).
    Mock::given(method("GET"))
        .and(path("/api/v1/stream/applications"))
        .respond_with(stream_of(&[with_rv(app_json("a"), "5")]))
        .with_priority(2)
        .expect(1..)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/applications/a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(with_rv(app_json("a"), "8")))
        .expect(1..)
        .mount(&server)
        .await;
    let port = client_with(&server, RestOptions::fast());
    let first = port.watch("a").await.unwrap();
    drop(first);
    // The first watch's first state; the second resumes from it and gets the GET's newer one.
    let mut second = port.watch("a").await.unwrap();
    let app = second.next().await.unwrap().unwrap();
    assert_eq!(app.resource_version, "8");
    let streams: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/v1/stream/applications")
        .map(|r| r.url.query().unwrap_or_default().to_owned())
        .collect();
    assert!(!streams[0].contains("resourceVersion"), "{streams:?}");
    assert!(streams[1].contains("resourceVersion=7"), "{streams:?}");
}
