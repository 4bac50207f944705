//! A whole in-memory world seeded from a configuration: registries with replication rules,
//! Argo CD with one Application per environment and cluster, ApplicationSets and clusters.
//! It backs the demo, the sandbox, the engine tests and the benchmarks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ArgoCdState, InMemoryArgoCd, InMemoryAuditLog, InMemoryLock, InMemoryMetrics, InMemoryRegistry,
    MetricsState, RegistryState, digest_of,
};
use crate::config::{Config, Environment};
use crate::model::{Digest, Release, Tag};
use crate::plan::build::push_order;
use crate::plan::findings::override_pointer;
use crate::plan::live::{override_for, service_images};
use crate::port::{
    ApplicationSet, ArgoCd as _, Clock, ClusterInfo, IgnoreDifferences, Lease, ReplicationRule,
};
use crate::trail::AuditRecord;

/// Every backend, sharing one clock.
#[derive(Debug, Clone)]
pub struct World {
    /// Registries of every account and region.
    pub registry: InMemoryRegistry,
    /// Argo CD.
    pub argocd: InMemoryArgoCd,
    /// Locks.
    pub lock: InMemoryLock,
    /// Audit trail.
    pub audit: InMemoryAuditLog,
    /// Measurements for the checks.
    pub metrics: InMemoryMetrics,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// The state of a [`World`], serializable (the sandbox keeps it in `.deploy-sandbox/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldState {
    /// Registries.
    pub registry: RegistryState,
    /// Argo CD.
    pub argocd: ArgoCdState,
    /// Held leases.
    pub leases: BTreeMap<String, Lease>,
    /// Audit records.
    pub audit: Vec<AuditRecord>,
    /// Scripted measurements.
    #[serde(default)]
    pub metrics: MetricsState,
}

/// The digest the world gives `service` built at `tag`.
pub fn build_digest(service: &str, tag: &Tag) -> Digest {
    digest_of(&format!("{{\"service\":\"{service}\",\"tag\":\"{tag}\"}}"))
}

