//! [`EcrRegistry`]: the registry port over Amazon ECR.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use aws_sdk_ecr::types::{
    DescribeImagesFilter, ImageDetail as EcrImageDetail, ImageIdentifier, ImageTagMutability,
    ReplicationStatus as EcrReplicationStatus, RepositoryFilterType, TagStatus,
};
use aws_smithy_types::DateTime;
use deploy_core::config::Config;
use deploy_core::model::{Digest, RepoLocation, Tag};
use deploy_core::port::{
    ImageDetail, ImageLookup, Registry, ReplicationRule, ReplicationState, ReplicationStatus,
    RepositoryInfo, TaggedImage,
};
use deploy_core::{Error, Result};
use jiff::Timestamp;

use crate::clients::{Clients, EcrOptions};
use crate::errors::Call;

/// The most images one DescribeImages page may hold.
const PAGE_SIZE: i32 = 1000;

/// The registry port over Amazon ECR, for every account of a configuration.
///
/// Cheap to share behind an `Arc`; clients are created on first use.
pub struct EcrRegistry {
    clients: Clients,
}

impl fmt::Debug for EcrRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcrRegistry")
            .field("profiles", self.clients.profiles())
            .field("options", self.clients.options())
            .finish_non_exhaustive()
    }
}

impl EcrRegistry {
    /// A registry for every environment of `config`, with default [`EcrOptions`].
    ///
    /// Fails with [`Error::Invalid`] when two environments reach one account through
    /// different `aws_profile`s.
    pub fn new(config: &Config) -> Result<Self> {
        Self::with_options(config, EcrOptions::default())
    }

    /// A registry for every environment of `config`.
    ///
    /// Each environment's account is reached through its `aws_profile` (the default
    /// chain when unset). Fails with [`Error::Invalid`] when two environments reach one
    /// account through different profiles.
    pub fn with_options(config: &Config, options: EcrOptions) -> Result<Self> {
        let mut seen: BTreeMap<&str, (&str, Option<&str>)> = BTreeMap::new();
        for env in config.environments.values() {
            let account = env.registry.account.as_str();
            let profile = env.registry.aws_profile.as_deref();
            match seen.get(account) {
                Some((other, p)) if *p != profile => {
                    return Err(Error::invalid(format!(
                        "environments {other} and {} reach AWS account {account} through different aws_profile settings ({} and {}); give them the same aws_profile",
                        env.name,
                        p.unwrap_or("none"),
                        profile.unwrap_or("none"),
                    )));
                }
                Some(_) => {}
                None => {
                    seen.insert(account, (&env.name, profile));
                }
            }
        }
        Ok(Self::for_accounts(
            seen.into_iter()
                .map(|(account, (_, profile))| (account.to_owned(), profile.map(str::to_owned))),
            options,
        ))
    }

    /// A registry reaching each account through the given AWS profile (`None`: the
    /// default chain). Accounts not listed are reached through the default chain.
    pub fn for_accounts(
        accounts: impl IntoIterator<Item = (String, Option<String>)>,
        options: EcrOptions,
    ) -> Self {
        Self {
            clients: Clients::new(options, accounts.into_iter().collect()),
        }
    }
}

#[async_trait]
impl Registry for EcrRegistry {
    async fn image(&self, repo: &RepoLocation, tag: &Tag) -> Result<ImageLookup> {
        let lease = self
            .clients
            .lease("DescribeImages", &repo.account, &repo.region)
            .await;
        let result = lease
            .client
            .describe_images()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .image_ids(ImageIdentifier::builder().image_tag(tag.as_str()).build())
            .send()
            .await;
        let what = format!("image {}:{tag}", repo.repository);
        match result {
            Ok(out) => {
                // One tag names one image; prefer the detail that carries it, in case a
                // registry answers with more.
                let details = out.image_details();
                let detail = details
                    .iter()
                    .find(|d| d.image_tags().iter().any(|t| t == tag.as_str()))
                    .or_else(|| details.first());
                match detail {
                    Some(d) => Ok(ImageLookup::Found(image_detail(&lease.call, &what, d)?)),
                    None => Ok(ImageLookup::ImageMissing),
                }
            }
            Err(e) => match e.as_service_error() {
                Some(se) if se.is_image_not_found_exception() => Ok(ImageLookup::ImageMissing),
                Some(se) if se.is_repository_not_found_exception() => {
                    Ok(ImageLookup::RepositoryMissing)
                }
                _ => Err(lease.call.sdk_error(&what, &e)),
            },
        }
    }

