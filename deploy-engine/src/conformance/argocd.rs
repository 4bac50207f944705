//! The Argo CD port's contract: what "synced", "healthy", "not found" and "collision" mean,
//! what a sync window says, and what the inventory lists. Every skin of the simulation
//! (`deploy_core::sim`) runs it: the in-memory backend, the REST fake and the Kubernetes fake.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::Check;
use crate::ensure;
use deploy_core::error::Error;
use deploy_core::model::SyncMode;
use deploy_core::port::{
    Application, ArgoCd, ArgoCdInventory, Health, OperationPhase, OverrideValue, SyncRequest,
    SyncStatus,
};
use deploy_core::sim::{AppSeed, Script};
use deploy_core::window::{SyncWindow, Verdict, WindowKind};

/// Seeds an Argo CD backend.
#[async_trait]
pub trait ArgoCdFixture: Send + Sync {
    /// Creates an Application, Synced and Healthy at its current tag, with one history entry for it.
    async fn create_application(&self, seed: &AppSeed);
    /// How the next operation (sync or rollback) of `name` ends; the default is [`Script::Healthy`].
    async fn script(&self, name: &str, script: Script);
    /// Starts an operation as another user; it runs until `finish_foreign_operation`.
    async fn start_foreign_operation(&self, name: &str);
    /// Finishes the foreign operation (Succeeded).
    async fn finish_foreign_operation(&self, name: &str);
    /// Makes `windows` the sync windows of `name`'s project (each names the Applications it
    /// applies to, so other Applications of the project stay open).
    async fn set_sync_windows(&self, name: &str, windows: &[SyncWindow]);
}

/// The seed every check uses: `tag_parameter` = `image.tag`.
pub fn seed(name: &str, tag: &str) -> AppSeed {
    AppSeed {
        name: name.into(),
        labels: BTreeMap::from([("env".into(), "conformance".into())]),
        destination: "in-cluster".into(),
        sync_mode: SyncMode::Manual,
        helm_parameters: BTreeMap::from([
            ("image.tag".into(), tag.into()),
            ("replicas".into(), "2".into()),
        ]),
        tag_parameter: "image.tag".into(),
        image_names: vec!["111111111111.dkr.ecr.us-west-2.amazonaws.com/api".into()],
    }
}

/// Waits on the watch stream until `done` holds; fails after `limit`.
pub async fn wait_for(
    port: &dyn ArgoCd,
    name: &str,
    limit: Duration,
    done: impl Fn(&Application) -> bool + Send,
) -> Result<Application, String> {
    let mut stream = port
        .watch(name)
        .await
        .map_err(|e| format!("watch {name}: {e}"))?;
    let mut last = None;
    let waited = tokio::time::timeout(limit, async {
        while let Some(item) = stream.next().await {
            let app = item.map_err(|e| format!("watch {name}: {e}"))?;
            if done(&app) {
                return Ok(app);
            }
            last = Some(app);
        }
        Err(format!("watch {name}: the stream ended"))
    })
    .await;
    waited.unwrap_or_else(|_| {
        Err(format!(
            "watch {name}: condition not met within {limit:?}; last state {last:#?}"
        ))
    })
}

/// Our operation `op` finished (completed phase, top-level operation cleared).
pub fn finished(op: &str) -> impl Fn(&Application) -> bool + Send + use<'_> {
    move |a: &Application| {
        !a.operation_pending
            && a.operation_state.as_ref().is_some_and(|s| {
                s.deploy_operation() == Some(op)
                    && s.phase.is_completed()
                    && s.finished_at.is_some()
            })
    }
}

const LIMIT: Duration = Duration::from_secs(30);

fn helm(tag: &str) -> OverrideValue {
    OverrideValue::Helm {
        parameter: "image.tag".into(),
        value: tag.into(),
        digests: Default::default(),
    }
}

/// Runs every check; Application names start with `prefix`.
pub async fn run_all(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    not_found(port, prefix).await?;
    get_and_list(port, fixture, prefix).await?;
    set_override_keeps_other_parameters(port, fixture, prefix).await?;
    sync_to_healthy(port, fixture, prefix).await?;
    sync_to_degraded(port, fixture, prefix).await?;
    sync_failed(port, fixture, prefix).await?;
    collision(port, fixture, prefix).await?;
    terminate(port, fixture, prefix).await?;
    history(port, fixture, prefix).await?;
    annotate(port, fixture, prefix).await?;
    sync_windows(port, fixture, prefix).await?;
    Ok(())
}

