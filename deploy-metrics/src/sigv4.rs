//! SigV4 signing of Amazon Managed Prometheus queries (service `aps`).
//!
//! The query goes as a form body (`POST /api/v1/query`), so the signature covers the
//! body's hash and needs no query-string canonicalization.

use std::time::SystemTime;

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
        let config = self.configs.config(self.profile, self.region).await;
        let via = via(self.profile);
        let provider = config.credentials_provider().ok_or_else(|| Error::Permission {
            message: format!("no AWS credentials for {via} to sign Amazon Managed Prometheus queries; log in or set AWS_PROFILE"),
        })?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| Error::Permission {
                message: format!(
                    "cannot load AWS credentials ({via}) to sign Amazon Managed Prometheus queries: {e}; log in (e.g. `aws sso login`) and retry"
                ),
            })?;
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
