//! AWS configuration of each profile, loaded once from the standard chain (environment,
//! profiles, SSO, web identity, IRSA, instance metadata) and shared by SigV4 signing and
//! the CloudWatch clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use tokio::sync::OnceCell;

use crate::SourceOptions;

type Profile = Option<String>;

/// The loaded configuration of every profile used so far.
#[derive(Debug)]
pub(crate) struct AwsConfigs {
    pub(crate) options: SourceOptions,
    loaded: Mutex<HashMap<Profile, Arc<OnceCell<SdkConfig>>>>,
}

impl AwsConfigs {
    pub(crate) fn new(options: SourceOptions) -> Self {
        Self {
            options,
            loaded: Mutex::default(),
        }
    }

    /// The configuration of `profile` (`None`: the default chain). Credential providers
    /// that call AWS use the profile's region, or `fallback_region` when none is set.
    pub(crate) async fn config(&self, profile: Option<&str>, fallback_region: &str) -> SdkConfig {
        let cell = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(profile.map(str::to_owned))
            .or_default()
            .clone();
        cell.get_or_init(|| self.load(profile, fallback_region))
            .await
            .clone()
    }

    async fn load(&self, profile: Option<&str>, fallback_region: &str) -> SdkConfig {
        let loader = || {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(profile) = profile {
                loader = loader.profile_name(profile);
            }
            if let Some(files) = self.profile_files() {
                loader = loader.profile_files(files);
            }
            loader
        };
        let config = loader().load().await;
        if config.region().is_some() {
            return config;
        }
        loader()
            .region(Region::new(fallback_region.to_owned()))
            .load()
            .await
    }

    fn profile_files(&self) -> Option<EnvConfigFiles> {
        let options = &self.options;
        if options.config_file.is_none() && options.credentials_file.is_none() {
            return None;
        }
        let mut files = EnvConfigFiles::builder();
        match &options.config_file {
            Some(path) => files = files.with_file(EnvConfigFileKind::Config, path),
            None => files = files.include_default_config_file(true),
        }
        match &options.credentials_file {
            Some(path) => files = files.with_file(EnvConfigFileKind::Credentials, path),
            None => files = files.include_default_credentials_file(true),
        }
        Some(files.build())
    }
}

/// `profile prod`, or the default chain, for messages.
pub(crate) fn via(profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!("profile {p}"),
        None => "the default AWS credential chain".to_owned(),
    }
}
