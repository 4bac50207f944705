//! Bench of checks during a soak (issue 12, "Performance": a check costs one query per
//! cluster per interval): a prod promotion of 100 clusters in one wave, with a 60 s soak and
//! 3 Prometheus checks per cluster measured every 10 s, run by the real engine
//! (`deploy_engine::engine::Engine`) through the real Prometheus adapter (`Sources`) against a
//! local HTTP server answering a fixed one-sample vector, on the wall clock.
//!
//! Argo CD, the registry, the lock and the audit trail are deploy-core's in-memory backends
//! (syncs and health take 10 ms each), so what the soak costs beyond the checks is the
//! engine's health watch of 100 Applications; a second case without checks measures that.
//!
//! Measured between the `soak_started` and `soak_finished` events: the soak's wall time, the
//! queries the server answered (counted in its responder), and the CPU time of the threads
//! that run the engine and the adapter (a tokio runtime whose threads are named
//! `deploy-soak`; `/proc/self/task/*/schedstat`, nanoseconds on the CPU), apart from the
//! server's (wiremock runs on threads of its own), and of the whole process
//! (`/proc/self/stat`, which also counts the server).
//!
//! Run: `cargo bench -p deploy-metrics --bench checks` (about 2.5 min after the build).
//! `CHECKS_SOAK=20s` and `CHECKS_INTERVAL=5s` change the soak and the interval. Without
//! `--bench` (`cargo test --all-targets`) it is a smoke run: a 2 s soak, checks every 1 s.

#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deploy_core::config::Config;
use deploy_core::model::Tag;
use deploy_core::plan::promotion::{self, Intent};
use deploy_core::rollout::event::Event;
use deploy_core::sim::Timing;
use deploy_core::trail::{Actor, Outcome};
use deploy_engine::clock::TokioClock;
use deploy_engine::engine::{Engine, Ports, RunOptions};
use deploy_engine::memory::World;
use deploy_engine::memory::world::generated_config;
use deploy_metrics::{SourceOptions, Sources};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CLUSTERS: usize = 100;
const SERVICES: usize = 3;
/// What every environment runs at the start, and the release promoted.
const T1: &str = "1111111aaaaa";
const T2: &str = "2222222bbbbb";
/// The name of the engine's and the adapter's threads.
const THREADS: &str = "deploy-soak";
/// The answer to every query: one series, a ratio that passes `result < 0.01`.
const ANSWER: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"cluster":"c"},"value":[1790000000.0,"0.001"]}]}}"#;

/// Three checks as a team would write them (each its own query, conditions and interval).
fn checks(url: &str, interval: &str) -> String {
    [
        (
            "5xx-ratio",
            r#"sum(rate(http_requests_total{cluster="{cluster}",code=~"5.."}[2m])) / sum(rate(http_requests_total{cluster="{cluster}"}[2m]))"#,
            "result < 0.01",
            "result >= 0.05",
        ),
        (
            "latency-p99",
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{cluster="{cluster}"}[2m])))"#,
            "result < 0.5",
            "result >= 1",
        ),
        (
            "restarts",
            r#"sum(increase(kube_pod_container_status_restarts_total{cluster="{cluster}",namespace="{app}"}[5m]))"#,
            "result < 1",
            "result >= 3",
        ),
    ]
    .iter()
    .map(|(name, query, success, failure)| {
        format!(
            "\n[[environments.prod.checks]]\nname = \"{name}\"\nprometheus = {{ url = \"{url}\" }}\n\
             query = '{query}'\nsuccess = \"{success}\"\nfailure = \"{failure}\"\ninterval = \"{interval}\"\n"
        )
    })
    .collect()
}

/// CPU time so far: (the `deploy-soak` threads, the whole process).
fn cpu() -> (Duration, Duration) {
    let mut threads = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("a task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != THREADS {
            continue;
        }
        // schedstat: nanoseconds on the CPU, nanoseconds waiting, timeslices.
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let ns: u64 = schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        threads += Duration::from_nanos(ns);
    }
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15,
    // in clock ticks (USER_HZ, 100 a second on Linux).
    let rest = &stat[stat.rfind(')').expect("(comm)") + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a number of ticks"))
        .collect();
    let process = Duration::from_millis((fields[0] + fields[1]) * 10);
    (threads, process)
}

/// When the soak began: the time, the queries answered so far, [`cpu`].
type Mark = (Instant, u64, (Duration, Duration));

/// What one soak cost.
#[derive(Debug, Default, Clone, Copy)]
struct Soak {
    wall: Duration,
    requests: u64,
    threads: Duration,
    process: Duration,
}

