//! The watch loop over the in-memory world, on tokio's paused clock: only complete releases
//! are written, once; manual environments are never changed; restarts remember; failures
//! back off; of two replicas only the leader writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::Error;
use deploy_core::config::{Config, EXAMPLE};
use deploy_core::image_override::override_for;
use deploy_core::model::annotation;
use deploy_core::model::{RepoLocation, Tag};
use deploy_core::plan::live::service_images;
use deploy_core::port::{
    AppStream, Application, ArgoCd, ImageLookup, OverrideValue, Registry, ReplicationRule,
    ReplicationStatus, RepositoryInfo, SyncRequest, TaggedImage,
};
use deploy_engine::clock::TokioClock;
use deploy_engine::memory::{World, build_digest};
use deploy_engine::watch::{Leader, Poll, WatchEvent, WatchOptions, Watcher, lease_key};
use tokio::sync::watch;

use crate::support::{T1, T2, tag};

/// Counts the writes of an Argo CD and forwards every call.
#[derive(Debug)]
struct Writes<A> {
    inner: A,
    overrides: Mutex<Vec<String>>,
}

impl<A> Writes<A> {
    fn new(inner: A) -> Self {
        Self {
            inner,
            overrides: Mutex::default(),
        }
    }

    fn overrides(&self) -> Vec<String> {
        self.overrides.lock().unwrap().clone()
    }
}

#[async_trait]
impl<A: ArgoCd> ArgoCd for Writes<A> {
    async fn application(&self, name: &str) -> deploy_core::Result<Application> {
        self.inner.application(name).await
    }
    async fn set_override(
        &self,
        name: &str,
        value: &OverrideValue,
    ) -> deploy_core::Result<Application> {
        self.overrides.lock().unwrap().push(name.to_owned());
        self.inner.set_override(name, value).await
    }
    async fn sync(&self, name: &str, request: &SyncRequest) -> deploy_core::Result<()> {
        self.inner.sync(name, request).await
    }
    async fn watch(&self, name: &str) -> deploy_core::Result<AppStream> {
        self.inner.watch(name).await
    }
    async fn terminate(&self, name: &str) -> deploy_core::Result<()> {
        self.inner.terminate(name).await
    }
    async fn annotate(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> deploy_core::Result<()> {
        self.inner.annotate(name, annotations).await
    }
    async fn sync_windows(
        &self,
        name: &str,
    ) -> deploy_core::Result<deploy_core::window::AppWindows> {
        self.inner.sync_windows(name).await
    }
}

/// A registry that counts calls and throttles the next `throttled` of them.
#[derive(Debug)]
struct Throttling<R> {
    inner: R,
    throttled: AtomicU32,
    calls: AtomicU32,
}

impl<R> Throttling<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            throttled: AtomicU32::new(0),
            calls: AtomicU32::new(0),
        }
    }

    fn answer(&self) -> deploy_core::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self
            .throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(Error::transient("ThrottlingException: Rate exceeded")),
            Err(_) => Ok(()),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<R: Registry> Registry for Throttling<R> {
    async fn image(&self, repo: &RepoLocation, tag: &Tag) -> deploy_core::Result<ImageLookup> {
        self.answer()?;
        self.inner.image(repo, tag).await
    }
    async fn tagged_images(&self, repo: &RepoLocation) -> deploy_core::Result<Vec<TaggedImage>> {
        self.answer()?;
        self.inner.tagged_images(repo).await
    }
    async fn replication_status(
        &self,
        repo: &RepoLocation,
        tag: &Tag,
    ) -> deploy_core::Result<Vec<ReplicationStatus>> {
        self.answer()?;
        self.inner.replication_status(repo, tag).await
    }
    async fn replication_rules(
        &self,
        account: &str,
        region: &str,
    ) -> deploy_core::Result<Vec<ReplicationRule>> {
        self.answer()?;
        self.inner.replication_rules(account, region).await
    }
    async fn repository(&self, repo: &RepoLocation) -> deploy_core::Result<RepositoryInfo> {
        self.answer()?;
        self.inner.repository(repo).await
    }
}

struct Fixture {
    config: Config,
    world: World,
    registry: Throttling<deploy_engine::memory::InMemoryRegistry>,
    argocd: Writes<deploy_engine::memory::InMemoryArgoCd>,
}

