//! The annotation lock ([`ApplicationLock`]) over the Kubernetes API, so that `--core` and
//! the REST API take the same lock when no `state` is set (F5).
//!
//! The decisions are [`ApplicationLock`]'s; this is only the transport. A write is a JSON
//! merge patch of `metadata.annotations["deploy/lock"]` (`null` removes it) that carries the
//! `metadata.resourceVersion` it was decided on: the API server treats that as a
//! precondition and answers 409 Conflict when the Application changed since, which is what
//! the REST patch's `test` operation does over Argo CD's API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DynamicObject, Patch, PatchParams};
use async_trait::async_trait;
use deploy_core::Result;
use serde_json::json;

use super::{is_conflict, map_error};
use crate::rest::lock::{ApplicationLock, Carrier, Entry, LOCK_ANNOTATION, Snapshot, encode};

/// The Applications of Argo CD's namespace, as the lock's carrier.
#[derive(Clone)]
struct KubeCarrier(Api<DynamicObject>);

impl std::fmt::Debug for KubeCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCarrier").finish_non_exhaustive()
    }
}

impl ApplicationLock {
    /// Leases kept on `application` in `namespace`, over the Kubernetes API (`--core`).
    pub fn over_kube(client: ::kube::Client, namespace: &str, application: &str) -> Self {
        let api = Api::namespaced_with(
            client,
            namespace,
            &super::argocd::resource("Application", "applications"),
        );
        Self::with_carrier(Arc::new(KubeCarrier(api)), application)
    }
}

fn what(application: &str) -> String {
    format!("application {application}")
}

#[async_trait]
impl Carrier for KubeCarrier {
    async fn read(&self, application: &str) -> Result<(Option<String>, BTreeMap<String, String>)> {
        let app = self
            .0
            .get(application)
            .await
            .map_err(|e| map_error(e, &what(application)))?;
        Ok((
            app.metadata.resource_version,
            app.metadata.annotations.unwrap_or_default(),
        ))
    }

    async fn write(
        &self,
        application: &str,
        snapshot: &Snapshot,
        entries: &[Entry],
    ) -> Result<bool> {
        let value = if entries.is_empty() {
            serde_json::Value::Null
        } else {
            json!(encode(entries)?)
        };
        let patch = json!({
            "metadata": {
                "resourceVersion": snapshot.resource_version,
                "annotations": { LOCK_ANNOTATION: value },
            }
        });
        match self
            .0
            .patch(application, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(map_error(e, &what(application))),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        // As the REST client's first retries: 100 ms doubling, at most 2 s.
        Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(2))
    }
}
