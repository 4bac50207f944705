//! `deploy release check` and `deploy release latest`.

use anyhow::Result;

use deploy_core::config::Config;
use deploy_core::model::Tag;
use deploy_core::plan::release::{MissingKind, ReleaseCheck, check_release, newest_complete};

use crate::backends::Backends;
use crate::exit::{Exit, UsageError};
use crate::output::{Output, table};

/// Parses a tag given on the command line.
pub fn parse_tag(s: &str) -> Result<Tag> {
    Tag::new(s).map_err(|e| {
        UsageError(format!(
            "{e}; a tag matches [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
        ))
        .into()
    })
}

/// Prints a check: digests per service and region, then what is missing.
pub fn print_check(out: Output, config: &Config, check: &ReleaseCheck) {
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

/// `deploy release check`: exit 0 when complete, 3 when not.
pub async fn check(
    config: &Config,
    backends: &Backends,
    out: Output,
    env: &str,
    tag: &str,
) -> Result<Exit> {
    let env = config.environment(env).map_err(UsageError)?;
    let tag = parse_tag(tag)?;
    let check = check_release(&*backends.registry, config, env, &tag).await?;
    print_check(out, config, &check);
    out.result(&serde_json::json!({
        "complete": check.is_complete(),
        "check": check,
        "release": check.release(),
    }));
    Ok(if check.is_complete() {
        Exit::Success
    } else {
        Exit::GateNotMet
    })
}

/// `deploy release latest`: exit 0 with the release, 3 when none is complete.
pub async fn latest(config: &Config, backends: &Backends, out: Output, env: &str) -> Result<Exit> {
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
