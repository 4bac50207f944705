//! The manifests that run `deploy watch` in the cluster (`deploy/`) and the `Dockerfile`
//! (issue 6): every YAML document parses as the Kubernetes object it claims to be; the
//! objects agree with each other, with the configuration they mount and with the command
//! line; the Role grants exactly what watch needs; and the container's own command, run
//! against an API server that enforces that Role (and ECR on moto), writes a release without
//! one request refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use deploy_aws::moto::{AwsFiles, EcrFixture};
use deploy_cli::cli::{Cli, Command as DeployCommand, OutputFormat, WatchArgs};
use deploy_core::config::{Config, Environment};
use deploy_core::model::Tag;
use deploy_engine::conformance::argocd::AppSeed;
use deploy_engine::conformance::registry::{RegistryFixture, manifest};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::{Value, json};
use wait_timeout::ChildExt;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The IRSA annotation EKS reads on a ServiceAccount.
const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy_dir() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of `path`, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `value` as the Kubernetes type `T`. Serde ignores fields it does not know, so the object
/// is written back and compared: a misspelt or misplaced field (which the API server would
/// also drop or refuse) fails here, naming where it is.
fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, value: Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).expect("serializable");
    let mut lost = Vec::new();
    dropped_fields(&value, &back, String::new(), &mut lost);
    assert!(
        lost.is_empty(),
        "{what}: fields the Kubernetes type does not have (misspelt or misplaced?): {lost:?}"
    );
    typed
}

/// The JSON pointers of `original` that `written_back` lacks or has differently.
fn dropped_fields(original: &Value, written_back: &Value, at: String, out: &mut Vec<String>) {
    match (original, written_back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let path = format!("{at}/{k}");
                match b.get(k) {
                    Some(w) => dropped_fields(v, w, path, out),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped_fields(v, w, format!("{at}/{i}"), out);
            }
        }
        (a, b) if a != b => out.push(at),
        _ => {}
    }
}

/// The objects under `deploy/`, each checked to be listed in the kustomization and read as
/// its Kubernetes type.
struct Manifests {
    kustomization: Value,
    service_account: ServiceAccount,
    role: Role,
    role_binding: RoleBinding,
    deployment: Deployment,
    disruption_budget: PodDisruptionBudget,
    config: Config,
}

impl Manifests {
    fn load() -> Self {
        let dir = deploy_dir();
        let mut kustomization = documents(&dir.join("kustomization.yaml"));
        assert_eq!(kustomization.len(), 1, "kustomization.yaml: one document");
        let kustomization = kustomization.remove(0);
        assert_eq!(kustomization["kind"], "Kustomization");
        let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("deploy/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed, on_disk,
            "kustomization.yaml `resources` must list every manifest under deploy/ (and only those)"
        );

        let mut objects: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for file in &listed {
            for doc in documents(&dir.join(file)) {
                let kind = format!(
                    "{}/{}",
                    doc["apiVersion"].as_str().unwrap_or_default(),
                    doc["kind"].as_str().unwrap_or_default()
                );
                objects.entry(kind).or_default().push(doc);
            }
        }
        let mut one = |kind: &str| -> Value {
            let mut found = objects.remove(kind).unwrap_or_default();
            assert_eq!(found.len(), 1, "deploy/: want exactly one {kind}");
            found.remove(0)
        };
        let manifests = Self {
            service_account: decode("ServiceAccount", one("v1/ServiceAccount")),
            role: decode("Role", one("rbac.authorization.k8s.io/v1/Role")),
            role_binding: decode(
                "RoleBinding",
                one("rbac.authorization.k8s.io/v1/RoleBinding"),
            ),
            deployment: decode("Deployment", one("apps/v1/Deployment")),
            disruption_budget: decode("PodDisruptionBudget", one("policy/v1/PodDisruptionBudget")),
            config: Config::parse("deploy/deploy.toml", &read(&dir.join("deploy.toml")))
                .unwrap_or_else(|e| panic!("deploy/deploy.toml: {e}")),
            kustomization,
        };
        assert!(
            objects.is_empty(),
            "deploy/ has objects this test does not check: {:?}; add checks for them",
            objects.keys().collect::<Vec<_>>()
        );
        manifests
    }

