//! Argo CD sync windows as a pure decision: may a sync run now, and if not, when may it.
//!
//! A window is an AppProject's `spec.syncWindows[]` entry. Its semantics follow upstream
//! argo-cd `pkg/apis/application/v1alpha1/types.go` (`SyncWindows.Matches`,
//! `SyncWindow.active`, `SyncWindows.CanSync`, `hasDeny`, `InactiveAllows`, `manualEnabled`):
//!
//! - `schedule` is a 5-field cron expression (robfig/cron's parser with `Minute | Hour | Dom |
//!   Month | Dow`: no seconds, no year) and `duration` a Go duration ([`go_duration`], as
//!   `time.ParseDuration`: `1.5h`, `1h30m`, `90m`, `300ms`); the window is *active* at `t`
//!   when the schedule's next activation strictly after `t - duration` is strictly before `t`
//!   (so a window that starts at 22:00 is active from 22:00:01 to 22:59:59 for a `1h`
//!   duration, and activations may overlap).
//! - `timeZone` (IANA, default UTC; unknown: UTC, as upstream) is the zone the schedule is read
//!   in. Upstream (`scheduleOffsetByTimeZone`) adds the zone's offset *at the time of asking*
//!   to the time and reads the schedule in UTC: the schedule runs on the zone's wall clock, and
//!   a duration is wall-clock time too, so across a DST change a window is an hour shorter or
//!   longer than its duration. We do the same (`wall`), so that what we predict is what Argo
//!   CD will answer then.
//! - `CanSync(isManual)`: no windows → yes; an active deny → no, unless the sync is manual and
//!   every active deny has `manualSync`; else an active allow → yes; else any inactive allow →
//!   no, unless manual and every inactive allow has `manualSync`; else yes.
//! - `GET /api/v1/applications/{name}/syncwindows` (`server/application`
//!   `GetApplicationSyncWindows`) answers `canSync = windows.CanSync(true)` (whether a *manual*
//!   sync, ours, may run now) and `activeWindows`, both computed in each window's zone, but
//!   its windows leave `timeZone` out (`convertSyncWindows` copies kind, schedule, duration
//!   and manualSync only). Whether a sync may run *now* is therefore Argo CD's answer
//!   ([`Answer`]); the windows with their zones (the AppProject, when readable) only say until
//!   when.
//!
//! [`verdict`] adds what upstream does not compute: when a blocked sync may run, found by
//! stepping through the windows' starts and ends (and the zones' offset changes) within a
//! horizon.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::{AmbiguousOffset, TimeZone};
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
    /// The windows of its project that match it (`assignedWindows`); with their zones only
    /// when [`AppWindows::zoned`].
    pub assigned: Vec<SyncWindow>,
    /// Whether `assigned` carry their `timeZone` (read from the AppProject), so that
    /// [`verdict`] can say until when. The REST answer of the Application's syncwindows
    /// leaves zones out; a token that may not read the AppProject gets only that.
    #[serde(default)]
    pub zoned: bool,
    /// Argo CD's own answer, when an API server gave one (not with `--core`).
    #[serde(default)]
    pub answer: Option<Answer>,
}

/// What `GET /api/v1/applications/{name}/syncwindows` answers besides the windows: computed by
/// Argo CD in each window's zone, so it decides whether a sync may run now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Answer {
    /// `canSync`: `CanSync(true)`, whether a manual sync may run now.
    pub can_sync: bool,
    /// `activeWindows`: the assigned windows active now (without their zones).
    #[serde(default)]
    pub active: Vec<SyncWindow>,
}

impl Answer {
    /// `CanSync(manual)` as Argo CD computes it now. `canSync` is `CanSync(true)`; for an
    /// automated sync (`manual` false, where `manualSync` lets nothing through) upstream's rule
    /// needs only which kinds are active, which `activeWindows` says: an active deny → no; an
    /// active allow → yes; any (so inactive) allow among `assigned` → no; else yes.
    pub fn allows(&self, assigned: &[SyncWindow], manual: bool) -> bool {
        if manual {
            return self.can_sync;
        }
        let active = |k: WindowKind| self.active.iter().any(|w| w.kind == k);
        if active(WindowKind::Deny) {
            return false;
        }
        active(WindowKind::Allow) || !assigned.iter().any(|w| w.kind == WindowKind::Allow)
    }

