//! Planner benchmarks at scale: 1,000 services × 100 clusters, a staging environment in one
//! region and prod in three regions with waves of 10 clusters.
//!
//! The observed state comes from a seeded in-memory world (staging runs T2, prod runs T1),
//! read once through the ports; the benches then time the pure planners on it:
//! `Config::parse`, `release::judge`, `release::order_candidates`, `promotion::plan`,
//! `findings::findings`, and `live::live_tag` on one Application.
//!
//! Run: `cargo bench -p deploy-core --bench planners`.

#![allow(clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use deploy_core::config::{Config, TagPolicy, TagStrategy};
use deploy_core::model::digest_of;
use deploy_core::plan::live::{live_tag, service_images};
use deploy_core::plan::promotion::{Action, Intent};
use deploy_core::plan::{findings, promotion, release};
use deploy_core::port::{Application, ArgoCd as _, ImageDetail, ImageLookup, TaggedImage};
use deploy_engine::memory::build_digest;

use common::{T2, config_text, paused_runtime, tag, world_with_staging_at_t2};

const CLUSTERS: usize = 100;
const SERVICES: usize = 1_000;
const WAVE: usize = 10;
const TAGS: usize = 10_000;

fn parse(c: &mut Criterion, text: &str) {
    let mut g = c.benchmark_group("config");
    g.bench_function("parse/100x1000", |b| {
        b.iter(|| Config::parse("deploy.toml", black_box(text)).expect("valid"))
    });
    g.finish();
}

fn judge(c: &mut Criterion, config: &Config) {
    let prod = config.environment("prod").expect("prod");
    let t = tag(T2);
    let pushed_at = jiff::Timestamp::from_second(1_790_000_000).expect("valid");
    let mut lookups = BTreeMap::new();
    for s in &config.services {
        for r in &prod.registry.regions {
            lookups.insert(
                (s.name.clone(), r.clone()),
                ImageLookup::Found(ImageDetail {
                    digest: build_digest(&s.name, &t),
                    tags: vec![t.clone()],
                    pushed_at,
                }),
            );
        }
    }
    let complete = release::judge(prod, &config.services, &t, &lookups);
    assert!(complete.is_complete());
    // One image in ten missing in eu-west-1: the incomplete path builds the missing list.
    let mut partial = lookups.clone();
    for s in config.services.iter().step_by(10) {
        partial.insert(
            (s.name.clone(), "eu-west-1".into()),
            ImageLookup::ImageMissing,
        );
    }
    assert_eq!(
        release::judge(prod, &config.services, &t, &partial)
            .missing
            .len(),
        SERVICES / 10
    );

    let mut g = c.benchmark_group("release");
    g.bench_function("judge/1000x3/complete", |b| {
        b.iter(|| release::judge(prod, &config.services, &t, black_box(&lookups)))
    });
    g.bench_function("judge/1000x3/10pct_missing", |b| {
        b.iter(|| release::judge(prod, &config.services, &t, black_box(&partial)))
    });
    g.finish();
}

/// `TAGS` sentinel images: hex tags (commit hashes) pushed in a shuffled order with ties,
/// and semantic versions for the semver strategy.
fn candidates(c: &mut Criterion) {
    let base = 1_790_000_000_i64;
    let hex: Vec<TaggedImage> = (0..TAGS)
        .map(|i| {
            let digest = digest_of(&format!("image {i}"));
            let t = tag(&digest.as_str()["sha256:".len()..][..12]);
            // A permutation of 0..TAGS, halved: every push time is shared by two tags.
            let secs = ((i * 7919) % TAGS) / 2;
            TaggedImage {
                tag: t,
                digest,
                pushed_at: jiff::Timestamp::from_second(base + secs as i64).expect("valid"),
            }
        })
        .collect();
    let semver: Vec<TaggedImage> = hex
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let j = (i * 7919) % TAGS;
            TaggedImage {
                tag: tag(&format!("v{}.{}.{}", j / 1000, (j / 10) % 100, j % 10)),
                ..img.clone()
            }
        })
        .collect();
    let policy = |strategy, allow: Option<&str>| TagPolicy {
        strategy,
        allow: allow.map(|r| regex::Regex::new(r).expect("valid")),
        ignore: None,
    };
    let newest = policy(TagStrategy::Newest, Some("^[0-9a-f]{7,40}$"));
    let lexical = policy(TagStrategy::Lexical, None);
    let by_semver = policy(TagStrategy::Semver, None);
    assert_eq!(release::order_candidates(&hex, &newest).len(), TAGS);
    assert_eq!(release::order_candidates(&semver, &by_semver).len(), TAGS);

    let mut g = c.benchmark_group("order_candidates");
    g.bench_function("10000/newest_allow_regex", |b| {
        b.iter(|| release::order_candidates(black_box(&hex), &newest))
    });
    g.bench_function("10000/lexical", |b| {
        b.iter(|| release::order_candidates(black_box(&hex), &lexical))
    });
    g.bench_function("10000/semver", |b| {
        b.iter(|| release::order_candidates(black_box(&semver), &by_semver))
    });
    g.finish();
}

