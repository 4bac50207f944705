//! `[environments.NAME]`: each environment's registry, Applications, waves and sync policy,
//! with its other keys handed to their sections (`image_override`, `tags`, `timing`,
//! `notify`, `state`, `checks`); and the promotion chain across environments
//! (`promote_from`).

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::field::{Invalid, nonempty, unique};
use super::names::{OBJECT_NAME_RULE, expand, object_name, object_name_error, template};
use super::raw::{RawEnvironment, RawRegistry, RawSync};
use super::{Cluster, Environment, RegistryConfig, Service, timing};
use crate::model::SyncMode;

/// Every environment, by name; each `promote_from` names another, and no chain of them is a
/// cycle.
pub(super) fn validate(
    raw: &BTreeMap<Spanned<String>, Spanned<RawEnvironment>>,
    app: &str,
    clusters: &[Cluster],
    services: &[Service],
) -> Result<BTreeMap<String, Environment>, Invalid> {
    if raw.is_empty() {
        return Err((0..0, "no [environments.NAME]: add at least one".into()));
    }
    let names: BTreeSet<&str> = raw.keys().map(|k| k.get_ref().as_str()).collect();
    let mut environments = BTreeMap::new();
    for (name, env) in raw {
        let e = env.get_ref();
        let env_name = object_name(name, "environment name")?;
        if let Some(src) = &e.promote_from {
            promote_from(src, &env_name, &names)?;
        }
        environments.insert(
            env_name.clone(),
            e.validate(app, &env_name, clusters, services)?,
        );
    }
    no_cycles(raw)?;
    Ok(environments)
}

