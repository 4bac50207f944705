//! CloudWatch alarms by name (`DescribeAlarms`): one value per name, 1.0 in ALARM.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_cloudwatch::config::Region;
use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use deploy_core::{Error, Result};

use crate::aws::{AwsConfigs, via};

/// Most names one `DescribeAlarms` call takes.
const NAMES_PER_CALL: usize = 100;

/// One client per (profile, region).
type ClientMap = HashMap<(Option<String>, String), aws_sdk_cloudwatch::Client>;

/// Reads alarm states, with one client per (profile, region).
#[derive(Debug, Clone)]
pub(crate) struct CloudWatchAlarms {
    configs: Arc<AwsConfigs>,
    clients: Arc<Mutex<ClientMap>>,
}

impl CloudWatchAlarms {
    pub(crate) fn new(configs: Arc<AwsConfigs>) -> Self {
        Self {
            configs,
            clients: Arc::default(),
        }
    }

    async fn client(&self, profile: Option<&str>, region: &str) -> aws_sdk_cloudwatch::Client {
        let key = (profile.map(str::to_owned), region.to_owned());
        if let Some(client) = self.lock().get(&key) {
            return client.clone();
        }
        let shared = self.configs.config(profile, region).await;
        let options = &self.configs.options;
        let config = aws_sdk_cloudwatch::config::Builder::from(&shared)
            .region(Region::new(region.to_owned()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_timeout(options.request_timeout)
                    .build(),
            )
            .build();
        self.lock()
            .entry(key)
            .or_insert_with(|| aws_sdk_cloudwatch::Client::from_conf(config))
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClientMap> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// 1.0 for each of `names` in ALARM, 0.0 otherwise, in order; a name that does not
    /// exist is [`Error::Invalid`] naming it.
    pub(crate) async fn states(
        &self,
        names: &[String],
        region: &str,
        profile: Option<&str>,
    ) -> Result<Vec<f64>> {
        let client = self.client(profile, region).await;
        let mut states: HashMap<String, bool> = HashMap::new();
        for batch in names.chunks(NAMES_PER_CALL) {
            let mut next_token = None;
            loop {
                let out = client
                    .describe_alarms()
                    .set_alarm_names(Some(batch.to_vec()))
                    .alarm_types(AlarmType::MetricAlarm)
                    .alarm_types(AlarmType::CompositeAlarm)
                    .set_next_token(next_token.take())
                    .send()
                    .await
                    .map_err(|e| error(&e, region, profile))?;
                for alarm in out.metric_alarms() {
                    if let Some(name) = alarm.alarm_name() {
                        states.insert(
                            name.to_owned(),
                            alarm.state_value() == Some(&StateValue::Alarm),
                        );
                    }
                }
                for alarm in out.composite_alarms() {
                    if let Some(name) = alarm.alarm_name() {
                        states.insert(
                            name.to_owned(),
                            alarm.state_value() == Some(&StateValue::Alarm),
                        );
                    }
                }
                match out.next_token() {
                    Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                    _ => break,
                }
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !states.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid(format!(
                "CloudWatch in {region} ({}): no alarm named {}; check the check's alarm names and region",
                via(profile),
                missing.join(", ")
            )));
        }
        Ok(names
            .iter()
            .map(|n| if states[n.as_str()] { 1.0 } else { 0.0 })
            .collect())
    }
}

fn error<E>(err: &SdkError<E, HttpResponse>, region: &str, profile: Option<&str>) -> Error
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let place = format!("CloudWatch DescribeAlarms in {region} ({})", via(profile));
    let detail = chain(err);
    match err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or_default();
            let message = err.message().unwrap_or_default();
            if code.contains("Throttl")
                || code.contains("ServiceUnavailable")
                || code.contains("InternalFailure")
            {
                Error::transient(format!("{place}: {code}: {message}"))
            } else if code.contains("AccessDenied")
                || code.contains("UnrecognizedClient")
                || code.contains("InvalidClientTokenId")
                || code.contains("Signature")
                || code.contains("ExpiredToken")
            {
                Error::Permission {
                    message: format!(
                        "{place}: {code}: {message}; grant cloudwatch:DescribeAlarms or log in again"
                    ),
                }
            } else {
                Error::invalid(format!("{place}: {code}: {message}"))
            }
        }
        // No answer: connection failure, timeout, credentials that could not be loaded.
        _ => Error::transient(format!("{place}: {detail}")),
    }
}

fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