impl Fixture {
    /// Every environment at T1.
    fn new() -> Self {
        let config = Config::parse("examples/deploy.toml", EXAMPLE).unwrap();
        let clock = Arc::new(TokioClock::new(
            jiff::Timestamp::from_second(1_790_000_000).unwrap(),
        ));
        let world = World::seeded(&config, clock, &tag(T1));
        let registry = Throttling::new(world.registry.clone());
        let argocd = Writes::new(world.argocd.clone());
        Self {
            config,
            world,
            registry,
            argocd,
        }
    }

    fn watcher(&self, env: &str) -> Watcher<'_> {
        let env = self.config.environment(env).unwrap();
        Watcher::new(&self.config, env, &self.registry, &self.argocd)
    }

    /// CI pushes `t` to `env`'s primary region, leaving out `skip`.
    fn push(&self, env: &str, t: &str, skip: &[&str]) {
        let env = self.config.environment(env).unwrap();
        let mut services: Vec<_> = self.config.services.iter().collect();
        services.sort_by_key(|s| s.sentinel);
        for s in services
            .into_iter()
            .filter(|s| !skip.contains(&s.name.as_str()))
        {
            let at = env.location(s, &env.registry.regions[0]);
            self.world
                .registry
                .push(&at, &tag(t), &build_digest(&s.name, &tag(t)));
        }
    }

    /// Every region of prod gets `t`, as replication leaves it.
    fn replicate_to_prod(&self, t: &str) {
        let prod = self.config.environment("prod").unwrap();
        for s in &self.config.services {
            for r in &prod.registry.regions {
                self.world.registry.push(
                    &prod.location(s, r),
                    &tag(t),
                    &build_digest(&s.name, &tag(t)),
                );
            }
        }
    }

    /// The tag each Application of `env` is set to.
    async fn desired(&self, env: &str) -> Vec<String> {
        let e = self.config.environment(env).unwrap();
        let mut tags = Vec::new();
        for c in &self.config.clusters {
            let app = self
                .world
                .argocd
                .application(&self.config.application_name(e, c))
                .await
                .unwrap();
            let names: Vec<String> = service_images(&self.config, e, c)
                .into_iter()
                .map(|(_, n)| n)
                .collect();
            let value = app.override_value(&e.image_override, &names).unwrap();
            tags.push(value.tags().join(","));
        }
        tags
    }

    fn staging_apps(&self) -> Vec<String> {
        let staging = self.config.environment("staging").unwrap();
        self.config
            .clusters
            .iter()
            .map(|c| self.config.application_name(staging, c))
            .collect()
    }
}

fn opts(once: bool) -> WatchOptions {
    WatchOptions {
        interval: Duration::from_secs(10),
        once,
    }
}

