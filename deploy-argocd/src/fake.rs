//! Test support, not for production use: a stateful Argo CD API server on wiremock for the
//! tests of this crate and of the crates above it (compiled only with the `fake` feature).
//!
//! [`FakeArgo`] serves Applications whose operations run, then succeed or fail, health that
//! moves Progressing → Healthy or Degraded, collisions, history, terminate, JSON patches
//! (RFC 6902, `test` included, as the REST lock writes them), the NDJSON watch stream,
//! ApplicationSets, clusters and the session. It answers as Argo CD does (403 for a missing
//! app without a project, code 9 for a collision, `{}` for terminate). Faults are injected at
//! the HTTP level ([`FakeArgo::inject`]: 503 or 401 for an Application's reads or patches, for
//! a time, a number of answers or until cleared), and someone else's sync can end Failed on a
//! PostSync hook while the release runs ([`FakeArgo::start_foreign_sync`]). It implements
//! [`ArgoCdFixture`], so the deploy-core conformance suite and end-to-end tests seed it the
//! same way; every request stays readable through [`FakeArgo::server`] for assertions.
//!
//! AppProject sync windows ([`FakeArgo::set_sync_windows`]) are served by
//! `GET /api/v1/applications/{name}/syncwindows` as `GetApplicationSyncWindows` answers
//! (`canSync` and `activeWindows` computed in each window's zone, the windows without
//! `timeZone`, as upstream's `convertSyncWindows`), the AppProject itself by
//! `GET /api/v1/projects/{name}` (403 when [`FakeArgo::set_projects_unreadable`]), and a sync
//! they block is refused with 403 "Cannot sync: Blocked by sync window", by the wall clock.
//!
//! ApplicationSets are served by name and in a list ([`FakeArgo::put_application_set`]).
//! An Application can be owned by one ([`FakeArgo::own`]: an `ownerReferences` entry, and
//! the spec, labels and annotations it has then become what the template generates for it),
//! and each ApplicationSet's controller can be switched on ([`FakeArgo::set_controller`]):
//! it then behaves as upstream's ApplicationSet controller does after every change to an
//! Application it owns (`reconcile`).
//!
//! Time is simulated: the "controller" advances an Application by one step each time it is
//! observed (a GET or a watch stream), so no test waits on the wall clock. Benches can opt in
//! to the wall clock instead: [`FakeArgo::set_timing`] gives an Application real sync and
//! health durations (its watch stream then stays open until the next change is due, as Argo
//! CD's does), and [`FakeArgo::set_request_delay`] delays every answer.
//!
//! ```toml
//! [dev-dependencies]
//! deploy-argocd = { workspace = true, features = ["fake"] }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deploy_core::image_override::rendered_images;
use deploy_core::model::SyncMode;
use deploy_core::port::OverrideValue;
use deploy_engine::conformance::argocd::{AppSeed, ArgoCdFixture, Script};
use deploy_engine::memory::Timing;
use jiff::Timestamp;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The token the fake accepts.
pub const TOKEN: &str = "argocd-test-token-9f8e7d6c";

#[derive(Debug)]
struct AppSim {
    obj: Value,
    script: Script,
    tag_parameter: String,
    image_names: Vec<String>,
    /// The chart's digest parameters, image name → parameter ([`FakeArgo::set_digest_parameters`]).
    digest_parameters: BTreeMap<String, String>,
    /// Observations since the operation started.
    running: u32,
    /// Health to reach after the Progressing step.
    health_next: Option<&'static str>,
    foreign: bool,
    /// Observations left before the controller finishes the foreign operation by itself
    /// (`None`: it runs until [`ArgoCdFixture::finish_foreign_operation`]).
    foreign_left: Option<u32>,
    /// What the foreign operation deploys and how it ends ([`FakeArgo::start_foreign_sync`]);
    /// `None`: it changes nothing but its own state and succeeds.
    foreign_sync: Option<(String, ForeignEnd)>,
    /// Wall-clock durations of our operations ([`FakeArgo::set_timing`]); `None`: one step
    /// per observation.
    timing: Option<Timing>,
    /// When the last sync request arrived.
    started: Option<Instant>,
}

impl AppSim {
    /// When the next step of a timed Application is due (`None`: untimed, or nothing to do).
    fn next_due(&self) -> Option<Instant> {
        let (timing, started) = (self.timing?, self.started?);
        let phase = &self.obj["status"]["operationState"]["phase"];
        if *phase == json!("Running") && !self.foreign {
            (self.script != Script::Hang).then(|| started + timing.sync)
        } else if self.health_next.is_some() {
            Some(started + timing.sync + timing.health)
        } else {
            None
        }
    }

    /// Whether the step of a timed Application is due at `at` (always for an untimed one).
    fn due(&self, at: Instant) -> bool {
        self.timing.is_none() || self.next_due().is_none_or(|due| due <= at)
    }
}

/// An ApplicationSet and its controller.
#[derive(Debug)]
struct SetSim {
    obj: Value,
    /// Whether its controller rewrites the Applications it owns after each change.
    controller: bool,
}

/// What an ApplicationSet's template generates for one Application it owns.
#[derive(Debug, Clone)]
struct Generated {
    set: String,
    spec: Value,
    labels: Value,
    annotations: Value,
}

struct State {
    apps: BTreeMap<String, AppSim>,
    /// ApplicationSets by name.
    sets: BTreeMap<String, SetSim>,
    /// Owned Applications by name: what their ApplicationSet generates for them.
    generated: BTreeMap<String, Generated>,
    /// Reconciles of owned Applications by an ApplicationSet controller so far.
    reconciles: u32,
    rv: u64,
    clock: i64,
    /// Changes the controller makes per watch stream connection before the server cuts it.
    steps_per_stream: usize,
    /// Applied to an Application right after the next successful PATCH of it: another
    /// client's write landing just after ours.
    after_patch: BTreeMap<String, Edit>,
    /// Added to every answer ([`FakeArgo::set_request_delay`]).
    request_delay: Duration,
    /// Longest a timed Application's watch stream waits for a change ([`FakeArgo::set_stream_hold`]).
    stream_hold: Duration,
    /// Faults injected at the HTTP level ([`FakeArgo::inject`]).
    faults: Vec<Fault>,
    /// Answers each Application's faults gave, whether or not the fault is still on.
    fault_answers: BTreeMap<String, u32>,
    /// AppProjects by name, as `{"spec":{"syncWindows":[...]}}` ([`FakeArgo::set_sync_windows`]).
    projects: BTreeMap<String, Value>,
    /// The token may not read AppProjects ([`FakeArgo::set_projects_unreadable`]).
    projects_unreadable: bool,
}

/// A change to an Application object.
type Edit = Box<dyn FnOnce(&mut Value) + Send>;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("apps", &self.apps)
            .field("sets", &self.sets)
            .field("generated", &self.generated)
            .field("reconciles", &self.reconciles)
            .field("rv", &self.rv)
            .field("clock", &self.clock)
            .field("steps_per_stream", &self.steps_per_stream)
            .field("after_patch", &self.after_patch.keys().collect::<Vec<_>>())
            .field("request_delay", &self.request_delay)
            .field("stream_hold", &self.stream_hold)
            .field("faults", &self.faults)
            .field("fault_answers", &self.fault_answers)
            .field("projects", &self.projects)
            .field("projects_unreadable", &self.projects_unreadable)
            .finish()
    }
}

