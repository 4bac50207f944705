//! A whole in-memory world seeded from a configuration: registries with replication rules,
//! Argo CD with one Application per environment and cluster, ApplicationSets and clusters.
//! It backs the demo, the sandbox, the engine tests and the benchmarks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use deploy_core::sim::{AppSeed, ArgoCdState, Timing};

use super::{
    InMemoryArgoCd, InMemoryAuditLog, InMemoryLock, InMemoryMetrics, InMemoryRegistry,
    MetricsState, RegistryState, Simulation,
};
use deploy_core::config::{Config, Environment};
use deploy_core::image_override::override_for;
use deploy_core::model::digest_of;
use deploy_core::model::{Digest, Release, Tag};
use deploy_core::plan::build::push_order;
use deploy_core::plan::findings::override_pointer;
use deploy_core::plan::live::service_images;
use deploy_core::port::{
    ApplicationSet, ArgoCd as _, Clock, ClusterInfo, IgnoreDifferences, Lease, ReplicationRule,
};
use deploy_core::trail::AuditRecord;

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
        let argocd = InMemoryArgoCd::new(clock.clone());
        Self {
            registry: InMemoryRegistry::new(clock.clone()),
            metrics: InMemoryMetrics::new().following(argocd.clone()),
            argocd,
            lock: InMemoryLock::new(clock.clone()),
            audit: InMemoryAuditLog::default(),
            clock,
        }
    }

    /// A world restored from `state`.
    pub fn from_state(state: WorldState, clock: Arc<dyn Clock>) -> Self {
        let argocd = InMemoryArgoCd::from_state(state.argocd, clock.clone());
        Self {
            registry: InMemoryRegistry::from_state(state.registry, clock.clone()),
            metrics: InMemoryMetrics::from_state(state.metrics).following(argocd.clone()),
            argocd,
            lock: InMemoryLock::from_state(state.leases, clock.clone()),
            audit: InMemoryAuditLog::from_state(state.audit),
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
            world.seed_registry(config, env);
            world.seed_application_set(config, env);
        }
        for env in config.environments_in_order() {
            if env.promote_from.is_none() {
                world.ci_push(config, env, initial);
            }
        }
        for env in config.environments.values() {
            for cluster in &config.clusters {
                world.seed_application(config, env, cluster, initial);
            }
        }
        world
    }

    /// An environment's repositories in every region, and the source's replication rule to
    /// them (as `deploy render replication` writes it).
    fn seed_registry(&self, config: &Config, env: &Environment) {
        let manual = !env.sync.is_automated();
        for service in &config.services {
            for region in &env.registry.regions {
                self.registry
                    .create_repository(&env.location(service, region), !manual);
            }
        }
        let Some(src) = env
            .promote_from
            .as_deref()
            .and_then(|s| config.environments.get(s))
        else {
            return;
        };
        let key = (&src.registry.account, &src.registry.regions[0]);
        let mut rules = self.registry.replication_rules_of(key.0, key.1);
        rules.push(ReplicationRule {
            destinations: env
                .registry
                .regions
                .iter()
                .map(|r| (env.registry.account.clone(), r.clone()))
                .collect(),
            repository_prefixes: vec![src.registry.repository_prefix.clone()],
        });
        self.registry.set_replication_rules(key.0, key.1, rules);
    }

    /// An environment's ApplicationSet, as `deploy render applicationset` writes it.
    fn seed_application_set(&self, config: &Config, env: &Environment) {
        let Some(name) = config.application_set_name(env) else {
            return;
        };
        self.argocd.put_application_set(ApplicationSet {
            name,
            sync_mode: env.sync,
            ignore_differences: vec![IgnoreDifferences {
                json_pointers: vec![override_pointer(&env.image_override).to_owned()],
                ..Default::default()
            }],
            preserved_annotations: deploy_core::plan::appset::every_written_annotation()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            annotations: BTreeMap::new(),
            resource_version: "1".into(),
        });
    }

    /// The Application of `env` on `cluster`, running `initial`.
    fn seed_application(
        &self,
        config: &Config,
        env: &Environment,
        cluster: &deploy_core::config::Cluster,
        initial: &Tag,
    ) {
        let images = service_images(config, env, cluster);
        let names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
        let parameter = match &env.image_override {
            deploy_core::config::ImageOverride::Helm { parameter } => parameter.as_str(),
            deploy_core::config::ImageOverride::Kustomize => "image.tag",
        };
        let seed = app_seed(config, env, cluster, parameter, initial);
        self.argocd.create_application(&seed);
        // A chart with a digest parameter per service (pin = "digest").
        if let deploy_core::config::Pin::Digest { helm_parameters } = &env.pin
            && !helm_parameters.is_empty()
        {
            let by_image = images
                .iter()
                .filter_map(|(s, n)| Some((n.clone(), helm_parameters.get(s)?.clone())))
                .collect();
            self.argocd.set_digest_parameters(&seed.name, by_image);
        }
        if env.image_override == deploy_core::config::ImageOverride::Kustomize {
            let value = override_for(env, &names, initial);
            futures::executor::block_on(self.argocd.set_override(&seed.name, &value))
                .expect("the app was just created");
        }
    }

    /// Simulates check `check` of `env` on `cluster` ([`Simulation`]): its measurements there
    /// answer `releases[tag]` while the cluster's Application runs a listed release, and
    /// `otherwise` while it runs another. Returns the measured key (the check's query
    /// resolved for the cluster, as the plan resolves it). A check whose query or alarm
    /// names hold `{release}` measures another key per release and cannot follow one;
    /// script those keys instead ([`InMemoryMetrics::script`]).
    pub fn simulate_check(
        &self,
        config: &Config,
        env: &Environment,
        check: &str,
        cluster: &str,
        otherwise: Vec<f64>,
        releases: BTreeMap<String, Vec<f64>>,
    ) -> Result<String, String> {
        let (key, base) = self.check_key(config, env, check, cluster)?;
        self.metrics.simulate(
            &key,
            Simulation {
                releases,
                otherwise,
                ..base
            },
        );
        Ok(key)
    }

    /// While `cluster` runs `release`, check `check` of `env` measures `values` there; what
    /// it measures while the cluster runs another release stays as it was (simulated, else
    /// what every unscripted query measures). Returns the key, as [`World::simulate_check`].
    pub fn simulate_release(
        &self,
        config: &Config,
        env: &Environment,
        check: &str,
        cluster: &str,
        release: &Tag,
        values: Vec<f64>,
    ) -> Result<String, String> {
        let (key, base) = self.check_key(config, env, check, cluster)?;
        let mut sim = self.metrics.simulation(&key).unwrap_or_else(|| Simulation {
            otherwise: self.metrics.default_values(),
            ..base
        });
        sim.releases.insert(release.to_string(), values);
        self.metrics.simulate(&key, sim);
        Ok(key)
    }

    /// The key check `check` of `env` measures on `cluster`, and a simulation of it that
    /// lists no release and answers no data.
    fn check_key(
        &self,
        config: &Config,
        env: &Environment,
        check: &str,
        cluster: &str,
    ) -> Result<(String, Simulation), String> {
        let c = env.checks.iter().find(|c| c.name == check).ok_or_else(|| {
            let names: Vec<&str> = env.checks.iter().map(|c| c.name.as_str()).collect();
            format!(
                "environment {} has no check {check:?}; its checks: {}",
                env.name,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })?;
        let cl = config
            .cluster(cluster)
            .ok_or_else(|| format!("no cluster {cluster:?} in the configuration"))?;
        let key_at = |release: &str| {
            let r = c.resolve(&deploy_core::check::Scope {
                cluster: &cl.name,
                region: &cl.region,
                env: &env.name,
                app: &config.app,
                release,
            });
            InMemoryMetrics::key(&r.source, &r.query)
        };
        let key = key_at("");
        if key != key_at("x") {
            return Err(format!(
                "check {check} uses {{release}}: it measures another query for every release, so it cannot follow the release a cluster runs"
            ));
        }
        Ok((
            key,
            Simulation {
                application: config.application_name(env, cl),
                images: service_images(config, env, cl),
                releases: BTreeMap::new(),
                otherwise: Vec::new(),
            },
        ))
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

    /// What the image updater does for `env` once `tag` is complete: writes it into every
    /// cluster's Application (an automated environment then syncs it by itself).
    pub async fn write_release(
        &self,
        config: &Config,
        env: &Environment,
        tag: &Tag,
    ) -> deploy_core::Result<()> {
        for c in &config.clusters {
            let names: Vec<String> = service_images(config, env, c)
                .into_iter()
                .map(|(_, n)| n)
                .collect();
            self.argocd
                .set_override(
                    &config.application_name(env, c),
                    &override_for(env, &names, tag),
                )
                .await?;
        }
        Ok(())
    }
}

/// The Application [`World::seeded`] creates for `env` on `cluster`, running `tag`.
pub fn app_seed(
    config: &Config,
    env: &Environment,
    cluster: &deploy_core::config::Cluster,
    parameter: &str,
    tag: &Tag,
) -> AppSeed {
    AppSeed {
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
pub fn generated_timing(i: usize) -> Timing {
    Timing {
        sync: Duration::from_millis(1_000 + ((i * 7_919 + 13) % 2_001) as u64),
        health: Duration::from_millis(500 + ((i * 104_729 + 7) % 1_001) as u64),
    }
}

impl<'a> crate::engine::Ports<'a> {
    /// The ports of the in-memory `world`: its Argo CD, lock, audit trail, clock and metrics.
    pub fn of_world(world: &'a World) -> Self {
        Self {
            argocd: &world.argocd,
            lock: &world.lock,
            audit: &world.audit,
            clock: &*world.clock,
            metrics: Some(&world.metrics),
        }
    }
}

impl World {
    /// What a promotion of `env` sees in this world, every cluster:
    /// [`crate::observe::promotion::observe`] through its registry and Argo CD.
    pub async fn observe(
        &self,
        config: &Config,
        env: &Environment,
        intent: deploy_core::plan::promotion::Intent,
    ) -> deploy_core::Result<deploy_core::plan::promotion::Observation> {
        crate::observe::promotion::observe(
            config,
            env,
            intent,
            None,
            &self.registry,
            &self.argocd,
            &self.argocd,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::config::EXAMPLE;
    use deploy_core::port::Metrics as _;
    use deploy_engine::clock::TokioClock;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_check_follows_the_release_its_cluster_runs() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let clock = Arc::new(TokioClock::new(jiff::Timestamp::from_second(1).unwrap()));
        let [v1, v2] = ["1111111aaaaa", "2222222bbbbb"].map(|t| Tag::new(t).unwrap());
        let world = World::seeded(&config, clock.clone(), &v1);
        let key = world
            .simulate_check(
                &config,
                prod,
                "5xx-ratio",
                "eu-west-1",
                vec![0.002],
                BTreeMap::from([(v2.to_string(), vec![0.12])]),
            )
            .unwrap();
        assert!(key.contains(r#"cluster="eu-west-1""#), "{key}");
        let check = &prod.checks[0];
        let measure = |world: &World, cluster: &str| {
            let c = config.cluster(cluster).unwrap();
            let r = check.resolve(&deploy_core::check::Scope {
                cluster: &c.name,
                region: &c.region,
                env: "prod",
                app: "myapp",
                release: "any",
            });
            let m = world.metrics.clone();
            async move { m.measure(&r.source, &r.query).await.unwrap() }
        };
        let app = config.application_name(prod, config.cluster("eu-west-1").unwrap());
        let running = |tags: &[&Tag]| -> Vec<String> {
            let c = config.cluster("eu-west-1").unwrap();
            tags.iter()
                .flat_map(|t| {
                    service_images(&config, prod, c)
                        .into_iter()
                        .map(move |(_, name)| format!("{name}:{t}"))
                })
                .collect()
        };
        assert_eq!(measure(&world, "eu-west-1").await, [0.002], "v1 is good");
        assert_eq!(measure(&world, "us-east-1").await, [0.0], "not simulated");
        world.argocd.set_images(&app, running(&[&v2]));
        assert_eq!(
            measure(&world, "eu-west-1").await,
            [0.12],
            "v2 is bad there"
        );
        world.argocd.set_images(&app, running(&[&v1, &v2]));
        assert_eq!(
            measure(&world, "eu-west-1").await,
            [0.12],
            "half rolled out"
        );
        // The sandbox's saved world follows too.
        let back = World::from_state(world.state(), clock.clone());
        assert_eq!(measure(&back, "eu-west-1").await, [0.12]);
        world.argocd.set_images(&app, Vec::new());
        assert!(
            measure(&world, "eu-west-1").await.is_empty(),
            "no pods, no data"
        );
        world.argocd.set_images(&app, running(&[&v1]));
        assert_eq!(measure(&world, "eu-west-1").await, [0.002], "v1 again");
        // One more release simulated, the others kept; on a cluster not simulated yet,
        // other releases measure the world's default.
        let v3 = Tag::new("3333333ccccc").unwrap();
        world
            .simulate_release(&config, prod, "5xx-ratio", "eu-west-1", &v1, vec![0.2])
            .unwrap();
        world
            .simulate_release(&config, prod, "5xx-ratio", "us-east-1", &v3, vec![0.3])
            .unwrap();
        assert_eq!(measure(&world, "eu-west-1").await, [0.2], "v1 is bad now");
        world.argocd.set_images(&app, running(&[&v2]));
        assert_eq!(measure(&world, "eu-west-1").await, [0.12], "v2 kept");
        assert_eq!(
            measure(&world, "us-east-1").await,
            [0.0],
            "us-east-1 runs v1"
        );
        world.metrics.set(&key, vec![0.5]);
        assert_eq!(
            measure(&world, "eu-west-1").await,
            [0.5],
            "a script comes first"
        );

        let err = world
            .simulate_check(
                &config,
                prod,
                "latency",
                "eu-west-1",
                vec![],
                BTreeMap::new(),
            )
            .unwrap_err();
        assert!(
            err.contains("no check \"latency\"; its checks: 5xx-ratio"),
            "{err}"
        );
        let err = world
            .simulate_check(
                &config,
                prod,
                "5xx-ratio",
                "mars-1",
                vec![],
                BTreeMap::new(),
            )
            .unwrap_err();
        assert!(err.contains("no cluster \"mars-1\""), "{err}");
        let text = EXAMPLE.replace(
            r#"code=~"5.."}[2m]))"#,
            r#"code=~"5..",release="{release}"}[2m]))"#,
        );
        let config = Config::parse("x", &text).unwrap();
        let err = world
            .simulate_check(
                &config,
                config.environment("prod").unwrap(),
                "5xx-ratio",
                "eu-west-1",
                vec![],
                BTreeMap::new(),
            )
            .unwrap_err();
        assert!(err.contains("uses {release}"), "{err}");
    }
}
