//! The lock port's contract: one holder at a time, expiry, renewal, release.

use std::time::Duration;

use async_trait::async_trait;

use super::Check;
use crate::ensure;
use crate::error::Error;
use crate::port::Lock;

/// Lets a check make a lease expire without waiting on the clock.
#[async_trait]
pub trait LockFixture: Send + Sync {
    /// Makes the current lease on `key` expired.
    async fn expire(&self, key: &str);
}

const TTL: Duration = Duration::from_secs(600);

/// Runs every check on locks whose names start with `prefix`.
pub async fn run_all(port: &dyn Lock, fixture: &dyn LockFixture, prefix: &str) -> Check {
    exclusive(port, prefix).await?;
    renew_and_release(port, prefix).await?;
    expiry(port, fixture, prefix).await?;
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
