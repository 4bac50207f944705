//! `deploy watch` end to end: the real binary WITHOUT `--sandbox`, in the
//! world of [`crate::e2e`] (ECR on moto, the stateful fake Argo CD over plain HTTP, the
//! example configuration).
//!
//! Staging's three Applications are automated and run [`NEW`]; CI then pushes [`NEXT`] to
//! staging, sentinel (logserver) included, but one image late. What the watcher wrote is read
//! from the requests the fake received: an image-override write is a merge PATCH of the
//! Application's spec, unlike the annotation writes (merge PATCH of its metadata) and the
//! lease writes (JSON patch of `deploy/lock`).
//!
//! The binary runs on the wall clock, so a test that watches a running `deploy watch` polls
//! what it can observe (its JSON lines, the fake's state) with a deadline ([`wait_until`]).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_argocd::rest::lock::LOCK_ANNOTATION;
use deploy_aws::moto::{AwsFiles, sha256};
use deploy_core::model::annotation;
use deploy_engine::conformance::registry::RegistryFixture;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

use crate::e2e::{
    CLUSTERS, NEW, OLD, Replication, Running, STAGING, World, build, image, json_args, repo, tag,
    tag_parameter, wait_until,
};
use crate::support::Run;

/// The release CI pushes while the watcher runs. It sorts above [`NEW`]: moto keeps push
/// times to the second and ties go to the highest tag, so it is the newest candidate even
/// when pushed in the same second as [`NEW`].
const NEXT: &str = "c0ffee1";
/// `deploy --output json watch --env staging`, polling five times a second.
const WATCH: [&str; 7] = [
    "--output",
    "json",
    "watch",
    "--env",
    "staging",
    "--interval",
    "200ms",
];
/// How long a watcher may take to exit after SIGTERM.
const PROMPTLY: Duration = Duration::from_secs(10);

fn staging_app(cluster: &str) -> String {
    format!("myapp-staging-{cluster}")
}

/// One image-override write to each staging Application, and none anywhere else.
fn once_each() -> BTreeMap<String, usize> {
    CLUSTERS.iter().map(|c| (staging_app(c), 1)).collect()
}

impl World {
    /// CI pushes `services` of [`NEXT`] to staging, in this order.
    async fn push_next(&self, services: &[&str]) {
        for service in services {
            let at = repo(STAGING, "us-west-2", service);
            self.ecr.push(&at, &tag(NEXT), &build(service, NEXT)).await;
        }
    }

    /// The PATCH requests the fake received, by Application, with their bodies.
    async fn patches(&self) -> Vec<(String, Value)> {
        self.requests()
            .await
            .iter()
            .filter(|r| r.method.as_str() == "PATCH")
            .filter_map(|r| {
                let name = r.url.path().strip_prefix("/api/v1/applications/")?;
                let body = serde_json::from_slice(&r.body).expect("a PATCH body is JSON");
                Some((name.to_owned(), body))
            })
            .collect()
    }

    /// Image-override writes per Application: merge PATCHes that change its spec.
    async fn override_writes(&self) -> BTreeMap<String, usize> {
        let mut writes = BTreeMap::new();
        for (name, body) in self.patches().await {
            let patch: Value = body["patch"]
                .as_str()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            // A merge patch of the spec, or a guarded JSON patch of a field under it.
            let json_spec = patch.as_array().is_some_and(|ops| {
                ops.iter().any(|op| {
                    op["op"] != "test"
                        && op["path"].as_str().is_some_and(|p| p.starts_with("/spec"))
                })
            });
            if (body["patchType"] == "merge" && patch.get("spec").is_some())
                || (body["patchType"] == "json" && json_spec)
            {
                *writes.entry(name).or_default() += 1;
            }
        }
        writes
    }

    /// Whether every staging Application names `release` in its watched-release annotation.
    fn all_watched(&self, release: &str) -> bool {
        CLUSTERS.iter().all(|c| {
            self.argo.object(&staging_app(c))["metadata"]["annotations"][annotation::WATCHED]
                == release
        })
    }

