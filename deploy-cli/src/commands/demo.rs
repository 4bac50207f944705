//! `deploy demo`: the whole story on the in-memory backends, narrated, in seconds.
//!
//! It runs the same library code as the real commands (planners, engine, watch logic)
//! over a seeded in-memory world with compressed time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use deploy_core::config::{Config, EXAMPLE};
use deploy_core::model::Tag;
use deploy_core::plan::build::{build_tag, push_order};
use deploy_core::plan::live::{is_at, service_images};
use deploy_core::plan::promotion::{Intent, observe, plan};
use deploy_core::plan::release::check_release;
use deploy_core::port::{ArgoCd, Clock, SystemClock};
use deploy_core::rollout::event::Event;
use deploy_core::rollout::lock;
use deploy_core::trail::Actor;
use deploy_engine::engine::{Engine, Ports, RunOptions};
use deploy_engine::memory::{Timing, World};
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
    let pace = if pace.is_finite() && pace > 0.0 {
        pace
    } else {
        1.0
    };
    let scaled = |ms: u64| Duration::from_millis((ms as f64 * pace) as u64);
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
    let world = World::seeded(&config, clock.clone(), &first);
    world.argocd.set_timing(Timing {
        sync: scaled(600),
        health: scaled(700),
    });
    world.registry.set_replication_delay(scaled(2500));
    let backends = Backends::in_memory(&world);
    let say = |s: &str| out.text(s);
    let staging = config
        .environment("staging")
        .map_err(anyhow::Error::msg)?
        .clone();
    let prod = config
        .environment("prod")
        .map_err(anyhow::Error::msg)?
        .clone();
    // Prod's 5xx-ratio check measures each cluster's simulated traffic, which follows the
    // release the cluster runs: a low error ratio, until a release breaks one cluster.
    for (cluster, ratio) in BASELINE {
        world
            .simulate_check(&config, &prod, CHECK, cluster, vec![ratio], BTreeMap::new())
            .map_err(anyhow::Error::msg)?;
    }

    say(
        "deploy demo: one application (myapp) of 3 services (api, worker, and the sentinel logserver)",
    );
    say(
        "on 3 EKS clusters (us-west-2, us-east-1, eu-west-1), one Argo CD, environments debug, staging and prod.",
    );
    say(&format!(
        "Everything runs {first}. Time is compressed: a sync takes ~1s, soak 1.5s (prod's {CHECK} check measured every 0.5s), replication ~2.5s.\n"
    ));

    for (round, sha, broken) in [
        (1, "7f3a9c1e2b4d5a6f7788", None),
        (2, "9b8c7d6e5f4a3b2c1d0e", Some("eu-west-1")),
    ] {
        say(&format!(
            "── Release {round} ──────────────────────────────────────────────────────────"
        ));
        let tag = build_tag(&staging, sha, Some("staging")).map_err(anyhow::Error::msg)?;
        say(&format!(
            "1. CI builds commit {sha} on branch staging: `deploy build plan` gives tag {tag} and the push order,"
        ));
        say(
            "   the sentinel last, so that an image updater watching logserver only ever sees finished pushes.",
        );
        let pushes = push_order(&config, &staging, &tag);
        let release = world.ci_push(&config, &staging, &tag);
        for p in &pushes.pushes {
            say(&format!(
                "   pushed {}  {}",
                p.image,
                release
                    .digests
                    .get(&p.service)
                    .map(|d| d.short())
                    .unwrap_or("")
            ));
        }

        say(
            "\n2. `deploy watch --env staging` polls the sentinel, sees the new tag and checks the whole release:",
        );
        let check = check_release(&*backends.registry, &config, &staging, &tag).await?;
        print_check(out, &config, &check);
        let mut watcher = Watcher::new(&config, &staging, &*backends.registry, &*backends.argocd);
        let poll = watcher.poll().await?;
        if poll.written.len() != config.clusters.len() {
            anyhow::bail!("the demo's watcher wrote {:?}", poll.written);
        }
        say(&format!(
            "   complete, so it writes the tag into the {} staging Applications, once; their sync is automated, so Argo CD deploys.",
            poll.written.len()
        ));
        wait_until(&world, &config, &staging, &tag).await;
        say("   staging runs the release on all 3 clusters, Synced and Healthy.\n");

        say(
            "3. ECR replication copies the staging images into the prod registry (account 222222222222) in 3 regions.",
        );
        let in_flight = check_release(&*backends.registry, &config, &prod, &tag).await?;
        say(&format!(
            "   right after the push, {} of 9 prod images are still missing; prod must wait.",
            in_flight.missing.len()
        ));
        tokio::time::sleep(scaled(1600)).await;
        let landed = check_release(&*backends.registry, &config, &prod, &tag).await?;
        print_check(out, &config, &landed);

        say(
            "\n4. `deploy plan --env prod`: the release live in staging, and four gates; then the waves.",
        );
        let obs = observe(
            &config,
            &prod,
            Intent::Promote { tag: None },
            None,
            &*backends.registry,
            &*backends.argocd,
            &*backends.inventory,
        )
        .await?;
        let p = plan(&config, &prod, &obs);
        print_plan(out, &p);

        if let Some(cluster) = broken {
            world
                .simulate_release(&config, &prod, CHECK, cluster, &tag, vec![BAD_RATIO])
                .map_err(anyhow::Error::msg)?;
            say(&format!(
                "\n   (this time {tag} has a bug that only {cluster}'s traffic reaches: its pods start and stay Healthy,"
            ));
            say(&format!(
                "   but {:.0}% of the requests there fail while it runs {tag}; Argo CD health alone would let it through)",
                BAD_RATIO * 100.0
            ));
        }
        say(
            "\n5. `deploy promote --env prod --yes`: wave by wave; each wave waits for our sync to finish, Synced,",
        );
        say(&format!(
            "   Healthy and running the release's images, then soaks while watching health and measuring {CHECK} per cluster."
        ));
        let actor = Actor {
            os_user: "demo".into(),
            argocd_user: Some("ci-bot".into()),
        };
        let opts = RunOptions::new(
            format!("demo-{round}"),
            "demo",
            lock::key(&config.app, "prod"),
        )
        .by(actor)
        .with_grace(Duration::ZERO);
        let ports = Ports::of_world(&world);
        // The demo renders in the engine's callback: in memory, printing is all that blocks.
        let report = Engine::new(ports, opts)
            .run(&p, |e| {
                out.record("event", &e);
                if matches!(e, Event::Gate(_) | Event::LockAcquired { .. }) {
                    return;
                }
                if let Some(line) = crate::progress::describe(&e) {
                    say(&format!("   {line}"));
                }
            })
            .await;
        let report = report?;
        print_summary(out, &report);

        say("\n6. `deploy status`: which release runs where.");
        super::status::run(
            &config,
            &backends,
            Output {
                format: out.format,
                quiet: true,
            },
            None,
        )
        .await?;
        let _ = release;
        say("");
    }
    let records = world.audit.state();
    if let Some(last) = records.last() {
        say(&format!(
            "The audit trail holds {} records (who, which release with digests, which clusters, when, outcome); the last, by {}: {}.",
            records.len(),
            last.actor,
            last.message
        ));
    }
    say(&format!(
        "Demo finished in {:.1}s. Try it on your own config: deploy --sandbox --config examples/deploy.toml status",
        started.elapsed().as_secs_f64()
    ));
    out.result(
        &serde_json::json!({ "seconds": started.elapsed().as_secs_f64(), "audit": records }),
    );
    Ok(Exit::Success)
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
