//! Serde types of the Argo CD objects on the wire (Application, ApplicationSet, Cluster) and their
//! conversion to deploy-core port types.
//!
//! The same JSON comes from the REST API (grpc-gateway over Go's `encoding/json`: camelCase,
//! `omitempty`) and from the Kubernetes API (the CRD objects), so these types know nothing about
//! HTTP. Every field is optional because Argo CD omits empty ones. Objects we write back whole
//! (sources, Helm and Kustomize sections, Helm parameters) keep unknown fields in `extra`, so a
//! patch built from them never drops a field this crate does not model.

use std::collections::BTreeMap;

use deploy_core::model::SyncMode;
use deploy_core::port::{self, OperationPhase, OverrideValue};
use deploy_core::{Error, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Fields this crate does not model, kept for lossless round trips.
pub type Extra = Map<String, Value>;

/// `metadata` of an Argo CD object (`v1ObjectMeta`, the fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Optimistic-concurrency token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The objects that own this one (an ApplicationSet owns the Applications it generates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Everything else (uid, generation, finalizers, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `metadata.ownerReferences` entry (`v1OwnerReference`, the fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// e.g. `argoproj.io/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// e.g. `ApplicationSet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The owner's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Everything else (uid, controller, blockOwnerDeletion).
    #[serde(flatten)]
    pub extra: Extra,
}

impl ObjectMeta {
    /// The name of the ApplicationSet that owns this object: the owner reference of kind
    /// `ApplicationSet` (the controller's one first, as `controllerutil.SetControllerReference`
    /// writes it).
    pub fn owner_application_set(&self) -> Option<String> {
        let sets = || {
            self.owner_references
                .iter()
                .filter(|r| r.kind.as_deref() == Some("ApplicationSet"))
        };
        sets()
            .find(|r| r.extra.get("controller") == Some(&Value::Bool(true)))
            .or_else(|| sets().next())
            .and_then(|r| r.name.clone())
    }
}

/// An Argo CD Application (`v1alpha1Application`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// `argoproj.io/v1alpha1` on the Kubernetes API; absent on the REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Application` on the Kubernetes API; absent on the REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: ApplicationSpec,
    /// The requested or running operation; null when none is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Observed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ApplicationStatus>,
}

/// `spec` of an Application (`v1alpha1ApplicationSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// AppProject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The single source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// Sources of a multi-source Application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<ApplicationSource>,
    /// Target cluster and namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Sync policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One source (`v1alpha1ApplicationSource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSource {
    /// Repository URL.
    #[serde(rename = "repoURL", default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// Path in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Branch, tag, SHA or chart version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// Helm chart name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// Helm options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<Helm>,
    /// Kustomize options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<Kustomize>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `source.helm` (`v1alpha1ApplicationSourceHelm`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Helm {
    /// `--set` parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<HelmParameter>,
    /// Everything else (valueFiles, values, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One Helm parameter (`v1alpha1HelmParameter`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmParameter {
    /// Name, e.g. `image.tag`.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
    /// Everything else (forceString).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `source.kustomize` (`v1alpha1ApplicationSourceKustomize`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kustomize {
    /// Image overrides, `name:tag` or `old=new:tag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.destination`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cluster API server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.syncPolicy` (`v1alpha1SyncPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Automated sync; `None` is manual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<Automated>,
    /// Sync options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    /// Everything else (retry, managedNamespaceMetadata).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.syncPolicy.automated` (`v1alpha1SyncPolicyAutomated`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Automated {
    /// Delete resources no longer in git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Revert drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
    /// Allow syncing to an empty set of resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
    /// `false` turns automation off while keeping the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl SyncPolicy {
    /// Argo CD's `IsAutomatedSyncEnabled`: `automated` set and `enabled` not false.
    pub fn sync_mode(policy: Option<&SyncPolicy>) -> SyncMode {
        match policy.and_then(|p| p.automated.as_ref()) {
            Some(a) if a.enabled != Some(false) => SyncMode::Automated {
                prune: a.prune.unwrap_or(false),
                self_heal: a.self_heal.unwrap_or(false),
            },
            _ => SyncMode::Manual,
        }
    }
}

/// A name/value pair (`v1alpha1Info`), e.g. an operation's `info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// Who started an operation (`v1alpha1OperationInitiator`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Initiator {
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Started by auto-sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<bool>,
}

