//! The promotion lock over Argo CD's REST API, for users who have an Argo CD token but no
//! Kubernetes access (the Kubernetes backend uses a Lease instead: [`crate::kube::LeaseLock`]).
//!
//! # Where the lease lives
//!
//! [`ApplicationLock`] is bound to one Application (the CLI passes the environment's first
//! Application in wave order) and keeps every lease in ONE annotation, [`LOCK_ANNOTATION`]
//! (`deploy/lock`). Its value is a compact JSON array with one entry per lock key, sorted by
//! key, each `{"key","holder","expiresAt","acquiredAt"}` with RFC 3339 times:
//!
//! ```text
//! deploy/lock: [{"key":"deploy-myapp-prod","holder":"ci pid 42","expiresAt":"2026-05-01T13:10:00Z","acquiredAt":"2026-05-01T12:00:00Z"}]
//! ```
//!
//! The CLI uses one key per Application, so the array holds one entry; keys stay independent
//! locks (as the [`Lock`] contract and its conformance suite require) without a second
//! annotation name. A single, fixed name matters: an ApplicationSet controller rewrites the
//! annotations of the Applications it generates and keeps only those listed in the
//! ApplicationSet's `spec.preservedFields.annotations` (exact names) or in the controller's
//! global preserved annotations. **List `deploy/lock` there**, or the controller erases the
//! lock on its next reconcile (a run then finds it lost at its next renew, but another run
//! could take the lock in between).
//!
//! # Writes
//!
//! Every write reads the Application (`GET /api/v1/applications/{name}`), decides, then sends
//! `PATCH /api/v1/applications/{name}` with `patchType: "json"` and an RFC 6902 patch whose
//! first operation is `{"op":"test","path":"/metadata/resourceVersion","value":<read>}`,
//! followed by the `add`/`replace`/`remove` of `/metadata/annotations/deploy~1lock` (and an
//! `add` of `/metadata/annotations` = `{}` when the object has none). Argo CD's `Patch`
//! applies the patch to the Application it has just fetched (`jsonpatch.DecodePatch` +
//! `Apply`), so the write is refused when anything wrote the Application since we read it.
//! A failed `test` is not a gRPC status on the server side: it comes back as HTTP 500, code 2
//! (Unknown), message `error applying patch: testing value /metadata/resourceVersion failed:
//! test failed` (older servers: `Testing value ... failed`); a 409 Conflict means the same.
//! Both mean "read again and decide again", a bounded number of times with backoff (the
//! application controller's status writes also move the resourceVersion, so a few misses
//! are expected while an Application syncs).
//!
//! The `test` does not close every race: after it passes, Argo CD's server fetches the
//! Application again and writes the patched annotations over that fresh copy, retrying its
//! own Update on conflict (`validateAndUpdateApp`/`updateApp`). Two runs whose PATCHes are
//! processed at the same moment can therefore both get 200, the later write replacing the
//! earlier. So [`ApplicationLock::acquire`] waits a short settle time
//! ([`ApplicationLock::with_settle`], default [`DEFAULT_SETTLE`]) after its write and reads
//! the annotation back: only the run whose entry is still there holds the lock; the other
//! gets [`Error::LockHeld`] naming it (or tries again if the entry vanished).
//!
//! # Semantics
//!
//! - An entry whose `expiresAt` is not after the injected [`Clock`]'s now is expired and is
//!   taken over. Runs on different machines need roughly synchronised clocks (NTP), as
//!   Kubernetes leader election also assumes.
//! - Holders are compared by exact string equality (the CLI makes them unique per run).
//!   Acquiring a lock the same holder already has refreshes it and keeps `acquiredAt`.
//! - `renew` of a lease someone else now holds, or that is gone, is [`Error::LockHeld`].
//! - `release` removes only our own entry (the whole annotation when it was the last one);
//!   releasing a lease already lost is `Ok` and leaves the new holder's entry alone.
//! - An annotation that is not such an array (edited by hand) is an error that says how to
//!   remove it, never silently overwritten.
//! - `deploy unlock` reads an entry ([`Lock::inspect`]; its version is the entry's JSON) and
//!   removes it only while the entry is unchanged, with the same resourceVersion-tested patch
//!   ([`Lock::remove`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::port::{Clock, Lease, Lock, LockState, SystemClock};
use deploy_core::{Error, Result};
use jiff::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::debug;

