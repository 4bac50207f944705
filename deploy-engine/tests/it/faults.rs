//! Engine scenarios with faults injected, on tokio's paused clock: a soak that cannot observe,
//! someone else's failed sync, what rollback may touch, the lock through an outage, a
//! takeover and a wall clock that jumps, automated environments, the audit records, and a
//! proptest that the engine never reports a success it did not observe.
//!
//! [`Faulty`] wraps the in-memory Argo CD: it fails reads and watches of chosen Applications
//! in time windows, records every write, and records every observation it served (the
//! ground truth the proptest checks the engine's verdict against).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::Error;
use deploy_core::model::SyncMode;
use deploy_core::model::annotation;
use deploy_core::plan::promotion::{Action, Intent, PromotionPlan};
use deploy_core::port::{
    AppStream, Application, ArgoCd, AuditLog, Clock, Health, Lease, Lock, OperationPhase,
    OverrideValue, SyncRequest, SyncStatus,
};
use deploy_core::rollout::event::{Event, RunReport};
use deploy_core::rollout::outcome::Failure;
use deploy_core::trail::AppState;
use deploy_core::trail::Outcome;
use deploy_engine::clock::TokioClock;
use deploy_engine::conformance::lock::LockFixture;
use deploy_engine::engine::{Engine, EngineError, Ports, RunOptions, StopRequest};
use deploy_engine::memory::{InMemoryArgoCd, InMemoryLock};
use futures::StreamExt;
use proptest::prelude::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::{Fixture, T1, T2, epoch};

const T3: &str = "3333333ccccc";
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const CLUSTERS: [&str; 3] = ["us-west-2", "us-east-1", "eu-west-1"];

// ---------------------------------------------------------------- the decorator

/// How a faulty Argo CD answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 503: argocd-server restarting.
    Unavailable,
    /// 401: the token expired.
    Unauthorized,
    /// 404: the Application was deleted.
    Gone,
}

impl Fault {
    fn error(self, name: &str) -> Error {
        match self {
            Self::Unavailable => Error::Transient {
                message: format!("GET {name}: 503 Service Unavailable"),
                retry_after: None,
            },
            Self::Unauthorized => Error::Permission {
                message: "401 Unauthorized: the token has expired".into(),
            },
            Self::Gone => Error::not_found(format!("application {name}")),
        }
    }
}

/// Reads and watches of `app` (every Application for `None`) fail from `from` until `until`.
#[derive(Debug, Clone)]
struct Window {
    app: Option<String>,
    from: Instant,
    until: Option<Instant>,
    fault: Fault,
}

/// A write the engine sent to Argo CD.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Override(Vec<String>),
    Sync { op: String, accepted: bool },
    Terminate,
    Annotate,
}

/// Lock renewals fail with a 503 for `len` from the `at_renewal`-th renewal on (and, with
/// `argocd`, every Argo CD read too: one server restarting).
#[derive(Debug, Clone)]
struct LockOutage {
    at_renewal: usize,
    len: Duration,
    argocd: bool,
    window: Option<(Instant, Instant)>,
}

/// What the decorators share: the faults to inject and what they saw.
#[derive(Debug, Default, Clone)]
struct Faults {
    windows: Vec<Window>,
    /// The next sync of these Applications collides with someone else's operation that
    /// starts just before it.
    collide: BTreeSet<String>,
    writes: Vec<(Instant, String, Write)>,
    served: Vec<(Instant, Application)>,
    refused_reads: usize,
    /// Argo CD's controller notices a spec change only at its next reconcile: for this long
    /// after our write an automated Application still shows its state from before it.
    auto_sync_lag: Option<Duration>,
    lock_outage: Option<LockOutage>,
    renewals: usize,
    refused_renewals: usize,
    /// The lock object was removed by hand: renewals get a 404 until it is taken again.
    lock_deleted: bool,
    /// Every lock call is refused (the store's credentials expired) from this renewal on.
    lock_refused_from: Option<usize>,
    /// When each renewal was asked, and how the lock was taken (again).
    renewed_at: Vec<Instant>,
    acquired_at: Vec<Instant>,
}

impl Faults {
    fn writes_to(&self, app: &str) -> Vec<Write> {
        self.writes
            .iter()
            .filter(|(_, a, _)| a == app)
            .map(|(_, _, w)| w.clone())
            .collect()
    }

    fn writes_since(&self, t: Instant) -> Vec<(String, Write)> {
        self.writes
            .iter()
            .filter(|(at, _, _)| *at >= t)
            .map(|(_, a, w)| (a.clone(), w.clone()))
            .collect()
    }

    fn served_of(&self, app: &str) -> Vec<(Instant, Application)> {
        self.served
            .iter()
            .filter(|(_, a)| a.name == app)
            .cloned()
            .collect()
    }
}

/// The in-memory Argo CD with faults injected.
#[derive(Debug, Clone)]
struct Faulty {
    inner: InMemoryArgoCd,
    faults: Arc<Mutex<Faults>>,
}

impl Faulty {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    /// The error a read or watch of `name` gets now, if any.
    fn fault(&self, name: &str) -> Option<Error> {
        let now = Instant::now();
        let mut f = self.faults();
        let hit = f
            .windows
            .iter()
            .find(|w| {
                w.app.as_deref().is_none_or(|a| a == name)
                    && w.from <= now
                    && w.until.is_none_or(|u| now < u)
            })
            .map(|w| w.fault.error(name));
        if hit.is_some() {
            f.refused_reads += 1;
        }
        hit
    }

    fn served(&self, app: &Application) {
        self.faults().served.push((Instant::now(), app.clone()));
    }

    fn wrote(&self, name: &str, w: Write) {
        self.faults()
            .writes
            .push((Instant::now(), name.to_owned(), w));
    }

