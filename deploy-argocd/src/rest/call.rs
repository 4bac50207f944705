//! One unary call: timeout, the in-flight limit, retries of transient failures, bounded bodies,
//! and Argo CD's error answers mapped to the port's error kinds.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::{Error, Result};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, trace, warn};

use super::{LOGIN_HINT, RestArgoCd};

/// What a request is about, for error messages.
pub(super) struct Target {
    pub(super) label: String,
    /// A single named object (403 then means "not found or not permitted").
    pub(super) named: bool,
}

impl Target {
    pub(super) fn app(name: &str) -> Self {
        Self {
            label: format!("application {name}"),
            named: true,
        }
    }

    pub(super) fn list(what: &str) -> Self {
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

/// Maps an Argo CD error answer to the port's error kinds.
pub(super) fn map_error(
    status: StatusCode,
    body: &[u8],
    target: &Target,
    retry_after: Option<Duration>,
    server: &Url,
) -> Error {
    let (code, message) = error_text(status, body);
    let label = &target.label;
    let lower = message.to_ascii_lowercase();
    if let Some(e) = operation_refusal(label, &message, &lower) {
        return e;
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
        return failed_precondition(label, &message, &lower);
    }
    if status.is_server_error() {
        return Error::Transient {
            message: format!("{label}: Argo CD answered {status}: {message}"),
            retry_after,
        };
    }
    Error::invalid(format!("{label}: Argo CD answered {status}: {message}"))
}

/// A refusal Argo CD says in words only: another operation in progress, or a sync window.
fn operation_refusal(label: &str, message: &str, lower: &str) -> Option<Error> {
    if lower.contains("another operation is already in progress") {
        return Some(Error::Collision {
            what: label.to_owned(),
        });
    }
    let window =
        || format!("{label}: {message} (a sync window of its project forbids syncing now)");
    // argocd-server's Sync: `PermissionDenied, "cannot sync: blocked by sync window"`
    // (`server/application/application.go`); said typed here, once, for the engine.
    if lower.contains("blocked by sync window") {
        return Some(Error::BlockedByWindow { message: window() });
    }
    lower
        .contains("sync window")
        .then(|| Error::Refused { message: window() })
}

/// The gRPC code (-1 when absent) and the message of an error answer: its `message` or
/// `error`, else the start of the body, else the status.
fn error_text(status: StatusCode, body: &[u8]) -> (i32, String) {
    let parsed: RuntimeError = serde_json::from_slice(body).unwrap_or_default();
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
    (parsed.code.unwrap_or(-1), message)
}

/// gRPC code 9, FailedPrecondition: it covers refusals and repository failures alike (issue
/// #13752), so a repository that did not answer is transient and the rest refused.
fn failed_precondition(label: &str, message: &str, lower: &str) -> Error {
    let transient = ["timeout", "connection refused", "unavailable", "i/o"]
        .iter()
        .any(|w| lower.contains(w));
    if transient {
        Error::transient(format!("{label}: {message}"))
    } else {
        Error::Refused {
            message: format!("{label}: {message}"),
        }
    }
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
pub(super) fn describe(e: &reqwest::Error) -> String {
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
pub(super) fn bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("malformed answer from Argo CD for {what}: {e}")))
}

/// One unary request, as [`RestArgoCd::call`] sends it on every attempt.
struct Request<'a> {
    method: Method,
    url: Url,
    query: &'a [(&'a str, &'a str)],
    body: Option<&'a Value>,
    target: &'a Target,
}

/// Why an attempt did not succeed.
enum Failure {
    /// It will not fix itself: returned at once.
    Final(Error),
    /// It may pass: retried after a backoff of at least the server's `Retry-After`.
    Retry(Error, Option<Duration>),
}

