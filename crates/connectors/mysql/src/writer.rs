//! The target side: tables created from portable types, and idempotent batch upserts in
//! one transaction that fails on any warning the server reports: `LOAD DATA LOCAL
//! INFILE ... REPLACE` fed from memory, or multi-row prepared `INSERT ... ON DUPLICATE
//! KEY UPDATE` (binary protocol) for small batches, for tables a `REPLACE` would harm,
//! and for servers that refuse `LOAD DATA LOCAL`. Both paths make the same checks
//! before they encode a value (`values::check`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow, Value as My};
use pontoon_core::{Column, ColumnType, Error, ErrorKind, Result, Row, TableSchema, Value, Writer};

use crate::catalog::LoadFacts;
use crate::sql::quote;
use crate::values::Target;
use crate::{catalog, error, types, values};

/// At most this many placeholders in one statement (the protocol's limit).
const MAX_PLACEHOLDERS: usize = 65_535;
/// At most this many rows in one statement.
const MAX_BATCH_ROWS: usize = 2_000;
/// At most this many keys in one `DELETE` statement.
const MAX_DELETE_KEYS: usize = 1_000;
/// A batch is cut once its parameters pass this size, so that a statement stays well
/// below the server's packet limit (16 MiB by default).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// MariaDB's limit on the summed maximum size of a row's non-BLOB columns.
const MAX_ROW_BYTES: u64 = 65_535;

/// The file name `LOAD DATA LOCAL` asks the driver for. Nothing is ever read from disk:
/// each statement is preceded by a one-time handler on the connection that serves the
/// bytes of that statement's rows, whatever name the server asks for.
const LOAD_FILE: &str = "pontoon-batch";
/// A `LOAD DATA` statement is cut once its file passes this size by default (a large
/// batch of wide rows then takes several statements in its one transaction).
pub(crate) const MAX_LOAD_BYTES: usize = 64 << 20;
/// The file goes to the server in packets of at most this size: well below the
/// server's packet limit (16 MiB by default), as the INSERT path's statements are.
const LOAD_CHUNK_BYTES: usize = 1 << 20;
/// Server errors meaning `LOAD DATA LOCAL` is turned off (MariaDB 1148 and 4166, MySQL
/// 3948): the writer goes on with INSERT.
const LOAD_REFUSED: &[u16] = &[1148, 4166, 3948];
/// Batches of fewer rows are written with INSERT by default (see
/// [`crate::MysqlConnector::with_load_data_min_rows`]): `LOAD DATA` costs one round trip
/// more (the server asks for the file). Measured with narrow rows, INSERT was faster up
/// to about 100 rows (106 against 125 us for one row, 439 against 451 us for 100) and
/// `LOAD DATA` from about 500 (5-30% less time).
pub(crate) const LOAD_MIN_ROWS: usize = 200;

/// When a writer uses `LOAD DATA LOCAL` (see [`crate::MysqlConnector::with_load_data_min_rows`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSettings {
    /// Batches of at least this many rows are loaded with `LOAD DATA LOCAL`.
    pub min_rows: usize,
    /// A statement's file is cut once it passes this many bytes.
    pub max_bytes: usize,
}

impl Default for LoadSettings {
    fn default() -> LoadSettings {
        LoadSettings { min_rows: LOAD_MIN_ROWS, max_bytes: MAX_LOAD_BYTES }
    }
}

/// A connection writing one MariaDB database. See [`pontoon_core::Writer`].
pub struct MysqlWriter {
    conn: Conn,
    database: String,
    load: LoadSettings,
    /// The server refused `LOAD DATA LOCAL` once: INSERT from then on.
    load_refused: bool,
    /// Per table, read once: how `LOAD DATA` takes it, or `None` when it must not be
    /// used (a `REPLACE` would cascade or fire triggers).
    load_facts: HashMap<String, Option<Arc<LoadFacts>>>,
}

