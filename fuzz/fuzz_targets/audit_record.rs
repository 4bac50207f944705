//! Fuzzes the audit record decoder: a record read back from the S3 trail (or a line of the
//! local JSONL trail) is JSON decoded into `AuditRecord`; what `deploy history` and
//! `deploy rollback` then compute from it must not panic on any record that decodes.

#![no_main]

use deploy_core::plan::{history, rollback};
use deploy_core::trail::AuditRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<AuditRecord>(data) else {
        return;
    };
    // What was decoded encodes, and decodes again to the same record (the trail compares a
    // retried append with what is stored byte for byte).
    let again = serde_json::to_vec(&record).expect("a decoded record encodes");
    let round: AuditRecord = serde_json::from_slice(&again).expect("an encoded record decodes");
    assert_eq!(
        serde_json::to_vec(&round).expect("encodes"),
        again,
        "a record changes through a round trip"
    );
    let env = record.environment.clone();
    let tag = record.release.tag.clone();
    let records = vec![record, round];
    for row in history::history(&records, &env, Some(10)) {
        let _ = row.outcome_text();
        let _ = serde_json::to_vec(&row);
    }
    let _ = rollback::recorded(&records, &env, &tag);
});
