//! An environment's `notify`: where promotions and rollbacks are announced. Secrets are
//! named by environment variable, never written in the file.

use toml::Spanned;

use super::field::{Invalid, Span, nonempty};
use super::raw::RawNotify;

/// Where notifications go. Secrets are named by environment variable, never held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A Slack incoming webhook (or a Slack-compatible one, e.g. Mattermost).
    Slack {
        /// Where its URL comes from.
        url: SlackUrl,
    },
    /// A generic webhook: the engine's JSON events, signed with HMAC-SHA256.
    Webhook {
        /// The URL (not a secret: the signature is what the receiver trusts).
        url: String,
        /// The environment variable holding the signing secret.
        secret_env: String,
    },
}

/// The URL of a Slack webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackUrl {
    /// Written in the file: only a URL that is not a secret (a relay, a local server);
    /// `hooks.slack.com/services/...` URLs are rejected.
    Literal(String),
    /// Read from this environment variable when a promotion starts.
    Env(String),
}

/// The part of a Slack incoming-webhook URL that makes it a credential.
const SLACK_SECRET_URL: &str = "hooks.slack.com/services/";

/// Whether `url` (`scheme://…`) has a user name or password before its host.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

impl RawNotify {
    /// The target: exactly one of `slack`, `slack_env` or `webhook` (which needs `secret_env`).
    pub(super) fn validate(&self, span: Span) -> Result<NotifyTarget, Invalid> {
        match (&self.slack, &self.slack_env, &self.webhook) {
            (Some(s), None, None) => {
                self.no_secret_env()?;
                Ok(NotifyTarget::Slack {
                    url: SlackUrl::Literal(url(s, "slack")?),
                })
            }
            (None, Some(e), None) => {
                self.no_secret_env()?;
                Ok(NotifyTarget::Slack {
                    url: SlackUrl::Env(var(e, "slack_env")?),
                })
            }
            (None, None, Some(w)) => {
                let url = url(w, "webhook")?;
                let Some(secret) = &self.secret_env else {
                    return Err((
                        w.span(),
                        "a notify webhook needs `secret_env`, the environment variable holding \
                         the secret its HMAC-SHA256 signature is made with"
                            .into(),
                    ));
                };
                Ok(NotifyTarget::Webhook {
                    url,
                    secret_env: var(secret, "secret_env")?,
                })
            }
            _ => Err((
                span,
                "each notify entry has exactly one of `slack`, `slack_env` or `webhook`".into(),
            )),
        }
    }

    /// `secret_env` belongs to a webhook only.
    fn no_secret_env(&self) -> Result<(), Invalid> {
        match &self.secret_env {
            Some(s) => Err((
                s.span(),
                "`secret_env` signs a `webhook` only; a Slack webhook is not signed".into(),
            )),
            None => Ok(()),
        }
    }
}

/// A notify URL written in the file: http(s), and no secret in it (neither userinfo nor a
/// Slack webhook's path), since it is printed in logs and JSON lines.
fn url(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let v = nonempty(s, what)?;
    if !(v.starts_with("https://") || v.starts_with("http://")) {
        return Err((
            s.span(),
            format!("notify {what} {v:?} is not a URL; write it as https://host/path"),
        ));
    }
    if has_userinfo(&v) {
        return Err((
            s.span(),
            format!(
                "notify {what} URL carries a user name or password (`user:password@`): \
                 a notify URL is printed in logs and JSON lines, and secrets never live \
                 in deploy.toml; drop it from the URL and let the receiver check the \
                 signature (`secret_env`), or put the whole URL in an environment \
                 variable with `slack_env`"
            ),
        ));
    }
    if v.contains(SLACK_SECRET_URL) {
        return Err((
            s.span(),
            format!(
                "notify {what} is a Slack webhook URL, which is a secret, and secrets never \
                 live in deploy.toml; put it in an environment variable and write \
                 `{{ slack_env = \"DEPLOY_SLACK_WEBHOOK\" }}`"
            ),
        ));
    }
    Ok(v)
}

