//! CI's build plan: the release tag from branch and commit, and the push order with the
//! sentinel last.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Environment};
use crate::model::{ImageRef, Tag};

/// What CI builds and pushes, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// Environment.
    pub environment: String,
    /// The shared tag.
    pub tag: Tag,
    /// Images to push, in this order; the sentinel is last.
    pub pushes: Vec<ImageRef>,
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
    BuildPlan {
        environment: env.name.clone(),
        tag: tag.clone(),
        pushes: services
            .into_iter()
            .map(|s| ImageRef {
                location: env.location(s, region),
                tag: tag.clone(),
            })
            .collect(),
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
        let order: Vec<String> = plan.pushes.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            order,
            [
                "111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/api:abcdef1",
                "111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/worker:abcdef1",
                "111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/logserver:abcdef1",
            ]
        );
    }
}
