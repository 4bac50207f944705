//! End to end on the real adapters (issues 3, 4 and 5): the `deploy` binary WITHOUT
//! `--sandbox`, reaching ECR in two accounts served by two moto servers (through an AWS config
//! file whose profiles set `endpoint_url`) and Argo CD served by the stateful fake of
//! deploy-argocd (`deploy_argocd::fake`, plain HTTP), with the example configuration.
//!
//! The world of every test: staging (account 111111111111, us-west-2) holds the old and the
//! new release; its three Applications are automated and run the new one. Prod (account
//! 222222222222, three regions) has the old release and, unless a test says otherwise, the
//! new one "replicated" (moto never replicates: the test pushes the same manifests); its three
//! Applications are manual and run the old release. Digests are sha256 of the manifests.
//!
//! The fake's controller advances an Application each time it is observed, so nothing here
//! waits on the wall clock except where a test must watch the real `deploy` process reach a
//! point (then it polls the fake's requests with a deadline; see [`wait_until`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_argocd::fake::{FakeArgo, ForeignEnd, Lasts, Outage, Requests, TOKEN};
use deploy_aws::moto::{AwsFiles, EcrFixture, Moto};
use deploy_core::model::{RepoLocation, SyncMode, Tag};
use deploy_engine::conformance::argocd::{AppSeed, ArgoCdFixture, Script};
use deploy_engine::conformance::registry::{RegistryFixture, manifest};
use serde_json::{Value, json};
use tempfile::TempDir;
use wait_timeout::ChildExt;
use wiremock::matchers::method;
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::{Run, example_config};

pub(crate) const STAGING: &str = "111111111111";
const PROD: &str = "222222222222";
const PROD_REGIONS: [&str; 3] = ["us-west-2", "us-east-1", "eu-west-1"];
/// Clusters in the example's wave order: wave 1 is us-west-2, wave 2 the other two.
pub(crate) const CLUSTERS: [&str; 3] = ["us-west-2", "us-east-1", "eu-west-1"];
const SERVICES: [&str; 3] = ["logserver", "api", "worker"];
/// The release prod runs.
pub(crate) const OLD: &str = "0a1b2c3";
/// The release staging runs, to be promoted.
pub(crate) const NEW: &str = "9f8e7d6";
/// Wave 1's Application.
pub(crate) const WAVE1_APP: &str = "myapp-prod-us-west-2";
/// The Application that carries the promotion lock (`deploy/lock`): the first by name.
const LOCK_APP: &str = "myapp-prod-eu-west-1";
/// The OS user the runs report (the lock holder is `e2e@HOST pid N`).
const USER: &str = "e2e";
/// How long one `deploy` command may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long a test may wait for the `deploy` process to reach a point it observes.
const OBSERVE: Duration = Duration::from_secs(60);

/// What the prod registry holds of the new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replication {
    /// Every image in every region, with staging's digests.
    Complete,
    /// `staging/api` has not reached us-east-1, and eu-west-1 has no `staging/worker`
    /// repository at all.
    Incomplete,
    /// Everything is there, but `staging/api` in us-east-1 was pushed from another build.
    OtherDigest,
}

/// The moto servers, the fake Argo CD, and a temporary directory with the configuration,
/// the AWS files and the audit trail.
pub(crate) struct World {
    _staging: Moto,
    pub(crate) prod_moto: Moto,
    pub(crate) ecr: EcrFixture,
    pub(crate) argo: FakeArgo,
    _aws: AwsFiles,
    pub(crate) aws_config: PathBuf,
    aws_credentials: PathBuf,
    dir: TempDir,
    pub(crate) config: PathBuf,
    /// Service → digest of the new release in staging.
    digests: BTreeMap<String, String>,
}

/// moto for `account`, or `None` (after saying why) when it is not installed outside CI.
#[allow(clippy::print_stderr)]
pub(crate) fn moto(account: &str) -> Option<Moto> {
    Moto::start(account)
        .map_err(|unavailable| eprintln!("skipping: {unavailable}"))
        .ok()
}

pub(crate) fn repo(account: &str, region: &str, service: &str) -> RepoLocation {
    RepoLocation {
        account: account.into(),
        region: region.into(),
        repository: format!("staging/{service}"),
    }
}

pub(crate) fn image(account: &str, region: &str, prefix: &str, service: &str) -> String {
    format!("{account}.dkr.ecr.{region}.amazonaws.com/{prefix}{service}")
}

/// The manifest CI built for `service` at `tag`.
pub(crate) fn build(service: &str, tag: &str) -> String {
    manifest(&format!("{service}@{tag}"))
}

pub(crate) fn tag(t: &str) -> Tag {
    t.parse().expect("valid tag")
}

