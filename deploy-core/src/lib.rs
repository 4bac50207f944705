//! The pure domain of `deploy`: releases, configuration, planners, ports, in-memory
//! backends and the promotion engine.
//!
//! This crate decides; the adapters act. It performs no network or file I/O.

pub mod config;
pub mod engine;
pub mod error;
pub mod hcl;
pub mod image_override;
pub mod memory;
pub mod model;
pub mod notify;
pub mod plan;
pub mod port;
pub mod trail;
pub mod watch;
pub mod window;

pub use error::{Error, Result};

#[cfg(feature = "conformance")]
pub mod conformance;
