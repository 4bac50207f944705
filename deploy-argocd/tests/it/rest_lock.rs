//! The promotion lock over the REST API ([`ApplicationLock`]) against the stateful fake Argo CD:
//! the deploy-core lock conformance suite, simultaneous acquires, a write landing over ours,
//! expiry on the injected clock, and what goes over the wire (every write is a JSON patch whose
//! first operation tests the resourceVersion; every request is allowed by swagger.json).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploy_argocd::rest::lock::{ApplicationLock, LOCK_ANNOTATION};
use deploy_core::Error;
use deploy_core::port::{Clock, Lock};
use deploy_engine::conformance::argocd::{ArgoCdFixture, seed};
use deploy_engine::conformance::lock::LockFixture;
use jiff::Timestamp;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::contract::{Swagger, check_request, errors};
use deploy_argocd::fake::{FakeArgo, client};

const TTL: Duration = Duration::from_secs(600);

/// A fake with one Application, and a lock on it that reads back at once.
async fn setup(app: &str) -> (FakeArgo, ApplicationLock) {
    let fake = FakeArgo::start().await;
    fake.create_application(&seed(app, "v1")).await;
    let lock = ApplicationLock::new(client(&fake.server), app).with_settle(Duration::ZERO);
    (fake, lock)
}

/// The leases stored on `app`, parsed; empty when the annotation is absent.
fn leases(fake: &FakeArgo, app: &str) -> Vec<Value> {
    let object = fake.object(app);
    object["metadata"]["annotations"][LOCK_ANNOTATION]
        .as_str()
        .map(|text| serde_json::from_str(text).expect("the annotation is JSON"))
        .unwrap_or_default()
}

fn set_leases(object: &mut Value, leases: &[Value]) {
    object["metadata"]["annotations"][LOCK_ANNOTATION] =
        json!(serde_json::to_string(leases).unwrap());
}

/// Makes a lease expire by moving its `expiresAt` into the past, as time passing would.
struct ExpireOnApp<'a> {
    fake: &'a FakeArgo,
    app: String,
}

#[async_trait]
impl LockFixture for ExpireOnApp<'_> {
    async fn expire(&self, key: &str) {
        let mut all = leases(self.fake, &self.app);
        for lease in &mut all {
            if lease["key"] == json!(key) {
                lease["expiresAt"] = json!("2000-01-01T00:00:00Z");
            }
        }
        self.fake.edit(&self.app, |object| set_leases(object, &all));
    }

    async fn delete(&self, key: &str) {
        let rest: Vec<Value> = leases(self.fake, &self.app)
            .into_iter()
            .filter(|lease| lease["key"] != json!(key))
            .collect();
        self.fake
            .edit(&self.app, |object| set_leases(object, &rest));
    }
}

/// The PATCH requests, with their RFC 6902 operations.
fn patches(requests: &[Request]) -> Vec<(Value, Vec<Value>)> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("PATCH body is JSON");
            let ops: Vec<Value> =
                serde_json::from_str(body["patch"].as_str().expect("patch is a string"))
                    .expect("patch is a JSON array");
            (body, ops)
        })
        .collect()
}

/// Every write is a JSON patch that tests the resourceVersion first and then touches only
/// the lock annotation; nothing else writes.
fn assert_guarded_writes(requests: &[Request]) -> usize {
    for r in requests {
        assert!(
            matches!(r.method.as_str(), "GET" | "PATCH"),
            "unexpected {} {}",
            r.method,
            r.url.path()
        );
    }
    let patches = patches(requests);
    for (body, ops) in &patches {
        assert_eq!(body["patchType"], "json", "{body}");
        let first = &ops[0];
        assert_eq!(first["op"], "test", "first operation of {body}");
        assert_eq!(first["path"], "/metadata/resourceVersion", "{body}");
        assert!(first["value"].is_string(), "{body}");
        assert!(ops.len() >= 2, "a patch that only tests: {body}");
        for op in &ops[1..] {
            let path = op["path"].as_str().unwrap();
            assert!(
                path == "/metadata/annotations/deploy~1lock"
                    || (path == "/metadata/annotations" && op["op"] == "add"),
                "operation outside the lock annotation: {op}"
            );
        }
    }
    patches.len()
}

