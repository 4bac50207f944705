//! The promotion plan: which release, the gates it must pass, and what each wave changes.
//!
//! `deploy_engine::observe::promotion::observe` reads the state the gates need through the ports; [`plan`] is a pure
//! function from that observation to a [`PromotionPlan`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::LiveTag;

use crate::image_override::{desired_tag, pinned_override, same_override};

use super::live::{is_at_release, live_at, live_digests, live_tag, service_images};
use super::release::ReleaseCheck;
use crate::config::{Cluster, Config, Environment};
use crate::error::Result;
use crate::model::{Release, SyncMode, Tag};
use crate::port::{
    Application, ApplicationSet, Health, OverrideValue, ReplicationState, SyncStatus,
};

/// Promote (from the source environment) or roll back (to an earlier release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Intent {
    /// `deploy promote`: `--tag`, else the release live in `promote_from`.
    Promote {
        /// `--tag`.
        tag: Option<Tag>,
    },
    /// `deploy rollback`: to this release (digests known from the audit trail, if any).
    Rollback {
        /// The release to return to.
        tag: Tag,
        /// Its digests as recorded when it was promoted.
        recorded: Option<Release>,
    },
}

/// Everything the gates look at, read through the ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// What was asked.
    pub intent: Intent,
    /// The clusters in scope (all, or `--cluster`).
    pub clusters: Vec<String>,
    /// Source environment's Applications by cluster (when promoting from one without `--tag`).
    pub source_apps: BTreeMap<String, Option<Application>>,
    /// The target tag in the source registry.
    pub source_check: Option<ReleaseCheck>,
    /// The target tag in the target registries.
    pub target_check: Option<ReleaseCheck>,
    /// Replication of each service's image to each target region, where the registry says.
    pub replication: BTreeMap<String, BTreeMap<String, ReplicationState>>,
    /// Target Applications by cluster (`None` when missing).
    pub target_apps: BTreeMap<String, Option<Application>>,
    /// The ApplicationSets that generate the target Applications, by name (`None`: not found).
    #[serde(default)]
    pub application_sets: BTreeMap<String, Option<ApplicationSet>>,
    /// The target Application that carries the lock annotation ([`crate::lock::carrier`]);
    /// `None` when the lock lives elsewhere (a Kubernetes Lease, a state store, the sandbox).
    #[serde(default)]
    pub lock_carrier: Option<String>,
}

/// The release live in every source cluster, or why there is none.
pub fn source_target(
    config: &Config,
    src: &Environment,
    apps: &BTreeMap<String, Option<Application>>,
) -> Result<Tag, Vec<String>> {
    let mut problems = Vec::new();
    let mut tags = BTreeMap::new();
    for cluster in &config.clusters {
        let name = config.application_name(src, cluster);
        match apps.get(&cluster.name).and_then(Option::as_ref) {
            None => problems.push(format!("{name}: not found in Argo CD")),
            Some(app) => {
                let live = live_tag(app, &service_images(config, src, cluster));
                if app.sync_status != SyncStatus::Synced || app.health != Health::Healthy {
                    let hint = if app.operation_pending {
                        " (an operation is running: wait for it, then retry)"
                    } else {
                        ""
                    };
                    problems.push(format!(
                        "{name}: {}/{}, not Synced and Healthy{hint}",
                        app.sync_status, app.health
                    ));
                }
                match live {
                    LiveTag::Tag(t) => {
                        tags.insert(t, name);
                    }
                    other => problems.push(format!("{name}: runs {other}, not one release")),
                }
            }
        }
    }
    if tags.len() > 1 {
        let list: Vec<String> = tags.iter().map(|(t, a)| format!("{a} runs {t}")).collect();
        problems.push(format!("source clusters disagree: {}", list.join(", ")));
    }
    match (problems.is_empty(), tags.into_keys().next()) {
        (true, Some(t)) => Tag::new(t).map_err(|e| vec![e.to_string()]),
        (true, None) => Err(vec!["no source cluster".into()]),
        (false, _) => Err(problems),
    }
}

