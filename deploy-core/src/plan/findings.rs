//! `deploy audit`: policy findings from observed state (sync policies, ApplicationSet
//! ignore rules, replication coverage, tag mutability, cluster registration).

use std::collections::BTreeMap;

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Environment};
use crate::error::Result;
use crate::model::SyncMode;
use crate::port::{
    Application, ApplicationSet, ArgoCd, ArgoCdInventory, ClusterInfo, Registry, ReplicationRule,
    RepositoryInfo,
};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Breaks the process.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Environment.
    pub environment: String,
    /// The object concerned.
    pub subject: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The change that fixes it, one line each (e.g. YAML and Terraform fragments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
}

/// What the audit of one environment looks at.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditInput {
    /// Applications by cluster (`None` when missing).
    pub apps: BTreeMap<String, Option<Application>>,
    /// The environment's ApplicationSet, if configured and found.
    pub application_set: Option<ApplicationSet>,
    /// Whether the configured ApplicationSet was looked for and not found.
    pub application_set_missing: bool,
    /// Replication rules of the source registry, by source region.
    pub source_rules: BTreeMap<String, Vec<ReplicationRule>>,
    /// Repository settings by repository name and region (`None` when missing).
    pub repositories: BTreeMap<(String, String), Option<RepositoryInfo>>,
    /// Clusters registered in Argo CD.
    pub clusters: Vec<ClusterInfo>,
    /// The ApplicationSets that generate the Applications (by owner reference, else the
    /// configured name), by name; `None` when not found.
    #[serde(default)]
    pub application_sets: BTreeMap<String, Option<ApplicationSet>>,
    /// The Application that carries the lock annotation; `None` when the lock lives elsewhere.
    #[serde(default)]
    pub lock_carrier: Option<String>,
}

