//! The image override: how a release is written into an Application's source (a Helm
//! parameter, or Kustomize images), read back from it, and compared. This module owns it; the
//! adapters only apply an [`OverrideValue`] to their wire format.
//!
//! With `pin = "digest"` the override names the digest of each service image as well as the
//! tag, so the bytes the gate proved are the bytes that run:
//!
//! - Kustomize: each entry is `name:tag@sha256:…`. Argo CD hands every
//!   `spec.source.kustomize.images` entry (its `KustomizeImage`, "[old_image_name=]
//!   <image_name>:<image_tag>", with `@digest` allowed) to `kustomize edit set image`, which
//!   since kustomize v5.2 (kubernetes-sigs/kustomize#5234) parses `<image>:<newtag>@<digest>`
//!   into `newTag` and `digest`; kustomize's image transformer
//!   (api/filters/imagetag/updater.go, `SetImageValue`) then renders `name:newTag@digest`
//!   (and `name@digest` for a digest alone: "overriding tag or digest will replace both
//!   original tag and digest values"). The tag stays for people and for the history; the
//!   runtime pulls by the digest. Entries written as `name@sha256:…` by hand are read too.
//! - Helm: the tag goes to `parameter` as before, and each service's digest to its own
//!   parameter (`digest_parameter` with `{service}` filled in); the chart decides how it
//!   renders them (`repo@sha256:…` or `repo:tag@sha256:…`).

use std::collections::BTreeMap;

use crate::config::{Environment, ImageOverride, Pin};
use crate::model::LiveTag;
use crate::model::{Digest, Release, Tag};
use crate::port::{Application, OverrideValue, kustomize_name};

impl Application {
    /// The image override as configured by `kind`, if the Application has one: the tag's
    /// parameter (Helm), or the entries for our images (Kustomize, pinned or not).
    pub fn override_value(
        &self,
        kind: &ImageOverride,
        image_names: &[String],
    ) -> Option<OverrideValue> {
        match kind {
            ImageOverride::Helm { parameter } => {
                self.helm_parameters
                    .get(parameter)
                    .map(|value| OverrideValue::Helm {
                        parameter: parameter.clone(),
                        value: value.clone(),
                        digests: BTreeMap::new(),
                    })
            }
            ImageOverride::Kustomize => {
                let images: Vec<String> = self
                    .kustomize_images
                    .iter()
                    .filter(|i| image_names.iter().any(|n| kustomize_name(i) == n))
                    .cloned()
                    .collect();
                (!images.is_empty()).then_some(OverrideValue::Kustomize { images })
            }
        }
    }

    /// The override in force read in the shape of `want`: for Helm, the tag's parameter and
    /// every digest parameter `want` names (those present), so that comparing the two says
    /// whether writing `want` changes anything.
    pub fn override_like(
        &self,
        want: &OverrideValue,
        image_names: &[String],
    ) -> Option<OverrideValue> {
        match want {
            OverrideValue::Helm {
                parameter, digests, ..
            } => {
                let value = self.helm_parameters.get(parameter)?;
                Some(OverrideValue::Helm {
                    parameter: parameter.clone(),
                    value: value.clone(),
                    digests: digests
                        .keys()
                        .filter_map(|p| Some((p.clone(), self.helm_parameters.get(p)?.clone())))
                        .collect(),
                })
            }
            OverrideValue::Kustomize { .. } => {
                self.override_value(&ImageOverride::Kustomize, image_names)
            }
        }
    }
}

/// The override that makes a cluster of `env` run `tag`, by tag whatever the pin (an image
/// updater's write, a simulation's seed); [`pinned_override`] writes what a promotion does.
pub fn override_for(env: &Environment, image_names: &[String], tag: &Tag) -> OverrideValue {
    match &env.image_override {
        ImageOverride::Helm { parameter } => OverrideValue::Helm {
            parameter: parameter.clone(),
            value: tag.to_string(),
            digests: BTreeMap::new(),
        },
        ImageOverride::Kustomize => OverrideValue::Kustomize {
            images: image_names.iter().map(|n| format!("{n}:{tag}")).collect(),
        },
    }
}

