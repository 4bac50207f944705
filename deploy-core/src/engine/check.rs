//! A wave's metric checks during its soak: per deployed cluster, each check is measured
//! first after its `initial_delay` from the wave being Healthy, then every `interval`, and
//! each measurement is judged by [`crate::check`]'s pure rules until the check's verdict is
//! in. A check without a count runs at least as long as the soak.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::check::{Limits, Phase, ResolvedCheck, Tally, Verdict, phase};
use crate::engine::soak::SoakEnd;
use crate::engine::{Event, Run};
use crate::plan::promotion::AppPlan;

/// The longest a measurement may take before it counts as an error (or the interval, when
/// that is longer).
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(30);

/// One measurement, as the audit record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The check.
    pub check: String,
    /// The cluster.
    pub cluster: String,
    /// The wave.
    pub wave: usize,
    /// The query as sent (resolved).
    pub query: String,
    /// The values measured (empty: no data, or an error).
    pub values: Vec<f64>,
    /// The measurement's phase.
    pub phase: Phase,
    /// The check's verdict after it.
    pub verdict: Verdict,
    /// Why, for an error or no data.
    pub error: Option<String>,
    /// When.
    pub at: jiff::Timestamp,
}

/// The values in one line: `0.002`, `[0.1, 0.2]`, `no data`.
pub fn show_values(values: &[f64]) -> String {
    match values {
        [] => "no data".into(),
        [one] => format!("{one}"),
        many => format!(
            "[{}]",
            many.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Run<'_> {
    /// Every check of every Application of `apps`, concurrently; the first that fails or is
    /// inconclusive ends them all.
    pub(crate) async fn run_checks(
        &self,
        wave: usize,
        apps: &[AppPlan],
        soak_end: Instant,
    ) -> Result<(), SoakEnd> {
        use futures::TryStreamExt as _;
        // Unordered: `try_join_all` over an iterator of unknown length keeps the futures'
        // order, and would see a later cluster's failure only once the earlier ones finish.
        let mut runs: futures::stream::FuturesUnordered<_> = apps
            .iter()
            .flat_map(|a| {
                a.checks
                    .iter()
                    .map(move |c| self.run_check(wave, a, c, soak_end))
            })
            .collect();
        while runs.try_next().await?.is_some() {}
        Ok(())
    }

    async fn run_check(
        &self,
        wave: usize,
        a: &AppPlan,
        c: &ResolvedCheck,
        soak_end: Instant,
    ) -> Result<(), SoakEnd> {
        let Some(metrics) = self.ports.metrics else {
            return Err(SoakEnd::Failed {
                cluster: a.cluster.clone(),
                reason: format!("check {} cannot run: no metrics backend", c.name),
            });
        };
        let limits = Limits::from(c);
        let mut tally = Tally::default();
        let mut next = Instant::now() + c.initial_delay;
        loop {
            tokio::time::sleep_until(next).await;
            next += c.interval;
            let measured = tokio::time::timeout(
                MEASURE_TIMEOUT.max(c.interval),
                metrics.measure(&c.source, &c.query),
            )
            .await
            .map_err(|_| "no answer in time".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()));
            let (values, (ph, error)) = match &measured {
                Ok(v) => (
                    v.clone(),
                    phase(Ok(v), &c.success, c.failure.as_ref(), c.no_data),
                ),
                Err(e) => (
                    Vec::new(),
                    phase(Err(e), &c.success, c.failure.as_ref(), c.no_data),
                ),
            };
            tally.record(ph);
            let verdict = tally.verdict(limits, Instant::now() >= soak_end);
            self.emit(Event::CheckMeasured {
                check: c.name.clone(),
                cluster: a.cluster.clone(),
                values: values.clone(),
                phase: ph,
                verdict,
                error: error.clone(),
            });
            self.measured(Measurement {
                check: c.name.clone(),
                cluster: a.cluster.clone(),
                wave,
                query: c.query.clone(),
                values: values.clone(),
                phase: ph,
                verdict,
                error: error.clone(),
                at: self.ports.clock.now(),
            });
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
                    return Err(SoakEnd::Check {
                        check: c.name.clone(),
                        cluster: a.cluster.clone(),
                        values,
                        reason: why(),
                    });
                }
                Verdict::Inconclusive => {
                    return Err(SoakEnd::Inconclusive {
                        check: c.name.clone(),
                        cluster: a.cluster.clone(),
                        values,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_one_line() {
        assert_eq!(show_values(&[]), "no data");
        assert_eq!(show_values(&[0.25]), "0.25");
        assert_eq!(show_values(&[0.1, f64::NAN]), "[0.1, NaN]");
    }
}