    fn pod(&self) -> &PodSpec {
        self.deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("Deployment: spec.template.spec")
    }

    fn container(&self) -> &Container {
        let containers = &self.pod().containers;
        assert_eq!(containers.len(), 1, "Deployment: one container");
        &containers[0]
    }

    fn args(&self) -> Vec<String> {
        self.container().args.clone().expect("container args")
    }

    /// The container's command line, parsed as `deploy` parses it.
    fn cli(&self) -> Cli {
        let argv = std::iter::once("deploy".to_owned()).chain(self.args());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("container args: {e}"))
    }

    fn watch_args(&self) -> WatchArgs {
        match self.cli().command {
            DeployCommand::Watch(args) => args,
            other => panic!("the container runs {other:?}, not watch"),
        }
    }

    /// The environment the container watches.
    fn env(&self) -> &Environment {
        let name = self.watch_args().env;
        self.config
            .environment(&name)
            .unwrap_or_else(|e| panic!("--env {name}: {e}"))
    }

    /// The Application names of `env`, one per cluster.
    fn applications(&self, env: &Environment) -> Vec<String> {
        self.config
            .clusters
            .iter()
            .map(|c| self.config.application_name(env, c))
            .collect()
    }

    /// The name of the leader-election Lease of the watched environment.
    fn lease(&self) -> String {
        deploy_argocd::kube::lease_name(&deploy_engine::watch::lease_key(&self.config, self.env()))
    }

    fn namespace(&self) -> String {
        self.kustomization["namespace"]
            .as_str()
            .expect("kustomization.yaml: namespace")
            .to_owned()
    }

    /// The port the metrics server listens on, from `--metrics-addr`.
    fn metrics_port(&self) -> u16 {
        self.watch_args()
            .metrics_addr
            .expect("--metrics-addr")
            .port()
    }

    /// A container port by number or name.
    fn port(&self, port: &IntOrString) -> i32 {
        match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => {
                self.container()
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("no container port named {name}"))
                    .container_port
            }
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// Whether `role` lets a request through, as Kubernetes RBAC decides: some rule names the
/// API group, the resource and the verb (or `*`), and either names no object or names this
/// one. Collection requests (list, create) carry no name, so only rules without
/// `resourceNames` can allow them.
fn allows(role: &Role, group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    let has = |list: &[String], x: &str| list.iter().any(|v| v == x || v == "*");
    role.rules.iter().flatten().any(|r| {
        has(r.api_groups.as_deref().unwrap_or_default(), group)
            && has(r.resources.as_deref().unwrap_or_default(), resource)
            && has(&r.verbs, verb)
            && match r.resource_names.as_deref() {
                None | Some([]) => true,
                Some(names) => name.is_some_and(|n| names.iter().any(|m| m == n)),
            }
    })
}

/// What `deploy --core watch --leader-elect` sends for the watched environment, as
/// (API group, resource, verb, object): deploy_engine::watch reads each Application (GET) and
/// writes its image override and the `deploy/watched-release` annotation (merge PATCH,
/// deploy-argocd/src/kube/argocd.rs); the leader election's Lease is read (GET), created
/// when missing (POST) and taken, renewed and released by a full replace (PUT)
/// (deploy-argocd/src/kube/lease.rs). `watch_runs_within_the_role` checks this list against
/// what the binary really sends.
fn needed(m: &Manifests) -> Vec<(&'static str, &'static str, &'static str, Option<String>)> {
    let mut needed = Vec::new();
    for app in m.applications(m.env()) {
        needed.push(("argoproj.io", "applications", "get", Some(app.clone())));
        needed.push(("argoproj.io", "applications", "patch", Some(app)));
    }
    let lease = m.lease();
    needed.push(("coordination.k8s.io", "leases", "create", None));
    needed.push(("coordination.k8s.io", "leases", "get", Some(lease.clone())));
    needed.push(("coordination.k8s.io", "leases", "update", Some(lease)));
    needed
}