/// Reads the audit input of `env`, assuming the lock is an annotation of
/// [`crate::engine::lock::carrier`] (set [`AuditInput::lock_carrier`] to `None` when it is not).
pub async fn observe(
    config: &Config,
    env: &Environment,
    registry: &dyn Registry,
    argocd: &dyn ArgoCd,
    inventory: &dyn ArgoCdInventory,
) -> Result<AuditInput> {
    let mut input = AuditInput::default();
    for cluster in &config.clusters {
        let app = match argocd
            .application(&config.application_name(env, cluster))
            .await
        {
            Ok(a) => Some(a),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        input.apps.insert(cluster.name.clone(), app);
    }
    if let Some(name) = config.application_set_name(env) {
        let sets = inventory.application_sets().await?;
        input.application_set = sets.into_iter().find(|s| s.name == name);
        input.application_set_missing = input.application_set.is_none();
    }
    if let Some(src) = env
        .promote_from
        .as_deref()
        .and_then(|s| config.environments.get(s))
    {
        for region in &src.registry.regions {
            input.source_rules.insert(
                region.clone(),
                registry
                    .replication_rules(&src.registry.account, region)
                    .await?,
            );
        }
    }
    let locations: Vec<_> = config
        .services
        .iter()
        .flat_map(|s| env.registry.regions.iter().map(move |r| env.location(s, r)))
        .collect();
    let infos = join_all(locations.iter().map(|l| registry.repository(l))).await;
    for (loc, info) in locations.into_iter().zip(infos) {
        let info = match info {
            Ok(i) => Some(i),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        input
            .repositories
            .insert((loc.repository, loc.region), info);
    }
    input.clusters = inventory.clusters().await?;
    input.application_sets = super::appset::read(config, env, &input.apps, inventory).await?;
    input.lock_carrier = crate::engine::lock::carrier(config, env);
    Ok(input)
}

pub use super::appset::override_pointer;

/// Findings for `env` from `input`. Pure.
pub fn findings(config: &Config, env: &Environment, input: &AuditInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut fixed = |severity, subject: String, message: String, fix: Vec<String>| {
        out.push(Finding {
            severity,
            environment: env.name.clone(),
            subject,
            message,
            fix,
        })
    };
    let mut sets = input.application_sets.clone();
    if let Some(set) = &input.application_set {
        sets.entry(set.name.clone())
            .or_insert_with(|| Some(set.clone()));
    }
    for u in super::appset::check(
        config,
        env,
        &input.apps,
        &sets,
        input.lock_carrier.as_deref(),
    ) {
        fixed(
            Severity::Error,
            format!("applicationset/{}", u.application_set),
            u.problem(),
            u.fix_lines(),
        );
    }
    let mut add =
        |severity, subject: String, message: String| fixed(severity, subject, message, Vec::new());
    let manual = env.sync == SyncMode::Manual;
    for cluster in &config.clusters {
        let name = config.application_name(env, cluster);
        match input.apps.get(&cluster.name).and_then(Option::as_ref) {
            None => add(Severity::Error, name, "Application not found in Argo CD; apply the ApplicationSet (deploy render applicationset)".into()),
            Some(app) if manual && app.sync_mode.is_automated() => add(
                Severity::Error,
                name,
                format!("automated sync in manual environment {}: a tag change deploys without gates; remove spec.syncPolicy.automated", env.name),
            ),
            Some(app) if !manual && !app.sync_mode.is_automated() => {
                add(Severity::Warning, name, format!("no automated sync in automated environment {}: new releases will not deploy", env.name))
            }
            Some(_) => {}
        }
    }
    if let Some(set) = &input.application_set {
        if manual && set.sync_mode.is_automated() {
            add(
                Severity::Error,
                format!("applicationset/{}", set.name),
                "template has automated sync in a manual environment; remove it".into(),
            );
        }
        if !manual && !set.sync_mode.is_automated() {
            add(
                Severity::Warning,
                format!("applicationset/{}", set.name),
                "template has no automated sync in an automated environment".into(),
            );
        }
    } else if input.application_set_missing {
        let name = config.application_set_name(env).unwrap_or_default();
        add(
            Severity::Error,
            format!("applicationset/{name}"),
            "ApplicationSet not found in Argo CD".into(),
        );
    }
    if let Some(src) = env
        .promote_from
        .as_deref()
        .and_then(|s| config.environments.get(s))
    {
        for service in &config.services {
            for region in &env.registry.regions {
                let dest = env.location(service, region);
                let source = src.location(service, &src.registry.regions[0]);
                if source == dest {
                    continue;
                }
                let covered = input
                    .source_rules
                    .values()
                    .flatten()
                    .any(|r| r.covers(&source.repository, &dest.account, region));
                if !covered {
                    add(
                        Severity::Error,
                        dest.image_name(),
                        format!(
                            "no replication rule of {} copies {} to {}/{region}; add one (deploy render replication --env {} prints it, as Terraform or JSON)",
                            src.name, source.repository, dest.account, env.name
                        ),
                    );
                }
            }
        }
    }
    for ((repository, region), info) in &input.repositories {
        let subject = format!(
            "{}.dkr.ecr.{region}.amazonaws.com/{repository}",
            env.registry.account
        );
        match info {
            None if env.promote_from.is_none() => add(Severity::Error, subject, "repository does not exist".into()),
            None => {}
            Some(i) if i.tag_mutable && manual => add(
                Severity::Warning,
                subject,
                "tags are mutable: a tag could point at other bytes later; set imageTagMutability to IMMUTABLE".into(),
            ),
            Some(_) => {}
        }
    }
    for cluster in &config.clusters {
        match input.clusters.iter().find(|c| c.name == cluster.name) {
            None => add(
                Severity::Error,
                format!("cluster/{}", cluster.name),
                "not registered in Argo CD (argocd cluster add)".into(),
            ),
            Some(c) if !c.connected => add(
                Severity::Error,
                format!("cluster/{}", cluster.name),
                format!(
                    "not connected: {}",
                    c.message.as_deref().unwrap_or("no message")
                ),
            ),
            Some(_) => {}
        }
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.subject.cmp(&b.subject))
    });
    out
}

