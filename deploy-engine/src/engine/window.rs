//! Sync windows before each wave: read every Application's windows, and either go on, wait
//! for the windows to allow the wave (within [`super::RunOptions::window_wait`]), or stop
//! before writing anything of the wave.
//!
//! Argo CD refuses a sync inside a window ("Cannot sync: Blocked by sync window",
//! `server/application/application.go` Sync), and a window that closes after a sync was
//! accepted leaves its operation Running with "Sync operation blocked by sync window"
//! (`controller/sync.go`). Checking every Application of a wave first keeps a wave from
//! half-starting; the port says the other two cases typed when they happen anyway
//! (`Error::BlockedByWindow`, `OperationState::held_by_window`).
//!
//! Whether a wave may sync *now* is Argo CD's answer (`canSync`, `activeWindows`, computed in
//! each window's zone), never our reading of windows whose zones its REST answer leaves out:
//! we never refuse a sync it would run, nor start one it would refuse. The windows with their
//! zones (the AppProject, when the token may read it; with `--core`, always) only say until
//! when; without them a blocked wave polls Argo CD within `window_wait` ([`POLL`]).

use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Event, Run};
use deploy_core::plan::promotion::{Action, PromotionPlan, WavePlan};
use deploy_core::port::ArgoCd;
use deploy_core::rollout::outcome::{Failure, Halt};
use deploy_core::rollout::window::{Blocked, POLL, WAIT_STEP, app_verdict, rank, wait_for};
use deploy_core::window::Verdict;

/// Whether `wave` may sync at `now`: `None` when it may, else the Application that opens
/// last. Applications the wave does not deploy are not asked; a window that cannot be read
/// does not stop the wave (Argo CD still refuses a blocked sync, and that is reported).
pub async fn wave_blocked(argocd: &dyn ArgoCd, wave: &WavePlan, now: Timestamp) -> Option<Blocked> {
    let deploying: Vec<(&str, bool)> = wave
        .apps
        .iter()
        .filter_map(|a| match &a.action {
            Action::Deploy { sync, .. } => Some((a.application.as_str(), *sync)),
            Action::Skip | Action::Soak { .. } => None,
        })
        .collect();
    let read = join_all(deploying.iter().map(|(name, _)| argocd.sync_windows(name))).await;
    let mut worst: Option<Blocked> = None;
    for ((name, manual), windows) in deploying.iter().zip(read) {
        let windows = match windows {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("the sync windows of {name} cannot be read ({e}); going on");
                continue;
            }
        };
        let b = match app_verdict(&windows, now, *manual) {
            Verdict::Open => continue,
            Verdict::Blocked { window, until } => Blocked {
                wave: wave.number,
                application: (*name).to_owned(),
                window,
                until,
                until_unknown: false,
            },
            Verdict::Unsaid { window } => Blocked {
                wave: wave.number,
                application: (*name).to_owned(),
                window,
                until: None,
                until_unknown: true,
            },
        };
        if worst.as_ref().is_none_or(|w| rank(&b) > rank(w)) {
            worst = Some(b);
        }
    }
    worst
}

/// The sync windows of one Application of a plan, and what they say now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppWindowReport {
    /// Cluster.
    pub cluster: String,
    /// Application.
    pub application: String,
    /// Its assigned windows, described; empty when it has none (or they cannot be read).
    pub windows: Vec<String>,
    /// Whether the sync it needs may run now; `None` when it needs none (skip) or the windows
    /// cannot be read.
    pub verdict: Option<Verdict>,
    /// Why its windows could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The windows of one wave (for `deploy plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveWindows {
    /// The wave (1-based).
    pub wave: usize,
    /// Whether every sync of the wave may run now.
    pub can_sync_now: bool,
    /// Its Applications.
    pub apps: Vec<AppWindowReport>,
}

