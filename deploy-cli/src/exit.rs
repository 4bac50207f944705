//! Exit codes and how errors map to them.

use deploy_core::config::ConfigError;
use deploy_core::trail::Outcome;
use deploy_engine::engine::EngineError;

/// The process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success,
    /// 1: the operation failed (a cluster went Degraded; rolled back), or an error finding.
    Failed,
    /// 2: usage or configuration error.
    Usage,
    /// 3: a gate is not met or a release is incomplete; nothing was changed.
    GateNotMet,
    /// 4: another promotion holds the lock.
    Locked,
    /// 5: halted for a decision or a wait, nothing rolled back: a check was inconclusive
    /// (run promote again to continue, or rollback), or a sync window blocks the next wave.
    Decision,
    /// 130: interrupted.
    Interrupted,
}

impl Exit {
    /// The number.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::GateNotMet => 3,
            Self::Locked => 4,
            Self::Decision => 5,
            Self::Interrupted => 130,
        }
    }

    /// The exit code of a run that ended with `outcome`.
    pub fn of_outcome(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded | Outcome::UpToDate | Outcome::Unlocked => Self::Success,
            // A report never ends in Started (that is the first audit record's outcome).
            Outcome::RolledBack | Outcome::Failed | Outcome::Started => Self::Failed,
            Outcome::Interrupted => Self::Interrupted,
            Outcome::Inconclusive | Outcome::Halted => Self::Decision,
        }
    }

    /// The exit code of a run's report: its outcome's, except that a run whose end record
    /// could not be written never exits 0 (the operation's record failed).
    pub fn of_report(report: &deploy_core::rollout::event::RunReport) -> Self {
        match Self::of_outcome(report.outcome) {
            Self::Success if report.record_error.is_some() => Self::Failed,
            code => code,
        }
    }

    /// The exit code of an error that ended the command.
    pub fn of_error(e: &anyhow::Error) -> Self {
        if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some() {
            return Self::Usage;
        }
        match e.downcast_ref::<EngineError>() {
            Some(
                EngineError::GateFailed(_) | EngineError::Stale(_) | EngineError::WindowBlocked(_),
            ) => Self::GateNotMet,
            Some(EngineError::Locked { .. }) => Self::Locked,
            _ => Self::Failed,
        }
    }
}

/// A mistake in how the command was called (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let cfg = ConfigError {
            file: "d.toml".into(),
            line: 1,
            column: 1,
            message: "x".into(),
        };
        let gate = deploy_core::plan::promotion::Gate {
            name: deploy_core::plan::promotion::GateName::TargetDigests,
            passed: false,
            summary: "s".into(),
            details: vec![],
        };
        let check = |e: anyhow::Error, want: u8| assert_eq!(Exit::of_error(&e).code(), want, "{e}");
        check(cfg.into(), 2);
        check(UsageError("u".into()).into(), 2);
        check(EngineError::GateFailed(gate).into(), 3);
        check(
            EngineError::Locked {
                environment: "prod".into(),
                holder: "h".into(),
                expires_at: "t".into(),
            }
            .into(),
            4,
        );
        check(EngineError::Stale("x".into()).into(), 3);
        check(anyhow::anyhow!("boom"), 1);
        check(
            anyhow::Error::from(UsageError("u".into())).context("while parsing"),
            2,
        );
        assert_eq!(Exit::of_outcome(Outcome::RolledBack).code(), 1);
        assert_eq!(Exit::of_outcome(Outcome::Interrupted).code(), 130);
        assert_eq!(Exit::of_outcome(Outcome::UpToDate).code(), 0);
        assert_eq!(Exit::of_outcome(Outcome::Inconclusive).code(), 5);
    }
}