    /// The windows Argo CD's "no" comes from, described: its active denies, else the allows
    /// that are not active.
    pub fn culprit(&self, assigned: &[SyncWindow]) -> String {
        let describe = |ws: Vec<&SyncWindow>| {
            ws.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let denies: Vec<&SyncWindow> = self
            .active
            .iter()
            .filter(|w| w.kind == WindowKind::Deny)
            .collect();
        if !denies.is_empty() {
            return describe(denies);
        }
        let allows: Vec<&SyncWindow> = assigned
            .iter()
            .filter(|w| w.kind == WindowKind::Allow)
            .collect();
        if allows.is_empty() {
            "of its project (Argo CD answers canSync = false)".into()
        } else {
            format!("{}, none active", describe(allows))
        }
    }
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
        let duration = go_duration(&self.duration)
            .map_err(|e| invalid(format!("cannot parse duration \"{}\": {e}", self.duration)))?;
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

/// The zone's wall clock at `t`, as a UTC timestamp: upstream's `currentTime.Add(
/// scheduleOffsetByTimeZone())`, with the offset of the zone at `t` (upstream asks at
/// `time.Now()`, which is `t` when Argo CD answers).
fn wall(zone: &TimeZone, t: Timestamp) -> Option<Timestamp> {
    let offset = SignedDuration::from_secs(i64::from(zone.to_offset(t).seconds()));
    t.checked_add(offset).ok()
}

/// The instants at which the zone's wall clock reads `w` ([`wall`]'s inverse): none in a gap
/// (spring forward), two in a fold (fall back).
fn instants(zone: &TimeZone, w: Timestamp) -> Vec<Timestamp> {
    let back = |o: jiff::tz::Offset| {
        w.checked_sub(SignedDuration::from_secs(i64::from(o.seconds())))
            .ok()
    };
    match zone
        .to_ambiguous_timestamp(TimeZone::UTC.to_datetime(w))
        .offset()
    {
        AmbiguousOffset::Unambiguous { offset } => back(offset).into_iter().collect(),
        AmbiguousOffset::Fold { before, after } => {
            [back(before), back(after)].into_iter().flatten().collect()
        }
        AmbiguousOffset::Gap { .. } => Vec::new(),
    }
}

fn active(p: &Parsed, now: Timestamp) -> bool {
    // robfig's Next works in whole seconds: the next activation strictly after `t`.
    let Some(wall) = wall(&p.zone, now) else {
        return false;
    };
    let Ok(from) = wall.checked_sub(p.duration) else {
        return false;
    };
    match p
        .cron
        .find_next_occurrence(&from.to_zoned(TimeZone::UTC), false)
    {
        Ok(next) => next.timestamp() < wall,
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
    // An active allow lets any sync run, whatever other allows say.
    if states
        .iter()
        .any(|(w, a)| *a && w.kind == WindowKind::Allow)
    {
        return None;
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
        /// The window that blocks it, described.
        window: String,
        /// When a sync may run; `None` when not within the horizon.
        until: Option<Timestamp>,
    },
    /// Argo CD blocks it (`canSync`, `activeWindows`) and the windows' zones, which its answer
    /// leaves out, could not be read (the token may not read the AppProject): nobody can say
    /// until when, so a wait polls Argo CD.
    Unsaid {
        /// The windows Argo CD's answer names, described (without their zones).
        window: String,
    },
}

impl Verdict {
    /// Whether a sync may run now.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }
}

/// Most activations of one window [`verdict`] looks at: a `* * * * *` window over ten days.
const MAX_ACTIVATIONS: usize = 15_000;

/// Whether a sync (`manual`: ours, started through the API; else Argo CD's automated sync)
/// may run at `now` under `windows`, and if not, the first moment within `horizon` when it
/// may. The moments a verdict can change are a second after an activation (a window opens),
/// an activation plus its duration (it closes), both on the zone's wall clock, and the zone's
/// offset changes (the wall clock jumps); each is tried in order.
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
    // A day either side of the horizon, on the wall clock, covers any offset.
    let day = SignedDuration::from_hours(24);
    let mut moments = BTreeSet::new();
    for p in &parsed {
        let (Some(first), Some(last)) = (
            wall(&p.zone, now).and_then(|w| w.checked_sub(p.duration).ok()?.checked_sub(day).ok()),
            wall(&p.zone, end).and_then(|w| w.checked_add(day).ok()),
        ) else {
            continue;
        };
        for at in p
            .cron
            .iter_after(first.to_zoned(TimeZone::UTC))
            .take(MAX_ACTIVATIONS)
        {
            let at = at.timestamp();
            if at > last {
                break;
            }
            for m in [
                at.checked_add(SignedDuration::from_secs(1)),
                at.checked_add(p.duration),
            ]
            .into_iter()
            .flatten()
            .flat_map(|w| instants(&p.zone, w))
            {
                if m > now && m <= end {
                    moments.insert(m);
                }
            }
        }
        moments.extend(
            p.zone
                .following(now)
                .map(|t| t.timestamp())
                .take_while(|t| *t <= end),
        );
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

/// A Go duration, as `time.ParseDuration` reads it (`[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, units
/// `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`; `0` alone needs no unit), for the `duration`
/// of a sync window: `1.5h`, `1h30m`, `90m`, `300ms`. A fraction is scaled in floating point
/// as Go does, and anything past Go's range (about 292 years) is an error.
pub fn go_duration(text: &str) -> Result<SignedDuration, String> {
    let (neg, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text.as_bytes()[1..]),
        Some(b'+') => (false, &text.as_bytes()[1..]),
        _ => (false, text.as_bytes()),
    };
    if s == b"0" {
        return Ok(SignedDuration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("not a Go duration ({GO_HINT})"));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        total = total
            .checked_add(go_term(&mut s)?)
            .filter(|v| *v <= GO_MAX)
            .ok_or_else(go_too_long)?;
    }
    let total = i128::from(total);
    let total = if neg { -total } else { total };
    i64::try_from(total)
        .map(SignedDuration::from_nanos)
        .map_err(|_| go_too_long())
}

const GO_HINT: &str = "a Go duration is one or more numbers with a unit (ns, us, ms, s, m, h), as 1h30m, 1.5h, 90m or 300ms";

/// Go's durations are at most 2⁶³ ns (before the sign).
const GO_MAX: u64 = 1 << 63;

fn go_too_long() -> String {
    format!("longer than Go's durations can be ({GO_HINT})")
}

/// One `[0-9]*(\.[0-9]*)?[a-z]+` term of a Go duration, in nanoseconds, taken off the front
/// of `s`.
fn go_term(s: &mut &[u8]) -> Result<u64, String> {
    let invalid = || format!("not a Go duration ({GO_HINT})");
    let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
    // [0-9]*: an integer that overflows is an error.
    let n = digits(s);
    let mut whole: u64 = 0;
    for c in &s[..n] {
        whole = whole
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .filter(|v| *v <= GO_MAX)
            .ok_or_else(|| format!("number too large ({GO_HINT})"))?;
    }
    *s = &s[n..];
    // (\.[0-9]*)?: digits past what fits are dropped, as Go does.
    let (mut fraction, mut scale, mut post) = (0u64, 1f64, false);
    if s.first() == Some(&b'.') {
        let n = digits(&s[1..]);
        for c in &s[1..=n] {
            if let Some(v) = fraction
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|v| *v <= GO_MAX)
            {
                fraction = v;
                scale *= 10.0;
            }
        }
        post = n > 0;
        *s = &s[1 + n..];
    }
    if n == 0 && !post {
        return Err(invalid());
    }
    let nanos = go_unit(s)?;
    let mut v = whole
        .checked_mul(nanos)
        .filter(|v| *v <= GO_MAX)
        .ok_or_else(go_too_long)?;
    if fraction > 0 {
        // As Go: `v += uint64(float64(f) * (float64(unit) / scale))`.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let part = (fraction as f64 * (nanos as f64 / scale)) as u64;
        v = v
            .checked_add(part)
            .filter(|v| *v <= GO_MAX)
            .ok_or_else(go_too_long)?;
    }
    Ok(v)
}

/// The unit at the front of `s`, in nanoseconds, taken off it.
fn go_unit(s: &mut &[u8]) -> Result<u64, String> {
    let unit_len = s
        .iter()
        .take_while(|c| **c != b'.' && !c.is_ascii_digit())
        .count();
    if unit_len == 0 {
        return Err(format!("missing unit ({GO_HINT})"));
    }
    let unit = std::str::from_utf8(&s[..unit_len])
        .map_err(|_| format!("not a Go duration ({GO_HINT})"))?;
    *s = &s[unit_len..];
    Ok(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => return Err(format!("unknown unit \"{other}\" ({GO_HINT})")),
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
        // An active allow lets a sync run, whatever other (inactive) allows say.
        check(&["allow|0 22 * * *|1h", "allow|0 10 * * *|1h"], false, true);
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
                    v => panic!("{specs:?} at {now}: {v:?}"),
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
    fn go_durations_parse_as_go_does() {
        let ok = |text: &str, secs: i64, nanos: i32| {
            assert_eq!(
                go_duration(text),
                Ok(SignedDuration::new(secs, nanos)),
                "{text}"
            );
        };
        ok("1.5h", 5400, 0);
        ok("1h30m", 5400, 0);
        ok("90m", 5400, 0);
        ok("300ms", 0, 300_000_000);
        ok("1h0m0s", 3600, 0);
        ok(".5s", 0, 500_000_000);
        ok("1.s", 1, 0);
        ok("2h45m30.5s", 9930, 500_000_000);
        ok("1us", 0, 1_000);
        ok("1\u{b5}s", 0, 1_000);
        ok("1\u{3bc}s", 0, 1_000);
        ok("7ns", 0, 7);
        ok("0", 0, 0);
        ok("+10s", 10, 0);
        ok("-1h", -3600, 0);
        // Go's largest: 1<<63-1 ns (2562047h47m16.854775807s); the smallest is its negative - 1.
        ok("2562047h47m16.854775807s", 9_223_372_036, 854_775_807);
        ok("-2562047h47m16.854775808s", -9_223_372_036, -854_775_808);
        let bad = |text: &str, why: &str| {
            let e = go_duration(text).expect_err(text);
            assert!(e.contains(why) && e.contains("1h30m"), "{text}: {e}");
        };
        bad("", "not a Go duration");
        bad("soon", "not a Go duration");
        bad("-", "not a Go duration");
        bad(".s", "not a Go duration");
        bad("1", "missing unit");
        bad("1h30", "missing unit");
        bad("1d", "unknown unit \"d\"");
        bad("1 h", "unknown unit \" h\"");
        bad("2562047h47m16.854775808s", "longer than");
        bad("99999999999999999999h", "number too large");
        // A window with a bad duration is a clear error, naming the window.
        let e = w("deny|0 22 * * *|1 day")
            .active_at(Timestamp::UNIX_EPOCH)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot parse duration \"1 day\"") && e.contains("1.5h"),
            "{e}"
        );
        // `1.5h` makes a window: 22:00 to 23:30.
        assert!(
            w("deny|0 22 * * *|1.5h")
                .active_at(at("2026-12-01T23:29:59Z"))
                .unwrap()
        );
        assert!(
            !w("deny|0 22 * * *|1.5h")
                .active_at(at("2026-12-01T23:30:00Z"))
                .unwrap()
        );
    }

    /// A deny at 19:00 for an hour in `zone`, active at `now` or not, and the same read in UTC.
    fn zoned(zone: &str, now: &str, in_zone: bool, in_utc: bool) {
        let spec = format!("deny|0 19 * * *|1h||{zone}");
        assert_eq!(
            w(&spec).active_at(at(now)).unwrap(),
            in_zone,
            "{spec} at {now}"
        );
        assert_eq!(
            w("deny|0 19 * * *|1h").active_at(at(now)).unwrap(),
            in_utc,
            "in UTC at {now}"
        );
    }

    #[test]
    fn zones_ahead_of_and_behind_utc_are_read_on_their_wall_clocks() {
        // Asia/Kolkata is UTC+05:30: 19:00 there is 13:30 UTC.
        zoned("Asia/Kolkata", "2026-12-01T13:45:00Z", true, false);
        zoned("Asia/Kolkata", "2026-12-01T19:30:00Z", false, true);
        // America/Los_Angeles is UTC-08:00 in December: 19:00 there is 03:00 UTC the next day.
        zoned("America/Los_Angeles", "2026-12-02T03:30:00Z", true, false);
        zoned("America/Los_Angeles", "2026-12-01T19:30:00Z", false, true);
        // And UTC-07:00 in July.
        zoned("America/Los_Angeles", "2026-07-02T02:30:00Z", true, false);
        let day = Duration::from_secs(86_400);
        let until = |spec: &str, now: &str| match verdict(&[w(spec)], at(now), true, day).unwrap() {
            Verdict::Blocked { until, .. } => until,
            v => panic!("{spec} at {now}: {v:?}"),
        };
        assert_eq!(
            until("deny|0 19 * * *|1h||Asia/Kolkata", "2026-12-01T13:45:00Z"),
            Some(at("2026-12-01T14:30:00Z"))
        );
        assert_eq!(
            until(
                "deny|0 19 * * *|1h||America/Los_Angeles",
                "2026-12-02T03:30:00Z"
            ),
            Some(at("2026-12-02T04:00:00Z"))
        );
        // An allow window in Kolkata opens a second after 09:00 there (03:30 UTC).
        assert_eq!(
            until("allow|0 9 * * *|8h||Asia/Kolkata", "2026-12-01T13:00:00Z"),
            Some(at("2026-12-02T03:30:01Z"))
        );
    }

    #[test]
    fn across_a_dst_change_a_window_runs_on_the_wall_clock_as_upstream() {
        let day = Duration::from_secs(86_400);
        let until = |spec: &str, now: &str| match verdict(&[w(spec)], at(now), true, day).unwrap() {
            Verdict::Blocked { until, .. } => until,
            v => panic!("{spec} at {now}: {v:?}"),
        };
        let active = |spec: &str, now: &str| w(spec).active_at(at(now)).unwrap();
        // US spring forward, 2026-03-08 02:00 PST → 03:00 PDT (10:00 UTC). A deny from 01:00
        // for 3h ends at 04:00 on the wall clock, 11:00 UTC: two hours after it began.
        let spring = "deny|0 1 8 3 *|3h||America/Los_Angeles";
        assert!(active(spring, "2026-03-08T09:30:00Z"));
        assert!(active(spring, "2026-03-08T10:59:59Z"));
        assert!(!active(spring, "2026-03-08T11:30:00Z"));
        assert_eq!(
            until(spring, "2026-03-08T09:30:00Z"),
            Some(at("2026-03-08T11:00:00Z"))
        );
        // A deny within the skipped hour never begins.
        assert!(!active(
            "deny|30 2 8 3 *|20m||America/Los_Angeles",
            "2026-03-08T10:10:00Z"
        ));
        // One from 01:00 to 02:30 ends when the clock jumps to 03:00.
        assert_eq!(
            until(
                "deny|0 1 8 3 *|90m||America/Los_Angeles",
                "2026-03-08T09:30:00Z"
            ),
            Some(at("2026-03-08T10:00:00Z"))
        );
        // US fall back, 2026-11-01 02:00 PDT → 01:00 PST (09:00 UTC). A deny from 01:00 PDT
        // for 2h ends at 03:00 PST, 11:00 UTC: three hours after it began; the instant the
        // clock goes back to 01:00 it is not active, which is no opening.
        let fall = "deny|0 1 1 11 *|2h||America/Los_Angeles";
        assert!(active(fall, "2026-11-01T08:30:00Z"));
        assert!(!active(fall, "2026-11-01T09:00:00Z"));
        assert!(active(fall, "2026-11-01T10:30:00Z"));
        assert!(!active(fall, "2026-11-01T11:00:00Z"));
        assert_eq!(
            until(fall, "2026-11-01T08:30:00Z"),
            Some(at("2026-11-01T11:00:00Z"))
        );
        // An allow from 01:30 for 10 minutes opens twice that night, at 08:30:01 and 09:30:01.
        let twice = "allow|30 1 1 11 *|10m||America/Los_Angeles";
        assert_eq!(
            until(twice, "2026-11-01T08:45:00Z"),
            Some(at("2026-11-01T09:30:01Z"))
        );
    }

    #[test]
    fn argo_cds_answer_decides_now() {
        let answer = |can_sync: bool, active: &[&str]| Answer {
            can_sync,
            active: active.iter().map(|s| w(s)).collect(),
        };
        let assigned = [w("deny|0 19 * * *|1h"), w("allow|0 8 * * *|10h")];
        // Manual: `canSync` as it is.
        assert!(answer(true, &[]).allows(&assigned, true));
        assert!(!answer(false, &[]).allows(&assigned, true));
        // Automated: upstream's CanSync(false) over Argo CD's active windows.
        assert!(!answer(true, &["deny|0 19 * * *|1h|manual"]).allows(&assigned, false));
        assert!(answer(true, &["allow|0 8 * * *|10h"]).allows(&assigned, false));
        assert!(!answer(true, &[]).allows(&assigned, false));
        assert!(answer(true, &[]).allows(&assigned[..1], false));
        assert_eq!(
            answer(false, &["deny|0 19 * * *|1h"]).culprit(&assigned),
            "deny \"0 19 * * *\" for 1h"
        );
        assert_eq!(
            answer(false, &[]).culprit(&assigned),
            "allow \"0 8 * * *\" for 10h, none active"
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
