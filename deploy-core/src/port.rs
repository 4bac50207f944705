//! The ports: small async traits the engine and planners are written against.
//!
//! Each port has an in-memory backend in `deploy_engine::memory` and real adapters in
//! `deploy-aws` (registry) and `deploy-argocd` (Argo CD, lock). The contract of each
//! method is stated here and checked by `crate::conformance`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{ImageOverride, MetricSource};
use crate::error::Result;
use crate::model::{Digest, RepoLocation, SyncMode, Tag};
use crate::window::AppWindows;

// ---------------------------------------------------------------- registry

/// One image as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetail {
    /// The manifest digest.
    pub digest: Digest,
    /// Every tag on this digest.
    pub tags: Vec<Tag>,
    /// When the image was pushed.
    pub pushed_at: Timestamp,
}

/// The answer to "does this repository have this tag".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ImageLookup {
    /// The tag exists.
    Found(ImageDetail),
    /// The repository exists but has no image with this tag.
    ImageMissing,
    /// The repository itself does not exist.
    RepositoryMissing,
}

/// Replication of one image to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// Destination account.
    pub account: String,
    /// Destination region.
    pub region: String,
    /// Where it stands.
    pub state: ReplicationState,
}

/// State of one replication (ECR `ReplicationStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ReplicationState {
    /// The image is in the destination.
    Complete,
    /// Copying.
    InProgress,
    /// Replication failed; `reason` is the registry's failure code.
    Failed {
        /// The registry's failure code or message.
        reason: String,
    },
}

/// A registry replication rule (ECR `ReplicationRule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRule {
    /// Where images are copied: (account, region).
    pub destinations: Vec<(String, String)>,
    /// Repository name prefixes the rule applies to; empty means every repository.
    pub repository_prefixes: Vec<String>,
}

impl ReplicationRule {
    /// Whether this rule copies `repository` to `(account, region)`.
    pub fn covers(&self, repository: &str, account: &str, region: &str) -> bool {
        let filtered = self.repository_prefixes.is_empty()
            || self
                .repository_prefixes
                .iter()
                .any(|p| repository.starts_with(p.as_str()));
        filtered
            && self
                .destinations
                .iter()
                .any(|(a, r)| a == account && r == region)
    }
}

/// Settings of a repository that the audit looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryInfo {
    /// Whether tags can be moved to another digest.
    pub tag_mutable: bool,
}

/// A container registry (Amazon ECR in production).
///
/// Every call names the account explicitly (ECR `registryId`).
#[async_trait]
pub trait Registry: Send + Sync + Debug {
    /// The image of `repo` tagged `tag`.
    ///
    /// A missing tag or repository is an answer, not an error.
    async fn image(&self, repo: &RepoLocation, tag: &Tag) -> Result<ImageLookup>;

    /// Every tagged image of `repo`, one entry per tag, in no particular order.
    ///
    /// A missing repository is [`crate::Error::NotFound`].
    async fn tagged_images(&self, repo: &RepoLocation) -> Result<Vec<TaggedImage>>;

    /// Replication of `repo:tag` to each destination the source registry replicates to.
    ///
    /// A missing image is [`crate::Error::NotFound`].
    async fn replication_status(
        &self,
        repo: &RepoLocation,
        tag: &Tag,
    ) -> Result<Vec<ReplicationStatus>>;

    /// The replication rules of the registry of `account` in `region`.
    async fn replication_rules(&self, account: &str, region: &str) -> Result<Vec<ReplicationRule>>;

    /// Settings of `repo`; a missing repository is [`crate::Error::NotFound`].
    async fn repository(&self, repo: &RepoLocation) -> Result<RepositoryInfo>;
}

/// One tag of a repository with the image it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedImage {
    /// The tag.
    pub tag: Tag,
    /// The image digest.
    pub digest: Digest,
    /// When the image was pushed.
    pub pushed_at: Timestamp,
}

// ---------------------------------------------------------------- Argo CD

