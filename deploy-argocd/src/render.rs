//! The ApplicationSet of an environment, rendered from `deploy.toml` (`deploy render applicationset`).
//!
//! The manifest is an `argoproj.io/v1alpha1` ApplicationSet that generates one Application
//! per configured cluster:
//!
//! - **Generator**: a `list` generator with one element per `[[clusters]]` entry,
//!   `{cluster: <name>, region: <region>}`, in file order. `goTemplate: true` with
//!   `missingkey=error`, so a misspelt parameter fails in the controller instead of
//!   rendering an empty string.
//! - **Name**: the environment's `application` template with `{app}` and `{env}` expanded
//!   here and `{cluster}` / `{region}` turned into the generator parameters `{{.cluster}}` /
//!   `{{.region}}`; so the generated names are exactly [`Config::application_name`].
//! - **Destination**: the Argo CD cluster named like the config's cluster (`{{.cluster}}`);
//!   the namespace is [`SourceTemplate::namespace`].
//! - **Sync policy**: `automated: {prune, selfHeal}` for an automated environment; none at
//!   all for a manual one (Argo CD's "syncPolicy: none": changes are applied only by an
//!   explicit sync, which `deploy promote` performs).
//! - **`ignoreApplicationDifferences`**: the JSON pointer of the image override
//!   (`/spec/source/helm/parameters` or `/spec/source/kustomize/images`), so the
//!   ApplicationSet controller does not revert the tag `deploy` writes into each Application.
//!   `deploy audit` reports an ApplicationSet without it.
//! - **Labels** on every generated Application: `app.kubernetes.io/part-of: <app>`,
//!   `deploy/environment: <env>` and `deploy/cluster: <cluster>`, so
//!   `deploy` (and people) can select them.
//!
//! `deploy.toml` does not know where the manifests live in git, so the source comes from a
//! [`SourceTemplate`]. Its default holds obvious placeholders (a `repoURL` on the reserved
//! `.invalid` domain, `path: deploy/<app>`, `targetRevision: HEAD`, project `default`) and the
//! YAML output starts with a comment saying which fields to fill in. The manifest is valid
//! against the upstream CRD schema either way (the tests check it), so it can be applied as
//! soon as the source is filled in.

use deploy_core::config::{Config, Environment};
use deploy_core::model::SyncMode;
use serde_json::{Value, json};

/// The part of the generated Applications' source and placement that `deploy.toml` does
/// not describe. [`SourceTemplate::placeholder`] gives obvious fill-in values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTemplate {
    /// `spec.source.repoURL`: the git repository (or Helm repository) with the manifests.
    pub repo_url: String,
    /// `spec.source.path`: the chart or kustomization directory in it.
    pub path: String,
    /// `spec.source.targetRevision`: branch, tag or commit.
    pub target_revision: String,
    /// `spec.project`: the Argo CD project.
    pub project: String,
    /// `spec.destination.namespace`: where the application runs in each cluster.
    pub namespace: String,
}

/// The `repoURL` of [`SourceTemplate::placeholder`]; the `.invalid` domain never resolves,
/// so an unedited manifest cannot silently deploy something else.
pub const PLACEHOLDER_REPO_URL: &str = "https://git.example.invalid/FILL-IN/deploy-manifests.git";

impl SourceTemplate {
    /// Placeholders to fill in: [`PLACEHOLDER_REPO_URL`], `deploy/<app>`, `HEAD`,
    /// project `default`, namespace `<app>`.
    pub fn placeholder(config: &Config) -> Self {
        Self {
            repo_url: PLACEHOLDER_REPO_URL.to_owned(),
            path: format!("deploy/{}", config.app),
            target_revision: "HEAD".to_owned(),
            project: "default".to_owned(),
            namespace: config.app.clone(),
        }
    }
}

/// The label on generated Applications naming the environment.
pub const ENVIRONMENT_LABEL: &str = "deploy/environment";
/// The label on generated Applications naming the cluster.
pub const CLUSTER_LABEL: &str = "deploy/cluster";

pub use deploy_core::plan::findings::override_pointer;

/// The Application name template of `env` as a goTemplate expression over the list
/// generator's parameters.
pub fn name_template(config: &Config, env: &Environment) -> String {
    env.application
        .replace("{app}", &config.app)
        .replace("{env}", &env.name)
        .replace("{cluster}", "{{.cluster}}")
        .replace("{region}", "{{.region}}")
}

