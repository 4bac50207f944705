//! Integration tests of deploy-aws: the registry conformance suite against moto, and the
//! ECR wire protocol (awsJson1_1) against wiremock for what moto does not emulate.
//! The S3 state store (lock and audit trail) against moto's S3.
//! The moto harness is the library's `deploy_aws::moto` (feature `moto`).

mod moto;
mod state;
mod wire;
