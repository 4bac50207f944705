//! The Kubernetes backend (`KubeArgoCd`, `LeaseLock`) against an in-process fake API server
//! with a simulated Argo CD controller: the deploy-core conformance suites, plus what only
//! this backend does (optimistic concurrency, the operation as Argo CD writes it, watch
//! reconnects, cluster Secrets, objects valid against the upstream CRD schema).

mod controller;
mod fake;
mod windows;

use deploy_core::port::ArgoCdInventory as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deploy_argocd::kube::{KubeArgoCd, LeaseLock};
use deploy_core::Error;
use deploy_core::port::{ArgoCd, Health, Lock, OPERATION_INFO_KEY, SyncRequest};
use deploy_engine::conformance::argocd::{ArgoCdFixture, Script, finished, seed, wait_for};
use futures::StreamExt;
use serde_json::{Value, json};

use controller::{APPS, Controller, LEASES, LeaseFixture};
use fake::FakeApiServer;

const NS: &str = "argocd";
const LIMIT: Duration = Duration::from_secs(20);

fn setup() -> (Arc<FakeApiServer>, Controller, KubeArgoCd) {
    let api = FakeApiServer::new();
    let controller = Controller::start(Arc::clone(&api), NS);
    let port = KubeArgoCd::new(api.client(NS), NS).with_username("ci-bot");
    (api, controller, port)
}

fn request(op: &str) -> SyncRequest {
    SyncRequest {
        prune: true,
        operation_id: op.into(),
    }
}

fn application_schema() -> jsonschema::Validator {
    crate::render::crd_validator("application-crd.yaml")
}

fn assert_valid(validator: &jsonschema::Validator, object: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "invalid against the CRD schema: {errors:#?}\n{object:#}"
    );
}

#[tokio::test]
async fn argocd_conformance() {
    let (_api, controller, port) = setup();
    deploy_engine::conformance::argocd::run_all(&port, &controller, "kube")
        .await
        .unwrap();
}

#[tokio::test]
async fn lock_conformance() {
    let api = FakeApiServer::new();
    let lock = LeaseLock::new(api.client(NS), NS);
    let fixture = LeaseFixture {
        api: Arc::clone(&api),
        namespace: NS.into(),
    };
    deploy_engine::conformance::lock::run_all(&lock, &fixture, "kube")
        .await
        .unwrap();
}

#[tokio::test]
async fn sync_writes_the_operation_as_argocd_does() {
    let (api, controller, port) = setup();
    let schema = application_schema();
    controller.create_application(&seed("op-shape", "v1")).await;
    controller.script("op-shape", Script::Hang).await;
    port.sync("op-shape", &request("op-1")).await.unwrap();

    let stored = api.get(APPS, NS, "op-shape").unwrap();
    assert_eq!(
        stored["operation"],
        json!({
            "sync": { "prune": true },
            "initiatedBy": { "username": "ci-bot" },
            "info": [{ "name": OPERATION_INFO_KEY, "value": "op-1" }],
        })
    );
    assert_valid(&schema, &stored);

    // A second sync while ours runs is a collision and changes nothing.
    let got = port.sync("op-shape", &request("op-2")).await;
    assert!(matches!(got, Err(Error::Collision { .. })), "{got:?}");
    assert_eq!(
        api.get(APPS, NS, "op-shape").unwrap()["operation"],
        stored["operation"]
    );

    port.terminate("op-shape").await.unwrap();
    let phase = api.get(APPS, NS, "op-shape").unwrap()["status"]["operationState"]["phase"].clone();
    assert!(
        phase == json!("Terminating") || phase == json!("Failed"),
        "{phase}"
    );
    assert_valid(&schema, &api.get(APPS, NS, "op-shape").unwrap());
    let done = wait_for(&port, "op-shape", LIMIT, finished("op-1"))
        .await
        .unwrap();
    assert_eq!(
        done.operation_state.unwrap().message,
        "Operation terminated"
    );

    // Nothing runs any more: terminate is a no-op, not an error.
    port.terminate("op-shape").await.unwrap();
}

