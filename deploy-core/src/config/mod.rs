//! `deploy.toml`: parsing and validation into the domain's clusters, services and environments.
//!
//! Parsing takes the file's text (the caller reads the file); every error names the
//! file, line and column and says how to fix it.
//!
//! serde reads the text into the shapes of `raw`; one validator per section turns them into
//! the public types: `clusters`, `services`, `environments` (registry, Applications, waves,
//! `promote_from`), and within an environment `image_override`, `tags`, `timing` (every
//! duration's bound), `notify`, `state` and `checks` (with their `condition`s). `names`
//! (Kubernetes names, templates) and `field` (spans, non-empty, unique) are what they share.
//! A section's own types live beside its rules and are re-exported here; this file holds
//! the [`Config`] and [`Environment`] they make up, and the lookups on them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use crate::model::{RepoLocation, SyncMode};

mod checks;
mod clusters;
mod condition;
mod environments;
mod field;
mod image_override;
mod names;
mod notify;
mod raw;
mod services;
mod state;
mod tags;
mod timing;

pub use checks::{ALARM_SUCCESS, ALARMS_SUCCESS, Check, MetricSource, NoData, PLACEHOLDERS};
pub use condition::Condition;
pub use image_override::{ImageOverride, Pin};
pub use names::{MAX_NAME_LEN, object_name_error};
pub use notify::{NotifyTarget, SlackUrl};
pub use state::{LockBackend, S3Location, StateConfig};
pub use tags::{TagPolicy, TagStrategy};

use field::{Invalid, nonempty, unique};
use names::expand;
use raw::{RawArgoCd, RawConfig};

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

impl RawConfig {
    /// The configuration. The sections are checked in this order, which is the order of the
    /// errors a file with several gets.
    fn validate(self) -> Result<Config, Invalid> {
        let app = nonempty(&self.app, "app")?;
        clusters::present(&self.clusters)?;
        services::present(&self.services)?;
        unique(self.clusters.iter().map(|c| &c.get_ref().name), "cluster")?;
        unique(self.services.iter().map(|s| &s.get_ref().name), "service")?;
        let clusters = clusters::validate(&self.clusters)?;
        let services = services::validate(&self.services)?;
        let environments = environments::validate(&self.environments, &app, &clusters, &services)?;
        Ok(Config {
            app,
            argocd: self.argocd.validate(),
            clusters,
            services,
            environments,
        })
    }
}

impl RawArgoCd {
    /// The connection settings: a blank server is none, the namespace `argocd` by default.
    fn validate(self) -> ArgoCdConfig {
        ArgoCdConfig {
            server: self.server.filter(|s| !s.trim().is_empty()),
            plaintext: self.plaintext,
            insecure: self.insecure,
            namespace: self.namespace.unwrap_or_else(|| "argocd".into()),
        }
    }
}

/// The example configuration shipped in `examples/deploy.toml`, used by the demo and tests.
pub const EXAMPLE: &str = include_str!("../../../examples/deploy.toml");

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
    pub(super) fn error_of(from: &str, to: &str) -> String {
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
    pub(super) fn check(from: &str, to: &str, expect: &str) {
        let got = error_of(from, to);
        assert!(
            got.contains(expect),
            "replacing {from:?} by {to:?}:\n got: {got}\nwant: …{expect}…"
        );
    }

    /// serde's part: unknown keys, a secret-looking one with its own fix.
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
}
