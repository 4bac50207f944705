//! The image override: how a release is written into an Application's source (a Helm
//! parameter, or Kustomize images), read back from it, and compared. This module owns it; the
//! adapters only apply an [`OverrideValue`] to their wire format.

use serde::{Deserialize, Serialize};

use crate::config::{Environment, ImageOverride};
use crate::model::Tag;
use crate::plan::live::LiveTag;
use crate::port::{Application, image_name, image_tag};

/// The image override of an Application's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OverrideValue {
    /// One Helm parameter (`spec.source.helm.parameters[name]`).
    Helm {
        /// Parameter name, e.g. `image.tag`.
        parameter: String,
        /// Its value: the tag.
        value: String,
    },
    /// Kustomize image overrides (`spec.source.kustomize.images`), `name:tag` each.
    Kustomize {
        /// The entries for our images.
        images: Vec<String>,
    },
}

impl OverrideValue {
    /// The tag(s) this override points at, deduplicated and sorted.
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = match self {
            Self::Helm { value, .. } => vec![value.clone()],
            Self::Kustomize { images } => images
                .iter()
                .filter_map(|i| image_tag(i))
                .map(str::to_owned)
                .collect(),
        };
        tags.sort();
        tags.dedup();
        tags
    }

    /// Whether this override is of the configured kind.
    pub fn is_kind(&self, kind: &ImageOverride) -> bool {
        matches!(
            (self, kind),
            (Self::Helm { .. }, ImageOverride::Helm { .. })
                | (Self::Kustomize { .. }, ImageOverride::Kustomize)
        )
    }

    /// The kind of override this is, as configured.
    pub fn kind(&self) -> ImageOverride {
        match self {
            Self::Helm { parameter, .. } => ImageOverride::Helm {
                parameter: parameter.clone(),
            },
            Self::Kustomize { .. } => ImageOverride::Kustomize,
        }
    }
}

impl Application {
    /// The image override as configured by `kind`, if the Application has one.
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
}

/// The image name a Kustomize override entry matches: `old=new:tag` → `old`, `name:tag` → `name`.
pub fn kustomize_name(entry: &str) -> &str {
    match entry.split_once('=') {
        Some((old, _)) => old,
        None => image_name(entry),
    }
}

/// The override that makes a cluster of `env` run `tag`.
pub fn override_for(env: &Environment, image_names: &[String], tag: &Tag) -> OverrideValue {
    match &env.image_override {
        ImageOverride::Helm { parameter } => OverrideValue::Helm {
            parameter: parameter.clone(),
            value: tag.to_string(),
        },
        ImageOverride::Kustomize => OverrideValue::Kustomize {
            images: image_names.iter().map(|n| format!("{n}:{tag}")).collect(),
        },
    }
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
