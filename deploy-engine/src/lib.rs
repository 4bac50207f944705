//! The runtime of `deploy`, on tokio: the promotion [`engine`], the release [`watch`]er, the
//! [`observe`] helpers that take time, the clock of tests and demos ([`clock`]), and
//! [`memory`], full in-memory backends of every port of `deploy_core::port` (for tests, demos
//! and your own tools). With the `conformance` feature, `conformance` holds the ports'
//! contracts as checks that every backend's tests run.
//!
//! `deploy-core` decides (pure planners and rules); this crate runs those decisions against
//! the ports; `deploy-aws` and `deploy-argocd` implement the ports for real.
//!
//! A whole promotion of a release to production, on the in-memory world, on tokio's paused
//! clock (so its waves, syncs and soaks take no real time):
//!
//! ```
//! use std::sync::Arc;
//!
//! use deploy_core::config::{Config, EXAMPLE};
//! use deploy_engine::clock::TokioClock;
//! use deploy_engine::engine::{Engine, Ports, RunOptions};
//! use deploy_core::lock;
//! use deploy_core::rollout::event::Event;
//! use deploy_engine::memory::World;
//! use deploy_core::model::Tag;
//! use deploy_core::plan::promotion::{Intent, plan};
//! use deploy_engine::observe::promotion::observe;
//! use deploy_core::trail::Outcome;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let config = Config::parse("deploy.toml", EXAMPLE).unwrap();
//! let clock = Arc::new(TokioClock::new(jiff::Timestamp::from_second(1_790_000_000).unwrap()));
//! let v1 = Tag::new("1111111aaaaa").unwrap();
//! let v2 = Tag::new("2222222bbbbb").unwrap();
//! let world = World::seeded(&config, clock, &v1); // every cluster runs v1
//!
//! // CI pushes v2 to staging; ECR replication copies it to the prod regions.
//! world.ci_push(&config, config.environment("staging").unwrap(), &v2);
//! tokio::time::sleep(std::time::Duration::from_secs(60)).await;
//!
//! // Observe (read only), then plan (pure): four gates and the waves.
//! let prod = config.environment("prod").unwrap();
//! let intent = Intent::Promote { tag: Some(v2.clone()) };
//! let seen = observe(&config, prod, intent, None, &world.registry, &world.argocd, &world.argocd)
//!     .await
//!     .unwrap();
//! let promotion = plan(&config, prod, &seen);
//! assert!(promotion.is_go(), "{:#?}", promotion.gates);
//!
//! // Run it: wave by wave, each cluster synced by us, observed Healthy through its soak
//! // and its checks measured.
//! // The world's ports, its metrics included (the 5xx-ratio check of the example's prod).
//! let ports = Ports::of_world(&world);
//! let opts = RunOptions::new("example", "example", lock::key(&config.app, "prod"));
//! let mut healthy = Vec::new();
//! let report = Engine::new(ports, opts)
//!     .run(&promotion, |event| {
//!         if let Event::AppHealthy { cluster, .. } = event {
//!             healthy.push(cluster);
//!         }
//!     })
//!     .await
//!     .unwrap();
//! assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
//! assert_eq!(healthy, ["us-west-2", "us-east-1", "eu-west-1"]);
//! # }
//! ```

#![warn(unreachable_pub)]

pub mod clock;
pub mod engine;
pub mod memory;
pub mod observe;
pub mod unlock;
pub mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;
