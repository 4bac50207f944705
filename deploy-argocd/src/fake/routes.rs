//! The HTTP skin: each endpoint the client uses, answered from the state as argocd-server
//! answers it (status codes, grpc-gateway error bodies, the NDJSON watch stream).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use deploy_core::sim::{Run, RunKind};
use jiff::Timestamp;
use serde_json::{Value, json};
use wiremock::{Request, Respond, ResponseTemplate};

use super::TOKEN;
use super::faults::Requests;
use super::objects::{clusters, error, permission_denied};
use super::state::State;

/// Which endpoint a responder serves.
#[derive(Debug, Clone, Copy)]
pub(super) enum Route {
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
pub(super) struct Responder {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) route: Route,
}

fn app_name(request: &Request) -> String {
    request
        .url
        .path_segments()
        .and_then(|mut s| s.nth(3))
        .unwrap_or_default()
        .to_owned()
}

fn query(request: &Request, key: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
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
            Route::Stream => query(request, "name").map(|v| (Requests::Reads, v)),
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
        let state = &mut *state;
        let app_routes = matches!(
            self.route,
            Route::Get | Route::Patch | Route::Sync | Route::Terminate | Route::SyncWindows
        );
        if app_routes && !state.apps.contains_key(&name) {
            return permission_denied();
        }
        match self.route {
            Route::Get => {
                state.settle_at(&name, Instant::now());
                ResponseTemplate::new(200).set_body_json(&state.apps[&name].obj)
            }
            Route::List => list(state, request),
            Route::Patch => patch(state, &name, request),
            Route::Sync => sync(state, &name, request),
            Route::Terminate => terminate(state, &name),
            Route::Stream => stream(state, request),
            Route::AppSets => {
                let items: Vec<&Value> = state.sets.values().map(|s| &s.obj).collect();
                ResponseTemplate::new(200).set_body_json(json!({ "metadata": {}, "items": items }))
            }
            Route::AppSet => match state.sets.get(&name) {
                Some(set) => ResponseTemplate::new(200).set_body_json(&set.obj),
                None => permission_denied(),
            },
            Route::SyncWindows => sync_windows(state, &name),
            Route::Project => project(state, &name),
            Route::Clusters => ResponseTemplate::new(200).set_body_json(json!({
                "metadata": {}, "items": clusters()
            })),
            Route::UserInfo => ResponseTemplate::new(200).set_body_json(json!({
                "loggedIn": true, "username": "ci-bot", "iss": "argocd", "groups": []
            })),
        }
    }
}

fn list(state: &State, request: &Request) -> ResponseTemplate {
    let selector = query(request, "selector");
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

/// The patch in a `PATCH /api/v1/applications/{name}` body, applied to `obj`; the error answer
/// as argocd-server gives it.
fn apply_patch(obj: &Value, request: &Request) -> Result<Value, Box<ResponseTemplate>> {
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|e| Box::new(error(400, 3, &e.to_string())))?;
    let patch_type = body["patchType"].as_str().unwrap_or_default().to_owned();
    if !matches!(patch_type.as_str(), "merge" | "json" | "") {
        return Err(Box::new(error(
            400,
            3,
            &format!("Patch type '{patch_type}' is not supported"),
        )));
    }
    let patch: Value = match body["patch"].as_str().map(serde_json::from_str) {
        Some(Ok(p)) => p,
        _ => return Err(Box::new(error(400, 3, "invalid patch"))),
    };
    let mut patched = obj.clone();
    if patch_type == "merge" {
        crate::wire::merge_patch(&mut patched, &patch);
        return Ok(patched);
    }
    // RFC 6902 (`jsonpatch.DecodePatch` + `Apply`); a failed `test` is a plain Go error there,
    // so gRPC code Unknown, HTTP 500.
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_value(patch)
        .map_err(|e| Box::new(error(500, 2, &format!("error decoding json patch: {e}"))))?;
    if let Err(e) = json_patch::patch(&mut patched, &ops) {
        let message = match e.kind {
            json_patch::PatchErrorKind::TestFailed => {
                format!("testing value {} failed: test failed", e.path)
            }
            _ => e.to_string(),
        };
        return Err(Box::new(error(
            500,
            2,
            &format!("error applying patch: {message}"),
        )));
    }
    Ok(patched)
}

