//! `deploy audit`: policy findings from observed state (sync policies, ApplicationSet
//! ignore rules, replication coverage, tag mutability, cluster registration, and checks
//! whose source cannot be reached or rejects the query now).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::{Phase, ResolvedCheck, phase};
use crate::config::{Config, Environment, MetricSource, NoData};
use crate::error::{Error, Result};
use crate::model::SyncMode;
use crate::port::{Application, ApplicationSet, ClusterInfo, ReplicationRule, RepositoryInfo};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Breaks the process.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Environment.
    pub environment: String,
    /// The object concerned.
    pub subject: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The change that fixes it, one line each (e.g. YAML and Terraform fragments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
}

/// What the audit of one environment looks at.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditInput {
    /// Applications by cluster (`None` when missing).
    pub apps: BTreeMap<String, Option<Application>>,
    /// The environment's ApplicationSet, if configured and found.
    pub application_set: Option<ApplicationSet>,
    /// Whether the configured ApplicationSet was looked for and not found.
    pub application_set_missing: bool,
    /// Replication rules of the source registry, by source region.
    pub source_rules: BTreeMap<String, Vec<ReplicationRule>>,
    /// Repository settings by repository name and region (`None` when missing).
    pub repositories: BTreeMap<(String, String), Option<RepositoryInfo>>,
    /// Clusters registered in Argo CD.
    pub clusters: Vec<ClusterInfo>,
    /// The ApplicationSets that generate the Applications (by owner reference, else the
    /// configured name), by name; `None` when not found.
    #[serde(default)]
    pub application_sets: BTreeMap<String, Option<ApplicationSet>>,
    /// The Application that carries the lock annotation; `None` when the lock lives elsewhere.
    #[serde(default)]
    pub lock_carrier: Option<String>,
    /// Each check measured once now on each cluster (`deploy_engine::observe::findings::observe_checks`).
    #[serde(default)]
    pub checks: Vec<CheckProbe>,
}

/// One check measured once, now, on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckProbe {
    /// The cluster.
    pub cluster: String,
    /// The check, resolved for the cluster (`{release}`: the release it runs now).
    pub check: ResolvedCheck,
    /// What the measurement gave.
    pub answer: ProbeAnswer,
}

/// What measuring a check once gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum ProbeAnswer {
    /// These values (empty: no data).
    Values(Vec<f64>),
    /// The source did not answer, or answered that it cannot now ([`Error::Transient`]).
    Unreachable(String),
    /// The source rejected the query, or the alarm does not exist ([`Error::Invalid`],
    /// [`Error::NotFound`]).
    Rejected(String),
    /// The credentials may not read it ([`Error::Permission`]).
    Denied(String),
}

impl ProbeAnswer {
    /// The answer for a measurement's result.
    pub fn of(measured: Result<Vec<f64>>) -> Self {
        match measured {
            Ok(v) => Self::Values(v),
            Err(e @ (Error::Invalid { .. } | Error::NotFound { .. })) => {
                Self::Rejected(e.to_string())
            }
            Err(e @ Error::Permission { .. }) => Self::Denied(e.to_string()),
            Err(e) => Self::Unreachable(e.to_string()),
        }
    }
}

/// Where a check measures, for a finding's subject and text.
fn source_of(s: &MetricSource) -> String {
    match s {
        MetricSource::Prometheus { url, .. } => url.clone(),
        MetricSource::CloudWatchAlarms { names, region, .. } => {
            format!("CloudWatch alarms {} in {region}", names.join(", "))
        }
    }
}

