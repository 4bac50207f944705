//! `deploy.toml`: parsing and validation into the domain's clusters, services and environments.
//!
//! Parsing takes the file's text (the caller reads the file); every error names the
//! file, line and column and says how to fix it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::check::{Condition, NoData, ResolvedCheck, Scope};
use crate::model::{RepoLocation, SyncMode};
use crate::port::MetricSource;

/// A configuration error at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file's path as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A cluster Argo CD deploys to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Name; also the `{cluster}` placeholder and the Argo CD cluster name.
    pub name: String,
    /// AWS region it runs in.
    pub region: String,
}

/// A service: one image per release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Name.
    pub name: String,
    /// ECR repository, without the environment's prefix.
    pub repository: String,
    /// Pushed last by CI; watched for new tags.
    pub sentinel: bool,
}

/// How the release is written into an Application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOverride {
    /// A Helm parameter holding the tag.
    Helm {
        /// Parameter name, e.g. `image.tag`.
        parameter: String,
    },
    /// `spec.source.kustomize.images`, one entry per service.
    Kustomize,
}

/// What the image override names: the release's tag, or the digest of each service image
/// the prod gate proved (`pin = "digest"` on `image_override`), so that a tag re-pushed after
/// the gate cannot put other bytes in the clusters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pin {
    /// The tag (the default).
    #[default]
    Tag,
    /// The release's digest of each service. Kustomize writes `name:tag@sha256:…` per
    /// service; Helm writes the tag to `parameter` and each digest to its own parameter.
    Digest {
        /// Helm only: service → the parameter holding its digest (`digest_parameter` with
        /// `{service}` filled in); empty for Kustomize.
        helm_parameters: BTreeMap<String, String>,
    },
}

impl Pin {
    /// True for [`Pin::Digest`].
    pub fn is_digest(&self) -> bool {
        matches!(self, Self::Digest { .. })
    }
}

/// `image_override` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageOverride {
    kind: Spanned<RawOverrideKind>,
    parameter: Option<Spanned<String>>,
    pin: Option<Spanned<RawPin>>,
    digest_parameter: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawOverrideKind {
    Helm,
    Kustomize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawPin {
    Tag,
    Digest,
}

impl RawImageOverride {
    /// The override and its pin; `services` fill the Helm digest parameter template.
    fn validate(
        &self,
        span: Range<usize>,
        services: &[Service],
    ) -> Result<(ImageOverride, Pin), Invalid> {
        let digest = self
            .pin
            .as_ref()
            .is_some_and(|p| *p.get_ref() == RawPin::Digest);
        match *self.kind.get_ref() {
            RawOverrideKind::Kustomize => {
                if let Some(p) = &self.parameter {
                    return Err((
                        p.span(),
                        "image_override.parameter is for kind = \"helm\"; a Kustomize override \
                         writes spec.source.kustomize.images and takes no parameter: remove it"
                            .into(),
                    ));
                }
                if let Some(p) = &self.digest_parameter {
                    return Err((
                        p.span(),
                        "image_override.digest_parameter is for kind = \"helm\"; with \
                         kind = \"kustomize\", pin = \"digest\" writes each image as \
                         name:tag@sha256:…: remove it"
                            .into(),
                    ));
                }
                let pin = if digest {
                    Pin::Digest {
                        helm_parameters: BTreeMap::new(),
                    }
                } else {
                    Pin::Tag
                };
                Ok((ImageOverride::Kustomize, pin))
            }
            RawOverrideKind::Helm => {
                let Some(parameter) = &self.parameter else {
                    return Err((
                        span,
                        "image_override with kind = \"helm\" needs parameter, the Helm \
                         parameter holding the tag, e.g. parameter = \"image.tag\""
                            .into(),
                    ));
                };
                if parameter.get_ref().trim().is_empty() {
                    return Err((
                        parameter.span(),
                        "image_override.parameter cannot be empty".into(),
                    ));
                }
                let pin = match (&self.digest_parameter, digest) {
                    (Some(d), false) => {
                        return Err((
                            d.span(),
                            "image_override.digest_parameter is only used with pin = \"digest\": \
                             add pin = \"digest\" to write the digests, or remove digest_parameter"
                                .into(),
                        ));
                    }
                    (None, true) => {
                        return Err((
                            self.pin.as_ref().map_or(span, Spanned::span),
                            "pin = \"digest\" with kind = \"helm\" needs digest_parameter, the \
                             parameter each service's digest goes to, e.g. \
                             digest_parameter = \"{service}.image.digest\""
                                .into(),
                        ));
                    }
                    (None, false) => Pin::Tag,
                    (Some(d), true) => {
                        let t = template(d, "image_override.digest_parameter", &["service"])?;
                        if services.len() > 1 && !t.contains("{service}") {
                            return Err((
                                d.span(),
                                format!(
                                    "image_override.digest_parameter {t:?} must contain {{service}}: \
                                     there are {} services and each digest needs its own \
                                     parameter, e.g. \"{{service}}.image.digest\"",
                                    services.len()
                                ),
                            ));
                        }
                        if t == parameter.get_ref().trim() {
                            return Err((
                                d.span(),
                                format!(
                                    "image_override.digest_parameter {t:?} is the tag's parameter; \
                                     name another, e.g. \"{{service}}.image.digest\""
                                ),
                            ));
                        }
                        Pin::Digest {
                            helm_parameters: services
                                .iter()
                                .map(|s| (s.name.clone(), t.replace("{service}", &s.name)))
                                .collect(),
                        }
                    }
                };
                Ok((
                    ImageOverride::Helm {
                        parameter: parameter.get_ref().trim().to_owned(),
                    },
                    pin,
                ))
            }
        }
    }
}

/// How the newest tag is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TagStrategy {
    /// Most recently pushed; ties broken by the tag, highest first.
    #[default]
    Newest,
    /// Highest semantic version (a leading `v` is allowed); other tags are ignored.
    Semver,
    /// Highest tag in byte order.
    Lexical,
}

/// Which tags count as releases and how to pick the newest.
#[derive(Debug, Clone, Default)]
pub struct TagPolicy {
    /// Strategy.
    pub strategy: TagStrategy,
    /// Only tags matching this.
    pub allow: Option<Regex>,
    /// Never tags matching this.
    pub ignore: Option<Regex>,
}

impl TagPolicy {
    /// Whether `tag` passes the allow and ignore patterns.
    pub fn admits(&self, tag: &str) -> bool {
        self.allow.as_ref().is_none_or(|r| r.is_match(tag))
            && !self.ignore.as_ref().is_some_and(|r| r.is_match(tag))
    }
}

impl PartialEq for TagPolicy {
    fn eq(&self, other: &Self) -> bool {
        let src = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_owned());
        self.strategy == other.strategy
            && src(&self.allow) == src(&other.allow)
            && src(&self.ignore) == src(&other.ignore)
    }
}

/// An environment's image registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// AWS account id.
    pub account: String,
    /// Regions holding a copy of every image; the first is the primary.
    pub regions: Vec<String>,
    /// Prefix before every repository name, e.g. `staging/`.
    pub repository_prefix: String,
    /// AWS profile to reach it with.
    pub aws_profile: Option<String>,
}

/// A deployment environment (debug, staging, prod).
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// Name.
    pub name: String,
    /// Branch whose pushes build releases for this environment.
    pub branch: Option<String>,
    /// Where its images live.
    pub registry: RegistryConfig,
    /// Automated or manual sync.
    pub sync: SyncMode,
    /// Sync with prune.
    pub prune: bool,
    /// Application name template.
    pub application: String,
    /// ApplicationSet name.
    pub application_set: Option<String>,
    /// How the release is written into the Applications.
    pub image_override: ImageOverride,
    /// Whether the override names the tag or the digests.
    pub pin: Pin,
    /// Tag selection.
    pub tags: TagPolicy,
    /// Environment whose live release is promoted here.
    pub promote_from: Option<String>,
    /// Clusters by wave.
    pub waves: Vec<Vec<String>>,
    /// How long to watch health after a wave.
    pub soak: Duration,
    /// Per-wave limit.
    pub timeout: Duration,
    /// Where promotions and rollbacks of it are announced.
    pub notify: Vec<NotifyTarget>,
    /// Where the lock and the audit trail live; `None`: today's places (the lock in Argo CD
    /// or a Lease, the audit trail in a file on this machine).
    pub state: Option<StateConfig>,
    /// Metric checks evaluated per cluster during each wave's soak.
    pub checks: Vec<Check>,
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

