//! `deploy sandbox ...`: act on the sandbox's simulated world (CI pushes, breakage, a check's
//! simulated metric, reset).

use std::path::Path;

use anyhow::Result;

use deploy_core::config::{Config, Environment};
use deploy_core::plan::build::{Push, push_order};
use deploy_core::sim::Script;
use deploy_engine::memory::build_digest;

use crate::backends::{Backends, SANDBOX_DIR, Sandbox};
use crate::cli::parse_tag;
use crate::cli::{Breakage, SandboxCommand};
use crate::exit::{Exit, UsageError};
use crate::output::Output;

/// Runs a sandbox command.
pub(crate) fn run(
    config: &Config,
    backends: Option<&Backends>,
    out: Output,
    cmd: &SandboxCommand,
) -> Result<Exit> {
    if let SandboxCommand::Reset = cmd {
        Sandbox::reset(Path::new(SANDBOX_DIR))?;
        out.text(format!("sandbox reset: the next --sandbox command seeds a fresh world from the configuration into {SANDBOX_DIR}/"));
        out.result(&serde_json::json!({ "reset": true }));
        return Ok(Exit::Success);
    }
    let Some(sandbox) = backends.and_then(|b| b.sandbox.as_ref()) else {
        return Err(
            UsageError("`deploy sandbox` acts on the sandbox only: add --sandbox".into()).into(),
        );
    };
    match cmd {
        SandboxCommand::Reset => unreachable!("handled above"),
        SandboxCommand::Push { env, tag, skip } => push(config, sandbox, out, env, tag, skip),
        SandboxCommand::Break { env, cluster, how } => {
            let env = config.environment(env).map_err(UsageError)?;
            let c = config
                .cluster(cluster)
                .ok_or_else(|| UsageError(format!("no cluster {cluster:?}")))?;
            let name = config.application_name(env, c);
            let script = match how {
                Breakage::Degraded => Script::Degraded,
                Breakage::Failed => Script::Failed,
                Breakage::Hang => Script::Hang,
            };
            sandbox.world.argocd.push_script(&name, script);
            sandbox.save()?;
            out.text(format!("the next operation of {name} will end {how:?}"));
            out.result(
                &serde_json::json!({ "application": name, "next_operation": format!("{how:?}") }),
            );
            Ok(Exit::Success)
        }
        SandboxCommand::Metric {
            env,
            cluster,
            check,
            release,
            value,
        } => {
            let env = config.environment(env).map_err(UsageError)?;
            let check = which_check(env, check.as_deref())?;
            let release = parse_tag(release)?;
            let key = sandbox
                .world
                .simulate_release(config, env, &check, cluster, &release, value.clone())
                .map_err(UsageError)?;
            sandbox.save()?;
            out.text(format!(
                "check {check} on {cluster} ({}) measures {} while it runs {release}",
                env.name,
                deploy_core::check::show_values(value)
            ));
            out.result(&serde_json::json!({
                "environment": env.name,
                "cluster": cluster,
                "check": check,
                "release": release.as_str(),
                "values": value,
                "query": key,
            }));
            Ok(Exit::Success)
        }
    }
}

/// `deploy sandbox push`: CI pushes `tag` to `env`'s registries, but the services of `skip`.
fn push(
    config: &Config,
    sandbox: &Sandbox,
    out: Output,
    env: &str,
    tag: &str,
    skip: &[String],
) -> Result<Exit> {
    let env = config.environment(env).map_err(UsageError)?;
    let tag = parse_tag(tag)?;
    if let Some(s) = skip
        .iter()
        .find(|s| !config.services.iter().any(|c| &c.name == *s))
    {
        return Err(UsageError(format!("--skip {s}: no such service")).into());
    }
    let plan = push_order(config, env, &tag);
    let mut pushed = Vec::new();
    for Push { service, image, .. } in &plan.pushes {
        if skip.contains(service) {
            out.text(format!("skipped {image} (as a failed CI job would)"));
            continue;
        }
        let digest = build_digest(service, &tag);
        sandbox.world.registry.push(&image.location, &tag, &digest);
        out.text(format!("pushed {image} {digest}"));
        pushed.push(image.to_string());
    }
    sandbox.save()?;
    out.result(&serde_json::json!({ "pushed": pushed }));
    Ok(Exit::Success)
}

/// The check `deploy sandbox metric` scripts: `--check`, or the environment's only one.
fn which_check(env: &Environment, check: Option<&str>) -> Result<String> {
    match (check, env.checks.as_slice()) {
        (Some(c), _) => Ok(c.to_owned()),
        (None, [only]) => Ok(only.name.clone()),
        (None, checks) => {
            let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
            Err(UsageError(format!(
                "environment {} has {} checks ({}): say which with --check",
                env.name,
                checks.len(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
            .into())
        }
    }
}
