//! SigV4 signing of Amazon Managed Prometheus queries, checked against wiremock.
