//! Where a rollback goes: what the current release replaced, read from what every machine
//! shares (each Application's Argo CD history), never from one machine's audit trail, which
//! may only add the digests a release was promoted with. Pure.

use std::collections::BTreeMap;

use crate::config::ImageOverride;
use crate::model::{Release, Tag};
use crate::port::{Application, OverrideValue};
use crate::trail::AuditRecord;

/// The releases an Application ran, oldest first, as its history tells: each sync of a new
/// release pushes it; a sync back to a release further down (a rollback, or a re-promotion of
/// an older release) pops what came after it. The last entry is what it runs now; the one
/// before it is what that replaced.
pub fn lineage(app: &Application, kind: &ImageOverride) -> Vec<Tag> {
    let mut entries: Vec<_> = app.history.iter().collect();
    entries.sort_by_key(|h| h.id);
    let mut stack: Vec<Tag> = Vec::new();
    for h in entries {
        let Some(tag) = h
            .override_value
            .as_ref()
            .filter(|v| v.is_kind(kind))
            .and_then(single_tag)
        else {
            continue;
        };
        match stack.iter().position(|t| *t == tag) {
            Some(i) => stack.truncate(i + 1),
            None => stack.push(tag),
        }
    }
    stack
}

fn single_tag(v: &OverrideValue) -> Option<Tag> {
    match v.tags().as_slice() {
        [t] => Tag::new(t.clone()).ok(),
        _ => None,
    }
}

/// The newest release of its lineage that is not `release`: what an Application returns to
/// when a promotion of `release` fails.
pub fn before(app: &Application, kind: &ImageOverride, release: &Tag) -> Option<Tag> {
    lineage(app, kind).into_iter().rev().find(|t| t != release)
}

/// The target of `deploy rollback` without `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackTarget {
    /// The release to return to.
    pub tag: Tag,
    /// The release being rolled back from (the newest any Application synced).
    pub from: Tag,
    /// Its digests as a record of the audit trail has them, if any.
    pub recorded: Option<Release>,
}

/// What the environment's current release replaced, from the Applications' histories:
/// the current release is the newest any of them synced, and every Application whose
/// lineage ends there must agree on what came before it. `records` only add the digests.
/// Returns why not when there is no answer.
pub fn target(
    apps: &[&Application],
    kind: &ImageOverride,
    records: &[AuditRecord],
    env: &str,
) -> Result<RollbackTarget, String> {
    let newest = apps
        .iter()
        .flat_map(|a| a.history.iter())
        .filter(|h| h.override_value.as_ref().is_some_and(|v| v.is_kind(kind)))
        .max_by_key(|h| (h.deployed_at, h.id))
        .and_then(|h| h.override_value.as_ref().and_then(single_tag));
    let Some(current) = newest else {
        return Err("Argo CD's history of its Applications names no release".into());
    };
    let mut candidates: BTreeMap<Tag, Vec<&str>> = BTreeMap::new();
    for a in apps {
        let l = lineage(a, kind);
        if let [.., prev, last] = l.as_slice()
            && *last == current
        {
            candidates.entry(prev.clone()).or_default().push(&a.name);
        }
    }
    let mut it = candidates.into_iter();
    let (tag, _) = match (it.next(), it.next()) {
        (None, _) => {
            return Err(format!(
                "no release before {current} is in Argo CD's history of its Applications"
            ));
        }
        (Some(one), None) => one,
        (Some(a), Some(b)) => {
            let list: Vec<String> = [a, b]
                .into_iter()
                .chain(it)
                .map(|(t, apps)| format!("{t} ({})", apps.join(", ")))
                .collect();
            return Err(format!(
                "the Applications disagree on what {current} replaced: {}",
                list.join(" or ")
            ));
        }
    };
    let recorded = recorded(records, env, &tag);
    Ok(RollbackTarget {
        tag,
        from: current,
        recorded,
    })
}

