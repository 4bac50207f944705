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

/// Sample values in JSON: finite ones as numbers, the others as Prometheus spells them. A
/// `null` (what serde_json writes for a non-finite `f64`, in records from before) reads as NaN.
pub(crate) mod samples {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Sample {
        Number(f64),
        Word(String),
        Null(()),
    }

    pub(crate) fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|v| match *v {
            v if v.is_finite() => Sample::Number(v),
            v if v.is_nan() => Sample::Word("NaN".into()),
            v if v > 0.0 => Sample::Word("+Inf".into()),
            _ => Sample::Word("-Inf".into()),
        }))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Sample>::deserialize(d)?
            .into_iter()
            .map(|s| match s {
                Sample::Number(v) => Ok(v),
                Sample::Null(()) => Ok(f64::NAN),
                Sample::Word(w) => match w.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "+Inf" | "Inf" => Ok(f64::INFINITY),
                    "-Inf" => Ok(f64::NEG_INFINITY),
                    _ => Err(serde::de::Error::custom(format!(
                        "{w:?} is not a sample value"
                    ))),
                },
            })
            .collect()
    }
}

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
    /// The values measured (empty: no data, or an error). NaN and ±Inf are written as
    /// Prometheus writes them (`"NaN"`, `"+Inf"`, `"-Inf"`): JSON has no such numbers.
    #[serde(with = "samples")]
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

    /// A measurement of NaN or ±Inf (an error ratio with no traffic is 0/0) is kept in the
    /// audit record and read back: JSON has no such numbers, and serde_json writes them as
    /// `null`, which no longer decodes as a number. Each line: the values, their JSON.
    #[test]
    fn every_value_survives_the_audit_record() {
        #[track_caller]
        fn check(values: &[f64], json: &str) {
            let m = Measurement {
                check: "c".into(),
                cluster: "eu-west-1".into(),
                wave: 1,
                query: "q".into(),
                values: values.to_vec(),
                phase: Phase::Error,
                verdict: Verdict::Running,
                error: None,
                at: jiff::Timestamp::UNIX_EPOCH,
            };
            let text = serde_json::to_string(&m).unwrap();
            assert!(text.contains(&format!("\"values\":{json}")), "{text}");
            let back: Measurement = serde_json::from_str(&text).expect("reads back");
            assert_eq!(show_values(&back.values), show_values(values));
        }
        check(&[], "[]");
        check(&[0.25, 1.0, -3.5e-7], "[0.25,1.0,-3.5e-7]");
        check(&[f64::NAN], "[\"NaN\"]");
        check(
            &[f64::INFINITY, f64::NEG_INFINITY, 0.0],
            "[\"+Inf\",\"-Inf\",0.0]",
        );
        // Records written before non-finite values were spelled out hold `null`.
        let old = serde_json::to_string(&serde_json::json!({
            "check": "c", "cluster": "x", "wave": 1, "query": "q", "values": [null, 2.0],
            "phase": "error", "verdict": "running", "error": null, "at": "1970-01-01T00:00:00Z",
        }))
        .unwrap();
        let back: Measurement = serde_json::from_str(&old).expect("an old record reads");
        assert_eq!(show_values(&back.values), "[NaN, 2]");
    }
}
