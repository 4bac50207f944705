//! `deploy demo`: the whole story on the in-memory backends, narrated, in seconds.
//!
//! It runs the same library code as the real commands (planners, engine, watch logic)
//! over a seeded in-memory world with compressed time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use deploy_core::config::{Config, EXAMPLE, Environment};
use deploy_core::model::Tag;
use deploy_core::plan::build::{build_tag, push_order};
use deploy_core::plan::live::{is_at, service_images};
use deploy_core::plan::promotion::{Intent, PromotionPlan, plan};
use deploy_core::port::{ArgoCd, Clock, SystemClock};
use deploy_core::rollout::event::Event;
use deploy_core::sim::Timing;
use deploy_core::trail::Actor;
use deploy_engine::engine::{Engine, Ports, RunOptions};
use deploy_engine::memory::World;
use deploy_engine::observe::promotion::observe;
use deploy_engine::observe::release::check_release;
use deploy_engine::watch::Watcher;

use super::promote::{print_plan, print_summary};
use super::release::print_check;
use crate::backends::Backends;
use crate::exit::Exit;
use crate::output::Output;

/// The check of the example's prod that the demo simulates.
const CHECK: &str = "5xx-ratio";
/// Each prod cluster's 5xx ratio while it runs a good release (below the check's 0.01).
const BASELINE: [(&str, f64); 3] = [
    ("us-west-2", 0.002),
    ("us-east-1", 0.003),
    ("eu-west-1", 0.001),
];
/// The ratio of the second release on the cluster it breaks (at least the check's 0.05).
const BAD_RATIO: f64 = 0.12;

/// Runs the demo; `pace` stretches every simulated duration.
pub(crate) async fn run(out: Output, pace: f64) -> Result<Exit> {
    let started = Instant::now();
    let demo = Demo::new(out, pace)?;
    demo.introduce();
    for (round, sha, broken) in [
        (1, "7f3a9c1e2b4d5a6f7788", None),
        (2, "9b8c7d6e5f4a3b2c1d0e", Some("eu-west-1")),
    ] {
        demo.round(round, sha, broken).await?;
    }
    demo.finish(started);
    Ok(Exit::Success)
}

/// The demo's world: the example configuration with compressed time, on in-memory backends.
struct Demo {
    out: Output,
    /// Stretches every simulated duration.
    pace: f64,
    config: Config,
    world: World,
    backends: Backends,
    staging: Environment,
    prod: Environment,
    first: Tag,
}

