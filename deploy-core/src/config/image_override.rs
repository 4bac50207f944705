//! An environment's `image_override`: how the release is written into its Applications (a
//! Helm parameter or Kustomize images), and whether it names the tag or the digests (`pin`).

use std::collections::BTreeMap;

use toml::Spanned;

use super::Service;
use super::field::{Invalid, Span};
use super::names::template;
use super::raw::{RawImageOverride, RawOverrideKind, RawPin};

/// How the release is written into an Application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOverride {
    /// A Helm parameter holding the tag.
    Helm {
        /// Parameter name, e.g. `image.tag`.
        parameter: String,
    },
    /// `spec.source.kustomize.images`, one entry per service.
    Kustomize,
}

/// What the image override names: the release's tag, or the digest of each service image
/// the prod gate proved (`pin = "digest"` on `image_override`), so that a tag re-pushed after
/// the gate cannot put other bytes in the clusters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pin {
    /// The tag (the default).
    #[default]
    Tag,
    /// The release's digest of each service. Kustomize writes `name:tag@sha256:…` per
    /// service; Helm writes the tag to `parameter` and each digest to its own parameter.
    Digest {
        /// Helm only: service → the parameter holding its digest (`digest_parameter` with
        /// `{service}` filled in); empty for Kustomize.
        helm_parameters: BTreeMap<String, String>,
    },
}

impl RawImageOverride {
    /// The override and its pin; `services` fill the Helm digest parameter template.
    pub(super) fn validate(
        &self,
        span: Span,
        services: &[Service],
    ) -> Result<(ImageOverride, Pin), Invalid> {
        let digest = self
            .pin
            .as_ref()
            .is_some_and(|p| *p.get_ref() == RawPin::Digest);
        match *self.kind.get_ref() {
            RawOverrideKind::Kustomize => self.kustomize(digest),
            RawOverrideKind::Helm => self.helm(span, digest, services),
        }
    }

    /// Kustomize: no parameters; a digest pin writes `name:tag@sha256:…`.
    fn kustomize(&self, digest: bool) -> Result<(ImageOverride, Pin), Invalid> {
        if let Some(p) = &self.parameter {
            return Err((
                p.span(),
                "image_override.parameter is for kind = \"helm\"; a Kustomize override \
                 writes spec.source.kustomize.images and takes no parameter: remove it"
                    .into(),
            ));
        }
        if let Some(p) = &self.digest_parameter {
            return Err((
                p.span(),
                "image_override.digest_parameter is for kind = \"helm\"; with \
                 kind = \"kustomize\", pin = \"digest\" writes each image as \
                 name:tag@sha256:…: remove it"
                    .into(),
            ));
        }
        let pin = if digest {
            Pin::Digest {
                helm_parameters: BTreeMap::new(),
            }
        } else {
            Pin::Tag
        };
        Ok((ImageOverride::Kustomize, pin))
    }

    /// Helm: the tag's parameter, and with a digest pin each service's digest parameter.
    fn helm(
        &self,
        span: Span,
        digest: bool,
        services: &[Service],
    ) -> Result<(ImageOverride, Pin), Invalid> {
        let Some(parameter) = &self.parameter else {
            return Err((
                span,
                "image_override with kind = \"helm\" needs parameter, the Helm \
                 parameter holding the tag, e.g. parameter = \"image.tag\""
                    .into(),
            ));
        };
        if parameter.get_ref().trim().is_empty() {
            return Err((
                parameter.span(),
                "image_override.parameter cannot be empty".into(),
            ));
        }
        let pin = match (&self.digest_parameter, digest) {
            (Some(d), false) => {
                return Err((
                    d.span(),
                    "image_override.digest_parameter is only used with pin = \"digest\": \
                     add pin = \"digest\" to write the digests, or remove digest_parameter"
                        .into(),
                ));
            }
            (None, true) => {
                return Err((
                    self.pin.as_ref().map_or(span, Spanned::span),
                    "pin = \"digest\" with kind = \"helm\" needs digest_parameter, the \
                     parameter each service's digest goes to, e.g. \
                     digest_parameter = \"{service}.image.digest\""
                        .into(),
                ));
            }
            (None, false) => Pin::Tag,
            (Some(d), true) => helm_digests(d, parameter.get_ref().trim(), services)?,
        };
        Ok((
            ImageOverride::Helm {
                parameter: parameter.get_ref().trim().to_owned(),
            },
            pin,
        ))
    }
}

