//! Test support, not for production use: a stateful Argo CD API server on wiremock for the
//! tests of this crate and of the crates above it (compiled only with the `fake` feature).
//! It is the HTTP skin of the Argo CD simulation ([`deploy_core::sim`]): what the controllers
//! do comes from there; this module keeps the JSON objects and what HTTP adds.
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
//! Application it owns ([`deploy_core::sim::appset::reconcile`]).
//!
//! Time is simulated: the "controller" advances an Application by one step each time it is
//! observed (a GET or a watch stream: one second of that Application's own clock for the
//! simulation), so no test waits on the wall clock. Benches can opt in
//! to the wall clock instead: [`FakeArgo::set_timing`] gives an Application real sync and
//! health durations (its watch stream then stays open until the next change is due, as Argo
//! CD's does), and [`FakeArgo::set_request_delay`] delays every answer.
//!
//! ```toml
//! [dev-dependencies]
//! deploy-argocd = { workspace = true, features = ["fake"] }
//! ```

mod faults;
mod objects;
mod routes;
mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::sim::appset::Generated;
use deploy_core::sim::operation::FOREIGN_USER;
use deploy_core::sim::{AppSeed, Script};
use deploy_core::sim::{Run, RunKind, Timing};
use deploy_engine::conformance::argocd::ArgoCdFixture;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use faults::Fault;
pub use faults::{Lasts, Outage, Requests};
pub use objects::{
    ForeignEnd, application, application_set, application_set_without_preserved_fields, clusters,
    sync_window,
};
use routes::{Responder, Route};
use state::{AppSim, SetSim, State};

/// The token the fake accepts.
pub const TOKEN: &str = "argocd-test-token-9f8e7d6c";

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
        let name = initial["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sets = BTreeMap::from([(
            name,
            SetSim {
                obj: initial,
                controller: false,
            },
        )]);
        let state = Arc::new(Mutex::new(State::new(steps, sets)));
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
        state
            .after_patch
            .insert(name.to_owned(), state::Edit(Box::new(edit)));
    }

    /// Starts an operation as another user (`alice`) that the controller finishes
    /// (Succeeded) by itself once Application `name` has been observed `observations` more
    /// times: someone's sync that a run must wait out.
    pub fn start_foreign_operation_for(&self, name: &str, observations: u32) {
        let mut state = self.state.lock().expect("fake state");
        start_foreign(&mut state, name, Some(observations));
    }

    /// Starts a sync of release `tag` as another user (`alice`, as `argocd app set` then
    /// `argocd app sync` would): the spec's tag parameter names `tag` at once, and once
    /// Application `name` has been observed `observations` more times the controller ends it:
    /// the images run `tag`, Synced and Healthy, and the operation ends as `end` says.
    pub fn start_foreign_sync(&self, name: &str, tag: &str, observations: u32, end: ForeignEnd) {
        let mut state = self.state.lock().expect("fake state");
        start_foreign(&mut state, name, Some(observations));
        let app = state.apps.get_mut(name).expect("known app");
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
    /// [`deploy_core::sim::rendered_images`]); the sync after a write shows it in `status.summary.images`.
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
        let generated = Generated::from_live(set, obj);
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
        let sim = AppSim::new(obj, &seed.tag_parameter, &seed.image_names);
        state.apps.insert(seed.name.clone(), sim);
    }

    /// How the running operation of ours, or else the next one, ends.
    async fn script(&self, name: &str, script: Script) {
        let mut state = self.state.lock().expect("fake state");
        let app = state.apps.get_mut(name).expect("known app");
        app.script = script;
        if let Some(run) = app.run.as_mut().filter(|r| !r.is_foreign()) {
            run.script = script;
        }
    }

    async fn start_foreign_operation(&self, name: &str) {
        let mut state = self.state.lock().expect("fake state");
        start_foreign(&mut state, name, None);
    }

    async fn finish_foreign_operation(&self, name: &str) {
        self.state.lock().expect("fake state").finish_foreign(name);
    }

    /// The windows of the Application's project (`default`, as every seeded one's).
    async fn set_sync_windows(&self, _name: &str, windows: &[deploy_core::window::SyncWindow]) {
        let windows: Vec<Value> = windows.iter().map(sync_window).collect();
        FakeArgo::set_sync_windows(self, "default", json!(windows));
    }
}

/// Starts an operation on `name` as `alice`, running until finished from outside, or until
/// the Application was observed `observations` more times.
fn start_foreign(state: &mut State, name: &str, observations: Option<u32>) {
    let now = state.now();
    let origin = state.origin;
    let app = state.apps.get_mut(name).expect("known app");
    let op = json!({ "sync": { "revision": "4b1f0c2a" }, "initiatedBy": { "username": "alice" } });
    app.obj["operation"] = op.clone();
    app.obj["status"]["operationState"] = json!({
        "phase": "Running", "message": "", "startedAt": now, "operation": op,
    });
    let at = app.clock(std::time::Instant::now(), origin);
    // One observation is one second of an untimed Application's clock; it ends on the one
    // after the last counted.
    let ends = observations.map(|n| at + Duration::from_secs(u64::from(n) + 1));
    app.run = Some(Run::new(
        RunKind::Foreign(ends),
        Script::Healthy,
        at,
        FOREIGN_USER,
    ));
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
