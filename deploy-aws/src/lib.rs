//! Amazon ECR adapter for the registry port of deploy-core (filled in by the ECR issue).
