//! The promotion engine: executes a [`PromotionPlan`] over the ports, wave by wave, with
//! health waits, soak, halt, rollback, the lock, annotations and the audit trail, and
//! reports progress as typed [`Event`]s to a callback.
//!
//! The run is this module; one Application's deployment is `app`, the soak [`soak`],
//! rollback `rollback`, the records `record` and the lock [`lock`]. The rules they apply are
//! deploy-core's: the completion rule [`assess`](deploy_core::rollout::assess), and how a run
//! ends ([`outcome`](deploy_core::rollout::outcome): every step returns a typed `Halt`, and
//! the run concludes from one `End`). Every decision is a pure function or a small state
//! machine tested alone; this module only sequences them.

mod app;
mod builder;
pub mod check;
pub mod lock;
mod record;
mod rollback;
pub mod soak;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio::time::Instant;

use deploy_core::error::Error;
use deploy_core::model::Release;
use deploy_core::plan::live::live_at;
use deploy_core::plan::promotion::{Action, AppPlan, PromotionPlan};
use deploy_core::port::{ArgoCd, AuditLog, Clock, Lease, Lock, Metrics};
use deploy_core::trail::{Actor, Outcome};

use deploy_core::lock::Holder;
use deploy_core::rollout::event::{Event, RunReport};
use deploy_core::rollout::lease::{LeaseLost, lease_ttl};
use deploy_core::rollout::outcome::{End, Failure, Halt, Observed, Place, RollbackResult};
use deploy_core::trail::{AppReport, AppState};

use app::Reached;
use lock::LeaseKeeper;
use record::Progress;

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
    /// Measurements for the checks; `None`: no check can run, so a plan with checks fails
    /// before anything is written.
    pub metrics: Option<&'a dyn Metrics>,
}

/// A request to stop a run, sent through [`RunOptions::stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum StopRequest {
    /// Keep going.
    #[default]
    None,
    /// Start no new sync; running ones get [`RunOptions::grace`] to finish.
    Graceful,
    /// Stop waiting for running syncs now (a second interrupt); the run still records how it
    /// ended and releases the lock.
    Now,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Unique id of this run (goes into operation infos, annotations and the records).
    pub run_id: String,
    /// Who runs it.
    pub actor: Actor,
    /// The lock holder identity; a [`Holder`] string makes stale-lock takeover possible.
    pub holder: String,
    /// The lock's name: [`deploy_core::lock::key`].
    pub lock_key: String,
    /// Return what this run changed on failure.
    pub rollback_on_failure: bool,
    /// Stop requests.
    pub stop: Option<watch::Receiver<StopRequest>>,
    /// How long running syncs may finish after a graceful stop.
    pub grace: Duration,
    /// Whether a process of this machine exists (by pid). When given, and both this run's
    /// holder and the lock's are [`Holder`]s, a lock left by a process of this user, host,
    /// boot and PID namespace that no longer exists is taken over ([`Holder::may_take_over`]).
    pub process_exists: Option<fn(u32) -> bool>,
    /// How long a wave may wait for its Applications' sync windows to allow it (`--window-wait`);
    /// zero: do not wait ([`window`]).
    pub window_wait: Duration,
    /// Where the lock lives, in words (e.g. `S3 s3://bucket/prefix`), for the message of a
    /// run halted because its lock could not be held; empty: the key alone names it.
    pub lock_backend: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            run_id: String::new(),
            actor: Actor::default(),
            holder: String::new(),
            lock_key: String::new(),
            rollback_on_failure: true,
            stop: None,
            grace: Duration::from_secs(30),
            process_exists: None,
            window_wait: Duration::ZERO,
            lock_backend: String::new(),
        }
    }
}