#[tokio::test]
async fn conformance() {
    let (fake, lock) = setup("lock-conf").await;
    let fixture = ExpireOnApp {
        fake: &fake,
        app: "lock-conf".into(),
    };
    deploy_engine::conformance::lock::run_all(&lock, &fixture, "rest-lock")
        .await
        .unwrap();
    // Every lease was released (the crashed one taken over, then released).
    assert_eq!(leases(&fake, "lock-conf"), Vec::<Value>::new());
    let requests = fake.server.received_requests().await.unwrap();
    assert!(assert_guarded_writes(&requests) >= 6);
}

#[tokio::test]
async fn keys_are_independent_locks_in_one_annotation() {
    let (fake, lock) = setup("lock-keys").await;
    let a = lock.acquire("deploy-a", "alice", TTL).await.unwrap();
    let b = lock.acquire("deploy-b", "bob", TTL).await.unwrap();
    let stored = leases(&fake, "lock-keys");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["key"], "deploy-a");
    assert_eq!(stored[0]["holder"], "alice");
    assert_eq!(stored[0]["expiresAt"], json!(a.expires_at.to_string()));
    assert!(stored[0]["acquiredAt"].is_string());
    assert_eq!(stored[1]["holder"], "bob");
    lock.release(&a).await.unwrap();
    assert_eq!(leases(&fake, "lock-keys").len(), 1);
    lock.release(&b).await.unwrap();
    // The last release removes the annotation; the other annotations stay.
    let object = fake.object("lock-keys");
    assert!(object["metadata"]["annotations"][LOCK_ANNOTATION].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_four_simultaneous_acquires_exactly_one_wins() {
    let (fake, lock) = setup("lock-race").await;
    for round in 0..5 {
        let key = format!("deploy-race-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let lock = lock.clone();
                let barrier = Arc::clone(&barrier);
                let key = key.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let holder = format!("run-{round}-{i}");
                    (holder.clone(), lock.acquire(&key, &holder, TTL).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut refused = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (holder, Ok(lease)) => {
                    assert_eq!(lease.holder, holder);
                    winners.push(lease);
                }
                (_, Err(Error::LockHeld { key: k, holder, .. })) => {
                    assert_eq!(k, key);
                    refused.push(holder);
                }
                (holder, Err(e)) => panic!("{holder}: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = &winners[0];
        assert_eq!(refused, vec![winner.holder.clone(); 3], "round {round}");
        let stored = leases(&fake, "lock-race");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0]["holder"], json!(winner.holder));
        lock.release(winner).await.unwrap();
    }
    let requests = fake.server.received_requests().await.unwrap();
    assert_guarded_writes(&requests);
}

#[tokio::test]
async fn a_write_landing_over_ours_is_detected_on_read_back() {
    let (fake, lock) = setup("lock-clobber").await;
    // Another run's PATCH, processed by Argo CD at the same moment, lands just after ours.
    let bob = json!({"key": "deploy-x", "holder": "bob", "expiresAt": "2999-01-01T00:00:00Z",
                     "acquiredAt": "2026-01-01T00:00:00Z"});
    let theirs = bob.clone();
    fake.edit_after_next_patch("lock-clobber", move |object| {
        set_leases(object, &[theirs]);
    });
    let got = lock.acquire("deploy-x", "alice", TTL).await;
    assert!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder == "bob"),
        "{got:?}"
    );
    assert_eq!(leases(&fake, "lock-clobber"), vec![bob]);

    // A stale write of someone else that drops the annotation: we take the lock again.
    fake.edit("lock-clobber", |object| {
        object["metadata"]["annotations"] = json!({});
    });
    fake.edit_after_next_patch("lock-clobber", |object| {
        object["metadata"]["annotations"] = json!({ "team": "platform" });
    });
    let lease = lock.acquire("deploy-x", "alice", TTL).await.unwrap();
    let stored = leases(&fake, "lock-clobber");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["holder"], "alice");
    assert_eq!(stored[0]["expiresAt"], json!(lease.expires_at.to_string()));
    assert_eq!(
        fake.object("lock-clobber")["metadata"]["annotations"]["team"],
        "platform"
    );
}

