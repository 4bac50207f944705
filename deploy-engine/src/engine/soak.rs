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
use crate::engine::app::Stop;
use deploy_core::Error;
use deploy_core::check::least_soak;
use deploy_core::model::annotation::soaked_mark;
use deploy_core::plan::promotion::{Action, AppPlan};
use deploy_core::port::{AppStream, Application, Health};
use deploy_core::rollout::event::Event;
use deploy_core::rollout::lease::LeaseLost;
use deploy_core::rollout::outcome::Failure;
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
        let mut vigil = Vigil::new(Instant::now().into_std(), self.plan.soak);
        let mut stream: Option<AppStream> = None;
        let mut last_error = String::from("no observation");
        let mut last_health = Health::Healthy;
        let lost = |vigil: &mut Vigil, error: String, last_error: &mut String| {
            if vigil.lost(Instant::now().into_std()) {
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
                    humantime::format_duration(Duration::from_secs(
                        vigil.blind_for(now.into_std()).as_secs()
                    )),
                )));
            }
            if stream.is_none() && !vigil.lapsed() {
                // Opening a watch may wait for its first event: bound it by the next look.
                let until = Instant::from_std(vigil.next_look()).min(deadline);
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
                Instant::from_std(vigil.next_look())
            } else {
                Instant::from_std(vigil.next_look()).min(deadline)
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
                    if let Some(r) = vigil.seen(Instant::now().into_std()) {
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
