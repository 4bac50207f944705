//! The Kubernetes skin of the Argo CD simulation ([`deploy_core::sim`]): an application
//! controller over the fake API server, and the conformance fixtures (`ArgoCdFixture`,
//! `LockFixture`) built on it.
//!
//! Like the real controller it picks up a requested `.operation`, records it in
//! `status.operationState` (Running), honours `Terminating`, and finishes by clearing
//! `.operation`, appending to `status.history`, updating `status.summary.images` and
//! `status.sync`, then moving health Progressing → Healthy or Degraded. When each happens is
//! the simulation's [`Run::step`]; this file writes it into the objects. It deploys
//! `operation.sync.source` when the operation carries one (a rollback), else `spec.source`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::model::SyncMode;
use deploy_core::port::{Health, OperationPhase};
use deploy_core::sim::{AppSeed, Script};
use deploy_core::sim::{Run, RunKind, Settling, Step, Timing};
use deploy_engine::conformance::argocd::ArgoCdFixture;
use deploy_engine::conformance::lock::LockFixture;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::fake::FakeApiServer;

/// Collection of Applications in the fake server.
pub const APPS: &str = "argoproj.io/v1alpha1/applications";
/// Collection of AppProjects.
pub const PROJECTS: &str = "argoproj.io/v1alpha1/appprojects";
/// Collection of Leases.
pub const LEASES: &str = "coordination.k8s.io/v1/leases";

/// How long each controller step (running, then progressing) takes.
const STEP: Duration = Duration::from_millis(40);
/// The simulation's timing: each step takes [`STEP`].
const TIMING: Timing = Timing {
    sync: STEP,
    health: STEP,
};
/// The user a foreign operation is started as.
pub const FOREIGN_USER: &str = "someone-else";

#[derive(Debug)]
struct Sim {
    seed: AppSeed,
    next_script: Script,
    /// The operation in flight, as the simulation runs it.
    run: Option<Run>,
    /// Health on its way after a sync.
    settling: Option<Settling>,
    /// Someone else's operation was finished (perhaps before the loop picked it up).
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
    let now = Timestamp::now();
    if let Some(mut run) = sim.run.take() {
        if object["status"]["operationState"]["phase"] == json!("Terminating") {
            run.terminating = true;
        }
        match run.step(now, TIMING, &[], now) {
            Step::Wait | Step::Held => sim.run = Some(run),
            Step::Ended(ending) => end(api, ns, name, sim, &object, &ending),
        }
    } else if let Some(op) = operation {
        pick_up(api, ns, name, sim, op, now);
    } else if let Some(settled) = sim.settling.filter(|s| s.at <= now) {
        sim.settling = None;
        api.update(APPS, ns, name, |o| {
            o["status"]["health"] = match Settling::message(settled.health) {
                Some(message) => json!({ "status": "Degraded", "message": message }),
                None => json!({ "status": "Healthy" }),
            };
            o["status"]["reconciledAt"] = json!(now.to_string());
            true
        });
    } else {
        let want = sync_status(&object);
        api.update(APPS, ns, name, |o| {
            if o["status"]["sync"]["status"] == json!(want) {
                return false;
            }
            o["status"]["sync"]["status"] = json!(want);
            o["status"]["reconciledAt"] = json!(now.to_string());
            true
        });
    }
}

/// Picks up a requested operation: the simulation runs it from now, and
/// `status.operationState` says Running (unless a restarted controller finds it there).
fn pick_up(api: &FakeApiServer, ns: &str, name: &str, sim: &mut Sim, op: Value, now: Timestamp) {
    let by = op["initiatedBy"]["username"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    sim.run = Some(if by == FOREIGN_USER {
        let ends = std::mem::take(&mut sim.foreign_done).then_some(now);
        Run::new(RunKind::Foreign(ends), Script::Healthy, now, &by)
    } else {
        let script = std::mem::replace(&mut sim.next_script, Script::Healthy);
        Run::new(RunKind::Sync, script, now, &by)
    });
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
                "message": "", "startedAt": now.to_string(),
            });
        }
        true
    });
}

/// Writes the end of an operation: a sync of ours that succeeded deploys its source and lets health
/// roll; anything else only ends.
fn end(
    api: &FakeApiServer,
    ns: &str,
    name: &str,
    sim: &mut Sim,
    object: &Value,
    ending: &deploy_core::sim::Ending,
) {
    let phase = if ending.phase == OperationPhase::Succeeded {
        "Succeeded"
    } else {
        "Failed"
    };
    let Some(target) = ending.deploys else {
        finish(api, ns, name, phase, ending.message, None);
        return;
    };
    let source = object["operation"]["sync"]
        .get("source")
        .cloned()
        .unwrap_or_else(|| object["spec"]["source"].clone());
    let images = images(&sim.seed, &source);
    let changed = object["status"]["summary"]["images"] != json!(images);
    let current = health_of(&object["status"]["health"]["status"]);
    sim.settling = Settling::after_sync(ending.at, TIMING, changed, current, target);
    let rolls = sim.settling.is_some();
    finish(
        api,
        ns,
        name,
        phase,
        ending.message,
        Some((source, images, rolls)),
    );
}

/// The health an object's `status.health.status` names.
fn health_of(status: &Value) -> Health {
    match status.as_str() {
        Some("Healthy") => Health::Healthy,
        Some("Progressing") => Health::Progressing,
        Some("Degraded") => Health::Degraded,
        _ => Health::Unknown,
    }
}

/// Ends the running operation with `phase`; with `deployed`, records the sync of that source.
fn finish(
    api: &FakeApiServer,
    ns: &str,
    name: &str,
    phase: &str,
    message: &str,
    deployed: Option<(Value, Vec<String>, bool)>,
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
        if let Some((source, images, rolls)) = deployed {
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
            if rolls {
                status["health"] = json!({ "status": "Progressing" });
            }
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
        // Argo CD always has the `default` AppProject (argocd-server creates it at start).
        if self.api.get(PROJECTS, &self.namespace, "default").is_none() {
            self.set_sync_windows(&seed.name, &[]).await;
        }
        self.sims.lock().expect("lock").insert(
            seed.name.clone(),
            Sim {
                seed: seed.clone(),
                next_script: Script::Healthy,
                run: None,
                settling: None,
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
            match sim.run.as_mut().filter(|r| r.is_foreign()) {
                Some(run) => run.finish_foreign(Timestamp::now()),
                None => sim.foreign_done = true,
            }
        }
    }

    /// The windows of the Application's project (`default`, as every seeded one's).
    async fn set_sync_windows(&self, _name: &str, windows: &[deploy_core::window::SyncWindow]) {
        let windows: Vec<Value> = windows
            .iter()
            .map(deploy_argocd::fake::sync_window)
            .collect();
        self.api.put(
            PROJECTS,
            &self.namespace,
            json!({ "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
                    "metadata": { "name": "default" }, "spec": { "syncWindows": windows } }),
        );
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
