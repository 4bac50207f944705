//! The image-updater loop behind `deploy watch`: poll the sentinel repository, check each new
//! candidate release as a whole, and write only a complete release into an automated
//! environment's Applications, once. A manual environment is only reported to.
//!
//! # Polling cheaply
//!
//! A poll lists the sentinel repository in the environment's primary region (one registry
//! call for up to a page of tags). When the newest tag that passes the tag filter is the one
//! already handled, that is all. Otherwise candidates newer than the handled one are checked,
//! newest first, until a complete one; an incomplete candidate keeps its answers between
//! polls, so re-checking it asks only for the images still missing. A release assembled
//! over several polls is checked again in full before it is written.
//!
//! # Writing once
//!
//! Every Application written also gets the annotation [`annotation::WATCHED`] naming the
//! release. That is the watcher's memory, kept where the writes are: after a restart the
//! first poll reads it back, and an Application already annotated with a release (or with a
//! newer one) is never written again, even if someone has since pinned it to another tag by
//! hand. The ApplicationSet must preserve the annotation (`deploy render applicationset`
//! lists it in `preservedFields`).
//!
//! # Several replicas
//!
//! With a [`Leader`], only the holder of the lease polls and writes; the others wait to take
//! it over. The holder renews the lease every third of its time to live, also while a poll
//! runs; a poll whose lease is lost, or cannot be renewed until [`LEASE_MARGIN`] before it
//! expires, is abandoned, so no poll (and no write) outlives the lease it started under.
//!
//! # Tags that disappear
//!
//! The watcher follows the newest remaining candidate: when the release it wrote is deleted
//! from the sentinel (or no longer passes the tag filter), the newest complete candidate
//! left is written, even if it is older, as Argo CD could not pull the deleted images again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use futures::future::try_join_all;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::observe::release::look_up;
use deploy_core::config::{Cluster, Config, Environment};
use deploy_core::error::{Error, Result};
use deploy_core::image_override::override_for;
use deploy_core::model::annotation;
use deploy_core::model::{Release, Tag};
use deploy_core::plan::live::service_images;
use deploy_core::plan::release::{Lookups, MAX_CANDIDATES, ReleaseCheck, judge, order_candidates};
use deploy_core::port::{Application, ArgoCd, Clock, Lease, Lock, OverrideValue, Registry};

/// How long a watcher's leadership lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How much of its lease a leader keeps unused: work still running this close to the
/// lease's expiry without a renewal is abandoned.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest wait between two polls after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The lease replicas of `deploy watch --env ENV` compete for.
pub fn lease_key(config: &Config, env: &Environment) -> String {
    format!("deploy-watch-{}-{}", config.app, env.name)
}

/// What one poll saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Poll {
    /// The newest tag on the sentinel that passes the tag filter.
    pub newest: Option<Tag>,
    /// The newest complete release, when this poll found one newer than the last handled.
    pub release: Option<Release>,
    /// Newer candidates that are not complete yet, newest first.
    pub incomplete: Vec<ReleaseCheck>,
    /// Applications whose image override this poll wrote.
    pub written: Vec<String>,
}

/// What the loop reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// A poll finished.
    Polled(Poll),
    /// A poll or a lease operation failed; the next try is in `retry_in`.
    Failed {
        /// What failed.
        error: Error,
        /// When the loop tries again.
        retry_in: Duration,
    },
    /// This replica became the leader (`holder` is `None`) or is standing by for `holder`.
    Leadership {
        /// Who holds the lease when it is not us.
        holder: Option<String>,
    },
    /// The loop goes to sleep; it looks again within `next` (a liveness signal).
    Sleeping {
        /// How long until the loop wakes at the latest.
        next: Duration,
    },
}

/// How the loop runs.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Time between polls.
    pub interval: Duration,
    /// Poll once (or, standing by, look at the lease once) and return.
    pub once: bool,
}

/// Leader election among replicas, through the [`Lock`] port.
#[derive(Debug)]
pub struct Leader<'a> {
    lock: &'a dyn Lock,
    clock: &'a dyn Clock,
    key: String,
    holder: String,
    ttl: Duration,
    lease: Option<Lease>,
}