impl World {
    /// An empty world.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            registry: InMemoryRegistry::new(clock.clone()),
            argocd: InMemoryArgoCd::new(clock.clone()),
            lock: InMemoryLock::new(clock.clone()),
            audit: InMemoryAuditLog::default(),
            metrics: InMemoryMetrics::new(),
            clock,
        }
    }

    /// A world restored from `state`.
    pub fn from_state(state: WorldState, clock: Arc<dyn Clock>) -> Self {
        Self {
            registry: InMemoryRegistry::from_state(state.registry, clock.clone()),
            argocd: InMemoryArgoCd::from_state(state.argocd, clock.clone()),
            lock: InMemoryLock::from_state(state.leases, clock.clone()),
            audit: InMemoryAuditLog::from_state(state.audit),
            metrics: InMemoryMetrics::from_state(state.metrics),
            clock,
        }
    }

    /// The state, to save.
    pub fn state(&self) -> WorldState {
        WorldState {
            registry: self.registry.state(),
            argocd: self.argocd.state(),
            leases: self.lock.state(),
            audit: self.audit.state(),
            metrics: self.metrics.state(),
        }
    }

    /// A world as a team has it set up: repositories, replication from each source to its
    /// promotion targets, connected clusters, ApplicationSets that ignore the override, and
    /// every Application Synced and Healthy at `initial` (pushed and replicated already).
    pub fn seeded(config: &Config, clock: Arc<dyn Clock>, initial: &Tag) -> Self {
        let world = Self::new(clock);
        // A healthy world: every check's query measures 0 (no errors, no alarm).
        world.metrics.set_default(Some(vec![0.0]));
        for cluster in &config.clusters {
            world.argocd.put_cluster(ClusterInfo {
                name: cluster.name.clone(),
                server: format!("https://{}.eks.amazonaws.com", cluster.name),
                connected: true,
                message: None,
            });
        }
        for env in config.environments.values() {
            let manual = !env.sync.is_automated();
            for service in &config.services {
                for region in &env.registry.regions {
                    world
                        .registry
                        .create_repository(&env.location(service, region), !manual);
                }
            }
            if let Some(src) = env
                .promote_from
                .as_deref()
                .and_then(|s| config.environments.get(s))
            {
                let key = (&src.registry.account, &src.registry.regions[0]);
                let mut rules = world.registry.replication_rules_of(key.0, key.1);
                rules.push(ReplicationRule {
                    destinations: env
                        .registry
                        .regions
                        .iter()
                        .map(|r| (env.registry.account.clone(), r.clone()))
                        .collect(),
                    repository_prefixes: vec![src.registry.repository_prefix.clone()],
                });
                world.registry.set_replication_rules(key.0, key.1, rules);
            }
            if let Some(name) = config.application_set_name(env) {
                world.argocd.put_application_set(ApplicationSet {
                    name,
                    sync_mode: env.sync,
                    ignore_differences: vec![IgnoreDifferences {
                        json_pointers: vec![override_pointer(&env.image_override).to_owned()],
                        ..Default::default()
                    }],
                    // As `deploy render applicationset` writes it.
                    preserved_annotations: crate::plan::appset::every_written_annotation()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    annotations: BTreeMap::new(),
                    resource_version: "1".into(),
                });
            }
        }
        for env in config.environments_in_order() {
            if env.promote_from.is_none() {
                world.ci_push(config, env, initial);
            }
        }
        for env in config.environments.values() {
            for cluster in &config.clusters {
                let images = service_images(config, env, cluster);
                let names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
                let parameter = match &env.image_override {
                    crate::config::ImageOverride::Helm { parameter } => parameter.as_str(),
                    crate::config::ImageOverride::Kustomize => "image.tag",
                };
                let seed = app_seed(config, env, cluster, parameter, initial);
                world.argocd.create_application(&seed);
                // A chart with a digest parameter per service (pin = "digest").
                if let crate::config::Pin::Digest { helm_parameters } = &env.pin
                    && !helm_parameters.is_empty()
                {
                    let by_image = images
                        .iter()
                        .filter_map(|(s, n)| Some((n.clone(), helm_parameters.get(s)?.clone())))
                        .collect();
                    world.argocd.set_digest_parameters(&seed.name, by_image);
                }
                if env.image_override == crate::config::ImageOverride::Kustomize {
                    let value = override_for(env, &names, initial);
                    futures::executor::block_on(world.argocd.set_override(&seed.name, &value))
                        .expect("the app was just created");
                }
            }
        }
        world
    }

    /// CI's push of `tag` to `env`: every service into the primary region, sentinel last,
    /// each with the digest [`build_digest`] gives it. Returns the release.
    pub fn ci_push(&self, config: &Config, env: &Environment, tag: &Tag) -> Release {
        let plan = push_order(config, env, tag);
        let mut digests = BTreeMap::new();
        for push in plan.pushes {
            let digest = build_digest(&push.service, tag);
            self.registry.push(&push.image.location, tag, &digest);
            digests.insert(push.service, digest);
        }
        Release {
            tag: tag.clone(),
            digests,
        }
    }
}

/// The Application [`World::seeded`] creates for `env` on `cluster`, running `tag`.
pub fn app_seed(
    config: &Config,
    env: &Environment,
    cluster: &crate::config::Cluster,
    parameter: &str,
    tag: &Tag,
) -> super::argocd::AppSeed {
    super::argocd::AppSeed {
        name: config.application_name(env, cluster),
        labels: BTreeMap::from([
            ("app.kubernetes.io/part-of".into(), config.app.clone()),
            ("deploy/environment".into(), env.name.clone()),
            ("deploy/cluster".into(), cluster.name.clone()),
        ]),
        destination: cluster.name.clone(),
        sync_mode: env.sync,
        helm_parameters: BTreeMap::from([
            (parameter.to_owned(), tag.to_string()),
            ("replicaCount".into(), "3".into()),
        ]),
        tag_parameter: parameter.to_owned(),
        image_names: env.image_names(&config.services, cluster),
    }
}