    /// Asserts every staging Application asks for `release`.
    #[track_caller]
    fn assert_staging_set_to(&self, release: &str) {
        for cluster in CLUSTERS {
            let app = self.argo.object(&staging_app(cluster));
            assert_eq!(tag_parameter(&app), release, "{}", staging_app(cluster));
        }
    }
}

/// The JSON records `running` has printed so far (whole lines only).
fn records(running: &Running) -> Vec<Value> {
    let text = std::fs::read_to_string(&running.stdout).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).expect("a stdout line is JSON"))
        .collect()
}

/// The `data` of the records of type `kind`.
fn of_type(records: &[Value], kind: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["type"] == kind)
        .map(|r| r["data"].clone())
        .collect()
}

/// Sends SIGTERM to a watcher and checks it stops promptly, exit 0, with a last line
/// `{"stopped":true,"polls":N}` counting its `poll` lines.
async fn stop(running: Running) -> Run {
    let status = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let asked = Instant::now();
    let run = running.wait().await;
    let took = asked.elapsed();
    run.expect_code(0);
    assert!(took < PROMPTLY, "it took {took:?} to stop");
    let lines = run.lines();
    let polls = of_type(&lines, "poll").len();
    assert_eq!(
        run.result(),
        json!({ "stopped": true, "polls": polls }),
        "{}",
        run.stdout
    );
    run
}

