//! `deploy audit`: live policy findings.

use anyhow::{Context, Result};

use deploy_core::check::show_values;
use deploy_core::config::Config;
use deploy_core::plan::findings::{CheckProbe, Finding, ProbeAnswer, Severity, findings};
use deploy_engine::observe::findings::observe;
use deploy_engine::observe::findings::observe_checks;

use crate::backends::Backends;
use crate::exit::{Exit, UsageError};
use crate::output::{Output, table};

/// Prints every finding; exit 1 when there is an error finding.
pub(crate) async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    only: Option<&str>,
) -> Result<Exit> {
    let envs = config.select_environments(only).map_err(UsageError)?;
    let mut all = Vec::new();
    let mut probes = Vec::new();
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
        if let Some(metrics) = backends.metrics.as_deref() {
            input.checks = observe_checks(config, env, &input.apps, metrics).await;
        }
        for p in &input.checks {
            let probe = serde_json::json!({
                "environment": env.name,
                "cluster": p.cluster,
                "check": p.check,
                "answer": p.answer,
            });
            out.record("check_probe", &probe);
            probes.push((env.name.clone(), p.clone(), probe));
        }
        for f in findings(config, env, &input) {
            out.record("finding", &f);
            all.push(f);
        }
    }
    let errors = all.iter().filter(|f| f.severity == Severity::Error).count();
    print_probes(out, &probes);
    print_findings(out, &all, errors);
    let probes: Vec<&serde_json::Value> = probes.iter().map(|(_, _, j)| j).collect();
    out.result(&serde_json::json!({ "findings": all, "errors": errors, "checks": probes }));
    Ok(if errors > 0 {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// What each check measures now; a value its conditions reject is the service's state, not a
/// finding.
fn print_probes(out: Output, probes: &[(String, CheckProbe, serde_json::Value)]) {
    if probes.is_empty() {
        return;
    }
    let mut t = table(&["ENV", "CHECK", "CLUSTER", "MEASURED NOW"]);
    for (env, p, _) in probes {
        t.add_row(vec![
            env.clone(),
            p.check.name.clone(),
            p.cluster.clone(),
            match &p.answer {
                ProbeAnswer::Values(v) => show_values(v),
                ProbeAnswer::Unreachable(_) => "no answer".to_owned(),
                ProbeAnswer::Rejected(_) => "rejected".to_owned(),
                ProbeAnswer::Denied(_) => "access denied".to_owned(),
            },
        ]);
    }
    out.text(t);
}

/// The findings, their fixes, and the count (`errors` of them errors).
fn print_findings(out: Output, all: &[Finding], errors: usize) {
    if all.is_empty() {
        out.text("no findings: sync policies, ignore rules, preserved annotations, replication, tag mutability, clusters and checks are as the configuration says");
        return;
    }
    let mut t = table(&["SEVERITY", "ENV", "SUBJECT", "FINDING"]);
    for f in all {
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
