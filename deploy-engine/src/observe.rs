//! The observe helpers: waiting for a release to be complete in every region, measuring
//! every check of an environment once, each within its timeout, and reading the newest runs
//! of the audit trail in widening windows and doubling batches.
//! The planners that read their results are pure, in `deploy_core::plan`.

use std::collections::BTreeMap;
use std::time::Duration;

use deploy_core::check::Scope;
use deploy_core::config::{Config, Environment};
use deploy_core::error::{Error, Result};
use deploy_core::model::Tag;
use deploy_core::plan::findings::{CheckProbe, ProbeAnswer};
use deploy_core::plan::live::{live_tag, service_images};
use deploy_core::plan::release::{
    WAIT_FIRST_INTERVAL, WAIT_MAX_INTERVAL, Waited, Waiting, check_release,
};
use deploy_core::port::{Application, AuditLog, Metrics, Registry};
use deploy_core::trail::{AuditRecord, BATCH, Entry, Found, WINDOWS, pick};
use futures::future::join_all;
use jiff::Timestamp;

/// Checks `tag` in every region registry of `env` until it is complete or `limit` has
/// passed: the first re-check after [`WAIT_FIRST_INTERVAL`], then twice as long each time up
/// to [`WAIT_MAX_INTERVAL`] (longer when the registry asked for it), never pausing past the
/// deadline, and once more at the deadline. `progress` hears about every round that does not
/// end the wait.
///
/// A transient registry error is retried until the deadline (then returned); any other
/// error (permission, invalid request) ends the wait at once, since waiting cannot fix it.
/// Time is tokio's, so tests run on a paused clock.
pub async fn wait_until_complete(
    registry: &dyn Registry,
    config: &Config,
    env: &Environment,
    tag: &Tag,
    limit: Duration,
    mut progress: impl FnMut(Waiting<'_>),
) -> Result<Waited> {
    let start = tokio::time::Instant::now();
    // A limit too far to represent waits "forever" (a century).
    let deadline = start
        .checked_add(limit)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
    let mut interval = WAIT_FIRST_INTERVAL;
    loop {
        let attempt = check_release(registry, config, env, tag).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let next = match attempt {
            Ok(check) if check.is_complete() || left.is_zero() => {
                return Ok(Waited {
                    check,
                    waited: start.elapsed(),
                });
            }
            Ok(check) => {
                let next = interval.min(left);
                progress(Waiting::Incomplete {
                    check: &check,
                    next,
                    left,
                });
                next
            }
            Err(error @ Error::Transient { retry_after, .. }) if !left.is_zero() => {
                let next = interval.max(retry_after.unwrap_or_default()).min(left);
                progress(Waiting::Retrying {
                    error: &error,
                    next,
                    left,
                });
                next
            }
            Err(error) => return Err(error),
        };
        tokio::time::sleep(next).await;
        interval = (interval * 2).min(WAIT_MAX_INTERVAL);
    }
}

/// Measures each check of `env` once on each of its clusters, all at once, each within
/// [`deploy_core::check::MEASURE_TIMEOUT`]. `{release}` is the release the cluster's
/// Application runs now (from `apps`, as [`observe`] read them), `unknown` when it runs none
/// or several.
pub async fn observe_checks(
    config: &Config,
    env: &Environment,
    apps: &BTreeMap<String, Option<Application>>,
    metrics: &dyn Metrics,
) -> Vec<CheckProbe> {
    let mut resolved = Vec::new();
    for cluster in env.waves.iter().flatten().filter_map(|c| config.cluster(c)) {
        let live = apps
            .get(&cluster.name)
            .and_then(Option::as_ref)
            .map(|a| live_tag(a, &service_images(config, env, cluster)));
        let release = live
            .as_ref()
            .and_then(|l| l.tag())
            .unwrap_or("unknown")
            .to_owned();
        for c in &env.checks {
            let check = c.resolve(&Scope {
                cluster: &cluster.name,
                region: &cluster.region,
                env: &env.name,
                app: &config.app,
                release: &release,
            });
            resolved.push((cluster.name.clone(), check));
        }
    }
    let answers = join_all(resolved.iter().map(|(_, c)| async move {
        match tokio::time::timeout(
            deploy_core::check::MEASURE_TIMEOUT,
            metrics.measure(&c.source, &c.query),
        )
        .await
        {
            Ok(measured) => ProbeAnswer::of(measured),
            Err(_) => ProbeAnswer::Unreachable(format!(
                "no answer within {}s",
                deploy_core::check::MEASURE_TIMEOUT.as_secs()
            )),
        }
    }))
    .await;
    resolved
        .into_iter()
        .zip(answers)
        .map(|((cluster, check), answer)| CheckProbe {
            cluster,
            check,
            answer,
        })
        .collect()
}

/// The newest `runs` runs of `environment` as a listing shows them, newest first (by start,
/// then run id): for each, its end record's entry, or its first record's when it has no end.
/// Lists back from `now` in widening windows until `runs` runs have started inside the
/// window (a run with only its end there started before it), else the whole trail.
pub async fn newest_entries(
    log: &dyn AuditLog,
    environment: &str,
    now: Timestamp,
    runs: usize,
) -> Result<Found<Entry>> {
    let mut listed = Found::default();
    let mut before: Option<Timestamp> = None;
    let windows = WINDOWS
        .iter()
        .map(|w| now.checked_sub(*w).ok())
        .chain([None]);
    let mut since = None;
    for window in windows {
        since = window;
        let got = log.list(Some(environment), since, before).await?;
        listed.items.extend(got.items);
        listed.warnings.extend(got.warnings);
        let started = listed.items.iter().filter(|e| e.started).count();
        if started >= runs || since.is_none() {
            break;
        }
        before = since;
    }
    Ok(Found {
        items: pick(listed.items, since, runs),
        warnings: listed.warnings,
    })
}

/// The records of the newest runs of `environment` (at most `runs`), oldest first: one per
/// run, its end record (which repeats its start), or its first record when it has no end.
///
/// Reads [`BATCH`] runs first, then twice as many each time, newest first, and stops as soon
/// as `enough` says the records read so far (given newest first) answer the question
/// (`|_| false`: read all `runs`). Records that cannot be read are skipped and named in the
/// warnings.
pub async fn newest(
    log: &dyn AuditLog,
    environment: &str,
    now: Timestamp,
    runs: usize,
    mut enough: impl FnMut(&[AuditRecord]) -> bool,
) -> Result<Found<AuditRecord>> {
    let listed = newest_entries(log, environment, now, runs).await?;
    let mut out = Found {
        items: Vec::new(),
        warnings: listed.warnings,
    };
    let mut rest = listed.items.as_slice();
    let mut batch = BATCH;
    while !rest.is_empty() {
        let (now_read, later) = rest.split_at(batch.min(rest.len()));
        let got = log.read(now_read).await?;
        out.items.extend(got.items);
        out.warnings.extend(got.warnings);
        if enough(&out.items) {
            break;
        }
        rest = later;
        // Doubling: a search that stops early reads at most twice what it needed, and a
        // whole trail is read in a few large batches (concurrent inside the store).
        batch = batch.saturating_mul(2);
    }
    out.items.reverse();
    Ok(out)
}
