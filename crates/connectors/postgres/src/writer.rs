//! The target side: table creation and idempotent batch upserts by binary `COPY`.
//!
//! A batch is first copied straight into the table, in one transaction: the fastest
//! way into PostgreSQL. If that hits a unique violation (the batch, or part of it,
//! was written before), the transaction is rolled back and the batch is redone
//! through a staging table: `COPY` into a temporary table, then
//! `INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE` (deduplicated to the last row
//! of each key when a key occurs twice in the batch). After a conflict the next few
//! batches of that table go straight to the staging path (a syncer's batches
//! conflict nearly always), then the direct path is tried again.
//!
//! The `COPY` payload is either rows encoded here ([`Writer::upsert`]) or a binary
//! `COPY` stream read from a PostgreSQL source of the same column types and sent as
//! it is ([`Writer::upsert_raw`]); both take the same direct and staging paths.
//!
//! Measured on a 2-core machine (1M rows of bigint, 50-char text, int, timestamp;
//! batches of 10,000): direct ~0.72-0.75M rows/s, staged upsert of existing rows
//! ~0.2M rows/s.

use std::collections::HashMap;
use std::pin::pin;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use pontoon_core::connector::BulkEncoder;
use pontoon_core::{Engine, Error, RawRows, Result, Row, TableSchema, Value, Writer};
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::encode::{Param, TargetColumn, encode};
use crate::errors::{copy_location, pg_error};
use crate::pg_native_type;
use crate::session::Session;
use crate::sql::{column_list, quote_ident};
use crate::{catalog, copy_stream};

/// Batches that go straight to the staging path after a conflict.
const STAGED_AFTER_CONFLICT: u32 = 8;
/// Staging tables are named this and a number, one per target table and session.
const STAGE: &str = "pontoon_stage";
/// Raw `COPY` data is sent in pieces of this size.
const RAW_PIECE: usize = 256 * 1024;
/// Rows (or keys) per statement of [`Writer::apply`], within PostgreSQL's 65,535
/// bind parameters.
const APPLY_ROWS: usize = 1000;
const MAX_PARAMS: usize = 65_535;
/// The target table's alias in the staged merge (for the version guard).
const MERGE_ALIAS: &str = "pontoon_t";

/// A target table as the writer knows it: the columns it writes, with their exact
/// types, fetched once.
struct TableTarget {
    names: Vec<String>,
    columns: Vec<TargetColumn>,
    /// Batches left to send through the staging table directly.
    staged_left: u32,
    /// The staging table exists (created on first use; an error forgets the whole
    /// `TableTarget`, so a failed transaction's leftovers are never reused).
    stage_ready: bool,
}

/// Writes a PostgreSQL target on its own connection (see [`Writer`] for the
/// contract).
pub struct PgWriter {
    session: Session,
    targets: HashMap<String, TableTarget>,
    /// The name of each target table's staging table in this session.
    stages: HashMap<String, String>,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWriter").field("session", &self.session).field("tables", &self.targets.len()).finish()
    }
}

/// A failed `COPY`: the driver's error, or our encoder's for a row of the batch.
enum CopyFailure {
    Driver(tokio_postgres::Error),
    Encode { error: Error, row: usize },
}

impl From<tokio_postgres::Error> for CopyFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        CopyFailure::Driver(error)
    }
}

/// What a batch's `COPY` sends: rows encoded here for the target's column types, or
/// a complete binary `COPY` stream (header and trailer included) sent as it is.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Rows(&'a [Row]),
    Raw(&'a RawRows),
}

