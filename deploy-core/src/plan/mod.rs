//! Planners: pure functions from observed state to a decision, plus the small async
//! `observe` helpers that read that state through the ports.

pub mod appset;
pub mod build;
pub mod findings;
pub mod history;
pub mod live;
pub mod promotion;
pub mod release;
pub mod replication;
pub mod rollback;
