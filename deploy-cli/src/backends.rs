//! Wiring: the configuration and the backends a command runs against — the sandbox's
//! in-memory world (kept in `.deploy-sandbox/`) or the real adapters.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deploy_core::config::{Config, LockBackend};
use deploy_core::model::Tag;
use deploy_core::port::{ArgoCd, ArgoCdInventory, AuditLog, Clock, Lock, Registry, SystemClock};
use deploy_engine::memory::{Timing, World, WorldState};

use crate::cli::Global;
use crate::exit::UsageError;

/// Where the sandbox keeps its state, relative to the working directory.
pub const SANDBOX_DIR: &str = ".deploy-sandbox";

/// The sandbox compresses the configuration's soak and timeouts by this factor, so a
/// five-minute soak takes five seconds.
pub const SANDBOX_SPEEDUP: u32 = 60;

/// The first release of a fresh sandbox (everywhere), and the one CI has just pushed to
/// the environments without `promote_from`.
pub const SANDBOX_TAGS: [&str; 2] = ["0a1b2c3d4e5f", "1b2c3d4e5f60"];

/// Loads the configuration from `--config`, `$DEPLOY_CONFIG` or `./deploy.toml`.
pub fn load_config(global: &Global) -> Result<(PathBuf, Config)> {
    let path = global
        .config
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("deploy.toml"));
    let cannot = |e: &dyn std::fmt::Display| {
        UsageError(format!(
            "cannot read the configuration {}: {e}; pass --config PATH, set DEPLOY_CONFIG, or start from examples/deploy.toml",
            path.display()
        ))
    };
    // At most one byte over the limit is read, so `/dev/zero`, a FIFO that never ends or a
    // huge file is refused without filling memory.
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(UsageError(format!(
            "the configuration {} is larger than {} KiB, which no deploy.toml needs: is it the right file? \
             pass --config PATH, set DEPLOY_CONFIG, or start from examples/deploy.toml",
            path.display(),
            MAX_CONFIG_BYTES / 1024
        ))
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|_| cannot(&"it is not UTF-8 text"))?;
    let config = Config::parse(&path.display().to_string(), &text)?;
    Ok((path, config))
}

/// The largest configuration read: 1 MiB, some hundred times the size of a configuration
/// of a hundred clusters.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The ports a command uses.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Registries.
    pub registry: Arc<dyn Registry>,
    /// Argo CD.
    pub argocd: Arc<dyn ArgoCd>,
    /// What `deploy audit` reads of Argo CD (ApplicationSets, clusters).
    pub inventory: Arc<dyn ArgoCdInventory>,
    /// Promotion locks.
    pub locks: Locks,
    /// The audit trail of environments without a state store (a file on this machine, or
    /// the sandbox's); [`Backends::audit_for`] picks an environment's.
    pub audit: Arc<dyn AuditLog>,
    /// The S3 state store of each environment with `state.s3`.
    pub state: BTreeMap<String, deploy_aws::S3Store>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// The sandbox, when `--sandbox`.
    pub sandbox: Option<Sandbox>,
    /// The REST client, when Argo CD is reached through its API.
    pub rest: Option<Arc<deploy_argocd::rest::RestArgoCd>>,
    /// The audit trail file (real backends).
    pub audit_path: Option<std::path::PathBuf>,
    /// What to set when Argo CD is not configured (no server or no token).
    pub argocd_missing: Option<String>,
    /// The checks' metric sources (Prometheus, Amazon Managed Prometheus, CloudWatch
    /// alarms); `None` where a backend has none.
    pub metrics: Option<Arc<dyn deploy_core::port::Metrics>>,
}

/// Where the promotion lock lives when the environment's `state` does not say.
#[derive(Clone)]
pub enum Locks {
    /// One lock backend for every environment (the sandbox, the demo).
    Shared(Arc<dyn Lock>),
    /// The `deploy/lock` annotation on each environment's carrier Application, over Argo
    /// CD's REST API.
    PerApplication,
    /// The same annotation over the Kubernetes API (`--core`), so that a run over REST and
    /// one with `--core` exclude each other; the client also serves `state.lock =
    /// "kubernetes"` (a Lease).
    Core(deploy_argocd::kube::Client),
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared(l) => f.debug_tuple("Shared").field(l).finish(),
            Self::PerApplication => f.write_str("PerApplication"),
            Self::Core(_) => f.write_str("Core"),
        }
    }
}

