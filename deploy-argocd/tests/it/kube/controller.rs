//! A simulated Argo CD application controller over the fake API server, and the
//! conformance fixtures (`ArgoCdFixture`, `LockFixture`) built on it.
//!
//! Like the real controller it picks up a requested `.operation`, records it in
//! `status.operationState` (Running), honours `Terminating`, and finishes by clearing
//! `.operation`, appending to `status.history`, updating `status.summary.images` and
//! `status.sync`, then moving health Progressing → Healthy or Degraded. It deploys
//! `operation.sync.source` when the operation carries one (a rollback), else `spec.source`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::model::SyncMode;
use deploy_engine::conformance::argocd::{AppSeed, ArgoCdFixture, Script};
use deploy_engine::conformance::lock::LockFixture;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::fake::FakeApiServer;

/// Collection of Applications in the fake server.
pub const APPS: &str = "argoproj.io/v1alpha1/applications";
/// Collection of Leases.
pub const LEASES: &str = "coordination.k8s.io/v1/leases";

/// How long each controller step (running, then progressing) takes.
const STEP: Duration = Duration::from_millis(40);
/// The user a foreign operation is started as.
pub const FOREIGN_USER: &str = "someone-else";

#[derive(Debug, Clone, Copy)]
enum Stage {
    Idle,
    Running {
        since: Instant,
        script: Script,
        foreign: bool,
    },
    Settling {
        since: Instant,
        degraded: bool,
    },
}

#[derive(Debug)]
struct Sim {
    seed: AppSeed,
    next_script: Script,
    stage: Stage,
    foreign_done: bool,
}

/// The simulated controller; dropping it stops the loop.
#[derive(Debug)]
pub struct Controller {
    api: Arc<FakeApiServer>,
    namespace: String,
    sims: Arc<Mutex<BTreeMap<String, Sim>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn source_of(seed: &AppSeed, tag: &str) -> Value {
    let params: Vec<Value> = seed
        .helm_parameters
        .iter()
        .map(|(k, v)| {
            let v = if *k == seed.tag_parameter {
                tag
            } else {
                v.as_str()
            };
            json!({ "name": k, "value": v })
        })
        .collect();
    json!({
        "repoURL": "https://git.example.com/deploy.git",
        "path": "charts/app",
        "targetRevision": "HEAD",
        "helm": { "parameters": params },
    })
}

fn images(seed: &AppSeed, source: &Value) -> Vec<String> {
    let tag = source["helm"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == json!(seed.tag_parameter))
        .and_then(|p| p["value"].as_str())
        .unwrap_or("latest")
        .to_owned();
    seed.image_names
        .iter()
        .map(|n| format!("{n}:{tag}"))
        .collect()
}

/// `Synced` when the spec's source is what was deployed last.
fn sync_status(object: &Value) -> &'static str {
    let deployed = object["status"]["history"]
        .as_array()
        .and_then(|h| h.last())
        .map(|h| &h["source"]);
    if deployed == Some(&object["spec"]["source"]) {
        "Synced"
    } else {
        "OutOfSync"
    }
}

impl Controller {
    /// Starts the controller loop over Applications in `namespace`.
    pub fn start(api: Arc<FakeApiServer>, namespace: &str) -> Self {
        let sims: Arc<Mutex<BTreeMap<String, Sim>>> = Arc::default();
        let task = {
            let api = Arc::clone(&api);
            let sims = Arc::clone(&sims);
            let namespace = namespace.to_owned();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tick.tick().await;
                    let names: Vec<String> = sims.lock().expect("lock").keys().cloned().collect();
                    for name in names {
                        let mut all = sims.lock().expect("lock");
                        let sim = all.get_mut(&name).expect("listed");
                        step(&api, &namespace, &name, sim);
                    }
                }
            })
        };
        Self {
            api,
            namespace: namespace.to_owned(),
            sims,
            task,
        }
    }
}