fn plan_and_findings(c: &mut Criterion, config: &Config) {
    let prod = config.environment("prod").expect("prod");
    let rt = paused_runtime();
    let started = Instant::now();
    let (obs, audit, app) = rt.block_on(async {
        let world = world_with_staging_at_t2(config).await;
        let seeded = started.elapsed();
        let t = Instant::now();
        let obs = world.observe(config, prod, Intent::Promote { tag: None })
        .await
        .expect("observe");
        let observed = t.elapsed();
        let t = Instant::now();
        let audit = deploy_engine::observe::findings::observe(config, prod, &world.registry, &world.argocd, &world.argocd)
            .await
            .expect("audit observe");
        eprintln!(
            "setup (in-memory backends, 1000 services x 100 clusters): world seeded and T2 live in staging {:.2?}, \
             promotion::observe {:.2?}, findings::observe {:.2?}",
            seeded,
            observed,
            t.elapsed()
        );
        let app = world
            .argocd
            .application(&config.application_name(prod, &config.clusters[0]))
            .await
            .expect("app");
        (obs, audit, app)
    });
    let p = promotion::plan(config, prod, &obs);
    assert!(p.is_go(), "{:#?}", p.failed_gate());
    assert_eq!(p.waves.len(), CLUSTERS / WAVE);
    assert_eq!(p.changes(), CLUSTERS);
    assert!(
        p.waves
            .iter()
            .flat_map(|w| &w.apps)
            .all(|a| matches!(a.action, Action::Deploy { sync: true, .. }))
    );
    let found = findings::findings(config, prod, &audit);
    assert!(found.is_empty(), "{found:#?}");

    let mut g = c.benchmark_group("promotion");
    g.sample_size(10);
    g.bench_function("plan/100_apps_x_1000_services", |b| {
        b.iter(|| promotion::plan(config, prod, black_box(&obs)))
    });
    g.finish();

    let mut g = c.benchmark_group("findings");
    g.bench_function("findings/100_apps_x_1000_services_x_3_regions", |b| {
        b.iter(|| findings::findings(config, prod, black_box(&audit)))
    });
    g.finish();

    live_tags(c, config, &app);
}

/// `live_tag` of one Application against its first `n` services: the plan calls it (and
/// `is_at`, which calls it again) once per Application, so its growth in the number of
/// services decides how the plan scales.
fn live_tags(c: &mut Criterion, config: &Config, app: &Application) {
    let prod = config.environment("prod").expect("prod");
    let all = service_images(config, prod, &config.clusters[0]);
    let mut g = c.benchmark_group("live_tag");
    for n in [100, 1_000] {
        let services = &all[..n];
        let mut app = app.clone();
        app.images.truncate(n);
        assert!(live_tag(&app, services).tag().is_some());
        g.bench_with_input(BenchmarkId::new("services", n), &n, |b, _| {
            b.iter(|| live_tag(black_box(&app), services))
        });
    }
    g.finish();
}

fn planners(c: &mut Criterion) {
    let text = config_text(CLUSTERS, SERVICES, WAVE, "0s");
    let config = Config::parse("deploy.toml", &text).expect("the generated config is valid");
    eprintln!(
        "config: {} clusters, {} services, {} bytes of TOML",
        config.clusters.len(),
        config.services.len(),
        text.len()
    );
    parse(c, &text);
    judge(c, &config);
    candidates(c);
    plan_and_findings(c, &config);
}

fn main() {
    let mut c = common::criterion();
    planners(&mut c);
    c.final_summary();
}
