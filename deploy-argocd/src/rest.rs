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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::config::ArgoCdConfig;
use deploy_core::port::{self, AppStream, ArgoCd, ClusterInfo, OverrideValue, SyncRequest};
use deploy_core::{Error, Result};
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, trace, warn};

use crate::wire::{self, TagParameters};

mod backoff;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lines;
pub mod lock;
mod transport;

pub use transport::{cleartext_warning, insecure_warning};

use backoff::{Backoff, Jitter};
use lines::Lines;

/// How the client times out, retries and watches. The defaults suit a production server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestOptions {
    /// Limit for one unary request, body included.
    pub timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Retries of a transient failure (after the first attempt).
    pub retries: u32,
    /// First backoff; doubled per retry up to `max_backoff`.
    pub backoff: Duration,
    /// Longest backoff, also the cap on a server's `Retry-After`.
    pub max_backoff: Duration,
    /// A watch stream silent this long is cut and reopened (Argo CD sends no heartbeats).
    pub stream_idle: Duration,
    /// A watch stream whose first event has not come this long after it was requested is
    /// cut and the Application read with a GET instead (at most [`RestOptions::timeout`]).
    /// Argo CD sends the current state at once; it sends nothing for an Application that is
    /// missing, that the token may not read, or that a lagging API server replica only has
    /// in a version older than the one the watch resumes from.
    pub first_event: Duration,
    /// Pause before reopening a watch stream that was cut after delivering events.
    pub reconnect_delay: Duration,
    /// Period of the GET fallback while the watch stream does not work.
    pub poll_interval: Duration,
    /// Read-modify-write attempts of a spec patch that meets a concurrent change.
    pub conflict_retries: u32,
    /// Helm parameters that hold the image tag, to read history entries back as overrides.
    pub tag_parameters: TagParameters,
    /// Largest answer body of a unary call, in bytes; a longer one fails (invalid, not
    /// retried) instead of filling memory.
    pub max_body: usize,
    /// Longest line of a watch stream (one event, a whole Application), in bytes; a longer
    /// one ends the watch with an error.
    pub max_stream_line: usize,
    /// Unary requests to Argo CD in flight at once, over all callers of this client and its
    /// clones (one shared connection pool). Watch streams are not counted: see the module
    /// documentation.
    pub max_in_flight: usize,
}

/// The default [`RestOptions::max_body`] and [`RestOptions::max_stream_line`]: 16 MiB, far
/// above a large Application (Kubernetes caps an object at about 1.5 MiB in etcd) and a list of
/// hundreds of them.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// The default [`RestOptions::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

impl Default for RestOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 4,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            stream_idle: Duration::from_secs(120),
            first_event: Duration::from_secs(5),
            reconnect_delay: Duration::from_secs(1),
            poll_interval: Duration::from_secs(5),
            conflict_retries: 3,
            tag_parameters: TagParameters::default(),
            max_body: DEFAULT_MAX_BODY,
            max_stream_line: DEFAULT_MAX_BODY,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl RestOptions {
    /// Options for tests against a local server: short timeouts and delays.
    pub fn fast() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retries: 3,
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            stream_idle: Duration::from_secs(2),
            first_event: Duration::from_secs(2),
            reconnect_delay: Duration::from_millis(5),
            poll_interval: Duration::from_millis(20),
            ..Self::default()
        }
    }

    /// Sets the unary request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long a watch stream may take to deliver its first event.
    pub fn with_first_event(mut self, first_event: Duration) -> Self {
        self.first_event = first_event;
        self
    }

    /// Sets the number of retries of transient failures.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the largest answer body of a unary call, in bytes.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the longest watch stream line, in bytes.
    pub fn with_max_stream_line(mut self, bytes: usize) -> Self {
        self.max_stream_line = bytes;
        self
    }

    /// Sets how many unary requests may be in flight at once (at least 1).
    pub fn with_max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Sets the Helm parameters that hold the image tag (from the environments' `image_override`).
    pub fn with_tag_parameters(mut self, names: Vec<String>) -> Self {
        self.tag_parameters = TagParameters(names);
        self
    }
}