/// The Helm parameters that hold the tag, across environments.
pub fn tag_parameters(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .environments
        .values()
        .filter_map(|e| match &e.image_override {
            deploy_core::config::ImageOverride::Helm { parameter } => Some(parameter.clone()),
            deploy_core::config::ImageOverride::Kustomize => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Backends {
    /// The backends for `global`: the sandbox, or the real adapters (ECR with `ecr`; Argo CD
    /// over its REST API, or over the Kubernetes API with `--core`).
    pub async fn open(
        global: &Global,
        config: &mut Config,
        ecr: deploy_aws::EcrOptions,
    ) -> Result<Self> {
        if global.sandbox {
            let sandbox = Sandbox::open(Path::new(SANDBOX_DIR), config)?;
            compress_time(config);
            return Ok(sandbox.backends());
        }
        let state = state_stores(config, &ecr).await;
        let registry = Arc::new(
            deploy_aws::EcrRegistry::with_options(config, ecr)
                .context("setting up the ECR clients")?,
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics: Arc<dyn deploy_core::port::Metrics> = Arc::new(
            deploy_metrics::Sources::new(deploy_metrics::SourceOptions::default())
                .context("setting up the metric sources of checks")?,
        );
        // Reading commands work without a place for the audit trail; `audit_ready` is checked
        // before anything is changed.
        let audit_path = global
            .audit_log
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(crate::audit_log::default_path);
        let audit: Arc<dyn AuditLog> = match &audit_path {
            Some(p) => Arc::new(crate::audit_log::FileAuditLog::new(p)),
            None => Arc::new(deploy_engine::memory::InMemoryAuditLog::default()),
        };
        let tag_parameters = tag_parameters(config);
        if global.core {
            let client = deploy_argocd::kube::client()
                .await
                .context("connecting to Kubernetes (--core)")?;
            let ns = &config.argocd.namespace;
            let argocd = deploy_argocd::kube::KubeArgoCd::new(client.clone(), ns)
                .with_username(crate::commands::promote::actor().os_user)
                .with_tag_parameters(tag_parameters);
            let argocd = Arc::new(argocd);
            return Ok(Self {
                registry,
                argocd: argocd.clone(),
                inventory: argocd,
                locks: Locks::Core(client),
                audit,
                state,
                clock,
                sandbox: None,
                rest: None,
                audit_path,
                argocd_missing: None,
                metrics: Some(metrics),
            });
        }
        let mut argocd_config = config.argocd.clone();
        if let Some(server) = global
            .argocd_server
            .as_ref()
            .filter(|s| !s.trim().is_empty())
        {
            argocd_config.server = Some(server.clone());
        }
        argocd_config.plaintext |= global.plaintext;
        argocd_config.insecure |= global.insecure;
        // Commands that only read registries (release check/latest) work without Argo CD;
        // one that needs it is refused before it starts, saying what to set (exit 2).
        let missing = if argocd_config.server.is_none() {
            Some(
                "no Argo CD server: set [argocd].server in deploy.toml, ARGOCD_SERVER or --argocd-server",
            )
        } else if std::env::var("ARGOCD_AUTH_TOKEN").map_or(true, |t| t.trim().is_empty()) {
            Some(
                "ARGOCD_AUTH_TOKEN is not set: create a token (argocd account generate-token, or a project role token: \
                 argocd proj role create-token PROJECT ROLE) and export it; deploy never reads tokens from files",
            )
        } else {
            None
        };
        if let Some(why) = missing {
            let argocd = Arc::new(Unconfigured(why.to_owned()));
            return Ok(Self {
                registry,
                argocd: argocd.clone(),
                inventory: argocd,
                locks: Locks::PerApplication,
                audit,
                state,
                clock,
                sandbox: None,
                rest: None,
                audit_path,
                argocd_missing: Some(why.to_owned()),
                metrics: Some(metrics),
            });
        }
        // A server that is not a host, host:port or http(s) URL is a mistake in the
        // configuration (exit 2), found before anything is asked of Argo CD.
        if let Some(server) = &argocd_config.server {
            deploy_argocd::rest::server_url(server, argocd_config.plaintext).map_err(|e| {
                UsageError(format!(
                    "{e}; set [argocd].server in deploy.toml, ARGOCD_SERVER or --argocd-server to \
                     host[:port] or https://host[:port]"
                ))
            })?;
        }
        let token =
            secrecy::SecretString::from(std::env::var("ARGOCD_AUTH_TOKEN").unwrap_or_default());
        let rest = deploy_argocd::rest::RestArgoCd::with_options(
            &argocd_config,
            token,
            deploy_argocd::rest::RestOptions::default().with_tag_parameters(tag_parameters),
        )
        .context("setting up the Argo CD client")?;
        let rest = Arc::new(rest);
        Ok(Self {
            registry,
            argocd: rest.clone(),
            inventory: rest.clone(),
            locks: Locks::PerApplication,
            audit,
            state,
            clock,
            sandbox: None,
            rest: Some(rest),
            audit_path,
            argocd_missing: None,
            metrics: Some(metrics),
        })
    }

    /// Whether the promotion lock of `env` is an annotation of the environment's carrier
    /// Application, which its ApplicationSet must then preserve.
    pub fn annotation_lock(&self, env: &deploy_core::config::Environment) -> bool {
        match env.state.as_ref().filter(|_| self.sandbox.is_none()) {
            Some(state) => state.lock == deploy_core::config::LockBackend::Argocd,
            None => matches!(
                (&self.locks, &self.rest),
                (Locks::PerApplication, Some(_)) | (Locks::Core(_), _)
            ),
        }
    }

    /// The promotion lock for `env`. With `state` in the environment, the backend it names
    /// (an S3 object, a Lease, or the annotation), whatever the transport; without it, the
    /// sandbox's, or the `deploy/lock` annotation on the environment's carrier Application
    /// over whichever API reaches Argo CD (REST, or Kubernetes with `--core`): one lock
    /// whatever the transport (F5).
    pub async fn lock_for(
        &self,
        config: &Config,
        env: &deploy_core::config::Environment,
    ) -> Result<Arc<dyn Lock>> {
        let chosen = env.state.as_ref().filter(|_| self.sandbox.is_none());
        match (chosen.map(|s| s.lock), &self.locks) {
            (Some(LockBackend::S3), _) => {
                let store = self.state.get(&env.name).ok_or_else(|| {
                    anyhow::anyhow!("no S3 state store for {} (state.s3 is not set)", env.name)
                })?;
                Ok(Arc::new(store.lock(
                    &env.name,
                    &deploy_core::lock::key(&config.app, &env.name),
                    self.clock.clone(),
                )))
            }
            (None | Some(LockBackend::Kubernetes), Locks::Shared(l)) => Ok(l.clone()),
            (Some(LockBackend::Kubernetes), Locks::Core(client)) => Ok(Arc::new(
                deploy_argocd::kube::LeaseLock::new(client.clone(), &config.argocd.namespace)
                    .with_clock(self.clock.clone()),
            )),
            (Some(LockBackend::Argocd) | None, Locks::Core(client)) => {
                let carrier = deploy_core::lock::carrier(config, env)
                    .expect("validated: a configuration has clusters");
                Ok(Arc::new(
                    deploy_argocd::rest::lock::ApplicationLock::over_kube(
                        client.clone(),
                        &config.argocd.namespace,
                        &carrier,
                    )
                    .with_clock(self.clock.clone()),
                ))
            }
            (Some(LockBackend::Kubernetes), Locks::PerApplication) => {
                let client = deploy_argocd::kube::client().await.with_context(|| {
                    format!(
                        "connecting to Kubernetes for the promotion lock of {} (state.lock = \"kubernetes\")",
                        env.name
                    )
                })?;
                Ok(Arc::new(
                    deploy_argocd::kube::LeaseLock::new(client, &config.argocd.namespace)
                        .with_clock(self.clock.clone()),
                ))
            }
            (Some(LockBackend::Argocd) | None, _) => match &self.rest {
                Some(rest) => {
                    let carrier = deploy_core::lock::carrier(config, env)
                        .expect("validated: a configuration has clusters");
                    Ok(Arc::new(
                        deploy_argocd::rest::lock::ApplicationLock::new((**rest).clone(), carrier)
                            .with_clock(self.clock.clone()),
                    ))
                }
                None => Err(anyhow::anyhow!(
                    "Argo CD is not configured, so there is no promotion lock"
                )),
            },
        }
    }

    /// Where `deploy watch --leader-elect` replicas of `env` elect their leader: with `--core`
    /// and no `state`, a Lease (what deploy/rbac.yaml grants by name; the replicas of one
    /// Deployment all use one transport, so the REST/`--core` split of F5 does not arise);
    /// otherwise where the promotion lock is ([`Backends::lock_for`]).
    pub async fn leader_lock_for(
        &self,
        config: &Config,
        env: &deploy_core::config::Environment,
    ) -> Result<Arc<dyn Lock>> {
        match (&self.locks, env.state.as_ref()) {
            (Locks::Core(client), None) => Ok(Arc::new(
                deploy_argocd::kube::LeaseLock::new(client.clone(), &config.argocd.namespace)
                    .with_clock(self.clock.clone()),
            )),
            _ => self.lock_for(config, env).await,
        }
    }

    /// The audit trail of `env`: its S3 state store, else this machine's (or the sandbox's).
    pub fn audit_for(&self, env: &deploy_core::config::Environment) -> Arc<dyn AuditLog> {
        match self.state.get(&env.name) {
            Some(store) if self.sandbox.is_none() => Arc::new(store.audit_log(&env.name)),
            _ => self.audit.clone(),
        }
    }

    /// Whether `env`'s audit trail is the file on this machine (no `state.s3`).
    pub fn audit_is_local(&self, env: &deploy_core::config::Environment) -> bool {
        self.sandbox.is_none() && !self.state.contains_key(&env.name)
    }

    /// Checks, before anything is changed, that the audit record of `env` can be written:
    /// for a local trail, the directory exists (or is created) and the file opens for
    /// appending (an S3 trail is checked by the run's first append, before any change).
    pub fn audit_ready(&self, env: &deploy_core::config::Environment) -> Result<()> {
        if !self.audit_is_local(env) {
            return Ok(());
        }
        let path = self.audit_path.as_ref().ok_or_else(|| {
            UsageError("no place for the audit trail: set --audit-log, DEPLOY_AUDIT_LOG, XDG_STATE_HOME or HOME".into())
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                UsageError(format!(
                    "cannot create {} for the audit trail: {e}; set --audit-log",
                    dir.display()
                ))
            })?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                UsageError(format!(
                    "cannot append to the audit trail {}: {e}; set --audit-log to a writable file",
                    path.display()
                ))
            })?;
        Ok(())
    }

    /// Who is logged in to Argo CD, when the backend can say.
    pub async fn argocd_user(&self) -> Option<String> {
        match &self.rest {
            Some(rest) => rest
                .username()
                .await
                .map_err(|e| tracing::debug!("userinfo: {e}"))
                .ok(),
            None => None,
        }
    }

    /// Saves the sandbox's state (no-op for real backends).
    pub fn save(&self) -> Result<()> {
        self.sandbox.as_ref().map_or(Ok(()), Sandbox::save)
    }
}

/// The S3 state store of every environment with `state.s3` (clients only: nothing is sent
/// until a command reads or writes the state).
async fn state_stores(
    config: &Config,
    aws: &deploy_aws::EcrOptions,
) -> BTreeMap<String, deploy_aws::S3Store> {
    let mut stores = BTreeMap::new();
    for env in config.environments.values() {
        let Some(state) = &env.state else { continue };
        let Some(location) = &state.s3 else { continue };
        let options = deploy_aws::S3StateOptions {
            location: location.clone(),
            region: state.region.clone(),
            aws_profile: state.aws_profile.clone(),
            fallback_region: env.registry.regions[0].clone(),
        };
        stores.insert(
            env.name.clone(),
            deploy_aws::S3Store::connect(options, aws).await,
        );
    }
    stores
}

/// The sandbox compresses time: soak and timeout divided by [`SANDBOX_SPEEDUP`].
pub fn compress_time(config: &mut Config) {
    for env in config.environments.values_mut() {
        env.soak /= SANDBOX_SPEEDUP;
        env.timeout = (env.timeout / SANDBOX_SPEEDUP).max(Duration::from_secs(10));
        for c in &mut env.checks {
            c.interval = (c.interval / SANDBOX_SPEEDUP).max(Duration::from_millis(100));
            c.initial_delay /= SANDBOX_SPEEDUP;
        }
    }
}

/// The sandbox: an in-memory world saved as JSON between commands.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The world.
    pub world: World,
    file: PathBuf,
}

impl Sandbox {
    /// Opens the sandbox in `dir`, seeding a fresh world from `config` if there is none.
    pub fn open(dir: &Path, config: &Config) -> Result<Self> {
        let file = dir.join("state.json");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let world = match std::fs::read_to_string(&file) {
            Ok(text) => {
                let state: WorldState = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "the sandbox state {} is unreadable; run `deploy --sandbox sandbox reset`",
                        file.display()
                    )
                })?;
                World::from_state(state, clock)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let sandbox = Self {
                    world: fresh_world(config, clock),
                    file,
                };
                sandbox.save()?;
                return Ok(sandbox);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        // Reading commands never write: the state advances with the clock, not with saves.
        Ok(Self { world, file })
    }

    /// Writes the state (atomically: a temporary file renamed over the old one).
    pub fn save(&self) -> Result<()> {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // One temporary file per process, so that concurrent saves never trample each other.
        let tmp = self
            .file
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let text = serde_json::to_string(&self.world.state()).context("serializing the sandbox")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("writing {}", self.file.display()))?;
        Ok(())
    }

    /// Deletes the saved state.
    pub fn reset(dir: &Path) -> Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    fn backends(self) -> Backends {
        let w = self.world.clone();
        Backends {
            registry: Arc::new(w.registry),
            argocd: Arc::new(w.argocd.clone()),
            inventory: Arc::new(w.argocd),
            locks: Locks::Shared(Arc::new(w.lock)),
            audit: Arc::new(w.audit),
            state: BTreeMap::new(),
            clock: w.clock,
            sandbox: Some(self),
            rest: None,
            audit_path: None,
            argocd_missing: None,
            metrics: Some(Arc::new(w.metrics)),
        }
    }
}

