//! An in-memory Argo CD: Applications whose operations run for a configurable time and end
//! Succeeded or Failed, health that moves Progressing → Healthy or Degraded, collisions,
//! history and rollback, automated sync, ApplicationSets and clusters.
//!
//! State moves lazily: every call first advances each Application to the clock's "now",
//! so the backend needs no background task and its state can be saved between commands.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use deploy_core::error::{Error, Result};
use deploy_core::image_override::rendered_images;
use deploy_core::model::SyncMode;
use deploy_core::port::{
    AppStream, Application, ApplicationSet, ArgoCd, Clock, ClusterInfo, Health, HistoryEntry,
    OPERATION_INFO_KEY, OperationPhase, OperationState, OverrideValue, SyncRequest, SyncStatus,
    kustomize_name,
};
use deploy_core::window::{self, AppWindows, SyncWindow};

/// An Application to create: Synced and Healthy, running `image_names` at `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSeed {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Destination cluster name.
    pub destination: String,
    /// Sync policy.
    pub sync_mode: SyncMode,
    /// Helm parameters; the one named `tag_parameter` holds the tag.
    pub helm_parameters: BTreeMap<String, String>,
    /// The Helm parameter holding the tag.
    pub tag_parameter: String,
    /// Image names (without tag) the Application runs.
    pub image_names: Vec<String>,
}

/// How the next operation on an Application ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Script {
    /// Succeeded, then Healthy.
    Healthy,
    /// Succeeded, then Degraded.
    Degraded,
    /// The sync fails (phase Failed), app stays on its old images.
    Failed,
    /// Runs until terminated.
    Hang,
}