impl World {
    /// Starts everything; `None` when moto is not installed (outside CI).
    pub(crate) async fn start(replication: Replication) -> Option<World> {
        let (Some(staging), Some(prod)) = (moto(STAGING), moto(PROD)) else {
            return None;
        };
        let ecr = EcrFixture::new(&[(STAGING, &staging.endpoint), (PROD, &prod.endpoint)]);
        // The staging registry: both releases, sentinel (logserver) last as CI pushes.
        let mut digests = BTreeMap::new();
        for t in [OLD, NEW] {
            for service in ["api", "worker", "logserver"] {
                let at = repo(STAGING, "us-west-2", service);
                ecr.create_repository(&at, false).await;
                let digest = ecr.push(&at, &tag(t), &build(service, t)).await;
                if t == NEW {
                    digests.insert(service.to_owned(), digest.to_string());
                }
            }
        }
        // The prod registry, as replication left it.
        for region in PROD_REGIONS {
            for service in SERVICES {
                let at = repo(PROD, region, service);
                let new_missing = match (replication, region, service) {
                    (Replication::Incomplete, "eu-west-1", "worker") => continue,
                    (Replication::Incomplete, "us-east-1", "api") => true,
                    _ => false,
                };
                ecr.create_repository(&at, false).await;
                ecr.push(&at, &tag(OLD), &build(service, OLD)).await;
                if new_missing {
                    continue;
                }
                let bytes = match (replication, region, service) {
                    (Replication::OtherDigest, "us-east-1", "api") => build("api-rebuilt", NEW),
                    _ => build(service, NEW),
                };
                ecr.push(&at, &tag(NEW), &bytes).await;
            }
        }

        let argo = FakeArgo::start_with(6).await;
        for cluster in CLUSTERS {
            argo.create_application(&seed(
                "staging",
                cluster,
                automated(),
                NEW,
                (STAGING, "us-west-2", "staging/"),
            ))
            .await;
            argo.create_application(&seed(
                "debug",
                cluster,
                automated(),
                OLD,
                (STAGING, "us-west-2", "debug/"),
            ))
            .await;
            argo.create_application(&seed(
                "prod",
                cluster,
                SyncMode::Manual,
                OLD,
                (PROD, cluster, "staging/"),
            ))
            .await;
        }

        let dir = tempfile::Builder::new()
            .prefix("deploy-e2e-")
            .tempdir()
            .expect("temporary directory");
        // The example configuration, pointed at the fake, with a short soak and timeout.
        let example = std::fs::read_to_string(example_config()).expect("examples/deploy.toml");
        // The example's check asks a Prometheus that is not here: leave the checks out
        // (tests/it/checks.rs gives prod one against a real Prometheus).
        let mut text = match example.find("\n# Evaluated per cluster during each wave's soak") {
            Some(at) => example[..at].to_owned(),
            None => example.clone(),
        };
        for (from, to) in [
            (
                r#"server = "argocd.example.com""#,
                format!(r#"server = "{}""#, argo.server.uri()),
            ),
            (r#"soak = "5m""#, r#"soak = "1s""#.to_owned()),
            (r#"timeout = "15m""#, r#"timeout = "60s""#.to_owned()),
        ] {
            assert!(
                text.contains(from),
                "examples/deploy.toml no longer has {from}"
            );
            text = text.replace(from, &to);
        }
        let config = dir.path().join("deploy.toml");
        std::fs::write(&config, text).expect("write deploy.toml");
        // `default` is the staging account (staging has no aws_profile), `prod` the prod one.
        let aws = AwsFiles::new(
            &[("default", &staging.endpoint), ("prod", &prod.endpoint)],
            "",
        );
        Some(World {
            _staging: staging,
            prod_moto: prod,
            ecr,
            argo,
            aws_config: aws.config.clone(),
            aws_credentials: aws.credentials.clone(),
            _aws: aws,
            dir,
            config,
            digests,
        })
    }

    /// Keeps prod's lock and audit trail in S3 (a bucket in the prod account's moto, reached
    /// through the `prod` profile): `state = { s3 = ... }` in deploy.toml.
    pub(crate) async fn use_s3_state(&self) {
        deploy_aws::moto::create_bucket(&self.prod_moto.endpoint, STATE_BUCKET).await;
        let text = std::fs::read_to_string(&self.config).expect("read deploy.toml");
        let from = r#"timeout = "60s""#;
        assert!(text.contains(from), "deploy.toml no longer has {from}");
        let state = format!(
            "{from}\nstate = {{ s3 = \"s3://{STATE_BUCKET}/deploy\", region = \"us-west-2\", aws_profile = \"prod\" }}"
        );
        std::fs::write(&self.config, text.replace(from, &state)).expect("write deploy.toml");
    }

    /// `deploy ARGS` as run on another machine: its own audit trail file.
    pub(crate) async fn run_on(&self, machine: &str, args: &[&str]) -> Run {
        let n = std::fs::read_dir(self.dir.path()).map_or(0, Iterator::count);
        let stdout = self.dir.path().join(format!("stdout-{n}"));
        let stderr = self.dir.path().join(format!("stderr-{n}"));
        let child = self
            .command_with(&self.dir.path().join(machine).join("audit.jsonl"), args)
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting deploy");
        Running {
            child: Some(child),
            args: args.join(" "),
            stdout,
            stderr,
        }
        .wait()
        .await
    }

    /// `deploy --config … --audit-log … ARGS`, with only the environment the test gives it.
    fn command(&self, args: &[&str]) -> Command {
        self.command_with(&self.audit_log(), args)
    }

    fn command_with(&self, audit_log: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--audit-log")
            .arg(audit_log)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", USER)
            .env("ARGOCD_AUTH_TOKEN", TOKEN)
            .env("AWS_CONFIG_FILE", &self.aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.aws_credentials)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn");
        if let Some(host) = std::env::var_os("HOSTNAME") {
            cmd.env("HOSTNAME", host);
        }
        cmd
    }

    /// Gives prod this soak and wave timeout (`"3s"`, `"30s"`) instead of the world's 1 s
    /// and 60 s.
    pub(crate) fn set_prod_timings(&self, soak: &str, timeout: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read deploy.toml");
        let mut changed = text.clone();
        for (from, to) in [
            (r#"soak = "1s""#, format!(r#"soak = "{soak}""#)),
            (r#"timeout = "60s""#, format!(r#"timeout = "{timeout}""#)),
        ] {
            assert!(changed.contains(from), "deploy.toml no longer has {from}");
            changed = changed.replace(from, &to);
        }
        std::fs::write(&self.config, changed).expect("write deploy.toml");
    }

    /// Appends `toml` to deploy.toml (e.g. `[[environments.prod.checks]]` tables).
    pub(crate) fn append_config(&self, toml: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read deploy.toml");
        std::fs::write(&self.config, format!("{text}\n{toml}")).expect("write deploy.toml");
    }

    pub(crate) fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Runs `deploy ARGS` to the end.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.spawn(args).wait().await
    }

    /// Starts `deploy ARGS`; its output goes to files in the temporary directory.
    pub(crate) fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_with(args, &[])
    }

    /// Starts `deploy ARGS` with these environment variables added (or replaced).
    pub(crate) fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let n = std::fs::read_dir(self.dir.path()).map_or(0, Iterator::count);
        let stdout = self.dir.path().join(format!("stdout-{n}"));
        let stderr = self.dir.path().join(format!("stderr-{n}"));
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting deploy");
        Running {
            child: Some(child),
            args: args.join(" "),
            stdout,
            stderr,
        }
    }

    /// Every request the fake Argo CD received so far.
    pub(crate) async fn requests(&self) -> Vec<Request> {
        self.argo
            .server
            .received_requests()
            .await
            .expect("request recording is on")
    }

    /// The sync requests sent for `app`.
    pub(crate) async fn syncs(&self, app: &str) -> usize {
        let path = format!("/api/v1/applications/{app}/sync");
        self.requests()
            .await
            .iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == path)
            .count()
    }

    /// Makes every write to Argo CD an expectation that fails the test: mocks with
    /// `.expect(0)` in front of the fake (verified by [`World::verify_no_writes`]).
    pub(crate) async fn forbid_writes(&self) {
        for verb in ["PATCH", "POST", "PUT", "DELETE"] {
            Mock::given(method(verb))
                .respond_with(ResponseTemplate::new(500))
                .with_priority(1)
                .expect(0)
                .named(format!("no {verb} to Argo CD"))
                .mount(&self.argo.server)
                .await;
        }
    }

    /// Asserts that not one write request reached Argo CD, but reads did.
    async fn verify_no_writes(&self) {
        let requests = self.requests().await;
        let writes: Vec<String> = requests
            .iter()
            .filter(|r| r.method.as_str() != "GET")
            .map(|r| format!("{} {}", r.method, r.url.path()))
            .collect();
        assert!(writes.is_empty(), "writes reached Argo CD: {writes:#?}");
        assert!(
            requests
                .iter()
                .any(|r| r.url.path().starts_with("/api/v1/applications/myapp-prod-")),
            "the prod Applications were never read: the gate did not look at them"
        );
        self.argo.server.verify().await;
    }

    /// The prod Application of `cluster`, as Argo CD serves it.
    pub(crate) fn prod_app(&self, cluster: &str) -> Value {
        self.argo.object(&format!("myapp-prod-{cluster}"))
    }

    /// Asserts that every prod Application runs `tag` (spec and live images), Synced and
    /// Healthy, with no operation pending.
    #[track_caller]
    pub(crate) fn assert_prod_runs(&self, tag: &str) {
        for cluster in CLUSTERS {
            let app = self.prod_app(cluster);
            let name = &app["metadata"]["name"];
            assert_eq!(tag_parameter(&app), tag, "{name}: spec image.tag");
            let images: Vec<&str> = app["status"]["summary"]["images"]
                .as_array()
                .expect("images")
                .iter()
                .map(|i| i.as_str().expect("image"))
                .collect();
            let want: Vec<String> = SERVICES
                .iter()
                .map(|s| format!("{}:{tag}", image(PROD, cluster, "staging/", s)))
                .collect();
            assert_eq!(images, want, "{name}: live images");
            assert_eq!(app["status"]["health"]["status"], "Healthy", "{name}");
            assert_eq!(app["status"]["sync"]["status"], "Synced", "{name}");
            assert!(
                app.get("operation").is_none(),
                "{name}: an operation is pending"
            );
        }
    }

    /// The lock annotation, if any.
    fn lock(&self) -> Option<String> {
        self.argo.object(LOCK_APP)["metadata"]["annotations"]["deploy/lock"]
            .as_str()
            .map(str::to_owned)
    }

    /// The audit trail, one JSON value per line.
    pub(crate) fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
            .collect()
    }
}

fn automated() -> SyncMode {
    SyncMode::Automated {
        prune: true,
        self_heal: true,
    }
}

/// The Application of `env` in `cluster`, running `tag` from `(account, region, prefix)`.
fn seed(
    env: &str,
    cluster: &str,
    sync_mode: SyncMode,
    tag: &str,
    (account, region, prefix): (&str, &str, &str),
) -> AppSeed {
    AppSeed {
        name: format!("myapp-{env}-{cluster}"),
        labels: BTreeMap::from([
            ("app.kubernetes.io/part-of".into(), "myapp".into()),
            ("deploy/environment".into(), env.into()),
            ("deploy/cluster".into(), cluster.into()),
        ]),
        destination: cluster.into(),
        sync_mode,
        helm_parameters: BTreeMap::from([
            ("image.tag".into(), tag.into()),
            ("replicaCount".into(), "3".into()),
        ]),
        tag_parameter: "image.tag".into(),
        image_names: SERVICES
            .iter()
            .map(|s| image(account, region, prefix, s))
            .collect(),
    }
}