/// A world where every environment runs the first release and CI has just pushed the
/// second to the environments without `promote_from` (their Applications are syncing it).
pub fn fresh_world(config: &Config, clock: Arc<dyn Clock>) -> World {
    let [first, second] = SANDBOX_TAGS.map(|t| Tag::new(t).expect("valid tag"));
    let world = World::seeded(config, clock, &first);
    world.argocd.set_timing(Timing {
        sync: Duration::from_secs(2),
        health: Duration::from_secs(2),
    });
    for env in config
        .environments
        .values()
        .filter(|e| e.promote_from.is_none())
    {
        world.ci_push(config, env, &second);
        if env.sync.is_automated() {
            image_updater_writes(&world, config, env, &second);
        }
    }
    world
}

/// What Argo CD Image Updater does for an automated environment: write the tag into every Application.
pub fn image_updater_writes(
    world: &World,
    config: &Config,
    env: &deploy_core::config::Environment,
    tag: &Tag,
) {
    // The in-memory backend never waits, so blocking on it here is fine.
    let _ = futures::executor::block_on(world.write_release(config, env, tag));
}

impl Backends {
    /// A configuration error (exit 2) saying what to set when Argo CD is not configured;
    /// checked before a command that needs Argo CD starts.
    pub fn require_argocd(&self) -> Result<(), UsageError> {
        match &self.argocd_missing {
            None => Ok(()),
            Some(why) => Err(UsageError(format!("Argo CD is not configured: {why}"))),
        }
    }
}