impl<'a> Leader<'a> {
    /// Competes for `key` as `holder`, with leases of [`LEASE_TTL`].
    pub fn new(lock: &'a dyn Lock, clock: &'a dyn Clock, key: String, holder: String) -> Self {
        Self {
            lock,
            clock,
            key,
            holder,
            ttl: LEASE_TTL,
            lease: None,
        }
    }

    /// Takes or renews the lease as needed: `Ok(None)` when we lead, `Ok(Some(holder))`
    /// when someone else does. A renewal that fails for any reason but a transient one (the
    /// lease object deleted, a store that refuses the renewal) drops the lease and takes it
    /// again at once: retrying the same renewal would never succeed.
    async fn ensure(&mut self) -> Result<Option<String>> {
        let result = match &self.lease {
            Some(lease) => {
                let left = lease.expires_at.duration_since(self.clock.now());
                if left > jiff::SignedDuration::try_from(self.ttl * 2 / 3).unwrap_or_default() {
                    return Ok(None);
                }
                match self.lock.renew(lease, self.ttl).await {
                    Err(e @ Error::Transient { .. }) => Err(e),
                    Err(e) => {
                        tracing::warn!("renewing the watch lease failed ({e}); taking it again");
                        self.lease = None;
                        self.lock.acquire(&self.key, &self.holder, self.ttl).await
                    }
                    renewed => renewed,
                }
            }
            None => self.lock.acquire(&self.key, &self.holder, self.ttl).await,
        };
        match result {
            Ok(lease) => {
                self.lease = Some(lease);
                Ok(None)
            }
            Err(Error::LockHeld { holder, .. }) => {
                self.lease = None;
                Ok(Some(holder))
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `work` while keeping the lease: renews it every third of its time to live, and
    /// abandons `work` when the lease is lost, or when renewing keeps failing until only
    /// [`LEASE_MARGIN`] of it is left, so that `work` never outlives the lease it started
    /// under (another replica may take it over once it expires).
    async fn hold<T>(&mut self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::pin!(work);
        loop {
            let Some(lease) = self.lease.clone() else {
                return Err(Error::transient("the watch lease is not held"));
            };
            let left = Duration::try_from(lease.expires_at.duration_since(self.clock.now()))
                .unwrap_or_default();
            let deadline = Instant::now() + left.saturating_sub(LEASE_MARGIN);
            let renew_at = (Instant::now() + self.ttl / 3).min(deadline);
            tokio::select! {
                result = &mut work => return result,
                () = tokio::time::sleep_until(renew_at) => {}
            }
            match self.lock.renew(&lease, self.ttl).await {
                Ok(renewed) => self.lease = Some(renewed),
                Err(e @ Error::LockHeld { .. }) => {
                    self.lease = None;
                    return Err(e);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::transient(format!(
                        "stopped polling: the watch lease could not be renewed before it expires ({e})"
                    )));
                }
                Err(e) => tracing::warn!("renewing the watch lease: {e}; trying again"),
            }
        }
    }

    /// Gives the lease up so that another replica takes over at once.
    async fn resign(&mut self) {
        if let Some(lease) = self.lease.take() {
            match tokio::time::timeout(Duration::from_secs(5), self.lock.release(&lease)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("releasing the watch lease: {e}"),
                Err(_) => tracing::warn!("releasing the watch lease timed out"),
            }
        }
    }
}

/// The watcher of one environment.
#[derive(Debug)]
pub struct Watcher<'a> {
    config: &'a Config,
    env: &'a Environment,
    registry: &'a dyn Registry,
    argocd: &'a dyn ArgoCd,
    /// The newest complete release handled (written or reported).
    handled: Option<Tag>,
    /// Whether the Applications' memory has been read since start.
    restored: bool,
    /// Registry answers for candidates that were incomplete at the last poll.
    pending: BTreeMap<Tag, Lookups>,
}

impl<'a> Watcher<'a> {
    /// A watcher of `env`.
    pub fn new(
        config: &'a Config,
        env: &'a Environment,
        registry: &'a dyn Registry,
        argocd: &'a dyn ArgoCd,
    ) -> Self {
        Self {
            config,
            env,
            registry,
            argocd,
            handled: None,
            restored: false,
            pending: BTreeMap::new(),
        }
    }

