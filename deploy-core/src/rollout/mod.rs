//! The engine's rules, pure: what an observation says ([`assess`], [`vigil`]), what a
//! sync window lets a wave do ([`window`]), the lease a run holds ([`lease`]), how a run ends
//! ([`outcome`]) and what it reports ([`event`]). `deploy_engine` runs them against the ports.

pub mod assess;
pub mod event;
pub mod lease;
pub mod outcome;
pub mod vigil;
pub mod window;