/// `promote_from` of the environment `name`: another environment of the file.
fn promote_from(src: &Spanned<String>, name: &str, names: &BTreeSet<&str>) -> Result<(), Invalid> {
    if src.get_ref() == name {
        return Err((
            src.span(),
            format!("environment {name:?} cannot promote from itself"),
        ));
    }
    if !names.contains(src.get_ref().as_str()) {
        return Err((
            src.span(),
            format!(
                "promote_from = {:?} names no environment; known: {}",
                src.get_ref(),
                names.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

/// A promotion chain must end: no cycles through `promote_from` (each names a known
/// environment, checked before).
fn no_cycles(raw: &BTreeMap<Spanned<String>, Spanned<RawEnvironment>>) -> Result<(), Invalid> {
    for (name, env) in raw {
        let mut seen = BTreeSet::from([name.get_ref().clone()]);
        let mut cur = env.get_ref();
        while let Some(src) = &cur.promote_from {
            if !seen.insert(src.get_ref().clone()) {
                return Err((
                    src.span(),
                    format!("promote_from forms a cycle through {:?}", src.get_ref()),
                ));
            }
            cur = raw
                .iter()
                .find(|(k, _)| k.get_ref() == src.get_ref())
                .map(|(_, v)| v.get_ref())
                .expect("checked");
        }
    }
    Ok(())
}

impl RawEnvironment {
    /// The environment `name` of the application `app`. The keys are checked in this order,
    /// which is the order of the errors a file with several gets.
    fn validate(
        &self,
        app: &str,
        name: &str,
        clusters: &[Cluster],
        services: &[Service],
    ) -> Result<Environment, Invalid> {
        let registry = registry(&self.registry)?;
        let application = application(&self.application, app, name, clusters)?;
        let application_set = self
            .application_set
            .as_ref()
            .map(|s| application_set(s, app, name))
            .transpose()?;
        let (image_override, pin) = self
            .image_override
            .get_ref()
            .validate(self.image_override.span(), services)?;
        let waves = waves(self.waves.as_ref(), clusters)?;
        let (timeout, soak) = timing::timeout_and_soak(self)?;
        let tags = self.tags.validate()?;
        let notify = self
            .notify
            .iter()
            .map(|n| n.get_ref().validate(n.span()))
            .collect::<Result<_, _>>()?;
        let state = self
            .state
            .as_ref()
            .map(|st| st.get_ref().validate(st.span()))
            .transpose()?;
        unique(self.checks.iter().map(|c| &c.get_ref().name), "check")?;
        let checks = self
            .checks
            .iter()
            .map(|c| c.get_ref().validate(c.span()))
            .collect::<Result<_, _>>()?;
        Ok(Environment {
            name: name.to_owned(),
            branch: self.branch.clone(),
            registry,
            sync: self.sync_mode(),
            prune: self.prune,
            application,
            application_set,
            image_override,
            pin,
            tags,
            promote_from: self.promote_from.as_ref().map(|s| s.get_ref().clone()),
            waves,
            soak,
            timeout,
            notify,
            state,
            checks,
        })
    }

    /// `sync`, with `prune` and `self_heal` (on unless turned off) for automated sync.
    fn sync_mode(&self) -> SyncMode {
        match self.sync {
            RawSync::Automated => SyncMode::Automated {
                prune: self.prune,
                self_heal: self.self_heal.unwrap_or(true),
            },
            RawSync::Manual => SyncMode::Manual,
        }
    }
}

/// The registry: a 12-digit account, at least one region, each once.
fn registry(reg: &RawRegistry) -> Result<RegistryConfig, Invalid> {
    let account = reg.account.get_ref();
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err((
            reg.account.span(),
            format!("registry account {account:?} must be a 12-digit AWS account id"),
        ));
    }
    if reg.regions.get_ref().is_empty() {
        return Err((
            reg.regions.span(),
            "registry regions cannot be empty; list at least one AWS region".into(),
        ));
    }
    unique(reg.regions.get_ref().iter(), "region")?;
    let regions = reg
        .regions
        .get_ref()
        .iter()
        .map(|r| nonempty(r, "region"))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = reg
        .repository_prefix
        .as_ref()
        .map(|p| p.get_ref().clone())
        .unwrap_or_default();
    if let Some(p) = reg
        .repository_prefix
        .as_ref()
        .filter(|p| p.get_ref().starts_with('/'))
    {
        return Err((p.span(), "repository_prefix cannot start with '/'".into()));
    }
    Ok(RegistryConfig {
        account: account.clone(),
        regions,
        repository_prefix: prefix,
        aws_profile: reg.aws_profile.clone(),
    })
}

/// The Application name template: one valid, distinct Kubernetes name per cluster.
fn application(
    s: &Spanned<String>,
    app: &str,
    name: &str,
    clusters: &[Cluster],
) -> Result<String, Invalid> {
    let application = template(s, "application", &["app", "env", "cluster", "region"])?;
    if !application.contains("{cluster}") && !application.contains("{region}") && clusters.len() > 1
    {
        return Err((
            s.span(),
            format!(
                "application {application:?} must contain {{cluster}} (or {{region}}): there is one Application per cluster"
            ),
        ));
    }
    // Every cluster needs its own Application: `{region}` alone is not enough when two
    // clusters share a region.
    let mut names = BTreeSet::new();
    for c in clusters {
        let n = expand(&application, app, name, Some(c));
        if let Some(why) = object_name_error(&n) {
            return Err((
                s.span(),
                format!(
                    "application {application:?} names the Application of cluster {:?} {n:?}, \
                     which is not a valid Kubernetes name: {why}; {OBJECT_NAME_RULE}",
                    c.name
                ),
            ));
        }
        if !names.insert(n.clone()) {
            return Err((
                s.span(),
                format!(
                    "application {application:?} gives two clusters the same name {n:?}; use {{cluster}}"
                ),
            ));
        }
    }
    Ok(application)
}

/// The ApplicationSet name template: a valid Kubernetes name.
fn application_set(s: &Spanned<String>, app: &str, name: &str) -> Result<String, Invalid> {
    let t = template(s, "application_set", &["app", "env"])?;
    let n = expand(&t, app, name, None);
    match object_name_error(&n) {
        None => Ok(t),
        Some(why) => Err((
            s.span(),
            format!(
                "application_set {t:?} names the ApplicationSet {n:?}, which is not a \
                 valid Kubernetes name: {why}; {OBJECT_NAME_RULE}"
            ),
        )),
    }
}

/// The waves: every cluster in exactly one, none empty; without `waves`, one cluster a
/// wave in file order.
fn waves(
    w: Option<&Spanned<Vec<Vec<Spanned<String>>>>>,
    clusters: &[Cluster],
) -> Result<Vec<Vec<String>>, Invalid> {
    let Some(w) = w else {
        return Ok(clusters.iter().map(|c| vec![c.name.clone()]).collect());
    };
    let mut seen = BTreeSet::new();
    for wave in w.get_ref() {
        if wave.is_empty() {
            return Err((w.span(), "a wave cannot be empty".into()));
        }
        for c in wave {
            if !clusters.iter().any(|k| &k.name == c.get_ref()) {
                let known: Vec<&str> = clusters.iter().map(|k| k.name.as_str()).collect();
                return Err((
                    c.span(),
                    format!(
                        "wave names unknown cluster {:?}; known: {}",
                        c.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
            if !seen.insert(c.get_ref().clone()) {
                return Err((
                    c.span(),
                    format!(
                        "cluster {:?} is in more than one wave; list it once",
                        c.get_ref()
                    ),
                ));
            }
        }
    }
    if let Some(missing) = clusters.iter().find(|c| !seen.contains(&c.name)) {
        return Err((
            w.span(),
            format!(
                "waves do not include cluster {:?}; every cluster must be in exactly one wave",
                missing.name
            ),
        ));
    }
    Ok(w.get_ref()
        .iter()
        .map(|wave| wave.iter().map(|c| c.get_ref().clone()).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::check;
    use crate::config::{Config, EXAMPLE};

    #[test]
    fn errors() {
        check(
            "[[\"us-west-2\"], [\"us-east-1\", \"eu-west-1\"]]",
            "[[\"us-west-2\"], [\"us-east-1\"]]",
            "do not include cluster \"eu-west-1\"",
        );
        check(
            "[[\"us-west-2\"], [\"us-east-1\", \"eu-west-1\"]]",
            "[[\"us-west-2\"], [\"us-west-2\", \"us-east-1\", \"eu-west-1\"]]",
            "more than one wave",
        );
        check(
            "[[\"us-west-2\"], [\"us-east-1\", \"eu-west-1\"]]",
            "[[\"us-west-2\"], [\"mars-1\", \"us-east-1\", \"eu-west-1\"]]",
            "unknown cluster \"mars-1\"",
        );
        check(
            "promote_from = \"staging\"",
            "promote_from = \"stagin\"",
            "names no environment",
        );
        check(
            "promote_from = \"staging\"",
            "promote_from = \"prod\"",
            "cannot promote from itself",
        );
        check(
            "application = \"myapp-prod-{cluster}\"",
            "application = \"myapp-prod-{clustr}\"",
            "unknown placeholder {clustr}",
        );
        check(
            "application = \"myapp-prod-{cluster}\"",
            "application = \"myapp-prod\"",
            "must contain {cluster}",
        );
        check(
            "application_set = \"myapp-prod\"",
            "application_set = \"myapp-{cluster}\"",
            "unknown placeholder {cluster}",
        );
        check(
            "sync = \"manual\"",
            "sync = \"sometimes\"",
            "unknown variant `sometimes`",
        );
        check(
            "account = \"222222222222\"",
            "account = \"22\"",
            "12-digit AWS account id",
        );
    }

    #[test]
    fn two_clusters_cannot_share_an_application() {
        let text = EXAMPLE
            .replacen(
                "name = \"us-east-1\"\nregion = \"us-east-1\"",
                "name = \"us-east-1\"\nregion = \"us-west-2\"",
                1,
            )
            .replacen(
                "application = \"myapp-prod-{cluster}\"",
                "application = \"myapp-prod-{region}\"",
                1,
            );
        let e = Config::parse("deploy.toml", &text).unwrap_err();
        assert!(
            e.message.contains("same name \"myapp-prod-us-west-2\""),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_rejected() {
        let text = EXAMPLE.replacen(
            "branch = \"staging\"",
            "branch = \"staging\"\npromote_from = \"prod\"",
            1,
        );
        let e = Config::parse("deploy.toml", &text).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }
}
