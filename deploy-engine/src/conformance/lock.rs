//! The lock port's contract: one holder at a time, expiry, renewal, release.

use std::time::Duration;

use async_trait::async_trait;

use super::Check;
use crate::ensure;
use deploy_core::error::Error;
use deploy_core::port::Lock;

/// Lets a check make a lease expire without waiting on the clock.
#[async_trait]
pub trait LockFixture: Send + Sync {
    /// Makes the current lease on `key` expired.
    async fn expire(&self, key: &str);

    /// Deletes the stored lease on `key` behind its holder's back (a person deleting the lock
    /// object, a controller erasing the annotation).
    async fn delete(&self, key: &str);
}

const TTL: Duration = Duration::from_secs(600);

/// Runs every check on locks whose names start with `prefix`.
pub async fn run_all(port: &dyn Lock, fixture: &dyn LockFixture, prefix: &str) -> Check {
    exclusive(port, prefix).await?;
    renew_and_release(port, prefix).await?;
    expiry(port, fixture, prefix).await?;
    deleted(port, fixture, prefix).await?;
    unlock(port, fixture, prefix).await?;
    Ok(())
}

/// A held lock refuses a second holder, naming the first.
pub async fn exclusive(port: &dyn Lock, prefix: &str) -> Check {
    let key = format!("{prefix}-exclusive");
    let lease = port
        .acquire(&key, "alice", TTL)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    ensure!(
        lease.holder == "alice" && lease.key == key,
        "acquire: lease {lease:?}"
    );
    let got = port.acquire(&key, "bob", TTL).await;
    ensure!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder == "alice"),
        "second acquire: expected LockHeld by alice, got {got:?}"
    );
    port.release(&lease)
        .await
        .map_err(|e| format!("release: {e}"))?;
    Ok(())
}

/// The holder renews; after release another run acquires; a lost lease cannot be renewed.
pub async fn renew_and_release(port: &dyn Lock, prefix: &str) -> Check {
    let key = format!("{prefix}-renew");
    let lease = port
        .acquire(&key, "alice", TTL)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    let renewed = port
        .renew(&lease, TTL * 2)
        .await
        .map_err(|e| format!("renew: {e}"))?;
    ensure!(
        renewed.expires_at >= lease.expires_at,
        "renew: expiry moved back"
    );
    port.release(&renewed)
        .await
        .map_err(|e| format!("release: {e}"))?;
    let bob = port
        .acquire(&key, "bob", TTL)
        .await
        .map_err(|e| format!("acquire after release: {e}"))?;
    let got = port.renew(&renewed, TTL).await;
    ensure!(
        matches!(got, Err(Error::LockHeld { .. })),
        "renew of a lost lease: expected LockHeld, got {got:?}"
    );
    port.release(&renewed)
        .await
        .map_err(|e| format!("release of a lost lease must not fail: {e}"))?;
    let still = port.acquire(&key, "carol", TTL).await;
    ensure!(
        matches!(still, Err(Error::LockHeld { .. })),
        "releasing a lost lease must not free bob's: {still:?}"
    );
    port.release(&bob)
        .await
        .map_err(|e| format!("release: {e}"))?;
    Ok(())
}

/// An expired lease is taken over.
pub async fn expiry(port: &dyn Lock, fixture: &dyn LockFixture, prefix: &str) -> Check {
    let key = format!("{prefix}-expiry");
    port.acquire(&key, "crashed", TTL)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    fixture.expire(&key).await;
    let lease = port
        .acquire(&key, "next", TTL)
        .await
        .map_err(|e| format!("acquire of an expired lock: {e}"))?;
    ensure!(lease.holder == "next", "expiry: holder {}", lease.holder);
    port.release(&lease)
        .await
        .map_err(|e| format!("release: {e}"))?;
    Ok(())
}

