//! Checks end to end (issue 12): `deploy promote` (the real binary, real backends) against
//! ECR on moto and the fake Argo CD of [`crate::e2e`], with prod's `5xx-ratio` check from
//! examples/deploy.toml asking a real Prometheus (Debian's package, started by
//! `deploy_metrics::prometheus_server` on a loopback port) that scrapes an exporter this test
//! runs.
//!
//! The exporter stands for myapp itself: every scrape, each cluster has served 1,000 more
//! requests, 1 of them a 500 — or 500 of them where the test made the new release faulty
//! and the cluster runs it (what its Argo CD Application's live images say, mirrored into the
//! exporter every 100 ms while `deploy` runs). So the error ratio rises where, and when, the
//! release reaches a faulty cluster, and falls again when it is rolled back.
//!
//! Timings: Prometheus scrapes every second, the check measures every second over a 5 s
//! rate window; a test takes 10 to 30 s. Where Prometheus is not installed the tests skip,
//! except under `CI=true`, where they fail (as deploy-metrics' own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_metrics::prometheus_server::{Exporter, PrometheusServer};
use serde_json::Value;

use crate::e2e::{
    CLUSTERS, NEW, OLD, PROMOTE, Replication, WAVE1_APP, World, events_of, json_args,
};
use crate::support::{Run, example_config};

/// Where the example's check section begins in examples/deploy.toml.
const CHECKS_MARKER: &str = "\n# Evaluated per cluster during each wave's soak";
/// The check's name in the example.
const CHECK: &str = "5xx-ratio";
/// Requests each cluster serves between two scrapes.
const PER_SCRAPE: u64 = 1000;
/// 5xx among them on a healthy release (a ratio of 0.001: passes `result < 0.01`).
const GOOD_ERRORS: u64 = 1;
/// 5xx among them on a faulty one (0.5: fails `result >= 0.05` from the first scrape in
/// the rate window, so there is no inconclusive ratio in between).
const BAD_ERRORS: u64 = 500;

/// What myapp's clusters have served so far, and which of them run a faulty release.
#[derive(Debug, Default)]
struct Traffic {
    /// Cluster → (2xx, 5xx) counters.
    served: BTreeMap<String, (u64, u64)>,
    /// Clusters on which the new release fails, running it now.
    failing: BTreeSet<String>,
}

impl Traffic {
    /// One scrape: every cluster serves [`PER_SCRAPE`] more requests; the page is the
    /// counters in Prometheus' text format.
    fn scrape(&mut self) -> String {
        let mut page = String::from("# TYPE http_requests_total counter\n");
        for cluster in CLUSTERS {
            let errors = if self.failing.contains(cluster) {
                BAD_ERRORS
            } else {
                GOOD_ERRORS
            };
            let (ok, err) = self.served.entry(cluster.to_owned()).or_default();
            *ok += PER_SCRAPE - errors;
            *err += errors;
            page.push_str(&format!(
                "http_requests_total{{cluster=\"{cluster}\",code=\"200\"}} {ok}\n\
                 http_requests_total{{cluster=\"{cluster}\",code=\"500\"}} {err}\n"
            ));
        }
        page
    }
}

/// The e2e world, a Prometheus scraping myapp's exporter, and prod's check pointed at it.
struct Checked {
    world: World,
    prometheus: PrometheusServer,
    _exporter: Exporter,
    traffic: Arc<Mutex<Traffic>>,
    /// Clusters where the new release misbehaves.
    faulty: BTreeSet<String>,
}