fn step(api: &FakeApiServer, ns: &str, name: &str, sim: &mut Sim) {
    let Some(object) = api.get(APPS, ns, name) else {
        return;
    };
    let operation = object.get("operation").filter(|o| !o.is_null()).cloned();
    match sim.stage {
        Stage::Idle => {
            if let Some(op) = operation {
                let foreign = op["initiatedBy"]["username"] == json!(FOREIGN_USER);
                let script = if foreign {
                    Script::Hang
                } else {
                    std::mem::replace(&mut sim.next_script, Script::Healthy)
                };
                sim.stage = Stage::Running {
                    since: Instant::now(),
                    script,
                    foreign,
                };
                api.update(APPS, ns, name, |o| {
                    let state = &o["status"]["operationState"];
                    let resumable = state.is_object()
                        && !matches!(
                            state["phase"].as_str(),
                            Some("Succeeded" | "Failed" | "Error")
                        );
                    if !resumable {
                        o["status"]["operationState"] = json!({
                            "operation": op, "phase": "Running",
                            "message": "", "startedAt": now(),
                        });
                    }
                    true
                });
            } else {
                let want = sync_status(&object);
                api.update(APPS, ns, name, |o| {
                    if o["status"]["sync"]["status"] == json!(want) {
                        return false;
                    }
                    o["status"]["sync"]["status"] = json!(want);
                    o["status"]["reconciledAt"] = json!(now());
                    true
                });
            }
        }
        Stage::Running {
            since,
            script,
            foreign,
        } => {
            let terminating = object["status"]["operationState"]["phase"] == json!("Terminating");
            if terminating {
                finish(api, ns, name, "Failed", "Operation terminated", None);
                sim.stage = Stage::Idle;
                return;
            }
            let due = since.elapsed() >= STEP;
            let outcome = match script {
                _ if foreign && sim.foreign_done => Some(Script::Healthy),
                _ if foreign => None,
                Script::Hang => None,
                other if due => Some(other),
                _ => None,
            };
            match outcome {
                None => {}
                Some(Script::Failed) => {
                    finish(
                        api,
                        ns,
                        name,
                        "Failed",
                        "one or more objects failed to apply",
                        None,
                    );
                    sim.stage = Stage::Idle;
                }
                Some(script) => {
                    let op = operation.unwrap_or_default();
                    let source = op["sync"]
                        .get("source")
                        .cloned()
                        .unwrap_or_else(|| object["spec"]["source"].clone());
                    let images = images(&sim.seed, &source);
                    finish(
                        api,
                        ns,
                        name,
                        "Succeeded",
                        "successfully synced (all tasks run)",
                        Some((source, images)),
                    );
                    sim.foreign_done = false;
                    sim.stage = Stage::Settling {
                        since: Instant::now(),
                        degraded: script == Script::Degraded,
                    };
                }
            }
        }
        Stage::Settling { since, degraded } => {
            if since.elapsed() < STEP {
                return;
            }
            api.update(APPS, ns, name, |o| {
                o["status"]["health"] = if degraded {
                    json!({ "status": "Degraded", "message": "Deployment api: exceeded its progress deadline" })
                } else {
                    json!({ "status": "Healthy" })
                };
                o["status"]["reconciledAt"] = json!(now());
                true
            });
            sim.stage = Stage::Idle;
        }
    }
}