/// The top-level `operation` and `status.operationState.operation` (`v1alpha1Operation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// A sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncOperation>,
    /// Who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiated_by: Option<Initiator>,
    /// Free-form name/value pairs; `deploy` stores its operation id here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<Info>,
    /// Everything else (retry).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Operation {
    /// The operation `deploy` starts for a sync request, as Argo CD's sync endpoint would
    /// record it (used by the Kubernetes backend, which writes `.operation` itself).
    pub fn for_sync(request: &port::SyncRequest, username: Option<&str>) -> Self {
        Self {
            sync: Some(SyncOperation {
                prune: Some(request.prune).filter(|p| *p),
                ..SyncOperation::default()
            }),
            initiated_by: Some(Initiator {
                username: username.map(str::to_owned),
                automated: None,
            }),
            info: vec![operation_info(&request.operation_id)],
            extra: Extra::new(),
        }
    }
}

/// The `info` entry that marks an operation as ours.
pub fn operation_info(operation_id: &str) -> Info {
    Info {
        name: port::OPERATION_INFO_KEY.to_owned(),
        value: operation_id.to_owned(),
    }
}

/// `operation.sync` (`v1alpha1SyncOperation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperation {
    /// Revision to sync to; empty is the source's targetRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Delete resources no longer in git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The source to sync, when it differs from the spec (rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// Sync options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    /// Everything else (resources, syncStrategy, revisions, sources, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status` of an Application (`v1alpha1ApplicationStatus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// Comparison with git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatusWire>,
    /// Health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The last or current operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_state: Option<OperationStateWire>,
    /// Last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<Timestamp>,
    /// Images and URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Successful syncs, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionHistory>,
    /// Per-resource status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceStatus>,
    /// Everything else (conditions, observedAt, sourceType, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.sync` (`v1alpha1SyncStatus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatusWire {
    /// `Synced`, `OutOfSync` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Revision the comparison used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Everything else (revisions, comparedTo).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.health` and a resource's `health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Everything else (lastTransitionTime).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `status.resources` entry (the fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.operationState` (`v1alpha1OperationState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStateWire {
    /// `Running`, `Terminating`, `Succeeded`, `Failed` or `Error`.
    #[serde(default)]
    pub phase: String,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The operation being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// End; set when the operation completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Everything else (syncResult, retryCount).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.summary` (`v1alpha1ApplicationSummary`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Images of the child resources: what runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Everything else (externalURLs).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `status.history` entry (`v1alpha1RevisionHistory`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionHistory {
    /// Id, +1 per entry (a JSON number on the wire).
    #[serde(default)]
    pub id: i64,
    /// Resolved git revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When it was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<Timestamp>,
    /// The source that was synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// The sources of a multi-source sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<ApplicationSource>,
    /// Everything else (revisions, deployStartedAt, initiatedBy).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `v1alpha1ApplicationList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplicationList {
    /// The Applications.
    #[serde(default)]
    pub items: Vec<Application>,
}

/// One line of `GET /api/v1/stream/applications`: a result or a stream error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamLine {
    /// An event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<WatchEvent>,
    /// A mid-stream failure (`runtimeStreamError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StreamError>,
}

/// `v1alpha1ApplicationWatchEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The whole Application.
    pub application: Application,
}

/// `runtimeStreamError`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamError {
    /// gRPC code.
    #[serde(default)]
    pub grpc_code: i32,
    /// HTTP status.
    #[serde(default)]
    pub http_code: i32,
    /// Message.
    #[serde(default)]
    pub message: String,
}

// ---------------------------------------------------------------- ApplicationSet

/// An ApplicationSet (`v1alpha1ApplicationSet`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSet {
    /// `argoproj.io/v1alpha1` on the Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `ApplicationSet` on the Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ApplicationSetSpec,
    /// Status, unmodelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// `spec` of an ApplicationSet (the fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSetSpec {
    /// The Application template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ApplicationSetTemplate>,
    /// Fields of generated Applications the controller leaves alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_application_differences: Vec<IgnoreApplicationDifferences>,
    /// Labels and annotations of generated Applications the controller keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserved_fields: Option<PreservedFields>,
    /// Everything else (generators, syncPolicy of the set, strategy, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplicationSetTemplate {
    /// Template metadata (name, labels, annotations with placeholders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Application spec template.
    #[serde(default)]
    pub spec: ApplicationSpec,
}

/// One `spec.ignoreApplicationDifferences` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreApplicationDifferences {
    /// Application name it applies to; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON pointers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_pointers: Vec<String>,
    /// jq path expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jq_path_expressions: Vec<String>,
}

/// `spec.preservedFields` (`v1alpha1ApplicationPreservedFields`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreservedFields {
    /// Annotation keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Label keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// `v1alpha1ApplicationSetList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplicationSetList {
    /// The ApplicationSets.
    #[serde(default)]
    pub items: Vec<ApplicationSet>,
}