/// Why a run did not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A gate failed; nothing was changed.
    #[error("gate \"{}\" failed: {}", .0.name, .0.summary)]
    GateFailed(deploy_core::plan::promotion::Gate),
    /// Another run holds the lock; nothing was changed.
    #[error(
        "another promotion of {environment} is running: {holder} holds the lock until {expires_at} \
         (if that run is gone: wait until then, or remove it with `deploy unlock`)"
    )]
    Locked {
        /// Environment.
        environment: String,
        /// Holder.
        holder: String,
        /// Expiry (RFC 3339).
        expires_at: String,
    },
    /// An Application changed between planning and taking the lock; nothing was changed.
    #[error("the plan is stale: {0}")]
    Stale(String),
    /// The record of the run's start could not be written; nothing was changed.
    #[error(
        "the audit record of the run's start could not be written, so nothing was changed: {0}"
    )]
    Audit(Error),
    /// The first wave that writes may not sync now, and its sync windows would keep it
    /// waiting longer than [`RunOptions::window_wait`]; nothing was changed.
    #[error("{0}; nothing was changed (wait for the window, or pass --window-wait)")]
    WindowBlocked(deploy_core::rollout::window::Blocked),
    /// A port failed before anything was changed.
    #[error(transparent)]
    Port(#[from] Error),
}

/// The engine: the ports and the options of one run.
pub struct Engine<'a> {
    ports: Ports<'a>,
    opts: RunOptions,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("run_id", &self.opts.run_id)
            .finish_non_exhaustive()
    }
}

/// Runs `futures` concurrently until all are `Ok` or the first `Err`, whichever finishes
/// first. Unlike `try_join_all`, which over more than 30 futures (or an iterator without an
/// upper bound) keeps their order and sees a later one's error only once the earlier ones end.
/// They are collected before the first await, so the caller's iterator (and its closures)
/// is not part of the future, which stays `Send`.
pub(crate) fn all_ok<E, F: std::future::Future<Output = Result<(), E>>>(
    futures: impl IntoIterator<Item = F>,
) -> impl std::future::Future<Output = Result<(), E>> {
    use futures::TryStreamExt as _;
    let mut running: futures::stream::FuturesUnordered<F> = futures.into_iter().collect();
    async move {
        while running.try_next().await?.is_some() {}
        Ok(())
    }
}

type Sink<'e> = Mutex<&'e mut (dyn FnMut(Event) + Send)>;

/// One run in progress: what every part of it shares.
pub(crate) struct Run<'r> {
    ports: Ports<'r>,
    opts: &'r RunOptions,
    plan: &'r PromotionPlan,
    release: &'r Release,
    lease: LeaseKeeper<'r>,
    sink: &'r Sink<'r>,
    measurements: Mutex<Vec<deploy_core::trail::Measurement>>,
}

/// Hands `e` to the callback. A callback that panics loses that event, not the run: the
/// panic is caught here (and logged), so the run goes on, releases its lock and reports; the
/// sink stays usable even if a panic ever poisoned it.
fn emit_to(sink: &Sink<'_>, e: Event) {
    let mut f = sink
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (*f)(e)));
    if delivered.is_err() {
        tracing::error!("the event callback panicked; the run goes on without that event");
    }
}

impl<'a> Engine<'a> {
    /// An engine over `ports`.
    pub fn new(ports: Ports<'a>, opts: RunOptions) -> Self {
        Self { ports, opts }
    }