    /// `inner`, breaking as soon as a fault covers `name` (a real watch breaks when the
    /// server goes away, not at its next event), and recording what it delivers.
    fn guarded(&self, name: String, inner: AppStream) -> AppStream {
        futures::stream::unfold(
            (self.clone(), name, inner),
            |(this, name, mut inner)| async move {
                loop {
                    if let Some(e) = this.fault(&name) {
                        return Some((Err(e), (this, name, inner)));
                    }
                    tokio::select! {
                        item = inner.next() => {
                            let item = match item? {
                                Ok(app) => match this.fault(&name) {
                                    Some(e) => Err(e),
                                    None => {
                                        this.served(&app);
                                        Ok(app)
                                    }
                                },
                                Err(e) => Err(e),
                            };
                            return Some((item, (this, name, inner)));
                        }
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        )
        .boxed()
    }
}

#[async_trait]
impl ArgoCd for Faulty {
    async fn application(&self, name: &str) -> deploy_core::Result<Application> {
        if let Some(e) = self.fault(name) {
            return Err(e);
        }
        let app = self.inner.application(name).await?;
        self.served(&app);
        Ok(app)
    }

    async fn set_override(
        &self,
        name: &str,
        value: &OverrideValue,
    ) -> deploy_core::Result<Application> {
        self.wrote(name, Write::Override(value.tags()));
        let lag = self.faults().auto_sync_lag;
        let mode = self.inner.application(name).await?.sync_mode;
        if let Some(lag) = lag.filter(|_| mode.is_automated()) {
            // The sim starts an automated sync at once; hold it back as the controller would.
            self.inner.set_sync_mode(name, SyncMode::Manual);
            let (inner, name) = (self.inner.clone(), name.to_owned());
            let written = inner.set_override(&name, value).await;
            tokio::spawn(async move {
                tokio::time::sleep(lag).await;
                inner.set_sync_mode(&name, mode);
            });
            return written;
        }
        self.inner.set_override(name, value).await
    }

    async fn sync(&self, name: &str, request: &SyncRequest) -> deploy_core::Result<()> {
        if self.faults().collide.remove(name) {
            self.inner.start_foreign(name, None);
        }
        let r = self.inner.sync(name, request).await;
        self.wrote(
            name,
            Write::Sync {
                op: request.operation_id.clone(),
                accepted: r.is_ok(),
            },
        );
        r
    }

    async fn watch(&self, name: &str) -> deploy_core::Result<AppStream> {
        if let Some(e) = self.fault(name) {
            return Err(e);
        }
        let inner = self.inner.watch(name).await?;
        Ok(self.guarded(name.to_owned(), inner))
    }

    async fn terminate(&self, name: &str) -> deploy_core::Result<()> {
        self.wrote(name, Write::Terminate);
        self.inner.terminate(name).await
    }

    async fn annotate(
        &self,
        name: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> deploy_core::Result<()> {
        self.wrote(name, Write::Annotate);
        self.inner.annotate(name, annotations).await
    }
    async fn sync_windows(
        &self,
        name: &str,
    ) -> deploy_core::Result<deploy_core::window::AppWindows> {
        self.inner.sync_windows(name).await
    }
}

/// The in-memory lock with renewal outages injected.
#[derive(Debug)]
struct FaultyLock {
    inner: InMemoryLock,
    faults: Arc<Mutex<Faults>>,
}

#[async_trait]
impl Lock for FaultyLock {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> deploy_core::Result<Lease> {
        {
            let mut f = self.faults.lock().unwrap();
            if f.lock_refused_from.is_some_and(|n| f.renewals >= n) {
                return Err(refused());
            }
            f.lock_deleted = false;
            f.acquired_at.push(Instant::now());
        }
        self.inner.acquire(key, holder, ttl).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> deploy_core::Result<Lease> {
        let down = {
            let mut f = self.faults.lock().unwrap();
            f.renewals += 1;
            let n = f.renewals;
            let now = Instant::now();
            f.renewed_at.push(now);
            if f.lock_refused_from.is_some_and(|from| n >= from) {
                f.refused_renewals += 1;
                return Err(refused());
            }
            if f.lock_deleted {
                // S3's answer to a conditional PutObject on a key that no longer exists.
                return Err(Error::not_found(
                    "s3://state/deploy/prod/lock.json (NoSuchKey)",
                ));
            }
            let mut argocd_down = None;
            let down = match f.lock_outage.as_mut() {
                Some(o) => {
                    if o.window.is_none() && n >= o.at_renewal {
                        o.window = Some((now, now + o.len));
                        if o.argocd {
                            argocd_down = Some(now + o.len);
                        }
                    }
                    o.window.is_some_and(|(a, b)| a <= now && now < b)
                }
                None => false,
            };
            if let Some(until) = argocd_down {
                f.windows.push(Window {
                    app: None,
                    from: now,
                    until: Some(until),
                    fault: Fault::Unavailable,
                });
            }
            if down {
                f.refused_renewals += 1;
            }
            down
        };
        if down {
            return Err(Fault::Unavailable.error("the lock"));
        }
        self.inner.renew(lease, ttl).await
    }

    async fn release(&self, lease: &Lease) -> deploy_core::Result<()> {
        self.inner.release(lease).await
    }
}

/// What a lock store whose credentials expired answers.
fn refused() -> Error {
    Error::Permission {
        message: "S3 refused PutObject on s3://state/deploy/prod/lock.json: ExpiredToken".into(),
    }
}

/// A wall clock that follows tokio's but can jump ahead, as a laptop's does when it wakes
/// from sleep (tokio's clock, like `CLOCK_MONOTONIC`, does not see the sleep).
#[derive(Debug)]
struct JumpClock {
    base: TokioClock,
    ahead: Mutex<Duration>,
}

impl JumpClock {
    fn new() -> Self {
        Self {
            base: TokioClock::new(epoch()),
            ahead: Mutex::new(Duration::ZERO),
        }
    }

    fn jump(&self, by: Duration) {
        *self.ahead.lock().unwrap() += by;
    }
}

impl Clock for JumpClock {
    fn now(&self) -> jiff::Timestamp {
        let ahead = jiff::SignedDuration::try_from(*self.ahead.lock().unwrap()).unwrap();
        self.base.now().checked_add(ahead).unwrap()
    }
}

// ---------------------------------------------------------------- the harness

/// A fixture whose engine runs over the decorators, with every event kept with its time.
struct Harness {
    f: Fixture,
    argocd: Faulty,
    lock: FaultyLock,
    /// The engine's wall clock (the world's, unless a test skews it).
    clock: Arc<dyn Clock>,
    log: watch::Sender<Vec<(Instant, Event)>>,
}

impl Harness {
    async fn new() -> Self {
        Self::on(Arc::new(TokioClock::new(epoch()))).await
    }

    async fn on(clock: Arc<dyn Clock>) -> Self {
        let f = Fixture::with_staging_at_t2_on(clock.clone()).await;
        let faults = Arc::new(Mutex::new(Faults::default()));
        Self {
            argocd: Faulty {
                inner: f.world.argocd.clone(),
                faults: faults.clone(),
            },
            lock: FaultyLock {
                inner: f.world.lock.clone(),
                faults,
            },
            clock,
            log: watch::channel(Vec::new()).0,
            f,
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.argocd.faults()
    }

    /// What the decorators saw so far.
    fn seen(&self) -> Faults {
        self.faults().clone()
    }

    fn app(&self, cluster: &str) -> String {
        self.f.app_name("prod", cluster)
    }

    /// Reads and watches of `cluster`'s Application fail with `fault` from `from` on, for `len`
    /// (for good with `None`).
    fn blind(&self, cluster: &str, fault: Fault, from: Instant, len: Option<Duration>) {
        let app = Some(self.app(cluster));
        self.faults().windows.push(Window {
            app,
            from,
            until: len.map(|l| from + l),
            fault,
        });
    }

    async fn plan(&self) -> PromotionPlan {
        self.f.plan(Intent::Promote { tag: None }).await
    }

    async fn run(&self, plan: &PromotionPlan, run_id: &str) -> Result<RunReport, EngineError> {
        self.run_with(plan, run_id, |_| {}).await
    }

    /// Runs `plan`; `react` sees each event as it is emitted (before the engine goes on).
    async fn run_with(
        &self,
        plan: &PromotionPlan,
        run_id: &str,
        react: impl FnMut(&Event) + Send,
    ) -> Result<RunReport, EngineError> {
        self.run_opts(plan, self.f.options(run_id, None), react)
            .await
    }

    /// Runs `plan` with `opts` (a stop channel, say).
    async fn run_opts(
        &self,
        plan: &PromotionPlan,
        opts: RunOptions,
        mut react: impl FnMut(&Event) + Send,
    ) -> Result<RunReport, EngineError> {
        let ports = Ports::of_world(&self.f.world)
            .with_argocd(&self.argocd)
            .with_lock(&self.lock)
            .with_clock(&*self.clock);
        Engine::new(ports, opts)
            .run(plan, |e| {
                react(&e);
                self.log.send_modify(|v| v.push((Instant::now(), e)));
            })
            .await
    }

    /// When the first event matching `pred` was emitted, waiting for it (at most a day of
    /// paused time).
    async fn when(&self, pred: impl Fn(&Event) -> bool) -> Instant {
        let mut rx = self.log.subscribe();
        let found = tokio::time::timeout(Duration::from_secs(86_400), async {
            rx.wait_for(|v| v.iter().any(|(_, e)| pred(e)))
                .await
                .unwrap()
                .iter()
                .find(|(_, e)| pred(e))
                .unwrap()
                .0
        })
        .await;
        found.expect("the event never came")
    }

    /// When the first event matching `pred` was emitted, if it was.
    fn at(&self, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.log
            .borrow()
            .iter()
            .find(|(_, e)| pred(e))
            .map(|(t, _)| *t)
    }

    fn events(&self) -> Vec<Event> {
        self.log.borrow().iter().map(|(_, e)| e.clone()).collect()
    }

    /// The tag and health of each prod cluster, straight from the sim.
    async fn prod(&self) -> Vec<(String, String, Health)> {
        self.f.prod_images().await
    }
}

fn all_at(t: &str) -> Vec<(String, String, Health)> {
    CLUSTERS
        .iter()
        .map(|c| (c.to_string(), t.to_string(), Health::Healthy))
        .collect()
}

fn helm(tag: &str) -> OverrideValue {
    OverrideValue::Helm {
        parameter: "image.tag".into(),
        value: tag.into(),
        digests: Default::default(),
    }
}

fn state_of<'r>(report: &'r RunReport, cluster: &str) -> &'r AppState {
    &report
        .apps
        .iter()
        .find(|a| a.cluster == cluster)
        .unwrap()
        .state
}

fn soak_started(wave: usize) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::SoakStarted { wave: w, .. } if *w == wave)
}

fn soak_finished(wave: usize) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::SoakFinished { wave: w } if *w == wave)
}

