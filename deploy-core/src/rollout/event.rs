//! What the engine reports: [`Event`]s as they happen, and the [`RunReport`] at the end.

use serde::{Deserialize, Serialize};

use crate::model::Release;
use crate::plan::promotion::Gate;
use crate::port::{Health, OperationPhase, SyncStatus};
use crate::trail::{AppReport, Outcome};

/// What happened, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The run began.
    Started {
        /// Run id.
        run_id: String,
        /// Environment.
        environment: String,
        /// The release.
        release: Release,
        /// Clusters by wave.
        waves: Vec<Vec<String>>,
    },
    /// A gate's verdict (repeated from the plan so the stream is complete).
    Gate(Gate),
    /// The lock is ours.
    LockAcquired {
        /// Lock name.
        key: String,
        /// Expiry.
        expires_at: jiff::Timestamp,
    },
    /// A stale lock of a process that no longer exists was taken over.
    LockTakenOver {
        /// Who held it.
        holder: String,
    },
    /// A wave waits for its Applications' sync windows to let it sync.
    WaveBlocked {
        /// Wave.
        wave: usize,
        /// The Application whose window opens last.
        application: String,
        /// The window, described.
        window: String,
        /// When the wave may sync.
        until: Option<jiff::Timestamp>,
    },
    /// A wave began.
    WaveStarted {
        /// 1-based.
        wave: usize,
        /// Its clusters.
        clusters: Vec<String>,
    },
    /// An Application already ran the release.
    AppSkipped {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
    },
    /// An Application already at the release that no finished soak observed there (the run
    /// that brought it was interrupted): nothing is written to it; its wave soaks it again.
    AppSoakingAgain {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
    },
    /// Waiting for someone else's operation on the Application.
    AppWaiting {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// Who started it.
        operation_by: String,
    },
    /// Our sync was accepted.
    AppSyncing {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// From this tag.
        from: String,
        /// To this tag.
        to: String,
    },
    /// Observed state changed.
    AppProgress {
        /// Cluster.
        cluster: String,
        /// Operation phase, if any.
        phase: Option<OperationPhase>,
        /// Sync status.
        sync: SyncStatus,
        /// Health.
        health: Health,
    },
    /// The Application runs the release, Synced and Healthy.
    AppHealthy {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// Milliseconds from our first write.
        elapsed_ms: u64,
    },
    /// The Application failed.
    AppFailed {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// Why.
        reason: String,
    },
    /// Soak began.
    SoakStarted {
        /// Wave.
        wave: usize,
        /// Milliseconds.
        duration_ms: u64,
    },
    /// The Application could not be observed (its watch broke, a read failed); the soak
    /// cannot count this time as observed.
    ObservationLost {
        /// Cluster.
        cluster: String,
        /// Application.
        application: String,
        /// The error.
        error: String,
    },
    /// The Application was observed again after a lapse.
    ObservationRestored {
        /// Cluster.
        cluster: String,
        /// Milliseconds without an observation.
        gap_ms: u64,
        /// The gap was longer than allowed: the soak starts over from now.
        soak_restarted: bool,
    },
    /// One measurement of a check on a cluster during the soak.
    CheckMeasured {
        /// The check.
        check: String,
        /// Cluster.
        cluster: String,
        /// The values (empty: no data, or an error); NaN and ±Inf as `"NaN"`, `"+Inf"`,
        /// `"-Inf"`, as in the audit record.
        #[serde(with = "crate::trail::samples")]
        values: Vec<f64>,
        /// The measurement's phase.
        phase: crate::check::Phase,
        /// The check's verdict after it.
        verdict: crate::check::Verdict,
        /// Why, for an error or no data.
        error: Option<String>,
    },
    /// Soak ended well.
    SoakFinished {
        /// Wave.
        wave: usize,
    },
    /// The run stopped on a failure.
    Halted {
        /// Why.
        reason: String,
    },
    /// Returning changed Applications to their previous release.
    RollingBack {
        /// Clusters.
        clusters: Vec<String>,
    },
    /// One Application's rollback ended.
    AppRolledBack {
        /// Cluster.
        cluster: String,
        /// To this tag.
        to: String,
        /// It is Healthy at the previous release.
        ok: bool,
        /// Why not, if not.
        reason: Option<String>,
    },
    /// A stop was requested; no new sync starts.
    Interrupting,
    /// The run ended.
    Finished {
        /// Outcome.
        outcome: Outcome,
        /// One line.
        message: String,
    },
}

/// The run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Environment.
    pub environment: String,
    /// Release.
    pub release: Release,
    /// Outcome.
    pub outcome: Outcome,
    /// One line.
    pub message: String,
    /// Per Application, in wave order.
    pub apps: Vec<AppReport>,
    /// Why the run's end record could not be written, if it could not: what happened stands,
    /// but the run must not exit 0 with its record missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    /// How it ended, typed: what `outcome` and `message` say in words, with the failure
    /// (what, where, why) kept whole. `None` only for a report read back from JSON.
    #[serde(skip)]
    pub end: Option<crate::rollout::outcome::End>,
}
