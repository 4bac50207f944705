//! The JSON the fake serves and writes, as Argo CD's API does: Applications, the
//! ApplicationSet and clusters it starts with, an operation's end, error bodies.

use std::collections::BTreeMap;

use deploy_core::model::SyncMode;
use deploy_core::port::OverrideValue;
use deploy_core::sim::AppSeed;
use deploy_core::sim::operation::{HOOK_FAILED_MESSAGE, SUCCEEDED_MESSAGE};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

pub(super) fn finish(obj: &mut Value, phase: &str, message: &str, now: &str) {
    let state = &mut obj["status"]["operationState"];
    state["phase"] = json!(phase);
    state["message"] = json!(message);
    state["finishedAt"] = json!(now);
    obj.as_object_mut()
        .expect("an application is an object")
        .remove("operation");
    obj["status"]["reconciledAt"] = json!(now);
}

pub(super) fn error(status: u16, code: i32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": message, "code": code, "message": message, "details": []
    }))
}

pub(super) fn permission_denied() -> ResponseTemplate {
    // Without `project`, Argo CD answers a missing app like a forbidden one.
    error(403, 7, "permission denied")
}

/// How someone else's sync ends ([`super::FakeArgo::start_foreign_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignEnd {
    /// Succeeded.
    Succeeded,
    /// Failed on a PostSync hook (a smoke test) after every resource was applied and became
    /// Healthy: the images run the release, Synced and Healthy, yet the operation Failed.
    FailedOnPostSyncHook,
}

/// Ends the foreign sync of `tag` on `obj`: every resource applied and Healthy at `tag`, the
/// history entry written, and the operation ended as `end` says. A failed PostSync hook looks
/// as gitops-engine leaves it ([`HOOK_FAILED_MESSAGE`]), with the hook's result among
/// `syncResult.resources`.
pub(super) fn finish_foreign_sync(
    obj: &mut Value,
    image_names: &[String],
    tag: &str,
    end: ForeignEnd,
    now: &str,
) {
    let revision = "7c3d9e1f";
    let images: Vec<String> = image_names.iter().map(|n| format!("{n}:{tag}")).collect();
    obj["status"]["summary"] = json!({ "images": images });
    obj["status"]["sync"] = json!({ "status": "Synced", "revision": revision });
    obj["status"]["health"] = json!({ "status": "Healthy" });
    let source = obj["spec"]["source"].clone();
    let initiated_by = obj["status"]["operationState"]["operation"]["initiatedBy"].clone();
    let history = obj["status"]["history"]
        .as_array_mut()
        .expect("history is an array");
    let id = history.last().and_then(|h| h["id"].as_i64()).unwrap_or(-1) + 1;
    history.push(json!({
        "id": id, "revision": revision, "deployedAt": now, "deployStartedAt": now,
        "source": source.clone(), "initiatedBy": initiated_by,
    }));
    let mut resources = vec![json!({
        "group": "apps", "version": "v1", "kind": "Deployment", "namespace": "myapp",
        "name": "api", "status": "Synced", "message": "deployment.apps/api configured",
        "hookPhase": "Running", "syncPhase": "Sync"
    })];
    match end {
        ForeignEnd::Succeeded => {
            finish(obj, "Succeeded", SUCCEEDED_MESSAGE, now);
        }
        ForeignEnd::FailedOnPostSyncHook => {
            resources.push(json!({
                "group": "batch", "version": "v1", "kind": "Job", "namespace": "myapp",
                "name": "smoke-test", "status": "Synced",
                "message": "Job has reached the specified backoff limit",
                "hookType": "PostSync", "hookPhase": "Failed", "syncPhase": "PostSync"
            }));
            finish(obj, "Failed", HOOK_FAILED_MESSAGE, now);
        }
    }
    obj["status"]["operationState"]["syncResult"] =
        json!({ "revision": revision, "resources": resources, "source": source });
}

/// The ApplicationSet the fake serves at start: `myapp-prod`, ignoring the Helm parameters
/// and preserving every annotation `deploy` writes (as `deploy render applicationset` does).
pub fn application_set() -> Value {
    let mut set = application_set_without_preserved_fields();
    set["spec"]["preservedFields"] =
        json!({ "annotations": crate::render::preserved_annotations() });
    set
}

