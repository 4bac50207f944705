//! `[[clusters]]`: the clusters Argo CD deploys to.

use toml::Spanned;

use super::Cluster;
use super::field::{Invalid, nonempty};
use super::names::object_name;
use super::raw::RawCluster;

/// An error unless the file lists a cluster.
pub(super) fn present(clusters: &[Spanned<RawCluster>]) -> Result<(), Invalid> {
    if clusters.is_empty() {
        return Err((
            0..0,
            "no [[clusters]]: add at least one with name and region".into(),
        ));
    }
    Ok(())
}

/// The clusters, in file order: each name a Kubernetes object name (it goes into Application
/// names and API paths), each region given.
pub(super) fn validate(clusters: &[Spanned<RawCluster>]) -> Result<Vec<Cluster>, Invalid> {
    clusters
        .iter()
        .map(|c| {
            let c = c.get_ref();
            Ok(Cluster {
                name: object_name(&c.name, "cluster name")?,
                region: nonempty(&c.region, "cluster region")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::tests::check;

    #[test]
    fn errors() {
        check(
            "name = \"us-east-1\"",
            "name = \"us-west-2\"",
            "cluster \"us-west-2\" is defined twice",
        );
    }
}