/// Starts `deploy watch --env staging` (every 200 ms, plus `extra`) with all of [`NEXT`] but
/// worker pushed, waits until it has found NEXT incomplete (and written no override), then
/// pushes worker and waits until NEXT is recorded on every staging Application.
async fn watch_next_arrive(world: &World, extra: &[&str]) -> Running {
    world.push_next(&["api", "logserver"]).await;
    let mut args = WATCH.to_vec();
    args.extend_from_slice(extra);
    let running = world.spawn(&args);
    wait_until("a poll that finds NEXT incomplete", || {
        let seen = of_type(&records(&running), "poll")
            .iter()
            .any(|p| p["incomplete"][0]["tag"] == NEXT);
        async move { seen }
    })
    .await;
    assert_eq!(world.override_writes().await, BTreeMap::new());
    world.push_next(&["worker"]).await;
    wait_until("NEXT recorded on every staging Application", || async {
        world.all_watched(NEXT)
    })
    .await;
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_release_is_written_once_complete_and_never_again() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let once = json_args(&["watch", "--env", "staging", "--once"]);
    // The sentinel is there, worker is not.
    world.push_next(&["api", "logserver"]).await;
    let run = world.run(&once).await;
    run.expect_code(0);
    let poll = run.result();
    assert_eq!(poll["newest"], NEXT, "{poll:#}");
    let incomplete = poll["incomplete"].as_array().expect("incomplete");
    assert_eq!(incomplete.len(), 1, "{poll:#}");
    assert_eq!(incomplete[0]["tag"], NEXT);
    assert_eq!(
        incomplete[0]["missing"],
        json!([{ "service": "worker", "region": "us-west-2", "kind": "image",
                 "image": image(STAGING, "us-west-2", "staging/", "worker") }])
    );
    // The newest complete release is the one staging already runs: nothing to change.
    assert_eq!(poll["release"]["tag"], NEW, "{poll:#}");
    assert_eq!(poll["written"], json!([]), "{poll:#}");
    assert_eq!(world.override_writes().await, BTreeMap::new());
    world.assert_staging_set_to(NEW);

    // CI pushes the last image: the next run writes NEXT, once per Application.
    world.push_next(&["worker"]).await;
    let run = world.run(&once).await;
    run.expect_code(0);
    let poll = run.result();
    assert_eq!(poll["release"]["tag"], NEXT, "{poll:#}");
    assert_eq!(poll["incomplete"], json!([]), "{poll:#}");
    let mut written: Vec<String> = serde_json::from_value(poll["written"].clone()).unwrap();
    written.sort();
    let mut all: Vec<String> = CLUSTERS.iter().map(|c| staging_app(c)).collect();
    all.sort();
    assert_eq!(written, all, "{poll:#}");
    assert_eq!(world.override_writes().await, once_each());
    world.assert_staging_set_to(NEXT);
    assert!(world.all_watched(NEXT));

    // Someone pins us-east-1 back by hand; a restarted watcher remembers, from the
    // annotations, that NEXT was handled, and writes nothing at all.
    world.argo.edit(&staging_app("us-east-1"), |app| {
        for p in app["spec"]["source"]["helm"]["parameters"]
            .as_array_mut()
            .expect("helm parameters")
        {
            if p["name"] == "image.tag" {
                p["value"] = json!(NEW);
            }
        }
    });
    let patches = world.patches().await.len();
    let run = world.run(&once).await;
    run.expect_code(0);
    let poll = run.result();
    assert_eq!(poll["newest"], NEXT, "{poll:#}");
    assert_eq!(poll["release"], Value::Null, "{poll:#}");
    assert_eq!(poll["written"], json!([]), "{poll:#}");
    assert_eq!(world.patches().await.len(), patches, "no write at all");
    assert_eq!(
        tag_parameter(&world.argo.object(&staging_app("us-east-1"))),
        NEW,
        "the pin is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_watcher_writes_the_release_once_then_stops_on_sigterm() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let running = watch_next_arrive(&world, &[]).await;
    assert_eq!(world.override_writes().await, once_each());
    world.assert_staging_set_to(NEXT);

    // Several more polls change nothing.
    let patches = world.patches().await.len();
    let seen = of_type(&records(&running), "poll").len();
    wait_until("five more polls", || {
        let polls = of_type(&records(&running), "poll").len();
        async move { polls >= seen + 5 }
    })
    .await;
    assert_eq!(world.patches().await.len(), patches, "no write after NEXT");
    assert_eq!(world.override_writes().await, once_each());

    let run = stop(running).await;
    let polls = of_type(&run.lines(), "poll");
    let writing: Vec<&Value> = polls.iter().filter(|p| p["written"] != json!([])).collect();
    assert_eq!(writing.len(), 1, "one poll wrote: {polls:#?}");
    assert_eq!(writing[0]["release"]["tag"], NEXT);
    assert_eq!(writing[0]["written"].as_array().map(Vec::len), Some(3));
    assert!(polls.len() >= seen + 5, "{} polls reported", polls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_environment_is_never_written() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.forbid_writes().await;
    let run = world
        .run(&json_args(&["watch", "--env", "prod", "--once"]))
        .await;
    run.expect_code(0);
    let poll = run.result();
    assert_eq!(poll["newest"], NEW, "{poll:#}");
    assert_eq!(poll["release"]["tag"], NEW, "{poll:#}");
    assert_eq!(poll["incomplete"], json!([]), "{poll:#}");
    assert_eq!(poll["written"], json!([]), "{poll:#}");
    // For people: what to do with it.
    let run = world.run(&["watch", "--env", "prod", "--once"]).await;
    run.expect_code(0);
    for said in [
        "prod is manual".to_owned(),
        format!("`deploy promote --env prod --tag {NEW}`"),
    ] {
        assert!(run.stderr.contains(&said), "{said} in\n{}", run.stderr);
    }
    let writes: Vec<String> = world
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "writes reached Argo CD");
    world.argo.server.verify().await;
    for cluster in CLUSTERS {
        let app = world.argo.object(&format!("myapp-prod-{cluster}"));
        assert_eq!(tag_parameter(&app), OLD, "{cluster}");
    }
}

/// The `leadership` records of a replica so far.
fn leadership(running: &Running) -> Vec<Value> {
    of_type(&records(running), "leadership")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_and_the_other_takes_over_on_sigterm() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.push_next(&["api", "worker", "logserver"]).await;
    let replica = |id: &'static str| {
        let mut args = WATCH.to_vec();
        args.extend(["--leader-elect", "--leader-id", id]);
        (id, world.spawn(&args))
    };
    let replicas = [replica("replica-a"), replica("replica-b")];
    wait_until("both replicas to report their leadership", || {
        let both = replicas.iter().all(|(_, r)| !leadership(r).is_empty());
        async move { both }
    })
    .await;
    let [(id_a, a), (id_b, b)] = replicas;
    let a_leads = leadership(&a)[0]["leading"] == true;
    let ((leader_id, leader), (standby_id, standby)) = if a_leads {
        ((id_a, a), (id_b, b))
    } else {
        ((id_b, b), (id_a, a))
    };
    assert_eq!(
        leadership(&leader)[0],
        json!({ "leading": true, "holder": null })
    );
    assert_eq!(
        leadership(&standby)[0],
        json!({ "leading": false, "holder": leader_id }),
        "{standby_id} stands by for {leader_id}"
    );
    let lock = world.argo.object(&staging_app("eu-west-1"))["metadata"]["annotations"]
        [LOCK_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        lock.contains(leader_id) && lock.contains("deploy-watch-myapp-staging"),
        "{lock}"
    );

    wait_until("NEXT recorded on every staging Application", || async {
        world.all_watched(NEXT)
    })
    .await;
    assert_eq!(world.override_writes().await, once_each());
    assert_eq!(of_type(&records(&standby), "poll"), Vec::<Value>::new());

    // The leader stops and gives the lease up; the standby takes it at its next try.
    stop(leader).await;
    let lock =
        &world.argo.object(&staging_app("eu-west-1"))["metadata"]["annotations"][LOCK_ANNOTATION];
    assert!(
        !lock.as_str().unwrap_or_default().contains(leader_id),
        "the leader released its lease: {lock}"
    );
    let stopped = Instant::now();
    wait_until("the standby to take over", || {
        let leads = leadership(&standby).iter().any(|l| l["leading"] == true);
        async move { leads }
    })
    .await;
    // A standby tries every 10 s (a third of the lease's 30 s) and an acquire settles for
    // 2 s; a lease left behind would only expire about 30 s after the leader last renewed it.
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(20), "took over after {took:?}");
    wait_until("the new leader's first poll", || {
        let polled = !of_type(&records(&standby), "poll").is_empty();
        async move { polled }
    })
    .await;
    let first = &of_type(&records(&standby), "poll")[0];
    assert_eq!(first["newest"], NEXT, "{first:#}");
    assert_eq!(first["release"], Value::Null, "NEXT was handled: {first:#}");
    assert_eq!(world.override_writes().await, once_each());
    stop(standby).await;
}

