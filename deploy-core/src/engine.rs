//! The promotion engine: executes a [`PromotionPlan`] over the ports, wave by wave, with
//! health waits, soak, halt, rollback, the lock, annotations and the audit record, and
//! reports progress as a stream of typed [`Event`]s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error::Error;
use crate::model::{Release, Tag};
use crate::plan::live::{LiveTag, is_at, live_tag};
use crate::plan::promotion::{Action, AppPlan, Gate, Intent, PromotionPlan, same_override};
use crate::port::{
    Application, ArgoCd, AuditLog, Clock, Health, Lock, OperationPhase, OverrideValue, SyncRequest,
    SyncStatus,
};
use crate::trail::{Actor, AuditRecord, Outcome, RunKind};

/// Annotation written on every Application a run deployed: the release tag.
pub const ANNOTATION_RELEASE: &str = "deploy/release";
/// Annotation: the run id.
pub const ANNOTATION_RUN: &str = "deploy/run";
/// Annotation: who ran it.
pub const ANNOTATION_BY: &str = "deploy/promoted-by";
/// Annotation: when.
pub const ANNOTATION_AT: &str = "deploy/promoted-at";

/// Every annotation the engine writes.
pub const ANNOTATIONS: [&str; 4] = [
    ANNOTATION_RELEASE,
    ANNOTATION_RUN,
    ANNOTATION_BY,
    ANNOTATION_AT,
];

/// The ports the engine drives.
#[derive(Debug, Clone, Copy)]
pub struct Ports<'a> {
    /// Argo CD.
    pub argocd: &'a dyn ArgoCd,
    /// The promotion lock.
    pub lock: &'a dyn Lock,
    /// The audit trail.
    pub audit: &'a dyn AuditLog,
    /// Wall-clock time for records and leases.
    pub clock: &'a dyn Clock,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Unique id of this run (goes into operation infos, annotations and the record).
    pub run_id: String,
    /// Who runs it.
    pub actor: Actor,
    /// The lock holder identity, e.g. `alice@laptop pid 4242`.
    pub holder: String,
    /// The lock's name.
    pub lock_key: String,
    /// Return what this run changed on failure.
    pub rollback_on_failure: bool,
    /// Set to true to stop: no new sync starts; running ones get `grace` to finish.
    pub cancel: Option<watch::Receiver<bool>>,
    /// How long running syncs may finish after a cancel.
    pub grace: Duration,
}

/// What happened, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The run began.
    Started {
        /// Run id.
        run_id: String,
        /// Environment.
        environment: String,
        /// The release.
        release: Release,
        /// Clusters by wave.
        waves: Vec<Vec<String>>,
    },
    /// A gate's verdict (repeated from the plan so the stream is complete).
    Gate(Gate),
    /// The lock is ours.
    LockAcquired {
        /// Lock name.
        key: String,
        /// Expiry (RFC 3339).
        expires_at: String,
    },
    /// A wave began.
    WaveStarted {
        /// 1-based.
        wave: usize,
        /// Its clusters.
        clusters: Vec<String>,
    },
    /// An Application already ran the release.
    AppSkipped {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
    },
    /// Waiting for someone else's operation on the Application.
    AppWaiting {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// Who started it.
        operation_by: String,
    },
    /// Our sync was accepted.
    AppSyncing {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// From this tag.
        from: String,
        /// To this tag.
        to: String,
    },
    /// Observed state changed.
    AppProgress {
        /// Cluster.
        cluster: String,
        /// Operation phase, if any.
        phase: Option<OperationPhase>,
        /// Sync status.
        sync: SyncStatus,
        /// Health.
        health: Health,
    },
    /// The Application runs the release, Synced and Healthy.
    AppHealthy {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// Milliseconds from our first write.
        elapsed_ms: u64,
    },
    /// The Application failed.
    AppFailed {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// Why.
        reason: String,
    },
    /// Soak began.
    SoakStarted {
        /// Wave.
        wave: usize,
        /// Milliseconds.
        duration_ms: u64,
    },
    /// Soak ended well.
    SoakFinished {
        /// Wave.
        wave: usize,
    },
    /// The run stopped on a failure.
    Halted {
        /// Why.
        reason: String,
    },
    /// Returning changed Applications to their previous release.
    RollingBack {
        /// Clusters.
        clusters: Vec<String>,
    },
    /// One Application's rollback ended.
    AppRolledBack {
        /// Cluster.
        cluster: String,
        /// To this tag.
        to: String,
        /// It is Healthy at the previous release.
        ok: bool,
        /// Why not, if not.
        reason: Option<String>,
    },
    /// A stop was requested; no new sync starts.
    Interrupting,
    /// The run ended.
    Finished {
        /// Outcome.
        outcome: Outcome,
        /// One line.
        message: String,
    },
}