impl std::fmt::Debug for MysqlWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlWriter").field("database", &self.database).field("connection_id", &self.conn.id()).finish()
    }
}

impl MysqlWriter {
    pub(crate) fn new(conn: Conn, database: String, load: LoadSettings) -> MysqlWriter {
        MysqlWriter { conn, database, load, load_refused: false, load_facts: HashMap::new() }
    }

    async fn run(&mut self, sql: &str) -> Result<()> {
        self.conn.query_drop(sql).await.map_err(error::map)
    }

    /// Writes all batches; the caller commits or rolls back. With `guard` (a version
    /// column), an existing row is replaced only where [`upsert_sql`]'s guard holds.
    async fn upsert_batches(&mut self, table: &TableSchema, rows: &[Row], guard: Option<&str>) -> Result<()> {
        let ncols = table.columns.len();
        let max_rows = (MAX_PLACEHOLDERS / ncols).clamp(1, MAX_BATCH_ROWS);
        let key_positions: Vec<usize> = table.primary_key.iter().filter_map(|k| table.position(k)).collect();
        let key_of = |row: &Row| -> Vec<Value> { key_positions.iter().map(|&i| row[i].clone()).collect() };
        let targets: Vec<Target> = table.columns.iter().map(Target::of).collect();
        let full_sql = upsert_sql(table, max_rows, guard);
        let mut start = 0;
        while start < rows.len() {
            let mut params = Vec::with_capacity(max_rows.min(rows.len() - start) * ncols);
            let mut bytes = 0usize;
            let mut end = start;
            while end < rows.len() && end - start < max_rows && bytes < MAX_BATCH_BYTES {
                let row = &rows[end];
                if row.len() != ncols {
                    return Err(Error::internal(format!(
                        "a row of {} values for a table of {ncols} columns",
                        row.len()
                    )));
                }
                for ((value, column), target) in row.iter().zip(&table.columns).zip(&targets) {
                    let cell =
                        values::encode(value, target).map_err(|e| e.in_column(&column.name).at_key(key_of(row)))?;
                    bytes += match &cell {
                        My::Bytes(b) => b.len() + 9,
                        _ => 9,
                    };
                    params.push(cell);
                }
                end += 1;
            }
            let n = end - start;
            let partial_sql;
            let sql = if n == max_rows {
                full_sql.as_str()
            } else {
                partial_sql = upsert_sql(table, n, guard);
                partial_sql.as_str()
            };
            let batch = &rows[start..end];
            let at_row = |e: Error| match error::row_in(e.message()) {
                Some(r) if (1..=batch.len()).contains(&r) && !key_positions.is_empty() => {
                    e.at_key(key_of(&batch[r - 1]))
                }
                _ => e,
            };
            self.conn.exec_drop(sql, params).await.map_err(|e| at_row(error::map(e)))?;
            if self.conn.get_warnings() > 0 {
                return Err(at_row(self.warnings_error().await));
            }
            start = end;
        }
        Ok(())
    }

    /// Deletes the rows whose primary key is one of `keys` (target key values in
    /// primary-key order), at most [`MAX_DELETE_KEYS`] keys a statement; the caller
    /// commits or rolls back. Returns the rows deleted.
    async fn delete_batches(&mut self, table: &TableSchema, keys: &[Vec<Value>]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut positions = Vec::with_capacity(table.primary_key.len());
        for k in &table.primary_key {
            let i = table
                .position(k)
                .ok_or_else(|| Error::internal(format!("the primary key column {k} is not a column of the table")))?;
            positions.push(i);
        }
        if positions.is_empty() {
            return Err(Error::schema("the table has no primary key: changes cannot delete rows by key"));
        }
        let targets: Vec<Target> = positions.iter().map(|&i| Target::of(&table.columns[i])).collect();
        let per_statement = (MAX_PLACEHOLDERS / positions.len()).clamp(1, MAX_DELETE_KEYS);
        let mut deleted = 0;
        for chunk in keys.chunks(per_statement) {
            let mut params = Vec::with_capacity(chunk.len() * positions.len());
            for key in chunk {
                if key.len() != positions.len() {
                    return Err(Error::internal(format!(
                        "a key of {} values for a primary key of {} columns",
                        key.len(),
                        positions.len()
                    )));
                }
                for ((value, target), &i) in key.iter().zip(&targets).zip(&positions) {
                    let cell = values::encode_key(value, target)
                        .map_err(|e| e.in_column(&table.columns[i].name).at_key(key.clone()))?;
                    params.push(cell);
                }
            }
            let sql = delete_sql(table, chunk.len());
            self.conn.exec_drop(sql, params).await.map_err(error::map)?;
            deleted += self.conn.affected_rows();
            if self.conn.get_warnings() > 0 {
                return Err(self.warnings_error().await);
            }
        }
        Ok(deleted)
    }

