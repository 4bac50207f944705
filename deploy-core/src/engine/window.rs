//! Sync windows before each wave: read every Application's windows, and either go on, wait
//! for the windows to allow the wave (within [`super::RunOptions::window_wait`]), or stop
//! before writing anything of the wave.
//!
//! Argo CD refuses a sync inside a window ("Cannot sync: Blocked by sync window",
//! `server/application/application.go` Sync), and a window that closes after a sync was
//! accepted leaves its operation Running with "Sync operation blocked by sync window"
//! (`controller/sync.go`). Checking every Application of a wave first keeps a wave from
//! half-starting; [`blocked_reason`] names the other two cases when they happen anyway.
//!
//! Whether a wave may sync *now* is Argo CD's answer (`canSync`, `activeWindows`, computed in
//! each window's zone), never our reading of windows whose zones its REST answer leaves out:
//! we never refuse a sync it would run, nor start one it would refuse. The windows with their
//! zones (the AppProject, when the token may read it; with `--core`, always) only say until
//! when; without them a blocked wave polls Argo CD within `window_wait` ([`POLL`]).

use std::fmt;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::lock::LeaseLost;
use super::{Event, Run};
use crate::plan::promotion::{Action, PromotionPlan, WavePlan};
use crate::port::ArgoCd;
use crate::window::{self, AppWindows, Verdict};

/// How far ahead [`window::verdict`] looks for the moment a blocked wave may sync.
const HORIZON: Duration = Duration::from_secs(8 * 24 * 3600);

/// Longest single sleep while waiting for a window, so the lease is renewed meanwhile.
const WAIT_STEP: Duration = Duration::from_secs(60);

/// How often a wave blocked until a time nobody can say asks Argo CD again.
pub const POLL: Duration = Duration::from_secs(30);

/// A wave that its Applications' sync windows do not let sync now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The wave (1-based).
    pub wave: usize,
    /// The Application whose window blocks it (the one that opens last).
    pub application: String,
    /// The window, described (kind, schedule, duration).
    pub window: String,
    /// When the wave may sync; `None` when not within eight days, or unknown.
    pub until: Option<Timestamp>,
    /// Argo CD blocks it and does not say until when ([`Verdict::Unsaid`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_unknown: bool,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.until_unknown {
            return write!(
                f,
                "wave {}: {} is blocked by a sync window ({}); Argo CD does not say until when",
                self.wave, self.application, self.window
            );
        }
        write!(
            f,
            "wave {}: {} is blocked by sync window {}",
            self.wave, self.application, self.window
        )?;
        match self.until {
            Some(u) => write!(f, " until {}", u.strftime("%Y-%m-%d %H:%M:%S UTC")),
            None => f.write_str(" with no opening in the next 8 days"),
        }
    }
}

/// What the windows of one Application say about a sync now. `manual` is whether we start
/// the sync (else Argo CD's automated sync does, which `manualSync` does not let through).
/// Argo CD's answer, when there is one, decides "now"; the zoned windows say until when.
pub fn app_verdict(windows: &AppWindows, now: Timestamp, manual: bool) -> Verdict {
    let ours = || match window::verdict(&windows.assigned, now, manual, HORIZON) {
        Ok(v) => v,
        Err(e) => Verdict::Blocked {
            window: e.to_string(),
            until: None,
        },
    };
    let Some(answer) = &windows.answer else {
        // `--core`: no API server answers; the AppProject's windows, with their zones, are
        // what Argo CD's controller reads too.
        return ours();
    };
    if answer.allows(&windows.assigned, manual) {
        return Verdict::Open;
    }
    match windows.zoned.then(ours) {
        Some(v @ Verdict::Blocked { .. }) => v,
        // No zones, or our reading of them lets it (a window Argo CD reads otherwise, or it
        // changed between the two reads): Argo CD's "no" stands, until a time nobody knows.
        _ => Verdict::Unsaid {
            window: answer.culprit(&windows.assigned),
        },
    }
}

/// Orders blocked verdicts by how long they block: a known time, then unknown, then none
/// within the horizon.
fn rank(b: &Blocked) -> (u8, Option<Timestamp>) {
    match (b.until, b.until_unknown) {
        (Some(u), _) => (0, Some(u)),
        (None, true) => (1, None),
        (None, false) => (2, None),
    }
}

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

