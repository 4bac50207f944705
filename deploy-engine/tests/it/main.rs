//! Integration tests of deploy-engine (and of deploy-core's planners through it): engine
//! scenarios over the in-memory world, the watcher, the observe helpers, and planner
//! invariants with proptest.

mod checks;
mod engine;
mod faults;
mod invariants;
mod observe;
mod outcome;
mod pin;
mod support;
mod trail;
mod trail_reading;
mod watch;
mod windows;
