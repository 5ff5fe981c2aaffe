//! Change capture: what every capture mode (triggers, PostgreSQL logical decoding,
//! MariaDB binlog) delivers to the syncer.
//!
//! A change event names a row (table and key), never its values: the syncer re-reads
//! the current row from the source, which makes applying idempotent and insensitive
//! to order within a batch (DESIGN.md, correctness model rule 2).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::position::Position;
use crate::schema::ColumnType;
use crate::value::Value;

/// Which capture mode a job uses (`[sync] capture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// A change-log table filled by triggers pontoon installs on the source.
    Triggers,
    /// PostgreSQL logical decoding (a replication slot) or the MariaDB row binlog.
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Insert,
    Update,
    Delete,
}

/// One committed change of one row. An update that changes the key yields two
/// events: one for the old key and one for the new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The source table.
    pub table: String,
    /// The source key columns' values, in key order.
    pub key: Vec<Value>,
    pub op: ChangeOp,
}

/// A schema change on a captured table: the sync stops and names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdlEvent {
    pub table: String,
    pub statement: String,
    pub position: Position,
}

/// What one read returned. Everything committed up to `position` is in `events`
/// (or was not about a captured table); the next read starts there.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureBatch {
    pub events: Vec<ChangeEvent>,
    pub position: Position,
    /// A DDL statement on a captured table, after the events: stop before it.
    pub ddl: Option<DdlEvent>,
    /// When the newest change in the batch was committed (microseconds since the
    /// epoch), for the lag shown to the operator.
    pub committed_at_micros: Option<i64>,
}

/// A table to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureTable {
    pub table: String,
    pub key: Vec<String>,
    pub key_types: Vec<ColumnType>,
}

/// What to build a capture for: the mode and the job's id, which names everything
/// the capture installs (`pontoon_log_<job>`, `pontoon_<job>` slot, trigger names),
/// so two jobs on one source never share them and `cleanup` finds exactly its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    pub mode: CaptureMode,
    /// `[a-z0-9_]{1,40}`, from the job (`[sync] name`, else the job file's name).
    pub job: String,
}

/// How far the source's change log is ahead of a position, as far as the capture
/// can tell cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Backlog {
    /// Change events not yet read (trigger log rows).
    pub events: Option<u64>,
    /// Bytes of change log not yet read (WAL, binlog).
    pub bytes: Option<u64>,
}

/// A change stream from one source.
///
/// Contract: after `start` returned position P0, every change committed on a
/// captured table after P0 is delivered by `read` at least once, in commit order
/// of transactions (events of one transaction together),
/// until `release` says it may be forgotten. Reading again from an earlier position
/// (after a crash) delivers the same changes again. Nothing is removed from the
/// source before `release`. `cleanup` removes everything `start` installed.
///
/// Key values in events are decoded as the source `Reader` decodes the key
/// columns' types (`CaptureTable::key_types`), so they can be passed to
/// `Reader::fetch_keys` as they are.
///
/// Calls are sequential: `read`, then (after the target commit) `release` of
/// that batch's position, then `read` again; after a restart, `start` and then
/// `read` from the last checkpointed position. A capture whose [`Capture::reads_ahead`]
/// is true may also be read from a batch's position before that batch is released.
#[async_trait]
pub trait Capture: Send {
    /// Checks that the server allows this capture for these tables: settings,
    /// privileges, a key on every table, and a change-log retention (binlog expiry,
    /// WAL kept for a slot) longer than `copy_seconds`, the estimated copy time. Every
    /// refusal is reported at once in one `ErrorKind::Config` error, each line naming
    /// the setting or table, its value, and what to change.
    async fn preflight(&mut self, tables: &[CaptureTable], copy_seconds: u64) -> Result<()>;

    /// Installs what capture needs (idempotent: a second start reuses it) and returns
    /// the current position.
    async fn start(&mut self, tables: &[CaptureTable]) -> Result<Position>;

    /// Changes committed after `from`: at most about `max_events`, waiting at most
    /// `wait` when there are none yet. Together with the engine's
    /// [`crate::Reader::fetch_keys`], a change returned is seen by a re-read that
    /// starts after `read` returns (PostgreSQL: the capture waits until its
    /// transactions are visible; MariaDB: the re-read locks).
    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch>;

    /// Changes up to `upto` are applied and checkpointed: the source may drop them.
    async fn release(&mut self, upto: &Position) -> Result<()>;

    /// Whether the syncer may read the next batch while it writes one: a read from
    /// a position not yet released returns what a read after the release would.
    /// True where a position is a place in a log the server keeps (WAL, binlog);
    /// false for a change-log table read as a queue, whose release deletes rows a
    /// read-ahead may have returned (lost if the process dies before they are written).
    fn reads_ahead(&self) -> bool {
        false
    }

    /// How much is waiting after `from` (for the lag shown to the operator).
    async fn backlog(&mut self, _from: &Position) -> Result<Backlog> {
        Ok(Backlog::default())
    }

    /// Removes what this capture installed on the server for this job (found by
    /// name, so it works without `start` and after a crash); says what it removed,
    /// one item per object (`trigger pontoon_orders_ins on orders`). Idempotent.
    async fn cleanup(&mut self) -> Result<Vec<String>>;
}
