//! The newest runs of an environment's audit trail: listed in widening windows, read in
//! doubling batches.

use deploy_core::error::Result;
use deploy_core::port::AuditLog;
use deploy_core::trail::{AuditRecord, BATCH, Entry, Found, Listing, WINDOWS, pick};
use jiff::Timestamp;

/// The newest `runs` runs of `environment` as a listing shows them, newest first (by start,
/// then run id): for each, its end record's entry, or its first record's when it has no end.
/// Lists back from `now` in widening windows until `runs` runs have started inside the
/// window (a run with only its end there started before it), else the whole trail.
pub async fn newest_entries(
    log: &dyn AuditLog,
    environment: &str,
    now: Timestamp,
    runs: usize,
) -> Result<Found<Entry>> {
    let mut listed = Found::default();
    let mut before: Option<Timestamp> = None;
    let windows = WINDOWS
        .iter()
        .map(|w| now.checked_sub(*w).ok())
        .chain([None]);
    let mut since = None;
    for window in windows {
        since = window;
        let got = log
            .list(Listing {
                environment: Some(environment),
                since,
                before,
            })
            .await?;
        listed.items.extend(got.items);
        listed.warnings.extend(got.warnings);
        let started = listed.items.iter().filter(|e| e.started).count();
        if started >= runs || since.is_none() {
            break;
        }
        before = since;
    }
    Ok(Found {
        items: pick(listed.items, since, runs),
        warnings: listed.warnings,
    })
}

/// The records of the newest runs of `environment` (at most `runs`), oldest first: one per
/// run, its end record (which repeats its start), or its first record when it has no end.
///
/// Reads [`BATCH`] runs first, then twice as many each time, newest first, and stops as soon
/// as `enough` says the records read so far (given newest first) answer the question
/// (`|_| false`: read all `runs`). Records that cannot be read are skipped and named in the
/// warnings.
pub async fn newest(
    log: &dyn AuditLog,
    environment: &str,
    now: Timestamp,
    runs: usize,
    mut enough: impl FnMut(&[AuditRecord]) -> bool,
) -> Result<Found<AuditRecord>> {
    let listed = newest_entries(log, environment, now, runs).await?;
    let mut out = Found {
        items: Vec::new(),
        warnings: listed.warnings,
    };
    let mut rest = listed.items.as_slice();
    let mut batch = BATCH;
    while !rest.is_empty() {
        let (now_read, later) = rest.split_at(batch.min(rest.len()));
        let got = log.read(now_read).await?;
        out.items.extend(got.items);
        out.warnings.extend(got.warnings);
        if enough(&out.items) {
            break;
        }
        rest = later;
        // Doubling: a search that stops early reads at most twice what it needed, and a
        // whole trail is read in a few large batches (concurrent inside the store).
        batch = batch.saturating_mul(2);
    }
    out.items.reverse();
    Ok(out)
}
