//! What a test or the sandbox gives the simulation: the Applications to create, how their next
//! operations end, how long operations take, and what a synced override makes them run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::SyncMode;
use crate::port::{OverrideValue, kustomize_name};

/// An Application to create: Synced and Healthy, running `image_names` at `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSeed {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Destination cluster name.
    pub destination: String,
    /// Sync policy.
    pub sync_mode: SyncMode,
    /// Helm parameters; the one named `tag_parameter` holds the tag.
    pub helm_parameters: BTreeMap<String, String>,
    /// The Helm parameter holding the tag.
    pub tag_parameter: String,
    /// Image names (without tag) the Application runs.
    pub image_names: Vec<String>,
}

impl AppSeed {
    /// The tag the seed's Application runs at creation (empty without a tag parameter).
    pub fn tag(&self) -> &str {
        self.helm_parameters
            .get(&self.tag_parameter)
            .map_or("", String::as_str)
    }

    /// The images the seed's Application runs at creation: each image name at its tag.
    pub fn images(&self) -> Vec<String> {
        let tag = self.tag();
        self.image_names
            .iter()
            .map(|n| format!("{n}:{tag}"))
            .collect()
    }
}

/// How the next operation on an Application ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Script {
    /// Succeeded, then Healthy.
    Healthy,
    /// Succeeded, then Degraded.
    Degraded,
    /// The sync fails (phase Failed), app stays on its old images.
    Failed,
    /// Runs until terminated.
    Hang,
}

/// How long simulated operations take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From sync request to operation finished.
    pub sync: Duration,
    /// From operation finished to Healthy or Degraded.
    pub health: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            sync: Duration::from_secs(2),
            health: Duration::from_secs(3),
        }
    }
}

/// What `status.summary.images` shows once an Application whose images are `image_names`
/// has synced `value`: Kustomize renders each entry as kustomize's image transformer does
/// (`name:tag`, `name:tag@digest`, `name@digest`; see [`crate::image_override`]); Helm renders
/// `name:tag`, or `name@digest` for an image whose digest parameter (`digest_parameters`:
/// image name → parameter) `value` sets, as charts with an `image.digest` value do
/// (Bitnami's: "if set, will override the tag", bitnami/charts#11903). Shared by every skin.
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