fn is_halted(e: &Event) -> bool {
    matches!(e, Event::Halted { .. })
}

fn waiting_on(cluster: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::AppWaiting { cluster: c, .. } if c == cluster)
}

async fn outcomes(h: &Harness) -> Vec<Outcome> {
    h.f.world
        .audit
        .records()
        .await
        .unwrap()
        .iter()
        .map(|r| r.outcome)
        .collect()
}

// ---------------------------------------------------------------- 1. the soak

/// The last wave's eu-west-1 turns Degraded 60 s into its soak, while every read and watch of
/// it fails with `fault`: until the run halts (`heal_on_halt`) or for good.
async fn blind_soak(fault: Fault, heal_on_halt: bool) -> (Harness, RunReport, Instant) {
    let h = Harness::new().await;
    let eu = h.app("eu-west-1");
    let plan = h.plan().await;
    let faults = h.argocd.faults.clone();
    let react = move |e: &Event| {
        if heal_on_halt && is_halted(e) {
            faults.lock().unwrap().windows.clear();
        }
    };
    let script = async {
        let soak = h.when(soak_started(2)).await;
        tokio::time::sleep_until(soak + MINUTE).await;
        h.blind("eu-west-1", fault, Instant::now(), None);
        h.f.world.argocd.set_health(&eu, Health::Degraded);
        Instant::now()
    };
    let (report, degraded_at) = tokio::join!(h.run_with(&plan, "run-blind", react), script);
    let report = report.unwrap();
    assert_ne!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert!(
        h.at(soak_finished(2)).is_none(),
        "a soak that saw nothing passed"
    );
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::ObservationLost { cluster, .. } if cluster == "eu-west-1"))
            || fault != Fault::Unavailable,
        "the lapse is an event"
    );
    assert!(h.faults().refused_reads > 0, "the fault was hit");
    (h, report, degraded_at)
}

#[tokio::test(start_paused = true)]
async fn a_soak_blinded_by_503s_fails_at_its_deadline_and_rolls_back() {
    let (h, report, degraded_at) = blind_soak(Fault::Unavailable, true).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report
            .message
            .contains("eu-west-1: not observed Healthy at 2222222bbbbb"),
        "{}",
        report.message
    );
    // The soak (5m) may stretch up to the wave's timeout (15m) beyond it, then fails.
    let soak = h.at(soak_started(2)).unwrap();
    let halted = h.at(is_halted).unwrap();
    let took = halted - soak;
    assert!(
        took >= 20 * MINUTE && took < 20 * MINUTE + 5 * SECOND,
        "{took:?}"
    );
    assert!(halted > degraded_at + 15 * MINUTE);
    assert!(
        report.apps.iter().all(|a| a.state == AppState::RolledBack),
        "{:#?}",
        report.apps
    );
    assert_eq!(h.prod().await, all_at(T1));
    assert_eq!(outcomes(&h).await, [Outcome::Started, Outcome::RolledBack]);
}

#[tokio::test(start_paused = true)]
async fn a_soak_blind_for_the_rest_of_the_run_never_succeeds() {
    let (h, report, _) = blind_soak(Fault::Unavailable, false).await;
    // eu-west-1 cannot even be read to roll it back: the run says so.
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);
    assert!(
        matches!(state_of(&report, "eu-west-1"), AppState::RollbackFailed(_)),
        "{:#?}",
        report.apps
    );
    for c in ["us-west-2", "us-east-1"] {
        assert_eq!(state_of(&report, c), &AppState::RolledBack);
    }
    assert_eq!(outcomes(&h).await, [Outcome::Started, Outcome::Failed]);
}

#[tokio::test(start_paused = true)]
async fn a_soak_that_may_not_see_or_finds_nothing_fails_at_once() {
    for fault in [Fault::Unauthorized, Fault::Gone] {
        let (h, report, degraded_at) = blind_soak(fault, true).await;
        assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
        assert!(
            report.message.contains("eu-west-1: cannot be observed"),
            "{fault:?}: {}",
            report.message
        );
        let halted = h.at(is_halted).unwrap();
        assert!(halted - degraded_at < SECOND, "{fault:?}");
        assert_eq!(h.prod().await, all_at(T1));
        assert_eq!(outcomes(&h).await, [Outcome::Started, Outcome::RolledBack]);
    }
}