/// Copies the payload into `table` through `COPY ... FROM STDIN (FORMAT binary)`;
/// returns the server's count of rows copied. Rows are encoded into pieces of about
/// [`RAW_PIECE`] bytes, each sent as one message (the driver's `BinaryCopyInWriter`
/// sends 4 kB ones, a hand-over to the connection task each: measured, 1M narrow
/// rows cost ~0.1 CPU-s more that way).
async fn copy_payload(
    tx: &Transaction<'_>,
    table: &str,
    target: &TableTarget,
    payload: Payload<'_>,
) -> std::result::Result<u64, CopyFailure> {
    let sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", quote_ident(table), column_list(&target.names));
    let sink = tx.copy_in::<_, Bytes>(&sql).await?;
    let mut sink = pin!(sink);
    match payload {
        Payload::Rows(rows) => {
            let mut buf = BytesMut::with_capacity(RAW_PIECE + RAW_PIECE / 4);
            copy_stream::write_header(&mut buf);
            for (i, row) in rows.iter().enumerate() {
                // an error drops the sink unfinished: the server is told the COPY failed
                copy_stream::write_row(row, &target.columns, &mut buf)
                    .map_err(|error| CopyFailure::Encode { error, row: i })?;
                if buf.len() >= RAW_PIECE {
                    sink.send(buf.split().freeze()).await?;
                    buf.reserve(RAW_PIECE + RAW_PIECE / 4);
                }
            }
            copy_stream::write_trailer(&mut buf);
            sink.send(buf.freeze()).await?;
        }
        Payload::Raw(raw) => {
            for piece in raw.data.chunks(RAW_PIECE) {
                sink.send(Bytes::copy_from_slice(piece)).await?;
            }
        }
    }
    Ok(sink.finish().await?)
}

/// Copies the payload into the staging table `stage` (emptied at every commit) and merges
/// it into the table by primary key with `INSERT ... SELECT ... ON CONFLICT (key)
/// DO UPDATE`, the version guard (`version_column`) as the update's `WHERE`; returns
/// the number of rows staged and the number the merge wrote. A key twice in one
/// batch makes the merge fail (21000); only then is the cost of deduplicating paid,
/// keeping the last copy of each key (`ctid DESC`: the staging table holds the rows
/// in batch order).
async fn merge_staged(
    tx: &mut Transaction<'_>,
    stage: &str,
    schema: &TableSchema,
    target: &TableTarget,
    payload: Payload<'_>,
    version_column: Option<&str>,
) -> Result<(u64, u64)> {
    let what = "upserting rows";
    let cols = column_list(&target.names);
    let keys = column_list(&schema.primary_key);
    let table = quote_ident(&schema.name);
    let updates: Vec<String> = target
        .names
        .iter()
        .filter(|n| !schema.primary_key.contains(n))
        .map(|n| format!("{c} = EXCLUDED.{c}", c = quote_ident(n)))
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        let guard = version_column
            .map(|v| {
                let v = quote_ident(v);
                format!(" WHERE {MERGE_ALIAS}.{v} IS NULL OR {MERGE_ALIAS}.{v} <= EXCLUDED.{v}")
            })
            .unwrap_or_default();
        format!("DO UPDATE SET {}{guard}", updates.join(", "))
    };
    let merge =
        |source: &str| format!("INSERT INTO {table} AS {MERGE_ALIAS} ({cols}) {source} ON CONFLICT ({keys}) {action}");
    let locate = |e: tokio_postgres::Error| {
        let (_, column) = copy_location(&e, &target.names);
        let err = pg_error(e, what);
        match column {
            Some(c) => err.in_column(c),
            None => err,
        }
    };
    let copied =
        copy_payload(tx, stage, target, payload).await.map_err(|f| write_error(f, schema, target, payload, what))?;
    let stage = quote_ident(stage);
    let savepoint = tx.savepoint("pontoon_merge").await.map_err(|e| pg_error(e, what))?;
    let merged = match savepoint.execute(merge(&format!("SELECT {cols} FROM {stage}")).as_str(), &[]).await {
        Ok(n) => {
            savepoint.commit().await.map_err(|e| pg_error(e, what))?;
            n
        }
        Err(e) if e.code() == Some(&SqlState::CARDINALITY_VIOLATION) => {
            savepoint.rollback().await.map_err(|e| pg_error(e, what))?;
            let deduplicated = format!("SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ORDER BY {keys}, ctid DESC");
            tx.execute(merge(&deduplicated).as_str(), &[]).await.map_err(locate)?
        }
        Err(e) => return Err(locate(e)),
    };
    Ok((copied, merged))
}

