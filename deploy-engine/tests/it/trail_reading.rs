//! Reading the audit trail through the port: newest first, in doubling batches.

mod reading {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use std::collections::BTreeMap;

    use deploy_core::error::Result;
    use deploy_core::model::Release;
    use deploy_core::model::Tag;
    use deploy_core::port::AuditLog;
    use deploy_core::trail::*;
    use deploy_engine::memory::InMemoryAuditLog;
    use deploy_engine::observe::trail::newest;
    use jiff::Timestamp;

    /// A log that counts what it is asked, like a bill of S3 requests.
    #[derive(Debug, Default)]
    struct Counting {
        log: InMemoryAuditLog,
        lists: AtomicUsize,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl AuditLog for Counting {
        async fn append(&self, record: &AuditRecord) -> Result<()> {
            self.log.append(record).await
        }
        async fn list(&self, listing: Listing<'_>) -> Result<Found<Entry>> {
            self.lists.fetch_add(1, Ordering::Relaxed);
            self.log.list(listing).await
        }
        async fn read(&self, entries: &[Entry]) -> Result<Found<AuditRecord>> {
            self.reads.fetch_add(entries.len(), Ordering::Relaxed);
            self.log.read(entries).await
        }
    }

    const HOUR: i64 = 3600;
    const NOW: i64 = 1_800_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn record(run: &str, start: i64, end: Option<i64>, tag: &str) -> AuditRecord {
        AuditRecord {
            run_id: run.into(),
            kind: RunKind::Promote,
            environment: "prod".into(),
            actor: Actor::default(),
            release: Release {
                tag: Tag::new(tag).unwrap(),
                digests: BTreeMap::new(),
            },
            previous: BTreeMap::new(),
            changed: vec![],
            skipped: vec![],
            started_at: at(start),
            finished_at: at(end.unwrap_or(start)),
            outcome: if end.is_some() {
                Outcome::Succeeded
            } else {
                Outcome::Started
            },
            message: String::new(),
            checks: vec![],
            apps: vec![],
        }
    }

    /// Appends a run's records: its start, and its end when it has one.
    async fn run(log: &Counting, id: &str, start: i64, end: Option<i64>, tag: &str) {
        log.append(&record(id, start, None, tag)).await.unwrap();
        if end.is_some() {
            log.append(&record(id, start, end, tag)).await.unwrap();
        }
    }

    fn runs(read: &Found<AuditRecord>) -> Vec<(&str, Outcome)> {
        read.items
            .iter()
            .map(|r| (r.run_id.as_str(), r.outcome))
            .collect()
    }

    /// 1,000 runs an hour apart (2,000 records): the newest 3 cost one listing of the last
    /// day and one read per run; another environment's runs are not counted.
    #[tokio::test]
    async fn the_newest_runs_cost_a_recent_listing_and_one_read_each() {
        let log = Counting::default();
        for i in 0..1000_i64 {
            let start = NOW - (1000 - i) * HOUR;
            run(&log, &format!("r{i:04}"), start, Some(start + 60), "v1").await;
        }
        let mut other = record("s1", NOW - 60, Some(NOW - 30), "v1");
        other.environment = "staging".into();
        log.append(&other).await.unwrap();
        // The newest run was killed: only its first record.
        run(&log, "r1000", NOW - 10, None, "v1").await;

        let got = newest(&log, "prod", at(NOW), 3, |_| false).await.unwrap();
        assert_eq!(
            runs(&got),
            [
                ("r0998", Outcome::Succeeded),
                ("r0999", Outcome::Succeeded),
                ("r1000", Outcome::Started),
            ],
            "oldest first, one record per run: its end, else its start"
        );
        assert!(got.warnings.is_empty());
        assert_eq!(log.lists.load(Ordering::Relaxed), 1, "the last day only");
        assert_eq!(log.reads.load(Ordering::Relaxed), 3);

        // More runs than a day holds: the listing widens, reads stay one per run.
        let (lists, reads) = (log.lists.load(Ordering::Relaxed), 0);
        log.reads.store(reads, Ordering::Relaxed);
        let got = newest(&log, "prod", at(NOW), 100, |_| false).await.unwrap();
        assert_eq!(got.items.len(), 100);
        assert_eq!(got.items[0].run_id, "r0901");
        assert_eq!(
            log.lists.load(Ordering::Relaxed) - lists,
            2,
            "a day, then a week"
        );
        assert_eq!(log.reads.load(Ordering::Relaxed), 100);

        // Searching stops at the first batch that answers.
        log.reads.store(0, Ordering::Relaxed);
        let got = newest(&log, "prod", at(NOW), 1000, |rs| {
            rs.iter().any(|r| r.run_id == "r0995")
        })
        .await
        .unwrap();
        assert_eq!(log.reads.load(Ordering::Relaxed), BATCH);
        assert_eq!(got.items.len(), BATCH);

        // Everything, when asked for more runs than there are.
        let got = newest(&log, "prod", at(NOW), usize::MAX, |_| false)
            .await
            .unwrap();
        assert_eq!(got.items.len(), 1001);
    }

    /// A run that started before the window and ended inside it is ranked by its start, not
    /// its end: it is not among the newest when enough runs started after it.
    #[tokio::test]
    async fn a_long_run_ranks_by_its_start() {
        let log = Counting::default();
        run(&log, "long", NOW - 2 * 86_400, Some(NOW - 1), "v1").await;
        for i in 0..5_i64 {
            let start = NOW - (10 - i) * HOUR;
            run(&log, &format!("r{i}"), start, Some(start + 60), "v2").await;
        }
        let got = newest(&log, "prod", at(NOW), 5, |_| false).await.unwrap();
        assert!(
            got.items.iter().all(|r| r.run_id != "long"),
            "{:?}",
            runs(&got)
        );
        let got = newest(&log, "prod", at(NOW), 6, |_| false).await.unwrap();
        assert_eq!(got.items[0].run_id, "long", "{:?}", runs(&got));
        assert_eq!(got.items[0].outcome, Outcome::Succeeded);
    }
}
