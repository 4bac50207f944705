//! `deploy render replication`: the replication configuration the source registry of an
//! environment needs so that every image promoted to it is already in each of its regions,
//! as the JSON of `aws ecr put-replication-configuration --replication-configuration` or as a
//! Terraform `aws_ecr_replication_configuration` resource. Pure: no AWS types.
//!
//! One rule: the source environment's repository prefix (`PREFIX_MATCH`; no filter when the
//! prefix is empty) copied to every (account, region) of the target environment, except the
//! source region itself when it is the same registry. ECR keeps one replication configuration
//! per registry and `PutReplicationConfiguration` replaces it whole, so the output says to merge
//! it with the rules already there; ECR allows at most 25 destinations over all rules.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, Environment};
use crate::hcl::Item;
use crate::port::ReplicationRule;

/// The most destinations ECR accepts in one registry's replication configuration.
pub const MAX_DESTINATIONS: usize = 25;

/// The replication configuration of one source registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// The environment whose images are copied (`promote_from`).
    pub source: String,
    /// Its registry's account.
    pub account: String,
    /// Its registry's region: where the configuration is put (the first listed region).
    pub region: String,
    /// The rules.
    pub rules: Vec<ReplicationRule>,
}

/// The replication `env` needs from its `promote_from` registry, or why there is none.
pub fn required(config: &Config, env: &Environment) -> Result<Replication, String> {
    let source = env.promote_from.as_deref().ok_or_else(|| {
        format!(
            "environment {} has no promote_from: nothing is replicated to it; give an environment that promotes from another",
            env.name
        )
    })?;
    let src = config.environment(source)?;
    let region = src.registry.regions[0].clone();
    let destinations: Vec<(String, String)> = env
        .registry
        .regions
        .iter()
        .filter(|r| !(env.registry.account == src.registry.account && **r == region))
        .map(|r| (env.registry.account.clone(), r.clone()))
        .collect();
    if destinations.is_empty() {
        return Err(format!(
            "environment {} pulls from {source}'s own registry ({} in {region}): there is nothing to replicate",
            env.name, src.registry.account
        ));
    }
    if destinations.len() > MAX_DESTINATIONS {
        return Err(format!(
            "environment {} has {} regions to replicate to; ECR allows {MAX_DESTINATIONS} destinations per registry",
            env.name,
            destinations.len()
        ));
    }
    let prefix = &src.registry.repository_prefix;
    Ok(Replication {
        source: source.to_owned(),
        account: src.registry.account.clone(),
        region,
        rules: vec![ReplicationRule {
            destinations,
            repository_prefixes: if prefix.is_empty() {
                Vec::new()
            } else {
                vec![prefix.clone()]
            },
        }],
    })
}

impl Replication {
    /// The `--replication-configuration` JSON of `aws ecr put-replication-configuration`.
    pub fn json(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|r| {
                let destinations: Vec<Value> = r
                    .destinations
                    .iter()
                    .map(|(account, region)| json!({ "region": region, "registryId": account }))
                    .collect();
                let mut rule = json!({ "destinations": destinations });
                if !r.repository_prefixes.is_empty() {
                    rule["repositoryFilters"] = r
                        .repository_prefixes
                        .iter()
                        .map(|p| json!({ "filter": p, "filterType": "PREFIX_MATCH" }))
                        .collect();
                }
                rule
            })
            .collect();
        json!({ "rules": rules })
    }

    /// The `aws ecr put-replication-configuration` command line that applies [`Replication::json`].
    pub fn command(&self) -> String {
        format!(
            "aws ecr put-replication-configuration --registry-id {} --region {} --replication-configuration file://replication.json",
            self.account, self.region
        )
    }

    /// An `aws_ecr_replication_configuration` resource, `terraform fmt`-clean, with a comment
    /// saying which provider applies it.
    pub fn terraform(&self) -> String {
        let rules: Vec<Item> = self
            .rules
            .iter()
            .map(|r| {
                let mut items: Vec<Item> = r
                    .destinations
                    .iter()
                    .map(|(account, region)| {
                        Item::Block(
                            "destination".into(),
                            vec![
                                Item::Attribute("region".into(), json!(region)),
                                Item::Attribute("registry_id".into(), json!(account)),
                            ],
                        )
                    })
                    .collect();
                items.extend(r.repository_prefixes.iter().map(|p| {
                    Item::Block(
                        "repository_filter".into(),
                        vec![
                            Item::Attribute("filter".into(), json!(p)),
                            Item::Attribute("filter_type".into(), json!("PREFIX_MATCH")),
                        ],
                    )
                }));
                Item::Block("rule".into(), items)
            })
            .collect();
        let body = vec![Item::Block("replication_configuration".into(), rules)];
        format!(
            "# Replication of the {source} registry ({account}, {region}): apply with an aws provider for that\n\
             # account and region. A registry has ONE replication configuration: merge these rules with any\n\
             # it already has (ecr-repos.hcl), or they replace them.\n{}",
            crate::hcl::resource_with(
                "aws_ecr_replication_configuration",
                &format!("{}_replication", self.source),
                &body
            ),
            source = self.source,
            account = self.account,
            region = self.region,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EXAMPLE;

    #[test]
    fn prod_is_replicated_from_staging() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let r = required(&config, config.environment("prod").unwrap()).unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str()),
            ("111111111111", "us-west-2")
        );
        assert_eq!(
            r.json(),
            json!({ "rules": [{
                "destinations": [
                    { "region": "us-west-2", "registryId": "222222222222" },
                    { "region": "us-east-1", "registryId": "222222222222" },
                    { "region": "eu-west-1", "registryId": "222222222222" },
                ],
                "repositoryFilters": [{ "filter": "staging/", "filterType": "PREFIX_MATCH" }],
            }]})
        );
        let tf = r.terraform();
        assert!(tf.contains("resource \"aws_ecr_replication_configuration\" \"staging_replication\" {\n  replication_configuration {\n    rule {\n      destination {\n        region      = \"us-west-2\"\n        registry_id = \"222222222222\"\n      }\n"), "{tf}");
        // The audit's rule agrees: the rule covers every target repository.
        let prod = config.environment("prod").unwrap();
        for s in &config.services {
            for region in &prod.registry.regions {
                let repo = config
                    .environment("staging")
                    .unwrap()
                    .location(s, "us-west-2")
                    .repository;
                assert!(r.rules[0].covers(&repo, &prod.registry.account, region));
            }
        }
    }

    #[test]
    fn an_environment_without_a_source_says_so() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let err = required(&config, config.environment("staging").unwrap()).unwrap_err();
        assert!(err.contains("no promote_from"), "{err}");
    }
}
