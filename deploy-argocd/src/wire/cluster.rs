//! Clusters registered in Argo CD (`v1alpha1Cluster`) and their connection state.

use deploy_core::port;
use serde::{Deserialize, Serialize};

/// A cluster registered in Argo CD (`v1alpha1Cluster`, the fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// API server URL.
    #[serde(default)]
    pub server: String,
    /// Deprecated top-level connection state (older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<ConnectionState>,
    /// Cluster info; `info.connectionState` is the current place of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClusterInfoWire>,
}

/// `v1alpha1ClusterInfo` (the field we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfoWire {
    /// Connection state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<ConnectionState>,
}

/// `v1alpha1ConnectionState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    /// `Successful`, `Failed` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `v1alpha1ClusterList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterList {
    /// The clusters.
    #[serde(default)]
    pub items: Vec<Cluster>,
}

impl Cluster {
    /// The port view: connected when the connection state is `Successful`.
    pub fn to_port(&self) -> port::ClusterInfo {
        let state = self
            .info
            .as_ref()
            .and_then(|i| i.connection_state.as_ref())
            .or(self.connection_state.as_ref());
        port::ClusterInfo {
            name: self.name.clone(),
            server: self.server.clone(),
            connected: state.is_some_and(|s| s.status == "Successful"),
            message: state
                .and_then(|s| s.message.clone())
                .filter(|m| !m.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cluster_state_from_info_or_legacy_field() {
        let c: Cluster = serde_json::from_value(json!({"name": "a", "server": "s",
            "info": {"connectionState": {"status": "Successful"}}}))
        .unwrap();
        assert!(c.to_port().connected);
        let c: Cluster = serde_json::from_value(json!({"name": "a", "server": "s",
            "connectionState": {"status": "Failed", "message": "timeout"}}))
        .unwrap();
        let p = c.to_port();
        assert!(!p.connected);
        assert_eq!(p.message.as_deref(), Some("timeout"));
    }
}
