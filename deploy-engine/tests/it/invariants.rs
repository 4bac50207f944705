//! Planner invariants with proptest: waves cover every cluster once, a plan never deploys
//! a release with a missing image, candidate order does not depend on input order, and
//! re-planning after a successful promotion is a no-op.

use std::collections::BTreeSet;

use deploy_core::config::{Config, EXAMPLE, TagPolicy, TagStrategy};
use deploy_core::model::Tag;
use deploy_core::plan::promotion::Intent;
use deploy_core::plan::release::order_candidates;
use deploy_core::port::TaggedImage;
use proptest::prelude::*;

use crate::support::{Fixture, T2, tag};

/// The example with `n` clusters and the given waves (cluster indexes).
fn config_with(n: usize, waves: &[Vec<usize>]) -> Result<Config, deploy_core::config::ConfigError> {
    let mut text = String::from("app = \"a\"\n");
    for i in 0..n {
        text += &format!("[[clusters]]\nname = \"c{i}\"\nregion = \"r{i}\"\n");
    }
    text += "[[services]]\nname = \"s\"\nrepository = \"s\"\nsentinel = true\n";
    let waves: Vec<String> = waves
        .iter()
        .map(|w| {
            format!(
                "[{}]",
                w.iter()
                    .map(|c| format!("\"c{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    text += &format!(
        "[environments.prod]\nregistry = {{ account = \"222222222222\", regions = [\"r0\"] }}\nsync = \"manual\"\napplication = \"a-{{cluster}}\"\nimage_override = {{ kind = \"kustomize\" }}\nwaves = [{}]\n",
        waves.join(", ")
    );
    Config::parse("generated.toml", &text)
}

proptest! {
    #[test]
    fn accepted_waves_cover_every_cluster_exactly_once(n in 1usize..8, raw in prop::collection::vec(prop::collection::vec(0usize..9, 0..4), 0..6)) {
        let result = config_with(n, &raw);
        let flat: Vec<usize> = raw.iter().flatten().copied().collect();
        let valid = raw.iter().all(|w| !w.is_empty())
            && flat.len() == n
            && flat.iter().copied().collect::<BTreeSet<_>>() == (0..n).collect::<BTreeSet<_>>();
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result.err());
        if let Ok(c) = result {
            let waves = &c.environments["prod"].waves;
            let mut seen: Vec<&String> = waves.iter().flatten().collect();
            seen.sort();
            let mut all: Vec<&String> = c.clusters.iter().map(|c| &c.name).collect();
            all.sort();
            prop_assert_eq!(seen, all);
        }
    }

    #[test]
    fn candidate_order_is_independent_of_input_order(
        images in prop::collection::vec(("[a-f0-9]{7}", 0i64..5), 0..12),
        seed in any::<u64>(),
        strategy in prop_oneof![Just(TagStrategy::Newest), Just(TagStrategy::Lexical), Just(TagStrategy::Semver)],
    ) {
        let mut imgs: Vec<TaggedImage> = images.iter().map(|(t, s)| TaggedImage {
            tag: Tag::new(t.clone()).unwrap(),
            digest: deploy_core::model::digest_of(t),
            pushed_at: jiff::Timestamp::from_second(*s).unwrap(),
        }).collect();
        imgs.sort_by(|a, b| a.tag.cmp(&b.tag));
        imgs.dedup_by(|a, b| a.tag == b.tag);
        let policy = TagPolicy { strategy, ..Default::default() };
        let first = order_candidates(&imgs, &policy);
        let mut shuffled = imgs.clone();
        let len = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % len);
        shuffled.reverse();
        prop_assert_eq!(&first, &order_candidates(&shuffled, &policy));
        if strategy == TagStrategy::Newest {
            for w in first.windows(2) {
                let at = |t: &Tag| imgs.iter().find(|i| &i.tag == t).unwrap().pushed_at;
                prop_assert!(at(&w[0]) >= at(&w[1]));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever target regions miss the release, the plan is not a go and deploys nothing.
    #[test]
    fn a_plan_never_deploys_a_release_with_a_missing_image(missing in prop::collection::btree_set(0usize..3, 1..4)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let f = Fixture::with_staging_at_t2().await;
            let prod = f.config.environment("prod").unwrap();
            // Replication of T3 fails to the regions in `missing`.
            for r in &missing {
                f.world.registry.set_replication_failure("222222222222", &prod.registry.regions[*r], Some("X"));
            }
            f.release_to_staging("3333333ccccc").await;
            let plan = f.plan(Intent::Promote { tag: None }).await;
            assert!(!plan.is_go(), "missing {missing:?} but the plan is a go");
            assert_eq!(plan.changes(), 0);
            assert!(plan.waves.is_empty());
        });
    }
}

#[tokio::test(start_paused = true)]
async fn replanning_after_success_is_a_no_op() {
    for waves in [
        vec![vec!["us-west-2", "us-east-1", "eu-west-1"]],
        vec![vec!["eu-west-1"], vec!["us-east-1"], vec!["us-west-2"]],
    ] {
        let mut f = Fixture::with_staging_at_t2().await;
        f.config.environments.get_mut("prod").unwrap().waves = waves
            .iter()
            .map(|w| w.iter().map(|c| c.to_string()).collect())
            .collect();
        let (report, _) = f.promote(f.options("r1", None)).await;
        assert!(report.unwrap().outcome.is_success());
        let again = f.plan(Intent::Promote { tag: None }).await;
        assert!(again.is_go());
        assert_eq!(again.changes(), 0, "{:#?}", again.waves);
        assert_eq!(again.release.unwrap().tag, tag(T2));
        let (report, _) = f.promote(f.options("r2", None)).await;
        assert_eq!(
            report.unwrap().outcome,
            deploy_core::trail::Outcome::UpToDate
        );
    }
}

#[test]
fn example_is_valid() {
    Config::parse("examples/deploy.toml", EXAMPLE).unwrap();
}
