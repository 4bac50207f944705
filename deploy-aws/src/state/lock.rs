//! The promotion lock of one environment as one S3 object (see the parent module's docs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deploy_core::port::{Clock, Lease, Lock, LockState};
use deploy_core::{Error, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::*;

/// The promotion lock of one environment as an S3 object (see the module docs).
#[derive(Debug, Clone)]
pub struct S3Lock {
    pub(super) store: S3Store,
    pub(super) environment: String,
    pub(super) promotion_key: String,
    pub(super) clock: Arc<dyn Clock>,
    /// Lock name → what we last wrote there.
    pub(super) etags: Arc<Mutex<HashMap<String, Ours>>>,
}

/// A lease this process wrote: its holder, the object's ETag and when it was taken.
#[derive(Debug, Clone)]
pub(super) struct Ours {
    holder: String,
    etag: String,
    acquired_at: Timestamp,
}

/// The lock object's body: the [`Lease`] and, since `deploy unlock`, when it was taken and
/// last written (absent from objects written by older versions).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    lease: Lease,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquired_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renewed_at: Option<Timestamp>,
}

/// How often acquire re-reads after losing a race before it reports the lock as held.
const RACES: usize = 4;

impl S3Lock {
    /// The object key of the lock named `key`.
    pub fn object_key(&self, key: &str) -> String {
        if key == self.promotion_key {
            self.store.location.key(&self.environment, "lock.json")
        } else {
            self.store
                .location
                .key(&self.environment, &format!("locks/{key}.json"))
        }
    }

    fn remember(&self, stored: &Stored, etag: String) {
        let ours = Ours {
            holder: stored.lease.holder.clone(),
            etag,
            acquired_at: stored.acquired_at.unwrap_or_else(|| self.clock.now()),
        };
        guard(&self.etags).insert(stored.lease.key.clone(), ours);
    }

    fn remembered(&self, lease: &Lease) -> Option<Ours> {
        guard(&self.etags)
            .get(&lease.key)
            .filter(|ours| ours.holder == lease.holder)
            .cloned()
    }

    /// What to write for `holder` now, taken at `acquired_at` (now when `None`).
    fn stored(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        acquired_at: Option<Timestamp>,
    ) -> Stored {
        let now = self.clock.now();
        Stored {
            lease: Lease {
                key: key.to_owned(),
                holder: holder.to_owned(),
                expires_at: now.checked_add(ttl).unwrap_or(now),
            },
            acquired_at: Some(acquired_at.unwrap_or(now)),
            renewed_at: Some(now),
        }
    }

    fn body(stored: &Stored) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(stored)
            .map_err(|e| Error::invalid(format!("serializing a lease: {e}")))
    }

    /// The lease stored at `object`, with its ETag.
    async fn read(&self, object: &str) -> Result<Option<(Stored, String)>> {
        let Some((bytes, etag)) = self.store.get(object).await? else {
            return Ok(None);
        };
        let stored = serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!(
                "the lock s3://{}/{object} is not a lease ({e}); if no promotion of {} is running, \
                 `deploy unlock --env {}` shows it and says how to remove it",
                self.store.location.bucket, self.environment, self.environment
            ))
        })?;
        Ok(Some((stored, etag)))
    }

    fn held(lease: &Lease) -> Error {
        Error::LockHeld {
            key: lease.key.clone(),
            holder: lease.holder.clone(),
            expires_at: lease.expires_at.to_string(),
        }
    }

    fn lost(&self, key: &str) -> Error {
        Error::LockHeld {
            key: key.to_owned(),
            holder: "nobody (the lock object was deleted)".into(),
            expires_at: self.clock.now().to_string(),
        }
    }

    /// Before taking over `current`, which looks expired by this machine's clock: S3's clock
    /// (the `Date` of the read just made) must agree, or this machine's clock is off and the
    /// lease may still be live.
    fn trust_expiry(&self, current: &Lease) -> Result<()> {
        let store_now = *guard(&self.store.date);
        deploy_core::lock::trust_expiry("S3", current.expires_at, self.clock.now(), store_now)
            .map_err(|skew| Error::Refused {
                message: format!(
                    "not taking over the lock {} of {}: {skew}",
                    current.key, current.holder
                ),
            })
    }
}