/// The samples of the OpenMetrics page at `url`: `name{labels}` → value.
async fn samples(url: &str) -> BTreeMap<String, f64> {
    let page = reqwest::get(url).await.expect("GET /metrics");
    assert_eq!(page.status(), 200);
    let text = page.text().await.expect("the metrics page");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_polls_releases_and_writes() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let running = watch_next_arrive(&world, &["--metrics-addr", "127.0.0.1:0"]).await;
    let listening = of_type(&records(&running), "listening");
    let url = listening[0]["metrics"]
        .as_str()
        .expect("the metrics address")
        .to_owned();
    let sample = |name: &str| format!("deploy_watch_{name}{{environment=\"staging\"}}");
    // The counters move once the binary has read the last answer of the writing poll.
    wait_until("the writes counted", || {
        let (url, written) = (url.clone(), sample("updates_written_total"));
        async move { samples(&url).await.get(&written) == Some(&3.0) }
    })
    .await;
    let metrics = samples(&url).await;
    let get = |name: &str| metrics.get(&sample(name)).copied().unwrap_or(-1.0);
    assert!(get("polls_total") >= 2.0, "{metrics:#?}");
    // NEW (already running) at the first poll, then NEXT.
    assert_eq!(get("releases_detected_total"), 2.0, "{metrics:#?}");
    assert!(get("incomplete_checks_total") >= 1.0, "{metrics:#?}");
    assert_eq!(get("leader"), 1.0, "{metrics:#?}");
    assert!(get("last_success_timestamp_seconds") > 0.0, "{metrics:#?}");

    let health = reqwest::get(url.replace("/metrics", "/healthz"))
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok\n");
    stop(running).await;
}