#[tokio::test]
async fn writes_retry_after_a_conflict() {
    let (api, controller, port) = setup();
    controller.create_application(&seed("conflict", "v1")).await;
    controller.script("conflict", Script::Hang).await;
    api.inject_conflicts(2);
    port.sync("conflict", &request("op-c")).await.unwrap();
    let puts = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/applications/conflict"))
        .count();
    assert_eq!(
        puts,
        3,
        "two conflicts, then the write: {:#?}",
        api.requests()
    );
    let app = port.application("conflict").await.unwrap();
    assert!(app.operation_pending);
}

#[tokio::test]
async fn set_override_is_conditional_on_the_version_read() {
    let (api, controller, port) = setup();
    controller.create_application(&seed("cond", "v1")).await;
    port.set_override(
        "cond",
        &deploy_core::port::OverrideValue::Helm {
            parameter: "image.tag".into(),
            value: "v2".into(),
            digests: Default::default(),
        },
    )
    .await
    .unwrap();
    let patches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH "))
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let stored = api.get(APPS, NS, "cond").unwrap();
    assert_eq!(
        stored["spec"]["source"]["helm"]["parameters"],
        json!([{ "name": "image.tag", "value": "v2" }, { "name": "replicas", "value": "2" }])
    );
    assert_valid(&application_schema(), &stored);
}

#[tokio::test]
async fn watch_reconnects_after_the_stream_is_cut() {
    let (api, controller, port) = setup();
    controller.create_application(&seed("cut", "v1")).await;
    let mut stream = port.watch("cut").await.unwrap();
    let mut next = async || {
        tokio::time::timeout(LIMIT, stream.next())
            .await
            .expect("no item in time")
            .expect("stream ended")
            .expect("stream error")
    };
    let annotate = async |v: &str| {
        port.annotate("cut", &BTreeMap::from([("n".into(), v.into())]))
            .await
            .unwrap();
    };
    let watches = || {
        api.requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
    };
    assert_eq!(next().await.health, Health::Healthy);
    // The first change may come from the watcher's initial list; the second from its watch.
    annotate("1").await;
    assert_eq!(next().await.annotations["n"], "1");
    annotate("2").await;
    assert_eq!(next().await.annotations["n"], "2");
    assert_eq!(watches(), 1);

    // Cut the stream (a load balancer's idle timeout); a change made meanwhile still arrives.
    api.cut_watches();
    annotate("3").await;
    assert_eq!(next().await.annotations["n"], "3");
    assert_eq!(watches(), 2, "{:#?}", api.requests());

    // And an operation observed through repeated cuts finishes.
    port.sync("cut", &request("op-cut")).await.unwrap();
    loop {
        api.cut_watches();
        if finished("op-cut")(&next().await) {
            break;
        }
    }
}

#[tokio::test]
async fn watch_of_a_missing_application_is_not_found() {
    let (_api, _controller, port) = setup();
    let got = port.watch("nope").await.map(|_| ());
    assert!(matches!(&got, Err(e) if e.is_not_found()), "{got:?}");
}

#[tokio::test]
async fn annotate_merges_without_touching_the_rest() {
    let (api, controller, port) = setup();
    controller.create_application(&seed("ann", "v1")).await;
    let before = api.get(APPS, NS, "ann").unwrap();
    port.annotate(
        "ann",
        &BTreeMap::from([("deploy/release".into(), "v2".into())]),
    )
    .await
    .unwrap();
    let after = api.get(APPS, NS, "ann").unwrap();
    assert_eq!(after["metadata"]["annotations"]["deploy/release"], "v2");
    assert_eq!(after["spec"], before["spec"]);
    let got = port.annotate("missing", &BTreeMap::new()).await;
    assert!(matches!(&got, Err(e) if e.is_not_found()), "{got:?}");
}