/// The Argo CD API base URL for `server`: a host, `host:port` or URL. Without a scheme,
/// `https` is used unless `plaintext`; `plaintext` also turns an `https://` URL into `http://`.
/// A path (Argo CD served under a root path) is kept.
pub fn server_url(server: &str, plaintext: bool) -> Result<Url> {
    let server = server.trim();
    if server.is_empty() {
        return Err(no_server());
    }
    let text = if server.contains("://") {
        server.to_owned()
    } else {
        format!("{}://{server}", if plaintext { "http" } else { "https" })
    };
    let mut url = Url::parse(&text).map_err(|e| {
        Error::invalid(format!(
            "Argo CD server {server:?} is not a host, host:port or URL: {e}"
        ))
    })?;
    match url.scheme() {
        "http" => {}
        "https" if plaintext => {
            url.set_scheme("http").map_err(|()| {
                Error::invalid(format!("Argo CD server {server:?}: cannot use plaintext"))
            })?;
        }
        "https" => {}
        other => {
            return Err(Error::invalid(format!(
                "Argo CD server {server:?}: scheme {other:?} is not http or https"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(format!(
            "Argo CD server {server:?} has no host"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn no_server() -> Error {
    Error::invalid(
        "no Argo CD server: set [argocd] server in deploy.toml, --argocd-server or ARGOCD_SERVER",
    )
}

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

/// What a request is about, for error messages.
struct Target {
    label: String,
    /// A single named object (403 then means "not found or not permitted").
    named: bool,
}

impl Target {
    fn app(name: &str) -> Self {
        Self {
            label: format!("application {name}"),
            named: true,
        }
    }

    fn list(what: &str) -> Self {
        Self {
            label: what.to_owned(),
            named: false,
        }
    }
}

/// `runtimeError`: the body of a failed unary call.
#[derive(Debug, Default, Deserialize)]
struct RuntimeError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
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

/// Maps an Argo CD error answer to the port's error kinds.
fn map_error(
    status: StatusCode,
    body: &[u8],
    target: &Target,
    retry_after: Option<Duration>,
    server: &Url,
) -> Error {
    let parsed: RuntimeError = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.code.unwrap_or(-1);
    let message = parsed
        .message
        .or(parsed.error)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            if text.trim().is_empty() {
                status.to_string()
            } else {
                text
            }
        });
    let label = &target.label;
    let lower = message.to_ascii_lowercase();
    if lower.contains("another operation is already in progress") {
        return Error::Collision {
            what: label.clone(),
        };
    }
    // argocd-server's Sync: `PermissionDenied, "cannot sync: blocked by sync window"`
    // (`server/application/application.go`); said typed here, once, for the engine.
    if lower.contains("blocked by sync window") {
        return Error::BlockedByWindow {
            message: format!(
                "{label}: {message} (a sync window of its project forbids syncing now)"
            ),
        };
    }
    if lower.contains("sync window") {
        return Error::Refused {
            message: format!(
                "{label}: {message} (a sync window of its project forbids syncing now)"
            ),
        };
    }
    if status == StatusCode::UNAUTHORIZED || code == 16 {
        return Error::Permission {
            message: format!(
                "Argo CD at {server} did not accept the token ({message}); {LOGIN_HINT}"
            ),
        };
    }
    if status == StatusCode::FORBIDDEN || code == 7 {
        return if target.named {
            Error::NotFound {
                what: label.clone(),
                hint: Some(
                    "not found or not permitted: Argo CD answers the same for both; check the name and the token's RBAC".into(),
                ),
            }
        } else {
            Error::Permission {
                message: format!(
                    "{label}: permission denied by Argo CD ({message}); the token's account or project role needs access"
                ),
            }
        };
    }
    if status == StatusCode::NOT_FOUND || code == 5 {
        return Error::NotFound {
            what: label.clone(),
            hint: None,
        };
    }
    if status == StatusCode::CONFLICT || code == 10 || code == 6 {
        return Error::Conflict {
            what: label.clone(),
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS || code == 8 {
        return Error::Transient {
            message: format!("{label}: Argo CD is throttling requests ({message})"),
            retry_after,
        };
    }
    if code == 9 {
        // FailedPrecondition covers refusals and repository failures alike (issue #13752).
        let transient = ["timeout", "connection refused", "unavailable", "i/o"]
            .iter()
            .any(|w| lower.contains(w));
        return if transient {
            Error::transient(format!("{label}: {message}"))
        } else {
            Error::Refused {
                message: format!("{label}: {message}"),
            }
        };
    }
    if status.is_server_error() {
        return Error::Transient {
            message: format!("{label}: Argo CD answered {status}: {message}"),
            retry_after,
        };
    }
    Error::invalid(format!("{label}: Argo CD answered {status}: {message}"))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A reqwest error with its causes, without any header.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why an answer body could not be read.
enum BodyError {
    /// It is longer than the limit.
    TooLarge,
    /// The connection failed or timed out.
    Read(reqwest::Error),
}

/// Reads `response`'s body, failing as soon as it is known to be over `limit` bytes (from
/// `Content-Length`, or while reading a body without one), so an oversized answer costs at
/// most `limit` plus one chunk of memory.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A size for a message: "16 MiB", or bytes when not a whole number of MiB.
fn bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
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

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("malformed answer from Argo CD for {what}: {e}")))
}

/// Where a watch stands: the newest resourceVersion it passed on, and whether it passed on
/// any state yet.
struct Watermark {
    resource_version: String,
    delivered: bool,
}

/// What a watch does with a state it received ([`RestArgoCd::advance`]).
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Older than a state already delivered: dropped.
    Older,
    /// The state last delivered: dropped.
    Same,
    /// New: passed on.
    Deliver,
}

/// How a watch stream connection ended.
enum StreamEnd {
    /// The consumer dropped the stream.
    Closed,
    /// The stream ended or failed; `events` tells whether it delivered any.
    Cut { events: bool },
    /// The application is gone; the error ends the watch.
    Fatal(Error),
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

    /// One unary call with timeout and retries of transient failures; the body on success.
    async fn call(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, &str)],
        body: Option<&Value>,
        target: &Target,
    ) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .timeout(self.options.timeout);
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            // A permit per attempt, from before the request until its body is read: a retry's
            // backoff does not hold one.
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            debug!(%method, path = url.path(), attempt, "argocd request");
            let sent = request.send().await;
            let failure = match sent {
                Ok(response) => {
                    let status = response.status();
                    let after = retry_after(response.headers());
                    let body = read_body(response, self.options.max_body).await;
                    drop(permit);
                    match body {
                        Ok(bytes) if status.is_success() => {
                            trace!(%method, path = url.path(), %status, len = bytes.len(), "argocd answer");
                            return Ok(bytes);
                        }
                        Ok(bytes) => {
                            // Argo CD answers 500 ("Unknown") for passing trouble such as a
                            // Kubernetes API timeout: safe to repeat for a read, never for a write.
                            let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504)
                                || (status.as_u16() == 500 && method == Method::GET);
                            let error = map_error(status, &bytes, target, after, &self.base);
                            if !retryable {
                                debug!(%method, path = url.path(), %status, "argocd refused");
                                return Err(error);
                            }
                            (error, after)
                        }
                        Err(BodyError::TooLarge) => {
                            return Err(Error::invalid(format!(
                                "{method} {}: the answer of Argo CD is larger than the client's limit of {} \
                                 (RestOptions::max_body); narrow the request (a label selector for a list) \
                                 or raise the limit",
                                url.path(),
                                bytes(self.options.max_body),
                            )));
                        }
                        Err(BodyError::Read(e)) => (
                            Error::transient(format!(
                                "{} {}: reading the answer failed: {}",
                                method,
                                url.path(),
                                describe(&e)
                            )),
                            None,
                        ),
                    }
                }
                Err(e) => {
                    drop(permit);
                    let detail = describe(&e);
                    // A refused redirect (a downgrade to http, a loop) will not fix itself.
                    if e.is_redirect() {
                        return Err(Error::invalid(format!("{method} {}: {detail}", url.path())));
                    }
                    // An untrusted certificate will not fix itself: say what to do at once.
                    if detail.contains("certificate") || detail.contains("UnknownIssuer") {
                        return Err(Error::Permission {
                            message: format!(
                                "the TLS certificate of {} is not trusted ({detail}); add its CA to the system trust store \
                                 (deploy uses it and the Mozilla roots), or pass --insecure for a test server",
                                url.host_str().unwrap_or("the Argo CD server")
                            ),
                        });
                    }
                    (
                        Error::transient(format!(
                            "{} {}: {}{}",
                            method,
                            url.path(),
                            if e.is_timeout() { "timed out: " } else { "" },
                            detail
                        )),
                        None,
                    )
                }
            };
            let (error, after) = failure;
            if attempt >= self.options.retries {
                return Err(error);
            }
            let wait = self.backoff(attempt, after);
            warn!(%method, path = url.path(), attempt, ?wait, %error, "argocd request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// `GET /api/v1/{kind}`, decoded.
    async fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<T> {
        let bytes = self
            .call(
                Method::GET,
                self.url(&["api", "v1", kind]),
                &[],
                None,
                &Target::list(kind),
            )
            .await?;
        decode(&bytes, kind)
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
    async fn zoned(&self, name: &str) -> Result<Vec<port::SyncWindow>> {
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

    /// Opens the watch stream once and forwards its events until it ends.
    ///
    /// The response head and the first line must arrive within [`RestOptions::first_event`]: for a
    /// named watch Argo CD first sends an `ADDED` event with the Application's current state
    /// (also on a reconnect with `resourceVersion`), and sends nothing at all for an
    /// Application that does not exist or that the token may not read (upstream
    /// `server/application/application.go`, `Watch` and `isApplicationPermitted` at
    /// 37ee0097). A silent stream is therefore cut, and the caller's GET fallback says which.
    async fn stream_once(
        &self,
        name: &str,
        mark: &mut Watermark,
        tx: &mpsc::Sender<Result<port::Application>>,
    ) -> StreamEnd {
        let mut query = vec![("name", name.to_owned())];
        if !mark.resource_version.is_empty() {
            query.push(("resourceVersion", mark.resource_version.clone()));
        }
        let url = self.url(&["api", "v1", "stream", "applications"]);
        debug!(name, resource_version = %mark.resource_version, "argocd watch connecting");
        let first_line_by =
            tokio::time::Instant::now() + self.options.first_event.min(self.options.timeout);
        // No overall timeout: the stream is long-lived. The head and the first line have the
        // first-event timeout, every later chunk the idle timeout. No permit either: a stream lives
        // as long as its watch (see the module documentation).
        let send = self.client.get(url).query(&query).send();
        let response = match tokio::time::timeout_at(first_line_by, send).await {
            Ok(Ok(r)) if r.status().is_success() => r,
            Ok(Ok(r)) => {
                debug!(name, status = %r.status(), "argocd watch refused");
                return StreamEnd::Cut { events: false };
            }
            Ok(Err(e)) => {
                debug!(name, error = %describe(&e), "argocd watch failed");
                return StreamEnd::Cut { events: false };
            }
            Err(_) => {
                debug!(name, "argocd watch timed out");
                return StreamEnd::Cut { events: false };
            }
        };
        let mut body = response.bytes_stream();
        let mut lines = Lines::new(self.options.max_stream_line);
        let mut events = false;
        let mut any_line = false;
        loop {
            let idle = if any_line {
                tokio::time::Instant::now() + self.options.stream_idle
            } else {
                first_line_by
            };
            let next = tokio::select! {
                () = tx.closed() => return StreamEnd::Closed,
                next = tokio::time::timeout_at(idle, body.next()) => next,
            };
            let chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    debug!(name, error = %describe(&e), "argocd watch cut");
                    return StreamEnd::Cut { events };
                }
                Ok(None) => {
                    debug!(name, "argocd watch ended");
                    return StreamEnd::Cut { events };
                }
                Err(_) => {
                    debug!(name, "argocd watch idle; reconnecting");
                    return StreamEnd::Cut { events };
                }
            };
            lines.push(&chunk);
            while let Some(line) = lines.next_line() {
                let line = match line {
                    Ok(line) => line.trim_ascii(),
                    Err(too_long) => {
                        return StreamEnd::Fatal(Error::invalid(format!(
                            "watching application {name} (GET {}): the stream sent {too_long}, the client's limit \
                             (RestOptions::max_stream_line, {}); an Application this large needs a higher limit",
                            self.url(&["api", "v1", "stream", "applications"]).path(),
                            bytes(too_long.limit),
                        )));
                    }
                };
                if line.is_empty() {
                    continue;
                }
                any_line = true;
                let parsed: wire::StreamLine = match serde_json::from_slice(line) {
                    Ok(p) => p,
                    Err(e) => {
                        warn!(name, error = %e, "malformed line on the Argo CD watch stream; reconnecting");
                        return StreamEnd::Cut { events };
                    }
                };
                if let Some(error) = parsed.error {
                    debug!(name, code = error.grpc_code, message = %error.message, "argocd watch error");
                    return StreamEnd::Cut { events };
                }
                let Some(event) = parsed.result else {
                    continue;
                };
                if event.application.name() != name {
                    continue;
                }
                if event.kind == "DELETED" {
                    return StreamEnd::Fatal(Error::NotFound {
                        what: format!("application {name}"),
                        hint: Some("it was deleted while being watched".into()),
                    });
                }
                match self.advance(name, mark, &event.application) {
                    // An older state says nothing about the stream working.
                    Step::Older => continue,
                    Step::Same => {
                        events = true;
                        continue;
                    }
                    Step::Deliver => events = true,
                }
                let app = event.application.to_port(&self.options.tag_parameters);
                if tx.send(Ok(app)).await.is_err() {
                    return StreamEnd::Closed;
                }
            }
        }
    }

    /// The newest resourceVersion of `name` any watch of this client delivered.
    fn seen(&self, name: &str) -> String {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a watch delivers `app`, and if so moves the watermark: not a state it (or an
    /// earlier watch of this client) already delivered, and never one older than that. The
    /// first state of each watch is delivered even when already seen, so every watch starts
    /// with one.
    ///
    /// Argo CD orders resourceVersions as integers (`isApplicationPermitted` drops an
    /// object whose `strconv.Atoi(resourceVersion)` is below the watch's), and a new watch
    /// passes the last one seen: an API server replica whose informer lags behind (several
    /// argocd-server replicas behind a load balancer) then sends nothing older, and the soak
    /// never sees a release it has already left behind.
    fn advance(&self, name: &str, mark: &mut Watermark, app: &wire::Application) -> Step {
        let rv = app.metadata.resource_version.clone().unwrap_or_default();
        let older = match (rv.parse::<u64>(), mark.resource_version.parse::<u64>()) {
            (Ok(new), Ok(old)) => new < old,
            _ => false,
        };
        if older {
            return Step::Older;
        }
        if !rv.is_empty() && rv == mark.resource_version && mark.delivered {
            return Step::Same;
        }
        mark.delivered = true;
        if !rv.is_empty() {
            mark.resource_version.clone_from(&rv);
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned(), rv);
        }
        Step::Deliver
    }

    /// Feeds `tx` until the consumer goes away or the application does. The first item is
    /// the stream's first event (the current state), or, when the stream does not work or
    /// stays silent, a GET's answer.
    async fn follow(self, name: String, tx: mpsc::Sender<Result<port::Application>>) {
        let mut mark = Watermark {
            resource_version: self.seen(&name),
            delivered: false,
        };
        loop {
            let wait = match self.stream_once(&name, &mut mark, &tx).await {
                StreamEnd::Closed => return,
                StreamEnd::Fatal(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                StreamEnd::Cut { events: true } => self.options.reconnect_delay,
                StreamEnd::Cut { events: false } => {
                    // The stream does not work (a proxy that buffers or blocks it, a server
                    // error) or says nothing (the Application is missing or not ours to
                    // read): poll instead, then try streaming again.
                    match self.get_app(&name).await {
                        Ok(app) => {
                            if self.advance(&name, &mut mark, &app) == Step::Deliver {
                                let app = app.to_port(&self.options.tag_parameters);
                                if tx.send(Ok(app)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e @ (Error::NotFound { .. } | Error::Permission { .. })) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        Err(e) => debug!(name, error = %e, "argocd poll failed"),
                    }
                    self.options.poll_interval
                }
            };
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(wait) => {}
            }
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
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(self.clone().follow(name.to_owned(), tx));
        let first = match rx.recv().await {
            Some(Ok(app)) => app,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::transient(format!(
                    "the watch of application {name} ended before its first event"
                )));
            }
        };
        let rest = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(futures::stream::once(async { Ok(first) })
            .chain(rest)
            .boxed())
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
    async fn sync_windows(&self, name: &str) -> Result<port::AppWindows> {
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

#[async_trait]
impl port::ArgoCdInventory for RestArgoCd {
    async fn application_sets(&self) -> Result<Vec<port::ApplicationSet>> {
        let list: wire::ApplicationSetList = self.list("applicationsets").await?;
        Ok(list
            .items
            .iter()
            .map(wire::ApplicationSet::to_port)
            .collect())
    }

    async fn application_set(&self, name: &str) -> Result<port::ApplicationSet> {
        let label = format!("applicationset {name}");
        let target = Target {
            label: label.clone(),
            named: true,
        };
        let bytes = self
            .call(
                Method::GET,
                self.url(&["api", "v1", "applicationsets", name]),
                &[],
                None,
                &target,
            )
            .await?;
        let set: wire::ApplicationSet = decode(&bytes, &label)?;
        Ok(set.to_port())
    }

    async fn clusters(&self) -> Result<Vec<ClusterInfo>> {
        let list: wire::ClusterList = self.list("clusters").await?;
        Ok(list.items.iter().map(wire::Cluster::to_port).collect())
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
    fn server_forms() {
        let check = |server: &str, plaintext: bool, want: &str| {
            assert_eq!(
                server_url(server, plaintext).unwrap().as_str(),
                want,
                "{server}"
            );
        };
        check("argocd.example.com", false, "https://argocd.example.com/");
        check(
            "argocd.example.com:8443",
            false,
            "https://argocd.example.com:8443/",
        );
        check("argocd.example.com", true, "http://argocd.example.com/");
        check("http://127.0.0.1:8080", false, "http://127.0.0.1:8080/");
        check(
            "https://a.example.com/argo-cd/",
            true,
            "http://a.example.com/argo-cd/",
        );
        assert!(server_url("", false).is_err());
        assert!(server_url("ftp://x", false).is_err());
    }

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

    #[test]
    fn errors_map_to_port_kinds() {
        let server = Url::parse("https://argocd.example.com").unwrap();
        let app = Target::app("a");
        let check = |status: u16, body: &str, target: &Target| {
            map_error(
                StatusCode::from_u16(status).unwrap(),
                body.as_bytes(),
                target,
                None,
                &server,
            )
        };
        let e = check(
            400,
            r#"{"error":"x","code":9,"message":"error setting app operation: rpc error: code = FailedPrecondition desc = another operation is already in progress"}"#,
            &app,
        );
        assert!(matches!(e, Error::Collision { .. }), "{e:?}");
        let e = check(
            403,
            r#"{"code":7,"message":"cannot sync: blocked by sync window"}"#,
            &app,
        );
        assert!(matches!(e, Error::BlockedByWindow { .. }), "{e:?}");
        let e = check(
            401,
            r#"{"code":16,"message":"invalid session: token is expired"}"#,
            &app,
        );
        assert!(
            matches!(&e, Error::Permission { message } if message.contains("ARGOCD_AUTH_TOKEN") && message.contains("generate-token")),
            "{e:?}"
        );
        let e = check(403, r#"{"code":7,"message":"permission denied"}"#, &app);
        assert!(
            matches!(&e, Error::NotFound { hint: Some(h), .. } if h.contains("not found or not permitted")),
            "{e:?}"
        );
        let e = check(
            403,
            r#"{"code":7,"message":"permission denied"}"#,
            &Target::list("clusters"),
        );
        assert!(matches!(e, Error::Permission { .. }), "{e:?}");
        let e = check(
            404,
            r#"{"code":5,"message":"applications.argoproj.io \"a\" not found"}"#,
            &app,
        );
        assert!(matches!(e, Error::NotFound { hint: None, .. }), "{e:?}");
        let e = check(
            409,
            r#"{"code":10,"message":"the object has been modified"}"#,
            &app,
        );
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
        let e = check(
            400,
            r#"{"code":9,"message":"rollback cannot be initiated when auto-sync is enabled"}"#,
            &app,
        );
        assert!(matches!(e, Error::Refused { .. }), "{e:?}");
        let e = check(
            400,
            r#"{"code":9,"message":"error resolving repo revision: dial tcp: i/o timeout"}"#,
            &app,
        );
        assert!(matches!(e, Error::Transient { .. }), "{e:?}");
        let e = check(500, "<html>oops</html>", &app);
        assert!(matches!(e, Error::Transient { .. }), "{e:?}");
        let e = check(400, r#"{"code":3,"message":"bad"}"#, &app);
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    }
}
