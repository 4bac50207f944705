//! Metric checks of a soak, as pure functions: the [`Phase`] of one measurement, and the
//! [`Tally`] that turns a check's measurements into its [`Verdict`], with Argo Rollouts'
//! AnalysisTemplate semantics (success and failure conditions, count, failure, inconclusive
//! and consecutive-error limits). A check's definition, its [`Condition`]s and its
//! [`MetricSource`] are configuration (`crate::config`); [`Check::resolve`] fills in its
//! placeholders for one cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Check, Condition, MetricSource, NoData};

/// The phase of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The success condition held (and the failure condition did not).
    Successful,
    /// The failure condition held, or the success condition did not (without a failure
    /// condition).
    Failed,
    /// Both conditions are set and neither held.
    Inconclusive,
    /// No measurement: the source could not be reached, rejected the query, or the
    /// condition could not be evaluated. Counted against the consecutive-error limit; never
    /// a pass.
    Error,
}

/// A check as the engine runs it on one cluster: placeholders resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedCheck {
    /// The check's name.
    pub name: String,
    /// Where to measure.
    pub source: MetricSource,
    /// The query (Prometheus; empty for CloudWatch alarms).
    pub query: String,
    /// When a measurement is successful.
    pub success: Condition,
    /// When it failed (optional; with it, neither holding is inconclusive).
    pub failure: Option<Condition>,
    /// Between measurements.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// Before the first measurement, from the wave being Healthy.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    /// How many measurements; `None`: until the soak ends.
    pub count: Option<u32>,
    /// Failed measurements tolerated.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated.
    pub inconclusive_limit: u32,
    /// Consecutive errors tolerated.
    pub consecutive_error_limit: u32,
    /// What an empty result counts as.
    pub no_data: NoData,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The phase of one measurement, and why when it is an error. Pure.
///
/// As Rollouts: the failure condition is looked at first; without a failure condition a
/// false success condition is a failure; with both, neither holding is inconclusive. An
/// empty result is what `no_data` says, whatever the conditions.
pub fn phase(
    measured: Result<&[f64], &str>,
    success: &Condition,
    failure: Option<&Condition>,
    no_data: NoData,
) -> (Phase, Option<String>) {
    let values = match measured {
        Err(e) => return (Phase::Error, Some(e.to_owned())),
        Ok([]) => {
            return match no_data {
                NoData::Fail => (Phase::Failed, Some("no data".into())),
                NoData::Pass => (Phase::Successful, Some("no data".into())),
                NoData::Inconclusive => (Phase::Inconclusive, Some("no data".into())),
            };
        }
        Ok(v) => v,
    };
    let failed = match failure.map(|f| f.holds(values)).transpose() {
        Ok(f) => f,
        Err(e) => return (Phase::Error, Some(e)),
    };
    if failed == Some(true) {
        return (Phase::Failed, None);
    }
    match success.holds(values) {
        Err(e) => (Phase::Error, Some(e)),
        Ok(true) => (Phase::Successful, None),
        Ok(false) if failed.is_some() => (Phase::Inconclusive, None),
        Ok(false) => (Phase::Failed, None),
    }
}

/// A check's verdict on one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// More measurements are due.
    Running,
    /// Its measurements are done and it passed.
    Passed,
    /// Too many failed measurements, or too many consecutive errors: halt and roll back.
    Failed,
    /// Too many inconclusive measurements: halt for a person to decide.
    Inconclusive,
}

/// The measurements of one check on one cluster so far. Pure: a state machine fed with
/// each measurement's [`Phase`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Measurements taken.
    pub measured: u32,
    /// Successful ones.
    pub successful: u32,
    /// Failed ones.
    pub failed: u32,
    /// Inconclusive ones.
    pub inconclusive: u32,
    /// Errors in a row, up to the last measurement.
    pub consecutive_errors: u32,
}

/// The limits a [`Tally`] is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Measurements to take; `None`: until the soak ends.
    pub count: Option<u32>,
    /// Failed measurements tolerated.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated.
    pub inconclusive_limit: u32,
    /// Consecutive errors tolerated.
    pub consecutive_error_limit: u32,
}

impl From<&ResolvedCheck> for Limits {
    fn from(c: &ResolvedCheck) -> Self {
        Self {
            count: c.count,
            failure_limit: c.failure_limit,
            inconclusive_limit: c.inconclusive_limit,
            consecutive_error_limit: c.consecutive_error_limit,
        }
    }
}

impl Tally {
    /// Counts one measurement.
    pub fn record(&mut self, phase: Phase) {
        self.measured += 1;
        match phase {
            Phase::Successful => self.successful += 1,
            Phase::Failed => self.failed += 1,
            Phase::Inconclusive => self.inconclusive += 1,
            Phase::Error => {
                self.consecutive_errors += 1;
                return;
            }
        }
        self.consecutive_errors = 0;
    }

