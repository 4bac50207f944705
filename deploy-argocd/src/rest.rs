//! The Argo CD port over Argo CD's REST API (grpc-gateway JSON, reqwest with rustls).
//!
//! [`RestArgoCd`] sends only requests that `swagger.json` allows (a contract test checks every
//! kind). Unary calls have a timeout and are retried with exponential backoff and full jitter
//! (one rule for every retry, `rest/backoff.rs`) on connection errors, timeouts, 502/503/504
//! and 429 (honouring `Retry-After`); other 4xx answers are mapped to [`deploy_core::Error`] at
//! once. The bearer token lives only in a sensitive header value of the HTTP client and never
//! reaches a log line or a `Debug` output.
//!
//! [`ArgoCd::watch`] follows `GET /api/v1/stream/applications?name=..`, whose first event is
//! the Application's current state (so no GET precedes it), reconnecting from the last
//! `resourceVersion` when the stream is cut (load balancers cut idle streams), and falls
//! back to periodic GETs while the stream endpoint does not answer or stays silent.
//!
//! # Bounds
//!
//! - An answer body is read up to [`RestOptions::max_body`] (16 MiB by default) and a watch
//!   stream line up to [`RestOptions::max_stream_line`]; past that the call fails with
//!   [`Error::Invalid`] naming the path and the limit. Stream lines are split in linear time.
//! - At most [`RestOptions::max_in_flight`] unary requests (16 by default) are in flight at
//!   once over all clones of a client, which share one connection pool. A request holds its
//!   permit from sending until its body is read, not while it backs off before a retry.
//!   Watch streams take no permit: each lives as long as its watch (a wave's waits, a whole
//!   soak), so 100 soaking Applications holding permits would starve, or with a lower limit
//!   deadlock, every other call; and a stream's head may wait for its first event. Their
//!   number is bounded by the plan instead (one per Application being waited on), and the
//!   GET fallback of a stream that does not work goes through the limit like any GET.
//!
//! # Transport
//!
//! With `https`, the client refuses any `http` URL, a redirect's included (reqwest
//! `https_only`); in any mode it refuses a redirect chain that leaves https or is longer than
//! five hops (`rest/transport.rs`). reqwest drops `Authorization` on a redirect to another
//! host or port. When the token would cross the network in clear (`http://` or plaintext to a
//! host that is not loopback), the client warns once per server at `warn`;
//! [`cleartext_warning`] gives the same text to a CLI that hides warnings.
//!
//! # Files
//!
//! This file holds the client, its construction and the [`ArgoCd`] port's calls. Beside it:
//! `options` ([`RestOptions`], [`server_url`]), `call` (one unary call: the in-flight limit,
//! retries, bounded bodies, error answers mapped to error kinds), `stream` (the watch),
//! `inventory` (`ArgoCdInventory`), `lock` (the annotation lock), and the pieces they share:
//! `backoff`, `lines`, `transport`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::config::ArgoCdConfig;
use deploy_core::port::{self, AppStream, ArgoCd, OverrideValue, SyncRequest};
use deploy_core::{Error, Result};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::wire;

mod backoff;
mod call;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod inventory;
mod lines;
pub mod lock;
mod options;
mod stream;
mod transport;

pub use options::{DEFAULT_MAX_BODY, DEFAULT_MAX_IN_FLIGHT, RestOptions, server_url};

pub use transport::{cleartext_warning, insecure_warning};

use backoff::{Backoff, Jitter};
use call::{Target, decode, describe};
use options::no_server;

const LOGIN_HINT: &str = "create a token with `argocd account generate-token --account ACCOUNT` \
(or a project role token: `argocd proj role create-token PROJECT ROLE`) and export it as ARGOCD_AUTH_TOKEN";

/// The Argo CD port over the REST API.
#[derive(Clone)]
pub struct RestArgoCd {
    /// One client, so one connection pool, for every request and every clone.
    client: reqwest::Client,
    base: Url,
    options: RestOptions,
    backoff: Backoff,
    /// Unary requests in flight ([`RestOptions::max_in_flight`]), shared by the clones.
    permits: Arc<Semaphore>,
    /// The `spec` of each Application as [`ArgoCd::application`] last read it, for
    /// [`ArgoCd::set_override`]'s guarded patch (at most [`REUSE_WINDOW`] old).
    recent: Arc<Mutex<BTreeMap<String, (std::time::Instant, Value)>>>,
    /// The newest resourceVersion a watch delivered, per Application (`RestArgoCd::advance`).
    seen: Arc<Mutex<BTreeMap<String, String>>>,
}

/// How long a read's spec is kept for [`ArgoCd::set_override`]. Any age would be safe (the
/// patch tests what it replaces); the window bounds the memory and the odds of a stale test.
const REUSE_WINDOW: Duration = Duration::from_secs(10);

