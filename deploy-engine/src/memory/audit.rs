//! An in-memory audit log (append-only).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use deploy_core::error::Result;
use deploy_core::port::AuditLog;
use deploy_core::trail::{AuditRecord, Entry, Found, Listing};

/// Audit records in memory, oldest first.
#[derive(Debug, Clone, Default)]
pub struct InMemoryAuditLog {
    records: Arc<Mutex<Vec<AuditRecord>>>,
}

impl InMemoryAuditLog {
    /// A log holding `records`.
    pub fn from_state(records: Vec<AuditRecord>) -> Self {
        Self {
            records: Arc::new(Mutex::new(records)),
        }
    }

    /// The records.
    pub fn state(&self) -> Vec<AuditRecord> {
        self.records.lock().expect("poisoned").clone()
    }
}

#[async_trait]
impl AuditLog for InMemoryAuditLog {
    async fn append(&self, record: &AuditRecord) -> Result<()> {
        self.records.lock().expect("poisoned").push(record.clone());
        Ok(())
    }

    async fn list(&self, listing: Listing<'_>) -> Result<Found<Entry>> {
        let mut items: Vec<Entry> = self
            .state()
            .iter()
            .enumerate()
            .filter(|(_, r)| listing.environment.is_none_or(|e| r.environment == e))
            .map(|(i, r)| r.entry(i.to_string()))
            .filter(|e| listing.contains(e))
            .collect();
        // Oldest first, as a store keyed by time lists them (the index keeps append order).
        items.sort_by_key(|e| e.at);
        Ok(Found {
            items,
            warnings: Vec::new(),
        })
    }

    async fn read(&self, entries: &[Entry]) -> Result<Found<AuditRecord>> {
        let records = self.state();
        let mut out = Found::default();
        for e in entries {
            match e.id.parse::<usize>().ok().and_then(|i| records.get(i)) {
                Some(r) => out.items.push(r.clone()),
                None => out
                    .warnings
                    .push(format!("audit record {} is not in the log", e.id)),
            }
        }
        Ok(out)
    }
}