/// `status.sync.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SyncStatus {
    /// Live state matches the desired state.
    Synced,
    /// It does not.
    OutOfSync,
    /// Not compared yet.
    #[default]
    Unknown,
}

/// `status.health.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Health {
    /// Everything is up.
    Healthy,
    /// Rolling out.
    Progressing,
    /// Something failed.
    Degraded,
    /// Paused.
    Suspended,
    /// Resources do not exist.
    Missing,
    /// Not assessed.
    #[default]
    Unknown,
}

/// `status.operationState.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationPhase {
    /// Running.
    Running,
    /// Being terminated.
    Terminating,
    /// Finished well.
    Succeeded,
    /// Finished with a failed sync.
    Failed,
    /// Finished with an error.
    Error,
}

impl OperationPhase {
    /// Succeeded, Failed or Error.
    pub fn is_completed(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Error)
    }
}

/// The info key that marks an operation started by `deploy`; its value is the operation id.
pub const OPERATION_INFO_KEY: &str = "deploy.operation";

/// `status.operationState`: the last or current operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationState {
    /// Phase.
    pub phase: OperationPhase,
    /// Message, e.g. "successfully synced (all tasks run)".
    pub message: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished; `None` while running.
    pub finished_at: Option<Timestamp>,
    /// Who started it (`initiatedBy.username`), or "automated".
    pub initiated_by: Option<String>,
    /// `operation.info` as name → value.
    pub info: BTreeMap<String, String>,
}

impl OperationState {
    /// The deploy operation id carried in `info`, if `deploy` started it.
    pub fn deploy_operation(&self) -> Option<&str> {
        self.info.get(OPERATION_INFO_KEY).map(String::as_str)
    }

    /// Argo CD's message when it holds this operation Running because a sync window closed
    /// after it accepted the sync: its controller sets "Sync operation blocked by sync
    /// window" (`controller/appcontroller.go`, `processRequestedAppOperation`) and says it
    /// nowhere else, so the port reads it here, once, for every backend.
    pub fn held_by_window(&self) -> Option<&str> {
        let held = !self.phase.is_completed()
            && self
                .message
                .to_ascii_lowercase()
                .contains("operation blocked by sync window");
        held.then_some(self.message.as_str())
    }
}

/// One `status.history` entry: a successful full sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// History id (increases by one per sync).
    pub id: i64,
    /// Git revision.
    pub revision: String,
    /// When it was deployed.
    pub deployed_at: Option<Timestamp>,
    /// The image override in force for that sync, when the source carried one.
    pub override_value: Option<OverrideValue>,
}

/// The image override of an Application's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OverrideValue {
    /// One Helm parameter (`spec.source.helm.parameters[name]`), and with a digest pin one
    /// parameter per service holding its digest.
    Helm {
        /// Parameter name, e.g. `image.tag`.
        parameter: String,
        /// Its value: the tag.
        value: String,
        /// Digest parameter → digest (`pin = "digest"`); an empty value clears a pin (a
        /// release whose digest is unknown runs by its tag). Empty when pinned by tag.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        digests: BTreeMap<String, String>,
    },
    /// Kustomize image overrides (`spec.source.kustomize.images`), `name:tag` each, or
    /// `name:tag@sha256:…` when pinned by digest.
    Kustomize {
        /// The entries for our images.
        images: Vec<String>,
    },
}

impl OverrideValue {
    /// The tag(s) this override points at, deduplicated and sorted.
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = match self {
            Self::Helm { value, .. } => vec![value.clone()],
            Self::Kustomize { images } => images
                .iter()
                .filter_map(|i| image_tag(i))
                .map(str::to_owned)
                .collect(),
        };
        tags.sort();
        tags.dedup();
        tags
    }

    /// The digests this override pins, as (where, digest): the Kustomize image name, or the
    /// Helm digest parameter. Empty when it names the tag only.
    pub fn pins(&self) -> Vec<(&str, &str)> {
        match self {
            Self::Helm { digests, .. } => digests
                .iter()
                .filter(|(_, d)| !d.is_empty())
                .map(|(p, d)| (p.as_str(), d.as_str()))
                .collect(),
            Self::Kustomize { images } => images
                .iter()
                .filter_map(|i| Some((kustomize_name(i), image_digest(i)?)))
                .collect(),
        }
    }

    /// Whether this override is of the configured kind.
    pub fn is_kind(&self, kind: &ImageOverride) -> bool {
        matches!(
            (self, kind),
            (Self::Helm { .. }, ImageOverride::Helm { .. })
                | (Self::Kustomize { .. }, ImageOverride::Kustomize)
        )
    }
}

