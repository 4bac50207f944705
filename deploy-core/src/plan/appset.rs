//! Whether the ApplicationSets that generate an environment's Applications leave alone what
//! `deploy` writes to them: the image override (`spec.ignoreApplicationDifferences`) and its
//! annotations (`spec.preservedFields.annotations`). One rule, used by gate 4 of the
//! promotion plan and by `deploy audit`, with the fix as YAML and as Terraform.
//!
//! Upstream's controller (argo-cd `applicationset/controllers/applicationset_controller.go`,
//! `createOrUpdateInCluster`) rebuilds every generated Application from the template on each
//! reconcile, and an edit of the Application triggers one: `found.Spec = generatedApp.Spec`,
//! then `found.ObjectMeta.Annotations = generatedApp.Annotations` after copying back only the
//! keys of `spec.preservedFields.annotations` and its `defaultPreservedAnnotations`
//! ([`CONTROLLER_PRESERVED`]). `applicationset/utils/createOrUpdate.go` (`CreateOrUpdate`,
//! `applyIgnoreDifferences`) then leaves out of the patch only the fields that
//! `spec.ignoreApplicationDifferences` names. So an override outside those fields is reverted
//! and an annotation outside `preservedFields` is erased at once: the lock among them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, Environment, ImageOverride};
use crate::port::{Application, ApplicationSet};

/// Annotations upstream's controller keeps without being told (`defaultPreservedAnnotations`).
pub const CONTROLLER_PRESERVED: [&str; 2] = [
    "notified.notifications.argoproj.io",
    "argocd.argoproj.io/refresh",
];

/// The JSON pointer of the override field of a single-source Application (`spec.source`):
/// what a rendered ApplicationSet ignores.
pub fn override_pointer(kind: &ImageOverride) -> &'static str {
    match kind {
        ImageOverride::Helm { .. } => "/spec/source/helm/parameters",
        ImageOverride::Kustomize => "/spec/source/kustomize/images",
    }
}

/// The JSON pointer of the field `deploy` writes the override to in `app`: in `spec.source`,
/// or for a multi-source Application in the source that carries it (`/spec/sources/N/...`).
pub fn app_override_pointer(kind: &ImageOverride, app: &Application) -> String {
    let Some(at) = app.override_sources else {
        return override_pointer(kind).to_owned();
    };
    match kind {
        ImageOverride::Helm { .. } => format!("/spec/sources/{}/helm/parameters", at.helm),
        ImageOverride::Kustomize => format!("/spec/sources/{}/kustomize/images", at.kustomize),
    }
}

/// Whether `set` ignores the field at `pointer` for every Application it generates: one of
/// its JSON pointers or jq path expressions names that field or one that contains it. A
/// pointer elsewhere, even elsewhere in the same array (`/spec/sources/0/targetRevision` for an
/// override in `/spec/sources/0/helm/parameters`), leaves the override to be reverted.
pub fn ignores(set: &ApplicationSet, pointer: &str) -> bool {
    let field: Vec<&str> = pointer.split('/').skip(1).collect();
    set.ignore_differences
        .iter()
        .filter(|d| d.name.is_none())
        .any(|d| {
            d.json_pointers
                .iter()
                .any(|p| pointer == p || pointer.starts_with(&format!("{p}/")))
                || d.jq_path_expressions.iter().any(|e| {
                    jq_path(e).is_some_and(|steps| {
                        steps.len() <= field.len()
                            && steps.iter().zip(&field).all(|(step, seg)| match step {
                                // A key never indexes an array (`sources["1"]` is an error in jq).
                                JqStep::Key(k) => k == seg && seg.parse::<usize>().is_err(),
                                JqStep::Index(i) => seg.parse() == Ok(*i),
                                JqStep::Each => seg.parse::<usize>().is_ok(),
                            })
                    })
                })
        })
}

/// One step of a jq path expression.
#[derive(Debug, PartialEq)]
enum JqStep {
    /// `.name` or `["name"]`.
    Key(String),
    /// `[N]`.
    Index(usize),
    /// `[]`: every element.
    Each,
}

