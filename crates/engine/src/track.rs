//! What the syncer must know about the copy running beside it (DESIGN.md,
//! correctness rule 3): which tables have their target ready, and which chunks are
//! **in flight** (read started, write not yet committed).
//!
//! The rule the syncer follows (docs/design-sync.md): a change read from the log
//! may be applied to a table once every chunk of that table that was in flight
//! when the change was read has ended. Chunks that start later read the source
//! after the change was committed, so whichever of their write and the syncer's
//! lands last, it carries a state at least as new as the change; changes after
//! that come in later batches and wait in turn. Applying to a key the copy has not
//! reached yet is harmless (the chunk overwrites it with a newer state); applying
//! while a chunk that read the key earlier is still writing could be overwritten
//! by that older state, which is what the wait prevents.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pontoon_core::{Error, Result, TableSchema};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Tracked {
    /// The schema writes use, once the copy has prepared the target table.
    write: Option<Arc<TableSchema>>,
    /// Why the table will never be ready (its preparation failed).
    failed: Option<String>,
    in_flight: BTreeSet<u64>,
}

/// Shared by the copier (which reports) and the syncer (which waits).
#[derive(Debug, Default)]
pub struct CopyTracker {
    tables: Mutex<HashMap<String, Tracked>>,
    changed: Notify,
}

impl CopyTracker {
    pub fn new() -> CopyTracker {
        CopyTracker::default()
    }

    fn update(&self, table: &str, f: impl FnOnce(&mut Tracked)) {
        if let Ok(mut t) = self.tables.lock() {
            f(t.entry(table.to_string()).or_default());
        }
        self.changed.notify_waiters();
    }

    /// The copy has created or checked the target table (source name `table`).
    pub fn prepared(&self, table: &str, write: &TableSchema) {
        let write = Arc::new(write.clone());
        self.update(table, |t| t.write = Some(write));
    }

    /// The copy cannot prepare the table: waiting for it is pointless.
    pub fn failed(&self, table: &str, why: &str) {
        self.update(table, |t| t.failed = Some(why.to_string()));
    }

    /// A chunk's read is about to start.
    pub fn chunk_started(&self, table: &str, seq: u64) {
        self.update(table, |t| {
            t.in_flight.insert(seq);
        });
    }

    /// A chunk's write committed (or the chunk failed and wrote nothing).
    pub fn chunk_ended(&self, table: &str, seq: u64) {
        self.update(table, |t| {
            t.in_flight.remove(&seq);
        });
    }

    /// Waits until the target table is ready, then until every chunk of the table in
    /// flight *now* has ended; returns the write schema. Chunks starting meanwhile
    /// are not waited for (see the module's rule). `None` when `stop` says to give up.
    pub async fn wait_applicable(
        &self,
        table: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Arc<TableSchema>>> {
        let mut waiting_for: Option<BTreeSet<u64>> = None;
        loop {
            let notified = self.changed.notified();
            {
                let tables = self.tables.lock().map_err(|_| Error::internal("copy tracker lock poisoned"))?;
                let t = tables.get(table);
                if let Some(why) = t.and_then(|t| t.failed.as_ref()) {
                    return Err(Error::new(
                        pontoon_core::ErrorKind::Schema,
                        format!("cannot sync table {table}: its copy could not start: {why}"),
                    ));
                }
                if let Some(write) = t.and_then(|t| t.write.clone()) {
                    let in_flight = t.map(|t| &t.in_flight);
                    let snapshot = waiting_for.get_or_insert_with(|| in_flight.cloned().unwrap_or_default());
                    if in_flight.is_none_or(|now| snapshot.is_disjoint(now)) {
                        return Ok(Some(write));
                    }
                }
            }
            if stop() {
                return Ok(None);
            }
            // woken by any change; the timeout only re-checks `stop`
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pontoon_core::{Column, ColumnType};

    fn schema() -> TableSchema {
        TableSchema {
            name: "t".into(),
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Int { bytes: 8, unsigned: false },
                nullable: false,
                native: String::new(),
                has_default: false,
            }],
            primary_key: vec!["id".into()],
        }
    }

    #[tokio::test]
    async fn waits_for_chunks_in_flight_when_asked_not_for_later_ones() {
        let tracker = Arc::new(CopyTracker::new());
        let never = || false;
        tracker.prepared("t", &schema());
        tracker.chunk_started("t", 1);
        let waiter = {
            let tracker = tracker.clone();
            tokio::spawn(async move { tracker.wait_applicable("t", &|| false).await.map(|w| w.is_some()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // a chunk starting after the change was read does not hold the apply back
        tracker.chunk_started("t", 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "chunk 1 was in flight when the change was read");
        tracker.chunk_ended("t", 1);
        assert!(tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap().unwrap());
        // chunk 2 is in flight now, so a new change waits for it
        let t2 = tracker.clone();
        let second = tokio::spawn(async move { t2.wait_applicable("t", &never).await.map(|w| w.is_some()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        tracker.chunk_ended("t", 2);
        assert!(tokio::time::timeout(Duration::from_secs(2), second).await.unwrap().unwrap().unwrap());
    }

    #[tokio::test]
    async fn waits_for_the_target_table_and_reports_a_failed_one() {
        let tracker = Arc::new(CopyTracker::new());
        let t = tracker.clone();
        let waiter = tokio::spawn(async move { t.wait_applicable("t", &|| false).await.map(|w| w.is_some()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the target table is not ready yet");
        tracker.prepared("t", &schema());
        assert!(tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap().unwrap());
        tracker.failed("u", "incompatible column");
        let e = tracker.wait_applicable("u", &|| false).await.unwrap_err();
        assert!(e.to_string().contains("incompatible column"), "{e}");
        assert!(tracker.wait_applicable("v", &|| true).await.unwrap().is_none(), "stop gives up");
    }
}
