//! An in-memory container registry with replication (configurable delay, injectable failure).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use deploy_core::error::{Error, Result};
#[cfg(any(test, feature = "conformance"))]
use deploy_core::model::digest_of;
use deploy_core::model::{Digest, RepoLocation, Tag};
use deploy_core::port::{
    Clock, ImageDetail, ImageLookup, Registry, ReplicationRule, ReplicationState,
    ReplicationStatus, RepositoryInfo, TaggedImage,
};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Repository {
    tag_mutable: bool,
    /// tag → (digest, pushed at)
    images: BTreeMap<String, (Digest, Timestamp)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Replication {
    source: RepoLocation,
    destination: RepoLocation,
    tag: Tag,
    digest: Digest,
    pushed_at: Timestamp,
    due: Timestamp,
    failure: Option<String>,
    done: bool,
}

/// The whole state, serializable so the sandbox can keep it between commands.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RegistryState {
    repositories: BTreeMap<String, Repository>,
    /// "account/region" → rules
    rules: BTreeMap<String, Vec<ReplicationRule>>,
    replications: Vec<Replication>,
    /// Replication delay in milliseconds.
    delay_ms: u64,
    /// "account/region" destinations whose replication fails, with the failure code.
    failing: BTreeMap<String, String>,
}

fn key(loc: &RepoLocation) -> String {
    format!("{}/{}/{}", loc.account, loc.region, loc.repository)
}

fn registry_key(account: &str, region: &str) -> String {
    format!("{account}/{region}")
}

/// An in-memory registry: repositories, digests, push times and replication.
#[derive(Debug, Clone)]
pub struct InMemoryRegistry {
    state: Arc<Mutex<RegistryState>>,
    clock: Arc<dyn Clock>,
}

impl InMemoryRegistry {
    /// An empty registry on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::from_state(RegistryState::default(), clock)
    }

    /// A registry with `state` (e.g. loaded by the sandbox).
    pub fn from_state(state: RegistryState, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
        }
    }

    /// A copy of the state.
    pub fn state(&self) -> RegistryState {
        self.settled().clone()
    }

    /// How long replication takes.
    pub fn set_replication_delay(&self, delay: Duration) {
        self.state.lock().expect("poisoned").delay_ms = delay.as_millis() as u64;
    }

    /// Makes replication to `(account, region)` fail with `code` (None heals it).
    pub fn set_replication_failure(&self, account: &str, region: &str, code: Option<&str>) {
        let mut s = self.state.lock().expect("poisoned");
        match code {
            Some(c) => s
                .failing
                .insert(registry_key(account, region), c.to_owned()),
            None => s.failing.remove(&registry_key(account, region)),
        };
    }

    /// Creates a repository (no-op if it exists).
    pub fn create_repository(&self, repo: &RepoLocation, tag_mutable: bool) {
        let mut s = self.state.lock().expect("poisoned");
        s.repositories
            .entry(key(repo))
            .or_insert_with(|| Repository {
                tag_mutable,
                images: BTreeMap::new(),
            });
    }

    /// Sets replication rules of the registry of `account` in `region`.
    pub fn set_replication_rules(&self, account: &str, region: &str, rules: Vec<ReplicationRule>) {
        self.state
            .lock()
            .expect("poisoned")
            .rules
            .insert(registry_key(account, region), rules);
    }

    /// The replication rules of the registry of `account` in `region`.
    pub fn replication_rules_of(&self, account: &str, region: &str) -> Vec<ReplicationRule> {
        self.state
            .lock()
            .expect("poisoned")
            .rules
            .get(&registry_key(account, region))
            .cloned()
            .unwrap_or_default()
    }

    /// Pushes `digest` under `tag`, creating the repository if needed, and schedules
    /// replication by the source registry's rules.
    pub fn push(&self, repo: &RepoLocation, tag: &Tag, digest: &Digest) {
        let now = self.clock.now();
        let mut s = self.state.lock().expect("poisoned");
        let r = s
            .repositories
            .entry(key(repo))
            .or_insert_with(|| Repository {
                tag_mutable: false,
                images: BTreeMap::new(),
            });
        r.images.insert(tag.to_string(), (digest.clone(), now));
        let due = now
            .checked_add(Duration::from_millis(s.delay_ms))
            .unwrap_or(now);
        let destinations: BTreeSet<(String, String)> = s
            .rules
            .get(&registry_key(&repo.account, &repo.region))
            .into_iter()
            .flatten()
            .filter(|rule| {
                rule.repository_prefixes.is_empty()
                    || rule
                        .repository_prefixes
                        .iter()
                        .any(|p| repo.repository.starts_with(p.as_str()))
            })
            .flat_map(|rule| rule.destinations.iter().cloned())
            .filter(|(a, r)| !(a == &repo.account && r == &repo.region))
            .collect();
        for (account, region) in destinations {
            let failure = s.failing.get(&registry_key(&account, &region)).cloned();
            let destination = RepoLocation {
                account,
                region,
                repository: repo.repository.clone(),
            };
            s.replications.push(Replication {
                source: repo.clone(),
                destination,
                tag: tag.clone(),
                digest: digest.clone(),
                pushed_at: now,
                due,
                failure,
                done: false,
            });
        }
    }

    /// Applies replications that are due and returns the state.
    fn settled(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        let now = self.clock.now();
        let mut guard = self.state.lock().expect("poisoned");
        let s = &mut *guard;
        for rep in s
            .replications
            .iter_mut()
            .filter(|r| !r.done && r.failure.is_none() && r.due <= now)
        {
            let r = s.repositories.entry(key(&rep.destination)).or_default();
            r.images
                .insert(rep.tag.to_string(), (rep.digest.clone(), rep.due));
            rep.done = true;
        }
        guard
    }
}

