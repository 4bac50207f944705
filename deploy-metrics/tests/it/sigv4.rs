//! SigV4 signing of Amazon Managed Prometheus queries, checked against wiremock: the
//! `aps` service, the region, the signed headers, credentials from a test profile.

use std::path::{Path, PathBuf};

use deploy_aws::moto::AwsFiles;
use deploy_core::config::MetricSource;
use deploy_core::port::Metrics;
use deploy_metrics::{SourceOptions, Sources};
use wiremock::matchers::{header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ANSWER: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.01"]}]}}"#;

fn sources(files: &AwsFiles) -> Sources {
    let mut options = SourceOptions::default();
    options.config_file = Some(files.config.clone());
    options.credentials_file = Some(files.credentials.clone());
    Sources::new(options).expect("sources")
}

/// The headers of the one request `server` received.
async fn the_request(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests.remove(0)
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ascii")
}

#[tokio::test]
async fn amp_queries_are_signed_for_aps_in_the_region_with_the_profile() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/workspaces/ws-1/api/v1/query"))
        .and(header_exists("authorization"))
        .and(header_exists("x-amz-date"))
        .respond_with(ResponseTemplate::new(200).set_body_string(ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let files = AwsFiles::new(&[("amp", "http://127.0.0.1:9")], "");
    let source = MetricSource::Prometheus {
        url: format!("{}/workspaces/ws-1", server.uri()),
        sigv4: true,
        region: Some("eu-west-1".to_owned()),
        aws_profile: Some("amp".to_owned()),
    };

    let got = sources(&files)
        .measure(&source, "sum(rate(http_requests_total[2m]))")
        .await
        .expect("signed query");
    assert_eq!(got, vec![0.01]);

    let request = the_request(&server).await;
    let authorization = header(&request, "authorization");
    let date = header(&request, "x-amz-date");
    // AWS4-HMAC-SHA256 Credential=AKIDTESTamp/20261201/eu-west-1/aps/aws4_request,
    // SignedHeaders=content-type;host;x-amz-date, Signature=<64 hex>
    let scope = format!(
        "Credential=AKIDTESTamp/{}/eu-west-1/aps/aws4_request",
        &date[..8]
    );
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 "),
        "{authorization}"
    );
    assert!(authorization.contains(&scope), "{authorization}");
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-date,"),
        "{authorization}"
    );
    let signature = authorization
        .split("Signature=")
        .nth(1)
        .expect("a signature");
    assert!(
        signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()),
        "{authorization}"
    );
    assert!(request.headers.get("x-amz-security-token").is_none());
    assert_eq!(
        signature,
        expected_signature(&request, "secret", "eu-west-1")
    );
}

/// The SigV4 signature of `request` (signed headers content-type, host, x-amz-date), computed
/// from the SigV4 specification with sha2 alone, independently of aws-sigv4.
fn expected_signature(request: &wiremock::Request, secret: &str, region: &str) -> String {
    use sha2::{Digest, Sha256};
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }
    let date = header(request, "x-amz-date");
    let canonical = format!(
        "POST\n{}\n\ncontent-type:{}\nhost:{}\nx-amz-date:{date}\n\ncontent-type;host;x-amz-date\n{}",
        request.url.path(),
        header(request, "content-type"),
        header(request, "host"),
        hex(&Sha256::digest(&request.body)),
    );
    let scope = format!("{}/{region}/aps/aws4_request", &date[..8]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [&date[..8], region, "aps", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, to_sign.as_bytes()))
}

#[tokio::test]
async fn temporary_credentials_sign_their_session_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/query"))
        .respond_with(ResponseTemplate::new(200).set_body_string(ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    // A profile with a session token, as SSO or an assumed role leaves.
    let files = AwsFiles::new(&[], "");
    std::fs::write(
        &files.credentials,
        "[sso]\naws_access_key_id = ASIATEMP\naws_secret_access_key = secret\naws_session_token = TOKEN123\n",
    )
    .expect("credentials");
    std::fs::write(&files.config, "[profile sso]\nregion = us-east-2\n").expect("config");
    let source = MetricSource::Prometheus {
        url: server.uri(),
        sigv4: true,
        region: Some("us-east-2".to_owned()),
        aws_profile: Some("sso".to_owned()),
    };

    sources(&files)
        .measure(&source, "up")
        .await
        .expect("signed query");

    let request = the_request(&server).await;
    let authorization = header(&request, "authorization");
    assert!(
        authorization.contains("/us-east-2/aps/aws4_request"),
        "{authorization}"
    );
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
        "{authorization}"
    );
    assert_eq!(header(&request, "x-amz-security-token"), "TOKEN123");
}

