//! Serde types of the Argo CD objects on the wire (Application, ApplicationSet, Cluster) and their
//! conversion to deploy-core port types.
//!
//! The same JSON comes from the REST API (grpc-gateway over Go's `encoding/json`: camelCase,
//! `omitempty`) and from the Kubernetes API (the CRD objects), so these types know nothing about
//! HTTP. Every field is optional because Argo CD omits empty ones. Objects we write back whole
//! (sources, Helm and Kustomize sections, Helm parameters) keep unknown fields in `extra`, so a
//! patch built from them never drops a field this crate does not model.
//!
//! One file per resource: `application` (with the watch stream's lines), `operation`,
//! `image_override` (the patches that set a release's images), `appset` and `cluster`; this
//! file holds what they share (`metadata`, the RFC 7386 merge).

mod application;
mod appset;
mod cluster;
mod image_override;
mod operation;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use application::*;
pub use appset::*;
pub use cluster::*;
pub use image_override::*;
pub use operation::*;

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
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }
}
