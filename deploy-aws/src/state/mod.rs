//! The shared state store of an environment in S3: the promotion lock ([`S3Lock`]) and the
//! audit trail ([`S3AuditLog`]), kept the way Terraform 1.10+ keeps its S3 lock file.
//!
//! - The lock of an environment is one object, `{prefix}/{env}/lock.json` (a [`Lease`](deploy_core::port::Lease) as
//!   JSON). It is taken with a conditional `PutObject` (`If-None-Match: *`), renewed and
//!   released (`PutObject` / `DeleteObject`) with `If-Match` on the ETag we wrote, and taken
//!   over only once it has expired, with `If-Match` on the stale ETag we read: of two runs
//!   that see the same expired lease, one write succeeds and the other gets 412.
//! - Every audit record is a new object, `{prefix}/{env}/records/{time}-{run_id}-{started|end}.json`,
//!   written with `If-None-Match: *`, so nothing is ever overwritten; the key sorts by time,
//!   so a listing reads the trail in order.
//!
//! Clients come from the standard AWS chain like the ECR clients, including a profile's
//! `endpoint_url`, `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`; with a custom endpoint
//! the client uses path-style addressing (`http://host/bucket/key`), which S3-compatible
//! servers and moto expect.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::primitives::ByteStream;
use aws_types::service_config::ServiceConfigKey;
use deploy_core::config::S3Location;
use deploy_core::port::Clock;
use deploy_core::{Error, Result};
use jiff::Timestamp;

use crate::errors::{Failure, chain};
use crate::{EcrOptions, SdkConfigs};

mod audit;
mod lock;

pub use audit::S3AuditLog;
pub use lock::S3Lock;

/// Where an environment's state lives and how to reach it.
#[derive(Debug, Clone)]
pub struct S3StateOptions {
    /// The bucket and prefix.
    pub location: S3Location,
    /// The bucket's region; `None`: the profile's or the environment's (`fallback_region`).
    pub region: Option<String>,
    /// The AWS profile; `None`: the default chain.
    pub aws_profile: Option<String>,
    /// The region to use when neither `region` nor the AWS configuration sets one.
    pub fallback_region: String,
}

/// An S3 client for one state bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    location: S3Location,
    profile: Option<String>,
    region: String,
    /// S3's clock: the `Date` of its latest response ([`StoreDate`]).
    date: Arc<Mutex<Option<Timestamp>>>,
}

/// Keeps the `Date` header of each S3 response, so that an expiry is judged against S3's
/// clock as well as this machine's before a lease is taken over (N12).
#[derive(Debug)]
struct StoreDate(Arc<Mutex<Option<Timestamp>>>);

impl Intercept for StoreDate {
    fn name(&self) -> &'static str {
        "StoreDate"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| jiff::fmt::rfc2822::parse(d).ok())
            .map(|z| z.timestamp());
        if date.is_some() {
            *guard(&self.0) = date;
        }
        Ok(())
    }
}

