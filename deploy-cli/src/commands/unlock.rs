//! `deploy unlock`: shows an environment's promotion lock and removes one left by a run that
//! is gone (Terraform's `force-unlock`), only if it is still the lock of that id, and a live
//! one only with `--force`; who unlocked is appended to the audit trail.

use anyhow::{Context, Result};
use deploy_core::config::{Config, Environment};
use deploy_core::lock;
use deploy_core::lock::{Refusal, UnlockError, age};
use deploy_core::model::{Release, Tag};
use deploy_core::port::{Lock, LockState};
use deploy_core::trail::{Actor, AuditRecord, Outcome, RunKind};
use deploy_engine::unlock::unlock;
use jiff::Timestamp;
use serde::Serialize;

use crate::backends::Backends;
use crate::cli::UnlockArgs;
use crate::exit::{Exit, UsageError};
use crate::output::Output;

/// The release field of an unlock's audit record, which names no release.
const NO_RELEASE: &str = "none";

/// The lock as `deploy unlock` shows it.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    key: &'a str,
    holder: &'a str,
    id: String,
    acquired_at: Option<Timestamp>,
    renewed_at: Option<Timestamp>,
    expires_at: Timestamp,
    expired: bool,
}

fn shown(state: &LockState, now: Timestamp) -> Shown<'_> {
    Shown {
        key: &state.lease.key,
        holder: &state.lease.holder,
        id: state.id(),
        acquired_at: state.acquired_at,
        renewed_at: state.renewed_at,
        expires_at: state.lease.expires_at,
        expired: state.lease.expires_at <= now,
    }
}

/// `t` with how long ago (or until) it is from `now`.
fn when(t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    if d.is_negative() {
        format!("{t} ({} ago)", age(d))
    } else {
        format!("{t} (in {})", age(d))
    }
}

fn print(out: &Output, env: &str, state: &LockState, now: Timestamp) {
    let s = shown(state, now);
    out.text(format!("promotion lock {} of {env}", s.key));
    out.text(format!("  holder   {}", s.holder));
    out.text(format!("  id       {}", s.id));
    if let Some(t) = s.acquired_at {
        out.text(format!("  taken    {}", when(t, now)));
    }
    if let Some(t) = s.renewed_at {
        out.text(format!("  renewed  {}", when(t, now)));
    }
    out.text(format!(
        "  expires  {}{}",
        when(s.expires_at, now),
        if s.expired { ": expired" } else { "" }
    ));
}

/// Shows the lock of `--env`; with `--id`, removes it.
pub(crate) async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    args: &UnlockArgs,
) -> Result<Exit> {
    let env = config.environment(&args.env).map_err(UsageError)?;
    let key = lock::key(&config.app, &env.name);
    let port = backends.lock_for(config, env).await?;
    let now = backends.clock.now();
    let Some(id) = args.id.as_deref() else {
        // Only show it, with the command that removes it.
        return show(&*port, out, env, &key, now).await;
    };
    backends.audit_ready(env)?;
    let removed = match unlock(&*port, &key, id, args.force, now).await {
        Ok(state) => state,
        Err(UnlockError::Refused(Refusal::NotHeld { .. })) => {
            out.text(format!(
                "no promotion lock on {}: nothing to remove",
                env.name
            ));
            out.result(&serde_json::json!({ "outcome": "not_held" }));
            return Ok(Exit::Success);
        }
        Err(e @ (UnlockError::Refused(_) | UnlockError::Changed { .. })) => {
            if let Some(state) = port.inspect(&key).await.ok().flatten() {
                print(&out, &env.name, &state, now);
            }
            out.text(format!("not unlocked: {e}"));
            out.result(&serde_json::json!({
                "outcome": "refused",
                "reason": e.to_string(),
            }));
            return Ok(Exit::Locked);
        }
        Err(UnlockError::Port(e)) => {
            return Err(anyhow::Error::new(e)
                .context(format!("removing the promotion lock of {}", env.name)));
        }
    };
    print(&out, &env.name, &removed, now);
    let mut actor = crate::process::actor();
    actor.argocd_user = backends.argocd_user().await;
    let record = unlock_record(env, &key, &removed, actor, now);
    let message = record.message.clone();
    backends.audit_for(env).append(&record).await.context(
        "the lock was removed, but the audit record of who removed it could not be written",
    )?;
    backends.save()?;
    out.text(format!("unlocked: {message}"));
    out.result(&serde_json::json!({
        "outcome": "unlocked",
        "lock": shown(&removed, now),
        "by": record.actor,
    }));
    Ok(Exit::Success)
}

/// Shows the lock `key` of `env`, with the command that removes it.
async fn show(
    port: &dyn Lock,
    out: Output,
    env: &Environment,
    key: &str,
    now: Timestamp,
) -> Result<Exit> {
    let state = port
        .inspect(key)
        .await
        .with_context(|| format!("reading the promotion lock of {}", env.name))?;
    match &state {
        None => out.text(format!("no promotion lock on {}", env.name)),
        Some(s) => {
            print(&out, &env.name, s, now);
            out.note(format!(
                "if that run is gone: {}{}",
                deploy_core::lock::command(&env.name, &s.lease.holder),
                if s.lease.expires_at > now {
                    " --force"
                } else {
                    ""
                }
            ));
        }
    }
    out.result(&serde_json::json!({
        "outcome": if state.is_some() { "held" } else { "not_held" },
        "lock": state.as_ref().map(|s| shown(s, now)),
    }));
    Ok(Exit::Success)
}

/// The audit record of `actor` removing the lock `key` of `env`, `removed`.
fn unlock_record(
    env: &Environment,
    key: &str,
    removed: &LockState,
    actor: Actor,
    now: Timestamp,
) -> AuditRecord {
    let message = format!(
        "{actor} removed the promotion lock {key} of {} (id {}, {})",
        removed.lease.holder,
        removed.id(),
        if removed.lease.expires_at <= now {
            format!("expired at {}", removed.lease.expires_at)
        } else {
            format!("live until {}, --force", removed.lease.expires_at)
        }
    );
    AuditRecord {
        run_id: format!(
            "unlock-{}-{}",
            now.strftime("%Y%m%dT%H%M%SZ"),
            std::process::id()
        ),
        kind: RunKind::Unlock,
        environment: env.name.clone(),
        actor,
        release: Release {
            tag: Tag::new(NO_RELEASE).expect("a valid tag"),
            digests: Default::default(),
        },
        previous: Default::default(),
        changed: Vec::new(),
        skipped: Vec::new(),
        started_at: now,
        finished_at: now,
        outcome: Outcome::Unlocked,
        message,
        checks: Vec::new(),
        apps: Vec::new(),
    }
}