// ---------------------------------------------------------------------------------------
// Static checks.

#[test]
fn the_config_map_is_the_example_configuration() {
    let copy = read(&deploy_dir().join("deploy.toml"));
    assert!(
        copy == read(&root().join("examples/deploy.toml")),
        "deploy/deploy.toml must be a copy of examples/deploy.toml (kustomize cannot read files \
         outside deploy/): cp examples/deploy.toml deploy/deploy.toml"
    );
    let m = Manifests::load();
    let generators = m.kustomization["configMapGenerator"]
        .as_array()
        .expect("kustomization.yaml: configMapGenerator");
    assert_eq!(generators.len(), 1);
    assert_eq!(strings(&generators[0]["files"]), ["deploy.toml"]);
    // The Deployment mounts that ConfigMap where --config points.
    let generated = generators[0]["name"].as_str().expect("generator name");
    let volume = m
        .pod()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some(generated))
        .unwrap_or_else(|| panic!("no volume of the ConfigMap {generated}"));
    let mount = m
        .container()
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.name == volume.name)
        .expect("the configuration volume is mounted");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(
        m.cli().global.config,
        Some(Path::new(&mount.mount_path).join("deploy.toml")),
        "--config is the mounted deploy.toml"
    );
}

#[test]
fn every_object_lives_in_the_argo_cd_namespace() {
    let m = Manifests::load();
    let ns = m.namespace();
    assert_eq!(
        ns, m.config.argocd.namespace,
        "watch reads Applications and holds its Lease in [argocd].namespace; the Role must be there"
    );
    let namespaces = [
        ("ServiceAccount", &m.service_account.metadata.namespace),
        ("Role", &m.role.metadata.namespace),
        ("RoleBinding", &m.role_binding.metadata.namespace),
        ("Deployment", &m.deployment.metadata.namespace),
        (
            "PodDisruptionBudget",
            &m.disruption_budget.metadata.namespace,
        ),
    ];
    for (kind, got) in namespaces {
        assert_eq!(got.as_deref(), Some(ns.as_str()), "{kind}: namespace");
    }
}

#[test]
fn the_container_runs_watch_in_core_mode_with_leader_election() {
    let m = Manifests::load();
    let cli = m.cli();
    assert!(
        cli.global.core,
        "--core: Argo CD through the Kubernetes API"
    );
    assert!(!cli.global.sandbox);
    assert_eq!(
        cli.global.output,
        OutputFormat::Json,
        "--output=json for log pipelines"
    );
    let watch = m.watch_args();
    assert!(
        watch.leader_elect,
        "--leader-elect: two replicas, one writer"
    );
    assert!(!watch.once, "a loop, not --once");
    assert!(watch.metrics_addr.is_some(), "--metrics-addr");
    assert!(
        m.env().sync.is_automated(),
        "--env {}: watch changes only automated environments",
        watch.env
    );
    assert_eq!(
        m.env().registry.aws_profile,
        None,
        "--env {}: in the cluster AWS credentials come from IRSA through the default chain; \
         there is no AWS config file with profiles",
        watch.env
    );
    assert_eq!(m.deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    // The image's ENTRYPOINT is the binary; the container passes only arguments.
    assert_eq!(m.container().command, None);
    // The leader id comes from the pod name, through the downward API.
    let env = m.container().env.clone().unwrap_or_default();
    let pod_name = env
        .iter()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(
        pod_name,
        Some("metadata.name"),
        "POD_NAME from the downward API"
    );
    assert!(
        env.iter()
            .any(|e| e.name == "AWS_REGION" && e.value.as_deref().is_some_and(|v| !v.is_empty())),
        "AWS_REGION is set"
    );
    // kustomize `images:` rewrites the container's image.
    let image = m.container().image.clone().expect("image");
    let images = m.kustomization["images"].as_array().expect("images");
    assert!(
        images.iter().any(|i| i["name"] == image.as_str()),
        "kustomization.yaml `images:` must name the container image {image}"
    );
}

#[test]
fn probes_and_scrape_annotations_use_the_metrics_port() {
    let m = Manifests::load();
    let port = i32::from(m.metrics_port());
    let c = m.container();
    for (which, probe) in [
        ("liveness", &c.liveness_probe),
        ("readiness", &c.readiness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{which} probe: httpGet"));
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{which} probe path");
        assert_eq!(
            m.port(&get.port),
            port,
            "{which} probe port = --metrics-addr port"
        );
    }
    let annotations = m
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|md| md.annotations.clone())
        .unwrap_or_default();
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port"),
        Some(&port.to_string())
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );
}

