//! The target side: tables created from portable types, and idempotent batch upserts
//! (`INSERT ... ON DUPLICATE KEY UPDATE`, prepared, binary protocol) in one transaction
//! that fails on any warning the server reports.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow, Value as My};
use pontoon_core::{Column, ColumnType, Error, ErrorKind, Result, Row, TableSchema, Value, Writer};

use crate::sql::quote;
use crate::{catalog, error, types, values};

/// At most this many placeholders in one statement (the protocol's limit).
const MAX_PLACEHOLDERS: usize = 65_535;
/// At most this many rows in one statement.
const MAX_BATCH_ROWS: usize = 2_000;
/// A batch is cut once its parameters pass this size, so that a statement stays well
/// below the server's packet limit (16 MiB by default).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// MariaDB's limit on the summed maximum size of a row's non-BLOB columns.
const MAX_ROW_BYTES: u64 = 65_535;

/// A connection writing one MariaDB database. See [`pontoon_core::Writer`].
pub struct MysqlWriter {
    conn: Conn,
    database: String,
}

impl std::fmt::Debug for MysqlWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlWriter").field("database", &self.database).field("connection_id", &self.conn.id()).finish()
    }
}

impl MysqlWriter {
    pub(crate) fn new(conn: Conn, database: String) -> MysqlWriter {
        MysqlWriter { conn, database }
    }

    async fn run(&mut self, sql: &str) -> Result<()> {
        self.conn.query_drop(sql).await.map_err(error::map)
    }

    /// Writes all batches; the caller commits or rolls back.
    async fn upsert_batches(&mut self, table: &TableSchema, rows: &[Row]) -> Result<()> {
        let ncols = table.columns.len();
        let max_rows = (MAX_PLACEHOLDERS / ncols).clamp(1, MAX_BATCH_ROWS);
        let key_positions: Vec<usize> = table.primary_key.iter().filter_map(|k| table.position(k)).collect();
        let key_of = |row: &Row| -> Vec<Value> { key_positions.iter().map(|&i| row[i].clone()).collect() };
        let full_sql = upsert_sql(table, max_rows);
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
                for (value, column) in row.iter().zip(&table.columns) {
                    let cell =
                        values::encode(value, column).map_err(|e| e.in_column(&column.name).at_key(key_of(row)))?;
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
                partial_sql = upsert_sql(table, n);
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
fn upsert_sql(table: &TableSchema, rows: usize) -> String {
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
    let updates: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !table.primary_key.contains(&c.name))
        .map(|c| format!("{q} = VALUES({q})", q = quote(&c.name)))
        .collect();
    sql.push_str(" ON DUPLICATE KEY UPDATE ");
    if updates.is_empty() {
        let k = quote(table.primary_key.first().unwrap_or(&table.columns[0].name));
        sql.push_str(&format!("{k} = {k}"));
    } else {
        sql.push_str(&updates.join(", "));
    }
    sql
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

/// The native types of a new table's columns: the documented mapping, with bounded
/// text and bytes outside the key turned into `longtext`/`longblob`, largest first,
/// while the row would pass MariaDB's 65,535-byte limit (the table could not be
/// created otherwise).
fn create_types(schema: &TableSchema) -> Vec<String> {
    let in_key = |c: &Column| schema.primary_key.contains(&c.name);
    let mut natives: Vec<String> = schema.columns.iter().map(|c| types::native_type(&c.ty)).collect();
    let key_columns: Vec<usize> = schema.primary_key.iter().filter_map(|k| schema.position(k)).collect();
    let key_types: Vec<&ColumnType> = key_columns.iter().map(|&i| &schema.columns[i].ty).collect();
    for (&i, native) in key_columns.iter().zip(types::native_key_types(&key_types)) {
        natives[i] = native;
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
        self.run(&sql).await.map_err(|e| e.in_table(&schema.name))
    }

    async fn upsert(&mut self, table: &TableSchema, rows: &[Row]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        if table.columns.is_empty() {
            return Err(Error::internal("upsert into a table without columns").in_table(&table.name));
        }
        self.run("START TRANSACTION").await.map_err(|e| e.in_table(&table.name))?;
        match self.upsert_batches(table, rows).await {
            Ok(()) => {
                self.run("COMMIT").await.map_err(|e| e.in_table(&table.name))?;
                Ok(rows.len() as u64)
            }
            Err(e) => {
                // The first error is the one to report; a failed rollback (lost
                // connection) leaves nothing committed either.
                if let Err(rollback) = self.run("ROLLBACK").await {
                    tracing::debug!(error = %rollback, "rollback after a failed upsert failed");
                }
                Err(e.in_table(&table.name))
            }
        }
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
            upsert_sql(&t, 2),
            "INSERT INTO `t` (`id`, `v`) VALUES (?,?),(?,?) ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)"
        );
        let k = TableSchema { columns: vec![column("id", ColumnType::I64)], ..t };
        assert!(upsert_sql(&k, 1).ends_with("ON DUPLICATE KEY UPDATE `id` = `id`"));
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