// ---------------------------------------------------------------- Cluster

/// A cluster registered in Argo CD (`v1alpha1Cluster`, the fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// API server URL.
    #[serde(default)]
    pub server: String,
    /// Deprecated top-level connection state (older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<ConnectionState>,
    /// Cluster info; `info.connectionState` is the current place of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClusterInfoWire>,
}

/// `v1alpha1ClusterInfo` (the field we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfoWire {
    /// Connection state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<ConnectionState>,
}

/// `v1alpha1ConnectionState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    /// `Successful`, `Failed` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `v1alpha1ClusterList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterList {
    /// The clusters.
    #[serde(default)]
    pub items: Vec<Cluster>,
}

// ---------------------------------------------------------------- conversions

/// Which Helm parameters hold the image tag, so that history entries can be read back as
/// [`OverrideValue`]s. Parameters named here are tried first; otherwise a single parameter
/// whose name ends in `tag` (case-insensitive) is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagParameters(pub Vec<String>);

impl TagParameters {
    fn pick<'a>(&self, params: &'a [HelmParameter]) -> Option<&'a HelmParameter> {
        if let Some(p) = self
            .0
            .iter()
            .find_map(|want| params.iter().find(|p| &p.name == want))
        {
            return Some(p);
        }
        let mut tagged = params
            .iter()
            .filter(|p| p.name.to_ascii_lowercase().ends_with("tag"));
        match (tagged.next(), tagged.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }
}

fn sources<'a>(
    spec_source: Option<&'a ApplicationSource>,
    many: &'a [ApplicationSource],
) -> Vec<&'a ApplicationSource> {
    spec_source.into_iter().chain(many.iter()).collect()
}

fn sync_status(s: Option<&str>) -> port::SyncStatus {
    match s {
        Some("Synced") => port::SyncStatus::Synced,
        Some("OutOfSync") => port::SyncStatus::OutOfSync,
        _ => port::SyncStatus::Unknown,
    }
}

/// Maps `health.status` to [`port::Health`]; unknown words are `Unknown`.
pub fn health(s: Option<&str>) -> port::Health {
    match s {
        Some("Healthy") => port::Health::Healthy,
        Some("Progressing") => port::Health::Progressing,
        Some("Degraded") => port::Health::Degraded,
        Some("Suspended") => port::Health::Suspended,
        Some("Missing") => port::Health::Missing,
        _ => port::Health::Unknown,
    }
}

/// Maps an operation phase; an unknown word counts as running until `finishedAt` is set.
pub fn phase(s: &str, finished: bool) -> OperationPhase {
    match s {
        "Running" => OperationPhase::Running,
        "Terminating" => OperationPhase::Terminating,
        "Succeeded" => OperationPhase::Succeeded,
        "Failed" => OperationPhase::Failed,
        "Error" => OperationPhase::Error,
        _ if finished => OperationPhase::Error,
        _ => OperationPhase::Running,
    }
}

