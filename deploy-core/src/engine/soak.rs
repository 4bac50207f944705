//! The soak: after a wave is Healthy, each Application must stay observed Healthy at the
//! release for the soak time. "Observed" is literal: [`Vigil`] counts only observations
//! that arrived (a watch event or a read), a lapse longer than the bound starts the soak
//! over, the soak ends only on a fresh observation, and a soak that cannot complete before
//! its deadline fails. A soak that saw nothing never passes.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;
use crate::check::least_soak;
use crate::engine::app::Stop;
use crate::engine::lock::LeaseLost;
use crate::engine::outcome::Failure;
use crate::engine::{Event, RETRY_PAUSE, Run};
use crate::model::Release;
use crate::plan::live::live_at;
use crate::plan::promotion::{Action, AppPlan};
use crate::port::{AppStream, Application, Health};

/// The longest time without an observation that a soak may bridge (or the soak itself,
/// when that is shorter).
pub const MAX_GAP: Duration = Duration::from_secs(30);

/// The mark ([`crate::model::annotation::SOAKED`]) written on an Application once a soak of
/// `release` passed on it: the tag, and a fingerprint of the digests where the release has
/// them, so a tag pushed again under other digests is a release never soaked. Pure.
pub fn soaked_mark(release: &Release) -> String {
    use sha2::Digest as _;
    if release.digests.is_empty() {
        return release.tag.to_string();
    }
    let mut h = sha2::Sha256::new();
    for (service, digest) in &release.digests {
        h.update(format!("{service}={digest}\n").as_bytes());
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}@{hex}", release.tag)
}

/// What one Application's soak has observed. Pure: every method takes the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vigil {
    soak: Duration,
    max_gap: Duration,
    /// Start of the current unbroken run of good observations.
    span_start: Instant,
    /// The last good observation.
    last_ok: Instant,
    /// Observation failed since `last_ok`; retry at this time.
    retry_at: Option<Instant>,
    retry_pause: Duration,
    /// A good observation arrived since the soak began.
    observed: bool,
}

/// A lapse that just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// How long nothing was observed.
    pub gap: Duration,
    /// The gap was over the bound: the soak starts over.
    pub soak_restarted: bool,
}

impl Vigil {
    /// A soak of `soak` that begins at `now`; it counts from its first good observation
    /// (what was seen before, while the wave's other Applications deployed, does not count).
    pub fn new(now: Instant, soak: Duration) -> Self {
        Self {
            soak,
            max_gap: MAX_GAP.min(soak).max(Duration::from_millis(1)),
            span_start: now,
            last_ok: now,
            retry_at: None,
            retry_pause: RETRY_PAUSE,
            observed: false,
        }
    }

    /// A good observation (Healthy at the release) at `now`. Returns the lapse it ends, if any.
    pub fn seen(&mut self, now: Instant) -> Option<Restored> {
        if !self.observed {
            self.observed = true;
            let lapsed = self.retry_at.take().is_some();
            let gap = now.saturating_duration_since(self.last_ok);
            self.span_start = now;
            self.last_ok = now;
            self.retry_pause = RETRY_PAUSE;
            return lapsed.then_some(Restored {
                gap,
                soak_restarted: false,
            });
        }
        let gap = now.saturating_duration_since(self.last_ok);
        let lapsed = self.retry_at.take().is_some();
        let soak_restarted = gap > self.max_gap;
        if soak_restarted {
            self.span_start = now;
        }
        self.last_ok = now;
        self.retry_pause = RETRY_PAUSE;
        (lapsed || soak_restarted).then_some(Restored {
            gap,
            soak_restarted,
        })
    }

    /// Observing failed at `now`. Returns true when this begins a lapse (to report it once).
    pub fn lost(&mut self, now: Instant) -> bool {
        let first = self.retry_at.is_none();
        self.retry_at = Some(now + self.retry_pause);
        // Retry soon enough to recover within the bound.
        self.retry_pause = (self.retry_pause * 2).min((self.max_gap / 3).max(RETRY_PAUSE));
        first
    }