/// The name of the environment variable holding a secret.
fn var(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let v = nonempty(s, what)?;
    let ok = v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !v.as_bytes()[0].is_ascii_digit();
    if !ok {
        return Err((
            s.span(),
            format!(
                "notify {what} {v:?} is not an environment variable name; name the variable \
                 that holds the secret, e.g. \"DEPLOY_SLACK_WEBHOOK\""
            ),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, EXAMPLE, NotifyTarget, SlackUrl};

    #[test]
    fn notify_targets() {
        let with = |notify: &str| {
            EXAMPLE.replacen(
                "soak = \"5m\"",
                &format!("soak = \"5m\"\nnotify = {notify}"),
                1,
            )
        };
        let c = Config::parse(
            "deploy.toml",
            &with(
                r#"[{ slack_env = "DEPLOY_SLACK_WEBHOOK" }, { slack = "https://chat.example.com/hooks/x" }, { webhook = "https://hooks.example.com/deploy", secret_env = "DEPLOY_WEBHOOK_SECRET" }]"#,
            ),
        )
        .unwrap();
        assert_eq!(
            c.environment("prod").unwrap().notify,
            [
                NotifyTarget::Slack {
                    url: SlackUrl::Env("DEPLOY_SLACK_WEBHOOK".into())
                },
                NotifyTarget::Slack {
                    url: SlackUrl::Literal("https://chat.example.com/hooks/x".into())
                },
                NotifyTarget::Webhook {
                    url: "https://hooks.example.com/deploy".into(),
                    secret_env: "DEPLOY_WEBHOOK_SECRET".into()
                },
            ]
        );
        assert!(c.environment("staging").unwrap().notify.is_empty());

        let line = with("")
            .lines()
            .position(|l| l.starts_with("notify ="))
            .unwrap()
            + 1;
        #[track_caller]
        fn rejected(text: &str, expect: &str) -> ConfigError {
            let e = Config::parse("deploy.toml", text).expect_err("must be rejected");
            assert!(e.message.contains(expect), "got: {e}\nwant: …{expect}…");
            e
        }
        // A Slack webhook URL is a credential: rejected where it is, with the fix.
        let e = rejected(
            &with(r#"[{ slack = "https://hooks.slack.com/services/T000/B000/XXXX" }]"#),
            "is a Slack webhook URL, which is a secret",
        );
        assert_eq!((e.line, e.column), (line, 21), "{e}");
        assert!(
            e.message.contains("slack_env = \"DEPLOY_SLACK_WEBHOOK\""),
            "{e}"
        );
        rejected(
            &with(
                r#"[{ webhook = "https://hooks.slack.com/services/T0/B0/X", secret_env = "S" }]"#,
            ),
            "which is a secret",
        );
        rejected(
            &with(r#"[{ webhook = "https://hooks.example.com/deploy" }]"#),
            "needs `secret_env`",
        );
        // Credentials in a URL would be printed with it (N11): refused, without echoing them.
        for url in [
            "http://user:pa55word@h.example.com/deploy?token=abc",
            "https://pa55word@h.example.com",
        ] {
            let e = rejected(
                &with(&format!(
                    r#"[{{ webhook = "{url}", secret_env = "S" }}, {{ slack = "{url}" }}]"#
                )),
                "carries a user name or password",
            );
            assert!(!e.message.contains("pa55word"), "{e}");
            assert!(e.message.contains("secret_env"), "{e}");
        }
        // An `@` after the host is not userinfo.
        Config::parse(
            "deploy.toml",
            &with(r#"[{ webhook = "https://h.example.com/a@b?c=d@e", secret_env = "S" }]"#),
        )
        .unwrap();
        rejected(
            &with(r#"[{ webhook = "https://h.example.com/", secret = "abc" }]"#),
            "looks like a secret",
        );
        rejected(
            &with(r#"[{ slack_env = "DEPLOY SLACK" }]"#),
            "is not an environment variable name",
        );
        rejected(
            &with(r#"[{ slack_env = "A", secret_env = "B" }]"#),
            "signs a `webhook` only",
        );
        rejected(
            &with(r#"[{ slack = "hooks.example.com" }]"#),
            "is not a URL",
        );
        rejected(
            &with(r#"[{ slack_env = "A", webhook = "https://h.example.com/", secret_env = "B" }]"#),
            "exactly one of",
        );
        rejected(&with("[{}]"), "exactly one of");
        rejected(
            &with(r#"[{ teams = "https://x" }]"#),
            "unknown field `teams`",
        );
    }
}