/// Ends the running operation with `phase`; with `deployed`, records the sync of that source.
fn finish(
    api: &FakeApiServer,
    ns: &str,
    name: &str,
    phase: &str,
    message: &str,
    deployed: Option<(Value, Vec<String>)>,
) {
    api.update(APPS, ns, name, |o| {
        let at = now();
        let revision = "0123456789abcdef0123456789abcdef01234567";
        if let Some(obj) = o.as_object_mut() {
            obj.remove("operation");
        }
        let status = &mut o["status"];
        status["operationState"]["phase"] = json!(phase);
        status["operationState"]["message"] = json!(message);
        status["operationState"]["finishedAt"] = json!(at);
        status["reconciledAt"] = json!(at);
        if let Some((source, images)) = deployed {
            status["operationState"]["syncResult"] =
                json!({ "revision": revision, "source": source });
            let history = status["history"].as_array().cloned().unwrap_or_default();
            let id = history
                .last()
                .and_then(|h| h["id"].as_i64())
                .map_or(0, |i| i + 1);
            let mut history = history;
            history.push(json!({
                "id": id, "revision": revision, "deployedAt": at,
                "deployStartedAt": status["operationState"]["startedAt"], "source": source,
            }));
            status["history"] = json!(history);
            status["summary"] = json!({ "images": images });
            status["health"] = json!({ "status": "Progressing" });
        }
        let sync = sync_status(o);
        o["status"]["sync"] = json!({ "status": sync, "revision": revision });
        true
    });
}

#[async_trait]
impl ArgoCdFixture for Controller {
    async fn create_application(&self, seed: &AppSeed) {
        let tag = &seed.helm_parameters[&seed.tag_parameter];
        let source = source_of(seed, tag);
        let mut spec = json!({
            "project": "default",
            "source": source,
            "destination": { "name": seed.destination, "namespace": "myapp" },
        });
        if let SyncMode::Automated { prune, self_heal } = seed.sync_mode {
            spec["syncPolicy"] = json!({ "automated": { "prune": prune, "selfHeal": self_heal } });
        }
        let at = now();
        let object = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": { "name": seed.name, "labels": seed.labels },
            "spec": spec,
            "status": {
                "sync": { "status": "Synced", "revision": "0123456789abcdef0123456789abcdef01234567" },
                "health": { "status": "Healthy" },
                "summary": { "images": images(seed, &source) },
                "history": [{
                    "id": 0, "revision": "0123456789abcdef0123456789abcdef01234567",
                    "deployedAt": at, "source": source,
                }],
                "reconciledAt": at,
            },
        });
        self.api.put(APPS, &self.namespace, object);
        self.sims.lock().expect("lock").insert(
            seed.name.clone(),
            Sim {
                seed: seed.clone(),
                next_script: Script::Healthy,
                stage: Stage::Idle,
                foreign_done: false,
            },
        );
    }

    async fn script(&self, name: &str, script: Script) {
        if let Some(sim) = self.sims.lock().expect("lock").get_mut(name) {
            sim.next_script = script;
        }
    }

    async fn start_foreign_operation(&self, name: &str) {
        self.api.update(APPS, &self.namespace, name, |o| {
            o["operation"] = json!({
                "sync": { "revision": "HEAD" },
                "initiatedBy": { "username": FOREIGN_USER },
            });
            true
        });
    }

    async fn finish_foreign_operation(&self, name: &str) {
        if let Some(sim) = self.sims.lock().expect("lock").get_mut(name) {
            sim.foreign_done = true;
        }
    }
}

/// Makes Leases expire by moving their renew time into the past.
#[derive(Debug)]
pub struct LeaseFixture {
    /// The fake server.
    pub api: Arc<FakeApiServer>,
    /// Namespace of the Leases.
    pub namespace: String,
}

#[async_trait]
impl LockFixture for LeaseFixture {
    async fn expire(&self, key: &str) {
        let name = deploy_argocd::kube::lease_name(key);
        let changed = self.api.update(LEASES, &self.namespace, &name, |o| {
            o["spec"]["renewTime"] = json!("2000-01-01T00:00:00.000000Z");
            o["spec"]["acquireTime"] = json!("2000-01-01T00:00:00.000000Z");
            true
        });
        assert!(changed, "no lease {name} to expire");
    }

    async fn delete(&self, key: &str) {
        let name = deploy_argocd::kube::lease_name(key);
        let api: ::kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            ::kube::Api::namespaced(self.api.client(&self.namespace), &self.namespace);
        api.delete(&name, &Default::default())
            .await
            .expect("delete the lease");
    }
}
