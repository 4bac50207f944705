//! The notification adapter against a local HTTP server (wiremock): the Slack payload, the
//! webhook body and its signature, retries, final answers, and dead endpoints that cost at
//! most the flush bound.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_core::model::{Digest, Release, Tag};
use deploy_core::notify::{Announcer, Moment, Notice};
use deploy_core::rollout::event::Event;
use deploy_core::trail::{Actor, RunKind};
use deploy_notify::{
    Channel, Delivery, Dispatcher, NOTICE_HEADER, Retry, SIGNATURE_HEADER, deliver, verify,
};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "it's a secret";

fn started() -> Notice {
    let mut a = Announcer::new(
        RunKind::Promote,
        Actor {
            os_user: "alice".into(),
            argocd_user: None,
        },
    );
    let e = Event::Started {
        run_id: "r1".into(),
        environment: "prod".into(),
        release: Release {
            tag: Tag::new("1b2c3d4e5f60").unwrap(),
            digests: BTreeMap::from([(
                "api".into(),
                Digest::new(format!("sha256:{}", "ab".repeat(32))).unwrap(),
            )]),
        },
        waves: vec![vec!["us-west-2".into()]],
    };
    a.observe(&e, jiff::Timestamp::UNIX_EPOCH).remove(0)
}

fn fast() -> Retry {
    Retry {
        attempts: 3,
        first_pause: Duration::from_millis(20),
        max_pause: Duration::from_millis(50),
        request_timeout: Duration::from_millis(300),
    }
}

fn slack(server: &MockServer) -> Channel {
    Channel::slack(
        "slack (TEST)",
        SecretString::from(format!("{}/services/T0/B0/X", server.uri())),
    )
}

fn webhook(server: &MockServer) -> Channel {
    Channel::webhook(
        "webhook",
        format!("{}/deploy", server.uri()),
        SecretString::from(SECRET),
    )
}

/// A port nothing listens on.
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/hook")
}

#[tokio::test]
async fn slack_gets_the_readable_text_and_blocks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T0/B0/X"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let n = started();
    let d = deliver(&reqwest_client(), &slack(&server), &n, &fast()).await;
    assert!(d.delivered, "{d:?}");
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        body["text"],
        "prod: promote 1b2c3d4e5f60 in 1 wave(s), by alice"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    assert!(
        body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("waves: us-west-2"),
        "{body:#}"
    );
    // Slack bodies are not signed.
    let req = &server.received_requests().await.unwrap()[0];
    assert!(req.headers.get(SIGNATURE_HEADER).is_none());
}

#[tokio::test]
async fn the_webhook_body_is_the_events_signed_with_hmac_sha256() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/deploy"))
        .and(header(NOTICE_HEADER, "started"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let n = started();
    let d = deliver(&reqwest_client(), &webhook(&server), &n, &fast()).await;
    assert!(d.delivered, "{d:?}");
    let req: Request = server.received_requests().await.unwrap().remove(0);
    let body: Value = req.body_json().unwrap();
    assert_eq!(body, n.webhook);
    assert_eq!(body["events"][0]["event"], "started");
    assert_eq!(body["events"][0]["release"]["tag"], "1b2c3d4e5f60");

    // The receiver's check, done independently of the adapter: HMAC-SHA256 of the raw body.
    let sig = req.headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&req.body);
    let want = format!("sha256={}", hex(&mac.finalize().into_bytes()));
    assert_eq!(sig, want);
    let secret = SecretString::from(SECRET);
    assert!(verify(&secret, &req.body, sig));
    let mut tampered = req.body.clone();
    tampered[0] ^= 1;
    assert!(!verify(&secret, &tampered, sig));
    assert!(!verify(&SecretString::from("other"), &req.body, sig));
    assert!(!verify(&secret, &req.body, "sha1=00"));
}

#[tokio::test]
async fn a_500_is_retried_until_a_200() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let d = deliver(&reqwest_client(), &webhook(&server), &started(), &fast()).await;
    assert_eq!((d.delivered, d.attempts, d.error), (true, 2, None));
}