    /// Executes `plan`, calling `on_event` for each [`Event`] (keep it quick: render through
    /// a channel if rendering may block). Gate failures, a held lock and a stale plan return
    /// an error and change nothing; every run that took the lock returns a report, whatever
    /// its outcome, and leaves two audit records: one when it took the lock, one at its end.
    pub async fn run(
        &self,
        plan: &PromotionPlan,
        mut on_event: impl FnMut(Event) + Send,
    ) -> Result<RunReport, EngineError> {
        let sink: Sink<'_> = Mutex::new(&mut on_event);
        self.refuse_early(plan, &sink)?;
        let release = plan
            .release
            .as_ref()
            .ok_or_else(|| Error::invalid("the plan has no release"))?;
        if let Some(b) = window::preflight(
            self.ports.argocd,
            plan,
            self.ports.clock.now(),
            self.opts.window_wait,
        )
        .await
        {
            for g in &plan.gates {
                emit_to(&sink, Event::Gate(g.clone()));
            }
            return Err(EngineError::WindowBlocked(b));
        }
        let ttl = lease_ttl(plan);
        let lease = self.acquire(plan, ttl, &sink).await?;
        let run = Run {
            ports: self.ports,
            opts: &self.opts,
            plan,
            release,
            lease: LeaseKeeper::new(
                self.ports.lock,
                self.ports.clock,
                ttl,
                lease,
                &self.opts.lock_backend,
            ),
            sink: &sink,
            measurements: Mutex::new(Vec::new()),
        };
        // The plan was made before the lock was ours (and maybe before a confirmation): if
        // another run changed an Application since, its actions and rollback targets are stale.
        if let Some(change) = run.changed_since_planned().await {
            run.lease.release().await;
            return Err(EngineError::Stale(change));
        }
        let started_at = self.ports.clock.now();
        if let Err(e) = self.record_start(plan, release, started_at).await {
            run.lease.release().await;
            return Err(EngineError::Audit(e));
        }
        run.emit(Event::Started {
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
            run.emit(Event::Gate(g.clone()));
        }
        run.emit(Event::LockAcquired {
            key: self.opts.lock_key.clone(),
            expires_at: run.lease.expires_at(),
        });
        Ok(run.execute(started_at).await)
    }

    /// Refuses a plan before anything is asked of the world: a failed gate (its gates are
    /// reported), or checks with no metrics backend to measure them.
    fn refuse_early(&self, plan: &PromotionPlan, sink: &Sink<'_>) -> Result<(), EngineError> {
        if let Some(g) = plan.failed_gate() {
            for g in &plan.gates {
                emit_to(sink, Event::Gate(g.clone()));
            }
            return Err(EngineError::GateFailed(g.clone()));
        }
        if self.ports.metrics.is_none()
            && let Some(c) = plan
                .waves
                .iter()
                .flat_map(|w| &w.apps)
                .find_map(|a| a.checks.first())
        {
            return Err(EngineError::Port(Error::invalid(format!(
                "{} has checks (e.g. {:?}) but no metrics backend is configured, so they cannot run; nothing was changed",
                plan.environment, c.name
            ))));
        }
        Ok(())
    }

    /// Appends the record that the run took the lock (before any write).
    async fn record_start(
        &self,
        plan: &PromotionPlan,
        release: &Release,
        started_at: jiff::Timestamp,
    ) -> Result<(), Error> {
        let intent = record::record(
            plan,
            &self.opts,
            release,
            started_at,
            Progress {
                changed: &[],
                apps: &[],
                finished_at: started_at,
                outcome: Outcome::Started,
                message: "took the lock".into(),
                checks: Vec::new(),
            },
        );
        self.ports.audit.append(&intent).await
    }

    /// Takes the lock; a lock left by a process of this machine that no longer exists is
    /// taken over.
    async fn acquire(
        &self,
        plan: &PromotionPlan,
        ttl: Duration,
        sink: &Sink<'_>,
    ) -> Result<Lease, EngineError> {
        let lock = self.ports.lock;
        let key = &self.opts.lock_key;
        match lock.acquire(key, &self.opts.holder, ttl).await {
            Ok(l) => return Ok(l),
            Err(Error::LockHeld {
                holder, expires_at, ..
            }) => {
                let gone = match (
                    self.opts.process_exists,
                    self.opts.holder.parse::<Holder>(),
                    holder.parse::<Holder>(),
                ) {
                    (Some(exists), Ok(me), Ok(them)) => me.may_take_over(&them, exists),
                    _ => false,
                };
                if !gone {
                    return Err(EngineError::Locked {
                        environment: plan.environment.clone(),
                        holder,
                        expires_at,
                    });
                }
                tracing::warn!(
                    "the lock holder ({holder}) is no longer running; taking over its lock"
                );
                let stale = Lease {
                    key: key.clone(),
                    holder: holder.clone(),
                    expires_at: expires_at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                };
                lock.release(&stale).await?;
                emit_to(sink, Event::LockTakenOver { holder });
            }
            Err(e) => return Err(e.into()),
        }
        lock.acquire(key, &self.opts.holder, ttl)
            .await
            .map_err(|e| match e {
                Error::LockHeld {
                    holder, expires_at, ..
                } => EngineError::Locked {
                    environment: plan.environment.clone(),
                    holder,
                    expires_at,
                },
                e => e.into(),
            })
    }
}

impl Run<'_> {
    fn emit(&self, e: Event) {
        emit_to(self.sink, e);
    }

    /// Keeps a check measurement for the audit record.
    fn measured(&self, m: deploy_core::trail::Measurement) {
        self.measurements
            .lock()
            .expect("a measurement was being kept")
            .push(m);
    }

    fn stop_request(&self) -> StopRequest {
        self.opts
            .stop
            .as_ref()
            .map_or(StopRequest::None, |s| *s.borrow())
    }

