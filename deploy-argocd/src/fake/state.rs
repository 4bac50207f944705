//! The fake's state: Applications as the JSON Argo CD serves (tests edit them, patches write
//! them), each with the operation the simulation ([`deploy_core::sim`]) runs for it, and the
//! ApplicationSets with their controllers. What the controllers decide comes from the
//! simulation; this file writes it into the JSON.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deploy_core::port::{Health, OperationPhase};

use deploy_core::sim::appset::{self, Generated};
use deploy_core::sim::operation::HELD_MESSAGE;
use deploy_core::sim::{Ending, Run, Script, Settling, Step, Timing, rendered_images};
use deploy_core::window::SyncWindow;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::faults::{Fault, Outage, Requests};
use super::objects::{ForeignEnd, finish, finish_foreign_sync, spec_override};

/// An untimed Application's operations: one step per observation, as one second of its own
/// clock; a sync ends on the second observation, its health moves on the next.
const STEPS: Timing = Timing {
    sync: Duration::from_secs(2),
    health: Duration::from_secs(1),
};

#[derive(Debug)]
pub(super) struct AppSim {
    pub(super) obj: Value,
    /// How our running or next operation ends (a test may change it while it runs).
    pub(super) script: Script,
    pub(super) tag_parameter: String,
    pub(super) image_names: Vec<String>,
    /// The chart's digest parameters, image name → parameter ([`super::FakeArgo::set_digest_parameters`]).
    pub(super) digest_parameters: BTreeMap<String, String>,
    /// The operation in flight, as the simulation runs it.
    pub(super) run: Option<Run>,
    /// Health on its way to its final value after a sync.
    pub(super) settling: Option<Settling>,
    /// What someone else's operation deploys and how it ends ([`super::FakeArgo::start_foreign_sync`]);
    /// `None`: it changes nothing but its own state.
    pub(super) foreign_sync: Option<(String, ForeignEnd)>,
    /// Wall-clock durations of our operations ([`super::FakeArgo::set_timing`]); `None`: one
    /// step per observation.
    pub(super) timing: Option<Timing>,
    /// An untimed Application's own clock: one second per observation.
    pub(super) steps: Timestamp,
}

impl AppSim {
    /// A served Application `obj`, its images `image_names` at its `tag_parameter`.
    pub(super) fn new(obj: Value, tag_parameter: &str, image_names: &[String]) -> Self {
        Self {
            obj,
            script: Script::Healthy,
            tag_parameter: tag_parameter.to_owned(),
            image_names: image_names.to_vec(),
            digest_parameters: BTreeMap::new(),
            run: None,
            settling: None,
            foreign_sync: None,
            timing: None,
            steps: Timestamp::UNIX_EPOCH,
        }
    }

    /// The time its operations run on at `at`: the wall clock for a timed Application, else
    /// its own clock.
    pub(super) fn clock(&self, at: Instant, origin: Origin) -> Timestamp {
        if self.timing.is_some() {
            origin.timestamp(at)
        } else {
            self.steps
        }
    }

    /// When the next step of a timed Application is due (`None`: untimed, or nothing to wait for).
    pub(super) fn next_due(&self) -> Option<Timestamp> {
        let timing = self.timing?;
        match &self.run {
            Some(run) if !run.is_foreign() && !run.terminating => (run.script != Script::Hang)
                .then(|| run.resumed_at.unwrap_or(run.started_at) + timing.sync),
            Some(_) => None,
            None => self.settling.map(|s| s.at),
        }
    }

    /// Writes the end of `run` into the object, at `stamp`: a terminated or failed sync leaves
    /// it OutOfSync; someone else's writes what it deployed, if anything; ours deploys the
    /// spec (images, sync, a history entry) and lets health roll.
    fn end(&mut self, run: &Run, ending: &Ending, stamp: &str) {
        let obj = &mut self.obj;
        let phase = match ending.phase {
            OperationPhase::Succeeded => "Succeeded",
            OperationPhase::Failed => "Failed",
            _ => "Error",
        };
        if run.is_foreign() && !run.terminating {
            match self.foreign_sync.take() {
                None => finish(obj, phase, ending.message, stamp),
                Some((tag, end)) => finish_foreign_sync(obj, &self.image_names, &tag, end, stamp),
            }
            return;
        }
        if !run.terminating {
            self.script = Script::Healthy;
        }
        let Some(target) = ending.deploys else {
            finish(obj, phase, ending.message, stamp);
            obj["status"]["sync"]["status"] = json!("OutOfSync");
            return;
        };
        let op = obj["status"]["operationState"]["operation"].clone();
        let revision = op["sync"]["revision"]
            .as_str()
            .filter(|r| !r.is_empty())
            .unwrap_or("4b1f0c2a")
            .to_owned();
        finish(obj, phase, ending.message, stamp);
        let images = rendered_images(
            &self.image_names,
            &spec_override(&obj["spec"]["source"], &self.tag_parameter),
            &self.digest_parameters,
        );
        let changed = obj["status"]["summary"]["images"] != json!(images);
        obj["status"]["summary"] = json!({ "images": images });
        obj["status"]["sync"] = json!({ "status": "Synced", "revision": revision });
        let source = obj["spec"]["source"].clone();
        let history = obj["status"]["history"]
            .as_array_mut()
            .expect("history is an array");
        let id = history.last().and_then(|h| h["id"].as_i64()).unwrap_or(-1) + 1;
        history.push(json!({
            "id": id, "revision": revision, "deployedAt": stamp,
            "deployStartedAt": stamp, "source": source,
            "initiatedBy": op["initiatedBy"].clone(),
        }));
        let current = crate::wire::health(obj["status"]["health"]["status"].as_str());
        let timing = self.timing.unwrap_or(STEPS);
        if let Some(s) = Settling::after_sync(ending.at, timing, changed, current, target) {
            obj["status"]["health"] = json!({ "status": "Progressing" });
            self.settling = Some(s);
        }
    }