    /// One poll: list the sentinel, check new candidates, write a new complete release.
    pub async fn poll(&mut self) -> Result<Poll> {
        let env = self.env;
        let sentinel = env.location(self.config.sentinel(), &env.registry.regions[0]);
        let images = self.registry.tagged_images(&sentinel).await?;
        let candidates = order_candidates(&images, &env.tags);
        let mut poll = Poll {
            newest: candidates.first().cloned(),
            ..Poll::default()
        };
        if !self.restored && poll.newest.is_some() {
            self.restore().await?;
        }
        if poll.newest.is_none() || poll.newest == self.handled {
            self.pending.clear();
            return Ok(poll);
        }
        let mut pending = BTreeMap::new();
        let mut found = None;
        for tag in candidates.iter().take(MAX_CANDIDATES) {
            if Some(tag) == self.handled.as_ref() {
                break;
            }
            let cached = self.pending.remove(tag);
            let reused = cached.is_some();
            let mut lookups = cached.unwrap_or_default();
            look_up(self.registry, self.config, env, tag, &mut lookups).await?;
            let mut check = judge(env, &self.config.services, tag, &lookups);
            if check.is_complete() && reused {
                // Assembled over several polls: confirm with every image looked up again.
                lookups.clear();
                look_up(self.registry, self.config, env, tag, &mut lookups).await?;
                check = judge(env, &self.config.services, tag, &lookups);
            }
            if check.is_complete() {
                found = Some(check);
                break;
            }
            poll.incomplete.push(check);
            pending.insert(tag.clone(), lookups);
        }
        self.pending = pending;
        let Some(release) = found.as_ref().and_then(ReleaseCheck::release) else {
            return Ok(poll);
        };
        let news = if env.sync.is_automated() {
            poll.written = self.write(&release.tag, &candidates).await?;
            true
        } else {
            // A manual environment hears of a release it does not run yet, not of the one
            // it was promoted to (a restart would otherwise announce that one again).
            !self.all_set_to(&release.tag).await?
        };
        self.handled = Some(release.tag.clone());
        poll.release = news.then_some(release);
        Ok(poll)
    }

    /// Whether every Application's image override already names `tag`.
    async fn all_set_to(&self, tag: &Tag) -> Result<bool> {
        let apps = self.applications().await?;
        Ok(self
            .config
            .clusters
            .iter()
            .zip(apps)
            .all(|(cluster, app)| self.override_to(cluster, &app, tag).is_none()))
    }

    /// The override that sets `app` (on `cluster`) to `tag`, unless it already is.
    fn override_to(
        &self,
        cluster: &Cluster,
        app: &Application,
        tag: &Tag,
    ) -> Option<OverrideValue> {
        let names: Vec<String> = service_images(self.config, self.env, cluster)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        let want = override_for(self.env, &names, tag);
        (app.override_value(&self.env.image_override, &names)
            .as_ref()
            != Some(&want))
        .then_some(want)
    }

    /// The environment's Applications, one per cluster.
    async fn applications(&self) -> Result<Vec<Application>> {
        try_join_all(self.config.clusters.iter().map(|c| async move {
            self.argocd
                .application(&self.config.application_name(self.env, c))
                .await
        }))
        .await
    }

    /// Reads the memory back: when every Application names the same watched release, that
    /// release is handled.
    async fn restore(&mut self) -> Result<()> {
        if self.env.sync.is_automated() {
            let recorded: BTreeSet<Option<String>> = self
                .applications()
                .await?
                .into_iter()
                .map(|a| a.annotations.get(annotation::WATCHED).cloned())
                .collect();
            if let [Some(tag)] = Vec::from_iter(recorded).as_slice() {
                self.handled = tag.parse().ok();
            }
        }
        self.restored = true;
        Ok(())
    }