impl OperationStateWire {
    /// The port view.
    pub fn to_port(&self) -> port::OperationState {
        let op = self.operation.as_ref();
        let initiated_by = op.and_then(|o| o.initiated_by.as_ref()).and_then(|i| {
            i.username
                .clone()
                .or_else(|| i.automated.filter(|a| *a).map(|_| "automated".to_owned()))
        });
        port::OperationState {
            phase: phase(&self.phase, self.finished_at.is_some()),
            message: self.message.clone().unwrap_or_default(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            initiated_by,
            info: op
                .map(|o| {
                    o.info
                        .iter()
                        .map(|i| (i.name.clone(), i.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl RevisionHistory {
    /// The image override in force for this entry, read from its source(s).
    pub fn override_value(&self, tags: &TagParameters) -> Option<OverrideValue> {
        let srcs = sources(self.source.as_ref(), &self.sources);
        let images: Vec<String> = srcs
            .iter()
            .filter_map(|s| s.kustomize.as_ref())
            .flat_map(|k| k.images.iter().cloned())
            .collect();
        if !images.is_empty() {
            return Some(OverrideValue::Kustomize { images });
        }
        let params: Vec<HelmParameter> = srcs
            .iter()
            .filter_map(|s| s.helm.as_ref())
            .flat_map(|h| h.parameters.iter().cloned())
            .collect();
        tags.pick(&params).map(|p| OverrideValue::Helm {
            parameter: p.name.clone(),
            value: p.value.clone(),
            digests: Default::default(),
        })
    }
}

impl Application {
    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The port view of this Application.
    pub fn to_port(&self, tags: &TagParameters) -> port::Application {
        let spec = &self.spec;
        let srcs = sources(spec.source.as_ref(), &spec.sources);
        let mut helm_parameters = BTreeMap::new();
        for p in srcs
            .iter()
            .filter_map(|s| s.helm.as_ref())
            .flat_map(|h| h.parameters.iter())
        {
            helm_parameters
                .entry(p.name.clone())
                .or_insert_with(|| p.value.clone());
        }
        let kustomize_images = srcs
            .iter()
            .filter_map(|s| s.kustomize.as_ref())
            .flat_map(|k| k.images.iter().cloned())
            .collect();
        let status = self.status.clone().unwrap_or_default();
        let health_message = status
            .health
            .as_ref()
            .and_then(|h| h.message.clone())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                status.resources.iter().find_map(|r| {
                    let h = r.health.as_ref()?;
                    (h.status.as_deref() == Some("Degraded")).then(|| {
                        format!(
                            "{} {}: {}",
                            r.kind.as_deref().unwrap_or("resource"),
                            r.name.as_deref().unwrap_or_default(),
                            h.message.as_deref().unwrap_or("Degraded")
                        )
                    })
                })
            });
        let destination = spec
            .destination
            .as_ref()
            .and_then(|d| d.name.clone().or_else(|| d.server.clone()))
            .unwrap_or_default();
        port::Application {
            name: self.name().to_owned(),
            project: spec.project.clone().unwrap_or_else(|| "default".into()),
            annotations: self.metadata.annotations.clone(),
            labels: self.metadata.labels.clone(),
            destination,
            sync_mode: SyncPolicy::sync_mode(spec.sync_policy.as_ref()),
            helm_parameters,
            kustomize_images,
            sync_status: sync_status(status.sync.as_ref().and_then(|s| s.status.as_deref())),
            health: health(status.health.as_ref().and_then(|h| h.status.as_deref())),
            health_message,
            operation_pending: self.operation.is_some(),
            operation_state: status
                .operation_state
                .as_ref()
                .map(OperationStateWire::to_port),
            reconciled_at: status.reconciled_at,
            images: status.summary.map(|s| s.images).unwrap_or_default(),
            history: status
                .history
                .iter()
                .map(|h| port::HistoryEntry {
                    id: h.id,
                    revision: h.revision.clone().unwrap_or_default(),
                    deployed_at: h.deployed_at,
                    override_value: h.override_value(tags),
                })
                .collect(),
            resource_version: self.metadata.resource_version.clone().unwrap_or_default(),
            owner_application_set: self.metadata.owner_application_set(),
            override_sources: override_sources(spec, tags),
        }
    }

    /// The RFC 7386 merge patch that sets `value` as the image override, keeping every other
    /// Helm parameter and Kustomize image (merge patches replace arrays whole, so the patch
    /// carries the full list). It also carries `metadata.resourceVersion`: on the Kubernetes
    /// API that makes the update conditional (a concurrent change is a conflict, not lost);
    /// the Argo CD API server applies patches to the object it reads itself, so there it only
    /// narrows the window between our read and the write.
    pub fn override_patch(&self, value: &OverrideValue) -> Result<Value> {
        let rv = self.metadata.resource_version.clone();
        let spec = &self.spec;
        let source_patch = |source: &ApplicationSource| -> Value {
            let mut s = source.clone();
            apply_override(&mut s, value);
            match value {
                OverrideValue::Helm { .. } => {
                    json!({ "helm": { "parameters": s.helm.map(|h| h.parameters).unwrap_or_default() } })
                }
                OverrideValue::Kustomize { .. } => {
                    json!({ "kustomize": { "images": s.kustomize.map(|k| k.images).unwrap_or_default() } })
                }
            }
        };
        let spec_patch = if let Some(source) = &spec.source {
            json!({ "source": source_patch(source) })
        } else if !spec.sources.is_empty() {
            let at = pick_source(&spec.sources, value);
            let mut all = spec.sources.clone();
            apply_override(&mut all[at], value);
            json!({ "sources": all })
        } else {
            return Err(Error::invalid(format!(
                "application {} has no source to set the image override in",
                self.name()
            )));
        };
        let mut patch = json!({ "spec": spec_patch });
        if let Some(rv) = rv {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        Ok(patch)
    }

    /// The merge patch that restores the override-bearing fields (Helm parameters, Kustomize
    /// images) of history entry `entry`, keeping the rest of the spec.
    pub fn restore_patch(&self, entry: &RevisionHistory) -> Result<Value> {
        let spec = &self.spec;
        let restore = |now: &ApplicationSource, then: &ApplicationSource| -> Value {
            let mut v = json!({});
            if then.helm.is_some() || now.helm.is_some() {
                v["helm"] = json!({ "parameters": then.helm.as_ref().map(|h| h.parameters.clone()).unwrap_or_default() });
            }
            if then.kustomize.is_some() || now.kustomize.is_some() {
                v["kustomize"] = json!({ "images": then.kustomize.as_ref().map(|k| k.images.clone()).unwrap_or_default() });
            }
            v
        };
        let spec_patch = match (&spec.source, &entry.source) {
            (Some(now), Some(then)) => json!({ "source": restore(now, then) }),
            (None, _) if !spec.sources.is_empty() && spec.sources.len() == entry.sources.len() => {
                let mut all = spec.sources.clone();
                for (now, then) in all.iter_mut().zip(&entry.sources) {
                    now.helm = then.helm.clone().or_else(|| {
                        now.helm.take().map(|h| Helm {
                            parameters: Vec::new(),
                            ..h
                        })
                    });
                    now.kustomize = then.kustomize.clone().or_else(|| {
                        now.kustomize.take().map(|k| Kustomize {
                            images: Vec::new(),
                            ..k
                        })
                    });
                }
                json!({ "sources": all })
            }
            _ => {
                return Err(Error::invalid(format!(
                    "history entry {} of application {} does not record a source this one can return to",
                    entry.id,
                    self.name()
                )));
            }
        };
        let mut patch = json!({ "spec": spec_patch });
        if let Some(rv) = &self.metadata.resource_version {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        Ok(patch)
    }
}

/// The RFC 6902 patch that sets `value` as the image override from `raw_spec`, the `spec` of
/// an Application exactly as Argo CD served it: a `test` that the array to change (the Helm
/// parameters or Kustomize images of the single source, or all `sources`) still is what
/// `raw_spec` holds, then its `replace`. Argo CD applies a JSON patch to the Application it has
/// just read (`Patch` in server/application/application.go at 37ee0097: `jsonpatch.DecodePatch`,
/// then `Apply` to the marshalled object), so the write is refused (HTTP 500, "testing value
/// ... failed") when anyone changed that array since `raw_spec` was read, however old the read.
///
/// `None` when this form does not apply: the array is absent in `raw_spec` (a `test` cannot
/// assert absence), or the override is already in place.
pub fn guarded_override_patch(raw_spec: &Value, value: &OverrideValue) -> Option<Vec<Value>> {
    let spec: ApplicationSpec = serde_json::from_value(raw_spec.clone()).ok()?;
    let (pointer, new) = if let Some(source) = &spec.source {
        let mut s = source.clone();
        apply_override(&mut s, value);
        match value {
            OverrideValue::Helm { .. } => (
                "/source/helm/parameters",
                serde_json::to_value(s.helm.map(|h| h.parameters).unwrap_or_default()).ok()?,
            ),
            OverrideValue::Kustomize { .. } => (
                "/source/kustomize/images",
                serde_json::to_value(s.kustomize.map(|k| k.images).unwrap_or_default()).ok()?,
            ),
        }
    } else if !spec.sources.is_empty() {
        let mut all = spec.sources.clone();
        let at = pick_source(&all, value);
        apply_override(&mut all[at], value);
        ("/sources", serde_json::to_value(all).ok()?)
    } else {
        return None;
    };
    let current = raw_spec.pointer(pointer)?;
    if *current == new {
        return None;
    }
    let path = format!("/spec{pointer}");
    Some(vec![
        json!({ "op": "test", "path": path, "value": current }),
        json!({ "op": "replace", "path": path, "value": new }),
    ])
}

/// Which source of a multi-source Application the override patch writes ([`pick_source`]),
/// for each kind of override; `None` for a single `spec.source`. The Helm parameter is the tag
/// parameter found in the sources, else the first configured one.
fn override_sources(spec: &ApplicationSpec, tags: &TagParameters) -> Option<port::OverrideSources> {
    if spec.source.is_some() || spec.sources.is_empty() {
        return None;
    }
    let params: Vec<HelmParameter> = spec
        .sources
        .iter()
        .filter_map(|s| s.helm.as_ref())
        .flat_map(|h| h.parameters.iter().cloned())
        .collect();
    let parameter = tags
        .pick(&params)
        .map(|p| p.name.clone())
        .or_else(|| tags.0.first().cloned())
        .unwrap_or_default();
    let images = spec
        .sources
        .iter()
        .filter_map(|s| s.kustomize.as_ref())
        .flat_map(|k| k.images.iter().cloned())
        .collect();
    let helm = OverrideValue::Helm {
        parameter,
        value: String::new(),
        digests: Default::default(),
    };
    Some(port::OverrideSources {
        helm: pick_source(&spec.sources, &helm),
        kustomize: pick_source(&spec.sources, &OverrideValue::Kustomize { images }),
    })
}

/// The source of a multi-source Application that carries (or should carry) the override.
fn pick_source(sources: &[ApplicationSource], value: &OverrideValue) -> usize {
    let found = match value {
        OverrideValue::Helm { parameter, .. } => sources
            .iter()
            .position(|s| {
                s.helm
                    .as_ref()
                    .is_some_and(|h| h.parameters.iter().any(|p| &p.name == parameter))
            })
            .or_else(|| {
                sources
                    .iter()
                    .position(|s| s.helm.is_some() || s.chart.is_some())
            }),
        OverrideValue::Kustomize { images } => sources
            .iter()
            .position(|s| {
                s.kustomize.as_ref().is_some_and(|k| {
                    k.images.iter().any(|i| {
                        images
                            .iter()
                            .any(|n| port::kustomize_name(n) == port::kustomize_name(i))
                    })
                })
            })
            .or_else(|| sources.iter().position(|s| s.kustomize.is_some())),
    };
    found.unwrap_or(0)
}

/// Sets `value` in `source`, keeping every other parameter or image.
pub fn apply_override(source: &mut ApplicationSource, value: &OverrideValue) {
    match value {
        OverrideValue::Helm {
            parameter,
            value,
            digests,
        } => {
            let helm = source.helm.get_or_insert_with(Helm::default);
            // The tag, then (pinned by digest) each service's digest parameter.
            for (name, value) in std::iter::once((parameter, value)).chain(digests) {
                match helm.parameters.iter_mut().find(|p| &p.name == name) {
                    Some(p) => p.value.clone_from(value),
                    None => helm.parameters.push(HelmParameter {
                        name: name.clone(),
                        value: value.clone(),
                        extra: Extra::new(),
                    }),
                }
            }
        }
        OverrideValue::Kustomize { images } => {
            let k = source.kustomize.get_or_insert_with(Kustomize::default);
            for new in images {
                let name = port::kustomize_name(new);
                match k
                    .images
                    .iter_mut()
                    .find(|i| port::kustomize_name(i) == name)
                {
                    Some(i) => i.clone_from(new),
                    None => k.images.push(new.clone()),
                }
            }
        }
    }
}

impl ApplicationSet {
    /// The port view.
    pub fn to_port(&self) -> port::ApplicationSet {
        port::ApplicationSet {
            name: self.metadata.name.clone().unwrap_or_default(),
            sync_mode: SyncPolicy::sync_mode(
                self.spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.sync_policy.as_ref()),
            ),
            ignore_differences: self
                .spec
                .ignore_application_differences
                .iter()
                .map(|d| port::IgnoreDifferences {
                    name: d.name.clone().filter(|n| !n.is_empty()),
                    json_pointers: d.json_pointers.clone(),
                    jq_path_expressions: d.jq_path_expressions.clone(),
                })
                .collect(),
            preserved_annotations: self
                .spec
                .preserved_fields
                .as_ref()
                .map(|p| p.annotations.clone())
                .unwrap_or_default(),
            annotations: self.metadata.annotations.clone(),
            resource_version: self.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

impl Cluster {
    /// The port view: connected when the connection state is `Successful`.
    pub fn to_port(&self) -> port::ClusterInfo {
        let state = self
            .info
            .as_ref()
            .and_then(|i| i.connection_state.as_ref())
            .or(self.connection_state.as_ref());
        port::ClusterInfo {
            name: self.name.clone(),
            server: self.server.clone(),
            connected: state.is_some_and(|s| s.status == "Successful"),
            message: state
                .and_then(|s| s.message.clone())
                .filter(|m| !m.is_empty()),
        }
    }
}

/// RFC 7386 JSON merge patch: applies `patch` to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(v: Value) -> Application {
        serde_json::from_value(v).expect("valid application")
    }

    #[test]
    fn helm_override_keeps_other_parameters_and_fields() {
        let a = app(json!({
            "metadata": {"name": "a", "resourceVersion": "7"},
            "spec": {"source": {"repoURL": "r", "helm": {"valueFiles": ["v.yaml"], "parameters": [
                {"name": "replicas", "value": "2", "forceString": true},
                {"name": "image.tag", "value": "v1"}
            ]}}}
        }));
        let patch = a
            .override_patch(&OverrideValue::Helm {
                parameter: "image.tag".into(),
                value: "v2".into(),
                digests: Default::default(),
            })
            .unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7"}, "spec": {"source": {"helm": {"parameters": [
                {"name": "replicas", "value": "2", "forceString": true},
                {"name": "image.tag", "value": "v2"}
            ]}}}})
        );
        let mut whole = serde_json::to_value(&a).unwrap();
        merge_patch(&mut whole, &patch);
        let after = app(whole).to_port(&TagParameters::default());
        assert_eq!(after.helm_parameters["image.tag"], "v2");
        assert_eq!(after.helm_parameters["replicas"], "2");
    }

    #[test]
    fn kustomize_override_replaces_by_name_and_appends() {
        let mut s = ApplicationSource {
            kustomize: Some(Kustomize {
                images: vec!["r/api:v1".into(), "other=x/other:v9".into()],
                extra: Extra::new(),
            }),
            ..ApplicationSource::default()
        };
        apply_override(
            &mut s,
            &OverrideValue::Kustomize {
                images: vec!["r/api:v2".into(), "r/worker:v2".into()],
            },
        );
        assert_eq!(
            s.kustomize.unwrap().images,
            ["r/api:v2", "other=x/other:v9", "r/worker:v2"]
        );
    }

    #[test]
    fn multi_source_patch_carries_every_source() {
        let a = app(json!({
            "metadata": {"name": "a"},
            "spec": {"sources": [
                {"repoURL": "values", "ref": "values"},
                {"repoURL": "charts", "chart": "c", "helm": {"parameters": [{"name": "image.tag", "value": "v1"}]}}
            ]}
        }));
        let patch = a
            .override_patch(&OverrideValue::Helm {
                parameter: "image.tag".into(),
                value: "v2".into(),
                digests: Default::default(),
            })
            .unwrap();
        assert_eq!(
            patch["spec"]["sources"][0],
            json!({"repoURL": "values", "ref": "values"})
        );
        assert_eq!(
            patch["spec"]["sources"][1]["helm"]["parameters"][0]["value"],
            "v2"
        );
    }

    /// `override_sources` names the source the override patch writes: each case is a spec,
    /// then the expected (Helm, Kustomize) indices, `None` for a single source.
    #[test]
    fn override_sources_name_the_source_the_patch_writes() {
        #[track_caller]
        fn case(spec: Value, want: Option<(usize, usize)>) {
            let a = app(json!({"metadata": {"name": "a"}, "spec": spec}));
            let tags = TagParameters(vec!["image.tag".into()]);
            let got = a.to_port(&tags).override_sources;
            assert_eq!(got.map(|o| (o.helm, o.kustomize)), want, "{spec}");
            let Some(got) = got else { return };
            // The patch writes exactly there.
            for (value, at) in [
                (
                    OverrideValue::Helm {
                        parameter: "image.tag".into(),
                        value: "v9".into(),
                        digests: Default::default(),
                    },
                    got.helm,
                ),
                (
                    OverrideValue::Kustomize {
                        images: vec!["r/api:v9".into()],
                    },
                    got.kustomize,
                ),
            ] {
                let patch = a.override_patch(&value).unwrap();
                let changed: Vec<usize> = (0..a.spec.sources.len())
                    .filter(|i| {
                        patch["spec"]["sources"][i]
                            != serde_json::to_value(&a.spec.sources[*i]).unwrap()
                    })
                    .collect();
                assert_eq!(changed, [at], "{value:?} in {spec}");
            }
        }
        let values = json!({"repoURL": "values", "ref": "values"});
        let chart = json!({"repoURL": "charts", "chart": "c", "helm": {"parameters": [{"name": "image.tag", "value": "v1"}]}});
        let other = json!({"repoURL": "other", "chart": "o", "helm": {"parameters": [{"name": "replicas", "value": "2"}]}});
        let kust = json!({"repoURL": "k", "path": "k", "kustomize": {"images": ["r/api:v1"]}});
        case(json!({"source": chart}), None);
        case(json!({"source": chart, "sources": [values]}), None);
        case(json!({"sources": [values, chart]}), Some((1, 0)));
        case(json!({"sources": [other, values, chart]}), Some((2, 0)));
        // No tag parameter yet: the first Helm chart, as the patch would write it.
        case(json!({"sources": [values, other]}), Some((1, 0)));
        case(json!({"sources": [values, other, kust]}), Some((1, 2)));
        case(json!({"sources": [kust, chart]}), Some((1, 0)));
    }

    #[test]
    fn conversion_reads_status_operation_and_history() {
        let a = app(json!({
            "metadata": {"name": "a", "resourceVersion": "3", "labels": {"env": "prod"}},
            "spec": {"project": "p", "destination": {"server": "https://k", "name": "us"},
                     "syncPolicy": {"automated": {"prune": true, "enabled": false}},
                     "source": {"helm": {"parameters": [{"name": "image.tag", "value": "v2"}]}}},
            "operation": {"sync": {}, "info": [{"name": "deploy.operation", "value": "op1"}]},
            "status": {
                "sync": {"status": "OutOfSync"},
                "health": {"status": "Degraded"},
                "resources": [{"kind": "Deployment", "name": "api", "health": {"status": "Degraded", "message": "crash"}}],
                "reconciledAt": "2026-01-01T00:00:05Z",
                "operationState": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z",
                    "operation": {"initiatedBy": {"username": "ci"}, "info": [{"name": "deploy.operation", "value": "op1"}]}},
                "summary": {"images": ["r/api:v1"]},
                "history": [{"id": 4, "revision": "abc", "deployedAt": "2026-01-01T00:00:00Z",
                    "source": {"helm": {"parameters": [{"name": "replicas", "value": "1"}, {"name": "image.tag", "value": "v1"}]}}}]
            }
        }));
        let p = a.to_port(&TagParameters::default());
        assert_eq!(p.sync_mode, SyncMode::Manual, "enabled: false is manual");
        assert_eq!(p.destination, "us");
        assert!(p.operation_pending);
        let op = p.operation_state.unwrap();
        assert_eq!(op.deploy_operation(), Some("op1"));
        assert_eq!(op.initiated_by.as_deref(), Some("ci"));
        assert_eq!(p.health, port::Health::Degraded);
        assert_eq!(p.health_message.as_deref(), Some("Deployment api: crash"));
        assert_eq!(
            p.history[0].override_value,
            Some(OverrideValue::Helm {
                parameter: "image.tag".into(),
                value: "v1".into(),
                digests: Default::default(),
            })
        );
        assert_eq!(p.resource_version, "3");
    }