#[tokio::test]
async fn a_conflict_is_read_again_and_retried() {
    let (fake, lock) = setup("lock-409").await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/api/v1/applications/lock-409$"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error": "the object has been modified", "code": 10,
            "message": "Operation cannot be fulfilled on applications.argoproj.io \"lock-409\": the object has been modified; please apply your changes to the latest version and try again",
        })))
        .with_priority(1)
        .up_to_n_times(1)
        .expect(1)
        .mount(&fake.server)
        .await;
    let lease = lock.acquire("deploy-y", "alice", TTL).await.unwrap();
    assert_eq!(leases(&fake, "lock-409")[0]["holder"], "alice");
    lock.release(&lease).await.unwrap();
    let requests = fake.server.received_requests().await.unwrap();
    assert_eq!(
        patches(&requests).len(),
        3,
        "409, then acquire, then release"
    );
}

#[tokio::test]
async fn a_stale_read_never_overwrites() {
    let (fake, lock) = setup("lock-stale").await;
    let alice = lock.acquire("deploy-z", "alice", TTL).await.unwrap();
    // Replay alice's acquire PATCH (its resourceVersion is now stale) as a raw request.
    let requests = fake.server.received_requests().await.unwrap();
    let (body, _) = patches(&requests).remove(0);
    fake.edit("lock-stale", |object| {
        set_leases(
            object,
            &[
                json!({"key": "deploy-z", "holder": "carol", "expiresAt": "2999-01-01T00:00:00Z",
                     "acquiredAt": "2026-01-01T00:00:00Z"}),
            ],
        );
    });
    let answer = reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/applications/lock-stale",
            fake.server.uri()
        ))
        .bearer_auth(deploy_argocd::fake::TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 500);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["code"], 2);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("testing value /metadata/resourceVersion failed"),
        "{error}"
    );
    assert_eq!(leases(&fake, "lock-stale")[0]["holder"], "carol");
    // Alice lost it: renew says so, release leaves carol's lease alone.
    let got = lock.renew(&alice, TTL).await;
    assert!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder == "carol"),
        "{got:?}"
    );
    lock.release(&alice).await.unwrap();
    assert_eq!(leases(&fake, "lock-stale")[0]["holder"], "carol");
}

/// A clock the test moves by hand.
#[derive(Debug)]
struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now = now
            .checked_add(jiff::SignedDuration::try_from(by).unwrap())
            .unwrap();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn expiry_follows_the_injected_clock() {
    let (fake, lock) = setup("lock-clock").await;
    let t0: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let lock = lock.with_clock(clock.clone());
    let ttl = Duration::from_secs(60);
    let alice = lock.acquire("deploy-t", "alice", ttl).await.unwrap();
    assert_eq!(
        alice.expires_at,
        "2026-05-01T12:01:00Z".parse::<Timestamp>().unwrap()
    );
    let stored = &leases(&fake, "lock-clock")[0];
    assert_eq!(stored["expiresAt"], "2026-05-01T12:01:00Z");
    assert_eq!(stored["acquiredAt"], "2026-05-01T12:00:00Z");

    clock.advance(Duration::from_secs(30));
    let got = lock.acquire("deploy-t", "bob", ttl).await;
    assert!(
        matches!(&got, Err(Error::LockHeld { holder, expires_at, .. })
            if holder == "alice" && expires_at == "2026-05-01T12:01:00Z"),
        "{got:?}"
    );
    // The holder acquiring again refreshes its lease and keeps acquiredAt.
    let alice = lock.acquire("deploy-t", "alice", ttl).await.unwrap();
    assert_eq!(
        alice.expires_at,
        "2026-05-01T12:01:30Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        leases(&fake, "lock-clock")[0]["acquiredAt"],
        "2026-05-01T12:00:00Z"
    );

    clock.advance(Duration::from_secs(60));
    let bob = lock.acquire("deploy-t", "bob", ttl).await.unwrap();
    assert_eq!(
        leases(&fake, "lock-clock")[0]["acquiredAt"],
        "2026-05-01T12:01:30Z"
    );
    let got = lock.renew(&alice, ttl).await;
    assert!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder == "bob"),
        "{got:?}"
    );
    lock.release(&alice).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let bob = lock.renew(&bob, ttl).await.unwrap();
    assert_eq!(
        bob.expires_at,
        "2026-05-01T12:02:40Z".parse::<Timestamp>().unwrap()
    );
    lock.release(&bob).await.unwrap();
    assert!(leases(&fake, "lock-clock").is_empty());
}

