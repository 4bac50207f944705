//! What sync windows let a wave do: [`app_verdict`] reads one Application's windows (Argo CD's
//! answer decides "now", the zoned windows say until when), and [`Blocked`] names the window
//! that blocks a wave. Pure. A refusal comes typed from the port
//! ([`Error::BlockedByWindow`](crate::Error::BlockedByWindow),
//! [`OperationState::held_by_window`](crate::port::OperationState::held_by_window)).

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::window::{self, AppWindows, Verdict};

/// How far ahead [`window::verdict`] looks for the moment a blocked wave may sync.
const HORIZON: Duration = Duration::from_secs(8 * 24 * 3600);

/// Longest single sleep while waiting for a window, so the lease is renewed meanwhile.
pub const WAIT_STEP: Duration = Duration::from_secs(60);

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
pub fn rank(b: &Blocked) -> (u8, Option<Timestamp>) {
    match (b.until, b.until_unknown) {
        (Some(u), _) => (0, Some(u)),
        (None, true) => (1, None),
        (None, false) => (2, None),
    }
}

/// How long from `now` until `until`, or `None` when it is not known.
pub fn wait_for(b: &Blocked, now: Timestamp) -> Option<Duration> {
    let until = b.until?;
    Some(Duration::try_from(until.duration_since(now)).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{SyncWindow, WindowKind};

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
}
