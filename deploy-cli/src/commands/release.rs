//! `deploy release check` and `deploy release latest`.

use std::cell::RefCell;
use std::time::Duration;

use anyhow::{Context, Result};

use deploy_core::config::Config;
use deploy_core::model::Tag;
use deploy_core::plan::release::{MissingKind, ReleaseCheck, Waiting};
use deploy_engine::observe::release::wait_until_complete;
use deploy_engine::observe::release::{check_release, newest_complete};

use crate::backends::Backends;
use crate::cli::parse_tag;
use crate::exit::{Exit, UsageError};
use crate::output::{Output, table};

/// Prints a check: digests per service and region, then what is missing.
pub(crate) fn print_check(out: Output, config: &Config, check: &ReleaseCheck) {
    let env = &config.environments[&check.environment];
    let mut header = vec!["SERVICE"];
    header.extend(env.registry.regions.iter().map(String::as_str));
    let mut t = table(&header);
    for s in &config.services {
        let mut row = vec![if s.sentinel {
            format!("{} (sentinel)", s.name)
        } else {
            s.name.clone()
        }];
        for r in &env.registry.regions {
            let cell = match check.found.get(&s.name).and_then(|by| by.get(r)) {
                Some(d) => d.short().to_owned(),
                None => match check
                    .missing
                    .iter()
                    .find(|m| m.service == s.name && &m.region == r)
                    .map(|m| m.kind)
                {
                    Some(MissingKind::Repository) => "no repository".into(),
                    _ => "missing".into(),
                },
            };
            row.push(cell);
        }
        t.add_row(row);
    }
    out.text(format!(
        "release {} in {} ({}):",
        check.tag, check.environment, env.registry.account
    ));
    out.text(t);
    if check.is_complete() {
        out.text(format!(
            "complete: every image of {} is in every region, with one digest per service",
            check.tag
        ));
    } else {
        for m in &check.missing {
            let what = if m.kind == MissingKind::Repository {
                "repository missing"
            } else {
                "missing"
            };
            out.text(format!("{what}: {}:{}", m.image, check.tag));
        }
        for s in &check.inconsistent {
            out.text(format!("digest differs between regions: {s}"));
        }
    }
}

/// `deploy release check`: exit 0 when complete, 3 when not. With `--wait`, checks again
/// (2 s, then doubling up to 30 s) until the release is complete or the wait is over, saying
/// each round what is still missing; exit 130 on Ctrl-C or SIGTERM.
pub(crate) async fn check(
    config: &Config,
    backends: &Backends,
    out: Output,
    env: &str,
    tag: &str,
    wait: Option<Duration>,
) -> Result<Exit> {
    let env = config.environment(env).map_err(UsageError)?;
    let tag = parse_tag(tag)?;
    let Some(limit) = wait else {
        let check = check_release(&*backends.registry, config, env, &tag).await?;
        return Ok(report(out, config, &check, Duration::ZERO));
    };
    // The last incomplete check, for the report when interrupted; and how many rounds did
    // not end the wait.
    let last = RefCell::new(None);
    let mut rounds = 0_usize;
    let started = tokio::time::Instant::now();
    let waiting =
        wait_until_complete(
            &*backends.registry,
            config,
            env,
            &tag,
            limit,
            |round| match round {
                Waiting::Incomplete { check, next, left } => {
                    rounds += 1;
                    out.note(format!(
                        "{}; checking again in {}, {} left",
                        still_missing(check),
                        seconds(next),
                        seconds(left)
                    ));
                    *last.borrow_mut() = Some(check.clone());
                }
                Waiting::Retrying { error, next, left } => {
                    rounds += 1;
                    tracing::warn!(
                        "checking {tag} in {}: {error}; trying again in {}, {} left",
                        env.name,
                        seconds(next),
                        seconds(left)
                    );
                }
            },
        );
    let waited = tokio::select! {
        waited = waiting => waited.with_context(|| {
            format!("checking release {tag} in {} (waited {})", env.name, seconds(started.elapsed()))
        })?,
        () = crate::signals::wait_for_signal() => {
            return Ok(interrupted(out, config, &tag, last.take(), started.elapsed()));
        }
    };
    let exit = report(out, config, &waited.check, waited.waited);
    if !waited.check.is_complete() {
        out.note(format!(
            "release {tag} is still not complete after {}: push the missing images \
             (`deploy build plan` lists them, sentinel last) or check replication to the regions named",
            seconds(waited.waited)
        ));
    } else if rounds > 0 {
        out.note(format!("complete after {}", seconds(waited.waited)));
    }
    Ok(exit)
}

