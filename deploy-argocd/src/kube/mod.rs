//! Argo CD over the Kubernetes API ("core" mode) and the promotion lock as a Lease.
//!
//! [`KubeArgoCd`] implements [`deploy_core::port::ArgoCd`] by reading and writing the
//! `argoproj.io/v1alpha1` Application and ApplicationSet objects in Argo CD's namespace,
//! exactly as `argocd --core` does: no Argo CD API server, only Kubernetes RBAC.
//! [`LeaseLock`] implements [`deploy_core::port::Lock`] with a `coordination.k8s.io/v1`
//! Lease. Both write with optimistic concurrency (`metadata.resourceVersion`); a 409 Conflict
//! means "read again and retry", never "fail".

mod annotation;
mod argocd;
mod lease;

/// The Kubernetes client every backend here is built from.
pub use ::kube::Client;
pub use argocd::{CONNECTION_NOT_CHECKED, KubeArgoCd};
pub use lease::{LeaseLock, lease_name};

use deploy_core::Error;

/// How many times a read-modify-write is retried after 409 Conflict before giving up.
const CONFLICT_RETRIES: usize = 10;

/// Builds a client from the usual sources: `$KUBECONFIG` or `~/.kube/config` (current
/// context), else the in-cluster service account.
pub async fn client() -> deploy_core::Result<::kube::Client> {
    ::kube::Client::try_default().await.map_err(|e| match e {
        ::kube::Error::InferConfig(e) => Error::Permission {
            message: format!(
                "no Kubernetes access: {e}; set KUBECONFIG or run inside the cluster with a service account"
            ),
        },
        other => map_error(other, "Kubernetes API"),
    })
}

/// Maps a kube error about `what` (e.g. "application myapp-prod-us-west-2") to the port's error.
pub(crate) fn map_error(error: ::kube::Error, what: &str) -> Error {
    match error {
        ::kube::Error::Api(status) => match status.code {
            404 => Error::not_found(what),
            409 => Error::Conflict {
                what: what.to_owned(),
            },
            401 => Error::Permission {
                message: format!(
                    "{what}: not authenticated to the Kubernetes API ({}); refresh the credentials of your kubeconfig context",
                    status.message
                ),
            },
            403 => Error::Permission {
                message: format!(
                    "{what}: forbidden by Kubernetes RBAC ({}); ask for get/list/watch/update/patch on it in the Argo CD namespace",
                    status.message
                ),
            },
            429 | 500..=599 => {
                Error::transient(format!("{what}: Kubernetes API: {}", status.message))
            }
            _ => Error::invalid(format!(
                "{what}: Kubernetes API refused the request ({} {}): {}",
                status.code, status.reason, status.message
            )),
        },
        ::kube::Error::SerdeError(e) => Error::invalid(format!(
            "{what}: unexpected answer from the Kubernetes API: {e}"
        )),
        ::kube::Error::Auth(e) => Error::Permission {
            message: format!("{what}: Kubernetes authentication failed: {e}"),
        },
        other => Error::transient(format!("{what}: Kubernetes API: {other}")),
    }
}

/// True when `error` is a 409 Conflict (optimistic concurrency lost, or create of an existing object).
pub(crate) fn is_conflict(error: &::kube::Error) -> bool {
    matches!(error, ::kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> ::kube::Error {
        ::kube::Error::Api(::kube::core::ErrorResponse {
            status: "Failure".into(),
            message: format!("{reason} message"),
            reason: reason.into(),
            code,
        })
    }

    #[test]
    fn errors_map_to_what_the_caller_decides() {
        let check = |code: u16, reason: &str, want: fn(&Error) -> bool| {
            let got = map_error(api(code, reason), "application a");
            assert!(want(&got), "{code} {reason}: {got:?}");
        };
        check(404, "NotFound", |e| e.is_not_found());
        check(409, "Conflict", |e| matches!(e, Error::Conflict { .. }));
        check(
            401,
            "Unauthorized",
            |e| matches!(e, Error::Permission { message } if message.contains("kubeconfig")),
        );
        check(
            403,
            "Forbidden",
            |e| matches!(e, Error::Permission { message } if message.contains("RBAC")),
        );
        check(429, "TooManyRequests", |e| {
            matches!(e, Error::Transient { .. })
        });
        check(503, "ServiceUnavailable", |e| {
            matches!(e, Error::Transient { .. })
        });
        check(422, "Invalid", |e| matches!(e, Error::Invalid { .. }));
        assert!(is_conflict(&api(409, "Conflict")));
        assert!(!is_conflict(&api(404, "NotFound")));
    }
}
