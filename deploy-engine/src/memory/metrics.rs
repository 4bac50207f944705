//! An in-memory [`Metrics`]: the answers for each query are scripted, one per measurement,
//! the last repeating, so a test, the sandbox or the demo can make a metric go bad on one
//! cluster at a chosen moment, stop answering, or return no data. A query can also be
//! *simulated* ([`Simulation`]): it then answers from the release the cluster's Application
//! runs in the in-memory Argo CD, as a real error ratio follows the pods that serve traffic,
//! so a release that is bad on one cluster fails its check there, and only while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::InMemoryArgoCd;
use deploy_core::config::MetricSource;
use deploy_core::error::{Error, Result};
use deploy_core::model::LiveTag;
use deploy_core::plan::live::live_tag;
use deploy_core::port::{ArgoCd as _, Metrics};

/// One scripted answer to a measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// These values (empty: no data).
    Values(Vec<f64>),
    /// The source cannot be reached ([`Error::Transient`]).
    Unreachable,
}

/// A metric that follows what one cluster runs: while its Application's live images run a
/// release listed in `releases`, a measurement answers that release's values; while they run
/// any other release, `otherwise`; with none of its images live, no data (no pods, no series).
/// When a rollout has left several releases live, a listed one answers (its pods serve too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    /// The Application whose live release decides the answer.
    pub application: String,
    /// Its (service, image name) pairs, to read the release from its live images.
    pub images: Vec<(String, String)>,
    /// Values by release tag.
    pub releases: BTreeMap<String, Vec<f64>>,
    /// Values while it runs a release not in `releases`.
    pub otherwise: Vec<f64>,
}

impl Simulation {
    /// The values while the Application runs `live`. Pure.
    pub fn answer(&self, live: &LiveTag) -> Vec<f64> {
        let listed = |t: &str| self.releases.get(t).cloned();
        match live {
            LiveTag::Unknown => Vec::new(),
            LiveTag::Tag(t) => listed(t).unwrap_or_else(|| self.otherwise.clone()),
            LiveTag::Mixed(by) => by
                .values()
                .flatten()
                .find_map(|t| listed(t))
                .unwrap_or_else(|| self.otherwise.clone()),
        }
    }
}

/// What an [`InMemoryMetrics`] answers, serializable (the sandbox keeps it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsState {
    /// Per key ([`InMemoryMetrics::key`]): the answers still to give, the last repeating.
    pub scripts: BTreeMap<String, Vec<Answer>>,
    /// Per key without a script: the simulated metric (read from the Argo CD given to
    /// [`InMemoryMetrics::following`]).
    #[serde(default)]
    pub simulations: BTreeMap<String, Simulation>,
    /// The answer to a key without a script; `None`: no data.
    pub default: Option<Vec<f64>>,
    /// Measurements taken, per key.
    pub calls: BTreeMap<String, usize>,
}

/// Scripted measurements, shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct InMemoryMetrics {
    state: Arc<Mutex<MetricsState>>,
    /// Where simulated metrics read what a cluster runs.
    argocd: Option<InMemoryArgoCd>,
}

