//! `deploy watch`: the image-updater loop. Polls the sentinel repository; on a new tag that
//! passes the tag filter, checks the whole release; only a complete release is written to
//! an automated environment's Applications. A manual environment is never changed.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use deploy_core::Error;
use deploy_core::config::{Config, Environment};
use deploy_core::model::Tag;
use deploy_core::plan::live::{override_for, service_images};
use deploy_core::plan::release::{newest_complete, order_candidates};

use crate::backends::Backends;
use crate::cli::WatchArgs;
use crate::exit::{Exit, UsageError};
use crate::output::Output;

/// The shortest interval between polls, so one watcher cannot hammer a registry.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The longest backoff after throttling.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Serialize)]
struct Tick {
    newest_tag: Option<String>,
    complete_release: Option<String>,
    written_to: Vec<String>,
    skipped_incomplete: Vec<String>,
}

/// Runs the loop until Ctrl-C (or once).
pub async fn run(
    config: &Config,
    backends: &Backends,
    out: Output,
    args: &WatchArgs,
) -> Result<Exit> {
    let env = config.environment(&args.env).map_err(UsageError)?;
    if !args.once && args.interval < MIN_INTERVAL {
        return Err(UsageError(format!(
            "--interval must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ))
        .into());
    }
    if !env.sync.is_automated() {
        out.note(format!("{} is manual: watch only reports new complete releases and never changes it (use deploy promote)", env.name));
    }
    let mut last_seen: Option<Tag> = None;
    let mut delay = args.interval;
    loop {
        match tick(config, backends, out, env, &mut last_seen).await {
            Ok(t) => {
                delay = args.interval;
                out.record("tick", &t);
                backends.save()?;
                if args.once {
                    out.result(&t);
                    return Ok(Exit::Success);
                }
            }
            Err(e @ Error::Transient { .. }) if !args.once => {
                delay = (delay * 2).min(MAX_BACKOFF);
                tracing::warn!("{e}; next poll in {}", humantime::format_duration(delay));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("watching {}", env.name))),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = super::promote::wait_for_signal() => {
                out.note("stopped");
                out.result(&serde_json::json!({ "stopped": true }));
                return Ok(Exit::Success);
            }
        }
    }
}

async fn tick(
    config: &Config,
    backends: &Backends,
    out: Output,
    env: &Environment,
    last_seen: &mut Option<Tag>,
) -> Result<Tick, Error> {
    let sentinel = env.location(config.sentinel(), &env.registry.regions[0]);
    let images = backends.registry.tagged_images(&sentinel).await?;
    let newest = order_candidates(&images, &env.tags).into_iter().next();
    let mut t = Tick {
        newest_tag: newest.as_ref().map(Tag::to_string),
        complete_release: None,
        written_to: vec![],
        skipped_incomplete: vec![],
    };
    if newest.is_none() || newest == *last_seen {
        return Ok(t);
    }
    let (found, skipped) = newest_complete(&*backends.registry, config, env).await?;
    t.skipped_incomplete = skipped.iter().map(|c| c.tag.to_string()).collect();
    for s in &skipped {
        out.note(format!(
            "{}: {} is incomplete ({} image(s) missing); not deployed",
            env.name,
            s.tag,
            s.missing.len()
        ));
    }
    // An incomplete newest tag is looked at again next time: its images may still be arriving.
    if skipped.is_empty() {
        last_seen.clone_from(&newest);
    }
    let Some(check) = found else { return Ok(t) };
    t.complete_release = Some(check.tag.to_string());
    if !env.sync.is_automated() {
        return Ok(t);
    }
    for c in &config.clusters {
        let name = config.application_name(env, c);
        let images = service_images(config, env, c);
        let names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
        let app = backends.argocd.application(&name).await?;
        let want = override_for(env, &names, &check.tag);
        if app.override_value(&env.image_override, &names).as_ref() != Some(&want) {
            backends.argocd.set_override(&name, &want).await?;
            out.note(format!(
                "{name}: image override set to {} (Argo CD syncs it)",
                check.tag
            ));
            t.written_to.push(name);
        }
    }
    Ok(t)
}
