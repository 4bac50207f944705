//! What an Application runs and what it is told to run, in release terms.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Environment};
use crate::model::{Digest, LiveTag, Release, Tag};
use crate::port::{Application, Health, SyncStatus, image_digest, image_name, image_tag};

/// The live tag from `status.summary.images`, matching each service's image name.
///
/// An image name can appear there with several tags (Argo CD lists the images of every pod:
/// a CronJob's completed pods, a Deployment half rolled out), and then that service is mixed:
/// which entry comes last says nothing about what runs. An entry with neither tag nor digest
/// adds nothing; one with a digest and no tag (pinned by digest, not knowing the release)
/// shows as `@sha256:<12 hex>`.
pub fn live_tag(app: &Application, services: &[(String, String)]) -> LiveTag {
    live_against(app, services, None)
}

/// What `app` runs in terms of `release`: like [`live_tag`], but an image carrying a digest
/// is judged by it, so the result is `release.tag` only when every service is proven to run
/// the release: each of its images has the release's digest, or (no digest live, or none
/// known for that service) the release's tag. An image with the release's tag and another
/// digest (the tag was pushed again) shows as `tag@sha256:<12 hex>`; an unknown digest
/// without a tag as `@sha256:<12 hex>`.
pub fn live_at(app: &Application, services: &[(String, String)], release: &Release) -> LiveTag {
    live_against(app, services, Some(release))
}

fn live_against(
    app: &Application,
    services: &[(String, String)],
    release: Option<&Release>,
) -> LiveTag {
    // One pass over the images, then one lookup per service: linear in both.
    let mut running: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for image in &app.images {
        running.entry(image_name(image)).or_default().insert(image);
    }
    let by: BTreeMap<String, Vec<String>> = services
        .iter()
        .map(|(service, name)| {
            let want = release.map(|r| (r.tag.as_str(), r.digests.get(service)));
            let labels: BTreeSet<String> = running
                .get(name.as_str())
                .into_iter()
                .flatten()
                .filter_map(|image| label(image, want))
                .collect();
            (service.clone(), labels.into_iter().collect())
        })
        .collect();
    summarize(by)
}

/// How one image of a service reads against the release `want` (its tag, and the service's
/// digest when known), if it says anything.
fn label(image: &str, want: Option<(&str, Option<&Digest>)>) -> Option<String> {
    let tag = image_tag(image);
    let Some(digest) = image_digest(image) else {
        return tag.map(str::to_owned);
    };
    let short = || {
        let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        format!("@{alg}:{}", &hex[..hex.len().min(12)])
    };
    match (want, tag) {
        (Some((release, Some(d))), _) if d.as_str() == digest => Some(release.to_owned()),
        // The release's tag on other bytes: never the release.
        (Some((release, Some(_))), Some(t)) if t == release => Some(format!("{t}{}", short())),
        (_, Some(t)) => Some(t.to_owned()),
        (_, None) => Some(short()),
    }
}

/// Each service's digest as its live images show it, when every image of that service
/// carries the same one (what a rollback pins back to); services without are left out.
pub fn live_digests(app: &Application, services: &[(String, String)]) -> BTreeMap<String, Digest> {
    services
        .iter()
        .filter_map(|(service, name)| {
            let mut digests = app
                .images
                .iter()
                .filter(|i| image_name(i) == name)
                .map(|i| image_digest(i).and_then(|d| Digest::new(d).ok()));
            let first = digests.next()??;
            digests
                .all(|d| d.as_ref() == Some(&first))
                .then(|| (service.clone(), first))
        })
        .collect()
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
    is_at_release(
        app,
        services,
        &Release {
            tag: tag.clone(),
            digests: BTreeMap::new(),
        },
    )
}

