//! The source side: catalog, sizes, key boundaries and key-range scans.
//!
//! Every query is one `SELECT`, so each scan reads one consistent snapshot. Key values
//! in range predicates and partition filters are bound as parameters in the storage
//! form the writer uses ([`crate::storage::encode`]), which compares exactly like a
//! literal of that form would (bound parameters, like literals, have no affinity) and
//! also carries text with NUL characters, which SQL text cannot. The SQL of a scan is
//! therefore the same for every chunk of a table and is prepared once.
//!
//! Keys are compared as SQLite stores them: integers and reals numerically, text and
//! blobs bytewise (or by the column's collation). A source whose date, time or
//! timestamp keys are stored in another text form than pontoon's (say without the
//! fraction digits) is still read completely, since consecutive chunks share their
//! bounds, but chunk sizes may vary.
//!
//! [`Reader::fetch_keys`] (the sync's re-read of changed rows) selects the scan's items
//! with `key IN (...)` (a row value `(a, b) IN (VALUES (...), ...)` for a composite
//! key, which SQLite answers by index lookups), keys bound in the same storage form.

use std::cell::RefCell;
use std::collections::HashSet;

use async_trait::async_trait;
use pontoon_core::scan::key_range_sql;
use pontoon_core::{
    ColumnType, Error, ErrorKind, KeyRange, Reader, Result, Row, ScanSpec, SelectExpr, TableSchema, Value,
};
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::catalog;
use crate::conn::Handle;
use crate::error::db_error;
use crate::storage::{decode, encode};
use crate::types::quote;

/// Reads an SQLite database through a read-only connection.
#[derive(Debug)]
pub struct SqliteReader {
    conn: Handle,
}

impl SqliteReader {
    pub(crate) fn new(conn: Handle) -> SqliteReader {
        SqliteReader { conn }
    }
}

/// Keys per `fetch_keys` statement at most (fewer when the key has many columns, to
/// stay below SQLite's 32,766 bound parameters).
const KEYS_PER_FETCH: usize = 1024;

/// Bound parameters per statement pontoon allows itself (SQLite's limit is 32,766).
const MAX_PARAMS: usize = 30_000;

/// An SQL statement with its positional parameters (`?1`, `?2`, ...).
struct Query {
    sql: String,
    params: Vec<Value>,
}

/// The `WHERE` clause of a scan over `range` (may be empty), adding its parameters.
fn where_clause(scan: &ScanSpec, range: &KeyRange, params: &mut Vec<Value>) -> String {
    let mut conds = Vec::new();
    if let Some(filter) = &scan.filter {
        conds.push(format!("({filter})"));
    }
    if let Some(p) = &scan.partition {
        if p.value.is_null() {
            conds.push(format!("{} IS NULL", quote(&p.column)));
        } else {
            params.push(p.value.clone());
            conds.push(format!("{} = ?{}", quote(&p.column), params.len()));
        }
    }
    let bound = RefCell::new(std::mem::take(params));
    let range_sql = key_range_sql(&scan.key, range, &|c| quote(c), &|v| {
        let mut b = bound.borrow_mut();
        b.push(v.clone());
        format!("?{}", b.len())
    });
    *params = bound.into_inner();
    if let Some(r) = range_sql {
        conds.push(r);
    }
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
}

fn order_by(key: &[String]) -> String {
    let cols: Vec<String> = key.iter().map(|k| quote(k)).collect();
    format!(" ORDER BY {}", cols.join(", "))
}

/// Runs `query`, decoding each row's cells by `types` (`names` label errors).
fn fetch(conn: &Connection, query: &Query, types: &[ColumnType], names: &[String]) -> Result<Vec<Row>> {
    let bound = query.params.iter().map(encode).collect::<Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(&query.sql).map_err(db_error)?;
    let mut rows = stmt.query(params_from_iter(&bound)).map_err(db_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        let mut values = Vec::with_capacity(types.len());
        for (i, (ty, name)) in types.iter().zip(names).enumerate() {
            let cell = row.get_ref(i).map_err(db_error)?;
            values.push(decode(cell, ty).map_err(|e| e.in_column(name.clone()))?);
        }
        out.push(values);
    }
    Ok(out)
}

/// How an item appears in SQL, and how errors name it: a column by its name, an
/// expression by its text.
fn item_sql(expr: &SelectExpr) -> (String, String) {
    match expr {
        SelectExpr::Column(c) => (quote(c), c.clone()),
        SelectExpr::Sql(e) => (format!("({e})"), e.clone()),
    }
}

