//! What an Application runs and what it is told to run, in release terms.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Environment};
use crate::model::Tag;
use crate::port::{Application, Health, SyncStatus, image_name, image_tag};

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

/// The live tag from `status.summary.images`, matching each service's image name.
///
/// An image name can appear there with several tags (Argo CD lists the images of every pod:
/// a CronJob's completed pods, a Deployment half rolled out), and then that service is mixed:
/// which entry comes last says nothing about what runs. An entry without a tag adds nothing.
pub fn live_tag(app: &Application, services: &[(String, String)]) -> LiveTag {
    // One pass over the images, then one lookup per service: linear in both.
    let mut running: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for image in &app.images {
        running
            .entry(image_name(image))
            .or_default()
            .extend(image_tag(image));
    }
    let by: BTreeMap<String, Vec<String>> = services
        .iter()
        .map(|(service, name)| {
            let tags = running
                .get(name.as_str())
                .map(|tags| tags.iter().map(|t| (*t).to_owned()).collect())
                .unwrap_or_default();
            (service.clone(), tags)
        })
        .collect();
    summarize(by)
}

fn summarize(by: BTreeMap<String, Vec<String>>) -> LiveTag {
    let mut tags = by.values();
    match tags.next() {
        None => LiveTag::Unknown,
        Some(first) if first.len() == 1 && tags.all(|t| t == first) => {
            LiveTag::Tag(first[0].clone())
        }
        Some(_) if by.values().all(Vec::is_empty) => LiveTag::Unknown,
        Some(_) => LiveTag::Mixed(by),
    }
}

pub use crate::image_override::{desired_tag, override_for};

/// (service, image name) pairs a cluster of `env` runs.
pub fn service_images(
    config: &Config,
    env: &Environment,
    cluster: &crate::config::Cluster,
) -> Vec<(String, String)> {
    config
        .services
        .iter()
        .map(|s| s.name.clone())
        .zip(env.image_names(&config.services, cluster))
        .collect()
}

/// Whether `app` runs `tag` on every image, Synced and Healthy, with no operation pending.
pub fn is_at(app: &Application, services: &[(String, String)], tag: &Tag) -> bool {
    live_tag(app, services).tag() == Some(tag.as_str())
        && app.sync_status == SyncStatus::Synced
        && app.health == Health::Healthy
        && !app.operation_pending
}

/// Who last promoted a cluster, with what and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// Who.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// The release tag.
    pub release: String,
}

/// Who last promoted `cluster` of `env`: the annotations the engine wrote on its Application,
/// else (an ApplicationSet that does not preserve them) the newest successful record of the
/// audit trail that changed that cluster. Pure.
pub fn promoted(
    app: Option<&Application>,
    records: &[crate::trail::AuditRecord],
    env: &str,
    cluster: &str,
) -> Option<Promotion> {
    use crate::engine::{ANNOTATION_AT, ANNOTATION_BY, ANNOTATION_RELEASE};
    let from_annotations = app.and_then(|app| {
        let get = |k: &str| app.annotations.get(k).cloned();
        Some(Promotion {
            by: get(ANNOTATION_BY)?,
            at: get(ANNOTATION_AT).unwrap_or_default(),
            release: get(ANNOTATION_RELEASE).unwrap_or_default(),
        })
    });
    from_annotations.or_else(|| {
        records
            .iter()
            .rev()
            .find(|r| {
                r.environment == env
                    && r.outcome.is_success()
                    && r.changed.iter().any(|c| c == cluster)
            })
            .map(|r| Promotion {
                by: r.actor.to_string(),
                at: r.finished_at.to_string(),
                release: r.release.tag.to_string(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(images: &[&str]) -> Application {
        crate::port::test_app("a", images)
    }

    #[test]
    fn live_tags() {
        let services = vec![
            ("api".to_string(), "r/api".to_string()),
            ("worker".into(), "r/worker".into()),
        ];
        let check = |images: &[&str], want: &str| {
            assert_eq!(
                live_tag(&app(images), &services).to_string(),
                want,
                "{images:?}"
            )
        };
        check(&["r/api:v1", "r/worker:v1", "other:x"], "v1");
        check(&["r/api:v1", "r/worker:v2"], "mixed(api=v1,worker=v2)");
        check(&["r/api:v1"], "mixed(api=v1,worker=?)");
        check(&[], "-");
        check(&["r/api", "r/worker"], "-");
        check(&["r/api:v1@sha256:abc", "r/worker:v1"], "v1");
        // One service's image with two tags (old CronJob pods, a half-rolled Deployment) is
        // mixed, whichever order Argo CD lists them in.
        check(
            &["r/api:v1", "r/api:v2", "r/worker:v2"],
            "mixed(api=v1+v2,worker=v2)",
        );
        check(
            &["r/api:v2", "r/worker:v2", "r/api:v1"],
            "mixed(api=v1+v2,worker=v2)",
        );
        check(
            &["r/worker:v1", "r/api:v1", "r/worker:v0"],
            "mixed(api=v1,worker=v0+v1)",
        );
        // The same tag twice is still that tag.
        check(&["r/api:v1", "r/worker:v1", "r/api:v1"], "v1");
        check(&["r/api:v1", "r/worker:v1", "r/api"], "v1");
    }

    #[test]
    fn a_service_with_two_tags_is_mixed_in_json_and_never_at_either() {
        let services = vec![
            ("api".to_string(), "r/api".to_string()),
            ("worker".into(), "r/worker".into()),
        ];
        for images in [
            ["r/api:v1", "r/api:v2", "r/worker:v2"],
            ["r/api:v2", "r/worker:v2", "r/api:v1"],
        ] {
            let app = app(&images);
            let live = live_tag(&app, &services);
            assert_eq!(
                serde_json::to_value(&live).unwrap(),
                serde_json::json!({ "kind": "mixed", "value": { "api": ["v1", "v2"], "worker": ["v2"] } }),
                "{images:?}"
            );
            for tag in ["v1", "v2"] {
                assert!(
                    !is_at(&app, &services, &Tag::new(tag).unwrap()),
                    "{images:?} is not at {tag}"
                );
            }
        }
    }
}