/// The error of a failed write, located: the row (by its key) and the column, when
/// the encoder or the server's COPY context tells them. Raw data read from a source
/// has no key to show: its error names the row's position in the batch, as the
/// server counts it (and the key, when a [`BulkEncoder`] kept the keys).
fn write_error(
    failure: CopyFailure,
    schema: &TableSchema,
    target: &TableTarget,
    payload: Payload<'_>,
    what: &str,
) -> Error {
    let error = match failure {
        CopyFailure::Driver(error) => error,
        CopyFailure::Encode { error, row } => {
            // the encoder's error names the column; add the row's key
            return match payload {
                Payload::Rows(rows) => match row_key(schema, rows.get(row)) {
                    Some(key) => error.at_key(key),
                    None => error,
                },
                Payload::Raw(_) => error,
            };
        }
    };
    let (line, column) = copy_location(&error, &target.names);
    let rows = match payload {
        Payload::Rows(rows) => rows,
        Payload::Raw(raw) => {
            let key = line.and_then(|l| raw.key(l.checked_sub(1)?, schema.primary_key.len()));
            let what = match line {
                Some(line) if key.is_none() => format!("{what} (row {line} of the raw batch)"),
                _ => what.to_string(),
            };
            let mut err = pg_error(error, &what);
            if let Some(column) = column {
                err = err.in_column(column);
            }
            if let Some(key) = key {
                err = err.at_key(key);
            }
            return err;
        }
    };
    let row = line.and_then(|l| l.checked_sub(1));
    let mut err = pg_error(error, what);
    if let Some(column) = column {
        err = err.in_column(column);
    }
    if let Some(key) = row_key(schema, row.and_then(|i| rows.get(i))) {
        err = err.at_key(key);
    }
    err
}

/// The primary key values of a row of the batch, when the table has a key.
fn row_key(schema: &TableSchema, row: Option<&Row>) -> Option<Vec<Value>> {
    let row = row?;
    if schema.primary_key.is_empty() {
        return None;
    }
    schema.primary_key.iter().map(|k| schema.position(k).and_then(|p| row.get(p)).cloned()).collect()
}

/// Rows encoded into a binary `COPY` stream for a table's actual column types, with
/// their keys ([`Writer::bulk_encoder`]).
struct PgEncoder {
    columns: Vec<TargetColumn>,
    key_positions: Vec<usize>,
    buf: BytesMut,
    rows: u64,
    keys: Vec<Value>,
}

impl BulkEncoder for PgEncoder {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        copy_stream::write_row(row, &self.columns, &mut self.buf)?;
        self.keys.extend(self.key_positions.iter().map(|&p| row[p].clone()));
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> RawRows {
        copy_stream::write_trailer(&mut self.buf);
        let PgEncoder { buf, rows, keys, .. } = *self;
        RawRows { engine: Engine::Postgres, rows, data: buf.into(), keys }
    }
}

enum Direct {
    Written(u64),
    Conflict,
}

impl PgWriter {
    pub(crate) fn new(session: Session) -> PgWriter {
        PgWriter { session, targets: HashMap::new(), stages: HashMap::new() }
    }

    /// Loads (once) the exact types of the columns `schema` writes.
    async fn target(&mut self, schema: &TableSchema) -> Result<()> {
        let names: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
        if self.targets.get(&schema.name).is_some_and(|t| t.names == names) {
            return Ok(());
        }
        let columns = catalog::target_columns(&self.session.client, &schema.name, &names).await?;
        self.targets.insert(schema.name.clone(), TableTarget { names, columns, staged_left: 0, stage_ready: false });
        Ok(())
    }