/// Where notifications go. Secrets are named by environment variable, never held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A Slack incoming webhook (or a Slack-compatible one, e.g. Mattermost).
    Slack {
        /// Where its URL comes from.
        url: SlackUrl,
    },
    /// A generic webhook: the engine's JSON events, signed with HMAC-SHA256.
    Webhook {
        /// The URL (not a secret: the signature is what the receiver trusts).
        url: String,
        /// The environment variable holding the signing secret.
        secret_env: String,
    },
}

/// The URL of a Slack webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackUrl {
    /// Written in the file: only a URL that is not a secret (a relay, a local server);
    /// `hooks.slack.com/services/...` URLs are rejected.
    Literal(String),
    /// Read from this environment variable when a promotion starts.
    Env(String),
}

/// An environment's shared state store (`state = { s3 = "s3://bucket/prefix", ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The bucket and prefix holding the lock and the audit records; `None` when `state`
    /// only chooses the lock backend.
    pub s3: Option<S3Location>,
    /// The bucket's region (else the profile's or the environment's).
    pub region: Option<String>,
    /// The AWS profile to reach it with (else the default chain).
    pub aws_profile: Option<String>,
    /// Where the promotion lock lives.
    pub lock: LockBackend,
}

/// `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing '/' (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// The key of `name` under the prefix and `environment`: `{prefix}/{environment}/{name}`.
    pub fn key(&self, environment: &str, name: &str) -> String {
        if self.prefix.is_empty() {
            format!("{environment}/{name}")
        } else {
            format!("{}/{environment}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where an environment's promotion lock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockBackend {
    /// An object in the state bucket, taken with conditional writes.
    S3,
    /// A `coordination.k8s.io` Lease in the Argo CD namespace.
    Kubernetes,
    /// An annotation on the environment's first Application.
    Argocd,
}

/// The Argo CD connection settings (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgoCdConfig {
    /// Server: host, host:port or URL.
    pub server: Option<String>,
    /// No TLS.
    pub plaintext: bool,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Namespace of the Application objects.
    pub namespace: String,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Application name (`{app}`).
    pub app: String,
    /// Argo CD.
    pub argocd: ArgoCdConfig,
    /// Clusters, in file order.
    pub clusters: Vec<Cluster>,
    /// Services, in file order.
    pub services: Vec<Service>,
    /// Environments by name.
    pub environments: BTreeMap<String, Environment>,
}

impl Config {
    /// Parses and validates `text`, read from `file` (used in messages only).
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ConfigError {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| at(e.span(), explain_toml_error(e.message())))?;
        raw.validate()
            .map_err(|(span, message)| at(Some(span), message))
    }

    /// The environment `name`, or an error listing the known ones.
    pub fn environment(&self, name: &str) -> Result<&Environment, String> {
        self.environments.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            format!(
                "no environment {name:?} in the configuration; known: {}",
                known.join(", ")
            )
        })
    }

    /// `only` (if given) or every environment, sources first.
    pub fn select_environments(&self, only: Option<&str>) -> Result<Vec<&Environment>, String> {
        match only {
            Some(name) => Ok(vec![self.environment(name)?]),
            None => Ok(self.environments_in_order()),
        }
    }

    /// The cluster `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The sentinel service.
    pub fn sentinel(&self) -> &Service {
        self.services
            .iter()
            .find(|s| s.sentinel)
            .expect("validated: exactly one sentinel")
    }

    /// Environments with sources before the environments promoted from them, then by name.
    pub fn environments_in_order<'a>(&'a self) -> Vec<&'a Environment> {
        let depth = |mut e: &'a Environment| {
            let mut d = 0;
            while let Some(src) = e
                .promote_from
                .as_deref()
                .and_then(|s| self.environments.get(s))
            {
                d += 1;
                e = src;
            }
            d
        };
        let mut envs: Vec<&Environment> = self.environments.values().collect();
        envs.sort_by_key(|e| (depth(e), e.name.clone()));
        envs
    }

    /// The Application name of `env` on `cluster`.
    pub fn application_name(&self, env: &Environment, cluster: &Cluster) -> String {
        expand(&env.application, &self.app, &env.name, Some(cluster))
    }

    /// The ApplicationSet name of `env`, if configured.
    pub fn application_set_name(&self, env: &Environment) -> Option<String> {
        env.application_set
            .as_deref()
            .map(|t| expand(t, &self.app, &env.name, None))
    }
}

impl Environment {
    /// Where `service`'s image lives in `region`.
    pub fn location(&self, service: &Service, region: &str) -> RepoLocation {
        RepoLocation {
            account: self.registry.account.clone(),
            region: region.to_owned(),
            repository: format!("{}{}", self.registry.repository_prefix, service.repository),
        }
    }

    /// The region `cluster` pulls from: its own when listed, else the first.
    pub fn pull_region<'a>(&'a self, cluster: &'a Cluster) -> &'a str {
        if self.registry.regions.contains(&cluster.region) {
            &cluster.region
        } else {
            &self.registry.regions[0]
        }
    }

    /// The image names (without tag) `cluster` runs, one per service, in service order.
    pub fn image_names(&self, services: &[Service], cluster: &Cluster) -> Vec<String> {
        services
            .iter()
            .map(|s| self.location(s, self.pull_region(cluster)).image_name())
            .collect()
    }
}

fn expand(template: &str, app: &str, env: &str, cluster: Option<&Cluster>) -> String {
    let mut out = template.replace("{app}", app).replace("{env}", env);
    if let Some(c) = cluster {
        out = out
            .replace("{cluster}", &c.name)
            .replace("{region}", &c.region);
    }
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

const SECRET_WORDS: [&str; 6] = ["token", "secret", "password", "credential", "auth", "key"];

/// Adds the fix to serde's message; an unknown secret-looking key gets its own explanation.
fn explain_toml_error(message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let lower = field.to_ascii_lowercase();
        if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
            return format!(
                "`{field}` looks like a secret, and secrets never live in deploy.toml; remove it and \
                 set ARGOCD_AUTH_TOKEN for Argo CD, use the AWS credential chain (profiles, SSO, OIDC) for ECR, \
                 or name an environment variable with `secret_env` or `slack_env` for a notification"
            );
        }
        return format!("{message}; remove or rename the key");
    }
    message.to_owned()
}

// ---------------------------------------------------------------- raw file shape