pub(crate) fn tag_parameter(app: &Value) -> String {
    app["spec"]["source"]["helm"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "image.tag"))
        .and_then(|p| p["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A `deploy` process started by [`World::spawn`]; killed if the test ends before it.
pub(crate) struct Running {
    child: Option<Child>,
    args: String,
    pub(crate) stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    pub(crate) fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the process to exit (within [`DEADLINE`]).
    pub(crate) async fn wait(mut self) -> Run {
        let mut child = self.child.take().expect("running");
        let args = self.args.clone();
        let status = tokio::task::spawn_blocking(move || {
            let status = child.wait_timeout(DEADLINE).expect("waiting for deploy");
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            status
        })
        .await
        .expect("the waiting thread");
        let run = self.output(status.and_then(|s| s.code()));
        assert!(
            status.is_some(),
            "`deploy {args}` did not finish within {DEADLINE:?}\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout,
            run.stderr
        );
        run
    }

    /// The `data` of every `event` line the process has printed so far (whole lines only).
    pub(crate) fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["type"] == "event")
            .map(|mut l| l["data"].take())
            .collect()
    }

    /// Waits until the process has printed an event that `matches` (see [`wait_until`]).
    pub(crate) async fn wait_for_event(&self, what: &str, matches: impl Fn(&Value) -> bool) {
        wait_until(what, || {
            let seen = self.events().iter().any(&matches);
            async move { seen }
        })
        .await;
    }

    /// Sends `signal` (`"HUP"`, `"TERM"`, `"INT"`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.id());
    }

    /// Kills the process with SIGKILL, as `kill -9` or an OOM killer would, and reaps it.
    pub(crate) fn kill(mut self) -> Run {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaping deploy");
        self.output(status.code())
    }

    fn output(&self, code: Option<i32>) -> Run {
        Run {
            args: self.args.clone(),
            code,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 50 ms until it holds, failing after [`OBSERVE`]. Only for watching
/// the real `deploy` process reach a point (a request it sends): the test cannot step it.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + OBSERVE;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn json_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    all
}

pub(crate) const PROMOTE: [&str; 4] = ["promote", "--env", "prod", "--yes"];
/// The bucket of prod's state store, when a test keeps it in S3.
pub(crate) const STATE_BUCKET: &str = "myapp-deploy-state";

// ---------------------------------------------------------------------------------------
// Issue 5: promotion.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_across_two_waves_records_and_annotates() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);
    assert_eq!(run.result()["outcome"], "succeeded", "{}", run.stdout);

    world.assert_prod_runs(NEW);
    // One sync per Application, wave 1 before wave 2.
    let syncs: Vec<String> = world
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/sync"))
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(syncs.len(), 3, "{syncs:#?}");
    assert_eq!(syncs[0], format!("/api/v1/applications/{WAVE1_APP}/sync"));

    let audit = world.audit();
    assert_eq!(audit.len(), 2, "two audit records per run: {audit:#?}");
    assert_eq!(
        audit[0]["outcome"], "started",
        "the first when the lock is taken"
    );
    assert_eq!(audit[0]["run_id"], audit[1]["run_id"]);
    let record = &audit[1];
    assert_eq!(record["environment"], "prod");
    assert_eq!(record["outcome"], "succeeded");
    assert_eq!(record["release"]["tag"], NEW);
    assert_eq!(
        record["release"]["digests"],
        json!(world.digests),
        "the release carries staging's three digests"
    );
    let mut changed: Vec<&str> = record["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .map(|c| c.as_str().expect("cluster"))
        .collect();
    changed.sort_unstable();
    assert_eq!(changed, ["eu-west-1", "us-east-1", "us-west-2"]);
    assert_eq!(record["actor"]["os_user"], USER, "{record}");

    for cluster in CLUSTERS {
        let app = world.prod_app(cluster);
        assert_eq!(
            app["metadata"]["annotations"]["deploy/release"], NEW,
            "{cluster}: {:#}",
            app["metadata"]
        );
    }
    assert_eq!(world.lock(), None, "the lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_replication_changes_nothing() {
    let Some(world) = World::start(Replication::Incomplete).await else {
        return;
    };
    world.forbid_writes().await;
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["outcome"], "gate_failed", "{result:#}");
    assert_eq!(result["gate"]["name"], "target_digests", "{result:#}");
    let details = result["gate"]["details"].to_string();
    for missing in ["staging/api", "us-east-1", "staging/worker", "eu-west-1"] {
        assert!(details.contains(missing), "{missing} not named: {details}");
    }
    world.verify_no_writes().await;
    world.assert_prod_runs(OLD);
    assert!(world.audit().is_empty(), "no run, no audit record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prod_digest_other_than_stagings_changes_nothing() {
    let Some(world) = World::start(Replication::OtherDigest).await else {
        return;
    };
    world.forbid_writes().await;
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["gate"]["name"], "target_digests", "{result:#}");
    let details = result["gate"]["details"].to_string();
    assert!(
        details.contains("api") && details.contains("us-east-1"),
        "the mismatch is not named: {details}"
    );
    world.verify_no_writes().await;
    world.assert_prod_runs(OLD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prod_application_with_automated_sync_changes_nothing() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.argo.edit("myapp-prod-eu-west-1", |app| {
        app["spec"]["syncPolicy"] = json!({ "automated": { "prune": true, "selfHeal": true } });
    });
    world.forbid_writes().await;
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["gate"]["name"], "applications", "{result:#}");
    assert!(
        result["gate"]["details"]
            .to_string()
            .contains("myapp-prod-eu-west-1"),
        "{result:#}"
    );
    world.verify_no_writes().await;
    world.assert_prod_runs(OLD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_in_wave_two_rolls_both_waves_back() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world
        .argo
        .script("myapp-prod-eu-west-1", Script::Degraded)
        .await;
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(1);
    assert_eq!(run.result()["outcome"], "rolled_back", "{}", run.stdout);

    // Wave 1 was deployed, then returned; wave 2 too; all Healthy on the old release.
    world.assert_prod_runs(OLD);
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        2,
        "wave 1: one sync to the release, one back"
    );
    for cluster in ["us-east-1", "eu-west-1"] {
        let app = world.prod_app(cluster);
        let history = app["status"]["history"].as_array().expect("history");
        assert!(
            history.len() >= 3,
            "{cluster} went to the release and back: {history:#?}"
        );
    }
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[1]["outcome"], "rolled_back");
    assert_eq!(world.lock(), None, "the lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_operation_is_waited_out() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    // alice's sync runs until Argo CD has been asked about the app a few more times.
    world
        .argo
        .start_foreign_operation_for("myapp-prod-us-east-1", 4);
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);

    let plan = run
        .lines()
        .into_iter()
        .find(|l| l["type"] == "plan")
        .expect("the plan is reported")["data"]
        .take();
    let apps: Vec<&Value> = plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .flat_map(|w| w["apps"].as_array().expect("apps"))
        .collect();
    let east = apps
        .iter()
        .find(|a| a["application"] == "myapp-prod-us-east-1")
        .expect("us-east-1 is planned");
    assert_eq!(east["foreign_operation"], "alice", "{east:#}");

    // Not one sync was sent while alice's ran (Argo CD would have refused it, code 9).
    assert_eq!(world.syncs("myapp-prod-us-east-1").await, 1);
    world.assert_prod_runs(NEW);
    let east = world.prod_app("us-east-1");
    assert_eq!(
        east["status"]["operationState"]["operation"]["initiatedBy"]["username"], "ci-bot",
        "the last operation is the promotion's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_wave_two_then_run_again_resumes() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    // eu-west-1's sync hangs, so the run is certainly inside wave 2 when it is killed.
    world
        .argo
        .script("myapp-prod-eu-west-1", Script::Hang)
        .await;
    let first = world.spawn(&json_args(&PROMOTE));
    let pid = first.id();
    wait_until("the sync of wave 2", || async {
        world.syncs("myapp-prod-eu-west-1").await > 0
    })
    .await;
    let killed = first.kill();
    assert_eq!(killed.code, None, "killed by a signal: {killed:?}");
    let lock = world.lock().expect("a killed run leaves its lock behind");
    assert!(
        lock.contains(&format!("{USER}@")) && lock.contains(&format!("pid {pid} ")),
        "the lock names the killed run: {lock}"
    );
    assert_eq!(tag_parameter(&world.prod_app("us-west-2")), NEW);

    // Argo CD finishes the sync the killed run started; the same command runs again.
    world
        .argo
        .script("myapp-prod-eu-west-1", Script::Healthy)
        .await;
    let second = world.run(&json_args(&PROMOTE)).await;
    second.expect_code(0);
    world.assert_prod_runs(NEW);
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "wave 1 is not synced again"
    );
    let report = second.result();
    let wave1 = report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["cluster"] == "us-west-2")
        .expect("wave 1 in the report")
        .clone();
    assert_eq!(wave1["state"]["state"], "skipped", "{wave1:#}");
    assert_eq!(
        world.lock(),
        None,
        "the dead run's lock was taken over, then released"
    );
    let audit = world.audit();
    assert_eq!(
        audit.len(),
        3,
        "the killed run's start, then the second run's start and end: {audit:#?}"
    );
    assert_eq!(audit[0]["outcome"], "started");
    assert_ne!(audit[0]["run_id"], audit[1]["run_id"]);
    assert_eq!(audit[1]["outcome"], "started");
    assert_eq!(audit[2]["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_promotion_at_once_exits_4_naming_the_holder() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    // The first run holds the lock while wave 1's sync hangs.
    world.argo.script(WAVE1_APP, Script::Hang).await;
    let first = world.spawn(&json_args(&PROMOTE));
    let pid = first.id();
    wait_until("the first run's sync of wave 1", || async {
        world.syncs(WAVE1_APP).await > 0
    })
    .await;
    assert!(
        world
            .lock()
            .is_some_and(|l| l.contains(&format!("pid {pid} "))),
        "the first run holds the lock: {:?}",
        world.lock()
    );

    let second = world.run(&PROMOTE).await;
    second.expect_code(4);
    let holder = format!("{USER}@");
    let said = format!("{}{}", second.stdout, second.stderr);
    assert!(
        said.contains(&holder) && said.contains(&format!("pid {pid}")),
        "the refusal names the holder ({holder}… pid {pid}):\n{said}"
    );
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "the second run synced nothing"
    );

    world.argo.script(WAVE1_APP, Script::Healthy).await;
    first.wait().await.expect_code(0);
    world.assert_prod_runs(NEW);
    for cluster in CLUSTERS {
        assert_eq!(
            world.syncs(&format!("myapp-prod-{cluster}")).await,
            1,
            "{cluster}: synced once, by the first run"
        );
    }
    let audit = world.audit();
    assert_eq!(
        audit.len(),
        2,
        "one run promoted (its start and end): {audit:#?}"
    );
    assert_eq!(audit[1]["outcome"], "succeeded");
}