#[test]
fn the_pod_is_locked_down_and_bounded() {
    let m = Manifests::load();
    let pod = m.pod();
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    let sc = m.container().security_context.clone().unwrap_or_default();
    assert_eq!(
        sc.run_as_non_root.or(pod_sc.run_as_non_root),
        Some(true),
        "runAsNonRoot"
    );
    assert!(
        sc.run_as_user
            .or(pod_sc.run_as_user)
            .is_some_and(|u| u != 0),
        "a numeric non-root runAsUser (distroless nonroot is 65532)"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "readOnlyRootFilesystem"
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()]),
        "drop ALL capabilities"
    );
    assert!(sc.privileged.is_none_or(|p| !p));
    let seccomp = sc
        .seccomp_profile
        .or(pod_sc.seccomp_profile)
        .map(|s| s.type_);
    assert_eq!(
        seccomp.as_deref(),
        Some("RuntimeDefault"),
        "seccomp RuntimeDefault"
    );
    // The Kubernetes client authenticates with the mounted token.
    assert_ne!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.service_account_name.as_deref(),
        m.service_account.metadata.name.as_deref()
    );
    let resources = m.container().resources.clone().expect("resources");
    let requests = resources.requests.unwrap_or_default();
    assert!(
        requests.contains_key("cpu") && requests.contains_key("memory"),
        "requests"
    );
    assert!(
        resources.limits.unwrap_or_default().contains_key("memory"),
        "a memory limit"
    );
    // A stop releases the lease, which gives up after 5 s (deploy_engine::watch); the grace
    // period must leave room for it.
    assert!(
        pod.termination_grace_period_seconds.is_some_and(|s| s > 5),
        "terminationGracePeriodSeconds longer than the lease release"
    );
    let selector = m
        .deployment
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .expect("selector");
    assert_eq!(
        m.disruption_budget
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone()),
        Some(selector),
        "the PodDisruptionBudget selects the Deployment's pods"
    );
}

#[test]
fn the_service_account_assumes_an_iam_role() {
    let m = Manifests::load();
    let arn = m
        .service_account
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLE_ARN_ANNOTATION))
        .unwrap_or_else(|| panic!("ServiceAccount: {ROLE_ARN_ANNOTATION}"));
    let account = arn
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.split_once(":role/"))
        .filter(|(account, role)| {
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !role.is_empty()
        });
    assert!(
        account.is_some(),
        "{ROLE_ARN_ANNOTATION}: not an IAM role ARN: {arn}"
    );
}

#[test]
fn the_role_binding_binds_the_role_to_the_service_account() {
    let m = Manifests::load();
    let rb = &m.role_binding;
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(Some(&rb.role_ref.name), m.role.metadata.name.as_ref());
    let subjects = rb.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "one subject");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(&subjects[0].name),
        m.service_account.metadata.name.as_ref()
    );
    assert_eq!(
        subjects[0].namespace.as_deref(),
        Some(m.namespace().as_str())
    );
}

