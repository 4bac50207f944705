//! `deploy history`: the promotions and rollbacks of an environment, newest first, from its
//! state store (S3 with `state.s3`, else the audit trail on this machine).

use anyhow::{Context, Result};
use deploy_core::plan::history::{HistoryRow, history, result_text};

use crate::backends::Backends;
use crate::exit::{Exit, UsageError};
use crate::output::{Output, table};
use deploy_core::config::{Config, Environment};

/// Reads the chosen environments' trails and prints one row per run.
pub(crate) async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    only: Option<&str>,
    limit: Option<usize>,
) -> Result<Exit> {
    let envs = config.select_environments(only).map_err(UsageError)?;
    let mut rows: Vec<HistoryRow> = Vec::new();
    let mut sources = Vec::new();
    let mut warnings = Vec::new();
    for env in envs {
        // Only the newest `limit` runs are read: a listing finds them, one GET each.
        let read = deploy_engine::observe::trail::newest(
            &*backends.audit_for(env),
            &env.name,
            backends.clock.now(),
            limit.unwrap_or(usize::MAX),
            |_| false,
        )
        .await
        .with_context(|| format!("reading the audit trail of {}", env.name))?;
        crate::output::warn_skipped(&read.warnings);
        warnings.extend(read.warnings);
        let from_store = history(&read.items, &env.name, None);
        let source = if from_store.is_empty() && backends.argocd_missing.is_none() {
            // Nothing recorded: what Argo CD's history of the Applications says.
            rows.extend(from_argocd(config, backends, env).await);
            "argocd"
        } else {
            rows.extend(from_store);
            "store"
        };
        sources.push(serde_json::json!({
            "environment": env.name,
            "from": source,
            "store": store_name(backends, env),
        }));
    }
    rows.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
    if let Some(n) = limit {
        rows.truncate(n);
    }
    for r in &rows {
        out.record("run", r);
    }
    print(out, &rows);
    out.result(
        &serde_json::json!({ "runs": rows.len(), "sources": sources, "warnings": warnings }),
    );
    Ok(Exit::Success)
}

/// The runs of `env` that Argo CD's history of its Applications shows.
async fn from_argocd(config: &Config, backends: &Backends, env: &Environment) -> Vec<HistoryRow> {
    let mut apps = Vec::new();
    for c in &config.clusters {
        if let Ok(app) = backends
            .argocd
            .application(&config.application_name(env, c))
            .await
        {
            apps.push((c.name.clone(), app));
        }
    }
    let apps: Vec<(&str, &deploy_core::port::Application)> =
        apps.iter().map(|(c, a)| (c.as_str(), a)).collect();
    deploy_core::plan::history::from_argocd(&env.name, &apps, &env.image_override, None)
}

/// Where `env`'s trail is kept, in words.
fn store_name(backends: &Backends, env: &Environment) -> String {
    match backends.state.get(&env.name) {
        Some(store) => store.location().to_string(),
        None if backends.sandbox.is_some() => "sandbox".to_owned(),
        None => backends
            .audit_path
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
    }
}

/// The table of runs, or the line that says there are none.
fn print(out: Output, rows: &[HistoryRow]) {
    if rows.is_empty() {
        out.text("no promotions or rollbacks recorded");
        return;
    }
    let mut t = table(&[
        "STARTED", "ENV", "KIND", "BY", "RELEASE", "CLUSTERS", "OUTCOME", "DURATION",
    ]);
    for r in rows {
        t.add_row(vec![
            r.started_at.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
            r.environment.clone(),
            format!("{:?}", r.kind).to_lowercase(),
            r.actor.to_string(),
            release_cell(r),
            clusters_cell(r),
            r.outcome_text(),
            r.duration.map_or_else(
                || "-".into(),
                |d| humantime::format_duration(round(d)).to_string(),
            ),
        ]);
    }
    out.text(t);
}

/// The release's tag, then one line per service digest.
fn release_cell(r: &HistoryRow) -> String {
    let digests: Vec<String> = r
        .release
        .digests
        .iter()
        .map(|(service, d)| {
            let d = d.as_str();
            format!("{service} {}", &d[..d.len().min(19)])
        })
        .collect();
    if digests.is_empty() {
        r.release.tag.to_string()
    } else {
        format!("{}\n{}", r.release.tag, digests.join("\n"))
    }
}

/// Where each cluster was left (a half-finished rollback says which), else the clusters.
fn clusters_cell(r: &HistoryRow) -> String {
    if !r.apps.is_empty() {
        r.apps
            .iter()
            .map(|a| format!("{}: {}", a.cluster, result_text(a)))
            .collect::<Vec<_>>()
            .join("\n")
    } else if r.clusters.is_empty() {
        "-".into()
    } else {
        r.clusters.join(", ")
    }
}

/// Whole seconds: a duration to read, not to measure.
fn round(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}
