//! `deploy plan`, `deploy promote` and `deploy rollback`: observe, plan, confirm, run the
//! engine with live progress, summarize.

#![allow(clippy::print_stderr)]

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use deploy_core::config::{Config, Environment};
use deploy_core::engine::{AppState, Engine, EngineError, Event, Ports, RunOptions, RunReport};
use deploy_core::plan::live::{LiveTag, live_tag, service_images};
use deploy_core::plan::promotion::{
    Action, Intent, PromotionPlan, observe, plan, previous_release,
};
use deploy_core::port::Lease;
use deploy_core::trail::{Actor, Outcome};

use super::release::parse_tag;
use crate::backends::Backends;
use crate::cli::{PlanArgs, PromoteArgs, RollbackArgs, RunArgs};
use crate::exit::{Exit, UsageError};
use crate::output::{Output, table};

/// How long running syncs may finish after Ctrl-C.
pub const GRACE: Duration = Duration::from_secs(30);

async fn make_plan(
    config: &Config,
    backends: &Backends,
    env: &Environment,
    intent: Intent,
    cluster: Option<&str>,
) -> Result<PromotionPlan> {
    let obs = observe(
        config,
        env,
        intent,
        cluster,
        &*backends.registry,
        &*backends.argocd,
    )
    .await
    .with_context(|| format!("reading the state of {}", env.name))?;
    Ok(plan(config, env, &obs))
}

/// Prints the gates, the release's digests and the waves.
pub fn print_plan(out: Output, p: &PromotionPlan) {
    let verb = match &p.intent {
        Intent::Promote { .. } => "promote",
        Intent::Rollback { .. } => "roll back",
    };
    let tag = p
        .release
        .as_ref()
        .map_or("?".to_owned(), |r| r.tag.to_string());
    match &p.release {
        Some(_) => out.text(format!("plan: {verb} {} to {tag}", p.environment)),
        None => out.text(format!(
            "plan: {verb} {}: no release to deploy (see the failed gate)",
            p.environment
        )),
    }
    for (i, g) in p.gates.iter().enumerate() {
        out.text(format!(
            "  {} gate {}: {}: {}",
            if g.passed { "✓" } else { "✗" },
            i + 1,
            g.name,
            g.summary
        ));
        if !g.passed {
            for d in g.details.iter().skip(1) {
                out.text(format!("        {d}"));
            }
        }
    }
    if let Some(r) = &p.release {
        let digests: Vec<String> = r
            .digests
            .iter()
            .map(|(s, d)| format!("{s} {}", d.short()))
            .collect();
        out.text(format!("  release {}: {}", r.tag, digests.join(", ")));
    }
    if !p.waves.is_empty() {
        let mut t = table(&["WAVE", "CLUSTER", "APPLICATION", "NOW", "ACTION"]);
        for w in &p.waves {
            for a in &w.apps {
                let mut action = match &a.action {
                    Action::Skip => "skip: already runs it, Healthy".to_owned(),
                    Action::Deploy {
                        set_override: Some(_),
                        sync: true,
                    } => format!("set image override to {tag}, sync, wait"),
                    Action::Deploy {
                        set_override: None,
                        sync: true,
                    } => "sync, wait".to_owned(),
                    Action::Deploy {
                        set_override: Some(_),
                        sync: false,
                    } => format!("set image override to {tag}, wait for auto-sync"),
                    Action::Deploy {
                        set_override: None,
                        sync: false,
                    } => "wait for auto-sync".to_owned(),
                };
                if let Some(by) = &a.foreign_operation {
                    action.push_str(&format!(" (after {by}'s operation)"));
                }
                t.add_row(vec![
                    w.number.to_string(),
                    a.cluster.clone(),
                    a.application.clone(),
                    a.live.to_string(),
                    action,
                ]);
            }
        }
        out.text(t);
        out.text(format!(
            "  {} change(s); per wave: timeout {}, soak {}",
            p.changes(),
            humantime::format_duration(p.timeout),
            humantime::format_duration(p.soak)
        ));
    }
}