    /// Writes the health a sync rolled to, at `stamp`.
    fn settle(&mut self, health: Health, stamp: &str) {
        let obj = &mut self.obj;
        let status = if health == Health::Degraded {
            "Degraded"
        } else {
            "Healthy"
        };
        obj["status"]["health"] = json!({ "status": status });
        if let Some(message) = Settling::message(health) {
            obj["status"]["resources"] = json!([{
                "group": "apps", "version": "v1", "kind": "Deployment", "namespace": "app",
                "name": "api", "status": "Synced",
                "health": { "status": "Degraded", "message": message }
            }]);
        }
        obj["status"]["reconciledAt"] = json!(stamp);
    }
}

/// Where the wall clock of timed Applications meets the timestamps the simulation runs on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    instant: Instant,
    at: Timestamp,
}

impl Origin {
    pub(super) fn now() -> Self {
        Self {
            instant: Instant::now(),
            at: Timestamp::now(),
        }
    }

    /// The timestamp of `instant`.
    pub(super) fn timestamp(self, instant: Instant) -> Timestamp {
        self.at + instant.saturating_duration_since(self.instant)
    }

    /// The instant of `at`.
    pub(super) fn instant(self, at: Timestamp) -> Instant {
        let nanos = (at.as_nanosecond() - self.at.as_nanosecond()).max(0);
        self.instant + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// An ApplicationSet and its controller.
#[derive(Debug)]
pub(super) struct SetSim {
    pub(super) obj: Value,
    /// Whether its controller rewrites the Applications it owns after each change.
    pub(super) controller: bool,
}

/// A change to an Application object.
pub(super) struct Edit(pub(super) Box<dyn FnOnce(&mut Value) + Send>);

impl std::fmt::Debug for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Edit")
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) apps: BTreeMap<String, AppSim>,
    /// ApplicationSets by name.
    pub(super) sets: BTreeMap<String, SetSim>,
    /// Owned Applications by name: what their ApplicationSet generates for them.
    pub(super) generated: BTreeMap<String, Generated>,
    /// Reconciles of owned Applications by an ApplicationSet controller so far.
    pub(super) reconciles: u32,
    pub(super) rv: u64,
    pub(super) clock: i64,
    /// Where timed Applications' wall clock meets the simulation's.
    pub(super) origin: Origin,
    /// Changes the controller makes per watch stream connection before the server cuts it.
    pub(super) steps_per_stream: usize,
    /// Applied to an Application right after the next successful PATCH of it: another
    /// client's write landing just after ours.
    pub(super) after_patch: BTreeMap<String, Edit>,
    /// Added to every answer ([`super::FakeArgo::set_request_delay`]).
    pub(super) request_delay: Duration,
    /// Longest a timed Application's watch stream waits for a change ([`super::FakeArgo::set_stream_hold`]).
    pub(super) stream_hold: Duration,
    /// Faults injected at the HTTP level ([`super::FakeArgo::inject`]).
    pub(super) faults: Vec<Fault>,
    /// Answers each Application's faults gave, whether or not the fault is still on.
    pub(super) fault_answers: BTreeMap<String, u32>,
    /// AppProjects by name, as `{"spec":{"syncWindows":[...]}}` ([`super::FakeArgo::set_sync_windows`]).
    pub(super) projects: BTreeMap<String, Value>,
    /// The token may not read AppProjects ([`super::FakeArgo::set_projects_unreadable`]).
    pub(super) projects_unreadable: bool,
}