/// The image name a Kustomize override entry matches: `old=new:tag` → `old`, `name:tag` → `name`,
/// `name:tag@sha256:…` → `name`.
pub fn kustomize_name(entry: &str) -> &str {
    match entry.split_once('=') {
        Some((old, _)) => old,
        None => image_name(entry),
    }
}

/// The digest of an image reference `name@digest` or `name:tag@digest`; `None` without one.
pub fn image_digest(image: &str) -> Option<&str> {
    image.split_once('@').map(|(_, d)| d)
}

/// The tag of an image reference `name:tag` or `name:tag@digest`; `None` when untagged.
pub fn image_tag(image: &str) -> Option<&str> {
    let image = image.split_once('@').map_or(image, |(n, _)| n);
    let (_, last) = image.rsplit_once('/').unwrap_or(("", image));
    last.split_once(':').map(|(_, tag)| tag)
}

/// The name of an image reference without tag or digest.
pub fn image_name(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(n, _)| n);
    match image.rsplit_once('/') {
        Some((head, last)) => {
            &image[..head.len() + 1 + last.split_once(':').map_or(last.len(), |(n, _)| n.len())]
        }
        None => image.split_once(':').map_or(image, |(n, _)| n),
    }
}

/// The part of an Argo CD Application that `deploy` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// `metadata.name`.
    pub name: String,
    /// `spec.project`.
    pub project: String,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Destination cluster: `spec.destination.name`, else `.server`.
    pub destination: String,
    /// `spec.syncPolicy.automated` (enabled) or manual.
    pub sync_mode: SyncMode,
    /// `spec.source.helm.parameters` as name → value.
    pub helm_parameters: BTreeMap<String, String>,
    /// `spec.source.kustomize.images`.
    pub kustomize_images: Vec<String>,
    /// `status.sync.status`.
    pub sync_status: SyncStatus,
    /// `status.health.status`.
    pub health: Health,
    /// `status.health.message` or a degraded resource's message.
    pub health_message: Option<String>,
    /// True while the top-level `operation` is set (requested or running).
    pub operation_pending: bool,
    /// `status.operationState`.
    pub operation_state: Option<OperationState>,
    /// `status.reconciledAt`.
    pub reconciled_at: Option<Timestamp>,
    /// `status.summary.images`: what runs.
    pub images: Vec<String>,
    /// `status.history`, oldest first.
    pub history: Vec<HistoryEntry>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// The ApplicationSet that generated it: the `metadata.ownerReferences` entry of kind
    /// `ApplicationSet`; `None` when no ApplicationSet owns it (or the backend cannot say).
    #[serde(default)]
    pub owner_application_set: Option<String>,
    /// For a multi-source Application (`spec.sources`), the source that carries the image
    /// override; `None` for a single `spec.source`. What an ApplicationSet must ignore
    /// depends on it (`plan::appset::app_override_pointer`).
    #[serde(default)]
    pub override_sources: Option<OverrideSources>,
}

/// The index in `spec.sources` of the source the image override is written to, for each kind
/// of override: the one holding the tag parameter (else the first Helm chart) for Helm, the one
/// holding the images (else the first Kustomize source) for Kustomize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideSources {
    /// Where a Helm override is written.
    pub helm: usize,
    /// Where a Kustomize override is written.
    pub kustomize: usize,
}

