//! The S3 state store against moto's S3 (which implements `If-None-Match` and `If-Match`
//! on PutObject and DeleteObject): the lock conformance suite, races between two
//! "machines", expiry and takeover, and an audit trail written from two machines.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_aws::moto::{AwsFiles, Moto, create_bucket, delete_key, list_keys, put_object};
use deploy_aws::{S3StateOptions, S3Store};
use deploy_core::Error;
use deploy_core::config::S3Location;
use deploy_core::lock::{Refusal, UnlockError};
use deploy_core::model::{Release, Tag};
use deploy_core::port::lock_id;
use deploy_core::port::{AuditLog, Clock, Lock, SystemClock};
use deploy_core::trail::{Actor, AuditRecord, Outcome, RunKind};
use deploy_engine::conformance::lock::LockFixture as _;
use deploy_engine::unlock::unlock;
use futures::StreamExt as _;
use jiff::Timestamp;

const BUCKET: &str = "myapp-deploy-state";
const KEY: &str = "deploy-myapp-prod";
const TTL: Duration = Duration::from_secs(600);

#[allow(clippy::print_stderr)]
fn start() -> Option<Moto> {
    Moto::start("222222222222")
        .map_err(|unavailable| eprintln!("skipping: {unavailable}"))
        .ok()
}

/// Two AWS profiles ("laptop" and "ci", two machines) pointing at one moto, and the bucket.
async fn setup(moto: &Moto) -> AwsFiles {
    create_bucket(&moto.endpoint, BUCKET).await;
    AwsFiles::new(&[("laptop", &moto.endpoint), ("ci", &moto.endpoint)], "")
}

async fn store(files: &AwsFiles, profile: &str, bucket: &str) -> S3Store {
    S3Store::connect(
        S3StateOptions {
            location: S3Location {
                bucket: bucket.into(),
                prefix: "deploy".into(),
            },
            region: Some("us-west-2".into()),
            aws_profile: Some(profile.into()),
            fallback_region: "us-west-2".into(),
        },
        &files.options(),
    )
    .await
}

/// A clock a test moves by hand (one per "machine").
#[derive(Debug)]
struct HandClock(Mutex<Timestamp>);

impl HandClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Timestamp::now())))
    }
    fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap();
        *t = t.checked_add(by).unwrap();
    }
}

