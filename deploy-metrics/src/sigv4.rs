//! SigV4 signing of Amazon Managed Prometheus queries (service `aps`).
//!
//! The query goes as a form body (`POST /api/v1/query`), so the signature covers the
//! body's hash and needs no query-string canonicalization.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use deploy_core::{Error, Result};

use crate::aws::{AwsConfigs, via};

/// The SigV4 service name of Amazon Managed Prometheus.
pub const SERVICE: &str = "aps";

/// Signs requests for one region with one profile's credentials.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signer<'a> {
    pub(crate) configs: &'a AwsConfigs,
    pub(crate) region: &'a str,
    pub(crate) profile: Option<&'a str>,
}

impl Signer<'_> {
    /// Adds the SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token`
    /// with temporary credentials) to `request`, whose body must be in memory.
    pub(crate) async fn sign(&self, request: &mut reqwest::Request) -> Result<()> {
        let credentials = self
            .configs
            .credentials
            .get(self.profile, SystemTime::now(), || self.resolve())
            .await?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::invalid(format!("SigV4 parameters: {e}")))?
            .into();
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::invalid(format!("SigV4 request {}: {e}", request.url())))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| Error::invalid(format!("SigV4 signing {}: {e}", request.url())))?
            .into_parts();
        let (headers, _params) = instructions.into_parts();
        for header in headers {
            let value = reqwest::header::HeaderValue::from_str(header.value())
                .map_err(|e| Error::invalid(format!("SigV4 header {}: {e}", header.name())))?;
            request.headers_mut().insert(header.name(), value);
        }
        Ok(())
    }
}

impl Signer<'_> {
    /// The profile's credentials from its provider chain (SSO, web identity, assume-role:
    /// each call may cost a call to AWS; [`CredentialsCache`] keeps the answer).
    async fn resolve(&self) -> Result<Credentials> {
        let config = self.configs.config(self.profile, self.region).await;
        let via = via(self.profile);
        let provider = config.credentials_provider().ok_or_else(|| Error::Permission {
            message: format!("no AWS credentials for {via} to sign Amazon Managed Prometheus queries; log in or set AWS_PROFILE"),
        })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| Error::Permission {
                message: format!(
                    "cannot load AWS credentials ({via}) to sign Amazon Managed Prometheus queries: {e}; log in (e.g. `aws sso login`) and retry"
                ),
            })
    }
}

/// Credentials that expire this soon are resolved again before use (a query may take a
/// while, and STS sessions last an hour).
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// How long credentials without an expiry (static keys) are kept before being read again,
/// as the SDK's lazy identity cache does.
const KEEP_UNTIMED: Duration = Duration::from_secs(15 * 60);

/// Each profile's credentials, resolved once and again only shortly before they expire.
/// `SdkConfig::credentials_provider` is the uncached provider chain (the SDK's clients cache
/// through their identity cache, which a hand-signed request does not pass through), so
/// without this every measurement would call SSO or STS again (N7).
#[derive(Debug, Default)]
pub(crate) struct CredentialsCache {
    by_profile: Mutex<HashMap<Option<String>, Slot>>,
}

/// One profile's kept credentials; its lock is held while they are resolved.
type Slot = Arc<tokio::sync::Mutex<Option<Kept>>>;

#[derive(Debug, Clone)]
struct Kept {
    credentials: Credentials,
    until: SystemTime,
}

impl CredentialsCache {
    /// The credentials of `profile`, from `resolve` only when none are kept or they expire
    /// within [`REFRESH_BEFORE`] of `now`. Concurrent callers of one profile wait for one
    /// resolution; a failed one is not kept.
    pub(crate) async fn get<F>(
        &self,
        profile: Option<&str>,
        now: SystemTime,
        resolve: impl FnOnce() -> F,
    ) -> Result<Credentials>
    where
        F: Future<Output = Result<Credentials>>,
    {
        let slot = self
            .by_profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(profile.map(str::to_owned))
            .or_default()
            .clone();
        let mut kept = slot.lock().await;
        if let Some(k) = kept.as_ref().filter(|k| k.until > now + REFRESH_BEFORE) {
            return Ok(k.credentials.clone());
        }
        let credentials = resolve().await?;
        let until = credentials
            .expiry()
            .unwrap_or(now + KEEP_UNTIMED + REFRESH_BEFORE);
        *kept = Some(Kept {
            credentials: credentials.clone(),
            until,
        });
        Ok(credentials)
    }
}

/// The region of an Amazon Managed Prometheus URL,
/// `https://aps-workspaces.{region}.amazonaws.com/...`.
pub fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let rest = host.strip_prefix("aps-workspaces.")?;
    let region = rest.split('.').next()?;
    (!region.is_empty()).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn region_comes_from_the_workspace_url() {
        let check = |url: &str, expect: Option<&str>| {
            assert_eq!(region_of(url).as_deref(), expect, "{url}");
        };
        check(
            "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1",
            Some("eu-west-1"),
        );
        check(
            "https://aps-workspaces.us-east-2.amazonaws.com",
            Some("us-east-2"),
        );
        check("http://prometheus.monitoring:9090", None);
        check("not a url", None);
    }
}