impl InMemoryMetrics {
    /// Answers no data to everything until scripted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restored from `state`.
    pub fn from_state(state: MetricsState) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            argocd: None,
        }
    }

    /// The same metrics, whose simulations read what each cluster runs from `argocd`.
    pub fn following(self, argocd: InMemoryArgoCd) -> Self {
        Self {
            argocd: Some(argocd),
            ..self
        }
    }

    /// The state, to save.
    pub fn state(&self) -> MetricsState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MetricsState> {
        self.state.lock().expect("the metrics state is intact")
    }

    /// What a measurement is scripted by: the query for Prometheus, the alarm names joined
    /// by commas for CloudWatch alarms.
    pub fn key(source: &MetricSource, query: &str) -> String {
        match source {
            MetricSource::Prometheus { .. } => query.to_owned(),
            MetricSource::CloudWatchAlarms { names, .. } => names.join(","),
        }
    }

    /// The next measurements of `key` answer `answers`, in order, the last repeating.
    pub fn script(&self, key: &str, answers: impl IntoIterator<Item = Answer>) {
        self.lock()
            .scripts
            .insert(key.to_owned(), answers.into_iter().collect());
    }

    /// Every measurement of `key` answers `values` from now on.
    pub fn set(&self, key: &str, values: Vec<f64>) {
        self.script(key, [Answer::Values(values)]);
    }

    /// Measurements of `key` follow `simulation` from now on (a script of `key` still comes
    /// first).
    pub fn simulate(&self, key: &str, simulation: Simulation) {
        self.lock().simulations.insert(key.to_owned(), simulation);
    }

    /// The simulation of `key`, if any.
    pub fn simulation(&self, key: &str) -> Option<Simulation> {
        self.lock().simulations.get(key).cloned()
    }

    /// What a key without a script or simulation answers.
    pub fn default_values(&self) -> Vec<f64> {
        self.lock().default.clone().unwrap_or_default()
    }

    /// What a key without a script or simulation answers.
    pub fn set_default(&self, values: Option<Vec<f64>>) {
        self.lock().default = values;
    }

    /// How many measurements of `key` were taken.
    pub fn calls(&self, key: &str) -> usize {
        self.lock().calls.get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Metrics for InMemoryMetrics {
    async fn measure(&self, source: &MetricSource, query: &str) -> Result<Vec<f64>> {
        let key = Self::key(source, query);
        enum Next {
            Give(Answer),
            Follow(Simulation, InMemoryArgoCd),
        }
        let next = {
            let mut st = self.lock();
            *st.calls.entry(key.clone()).or_default() += 1;
            match st.scripts.get_mut(&key) {
                Some(answers) if answers.len() > 1 => Next::Give(answers.remove(0)),
                Some(answers) if !answers.is_empty() => Next::Give(answers[0].clone()),
                _ => match (st.simulations.get(&key), &self.argocd) {
                    (Some(sim), Some(argocd)) => Next::Follow(sim.clone(), argocd.clone()),
                    _ => Next::Give(Answer::Values(st.default.clone().unwrap_or_default())),
                },
            }
        };
        let answer = match next {
            Next::Give(answer) => answer,
            Next::Follow(sim, argocd) => match argocd.application(&sim.application).await {
                Ok(app) => Answer::Values(sim.answer(&live_tag(&app, &sim.images))),
                // No Application, no pods: no series.
                Err(e) if e.is_not_found() => Answer::Values(Vec::new()),
                Err(e) => return Err(e),
            },
        };
        match answer {
            Answer::Values(v) => Ok(v),
            Answer::Unreachable => Err(Error::Transient {
                message: format!("{key}: the metrics source does not answer"),
                retry_after: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_as_scripted_the_last_repeating() {
        let m = InMemoryMetrics::new();
        let src = MetricSource::Prometheus {
            url: "http://p".into(),
            sigv4: false,
            region: None,
            aws_profile: None,
        };
        assert_eq!(m.measure(&src, "q").await.unwrap(), Vec::<f64>::new());
        m.script(
            "q",
            [
                Answer::Values(vec![0.1]),
                Answer::Unreachable,
                Answer::Values(vec![0.2]),
            ],
        );
        assert_eq!(m.measure(&src, "q").await.unwrap(), [0.1]);
        assert!(matches!(
            m.measure(&src, "q").await,
            Err(Error::Transient { .. })
        ));
        for _ in 0..3 {
            assert_eq!(m.measure(&src, "q").await.unwrap(), [0.2]);
        }
        assert_eq!(m.calls("q"), 6);
        m.set_default(Some(vec![0.0]));
        assert_eq!(m.measure(&src, "other").await.unwrap(), [0.0]);
        let alarms = MetricSource::CloudWatchAlarms {
            names: vec!["a".into(), "b".into()],
            region: "eu-west-1".into(),
            aws_profile: None,
        };
        m.set("a,b", vec![0.0, 1.0]);
        assert_eq!(m.measure(&alarms, "").await.unwrap(), [0.0, 1.0]);
        let back = InMemoryMetrics::from_state(m.state());
        assert_eq!(back.measure(&alarms, "").await.unwrap(), [0.0, 1.0]);
    }
}