/// A deny window over the whole day, every day, for Application `name` only.
pub fn deny_all_day(name: &str) -> SyncWindow {
    SyncWindow {
        kind: WindowKind::Deny,
        schedule: "0 0 * * *".into(),
        duration: "24h".into(),
        manual_sync: false,
        time_zone: None,
        applications: vec![name.into()],
        namespaces: vec![],
        clusters: vec![],
        and_operator: false,
    }
}

/// Without windows a sync may run; under a deny window that matches the Application, the
/// windows read back say it may not (and a server that answers `canSync` refuses the sync).
pub async fn sync_windows(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let s = seed(&format!("{prefix}-windows"), "v1");
    fixture.create_application(&s).await;
    let now = jiff::Timestamp::now();
    let open = port
        .sync_windows(&s.name)
        .await
        .map_err(|e| format!("sync_windows: {e}"))?;
    ensure!(
        open.assigned.is_empty()
            && deploy_core::rollout::window::app_verdict(&open, now, true) == Verdict::Open,
        "sync_windows: no windows, yet {open:?}"
    );
    fixture
        .set_sync_windows(&s.name, &[deny_all_day(&s.name)])
        .await;
    let denied = port
        .sync_windows(&s.name)
        .await
        .map_err(|e| format!("sync_windows: {e}"))?;
    ensure!(
        denied.assigned.len() == 1 && denied.assigned[0].kind == WindowKind::Deny,
        "sync_windows: the deny window is not assigned: {denied:?}"
    );
    let verdict = deploy_core::rollout::window::app_verdict(&denied, now, true);
    ensure!(
        matches!(verdict, Verdict::Blocked { .. }),
        "sync_windows: a deny window active now gives {verdict:?}"
    );
    if let Some(answer) = &denied.answer {
        ensure!(
            !answer.can_sync,
            "sync_windows: canSync under a deny window"
        );
        let got = port
            .sync(
                &s.name,
                &SyncRequest {
                    prune: false,
                    operation_id: "op-denied".into(),
                },
            )
            .await;
        ensure!(
            matches!(got, Err(Error::BlockedByWindow { .. })),
            "sync_windows: a sync the server's windows block: expected BlockedByWindow, got {got:?}"
        );
    }
    Ok(())
}

/// The inventory: every ApplicationSet listed reads back by name; a missing one is
/// NotFound; clusters have distinct names.
pub async fn inventory(inventory: &dyn ArgoCdInventory, prefix: &str) -> Check {
    let sets = inventory
        .application_sets()
        .await
        .map_err(|e| format!("application_sets: {e}"))?;
    for set in &sets {
        let again = inventory
            .application_set(&set.name)
            .await
            .map_err(|e| format!("application_set {}: {e}", set.name))?;
        ensure!(
            again == *set,
            "application_set {}: reads back {again:?}, listed {set:?}",
            set.name
        );
    }
    let missing = format!("{prefix}-missing-set");
    let got = inventory.application_set(&missing).await;
    ensure!(
        matches!(&got, Err(e) if e.is_not_found()),
        "application_set {missing}: expected NotFound, got {got:?}"
    );
    let clusters = inventory
        .clusters()
        .await
        .map_err(|e| format!("clusters: {e}"))?;
    let mut names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    ensure!(
        names.len() == clusters.len(),
        "clusters: a name twice in {clusters:?}"
    );
    Ok(())
}

/// A missing Application is NotFound for every call that names one.
pub async fn not_found(port: &dyn ArgoCd, prefix: &str) -> Check {
    let name = format!("{prefix}-missing");
    let got = port.application(&name).await;
    ensure!(
        matches!(&got, Err(e) if e.is_not_found()),
        "application: expected NotFound, got {got:?}"
    );
    let req = SyncRequest {
        prune: false,
        operation_id: "op".into(),
    };
    let got = port.sync(&name, &req).await;
    ensure!(
        matches!(&got, Err(e) if e.is_not_found()),
        "sync: expected NotFound, got {got:?}"
    );
    let got = port.set_override(&name, &helm("v2")).await;
    ensure!(
        matches!(&got, Err(e) if e.is_not_found()),
        "set_override: expected NotFound, got {got:?}"
    );
    Ok(())
}

