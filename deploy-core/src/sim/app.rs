//! The simulated Argo CD as typed state: Applications with their spec, status, operation and
//! scripts, ApplicationSets and clusters, moved by explicit times. The in-memory backend is this
//! state behind a lock and a clock; the state serializes, so the sandbox keeps it between
//! commands.
//!
//! State moves lazily: every call first advances the Applications it touches to `now`, so no
//! background task is needed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::operation::{
    self, AUTOMATED, CRASHING_MESSAGE, FOREIGN_USER, HELD_MESSAGE, PROGRESSING_MESSAGE, Run,
    RunKind, Settling, Step,
};
use super::seed::{AppSeed, Script, Timing, rendered_images};
use crate::error::{Error, Result};
use crate::model::SyncMode;
use crate::port::{
    Application, ApplicationSet, ClusterInfo, Health, HistoryEntry, OPERATION_INFO_KEY,
    OperationPhase, OverrideValue, SyncStatus, kustomize_name,
};
use crate::window::{self, AppWindows, SyncWindow};

/// How many history entries Argo CD keeps (`revisionHistoryLimit`'s default, 10).
pub const HISTORY_LIMIT: usize = 10;

/// One simulated Application.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimApp {
    app: Application,
    image_names: Vec<String>,
    tag_parameter: Option<String>,
    /// The chart's digest parameters: image name → the Helm parameter that, set, makes the
    /// chart render that image by digest ([`ArgoCdState::set_digest_parameters`]).
    #[serde(default)]
    digest_parameters: BTreeMap<String, String>,
    scripts: VecDeque<Script>,
    run: Option<Run>,
    /// Progressing until this time, then the given health.
    settles: Option<(Timestamp, Health)>,
    timing: Option<Timing>,
    /// The sync windows of its project that apply to it ([`ArgoCdState::set_sync_windows`]).
    #[serde(default)]
    windows: Vec<SyncWindow>,
}

/// The whole simulated Argo CD, serializable so the sandbox can keep it between commands.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ArgoCdState {
    apps: BTreeMap<String, SimApp>,
    app_sets: BTreeMap<String, ApplicationSet>,
    clusters: BTreeMap<String, ClusterInfo>,
    timing: Timing,
    version: u64,
    /// The token may not read AppProjects ([`ArgoCdState::set_projects_unreadable`]).
    #[serde(default)]
    projects_unreadable: bool,
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("application {name}"))
}

impl ArgoCdState {
    /// Default timing of operations.
    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// Timing of one Application's operations.
    pub fn set_app_timing(&mut self, name: &str, timing: Timing) {
        if let Some(a) = self.apps.get_mut(name) {
            a.timing = Some(timing);
        }
    }