#[tokio::test]
async fn clusters_come_from_argocd_cluster_secrets() {
    let (api, _controller, port) = setup();
    let secret = |name: &str, server: &str, kind: &str| {
        use k8s_openapi::ByteString;
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: ::kube::api::ObjectMeta {
                name: Some(format!("cluster-{name}")),
                labels: Some(BTreeMap::from([(
                    "argocd.argoproj.io/secret-type".into(),
                    kind.into(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                ("name".into(), ByteString(name.into())),
                ("server".into(), ByteString(server.into())),
                (
                    "config".into(),
                    ByteString(br#"{"tlsClientConfig":{}}"#.to_vec()),
                ),
            ])),
            ..Default::default()
        };
        serde_json::to_value(secret).unwrap()
    };
    api.put(
        "v1/secrets",
        NS,
        secret(
            "us-west-2",
            "https://abc.gr7.us-west-2.eks.amazonaws.com",
            "cluster",
        ),
    );
    api.put(
        "v1/secrets",
        NS,
        secret(
            "eu-west-1",
            "https://def.eu-west-1.eks.amazonaws.com",
            "cluster",
        ),
    );
    api.put(
        "v1/secrets",
        NS,
        secret("repo", "https://git.example.com", "repository"),
    );
    let clusters = port.clusters().await.unwrap();
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["eu-west-1", "in-cluster", "us-west-2"]);
    assert_eq!(
        clusters[0].server,
        "https://def.eu-west-1.eks.amazonaws.com"
    );
    assert!(clusters.iter().all(|c| c.connected && c.message.is_some()));
}

#[tokio::test]
async fn application_sets_read_back_what_render_writes() {
    let (api, _controller, port) = setup();
    let config = crate::render::example_config();
    for env in config.environments.values() {
        let source = deploy_argocd::render::SourceTemplate::placeholder(&config);
        let set = deploy_argocd::render::application_set_value(&config, env, &source);
        api.put("argoproj.io/v1alpha1/applicationsets", NS, set);
    }
    let sets = port.application_sets().await.unwrap();
    assert_eq!(sets.len(), 3);
    for set in &sets {
        let env = config
            .environments
            .values()
            .find(|e| config.application_set_name(e).as_deref() == Some(set.name.as_str()))
            .expect("named after an environment");
        assert_eq!(set.sync_mode, env.sync, "{}", set.name);
        assert_eq!(set.ignore_differences.len(), 1);
        assert_eq!(
            set.ignore_differences[0].json_pointers,
            ["/spec/source/helm/parameters"]
        );
        assert!(!set.resource_version.is_empty());
    }
}

#[tokio::test]
async fn lease_has_one_winner_under_a_race() {
    let api = FakeApiServer::new();
    let locks: Vec<LeaseLock> = (0..4).map(|_| LeaseLock::new(api.client(NS), NS)).collect();
    let ttl = Duration::from_secs(60);
    let attempts = locks.iter().enumerate().map(|(i, l)| async move {
        l.acquire("deploy-myapp-prod", &format!("run-{i}"), ttl)
            .await
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(r, Error::LockHeld { holder, .. } if *holder == winners[0].holder),
            "{r:?}"
        );
    }
    let stored = api.get(LEASES, NS, "deploy-myapp-prod").unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], json!(winners[0].holder));
    assert_eq!(stored["spec"]["leaseDurationSeconds"], json!(60));
    assert!(stored["spec"]["renewTime"].is_string());
}

#[tokio::test]
async fn lease_release_keeps_the_object_and_counts_transitions() {
    let api = FakeApiServer::new();
    let lock = LeaseLock::new(api.client(NS), NS);
    let ttl = Duration::from_secs(30);
    let a = lock.acquire("k", "alice", ttl).await.unwrap();
    lock.release(&a).await.unwrap();
    let stored = api.get(LEASES, NS, "k").unwrap();
    assert!(stored["spec"].get("holderIdentity").is_none(), "{stored:#}");
    let b = lock.acquire("k", "bob", ttl).await.unwrap();
    let stored = api.get(LEASES, NS, "k").unwrap();
    assert_eq!(stored["spec"]["leaseTransitions"], json!(1));
    // Renewing after a conflict re-reads and still succeeds.
    api.inject_conflicts(1);
    let renewed = lock.renew(&b, ttl).await.unwrap();
    assert!(renewed.expires_at >= b.expires_at);
}

