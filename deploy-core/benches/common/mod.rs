//! Shared by the benches: a generated `deploy.toml` of any size and a seeded world with a
//! release live in staging, ready to be promoted to prod.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use deploy_core::config::Config;
use deploy_core::memory::World;
use deploy_core::model::Tag;
use deploy_core::plan::live::{override_for, service_images};
use deploy_core::port::{ArgoCd as _, TokioClock};

/// The release every environment runs at the start.
pub const T1: &str = "1111111aaaaa";
/// The release CI pushes to staging and the benches promote to prod.
pub const T2: &str = "2222222bbbbb";

/// The regions clusters are spread over, round robin; prod's registry lists all three.
pub const REGIONS: [&str; 3] = ["us-west-2", "us-east-1", "eu-west-1"];

/// A valid tag.
pub fn tag(s: &str) -> Tag {
    Tag::new(s).expect("a valid tag")
}

/// The name of cluster `i`.
pub fn cluster_name(i: usize) -> String {
    format!("c{i:03}")
}

/// A `deploy.toml` with `clusters` clusters, `services` services (the first is the
/// sentinel), an automated staging environment in one region and a manual prod
/// environment in three regions, promoted from staging in waves of `wave_size` clusters.
pub fn config_text(clusters: usize, services: usize, wave_size: usize, soak: &str) -> String {
    let mut t = String::from("app = \"bench\"\n\n[argocd]\nserver = \"argocd.example.com\"\n\n");
    for i in 0..clusters {
        let _ = writeln!(
            t,
            "[[clusters]]\nname = \"{}\"\nregion = \"{}\"\n",
            cluster_name(i),
            REGIONS[i % REGIONS.len()]
        );
    }
    for j in 0..services {
        let _ = writeln!(
            t,
            "[[services]]\nname = \"svc{j:04}\"\nrepository = \"svc{j:04}\"{}\n",
            if j == 0 { "\nsentinel = true" } else { "" }
        );
    }
    let waves: Vec<String> = (0..clusters)
        .collect::<Vec<_>>()
        .chunks(wave_size.max(1))
        .map(|w| {
            let names: Vec<String> = w
                .iter()
                .map(|&i| format!("\"{}\"", cluster_name(i)))
                .collect();
            format!("[{}]", names.join(", "))
        })
        .collect();
    let regions: Vec<String> = REGIONS.iter().map(|r| format!("\"{r}\"")).collect();
    let _ = write!(
        t,
        r#"[environments.staging]
branch = "staging"
registry = {{ account = "111111111111", regions = ["us-west-2"], repository_prefix = "staging/" }}
sync = "automated"
application = "{{app}}-{{env}}-{{cluster}}"
application_set = "{{app}}-{{env}}"
image_override = {{ kind = "helm", parameter = "image.tag" }}
tags = {{ strategy = "newest", allow = "^[0-9a-f]{{7,40}}$" }}

[environments.prod]
registry = {{ account = "222222222222", regions = [{regions}], repository_prefix = "staging/", aws_profile = "prod" }}
sync = "manual"
application = "{{app}}-{{env}}-{{cluster}}"
application_set = "{{app}}-{{env}}"
image_override = {{ kind = "helm", parameter = "image.tag" }}
promote_from = "staging"
waves = [{waves}]
soak = "{soak}"
timeout = "15m"
"#,
        regions = regions.join(", "),
        waves = waves.join(", "),
    );
    t
}

/// A world seeded at [`T1`] on tokio's clock (call it inside the runtime that will drive
/// it), where CI then pushed [`T2`] to staging and staging synced it by itself.
pub async fn world_with_staging_at_t2(config: &Config) -> World {
    let clock = Arc::new(TokioClock::new(
        jiff::Timestamp::from_second(1_790_000_000).expect("a valid timestamp"),
    ));
    let world = World::seeded(config, clock, &tag(T1));
    let staging = config.environment("staging").expect("staging");
    world.ci_push(config, staging, &tag(T2));
    for c in &config.clusters {
        let names: Vec<String> = service_images(config, staging, c)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        world
            .argocd
            .set_override(
                &config.application_name(staging, c),
                &override_for(staging, &names, &tag(T2)),
            )
            .await
            .expect("the staging app exists");
    }
    // Staging is automated: Argo CD syncs by itself (2 s + 3 s by default).
    tokio::time::sleep(Duration::from_secs(30)).await;
    world
}

/// A current-thread runtime on tokio's paused clock: simulated time jumps ahead whenever
/// every task waits on a timer, so a run's simulated duration is deterministic.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime")
}
