//! The traits every engine implements. The engine knows databases only through them.
//!
//! A [`Connector`] is built from a URL without I/O and hands out connections: a
//! [`Reader`] for the source side and a [`Writer`] for the target side. Each worker
//! holds its own connections; none of these objects is shared between tasks.

use std::fmt;

use async_trait::async_trait;

use crate::capture::{Capture, CaptureSpec};
use crate::convert::Limits;
use crate::digest::Digest;
use crate::error::Result;
use crate::scan::{KeyRange, Row, ScanSpec};
use crate::schema::{ColumnType, Engine, TableSchema};
use crate::value::Value;

/// A database URL that may hold a password. `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL with its password, for the driver only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", crate::error::redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::error::redact_url(&self.0))
    }
}

/// One database, as configured by a URL. Creating it does no I/O.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    fn engine(&self) -> Engine;

    /// What the engine can hold beyond its column types (see [`Limits`]).
    fn limits(&self) -> Limits;

    /// The digests its readers' [`Reader::checksum`] computes (none by default).
    fn digests(&self) -> &'static [Digest] {
        &[]
    }

    /// The native column type this engine uses for a portable type when it creates a
    /// table (the type mapping `plan` prints; `docs/type-mapping.md`).
    fn native_type(&self, ty: &ColumnType) -> String;

    /// Opens a connection for reading.
    async fn reader(&self) -> Result<Box<dyn Reader>>;

    /// Opens a connection for writing.
    async fn writer(&self) -> Result<Box<dyn Writer>>;

    /// A change stream of this database as a source (`pontoon run`, `pontoon cleanup`).
    /// Creating it does no I/O; `Capture::start` installs what it needs.
    fn capture(&self, spec: &CaptureSpec) -> Result<Box<dyn Capture>> {
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("{} has no {:?} change capture", self.engine(), spec.mode),
        ))
    }
}

/// Reads a source: catalog, sizes, key boundaries and consistent key-range scans.
///
/// Contract: every method is read-only. `scan` returns the rows whose key lies in the
/// range, ordered by key, with the columns of `ScanSpec::select` in order, decoded
/// according to each item's source type. A value the reader cannot decode is an
/// error naming the column (the engine adds table and key).
#[async_trait]
pub trait Reader: Send {
    /// Base tables of the connection's schema, sorted by name.
    async fn list_tables(&mut self) -> Result<Vec<String>>;

    /// The table's columns and primary key, or `None` if it does not exist.
    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>>;

    /// The types of SQL expressions evaluated over `table` (computed columns).
    async fn describe_exprs(&mut self, table: &str, exprs: &[String]) -> Result<Vec<ColumnType>>;

    /// The engine's estimate of the table's row count (cheap, may be stale).
    async fn estimate_rows(&mut self, table: &str) -> Result<u64>;

    /// Walks the key index: the key of the `step`-th row after `after` (in key
    /// order, within the scan's filter and partition), or `None` if fewer than
    /// `step` rows remain. Chunk boundaries are built from it.
    async fn key_after(&mut self, scan: &ScanSpec, after: Option<&[Value]>, step: u64) -> Result<Option<Vec<Value>>>;

    /// The smallest and the largest key within the scan's filter and partition, when
    /// the engine finds them cheaply (an index's two ends) and the key is one integer
    /// column; `Ok(None)` otherwise (the default) and for an empty table. Verify splits
    /// such a key's span into ranges of equal width instead of walking the index.
    async fn key_span(&mut self, _scan: &ScanSpec) -> Result<Option<(i64, i64)>> {
        Ok(None)
    }

    /// Distinct values of `column` (of source type `ty`) with their row counts,
    /// within `filter`, smallest count first.
    async fn partitions(
        &mut self,
        table: &str,
        column: &str,
        ty: &ColumnType,
        filter: Option<&str>,
    ) -> Result<Vec<(Value, u64)>>;

    /// The rows whose key lies in `range`, ordered by key.
    async fn scan(&mut self, scan: &ScanSpec, range: &KeyRange) -> Result<Vec<Row>>;

    /// [`Reader::scan`], each row handed to `each` as soon as it is decoded instead of
    /// the chunk's rows collected first (decoded rows take several times the memory
    /// of their encoding for the target, and a second pass over them misses the CPU's
    /// cache). Stops at the first error, of the read or of `each`; returns the number
    /// of rows read. The default collects them with `scan`.
    async fn scan_each(
        &mut self,
        scan: &ScanSpec,
        range: &KeyRange,
        each: &mut (dyn FnMut(Row) -> Result<()> + Send),
    ) -> Result<u64> {
        let rows = self.scan(scan, range).await?;
        let n = rows.len() as u64;
        for row in rows {
            each(row)?;
        }
        Ok(n)
    }