/// The ApplicationSet of `env` as a JSON value (the same document [`application_set`] prints).
pub fn application_set_value(config: &Config, env: &Environment, source: &SourceTemplate) -> Value {
    let name = config
        .application_set_name(env)
        .unwrap_or_else(|| format!("{}-{}", config.app, env.name));
    let elements: Vec<Value> = config
        .clusters
        .iter()
        .map(|c| json!({ "cluster": c.name, "region": c.region }))
        .collect();

    let mut spec = json!({
        "project": source.project,
        "source": {
            "repoURL": source.repo_url,
            "path": source.path,
            "targetRevision": source.target_revision,
        },
        "destination": {
            "name": "{{.cluster}}",
            "namespace": source.namespace,
        },
    });
    if let SyncMode::Automated { prune, self_heal } = env.sync {
        spec["syncPolicy"] = json!({ "automated": { "prune": prune, "selfHeal": self_heal } });
    }

    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": config.app,
                ENVIRONMENT_LABEL: env.name,
            },
        },
        "spec": {
            "goTemplate": true,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [{ "list": { "elements": elements } }],
            "template": {
                "metadata": {
                    "name": name_template(config, env),
                    "labels": {
                        "app.kubernetes.io/part-of": config.app,
                        ENVIRONMENT_LABEL: env.name,
                        CLUSTER_LABEL: "{{.cluster}}",
                    },
                },
                "spec": spec,
            },
            "ignoreApplicationDifferences": [
                { "jsonPointers": [override_pointer(&env.image_override)] }
            ],
            // The controller rewrites generated Applications' annotations and keeps only
            // these: without them it would erase the release annotations and the lock.
            "preservedFields": { "annotations": preserved_annotations() },
        },
    })
}

/// The annotations `deploy` writes on Applications, which the ApplicationSet must preserve.
pub fn preserved_annotations() -> Vec<&'static str> {
    deploy_core::plan::appset::every_written_annotation()
}

/// The ApplicationSet of `env` as YAML, with a leading comment naming the fields to fill in
/// when `source` still holds [`SourceTemplate::placeholder`] values.
pub fn application_set(config: &Config, env: &Environment, source: &SourceTemplate) -> String {
    let value = application_set_value(config, env, source);
    let yaml = serde_norway::to_string(&value)
        .expect("a JSON value of strings, booleans, arrays and objects always serializes to YAML");
    let mut out = format!(
        "# ApplicationSet of environment {env} (rendered by `deploy render applicationset --env {env}`).\n",
        env = env.name
    );
    if source.repo_url == PLACEHOLDER_REPO_URL {
        out.push_str(
            "# FILL IN spec.template.spec.source (repoURL, path, targetRevision), the project and the\n\
             # destination namespace: deploy.toml does not say where the manifests live.\n",
        );
    }
    out.push_str(&yaml);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = include_str!("../../examples/deploy.toml");

    fn config() -> Config {
        Config::parse("examples/deploy.toml", TOML).expect("example parses")
    }

    #[test]
    fn names_expand_to_the_configured_application_names() {
        let config = config();
        for env in config.environments.values() {
            let template = name_template(&config, env);
            for cluster in &config.clusters {
                let rendered = template
                    .replace("{{.cluster}}", &cluster.name)
                    .replace("{{.region}}", &cluster.region);
                assert_eq!(
                    rendered,
                    config.application_name(env, cluster),
                    "{}",
                    env.name
                );
            }
        }
    }

    #[test]
    fn sync_policy_follows_the_environment() {
        let config = config();
        let source = SourceTemplate::placeholder(&config);
        let prod = application_set_value(&config, &config.environments["prod"], &source);
        assert!(prod["spec"]["template"]["spec"].get("syncPolicy").is_none());
        let staging = application_set_value(&config, &config.environments["staging"], &source);
        assert_eq!(
            staging["spec"]["template"]["spec"]["syncPolicy"],
            json!({ "automated": { "prune": false, "selfHeal": true } })
        );
        assert_eq!(
            staging["spec"]["ignoreApplicationDifferences"],
            json!([{ "jsonPointers": ["/spec/source/helm/parameters"] }])
        );
        assert_eq!(
            staging["spec"]["generators"][0]["list"]["elements"][2],
            json!({ "cluster": "eu-west-1", "region": "eu-west-1" })
        );
    }

    #[test]
    fn yaml_round_trips_and_flags_placeholders() {
        let config = config();
        let env = &config.environments["prod"];
        let source = SourceTemplate::placeholder(&config);
        let yaml = application_set(&config, env, &source);
        assert!(yaml.starts_with("# ApplicationSet of environment prod"));
        assert!(yaml.contains("FILL IN"));
        let back: Value = serde_norway::from_str(&yaml).expect("valid YAML");
        assert_eq!(back, application_set_value(&config, env, &source));

        let filled = SourceTemplate {
            repo_url: "https://github.com/example/manifests.git".into(),
            ..source
        };
        assert!(!application_set(&config, env, &filled).contains("FILL IN"));
    }
}