    fn cancelled(&self) -> bool {
        self.stop_request() >= StopRequest::Graceful
    }

    /// Resolves when `want` (or more) was requested.
    async fn requested(&self, want: StopRequest) {
        let Some(mut rx) = self.opts.stop.clone() else {
            return std::future::pending().await;
        };
        if rx.wait_for(|s| *s >= want).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves as soon as a stop is requested.
    async fn cancel_requested(&self) {
        self.requested(StopRequest::Graceful).await;
    }

    /// Resolves when a stop was requested and the grace period has passed (or a stop now).
    async fn grace_expired(&self) {
        self.requested(StopRequest::Graceful).await;
        tokio::select! {
            () = tokio::time::sleep(self.opts.grace) => {}
            () = self.requested(StopRequest::Now) => {}
        }
    }

    /// The first Application that no longer runs what the plan saw, if any.
    async fn changed_since_planned(&self) -> Option<String> {
        let apps: Vec<&AppPlan> = self.plan.waves.iter().flat_map(|w| &w.apps).collect();
        let now = join_all(
            apps.iter()
                .map(|a| self.ports.argocd.application(&a.application)),
        )
        .await;
        apps.iter().zip(now).find_map(|(a, app)| match app {
            Ok(app) => {
                let live = live_at(&app, &a.images, self.release);
                // An operation the plan saw pending (e.g. the sync of a killed run) may have
                // brought it to the release since: that was foreseen, and changes neither the
                // action's purpose nor the rollback target. Any other change was another run's.
                let foreseen =
                    a.foreign_operation.is_some() && live.tag() == Some(self.release.tag.as_str());
                let moved = live != a.live && !foreseen;
                moved.then(|| {
                    format!(
                        "{} now runs {live}, planned from {}: plan again (another run changed it)",
                        a.application, a.live
                    )
                })
            }
            Err(e) => Some(format!("{} cannot be read: {e}", a.application)),
        })
    }
}

/// What the waves did so far: each Application's report, and what the run changed, deployed
/// and soaked again.
struct Waves<'p> {
    reports: BTreeMap<String, AppReport>,
    changed: Vec<&'p AppPlan>,
    deployed: usize,
    soaked_again: usize,
}

impl<'r> Run<'r> {
    /// Where `a` is in the plan.
    fn place(&self, a: &AppPlan) -> Place {
        let wave = self
            .plan
            .waves
            .iter()
            .find(|w| w.apps.iter().any(|x| x.cluster == a.cluster))
            .map_or(0, |w| w.number);
        Place {
            wave,
            cluster: a.cluster.clone(),
            application: a.application.clone(),
        }
    }

    /// The waves, then a read of every Application, then the rollback if one failed, then
    /// the annotations, the record and the lock's release.
    async fn execute(&self, started_at: jiff::Timestamp) -> RunReport {
        let mut w = Waves {
            reports: BTreeMap::new(),
            changed: Vec::new(),
            deployed: 0,
            soaked_again: 0,
        };
        for wave in &self.plan.waves {
            for a in &wave.apps {
                let state = match a.action {
                    Action::Soak { .. } => AppState::Unsoaked,
                    _ => AppState::NotStarted,
                };
                w.reports.insert(
                    a.cluster.clone(),
                    report(wave.number, a, self.release, state, 0),
                );
            }
        }
        let halt = match self.run_waves(&mut w).await {
            Ok(()) => self.final_read().await.map(Halt::Failed),
            Err(halt) => Some(halt),
        };
        let (failure, interrupted) = match halt {
            None => (None, false),
            Some(Halt::Interrupted) => (None, true),
            Some(Halt::Failed(f)) => (Some(f), false),
        };
        let rollback = match &failure {
            None => RollbackResult::NothingChanged,
            Some(f) => self.settle(f, &mut w).await,
        };
        let end = End {
            tag: self.release.tag.clone(),
            failure,
            interrupted,
            rollback,
            observed: Observed {
                deployed: w.deployed,
                soaked_again: w.soaked_again,
                clusters: w.reports.len(),
            },
        };
        self.finish(started_at, w, end).await
    }