/// The example's check, pointed at `url`, measuring every second over a 5 s window (the
/// example's 2 m window would take minutes to move), with `edits` (`from`, `to`) applied and
/// `extra` lines added.
fn check_section(url: &str, edits: &[(&str, &str)], extra: &str) -> String {
    let example = std::fs::read_to_string(example_config()).expect("examples/deploy.toml");
    let at = example
        .find(CHECKS_MARKER)
        .expect("examples/deploy.toml has prod's checks");
    let mut text = example[at..].to_owned();
    let url_line = format!(r#"prometheus = {{ url = "{url}" }}"#);
    let base = [
        (
            r#"prometheus = { url = "http://prometheus.monitoring:9090" }"#,
            url_line.as_str(),
        ),
        ("[2m]", "[5s]"),
        (r#"interval = "30s""#, r#"interval = "1s""#),
    ];
    for (from, to) in base.iter().chain(edits) {
        assert!(
            text.contains(from),
            "the example's check no longer has {from}: {text}"
        );
        text = text.replace(from, to);
    }
    text.push_str(extra);
    text
}

impl Checked {
    /// Starts everything, with prod's soak `soak` and its check as [`check_section`] gives;
    /// the new release misbehaves on `faulty`. `None` where moto or Prometheus is missing
    /// (outside CI).
    // The skip is said where cargo shows it, as the moto tests do.
    #[allow(clippy::print_stderr)]
    async fn start(
        soak: &str,
        edits: &[(&str, &str)],
        extra: &str,
        faulty: &[&str],
    ) -> Option<Self> {
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let scraped = traffic.clone();
        let exporter = Exporter::start(move |_| scraped.lock().expect("traffic").scrape()).await;
        let prometheus = match PrometheusServer::start(&[&exporter.target()]).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("skipping: {e}");
                return None;
            }
        };
        let world = World::start(Replication::Complete).await?;
        world.set_prod_timings(soak, "60s");
        let mut config = std::fs::read_to_string(&world.config).expect("read deploy.toml");
        assert!(
            !config.contains("[[environments.prod.checks]]"),
            "the e2e world has no check of its own"
        );
        config.push_str(&check_section(&prometheus.url, edits, extra));
        std::fs::write(&world.config, config).expect("write deploy.toml");
        // Every cluster's rate has two samples in its window before the first measurement.
        prometheus
            .wait_for("sum by (cluster) (rate(http_requests_total[5s]))", |v| {
                v.len() == CLUSTERS.len()
            })
            .await;
        Some(Self {
            world,
            prometheus,
            _exporter: exporter,
            traffic,
            faulty: faulty.iter().map(|c| (*c).to_owned()).collect(),
        })
    }

    /// Runs `deploy ARGS` to its end while the exporter follows what each cluster runs.
    async fn run(&self, args: &[&str]) -> Run {
        let running = self.world.spawn(args);
        let mirror = async {
            loop {
                self.mirror();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            run = running.wait() => run,
            () = mirror => unreachable!("the mirror loops until the run ends"),
        }
    }

    /// Marks failing the faulty clusters whose Application's live images are the release.
    fn mirror(&self) {
        let failing = self
            .faulty
            .iter()
            .filter(|cluster| runs(&self.world.prod_app(cluster), NEW))
            .cloned()
            .collect();
        self.traffic.lock().expect("traffic").failing = failing;
    }
}

/// Whether every live image of `app` is at `tag`.
fn runs(app: &Value, tag: &str) -> bool {
    app["status"]["summary"]["images"]
        .as_array()
        .is_some_and(|images| {
            !images.is_empty()
                && images
                    .iter()
                    .all(|i| i.as_str().is_some_and(|i| i.ends_with(&format!(":{tag}"))))
        })
}

/// The `check_measured` events of `run` for `cluster`.
fn measured(run: &Run, cluster: &str) -> Vec<Value> {
    events_of(run)
        .into_iter()
        .filter(|e| e["event"] == "check_measured" && e["cluster"] == cluster)
        .collect()
}

/// The last audit record (the run's end) and its measurements of `cluster`.
fn audited(world: &World, cluster: &str) -> (Value, Vec<Value>) {
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "two records per run: {audit:#?}");
    let end = audit[1].clone();
    let of_cluster = end["checks"]
        .as_array()
        .expect("the record keeps the measurements")
        .iter()
        .filter(|m| m["cluster"] == cluster)
        .cloned()
        .collect();
    (end, of_cluster)
}

fn value(m: &Value) -> f64 {
    let values = m["values"].as_array().expect("values");
    assert_eq!(values.len(), 1, "one series per cluster: {m}");
    values[0].as_f64().expect("a number")
}

/// The halt's reason.
fn halted(run: &Run) -> String {
    events_of(run)
        .iter()
        .find(|e| e["event"] == "halted")
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_else(|| panic!("the run halted: {}", run.stdout))
        .to_owned()
}

