//! [`KubeArgoCd`]: the Argo CD port over Application and ApplicationSet objects, the way
//! `argocd --core` drives Argo CD without its API server.
//!
//! What each call does to the objects (namespace = Argo CD's, usually `argocd`):
//!
//! | call | Kubernetes requests |
//! |---|---|
//! | `application`, `applications` | GET / LIST (label selector, paginated) |
//! | `set_override` | GET, then a merge PATCH of `spec.source.helm.parameters` (or `kustomize.images`) carrying the `resourceVersion` read, retried on 409 |
//! | `sync`, `rollback` | GET; if `.operation` is set: [`Error::Collision`]; else set `.operation` (and clear `status.operationState`) and PUT with the `resourceVersion` read, retried on 409 — Argo CD's own `SetAppOperation` |
//! | `terminate` | GET, set `status.operationState.phase = Terminating`, PUT (retried on 409) — Argo CD's `TerminateOperation` |
//! | `annotate` | merge PATCH of `metadata.annotations` |
//! | `watch` | GET (the current state first), then a [`kube::runtime::watcher`] on the name, which re-lists and re-watches by itself |
//! | `application_sets`, `application_set` | LIST, GET of ApplicationSets |
//! | `clusters` | LIST of Secrets labelled `argocd.argoproj.io/secret-type=cluster` |
//!
//! Differences from the REST backend, all because there is no API server in between:
//! - `sync` and `rollback` write the operation exactly as the API server would, but no
//!   sync-window or RBAC-project check happens: Kubernetes RBAC on the Application is the
//!   only gate. A rollback of an Application with automated sync is refused here too
//!   ([`Error::Refused`]), as Argo CD refuses it.
//! - `terminate` also works in the short window after a sync was requested and before the
//!   controller picked it up (the API server answers "No operation is in progress" then):
//!   it writes a `Terminating` operation state the controller honours when it starts. With no
//!   operation at all it does nothing.
//! - `clusters` reads the cluster Secrets, which hold no connection state (the API server
//!   keeps that in its cache). Every registered cluster is reported `connected` with the
//!   message [`CONNECTION_NOT_CHECKED`]; the implicit `in-cluster` destination is listed
//!   unless a Secret registers `https://kubernetes.default.svc`.

use std::collections::BTreeMap;
use std::fmt;

use ::kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use ::kube::runtime::{WatchStreamExt, watcher};
use async_trait::async_trait;
use deploy_core::Error;
use deploy_core::port::{
    AppStream, Application, ApplicationSet, ArgoCd, ClusterInfo, OverrideValue, SyncRequest,
};
use deploy_core::window::AppWindows;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::{CONFLICT_RETRIES, is_conflict, map_error};
use crate::wire::{self, TagParameters};

/// The message of every [`ClusterInfo`] from `ArgoCdInventory::clusters` of [`KubeArgoCd`].
pub const CONNECTION_NOT_CHECKED: &str =
    "registered; connection state is not checked in core mode (no Argo CD API server)";

/// The label Argo CD puts on its cluster Secrets.
const CLUSTER_SECRET_SELECTOR: &str = "argocd.argoproj.io/secret-type=cluster";

/// The API server URL of the cluster Argo CD runs in.
const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";

pub(crate) fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// [`ArgoCd`] over the Kubernetes API ("core" mode).
#[derive(Clone)]
pub struct KubeArgoCd {
    applications: Api<DynamicObject>,
    application_sets: Api<DynamicObject>,
    projects: Api<DynamicObject>,
    secrets: Api<Secret>,
    namespace: String,
    username: String,
    tags: TagParameters,
}

impl fmt::Debug for KubeArgoCd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeArgoCd")
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

fn what(name: &str) -> String {
    format!("application {name}")
}

impl KubeArgoCd {
    /// Argo CD whose Application objects live in `namespace` (`[argocd] namespace`).
    ///
    /// Operations are recorded as initiated by `deploy`; see [`KubeArgoCd::with_username`].
    pub fn new(client: ::kube::Client, namespace: &str) -> Self {
        let apps = resource("Application", "applications");
        let sets = resource("ApplicationSet", "applicationsets");
        let projects = resource("AppProject", "appprojects");
        Self {
            applications: Api::namespaced_with(client.clone(), namespace, &apps),
            application_sets: Api::namespaced_with(client.clone(), namespace, &sets),
            projects: Api::namespaced_with(client.clone(), namespace, &projects),
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            username: "deploy".into(),
            tags: TagParameters::default(),
        }
    }