    #[test]
    fn cluster_state_from_info_or_legacy_field() {
        let c: Cluster = serde_json::from_value(json!({"name": "a", "server": "s",
            "info": {"connectionState": {"status": "Successful"}}}))
        .unwrap();
        assert!(c.to_port().connected);
        let c: Cluster = serde_json::from_value(json!({"name": "a", "server": "s",
            "connectionState": {"status": "Failed", "message": "timeout"}}))
        .unwrap();
        let p = c.to_port();
        assert!(!p.connected);
        assert_eq!(p.message.as_deref(), Some("timeout"));
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }

    #[test]
    fn the_guarded_override_patch_tests_exactly_what_it_replaces() {
        let helm = |parameter: &str, value: &str| OverrideValue::Helm {
            parameter: parameter.into(),
            value: value.into(),
            digests: Default::default(),
        };
        let spec = json!({"source": {"repoURL": "r", "helm": {"valueFiles": ["v.yaml"], "parameters": [
            {"name": "replicas", "value": "3"}, {"name": "image.tag", "value": "v1", "forceString": true}
        ]}}});
        let ops = guarded_override_patch(&spec, &helm("image.tag", "v2")).unwrap();
        assert_eq!(
            Value::Array(ops),
            json!([
                {"op": "test", "path": "/spec/source/helm/parameters", "value": [
                    {"name": "replicas", "value": "3"}, {"name": "image.tag", "value": "v1", "forceString": true}]},
                {"op": "replace", "path": "/spec/source/helm/parameters", "value": [
                    {"name": "replicas", "value": "3"}, {"name": "image.tag", "value": "v2", "forceString": true}]},
            ])
        );
        // Already in place, or nothing to test against: the read-and-merge path decides.
        assert!(guarded_override_patch(&spec, &helm("image.tag", "v1")).is_none());
        assert!(
            guarded_override_patch(&json!({"source": {"repoURL": "r"}}), &helm("t", "v")).is_none()
        );
        assert!(guarded_override_patch(&json!({}), &helm("t", "v")).is_none());
        let images = OverrideValue::Kustomize {
            images: vec!["repo/api:v2".into()],
        };
        let multi = json!({"sources": [
            {"repoURL": "a", "path": "p"},
            {"repoURL": "b", "kustomize": {"images": ["repo/api:v1"]}}
        ]});
        let ops = guarded_override_patch(&multi, &images).unwrap();
        assert_eq!(ops[0]["path"], "/spec/sources");
        assert_eq!(ops[0]["value"], multi["sources"]);
        assert_eq!(
            ops[1]["value"][1]["kustomize"]["images"],
            json!(["repo/api:v2"])
        );
        assert_eq!(ops[1]["value"][0], multi["sources"][0]);
    }
}