/// How long simulated operations take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From sync request to operation finished.
    pub sync: Duration,
    /// From operation finished to Healthy or Degraded.
    pub health: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            sync: Duration::from_secs(2),
            health: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum RunKind {
    /// Sync to the spec's override.
    Sync,
    /// Sync to a history entry's override.
    Rollback(Option<OverrideValue>),
    /// Someone else's operation, ending at the given time or when finished by hand.
    Foreign(Option<Timestamp>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    kind: RunKind,
    script: Script,
    started_at: Timestamp,
    info: BTreeMap<String, String>,
    initiated_by: String,
    terminating: bool,
    /// When a sync window held it Running, the time it was let go (its work starts then).
    #[serde(default)]
    resumed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimApp {
    app: Application,
    image_names: Vec<String>,
    tag_parameter: Option<String>,
    /// The chart's digest parameters: image name → the Helm parameter that, set, makes the
    /// chart render that image by digest ([`InMemoryArgoCd::set_digest_parameters`]).
    #[serde(default)]
    digest_parameters: BTreeMap<String, String>,
    scripts: VecDeque<Script>,
    run: Option<Run>,
    /// Progressing until this time, then the given health.
    settles: Option<(Timestamp, Health)>,
    timing: Option<Timing>,
    /// The sync windows of its project that apply to it ([`InMemoryArgoCd::set_sync_windows`]).
    #[serde(default)]
    windows: Vec<SyncWindow>,
}

/// The whole state, serializable so the sandbox can keep it between commands.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ArgoCdState {
    apps: BTreeMap<String, SimApp>,
    app_sets: BTreeMap<String, ApplicationSet>,
    clusters: BTreeMap<String, ClusterInfo>,
    timing: Timing,
    version: u64,
    /// The token may not read AppProjects ([`InMemoryArgoCd::set_projects_unreadable`]).
    #[serde(default)]
    projects_unreadable: bool,
}

/// An in-memory Argo CD.
#[derive(Debug, Clone)]
pub struct InMemoryArgoCd {
    state: Arc<Mutex<ArgoCdState>>,
    clock: Arc<dyn Clock>,
    poll: Duration,
    user: String,
}

impl InMemoryArgoCd {
    /// An empty Argo CD on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::from_state(ArgoCdState::default(), clock)
    }

    /// An Argo CD with `state` (e.g. loaded by the sandbox).
    pub fn from_state(state: ArgoCdState, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
            poll: Duration::from_millis(50),
            user: "admin".into(),
        }
    }

    /// A copy of the state.
    pub fn state(&self) -> ArgoCdState {
        self.settled().clone()
    }

    /// Default timing of operations.
    pub fn set_timing(&self, timing: Timing) {
        self.state.lock().expect("poisoned").timing = timing;
    }

    /// Timing of one Application's operations.
    pub fn set_app_timing(&self, name: &str, timing: Timing) {
        if let Some(a) = self.state.lock().expect("poisoned").apps.get_mut(name) {
            a.timing = Some(timing);
        }
    }

    /// Creates (or replaces) an Application, Synced and Healthy at its seed's tag.
    pub fn create_application(&self, seed: &AppSeed) {
        let now = self.clock.now();
        let mut s = self.state.lock().expect("poisoned");
        s.version += 1;
        let tag = seed
            .helm_parameters
            .get(&seed.tag_parameter)
            .cloned()
            .unwrap_or_default();
        let override_value = OverrideValue::Helm {
            parameter: seed.tag_parameter.clone(),
            value: tag.clone(),
            digests: BTreeMap::new(),
        };
        let app = Application {
            name: seed.name.clone(),
            project: "default".into(),
            annotations: BTreeMap::new(),
            labels: seed.labels.clone(),
            destination: seed.destination.clone(),
            sync_mode: seed.sync_mode,
            helm_parameters: seed.helm_parameters.clone(),
            kustomize_images: Vec::new(),
            sync_status: SyncStatus::Synced,
            health: Health::Healthy,
            health_message: None,
            operation_pending: false,
            operation_state: None,
            reconciled_at: Some(now),
            images: seed
                .image_names
                .iter()
                .map(|n| format!("{n}:{tag}"))
                .collect(),
            history: vec![HistoryEntry {
                id: 0,
                revision: "HEAD".into(),
                deployed_at: Some(now),
                override_value: Some(override_value),
            }],
            resource_version: s.version.to_string(),
            owner_application_set: None,
            override_sources: None,
        };
        let sim = SimApp {
            app,
            image_names: seed.image_names.clone(),
            tag_parameter: Some(seed.tag_parameter.clone()),
            digest_parameters: BTreeMap::new(),
            scripts: VecDeque::new(),
            run: None,
            settles: None,
            timing: None,
            windows: Vec::new(),
        };
        s.apps.insert(seed.name.clone(), sim);
    }

    /// Gives an Application's chart a digest parameter per image (image name → parameter):
    /// set to a digest, the chart renders that image as `name@digest`, as charts with an
    /// `image.digest` value do (Bitnami's: "if set, will override the tag",
    /// bitnami/charts#11903); empty or absent, as `name:tag`.
    pub fn set_digest_parameters(&self, name: &str, parameters: BTreeMap<String, String>) {
        if let Some(a) = self.state.lock().expect("poisoned").apps.get_mut(name) {
            a.digest_parameters = parameters;
        }
    }

    /// Assigns sync windows to an Application (as if its project's windows matched it): a
    /// manual sync they block is refused as Argo CD refuses it.
    pub fn set_sync_windows(&self, name: &str, windows: Vec<SyncWindow>) {
        if let Some(a) = self.state.lock().expect("poisoned").apps.get_mut(name) {
            a.windows = windows;
        }
    }

    /// Answers as Argo CD does to a token that may not read AppProjects (`projects, get`):
    /// the windows only as the Application's syncwindows answer gives them, without zones.
    pub fn set_projects_unreadable(&self, unreadable: bool) {
        self.state.lock().expect("poisoned").projects_unreadable = unreadable;
    }

    /// Creates (or replaces) an ApplicationSet.
    pub fn put_application_set(&self, set: ApplicationSet) {
        self.state
            .lock()
            .expect("poisoned")
            .app_sets
            .insert(set.name.clone(), set);
    }

    /// Registers (or replaces) a cluster.
    pub fn put_cluster(&self, cluster: ClusterInfo) {
        self.state
            .lock()
            .expect("poisoned")
            .clusters
            .insert(cluster.name.clone(), cluster);
    }

    /// Queues how the next operation of `name` ends.
    pub fn push_script(&self, name: &str, script: Script) {
        if let Some(a) = self.state.lock().expect("poisoned").apps.get_mut(name) {
            a.scripts.push_back(script);
        }
    }

    /// Starts someone else's operation on `name`, lasting `duration` (or until finished by hand).
    pub fn start_foreign(&self, name: &str, duration: Option<Duration>) {
        let now = self.clock.now();
        let mut s = self.settled();
        let s = &mut *s;
        s.version += 1;
        if let Some(a) = s.apps.get_mut(name) {
            let ends = duration.map(|d| now.checked_add(d).unwrap_or(now));
            a.run = Some(Run {
                kind: RunKind::Foreign(ends),
                script: Script::Healthy,
                started_at: now,
                info: BTreeMap::new(),
                initiated_by: "alice@example.com".into(),
                terminating: false,
                resumed_at: None,
            });
            a.app.operation_pending = true;
            a.app.operation_state = Some(running_state(now, "alice@example.com", BTreeMap::new()));
            a.app.resource_version = s.version.to_string();
        }
    }

    /// Finishes someone else's operation now.
    pub fn finish_foreign(&self, name: &str) {
        let now = self.clock.now();
        let mut s = self.settled();
        if let Some(run) = s.apps.get_mut(name).and_then(|a| a.run.as_mut())
            && matches!(run.kind, RunKind::Foreign(_))
        {
            run.kind = RunKind::Foreign(Some(now));
        }
        drop(s);
        drop(self.settled());
    }

    /// Ends someone else's operation now as Failed, as a sync whose PostSync hook failed
    /// would: with `applied`, its resources already run what the spec names (Synced, and as
    /// healthy as before). Nothing is added to the history (Argo CD records only successes).
    pub fn fail_foreign(&self, name: &str, applied: bool) {
        let now = self.clock.now();
        let mut s = self.settled();
        if let Some(sim) = s.apps.get_mut(name)
            && sim
                .run
                .as_ref()
                .is_some_and(|r| matches!(r.kind, RunKind::Foreign(_)))
        {
            if applied {
                sim.app.images = images_for(sim, spec_override(sim).as_ref());
            }
            if let Some(run) = sim.run.as_mut() {
                run.kind = RunKind::Foreign(Some(now));
                run.script = Script::Failed;
            }
        }
        drop(s);
        drop(self.settled());
    }

    /// Makes the Application's health `health` now, without an operation (a crash-looping
    /// pod, a lost node): what a test sees when a healthy release goes bad during its soak.
    pub fn set_health(&self, name: &str, health: Health) {
        let _ = self.with_app(name, |sim, now| {
            sim.app.health = health;
            sim.app.health_message = (health == Health::Degraded)
                .then(|| "Back-off restarting failed container api".to_owned());
            sim.app.reconciled_at = Some(now);
            sim.settles = None;
            Ok(())
        });
    }

    /// Makes the Application's pods run `images` now, without an operation (a half-rolled
    /// Deployment, old CronJob pods): a live state no single release describes.
    pub fn set_images(&self, name: &str, images: Vec<String>) {
        let _ = self.with_app(name, |sim, _| {
            sim.app.images = images;
            compare(sim);
            Ok(())
        });
    }

    /// Every Application advanced to now.
    fn settled(&self) -> std::sync::MutexGuard<'_, ArgoCdState> {
        self.settled_only(None)
    }

    /// Advances one Application (or all, for `None`) to now; per-app calls stay linear in
    /// the number of Applications watched, not quadratic.
    fn settled_only(&self, name: Option<&str>) -> std::sync::MutexGuard<'_, ArgoCdState> {
        let now = self.clock.now();
        let mut guard = self.state.lock().expect("poisoned");
        let s = &mut *guard;
        let default_timing = s.timing;
        for (n, sim) in s.apps.iter_mut() {
            if name.is_some_and(|only| only != n) {
                continue;
            }
            if advance(sim, now, sim.timing.unwrap_or(default_timing)) {
                s.version += 1;
                sim.app.resource_version = s.version.to_string();
            }
        }
        guard
    }

    fn with_app<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut SimApp, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        let mut s = self.settled_only(Some(name));
        let s = &mut *s;
        let sim = s
            .apps
            .get_mut(name)
            .ok_or_else(|| Error::not_found(format!("application {name}")))?;
        let before = sim.app.clone();
        let out = f(sim, now)?;
        // A change may start an automated sync at once, as Argo CD would.
        advance(sim, now, sim.timing.unwrap_or(s.timing));
        if sim.app != before {
            s.version += 1;
            sim.app.resource_version = s.version.to_string();
        }
        Ok(out)
    }

    fn start(
        &self,
        sim: &mut SimApp,
        now: Timestamp,
        kind: RunKind,
        info: BTreeMap<String, String>,
        by: &str,
    ) {
        let script = sim.scripts.pop_front().unwrap_or(Script::Healthy);
        sim.run = Some(Run {
            kind,
            script,
            started_at: now,
            info: info.clone(),
            initiated_by: by.to_owned(),
            terminating: false,
            resumed_at: None,
        });
        sim.app.operation_pending = true;
        sim.app.operation_state = Some(running_state(now, by, info));
    }
}

