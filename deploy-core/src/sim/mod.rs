//! The Argo CD simulation, written once: a deterministic state machine driven by the caller's
//! clock (explicit [`jiff::Timestamp`]s; no runtime, no I/O), with the upstream behaviour it
//! models cited beside it.
//!
//! - [`seed`]: what a test gives it (Applications to create, scripted outcomes, timing) and
//!   what a synced override renders ([`rendered_images`]).
//! - [`operation`]: one operation's life (Running, held by a sync window, Succeeded or Failed,
//!   terminated, someone else's), the health that follows a sync, automated sync and the
//!   server's sync-window check.
//! - [`app`]: the whole Argo CD as typed state ([`ArgoCdState`]): spec, status, history,
//!   annotations, windows, foreign operations, ApplicationSets and clusters.
//! - [`appset`]: the ApplicationSet controller's revert of an Application it owns.
//!
//! Three skins serve it: the in-memory backend (`memory::InMemoryArgoCd`, this state behind a
//! lock and a clock), the REST fake on wiremock (deploy-argocd's `fake`, feature `fake`) and
//! the Kubernetes fake of deploy-argocd's tests. The REST and Kubernetes skins keep their
//! Applications as JSON (tests edit them, patches and the API server write them) and ask
//! [`operation::Run::step`] and [`appset::reconcile`] what the controllers do; they keep only
//! what their transport adds (status codes, bodies, resourceVersion conflicts, watch streams).
//! The conformance suite (`conformance::argocd`) runs against all three.

pub mod app;
pub mod appset;
pub mod operation;
pub mod seed;

pub use app::ArgoCdState;
pub use operation::{Ending, Run, RunKind, Settling, Step};
pub use seed::{AppSeed, Script, Timing, rendered_images};

/// A deny window over the first hour of every day (UTC), for every Application: the tests'
/// window (for this crate's and `deploy-engine`'s tests).
#[doc(hidden)]
pub fn first_hour_denied() -> crate::window::SyncWindow {
    crate::window::SyncWindow {
        kind: crate::window::WindowKind::Deny,
        schedule: "0 0 * * *".into(),
        duration: "1h".into(),
        manual_sync: false,
        time_zone: None,
        applications: vec!["*".into()],
        namespaces: vec![],
        clusters: vec![],
        and_operator: false,
    }
}
