//! End-to-end bench: a whole prod promotion by the real engine over [`RestArgoCd`] against
//! the fake Argo CD on wiremock (real HTTP on loopback, the wall clock), for 3, 30 and 100
//! clusters, with a delay on every answer and per-Application sync and health durations.
//!
//! Compared with the ideal (the sum over waves of the slowest sync + health of the wave) and
//! counted in HTTP requests per Application. The registry, lock and audit trail are the
//! in-memory ones of deploy-core: what is measured is the engine and the Argo CD client.
//!
//! Run: `cargo bench -p deploy-argocd --bench e2e` (about 65 s after the build;
//! `E2E_RUNS=2` repeats each size, `E2E_SIZES=3,30` picks sizes, `E2E_DELAY_MS=50` sets the
//! delay per answer, 5 ms by default).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_argocd::fake::{FakeArgo, client_with};
use deploy_argocd::rest::{RestArgoCd, RestOptions};
use deploy_core::config::Config;
use deploy_core::model::Tag;
use deploy_core::plan::promotion::{self, Intent, PromotionPlan};
use deploy_core::port::SystemClock;
use deploy_core::rollout::event::Event;
use deploy_core::trail::{Actor, Outcome};
use deploy_engine::conformance::argocd::ArgoCdFixture;
use deploy_engine::engine::{Engine, Ports, RunOptions};
use deploy_engine::memory::World;
use deploy_engine::memory::world::{
    app_seed, generated_config, generated_timing, generated_wave_size,
};
use tokio::sync::mpsc;

/// The release every environment runs at the start.
const T1: &str = "1111111aaaaa";
/// The release CI pushes to staging and the bench promotes to prod.
const T2: &str = "2222222bbbbb";
fn tag(s: &str) -> Tag {
    Tag::new(s).expect("a valid tag")
}

/// Services per release: the engine's work grows with clusters, not services.
const SERVICES: usize = 3;
/// Added by the fake to every answer by default: network and API server time.
const REQUEST_DELAY_MS: u64 = 5;

/// The client's options: the test timings of [`RestOptions::fast`] (5 ms reconnect, 20 ms
/// GET fallback) with a 10 s request timeout and first-event wait, since the fake holds a
/// watch stream's response head until the change is due (up to [`STREAM_HOLD`]).
fn options() -> RestOptions {
    RestOptions::fast()
        .with_timeout(Duration::from_secs(10))
        .with_first_event(Duration::from_secs(10))
}

/// Longest the fake holds a watch stream without a change: above the longest sync (3 s), so
/// each change costs one stream request.
const STREAM_HOLD: Duration = Duration::from_secs(5);

/// What one run measured.
struct Measure {
    wall: Duration,
    /// Requests the fake received during `Engine::run`, by kind.
    requests: BTreeMap<&'static str, usize>,
    /// Per wave: (measured, ideal, first sync accepted after the wave start, slowest
    /// Healthy seen after its due time).
    waves: Vec<(Duration, Duration, Duration, Duration)>,
    /// From the last Healthy to the end of the run (annotations, audit, lock).
    tail: Duration,
}

/// One size.
struct Case {
    n: usize,
    config: Config,
    /// Added by the fake to every answer.
    delay: Duration,
}

impl Case {
    fn new(n: usize, delay: Duration) -> Self {
        let text = generated_config(n, SERVICES, generated_wave_size(n), "0s");
        let config = Config::parse("deploy.toml", &text).expect("the generated config is valid");
        Self { n, config, delay }
    }

    fn index(&self, cluster: &str) -> usize {
        self.config
            .clusters
            .iter()
            .position(|c| c.name == cluster)
            .expect("a configured cluster")
    }

