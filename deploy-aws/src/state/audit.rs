//! The audit trail of one environment, one S3 object per record (see the parent module's docs).

use async_trait::async_trait;
use deploy_core::port::AuditLog;
use deploy_core::trail::{AuditRecord, Entry, Found, Listing, Outcome};
use deploy_core::{Error, Result};
use futures::StreamExt as _;
use jiff::Timestamp;

use super::*;

/// The audit trail of one environment as one S3 object per record (see the module docs).
#[derive(Debug, Clone)]
pub struct S3AuditLog {
    pub(super) store: S3Store,
    pub(super) environment: String,
}

/// Records read at once.
const READ_CONCURRENCY: usize = 8;

/// The time in a record's key: fixed-width UTC, so that keys sort by time.
const KEY_TIME: &str = "%Y%m%dT%H%M%S.%9fZ";

impl S3AuditLog {
    fn records_prefix(&self) -> String {
        self.store.location.key(&self.environment, "records/")
    }

    /// The object key of `record`: the time it was written (its start, or its end), the run
    /// and which of its two records it is. Fixed-width UTC time, so keys sort by time.
    pub fn object_key(&self, record: &AuditRecord) -> String {
        let (at, which) = match record.outcome {
            Outcome::Started => (record.started_at, "started"),
            _ => (record.finished_at, "end"),
        };
        let run: String = record
            .run_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{}{}-{run}-{which}.json",
            self.records_prefix(),
            at.strftime(KEY_TIME)
        )
    }

    /// The listing's bound for time `at`: every key written before `at` sorts before it,
    /// every key written at or after it sorts after it.
    fn time_bound(&self, at: Timestamp) -> String {
        format!("{}{}", self.records_prefix(), at.strftime(KEY_TIME))
    }

    /// What the key of a record says (see [`S3AuditLog::object_key`]); `None` for a key
    /// this tool did not write.
    fn parse_key(&self, key: &str) -> Option<Entry> {
        let name = key
            .strip_prefix(&self.records_prefix())?
            .strip_suffix(".json")?;
        let (time, rest) = (name.get(..26)?, name.get(26..)?);
        let rfc3339 = format!(
            "{}-{}-{}T{}:{}:{}",
            time.get(..4)?,
            time.get(4..6)?,
            time.get(6..8)?,
            time.get(9..11)?,
            time.get(11..13)?,
            time.get(13..)?
        );
        let at: Timestamp = rfc3339.parse().ok()?;
        let (run, which) = rest.strip_prefix('-')?.rsplit_once('-')?;
        let started = match which {
            "started" => true,
            "end" => false,
            _ => return None,
        };
        (!run.is_empty()).then(|| Entry {
            id: key.to_owned(),
            run_id: run.to_owned(),
            at,
            started,
        })
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.store.location.bucket)
    }
}

#[async_trait]
impl AuditLog for S3AuditLog {
    async fn append(&self, record: &AuditRecord) -> Result<()> {
        let key = self.object_key(record);
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::invalid(format!("serializing an audit record: {e}")))?;
        match self
            .store
            .put(&key, body.clone(), Condition::Absent)
            .await?
        {
            Written::Yes(_) => Ok(()),
            Written::PreconditionFailed => {
                // A retry of a write that did land is not a conflict; another record is.
                match self.store.get(&key).await? {
                    Some((existing, _)) if existing == body => Ok(()),
                    _ => Err(Error::Conflict {
                        what: format!(
                            "audit record {} (another record has its key)",
                            self.url(&key)
                        ),
                    }),
                }
            }
        }
    }

    /// One `ListObjectsV2` per 1,000 keys of the window, starting after `since`'s key and
    /// stopping at `before`'s: the keys alone say when, which run and which record.
    async fn list(&self, listing: Listing<'_>) -> Result<Found<Entry>> {
        let Listing {
            environment,
            since,
            before,
        } = listing;
        if environment.is_some_and(|e| e != self.environment) {
            return Ok(Found::default());
        }
        let keys = self
            .store
            .list(
                &self.records_prefix(),
                since.map(|s| self.time_bound(s)).as_deref(),
                before.map(|b| self.time_bound(b)).as_deref(),
            )
            .await?;
        let mut out = Found::default();
        for key in keys {
            match self.parse_key(&key) {
                Some(entry) => out.items.push(entry),
                None => out.warnings.push(format!(
                    "{}: skipping an object that is not an audit record of this tool (its key does not say time, run and record)",
                    self.url(&key)
                )),
            }
        }
        Ok(out)
    }

    /// One `GetObject` per entry, 8 at a time; a record that cannot be
    /// read (a failed GET, a body that is not a record) costs only itself.
    async fn read(&self, entries: &[Entry]) -> Result<Found<AuditRecord>> {
        let keys: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let bodies: Vec<(String, Result<Option<(Vec<u8>, String)>>)> = futures::stream::iter(keys)
            .map(|key| async move {
                let got = self.store.get(&key).await;
                (key, got)
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut out = Found::default();
        for (key, got) in bodies {
            let problem = match got {
                Ok(Some((bytes, _))) => match serde_json::from_slice(&bytes) {
                    Ok(record) => {
                        out.items.push(record);
                        continue;
                    }
                    Err(e) => format!("it is not an audit record: {e}"),
                },
                Ok(None) => "it is gone".to_owned(),
                Err(e) => e.to_string(),
            };
            out.warnings.push(format!(
                "{}: skipping an unreadable audit record: {problem}",
                self.url(&key)
            ));
        }
        Ok(out)
    }
}