/// Findings about the checks measured once now. Pure.
///
/// A source that cannot be reached, a rejected query (or a missing alarm), credentials that
/// may not read it, and conditions that cannot be evaluated on what it answers are errors: a
/// soak would count every measurement as an error and halt. No data is a warning whatever
/// `no_data` says (a query that matches no series is most often a misspelt metric or label):
/// with `pass` the check would pass without measuring anything, with `fail` or
/// `inconclusive` every soak would halt while it stays empty. A value the success condition
/// rejects now is no finding: that is the state of the service, not of the configuration.
pub fn check_findings(env: &Environment, probes: &[CheckProbe]) -> Vec<Finding> {
    let table = format!("[[environments.{}.checks]]", env.name);
    probes
        .iter()
        .filter_map(|p| {
            let c = &p.check;
            let at = source_of(&c.source);
            let (severity, message) = match &p.answer {
                ProbeAnswer::Unreachable(why) => (
                    Severity::Error,
                    format!(
                        "cannot be measured now: {at} does not answer ({why}); every soak would count errors and halt after {} in a row. Check the URL and that this machine (or CI) reaches it; fix the check in {table} if the address is wrong",
                        c.consecutive_error_limit + 1
                    ),
                ),
                ProbeAnswer::Rejected(why) => (
                    Severity::Error,
                    match &c.source {
                        MetricSource::Prometheus { .. } => format!(
                            "the query is rejected by {at} ({why}); fix `query` of {} in {table} (try it in the Prometheus UI)",
                            c.name
                        ),
                        MetricSource::CloudWatchAlarms { .. } => format!(
                            "the alarms cannot be read ({why}); create them, or fix `cloudwatch_alarms.names` of {} in {table}",
                            c.name
                        ),
                    },
                ),
                ProbeAnswer::Denied(why) => (
                    Severity::Error,
                    format!(
                        "the credentials may not read {at} ({why}); grant them (aps:QueryMetrics for Amazon Managed Prometheus, cloudwatch:DescribeAlarms for alarms) or set the check's aws_profile"
                    ),
                ),
                ProbeAnswer::Values(v) if v.is_empty() => (
                    Severity::Warning,
                    match c.no_data {
                        NoData::Pass => "the query returns no data now, and no_data = \"pass\" counts that as a success: the check would pass without measuring anything; check the metric and label names of the query, or set no_data = \"fail\"".to_owned(),
                        NoData::Fail | NoData::Inconclusive => format!(
                            "the query returns no data now, and no_data = \"{}\": every soak would halt while it stays empty; check the metric and label names (a ratio whose numerator matches no series is empty: write it as `(sum(…) or vector(0))`)",
                            if c.no_data == NoData::Fail { "fail" } else { "inconclusive" }
                        ),
                    },
                ),
                ProbeAnswer::Values(v) => match phase(Ok(v), &c.success, c.failure.as_ref(), c.no_data) {
                    (Phase::Error, Some(why)) => (
                        Severity::Error,
                        format!(
                            "its conditions cannot be evaluated on what the query returns now ({}): {why}; every measurement would be an error. Fix `success`/`failure` of {} in {table} (`result` is a number for one series, a list otherwise)",
                            crate::check::show_values(v),
                            c.name
                        ),
                    ),
                    _ => return None,
                },
            };
            Some(Finding {
                severity,
                environment: env.name.clone(),
                subject: format!("check/{} on {}", c.name, p.cluster),
                message,
                fix: Vec::new(),
            })
        })
        .collect()
}

pub use super::appset::override_pointer;

/// Findings for `env` from `input`. Pure.
pub fn findings(config: &Config, env: &Environment, input: &AuditInput) -> Vec<Finding> {
    let mut f = Found {
        environment: &env.name,
        out: Vec::new(),
    };
    appset_findings(&mut f, config, env, input);
    application_findings(&mut f, config, env, input);
    template_findings(&mut f, config, env, input);
    replication_findings(&mut f, config, env, input);
    repository_findings(&mut f, env, input);
    cluster_findings(&mut f, config, input);
    let mut out = f.out;
    out.extend(check_findings(env, &input.checks));
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.subject.cmp(&b.subject))
    });
    out
}