    /// How `LOAD DATA` takes `table` (read from the catalog once per table), or `None`
    /// when the batch goes through INSERT.
    async fn load_plan(&mut self, table: &TableSchema, rows: usize) -> Result<Option<Arc<LoadFacts>>> {
        if self.load_refused || rows < self.load.min_rows {
            return Ok(None);
        }
        if let Some(facts) = self.load_facts.get(&table.name) {
            return Ok(facts.clone());
        }
        let facts = catalog::load_facts(&mut self.conn, &self.database, &table.name).await?;
        let facts = if facts.replace_unsafe {
            tracing::debug!(table = %table.name, "foreign keys reference the table or it has triggers: writing with INSERT");
            None
        } else {
            Some(Arc::new(facts))
        };
        if facts.as_ref().is_some_and(|f| f.found) {
            self.load_facts.insert(table.name.clone(), facts.clone());
        }
        Ok(facts)
    }

    /// Writes all rows with `LOAD DATA LOCAL INFILE ... REPLACE` (see [`load_sql`]),
    /// one statement per [`LoadSettings::max_bytes`] of file; the caller commits or
    /// rolls back. Each statement's file is built in memory once and served by a one-time handler
    /// on the connection. The server's strict mode turns a bad value into an error
    /// naming the column and the row (mapped back to the row's key); anything it only
    /// warns about (a rounded decimal, say) is refused too, as is a row count other
    /// than the batch's (a field or line boundary would have been misread).
    async fn load_batches(&mut self, table: &TableSchema, rows: &[Row], facts: &LoadFacts) -> Result<()> {
        let ncols = table.columns.len();
        let key_positions: Vec<usize> = table.primary_key.iter().filter_map(|k| table.position(k)).collect();
        let key_of = |row: &Row| -> Vec<Value> { key_positions.iter().map(|&i| row[i].clone()).collect() };
        let targets: Vec<Target> = table
            .columns
            .iter()
            .map(|c| {
                let mut target = Target::of(c);
                if facts.years.contains(&c.name) {
                    target.set_year();
                }
                target
            })
            .collect();
        let sql = load_sql(table, &facts.converted);
        let mut start = 0;
        while start < rows.len() {
            let mut data: Vec<u8> = Vec::with_capacity(64 << 10);
            let mut end = start;
            while end < rows.len() && data.len() < self.load.max_bytes {
                let row = &rows[end];
                if row.len() != ncols {
                    return Err(Error::internal(format!(
                        "a row of {} values for a table of {ncols} columns",
                        row.len()
                    )));
                }
                for (i, (value, target)) in row.iter().zip(&targets).enumerate() {
                    if i > 0 {
                        data.push(b'\t');
                    }
                    values::encode_text(value, target, &mut data)
                        .map_err(|e| e.in_column(&table.columns[i].name).at_key(key_of(row)))?;
                }
                data.push(b'\n');
                end += 1;
            }
            let batch = &rows[start..end];
            let at_row = |e: Error| match error::row_in(e.message()) {
                Some(r) if (1..=batch.len()).contains(&r) && !key_positions.is_empty() => {
                    e.at_key(key_of(&batch[r - 1]))
                }
                _ => e,
            };
            let data = Bytes::from(data);
            let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
                .step_by(LOAD_CHUNK_BYTES)
                .map(|from| Ok(data.slice(from..(from + LOAD_CHUNK_BYTES).min(data.len()))))
                .collect();
            // One-time: consumed by this statement's file request. A statement that
            // fails before asking leaves it set; the next statement replaces it.
            self.conn.set_infile_handler(async move {
                Ok::<mysql_async::InfileData, mysql_async::Error>(futures_util::stream::iter(chunks).boxed())
            });
            match self.conn.query_drop(&sql).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(s)) if LOAD_REFUSED.contains(&s.code) => {
                    self.load_refused = true;
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("MariaDB refused LOAD DATA LOCAL: {} (MariaDB error {})", s.message, s.code),
                    ));
                }
                Err(e) => return Err(at_row(error::map(e))),
            }
            if self.conn.get_warnings() > 0 {
                return Err(at_row(self.warnings_error().await));
            }
            if let Some(records) = records_in(&self.conn.info())
                && records != batch.len() as u64
            {
                return Err(Error::internal(format!(
                    "LOAD DATA read {records} rows from a file of {} rows; the write was rolled back",
                    batch.len()
                )));
            }
            start = end;
        }
        Ok(())
    }

    /// One transaction: all rows through `LOAD DATA` (`facts` given) or INSERT.
    async fn write_transaction(&mut self, table: &TableSchema, rows: &[Row], facts: Option<&LoadFacts>) -> Result<()> {
        self.apply_transaction(table, rows, &[], None, facts).await.map(|_| ())
    }

    /// One transaction: the rows upserted (through `LOAD DATA` when `facts` are given,
    /// else INSERT, guarded by `guard`), then the `deletes` deleted. Returns the rows
    /// deleted.
    async fn apply_transaction(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Vec<Value>],
        guard: Option<&str>,
        facts: Option<&LoadFacts>,
    ) -> Result<u64> {
        self.run("START TRANSACTION").await?;
        let written = async {
            // deletes first: under a case-insensitive key a deleted spelling may
            // match the row being upserted under another one
            let deleted = self.delete_batches(table, deletes).await?;
            if !rows.is_empty() {
                match facts {
                    Some(facts) => self.load_batches(table, rows, facts).await?,
                    None => self.upsert_batches(table, rows, guard).await?,
                }
            }
            Ok(deleted)
        }
        .await;
        match written {
            Ok(deleted) => self.run("COMMIT").await.map(|()| deleted),
            Err(e) => {
                // The first error is the one to report; a failed rollback (lost
                // connection) leaves nothing committed either.
                if let Err(rollback) = self.run("ROLLBACK").await {
                    tracing::debug!(error = %rollback, "rollback after a failed upsert failed");
                }
                Err(e)
            }
        }
    }

    /// The server reported warnings for the last statement: a bad value was changed
    /// rather than refused. Reads them (text protocol: preparing a statement would
    /// clear them) and turns the first into a [`ErrorKind::ValueRange`] error.
    async fn warnings_error(&mut self) -> Error {
        let count = self.conn.get_warnings();
        let rows: Vec<MyRow> = match self.conn.query("SHOW WARNINGS").await {
            Ok(rows) => rows,
            Err(e) => return error::map(e),
        };
        let warnings: Vec<(String, u16, String)> = rows
            .into_iter()
            .map(|r| {
                let cells = r.unwrap();
                let text = |i: usize| cells.get(i).and_then(catalog::text).unwrap_or_default();
                let code = cells.get(1).and_then(catalog::number).unwrap_or(0);
                (text(0), u16::try_from(code).unwrap_or(0), text(2))
            })
            .collect();
        // a Warning or Error before a Note
        let first = warnings.iter().find(|w| w.0 != "Note").or_else(|| warnings.first());
        let Some((level, code, message)) = first else {
            return Error::new(
                ErrorKind::ValueRange,
                format!("MariaDB reported {count} warning(s) for the write; it was rolled back"),
            );
        };
        let shown = error::server(*code, message);
        let more = if count > 1 { format!(" (and {} more)", count - 1) } else { String::new() };
        let mut e = Error::new(
            ErrorKind::ValueRange,
            format!(
                "MariaDB would have changed a value: {} {}{more}; the write was rolled back",
                level.to_ascii_lowercase(),
                shown.message()
            ),
        );
        if let Some(column) = &shown.location().column {
            e = e.in_column(column);
        }
        e
    }
}