// ---------------------------------------------------------------------------------------
// Issues 3 and 4: the read commands against moto and the REST server, without --sandbox.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_check_reports_digests_or_exactly_what_is_missing() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let check = ["release", "check", "--env", "prod", "--tag", NEW];

    let run = world.run(&json_args(&check)).await;
    run.expect_code(0);
    let result = run.result();
    assert_eq!(result["complete"], true, "{result:#}");
    assert_eq!(result["release"]["tag"], NEW);
    assert_eq!(result["release"]["digests"], json!(world.digests));
    for service in SERVICES {
        for region in PROD_REGIONS {
            assert_eq!(
                result["check"]["found"][service][region], world.digests[service],
                "{service} in {region}"
            );
        }
    }

    // A cleanup removes api's image from us-east-1 and worker's repository from eu-west-1.
    world
        .ecr
        .delete_image(&repo(PROD, "us-east-1", "api"), &tag(NEW))
        .await;
    world
        .ecr
        .delete_repository(&repo(PROD, "eu-west-1", "worker"))
        .await;
    let run = world.run(&json_args(&check)).await;
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["complete"], false);
    assert_eq!(result["release"], Value::Null);
    let mut missing: Vec<Value> = result["check"]["missing"]
        .as_array()
        .expect("missing")
        .clone();
    missing.sort_by_key(|m| m["service"].to_string());
    assert_eq!(
        missing,
        [
            json!({ "service": "api", "region": "us-east-1", "kind": "image",
                    "image": image(PROD, "us-east-1", "staging/", "api") }),
            json!({ "service": "worker", "region": "eu-west-1", "kind": "repository",
                    "image": image(PROD, "eu-west-1", "staging/", "worker") }),
        ]
    );

    // The same in text: what is missing, one line each, and nothing else called missing.
    let run = world.run(&check).await;
    run.expect_code(3);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("missing:"))
        .collect();
    assert_eq!(
        lines,
        [
            format!(
                "missing: {}:{NEW}",
                image(PROD, "us-east-1", "staging/", "api")
            ),
            format!(
                "repository missing: {}:{NEW}",
                image(PROD, "eu-west-1", "staging/", "worker")
            ),
        ],
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_plan_read_the_rest_server() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.forbid_writes().await;

    let run = world.run(&json_args(&["status"])).await;
    run.expect_code(0);
    let result = run.result();
    let rows = result["applications"].as_array().expect("applications");
    let mut seen: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["application"].as_str().expect("name").to_owned(),
                r["live"].as_str().unwrap_or("-").to_owned(),
                r["desired"].as_str().unwrap_or("-").to_owned(),
                r["health"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String, String, String)> = Vec::new();
    for (env, t) in [("debug", OLD), ("staging", NEW), ("prod", OLD)] {
        for cluster in CLUSTERS {
            want.push((
                format!("myapp-{env}-{cluster}"),
                t.into(),
                t.into(),
                "Healthy".into(),
            ));
        }
    }
    want.sort();
    assert_eq!(seen, want, "{result:#}");
    let newest: BTreeMap<String, Value> = result["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .map(|e| {
            (
                e["environment"].as_str().expect("name").to_owned(),
                e["newest_complete_release"].clone(),
            )
        })
        .collect();
    assert_eq!(newest["staging"], NEW, "{result:#}");
    assert_eq!(newest["prod"], NEW, "{result:#}");

    let run = world.run(&json_args(&["plan", "--env", "prod"])).await;
    run.expect_code(0);
    let plan = run.result();
    assert_eq!(plan["release"]["tag"], NEW, "{plan:#}");
    assert_eq!(plan["release"]["digests"], json!(world.digests));
    let gates: Vec<bool> = plan["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .map(|g| g["passed"].as_bool().expect("passed"))
        .collect();
    assert_eq!(gates, [true; 4], "{plan:#}");
    let waves: Vec<Vec<(String, String)>> = plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            w["apps"]
                .as_array()
                .expect("apps")
                .iter()
                .map(|a| {
                    (
                        a["application"].as_str().expect("name").to_owned(),
                        a["live"].to_string(),
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(waves.len(), 2, "{plan:#}");
    assert_eq!(waves[0].len(), 1);
    assert_eq!(waves[0][0].0, WAVE1_APP);
    assert_eq!(waves[1].len(), 2);
    for (app, live) in waves.iter().flatten() {
        assert_eq!(
            live,
            &json!({ "kind": "tag", "value": OLD }).to_string(),
            "{app} runs {OLD}"
        );
    }
    // The text plan says the same.
    let run = world.run(&["plan", "--env", "prod"]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!("plan: promote prod to {NEW}")),
        "{}",
        run.stdout
    );
    world.verify_no_writes().await;
}

// ---------------------------------------------------------------------------------------
// Issue 6: CI waits for its release (`release check --wait`).

/// A release CI is still pushing to staging: every image but the sentinel (logserver).
const PUSHING: &str = "5e6f7a8";

impl World {
    /// CI pushes `service` of [`PUSHING`] to staging.
    async fn ci_push(&self, service: &str) {
        self.ecr
            .push(
                &repo(STAGING, "us-west-2", service),
                &tag(PUSHING),
                &build(service, PUSHING),
            )
            .await;
    }

    /// Starts `deploy release check --env staging --tag PUSHING --wait WAIT` (plus `extra`
    /// first) with every image but logserver pushed, and waits until it has said, on stderr,
    /// that logserver is missing: it is waiting.
    async fn check_while_pushing(&self, extra: &[&str], wait: &str) -> Running {
        self.ci_push("api").await;
        self.ci_push("worker").await;
        let mut args = extra.to_vec();
        args.extend([
            "release", "check", "--env", "staging", "--tag", PUSHING, "--wait", wait,
        ]);
        let running = self.spawn(&args);
        let stderr = running.stderr.clone();
        let logserver = format!(
            "{}:{PUSHING}",
            image(STAGING, "us-west-2", "staging/", "logserver")
        );
        wait_until("deploy to report logserver missing", || {
            let said = std::fs::read_to_string(&stderr).unwrap_or_default();
            let waiting = said
                .lines()
                .any(|l| l.contains("not complete") && l.contains(&logserver));
            async move { waiting }
        })
        .await;
        running
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_check_waits_for_the_sentinel_pushed_during_the_wait() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let running = world.check_while_pushing(&[], "2m").await;
    world.ci_push("logserver").await;
    let run = running.wait().await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "complete: every image of {PUSHING} is in every region"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches("SERVICE").count(),
        1,
        "the table is printed once, at the end:\n{}",
        run.stdout
    );
    assert!(run.stderr.contains("checking again in"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_check_gives_up_when_the_wait_is_over_naming_what_is_missing() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.ci_push("api").await;
    world.ci_push("worker").await;
    let started = Instant::now();
    let run = world
        .run(&json_args(&[
            "release", "check", "--env", "staging", "--tag", PUSHING, "--wait", "3s",
        ]))
        .await;
    run.expect_code(3);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it waited the 3 s it was given"
    );
    let result = run.result();
    assert_eq!(result["complete"], false, "{result:#}");
    assert_eq!(result["release"], Value::Null, "{result:#}");
    let waited = result["waited_seconds"].as_u64().expect("waited_seconds");
    assert!((3..10).contains(&waited), "{result:#}");
    assert_eq!(
        result["check"]["missing"],
        json!([{ "service": "logserver", "region": "us-west-2", "kind": "image",
                 "image": image(STAGING, "us-west-2", "staging/", "logserver") }]),
        "{result:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_check_stops_waiting_on_sigterm_with_exit_130() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let running = world.check_while_pushing(&[], "2m").await;
    let status = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let run = running.wait().await;
    run.expect_code(130);
    assert!(
        run.stdout.contains(&format!(
            "missing: {}:{PUSHING}",
            image(STAGING, "us-west-2", "staging/", "logserver")
        )),
        "where the release stood:\n{}",
        run.stdout
    );
    assert!(run.stderr.contains("interrupted after"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// Issue 10: faults injected at the HTTP level (items 1, 2, 5 and 8).

/// A wave-2 Application that does not carry the lock.
const EAST: &str = "myapp-prod-us-east-1";

/// Turns an Application Degraded, as a crash-looping Deployment does, without a sync.
fn degrade(app: &mut Value) {
    app["status"]["health"] = json!({
        "status": "Degraded",
        "message": "Deployment \"api\" exceeded its progress deadline"
    });
}

/// The events of a finished run (the `data` of its `event` lines).
pub(crate) fn events_of(run: &Run) -> Vec<Value> {
    run.lines()
        .into_iter()
        .filter(|l| l["type"] == "event")
        .map(|mut l| l["data"].take())
        .collect()
}

/// Where each cluster ended, from a run's report.
fn states(report: &Value) -> BTreeMap<String, String> {
    report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            (
                a["cluster"].as_str().expect("cluster").to_owned(),
                a["state"]["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

pub(crate) fn soak_started(wave: u64) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == "soak_started" && e["wave"] == wave
}

/// A promotion (soak and timeout as given) in which, once wave 2's soak has begun, us-east-1
/// turns Degraded while Argo CD answers its reads with `outage` for `lasts`; returns the run,
/// checked to have exited 1 after the outage was met, with the outage cleared.
async fn degraded_behind(
    world: &World,
    soak: &str,
    timeout: &str,
    outage: Outage,
    lasts: Lasts,
) -> Run {
    world.set_prod_timings(soak, timeout);
    let running = world.spawn(&json_args(&PROMOTE));
    running
        .wait_for_event("the soak of wave 2", soak_started(2))
        .await;
    world.argo.inject(EAST, Requests::Reads, outage, lasts);
    world.argo.edit(EAST, degrade);
    let run = running.wait().await;
    assert!(world.argo.fault_answers(EAST) > 0, "the outage was met");
    world.argo.clear(EAST);
    run.expect_code(1);
    run
}

/// Asserts the events carry a lapse of us-east-1, no passed soak of wave 2, and a halt whose
/// reason names us-east-1 and says `why`.
#[track_caller]
fn assert_lapse_and_halt(run: &Run, why: &str) {
    let events = events_of(run);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "observation_lost" && e["cluster"] == "us-east-1"),
        "the lapse is an event: {events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "soak_finished" && e["wave"] == 2),
        "wave 2's soak did not pass: {events:#?}"
    );
    let halted = events
        .iter()
        .find(|e| e["event"] == "halted")
        .expect("the run halted");
    assert!(
        halted["reason"]
            .as_str()
            .is_some_and(|r| r.contains("us-east-1") && r.contains(why)),
        "{halted}"
    );
}

/// Item 1: the last wave's Application turns Degraded while Argo CD answers 503 to every
/// read of it (GET and watch stream) for longer than the soak. A soak that observed
/// nothing does not pass: the lapse is an event, the soak fails once it sees the truth,
/// and the run rolls back and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_behind_503s_in_the_last_soak_rolls_back() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    // 8 s from the first 503: longer than the 3 s soak, shorter than soak and timeout.
    let run = degraded_behind(
        &world,
        "3s",
        "30s",
        Outage::Unavailable,
        Lasts::For(Duration::from_secs(8)),
    )
    .await;
    let report = run.result();
    assert_eq!(report["outcome"], "rolled_back", "{report:#}");
    assert_lapse_and_halt(&run, "Degraded");

    world.assert_prod_runs(OLD);
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[0]["outcome"], "started");
    assert_eq!(audit[1]["outcome"], "rolled_back");
    assert_eq!(world.lock(), None, "the lock is released");
}

/// Item 1 when Argo CD never answers again for that Application: the soak cannot observe
/// it, so it fails at the soak plus the wave's timeout (not never, not with a pass); the
/// rollback cannot reach that Application either, and the outcome says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_behind_503s_that_never_end_fails_at_soak_and_timeout() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let run = degraded_behind(&world, "2s", "4s", Outage::Unavailable, Lasts::UntilCleared).await;
    let report = run.result();
    assert_eq!(report["outcome"], "failed", "{report:#}");
    let states = states(&report);
    assert_eq!(states["us-east-1"], "rollback_failed", "{report:#}");
    assert_eq!(states["us-west-2"], "rolled_back", "{report:#}");
    assert_eq!(states["eu-west-1"], "rolled_back", "{report:#}");
    assert_lapse_and_halt(&run, "before the deadline");
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[1]["outcome"], "failed");
    assert_eq!(world.lock(), None, "the lock is released");
}

/// Item 1 with an expired token: Argo CD answers 401 to every read of the Degraded
/// Application from the middle of the last soak on. A refused token does not heal by
/// waiting, so the soak fails at once; the rollback cannot reach that Application either,
/// and the outcome says so (failed, not rolled back) while the other two go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_behind_a_refused_token_in_the_last_soak_fails_and_says_where() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let run = degraded_behind(
        &world,
        "3s",
        "30s",
        Outage::Unauthenticated,
        Lasts::UntilCleared,
    )
    .await;
    let report = run.result();
    assert_eq!(report["outcome"], "failed", "{report:#}");
    let states = states(&report);
    assert_eq!(states["us-west-2"], "rolled_back", "{report:#}");
    assert_eq!(states["eu-west-1"], "rolled_back", "{report:#}");
    assert_eq!(states["us-east-1"], "rollback_failed", "{report:#}");
    assert_lapse_and_halt(&run, "cannot be observed");
    let halted = events_of(&run)
        .into_iter()
        .find(|e| e["event"] == "halted")
        .expect("halted");
    assert!(
        halted["reason"]
            .as_str()
            .is_some_and(|r| r.contains("token")),
        "the reason names the token: {halted}"
    );

    // us-east-1 stays where the refusal left it; the others run the old release again.
    assert_eq!(tag_parameter(&world.prod_app("us-east-1")), NEW);
    for cluster in ["us-west-2", "eu-west-1"] {
        assert_eq!(tag_parameter(&world.prod_app(cluster)), OLD, "{cluster}");
    }
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[1]["outcome"], "failed");
    assert_eq!(world.lock(), None, "the lock is released");
}