fn patch(state: &mut State, name: &str, request: &Request) -> ResponseTemplate {
    let app = state.apps.get_mut(name).expect("checked by the caller");
    // The server applies the patch to the latest object and keeps only the spec, labels and
    // annotations of the result.
    let patched = match apply_patch(&app.obj, request) {
        Ok(p) => p,
        Err(answer) => return *answer,
    };
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
    state.bump(name);
    let response = ResponseTemplate::new(200).set_body_json(&state.apps[name].obj);
    if let Some(edit) = state.after_patch.remove(name) {
        let app = state.apps.get_mut(name).expect("checked above");
        (edit.0)(&mut app.obj);
        state.bump(name);
    }
    // The ApplicationSet controller sees the change and rewrites the Application before anyone
    // reads it again.
    state.reconcile(name);
    response
}

fn sync(state: &mut State, name: &str, request: &Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let now = state.now();
    // argocd-server's Sync refuses what the project's windows block for a manual sync
    // (`server/application/application.go`), before it sets the operation.
    match state.windows_of(name).1 {
        Ok(true) => {}
        Ok(false) => return error(403, 7, "Cannot sync: Blocked by sync window"),
        Err(e) => {
            return error(403, 7, &format!("cannot sync: invalid sync window: {e}"));
        }
    }
    let origin = state.origin;
    let app = state.apps.get_mut(name).expect("checked by the caller");
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
    let at = app.clock(Instant::now(), origin);
    app.run = Some(Run::new(RunKind::Sync, app.script, at, "ci-bot"));
    state.bump(name);
    ResponseTemplate::new(200).set_body_json(&state.apps[name].obj)
}

fn terminate(state: &mut State, name: &str) -> ResponseTemplate {
    let app = state.apps.get_mut(name).expect("checked by the caller");
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
    if let Some(run) = app.run.as_mut() {
        run.terminating = true;
    }
    state.bump(name);
    ResponseTemplate::new(200).set_body_json(json!({}))
}

/// As upstream's `Watch` (server/application/application.go at 37ee0097): a named watch first
/// sends an ADDED event with the current object, even when `resourceVersion` is given ("single
/// app watch API is used for during operations like app syncing and it is critical to never
/// miss events"), then live events; `isApplicationPermitted` drops any object whose
/// resourceVersion is below the given one, and every object of an app that does not exist or
/// may not be read, so such a stream stays silent (here: it ends empty, as wiremock cannot
/// hold an open body).
fn stream(state: &mut State, request: &Request) -> ResponseTemplate {
    let name = query(request, "name").unwrap_or_default();
    let min_version: u64 = query(request, "resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    if !state.apps.contains_key(&name) {
        return ResponseTemplate::new(200)
            .set_body_raw(Vec::new(), "application/json")
            .set_delay(state.request_delay);
    }
    if state.apps[&name].timing.is_some() {
        return timed_stream(state, &name, min_version);
    }
    let mut lines =
        vec![json!({"result": {"type": "ADDED", "application": state.apps[&name].obj}})];
    for _ in 0..state.steps_per_stream {
        if state.tick(&name) {
            lines.push(
                json!({"result": {"type": "MODIFIED", "application": state.apps[&name].obj}}),
            );
        }
    }
    let body = stream_body(&lines, min_version);
    // The body ends here: the stream is cut, as a load balancer does.
    ResponseTemplate::new(200)
        .set_body_raw(body, "application/json")
        .set_delay(state.request_delay)
}

/// `GetApplicationSyncWindows` (argo-cd server/application/application.go): the matching
/// windows, the active ones and `CanSync(true)`, computed in each window's zone; invalid windows
/// answer "invalid sync windows" (Unknown, 500). Each window goes out as
/// `applicationApplicationSyncWindow` through `convertSyncWindows`, which copies kind,
/// schedule, duration and manualSync: no `timeZone`.
fn sync_windows(state: &State, name: &str) -> ResponseTemplate {
    let (windows, can_sync) = state.windows_of(name);
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

/// `ProjectService.Get` (argo-cd server/project/project.go): RBAC `projects, get` first (403
/// "permission denied"), then the AppProject (`v1alpha1AppProject`), its windows with
/// `timeZone`. Every project an Application names exists here (as upstream's `default` does).
fn project(state: &State, name: &str) -> ResponseTemplate {
    if state.projects_unreadable {
        return permission_denied();
    }
    let project = state
        .projects
        .get(name)
        .cloned()
        .unwrap_or_else(|| json!({ "metadata": { "name": name }, "spec": {} }));
    ResponseTemplate::new(200).set_body_json(project)
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
    if let Some(due) = state.apps[name]
        .next_due()
        .map(|d| state.origin.instant(d))
        .filter(|d| *d <= until)
    {
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
