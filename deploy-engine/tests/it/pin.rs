//! `pin = "digest"`: a promotion writes the release's digests (Kustomize `name:tag@digest`,
//! Helm a digest parameter per service), the engine and the soak take the pinned images for
//! the release, a tag pushed again under other bytes is not the release, and a rollback pins
//! back what the previous release ran with.

use std::collections::BTreeMap;
use std::sync::Arc;

use deploy_core::config::EXAMPLE;
use deploy_core::plan::live::service_images;
use deploy_core::plan::promotion::{Action, Intent};
use deploy_core::port::{ArgoCd, Health, OverrideValue, SyncRequest};
use deploy_core::trail::AppState;
use deploy_core::trail::Outcome;
use deploy_engine::clock::TokioClock;
use deploy_engine::memory::argocd::Script;
use deploy_engine::memory::build_digest;

use crate::support::{Fixture, T1, T2, epoch, tag};

const PROD_OVERRIDE: &str =
    "image_override = { kind = \"helm\", parameter = \"image.tag\" }\npromote_from";
const T3: &str = "3333333ccccc";

async fn fixture(image_override: &str) -> Fixture {
    assert!(EXAMPLE.contains(PROD_OVERRIDE));
    let text = EXAMPLE.replacen(
        PROD_OVERRIDE,
        &format!("image_override = {image_override}\npromote_from"),
        1,
    );
    Fixture::with_config_at_t2(&text, Arc::new(TokioClock::new(epoch()))).await
}

/// Every prod Application: (cluster, its Kustomize images, its Helm parameters, its live images).
async fn prod_specs(
    f: &Fixture,
) -> Vec<(String, Vec<String>, BTreeMap<String, String>, Vec<String>)> {
    let mut out = Vec::new();
    for c in &f.config.clusters {
        let app = f
            .world
            .argocd
            .application(&f.app_name("prod", &c.name))
            .await
            .unwrap();
        let mut images = app.images.clone();
        images.sort();
        out.push((
            c.name.clone(),
            app.kustomize_images,
            app.helm_parameters,
            images,
        ));
    }
    out
}

/// (service, image name) on `cluster` of prod.
fn images_of(f: &Fixture, cluster: &str) -> Vec<(String, String)> {
    let prod = f.config.environment("prod").unwrap();
    service_images(&f.config, prod, f.config.cluster(cluster).unwrap())
}

