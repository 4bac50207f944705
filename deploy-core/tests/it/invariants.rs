//! Planner invariants with proptest.
