//! The ECR wire protocol (awsJson1_1) against wiremock: what moto does not emulate
//! (replication status, pagination, throttling, server errors, malformed answers),
//! the number of calls, endpoint resolution and credential errors.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_aws::EcrRegistry;
use deploy_core::Error;
use deploy_core::config::Config;
use deploy_core::model::{RepoLocation, Tag};
use deploy_core::port::{ImageLookup, Registry, ReplicationState, ReplicationStatus};
use deploy_engine::conformance::registry::loc;
use deploy_engine::observe::release::check_release;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

use deploy_aws::moto::{AwsFiles, sha256};

const ACCOUNT: &str = "111111111111";
const JSON: &str = "application/x-amz-json-1.1";

/// A mock of one ECR operation: `POST /` with its `X-Amz-Target`.
fn operation(name: &str) -> MockBuilder {
    Mock::given(method("POST")).and(path("/")).and(header(
        "x-amz-target",
        format!("AmazonEC2ContainerRegistry_V20150921.{name}").as_str(),
    ))
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_string(), JSON)
}

fn aws_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        json!({"__type": code, "message": message}).to_string(),
        JSON,
    )
}

fn tag(s: &str) -> Tag {
    s.parse().expect("valid tag")
}

fn detail(repository: &str, seed: &str, tags: &[&str], pushed_at: f64) -> Value {
    json!({
        "registryId": ACCOUNT,
        "repositoryName": repository,
        "imageDigest": sha256(seed).as_str(),
        "imageTags": tags,
        "imageSizeInBytes": 1234,
        "imagePushedAt": pushed_at,
        "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
    })
}

/// A wiremock server and a registry reaching `ACCOUNT` through a profile pointing at it.
struct Wire {
    server: MockServer,
    registry: EcrRegistry,
    _files: AwsFiles,
}

impl Wire {
    async fn start() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(tune: impl FnOnce(&mut deploy_aws::EcrOptions)) -> Self {
        let server = MockServer::start().await;
        let files = AwsFiles::new(&[("mock", &server.uri())], "");
        let mut options = files.options();
        tune(&mut options);
        let registry =
            EcrRegistry::for_accounts([(ACCOUNT.to_owned(), Some("mock".to_owned()))], options);
        Self {
            server,
            registry,
            _files: files,
        }
    }
}

fn repo(region: &str, repository: &str) -> RepoLocation {
    loc(ACCOUNT, region, repository)
}

#[tokio::test]
async fn image_found_sends_one_tag_lookup_with_the_registry_id() {
    let wire = Wire::start().await;
    operation("DescribeImages")
        .and(body_partial_json(json!({
            "registryId": ACCOUNT,
            "repositoryName": "staging/api",
            "imageIds": [{"imageTag": "abc1234"}],
        })))
        .respond_with(ok(json!({"imageDetails": [
            detail("staging/api", "api", &["abc1234", "latest"], 1_499_287_667.25)
        ]})))
        .expect(1)
        .mount(&wire.server)
        .await;
    let got = wire
        .registry
        .image(&repo("us-west-2", "staging/api"), &tag("abc1234"))
        .await
        .unwrap();
    let ImageLookup::Found(image) = got else {
        panic!("expected Found, got {got:?}");
    };
    assert_eq!(image.digest, sha256("api"));
    assert_eq!(image.tags, vec![tag("abc1234"), tag("latest")]);
    assert_eq!(image.pushed_at.as_millisecond(), 1_499_287_667_250);
}

#[tokio::test]
async fn replication_status_in_each_state() {
    let wire = Wire::start().await;
    operation("DescribeImageReplicationStatus")
        .and(body_partial_json(json!({
            "registryId": ACCOUNT,
            "repositoryName": "staging/api",
            "imageId": {"imageTag": "abc1234"},
        })))
        .respond_with(ok(json!({
            "repositoryName": "staging/api",
            "imageId": {"imageTag": "abc1234", "imageDigest": sha256("api").as_str()},
            "replicationStatuses": [
                {"region": "us-west-2", "registryId": "222222222222", "status": "COMPLETE"},
                {"region": "us-east-1", "registryId": "222222222222", "status": "IN_PROGRESS"},
                {"region": "eu-west-1", "registryId": "222222222222", "status": "FAILED",
                 "failureCode": "KMS_ACCESS_DENIED"},
            ],
        })))
        .expect(1)
        .mount(&wire.server)
        .await;
    let got = wire
        .registry
        .replication_status(&repo("us-west-2", "staging/api"), &tag("abc1234"))
        .await
        .unwrap();
    let status = |region: &str, state| ReplicationStatus {
        account: "222222222222".into(),
        region: region.into(),
        state,
    };
    assert_eq!(
        got,
        vec![
            status("us-west-2", ReplicationState::Complete),
            status("us-east-1", ReplicationState::InProgress),
            status(
                "eu-west-1",
                ReplicationState::Failed {
                    reason: "KMS_ACCESS_DENIED".into()
                }
            ),
        ]
    );
}

