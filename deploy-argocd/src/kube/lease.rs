//! The promotion lock as a `coordination.k8s.io/v1` Lease, the object Kubernetes leader
//! election uses.
//!
//! A lock `key` is the Lease of that name (made a valid object name: lowercase, `[a-z0-9.-]`).
//! `spec.holderIdentity` names the holder; the lease expires at
//! `spec.renewTime + spec.leaseDurationSeconds`, as client-go's leader election reads it.
//! Every write is a full replace carrying the `resourceVersion` it was read at, so two runs
//! racing for the same Lease cannot both win: the loser gets 409 Conflict, reads again and
//! then sees the winner's hold. Release clears the holder (as client-go's
//! `ReleaseOnCancel` does) rather than deleting the object, so `leaseTransitions` keeps
//! counting. Acquiring a lock the same holder already has refreshes it; releasing a lease
//! someone else now holds leaves theirs alone.
//!
//! `deploy unlock` reads the Lease ([`Lock::inspect`]) and deletes it with a `resourceVersion`
//! precondition ([`Lock::remove`]), so a Lease renewed or taken since it was shown is kept.
//!
//! Expiry is judged with the injected [`Clock`]: runs on different machines must have
//! roughly synchronised clocks (NTP), as Kubernetes leader election also assumes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use async_trait::async_trait;
use deploy_core::Error;
use deploy_core::port::{Clock, Lease, Lock, LockState, SystemClock};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease as KubeLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::chrono::{DateTime, Utc};

use super::{CONFLICT_RETRIES, is_conflict, map_error};

