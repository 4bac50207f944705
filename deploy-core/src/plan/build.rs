//! CI's build plan: the release tag from branch and commit, and the push order with the
//! sentinel last.

use serde::{Serialize, Serializer};

use crate::config::{Config, Environment};
use crate::model::{ImageRef, Tag};

/// What CI builds and pushes, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    /// Environment.
    pub environment: String,
    /// The shared tag.
    pub tag: Tag,
    /// The registry every image is pushed to, `{account}.dkr.ecr.{region}.amazonaws.com`:
    /// what `docker login` signs in to.
    pub registry: String,
    /// The registry's AWS account.
    pub account: String,
    /// The registry's region: the environment's primary one (replication copies to the others).
    pub region: String,
    /// Images to push, in this order; the sentinel is last.
    pub pushes: Vec<Push>,
}

/// One image CI builds and pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The service it is built for.
    pub service: String,
    /// Whether it is the sentinel (pushed last).
    pub sentinel: bool,
    /// Where it goes.
    pub image: ImageRef,
}

/// For scripts: `{"service", "sentinel", "image": "<registry>/<repository>:<tag>", "repository"}`,
/// so that `docker build -t "$image"` and `aws ecr ... --repository-name "$repository"` need no
/// string surgery.
impl Serialize for Push {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            service: &'a str,
            sentinel: bool,
            image: String,
            repository: &'a str,
        }
        Wire {
            service: &self.service,
            sentinel: self.sentinel,
            image: self.image.to_string(),
            repository: &self.image.location.repository,
        }
        .serialize(serializer)
    }
}

/// Length of the short commit hash used as the tag.
pub const SHORT_SHA: usize = 12;

/// The release tag for commit `sha` built from `branch` (when given, it must be the
/// environment's branch). The tag is the commit's first 12 hex digits, lowercase.
pub fn build_tag(env: &Environment, sha: &str, branch: Option<&str>) -> Result<Tag, String> {
    let sha = sha.trim().to_ascii_lowercase();
    if sha.len() < 7 || sha.len() > 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{sha:?} is not a commit hash: give 7 to 64 hex digits (git rev-parse HEAD)"
        ));
    }
    if let (Some(b), Some(want)) = (branch, env.branch.as_deref())
        && b != want
    {
        return Err(format!(
            "branch {b:?} does not deploy to {}: its branch is {want:?}",
            env.name
        ));
    }
    let tag = Tag::new(&sha[..sha.len().min(SHORT_SHA)]).map_err(|e| e.to_string())?;
    if !env.tags.admits(tag.as_str()) {
        return Err(format!(
            "tag {tag} is not admitted by {}'s tags.allow/ignore; the watcher would never pick it up",
            env.name
        ));
    }
    Ok(tag)
}

/// The push list for `tag`: every service into the environment's primary region (replication
/// copies to the other regions), the sentinel last so that "the sentinel has T" implies
/// "every image has T" for anyone who still relies on it.
pub fn push_order(config: &Config, env: &Environment, tag: &Tag) -> BuildPlan {
    let region = &env.registry.regions[0];
    let mut services: Vec<_> = config.services.iter().collect();
    services.sort_by_key(|s| s.sentinel);
    let pushes: Vec<Push> = services
        .into_iter()
        .map(|s| Push {
            service: s.name.clone(),
            sentinel: s.sentinel,
            image: ImageRef {
                location: env.location(s, region),
                tag: tag.clone(),
            },
        })
        .collect();
    BuildPlan {
        environment: env.name.clone(),
        tag: tag.clone(),
        registry: env.location(config.sentinel(), region).registry_host(),
        account: env.registry.account.clone(),
        region: region.clone(),
        pushes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EXAMPLE;

    #[test]
    fn tags_and_order() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let staging = config.environment("staging").unwrap();
        let check = |sha: &str, branch: Option<&str>, want: Result<&str, &str>| {
            let got = build_tag(staging, sha, branch).map(|t| t.to_string());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{sha}: got {g:?}, want {w:?}"),
            }
        };
        check(
            "0123456789abcdef0123456789abcdef01234567",
            None,
            Ok("0123456789ab"),
        );
        check("ABCDEF1", Some("staging"), Ok("abcdef1"));
        check("abc", None, Err("not a commit hash"));
        check("xyz1234", None, Err("not a commit hash"));
        check("abcdef1", Some("main"), Err("does not deploy to staging"));
        let plan = push_order(&config, staging, &Tag::new("abcdef1").unwrap());
        let order: Vec<(String, bool, String)> = plan
            .pushes
            .iter()
            .map(|p| (p.service.clone(), p.sentinel, p.image.to_string()))
            .collect();
        let image = |repository: &str| {
            format!("111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/{repository}:abcdef1")
        };
        assert_eq!(
            order,
            [
                ("api".into(), false, image("api")),
                ("worker".into(), false, image("worker")),
                ("logserver".into(), true, image("logserver")),
            ]
        );
    }

    #[test]
    fn the_json_plan_names_registry_and_services() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let plan = push_order(&config, prod, &Tag::new("abcdef1").unwrap());
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "environment": "prod",
                "tag": "abcdef1",
                "registry": "222222222222.dkr.ecr.us-west-2.amazonaws.com",
                "account": "222222222222",
                "region": "us-west-2",
                "pushes": [
                    { "service": "api", "sentinel": false, "repository": "staging/api",
                      "image": "222222222222.dkr.ecr.us-west-2.amazonaws.com/staging/api:abcdef1" },
                    { "service": "worker", "sentinel": false, "repository": "staging/worker",
                      "image": "222222222222.dkr.ecr.us-west-2.amazonaws.com/staging/worker:abcdef1" },
                    { "service": "logserver", "sentinel": true, "repository": "staging/logserver",
                      "image": "222222222222.dkr.ecr.us-west-2.amazonaws.com/staging/logserver:abcdef1" },
                ],
            })
        );
    }
}
