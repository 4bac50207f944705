//! An environment's `checks`: metric checks measured per cluster during each wave's soak,
//! where they measure ([`MetricSource`]) and what an empty result counts as ([`NoData`]).
//! Their timing bounds are `timing`'s, their conditions `condition`'s.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::condition::Condition;
use super::field::{Invalid, Span, nonempty};
use super::raw::{RawAlarms, RawCheck, RawPrometheus};
use super::timing;

/// The placeholders of a check's url, query, alarm names and region.
pub const PLACEHOLDERS: [&str; 5] = ["cluster", "region", "env", "app", "release"];

/// The default success condition of `cloudwatch_alarms`: every alarm is not in ALARM.
/// `result` is the one value of a single alarm, the list of several.
pub const ALARMS_SUCCESS: &str = "all(result, # == 0)";

/// [`ALARMS_SUCCESS`] for a check of one alarm.
pub const ALARM_SUCCESS: &str = "result == 0";

/// Where a check's measurements come from. In a [`Check`] its url, names and region may hold
/// placeholders; `Check::resolve` fills them in for one cluster, which is what the metrics port
/// measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MetricSource {
    /// A Prometheus HTTP API (`/api/v1/query`), or an Amazon Managed Prometheus workspace
    /// URL signed with SigV4 (service `aps`) in `region`.
    Prometheus {
        /// Base URL, e.g. `http://prometheus.monitoring:9090`.
        url: String,
        /// Sign requests with SigV4 (Amazon Managed Prometheus).
        sigv4: bool,
        /// The region to sign for (with `sigv4`).
        region: Option<String>,
        /// The AWS profile to sign with (with `sigv4`).
        aws_profile: Option<String>,
    },
    /// CloudWatch alarms by name.
    CloudWatchAlarms {
        /// Alarm names.
        names: Vec<String>,
        /// Their region.
        region: String,
        /// The AWS profile to read them with.
        aws_profile: Option<String>,
    },
}

/// What an empty measurement (no series) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// A failed measurement (the default: no data is never silently a pass).
    #[default]
    Fail,
    /// A successful one.
    Pass,
    /// An inconclusive one.
    Inconclusive,
}

/// A metric check (`[[environments.E.checks]]`), its placeholders unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Name, unique in its environment.
    pub name: String,
    /// Where to measure; url, names and region may hold placeholders.
    pub source: MetricSource,
    /// The query (Prometheus; empty for CloudWatch alarms).
    pub query: String,
    /// When a measurement is successful.
    pub success: Condition,
    /// When it failed (optional).
    pub failure: Option<Condition>,
    /// Between measurements (at least 1 s).
    pub interval: Duration,
    /// Before the first measurement, from the wave being Healthy.
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

impl RawCheck {
    /// The check, its placeholders known but not filled in.
    pub(super) fn validate(&self, span: Span) -> Result<Check, Invalid> {
        let name = nonempty(&self.name, "check name")?;
        let (source, query, default_success) = self.source(&name, &span)?;
        let (success, failure) = self.conditions(&name, span, default_success)?;
        let (interval, initial_delay) = timing::check_timing(&name, self)?;
        Ok(Check {
            name,
            source,
            query,
            success,
            failure,
            interval,
            initial_delay,
            count: self.count.as_ref().map(|c| *c.get_ref()),
            failure_limit: self.failure_limit,
            inconclusive_limit: self.inconclusive_limit,
            consecutive_error_limit: self.consecutive_error_limit.unwrap_or(4),
            no_data: self.no_data,
        })
    }