#[async_trait]
impl Lock for S3Lock {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Lease> {
        let object = self.object_key(key);
        let fresh = self.stored(key, holder, ttl, None);
        let body = Self::body(&fresh)?;
        let mut last = None;
        for _ in 0..RACES {
            if let Written::Yes(etag) = self
                .store
                .put(&object, body.clone(), Condition::Absent)
                .await?
            {
                self.remember(&fresh, etag);
                return Ok(fresh.lease);
            }
            // Someone holds it, or held it: read whose it is and until when.
            let Some((current, etag)) = self.read(&object).await? else {
                continue; // released in between: try again
            };
            let ours = current.lease.holder == holder;
            if !ours && current.lease.expires_at > self.clock.now() {
                return Err(Self::held(&current.lease));
            }
            if !ours {
                self.trust_expiry(&current.lease)?;
            }
            // Expired (or ours): take it over, only if nobody rewrote it since we read it.
            let taking = if ours {
                self.stored(key, holder, ttl, current.acquired_at)
            } else {
                fresh.clone()
            };
            match self
                .store
                .put(&object, Self::body(&taking)?, Condition::ETag(&etag))
                .await?
            {
                Written::Yes(etag) => {
                    if !ours {
                        tracing::info!(
                            "took over the expired lock {key} of {} (expired {})",
                            current.lease.holder,
                            current.lease.expires_at
                        );
                    }
                    self.remember(&taking, etag);
                    return Ok(taking.lease);
                }
                Written::PreconditionFailed => last = Some(current.lease),
            }
        }
        // Every race lost: whoever won holds it now.
        match self.read(&object).await? {
            Some((current, _)) if current.lease.holder != holder => Err(Self::held(&current.lease)),
            _ => Err(last.map_or_else(|| self.lost(key), |l| Self::held(&l))),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let object = self.object_key(&lease.key);
        let ours = self.remembered(lease);
        let renewed = self.stored(
            &lease.key,
            &lease.holder,
            ttl,
            ours.as_ref().map(|o| o.acquired_at),
        );
        let body = Self::body(&renewed)?;
        let mut etag = ours.map(|o| o.etag);
        for _ in 0..2 {
            let current = match etag.take() {
                Some(e) => e,
                None => match self.read(&object).await? {
                    Some((current, e)) if current.lease.holder == lease.holder => e,
                    Some((current, _)) => return Err(Self::held(&current.lease)),
                    // Deleted (by hand, or by `deploy unlock`): nobody holds it, and the
                    // holder may take it again with `If-None-Match`.
                    None => return Err(self.lost(&lease.key)),
                },
            };
            if let Written::Yes(e) = self
                .store
                .put(&object, body.clone(), Condition::ETag(&current))
                .await?
            {
                self.remember(&renewed, e);
                return Ok(renewed.lease);
            }
        }
        match self.read(&object).await? {
            Some((current, _)) if current.lease.holder != lease.holder => {
                Err(Self::held(&current.lease))
            }
            _ => Err(self.lost(&lease.key)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let object = self.object_key(&lease.key);
        let mut etag = self.remembered(lease).map(|o| o.etag);
        for _ in 0..2 {
            let current = match etag.take() {
                Some(e) => e,
                None => match self.read(&object).await? {
                    Some((current, e)) if current.lease.holder == lease.holder => e,
                    // Lost or already released: nothing of ours to free.
                    _ => break,
                },
            };
            if self.store.delete(&object, &current).await? {
                break;
            }
        }
        guard(&self.etags).remove(&lease.key);
        Ok(())
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockState>> {
        let object = self.object_key(key);
        let Some((bytes, etag)) = self.store.get(&object).await? else {
            return Ok(None);
        };
        let state = match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) => LockState {
                lease: stored.lease,
                acquired_at: stored.acquired_at,
                renewed_at: stored.renewed_at,
                version: etag,
            },
            // Not a lease (written by hand, or by something else): shown as expired, so that
            // `deploy unlock` can remove it with the id it prints.
            Err(e) => LockState {
                lease: Lease {
                    key: key.to_owned(),
                    holder: format!(
                        "unreadable s3://{}/{object} ({e})",
                        self.store.location.bucket
                    ),
                    expires_at: Timestamp::UNIX_EPOCH,
                },
                acquired_at: None,
                renewed_at: None,
                version: etag,
            },
        };
        Ok(Some(state))
    }

    async fn remove(&self, seen: &LockState) -> Result<bool> {
        // `DeleteObject` with `If-Match` on the ETag read: a lock rewritten since is kept.
        self.store
            .delete(&self.object_key(&seen.lease.key), &seen.version)
            .await
    }
}

#[cfg(feature = "moto")]
#[async_trait]
impl deploy_engine::conformance::lock::LockFixture for S3Lock {
    async fn expire(&self, key: &str) {
        let object = self.object_key(key);
        let (mut stored, _) = self
            .read(&object)
            .await
            .expect("read the lease")
            .expect("a lease to expire");
        stored.lease.expires_at = self.clock.now();
        let body = Self::body(&stored).expect("lease");
        self.store
            .put(&object, body, Condition::None)
            .await
            .expect("rewrite the lease");
    }

    async fn delete(&self, key: &str) {
        self.store
            .client
            .delete_object()
            .bucket(&self.store.location.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .expect("delete the lock object");
    }
}