/// `deploy plan`: exit 0 when every gate passes, 3 when one fails.
pub async fn plan_cmd(
    config: &Config,
    backends: &Backends,
    out: Output,
    args: &PlanArgs,
) -> Result<Exit> {
    let env = config.environment(&args.env).map_err(UsageError)?;
    let tag = args.tag.as_deref().map(parse_tag).transpose()?;
    let p = make_plan(config, backends, env, Intent::Promote { tag }, None).await?;
    print_plan(out, &p);
    out.result(&p);
    Ok(if p.is_go() {
        Exit::Success
    } else {
        Exit::GateNotMet
    })
}

/// `deploy promote`.
pub async fn promote(
    config: &Config,
    backends: &Backends,
    out: Output,
    args: &PromoteArgs,
) -> Result<Exit> {
    let env = config.environment(&args.plan.env).map_err(UsageError)?;
    let tag = args.plan.tag.as_deref().map(parse_tag).transpose()?;
    let p = make_plan(config, backends, env, Intent::Promote { tag }, None).await?;
    execute(config, backends, out, env, p, &args.run, !args.no_rollback).await
}

/// `deploy rollback`.
pub async fn rollback(
    config: &Config,
    backends: &Backends,
    out: Output,
    args: &RollbackArgs,
) -> Result<Exit> {
    let env = config.environment(&args.env).map_err(UsageError)?;
    if let Some(c) = &args.cluster
        && config.cluster(c).is_none()
    {
        return Err(UsageError(format!("no cluster {c:?} in the configuration")).into());
    }
    let (tag, recorded) = match &args.to {
        Some(t) => {
            let tag = parse_tag(t)?;
            let records = backends
                .audit
                .records()
                .await
                .context("reading the audit trail")?;
            let recorded = records
                .iter()
                .rev()
                .find(|r| r.environment == env.name && r.release.tag == tag)
                .map(|r| r.release.clone());
            (tag, recorded)
        }
        None => {
            let records = backends
                .audit
                .records()
                .await
                .context("reading the audit trail")?;
            let mut apps = Vec::new();
            let mut live = Vec::new();
            for c in &config.clusters {
                if let Ok(app) = backends
                    .argocd
                    .application(&config.application_name(env, c))
                    .await
                {
                    live.push(live_tag(&app, &service_images(config, env, c)));
                    apps.push(app);
                }
            }
            let current = match live.first() {
                Some(LiveTag::Tag(t)) if live.iter().all(|l| l == &live[0]) => Some(t.clone()),
                _ => None,
            };
            previous_release(&records, &env.name, current.as_deref(), &apps.iter().collect::<Vec<_>>(), &env.image_override).ok_or_else(
                || UsageError(format!("no earlier release of {} is known (audit trail and Argo CD history are empty); give one with --to", env.name)),
            )?
        }
    };
    let p = make_plan(
        config,
        backends,
        env,
        Intent::Rollback { tag, recorded },
        args.cluster.as_deref(),
    )
    .await?;
    execute(config, backends, out, env, p, &args.run, true).await
}