impl Clock for HandClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_conformance() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let lock = store(&files, "laptop", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    if let Err(broken) = deploy_engine::conformance::lock::run_all(&lock, &lock, "s3").await {
        panic!("S3Lock: {broken}");
    }
    // The environment's promotion lock is its one object; other leases live beside it.
    let lease = lock.acquire(KEY, "alice", TTL).await.unwrap();
    let keys = list_keys(&moto.endpoint, BUCKET).await;
    assert!(
        keys.contains(&"deploy/prod/lock.json".to_owned()),
        "{keys:?}"
    );
    lock.release(&lease).await.unwrap();
    let keys = list_keys(&moto.endpoint, BUCKET).await;
    assert!(
        keys.iter().all(|k| k != "deploy/prod/lock.json"),
        "released: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_acquisitions_one_gets_lock_held() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let laptop = store(&files, "laptop", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    let ci = store(&files, "ci", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    // moto checks `If-None-Match` in Python before it stores the object, under a threaded
    // server, so two requests in the same instant can both pass its check (review N12: real
    // S3 is atomic, moto is not). A round where both win is moto's race, not ours; a client
    // that ignored the condition would make both win every round, which fails below.
    let mut decided = 0;
    for round in 0..8 {
        let (a, b) = tokio::join!(
            laptop.acquire(KEY, "alice@laptop", TTL),
            ci.acquire(KEY, "runner@ci", TTL)
        );
        let (won, lost, by) = match (&a, &b) {
            (Ok(l), Err(e)) => (l, e, &laptop),
            (Err(e), Ok(l)) => (l, e, &ci),
            (Ok(_), Ok(_)) => {
                delete_key(&moto.endpoint, BUCKET, "deploy/prod/lock.json").await;
                continue;
            }
            _ => panic!("round {round}: one must win: {a:?} {b:?}"),
        };
        assert!(
            matches!(lost, Error::LockHeld { holder, .. } if holder == &won.holder),
            "round {round}: the loser names the winner: {lost}"
        );
        by.release(won).await.unwrap();
        decided += 1;
    }
    assert!(
        decided >= 5,
        "exactly one of two concurrent acquisitions wins (moto raced in {} of 8 rounds)",
        8 - decided
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_is_taken_over_a_live_one_never() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let (laptop_clock, ci_clock) = (HandClock::new(), HandClock::new());
    let laptop = store(&files, "laptop", BUCKET)
        .await
        .lock("prod", KEY, laptop_clock.clone());
    let ci = store(&files, "ci", BUCKET)
        .await
        .lock("prod", KEY, ci_clock.clone());

    let crashed = laptop.acquire(KEY, "alice@laptop", TTL).await.unwrap();
    // Live: refused, however often it is tried, and the lease is unchanged.
    ci_clock.advance(TTL - Duration::from_secs(1));
    for _ in 0..3 {
        let got = ci.acquire(KEY, "runner@ci", TTL).await;
        assert!(
            matches!(&got, Err(Error::LockHeld { holder, .. }) if holder == "alice@laptop"),
            "{got:?}"
        );
    }
    laptop_clock.advance(TTL - Duration::from_secs(1));
    let renewed = laptop
        .renew(&crashed, TTL)
        .await
        .expect("the holder renews");
    // The renewal moved the expiry: what was nearly expired is live again.
    ci_clock.advance(Duration::from_secs(2));
    assert!(matches!(
        ci.acquire(KEY, "runner@ci", TTL).await,
        Err(Error::LockHeld { .. })
    ));

    // Expired: taken over. It must have expired by S3's clock too (the `Date` of its
    // answers), so the lease is rewritten as expired now rather than the clocks moved on.
    ci_clock.advance(TTL);
    store(&files, "laptop", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock))
        .expire(KEY)
        .await;
    let next = ci
        .acquire(KEY, "runner@ci", TTL)
        .await
        .expect("expired: taken over");
    assert_eq!(next.holder, "runner@ci");
    // The old holder has lost it: renewal says who has it now, release frees nothing.
    let got = laptop.renew(&renewed, TTL).await;
    assert!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder == "runner@ci"),
        "{got:?}"
    );
    laptop.release(&renewed).await.unwrap();
    assert!(
        matches!(
            laptop.acquire(KEY, "alice@laptop", TTL).await,
            Err(Error::LockHeld { .. })
        ),
        "releasing a lost lease leaves the new holder's"
    );
    ci.release(&next).await.unwrap();
    laptop
        .acquire(KEY, "alice@laptop", TTL)
        .await
        .expect("free again");
}