/// Item 2: alice syncs wave 1 to the release herself, and her PostSync smoke test fails
/// although every image runs the release, Synced and Healthy. Her operation is waited out
/// and not taken for ours: deploy syncs again with its own operation id, and wave 2 starts
/// only once that operation succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_sync_that_failed_on_a_post_sync_hook_is_followed_by_our_own() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world
        .argo
        .start_foreign_sync(WAVE1_APP, NEW, 8, ForeignEnd::FailedOnPostSyncHook);
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);
    let report = run.result();
    assert_eq!(report["outcome"], "succeeded", "{report:#}");

    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "after alice's failed sync, deploy synced wave 1 with its own operation"
    );
    let west = world.prod_app("us-west-2");
    let history = west["status"]["history"].as_array().expect("history");
    assert!(
        history
            .iter()
            .any(|h| h["initiatedBy"]["username"] == "alice"),
        "alice's sync ran: {history:#?}"
    );
    let op = &west["status"]["operationState"];
    assert_eq!(op["phase"], "Succeeded", "{op:#}");
    assert_eq!(
        op["operation"]["initiatedBy"]["username"], "ci-bot",
        "{op:#}"
    );
    let run_id = report["run_id"].as_str().expect("run_id");
    assert!(
        op["operation"]["info"].to_string().contains(run_id),
        "the last operation carries this run's id ({run_id}): {op:#}"
    );

    // Our sync of wave 1 came before any sync of wave 2, and wave 2 started only after
    // wave 1 was Healthy through our operation.
    let syncs: Vec<String> = world
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/sync"))
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(syncs.len(), 3, "{syncs:#?}");
    assert_eq!(syncs[0], format!("/api/v1/applications/{WAVE1_APP}/sync"));
    let events = events_of(&run);
    let at = |what: &str, matches: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .position(matches)
            .unwrap_or_else(|| panic!("no {what} event: {events:#?}"))
    };
    let waiting = at("app_waiting", &|e| {
        e["event"] == "app_waiting" && e["cluster"] == "us-west-2"
    });
    assert_eq!(events[waiting]["operation_by"], "alice");
    let syncing = at("app_syncing", &|e| {
        e["event"] == "app_syncing" && e["cluster"] == "us-west-2"
    });
    let healthy = at("app_healthy", &|e| {
        e["event"] == "app_healthy" && e["cluster"] == "us-west-2"
    });
    let wave2 = at("wave_started 2", &|e| {
        e["event"] == "wave_started" && e["wave"] == 2
    });
    assert!(
        waiting < syncing && syncing < healthy && healthy < wave2,
        "waited, synced, Healthy, then wave 2: {events:#?}"
    );
    world.assert_prod_runs(NEW);
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[1]["outcome"], "succeeded");
}