    /// Writes `tag` into every Application that has not had it (or a newer candidate) from
    /// us, and records it there. Returns the Applications whose override changed.
    async fn write(&self, tag: &Tag, candidates: &[Tag]) -> Result<Vec<String>> {
        let rank = |t: &str| candidates.iter().position(|c| c.as_str() == t);
        let mut written = Vec::new();
        let apps = self.applications().await?;
        let record = BTreeMap::from([(annotation::WATCHED.to_owned(), tag.to_string())]);
        for (cluster, app) in self.config.clusters.iter().zip(apps) {
            let recorded = app.annotations.get(annotation::WATCHED).map(String::as_str);
            let newer_recorded = matches!(
                (recorded.and_then(rank), rank(tag.as_str())),
                (Some(r), Some(t)) if r < t
            );
            if recorded == Some(tag.as_str()) || newer_recorded {
                continue;
            }
            if let Some(want) = self.override_to(cluster, &app, tag) {
                self.argocd.set_override(&app.name, &want).await?;
                written.push(app.name.clone());
            }
            self.argocd.annotate(&app.name, &record).await?;
        }
        Ok(written)
    }

    /// Polls every `opts.interval` until `stop` turns true (or once), reporting to
    /// `on_event`. With `leader`, only while holding its lease.
    ///
    /// Failures are reported and retried with a doubling delay (at least what the server
    /// asked for, at most [`MAX_BACKOFF`]); only a first failure that is not transient, or
    /// any failure with `once`, ends the loop: a watcher that never worked is misconfigured.
    /// A stop abandons a poll in flight, which is safe: every write is recognised and not
    /// repeated by the next poll.
    pub async fn run(
        &mut self,
        opts: WatchOptions,
        mut leader: Option<Leader<'_>>,
        mut stop: watch::Receiver<bool>,
        mut on_event: impl FnMut(WatchEvent),
    ) -> Result<()> {
        let mut delay = opts.interval;
        let mut next_poll = Instant::now();
        let mut worked = false;
        let mut standing: Option<Option<String>> = None;
        let result = loop {
            if *stop.borrow_and_update() {
                break Ok(());
            }
            let step = tokio::select! {
                step = self.step(&mut leader, next_poll) => step,
                () = stopped(&mut stop) => break Ok(()),
            };
            match step {
                Ok((holder, poll)) => {
                    if standing.as_ref() != Some(&holder) {
                        if leader.is_some() {
                            on_event(WatchEvent::Leadership {
                                holder: holder.clone(),
                            });
                        }
                        standing = Some(holder);
                    }
                    if let Some(poll) = poll {
                        worked = true;
                        delay = opts.interval;
                        next_poll = later(delay);
                        on_event(WatchEvent::Polled(poll));
                    }
                }
                Err(error) => {
                    if opts.once || (!worked && !matches!(error, Error::Transient { .. })) {
                        break Err(error);
                    }
                    delay = backoff(delay, &error);
                    next_poll = later(delay);
                    on_event(WatchEvent::Failed {
                        error,
                        retry_in: delay,
                    });
                }
            }
            if opts.once {
                break Ok(());
            }
            // The leader wakes to renew its lease in time; a replica standing by, to try
            // to take it over.
            let wake = match (&leader, &standing) {
                (None, _) => next_poll,
                (Some(l), Some(None)) => next_poll.min(later(l.ttl / 3)),
                (Some(l), _) => later(l.ttl / 3),
            };
            on_event(WatchEvent::Sleeping {
                next: wake.saturating_duration_since(Instant::now()),
            });
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = stopped(&mut stop) => {}
            }
        };
        if let Some(l) = leader.as_mut() {
            l.resign().await;
        }
        result
    }

    /// Leadership, then a poll when one is due and we lead.
    async fn step(
        &mut self,
        leader: &mut Option<Leader<'_>>,
        next_poll: Instant,
    ) -> Result<(Option<String>, Option<Poll>)> {
        let holder = match leader.as_mut() {
            Some(l) => l.ensure().await?,
            None => None,
        };
        let due = holder.is_none() && Instant::now() >= next_poll;
        let poll = match leader.as_mut() {
            Some(l) if due => match l.hold(self.poll()).await {
                Ok(poll) => Some(poll),
                // Lost during the poll: stand by.
                Err(Error::LockHeld { holder, .. }) => return Ok((Some(holder), None)),
                Err(e) => return Err(e),
            },
            None if due => Some(self.poll().await?),
            _ => None,
        };
        Ok((holder, poll))
    }
}

