//! Turns aws-sdk-ecr failures into [`deploy_core::Error`]s whose one-line message names
//! the account, region and profile and says what to do.

use std::error::Error as StdError;

use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use deploy_core::Error;

/// What a failed call was about, for its message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// The ECR operation, e.g. `DescribeImages`.
    pub(crate) operation: &'static str,
    pub(crate) account: &'a str,
    pub(crate) region: &'a str,
    /// The AWS profile used; `None` is the default chain.
    pub(crate) profile: Option<&'a str>,
    /// Attempts the SDK made before giving up.
    pub(crate) max_attempts: u32,
}

/// A failure reduced to what the message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// ECR answered with an error.
    Service {
        code: Option<String>,
        message: Option<String>,
        status: Option<u16>,
    },
    /// The call or one attempt ran out of time.
    Timeout,
    /// The request never got an answer: connection failure, or no usable credentials
    /// (the SDK resolves credentials just before sending). `detail` is the whole chain.
    Dispatch { detail: String },
    /// The answer could not be read.
    Response { detail: String },
    /// The request could not be built.
    Construction { detail: String },
}

impl Failure {
    /// The service's error code, when it answered with one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of the service's answer.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Service { status, .. } => *status,
            _ => None,
        }
    }

    /// A conditional write lost: 412 PreconditionFailed, or 409 ConditionalRequestConflict
    /// (S3's answer to two conditional writes of one key at once).
    pub(crate) fn is_precondition(&self) -> bool {
        matches!(
            self.code(),
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        ) || matches!(self.status(), Some(412))
    }

    /// Reduces an SDK error.
    pub(crate) fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        match err {
            // A success status with an error means the body could not be parsed.
            SdkError::ServiceError(_)
                if err.raw_response().is_some_and(|r| r.status().is_success()) =>
            {
                Self::Response { detail: chain(err) }
            }
            SdkError::ServiceError(_) => Self::Service {
                code: err.code().map(str::to_owned),
                message: err.message().map(str::to_owned),
                status: err.raw_response().map(|r| r.status().as_u16()),
            },
            SdkError::TimeoutError(_) => Self::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => Self::Timeout,
            SdkError::DispatchFailure(_) => Self::Dispatch { detail: chain(err) },
            SdkError::ResponseError(_) => Self::Response { detail: chain(err) },
            _ => Self::Construction { detail: chain(err) },
        }
    }
}

/// Every message of an error and its sources, `: `-separated, without the SDK's
/// wrapper labels ("dispatch failure", "other", ...).
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let mut text = e.to_string();
        for label in [
            "dispatch failure",
            "response error",
            "failed to construct request",
            "service error",
            "unhandled error",
            "other",
            "io error",
        ] {
            if let Some(rest) = text.strip_prefix(label) {
                text = rest.trim_start_matches(':').trim_start().to_owned();
            }
        }
        // Wrappers often repeat their source's text; say each thing once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Error codes the SDK retries as throttling; after the last attempt they are transient.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Codes meaning the credentials were read but ECR does not accept them.
const REJECTED_CREDENTIALS: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
];