fn running_state(now: Timestamp, by: &str, info: BTreeMap<String, String>) -> OperationState {
    OperationState {
        phase: OperationPhase::Running,
        message: "one or more tasks are running".into(),
        started_at: Some(now),
        finished_at: None,
        initiated_by: Some(by.to_owned()),
        info,
    }
}

/// The images `value` makes the Application run.
fn images_for(sim: &SimApp, value: Option<&OverrideValue>) -> Vec<String> {
    match value {
        Some(v) => rendered_images(&sim.image_names, v, &sim.digest_parameters),
        None => sim.app.images.clone(),
    }
}

/// The override in the spec.
fn spec_override(sim: &SimApp) -> Option<OverrideValue> {
    if !sim.app.kustomize_images.is_empty() {
        return Some(OverrideValue::Kustomize {
            images: sim.app.kustomize_images.clone(),
        });
    }
    let p = sim.tag_parameter.as_ref()?;
    sim.app.helm_parameters.get(p).map(|v| OverrideValue::Helm {
        parameter: p.clone(),
        value: v.clone(),
        digests: sim
            .digest_parameters
            .values()
            .filter_map(|d| Some((d.clone(), sim.app.helm_parameters.get(d)?.clone())))
            .collect(),
    })
}

fn compare(sim: &mut SimApp) {
    let want = images_for(sim, spec_override(sim).as_ref());
    sim.app.sync_status = if want == sim.app.images {
        SyncStatus::Synced
    } else {
        SyncStatus::OutOfSync
    };
}