/// Item 5: from the renewal at the start of wave 2, Argo CD answers 503 to every PATCH of the
/// lock's Application for 20 s (the issue's restart of argocd-server; longer than the client's
/// retries of one request, and than the 4 renewal tries with 1 s pauses the engine made before,
/// at most about 18 s). The lease has many minutes left, so the renewal is retried until it
/// lands: nothing is rolled back and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_renewal_through_a_20_s_outage_rolls_nothing_back() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.set_prod_timings("3s", "60s");
    let running = world.spawn(&json_args(&PROMOTE));
    running
        .wait_for_event("the soak of wave 1", soak_started(1))
        .await;
    // The next PATCH of the lock's Application is wave 2's renewal (it is in wave 2).
    world.argo.inject(
        LOCK_APP,
        Requests::Patches,
        Outage::Unavailable,
        Lasts::For(Duration::from_secs(20)),
    );
    let run = running.wait().await;
    run.expect_code(0);
    let report = run.result();
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    // One renewal request is 1 + 4 retries: more answers than that mean it was renewed
    // again after a failed request.
    let met = world.argo.fault_answers(LOCK_APP);
    assert!(
        met >= 5,
        "the outage met the renewal and its retries: {met}"
    );

    let events = events_of(&run);
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "halted" || e["event"] == "rolling_back"),
        "{events:#?}"
    );
    for cluster in CLUSTERS {
        assert_eq!(
            world.syncs(&format!("myapp-prod-{cluster}")).await,
            1,
            "{cluster}: synced once, never rolled back"
        );
    }
    world.assert_prod_runs(NEW);
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[1]["outcome"], "succeeded");
    assert_eq!(world.lock(), None, "the lock is released");
}

/// Item 8: SIGHUP (a dropped SSH session) during wave 1 is a graceful stop, as SIGTERM is:
/// the running sync finishes, no new one starts, the run records its start and its
/// interrupted end, releases the lock and exits 130. The same command then resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_in_wave_one_records_the_interruption_and_a_rerun_resumes() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.argo.script(WAVE1_APP, Script::Hang).await;
    let first = world.spawn(&json_args(&PROMOTE));
    first
        .wait_for_event("wave 1's sync", |e| {
            e["event"] == "app_syncing" && e["cluster"] == "us-west-2"
        })
        .await;
    first.signal("HUP");
    first
        .wait_for_event("the interrupt to be seen", |e| e["event"] == "interrupting")
        .await;
    // Within the grace period, Argo CD finishes the sync that runs.
    world.argo.script(WAVE1_APP, Script::Healthy).await;
    let first = first.wait().await;
    first.expect_code(130);
    let report = first.result();
    assert_eq!(report["outcome"], "interrupted", "{report:#}");
    let states = states(&report);
    assert_eq!(states["us-west-2"], "deployed", "{report:#}");
    assert_eq!(states["us-east-1"], "not_started", "{report:#}");
    assert_eq!(states["eu-west-1"], "not_started", "{report:#}");
    for cluster in ["us-east-1", "eu-west-1"] {
        assert_eq!(world.syncs(&format!("myapp-prod-{cluster}")).await, 0);
    }
    assert_eq!(world.lock(), None, "the interrupted run released the lock");
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "its start and its end: {audit:#?}");
    assert_eq!(audit[0]["outcome"], "started");
    assert_eq!(audit[1]["outcome"], "interrupted");
    assert_eq!(audit[0]["run_id"], audit[1]["run_id"]);

    let second = world.run(&json_args(&PROMOTE)).await;
    second.expect_code(0);
    let report = second.result();
    let resumed = self::states(&report);
    // At the release, but never soaked there: soaked again, not synced again.
    assert_eq!(resumed["us-west-2"], "soaked_again", "{report:#}");
    assert_eq!(resumed["us-east-1"], "deployed", "{report:#}");
    world.assert_prod_runs(NEW);
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "wave 1 is not synced again"
    );
    let audit = world.audit();
    assert_eq!(audit.len(), 4, "{audit:#?}");
    assert_eq!(audit[3]["outcome"], "succeeded");
}

/// Item 8: `deploy promote ... 2>&1 | head -1`: once the first line is read nobody reads
/// stdout or stderr (both closed). Text mode, so progress goes to stderr all along. The run
/// neither panics (exit 101) nor leaves the lock: it promotes, records and releases as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_and_stderr_neither_panic_nor_leave_the_lock() {
    use std::io::BufRead;

    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut child = world
        .command(&PROMOTE)
        .stdout(writer.try_clone().expect("the pipe again"))
        .stderr(writer)
        .spawn()
        .expect("starting deploy");
    let status = tokio::task::spawn_blocking(move || {
        // `head -1`: one line, then the pipe's only reader goes away.
        let mut first = String::new();
        std::io::BufReader::new(reader)
            .read_line(&mut first)
            .expect("reading the first line");
        assert!(!first.is_empty(), "deploy printed nothing");
        let status = child.wait_timeout(DEADLINE).expect("waiting for deploy");
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    })
    .await
    .expect("the waiting thread")
    .expect("deploy finished within the deadline");
    assert_eq!(
        status.code(),
        Some(0),
        "no panic, no signal: the promotion ran to the end ({status:?})"
    );
    world.assert_prod_runs(NEW);
    assert_eq!(world.lock(), None, "the lock is released");
    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[1]["outcome"], "succeeded");
}

// ---------------------------------------------------------------------------------------
// Issue 11: the shared state store in S3 (moto's S3 implements conditional writes).