    /// The `initiatedBy.username` written into operations (e.g. the OS user).
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = username.into();
        self
    }

    /// The Helm parameters that hold the tag (from the environments' `image_override`), so
    /// history entries are read back with their override (as the REST client's method).
    pub fn with_tag_parameters(mut self, names: Vec<String>) -> Self {
        self.tags = TagParameters(names);
        self
    }

    fn to_port(&self, object: &DynamicObject) -> deploy_core::Result<Application> {
        Ok(to_wire(object)?.to_port(&self.tags))
    }

    async fn get(&self, name: &str) -> deploy_core::Result<DynamicObject> {
        self.applications
            .get(name)
            .await
            .map_err(|e| map_error(e, &what(name)))
    }

    /// Reads the Application, lets `change` edit its JSON, and replaces it with the
    /// `resourceVersion` it was read at; on 409 Conflict reads again and retries.
    async fn read_modify_replace(
        &self,
        name: &str,
        mut change: impl FnMut(&mut DynamicObject) -> deploy_core::Result<()> + Send,
    ) -> deploy_core::Result<DynamicObject> {
        for attempt in 0..CONFLICT_RETRIES {
            let mut object = self.get(name).await?;
            change(&mut object)?;
            match self
                .applications
                .replace(name, &PostParams::default(), &object)
                .await
            {
                Ok(written) => return Ok(written),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(
                        application = name,
                        attempt,
                        "changed while writing; reading it again"
                    );
                }
                Err(e) => return Err(map_error(e, &what(name))),
            }
        }
        Err(Error::Conflict { what: what(name) })
    }

    /// Sets `.operation` unless one is pending, as Argo CD's `SetAppOperation` does.
    async fn set_operation(
        &self,
        name: &str,
        operation: &wire::Operation,
    ) -> deploy_core::Result<()> {
        let operation = serde_json::to_value(operation).map_err(|e| {
            Error::invalid(format!("{}: operation does not serialize: {e}", what(name)))
        })?;
        self.read_modify_replace(name, |object| {
            if object.data.get("operation").is_some_and(|o| !o.is_null()) {
                return Err(Error::Collision { what: what(name) });
            }
            object.data["operation"] = operation.clone();
            if let Some(status) = object.data.get_mut("status").and_then(Value::as_object_mut) {
                status.remove("operationState");
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}

fn to_wire(object: &DynamicObject) -> deploy_core::Result<wire::Application> {
    let value = serde_json::to_value(object)
        .map_err(|e| Error::invalid(format!("application object does not serialize: {e}")))?;
    serde_json::from_value(value).map_err(|e| {
        Error::invalid(format!(
            "application {} is not a valid Argo CD Application: {e}",
            object.metadata.name.as_deref().unwrap_or_default()
        ))
    })
}

fn is_completed(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed" | "Error"))
}

#[async_trait]
impl ArgoCd for KubeArgoCd {
    async fn application(&self, name: &str) -> deploy_core::Result<Application> {
        self.to_port(&self.get(name).await?)
    }

    async fn set_override(
        &self,
        name: &str,
        value: &OverrideValue,
    ) -> deploy_core::Result<Application> {
        for attempt in 0..CONFLICT_RETRIES {
            let current = to_wire(&self.get(name).await?)?;
            // The patch carries the resourceVersion read: a concurrent writer makes it 409.
            let patch = current.override_patch(value)?;
            match self
                .applications
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => return self.to_port(&written),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(
                        application = name,
                        attempt,
                        "changed while setting the override; reading it again"
                    );
                }
                Err(e) => return Err(map_error(e, &what(name))),
            }
        }
        Err(Error::Conflict { what: what(name) })
    }

    async fn sync(&self, name: &str, request: &SyncRequest) -> deploy_core::Result<()> {
        let operation = wire::Operation::for_sync(request, Some(&self.username));
        self.set_operation(name, &operation).await
    }

    async fn watch(&self, name: &str) -> deploy_core::Result<AppStream> {
        let first = self.application(name).await?;
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let events = watcher(self.applications.clone(), config)
            .default_backoff()
            .boxed();
        let this = self.clone();
        let name = name.to_owned();
        let last = first.resource_version.clone();
        let rest = futures::stream::unfold(
            (events, last, false),
            move |(mut events, mut last, done)| {
                let this = this.clone();
                let name = name.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        match events.next().await? {
                            Ok(
                                watcher::Event::Apply(object) | watcher::Event::InitApply(object),
                            ) => {
                                let app = match this.to_port(&object) {
                                    Ok(app) => app,
                                    Err(e) => return Some((Err(e), (events, last, true))),
                                };
                                // The watcher re-lists after every reconnect: skip what we have seen.
                                if app.resource_version == last {
                                    continue;
                                }
                                last.clone_from(&app.resource_version);
                                return Some((Ok(app), (events, last, false)));
                            }
                            Ok(watcher::Event::Delete(_)) => {
                                return Some((
                                    Err(Error::not_found(what(&name))),
                                    (events, last, true),
                                ));
                            }
                            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                            Err(e) => {
                                let mapped = match e {
                                    watcher::Error::InitialListFailed(e)
                                    | watcher::Error::WatchStartFailed(e)
                                    | watcher::Error::WatchFailed(e) => map_error(e, &what(&name)),
                                    watcher::Error::WatchError(status) => {
                                        map_error(::kube::Error::Api(status), &what(&name))
                                    }
                                    watcher::Error::NoResourceVersion => Error::invalid(format!(
                                        "{}: watch without resourceVersion",
                                        what(&name)
                                    )),
                                };
                                if matches!(mapped, Error::Permission { .. }) {
                                    return Some((Err(mapped), (events, last, true)));
                                }
                                // Transient: the watcher backs off and reconnects by itself.
                                tracing::warn!(application = %name, error = %mapped, "watch interrupted; reconnecting");
                            }
                        }
                    }
                }
            },
        );
        Ok(futures::stream::once(async move { Ok(first) })
            .chain(rest)
            .boxed())
    }

    async fn terminate(&self, name: &str) -> deploy_core::Result<()> {
        let now = jiff::Timestamp::now().to_string();
        let mut pending = true;
        self.read_modify_replace(name, |object| {
            let Some(operation) = object
                .data
                .get("operation")
                .filter(|o| !o.is_null())
                .cloned()
            else {
                pending = false;
                return Ok(());
            };
            let status = &mut object.data["status"];
            if !status.is_object() {
                *status = json!({});
            }
            let state = &mut status["operationState"];
            let running = state.is_object() && !is_completed(state["phase"].as_str());
            if running {
                state["phase"] = json!("Terminating");
            } else {
                // Requested but not yet picked up by the controller: it resumes this state
                // as an operation in progress and, seeing Terminating, ends it.
                *state =
                    json!({ "operation": operation, "phase": "Terminating", "startedAt": now });
            }
            Ok(())
        })
        .await
        .map(drop)?;
        if !pending {
            tracing::debug!(application = name, "terminate: no operation in progress");
        }
        Ok(())
    }

    async fn annotate(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> deploy_core::Result<()> {
        let patch = json!({ "metadata": { "annotations": annotations } });
        self.applications
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| map_error(e, &what(name)))?;
        Ok(())
    }

    /// The AppProject's `spec.syncWindows` matched to the Application as argo-cd's
    /// `SyncWindows.Matches` does, each with its `timeZone`; with no API server there is no
    /// `canSync` answer, so the engine reads the windows as the controller does. AppProjects
    /// live in Argo CD's namespace, as upstream requires.
    async fn sync_windows(&self, name: &str) -> deploy_core::Result<AppWindows> {
        let app = self.get(name).await?;
        let app = serde_json::to_value(&app)
            .map_err(|e| Error::invalid(format!("application {name}: {e}")))?;
        let project = app["spec"]["project"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let project = self
            .projects
            .get(&project)
            .await
            .map_err(|e| map_error(e, &format!("AppProject {project}")))?;
        let project = serde_json::to_value(&project)
            .map_err(|e| Error::invalid(format!("AppProject of {name}: {e}")))?;
        Ok(AppWindows {
            assigned: crate::windows::matching(&project, &app)?,
            zoned: true,
            answer: None,
        })
    }
}

