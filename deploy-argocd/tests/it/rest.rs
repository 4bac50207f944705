//! The REST backend against the stateful fake Argo CD: the deploy-core conformance suite, the
//! requests one promotion of one Application costs, and the calls the suite does not make.

use deploy_core::port::ArgoCdInventory as _;
use std::collections::BTreeMap;
use std::time::Duration;

use deploy_core::Error;
use deploy_core::model::SyncMode;
use deploy_core::port::{ArgoCd, Health, OverrideValue, SyncRequest, SyncStatus};
use deploy_engine::conformance::argocd::{ArgoCdFixture, finished, seed, wait_for};
use wiremock::Request;

use deploy_argocd::fake::{FakeArgo, client};

const LIMIT: Duration = Duration::from_secs(20);

fn helm(tag: &str) -> OverrideValue {
    OverrideValue::Helm {
        parameter: "image.tag".into(),
        value: tag.into(),
        digests: Default::default(),
    }
}

fn count(requests: &[Request], verb: &str, path_end: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == verb && r.url.path().ends_with(path_end))
        .count()
}

#[tokio::test]
async fn conformance() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    deploy_engine::conformance::argocd::run_all(&port, &fake, "rest")
        .await
        .unwrap();
    let requests = fake.server.received_requests().await.expect("recording");
    assert_eq!(count(&requests, "POST", "/rollback"), 0);
    assert!(count(&requests, "GET", "/stream/applications") > 0);
}

/// One promotion step of one Application: set the override, sync, wait until our operation
/// finished and the app is Healthy. The figure goes to BENCHMARKS.md.
#[tokio::test]
async fn requests_per_application_for_one_sync_and_wait() {
    // A stream that stays open long enough to carry the whole operation, as a real one does.
    let fake = FakeArgo::start_with(8).await;
    // A long reconnect delay keeps the count exact: the cut after the last event is not
    // followed by a reconnect before the test has its answer.
    let mut options = deploy_argocd::rest::RestOptions::fast();
    options.reconnect_delay = Duration::from_secs(30);
    let port = deploy_argocd::fake::client_with(&fake.server, options);
    fake.create_application(&seed("count", "v1")).await;
    let before = fake.server.received_requests().await.unwrap().len();
    port.set_override("count", &helm("v2")).await.unwrap();
    port.sync(
        "count",
        &SyncRequest {
            prune: false,
            operation_id: "op-count".into(),
        },
    )
    .await
    .unwrap();
    let done = wait_for(&port, "count", LIMIT, |a| {
        finished("op-count")(a) && a.health == Health::Healthy
    })
    .await
    .unwrap();
    assert_eq!(done.sync_status, SyncStatus::Synced);
    let requests = fake.server.received_requests().await.unwrap();
    let used: Vec<String> = requests[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        used,
        [
            "GET /api/v1/applications/count",
            "PATCH /api/v1/applications/count",
            "POST /api/v1/applications/count/sync",
            // No GET before the stream: its first event is the current state.
            "GET /api/v1/stream/applications",
        ],
        "requests for one sync and wait"
    );
}

#[tokio::test]
async fn set_override_that_is_already_in_place_writes_nothing() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("same", "v1")).await;
    let app = port.set_override("same", &helm("v1")).await.unwrap();
    assert_eq!(app.helm_parameters["image.tag"], "v1");
    let requests = fake.server.received_requests().await.unwrap();
    assert_eq!(count(&requests, "PATCH", "/same"), 0);
}

#[tokio::test]
async fn application_sets_clusters_and_user() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    let sets = port.application_sets().await.unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].name, "myapp-prod");
    assert_eq!(sets[0].sync_mode, SyncMode::Manual);
    assert_eq!(
        sets[0].ignore_differences[0].json_pointers,
        ["/spec/source/helm/parameters"]
    );
    let clusters = port.clusters().await.unwrap();
    let state: BTreeMap<&str, bool> = clusters
        .iter()
        .map(|c| (c.name.as_str(), c.connected))
        .collect();
    assert_eq!(
        state,
        BTreeMap::from([("eu-west-1", false), ("us-west-2", true)])
    );
    assert_eq!(port.username().await.unwrap(), "ci-bot");
}

#[tokio::test]
async fn watch_ends_with_not_found_for_a_missing_application() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    let got = port.watch("nope").await;
    assert!(
        matches!(&got, Err(e) if e.is_not_found()),
        "watch of a missing app"
    );
}

