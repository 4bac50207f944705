//! The soak's rules: [`Vigil`] counts only observations that arrived, [`judge`] says what
//! one observation means, and `model::annotation::soaked_mark` is the mark left once a soak passed (the resume
//! rule reads it). Pure: every method takes the time.

use std::time::{Duration, Instant};

use crate::model::Release;
use crate::plan::live::live_at;
use crate::plan::promotion::AppPlan;
use crate::port::{Application, Health};

/// How long to pause after a collision, a broken watch or a failed read before trying again.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The longest time without an observation that a soak may bridge (or the soak itself,
/// when that is shorter).
pub const MAX_GAP: Duration = Duration::from_secs(30);

/// What one Application's soak has observed. Pure: every method takes the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vigil {
    soak: Duration,
    max_gap: Duration,
    /// Start of the current unbroken run of good observations.
    span_start: Instant,
    /// The last good observation.
    last_ok: Instant,
    /// Observation failed since `last_ok`; retry at this time.
    retry_at: Option<Instant>,
    retry_pause: Duration,
    /// A good observation arrived since the soak began.
    observed: bool,
}

/// A lapse that just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// How long nothing was observed.
    pub gap: Duration,
    /// The gap was over the bound: the soak starts over.
    pub soak_restarted: bool,
}

impl Vigil {
    /// A soak of `soak` that begins at `now`; it counts from its first good observation
    /// (what was seen before, while the wave's other Applications deployed, does not count).
    pub fn new(now: Instant, soak: Duration) -> Self {
        Self {
            soak,
            max_gap: MAX_GAP.min(soak).max(Duration::from_millis(1)),
            span_start: now,
            last_ok: now,
            retry_at: None,
            retry_pause: RETRY_PAUSE,
            observed: false,
        }
    }

    /// A good observation (Healthy at the release) at `now`. Returns the lapse it ends, if any.
    pub fn seen(&mut self, now: Instant) -> Option<Restored> {
        if !self.observed {
            self.observed = true;
            let lapsed = self.retry_at.take().is_some();
            let gap = now.saturating_duration_since(self.last_ok);
            self.span_start = now;
            self.last_ok = now;
            self.retry_pause = RETRY_PAUSE;
            return lapsed.then_some(Restored {
                gap,
                soak_restarted: false,
            });
        }
        let gap = now.saturating_duration_since(self.last_ok);
        let lapsed = self.retry_at.take().is_some();
        let soak_restarted = gap > self.max_gap;
        if soak_restarted {
            self.span_start = now;
        }
        self.last_ok = now;
        self.retry_pause = RETRY_PAUSE;
        (lapsed || soak_restarted).then_some(Restored {
            gap,
            soak_restarted,
        })
    }

    /// Observing failed at `now`. Returns true when this begins a lapse (to report it once).
    pub fn lost(&mut self, now: Instant) -> bool {
        let first = self.retry_at.is_none();
        self.retry_at = Some(now + self.retry_pause);
        // Retry soon enough to recover within the bound.
        self.retry_pause = (self.retry_pause * 2).min((self.max_gap / 3).max(RETRY_PAUSE));
        first
    }

    /// The soak is complete: an unbroken run of good observations for the whole soak, the
    /// last of them at its end.
    pub fn passed(&self) -> bool {
        self.observed
            && self.retry_at.is_none()
            && self.last_ok.saturating_duration_since(self.span_start) >= self.soak
    }

    /// When to look (read the Application) next if the watch says nothing: halfway through
    /// the bound after the last observation, at the end of the soak, or the retry after a
    /// failure.
    pub fn next_look(&self) -> Instant {
        if let Some(at) = self.retry_at {
            return at;
        }
        let end = self.span_start + self.soak;
        let look = self.last_ok + self.max_gap / 2;
        // Once the soak is complete (the watch kept while checks measure on), only the bound.
        if end > self.last_ok {
            look.min(end)
        } else {
            look
        }
    }

    /// Observation failed and has not come back yet.
    pub fn lapsed(&self) -> bool {
        self.retry_at.is_some()
    }

    /// How long the current lapse has lasted at `now` (zero when observed).
    pub fn blind_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ok)
    }
}

/// What an observed state says during a soak (and at the end of a run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy at the release: a good observation.
    Good,
    /// Not Healthy yet not failed (Progressing, Suspended, Unknown): not a good observation.
    NotHealthy(Health),
    /// Failed (Degraded, Missing) or no longer at the release, and why.
    Bad(String),
}