/// How long from `now` until `until`, or `None` when it is not known.
fn wait_for(b: &Blocked, now: Timestamp) -> Option<Duration> {
    let until = b.until?;
    Some(Duration::try_from(until.duration_since(now)).unwrap_or(Duration::ZERO))
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

/// What the windows let a wave do.
pub(crate) enum WindowGate {
    /// Sync it now.
    Open,
    /// A stop was requested while waiting.
    Interrupted,
    /// The windows would keep it waiting longer than the bound.
    Closed(Blocked),
    /// The lease could not be renewed while waiting.
    Lease(LeaseLost),
}

impl Run<'_> {
    /// Waits until the windows of `wave` let it sync, within the run's bound; the wait
    /// renews the lease and yields to a stop request.
    pub(crate) async fn await_windows(&self, wave: &WavePlan) -> WindowGate {
        let started = Instant::now();
        let mut told: Option<Blocked> = None;
        loop {
            let now = self.ports.clock.now();
            let Some(b) = wave_blocked(self.ports.argocd, wave, now).await else {
                return WindowGate::Open;
            };
            let left = self.opts.window_wait.saturating_sub(started.elapsed());
            let wait = match wait_for(&b, now) {
                Some(w) if w <= left => w,
                None if b.until_unknown && !left.is_zero() => POLL,
                _ => return WindowGate::Closed(b),
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
                () = self.cancel_requested() => return WindowGate::Interrupted,
            }
            if let Err(lost) = self.lease.renew().await {
                return WindowGate::Lease(lost);
            }
            if started.elapsed() > self.opts.window_wait + Duration::from_secs(1) {
                // Looked again past the bound: one last look decides.
                let now = self.ports.clock.now();
                return match wave_blocked(self.ports.argocd, wave, now).await {
                    None => WindowGate::Open,
                    Some(b) => WindowGate::Closed(b),
                };
            }
        }
    }
}

/// Names a sync window as the reason a sync was refused or an operation did not finish,
/// when Argo CD's message says so (`Cannot sync: Blocked by sync window`, `Sync operation
/// blocked by sync window`), instead of a bare refusal or a timeout.
pub fn blocked_reason(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    if lower.contains("operation blocked by sync window") {
        return Some(format!(
            "blocked by a sync window: Argo CD accepted the sync, then a window closed and it holds the operation Running until its windows let it sync ({message})"
        ));
    }
    lower
        .contains("blocked by sync window")
        .then(|| format!("blocked by a sync window: Argo CD refused the sync ({message})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{SyncWindow, WindowKind};

    fn deny(schedule: &str, duration: &str) -> SyncWindow {
        SyncWindow {
            kind: WindowKind::Deny,
            schedule: schedule.into(),
            duration: duration.into(),
            manual_sync: false,
            time_zone: None,
            applications: vec!["*".into()],
            namespaces: vec![],
            clusters: vec![],
            and_operator: false,
        }
    }

    #[test]
    fn argo_cds_answer_decides_now_and_zoned_windows_say_until_when() {
        let now: Timestamp = "2026-12-01T19:30:00Z".parse().unwrap();
        // A deny at 19:00 UTC for an hour: active now read in UTC, not in Kolkata (01:00).
        let kolkata = SyncWindow {
            time_zone: Some("Asia/Kolkata".into()),
            ..deny("0 19 * * *", "1h")
        };
        let verdict = |assigned: Vec<SyncWindow>, zoned: bool, can: Option<bool>, manual: bool| {
            let w = AppWindows {
                assigned,
                zoned,
                answer: can.map(|can_sync| window::Answer {
                    can_sync,
                    active: if can_sync {
                        vec![]
                    } else {
                        vec![deny("0 19 * * *", "1h")]
                    },
                }),
            };
            app_verdict(&w, now, manual)
        };
        // Argo CD's yes stands over windows read without their zone (REST, project unreadable).
        let unzoned = deny("0 19 * * *", "1h");
        assert_eq!(
            verdict(vec![unzoned.clone()], false, Some(true), true),
            Verdict::Open
        );
        assert_eq!(
            verdict(vec![unzoned.clone()], false, Some(true), false),
            Verdict::Open
        );
        // Its no stands over windows we read as open, and nobody says until when.
        assert_eq!(
            verdict(vec![kolkata.clone()], true, Some(false), true),
            Verdict::Unsaid {
                window: "deny \"0 19 * * *\" for 1h".into()
            }
        );
        assert!(matches!(
            verdict(vec![unzoned.clone()], false, Some(false), true),
            Verdict::Unsaid { .. }
        ));
        // With zones and a no, the zoned windows say until when.
        assert_eq!(
            verdict(vec![deny("0 19 * * *", "1h")], true, Some(false), true),
            Verdict::Blocked {
                window: "deny \"0 19 * * *\" for 1h".into(),
                until: Some("2026-12-01T20:00:00Z".parse().unwrap()),
            }
        );
        // `--core` (no answer): the zoned windows decide.
        assert_eq!(verdict(vec![kolkata], true, None, true), Verdict::Open);
        assert!(!verdict(vec![unzoned], true, None, true).is_open());
        assert!(!verdict(vec![deny("0 19 * * *", "soon")], true, None, true).is_open());
        // A window we cannot read does not stop what Argo CD lets run.
        assert_eq!(
            verdict(vec![deny("0 19 * * *", "soon")], true, Some(true), true),
            Verdict::Open
        );
    }

    #[test]
    fn window_messages_are_named() {
        assert!(
            blocked_reason("Sync operation blocked by sync window")
                .unwrap()
                .contains("holds the operation Running")
        );
        assert!(
            blocked_reason("application a: Cannot sync: Blocked by sync window")
                .unwrap()
                .contains("refused")
        );
        assert_eq!(blocked_reason("successfully synced (all tasks run)"), None);
    }
}