impl State {
    /// The outage to answer a request of `kind` for Application `name` with, if a fault is
    /// on for it; a fault whose time or answers are used up is removed first.
    fn fault_hit(&mut self, name: &str, kind: Requests) -> Option<Outage> {
        let now = Instant::now();
        self.faults.retain(|f| !f.over(now));
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.application == name && f.requests == kind)?;
        fault.first_answer.get_or_insert(now);
        fault.answered += 1;
        *self.fault_answers.entry(name.to_owned()).or_default() += 1;
        Some(fault.outage)
    }

    /// The windows of Application `name`'s project that match it, with their zones, and
    /// whether a manual sync may run now by the wall clock (sync windows are real time, unlike
    /// the simulated controller): `proj.Spec.SyncWindows.Matches(a).CanSync(true, nil)`, an
    /// error for an invalid window (argo-cd server/application/application.go).
    fn windows_of(
        &self,
        name: &str,
    ) -> (
        Vec<deploy_core::window::SyncWindow>,
        Result<bool, deploy_core::window::InvalidWindow>,
    ) {
        let Some(app) = self.apps.get(name) else {
            return (Vec::new(), Ok(true));
        };
        let project = app.obj["spec"]["project"].as_str().unwrap_or("default");
        let windows = self
            .projects
            .get(project)
            .and_then(|p| crate::windows::matching(p, &app.obj).ok())
            .unwrap_or_default();
        // Upstream's `SyncWindow.active` reads each schedule in the window's `timeZone`
        // (`scheduleOffsetByTimeZone`, pkg/apis/application/v1alpha1/types.go), as
        // `deploy_core::window` does.
        let can = deploy_core::window::can_sync(&windows, Timestamp::now(), true);
        (windows, can)
    }

    /// Whether `name`'s windows hold its Running operation now: the controller's
    /// `syncWindowPreventsSync` (argo-cd controller/sync.go), `CanSync(isManual)` with
    /// isManual from the operation's `initiatedBy.automated`; an invalid window holds it.
    fn window_holds(&self, name: &str) -> bool {
        let (windows, _) = self.windows_of(name);
        let automated = self.apps.get(name).is_some_and(|a| {
            a.obj["status"]["operationState"]["operation"]["initiatedBy"]["automated"]
                == json!(true)
        });
        !deploy_core::window::can_sync(&windows, Timestamp::now(), !automated).unwrap_or(false)
    }

    fn now(&mut self) -> String {
        self.clock += 1;
        Timestamp::from_second(1_780_000_000 + self.clock)
            .expect("valid time")
            .to_string()
    }

    fn bump(&mut self, name: &str) {
        self.rv += 1;
        let rv = self.rv.to_string();
        if let Some(app) = self.apps.get_mut(name) {
            app.obj["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    /// One controller step for `name`; true if the Application changed.
    fn tick(&mut self, name: &str) -> bool {
        self.tick_at(name, Instant::now())
    }

    /// Every step of `name` due at `at` (one step for an untimed Application).
    fn settle_at(&mut self, name: &str, at: Instant) -> Vec<Value> {
        let timed = self.apps.get(name).is_some_and(|a| a.timing.is_some());
        let mut changes = Vec::new();
        // A timed Application has at most a few steps due; an untimed one takes one.
        for _ in 0..if timed { 4 } else { 1 } {
            if !self.tick_at(name, at) {
                break;
            }
            changes.push(self.apps[name].obj.clone());
        }
        changes
    }

    /// One controller step for `name`, a timed Application's only if due at `at`.
    fn tick_at(&mut self, name: &str, at: Instant) -> bool {
        if self.apps.get(name).is_some_and(|a| !a.due(at)) {
            return false;
        }
        let now = self.now();
        let held = self.window_holds(name);
        let Some(app) = self.apps.get_mut(name) else {
            return false;
        };
        let obj = &mut app.obj;
        let phase = obj["status"]["operationState"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let changed = if phase == "Running" && app.foreign && app.foreign_left.is_some() {
            let left = app.foreign_left.as_mut().expect("checked above");
            if *left > 0 {
                *left -= 1;
                false
            } else {
                app.foreign = false;
                app.foreign_left = None;
                match app.foreign_sync.take() {
                    None => finish(
                        obj,
                        "Succeeded",
                        "successfully synced (all tasks run)",
                        &now,
                    ),
                    Some((tag, end)) => finish_foreign_sync(obj, &app.image_names, &tag, end, &now),
                }
                true
            }
        } else if phase == "Terminating" {
            finish(obj, "Failed", "Operation terminated", &now);
            obj["status"]["sync"]["status"] = json!("OutOfSync");
            true
        } else if phase == "Running" && !app.foreign && held {
            // `SyncAppState`: a Running operation that a window now prevents stays Running,
            // and only its message says why.
            let message = &mut obj["status"]["operationState"]["message"];
            let changed = *message != json!("Sync operation blocked by sync window");
            *message = json!("Sync operation blocked by sync window");
            changed
        } else if phase == "Running" && !app.foreign {
            app.running += 1;
            if (app.running < 2 && app.timing.is_none()) || app.script == Script::Hang {
                false
            } else {
                let script = std::mem::replace(&mut app.script, Script::Healthy);
                match script {
                    Script::Failed => {
                        finish(obj, "Failed", "one or more objects failed to apply", &now);
                        obj["status"]["sync"]["status"] = json!("OutOfSync");
                    }
                    _ => {
                        let op = obj["status"]["operationState"]["operation"].clone();
                        let revision = op["sync"]["revision"]
                            .as_str()
                            .filter(|r| !r.is_empty())
                            .unwrap_or("4b1f0c2a")
                            .to_owned();
                        finish(
                            obj,
                            "Succeeded",
                            "successfully synced (all tasks run)",
                            &now,
                        );
                        let images = rendered_images(
                            &app.image_names,
                            &spec_override(&obj["spec"]["source"], &app.tag_parameter),
                            &app.digest_parameters,
                        );
                        obj["status"]["summary"] = json!({ "images": images });
                        obj["status"]["sync"] = json!({ "status": "Synced", "revision": revision });
                        obj["status"]["health"] = json!({ "status": "Progressing" });
                        let history = obj["status"]["history"]
                            .as_array_mut()
                            .expect("history is an array");
                        let id = history.last().and_then(|h| h["id"].as_i64()).unwrap_or(-1) + 1;
                        let source = obj["spec"]["source"].clone();
                        obj["status"]["history"]
                            .as_array_mut()
                            .expect("history is an array")
                            .push(json!({
                                "id": id, "revision": revision, "deployedAt": now,
                                "deployStartedAt": now, "source": source,
                                "initiatedBy": op["initiatedBy"].clone(),
                            }));
                        app.health_next = Some(if script == Script::Degraded {
                            "Degraded"
                        } else {
                            "Healthy"
                        });
                    }
                }
                true
            }
        } else if let Some(health) = app.health_next.take() {
            obj["status"]["health"] = json!({ "status": health });
            if health == "Degraded" {
                obj["status"]["resources"] = json!([{
                    "group": "apps", "version": "v1", "kind": "Deployment", "namespace": "app",
                    "name": "api", "status": "Synced",
                    "health": { "status": "Degraded", "message": "Deployment \"api\" exceeded its progress deadline" }
                }]);
            }
            obj["status"]["reconciledAt"] = json!(now);
            true
        } else {
            false
        };
        if changed {
            self.bump(name);
        }
        changed
    }
}

/// Upstream's ApplicationSet controller on one Application it owns, after a change to it
/// (it requeues on any change to the spec, labels or annotations of what it generated).
/// True if the Application changed.
///
/// As argo-cd `applicationset/controllers/applicationset_controller.go`
/// (`createOrUpdateInCluster`): `found.Spec = generatedApp.Spec`; the keys of
/// `spec.preservedFields.annotations` plus `defaultPreservedAnnotations`
/// (`notified.notifications.argoproj.io`, `argocd.argoproj.io/refresh`) are copied from the
/// live Application into the generated annotations, which then replace the live ones
/// whole; the labels become the template's (keeping `spec.preservedFields.labels`). Then
/// `applicationset/utils/createOrUpdate.go` (`CreateOrUpdate`, `applyIgnoreDifferences`)
/// removes the fields `spec.ignoreApplicationDifferences` names from both sides before the
/// patch, so the live values of those fields stay. Only JSON pointers are honoured here
/// (not jq path expressions), and a `name` restricts an entry to that Application.
fn reconcile(state: &mut State, name: &str) -> bool {
    let Some(generated) = state.generated.get(name).cloned() else {
        return false;
    };
    let Some(set) = state.sets.get(&generated.set).filter(|s| s.controller) else {
        return false;
    };
    let set_spec = set.obj["spec"].clone();
    state.reconciles += 1;
    let Some(app) = state.apps.get_mut(name) else {
        return false;
    };
    let live = app.obj.clone();
    let mut desired = live.clone();
    desired["spec"] = generated.spec.clone();
    let keep = |kind: &str, generated: &Value, defaults: &[&str]| -> Value {
        let mut out = generated.as_object().cloned().unwrap_or_default();
        let mut keys: Vec<String> = set_spec["preservedFields"][kind]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        keys.extend(defaults.iter().map(|d| (*d).to_owned()));
        for key in keys {
            if let Some(v) = live["metadata"][kind].get(&key) {
                out.insert(key, v.clone());
            }
        }
        Value::Object(out)
    };
    desired["metadata"]["annotations"] = keep(
        "annotations",
        &generated.annotations,
        &deploy_core::plan::appset::CONTROLLER_PRESERVED,
    );
    desired["metadata"]["labels"] = keep("labels", &generated.labels, &[]);
    for key in ["labels", "annotations"] {
        if desired["metadata"][key]
            .as_object()
            .is_some_and(|m| m.is_empty())
            && live["metadata"].get(key).is_none()
            && let Some(meta) = desired["metadata"].as_object_mut()
        {
            meta.remove(key);
        }
    }
    for entry in set_spec["ignoreApplicationDifferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"].as_str().is_none_or(|n| n.is_empty() || n == name))
    {
        for pointer in entry["jsonPointers"].as_array().into_iter().flatten() {
            let Some(pointer) = pointer.as_str() else {
                continue;
            };
            put(&mut desired, pointer, live.pointer(pointer).cloned());
        }
    }
    if desired == live {
        return false;
    }
    app.obj = desired;
    state.bump(name);
    true
}

/// Sets the value at JSON `pointer` in `target` (creating objects on the way), or removes
/// it for `None`.
fn put(target: &mut Value, pointer: &str, value: Option<Value>) {
    let Some(split) = pointer.rfind('/') else {
        return;
    };
    let (parent, last) = (&pointer[..split], &pointer[split + 1..]);
    let last = last.replace("~1", "/").replace("~0", "~");
    if target.pointer(parent).is_none() {
        if value.is_none() || parent.is_empty() {
            return;
        }
        put(target, parent, Some(json!({})));
    }
    match (target.pointer_mut(parent), value) {
        (Some(Value::Object(map)), Some(v)) => {
            map.insert(last, v);
        }
        (Some(Value::Object(map)), None) => {
            map.remove(&last);
        }
        (Some(Value::Array(items)), v) => {
            if let (Ok(i), Some(v)) = (last.parse::<usize>(), v)
                && i < items.len()
            {
                items[i] = v;
            }
        }
        _ => {}
    }
}

fn finish(obj: &mut Value, phase: &str, message: &str, now: &str) {
    let state = &mut obj["status"]["operationState"];
    state["phase"] = json!(phase);
    state["message"] = json!(message);
    state["finishedAt"] = json!(now);
    obj.as_object_mut()
        .expect("an application is an object")
        .remove("operation");
    obj["status"]["reconciledAt"] = json!(now);
}

fn error(status: u16, code: i32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": message, "code": code, "message": message, "details": []
    }))
}