/// A request to sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Delete resources no longer in git.
    pub prune: bool,
    /// Our operation id, written to the operation's info under [`OPERATION_INFO_KEY`].
    pub operation_id: String,
}

/// One `spec.ignoreApplicationDifferences` entry of an ApplicationSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IgnoreDifferences {
    /// Application names it applies to; empty means all.
    pub name: Option<String>,
    /// JSON pointers, e.g. `/spec/source/helm/parameters`.
    pub json_pointers: Vec<String>,
    /// jq path expressions.
    pub jq_path_expressions: Vec<String>,
}

/// The part of an ApplicationSet that `deploy` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationSet {
    /// `metadata.name`.
    pub name: String,
    /// The template's sync policy.
    pub sync_mode: SyncMode,
    /// `spec.ignoreApplicationDifferences`.
    pub ignore_differences: Vec<IgnoreDifferences>,
    /// `spec.preservedFields.annotations`: the annotations of its Applications its controller
    /// keeps (besides its own defaults); every other one is replaced by the template's.
    #[serde(default)]
    pub preserved_annotations: Vec<String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
}

/// A cluster registered in Argo CD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// API server URL.
    pub server: String,
    /// `connectionState.status` is Successful.
    pub connected: bool,
    /// `connectionState.message`.
    pub message: Option<String>,
}

/// A stream of Application snapshots: the current state first, then every change.
pub type AppStream = BoxStream<'static, Result<Application>>;

/// Control of Argo CD.
#[async_trait]
pub trait ArgoCd: Send + Sync + Debug {
    /// One Application; [`crate::Error::NotFound`] when missing.
    async fn application(&self, name: &str) -> Result<Application>;

    /// Sets the image override in the Application's source, keeping every other
    /// Helm parameter or Kustomize image. Returns the updated Application.
    async fn set_override(&self, name: &str, value: &OverrideValue) -> Result<Application>;

    /// Starts a sync. [`crate::Error::Collision`] when another operation runs.
    async fn sync(&self, name: &str, request: &SyncRequest) -> Result<()>;

    /// The Application's state now, then every change, until dropped.
    /// Backends reconnect on their own; the stream ends only with an error.
    async fn watch(&self, name: &str) -> Result<AppStream>;

    /// Asks Argo CD to terminate the running operation; with none running it is a no-op.
    /// Termination is asynchronous: watch for the operation to finish.
    async fn terminate(&self, name: &str) -> Result<()>;

    /// Merges `annotations` into `metadata.annotations`.
    async fn annotate(&self, name: &str, annotations: &BTreeMap<String, String>) -> Result<()>;

    /// The sync windows of the Application's project that apply to it (upstream
    /// `SyncWindows.Matches`), with Argo CD's own "may a manual sync run now" when the backend
    /// gets one. On [`ArgoCd`] rather than [`ArgoCdInventory`] although it only reads: the
    /// engine decides with it before every wave, and the engine holds only this port.
    /// [`crate::Error::NotFound`] when the Application is missing.
    async fn sync_windows(&self, name: &str) -> Result<AppWindows>;
}

/// What `deploy audit` and gate 4 of a promotion read of Argo CD besides Applications:
/// read-only, and apart from [`ArgoCd`] so that the writing port stays small.
#[async_trait]
pub trait ArgoCdInventory: Send + Sync + Debug {
    /// Every ApplicationSet.
    async fn application_sets(&self) -> Result<Vec<ApplicationSet>>;

    /// One ApplicationSet; [`crate::Error::NotFound`] when missing.
    async fn application_set(&self, name: &str) -> Result<ApplicationSet>;

    /// Every cluster Argo CD knows, with its connection state.
    async fn clusters(&self) -> Result<Vec<ClusterInfo>>;
}

// ---------------------------------------------------------------- metrics