/// A request that got no answer: a refused redirect or an untrusted certificate is final, the
/// rest (connection errors, timeouts) may pass.
fn send_failure(method: &Method, url: &Url, e: &reqwest::Error) -> Failure {
    let detail = describe(e);
    // A refused redirect (a downgrade to http, a loop) will not fix itself.
    if e.is_redirect() {
        return Failure::Final(Error::invalid(format!("{method} {}: {detail}", url.path())));
    }
    // An untrusted certificate will not fix itself: say what to do at once.
    if detail.contains("certificate") || detail.contains("UnknownIssuer") {
        return Failure::Final(Error::Permission {
            message: format!(
                "the TLS certificate of {} is not trusted ({detail}); add its CA to the system trust store \
                 (deploy uses it and the Mozilla roots), or pass --insecure for a test server",
                url.host_str().unwrap_or("the Argo CD server")
            ),
        });
    }
    Failure::Retry(
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

impl RestArgoCd {
    /// One unary call with timeout and retries of transient failures; the body on success.
    pub(super) async fn call(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, &str)],
        body: Option<&Value>,
        target: &Target,
    ) -> Result<Vec<u8>> {
        let request = Request {
            method,
            url,
            query,
            body,
            target,
        };
        let mut attempt = 0;
        loop {
            let (error, after) = match self.attempt(&request, attempt).await {
                Ok(bytes) => return Ok(bytes),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry(error, after)) => (error, after),
            };
            if attempt >= self.options.retries {
                return Err(error);
            }
            let wait = self.backoff(attempt, after);
            let (method, path) = (&request.method, request.url.path());
            warn!(%method, path, attempt, ?wait, %error, "argocd request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt of `request`. It holds a permit from before the request until its body is
    /// read: a retry's backoff does not hold one.
    async fn attempt(&self, request: &Request<'_>, attempt: u32) -> Result<Vec<u8>, Failure> {
        let (method, url) = (&request.method, &request.url);
        let mut builder = self
            .client
            .request(method.clone(), url.clone())
            .timeout(self.options.timeout);
        if !request.query.is_empty() {
            builder = builder.query(request.query);
        }
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        debug!(%method, path = url.path(), attempt, "argocd request");
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => return Err(send_failure(method, url, &e)),
        };
        let status = response.status();
        let after = retry_after(response.headers());
        let body = read_body(response, self.options.max_body).await;
        drop(permit);
        match body {
            Ok(bytes) if status.is_success() => {
                trace!(%method, path = url.path(), %status, len = bytes.len(), "argocd answer");
                Ok(bytes)
            }
            Ok(bytes) => Err(self.refusal(request, status, &bytes, after)),
            Err(BodyError::TooLarge) => Err(Failure::Final(Error::invalid(format!(
                "{method} {}: the answer of Argo CD is larger than the client's limit of {} \
                 (RestOptions::max_body); narrow the request (a label selector for a list) \
                 or raise the limit",
                url.path(),
                bytes(self.options.max_body),
            )))),
            Err(BodyError::Read(e)) => Err(Failure::Retry(
                Error::transient(format!(
                    "{} {}: reading the answer failed: {}",
                    method,
                    url.path(),
                    describe(&e)
                )),
                None,
            )),
        }
    }

    /// An error answer, retried only when it says the trouble passes.
    fn refusal(
        &self,
        request: &Request<'_>,
        status: StatusCode,
        bytes: &[u8],
        after: Option<Duration>,
    ) -> Failure {
        // Argo CD answers 500 ("Unknown") for passing trouble such as a Kubernetes API
        // timeout: safe to repeat for a read, never for a write.
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504)
            || (status.as_u16() == 500 && request.method == Method::GET);
        let error = map_error(status, bytes, request.target, after, &self.base);
        if retryable {
            Failure::Retry(error, after)
        } else {
            let (method, path) = (&request.method, request.url.path());
            debug!(%method, path, %status, "argocd refused");
            Failure::Final(error)
        }
    }

    /// `GET /api/v1/{kind}`, decoded.
    pub(super) async fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<T> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