/// A mock of ECR's DescribeImages (awsJson 1.1: `POST /` with its `X-Amz-Target`).
fn describe_images() -> MockBuilder {
    Mock::given(method("POST")).and(path("/")).and(header(
        "x-amz-target",
        "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
    ))
}

fn aws_json(status: u16, body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/x-amz-json-1.1")
}

/// Staging's registry holding exactly [`NEXT`], complete: answers a tag lookup of any
/// service and the sentinel's listing.
struct NextOnly;

impl Respond for NextOnly {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON request");
        let repository = body["repositoryName"].as_str().unwrap_or_default();
        let service = repository.strip_prefix("staging/").unwrap_or_default();
        let asked = body["imageIds"][0]["imageTag"].as_str();
        let listing = asked.is_none() && service == "logserver";
        if asked != Some(NEXT) && !listing {
            return aws_json(
                400,
                &json!({ "__type": "ImageNotFoundException", "message": "no such image" }),
            );
        }
        aws_json(
            200,
            &json!({ "imageDetails": [{
                "registryId": STAGING,
                "repositoryName": repository,
                "imageDigest": sha256(&build(service, NEXT)).as_str(),
                "imageTags": [NEXT],
                "imageSizeInBytes": 1234,
                "imagePushedAt": 1_780_000_000.5,
                "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
            }] }),
        )
    }
}

/// moto cannot throttle, so staging's registry is a wiremock server here. It first answers
/// twice with HTTP 429 without an AWS error code (as a proxy in front of ECR does), which the
/// SDK does not retry, so each fails a poll at once; then once with a `ThrottlingException`,
/// which the SDK retries by itself (a persistent one would take five attempts with backoffs of
/// up to 1, 2, 4 and 8 s before reaching the loop); then it serves [`NEXT`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_recovers() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let ecr = MockServer::start().await;
    describe_images()
        .respond_with(aws_json(429, &json!({ "message": "Too Many Requests" })))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&ecr)
        .await;
    describe_images()
        .respond_with(aws_json(
            400,
            &json!({ "__type": "ThrottlingException", "message": "Rate exceeded" }),
        ))
        .up_to_n_times(1)
        .with_priority(2)
        .expect(1)
        .mount(&ecr)
        .await;
    describe_images()
        .respond_with(NextOnly)
        .with_priority(3)
        .mount(&ecr)
        .await;
    // Staging's profile (`default`) now points at the mock.
    let files = AwsFiles::new(&[("default", &ecr.uri())], "");
    std::fs::copy(&files.config, &world.aws_config).expect("replacing the AWS config");

    let running = world.spawn(&WATCH);
    wait_until("NEXT recorded on every staging Application", || async {
        world.all_watched(NEXT)
    })
    .await;
    let run = stop(running).await;
    let lines = run.lines();
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types[..3], ["error", "error", "poll"], "{}", run.stdout);
    let errors = of_type(&lines, "error");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let waits: Vec<f64> = errors
        .iter()
        .map(|e| e["retry_in_seconds"].as_f64().expect("retry_in_seconds"))
        .collect();
    assert_eq!(waits, [0.4, 0.8], "doubling from the interval");
    for e in &errors {
        assert_eq!(e["kind"], "transient", "{e:#}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("throttled")),
            "{e:#}"
        );
    }
    let poll = &of_type(&lines, "poll")[0];
    assert_eq!(poll["release"]["tag"], NEXT, "{poll:#}");
    assert_eq!(world.override_writes().await, once_each());
    ecr.verify().await;
}