    /// The rows whose key lies in `range`, in the engine's own bulk format (any
    /// order), for a writer of the same engine to load without decoding them
    /// ([`Writer::upsert_raw`]). `Ok(None)` when the engine has no such format.
    /// Only `SelectExpr::Column` items are asked for this way.
    async fn scan_raw(&mut self, _scan: &ScanSpec, _range: &KeyRange) -> Result<Option<RawRows>> {
        Ok(None)
    }

    /// An order-independent digest of the rows whose key lies in `range` (within the
    /// scan's filter and partition), computed by the database itself: verify's fast
    /// path compares these per chunk and fetches rows only where they differ.
    /// Contract: two databases whose rows in the range hold equal values under
    /// columns of the same types give equal checksums of the same [`Digest`], whatever
    /// the tables and column names (a [`Digest::Native`] one only between databases
    /// of the same engine); any difference (a missing or extra row, a changed value,
    /// NULL against an empty string, a float's last bit) changes `rows` or, with
    /// overwhelming probability, `hash`. `Ok(None)` when the engine cannot compute
    /// this digest of these columns, or the scan selects SQL expressions.
    async fn checksum(&mut self, _scan: &ScanSpec, _range: &KeyRange, _digest: Digest) -> Result<Option<Checksum>> {
        Ok(None)
    }

    /// [`Reader::checksum`] of consecutive key ranges in one pass over the table:
    /// `bounds` (ascending, in key order) split the scan's rows into `bounds.len() + 1`
    /// ranges, `(-inf, b0]`, `(b0, b1]`, ..., `(b_last, +inf)`, and each gets the
    /// checksum `checksum` would give it. For engines where one scan of the table
    /// costs much less than a range scan per chunk. `Ok(None)` when the engine cannot
    /// (the default), e.g. for a key other than one integer column.
    async fn checksum_ranges(
        &mut self,
        _scan: &ScanSpec,
        _bounds: &[Vec<Value>],
        _digest: Digest,
    ) -> Result<Option<Vec<Checksum>>> {
        Ok(None)
    }

    /// The current rows whose key is one of `keys` (source key values, in
    /// `ScanSpec::key` order, decoded as `scan` decodes `key_types`) and that pass the
    /// scan's `filter` and `partition`, with the columns of `ScanSpec::select`, in any
    /// order. A key without such a row is simply absent from the result. One
    /// statement (or a few, for very many keys), read-only; the sync re-reads changed
    /// rows through it (DESIGN.md, correctness rule 2). It must see every change a
    /// capture of the same engine has returned before the call (MariaDB: a locking
    /// read waits for a transaction already in the binlog; docs/design-sync.md).
    async fn fetch_keys(&mut self, scan: &ScanSpec, _keys: &[Vec<Value>]) -> Result<Vec<Row>> {
        Err(crate::Error::new(crate::ErrorKind::Unsupported, "this engine cannot fetch rows by key")
            .in_table(scan.table.clone()))
    }
}

/// A key range's row count and order-independent hash, as one database computed it
/// ([`Reader::checksum`]); only comparable with one of the same [`Digest`] (and, for
/// [`Digest::Native`], from the same engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub rows: u64,
    pub hash: u64,
}

/// Rows in an engine's own bulk format (PostgreSQL: a complete binary `COPY` stream,
/// header and trailer included): passed from a reader to a writer of the same
/// engine when the engine has checked that every target column has exactly the
/// source column's type, so no value can fail to fit; or made by a writer's
/// [`BulkEncoder`] from fitted rows, each value checked as it was encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct RawRows {
    pub engine: Engine,
    /// Number of rows in `data`.
    pub rows: u64,
    pub data: Vec<u8>,
    /// The primary key values of the rows, row after row (`rows` times the key's
    /// width), when a [`BulkEncoder`] made them: an error the target finds in a row
    /// then names its key. Empty for rows read in the bulk format.
    pub keys: Vec<Value>,
}