/// Advances one Application to `now`; true if anything changed.
fn advance(sim: &mut SimApp, now: Timestamp, timing: Timing) -> bool {
    let before = sim.app.clone();
    if let Some(run) = sim.run.clone() {
        // As the controller's `SyncAppState`: while `syncWindowPreventsSync` (the windows
        // matching the app, `CanSync(isManual)` with isManual from the operation's initiator),
        // a Running operation is held Running with the message "Sync operation blocked by sync
        // window", and goes on once a window lets it (argo-cd controller/sync.go).
        let manual = run.initiated_by != "automated";
        if !matches!(run.kind, RunKind::Foreign(_))
            && !run.terminating
            && !window::can_sync(&sim.windows, now, manual).unwrap_or(false)
        {
            if let Some(s) = sim.app.operation_state.as_mut() {
                s.message = "Sync operation blocked by sync window".into();
            }
            if let Some(r) = sim.run.as_mut() {
                r.resumed_at = Some(now);
            }
            return sim.app != before;
        }
        let began = run.resumed_at.unwrap_or(run.started_at);
        let ends = match &run.kind {
            RunKind::Foreign(end) => *end,
            _ if run.terminating => Some(run.started_at),
            _ if run.script == Script::Hang => None,
            _ => began.checked_add(timing.sync).ok(),
        };
        if let Some(end) = ends.filter(|e| *e <= now) {
            let end = end.max(run.started_at);
            let (phase, message) = if run.terminating {
                (OperationPhase::Failed, "Operation terminated".to_owned())
            } else if run.script == Script::Failed {
                (OperationPhase::Failed, "one or more objects failed to apply, reason: admission webhook denied the request".to_owned())
            } else {
                (
                    OperationPhase::Succeeded,
                    "successfully synced (all tasks run)".to_owned(),
                )
            };
            if phase == OperationPhase::Succeeded && !matches!(run.kind, RunKind::Foreign(_)) {
                let value = match &run.kind {
                    RunKind::Rollback(v) => v.clone(),
                    _ => spec_override(sim),
                };
                let images = images_for(sim, value.as_ref());
                let changed = images != sim.app.images;
                sim.app.images = images;
                let id = sim.app.history.last().map_or(0, |h| h.id + 1);
                sim.app.history.push(HistoryEntry {
                    id,
                    revision: "HEAD".into(),
                    deployed_at: Some(end),
                    override_value: value,
                });
                if sim.app.history.len() > 10 {
                    sim.app.history.remove(0);
                }
                let final_health = if run.script == Script::Degraded {
                    Health::Degraded
                } else {
                    Health::Healthy
                };
                if changed || final_health != sim.app.health {
                    sim.app.health = Health::Progressing;
                    sim.app.health_message = Some(
                        "Waiting for rollout to finish: 1 old replicas are pending termination"
                            .into(),
                    );
                    sim.settles =
                        Some((end.checked_add(timing.health).unwrap_or(end), final_health));
                }
            }
            sim.app.operation_pending = false;
            sim.app.operation_state = Some(OperationState {
                phase,
                message,
                started_at: Some(run.started_at),
                finished_at: Some(end),
                initiated_by: Some(run.initiated_by.clone()),
                info: run.info.clone(),
            });
            sim.app.reconciled_at = Some(end);
            sim.run = None;
            compare(sim);
        }
    }
    if let Some((at, health)) = sim.settles
        && at <= now
    {
        sim.app.health = health;
        sim.app.health_message = (health == Health::Degraded)
            .then(|| "Deployment \"api\" exceeded its progress deadline".to_owned());
        sim.app.reconciled_at = Some(at);
        sim.settles = None;
    }
    // Automated sync: Argo CD starts a sync by itself when the app is OutOfSync, unless its
    // windows say `CanSync(false)` is false ("Sync prevented by sync window", argo-cd
    // controller/appcontroller.go `processAppRefreshQueueItem`).
    if sim.run.is_none()
        && sim.app.sync_mode.is_automated()
        && sim.app.sync_status == SyncStatus::OutOfSync
        && window::can_sync(&sim.windows, now, false).unwrap_or(false)
    {
        let script = sim.scripts.pop_front().unwrap_or(Script::Healthy);
        sim.run = Some(Run {
            kind: RunKind::Sync,
            script,
            started_at: now,
            info: BTreeMap::new(),
            initiated_by: "automated".into(),
            terminating: false,
            resumed_at: None,
        });
        sim.app.operation_pending = true;
        sim.app.operation_state = Some(running_state(now, "automated", BTreeMap::new()));
    }
    sim.app != before
}