    /// The soak is complete: an unbroken run of good observations for the whole soak, the
    /// last of them at its end.
    pub fn passed(&self) -> bool {
        self.observed
            && self.retry_at.is_none()
            && self.last_ok.saturating_duration_since(self.span_start) >= self.soak
    }

    /// When to look (read the Application) next if the watch says nothing: halfway through
    /// the bound after the last observation, at the end of the soak, or the retry after a
    /// failure.
    pub fn next_look(&self) -> Instant {
        if let Some(at) = self.retry_at {
            return at;
        }
        let end = self.span_start + self.soak;
        let look = self.last_ok + self.max_gap / 2;
        // Once the soak is complete (the watch kept while checks measure on), only the bound.
        if end > self.last_ok {
            look.min(end)
        } else {
            look
        }
    }

    /// Observation failed and has not come back yet.
    pub fn lapsed(&self) -> bool {
        self.retry_at.is_some()
    }

    /// How long the current lapse has lasted at `now` (zero when observed).
    pub fn blind_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ok)
    }
}

/// A wave's soak so far, shared by its Applications' watches.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// How many Applications are watched.
    watched: usize,
    /// Those whose vigil has passed (and not lapsed since).
    passed: std::collections::BTreeSet<String>,
    /// Every check of the wave passed.
    checked: bool,
}

impl Progress {
    fn over(&self) -> bool {
        self.checked && self.passed.len() == self.watched
    }
}

/// How a soak ended without passing.
pub(crate) enum SoakEnd {
    Failed {
        cluster: String,
        reason: String,
    },
    /// A metric check failed (too many failed measurements or errors).
    Check {
        check: String,
        cluster: String,
        values: Vec<f64>,
        reason: String,
    },
    /// A metric check was inconclusive: a person decides.
    Inconclusive {
        check: String,
        cluster: String,
        values: Vec<f64>,
    },
    Interrupted,
    /// The lease could not be renewed while soaking.
    Lease(LeaseLost),
}

/// What an observed state says during a soak (and at the end of a run).
pub(crate) enum Verdict {
    Good,
    /// Not Healthy yet not failed (Progressing, Suspended, Unknown): not a good observation.
    NotHealthy(Health),
    Bad(String),
}

/// Judges one observation against `release`: by the digests where the live images carry
/// them ([`live_at`]), so an Application pinned by digest soaks at the release and a tag
/// pushed again under it does not.
pub(crate) fn judge(app: &Application, a: &AppPlan, release: &Release) -> Verdict {
    if app.health == Health::Degraded || app.health == Health::Missing {
        let msg = app.health_message.clone().unwrap_or_default();
        return Verdict::Bad(format!("{:?} {msg}", app.health).trim().to_owned());
    }
    let live = live_at(app, &a.images, release);
    if live.tag() != Some(release.tag.as_str()) {
        return Verdict::Bad(format!("no longer runs {} ({live})", release.tag));
    }
    if app.health != Health::Healthy {
        return Verdict::NotHealthy(app.health);
    }
    Verdict::Good
}

/// A read error that waiting cannot fix: the Application is gone, or we may not see it.
fn fatal(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. } | Error::Permission { .. })
}