/// The steps of a simple jq path (`.spec.sources[1].helm`, `.spec.sources[].helm`,
/// `.metadata["x"]`); `None` for anything else (a filter, a pipe), which is never counted
/// as covering the override: the gate must prove it.
fn jq_path(expr: &str) -> Option<Vec<JqStep>> {
    let mut steps = Vec::new();
    let mut rest = expr.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let (inside, after) = r.split_once(']')?;
            let inside = inside.trim();
            steps.push(if inside.is_empty() {
                JqStep::Each
            } else if let Some(key) = inside.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                JqStep::Key(key.to_owned())
            } else {
                JqStep::Index(inside.parse().ok()?)
            });
            rest = after;
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() {
                // `.[N]` or `.[]`.
                if !r.starts_with('[') {
                    return None;
                }
            } else {
                // A jq identifier: `.1` is not a path.
                if key.starts_with(|c: char| c.is_ascii_digit())
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return None;
                }
                steps.push(JqStep::Key(key.to_owned()));
            }
            rest = &r[end..];
        } else {
            return None;
        }
    }
    (!steps.is_empty()).then_some(steps)
}

/// Every annotation `deploy` may write on an Application, whatever the environment: what
/// `deploy render applicationset` preserves.
pub fn every_written_annotation() -> Vec<&'static str> {
    let mut names = crate::model::annotation::WRITTEN.to_vec();
    names.push(crate::model::annotation::LOCK);
    names.push(crate::model::annotation::WATCHED);
    names
}

/// The annotations `deploy` writes on `application` of `env`: the release annotations of
/// every promotion; the lock ([`crate::model::annotation::LOCK`]) only on `lock_carrier`,
/// the Application holding it when the lock is an annotation (`None`: the lock lives
/// elsewhere, a Kubernetes Lease or the state store); `deploy watch`'s record
/// ([`crate::model::annotation::WATCHED`]) in automated environments.
pub fn written_annotations(
    env: &Environment,
    application: &str,
    lock_carrier: Option<&str>,
) -> Vec<&'static str> {
    let mut names = crate::model::annotation::WRITTEN.to_vec();
    if lock_carrier == Some(application) {
        names.push(crate::model::annotation::LOCK);
    }
    if env.sync.is_automated() {
        names.push(crate::model::annotation::WATCHED);
    }
    names
}

/// The ApplicationSet that generates `app`: its owner reference, else the configured
/// `application_set`. The flag says whether the owner reference named it.
pub fn owner(config: &Config, env: &Environment, app: &Application) -> Option<(String, bool)> {
    app.owner_application_set
        .clone()
        .map(|n| (n, true))
        .or_else(|| config.application_set_name(env).map(|n| (n, false)))
}

/// An ApplicationSet that would undo what `deploy` writes to the Applications it generates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uncovered {
    /// The ApplicationSet.
    pub application_set: String,
    /// The environment's Applications it generates.
    pub applications: Vec<String>,
    /// Named by an owner reference but not found in Argo CD: nothing could be checked.
    pub missing: bool,
    /// The override fields (one per source layout among `applications`) that
    /// `spec.ignoreApplicationDifferences` does not cover.
    pub override_pointers: Vec<String>,
    /// Annotations `deploy` writes that `spec.preservedFields.annotations` lacks.
    pub annotations: Vec<String>,
    /// `spec.preservedFields.annotations` as it is.
    pub preserved: Vec<String>,
    /// The Application that carries the lock annotation, when it is among `applications`.
    pub lock_carrier: Option<String>,
}

/// Every ApplicationSet of `env`'s Applications that does not leave `deploy`'s writes alone. Pure.
///
/// An Application no ApplicationSet owns (no owner reference, and no configured
/// `application_set` that exists) is left out: no controller rewrites it.
pub fn check(
    config: &Config,
    env: &Environment,
    apps: &BTreeMap<String, Option<Application>>,
    sets: &BTreeMap<String, Option<ApplicationSet>>,
    lock_carrier: Option<&str>,
) -> Vec<Uncovered> {
    let mut by_set: BTreeMap<String, Uncovered> = BTreeMap::new();
    let mut named: Vec<&Application> = apps.values().flatten().collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    for app in named {
        let Some((name, by_reference)) = owner(config, env, app) else {
            continue;
        };
        let set = sets.get(&name).and_then(Option::as_ref);
        if set.is_none() && !by_reference {
            continue;
        }
        let entry = by_set.entry(name.clone()).or_insert_with(|| Uncovered {
            application_set: name.clone(),
            applications: Vec::new(),
            missing: set.is_none(),
            override_pointers: Vec::new(),
            annotations: Vec::new(),
            preserved: set
                .map(|s| s.preserved_annotations.clone())
                .unwrap_or_default(),
            lock_carrier: None,
        });
        entry.applications.push(app.name.clone());
        if lock_carrier == Some(app.name.as_str()) {
            entry.lock_carrier = Some(app.name.clone());
        }
        if let Some(set) = set {
            let pointer = app_override_pointer(&env.image_override, app);
            if !ignores(set, &pointer) && !entry.override_pointers.contains(&pointer) {
                entry.override_pointers.push(pointer);
            }
            for a in written_annotations(env, &app.name, lock_carrier) {
                let kept = set.preserved_annotations.iter().any(|p| p == a)
                    || CONTROLLER_PRESERVED.contains(&a);
                if !kept && !entry.annotations.iter().any(|x| x == a) {
                    entry.annotations.push(a.to_owned());
                }
            }
        }
    }
    by_set
        .into_values()
        .filter(|u| u.missing || !u.override_pointers.is_empty() || !u.annotations.is_empty())
        .collect()
}