type Span = Range<usize>;
type Invalid = (Span, String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app: Spanned<String>,
    #[serde(default)]
    argocd: RawArgoCd,
    #[serde(default)]
    clusters: Vec<Spanned<RawCluster>>,
    #[serde(default)]
    services: Vec<Spanned<RawService>>,
    #[serde(default)]
    environments: BTreeMap<Spanned<String>, Spanned<RawEnvironment>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawArgoCd {
    server: Option<String>,
    #[serde(default)]
    plaintext: bool,
    #[serde(default)]
    insecure: bool,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    region: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    repository: Spanned<String>,
    #[serde(default)]
    sentinel: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    account: Spanned<String>,
    regions: Spanned<Vec<Spanned<String>>>,
    repository_prefix: Option<Spanned<String>>,
    aws_profile: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawSync {
    Automated,
    Manual,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTags {
    #[serde(default)]
    strategy: TagStrategy,
    allow: Option<Spanned<String>>,
    ignore: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    branch: Option<String>,
    registry: RawRegistry,
    sync: RawSync,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    self_heal: Option<bool>,
    application: Spanned<String>,
    application_set: Option<Spanned<String>>,
    image_override: Spanned<RawImageOverride>,
    #[serde(default)]
    tags: RawTags,
    promote_from: Option<Spanned<String>>,
    waves: Option<Spanned<Vec<Vec<Spanned<String>>>>>,
    soak: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<RawNotify>>,
    state: Option<Spanned<RawState>>,
    #[serde(default)]
    checks: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    prometheus: Option<Spanned<RawPrometheus>>,
    cloudwatch_alarms: Option<Spanned<RawAlarms>>,
    query: Option<Spanned<String>>,
    success: Option<Spanned<String>>,
    failure: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    initial_delay: Option<Spanned<String>>,
    count: Option<Spanned<u32>>,
    #[serde(default)]
    failure_limit: u32,
    #[serde(default)]
    inconclusive_limit: u32,
    consecutive_error_limit: Option<u32>,
    #[serde(default)]
    no_data: NoData,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: Spanned<String>,
    #[serde(default)]
    sigv4: bool,
    region: Option<Spanned<String>>,
    aws_profile: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarms {
    names: Spanned<Vec<Spanned<String>>>,
    region: Option<Spanned<String>>,
    aws_profile: Option<String>,
}

/// The default success condition of `cloudwatch_alarms`: every alarm is not in ALARM.
/// `result` is the one value of a single alarm, the list of several.
pub const ALARMS_SUCCESS: &str = "all(result, # == 0)";
/// [`ALARMS_SUCCESS`] for a check of one alarm.
pub const ALARM_SUCCESS: &str = "result == 0";

impl RawCheck {
    fn validate(&self, span: Range<usize>) -> Result<Check, Invalid> {
        let name = nonempty(&self.name, "check name")?;
        let what = |key: &str| format!("check {name:?}: {key}");
        let tpl = |s: &Spanned<String>, key: &str| check_template(s, &what(key));
        let profile = |p: &Option<String>| p.clone().filter(|p| !p.trim().is_empty());
        let (source, query, default_success) = match (&self.prometheus, &self.cloudwatch_alarms) {
            (Some(p), None) => {
                let raw = p.get_ref();
                let Some(q) = &self.query else {
                    return Err((
                        span,
                        format!("check {name:?} needs query = \"…\" (a PromQL instant query)"),
                    ));
                };
                let region = raw
                    .region
                    .as_ref()
                    .map(|r| tpl(r, "prometheus.region"))
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
                (
                    MetricSource::Prometheus {
                        url: tpl(&raw.url, "prometheus.url")?,
                        sigv4: raw.sigv4,
                        region,
                        aws_profile: profile(&raw.aws_profile),
                    },
                    tpl(q, "query")?,
                    None,
                )
            }
            (None, Some(a)) => {
                let raw = a.get_ref();
                if let Some(q) = &self.query {
                    return Err((
                        q.span(),
                        format!(
                            "check {name:?}: query is for prometheus; cloudwatch_alarms reads the alarms named in names"
                        ),
                    ));
                }
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
                    .map(|n| tpl(n, "cloudwatch_alarms.names"))
                    .collect::<Result<_, _>>()?;
                let default_success = if names.len() == 1 {
                    ALARM_SUCCESS
                } else {
                    ALARMS_SUCCESS
                };
                let region = match &raw.region {
                    Some(r) => tpl(r, "cloudwatch_alarms.region")?,
                    None => "{region}".to_owned(),
                };
                (
                    MetricSource::CloudWatchAlarms {
                        names,
                        region,
                        aws_profile: profile(&raw.aws_profile),
                    },
                    String::new(),
                    Some(default_success),
                )
            }
            _ => {
                return Err((
                    span,
                    format!(
                        "check {name:?} needs exactly one of prometheus = {{ url = \"…\" }} or cloudwatch_alarms = {{ names = [\"…\"] }}"
                    ),
                ));
            }
        };
        let condition = |s: &Spanned<String>, key: &str| {
            Condition::parse(s.get_ref()).map_err(|e| {
                (
                    s.span(),
                    format!(
                        "check {name:?}: {key} {:?} is not a valid expression: {e}; write e.g. \"result < 0.01\"",
                        s.get_ref()
                    ),
                )
            })
        };
        let success = match (&self.success, default_success) {
            (Some(s), _) => condition(s, "success")?,
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
            .map(|f| condition(f, "failure"))
            .transpose()?;
        let interval = duration(&self.interval, Duration::from_secs(30), &what("interval"))?;
        if interval < Duration::from_secs(1) {
            return Err((
                self.interval.as_ref().map_or(0..0, Spanned::span),
                format!("check {name:?}: interval is at least 1s"),
            ));
        }
        if interval > MAX_CHECK_INTERVAL {
            return Err((
                self.interval.as_ref().map_or(0..0, Spanned::span),
                format!(
                    "check {name:?}: interval is at most 1h, so that a wave is never unwatched for longer \
                     (and a check without count lengthens the soak by less than an interval); write e.g. \"30s\""
                ),
            ));
        }
        let initial_delay = duration(&self.initial_delay, Duration::ZERO, &what("initial_delay"))?;
        if initial_delay > MAX_DURATION {
            return Err((
                self.initial_delay.as_ref().map_or(0..0, Spanned::span),
                format!("check {name:?}: initial_delay is at most 24h, as soak is"),
            ));
        }
        if let Some(c) = &self.count {
            let n = *c.get_ref();
            if n == 0 {
                return Err((
                    c.span(),
                    format!(
                        "check {name:?}: count must be at least 1 (omit it to measure until the soak ends)"
                    ),
                ));
            }
            if n > MAX_CHECK_COUNT {
                return Err((
                    c.span(),
                    format!(
                        "check {name:?}: count {n} is more than {MAX_CHECK_COUNT}, one measurement a second \
                         for 24h, the longest a check may make a soak last; omit count to measure until \
                         the soak ends"
                    ),
                ));
            }
            // As the engine measures (`check::least_soak`): the first after `initial_delay`,
            // then `count - 1` more, `interval` apart. The soak lasts at least that long.
            let lasts = initial_delay + interval * (n - 1);
            if lasts > MAX_DURATION {
                return Err((
                    c.span(),
                    format!(
                        "check {name:?}: initial_delay + (count - 1) × interval = {} + {} × {} is {}, \
                         and a check may make a soak last at most 24h, as soak is; lower count or interval",
                        humantime::format_duration(initial_delay),
                        n - 1,
                        humantime::format_duration(interval),
                        humantime::format_duration(lasts),
                    ),
                ));
            }
        }
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
}

/// A check's url, query, alarm name or region: `{word}` is a placeholder and must be a known
/// one; any other brace (PromQL's label matchers) is the text's own.
fn check_template(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let t = nonempty(s, what)?;
    let words = Regex::new(r"\{([a-z_]+)\}").expect("a valid regex");
    if let Some(unknown) = words
        .captures_iter(&t)
        .map(|c| c[1].to_owned())
        .find(|w| !crate::check::PLACEHOLDERS.contains(&w.as_str()))
    {
        let list: Vec<String> = crate::check::PLACEHOLDERS
            .iter()
            .map(|a| format!("{{{a}}}"))
            .collect();
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

/// One `notify` entry: exactly one of `slack`, `slack_env`, `webhook`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    slack: Option<Spanned<String>>,
    slack_env: Option<Spanned<String>>,
    webhook: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
}

/// The part of a Slack incoming-webhook URL that makes it a credential.
const SLACK_SECRET_URL: &str = "hooks.slack.com/services/";

/// Whether `url` (`scheme://…`) has a user name or password before its host.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

impl RawNotify {
    fn validate(&self, span: Span) -> Result<NotifyTarget, Invalid> {
        let url = |s: &Spanned<String>, what: &str| -> Result<String, Invalid> {
            let v = nonempty(s, what)?;
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                return Err((
                    s.span(),
                    format!("notify {what} {v:?} is not a URL; write it as https://host/path"),
                ));
            }
            if has_userinfo(&v) {
                return Err((
                    s.span(),
                    format!(
                        "notify {what} URL carries a user name or password (`user:password@`): \
                         a notify URL is printed in logs and JSON lines, and secrets never live \
                         in deploy.toml; drop it from the URL and let the receiver check the \
                         signature (`secret_env`), or put the whole URL in an environment \
                         variable with `slack_env`"
                    ),
                ));
            }
            if v.contains(SLACK_SECRET_URL) {
                return Err((
                    s.span(),
                    format!(
                        "notify {what} is a Slack webhook URL, which is a secret, and secrets never \
                         live in deploy.toml; put it in an environment variable and write \
                         `{{ slack_env = \"DEPLOY_SLACK_WEBHOOK\" }}`"
                    ),
                ));
            }
            Ok(v)
        };
        let var = |s: &Spanned<String>, what: &str| -> Result<String, Invalid> {
            let v = nonempty(s, what)?;
            let ok = v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err((
                    s.span(),
                    format!(
                        "notify {what} {v:?} is not an environment variable name; name the variable \
                         that holds the secret, e.g. \"DEPLOY_SLACK_WEBHOOK\""
                    ),
                ));
            }
            Ok(v)
        };
        match (&self.slack, &self.slack_env, &self.webhook) {
            (Some(s), None, None) => {
                self.no_secret_env()?;
                Ok(NotifyTarget::Slack {
                    url: SlackUrl::Literal(url(s, "slack")?),
                })
            }
            (None, Some(e), None) => {
                self.no_secret_env()?;
                Ok(NotifyTarget::Slack {
                    url: SlackUrl::Env(var(e, "slack_env")?),
                })
            }
            (None, None, Some(w)) => {
                let url = url(w, "webhook")?;
                let Some(secret) = &self.secret_env else {
                    return Err((
                        w.span(),
                        "a notify webhook needs `secret_env`, the environment variable holding \
                         the secret its HMAC-SHA256 signature is made with"
                            .into(),
                    ));
                };
                Ok(NotifyTarget::Webhook {
                    url,
                    secret_env: var(secret, "secret_env")?,
                })
            }
            _ => Err((
                span,
                "each notify entry has exactly one of `slack`, `slack_env` or `webhook`".into(),
            )),
        }
    }

    fn no_secret_env(&self) -> Result<(), Invalid> {
        match &self.secret_env {
            Some(s) => Err((
                s.span(),
                "`secret_env` signs a `webhook` only; a Slack webhook is not signed".into(),
            )),
            None => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    s3: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    aws_profile: Option<String>,
    lock: Option<LockBackend>,
}

impl RawState {
    fn validate(&self, span: Range<usize>) -> Result<StateConfig, Invalid> {
        let s3 = self.s3.as_ref().map(s3_location).transpose()?;
        let lock = match (self.lock, &s3) {
            (Some(LockBackend::S3), None) => {
                return Err((
                    span,
                    "state.lock = \"s3\" needs state.s3 = \"s3://bucket/prefix\"".into(),
                ));
            }
            (Some(lock), _) => lock,
            (None, Some(_)) => LockBackend::S3,
            (None, None) => {
                return Err((
                    span,
                    "state needs s3 = \"s3://bucket/prefix\" (or lock = \"kubernetes\" | \"argocd\")"
                        .into(),
                ));
            }
        };
        let region = self
            .region
            .as_ref()
            .map(|r| nonempty(r, "state.region"))
            .transpose()?;
        Ok(StateConfig {
            s3,
            region,
            aws_profile: self.aws_profile.clone().filter(|p| !p.trim().is_empty()),
            lock,
        })
    }
}

/// Parses `s3://bucket/prefix`, checking the bucket against S3's naming rules.
fn s3_location(s: &Spanned<String>) -> Result<S3Location, Invalid> {
    let v = s.get_ref().trim();
    let err = |why: String| {
        Err((
            s.span(),
            format!("state.s3 {v:?} {why}; write it as \"s3://bucket/prefix\""),
        ))
    };
    let Some(rest) = v.strip_prefix("s3://") else {
        return err("is not an s3:// URL".into());
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        || !alnum(bucket.chars().next())
        || !alnum(bucket.chars().last())
    {
        return err(format!(
            "names bucket {bucket:?}, which is not a valid S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|p| p.is_empty() && !prefix.is_empty())
    {
        return err("has an empty path segment ('//')".into());
    }
    Ok(S3Location {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// The longest soak, wave timeout, check `initial_delay`, or time a check's measurements take.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The longest check `interval`: a wave is never unwatched by a check for longer, and a check
/// without `count` (which measures until the first tick at or after the soak's end) lengthens
/// the soak by less than this.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// The most measurements a check's `count` asks for: one a second (the shortest `interval`)
/// for 24h (the longest a check may make a soak last). Any more could not fit in that time;
/// checking it first names `count` itself in the error, not the product.
const MAX_CHECK_COUNT: u32 = 24 * 3600;

fn nonempty(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let v = s.get_ref().trim();
    if v.is_empty() {
        return Err((s.span(), format!("{what} cannot be empty")));
    }
    Ok(v.to_owned())
}

/// The longest Kubernetes object name (`metadata.name`, a DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;

/// Why `name` is not a valid Kubernetes object name, or `None` when it is.
///
/// Argo CD Applications and ApplicationSets are Kubernetes objects, so their names must be
/// DNS-1123 subdomains, as the API server checks `metadata.name`: lowercase letters, digits,
/// '-' and '.', each dot-separated part starting and ending with a letter or digit, at most
/// 253 characters. Argo CD's label-based resource tracking (`app.kubernetes.io/instance`)
/// further needs an Application name of at most 63 characters; annotation tracking, the
/// default since Argo CD 3.0, does not. A cluster or environment name goes into these names
/// and into Kubernetes API paths, which kube does not escape, so it is held to the same rule.
pub fn object_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "it is {} characters long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Some(if c.is_ascii_uppercase() {
            format!("{c:?} is uppercase")
        } else {
            format!("{c:?} is not allowed")
        });
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name
        .split('.')
        .any(|part| !alnum(part.chars().next()) || !alnum(part.chars().last()))
    {
        return Some(
            "it (or a part between dots) does not start and end with a letter or digit".into(),
        );
    }
    None
}

/// The rule of [`object_name_error`] in words, for messages.
const OBJECT_NAME_RULE: &str = "use lowercase letters, digits, '-' and '.', starting and ending \
with a letter or digit, at most 253 characters (a Kubernetes object name)";

fn object_name(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let v = nonempty(s, what)?;
    match object_name_error(&v) {
        None => Ok(v),
        Some(why) => Err((
            s.span(),
            format!("{what} {v:?} is not a valid Kubernetes name: {why}; {OBJECT_NAME_RULE}"),
        )),
    }
}

fn unique<'a>(items: impl Iterator<Item = &'a Spanned<String>>, what: &str) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for item in items {
        if !seen.insert(item.get_ref().as_str()) {
            return Err((
                item.span(),
                format!(
                    "{what} {:?} is defined twice; names must be unique",
                    item.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

fn duration(
    s: &Option<Spanned<String>>,
    default: Duration,
    what: &str,
) -> Result<Duration, Invalid> {
    match s {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s.get_ref()).map_err(|e| {
            (
                s.span(),
                format!(
                    "{what} {:?} is not a duration ({e}); write e.g. \"90s\", \"5m\" or \"1h 30m\"",
                    s.get_ref()
                ),
            )
        }),
    }
}

fn regex(s: &Option<Spanned<String>>, what: &str) -> Result<Option<Regex>, Invalid> {
    s.as_ref()
        .map(|s| {
            Regex::new(s.get_ref()).map_err(|e| {
                (
                    s.span(),
                    format!("{what} is not a valid regular expression: {e}"),
                )
            })
        })
        .transpose()
}

fn template(s: &Spanned<String>, what: &str, allowed: &[&str]) -> Result<String, Invalid> {
    let t = nonempty(s, what)?;
    let mut rest = t.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err((s.span(), format!("{what} {t:?} has a '{{' without '}}'")));
        };
        let name = &rest[open + 1..open + close];
        if !allowed.contains(&name) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            return Err((
                s.span(),
                format!(
                    "{what} {t:?} uses unknown placeholder {{{name}}}; use {}",
                    list.join(" ")
                ),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(t)
}

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        let app = nonempty(&self.app, "app")?;
        if self.clusters.is_empty() {
            return Err((
                0..0,
                "no [[clusters]]: add at least one with name and region".into(),
            ));
        }
        if self.services.is_empty() {
            return Err((
                0..0,
                "no [[services]]: add at least one with name and repository".into(),
            ));
        }
        unique(self.clusters.iter().map(|c| &c.get_ref().name), "cluster")?;
        unique(self.services.iter().map(|s| &s.get_ref().name), "service")?;
        let clusters = self
            .clusters
            .iter()
            .map(|c| {
                let c = c.get_ref();
                Ok(Cluster {
                    name: object_name(&c.name, "cluster name")?,
                    region: nonempty(&c.region, "cluster region")?,
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        let services = self
            .services
            .iter()
            .map(|s| {
                let r = s.get_ref();
                Ok(Service {
                    name: nonempty(&r.name, "service name")?,
                    repository: nonempty(&r.repository, "service repository")?,
                    sentinel: r.sentinel,
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        let sentinels: Vec<_> = self
            .services
            .iter()
            .filter(|s| s.get_ref().sentinel)
            .collect();
        match sentinels.as_slice() {
            [_] => {}
            [] => {
                return Err((
                    self.services[0].span(),
                    "no service has `sentinel = true`; mark exactly one (the image CI pushes last)"
                        .into(),
                ));
            }
            [_, second, ..] => {
                return Err((
                    second.span(),
                    "more than one service has `sentinel = true`; keep exactly one".into(),
                ));
            }
        }
        if self.environments.is_empty() {
            return Err((0..0, "no [environments.NAME]: add at least one".into()));
        }
        let names: BTreeSet<&str> = self
            .environments
            .keys()
            .map(|k| k.get_ref().as_str())
            .collect();
        let mut environments = BTreeMap::new();
        for (name, env) in &self.environments {
            let e = env.get_ref();
            let env_name = object_name(name, "environment name")?;
            if let Some(src) = &e.promote_from {
                if src.get_ref() == &env_name {
                    return Err((
                        src.span(),
                        format!("environment {env_name:?} cannot promote from itself"),
                    ));
                }
                if !names.contains(src.get_ref().as_str()) {
                    return Err((
                        src.span(),
                        format!(
                            "promote_from = {:?} names no environment; known: {}",
                            src.get_ref(),
                            names.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            environments.insert(
                env_name.clone(),
                e.validate(&app, &env_name, &clusters, &services)?,
            );
        }
        // A promotion chain must end: no cycles through promote_from.
        for (name, env) in &self.environments {
            let mut seen = BTreeSet::from([name.get_ref().clone()]);
            let mut cur = env.get_ref();
            while let Some(src) = &cur.promote_from {
                if !seen.insert(src.get_ref().clone()) {
                    return Err((
                        src.span(),
                        format!("promote_from forms a cycle through {:?}", src.get_ref()),
                    ));
                }
                cur = self
                    .environments
                    .iter()
                    .find(|(k, _)| k.get_ref() == src.get_ref())
                    .map(|(_, v)| v.get_ref())
                    .expect("checked");
            }
        }
        let argocd = ArgoCdConfig {
            server: self.argocd.server.filter(|s| !s.trim().is_empty()),
            plaintext: self.argocd.plaintext,
            insecure: self.argocd.insecure,
            namespace: self.argocd.namespace.unwrap_or_else(|| "argocd".into()),
        };
        Ok(Config {
            app,
            argocd,
            clusters,
            services,
            environments,
        })
    }
}

impl RawEnvironment {
    fn validate(
        &self,
        app: &str,
        name: &str,
        clusters: &[Cluster],
        services: &[Service],
    ) -> Result<Environment, Invalid> {
        let reg = &self.registry;
        let account = reg.account.get_ref();
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                reg.account.span(),
                format!("registry account {account:?} must be a 12-digit AWS account id"),
            ));
        }
        if reg.regions.get_ref().is_empty() {
            return Err((
                reg.regions.span(),
                "registry regions cannot be empty; list at least one AWS region".into(),
            ));
        }
        unique(reg.regions.get_ref().iter(), "region")?;
        let regions = reg
            .regions
            .get_ref()
            .iter()
            .map(|r| nonempty(r, "region"))
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = reg
            .repository_prefix
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_default();
        if let Some(p) = reg
            .repository_prefix
            .as_ref()
            .filter(|p| p.get_ref().starts_with('/'))
        {
            return Err((p.span(), "repository_prefix cannot start with '/'".into()));
        }
        let application = template(
            &self.application,
            "application",
            &["app", "env", "cluster", "region"],
        )?;
        if !application.contains("{cluster}")
            && !application.contains("{region}")
            && clusters.len() > 1
        {
            return Err((
                self.application.span(),
                format!(
                    "application {application:?} must contain {{cluster}} (or {{region}}): there is one Application per cluster"
                ),
            ));
        }
        // Every cluster needs its own Application: `{region}` alone is not enough when two
        // clusters share a region.
        let mut names = BTreeSet::new();
        for c in clusters {
            let n = expand(&application, app, name, Some(c));
            if let Some(why) = object_name_error(&n) {
                return Err((
                    self.application.span(),
                    format!(
                        "application {application:?} names the Application of cluster {:?} {n:?}, \
                         which is not a valid Kubernetes name: {why}; {OBJECT_NAME_RULE}",
                        c.name
                    ),
                ));
            }
            if !names.insert(n.clone()) {
                return Err((
                    self.application.span(),
                    format!(
                        "application {application:?} gives two clusters the same name {n:?}; use {{cluster}}"
                    ),
                ));
            }
        }
        let application_set = self
            .application_set
            .as_ref()
            .map(|s| {
                let t = template(s, "application_set", &["app", "env"])?;
                let n = expand(&t, app, name, None);
                match object_name_error(&n) {
                    None => Ok(t),
                    Some(why) => Err((
                        s.span(),
                        format!(
                            "application_set {t:?} names the ApplicationSet {n:?}, which is not a \
                             valid Kubernetes name: {why}; {OBJECT_NAME_RULE}"
                        ),
                    )),
                }
            })
            .transpose()?;
        let (image_override, pin) = self
            .image_override
            .get_ref()
            .validate(self.image_override.span(), services)?;
        let waves = match &self.waves {
            None => clusters.iter().map(|c| vec![c.name.clone()]).collect(),
            Some(w) => {
                let mut seen = BTreeSet::new();
                for wave in w.get_ref() {
                    if wave.is_empty() {
                        return Err((w.span(), "a wave cannot be empty".into()));
                    }
                    for c in wave {
                        if !clusters.iter().any(|k| &k.name == c.get_ref()) {
                            let known: Vec<&str> =
                                clusters.iter().map(|k| k.name.as_str()).collect();
                            return Err((
                                c.span(),
                                format!(
                                    "wave names unknown cluster {:?}; known: {}",
                                    c.get_ref(),
                                    known.join(", ")
                                ),
                            ));
                        }
                        if !seen.insert(c.get_ref().clone()) {
                            return Err((
                                c.span(),
                                format!(
                                    "cluster {:?} is in more than one wave; list it once",
                                    c.get_ref()
                                ),
                            ));
                        }
                    }
                }
                if let Some(missing) = clusters.iter().find(|c| !seen.contains(&c.name)) {
                    return Err((
                        w.span(),
                        format!(
                            "waves do not include cluster {:?}; every cluster must be in exactly one wave",
                            missing.name
                        ),
                    ));
                }
                w.get_ref()
                    .iter()
                    .map(|wave| wave.iter().map(|c| c.get_ref().clone()).collect())
                    .collect()
            }
        };
        let sync = match self.sync {
            RawSync::Automated => SyncMode::Automated {
                prune: self.prune,
                self_heal: self.self_heal.unwrap_or(true),
            },
            RawSync::Manual => SyncMode::Manual,
        };
        let timeout = duration(&self.timeout, Duration::from_secs(15 * 60), "timeout")?;
        let timeout_span = self.timeout.as_ref().map_or(0..0, Spanned::span);
        if timeout.is_zero() {
            return Err((timeout_span, "timeout must be more than zero".into()));
        }
        if timeout > MAX_DURATION {
            return Err((
                timeout_span,
                "timeout is at most 24h per wave; a longer wave is a stuck one".into(),
            ));
        }
        let soak = duration(&self.soak, Duration::ZERO, "soak")?;
        if soak > MAX_DURATION {
            return Err((
                self.soak.as_ref().map_or(0..0, Spanned::span),
                "soak is at most 24h".into(),
            ));
        }
        Ok(Environment {
            name: name.to_owned(),
            branch: self.branch.clone(),
            registry: RegistryConfig {
                account: account.clone(),
                regions,
                repository_prefix: prefix,
                aws_profile: reg.aws_profile.clone(),
            },
            sync,
            prune: self.prune,
            application,
            application_set,
            image_override,
            pin,
            tags: TagPolicy {
                strategy: self.tags.strategy,
                allow: regex(&self.tags.allow, "tags.allow")?,
                ignore: regex(&self.tags.ignore, "tags.ignore")?,
            },
            promote_from: self.promote_from.as_ref().map(|s| s.get_ref().clone()),
            waves,
            soak,
            timeout,
            notify: self
                .notify
                .iter()
                .map(|n| n.get_ref().validate(n.span()))
                .collect::<Result<_, _>>()?,
            state: self
                .state
                .as_ref()
                .map(|st| st.get_ref().validate(st.span()))
                .transpose()?,
            checks: {
                unique(self.checks.iter().map(|c| &c.get_ref().name), "check")?;
                self.checks
                    .iter()
                    .map(|c| c.get_ref().validate(c.span()))
                    .collect::<Result<_, _>>()?
            },
        })
    }
}

impl fmt::Display for TagStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Newest => "newest",
            Self::Semver => "semver",
            Self::Lexical => "lexical",
        })
    }
}

/// The example configuration shipped in `examples/deploy.toml`, used by the demo and tests.
pub const EXAMPLE: &str = include_str!("../../examples/deploy.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        let c = Config::parse("examples/deploy.toml", EXAMPLE).unwrap();
        assert_eq!(c.clusters.len(), 3);
        assert_eq!(c.sentinel().name, "logserver");
        let prod = c.environment("prod").unwrap();
        assert_eq!(
            prod.waves,
            vec![
                vec!["us-west-2".to_string()],
                vec!["us-east-1".into(), "eu-west-1".into()]
            ]
        );
        assert_eq!(prod.soak, Duration::from_secs(300));
        assert_eq!(prod.sync, SyncMode::Manual);
        assert_eq!(
            c.application_name(prod, &c.clusters[2]),
            "myapp-prod-eu-west-1"
        );
        let staging = c.environment("staging").unwrap();
        assert_eq!(
            staging.image_names(&c.services, &c.clusters[1])[0],
            "111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/logserver"
        );
        let order: Vec<&str> = c
            .environments_in_order()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(order, ["debug", "staging", "prod"]);
    }

    /// Replaces `from` by `to` in the example and returns the error, as `line:col: message`.
    fn error_of(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "the example has no {from:?}");
        let mut text = EXAMPLE.replacen(from, to, 1);
        // Renaming an environment renames its checks' table too.
        let table = |s: &str| s.strip_prefix('[')?.strip_suffix(']').map(str::to_owned);
        if let (Some(f), Some(t)) = (table(from), table(to)) {
            text = text.replace(&format!("[[{f}.checks]]"), &format!("[[{t}.checks]]"));
        }
        let e = Config::parse("deploy.toml", &text).expect_err("must be rejected");
        format!("{}:{}: {}", e.line, e.column, e.message)
    }

    #[track_caller]
    fn check(from: &str, to: &str, expect: &str) {
        let got = error_of(from, to);
        assert!(
            got.contains(expect),
            "replacing {from:?} by {to:?}:\n got: {got}\nwant: …{expect}…"
        );
    }

    #[test]
    fn errors() {
        check(
            "app = \"myapp\"",
            "app = \"myapp\"\ncolour = 1",
            "unknown field `colour`",
        );
        check(
            "plaintext = false",
            "plaintext = false\ntoken = \"abc\"",
            "looks like a secret",
        );
        check(
            "namespace = \"argocd\"",
            "namespace = \"argocd\"\npassword = \"x\"",
            "ARGOCD_AUTH_TOKEN",
        );
        check(
            "sentinel = true",
            "sentinel = false",
            "no service has `sentinel = true`",
        );
        check(
            "repository = \"api\"",
            "repository = \"api\"\nsentinel = true",
            "more than one service",
        );
        check(
            "name = \"us-east-1\"",
            "name = \"us-west-2\"",
            "cluster \"us-west-2\" is defined twice",
        );
        check(
            "name = \"api\"",
            "name = \"logserver\"",
            "service \"logserver\" is defined twice",
        );
        check(
            "[[\"us-west-2\"], [\"us-east-1\", \"eu-west-1\"]]",
            "[[\"us-west-2\"], [\"us-east-1\"]]",
            "do not include cluster \"eu-west-1\"",
        );
        check(
            "[[\"us-west-2\"], [\"us-east-1\", \"eu-west-1\"]]",
            "[[\"us-west-2\"], [\"us-west-2\", \"us-east-1\", \"eu-west-1\"]]",
            "more than one wave",
        );
        check(
            "[[\"us-west-2\"], [\"us-east-1\", \"eu-west-1\"]]",
            "[[\"us-west-2\"], [\"mars-1\", \"us-east-1\", \"eu-west-1\"]]",
            "unknown cluster \"mars-1\"",
        );
        check(
            "promote_from = \"staging\"",
            "promote_from = \"stagin\"",
            "names no environment",
        );
        check(
            "promote_from = \"staging\"",
            "promote_from = \"prod\"",
            "cannot promote from itself",
        );
        check(
            "application = \"myapp-prod-{cluster}\"",
            "application = \"myapp-prod-{clustr}\"",
            "unknown placeholder {clustr}",
        );
        check(
            "application = \"myapp-prod-{cluster}\"",
            "application = \"myapp-prod\"",
            "must contain {cluster}",
        );
        check(
            "application_set = \"myapp-prod\"",
            "application_set = \"myapp-{cluster}\"",
            "unknown placeholder {cluster}",
        );
        check(
            "allow = \"^[0-9a-f]{7,40}$\"",
            "allow = \"^[0-9a-f\"",
            "not a valid regular expression",
        );
        check("soak = \"5m\"", "soak = \"5 parsecs\"", "is not a duration");
        check("timeout = \"15m\"", "timeout = \"0s\"", "more than zero");
        check("timeout = \"15m\"", "timeout = \"2days\"", "at most 24h");
        check("soak = \"5m\"", "soak = \"1000years\"", "at most 24h");

        check(
            "sync = \"manual\"",
            "sync = \"sometimes\"",
            "unknown variant `sometimes`",
        );
        check(
            "account = \"222222222222\"",
            "account = \"22\"",
            "12-digit AWS account id",
        );
        check(
            "strategy = \"newest\"",
            "strategy = \"oldest\"",
            "unknown variant `oldest`",
        );
        check(
            "kind = \"helm\", parameter = \"image.tag\" }\npromote_from",
            "kind = \"helm\" }\npromote_from",
            "needs parameter, the Helm parameter holding the tag",
        );
    }

    #[test]
    fn notify_targets() {
        let with = |notify: &str| {
            EXAMPLE.replacen(
                "soak = \"5m\"",
                &format!("soak = \"5m\"\nnotify = {notify}"),
                1,
            )
        };
        let c = Config::parse(
            "deploy.toml",
            &with(
                r#"[{ slack_env = "DEPLOY_SLACK_WEBHOOK" }, { slack = "https://chat.example.com/hooks/x" }, { webhook = "https://hooks.example.com/deploy", secret_env = "DEPLOY_WEBHOOK_SECRET" }]"#,
            ),
        )
        .unwrap();
        assert_eq!(
            c.environment("prod").unwrap().notify,
            [
                NotifyTarget::Slack {
                    url: SlackUrl::Env("DEPLOY_SLACK_WEBHOOK".into())
                },
                NotifyTarget::Slack {
                    url: SlackUrl::Literal("https://chat.example.com/hooks/x".into())
                },
                NotifyTarget::Webhook {
                    url: "https://hooks.example.com/deploy".into(),
                    secret_env: "DEPLOY_WEBHOOK_SECRET".into()
                },
            ]
        );
        assert!(c.environment("staging").unwrap().notify.is_empty());

        let line = with("")
            .lines()
            .position(|l| l.starts_with("notify ="))
            .unwrap()
            + 1;
        #[track_caller]
        fn rejected(text: &str, expect: &str) -> ConfigError {
            let e = Config::parse("deploy.toml", text).expect_err("must be rejected");
            assert!(e.message.contains(expect), "got: {e}\nwant: …{expect}…");
            e
        }
        // A Slack webhook URL is a credential: rejected where it is, with the fix.
        let e = rejected(
            &with(r#"[{ slack = "https://hooks.slack.com/services/T000/B000/XXXX" }]"#),
            "is a Slack webhook URL, which is a secret",
        );
        assert_eq!((e.line, e.column), (line, 21), "{e}");
        assert!(
            e.message.contains("slack_env = \"DEPLOY_SLACK_WEBHOOK\""),
            "{e}"
        );
        rejected(
            &with(
                r#"[{ webhook = "https://hooks.slack.com/services/T0/B0/X", secret_env = "S" }]"#,
            ),
            "which is a secret",
        );
        rejected(
            &with(r#"[{ webhook = "https://hooks.example.com/deploy" }]"#),
            "needs `secret_env`",
        );
        // Credentials in a URL would be printed with it (N11): refused, without echoing them.
        for url in [
            "http://user:pa55word@h.example.com/deploy?token=abc",
            "https://pa55word@h.example.com",
        ] {
            let e = rejected(
                &with(&format!(
                    r#"[{{ webhook = "{url}", secret_env = "S" }}, {{ slack = "{url}" }}]"#
                )),
                "carries a user name or password",
            );
            assert!(!e.message.contains("pa55word"), "{e}");
            assert!(e.message.contains("secret_env"), "{e}");
        }
        // An `@` after the host is not userinfo.
        Config::parse(
            "deploy.toml",
            &with(r#"[{ webhook = "https://h.example.com/a@b?c=d@e", secret_env = "S" }]"#),
        )
        .unwrap();
        rejected(
            &with(r#"[{ webhook = "https://h.example.com/", secret = "abc" }]"#),
            "looks like a secret",
        );
        rejected(
            &with(r#"[{ slack_env = "DEPLOY SLACK" }]"#),
            "is not an environment variable name",
        );
        rejected(
            &with(r#"[{ slack_env = "A", secret_env = "B" }]"#),
            "signs a `webhook` only",
        );
        rejected(
            &with(r#"[{ slack = "hooks.example.com" }]"#),
            "is not a URL",
        );
        rejected(
            &with(r#"[{ slack_env = "A", webhook = "https://h.example.com/", secret_env = "B" }]"#),
            "exactly one of",
        );
        rejected(&with("[{}]"), "exactly one of");
        rejected(
            &with(r#"[{ teams = "https://x" }]"#),
            "unknown field `teams`",
        );
    }

    #[test]
    fn state_store() {
        let with = |state: &str| {
            let text = EXAMPLE.replacen(
                "timeout = \"15m\"",
                &format!("timeout = \"15m\"\nstate = {state}"),
                1,
            );
            Config::parse("deploy.toml", &text)
                .map(|c| c.environment("prod").unwrap().state.clone())
                .map_err(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        };
        let st = with(r#"{ s3 = "s3://myapp-deploy-state/deploy/", region = "us-west-2", aws_profile = "prod" }"#)
            .unwrap()
            .unwrap();
        let s3 = st.s3.clone().unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("myapp-deploy-state", "deploy")
        );
        assert_eq!(s3.key("prod", "lock.json"), "deploy/prod/lock.json");
        assert_eq!(s3.to_string(), "s3://myapp-deploy-state/deploy");
        assert_eq!(st.lock, LockBackend::S3, "lock defaults to s3 with s3 set");
        assert_eq!(st.region.as_deref(), Some("us-west-2"));
        assert_eq!(st.aws_profile.as_deref(), Some("prod"));
        let bare = with(r#"{ s3 = "s3://state-bucket" }"#).unwrap().unwrap();
        assert_eq!(bare.s3.unwrap().key("prod", "lock.json"), "prod/lock.json");
        let lease = with(r#"{ s3 = "s3://state-bucket/p", lock = "kubernetes" }"#)
            .unwrap()
            .unwrap();
        assert_eq!(lease.lock, LockBackend::Kubernetes);
        assert_eq!(
            with(r#"{ lock = "argocd" }"#).unwrap().unwrap().lock,
            LockBackend::Argocd
        );
        assert_eq!(
            Config::parse("deploy.toml", EXAMPLE)
                .unwrap()
                .environment("prod")
                .unwrap()
                .state,
            None,
            "no state: today's behaviour"
        );
        for (state, expect) in [
            (r#"{ s3 = "myapp/deploy" }"#, "is not an s3:// URL"),
            (
                r#"{ s3 = "s3://My_Bucket/x" }"#,
                "not a valid S3 bucket name",
            ),
            (r#"{ s3 = "s3://ab" }"#, "not a valid S3 bucket name"),
            (r#"{ s3 = "s3://bucket-x/a//b" }"#, "empty path segment"),
            (r#"{ lock = "s3" }"#, "needs state.s3"),
            (r#"{ region = "us-west-2" }"#, "state needs s3"),
            (
                r#"{ s3 = "s3://bucket-x", lock = "etcd" }"#,
                "unknown variant `etcd`",
            ),
            (
                r#"{ s3 = "s3://bucket-x", bucket = "y" }"#,
                "unknown field `bucket`",
            ),
            (
                r#"{ s3 = "s3://bucket-x", region = " " }"#,
                "state.region cannot be empty",
            ),
        ] {
            let got = with(state).expect_err(state);
            assert!(got.contains(expect), "{state}: {got}");
            assert!(got.starts_with("65:"), "points at the line of state: {got}");
        }
    }

    #[test]
    fn names_must_be_kubernetes_object_names() {
        let long = "x".repeat(254);
        let cases: [(&str, &str, &str); 13] = [
            (
                "name = \"us-east-1\"",
                "name = \"a?dryRun=All\"",
                "cluster name \"a?dryRun=All\" is not a valid Kubernetes name: '?' is not allowed",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"../x\"",
                "cluster name \"../x\" is not a valid Kubernetes name: '/' is not allowed",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"a/b\"",
                "'/' is not allowed",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"UPPER\"",
                "cluster name \"UPPER\" is not a valid Kubernetes name: 'U' is uppercase",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"-east\"",
                "does not start and end with a letter or digit",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"us..east\"",
                "does not start and end with a letter or digit",
            ),
            (
                "name = \"us-east-1\"",
                &format!("name = \"{long}\""),
                "is 254 characters long, more than 253; use lowercase letters",
            ),
            (
                "[environments.prod]",
                "[environments.Prod]",
                "environment name \"Prod\" is not a valid Kubernetes name: 'P' is uppercase",
            ),
            (
                "[environments.prod]",
                "[environments.\"prod/x\"]",
                "environment name \"prod/x\" is not a valid Kubernetes name: '/' is not allowed",
            ),
            (
                "application = \"myapp-prod-{cluster}\"",
                "application = \"myapp_prod_{cluster}\"",
                "names the Application of cluster \"us-west-2\" \"myapp_prod_us-west-2\", which is not a valid Kubernetes name: '_' is not allowed",
            ),
            (
                "application = \"myapp-prod-{cluster}\"",
                &format!("application = \"{}-{{cluster}}\"", "x".repeat(250)),
                "more than 253",
            ),
            (
                "application = \"myapp-prod-{cluster}\"",
                "application = \"{cluster}-{app}-\"",
                "\"us-west-2-myapp-\", which is not a valid Kubernetes name: it (or a part between dots) does not start and end",
            ),
            (
                "application_set = \"myapp-prod\"",
                "application_set = \"{app} {env}\"",
                "names the ApplicationSet \"myapp prod\", which is not a valid Kubernetes name: ' ' is not allowed",
            ),
        ];
        for (from, to, expect) in cases {
            check(from, to, expect);
        }
        // Every error says what to do and where.
        let got = error_of("name = \"us-east-1\"", "name = \"a?dryRun=All\"");
        assert!(got.starts_with("17:8: "), "{got}");
        assert!(
            got.ends_with("at most 253 characters (a Kubernetes object name)"),
            "{got}"
        );
    }

    #[test]
    fn object_names() {
        #[track_caller]
        fn check(name: &str, expect: Option<&str>) {
            let got = object_name_error(name);
            match expect {
                None => assert_eq!(got, None, "{name:?}"),
                Some(want) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(want)),
                    "{name:?}: got {got:?}, want …{want}…"
                ),
            }
        }
        check("a", None);
        check("0", None);
        check("us-west-2", None);
        check("a.b-c.d", None);
        check(&"x".repeat(253), None);
        check(&"x".repeat(254), Some("more than 253"));
        check("", Some("empty"));
        check("A", Some("uppercase"));
        check("a_b", Some("'_' is not allowed"));
        check("a?dryRun=All", Some("'?' is not allowed"));
        check("a#b", Some("'#' is not allowed"));
        check("a%2fb", Some("'%' is not allowed"));
        check("é", Some("not allowed"));
        check("..", Some("start and end"));
        check(".", Some("start and end"));
        check("a.", Some("start and end"));
        check("-a", Some("start and end"));
        check("a-", Some("start and end"));
        check("a.-b", Some("start and end"));
        check("a..b", Some("start and end"));
    }

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
            crate::check::phase(Ok(values), &c.success, None, crate::check::NoData::Fail).0
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

    /// A check's timing bounds: `interval = "30s"` of the example's check replaced by `timing`,
    /// then `None` (accepted) or the error it must contain.
    #[test]
    fn check_timing_bounds() {
        #[track_caller]
        fn bound(timing: &str, expect: Option<&str>) {
            let at = EXAMPLE.find("[[environments.prod.checks]]").unwrap();
            let (head, tail) = EXAMPLE.split_at(at);
            let text = format!("{head}{}", tail.replacen("interval = \"30s\"", timing, 1));
            match (Config::parse("deploy.toml", &text), expect) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.message.contains(want), "{timing}: {e}"),
                (got, want) => panic!("{timing}: got {got:?}, want {want:?}"),
            }
        }
        // The reliability review's plan of 195,982 years (N8).
        bound(
            "count = 4294967295\ninterval = \"24h\"",
            Some("interval is at most 1h"),
        );
        bound(
            "count = 4294967295\ninterval = \"1h\"",
            Some("count 4294967295 is more than 86400, one measurement a second for 24h"),
        );
        bound("count = 86400\ninterval = \"1s\"", None);
        bound("count = 86401\ninterval = \"1s\"", Some("more than 86400"));
        bound(
            "count = 26\ninterval = \"1h\"",
            Some("initial_delay + (count - 1) × interval = 0s + 25 × 1h is 1day 1h"),
        );
        bound("count = 24\ninterval = \"1h\"", None);
        bound("count = 25\ninterval = \"1h\"", None);
        bound(
            "count = 24\ninterval = \"1h\"\ninitial_delay = \"1h 1s\"",
            Some("= 1h 1s + 23 × 1h is 1day 1s"),
        );
        bound(
            "count = 24\ninterval = \"1h\"\ninitial_delay = \"1h\"",
            None,
        );
        bound("count = 1\ninitial_delay = \"24h\"", None);
        bound(
            "initial_delay = \"24h 1s\"",
            Some("initial_delay is at most 24h"),
        );
        bound("interval = \"1h\"", None);
        bound("interval = \"1h 1s\"", Some("interval is at most 1h"));
        bound("interval = \"24h\"", Some("interval is at most 1h"));
        bound(
            "interval = \"999999999999999999999h\"",
            Some("is not a duration"),
        );
        bound("count = 0", Some("count must be at least 1"));
        bound("count = -1", Some("invalid value"));
        bound("count = 1", None);
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

    /// `image_override` with and without `pin`: each line is the override written into the
    /// first environment (debug, three services) and what it parses to, or the error.
    #[test]
    fn image_override_pins() {
        const HELM: &str = "image_override = { kind = \"helm\", parameter = \"image.tag\" }";
        let digests = |t: &str| Pin::Digest {
            helm_parameters: ["logserver", "api", "worker"]
                .iter()
                .map(|s| (s.to_string(), t.replace("{service}", s)))
                .collect(),
        };
        let helm = ImageOverride::Helm {
            parameter: "image.tag".into(),
        };
        let ok: [(&str, ImageOverride, Pin); 6] = [
            (
                "{ kind = \"kustomize\" }",
                ImageOverride::Kustomize,
                Pin::Tag,
            ),
            (
                "{ kind = \"kustomize\", pin = \"tag\" }",
                ImageOverride::Kustomize,
                Pin::Tag,
            ),
            (
                "{ kind = \"kustomize\", pin = \"digest\" }",
                ImageOverride::Kustomize,
                Pin::Digest {
                    helm_parameters: BTreeMap::new(),
                },
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\" }",
                helm.clone(),
                Pin::Tag,
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"tag\" }",
                helm.clone(),
                Pin::Tag,
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{service}.image.digest\" }",
                helm.clone(),
                digests("{service}.image.digest"),
            ),
        ];
        for (written, kind, pin) in ok {
            let text = EXAMPLE.replacen(HELM, &format!("image_override = {written}"), 1);
            let c =
                Config::parse("deploy.toml", &text).unwrap_or_else(|e| panic!("{written}: {e}"));
            let debug = c.environment("debug").unwrap();
            assert_eq!(
                (&debug.image_override, &debug.pin),
                (&kind, &pin),
                "{written}"
            );
        }
        let err: [(&str, &str); 8] = [
            (
                "{ kind = \"helm\", parameter = \"image.tag\", digest_parameter = \"{service}.image.digest\" }",
                "digest_parameter is only used with pin = \"digest\"",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"tag\", digest_parameter = \"d\" }",
                "digest_parameter is only used with pin = \"digest\"",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\" }",
                "needs digest_parameter",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"image.digest\" }",
                "must contain {service}: there are 3 services",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{svc}.digest\" }",
                "unknown placeholder {svc}",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"sha\" }",
                "unknown variant `sha`",
            ),
            (
                "{ kind = \"kustomize\", pin = \"digest\", digest_parameter = \"{service}.d\" }",
                "digest_parameter is for kind = \"helm\"",
            ),
            ("{ kind = \"helm\" }", "needs parameter"),
        ];
        for (written, expect) in err {
            check(HELM, &format!("image_override = {written}"), expect);
        }
        // One service: the template needs no {service}.
        let one = EXAMPLE
            .replacen("[[services]]\nname = \"api\"\nrepository = \"api\"\n", "", 1)
            .replacen("[[services]]\nname = \"worker\"\nrepository = \"worker\"\n", "", 1)
            .replacen(
                HELM,
                "image_override = { kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"image.digest\" }",
                1,
            );
        let c = Config::parse("deploy.toml", &one).unwrap();
        assert_eq!(
            c.environment("debug").unwrap().pin,
            Pin::Digest {
                helm_parameters: BTreeMap::from([("logserver".into(), "image.digest".into())])
            }
        );
    }

    #[test]
    fn errors_point_at_the_line() {
        let text = EXAMPLE.replacen("soak = \"5m\"", "soak = \"forever\"", 1);
        let line = text.lines().position(|l| l.starts_with("soak =")).unwrap() + 1;
        let e = Config::parse("deploy.toml", &text).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.column),
            ("deploy.toml", line, 8),
            "{e}"
        );
    }

    #[test]
    fn two_clusters_cannot_share_an_application() {
        let text = EXAMPLE
            .replacen(
                "name = \"us-east-1\"\nregion = \"us-east-1\"",
                "name = \"us-east-1\"\nregion = \"us-west-2\"",
                1,
            )
            .replacen(
                "application = \"myapp-prod-{cluster}\"",
                "application = \"myapp-prod-{region}\"",
                1,
            );
        let e = Config::parse("deploy.toml", &text).unwrap_err();
        assert!(
            e.message.contains("same name \"myapp-prod-us-west-2\""),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_rejected() {
        let text = EXAMPLE.replacen(
            "branch = \"staging\"",
            "branch = \"staging\"\npromote_from = \"prod\"",
            1,
        );
        let e = Config::parse("deploy.toml", &text).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }
}
