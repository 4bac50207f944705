//! What `deploy audit` lists over REST: ApplicationSets and clusters.

use async_trait::async_trait;
use deploy_core::Result;
use deploy_core::port::{self, ClusterInfo};
use reqwest::Method;

use super::RestArgoCd;
use super::call::{Target, decode};
use crate::wire;

#[async_trait]
impl port::ArgoCdInventory for RestArgoCd {
    async fn application_sets(&self) -> Result<Vec<port::ApplicationSet>> {
        let list: wire::ApplicationSetList = self.list("applicationsets").await?;
        Ok(list
            .items
            .iter()
            .map(wire::ApplicationSet::to_port)
            .collect())
    }

    async fn application_set(&self, name: &str) -> Result<port::ApplicationSet> {
        let label = format!("applicationset {name}");
        let target = Target {
            label: label.clone(),
            named: true,
        };
        let bytes = self
            .call(
                Method::GET,
                self.url(&["api", "v1", "applicationsets", name]),
                &[],
                None,
                &target,
            )
            .await?;
        let set: wire::ApplicationSet = decode(&bytes, &label)?;
        Ok(set.to_port())
    }

    async fn clusters(&self) -> Result<Vec<ClusterInfo>> {
        let list: wire::ClusterList = self.list("clusters").await?;
        Ok(list.items.iter().map(wire::Cluster::to_port).collect())
    }
}
