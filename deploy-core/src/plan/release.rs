//! Release completeness: is every service image of a tag present, with one digest, in
//! every region registry of an environment; and which release is the newest complete one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Environment, Service, TagPolicy, TagStrategy};
use crate::error::Error;
use crate::model::{Digest, Release, Tag};
use crate::port::{ImageLookup, TaggedImage};

/// Why an image is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingKind {
    /// The repository has no such tag.
    Image,
    /// The repository does not exist.
    Repository,
}

/// One missing image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// Service.
    pub service: String,
    /// Region.
    pub region: String,
    /// `{account}.dkr.ecr.{region}.amazonaws.com/{repository}`.
    pub image: String,
    /// Image or repository.
    pub kind: MissingKind,
}

/// The answer of a release check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCheck {
    /// Environment.
    pub environment: String,
    /// Tag.
    pub tag: Tag,
    /// Service → region → digest found.
    pub found: BTreeMap<String, BTreeMap<String, Digest>>,
    /// What is missing, by service then region.
    pub missing: Vec<Missing>,
    /// Services whose digest differs between regions.
    pub inconsistent: Vec<String>,
}

impl ReleaseCheck {
    /// Every image present, one digest per service.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.inconsistent.is_empty()
    }

    /// The release, when complete.
    pub fn release(&self) -> Option<Release> {
        self.is_complete().then(|| Release {
            tag: self.tag.clone(),
            digests: self
                .found
                .iter()
                .filter_map(|(s, by_region)| {
                    by_region.values().next().map(|d| (s.clone(), d.clone()))
                })
                .collect(),
        })
    }
}

/// Judges the lookups of `tag` for every (service, region) of `env`.
pub fn judge(
    env: &Environment,
    services: &[Service],
    tag: &Tag,
    lookups: &BTreeMap<(String, String), ImageLookup>,
) -> ReleaseCheck {
    let mut found: BTreeMap<String, BTreeMap<String, Digest>> = BTreeMap::new();
    let mut missing = Vec::new();
    for service in services {
        for region in &env.registry.regions {
            let image = env.location(service, region).image_name();
            match lookups.get(&(service.name.clone(), region.clone())) {
                Some(ImageLookup::Found(d)) => {
                    found
                        .entry(service.name.clone())
                        .or_default()
                        .insert(region.clone(), d.digest.clone());
                }
                Some(ImageLookup::RepositoryMissing) => missing.push(Missing {
                    service: service.name.clone(),
                    region: region.clone(),
                    image,
                    kind: MissingKind::Repository,
                }),
                Some(ImageLookup::ImageMissing) | None => missing.push(Missing {
                    service: service.name.clone(),
                    region: region.clone(),
                    image,
                    kind: MissingKind::Image,
                }),
            }
        }
    }
    let inconsistent = found
        .iter()
        .filter(|(_, by_region)| {
            by_region
                .values()
                .any(|d| Some(d) != by_region.values().next())
        })
        .map(|(s, _)| s.clone())
        .collect();
    ReleaseCheck {
        environment: env.name.clone(),
        tag: tag.clone(),
        found,
        missing,
        inconsistent,
    }
}

/// (service, region) → what the registry answered for one tag.
pub type Lookups = BTreeMap<(String, String), ImageLookup>;

/// How soon `deploy_engine::observe::release::wait_until_complete` checks again after the first check; each next pause is
/// twice the previous one, up to [`WAIT_MAX_INTERVAL`]. Short, because CI usually waits for
/// the last images of a push that is nearly done or for replication, which takes seconds.
pub const WAIT_FIRST_INTERVAL: Duration = Duration::from_secs(2);

/// The longest pause between two checks of `deploy_engine::observe::release::wait_until_complete`.
pub const WAIT_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// A round of `deploy_engine::observe::release::wait_until_complete` after which it goes on waiting.
#[derive(Debug)]
pub enum Waiting<'a> {
    /// The release is not complete yet: images are missing, or a service's digest differs
    /// between regions (replication may still be copying a newer push).
    Incomplete {
        /// What this round found.
        check: &'a ReleaseCheck,
        /// Pause before the next check.
        next: Duration,
        /// What is left of the wait.
        left: Duration,
    },
    /// The registry failed with a transient error (after its own retries); the check is
    /// tried again.
    Retrying {
        /// The error.
        error: &'a Error,
        /// Pause before the next check.
        next: Duration,
        /// What is left of the wait.
        left: Duration,
    },
}

/// The end of `deploy_engine::observe::release::wait_until_complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited {
    /// The last check: complete, or what was still missing when the time was up.
    pub check: ReleaseCheck,
    /// How long the wait took.
    pub waited: Duration,
}

