//! `deploy status`: which release runs where.

use anyhow::Result;
use futures::future::join_all;
use serde::Serialize;

use deploy_core::config::{Cluster, Config, Environment};
use deploy_core::model::annotation;
use deploy_core::plan::live::{live_tag, promoted, service_images};
use deploy_core::plan::promotion::desired;
use deploy_core::port::Application;
use deploy_core::trail::{self, AuditRecord};
use deploy_engine::observe::release::newest_complete;

use crate::backends::Backends;
use crate::exit::Exit;
use crate::output::{Output, table};

/// One environment × cluster.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    environment: String,
    cluster: String,
    application: String,
    desired: Option<String>,
    live: Option<String>,
    sync: Option<String>,
    health: Option<String>,
    operation: Option<String>,
    promoted_by: Option<String>,
    promoted_at: Option<String>,
    promoted_release: Option<String>,
}

/// One environment's registry summary.
#[derive(Debug, Serialize)]
pub(crate) struct EnvSummary {
    environment: String,
    sync: String,
    newest_complete_release: Option<String>,
    registry_error: Option<String>,
    /// The promotion lock, when someone holds it.
    lock: Option<HeldLock>,
}

/// Who holds an environment's promotion lock, with the id `deploy unlock --id` takes.
#[derive(Debug, Serialize)]
pub(crate) struct HeldLock {
    holder: String,
    id: String,
    expires_at: jiff::Timestamp,
}

/// The promotion lock of `env`, when held; a lock that cannot be read is a warning, not a
/// failed status.
async fn held_lock(
    config: &Config,
    backends: &Backends,
    env: &deploy_core::config::Environment,
) -> Option<HeldLock> {
    let key = deploy_core::lock::key(&config.app, &env.name);
    let read = async {
        let lock = backends.lock_for(config, env).await?;
        anyhow::Ok(lock.inspect(&key).await?)
    };
    match read.await {
        Ok(state) => state.map(|s| HeldLock {
            id: s.id(),
            holder: s.lease.holder,
            expires_at: s.lease.expires_at,
        }),
        Err(e) => {
            tracing::warn!("reading the promotion lock of {}: {e:#}", env.name);
            None
        }
    }
}

/// The audit records that say who promoted a cluster whose Application does not (an
/// ApplicationSet without preservedFields drops the annotations): none read when every
/// Application says it, else the newest runs until each such cluster is found, at most
/// [`trail::SEARCH_RUNS`]. A trail that cannot be read costs only this column.
async fn promoters(
    backends: &Backends,
    env: &Environment,
    config: &Config,
    apps: &[deploy_core::Result<Application>],
) -> Vec<AuditRecord> {
    let unsaid: Vec<&str> = config
        .clusters
        .iter()
        .zip(apps)
        .filter(|(_, app)| {
            app.as_ref()
                .is_ok_and(|a| !a.annotations.contains_key(annotation::BY))
        })
        .map(|(c, _)| c.name.as_str())
        .collect();
    if unsaid.is_empty() {
        return Vec::new();
    }
    let read = deploy_engine::observe::trail::newest(
        &*backends.audit_for(env),
        &env.name,
        backends.clock.now(),
        trail::SEARCH_RUNS,
        |records| {
            unsaid
                .iter()
                .all(|c| promoted(None, records, &env.name, c).is_some())
        },
    )
    .await;
    match read {
        Ok(read) => {
            crate::output::warn_skipped(&read.warnings);
            read.items
        }
        Err(e) => {
            tracing::warn!("reading the audit trail of {}: {e}", env.name);
            Vec::new()
        }
    }
}

/// Reads every Application of the chosen environments and prints the table.
pub(crate) async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    only: Option<&str>,
) -> Result<Exit> {
    let envs = config
        .select_environments(only)
        .map_err(crate::exit::UsageError)?;
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    for env in envs {
        for row in env_rows(config, backends, env).await? {
            out.record("application", &row);
            rows.push(row);
        }
        summaries.push(summary(config, backends, env).await);
    }
    print(out, &rows, &summaries);
    out.result(&serde_json::json!({ "applications": rows, "environments": summaries }));
    Ok(Exit::Success)
}