    /// Where the check measures, its query, and its success condition unless it gives one.
    fn source(
        &self,
        name: &str,
        span: &Span,
    ) -> Result<(MetricSource, String, Option<&'static str>), Invalid> {
        match (&self.prometheus, &self.cloudwatch_alarms) {
            (Some(p), None) => {
                let Some(q) = &self.query else {
                    return Err((
                        span.clone(),
                        format!("check {name:?} needs query = \"…\" (a PromQL instant query)"),
                    ));
                };
                let source = prometheus(name, p)?;
                Ok((source, check_template(q, name, "query")?, None))
            }
            (None, Some(a)) => {
                if let Some(q) = &self.query {
                    return Err((
                        q.span(),
                        format!(
                            "check {name:?}: query is for prometheus; cloudwatch_alarms reads the alarms named in names"
                        ),
                    ));
                }
                let (source, default_success) = alarms(name, a)?;
                Ok((source, String::new(), Some(default_success)))
            }
            _ => Err((
                span.clone(),
                format!(
                    "check {name:?} needs exactly one of prometheus = {{ url = \"…\" }} or cloudwatch_alarms = {{ names = [\"…\"] }}"
                ),
            )),
        }
    }

    /// The success condition (`default_success` when not given) and the failure condition.
    fn conditions(
        &self,
        name: &str,
        span: Span,
        default_success: Option<&str>,
    ) -> Result<(Condition, Option<Condition>), Invalid> {
        let success = match (&self.success, default_success) {
            (Some(s), _) => condition(s, name, "success")?,
            (None, Some(d)) => Condition::parse(d).map_err(|e| (span.clone(), e))?,
            (None, None) => {
                return Err((
                    span,
                    format!("check {name:?} needs success = \"…\", e.g. \"result < 0.01\""),
                ));
            }
        };
        let failure = self
            .failure
            .as_ref()
            .map(|f| condition(f, name, "failure"))
            .transpose()?;
        Ok((success, failure))
    }
}

/// A check's `prometheus`; with `sigv4`, the region is given or read from an Amazon Managed
/// Prometheus workspace URL.
fn prometheus(name: &str, p: &Spanned<RawPrometheus>) -> Result<MetricSource, Invalid> {
    let raw = p.get_ref();
    let region = raw
        .region
        .as_ref()
        .map(|r| check_template(r, name, "prometheus.region"))
        .transpose()?;
    if raw.sigv4 && region.is_none() && !raw.url.get_ref().contains("aps-workspaces.") {
        return Err((
            p.span(),
            format!(
                "check {name:?}: prometheus.sigv4 = true needs region = \"…\" (or an aps-workspaces.REGION.amazonaws.com url)"
            ),
        ));
    }
    let region = region.or_else(|| {
        raw.sigv4.then(|| {
            raw.url
                .get_ref()
                .split("aps-workspaces.")
                .nth(1)
                .and_then(|r| r.split('.').next())
                .unwrap_or_default()
                .to_owned()
        })
    });
    Ok(MetricSource::Prometheus {
        url: check_template(&raw.url, name, "prometheus.url")?,
        sigv4: raw.sigv4,
        region,
        aws_profile: profile(&raw.aws_profile),
    })
}

/// A check's `cloudwatch_alarms` (the region defaults to the cluster's), and the success
/// condition it has unless given one: [`ALARM_SUCCESS`] or [`ALARMS_SUCCESS`].
fn alarms(name: &str, a: &Spanned<RawAlarms>) -> Result<(MetricSource, &'static str), Invalid> {
    let raw = a.get_ref();
    if raw.names.get_ref().is_empty() {
        return Err((
            raw.names.span(),
            format!("check {name:?}: cloudwatch_alarms.names cannot be empty"),
        ));
    }
    let names: Vec<String> = raw
        .names
        .get_ref()
        .iter()
        .map(|n| check_template(n, name, "cloudwatch_alarms.names"))
        .collect::<Result<_, _>>()?;
    let default_success = if names.len() == 1 {
        ALARM_SUCCESS
    } else {
        ALARMS_SUCCESS
    };
    let region = match &raw.region {
        Some(r) => check_template(r, name, "cloudwatch_alarms.region")?,
        None => "{region}".to_owned(),
    };
    let source = MetricSource::CloudWatchAlarms {
        names,
        region,
        aws_profile: profile(&raw.aws_profile),
    };
    Ok((source, default_success))
}