/// Wave 1's only Application cannot be observed from 20 s into its soak for `outage`.
async fn soak_with_outage(outage: Duration) -> (Harness, RunReport) {
    let h = Harness::new().await;
    let plan = h.plan().await;
    let script = async {
        let soak = h.when(soak_started(1)).await;
        h.blind(
            "us-west-2",
            Fault::Unavailable,
            soak + 20 * SECOND,
            Some(outage),
        );
    };
    let (report, ()) = tokio::join!(h.run(&plan, "run-outage"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert_eq!(h.prod().await, all_at(T2));
    (h, report)
}

fn lapses(h: &Harness, cluster: &str) -> Vec<Event> {
    h.events()
        .into_iter()
        .filter(|e| match e {
            Event::ObservationLost { cluster: c, .. }
            | Event::ObservationRestored { cluster: c, .. } => c == cluster,
            _ => false,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_short_outage_during_a_soak_is_bridged() {
    let (h, _) = soak_with_outage(10 * SECOND).await;
    let lapses = lapses(&h, "us-west-2");
    assert!(
        matches!(
            lapses.as_slice(),
            [
                Event::ObservationLost { .. },
                Event::ObservationRestored {
                    soak_restarted: false,
                    ..
                }
            ]
        ),
        "{lapses:#?}"
    );
    let took = h.at(soak_finished(1)).unwrap() - h.at(soak_started(1)).unwrap();
    assert!(took >= 5 * MINUTE && took < 5 * MINUTE + SECOND, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn an_outage_over_thirty_seconds_starts_the_soak_over() {
    let (h, _) = soak_with_outage(40 * SECOND).await;
    let lapses = lapses(&h, "us-west-2");
    match lapses.as_slice() {
        [
            Event::ObservationLost { .. },
            Event::ObservationRestored {
                soak_restarted: true,
                gap_ms,
                ..
            },
        ] => assert!(*gap_ms > 40_000, "{gap_ms}"),
        other => panic!("{other:#?}"),
    }
    // A whole soak after the first observation past the outage (which ended at 60 s).
    let took = h.at(soak_finished(1)).unwrap() - h.at(soak_started(1)).unwrap();
    assert!(took >= 6 * MINUTE && took < 7 * MINUTE, "{took:?}");
}

/// In wave 2, us-east-1's soak starts over after a 40 s outage; eu-west-1's own soak has
/// passed, but it is still watched until the wave's soak is over, so its turning Degraded
/// then (5 m 30 s in) fails the wave.
#[tokio::test(start_paused = true)]
async fn a_wave_whose_soak_starts_over_on_one_cluster_keeps_watching_the_others() {
    let h = Harness::new().await;
    let eu = h.app("eu-west-1");
    let plan = h.plan().await;
    let script = async {
        let soak = h.when(soak_started(2)).await;
        h.blind(
            "us-east-1",
            Fault::Unavailable,
            soak + 20 * SECOND,
            Some(40 * SECOND),
        );
        tokio::time::sleep_until(soak + 5 * MINUTE + 30 * SECOND).await;
        assert!(h.at(soak_finished(2)).is_none(), "the wave's soak goes on");
        h.f.world.argocd.set_health(&eu, Health::Degraded);
    };
    let (report, ()) = tokio::join!(h.run(&plan, "run-longest"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("eu-west-1: Degraded"),
        "{}",
        report.message
    );
    assert_eq!(h.prod().await, all_at(T1));
}

// ---------------------------------------------------------------- 2. a foreign sync

#[tokio::test(start_paused = true)]
async fn a_foreign_sync_whose_hook_failed_is_followed_by_our_own() {
    let h = Harness::new().await;
    let w1 = h.app("us-west-2");
    // Someone wrote the release into wave 1's spec and is syncing it.
    h.f.world.argocd.set_override(&w1, &helm(T2)).await.unwrap();
    h.f.world.argocd.start_foreign(&w1, None);
    let plan = h.plan().await;
    let script = async {
        h.when(waiting_on("us-west-2")).await;
        tokio::time::sleep(30 * SECOND).await;
        // Its resources reach the release, then its PostSync hook fails.
        h.f.world.argocd.fail_foreign(&w1, true);
        Instant::now()
    };
    let (report, failed_at) = tokio::join!(h.run(&plan, "run-hook"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);

    // The engine saw the foreign failure with the release's images in place...
    let served = h.faults().served_of(&w1);
    assert!(served.iter().any(|(t, a)| *t >= failed_at
        && !a.operation_pending
        && a.operation_state.as_ref().unwrap().phase == OperationPhase::Failed
        && a.images.iter().all(|i| i.ends_with(T2))
        && (a.sync_status, a.health) == (SyncStatus::Synced, Health::Healthy)));
    // ...and synced again with its own id: one sync, ours, after the foreign one failed.
    let syncs: Vec<Write> = h
        .faults()
        .writes_to(&w1)
        .into_iter()
        .filter(|w| matches!(w, Write::Sync { .. }))
        .collect();
    assert_eq!(
        syncs,
        [Write::Sync {
            op: "run-hook/us-west-2".into(),
            accepted: true
        }]
    );
    // Wave 2 starts only after our operation was seen Succeeded.
    let ours_done = served
        .iter()
        .find(|(_, a)| {
            a.operation_state.as_ref().is_some_and(|s| {
                s.deploy_operation() == Some("run-hook/us-west-2")
                    && s.phase == OperationPhase::Succeeded
            })
        })
        .expect("our operation was observed")
        .0;
    let wave2 = h
        .at(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
        .unwrap();
    assert!(failed_at < ours_done && ours_done < wave2);
    assert_eq!(h.prod().await, all_at(T2));
}

// ---------------------------------------------------------------- 3. what rollback touches

#[tokio::test(start_paused = true)]
async fn rollback_touches_only_what_this_run_wrote_and_never_returns_to_the_release() {
    let h = Harness::new().await;
    let (w1, east, eu) = (h.app("us-west-2"), h.app("us-east-1"), h.app("eu-west-1"));
    let argocd = &h.f.world.argocd;
    let sync = |op: &str| SyncRequest {
        prune: false,
        operation_id: op.into(),
    };
    // Wave 1 already runs the release.
    argocd.set_override(&w1, &helm(T2)).await.unwrap();
    argocd.sync(&w1, &sync("earlier/us-west-2")).await.unwrap();
    // us-east-1's spec already names it (an image updater); its sync will collide.
    argocd.set_override(&east, &helm(T2)).await.unwrap();
    // eu-west-1 ran T3, then T2 was half rolled out: mixed, its spec already at T2.
    for t in [T3, T2] {
        argocd.set_override(&eu, &helm(t)).await.unwrap();
        argocd.sync(&eu, &sync("earlier/eu-west-1")).await.unwrap();
        tokio::time::sleep(10 * SECOND).await;
    }
    let live = argocd.application(&eu).await.unwrap().images;
    let mixed: Vec<String> = live
        .iter()
        .enumerate()
        .map(|(i, img)| {
            if i == 0 {
                img.replace(T2, T3)
            } else {
                img.clone()
            }
        })
        .collect();
    argocd.set_images(&eu, mixed);
    argocd.push_script(&eu, deploy_core::sim::Script::Degraded);
    // A finished soak of the release observed wave 1 there.
    mark_soaked(&h, &w1).await;

    let plan = h.plan().await;
    assert!(plan.is_go(), "{:#?}", plan.gates);
    let eu_plan = &plan.waves[1].apps[1];
    assert!(
        matches!(eu_plan.live, deploy_core::model::LiveTag::Mixed(_)),
        "{:?}",
        eu_plan.live
    );
    h.faults().collide.insert(east.clone());
    let report = h.run(&plan, "run-rb").await.unwrap();

    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(state_of(&report, "us-west-2"), &AppState::Skipped);
    assert!(
        matches!(state_of(&report, "us-east-1"), AppState::Failed(r) if r.contains("timed out")),
        "{:#?}",
        report.apps
    );
    assert_eq!(state_of(&report, "eu-west-1"), &AppState::RolledBack);
    let f = h.seen();
    assert_eq!(f.writes_to(&w1), [], "nothing is written to a skipped app");
    assert_eq!(
        f.writes_to(&east),
        [Write::Sync {
            op: "run-rb/us-east-1".into(),
            accepted: false
        }],
        "a refused sync is not a change to undo"
    );
    assert_eq!(
        f.writes_to(&eu),
        [
            Write::Sync {
                op: "run-rb/eu-west-1".into(),
                accepted: true
            },
            Write::Override(vec![T3.into()]),
            Write::Sync {
                op: "run-rb/rollback/eu-west-1".into(),
                accepted: true
            },
        ],
        "back to what its history ran before the release, never to the release"
    );
    assert!(h.events().iter().any(|e| matches!(e,
        Event::RollingBack { clusters } if clusters == &["eu-west-1".to_owned()])));
    assert!(h.events().iter().any(|e| matches!(e,
        Event::AppRolledBack { cluster, to, ok: true, .. } if cluster == "eu-west-1" && to == T3)));
    let images = h.prod().await;
    assert_eq!(images[2], ("eu-west-1".into(), T3.into(), Health::Healthy));
    let records = h.f.world.audit.records().await.unwrap();
    let end = records.last().unwrap();
    assert_eq!(
        (end.outcome, &end.changed, &end.skipped),
        (
            Outcome::RolledBack,
            &vec!["eu-west-1".to_owned()],
            &vec!["us-west-2".to_owned()]
        )
    );
}

/// Writes the mark a passed soak of the release leaves on `app`.
async fn mark_soaked(h: &Harness, app: &str) {
    let release = h.plan().await.release.unwrap();
    let mark = BTreeMap::from([(
        annotation::SOAKED.to_owned(),
        deploy_core::model::annotation::soaked_mark(&release),
    )]);
    h.f.world.argocd.annotate(app, &mark).await.unwrap();
}

// ---------------------------------------------------------------- 4. resume

/// A run cancelled (a graceful stop: Ctrl-C, a CI cancel) 20 s into wave 1's soak; then the
/// log is cleared for the rerun.
async fn cancelled_in_wave_one_soak(h: &Harness) {
    let plan = h.plan().await;
    let (stop, rx) = watch::channel(StopRequest::None);
    let script = async {
        let soak = h.when(soak_started(1)).await;
        tokio::time::sleep_until(soak + 20 * SECOND).await;
        stop.send(StopRequest::Graceful).unwrap();
    };
    let (report, ()) = tokio::join!(
        h.run_opts(&plan, h.f.options("run-cancelled", Some(rx)), |_| {}),
        script
    );
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Interrupted, "{}", report.message);
    let images = h.prod().await;
    assert_eq!(images[0], ("us-west-2".into(), T2.into(), Health::Healthy));
    h.log.send_modify(Vec::clear);
}

/// The rerun's plan soaks wave 1 again instead of skipping it, and can roll it back to T1.
async fn rerun_plan(h: &Harness) -> PromotionPlan {
    let plan = h.plan().await;
    let w1 = &plan.waves[0].apps[0];
    assert_eq!(w1.action, Action::Soak { sync: true });
    assert_eq!(
        w1.previous.as_ref().map(|p| p.tags()),
        Some(vec![T1.into()])
    );
    assert_eq!((plan.changes(), plan.soaks_again()), (2, 1));
    plan
}

#[tokio::test(start_paused = true)]
async fn a_rerun_soaks_again_what_a_cancelled_run_left_unsoaked() {
    let h = Harness::new().await;
    cancelled_in_wave_one_soak(&h).await;
    let plan = rerun_plan(&h).await;
    let w1 = h.app("us-west-2");
    let since = Instant::now();
    let report = h.run(&plan, "run-rerun").await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert!(
        report.message.contains("1 found there unsoaked"),
        "{}",
        report.message
    );
    assert_eq!(state_of(&report, "us-west-2"), &AppState::SoakedAgain);
    // Nothing written to it but the marks; watched through a whole soak of wave 1.
    let writes: Vec<(String, Write)> = h.faults().writes_since(since);
    assert!(
        writes
            .iter()
            .all(|(a, w)| a != &w1 || *w == Write::Annotate),
        "{writes:?}"
    );
    let took = h.at(soak_finished(1)).unwrap() - h.at(soak_started(1)).unwrap();
    assert!(took >= 5 * MINUTE, "{took:?}");
    assert!(h.events().iter().any(|e| matches!(e,
        Event::CheckMeasured { cluster, .. } if cluster == "us-west-2")));
    // Soaked now: a third run has nothing to do.
    assert!(h.plan().await.is_up_to_date());
    assert_eq!(h.prod().await, all_at(T2));
}

#[tokio::test(start_paused = true)]
async fn a_canary_degraded_after_a_resume_rolls_back_every_wave() {
    let h = Harness::new().await;
    cancelled_in_wave_one_soak(&h).await;
    let plan = rerun_plan(&h).await;
    // The canary turns Degraded during wave 2's soak, after its own soak again passed.
    let script = async {
        let soak = h.when(soak_started(2)).await;
        tokio::time::sleep_until(soak + MINUTE).await;
        h.f.world
            .argocd
            .set_health(&h.app("us-west-2"), Health::Degraded);
    };
    let (report, ()) = tokio::join!(h.run(&plan, "run-rerun"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("us-west-2: Degraded")
            && report.message.contains("at the end of the run")
            && report.message.contains("rolled back 3 application(s)")
            && report
                .message
                .contains("1 of them brought to 2222222bbbbb by an interrupted run"),
        "{}",
        report.message
    );
    assert!(
        report.apps.iter().all(|a| a.state == AppState::RolledBack),
        "{:#?}",
        report.apps
    );
    assert_eq!(h.prod().await, all_at(T1));
}

#[tokio::test(start_paused = true)]
async fn a_later_wave_failing_after_a_resume_rolls_back_the_resoaked_wave() {
    let h = Harness::new().await;
    cancelled_in_wave_one_soak(&h).await;
    let plan = rerun_plan(&h).await;
    h.f.world
        .argocd
        .push_script(&h.app("eu-west-1"), deploy_core::sim::Script::Degraded);
    let report = h.run(&plan, "run-rerun").await.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("rolled back 3 application(s)"),
        "{}",
        report.message
    );
    assert!(h.events().iter().any(|e| matches!(e,
        Event::AppRolledBack { cluster, to, ok: true, .. } if cluster == "us-west-2" && to == T1)));
    assert_eq!(h.prod().await, all_at(T1));
}

#[tokio::test(start_paused = true)]
async fn a_bad_canary_metric_after_a_resume_is_measured_and_rolls_back() {
    let h = Harness::new().await;
    cancelled_in_wave_one_soak(&h).await;
    let plan = rerun_plan(&h).await;
    let query = plan.waves[0].apps[0].checks[0].query.clone();
    h.f.world
        .metrics
        .script(&query, [deploy_engine::memory::Answer::Values(vec![0.5])]);
    let report = h.run(&plan, "run-rerun").await.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("us-west-2: check 5xx-ratio failed"),
        "{}",
        report.message
    );
    assert!(
        h.at(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
            .is_none()
    );
    assert_eq!(h.prod().await, all_at(T1));
}

// ---------------------------------------------------------------- 5. the lock

#[tokio::test(start_paused = true)]
async fn a_twenty_second_outage_at_a_wave_boundary_rolls_nothing_back() {
    let h = Harness::new().await;
    // Renewal 1 is wave 1's, renewal 2 wave 2's: the lock and Argo CD go away for 20 s there.
    h.faults().lock_outage = Some(LockOutage {
        at_renewal: 2,
        len: 20 * SECOND,
        argocd: true,
        window: None,
    });
    let plan = h.plan().await;
    let report = h.run(&plan, "run-renew").await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let f = h.seen();
    assert!(f.refused_renewals >= 3, "{}", f.refused_renewals);
    let (_, back) = f.lock_outage.as_ref().unwrap().window.unwrap();
    for c in CLUSTERS {
        let writes = f.writes_to(&h.app(c));
        assert_eq!(
            writes,
            [
                Write::Override(vec![T2.into()]),
                Write::Sync {
                    op: format!("run-renew/{c}"),
                    accepted: true
                },
                // Soaked at the release, then the run's annotations.
                Write::Annotate,
                Write::Annotate
            ],
            "{c}: nothing rolled back"
        );
    }
    let wave2 = h
        .at(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
        .unwrap();
    assert!(wave2 >= back, "wave 2 waited for the lock");
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::RollingBack { .. }))
    );
    assert_eq!(h.prod().await, all_at(T2));
}

#[tokio::test(start_paused = true)]
async fn a_lock_removed_by_hand_mid_soak_is_taken_again_and_nothing_rolls_back() {
    let h = Harness::new().await;
    let plan = h.plan().await;
    let script = async {
        let soak = h.when(soak_started(1)).await;
        tokio::time::sleep_until(soak + 10 * SECOND).await;
        // `aws s3 rm .../lock.json` while wave 1 soaks.
        let lease = h.f.world.lock.state()["myapp-prod"].clone();
        h.f.world.lock.release(&lease).await.unwrap();
        h.faults().lock_deleted = true;
        Instant::now()
    };
    let (report, deleted_at) = tokio::join!(h.run(&plan, "run-deleted"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let f = h.seen();
    let retaken = f.acquired_at.iter().find(|t| **t > deleted_at).copied();
    let wave2 = h
        .at(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
        .unwrap();
    assert!(
        retaken.is_some_and(|t| t <= wave2),
        "taken again before wave 2: {:?}",
        f.acquired_at
    );
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::RollingBack { .. }))
    );
    assert_eq!(h.prod().await, all_at(T2));
}

#[tokio::test(start_paused = true)]
async fn a_lock_that_cannot_be_renewed_halts_without_rollback() {
    let h = Harness::new().await;
    // Renewal 1 is wave 1's; from wave 2's on, the lock's store refuses our credentials.
    h.faults().lock_refused_from = Some(2);
    let plan = h.plan().await;
    let report = h.run(&plan, "run-refused").await.unwrap();
    assert_eq!(report.outcome, Outcome::Halted, "{}", report.message);
    assert!(
        report.message.contains(
            "the promotion lock myapp-prod could be neither renewed nor taken again before it ran out"
        ) && report.message.contains("ExpiredToken")
            && report.message.contains("halted without rollback"),
        "{}",
        report.message
    );
    let f = h.seen();
    assert!(f.refused_renewals > 3, "retried: {}", f.refused_renewals);
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::RollingBack { .. }))
    );
    assert!(
        h.at(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
            .is_none()
    );
    // Wave 1 stays at the release, Healthy; nothing was written to wave 2.
    assert_eq!(state_of(&report, "us-west-2"), &AppState::Deployed);
    let images = h.prod().await;
    assert_eq!(images[0], ("us-west-2".into(), T2.into(), Health::Healthy));
    assert_eq!((images[1].1.as_str(), images[2].1.as_str()), (T1, T1));
    assert_eq!(outcomes(&h).await, [Outcome::Started, Outcome::Halted]);
}

#[tokio::test(start_paused = true)]
async fn a_forty_five_minute_soak_keeps_the_lease() {
    let h = Harness::new().await;
    let mut plan = h.plan().await;
    // Ten measurements five minutes apart: a soak of at least 45 minutes per wave.
    for a in plan.waves.iter_mut().flat_map(|w| &mut w.apps) {
        let c = &mut a.checks[0];
        (c.count, c.interval, c.initial_delay) = (Some(10), 5 * MINUTE, Duration::ZERO);
    }
    assert!(deploy_core::rollout::lease::lease_ttl(&plan) >= 85 * MINUTE);
    // Another run tries to take the lock every five minutes while wave 1 soaks.
    let script = async {
        let soak = h.when(soak_started(1)).await;
        let mut tried = 0;
        while h.at(soak_finished(1)).is_none() {
            tokio::time::sleep(5 * MINUTE).await;
            let other =
                h.f.world
                    .lock
                    .acquire("myapp-prod", "bob@ci pid 9", MINUTE)
                    .await;
            assert!(
                matches!(other, Err(Error::LockHeld { .. })),
                "{:?} into the soak: {other:?}",
                Instant::now() - soak
            );
            tried += 1;
        }
        tried
    };
    let (report, tried) = tokio::join!(h.run(&plan, "run-long"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert!(tried >= 9, "{tried}");
    // Renewed during the soak itself, not only at wave boundaries.
    let (from, to) = (
        h.at(soak_started(1)).unwrap(),
        h.at(soak_finished(1)).unwrap(),
    );
    assert!(to - from >= 45 * MINUTE, "{:?}", to - from);
    let f = h.seen();
    assert!(
        f.renewed_at.iter().any(|t| from < *t && *t < to),
        "{:?}",
        f.renewed_at
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_taken_by_another_run_stops_every_write() {
    let h = Harness::new().await;
    let plan = h.plan().await;
    let script = async {
        let soak = h.when(soak_started(1)).await;
        tokio::time::sleep_until(soak + 10 * SECOND).await;
        // Our lease is lost (an erased annotation, say) and bob's run takes the lock.
        h.f.world.lock.expire("myapp-prod").await;
        h.f.world
            .lock
            .acquire("myapp-prod", "bob@ci pid 9", 3600 * SECOND)
            .await
            .unwrap();
        Instant::now()
    };
    let (report, taken_at) = tokio::join!(h.run(&plan, "run-taken"), script);
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);
    assert!(
        report.message.contains("bob@ci pid 9"),
        "{}",
        report.message
    );
    assert_eq!(
        h.faults().writes_since(taken_at),
        [],
        "no write once bob holds the lock"
    );
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::RollingBack { .. }))
    );
    let images = h.prod().await;
    assert_eq!(images[0].1, T2, "wave 1 is left for bob's run to judge");
    assert_eq!((images[1].1.as_str(), images[2].1.as_str()), (T1, T1));
    let held = h.f.world.lock.acquire("myapp-prod", "carol", MINUTE).await;
    assert!(
        matches!(held, Err(Error::LockHeld { ref holder, .. }) if holder == "bob@ci pid 9"),
        "{held:?}"
    );
    assert_eq!(outcomes(&h).await, [Outcome::Started, Outcome::Failed]);
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_past_the_lease_writes_nothing_after_it() {
    let clock = Arc::new(JumpClock::new());
    let h = Harness::on(clock.clone()).await;
    let w1 = h.app("us-west-2");
    h.f.world.argocd.start_foreign(&w1, None);
    let plan = h.plan().await;
    let script = async {
        h.when(waiting_on("us-west-2")).await;
        tokio::time::sleep(MINUTE).await;
        // The laptop sleeps for 50 minutes while the engine waits; the lease (45 min) runs
        // out and bob's run takes the lock; then the foreign operation ends.
        clock.jump(50 * MINUTE);
        let jumped = Instant::now();
        h.f.world
            .lock
            .acquire("myapp-prod", "bob@ci pid 9", 3600 * SECOND)
            .await
            .expect("our lease expired by the wall clock");
        tokio::time::sleep(5 * SECOND).await;
        h.f.world.argocd.finish_foreign(&w1);
        jumped
    };
    let (report, jumped) = tokio::join!(h.run(&plan, "run-sleepy"), script);
    let report = report.unwrap();
    assert_eq!(
        h.faults().writes_since(jumped),
        [],
        "nothing written after the jump"
    );
    assert_eq!(h.faults().writes.len(), 0);
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);
    assert!(
        report.message.contains("bob@ci pid 9"),
        "{}",
        report.message
    );
    assert_eq!(h.prod().await, all_at(T1));
}

// ---------------------------------------------------------------- 6. automated environments

/// Prod with automated sync: Argo CD syncs each Application itself after our write.
async fn automated(engine_clock: Option<Arc<dyn Clock>>) -> Harness {
    let mut h = Harness::new().await;
    let mode = SyncMode::Automated {
        prune: false,
        self_heal: true,
    };
    h.f.config.environments.get_mut("prod").unwrap().sync = mode;
    for c in CLUSTERS {
        h.f.world.argocd.set_sync_mode(&h.app(c), mode);
    }
    if let Some(c) = engine_clock {
        h.clock = c;
    }
    h.faults().auto_sync_lag = Some(5 * SECOND);
    h
}

/// The run succeeded through Argo CD's own sync of `name`, after the engine had seen the
/// failed foreign operation with our write in the spec.
fn automated_ok(h: &Harness, report: &RunReport, name: &str) {
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let f = h.seen();
    assert_eq!(f.writes_to(name)[0], Write::Override(vec![T2.into()]));
    // Our write is in its spec: observed after it.
    assert!(
        f.served_of(name)
            .iter()
            .any(|(_, a)| a.helm_parameters["image.tag"] == T2
                && !a.operation_pending
                && a.operation_state.as_ref().unwrap().phase == OperationPhase::Failed),
        "the failed operation was seen after our write"
    );
    assert!(
        !f.writes_to(name)
            .iter()
            .any(|w| matches!(w, Write::Sync { .. })),
        "Argo CD syncs by itself"
    );
}

#[tokio::test(start_paused = true)]
async fn automated_an_operation_that_failed_before_our_write_is_not_ours() {
    // The engine's clock is 5 minutes behind the controller's: only the controller's
    // timestamps may decide what is ours.
    let behind = Arc::new(TokioClock::new(epoch().checked_sub(5 * MINUTE).unwrap()));
    let h = automated(Some(behind)).await;
    let w1 = h.app("us-west-2");
    h.f.world.argocd.start_foreign(&w1, None);
    tokio::time::sleep(10 * SECOND).await;
    h.f.world.argocd.fail_foreign(&w1, false);
    tokio::time::sleep(20 * SECOND).await;
    let plan = h.plan().await;
    assert!(plan.is_go(), "{:#?}", plan.gates);
    let report = h.run(&plan, "run-auto").await.unwrap();
    automated_ok(&h, &report, &w1);
    // It read the failed operation before writing, and judged Argo CD's own sync after it.
    let served = h.faults().served_of(&w1);
    assert!(served.iter().any(|(_, a)| !a.operation_pending
        && a.operation_state.as_ref().unwrap().phase == OperationPhase::Failed));
    let last = h.f.world.argocd.application(&w1).await.unwrap();
    let op = last.operation_state.unwrap();
    assert_eq!(
        (op.initiated_by.as_deref(), op.phase),
        (Some("automated"), OperationPhase::Succeeded)
    );
    assert_eq!(h.prod().await, all_at(T2));
}

#[tokio::test(start_paused = true)]
async fn automated_an_operation_that_fails_while_we_wait_is_not_ours() {
    let h = automated(None).await;
    let w1 = h.app("us-west-2");
    h.f.world.argocd.start_foreign(&w1, None);
    let plan = h.plan().await;
    let script = async {
        h.when(waiting_on("us-west-2")).await;
        tokio::time::sleep(20 * SECOND).await;
        h.f.world.argocd.fail_foreign(&w1, false);
        Instant::now()
    };
    let (report, failed_at) = tokio::join!(h.run(&plan, "run-auto-wait"), script);
    let report = report.unwrap();
    automated_ok(&h, &report, &w1);
    let f = h.seen();
    let write = f.writes.iter().find(|(_, a, _)| *a == w1).unwrap().0;
    assert!(
        write > failed_at,
        "written after the foreign operation failed"
    );
    assert_eq!(h.prod().await, all_at(T2));
}

// ---------------------------------------------------------------- 7. records

#[tokio::test(start_paused = true)]
async fn a_killed_run_leaves_its_started_record_and_a_whole_run_two() {
    let h = Harness::new().await;
    let plan = h.plan().await;
    tokio::select! {
        r = h.run(&plan, "run-killed") => panic!("the run ended: {r:?}"),
        () = tokio::time::sleep(3 * SECOND) => {}
    }
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::AppSyncing { .. })),
        "killed mid-wave"
    );
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::Finished { .. }))
    );
    let records = h.f.world.audit.records().await.unwrap();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        (records[0].outcome, records[0].run_id.as_str()),
        (Outcome::Started, "run-killed")
    );

    let h = Harness::new().await;
    let plan = h.plan().await;
    let report = h.run(&plan, "run-whole").await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    let records = h.f.world.audit.records().await.unwrap();
    assert_eq!(outcomes(&h).await, [Outcome::Started, Outcome::Succeeded]);
    assert!(records.iter().all(|r| r.run_id == "run-whole"));
    assert_eq!(records[0].started_at, records[1].started_at);
}