    /// Each wave in turn: its windows, its deployments, its soak; the first halt ends them.
    async fn run_waves(&self, w: &mut Waves<'r>) -> Result<(), Halt> {
        let plan = self.plan;
        for wave in &plan.waves {
            if self.cancelled() {
                return Err(Halt::Interrupted);
            }
            self.await_windows(wave).await?;
            self.lease.renew().await?;
            self.emit(Event::WaveStarted {
                wave: wave.number,
                clusters: wave.apps.iter().map(|a| a.cluster.clone()).collect(),
            });
            let soak_apps = self.deploy_wave(wave, w).await?;
            // An Application found at the release unsoaked is soaked even without a soak
            // time: it must at least be observed Healthy there.
            let must_soak = !plan.soak.is_zero()
                || soak_apps
                    .iter()
                    .any(|a| !a.checks.is_empty() || matches!(a.action, Action::Soak { .. }));
            if !soak_apps.is_empty()
                && must_soak
                && let Err(halt) = self.soak(wave.number, &soak_apps).await
            {
                if let Halt::Failed(f) = &halt
                    && let Some((cluster, state)) = f.left()
                    && let Some(r) = w.reports.get_mut(cluster)
                {
                    r.state = state;
                }
                return Err(halt);
            }
            // Observed through the soak and its checks: a rerun need not soak them again.
            self.mark_soaked(&soak_apps).await;
            for a in soak_apps
                .iter()
                .filter(|a| matches!(a.action, Action::Soak { .. }))
            {
                w.soaked_again += 1;
                if let Some(r) = w.reports.get_mut(&a.cluster) {
                    r.state = AppState::SoakedAgain;
                }
            }
        }
        Ok(())
    }

    /// Brings the wave's Applications to the release together and records where each got;
    /// returns those its soak watches. A failure among them (the first, in wave order) wins
    /// over a stop request.
    async fn deploy_wave(
        &self,
        wave: &'r deploy_core::plan::promotion::WavePlan,
        w: &mut Waves<'r>,
    ) -> Result<Vec<AppPlan>, Halt> {
        let started = Instant::now();
        let deadline = started + self.plan.timeout;
        let ends = join_all(wave.apps.iter().map(|a| self.deploy(a, deadline))).await;
        let mut soak_apps = Vec::new();
        let mut failure: Option<Failure> = None;
        let mut interrupted = false;
        for (a, (end, wrote)) in wave.apps.iter().zip(ends) {
            let elapsed = started.elapsed().as_millis() as u64;
            if wrote {
                w.changed.push(a);
            }
            let state = match end {
                Ok(Reached::Skipped) => AppState::Skipped,
                Ok(Reached::SoakAgain) => {
                    soak_apps.push(a.clone());
                    AppState::Unsoaked
                }
                Ok(Reached::Deployed) => {
                    w.deployed += 1;
                    soak_apps.push(a.clone());
                    AppState::Deployed
                }
                Err(Halt::Interrupted) => {
                    interrupted = true;
                    AppState::Interrupted
                }
                Err(Halt::Failed(f)) => {
                    let state = AppState::Failed(f.reason());
                    failure.get_or_insert(f);
                    state
                }
            };
            w.reports.insert(
                a.cluster.clone(),
                report(wave.number, a, self.release, state, elapsed),
            );
        }
        match (failure, interrupted) {
            (Some(f), _) => Err(f.into()),
            (None, true) => Err(Halt::Interrupted),
            (None, false) => Ok(soak_apps),
        }
    }

    /// After `failure`: says so, and returns what this run wrote (and what an interrupted
    /// run of this release left unsoaked) to where it was, unless the failure keeps what is
    /// deployed, rollback is off, or another run holds the lock.
    async fn settle(&self, failure: &Failure, w: &mut Waves<'r>) -> RollbackResult {
        self.emit(Event::Halted {
            reason: failure.to_string(),
        });
        // What this run wrote, and what an interrupted run of this release left
        // unsoaked: both are this promotion's, and both go back.
        let mut to_return = w.changed.clone();
        to_return.extend(
            self.plan
                .waves
                .iter()
                .flat_map(|w| &w.apps)
                .filter(|a| matches!(a.action, Action::Soak { .. })),
        );
        if to_return.is_empty() || failure.keeps_what_is_deployed() {
            RollbackResult::NothingChanged
        } else if !self.opts.rollback_on_failure {
            RollbackResult::Disabled
        } else if failure.lock_taken() {
            RollbackResult::LockTaken
        } else {
            match self.lease.renew().await {
                Err(LeaseLost::Taken { .. }) => RollbackResult::LockTaken,
                // Expired: each write tries again, and fails if it must.
                _ => self.roll_back(&to_return, &mut w.reports).await,
            }
        }
    }

