//! Operations (`v1alpha1Operation`): the one `deploy` starts, and `status.operationState` with
//! its port view.

use deploy_core::port::{self, OperationPhase};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{ApplicationSource, Extra};

/// A name/value pair (`v1alpha1Info`), e.g. an operation's `info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// Who started an operation (`v1alpha1OperationInitiator`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Initiator {
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Started by auto-sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<bool>,
}

/// The top-level `operation` and `status.operationState.operation` (`v1alpha1Operation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// A sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncOperation>,
    /// Who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiated_by: Option<Initiator>,
    /// Free-form name/value pairs; `deploy` stores its operation id here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<Info>,
    /// Everything else (retry).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Operation {
    /// The operation `deploy` starts for a sync request, as Argo CD's sync endpoint would
    /// record it (used by the Kubernetes backend, which writes `.operation` itself).
    pub fn for_sync(request: &port::SyncRequest, username: Option<&str>) -> Self {
        Self {
            sync: Some(SyncOperation {
                prune: Some(request.prune).filter(|p| *p),
                ..SyncOperation::default()
            }),
            initiated_by: Some(Initiator {
                username: username.map(str::to_owned),
                automated: None,
            }),
            info: vec![operation_info(&request.operation_id)],
            extra: Extra::new(),
        }
    }
}

/// The `info` entry that marks an operation as ours.
pub fn operation_info(operation_id: &str) -> Info {
    Info {
        name: port::OPERATION_INFO_KEY.to_owned(),
        value: operation_id.to_owned(),
    }
}

/// `operation.sync` (`v1alpha1SyncOperation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperation {
    /// Revision to sync to; empty is the source's targetRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Delete resources no longer in git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The source to sync, when it differs from the spec (rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// Sync options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
    /// Everything else (resources, syncStrategy, revisions, sources, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.operationState` (`v1alpha1OperationState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStateWire {
    /// `Running`, `Terminating`, `Succeeded`, `Failed` or `Error`.
    #[serde(default)]
    pub phase: String,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The operation being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// End; set when the operation completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Everything else (syncResult, retryCount).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Maps an operation phase; an unknown word counts as running until `finishedAt` is set.
pub fn phase(s: &str, finished: bool) -> OperationPhase {
    match s {
        "Running" => OperationPhase::Running,
        "Terminating" => OperationPhase::Terminating,
        "Succeeded" => OperationPhase::Succeeded,
        "Failed" => OperationPhase::Failed,
        "Error" => OperationPhase::Error,
        _ if finished => OperationPhase::Error,
        _ => OperationPhase::Running,
    }
}

impl OperationStateWire {
    /// The port view.
    pub fn to_port(&self) -> port::OperationState {
        let op = self.operation.as_ref();
        let initiated_by = op.and_then(|o| o.initiated_by.as_ref()).and_then(|i| {
            i.username
                .clone()
                .or_else(|| i.automated.filter(|a| *a).map(|_| "automated".to_owned()))
        });
        port::OperationState {
            phase: phase(&self.phase, self.finished_at.is_some()),
            message: self.message.clone().unwrap_or_default(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            initiated_by,
            info: op
                .map(|o| {
                    o.info
                        .iter()
                        .map(|i| (i.name.clone(), i.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
