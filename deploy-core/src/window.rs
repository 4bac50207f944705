//! Argo CD sync windows as a pure decision: may a sync run now, and if not, when may it.
//!
//! A window is an AppProject's `spec.syncWindows[]` entry. Its semantics follow upstream
//! argo-cd `pkg/apis/application/v1alpha1` (`SyncWindows.Matches`, `SyncWindow.active`,
//! `SyncWindows.CanSync`, `hasDeny`, `InactiveAllows`, `manualEnabled`):
//!
//! - `schedule` is a 5-field cron expression (robfig/cron's parser with `Minute | Hour | Dom |
//!   Month | Dow`: no seconds, no year) and `duration` a Go duration; the window is *active*
//!   at `t` when the schedule's next activation strictly after `t - duration` is strictly
//!   before `t` (so a window that starts at 22:00 is active from 22:00:01 to 22:59:59 for a
//!   `1h` duration, and activations may overlap).
//! - `timeZone` (IANA, default UTC) is the zone the schedule is read in. Upstream shifts `t`
//!   by the zone's offset *now*; we read the schedule in the zone itself, which gives the
//!   same answer except across a DST change.
//! - `CanSync(isManual)`: no windows → yes; an active deny → no, unless the sync is manual and
//!   every active deny has `manualSync`; else any inactive allow → no, unless manual and every
//!   inactive allow has `manualSync`; else yes. Deny beats allow.
//! - `GET /api/v1/applications/{name}/syncwindows` (`server/application` `GetApplicationSyncWindows`)
//!   answers `canSync = windows.CanSync(true)`: whether a *manual* sync (ours) may run now.
//!
//! [`verdict`] adds what upstream does not compute: when a blocked sync may run, found by
//! stepping through the windows' starts and ends within a horizon.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Whether a window allows or blocks syncs (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Syncs may run only while an allow window is active.
    Allow,
    /// No sync may run while the window is active.
    Deny,
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// One sync window (`v1alpha1SyncWindow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncWindow {
    /// Allow or deny.
    pub kind: WindowKind,
    /// When it opens: a 5-field cron expression.
    pub schedule: String,
    /// How long it stays open: a Go duration (`1h`, `30m`, `1h30m`).
    pub duration: String,
    /// A manual sync may run although the window would block it.
    #[serde(default)]
    pub manual_sync: bool,
    /// The IANA zone of `schedule`; `None` (or unknown, as upstream) means UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Application name globs it applies to.
    #[serde(default)]
    pub applications: Vec<String>,
    /// Destination namespace globs it applies to.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Destination cluster (name or server) globs it applies to.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Every non-empty list must match (`andOperator`), instead of any.
    #[serde(default)]
    pub and_operator: bool,
}

/// The sync windows assigned to one Application, as a backend reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppWindows {
    /// The windows of its project that match it (`assignedWindows`).
    pub assigned: Vec<SyncWindow>,
    /// Argo CD's own answer to "may a manual sync run now" (`canSync`), when the backend got
    /// one. The REST API does not return `timeZone`, so this answer wins over ours for now.
    #[serde(default)]
    pub can_sync: Option<bool>,
}

/// The Application a window may apply to (`SyncWindows.Matches` reads these).
#[derive(Debug, Clone, Copy)]
pub struct WindowTarget<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `spec.destination.namespace`.
    pub namespace: &'a str,
    /// `spec.destination.name`.
    pub cluster_name: &'a str,
    /// `spec.destination.server`.
    pub cluster_server: &'a str,
}

/// A window that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync window {window}: {reason}")]
pub struct InvalidWindow {
    /// The window, described.
    pub window: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for SyncWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} \"{}\" for {}",
            self.kind, self.schedule, self.duration
        )?;
        if let Some(tz) = self
            .time_zone
            .as_deref()
            .filter(|z| !z.is_empty() && *z != "UTC")
        {
            write!(f, " ({tz})")?;
        }
        if self.manual_sync {
            f.write_str(", manual sync allowed")?;
        }
        Ok(())
    }
}