/// The runs of `deploy history --output json` (its `run` lines).
fn runs_of(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|v| v["type"] == "run")
        .map(|v| v["data"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_two_machines_is_the_same() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    // A laptop promotes; a CI runner (another audit directory) rolls back.
    let promoted = world.run_on("laptop", &PROMOTE).await;
    promoted.expect_code(0);
    assert!(
        !promoted.stderr.contains("local to this machine"),
        "the trail is shared: {}",
        promoted.stderr
    );
    world.assert_prod_runs(NEW);
    let rolled = world
        .run_on("ci", &["rollback", "--env", "prod", "--yes"])
        .await;
    rolled.expect_code(0);
    world.assert_prod_runs(OLD);
    assert!(
        !world.dir.path().join("laptop/audit.jsonl").exists()
            && !world.dir.path().join("ci/audit.jsonl").exists(),
        "nothing was written on either machine"
    );

    let laptop = world
        .run_on("laptop", &json_args(&["history", "--env", "prod"]))
        .await;
    laptop.expect_code(0);
    let ci = world
        .run_on("ci", &json_args(&["history", "--env", "prod"]))
        .await;
    ci.expect_code(0);
    let runs = runs_of(&laptop);
    assert_eq!(runs, runs_of(&ci), "both machines see the same history");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["kind"], "rollback", "newest first");
    assert_eq!(runs[0]["release"]["tag"], OLD);
    assert_eq!(runs[1]["kind"], "promote");
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(runs[1]["release"]["digests"], json!(world.digests));
    assert_eq!(runs[1]["actor"]["os_user"], USER);
    assert!(runs[1]["duration"].as_f64().is_some_and(|d| d > 0.0));
    assert_eq!(laptop.result()["runs"], 2);
    assert_eq!(
        laptop.result()["sources"][0]["store"],
        format!("s3://{STATE_BUCKET}/deploy")
    );
    // The text table says the same, with a limit.
    let text = world
        .run_on("ci", &["history", "--env", "prod", "--limit", "1"])
        .await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("rollback") && !text.stdout.contains("promote"),
        "{}",
        text.stdout
    );
    // The records are objects in the bucket; the lock is gone, and never was an annotation.
    let keys = deploy_aws::moto::list_keys(&world.prod_moto.endpoint, STATE_BUCKET).await;
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("deploy/prod/records/"))
            .count(),
        4,
        "{keys:?}"
    );
    assert!(
        !keys.contains(&"deploy/prod/lock.json".to_owned()),
        "{keys:?}"
    );
    assert_eq!(world.lock(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_promotions_at_once_through_the_s3_lock_one_exits_4() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    world.argo.script(WAVE1_APP, Script::Hang).await;
    let first = world.spawn(&json_args(&PROMOTE));
    let pid = first.id();
    wait_until("the first run's sync of wave 1", || async {
        world.syncs(WAVE1_APP).await > 0
    })
    .await;
    let keys = deploy_aws::moto::list_keys(&world.prod_moto.endpoint, STATE_BUCKET).await;
    assert!(
        keys.contains(&"deploy/prod/lock.json".to_owned()),
        "{keys:?}"
    );
    assert_eq!(
        world.lock(),
        None,
        "the lock is in S3, not on an Application"
    );

    let second = world.run_on("ci", &PROMOTE).await;
    second.expect_code(4);
    let said = format!("{}{}", second.stdout, second.stderr);
    assert!(
        said.contains(&format!("pid {pid}")),
        "names the holder:\n{said}"
    );
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "the second run synced nothing"
    );

    world.argo.script(WAVE1_APP, Script::Healthy).await;
    first.wait().await.expect_code(0);
    world.assert_prod_runs(NEW);
    let history = world
        .run_on("ci", &json_args(&["history", "--env", "prod"]))
        .await;
    let runs = runs_of(&history);
    assert_eq!(runs.len(), 1, "one run promoted: {runs:#?}");
    assert_eq!(runs[0]["outcome"], "succeeded");
}

// ---------------------------------------------------------------------------------------
// Issue 11: the ApplicationSet as a gate, under a controller that behaves as upstream's.

/// Makes `set` (a manifest) the owner of every prod Application, with its controller on.
fn own_prod_by(world: &World, set: Value) {
    world.argo.put_application_set(set);
    for cluster in CLUSTERS {
        world
            .argo
            .own(&format!("myapp-prod-{cluster}"), "myapp-prod");
    }
    world.argo.set_controller("myapp-prod", true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_set_without_preserved_fields_refuses_with_the_fix_and_writes_nothing() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    own_prod_by(
        &world,
        deploy_argocd::fake::application_set_without_preserved_fields(),
    );
    world.forbid_writes().await;
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["gate"]["name"], "applications", "{result:#}");
    let details: Vec<String> = result["gate"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d.as_str().expect("a line").to_owned())
        .collect();
    let text = details.join("\n");
    for want in [
        "applicationset/myapp-prod (generates myapp-prod-eu-west-1, myapp-prod-us-east-1, myapp-prod-us-west-2)",
        "deploy/release, deploy/run, deploy/promoted-by, deploy/promoted-at, deploy/soaked, deploy/lock not in spec.preservedFields.annotations",
        "deploy/lock holds the promotion lock on myapp-prod-eu-west-1",
        // The YAML and the Terraform of the fix.
        "    preservedFields:\n      annotations:\n        - \"deploy/release\"",
        "    preservedFields = {\n      annotations = [\"deploy/release\", \"deploy/run\", \"deploy/promoted-by\", \"deploy/promoted-at\", \"deploy/soaked\", \"deploy/lock\"]\n    }",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    world.verify_no_writes().await;
    world.assert_prod_runs(OLD);

    // The same in text, as a person reads it.
    let run = world.run(&PROMOTE).await;
    run.expect_code(3);
    assert!(
        run.stdout.contains("spec.preservedFields.annotations")
            && run.stdout.contains("preservedFields = {"),
        "{}",
        run.stdout
    );
    world.verify_no_writes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_rendered_application_set_a_promotion_succeeds_under_the_controller() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let rendered = world
        .run(&json_args(&["render", "applicationset", "--env", "prod"]))
        .await;
    rendered.expect_code(0);
    let mut set = rendered.result();
    set["metadata"]["namespace"] = json!("argocd");
    own_prod_by(&world, set);
    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);
    world.assert_prod_runs(NEW);
    assert!(
        world.argo.reconciles() >= 6,
        "the controller saw every write: {}",
        world.argo.reconciles()
    );
    for cluster in CLUSTERS {
        let app = world.prod_app(cluster);
        assert_eq!(
            app["metadata"]["annotations"]["deploy/release"], NEW,
            "{cluster}: the release annotation survived the controller"
        );
    }
    assert_eq!(world.lock(), None, "the lock was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_unpreserved_annotations_with_the_fix() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    // As the fake starts: the ApplicationSet preserves everything; no such finding.
    let run = world.run(&json_args(&["audit", "--env", "prod"])).await;
    let findings = run.result()["findings"].clone();
    assert!(
        !findings.to_string().contains("preservedFields"),
        "{findings:#}"
    );

    own_prod_by(
        &world,
        deploy_argocd::fake::application_set_without_preserved_fields(),
    );
    let run = world.run(&json_args(&["audit", "--env", "prod"])).await;
    run.expect_code(1);
    let findings = run.result()["findings"].clone();
    let finding = findings
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["subject"] == "applicationset/myapp-prod")
        .unwrap_or_else(|| panic!("no applicationset finding: {findings:#}"))
        .clone();
    assert_eq!(finding["severity"], "error");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("deploy/lock not in spec.preservedFields.annotations"),
        "{finding:#}"
    );
    let fix = finding["fix"].to_string();
    assert!(
        fix.contains("preservedFields:") && fix.contains("preservedFields = {"),
        "{fix}"
    );
    let run = world.run(&["audit", "--env", "prod"]).await;
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("fix for applicationset/myapp-prod (prod):"),
        "{}",
        run.stdout
    );
}

/// Issue 11: a run killed mid-wave with its state in S3 leaves its `started` record there
/// (history shows it as killed), its lock is taken over by the next run on this machine, and
/// that run resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_its_state_in_s3_then_run_again_resumes() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    world
        .argo
        .script("myapp-prod-eu-west-1", Script::Hang)
        .await;
    let first = world.spawn(&json_args(&PROMOTE));
    wait_until("the sync of wave 2", || async {
        world.syncs("myapp-prod-eu-west-1").await > 0
    })
    .await;
    let killed = first.kill();
    assert_eq!(killed.code, None, "killed by a signal: {killed:?}");
    let history = world.run(&json_args(&["history", "--env", "prod"])).await;
    history.expect_code(0);
    let runs = runs_of(&history);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        runs[0]["ended"], false,
        "the killed run has no end: {runs:#?}"
    );

    world
        .argo
        .script("myapp-prod-eu-west-1", Script::Healthy)
        .await;
    let second = world.run(&json_args(&PROMOTE)).await;
    second.expect_code(0);
    world.assert_prod_runs(NEW);
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "wave 1 is not synced again"
    );
    let runs = runs_of(&world.run(&json_args(&["history", "--env", "prod"])).await);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["outcome"], "succeeded", "newest first: {runs:#?}");
    assert_eq!(runs[1]["ended"], false);
    assert_eq!(world.lock(), None, "no annotation lock: it is in S3");
}