/// Judges one observation against `release`: by the digests where the live images carry
/// them ([`live_at`]), so an Application pinned by digest soaks at the release and a tag
/// pushed again under it does not.
pub fn judge(app: &Application, a: &AppPlan, release: &Release) -> Verdict {
    if app.health == Health::Degraded || app.health == Health::Missing {
        let msg = app.health_message.clone().unwrap_or_default();
        return Verdict::Bad(format!("{:?} {msg}", app.health).trim().to_owned());
    }
    let live = live_at(app, &a.images, release);
    if live.tag() != Some(release.tag.as_str()) {
        return Verdict::Bad(format!("no longer runs {} ({live})", release.tag));
    }
    if app.health != Health::Healthy {
        return Verdict::NotHealthy(app.health);
    }
    Verdict::Good
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotation::soaked_mark;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_soak_mark_names_the_tag_and_its_digests() {
        let digest = |c: char| {
            crate::model::Digest::new(format!("sha256:{}", c.to_string().repeat(64))).unwrap()
        };
        let tag = crate::model::Tag::new("v2").unwrap();
        let by_tag = Release {
            tag: tag.clone(),
            digests: Default::default(),
        };
        assert_eq!(soaked_mark(&by_tag), "v2");
        let release = |d: char| Release {
            tag: tag.clone(),
            digests: [("api".to_owned(), digest(d))].into(),
        };
        let mark = soaked_mark(&release('a'));
        assert!(
            mark.starts_with("v2@") && mark.len() == "v2@".len() + 16,
            "{mark}"
        );
        assert_eq!(mark, soaked_mark(&release('a')), "stable");
        assert_ne!(
            mark,
            soaked_mark(&release('b')),
            "the tag pushed again under other bytes was never soaked"
        );
    }

    #[test]
    fn an_unbroken_soak_passes_on_a_fresh_look_at_its_end() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        assert_eq!(
            v.next_look(),
            t0 + 15 * S,
            "the watch's first event is awaited first"
        );
        assert_eq!(v.seen(t0), None);
        assert!(!v.passed());
        assert_eq!(v.next_look(), t0 + 15 * S, "halfway through the 30 s bound");
        for s in [15, 30, 45] {
            assert_eq!(v.seen(t0 + s * S), None);
            assert!(!v.passed());
        }
        assert_eq!(v.next_look(), t0 + 60 * S, "the end of the soak");
        v.seen(t0 + 60 * S);
        assert!(v.passed());
        // Watched on while checks measure: a look every half bound, not at once.
        assert_eq!(v.next_look(), t0 + 75 * S);
        assert_eq!(v.seen(t0 + 75 * S), None);
        assert!(v.passed());
        assert_eq!(v.next_look(), t0 + 90 * S);
    }

    #[test]
    fn the_soak_counts_from_its_first_observation() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        assert!(v.lost(t0), "the first look fails");
        assert!(!v.passed());
        assert!(v.seen(t0 + 5 * S).is_some_and(|r| !r.soak_restarted));
        for s in [20, 35, 50, 60] {
            v.seen(t0 + s * S);
        }
        assert!(!v.passed(), "only 55 s observed");
        v.seen(t0 + 65 * S);
        assert!(v.passed());
    }

    #[test]
    fn nothing_observed_never_passes() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        v.seen(t0);
        assert!(v.lost(t0 + S), "the first failure begins a lapse");
        for s in 2..600 {
            assert!(!v.lost(t0 + s * S), "reported once");
            assert!(!v.passed());
        }
    }

    #[test]
    fn a_short_lapse_is_bridged_a_long_one_starts_over() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 60 * S);
        v.seen(t0);
        v.lost(t0 + 10 * S);
        let r = v.seen(t0 + 25 * S).unwrap();
        assert_eq!((r.gap, r.soak_restarted), (25 * S, false));
        assert_eq!(v.seen(t0 + 40 * S), None);
        v.seen(t0 + 60 * S);
        assert!(v.passed());

        let mut v = Vigil::new(t0, 60 * S);
        v.seen(t0);
        v.lost(t0 + 10 * S);
        let r = v.seen(t0 + 50 * S).unwrap();
        assert_eq!((r.gap, r.soak_restarted), (50 * S, true));
        v.seen(t0 + 60 * S);
        assert!(!v.passed(), "the soak restarted at 50 s");
        for s in [75, 90, 105] {
            v.seen(t0 + s * S);
        }
        assert!(!v.passed());
        v.seen(t0 + 110 * S);
        assert!(v.passed());
    }

    #[test]
    fn a_soak_shorter_than_the_bound_bounds_the_gap() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 10 * S);
        v.seen(t0);
        assert_eq!(v.next_look(), t0 + 5 * S);
        v.lost(t0 + S);
        assert!(
            v.seen(t0 + 12 * S).unwrap().soak_restarted,
            "11 s > a 10 s soak"
        );
        v.seen(t0 + 22 * S);
        assert!(v.passed());
    }

    #[test]
    fn retries_back_off_but_stay_within_the_bound() {
        let t0 = Instant::now();
        let mut v = Vigil::new(t0, 300 * S);
        v.seen(t0);
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            v.lost(now);
            let next = v.next_look();
            pauses.push(next.duration_since(now).as_secs());
            now = next;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
    }
}