/// `globMatch` upstream (gobwas/glob): `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

struct Parsed {
    cron: Cron,
    duration: SignedDuration,
    zone: TimeZone,
}

impl SyncWindow {
    /// Whether the window applies to `app` (`SyncWindows.Matches` upstream): by default any
    /// of the non-empty lists matching is enough; with `and_operator` every non-empty one must.
    pub fn matches(&self, app: &WindowTarget<'_>) -> bool {
        let any = |globs: &[String], text: &str| globs.iter().any(|g| glob_match(g, text));
        let cluster = |g: &String| {
            (!app.cluster_name.is_empty() && glob_match(g, app.cluster_name))
                || (!app.cluster_server.is_empty() && glob_match(g, app.cluster_server))
        };
        let lists = [
            (!self.applications.is_empty()).then(|| any(&self.applications, app.name)),
            (!self.clusters.is_empty()).then(|| self.clusters.iter().any(cluster)),
            (!self.namespaces.is_empty()).then(|| any(&self.namespaces, app.namespace)),
        ];
        let mut given = lists.iter().flatten().peekable();
        if given.peek().is_none() {
            return false;
        }
        if self.and_operator {
            given.all(|m| *m)
        } else {
            given.any(|m| *m)
        }
    }

    fn parse(&self) -> Result<Parsed, InvalidWindow> {
        let invalid = |reason: String| InvalidWindow {
            window: self.to_string(),
            reason,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&self.schedule)
            .map_err(|e| invalid(format!("cannot parse schedule: {e}")))?;
        let duration = humantime::parse_duration(&self.duration)
            .ok()
            .and_then(|d| SignedDuration::try_from(d).ok())
            .ok_or_else(|| invalid(format!("cannot parse duration \"{}\"", self.duration)))?;
        // Upstream falls back to UTC, with a warning, for a zone it does not know.
        let zone = match self.time_zone.as_deref().filter(|z| !z.is_empty()) {
            None => TimeZone::UTC,
            Some(z) => TimeZone::get(z).unwrap_or_else(|_| {
                tracing::warn!("sync window time zone {z} is unknown; using UTC as Argo CD does");
                TimeZone::UTC
            }),
        };
        Ok(Parsed {
            cron,
            duration,
            zone,
        })
    }

    /// Whether the window is active at `now` (`SyncWindow.active` upstream).
    pub fn active_at(&self, now: Timestamp) -> Result<bool, InvalidWindow> {
        let p = self.parse()?;
        Ok(active(&p, now))
    }
}

fn active(p: &Parsed, now: Timestamp) -> bool {
    // robfig's Next works in whole seconds: the next activation strictly after `t`.
    let Some(from) = now.checked_sub(p.duration).ok() else {
        return false;
    };
    let from = from.to_zoned(p.zone.clone());
    match p.cron.find_next_occurrence(&from, false) {
        Ok(next) => next.timestamp() < now,
        Err(_) => false,
    }
}