#[test]
fn the_role_grants_what_watch_needs_and_nothing_else() {
    let m = Manifests::load();
    let needed = needed(&m);
    for (group, resource, verb, name) in &needed {
        assert!(
            allows(&m.role, group, resource, verb, name.as_deref()),
            "the Role must allow {verb} on {resource}.{group} {}",
            name.as_deref().unwrap_or("(any name)")
        );
    }
    // Nothing else: every rule is a subset of what is needed, with no wildcard.
    for rule in m.role.rules.iter().flatten() {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(
            rule.non_resource_urls.is_none(),
            "a Role has no nonResourceURLs"
        );
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    let wanted: Vec<&Option<String>> = needed
                        .iter()
                        .filter(|(g, r, v, _)| g == group && r == resource && v == verb)
                        .map(|(.., n)| n)
                        .collect();
                    assert!(
                        !wanted.is_empty(),
                        "the Role grants {verb} on {resource}.{group}, which watch does not need"
                    );
                    let unrestricted = wanted.iter().any(|n| n.is_none());
                    match rule.resource_names.as_deref() {
                        None | Some([]) => assert!(
                            unrestricted,
                            "the Role grants {verb} on every {resource}.{group}; name them (resourceNames)"
                        ),
                        Some(names) => {
                            for name in names {
                                assert!(
                                    wanted.iter().any(|n| n.as_deref() == Some(name)),
                                    "the Role grants {verb} on {resource} {name}, which watch does not touch"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        !allows(&m.role, "", "secrets", "list", None)
            && !allows(&m.role, "", "secrets", "get", None),
        "watch reads no Secret"
    );
    // A manual environment is never changed by watch, and the Role makes sure.
    for env in m
        .config
        .environments
        .values()
        .filter(|e| !e.sync.is_automated())
    {
        for app in m.applications(env) {
            for verb in ["patch", "update", "delete"] {
                assert!(
                    !allows(&m.role, "argoproj.io", "applications", verb, Some(&app)),
                    "the Role lets watch {verb} {app} of the manual environment {}",
                    env.name
                );
            }
        }
    }
}

#[test]
fn the_readme_iam_policy_covers_what_watch_reads() {
    let m = Manifests::load();
    let env = m.env();
    // The guide to these manifests moved to docs/ with the other guides (issue 18).
    let readme = read(&root().join("docs/watch-in-cluster.md"));
    let blocks: Vec<Value> = readme
        .split("```json")
        .skip(1)
        .map(|rest| rest.split("```").next().expect("a closed block"))
        .map(|block| {
            serde_json::from_str(block)
                .unwrap_or_else(|e| panic!("docs/watch-in-cluster.md: {e}:\n{block}"))
        })
        .collect();
    let policy = blocks
        .iter()
        .flat_map(|b| b["Statement"].as_array().cloned().unwrap_or_default())
        .find(|s| s["Sid"] == "DeployWatchReadsReleases")
        .expect("docs/watch-in-cluster.md: the permissions statement DeployWatchReadsReleases");
    // watch calls only DescribeImages (deploy-aws `tagged_images` and `image`).
    assert_eq!(strings(&policy["Action"]), ["ecr:DescribeImages"]);
    let want: BTreeSet<String> = m
        .config
        .services
        .iter()
        .flat_map(|s| env.registry.regions.iter().map(move |r| env.location(s, r)))
        .map(|l| {
            format!(
                "arn:aws:ecr:{}:{}:repository/{}",
                l.region, l.account, l.repository
            )
        })
        .collect();
    let got: BTreeSet<String> = strings(&policy["Resource"]).into_iter().collect();
    assert_eq!(
        got, want,
        "every service repository of {} in every region",
        env.name
    );
    let trust = blocks
        .iter()
        .flat_map(|b| b["Statement"].as_array().cloned().unwrap_or_default())
        .find(|s| s["Action"] == "sts:AssumeRoleWithWebIdentity")
        .expect("docs/watch-in-cluster.md: the IRSA trust policy");
    let subject = format!(
        "system:serviceaccount:{}:{}",
        m.namespace(),
        m.service_account
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
    );
    assert!(
        trust["Condition"]["StringEquals"]
            .as_object()
            .is_some_and(|c| c.values().any(|v| *v == subject.as_str())),
        "the trust policy names {subject}"
    );
}

#[test]
fn the_dockerfile_builds_the_deploy_binary_on_the_workspace_rust() {
    let dockerfile = read(&root().join("Dockerfile"));
    let workspace: toml::Table = read(&root().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml");
    let rust_version = workspace["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("rust-version");
    let cli: toml::Table = read(&root().join("deploy-cli/Cargo.toml"))
        .parse()
        .expect("deploy-cli/Cargo.toml");
    let binary = cli["bin"][0]["name"].as_str().expect("[[bin]] name");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "two stages: build and runtime");
    assert!(
        froms[0].starts_with(&format!("rust:{rust_version}-")),
        "the builder is the workspace's rust-version {rust_version}: {}",
        froms[0]
    );
    assert_eq!(froms[1], "gcr.io/distroless/cc-debian12:nonroot");
    assert!(dockerfile.contains("cargo build --release --locked -p deploy-cli"));
    assert!(dockerfile.contains(&format!("target/release/{binary} ")));
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"/{binary}\"]")));
    // A numeric user, which runAsNonRoot can verify, and the one the Deployment runs as.
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile: USER");
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("a numeric USER");
    let m = Manifests::load();
    let pod_user = m
        .pod()
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user);
    assert_ne!(uid, 0, "the image runs as a non-root user");
    assert_eq!(
        pod_user,
        Some(uid),
        "deploy/deployment.yaml runAsUser = the image's USER"
    );

    // The build context keeps what the build reads (every member, the example configuration
    // compiled into deploy-core) and leaves out build outputs and history.
    let ignored: Vec<String> = read(&root().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for must in ["target", "target-*", ".git", ".deploy-sandbox"] {
        assert!(ignored.iter().any(|l| l == must), ".dockerignore: {must}");
    }
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("members");
    for kept in members
        .iter()
        .filter_map(|m| m.as_str())
        .chain(["examples", "Cargo.lock"])
    {
        assert!(
            !ignored.iter().any(|l| l.trim_matches('/') == kept),
            ".dockerignore must not leave out {kept}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The container's command against an API server that enforces the Role.

/// The release in ECR the Applications do not run yet.
const NEW: &str = "9f8e7d6";
/// The release the Applications run.
const OLD: &str = "0a1b2c3";
/// The pod name the downward API would give.
const POD_NAME: &str = "deploy-watch-5d8c9b7f4-x2x7q";

/// One request the fake API server saw, as RBAC sees it.
#[derive(Debug, Clone)]
struct Seen {
    verb: String,
    group: String,
    resource: String,
    name: Option<String>,
    allowed: bool,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} {}.{} {} ({})",
            self.verb,
            self.resource,
            group,
            self.name.as_deref().unwrap_or("-"),
            if self.allowed { "allowed" } else { "FORBIDDEN" }
        )
    }
}

#[derive(Debug, Default)]
struct KubeState {
    /// (group, resource, namespace, name) → object.
    objects: BTreeMap<(String, String, String, String), Value>,
    rv: u64,
    seen: Vec<Seen>,
}

/// A namespaced Kubernetes API server on wiremock that authorizes every request with one
/// Role, as the real one would for the ServiceAccount the RoleBinding binds: 403 for
/// anything the Role does not allow (cluster-scoped requests included), then get, list,
/// create, update (optimistic concurrency) and merge patch of objects kept as JSON.
#[derive(Clone)]
struct RbacApiServer {
    role: Role,
    namespace: String,
    state: Arc<Mutex<KubeState>>,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    }))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in fields {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl RbacApiServer {
    fn put(&self, group: &str, resource: &str, mut object: Value) {
        let mut state = self.state.lock().expect("state");
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        state.objects.insert(
            (group.into(), resource.into(), self.namespace.clone(), name),
            object,
        );
    }

    fn get(&self, group: &str, resource: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().expect("state");
        state
            .objects
            .get(&(
                group.into(),
                resource.into(),
                self.namespace.clone(),
                name.into(),
            ))
            .cloned()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }
}

impl Respond for RbacApiServer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path: Vec<&str> = request.url.path().trim_matches('/').split('/').collect();
        let (group, rest) = match path.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => (request.url.path(), &[][..]),
        };
        let (namespace, resource, name) = match rest {
            ["namespaces", ns, resource] => (Some(*ns), *resource, None),
            ["namespaces", ns, resource, name] => (Some(*ns), *resource, Some(*name)),
            [resource] => (None, *resource, None),
            [resource, name] => (None, *resource, Some(*name)),
            _ => (None, request.url.path(), None),
        };
        let watching = request
            .url
            .query_pairs()
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
        let verb = match (request.method.as_str(), name) {
            ("GET", Some(_)) => "get",
            ("GET", None) if watching => "watch",
            ("GET", None) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", Some(_)) => "delete",
            ("DELETE", None) => "deletecollection",
            (other, _) => other,
        };
        // A Role grants nothing outside its namespace.
        let allowed = namespace == Some(self.namespace.as_str())
            && allows(&self.role, group, resource, verb, name);
        let mut state = self.state.lock().expect("state");
        state.seen.push(Seen {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            name: name.map(str::to_owned),
            allowed,
        });
        if !allowed {
            return status(
                403,
                "Forbidden",
                &format!(
                    "{resource}.{group} is forbidden: cannot {verb} (the Role in deploy/rbac.yaml)"
                ),
            );
        }
        let ns = self.namespace.clone();
        let key = |n: &str| {
            (
                group.to_owned(),
                resource.to_owned(),
                ns.clone(),
                n.to_owned(),
            )
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        match verb {
            "get" => match state.objects.get(&key(name.unwrap_or_default())) {
                Some(object) => ResponseTemplate::new(200).set_body_json(object),
                None => status(404, "NotFound", &format!("{resource} not found")),
            },
            "list" => {
                let items: Vec<&Value> = state
                    .objects
                    .iter()
                    .filter(|((g, r, n, _), _)| g == group && r == resource && *n == ns)
                    .map(|(_, o)| o)
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": { "resourceVersion": state.rv.to_string() }, "items": items,
                }))
            }
            "create" => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if state.objects.contains_key(&key(&name)) {
                    return status(409, "AlreadyExists", &format!("{resource} {name} exists"));
                }
                state.rv += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                object["metadata"]["namespace"] = json!(ns);
                state.objects.insert(key(&name), object.clone());
                ResponseTemplate::new(201).set_body_json(object)
            }
            "update" | "patch" => {
                let name = name.unwrap_or_default();
                let Some(mut object) = state.objects.get(&key(name)).cloned() else {
                    return status(404, "NotFound", &format!("{resource} {name} not found"));
                };
                let sent_rv = &body["metadata"]["resourceVersion"];
                let stale = match verb {
                    "update" => *sent_rv != object["metadata"]["resourceVersion"],
                    _ => !sent_rv.is_null() && *sent_rv != object["metadata"]["resourceVersion"],
                };
                if stale {
                    return status(409, "Conflict", &format!("{resource} {name} was modified"));
                }
                if verb == "patch" {
                    let content_type = request
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if !content_type.starts_with("application/merge-patch+json") {
                        return status(415, "UnsupportedMediaType", content_type);
                    }
                    merge(&mut object, &body);
                } else {
                    object = body;
                }
                state.rv += 1;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                state.objects.insert(key(name), object.clone());
                ResponseTemplate::new(200).set_body_json(object)
            }
            _ => status(405, "MethodNotAllowed", verb),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_runs_within_the_role() {
    let m = Manifests::load();
    let env = m.env().clone();
    let Some(ecr_server) = crate::e2e::moto(&env.registry.account) else {
        return;
    };
    // ECR: the new release, complete in every region of the registry, sentinel pushed last.
    let ecr = EcrFixture::new(&[(&env.registry.account, &ecr_server.endpoint)]);
    let mut services = m.config.services.clone();
    services.sort_by_key(|s| s.sentinel);
    for region in &env.registry.regions {
        for service in &services {
            let at = env.location(service, region);
            ecr.create_repository(&at, false).await;
            ecr.push(
                &at,
                &NEW.parse::<Tag>().expect("tag"),
                &manifest(&format!("{}@{NEW}", service.name)),
            )
            .await;
        }
    }

    // The API server: every Application of every environment, running the old release.
    let api = RbacApiServer {
        role: m.role.clone(),
        namespace: m.namespace(),
        state: Arc::default(),
    };
    for e in m.config.environments.values() {
        for cluster in &m.config.clusters {
            let seed = AppSeed {
                name: m.config.application_name(e, cluster),
                labels: BTreeMap::new(),
                destination: cluster.name.clone(),
                sync_mode: e.sync,
                helm_parameters: BTreeMap::from([("image.tag".into(), OLD.into())]),
                tag_parameter: "image.tag".into(),
                image_names: e.image_names(&m.config.services, cluster),
            };
            let mut object = deploy_argocd::fake::application(&seed, 1, "2026-01-01T00:00:00Z");
            object["apiVersion"] = json!("argoproj.io/v1alpha1");
            object["kind"] = json!("Application");
            api.put("argoproj.io", "applications", object);
        }
    }
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(api.clone())
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    let kubeconfig_text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: deploy-watch\n\
         current-context: fake\nusers:\n- name: deploy-watch\n  user: {{}}\n",
        server.uri()
    );
    std::fs::write(&kubeconfig, kubeconfig_text).expect("write kubeconfig");
    let aws = AwsFiles::new(&[("default", &ecr_server.endpoint)], "");

    // The container's command, as written, with the mounted configuration's path on this
    // machine, a free metrics port, and --once.
    let config_path = deploy_dir().join("deploy.toml");
    let mut args: Vec<String> = m
        .args()
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--config", _)) => format!("--config={}", config_path.display()),
            Some(("--metrics-addr", _)) => "--metrics-addr=127.0.0.1:0".to_owned(),
            _ => a,
        })
        .collect();
    args.push("--once".into());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy"));
    cmd.args(&args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_CONFIG_FILE", &aws.config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &aws.credentials)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for var in m.container().env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => POD_NAME.to_owned(),
                other => panic!(
                    "env {}: teach this test the downward API field {other:?}",
                    var.name
                ),
            },
            (None, None) => String::new(),
        };
        cmd.env(&var.name, value);
    }
    let output = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("start deploy");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let read_all = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let (out, err) = (read_all(Box::new(stdout)), read_all(Box::new(stderr)));
        let status = child
            .wait_timeout(Duration::from_secs(120))
            .expect("waiting for deploy");
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (
            status.and_then(|s| s.code()),
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    })
    .await
    .expect("the waiting thread");
    let (code, stdout, stderr) = output;

    let seen = api.seen();
    let log: Vec<String> = seen.iter().map(ToString::to_string).collect();
    let report = format!(
        "deploy {}\nexit {code:?}\n--- requests\n{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        log.join("\n")
    );
    let forbidden: Vec<&String> = log.iter().filter(|l| l.ends_with("(FORBIDDEN)")).collect();
    assert!(
        forbidden.is_empty(),
        "deploy/rbac.yaml refuses requests watch sends: {forbidden:?}\n{report}"
    );
    assert_eq!(code, Some(0), "{report}");

    // It did its job: every Application of the watched environment runs the new release,
    // and no other Application changed.
    for e in m.config.environments.values() {
        for app in m.applications(e) {
            let object = api.get("argoproj.io", "applications", &app).expect("app");
            let want = if e.name == env.name { NEW } else { OLD };
            assert_eq!(crate::e2e::tag_parameter(&object), want, "{app}\n{report}");
        }
    }
    // Every request is one `needed` lists (the static check's list is the real one).
    for s in &seen {
        assert!(
            needed(&m).iter().any(|(g, r, v, n)| {
                *g == s.group
                    && *r == s.resource
                    && *v == s.verb
                    && (n.is_none() || n.as_deref() == s.name.as_deref())
            }),
            "watch sent {s}, which `needed` does not list\n{report}"
        );
    }
    // Only the leader writes: it went through the Lease the Role names.
    assert!(
        seen.iter().any(|s| s.resource == "leases" && s.allowed),
        "--leader-elect used no Lease\n{report}"
    );
    assert!(
        api.get("coordination.k8s.io", "leases", &m.lease())
            .is_some(),
        "no Lease {}\n{report}",
        m.lease()
    );
}