/// Writes `value` into the spec, keeping every other parameter or image.
fn write_override(sim: &mut SimApp, value: &OverrideValue) {
    match value {
        OverrideValue::Helm {
            parameter,
            value,
            digests,
        } => {
            sim.app
                .helm_parameters
                .insert(parameter.clone(), value.clone());
            for (p, d) in digests {
                sim.app.helm_parameters.insert(p.clone(), d.clone());
            }
            sim.tag_parameter = Some(parameter.clone());
        }
        OverrideValue::Kustomize { images } => {
            sim.app.kustomize_images.retain(|i| {
                !images
                    .iter()
                    .any(|n| kustomize_name(n) == kustomize_name(i))
            });
            sim.app.kustomize_images.extend(images.iter().cloned());
        }
    }
    compare(sim);
}

#[async_trait]
impl ArgoCd for InMemoryArgoCd {
    async fn application(&self, name: &str) -> Result<Application> {
        self.settled_only(Some(name))
            .apps
            .get(name)
            .map(|a| a.app.clone())
            .ok_or_else(|| Error::not_found(format!("application {name}")))
    }

    async fn set_override(&self, name: &str, value: &OverrideValue) -> Result<Application> {
        self.with_app(name, |sim, _| {
            write_override(sim, value);
            Ok(sim.app.clone())
        })
    }

