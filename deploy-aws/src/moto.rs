//! Test support, not for production use: moto servers (one per AWS account) started and
//! stopped by tests, AWS config and credentials files whose profiles point at them, and
//! [`EcrFixture`], which seeds ECR state through plain aws-sdk-ecr clients, and
//! [`create_bucket`] for the S3 state store.
//!
//! Compiled only with the `moto` feature, so that every crate's tests share this one
//! harness (deploy-aws's own tests enable it through a dev-dependency on itself):
//!
//! ```toml
//! [dev-dependencies]
//! deploy-aws = { workspace = true, features = ["moto"] }
//! ```
//!
//! moto is `pip install 'moto[server]'`; [`Moto::start`] runs `moto_server` (or
//! `python3 -m moto.server`). Where it is missing the caller skips its test, except under
//! `CI=true`, where a missing moto fails it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::EcrOptions;
use async_trait::async_trait;
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecr::types::{
    ImageIdentifier, ImageTagMutability, ReplicationConfiguration, ReplicationDestination,
    ReplicationRule as EcrRule, RepositoryFilter, RepositoryFilterType,
};
use deploy_core::model::{Digest, RepoLocation, Tag};
use deploy_core::port::ReplicationRule;
use deploy_engine::conformance::registry::RegistryFixture;
use sha2::{Digest as _, Sha256};

/// A `moto_server` process for one account, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The request lines of moto's access log, as its stderr gives them.
    log: std::sync::Mutex<(mpsc::Receiver<String>, Vec<String>)>,
}

impl Moto {
    /// Starts moto for `account` on a free loopback port and waits until it listens.
    ///
    /// [`Unavailable`] when moto is not installed and `CI` is not `true` (the caller skips
    /// its test and says why); under `CI=true` a missing moto panics, failing the test.
    pub fn start(account: &str) -> Result<Moto, Unavailable> {
        let candidates: [(&str, &[&str]); 2] = [
            ("moto_server", &["-H", "127.0.0.1", "-p", "0"]),
            (
                "python3",
                &["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            ),
        ];
        let mut tried = Vec::new();
        for (program, args) in candidates {
            let spawned = Command::new(program)
                .args(args)
                .env("MOTO_ACCOUNT_ID", account)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    tried.push(format!("{program}: {e}"));
                    continue;
                }
            };
            // werkzeug prints " * Running on http://127.0.0.1:PORT" once the socket is
            // bound; a thread reads it (and keeps draining stderr so moto never blocks).
            let stderr = child.stderr.take().expect("piped stderr");
            let (tx, rx) = mpsc::channel();
            let (log_tx, log_rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                let mut seen = String::new();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.split("Running on ").nth(1) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Ok(url.trim().to_owned()));
                        }
                    } else if tx.is_some() {
                        seen.push_str(&line);
                        seen.push('\n');
                    } else if let Some(request) = line.split('"').nth(1) {
                        // werkzeug's access log: `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -`.
                        let _ = log_tx.send(request.to_owned());
                    }
                }
                if let Some(tx) = tx {
                    let _ = tx.send(Err(seen));
                }
            });
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(endpoint)) => {
                    return Ok(Moto {
                        child,
                        endpoint,
                        log: std::sync::Mutex::new((log_rx, Vec::new())),
                    });
                }
                Ok(Err(output)) => tried.push(format!("{program}: exited: {}", output.trim())),
                Err(e) => tried.push(format!("{program}: no answer within 60 s ({e})")),
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let message = format!(
            "moto is not available ({}); install it with: pip install 'moto[server]'",
            tried.join("; ")
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        Err(Unavailable(message))
    }
}

impl Moto {
    /// Every request moto has answered so far, as its access log gives it
    /// (`GET /bucket/key HTTP/1.1`), oldest first: what a test counts to measure the cost of
    /// a command. A marker request of its own (left out) makes sure every earlier line was
    /// read.
    pub async fn requests(&self) -> Vec<String> {
        static MARKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mark = format!(
            "deploy-log-mark-{}",
            MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        // A bucket that does not exist: moto answers 404 and logs the line.
        let _ = s3_client(&self.endpoint)
            .head_bucket()
            .bucket(&mark)
            .send()
            .await;
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (rx, seen) = &mut *log;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("moto logs the marker request");
            if line.contains(&mark) {
                break;
            }
            seen.push(line);
        }
        seen.clone()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto could not be started; the message says what was tried and how to install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// An AWS config and credentials file pair in a temporary directory.
pub struct AwsFiles {
    _dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The credentials file.
    pub credentials: PathBuf,
}

impl AwsFiles {
    /// Profiles `(name, endpoint_url)` with region us-west-2 and dummy static credentials,
    /// plus any extra config text.
    pub fn new(profiles: &[(&str, &str)], extra_config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = String::new();
        let mut credentials = String::new();
        for (name, endpoint) in profiles {
            config.push_str(&format!(
                "[profile {name}]\nregion = us-west-2\nendpoint_url = {endpoint}\n\n"
            ));
            credentials.push_str(&format!(
                "[{name}]\naws_access_key_id = AKIDTEST{name}\naws_secret_access_key = secret\n\n"
            ));
        }
        config.push_str(extra_config);
        let files = Self {
            config: dir.path().join("config"),
            credentials: dir.path().join("credentials"),
            _dir: dir,
        };
        std::fs::write(&files.config, config).expect("write config");
        std::fs::write(&files.credentials, credentials).expect("write credentials");
        files
    }

    /// Options reading these files, with fast retries for tests.
    pub fn options(&self) -> EcrOptions {
        let mut options = fast_options();
        options.config_file = Some(self.config.clone());
        options.credentials_file = Some(self.credentials.clone());
        options
    }
}

/// Default options with tiny backoffs and short timeouts.
pub fn fast_options() -> EcrOptions {
    EcrOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(30),
        ..EcrOptions::default()
    }
}

/// Creates `bucket` in moto at `endpoint` (region us-west-2), through a plain aws-sdk-s3
/// client independent of the code under test.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    s3_client(endpoint)
        .create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
}