// ---------------------------------------------------------------- 8. the proptest

/// A window of 503s on one Application's reads and watch.
#[derive(Debug, Clone)]
struct FaultWindow {
    cluster: usize,
    /// From the start of the soak of the Application's wave (`true`), else of the run.
    in_soak: bool,
    offset: Duration,
    len: Duration,
}

fn fault_window() -> impl Strategy<Value = FaultWindow> {
    (0usize..3, any::<bool>(), 0u64..150, 1u64..90).prop_map(|(cluster, in_soak, offset, len)| {
        FaultWindow {
            cluster,
            in_soak,
            offset: Duration::from_millis(offset * 1_000 + 137),
            len: Duration::from_secs(len),
        }
    })
}

/// Whether `observed`, the observations served of one Application from its soak's start on,
/// show it Healthy at the release through a soak of `soak` ending with the last of them: an
/// unbroken run of good observations, none more than `max_gap` apart.
fn observed_through(
    observed: &[(Instant, Application)],
    soak: Duration,
    max_gap: Duration,
) -> Result<(), String> {
    let good = |a: &Application| {
        a.health == Health::Healthy && a.images.iter().all(|i| i.ends_with(&format!(":{T2}")))
    };
    let Some((end, _)) = observed.last() else {
        return Err("nothing observed during its soak".into());
    };
    let mut from = *end;
    for (t, a) in observed.iter().rev() {
        if !good(a) {
            return Err(format!(
                "observed {:?} {:?} before its soak's end",
                a.health,
                *end - *t
            ));
        }
        if from - *t > max_gap {
            return Err(format!("a gap of {:?}", from - *t));
        }
        from = *t;
        if *end - from >= soak {
            return Ok(());
        }
    }
    Err(format!("observed for only {:?}", *end - from))
}