/// The override that makes a cluster of `env` (its (service, image name) pairs `images`) run
/// `release` as the environment pins it: by tag, or with `pin = "digest"` by each service's
/// digest in `release.digests`. A service whose digest is unknown (a previous release that
/// ran by tag) is written by its tag: Kustomize `name:tag`, Helm an empty digest parameter.
pub fn pinned_override(
    env: &Environment,
    images: &[(String, String)],
    release: &Release,
) -> OverrideValue {
    let tag = &release.tag;
    let names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
    let Pin::Digest { helm_parameters } = &env.pin else {
        return override_for(env, &names, tag);
    };
    let digest = |service: &str| release.digests.get(service).map(Digest::as_str);
    match &env.image_override {
        ImageOverride::Helm { parameter } => OverrideValue::Helm {
            parameter: parameter.clone(),
            value: tag.to_string(),
            digests: helm_parameters
                .iter()
                .map(|(service, p)| (p.clone(), digest(service).unwrap_or_default().to_owned()))
                .collect(),
        },
        ImageOverride::Kustomize => OverrideValue::Kustomize {
            images: images
                .iter()
                .map(|(service, n)| match digest(service) {
                    Some(d) => format!("{n}:{tag}@{d}"),
                    None => format!("{n}:{tag}"),
                })
                .collect(),
        },
    }
}

/// The digests `value` pins, by service: Kustomize entries by their image name in `images`
/// ((service, image name) pairs), Helm digest parameters by `env`'s `digest_parameter`.
pub fn pinned_digests(
    value: &OverrideValue,
    env: &Environment,
    images: &[(String, String)],
) -> BTreeMap<String, Digest> {
    let service_of = |at: &str| -> Option<String> {
        match value {
            OverrideValue::Kustomize { .. } => {
                images.iter().find(|(_, n)| n == at).map(|(s, _)| s.clone())
            }
            OverrideValue::Helm { .. } => match &env.pin {
                Pin::Digest { helm_parameters } => helm_parameters
                    .iter()
                    .find(|(_, p)| *p == at)
                    .map(|(s, _)| s.clone()),
                Pin::Tag => None,
            },
        }
    };
    value
        .pins()
        .into_iter()
        .filter_map(|(at, d)| Some((service_of(at)?, Digest::new(d).ok()?)))
        .collect()
}

/// The tag the image override points at.
pub fn desired_tag(value: Option<&OverrideValue>) -> LiveTag {
    match value.map(OverrideValue::tags).as_deref() {
        Some([t]) => LiveTag::Tag(t.clone()),
        Some([]) | None => LiveTag::Unknown,
        Some(many) => LiveTag::Mixed(many.iter().map(|t| (t.clone(), vec![t.clone()])).collect()),
    }
}

/// Whether the override in force equals `want`; Kustomize entries compare in any order.
pub fn same_override(current: Option<&OverrideValue>, want: &OverrideValue) -> bool {
    match (current, want) {
        (Some(OverrideValue::Kustomize { images: a }), OverrideValue::Kustomize { images: b }) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.sort();
            b.sort();
            a == b
        }
        (Some(c), w) => c == w,
        (None, _) => false,
    }
}