#[tokio::test]
async fn a_wrong_token_says_how_to_log_in() {
    let fake = FakeArgo::start().await;
    let config = deploy_core::config::ArgoCdConfig {
        server: Some(fake.server.uri()),
        plaintext: false,
        insecure: false,
        namespace: "argocd".into(),
    };
    let port = deploy_argocd::rest::RestArgoCd::with_options(
        &config,
        "wrong".to_owned().into(),
        deploy_argocd::rest::RestOptions::fast(),
    )
    .unwrap();
    let got = port.application_sets().await;
    assert!(
        matches!(&got, Err(Error::Permission { message }) if message.contains("ARGOCD_AUTH_TOKEN") && message.contains("argocd account generate-token")),
        "{got:?}"
    );
    let requests = fake.server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "a 401 is not retried");
}

fn patch_types(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["patchType"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn set_override_right_after_a_read_is_one_guarded_patch() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("reuse", "v1")).await;
    port.application("reuse").await.unwrap();
    let before = fake.server.received_requests().await.unwrap().len();
    let app = port.set_override("reuse", &helm("v2")).await.unwrap();
    assert_eq!(app.helm_parameters["image.tag"], "v2");
    let requests = fake.server.received_requests().await.unwrap();
    let used: Vec<String> = requests[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        used,
        ["PATCH /api/v1/applications/reuse"],
        "no GET before it"
    );
    assert_eq!(patch_types(&requests[before..]), ["json"]);
    assert_eq!(
        app.helm_parameters["replicas"], "2",
        "other parameters are kept"
    );
    assert_eq!(
        fake.object("reuse")["spec"]["source"]["helm"]["parameters"][0],
        serde_json::json!({ "name": "image.tag", "value": "v2" })
    );
}

#[tokio::test]
async fn set_override_after_a_concurrent_change_reads_again_and_keeps_it() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("moved", "v1")).await;
    port.application("moved").await.unwrap();
    // Someone (a person, another tool) changes another parameter after our read.
    fake.edit("moved", |obj| {
        for p in obj["spec"]["source"]["helm"]["parameters"]
            .as_array_mut()
            .unwrap()
        {
            if p["name"] == "replicas" {
                p["value"] = serde_json::json!("5");
            }
        }
    });
    let before = fake.server.received_requests().await.unwrap().len();
    let app = port.set_override("moved", &helm("v2")).await.unwrap();
    assert_eq!(app.helm_parameters["image.tag"], "v2");
    assert_eq!(
        app.helm_parameters["replicas"], "5",
        "the concurrent change is kept"
    );
    let requests = fake.server.received_requests().await.unwrap();
    // The guarded patch is refused (its test fails), then the read and the merge patch.
    assert_eq!(patch_types(&requests[before..]), ["json", "merge"]);
    assert_eq!(count(&requests[before..], "GET", "/moved"), 1);
}

/// The fake's injected faults as the client meets them: a 503 for a number of answers is
/// ridden out by the client's retries, a 401 is a permission error at once (not retried),
/// and clearing it serves the Application again.
#[tokio::test]
async fn injected_faults_answer_as_argo_cd_does() {
    use deploy_argocd::fake::{Lasts, Outage, Requests};

    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("faulty", "v1")).await;

    fake.inject(
        "faulty",
        Requests::Reads,
        Outage::Unavailable,
        Lasts::Answers(2),
    );
    port.application("faulty")
        .await
        .expect("retried past two 503s");
    assert_eq!(fake.fault_answers("faulty"), 2);

    fake.inject(
        "faulty",
        Requests::Reads,
        Outage::Unauthenticated,
        Lasts::UntilCleared,
    );
    let e = port.application("faulty").await.unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e:?}");
    assert_eq!(fake.fault_answers("faulty"), 3, "a 401 is not retried");
    // Reads only: a patch still lands.
    port.set_override("faulty", &helm("v2")).await.unwrap();
    fake.clear("faulty");
    port.application("faulty").await.expect("served again");
}