/// The Helm parameter of each service's digest: `digest_parameter` with `{service}` filled
/// in, never the tag's own parameter.
fn helm_digests(
    d: &Spanned<String>,
    tag_parameter: &str,
    services: &[Service],
) -> Result<Pin, Invalid> {
    let t = template(d, "image_override.digest_parameter", &["service"])?;
    if services.len() > 1 && !t.contains("{service}") {
        return Err((
            d.span(),
            format!(
                "image_override.digest_parameter {t:?} must contain {{service}}: \
                 there are {} services and each digest needs its own \
                 parameter, e.g. \"{{service}}.image.digest\"",
                services.len()
            ),
        ));
    }
    if t == tag_parameter {
        return Err((
            d.span(),
            format!(
                "image_override.digest_parameter {t:?} is the tag's parameter; \
                 name another, e.g. \"{{service}}.image.digest\""
            ),
        ));
    }
    Ok(Pin::Digest {
        helm_parameters: services
            .iter()
            .map(|s| (s.name.clone(), t.replace("{service}", &s.name)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::check;
    use crate::config::{Config, EXAMPLE};

    #[test]
    fn errors() {
        check(
            "kind = \"helm\", parameter = \"image.tag\" }\npromote_from",
            "kind = \"helm\" }\npromote_from",
            "needs parameter, the Helm parameter holding the tag",
        );
    }

    /// `image_override` with and without `pin`: each line is the override written into the
    /// first environment (debug, three services) and what it parses to, or the error.
    #[test]
    fn image_override_pins() {
        const HELM: &str = "image_override = { kind = \"helm\", parameter = \"image.tag\" }";
        let digests = |t: &str| Pin::Digest {
            helm_parameters: ["logserver", "api", "worker"]
                .iter()
                .map(|s| (s.to_string(), t.replace("{service}", s)))
                .collect(),
        };
        let helm = ImageOverride::Helm {
            parameter: "image.tag".into(),
        };
        let ok: [(&str, ImageOverride, Pin); 6] = [
            (
                "{ kind = \"kustomize\" }",
                ImageOverride::Kustomize,
                Pin::Tag,
            ),
            (
                "{ kind = \"kustomize\", pin = \"tag\" }",
                ImageOverride::Kustomize,
                Pin::Tag,
            ),
            (
                "{ kind = \"kustomize\", pin = \"digest\" }",
                ImageOverride::Kustomize,
                Pin::Digest {
                    helm_parameters: BTreeMap::new(),
                },
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\" }",
                helm.clone(),
                Pin::Tag,
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"tag\" }",
                helm.clone(),
                Pin::Tag,
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{service}.image.digest\" }",
                helm.clone(),
                digests("{service}.image.digest"),
            ),
        ];
        for (written, kind, pin) in ok {
            let text = EXAMPLE.replacen(HELM, &format!("image_override = {written}"), 1);
            let c =
                Config::parse("deploy.toml", &text).unwrap_or_else(|e| panic!("{written}: {e}"));
            let debug = c.environment("debug").unwrap();
            assert_eq!(
                (&debug.image_override, &debug.pin),
                (&kind, &pin),
                "{written}"
            );
        }
        let err: [(&str, &str); 8] = [
            (
                "{ kind = \"helm\", parameter = \"image.tag\", digest_parameter = \"{service}.image.digest\" }",
                "digest_parameter is only used with pin = \"digest\"",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"tag\", digest_parameter = \"d\" }",
                "digest_parameter is only used with pin = \"digest\"",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\" }",
                "needs digest_parameter",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"image.digest\" }",
                "must contain {service}: there are 3 services",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{svc}.digest\" }",
                "unknown placeholder {svc}",
            ),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"sha\" }",
                "unknown variant `sha`",
            ),
            (
                "{ kind = \"kustomize\", pin = \"digest\", digest_parameter = \"{service}.d\" }",
                "digest_parameter is for kind = \"helm\"",
            ),
            ("{ kind = \"helm\" }", "needs parameter"),
        ];
        for (written, expect) in err {
            check(HELM, &format!("image_override = {written}"), expect);
        }
        // One service: the template needs no {service}.
        let one = EXAMPLE
            .replacen("[[services]]\nname = \"api\"\nrepository = \"api\"\n", "", 1)
            .replacen("[[services]]\nname = \"worker\"\nrepository = \"worker\"\n", "", 1)
            .replacen(
                HELM,
                "image_override = { kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"image.digest\" }",
                1,
            );
        let c = Config::parse("deploy.toml", &one).unwrap();
        assert_eq!(
            c.environment("debug").unwrap().pin,
            Pin::Digest {
                helm_parameters: BTreeMap::from([("logserver".into(), "image.digest".into())])
            }
        );
    }
}