/// How many syncs each prod Application received.
async fn syncs(world: &World) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for cluster in CLUSTERS {
        counts.insert(cluster, world.syncs(&format!("myapp-prod-{cluster}")).await);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_error_ratio_stays_low_passes_every_check() {
    let Some(c) = Checked::start("2s", &[], "", &[]).await else {
        return;
    };
    let run = c.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);
    assert_eq!(run.result()["outcome"], "succeeded", "{}", run.stdout);
    c.world.assert_prod_runs(NEW);

    let (end, _) = audited(&c.world, "us-west-2");
    assert_eq!(end["outcome"], "succeeded");
    for cluster in CLUSTERS {
        // Each cluster was measured in its own wave, the resolved query naming it, with the
        // ratio Prometheus computed from the exporter's counters (1 in 1,000).
        let (_, ms) = audited(&c.world, cluster);
        assert!(!ms.is_empty(), "{cluster} was measured: {end:#}");
        for m in &ms {
            assert_eq!(m["check"], CHECK);
            assert!(
                m["query"].as_str().is_some_and(
                    |q| q.contains(&format!(r#"cluster="{cluster}""#)) && q.contains("[5s]")
                ),
                "{m}"
            );
            assert_eq!(m["phase"], "successful", "{m}");
            let v = value(m);
            assert!((v - 0.001).abs() < 1e-9, "{cluster}: ratio {v}");
        }
        assert_eq!(ms.last().expect("one")["verdict"], "passed", "{ms:#?}");
        let wave = if cluster == "us-west-2" { 1 } else { 2 };
        assert!(ms.iter().all(|m| m["wave"] == wave), "{ms:#?}");
        // The events say the same.
        let events = measured(&run, cluster);
        assert_eq!(events.len(), ms.len(), "{events:#?}");
        assert_eq!(events.last().expect("one")["verdict"], "passed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_that_rises_in_wave_two_halts_and_rolls_back_both_waves() {
    // The check first measures 3 s after the wave is Healthy: by then Prometheus has
    // scraped the failing release at least twice.
    let Some(c) = Checked::start("5s", &[], "initial_delay = \"3s\"\n", &["us-east-1"]).await
    else {
        return;
    };
    let run = c.run(&json_args(&PROMOTE)).await;
    run.expect_code(1);
    let result = run.result();
    assert_eq!(result["outcome"], "rolled_back", "{result:#}");

    // Both waves were deployed and returned, as Argo CD shows.
    c.world.assert_prod_runs(OLD);
    assert_eq!(
        syncs(&c.world).await,
        BTreeMap::from([("eu-west-1", 2), ("us-east-1", 2), ("us-west-2", 2)]),
        "each Application: one sync to the release, one back"
    );
    assert_eq!(c.world.syncs(WAVE1_APP).await, 2);
    for cluster in CLUSTERS {
        let history = c.world.prod_app(cluster)["status"]["history"]
            .as_array()
            .expect("history")
            .len();
        assert!(history >= 3, "{cluster} went to the release and back");
    }

    // Wave 1 passed its check; us-east-1 failed with the ratio Prometheus computed.
    let (_, west) = audited(&c.world, "us-west-2");
    assert!(
        west.iter()
            .all(|m| m["phase"] == "successful" && m["wave"] == 1),
        "{west:#?}"
    );
    assert_eq!(west.last().expect("one")["verdict"], "passed");
    let (end, east) = audited(&c.world, "us-east-1");
    assert_eq!(end["outcome"], "rolled_back");
    let last = east.last().expect("us-east-1 was measured");
    assert_eq!(
        (
            &last["check"],
            &last["phase"],
            &last["verdict"],
            &last["wave"]
        ),
        (
            &Value::from(CHECK),
            &Value::from("failed"),
            &Value::from("failed"),
            &Value::from(2)
        ),
        "{east:#?}"
    );
    let ratio = value(last);
    assert!(
        (0.05..=0.5).contains(&ratio),
        "the failing ratio, measured: {ratio}"
    );
    // The halt names the check, the cluster and the value.
    let reason = halted(&run);
    for part in [
        "us-east-1",
        &format!("check {CHECK} failed"),
        &ratio.to_string(),
    ] {
        assert!(reason.contains(part), "{part:?} not in {reason:?}");
    }
    assert!(
        !events_of(&run)
            .iter()
            .any(|e| e["event"] == "soak_finished" && e["wave"] == 2),
        "wave 2's soak did not pass"
    );
    assert_eq!(measured(&run, "us-east-1").last(), Some(&strip_at(last)));
}

/// A recorded measurement as its event carries it (without the record's own fields).
fn strip_at(m: &Value) -> Value {
    let mut event = m.clone();
    let obj = event.as_object_mut().expect("an object");
    for field in ["at", "wave", "query"] {
        obj.remove(field);
    }
    obj.insert("event".into(), "check_measured".into());
    event
}

/// A promotion with a query that matches nothing, under `no_data = "{no_data}"`.
async fn no_data(no_data: &str) -> Option<(Checked, Run)> {
    let edits = [
        // Every selector (the example's `or vector(0)` would answer 0 for an empty numerator).
        (
            r#"cluster="{cluster}""#,
            r#"cluster="{cluster}",path="/nowhere""#,
        ),
        (r#"no_data = "fail""#, ""),
    ];
    let extra = format!("no_data = \"{no_data}\"\n");
    let c = Checked::start("2s", &edits, &extra, &[]).await?;
    let run = c.run(&json_args(&PROMOTE)).await;
    Some((c, run))
}

/// Asserts us-west-2's first measurement found no data and was judged `phase`.
#[track_caller]
fn assert_no_data(c: &Checked, run: &Run, phase: &str) {
    let (_, west) = audited(&c.world, "us-west-2");
    let first = west.first().expect("us-west-2 was measured");
    assert_eq!(first["values"], Value::Array(Vec::new()), "{first}");
    assert_eq!(first["error"], "no data", "{first}");
    assert_eq!(first["phase"], phase, "{first}");
    assert_eq!(measured(run, "us-west-2")[0]["phase"], phase);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_fail_rolls_back_the_first_wave() {
    let Some((c, run)) = no_data("fail").await else {
        return;
    };
    run.expect_code(1);
    assert_eq!(run.result()["outcome"], "rolled_back", "{}", run.stdout);
    assert_no_data(&c, &run, "failed");
    let reason = halted(&run);
    assert!(
        reason.contains("us-west-2") && reason.contains("no data"),
        "{reason}"
    );
    // Wave 1 went and came back; wave 2 was never touched.
    assert_eq!(
        syncs(&c.world).await,
        BTreeMap::from([("eu-west-1", 0), ("us-east-1", 0), ("us-west-2", 2)])
    );
    c.world.assert_prod_runs(OLD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_inconclusive_halts_without_rollback_with_exit_5() {
    let Some((c, run)) = no_data("inconclusive").await else {
        return;
    };
    run.expect_code(5);
    assert_eq!(run.result()["outcome"], "inconclusive", "{}", run.stdout);
    assert_no_data(&c, &run, "inconclusive");
    // Wave 1 stays on the release for a person to decide; wave 2 was not started.
    assert_eq!(
        syncs(&c.world).await,
        BTreeMap::from([("eu-west-1", 0), ("us-east-1", 0), ("us-west-2", 1)])
    );
    assert!(runs(&c.world.prod_app("us-west-2"), NEW));
    assert!(runs(&c.world.prod_app("us-east-1"), OLD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_pass_passes() {
    let Some((c, run)) = no_data("pass").await else {
        return;
    };
    run.expect_code(0);
    assert_no_data(&c, &run, "successful");
    c.world.assert_prod_runs(NEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_that_stops_answering_is_an_error_counted_never_a_pass() {
    // Wave 1's soak lasts 20 s; 2 errors in a row are tolerated, the third fails the check.
    let Some(mut c) = Checked::start("20s", &[], "consecutive_error_limit = 2\n", &[]).await else {
        return;
    };
    let running = c.world.spawn(&json_args(&PROMOTE));
    running
        .wait_for_event("the first measurement", |e| {
            e["event"] == "check_measured" && e["phase"] == "successful"
        })
        .await;
    c.prometheus.stop();
    let run = running.wait().await;
    run.expect_code(1);
    assert_eq!(run.result()["outcome"], "rolled_back", "{}", run.stdout);

    let events = measured(&run, "us-west-2");
    let phases: Vec<&str> = events
        .iter()
        .map(|e| e["phase"].as_str().expect("phase"))
        .collect();
    let errors = phases.iter().rev().take_while(|p| **p == "error").count();
    assert_eq!(
        errors, 3,
        "the limit plus one, in a row, then it fails: {phases:?}"
    );
    assert!(
        phases.iter().filter(|p| **p == "error").count() == 3
            && phases[..phases.len() - 3]
                .iter()
                .all(|p| *p == "successful"),
        "{phases:?}"
    );
    for e in &events[events.len() - 3..] {
        assert_eq!(e["values"], Value::Array(Vec::new()), "{e}");
        assert!(
            e["error"]
                .as_str()
                .is_some_and(|m| m.contains(&c.prometheus.url)),
            "the error names the source: {e}"
        );
    }
    assert_eq!(events.last().expect("one")["verdict"], "failed");
    assert_eq!(events[events.len() - 2]["verdict"], "running");
    let reason = halted(&run);
    assert!(
        reason.contains("us-west-2")
            && reason.contains(&format!("check {CHECK} failed"))
            && reason.contains("3 error(s) in a row"),
        "{reason}"
    );
    assert!(
        !events_of(&run)
            .iter()
            .any(|e| e["event"] == "soak_finished"),
        "no soak passed"
    );
    let (end, west) = audited(&c.world, "us-west-2");
    assert_eq!(end["outcome"], "rolled_back");
    assert_eq!(west.len(), events.len(), "every measurement is recorded");
    assert_eq!(
        syncs(&c.world).await,
        BTreeMap::from([("eu-west-1", 0), ("us-east-1", 0), ("us-west-2", 2)])
    );
    c.world.assert_prod_runs(OLD);
}
