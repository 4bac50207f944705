//! The notification adapter: sends deploy-core's [`Notice`]s to Slack incoming webhooks and
//! to generic webhooks (the JSON body signed with HMAC-SHA256), off the engine's path.
//!
//! A [`Dispatcher`] owns one queue and one task per [`Channel`]: [`Dispatcher::send`] never
//! blocks (it is called from the engine's event callback), each channel delivers its notices
//! in order, retries a failed one a few times with jittered pauses ([`Retry`]), and reports
//! every [`Delivery`] to a callback. [`Dispatcher::flush`] waits for what is queued, at most
//! for a bound, then gives up: a notification never fails or holds up a promotion.

// Nothing is `pub` unless the crate exports it: every other item says `pub(crate)` or less.
#![warn(unreachable_pub)]
// No function over about 80 lines (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deploy_core::notify::{Moment, Notice};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The header carrying a webhook body's signature: `sha256=<hex of HMAC-SHA256(secret, body)>`,
/// as GitHub's `X-Hub-Signature-256`.
pub const SIGNATURE_HEADER: &str = "X-Deploy-Signature";
/// The header naming what a webhook body announces: `started`, `wave_done` or `finished`.
pub const NOTICE_HEADER: &str = "X-Deploy-Notice";

/// Where notices go.
pub struct Channel {
    label: String,
    url: SecretString,
    /// The signing secret of a generic webhook; `None` for Slack.
    secret: Option<SecretString>,
}

impl Channel {
    /// A Slack incoming webhook (its URL is a secret); `label` names it in reports.
    pub fn slack(label: impl Into<String>, url: SecretString) -> Self {
        Self {
            label: label.into(),
            url,
            secret: None,
        }
    }

    /// A generic webhook receiving the engine's events, signed with `secret`.
    pub fn webhook(label: impl Into<String>, url: impl Into<String>, secret: SecretString) -> Self {
        Self {
            label: label.into(),
            url: SecretString::from(url.into()),
            secret: Some(secret),
        }
    }

    /// How reports name it (never its URL when that is a secret).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The body and extra headers of `notice` for this channel.
    fn request(&self, notice: &Notice) -> (Vec<u8>, Vec<(&'static str, String)>) {
        match &self.secret {
            None => (notice.slack.to_string().into_bytes(), Vec::new()),
            Some(secret) => {
                let body = notice.webhook.to_string().into_bytes();
                let moment = match notice.moment {
                    Moment::Started => "started",
                    Moment::WaveDone => "wave_done",
                    Moment::Finished => "finished",
                };
                let headers = vec![
                    (SIGNATURE_HEADER, signature(secret, &body)),
                    (NOTICE_HEADER, moment.to_owned()),
                ];
                (body, headers)
            }
        }
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("label", &self.label)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` under `secret`, compared in constant time:
/// what a receiver does before trusting a body.
pub fn verify(secret: &SecretString, body: &[u8], header: &str) -> bool {
    let Some(sig) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// How hard to try one notice.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all (the first and the retries).
    pub attempts: u32,
    /// The ceiling of the first retry's pause; it doubles per retry up to `max_pause`. Each
    /// pause is a uniform draw below its ceiling ("full jitter").
    pub first_pause: Duration,
    /// The largest pause.
    pub max_pause: Duration,
    /// One request's limit, connecting included: a hanging endpoint costs at most this.
    pub request_timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
        }
    }
}

impl Retry {
    /// The pause before retry `n` (1 for the first retry).
    fn pause(&self, n: u32) -> Duration {
        let ceiling = self
            .first_pause
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(self.max_pause);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// What became of one notice on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The channel's label.
    pub channel: String,
    /// What the notice announced.
    pub notice: Moment,
    /// The run.
    pub run_id: String,
    /// It was accepted (a 2xx answer).
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was not delivered (the last attempt's error), if it was not.
    pub error: Option<String>,
}

/// Posts `notice` to `channel`, retrying a connection error, a timeout, a 408, a 429 or a 5xx
/// answer; any other answer is final (a 404 from a revoked Slack webhook will not heal).
pub async fn deliver(
    client: &reqwest::Client,
    channel: &Channel,
    notice: &Notice,
    retry: &Retry,
) -> Delivery {
    let (body, headers) = channel.request(notice);
    let mut attempts = 0;
    let error = loop {
        attempts += 1;
        let mut req = client
            .post(channel.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(retry.request_timeout)
            .body(body.clone());
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let (error, transient) = match req.send().await {
            Ok(r) if r.status().is_success() => break None,
            Ok(r) => {
                let s = r.status();
                let transient = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
                (format!("the endpoint answered {s}"), transient)
            }
            // Without the URL: a Slack webhook's URL is its secret.
            Err(e) => (error_chain(&e.without_url()), true),
        };
        if !transient || attempts >= retry.attempts.max(1) {
            break Some(error);
        }
        tracing::debug!(
            "notification to {} failed ({error}); trying again",
            channel.label
        );
        tokio::time::sleep(retry.pause(attempts)).await;
    };
    Delivery {
        channel: channel.label.clone(),
        notice: notice.moment,
        run_id: notice.run_id.clone(),
        delivered: error.is_none(),
        attempts,
        error,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

/// What [`Dispatcher::flush`] left undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Notices still queued or in flight when the bound ran out (given up).
    pub abandoned: usize,
}

/// Sends notices in the background, one ordered queue per channel.
pub struct Dispatcher {
    queues: Vec<mpsc::UnboundedSender<Arc<Notice>>>,
    tasks: Vec<JoinHandle<()>>,
    pending: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("channels", &self.queues.len())
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl Dispatcher {
    /// Starts one task per channel (on the current tokio runtime); `report` hears every
    /// [`Delivery`], from those tasks, so it must not block: a report that waits (on a stdout
    /// nobody reads, say) holds a runtime worker, and enough of them stall the whole runtime.
    pub fn start(
        channels: Vec<Channel>,
        retry: Retry,
        report: impl Fn(Delivery) + Send + Sync + 'static,
    ) -> Self {
        // reqwest takes rustls's process-wide crypto provider and has none of its own here
        // (Cargo.toml): the workspace's, aws-lc-rs, unless the process installed one already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(retry.request_timeout)
            .user_agent(concat!("deploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let report: Arc<dyn Fn(Delivery) + Send + Sync> = Arc::new(report);
        let pending = Arc::new(AtomicUsize::new(0));
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for channel in channels {
            let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Notice>>();
            let (client, report, pending) = (client.clone(), report.clone(), pending.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(notice) = rx.recv().await {
                    let d = deliver(&client, &channel, &notice, &retry).await;
                    pending.fetch_sub(1, Ordering::SeqCst);
                    report(d);
                }
            }));
            queues.push(tx);
        }
        Self {
            queues,
            tasks,
            pending,
        }
    }

    /// Queues `notice` on every channel; never blocks.
    pub fn send(&self, notice: Notice) {
        let notice = Arc::new(notice);
        for q in &self.queues {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if q.send(notice.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits until every queued notice is delivered or has failed, for at most `within`;
    /// then gives up on the rest.
    pub async fn flush(self, within: Duration) -> Flushed {
        drop(self.queues);
        let mut tasks = self.tasks;
        let all = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            for t in &tasks {
                t.abort();
            }
        }
        Flushed {
            abandoned: self.pending.load(Ordering::SeqCst),
        }
    }
}