/// What a wait interrupted after `waited` says: the `last` incomplete check, if any; exit 130.
fn interrupted(
    out: Output,
    config: &Config,
    tag: &Tag,
    last: Option<ReleaseCheck>,
    waited: Duration,
) -> Exit {
    match &last {
        Some(check) => {
            print_check(out, config, check);
            out.note(format!(
                "interrupted after {}: release {tag} was not complete yet",
                seconds(waited)
            ));
        }
        None => out.note(format!(
            "interrupted after {}, before a check of release {tag} finished",
            seconds(waited)
        )),
    }
    out.result(&serde_json::json!({
        "complete": false,
        "check": last,
        "release": null,
        "waited_seconds": whole_seconds(waited),
        "interrupted": true,
    }));
    Exit::Interrupted
}

/// Prints a finished check and its `result` line; exit 0 when complete, 3 when not.
fn report(out: Output, config: &Config, check: &ReleaseCheck, waited: Duration) -> Exit {
    print_check(out, config, check);
    out.result(&serde_json::json!({
        "complete": check.is_complete(),
        "check": check,
        "release": check.release(),
        "waited_seconds": whole_seconds(waited),
    }));
    if check.is_complete() {
        Exit::Success
    } else {
        Exit::GateNotMet
    }
}

/// One line for a round of `--wait`: what is missing (the first few images) and which
/// services' digests differ between regions.
fn still_missing(check: &ReleaseCheck) -> String {
    const SHOWN: usize = 3;
    let mut parts = Vec::new();
    if !check.missing.is_empty() {
        let mut images: Vec<String> = check
            .missing
            .iter()
            .take(SHOWN)
            .map(|m| format!("{}:{}", m.image, check.tag))
            .collect();
        if check.missing.len() > SHOWN {
            images.push(format!("and {} more", check.missing.len() - SHOWN));
        }
        parts.push(format!(
            "{} missing ({})",
            check.missing.len(),
            images.join(", ")
        ));
    }
    if !check.inconsistent.is_empty() {
        parts.push(format!(
            "digest differs between regions for {} (replication may still be copying it)",
            check.inconsistent.join(", ")
        ));
    }
    format!("release {} not complete: {}", check.tag, parts.join("; "))
}

/// `d` to the nearest second.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_millis() >= 500)
}

/// `d` to the nearest second, as `1m 30s`.
fn seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(whole_seconds(d)))
}

/// `deploy release latest`: exit 0 with the release, 3 when none is complete.
pub(crate) async fn latest(
    config: &Config,
    backends: &Backends,
    out: Output,
    env: &str,
) -> Result<Exit> {
    let env = config.environment(env).map_err(UsageError)?;
    let (found, skipped) = newest_complete(&*backends.registry, config, env).await?;
    for s in &skipped {
        out.note(format!(
            "skipped {}: incomplete ({} missing)",
            s.tag,
            s.missing.len() + s.inconsistent.len()
        ));
    }
    match &found {
        Some(check) => print_check(out, config, check),
        None => out.text(format!(
            "no complete release among the newest tags of {} in {}",
            config.sentinel().name,
            env.name
        )),
    }
    out.result(&serde_json::json!({
        "release": found.as_ref().and_then(ReleaseCheck::release),
        "skipped": skipped.iter().map(|s| s.tag.to_string()).collect::<Vec<_>>(),
    }));
    Ok(if found.is_some() {
        Exit::Success
    } else {
        Exit::GateNotMet
    })
}
