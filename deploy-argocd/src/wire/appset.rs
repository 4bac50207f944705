//! ApplicationSets (`v1alpha1ApplicationSet`): what `deploy audit` and `render` read of them.

use deploy_core::port;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApplicationSpec, Extra, ObjectMeta, SyncPolicy};

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
