//! The Application (`v1alpha1Application`) as Argo CD serves it: spec, sources, status,
//! history and the watch stream's lines, and its port view.

use std::collections::BTreeMap;

use deploy_core::model::SyncMode;
use deploy_core::port::{self, OverrideValue};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::image_override::override_sources;
use super::{Extra, ObjectMeta, Operation, OperationStateWire};

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

/// Which Helm parameters hold the image tag, so that history entries can be read back as
/// [`OverrideValue`]s. Parameters named here are tried first; otherwise a single parameter
/// whose name ends in `tag` (case-insensitive) is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagParameters(pub Vec<String>);

impl TagParameters {
    pub(super) fn pick<'a>(&self, params: &'a [HelmParameter]) -> Option<&'a HelmParameter> {
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
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn app(v: Value) -> Application {
        serde_json::from_value(v).expect("valid application")
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
}