impl Call<'_> {
    /// `account 111111111111 in us-west-2 (profile prod)`.
    fn place(&self) -> String {
        format!(
            "account {} in {} ({})",
            self.account,
            self.region,
            self.via()
        )
    }

    fn via(&self) -> String {
        match self.profile {
            Some(p) => format!("profile {p}"),
            None => "default AWS credential chain".to_owned(),
        }
    }

    fn login_hint(&self) -> String {
        match self.profile {
            Some(p) => format!("run `aws sso login --profile {p}`"),
            None => "run `aws sso login` (or set AWS_PROFILE)".to_owned(),
        }
    }

    /// The IAM action of this call, e.g. `ecr:DescribeImages`.
    fn action(&self) -> String {
        format!("ecr:{}", self.operation)
    }

    /// The error for `failure` of this call on `what` (e.g. `repository staging/api`).
    pub(crate) fn error(&self, what: &str, failure: Failure) -> Error {
        let op = self.operation;
        let place = self.place();
        match failure {
            Failure::Service {
                code,
                message,
                status,
            } => {
                let code = code.unwrap_or_default();
                let message = message.unwrap_or_default();
                let label = if code.is_empty() {
                    format!("HTTP {}", status.unwrap_or_default())
                } else {
                    code.clone()
                };
                let detail = if message.is_empty() {
                    label
                } else {
                    format!("{label}: {message}")
                };
                if THROTTLING.contains(&code.as_str()) || status == Some(429) {
                    // The SDK retries the throttling codes; a bare 429 (from a proxy) it does not.
                    let attempts = if code.is_empty() {
                        format!(" ({detail})")
                    } else {
                        format!(" after {} attempts", self.max_attempts)
                    };
                    Error::transient(format!(
                        "ECR throttled {op} of {what} in {place}{attempts}: retry later, or lower the request rate"
                    ))
                } else if code.contains("AccessDenied") || status == Some(403) && code.is_empty() {
                    Error::Permission {
                        message: format!(
                            "access denied to {op} of {what} in {place}: grant {} on {} to this identity ({detail})",
                            self.action(),
                            self.resource(what)
                        ),
                    }
                } else if REJECTED_CREDENTIALS.contains(&code.as_str()) {
                    Error::Permission {
                        message: format!(
                            "ECR rejected the AWS credentials of {place} ({detail}): refresh them (aws configure, or {})",
                            self.login_hint()
                        ),
                    }
                } else if code == "RepositoryNotFoundException" {
                    Error::NotFound {
                        what: format!("{what} in {place}"),
                        hint: Some(
                            "check the repository name and repository_prefix in deploy.toml".into(),
                        ),
                    }
                } else if code.ends_with("NotFoundException") {
                    Error::not_found(format!("{what} in {place}"))
                } else if code == "ServerException" || status.is_some_and(|s| s >= 500) {
                    Error::transient(format!(
                        "ECR failed {op} of {what} in {place} after {} attempts ({detail}): retry later",
                        self.max_attempts
                    ))
                } else {
                    Error::invalid(format!("ECR refused {op} of {what} in {place}: {detail}"))
                }
            }
            Failure::Timeout => Error::transient(format!(
                "{op} of {what} in {place} timed out: check network access to ECR and retry"
            )),
            Failure::Dispatch { detail } => self.dispatch_error(what, &detail),
            Failure::Response { detail } => Error::invalid(format!(
                "ECR answered {op} of {what} in {place} with a response that cannot be read: {detail}"
            )),
            Failure::Construction { detail } => {
                self.credentials_error(&detail).unwrap_or_else(|| {
                    Error::invalid(format!(
                        "could not build {op} of {what} in {place}: {detail}"
                    ))
                })
            }
        }
    }

    /// An SDK error of this call on `what`.
    pub(crate) fn sdk_error<E>(&self, what: &str, err: &SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let failure = Failure::from_sdk(err);
        tracing::debug!(
            operation = self.operation,
            account = self.account,
            region = self.region,
            ?failure,
            "ECR call failed"
        );
        self.error(what, failure)
    }

    /// The ARN an IAM policy must allow for this call on `what`.
    fn resource(&self, what: &str) -> String {
        let repository = what.strip_prefix("repository ").or_else(|| {
            what.strip_prefix("image ")
                .map(|i| i.rsplit_once(':').map_or(i, |(r, _)| r))
        });
        match repository {
            Some(repo) => format!(
                "arn:aws:ecr:{}:{}:repository/{repo}",
                self.region, self.account
            ),
            None => "*".to_owned(),
        }
    }

    fn dispatch_error(&self, what: &str, detail: &str) -> Error {
        if let Some(e) = self.credentials_error(detail) {
            return e;
        }
        Error::transient(format!(
            "could not reach ECR for {} of {what} in {}: {detail}; check the network, proxy and endpoint_url",
            self.operation,
            self.place()
        ))
    }

    /// A credentials problem found in an error chain, with what to do about it.
    fn credentials_error(&self, detail: &str) -> Option<Error> {
        let place = self.place();
        let lower = detail.to_ascii_lowercase();
        let message = if lower.contains("was not defined")
            || lower.contains("no profiles were defined")
        {
            let profile = self.profile.unwrap_or("default");
            format!(
                "AWS profile {profile} is not defined in the AWS config files, so {place} cannot be reached: add it to ~/.aws/config, or fix aws_profile in deploy.toml ({detail})"
            )
        } else if detail.contains("SSO") || lower.contains("sso_") {
            format!(
                "the AWS SSO session for {place} is missing or expired: {} ({detail})",
                self.login_hint()
            )
        } else if lower.contains("credential") || lower.contains("identity") {
            format!(
                "no usable AWS credentials for {place}: configure AWS credentials (aws configure / aws sso login / AWS_PROFILE) ({detail})"
            )
        } else {
            return None;
        };
        Some(Error::Permission { message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(profile: Option<&'static str>) -> Call<'static> {
        Call {
            operation: "DescribeImages",
            account: "222222222222",
            region: "eu-west-1",
            profile,
            max_attempts: 5,
        }
    }

    fn service(code: &str, status: u16) -> Failure {
        Failure::Service {
            code: (!code.is_empty()).then(|| code.to_owned()),
            message: Some("the message".into()),
            status: Some(status),
        }
    }

    /// Maps `failure` for the profile `prod` and checks the variant and message parts.
    fn check(failure: Failure, kind: &str, parts: &[&str]) {
        let err = call(Some("prod")).error("repository staging/api", failure.clone());
        let got = match &err {
            Error::Transient { .. } => "transient",
            Error::Permission { .. } => "permission",
            Error::NotFound { .. } => "not_found",
            Error::Invalid { .. } => "invalid",
            _ => "other",
        };
        assert_eq!(got, kind, "{failure:?} → {err}");
        let text = err.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        for part in parts {
            assert!(text.contains(part), "{failure:?}: {text:?} lacks {part:?}");
        }
    }

    #[test]
    fn service_errors() {
        let place = "account 222222222222 in eu-west-1 (profile prod)";
        check(
            service("ThrottlingException", 400),
            "transient",
            &[place, "after 5 attempts", "retry later"],
        );
        check(
            service("", 429),
            "transient",
            &["throttled", "(HTTP 429: the message)"],
        );
        check(
            service("AccessDeniedException", 400),
            "permission",
            &[
                place,
                "grant ecr:DescribeImages on arn:aws:ecr:eu-west-1:222222222222:repository/staging/api",
            ],
        );
        check(
            service("UnrecognizedClientException", 400),
            "permission",
            &[
                "rejected the AWS credentials",
                "aws sso login --profile prod",
            ],
        );
        check(
            service("ExpiredTokenException", 400),
            "permission",
            &["refresh them"],
        );
        check(
            service("RepositoryNotFoundException", 400),
            "not_found",
            &[
                "repository staging/api in account 222222222222",
                "repository_prefix",
            ],
        );
        check(
            service("ImageNotFoundException", 400),
            "not_found",
            &[place],
        );
        check(
            service("ServerException", 500),
            "transient",
            &["retry later"],
        );
        check(service("", 503), "transient", &["HTTP 503"]);
        check(
            service("InvalidParameterException", 400),
            "invalid",
            &["InvalidParameterException: the message"],
        );
    }

    #[test]
    fn transport_and_credentials_errors() {
        check(Failure::Timeout, "transient", &["timed out"]);
        check(
            Failure::Dispatch {
                detail: "dispatch failure: io error: Connection refused".into(),
            },
            "transient",
            &["could not reach ECR", "Connection refused", "endpoint_url"],
        );
        check(
            Failure::Response {
                detail: "response error: invalid JSON".into(),
            },
            "invalid",
            &["cannot be read", "invalid JSON"],
        );
        check(
            Failure::Dispatch {
                detail: "failed to load credentials: the credential provider was not enabled: no providers in chain provided credentials".into(),
            },
            "permission",
            &["configure AWS credentials (aws configure / aws sso login / AWS_PROFILE)"],
        );
        check(
            Failure::Dispatch {
                detail: "an error occurred while loading credentials: the SSO token has expired and cannot be refreshed".into(),
            },
            "permission",
            &["SSO session", "run `aws sso login --profile prod`"],
        );
        check(
            Failure::Dispatch {
                detail: "profile `prod` was not defined: ProfileFile provider could not be built"
                    .into(),
            },
            "permission",
            &[
                "AWS profile prod",
                "not defined",
                "aws_profile in deploy.toml",
            ],
        );
    }

    #[test]
    fn default_chain_is_named() {
        let err = call(None).error("repository r", service("AccessDeniedException", 400));
        assert!(
            err.to_string().contains("default AWS credential chain"),
            "{err}"
        );
    }
}
