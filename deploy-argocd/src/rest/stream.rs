//! The watch: the NDJSON stream of one Application, reconnected from the last
//! resourceVersion and never going back to an older state, with a GET fallback.

use std::ops::ControlFlow;
use std::sync::PoisonError;

use deploy_core::port::{self, AppStream};
use deploy_core::{Error, Result};
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::RestArgoCd;
use super::call::{bytes, describe};
use super::lines::{LineTooLong, Lines};
use crate::wire;

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
    /// [`ArgoCd::watch`](deploy_core::port::ArgoCd::watch): follows the stream on a task of
    /// its own and returns once the first state is in.
    pub(super) async fn open_watch(&self, name: &str) -> Result<AppStream> {
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
        let first_line_by =
            tokio::time::Instant::now() + self.options.first_event.min(self.options.timeout);
        let response = match self.open_stream(name, mark, first_line_by).await {
            Ok(response) => response,
            Err(end) => return end,
        };
        let mut body = response.bytes_stream();
        let mut lines = Lines::new(self.options.max_stream_line);
        let mut events = false;
        let mut any_line = false;
        loop {
            // The first line has the first-event deadline, every later chunk the idle timeout.
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
                    Err(too_long) => return StreamEnd::Fatal(self.too_long(name, &too_long)),
                };
                if line.is_empty() {
                    continue;
                }
                any_line = true;
                if let ControlFlow::Break(end) =
                    self.on_line(name, line, mark, tx, &mut events).await
                {
                    return end;
                }
            }
        }
    }

    /// The response head of the stream, by `first_line_by`. No overall timeout: the stream is
    /// long-lived. No permit either: a stream lives as long as its watch (see the module
    /// documentation of `rest`).
    async fn open_stream(
        &self,
        name: &str,
        mark: &Watermark,
        first_line_by: tokio::time::Instant,
    ) -> Result<reqwest::Response, StreamEnd> {
        let mut query = vec![("name", name.to_owned())];
        if !mark.resource_version.is_empty() {
            query.push(("resourceVersion", mark.resource_version.clone()));
        }
        let url = self.url(&["api", "v1", "stream", "applications"]);
        debug!(name, resource_version = %mark.resource_version, "argocd watch connecting");
        let send = self.client.get(url).query(&query).send();
        match tokio::time::timeout_at(first_line_by, send).await {
            Ok(Ok(r)) if r.status().is_success() => Ok(r),
            Ok(Ok(r)) => {
                debug!(name, status = %r.status(), "argocd watch refused");
                Err(StreamEnd::Cut { events: false })
            }
            Ok(Err(e)) => {
                debug!(name, error = %describe(&e), "argocd watch failed");
                Err(StreamEnd::Cut { events: false })
            }
            Err(_) => {
                debug!(name, "argocd watch timed out");
                Err(StreamEnd::Cut { events: false })
            }
        }
    }

    /// The error that ends a watch whose stream sent a line over the limit.
    fn too_long(&self, name: &str, too_long: &LineTooLong) -> Error {
        Error::invalid(format!(
            "watching application {name} (GET {}): the stream sent {too_long}, the client's limit \
             (RestOptions::max_stream_line, {}); an Application this large needs a higher limit",
            self.url(&["api", "v1", "stream", "applications"]).path(),
            bytes(too_long.limit),
        ))
    }

    /// One non-empty line of the stream: its event passed on when new (`events` then tells
    /// that the stream works), or how the stream ends.
    async fn on_line(
        &self,
        name: &str,
        line: &[u8],
        mark: &mut Watermark,
        tx: &mpsc::Sender<Result<port::Application>>,
        events: &mut bool,
    ) -> ControlFlow<StreamEnd> {
        let cut = StreamEnd::Cut { events: *events };
        let parsed: wire::StreamLine = match serde_json::from_slice(line) {
            Ok(p) => p,
            Err(e) => {
                warn!(name, error = %e, "malformed line on the Argo CD watch stream; reconnecting");
                return ControlFlow::Break(cut);
            }
        };
        if let Some(error) = parsed.error {
            debug!(name, code = error.grpc_code, message = %error.message, "argocd watch error");
            return ControlFlow::Break(cut);
        }
        let Some(event) = parsed.result else {
            return ControlFlow::Continue(());
        };
        if event.application.name() != name {
            return ControlFlow::Continue(());
        }
        if event.kind == "DELETED" {
            return ControlFlow::Break(StreamEnd::Fatal(Error::NotFound {
                what: format!("application {name}"),
                hint: Some("it was deleted while being watched".into()),
            }));
        }
        match self.advance(name, mark, &event.application) {
            // An older state says nothing about the stream working.
            Step::Older => return ControlFlow::Continue(()),
            Step::Same => {
                *events = true;
                return ControlFlow::Continue(());
            }
            Step::Deliver => *events = true,
        }
        let app = event.application.to_port(&self.options.tag_parameters);
        if tx.send(Ok(app)).await.is_err() {
            return ControlFlow::Break(StreamEnd::Closed);
        }
        ControlFlow::Continue(())
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
