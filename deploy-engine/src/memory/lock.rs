//! An in-memory lock with expiry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use deploy_core::error::{Error, Result};
use deploy_core::port::{Clock, Lease, Lock, LockState};

/// An in-memory lock table; its state is the held leases.
#[derive(Debug, Clone)]
pub struct InMemoryLock {
    leases: Arc<Mutex<BTreeMap<String, Lease>>>,
    clock: Arc<dyn Clock>,
}

impl InMemoryLock {
    /// A lock table with `leases` held (e.g. loaded by the sandbox).
    pub fn from_state(leases: BTreeMap<String, Lease>, clock: Arc<dyn Clock>) -> Self {
        Self {
            leases: Arc::new(Mutex::new(leases)),
            clock,
        }
    }

    /// An empty lock table.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::from_state(BTreeMap::new(), clock)
    }

    /// The held leases.
    pub fn state(&self) -> BTreeMap<String, Lease> {
        self.leases.lock().expect("poisoned").clone()
    }

    fn expiry(&self, ttl: Duration) -> jiff::Timestamp {
        let now = self.clock.now();
        now.checked_add(ttl).unwrap_or(now)
    }
}

#[async_trait]
impl Lock for InMemoryLock {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Lease> {
        let now = self.clock.now();
        let mut leases = self.leases.lock().expect("poisoned");
        if let Some(l) = leases
            .get(key)
            .filter(|l| l.expires_at > now && l.holder != holder)
        {
            return Err(Error::LockHeld {
                key: key.into(),
                holder: l.holder.clone(),
                expires_at: l.expires_at.to_string(),
            });
        }
        let lease = Lease {
            key: key.into(),
            holder: holder.into(),
            expires_at: self.expiry(ttl),
        };
        leases.insert(key.into(), lease.clone());
        Ok(lease)
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let now = self.clock.now();
        let mut leases = self.leases.lock().expect("poisoned");
        match leases.get(&lease.key) {
            Some(l) if l.holder == lease.holder => {}
            Some(l) if l.expires_at > now => {
                return Err(Error::LockHeld {
                    key: lease.key.clone(),
                    holder: l.holder.clone(),
                    expires_at: l.expires_at.to_string(),
                });
            }
            _ => {
                return Err(Error::LockHeld {
                    key: lease.key.clone(),
                    holder: "nobody (the lease was lost)".into(),
                    expires_at: now.to_string(),
                });
            }
        }
        let renewed = Lease {
            expires_at: self.expiry(ttl),
            ..lease.clone()
        };
        leases.insert(lease.key.clone(), renewed.clone());
        Ok(renewed)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut leases = self.leases.lock().expect("poisoned");
        if leases
            .get(&lease.key)
            .is_some_and(|l| l.holder == lease.holder)
        {
            leases.remove(&lease.key);
        }
        Ok(())
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockState>> {
        Ok(self
            .leases
            .lock()
            .expect("poisoned")
            .get(key)
            .map(|l| LockState {
                lease: l.clone(),
                acquired_at: None,
                renewed_at: None,
                // A lease is rewritten whole, so holder and expiry are its version.
                version: format!("{}@{}", l.holder, l.expires_at),
            }))
    }

    async fn remove(&self, seen: &LockState) -> Result<bool> {
        let mut leases = self.leases.lock().expect("poisoned");
        match leases.get(&seen.lease.key) {
            None => Ok(true),
            Some(l) if *l == seen.lease => {
                leases.remove(&seen.lease.key);
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
}

#[cfg(feature = "conformance")]
#[async_trait]
impl crate::conformance::lock::LockFixture for InMemoryLock {
    async fn expire(&self, key: &str) {
        let now = self.clock.now();
        if let Some(l) = self.leases.lock().expect("poisoned").get_mut(key) {
            l.expires_at = now;
        }
    }

    async fn delete(&self, key: &str) {
        self.leases.lock().expect("poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn conformance() {
        let l = InMemoryLock::new(Arc::new(crate::clock::TokioClock::new(
            jiff::Timestamp::UNIX_EPOCH,
        )));
        crate::conformance::lock::run_all(&l, &l, "mem")
            .await
            .unwrap();
    }
}