#[tokio::test(start_paused = true)]
async fn kustomize_pins_each_image_to_the_release_digest_and_rolls_back_to_the_previous_pin() {
    let f = fixture("{ kind = \"kustomize\", pin = \"digest\" }").await;
    let plan = f.plan(Intent::Promote { tag: None }).await;
    assert!(plan.is_go(), "{:#?}", plan.gates);
    let release = plan.release.clone().unwrap();
    assert_eq!(release.tag, tag(T2));
    for a in plan.waves.iter().flat_map(|w| &w.apps) {
        let Action::Deploy {
            set_override: Some(OverrideValue::Kustomize { images }),
            ..
        } = &a.action
        else {
            panic!("{}: {:?}", a.cluster, a.action);
        };
        let want: Vec<String> = a
            .images
            .iter()
            .map(|(s, n)| format!("{n}:{T2}@{}", build_digest(s, &tag(T2))))
            .collect();
        assert_eq!(images, &want, "{}", a.cluster);
        // T1 ran by tag: a rollback would write it back by tag.
        let by_tag: Vec<String> = a.images.iter().map(|(_, n)| format!("{n}:{T1}")).collect();
        assert_eq!(
            a.previous,
            Some(OverrideValue::Kustomize { images: by_tag }),
            "{}",
            a.cluster
        );
        assert!(a.previous_digests.is_empty(), "{}", a.cluster);
    }
    let (report, _) = f.run(&plan, f.options("pin-1", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    for (cluster, kustomize, _, live) in prod_specs(&f).await {
        let mut want: Vec<String> = images_of(&f, &cluster)
            .iter()
            .map(|(s, n)| format!("{n}:{T2}@{}", build_digest(s, &tag(T2))))
            .collect();
        want.sort();
        let mut spec = kustomize.clone();
        spec.sort();
        assert_eq!(spec, want, "{cluster}: the spec pins the release's digests");
        assert_eq!(live, want, "{cluster}: what kustomize renders runs");
    }
    // Pinned and at the release: nothing to do.
    assert_eq!(f.plan(Intent::Promote { tag: None }).await.changes(), 0);

    // T3 fails in wave 2: every cluster goes back to T2's pin, digest for digest.
    f.release_to_staging(T3).await;
    f.world
        .argocd
        .push_script(&f.app_name("prod", "eu-west-1"), Script::Degraded);
    let plan = f.plan(Intent::Promote { tag: None }).await;
    for a in plan.waves.iter().flat_map(|w| &w.apps) {
        assert_eq!(a.live.to_string(), T2, "{}", a.cluster);
        assert_eq!(a.previous_digests.len(), 3, "{}", a.cluster);
    }
    let (report, _) = f.run(&plan, f.options("pin-2", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.apps.iter().all(|a| a.state == AppState::RolledBack),
        "{:#?}",
        report.apps
    );
    for (cluster, kustomize, _, live) in prod_specs(&f).await {
        let mut want: Vec<String> = images_of(&f, &cluster)
            .iter()
            .map(|(s, n)| format!("{n}:{T2}@{}", build_digest(s, &tag(T2))))
            .collect();
        want.sort();
        let mut spec = kustomize.clone();
        spec.sort();
        assert_eq!(spec, want, "{cluster}: rolled back to T2's pin");
        assert_eq!(live, want, "{cluster}");
    }
}

#[tokio::test(start_paused = true)]
async fn helm_writes_a_digest_parameter_per_service_and_the_soak_accepts_it() {
    let f = fixture(
        "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{service}.image.digest\" }",
    )
    .await;
    let (report, events) = f.promote(f.options("pin-h", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert!(
        events.iter().any(|e| matches!(
            e,
            deploy_core::rollout::event::Event::SoakFinished { wave: 2 }
        )),
        "both waves soaked"
    );
    for (cluster, _, params, live) in prod_specs(&f).await {
        assert_eq!(params["image.tag"], T2, "{cluster}");
        let images = images_of(&f, &cluster);
        let mut want = Vec::new();
        for (s, n) in &images {
            let d = build_digest(s, &tag(T2)).to_string();
            assert_eq!(params[&format!("{s}.image.digest")], d, "{cluster} {s}");
            // The chart renders the digest alone: no tag to read, only the digest proves it.
            want.push(format!("{n}@{d}"));
        }
        want.sort();
        assert_eq!(live, want, "{cluster}");
    }
    assert_eq!(f.plan(Intent::Promote { tag: None }).await.changes(), 0);
}

/// The release's tag pushed again under other bytes and synced into one cluster: that
/// cluster no longer runs the release, whatever its tag says, and the plan deploys it again.
#[tokio::test(start_paused = true)]
async fn a_tag_pushed_again_is_not_the_release() {
    let f = fixture("{ kind = \"kustomize\", pin = \"digest\" }").await;
    let (report, _) = f.promote(f.options("pin-3", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    let name = f.app_name("prod", "us-east-1");
    let other = build_digest("someone-else", &tag(T2));
    let images: Vec<String> = images_of(&f, "us-east-1")
        .iter()
        .map(|(_, n)| format!("{n}:{T2}@{other}"))
        .collect();
    f.world
        .argocd
        .set_override(&name, &OverrideValue::Kustomize { images })
        .await
        .unwrap();
    f.world
        .argocd
        .sync(
            &name,
            &SyncRequest {
                prune: false,
                operation_id: "alice".into(),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    let app = f.world.argocd.application(&name).await.unwrap();
    assert_eq!(app.health, Health::Healthy);
    let plan = f.plan(Intent::Promote { tag: None }).await;
    let a = plan
        .waves
        .iter()
        .flat_map(|w| &w.apps)
        .find(|a| a.cluster == "us-east-1")
        .unwrap();
    assert!(
        a.live.to_string().contains(&format!("{T2}@sha256:")),
        "{}",
        a.live
    );
    assert!(
        matches!(
            a.action,
            Action::Deploy {
                set_override: Some(_),
                ..
            }
        ),
        "{:?}",
        a.action
    );
    assert_eq!(
        plan.changes(),
        1,
        "the other clusters still run the release"
    );
    let (report, _) = f.run(&plan, f.options("pin-4", None)).await;
    assert_eq!(report.unwrap().outcome, Outcome::Succeeded);
    let app = f.world.argocd.application(&name).await.unwrap();
    assert!(
        app.images.iter().all(|i| !i.contains(other.as_str())),
        "{:?}",
        app.images
    );
}

/// Pinned by digest, rolling back to a release that ran by tag writes it back by tag: the
/// digest parameters are emptied, so the chart renders the tag again.
#[tokio::test(start_paused = true)]
async fn helm_rolls_back_by_tag_to_a_release_that_ran_by_tag() {
    let f = fixture(
        "{ kind = \"helm\", parameter = \"image.tag\", pin = \"digest\", digest_parameter = \"{service}.image.digest\" }",
    )
    .await;
    f.world
        .argocd
        .push_script(&f.app_name("prod", "eu-west-1"), Script::Degraded);
    let (report, _) = f.promote(f.options("pin-rb", None)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    for (cluster, _, params, live) in prod_specs(&f).await {
        assert_eq!(params["image.tag"], T1, "{cluster}");
        let mut want = Vec::new();
        for (s, n) in images_of(&f, &cluster) {
            assert_eq!(
                params[&format!("{s}.image.digest")],
                "",
                "{cluster} {s}: unpinned"
            );
            want.push(format!("{n}:{T1}"));
        }
        want.sort();
        assert_eq!(live, want, "{cluster}");
    }
}
