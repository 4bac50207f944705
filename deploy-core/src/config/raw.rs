//! The shapes of `deploy.toml` as serde reads them: every key a file may hold, with the span
//! of what a message must point at.
//!
//! serde's part is the shape (types, required keys, `deny_unknown_fields`); every rule beyond
//! it is a section's validator (`clusters`, `services`, `environments`, `checks`, `notify`,
//! `state`, …), so a new key is a field here plus a line in its section.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{LockBackend, NoData, TagStrategy};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) app: Spanned<String>,
    #[serde(default)]
    pub(super) argocd: RawArgoCd,
    #[serde(default)]
    pub(super) clusters: Vec<Spanned<RawCluster>>,
    #[serde(default)]
    pub(super) services: Vec<Spanned<RawService>>,
    #[serde(default)]
    pub(super) environments: BTreeMap<Spanned<String>, Spanned<RawEnvironment>>,
}

/// `[argocd]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArgoCd {
    pub(super) server: Option<String>,
    #[serde(default)]
    pub(super) plaintext: bool,
    #[serde(default)]
    pub(super) insecure: bool,
    pub(super) namespace: Option<String>,
}

/// `[[clusters]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: Spanned<String>,
    pub(super) region: Spanned<String>,
}

/// `[[services]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<String>,
    pub(super) repository: Spanned<String>,
    #[serde(default)]
    pub(super) sentinel: bool,
}

/// `[environments.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironment {
    pub(super) branch: Option<String>,
    pub(super) registry: RawRegistry,
    pub(super) sync: RawSync,
    #[serde(default)]
    pub(super) prune: bool,
    #[serde(default)]
    pub(super) self_heal: Option<bool>,
    pub(super) application: Spanned<String>,
    pub(super) application_set: Option<Spanned<String>>,
    pub(super) image_override: Spanned<RawImageOverride>,
    #[serde(default)]
    pub(super) tags: RawTags,
    pub(super) promote_from: Option<Spanned<String>>,
    pub(super) waves: Option<Spanned<Vec<Vec<Spanned<String>>>>>,
    pub(super) soak: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<RawNotify>>,
    pub(super) state: Option<Spanned<RawState>>,
    #[serde(default)]
    pub(super) checks: Vec<Spanned<RawCheck>>,
}

/// An environment's `registry`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) account: Spanned<String>,
    pub(super) regions: Spanned<Vec<Spanned<String>>>,
    pub(super) repository_prefix: Option<Spanned<String>>,
    pub(super) aws_profile: Option<String>,
}

/// An environment's `sync`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawSync {
    Automated,
    Manual,
}

/// An environment's `tags`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTags {
    #[serde(default)]
    pub(super) strategy: TagStrategy,
    pub(super) allow: Option<Spanned<String>>,
    pub(super) ignore: Option<Spanned<String>>,
}

/// An environment's `image_override`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImageOverride {
    pub(super) kind: Spanned<RawOverrideKind>,
    pub(super) parameter: Option<Spanned<String>>,
    pub(super) pin: Option<Spanned<RawPin>>,
    pub(super) digest_parameter: Option<Spanned<String>>,
}

/// `image_override.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawOverrideKind {
    Helm,
    Kustomize,
}

/// `image_override.pin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawPin {
    Tag,
    Digest,
}

/// One `[[environments.NAME.checks]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) name: Spanned<String>,
    pub(super) prometheus: Option<Spanned<RawPrometheus>>,
    pub(super) cloudwatch_alarms: Option<Spanned<RawAlarms>>,
    pub(super) query: Option<Spanned<String>>,
    pub(super) success: Option<Spanned<String>>,
    pub(super) failure: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) initial_delay: Option<Spanned<String>>,
    pub(super) count: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) failure_limit: u32,
    #[serde(default)]
    pub(super) inconclusive_limit: u32,
    pub(super) consecutive_error_limit: Option<u32>,
    #[serde(default)]
    pub(super) no_data: NoData,
}

/// A check's `prometheus`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrometheus {
    pub(super) url: Spanned<String>,
    #[serde(default)]
    pub(super) sigv4: bool,
    pub(super) region: Option<Spanned<String>>,
    pub(super) aws_profile: Option<String>,
}

/// A check's `cloudwatch_alarms`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlarms {
    pub(super) names: Spanned<Vec<Spanned<String>>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) aws_profile: Option<String>,
}

/// One `notify` entry: exactly one of `slack`, `slack_env`, `webhook`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) slack: Option<Spanned<String>>,
    pub(super) slack_env: Option<Spanned<String>>,
    pub(super) webhook: Option<Spanned<String>>,
    pub(super) secret_env: Option<Spanned<String>>,
}

/// An environment's `state`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) s3: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) aws_profile: Option<String>,
    pub(super) lock: Option<LockBackend>,
}