#[tokio::test]
async fn a_404_is_final_and_a_503_gives_up_after_the_last_attempt() {
    let server = MockServer::start().await;
    Mock::given(path("/gone/services/T0/B0/X"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/deploy"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let gone = Channel::slack(
        "slack",
        SecretString::from(format!("{}/gone/services/T0/B0/X", server.uri())),
    );
    let d = deliver(&reqwest_client(), &gone, &started(), &fast()).await;
    assert_eq!((d.delivered, d.attempts), (false, 1));
    assert_eq!(
        d.error.as_deref(),
        Some("the endpoint answered 404 Not Found")
    );
    let d = deliver(&reqwest_client(), &webhook(&server), &started(), &fast()).await;
    assert_eq!((d.delivered, d.attempts), (false, 3));
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported_without_the_secret_url() {
    let url = refused_url();
    let ch = Channel::slack(
        "slack (DEPLOY_SLACK_WEBHOOK)",
        SecretString::from(url.clone()),
    );
    let d = deliver(&reqwest_client(), &ch, &started(), &fast()).await;
    assert_eq!((d.delivered, d.attempts), (false, 3), "{d:?}");
    let error = d.error.unwrap();
    assert!(!error.contains("127.0.0.1"), "the URL is a secret: {error}");
    assert!(!error.is_empty());
}

/// A dispatcher whose reports are collected.
fn dispatcher(channels: Vec<Channel>, retry: Retry) -> (Dispatcher, Arc<Mutex<Vec<Delivery>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let d = Dispatcher::start(channels, retry, move |d| sink.lock().unwrap().push(d));
    (d, seen)
}

#[tokio::test]
async fn a_hanging_endpoint_never_blocks_send_and_costs_at_most_the_flush_bound() {
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&hanging)
        .await;
    let good = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(20)
        .mount(&good)
        .await;
    let retry = Retry {
        request_timeout: Duration::from_secs(30),
        ..fast()
    };
    let (d, seen) = dispatcher(vec![webhook(&hanging), slack(&good)], retry);
    let t = Instant::now();
    for _ in 0..20 {
        d.send(started());
    }
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "send queues, it does not wait: {:?}",
        t.elapsed()
    );
    let bound = Duration::from_millis(1500);
    let t = Instant::now();
    let flushed = d.flush(bound).await;
    let took = t.elapsed();
    assert!(
        took >= bound && took < bound + Duration::from_millis(500),
        "{took:?}"
    );
    // The good channel delivered everything; the hanging one nothing, and is given up.
    assert_eq!(flushed.abandoned, 20);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20, "{seen:?}");
    assert!(
        seen.iter()
            .all(|d| d.delivered && d.channel == "slack (TEST)")
    );
}

#[tokio::test]
async fn notices_reach_each_channel_in_order_and_flush_returns_once_all_are_done() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&server)
        .await;
    let refused = Channel::webhook("dead webhook", refused_url(), SecretString::from("s"));
    let (d, seen) = dispatcher(vec![webhook(&server), refused], fast());
    let mut moments = Vec::new();
    for (i, m) in [Moment::Started, Moment::WaveDone, Moment::Finished]
        .into_iter()
        .enumerate()
    {
        let mut n = started();
        n.moment = m;
        n.webhook["seq"] = i.into();
        moments.push(m);
        d.send(n);
    }
    let flushed = d.flush(Duration::from_secs(10)).await;
    assert_eq!(flushed.abandoned, 0);
    let seqs: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_json::<Value>().unwrap()["seq"].clone())
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
    let seen = seen.lock().unwrap();
    let dead: Vec<(Moment, u32, bool)> = seen
        .iter()
        .filter(|d| d.channel == "dead webhook")
        .map(|d| (d.notice, d.attempts, d.delivered))
        .collect();
    assert_eq!(
        dead,
        moments.iter().map(|m| (*m, 3, false)).collect::<Vec<_>>()
    );
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