    async fn sync(&self, name: &str, request: &SyncRequest) -> Result<()> {
        let user = self.user.clone();
        self.with_app(name, |sim, now| {
            if sim.run.is_some() {
                return Err(Error::Collision {
                    what: format!("application {name}"),
                });
            }
            // As argocd-server's Sync: `proj.Spec.SyncWindows.Matches(a).CanSync(true, nil)`,
            // else PermissionDenied "cannot sync: blocked by sync window" (or "cannot sync:
            // invalid sync window" for a window it cannot read).
            match window::can_sync(&sim.windows, now, true) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::BlockedByWindow {
                        message: format!(
                            "application {name}: cannot sync: blocked by sync window (a sync window of its project forbids syncing now)"
                        ),
                    });
                }
                Err(e) => {
                    return Err(Error::Refused {
                        message: format!("application {name}: cannot sync: invalid sync window: {e}"),
                    });
                }
            }
            let info =
                BTreeMap::from([(OPERATION_INFO_KEY.to_owned(), request.operation_id.clone())]);
            self.start(sim, now, RunKind::Sync, info, &user);
            Ok(())
        })
    }

    async fn watch(&self, name: &str) -> Result<AppStream> {
        let first = self.application(name).await?;
        let this = self.clone();
        let name = name.to_owned();
        let stream = futures::stream::unfold(
            (this, name, Some(first), String::new()),
            |(this, name, first, seen)| async move {
                if let Some(app) = first {
                    let rv = app.resource_version.clone();
                    return Some((Ok(app), (this, name, None, rv)));
                }
                loop {
                    tokio::time::sleep(this.poll).await;
                    match this.application(&name).await {
                        Ok(app) if app.resource_version == seen => continue,
                        Ok(app) => {
                            let rv = app.resource_version.clone();
                            return Some((Ok(app), (this, name, None, rv)));
                        }
                        Err(e) => return Some((Err(e), (this, name, None, seen))),
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    async fn terminate(&self, name: &str) -> Result<()> {
        self.with_app(name, |sim, _| {
            // Nothing running: terminating is a no-op, as the port says.
            if let Some(run) = sim.run.as_mut() {
                run.terminating = true;
                if let Some(s) = sim.app.operation_state.as_mut() {
                    s.phase = OperationPhase::Terminating;
                }
            }
            Ok(())
        })
    }

    async fn annotate(&self, name: &str, annotations: &BTreeMap<String, String>) -> Result<()> {
        self.with_app(name, |sim, _| {
            sim.app
                .annotations
                .extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        })
    }

    /// As the REST adapter reads them: `GetApplicationSyncWindows` (`canSync` and
    /// `activeWindows` computed in each window's zone, windows without `timeZone`, as upstream's
    /// `convertSyncWindows`; invalid windows are an error, "invalid sync windows"), and the
    /// AppProject's windows with their zones when the token may read it.
    async fn sync_windows(&self, name: &str) -> Result<AppWindows> {
        let now = self.clock.now();
        let s = self.state.lock().expect("poisoned");
        let sim = s
            .apps
            .get(name)
            .ok_or_else(|| Error::not_found(format!("application {name}")))?;
        let invalid = |e: window::InvalidWindow| {
            Error::invalid(format!("application {name}: invalid sync windows: {e}"))
        };
        let can_sync = window::can_sync(&sim.windows, now, true).map_err(invalid)?;
        let unzoned = |w: &SyncWindow| SyncWindow {
            time_zone: None,
            ..w.clone()
        };
        let mut active = Vec::new();
        for w in &sim.windows {
            if w.active_at(now).map_err(invalid)? {
                active.push(unzoned(w));
            }
        }
        let zoned = !s.projects_unreadable;
        Ok(AppWindows {
            assigned: if zoned {
                sim.windows.clone()
            } else {
                sim.windows.iter().map(unzoned).collect()
            },
            zoned,
            answer: Some(window::Answer { can_sync, active }),
        })
    }
}

#[async_trait]
impl deploy_core::port::ArgoCdInventory for InMemoryArgoCd {
    async fn application_sets(&self) -> Result<Vec<ApplicationSet>> {
        Ok(self
            .state
            .lock()
            .expect("poisoned")
            .app_sets
            .values()
            .cloned()
            .collect())
    }

    async fn application_set(&self, name: &str) -> Result<ApplicationSet> {
        self.state
            .lock()
            .expect("poisoned")
            .app_sets
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("applicationset {name}")))
    }

    async fn clusters(&self) -> Result<Vec<ClusterInfo>> {
        Ok(self
            .state
            .lock()
            .expect("poisoned")
            .clusters
            .values()
            .cloned()
            .collect())
    }
}

impl InMemoryArgoCd {
    /// Sets an Application's sync policy, as a person editing it would.
    pub fn set_sync_mode(&self, name: &str, mode: SyncMode) {
        let _ = self.with_app(name, |sim, _| {
            sim.app.sync_mode = mode;
            Ok(())
        });
    }
}

#[cfg(feature = "conformance")]
#[async_trait]
impl crate::conformance::argocd::ArgoCdFixture for InMemoryArgoCd {
    async fn create_application(&self, seed: &AppSeed) {
        InMemoryArgoCd::create_application(self, seed);
    }
    async fn script(&self, name: &str, script: Script) {
        self.push_script(name, script);
    }
    async fn start_foreign_operation(&self, name: &str) {
        self.start_foreign(name, None);
    }
    async fn finish_foreign_operation(&self, name: &str) {
        self.finish_foreign(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;

    fn argocd() -> InMemoryArgoCd {
        InMemoryArgoCd::new(Arc::new(TokioClock::new(Timestamp::UNIX_EPOCH)))
    }

    /// An Argo CD with one automated Application `name` at v1.
    fn with_automated(name: &str) -> InMemoryArgoCd {
        let a = argocd();
        let mut seed = crate::conformance::argocd::seed(name, "v1");
        seed.sync_mode = SyncMode::Automated {
            prune: false,
            self_heal: true,
        };
        a.create_application(&seed);
        a
    }

    #[tokio::test(start_paused = true)]
    async fn conformance() {
        let a = argocd();
        crate::conformance::argocd::run_all(&a, &a, "mem")
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn automated_apps_sync_themselves() {
        let a = with_automated("auto");
        a.set_override(
            "auto",
            &OverrideValue::Helm {
                parameter: "image.tag".into(),
                value: "v2".into(),
                digests: Default::default(),
            },
        )
        .await
        .unwrap();
        let app = a.application("auto").await.unwrap();
        assert!(app.operation_pending);
        assert_eq!(
            app.operation_state.unwrap().initiated_by.as_deref(),
            Some("automated")
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let app = a.application("auto").await.unwrap();
        assert_eq!(
            (app.sync_status, app.health),
            (SyncStatus::Synced, Health::Healthy)
        );
        assert!(app.images[0].ends_with(":v2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deny_window_keeps_automated_sync_from_starting() {
        let a = with_automated("auto");
        // A deny window over the whole first hour of the clock's epoch day, every day.
        a.set_sync_windows(
            "auto",
            vec![deploy_core::port::SyncWindow {
                kind: deploy_core::port::WindowKind::Deny,
                schedule: "0 0 * * *".into(),
                duration: "1h".into(),
                manual_sync: false,
                time_zone: None,
                applications: vec!["*".into()],
                namespaces: vec![],
                clusters: vec![],
                and_operator: false,
            }],
        );
        let v2 = OverrideValue::Helm {
            parameter: "image.tag".into(),
            value: "v2".into(),
            digests: Default::default(),
        };
        tokio::time::advance(Duration::from_secs(60)).await;
        a.set_override("auto", &v2).await.unwrap();
        tokio::time::advance(Duration::from_secs(600)).await;
        let app = a.application("auto").await.unwrap();
        assert!(
            !app.operation_pending,
            "no automated sync inside the window"
        );
        assert_eq!(app.sync_status, SyncStatus::OutOfSync);
        // After the window, it syncs itself.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let app = a.application("auto").await.unwrap();
        assert!(app.operation_pending);
    }

    #[tokio::test(start_paused = true)]
    async fn state_survives_serialization() {
        let a = argocd();
        a.create_application(&crate::conformance::argocd::seed("s", "v1"));
        let json = serde_json::to_string(&a.state()).unwrap();
        let b = InMemoryArgoCd::from_state(
            serde_json::from_str(&json).unwrap(),
            Arc::new(TokioClock::new(Timestamp::UNIX_EPOCH)),
        );
        assert_eq!(
            a.application("s").await.unwrap(),
            b.application("s").await.unwrap()
        );
    }
}
