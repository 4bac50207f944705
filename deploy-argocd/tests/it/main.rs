//! The one integration test binary of deploy-argocd. The fake Argo CD the REST tests run
//! against is the library's `deploy_argocd::fake` (feature `fake`).

mod bounds;
mod contract;
mod faults;
mod kube;
mod render;
mod rest;
mod rest_lock;
mod tls;
mod windows;
