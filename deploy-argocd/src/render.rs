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

/// The ApplicationSet of `env` as a Terraform `kubernetes_manifest` resource (hashicorp/kubernetes
/// provider), `terraform fmt`-clean: the same manifest as [`application_set`], with
/// `metadata.namespace` set to `[argocd] namespace` (the provider needs it).
pub fn application_set_terraform(
    config: &Config,
    env: &Environment,
    source: &SourceTemplate,
) -> String {
    let mut manifest = application_set_value(config, env, source);
    manifest["metadata"]["namespace"] = json!(config.argocd.namespace);
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut attributes = serde_json::Map::new();
    attributes.insert("manifest".into(), manifest);
    let mut out = format!(
        "# ApplicationSet of environment {env} (rendered by `deploy render applicationset --env {env} --format terraform`).\n",
        env = env.name
    );
    if source.repo_url == PLACEHOLDER_REPO_URL {
        out.push_str(
            "# FILL IN manifest.spec.template.spec.source (repoURL, path, targetRevision), the project and the\n\
             # destination namespace: deploy.toml does not say where the manifests live.\n",
        );
    }
    out.push_str(&deploy_core::hcl::resource(
        "kubernetes_manifest",
        &format!("applicationset_{name}"),
        &attributes,
    ));
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

    /// Checks `text` against `terraform fmt`'s layout (hclwrite's `format.go`): two spaces
    /// per open bracket; in each run of lines whose `=` is followed by a whole expression, the
    /// `=` one space after the longest lead; no trailing spaces or tabs.
    #[track_caller]
    fn assert_fmt_clean(text: &str) {
        let mut depth: usize = 0;
        let mut run: Vec<(usize, usize)> = Vec::new(); // (line, lead width) of the current run
        let mut errors = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        let close_run = |run: &mut Vec<(usize, usize)>, errors: &mut Vec<String>| {
            let max = run.iter().map(|(_, w)| *w).max().unwrap_or(0);
            for (i, _) in run.iter() {
                let eq = lines[*i].find(" = ").map(|p| p + 1);
                if eq != Some(max + 1) {
                    errors.push(format!(
                        "line {}: `=` not aligned at {}: {}",
                        i + 1,
                        max + 1,
                        lines[*i]
                    ));
                }
            }
            run.clear();
        };
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(' ') || line.contains('\t') {
                errors.push(format!("line {}: trailing space or tab", i + 1));
            }
            let (net, leading_closers, assign_at) = scan(line.trim_start());
            let expected = depth.saturating_sub(leading_closers) * 2;
            let indent = line.len() - line.trim_start().len();
            if !line.trim().is_empty() && indent != expected {
                errors.push(format!(
                    "line {}: indented {indent}, want {expected}: {line}",
                    i + 1
                ));
            }
            let whole = assign_at.is_some() && net == 0;
            if whole {
                let lead = line[..indent + assign_at.unwrap_or(0)].trim_end().len();
                run.push((i, lead));
            } else {
                close_run(&mut run, &mut errors);
            }
            depth = (depth as isize + net).max(0) as usize;
        }
        close_run(&mut run, &mut errors);
        assert!(
            errors.is_empty(),
            "not terraform fmt layout:\n{}\n{text}",
            errors.join("\n")
        );
    }

    /// Brackets outside quoted strings in `line` (without its indent): the net count opened,
    /// the closers before anything else, and where the first `=` after the start is.
    fn scan(line: &str) -> (isize, usize, Option<usize>) {
        let mut net: isize = 0;
        let mut leading_closers = 0;
        let (mut in_string, mut escaped, mut seen_other) = (false, false, false);
        let mut assign_at = None;
        for (at, c) in line.char_indices() {
            if in_string {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => escaped = false,
                }
                continue;
            }
            match c {
                '"' => {
                    in_string = true;
                    seen_other = true;
                }
                '{' | '[' | '(' => {
                    net += 1;
                    seen_other = true;
                }
                '}' | ']' | ')' => {
                    net -= 1;
                    if !seen_other {
                        leading_closers += 1;
                    }
                }
                '=' if assign_at.is_none() && at > 0 => {
                    assign_at = Some(at);
                    seen_other = true;
                }
                ' ' => {}
                _ => seen_other = true,
            }
        }
        (net, leading_closers, assign_at)
    }

    /// The first resource block of `text`: its labels and its body.
    fn resource_block(text: &str) -> (Vec<String>, hcl::Body) {
        let body: hcl::Body = hcl::from_str(text).expect("valid HCL");
        let block = body.blocks().next().expect("a resource block").clone();
        assert_eq!(block.identifier(), "resource");
        let labels = block
            .labels()
            .iter()
            .map(|l| l.as_str().to_owned())
            .collect();
        (labels, block.body().clone())
    }

    #[test]
    fn terraform_parses_back_to_the_manifest_and_is_fmt_clean() {
        let config = config();
        for env in config.environments.values() {
            let source = SourceTemplate::placeholder(&config);
            let text = application_set_terraform(&config, env, &source);
            assert_fmt_clean(&text);
            let (labels, body) = resource_block(&text);
            assert_eq!(
                labels,
                [
                    "kubernetes_manifest".to_owned(),
                    format!("applicationset_myapp-{}", env.name)
                ]
            );
            let manifest = body
                .attributes()
                .find(|a| a.key() == "manifest")
                .expect("manifest");
            let got = hcl::eval::Evaluate::evaluate(manifest.expr(), &hcl::eval::Context::new())
                .expect("a literal");
            let mut want = application_set_value(&config, env, &source);
            want["metadata"]["namespace"] = json!("argocd");
            assert_eq!(serde_json::to_value(got).unwrap(), want, "{}", env.name);
        }
    }

    #[test]
    fn replication_terraform_parses_back_and_is_fmt_clean() {
        let config = config();
        let prod = &config.environments["prod"];
        let replication = deploy_core::plan::replication::required(&config, prod).unwrap();
        let text = replication.terraform();
        assert_fmt_clean(&text);
        let (labels, body) = resource_block(&text);
        assert_eq!(
            labels,
            ["aws_ecr_replication_configuration", "staging_replication"]
        );
        let configuration = body.blocks().next().expect("replication_configuration");
        assert_eq!(configuration.identifier(), "replication_configuration");
        let rule = configuration.body().blocks().next().expect("rule");
        let mut destinations = Vec::new();
        let mut filters = Vec::new();
        for b in rule.body().blocks() {
            let attr = |k: &str| {
                let e = b
                    .body()
                    .attributes()
                    .find(|a| a.key() == k)
                    .expect(k)
                    .expr();
                hcl::eval::Evaluate::evaluate(e, &hcl::eval::Context::new())
                    .expect("a literal")
                    .as_str()
                    .expect("a string")
                    .to_owned()
            };
            match b.identifier() {
                "destination" => destinations.push((attr("registry_id"), attr("region"))),
                "repository_filter" => filters.push((attr("filter"), attr("filter_type"))),
                other => panic!("unexpected block {other}"),
            }
        }
        assert_eq!(destinations, replication.rules[0].destinations);
        assert_eq!(
            filters,
            [("staging/".to_owned(), "PREFIX_MATCH".to_owned())]
        );
    }

    #[test]
    fn the_fix_fragment_is_fmt_clean() {
        let u = deploy_core::plan::appset::Uncovered {
            application_set: "myapp-prod".into(),
            applications: vec!["myapp-prod-us-west-2".into()],
            missing: false,
            override_pointers: vec!["/spec/source/helm/parameters".into()],
            annotations: preserved_annotations()
                .into_iter()
                .map(String::from)
                .collect(),
            preserved: Vec::new(),
            lock_carrier: None,
        };
        let fragment = u.fix_terraform().join("\n");
        assert_fmt_clean(&fragment);
        let body: hcl::Body = hcl::from_str(&fragment).expect("valid HCL");
        assert_eq!(body.attributes().count(), 1);
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