/// A promotion of [`CLUSTERS`] clusters in one wave with `with_checks` or none; returns what
/// its soak cost.
async fn promote(
    url: &str,
    answered: &AtomicU64,
    soak: &str,
    interval: &str,
    with_checks: bool,
) -> Soak {
    let mut text = generated_config(CLUSTERS, SERVICES, CLUSTERS, soak);
    if with_checks {
        text.push_str(&checks(url, interval));
    }
    let config = Config::parse("deploy.toml", &text).expect("the generated config is valid");
    let staging = config.environment("staging").expect("staging");
    let prod = config.environment("prod").expect("prod");
    let tag = |t: &str| Tag::new(t).expect("a valid tag");
    let clock = Arc::new(TokioClock::new(
        jiff::Timestamp::from_second(1_790_000_000).expect("a valid timestamp"),
    ));
    let world = World::seeded(&config, clock, &tag(T1));
    let quick = Timing {
        sync: Duration::from_millis(10),
        health: Duration::from_millis(10),
    };
    for c in &config.clusters {
        for env in [staging, prod] {
            world
                .argocd
                .set_app_timing(&config.application_name(env, c), quick);
        }
    }
    // CI pushed T2 to staging, which synced it by itself.
    world.ci_push(&config, staging, &tag(T2));
    world
        .write_release(&config, staging, &tag(T2))
        .await
        .expect("the staging apps exist");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let obs = world
        .observe(&config, prod, Intent::Promote { tag: None })
        .await
        .expect("observe");
    let plan = promotion::plan(&config, prod, &obs);
    assert!(plan.is_go(), "{:#?}", plan.failed_gate());
    assert_eq!(plan.changes(), CLUSTERS);
    assert_eq!(plan.waves.len(), 1, "one wave of every cluster");

    let sources = Sources::new(SourceOptions::default()).expect("sources");
    let ports = Ports::of_world(&world).with_metrics(Some(&sources));
    let opts = RunOptions::new("bench", "bench", "bench-prod")
        .by(Actor {
            os_user: "bench".into(),
            argocd_user: None,
        })
        .with_grace(Duration::from_secs(60));
    let started: Mutex<Option<Mark>> = Mutex::new(None);
    let finished: Mutex<Option<Soak>> = Mutex::new(None);
    let measured = AtomicU64::new(0);
    let report = Engine::new(ports, opts)
        .run(&plan, |e| match e {
            Event::SoakStarted { .. } => {
                *started.lock().expect("start") =
                    Some((Instant::now(), answered.load(Ordering::SeqCst), cpu()));
            }
            Event::CheckMeasured { .. } => {
                measured.fetch_add(1, Ordering::Relaxed);
            }
            Event::SoakFinished { .. } => {
                let (at, requests, (threads, process)) =
                    started.lock().expect("start").expect("the soak started");
                let (threads_now, process_now) = cpu();
                *finished.lock().expect("finish") = Some(Soak {
                    wall: at.elapsed(),
                    requests: answered.load(Ordering::SeqCst) - requests,
                    threads: threads_now - threads,
                    process: process_now - process,
                });
            }
            _ => {}
        })
        .await
        .expect("ran");
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let soak = finished.lock().expect("finish").expect("the soak finished");
    assert_eq!(
        soak.requests,
        measured.load(Ordering::Relaxed),
        "one query per measurement"
    );
    soak
}

fn duration(var: &str, default: &str) -> String {
    let text = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    humantime::parse_duration(&text).unwrap_or_else(|e| panic!("{var}={text}: {e}"));
    text
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs benches without `--bench`: a smoke run only (a 2 s
    // soak, a measurement a second), with the same assertions.
    let full = std::env::args().any(|a| a == "--bench");
    let (soak, interval) = if full {
        (
            duration("CHECKS_SOAK", "60s"),
            duration("CHECKS_INTERVAL", "10s"),
        )
    } else {
        ("2s".to_owned(), "1s".to_owned())
    };
    // The server first, from this thread: a thread inherits its creator's name, and the
    // server's (wiremock's own) must not count as deploy's.
    let server_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let answered = Arc::new(AtomicU64::new(0));
    let server = server_runtime.block_on(async {
        let server = MockServer::start().await;
        let counter = answered.clone();
        Mock::given(method("POST"))
            .and(path("/api/v1/query"))
            .respond_with(move |_: &Request| {
                counter.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/json")
                    .set_body_string(ANSWER)
            })
            .mount(&server)
            .await;
        server
    });
    let url = server.uri();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let rows = runtime.block_on(async {
        let (soak, interval) = (soak.clone(), interval.clone());
        // The engine runs on the named workers, not on this (main) thread.
        tokio::spawn(async move {
            let mut rows = Vec::new();
            for with_checks in [true, false] {
                let s = promote(&url, &answered, &soak, &interval, with_checks).await;
                rows.push((with_checks, s));
            }
            rows
        })
        .await
        .expect("the bench task")
    });
    drop(runtime);
    server_runtime.block_on(async move { drop(server) });
    eprintln!("\nchecks: {CLUSTERS} clusters in one wave, soak {soak}, checks every {interval}");
    eprintln!(
        "| checks per cluster | soak wall (s) | queries | queries per minute | CPU deploy threads (s) | per soak minute (s) | CPU process (s) | per soak minute (s) |"
    );
    eprintln!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (with_checks, s) in rows {
        let minutes = s.wall.as_secs_f64() / 60.0;
        eprintln!(
            "| {} | {:.1} | {} | {:.0} | {:.3} | {:.3} | {:.2} | {:.2} |",
            if with_checks { 3 } else { 0 },
            s.wall.as_secs_f64(),
            s.requests,
            s.requests as f64 / minutes,
            s.threads.as_secs_f64(),
            s.threads.as_secs_f64() / minutes,
            s.process.as_secs_f64(),
            s.process.as_secs_f64() / minutes,
        );
    }
}