/// The four gates of a promotion, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateName {
    /// 1. Which release.
    Target,
    /// 2. Complete in the source registry.
    SourceComplete,
    /// 3. Same digests in every target region.
    TargetDigests,
    /// 4. Applications exist with the right sync policy, and their ApplicationSets leave the
    ///    override and deploy's annotations alone.
    Applications,
}

impl std::fmt::Display for GateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Target => "target release",
            Self::SourceComplete => "complete in source registry",
            Self::TargetDigests => "same digests in every target region",
            Self::Applications => "applications and sync policy",
        })
    }
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// Which gate.
    pub name: GateName,
    /// Passed.
    pub passed: bool,
    /// One line.
    pub summary: String,
    /// Every reason, one a line.
    pub details: Vec<String>,
}

/// What the engine does to one Application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    /// Already at the release, Synced and Healthy, and a finished soak of this release
    /// observed it there (its [`crate::model::annotation::SOAKED`] mark).
    Skip,
    /// At the release, Synced and Healthy, but no finished soak of this release observed it
    /// (the run that brought it there was interrupted): nothing is written to it, its wave
    /// soaks and checks it again before the next wave, and a failure returns it to what it
    /// ran before, as if this run had deployed it.
    Soak {
        /// Whether returning it starts a sync (false for automated environments).
        sync: bool,
    },
    /// Bring it to the release.
    Deploy {
        /// Write this override first (None: it is already set).
        set_override: Option<OverrideValue>,
        /// Start a sync (false for automated environments, where Argo CD syncs by itself).
        sync: bool,
    },
}

impl Action {
    /// Whether bringing the Application somewhere (the release, or back on rollback) starts
    /// a sync (false where Argo CD syncs by itself).
    pub fn syncs(&self) -> bool {
        matches!(
            self,
            Self::Deploy { sync: true, .. } | Self::Soak { sync: true }
        )
    }
}