    /// The verdict so far; `soak_over` says whether the soak's time has passed (a check
    /// without a count then passes on its first successful measurement, never on errors).
    pub fn verdict(&self, limits: Limits, soak_over: bool) -> Verdict {
        if self.failed > limits.failure_limit
            || self.consecutive_errors > limits.consecutive_error_limit
        {
            return Verdict::Failed;
        }
        if self.inconclusive > limits.inconclusive_limit {
            return Verdict::Inconclusive;
        }
        let done = match limits.count {
            Some(n) => self.measured >= n,
            None => soak_over,
        };
        if !done {
            return Verdict::Running;
        }
        if self.successful > 0 && self.consecutive_errors == 0 {
            return Verdict::Passed;
        }
        match limits.count {
            // Every measurement taken, none successful: never a pass.
            Some(_) if self.inconclusive > 0 && self.failed == 0 => Verdict::Inconclusive,
            Some(_) => Verdict::Failed,
            // Until the soak ends: measure on until a success or a limit decides.
            None => Verdict::Running,
        }
    }
}

/// What the placeholders ([`crate::config::PLACEHOLDERS`]) stand for on one cluster.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `{cluster}`.
    pub cluster: &'a str,
    /// `{region}`.
    pub region: &'a str,
    /// `{env}`.
    pub env: &'a str,
    /// `{app}`.
    pub app: &'a str,
    /// `{release}` (the tag).
    pub release: &'a str,
}

impl Scope<'_> {
    /// `template` with every placeholder filled in. Pure.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{cluster}", self.cluster)
            .replace("{region}", self.region)
            .replace("{env}", self.env)
            .replace("{app}", self.app)
            .replace("{release}", self.release)
    }
}

// In this module rather than beside `Check` (config): resolving is what a run does with a
// check, and `ResolvedCheck` is this module's.
impl Check {
    /// The check on one cluster: every placeholder filled in. Pure.
    pub fn resolve(&self, scope: &Scope<'_>) -> ResolvedCheck {
        let source = match &self.source {
            MetricSource::Prometheus {
                url,
                sigv4,
                region,
                aws_profile,
            } => MetricSource::Prometheus {
                url: scope.fill(url),
                sigv4: *sigv4,
                region: region.as_deref().map(|r| scope.fill(r)),
                aws_profile: aws_profile.clone(),
            },
            MetricSource::CloudWatchAlarms {
                names,
                region,
                aws_profile,
            } => MetricSource::CloudWatchAlarms {
                names: names.iter().map(|n| scope.fill(n)).collect(),
                region: scope.fill(region),
                aws_profile: aws_profile.clone(),
            },
        };
        ResolvedCheck {
            name: self.name.clone(),
            source,
            query: scope.fill(&self.query),
            success: self.success.clone(),
            failure: self.failure.clone(),
            interval: self.interval,
            initial_delay: self.initial_delay,
            count: self.count,
            failure_limit: self.failure_limit,
            inconclusive_limit: self.inconclusive_limit,
            consecutive_error_limit: self.consecutive_error_limit,
            no_data: self.no_data,
        }
    }
}

/// How long a soak of `soak` lasts with `checks` on a cluster when every measurement is
/// successful: the engine's soak ends once the watch has seen `soak` pass and every check
/// has its verdict. A check with a count has it at its last measurement, `initial_delay +
/// (count - 1) × interval`; one without, at its first measurement once the soak is over.
/// Pure.
pub fn least_soak(soak: Duration, checks: &[ResolvedCheck]) -> Duration {
    checks
        .iter()
        .map(|c| match c.count {
            Some(n) => c.initial_delay + c.interval * n.max(1).saturating_sub(1),
            None if soak <= c.initial_delay || c.interval.is_zero() => c.initial_delay,
            None => {
                let after = (soak - c.initial_delay).as_nanos();
                let step = c.interval.as_nanos();
                let k = after.div_ceil(step);
                c.initial_delay + Duration::from_nanos((k * step) as u64)
            }
        })
        .fold(soak, Duration::max)
}

