//! AWS configuration of each profile, loaded once (deploy-aws's [`SdkConfigs`]: the standard
//! chain, the profiles' `endpoint_url`, the AWS files of [`SourceOptions`]) and shared by
//! SigV4 signing and the CloudWatch clients.

use aws_config::SdkConfig;
use deploy_aws::SdkConfigs;

use crate::SourceOptions;

/// The loaded configuration of every profile used so far, and the options of the clients
/// made from them.
#[derive(Debug)]
pub(crate) struct AwsConfigs {
    pub(crate) options: SourceOptions,
    loaded: SdkConfigs,
    /// Each profile's credentials for SigV4 signing, resolved once until near their expiry.
    pub(crate) credentials: crate::sigv4::CredentialsCache,
}

impl AwsConfigs {
    pub(crate) fn new(options: SourceOptions) -> Self {
        Self {
            loaded: SdkConfigs::new(
                options.config_file.clone(),
                options.credentials_file.clone(),
            ),
            options,
            credentials: Default::default(),
        }
    }

    /// The configuration of `profile` (`None`: the default chain). Credential providers
    /// that call AWS use the profile's region, or `fallback_region` when none is set.
    pub(crate) async fn config(&self, profile: Option<&str>, fallback_region: &str) -> SdkConfig {
        self.loaded.config(profile, fallback_region).await
    }
}

/// `profile prod`, or the default chain, for messages.
pub(crate) fn via(profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!("profile {p}"),
        None => "the default AWS credential chain".to_owned(),
    }
}