    /// Per wave, the slowest sync + health.
    fn ideal_waves(&self) -> Vec<Duration> {
        let prod = self.config.environment("prod").expect("prod");
        prod.waves
            .iter()
            .map(|w| {
                w.iter()
                    .map(|c| {
                        let t = generated_timing(self.index(c));
                        t.sync + t.health
                    })
                    .max()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The fake with staging at T2 (automated) and prod at T1 (manual, timed), the
    /// in-memory registry with T2 replicated to prod, and the prod plan.
    async fn prepare(&self) -> (FakeArgo, RestArgoCd, World, PromotionPlan) {
        let world = World::seeded(&self.config, Arc::new(SystemClock), &tag(T1));
        world.registry.set_replication_delay(Duration::ZERO);
        let staging = self.config.environment("staging").expect("staging");
        let prod = self.config.environment("prod").expect("prod");
        world.ci_push(&self.config, staging, &tag(T2));

        let fake = FakeArgo::start().await;
        for i in 0..self.n {
            fake.create_application(&app_seed(
                &self.config,
                staging,
                &self.config.clusters[i],
                "image.tag",
                &tag(T2),
            ))
            .await;
            let app = app_seed(
                &self.config,
                prod,
                &self.config.clusters[i],
                "image.tag",
                &tag(T1),
            );
            fake.create_application(&app).await;
            fake.set_timing(&app.name, generated_timing(i));
        }
        fake.set_stream_hold(STREAM_HOLD);
        fake.set_request_delay(self.delay);
        let argocd = client_with(&fake.server, options());
        let obs = deploy_engine::observe::promotion::observe(
            &self.config,
            prod,
            Intent::Promote { tag: None },
            None,
            &world.registry,
            &argocd,
            &argocd,
        )
        .await
        .expect("observe");
        let plan = promotion::plan(&self.config, prod, &obs);
        assert!(plan.is_go(), "{:#?}", plan.failed_gate());
        assert_eq!(plan.changes(), self.n);
        (fake, argocd, world, plan)
    }

    async fn run_once(&self) -> Measure {
        let (fake, argocd, world, plan) = self.prepare().await;
        let before = received(&fake).await.len();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Events timestamped as they come.
        let events = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(e) = rx.recv().await {
                out.push((Instant::now(), e));
            }
            out
        });
        let clock = SystemClock;
        let ports = Ports::of_world(&world)
            .with_argocd(&argocd)
            .with_clock(&clock);
        let opts = RunOptions::new("bench", "bench", "bench-prod")
            .by(Actor {
                os_user: "bench".into(),
                argocd_user: None,
            })
            .with_grace(Duration::from_secs(60));
        let start = Instant::now();
        let report = Engine::new(ports, opts)
            .run(&plan, move |e| {
                let _ = tx.send(e);
            })
            .await
            .expect("the run starts");
        let end = Instant::now();
        assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
        let events = events.await.expect("the event task");

        let mut requests: BTreeMap<&'static str, usize> = BTreeMap::new();
        for r in &received(&fake).await[before..] {
            *requests.entry(kind(r)).or_default() += 1;
        }

        let ideal = self.ideal_waves();
        let mut waves = Vec::new();
        let mut wave_start = start;
        let mut first_sync: Option<Instant> = None;
        let mut synced: BTreeMap<String, Instant> = BTreeMap::new();
        let mut last_healthy = start;
        let mut late = Duration::ZERO;
        let close = |waves: &mut Vec<_>,
                     wave_start: Instant,
                     at: Instant,
                     first: Option<Instant>,
                     late: Duration| {
            let w = waves.len();
            waves.push((
                at - wave_start,
                ideal[w],
                first.map_or(Duration::ZERO, |f| f - wave_start),
                late,
            ));
        };
        for (at, e) in &events {
            match e {
                Event::WaveStarted { wave, .. } => {
                    if *wave > 1 {
                        close(&mut waves, wave_start, last_healthy, first_sync, late);
                    }
                    wave_start = *at;
                    first_sync = None;
                    late = Duration::ZERO;
                }
                Event::AppSyncing { cluster, .. } => {
                    first_sync.get_or_insert(*at);
                    synced.insert(cluster.clone(), *at);
                }
                Event::AppHealthy { cluster, .. } => {
                    last_healthy = *at;
                    // The sync began at the fake about one request delay before its answer.
                    let t = generated_timing(self.index(cluster));
                    let due = synced[cluster] - self.delay + t.sync + t.health;
                    late = late.max(at.saturating_duration_since(due));
                }
                _ => {}
            }
        }
        close(&mut waves, wave_start, last_healthy, first_sync, late);
        Measure {
            wall: end - start,
            requests,
            waves,
            tail: end - last_healthy,
        }
    }
}

async fn received(fake: &FakeArgo) -> Vec<wiremock::Request> {
    fake.server
        .received_requests()
        .await
        .expect("request recording is on")
}

/// The kind of a request to the fake.
fn kind(r: &wiremock::Request) -> &'static str {
    let path = r.url.path();
    match (r.method.as_str(), path) {
        ("GET", p) if p.starts_with("/api/v1/stream/") => "watch stream",
        ("GET", "/api/v1/applications") => "list",
        ("GET", p) if p.starts_with("/api/v1/applications/") => "GET app",
        ("PATCH", _) => "PATCH app",
        ("POST", p) if p.ends_with("/sync") => "POST sync",
        ("DELETE", _) => "DELETE operation",
        _ => "other",
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    let runs: usize = std::env::var("E2E_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let sizes: Vec<usize> = std::env::var("E2E_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            // `cargo test --all-targets` runs benches without `--bench`: a smoke run only.
            if std::env::args().any(|a| a == "--bench") {
                vec![3, 30, 100]
            } else {
                vec![3]
            }
        });
    let delay = Duration::from_millis(
        std::env::var("E2E_DELAY_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(REQUEST_DELAY_MS),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    eprintln!(
        "e2e: engine + RestArgoCd against the wiremock fake, {} ms per answer, sync 1–3 s, health 0.5–1.5 s",
        delay.as_millis()
    );
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for &n in &sizes {
        let case = Case::new(n, delay);
        let ideal: Duration = case.ideal_waves().iter().sum();
        let waves = case.ideal_waves().len();
        for run in 1..=runs {
            let m = rt.block_on(case.run_once());
            let total: usize = m.requests.values().sum();
            rows.push(format!(
                "| {n} | {waves} × {} | {:.3} | {:.3} | **{:.4}** | {:.2} |",
                generated_wave_size(n),
                secs(ideal),
                secs(m.wall),
                secs(m.wall) / secs(ideal),
                total as f64 / n as f64,
            ));
            let per_app: Vec<String> = m
                .requests
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", *v as f64 / n as f64))
                .collect();
            let excess: Vec<String> = m
                .waves
                .iter()
                .map(|(measured, ideal, _, _)| {
                    format!("{:.0}", (secs(*measured) - secs(*ideal)) * 1000.0)
                })
                .collect();
            let to_sync: Vec<String> = m
                .waves
                .iter()
                .map(|w| format!("{:.0}", secs(w.2) * 1000.0))
                .collect();
            let late: Vec<String> = m
                .waves
                .iter()
                .map(|w| format!("{:.0}", secs(w.3) * 1000.0))
                .collect();
            details.push(format!(
                "N={n} run {run}: per app: {}\n  per wave, ms over ideal: [{}]\n  \
                 per wave, ms from wave start to first sync accepted: [{}]\n  \
                 per wave, ms the last Healthy was seen after it was due (max over apps): [{}]\n  \
                 tail after the last Healthy (annotations, audit, lock): {:.0} ms",
                per_app.join(", "),
                excess.join(", "),
                to_sync.join(", "),
                late.join(", "),
                secs(m.tail) * 1000.0,
            ));
            eprintln!("{}", rows.last().expect("a row"));
        }
    }
    println!();
    println!(
        "| clusters | waves | ideal (s) | measured (s) | ratio (goal < 1.1) | requests / app |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    for d in &details {
        println!("{d}");
    }
}
