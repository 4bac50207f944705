//! The promotion lock as the engine holds it: one key per environment, who holds it
//! (`deploy_core::lock::Holder`), when a stale holder may be taken over, and a `LeaseKeeper` that renews
//! through failures while the lease still has time, takes a vanished lock again, renews
//! during soaks, and refuses a write once the lease has run out by the wall clock.

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

use deploy_core::error::Error;
use deploy_core::port::{Clock, Lease, Lock};
use deploy_core::rollout::lease::LeaseLost;

/// Keeps a lease alive for a run.
#[derive(Debug)]
pub(crate) struct LeaseKeeper<'a> {
    lock: &'a dyn Lock,
    clock: &'a dyn Clock,
    ttl: Duration,
    /// The lock as messages name it: its key and backend.
    name: String,
    lease: Mutex<Lease>,
    /// Set once another run provably holds the lock: from then on no write is ours to make,
    /// whatever the local copy of the lease says.
    taken: Mutex<Option<LeaseLost>>,
}

/// A write is refused when the lease has less than this left; a renewal is tried first.
const MARGIN: Duration = Duration::from_secs(30);
/// Renew before a write when less than this is left.
const RENEW_BELOW: Duration = Duration::from_secs(120);

impl<'a> LeaseKeeper<'a> {
    pub(crate) fn new(
        lock: &'a dyn Lock,
        clock: &'a dyn Clock,
        ttl: Duration,
        lease: Lease,
        backend: &str,
    ) -> Self {
        let name = if backend.is_empty() {
            lease.key.clone()
        } else {
            format!("{} ({backend})", lease.key)
        };
        Self {
            lock,
            clock,
            ttl,
            name,
            lease: Mutex::new(lease),
            taken: Mutex::new(None),
        }
    }

    pub(crate) fn lease(&self) -> Lease {
        self.lease.lock().expect("poisoned").clone()
    }

    fn left(&self, lease: &Lease) -> Duration {
        let left = lease.expires_at.duration_since(self.clock.now());
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }

    fn keep(&self, lease: Lease) {
        *self.lease.lock().expect("poisoned") = lease;
    }

    /// Renews the lease. A lock the backend says is gone or held by nobody (a lock object
    /// removed by hand, an erased annotation) is taken again by `acquire`, which is atomic
    /// (`If-None-Match` on S3): only a lock another run provably holds is
    /// [`LeaseLost::Taken`]. Any other failure (unreachable, refused credentials, a
    /// conflicting write) is retried, with a growing pause, while the lease still has more
    /// than [`MARGIN`] left by the wall clock; then it is [`LeaseLost::Expired`].
    pub(crate) async fn renew(&self) -> Result<(), LeaseLost> {
        let mut pause = Duration::from_secs(1);
        let mut warned = false;
        loop {
            let lease = self.lease();
            let error = match self.lock.renew(&lease, self.ttl).await {
                Ok(l) => {
                    self.keep(l);
                    return Ok(());
                }
                Err(Error::LockHeld { .. } | Error::NotFound { .. }) => {
                    match self.lock.acquire(&lease.key, &lease.holder, self.ttl).await {
                        Ok(l) => {
                            tracing::warn!(
                                "the promotion lock {} was gone; took it again",
                                self.name
                            );
                            self.keep(l);
                            return Ok(());
                        }
                        // A backend that names us as the holder has not lost it to anyone:
                        // try again (below) rather than stop.
                        Err(Error::LockHeld {
                            key,
                            holder,
                            expires_at,
                        }) if holder == lease.holder => Error::LockHeld {
                            key,
                            holder,
                            expires_at,
                        },
                        Err(Error::LockHeld { holder, .. }) => {
                            let lost = LeaseLost::Taken { holder };
                            *self.taken.lock().expect("poisoned") = Some(lost.clone());
                            return Err(lost);
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if self.left(&lease) <= MARGIN + pause {
                return Err(LeaseLost::Expired {
                    lock: self.name.clone(),
                    reason: error.to_string(),
                });
            }
            if warned {
                tracing::debug!("renewing the promotion lock {} failed: {error}", self.name);
            } else {
                warned = true;
                tracing::warn!(
                    "renewing the promotion lock {} failed: {error}; trying again while it has time",
                    self.name
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(15));
        }
    }

    /// Renews the lease every third of its ttl for as long as it is polled (alongside a
    /// soak, which checks may make longer than a wave); resolves only when it is lost.
    pub(crate) async fn keep_renewed(&self) -> LeaseLost {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            if let Err(lost) = self.renew().await {
                return lost;
            }
        }
    }

    /// Before a write: the lease must still be ours by the wall clock. Close to its expiry
    /// (or past it, after a suspend that tokio's clock does not see) it is renewed first.
    /// Once another run was seen holding the lock, every write is refused.
    pub(crate) async fn before_write(&self) -> Result<(), LeaseLost> {
        if let Some(lost) = self.taken.lock().expect("poisoned").clone() {
            return Err(lost);
        }
        let lease = self.lease();
        if self.left(&lease) > RENEW_BELOW {
            return Ok(());
        }
        self.renew().await
    }

    pub(crate) async fn release(&self) {
        let lease = self.lease();
        let _ = self.lock.release(&lease).await;
    }

    /// When the lease runs out unless renewed.
    pub(crate) fn expires_at(&self) -> Timestamp {
        self.lease().expires_at
    }
}
