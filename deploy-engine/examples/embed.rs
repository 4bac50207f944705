//! Embed the promotion engine in your own tool, with your own rendering of its events: seed
//! the in-memory world from the example configuration, push a release through staging, plan
//! prod, and run the promotion, printing one line per event your way. Swap the in-memory
//! backends for deploy-aws's and deploy-argocd's to run it for real.
//! Run `cargo run -p deploy-core --example embed`.

// An example is a program: it prints its result.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use deploy_core::config::{Config, EXAMPLE};
use deploy_core::lock;
use deploy_core::model::Tag;
use deploy_core::plan::promotion::{Intent, plan};
use deploy_core::rollout::event::{Event, RunReport};
use deploy_engine::clock::TokioClock;
use deploy_engine::engine::{Engine, Ports, RunOptions};
use deploy_engine::memory::World;
use deploy_engine::observe::promotion::observe;

/// Your rendering: here, terse lines with the paused clock's seconds.
fn render(start: tokio::time::Instant, event: &Event) -> Option<String> {
    let t = start.elapsed().as_secs();
    Some(match event {
        Event::WaveStarted { wave, clusters } => {
            format!("[{t:>4}s] wave {wave}: {}", clusters.join(" "))
        }
        Event::AppSyncing { cluster, to, .. } => format!("[{t:>4}s]   {cluster} → {to}"),
        Event::AppHealthy { cluster, .. } => format!("[{t:>4}s]   {cluster} healthy"),
        Event::SoakFinished { wave } => format!("[{t:>4}s] wave {wave} soaked"),
        Event::Finished { outcome, message } => format!("[{t:>4}s] {outcome}: {message}"),
        _ => return None,
    })
}

async fn promote() -> (RunReport, Vec<String>) {
    let config = Config::parse("deploy.toml", EXAMPLE).expect("the example configuration");
    let clock = Arc::new(TokioClock::new(
        jiff::Timestamp::from_second(1_790_000_000).unwrap(),
    ));
    let (v1, v2) = (
        Tag::new("1111111aaaaa").unwrap(),
        Tag::new("2222222bbbbb").unwrap(),
    );
    let world = World::seeded(&config, clock, &v1);
    world.ci_push(&config, config.environment("staging").unwrap(), &v2);
    tokio::time::sleep(Duration::from_secs(60)).await; // replication to the prod regions

    let prod = config.environment("prod").unwrap();
    let intent = Intent::Promote { tag: Some(v2) };
    let seen = observe(
        &config,
        prod,
        intent,
        None,
        &world.registry,
        &world.argocd,
        &world.argocd,
    )
    .await
    .expect("observed");
    let promotion = plan(&config, prod, &seen);
    let ports = Ports::of_world(&world);
    let opts = RunOptions::new(
        "embedded",
        "my-release-bot",
        lock::key(&config.app, &prod.name),
    );
    let start = tokio::time::Instant::now();
    let mut lines = Vec::new();
    let report = Engine::new(ports, opts)
        .run(&promotion, |e| lines.extend(render(start, &e)))
        .await
        .expect("the gates pass and the lock is free");
    (report, lines)
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let (report, lines) = promote().await;
    for l in lines {
        println!("{l}");
    }
    println!("{} application(s) reported", report.apps.len());
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn the_embedded_promotion_succeeds_wave_by_wave() {
        let (report, lines) = super::promote().await;
        assert_eq!(
            report.outcome,
            deploy_core::trail::Outcome::Succeeded,
            "{}",
            report.message
        );
        assert!(
            lines
                .first()
                .is_some_and(|l| l.contains("wave 1: us-west-2")),
            "{lines:#?}"
        );
        assert!(
            lines.last().is_some_and(|l| l.contains("succeeded")),
            "{lines:#?}"
        );
    }
}