    /// The end: the annotations of what stays deployed, the end record, the lock's release,
    /// the `Finished` event and the report.
    async fn finish(&self, started_at: jiff::Timestamp, mut w: Waves<'r>, end: End) -> RunReport {
        let plan = self.plan;
        let (outcome, mut message) = end.conclude();
        let now = self.ports.clock.now();
        self.annotate_deployed(&w.reports, now).await;
        // In plan order: wave by wave, clusters as configured.
        let apps: Vec<AppReport> = plan
            .waves
            .iter()
            .flat_map(|w| &w.apps)
            .filter_map(|a| w.reports.remove(&a.cluster))
            .collect();
        let checks = std::mem::take(
            &mut *self
                .measurements
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let record = record::record(
            plan,
            self.opts,
            self.release,
            started_at,
            Progress {
                changed: &w.changed,
                apps: &apps,
                finished_at: now,
                outcome,
                message: message.clone(),
                checks,
            },
        );
        let record_error = self.ports.audit.append(&record).await.err().map(|e| {
            // What happened stands; say loudly that its record is missing.
            tracing::error!(
                "the audit record of run {} could not be written: {e}",
                self.opts.run_id
            );
            message.push_str(&format!(
                "; the audit record of its end could NOT be written: {e}"
            ));
            e.to_string()
        });
        self.lease.release().await;
        self.emit(Event::Finished {
            outcome,
            message: message.clone(),
        });
        RunReport {
            run_id: self.opts.run_id.clone(),
            environment: plan.environment.clone(),
            release: self.release.clone(),
            outcome,
            message,
            apps,
            record_error,
            end: Some(end),
        }
    }

    /// Marks what stays deployed (or soaked again) with the release. The deployment stands
    /// whether or not an annotation lands; the audit record is authoritative. No write once
    /// another run holds the lock.
    async fn annotate_deployed(&self, reports: &BTreeMap<String, AppReport>, now: jiff::Timestamp) {
        let still_deployed: Vec<&AppPlan> = self
            .plan
            .waves
            .iter()
            .flat_map(|w| &w.apps)
            .filter(|a| {
                reports.get(&a.cluster).is_some_and(|r| {
                    r.state == AppState::Deployed || r.state == AppState::SoakedAgain
                })
            })
            .collect();
        if !still_deployed.is_empty() && self.lease.before_write().await.is_ok() {
            let annotations = record::annotations(self.opts, self.release, now);
            join_all(
                still_deployed
                    .iter()
                    .map(|a| self.ports.argocd.annotate(&a.application, &annotations)),
            )
            .await;
        }
    }
}

fn report(
    wave: usize,
    a: &AppPlan,
    release: &Release,
    state: AppState,
    elapsed_ms: u64,
) -> AppReport {
    AppReport {
        wave,
        cluster: a.cluster.clone(),
        application: a.application.clone(),
        from: a.live.to_string(),
        to: release.tag.to_string(),
        state,
        elapsed_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::future::{Future, pending, ready};
    use std::pin::Pin;

    use super::all_ok;

    type Boxed = Pin<Box<dyn Future<Output = Result<(), usize>>>>;

    /// The last of 40 futures fails at once while the others never end: the failure is seen
    /// (`try_join_all` would wait for the 39 before it, here for ever).
    #[tokio::test(start_paused = true)]
    async fn the_first_error_ends_them_all_whatever_its_place() {
        let futures = (0..40).map(|i| -> Boxed {
            if i == 39 {
                Box::pin(ready(Err(i)))
            } else {
                Box::pin(pending())
            }
        });
        let r = tokio::time::timeout(std::time::Duration::from_secs(1), all_ok(futures)).await;
        assert_eq!(r, Ok(Err(39)));
        let none: Vec<Boxed> = Vec::new();
        assert_eq!(all_ok(none).await, Ok(()));
        let done = (0..40).map(|_| -> Boxed { Box::pin(ready(Ok(()))) });
        assert_eq!(all_ok(done).await, Ok(()));
    }
}