/// The statements of a `fetch_keys` call: one per batch of keys. A batch is padded
/// with NULL keys (which match no row) to a power of two, so a table's fetches use a
/// handful of statement shapes that stay in the prepared-statement cache.
fn fetch_keys_queries(scan: &ScanSpec, keys: &[Vec<Value>]) -> Vec<Query> {
    let width = scan.key.len().max(1);
    let mut per_batch = KEYS_PER_FETCH;
    while per_batch > 1 && per_batch * width + 1 > MAX_PARAMS {
        per_batch /= 2;
    }
    let (exprs, _): (Vec<String>, Vec<String>) = scan.select.iter().map(|i| item_sql(&i.expr)).unzip();
    let cols: Vec<String> = scan.key.iter().map(|k| quote(k)).collect();
    keys.chunks(per_batch)
        .map(|batch| {
            let mut params = Vec::new();
            let mut sql = format!(
                "SELECT {} FROM {}",
                if exprs.is_empty() { "NULL".to_string() } else { exprs.join(", ") },
                quote(&scan.table)
            );
            let filter = where_clause(scan, &KeyRange::ALL, &mut params);
            sql.push_str(&filter);
            sql.push_str(if filter.is_empty() { " WHERE " } else { " AND " });
            let padded = batch.len().next_power_of_two();
            let mut tuples = Vec::with_capacity(padded);
            for i in 0..padded {
                let mut slots = Vec::with_capacity(width);
                for j in 0..scan.key.len() {
                    params.push(batch.get(i).map_or(Value::Null, |k| k[j].clone()));
                    slots.push(format!("?{}", params.len()));
                }
                tuples.push(slots.join(", "));
            }
            if cols.len() == 1 {
                sql.push_str(&format!("{} IN ({})", cols[0], tuples.join(", ")));
            } else {
                sql.push_str(&format!("({}) IN (VALUES ({}))", cols.join(", "), tuples.join("), (")));
            }
            Query { sql, params }
        })
        .collect()
}