/// The fake's ApplicationSet controller as upstream's: after each change it puts the
/// template's spec and annotations back, keeping only `preservedFields.annotations` (and its
/// defaults) and the fields `ignoreApplicationDifferences` names.
#[tokio::test]
async fn the_application_set_controller_keeps_only_what_it_is_told_to() {
    use deploy_argocd::fake::{application_set, application_set_without_preserved_fields};
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("owned", "v1")).await;
    fake.own("owned", "myapp-prod");
    let set = application_set_without_preserved_fields();
    fake.put_application_set(set.clone());
    fake.set_controller("myapp-prod", true);
    let owner = port
        .application("owned")
        .await
        .unwrap()
        .owner_application_set;
    assert_eq!(
        owner.as_deref(),
        Some("myapp-prod"),
        "ownerReferences parsed"
    );
    let read = port.application_set("myapp-prod").await.unwrap();
    assert!(read.preserved_annotations.is_empty());

    let marks = BTreeMap::from([
        ("deploy/release".to_owned(), "v2".to_owned()),
        (
            "notified.notifications.argoproj.io".to_owned(),
            "{}".to_owned(),
        ),
    ]);
    port.annotate("owned", &marks).await.unwrap();
    let app = port.application("owned").await.unwrap();
    assert_eq!(
        app.annotations.keys().collect::<Vec<_>>(),
        ["notified.notifications.argoproj.io"],
        "only the controller's default survives"
    );
    // The override is in ignoreApplicationDifferences: it stays.
    let v2 = OverrideValue::Helm {
        parameter: "image.tag".into(),
        value: "v2".into(),
        digests: Default::default(),
    };
    port.set_override("owned", &v2).await.unwrap();
    let app = port.application("owned").await.unwrap();
    assert_eq!(app.helm_parameters["image.tag"], "v2");

    // Without the ignore rule it is reverted; with preservedFields the annotation stays.
    let mut reverting = set.clone();
    reverting["spec"]["ignoreApplicationDifferences"] = serde_json::json!([]);
    fake.put_application_set(reverting);
    let v3 = OverrideValue::Helm {
        parameter: "image.tag".into(),
        value: "v3".into(),
        digests: Default::default(),
    };
    port.set_override("owned", &v3).await.unwrap();
    let app = port.application("owned").await.unwrap();
    assert_eq!(
        app.helm_parameters["image.tag"], "v1",
        "the template's value is back"
    );

    fake.put_application_set(application_set());
    port.annotate("owned", &marks).await.unwrap();
    let app = port.application("owned").await.unwrap();
    assert_eq!(app.annotations["deploy/release"], "v2");
    assert!(fake.reconciles() >= 4, "{}", fake.reconciles());
    let read = port.application_set("myapp-prod").await.unwrap();
    assert!(
        read.preserved_annotations
            .iter()
            .any(|a| a == "deploy/lock")
    );
    assert!(matches!(port.application_set("nope").await, Err(e) if e.is_not_found()));
}

/// A window that closes after a sync was accepted: as the controller's `SyncAppState`, the
/// operation stays Running with "Sync operation blocked by sync window" while the window
/// holds, and goes on when it no longer does.
#[tokio::test]
async fn an_operation_is_held_running_while_a_window_prevents_it() {
    let fake = FakeArgo::start().await;
    let port = client(&fake.server);
    fake.create_application(&seed("held", "v1")).await;
    port.set_override("held", &helm("v2")).await.unwrap();
    port.sync(
        "held",
        &SyncRequest {
            prune: false,
            operation_id: "op-held".into(),
        },
    )
    .await
    .unwrap();
    let now = jiff::Timestamp::now().as_second();
    let start = jiff::Timestamp::from_second(now - now.rem_euclid(60) - 60).unwrap();
    fake.set_sync_windows(
        "default",
        serde_json::json!([{
            "kind": "deny",
            "schedule": start.strftime("%-M %-H %-d %-m *").to_string(),
            "duration": "1h",
            "applications": ["*"],
        }]),
    );
    for _ in 0..5 {
        let app = port.application("held").await.unwrap();
        let op = app.operation_state.expect("an operation");
        assert_eq!(op.phase.to_string(), "Running");
        assert_eq!(op.message, "Sync operation blocked by sync window");
    }
    fake.set_sync_windows("default", serde_json::json!([]));
    let app = wait_for(&port, "held", LIMIT, |a| {
        finished("op-held")(a) && a.health == Health::Healthy
    })
    .await
    .unwrap();
    assert!(
        app.images.iter().all(|i| i.ends_with("/api:v2")),
        "{:?}",
        app.images
    );
}
