//! One Application brought to a release: wait out someone else's operation, write the
//! override if it differs, sync with our operation id, and wait until [`assess`] says our
//! operation got it there. Used by the waves and by rollback.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use tokio::time::Instant;

use crate::engine::Run;
use deploy_core::Error;
use deploy_core::image_override::same_override;
use deploy_core::model::Release;
use deploy_core::plan::promotion::{Action, AppPlan};
use deploy_core::port::{Application, OverrideValue, SyncRequest};
use deploy_core::rollout::assess::{Assessment, Baseline, Ours, assess};
use deploy_core::rollout::event::Event;
use deploy_core::rollout::outcome::{Call, Cause, Failure, Halt, Stage};
use deploy_core::rollout::vigil::RETRY_PAUSE;

/// Where one Application's deployment got without failing: skipped, to be soaked again, or
/// at the release, Healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// Already there, soaked: nothing to do.
    Skipped,
    /// At the release, to be soaked again; nothing written.
    SoakAgain,
    /// Brought to the release, Healthy.
    Deployed,
}

/// What this run sent to one Application. A write counts from the moment it is sent (its
/// answer may be lost to a timeout after it landed); a sync refused as a collision does not.
#[derive(Default)]
pub(crate) struct Writes {
    override_sent: AtomicBool,
    sync_sent: AtomicBool,
}

impl Writes {
    pub(crate) fn any(&self) -> bool {
        self.override_sent.load(Ordering::Relaxed) || self.sync_sent.load(Ordering::Relaxed)
    }
}

/// What [`Run::bring_to`] brings an Application to.
pub(crate) struct Target<'a> {
    /// The override to write, if it differs.
    pub value: Option<&'a OverrideValue>,
    /// Start a sync (false: Argo CD syncs by itself).
    pub sync: bool,
    /// The release it must run (its digests where the live images carry them).
    pub release: &'a Release,
    /// Our operation id.
    pub op_id: &'a str,
    /// Whether a stop request stops it before its sync (not for rollback).
    pub cancellable: bool,
}

