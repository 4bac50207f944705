//! The soak: after a wave is Healthy, each Application must stay observed Healthy at the
//! release for the soak time. "Observed" is literal: [`Vigil`] counts only observations
//! that arrived (a watch event or a read), a lapse longer than the bound starts the soak
//! over, the soak ends only on a fresh observation, and a soak that cannot complete before
//! its deadline fails. A soak that saw nothing never passes.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::Run;
use deploy_core::Error;
use deploy_core::check::least_soak;
use deploy_core::model::annotation::soaked_mark;
use deploy_core::plan::promotion::{Action, AppPlan};
use deploy_core::port::{AppStream, Application, Health};
use deploy_core::rollout::event::Event;
use deploy_core::rollout::outcome::{Call, Cause, Failure, Halt, Stage};
use deploy_core::rollout::vigil::{Verdict, Vigil, judge};

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

/// One Application's soak so far: what was observed of it.
struct Sight<'a> {
    a: &'a AppPlan,
    vigil: Vigil,
    /// What stood in the way last.
    last_error: String,
    last_health: Health,
}

/// A read error that waiting cannot fix: the Application is gone, or we may not see it.
fn fatal(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. } | Error::Permission { .. })
}

/// The soak's end for an error waiting cannot fix.
fn unobservable(error: Error) -> Cause {
    Cause::Port {
        call: Call::Observe,
        error,
    }
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
            deploy_core::model::annotation::SOAKED.to_owned(),
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
                Err(_) => Some(Cause::NotHealthy {
                    tag: self.release.tag.clone(),
                    within: self.plan.timeout,
                }),
                Ok(Err(cause)) => Some(cause),
                Ok(Ok(app)) => match judge(&app, a, self.release) {
                    Verdict::Bad(reason) => Some(Cause::Observed(reason)),
                    Verdict::Good | Verdict::NotHealthy(_) => None,
                },
            }
        }))
        .await;
        apps.iter().zip(verdicts).find_map(|(a, cause)| {
            cause.map(|cause| Failure::App {
                at: self.place(a),
                stage: Stage::End,
                cause,
            })
        })
    }

    /// Soaks the wave's deployed Applications and runs their checks; the first that fails
    /// ends the soak, which lasts until every check has its verdict.
    pub(crate) async fn soak(&self, wave: usize, apps: &[AppPlan]) -> Result<(), Halt> {
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
            () = self.cancel_requested() => return Err(Halt::Interrupted),
            lost = self.lease.keep_renewed() => return Err(lost.into()),
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
    ) -> Result<(), Halt> {
        let mut wave = progress.subscribe();
        let mut sight = Sight {
            a,
            vigil: Vigil::new(Instant::now().into_std(), self.plan.soak),
            last_error: String::from("no observation"),
            last_health: Health::Healthy,
        };
        let mut stream: Option<AppStream> = None;
        let fail = |cause| self.failed(a, Stage::Soak, cause);
        loop {
            let now = Instant::now();
            let passed = sight.vigil.passed();
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
                return Err(fail(Cause::NotObserved {
                    tag: self.release.tag.clone(),
                    soak: self.plan.soak,
                    blind_for: sight.vigil.blind_for(now.into_std()),
                    last: sight.last_error,
                }));
            }
            if stream.is_none() && !sight.vigil.lapsed() {
                stream = self.open_watch(&mut sight, deadline).await.map_err(fail)?;
            }
            let seen = self
                .look(&mut sight, &mut stream, &mut wave, passed, deadline)
                .await
                .map_err(fail)?;
            if let Some(app) = seen {
                self.judge_seen(&mut sight, &app).map_err(fail)?;
            }
        }
    }

    /// Opens a watch of the Application; a watch that does not open is a lapse of
    /// observation, or the soak's end when waiting cannot fix it.
    async fn open_watch(
        &self,
        sight: &mut Sight<'_>,
        deadline: Instant,
    ) -> Result<Option<AppStream>, Cause> {
        // Opening a watch may wait for its first event: bound it by the next look.
        let until = Instant::from_std(sight.vigil.next_look()).min(deadline);
        let name = &sight.a.application;
        match tokio::time::timeout_at(until, self.ports.argocd.watch(name)).await {
            Ok(Ok(s)) => return Ok(Some(s)),
            Ok(Err(e)) if fatal(&e) => {
                self.lose(sight, format!("watching: {e}"));
                return Err(unobservable(e));
            }
            Ok(Err(e)) => self.lose(sight, format!("watching: {e}")),
            Err(_) => self.lose(sight, "watching: no answer".into()),
        }
        Ok(None)
    }

    /// The next observation: a watch event, or a read once the watch was quiet (or broken)
    /// for long enough; `None` when nothing was observed, or the wave's soak moved on.
    async fn look(
        &self,
        sight: &mut Sight<'_>,
        stream: &mut Option<AppStream>,
        wave: &mut watch::Receiver<Progress>,
        passed: bool,
        deadline: Instant,
    ) -> Result<Option<Application>, Cause> {
        let next_look = Instant::from_std(sight.vigil.next_look());
        let wake = if passed {
            next_look
        } else {
            next_look.min(deadline)
        };
        let next = async {
            match stream.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        let (lost, error) = tokio::select! {
            // The wave's soak moved on (a check or another Application): look again.
            Ok(()) = wave.changed() => return Ok(None),
            item = next => match item {
                Some(Ok(app)) => return Ok(Some(app)),
                Some(Err(e)) => (format!("watch: {e}"), e),
                None => {
                    *stream = None;
                    self.lose(sight, "the watch ended".into());
                    return Ok(None);
                }
            },
            () = tokio::time::sleep_until(wake) => {
                if !passed && Instant::now() >= deadline {
                    return Ok(None);
                }
                match self.ports.argocd.application(&sight.a.application).await {
                    Ok(app) => return Ok(Some(app)),
                    Err(e) => (format!("reading: {e}"), e),
                }
            }
        };
        // A broken watch or a failed read: the next look opens a new watch.
        *stream = None;
        self.lose(sight, lost);
        if fatal(&error) {
            return Err(unobservable(error));
        }
        Ok(None)
    }

    /// Counts an observation toward the vigil, or ends the soak when it is bad.
    fn judge_seen(&self, sight: &mut Sight<'_>, app: &Application) -> Result<(), Cause> {
        let a = sight.a;
        match judge(app, a, self.release) {
            Verdict::Bad(reason) => return Err(Cause::Observed(reason)),
            Verdict::NotHealthy(h) => {
                if h != sight.last_health {
                    self.emit(Event::AppProgress {
                        cluster: a.cluster.clone(),
                        phase: app.operation_state.as_ref().map(|s| s.phase),
                        sync: app.sync_status,
                        health: h,
                    });
                }
                sight.last_health = h;
                self.lose(sight, format!("{h:?}"));
            }
            Verdict::Good => {
                sight.last_health = Health::Healthy;
                if let Some(r) = sight.vigil.seen(Instant::now().into_std()) {
                    self.emit(Event::ObservationRestored {
                        cluster: a.cluster.clone(),
                        gap_ms: r.gap.as_millis() as u64,
                        soak_restarted: r.soak_restarted,
                    });
                }
            }
        }
        Ok(())
    }

    /// Nothing observed this time, for `error`: said once per lapse.
    fn lose(&self, sight: &mut Sight<'_>, error: String) {
        if sight.vigil.lost(Instant::now().into_std()) {
            self.emit(Event::ObservationLost {
                cluster: sight.a.cluster.clone(),
                application: sight.a.application.clone(),
                error: error.clone(),
            });
        }
        sight.last_error = error;
    }
}