#[tokio::test(start_paused = true)]
async fn an_incomplete_release_is_not_written_and_the_last_image_writes_it_once() {
    let f = Fixture::new();
    let mut w = f.watcher("staging");
    // First poll: T1 is what runs; the watcher has no memory yet and records it.
    let first = w.poll().await.unwrap();
    assert_eq!(first.release.as_ref().map(|r| r.tag.clone()), Some(tag(T1)));
    assert!(first.written.is_empty(), "T1 already runs: {first:?}");

    f.push("staging", T2, &["worker"]);
    let p = w.poll().await.unwrap();
    assert_eq!(p.newest, Some(tag(T2)));
    assert_eq!(p.release, None, "{p:?}");
    assert_eq!(p.incomplete.len(), 1);
    assert_eq!(p.incomplete[0].missing.len(), 1, "{:?}", p.incomplete[0]);
    assert!(f.argocd.overrides().is_empty());
    // Still incomplete: only the missing image is asked for again.
    let before = f.registry.calls();
    w.poll().await.unwrap();
    assert_eq!(
        f.registry.calls() - before,
        2,
        "the sentinel list and the missing image"
    );

    f.push("staging", T2, &["api", "logserver"]);
    let p = w.poll().await.unwrap();
    let release = p.release.clone().expect("complete now");
    assert_eq!(release.tag, tag(T2));
    assert_eq!(release.digests.len(), f.config.services.len());
    assert_eq!(p.written, f.staging_apps());
    assert_eq!(f.desired("staging").await, vec![T2; 3]);

    for _ in 0..3 {
        let before = f.registry.calls();
        let again = w.poll().await.unwrap();
        assert_eq!(
            again,
            Poll {
                newest: Some(tag(T2)),
                ..Poll::default()
            }
        );
        assert_eq!(
            f.registry.calls() - before,
            1,
            "one sentinel list per idle poll"
        );
    }
    assert_eq!(
        f.argocd.overrides(),
        f.staging_apps(),
        "each app written once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_manual_environment_is_reported_to_and_never_changed() {
    let f = Fixture::new();
    f.replicate_to_prod(T2);
    let mut w = f.watcher("prod");
    let p = w.poll().await.unwrap();
    assert_eq!(p.release.map(|r| r.tag), Some(tag(T2)));
    assert!(p.written.is_empty());
    assert!(f.argocd.overrides().is_empty());
    assert_eq!(f.desired("prod").await, vec![T1; 3]);
    let prod = f.config.environment("prod").unwrap();
    for c in &f.config.clusters {
        let app = f
            .world
            .argocd
            .application(&f.config.application_name(prod, c))
            .await
            .unwrap();
        assert!(!app.annotations.contains_key(annotation::WATCHED));
    }
    // Reported once, not at every poll.
    assert_eq!(w.poll().await.unwrap().release, None);
    // Not yet promoted: a restarted watcher reports it again.
    assert!(f.watcher("prod").poll().await.unwrap().release.is_some());
    // Once prod runs it, a restarted watcher has nothing new to say.
    for c in &f.config.clusters {
        let names: Vec<String> = service_images(&f.config, prod, c)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        f.world
            .argocd
            .set_override(
                &f.config.application_name(prod, c),
                &override_for(prod, &names, &tag(T2)),
            )
            .await
            .unwrap();
    }
    assert_eq!(f.watcher("prod").poll().await.unwrap().release, None);
}

#[tokio::test(start_paused = true)]
async fn a_restart_does_not_write_again_even_over_a_hand_pinned_tag() {
    let f = Fixture::new();
    f.push("staging", T2, &[]);
    let p = f.watcher("staging").poll().await.unwrap();
    assert_eq!(p.written.len(), 3);
    // Someone pins one cluster back to T1 by hand.
    let staging = f.config.environment("staging").unwrap();
    let pinned = &f.staging_apps()[0];
    let names: Vec<String> = service_images(&f.config, staging, &f.config.clusters[0])
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    f.world
        .argocd
        .set_override(pinned, &override_for(staging, &names, &tag(T1)))
        .await
        .unwrap();

    // A new process: it reads its memory back and neither writes nor checks the release.
    let before = f.registry.calls();
    let mut restarted = f.watcher("staging");
    let p = restarted.poll().await.unwrap();
    assert_eq!(p.release, None, "{p:?}");
    assert!(p.written.is_empty());
    assert_eq!(f.registry.calls() - before, 1);
    assert_eq!(f.desired("staging").await, vec![T1, T2, T2]);
    assert_eq!(f.argocd.overrides().len(), 3);

    // The next release is written everywhere, the pinned cluster included.
    let t3 = "3333333ccccc";
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.push("staging", t3, &[]);
    let p = restarted.poll().await.unwrap();
    assert_eq!(p.written.len(), 3);
    assert_eq!(f.desired("staging").await, vec![t3; 3]);
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_off_and_recovers() {
    let f = Fixture::new();
    f.push("staging", T2, &[]);
    f.registry.throttled.store(3, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let mut events = Vec::new();
    let started = tokio::time::Instant::now();
    let mut w = f.watcher("staging");
    w.run(opts(false), None, stop, |e| {
        let done = matches!(&e, WatchEvent::Polled(p) if !p.written.is_empty());
        events.push((started.elapsed(), e));
        if done {
            stop_tx.send(true).unwrap();
        }
    })
    .await
    .unwrap();
    let delays: Vec<Duration> = events
        .iter()
        .filter_map(|(_, e)| match e {
            WatchEvent::Failed { error, retry_in } => {
                assert_eq!(error.kind(), "transient");
                Some(*retry_in)
            }
            _ => None,
        })
        .collect();
    assert_eq!(delays, [20, 40, 80].map(Duration::from_secs));
    let (at, last) = events
        .iter()
        .rfind(|(_, e)| !matches!(e, WatchEvent::Sleeping { .. }))
        .unwrap();
    assert!(
        matches!(last, WatchEvent::Polled(p) if p.written.len() == 3),
        "{last:?}"
    );
    assert_eq!(*at, Duration::from_secs(140), "after 20 + 40 + 80 s");
    assert_eq!(f.argocd.overrides().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_first_failure_that_waiting_cannot_fix_ends_the_loop() {
    let f = Fixture::new();
    let mut broken = f.config.clone();
    broken
        .services
        .iter_mut()
        .filter(|s| s.sentinel)
        .for_each(|s| s.repository = "no-such-repository".into());
    let env = broken.environment("staging").unwrap();
    let mut w = Watcher::new(&broken, env, &f.registry, &f.argocd);
    let (_stop_tx, stop) = watch::channel(false);
    let err = w.run(opts(false), None, stop, |_| {}).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn of_two_replicas_only_the_leader_writes_and_a_stop_hands_over() {
    let f = Fixture::new();
    let staging = f.config.environment("staging").unwrap();
    let key = lease_key(&f.config, staging);
    assert_eq!(key, "deploy-watch-myapp-staging");
    let clock = &*f.world.clock;
    let (stop_a_tx, stop_a) = watch::channel(false);
    let (stop_b_tx, stop_b) = watch::channel(false);
    let events_a = Mutex::new(Vec::new());
    let events_b = Mutex::new(Vec::new());
    let mut a = f.watcher("staging");
    let mut b = f.watcher("staging");
    let run_a = a.run(
        opts(false),
        Some(Leader::new(&f.world.lock, clock, key.clone(), "a".into())),
        stop_a,
        |e| events_a.lock().unwrap().push(e),
    );
    let run_b = async {
        // B starts a little later, so A is the first leader.
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.run(
            opts(false),
            Some(Leader::new(&f.world.lock, clock, key.clone(), "b".into())),
            stop_b,
            |e| events_b.lock().unwrap().push(e),
        )
        .await
    };
    let script = async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        f.push("staging", T2, &[]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(f.argocd.overrides().len(), 3, "A wrote T2");
        stop_a_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        f.push("staging", "3333333ccccc", &[]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop_b_tx.send(true).unwrap();
    };
    let (ra, rb, ()) = tokio::join!(run_a, run_b, script);
    ra.unwrap();
    rb.unwrap();

    let written = |events: &Mutex<Vec<WatchEvent>>| -> Vec<String> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Polled(p) => p.release.as_ref().map(|r| r.tag.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(written(&events_a), [T1, T2], "A leads first");
    assert_eq!(written(&events_b), ["3333333ccccc"], "B after A stopped");
    let standby = events_b
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, WatchEvent::Leadership { holder: Some(h) } if h == "a"));
    assert!(standby, "B stood by for A");
    assert_eq!(
        f.argocd.overrides().len(),
        6,
        "three apps, twice, no double writes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_completed_over_several_polls_is_checked_again_in_full() {
    let f = Fixture::new();
    let mut w = f.watcher("staging");
    w.poll().await.unwrap();
    f.push("staging", T2, &["worker"]);
    assert_eq!(w.poll().await.unwrap().incomplete.len(), 1);
    // CI re-runs the api job: same tag, another build.
    let staging = f.config.environment("staging").unwrap();
    let api = f.config.services.iter().find(|s| s.name == "api").unwrap();
    let rebuilt = deploy_core::model::digest_of("api rebuilt");
    f.world.registry.push(
        &staging.location(api, &staging.registry.regions[0]),
        &tag(T2),
        &rebuilt,
    );
    f.push("staging", T2, &["api", "logserver"]);
    let p = w.poll().await.unwrap();
    let release = p.release.expect("complete");
    assert_eq!(
        release.digests["api"], rebuilt,
        "not the digest seen a poll ago"
    );
}

#[tokio::test(start_paused = true)]
async fn an_application_that_had_a_newer_release_from_watch_is_not_taken_back() {
    let f = Fixture::new();
    let t3 = "3333333ccccc";
    f.push("staging", T2, &[]);
    f.push("staging", t3, &["worker"]);
    // Another watcher wrote T3 to the first Application before T3 lost its worker image
    // (say, deleted by a lifecycle rule); the other two never got it.
    let first = &f.staging_apps()[0];
    let record = BTreeMap::from([(annotation::WATCHED.to_owned(), t3.to_owned())]);
    f.world.argocd.annotate(first, &record).await.unwrap();
    let p = f.watcher("staging").poll().await.unwrap();
    assert_eq!(p.release.as_ref().map(|r| r.tag.clone()), Some(tag(T2)));
    assert_eq!(p.written, f.staging_apps()[1..], "{p:?}");
    assert_eq!(f.desired("staging").await, vec![T1, T2, T2]);
}