/// The digests `tag` was last deployed with in `env`, per the audit trail.
pub fn recorded(records: &[AuditRecord], env: &str, tag: &Tag) -> Option<Release> {
    records
        .iter()
        .rev()
        .find(|r| r.environment == env && &r.release.tag == tag && !r.release.digests.is_empty())
        .map(|r| r.release.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{HistoryEntry, test_app};

    fn helm() -> ImageOverride {
        ImageOverride::Helm {
            parameter: "image.tag".into(),
        }
    }

    fn app(name: &str, tags: &[&str]) -> Application {
        let mut a = test_app(name, &[]);
        a.history = tags
            .iter()
            .enumerate()
            .map(|(i, t)| HistoryEntry {
                id: i as i64,
                revision: "HEAD".into(),
                deployed_at: Some(jiff::Timestamp::from_second(1_000 + i as i64).unwrap()),
                override_value: Some(OverrideValue::Helm {
                    parameter: "image.tag".into(),
                    value: (*t).into(),
                    digests: Default::default(),
                }),
            })
            .collect();
        a
    }

    #[track_caller]
    fn check(tags: &[&str], want: &[&str]) {
        let got: Vec<String> = lineage(&app("a", tags), &helm())
            .iter()
            .map(Tag::to_string)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn lineages() {
        check(&[], &[]);
        check(&["r2", "r3", "r4"], &["r2", "r3", "r4"]);
        check(&["v0", "v1", "v2", "v1"], &["v0", "v1"]); // v2 was rolled back
        check(&["v0", "v1", "v1", "v2"], &["v0", "v1", "v2"]); // a re-sync is not a new release
        check(&["v0", "v1", "v2", "v0", "v3"], &["v0", "v3"]);
    }

    #[test]
    fn the_target_is_what_the_current_release_replaced_whoever_promoted_it() {
        // Machine A promoted r2; CI promoted r3, then r4. A's trail only knows r2.
        let a = app("c1", &["r1", "r2", "r3", "r4"]);
        let b = app("c2", &["r1", "r2", "r3", "r4"]);
        let t = target(&[&a, &b], &helm(), &[], "prod").unwrap();
        assert_eq!((t.tag.as_str(), t.from.as_str()), ("r3", "r4"));
        // After a rollback to r3, the next goes to r2, not back to r4.
        let a = app("c1", &["r1", "r2", "r3", "r4", "r3"]);
        assert_eq!(
            target(&[&a], &helm(), &[], "prod").unwrap().tag.as_str(),
            "r2"
        );
    }

    #[test]
    fn a_half_rolled_environment_returns_to_what_the_newest_replaced() {
        // Wave 1 got r4, wave 2 still runs r3.
        let a = app("c1", &["r2", "r3", "r4"]);
        let b = app("c2", &["r2", "r3"]);
        assert_eq!(
            target(&[&a, &b], &helm(), &[], "prod")
                .unwrap()
                .tag
                .as_str(),
            "r3"
        );
    }

    #[test]
    fn no_answer_says_why() {
        assert!(
            target(&[&app("c1", &[])], &helm(), &[], "prod")
                .unwrap_err()
                .contains("names no release")
        );
        assert!(
            target(&[&app("c1", &["r1"])], &helm(), &[], "prod")
                .unwrap_err()
                .contains("no release before r1")
        );
        let a = app("c1", &["r1", "r4"]);
        let b = app("c2", &["r2", "r4"]);
        assert!(
            target(&[&a, &b], &helm(), &[], "prod")
                .unwrap_err()
                .contains("disagree")
        );
    }

    #[test]
    fn before_skips_the_release_itself() {
        let a = app("c1", &["r2", "r3"]);
        let r3 = Tag::new("r3").unwrap();
        assert_eq!(before(&a, &helm(), &r3).unwrap().as_str(), "r2");
        assert_eq!(before(&app("c1", &["r3"]), &helm(), &r3), None);
    }
}