#[async_trait]
impl Reader for SqliteReader {
    async fn list_tables(&mut self) -> Result<Vec<String>> {
        self.conn.run(|c| catalog::list_tables(c)).await
    }

    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        let table = table.to_string();
        self.conn.run(move |c| catalog::describe(c, &table)).await
    }

    /// SQLite expressions have no declared type: each is typed by the storage class
    /// of its first non-NULL value (INTEGER -> int64, REAL -> float64, BLOB -> bytes,
    /// TEXT or no non-NULL row -> text).
    async fn describe_exprs(&mut self, table: &str, exprs: &[String]) -> Result<Vec<ColumnType>> {
        let table = table.to_string();
        let exprs = exprs.to_vec();
        self.conn
            .run(move |c| {
                exprs
                    .iter()
                    .map(|e| {
                        let sql =
                            format!("SELECT typeof(({e})) FROM {} WHERE ({e}) IS NOT NULL LIMIT 1", quote(&table));
                        let class: Option<String> = c
                            .query_row(&sql, [], |row| row.get(0))
                            .optional()
                            .map_err(|err| db_error(err).in_table(table.clone()))?;
                        Ok(match class.as_deref() {
                            Some("integer") => ColumnType::I64,
                            Some("real") => ColumnType::Float64,
                            Some("blob") => ColumnType::Bytes { max_bytes: None },
                            _ => ColumnType::TEXT,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// An exact `count(*)`: SQLite keeps no row count, but counting walks the
    /// smallest index and is cheap next to copying the table.
    async fn estimate_rows(&mut self, table: &str) -> Result<u64> {
        let table = table.to_string();
        self.conn
            .run(move |c| {
                let n: i64 = c
                    .query_row(&format!("SELECT count(*) FROM {}", quote(&table)), [], |r| r.get(0))
                    .map_err(|e| db_error(e).in_table(table.clone()))?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn key_after(&mut self, scan: &ScanSpec, after: Option<&[Value]>, step: u64) -> Result<Option<Vec<Value>>> {
        if scan.key.is_empty() || scan.key.len() != scan.key_types.len() {
            return Err(Error::internal(format!(
                "scan of {} has {} key columns and {} key types",
                scan.table,
                scan.key.len(),
                scan.key_types.len()
            )));
        }
        let range = KeyRange { after: after.map(<[Value]>::to_vec), upto: None };
        let mut params = Vec::new();
        let cols: Vec<String> = scan.key.iter().map(|k| quote(k)).collect();
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), quote(&scan.table));
        sql.push_str(&where_clause(scan, &range, &mut params));
        sql.push_str(&order_by(&scan.key));
        // The `step`-th row after `after` is at offset step - 1 (a step of 0 is taken
        // as 1: the next row).
        params.push(Value::Int(i64::try_from(step.saturating_sub(1)).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" LIMIT 1 OFFSET ?{}", params.len()));
        let query = Query { sql, params };
        let types = scan.key_types.clone();
        let names = scan.key.clone();
        let table = scan.table.clone();
        self.conn
            .run(move |c| {
                let mut rows = fetch(c, &query, &types, &names).map_err(|e| e.in_table(table))?;
                Ok(rows.pop())
            })
            .await
    }

    async fn partitions(
        &mut self,
        table: &str,
        column: &str,
        ty: &ColumnType,
        filter: Option<&str>,
    ) -> Result<Vec<(Value, u64)>> {
        let col = quote(column);
        let mut sql = format!("SELECT {col}, count(*) FROM {}", quote(table));
        if let Some(f) = filter {
            sql.push_str(&format!(" WHERE ({f})"));
        }
        sql.push_str(&format!(" GROUP BY {col} ORDER BY 2, 1"));
        let (table, column, ty) = (table.to_string(), column.to_string(), ty.clone());
        self.conn
            .run(move |c| {
                let run = || -> Result<Vec<(Value, u64)>> {
                    let mut stmt = c.prepare_cached(&sql).map_err(db_error)?;
                    let mut rows = stmt.query([]).map_err(db_error)?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next().map_err(db_error)? {
                        let v =
                            decode(row.get_ref(0).map_err(db_error)?, &ty).map_err(|e| e.in_column(column.clone()))?;
                        let n: i64 = row.get(1).map_err(db_error)?;
                        out.push((v, n.max(0) as u64));
                    }
                    Ok(out)
                };
                run().map_err(|e| e.in_table(table))
            })
            .await
    }

    async fn scan(&mut self, scan: &ScanSpec, range: &KeyRange) -> Result<Vec<Row>> {
        if scan.key.is_empty() {
            return Err(
                Error::new(ErrorKind::Schema, "a scan needs a key to order its rows by").in_table(scan.table.clone())
            );
        }
        let (exprs, names): (Vec<String>, Vec<String>) = scan.select.iter().map(|i| item_sql(&i.expr)).unzip();
        let mut params = Vec::new();
        let mut sql = format!(
            "SELECT {} FROM {}",
            if exprs.is_empty() { "NULL".to_string() } else { exprs.join(", ") },
            quote(&scan.table)
        );
        sql.push_str(&where_clause(scan, range, &mut params));
        sql.push_str(&order_by(&scan.key));
        let query = Query { sql, params };
        let types: Vec<ColumnType> = scan.select.iter().map(|i| i.ty.clone()).collect();
        let table = scan.table.clone();
        self.conn.run(move |c| fetch(c, &query, &types, &names).map_err(|e| e.in_table(table))).await
    }

    /// One `SELECT` per 1,024 distinct keys (fewer for wide keys), all in one read
    /// transaction, so that every row comes from the same snapshot.
    async fn fetch_keys(&mut self, scan: &ScanSpec, keys: &[Vec<Value>]) -> Result<Vec<Row>> {
        if scan.key.is_empty() {
            return Err(Error::new(ErrorKind::Schema, "fetching rows by key needs a key").in_table(scan.table.clone()));
        }
        if let Some(bad) = keys.iter().find(|k| k.len() != scan.key.len()) {
            return Err(Error::internal(format!(
                "a key of {} values for a key of {} columns",
                bad.len(),
                scan.key.len()
            ))
            .in_table(scan.table.clone()));
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // A key asked twice would come back twice if its copies fell in two batches.
        let mut seen = HashSet::with_capacity(keys.len());
        let keys: Vec<Vec<Value>> = keys.iter().filter(|k| seen.insert(format!("{k:?}"))).cloned().collect();
        let queries = fetch_keys_queries(scan, &keys);
        let (_, names): (Vec<String>, Vec<String>) = scan.select.iter().map(|i| item_sql(&i.expr)).unzip();
        let types: Vec<ColumnType> = scan.select.iter().map(|i| i.ty.clone()).collect();
        let table = scan.table.clone();
        self.conn
            .run(move |c| {
                let run = |c: &mut Connection| -> Result<Vec<Row>> {
                    let tx = c.transaction().map_err(db_error)?;
                    let mut rows = Vec::new();
                    for query in &queries {
                        rows.extend(fetch(&tx, query, &types, &names)?);
                    }
                    tx.commit().map_err(db_error)?;
                    Ok(rows)
                };
                run(c).map_err(|e| e.in_table(table))
            })
            .await
    }
}