#[tokio::test]
async fn sigv4_without_a_region_is_invalid_and_plain_queries_are_not_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/query"))
        .respond_with(ResponseTemplate::new(200).set_body_string(ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let files = AwsFiles::new(&[("amp", "http://127.0.0.1:9")], "");
    let sources = sources(&files);

    let err = sources
        .measure(
            &MetricSource::Prometheus {
                url: server.uri(),
                sigv4: true,
                region: None,
                aws_profile: Some("amp".to_owned()),
            },
            "up",
        )
        .await
        .expect_err("no region");
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(err.to_string().contains("needs a region"), "{err}");

    sources
        .measure(&crate::plain(&server.uri()), "up")
        .await
        .expect("plain query");
    let request = the_request(&server).await;
    assert!(request.headers.get("authorization").is_none());
}

/// A profile whose credentials come from `credential_process` (as SSO, web identity or an
/// assumed role would: each resolution is a call), counting its runs in a file; the
/// credentials expire `expires_in` from now.
fn counting_profile(files: &AwsFiles, name: &str, expires_in: std::time::Duration) -> PathBuf {
    let dir = files.config.parent().expect("a directory").to_owned();
    let count = dir.join(format!("{name}.count"));
    let script = dir.join(format!("{name}.sh"));
    let expiration = jiff::Timestamp::now()
        .checked_add(expires_in)
        .expect("a time")
        .strftime("%Y-%m-%dT%H:%M:%SZ");
    std::fs::write(
        &script,
        format!(
            "echo run >> '{}'\necho '{{\"Version\": 1, \"AccessKeyId\": \"ASIAPROC\", \"SecretAccessKey\": \"secret\", \"SessionToken\": \"TOKEN\", \"Expiration\": \"{expiration}\"}}'\n",
            count.display()
        ),
    )
    .expect("script");
    let mut config = std::fs::read_to_string(&files.config).expect("config");
    config.push_str(&format!(
        "\n[profile {name}]\nregion = eu-west-1\ncredential_process = sh {}\n",
        script.display()
    ));
    std::fs::write(&files.config, config).expect("config");
    count
}

fn runs(count: &Path) -> usize {
    std::fs::read_to_string(count).map_or(0, |t| t.lines().count())
}

/// Ten measurements, five of them at once, resolve the profile's credentials once (N7);
/// credentials about to expire are resolved again for each.
#[tokio::test]
async fn credentials_are_resolved_once_per_profile_until_near_expiry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/query"))
        .and(header_exists("x-amz-security-token"))
        .respond_with(ResponseTemplate::new(200).set_body_string(ANSWER))
        .mount(&server)
        .await;
    let files = AwsFiles::new(&[], "");
    let hour = counting_profile(&files, "hour", std::time::Duration::from_secs(3600));
    let minute = counting_profile(&files, "minute", std::time::Duration::from_secs(60));
    let sources = sources(&files);
    let source = |profile: &str| MetricSource::Prometheus {
        url: server.uri(),
        sigv4: true,
        region: Some("eu-west-1".to_owned()),
        aws_profile: Some(profile.to_owned()),
    };

    let hourly = source("hour");
    let measure = || sources.measure(&hourly, "up");
    let at_once = tokio::join!(measure(), measure(), measure(), measure(), measure());
    for got in [at_once.0, at_once.1, at_once.2, at_once.3, at_once.4] {
        got.expect("signed");
    }
    for _ in 0..5 {
        sources
            .measure(&source("hour"), "up")
            .await
            .expect("signed");
    }
    assert_eq!(runs(&hour), 1, "one resolution for ten measurements");

    for _ in 0..3 {
        sources
            .measure(&source("minute"), "up")
            .await
            .expect("signed");
    }
    assert_eq!(
        runs(&minute),
        3,
        "expiring within minutes: resolved again each time"
    );
}