#[async_trait]
impl deploy_core::port::ArgoCdInventory for KubeArgoCd {
    async fn application_sets(&self) -> deploy_core::Result<Vec<ApplicationSet>> {
        let list = self
            .application_sets
            .list(&ListParams::default())
            .await
            .map_err(|e| map_error(e, "applicationsets"))?;
        let mut out = list
            .items
            .iter()
            .map(|object| {
                let value =
                    serde_json::to_value(object).map_err(|e| Error::invalid(e.to_string()))?;
                let set: wire::ApplicationSet = serde_json::from_value(value).map_err(|e| {
                    Error::invalid(format!(
                        "applicationset {} is not a valid ApplicationSet: {e}",
                        object.metadata.name.as_deref().unwrap_or_default()
                    ))
                })?;
                Ok(set.to_port())
            })
            .collect::<deploy_core::Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn application_set(&self, name: &str) -> deploy_core::Result<ApplicationSet> {
        let object = self
            .application_sets
            .get(name)
            .await
            .map_err(|e| map_error(e, &format!("applicationset {name}")))?;
        let value = serde_json::to_value(&object).map_err(|e| Error::invalid(e.to_string()))?;
        let set: wire::ApplicationSet = serde_json::from_value(value).map_err(|e| {
            Error::invalid(format!(
                "applicationset {name} is not a valid ApplicationSet: {e}"
            ))
        })?;
        Ok(set.to_port())
    }

    async fn clusters(&self) -> deploy_core::Result<Vec<ClusterInfo>> {
        let secrets: Vec<Secret> = self
            .secrets
            .list(&ListParams::default().labels(CLUSTER_SECRET_SELECTOR))
            .await
            .map_err(|e| map_error(e, "cluster secrets"))?
            .items;
        let mut out: Vec<ClusterInfo> = secrets
            .iter()
            .filter_map(|secret| {
                let field = |key: &str| {
                    secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                };
                let server = field("server")?;
                Some(ClusterInfo {
                    name: field("name").unwrap_or_else(|| server.clone()),
                    server,
                    connected: true,
                    message: Some(CONNECTION_NOT_CHECKED.to_owned()),
                })
            })
            .collect();
        if !out.iter().any(|c| c.server == IN_CLUSTER_SERVER) {
            out.push(ClusterInfo {
                name: "in-cluster".into(),
                server: IN_CLUSTER_SERVER.into(),
                connected: true,
                message: Some(CONNECTION_NOT_CHECKED.to_owned()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