/// The longest a measurement may take before it counts as an error (or the interval, when
/// that is longer).
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        let ok = Condition::parse("result < 0.01").unwrap();
        let bad = Condition::parse("result >= 0.05").unwrap();
        let p = |m: Result<&[f64], &str>, failure: Option<&Condition>, no_data| {
            phase(m, &ok, failure, no_data).0
        };
        use Phase::*;
        assert_eq!(p(Ok(&[0.001]), None, NoData::Fail), Successful);
        assert_eq!(p(Ok(&[0.02]), None, NoData::Fail), Failed);
        assert_eq!(p(Ok(&[0.02]), Some(&bad), NoData::Fail), Inconclusive);
        assert_eq!(p(Ok(&[0.07]), Some(&bad), NoData::Fail), Failed);
        assert_eq!(p(Ok(&[0.001]), Some(&bad), NoData::Fail), Successful);
        assert_eq!(p(Ok(&[]), None, NoData::Fail), Failed);
        assert_eq!(p(Ok(&[]), None, NoData::Pass), Successful);
        assert_eq!(p(Ok(&[]), None, NoData::Inconclusive), Inconclusive);
        assert_eq!(p(Err("connection refused"), None, NoData::Pass), Error);
        assert_eq!(p(Ok(&[f64::NAN]), None, NoData::Fail), Failed);
        let indexed = Condition::parse("result[0] < 0.01").unwrap();
        let (ph, why) = phase(Ok(&[0.001]), &indexed, None, NoData::Fail);
        assert_eq!(ph, Error, "indexing a number: {why:?}");
    }

    fn limits(count: Option<u32>, failure: u32, inconclusive: u32, errors: u32) -> Limits {
        Limits {
            count,
            failure_limit: failure,
            inconclusive_limit: inconclusive,
            consecutive_error_limit: errors,
        }
    }

    /// Feeds `phases` and returns the verdict after each, with the soak over from `over`.
    fn run(l: Limits, phases: &[Phase], over: usize) -> Vec<Verdict> {
        let mut t = Tally::default();
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                t.record(*p);
                t.verdict(l, i >= over)
            })
            .collect()
    }

    #[test]
    fn verdicts() {
        use Phase::*;
        use Verdict::{Failed as F, Inconclusive as I, Passed as P, Running as R};
        // A count: passes when taken, fails on the first failure beyond the limit.
        assert_eq!(
            run(limits(Some(3), 0, 0, 4), &[Successful; 3], 9),
            [R, R, P]
        );
        assert_eq!(
            run(limits(Some(3), 0, 0, 4), &[Successful, Failed], 9),
            [R, F]
        );
        assert_eq!(
            run(
                limits(Some(3), 1, 0, 4),
                &[Failed, Successful, Successful],
                9
            ),
            [R, R, P]
        );
        // Errors: tolerated up to the limit in a row, reset by a measurement, never a pass.
        assert_eq!(
            run(
                limits(None, 0, 0, 2),
                &[Error, Error, Successful, Error, Error, Error],
                0
            ),
            [R, R, P, R, R, F]
        );
        assert_eq!(run(limits(Some(2), 0, 0, 4), &[Error, Error], 9), [R, F]);
        assert_eq!(run(limits(None, 0, 0, 4), &[Error; 3], 0), [R, R, R]);
        // Inconclusive beyond its limit halts.
        assert_eq!(run(limits(None, 0, 0, 4), &[Inconclusive], 9), [I]);
        assert_eq!(
            run(limits(Some(2), 0, 2, 4), &[Inconclusive, Inconclusive], 9),
            [R, I]
        );
        // Until the soak ends: passes on a success once the soak is over.
        assert_eq!(
            run(
                limits(None, 0, 0, 4),
                &[Successful, Successful, Successful],
                2
            ),
            [R, R, P]
        );
        assert_eq!(run(limits(None, 1, 0, 4), &[Failed, Successful], 0), [R, P]);
    }

    #[test]
    fn placeholders_are_filled() {
        let s = Scope {
            cluster: "eu-1",
            region: "eu-west-1",
            env: "prod",
            app: "myapp",
            release: "v2",
        };
        assert_eq!(
            s.fill("{app}-{env}-{cluster}-{region}-{release}-{other}"),
            "myapp-prod-eu-1-eu-west-1-v2-{other}"
        );
    }

    #[test]
    fn checks_lengthen_a_soak_to_their_verdict() {
        let s = Duration::from_secs;
        let check = |interval: u64, initial: u64, count: Option<u32>| ResolvedCheck {
            name: "c".into(),
            source: MetricSource::CloudWatchAlarms {
                names: vec!["a".into()],
                region: "eu-west-1".into(),
                aws_profile: None,
            },
            query: String::new(),
            success: Condition::parse("result < 1").unwrap(),
            failure: None,
            interval: s(interval),
            initial_delay: s(initial),
            count,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
            no_data: NoData::Fail,
        };
        for (soak, checks, want) in [
            (300, vec![], 300),
            // Until the soak ends: the first measurement at or after it.
            (300, vec![check(30, 0, None)], 300),
            (300, vec![check(70, 0, None)], 350),
            (300, vec![check(30, 60, None)], 300),
            (300, vec![check(30, 400, None)], 400),
            (0, vec![check(30, 0, None)], 0),
            // A count: its last measurement.
            (60, vec![check(30, 60, Some(5))], 180),
            (600, vec![check(30, 60, Some(5))], 600),
            (0, vec![check(10, 0, Some(1))], 0),
            (0, vec![check(10, 0, Some(0))], 0),
            // The longest check decides.
            (60, vec![check(30, 0, None), check(10, 0, Some(20))], 190),
        ] {
            assert_eq!(
                least_soak(s(soak), &checks),
                s(want),
                "soak {soak}s with {checks:?}"
            );
        }
    }
}
