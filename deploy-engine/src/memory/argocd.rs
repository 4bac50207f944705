//! An in-memory Argo CD: the simulation of `deploy_core::sim` behind a lock and a clock. Every
//! call reads the clock and lets the simulation advance to that time, so the backend needs no
//! background task and its state can be saved between commands.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use deploy_core::error::Result;
use deploy_core::model::SyncMode;
use deploy_core::port::{
    AppStream, Application, ApplicationSet, ArgoCd, Clock, ClusterInfo, Health, OverrideValue,
    SyncRequest,
};
use deploy_core::sim::{AppSeed, ArgoCdState, Script, Timing};
use deploy_core::window::{AppWindows, SyncWindow};

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

    fn lock(&self) -> MutexGuard<'_, ArgoCdState> {
        self.state.lock().expect("poisoned")
    }

    /// Runs `f` on the state with the clock's now.
    fn at<T>(&self, f: impl FnOnce(&mut ArgoCdState, jiff::Timestamp) -> T) -> T {
        let now = self.clock.now();
        f(&mut self.lock(), now)
    }

    /// A copy of the state, every Application advanced to now.
    pub fn state(&self) -> ArgoCdState {
        self.at(|s, now| {
            s.advance(None, now);
            s.clone()
        })
    }

    /// Default timing of operations.
    pub fn set_timing(&self, timing: Timing) {
        self.lock().set_timing(timing);
    }

    /// Timing of one Application's operations.
    pub fn set_app_timing(&self, name: &str, timing: Timing) {
        self.lock().set_app_timing(name, timing);
    }

    /// Creates (or replaces) an Application, Synced and Healthy at its seed's tag.
    pub fn create_application(&self, seed: &AppSeed) {
        self.at(|s, now| s.create_application(seed, now));
    }

    /// Gives an Application's chart a digest parameter per image (image name → parameter):
    /// set to a digest, the chart renders that image as `name@digest`, as charts with an
    /// `image.digest` value do; empty or absent, as `name:tag` (`deploy_core::sim::rendered_images`).
    pub fn set_digest_parameters(&self, name: &str, parameters: BTreeMap<String, String>) {
        self.lock().set_digest_parameters(name, parameters);
    }

    /// Assigns sync windows to an Application (as if its project's windows matched it): a
    /// manual sync they block is refused as Argo CD refuses it.
    pub fn set_sync_windows(&self, name: &str, windows: Vec<SyncWindow>) {
        self.lock().set_sync_windows(name, windows);
    }

    /// Answers as Argo CD does to a token that may not read AppProjects (`projects, get`):
    /// the windows only as the Application's syncwindows answer gives them, without zones.
    pub fn set_projects_unreadable(&self, unreadable: bool) {
        self.lock().set_projects_unreadable(unreadable);
    }

    /// Creates (or replaces) an ApplicationSet.
    pub fn put_application_set(&self, set: ApplicationSet) {
        self.lock().put_application_set(set);
    }

    /// Registers (or replaces) a cluster.
    pub fn put_cluster(&self, cluster: ClusterInfo) {
        self.lock().put_cluster(cluster);
    }

    /// Queues how the next operation of `name` ends.
    pub fn push_script(&self, name: &str, script: Script) {
        self.lock().push_script(name, script);
    }

    /// Starts someone else's operation on `name`, lasting `duration` (or until finished by hand).
    pub fn start_foreign(&self, name: &str, duration: Option<Duration>) {
        self.at(|s, now| s.start_foreign(name, duration, now));
    }

    /// Finishes someone else's operation now.
    pub fn finish_foreign(&self, name: &str) {
        self.at(|s, now| s.finish_foreign(name, now));
    }

    /// Ends someone else's operation now as Failed, as a sync whose PostSync hook failed
    /// would: with `applied`, its resources already run what the spec names (Synced, and as
    /// healthy as before). Nothing is added to the history (Argo CD records only successes).
    pub fn fail_foreign(&self, name: &str, applied: bool) {
        self.at(|s, now| s.fail_foreign(name, applied, now));
    }

    /// Makes the Application's health `health` now, without an operation (a crash-looping
    /// pod, a lost node): what a test sees when a healthy release goes bad during its soak.
    pub fn set_health(&self, name: &str, health: Health) {
        self.at(|s, now| s.set_health(name, health, now));
    }

    /// Makes the Application's pods run `images` now, without an operation (a half-rolled
    /// Deployment, old CronJob pods): a live state no single release describes.
    pub fn set_images(&self, name: &str, images: Vec<String>) {
        self.at(|s, now| s.set_images(name, images, now));
    }

    /// Sets an Application's sync policy, as a person editing it would.
    pub fn set_sync_mode(&self, name: &str, mode: SyncMode) {
        self.at(|s, now| s.set_sync_mode(name, mode, now));
    }
}

#[async_trait]
impl ArgoCd for InMemoryArgoCd {
    async fn application(&self, name: &str) -> Result<Application> {
        self.at(|s, now| s.application(name, now))
    }

    async fn set_override(&self, name: &str, value: &OverrideValue) -> Result<Application> {
        self.at(|s, now| s.set_override(name, value, now))
    }

    async fn sync(&self, name: &str, request: &SyncRequest) -> Result<()> {
        self.at(|s, now| s.sync(name, &request.operation_id, &self.user, now))
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
        self.at(|s, now| s.terminate(name, now))
    }

    async fn annotate(&self, name: &str, annotations: &BTreeMap<String, String>) -> Result<()> {
        self.at(|s, now| s.annotate(name, annotations, now))
    }

    async fn sync_windows(&self, name: &str) -> Result<AppWindows> {
        self.at(|s, now| s.sync_windows(name, now))
    }
}

#[async_trait]
impl deploy_core::port::ArgoCdInventory for InMemoryArgoCd {
    async fn application_sets(&self) -> Result<Vec<ApplicationSet>> {
        Ok(self.lock().application_sets())
    }

    async fn application_set(&self, name: &str) -> Result<ApplicationSet> {
        self.lock().application_set(name)
    }

    async fn clusters(&self) -> Result<Vec<ClusterInfo>> {
        Ok(self.lock().clusters())
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
    async fn set_sync_windows(&self, name: &str, windows: &[SyncWindow]) {
        InMemoryArgoCd::set_sync_windows(self, name, windows.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use deploy_core::port::SyncStatus;
    use jiff::Timestamp;

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
        crate::conformance::argocd::inventory(&a, "mem")
            .await
            .unwrap();
        a.put_application_set(deploy_core::port::ApplicationSet {
            name: "set".into(),
            sync_mode: SyncMode::Manual,
            ignore_differences: Vec::new(),
            preserved_annotations: Vec::new(),
            annotations: BTreeMap::new(),
            resource_version: "1".into(),
        });
        a.put_cluster(deploy_core::port::ClusterInfo {
            name: "in-cluster".into(),
            server: "https://kubernetes.default.svc".into(),
            connected: true,
            message: None,
        });
        crate::conformance::argocd::inventory(&a, "mem")
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
        a.set_sync_windows("auto", vec![deploy_core::sim::first_hour_denied()]);
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