/// `SyncWindows.CanSync(isManual)` upstream, at `now`.
pub fn can_sync(
    windows: &[SyncWindow],
    now: Timestamp,
    manual: bool,
) -> Result<bool, InvalidWindow> {
    let parsed = windows
        .iter()
        .map(SyncWindow::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(blocker(windows, &parsed, now, manual).is_none())
}

/// The window that blocks a sync at `now`, if any (the `CanSync` rule, naming the culprit).
fn blocker<'w>(
    windows: &'w [SyncWindow],
    parsed: &[Parsed],
    now: Timestamp,
    manual: bool,
) -> Option<&'w SyncWindow> {
    let states: Vec<(&SyncWindow, bool)> = windows
        .iter()
        .zip(parsed)
        .map(|(w, p)| (w, active(p, now)))
        .collect();
    let active_denies: Vec<&SyncWindow> = states
        .iter()
        .filter(|(w, a)| *a && w.kind == WindowKind::Deny)
        .map(|(w, _)| *w)
        .collect();
    if !active_denies.is_empty() {
        // `hasDeny`: the override holds only when every active deny allows manual syncs.
        let overridden = manual && active_denies.iter().all(|w| w.manual_sync);
        return (!overridden).then(|| {
            *active_denies
                .iter()
                .find(|w| !w.manual_sync)
                .unwrap_or(&active_denies[0])
        });
    }
    let inactive_allows: Vec<&SyncWindow> = states
        .iter()
        .filter(|(w, a)| !*a && w.kind == WindowKind::Allow)
        .map(|(w, _)| *w)
        .collect();
    if !inactive_allows.is_empty() {
        let overridden = manual && inactive_allows.iter().all(|w| w.manual_sync);
        return (!overridden).then(|| {
            *inactive_allows
                .iter()
                .find(|w| !w.manual_sync)
                .unwrap_or(&inactive_allows[0])
        });
    }
    None
}

/// May a sync run now, and if not, why and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Verdict {
    /// A sync may run now.
    Open,
    /// A window blocks it.
    Blocked {
        /// The window that blocks it, described (or Argo CD's word when only it knows).
        window: String,
        /// When a sync may run; `None` when not within the horizon (or unknown).
        until: Option<Timestamp>,
    },
}

impl Verdict {
    /// Whether a sync may run now.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }
}

/// Most activations of one window [`verdict`] looks at: a `* * * * *` window over a week.
const MAX_ACTIVATIONS: usize = 12_000;

