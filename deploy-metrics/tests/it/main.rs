//! Integration tests of deploy-metrics: a real Prometheus, Prometheus answers over
//! wiremock, SigV4 against wiremock, CloudWatch alarms on moto.

mod cloudwatch;
mod prometheus;
mod sigv4;

use deploy_core::config::MetricSource;

/// A plain Prometheus source at `url`.
pub fn plain(url: &str) -> MetricSource {
    MetricSource::Prometheus {
        url: url.to_owned(),
        sigv4: false,
        region: None,
        aws_profile: None,
    }
}
