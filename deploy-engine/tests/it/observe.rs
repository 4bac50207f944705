//! The observe helpers that take time: waiting for a release in every region (on tokio's
//! paused clock) and measuring every check of an environment once.

mod waiting {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::time::Duration;

    use deploy_core::config::{Config, EXAMPLE};
    use deploy_core::config::{Environment, Service};
    use deploy_core::error::{Error, Result};
    use deploy_core::model::RepoLocation;
    use deploy_core::model::Tag;
    use deploy_core::model::digest_of;
    use deploy_core::plan::release::*;
    use deploy_core::port::{ImageLookup, Registry, TaggedImage};
    use deploy_core::port::{ReplicationRule, ReplicationStatus, RepositoryInfo};
    use deploy_engine::clock::TokioClock;
    use deploy_engine::memory::InMemoryRegistry;
    use deploy_engine::observe::release::wait_until_complete;
    use jiff::Timestamp;

    const TAG: &str = "abc1234";

    /// An in-memory registry whose `image` lookups fail with `error` `failures` times first.
    #[derive(Debug)]
    struct Flaky {
        inner: InMemoryRegistry,
        failures: AtomicUsize,
        error: Error,
    }

    #[async_trait::async_trait]
    impl Registry for Flaky {
        async fn image(&self, repo: &RepoLocation, tag: &Tag) -> Result<ImageLookup> {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(self.error.clone());
            }
            self.inner.image(repo, tag).await
        }
        async fn tagged_images(&self, repo: &RepoLocation) -> Result<Vec<TaggedImage>> {
            self.inner.tagged_images(repo).await
        }
        async fn replication_status(
            &self,
            repo: &RepoLocation,
            tag: &Tag,
        ) -> Result<Vec<ReplicationStatus>> {
            self.inner.replication_status(repo, tag).await
        }
        async fn replication_rules(&self, a: &str, r: &str) -> Result<Vec<ReplicationRule>> {
            self.inner.replication_rules(a, r).await
        }
        async fn repository(&self, repo: &RepoLocation) -> Result<RepositoryInfo> {
            self.inner.repository(repo).await
        }
    }

    /// The example's staging registry with every image of [`TAG`] but `without`.
    fn staging(config: &Config, without: Option<&str>) -> InMemoryRegistry {
        let registry = InMemoryRegistry::new(Arc::new(TokioClock::new(Timestamp::UNIX_EPOCH)));
        let env = config.environment("staging").unwrap();
        for s in config.services.iter().filter(|s| Some(&*s.name) != without) {
            push(&registry, env, s);
        }
        registry
    }

    fn push(registry: &InMemoryRegistry, env: &Environment, s: &Service) {
        let tag = Tag::new(TAG).unwrap();
        registry.push(&env.location(s, "us-west-2"), &tag, &digest_of(&s.name));
    }

    /// What each round reported: the pause before the next check, and what was missing
    /// (service names) or "retrying".
    type Rounds = Vec<(u64, String)>;

    async fn wait(
        registry: &dyn Registry,
        config: &Config,
        limit: u64,
    ) -> (Result<Waited>, Rounds) {
        let env = config.environment("staging").unwrap();
        let mut rounds = Vec::new();
        let waited = wait_until_complete(
            registry,
            config,
            env,
            &Tag::new(TAG).unwrap(),
            Duration::from_secs(limit),
            |w| {
                rounds.push(match w {
                    Waiting::Incomplete { check, next, .. } => (
                        next.as_secs(),
                        check
                            .missing
                            .iter()
                            .map(|m| m.service.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    Waiting::Retrying { next, .. } => (next.as_secs(), "retrying".into()),
                })
            },
        )
        .await;
        (waited, rounds)
    }

    fn rounds(want: &[(u64, &str)]) -> Rounds {
        want.iter().map(|(n, s)| (*n, (*s).to_owned())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_release_ends_the_wait_at_once() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let (waited, seen) = wait(&staging(&config, None), &config, 120).await;
        let waited = waited.unwrap();
        assert!(waited.check.is_complete());
        assert_eq!(waited.waited, Duration::ZERO);
        assert_eq!(seen, rounds(&[]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_image_pushed_during_the_wait_ends_it_at_the_next_check() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let registry = staging(&config, Some("logserver"));
        let late = registry.clone();
        let cfg = config.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let env = cfg.environment("staging").unwrap();
            push(&late, env, cfg.sentinel());
        });
        let (waited, seen) = wait(&registry, &config, 120).await;
        let waited = waited.unwrap();
        assert!(waited.check.is_complete(), "{waited:?}");
        // Checks at 0, 2, 6 and 14 s: 2 s, then doubling.
        assert_eq!(waited.waited, Duration::from_secs(14));
        assert_eq!(
            seen,
            rounds(&[(2, "logserver"), (4, "logserver"), (8, "logserver")])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_still_incomplete_at_the_deadline_is_returned_as_it_is() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let (waited, seen) = wait(&staging(&config, Some("api")), &config, 20).await;
        let waited = waited.unwrap();
        assert!(!waited.check.is_complete());
        assert_eq!(waited.check.missing[0].service, "api");
        // Checks at 0, 2, 6, 14, then at the deadline (20 s), not at 30.
        assert_eq!(waited.waited, Duration::from_secs(20));
        assert_eq!(
            seen,
            rounds(&[(2, "api"), (4, "api"), (8, "api"), (6, "api")])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_grows_to_thirty_seconds() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        let (_, seen) = wait(&staging(&config, Some("api")), &config, 120).await;
        let pauses: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
        // 2+4+8+16+30+30 = 90, then the last 30 s.
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_others_end_the_wait() {
        let config = Config::parse("x", EXAMPLE).unwrap();
        // Three lookups per check (one per service): the first check fails.
        let flaky = Flaky {
            inner: staging(&config, None),
            failures: AtomicUsize::new(3),
            error: Error::Transient {
                message: "ECR throttled".into(),
                retry_after: Some(Duration::from_secs(5)),
            },
        };
        let (waited, seen) = wait(&flaky, &config, 120).await;
        let waited = waited.unwrap();
        assert!(waited.check.is_complete());
        assert_eq!(
            waited.waited,
            Duration::from_secs(5),
            "the registry's retry-after is longer than the first pause"
        );
        assert_eq!(seen, rounds(&[(5, "retrying")]));

        // Still failing at the deadline: the error, not an incomplete check.
        let down = Flaky {
            failures: AtomicUsize::new(usize::MAX),
            error: Error::transient("ECR unavailable"),
            ..flaky
        };
        let (waited, seen) = wait(&down, &config, 10).await;
        assert_eq!(waited.unwrap_err(), Error::transient("ECR unavailable"));
        assert_eq!(
            seen,
            rounds(&[(2, "retrying"), (4, "retrying"), (4, "retrying")])
        );

        let denied = Flaky {
            error: Error::Permission {
                message: "not authorized to perform ecr:DescribeImages".into(),
            },
            ..down
        };
        let (waited, seen) = wait(&denied, &config, 120).await;
        assert!(
            matches!(waited, Err(Error::Permission { .. })),
            "{waited:?}"
        );
        assert_eq!(seen, rounds(&[]), "waiting does not fix permissions");
    }

    #[tokio::test(start_paused = true)]
    async fn a_digest_that_differs_between_regions_is_waited_out() {
        // Prod: api in eu-west-1 still holds an older push under the tag, until
        // replication copies the new one over it.
        let config = Config::parse("x", EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let tag = Tag::new(TAG).unwrap();
        let registry = InMemoryRegistry::new(Arc::new(TokioClock::new(Timestamp::UNIX_EPOCH)));
        for s in &config.services {
            for r in &prod.registry.regions {
                let bytes = if s.name == "api" && r == "eu-west-1" {
                    "api-old"
                } else {
                    &s.name
                };
                registry.push(&prod.location(s, r), &tag, &digest_of(bytes));
            }
        }
        let api = config.services.iter().find(|s| s.name == "api").unwrap();
        let late = registry.clone();
        let at = prod.location(api, "eu-west-1");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            late.push(&at, &Tag::new(TAG).unwrap(), &digest_of("api"));
        });
        let mut inconsistent = Vec::new();
        let waited = wait_until_complete(
            &registry,
            &config,
            prod,
            &tag,
            Duration::from_secs(60),
            |w| {
                if let Waiting::Incomplete { check, .. } = w {
                    inconsistent.push(check.inconsistent.clone());
                }
            },
        )
        .await
        .unwrap();
        assert!(waited.check.is_complete());
        assert_eq!(waited.waited, Duration::from_secs(6));
        assert_eq!(
            inconsistent,
            [vec!["api".to_owned()], vec!["api".to_owned()]]
        );
    }
}

mod checks {
    use std::collections::BTreeMap;

    use deploy_core::check::Scope;
    use deploy_core::config::{Config, EXAMPLE};
    use deploy_core::plan::findings::ProbeAnswer;
    use deploy_core::port::test_app;
    use deploy_engine::memory::{Answer, InMemoryMetrics};
    use deploy_engine::observe::findings::observe_checks;

    /// Measured once per check and cluster through the port, `{release}` the release each
    /// cluster runs, each error kind kept.
    #[tokio::test]
    async fn observe_checks_measures_each_cluster_once() {
        let text = EXAMPLE.replace(
            r#"code=~"5.."}[2m]))"#,
            r#"code=~"5..",release="{release}"}[2m]))"#,
        );
        let config = Config::parse("x", &text).unwrap();
        let prod = config.environment("prod").unwrap();
        let mut apps = BTreeMap::new();
        for c in &config.clusters {
            let images: Vec<String> = deploy_core::plan::live::service_images(&config, prod, c)
                .into_iter()
                .map(|(_, n)| format!("{n}:v1"))
                .collect();
            let refs: Vec<&str> = images.iter().map(String::as_str).collect();
            let app = test_app(&config.application_name(prod, c), &refs);
            apps.insert(c.name.clone(), Some(app));
        }
        apps.insert("eu-west-1".into(), None);
        let metrics = InMemoryMetrics::new();
        let key = |cluster: &str, release: &str| {
            let c = config.cluster(cluster).unwrap();
            prod.checks[0]
                .resolve(&Scope {
                    cluster: &c.name,
                    region: &c.region,
                    env: "prod",
                    app: "myapp",
                    release,
                })
                .query
        };
        metrics.set(&key("us-west-2", "v1"), vec![0.001]);
        metrics.script(&key("us-east-1", "v1"), [Answer::Unreachable]);
        let probes = observe_checks(&config, prod, &apps, &metrics).await;
        let got: Vec<(&str, &ProbeAnswer)> = probes
            .iter()
            .map(|p| (p.cluster.as_str(), &p.answer))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], ("us-west-2", &ProbeAnswer::Values(vec![0.001])));
        assert!(
            matches!(got[1], ("us-east-1", ProbeAnswer::Unreachable(_))),
            "{got:?}"
        );
        // No Application: the release is unknown, and the query says so.
        assert_eq!(probes[2].check.query, key("eu-west-1", "unknown"));
        assert_eq!(metrics.calls(&key("us-west-2", "v1")), 1);
    }
}
