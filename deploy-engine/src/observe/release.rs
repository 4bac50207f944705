//! A release in the registries: checked in every region, looked up among the sentinel's tags,
//! waited for until it is complete.

use std::collections::BTreeMap;
use std::time::Duration;

use deploy_core::config::{Config, Environment, Service};
use deploy_core::error::{Error, Result};
use deploy_core::model::Tag;
use deploy_core::plan::release::*;
use deploy_core::port::{ImageLookup, Registry};
use futures::future::join_all;

/// Checks `tag` in every region registry of `env`: one lookup per service and region, all at once.
pub async fn check_release(
    registry: &dyn Registry,
    config: &Config,
    env: &Environment,
    tag: &Tag,
) -> Result<ReleaseCheck> {
    let mut lookups = BTreeMap::new();
    look_up(registry, config, env, tag, &mut lookups).await?;
    Ok(judge(env, &config.services, tag, &lookups))
}

/// Looks up, all at once, every (service, region) of `env` that `lookups` does not already
/// hold as found with a digest every region agrees on, and records the answers. With empty
/// `lookups` that is every image; on a later call only what was missing or inconsistent, so
/// re-checking an incomplete release costs one request per image still missing.
pub async fn look_up(
    registry: &dyn Registry,
    config: &Config,
    env: &Environment,
    tag: &Tag,
    lookups: &mut Lookups,
) -> Result<()> {
    let settled = judge(env, &config.services, tag, lookups);
    let pairs: Vec<(&Service, &String)> = config
        .services
        .iter()
        .flat_map(|s| env.registry.regions.iter().map(move |r| (s, r)))
        .filter(|(s, r)| {
            settled.inconsistent.contains(&s.name)
                || !matches!(
                    lookups.get(&(s.name.clone(), (*r).clone())),
                    Some(ImageLookup::Found(_))
                )
        })
        .collect();
    let locations: Vec<_> = pairs.iter().map(|(s, r)| env.location(s, r)).collect();
    let answers = join_all(locations.iter().map(|l| registry.image(l, tag))).await;
    for ((s, r), answer) in pairs.into_iter().zip(answers) {
        lookups.insert((s.name.clone(), r.clone()), answer?);
    }
    Ok(())
}

/// The newest complete release of `env`: candidates from the sentinel's tags, checked in order.
/// Returns the release (if any) and the incomplete newer candidates it skipped.
pub async fn newest_complete(
    registry: &dyn Registry,
    config: &Config,
    env: &Environment,
) -> Result<(Option<ReleaseCheck>, Vec<ReleaseCheck>)> {
    let sentinel = env.location(config.sentinel(), &env.registry.regions[0]);
    let images = registry.tagged_images(&sentinel).await?;
    let mut skipped = Vec::new();
    for tag in order_candidates(&images, &env.tags)
        .into_iter()
        .take(MAX_CANDIDATES)
    {
        let check = check_release(registry, config, env, &tag).await?;
        if check.is_complete() {
            return Ok((Some(check), skipped));
        }
        skipped.push(check);
    }
    Ok((None, skipped))
}

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
