//! Integration tests of deploy-aws: the registry conformance suite against moto, and the
//! ECR wire protocol (awsJson1_1) against wiremock for what moto does not emulate.

mod harness;
mod moto;
mod wire;
