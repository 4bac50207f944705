//! The one integration test binary of deploy-argocd.

mod contract;
mod fake;
mod faults;
mod kube;
mod render;
mod rest;