    /// Creates (or replaces) an Application at `now`, Synced and Healthy at its seed's tag.
    pub fn create_application(&mut self, seed: &AppSeed, now: Timestamp) {
        self.version += 1;
        let override_value = OverrideValue::Helm {
            parameter: seed.tag_parameter.clone(),
            value: seed.tag().to_owned(),
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
            images: seed.images(),
            history: vec![HistoryEntry {
                id: 0,
                revision: "HEAD".into(),
                deployed_at: Some(now),
                override_value: Some(override_value),
            }],
            resource_version: self.version.to_string(),
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
        self.apps.insert(seed.name.clone(), sim);
    }

    /// Gives an Application's chart a digest parameter per image (image name → parameter):
    /// set to a digest, the chart renders that image as `name@digest` ([`rendered_images`]).
    pub fn set_digest_parameters(&mut self, name: &str, parameters: BTreeMap<String, String>) {
        if let Some(a) = self.apps.get_mut(name) {
            a.digest_parameters = parameters;
        }
    }

    /// Assigns sync windows to an Application (as if its project's windows matched it).
    pub fn set_sync_windows(&mut self, name: &str, windows: Vec<SyncWindow>) {
        if let Some(a) = self.apps.get_mut(name) {
            a.windows = windows;
        }
    }

    /// Whether the token may not read AppProjects (`projects, get`).
    pub fn set_projects_unreadable(&mut self, unreadable: bool) {
        self.projects_unreadable = unreadable;
    }

    /// Creates (or replaces) an ApplicationSet.
    pub fn put_application_set(&mut self, set: ApplicationSet) {
        self.app_sets.insert(set.name.clone(), set);
    }

    /// Registers (or replaces) a cluster.
    pub fn put_cluster(&mut self, cluster: ClusterInfo) {
        self.clusters.insert(cluster.name.clone(), cluster);
    }

    /// Queues how the next operation of `name` ends.
    pub fn push_script(&mut self, name: &str, script: Script) {
        if let Some(a) = self.apps.get_mut(name) {
            a.scripts.push_back(script);
        }
    }

    /// Starts someone else's operation on `name` at `now`, lasting `duration` (or until
    /// finished by hand).
    pub fn start_foreign(&mut self, name: &str, duration: Option<Duration>, now: Timestamp) {
        self.advance(None, now);
        self.version += 1;
        if let Some(a) = self.apps.get_mut(name) {
            let ends = duration.map(|d| now.checked_add(d).unwrap_or(now));
            let run = Run::new(RunKind::Foreign(ends), Script::Healthy, now, FOREIGN_USER);
            a.app.operation_pending = true;
            a.app.operation_state = Some(run.running_state());
            a.run = Some(run);
            a.app.resource_version = self.version.to_string();
        }
    }

    /// Finishes someone else's operation at `now`.
    pub fn finish_foreign(&mut self, name: &str, now: Timestamp) {
        self.advance(None, now);
        if let Some(run) = self.apps.get_mut(name).and_then(|a| a.run.as_mut()) {
            run.finish_foreign(now);
        }
        self.advance(None, now);
    }

    /// Ends someone else's operation at `now` as Failed, as a sync whose PostSync hook failed
    /// would: with `applied`, its resources already run what the spec names (Synced, and as
    /// healthy as before). Nothing is added to the history (Argo CD records only successes).
    pub fn fail_foreign(&mut self, name: &str, applied: bool, now: Timestamp) {
        self.advance(None, now);
        if let Some(sim) = self.apps.get_mut(name)
            && sim.run.as_ref().is_some_and(Run::is_foreign)
        {
            if applied {
                sim.app.images = sim.images_for(sim.spec_override().as_ref());
            }
            if let Some(run) = sim.run.as_mut() {
                run.finish_foreign(now);
                run.script = Script::Failed;
            }
        }
        self.advance(None, now);
    }

    /// Makes the Application's health `health` at `now`, without an operation (a crash-looping
    /// pod, a lost node): what a test sees when a healthy release goes bad during its soak.
    pub fn set_health(&mut self, name: &str, health: Health, now: Timestamp) {
        let _ = self.with_app(name, now, |sim| {
            sim.app.health = health;
            sim.app.health_message =
                (health == Health::Degraded).then(|| CRASHING_MESSAGE.to_owned());
            sim.app.reconciled_at = Some(now);
            sim.settles = None;
            Ok(())
        });
    }

    /// Makes the Application's pods run `images`, without an operation (a half-rolled
    /// Deployment, old CronJob pods): a live state no single release describes.
    pub fn set_images(&mut self, name: &str, images: Vec<String>, now: Timestamp) {
        let _ = self.with_app(name, now, |sim| {
            sim.app.images = images;
            sim.compare();
            Ok(())
        });
    }

    /// Sets an Application's sync policy, as a person editing it would.
    pub fn set_sync_mode(&mut self, name: &str, mode: SyncMode, now: Timestamp) {
        let _ = self.with_app(name, now, |sim| {
            sim.app.sync_mode = mode;
            Ok(())
        });
    }

    /// Advances one Application (or all, for `None`) to `now`; per-app calls stay linear in
    /// the number of Applications watched, not quadratic.
    pub fn advance(&mut self, name: Option<&str>, now: Timestamp) {
        let default_timing = self.timing;
        for (n, sim) in self.apps.iter_mut() {
            if name.is_some_and(|only| only != n) {
                continue;
            }
            if sim.advance(now, sim.timing.unwrap_or(default_timing)) {
                self.version += 1;
                sim.app.resource_version = self.version.to_string();
            }
        }
    }

    /// Changes Application `name` at `now` with `f`; a change may start an automated sync at
    /// once, as Argo CD would. The resourceVersion moves when the Application changed.
    fn with_app<T>(
        &mut self,
        name: &str,
        now: Timestamp,
        f: impl FnOnce(&mut SimApp) -> Result<T>,
    ) -> Result<T> {
        self.advance(Some(name), now);
        let timing = self.timing;
        let sim = self.apps.get_mut(name).ok_or_else(|| not_found(name))?;
        let before = sim.app.clone();
        let out = f(sim)?;
        sim.advance(now, sim.timing.unwrap_or(timing));
        if sim.app != before {
            self.version += 1;
            sim.app.resource_version = self.version.to_string();
        }
        Ok(out)
    }

    /// Application `name` as the API serves it at `now`.
    pub fn application(&mut self, name: &str, now: Timestamp) -> Result<Application> {
        self.advance(Some(name), now);
        self.apps
            .get(name)
            .map(|a| a.app.clone())
            .ok_or_else(|| not_found(name))
    }

    /// Writes `value` into the spec of `name`, keeping every other parameter or image.
    pub fn set_override(
        &mut self,
        name: &str,
        value: &OverrideValue,
        now: Timestamp,
    ) -> Result<Application> {
        self.with_app(name, now, |sim| {
            sim.write_override(value);
            Ok(sim.app.clone())
        })
    }

    /// A manual sync of `name` by `user` carrying our `operation_id`: a Collision while an
    /// operation runs, refused when a sync window blocks it ([`operation::manual_sync_allowed`]).
    pub fn sync(
        &mut self,
        name: &str,
        operation_id: &str,
        user: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.with_app(name, now, |sim| {
            if sim.run.is_some() {
                return Err(Error::Collision {
                    what: format!("application {name}"),
                });
            }
            match operation::manual_sync_allowed(&sim.windows, now) {
                Ok(true) => {}
                Ok(false) => {
                    // argocd-server answers PermissionDenied "cannot sync: blocked by sync
                    // window" (`server/application/application.go`): typed for the engine.
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
            let info = BTreeMap::from([(OPERATION_INFO_KEY.to_owned(), operation_id.to_owned())]);
            sim.start(now, info, user);
            Ok(())
        })
    }

    /// Asks the running operation of `name` to terminate; nothing running is a no-op.
    pub fn terminate(&mut self, name: &str, now: Timestamp) -> Result<()> {
        self.with_app(name, now, |sim| {
            if let Some(run) = sim.run.as_mut() {
                run.terminating = true;
                if let Some(s) = sim.app.operation_state.as_mut() {
                    s.phase = OperationPhase::Terminating;
                }
            }
            Ok(())
        })
    }

    /// Merges `annotations` into those of `name`.
    pub fn annotate(
        &mut self,
        name: &str,
        annotations: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<()> {
        self.with_app(name, now, |sim| {
            sim.app
                .annotations
                .extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        })
    }

    /// The sync windows of `name` as the REST adapter reads them at `now`:
    /// `GetApplicationSyncWindows` (`canSync` and `activeWindows` computed in each window's
    /// zone, windows without `timeZone`, as upstream's `convertSyncWindows`; invalid windows
    /// are an error, "invalid sync windows"), and the AppProject's windows with their zones
    /// when the token may read it.
    pub fn sync_windows(&self, name: &str, now: Timestamp) -> Result<AppWindows> {
        let sim = self.apps.get(name).ok_or_else(|| not_found(name))?;
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
        let zoned = !self.projects_unreadable;
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

    /// Every ApplicationSet.
    pub fn application_sets(&self) -> Vec<ApplicationSet> {
        self.app_sets.values().cloned().collect()
    }

    /// ApplicationSet `name`.
    pub fn application_set(&self, name: &str) -> Result<ApplicationSet> {
        self.app_sets
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("applicationset {name}")))
    }

    /// Every cluster.
    pub fn clusters(&self) -> Vec<ClusterInfo> {
        self.clusters.values().cloned().collect()
    }
}

impl SimApp {
    /// Starts our sync at `now`, ending as the next queued script says.
    fn start(&mut self, now: Timestamp, info: BTreeMap<String, String>, by: &str) {
        let script = self.scripts.pop_front().unwrap_or(Script::Healthy);
        let mut run = Run::new(RunKind::Sync, script, now, by);
        run.info = info;
        self.app.operation_pending = true;
        self.app.operation_state = Some(run.running_state());
        self.run = Some(run);
    }

    /// The images `value` makes the Application run.
    fn images_for(&self, value: Option<&OverrideValue>) -> Vec<String> {
        match value {
            Some(v) => rendered_images(&self.image_names, v, &self.digest_parameters),
            None => self.app.images.clone(),
        }
    }

    /// The override in the spec.
    fn spec_override(&self) -> Option<OverrideValue> {
        if !self.app.kustomize_images.is_empty() {
            return Some(OverrideValue::Kustomize {
                images: self.app.kustomize_images.clone(),
            });
        }
        let p = self.tag_parameter.as_ref()?;
        self.app
            .helm_parameters
            .get(p)
            .map(|v| OverrideValue::Helm {
                parameter: p.clone(),
                value: v.clone(),
                digests: self
                    .digest_parameters
                    .values()
                    .filter_map(|d| Some((d.clone(), self.app.helm_parameters.get(d)?.clone())))
                    .collect(),
            })
    }

    /// Synced when what runs is what the spec renders.
    fn compare(&mut self) {
        let want = self.images_for(self.spec_override().as_ref());
        self.app.sync_status = if want == self.app.images {
            SyncStatus::Synced
        } else {
            SyncStatus::OutOfSync
        };
    }

    /// Writes `value` into the spec, keeping every other parameter or image.
    fn write_override(&mut self, value: &OverrideValue) {
        match value {
            OverrideValue::Helm {
                parameter,
                value,
                digests,
            } => {
                let params = &mut self.app.helm_parameters;
                params.insert(parameter.clone(), value.clone());
                for (p, d) in digests {
                    params.insert(p.clone(), d.clone());
                }
                self.tag_parameter = Some(parameter.clone());
            }
            OverrideValue::Kustomize { images } => {
                self.app.kustomize_images.retain(|i| {
                    !images
                        .iter()
                        .any(|n| kustomize_name(n) == kustomize_name(i))
                });
                self.app.kustomize_images.extend(images.iter().cloned());
            }
        }
        self.compare();
    }

    /// Advances to `now`: the operation's step, the health that settles, an automated sync
    /// that starts. True if anything changed.
    fn advance(&mut self, now: Timestamp, timing: Timing) -> bool {
        let before = self.app.clone();
        if let Some(mut run) = self.run.take() {
            match run.step(now, timing, &self.windows, now) {
                Step::Wait => self.run = Some(run),
                Step::Held => {
                    if let Some(s) = self.app.operation_state.as_mut() {
                        s.message = HELD_MESSAGE.into();
                    }
                    self.run = Some(run);
                    return self.app != before;
                }
                Step::Ended(ending) => self.end(&run, &ending, timing),
            }
        }
        if let Some((at, health)) = self.settles
            && at <= now
        {
            self.app.health = health;
            self.app.health_message = Settling::message(health);
            self.app.reconciled_at = Some(at);
            self.settles = None;
        }
        if operation::automated_sync_due(
            self.app.sync_mode.is_automated(),
            self.app.sync_status == SyncStatus::OutOfSync,
            self.run.is_some(),
            &self.windows,
            now,
        ) {
            self.start(now, BTreeMap::new(), AUTOMATED);
        }
        self.app != before
    }

    /// Writes the end of `run`: what a successful sync of ours deploys (images, a history
    /// entry, health rolling), the final operation state, and the comparison.
    fn end(&mut self, run: &Run, ending: &operation::Ending, timing: Timing) {
        if let Some(target) = ending.deploys {
            let value = match &run.kind {
                RunKind::Rollback(v) => v.clone(),
                _ => self.spec_override(),
            };
            let images = self.images_for(value.as_ref());
            let changed = images != self.app.images;
            self.app.images = images;
            let id = self.app.history.last().map_or(0, |h| h.id + 1);
            self.app.history.push(HistoryEntry {
                id,
                revision: "HEAD".into(),
                deployed_at: Some(ending.at),
                override_value: value,
            });
            if self.app.history.len() > HISTORY_LIMIT {
                self.app.history.remove(0);
            }
            if let Some(s) =
                Settling::after_sync(ending.at, timing, changed, self.app.health, target)
            {
                self.app.health = Health::Progressing;
                self.app.health_message = Some(PROGRESSING_MESSAGE.into());
                self.settles = Some((s.at, s.health));
            }
        }
        self.app.operation_pending = false;
        self.app.operation_state = Some(run.ended_state(ending));
        self.app.reconciled_at = Some(ending.at);
        self.compare();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn seed(mode: SyncMode) -> AppSeed {
        AppSeed {
            name: "app".into(),
            labels: BTreeMap::new(),
            destination: "in-cluster".into(),
            sync_mode: mode,
            helm_parameters: BTreeMap::from([("image.tag".into(), "v1".into())]),
            tag_parameter: "image.tag".into(),
            image_names: vec!["api".into()],
        }
    }

    fn v2() -> OverrideValue {
        OverrideValue::Helm {
            parameter: "image.tag".into(),
            value: "v2".into(),
            digests: BTreeMap::new(),
        }
    }

    #[test]
    fn a_sync_runs_then_health_rolls_by_the_times_given() {
        let mut s = ArgoCdState::default();
        s.create_application(&seed(SyncMode::Manual), at(0));
        s.push_script("app", Script::Degraded);
        s.set_override("app", &v2(), at(0)).unwrap();
        s.sync("app", "op", "ci-bot", at(0)).unwrap();
        let app = s.application("app", at(1)).unwrap();
        assert!(app.operation_pending && app.images == ["api:v1"]);
        let app = s.application("app", at(2)).unwrap();
        assert_eq!(
            (app.health, app.images.clone()),
            (Health::Progressing, vec!["api:v2".into()])
        );
        assert_eq!(app.history.len(), 2);
        let app = s.application("app", at(5)).unwrap();
        assert_eq!(
            (app.health, app.sync_status),
            (Health::Degraded, SyncStatus::Synced)
        );
        let again = s.sync("app", "op2", "ci-bot", at(5));
        assert!(again.is_ok(), "{again:?}");
        let busy = s.sync("app", "op3", "ci-bot", at(5));
        assert!(matches!(busy, Err(Error::Collision { .. })), "{busy:?}");
    }

    #[test]
    fn automated_sync_waits_for_the_end_of_a_deny_window() {
        let mut s = ArgoCdState::default();
        let automated = SyncMode::Automated {
            prune: false,
            self_heal: true,
        };
        s.create_application(&seed(automated), at(0));
        s.set_sync_windows("app", vec![super::super::first_hour_denied()]);
        s.set_override("app", &v2(), at(60)).unwrap();
        let app = s.application("app", at(600)).unwrap();
        assert!(!app.operation_pending && app.sync_status == SyncStatus::OutOfSync);
        let app = s.application("app", at(3700)).unwrap();
        let op = app.operation_state.expect("an automated sync");
        assert_eq!(op.initiated_by.as_deref(), Some(AUTOMATED));
    }
}