    /// The staging table of `schema` (see [`merge_staged`]), created afresh on first
    /// use after [`PgWriter::target`]: a temporary table of the written columns whose
    /// rows go at every commit, kept for the session, so a stream of small batches
    /// does not create and drop a table (catalog rows) each time.
    async fn stage(&mut self, schema: &TableSchema) -> Result<String> {
        let n = self.stages.len();
        let stage = self.stages.entry(schema.name.clone()).or_insert_with(|| format!("{STAGE}_{n}")).clone();
        let target = self.targets.get_mut(&schema.name).ok_or_else(|| Error::internal("no target before staging"))?;
        if !target.stage_ready {
            let sql = format!(
                "DROP TABLE IF EXISTS pg_temp.{s}; CREATE TEMP TABLE {s} ON COMMIT DELETE ROWS AS SELECT {} FROM {} \
                 WITH NO DATA",
                column_list(&target.names),
                quote_ident(&schema.name),
                s = quote_ident(&stage)
            );
            self.session.client.batch_execute(&sql).await.map_err(|e| pg_error(e, "creating the staging table"))?;
            target.stage_ready = true;
        }
        Ok(stage)
    }

    /// COPY straight into the table; a unique violation rolls back and reports
    /// [`Direct::Conflict`].
    async fn write_direct(&mut self, schema: &TableSchema, payload: Payload<'_>) -> Result<Direct> {
        let table = schema.name.as_str();
        let target = &self.targets[table];
        let what = "writing rows";
        let tx = self.session.client.transaction().await.map_err(|e| pg_error(e, what))?;
        match copy_payload(&tx, table, target, payload).await {
            Ok(n) => {
                tx.commit().await.map_err(|e| pg_error(e, what))?;
                Ok(Direct::Written(n))
            }
            Err(failure) => {
                // a failed rollback means a lost connection: the next call reports it
                let _ = tx.rollback().await;
                if matches!(&failure, CopyFailure::Driver(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION)) {
                    Ok(Direct::Conflict)
                } else {
                    Err(write_error(failure, schema, target, payload, what))
                }
            }
        }
    }

    /// COPY into a staging table, then merge into the table by primary key; returns
    /// the number of rows copied into the staging table.
    async fn write_staged(&mut self, schema: &TableSchema, payload: Payload<'_>) -> Result<u64> {
        let what = "upserting rows";
        if schema.primary_key.is_empty() {
            return Err(Error::schema("the rows exist already and the table has no primary key to update them by"));
        }
        let stage = self.stage(schema).await?;
        let target = &self.targets[&schema.name];
        let mut tx = self.session.client.transaction().await.map_err(|e| pg_error(e, what))?;
        let (copied, _) = merge_staged(&mut tx, &stage, schema, target, payload, None).await?;
        tx.commit().await.map_err(|e| pg_error(e, what))?;
        Ok(copied)
    }

    /// One batch, by the direct path or through the staging table.
    async fn upsert_inner(&mut self, schema: &TableSchema, payload: Payload<'_>) -> Result<u64> {
        self.target(schema).await?;
        let width = schema.columns.len();
        if let Payload::Rows(rows) = payload
            && let Some(row) = rows.iter().find(|r| r.len() != width)
        {
            return Err(Error::internal(format!("a row of {} values for a table of {width} columns", row.len())));
        }
        let table = schema.name.as_str();
        let staged = {
            let target = self.targets.get_mut(table).expect("loaded above");
            let staged = target.staged_left > 0;
            target.staged_left = target.staged_left.saturating_sub(1);
            staged
        };
        if !staged {
            match self.write_direct(schema, payload).await? {
                Direct::Written(n) => return Ok(n),
                Direct::Conflict => {
                    tracing::debug!(table, "rows exist already; upserting through a staging table");
                    if let Some(t) = self.targets.get_mut(table) {
                        t.staged_left = STAGED_AFTER_CONFLICT;
                    }
                }
            }
        }
        self.write_staged(schema, payload).await
    }