impl std::fmt::Display for Severity {
    /// As in the JSON: `warning`, `error`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EXAMPLE;
    use crate::port::{IgnoreDifferences, test_app};

    fn healthy_input(config: &Config, env: &Environment) -> AuditInput {
        let mut input = AuditInput::default();
        for c in &config.clusters {
            let mut app = test_app(&config.application_name(env, c), &[]);
            app.sync_mode = env.sync;
            input.apps.insert(c.name.clone(), Some(app));
            input.clusters.push(ClusterInfo {
                name: c.name.clone(),
                server: "https://k".into(),
                connected: true,
                message: None,
            });
        }
        input.application_set = Some(ApplicationSet {
            name: config.application_set_name(env).unwrap(),
            sync_mode: env.sync,
            ignore_differences: vec![IgnoreDifferences {
                json_pointers: vec!["/spec/source/helm/parameters".into()],
                ..Default::default()
            }],
            preserved_annotations: crate::plan::appset::every_written_annotation()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            annotations: BTreeMap::new(),
            resource_version: "1".into(),
        });
        input.lock_carrier = crate::engine::lock::carrier(config, env);
        input.source_rules.insert(
            "us-west-2".into(),
            vec![ReplicationRule {
                destinations: env
                    .registry
                    .regions
                    .iter()
                    .map(|r| (env.registry.account.clone(), r.clone()))
                    .collect(),
                repository_prefixes: vec!["staging/".into()],
            }],
        );
        for s in &config.services {
            for r in &env.registry.regions {
                input.repositories.insert(
                    (env.location(s, r).repository, r.clone()),
                    Some(RepositoryInfo { tag_mutable: false }),
                );
            }
        }
        input
    }

    #[track_caller]
    fn check(change: impl FnOnce(&mut AuditInput), want: &[(Severity, &str)]) {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let mut input = healthy_input(&config, prod);
        change(&mut input);
        let got = findings(&config, prod, &input);
        let got: Vec<(Severity, String)> = got
            .iter()
            .map(|f| (f.severity, format!("{}: {}", f.subject, f.message)))
            .collect();
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((gs, gm), (ws, wm)) in got.iter().zip(want) {
            assert!(
                gs == ws && gm.contains(wm),
                "got {gs:?} {gm}, want {ws:?} …{wm}…"
            );
        }
    }