impl Run<'_> {
    /// Marks `apps` soaked at the release ([`soaked_mark`]), once their wave's soak and
    /// checks passed. The lease is renewed first (a soak is long: another run may hold the
    /// lock now). A mark that cannot be written costs only a soak on a rerun.
    pub(crate) async fn mark_soaked(&self, apps: &[AppPlan]) {
        if apps.is_empty() || self.lease.renew().await.is_err() {
            return;
        }
        let mark = std::collections::BTreeMap::from([(
            crate::model::annotation::SOAKED.to_owned(),
            soaked_mark(self.release),
        )]);
        let written = futures::future::join_all(
            apps.iter()
                .map(|a| self.ports.argocd.annotate(&a.application, &mark)),
        )
        .await;
        for (a, r) in apps.iter().zip(written) {
            if let Err(e) = r {
                tracing::warn!(
                    "{}: the soak mark could not be written ({e}); a rerun will soak it again",
                    a.application
                );
            }
        }
    }

    /// Reads every Application of the plan once the waves are done: each must be Healthy at
    /// the release, whatever happened to it since its own soak. One that is progressing is
    /// followed until it is Healthy or bad, within the wave's timeout. The first that is not
    /// is the run's failure.
    pub(crate) async fn final_read(&self) -> Option<Failure> {
        let apps: Vec<&AppPlan> = self.plan.waves.iter().flat_map(|w| &w.apps).collect();
        let verdicts = futures::future::join_all(apps.iter().map(|a| async move {
            let settled =
                |app: &Application| !matches!(judge(app, a, self.release), Verdict::NotHealthy(_));
            let seen =
                tokio::time::timeout(self.plan.timeout, self.wait(&a.application, settled)).await;
            match seen {
                Err(_) => Some(format!(
                    "not Healthy at {} within {}",
                    self.release.tag,
                    humantime::format_duration(self.plan.timeout)
                )),
                Ok(Err(stop)) => Some(match stop {
                    Stop::Failed(r) => format!("cannot be read: {r}"),
                    Stop::Interrupted => "interrupted".to_owned(),
                    Stop::Lease(l) => l.to_string(),
                }),
                Ok(Ok(app)) => match judge(&app, a, self.release) {
                    Verdict::Bad(reason) => Some(reason),
                    Verdict::Good | Verdict::NotHealthy(_) => None,
                },
            }
        }))
        .await;
        apps.iter().zip(verdicts).find_map(|(a, v)| {
            v.map(|reason| Failure::Final {
                cluster: a.cluster.clone(),
                reason,
            })
        })
    }

    /// Soaks the wave's deployed Applications and runs their checks; the first that fails
    /// ends the soak, which lasts until every check has its verdict.
    pub(crate) async fn soak(&self, wave: usize, apps: &[AppPlan]) -> Result<(), SoakEnd> {
        let soak = self.plan.soak;
        let soak_end = Instant::now() + soak;
        // Checks that measure beyond the soak lengthen it: the health watch is kept until
        // the last check has its verdict, so a cluster Degraded meanwhile still fails.
        let watched_for = apps
            .iter()
            .map(|a| least_soak(soak, &a.checks))
            .fold(soak, Duration::max);
        self.emit(Event::SoakStarted {
            wave,
            duration_ms: watched_for.as_millis() as u64,
        });
        // A lapse extends the soak, up to the wave's timeout beyond it.
        let deadline = Instant::now() + watched_for + self.plan.timeout;
        // Deployed now, or found at the release unsoaked (an interrupted run): both are watched.
        let deployed: Vec<&AppPlan> = apps.iter().filter(|a| a.action != Action::Skip).collect();
        let progress = watch::Sender::new(Progress {
            watched: deployed.len(),
            ..Progress::default()
        });
        let checks = async {
            let r = self.run_checks(wave, apps, soak_end).await;
            progress.send_modify(|p| p.checked = r.is_ok());
            r
        };
        let watchers = deployed
            .iter()
            .map(|a| self.keep_watch(a, deadline, &progress));
        let watched = super::all_ok(watchers);
        tokio::select! {
            r = futures::future::try_join(watched, checks) => r.map(|_| ())?,
            () = self.cancel_requested() => return Err(SoakEnd::Interrupted),
            lost = self.lease.keep_renewed() => return Err(SoakEnd::Lease(lost)),
        }
        self.emit(Event::SoakFinished { wave });
        Ok(())
    }

    /// One Application's soak: watch it, read it when the watch is quiet or broken, and
    /// keep a [`Vigil`] of what was observed. It lasts until the wave's soak is over: every
    /// Application's vigil passed and every check passed (`progress`), so none is left
    /// unwatched while another's soak or a check goes on.
    async fn keep_watch(
        &self,
        a: &AppPlan,
        deadline: Instant,
        progress: &watch::Sender<Progress>,
    ) -> Result<(), SoakEnd> {
        let mut wave = progress.subscribe();
        let tag = &self.release.tag;
        let argocd = self.ports.argocd;
        let fail = |reason: String| SoakEnd::Failed {
            cluster: a.cluster.clone(),
            reason,
        };
        let mut vigil = Vigil::new(Instant::now(), self.plan.soak);
        let mut stream: Option<AppStream> = None;
        let mut last_error = String::from("no observation");
        let mut last_health = Health::Healthy;
        let lost = |vigil: &mut Vigil, error: String, last_error: &mut String| {
            if vigil.lost(Instant::now()) {
                self.emit(Event::ObservationLost {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                    error: error.clone(),
                });
            }
            *last_error = error;
        };
        loop {
            let now = Instant::now();
            let passed = vigil.passed();
            if passed != wave.borrow().passed.contains(&a.application) {
                progress.send_modify(|p| {
                    if passed {
                        p.passed.insert(a.application.clone());
                    } else {
                        p.passed.remove(&a.application);
                    }
                });
            }
            if wave.borrow_and_update().over() {
                return Ok(());
            }
            // Once passed, the checks bound the rest (their limits and timeouts).
            if !passed && now >= deadline {
                return Err(fail(format!(
                    "not observed Healthy at {tag} for an unbroken {} before the deadline (nothing observed for {}; last: {last_error})",
                    humantime::format_duration(self.plan.soak),
                    humantime::format_duration(Duration::from_secs(vigil.blind_for(now).as_secs())),
                )));
            }
            if stream.is_none() && !vigil.lapsed() {
                // Opening a watch may wait for its first event: bound it by the next look.
                let until = vigil.next_look().min(deadline);
                match tokio::time::timeout_at(until, argocd.watch(&a.application)).await {
                    Ok(Ok(s)) => stream = Some(s),
                    Ok(Err(e)) if fatal(&e) => {
                        lost(&mut vigil, format!("watching: {e}"), &mut last_error);
                        return Err(fail(format!("cannot be observed: {e}")));
                    }
                    Ok(Err(e)) => lost(&mut vigil, format!("watching: {e}"), &mut last_error),
                    Err(_) => lost(&mut vigil, "watching: no answer".into(), &mut last_error),
                }
            }
            let wake = if passed {
                vigil.next_look()
            } else {
                vigil.next_look().min(deadline)
            };
            let next = async {
                match stream.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            let observed = tokio::select! {
                // The wave's soak moved on (a check or another Application): look again.
                Ok(()) = wave.changed() => continue,
                item = next => match item {
                    Some(Ok(app)) => Some(app),
                    Some(Err(e)) => {
                        stream = None;
                        lost(&mut vigil, format!("watch: {e}"), &mut last_error);
                        if fatal(&e) {
                            return Err(fail(format!("cannot be observed: {e}")));
                        }
                        None
                    }
                    None => {
                        stream = None;
                        lost(&mut vigil, "the watch ended".into(), &mut last_error);
                        None
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    if !passed && Instant::now() >= deadline {
                        continue;
                    }
                    // The watch was quiet (or broken) for long enough: read it now.
                    match argocd.application(&a.application).await {
                        Ok(app) => Some(app),
                        Err(e) if fatal(&e) => {
                            lost(&mut vigil, format!("reading: {e}"), &mut last_error);
                            return Err(fail(format!("cannot be observed: {e}")));
                        }
                        Err(e) => {
                            stream = None;
                            lost(&mut vigil, format!("reading: {e}"), &mut last_error);
                            None
                        }
                    }
                }
            };
            let Some(app) = observed else { continue };
            match judge(&app, a, self.release) {
                Verdict::Bad(reason) => return Err(fail(reason)),
                Verdict::NotHealthy(h) => {
                    if h != last_health {
                        self.emit(Event::AppProgress {
                            cluster: a.cluster.clone(),
                            phase: app.operation_state.as_ref().map(|s| s.phase),
                            sync: app.sync_status,
                            health: h,
                        });
                    }
                    last_health = h;
                    lost(&mut vigil, format!("{h:?}"), &mut last_error);
                }
                Verdict::Good => {
                    last_health = Health::Healthy;
                    if let Some(r) = vigil.seen(Instant::now()) {
                        self.emit(Event::ObservationRestored {
                            cluster: a.cluster.clone(),
                            gap_ms: r.gap.as_millis() as u64,
                            soak_restarted: r.soak_restarted,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_soak_mark_names_the_tag_and_its_digests() {
        let digest = |c: char| {
            crate::model::Digest::new(format!("sha256:{}", c.to_string().repeat(64))).unwrap()
        };
        let tag = crate::model::Tag::new("v2").unwrap();
        let by_tag = Release {
            tag: tag.clone(),
            digests: Default::default(),
        };
        assert_eq!(soaked_mark(&by_tag), "v2");
        let release = |d: char| Release {
            tag: tag.clone(),
            digests: [("api".to_owned(), digest(d))].into(),
        };
        let mark = soaked_mark(&release('a'));
        assert!(
            mark.starts_with("v2@") && mark.len() == "v2@".len() + 16,
            "{mark}"
        );
        assert_eq!(mark, soaked_mark(&release('a')), "stable");
        assert_ne!(
            mark,
            soaked_mark(&release('b')),
            "the tag pushed again under other bytes was never soaked"
        );
    }

    #[test]
    fn an_unbroken_soak_passes_on_a_fresh_look_at_its_end() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        assert_eq!(
            v.next_look(),
            t0 + 15 * S,
            "the watch's first event is awaited first"
        );
        assert_eq!(v.seen(t0), None);
        assert!(!v.passed());
        assert_eq!(v.next_look(), t0 + 15 * S, "halfway through the 30 s bound");
        for s in [15, 30, 45] {
            assert_eq!(v.seen(t0 + s * S), None);
            assert!(!v.passed());
        }
        assert_eq!(v.next_look(), t0 + 60 * S, "the end of the soak");
        v.seen(t0 + 60 * S);
        assert!(v.passed());
        // Watched on while checks measure: a look every half bound, not at once.
        assert_eq!(v.next_look(), t0 + 75 * S);
        assert_eq!(v.seen(t0 + 75 * S), None);
        assert!(v.passed());
        assert_eq!(v.next_look(), t0 + 90 * S);
    }

    #[test]
    fn the_soak_counts_from_its_first_observation() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        assert!(v.lost(t0), "the first look fails");
        assert!(!v.passed());
        assert!(v.seen(t0 + 5 * S).is_some_and(|r| !r.soak_restarted));
        for s in [20, 35, 50, 60] {
            v.seen(t0 + s * S);
        }
        assert!(!v.passed(), "only 55 s observed");
        v.seen(t0 + 65 * S);
        assert!(v.passed());
    }

    #[test]
    fn nothing_observed_never_passes() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        v.seen(t0);
        assert!(v.lost(t0 + S), "the first failure begins a lapse");
        for s in 2..600 {
            assert!(!v.lost(t0 + s * S), "reported once");
            assert!(!v.passed());
        }
    }

    #[test]
    fn a_short_lapse_is_bridged_a_long_one_starts_over() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        v.seen(t0);
        v.lost(t0 + 10 * S);
        let r = v.seen(t0 + 25 * S).unwrap();
        assert_eq!((r.gap, r.soak_restarted), (25 * S, false));
        assert_eq!(v.seen(t0 + 40 * S), None);
        v.seen(t0 + 60 * S);
        assert!(v.passed());

        let mut v = Vigil::new(t0, 60 * S);
        v.seen(t0);
        v.lost(t0 + 10 * S);
        let r = v.seen(t0 + 50 * S).unwrap();
        assert_eq!((r.gap, r.soak_restarted), (50 * S, true));
        v.seen(t0 + 60 * S);
        assert!(!v.passed(), "the soak restarted at 50 s");
        for s in [75, 90, 105] {
            v.seen(t0 + s * S);
        }
        assert!(!v.passed());
        v.seen(t0 + 110 * S);
        assert!(v.passed());
    }

    #[test]
    fn a_soak_shorter_than_the_bound_bounds_the_gap() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 10 * S);
        v.seen(t0);
        assert_eq!(v.next_look(), t0 + 5 * S);
        v.lost(t0 + S);
        assert!(
            v.seen(t0 + 12 * S).unwrap().soak_restarted,
            "11 s > a 10 s soak"
        );
        v.seen(t0 + 22 * S);
        assert!(v.passed());
    }

    #[test]
    fn retries_back_off_but_stay_within_the_bound() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 300 * S);
        v.seen(t0);
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            v.lost(now);
            let next = v.next_look();
            pauses.push(next.duration_since(now).as_secs());
            now = next;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
    }
}
