//! `deploy watch`: the image-updater loop of [`deploy_engine::watch`], with signals, output,
//! leader election through the environment's lock backend, and metrics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use tokio::sync::watch;

use deploy_core::config::{Config, Environment};
use deploy_engine::watch::{Leader, Poll, WatchEvent, WatchOptions, Watcher, lease_key};

use crate::backends::Backends;
use crate::cli::WatchArgs;
use crate::exit::{Exit, UsageError};
use crate::metrics::Metrics;
use crate::output::Output;

/// The shortest interval between polls; the request rate is bounded by `--registry-rps`
/// whatever the interval.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest interval between polls.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// Runs the loop until Ctrl-C, SIGTERM or SIGHUP (or once).
pub(crate) async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    args: &WatchArgs,
) -> Result<Exit> {
    let env = config.environment(&args.env).map_err(UsageError)?;
    check_args(env, out, args)?;
    let metrics = Arc::new(Metrics::new(&env.name, args.leader_elect));
    if let Some(addr) = args.metrics_addr {
        let bound = crate::metrics::serve(addr, metrics.clone()).await?;
        out.note(format!(
            "metrics on http://{bound}/metrics, health on /healthz"
        ));
        out.record(
            "listening",
            &json!({ "metrics": format!("http://{bound}/metrics") }),
        );
    }
    let lock = if args.leader_elect {
        Some(backends.leader_lock_for(config, env).await?)
    } else {
        None
    };
    let leader = lock.as_deref().map(|lock| {
        let holder = args
            .leader_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| crate::process::holder(&crate::process::actor()).to_string());
        Leader::new(lock, &*backends.clock, lease_key(config, env), holder)
    });
    let (stop_tx, stop) = watch::channel(false);
    let interrupted = stop.clone();
    let signals = tokio::spawn(async move {
        crate::signals::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let opts = WatchOptions {
        interval: args.interval,
        once: args.once,
    };
    let mut last = None;
    let mut polls = 0_u64;
    let mut watcher = Watcher::new(config, env, &*backends.registry, &*backends.argocd);
    let result = watcher
        .run(opts, leader, stop, |event| {
            metrics.observe(&event);
            if let WatchEvent::Polled(poll) = &event {
                polls += 1;
                if let Err(e) = backends.save() {
                    tracing::error!("saving the sandbox: {e:#}");
                }
                report(out, env, poll, last.as_ref());
                last = Some(poll.clone());
            } else {
                report_other(out, &event);
            }
        })
        .await;
    metrics.stopped();
    signals.abort();
    result.map_err(|e| anyhow::Error::new(e).context(format!("watching {}", env.name)))?;
    let stopped = *interrupted.borrow();
    Ok(finish(out, args.once, last, polls, stopped))
}

/// Refuses an interval out of bounds and leader election on a manual environment (exit 2);
/// says that watch only reports on a manual one.
fn check_args(env: &Environment, out: Output, args: &WatchArgs) -> Result<(), UsageError> {
    if args.interval < MIN_INTERVAL {
        return Err(UsageError(format!(
            "--interval must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        )));
    }
    if !env.sync.is_automated() {
        out.note(format!("{} is manual: watch only reports new complete releases and never changes it (use deploy promote)", env.name));
    }
    if args.interval > MAX_INTERVAL {
        return Err(UsageError(format!(
            "--interval must be at most {}",
            humantime::format_duration(MAX_INTERVAL)
        )));
    }
    if args.leader_elect && !env.sync.is_automated() {
        return Err(UsageError(format!(
            "--leader-elect is for automated environments: on {}, which is manual, watch only reports, so run a single replica (the lease would be written to its Applications)",
            env.name
        )));
    }
    Ok(())
}

/// The result line of a watch that ran `polls` polls, the `last` of them, and whether a
/// signal stopped it.
fn finish(out: Output, once: bool, last: Option<Poll>, polls: u64, stopped: bool) -> Exit {
    match (once, last) {
        // A daemon's normal end is a stop (SIGTERM from Kubernetes): exit 0.
        (false, _) => {
            out.note("stopped");
            out.result(&json!({ "stopped": true, "polls": polls }));
        }
        (true, Some(poll)) => out.result(&poll),
        (true, None) if stopped => {
            out.note("interrupted before the poll finished");
            out.result(
                &json!({ "stopped": true, "polls": 0, "exit_code": Exit::Interrupted.code() }),
            );
            return Exit::Interrupted;
        }
        (true, None) => out.result(&json!({ "standby": true })),
    }
    Exit::Success
}

/// A poll, for people (only what changed since `last`) and as a JSON line.
fn report(out: Output, env: &Environment, poll: &Poll, last: Option<&Poll>) {
    out.record("poll", poll);
    let changed = |p: &Poll| (p.newest.clone(), p.incomplete.clone());
    if last.map(changed) != Some(changed(poll)) {
        for check in &poll.incomplete {
            let mut what: Vec<String> = check
                .missing
                .iter()
                .map(|m| format!("{}:{}", m.image, check.tag))
                .collect();
            what.extend(
                check
                    .inconsistent
                    .iter()
                    .map(|s| format!("{s} (digests differ between regions)")),
            );
            out.note(format!(
                "{}: {} is incomplete, not deployed yet: {}",
                env.name,
                check.tag,
                what.join(", ")
            ));
        }
    }
    let Some(release) = &poll.release else {
        // The first poll says where things stand even when there is nothing to do.
        if last.is_none() && poll.incomplete.is_empty() {
            match &poll.newest {
                Some(tag) => out.note(format!(
                    "{}: nothing new; the newest tag, {tag}, is already handled",
                    env.name
                )),
                None => out.note(format!(
                    "{}: no tag of the sentinel repository passes the tag filter yet",
                    env.name
                )),
            }
        }
        return;
    };
    if !env.sync.is_automated() {
        out.note(format!(
            "{}: new complete release {}; promote it with `deploy promote --env {} --tag {}`",
            env.name, release.tag, env.name, release.tag
        ));
    } else if poll.written.is_empty() {
        out.note(format!(
            "{}: release {} is already set everywhere",
            env.name, release.tag
        ));
    } else {
        out.note(format!(
            "{}: release {} written to {} (Argo CD syncs it)",
            env.name,
            release.tag,
            poll.written.join(", ")
        ));
    }
}

fn report_other(out: Output, event: &WatchEvent) {
    match event {
        WatchEvent::Failed { error, retry_in } => {
            tracing::warn!(
                "poll failed ({}): {error}; next try in {}",
                error.kind(),
                humantime::format_duration(*retry_in)
            );
            out.record(
                "error",
                &json!({ "kind": error.kind(), "message": error.to_string(), "retry_in_seconds": retry_in.as_secs_f64() }),
            );
        }
        WatchEvent::Leadership { holder } => {
            match holder {
                None => out.note("leading: this replica polls and writes"),
                Some(h) => out.note(format!("standing by: {h} holds the lease")),
            }
            out.record(
                "leadership",
                &json!({ "leading": holder.is_none(), "holder": holder }),
            );
        }
        WatchEvent::Polled(_) | WatchEvent::Sleeping { .. } => {}
    }
}