    #[test]
    fn audit_cases() {
        check(|_| {}, &[]);
        check(
            |i| {
                i.apps
                    .get_mut("us-east-1")
                    .unwrap()
                    .as_mut()
                    .unwrap()
                    .sync_mode = SyncMode::Automated {
                    prune: false,
                    self_heal: false,
                }
            },
            &[(
                Severity::Error,
                "myapp-prod-us-east-1: automated sync in manual environment",
            )],
        );
        check(
            |i| {
                i.application_set
                    .as_mut()
                    .unwrap()
                    .ignore_differences
                    .clear()
            },
            &[(Severity::Error, "not in spec.ignoreApplicationDifferences")],
        );
        check(
            |i| {
                i.application_set.as_mut().unwrap().ignore_differences[0].json_pointers =
                    vec!["/spec/source".into()]
            },
            &[],
        );
        // The annotations deploy writes, preserved or erased by the controller.
        check(
            |i| {
                i.application_set
                    .as_mut()
                    .unwrap()
                    .preserved_annotations
                    .clear()
            },
            &[(
                Severity::Error,
                "applicationset/myapp-prod: applicationset/myapp-prod (generates myapp-prod-eu-west-1, \
                 myapp-prod-us-east-1, myapp-prod-us-west-2): it would erase annotations deploy writes: \
                 deploy/release, deploy/run, deploy/promoted-by, deploy/promoted-at, deploy/lock not in \
                 spec.preservedFields.annotations",
            )],
        );
        // Without the annotation lock, deploy/lock need not be preserved.
        check(
            |i| {
                i.lock_carrier = None;
                i.application_set
                    .as_mut()
                    .unwrap()
                    .preserved_annotations
                    .retain(|a| a != crate::engine::lock::ANNOTATION);
            },
            &[],
        );
        // An Application owned (ownerReferences) by another ApplicationSet is checked against it.
        check(
            |i| {
                let app = i.apps.get_mut("us-east-1").unwrap().as_mut().unwrap();
                app.owner_application_set = Some("other".into());
                let mut other = i.application_set.clone().unwrap();
                other.name = "other".into();
                other.preserved_annotations = vec![crate::engine::lock::ANNOTATION.into()];
                i.application_sets.insert("other".into(), Some(other));
            },
            &[(
                Severity::Error,
                "applicationset/other (generates myapp-prod-us-east-1): it would erase annotations deploy writes: \
                 deploy/release, deploy/run, deploy/promoted-by, deploy/promoted-at not in",
            )],
        );
        check(
            |i| {
                i.application_set.as_mut().unwrap().ignore_differences[0].json_pointers =
                    vec!["/spec/sources".into()]
            },
            &[],
        );
        check(
            |i| {
                let s = i.application_set.as_mut().unwrap();
                s.ignore_differences[0].json_pointers.clear();
                s.ignore_differences[0].jq_path_expressions =
                    vec![".spec.source.helm.parameters".into()];
            },
            &[],
        );
        check(
            |i| {
                i.source_rules.get_mut("us-west-2").unwrap()[0]
                    .destinations
                    .retain(|(_, r)| r != "eu-west-1")
            },
            &[
                (
                    Severity::Error,
                    "eu-west-1.amazonaws.com/staging/api: no replication rule",
                ),
                (
                    Severity::Error,
                    "eu-west-1.amazonaws.com/staging/logserver: no replication rule",
                ),
                (
                    Severity::Error,
                    "eu-west-1.amazonaws.com/staging/worker: no replication rule",
                ),
            ],
        );
        check(
            |i| {
                i.repositories
                    .insert(
                        ("staging/api".into(), "us-east-1".into()),
                        Some(RepositoryInfo { tag_mutable: true }),
                    )
                    .map(|_| ())
                    .unwrap_or(())
            },
            &[(Severity::Warning, "tags are mutable")],
        );
        check(
            |i| i.clusters.retain(|c| c.name != "eu-west-1"),
            &[(Severity::Error, "cluster/eu-west-1: not registered")],
        );
        check(
            |i| i.clusters[0].connected = false,
            &[(Severity::Error, "not connected")],
        );
        check(
            |i| *i.apps.get_mut("us-west-2").unwrap() = None,
            &[(
                Severity::Error,
                "myapp-prod-us-west-2: Application not found",
            )],
        );
    }

    #[test]
    fn an_erased_annotation_comes_with_its_fix() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let mut input = healthy_input(&config, prod);
        input
            .application_set
            .as_mut()
            .unwrap()
            .preserved_annotations
            .clear();
        let got = findings(&config, prod, &input);
        let fix = got[0].fix.join("\n");
        assert!(
            fix.contains("    preservedFields:\n      annotations:\n        - \"deploy/release\""),
            "{fix}"
        );
        assert!(
            fix.contains("    preservedFields = {\n      annotations = [\"deploy/release\""),
            "{fix}"
        );
    }

    #[test]
    fn severity_displays_as_in_json() {
        for (severity, expect) in [(Severity::Warning, "warning"), (Severity::Error, "error")] {
            assert_eq!(severity.to_string(), expect);
            assert_eq!(serde_json::to_value(severity).unwrap(), expect);
        }
    }
}
