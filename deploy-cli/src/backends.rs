//! Wiring: the configuration and the backends a command runs against — the sandbox's
//! in-memory world (kept in `.deploy-sandbox/`) or the real adapters.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deploy_core::config::{Config, Environment};
use deploy_core::lock::{self, Placement, Transport};
use deploy_core::model::Tag;
use deploy_core::port::{ArgoCd, ArgoCdInventory, AuditLog, Clock, Lock, Registry, SystemClock};
use deploy_core::sim::Timing;
use deploy_engine::memory::{World, WorldState};

use crate::cli::Global;
use crate::exit::UsageError;

/// Where the sandbox keeps its state, relative to the working directory.
pub(crate) const SANDBOX_DIR: &str = ".deploy-sandbox";

/// The sandbox compresses the configuration's soak and timeouts by this factor, so a
/// five-minute soak takes five seconds.
pub(crate) const SANDBOX_SPEEDUP: u32 = 60;

/// The first release of a fresh sandbox (everywhere), and the one CI has just pushed to
/// the environments without `promote_from`.
pub(crate) const SANDBOX_TAGS: [&str; 2] = ["0a1b2c3d4e5f", "1b2c3d4e5f60"];

/// Loads the configuration from `--config`, `$DEPLOY_CONFIG` or `./deploy.toml`.
pub(crate) fn load_config(global: &Global) -> Result<(PathBuf, Config)> {
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
pub(crate) const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The ports a command uses.
#[derive(Debug, Clone)]
pub(crate) struct Backends {
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
pub(crate) enum Locks {
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
pub(crate) fn tag_parameters(config: &Config) -> Vec<String> {
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
    pub(crate) async fn open(
        global: &Global,
        config: &mut Config,
        ecr: deploy_aws::EcrOptions,
    ) -> Result<Self> {
        if global.sandbox {
            let sandbox = Sandbox::open(Path::new(SANDBOX_DIR), config)?;
            compress_time(config);
            return Ok(sandbox.backends());
        }
        let real = Real::open(global, config, ecr).await?;
        if global.core {
            return real.over_kube(config).await;
        }
        real.over_rest(global, config)
    }

    /// The in-memory backends of `world` (the demo's; the sandbox adds its file).
    pub(crate) fn in_memory(world: &World) -> Self {
        let w = world.clone();
        Self {
            registry: Arc::new(w.registry),
            argocd: Arc::new(w.argocd.clone()),
            inventory: Arc::new(w.argocd),
            locks: Locks::Shared(Arc::new(w.lock)),
            audit: Arc::new(w.audit),
            state: BTreeMap::new(),
            clock: w.clock,
            sandbox: None,
            rest: None,
            audit_path: None,
            argocd_missing: None,
            metrics: Some(Arc::new(w.metrics)),
        }
    }

    /// How these backends reach Argo CD, for [`lock::placement`].
    fn transport(&self) -> Transport {
        match (&self.locks, &self.rest) {
            (Locks::Shared(_), _) => Transport::InMemory,
            (Locks::Core(_), _) => Transport::Kubernetes,
            (Locks::PerApplication, Some(_)) => Transport::Rest,
            (Locks::PerApplication, None) => Transport::Unconfigured,
        }
    }

    /// Whether the promotion lock of `env` is an annotation of the environment's carrier
    /// Application, which its ApplicationSet must then preserve.
    pub(crate) fn annotation_lock(&self, env: &Environment) -> bool {
        lock::placement(env, self.transport()) == Placement::Annotation
    }

    /// The promotion lock for `env`, where [`lock::placement`] puts it.
    pub(crate) async fn lock_for(
        &self,
        config: &Config,
        env: &Environment,
    ) -> Result<Arc<dyn Lock>> {
        let placement = lock::placement(env, self.transport());
        self.build_lock(config, env, placement).await
    }

    /// Where `deploy watch --leader-elect` replicas of `env` elect their leader
    /// ([`lock::leader_placement`]).
    pub(crate) async fn leader_lock_for(
        &self,
        config: &Config,
        env: &Environment,
    ) -> Result<Arc<dyn Lock>> {
        let placement = lock::leader_placement(env, self.transport());
        self.build_lock(config, env, placement).await
    }

    /// The lock backend of `placement`, over the clients these backends hold.
    async fn build_lock(
        &self,
        config: &Config,
        env: &Environment,
        placement: Placement,
    ) -> Result<Arc<dyn Lock>> {
        let ns = &config.argocd.namespace;
        let clock = self.clock.clone();
        match (placement, &self.locks) {
            (Placement::InMemory, Locks::Shared(l)) => Ok(l.clone()),
            (Placement::S3, _) => {
                let store = self.state.get(&env.name).ok_or_else(|| {
                    anyhow::anyhow!("no S3 state store for {} (state.s3 is not set)", env.name)
                })?;
                let key = lock::key(&config.app, &env.name);
                Ok(Arc::new(store.lock(&env.name, &key, clock)))
            }
            (Placement::Lease, Locks::Core(client)) => Ok(Arc::new(
                deploy_argocd::kube::LeaseLock::new(client.clone(), ns).with_clock(clock),
            )),
            (Placement::Lease, _) => {
                let client = deploy_argocd::kube::client().await.with_context(|| {
                    format!(
                        "connecting to Kubernetes for the promotion lock of {} (state.lock = \"kubernetes\")",
                        env.name
                    )
                })?;
                Ok(Arc::new(
                    deploy_argocd::kube::LeaseLock::new(client, ns).with_clock(clock),
                ))
            }
            (Placement::Annotation, Locks::Core(client)) => Ok(Arc::new(
                deploy_argocd::rest::lock::ApplicationLock::over_kube(
                    client.clone(),
                    ns,
                    &carrier(config, env),
                )
                .with_clock(clock),
            )),
            (Placement::Annotation, _) => match &self.rest {
                Some(rest) => Ok(Arc::new(
                    deploy_argocd::rest::lock::ApplicationLock::new(
                        (**rest).clone(),
                        carrier(config, env),
                    )
                    .with_clock(clock),
                )),
                None => Err(no_lock()),
            },
            (Placement::InMemory | Placement::Unavailable, _) => Err(no_lock()),
        }
    }

    /// The audit trail of `env`: its S3 state store, else this machine's (or the sandbox's).
    pub(crate) fn audit_for(&self, env: &Environment) -> Arc<dyn AuditLog> {
        match self.state.get(&env.name) {
            Some(store) if self.sandbox.is_none() => Arc::new(store.audit_log(&env.name)),
            _ => self.audit.clone(),
        }
    }

    /// Whether `env`'s audit trail is the file on this machine (no `state.s3`).
    pub(crate) fn audit_is_local(&self, env: &Environment) -> bool {
        self.sandbox.is_none() && !self.state.contains_key(&env.name)
    }

    /// Checks, before anything is changed, that the audit record of `env` can be written:
    /// for a local trail, the directory exists (or is created) and the file opens for
    /// appending (an S3 trail is checked by the run's first append, before any change).
    pub(crate) fn audit_ready(&self, env: &Environment) -> Result<()> {
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
    pub(crate) async fn argocd_user(&self) -> Option<String> {
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
    pub(crate) fn save(&self) -> Result<()> {
        self.sandbox.as_ref().map_or(Ok(()), Sandbox::save)
    }
}

/// The Application that carries the annotation lock of `env`.
fn carrier(config: &Config, env: &Environment) -> String {
    lock::carrier(config, env).expect("validated: a configuration has clusters")
}

fn no_lock() -> anyhow::Error {
    anyhow::anyhow!("Argo CD is not configured, so there is no promotion lock")
}

/// What the real backends share, whichever API reaches Argo CD.
struct Real {
    registry: Arc<dyn Registry>,
    audit: Arc<dyn AuditLog>,
    audit_path: Option<PathBuf>,
    state: BTreeMap<String, deploy_aws::S3Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn deploy_core::port::Metrics>,
}

impl Real {
    async fn open(global: &Global, config: &Config, ecr: deploy_aws::EcrOptions) -> Result<Self> {
        let state = state_stores(config, &ecr).await;
        let registry = Arc::new(
            deploy_aws::EcrRegistry::with_options(config, ecr)
                .context("setting up the ECR clients")?,
        );
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
        Ok(Self {
            registry,
            audit,
            audit_path,
            state,
            clock: Arc::new(SystemClock),
            metrics,
        })
    }

    /// The backends with `argocd` reaching Argo CD.
    fn with<A: ArgoCd + ArgoCdInventory + 'static>(
        self,
        argocd: Arc<A>,
        locks: Locks,
        rest: Option<Arc<deploy_argocd::rest::RestArgoCd>>,
        argocd_missing: Option<String>,
    ) -> Backends {
        Backends {
            registry: self.registry,
            argocd: argocd.clone(),
            inventory: argocd,
            locks,
            audit: self.audit,
            state: self.state,
            clock: self.clock,
            sandbox: None,
            rest,
            audit_path: self.audit_path,
            argocd_missing,
            metrics: Some(self.metrics),
        }
    }

    /// Argo CD over the Kubernetes API (`--core`).
    async fn over_kube(self, config: &Config) -> Result<Backends> {
        let client = deploy_argocd::kube::client()
            .await
            .context("connecting to Kubernetes (--core)")?;
        let argocd = deploy_argocd::kube::KubeArgoCd::new(client.clone(), &config.argocd.namespace)
            .with_username(crate::process::actor().os_user)
            .with_tag_parameters(tag_parameters(config));
        Ok(self.with(Arc::new(argocd), Locks::Core(client), None, None))
    }

    /// Argo CD over its REST API, or [`Unconfigured`] when the server or the token is missing.
    fn over_rest(self, global: &Global, config: &Config) -> Result<Backends> {
        let argocd_config = argocd_config(global, config);
        // Commands that only read registries (release check/latest) work without Argo CD;
        // one that needs it is refused before it starts, saying what to set (exit 2).
        if let Some(why) = argocd_missing(&argocd_config) {
            let argocd = Arc::new(Unconfigured(why.to_owned()));
            return Ok(self.with(argocd, Locks::PerApplication, None, Some(why.to_owned())));
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
            deploy_argocd::rest::RestOptions::default().with_tag_parameters(tag_parameters(config)),
        )
        .context("setting up the Argo CD client")?;
        let rest = Arc::new(rest);
        Ok(self.with(rest.clone(), Locks::PerApplication, Some(rest), None))
    }
}

/// The Argo CD settings of the configuration, with the flags' overrides.
fn argocd_config(global: &Global, config: &Config) -> deploy_core::config::ArgoCdConfig {
    let mut argocd = config.argocd.clone();
    if let Some(server) = global
        .argocd_server
        .as_ref()
        .filter(|s| !s.trim().is_empty())
    {
        argocd.server = Some(server.clone());
    }
    argocd.plaintext |= global.plaintext;
    argocd.insecure |= global.insecure;
    argocd
}

/// What to set when Argo CD is not configured: no server, or no token.
fn argocd_missing(argocd: &deploy_core::config::ArgoCdConfig) -> Option<&'static str> {
    if argocd.server.is_none() {
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
pub(crate) fn compress_time(config: &mut Config) {
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
pub(crate) struct Sandbox {
    /// The world.
    pub world: World,
    file: PathBuf,
}

impl Sandbox {
    /// Opens the sandbox in `dir`, seeding a fresh world from `config` if there is none.
    pub(crate) fn open(dir: &Path, config: &Config) -> Result<Self> {
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
    pub(crate) fn save(&self) -> Result<()> {
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
    pub(crate) fn reset(dir: &Path) -> Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    fn backends(self) -> Backends {
        Backends {
            sandbox: Some(self.clone()),
            ..Backends::in_memory(&self.world)
        }
    }
}

/// A world where every environment runs the first release and CI has just pushed the
/// second to the environments without `promote_from` (their Applications are syncing it).
pub(crate) fn fresh_world(config: &Config, clock: Arc<dyn Clock>) -> World {
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
pub(crate) fn image_updater_writes(world: &World, config: &Config, env: &Environment, tag: &Tag) {
    // The in-memory backend never waits, so blocking on it here is fine.
    let _ = futures::executor::block_on(world.write_release(config, env, tag));
}

impl Backends {
    /// A configuration error (exit 2) saying what to set when Argo CD is not configured;
    /// checked before a command that needs Argo CD starts.
    pub(crate) fn require_argocd(&self) -> Result<(), UsageError> {
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
