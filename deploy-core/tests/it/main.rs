//! Integration tests of deploy-core: engine scenarios over the in-memory world, and
//! planner invariants with proptest.

mod checks;
mod engine;
mod faults;
mod invariants;
mod pin;
mod support;
mod trail;
mod watch;
mod windows;
