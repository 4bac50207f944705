//! `deploy watch --metrics-addr`: Prometheus metrics on `/metrics` (OpenMetrics text) and a
//! liveness check on `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use deploy_engine::watch::WatchEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
}

/// The watch loop's metrics, all labelled with the environment.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    polls: Counter,
    releases: Counter,
    incomplete: Counter,
    written: Counter,
    errors: Family<ErrorLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    leader: Gauge,
    running: AtomicBool,
    /// Unix milliseconds by which the loop must report again to be alive.
    alive_until: AtomicU64,
}

/// How long past its announced wake-up the loop may stay silent (a poll in flight, retries
/// included) before `/healthz` calls it stuck.
const HEALTH_GRACE: Duration = Duration::from_secs(300);

impl Metrics {
    /// Metrics of the watcher of `env`; `elected`: with leader election.
    pub(crate) fn new(env: &str, elected: bool) -> Self {
        let mut root = Registry::with_prefix("deploy_watch");
        let registry = root.sub_registry_with_label(("environment".into(), env.to_owned().into()));
        let m = Self {
            registry: Registry::default(),
            polls: Counter::default(),
            releases: Counter::default(),
            incomplete: Counter::default(),
            written: Counter::default(),
            errors: Family::default(),
            last_success: Gauge::default(),
            leader: Gauge::default(),
            running: AtomicBool::new(true),
            alive_until: AtomicU64::new(0),
        };
        m.leader.set(i64::from(!elected));
        m.alive_for(Duration::ZERO);
        registry.register(
            "polls",
            "Polls of the sentinel repository that finished",
            m.polls.clone(),
        );
        registry.register(
            "releases_detected",
            "New complete releases found (written to an automated environment, reported for a manual one)",
            m.releases.clone(),
        );
        registry.register(
            "incomplete_checks",
            "Release checks that found a candidate incomplete (an image missing, or digests differing between regions)",
            m.incomplete.clone(),
        );
        registry.register(
            "updates_written",
            "Image overrides written to Applications",
            m.written.clone(),
        );
        registry.register(
            "errors",
            "Failed polls and lease operations, by kind",
            m.errors.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the last poll finished, in seconds since the Unix epoch (0: none yet)",
            m.last_success.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica polls (leading, or no leader election), 0 while it stands by",
            m.leader.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// Counts what `event` says.
    pub(crate) fn observe(&self, event: &WatchEvent) {
        match event {
            WatchEvent::Polled(poll) => {
                self.polls.inc();
                self.releases.inc_by(u64::from(poll.release.is_some()));
                self.incomplete.inc_by(poll.incomplete.len() as u64);
                self.written.inc_by(poll.written.len() as u64);
                self.last_success
                    .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
                self.leader.set(1);
            }
            WatchEvent::Failed { error, .. } => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        kind: error.kind().to_owned(),
                    })
                    .inc();
            }
            WatchEvent::Leadership { holder } => {
                self.leader.set(i64::from(holder.is_none()));
            }
            WatchEvent::Sleeping { next } => self.alive_for(*next),
        }
    }

    fn alive_for(&self, next: Duration) {
        let until = now_ms()
            .saturating_add(u64::try_from((next + HEALTH_GRACE).as_millis()).unwrap_or(u64::MAX));
        self.alive_until.store(until, Ordering::SeqCst);
    }

    /// The loop has stopped: `/healthz` answers 503 from now on.
    pub(crate) fn stopped(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Binds `addr` and serves `metrics` in the background; returns the bound address.
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for --metrics-addr"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

async fn metrics_page(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the metrics failed: {e}"),
        ),
    }
}

/// 200 while the loop runs (leading or standing by, polls failing or not: alert on
/// `deploy_watch_last_success_timestamp_seconds` and `deploy_watch_errors_total` for
/// those); 503 once it has stopped, or when it has been silent for [`HEALTH_GRACE`] past
/// the time it said it would wake up (stuck).
async fn healthz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if !m.running.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n")
    } else if now_ms() > m.alive_until.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stuck: the watch loop has not reported in time\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

fn now_ms() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_engine::watch::Poll;

    #[test]
    fn counts_are_encoded_with_the_environment() {
        let m = Metrics::new("staging", false);
        m.observe(&WatchEvent::Polled(Poll {
            written: vec!["a".into(), "b".into()],
            ..Poll::default()
        }));
        m.observe(&WatchEvent::Failed {
            error: deploy_core::Error::transient("ThrottlingException"),
            retry_in: std::time::Duration::from_secs(1),
        });
        let text = m.encode().unwrap();
        for line in [
            "deploy_watch_polls_total{environment=\"staging\"} 1",
            "deploy_watch_updates_written_total{environment=\"staging\"} 2",
            "deploy_watch_releases_detected_total{environment=\"staging\"} 0",
            "deploy_watch_errors_total{environment=\"staging\",kind=\"transient\"} 1",
            "deploy_watch_leader{environment=\"staging\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