#[tokio::test]
async fn a_hand_edited_annotation_is_reported_not_overwritten() {
    let (fake, lock) = setup("lock-bad").await;
    fake.edit("lock-bad", |object| {
        object["metadata"]["annotations"] = json!({ LOCK_ANNOTATION: "locked by ops" });
    });
    let got = lock.acquire("deploy-b", "alice", TTL).await;
    assert!(
        matches!(&got, Err(Error::Invalid { message })
            if message.contains("argocd app patch lock-bad --type json")
                && message.contains("deploy~1lock")),
        "{got:?}"
    );
    assert_eq!(
        fake.object("lock-bad")["metadata"]["annotations"][LOCK_ANNOTATION],
        "locked by ops"
    );
    let requests = fake.server.received_requests().await.unwrap();
    assert_eq!(patches(&requests).len(), 0);
}

#[tokio::test]
async fn a_missing_application_is_not_found() {
    let (_fake, lock) = setup("lock-present").await;
    let other = ApplicationLock::new(client(&_fake.server), "lock-absent");
    let got = other.acquire("deploy-n", "alice", TTL).await;
    assert!(matches!(got, Err(Error::NotFound { .. })), "{got:?}");
    assert_eq!(lock.application(), "lock-present");
}

/// The contract with upstream: the requests the lock sends are allowed by swagger.json and
/// the Applications it leaves behind are still valid Applications.
#[tokio::test]
async fn every_request_matches_swagger() {
    let swagger = Swagger::load();
    let (fake, lock) = setup("lock-contract").await;
    let fixture = ExpireOnApp {
        fake: &fake,
        app: "lock-contract".into(),
    };
    deploy_engine::conformance::lock::run_all(&lock, &fixture, "contract")
        .await
        .unwrap();
    // Leave a lease behind so the served object carries the annotation.
    lock.acquire("deploy-kept", "alice", TTL).await.unwrap();
    let requests = fake.server.received_requests().await.unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for request in &requests {
        let verb = request.method.as_str();
        let path = request.url.path();
        if verb != "PATCH" {
            kinds.insert(check_request(&swagger, request).unwrap());
            continue;
        }
        let (template, op) = swagger.operation(verb, path).expect("PATCH is in swagger");
        assert_eq!(template, "/api/v1/applications/{name}");
        assert_eq!(op["operationId"], "ApplicationService_Patch");
        assert!(request.url.query().is_none());
        let param = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .unwrap();
        assert_eq!(
            param["schema"]["$ref"],
            "#/definitions/applicationApplicationPatchRequest"
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let found = errors(&swagger.validator(&param["schema"]), &body);
        assert!(found.is_empty(), "PATCH body {body}: {found:?}");
        assert_eq!(body["name"], "lock-contract");
        // The patch itself: an RFC 6902 operation list.
        let ops: Vec<json_patch::PatchOperation> =
            serde_json::from_str(body["patch"].as_str().unwrap()).expect("RFC 6902 patch");
        assert!(matches!(&ops[0], json_patch::PatchOperation::Test(_)));
        kinds.insert(format!("{verb} {template}"));
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "GET /api/v1/applications/{name}",
            "PATCH /api/v1/applications/{name}"
        ]
    );
    let object = fake.object("lock-contract");
    assert_eq!(leases(&fake, "lock-contract")[0]["holder"], "alice");
    let found = errors(&swagger.definition("v1alpha1Application"), &object);
    assert!(found.is_empty(), "Application vs swagger: {found:#?}");
}
