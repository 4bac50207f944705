//! The registry port's contract.

use async_trait::async_trait;

use super::Check;
use crate::ensure;
use deploy_core::model::{Digest, RepoLocation, Tag};
use deploy_core::port::{ImageLookup, Registry, ReplicationRule};

/// Seeds a registry backend with state the port cannot create.
#[async_trait]
pub trait RegistryFixture: Send + Sync {
    /// Creates a repository.
    async fn create_repository(&self, repo: &RepoLocation, tag_mutable: bool);
    /// Pushes an image manifest (any JSON text) under `tag`; returns its digest (`sha256` of the manifest).
    async fn push(&self, repo: &RepoLocation, tag: &Tag, manifest: &str) -> Digest;
    /// Sets the replication rules of the registry of `account` in `region`.
    async fn put_replication_rules(&self, account: &str, region: &str, rules: &[ReplicationRule]);
}

/// A location in the fixture's account `account`.
pub fn loc(account: &str, region: &str, repository: &str) -> RepoLocation {
    RepoLocation {
        account: account.into(),
        region: region.into(),
        repository: repository.into(),
    }
}

fn tag(s: &str) -> Tag {
    Tag::new(s).expect("valid tag")
}

/// A small but realistic OCI image manifest; `seed` makes it unique.
pub fn manifest(seed: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{:0>64}","size":7023}},"layers":[],"annotations":{{"seed":"{seed}"}}}}"#,
        seed.len()
    )
}

/// Runs every registry check against `port`, seeding through `fixture` in `account`.
pub async fn run_all(port: &dyn Registry, fixture: &dyn RegistryFixture, account: &str) -> Check {
    image_lookup(port, fixture, account).await?;
    tagged_images(port, fixture, account).await?;
    repository_settings(port, fixture, account).await?;
    replication_rules(port, fixture, account).await?;
    Ok(())
}

/// `image` finds a tag with its digest, reports a missing tag and a missing repository as answers.
pub async fn image_lookup(
    port: &dyn Registry,
    fixture: &dyn RegistryFixture,
    account: &str,
) -> Check {
    let repo = loc(account, "us-west-2", "conformance/lookup");
    fixture.create_repository(&repo, false).await;
    let digest = fixture
        .push(&repo, &tag("v1"), &manifest("lookup-v1"))
        .await;
    match port.image(&repo, &tag("v1")).await {
        Ok(ImageLookup::Found(d)) => {
            ensure!(
                d.digest == digest,
                "image: digest {} differs from pushed {}",
                d.digest,
                digest
            );
            ensure!(
                d.tags.contains(&tag("v1")),
                "image: tags {:?} lack v1",
                d.tags
            );
        }
        other => {
            return Err(format!(
                "image: expected Found for an existing tag, got {other:?}"
            ));
        }
    }
    let got = port.image(&repo, &tag("v2")).await;
    ensure!(
        matches!(got, Ok(ImageLookup::ImageMissing)),
        "image: expected ImageMissing for an absent tag, got {got:?}"
    );
    let absent = loc(account, "us-west-2", "conformance/absent");
    let got = port.image(&absent, &tag("v1")).await;
    ensure!(
        matches!(got, Ok(ImageLookup::RepositoryMissing)),
        "image: expected RepositoryMissing, got {got:?}"
    );
    Ok(())
}

/// `tagged_images` lists one entry per tag with its digest; a missing repository is NotFound.
pub async fn tagged_images(
    port: &dyn Registry,
    fixture: &dyn RegistryFixture,
    account: &str,
) -> Check {
    let repo = loc(account, "us-west-2", "conformance/tags");
    fixture.create_repository(&repo, false).await;
    let a = fixture
        .push(&repo, &tag("aaaaaaa"), &manifest("tags-a"))
        .await;
    let b = fixture
        .push(&repo, &tag("bbbbbbb"), &manifest("tags-b"))
        .await;
    let same = fixture
        .push(&repo, &tag("latest"), &manifest("tags-b"))
        .await;
    ensure!(
        same == b,
        "push: the same manifest must give the same digest"
    );
    let mut got: Vec<(String, Digest)> = port
        .tagged_images(&repo)
        .await
        .map_err(|e| format!("tagged_images: {e}"))?
        .into_iter()
        .map(|t| (t.tag.to_string(), t.digest))
        .collect();
    got.sort();
    let want = vec![
        ("aaaaaaa".to_string(), a),
        ("bbbbbbb".to_string(), b.clone()),
        ("latest".to_string(), b),
    ];
    ensure!(got == want, "tagged_images: got {got:?}, want {want:?}");
    let missing = port
        .tagged_images(&loc(account, "us-west-2", "conformance/none"))
        .await;
    ensure!(
        matches!(&missing, Err(e) if e.is_not_found()),
        "tagged_images: expected NotFound, got {missing:?}"
    );
    Ok(())
}

/// `repository` reports tag mutability; a missing repository is NotFound.
pub async fn repository_settings(
    port: &dyn Registry,
    fixture: &dyn RegistryFixture,
    account: &str,
) -> Check {
    let mutable = loc(account, "us-east-1", "conformance/mutable");
    let immutable = loc(account, "us-east-1", "conformance/immutable");
    fixture.create_repository(&mutable, true).await;
    fixture.create_repository(&immutable, false).await;
    let m = port
        .repository(&mutable)
        .await
        .map_err(|e| format!("repository: {e}"))?;
    let i = port
        .repository(&immutable)
        .await
        .map_err(|e| format!("repository: {e}"))?;
    ensure!(
        m.tag_mutable && !i.tag_mutable,
        "repository: mutability wrong: {m:?} {i:?}"
    );
    let missing = port
        .repository(&loc(account, "us-east-1", "conformance/none"))
        .await;
    ensure!(
        matches!(&missing, Err(e) if e.is_not_found()),
        "repository: expected NotFound, got {missing:?}"
    );
    Ok(())
}

/// `replication_rules` returns what was configured.
pub async fn replication_rules(
    port: &dyn Registry,
    fixture: &dyn RegistryFixture,
    account: &str,
) -> Check {
    let rules = vec![ReplicationRule {
        destinations: vec![
            ("222222222222".into(), "us-east-1".into()),
            ("222222222222".into(), "eu-west-1".into()),
        ],
        repository_prefixes: vec!["staging/".into()],
    }];
    fixture
        .put_replication_rules(account, "us-west-2", &rules)
        .await;
    let got = port
        .replication_rules(account, "us-west-2")
        .await
        .map_err(|e| format!("replication_rules: {e}"))?;
    ensure!(
        got == rules,
        "replication_rules: got {got:?}, want {rules:?}"
    );
    ensure!(
        got[0].covers("staging/api", "222222222222", "eu-west-1"),
        "covers: staging/api must be covered"
    );
    ensure!(
        !got[0].covers("prod/api", "222222222222", "eu-west-1"),
        "covers: prod/api must not be covered"
    );
    Ok(())
}