/// An AWS profile; a blank one is none.
fn profile(p: &Option<String>) -> Option<String> {
    p.clone().filter(|p| !p.trim().is_empty())
}

/// A check's `success` or `failure` condition, compiled.
fn condition(s: &Spanned<String>, name: &str, key: &str) -> Result<Condition, Invalid> {
    Condition::parse(s.get_ref()).map_err(|e| {
        (
            s.span(),
            format!(
                "check {name:?}: {key} {:?} is not a valid expression: {e}; write e.g. \"result < 0.01\"",
                s.get_ref()
            ),
        )
    })
}

/// `{word}`, a placeholder in a check's text.
static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([a-z_]+)\}").expect("a valid regex"));

/// A check's url, query, alarm name or region (`key` of the check `name`): `{word}` is a
/// placeholder and must be a known one; any other brace (PromQL's label matchers) is the
/// text's own.
fn check_template(s: &Spanned<String>, name: &str, key: &str) -> Result<String, Invalid> {
    let what = format!("check {name:?}: {key}");
    let t = nonempty(s, &what)?;
    if let Some(unknown) = PLACEHOLDER
        .captures_iter(&t)
        .map(|c| c[1].to_owned())
        .find(|w| !PLACEHOLDERS.contains(&w.as_str()))
    {
        let list: Vec<String> = PLACEHOLDERS.iter().map(|a| format!("{{{a}}}")).collect();
        return Err((
            s.span(),
            format!(
                "{what} {t:?} uses unknown placeholder {{{unknown}}}; use {}",
                list.join(" ")
            ),
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Scope;
    use crate::config::{Config, EXAMPLE};

    #[test]
    fn checks() {
        let c = Config::parse("examples/deploy.toml", EXAMPLE).unwrap();
        let prod = c.environment("prod").unwrap();
        let [check] = prod.checks.as_slice() else {
            panic!("one check: {:?}", prod.checks)
        };
        assert_eq!(check.name, "5xx-ratio");
        assert_eq!(check.interval, Duration::from_secs(30));
        assert_eq!(check.initial_delay, Duration::ZERO);
        assert_eq!(check.consecutive_error_limit, 4);
        assert_eq!((check.failure_limit, check.inconclusive_limit), (0, 0));
        assert_eq!(check.no_data, NoData::Fail);
        let scope = Scope {
            cluster: "eu-west-1",
            region: "eu-west-1",
            env: "prod",
            app: "myapp",
            release: "v2",
        };
        let r = check.resolve(&scope);
        assert!(r.query.contains(r#"cluster="eu-west-1""#), "{}", r.query);

        let base = "name = \"5xx-ratio\"";
        let alarms = EXAMPLE.replacen(
            "prometheus = { url = \"http://prometheus.monitoring:9090\" }\nquery = ",
            "cloudwatch_alarms = { names = [\"myapp-{region}-5xx\"] }\nx = ",
            1,
        );
        let alarms = alarms.replacen("\nx = '", "\n# '", 1);
        let alarms = alarms.replacen(
            "success = \"result < 0.01\"\nfailure = \"result >= 0.05\"\n",
            "",
            1,
        );
        let c = Config::parse("deploy.toml", &alarms).unwrap();
        let check = &c.environment("prod").unwrap().checks[0];
        assert_eq!(check.success.as_str(), ALARM_SUCCESS, "the default success");
        // It judges what one alarm measures: a scalar, 1 while in ALARM.
        let judged = |c: &Check, values: &[f64]| {
            crate::check::phase(Ok(values), &c.success, None, NoData::Fail).0
        };
        use crate::check::Phase::{Failed, Successful};
        assert_eq!(judged(check, &[0.0]), Successful);
        assert_eq!(judged(check, &[1.0]), Failed);
        let two = alarms.replacen(
            "names = [\"myapp-{region}-5xx\"]",
            "names = [\"myapp-{region}-5xx\", \"myapp-{region}-latency\"]",
            1,
        );
        let c2 = Config::parse("deploy.toml", &two).unwrap();
        let both = &c2.environment("prod").unwrap().checks[0];
        assert_eq!(both.success.as_str(), ALARMS_SUCCESS);
        assert_eq!(judged(both, &[0.0, 0.0]), Successful);
        assert_eq!(judged(both, &[0.0, 1.0]), Failed);
        assert_eq!(
            check.resolve(&scope).source,
            MetricSource::CloudWatchAlarms {
                names: vec!["myapp-eu-west-1-5xx".into()],
                region: "eu-west-1".into(),
                aws_profile: None,
            }
        );

        check_err(base, "name = \"\"", "check name cannot be empty");
        check_err(
            "success = \"result < 0.01\"",
            "success = \"result <\"",
            "check \"5xx-ratio\": success \"result <\" is not a valid expression",
        );
        check_err(
            "success = \"result < 0.01\"",
            "success = \"result + 1\"",
            "not true or false",
        );
        check_err(
            "failure = \"result >= 0.05\"",
            "failure = \"(\"",
            "failure \"(\" is not a valid expression",
        );
        check_err(
            "interval = \"30s\"",
            "interval = \"500ms\"",
            "interval is at least 1s",
        );
        check_err(
            "interval = \"30s\"",
            "interval = \"soon\"",
            "is not a duration",
        );
        check_err(
            "interval = \"30s\"",
            "count = 0",
            "count must be at least 1",
        );
        check_err(
            "no_data = \"fail\"",
            "no_data = \"maybe\"",
            "unknown variant",
        );
        check_err("no_data = \"fail\"", "timeout = \"1m\"", "unknown field");
        check_err(
            "{cluster}\"}[2m]))'",
            "{clutser}\"}[2m]))'",
            "unknown placeholder {clutser}",
        );
        check_err(
            "prometheus = { url = \"http://prometheus.monitoring:9090\" }",
            "",
            "needs exactly one of prometheus",
        );
        check_err(
            "prometheus = { url = \"http://prometheus.monitoring:9090\" }",
            "prometheus = { url = \"https://example.com\", sigv4 = true }",
            "sigv4 = true needs region",
        );
        check_err(
            "prometheus = { url = \"http://prometheus.monitoring:9090\" }",
            "prometheus = { url = \"http://p:9090\" }\ncloudwatch_alarms = { names = [\"a\"] }",
            "exactly one of",
        );
        let twice = format!(
            "{EXAMPLE}{}",
            &EXAMPLE[EXAMPLE.find("[[environments.prod.checks]]").unwrap()..]
        );
        let e = Config::parse("deploy.toml", &twice).unwrap_err();
        assert!(e.message.contains("defined twice"), "{e}");
        let amp = EXAMPLE.replacen(
            "prometheus = { url = \"http://prometheus.monitoring:9090\" }",
            "prometheus = { url = \"https://aps-workspaces.{region}.amazonaws.com/workspaces/ws-1\", sigv4 = true }",
            1,
        );
        let c = Config::parse("deploy.toml", &amp).unwrap();
        let MetricSource::Prometheus {
            url, region, sigv4, ..
        } = c.environment("prod").unwrap().checks[0]
            .resolve(&scope)
            .source
        else {
            panic!("prometheus")
        };
        assert!(sigv4);
        assert_eq!(
            url,
            "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1"
        );
        assert_eq!(region.as_deref(), Some("eu-west-1"));
    }

    /// Replaces `from` by `to` in the example's check and expects an error naming `expect`.
    #[track_caller]
    fn check_err(from: &str, to: &str, expect: &str) {
        let at = EXAMPLE.find("[[environments.prod.checks]]").unwrap();
        let (head, tail) = EXAMPLE.split_at(at);
        assert!(tail.contains(from), "the example's check has no {from:?}");
        let text = format!("{head}{}", tail.replacen(from, to, 1));
        let e = Config::parse("deploy.toml", &text).expect_err("must be rejected");
        assert!(e.line > 0);
        assert!(
            e.message.contains(expect),
            "replacing {from:?} by {to:?}: {e}"
        );
    }
}
