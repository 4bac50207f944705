//! `deploy build plan`: the tag and ordered push list for CI.

use anyhow::Result;

use deploy_core::config::Config;
use deploy_core::plan::build::{build_tag, push_order};

use crate::exit::{Exit, UsageError};
use crate::output::Output;

/// Prints `TAG=...` then one image reference per line, in push order (sentinel last); with
/// `--output json`, the [`BuildPlan`](deploy_core::plan::build::BuildPlan) (registry, and
/// service, image and repository of every push).
pub(crate) fn plan(
    config: &Config,
    out: Output,
    env: &str,
    sha: &str,
    branch: Option<&str>,
) -> Result<Exit> {
    let env = config.environment(env).map_err(UsageError)?;
    let tag = build_tag(env, sha, branch).map_err(UsageError)?;
    let plan = push_order(config, env, &tag);
    out.text(format!("TAG={tag}"));
    for p in &plan.pushes {
        out.text(&p.image);
    }
    out.result(&plan);
    Ok(Exit::Success)
}