fn permission_denied() -> ResponseTemplate {
    // Without `project`, Argo CD answers a missing app like a forbidden one.
    error(403, 7, "permission denied")
}

/// What an injected fault answers ([`FakeArgo::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// 503, gRPC code 14 (Unavailable): argocd-server restarting (grpc-go's "transport is
    /// closing" while its listener shuts down).
    Unavailable,
    /// 401, gRPC code 16 (Unauthenticated): the token expired, in the words of Argo CD's
    /// session manager ("invalid session: token has invalid claims: token is expired").
    Unauthenticated,
}

/// Which requests for one Application an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    /// `GET /api/v1/applications/{name}` and the watch stream
    /// `GET /api/v1/stream/applications?name={name}`.
    Reads,
    /// `PATCH /api/v1/applications/{name}` (the override, the annotations, the REST lock).
    Patches,
}

/// How long an injected fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasts {
    /// Until [`FakeArgo::clear`].
    UntilCleared,
    /// This long from its first answer on the wall clock (an outage that begins when the
    /// request comes, so the test needs not time the injection to the request).
    For(Duration),
    /// This many answers.
    Answers(u32),
}

/// A fault injected at the HTTP level: requests of one kind for one Application get an
/// error answer instead of being served.
#[derive(Debug, Clone)]
struct Fault {
    application: String,
    requests: Requests,
    outage: Outage,
    lasts: Lasts,
    first_answer: Option<Instant>,
    answered: u32,
}

impl Fault {
    /// Whether the fault is used up at `now`.
    fn over(&self, now: Instant) -> bool {
        match self.lasts {
            Lasts::UntilCleared => false,
            Lasts::For(d) => self
                .first_answer
                .is_some_and(|t| now.saturating_duration_since(t) >= d),
            Lasts::Answers(n) => self.answered >= n,
        }
    }
}

