//! An environment's `tags`: which tags count as releases, and how the newest is chosen.

use std::fmt;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::field::Invalid;
use super::raw::RawTags;

/// How the newest tag is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TagStrategy {
    /// Most recently pushed; ties broken by the tag, highest first.
    #[default]
    Newest,
    /// Highest semantic version (a leading `v` is allowed); other tags are ignored.
    Semver,
    /// Highest tag in byte order.
    Lexical,
}

impl fmt::Display for TagStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Newest => "newest",
            Self::Semver => "semver",
            Self::Lexical => "lexical",
        })
    }
}

/// Which tags count as releases and how to pick the newest.
#[derive(Debug, Clone, Default)]
pub struct TagPolicy {
    /// Strategy.
    pub strategy: TagStrategy,
    /// Only tags matching this.
    pub allow: Option<Regex>,
    /// Never tags matching this.
    pub ignore: Option<Regex>,
}

impl TagPolicy {
    /// Whether `tag` passes the allow and ignore patterns.
    pub fn admits(&self, tag: &str) -> bool {
        self.allow.as_ref().is_none_or(|r| r.is_match(tag))
            && !self.ignore.as_ref().is_some_and(|r| r.is_match(tag))
    }
}

impl PartialEq for TagPolicy {
    fn eq(&self, other: &Self) -> bool {
        let src = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_owned());
        self.strategy == other.strategy
            && src(&self.allow) == src(&other.allow)
            && src(&self.ignore) == src(&other.ignore)
    }
}

impl RawTags {
    /// The policy, its patterns compiled.
    pub(super) fn validate(&self) -> Result<TagPolicy, Invalid> {
        Ok(TagPolicy {
            strategy: self.strategy,
            allow: regex(&self.allow, "tags.allow")?,
            ignore: regex(&self.ignore, "tags.ignore")?,
        })
    }
}

fn regex(s: &Option<Spanned<String>>, what: &str) -> Result<Option<Regex>, Invalid> {
    s.as_ref()
        .map(|s| {
            Regex::new(s.get_ref()).map_err(|e| {
                (
                    s.span(),
                    format!("{what} is not a valid regular expression: {e}"),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use crate::config::tests::check;

    #[test]
    fn errors() {
        check(
            "allow = \"^[0-9a-f]{7,40}$\"",
            "allow = \"^[0-9a-f\"",
            "not a valid regular expression",
        );
        check(
            "strategy = \"newest\"",
            "strategy = \"oldest\"",
            "unknown variant `oldest`",
        );
    }
}
