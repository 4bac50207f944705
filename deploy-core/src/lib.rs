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
//! The layers, each importing only from those before it (a tidy test keeps them):
//! `error`, `model` → `config` → `hcl`, `window`, `trail` → `port` → `unlock`, `check`,
//! `image_override` → `plan` → `rollout` → `notify`.

#![warn(unreachable_pub)]

pub mod check;
pub mod config;
pub mod error;
pub mod hcl;
pub mod image_override;
pub mod model;
pub mod notify;
pub mod plan;
pub mod port;
pub mod rollout;
pub mod trail;
pub mod unlock;
pub mod window;

pub use error::{Error, Result};