use super::{RestArgoCd, Target};
use crate::wire;

/// The annotation that holds the leases.
pub const LOCK_ANNOTATION: &str = deploy_core::model::annotation::LOCK;

/// How long [`ApplicationLock::acquire`] waits after its write before reading it back.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// Read-decide-write rounds before a write that keeps meeting concurrent changes gives up.
const ATTEMPTS: u32 = 8;

/// [`Lock`] kept in an annotation of one Argo CD Application, over the REST API or (with
/// [`ApplicationLock::over_kube`]) the Kubernetes API: the same annotation and decisions,
/// so a run over REST and one with `--core` exclude each other.
#[derive(Debug, Clone)]
pub struct ApplicationLock {
    carrier: Arc<dyn Carrier>,
    application: String,
    clock: Arc<dyn Clock>,
    settle: Duration,
}

impl ApplicationLock {
    /// Leases kept on `application` (the environment's first Application in wave order),
    /// timed by the system clock.
    pub fn new(client: RestArgoCd, application: impl Into<String>) -> Self {
        Self::with_carrier(Arc::new(client), application)
    }

    /// Leases kept on `application` through `carrier`, timed by the system clock.
    pub(crate) fn with_carrier(carrier: Arc<dyn Carrier>, application: impl Into<String>) -> Self {
        Self {
            carrier,
            application: application.into(),
            clock: Arc::new(SystemClock),
            settle: DEFAULT_SETTLE,
        }
    }

    /// Uses `clock` for acquire and renew times and for expiry decisions.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how long `acquire` waits after its write before reading it back (see the module
    /// documentation); zero reads back at once.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The Application the leases are kept on.
    pub fn application(&self) -> &str {
        &self.application
    }
}

/// One lease as stored in the annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    key: String,
    holder: String,
    expires_at: Timestamp,
    acquired_at: Timestamp,
}

impl Entry {
    fn lease(&self) -> Lease {
        Lease {
            key: self.key.clone(),
            holder: self.holder.clone(),
            expires_at: self.expires_at,
        }
    }

    /// The entry as `deploy unlock` shows it; its version is its JSON text.
    fn state(&self) -> Result<LockState> {
        Ok(LockState {
            lease: self.lease(),
            acquired_at: Some(self.acquired_at),
            renewed_at: None,
            version: serde_json::to_string(self)
                .map_err(|e| Error::invalid(format!("cannot encode a lock entry: {e}")))?,
        })
    }

    fn held_error(&self) -> Error {
        Error::LockHeld {
            key: self.key.clone(),
            holder: self.holder.clone(),
            expires_at: self.expires_at.to_string(),
        }
    }
}

/// What the Application says about the locks when it was read.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) resource_version: String,
    /// Whether `metadata.annotations` exists at all.
    has_annotations: bool,
    /// Whether the lock annotation exists.
    has_lock: bool,
    entries: Vec<Entry>,
}

impl Snapshot {
    fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

fn expiry(now: Timestamp, ttl: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(ttl)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// `/metadata/annotations/deploy~1lock`: the annotation name as a JSON pointer token.
fn annotation_pointer() -> String {
    format!(
        "/metadata/annotations/{}",
        LOCK_ANNOTATION.replace('~', "~0").replace('/', "~1")
    )
}

/// The annotation's value for `entries`: compact JSON, sorted by key.
pub(crate) fn encode(entries: &[Entry]) -> Result<String> {
    let mut entries = entries.to_vec();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    serde_json::to_string(&entries)
        .map_err(|e| Error::invalid(format!("cannot encode the lock annotation: {e}")))
}

/// The RFC 6902 patch that turns the snapshot's leases into `entries`: first the
/// resourceVersion `test`, then the annotation write.
fn patch_ops(snapshot: &Snapshot, entries: &[Entry]) -> Result<Vec<Value>> {
    let mut ops = vec![json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": snapshot.resource_version,
    })];
    let path = annotation_pointer();
    if entries.is_empty() {
        if snapshot.has_lock {
            ops.push(json!({ "op": "remove", "path": path }));
        }
        return Ok(ops);
    }
    let value = encode(entries)?;
    if !snapshot.has_annotations {
        ops.push(json!({ "op": "add", "path": "/metadata/annotations", "value": {} }));
    }
    let op = if snapshot.has_lock { "replace" } else { "add" };
    ops.push(json!({ "op": op, "path": path, "value": value }));
    Ok(ops)
}

