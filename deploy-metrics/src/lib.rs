//! Metric sources of deploy's checks: [`Sources`] implements
//! [`deploy_core::port::Metrics`] for every [`deploy_core::config::MetricSource`].
//!
//! - **Prometheus**: an instant query (`POST /api/v1/query`), its `scalar` or `vector`
//!   result as values, with bounded answers and timeouts ([`prometheus`]).
//! - **Amazon Managed Prometheus**: the same query signed with SigV4 for the service `aps`
//!   in the source's region, with credentials of the standard AWS chain or the source's
//!   `aws_profile` ([`sigv4`]).
//! - **CloudWatch alarms**: `DescribeAlarms` by names, one value per name: 1.0 while it
//!   is in ALARM, 0.0 otherwise ([`cloudwatch`]).
//!
//! One crate holds the three because a check names any of them and the engine wants one
//! [`deploy_core::port::Metrics`]; it is the only crate besides deploy-aws that uses the
//! AWS SDK (ARCHITECTURE.md, "Invariants").
//!
//! A source that cannot be reached (connection refused, timeouts, 5xx, throttling) is
//! [`deploy_core::Error::Transient`]; a query or alarm name it rejects is
//! [`deploy_core::Error::Invalid`] with the source's own message.
//!
//! With the `prometheus-server` feature, `prometheus_server` runs a real Prometheus for
//! tests.

// Nothing is `pub` unless the crate exports it: every other item says `pub(crate)` or less.
#![warn(unreachable_pub)]
// No function over about 80 lines (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

mod aws;
pub mod cloudwatch;
pub mod prometheus;
#[cfg(feature = "prometheus-server")]
pub mod prometheus_server;
pub mod sigv4;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::config::MetricSource;
use deploy_core::port::Metrics;
use deploy_core::{Error, Result};

/// Timeouts, answer bounds and AWS files of [`Sources`].
///
/// Start from [`SourceOptions::default`] and change the fields you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceOptions {
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on one measurement, answer included.
    pub request_timeout: Duration,
    /// Largest Prometheus answer read; a larger one is [`Error::Invalid`] (aggregate the
    /// query).
    pub max_body_bytes: usize,
    /// Use this AWS config file instead of `$AWS_CONFIG_FILE` / `~/.aws/config`.
    pub config_file: Option<PathBuf>,
    /// Use this AWS credentials file instead of `$AWS_SHARED_CREDENTIALS_FILE` /
    /// `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            config_file: None,
            credentials_file: None,
        }
    }
}

/// Every metric source of a check, behind one [`Metrics`].
#[derive(Debug, Clone)]
pub struct Sources {
    prometheus: prometheus::PrometheusClient,
    aws: Arc<aws::AwsConfigs>,
    cloudwatch: cloudwatch::CloudWatchAlarms,
}

impl Sources {
    /// Sources with `options`; AWS configuration is loaded on first use, once per profile.
    pub fn new(options: SourceOptions) -> Result<Self> {
        let aws = Arc::new(aws::AwsConfigs::new(options.clone()));
        Ok(Self {
            prometheus: prometheus::PrometheusClient::new(&options)?,
            cloudwatch: cloudwatch::CloudWatchAlarms::new(aws.clone()),
            aws,
        })
    }
}

#[async_trait]
impl Metrics for Sources {
    async fn measure(&self, source: &MetricSource, query: &str) -> Result<Vec<f64>> {
        match source {
            MetricSource::Prometheus {
                url, sigv4: false, ..
            } => self.prometheus.query(url, query, None).await,
            MetricSource::Prometheus {
                url,
                sigv4: true,
                region,
                aws_profile,
            } => {
                let region = match region.clone().or_else(|| sigv4::region_of(url)) {
                    Some(region) => region,
                    None => {
                        return Err(Error::invalid(format!(
                            "{url}: SigV4 needs a region; set `region` on the check's prometheus source"
                        )));
                    }
                };
                let signer = sigv4::Signer {
                    configs: &self.aws,
                    region: &region,
                    profile: aws_profile.as_deref(),
                };
                self.prometheus.query(url, query, Some(&signer)).await
            }
            MetricSource::CloudWatchAlarms {
                names,
                region,
                aws_profile,
            } => {
                self.cloudwatch
                    .states(names, region, aws_profile.as_deref())
                    .await
            }
        }
    }
}
