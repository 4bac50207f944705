//! The pure domain of `deploy`: releases, configuration, the port traits, the planners and the
//! engine's rules. No async runtime, no I/O.
//!
//! This crate decides; the adapters act, and `deploy-engine` runs. It reads the world through
//! the ports of [`port`] (a registry, Argo CD, a lock, an audit trail, a clock), plans with pure
//! functions ([`plan`]), and holds the rules a run follows ([`rollout`]: how an observation is
//! judged, how a soak counts, who holds the lock, how a run ends). `deploy-engine` runs a plan
//! over the ports and has in-memory backends of every port; `deploy-aws` and `deploy-argocd`
//! have the real ones.
//!
//! The layers, each importing only from those before it (`xtask/src/tidy/layers.rs` keeps
//! them): `error`, `model` → `config` → `hcl`, `window`, `check`, `trail` → `port` → the rules
//! of the lock (`lock`) and of image overrides (`image_override`) → `plan` → `rollout` →
//! `notify`. No module does I/O, and nothing here needs an async runtime: the async port
//! traits are called by `deploy-engine`.
//!
//! The configuration and the rules, with no runtime at all:
//!
//! ```
//! use deploy_core::config::{Config, EXAMPLE};
//! use deploy_core::lock;
//!
//! let config = Config::parse("deploy.toml", EXAMPLE).unwrap();
//! let prod = config.environment("prod").unwrap();
//! // Production is synced by us, wave by wave: one region first, then the other two.
//! assert_eq!(prod.waves, [vec!["us-west-2"], vec!["us-east-1", "eu-west-1"]]);
//! // One lock per environment, the same on every machine; where the lock is an annotation,
//! // it lives on the first of the environment's Applications by name.
//! assert_eq!(lock::key(&config.app, &prod.name), "deploy-myapp-prod");
//! assert_eq!(lock::carrier(&config, prod).as_deref(), Some("myapp-prod-eu-west-1"));
//! ```
//!
//! A whole promotion on the in-memory world is the example of `deploy-engine`'s documentation.

#![warn(unreachable_pub)]

pub mod check;
pub mod config;
pub mod error;
pub mod hcl;
pub mod image_override;
pub mod lock;
pub mod model;
pub mod notify;
pub mod plan;
pub mod port;
pub mod rollout;
pub mod sim;
pub mod trail;
pub mod window;

pub use error::{Error, Result};