/// Takes measurements for the checks of a soak.
#[async_trait]
pub trait Metrics: Send + Sync + Debug {
    /// One measurement: for Prometheus, the value of every series (or the scalar) the
    /// instant query `query` returns, in the order returned (empty: no data); for CloudWatch
    /// alarms, one value per alarm name, in order: 1.0 while it is in ALARM, 0.0 otherwise
    /// (`query` is unused). A source that cannot be reached is [`crate::Error::Transient`];
    /// a query it rejects is [`crate::Error::Invalid`].
    async fn measure(&self, source: &MetricSource, query: &str) -> Result<Vec<f64>>;
}

// ---------------------------------------------------------------- lock

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lock's name, e.g. `deploy-myapp-prod`.
    pub key: String,
    /// Who holds it.
    pub holder: String,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
}

/// A lock with expiry, so a crashed run does not block forever.
#[async_trait]
pub trait Lock: Send + Sync + Debug {
    /// Takes `key` for `ttl`; an expired lease is taken over.
    /// [`crate::Error::LockHeld`] when someone else holds it.
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Lease>;

    /// Extends a lease we hold; [`crate::Error::LockHeld`] if it was lost.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Releases a lease we hold (a lease already lost is not an error).
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// The lock `key` as stored now, whoever holds it; `None` when nobody does. For
    /// `deploy unlock` and `deploy status`, never for a run's own decisions.
    async fn inspect(&self, key: &str) -> Result<Option<LockState>> {
        Err(not_administrable(key))
    }

    /// Removes the lock exactly as `seen` by [`Lock::inspect`], whoever holds it: a
    /// conditional delete on the backend's version of it, so a lock renewed or taken since is
    /// left alone (`Ok(false)`). `Ok(true)` when it was removed (or was already gone).
    async fn remove(&self, seen: &LockState) -> Result<bool> {
        Err(not_administrable(&seen.lease.key))
    }
}

/// The default of [`Lock::inspect`] and [`Lock::remove`], for test doubles that wrap a lock.
fn not_administrable(key: &str) -> crate::Error {
    crate::Error::Refused {
        message: format!("lock {key}: this lock backend cannot be inspected or removed"),
    }
}

/// A lock as stored, whoever holds it: what `deploy unlock` shows and decides on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// The lease: key, holder and expiry.
    pub lease: Lease,
    /// When the holder took it, where the backend keeps that.
    pub acquired_at: Option<Timestamp>,
    /// When it was last written (taken or renewed), where the backend keeps that.
    pub renewed_at: Option<Timestamp>,
    /// The backend's version of the stored lock (an S3 ETag, a resourceVersion, the
    /// annotation's text), which [`Lock::remove`] makes its delete conditional on.
    pub version: String,
}

impl LockState {
    /// The id people pass to `deploy unlock --id`: [`crate::port::lock_id`] of the holder.
    pub fn id(&self) -> String {
        crate::port::lock_id(&self.lease.holder)
    }
}

// ---------------------------------------------------------------- audit

/// Appends and reads audit records; records are never rewritten.
///
/// Reading is in two steps so that a command pays only for what it shows: [`AuditLog::list`]
/// says which records exist (from a listing, no body read) and [`AuditLog::read`] reads the
/// chosen ones. `deploy_engine::observe::trail::newest` combines them. A record that cannot be read is
/// skipped and named in [`crate::trail::Found::warnings`]; only a store that cannot be
/// reached at all is an error.
#[async_trait]
pub trait AuditLog: Send + Sync + Debug {
    /// Appends one record.
    async fn append(&self, record: &crate::trail::AuditRecord) -> Result<()>;

    /// The records `listing` asks for, oldest first, without reading their bodies.
    async fn list(
        &self,
        listing: crate::trail::Listing<'_>,
    ) -> Result<crate::trail::Found<crate::trail::Entry>>;

    /// The records of `entries`, in their order; one that cannot be read (gone, damaged) is
    /// skipped with a warning.
    async fn read(
        &self,
        entries: &[crate::trail::Entry],
    ) -> Result<crate::trail::Found<crate::trail::AuditRecord>>;