/// Every wave's windows at `now`: what `deploy plan` shows.
pub async fn plan_windows(
    argocd: &dyn ArgoCd,
    plan: &PromotionPlan,
    now: Timestamp,
) -> Vec<WaveWindows> {
    let mut out = Vec::new();
    for wave in &plan.waves {
        let read = join_all(
            wave.apps
                .iter()
                .map(|a| argocd.sync_windows(&a.application)),
        )
        .await;
        let apps: Vec<AppWindowReport> = wave
            .apps
            .iter()
            .zip(read)
            .map(|(a, w)| {
                let manual = match &a.action {
                    Action::Deploy { sync, .. } => Some(*sync),
                    Action::Skip | Action::Soak { .. } => None,
                };
                let (windows, verdict, error) = match w {
                    Ok(w) => (
                        w.assigned.iter().map(ToString::to_string).collect(),
                        manual.map(|m| app_verdict(&w, now, m)),
                        None,
                    ),
                    Err(e) => (Vec::new(), None, Some(e.to_string())),
                };
                AppWindowReport {
                    cluster: a.cluster.clone(),
                    application: a.application.clone(),
                    windows,
                    verdict,
                    error,
                }
            })
            .collect();
        out.push(WaveWindows {
            wave: wave.number,
            can_sync_now: apps
                .iter()
                .all(|a| a.verdict.as_ref().is_none_or(Verdict::is_open)),
            apps,
        });
    }
    out
}

/// Before the lock is taken: the first wave that writes, if its windows block it longer than
/// `bound` (or at all, when Argo CD does not say until when and `bound` is zero). Nothing has
/// been written then, so the run can refuse with nothing changed.
pub async fn preflight(
    argocd: &dyn ArgoCd,
    plan: &PromotionPlan,
    now: Timestamp,
    bound: Duration,
) -> Option<Blocked> {
    let first = plan.waves.iter().find(|w| {
        w.apps
            .iter()
            .any(|a| matches!(a.action, Action::Deploy { .. }))
    })?;
    let b = wave_blocked(argocd, first, now).await?;
    match wait_for(&b, now) {
        Some(w) if w <= bound => None,
        // The wave polls Argo CD within the bound.
        None if b.until_unknown && !bound.is_zero() => None,
        _ => Some(b),
    }
}

impl Run<'_> {
    /// Waits until the windows of `wave` let it sync, within the run's bound; the wait
    /// renews the lease and yields to a stop request.
    pub(crate) async fn await_windows(&self, wave: &WavePlan) -> Result<(), Halt> {
        let started = Instant::now();
        let mut told: Option<Blocked> = None;
        loop {
            let now = self.ports.clock.now();
            let Some(b) = wave_blocked(self.ports.argocd, wave, now).await else {
                return Ok(());
            };
            let left = self.opts.window_wait.saturating_sub(started.elapsed());
            let wait = match wait_for(&b, now) {
                Some(w) if w <= left => w,
                None if b.until_unknown && !left.is_zero() => POLL,
                _ => return Err(Failure::Window(b).into()),
            };
            if told.as_ref() != Some(&b) {
                let window = if b.until_unknown {
                    format!("{} (Argo CD does not say until when)", b.window)
                } else {
                    b.window.clone()
                };
                self.emit(Event::WaveBlocked {
                    wave: b.wave,
                    application: b.application.clone(),
                    window,
                    until: b.until,
                });
                told = Some(b);
            }
            // Clocks differ by a little: past the opening, look again a second later.
            let step = wait
                .clamp(Duration::from_secs(1), WAIT_STEP)
                .min(left.max(Duration::from_secs(1)));
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = self.cancel_requested() => return Err(Halt::Interrupted),
            }
            self.lease.renew().await?;
            if started.elapsed() > self.opts.window_wait + Duration::from_secs(1) {
                // Looked again past the bound: one last look decides.
                let now = self.ports.clock.now();
                return match wave_blocked(self.ports.argocd, wave, now).await {
                    None => Ok(()),
                    Some(b) => Err(Failure::Window(b).into()),
                };
            }
        }
    }
}