/// [`Lock`] over Kubernetes Leases in one namespace.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<KubeLease>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseLock")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl LeaseLock {
    /// Leases in `namespace` (usually Argo CD's), timed by the system clock.
    pub fn new(client: ::kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for acquire and renew times and for expiry decisions.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// The Lease name of lock `key`: a DNS subdomain (lowercase alphanumerics, `-` and `.`,
/// starting and ending alphanumeric, at most 253 characters).
pub fn lease_name(key: &str) -> String {
    let mapped: String = key
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(253).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    if name.is_empty() {
        "deploy-lock".into()
    } else {
        name
    }
}

fn to_micro(t: Timestamp) -> MicroTime {
    let at = DateTime::<Utc>::from_timestamp(t.as_second(), t.subsec_nanosecond().unsigned_abs())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    MicroTime(at)
}

fn from_micro(t: &MicroTime) -> Timestamp {
    Timestamp::new(t.0.timestamp(), t.0.timestamp_subsec_nanos() as i32).unwrap_or(Timestamp::MIN)
}

fn ttl_seconds(ttl: Duration) -> i32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

/// Who holds the Lease and until when; `None` when nobody does.
fn current_holder(spec: &LeaseSpec) -> Option<(String, Timestamp)> {
    let who = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let since = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let duration =
        jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let until = from_micro(since)
        .checked_add(duration)
        .unwrap_or(Timestamp::MAX);
    Some((who.to_owned(), until))
}

fn held(key: &str, holder: String, until: Timestamp) -> Error {
    Error::LockHeld {
        key: key.to_owned(),
        holder,
        expires_at: until.to_string(),
    }
}

impl LeaseLock {
    fn what(name: &str) -> String {
        format!("lease {name}")
    }

    fn spec_for(
        holder: &str,
        now: Timestamp,
        ttl: Duration,
        previous: Option<&LeaseSpec>,
    ) -> LeaseSpec {
        let same_holder = previous
            .and_then(|p| p.holder_identity.as_deref())
            .is_some_and(|h| h == holder);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(ttl_seconds(ttl)),
            acquire_time: if same_holder {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(to_micro(now))
            },
            renew_time: Some(to_micro(now)),
            lease_transitions: Some(if previous.is_some() && !same_holder {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..previous.cloned().unwrap_or_default()
        }
    }

    fn lease(key: &str, holder: &str, now: Timestamp, ttl: Duration) -> Lease {
        let duration = jiff::SignedDuration::from_secs(i64::from(ttl_seconds(ttl)));
        Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            expires_at: now.checked_add(duration).unwrap_or(Timestamp::MAX),
        }
    }
}

#[async_trait]
impl Lock for LeaseLock {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> deploy_core::Result<Lease> {
        let name = lease_name(key);
        let what = Self::what(&name);
        for attempt in 0..CONFLICT_RETRIES {
            let now = self.clock.now();
            let current = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| map_error(e, &what))?;
            let written = match current {
                None => {
                    let object = KubeLease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(
                                [(
                                    "app.kubernetes.io/managed-by".to_owned(),
                                    "deploy".to_owned(),
                                )]
                                .into(),
                            ),
                            ..ObjectMeta::default()
                        },
                        spec: Some(Self::spec_for(holder, now, ttl, None)),
                    };
                    self.api.create(&PostParams::default(), &object).await
                }
                Some(mut object) => {
                    let spec = object.spec.take().unwrap_or_default();
                    if let Some((who, until)) = current_holder(&spec)
                        && who != holder
                        && until > now
                    {
                        return Err(held(key, who, until));
                    }
                    object.spec = Some(Self::spec_for(holder, now, ttl, Some(&spec)));
                    self.api
                        .replace(&name, &PostParams::default(), &object)
                        .await
                }
            };
            match written {
                Ok(_) => return Ok(Self::lease(key, holder, now, ttl)),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(lease = %name, attempt, "lease changed while taking it; reading it again");
                }
                Err(e) => return Err(map_error(e, &what)),
            }
        }
        Err(Error::Conflict { what })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> deploy_core::Result<Lease> {
        let name = lease_name(&lease.key);
        let what = Self::what(&name);
        for attempt in 0..CONFLICT_RETRIES {
            let now = self.clock.now();
            let Some(mut object) = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| map_error(e, &what))?
            else {
                return Err(held(
                    &lease.key,
                    "nobody (the lease was deleted)".into(),
                    now,
                ));
            };
            let spec = object.spec.take().unwrap_or_default();
            match current_holder(&spec) {
                Some((who, _)) if who == lease.holder => {}
                Some((who, until)) => return Err(held(&lease.key, who, until)),
                None => {
                    return Err(held(
                        &lease.key,
                        "nobody (the lease was released)".into(),
                        now,
                    ));
                }
            }
            object.spec = Some(Self::spec_for(&lease.holder, now, ttl, Some(&spec)));
            match self
                .api
                .replace(&name, &PostParams::default(), &object)
                .await
            {
                Ok(_) => return Ok(Self::lease(&lease.key, &lease.holder, now, ttl)),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(lease = %name, attempt, "lease changed while renewing it; reading it again");
                }
                Err(e) => return Err(map_error(e, &what)),
            }
        }
        Err(Error::Conflict { what })
    }

    async fn release(&self, lease: &Lease) -> deploy_core::Result<()> {
        let name = lease_name(&lease.key);
        let what = Self::what(&name);
        for attempt in 0..CONFLICT_RETRIES {
            let Some(mut object) = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| map_error(e, &what))?
            else {
                return Ok(());
            };
            let mut spec = object.spec.take().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(lease.holder.as_str()) {
                // Lost (expired and taken over, or already released): nothing of ours to free.
                return Ok(());
            }
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
            spec.lease_duration_seconds = Some(1);
            object.spec = Some(spec);
            match self
                .api
                .replace(&name, &PostParams::default(), &object)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(lease = %name, attempt, "lease changed while releasing it; reading it again");
                }
                Err(e) => return Err(map_error(e, &what)),
            }
        }
        Err(Error::Conflict { what })
    }

    async fn inspect(&self, key: &str) -> deploy_core::Result<Option<LockState>> {
        let name = lease_name(key);
        let Some(object) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| map_error(e, &Self::what(&name)))?
        else {
            return Ok(None);
        };
        let spec = object.spec.unwrap_or_default();
        // A released Lease (no holder) is nobody's lock.
        let Some((holder, expires_at)) = current_holder(&spec) else {
            return Ok(None);
        };
        Ok(Some(LockState {
            lease: Lease {
                key: key.to_owned(),
                holder,
                expires_at,
            },
            acquired_at: spec.acquire_time.as_ref().map(from_micro),
            renewed_at: spec.renew_time.as_ref().map(from_micro),
            version: object.metadata.resource_version.unwrap_or_default(),
        }))
    }

    async fn remove(&self, seen: &LockState) -> deploy_core::Result<bool> {
        let name = lease_name(&seen.lease.key);
        // Deleted only at the resourceVersion that was shown: a Lease renewed or taken since
        // fails the precondition with 409 Conflict and is kept.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(seen.version.clone()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(::kube::Error::Api(s)) if s.code == 404 => Ok(true),
            Err(e) => Err(map_error(e, &Self::what(&name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_object_names() {
        let check = |key: &str, want: &str| assert_eq!(lease_name(key), want, "{key}");
        check("deploy-myapp-prod", "deploy-myapp-prod");
        check("Deploy/MyApp prod", "deploy-myapp-prod");
        check("--x--", "x");
        check("!!!", "deploy-lock");
        assert_eq!(lease_name(&"a".repeat(300)).len(), 253);
    }

    #[test]
    fn times_round_trip_at_microsecond_precision() {
        let t: Timestamp = "2026-05-01T12:00:00.123456Z".parse().unwrap();
        assert_eq!(from_micro(&to_micro(t)), t);
    }

    #[test]
    fn expiry_is_renew_time_plus_duration() {
        let t: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        let spec = LeaseLock::spec_for("alice", t, Duration::from_millis(1500), None);
        let (who, until) = current_holder(&spec).unwrap();
        assert_eq!(who, "alice");
        assert_eq!(until, "2026-05-01T12:00:02Z".parse::<Timestamp>().unwrap());
        let renewed = LeaseLock::spec_for("alice", until, Duration::from_secs(10), Some(&spec));
        assert_eq!(renewed.acquire_time, spec.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = LeaseLock::spec_for("bob", until, Duration::from_secs(10), Some(&spec));
        assert_eq!(taken.lease_transitions, Some(1));
    }
}