    /// Every record, oldest first: a whole-trail read, one body per record, for tests and
    /// exports (commands read what they show, through `deploy_engine::observe::trail::newest`).
    async fn records(&self) -> Result<Vec<crate::trail::AuditRecord>> {
        let listed = self.list(crate::trail::Listing::default()).await?;
        Ok(self.read(&listed.items).await?.items)
    }
}

/// Wall-clock time, injected so tests run on tokio's paused clock.
pub trait Clock: Send + Sync + Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A bare Application running `images` (Synced, Healthy, synced by hand), for the tests of
/// this crate and of `deploy-engine`.
#[doc(hidden)]
pub fn test_app(name: &str, images: &[&str]) -> Application {
    Application {
        name: name.into(),
        project: "default".into(),
        annotations: BTreeMap::new(),
        labels: BTreeMap::new(),
        destination: "in-cluster".into(),
        sync_mode: SyncMode::Manual,
        helm_parameters: BTreeMap::new(),
        kustomize_images: Vec::new(),
        sync_status: SyncStatus::Synced,
        health: Health::Healthy,
        health_message: None,
        operation_pending: false,
        operation_state: None,
        reconciled_at: None,
        images: images.iter().map(|s| s.to_string()).collect(),
        history: Vec::new(),
        resource_version: "1".into(),
        owner_application_set: None,
        override_sources: None,
    }
}

// Display: the spellings Argo CD uses (and the JSON carries), never Rust's Debug.

impl std::fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Synced => "Synced",
            Self::OutOfSync => "OutOfSync",
            Self::Unknown => "Unknown",
        })
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Healthy => "Healthy",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Suspended => "Suspended",
            Self::Missing => "Missing",
            Self::Unknown => "Unknown",
        })
    }
}

impl std::fmt::Display for OperationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "Running",
            Self::Terminating => "Terminating",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Error => "Error",
        })
    }
}

/// The id of a lock held by `holder`: the first 8 hex digits of its SHA-256. A holder
/// names one process (user, host, pid, boot, PID namespace), so the id stays the same while
/// that run renews the lock and changes when anyone else takes it; it is short enough to
/// type, and every backend can compute it from what it stores.
pub fn lock_id(holder: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(holder.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_parts() {
        let check = |s: &str, name: &str, tag: Option<&str>| {
            assert_eq!(image_name(s), name, "{s}");
            assert_eq!(image_tag(s), tag, "{s}");
        };
        check(
            "1.dkr.ecr.us-west-2.amazonaws.com/staging/api:abc1234",
            "1.dkr.ecr.us-west-2.amazonaws.com/staging/api",
            Some("abc1234"),
        );
        check("localhost:5000/api:v1", "localhost:5000/api", Some("v1"));
        check("localhost:5000/api", "localhost:5000/api", None);
        check("api", "api", None);
        check("api:v2", "api", Some("v2"));
        check("r/api:v2@sha256:abc", "r/api", Some("v2"));
        assert_eq!(kustomize_name("old=new:v1"), "old");
        assert_eq!(kustomize_name("r/api:v1"), "r/api");
    }

    #[test]
    fn display_is_the_upstream_spelling() {
        #[track_caller]
        fn check(shown: impl std::fmt::Display + Serialize, expect: &str) {
            assert_eq!(shown.to_string(), expect);
            assert_eq!(
                serde_json::to_value(&shown).unwrap(),
                expect,
                "the JSON agrees"
            );
        }
        check(SyncStatus::Synced, "Synced");
        check(SyncStatus::OutOfSync, "OutOfSync");
        check(SyncStatus::Unknown, "Unknown");
        check(Health::Healthy, "Healthy");
        check(Health::Progressing, "Progressing");
        check(Health::Degraded, "Degraded");
        check(Health::Suspended, "Suspended");
        check(Health::Missing, "Missing");
        check(Health::Unknown, "Unknown");
        check(OperationPhase::Running, "Running");
        check(OperationPhase::Terminating, "Terminating");
        check(OperationPhase::Succeeded, "Succeeded");
        check(OperationPhase::Failed, "Failed");
        check(OperationPhase::Error, "Error");
    }
}