/// Whether a sync (`manual`: ours, started through the API; else Argo CD's automated sync)
/// may run at `now` under `windows`, and if not, the first moment within `horizon` when it
/// may. The moments a verdict can change are a second after an activation (a window opens)
/// and an activation plus its duration (it closes); each is tried in order.
pub fn verdict(
    windows: &[SyncWindow],
    now: Timestamp,
    manual: bool,
    horizon: Duration,
) -> Result<Verdict, InvalidWindow> {
    let parsed = windows
        .iter()
        .map(SyncWindow::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let Some(culprit) = blocker(windows, &parsed, now, manual) else {
        return Ok(Verdict::Open);
    };
    let end = SignedDuration::try_from(horizon)
        .ok()
        .and_then(|h| now.checked_add(h).ok())
        .unwrap_or(Timestamp::MAX);
    let mut moments = BTreeSet::new();
    for p in &parsed {
        let Ok(from) = now.checked_sub(p.duration) else {
            continue;
        };
        for at in p
            .cron
            .iter_after(from.to_zoned(p.zone.clone()))
            .take(MAX_ACTIVATIONS)
        {
            let at = at.timestamp();
            if at > end {
                break;
            }
            for m in [
                at.checked_add(SignedDuration::from_secs(1)),
                at.checked_add(p.duration),
            ]
            .into_iter()
            .flatten()
            {
                if m > now && m <= end {
                    moments.insert(m);
                }
            }
        }
    }
    // Open for a moment only is not open: a deny that ends as the next begins leaves
    // an instant between them that no sync could use.
    let open = |m: Timestamp| blocker(windows, &parsed, m, manual).is_none();
    let until = moments
        .into_iter()
        .find(|m| open(*m) && m.checked_add(SignedDuration::from_secs(1)).is_ok_and(&open));
    Ok(Verdict::Blocked {
        window: culprit.to_string(),
        until,
    })
}

impl FromStr for WindowKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            other => Err(format!(
                "kind '{other}' mismatch: can only be allow or deny"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn w(spec: &str) -> SyncWindow {
        // "deny|0 22 * * *|1h|manual|Europe/Berlin"
        let parts: Vec<&str> = spec.split('|').collect();
        SyncWindow {
            kind: parts[0].parse().expect("kind"),
            schedule: parts[1].into(),
            duration: parts[2].into(),
            manual_sync: parts.get(3).is_some_and(|m| *m == "manual"),
            time_zone: parts.get(4).map(|z| (*z).to_owned()),
            applications: vec!["*".into()],
            namespaces: vec![],
            clusters: vec![],
            and_operator: false,
        }
    }

    #[test]
    fn activity_follows_upstream_next_before_now() {
        let check = |spec: &str, now: &str, want: bool| {
            assert_eq!(w(spec).active_at(at(now)).unwrap(), want, "{spec} at {now}");
        };
        check("deny|0 22 * * *|1h", "2026-12-01T22:30:00Z", true);
        // The activation itself is not yet active (Next(t-d) is t, not before t).
        check("deny|0 22 * * *|1h", "2026-12-01T22:00:00Z", false);
        check("deny|0 22 * * *|1h", "2026-12-01T22:00:01Z", true);
        check("deny|0 22 * * *|1h", "2026-12-01T22:59:59Z", true);
        check("deny|0 22 * * *|1h", "2026-12-01T23:00:00Z", false);
        check("deny|0 22 * * *|1h", "2026-12-01T21:59:00Z", false);
        // Across midnight.
        check("deny|0 22 * * *|8h", "2026-12-02T05:00:00Z", true);
        check("allow|* * * * *|1h", "2026-12-01T05:00:00Z", true);
        // Day of week: 2026-12-05 is a Saturday.
        check("deny|0 0 * * 6|24h", "2026-12-05T12:00:00Z", true);
        check("deny|0 0 * * 6|24h", "2026-12-06T12:00:00Z", false);
        // A time zone: 22:00 in Berlin is 21:00 UTC in December.
        check(
            "deny|0 22 * * *|1h||Europe/Berlin",
            "2026-12-01T21:30:00Z",
            true,
        );
        check(
            "deny|0 22 * * *|1h||Europe/Berlin",
            "2026-12-01T22:30:00Z",
            false,
        );
        // An unknown zone is UTC, as upstream.
        check(
            "deny|0 22 * * *|1h||Nowhere/Atlantis",
            "2026-12-01T22:30:00Z",
            true,
        );
        check("deny|0 22 * * *|90s", "2026-12-01T22:01:29Z", true);
        check("deny|0 22 * * *|90s", "2026-12-01T22:01:30Z", false);
    }

    #[test]
    fn can_sync_follows_upstream() {
        let now = at("2026-12-01T22:30:00Z");
        let check = |specs: &[&str], manual: bool, want: bool| {
            let ws: Vec<SyncWindow> = specs.iter().map(|s| w(s)).collect();
            assert_eq!(
                can_sync(&ws, now, manual).unwrap(),
                want,
                "{specs:?} manual={manual}"
            );
        };
        check(&[], true, true);
        check(&["deny|0 22 * * *|1h"], true, false);
        check(&["deny|0 22 * * *|1h|manual"], true, true);
        check(&["deny|0 22 * * *|1h|manual"], false, false);
        // Every active deny must allow manual syncs.
        check(
            &["deny|0 22 * * *|1h|manual", "deny|0 21 * * *|2h"],
            true,
            false,
        );
        check(&["deny|0 10 * * *|1h"], true, true);
        check(&["allow|0 22 * * *|1h"], false, true);
        check(&["allow|0 10 * * *|1h"], false, false);
        check(&["allow|0 10 * * *|1h|manual"], true, true);
        check(&["allow|0 10 * * *|1h|manual"], false, false);
        // Deny beats allow.
        check(&["allow|0 22 * * *|1h", "deny|0 22 * * *|1h"], true, false);
    }

    #[test]
    fn verdict_says_when_a_blocked_sync_may_run() {
        let day = Duration::from_secs(86_400);
        let check = |specs: &[&str], now: &str, want: Option<&str>| {
            let ws: Vec<SyncWindow> = specs.iter().map(|s| w(s)).collect();
            let v = verdict(&ws, at(now), true, day).unwrap();
            match want {
                Some("open") => assert_eq!(v, Verdict::Open, "{specs:?}"),
                want => match v {
                    Verdict::Blocked { until, .. } => {
                        assert_eq!(until, want.map(at), "{specs:?} at {now}")
                    }
                    Verdict::Open => panic!("{specs:?} at {now} is open"),
                },
            }
        };
        check(&[], "2026-12-01T22:30:00Z", Some("open"));
        check(
            &["deny|0 22 * * *|1h"],
            "2026-12-01T22:30:00Z",
            Some("2026-12-01T23:00:00Z"),
        );
        check(
            &["deny|0 22 * * *|8h"],
            "2026-12-01T22:30:00Z",
            Some("2026-12-02T06:00:00Z"),
        );
        // An allow window opens a second after its activation.
        check(
            &["allow|0 10 * * *|1h"],
            "2026-12-01T22:30:00Z",
            Some("2026-12-02T10:00:01Z"),
        );
        // Overlapping activations: closed until the last one ends.
        check(
            &["deny|*/10 22 * * *|30m"],
            "2026-12-01T22:05:00Z",
            Some("2026-12-01T23:20:00Z"),
        );
        // Two denies back to back.
        check(
            &["deny|0 22 * * *|1h", "deny|0 23 * * *|1h"],
            "2026-12-01T22:30:00Z",
            Some("2026-12-02T00:00:00Z"),
        );
        // A deny inside the only allow window: open when the deny ends, if the allow still is.
        check(
            &["allow|0 20 * * *|4h", "deny|0 22 * * *|1h"],
            "2026-12-01T22:30:00Z",
            Some("2026-12-01T23:00:00Z"),
        );
        // Never within the horizon.
        check(&["deny|* * * * *|48h"], "2026-12-01T22:30:00Z", None);
    }

    #[test]
    fn the_verdict_names_the_window_and_rejects_bad_ones() {
        let ws = vec![w("deny|0 22 * * *|1h")];
        let v = verdict(
            &ws,
            at("2026-12-01T22:30:00Z"),
            true,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict::Blocked {
                window: "deny \"0 22 * * *\" for 1h".into(),
                until: None,
            }
        );
        assert!(
            verdict(
                &[w("deny|0 22 * *|1h")],
                Timestamp::UNIX_EPOCH,
                true,
                Duration::ZERO
            )
            .is_err()
        );
        assert!(
            verdict(
                &[w("deny|0 22 * * *|soon")],
                Timestamp::UNIX_EPOCH,
                true,
                Duration::ZERO
            )
            .is_err()
        );
        // Seconds are not part of Argo CD's schedules.
        assert!(
            w("deny|0 0 22 * * *|1h")
                .active_at(Timestamp::UNIX_EPOCH)
                .is_err()
        );
    }

    #[test]
    fn matching_follows_upstream() {
        let app = WindowTarget {
            name: "myapp-prod-us-east-1",
            namespace: "myapp",
            cluster_name: "us-east-1",
            cluster_server: "https://1.2.3.4",
        };
        let check = |apps: &[&str], ns: &[&str], cl: &[&str], and: bool, want: bool| {
            let mut win = w("deny|0 22 * * *|1h");
            win.applications = apps.iter().map(|s| (*s).to_owned()).collect();
            win.namespaces = ns.iter().map(|s| (*s).to_owned()).collect();
            win.clusters = cl.iter().map(|s| (*s).to_owned()).collect();
            win.and_operator = and;
            assert_eq!(win.matches(&app), want, "{apps:?} {ns:?} {cl:?} and={and}");
        };
        check(&["*-prod-*"], &[], &[], false, true);
        check(&["myapp-staging-*"], &[], &[], false, false);
        check(&["other"], &["myapp"], &[], false, true);
        check(&["other"], &["myapp"], &[], true, false);
        check(&["myapp-*"], &["my?pp"], &["us-*"], true, true);
        check(&[], &[], &["https://1.2.3.*"], false, true);
        check(&[], &[], &[], false, false);
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
    }
}