/// One Application in a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPlan {
    /// Cluster.
    pub cluster: String,
    /// Application name.
    pub application: String,
    /// What it runs now.
    pub live: LiveTag,
    /// The override in force before this run, to return to on rollback.
    pub previous: Option<OverrideValue>,
    /// The digests (service → digest) the previous release ran with, when known (pinned by
    /// digest): a rollback pins them back and is judged by them. Empty when it ran by tag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous_digests: BTreeMap<String, crate::model::Digest>,
    /// (service, image name) pairs it runs, to compare with the release.
    pub images: Vec<(String, String)>,
    /// Someone else's operation is running on it (reported and waited out).
    pub foreign_operation: Option<String>,
    /// What to do.
    pub action: Action,
    /// The environment's checks on this cluster, placeholders resolved, run during the
    /// wave's soak.
    #[serde(default)]
    pub checks: Vec<crate::check::ResolvedCheck>,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WavePlan {
    /// 1-based.
    pub number: usize,
    /// Its Applications.
    pub apps: Vec<AppPlan>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionPlan {
    /// Target environment.
    pub environment: String,
    /// Promote or rollback.
    pub intent: Intent,
    /// The release, once gate 1–3 know it.
    pub release: Option<Release>,
    /// The gates, in order.
    pub gates: Vec<Gate>,
    /// Waves with their Applications (empty when a gate failed before the apps were known).
    pub waves: Vec<WavePlan>,
    /// Soak after each wave.
    pub soak: std::time::Duration,
    /// Per-wave limit.
    pub timeout: std::time::Duration,
    /// Sync with prune.
    pub prune: bool,
}

impl PromotionPlan {
    /// Every gate passed.
    pub fn is_go(&self) -> bool {
        self.gates.iter().all(|g| g.passed) && self.release.is_some()
    }

    /// The first failed gate.
    pub fn failed_gate(&self) -> Option<&Gate> {
        self.gates.iter().find(|g| !g.passed)
    }

    /// Applications the run would change.
    pub fn changes(&self) -> usize {
        self.waves
            .iter()
            .flat_map(|w| &w.apps)
            .filter(|a| matches!(a.action, Action::Deploy { .. }))
            .count()
    }

    /// Applications already at the release that the run soaks and checks again.
    pub fn soaks_again(&self) -> usize {
        self.waves
            .iter()
            .flat_map(|w| &w.apps)
            .filter(|a| matches!(a.action, Action::Soak { .. }))
            .count()
    }

    /// Nothing to do: every Application is at the release and was soaked there.
    pub fn is_up_to_date(&self) -> bool {
        self.waves
            .iter()
            .flat_map(|w| &w.apps)
            .all(|a| a.action == Action::Skip)
    }
}

fn gate(name: GateName, problems: Vec<String>, ok: impl Into<String>) -> Gate {
    let passed = problems.is_empty();
    let summary = if passed {
        ok.into()
    } else {
        problems.first().cloned().unwrap_or_default()
    };
    Gate {
        name,
        passed,
        summary,
        details: problems,
    }
}

fn check_problems(check: &ReleaseCheck) -> Vec<String> {
    let mut out: Vec<String> = check
        .missing
        .iter()
        .map(|m| {
            let what = match m.kind {
                super::release::MissingKind::Image => "image missing",
                super::release::MissingKind::Repository => "repository missing",
            };
            format!("{what}: {}:{}", m.image, check.tag)
        })
        .collect();
    out.extend(check.inconsistent.iter().map(|s| {
        format!(
            "{s}: digests differ between regions of {}",
            check.environment
        )
    }));
    out
}

/// The plan for `obs`: gates in order, then waves. Pure.
pub fn plan(config: &Config, env: &Environment, obs: &Observation) -> PromotionPlan {
    let mut out = PromotionPlan {
        environment: env.name.clone(),
        intent: obs.intent.clone(),
        release: None,
        gates: Vec::new(),
        waves: Vec::new(),
        soak: env.soak,
        timeout: env.timeout,
        prune: env.prune,
    };
    let (target, tag) = target_gate(config, env, obs);
    out.gates.push(target);
    if tag.is_none() {
        return out;
    }
    let (source, source_release) = source_gate(obs);
    out.gates.push(source);
    let Some(target) = &obs.target_check else {
        return out;
    };
    out.gates.push(digests_gate(
        config,
        env,
        obs,
        target,
        source_release.as_ref(),
    ));
    let release = if out.gates.iter().all(|g| g.passed) {
        target.release()
    } else {
        None
    };
    out.gates.push(applications_gate(config, env, obs));
    let Some(release) = release else { return out };
    out.waves = waves(config, env, obs, &release);
    out.release = Some(release);
    out
}

/// Gate 1: the target release, given, the rollback's, or live in every source cluster.
fn target_gate(config: &Config, env: &Environment, obs: &Observation) -> (Gate, Option<Tag>) {
    match &obs.intent {
        Intent::Promote { tag: Some(t) } => (
            gate(GateName::Target, vec![], format!("{t} (given with --tag)")),
            Some(t.clone()),
        ),
        Intent::Rollback { tag, .. } => (
            gate(GateName::Target, vec![], format!("{tag} (rollback)")),
            Some(tag.clone()),
        ),
        Intent::Promote { tag: None } => {
            let src = env
                .promote_from
                .as_deref()
                .and_then(|s| config.environments.get(s));
            match src.map(|s| source_target(config, s, &obs.source_apps)) {
                Some(Ok(t)) => {
                    let from = env.promote_from.as_deref().unwrap_or_default();
                    let ok = format!("{t}, live in every {from} cluster");
                    (gate(GateName::Target, vec![], ok), Some(t))
                }
                Some(Err(problems)) => (gate(GateName::Target, problems, ""), None),
                None => {
                    let problem = format!("{} has no promote_from; give --tag", env.name);
                    (gate(GateName::Target, vec![problem], ""), None)
                }
            }
        }
    }
}

/// Gate 2: complete in the source registry (promotion) or recorded digests (rollback); the
/// release the source has, to compare the target's digests with.
fn source_gate(obs: &Observation) -> (Gate, Option<Release>) {
    match (&obs.intent, &obs.source_check) {
        (Intent::Promote { .. }, Some(check)) => {
            let ok = format!(
                "{} images in {} ({})",
                check.found.len(),
                check.environment,
                check.tag
            );
            let g = gate(GateName::SourceComplete, check_problems(check), ok);
            (g, check.release())
        }
        (
            Intent::Rollback {
                recorded: Some(r), ..
            },
            _,
        ) => {
            let ok = "digests recorded in the audit trail";
            (gate(GateName::SourceComplete, vec![], ok), Some(r.clone()))
        }
        _ => {
            let ok = "no source environment: checked in the target registries";
            let release = obs.target_check.as_ref().and_then(ReleaseCheck::release);
            (gate(GateName::SourceComplete, vec![], ok), release)
        }
    }
}

/// Gate 3: the same digests in every target region (and the source's, when there is one).
fn digests_gate(
    config: &Config,
    env: &Environment,
    obs: &Observation,
    target: &ReleaseCheck,
    source: Option<&Release>,
) -> Gate {
    let mut problems = check_problems(target);
    for p in problems.iter_mut() {
        if let Some(m) = target.missing.iter().find(|m| p.contains(&m.image))
            && let Some(state) = obs
                .replication
                .get(&m.service)
                .and_then(|r| r.get(&m.region))
        {
            p.push_str(&format!(" (replication {})", replication_text(state)));
        }
    }
    for (service, by_region) in source.map(|_| &target.found).into_iter().flatten() {
        let want = source.and_then(|s| s.digests.get(service));
        for (region, digest) in by_region {
            match want {
                Some(want) if want != digest => problems.push(format!(
                    "{service} in {region}: digest {} differs from the source's {}",
                    digest.short(),
                    want.short()
                )),
                _ => {}
            }
        }
    }
    let regions = env.registry.regions.len();
    let ok = format!(
        "{} services × {regions} regions, same digests",
        config.services.len()
    );
    gate(GateName::TargetDigests, problems, ok)
}

/// Gate 4: the Applications exist with the environment's sync policy, and their
/// ApplicationSets keep what `deploy` writes.
fn applications_gate(config: &Config, env: &Environment, obs: &Observation) -> Gate {
    let mut problems = Vec::new();
    let mut waits = 0;
    for cluster in &obs.clusters {
        let name = config
            .cluster(cluster)
            .map(|c| config.application_name(env, c))
            .unwrap_or_default();
        let Some(app) = obs.target_apps.get(cluster).and_then(Option::as_ref) else {
            problems.push(format!(
                "{name}: not found in Argo CD (is the ApplicationSet applied?)"
            ));
            continue;
        };
        match (env.sync, app.sync_mode) {
            (SyncMode::Manual, SyncMode::Automated { .. }) => problems.push(format!(
                "{name}: has automated sync but {} is manual; remove spec.syncPolicy.automated (in the ApplicationSet)",
                env.name
            )),
            (SyncMode::Automated { .. }, SyncMode::Manual) => problems.push(format!(
                "{name}: has no automated sync but {} is automated",
                env.name
            )),
            _ => {}
        }
        if app.operation_pending {
            waits += 1;
        }
    }
    for u in super::appset::check(
        config,
        env,
        &obs.target_apps,
        &obs.application_sets,
        obs.lock_carrier.as_deref(),
    ) {
        problems.push(u.problem());
        problems.extend(u.fix_lines());
    }
    let mut ok = if waits > 0 {
        format!(
            "{} applications, {waits} busy with another operation (will wait)",
            obs.clusters.len()
        )
    } else {
        format!("{} applications, sync {}", obs.clusters.len(), env.sync)
    };
    let sets: Vec<&str> = obs
        .application_sets
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    if !sets.is_empty() {
        ok = format!(
            "{ok}; applicationset {} keeps the override and annotations",
            sets.join(", ")
        );
    }
    gate(GateName::Applications, problems, ok)
}

fn replication_text(state: &ReplicationState) -> String {
    match state {
        ReplicationState::Complete => "complete".into(),
        ReplicationState::InProgress => "in progress".into(),
        ReplicationState::Failed { reason } => format!("failed: {reason}"),
    }
}

fn waves(
    config: &Config,
    env: &Environment,
    obs: &Observation,
    release: &Release,
) -> Vec<WavePlan> {
    let mut out = Vec::new();
    for wave in &env.waves {
        let apps: Vec<AppPlan> = wave
            .iter()
            .filter(|c| obs.clusters.contains(c))
            .filter_map(|c| config.cluster(c))
            .filter_map(|cluster| {
                let app = obs.target_apps.get(&cluster.name)?.as_ref()?;
                Some(app_plan(config, env, cluster, app, release))
            })
            .collect();
        if !apps.is_empty() {
            out.push(WavePlan {
                number: out.len() + 1,
                apps,
            });
        }
    }
    out
}

/// What the run does to one Application: skip it, soak it again, or deploy it (and what a
/// rollback returns it to).
fn app_plan(
    config: &Config,
    env: &Environment,
    cluster: &Cluster,
    app: &Application,
    release: &Release,
) -> AppPlan {
    let tag = &release.tag;
    let images = service_images(config, env, cluster);
    let live = live_at(app, &images, release);
    // Rollback returns to what ran, never to what the spec says (the override may already
    // name the new release: an interrupted run, an image updater) nor to the release itself:
    // the single tag live now, else (mixed, unknown, or already the release) the newest
    // other release its history ran.
    let previous_tag = live
        .tag()
        .and_then(|t| Tag::new(t).ok())
        .filter(|t| t != tag)
        .or_else(|| super::rollback::before(app, &env.image_override, tag));
    let previous_digests = previous_tag
        .as_ref()
        .map(|t| previous_digests(env, app, &images, release, t))
        .unwrap_or_default();
    let previous = previous_tag.map(|t| {
        let digests = previous_digests.clone();
        pinned_override(env, &images, &Release { tag: t, digests })
    });
    let foreign_operation = app.operation_pending.then(|| {
        app.operation_state
            .as_ref()
            .and_then(|s| s.initiated_by.clone())
            .unwrap_or_else(|| "someone".into())
    });
    let checks = env
        .checks
        .iter()
        .map(|c| {
            c.resolve(&crate::check::Scope {
                cluster: &cluster.name,
                region: &cluster.region,
                env: &env.name,
                app: &config.app,
                release: tag.as_str(),
            })
        })
        .collect();
    AppPlan {
        cluster: cluster.name.clone(),
        application: app.name.clone(),
        action: action(env, app, &images, release),
        live,
        previous,
        previous_digests,
        images,
        foreign_operation,
        checks,
    }
}

/// Deploy unless the Application is at the release; at the release, done only if a finished
/// soak of this release saw it (the resume rule), else soak it again.
fn action(
    env: &Environment,
    app: &Application,
    images: &[(String, String)],
    release: &Release,
) -> Action {
    let names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
    let want = pinned_override(env, images, release);
    let current = app.override_like(&want, &names);
    let at_release = same_override(current.as_ref(), &want);
    let sync = !env.sync.is_automated();
    if !(is_at_release(app, images, release) && at_release) {
        return Action::Deploy {
            set_override: (!at_release).then_some(want),
            sync,
        };
    }
    let soaked = app.annotations.get(crate::model::annotation::SOAKED)
        == Some(&crate::model::annotation::soaked_mark(release));
    if soaked {
        Action::Skip
    } else {
        Action::Soak { sync }
    }
}

/// The digests release `previous` ran with on `app`: what its images carry now, unless they
/// already carry `release`'s (an interrupted run: what runs is not what came before), else
/// what the newest history entry of `previous` pinned. Empty when it ran by tag.
fn previous_digests(
    env: &Environment,
    app: &Application,
    images: &[(String, String)],
    release: &Release,
    previous: &Tag,
) -> BTreeMap<String, crate::model::Digest> {
    let live = live_digests(app, images);
    if !live.is_empty() && !live.iter().any(|(s, d)| release.digests.get(s) == Some(d)) {
        return live;
    }
    app.history
        .iter()
        .rev()
        .filter_map(|h| h.override_value.as_ref())
        .find(|v| v.is_kind(&env.image_override) && v.tags() == [previous.to_string()])
        .map(|v| crate::image_override::pinned_digests(v, env, images))
        .unwrap_or_default()
}

/// The desired (override) tag of an Application, for status.
pub fn desired(app: &Application, env: &Environment, image_names: &[String]) -> LiveTag {
    desired_tag(
        app.override_value(&env.image_override, image_names)
            .as_ref(),
    )
}