#[tokio::test]
async fn replication_status_of_a_missing_image_is_not_found() {
    let wire = Wire::start().await;
    operation("DescribeImageReplicationStatus")
        .respond_with(aws_error(
            400,
            "ImageNotFoundException",
            "The image with imageId {imageDigest:'null', imageTag:'nope'} does not exist",
        ))
        .expect(1)
        .mount(&wire.server)
        .await;
    let got = wire
        .registry
        .replication_status(&repo("us-west-2", "staging/api"), &tag("nope"))
        .await;
    assert!(matches!(&got, Err(e) if e.is_not_found()), "{got:?}");
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let wire = Wire::start().await;
    operation("DescribeImages")
        .respond_with(aws_error(400, "ThrottlingException", "Rate exceeded"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&wire.server)
        .await;
    operation("DescribeImages")
        .respond_with(ok(
            json!({"imageDetails": [detail("api", "api", &["v1"], 1.0)]}),
        ))
        .expect(1)
        .mount(&wire.server)
        .await;
    let got = wire
        .registry
        .image(&repo("us-west-2", "api"), &tag("v1"))
        .await;
    assert!(matches!(got, Ok(ImageLookup::Found(_))), "{got:?}");
}

#[tokio::test]
async fn throttling_after_every_attempt_is_transient() {
    let wire = Wire::start().await;
    operation("DescribeImages")
        .respond_with(aws_error(400, "ThrottlingException", "Rate exceeded"))
        .expect(3)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .image(&repo("eu-west-1", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("throttled")
            && text.contains("after 3 attempts")
            && text.contains("account 111111111111 in eu-west-1 (profile mock)"),
        "{text}"
    );
}

#[tokio::test]
async fn tagged_images_follow_three_pages() {
    let wire = Wire::start().await;
    let request = json!({
        "registryId": ACCOUNT,
        "repositoryName": "staging/logserver",
        "filter": {"tagStatus": "TAGGED"},
        "maxResults": 1000,
    });
    let page = |token: Option<&str>| {
        let mut body = request.clone();
        if let Some(t) = token {
            body["nextToken"] = json!(t);
        }
        body
    };
    operation("DescribeImages")
        .and(body_partial_json(page(None)))
        .respond_with(ok(json!({
            "imageDetails": [
                detail("staging/logserver", "a", &["aaaaaaa"], 10.0),
                detail("staging/logserver", "b", &["bbbbbbb", "latest"], 20.0),
            ],
            "nextToken": "page-2",
        })))
        // The first page matches every request of the repository; the later pages'
        // mocks, which also require their token, take precedence.
        .with_priority(10)
        .expect(1)
        .mount(&wire.server)
        .await;
    operation("DescribeImages")
        .and(body_partial_json(page(Some("page-2"))))
        .respond_with(ok(json!({
            "imageDetails": [detail("staging/logserver", "c", &["ccccccc"], 30.0)],
            "nextToken": "page-3",
        })))
        .with_priority(1)
        .expect(1)
        .mount(&wire.server)
        .await;
    operation("DescribeImages")
        .and(body_partial_json(page(Some("page-3"))))
        .respond_with(ok(json!({
            "imageDetails": [detail("staging/logserver", "d", &["ddddddd"], 40.0)],
        })))
        .with_priority(1)
        .expect(1)
        .mount(&wire.server)
        .await;
    let mut got: Vec<(String, String, i64)> = wire
        .registry
        .tagged_images(&repo("us-west-2", "staging/logserver"))
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.tag.to_string(),
                t.digest.to_string(),
                t.pushed_at.as_second(),
            )
        })
        .collect();
    got.sort();
    let want = |t: &str, seed: &str, at| (t.to_owned(), sha256(seed).to_string(), at);
    assert_eq!(
        got,
        vec![
            want("aaaaaaa", "a", 10),
            want("bbbbbbb", "b", 20),
            want("ccccccc", "c", 30),
            want("ddddddd", "d", 40),
            want("latest", "b", 20),
        ]
    );
}