/// `INSERT INTO t (cols) VALUES (?, ...) x rows ON DUPLICATE KEY UPDATE ...`: every
/// non-key column takes the new value; a table of key columns only updates a key
/// column to itself (never `INSERT IGNORE`, which turns errors into warnings).
///
/// With a `guard` (version) column `v`, each column becomes `c = IF(<guard>, VALUES(c), c)`
/// where the guard is `v IS NULL OR v <= VALUES(v)` (the existing row's version is
/// unknown or not newer), and `v` itself is assigned last: MariaDB evaluates the
/// assignments left to right, each seeing the columns already assigned, so an earlier
/// `v = VALUES(v)` would make the guard of every later column compare the new
/// version with itself. A row whose new version is NULL replaces only a row whose
/// version is NULL.
fn upsert_sql(table: &TableSchema, rows: usize, guard: Option<&str>) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(","));
    let mut sql = String::with_capacity(64 + cols.len() * 16 + rows * (one.len() + 1));
    sql.push_str("INSERT INTO ");
    sql.push_str(&quote(&table.name));
    sql.push_str(" (");
    sql.push_str(&cols.join(", "));
    sql.push_str(") VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    let holds = guard.map(|v| format!("{v} IS NULL OR {v} <= VALUES({v})", v = quote(v)));
    let assign = |name: &str| match &holds {
        Some(holds) => format!("{q} = IF({holds}, VALUES({q}), {q})", q = quote(name)),
        None => format!("{q} = VALUES({q})", q = quote(name)),
    };
    let mut updates: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !table.primary_key.contains(&c.name) && Some(c.name.as_str()) != guard)
        .map(|c| assign(&c.name))
        .collect();
    if let Some(v) = guard
        && !table.primary_key.iter().any(|k| k == v)
    {
        updates.push(assign(v));
    }
    sql.push_str(" ON DUPLICATE KEY UPDATE ");
    if updates.is_empty() {
        let k = quote(table.primary_key.first().unwrap_or(&table.columns[0].name));
        sql.push_str(&format!("{k} = {k}"));
    } else {
        sql.push_str(&updates.join(", "));
    }
    sql
}

