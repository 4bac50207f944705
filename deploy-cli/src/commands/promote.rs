//! `deploy plan`, `deploy promote` and `deploy rollback`: observe, plan, confirm, run the
//! engine with live progress, summarize.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use deploy_core::config::{Config, Environment};
use deploy_core::lock;
use deploy_core::plan::promotion::{Action, Intent, PromotionPlan, plan};
use deploy_core::plan::rollback;
use deploy_core::port::Lease;
use deploy_core::rollout::event::Event;
use deploy_core::trail::{self, RunKind};
use deploy_engine::engine::{Engine, EngineError, Ports, RunOptions, StopRequest};
use deploy_engine::observe::promotion::observe;

mod result;
use crate::backends::Backends;
use crate::cli::{PlanArgs, PromoteArgs, RollbackArgs, RunArgs, parse_tag};
use crate::exit::{Exit, UsageError};
use crate::notify::Notifications;
use crate::output::{Output, table};
pub use result::{NotRun, RunResult, print_summary};

use crate::process::{actor, holder, process_exists};

/// How long running syncs may finish after Ctrl-C.
pub const GRACE: Duration = Duration::from_secs(30);

async fn make_plan(
    config: &Config,
    backends: &Backends,
    env: &Environment,
    intent: Intent,
    cluster: Option<&str>,
) -> Result<PromotionPlan> {
    if matches!(intent, Intent::Promote { tag: None }) && env.promote_from.is_none() {
        return Err(UsageError(format!(
            "environment {} has no promote_from: give the release with --tag",
            env.name
        ))
        .into());
    }
    let mut obs = observe(
        config,
        env,
        intent,
        cluster,
        &*backends.registry,
        &*backends.argocd,
        &*backends.inventory,
    )
    .await
    .with_context(|| format!("reading the state of {}", env.name))?;
    if !backends.annotation_lock(env) {
        obs.lock_carrier = None;
    }
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
        print_waves(out, p, &tag);
    }
    super::checks::print_checks(out, p);
}

/// The plan's waves as a table, one row per Application, and the totals.
fn print_waves(out: Output, p: &PromotionPlan, tag: &str) {
    let mut t = table(&[
        "WAVE",
        "CLUSTER",
        "APPLICATION",
        "NOW",
        "ACTION",
        "ROLLBACK TO",
    ]);
    for w in &p.waves {
        for a in &w.apps {
            let mut action = action_text(&a.action, tag);
            if let Some(by) = &a.foreign_operation {
                action.push_str(&format!(" (after {by}'s operation)"));
            }
            // Said before anything changes: where a failure would take this cluster.
            let back = match (&a.action, a.previous.as_ref().map(|p| p.tags())) {
                (Action::Skip, _) => "-".to_owned(),
                (_, Some(tags)) if tags.len() == 1 => tags[0].clone(),
                _ => "unknown: no earlier release in its history".to_owned(),
            };
            t.add_row(vec![
                w.number.to_string(),
                a.cluster.clone(),
                a.application.clone(),
                a.live.to_string(),
                action,
                back,
            ]);
        }
    }
    out.text(t);
    let again = match p.soaks_again() {
        0 => String::new(),
        n => format!(", {n} soaked again"),
    };
    out.text(format!(
        "  {} change(s){again}; per wave: timeout {}, soak {}",
        p.changes(),
        humantime::format_duration(p.timeout),
        humantime::format_duration(p.soak)
    ));
}

/// What the run will do to one Application, in the plan's words.
fn action_text(action: &Action, tag: &str) -> String {
    match action {
        Action::Skip => "skip: already runs it, Healthy, soaked".to_owned(),
        Action::Soak { .. } => {
            "soak again (at the release, never soaked there: an interrupted run)".to_owned()
        }
        Action::Deploy {
            set_override: Some(v),
            sync: true,
        } => format!("{}, sync, wait", override_text(v, tag)),
        Action::Deploy {
            set_override: None,
            sync: true,
        } => "sync, wait".to_owned(),
        Action::Deploy {
            set_override: Some(v),
            sync: false,
        } => format!("{}, wait for auto-sync", override_text(v, tag)),
        Action::Deploy {
            set_override: None,
            sync: false,
        } => "wait for auto-sync".to_owned(),
    }
}

