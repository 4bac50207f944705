//! ECR clients: built from the standard AWS chain on first use, cached per (profile,
//! region), with a concurrency bound and an optional rate bound per (account, region).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::config::retry::RetryConfig;
use aws_sdk_ecr::config::timeout::TimeoutConfig;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::errors::Call;

/// How the SDK retries throttled and transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryMode {
    /// Exponential backoff with jitter (the SDK's `standard` mode).
    #[default]
    Standard,
    /// Standard, plus a client-side rate limiter that slows down after throttling
    /// (the SDK's `adaptive` mode); suits long-running loops such as `deploy watch`.
    Adaptive,
}

/// Retry, timeout and concurrency settings of [`crate::EcrRegistry`].
///
/// Start from [`EcrOptions::default`] and change the fields you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EcrOptions {
    /// Retry mode.
    pub retry_mode: RetryMode,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry (jittered, then doubled per retry).
    pub initial_backoff: Duration,
    /// Longest backoff between two attempts.
    pub max_backoff: Duration,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on one attempt, response included.
    pub attempt_timeout: Duration,
    /// Limit on one call, all attempts and backoffs included.
    pub operation_timeout: Duration,
    /// Calls in flight at once to one account's registry in one region.
    ///
    /// ECR throttles per account and region; a release check asks for every image of
    /// every region at once, so this bounds the burst each region sees.
    pub concurrency_per_region: usize,
    /// Most calls per second started against one account's registry in one region (a
    /// long-running `deploy watch` sets it); `None` for no bound beyond the concurrency.
    /// Retries inside one call are paced by the SDK's backoff, not by this bound.
    pub requests_per_second: Option<NonZeroU32>,
    /// Use this AWS config file instead of `$AWS_CONFIG_FILE` / `~/.aws/config`.
    pub config_file: Option<PathBuf>,
    /// Use this AWS credentials file instead of `$AWS_SHARED_CREDENTIALS_FILE` /
    /// `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
}

impl Default for EcrOptions {
    fn default() -> Self {
        Self {
            retry_mode: RetryMode::Standard,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(20),
            operation_timeout: Duration::from_secs(90),
            concurrency_per_region: 8,
            requests_per_second: None,
            config_file: None,
            credentials_file: None,
        }
    }
}

impl EcrOptions {
    pub(crate) fn retry_config(&self) -> RetryConfig {
        let base = match self.retry_mode {
            RetryMode::Standard => RetryConfig::standard(),
            RetryMode::Adaptive => RetryConfig::adaptive(),
        };
        base.with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    pub(crate) fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// A client ready for one call, holding one of its region's permits until dropped.
pub(crate) struct Lease<'a> {
    pub(crate) client: aws_sdk_ecr::Client,
    pub(crate) call: Call<'a>,
    _permit: OwnedSemaphorePermit,
    rate: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Lease<'_> {
    /// Waits for the rate bound before another request of the same call (a next page).
    pub(crate) async fn pace(&self) {
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
    }
}

type Profile = Option<String>;

/// The clients of every (profile, region), created on first use.
#[derive(Debug)]
pub(crate) struct Clients {
    options: EcrOptions,
    /// Account → the AWS profile that reaches it (`None`: the default chain).
    profiles: BTreeMap<String, Profile>,
    /// One loaded AWS configuration (credentials chain, endpoint) per profile.
    shared: SdkConfigs,
    clients: Mutex<HashMap<(Profile, String), aws_sdk_ecr::Client>>,
    permits: Mutex<HashMap<(String, String), Arc<Semaphore>>>,
    rates: Mutex<HashMap<(String, String), Arc<DefaultDirectRateLimiter>>>,
}

impl Clients {
    pub(crate) fn new(options: EcrOptions, profiles: BTreeMap<String, Profile>) -> Self {
        Self {
            shared: SdkConfigs::new(
                options.config_file.clone(),
                options.credentials_file.clone(),
            ),
            options,
            profiles,
            clients: Mutex::default(),
            permits: Mutex::default(),
            rates: Mutex::default(),
        }
    }

    pub(crate) fn options(&self) -> &EcrOptions {
        &self.options
    }

    pub(crate) fn profiles(&self) -> &BTreeMap<String, Profile> {
        &self.profiles
    }

    /// The profile of `account`; an account no environment names uses the default chain.
    pub(crate) fn profile(&self, account: &str) -> Option<&str> {
        self.profiles.get(account).and_then(|p| p.as_deref())
    }

