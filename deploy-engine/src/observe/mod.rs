//! The observe helpers: everything that reads the world through the ports before the pure
//! planners of `deploy_core::plan` decide. They only read: nothing is changed.
//!
//! - [`promotion`]: what a promotion's plan needs (the Applications, the release in every
//!   region, replication, the ApplicationSets);
//! - [`findings`]: what `deploy audit` needs, and every check measured once;
//! - [`release`]: a release checked, looked up, and waited for until complete;
//! - [`appset`]: the ApplicationSets that generate an environment's Applications;
//! - [`trail`]: the newest runs of the audit trail.

pub mod appset;
pub mod findings;
pub mod promotion;
pub mod release;
pub mod trail;