/// [`application_set`] as a team may have it: no `spec.preservedFields`.
pub fn application_set_without_preserved_fields() -> Value {
    json!({
        "metadata": { "name": "myapp-prod", "namespace": "argocd", "resourceVersion": "11",
                      "annotations": { "team": "platform" } },
        "spec": {
            "goTemplate": true,
            "generators": [{ "list": { "elements": [{ "cluster": "us-west-2" }, { "cluster": "eu-west-1" }] } }],
            "template": {
                "metadata": { "name": "myapp-prod-{{.cluster}}" },
                "spec": {
                    "project": "default",
                    "source": { "repoURL": "https://git.example.com/myapp.git", "path": "chart", "targetRevision": "HEAD" },
                    "destination": { "name": "{{.cluster}}", "namespace": "myapp" },
                    "syncPolicy": { "syncOptions": ["CreateNamespace=true"] }
                }
            },
            "ignoreApplicationDifferences": [{ "jsonPointers": ["/spec/source/helm/parameters"] }]
        }
    })
}

/// The clusters the fake serves.
pub fn clusters() -> Value {
    json!([
        { "name": "us-west-2", "server": "https://a.eks.amazonaws.com",
          "info": { "connectionState": { "status": "Successful", "attemptedAt": "2026-01-01T00:00:00Z" } } },
        { "name": "eu-west-1", "server": "https://b.eks.amazonaws.com",
          "connectionState": { "status": "Failed", "message": "dial tcp: i/o timeout" } }
    ])
}

/// The image override a source carries, as the controller renders it: its Kustomize images
/// when it has any, else the Helm tag parameter with every other parameter offered as a
/// digest parameter ([`deploy_core::sim::rendered_images`] uses those the chart declares).
pub(super) fn spec_override(source: &Value, tag_parameter: &str) -> OverrideValue {
    let images: Vec<String> = source["kustomize"]["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !images.is_empty() {
        return OverrideValue::Kustomize { images };
    }
    let mut parameters: BTreeMap<String, String> = source["helm"]["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p["name"].as_str()?.to_owned(),
                        p["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    OverrideValue::Helm {
        parameter: tag_parameter.to_owned(),
        value: parameters.remove(tag_parameter).unwrap_or_default(),
        digests: parameters,
    }
}

/// The Application object of `seed`, as Argo CD serves it.
pub fn application(seed: &AppSeed, rv: u64, now: &str) -> Value {
    let tag = &seed.helm_parameters[&seed.tag_parameter];
    let parameters: Vec<Value> = seed
        .helm_parameters
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let source = json!({
        "repoURL": "https://git.example.com/myapp.git", "path": "chart", "targetRevision": "HEAD",
        "helm": { "valueFiles": ["values.yaml"], "parameters": parameters }
    });
    let mut spec = json!({
        "project": "default",
        "source": source,
        "destination": { "name": seed.destination, "namespace": "myapp" },
    });
    if let SyncMode::Automated { prune, self_heal } = seed.sync_mode {
        spec["syncPolicy"] = json!({ "automated": { "prune": prune, "selfHeal": self_heal } });
    }
    let images: Vec<String> = seed
        .image_names
        .iter()
        .map(|n| format!("{n}:{tag}"))
        .collect();
    json!({
        "metadata": {
            "name": seed.name, "namespace": "argocd", "labels": seed.labels,
            "resourceVersion": rv.to_string(), "uid": format!("uid-{}", seed.name),
            "creationTimestamp": now, "generation": 1
        },
        "spec": spec,
        "status": {
            "sync": { "status": "Synced", "revision": "4b1f0c2a" },
            "health": { "status": "Healthy" },
            "reconciledAt": now,
            "summary": { "images": images },
            "history": [{ "id": 0, "revision": "4b1f0c2a", "deployedAt": now, "deployStartedAt": now, "source": source }],
            "sourceType": "Helm"
        }
    })
}

/// `w` as an AppProject's `spec.syncWindows` entry (`v1alpha1SyncWindow`).
pub fn sync_window(w: &deploy_core::window::SyncWindow) -> Value {
    let mut out = json!({
        "kind": w.kind.to_string(), "schedule": w.schedule, "duration": w.duration,
        "manualSync": w.manual_sync, "applications": w.applications,
        "namespaces": w.namespaces, "clusters": w.clusters, "andOperator": w.and_operator,
    });
    if let Some(zone) = &w.time_zone {
        out["timeZone"] = json!(zone);
    }
    out
}