async fn execute(
    config: &Config,
    backends: &Backends,
    out: Output,
    env: &Environment,
    p: PromotionPlan,
    run: &RunArgs,
    rollback: bool,
) -> Result<Exit> {
    print_plan(out, &p);
    out.record("plan", &p);
    if let Some(g) = p.failed_gate() {
        out.text(format!(
            "not promoted: gate \"{}\" is not met; nothing was changed",
            g.name
        ));
        out.result(&serde_json::json!({ "outcome": "gate_failed", "gate": g, "changed": 0 }));
        return Ok(Exit::GateNotMet);
    }
    if run.dry_run {
        out.text("dry run: nothing was changed");
        out.result(&serde_json::json!({ "outcome": "dry_run", "plan": p }));
        return Ok(Exit::Success);
    }
    let release = p.release.clone().expect("a go plan has a release");
    if p.changes() == 0 {
        out.text(format!(
            "nothing to do: every application of {} already runs {}, Healthy",
            env.name, release.tag
        ));
        out.result(&serde_json::json!({ "outcome": Outcome::UpToDate, "release": release }));
        return Ok(Exit::Success);
    }
    if !env.sync.is_automated() && !run.yes && !confirm(out, &p)? {
        out.text("not confirmed: nothing was changed");
        out.result(&serde_json::json!({ "outcome": "not_confirmed" }));
        return Ok(Exit::Success);
    }

    backends.audit_ready()?;
    let mut actor = actor();
    actor.argocd_user = backends.argocd_user().await;
    let lock = backends.lock_for(config, env)?;
    let run_id = format!(
        "{}-{}",
        backends.clock.now().strftime("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (tx, rx) = mpsc::unbounded_channel();
    let lock_key = format!("deploy-{}-{}", config.app, env.name);
    let our_lease = Lease {
        key: lock_key.clone(),
        holder: holder(&actor),
        expires_at: jiff::Timestamp::UNIX_EPOCH,
    };
    let opts = RunOptions {
        run_id,
        holder: our_lease.holder.clone(),
        actor,
        lock_key: lock_key.clone(),
        rollback_on_failure: rollback,
        cancel: Some(cancel_rx),
        grace: GRACE,
    };
    let ports = Ports {
        argocd: &*backends.argocd,
        lock: &*lock,
        audit: &*backends.audit,
        clock: &*backends.clock,
    };
    // Weak, so that the renderer ends when the engine drops its sender.
    let signals_tx = tx.downgrade();
    let engine = Engine::new(ports, opts, tx);
    let save = || {
        if let Err(e) = backends.save() {
            tracing::warn!("saving the sandbox: {e:#}");
        }
    };
    let renderer = crate::progress::render(out, rx, save);
    let abort_lock = lock.clone();
    let signals = async move {
        wait_for_signal().await;
        if let Some(tx) = signals_tx.upgrade() {
            let _ = tx.send(Event::Interrupting);
        }
        let _ = cancel_tx.send(true);
        wait_for_signal().await;
        eprintln!(
            "second interrupt: aborting now; run `deploy status` to see where each cluster stands, then the same command again to resume"
        );
        // Leave the lock to the next run (CI cancels with SIGINT then SIGTERM on a machine
        // that will not come back), but do not hang on it.
        let _ = tokio::time::timeout(Duration::from_secs(3), abort_lock.release(&our_lease)).await;
        out.result(&serde_json::json!({ "outcome": Outcome::Interrupted, "message": "aborted by a second interrupt", "exit_code": Exit::Interrupted.code() }));
        std::process::exit(i32::from(Exit::Interrupted.code()));
    };
    let run = async {
        let mut r = engine.run(&p).await;
        if let Err(EngineError::Locked {
            holder, expires_at, ..
        }) = &r
            && holder_is_gone(holder)
        {
            // A run on this machine was killed and left its lease behind: take it over.
            tracing::warn!("the lock holder ({holder}) is no longer running; taking over its lock");
            let stale = Lease {
                key: lock_key.clone(),
                holder: holder.clone(),
                expires_at: expires_at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            };
            if lock.release(&stale).await.is_ok() {
                r = engine.run(&p).await;
            }
        }
        drop(engine);
        r
    };
    let (result, ()) = tokio::select! {
        r = async { tokio::join!(run, renderer) } => r,
        () = signals => unreachable!("the signal task exits the process"),
    };
    let report = result?;
    backends.save()?;
    print_summary(out, &report);
    if report.outcome == Outcome::Interrupted {
        out.note(format!(
            "interrupted: run `deploy {} --env {}` again to resume; finished clusters are skipped",
            verb(&p),
            env.name
        ));
    }
    out.result(&report);
    Ok(Exit::of_outcome(report.outcome))
}

fn verb(p: &PromotionPlan) -> &'static str {
    match p.intent {
        Intent::Promote { .. } => "promote",
        Intent::Rollback { .. } => "rollback",
    }
}

/// Prints the per-cluster summary table.
pub fn print_summary(out: Output, report: &RunReport) {
    let mut t = table(&[
        "WAVE",
        "CLUSTER",
        "APPLICATION",
        "FROM",
        "TO",
        "RESULT",
        "TIME",
    ]);
    for a in &report.apps {
        let state = match &a.state {
            AppState::Skipped => "skipped (already there)".to_owned(),
            AppState::Deployed => "deployed, Healthy".to_owned(),
            AppState::Failed(r) => format!("FAILED: {r}"),
            AppState::RolledBack => format!("rolled back to {}", a.from),
            AppState::RollbackFailed(r) => format!("ROLLBACK FAILED: {r}"),
            AppState::NotStarted => "not started".to_owned(),
            AppState::Interrupted => "interrupted".to_owned(),
        };
        t.add_row(vec![
            a.wave.to_string(),
            a.cluster.clone(),
            a.application.clone(),
            a.from.clone(),
            a.to.clone(),
            state,
            format!("{:.1}s", a.elapsed_ms as f64 / 1000.0),
        ]);
    }
    out.text(t);
    out.text(format!("{:?}: {}", report.outcome, report.message));
}

fn confirm(out: Output, p: &PromotionPlan) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() || out.json() {
        return Err(UsageError(format!(
            "{} is a manual environment: confirm on a terminal, or pass --yes (CI) after reviewing `deploy plan --env {}`",
            p.environment, p.environment
        ))
        .into());
    }
    let tag = p
        .release
        .as_ref()
        .map(|r| r.tag.to_string())
        .unwrap_or_default();
    eprint!(
        "{} {} application(s) of {} to {tag} in {} wave(s)? Type yes to go on: ",
        verb(p),
        p.changes(),
        p.environment,
        p.waves.len()
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    Ok(answer.trim().eq_ignore_ascii_case("yes") || answer.trim().eq_ignore_ascii_case("y"))
}

/// This host's name.
fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The lock holder identity of this process: `user@host pid N boot B pidns P`. The boot id
/// and PID namespace make "that process is gone" decidable from this process only when both
/// run in the same kernel boot and PID namespace.
pub fn holder(actor: &Actor) -> String {
    format!(
        "{}@{} pid {} {}",
        actor.os_user,
        host(),
        std::process::id(),
        process_scope()
    )
}

/// `boot B pidns P`: which kernel boot and PID namespace a pid belongs to.
fn process_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pidns: String = pidns.chars().filter(char::is_ascii_digit).collect();
    format!(
        "boot {} pidns {}",
        boot.trim().get(..8).unwrap_or("unknown"),
        if pidns.is_empty() { "unknown" } else { &pidns }
    )
}