/// How the first run of a case is cut short, `at` after it starts.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    /// A graceful stop request (SIGINT, a CI cancel).
    Stop(Duration),
    /// The run's future is dropped (SIGKILL, a lost runner): no end record, the lock kept.
    Kill(Duration),
    /// The lock object is removed by hand.
    LockRemoved(Duration),
    /// Another run takes the lock (ours expired); it ends before the rerun.
    LockTaken(Duration),
}

fn interruption() -> impl Strategy<Value = Option<Interruption>> {
    prop::option::of((0u8..4, 0u64..240).prop_map(|(kind, s)| {
        let at = Duration::from_millis(s * 1_000 + 53);
        match kind {
            0 => Interruption::Stop(at),
            1 => Interruption::Kill(at),
            2 => Interruption::LockRemoved(at),
            _ => Interruption::LockTaken(at),
        }
    }))
}

/// One run of a case: its outcome (`None`: killed) and its events.
struct RunLog {
    run_id: String,
    outcome: Option<Outcome>,
    /// The report's typed failure, if it ended with one.
    failure: Option<Failure>,
    events: Vec<(Instant, Event)>,
}

impl RunLog {
    fn at(&self, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.events.iter().find(|(_, e)| pred(e)).map(|(t, _)| *t)
    }

    /// This run watched `cluster` through the soak of its `wave`, which passed: when.
    fn soaked(&self, cluster: &str, wave: usize) -> Option<(Instant, Instant)> {
        let skipped =
            self.at(|e| matches!(e, Event::AppSkipped { cluster: c, .. } if c == cluster));
        let start = self.at(soak_started(wave))?;
        let end = self.at(soak_finished(wave))?;
        skipped.is_none().then_some((start, end))
    }
}