/// Argo CD when it is not configured (no server or no token): every call says what to set.
#[derive(Debug)]
struct Unconfigured(String);

impl Unconfigured {
    fn err(&self) -> deploy_core::Error {
        deploy_core::Error::Permission {
            message: self.0.clone(),
        }
    }
}

#[async_trait::async_trait]
impl ArgoCd for Unconfigured {
    async fn application(&self, _: &str) -> deploy_core::Result<deploy_core::port::Application> {
        Err(self.err())
    }
    async fn set_override(
        &self,
        _: &str,
        _: &deploy_core::port::OverrideValue,
    ) -> deploy_core::Result<deploy_core::port::Application> {
        Err(self.err())
    }
    async fn sync(&self, _: &str, _: &deploy_core::port::SyncRequest) -> deploy_core::Result<()> {
        Err(self.err())
    }
    async fn watch(&self, _: &str) -> deploy_core::Result<deploy_core::port::AppStream> {
        Err(self.err())
    }
    async fn terminate(&self, _: &str) -> deploy_core::Result<()> {
        Err(self.err())
    }
    async fn annotate(
        &self,
        _: &str,
        _: &std::collections::BTreeMap<String, String>,
    ) -> deploy_core::Result<()> {
        Err(self.err())
    }
    async fn sync_windows(&self, _: &str) -> deploy_core::Result<deploy_core::window::AppWindows> {
        Err(self.err())
    }
}

#[async_trait::async_trait]
impl ArgoCdInventory for Unconfigured {
    async fn application_sets(
        &self,
    ) -> deploy_core::Result<Vec<deploy_core::port::ApplicationSet>> {
        Err(self.err())
    }

    async fn application_set(
        &self,
        _: &str,
    ) -> deploy_core::Result<deploy_core::port::ApplicationSet> {
        Err(self.err())
    }

    async fn clusters(&self) -> deploy_core::Result<Vec<deploy_core::port::ClusterInfo>> {
        Err(self.err())
    }
}