    async fn tagged_images(&self, repo: &RepoLocation) -> Result<Vec<TaggedImage>> {
        let lease = self
            .clients
            .lease("DescribeImages", &repo.account, &repo.region)
            .await;
        let what = format!("repository {}", repo.repository);
        let mut pages = lease
            .client
            .describe_images()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .filter(
                DescribeImagesFilter::builder()
                    .tag_status(TagStatus::Tagged)
                    .build(),
            )
            .into_paginator()
            .page_size(PAGE_SIZE)
            .send();
        let mut images = Vec::new();
        let mut first = true;
        loop {
            // Every page is one request: each after the first waits for the rate bound too.
            if !std::mem::take(&mut first) {
                lease.pace().await;
            }
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| lease.call.sdk_error(&what, &e))?;
            for d in page.image_details() {
                let detail = image_detail(&lease.call, &what, d)?;
                images.extend(detail.tags.into_iter().map(|tag| TaggedImage {
                    tag,
                    digest: detail.digest.clone(),
                    pushed_at: detail.pushed_at,
                }));
            }
        }
        Ok(images)
    }

    async fn replication_status(
        &self,
        repo: &RepoLocation,
        tag: &Tag,
    ) -> Result<Vec<ReplicationStatus>> {
        let lease = self
            .clients
            .lease(
                "DescribeImageReplicationStatus",
                &repo.account,
                &repo.region,
            )
            .await;
        let what = format!("image {}:{tag}", repo.repository);
        let out = lease
            .client
            .describe_image_replication_status()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .image_id(ImageIdentifier::builder().image_tag(tag.as_str()).build())
            .send()
            .await
            .map_err(|e| lease.call.sdk_error(&what, &e))?;
        Ok(out
            .replication_statuses()
            .iter()
            .map(|s| ReplicationStatus {
                account: s.registry_id().unwrap_or(&repo.account).to_owned(),
                region: s.region().unwrap_or_default().to_owned(),
                state: replication_state(s.status(), s.failure_code()),
            })
            .collect())
    }

    async fn replication_rules(&self, account: &str, region: &str) -> Result<Vec<ReplicationRule>> {
        let lease = self
            .clients
            .lease("DescribeRegistry", account, region)
            .await;
        let what = "the registry settings";
        let out = lease
            .client
            .describe_registry()
            .send()
            .await
            .map_err(|e| lease.call.sdk_error(what, &e))?;
        // DescribeRegistry takes no registryId: it describes the caller's own registry,
        // so make sure the credentials belong to the account we were asked about.
        if let Some(id) = out.registry_id().filter(|id| *id != account) {
            return Err(Error::Permission {
                message: format!(
                    "the AWS credentials used for account {account} in {region} belong to account {id}: set aws_profile for account {account} in deploy.toml"
                ),
            });
        }
        let Some(config) = out.replication_configuration() else {
            return Ok(Vec::new());
        };
        config
            .rules()
            .iter()
            .map(|rule| {
                let repository_prefixes = rule
                    .repository_filters()
                    .iter()
                    .map(|f| match f.filter_type() {
                        RepositoryFilterType::PrefixMatch => Ok(f.filter().to_owned()),
                        other => Err(Error::invalid(format!(
                            "the replication rules of account {account} in {region} use the filter type {}, which deploy does not know; upgrade deploy",
                            other.as_str()
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(ReplicationRule {
                    destinations: rule
                        .destinations()
                        .iter()
                        .map(|d| (d.registry_id().to_owned(), d.region().to_owned()))
                        .collect(),
                    repository_prefixes,
                })
            })
            .collect()
    }

    async fn repository(&self, repo: &RepoLocation) -> Result<RepositoryInfo> {
        let lease = self
            .clients
            .lease("DescribeRepositories", &repo.account, &repo.region)
            .await;
        let what = format!("repository {}", repo.repository);
        let out = lease
            .client
            .describe_repositories()
            .registry_id(&repo.account)
            .repository_names(&repo.repository)
            .send()
            .await
            .map_err(|e| lease.call.sdk_error(&what, &e))?;
        let Some(found) = out
            .repositories()
            .iter()
            .find(|r| r.repository_name() == Some(repo.repository.as_str()))
        else {
            return Err(Error::not_found(format!(
                "{what} in account {} in {}",
                repo.account, repo.region
            )));
        };
        Ok(RepositoryInfo {
            tag_mutable: found.image_tag_mutability().is_none_or(tag_mutable),
        })
    }
}

/// Whether tags of a repository with this setting can move: `IMMUTABLE` and
/// `IMMUTABLE_WITH_EXCLUSION` cannot (the exclusions are the exception, not the rule).
fn tag_mutable(mutability: &ImageTagMutability) -> bool {
    !mutability.as_str().starts_with("IMMUTABLE")
}

fn replication_state(
    status: Option<&EcrReplicationStatus>,
    failure: Option<&str>,
) -> ReplicationState {
    match status {
        Some(EcrReplicationStatus::Complete) => ReplicationState::Complete,
        Some(EcrReplicationStatus::InProgress) => ReplicationState::InProgress,
        Some(EcrReplicationStatus::Failed) => ReplicationState::Failed {
            reason: failure
                .unwrap_or("FAILED without a failure code")
                .to_owned(),
        },
        // A state this SDK does not know is not proof of a copy.
        Some(other) => ReplicationState::Failed {
            reason: format!("unknown replication status {}", other.as_str()),
        },
        None => ReplicationState::Failed {
            reason: "no replication status".to_owned(),
        },
    }
}

/// Converts an ECR image detail; tags that are not valid OCI tags are skipped.
fn image_detail(call: &Call<'_>, what: &str, d: &EcrImageDetail) -> Result<ImageDetail> {
    let bad = |why: String| {
        Error::invalid(format!(
            "ECR described {what} in account {} in {} with {why}",
            call.account, call.region
        ))
    };
    let digest = d
        .image_digest()
        .ok_or_else(|| bad("no imageDigest".to_owned()))
        .and_then(|s| Digest::new(s).map_err(|e| bad(e.to_string())))?;
    let pushed_at = d
        .image_pushed_at()
        .ok_or_else(|| bad("no imagePushedAt".to_owned()))
        .and_then(|t| timestamp(t).ok_or_else(|| bad(format!("imagePushedAt {t} out of range"))))?;
    let tags = d
        .image_tags()
        .iter()
        .filter_map(|t| match Tag::new(t.as_str()) {
            Ok(tag) => Some(tag),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an ECR tag that is not an OCI tag");
                None
            }
        })
        .collect();
    Ok(ImageDetail {
        digest,
        tags,
        pushed_at,
    })
}

fn timestamp(t: &DateTime) -> Option<Timestamp> {
    Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutability() {
        for (value, mutable) in [
            ("MUTABLE", true),
            ("IMMUTABLE", false),
            ("IMMUTABLE_WITH_EXCLUSION", false),
            ("MUTABLE_WITH_EXCLUSION", true),
        ] {
            assert_eq!(
                tag_mutable(&ImageTagMutability::from(value)),
                mutable,
                "{value}"
            );
        }
    }

    #[test]
    fn replication_states() {
        use EcrReplicationStatus as S;
        assert_eq!(
            replication_state(Some(&S::Complete), None),
            ReplicationState::Complete
        );
        assert_eq!(
            replication_state(Some(&S::InProgress), None),
            ReplicationState::InProgress
        );
        assert_eq!(
            replication_state(Some(&S::Failed), Some("KMS_ACCESS_DENIED")),
            ReplicationState::Failed {
                reason: "KMS_ACCESS_DENIED".into()
            }
        );
        assert!(matches!(
            replication_state(Some(&S::from("PAUSED")), None),
            ReplicationState::Failed { reason } if reason.contains("PAUSED")
        ));
    }

    #[test]
    fn timestamps_keep_fractions() {
        let t = timestamp(&DateTime::from_fractional_secs(1_499_287_667, 0.5)).unwrap();
        assert_eq!(t.as_millisecond(), 1_499_287_667_500);
    }

    #[test]
    fn conflicting_profiles_are_rejected() {
        let text = deploy_core::config::EXAMPLE.replace(
            r#"registry = { account = "111111111111", regions = ["us-west-2"], repository_prefix = "debug/" }"#,
            r#"registry = { account = "111111111111", regions = ["us-west-2"], repository_prefix = "debug/", aws_profile = "dev" }"#,
        );
        let config = Config::parse("deploy.toml", &text).unwrap();
        let err = EcrRegistry::new(&config).unwrap_err();
        assert!(
            err.to_string()
                .contains("environments debug and staging reach AWS account 111111111111"),
            "{err}"
        );
        let ok =
            EcrRegistry::new(&Config::parse("deploy.toml", deploy_core::config::EXAMPLE).unwrap())
                .unwrap();
        assert_eq!(ok.clients.profile("222222222222"), Some("prod"));
        assert_eq!(ok.clients.profile("111111111111"), None);
    }
}