/// What `status.summary.images` shows once an Application whose images are `image_names`
/// has synced `value`: Kustomize renders each entry as kustomize's image transformer does
/// (`name:tag`, `name:tag@digest`, `name@digest`; see this module); Helm renders
/// `name:tag`, or `name@digest` for an image whose digest parameter (`digest_parameters`:
/// image name → parameter) `value` sets, as charts with an `image.digest` value do
/// (Bitnami's: "if set, will override the tag", bitnami/charts#11903). Shared by the
/// in-memory and the stateful fake Argo CD.
pub fn rendered_images(
    image_names: &[String],
    value: &OverrideValue,
    digest_parameters: &BTreeMap<String, String>,
) -> Vec<String> {
    match value {
        OverrideValue::Helm { value, digests, .. } => image_names
            .iter()
            .map(|n| {
                match digest_parameters
                    .get(n)
                    .and_then(|p| digests.get(p))
                    .filter(|d| !d.is_empty())
                {
                    Some(d) => format!("{n}@{d}"),
                    None => format!("{n}:{value}"),
                }
            })
            .collect(),
        OverrideValue::Kustomize { images } => image_names
            .iter()
            .map(|n| {
                images
                    .iter()
                    .find(|i| kustomize_name(i) == n)
                    .map(|i| {
                        i.split_once('=')
                            .map_or(i.as_str(), |(_, new)| new)
                            .to_owned()
                    })
                    .unwrap_or_else(|| n.clone())
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EXAMPLE};
    use crate::plan::live::{is_at_release, service_images};
    use crate::port::test_app;

    fn digest(c: char) -> Digest {
        Digest::new(format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    /// Write the pinned override of a release into an Application, read it back, render it
    /// as Argo CD would, and judge it: at the release, and not at a release whose digests
    /// differ though its tag is the same.
    #[test]
    fn pinned_overrides_round_trip() {
        const HELM: &str = "image_override = { kind = \"helm\", parameter = \"image.tag\" }";
        for (written, helm) in [
            ("{ kind = \"kustomize\", pin = \"digest\" }", false),
            (
                "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{service}.image.digest\" }",
                true,
            ),
        ] {
            let text = EXAMPLE.replacen(HELM, &format!("image_override = {written}"), 1);
            let config = Config::parse("deploy.toml", &text).unwrap();
            let env = config.environment("debug").unwrap();
            let images = service_images(&config, env, &config.clusters[0]);
            let names: Vec<String> = images.iter().map(|(_, n)| n.clone()).collect();
            let release = Release {
                tag: Tag::new("r42").unwrap(),
                digests: images
                    .iter()
                    .zip(['a', 'b', 'c'])
                    .map(|((s, _), c)| (s.clone(), digest(c)))
                    .collect(),
            };
            let want = pinned_override(env, &images, &release);
            // Write it as the adapters do: Kustomize entries, or Helm parameters.
            let mut app = test_app("a", &[]);
            let mut digest_parameters = BTreeMap::new();
            match &want {
                OverrideValue::Kustomize { images: entries } => {
                    assert!(!helm, "{written}");
                    for ((s, n), e) in images.iter().zip(entries) {
                        assert_eq!(e, &format!("{n}:r42@{}", release.digests[s]), "{written}");
                    }
                    app.kustomize_images = entries.clone();
                }
                OverrideValue::Helm {
                    parameter,
                    value,
                    digests,
                } => {
                    assert!(helm, "{written}");
                    app.helm_parameters.insert(parameter.clone(), value.clone());
                    app.helm_parameters
                        .insert("replicaCount".into(), "3".into());
                    for (s, n) in &images {
                        let p = format!("{s}.image.digest");
                        assert_eq!(digests[&p], release.digests[s].as_str(), "{written}");
                        app.helm_parameters.insert(p.clone(), digests[&p].clone());
                        digest_parameters.insert(n.clone(), p);
                    }
                }
            }
            let back = app.override_like(&want, &names);
            assert!(same_override(back.as_ref(), &want), "{written}: {back:?}");
            assert_eq!(want.tags(), ["r42"], "{written}");
            assert_eq!(
                pinned_digests(&want, env, &images),
                release.digests,
                "{written}"
            );
            app.images = rendered_images(&names, &want, &digest_parameters);
            assert!(
                is_at_release(&app, &images, &release),
                "{written}: {:?}",
                app.images
            );
            // The same tag with other bytes for one service is not this release.
            let mut pushed_again = release.clone();
            pushed_again
                .digests
                .insert(images[1].0.clone(), digest('f'));
            assert!(!is_at_release(&app, &images, &pushed_again), "{written}");
            // Written by tag instead, it is not the pinned override.
            let by_tag = override_for(env, &names, &release.tag);
            assert!(!same_override(Some(&by_tag), &want), "{written}");
        }
    }
}
