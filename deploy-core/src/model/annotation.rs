//! The annotations `deploy` writes on Applications, in one place: the planners check that the
//! ApplicationSet preserves them, the engine and the watcher write them, `status` reads them.

/// Written on every Application a run deployed: the release tag.
pub const RELEASE: &str = "deploy/release";
/// The run id.
pub const RUN: &str = "deploy/run";
/// Who ran it.
pub const BY: &str = "deploy/promoted-by";
/// When.
pub const AT: &str = "deploy/promoted-at";

/// Written on an Application once a wave's soak and checks observed it Healthy at the release:
/// the release's tag and digest fingerprint (`rollout::vigil::soaked_mark`). An Application at
/// the release without it was never soaked there (an interrupted run), and is soaked again.
pub const SOAKED: &str = "deploy/soaked";

/// Every annotation the engine writes on a deployed Application.
pub const WRITTEN: [&str; 5] = [RELEASE, RUN, BY, AT, SOAKED];

/// The annotation that holds the lock where the lock is an annotation of the environment's
/// carrier Application (`lock::carrier`); the ApplicationSet must preserve it.
pub const LOCK: &str = "deploy/lock";

/// The release `deploy watch` last wrote to an Application.
pub const WATCHED: &str = "deploy/watched-release";

/// The mark ([`SOAKED`]) written on an Application once a soak of
/// `release` passed on it: the tag, and a fingerprint of the digests where the release has
/// them, so a tag pushed again under other digests is a release never soaked. Pure.
pub fn soaked_mark(release: &super::Release) -> String {
    use sha2::Digest as _;
    if release.digests.is_empty() {
        return release.tag.to_string();
    }
    let mut h = sha2::Sha256::new();
    for (service, digest) in &release.digests {
        h.update(format!("{service}={digest}\n").as_bytes());
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}@{hex}", release.tag)
}
