//! What a promotion's plan needs, read (never written) from the registries and Argo CD.

use std::collections::BTreeMap;

use deploy_core::config::{Config, Environment};
use deploy_core::error::{Error, Result};
use deploy_core::model::Tag;
use deploy_core::plan::promotion::*;
use deploy_core::port::{Application, ArgoCd, ArgoCdInventory, Registry, ReplicationState};
use futures::future::join_all;

use super::appset;
use super::release::check_release;

/// Reads what [`plan`] needs. Only reads: nothing is changed.
///
/// It assumes the lock is an annotation of [`deploy_core::lock::carrier`]; a caller whose
/// lock lives elsewhere sets [`Observation::lock_carrier`] to `None`.
pub async fn observe(
    config: &Config,
    env: &Environment,
    intent: Intent,
    only_cluster: Option<&str>,
    registry: &dyn Registry,
    argocd: &dyn ArgoCd,
    inventory: &dyn ArgoCdInventory,
) -> Result<Observation> {
    let clusters: Vec<String> = config
        .clusters
        .iter()
        .filter(|c| only_cluster.is_none_or(|o| o == c.name))
        .map(|c| c.name.clone())
        .collect();
    if clusters.is_empty() {
        return Err(Error::invalid(format!(
            "no cluster named {:?} in the configuration",
            only_cluster.unwrap_or_default()
        )));
    }
    let source = env
        .promote_from
        .as_deref()
        .map(|s| config.environment(s).map_err(Error::invalid))
        .transpose()?;
    let mut source_apps = BTreeMap::new();
    let tag = match &intent {
        Intent::Promote { tag: Some(t) } | Intent::Rollback { tag: t, .. } => Some(t.clone()),
        Intent::Promote { tag: None } => {
            let src = source.ok_or_else(|| {
                Error::invalid(format!(
                    "environment {} has no promote_from: give the release with --tag",
                    env.name
                ))
            })?;
            source_apps = read_apps(
                config,
                src,
                argocd,
                &config
                    .clusters
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
            )
            .await?;
            source_target(config, src, &source_apps).ok()
        }
    };
    let mut obs = Observation {
        intent,
        clusters: clusters.clone(),
        source_apps,
        source_check: None,
        target_check: None,
        replication: BTreeMap::new(),
        target_apps: read_apps(config, env, argocd, &clusters).await?,
        application_sets: BTreeMap::new(),
        lock_carrier: deploy_core::lock::carrier(config, env),
    };
    obs.application_sets = appset::read(config, env, &obs.target_apps, inventory).await?;
    if let Some(tag) = tag {
        if let (Some(src), Intent::Promote { .. }) = (source, &obs.intent) {
            obs.source_check = Some(check_release(registry, config, src, &tag).await?);
        }
        let target = check_release(registry, config, env, &tag).await?;
        if let Some(src) = source.filter(|_| !target.is_complete()) {
            obs.replication = replication(registry, config, src, env, &tag).await;
        }
        obs.target_check = Some(target);
    }
    Ok(obs)
}

async fn read_apps(
    config: &Config,
    env: &Environment,
    argocd: &dyn ArgoCd,
    clusters: &[String],
) -> Result<BTreeMap<String, Option<Application>>> {
    let names: Vec<(String, String)> = clusters
        .iter()
        .filter_map(|c| config.cluster(c))
        .map(|c| (c.name.clone(), config.application_name(env, c)))
        .collect();
    let apps = join_all(names.iter().map(|(_, n)| argocd.application(n))).await;
    let mut out = BTreeMap::new();
    for ((cluster, _), app) in names.into_iter().zip(apps) {
        let app = match app {
            Ok(a) => Some(a),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        out.insert(cluster, app);
    }
    Ok(out)
}

/// Replication status of every service image from the source's primary region; unknown where the API says nothing.
async fn replication(
    registry: &dyn Registry,
    config: &Config,
    src: &Environment,
    env: &Environment,
    tag: &Tag,
) -> BTreeMap<String, BTreeMap<String, ReplicationState>> {
    let region = &src.registry.regions[0];
    let locations: Vec<_> = config
        .services
        .iter()
        .map(|s| src.location(s, region))
        .collect();
    let answers = join_all(
        locations
            .iter()
            .map(|l| registry.replication_status(l, tag)),
    )
    .await;
    config
        .services
        .iter()
        .zip(answers)
        .filter_map(|(s, a)| a.ok().map(|a| (s, a)))
        .map(|(s, statuses)| {
            let by_region = statuses
                .into_iter()
                .filter(|st| {
                    st.account == env.registry.account && env.registry.regions.contains(&st.region)
                })
                .map(|st| (st.region, st.state))
                .collect();
            (s.name.clone(), by_region)
        })
        .collect()
}