impl Outage {
    fn status_code(self) -> (u16, i32, &'static str, &'static str) {
        match self {
            Self::Unavailable => (503, 14, "Service Unavailable", "transport is closing"),
            Self::Unauthenticated => (
                401,
                16,
                "Unauthorized",
                "invalid session: token has invalid claims: token is expired",
            ),
        }
    }

    /// The answer to a unary request: grpc-gateway's error body `{"error","code","message",
    /// "details"}` (`runtimeError` in Argo CD's swagger.json) with the HTTP status of the gRPC
    /// code (`runtime.HTTPStatusFromCode`: Unavailable 503, Unauthenticated 401).
    fn unary(self) -> ResponseTemplate {
        let (status, code, _, message) = self.status_code();
        error(status, code, message)
    }

    /// The answer to a watch stream. grpc-gateway's `ForwardResponseStream` meets the error
    /// before it wrote anything, so `handleForwardResponseStreamError` (runtime/handler.go of
    /// grpc-gateway v1, which argocd-server uses) sets the status of the gRPC code and writes
    /// one error chunk, `{"error": runtimeStreamError}`, then ends the body.
    fn stream(self) -> ResponseTemplate {
        let (status, code, http_status, message) = self.status_code();
        let chunk = json!({ "error": {
            "grpc_code": code, "http_code": status, "message": message,
            "http_status": http_status, "details": []
        }});
        ResponseTemplate::new(status).set_body_raw(format!("{chunk}\n"), "application/json")
    }
}

/// How someone else's sync ends ([`FakeArgo::start_foreign_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignEnd {
    /// Succeeded.
    Succeeded,
    /// Failed on a PostSync hook (a smoke test) after every resource was applied and became
    /// Healthy: the images run the release, Synced and Healthy, yet the operation Failed.
    FailedOnPostSyncHook,
}

/// Ends the foreign sync of `tag` on `obj`: every resource applied and Healthy at `tag`, the
/// history entry written, and the operation ended as `end` says. A failed PostSync hook looks
/// as gitops-engine leaves it (pkg/sync/sync_context.go, `Sync`: a completed task that was not
/// successful makes it `setOperationFailed(..., "one or more synchronization tasks completed
/// unsuccessfully")`), with the hook's result among `syncResult.resources`.
fn finish_foreign_sync(
    obj: &mut Value,
    image_names: &[String],
    tag: &str,
    end: ForeignEnd,
    now: &str,
) {
    let revision = "7c3d9e1f";
    let images: Vec<String> = image_names.iter().map(|n| format!("{n}:{tag}")).collect();
    obj["status"]["summary"] = json!({ "images": images });
    obj["status"]["sync"] = json!({ "status": "Synced", "revision": revision });
    obj["status"]["health"] = json!({ "status": "Healthy" });
    let source = obj["spec"]["source"].clone();
    let initiated_by = obj["status"]["operationState"]["operation"]["initiatedBy"].clone();
    let history = obj["status"]["history"]
        .as_array_mut()
        .expect("history is an array");
    let id = history.last().and_then(|h| h["id"].as_i64()).unwrap_or(-1) + 1;
    history.push(json!({
        "id": id, "revision": revision, "deployedAt": now, "deployStartedAt": now,
        "source": source.clone(), "initiatedBy": initiated_by,
    }));
    let mut resources = vec![json!({
        "group": "apps", "version": "v1", "kind": "Deployment", "namespace": "myapp",
        "name": "api", "status": "Synced", "message": "deployment.apps/api configured",
        "hookPhase": "Running", "syncPhase": "Sync"
    })];
    match end {
        ForeignEnd::Succeeded => {
            finish(obj, "Succeeded", "successfully synced (all tasks run)", now);
        }
        ForeignEnd::FailedOnPostSyncHook => {
            resources.push(json!({
                "group": "batch", "version": "v1", "kind": "Job", "namespace": "myapp",
                "name": "smoke-test", "status": "Synced",
                "message": "Job has reached the specified backoff limit",
                "hookType": "PostSync", "hookPhase": "Failed", "syncPhase": "PostSync"
            }));
            finish(
                obj,
                "Failed",
                "one or more synchronization tasks completed unsuccessfully",
                now,
            );
        }
    }
    obj["status"]["operationState"]["syncResult"] =
        json!({ "revision": revision, "resources": resources, "source": source });
}

/// Which endpoint a responder serves.
#[derive(Debug, Clone, Copy)]
enum Route {
    Get,
    List,
    Patch,
    Sync,
    Terminate,
    Stream,
    AppSets,
    AppSet,
    Clusters,
    UserInfo,
    SyncWindows,
    Project,
}

/// The stateful responder.
#[derive(Debug, Clone)]
struct Responder {
    state: Arc<Mutex<State>>,
    route: Route,
}

fn app_name(request: &Request) -> String {
    request
        .url
        .path_segments()
        .and_then(|mut s| s.nth(3))
        .unwrap_or_default()
        .to_owned()
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
    })
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let answer = self.answer(request);
        let delay = self.state.lock().expect("fake state").request_delay;
        // A watch stream's answer carries its own delay (at least `request_delay`).
        if delay.is_zero() || matches!(self.route, Route::Stream) {
            answer
        } else {
            answer.set_delay(delay)
        }
    }
}