/// One case: a promotion with a 60 s soak, `windows` of 503s, maybe a Degraded, and maybe an
/// `interruption` of its first run, followed by reruns (at most two) while a run ends
/// interrupted, killed or without its lock.
async fn check_observed(
    windows: Vec<FaultWindow>,
    degraded: Option<(usize, Duration)>,
    interruption: Option<Interruption>,
) -> Result<(), TestCaseError> {
    let h = Harness::new().await;
    let soak = MINUTE;
    let start = Instant::now();
    let wave_of = |c: usize| if c == 0 { 1 } else { 2 };
    for w in windows.iter().filter(|w| !w.in_soak) {
        h.blind(
            CLUSTERS[w.cluster],
            Fault::Unavailable,
            start + w.offset,
            Some(w.len),
        );
    }
    // The soak-anchored windows open when their wave's soak starts (in every run).
    let react = || {
        let faults = h.argocd.faults.clone();
        let names = CLUSTERS.map(|c| h.app(c));
        let windows = windows.clone();
        move |e: &Event| {
            if let Event::SoakStarted { wave, .. } = e {
                let now = Instant::now();
                for w in windows
                    .iter()
                    .filter(|w| w.in_soak && wave_of(w.cluster) == *wave)
                {
                    faults.lock().unwrap().windows.push(Window {
                        app: Some(names[w.cluster].clone()),
                        from: now + w.offset,
                        until: Some(now + w.offset + w.len),
                        fault: Fault::Unavailable,
                    });
                }
            }
        }
    };
    // The sim's truth: Degraded from `start + at` on (until an operation replaces it).
    let degrade = async {
        if let Some((c, at)) = degraded {
            tokio::time::sleep_until(start + at).await;
            h.f.world
                .argocd
                .set_health(&h.app(CLUSTERS[c]), Health::Degraded);
        }
    };
    let runs = async {
        let mut runs: Vec<RunLog> = Vec::new();
        for n in 0..3 {
            if n > 0 {
                // Someone notices, and runs it again.
                tokio::time::sleep(MINUTE).await;
            }
            let mut plan = h.plan().await;
            plan.soak = soak;
            let run_id = format!("run-prop-{n}");
            // One CI job re-run: the same holder takes its own lock over.
            let (stop, rx) = watch::channel(StopRequest::None);
            let opts = h.f.options(&run_id, Some(rx)).with_holder("ci prop");
            let begun = Instant::now();
            let cut = interruption.filter(|_| n == 0);
            let run = h.run_opts(&plan, opts, react());
            let script = async {
                let at = match cut {
                    None => return std::future::pending().await,
                    Some(
                        Interruption::Stop(at)
                        | Interruption::Kill(at)
                        | Interruption::LockRemoved(at)
                        | Interruption::LockTaken(at),
                    ) => at,
                };
                tokio::time::sleep_until(begun + at).await;
                match cut {
                    Some(Interruption::Stop(_)) => {
                        let _ = stop.send(StopRequest::Graceful);
                    }
                    Some(Interruption::Kill(_)) => return,
                    Some(Interruption::LockRemoved(_)) => {
                        if let Some(lease) = h.f.world.lock.state().get("myapp-prod") {
                            h.f.world.lock.release(lease).await.unwrap();
                            h.faults().lock_deleted = true;
                        }
                    }
                    Some(Interruption::LockTaken(_)) => {
                        h.f.world.lock.expire("myapp-prod").await;
                        let _ =
                            h.f.world
                                .lock
                                .acquire("myapp-prod", "bob@ci pid 9", MINUTE)
                                .await;
                    }
                    None => {}
                }
                std::future::pending().await
            };
            let result = tokio::select! {
                r = run => Some(r),
                () = script => None,
            };
            // A run that changed nothing (a stale plan: an Application unreadable after
            // the lock was taken) is simply run again, as a person would.
            let (outcome, failure, again) = match result {
                Some(Ok(r)) => {
                    // The outcome is the typed end's, never a reading of its words.
                    let end = r.end.clone().expect("the engine's report carries its end");
                    prop_assert_eq!(end.conclude(), (r.outcome, r.message.clone()));
                    (Some(r.outcome), end.failure, false)
                }
                Some(Err(EngineError::Stale(_))) => (Some(Outcome::Failed), None, true),
                Some(Err(e)) => return Err(TestCaseError::fail(format!("{e}"))),
                None => (None, None, true),
            };
            runs.push(RunLog {
                run_id,
                outcome,
                failure,
                events: h.log.borrow().clone(),
            });
            h.log.send_modify(Vec::clear);
            // Bob's run ends; ours is rerun after an interruption, a kill or a lost lock.
            if let Some(lease) = h.f.world.lock.state().get("myapp-prod")
                && lease.holder.starts_with("bob")
            {
                h.f.world.lock.release(lease).await.unwrap();
            }
            let lost_lock = matches!(runs.last().unwrap().failure, Some(Failure::Lock(_)));
            match outcome {
                _ if again => {}
                Some(Outcome::Interrupted) => {}
                Some(Outcome::Failed | Outcome::Halted) if lost_lock => {}
                _ => break,
            }
        }
        Ok(runs)
    };
    let (runs, ()) = tokio::join!(runs, degrade);
    let runs = runs?;
    // A failure names where it happened: an Application that went Degraded or that faults
    // hid, in its own wave.
    let troubled: BTreeSet<usize> = windows
        .iter()
        .map(|w| w.cluster)
        .chain(degraded.map(|(c, _)| c))
        .collect();
    for r in &runs {
        if let Some(at) = r.failure.as_ref().and_then(Failure::place) {
            let c = CLUSTERS.iter().position(|c| *c == at.cluster).unwrap();
            prop_assert!(
                troubled.contains(&c)
                    && at.wave == wave_of(c)
                    && at.application == h.app(CLUSTERS[c]),
                "{} failed on {:?}, untroubled ({:?}): {:?}",
                r.run_id,
                at,
                troubled,
                r.failure
            );
        }
    }
    let last = runs.last().unwrap();
    let succeeded = last.outcome == Some(Outcome::Succeeded);
    if degraded.is_none() && windows.iter().all(|w| w.in_soak) {
        // Nothing went wrong that waiting or a rerun could not bridge.
        let ends: Vec<String> = runs
            .iter()
            .map(|r| {
                let said = r.events.iter().find_map(|(_, e)| match e {
                    Event::Finished { message, .. } => Some(message.as_str()),
                    _ => None,
                });
                format!("{:?}: {}", r.outcome, said.unwrap_or("no end"))
            })
            .collect();
        prop_assert!(succeeded, "{:#?}", ends);
    }
    if !succeeded {
        return Ok(());
    }
    let served = h.faults().served.clone();
    let end = last.at(|e| matches!(e, Event::Finished { .. })).unwrap();
    for (c, cluster) in CLUSTERS.iter().enumerate() {
        let name = h.app(cluster);
        let wave = wave_of(c);
        // The newest soak that watched it and passed, whichever run it was.
        let Some((run, (soak_start, soak_end))) = runs
            .iter()
            .rev()
            .find_map(|r| r.soaked(cluster, wave).map(|s| (r, s)))
        else {
            return Err(TestCaseError::fail(format!(
                "{cluster}: Succeeded, yet no soak ever passed on it"
            )));
        };
        // Observed Healthy at the release through a whole soak, no gap over 30 s...
        let in_soak: Vec<(Instant, Application)> = served
            .iter()
            .filter(|(t, a)| a.name == name && soak_start <= *t && *t <= soak_end)
            .cloned()
            .collect();
        if let Err(why) = observed_through(&in_soak, soak, 30 * SECOND) {
            return Err(TestCaseError::fail(format!(
                "{cluster} ({}): {why}",
                run.run_id
            )));
        }
        // ...with its checks passed...
        prop_assert!(
            run.at(|e| matches!(e, Event::CheckMeasured { cluster: m, verdict: deploy_core::check::Verdict::Passed, .. } if m == cluster)).is_some(),
            "{} ({}): its checks never passed",
            cluster,
            run.run_id
        );
        // ...and the sim was not Degraded from that soak's start to the last look at it
        // (the last run's final read).
        let last_look = served
            .iter()
            .filter(|(t, a)| a.name == name && *t <= end)
            .map(|(t, _)| *t)
            .max()
            .unwrap();
        if let Some((dc, at)) = degraded {
            let at = start + at;
            prop_assert!(
                dc != c || at <= soak_start || at > last_look,
                "{}: Degraded {:?} after its last soak began ({}), yet Succeeded",
                cluster,
                at - soak_start,
                run.run_id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever 503s hit reads and watches, and whenever an Application goes Degraded, the
    /// engine reports Succeeded only when every Application was observed Healthy at the
    /// release after our operation and through its whole soak; and when nothing happened
    /// that waiting could not bridge, it does succeed.
    /// Interrupted first runs (a stop request, a kill, a lock removed or taken) are rerun,
    /// and a rerun succeeds only on the same terms: every Application observed through a
    /// whole soak, with its checks, in the newest run that watched it.
    #[test]
    fn succeeded_only_when_observed_through_every_soak(
        windows in prop::collection::vec(fault_window(), 0..4),
        degraded in prop::option::of((0usize..3, 0u64..200)),
        interruption in interruption(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let degraded = degraded.map(|(c, s)| (c, Duration::from_millis(s * 1_000 + 311)));
        rt.block_on(check_observed(windows, degraded, interruption))?;
    }
}