    /// [`Writer::apply`] without the table context: the deletes by
    /// `DELETE ... WHERE key IN (...)`, then the rows through the staging table
    /// ([`merge_staged`], the version guard as the update's `WHERE`). One transaction:
    /// an error rolls everything back (the transaction is dropped). Measured on the
    /// drain benchmark: the staged merge takes about half the time of multi-row
    /// `INSERT ... ON CONFLICT` statements with bound parameters.
    async fn apply_inner(
        &mut self,
        schema: &TableSchema,
        rows: &[Row],
        deletes: &[Vec<Value>],
        version_column: Option<&str>,
    ) -> Result<u64> {
        if schema.primary_key.is_empty() {
            return Err(Error::schema("the table has no primary key to apply changes by"));
        }
        let key_positions: Vec<usize> = schema
            .primary_key
            .iter()
            .map(|k| {
                schema.position(k).ok_or_else(|| {
                    Error::internal(format!("primary key column {k} is not a column of the table")).in_column(k.clone())
                })
            })
            .collect::<Result<_>>()?;
        if let Some(v) = version_column
            && schema.position(v).is_none()
        {
            return Err(Error::schema(format!("the version column {v} is not a column of the table")).in_column(v));
        }
        let width = schema.columns.len();
        if let Some(row) = rows.iter().find(|r| r.len() != width) {
            return Err(Error::internal(format!("a row of {} values for a table of {width} columns", row.len())));
        }
        if let Some(key) = deletes.iter().find(|k| k.len() != key_positions.len()) {
            return Err(Error::internal(format!(
                "a key of {} values for a primary key of {} columns",
                key.len(),
                key_positions.len()
            )));
        }
        self.target(schema).await?;
        let stage = if rows.is_empty() { String::new() } else { self.stage(schema).await? };
        let target = &self.targets[&schema.name];
        let table = quote_ident(&schema.name);
        let keys = column_list(&schema.primary_key);
        let what = "applying changes";
        let mut tx = self.session.client.transaction().await.map_err(|e| pg_error(e, what))?;
        let mut written = 0;
        // deletes first: a deleted key may be spelled differently from the row
        // upserted in its place (a case-insensitive source collation)
        let key_columns: Vec<&TargetColumn> = key_positions.iter().map(|&p| &target.columns[p]).collect();
        for chunk in deletes.chunks(APPLY_ROWS.min(MAX_PARAMS / key_columns.len())) {
            let mut params: Vec<Param<'_>> = Vec::with_capacity(chunk.len() * key_columns.len());
            let mut tuples = Vec::with_capacity(chunk.len());
            for key in chunk {
                let first = params.len() + 1;
                let marks: Vec<String> = (first..first + key.len()).map(|n| format!("${n}")).collect();
                tuples.push(if marks.len() == 1 { marks.join("") } else { format!("({})", marks.join(", ")) });
                for (value, column) in key.iter().zip(&key_columns) {
                    let mut scratch = BytesMut::new();
                    encode(value, column, &mut scratch).map_err(|e| e.at_key(key.clone()))?;
                    params.push(Param { value, column });
                }
            }
            let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                params.iter().map(|p| (p as &(dyn ToSql + Sync), p.column.ty.clone())).collect();
            let target_keys = if key_columns.len() == 1 { keys.clone() } else { format!("({keys})") };
            let sql = format!("DELETE FROM {table} WHERE {target_keys} IN ({})", tuples.join(", "));
            written += tx.execute_typed(&sql, &typed).await.map_err(|e| pg_error(e, "deleting rows"))?;
        }
        if !rows.is_empty() {
            written += merge_staged(&mut tx, &stage, schema, target, Payload::Rows(rows), version_column).await?.1;
        }
        tx.commit().await.map_err(|e| pg_error(e, what))?;
        Ok(written)
    }