/// A refused `test` operation (the Application changed since it was read) or a 409.
pub(super) fn is_stale(error: &Error) -> bool {
    match error {
        Error::Conflict { .. } => true,
        Error::Transient { message, .. }
        | Error::Invalid { message }
        | Error::Refused { message } => {
            let lower = message.to_ascii_lowercase();
            lower.contains("testing value") && lower.contains("failed")
        }
        _ => false,
    }
}

impl ApplicationLock {
    fn what(&self) -> String {
        format!(
            "lock annotation {LOCK_ANNOTATION} of application {}",
            self.application
        )
    }

    fn malformed(&self, detail: &str) -> Error {
        Error::invalid(format!(
            "{}: {detail}; it is not a list of deploy leases. If no promotion is running, remove it: \
             argocd app patch {} --type json --patch '[{{\"op\":\"remove\",\"path\":\"{}\"}}]'",
            self.what(),
            self.application,
            annotation_pointer(),
        ))
    }

    async fn read(&self) -> Result<Snapshot> {
        let (resource_version, annotations) = self.carrier.read(&self.application).await?;
        let resource_version = resource_version
            .filter(|rv| !rv.is_empty())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "application {}: served without metadata.resourceVersion",
                    self.application
                ))
            })?;
        let raw = annotations.get(LOCK_ANNOTATION);
        let entries = match raw {
            None => Vec::new(),
            Some(text) if text.trim().is_empty() => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<Entry>>(text)
                .map_err(|e| self.malformed(&format!("{text:?} ({e})")))?,
        };
        Ok(Snapshot {
            resource_version,
            has_annotations: !annotations.is_empty(),
            has_lock: raw.is_some(),
            entries,
        })
    }

    /// Writes `entries` if the Application is still at `snapshot`'s resourceVersion;
    /// `Ok(false)` when it changed since.
    async fn write(&self, snapshot: &Snapshot, entries: &[Entry]) -> Result<bool> {
        let written = self
            .carrier
            .write(&self.application, snapshot, entries)
            .await?;
        if !written {
            debug!(application = %self.application, "application changed since it was read");
        }
        Ok(written)
    }

    async fn pause(&self, attempt: u32) {
        tokio::time::sleep(self.carrier.backoff(attempt)).await;
    }
}

/// Where the Application that carries the lock is read and written: Argo CD's REST API or
/// the Kubernetes API. Transport only; every decision is [`ApplicationLock`]'s.
#[async_trait]
pub(crate) trait Carrier: Send + Sync + std::fmt::Debug {
    /// The Application's `metadata.resourceVersion` and annotations.
    async fn read(
        &self,
        application: &str,
    ) -> Result<(Option<String>, std::collections::BTreeMap<String, String>)>;

    /// Sets the lock annotation to `entries` (removes it when empty) only if the Application
    /// is still at `snapshot.resource_version`; `Ok(false)` when it is not.
    async fn write(
        &self,
        application: &str,
        snapshot: &Snapshot,
        entries: &[Entry],
    ) -> Result<bool>;

    /// The pause before read-decide-write round `attempt` + 1.
    fn backoff(&self, attempt: u32) -> Duration;
}

#[async_trait]
impl Carrier for RestArgoCd {
    async fn read(
        &self,
        application: &str,
    ) -> Result<(Option<String>, std::collections::BTreeMap<String, String>)> {
        let app: wire::Application = self.get_app(application).await?;
        Ok((app.metadata.resource_version, app.metadata.annotations))
    }

