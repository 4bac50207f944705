//! Serde types of the Argo CD objects on the wire (Application, ApplicationSet, Cluster) and their conversion to deploy-core port types.