impl Run<'_> {
    /// Brings `a` to the release within `deadline`; says whether this run wrote to it.
    pub(crate) async fn deploy(
        &self,
        a: &AppPlan,
        deadline: Instant,
    ) -> (Result<Reached, Halt>, bool) {
        let (set_override, sync) = match &a.action {
            Action::Deploy { set_override, sync } => (set_override, sync),
            Action::Soak { .. } => {
                self.emit(Event::AppSoakingAgain {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                });
                return (Ok(Reached::SoakAgain), false);
            }
            Action::Skip => {
                self.emit(Event::AppSkipped {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                });
                return (Ok(Reached::Skipped), false);
            }
        };
        let writes = Writes::default();
        let op_id = format!("{}/{}", self.opts.run_id, a.cluster);
        let target = Target {
            value: set_override.as_ref(),
            sync: *sync,
            release: self.release,
            op_id: &op_id,
            cancellable: true,
        };
        let work = self.bring_to(a, &target, &writes);
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, work) => match r {
                Ok(r) => r,
                Err(_) => Err(self.failed(a, Stage::Deploy, self.timed_out(&a.application).await)),
            },
            () = self.grace_expired() => Err(Halt::Interrupted),
        };
        if let Err(Halt::Failed(f @ Failure::App { .. })) = &result {
            self.emit(Event::AppFailed {
                cluster: a.cluster.clone(),
                application: a.application.clone(),
                reason: f.reason(),
            });
        }
        (result.map(|()| Reached::Deployed), writes.any())
    }

    /// `a` failed at `stage` for `cause`.
    pub(crate) fn failed(&self, a: &AppPlan, stage: Stage, cause: Cause) -> Halt {
        Halt::Failed(Failure::App {
            at: self.place(a),
            stage,
            cause,
        })
    }

    /// Waits out foreign operations, writes the override, syncs, and waits for our operation,
    /// Synced, Healthy and the release's images. Someone else's operation is waited out and
    /// never taken for ours: after it ends we sync again with our own id (or, where Argo CD
    /// syncs by itself, only an operation after our write counts). Every write first checks
    /// that the lease is still ours by the wall clock.
    pub(crate) async fn bring_to(
        &self,
        a: &AppPlan,
        t: &Target<'_>,
        writes: &Writes,
    ) -> Result<(), Halt> {
        let started = Instant::now();
        let baseline = self.start(a, t, writes).await?;
        self.emit(Event::AppSyncing {
            cluster: a.cluster.clone(),
            application: a.application.clone(),
            from: a.live.to_string(),
            to: t.release.tag.to_string(),
        });
        let ours = if t.sync {
            Ours::Operation(t.op_id)
        } else {
            Ours::After(baseline)
        };
        let mut last = None;
        let verdict = self
            .wait(&a.application, |app| {
                let key = (
                    app.operation_state.as_ref().map(|s| s.phase),
                    app.sync_status,
                    app.health,
                );
                if last != Some(key) {
                    last = Some(key);
                    self.emit(Event::AppProgress {
                        cluster: a.cluster.clone(),
                        phase: key.0,
                        sync: key.1,
                        health: key.2,
                    });
                }
                assess(app, ours, &a.images, t.release) != Assessment::Pending
            })
            .await
            .map_err(|c| self.failed(a, Stage::Deploy, c))?;
        match assess(&verdict, ours, &a.images, t.release) {
            Assessment::Done => {
                self.emit(Event::AppHealthy {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                Ok(())
            }
            Assessment::Failed(reason) => {
                Err(self.failed(a, Stage::Deploy, Cause::Observed(reason)))
            }
            Assessment::Pending => unreachable!("wait returns only on a verdict"),
        }
    }

    /// Until our writes are sent: waits out someone else's operation, writes the override if
    /// it differs, and starts the sync (again after a collision). Returns what the controller
    /// does from then on is judged against.
    async fn start(&self, a: &AppPlan, t: &Target<'_>, writes: &Writes) -> Result<Baseline, Halt> {
        let fail = |cause| self.failed(a, Stage::Deploy, cause);
        let port = |call| move |error| fail(Cause::Port { call, error });
        let names: Vec<String> = a.images.iter().map(|(_, n)| n.clone()).collect();
        let mut reported_wait = false;
        loop {
            let current = self.read(&a.application).await.map_err(fail)?;
            if current.operation_pending {
                self.foreign_operation(a, &current, &mut reported_wait)
                    .await
                    .map_err(fail)?;
                continue;
            }
            if t.cancellable && self.cancelled() {
                return Err(Halt::Interrupted);
            }
            // Nothing written by us (the override already names the release): whatever
            // operation Argo CD ran or runs for that spec is the one to judge.
            let mut baseline = Baseline::default();
            let override_set =
                |v: &OverrideValue| same_override(current.override_like(v, &names).as_ref(), v);
            if let Some(v) = t.value.filter(|v| !override_set(v)) {
                self.lease.before_write().await?;
                writes.override_sent.store(true, Ordering::Relaxed);
                let written = self
                    .ports
                    .argocd
                    .set_override(&a.application, v)
                    .await
                    .map_err(port(Call::SetOverride))?;
                // What the controller does from here on is a reaction to our write.
                baseline = Baseline::of(&written);
            }
            if !t.sync {
                return Ok(baseline);
            }
            self.lease.before_write().await?;
            writes.sync_sent.store(true, Ordering::Relaxed);
            let request = SyncRequest {
                prune: self.plan.prune,
                operation_id: t.op_id.to_owned(),
            };
            match self.ports.argocd.sync(&a.application, &request).await {
                Ok(()) => return Ok(baseline),
                // Someone started an operation between our read and our sync: wait it out.
                // The pause keeps a backend that reports the collision before it shows the
                // operation from being asked again and again.
                Err(Error::Collision { .. }) => {
                    writes.sync_sent.store(false, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(port(Call::Sync)(e)),
            }
        }
    }

    /// Waits until the operation someone else runs on `a` ends (said once).
    async fn foreign_operation(
        &self,
        a: &AppPlan,
        current: &Application,
        reported: &mut bool,
    ) -> Result<(), Cause> {
        if !*reported {
            *reported = true;
            let by = current
                .operation_state
                .as_ref()
                .and_then(|s| s.initiated_by.clone())
                .unwrap_or_else(|| "someone".into());
            self.emit(Event::AppWaiting {
                cluster: a.cluster.clone(),
                application: a.application.clone(),
                operation_by: by,
            });
        }
        self.wait(&a.application, |app| !app.operation_pending)
            .await
            .map(drop)
    }

    /// Why the wave's timeout ended the wait: an operation Argo CD holds Running because a
    /// sync window closed after it was accepted is said as such, not as a bare timeout.
    async fn timed_out(&self, name: &str) -> Cause {
        let held = match self.ports.argocd.application(name).await {
            Ok(app) => app
                .operation_state
                .as_ref()
                .and_then(|s| s.held_by_window())
                .map(str::to_owned),
            Err(_) => None,
        };
        Cause::TimedOut {
            after: self.plan.timeout,
            held_by_window: held,
        }
    }

    /// Reads an Application; a transient failure is retried after a pause (the caller's
    /// deadline bounds it), anything else fails.
    pub(crate) async fn read(&self, name: &str) -> Result<Application, Cause> {
        loop {
            match self.ports.argocd.application(name).await {
                Ok(app) => return Ok(app),
                Err(Error::Transient { message, .. }) => {
                    tracing::debug!("reading {name}: {message}; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(error) => {
                    return Err(Cause::Port {
                        call: Call::Read,
                        error,
                    });
                }
            }
        }
    }

    /// Follows the Application until `done` holds; returns that state. A transient break
    /// of the watch is followed by a pause and a fresh watch (the caller's deadline bounds it).
    pub(crate) async fn wait(
        &self,
        name: &str,
        mut done: impl FnMut(&Application) -> bool,
    ) -> Result<Application, Cause> {
        let failed = |error: Error| Cause::Port {
            call: Call::Watch,
            error,
        };
        let watch = || async { self.ports.argocd.watch(name).await };
        let mut stream = None;
        loop {
            let s = match stream.as_mut() {
                Some(s) => s,
                None => match watch().await {
                    Ok(s) => stream.insert(s),
                    Err(Error::Transient { message, .. }) => {
                        tracing::debug!("watch of {name} failed: {message}; trying again");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    Err(e) => return Err(failed(e)),
                },
            };
            match s.next().await {
                Some(Ok(app)) if done(&app) => return Ok(app),
                Some(Ok(_)) => {}
                Some(Err(Error::Transient { message, .. })) => {
                    tracing::debug!("watch of {name} broke: {message}; watching again");
                    stream = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Some(Err(e)) => return Err(failed(e)),
                None => {
                    stream = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}