/// The findings of one environment so far.
struct Found<'a> {
    environment: &'a str,
    out: Vec<Finding>,
}

impl Found<'_> {
    fn fixed(&mut self, severity: Severity, subject: String, message: String, fix: Vec<String>) {
        self.out.push(Finding {
            severity,
            environment: self.environment.to_owned(),
            subject,
            message,
            fix,
        });
    }

    fn add(&mut self, severity: Severity, subject: String, message: String) {
        self.fixed(severity, subject, message, Vec::new());
    }
}

/// ApplicationSets that would undo what `deploy` writes, with their fix.
fn appset_findings(f: &mut Found<'_>, config: &Config, env: &Environment, input: &AuditInput) {
    let mut sets = input.application_sets.clone();
    if let Some(set) = &input.application_set {
        sets.entry(set.name.clone())
            .or_insert_with(|| Some(set.clone()));
    }
    for u in super::appset::check(
        config,
        env,
        &input.apps,
        &sets,
        input.lock_carrier.as_deref(),
    ) {
        f.fixed(
            Severity::Error,
            format!("applicationset/{}", u.application_set),
            u.problem(),
            u.fix_lines(),
        );
    }
}

/// Applications missing, or with another sync policy than their environment's.
fn application_findings(f: &mut Found<'_>, config: &Config, env: &Environment, input: &AuditInput) {
    let manual = env.sync == SyncMode::Manual;
    for cluster in &config.clusters {
        let name = config.application_name(env, cluster);
        match input.apps.get(&cluster.name).and_then(Option::as_ref) {
            None => f.add(Severity::Error, name, "Application not found in Argo CD; apply the ApplicationSet (deploy render applicationset)".into()),
            Some(app) if manual && app.sync_mode.is_automated() => f.add(
                Severity::Error,
                name,
                format!("automated sync in manual environment {}: a tag change deploys without gates; remove spec.syncPolicy.automated", env.name),
            ),
            Some(app) if !manual && !app.sync_mode.is_automated() => {
                f.add(Severity::Warning, name, format!("no automated sync in automated environment {}: new releases will not deploy", env.name))
            }
            Some(_) => {}
        }
    }
}

/// The ApplicationSet's template: missing, or with another sync policy.
fn template_findings(f: &mut Found<'_>, config: &Config, env: &Environment, input: &AuditInput) {
    let manual = env.sync == SyncMode::Manual;
    let Some(set) = &input.application_set else {
        if input.application_set_missing {
            let name = config.application_set_name(env).unwrap_or_default();
            f.add(
                Severity::Error,
                format!("applicationset/{name}"),
                "ApplicationSet not found in Argo CD".into(),
            );
        }
        return;
    };
    if manual && set.sync_mode.is_automated() {
        f.add(
            Severity::Error,
            format!("applicationset/{}", set.name),
            "template has automated sync in a manual environment; remove it".into(),
        );
    }
    if !manual && !set.sync_mode.is_automated() {
        f.add(
            Severity::Warning,
            format!("applicationset/{}", set.name),
            "template has no automated sync in an automated environment".into(),
        );
    }
}

/// Target repositories no replication rule of the source environment copies to.
fn replication_findings(f: &mut Found<'_>, config: &Config, env: &Environment, input: &AuditInput) {
    let Some(src) = env
        .promote_from
        .as_deref()
        .and_then(|s| config.environments.get(s))
    else {
        return;
    };
    for service in &config.services {
        for region in &env.registry.regions {
            let dest = env.location(service, region);
            let source = src.location(service, &src.registry.regions[0]);
            if source == dest {
                continue;
            }
            let covered = input
                .source_rules
                .values()
                .flatten()
                .any(|r| r.covers(&source.repository, &dest.account, region));
            if !covered {
                f.add(
                    Severity::Error,
                    dest.image_name(),
                    format!(
                        "no replication rule of {} copies {} to {}/{region}; add one (deploy render replication --env {} prints it, as Terraform or JSON)",
                        src.name, source.repository, dest.account, env.name
                    ),
                );
            }
        }
    }
}