impl Uncovered {
    /// What is wrong, why it matters, and what to do, in one line.
    pub fn problem(&self) -> String {
        let set = &self.application_set;
        let apps = self.applications.join(", ");
        if self.missing {
            return format!(
                "applicationset/{set}, the owner of {apps}, is not served by Argo CD (or this token may not read it): \
                 nothing can say whether its controller would undo deploy's writes; \
                 grant `applicationsets, get` or check the Application's ownerReferences"
            );
        }
        let mut what = Vec::new();
        if !self.override_pointers.is_empty() {
            what.push(format!(
                "it would revert the image override: {} not in spec.ignoreApplicationDifferences",
                self.override_pointers.join(", ")
            ));
        }
        if !self.annotations.is_empty() {
            what.push(format!(
                "it would erase annotations deploy writes: {} not in spec.preservedFields.annotations",
                self.annotations.join(", ")
            ));
        }
        format!(
            "applicationset/{set} (generates {apps}): {}; add them to the ApplicationSet as below, apply it, and run again",
            what.join("; and ")
        )
    }

    /// Which annotation is needed for what, for the annotations that may not apply to
    /// every setup.
    pub fn why(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self
            .annotations
            .iter()
            .any(|a| a == crate::model::annotation::LOCK)
        {
            out.push(format!(
                "{} holds the promotion lock on {} (the lock is an annotation when Argo CD is reached over its API \
                 and no other lock is configured; a Kubernetes Lease or a state store needs no annotation)",
                crate::model::annotation::LOCK,
                self.lock_carrier.as_deref().unwrap_or("the first Application by name"),
            ));
        }
        if self
            .annotations
            .iter()
            .any(|a| a == crate::model::annotation::WATCHED)
        {
            out.push(format!(
                "{} is deploy watch's record of the release it wrote (automated environments only)",
                crate::model::annotation::WATCHED
            ));
        }
        out
    }

    /// The fix as the part of the ApplicationSet's `spec` to set, as a JSON value:
    /// `preservedFields.annotations` as the whole list (what it has plus what is missing),
    /// and the `ignoreApplicationDifferences` entry to add.
    pub fn fix(&self) -> Value {
        let mut spec = serde_json::Map::new();
        if !self.override_pointers.is_empty() {
            spec.insert(
                "ignoreApplicationDifferences".into(),
                json!([{ "jsonPointers": self.override_pointers }]),
            );
        }
        if !self.annotations.is_empty() {
            let mut all = self.preserved.clone();
            all.extend(self.annotations.iter().cloned());
            spec.insert("preservedFields".into(), json!({ "annotations": all }));
        }
        json!({ "spec": spec })
    }

    /// [`Uncovered::fix`] as YAML lines, to merge into the ApplicationSet manifest.
    pub fn fix_yaml(&self) -> Vec<String> {
        let mut out = Vec::new();
        yaml(&mut out, &self.fix(), 0);
        out
    }