/// The rows of `env`'s Applications, one per cluster.
async fn env_rows(config: &Config, backends: &Backends, env: &Environment) -> Result<Vec<Row>> {
    let names: Vec<String> = config
        .clusters
        .iter()
        .map(|c| config.application_name(env, c))
        .collect();
    let apps = join_all(names.iter().map(|n| backends.argocd.application(n))).await;
    let records = promoters(backends, env, config, &apps).await;
    let mut rows = Vec::new();
    for ((cluster, name), app) in config.clusters.iter().zip(names).zip(apps) {
        let promotion = promoted(app.as_ref().ok(), &records, &env.name, &cluster.name);
        let mut row = match app {
            Ok(app) => Row::of(config, env, cluster, name, &app),
            Err(e) if e.is_not_found() => Row {
                health: Some("not found".into()),
                ..Row::empty(env, cluster, name)
            },
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading application {name}")));
            }
        };
        if let Some(p) = promotion {
            row.promoted_by = Some(p.by);
            row.promoted_at = Some(p.at).filter(|a| !a.is_empty());
            row.promoted_release = Some(p.release).filter(|r| !r.is_empty());
        }
        rows.push(row);
    }
    Ok(rows)
}

impl Row {
    /// The row of `cluster`'s Application `name`, with nothing known.
    fn empty(env: &Environment, cluster: &Cluster, name: String) -> Self {
        Self {
            environment: env.name.clone(),
            cluster: cluster.name.clone(),
            application: name,
            desired: None,
            live: None,
            sync: None,
            health: None,
            operation: None,
            promoted_by: None,
            promoted_at: None,
            promoted_release: None,
        }
    }

    /// The row of `cluster`'s Application `name`, read as `app`.
    fn of(
        config: &Config,
        env: &Environment,
        cluster: &Cluster,
        name: String,
        app: &Application,
    ) -> Self {
        let images = service_images(config, env, cluster);
        let image_names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
        let operation = app.operation_state.as_ref().map(|s| {
            let by = s.initiated_by.as_deref().unwrap_or("?");
            if app.operation_pending {
                format!("{} ({by})", s.phase)
            } else {
                s.phase.to_string()
            }
        });
        Self {
            desired: Some(desired(app, env, &image_names).to_string()),
            live: Some(live_tag(app, &images).to_string()),
            sync: Some(app.sync_status.to_string()),
            health: Some(app.health.to_string()),
            operation,
            promoted_by: app.annotations.get(annotation::BY).cloned(),
            promoted_at: app.annotations.get(annotation::AT).cloned(),
            promoted_release: app.annotations.get(annotation::RELEASE).cloned(),
            ..Self::empty(env, cluster, name)
        }
    }
}

/// `env`'s newest complete release in its registry, and its promotion lock.
async fn summary(config: &Config, backends: &Backends, env: &Environment) -> EnvSummary {
    let (newest, registry_error) = match newest_complete(&*backends.registry, config, env).await {
        Ok((c, _)) => (c.map(|c| c.tag.to_string()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    EnvSummary {
        environment: env.name.clone(),
        sync: env.sync.to_string(),
        newest_complete_release: newest,
        registry_error,
        lock: held_lock(config, backends, env).await,
    }
}

/// The table of Applications, then a line (or two) per environment.
fn print(out: Output, rows: &[Row], summaries: &[EnvSummary]) {
    let mut t = table(&[
        "ENV",
        "CLUSTER",
        "APPLICATION",
        "DESIRED",
        "LIVE",
        "SYNC",
        "HEALTH",
        "OPERATION",
        "PROMOTED",
    ]);
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for r in rows {
        let promoted = match (&r.promoted_by, &r.promoted_at) {
            (Some(by), Some(at)) => format!("{by}, {}", at.split('.').next().unwrap_or(at)),
            _ => "-".into(),
        };
        t.add_row(vec![
            r.environment.clone(),
            r.cluster.clone(),
            r.application.clone(),
            dash(&r.desired),
            dash(&r.live),
            dash(&r.sync),
            dash(&r.health),
            dash(&r.operation),
            promoted,
        ]);
    }
    out.text(t);
    for s in summaries {
        let newest = match (&s.newest_complete_release, &s.registry_error) {
            (_, Some(e)) => format!("registry unreachable: {e}"),
            (Some(t), None) => t.clone(),
            (None, None) => "none".into(),
        };
        out.text(format!(
            "{}: sync {}, newest complete release in its registry: {newest}",
            s.environment, s.sync
        ));
        if let Some(l) = &s.lock {
            out.text(format!(
                "{}: promotion lock held by {} (id {}) until {}; `deploy unlock --env {}` shows it",
                s.environment, l.holder, l.id, l.expires_at, s.environment
            ));
        }
    }
}
