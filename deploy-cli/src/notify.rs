//! The notifications of one run: the environment's `notify` targets as channels (secrets
//! read from the environment into types that never print), the announcer fed from the
//! engine's event callback, and every failed delivery reported on stderr (and, in JSON
//! mode, each delivery as a `notification` line).
//!
//! Reports come from the channels' tokio tasks, so they only queue (through
//! [`crate::output`]): a report never waits for stdout or stderr (issue 17, N1). A URL is
//! named by [`url_label`] only: config validation refuses a user name or password in it, and
//! a token in its later path segments or query never reaches the output.

use std::time::Duration;

use deploy_core::config::{Environment, NotifyTarget, SlackUrl};
use deploy_core::notify::Announcer;
use deploy_core::rollout::event::{Event, RunReport};
use deploy_core::trail::{Actor, RunKind};
use deploy_notify::{Channel, Delivery, Dispatcher, Retry};
use secrecy::SecretString;

use crate::output::{Output, url_label};

/// How long the end of a command waits for notifications still queued or in flight, then
/// gives up on them: the most a dead or hanging endpoint adds to a promotion.
pub const FLUSH: Duration = Duration::from_secs(5);

/// The notifications of one run; a no-op when the environment configures none.
#[derive(Debug)]
pub struct Notifications {
    announcer: Announcer,
    dispatcher: Option<Dispatcher>,
}

impl Notifications {
    /// Starts the channels of `env` (a target whose secret is not set is skipped, with a
    /// warning: a notification never stops a promotion).
    pub fn start(env: &Environment, kind: RunKind, actor: &Actor, out: Output) -> Self {
        let channels: Vec<Channel> = env.notify.iter().filter_map(channel).collect();
        let dispatcher = (!channels.is_empty())
            .then(|| Dispatcher::start(channels, Retry::default(), move |d| report(out, &d)));
        Self {
            announcer: Announcer::new(kind, actor.clone()),
            dispatcher,
        }
    }

    /// Queues the notices `event` makes; never blocks.
    pub fn observe(&mut self, event: &Event, at: jiff::Timestamp) {
        if let Some(d) = &self.dispatcher {
            for n in self.announcer.observe(event, at) {
                d.send(n);
            }
        }
    }

    /// Queues the end's notice (when the run took the lock and has a report), then waits at
    /// most [`FLUSH`] for every notice to be delivered or to fail.
    pub async fn finish(mut self, report: Option<&RunReport>, at: jiff::Timestamp) {
        let Some(d) = self.dispatcher.take() else {
            return;
        };
        if let Some(r) = report {
            d.send(self.announcer.finished(r, at));
        }
        let flushed = d.flush(FLUSH).await;
        if flushed.abandoned > 0 {
            tracing::warn!(
                "gave up on {} notification(s) still unsent after {}; the outcome stands",
                flushed.abandoned,
                humantime::format_duration(FLUSH)
            );
        }
    }
}

/// The channel of `target`, or `None` (warned) when its secret is not set.
fn channel(target: &NotifyTarget) -> Option<Channel> {
    let secret = |var: &str| match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_owned())),
        _ => {
            tracing::warn!(
                "notifications through {var} are off: the environment variable {var} is not set"
            );
            None
        }
    };
    match target {
        NotifyTarget::Slack {
            url: SlackUrl::Env(var),
        } => Some(Channel::slack(format!("slack ({var})"), secret(var)?)),
        NotifyTarget::Slack {
            url: SlackUrl::Literal(url),
        } => Some(Channel::slack(
            format!("slack {}", url_label(url)),
            SecretString::from(url.clone()),
        )),
        NotifyTarget::Webhook { url, secret_env } => Some(Channel::webhook(
            format!("webhook {}", url_label(url)),
            url.clone(),
            secret(secret_env)?,
        )),
    }
}

/// A delivery: a `notification` line in JSON mode; a warning on stderr when it failed.
/// Runs on a channel's task: both only queue.
fn report(out: Output, d: &Delivery) {
    out.record("notification", d);
    let notice = serde_json::to_value(d.notice).unwrap_or_default();
    let notice = notice.as_str().unwrap_or("notice");
    match &d.error {
        None => tracing::debug!(
            "notification ({notice}) delivered to {} after {} attempt(s)",
            d.channel,
            d.attempts
        ),
        Some(e) => tracing::warn!(
            "notification ({notice}) to {} failed after {} attempt(s): {e}; the promotion goes on",
            d.channel,
            d.attempts
        ),
    }
}