/// Repositories missing, or with mutable tags where releases are promoted by hand.
fn repository_findings(f: &mut Found<'_>, env: &Environment, input: &AuditInput) {
    let manual = env.sync == SyncMode::Manual;
    for ((repository, region), info) in &input.repositories {
        let subject = format!(
            "{}.dkr.ecr.{region}.amazonaws.com/{repository}",
            env.registry.account
        );
        match info {
            None if env.promote_from.is_none() => f.add(Severity::Error, subject, "repository does not exist".into()),
            None => {}
            Some(i) if i.tag_mutable && manual => f.add(
                Severity::Warning,
                subject,
                "tags are mutable: a tag could point at other bytes later; set imageTagMutability to IMMUTABLE".into(),
            ),
            Some(_) => {}
        }
    }
}

/// Clusters Argo CD does not have, or cannot reach.
fn cluster_findings(f: &mut Found<'_>, config: &Config, input: &AuditInput) {
    for cluster in &config.clusters {
        let subject = format!("cluster/{}", cluster.name);
        match input.clusters.iter().find(|c| c.name == cluster.name) {
            None => f.add(
                Severity::Error,
                subject,
                "not registered in Argo CD (argocd cluster add)".into(),
            ),
            Some(c) if !c.connected => f.add(
                Severity::Error,
                subject,
                format!(
                    "not connected: {}",
                    c.message.as_deref().unwrap_or("no message")
                ),
            ),
            Some(_) => {}
        }
    }
}

impl std::fmt::Display for Severity {
    /// As in the JSON: `warning`, `error`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Scope;
    use crate::config::EXAMPLE;
    use crate::port::{IgnoreDifferences, test_app};

    fn healthy_input(config: &Config, env: &Environment) -> AuditInput {
        let mut input = AuditInput::default();
        for c in &config.clusters {
            let mut app = test_app(&config.application_name(env, c), &[]);
            app.sync_mode = env.sync;
            input.apps.insert(c.name.clone(), Some(app));
            input.clusters.push(ClusterInfo {
                name: c.name.clone(),
                server: "https://k".into(),
                connected: true,
                message: None,
            });
        }
        input.application_set = Some(ApplicationSet {
            name: config.application_set_name(env).unwrap(),
            sync_mode: env.sync,
            ignore_differences: vec![IgnoreDifferences {
                json_pointers: vec!["/spec/source/helm/parameters".into()],
                ..Default::default()
            }],
            preserved_annotations: crate::plan::appset::every_written_annotation()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            annotations: BTreeMap::new(),
            resource_version: "1".into(),
        });
        input.lock_carrier = crate::lock::carrier(config, env);
        input.source_rules.insert(
            "us-west-2".into(),
            vec![ReplicationRule {
                destinations: env
                    .registry
                    .regions
                    .iter()
                    .map(|r| (env.registry.account.clone(), r.clone()))
                    .collect(),
                repository_prefixes: vec!["staging/".into()],
            }],
        );
        for s in &config.services {
            for r in &env.registry.regions {
                input.repositories.insert(
                    (env.location(s, r).repository, r.clone()),
                    Some(RepositoryInfo { tag_mutable: false }),
                );
            }
        }
        input
    }

    #[track_caller]
    fn check(change: impl FnOnce(&mut AuditInput), want: &[(Severity, &str)]) {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let mut input = healthy_input(&config, prod);
        change(&mut input);
        let got = findings(&config, prod, &input);
        let got: Vec<(Severity, String)> = got
            .iter()
            .map(|f| (f.severity, format!("{}: {}", f.subject, f.message)))
            .collect();
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((gs, gm), (ws, wm)) in got.iter().zip(want) {
            assert!(
                gs == ws && gm.contains(wm),
                "got {gs:?} {gm}, want {ws:?} …{wm}…"
            );
        }
    }

