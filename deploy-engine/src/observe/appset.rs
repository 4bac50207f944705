//! The ApplicationSets that generate an environment's Applications, read from Argo CD.

use std::collections::BTreeMap;

use deploy_core::config::{Config, Environment};
use deploy_core::error::Result;
use deploy_core::plan::appset::*;
use deploy_core::port::{Application, ApplicationSet, ArgoCdInventory};

/// Reads the ApplicationSet of every Application in `apps` (by owner reference, else the
/// configured name), by name; `None` for one that does not exist.
pub async fn read(
    config: &Config,
    env: &Environment,
    apps: &BTreeMap<String, Option<Application>>,
    inventory: &dyn ArgoCdInventory,
) -> Result<BTreeMap<String, Option<ApplicationSet>>> {
    let mut out = BTreeMap::new();
    for app in apps.values().flatten() {
        let Some((name, _)) = owner(config, env, app) else {
            continue;
        };
        if out.contains_key(&name) {
            continue;
        }
        let set = match inventory.application_set(&name).await {
            Ok(s) => Some(s),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        out.insert(name, set);
    }
    Ok(out)
}