#[async_trait]
impl Registry for InMemoryRegistry {
    async fn image(&self, repo: &RepoLocation, tag: &Tag) -> Result<ImageLookup> {
        let s = self.settled();
        let Some(r) = s.repositories.get(&key(repo)) else {
            return Ok(ImageLookup::RepositoryMissing);
        };
        let Some((digest, pushed_at)) = r.images.get(tag.as_str()) else {
            return Ok(ImageLookup::ImageMissing);
        };
        let tags = r
            .images
            .iter()
            .filter(|(_, (d, _))| d == digest)
            .map(|(t, _)| Tag::new(t.clone()).expect("stored tags are valid"))
            .collect();
        Ok(ImageLookup::Found(ImageDetail {
            digest: digest.clone(),
            tags,
            pushed_at: *pushed_at,
        }))
    }

    async fn tagged_images(&self, repo: &RepoLocation) -> Result<Vec<TaggedImage>> {
        let s = self.settled();
        let r = s
            .repositories
            .get(&key(repo))
            .ok_or_else(|| Error::not_found(format!("repository {}", repo.image_name())))?;
        Ok(r.images
            .iter()
            .map(|(t, (d, p))| TaggedImage {
                tag: Tag::new(t.clone()).expect("stored tags are valid"),
                digest: d.clone(),
                pushed_at: *p,
            })
            .collect())
    }

    async fn replication_status(
        &self,
        repo: &RepoLocation,
        tag: &Tag,
    ) -> Result<Vec<ReplicationStatus>> {
        let s = self.settled();
        let exists = s
            .repositories
            .get(&key(repo))
            .is_some_and(|r| r.images.contains_key(tag.as_str()));
        if !exists {
            return Err(Error::not_found(format!(
                "image {}:{tag}",
                repo.image_name()
            )));
        }
        // The newest replication per destination tells where it stands.
        let mut latest: BTreeMap<(String, String), &Replication> = BTreeMap::new();
        for rep in s
            .replications
            .iter()
            .filter(|r| &r.source == repo && &r.tag == tag)
        {
            latest.insert(
                (
                    rep.destination.account.clone(),
                    rep.destination.region.clone(),
                ),
                rep,
            );
        }
        Ok(latest
            .into_iter()
            .map(|((account, region), rep)| ReplicationStatus {
                account,
                region,
                state: match (&rep.failure, rep.done) {
                    (Some(code), _) => ReplicationState::Failed {
                        reason: code.clone(),
                    },
                    (None, true) => ReplicationState::Complete,
                    (None, false) => ReplicationState::InProgress,
                },
            })
            .collect())
    }