    #[test]
    fn audit_cases() {
        check(|_| {}, &[]);
        check(
            |i| {
                i.apps
                    .get_mut("us-east-1")
                    .unwrap()
                    .as_mut()
                    .unwrap()
                    .sync_mode = SyncMode::Automated {
                    prune: false,
                    self_heal: false,
                }
            },
            &[(
                Severity::Error,
                "myapp-prod-us-east-1: automated sync in manual environment",
            )],
        );
        check(
            |i| {
                i.application_set
                    .as_mut()
                    .unwrap()
                    .ignore_differences
                    .clear()
            },
            &[(Severity::Error, "not in spec.ignoreApplicationDifferences")],
        );
        check(
            |i| {
                i.application_set.as_mut().unwrap().ignore_differences[0].json_pointers =
                    vec!["/spec/source".into()]
            },
            &[],
        );
        // The annotations deploy writes, preserved or erased by the controller.
        check(
            |i| {
                i.application_set
                    .as_mut()
                    .unwrap()
                    .preserved_annotations
                    .clear()
            },
            &[(
                Severity::Error,
                "applicationset/myapp-prod: applicationset/myapp-prod (generates myapp-prod-eu-west-1, \
                 myapp-prod-us-east-1, myapp-prod-us-west-2): it would erase annotations deploy writes: \
                 deploy/release, deploy/run, deploy/promoted-by, deploy/promoted-at, deploy/soaked, deploy/lock not in \
                 spec.preservedFields.annotations",
            )],
        );
        // Without the annotation lock, deploy/lock need not be preserved.
        check(
            |i| {
                i.lock_carrier = None;
                i.application_set
                    .as_mut()
                    .unwrap()
                    .preserved_annotations
                    .retain(|a| a != crate::model::annotation::LOCK);
            },
            &[],
        );
        // An Application owned (ownerReferences) by another ApplicationSet is checked against it.
        check(
            |i| {
                let app = i.apps.get_mut("us-east-1").unwrap().as_mut().unwrap();
                app.owner_application_set = Some("other".into());
                let mut other = i.application_set.clone().unwrap();
                other.name = "other".into();
                other.preserved_annotations = vec![crate::model::annotation::LOCK.into()];
                i.application_sets.insert("other".into(), Some(other));
            },
            &[(
                Severity::Error,
                "applicationset/other (generates myapp-prod-us-east-1): it would erase annotations deploy writes: \
                 deploy/release, deploy/run, deploy/promoted-by, deploy/promoted-at, deploy/soaked not in",
            )],
        );
        // `/spec/sources` covers only multi-source Applications (N9): these have `spec.source`.
        check(
            |i| {
                i.application_set.as_mut().unwrap().ignore_differences[0].json_pointers =
                    vec!["/spec/sources".into()]
            },
            &[(
                Severity::Error,
                "/spec/source/helm/parameters not in spec.ignoreApplicationDifferences",
            )],
        );
        check(
            |i| {
                i.application_set.as_mut().unwrap().ignore_differences[0].json_pointers =
                    vec!["/spec/sources/1".into()];
                for app in i.apps.values_mut().flatten() {
                    app.override_sources = Some(crate::port::OverrideSources {
                        helm: 1,
                        kustomize: 0,
                    });
                }
            },
            &[],
        );
        check(
            |i| {
                let s = i.application_set.as_mut().unwrap();
                s.ignore_differences[0].json_pointers.clear();
                s.ignore_differences[0].jq_path_expressions =
                    vec![".spec.source.helm.parameters".into()];
            },
            &[],
        );
        check(
            |i| {
                i.source_rules.get_mut("us-west-2").unwrap()[0]
                    .destinations
                    .retain(|(_, r)| r != "eu-west-1")
            },
            &[
                (
                    Severity::Error,
                    "eu-west-1.amazonaws.com/staging/api: no replication rule",
                ),
                (
                    Severity::Error,
                    "eu-west-1.amazonaws.com/staging/logserver: no replication rule",
                ),
                (
                    Severity::Error,
                    "eu-west-1.amazonaws.com/staging/worker: no replication rule",
                ),
            ],
        );
        check(
            |i| {
                i.repositories
                    .insert(
                        ("staging/api".into(), "us-east-1".into()),
                        Some(RepositoryInfo { tag_mutable: true }),
                    )
                    .map(|_| ())
                    .unwrap_or(())
            },
            &[(Severity::Warning, "tags are mutable")],
        );
        check(
            |i| i.clusters.retain(|c| c.name != "eu-west-1"),
            &[(Severity::Error, "cluster/eu-west-1: not registered")],
        );
        check(
            |i| i.clusters[0].connected = false,
            &[(Severity::Error, "not connected")],
        );
        check(
            |i| *i.apps.get_mut("us-west-2").unwrap() = None,
            &[(
                Severity::Error,
                "myapp-prod-us-west-2: Application not found",
            )],
        );
    }