#[tokio::test]
async fn server_error_is_retried() {
    let wire = Wire::start().await;
    operation("DescribeRepositories")
        .respond_with(
            ResponseTemplate::new(500).set_body_string("<html>Internal Server Error</html>"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&wire.server)
        .await;
    operation("DescribeRepositories")
        .and(body_partial_json(json!({
            "registryId": ACCOUNT,
            "repositoryNames": ["prod/api"],
        })))
        .respond_with(ok(json!({"repositories": [{
            "registryId": ACCOUNT,
            "repositoryName": "prod/api",
            "imageTagMutability": "IMMUTABLE",
        }]})))
        .expect(1)
        .mount(&wire.server)
        .await;
    let got = wire
        .registry
        .repository(&repo("us-east-1", "prod/api"))
        .await
        .unwrap();
    assert!(!got.tag_mutable);
}

#[tokio::test]
async fn server_error_on_every_attempt_is_transient() {
    // What moto answers to DescribeImageReplicationStatus, which it does not implement.
    let wire = Wire::start().await;
    operation("DescribeImageReplicationStatus")
        .respond_with(
            ResponseTemplate::new(500).set_body_string("<html>Internal Server Error</html>"),
        )
        .expect(3)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .replication_status(&repo("us-west-2", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn malformed_body_is_invalid_and_not_retried() {
    let wire = Wire::start().await;
    operation("DescribeImages")
        .respond_with(ResponseTemplate::new(200).set_body_raw("{\"imageDetails\": [{", JSON))
        .expect(1)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .image(&repo("us-west-2", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot be read"), "{err}");
}

#[tokio::test]
async fn invalid_digest_in_an_answer_is_invalid() {
    let wire = Wire::start().await;
    let mut bad = detail("api", "api", &["v1"], 1.0);
    bad["imageDigest"] = json!("sha256:not-hex");
    operation("DescribeImages")
        .respond_with(ok(json!({"imageDetails": [bad]})))
        .expect(1)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .image(&repo("us-west-2", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn access_denied_names_the_missing_permission() {
    let wire = Wire::start().await;
    operation("DescribeImages")
        .respond_with(aws_error(
            400,
            "AccessDeniedException",
            "User: arn:aws:sts::111111111111:assumed-role/ci/x is not authorized to perform: ecr:DescribeImages",
        ))
        .expect(1)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .image(&repo("us-west-2", "staging/api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err:?}");
    assert!(
        err.to_string().contains(
            "grant ecr:DescribeImages on arn:aws:ecr:us-west-2:111111111111:repository/staging/api"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn replication_rules_come_from_describe_registry() {
    let wire = Wire::start().await;
    operation("DescribeRegistry")
        .respond_with(ok(json!({
            "registryId": ACCOUNT,
            "replicationConfiguration": {"rules": [
                {"destinations": [{"region": "eu-west-1", "registryId": "222222222222"}],
                 "repositoryFilters": [{"filter": "staging/", "filterType": "PREFIX_MATCH"}]},
                {"destinations": [{"region": "us-east-1", "registryId": "222222222222"}]},
            ]},
        })))
        .expect(1)
        .mount(&wire.server)
        .await;
    let rules = wire
        .registry
        .replication_rules(ACCOUNT, "us-west-2")
        .await
        .unwrap();
    assert_eq!(rules.len(), 2);
    assert!(rules[0].covers("staging/api", "222222222222", "eu-west-1"));
    assert!(!rules[0].covers("debug/api", "222222222222", "eu-west-1"));
    assert!(rules[1].covers("anything", "222222222222", "us-east-1"));
}

#[tokio::test]
async fn replication_rules_of_another_account_are_refused() {
    let wire = Wire::start().await;
    operation("DescribeRegistry")
        .respond_with(ok(
            json!({"registryId": "999999999999", "replicationConfiguration": {"rules": []}}),
        ))
        .expect(1)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .replication_rules(ACCOUNT, "us-west-2")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err:?}");
    assert!(
        err.to_string().contains("belong to account 999999999999"),
        "{err}"
    );
}

/// Answers DescribeImages with an image of the requested repository and tag.
struct EchoImage;

impl Respond for EchoImage {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).expect("JSON request");
        let repository = body["repositoryName"].as_str().expect("repositoryName");
        let tag = body["imageIds"][0]["imageTag"].as_str().expect("imageTag");
        ok(json!({"imageDetails": [detail(repository, repository, &[tag], 1.0)]}))
    }
}

/// The region a request was signed for (SigV4 credential scope).
fn signed_region(request: &Request) -> String {
    let auth = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("signed request");
    let scope = auth
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("credential scope");
    scope.split('/').nth(2).expect("region in scope").to_owned()
}

/// A configuration with `services` and one environment, `prod`, in `regions`.
fn config(services: &[&str], regions: &[&str]) -> Config {
    let mut text = String::from("app = \"myapp\"\n");
    for region in regions {
        text.push_str(&format!(
            "[[clusters]]\nname = \"{region}\"\nregion = \"{region}\"\n"
        ));
    }
    for (i, service) in services.iter().enumerate() {
        text.push_str(&format!(
            "[[services]]\nname = \"{service}\"\nrepository = \"{service}\"\nsentinel = {}\n",
            i == 0
        ));
    }
    let regions: Vec<String> = regions.iter().map(|r| format!("{r:?}")).collect();
    text.push_str(&format!(
        "[environments.prod]\nregistry = {{ account = \"{ACCOUNT}\", regions = [{}], repository_prefix = \"prod/\", aws_profile = \"mock\" }}\n\
         sync = \"manual\"\napplication = \"myapp-prod-{{cluster}}\"\n\
         image_override = {{ kind = \"helm\", parameter = \"image.tag\" }}\n",
        regions.join(", ")
    ));
    Config::parse("deploy.toml", &text).expect("valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_check_costs_one_call_per_service_and_region() {
    const SERVICES: [&str; 5] = ["logserver", "api", "worker", "billing", "search"];
    const REGIONS: [&str; 3] = ["us-west-2", "us-east-1", "eu-west-1"];
    let wire = Wire::start().await;
    operation("DescribeImages")
        .respond_with(EchoImage)
        .expect((SERVICES.len() * REGIONS.len()) as u64)
        .mount(&wire.server)
        .await;
    let config = config(&SERVICES, &REGIONS);
    let prod = &config.environments["prod"];
    let check = check_release(&wire.registry, &config, prod, &tag("abc1234"))
        .await
        .unwrap();
    assert!(check.is_complete(), "{check:?}");
    let requests = wire.server.received_requests().await.expect("recording");
    let asked: BTreeSet<(String, String)> = requests
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["registryId"], ACCOUNT);
            (
                signed_region(r),
                body["repositoryName"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = REGIONS
        .iter()
        .flat_map(|r| {
            SERVICES
                .iter()
                .map(move |s| (r.to_string(), format!("prod/{s}")))
        })
        .collect();
    assert_eq!(
        requests.len(),
        SERVICES.len() * REGIONS.len(),
        "one call per service and region"
    );
    assert_eq!(asked, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_region_are_bounded() {
    const LATENCY: Duration = Duration::from_millis(100);
    let wire = Wire::with(|o| o.concurrency_per_region = 1).await;
    operation("DescribeImages")
        .respond_with(
            ok(json!({"imageDetails": [detail("api", "api", &["v1"], 1.0)]})).set_delay(LATENCY),
        )
        .expect(4)
        .mount(&wire.server)
        .await;
    let location = repo("us-west-2", "api");
    let v1 = tag("v1");
    let started = Instant::now();
    futures::future::try_join_all((0..4).map(|_| wire.registry.image(&location, &v1)))
        .await
        .unwrap();
    // With one permit per region the four calls run one after another.
    assert!(started.elapsed() >= LATENCY * 4, "{:?}", started.elapsed());
}

#[tokio::test]
async fn attempt_timeout_is_transient() {
    let wire = Wire::with(|o| {
        o.attempt_timeout = Duration::from_millis(100);
        o.max_attempts = 2;
    })
    .await;
    operation("DescribeImages")
        .respond_with(ok(json!({"imageDetails": []})).set_delay(Duration::from_secs(5)))
        .expect(2)
        .mount(&wire.server)
        .await;
    let err = wire
        .registry
        .image(&repo("us-west-2", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn unknown_profile_says_so() {
    let files = AwsFiles::new(&[("other", "http://127.0.0.1:9")], "");
    let registry = EcrRegistry::for_accounts(
        [(ACCOUNT.to_owned(), Some("nope".to_owned()))],
        files.options(),
    );
    let err = registry
        .image(&repo("us-west-2", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("AWS profile nope is not defined in the AWS config files"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_sso_session_says_to_log_in() {
    let files = AwsFiles::new(
        &[],
        "[profile sso]\nsso_session = deploy-aws-test-session\nsso_account_id = 111111111111\n\
         sso_role_name = ReadOnly\nregion = us-west-2\nendpoint_url = http://127.0.0.1:9\n\n\
         [sso-session deploy-aws-test-session]\nsso_start_url = https://example.awsapps.com/start\n\
         sso_region = us-east-1\n",
    );
    let registry = EcrRegistry::for_accounts(
        [(ACCOUNT.to_owned(), Some("sso".to_owned()))],
        files.options(),
    );
    let err = registry
        .image(&repo("us-west-2", "api"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("run `aws sso login --profile sso`"),
        "{err}"
    );
}

// ------------------------------------------------ environment variables, in a child process
//
// aws-config reads `AWS_ENDPOINT_URL*` and credentials from the process environment, and
// changing the environment of this multi-threaded test process is unsound, so these
// tests run `probe` in a child process with the variables set.

const PROBE_EXPECT: &str = "DEPLOY_AWS_PROBE_EXPECT";

/// Runs in a child process: looks up `api:v1` and checks the outcome's debug text
/// contains `$DEPLOY_AWS_PROBE_EXPECT`.
#[tokio::test]
#[ignore = "run in a child process by the environment tests"]
async fn probe() {
    let expect = std::env::var(PROBE_EXPECT).expect("run by the environment tests");
    let mut options = deploy_aws::moto::fast_options();
    options.max_attempts = 1;
    let registry = EcrRegistry::for_accounts([(ACCOUNT.to_owned(), None)], options);
    let got = registry.image(&repo("us-west-2", "api"), &tag("v1")).await;
    let text = match &got {
        Ok(found) => format!("{found:?}"),
        Err(e) => e.to_string(),
    };
    assert!(text.contains(&expect), "{text:?} lacks {expect:?}");
}

/// Runs `probe` with a clean AWS environment plus `vars`; fails unless it passes.
async fn run_probe(expect: &str, vars: &[(&str, &str)]) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command.args([
        "wire::probe",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    // Start from no AWS settings at all (keeping the CA bundle), then add `vars`.
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") && name != "AWS_CA_BUNDLE" {
            command.env_remove(&name);
        }
    }
    command
        .env(PROBE_EXPECT, expect)
        .env("AWS_CONFIG_FILE", "/nonexistent/deploy-aws-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/deploy-aws-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-west-2");
    command.envs(vars.iter().copied());
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .expect("run the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const STATIC_CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDPROBE"),
    ("AWS_SECRET_ACCESS_KEY", "secret"),
];

async fn image_server() -> MockServer {
    let server = MockServer::start().await;
    operation("DescribeImages")
        .respond_with(ok(
            json!({"imageDetails": [detail("api", "api", &["v1"], 1.0)]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn endpoint_from_aws_endpoint_url_ecr_wins_over_aws_endpoint_url() {
    let server = image_server().await;
    let uri = server.uri();
    let mut vars = STATIC_CREDENTIALS.to_vec();
    vars.push(("AWS_ENDPOINT_URL_ECR", &uri));
    vars.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:9"));
    run_probe(sha256("api").as_str(), &vars).await;
}

#[tokio::test]
async fn endpoint_from_aws_endpoint_url() {
    let server = image_server().await;
    let uri = server.uri();
    let mut vars = STATIC_CREDENTIALS.to_vec();
    vars.push(("AWS_ENDPOINT_URL", &uri));
    run_probe(sha256("api").as_str(), &vars).await;
}

#[tokio::test]
async fn no_credentials_says_how_to_configure_them() {
    let server = MockServer::start().await;
    operation("DescribeImages")
        .respond_with(ok(json!({"imageDetails": []})))
        .expect(0)
        .mount(&server)
        .await;
    let uri = server.uri();
    run_probe(
        "configure AWS credentials (aws configure / aws sso login / AWS_PROFILE)",
        &[("AWS_ENDPOINT_URL_ECR", &uri)],
    )
    .await;
}

/// Answers DescribeImages with one image per page, for `pages` pages.
struct Pages {
    served: std::sync::atomic::AtomicU32,
    pages: u32,
}

impl Respond for Pages {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut body = json!({
            "imageDetails": [detail("staging/logserver", &n.to_string(), &[&format!("t{n}")], 10.0)],
        });
        if n + 1 < self.pages {
            body["nextToken"] = json!(format!("page-{}", n + 1));
        }
        ok(body)
    }
}

#[tokio::test]
async fn the_rate_bound_paces_every_request_next_pages_included() {
    let wire = Wire::with(|o| o.requests_per_second = std::num::NonZeroU32::new(4)).await;
    operation("DescribeImages")
        .respond_with(Pages {
            served: Default::default(),
            pages: 8,
        })
        .expect(8)
        .mount(&wire.server)
        .await;
    let started = Instant::now();
    let images = wire
        .registry
        .tagged_images(&repo("us-west-2", "staging/logserver"))
        .await
        .unwrap();
    assert_eq!(images.len(), 8);
    // A burst of 4, then one request every 250 ms: the last page waits at least 1 s. (A lower
    // bound: a slow machine only makes it longer.)
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "8 pages in {took:?}");
}