impl S3Store {
    /// Builds the client from the standard AWS chain (`aws` carries the retry and timeout
    /// settings and the AWS files to read, as for ECR). Nothing is sent yet.
    pub async fn connect(state: S3StateOptions, aws: &EcrOptions) -> Self {
        let shared = SdkConfigs::new(aws.config_file.clone(), aws.credentials_file.clone())
            .load(
                state.aws_profile.as_deref(),
                state.region.as_deref().unwrap_or(&state.fallback_region),
            )
            .await;
        let region = state
            .region
            .clone()
            .or_else(|| shared.region().map(|r| r.to_string()))
            .unwrap_or_else(|| state.fallback_region.clone());
        // The endpoint as the SDK resolves it for S3: the service's own setting
        // (AWS_ENDPOINT_URL_S3, a profile's `[services]` section), then the global one.
        let service_endpoint = ServiceConfigKey::builder()
            .service_id("S3")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()
            .and_then(|key| shared.service_config().and_then(|c| c.load_config(key)));
        let custom_endpoint = service_endpoint.is_some() || shared.endpoint_url().is_some();
        let date = Arc::default();
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .interceptor(StoreDate(Arc::clone(&date)))
            .region(Region::new(region.clone()))
            .retry_config(aws.retry_config())
            .timeout_config(aws.timeout_config())
            .force_path_style(custom_endpoint)
            .build();
        tracing::debug!(
            profile = state.aws_profile,
            region,
            custom_endpoint,
            "created S3 client for {}",
            state.location
        );
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            location: state.location,
            profile: state.aws_profile,
            region,
            date,
        }
    }

    /// The bucket and prefix.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The lock of `environment`. The lock named `promotion_key` (the environment's
    /// promotion lock) is `{prefix}/{environment}/lock.json`; any other (a watch replica's
    /// lease) is `{prefix}/{environment}/locks/{key}.json`.
    pub fn lock(&self, environment: &str, promotion_key: &str, clock: Arc<dyn Clock>) -> S3Lock {
        S3Lock {
            store: self.clone(),
            environment: environment.to_owned(),
            promotion_key: promotion_key.to_owned(),
            clock,
            etags: Arc::default(),
        }
    }

    /// The audit trail of `environment`, under `{prefix}/{environment}/records/`.
    pub fn audit_log(&self, environment: &str) -> S3AuditLog {
        S3AuditLog {
            store: self.clone(),
            environment: environment.to_owned(),
        }
    }

    fn call<'a>(&'a self, operation: &'static str, key: &'a str) -> S3Call<'a> {
        S3Call {
            operation,
            bucket: &self.location.bucket,
            key,
            region: &self.region,
            profile: self.profile.as_deref(),
        }
    }

    /// The object at `key` and its ETag, `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let call = self.call("GetObject", key);
        let out = match self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.code() == Some("NoSuchKey") {
                    return Ok(None);
                }
                return Err(call.error(failure));
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| call.error(Failure::Response { detail: chain(&e) }))?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    /// Writes `body` at `key` if `condition` holds.
    async fn put(&self, key: &str, body: Vec<u8>, condition: Condition<'_>) -> Result<Written> {
        let call = self.call("PutObject", key);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        req = match condition {
            Condition::Absent => req.if_none_match("*"),
            Condition::ETag(etag) => req.if_match(etag),
            Condition::None => req,
        };
        let if_match = matches!(condition, Condition::ETag(_));
        match req.send().await {
            Ok(out) => Ok(Written::Yes(out.e_tag().unwrap_or_default().to_owned())),
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                // `If-Match` on an object deleted since (S3 answers 404 NoSuchKey) is a
                // condition that does not hold, like a changed ETag: the caller reads again
                // and finds nobody holding the lock.
                if failure.is_precondition() || (if_match && failure.code() == Some("NoSuchKey")) {
                    Ok(Written::PreconditionFailed)
                } else {
                    Err(call.error(failure))
                }
            }
        }
    }

    /// Deletes `key` if its ETag is still `etag`; `false` when it is not.
    async fn delete(&self, key: &str, etag: &str) -> Result<bool> {
        let call = self.call("DeleteObject", key);
        match self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_precondition() {
                    Ok(false)
                } else if failure.code() == Some("NoSuchKey") || failure.status() == Some(404) {
                    Ok(true)
                } else {
                    Err(call.error(failure))
                }
            }
        }
    }

    /// The keys under `prefix` after `start_after` (all when `None`), in order, as far as
    /// `stop_at`: paging ends at the first page that reaches it (keys from there on are
    /// dropped), so a reader of a recent slice never lists the rest.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        stop_at: Option<&str>,
    ) -> Result<Vec<String>> {
        let call = self.call("ListObjectsV2", prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| call.error(Failure::from_sdk(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            if let (Some(stop), Some(last)) = (stop_at, keys.last())
                && last.as_str() >= stop
            {
                break;
            }
        }
        keys.sort();
        if let Some(stop) = stop_at {
            keys.retain(|k| k.as_str() < stop);
        }
        Ok(keys)
    }
}

enum Condition<'a> {
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: etag`.
    ETag(&'a str),
    /// Unconditional (test fixtures only).
    #[cfg_attr(not(feature = "moto"), allow(dead_code))]
    None,
}

enum Written {
    Yes(String),
    PreconditionFailed,
}

fn guard<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // One insert or remove per update: the map stays consistent even after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- errors

/// What a failed S3 call was about, for its message.
#[derive(Debug, Clone, Copy)]
struct S3Call<'a> {
    operation: &'static str,
    bucket: &'a str,
    key: &'a str,
    region: &'a str,
    profile: Option<&'a str>,
}

impl S3Call<'_> {
    fn via(&self) -> String {
        match self.profile {
            Some(p) => format!("profile {p}"),
            None => "default AWS credential chain".to_owned(),
        }
    }

    /// The IAM action and resource an identity needs for this call.
    fn action(&self) -> (String, String) {
        match self.operation {
            "ListObjectsV2" => (
                "s3:ListBucket".into(),
                format!("arn:aws:s3:::{}", self.bucket),
            ),
            op => (
                format!("s3:{op}"),
                format!("arn:aws:s3:::{}/{}", self.bucket, self.key),
            ),
        }
    }

    /// The error for `failure`, in one line naming bucket, key and profile.
    fn error(&self, failure: Failure) -> Error {
        let op = self.operation;
        let place = format!(
            "s3://{}/{} in {} ({})",
            self.bucket,
            self.key,
            self.region,
            self.via()
        );
        match failure {
            Failure::Service {
                code,
                message,
                status,
            } => self.service_error(code.unwrap_or_default(), message, status, &place),
            Failure::Timeout => Error::transient(format!(
                "{op} of {place} timed out: check network access to S3 and retry"
            )),
            Failure::Dispatch { detail } | Failure::Construction { detail } => {
                let lower = detail.to_ascii_lowercase();
                if lower.contains("credential")
                    || lower.contains("identity")
                    || lower.contains("was not defined")
                {
                    Error::Permission {
                        message: format!(
                            "no usable AWS credentials for the state store {place}: configure them (aws configure / aws sso login / AWS_PROFILE), or fix state.aws_profile in deploy.toml ({detail})"
                        ),
                    }
                } else {
                    Error::transient(format!(
                        "could not reach S3 for {op} of {place}: {detail}; check the network, proxy and endpoint_url"
                    ))
                }
            }
            Failure::Response { detail } => Error::invalid(format!(
                "S3 answered {op} of {place} with a response that cannot be read: {detail}"
            )),
        }
    }

    /// The error for an answer of S3 with `code` (empty when none), `message` and `status`.
    fn service_error(
        &self,
        code: String,
        message: Option<String>,
        status: Option<u16>,
        place: &str,
    ) -> Error {
        let op = self.operation;
        let detail = match (code.is_empty(), message.unwrap_or_default()) {
            (true, m) if m.is_empty() => format!("HTTP {}", status.unwrap_or_default()),
            (true, m) => format!("HTTP {}: {m}", status.unwrap_or_default()),
            (false, m) if m.is_empty() => code.clone(),
            (false, m) => format!("{code}: {m}"),
        };
        if code == "NoSuchBucket" {
            Error::NotFound {
                what: format!("the state bucket {} ({})", self.bucket, self.via()),
                hint: Some(format!(
                    "create it (aws s3 mb s3://{} --region {}) or fix state.s3 in deploy.toml",
                    self.bucket, self.region
                )),
            }
        } else if matches!(
            code.as_str(),
            "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "TokenRefreshRequired"
        ) {
            Error::Permission {
                message: format!(
                    "S3 rejected the AWS credentials for {place} ({detail}): refresh them (aws configure, or aws sso login{})",
                    self.profile
                        .map(|p| format!(" --profile {p}"))
                        .unwrap_or_default()
                ),
            }
        } else if code == "AccessDenied" || code == "AllAccessDisabled" || status == Some(403) {
            let (action, resource) = self.action();
            Error::Permission {
                message: format!(
                    "access denied to {op} of {place}: grant {action} on {resource} to this identity ({detail})"
                ),
            }
        } else if code == "SlowDown" || status == Some(503) || status.is_some_and(|s| s >= 500) {
            Error::transient(format!("S3 failed {op} of {place} ({detail}): retry later"))
        } else {
            Error::invalid(format!("S3 refused {op} of {place}: {detail}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(operation: &'static str) -> S3Call<'static> {
        S3Call {
            operation,
            bucket: "state-bucket",
            key: "deploy/prod/lock.json",
            region: "us-west-2",
            profile: Some("prod"),
        }
    }

    fn service(code: &str, status: u16) -> Failure {
        Failure::Service {
            code: (!code.is_empty()).then(|| code.to_owned()),
            message: Some("the message".into()),
            status: Some(status),
        }
    }

    #[test]
    fn errors_name_bucket_key_profile_and_what_to_do() {
        #[track_caller]
        fn check(operation: &'static str, failure: Failure, parts: &[&str]) {
            let text = call(operation).error(failure).to_string();
            assert!(!text.contains('\n'), "one line: {text}");
            for part in parts {
                assert!(text.contains(part), "{text:?} lacks {part:?}");
            }
        }
        let place = "s3://state-bucket/deploy/prod/lock.json in us-west-2 (profile prod)";
        check(
            "PutObject",
            service("AccessDenied", 403),
            &[
                place,
                "grant s3:PutObject on arn:aws:s3:::state-bucket/deploy/prod/lock.json",
            ],
        );
        check(
            "ListObjectsV2",
            service("AccessDenied", 403),
            &["grant s3:ListBucket on arn:aws:s3:::state-bucket "],
        );
        check(
            "GetObject",
            service("NoSuchBucket", 404),
            &[
                "state bucket state-bucket (profile prod) not found",
                "aws s3 mb s3://state-bucket --region us-west-2",
                "state.s3",
            ],
        );
        check(
            "PutObject",
            Failure::Dispatch {
                detail: "failed to load credentials: no providers in chain provided credentials"
                    .into(),
            },
            &[
                place,
                "no usable AWS credentials",
                "aws sso login",
                "state.aws_profile",
            ],
        );
        check(
            "PutObject",
            service("InvalidAccessKeyId", 403),
            &[
                "rejected the AWS credentials",
                "aws sso login --profile prod",
            ],
        );
        // Credentials that expire mid-run (a 1 h CI session) are a permission problem
        // naming the bucket, never "invalid" (which a renewal would read as a lost lock).
        for code in ["ExpiredToken", "InvalidAccessKeyId", "AccessDenied"] {
            let e = call("PutObject").error(service(code, 403));
            assert!(matches!(e, Error::Permission { .. }), "{code}: {e:?}");
            assert!(e.to_string().contains("s3://state-bucket/"), "{e}");
        }
        check("PutObject", service("", 503), &["retry later"]);
        check(
            "PutObject",
            Failure::Dispatch {
                detail: "Connection refused".into(),
            },
            &["could not reach S3", "endpoint_url"],
        );
    }
}