    /// [`PgWriter::upsert_inner`], forgetting the table's columns after an error
    /// (the table may have changed under us: look it up again next time).
    async fn upsert_payload(&mut self, schema: &TableSchema, payload: Payload<'_>) -> Result<u64> {
        let result = self.upsert_inner(schema, payload).await;
        if result.is_err() {
            self.targets.remove(&schema.name);
        }
        result.map_err(|e| e.in_table(&schema.name))
    }
}

#[async_trait]
impl Writer for PgWriter {
    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        catalog::describe(&self.session.client, table).await
    }

    async fn create_table(&mut self, schema: &TableSchema) -> Result<()> {
        let mut defs: Vec<String> = schema
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    quote_ident(&c.name),
                    if c.native.is_empty() { pg_native_type(&c.ty) } else { c.native.clone() },
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        if !schema.primary_key.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", column_list(&schema.primary_key)));
        }
        let sql = format!("CREATE TABLE {} ({})", quote_ident(&schema.name), defs.join(", "));
        self.targets.remove(&schema.name);
        self.session
            .client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error(e, "creating the table").in_table(&schema.name))
    }

    async fn upsert(&mut self, table: &TableSchema, rows: &[Row]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.upsert_payload(table, Payload::Rows(rows)).await
    }

    /// Sends the binary `COPY` stream of a [`PgReader`](crate::PgReader) raw scan as
    /// it is, by the same paths as [`Writer::upsert`]. The engine has checked that
    /// every column has exactly the source column's type; the server checks the
    /// stream's shape (a column count or length that does not fit is an error, 22P04).
    async fn upsert_raw(&mut self, table: &TableSchema, raw: &RawRows) -> Result<u64> {
        if raw.engine != Engine::Postgres {
            return Err(Error::internal(format!("raw rows of {} cannot be loaded into PostgreSQL", raw.engine))
                .in_table(&table.name));
        }
        if raw.rows == 0 {
            return Ok(0);
        }
        self.upsert_payload(table, Payload::Raw(raw)).await
    }

    /// A binary `COPY` stream encoder for the table's actual column types: the same
    /// encoder and checks as [`Writer::upsert`], ahead of the write.
    async fn bulk_encoder(&mut self, table: &TableSchema, buffer: Vec<u8>) -> Result<Option<Box<dyn BulkEncoder>>> {
        self.target(table).await.map_err(|e| e.in_table(&table.name))?;
        let key_positions = table
            .primary_key
            .iter()
            .map(|k| {
                table.position(k).ok_or_else(|| {
                    Error::internal(format!("primary key column {k} is not a column of the table"))
                        .in_column(k.clone())
                        .in_table(&table.name)
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        // (a Vec becomes a BytesMut without a copy by way of Bytes)
        let mut buf = BytesMut::from(Bytes::from(buffer));
        buf.clear();
        buf.reserve(RAW_PIECE);
        copy_stream::write_header(&mut buf);
        Ok(Some(Box::new(PgEncoder {
            columns: self.targets[&table.name].columns.clone(),
            key_positions,
            buf,
            rows: 0,
            keys: Vec::new(),
        })))
    }

    /// Multi-row `INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE <guard>` and
    /// `DELETE ... WHERE key IN (...)` in one transaction.
    /// Guarded rows that were left alone are not counted.
    async fn apply(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Vec<Value>],
        version_column: Option<&str>,
    ) -> Result<u64> {
        if rows.is_empty() && deletes.is_empty() {
            return Ok(0);
        }
        let result = self.apply_inner(table, rows, deletes, version_column).await;
        if result.is_err() {
            self.targets.remove(&table.name);
        }
        result.map_err(|e| e.in_table(&table.name))
    }
}