/// Whether `app` runs `release` on every image ([`live_at`]: its digests where the images
/// carry them), Synced and Healthy, with no operation pending.
pub fn is_at_release(app: &Application, services: &[(String, String)], release: &Release) -> bool {
    live_at(app, services, release).tag() == Some(release.tag.as_str())
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
    use crate::model::annotation;
    let from_annotations = app.and_then(|app| {
        let get = |k: &str| app.annotations.get(k).cloned();
        Some(Promotion {
            by: get(annotation::BY)?,
            at: get(annotation::AT).unwrap_or_default(),
            release: get(annotation::RELEASE).unwrap_or_default(),
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

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// `live_at` against a release whose api digest is `a…` and worker digest `b…`: what each
    /// set of live images reads as, and whether that is at the release.
    #[test]
    fn digests_decide_where_the_images_carry_them() {
        let services = vec![
            ("api".to_string(), "r/api".to_string()),
            ("worker".into(), "r/worker".into()),
        ];
        let release = Release {
            tag: Tag::new("v2").unwrap(),
            digests: BTreeMap::from([
                ("api".into(), Digest::new(d('a')).unwrap()),
                ("worker".into(), Digest::new(d('b')).unwrap()),
            ]),
        };
        let (a, b, c) = (d('a'), d('b'), d('c'));
        let cases: Vec<(Vec<String>, &str, bool)> = vec![
            // Pinned, as kustomize renders it: tag and digest.
            (
                vec![format!("r/api:v2@{a}"), format!("r/worker:v2@{b}")],
                "v2",
                true,
            ),
            // Pinned, as a chart with an image.digest value renders it: digest only.
            (
                vec![format!("r/api@{a}"), format!("r/worker@{b}")],
                "v2",
                true,
            ),
            // By tag: the tag decides.
            (vec!["r/api:v2".into(), "r/worker:v2".into()], "v2", true),
            // One pinned, one by tag: each is proven its own way.
            (vec![format!("r/api@{a}"), "r/worker:v2".into()], "v2", true),
            // The tag was pushed again after the gate: same tag, other bytes.
            (
                vec![format!("r/api:v2@{c}"), format!("r/worker:v2@{b}")],
                "mixed(api=v2@sha256:cccccccccccc,worker=v2)",
                false,
            ),
            // An unknown digest without a tag.
            (
                vec![format!("r/api@{c}"), format!("r/worker@{b}")],
                "mixed(api=@sha256:cccccccccccc,worker=v2)",
                false,
            ),
            // The previous release, pinned.
            (
                vec![format!("r/api:v1@{c}"), format!("r/worker:v1@{c}")],
                "v1",
                false,
            ),
            // Half rolled out: the old pod's digest and the new one.
            (
                vec![
                    format!("r/api@{a}"),
                    format!("r/api@{c}"),
                    format!("r/worker@{b}"),
                ],
                "mixed(api=@sha256:cccccccccccc+v2,worker=v2)",
                false,
            ),
            // A service missing is never proven.
            (vec![format!("r/api@{a}")], "mixed(api=v2,worker=?)", false),
        ];
        for (images, shown, at) in cases {
            let refs: Vec<&str> = images.iter().map(String::as_str).collect();
            let app = app(&refs);
            assert_eq!(
                live_at(&app, &services, &release).to_string(),
                shown,
                "{images:?}"
            );
            assert_eq!(is_at_release(&app, &services, &release), at, "{images:?}");
        }
        // Without the release's digests a digest-only image is shown, never taken for a tag.
        let pinned = app(&[&format!("r/api@{a}"), &format!("r/worker@{a}")]);
        assert_eq!(
            live_tag(&pinned, &services).to_string(),
            "@sha256:aaaaaaaaaaaa"
        );
        assert!(!is_at(&pinned, &services, &Tag::new("v2").unwrap()));
    }

    #[test]
    fn live_digests_are_those_every_image_of_a_service_agrees_on() {
        let services = vec![
            ("api".to_string(), "r/api".to_string()),
            ("worker".into(), "r/worker".into()),
        ];
        let (a, b) = (d('a'), d('b'));
        let got = |images: &[&str]| -> Vec<(String, String)> {
            live_digests(&app(images), &services)
                .into_iter()
                .map(|(s, d)| (s, d.to_string()))
                .collect()
        };
        assert_eq!(
            got(&[&format!("r/api:v1@{a}"), &format!("r/worker@{b}")]),
            [("api".to_string(), a.clone()), ("worker".into(), b.clone())]
        );
        // Two digests, or one image without: that service's digest is not known.
        assert_eq!(
            got(&[
                &format!("r/api@{a}"),
                &format!("r/api@{b}"),
                &format!("r/worker@{b}")
            ]),
            [("worker".to_string(), b.clone())]
        );
        assert_eq!(got(&[&format!("r/api@{a}"), "r/api:v1", "r/worker:v1"]), []);
    }
}