fn record(run: &str, at: Timestamp, outcome: Outcome, by: &str) -> AuditRecord {
    AuditRecord {
        run_id: run.into(),
        kind: RunKind::Promote,
        environment: "prod".into(),
        actor: Actor {
            os_user: by.into(),
            argocd_user: None,
        },
        release: Release {
            tag: Tag::new("abc1234").unwrap(),
            digests: Default::default(),
        },
        previous: Default::default(),
        changed: vec!["us-west-2".into()],
        skipped: vec![],
        started_at: at,
        finished_at: at.checked_add(Duration::from_secs(90)).unwrap(),
        outcome,
        message: String::new(),
        checks: vec![],
        apps: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_two_machines_read_back_the_same_in_order() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let laptop = store(&files, "laptop", BUCKET).await.audit_log("prod");
    let ci = store(&files, "ci", BUCKET).await.audit_log("prod");
    let t0: Timestamp = "2025-03-01T10:00:00Z".parse().unwrap();
    let min = |m: u64| t0.checked_add(Duration::from_secs(60 * m)).unwrap();
    // Two runs, one after the other, from two machines; each appends when it starts and ends.
    laptop
        .append(&record("r1", min(0), Outcome::Started, "alice"))
        .await
        .unwrap();
    laptop
        .append(&record("r1", min(0), Outcome::Succeeded, "alice"))
        .await
        .unwrap();
    ci.append(&record("r2", min(10), Outcome::Started, "ci"))
        .await
        .unwrap();
    ci.append(&record("r2", min(10), Outcome::RolledBack, "ci"))
        .await
        .unwrap();
    laptop
        .append(&record("r3", min(20), Outcome::Started, "alice"))
        .await
        .unwrap();

    let a = laptop.records().await.unwrap();
    let b = ci.records().await.unwrap();
    assert_eq!(a, b, "both machines read the same trail");
    let seen: Vec<(&str, Outcome)> = a.iter().map(|r| (r.run_id.as_str(), r.outcome)).collect();
    assert_eq!(
        seen,
        [
            ("r1", Outcome::Started),
            ("r1", Outcome::Succeeded),
            ("r2", Outcome::Started),
            ("r2", Outcome::RolledBack),
            ("r3", Outcome::Started),
        ]
    );
    // Each record is its own object, named by time, run and which record it is.
    let keys = list_keys(&moto.endpoint, BUCKET).await;
    assert!(
        keys.contains(&"deploy/prod/records/20250301T100000.000000000Z-r1-started.json".to_owned()),
        "{keys:?}"
    );
    // Appending is idempotent for the same record and never overwrites another.
    laptop
        .append(&record("r1", min(0), Outcome::Started, "alice"))
        .await
        .unwrap();
    let other = record("r1", min(0), Outcome::Started, "mallory");
    assert!(matches!(
        laptop.append(&other).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(laptop.records().await.unwrap(), a, "nothing was rewritten");
    // Another environment's trail is its own.
    let staging = store(&files, "ci", BUCKET).await.audit_log("staging");
    assert!(staging.records().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_says_what_to_do() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let s = store(&files, "laptop", "no-such-state-bucket").await;
    let lock = s.lock("prod", KEY, Arc::new(SystemClock));
    let err = lock.acquire(KEY, "alice", TTL).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NotFound { .. }), "{text}");
    for part in [
        "no-such-state-bucket",
        "profile laptop",
        "aws s3 mb",
        "state.s3",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    let err = s.audit_log("prod").records().await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

/// What `requests` (moto's log since a point) asked of the trail: (ListObjectsV2, GetObject
/// of a record).
fn bill(requests: &[String]) -> (usize, usize) {
    let lists = requests
        .iter()
        .filter(|r| r.starts_with(&format!("GET /{BUCKET}")) && r.contains("list-type=2"))
        .count();
    let gets = requests
        .iter()
        .filter(|r| r.starts_with(&format!("GET /{BUCKET}/deploy/prod/records/")))
        .count();
    (lists, gets)
}

/// 1,100 runs an hour apart (2,200 records, 46 days): the newest 10 cost one listing of the
/// last day and one GET each; 600 runs widen the listing to 30 days, which pages past 1,000
/// keys with start-after; a damaged record and a foreign object cost only themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_runs_are_found_by_listing_and_read_one_get_each() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let log = store(&files, "ci", BUCKET).await.audit_log("prod");
    let now = Timestamp::now();
    let hours_ago = |h: u64| now.checked_sub(Duration::from_secs(3600 * h)).unwrap();
    const RUNS: u64 = 1100;
    let records: Vec<AuditRecord> = (0..RUNS)
        .flat_map(|i| {
            let run = format!("run-{i:04}");
            let at = hours_ago(RUNS - i);
            [
                record(&run, at, Outcome::Started, "ci"),
                record(&run, at, Outcome::Succeeded, "ci"),
            ]
        })
        .collect();
    let written: Vec<_> = futures::stream::iter(&records)
        .map(|r| log.append(r))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(written.iter().all(Result::is_ok), "seeding the trail");

    let before = moto.requests().await.len();
    let got = deploy_engine::observe::trail::newest(&log, "prod", now, 10, |_| false)
        .await
        .unwrap();
    let requests = moto.requests().await;
    let runs: Vec<&str> = got.items.iter().map(|r| r.run_id.as_str()).collect();
    let expect: Vec<String> = (RUNS - 10..RUNS).map(|i| format!("run-{i:04}")).collect();
    assert_eq!(runs, expect, "the 10 newest, oldest first");
    assert!(
        got.items.iter().all(|r| r.outcome == Outcome::Succeeded),
        "their ends"
    );
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    assert_eq!(
        bill(&requests[before..]),
        (1, 10),
        "one listing of the last day, one GET per run: {:#?}",
        &requests[before..]
    );

    // 600 runs: a day, a week, then 30 days, whose ~1,100 keys are two pages.
    let before = requests.len();
    let got = deploy_engine::observe::trail::newest(&log, "prod", now, 600, |_| false)
        .await
        .unwrap();
    let requests = moto.requests().await;
    assert_eq!(got.items.len(), 600);
    assert_eq!(got.items[0].run_id, format!("run-{:04}", RUNS - 600));
    let (lists, gets) = bill(&requests[before..]);
    assert_eq!(gets, 600);
    assert_eq!(lists, 4, "a day, a week, and 30 days in two pages");
    let paged = requests[before..]
        .iter()
        .filter(|r| r.contains("continuation-token"))
        .count();
    assert_eq!(paged, 1, "the 30-day window continues past 1,000 keys");
    assert!(
        requests[before..].iter().any(|r| r.contains("start-after")),
        "windows start after their first key"
    );

    // The whole trail: every page, past 1,000 keys.
    assert_eq!(log.records().await.unwrap().len(), records.len());

    // A damaged record among the newest, and an object this tool did not write.
    let damaged = log.object_key(&records.last().unwrap().clone());
    for (key, body) in [
        (damaged.as_str(), "{not json"),
        ("deploy/prod/records/notes.txt", "hello"),
    ] {
        put_object(&moto.endpoint, BUCKET, key, body.into()).await;
    }
    let got = deploy_engine::observe::trail::newest(&log, "prod", now, 10, |_| false)
        .await
        .unwrap();
    assert_eq!(
        got.items.len(),
        9,
        "the damaged run is skipped, the others read"
    );
    // `notes.txt` sorts after every time, so the newest window lists it.
    assert_eq!(got.warnings.len(), 2, "{:?}", got.warnings);
    assert!(
        got.warnings[0].contains("notes.txt") && got.warnings[0].contains("not an audit record"),
        "{:?}",
        got.warnings
    );
    assert!(
        got.warnings[1].contains(&damaged) && got.warnings[1].contains("skipping"),
        "{:?}",
        got.warnings
    );
}

/// The system clock, off by a fixed amount (a machine whose NTP is broken).
#[derive(Debug)]
struct OffClock(jiff::SignedDuration);

impl Clock for OffClock {
    fn now(&self) -> Timestamp {
        Timestamp::now().checked_add(self.0).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_clock_is_fast_does_not_take_over_a_live_lease() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let laptop = store(&files, "laptop", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    let hour = jiff::SignedDuration::from_hours(1);
    let fast = store(&files, "ci", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(OffClock(hour)));
    let held = laptop.acquire(KEY, "alice@laptop", TTL).await.unwrap();
    // By its own clock the lease ran out 50 minutes ago; by S3's it has 10 minutes left.
    let got = fast.acquire(KEY, "runner@ci", TTL).await;
    let Err(Error::Refused { message }) = &got else {
        panic!("expected a refusal naming the clock, got {got:?}");
    };
    assert!(
        message.contains("clock is off by 3599 s") || message.contains("clock is off by 3600 s"),
        "{message}"
    );
    assert!(message.contains("alice@laptop"), "{message}");
    laptop
        .renew(&held, TTL)
        .await
        .expect("alice still holds it");
    // Once it has expired by S3's clock too, it is taken over, whatever the skew.
    laptop.expire(KEY).await;
    let next = fast.acquire(KEY, "runner@ci", TTL).await.expect("expired");
    assert_eq!(next.holder, "runner@ci");
    fast.release(&next).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lock_object_is_held_by_nobody_and_taken_again() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let lock = store(&files, "ci", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    let lease = lock.acquire(KEY, "runner@ci", TTL).await.unwrap();
    lock.delete(KEY).await;
    // The renewal's `If-Match` is answered 404 NoSuchKey: nobody holds it (not "invalid",
    // which a run would read as "the lock ran out" and roll back).
    let got = lock.renew(&lease, TTL).await;
    assert!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder.starts_with("nobody")),
        "{got:?}"
    );
    let again = lock.acquire(KEY, "runner@ci", TTL).await.unwrap();
    lock.renew(&again, TTL)
        .await
        .expect("renewed after re-taking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_removes_only_the_lock_it_names_and_a_live_one_only_with_force() {
    let Some(moto) = start() else { return };
    let files = setup(&moto).await;
    let ci = store(&files, "ci", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    let admin = store(&files, "laptop", BUCKET)
        .await
        .lock("prod", KEY, Arc::new(SystemClock));
    let holder = "runner@ci pid 7 boot 0123abcd pidns 1";
    let lease = ci.acquire(KEY, holder, TTL).await.unwrap();
    let id = lock_id(holder);
    let shown = admin.inspect(KEY).await.unwrap().expect("held");
    assert_eq!(shown.lease.holder, holder);
    assert_eq!(shown.id(), id);
    assert!(
        shown.acquired_at.is_some() && shown.renewed_at.is_some(),
        "{shown:?}"
    );

    // A wrong id: nothing removed.
    let got = unlock(&admin, KEY, "0badc0de", true, Timestamp::now()).await;
    assert!(
        matches!(got, Err(UnlockError::Refused(Refusal::OtherId { .. }))),
        "{got:?}"
    );
    // Live (renewed within its ttl): refused without --force.
    let got = unlock(&admin, KEY, &id, false, Timestamp::now()).await;
    assert!(
        matches!(got, Err(UnlockError::Refused(Refusal::Live { .. }))),
        "{got:?}"
    );
    ci.renew(&lease, TTL).await.expect("still ci's");
    // With --force: removed, and the old holder's next renewal finds nobody.
    let removed = unlock(&admin, KEY, &id, true, Timestamp::now())
        .await
        .expect("forced");
    assert_eq!(removed.lease.holder, holder);
    assert!(admin.inspect(KEY).await.unwrap().is_none());
    assert!(
        !list_keys(&moto.endpoint, BUCKET)
            .await
            .contains(&"deploy/prod/lock.json".to_owned())
    );

    // Expired: removed without --force.
    let lease = ci.acquire(KEY, holder, TTL).await.unwrap();
    admin.expire(KEY).await;
    unlock(&admin, KEY, &id, false, Timestamp::now())
        .await
        .expect("expired");
    // A lock rewritten between the read and the delete is kept (DeleteObject If-Match).
    let lease = ci.acquire(KEY, &lease.holder, TTL).await.unwrap();
    let shown = admin.inspect(KEY).await.unwrap().unwrap();
    ci.renew(&lease, TTL * 2).await.unwrap();
    assert!(
        !admin.remove(&shown).await.unwrap(),
        "removed a renewed lock"
    );
    assert!(admin.inspect(KEY).await.unwrap().is_some());
}