/// What writing `value` does, shortly: "set image override to r42", or pinned by digest
/// "pin images to r42 digests (api@sha256:abcd1234…, +2)" (Kustomize: the image's last path
/// segment; Helm: "api.image.digest=sha256:abcd1234…", the parameter written). The JSON
/// carries the whole value.
fn override_text(value: &deploy_core::port::OverrideValue, tag: &str) -> String {
    let pins = value.pins();
    let Some((at, digest)) = pins.first() else {
        return format!("set image override to {tag}");
    };
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    let digest = format!("{alg}:{}…", &hex[..hex.len().min(8)]);
    let first = match value {
        deploy_core::port::OverrideValue::Helm { .. } => format!("{at}={digest}"),
        deploy_core::port::OverrideValue::Kustomize { .. } => {
            format!("{}@{digest}", at.rsplit('/').next().unwrap_or(at))
        }
    };
    let more = match pins.len() {
        1 => String::new(),
        n => format!(", +{}", n - 1),
    };
    format!("pin images to {tag} digests ({first}{more})")
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
    let windows =
        deploy_engine::engine::window::plan_windows(&*backends.argocd, &p, backends.clock.now())
            .await;
    super::windows::print_windows(out, &windows);
    out.record("windows", &windows);
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
    let tag = match &args.to {
        Some(t) => parse_tag(t)?,
        None => {
            let mut apps = Vec::new();
            for c in &config.clusters {
                match backends
                    .argocd
                    .application(&config.application_name(env, c))
                    .await
                {
                    Ok(app) => apps.push(app),
                    Err(deploy_core::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(e).context(format!("reading the applications of {}", env.name));
                    }
                }
            }
            // The target comes from Argo CD alone; the trail adds its digests below.
            rollback::target(
                &apps.iter().collect::<Vec<_>>(),
                &env.image_override,
                &[],
                &env.name,
            )
            .map_err(|why| {
                UsageError(format!(
                    "no earlier release of {} is known: {why}; give one with --to",
                    env.name
                ))
            })?
            .tag
        }
    };
    let recorded = recorded_digests(backends, env, &tag).await?;
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

/// The digests `tag` was last deployed with in `env`, from the newest runs of its trail
/// (searched back at most [`trail::SEARCH_RUNS`] runs, reading only until found).
async fn recorded_digests(
    backends: &Backends,
    env: &Environment,
    tag: &deploy_core::model::Tag,
) -> Result<Option<deploy_core::model::Release>> {
    let read = deploy_engine::observe::trail::newest(
        &*backends.audit_for(env),
        &env.name,
        backends.clock.now(),
        trail::SEARCH_RUNS,
        |records| rollback::recorded(records, &env.name, tag).is_some(),
    )
    .await
    .context("reading the audit trail")?;
    crate::output::warn_skipped(&read.warnings);
    Ok(rollback::recorded(&read.items, &env.name, tag))
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
    let result = match not_run(out, env, &p, run)? {
        Some(n) => RunResult::NotRun(n),
        None => run_engine(config, backends, out, env, &p, run, rollback).await?,
    };
    Ok(result.render(out, env, &p, rollback))
}

/// Why the plan is not run, if it is not: a failed gate, a dry run, nothing to do, or no
/// confirmation.
fn not_run(
    out: Output,
    env: &Environment,
    p: &PromotionPlan,
    run: &RunArgs,
) -> Result<Option<NotRun>> {
    if let Some(g) = p.failed_gate() {
        return Ok(Some(NotRun::GateFailed {
            gate: g.clone(),
            changed: 0,
        }));
    }
    if run.dry_run {
        return Ok(Some(NotRun::DryRun {
            plan: Box::new(p.clone()),
        }));
    }
    if p.is_up_to_date() {
        return Ok(Some(NotRun::UpToDate {
            release: p.release.clone(),
        }));
    }
    if !env.sync.is_automated() && !run.yes && !confirm(out, p)? {
        return Ok(Some(NotRun::NotConfirmed));
    }
    Ok(None)
}

/// Runs the plan with live progress, notifications and the interrupt handler.
async fn run_engine(
    config: &Config,
    backends: &Backends,
    out: Output,
    env: &Environment,
    p: &PromotionPlan,
    run: &RunArgs,
    rollback: bool,
) -> Result<RunResult> {
    backends.audit_ready(env)?;
    if backends.audit_is_local(env) {
        out.note(format!(
            "the audit trail of {} is local to this machine ({}); set state = {{ s3 = \"s3://bucket/prefix\" }} in deploy.toml to share it",
            env.name,
            backends
                .audit_path
                .as_ref()
                .map_or_else(|| "no file".to_owned(), |p| p.display().to_string())
        ));
    }
    let audit = backends.audit_for(env);
    let (stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let (opts, our_lease) = run_options(config, backends, env, run, rollback, stop_rx).await;
    let lock = backends.lock_for(config, env).await?;
    let ports = Ports {
        argocd: &*backends.argocd,
        lock: &*lock,
        audit: &*audit,
        clock: &*backends.clock,
        metrics: backends.metrics.as_deref(),
    };
    let kind = match p.intent {
        Intent::Promote { .. } => RunKind::Promote,
        Intent::Rollback { .. } => RunKind::Rollback,
    };
    let mut notifications = Notifications::start(env, kind, &opts.actor, out);
    let engine = Engine::new(ports, opts);
    // The renderer runs on a thread of its own: a terminal or pipe that blocks never stalls
    // the engine's timers or its reaction to a Degraded cluster.
    let (tx, rx) = mpsc::unbounded_channel();
    let renderer = crate::progress::spawn(out, rx);
    let abort = Abort {
        out,
        env,
        plan: p,
        rollback,
        lock: lock.clone(),
        lease: our_lease,
    };
    let signals = abort.on_signals(tx.clone(), stop_tx);
    let on_event = |e: Event| {
        // The sandbox keeps its state in a file: save it as the run goes, so that another
        // command (or a test) sees where the run stands.
        if let Err(e) = backends.save() {
            tracing::warn!("saving the sandbox: {e:#}");
        }
        // Only queues: delivery runs on tasks of its own, off the engine's path.
        notifications.observe(&e, backends.clock.now());
        let _ = tx.send(e);
    };
    let result = tokio::select! {
        r = engine.run(p, on_event) => r,
        () = signals => unreachable!("the signal task exits the process"),
    };
    drop(tx);
    renderer.finish();
    // At most `notify::FLUSH` more; what is still unsent then is given up, with a warning.
    notifications
        .finish(result.as_ref().ok(), backends.clock.now())
        .await;
    match result {
        Ok(report) => {
            backends.save()?;
            Ok(RunResult::Ran(Box::new(report)))
        }
        Err(e) => not_started(env, e),
    }
}

/// The options of this run, and the lease it will hold (for the abort to release).
async fn run_options(
    config: &Config,
    backends: &Backends,
    env: &Environment,
    run: &RunArgs,
    rollback: bool,
    stop: watch::Receiver<StopRequest>,
) -> (RunOptions, Lease) {
    let mut actor = actor();
    actor.argocd_user = backends.argocd_user().await;
    let run_id = format!(
        "{}-{}",
        backends.clock.now().strftime("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    let our_lease = Lease {
        key: lock::key(&config.app, &env.name),
        holder: holder(&actor).to_string(),
        expires_at: jiff::Timestamp::UNIX_EPOCH,
    };
    let opts = RunOptions {
        run_id,
        holder: our_lease.holder.clone(),
        actor,
        lock_key: our_lease.key.clone(),
        rollback_on_failure: rollback,
        stop: Some(stop),
        grace: GRACE,
        process_exists: cfg!(target_os = "linux").then_some(process_exists as fn(u32) -> bool),
        window_wait: run.window_wait,
        lock_backend: lock_backend(config, env),
    };
    (opts, our_lease)
}

/// What the interrupts do: the first stops new syncs, the second stops waiting for running
/// ones, the third aborts the process (releasing the lock, within a bound).
struct Abort<'a> {
    out: Output,
    env: &'a Environment,
    plan: &'a PromotionPlan,
    rollback: bool,
    lock: std::sync::Arc<dyn deploy_core::port::Lock>,
    lease: Lease,
}

impl Abort<'_> {
    async fn on_signals(
        self,
        events: mpsc::UnboundedSender<Event>,
        stop: watch::Sender<StopRequest>,
    ) {
        crate::signals::wait_for_signal().await;
        let _ = events.send(Event::Interrupting);
        let _ = stop.send(StopRequest::Graceful);
        crate::signals::wait_for_signal().await;
        crate::output::stderr_line(
            "second interrupt: no longer waiting for running syncs; recording where each cluster stands (a third aborts at once)",
        );
        let _ = stop.send(StopRequest::Now);
        crate::signals::wait_for_signal().await;
        crate::output::stderr_line(
            "third interrupt: aborting now; run `deploy status` to see where each cluster stands, then the same command again to resume",
        );
        // Leave the lock to the next run, but do not hang on it.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.lock.release(&self.lease)).await;
        let aborted = RunResult::NotRun(NotRun::Interrupted {
            message: "aborted by a third interrupt".to_owned(),
            exit_code: Exit::Interrupted.code(),
        });
        let exit = aborted.render(self.out, self.env, self.plan, self.rollback);
        crate::output::finish(Some(Duration::from_secs(1)));
        std::process::exit(i32::from(exit.code()));
    }
}

/// The result of a run the engine did not start: a sync window says so as a result; a held
/// lock and anything else end the command with an error.
fn not_started(env: &Environment, e: EngineError) -> Result<RunResult> {
    match e {
        EngineError::Locked { ref holder, .. } => {
            let unlock = deploy_core::lock::command(&env.name, holder);
            Err(anyhow::Error::new(e).context(format!(
                "another promotion holds the lock; if that run is gone (its machine lost, its process killed), remove it: {unlock} (add --force before it expires)"
            )))
        }
        EngineError::WindowBlocked(blocked) => Ok(RunResult::NotRun(NotRun::WindowBlocked {
            blocked,
            changed: 0,
        })),
        e => Err(e.into()),
    }
}

/// Where the promotion lock of `env` lives, in words, for the message of a run halted
/// because it could not hold it.
fn lock_backend(config: &Config, env: &Environment) -> String {
    use deploy_core::config::LockBackend;
    match env.state.as_ref() {
        Some(s) if s.lock == LockBackend::S3 => s.s3.as_ref().map_or_else(
            || "S3".to_owned(),
            |u| format!("s3://{}/{}", u.bucket, u.key(&env.name, "lock.json")),
        ),
        Some(s) if s.lock == LockBackend::Kubernetes => {
            format!("a Kubernetes Lease in {}", config.argocd.namespace)
        }
        _ => String::new(),
    }
}

fn verb(p: &PromotionPlan) -> &'static str {
    match p.intent {
        Intent::Promote { .. } => "promote",
        Intent::Rollback { .. } => "rollback",
    }
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
    crate::output::prompt(format_args!(
        "{} {} application(s) of {} to {tag} in {} wave(s)? Type yes to go on: ",
        verb(p),
        p.changes(),
        p.environment,
        p.waves.len()
    ));
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    Ok(answer.trim().eq_ignore_ascii_case("yes") || answer.trim().eq_ignore_ascii_case("y"))
}