    /// A JSON patch whose first operation tests the resourceVersion (see the module docs).
    async fn write(
        &self,
        application: &str,
        snapshot: &Snapshot,
        entries: &[Entry],
    ) -> Result<bool> {
        let ops = patch_ops(snapshot, entries)?;
        let body = json!({
            "name": application,
            "patchType": "json",
            "patch": Value::Array(ops).to_string(),
        });
        let sent = self
            .call(
                Method::PATCH,
                self.app_url(application, &[]),
                &[],
                Some(&body),
                &Target::app(application),
            )
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if is_stale(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        RestArgoCd::backoff(self, attempt, None)
    }
}

/// The leases of `snapshot` with `entry` in place of the one of its key.
fn with_entry(snapshot: &Snapshot, entry: Entry) -> Vec<Entry> {
    let mut entries: Vec<Entry> = snapshot
        .entries
        .iter()
        .filter(|e| e.key != entry.key)
        .cloned()
        .collect();
    entries.push(entry);
    entries
}

#[async_trait]
impl Lock for ApplicationLock {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Lease> {
        for attempt in 0..ATTEMPTS {
            let snapshot = self.read().await?;
            let now = self.clock.now();
            let current = snapshot.entry(key);
            if let Some(e) = current
                && e.holder != holder
                && e.expires_at > now
            {
                return Err(e.held_error());
            }
            let acquired_at = current
                .filter(|e| e.holder == holder)
                .map_or(now, |e| e.acquired_at);
            let ours = Entry {
                key: key.to_owned(),
                holder: holder.to_owned(),
                expires_at: expiry(now, ttl),
                acquired_at,
            };
            if !self
                .write(&snapshot, &with_entry(&snapshot, ours.clone()))
                .await?
            {
                self.pause(attempt).await;
                continue;
            }
            // A concurrent PATCH that Argo CD processed at the same moment may have replaced
            // ours after its `test` passed: the entry still there decides.
            if !self.settle.is_zero() {
                tokio::time::sleep(self.settle).await;
            }
            let check = self.read().await?;
            match check.entry(key) {
                Some(e) if *e == ours => return Ok(ours.lease()),
                Some(e) if e.holder != holder && e.expires_at > self.clock.now() => {
                    debug!(application = %self.application, key, winner = %e.holder, "lost a simultaneous acquire");
                    return Err(e.held_error());
                }
                _ => {
                    debug!(application = %self.application, key, "the lock entry was overwritten; trying again");
                    self.pause(attempt).await;
                }
            }
        }
        Err(Error::Conflict { what: self.what() })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        for attempt in 0..ATTEMPTS {
            let snapshot = self.read().await?;
            let now = self.clock.now();
            let current = match snapshot.entry(&lease.key) {
                Some(e) if e.holder == lease.holder => e.clone(),
                Some(e) => return Err(e.held_error()),
                None => {
                    return Err(Error::LockHeld {
                        key: lease.key.clone(),
                        holder: "nobody (the lease was released or removed)".into(),
                        expires_at: now.to_string(),
                    });
                }
            };
            let renewed = Entry {
                expires_at: expiry(now, ttl),
                ..current
            };
            if self
                .write(&snapshot, &with_entry(&snapshot, renewed.clone()))
                .await?
            {
                return Ok(renewed.lease());
            }
            self.pause(attempt).await;
        }
        Err(Error::Conflict { what: self.what() })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        for attempt in 0..ATTEMPTS {
            let snapshot = self.read().await?;
            let ours = snapshot
                .entry(&lease.key)
                .is_some_and(|e| e.holder == lease.holder);
            if !ours {
                // Lost (expired and taken over, or already released): nothing of ours to free.
                return Ok(());
            }
            if self
                .write(&snapshot, &without(&snapshot, &lease.key))
                .await?
            {
                return Ok(());
            }
            self.pause(attempt).await;
        }
        Err(Error::Conflict { what: self.what() })
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockState>> {
        let snapshot = self.read().await?;
        snapshot.entry(key).map(Entry::state).transpose()
    }