    async fn replication_rules(&self, account: &str, region: &str) -> Result<Vec<ReplicationRule>> {
        Ok(self
            .settled()
            .rules
            .get(&registry_key(account, region))
            .cloned()
            .unwrap_or_default())
    }

    async fn repository(&self, repo: &RepoLocation) -> Result<RepositoryInfo> {
        let s = self.settled();
        let r = s
            .repositories
            .get(&key(repo))
            .ok_or_else(|| Error::not_found(format!("repository {}", repo.image_name())))?;
        Ok(RepositoryInfo {
            tag_mutable: r.tag_mutable,
        })
    }
}

#[cfg(feature = "conformance")]
#[async_trait]
impl crate::conformance::registry::RegistryFixture for InMemoryRegistry {
    async fn create_repository(&self, repo: &RepoLocation, tag_mutable: bool) {
        InMemoryRegistry::create_repository(self, repo, tag_mutable);
    }
    async fn push(&self, repo: &RepoLocation, tag: &Tag, manifest: &str) -> Digest {
        let digest = digest_of(manifest);
        InMemoryRegistry::push(self, repo, tag, &digest);
        digest
    }
    async fn put_replication_rules(&self, account: &str, region: &str, rules: &[ReplicationRule]) {
        self.set_replication_rules(account, region, rules.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;

    fn registry() -> InMemoryRegistry {
        InMemoryRegistry::new(Arc::new(TokioClock::new(Timestamp::UNIX_EPOCH)))
    }

    #[tokio::test(start_paused = true)]
    async fn conformance() {
        let r = registry();
        crate::conformance::registry::run_all(&r, &r, "111111111111")
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn replication_takes_its_time_and_can_fail() {
        let r = registry();
        r.set_replication_delay(Duration::from_secs(60));
        r.set_replication_rules(
            "111111111111",
            "us-west-2",
            vec![ReplicationRule {
                destinations: vec![
                    ("222222222222".into(), "us-east-1".into()),
                    ("222222222222".into(), "eu-west-1".into()),
                ],
                repository_prefixes: vec!["staging/".into()],
            }],
        );
        r.set_replication_failure(
            "222222222222",
            "eu-west-1",
            Some("REPLICATION_ACCESS_DENIED"),
        );
        let src = RepoLocation {
            account: "111111111111".into(),
            region: "us-west-2".into(),
            repository: "staging/api".into(),
        };
        let tag = Tag::new("abc1234").unwrap();
        r.push(&src, &tag, &digest_of("m"));
        let east = RepoLocation {
            account: "222222222222".into(),
            region: "us-east-1".into(),
            ..src.clone()
        };
        assert_eq!(
            r.image(&east, &tag).await.unwrap(),
            ImageLookup::RepositoryMissing
        );
        let states: Vec<_> = r
            .replication_status(&src, &tag)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.region, s.state))
            .collect();
        assert_eq!(
            states,
            [
                (
                    "eu-west-1".into(),
                    ReplicationState::Failed {
                        reason: "REPLICATION_ACCESS_DENIED".into()
                    }
                ),
                ("us-east-1".into(), ReplicationState::InProgress)
            ]
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            matches!(r.image(&east, &tag).await.unwrap(), ImageLookup::Found(d) if d.digest == digest_of("m"))
        );
        let west = RepoLocation {
            region: "eu-west-1".into(),
            ..east
        };
        assert_eq!(
            r.image(&west, &tag).await.unwrap(),
            ImageLookup::RepositoryMissing
        );
    }
}