/// `DELETE FROM t WHERE k IN (?, ...)`, or `WHERE (a, b) IN ((?, ?), ...)` for a
/// composite key (MariaDB reads both through the primary key as ranges).
fn delete_sql(table: &TableSchema, keys: usize) -> String {
    let cols: Vec<String> = table.primary_key.iter().map(|k| quote(k)).collect();
    let (lhs, one) = if cols.len() == 1 {
        (cols[0].clone(), "?".to_string())
    } else {
        (format!("({})", cols.join(", ")), format!("({})", vec!["?"; cols.len()].join(",")))
    };
    format!("DELETE FROM {} WHERE {lhs} IN ({})", quote(&table.name), vec![one; keys].join(","))
}

/// `LOAD DATA LOCAL INFILE '...' REPLACE INTO TABLE t CHARACTER SET binary FIELDS
/// TERMINATED BY '\t' ENCLOSED BY '' ESCAPED BY '\\' LINES STARTING BY '' TERMINATED BY
/// '\n' (cols) [SET col = CONVERT(@var USING utf8mb4), ...]`, for a file written by
/// [`values::encode_text`].
///
/// `REPLACE` makes a rewrite of existing keys idempotent (the newest values win), but
/// unlike `ON DUPLICATE KEY UPDATE` it deletes the old row and inserts the new one: a
/// row conflicting on a secondary unique key is deleted too, foreign keys referencing
/// the table would cascade, delete triggers would fire. That is fine for rows pontoon
/// owns during a copy; tables that foreign keys reference or that have triggers are
/// written with INSERT instead (see [`catalog::load_facts`]).
///
/// The file is read as `binary`: every byte reaches the column as it is (bytes
/// exactly, UTF-8 text into utf8mb4 columns, checked by the server). The columns in
/// `converted` (uuid, text in another character set) are read into a variable and
/// converted from utf8mb4 by the server, as a parameter of the INSERT path would be.
fn load_sql(table: &TableSchema, converted: &[String]) -> String {
    let mut fields = Vec::with_capacity(table.columns.len());
    let mut sets = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        if converted.contains(&c.name) {
            let var = format!("@pontoon_{i}");
            sets.push(format!("{} = CONVERT({var} USING utf8mb4)", quote(&c.name)));
            fields.push(var);
        } else {
            fields.push(quote(&c.name));
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE '{LOAD_FILE}' REPLACE INTO TABLE {} CHARACTER SET binary \
         FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' \
         LINES STARTING BY '' TERMINATED BY '\\n' ({})",
        quote(&table.name),
        fields.join(", ")
    );
    if !sets.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

/// The `Records: N` of a `LOAD DATA` statement's result (`Records: 3  Deleted: 0
/// Skipped: 0  Warnings: 0`).
fn records_in(info: &str) -> Option<u64> {
    let rest = &info[info.find("Records:")? + "Records:".len()..];
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The most bytes a column of this native type takes in MariaDB's row-size count
/// (BLOB and TEXT columns count 12).
fn row_bytes(native: &str) -> u64 {
    let n = native.to_ascii_lowercase();
    let arg =
        || -> u64 { n.split(['(', ',']).nth(1).and_then(|a| a.trim_end_matches(')').trim().parse().ok()).unwrap_or(0) };
    let varlen = |bytes: u64| bytes + if bytes > 255 { 2 } else { 1 };
    if n.starts_with("varchar") {
        varlen(arg() * 4)
    } else if n.starts_with("varbinary") {
        varlen(arg())
    } else if n.starts_with("decimal") {
        arg() / 2 + 2
    } else if n.starts_with("uuid") {
        16
    } else {
        // integers, floats, dates and times: at most 8; BLOB/TEXT pointers: 12
        12
    }
}

/// The native types of a new table's columns: `Column::native` when set, else the
/// documented mapping, with bounded
/// text and bytes outside the key turned into `longtext`/`longblob`, largest first,
/// while the row would pass MariaDB's 65,535-byte limit (the table could not be
/// created otherwise).
fn create_types(schema: &TableSchema) -> Vec<String> {
    let in_key = |c: &Column| schema.primary_key.contains(&c.name);
    // a same-engine copy keeps the source's exact types (`Column::native`)
    let kept = |c: &Column| !c.native.is_empty();
    let mut natives: Vec<String> =
        schema.columns.iter().map(|c| if kept(c) { c.native.clone() } else { types::native_type(&c.ty) }).collect();
    let key_columns: Vec<usize> = schema.primary_key.iter().filter_map(|k| schema.position(k)).collect();
    let key_types: Vec<&ColumnType> = key_columns.iter().map(|&i| &schema.columns[i].ty).collect();
    for (&i, native) in key_columns.iter().zip(types::native_key_types(&key_types)) {
        if !kept(&schema.columns[i]) {
            natives[i] = native;
        }
    }
    let null_bytes = schema.columns.len() as u64 / 8 + 1;
    loop {
        let total: u64 = null_bytes + natives.iter().map(|n| row_bytes(n)).sum::<u64>();
        if total <= MAX_ROW_BYTES {
            return natives;
        }
        let widest = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !in_key(c) && (natives[*i].starts_with("varchar") || natives[*i].starts_with("varbinary")))
            // the widest; the first of equals
            .max_by(|(i, _), (j, _)| row_bytes(&natives[*i]).cmp(&row_bytes(&natives[*j])).then(j.cmp(i)));
        let Some((i, c)) = widest else {
            return natives;
        };
        natives[i] = match c.ty {
            ColumnType::Bytes { .. } => "longblob".to_string(),
            _ => "longtext".to_string(),
        };
    }
}

/// `CREATE TABLE` for a portable schema: utf8mb4 with a binary, no-pad collation so
/// that keys differing in case or trailing spaces stay distinct.
fn create_table_sql(schema: &TableSchema) -> String {
    let natives = create_types(schema);
    let mut defs: Vec<String> = schema
        .columns
        .iter()
        .zip(&natives)
        .map(|(c, native)| {
            let not_null = if !c.nullable || schema.primary_key.contains(&c.name) { " NOT NULL" } else { "" };
            format!("{} {native}{not_null}", quote(&c.name))
        })
        .collect();
    if !schema.primary_key.is_empty() {
        let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    format!(
        "CREATE TABLE {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin",
        quote(&schema.name),
        defs.join(", ")
    )
}

#[async_trait]
impl Writer for MysqlWriter {
    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        catalog::describe(&mut self.conn, &self.database, table).await
    }

    async fn create_table(&mut self, schema: &TableSchema) -> Result<()> {
        if schema.columns.is_empty() {
            return Err(Error::schema("a table needs at least one column").in_table(&schema.name));
        }
        let sql = create_table_sql(schema);
        self.load_facts.remove(&schema.name);
        self.run(&sql).await.map_err(|e| e.in_table(&schema.name))
    }

    async fn upsert(&mut self, table: &TableSchema, rows: &[Row]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        if table.columns.is_empty() {
            return Err(Error::internal("upsert into a table without columns").in_table(&table.name));
        }
        let in_table = |e: Error| e.in_table(&table.name);
        let facts = self.load_plan(table, rows.len()).await.map_err(in_table)?;
        match self.write_transaction(table, rows, facts.as_deref()).await {
            Err(e) if facts.is_some() && self.load_refused => {
                // the refused statement's transaction was rolled back: write it again
                tracing::info!(error = %e, "MariaDB refuses LOAD DATA LOCAL; writing with INSERT");
                self.write_transaction(table, rows, None).await.map_err(in_table)?;
            }
            written => written.map_err(in_table)?,
        }
        Ok(rows.len() as u64)
    }

    async fn apply(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Vec<Value>],
        version_column: Option<&str>,
    ) -> Result<u64> {
        let in_table = |e: Error| e.in_table(&table.name);
        if rows.is_empty() && deletes.is_empty() {
            return Ok(0);
        }
        if table.columns.is_empty() {
            return Err(in_table(Error::internal("apply to a table without columns")));
        }
        if let Some(v) = version_column
            && table.position(v).is_none()
        {
            return Err(in_table(
                Error::schema(format!("the version column {v} is not a column of the table")).in_column(v),
            ));
        }
        // `LOAD DATA ... REPLACE` cannot keep a newer row: guarded writes take INSERT.
        let facts = match version_column {
            None => self.load_plan(table, rows.len()).await.map_err(in_table)?,
            Some(_) => None,
        };
        let deleted = match self.apply_transaction(table, rows, deletes, version_column, facts.as_deref()).await {
            Err(e) if facts.is_some() && self.load_refused => {
                tracing::info!(error = %e, "MariaDB refuses LOAD DATA LOCAL; writing with INSERT");
                self.apply_transaction(table, rows, deletes, version_column, None).await.map_err(in_table)?
            }
            written => written.map_err(in_table)?,
        };
        Ok(rows.len() as u64 + deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, ty: ColumnType) -> Column {
        Column { name: name.into(), native: String::new(), ty, nullable: true, has_default: false }
    }

    #[test]
    fn upsert_statement() {
        let t = TableSchema {
            name: "t".into(),
            columns: vec![column("id", ColumnType::I64), column("v", ColumnType::TEXT)],
            primary_key: vec!["id".into()],
        };
        assert_eq!(
            upsert_sql(&t, 2, None),
            "INSERT INTO `t` (`id`, `v`) VALUES (?,?),(?,?) ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)"
        );
        let k = TableSchema { columns: vec![column("id", ColumnType::I64)], ..t.clone() };
        assert!(upsert_sql(&k, 1, None).ends_with("ON DUPLICATE KEY UPDATE `id` = `id`"));
        // the version column is assigned last, whatever its place in the table
        let g = TableSchema {
            columns: vec![column("ver", ColumnType::I64), column("id", ColumnType::I64), column("v", ColumnType::TEXT)],
            ..t
        };
        assert_eq!(
            upsert_sql(&g, 1, Some("ver")),
            "INSERT INTO `t` (`ver`, `id`, `v`) VALUES (?,?,?) ON DUPLICATE KEY UPDATE \
             `v` = IF(`ver` IS NULL OR `ver` <= VALUES(`ver`), VALUES(`v`), `v`), \
             `ver` = IF(`ver` IS NULL OR `ver` <= VALUES(`ver`), VALUES(`ver`), `ver`)"
        );
    }

    #[test]
    fn delete_statement() {
        let t = TableSchema {
            name: "t".into(),
            columns: vec![column("a", ColumnType::I64), column("b", ColumnType::TEXT)],
            primary_key: vec!["a".into()],
        };
        assert_eq!(delete_sql(&t, 3), "DELETE FROM `t` WHERE `a` IN (?,?,?)");
        let c = TableSchema { primary_key: vec!["b".into(), "a".into()], ..t };
        assert_eq!(delete_sql(&c, 2), "DELETE FROM `t` WHERE (`b`, `a`) IN ((?,?),(?,?))");
    }

    #[test]
    fn load_statement() {
        let t = TableSchema {
            name: "t`x".into(),
            columns: vec![column("id", ColumnType::I64), column("g", ColumnType::Uuid), column("v", ColumnType::TEXT)],
            primary_key: vec!["id".into()],
        };
        assert_eq!(
            load_sql(&t, &[]),
            "LOAD DATA LOCAL INFILE 'pontoon-batch' REPLACE INTO TABLE `t``x` CHARACTER SET binary \
             FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' \
             LINES STARTING BY '' TERMINATED BY '\\n' (`id`, `g`, `v`)"
        );
        assert!(
            load_sql(&t, &["g".to_string()])
                .ends_with("(`id`, @pontoon_1, `v`) SET `g` = CONVERT(@pontoon_1 USING utf8mb4)")
        );
        assert_eq!(records_in("Records: 3  Deleted: 0  Skipped: 0  Warnings: 0"), Some(3));
        assert_eq!(records_in("Records: 12000  Deleted: 5  Skipped: 0  Warnings: 1"), Some(12_000));
        assert_eq!(records_in(""), None);
    }

    #[test]
    fn wide_rows_fall_back_to_longtext() {
        let t = TableSchema {
            name: "t".into(),
            columns: vec![
                column("id", ColumnType::TEXT),
                column("a", ColumnType::Text { max_chars: Some(10_000) }),
                column("b", ColumnType::Text { max_chars: Some(9_000) }),
                column("c", ColumnType::Text { max_chars: Some(20) }),
            ],
            primary_key: vec!["id".into()],
        };
        assert_eq!(create_types(&t), vec!["varchar(768)", "longtext", "varchar(9000)", "varchar(20)"]);
        let sql = create_table_sql(&t);
        assert!(sql.starts_with("CREATE TABLE `t` (`id` varchar(768) NOT NULL, `a` longtext,"));
        assert!(sql.ends_with("PRIMARY KEY (`id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"));
    }
}
