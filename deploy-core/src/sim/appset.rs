//! Upstream's ApplicationSet controller on one Application it owns, after a change to it: the
//! revert it makes, on the Application as JSON (the skins that serve JSON objects keep them so).

use serde_json::{Value, json};

/// What an ApplicationSet's template generates for one Application it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The ApplicationSet's name.
    pub set: String,
    /// The generated `spec`.
    pub spec: Value,
    /// The generated `metadata.labels`.
    pub labels: Value,
    /// The generated `metadata.annotations`.
    pub annotations: Value,
}

impl Generated {
    /// What `set` generates for `live` when it owns it from now on: its spec, labels and
    /// annotations as they are.
    pub fn from_live(set: &str, live: &Value) -> Self {
        Self {
            set: set.to_owned(),
            spec: live["spec"].clone(),
            labels: live["metadata"]["labels"].clone(),
            annotations: live["metadata"]
                .get("annotations")
                .cloned()
                .unwrap_or_else(|| json!({})),
        }
    }
}

/// The Application `name` (`live`) as the controller of an ApplicationSet whose spec is
/// `set_spec` leaves it, or `None` when it changes nothing. `default_preserved` are upstream's
/// `defaultPreservedAnnotations` (`notified.notifications.argoproj.io`,
/// `argocd.argoproj.io/refresh`).
///
/// As argo-cd `applicationset/controllers/applicationset_controller.go`
/// (`createOrUpdateInCluster`): `found.Spec = generatedApp.Spec`; the keys of
/// `spec.preservedFields.annotations` plus `defaultPreservedAnnotations` are copied from the
/// live Application into the generated annotations, which then replace the live ones whole;
/// the labels become the template's (keeping `spec.preservedFields.labels`). Then
/// `applicationset/utils/createOrUpdate.go` (`CreateOrUpdate`, `applyIgnoreDifferences`)
/// removes the fields `spec.ignoreApplicationDifferences` names from both sides before the
/// patch, so the live values of those fields stay. Only JSON pointers are honoured here (not jq
/// path expressions), and a `name` restricts an entry to that Application.
pub fn reconcile(
    name: &str,
    live: &Value,
    generated: &Generated,
    set_spec: &Value,
    default_preserved: &[&str],
) -> Option<Value> {
    let mut desired = live.clone();
    desired["spec"] = generated.spec.clone();
    let keep = |kind: &str, generated: &Value, defaults: &[&str]| -> Value {
        let mut out = generated.as_object().cloned().unwrap_or_default();
        let mut keys: Vec<String> = set_spec["preservedFields"][kind]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        keys.extend(defaults.iter().map(|d| (*d).to_owned()));
        for key in keys {
            if let Some(v) = live["metadata"][kind].get(&key) {
                out.insert(key, v.clone());
            }
        }
        Value::Object(out)
    };
    desired["metadata"]["annotations"] =
        keep("annotations", &generated.annotations, default_preserved);
    desired["metadata"]["labels"] = keep("labels", &generated.labels, &[]);
    for key in ["labels", "annotations"] {
        if desired["metadata"][key]
            .as_object()
            .is_some_and(|m| m.is_empty())
            && live["metadata"].get(key).is_none()
            && let Some(meta) = desired["metadata"].as_object_mut()
        {
            meta.remove(key);
        }
    }
    for entry in set_spec["ignoreApplicationDifferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"].as_str().is_none_or(|n| n.is_empty() || n == name))
    {
        for pointer in entry["jsonPointers"].as_array().into_iter().flatten() {
            let Some(pointer) = pointer.as_str() else {
                continue;
            };
            put(&mut desired, pointer, live.pointer(pointer).cloned());
        }
    }
    (desired != *live).then_some(desired)
}

/// Sets the value at JSON `pointer` in `target` (creating objects on the way), or removes
/// it for `None`.
fn put(target: &mut Value, pointer: &str, value: Option<Value>) {
    let Some(split) = pointer.rfind('/') else {
        return;
    };
    let (parent, last) = (&pointer[..split], &pointer[split + 1..]);
    let last = last.replace("~1", "/").replace("~0", "~");
    if target.pointer(parent).is_none() {
        if value.is_none() || parent.is_empty() {
            return;
        }
        put(target, parent, Some(json!({})));
    }
    match (target.pointer_mut(parent), value) {
        (Some(Value::Object(map)), Some(v)) => {
            map.insert(last, v);
        }
        (Some(Value::Object(map)), None) => {
            map.remove(&last);
        }
        (Some(Value::Array(items)), v) => {
            if let (Ok(i), Some(v)) = (last.parse::<usize>(), v)
                && i < items.len()
            {
                items[i] = v;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_reverts_the_spec_and_keeps_ignored_and_preserved_fields() {
        let live = json!({
            "metadata": { "labels": { "a": "1" }, "annotations": { "mine": "x", "keep": "y" } },
            "spec": { "source": { "helm": { "parameters": [{ "name": "tag", "value": "v2" }] } },
                      "project": "edited" }
        });
        let mut generated = Generated::from_live("set", &live);
        generated.spec["project"] = json!("default");
        generated.spec["source"]["helm"]["parameters"][0]["value"] = json!("v1");
        generated.annotations = json!({});
        let set_spec = json!({
            "preservedFields": { "annotations": ["keep"] },
            "ignoreApplicationDifferences": [{ "jsonPointers": ["/spec/source/helm/parameters"] }]
        });
        let out = reconcile("app", &live, &generated, &set_spec, &[]).expect("a revert");
        assert_eq!(out["spec"]["project"], "default");
        assert_eq!(
            out["spec"]["source"]["helm"]["parameters"][0]["value"],
            "v2"
        );
        assert_eq!(out["metadata"]["annotations"], json!({ "keep": "y" }));
        assert_eq!(reconcile("app", &out, &generated, &set_spec, &[]), None);
    }
}