/// The `spec` of an Application answer, as served.
#[derive(Deserialize)]
struct RawSpec {
    #[serde(default)]
    spec: Value,
}

impl fmt::Debug for RestArgoCd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is in the client's default headers; show neither.
        f.debug_struct("RestArgoCd")
            .field("server", &self.base.as_str())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// `sessionGetUserInfoResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserInfo {
    #[serde(default)]
    logged_in: bool,
    #[serde(default)]
    username: Option<String>,
}

/// Logs `warning` at `warn` the first time a client of `server` is built in this process.
fn warn_once(server: &Url, warning: &str) {
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(server.to_string());
    if first {
        warn!(server = %server, "{warning}");
    }
}

impl RestArgoCd {
    /// A client for the server of `config` (the CLI applies `--argocd-server`, `ARGOCD_SERVER`,
    /// `--plaintext` and `--insecure` to it first) with the token read from `ARGOCD_AUTH_TOKEN`.
    pub fn new(config: &ArgoCdConfig, token: SecretString) -> Result<Self> {
        Self::with_options(config, token, RestOptions::default())
    }

    /// [`RestArgoCd::new`] with explicit timeouts, retries and watch settings.
    pub fn with_options(
        config: &ArgoCdConfig,
        token: SecretString,
        options: RestOptions,
    ) -> Result<Self> {
        let server = config.server.as_deref().ok_or_else(no_server)?;
        let base = server_url(server, config.plaintext)?;
        if token.expose_secret().trim().is_empty() {
            return Err(Error::Permission {
                message: format!("ARGOCD_AUTH_TOKEN is empty; {LOGIN_HINT}"),
            });
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret().trim()))
            .map_err(|_| Error::Permission {
            message: format!(
                "ARGOCD_AUTH_TOKEN holds characters that cannot be sent in a header; {LOGIN_HINT}"
            ),
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let tls = base.scheme() == "https";
        let insecure = config.insecure && tls;
        if let Some(warning) = cleartext_warning(config) {
            warn_once(&base, &warning);
        }
        if let Some(warning) = insecure_warning(config) {
            warn!(server = %base, "{warning}");
        }
        // reqwest takes rustls's process-wide crypto provider and has none of its own here
        // (Cargo.toml): the workspace's, aws-lc-rs, unless the process installed one already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(options.connect_timeout)
            .danger_accept_invalid_certs(insecure)
            // With TLS on, reqwest refuses any http URL, a redirect's included; the policy
            // refuses a downgrade anywhere in a chain and long chains (transport.rs).
            .https_only(tls)
            .redirect(transport::redirect_policy())
            .user_agent(concat!("deploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::invalid(format!("cannot build the HTTP client: {}", describe(&e)))
            })?;
        let backoff = Backoff::new(options.backoff, options.max_backoff, Jitter::random());
        let permits = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
        Ok(Self {
            client,
            base,
            options,
            backoff,
            permits,
            recent: Arc::default(),
            seen: Arc::default(),
        })
    }

    /// The server's API base URL.
    pub fn server(&self) -> &Url {
        &self.base
    }

    /// The Argo CD user the token belongs to (`GET /api/v1/session/userinfo`), for audit records.
    pub async fn username(&self) -> Result<String> {
        let url = self.url(&["api", "v1", "session", "userinfo"]);
        let bytes = self
            .call(Method::GET, url, &[], None, &Target::list("session"))
            .await?;
        let info: UserInfo = decode(&bytes, "session userinfo")?;
        match info.username.filter(|u| !u.is_empty()) {
            Some(u) if info.logged_in => Ok(u),
            _ => Err(Error::Permission {
                message: format!(
                    "Argo CD at {} says the token is not logged in; {LOGIN_HINT}",
                    self.base
                ),
            }),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn app_url(&self, name: &str, rest: &[&str]) -> Url {
        let mut segments = vec!["api", "v1", "applications", name];
        segments.extend_from_slice(rest);
        self.url(&segments)
    }

    /// The wait before retry `attempt`: the client's one backoff rule (backoff.rs).
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff.delay(attempt, retry_after)
    }

    async fn get_app(&self, name: &str) -> Result<wire::Application> {
        decode(&self.app_bytes(name).await?, &format!("application {name}"))
    }

    /// `GET` of one Application, undecoded.
    async fn app_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.call(
            Method::GET,
            self.app_url(name, &[]),
            &[],
            None,
            &Target::app(name),
        )
        .await
    }

    /// The windows of `name`'s AppProject that match it, with their `timeZone`s: `GET
    /// /api/v1/projects/{project}` (`ProjectService.Get`, `v1alpha1AppProject`; RBAC
    /// `projects, get`). Not `GET /api/v1/projects/{name}/syncwindows`: upstream's
    /// `GetSyncWindowsState` answers only the windows active now (`SyncWindows.Active()`),
    /// which cannot say when an allow window opens or the next deny begins.
    async fn zoned(&self, name: &str) -> Result<Vec<deploy_core::window::SyncWindow>> {
        let app: Value = decode(&self.app_bytes(name).await?, &format!("application {name}"))?;
        let project = app["spec"]["project"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or("default");
        let label = format!("AppProject {project}");
        let bytes = self
            .call(
                Method::GET,
                self.url(&["api", "v1", "projects", project]),
                &[],
                None,
                &Target {
                    label: label.clone(),
                    named: true,
                },
            )
            .await?;
        let project: Value = decode(&bytes, &label)?;
        crate::windows::matching(&project, &app)
    }

    /// Keeps the spec of an Application answer for a later [`ArgoCd::set_override`].
    fn remember(&self, name: &str, bytes: &[u8]) {
        let Ok(raw) = serde_json::from_slice::<RawSpec>(bytes) else {
            return;
        };
        let now = std::time::Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|_, (at, _)| now.duration_since(*at) < REUSE_WINDOW);
        recent.insert(name.to_owned(), (now, raw.spec));
    }

    /// The spec [`RestArgoCd::remember`] kept for `name`, if recent; used once.
    fn recall(&self, name: &str) -> Option<Value> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, spec) = recent.remove(name)?;
        (at.elapsed() < REUSE_WINDOW).then_some(spec)
    }

    /// `PATCH` with an RFC 6902 patch.
    async fn json_patch_app(&self, name: &str, ops: Vec<Value>) -> Result<wire::Application> {
        let body = json!({
            "name": name,
            "patch": Value::Array(ops).to_string(),
            "patchType": "json",
        });
        let bytes = self
            .call(
                Method::PATCH,
                self.app_url(name, &[]),
                &[],
                Some(&body),
                &Target::app(name),
            )
            .await?;
        decode(&bytes, &format!("application {name}"))
    }

    async fn patch_app(&self, name: &str, patch: &Value) -> Result<wire::Application> {
        let body = json!({
            "name": name,
            "patch": patch.to_string(),
            "patchType": "merge",
        });
        let bytes = self
            .call(
                Method::PATCH,
                self.app_url(name, &[]),
                &[],
                Some(&body),
                &Target::app(name),
            )
            .await?;
        decode(&bytes, &format!("application {name}"))
    }

    /// Reads the Application, builds a conditional patch from it and sends it; on a
    /// concurrent change, reads again (bounded).
    async fn read_modify_patch(
        &self,
        name: &str,
        build: impl Fn(&wire::Application) -> Result<Option<Value>> + Send + Sync,
    ) -> Result<wire::Application> {
        let mut attempt = 0;
        loop {
            let app = self.get_app(name).await?;
            let Some(patch) = build(&app)? else {
                return Ok(app);
            };
            match self.patch_app(name, &patch).await {
                Err(Error::Conflict { .. }) if attempt < self.options.conflict_retries => {
                    debug!(
                        name,
                        attempt, "application changed under us; reading it again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_sync(
        &self,
        name: &str,
        prune: bool,
        revision: Option<&str>,
        operation_id: &str,
    ) -> Result<()> {
        let mut body = json!({
            "name": name,
            "prune": prune,
            "infos": [wire::operation_info(operation_id)],
        });
        if let Some(revision) = revision.filter(|r| !r.is_empty()) {
            body["revision"] = json!(revision);
        }
        let sent = self
            .call(
                Method::POST,
                self.app_url(name, &["sync"]),
                &[],
                Some(&body),
                &Target::app(name),
            )
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(Error::Collision { what }) => {
                // A retried request whose first attempt landed collides with itself:
                // the pending operation then carries our id.
                let app = self.get_app(name).await?;
                let ours = app.operation.as_ref().is_some_and(|o| {
                    o.info
                        .iter()
                        .any(|i| i.name == port::OPERATION_INFO_KEY && i.value == operation_id)
                });
                if ours {
                    Ok(())
                } else {
                    Err(Error::Collision { what })
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl ArgoCd for RestArgoCd {
    async fn application(&self, name: &str) -> Result<port::Application> {
        let bytes = self
            .call(
                Method::GET,
                self.app_url(name, &[]),
                &[],
                None,
                &Target::app(name),
            )
            .await?;
        let app: wire::Application = decode(&bytes, &format!("application {name}"))?;
        self.remember(name, &bytes);
        Ok(app.to_port(&self.options.tag_parameters))
    }

    /// Callers read the Application before they decide to change it (the engine does), so
    /// the spec of that read, when at most `REUSE_WINDOW` old, is patched directly with a
    /// patch that tests the array it replaces (`wire::guarded_override_patch`): one request
    /// instead of a GET and a PATCH. A refused test (someone changed it since) and every case
    /// the guarded form does not cover fall back to reading the Application and patching it.
    async fn set_override(&self, name: &str, value: &OverrideValue) -> Result<port::Application> {
        if let Some(ops) = self
            .recall(name)
            .and_then(|spec| wire::guarded_override_patch(&spec, value))
        {
            match self.json_patch_app(name, ops).await {
                Ok(app) => return Ok(app.to_port(&self.options.tag_parameters)),
                Err(e) if lock::is_stale(&e) => {
                    debug!(name, error = %e, "application changed since it was read; reading it again");
                }
                Err(e) => return Err(e),
            }
        }
        let app = self
            .read_modify_patch(name, |app| changing(app, name, app.override_patch(value)?))
            .await?;
        Ok(app.to_port(&self.options.tag_parameters))
    }

    async fn sync(&self, name: &str, request: &SyncRequest) -> Result<()> {
        self.start_sync(name, request.prune, None, &request.operation_id)
            .await
    }

    /// Opens the stream and returns once the first state is in: the stream's first event
    /// (Argo CD sends the current state first on a named watch, so no GET is needed), or the
    /// GET fallback's answer. A missing Application fails here, as before.
    async fn watch(&self, name: &str) -> Result<AppStream> {
        self.open_watch(name).await
    }

    /// Succeeds when no operation is pending any more (it finished meanwhile, or a retried
    /// request already asked). An operation requested but not yet started by the controller
    /// cannot be terminated yet ("No operation is in progress"): that is retried.
    async fn terminate(&self, name: &str) -> Result<()> {
        let mut attempt = 0;
        loop {
            let done = self
                .call(
                    Method::DELETE,
                    self.app_url(name, &["operation"]),
                    &[],
                    None,
                    &Target::app(name),
                )
                .await;
            match done {
                Ok(_) => return Ok(()),
                Err(Error::Invalid { message })
                    if message.contains("No operation is in progress") =>
                {
                    if self.get_app(name).await?.operation.is_none() {
                        debug!(name, "no operation to terminate");
                        return Ok(());
                    }
                    if attempt >= self.options.retries {
                        return Err(Error::transient(format!(
                            "application {name}: the requested operation has not started; it cannot be terminated yet"
                        )));
                    }
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn annotate(&self, name: &str, annotations: &BTreeMap<String, String>) -> Result<()> {
        if annotations.is_empty() {
            return Ok(());
        }
        self.patch_app(name, &json!({ "metadata": { "annotations": annotations } }))
            .await
            .map(|_| ())
    }

    /// `GET /api/v1/applications/{name}/syncwindows` (`GetApplicationSyncWindows` upstream):
    /// the project's windows matched to the Application, `canSync` for a manual sync and the
    /// active windows, both computed in each window's zone; the windows come without their
    /// zones, so they are read again from the AppProject when the token may (`RestArgoCd::zoned`).
    async fn sync_windows(&self, name: &str) -> Result<deploy_core::window::AppWindows> {
        let bytes = self
            .call(
                Method::GET,
                self.app_url(name, &["syncwindows"]),
                &[],
                None,
                &Target::app(name),
            )
            .await?;
        let answer: Value = decode(&bytes, &format!("the sync windows of {name}"))?;
        let mut windows = crate::windows::response(&answer)?;
        match self.zoned(name).await {
            Ok(zoned) => {
                windows.assigned = zoned;
                windows.zoned = true;
            }
            // Argo CD's answer still says whether a sync may run now; only until when is lost.
            Err(e @ Error::NotFound { .. }) => {
                debug!(
                    "the AppProject of {name} cannot be read ({e}); its sync windows' time zones are unknown"
                );
            }
            Err(e) => {
                warn!(
                    "the AppProject of {name} cannot be read ({e}); its sync windows' time zones are unknown"
                );
            }
        }
        Ok(windows)
    }
}

/// `patch` (a merge patch), unless applying it to `app` would change nothing: then `None`,
/// which skips the write and its resourceVersion bump.
fn changing(app: &wire::Application, name: &str, patch: Value) -> Result<Option<Value>> {
    let mut after = serde_json::to_value(app)
        .map_err(|e| Error::invalid(format!("application {name}: {e}")))?;
    let before = after.clone();
    wire::merge_patch(&mut after, &patch);
    Ok((after != before).then_some(patch))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_root_path_and_encode_names() {
        let cfg = ArgoCdConfig {
            server: Some("https://h/argo-cd".into()),
            plaintext: false,
            insecure: false,
            namespace: "argocd".into(),
        };
        let c = RestArgoCd::new(&cfg, SecretString::from("t")).unwrap();
        assert_eq!(
            c.app_url("a b", &["sync"]).as_str(),
            "https://h/argo-cd/api/v1/applications/a%20b/sync"
        );
    }
}
