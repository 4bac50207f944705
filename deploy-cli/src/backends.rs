//! Wiring: the configuration and the backends a command runs against — the sandbox's
//! in-memory world (kept in `.deploy-sandbox/`) or the real adapters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deploy_core::config::Config;
use deploy_core::memory::{Timing, World, WorldState};
use deploy_core::model::Tag;
use deploy_core::plan::live::{override_for, service_images};
use deploy_core::port::{ArgoCd, AuditLog, Clock, Lock, Registry, SystemClock};

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
        .unwrap_or_else(|| PathBuf::from("deploy.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        UsageError(format!(
            "cannot read the configuration {}: {e}; pass --config PATH, set DEPLOY_CONFIG, or start from examples/deploy.toml",
            path.display()
        ))
    })?;
    let config = Config::parse(&path.display().to_string(), &text)?;
    Ok((path, config))
}

/// The ports a command uses.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Registries.
    pub registry: Arc<dyn Registry>,
    /// Argo CD.
    pub argocd: Arc<dyn ArgoCd>,
    /// Promotion lock.
    pub lock: Arc<dyn Lock>,
    /// Audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// The sandbox, when `--sandbox`.
    pub sandbox: Option<Sandbox>,
}

impl Backends {
    /// The backends for `global`: the sandbox, or the real adapters.
    pub fn open(global: &Global, config: &mut Config) -> Result<Self> {
        if global.sandbox {
            let sandbox = Sandbox::open(Path::new(SANDBOX_DIR), config)?;
            compress_time(config);
            return Ok(sandbox.backends());
        }
        Err(UsageError(
            "the real ECR and Argo CD backends are not wired into this build yet; run with --sandbox".into(),
        )
        .into())
    }

    /// Saves the sandbox's state (no-op for real backends).
    pub fn save(&self) -> Result<()> {
        self.sandbox.as_ref().map_or(Ok(()), Sandbox::save)
    }
}

/// The sandbox compresses time: soak and timeout divided by [`SANDBOX_SPEEDUP`].
pub fn compress_time(config: &mut Config) {
    for env in config.environments.values_mut() {
        env.soak /= SANDBOX_SPEEDUP;
        env.timeout = (env.timeout / SANDBOX_SPEEDUP).max(Duration::from_secs(10));
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh_world(config, clock),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let sandbox = Self { world, file };
        sandbox.save()?;
        Ok(sandbox)
    }

    /// Writes the state (atomically: a temporary file renamed over the old one).
    pub fn save(&self) -> Result<()> {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.file.with_extension("json.tmp");
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
            argocd: Arc::new(w.argocd),
            lock: Arc::new(w.lock),
            audit: Arc::new(w.audit),
            clock: w.clock,
            sandbox: Some(self),
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
    for c in &config.clusters {
        let names: Vec<String> = service_images(config, env, c)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        let value = override_for(env, &names, tag);
        // The in-memory backend never waits, so blocking on it here is fine.
        let _ = futures::executor::block_on(
            world
                .argocd
                .set_override(&config.application_name(env, c), &value),
        );
    }
}