/// Where one Application ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum AppState {
    /// Already at the release.
    Skipped,
    /// Now at the release, Healthy.
    Deployed,
    /// Failed (and not rolled back).
    Failed(String),
    /// Failed or part of a failed run, returned to its previous release.
    RolledBack,
    /// Rollback did not reach the previous release.
    RollbackFailed(String),
    /// The run stopped before reaching it.
    NotStarted,
    /// Stopped while in flight.
    Interrupted,
}

/// One Application's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    /// Wave (1-based).
    pub wave: usize,
    /// Cluster.
    pub cluster: String,
    /// Application.
    pub application: String,
    /// Tag before.
    pub from: String,
    /// Release tag.
    pub to: String,
    /// Where it ended.
    pub state: AppState,
    /// Milliseconds spent.
    pub elapsed_ms: u64,
}

/// The run's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Environment.
    pub environment: String,
    /// Release.
    pub release: Release,
    /// Outcome.
    pub outcome: Outcome,
    /// One line.
    pub message: String,
    /// Per Application, in wave order.
    pub apps: Vec<AppReport>,
}

/// Why a run did not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A gate failed; nothing was changed.
    #[error("gate \"{}\" failed: {}", .0.name, .0.summary)]
    GateFailed(Gate),
    /// Another run holds the lock; nothing was changed.
    #[error(
        "another promotion of {environment} is running: {holder} holds the lock until {expires_at} \
         (if that run is gone: wait until then, or clear the lock as README \"Deploying to production\" shows)"
    )]
    Locked {
        /// Environment.
        environment: String,
        /// Holder.
        holder: String,
        /// Expiry.
        expires_at: String,
    },
    /// An Application changed between planning and taking the lock; nothing was changed.
    #[error("the plan is stale: {0}")]
    Stale(String),
    /// A port failed before anything was changed.
    #[error(transparent)]
    Port(#[from] Error),
}

/// How one Application's deployment ended.
enum Deployed {
    Skipped,
    /// At the release; `touched` says whether this run wrote to it.
    Healthy {
        touched: bool,
    },
    Failed {
        reason: String,
        touched: bool,
    },
    Interrupted {
        touched: bool,
    },
}

/// The engine: a plan, the ports, options and an event sink.
pub struct Engine<'a> {
    ports: Ports<'a>,
    opts: RunOptions,
    events: mpsc::UnboundedSender<Event>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("run_id", &self.opts.run_id)
            .finish_non_exhaustive()
    }
}