/// A lease deleted behind its holder's back is held by nobody: renewing it is
/// [`Error::LockHeld`] naming nobody (never another error, which would read as "the lock ran
/// out"), and the holder takes it again.
pub async fn deleted(port: &dyn Lock, fixture: &dyn LockFixture, prefix: &str) -> Check {
    let key = format!("{prefix}-deleted");
    let lease = port
        .acquire(&key, "alice", TTL)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    fixture.delete(&key).await;
    let got = port.renew(&lease, TTL).await;
    ensure!(
        matches!(&got, Err(Error::LockHeld { holder, .. }) if holder.is_empty() || holder.starts_with("nobody")),
        "renew of a deleted lease: expected LockHeld by nobody, got {got:?}"
    );
    let again = port
        .acquire(&key, "alice", TTL)
        .await
        .map_err(|e| format!("acquire after the delete: {e}"))?;
    port.release(&again)
        .await
        .map_err(|e| format!("release: {e}"))?;
    Ok(())
}

/// `inspect` shows the holder, its id and expiry, and nothing once released; `remove` deletes
/// exactly the lock it was shown, and leaves a lock renewed or taken since then alone.
pub async fn unlock(port: &dyn Lock, fixture: &dyn LockFixture, prefix: &str) -> Check {
    let key = format!("{prefix}-unlock");
    let none = port
        .inspect(&key)
        .await
        .map_err(|e| format!("inspect of a free lock: {e}"))?;
    ensure!(none.is_none(), "inspect of a free lock: {none:?}");
    let lease = port
        .acquire(&key, "alice", TTL)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    let seen = port
        .inspect(&key)
        .await
        .map_err(|e| format!("inspect: {e}"))?
        .ok_or("inspect of a held lock: None")?;
    ensure!(
        seen.lease.holder == "alice"
            && seen.lease.key == key
            && seen.id() == deploy_core::port::lock_id("alice"),
        "inspect: {seen:?}"
    );
    let drift = seen.lease.expires_at.duration_since(lease.expires_at).abs();
    ensure!(
        drift <= jiff::SignedDuration::from_secs(1),
        "inspect: expiry {} for a lease until {}",
        seen.lease.expires_at,
        lease.expires_at
    );
    // Renewed since it was shown: left alone.
    let renewed = port
        .renew(&lease, TTL * 2)
        .await
        .map_err(|e| format!("renew: {e}"))?;
    let removed = port
        .remove(&seen)
        .await
        .map_err(|e| format!("remove of a renewed lock: {e}"))?;
    ensure!(
        !removed,
        "remove took away a lock renewed since it was shown"
    );
    let still = port.renew(&renewed, TTL).await;
    ensure!(
        still.is_ok(),
        "the holder lost a lock renewed since: {still:?}"
    );
    // Taken over by another holder since it was shown: left alone.
    let seen = port
        .inspect(&key)
        .await
        .map_err(|e| format!("inspect: {e}"))?
        .ok_or("inspect of a held lock: None")?;
    fixture.expire(&key).await;
    let bob = port
        .acquire(&key, "bob", TTL)
        .await
        .map_err(|e| format!("acquire of an expired lock: {e}"))?;
    let removed = port
        .remove(&seen)
        .await
        .map_err(|e| format!("remove of a lock taken since: {e}"))?;
    ensure!(
        !removed,
        "remove took away bob's lock, taken since it was shown"
    );
    // Removed as shown: free for the next run.
    let seen = port
        .inspect(&key)
        .await
        .map_err(|e| format!("inspect: {e}"))?
        .ok_or("inspect of bob's lock: None")?;
    ensure!(seen.lease.holder == "bob", "inspect: {seen:?}");
    let removed = port
        .remove(&seen)
        .await
        .map_err(|e| format!("remove: {e}"))?;
    ensure!(removed, "remove of the lock as shown did not remove it");
    let gone = port
        .inspect(&key)
        .await
        .map_err(|e| format!("inspect after remove: {e}"))?;
    ensure!(gone.is_none(), "inspect after remove: {gone:?}");
    let carol = port
        .acquire(&key, "carol", TTL)
        .await
        .map_err(|e| format!("acquire after remove: {e}"))?;
    let lost = port.renew(&bob, TTL).await;
    ensure!(
        matches!(lost, Err(Error::LockHeld { .. })),
        "bob renewed after his lock was removed and carol took it: {lost:?}"
    );
    port.release(&carol)
        .await
        .map_err(|e| format!("release: {e}"))?;
    Ok(())
}