impl Responder {
    fn answer(&self, request: &Request) -> ResponseTemplate {
        let authorized = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(format!("Bearer {TOKEN}").as_str());
        if !authorized {
            return error(401, 16, "invalid session: token signature is invalid");
        }
        let mut state = self.state.lock().expect("fake state");
        let name = app_name(request);
        let faulted = match self.route {
            Route::Get => Some((Requests::Reads, name.clone())),
            Route::Patch => Some((Requests::Patches, name.clone())),
            Route::Stream => request
                .url
                .query_pairs()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| (Requests::Reads, v.into_owned())),
            _ => None,
        };
        if let Some((kind, target)) = faulted
            && let Some(outage) = state.fault_hit(&target, kind)
        {
            return if matches!(self.route, Route::Stream) {
                outage.stream()
            } else {
                outage.unary()
            };
        }
        match self.route {
            Route::Get => {
                if !state.apps.contains_key(&name) {
                    return permission_denied();
                }
                state.settle_at(&name, Instant::now());
                ResponseTemplate::new(200).set_body_json(&state.apps[&name].obj)
            }
            Route::List => {
                let selector = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "selector")
                    .map(|(_, v)| v.into_owned());
                let items: Vec<&Value> = state
                    .apps
                    .values()
                    .map(|a| &a.obj)
                    .filter(|o| selector.as_deref().is_none_or(|s| labels_match(o, s)))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "metadata": { "resourceVersion": state.rv.to_string() }, "items": items
                }))
            }
            Route::Patch => {
                if !state.apps.contains_key(&name) {
                    return permission_denied();
                }
                let body: Value = match serde_json::from_slice(&request.body) {
                    Ok(b) => b,
                    Err(e) => return error(400, 3, &e.to_string()),
                };
                let patch_type = body["patchType"].as_str().unwrap_or_default().to_owned();
                if !matches!(patch_type.as_str(), "merge" | "json" | "") {
                    return error(
                        400,
                        3,
                        &format!("Patch type '{patch_type}' is not supported"),
                    );
                }
                let patch: Value = match body["patch"].as_str().map(serde_json::from_str) {
                    Some(Ok(p)) => p,
                    _ => return error(400, 3, "invalid patch"),
                };
                let app = state.apps.get_mut(&name).expect("checked above");
                // The server applies the patch to the latest object and keeps only the spec,
                // labels and annotations of the result.
                let mut patched = app.obj.clone();
                if patch_type == "merge" {
                    crate::wire::merge_patch(&mut patched, &patch);
                } else {
                    // RFC 6902 (`jsonpatch.DecodePatch` + `Apply`); a failed `test` is a plain
                    // Go error there, so gRPC code Unknown, HTTP 500.
                    let ops: Vec<json_patch::PatchOperation> = match serde_json::from_value(patch) {
                        Ok(ops) => ops,
                        Err(e) => {
                            return error(500, 2, &format!("error decoding json patch: {e}"));
                        }
                    };
                    if let Err(e) = json_patch::patch(&mut patched, &ops) {
                        let message = match e.kind {
                            json_patch::PatchErrorKind::TestFailed => {
                                format!("testing value {} failed: test failed", e.path)
                            }
                            _ => e.to_string(),
                        };
                        return error(500, 2, &format!("error applying patch: {message}"));
                    }
                }
                app.obj["spec"] = patched["spec"].clone();
                app.obj["metadata"]["labels"] = patched["metadata"]["labels"].clone();
                app.obj["metadata"]["annotations"] = patched["metadata"]["annotations"].clone();
                for key in ["labels", "annotations"] {
                    if app.obj["metadata"][key].is_null() {
                        app.obj["metadata"]
                            .as_object_mut()
                            .expect("object")
                            .remove(key);
                    }
                }
                state.bump(&name);
                let response = ResponseTemplate::new(200).set_body_json(&state.apps[&name].obj);
                if let Some(edit) = state.after_patch.remove(&name) {
                    let app = state.apps.get_mut(&name).expect("checked above");
                    edit(&mut app.obj);
                    state.bump(&name);
                }
                // The ApplicationSet controller sees the change and rewrites the Application
                // before anyone reads it again.
                reconcile(&mut state, &name);
                response
            }
            Route::Sync => {
                if !state.apps.contains_key(&name) {
                    return permission_denied();
                }
                let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                let now = state.now();
                // argocd-server's Sync refuses what the project's windows block for a manual
                // sync (`server/application/application.go`), before it sets the operation.
                match state.windows_of(&name).1 {
                    Ok(true) => {}
                    Ok(false) => return error(403, 7, "Cannot sync: Blocked by sync window"),
                    Err(e) => {
                        return error(403, 7, &format!("cannot sync: invalid sync window: {e}"));
                    }
                }
                let app = state.apps.get_mut(&name).expect("checked above");
                if app.obj.get("operation").is_some() {
                    return error(
                        400,
                        9,
                        "error setting app operation: rpc error: code = FailedPrecondition desc = another operation is already in progress",
                    );
                }
                let mut sync = json!({ "prune": body["prune"].as_bool().unwrap_or(false) });
                if let Some(r) = body["revision"].as_str() {
                    sync["revision"] = json!(r);
                }
                let op = json!({
                    "sync": sync,
                    "initiatedBy": { "username": "ci-bot" },
                    "info": body["infos"].clone(),
                });
                app.obj["operation"] = op.clone();
                // The controller picks the operation up at once.
                app.obj["status"]["operationState"] = json!({
                    "phase": "Running", "message": "", "startedAt": now, "operation": op,
                });
                app.running = 0;
                app.started = Some(Instant::now());
                state.bump(&name);
                ResponseTemplate::new(200).set_body_json(&state.apps[&name].obj)
            }
            Route::Terminate => {
                let Some(app) = state.apps.get_mut(&name) else {
                    return permission_denied();
                };
                let running = app.obj.get("operation").is_some()
                    && app.obj["status"]["operationState"]["phase"] == json!("Running");
                if !running {
                    return error(
                        400,
                        3,
                        "Unable to terminate operation. No operation is in progress",
                    );
                }
                app.obj["status"]["operationState"]["phase"] = json!("Terminating");
                state.bump(&name);
                ResponseTemplate::new(200).set_body_json(json!({}))
            }
            // As upstream's `Watch` (server/application/application.go at 37ee0097): a named
            // watch first sends an ADDED event with the current object, even when
            // `resourceVersion` is given ("single app watch API is used for during operations
            // like app syncing and it is critical to never miss events"), then live events;
            // `isApplicationPermitted` drops any object whose resourceVersion is below the
            // given one, and every object of an app that does not exist or may not be read,
            // so such a stream stays silent (here: it ends empty, as wiremock cannot hold an
            // open body).
            Route::Stream => {
                let query = |key: &str| {
                    request
                        .url
                        .query_pairs()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.into_owned())
                };
                let name = query("name").unwrap_or_default();
                let min_version: u64 = query("resourceVersion")
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                if !state.apps.contains_key(&name) {
                    return ResponseTemplate::new(200)
                        .set_body_raw(Vec::new(), "application/json")
                        .set_delay(state.request_delay);
                }
                if state.apps[&name].timing.is_some() {
                    return timed_stream(&mut state, &name, min_version);
                }
                let mut lines = vec![
                    json!({"result": {"type": "ADDED", "application": state.apps[&name].obj}}),
                ];
                for _ in 0..state.steps_per_stream {
                    if state.tick(&name) {
                        lines.push(json!({"result": {"type": "MODIFIED", "application": state.apps[&name].obj}}));
                    }
                }
                let body = stream_body(&lines, min_version);
                // The body ends here: the stream is cut, as a load balancer does.
                ResponseTemplate::new(200)
                    .set_body_raw(body, "application/json")
                    .set_delay(state.request_delay)
            }
            Route::AppSets => {
                let items: Vec<&Value> = state.sets.values().map(|s| &s.obj).collect();
                ResponseTemplate::new(200).set_body_json(json!({ "metadata": {}, "items": items }))
            }
            Route::AppSet => match state.sets.get(&name) {
                Some(set) => ResponseTemplate::new(200).set_body_json(&set.obj),
                None => permission_denied(),
            },
            Route::SyncWindows => {
                if !state.apps.contains_key(&name) {
                    return permission_denied();
                }
                // `GetApplicationSyncWindows` (argo-cd server/application/application.go): the
                // matching windows, the active ones and `CanSync(true)`, computed in each
                // window's zone; invalid windows answer "invalid sync windows" (Unknown, 500).
                // Each window goes out as `applicationApplicationSyncWindow` through
                // `convertSyncWindows`, which copies kind, schedule, duration and manualSync:
                // no `timeZone`.
                let (windows, can_sync) = state.windows_of(&name);
                let now = Timestamp::now();
                let invalid = |e: deploy_core::window::InvalidWindow| {
                    error(500, 2, &format!("invalid sync windows: {e}"))
                };
                let can_sync = match can_sync {
                    Ok(c) => c,
                    Err(e) => return invalid(e),
                };
                let wire = |w: &deploy_core::window::SyncWindow| {
                    json!({ "kind": w.kind.to_string(), "schedule": w.schedule,
                            "duration": w.duration, "manualSync": w.manual_sync })
                };
                let mut active = Vec::new();
                for w in &windows {
                    match w.active_at(now) {
                        Ok(true) => active.push(wire(w)),
                        Ok(false) => {}
                        Err(e) => return invalid(e),
                    }
                }
                let assigned: Vec<Value> = windows.iter().map(wire).collect();
                // `convertSyncWindows` answers nil for no windows: the key is left out.
                let mut body = json!({ "canSync": can_sync });
                if !assigned.is_empty() {
                    body["assignedWindows"] = json!(assigned);
                }
                if !active.is_empty() {
                    body["activeWindows"] = json!(active);
                }
                ResponseTemplate::new(200).set_body_json(body)
            }
            Route::Project => {
                // `ProjectService.Get` (argo-cd server/project/project.go): RBAC
                // `projects, get` first (403 "permission denied"), then the AppProject
                // (`v1alpha1AppProject`), its windows with `timeZone`. Every project an
                // Application names exists here (as upstream's `default` does).
                if state.projects_unreadable {
                    return permission_denied();
                }
                let project = state
                    .projects
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| json!({ "metadata": { "name": name }, "spec": {} }));
                ResponseTemplate::new(200).set_body_json(project)
            }
            Route::Clusters => ResponseTemplate::new(200).set_body_json(json!({
                "metadata": {}, "items": clusters()
            })),
            Route::UserInfo => ResponseTemplate::new(200).set_body_json(json!({
                "loggedIn": true, "username": "ci-bot", "iss": "argocd", "groups": []
            })),
        }
    }
}

