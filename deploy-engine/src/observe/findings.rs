//! What `deploy audit` needs, read from the registries and Argo CD, and its checks measured once.

use std::collections::BTreeMap;

use deploy_core::check::Scope;
use deploy_core::config::{Config, Environment};
use deploy_core::error::Result;
use deploy_core::plan::findings::{AuditInput, CheckProbe, ProbeAnswer};
use deploy_core::plan::live::{live_tag, service_images};
use deploy_core::port::{Application, ArgoCd, ArgoCdInventory, Metrics, Registry};
use futures::future::join_all;

use super::appset;

/// Reads the audit input of `env`, assuming the lock is an annotation of
/// [`deploy_core::lock::carrier`] (set [`AuditInput::lock_carrier`] to `None` when it is not).
pub async fn observe(
    config: &Config,
    env: &Environment,
    registry: &dyn Registry,
    argocd: &dyn ArgoCd,
    inventory: &dyn ArgoCdInventory,
) -> Result<AuditInput> {
    let mut input = AuditInput::default();
    for cluster in &config.clusters {
        let app = match argocd
            .application(&config.application_name(env, cluster))
            .await
        {
            Ok(a) => Some(a),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        input.apps.insert(cluster.name.clone(), app);
    }
    if let Some(name) = config.application_set_name(env) {
        let sets = inventory.application_sets().await?;
        input.application_set = sets.into_iter().find(|s| s.name == name);
        input.application_set_missing = input.application_set.is_none();
    }
    if let Some(src) = env
        .promote_from
        .as_deref()
        .and_then(|s| config.environments.get(s))
    {
        for region in &src.registry.regions {
            input.source_rules.insert(
                region.clone(),
                registry
                    .replication_rules(&src.registry.account, region)
                    .await?,
            );
        }
    }
    let locations: Vec<_> = config
        .services
        .iter()
        .flat_map(|s| env.registry.regions.iter().map(move |r| env.location(s, r)))
        .collect();
    let infos = join_all(locations.iter().map(|l| registry.repository(l))).await;
    for (loc, info) in locations.into_iter().zip(infos) {
        let info = match info {
            Ok(i) => Some(i),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        input
            .repositories
            .insert((loc.repository, loc.region), info);
    }
    input.clusters = inventory.clusters().await?;
    input.application_sets = appset::read(config, env, &input.apps, inventory).await?;
    input.lock_carrier = deploy_core::lock::carrier(config, env);
    Ok(input)
}

/// Measures each check of `env` once on each of its clusters, all at once, each within
/// [`deploy_core::check::MEASURE_TIMEOUT`]. `{release}` is the release the cluster's
/// Application runs now (from `apps`, as [`observe`] read them), `unknown` when it runs none
/// or several.
pub async fn observe_checks(
    config: &Config,
    env: &Environment,
    apps: &BTreeMap<String, Option<Application>>,
    metrics: &dyn Metrics,
) -> Vec<CheckProbe> {
    let mut resolved = Vec::new();
    for cluster in env.waves.iter().flatten().filter_map(|c| config.cluster(c)) {
        let live = apps
            .get(&cluster.name)
            .and_then(Option::as_ref)
            .map(|a| live_tag(a, &service_images(config, env, cluster)));
        let release = live
            .as_ref()
            .and_then(|l| l.tag())
            .unwrap_or("unknown")
            .to_owned();
        for c in &env.checks {
            let check = c.resolve(&Scope {
                cluster: &cluster.name,
                region: &cluster.region,
                env: &env.name,
                app: &config.app,
                release: &release,
            });
            resolved.push((cluster.name.clone(), check));
        }
    }
    let answers = join_all(resolved.iter().map(|(_, c)| async move {
        match tokio::time::timeout(
            deploy_core::check::MEASURE_TIMEOUT,
            metrics.measure(&c.source, &c.query),
        )
        .await
        {
            Ok(measured) => ProbeAnswer::of(measured),
            Err(_) => ProbeAnswer::Unreachable(format!(
                "no answer within {}s",
                deploy_core::check::MEASURE_TIMEOUT.as_secs()
            )),
        }
    }))
    .await;
    resolved
        .into_iter()
        .zip(answers)
        .map(|((cluster, check), answer)| CheckProbe {
            cluster,
            check,
            answer,
        })
        .collect()
}