/// A created Application reads back Synced, Healthy, with its images and policy; a selector filters.
pub async fn get_and_list(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let mut s = seed(&format!("{prefix}-get"), "v1");
    s.sync_mode = SyncMode::Automated {
        prune: true,
        self_heal: true,
    };
    s.labels.insert("pick".into(), "yes".into());
    fixture.create_application(&s).await;
    let app = port
        .application(&s.name)
        .await
        .map_err(|e| format!("application: {e}"))?;
    ensure!(app.name == s.name, "application: name {}", app.name);
    ensure!(
        app.sync_mode == s.sync_mode,
        "application: sync mode {:?}",
        app.sync_mode
    );
    ensure!(
        app.sync_status == SyncStatus::Synced && app.health == Health::Healthy,
        "application: not Synced/Healthy: {app:?}"
    );
    ensure!(
        app.helm_parameters.get("image.tag").map(String::as_str) == Some("v1"),
        "application: parameters {:?}",
        app.helm_parameters
    );
    ensure!(
        app.images == vec![format!("{}:v1", s.image_names[0])],
        "application: images {:?}",
        app.images
    );
    ensure!(
        !app.operation_pending,
        "application: operation pending on a fresh app"
    );
    Ok(())
}

/// Setting the override changes only our parameter.
pub async fn set_override_keeps_other_parameters(
    port: &dyn ArgoCd,
    fixture: &dyn ArgoCdFixture,
    prefix: &str,
) -> Check {
    let s = seed(&format!("{prefix}-override"), "v1");
    fixture.create_application(&s).await;
    let app = port
        .set_override(&s.name, &helm("v2"))
        .await
        .map_err(|e| format!("set_override: {e}"))?;
    let want = BTreeMap::from([
        ("image.tag".to_string(), "v2".to_string()),
        ("replicas".into(), "2".into()),
    ]);
    ensure!(
        app.helm_parameters == want,
        "set_override: parameters {:?}, want {want:?}",
        app.helm_parameters
    );
    let again = port
        .application(&s.name)
        .await
        .map_err(|e| format!("application: {e}"))?;
    ensure!(
        again.helm_parameters == want,
        "set_override: not persisted: {:?}",
        again.helm_parameters
    );
    ensure!(
        again.images == vec![format!("{}:v1", s.image_names[0])],
        "set_override alone must not change what runs: {:?}",
        again.images
    );
    Ok(())
}

async fn sync_and_wait(port: &dyn ArgoCd, name: &str, op: &str) -> Result<Application, String> {
    port.sync(
        name,
        &SyncRequest {
            prune: false,
            operation_id: op.into(),
        },
    )
    .await
    .map_err(|e| format!("sync {name}: {e}"))?;
    wait_for(port, name, LIMIT, finished(op)).await
}

/// A sync runs, then Succeeded, Synced, Healthy with the new images; history grows.
pub async fn sync_to_healthy(
    port: &dyn ArgoCd,
    fixture: &dyn ArgoCdFixture,
    prefix: &str,
) -> Check {
    let s = seed(&format!("{prefix}-healthy"), "v1");
    fixture.create_application(&s).await;
    let before = port
        .application(&s.name)
        .await
        .map_err(|e| e.to_string())?
        .history
        .len();
    port.set_override(&s.name, &helm("v2"))
        .await
        .map_err(|e| e.to_string())?;
    let done = sync_and_wait(port, &s.name, "op-healthy").await?;
    let op = done
        .operation_state
        .as_ref()
        .expect("finished implies state");
    ensure!(
        op.phase == OperationPhase::Succeeded,
        "sync: phase {:?}",
        op.phase
    );
    let app = wait_for(port, &s.name, LIMIT, |a| a.health != Health::Progressing).await?;
    ensure!(
        app.sync_status == SyncStatus::Synced,
        "sync: status {:?}",
        app.sync_status
    );
    ensure!(
        app.health == Health::Healthy,
        "sync: health {:?}",
        app.health
    );
    ensure!(
        app.images == vec![format!("{}:v2", s.image_names[0])],
        "sync: images {:?}",
        app.images
    );
    ensure!(
        app.history.len() == before + 1,
        "sync: history {} entries, want {}",
        app.history.len(),
        before + 1
    );
    ensure!(
        app.reconciled_at >= op.finished_at,
        "sync: reconciledAt before finishedAt"
    );
    Ok(())
}

/// A sync that succeeds but leaves the app Degraded is observed as Degraded.
pub async fn sync_to_degraded(
    port: &dyn ArgoCd,
    fixture: &dyn ArgoCdFixture,
    prefix: &str,
) -> Check {
    let s = seed(&format!("{prefix}-degraded"), "v1");
    fixture.create_application(&s).await;
    fixture.script(&s.name, Script::Degraded).await;
    port.set_override(&s.name, &helm("v2"))
        .await
        .map_err(|e| e.to_string())?;
    sync_and_wait(port, &s.name, "op-degraded").await?;
    let app = wait_for(port, &s.name, LIMIT, |a| a.health != Health::Progressing).await?;
    ensure!(
        app.health == Health::Degraded,
        "degraded: health {:?}",
        app.health
    );
    Ok(())
}

