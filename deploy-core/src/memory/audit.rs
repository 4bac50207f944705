//! An in-memory audit log (append-only).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::Result;
use crate::port::AuditLog;
use crate::trail::AuditRecord;

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

    async fn records(&self) -> Result<Vec<AuditRecord>> {
        Ok(self.state())
    }
}
