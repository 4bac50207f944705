//! Full in-memory backends of every port: they back the demo, the sandbox, examples and
//! downstream tests, and pass the same conformance suite as the real adapters.

pub mod argocd;
pub mod audit;
pub mod lock;
pub mod metrics;
pub mod registry;
pub mod world;

pub use argocd::{ArgoCdState, InMemoryArgoCd, Timing};
pub use audit::InMemoryAuditLog;
pub use lock::InMemoryLock;
pub use metrics::{Answer, InMemoryMetrics, MetricsState, Simulation};
pub use registry::{InMemoryRegistry, RegistryState};
pub use world::{World, WorldState, build_digest};