/// The sentinel's tags that pass `policy`, best candidate first:
/// newest push first (ties: highest tag), highest semantic version, or highest tag.
pub fn order_candidates(images: &[TaggedImage], policy: &TagPolicy) -> Vec<Tag> {
    let mut admitted: Vec<&TaggedImage> = images
        .iter()
        .filter(|i| policy.admits(i.tag.as_str()))
        .collect();
    match policy.strategy {
        TagStrategy::Newest => admitted.sort_by(|a, b| {
            b.pushed_at
                .cmp(&a.pushed_at)
                .then_with(|| b.tag.cmp(&a.tag))
        }),
        TagStrategy::Lexical => admitted.sort_by(|a, b| b.tag.cmp(&a.tag)),
        TagStrategy::Semver => {
            admitted.retain(|i| semver_of(i.tag.as_str()).is_some());
            // Parse each version once, not once per comparison.
            admitted.sort_by_cached_key(|i| {
                std::cmp::Reverse((semver_of(i.tag.as_str()), i.tag.clone()))
            });
        }
    }
    let mut tags: Vec<Tag> = admitted.into_iter().map(|i| i.tag.clone()).collect();
    tags.dedup();
    tags
}

/// The semantic version of a tag, allowing a leading `v`.
pub fn semver_of(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// How many candidates `newest_complete` checks before giving up.
pub const MAX_CANDIDATES: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::EXAMPLE;
    use jiff::Timestamp;

    fn img(tag: &str, secs: i64) -> TaggedImage {
        TaggedImage {
            tag: Tag::new(tag).unwrap(),
            digest: crate::model::digest_of(tag),
            pushed_at: Timestamp::from_second(secs).unwrap(),
        }
    }

    fn policy(strategy: TagStrategy, allow: Option<&str>, ignore: Option<&str>) -> TagPolicy {
        TagPolicy {
            strategy,
            allow: allow.map(|r| regex::Regex::new(r).unwrap()),
            ignore: ignore.map(|r| regex::Regex::new(r).unwrap()),
        }
    }

    #[track_caller]
    fn check(images: &[TaggedImage], p: TagPolicy, want: &[&str]) {
        let got: Vec<String> = order_candidates(images, &p)
            .iter()
            .map(Tag::to_string)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn candidates() {
        let imgs = [
            img("aaaaaaa", 10),
            img("bbbbbbb", 30),
            img("ccccccc", 20),
            img("latest", 40),
            img("v1.10.0", 5),
            img("v1.9.0", 6),
        ];
        check(
            &imgs,
            policy(TagStrategy::Newest, None, None),
            &[
                "latest", "bbbbbbb", "ccccccc", "aaaaaaa", "v1.9.0", "v1.10.0",
            ],
        );
        check(
            &imgs,
            policy(TagStrategy::Newest, Some("^[0-9a-f]{7,40}$"), None),
            &["bbbbbbb", "ccccccc", "aaaaaaa"],
        );
        check(
            &imgs,
            policy(TagStrategy::Newest, None, Some("^latest$|^v")),
            &["bbbbbbb", "ccccccc", "aaaaaaa"],
        );
        check(
            &imgs,
            policy(TagStrategy::Semver, None, None),
            &["v1.10.0", "v1.9.0"],
        );
        check(
            &imgs,
            policy(TagStrategy::Lexical, Some("^[a-c]"), None),
            &["ccccccc", "bbbbbbb", "aaaaaaa"],
        );
        // Same push time: the higher tag wins, whatever the input order.
        check(
            &[img("aaaaaaa", 7), img("bbbbbbb", 7)],
            policy(TagStrategy::Newest, None, None),
            &["bbbbbbb", "aaaaaaa"],
        );
        check(
            &[img("bbbbbbb", 7), img("aaaaaaa", 7)],
            policy(TagStrategy::Newest, None, None),
            &["bbbbbbb", "aaaaaaa"],
        );
        check(
            &[img("1.0.0", 1), img("v1.0.0", 1), img("2.0.0-rc.1", 1)],
            policy(TagStrategy::Semver, None, None),
            &["2.0.0-rc.1", "v1.0.0", "1.0.0"],
        );
    }

    #[test]
    fn judging() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let tag = Tag::new("abc1234").unwrap();
        let found = |s: &str| {
            ImageLookup::Found(crate::port::ImageDetail {
                digest: crate::model::digest_of(s),
                tags: vec![tag.clone()],
                pushed_at: Timestamp::UNIX_EPOCH,
            })
        };
        let mut lookups = BTreeMap::new();
        for s in &config.services {
            for r in &prod.registry.regions {
                lookups.insert((s.name.clone(), r.clone()), found(&s.name));
            }
        }
        let complete = judge(prod, &config.services, &tag, &lookups);
        assert!(complete.is_complete());
        assert_eq!(complete.release().unwrap().digests.len(), 3);

        lookups.insert(
            ("api".into(), "eu-west-1".into()),
            ImageLookup::ImageMissing,
        );
        lookups.insert(
            ("worker".into(), "us-east-1".into()),
            ImageLookup::RepositoryMissing,
        );
        lookups.insert(("logserver".into(), "us-east-1".into()), found("other"));
        let c = judge(prod, &config.services, &tag, &lookups);
        assert!(!c.is_complete() && c.release().is_none());
        let missing: Vec<_> = c
            .missing
            .iter()
            .map(|m| (m.service.as_str(), m.region.as_str(), m.kind))
            .collect();
        assert_eq!(
            missing,
            [
                ("api", "eu-west-1", MissingKind::Image),
                ("worker", "us-east-1", MissingKind::Repository)
            ]
        );
        assert_eq!(
            c.missing[0].image,
            "222222222222.dkr.ecr.eu-west-1.amazonaws.com/staging/api"
        );
        assert_eq!(c.inconsistent, ["logserver"]);
    }
}
