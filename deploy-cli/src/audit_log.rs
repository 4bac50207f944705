//! The audit trail on disk: JSON Lines, appended, never rewritten.
//!
//! Default path: `$XDG_STATE_HOME/deploy/audit.jsonl`, else `~/.local/state/deploy/audit.jsonl`;
//! `--audit-log PATH` or `$DEPLOY_AUDIT_LOG` override it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use async_trait::async_trait;
use deploy_core::port::AuditLog;
use deploy_core::trail::{AuditRecord, Entry, Found, Listing};
use deploy_core::{Error, Result};

/// Where the audit trail lives by default.
pub(crate) fn default_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("deploy").join("audit.jsonl"))
}

/// A JSON Lines file of audit records.
#[derive(Debug, Clone)]
pub(crate) struct FileAuditLog {
    path: PathBuf,
}

impl FileAuditLog {
    /// The log at `path` (created on the first append).
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path (for the tests).
    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::invalid(format!(
        "{what} the audit log {}: {e}; check the path (--audit-log / DEPLOY_AUDIT_LOG) and its permissions",
        path.display()
    ))
}

/// Whether the file is empty or ends with a newline.
fn ends_a_line(f: &mut std::fs::File) -> std::io::Result<bool> {
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0_u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[async_trait]
impl AuditLog for FileAuditLog {
    async fn append(&self, record: &AuditRecord) -> Result<()> {
        let path = self.path.clone();
        let mut line = serde_json::to_string(record)
            .map_err(|e| Error::invalid(format!("serializing an audit record: {e}")))?;
        line.push('\n');
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_error(dir, "creating the directory of", e))?;
            }
            // O_APPEND: one write per record, so concurrent writers never interleave within a line.
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_error(&path, "opening", e))?;
            // A torn last line (a full disk, a crash mid-write) is ended first, so that it
            // costs only itself and never swallows this record.
            if !ends_a_line(&mut f).map_err(|e| io_error(&path, "reading", e))? {
                line.insert(0, '\n');
            }
            f.write_all(line.as_bytes())
                .map_err(|e| io_error(&path, "appending to", e))?;
            f.sync_data().map_err(|e| io_error(&path, "syncing", e))
        })
        .await
        .map_err(|e| Error::invalid(format!("the audit writer panicked: {e}")))?
    }

    async fn list(&self, listing: Listing<'_>) -> Result<Found<Entry>> {
        let (records, warnings) = self.parse().await?;
        let mut items: Vec<Entry> = records
            .into_iter()
            .filter(|(_, r)| listing.environment.is_none_or(|e| r.environment == e))
            .map(|(line, r)| r.entry(line.to_string()))
            .filter(|e| listing.contains(e))
            .collect();
        // Oldest first, as the contract says; lines are in the order they were appended.
        items.sort_by_key(|e| e.at);
        Ok(Found { items, warnings })
    }

    async fn read(&self, entries: &[Entry]) -> Result<Found<AuditRecord>> {
        // The listing named the damaged lines already.
        let (records, _) = self.parse().await?;
        let mut by_line: HashMap<String, AuditRecord> = records
            .into_iter()
            .map(|(line, r)| (line.to_string(), r))
            .collect();
        let mut out = Found::default();
        for e in entries {
            match by_line.remove(&e.id) {
                Some(r) => out.items.push(r),
                None => out.warnings.push(format!(
                    "{}:{}: no audit record there any more",
                    self.path.display(),
                    e.id
                )),
            }
        }
        Ok(out)
    }
}

