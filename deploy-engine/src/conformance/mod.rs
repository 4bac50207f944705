//! The contract of each port, as `pub async fn` checks that every backend's tests run
//! (the in-memory backends here, ECR over moto and wiremock in deploy-aws, Argo CD over
//! wiremock and a mocked Kubernetes API in deploy-argocd).
//!
//! A backend's test provides the port and a fixture that seeds state the port itself
//! cannot create (repositories and images, Applications, scripted operation outcomes).

pub mod argocd;
pub mod lock;
pub mod registry;

/// Fails the check with a message naming the contract clause.
#[macro_export]
#[doc(hidden)]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The outcome of one contract check: `Err` names the broken clause.
pub type Check = Result<(), String>;