impl RawRows {
    /// The key of the `row`-th row (from 0), of a key of `width` columns, when known.
    pub fn key(&self, row: usize, width: usize) -> Option<Vec<Value>> {
        let start = row.checked_mul(width)?;
        (width > 0).then(|| self.keys.get(start..start + width).map(<[Value]>::to_vec)).flatten()
    }
}

impl fmt::Debug for RawRows {
    /// Never the data: it is someone's rows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawRows({}, {} rows, {} bytes)", self.engine, self.rows, self.data.len())
    }
}

/// Encodes rows, one at a time as they are fitted, into a writer's bulk format for
/// [`Writer::upsert_raw`] ([`Writer::bulk_encoder`]). Each value is checked as
/// [`Writer::upsert`] would check it; nothing is sent.
pub trait BulkEncoder: Send {
    /// Appends a row (fitted, in the column order of the `TableSchema` the encoder was
    /// made for). An error names the column; the encoder must then be dropped.
    fn push(&mut self, row: &[Value]) -> Result<()>;

    /// The rows pushed, with their keys.
    fn finish(self: Box<Self>) -> RawRows;
}

/// Writes a target.
///
/// Contract: `upsert` is atomic (one transaction: all rows or none) and idempotent:
/// writing the same rows twice leaves each key once, with the values of the last
/// write. Rows are in the column order of the `TableSchema` given, whose
/// `primary_key` names the conflict key. Values have already been fitted to the
/// target's column types by the engine ([`crate::convert::fit`]); the engine's own
/// strict checks (MariaDB strict mode, PostgreSQL types) are a second line, never
/// the only one.
#[async_trait]
pub trait Writer: Send {
    /// The table's columns and primary key, or `None` if it does not exist.
    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>>;

    /// Creates the table with the primary key and, for each column, `Column::native`
    /// when it is set (a same-engine copy keeps the source's exact types) or else
    /// [`Connector::native_type`] of its portable type. Fails if it exists.
    async fn create_table(&mut self, schema: &TableSchema) -> Result<()>;

    /// Inserts the rows, replacing rows with the same key, in one transaction.
    /// Returns the number of rows written.
    async fn upsert(&mut self, table: &TableSchema, rows: &[Row]) -> Result<u64>;

    /// [`Writer::upsert`] for rows in the engine's own bulk format, from
    /// [`Reader::scan_raw`] of the same engine; same contract (atomic, idempotent).
    async fn upsert_raw(&mut self, table: &TableSchema, _rows: &RawRows) -> Result<u64> {
        Err(crate::Error::new(crate::ErrorKind::Unsupported, "this engine has no raw bulk format")
            .in_table(table.name.clone()))
    }

    /// A [`BulkEncoder`] for rows of `table` (the target's actual column types are
    /// looked up as `upsert` looks them up), when the engine can load rows encoded
    /// ahead of the write through [`Writer::upsert_raw`]: the copy then encodes each
    /// row as soon as it is fitted, while it is still in the CPU's cache, and keeps
    /// the compact encoding instead of the decoded rows. The encoding goes into
    /// `buffer`, emptied first (the `data` of an earlier [`RawRows`]: its memory is
    /// reused instead of new pages being faulted in for every chunk). `Ok(None)`
    /// otherwise (the default).
    async fn bulk_encoder(&mut self, _table: &TableSchema, _buffer: Vec<u8>) -> Result<Option<Box<dyn BulkEncoder>>> {
        Ok(None)
    }

    /// Applies one sync batch to one table in **one transaction**: first deletes the
    /// rows whose primary key is one of `deletes` (target key values in
    /// `TableSchema::primary_key` order; a key the target does not have is not an
    /// error), then upserts `rows` (as [`Writer::upsert`]: fitted, in the schema's
    /// column order). Deletes go first because under a case- or pad-insensitive
    /// collation a deleted spelling (`'abc'`) may match the row upserted under its
    /// current one (`'ABC'`). With `version_column` (a column of the schema),
    /// an upserted row replaces an existing target row only if the target's version
    /// is NULL or not newer than the row's (DESIGN.md, correctness rule 4); the
    /// row is otherwise left as it is, silently. Returns the rows upserted or
    /// deleted (as far as the engine reports; guarded rows may count).
    async fn apply(
        &mut self,
        table: &TableSchema,
        _rows: &[Row],
        _deletes: &[Vec<Value>],
        _version_column: Option<&str>,
    ) -> Result<u64> {
        Err(crate::Error::new(crate::ErrorKind::Unsupported, "this engine cannot apply changes")
            .in_table(table.name.clone()))
    }
}