    async fn remove(&self, seen: &LockState) -> Result<bool> {
        // The entry must still be the one shown, byte for byte; the resourceVersion `test`
        // of the patch then makes the removal atomic. A stale read (the controller writes
        // status often) is read again, so only a change of the lease itself keeps it.
        for attempt in 0..ATTEMPTS {
            let snapshot = self.read().await?;
            let Some(current) = snapshot.entry(&seen.lease.key) else {
                return Ok(true);
            };
            if current.state()?.version != seen.version {
                return Ok(false);
            }
            if self
                .write(&snapshot, &without(&snapshot, &seen.lease.key))
                .await?
            {
                return Ok(true);
            }
            self.pause(attempt).await;
        }
        Err(Error::Conflict { what: self.what() })
    }
}

/// The leases of `snapshot` but the one of `key`.
fn without(snapshot: &Snapshot, key: &str) -> Vec<Entry> {
    snapshot
        .entries
        .iter()
        .filter(|e| e.key != key)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, holder: &str) -> Entry {
        Entry {
            key: key.into(),
            holder: holder.into(),
            expires_at: "2026-05-01T13:00:00Z".parse().unwrap(),
            acquired_at: "2026-05-01T12:00:00Z".parse().unwrap(),
        }
    }

    fn snapshot(has_annotations: bool, entries: Vec<Entry>) -> Snapshot {
        Snapshot {
            resource_version: "42".into(),
            has_annotations: has_annotations || !entries.is_empty(),
            has_lock: !entries.is_empty(),
            entries,
        }
    }

    #[test]
    fn the_pointer_escapes_the_slash() {
        assert_eq!(annotation_pointer(), "/metadata/annotations/deploy~1lock");
    }

    #[test]
    fn every_patch_tests_the_resource_version_first() {
        let test = json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"});
        let a = vec![entry("k", "alice")];
        let value = serde_json::to_string(&a).unwrap();
        // No annotations at all: create the map, then add.
        let ops = patch_ops(&snapshot(false, vec![]), &a).unwrap();
        assert_eq!(
            ops,
            [
                test.clone(),
                json!({"op": "add", "path": "/metadata/annotations", "value": {}}),
                json!({"op": "add", "path": "/metadata/annotations/deploy~1lock", "value": value}),
            ]
        );
        // Other annotations only: add.
        let ops = patch_ops(&snapshot(true, vec![]), &a).unwrap();
        assert_eq!(ops[1]["op"], "add");
        assert_eq!(ops.len(), 2);
        // Our annotation exists: replace; the last entry gone: remove.
        let held = snapshot(true, a.clone());
        assert_eq!(patch_ops(&held, &a).unwrap()[1]["op"], "replace");
        assert_eq!(
            patch_ops(&held, &[]).unwrap(),
            [
                test,
                json!({"op": "remove", "path": "/metadata/annotations/deploy~1lock"})
            ]
        );
    }

    #[test]
    fn entries_are_compact_camel_case_and_sorted() {
        let ops = patch_ops(
            &snapshot(true, vec![]),
            &[entry("b", "bob"), entry("a", "alice")],
        )
        .unwrap();
        assert_eq!(
            ops[1]["value"],
            r#"[{"key":"a","holder":"alice","expiresAt":"2026-05-01T13:00:00Z","acquiredAt":"2026-05-01T12:00:00Z"},{"key":"b","holder":"bob","expiresAt":"2026-05-01T13:00:00Z","acquiredAt":"2026-05-01T12:00:00Z"}]"#
        );
    }

    #[test]
    fn a_failed_test_operation_is_a_stale_read() {
        let check = |e: Error, want: bool| assert_eq!(is_stale(&e), want, "{e:?}");
        check(
            Error::Transient {
                message: "application a: Argo CD answered 500 Internal Server Error: error applying patch: testing value /metadata/resourceVersion failed: test failed".into(),
                retry_after: None,
            },
            true,
        );
        check(
            Error::invalid(
                "application a: error applying patch: Testing value /metadata/resourceVersion failed",
            ),
            true,
        );
        check(
            Error::Conflict {
                what: "application a".into(),
            },
            true,
        );
        check(Error::transient("application a: connection refused"), false);
        check(Error::not_found("application a"), false);
    }

    #[test]
    fn a_huge_ttl_saturates() {
        let now: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        assert_eq!(expiry(now, Duration::MAX), Timestamp::MAX);
        assert_eq!(
            expiry(now, Duration::from_millis(1500)),
            "2026-05-01T12:00:01.5Z".parse::<Timestamp>().unwrap()
        );
    }
}
