//! `deploy unlock`: removes a lock that is not ours, when [`deploy_core::lock::decide`] lets it.

use deploy_core::lock::{UnlockError, decide};
use deploy_core::port::{Lock, LockState};
use jiff::Timestamp;

/// `deploy unlock`: reads lock `key`, [`decide`]s, and removes it conditionally on the version
/// read ([`Lock::remove`]). Returns the lock as it was removed.
pub async fn unlock(
    lock: &dyn Lock,
    key: &str,
    wanted: &str,
    force: bool,
    now: Timestamp,
) -> Result<LockState, UnlockError> {
    let state = lock.inspect(key).await?;
    decide(key, state.as_ref(), wanted, force, now)?;
    let state = state.expect("decide refuses a free lock");
    if lock.remove(&state).await? {
        Ok(state)
    } else {
        Err(UnlockError::Changed {
            key: key.to_owned(),
        })
    }
}
