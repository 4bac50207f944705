//! Bring your own registry: a fixed catalogue of images (what a team might load from its own
//! artifact index) implementing the `Registry` port, checked by the same conformance suite
//! every backend of deploy passes. Run `cargo run -p deploy-core --example catalogue`, or
//! `cargo test -p deploy-core --example catalogue` for the suite.

// An example is a program: it prints its result.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use deploy_core::model::{Digest, RepoLocation, Tag};
use deploy_core::port::{
    ImageDetail, ImageLookup, Registry, ReplicationRule, ReplicationStatus, RepositoryInfo,
    TaggedImage,
};
use deploy_engine::conformance::registry::RegistryFixture;
use sha2::{Digest as _, Sha256};

/// Repositories by (account, region, name): their tags, and whether tags may move.
#[derive(Debug, Default)]
struct Catalogue {
    repositories: Mutex<BTreeMap<(String, String, String), Repository>>,
    rules: Mutex<BTreeMap<(String, String), Vec<ReplicationRule>>>,
}

#[derive(Debug, Default, Clone)]
struct Repository {
    tag_mutable: bool,
    images: BTreeMap<String, (Digest, jiff::Timestamp)>,
}

fn key(repo: &RepoLocation) -> (String, String, String) {
    (
        repo.account.clone(),
        repo.region.clone(),
        repo.repository.clone(),
    )
}

#[async_trait]
impl Registry for Catalogue {
    async fn image(&self, repo: &RepoLocation, tag: &Tag) -> deploy_core::Result<ImageLookup> {
        let repos = self.repositories.lock().expect("poisoned");
        let Some(r) = repos.get(&key(repo)) else {
            return Ok(ImageLookup::RepositoryMissing);
        };
        let Some((digest, pushed_at)) = r.images.get(tag.as_str()) else {
            return Ok(ImageLookup::ImageMissing);
        };
        let tags = r
            .images
            .iter()
            .filter(|(_, (d, _))| d == digest)
            .filter_map(|(t, _)| Tag::new(t.clone()).ok())
            .collect();
        Ok(ImageLookup::Found(ImageDetail {
            digest: digest.clone(),
            tags,
            pushed_at: *pushed_at,
        }))
    }

    async fn tagged_images(&self, repo: &RepoLocation) -> deploy_core::Result<Vec<TaggedImage>> {
        let repos = self.repositories.lock().expect("poisoned");
        let r = repos.get(&key(repo)).ok_or_else(|| {
            deploy_core::Error::not_found(format!("repository {}", repo.repository))
        })?;
        Ok(r.images
            .iter()
            .filter_map(|(t, (digest, pushed_at))| {
                Some(TaggedImage {
                    tag: Tag::new(t.clone()).ok()?,
                    digest: digest.clone(),
                    pushed_at: *pushed_at,
                })
            })
            .collect())
    }

    async fn replication_status(
        &self,
        repo: &RepoLocation,
        tag: &Tag,
    ) -> deploy_core::Result<Vec<ReplicationStatus>> {
        // A catalogue knows no replication in flight: what it lists is where it is.
        match self.image(repo, tag).await? {
            ImageLookup::Found(_) => Ok(Vec::new()),
            _ => Err(deploy_core::Error::not_found(format!(
                "{}:{tag}",
                repo.repository
            ))),
        }
    }

    async fn replication_rules(
        &self,
        account: &str,
        region: &str,
    ) -> deploy_core::Result<Vec<ReplicationRule>> {
        let rules = self.rules.lock().expect("poisoned");
        Ok(rules
            .get(&(account.to_owned(), region.to_owned()))
            .cloned()
            .unwrap_or_default())
    }

    async fn repository(&self, repo: &RepoLocation) -> deploy_core::Result<RepositoryInfo> {
        let repos = self.repositories.lock().expect("poisoned");
        repos
            .get(&key(repo))
            .map(|r| RepositoryInfo {
                tag_mutable: r.tag_mutable,
            })
            .ok_or_else(|| deploy_core::Error::not_found(format!("repository {}", repo.repository)))
    }
}

/// How the conformance suite seeds the catalogue.
#[async_trait]
impl RegistryFixture for Catalogue {
    async fn create_repository(&self, repo: &RepoLocation, tag_mutable: bool) {
        self.repositories
            .lock()
            .expect("poisoned")
            .entry(key(repo))
            .or_default()
            .tag_mutable = tag_mutable;
    }

    async fn push(&self, repo: &RepoLocation, tag: &Tag, manifest: &str) -> Digest {
        let digest = Digest::new(format!("sha256:{:x}", Sha256::digest(manifest.as_bytes())))
            .expect("a sha256 digest");
        let mut repos = self.repositories.lock().expect("poisoned");
        let r = repos.entry(key(repo)).or_default();
        r.images
            .insert(tag.to_string(), (digest.clone(), jiff::Timestamp::now()));
        digest
    }

    async fn put_replication_rules(&self, account: &str, region: &str, rules: &[ReplicationRule]) {
        self.rules
            .lock()
            .expect("poisoned")
            .insert((account.to_owned(), region.to_owned()), rules.to_vec());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let catalogue = Catalogue::default();
    match deploy_engine::conformance::registry::run_all(&catalogue, &catalogue, "111111111111")
        .await
    {
        Ok(()) => println!("the catalogue passes the registry conformance suite"),
        Err(e) => {
            eprintln!("the catalogue fails the registry conformance suite: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_catalogue_passes_the_registry_conformance_suite() {
        let c = super::Catalogue::default();
        deploy_engine::conformance::registry::run_all(&c, &c, "111111111111")
            .await
            .unwrap();
    }
}