/// Whether `holder` names a process of this user, on this host, in this boot and PID
/// namespace, that no longer exists. Anything else (another user, whose processes `hidepid`
/// may hide; another machine; another namespace) is never judged gone.
pub fn holder_is_gone(holder: &str) -> bool {
    let ours = self::holder(&actor());
    let (Some((who, rest)), Some((our_who, our_rest))) =
        (holder.split_once(" pid "), ours.split_once(" pid "))
    else {
        return false;
    };
    let (Some((pid, scope)), Some((_, our_scope))) =
        (rest.split_once(' '), our_rest.split_once(' '))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    cfg!(target_os = "linux")
        && who == our_who
        && scope == our_scope
        && !scope.contains("unknown")
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Who runs this: the OS user.
pub fn actor() -> Actor {
    let os_user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor {
        os_user,
        argocd_user: None,
    }
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_holders() {
        let me = holder(&actor());
        assert!(!holder_is_gone(&me), "this process is alive");
        let dead = me.replace(&format!("pid {}", std::process::id()), "pid 4294967295");
        assert_eq!(holder_is_gone(&dead), cfg!(target_os = "linux"));
        assert!(
            !holder_is_gone("bob@elsewhere pid 4294967295"),
            "another host is never judged"
        );
        assert!(!holder_is_gone("garbage"));
    }
}
