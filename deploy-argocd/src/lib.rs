//! Argo CD adapters of deploy: the Argo CD port over the REST API ([`rest`]) and over the
//! Kubernetes API ([`kube`]), the promotion lock as a Kubernetes Lease, and the
//! ApplicationSet renderer ([`render`]).
//!
//! With the `fake` feature, [`fake`] is test support: a stateful fake Argo CD API server for
//! the tests of this crate and of the crates above it.

#[cfg(feature = "fake")]
pub mod fake;
pub mod kube;
pub mod render;
pub mod rest;
pub mod windows;
pub mod wire;
