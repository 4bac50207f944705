//! The engine's rules, pure: what an observation says ([`assess`], [`vigil`]), what a
//! sync window lets a wave do ([`window`]), the lock's decisions ([`lock`]), how a run ends
//! ([`outcome`]) and what it reports ([`event`]). `deploy_engine` runs them against the ports.

pub mod assess;
pub mod event;
pub mod lock;
pub mod outcome;
pub mod vigil;
pub mod window;