    /// Waits for a permit of (`account`, `region`), then returns the client to call it with.
    pub(crate) async fn lease<'a>(
        &'a self,
        operation: &'static str,
        account: &'a str,
        region: &'a str,
    ) -> Lease<'a> {
        let semaphore = lock(&self.permits)
            .entry((account.to_owned(), region.to_owned()))
            .or_insert_with(|| Arc::new(Semaphore::new(self.options.concurrency_per_region.max(1))))
            .clone();
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let rate = self.options.requests_per_second.map(|rps| {
            lock(&self.rates)
                .entry((account.to_owned(), region.to_owned()))
                .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_second(rps))))
                .clone()
        });
        if let Some(rate) = &rate {
            rate.until_ready().await;
        }
        let profile = self.profile(account);
        let client = self.client(profile, region).await;
        Lease {
            client,
            call: Call {
                operation,
                account,
                region,
                profile,
                max_attempts: self.options.max_attempts.max(1),
            },
            _permit: permit,
            rate,
        }
    }

    async fn client(&self, profile: Option<&str>, region: &str) -> aws_sdk_ecr::Client {
        let key = (profile.map(str::to_owned), region.to_owned());
        if let Some(client) = lock(&self.clients).get(&key) {
            return client.clone();
        }
        // The profile's configuration is shared by the clients of every region: one
        // credentials provider and identity cache.
        let shared = self.shared.config(profile, region).await;
        let config = aws_sdk_ecr::config::Builder::from(&shared)
            .region(Region::new(region.to_owned()))
            .retry_config(self.options.retry_config())
            .timeout_config(self.options.timeout_config())
            .build();
        tracing::debug!(profile, region, "created ECR client");
        lock(&self.clients)
            .entry(key)
            .or_insert_with(|| aws_sdk_ecr::Client::from_conf(config))
            .clone()
    }
}

/// The AWS configuration of each profile, loaded once from the standard chain (environment,
/// profiles, SSO, web identity, IRSA / container credentials, instance metadata; a profile's
/// `endpoint_url`) and shared by every client made from it. The ECR clients, the S3 state
/// store and deploy-metrics' SigV4 signing and CloudWatch clients all start from it.
#[derive(Debug, Default)]
pub struct SdkConfigs {
    config_file: Option<PathBuf>,
    credentials_file: Option<PathBuf>,
    loaded: Mutex<HashMap<Profile, Arc<OnceCell<SdkConfig>>>>,
}

impl SdkConfigs {
    /// Configurations read from `config_file` instead of `$AWS_CONFIG_FILE` /
    /// `~/.aws/config` and `credentials_file` instead of `$AWS_SHARED_CREDENTIALS_FILE` /
    /// `~/.aws/credentials`, where given.
    pub fn new(config_file: Option<PathBuf>, credentials_file: Option<PathBuf>) -> Self {
        Self {
            config_file,
            credentials_file,
            loaded: Mutex::default(),
        }
    }

    /// The configuration of `profile` (`None`: the default chain), loaded on first use and
    /// then shared, so its credentials are cached once for every client.
    ///
    /// Credential providers that call AWS (SSO, STS for web identity and assumed roles)
    /// use the region of the profile or environment; when neither sets one, they use
    /// `fallback_region`, the region of the first call.
    pub async fn config(&self, profile: Option<&str>, fallback_region: &str) -> SdkConfig {
        let cell = lock(&self.loaded)
            .entry(profile.map(str::to_owned))
            .or_default()
            .clone();
        cell.get_or_init(|| self.load(profile, fallback_region))
            .await
            .clone()
    }

    /// Loads the configuration of `profile` afresh (what [`SdkConfigs::config`] keeps).
    pub async fn load(&self, profile: Option<&str>, fallback_region: &str) -> SdkConfig {
        let files = profile_files(
            self.config_file.as_deref(),
            self.credentials_file.as_deref(),
        );
        let loader = || {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(profile) = profile {
                loader = loader.profile_name(profile);
            }
            if let Some(files) = &files {
                loader = loader.profile_files(files.clone());
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
}

/// The AWS files to read: the given ones, the standard ones for the other kind; `None`
/// when neither is given (the SDK's own defaults).
fn profile_files(config: Option<&Path>, credentials: Option<&Path>) -> Option<EnvConfigFiles> {
    if config.is_none() && credentials.is_none() {
        return None;
    }
    let mut files = EnvConfigFiles::builder();
    match config {
        Some(path) => files = files.with_file(EnvConfigFileKind::Config, path),
        None => files = files.include_default_config_file(true),
    }
    match credentials {
        Some(path) => files = files.with_file(EnvConfigFileKind::Credentials, path),
        None => files = files.include_default_credentials_file(true),
    }
    Some(files.build())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is one insert.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