impl FileAuditLog {
    /// Every readable record with its line number (1-based), and a warning for each line
    /// that is not a record (a crash mid-write, a hand edit): it costs only itself.
    async fn parse(&self) -> Result<(Vec<(usize, AuditRecord)>, Vec<String>)> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(io_error(&self.path, "reading", e)),
        };
        let mut records = Vec::new();
        let mut warnings = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(r) => records.push((i + 1, r)),
                Err(e) => warnings.push(format!(
                    "{}:{}: skipping an unreadable audit record: {e}",
                    self.path.display(),
                    i + 1
                )),
            }
        }
        Ok((records, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::model::{Release, Tag};
    use deploy_core::trail::{Actor, Outcome, RunKind};

    fn record(run: &str) -> AuditRecord {
        AuditRecord {
            run_id: run.into(),
            kind: RunKind::Promote,
            environment: "prod".into(),
            actor: Actor {
                os_user: "alice".into(),
                argocd_user: Some("alice@corp".into()),
            },
            release: Release {
                tag: Tag::new("abc1234").unwrap(),
                digests: Default::default(),
            },
            previous: Default::default(),
            changed: vec!["us-west-2".into()],
            skipped: vec![],
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
            outcome: Outcome::Succeeded,
            message: "ok".into(),
            checks: vec![],
            apps: vec![],
        }
    }

    #[tokio::test]
    async fn appends_and_never_rewrites() {
        let dir = std::env::temp_dir().join(format!("deploy-audit-{}", std::process::id()));
        let log = FileAuditLog::new(dir.join("nested/audit.jsonl"));
        assert!(log.records().await.unwrap().is_empty());
        log.append(&record("r1")).await.unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{broken\n")
            .unwrap();
        log.append(&record("r2")).await.unwrap();
        let runs: Vec<String> = log
            .records()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(runs, ["r1", "r2"]);
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(
            text.lines().count(),
            3,
            "the damaged line stays: nothing is rewritten"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The same contract as the S3 trail: list by time and environment without the bodies
    /// mattering, read the chosen lines, name a damaged line instead of failing; the newest
    /// runs read one record each.
    #[tokio::test]
    async fn lists_reads_and_finds_the_newest_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileAuditLog::new(dir.path().join("audit.jsonl"));
        let at = |s: i64| jiff::Timestamp::from_second(1_700_000_000 + s).unwrap();
        for (run, start, env) in [("r1", 0, "prod"), ("s1", 5, "staging"), ("r2", 10, "prod")] {
            let mut r = record(run);
            r.environment = env.into();
            r.started_at = at(start);
            r.finished_at = at(start);
            r.outcome = Outcome::Started;
            log.append(&r).await.unwrap();
            r.finished_at = at(start + 3);
            r.outcome = Outcome::Succeeded;
            log.append(&r).await.unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{broken\n")
            .unwrap();

        let listed = log
            .list(Listing {
                environment: Some("prod"),
                since: Some(at(3)),
                before: None,
            })
            .await
            .unwrap();
        let seen: Vec<(&str, bool)> = listed
            .items
            .iter()
            .map(|e| (e.run_id.as_str(), e.started))
            .collect();
        assert_eq!(seen, [("r1", false), ("r2", true), ("r2", false)]);
        assert_eq!(listed.warnings.len(), 1, "{:?}", listed.warnings);
        assert!(
            listed.warnings[0].contains("audit.jsonl:7"),
            "{:?}",
            listed.warnings
        );
        let before = log
            .list(Listing {
                environment: Some("prod"),
                since: None,
                before: Some(at(3)),
            })
            .await
            .unwrap();
        assert_eq!(before.items.len(), 1, "[since, before): r1's start only");

        let read = log.read(&listed.items[1..]).await.unwrap();
        assert_eq!(read.items.len(), 2);
        assert!(
            read.warnings.is_empty(),
            "the listing named the damaged line"
        );
        let mut gone = listed.items[0].clone();
        gone.id = "99".into();
        assert_eq!(log.read(&[gone]).await.unwrap().warnings.len(), 1);

        let newest = deploy_engine::observe::trail::newest(&log, "prod", at(20), 1, |_| false)
            .await
            .unwrap();
        let runs: Vec<(&str, Outcome)> = newest
            .items
            .iter()
            .map(|r| (r.run_id.as_str(), r.outcome))
            .collect();
        assert_eq!(runs, [("r2", Outcome::Succeeded)]);
        assert_eq!(newest.warnings.len(), 1, "the damaged line, once");
    }

    #[tokio::test]
    async fn a_torn_last_line_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        #[track_caller]
        fn runs(text: &str) -> Vec<String> {
            text.lines()
                .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
                .map(|r| r.run_id)
                .collect()
        }
        // (what the file holds before the append, the runs read back after it)
        let cases: [(&[u8], &[&str]); 5] = [
            (b"", &["r2"]),
            (b"{\"run_id\":\"r1\",\"ki", &["r2"]),
            (b"{broken\n", &["r2"]),
            (b"\n", &["r2"]),
            (b"x", &["r2"]),
        ];
        for (i, (before, expect)) in cases.into_iter().enumerate() {
            let log = FileAuditLog::new(dir.path().join(format!("audit-{i}.jsonl")));
            std::fs::write(log.path(), before).unwrap();
            log.append(&record("r2")).await.unwrap();
            let got: Vec<String> = log
                .records()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.run_id)
                .collect();
            assert_eq!(got, expect, "after {:?}", String::from_utf8_lossy(before));
            let text = std::fs::read_to_string(log.path()).unwrap();
            assert_eq!(runs(&text), expect);
            assert!(text.ends_with("}\n"), "{text:?}");
            assert!(
                text.starts_with(&*String::from_utf8_lossy(before)),
                "nothing is rewritten: {text:?}"
            );
        }
        // A complete record after a torn one is appended as its own line, and one more after it.
        let log = FileAuditLog::new(dir.path().join("audit.jsonl"));
        log.append(&record("r1")).await.unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{\"run_id\":\"torn")
            .unwrap();
        log.append(&record("r2")).await.unwrap();
        log.append(&record("r3")).await.unwrap();
        let got: Vec<String> = log
            .records()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(got, ["r1", "r2", "r3"]);
    }
}