/// A failed sync ends in phase Failed and the old images keep running.
pub async fn sync_failed(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let s = seed(&format!("{prefix}-failed"), "v1");
    fixture.create_application(&s).await;
    fixture.script(&s.name, Script::Failed).await;
    port.set_override(&s.name, &helm("v2"))
        .await
        .map_err(|e| e.to_string())?;
    let done = sync_and_wait(port, &s.name, "op-failed").await?;
    let op = done.operation_state.expect("finished implies state");
    ensure!(
        matches!(op.phase, OperationPhase::Failed | OperationPhase::Error),
        "failed: phase {:?}",
        op.phase
    );
    ensure!(
        done.images == vec![format!("{}:v1", s.image_names[0])],
        "failed: images {:?}",
        done.images
    );
    Ok(())
}

/// A sync during someone else's operation is a Collision; once it ends, the sync is accepted.
pub async fn collision(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let s = seed(&format!("{prefix}-collision"), "v1");
    fixture.create_application(&s).await;
    fixture.start_foreign_operation(&s.name).await;
    let app = port.application(&s.name).await.map_err(|e| e.to_string())?;
    ensure!(
        app.operation_pending,
        "collision: the foreign operation is not visible"
    );
    ensure!(
        app.operation_state
            .as_ref()
            .and_then(|o| o.deploy_operation())
            .is_none(),
        "collision: foreign op carries our id"
    );
    let got = port
        .sync(
            &s.name,
            &SyncRequest {
                prune: false,
                operation_id: "op-collide".into(),
            },
        )
        .await;
    ensure!(
        matches!(got, Err(Error::Collision { .. })),
        "collision: expected Collision, got {got:?}"
    );
    fixture.finish_foreign_operation(&s.name).await;
    wait_for(port, &s.name, LIMIT, |a| !a.operation_pending).await?;
    sync_and_wait(port, &s.name, "op-after").await?;
    Ok(())
}

/// Terminating a running operation ends it (Failed or Error) and clears `operation`.
pub async fn terminate(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let s = seed(&format!("{prefix}-terminate"), "v1");
    fixture.create_application(&s).await;
    fixture.script(&s.name, Script::Hang).await;
    port.set_override(&s.name, &helm("v2"))
        .await
        .map_err(|e| e.to_string())?;
    port.sync(
        &s.name,
        &SyncRequest {
            prune: false,
            operation_id: "op-hang".into(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    port.terminate(&s.name)
        .await
        .map_err(|e| format!("terminate: {e}"))?;
    let done = wait_for(port, &s.name, LIMIT, finished("op-hang")).await?;
    let phase = done.operation_state.map(|o| o.phase);
    ensure!(
        matches!(phase, Some(OperationPhase::Failed | OperationPhase::Error)),
        "terminate: phase {phase:?}"
    );
    Ok(())
}

/// Each sync of a new override adds a history entry with it, newer (by id) than the one
/// before: the rollback target is read from this history.
pub async fn history(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let s = seed(&format!("{prefix}-history"), "v1");
    fixture.create_application(&s).await;
    port.set_override(&s.name, &helm("v2"))
        .await
        .map_err(|e| e.to_string())?;
    let app = sync_and_wait(port, &s.name, "op-v2").await?;
    let id_of = |tag: &str| {
        app.history
            .iter()
            .filter(|h| h.override_value.as_ref().is_some_and(|o| o.tags() == [tag]))
            .map(|h| h.id)
            .max()
    };
    let (Some(v1), Some(v2)) = (id_of("v1"), id_of("v2")) else {
        return Err(format!(
            "history: entries for v1 and v2 expected, got {:?}",
            app.history
        ));
    };
    ensure!(
        v2 > v1,
        "history: v2 (id {v2}) is not newer than v1 (id {v1})"
    );
    Ok(())
}

/// Annotations merge into the existing ones.
pub async fn annotate(port: &dyn ArgoCd, fixture: &dyn ArgoCdFixture, prefix: &str) -> Check {
    let s = seed(&format!("{prefix}-annotate"), "v1");
    fixture.create_application(&s).await;
    port.annotate(&s.name, &BTreeMap::from([("a".into(), "1".into())]))
        .await
        .map_err(|e| format!("annotate: {e}"))?;
    port.annotate(&s.name, &BTreeMap::from([("b".into(), "2".into())]))
        .await
        .map_err(|e| format!("annotate: {e}"))?;
    let app = port.application(&s.name).await.map_err(|e| e.to_string())?;
    ensure!(
        app.annotations.get("a").map(String::as_str) == Some("1")
            && app.annotations.get("b").map(String::as_str) == Some("2"),
        "annotate: {:?}",
        app.annotations
    );
    Ok(())
}
