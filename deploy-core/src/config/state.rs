//! An environment's `state`: the S3 store of its lock and audit trail, and where its
//! promotion lock lives.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::field::{Invalid, Span, nonempty};
use super::raw::RawState;

/// An environment's shared state store (`state = { s3 = "s3://bucket/prefix", ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The bucket and prefix holding the lock and the audit records; `None` when `state`
    /// only chooses the lock backend.
    pub s3: Option<S3Location>,
    /// The bucket's region (else the profile's or the environment's).
    pub region: Option<String>,
    /// The AWS profile to reach it with (else the default chain).
    pub aws_profile: Option<String>,
    /// Where the promotion lock lives.
    pub lock: LockBackend,
}

/// `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing '/' (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// The key of `name` under the prefix and `environment`: `{prefix}/{environment}/{name}`.
    pub fn key(&self, environment: &str, name: &str) -> String {
        if self.prefix.is_empty() {
            format!("{environment}/{name}")
        } else {
            format!("{}/{environment}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where an environment's promotion lock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockBackend {
    /// An object in the state bucket, taken with conditional writes.
    S3,
    /// A `coordination.k8s.io` Lease in the Argo CD namespace.
    Kubernetes,
    /// An annotation on the environment's first Application.
    Argocd,
}

impl RawState {
    /// The store and the lock backend: `s3` alone means the lock is in S3 too.
    pub(super) fn validate(&self, span: Span) -> Result<StateConfig, Invalid> {
        let s3 = self.s3.as_ref().map(s3_location).transpose()?;
        let lock = match (self.lock, &s3) {
            (Some(LockBackend::S3), None) => {
                return Err((
                    span,
                    "state.lock = \"s3\" needs state.s3 = \"s3://bucket/prefix\"".into(),
                ));
            }
            (Some(lock), _) => lock,
            (None, Some(_)) => LockBackend::S3,
            (None, None) => {
                return Err((
                    span,
                    "state needs s3 = \"s3://bucket/prefix\" (or lock = \"kubernetes\" | \"argocd\")"
                        .into(),
                ));
            }
        };
        let region = self
            .region
            .as_ref()
            .map(|r| nonempty(r, "state.region"))
            .transpose()?;
        Ok(StateConfig {
            s3,
            region,
            aws_profile: self.aws_profile.clone().filter(|p| !p.trim().is_empty()),
            lock,
        })
    }
}

/// Parses `s3://bucket/prefix`, checking the bucket against S3's naming rules.
fn s3_location(s: &Spanned<String>) -> Result<S3Location, Invalid> {
    let v = s.get_ref().trim();
    let err = |why: String| {
        Err((
            s.span(),
            format!("state.s3 {v:?} {why}; write it as \"s3://bucket/prefix\""),
        ))
    };
    let Some(rest) = v.strip_prefix("s3://") else {
        return err("is not an s3:// URL".into());
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        || !alnum(bucket.chars().next())
        || !alnum(bucket.chars().last())
    {
        return err(format!(
            "names bucket {bucket:?}, which is not a valid S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|p| p.is_empty() && !prefix.is_empty())
    {
        return err("has an empty path segment ('//')".into());
    }
    Ok(S3Location {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, EXAMPLE, LockBackend};

    #[test]
    fn state_store() {
        let with = |state: &str| {
            let text = EXAMPLE.replacen(
                "timeout = \"15m\"",
                &format!("timeout = \"15m\"\nstate = {state}"),
                1,
            );
            Config::parse("deploy.toml", &text)
                .map(|c| c.environment("prod").unwrap().state.clone())
                .map_err(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        };
        let st = with(r#"{ s3 = "s3://myapp-deploy-state/deploy/", region = "us-west-2", aws_profile = "prod" }"#)
            .unwrap()
            .unwrap();
        let s3 = st.s3.clone().unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("myapp-deploy-state", "deploy")
        );
        assert_eq!(s3.key("prod", "lock.json"), "deploy/prod/lock.json");
        assert_eq!(s3.to_string(), "s3://myapp-deploy-state/deploy");
        assert_eq!(st.lock, LockBackend::S3, "lock defaults to s3 with s3 set");
        assert_eq!(st.region.as_deref(), Some("us-west-2"));
        assert_eq!(st.aws_profile.as_deref(), Some("prod"));
        let bare = with(r#"{ s3 = "s3://state-bucket" }"#).unwrap().unwrap();
        assert_eq!(bare.s3.unwrap().key("prod", "lock.json"), "prod/lock.json");
        let lease = with(r#"{ s3 = "s3://state-bucket/p", lock = "kubernetes" }"#)
            .unwrap()
            .unwrap();
        assert_eq!(lease.lock, LockBackend::Kubernetes);
        assert_eq!(
            with(r#"{ lock = "argocd" }"#).unwrap().unwrap().lock,
            LockBackend::Argocd
        );
        assert_eq!(
            Config::parse("deploy.toml", EXAMPLE)
                .unwrap()
                .environment("prod")
                .unwrap()
                .state,
            None,
            "no state: today's behaviour"
        );
        for (state, expect) in [
            (r#"{ s3 = "myapp/deploy" }"#, "is not an s3:// URL"),
            (
                r#"{ s3 = "s3://My_Bucket/x" }"#,
                "not a valid S3 bucket name",
            ),
            (r#"{ s3 = "s3://ab" }"#, "not a valid S3 bucket name"),
            (r#"{ s3 = "s3://bucket-x/a//b" }"#, "empty path segment"),
            (r#"{ lock = "s3" }"#, "needs state.s3"),
            (r#"{ region = "us-west-2" }"#, "state needs s3"),
            (
                r#"{ s3 = "s3://bucket-x", lock = "etcd" }"#,
                "unknown variant `etcd`",
            ),
            (
                r#"{ s3 = "s3://bucket-x", bucket = "y" }"#,
                "unknown field `bucket`",
            ),
            (
                r#"{ s3 = "s3://bucket-x", region = " " }"#,
                "state.region cannot be empty",
            ),
        ] {
            let got = with(state).expect_err(state);
            assert!(got.contains(expect), "{state}: {got}");
            assert!(got.starts_with("65:"), "points at the line of state: {got}");
        }
    }
}