    /// [`Uncovered::fix`] as Terraform lines, to merge into the `manifest` of its
    /// `kubernetes_manifest` resource (`terraform fmt` layout).
    pub fn fix_terraform(&self) -> Vec<String> {
        let Value::Object(map) = self.fix() else {
            return Vec::new();
        };
        crate::hcl::attributes(&map, 0)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every line of the fix: the YAML, then the Terraform, each under a heading.
    pub fn fix_lines(&self) -> Vec<String> {
        if self.missing {
            return Vec::new();
        }
        let mut out = self.why();
        out.push(
            "in the ApplicationSet manifest (the list replaces spec.preservedFields.annotations; \
             the ignore entry is added to spec.ignoreApplicationDifferences):"
                .to_owned(),
        );
        out.extend(self.fix_yaml().into_iter().map(|l| format!("  {l}")));
        out.push(format!(
            "or in Terraform, inside manifest = {{ ... }} of resource \"kubernetes_manifest\" for {}:",
            self.application_set
        ));
        out.extend(self.fix_terraform().into_iter().map(|l| format!("  {l}")));
        out
    }
}

/// A small YAML writer for the fix: maps of maps, lists of scalars or maps, plain strings.
fn yaml(out: &mut Vec<String>, value: &Value, level: usize) {
    let pad = "  ".repeat(level);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(_) | Value::Array(_) => {
                        out.push(format!("{pad}{k}:"));
                        yaml(out, v, level + 1);
                    }
                    scalar => out.push(format!("{pad}{k}: {}", yaml_scalar(scalar))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) => {
                        let mut inner = Vec::new();
                        yaml(&mut inner, &Value::Object(map.clone()), level + 1);
                        for (i, line) in inner.into_iter().enumerate() {
                            if i == 0 {
                                out.push(format!("{pad}- {}", line.trim_start()));
                            } else {
                                out.push(line);
                            }
                        }
                    }
                    scalar => out.push(format!("{pad}- {}", yaml_scalar(scalar))),
                }
            }
        }
        scalar => out.push(format!("{pad}{}", yaml_scalar(scalar))),
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        // JSON strings are valid YAML double-quoted scalars.
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EXAMPLE;
    use crate::model::SyncMode;
    use crate::port::{IgnoreDifferences, test_app};

    fn set(name: &str, pointers: &[&str], preserved: &[&str]) -> ApplicationSet {
        ApplicationSet {
            name: name.into(),
            sync_mode: SyncMode::Manual,
            ignore_differences: vec![IgnoreDifferences {
                json_pointers: pointers.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            }],
            preserved_annotations: preserved.iter().map(|p| p.to_string()).collect(),
            annotations: BTreeMap::new(),
            resource_version: "1".into(),
        }
    }

    const HELM: &str = "/spec/source/helm/parameters";
    const RELEASE: [&str; 5] = crate::model::annotation::WRITTEN;
    const LOCK: &str = crate::model::annotation::LOCK;
    const WATCHED: &str = crate::model::annotation::WATCHED;

    /// `(environment, owner reference of every app, sets served, lock on the carrier?)`
    /// → `(set, override pointer missing?, missing annotations, missing set?)` per finding.
    #[track_caller]
    fn check_case(
        env: &str,
        owner: Option<&str>,
        sets: &[ApplicationSet],
        lock: bool,
        want: &[(&str, bool, &[&str], bool)],
    ) {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let env = config.environment(env).unwrap();
        let apps: BTreeMap<String, Option<Application>> = config
            .clusters
            .iter()
            .map(|c| {
                let mut app = test_app(&config.application_name(env, c), &[]);
                app.owner_application_set = owner.map(str::to_owned);
                (c.name.clone(), Some(app))
            })
            .collect();
        let sets: BTreeMap<String, Option<ApplicationSet>> = sets
            .iter()
            .map(|s| (s.name.clone(), Some(s.clone())))
            .collect();
        let carrier = crate::lock::carrier(&config, env);
        let got = check(
            &config,
            env,
            &apps,
            &sets,
            carrier.as_deref().filter(|_| lock),
        );
        let got: Vec<(String, bool, Vec<String>, bool)> = got
            .into_iter()
            .map(|u| {
                (
                    u.application_set,
                    !u.override_pointers.is_empty(),
                    u.annotations,
                    u.missing,
                )
            })
            .collect();
        let want: Vec<(String, bool, Vec<String>, bool)> = want
            .iter()
            .map(|(s, o, a, m)| {
                (
                    s.to_string(),
                    *o,
                    a.iter().map(|x| x.to_string()).collect(),
                    *m,
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn gate_rule_cases() {
        let all = every_written_annotation();
        let full = set("myapp-prod", &[HELM], &all);
        let mut release_lock: Vec<&str> = RELEASE.to_vec();
        release_lock.push(LOCK);
        // Everything preserved and ignored: nothing to say.
        check_case("prod", None, std::slice::from_ref(&full), true, &[]);
        // No preservedFields: the release annotations and the lock (on its carrier).
        check_case(
            "prod",
            None,
            &[set("myapp-prod", &[HELM], &[])],
            true,
            &[("myapp-prod", false, &release_lock, false)],
        );
        // With the lock elsewhere, deploy/lock is not needed.
        check_case(
            "prod",
            None,
            &[set("myapp-prod", &[HELM], &[])],
            false,
            &[("myapp-prod", false, &RELEASE, false)],
        );
        // The override not ignored, annotations all kept.
        check_case(
            "prod",
            None,
            &[set("myapp-prod", &["/spec/destination"], &all)],
            true,
            &[("myapp-prod", true, &[], false)],
        );
        // A parent pointer covers the override.
        check_case(
            "prod",
            None,
            &[set("myapp-prod", &["/spec/source"], &all)],
            true,
            &[],
        );
        // The owner reference wins over the configured name.
        check_case(
            "prod",
            Some("team-prod"),
            &[full.clone(), set("team-prod", &[HELM], &[LOCK])],
            true,
            &[("team-prod", false, &RELEASE, false)],
        );
        // An owner reference to a set Argo CD does not serve.
        check_case(
            "prod",
            Some("gone"),
            std::slice::from_ref(&full),
            true,
            &[("gone", false, &[], true)],
        );
        // No owner reference and the configured set does not exist: nothing rewrites them.
        check_case("prod", None, &[], true, &[]);
        // Automated environments also need deploy watch's record.
        let mut staging_missing: Vec<&str> = RELEASE.to_vec();
        staging_missing.push(WATCHED);
        check_case(
            "staging",
            None,
            &[set("myapp-staging", &[HELM], &[])],
            false,
            &[("myapp-staging", false, &staging_missing, false)],
        );
        // The controller's own defaults are never reported.
        check_case(
            "staging",
            None,
            &[set(
                "myapp-staging",
                &[HELM],
                &[&RELEASE[..], &[WATCHED]].concat(),
            )],
            false,
            &[],
        );
    }

    /// The override rule of gate 4 and `deploy audit` (N9 of the third reliability review):
    /// `(kind, the app's source layout, the set's JSON pointers, its jq expressions)` → the
    /// override pointers reported as not ignored. `None` is a single `spec.source`,
    /// `Some(n)` a multi-source Application carrying the override in `spec.sources[n]`.
    #[test]
    fn override_rule_cases() {
        #[track_caller]
        fn check(kind: &str, at: Option<usize>, pointers: &[&str], jq: &[&str], want: &[&str]) {
            let config = Config::parse("x", EXAMPLE).unwrap();
            let mut env = config.environment("prod").unwrap().clone();
            if kind == "kustomize" {
                env.image_override = ImageOverride::Kustomize;
            }
            let mut set = set("myapp-prod", pointers, &every_written_annotation());
            set.ignore_differences[0].jq_path_expressions =
                jq.iter().map(|e| e.to_string()).collect();
            let apps: BTreeMap<String, Option<Application>> = config
                .clusters
                .iter()
                .map(|c| {
                    let mut app = test_app(&config.application_name(&env, c), &[]);
                    app.override_sources = at.map(|n| crate::port::OverrideSources {
                        helm: n,
                        kustomize: n,
                    });
                    (c.name.clone(), Some(app))
                })
                .collect();
            let sets = [(set.name.clone(), Some(set))].into();
            let got: Vec<String> = super::check(&config, &env, &apps, &sets, None)
                .into_iter()
                .flat_map(|u| u.override_pointers)
                .collect();
            assert_eq!(
                got, want,
                "{kind} at {at:?}, pointers {pointers:?}, jq {jq:?}"
            );
        }
        const S0: &str = "/spec/sources/0/helm/parameters";
        const S1: &str = "/spec/sources/1/helm/parameters";
        const K: &str = "/spec/source/kustomize/images";
        // Single source: its own field or a parent.
        check("helm", None, &[HELM], &[], &[]);
        check("helm", None, &["/spec/source/helm"], &[], &[]);
        check("helm", None, &["/spec"], &[], &[]);
        // A pointer into spec.sources covers nothing of a single-source Application (the
        // review's reproduction: gate 4 said ✓, the controller reverted the override).
        check(
            "helm",
            None,
            &["/spec/sources/0/targetRevision"],
            &[],
            &[HELM],
        );
        check("helm", None, &["/spec/sources"], &[], &[HELM]);
        check(
            "helm",
            None,
            &["/spec/sources/0/helm/parameters"],
            &[],
            &[HELM],
        );
        // Siblings and children are not the field.
        check(
            "helm",
            None,
            &["/spec/source/helm/valueFiles"],
            &[],
            &[HELM],
        );
        check(
            "helm",
            None,
            &["/spec/source/helm/parameters/0"],
            &[],
            &[HELM],
        );
        check(
            "helm",
            None,
            &["/spec/source/helm/parameters/"],
            &[],
            &[HELM],
        );
        check("helm", None, &["/spec/source/he"], &[], &[HELM]);
        check("kustomize", None, &[HELM], &[], &[K]);
        check("kustomize", None, &[K], &[], &[]);
        // Multi-source: only a prefix of the source that carries the override.
        check(
            "helm",
            Some(0),
            &["/spec/sources/0/targetRevision"],
            &[],
            &[S0],
        );
        check(
            "helm",
            Some(1),
            &["/spec/sources/0/helm/parameters"],
            &[],
            &[S1],
        );
        check("helm", Some(1), &[HELM], &[], &[S1]);
        check("helm", Some(1), &[S1], &[], &[]);
        check("helm", Some(1), &["/spec/sources/1/helm"], &[], &[]);
        check("helm", Some(1), &["/spec/sources/1"], &[], &[]);
        check("helm", Some(1), &["/spec/sources"], &[], &[]);
        check("helm", Some(1), &["/spec/sources/10"], &[], &[S1]);
        check(
            "kustomize",
            Some(2),
            &["/spec/sources/2/kustomize"],
            &[],
            &[],
        );
        check(
            "kustomize",
            Some(2),
            &["/spec/sources/2/helm"],
            &[],
            &["/spec/sources/2/kustomize/images"],
        );
        // jq path expressions, read as paths.
        check("helm", None, &[], &[".spec.source.helm.parameters"], &[]);
        check("helm", None, &[], &[".spec.source"], &[]);
        check("helm", None, &[], &[".spec.sources[0]"], &[HELM]);
        check(
            "helm",
            None,
            &[],
            &[".spec.source.helm.valueFiles"],
            &[HELM],
        );
        check("helm", None, &[], &[".spec.src"], &[HELM]);
        check(
            "helm",
            Some(1),
            &[],
            &[".spec.sources[1].helm.parameters"],
            &[],
        );
        check("helm", Some(1), &[], &[".spec.sources[].helm"], &[]);
        check("helm", Some(1), &[], &[".spec.sources[0].helm"], &[S1]);
        check("helm", Some(1), &[], &[".spec.sources.1.helm"], &[S1]);
        check("helm", Some(1), &[], &[".spec[\"sources\"][1]"], &[]);
        // Anything but a plain path (a filter, a pipe) proves nothing.
        check("helm", None, &[], &[".spec | .source"], &[HELM]);
        check("helm", None, &[], &["."], &[HELM]);
        check(
            "helm",
            Some(1),
            &[],
            &[".spec.sources[] | select(.chart)"],
            &[S1],
        );
    }

    #[test]
    fn the_fix_is_yaml_and_terraform() {
        let u = Uncovered {
            application_set: "myapp-prod".into(),
            applications: vec!["myapp-prod-eu-west-1".into()],
            missing: false,
            override_pointers: vec![HELM.into()],
            annotations: vec!["deploy/release".into(), LOCK.into()],
            preserved: vec!["team".into()],
            lock_carrier: Some("myapp-prod-eu-west-1".into()),
        };
        assert_eq!(
            u.fix_yaml(),
            [
                "spec:",
                "  ignoreApplicationDifferences:",
                "    - jsonPointers:",
                "        - \"/spec/source/helm/parameters\"",
                "  preservedFields:",
                "    annotations:",
                "      - \"team\"",
                "      - \"deploy/release\"",
                "      - \"deploy/lock\"",
            ]
        );
        assert_eq!(
            u.fix_terraform(),
            [
                "spec = {",
                "  ignoreApplicationDifferences = [",
                "    {",
                "      jsonPointers = [\"/spec/source/helm/parameters\"]",
                "    },",
                "  ]",
                "  preservedFields = {",
                "    annotations = [\"team\", \"deploy/release\", \"deploy/lock\"]",
                "  }",
                "}",
            ]
        );
        assert!(
            u.problem()
                .contains("deploy/release, deploy/lock not in spec.preservedFields.annotations")
        );
        assert!(u.why()[0].contains("promotion lock on myapp-prod-eu-west-1"));
    }
}
