//! The image override written into an Application's source(s): the merge patch of a
//! read-modify-write, the guarded RFC 6902 patch of a recent read, and which source of a
//! multi-source Application carries it.

use deploy_core::port::{self, OverrideValue};
use deploy_core::{Error, Result};
use serde_json::{Value, json};

use super::{
    Application, ApplicationSource, ApplicationSpec, Extra, Helm, HelmParameter, Kustomize,
    TagParameters,
};

impl Application {
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
pub(super) fn override_sources(
    spec: &ApplicationSpec,
    tags: &TagParameters,
) -> Option<port::OverrideSources> {
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::merge_patch;
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