impl Demo {
    fn new(out: Output, pace: f64) -> Result<Self> {
        let pace = if pace.is_finite() && pace > 0.0 {
            pace
        } else {
            1.0
        };
        let scaled = |ms: u64| scale(pace, ms);
        let mut config = Config::parse("examples/deploy.toml", EXAMPLE)?;
        for env in config.environments.values_mut() {
            env.soak = env.soak.min(scaled(1500));
            env.timeout = scaled(20_000);
            for c in &mut env.checks {
                c.interval = scaled(500);
                c.initial_delay = Duration::ZERO;
            }
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let first = Tag::new("5e1f00d0c0de")?;
        let world = World::seeded(&config, clock, &first);
        world.argocd.set_timing(Timing {
            sync: scaled(600),
            health: scaled(700),
        });
        world.registry.set_replication_delay(scaled(2500));
        let backends = Backends::in_memory(&world);
        let env = |name: &str| -> Result<Environment> {
            Ok(config
                .environment(name)
                .map_err(anyhow::Error::msg)?
                .clone())
        };
        let (staging, prod) = (env("staging")?, env("prod")?);
        // Prod's 5xx-ratio check measures each cluster's simulated traffic, which follows the
        // release the cluster runs: a low error ratio, until a release breaks one cluster.
        for (cluster, ratio) in BASELINE {
            world
                .simulate_check(&config, &prod, CHECK, cluster, vec![ratio], BTreeMap::new())
                .map_err(anyhow::Error::msg)?;
        }
        Ok(Self {
            out,
            pace,
            config,
            world,
            backends,
            staging,
            prod,
            first,
        })
    }

    fn say(&self, s: &str) {
        self.out.text(s);
    }

    fn introduce(&self) {
        self.say(
            "deploy demo: one application (myapp) of 3 services (api, worker, and the sentinel logserver)",
        );
        self.say(
            "on 3 EKS clusters (us-west-2, us-east-1, eu-west-1), one Argo CD, environments debug, staging and prod.",
        );
        self.say(&format!(
            "Everything runs {}. Time is compressed: a sync takes ~1s, soak 1.5s (prod's {CHECK} check measured every 0.5s), replication ~2.5s.\n",
            self.first
        ));
    }

    /// One release, from CI's build to `deploy status`; `broken`: the cluster whose traffic
    /// the release breaks.
    async fn round(&self, round: u32, sha: &str, broken: Option<&str>) -> Result<()> {
        self.say(&format!(
            "── Release {round} ──────────────────────────────────────────────────────────"
        ));
        let tag = self.build(sha)?;
        self.watch_staging(&tag).await?;
        self.replicate(&tag).await?;
        let p = self.plan_prod().await?;
        if let Some(cluster) = broken {
            self.break_release(cluster, &tag)?;
        }
        self.promote(round, &p).await?;
        self.say("\n6. `deploy status`: which release runs where.");
        let quiet = Output {
            format: self.out.format,
            quiet: true,
        };
        super::status::run(&self.config, &self.backends, quiet, None).await?;
        self.say("");
        Ok(())
    }

    /// Step 1: CI builds `sha` and pushes its images, the sentinel last.
    fn build(&self, sha: &str) -> Result<Tag> {
        let (config, staging) = (&self.config, &self.staging);
        let tag = build_tag(staging, sha, Some("staging")).map_err(anyhow::Error::msg)?;
        self.say(&format!(
            "1. CI builds commit {sha} on branch staging: `deploy build plan` gives tag {tag} and the push order,"
        ));
        self.say(
            "   the sentinel last, so that an image updater watching logserver only ever sees finished pushes.",
        );
        let pushes = push_order(config, staging, &tag);
        let release = self.world.ci_push(config, staging, &tag);
        for p in &pushes.pushes {
            let digest = release.digests.get(&p.service).map(|d| d.short());
            self.say(&format!("   pushed {}  {}", p.image, digest.unwrap_or("")));
        }
        Ok(tag)
    }

    /// Step 2: the watcher sees the complete release and writes it into staging.
    async fn watch_staging(&self, tag: &Tag) -> Result<()> {
        let (config, staging, backends) = (&self.config, &self.staging, &self.backends);
        self.say(
            "\n2. `deploy watch --env staging` polls the sentinel, sees the new tag and checks the whole release:",
        );
        let check = check_release(&*backends.registry, config, staging, tag).await?;
        print_check(self.out, config, &check);
        let mut watcher = Watcher::new(config, staging, &*backends.registry, &*backends.argocd);
        let poll = watcher.poll().await?;
        if poll.written.len() != config.clusters.len() {
            anyhow::bail!("the demo's watcher wrote {:?}", poll.written);
        }
        self.say(&format!(
            "   complete, so it writes the tag into the {} staging Applications, once; their sync is automated, so Argo CD deploys.",
            poll.written.len()
        ));
        wait_until(&self.world, config, staging, tag).await;
        self.say("   staging runs the release on all 3 clusters, Synced and Healthy.\n");
        Ok(())
    }

    /// Step 3: replication brings the images to prod's registries, after a while.
    async fn replicate(&self, tag: &Tag) -> Result<()> {
        let (config, prod, registry) = (&self.config, &self.prod, &*self.backends.registry);
        self.say(
            "3. ECR replication copies the staging images into the prod registry (account 222222222222) in 3 regions.",
        );
        let in_flight = check_release(registry, config, prod, tag).await?;
        self.say(&format!(
            "   right after the push, {} of 9 prod images are still missing; prod must wait.",
            in_flight.missing.len()
        ));
        tokio::time::sleep(scale(self.pace, 1600)).await;
        let landed = check_release(registry, config, prod, tag).await?;
        print_check(self.out, config, &landed);
        Ok(())
    }

    /// Step 4: the plan of prod.
    async fn plan_prod(&self) -> Result<PromotionPlan> {
        self.say(
            "\n4. `deploy plan --env prod`: the release live in staging, and four gates; then the waves.",
        );
        let b = &self.backends;
        let obs = observe(
            &self.config,
            &self.prod,
            Intent::Promote { tag: None },
            None,
            &*b.registry,
            &*b.argocd,
            &*b.inventory,
        )
        .await?;
        let p = plan(&self.config, &self.prod, &obs);
        print_plan(self.out, &p);
        Ok(p)
    }

    /// The release breaks `cluster`'s traffic, which only the check sees.
    fn break_release(&self, cluster: &str, tag: &Tag) -> Result<()> {
        self.world
            .simulate_release(
                &self.config,
                &self.prod,
                CHECK,
                cluster,
                tag,
                vec![BAD_RATIO],
            )
            .map_err(anyhow::Error::msg)?;
        self.say(&format!(
            "\n   (this time {tag} has a bug that only {cluster}'s traffic reaches: its pods start and stay Healthy,"
        ));
        self.say(&format!(
            "   but {:.0}% of the requests there fail while it runs {tag}; Argo CD health alone would let it through)",
            BAD_RATIO * 100.0
        ));
        Ok(())
    }

    /// Step 5: the engine promotes prod, narrated from its events.
    async fn promote(&self, round: u32, p: &PromotionPlan) -> Result<()> {
        self.say(
            "\n5. `deploy promote --env prod --yes`: wave by wave; each wave waits for our sync to finish, Synced,",
        );
        self.say(&format!(
            "   Healthy and running the release's images, then soaks while watching health and measuring {CHECK} per cluster."
        ));
        let actor = Actor {
            os_user: "demo".into(),
            argocd_user: Some("ci-bot".into()),
        };
        let opts = RunOptions::new(
            format!("demo-{round}"),
            "demo",
            deploy_core::lock::key(&self.config.app, "prod"),
        )
        .by(actor)
        .with_grace(Duration::ZERO);
        // The demo renders in the engine's callback: in memory, printing is all that blocks.
        let report = Engine::new(Ports::of_world(&self.world), opts)
            .run(p, |e| {
                self.out.record("event", &e);
                if matches!(e, Event::Gate(_) | Event::LockAcquired { .. }) {
                    return;
                }
                if let Some(line) = crate::progress::describe(&e) {
                    self.say(&format!("   {line}"));
                }
            })
            .await?;
        print_summary(self.out, &report);
        Ok(())
    }

    /// The audit trail's last word, and the result line.
    fn finish(&self, started: Instant) {
        let records = self.world.audit.state();
        if let Some(last) = records.last() {
            self.say(&format!(
                "The audit trail holds {} records (who, which release with digests, which clusters, when, outcome); the last, by {}: {}.",
                records.len(),
                last.actor,
                last.message
            ));
        }
        self.say(&format!(
            "Demo finished in {:.1}s. Try it on your own config: deploy --sandbox --config examples/deploy.toml status",
            started.elapsed().as_secs_f64()
        ));
        self.out.result(
            &serde_json::json!({ "seconds": started.elapsed().as_secs_f64(), "audit": records }),
        );
    }
}

/// `ms` milliseconds of the demo's story, stretched by `pace`.
fn scale(pace: f64, ms: u64) -> Duration {
    Duration::from_millis((ms as f64 * pace) as u64)
}

/// Waits (on the in-memory clock) until every Application of `env` runs `tag`, Healthy.
async fn wait_until(
    world: &World,
    config: &Config,
    env: &deploy_core::config::Environment,
    tag: &Tag,
) {
    loop {
        let mut all = true;
        for c in &config.clusters {
            let app = world
                .argocd
                .application(&config.application_name(env, c))
                .await
                .expect("seeded app");
            all &= is_at(&app, &service_images(config, env, c), tag);
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