/// Returns when `stop` turns true; never, once nobody can turn it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The delay after `error`, given the last one: doubled, at least what the server asked
/// for, at most [`MAX_BACKOFF`].
pub fn backoff(last: Duration, error: &Error) -> Duration {
    let asked = match error {
        Error::Transient { retry_after, .. } => retry_after.unwrap_or_default(),
        _ => Duration::ZERO,
    };
    last.saturating_mul(2).max(asked).min(MAX_BACKOFF)
}

/// `delay` from now, or far in the future when that overflows.
fn later(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::memory::InMemoryLock;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn work_is_abandoned_when_the_lease_is_lost_and_kept_while_it_is_renewed() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(jiff::Timestamp::UNIX_EPOCH));
        let lock = InMemoryLock::new(clock.clone());
        let mut a = Leader::new(&lock, &*clock, "k".into(), "a".into());
        assert_eq!(a.ensure().await.unwrap(), None);

        // Work longer than the lease is fine while the lease is renewed.
        let long = a
            .hold(async {
                tokio::time::sleep(LEASE_TTL * 3).await;
                Ok("done")
            })
            .await;
        assert_eq!(long.unwrap(), "done");

        // Someone takes the lease over during the work: it is abandoned at the next renewal.
        let started = Instant::now();
        let held = a.lease.clone().unwrap();
        let steal = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            lock.release(&held).await.unwrap();
            lock.acquire("k", "b", LEASE_TTL).await.unwrap();
        };
        let (lost, ()) = tokio::join!(
            a.hold(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }),
            steal
        );
        assert!(
            matches!(lost, Err(Error::LockHeld { ref holder, .. }) if holder == "b"),
            "{lost:?}"
        );
        assert_eq!(started.elapsed(), LEASE_TTL / 3, "at the first renewal");
        assert!(a.lease.is_none());
    }

    /// A lock whose renewals fail as a store refusing them does (an S3 `NoSuchKey` once
    /// read as `Invalid`, expired credentials), while taking it still works.
    #[derive(Debug)]
    struct RefusesRenewals(InMemoryLock);

    #[async_trait::async_trait]
    impl Lock for RefusesRenewals {
        async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Lease> {
            self.0.acquire(key, holder, ttl).await
        }
        async fn renew(&self, _: &Lease, _: Duration) -> Result<Lease> {
            Err(Error::invalid("S3 refused PutObject: NoSuchKey"))
        }
        async fn release(&self, lease: &Lease) -> Result<()> {
            self.0.release(lease).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_lease_was_deleted_or_cannot_be_renewed_takes_it_again() {
        use crate::conformance::lock::LockFixture as _;
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(jiff::Timestamp::UNIX_EPOCH));
        let lock = InMemoryLock::new(clock.clone());
        let mut a = Leader::new(&lock, &*clock, "k".into(), "a".into());
        assert_eq!(a.ensure().await.unwrap(), None);
        // The lease object is deleted: at the next renewal the leader takes it again at once
        // rather than standing by for "nobody".
        lock.delete("k").await;
        tokio::time::sleep(LEASE_TTL / 2).await;
        assert_eq!(a.ensure().await.unwrap(), None);
        assert_eq!(lock.state()["k"].holder, "a");

        // A renewal that is refused for good: the lease is dropped and taken again.
        let refusing = RefusesRenewals(InMemoryLock::new(clock.clone()));
        let mut b = Leader::new(&refusing, &*clock, "k".into(), "b".into());
        assert_eq!(b.ensure().await.unwrap(), None);
        refusing.0.delete("k").await;
        tokio::time::sleep(LEASE_TTL / 2).await;
        assert_eq!(b.ensure().await.unwrap(), None);
        assert_eq!(refusing.0.state()["k"].holder, "b");
        let expiry = b.lease.as_ref().unwrap().expires_at;
        assert!(expiry > clock.now(), "a fresh lease, until {expiry}");
    }
}