#[tokio::test]
async fn requests_per_application_for_one_sync_and_wait() {
    let (api, controller, port) = setup();
    controller.create_application(&seed("count", "v1")).await;
    let before = api.requests().len();
    port.set_override(
        "count",
        &deploy_core::port::OverrideValue::Helm {
            parameter: "image.tag".into(),
            value: "v2".into(),
            digests: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(api.requests().len() - before, 2, "GET + PATCH");
    // Let the controller notice the change first, so that its write cannot race the sync
    // (a race costs one more GET + PUT, which `writes_retry_after_a_conflict` covers).
    wait_for(&port, "count", LIMIT, |a| {
        a.sync_status == deploy_core::port::SyncStatus::OutOfSync
    })
    .await
    .unwrap();

    let before = api.requests().len();
    port.sync("count", &request("op-count")).await.unwrap();
    let done = wait_for(&port, "count", LIMIT, |a| {
        finished("op-count")(a) && a.health == Health::Healthy
    })
    .await
    .unwrap();
    assert_eq!(
        done.images,
        [format!("{}:v2", seed("count", "v2").image_names[0])]
    );
    let made: Vec<String> = api.requests()[before..].to_vec();
    // GET + PUT (the operation), then GET + LIST + one long WATCH for the whole wait.
    assert_eq!(made.len(), 5, "{made:#?}");
}

/// Leases in the `deploy/lock` annotation of an Application in the fake API server, changed
/// behind the lock's back.
struct AnnotationFixture {
    api: Arc<FakeApiServer>,
    app: String,
}

impl AnnotationFixture {
    fn edit(&self, change: impl Fn(&mut Vec<Value>)) {
        let key = deploy_argocd::rest::lock::LOCK_ANNOTATION;
        let changed = self.api.update(APPS, NS, &self.app, |o| {
            let mut leases: Vec<Value> = o["metadata"]["annotations"][key]
                .as_str()
                .map(|t| serde_json::from_str(t).expect("JSON"))
                .unwrap_or_default();
            change(&mut leases);
            o["metadata"]["annotations"][key] = json!(serde_json::to_string(&leases).unwrap());
            true
        });
        assert!(changed, "no application {}", self.app);
    }
}

#[async_trait::async_trait]
impl deploy_engine::conformance::lock::LockFixture for AnnotationFixture {
    async fn expire(&self, key: &str) {
        self.edit(|leases| {
            for l in leases.iter_mut().filter(|l| l["key"] == json!(key)) {
                l["expiresAt"] = json!("2000-01-01T00:00:00Z");
            }
        });
    }

    async fn delete(&self, key: &str) {
        self.edit(|leases| leases.retain(|l| l["key"] != json!(key)));
    }
}

/// Without `state`, `--core` takes the same lock as the REST API (F5): the `deploy/lock`
/// annotation of the carrier Application, written over the Kubernetes API with the same
/// decisions, and a write conditional on the resourceVersion it was decided on.
#[tokio::test]
async fn the_annotation_lock_over_kubernetes_passes_the_lock_conformance() {
    let api = FakeApiServer::new();
    api.put(
        APPS,
        NS,
        json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": { "name": "myapp-prod-eu-west-1", "namespace": NS },
            "spec": {},
        }),
    );
    let lock = deploy_argocd::rest::lock::ApplicationLock::over_kube(
        api.client(NS),
        NS,
        "myapp-prod-eu-west-1",
    )
    .with_settle(Duration::ZERO);
    let fixture = AnnotationFixture {
        api: Arc::clone(&api),
        app: "myapp-prod-eu-west-1".into(),
    };
    deploy_engine::conformance::lock::run_all(&lock, &fixture, "kube-annotation")
        .await
        .unwrap();
    // Held: the annotation the REST API would read, in the same form.
    let lease = lock
        .acquire("deploy-myapp-prod", "alice", Duration::from_secs(600))
        .await
        .unwrap();
    let object = api.get(APPS, NS, "myapp-prod-eu-west-1").unwrap();
    let text = object["metadata"]["annotations"]["deploy/lock"]
        .as_str()
        .unwrap();
    assert!(
        text.starts_with(r#"[{"key":"deploy-myapp-prod","holder":"alice","#),
        "{text}"
    );
    lock.release(&lease).await.unwrap();
    let object = api.get(APPS, NS, "myapp-prod-eu-west-1").unwrap();
    assert!(
        object["metadata"]["annotations"]
            .get("deploy/lock")
            .is_none(),
        "released: {object:#}"
    );
}