impl State {
    /// An empty fake whose watch streams carry at most `steps` controller steps each, serving
    /// `sets`.
    pub(super) fn new(steps: usize, sets: BTreeMap<String, SetSim>) -> Self {
        Self {
            apps: BTreeMap::new(),
            sets,
            generated: BTreeMap::new(),
            reconciles: 0,
            rv: 100,
            clock: 0,
            origin: Origin::now(),
            steps_per_stream: steps,
            after_patch: BTreeMap::new(),
            request_delay: Duration::ZERO,
            stream_hold: Duration::from_secs(1),
            faults: Vec::new(),
            fault_answers: BTreeMap::new(),
            projects: BTreeMap::new(),
            projects_unreadable: false,
        }
    }

    /// The outage to answer a request of `kind` for Application `name` with, if a fault is
    /// on for it; a fault whose time or answers are used up is removed first.
    pub(super) fn fault_hit(&mut self, name: &str, kind: Requests) -> Option<Outage> {
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
    /// the untimed controller): [`deploy_core::sim::operation::manual_sync_allowed`].
    pub(super) fn windows_of(
        &self,
        name: &str,
    ) -> (
        Vec<SyncWindow>,
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
        let can = deploy_core::sim::operation::manual_sync_allowed(&windows, Timestamp::now());
        (windows, can)
    }

    /// The next timestamp of the served objects.
    pub(super) fn now(&mut self) -> String {
        self.clock += 1;
        Timestamp::from_second(1_780_000_000 + self.clock)
            .expect("valid time")
            .to_string()
    }

    pub(super) fn bump(&mut self, name: &str) {
        self.rv += 1;
        let rv = self.rv.to_string();
        if let Some(app) = self.apps.get_mut(name) {
            app.obj["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    /// One controller step for `name`; true if the Application changed.
    pub(super) fn tick(&mut self, name: &str) -> bool {
        self.tick_at(name, Instant::now())
    }

    /// Every step of `name` due at `at` (one step for an untimed Application).
    pub(super) fn settle_at(&mut self, name: &str, at: Instant) -> Vec<Value> {
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

    /// One controller step for `name` at `at` (a timed Application's only if due): the
    /// simulation's step of the operation in flight, else the health that settles.
    fn tick_at(&mut self, name: &str, at: Instant) -> bool {
        let (windows, _) = self.windows_of(name);
        let origin = self.origin;
        let Some(app) = self.apps.get_mut(name) else {
            return false;
        };
        if app.timing.is_none() {
            app.steps += Duration::from_secs(1);
        }
        let now = app.clock(at, origin);
        if app.next_due().is_some_and(|due| due > now) {
            return false;
        }
        let stamp = self.now();
        let app = self.apps.get_mut(name).expect("checked above");
        let changed = match app.run.take() {
            Some(mut run) => {
                let timing = app.timing.unwrap_or(STEPS);
                match run.step(now, timing, &windows, Timestamp::now()) {
                    Step::Wait => {
                        app.run = Some(run);
                        false
                    }
                    Step::Held => {
                        app.run = Some(run);
                        let message = &mut app.obj["status"]["operationState"]["message"];
                        let changed = *message != json!(HELD_MESSAGE);
                        *message = json!(HELD_MESSAGE);
                        changed
                    }
                    Step::Ended(ending) => {
                        app.end(&run, &ending, &stamp);
                        true
                    }
                }
            }
            None => match app.settling.filter(|s| s.at <= now) {
                Some(s) => {
                    app.settling = None;
                    app.settle(s.health, &stamp);
                    true
                }
                None => false,
            },
        };
        if changed {
            self.bump(name);
        }
        changed
    }

    /// Ends someone else's operation on `name` now, as its owner does.
    pub(super) fn finish_foreign(&mut self, name: &str) {
        let stamp = self.now();
        let origin = self.origin;
        let app = self.apps.get_mut(name).expect("known app");
        let now = app.clock(Instant::now(), origin);
        if let Some(mut run) = app.run.take() {
            run.finish_foreign(now);
            match run.step(now, STEPS, &[], now) {
                Step::Ended(ending) => app.end(&run, &ending, &stamp),
                _ => app.run = Some(run),
            }
        }
        self.bump(name);
    }

    /// The ApplicationSet controller on `name` after a change to it
    /// ([`deploy_core::sim::appset::reconcile`]); true if it rewrote the Application.
    pub(super) fn reconcile(&mut self, name: &str) -> bool {
        let Some(generated) = self.generated.get(name) else {
            return false;
        };
        let Some(set) = self.sets.get(&generated.set).filter(|s| s.controller) else {
            return false;
        };
        self.reconciles += 1;
        let Some(app) = self.apps.get(name) else {
            return false;
        };
        let Some(desired) = appset::reconcile(
            name,
            &app.obj,
            generated,
            &set.obj["spec"],
            &deploy_core::plan::appset::CONTROLLER_PRESERVED,
        ) else {
            return false;
        };
        self.apps.get_mut(name).expect("checked above").obj = desired;
        self.bump(name);
        true
    }
}
