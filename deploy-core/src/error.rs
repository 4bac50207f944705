//! The one error type of the ports, keyed by what the caller must decide.

use std::time::Duration;

/// An error from a port (registry, Argo CD, lock, audit log).
///
/// The variants say what the caller must decide, not which backend failed:
/// retry later ([`Error::Transient`]), wait out ([`Error::Collision`]),
/// tell the user to fix access ([`Error::Permission`]), and so on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist (or the caller may not see it).
    #[error("{what} not found{}", hint_suffix(.hint))]
    NotFound {
        /// What was looked for, e.g. "application myapp-prod-us-west-2".
        what: String,
        /// What to do about it, if we know.
        hint: Option<String>,
    },
    /// Another operation is already running on the object (Argo CD code 9); wait it out.
    #[error("{what}: another operation is already in progress")]
    Collision {
        /// The object.
        what: String,
    },
    /// The object changed since it was read (optimistic concurrency).
    #[error("{what} was changed by someone else; read it again")]
    Conflict {
        /// The object.
        what: String,
    },
    /// The lock is held by another run.
    #[error("lock {key} is held by {holder} until {expires_at}")]
    LockHeld {
        /// The lock's name.
        key: String,
        /// Who holds it.
        holder: String,
        /// When it expires unless renewed (RFC 3339).
        expires_at: String,
    },
    /// Authentication or authorization failed.
    #[error("{message}")]
    Permission {
        /// What was refused and how to get access.
        message: String,
    },
    /// The server refused the request on purpose (e.g. an Argo CD sync window).
    #[error("{message}")]
    Refused {
        /// Why.
        message: String,
    },
    /// Argo CD refused a sync because a sync window of the Application's project forbids it
    /// now (argocd-server's Sync answers PermissionDenied "cannot sync: blocked by sync
    /// window", `server/application/application.go`). The adapter that reads Argo CD's answer
    /// says so once; nothing downstream reads the message to find out.
    #[error("{message}")]
    BlockedByWindow {
        /// Argo CD's words, with the Application.
        message: String,
    },
    /// A temporary failure that survived the backend's own retries.
    #[error("{message}")]
    Transient {
        /// What failed.
        message: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The request or the answer was malformed; retrying will not help.
    #[error("{message}")]
    Invalid {
        /// What was wrong.
        message: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

impl Error {
    /// A [`Error::NotFound`] without a hint.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound {
            what: what.into(),
            hint: None,
        }
    }

    /// A [`Error::Transient`] without a retry hint.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// The variant's name in snake case, e.g. for a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Collision { .. } => "collision",
            Self::Conflict { .. } => "conflict",
            Self::LockHeld { .. } => "lock_held",
            Self::Permission { .. } => "permission",
            Self::Refused { .. } => "refused",
            Self::BlockedByWindow { .. } => "blocked_by_window",
            Self::Transient { .. } => "transient",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// Result of a port call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
