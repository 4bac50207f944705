//! A wave's metric checks during its soak: per deployed cluster, each check is measured
//! first after its `initial_delay` from the wave being Healthy, then every `interval`, and
//! each measurement is judged by [`deploy_core::check`]'s pure rules until the check's verdict is
//! in. A check without a count runs at least as long as the soak.

use tokio::time::Instant;

use crate::engine::Run;
use deploy_core::check::MEASURE_TIMEOUT;
use deploy_core::check::{Limits, Phase, ResolvedCheck, Tally, Verdict, phase};
use deploy_core::plan::promotion::AppPlan;
use deploy_core::port::Metrics;
use deploy_core::rollout::event::Event;
use deploy_core::rollout::outcome::{Cause, Failure, Halt, Stage};
use deploy_core::trail::Measurement;

impl Run<'_> {
    /// Every check of every Application of `apps`, concurrently; the first that fails or is
    /// inconclusive ends them all.
    pub(crate) async fn run_checks(
        &self,
        wave: usize,
        apps: &[AppPlan],
        soak_end: Instant,
    ) -> Result<(), Halt> {
        super::all_ok(apps.iter().flat_map(|a| {
            a.checks
                .iter()
                .map(move |c| self.run_check(wave, a, c, soak_end))
        }))
        .await
    }

    async fn run_check(
        &self,
        wave: usize,
        a: &AppPlan,
        c: &ResolvedCheck,
        soak_end: Instant,
    ) -> Result<(), Halt> {
        let Some(metrics) = self.ports.metrics else {
            return Err(self.failed(
                a,
                Stage::Soak,
                Cause::NoMetrics {
                    check: c.name.clone(),
                },
            ));
        };
        let limits = Limits::from(c);
        let mut tally = Tally::default();
        let mut next = Instant::now() + c.initial_delay;
        loop {
            tokio::time::sleep_until(next).await;
            next += c.interval;
            let (values, ph, error) = measure_once(metrics, c).await;
            tally.record(ph);
            let verdict = tally.verdict(limits, Instant::now() >= soak_end);
            self.report_measurement(wave, a, c, &values, ph, verdict, error.clone());
            let why = || match (&error, ph) {
                (Some(e), Phase::Error) => format!(
                    "{} error(s) in a row, the last: {e}",
                    tally.consecutive_errors
                ),
                _ => format!(
                    "{} failed, {} inconclusive of {} measurement(s)",
                    tally.failed, tally.inconclusive, tally.measured
                ),
            };
            match verdict {
                Verdict::Running => {}
                Verdict::Passed => return Ok(()),
                Verdict::Failed => {
                    return Err(Halt::Failed(Failure::Check {
                        at: self.place(a),
                        check: c.name.clone(),
                        values,
                        reason: why(),
                    }));
                }
                Verdict::Inconclusive => {
                    return Err(Halt::Failed(Failure::Inconclusive {
                        at: self.place(a),
                        check: c.name.clone(),
                        values,
                    }));
                }
            }
        }
    }

    /// Reports one measurement as it happens, and keeps it for the audit record.
    #[allow(clippy::too_many_arguments)]
    fn report_measurement(
        &self,
        wave: usize,
        a: &AppPlan,
        c: &ResolvedCheck,
        values: &[f64],
        ph: Phase,
        verdict: Verdict,
        error: Option<String>,
    ) {
        self.emit(Event::CheckMeasured {
            check: c.name.clone(),
            cluster: a.cluster.clone(),
            values: values.to_vec(),
            phase: ph,
            verdict,
            error: error.clone(),
        });
        self.measured(Measurement {
            check: c.name.clone(),
            cluster: a.cluster.clone(),
            wave,
            query: c.query.clone(),
            values: values.to_vec(),
            phase: ph,
            verdict,
            error,
            at: self.ports.clock.now(),
        });
    }
}

/// One measurement of `c`, within its timeout: the values, and the phase they put the check
/// in with why (for an error or no data).
async fn measure_once(
    metrics: &dyn Metrics,
    c: &ResolvedCheck,
) -> (Vec<f64>, Phase, Option<String>) {
    let measured = tokio::time::timeout(
        MEASURE_TIMEOUT.max(c.interval),
        metrics.measure(&c.source, &c.query),
    )
    .await
    .map_err(|_| "no answer in time".to_owned())
    .and_then(|r| r.map_err(|e| e.to_string()));
    match &measured {
        Ok(v) => {
            let (ph, error) = phase(Ok(v), &c.success, c.failure.as_ref(), c.no_data);
            (v.clone(), ph, error)
        }
        Err(e) => {
            let (ph, error) = phase(Err(e), &c.success, c.failure.as_ref(), c.no_data);
            (Vec::new(), ph, error)
        }
    }
}