/// Every key in `bucket` of moto at `endpoint`, for tests to look at the layout.
pub async fn list_keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let out = s3_client(endpoint)
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {e:?}"));
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// Writes `body` at `key` in `bucket` unconditionally, through a plain aws-sdk-s3 client
/// independent of the code under test: another machine's record, or a damaged one.
pub async fn put_object(endpoint: &str, bucket: &str, key: &str, body: Vec<u8>) {
    s3_client(endpoint)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {bucket}/{key}: {e:?}"));
}

/// Deletes `key` from `bucket` of moto at `endpoint`, as a person with `aws s3 rm` would.
pub async fn delete_key(endpoint: &str, bucket: &str, key: &str) {
    s3_client(endpoint)
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteObject {bucket}/{key}: {e:?}"));
}

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-west-2"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDFIXTURE",
            "secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// `sha256:<hex>` of `text`.
pub fn sha256(text: &str) -> Digest {
    let hex: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Digest::new(format!("sha256:{hex}")).expect("valid digest")
}

/// Seeds moto through plain aws-sdk-ecr clients, independent of the code under test.
pub struct EcrFixture {
    /// Account → moto endpoint.
    endpoints: Vec<(String, String)>,
}

impl EcrFixture {
    /// A fixture for `(account, endpoint)` pairs.
    pub fn new(endpoints: &[(&str, &str)]) -> Self {
        Self {
            endpoints: endpoints
                .iter()
                .map(|(a, e)| ((*a).to_owned(), (*e).to_owned()))
                .collect(),
        }
    }

    /// A client for `account` in `region`.
    pub fn client(&self, account: &str, region: &str) -> aws_sdk_ecr::Client {
        let endpoint = self
            .endpoints
            .iter()
            .find(|(a, _)| a == account)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no moto server for account {account}"));
        let config = aws_sdk_ecr::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(Credentials::new(
                "AKIDFIXTURE",
                "secret",
                None,
                None,
                "test",
            ))
            .endpoint_url(endpoint)
            .build();
        aws_sdk_ecr::Client::from_conf(config)
    }
}

impl EcrFixture {
    /// Deletes `tag` from `repo` (BatchDeleteImage), as a cleanup policy or a person would.
    pub async fn delete_image(&self, repo: &RepoLocation, tag: &Tag) {
        let out = self
            .client(&repo.account, &repo.region)
            .batch_delete_image()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .image_ids(ImageIdentifier::builder().image_tag(tag.as_str()).build())
            .send()
            .await
            .unwrap_or_else(|e| panic!("BatchDeleteImage {repo}:{tag}: {e:?}"));
        assert!(
            out.failures().is_empty(),
            "BatchDeleteImage {repo}:{tag}: {:?}",
            out.failures()
        );
    }

    /// Deletes `repo` with every image in it (DeleteRepository with `force`).
    pub async fn delete_repository(&self, repo: &RepoLocation) {
        self.client(&repo.account, &repo.region)
            .delete_repository()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .force(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DeleteRepository {repo}: {e:?}"));
    }
}

#[async_trait]
impl RegistryFixture for EcrFixture {
    async fn create_repository(&self, repo: &RepoLocation, tag_mutable: bool) {
        let mutability = if tag_mutable {
            ImageTagMutability::Mutable
        } else {
            ImageTagMutability::Immutable
        };
        let result = self
            .client(&repo.account, &repo.region)
            .create_repository()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .image_tag_mutability(mutability)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_repository_already_exists_exception()) => {}
            Err(e) => panic!("CreateRepository {repo}: {e:?}"),
        }
    }

    async fn push(&self, repo: &RepoLocation, tag: &Tag, manifest: &str) -> Digest {
        // moto derives digests from the layer digests, not from the manifest; real ECR
        // uses sha256 of the manifest, so pass that and check moto kept it.
        let digest = sha256(manifest);
        let out = self
            .client(&repo.account, &repo.region)
            .put_image()
            .registry_id(&repo.account)
            .repository_name(&repo.repository)
            .image_manifest(manifest)
            .image_tag(tag.as_str())
            .image_digest(digest.as_str())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutImage {repo}:{tag}: {e:?}"));
        let got = out
            .image()
            .and_then(|i| i.image_id())
            .and_then(|i| i.image_digest())
            .expect("PutImage returns the digest");
        assert_eq!(got, digest.as_str(), "moto must keep the manifest digest");
        digest
    }

    async fn put_replication_rules(&self, account: &str, region: &str, rules: &[ReplicationRule]) {
        let rules = rules
            .iter()
            .map(|r| {
                EcrRule::builder()
                    .set_destinations(Some(
                        r.destinations
                            .iter()
                            .map(|(a, reg)| {
                                ReplicationDestination::builder()
                                    .registry_id(a)
                                    .region(reg)
                                    .build()
                                    .expect("destination")
                            })
                            .collect(),
                    ))
                    .set_repository_filters(Some(
                        r.repository_prefixes
                            .iter()
                            .map(|p| {
                                RepositoryFilter::builder()
                                    .filter(p)
                                    .filter_type(RepositoryFilterType::PrefixMatch)
                                    .build()
                                    .expect("filter")
                            })
                            .collect(),
                    ))
                    .build()
                    .expect("rule")
            })
            .collect();
        self.client(account, region)
            .put_replication_configuration()
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .expect("configuration"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutReplicationConfiguration {account} {region}: {e:?}"));
    }
}
