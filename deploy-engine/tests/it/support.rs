//! A seeded world and helpers shared by the scenarios.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::config::{Config, EXAMPLE};
use deploy_core::model::Tag;
use deploy_core::plan::live::service_images;
use deploy_core::plan::promotion::{Intent, PromotionPlan, plan};
use deploy_core::port::{ArgoCd, Clock};
use deploy_core::rollout::event::{Event, RunReport};
use deploy_core::trail::Actor;
use deploy_engine::clock::TokioClock;
use deploy_engine::engine::{Engine, EngineError, Ports, RunOptions, StopRequest};
use deploy_engine::memory::World;
use deploy_engine::observe::promotion::observe;
use tokio::sync::watch;

pub const T1: &str = "1111111aaaaa";
pub const T2: &str = "2222222bbbbb";

/// When the world's clock starts.
pub fn epoch() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000).unwrap()
}

pub fn tag(s: &str) -> Tag {
    Tag::new(s).unwrap()
}

pub struct Fixture {
    pub config: Config,
    pub world: World,
}

impl Fixture {
    /// Every environment at T1; staging then gets T2 from CI and deploys it.
    pub async fn with_staging_at_t2() -> Self {
        Self::with_staging_at_t2_on(Arc::new(TokioClock::new(epoch()))).await
    }

    /// The same world on `clock` (every backend and the engine share it).
    pub async fn with_staging_at_t2_on(clock: Arc<dyn Clock>) -> Self {
        Self::with_config_at_t2(EXAMPLE, clock).await
    }

    /// The same world from the configuration `text` (the example, edited).
    pub async fn with_config_at_t2(text: &str, clock: Arc<dyn Clock>) -> Self {
        let config = Config::parse("deploy.toml", text).unwrap();
        let world = World::seeded(&config, clock, &tag(T1));
        let f = Self { config, world };
        f.release_to_staging(T2).await;
        f
    }

    /// CI pushes `t` to staging; the image updater writes it; Argo CD auto-syncs.
    pub async fn release_to_staging(&self, t: &str) {
        let staging = self.config.environment("staging").unwrap();
        self.world.ci_push(&self.config, staging, &tag(t));
        self.world
            .write_release(&self.config, staging, &tag(t))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    }

    pub fn app_name(&self, env: &str, cluster: &str) -> String {
        let env = self.config.environment(env).unwrap();
        self.config
            .application_name(env, self.config.cluster(cluster).unwrap())
    }

    pub async fn plan(&self, intent: Intent) -> PromotionPlan {
        let prod = self.config.environment("prod").unwrap();
        let obs = observe(
            &self.config,
            prod,
            intent,
            None,
            &self.world.registry,
            &self.world.argocd,
            &self.world.argocd,
        )
        .await
        .unwrap();
        plan(&self.config, prod, &obs)
    }

    pub fn options(&self, run: &str, stop: Option<watch::Receiver<StopRequest>>) -> RunOptions {
        let opts = RunOptions::new(run, format!("ci {run}"), "myapp-prod")
            .by(Actor {
                os_user: "ci".into(),
                argocd_user: Some("ci-bot".into()),
            })
            .with_grace(Duration::from_secs(60));
        match stop {
            Some(stop) => opts.with_stop(stop),
            None => opts,
        }
    }

    /// Plans and runs a promotion of prod; returns the result and every event.
    pub async fn promote(&self, opts: RunOptions) -> (Result<RunReport, EngineError>, Vec<Event>) {
        let p = self.plan(Intent::Promote { tag: None }).await;
        self.run(&p, opts).await
    }

    /// The engine's ports on this world, its in-memory metrics included.
    pub fn ports(&self) -> Ports<'_> {
        Ports::of_world(&self.world)
    }

    pub async fn run(
        &self,
        p: &PromotionPlan,
        opts: RunOptions,
    ) -> (Result<RunReport, EngineError>, Vec<Event>) {
        let mut events = Vec::new();
        let result = Engine::new(self.ports(), opts)
            .run(p, |e| events.push(e))
            .await;
        (result, events)
    }

    /// The tag each prod cluster runs, Healthy or not.
    pub async fn prod_images(&self) -> Vec<(String, String, deploy_core::port::Health)> {
        let prod = self.config.environment("prod").unwrap();
        let mut out = Vec::new();
        for c in &self.config.clusters {
            let app = self
                .world
                .argocd
                .application(&self.config.application_name(prod, c))
                .await
                .unwrap();
            let live =
                deploy_core::plan::live::live_tag(&app, &service_images(&self.config, prod, c));
            out.push((c.name.clone(), live.to_string(), app.health));
        }
        out
    }
}
