//! Argo CD adapters of deploy: the Argo CD port over the REST API ([`rest`]) and over the
//! Kubernetes API ([`kube`]), the promotion lock as a Kubernetes Lease, and the
//! ApplicationSet renderer ([`render`]).

pub mod kube;
pub mod render;
pub mod rest;
pub mod wire;
