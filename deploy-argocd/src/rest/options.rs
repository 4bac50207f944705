//! How the client times out, retries and watches ([`RestOptions`]), and the server's base URL
//! ([`server_url`]).

use std::time::Duration;

use deploy_core::{Error, Result};
use reqwest::Url;

use crate::wire::TagParameters;

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

pub(super) fn no_server() -> Error {
    Error::invalid(
        "no Argo CD server: set [argocd] server in deploy.toml, --argocd-server or ARGOCD_SERVER",
    )
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
}
