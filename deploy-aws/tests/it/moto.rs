//! The registry port against moto servers, one per account.

use std::collections::BTreeMap;

use deploy_aws::EcrRegistry;
use deploy_core::Error;
use deploy_core::config::Config;
use deploy_core::model::{Digest, RepoLocation, Tag};
use deploy_core::plan::release::MissingKind;
use deploy_core::port::Registry;
use deploy_engine::conformance::registry::{RegistryFixture, manifest, run_all};
use deploy_engine::observe::release::{check_release, newest_complete};

use deploy_aws::moto::{AwsFiles, EcrFixture, Moto};

const STAGING: &str = "111111111111";
const PROD: &str = "222222222222";

/// moto for `account`, or `None` (after saying why) when it is not installed outside CI.
#[allow(clippy::print_stderr)]
fn start(account: &str) -> Option<Moto> {
    Moto::start(account)
        .map_err(|unavailable| eprintln!("skipping: {unavailable}"))
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_moto() {
    let (Some(staging), Some(prod)) = (start(STAGING), start(PROD)) else {
        return;
    };
    let files = AwsFiles::new(
        &[("staging", &staging.endpoint), ("prod", &prod.endpoint)],
        "",
    );
    let registry = EcrRegistry::for_accounts(
        [
            (STAGING.to_owned(), Some("staging".to_owned())),
            (PROD.to_owned(), Some("prod".to_owned())),
        ],
        files.options(),
    );
    let fixture = EcrFixture::new(&[(STAGING, &staging.endpoint), (PROD, &prod.endpoint)]);
    for account in [STAGING, PROD] {
        if let Err(broken) = run_all(&registry, &fixture, account).await {
            panic!("account {account}: {broken}");
        }
    }
}

/// staging (one region) promotes to prod (three regions, another account), each reached
/// through its own `aws_profile`, as deploy.toml allows.
const CONFIG: &str = r#"
app = "myapp"
[[clusters]]
name = "us-west-2"
region = "us-west-2"
[[clusters]]
name = "us-east-1"
region = "us-east-1"
[[clusters]]
name = "eu-west-1"
region = "eu-west-1"
[[services]]
name = "logserver"
repository = "logserver"
sentinel = true
[[services]]
name = "api"
repository = "api"
[[services]]
name = "worker"
repository = "worker"
[environments.staging]
registry = { account = "111111111111", regions = ["us-west-2"], repository_prefix = "staging/", aws_profile = "staging" }
sync = "automated"
application = "myapp-staging-{cluster}"
image_override = { kind = "helm", parameter = "image.tag" }
[environments.prod]
registry = { account = "222222222222", regions = ["us-west-2", "us-east-1", "eu-west-1"], repository_prefix = "staging/", aws_profile = "prod" }
sync = "manual"
application = "myapp-prod-{cluster}"
image_override = { kind = "helm", parameter = "image.tag" }
promote_from = "staging"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_check_across_accounts_against_moto() {
    let (Some(staging), Some(prod)) = (start(STAGING), start(PROD)) else {
        return;
    };
    let files = AwsFiles::new(
        &[("staging", &staging.endpoint), ("prod", &prod.endpoint)],
        "",
    );
    let config = Config::parse("deploy.toml", CONFIG).expect("valid configuration");
    let registry =
        EcrRegistry::with_options(&config, files.options()).expect("one profile per account");
    let fixture = EcrFixture::new(&[(STAGING, &staging.endpoint), (PROD, &prod.endpoint)]);
    let (staging_env, prod_env) = (
        &config.environments["staging"],
        &config.environments["prod"],
    );
    let release: Tag = "abc1234".parse().unwrap();

    // CI pushes every image to staging, the sentinel last.
    let mut digests: BTreeMap<String, Digest> = BTreeMap::new();
    let mut services = config.services.clone();
    services.sort_by_key(|s| s.sentinel);
    for service in &services {
        let location = staging_env.location(service, "us-west-2");
        fixture.create_repository(&location, false).await;
        let digest = fixture
            .push(&location, &release, &manifest(&service.name))
            .await;
        digests.insert(service.name.clone(), digest);
    }
    // moto does not replicate: copy the manifests into prod as replication would, but
    // api has not reached us-east-1 yet and eu-west-1 has no worker repository at all.
    for region in &prod_env.registry.regions {
        for service in &config.services {
            let location: RepoLocation = prod_env.location(service, region);
            if region == "eu-west-1" && service.name == "worker" {
                continue;
            }
            fixture.create_repository(&location, false).await;
            if region == "us-east-1" && service.name == "api" {
                continue;
            }
            fixture
                .push(&location, &release, &manifest(&service.name))
                .await;
        }
    }

    let in_staging = check_release(&registry, &config, staging_env, &release)
        .await
        .unwrap();
    assert!(in_staging.is_complete(), "{in_staging:?}");
    assert_eq!(in_staging.release().unwrap().digests, digests);

    let in_prod = check_release(&registry, &config, prod_env, &release)
        .await
        .unwrap();
    let missing: Vec<(&str, &str, MissingKind)> = in_prod
        .missing
        .iter()
        .map(|m| (m.service.as_str(), m.region.as_str(), m.kind))
        .collect();
    assert_eq!(
        missing,
        [
            ("api", "us-east-1", MissingKind::Image),
            ("worker", "eu-west-1", MissingKind::Repository),
        ]
    );
    // What is there has the same bytes as staging: the digest comparison of the prod gate.
    assert!(in_prod.inconsistent.is_empty(), "{in_prod:?}");
    for (service, by_region) in &in_prod.found {
        for (region, digest) in by_region {
            assert_eq!(digest, &digests[service], "{service} in {region}");
        }
    }

    // The sentinel's tags feed the tag strategies.
    let sentinel = staging_env.location(config.sentinel(), "us-west-2");
    fixture
        .push(
            &sentinel,
            &"def5678".parse().unwrap(),
            &manifest("logserver-2"),
        )
        .await;
    let mut tags: Vec<String> = registry
        .tagged_images(&sentinel)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.tag.to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, ["abc1234", "def5678"]);
    // def5678 is newer (or ties and sorts higher) but incomplete: abc1234 is the newest
    // complete release of staging.
    let (newest, skipped) = newest_complete(&registry, &config, staging_env)
        .await
        .unwrap();
    assert_eq!(newest.map(|c| c.tag), Some(release.clone()));
    assert_eq!(
        skipped
            .iter()
            .map(|c| c.tag.to_string())
            .collect::<Vec<_>>(),
        ["def5678"]
    );

    // moto does not implement DescribeImageReplicationStatus (HTTP 500): after the
    // retries that is a transient error, not a crash (the wiremock tests cover the API).
    let status = registry.replication_status(&sentinel, &release).await;
    assert!(matches!(status, Err(Error::Transient { .. })), "{status:?}");
}
