//! Argo CD adapters (REST API and Kubernetes API) for the Argo CD port of deploy-core (filled in by the Argo CD issue).