// ---------------------------------------------------------------------------------------
// Issue 12 item 3: sync windows, served by the fake as argocd-server serves them.

/// A deny window of the `default` project over every prod Application, active from the
/// start of the minute before now for `seconds` (a yearly schedule at that minute, UTC).
fn deny_window_since_last_minute(applications: &str, seconds: i64) -> (Value, jiff::Timestamp) {
    let now = jiff::Timestamp::now().as_second();
    let start = now - now.rem_euclid(60) - 60;
    let start = jiff::Timestamp::from_second(start).expect("a time");
    let window = json!([{
        "kind": "deny",
        "schedule": start.strftime("%-M %-H %-d %-m *").to_string(),
        "duration": format!("{seconds}s"),
        "applications": [applications],
    }]);
    (window, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_window_shows_in_plan_and_promote_exits_3_with_nothing_written() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let (windows, _) = deny_window_since_last_minute("myapp-prod-*", 2 * 3600);
    world.argo.set_sync_windows("default", windows);
    world.forbid_writes().await;

    let plan = world.run(&["plan", "--env", "prod"]).await;
    plan.expect_code(0);
    for wanted in [
        "sync windows:",
        "wave 1: could NOT sync now",
        "wave 2: could NOT sync now",
        "us-west-2 (myapp-prod-us-west-2): deny",
        "blocked by deny",
    ] {
        assert!(
            plan.stdout.contains(wanted),
            "{wanted:?} not in:\n{}",
            plan.stdout
        );
    }

    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(3);
    let result = run.result();
    assert_eq!(result["outcome"], "window_blocked", "{result:#}");
    assert_eq!(result["blocked"]["wave"], 1, "{result:#}");
    assert!(
        result["blocked"]["window"]
            .as_str()
            .is_some_and(|w| w.starts_with("deny")),
        "{result:#}"
    );
    world.verify_no_writes().await;
    world.assert_prod_runs(OLD);
    assert!(world.audit().is_empty(), "no run, no audit record");
    assert_eq!(world.lock(), None);
}

/// A window that closes mid-run: once wave 1 soaks, a deny window on wave 2's Applications
/// begins. The run halts before wave 2 without a write to it and without rolling back wave 1
/// (exit 5, the window named); when the window is gone, the same command continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_closing_mid_run_halts_before_its_wave_and_a_rerun_continues() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.set_prod_timings("3s", "1m");
    let running = world.spawn(&json_args(&PROMOTE));
    running
        .wait_for_event("the soak of wave 1", soak_started(1))
        .await;
    let (windows, _) = deny_window_since_last_minute("myapp-prod-*-1", 2 * 3600);
    world.argo.set_sync_windows("default", windows);
    let run = running.wait().await;
    run.expect_code(5);
    let result = run.result();
    assert_eq!(result["outcome"], "halted", "{result:#}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("wave 2") && message.contains("blocked by sync window deny"),
        "{result:#}"
    );
    assert_eq!(
        tag_parameter(&world.prod_app("us-west-2")),
        NEW,
        "wave 1 stays"
    );
    for app in ["myapp-prod-us-east-1", "myapp-prod-eu-west-1"] {
        assert_eq!(world.syncs(app).await, 0, "{app} was not synced");
    }
    assert!(
        !events_of(&run).iter().any(|e| e["event"] == "rolling_back"),
        "nothing rolled back"
    );

    world.argo.set_sync_windows("default", json!([]));
    let again = world.run(&json_args(&PROMOTE)).await;
    again.expect_code(0);
    world.assert_prod_runs(NEW);
    assert_eq!(
        world.syncs(WAVE1_APP).await,
        1,
        "wave 1 is not synced again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_window_wait_a_window_that_ends_soon_is_waited_out() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    // Wave 1's window ends 12 seconds from now: the gates (moto) take a few before wave 1.
    let now = jiff::Timestamp::now().as_second();
    let (_, start) = deny_window_since_last_minute(WAVE1_APP, 0);
    let seconds = now + 12 - start.as_second();
    let (windows, _) = deny_window_since_last_minute(WAVE1_APP, seconds);
    world.argo.set_sync_windows("default", windows);

    let mut args = json_args(&PROMOTE);
    args.extend(["--window-wait", "1m"]);
    let run = world.run(&args).await;
    run.expect_code(0);
    assert_eq!(run.result()["outcome"], "succeeded", "{}", run.stdout);
    let events = events_of(&run);
    let blocked = events
        .iter()
        .position(|e| e["event"] == "wave_blocked" && e["wave"] == 1)
        .unwrap_or_else(|| panic!("no wave_blocked event: {events:#?}"));
    let started = events
        .iter()
        .position(|e| e["event"] == "wave_started" && e["wave"] == 1)
        .expect("wave 1 started");
    assert!(blocked < started, "{events:#?}");
    assert_eq!(events[blocked]["application"], WAVE1_APP);
    // Not one sync was refused: each Application was synced once, after the window.
    assert_eq!(world.syncs(WAVE1_APP).await, 1);
    world.assert_prod_runs(NEW);
}

// ---------------------------------------------------------------------------------------
// Issue 12, item 5: pin what was gated.

/// With `pin = "digest"` on prod's Helm override, `deploy plan` says it pins the release's
/// digests, and `deploy promote` writes each service's digest (the one the registry holds
/// for the release) into its own parameter beside the tag; the chart renders the images by
/// digest alone, and the promotion is judged (and soaked) by those digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_pin_writes_the_gated_digests_and_promotes() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let text = std::fs::read_to_string(&world.config).expect("read deploy.toml");
    let from = "image_override = { kind = \"helm\", parameter = \"image.tag\" }\npromote_from";
    assert!(text.contains(from), "deploy.toml no longer has {from}");
    let to = "image_override = { kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", \
              digest_parameter = \"{service}.image.digest\" }\npromote_from";
    std::fs::write(&world.config, text.replacen(from, to, 1)).expect("write deploy.toml");
    for cluster in CLUSTERS {
        world.argo.set_digest_parameters(
            &format!("myapp-prod-{cluster}"),
            SERVICES
                .iter()
                .map(|s| {
                    (
                        image(PROD, cluster, "staging/", s),
                        format!("{s}.image.digest"),
                    )
                })
                .collect(),
        );
    }

    let plan = world.run(&["plan", "--env", "prod"]).await;
    plan.expect_code(0);
    let api = &world.digests["api"];
    let short = &api["sha256:".len()..][..8];
    assert!(
        plan.stdout.contains(&format!(
            "pin images to {NEW} digests (api.image.digest=sha256:{short}…, +2)"
        )),
        "{}",
        plan.stdout
    );
    let plan = world.run(&json_args(&["plan", "--env", "prod"])).await;
    let set = &plan.result()["waves"][0]["apps"][0]["action"]["set_override"];
    assert_eq!(set["parameter"], "image.tag", "{set}");
    assert_eq!(set["value"], NEW, "{set}");
    for s in SERVICES {
        assert_eq!(
            set["digests"][format!("{s}.image.digest")],
            world.digests[s],
            "{set}"
        );
    }

    let run = world.run(&json_args(&PROMOTE)).await;
    run.expect_code(0);
    assert_eq!(run.result()["outcome"], "succeeded", "{}", run.stdout);
    for cluster in CLUSTERS {
        let app = world.prod_app(cluster);
        let name = &app["metadata"]["name"];
        assert_eq!(tag_parameter(&app), NEW, "{name}");
        let parameters: BTreeMap<String, String> = app["spec"]["source"]["helm"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_owned(),
                    p["value"].as_str().expect("value").to_owned(),
                )
            })
            .collect();
        let images: Vec<&str> = app["status"]["summary"]["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i.as_str().expect("image"))
            .collect();
        let mut want = Vec::new();
        for s in SERVICES {
            let digest = &world.digests[s];
            assert_eq!(
                parameters.get(&format!("{s}.image.digest")),
                Some(digest),
                "{name}: {s}'s digest parameter"
            );
            want.push(format!("{}@{digest}", image(PROD, cluster, "staging/", s)));
        }
        assert_eq!(images, want, "{name}: the images run by digest");
        assert_eq!(app["status"]["health"]["status"], "Healthy", "{name}");
    }
    // At the release by its digests: nothing more to do.
    let again = world.run(&json_args(&PROMOTE)).await;
    again.expect_code(0);
    assert_eq!(again.result()["outcome"], "up_to_date", "{}", again.stdout);
}
