//! AWS adapters of deploy-core: Amazon ECR for the registry port, S3 for the lock and
//! audit ports of a shared state store.
//!
//! [`EcrRegistry`] implements [`deploy_core::port::Registry`] with `aws-sdk-ecr`.
//! It serves every environment of a [`deploy_core::config::Config`]: the account of each
//! [`deploy_core::model::RepoLocation`] selects the `aws_profile` to reach it with, and
//! every call passes that account as the ECR `registryId`.
//!
//! Credentials and endpoints come from the standard AWS chain (environment, profiles,
//! SSO, web identity for CI OIDC, IRSA / container credentials, instance metadata),
//! including a profile's `endpoint_url`, `AWS_ENDPOINT_URL_ECR` and `AWS_ENDPOINT_URL`.
//! Clients are created on first use, one per (profile, region), and share one
//! credentials cache per profile. Calls to one account's registry in one region are
//! bounded by [`EcrOptions::concurrency_per_region`], and throttling and transient
//! failures are retried by the SDK as [`EcrOptions`] configures.
//!
//! Failures come back as [`deploy_core::Error`] with a one-line message that names the
//! account, region and profile and says what to do (log in, grant a permission, retry).
//!
//! [`state`] keeps an environment's promotion lock ([`S3Lock`]) and audit trail
//! ([`S3AuditLog`]) in S3, with conditional writes, for `state = { s3 = ... }`.
//!
//! With the `moto` feature, `moto` is the test harness that runs ECR on moto servers, for
//! the tests of this crate and of the crates above it.
//!
//! ```no_run
//! # async fn example(config: &deploy_core::config::Config) -> deploy_core::Result<()> {
//! use deploy_core::port::Registry;
//! let registry = deploy_aws::EcrRegistry::new(config)?;
//! let prod = config.environment("prod").map_err(deploy_core::Error::invalid)?;
//! let sentinel = config.sentinel();
//! for region in &prod.registry.regions {
//!     let found = registry
//!         .image(&prod.location(sentinel, region), &"abc1234".parse().expect("tag"))
//!         .await?;
//!     tracing::info!(?found, region, "sentinel");
//! }
//! # Ok(()) }
//! ```

// Nothing is `pub` unless the crate exports it: every other item says `pub(crate)` or less.
#![warn(unreachable_pub)]
// No function over about 80 lines (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

mod clients;
mod errors;
#[cfg(feature = "moto")]
pub mod moto;
mod registry;
pub mod state;

pub use clients::{EcrOptions, RetryMode, SdkConfigs};
pub use registry::EcrRegistry;
pub use state::{S3AuditLog, S3Lock, S3StateOptions, S3Store};
