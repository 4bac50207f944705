//! `deploy audit`: live policy findings.

use anyhow::{Context, Result};

use deploy_core::config::Config;
use deploy_core::plan::findings::{Severity, findings, observe};

use crate::backends::Backends;
use crate::exit::{Exit, UsageError};
use crate::output::{Output, table};

/// Prints every finding; exit 1 when there is an error finding.
pub async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    only: Option<&str>,
) -> Result<Exit> {
    let envs = config.select_environments(only).map_err(UsageError)?;
    let mut all = Vec::new();
    for env in envs {
        let mut input = observe(
            config,
            env,
            &*backends.registry,
            &*backends.argocd,
            &*backends.inventory,
        )
        .await
        .with_context(|| format!("reading the state of {}", env.name))?;
        if !backends.annotation_lock(env) {
            input.lock_carrier = None;
        }
        for f in findings(config, env, &input) {
            out.record("finding", &f);
            all.push(f);
        }
    }
    let errors = all.iter().filter(|f| f.severity == Severity::Error).count();
    if all.is_empty() {
        out.text("no findings: sync policies, ignore rules, preserved annotations, replication, tag mutability and clusters are as the configuration says");
    } else {
        let mut t = table(&["SEVERITY", "ENV", "SUBJECT", "FINDING"]);
        for f in &all {
            t.add_row(vec![
                f.severity.to_string(),
                f.environment.clone(),
                f.subject.clone(),
                f.message.clone(),
            ]);
        }
        out.text(t);
        for f in all.iter().filter(|f| !f.fix.is_empty()) {
            out.text(format!("fix for {} ({}):", f.subject, f.environment));
            for line in &f.fix {
                out.text(format!("  {line}"));
            }
        }
        out.text(format!(
            "{errors} error(s), {} warning(s)",
            all.len() - errors
        ));
    }
    out.result(&serde_json::json!({ "findings": all, "errors": errors }));
    Ok(if errors > 0 {
        Exit::Failed
    } else {
        Exit::Success
    })
}