    #[test]
    fn an_erased_annotation_comes_with_its_fix() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let mut input = healthy_input(&config, prod);
        input
            .application_set
            .as_mut()
            .unwrap()
            .preserved_annotations
            .clear();
        let got = findings(&config, prod, &input);
        let fix = got[0].fix.join("\n");
        assert!(
            fix.contains("    preservedFields:\n      annotations:\n        - \"deploy/release\""),
            "{fix}"
        );
        assert!(
            fix.contains("    preservedFields = {\n      annotations = [\"deploy/release\""),
            "{fix}"
        );
    }

    /// The example's prod check on `cluster`, with `no_data` and `success` as given.
    fn probe(cluster: &str, no_data: NoData, success: &str, answer: ProbeAnswer) -> CheckProbe {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let c = config.cluster(cluster).unwrap();
        let mut check = prod.checks[0].resolve(&Scope {
            cluster: &c.name,
            region: &c.region,
            env: "prod",
            app: "myapp",
            release: "v1",
        });
        check.no_data = no_data;
        check.success = crate::config::Condition::parse(success).unwrap();
        CheckProbe {
            cluster: cluster.into(),
            check,
            answer,
        }
    }

    #[test]
    fn check_findings_cases() {
        use NoData::{Fail, Inconclusive, Pass};
        use ProbeAnswer::{Denied, Rejected, Unreachable, Values};
        let ok = "result < 0.01";
        let transient = || Error::transient("Prometheus http://p: connection refused");
        let cases: Vec<(CheckProbe, Option<(Severity, &str)>)> = vec![
            // It answers: nothing, whether the value is good or bad now.
            (probe("us-west-2", Fail, ok, Values(vec![0.001])), None),
            (probe("us-west-2", Fail, ok, Values(vec![0.5])), None),
            (
                {
                    // Several series: fine for a condition over the list...
                    let mut p = probe(
                        "us-west-2",
                        Fail,
                        "all(result, # < 0.01)",
                        Values(vec![0.0, 0.1]),
                    );
                    p.check.failure = None;
                    p
                },
                None,
            ),
            (
                // ... not for the example's failure condition, which compares a number.
                probe(
                    "us-west-2",
                    Fail,
                    "all(result, # < 0.01)",
                    Values(vec![0.0, 0.1]),
                ),
                Some((
                    Severity::Error,
                    "cannot be evaluated on what the query returns now ([0, 0.1])",
                )),
            ),
            // It cannot be measured.
            (
                probe("us-east-1", Fail, ok, ProbeAnswer::of(Err(transient()))),
                Some((
                    Severity::Error,
                    "check/5xx-ratio on us-east-1: cannot be measured now: http://prometheus.monitoring:9090 does not answer (Prometheus http://p: connection refused); every soak would count errors and halt after 5 in a row",
                )),
            ),
            (
                probe(
                    "us-east-1",
                    Fail,
                    ok,
                    Unreachable("no answer within 30s".into()),
                ),
                Some((Severity::Error, "does not answer (no answer within 30s)")),
            ),
            (
                probe(
                    "eu-west-1",
                    Fail,
                    ok,
                    ProbeAnswer::of(Err(Error::invalid(
                        "Prometheus http://p: bad_data: 1:5: parse error",
                    ))),
                ),
                Some((
                    Severity::Error,
                    "check/5xx-ratio on eu-west-1: the query is rejected by http://prometheus.monitoring:9090 (Prometheus http://p: bad_data: 1:5: parse error); fix `query` of 5xx-ratio in [[environments.prod.checks]]",
                )),
            ),
            (
                probe(
                    "eu-west-1",
                    Fail,
                    ok,
                    ProbeAnswer::of(Err(Error::Permission {
                        message: "HTTP 403".into(),
                    })),
                ),
                Some((
                    Severity::Error,
                    "the credentials may not read http://prometheus.monitoring:9090 (HTTP 403)",
                )),
            ),
            (
                probe("eu-west-1", Fail, ok, Denied("HTTP 401".into())),
                Some((Severity::Error, "(HTTP 401); grant them")),
            ),
            (
                probe("eu-west-1", Fail, ok, Rejected("x".into())),
                Some((Severity::Error, "the query is rejected")),
            ),
            // No data: a hollow check with "pass", a halting one otherwise.
            (
                probe("us-west-2", Pass, ok, Values(vec![])),
                Some((
                    Severity::Warning,
                    "no data now, and no_data = \"pass\" counts that as a success",
                )),
            ),
            (
                probe("us-west-2", Fail, ok, Values(vec![])),
                Some((
                    Severity::Warning,
                    "no data now, and no_data = \"fail\": every soak would halt",
                )),
            ),
            (
                probe("us-west-2", Inconclusive, ok, Values(vec![])),
                Some((
                    Severity::Warning,
                    "no_data = \"inconclusive\": every soak would halt",
                )),
            ),
            // Conditions that cannot be evaluated on what it returns now.
            (
                probe("us-west-2", Fail, "result[1] < 0.01", Values(vec![0.0])),
                Some((
                    Severity::Error,
                    "its conditions cannot be evaluated on what the query returns now (0)",
                )),
            ),
            (
                probe("us-west-2", Fail, "result < 0.01", Values(vec![0.0, 0.1])),
                Some((
                    Severity::Error,
                    "(`result` is a number for one series, a list otherwise)",
                )),
            ),
        ];
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        for (p, want) in cases {
            let got = check_findings(prod, std::slice::from_ref(&p));
            match (got.as_slice(), want) {
                ([], None) => {}
                ([f], Some((severity, text))) => {
                    let line = format!("{}: {}", f.subject, f.message);
                    assert!(
                        f.severity == severity && line.contains(text) && f.environment == "prod",
                        "{:?}: got {:?} {line}, want {severity:?} …{text}…",
                        p.answer,
                        f.severity
                    );
                }
                (got, want) => panic!("{:?}: got {got:#?}, want {want:?}", p.answer),
            }
        }
        // findings() includes them.
        let mut input = healthy_input(&config, prod);
        input.checks = vec![probe("us-west-2", Fail, ok, Unreachable("down".into()))];
        let all = findings(&config, prod, &input);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(all[0].subject, "check/5xx-ratio on us-west-2");
    }

    #[test]
    fn severity_displays_as_in_json() {
        for (severity, expect) in [(Severity::Warning, "warning"), (Severity::Error, "error")] {
            assert_eq!(severity.to_string(), expect);
            assert_eq!(serde_json::to_value(severity).unwrap(), expect);
        }
    }
}