/// The watch stream of a timed Application on the wall clock. wiremock cannot send a body in
/// parts, so the answer is held until the next change is due (at most the stream hold, and
/// at least the request delay), then carries the current object and that change, and ends:
/// the client sees each change when it happens and reconnects for the next one.
fn timed_stream(state: &mut State, name: &str, min_version: u64) -> ResponseTemplate {
    let now = Instant::now();
    state.settle_at(name, now);
    let mut lines = vec![json!({"result": {"type": "ADDED", "application": state.apps[name].obj}})];
    let mut until = now + state.stream_hold;
    if let Some(due) = state.apps[name].next_due().filter(|d| *d <= until) {
        // The change is applied now and delivered when due; nothing else observes this
        // Application meanwhile but its (single) watcher.
        for obj in state.settle_at(name, due) {
            lines.push(json!({"result": {"type": "MODIFIED", "application": obj}}));
        }
        until = due;
    }
    let body = stream_body(&lines, min_version);
    ResponseTemplate::new(200)
        .set_body_raw(body, "application/json")
        .set_delay(
            until
                .saturating_duration_since(now)
                .max(state.request_delay),
        )
}

/// The NDJSON body of watch events, without those below `min_version` (upstream
/// `isApplicationPermitted`: `appVersion < minVersion` is not sent).
fn stream_body(events: &[Value], min_version: u64) -> String {
    events
        .iter()
        .filter(|e| {
            e["result"]["application"]["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse::<u64>().ok())
                .is_none_or(|rv| rv >= min_version)
        })
        .map(|e| format!("{e}\n"))
        .collect()
}

/// The ApplicationSet the fake serves at start: `myapp-prod`, ignoring the Helm parameters
/// and preserving every annotation `deploy` writes (as `deploy render applicationset` does).
pub fn application_set() -> Value {
    let mut set = application_set_without_preserved_fields();
    set["spec"]["preservedFields"] =
        json!({ "annotations": crate::render::preserved_annotations() });
    set
}

/// [`application_set`] as a team may have it: no `spec.preservedFields`.
pub fn application_set_without_preserved_fields() -> Value {
    json!({
        "metadata": { "name": "myapp-prod", "namespace": "argocd", "resourceVersion": "11",
                      "annotations": { "team": "platform" } },
        "spec": {
            "goTemplate": true,
            "generators": [{ "list": { "elements": [{ "cluster": "us-west-2" }, { "cluster": "eu-west-1" }] } }],
            "template": {
                "metadata": { "name": "myapp-prod-{{.cluster}}" },
                "spec": {
                    "project": "default",
                    "source": { "repoURL": "https://git.example.com/myapp.git", "path": "chart", "targetRevision": "HEAD" },
                    "destination": { "name": "{{.cluster}}", "namespace": "myapp" },
                    "syncPolicy": { "syncOptions": ["CreateNamespace=true"] }
                }
            },
            "ignoreApplicationDifferences": [{ "jsonPointers": ["/spec/source/helm/parameters"] }]
        }
    })
}

/// The clusters the fake serves.
pub fn clusters() -> Value {
    json!([
        { "name": "us-west-2", "server": "https://a.eks.amazonaws.com",
          "info": { "connectionState": { "status": "Successful", "attemptedAt": "2026-01-01T00:00:00Z" } } },
        { "name": "eu-west-1", "server": "https://b.eks.amazonaws.com",
          "connectionState": { "status": "Failed", "message": "dial tcp: i/o timeout" } }
    ])
}

/// The image override a source carries, as the controller renders it: its Kustomize images
/// when it has any, else the Helm tag parameter with every other parameter offered as a
/// digest parameter ([`rendered_images`] uses those the chart declares).
fn spec_override(source: &Value, tag_parameter: &str) -> OverrideValue {
    let images: Vec<String> = source["kustomize"]["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !images.is_empty() {
        return OverrideValue::Kustomize { images };
    }
    let mut parameters: BTreeMap<String, String> = source["helm"]["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p["name"].as_str()?.to_owned(),
                        p["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    OverrideValue::Helm {
        parameter: tag_parameter.to_owned(),
        value: parameters.remove(tag_parameter).unwrap_or_default(),
        digests: parameters,
    }
}

/// The Application object of `seed`, as Argo CD serves it.
pub fn application(seed: &AppSeed, rv: u64, now: &str) -> Value {
    let tag = &seed.helm_parameters[&seed.tag_parameter];
    let parameters: Vec<Value> = seed
        .helm_parameters
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let source = json!({
        "repoURL": "https://git.example.com/myapp.git", "path": "chart", "targetRevision": "HEAD",
        "helm": { "valueFiles": ["values.yaml"], "parameters": parameters }
    });
    let mut spec = json!({
        "project": "default",
        "source": source,
        "destination": { "name": seed.destination, "namespace": "myapp" },
    });
    if let SyncMode::Automated { prune, self_heal } = seed.sync_mode {
        spec["syncPolicy"] = json!({ "automated": { "prune": prune, "selfHeal": self_heal } });
    }
    let images: Vec<String> = seed
        .image_names
        .iter()
        .map(|n| format!("{n}:{tag}"))
        .collect();
    json!({
        "metadata": {
            "name": seed.name, "namespace": "argocd", "labels": seed.labels,
            "resourceVersion": rv.to_string(), "uid": format!("uid-{}", seed.name),
            "creationTimestamp": now, "generation": 1
        },
        "spec": spec,
        "status": {
            "sync": { "status": "Synced", "revision": "4b1f0c2a" },
            "health": { "status": "Healthy" },
            "reconciledAt": now,
            "summary": { "images": images },
            "history": [{ "id": 0, "revision": "4b1f0c2a", "deployedAt": now, "deployStartedAt": now, "source": source }],
            "sourceType": "Helm"
        }
    })
}

/// The fake Argo CD: a wiremock server and its state.
pub struct FakeArgo {
    /// The server.
    pub server: MockServer,
    state: Arc<Mutex<State>>,
}

impl FakeArgo {
    /// Starts a server answering every endpoint the client uses.
    pub async fn start() -> Self {
        Self::start_with(2).await
    }

    /// Starts a server whose watch streams carry at most `steps` controller steps each.
    pub async fn start_with(steps: usize) -> Self {
        let server = MockServer::start().await;
        let initial = application_set();
        let state = Arc::new(Mutex::new(State {
            apps: BTreeMap::new(),
            sets: BTreeMap::from([(
                initial["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                SetSim {
                    obj: initial,
                    controller: false,
                },
            )]),
            generated: BTreeMap::new(),
            reconciles: 0,
            rv: 100,
            clock: 0,
            steps_per_stream: steps,
            after_patch: BTreeMap::new(),
            request_delay: Duration::ZERO,
            stream_hold: Duration::from_secs(1),
            faults: Vec::new(),
            fault_answers: BTreeMap::new(),
            projects: BTreeMap::new(),
            projects_unreadable: false,
        }));
        let app = r"^/api/v1/applications/[^/]+$";
        let routes: Vec<(&str, String, Route)> = vec![
            ("GET", app.into(), Route::Get),
            ("GET", "^/api/v1/applications$".into(), Route::List),
            ("PATCH", app.into(), Route::Patch),
            (
                "POST",
                r"^/api/v1/applications/[^/]+/sync$".into(),
                Route::Sync,
            ),
            (
                "DELETE",
                r"^/api/v1/applications/[^/]+/operation$".into(),
                Route::Terminate,
            ),
            ("GET", "^/api/v1/stream/applications$".into(), Route::Stream),
            ("GET", "^/api/v1/applicationsets$".into(), Route::AppSets),
            (
                "GET",
                r"^/api/v1/applicationsets/[^/]+$".into(),
                Route::AppSet,
            ),
            ("GET", "^/api/v1/clusters$".into(), Route::Clusters),
            ("GET", "^/api/v1/session/userinfo$".into(), Route::UserInfo),
            (
                "GET",
                r"^/api/v1/applications/[^/]+/syncwindows$".into(),
                Route::SyncWindows,
            ),
            ("GET", r"^/api/v1/projects/[^/]+$".into(), Route::Project),
        ];
        for (verb, regex, route) in routes {
            Mock::given(method(verb))
                .and(path_regex(regex))
                .respond_with(Responder {
                    state: Arc::clone(&state),
                    route,
                })
                // Counts are asserted per test from the received requests.
                .expect(0..)
                .mount(&server)
                .await;
        }
        // The client never uses Argo CD's rollback endpoint (it cannot carry operation info).
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/v1/applications/[^/]+/rollback$"))
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// Changes Application `name` as another client would (its resourceVersion moves).
    pub fn edit(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock().expect("fake state");
        edit(&mut state.apps.get_mut(name).expect("known app").obj);
        state.bump(name);
    }

    /// Changes Application `name` right after the next successful PATCH of it, before any
    /// other request is answered.
    pub fn edit_after_next_patch(
        &self,
        name: &str,
        edit: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        let mut state = self.state.lock().expect("fake state");
        state.after_patch.insert(name.to_owned(), Box::new(edit));
    }

    /// Starts an operation as another user (`alice`) that the controller finishes
    /// (Succeeded) by itself once Application `name` has been observed `observations` more
    /// times: someone's sync that a run must wait out.
    pub fn start_foreign_operation_for(&self, name: &str, observations: u32) {
        let mut state = self.state.lock().expect("fake state");
        start_foreign(&mut state, name);
        state.apps.get_mut(name).expect("known app").foreign_left = Some(observations);
    }

    /// Starts a sync of release `tag` as another user (`alice`, as `argocd app set` then
    /// `argocd app sync` would): the spec's tag parameter names `tag` at once, and once
    /// Application `name` has been observed `observations` more times the controller ends it:
    /// the images run `tag`, Synced and Healthy, and the operation ends as `end` says.
    pub fn start_foreign_sync(&self, name: &str, tag: &str, observations: u32, end: ForeignEnd) {
        let mut state = self.state.lock().expect("fake state");
        start_foreign(&mut state, name);
        let app = state.apps.get_mut(name).expect("known app");
        app.foreign_left = Some(observations);
        app.foreign_sync = Some((tag.to_owned(), end));
        let parameter = app.tag_parameter.clone();
        let parameters = app.obj["spec"]["source"]["helm"]["parameters"]
            .as_array_mut()
            .expect("helm parameters");
        for p in parameters
            .iter_mut()
            .filter(|p| p["name"] == json!(parameter))
        {
            p["value"] = json!(tag);
        }
        state.bump(name);
    }

    /// Gives Application `name`'s chart a digest parameter per image (image name →
    /// parameter): set to a digest, the chart renders that image as `name@digest` (see
    /// [`rendered_images`]); the sync after a write shows it in `status.summary.images`.
    pub fn set_digest_parameters(&self, name: &str, parameters: BTreeMap<String, String>) {
        let mut state = self.state.lock().expect("fake state");
        state
            .apps
            .get_mut(name)
            .expect("known app")
            .digest_parameters = parameters;
    }

    /// Makes `requests` for Application `name` answer `outage` for as long as `lasts` says,
    /// as Argo CD (or a restart of it) answers them; see [`Outage`] for the bodies. A later
    /// fault for the same requests and Application comes after this one ends.
    pub fn inject(&self, name: &str, requests: Requests, outage: Outage, lasts: Lasts) {
        let mut state = self.state.lock().expect("fake state");
        state.faults.push(Fault {
            application: name.to_owned(),
            requests,
            outage,
            lasts,
            first_answer: None,
            answered: 0,
        });
    }

    /// Ends every fault injected for Application `name`.
    pub fn clear(&self, name: &str) {
        let mut state = self.state.lock().expect("fake state");
        state.faults.retain(|f| f.application != name);
    }

    /// How many answers the faults of Application `name` gave so far.
    pub fn fault_answers(&self, name: &str) -> u32 {
        let state = self.state.lock().expect("fake state");
        state.fault_answers.get(name).copied().unwrap_or(0)
    }

    /// Delays every answer by `delay` (network and server time; default none). A watch
    /// stream's answer is delayed by at least as much.
    pub fn set_request_delay(&self, delay: Duration) {
        self.state.lock().expect("fake state").request_delay = delay;
    }

    /// Runs the operations of Application `name` on the wall clock: a sync finishes
    /// `timing.sync` after its request arrived, and health moves `timing.health` later, instead
    /// of one step per observation. Its watch stream then waits for the next change.
    pub fn set_timing(&self, name: &str, timing: Timing) {
        let mut state = self.state.lock().expect("fake state");
        state.apps.get_mut(name).expect("known app").timing = Some(timing);
    }

    /// How long the watch stream of a timed Application stays open without a change before
    /// the server ends it (default 1 s; keep it under the client's request timeout, since
    /// wiremock holds the response head too).
    pub fn set_stream_hold(&self, hold: Duration) {
        self.state.lock().expect("fake state").stream_hold = hold;
    }

    /// Creates or replaces an ApplicationSet (its `metadata.name` names it); its controller
    /// keeps its switch (off for a new one).
    pub fn put_application_set(&self, set: Value) {
        let mut state = self.state.lock().expect("fake state");
        let name = set["metadata"]["name"]
            .as_str()
            .expect("an ApplicationSet has a name")
            .to_owned();
        let controller = state.sets.get(&name).is_some_and(|s| s.controller);
        state.sets.insert(
            name,
            SetSim {
                obj: set,
                controller,
            },
        );
    }

    /// Switches the controller of ApplicationSet `set` on or off: when on, every change to an
    /// Application it owns is followed at once by the rewrite upstream's controller makes.
    pub fn set_controller(&self, set: &str, on: bool) {
        let mut state = self.state.lock().expect("fake state");
        state
            .sets
            .get_mut(set)
            .expect("known ApplicationSet")
            .controller = on;
    }

    /// Makes ApplicationSet `set` the owner of Application `app`: an `ownerReferences` entry
    /// (as `controllerutil.SetControllerReference` writes it), and its spec, labels and
    /// annotations as they are now become what the template generates for it.
    pub fn own(&self, app: &str, set: &str) {
        let mut state = self.state.lock().expect("fake state");
        let uid = format!("uid-applicationset-{set}");
        let sim = state.apps.get_mut(app).expect("known app");
        let obj = &mut sim.obj;
        obj["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet", "name": set,
            "uid": uid, "controller": true, "blockOwnerDeletion": true
        }]);
        let generated = Generated {
            set: set.to_owned(),
            spec: obj["spec"].clone(),
            labels: obj["metadata"]["labels"].clone(),
            annotations: obj["metadata"]
                .get("annotations")
                .cloned()
                .unwrap_or_else(|| json!({})),
        };
        state.generated.insert(app.to_owned(), generated);
        state.bump(app);
    }

    /// How many times an ApplicationSet controller reconciled an Application it owns after
    /// a change (whether or not it rewrote it).
    pub fn reconciles(&self) -> u32 {
        self.state.lock().expect("fake state").reconciles
    }

    /// Sets the `spec.syncWindows` of AppProject `project` (`v1alpha1SyncWindow` objects);
    /// the syncwindows endpoint and the sync endpoint then answer by them and the wall clock.
    pub fn set_sync_windows(&self, project: &str, windows: Value) {
        let mut state = self.state.lock().expect("fake state");
        state.projects.insert(
            project.to_owned(),
            json!({ "metadata": { "name": project }, "spec": { "syncWindows": windows } }),
        );
    }

    /// Answers `GET /api/v1/projects/{name}` with 403, as Argo CD does to a token without
    /// `projects, get`: the client then has only the windows of the Application's syncwindows
    /// answer, without their zones.
    pub fn set_projects_unreadable(&self, unreadable: bool) {
        self.state.lock().expect("fake state").projects_unreadable = unreadable;
    }

    /// Application `name` as served, as JSON.
    pub fn object(&self, name: &str) -> Value {
        let state = self.state.lock().expect("fake state");
        state.apps[name].obj.clone()
    }

    /// The Application objects served, as JSON.
    pub fn objects(&self) -> Vec<Value> {
        let state = self.state.lock().expect("fake state");
        state.apps.values().map(|a| a.obj.clone()).collect()
    }
}

#[async_trait]
impl ArgoCdFixture for FakeArgo {
    async fn create_application(&self, seed: &AppSeed) {
        let mut state = self.state.lock().expect("fake state");
        let now = state.now();
        state.rv += 1;
        let obj = application(seed, state.rv, &now);
        state.apps.insert(
            seed.name.clone(),
            AppSim {
                obj,
                script: Script::Healthy,
                tag_parameter: seed.tag_parameter.clone(),
                image_names: seed.image_names.clone(),
                digest_parameters: BTreeMap::new(),
                running: 0,
                health_next: None,
                foreign: false,
                foreign_left: None,
                foreign_sync: None,
                timing: None,
                started: None,
            },
        );
    }

    async fn script(&self, name: &str, script: Script) {
        let mut state = self.state.lock().expect("fake state");
        state.apps.get_mut(name).expect("known app").script = script;
    }

    async fn start_foreign_operation(&self, name: &str) {
        let mut state = self.state.lock().expect("fake state");
        start_foreign(&mut state, name);
    }

    async fn finish_foreign_operation(&self, name: &str) {
        let mut state = self.state.lock().expect("fake state");
        let now = state.now();
        let app = state.apps.get_mut(name).expect("known app");
        app.foreign = false;
        match app.foreign_sync.take() {
            None => finish(
                &mut app.obj,
                "Succeeded",
                "successfully synced (all tasks run)",
                &now,
            ),
            Some((tag, end)) => {
                finish_foreign_sync(&mut app.obj, &app.image_names, &tag, end, &now)
            }
        }
        state.bump(name);
    }
}

/// Starts an operation on `name` as `alice`, running until finished from outside.
fn start_foreign(state: &mut State, name: &str) {
    let now = state.now();
    let app = state.apps.get_mut(name).expect("known app");
    let op = json!({ "sync": { "revision": "4b1f0c2a" }, "initiatedBy": { "username": "alice" } });
    app.obj["operation"] = op.clone();
    app.obj["status"]["operationState"] = json!({
        "phase": "Running", "message": "", "startedAt": now, "operation": op,
    });
    app.foreign = true;
    app.foreign_left = None;
    app.foreign_sync = None;
    state.bump(name);
}

/// A client of `server` with fast test timings.
pub fn client(server: &MockServer) -> crate::rest::RestArgoCd {
    client_with(server, crate::rest::RestOptions::fast())
}

/// A client of `server` with `options`.
pub fn client_with(
    server: &MockServer,
    options: crate::rest::RestOptions,
) -> crate::rest::RestArgoCd {
    let config = deploy_core::config::ArgoCdConfig {
        server: Some(server.uri()),
        plaintext: false,
        insecure: false,
        namespace: "argocd".into(),
    };
    crate::rest::RestArgoCd::with_options(&config, TOKEN.to_owned().into(), options)
        .expect("client")
}
