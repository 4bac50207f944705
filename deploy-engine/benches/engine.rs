//! Engine benchmark: a whole prod promotion over the in-memory backends on tokio's paused
//! clock, for 3, 30 and 100 clusters in waves, with a sync duration (1–3 s) and a health
//! delay (0.5–1.5 s) that differ per cluster.
//!
//! Simulated time is deterministic on the paused clock, so each size is run once to
//! compare the simulated duration of the run with the ideal: the sum over waves of the
//! slowest sync + health of the wave. Criterion then measures the real (wall) time of a run.
//!
//! Run: `cargo bench -p deploy-core --bench engine`.

#![allow(clippy::print_stderr)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use deploy_core::config::Config;
use deploy_core::plan::promotion::{self, Intent, PromotionPlan};
use deploy_core::trail::{Actor, Outcome};
use deploy_engine::engine::{Engine, Ports, RunOptions};
use deploy_engine::memory::World;
use deploy_engine::memory::world::{generated_timing, generated_wave_size};
use tokio::sync::mpsc;

use common::{config_text, paused_runtime, world_with_staging_at_t2};

/// Services per release: the engine's work grows with clusters, not services.
const SERVICES: usize = 3;

/// One size of the benchmark.
struct Case {
    config: Config,
}

impl Case {
    fn new(n: usize) -> Self {
        let text = config_text(n, SERVICES, generated_wave_size(n), "0s");
        let config = Config::parse("deploy.toml", &text).expect("the generated config is valid");
        Self { config }
    }

    /// Sum over waves of the slowest sync + health in the wave.
    fn ideal(&self) -> Duration {
        let prod = self.config.environment("prod").expect("prod");
        prod.waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .map(|c| {
                        let i = self
                            .config
                            .clusters
                            .iter()
                            .position(|k| &k.name == c)
                            .expect("a configured cluster");
                        let t = generated_timing(i);
                        t.sync + t.health
                    })
                    .max()
                    .unwrap_or_default()
            })
            .sum()
    }

    /// A world with T2 live in staging, prod's Applications timed per cluster, and the
    /// prod plan (every gate passed). Runs inside the paused runtime.
    async fn prepare(&self) -> (World, PromotionPlan) {
        let world = world_with_staging_at_t2(&self.config).await;
        let prod = self.config.environment("prod").expect("prod");
        for (i, c) in self.config.clusters.iter().enumerate() {
            world
                .argocd
                .set_app_timing(&self.config.application_name(prod, c), generated_timing(i));
        }
        let obs = world
            .observe(&self.config, prod, Intent::Promote { tag: None })
            .await
            .expect("observe");
        let plan = promotion::plan(&self.config, prod, &obs);
        assert!(plan.is_go(), "{:#?}", plan.failed_gate());
        assert_eq!(plan.changes(), self.config.clusters.len());
        (world, plan)
    }

    /// One promotion on a fresh paused runtime: (simulated duration, wall duration) of
    /// `Engine::run` alone, setup excluded.
    fn run_once(&self) -> (Duration, Duration) {
        let rt = paused_runtime();
        rt.block_on(async {
            let (world, plan) = self.prepare().await;
            let (tx, rx) = mpsc::unbounded_channel();
            let ports = Ports::of_world(&world);
            let opts = RunOptions::new("bench", "bench", "bench-prod")
                .by(Actor {
                    os_user: "bench".into(),
                    argocd_user: None,
                })
                .with_grace(Duration::from_secs(60));
            let simulated = tokio::time::Instant::now();
            let wall = std::time::Instant::now();
            let report = Engine::new(ports, opts)
                .run(&plan, |e| {
                    let _ = tx.send(e);
                })
                .await
                .expect("ran");
            let (wall, simulated) = (wall.elapsed(), simulated.elapsed());
            assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
            drop(black_box(rx));
            (simulated, wall)
        })
    }
}

fn engine(c: &mut Criterion) {
    let cases: Vec<(usize, Case)> = [3, 30, 100]
        .into_iter()
        .map(|n| (n, Case::new(n)))
        .collect();

    eprintln!("\nengine: simulated time of a whole promotion on the paused clock");
    eprintln!("| clusters | waves | ideal (s) | simulated (s) | ratio | wall, first run |");
    eprintln!("|---:|---:|---:|---:|---:|---:|");
    for (n, case) in &cases {
        let ideal = case.ideal();
        let (simulated, wall) = case.run_once();
        let waves = case.config.environment("prod").expect("prod").waves.len();
        eprintln!(
            "| {n} | {waves} × {} | {:.3} | {:.3} | {:.4} | {:.1?} |",
            generated_wave_size(*n),
            ideal.as_secs_f64(),
            simulated.as_secs_f64(),
            simulated.as_secs_f64() / ideal.as_secs_f64(),
            wall
        );
    }
    eprintln!();

    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    for (n, case) in &cases {
        g.bench_with_input(BenchmarkId::new("promote_clusters", n), n, |b, _| {
            b.iter_custom(|iters| (0..iters).map(|_| case.run_once().1).sum())
        });
    }
    g.finish();
}

fn main() {
    let mut c = common::criterion();
    engine(&mut c);
    c.final_summary();
}
