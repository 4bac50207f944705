//! Shared by the benches: a generated `deploy.toml` of any size and a seeded world with a
//! release live in staging, ready to be promoted to prod.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::config::Config;
use deploy_core::model::Tag;
use deploy_engine::clock::TokioClock;
use deploy_engine::memory::World;
pub use deploy_engine::memory::world::generated_config as config_text;

/// The release every environment runs at the start.
pub const T1: &str = "1111111aaaaa";
/// The release CI pushes to staging and the benches promote to prod.
pub const T2: &str = "2222222bbbbb";

/// A valid tag.
pub fn tag(s: &str) -> Tag {
    Tag::new(s).expect("a valid tag")
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
    world
        .write_release(config, staging, &tag(T2))
        .await
        .expect("the staging apps exist");
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

/// Criterion as `criterion_group!` would set it up, with times short enough for a 2-core
/// machine; command-line flags (e.g. `--measurement-time`) still override them.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}