impl<'a> Engine<'a> {
    /// An engine sending its events to `events`.
    pub fn new(ports: Ports<'a>, opts: RunOptions, events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            ports,
            opts,
            events,
        }
    }

    fn emit(&self, e: Event) {
        // A closed receiver only means nobody is watching.
        let _ = self.events.send(e);
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Resolves when a cancel was requested and the grace period has passed.
    async fn grace_expired(&self) {
        let Some(mut rx) = self.opts.cancel.clone() else {
            return std::future::pending().await;
        };
        if rx.wait_for(|c| *c).await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(self.opts.grace).await;
    }

    /// Resolves as soon as a cancel is requested.
    async fn cancel_requested(&self) {
        let Some(mut rx) = self.opts.cancel.clone() else {
            return std::future::pending().await;
        };
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Executes `plan`. Gate failures and a held lock return an error and change nothing;
    /// every run that took the lock returns a report, whatever its outcome.
    pub async fn run(&self, plan: &PromotionPlan) -> Result<RunReport, EngineError> {
        if let Some(g) = plan.failed_gate() {
            for g in &plan.gates {
                self.emit(Event::Gate(g.clone()));
            }
            return Err(EngineError::GateFailed(g.clone()));
        }
        let release = plan
            .release
            .clone()
            .ok_or_else(|| Error::invalid("the plan has no release"))?;
        let ttl = plan
            .timeout
            .saturating_add(plan.soak)
            .saturating_add(Duration::from_secs(600));
        let lease = match self
            .ports
            .lock
            .acquire(&self.opts.lock_key, &self.opts.holder, ttl)
            .await
        {
            Ok(l) => l,
            Err(Error::LockHeld {
                holder, expires_at, ..
            }) => {
                return Err(EngineError::Locked {
                    environment: plan.environment.clone(),
                    holder,
                    expires_at,
                });
            }
            Err(e) => return Err(e.into()),
        };
        // The plan was made before the lock was ours (and maybe before a confirmation): if
        // another run changed an Application since, its actions and rollback targets are stale.
        if let Some(change) = self.changed_since_planned(plan).await {
            let _ = self.ports.lock.release(&lease).await;
            return Err(EngineError::Stale(change));
        }
        let started_at = self.ports.clock.now();
        self.emit(Event::Started {
            run_id: self.opts.run_id.clone(),
            environment: plan.environment.clone(),
            release: release.clone(),
            waves: plan
                .waves
                .iter()
                .map(|w| w.apps.iter().map(|a| a.cluster.clone()).collect())
                .collect(),
        });
        for g in &plan.gates {
            self.emit(Event::Gate(g.clone()));
        }
        self.emit(Event::LockAcquired {
            key: lease.key.clone(),
            expires_at: lease.expires_at.to_string(),
        });

        let mut lease = lease;
        let mut reports: BTreeMap<String, AppReport> = BTreeMap::new();
        let mut changed: Vec<&AppPlan> = Vec::new();
        let mut failure: Option<String> = None;
        let mut interrupted = false;
        let mut lock_lost = false;
        for wave in &plan.waves {
            for a in &wave.apps {
                reports.insert(
                    a.cluster.clone(),
                    report(wave.number, a, &release.tag, AppState::NotStarted, 0),
                );
            }
        }
        'waves: for wave in &plan.waves {
            if self.cancelled() {
                interrupted = true;
                break;
            }
            match self.renew(&lease, ttl).await {
                Ok(l) => lease = l,
                Err(e) => {
                    failure = Some(format!("lost the promotion lock: {e}"));
                    lock_lost = matches!(e, Error::LockHeld { .. });
                    break;
                }
            }
            self.emit(Event::WaveStarted {
                wave: wave.number,
                clusters: wave.apps.iter().map(|a| a.cluster.clone()).collect(),
            });
            let deadline = Instant::now() + plan.timeout;
            let started = Instant::now();
            let outcomes = join_all(
                wave.apps
                    .iter()
                    .map(|a| self.deploy(plan, a, &release.tag, deadline)),
            )
            .await;
            let mut deployed_any = false;
            for (a, outcome) in wave.apps.iter().zip(outcomes) {
                let elapsed = started.elapsed().as_millis() as u64;
                let state = match outcome {
                    Deployed::Skipped => AppState::Skipped,
                    Deployed::Healthy { touched } => {
                        if touched {
                            changed.push(a);
                        }
                        deployed_any = true;
                        AppState::Deployed
                    }
                    Deployed::Failed { reason, touched } => {
                        if touched {
                            changed.push(a);
                        }
                        failure.get_or_insert_with(|| format!("{}: {reason}", a.cluster));
                        AppState::Failed(reason)
                    }
                    Deployed::Interrupted { touched } => {
                        if touched {
                            changed.push(a);
                        }
                        interrupted = true;
                        AppState::Interrupted
                    }
                };
                reports.insert(
                    a.cluster.clone(),
                    report(wave.number, a, &release.tag, state, elapsed),
                );
            }
            if failure.is_some() || interrupted {
                break 'waves;
            }
            if deployed_any && !plan.soak.is_zero() {
                match self.soak(plan, wave.number, &wave.apps, &release.tag).await {
                    Ok(()) => {}
                    Err(Soak::Interrupted) => {
                        interrupted = true;
                        break 'waves;
                    }
                    Err(Soak::Failed(cluster, reason)) => {
                        if let Some(r) = reports.get_mut(&cluster) {
                            r.state = AppState::Failed(reason.clone());
                        }
                        failure = Some(format!("{cluster}: {reason} during soak"));
                        break 'waves;
                    }
                }
            }
        }

        let (outcome, message) = if let Some(reason) = failure {
            self.emit(Event::Halted {
                reason: reason.clone(),
            });
            if !lock_lost && self.opts.rollback_on_failure && !changed.is_empty() {
                match self.renew(&lease, ttl).await {
                    Ok(l) => lease = l,
                    Err(Error::LockHeld { .. }) => lock_lost = true,
                    Err(_) => {}
                }
            }
            if lock_lost {
                (
                    Outcome::Failed,
                    format!(
                        "{reason}; another run now holds the lock, so nothing was rolled back: check `deploy status`"
                    ),
                )
            } else if self.opts.rollback_on_failure && !changed.is_empty() {
                let all_ok = self.roll_back(plan, &changed, &mut reports).await;
                if all_ok {
                    (
                        Outcome::RolledBack,
                        format!(
                            "{reason}; rolled back {} application(s) to their previous release",
                            changed.len()
                        ),
                    )
                } else {
                    (
                        Outcome::Failed,
                        format!("{reason}; rollback did not complete, see the table"),
                    )
                }
            } else if changed.is_empty() {
                (
                    Outcome::Failed,
                    format!("{reason}; nothing had been changed"),
                )
            } else {
                (
                    Outcome::Failed,
                    format!("{reason}; not rolled back (--no-rollback)"),
                )
            }
        } else if interrupted {
            (
                Outcome::Interrupted,
                "interrupted; run the same command again to resume".to_owned(),
            )
        } else if changed.is_empty() {
            (
                Outcome::UpToDate,
                format!("every application already runs {}", release.tag),
            )
        } else {
            (
                Outcome::Succeeded,
                format!("{} runs on {} cluster(s)", release.tag, reports.len()),
            )
        };

        let deployed: Vec<&AppPlan> = changed
            .iter()
            .copied()
            .filter(|a| {
                reports
                    .get(&a.cluster)
                    .is_some_and(|r| r.state == AppState::Deployed)
            })
            .collect();
        let now = self.ports.clock.now();
        let annotations = BTreeMap::from([
            (ANNOTATION_RELEASE.to_owned(), release.tag.to_string()),
            (ANNOTATION_RUN.to_owned(), self.opts.run_id.clone()),
            (ANNOTATION_BY.to_owned(), self.opts.actor.to_string()),
            (ANNOTATION_AT.to_owned(), now.to_string()),
        ]);
        // The deployment stands whether or not an annotation lands; the audit record is authoritative.
        join_all(
            deployed
                .iter()
                .map(|a| self.ports.argocd.annotate(&a.application, &annotations)),
        )
        .await;
        // In plan order: wave by wave, clusters as configured.
        let apps: Vec<AppReport> = plan
            .waves
            .iter()
            .flat_map(|w| &w.apps)
            .filter_map(|a| reports.remove(&a.cluster))
            .collect();
        let record = AuditRecord {
            run_id: self.opts.run_id.clone(),
            kind: match plan.intent {
                Intent::Promote { .. } => RunKind::Promote,
                Intent::Rollback { .. } => RunKind::Rollback,
            },
            environment: plan.environment.clone(),
            actor: self.opts.actor.clone(),
            release: release.clone(),
            previous: plan
                .waves
                .iter()
                .flat_map(|w| &w.apps)
                .map(|a| (a.cluster.clone(), a.live.tag().map(str::to_owned)))
                .collect(),
            changed: changed.iter().map(|a| a.cluster.clone()).collect(),
            skipped: apps
                .iter()
                .filter(|r| r.state == AppState::Skipped)
                .map(|r| r.cluster.clone())
                .collect(),
            started_at,
            finished_at: now,
            outcome,
            message: message.clone(),
        };
        let mut message = message;
        if let Err(e) = self.ports.audit.append(&record).await {
            // What happened stands; say loudly that its record is missing.
            tracing::error!(
                "the audit record of run {} could not be written: {e}",
                self.opts.run_id
            );
            message.push_str(&format!("; the audit record could NOT be written: {e}"));
        }
        let _ = self.ports.lock.release(&lease).await;
        self.emit(Event::Finished {
            outcome,
            message: message.clone(),
        });
        Ok(RunReport {
            run_id: self.opts.run_id.clone(),
            environment: plan.environment.clone(),
            release,
            outcome,
            message,
            apps,
        })
    }

    /// Renews the lease, retrying transient failures a few times.
    async fn renew(
        &self,
        lease: &crate::port::Lease,
        ttl: Duration,
    ) -> crate::Result<crate::port::Lease> {
        let mut attempt = 0;
        loop {
            match self.ports.lock.renew(lease, ttl).await {
                Err(Error::Transient { .. }) if attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                r => return r,
            }
        }
    }

    /// The first Application that no longer runs what the plan saw, if any.
    async fn changed_since_planned(&self, plan: &PromotionPlan) -> Option<String> {
        let apps: Vec<&AppPlan> = plan.waves.iter().flat_map(|w| &w.apps).collect();
        let now = join_all(
            apps.iter()
                .map(|a| self.ports.argocd.application(&a.application)),
        )
        .await;
        apps.iter().zip(now).find_map(|(a, app)| match app {
            Ok(app) => {
                let live = live_tag(&app, &a.images);
                (live != a.live).then(|| {
                    format!(
                        "{} now runs {live}, planned from {}: plan again (another run changed it)",
                        a.application, a.live
                    )
                })
            }
            Err(e) => Some(format!("{} cannot be read: {e}", a.application)),
        })
    }

    /// Brings one Application to `tag`, within `deadline`.
    async fn deploy(
        &self,
        plan: &PromotionPlan,
        a: &AppPlan,
        tag: &Tag,
        deadline: Instant,
    ) -> Deployed {
        let Action::Deploy { set_override, sync } = &a.action else {
            self.emit(Event::AppSkipped {
                cluster: a.cluster.clone(),
                application: a.application.clone(),
            });
            return Deployed::Skipped;
        };
        let touched = AtomicBool::new(false);
        let op_id = format!("{}/{}", self.opts.run_id, a.cluster);
        let target = Target {
            value: set_override.as_ref(),
            sync: *sync,
            tag,
            prune: plan.prune,
            op_id: &op_id,
            cancellable: true,
        };
        let work = self.bring_to(a, &target, &touched);
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, work) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {} (the wave's timeout)", humantime::format_duration(plan.timeout))),
            },
            () = self.grace_expired() => Err(INTERRUPTED.into()),
        };
        let touched = touched.load(Ordering::Relaxed);
        match result {
            Ok(()) => Deployed::Healthy { touched },
            Err(reason) if reason == INTERRUPTED => Deployed::Interrupted { touched },
            Err(reason) => {
                self.emit(Event::AppFailed {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                    reason: reason.clone(),
                });
                Deployed::Failed { reason, touched }
            }
        }
    }

    /// Waits out foreign operations, writes the override, syncs, and waits for our operation,
    /// Synced, Healthy and the release's images. `touched` is set before each write, so an
    /// Application whose write was cut off by a timeout still counts as changed.
    async fn bring_to(
        &self,
        a: &AppPlan,
        t: &Target<'_>,
        touched: &AtomicBool,
    ) -> Result<(), String> {
        let argocd = self.ports.argocd;
        let started = Instant::now();
        let since = self.ports.clock.now();
        let names: Vec<String> = a.images.iter().map(|(_, n)| n.clone()).collect();
        let mut reported_wait = false;
        loop {
            let current = argocd
                .application(&a.application)
                .await
                .map_err(|e| e.to_string())?;
            if current.operation_pending {
                if !reported_wait {
                    reported_wait = true;
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
                    .await?;
                continue;
            }
            let override_set = |v: &OverrideValue| {
                same_override(
                    current.override_value(&override_kind(v), &names).as_ref(),
                    v,
                )
            };
            // The operation we waited for (e.g. an interrupted run's sync) may have brought it there.
            if reported_wait
                && is_at(&current, &a.images, t.tag)
                && t.value.is_none_or(override_set)
            {
                self.emit(Event::AppHealthy {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                return Ok(());
            }
            if t.cancellable && self.cancelled() {
                return Err(INTERRUPTED.into());
            }
            if let Some(v) = t.value.filter(|v| !override_set(v)) {
                touched.store(true, Ordering::Relaxed);
                argocd
                    .set_override(&a.application, v)
                    .await
                    .map_err(|e| format!("setting the image override: {e}"))?;
            }
            if !t.sync {
                touched.store(true, Ordering::Relaxed);
                break;
            }
            touched.store(true, Ordering::Relaxed);
            match argocd
                .sync(
                    &a.application,
                    &SyncRequest {
                        prune: t.prune,
                        operation_id: t.op_id.to_owned(),
                    },
                )
                .await
            {
                Ok(()) => break,
                // Someone started an operation between our read and our sync: wait it out.
                // The pause keeps a backend that reports the collision before it shows the
                // operation from being asked again and again.
                Err(Error::Collision { .. }) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(e) => return Err(format!("sync refused: {e}")),
            }
        }
        self.emit(Event::AppSyncing {
            cluster: a.cluster.clone(),
            application: a.application.clone(),
            from: a.live.to_string(),
            to: t.tag.to_string(),
        });
        let mut last = None;
        let op = t.sync.then_some(t.op_id);
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
                assess(app, op, since, &a.images, t.tag) != Assessment::Pending
            })
            .await?;
        match assess(&verdict, op, since, &a.images, t.tag) {
            Assessment::Done => {
                self.emit(Event::AppHealthy {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                Ok(())
            }
            Assessment::Failed(reason) => Err(reason),
            Assessment::Pending => unreachable!("wait returns only on a verdict"),
        }
    }

    /// Follows the Application until `done` holds; returns that state. A transient break
    /// of the watch is followed by a pause and a fresh watch.
    async fn wait(
        &self,
        name: &str,
        mut done: impl FnMut(&Application) -> bool,
    ) -> Result<Application, String> {
        let watch = || async {
            self.ports
                .argocd
                .watch(name)
                .await
                .map_err(|e| format!("watching {name}: {e}"))
        };
        let mut stream = watch().await?;
        loop {
            match stream.next().await {
                Some(Ok(app)) if done(&app) => return Ok(app),
                Some(Ok(_)) => {}
                Some(Err(Error::Transient { message, .. })) => {
                    tracing::debug!("watch of {name} broke: {message}; watching again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    stream = watch().await?;
                }
                Some(Err(e)) => return Err(format!("watching {name}: {e}")),
                None => return Err(format!("the watch of {name} ended")),
            }
        }
    }

    /// Watches the wave's Applications for `plan.soak`; any leaving Healthy at the release fails it.
    async fn soak(
        &self,
        plan: &PromotionPlan,
        wave: usize,
        apps: &[AppPlan],
        tag: &Tag,
    ) -> Result<(), Soak> {
        self.emit(Event::SoakStarted {
            wave,
            duration_ms: plan.soak.as_millis() as u64,
        });
        let watchers: Vec<_> = apps
            .iter()
            .filter(|a| a.action != Action::Skip)
            .map(|a| Box::pin(self.stays_healthy(a, tag)))
            .collect();
        if watchers.is_empty() {
            return Ok(());
        }
        // Each watcher returns only when its Application fails; the soak passes when none did in time.
        let first_failure = futures::future::select_all(watchers);
        tokio::select! {
            r = tokio::time::timeout(plan.soak, first_failure) => {
                if let Ok((failed, _, _)) = r {
                    return Err(failed);
                }
            }
            () = self.cancel_requested() => return Err(Soak::Interrupted),
        }
        self.emit(Event::SoakFinished { wave });
        Ok(())
    }

    /// Returns (only) when `a` stops being Healthy at `tag`; re-watches after a transient break.
    async fn stays_healthy(&self, a: &AppPlan, tag: &Tag) -> Soak {
        let check = |app: &Application| -> Option<Soak> {
            if app.health == Health::Degraded || app.health == Health::Missing {
                let msg = app.health_message.clone().unwrap_or_default();
                return Some(Soak::Failed(
                    a.cluster.clone(),
                    format!("{:?} {msg}", app.health).trim().to_owned(),
                ));
            }
            (live_tag(app, &a.images).tag() != Some(tag.as_str()))
                .then(|| Soak::Failed(a.cluster.clone(), format!("no longer runs {tag}")))
        };
        loop {
            match self.wait(&a.application, |app| check(app).is_some()).await {
                Ok(app) => return check(&app).expect("wait returned on a failure"),
                Err(e) => {
                    // Not observable right now: say so in the logs and look again.
                    tracing::debug!("soak of {}: {e}", a.application);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Returns every changed Application to what it ran before this run; true if all made it.
    /// Rollback is not interrupted by a stop request, and each Application has the wave's timeout.
    async fn roll_back(
        &self,
        plan: &PromotionPlan,
        changed: &[&AppPlan],
        reports: &mut BTreeMap<String, AppReport>,
    ) -> bool {
        self.emit(Event::RollingBack {
            clusters: changed.iter().map(|a| a.cluster.clone()).collect(),
        });
        let results = join_all(changed.iter().map(|a| async move {
            let Some(previous) = &a.previous else {
                return (
                    a,
                    Err(
                        "what it ran before this run is unknown (no single tag, no override)"
                            .to_owned(),
                    ),
                );
            };
            let Some(prev_tag) = previous
                .tags()
                .first()
                .and_then(|t| Tag::new(t.clone()).ok())
            else {
                return (a, Err("its previous override has no tag".to_owned()));
            };
            let argocd = self.ports.argocd;
            let release_tag = plan
                .release
                .as_ref()
                .map(|r| r.tag.to_string())
                .unwrap_or_default();
            let work = async {
                if argocd
                    .application(&a.application)
                    .await
                    .map_err(|e| e.to_string())?
                    .operation_pending
                    && argocd.terminate(&a.application).await.is_ok()
                {
                    self.wait(&a.application, |app| !app.operation_pending)
                        .await?;
                }
                let rollback = AppPlan {
                    foreign_operation: None,
                    live: LiveTag::Tag(release_tag),
                    ..(*a).clone()
                };
                let touched = AtomicBool::new(false);
                let sync = matches!(a.action, Action::Deploy { sync: true, .. });
                let op_id = format!("{}/rollback/{}", self.opts.run_id, a.cluster);
                let target = Target {
                    value: Some(previous),
                    sync,
                    tag: &prev_tag,
                    prune: plan.prune,
                    op_id: &op_id,
                    cancellable: false,
                };
                self.bring_to(&rollback, &target, &touched).await
            };
            let r = tokio::time::timeout(plan.timeout, work)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "timed out after {}",
                        humantime::format_duration(plan.timeout)
                    ))
                });
            (a, r.map(|()| prev_tag))
        }))
        .await;
        let mut all_ok = true;
        for (a, r) in results {
            let (state, to, ok, reason) = match r {
                Ok(t) => (AppState::RolledBack, t.to_string(), true, None),
                Err(e) => {
                    all_ok = false;
                    (
                        AppState::RollbackFailed(e.clone()),
                        a.live.to_string(),
                        false,
                        Some(e),
                    )
                }
            };
            self.emit(Event::AppRolledBack {
                cluster: a.cluster.clone(),
                to,
                ok,
                reason,
            });
            if let Some(rep) = reports.get_mut(&a.cluster) {
                rep.state = state;
            }
        }
        all_ok
    }
}

/// What `bring_to` brings an Application to.
struct Target<'a> {
    /// The override to write, if it differs.
    value: Option<&'a OverrideValue>,
    /// Start a sync (false: Argo CD syncs by itself).
    sync: bool,
    /// The tag it must run.
    tag: &'a Tag,
    /// Sync with prune.
    prune: bool,
    /// Our operation id.
    op_id: &'a str,
    /// Whether a stop request stops it before its sync (not for rollback).
    cancellable: bool,
}

/// How long to pause after a collision, a broken watch or a failed renewal before trying again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

const INTERRUPTED: &str = "interrupted before the sync started";

enum Soak {
    Failed(String, String),
    Interrupted,
}

fn override_kind(v: &OverrideValue) -> crate::config::ImageOverride {
    match v {
        OverrideValue::Helm { parameter, .. } => crate::config::ImageOverride::Helm {
            parameter: parameter.clone(),
        },
        OverrideValue::Kustomize { .. } => crate::config::ImageOverride::Kustomize,
    }
}

fn report(wave: usize, a: &AppPlan, tag: &Tag, state: AppState, elapsed_ms: u64) -> AppReport {
    AppReport {
        wave,
        cluster: a.cluster.clone(),
        application: a.application.clone(),
        from: a.live.to_string(),
        to: tag.to_string(),
        state,
        elapsed_ms,
    }
}

/// Where an Application stands against a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Keep waiting.
    Pending,
    /// Our operation Succeeded; Synced, Healthy, running the release.
    Done,
    /// It will not get there.
    Failed(String),
}

/// Judges `app` against a deployment of `tag` that we started at `since` with operation `op`
/// (`None` for automated environments, where Argo CD starts the operation). Pure.
///
/// Our operation is finished only when `operation` is cleared, `finishedAt` is set, the
/// app was reconciled after it, and it carries our id; then it succeeded only if the phase
/// is Succeeded, the app is Synced and Healthy, and it runs the release. Degraded fails fast.
pub fn assess(
    app: &Application,
    op: Option<&str>,
    since: jiff::Timestamp,
    images: &[(String, String)],
    tag: &Tag,
) -> Assessment {
    if app.operation_pending {
        return Assessment::Pending;
    }
    let state = app.operation_state.as_ref();
    match op {
        Some(op) => {
            let Some(s) = state.filter(|s| s.deploy_operation() == Some(op)) else {
                return Assessment::Pending;
            };
            let Some(finished) = s.finished_at.filter(|_| s.phase.is_completed()) else {
                return Assessment::Pending;
            };
            if app.reconciled_at.is_none_or(|r| r < finished) {
                return Assessment::Pending;
            }
            if s.phase != OperationPhase::Succeeded {
                return Assessment::Failed(format!("sync {:?}: {}", s.phase, s.message));
            }
        }
        None => {
            if let Some(s) =
                state.filter(|s| s.started_at.is_some_and(|t| t >= since) && s.phase.is_completed())
                && s.phase != OperationPhase::Succeeded
            {
                return Assessment::Failed(format!("automated sync {:?}: {}", s.phase, s.message));
            }
        }
    }
    if app.health == Health::Degraded {
        let msg = app.health_message.as_deref().unwrap_or("no message");
        return Assessment::Failed(format!("Degraded: {msg}"));
    }
    if app.sync_status == SyncStatus::Synced
        && app.health == Health::Healthy
        && live_tag(app, images).tag() == Some(tag.as_str())
    {
        return Assessment::Done;
    }
    Assessment::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{OPERATION_INFO_KEY, OperationState, test_app};

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    /// An app whose operation `op` (ours when `op == "ours"`) ended in `phase` at t=20.
    fn app(
        op: &str,
        phase: OperationPhase,
        reconciled: i64,
        health: Health,
        tag: &str,
    ) -> Application {
        let mut a = test_app("a", &[&format!("r/api:{tag}")]);
        a.health = health;
        a.reconciled_at = Some(ts(reconciled));
        a.operation_state = Some(OperationState {
            phase,
            message: "msg".into(),
            started_at: Some(ts(10)),
            finished_at: phase.is_completed().then(|| ts(20)),
            initiated_by: Some("deploy".into()),
            info: [(OPERATION_INFO_KEY.to_owned(), op.to_owned())].into(),
        });
        a
    }

    #[track_caller]
    fn check(a: Application, op: Option<&str>, want: &str) {
        let images = [("api".to_owned(), "r/api".to_owned())];
        let got = match assess(&a, op, ts(5), &images, &Tag::new("v2").unwrap()) {
            Assessment::Pending => "pending".to_owned(),
            Assessment::Done => "done".to_owned(),
            Assessment::Failed(why) => format!("failed: {why}"),
        };
        assert!(got.starts_with(want), "got {got}, want {want}");
    }

    #[test]
    fn our_operation_must_finish_reconcile_and_reach_the_release() {
        use Health::*;
        use OperationPhase::*;
        check(
            app("ours", Succeeded, 20, Healthy, "v2"),
            Some("ours"),
            "done",
        );
        check(
            app("ours", Succeeded, 19, Healthy, "v2"),
            Some("ours"),
            "pending",
        ); // reconciledAt < finishedAt
        check(
            app("other", Succeeded, 20, Healthy, "v2"),
            Some("ours"),
            "pending",
        ); // not our operation
        check(
            app("ours", Running, 20, Healthy, "v2"),
            Some("ours"),
            "pending",
        );
        check(
            app("ours", Succeeded, 20, Progressing, "v2"),
            Some("ours"),
            "pending",
        );
        check(
            app("ours", Succeeded, 20, Healthy, "v1"),
            Some("ours"),
            "pending",
        ); // old images still run
        check(
            app("ours", Failed, 20, Healthy, "v1"),
            Some("ours"),
            "failed: sync Failed",
        );
        check(
            app("ours", Error, 20, Healthy, "v1"),
            Some("ours"),
            "failed: sync Error",
        );
        check(
            app("ours", Succeeded, 20, Degraded, "v2"),
            Some("ours"),
            "failed: Degraded",
        );
        let mut pending = app("ours", Succeeded, 20, Healthy, "v2");
        pending.operation_pending = true;
        check(pending, Some("ours"), "pending");
        let mut out_of_sync = app("ours", Succeeded, 20, Healthy, "v2");
        out_of_sync.sync_status = SyncStatus::OutOfSync;
        check(out_of_sync, Some("ours"), "pending");
        // Automated environments: Argo CD's own operation, after our write, decides.
        check(app("", Succeeded, 20, Healthy, "v2"), None, "done");
        check(
            app("", Failed, 20, Healthy, "v1"),
            None,
            "failed: automated sync Failed",
        );
    }
}
