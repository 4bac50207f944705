//! Domain values: tags, digests, image references, releases and sync modes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod annotation;

/// Why a string is not a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidValue {
    /// What was parsed ("tag", "digest").
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// Which rule it broke.
    pub why: &'static str,
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    /// Validates `s` against the OCI tag grammar.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        let invalid = |why| InvalidValue {
            what: "tag",
            value: s.clone(),
            why,
        };
        let mut chars = s.chars();
        match chars.next() {
            None => return Err(invalid("a tag cannot be empty")),
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
            Some(_) => return Err(invalid("a tag must start with a letter, digit or '_'")),
        }
        if s.len() > 128 {
            return Err(invalid("a tag has at most 128 characters"));
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(invalid(
                "a tag may only contain letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(s))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Tag {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> Self {
        t.0
    }
}

/// A content digest such as `sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Validates `algorithm:hex` (sha256 with 64 hex digits, sha512 with 128).
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        let invalid = |why| InvalidValue {
            what: "digest",
            value: s.clone(),
            why,
        };
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(invalid("a digest is algorithm:hex, e.g. sha256:…"));
        };
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(invalid("the algorithm must be sha256 or sha512")),
        };
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(invalid("the hex part has the wrong length or characters"));
        }
        Ok(Self(s))
    }

    /// The digest as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        let hex = self.0.split_once(':').map_or(self.0.as_str(), |(_, h)| h);
        &hex[..hex.len().min(12)]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

/// Where a repository lives: an account's registry in one region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RepoLocation {
    /// AWS account id (the ECR `registryId`).
    pub account: String,
    /// AWS region.
    pub region: String,
    /// Full repository name, prefix included.
    pub repository: String,
}

impl RepoLocation {
    /// `{account}.dkr.ecr.{region}.amazonaws.com/{repository}`.
    pub fn image_name(&self) -> String {
        format!("{}/{}", self.registry_host(), self.repository)
    }

    /// `{account}.dkr.ecr.{region}.amazonaws.com`: the registry `docker login` signs in to.
    pub fn registry_host(&self) -> String {
        format!("{}.dkr.ecr.{}.amazonaws.com", self.account, self.region)
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.repository)
    }
}

/// A tagged image in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// The repository.
    pub location: RepoLocation,
    /// The tag.
    pub tag: Tag,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.location.image_name(), self.tag)
    }
}

/// A release: one tag plus the digest of every service image, keyed by service name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The shared tag.
    pub tag: Tag,
    /// Service name → digest.
    pub digests: BTreeMap<String, Digest>,
}

/// Whether Argo CD applies changes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum SyncMode {
    /// `spec.syncPolicy.automated` is set and enabled.
    Automated {
        /// Delete resources no longer in git.
        prune: bool,
        /// Revert drift in the cluster.
        self_heal: bool,
    },
    /// No automated sync: a person or `deploy promote` syncs.
    Manual,
}

impl SyncMode {
    /// True for [`SyncMode::Automated`].
    pub fn is_automated(self) -> bool {
        matches!(self, Self::Automated { .. })
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_automated() {
            "automated"
        } else {
            "manual"
        })
    }
}

/// The sha256 digest of `manifest`, as a registry computes it.
pub fn digest_of(manifest: &str) -> Digest {
    let hex: String = <sha2::Sha256 as sha2::Digest>::digest(manifest.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Digest::new(format!("sha256:{hex}")).expect("sha256 hex is a valid digest")
}

/// The tag an Application runs (or is told to run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum LiveTag {
    /// Every service image has this tag.
    Tag(String),
    /// Services run different tags, or one service runs several: service → every tag its
    /// image runs, sorted (empty when the image is absent).
    Mixed(BTreeMap<String, Vec<String>>),
    /// None of our images is there.
    Unknown,
}

impl LiveTag {
    /// The single tag, if there is one.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Self::Tag(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for LiveTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Unknown => f.write_str("-"),
            Self::Mixed(by) => {
                let parts: Vec<String> = by
                    .iter()
                    .map(|(s, t)| match t.as_slice() {
                        [] => format!("{s}=?"),
                        tags => format!("{s}={}", tags.join("+")),
                    })
                    .collect();
                write!(f, "mixed({})", parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let check = |s: &str, ok: bool| assert_eq!(Tag::new(s).is_ok(), ok, "{s:?}");
        check("v1.2.3", true);
        check("_x", true);
        check("abc1234", true);
        check(&"a".repeat(128), true);
        check(&"a".repeat(129), false);
        check("", false);
        check(".x", false);
        check("-x", false);
        check("a/b", false);
        check("a:b", false);
        check("ü", false);
    }

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        assert!(Digest::new(format!("sha256:{hex}")).is_ok());
        assert_eq!(
            Digest::new(format!("sha256:{hex}")).unwrap().short(),
            "aaaaaaaaaaaa"
        );
        assert!(Digest::new(format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::new(format!("md5:{hex}")).is_err());
        assert!(Digest::new("sha256:abc").is_err());
        assert!(Digest::new(hex).is_err());
    }
}