/// The regions clusters are spread over, round robin; prod's registry lists all three.
pub const GENERATED_REGIONS: [&str; 3] = ["us-west-2", "us-east-1", "eu-west-1"];

/// The name of cluster `i`.
pub fn generated_cluster_name(i: usize) -> String {
    format!("c{i:03}")
}

/// A `deploy.toml` of any size, for benchmarks and load tests: `clusters` clusters, `services` services (the first is the
/// sentinel), an automated staging environment in one region and a manual prod
/// environment in three regions, promoted from staging in waves of `wave_size` clusters.
pub fn generated_config(clusters: usize, services: usize, wave_size: usize, soak: &str) -> String {
    let mut t = String::from("app = \"bench\"\n\n[argocd]\nserver = \"argocd.example.com\"\n\n");
    for i in 0..clusters {
        let _ = writeln!(
            t,
            "[[clusters]]\nname = \"{}\"\nregion = \"{}\"\n",
            generated_cluster_name(i),
            GENERATED_REGIONS[i % GENERATED_REGIONS.len()]
        );
    }
    for j in 0..services {
        let _ = writeln!(
            t,
            "[[services]]\nname = \"svc{j:04}\"\nrepository = \"svc{j:04}\"{}\n",
            if j == 0 { "\nsentinel = true" } else { "" }
        );
    }
    let waves: Vec<String> = (0..clusters)
        .collect::<Vec<_>>()
        .chunks(wave_size.max(1))
        .map(|w| {
            let names: Vec<String> = w
                .iter()
                .map(|&i| format!("\"{}\"", generated_cluster_name(i)))
                .collect();
            format!("[{}]", names.join(", "))
        })
        .collect();
    let regions: Vec<String> = GENERATED_REGIONS
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect();
    let _ = write!(
        t,
        r#"[environments.staging]
branch = "staging"
registry = {{ account = "111111111111", regions = ["us-west-2"], repository_prefix = "staging/" }}
sync = "automated"
application = "{{app}}-{{env}}-{{cluster}}"
application_set = "{{app}}-{{env}}"
image_override = {{ kind = "helm", parameter = "image.tag" }}
tags = {{ strategy = "newest", allow = "^[0-9a-f]{{7,40}}$" }}

[environments.prod]
registry = {{ account = "222222222222", regions = [{regions}], repository_prefix = "staging/", aws_profile = "prod" }}
sync = "manual"
application = "{{app}}-{{env}}-{{cluster}}"
application_set = "{{app}}-{{env}}"
image_override = {{ kind = "helm", parameter = "image.tag" }}
promote_from = "staging"
waves = [{waves}]
soak = "{soak}"
timeout = "15m"
"#,
        regions = regions.join(", "),
        waves = waves.join(", "),
    );
    t
}

/// Clusters per wave in generated benchmarks: a third of `clusters`, at most 10
/// (3 × 1, 3 × 10, 10 × 10).
pub fn generated_wave_size(clusters: usize) -> usize {
    (clusters / 3).clamp(1, 10)
}

/// The simulated timing of generated cluster `i`: deterministic and spread out, sync in
/// [1 s, 3 s] and health in [0.5 s, 1.5 s] in steps of 1 ms, so that benchmarks over different
/// backends share their ideal durations.
pub fn generated_timing(i: usize) -> super::Timing {
    super::Timing {
        sync: Duration::from_millis(1_000 + ((i * 7_919 + 13) % 2_001) as u64),
        health: Duration::from_millis(500 + ((i * 104_729 + 7) % 1_001) as u64),
    }
}
