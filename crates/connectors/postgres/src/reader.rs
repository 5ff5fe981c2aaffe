//! The source side: catalog, sizes, key boundaries and key-range scans.

use std::pin::pin;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use pontoon_core::{
    ColumnType, Digest, Engine, Error, ErrorKind, KeyRange, RawRows, Reader, Result, Row, ScanSpec, SelectExpr,
    TableSchema, Value,
};
use tokio_postgres::Row as PgRow;
use tokio_postgres::types::Type;

use crate::catalog;
use crate::copy_stream;
use crate::decode::Cell;
use crate::errors::pg_error;
use crate::session::Session;
use crate::sql::{column_list, key_in_sql, quote_ident, scan_conditions, select_expr, where_clause};

/// Keys per statement of [`Reader::fetch_keys`]: the `IN` list stays small enough to
/// plan quickly and the statement well below any size limit.
const FETCH_KEYS_BATCH: usize = 1000;
/// Statements of one [`Reader::fetch_keys`] sent ahead of their answers (the
/// connection pipelines them): the server answers one after another without
/// waiting for pontoon in between.
const FETCH_KEYS_PIPELINE: usize = 8;

/// Reads a PostgreSQL source on its own connection (see [`Reader`] for the
/// contract). Cells are decoded from the binary result format by wire type; a raw
/// scan ([`Reader::scan_raw`]) hands on the binary `COPY` stream as the server sent it.
#[derive(Debug)]
pub struct PgReader {
    session: Session,
}

impl PgReader {
    pub(crate) fn new(session: Session) -> PgReader {
        PgReader { session }
    }

    /// Runs a read-only query without preparing it first (one round trip) and
    /// decodes every row; `names` names the output columns for errors.
    async fn fetch(&self, sql: &str, what: &str, names: &[&str]) -> Result<Vec<Row>> {
        let stream = self
            .session
            .client
            .query_typed_raw(sql, std::iter::empty::<(&str, Type)>())
            .await
            .map_err(|e| pg_error(e, what))?;
        let mut stream = pin!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(|e| pg_error(e, what))? {
            rows.push(decode_row(&row, names)?);
        }
        Ok(rows)
    }
}

fn decode_row(row: &PgRow, names: &[&str]) -> Result<Row> {
    (0..row.len())
        .map(|i| {
            let name = names.get(i).copied().unwrap_or("?");
            match row.try_get::<_, Cell>(i) {
                Ok(Cell(Ok(v))) => Ok(v),
                Ok(Cell(Err(why))) => {
                    Err(Error::new(ErrorKind::Unsupported, format!("cannot decode a value: {why}")).in_column(name))
                }
                Err(e) => Err(pg_error(e, "decoding a row").in_column(name)),
            }
        })
        .collect()
}

/// The output columns of a scan, as SQL.
fn select_list(scan: &ScanSpec) -> String {
    scan.select.iter().map(|i| select_expr(&i.expr)).collect::<Vec<_>>().join(", ")
}

fn item_name(expr: &SelectExpr) -> &str {
    match expr {
        SelectExpr::Column(name) | SelectExpr::Sql(name) => name,
    }
}

#[async_trait]
impl Reader for PgReader {
    async fn list_tables(&mut self) -> Result<Vec<String>> {
        catalog::list_tables(&self.session.client).await
    }

    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        catalog::describe(&self.session.client, table).await
    }

    async fn describe_exprs(&mut self, table: &str, exprs: &[String]) -> Result<Vec<ColumnType>> {
        if exprs.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<String> = exprs.iter().map(|e| format!("({e})")).collect();
        let sql = format!("SELECT {} FROM {} LIMIT 0", items.join(", "), quote_ident(table));
        let statement = self
            .session
            .client
            .prepare(&sql)
            .await
            .map_err(|e| pg_error(e, "describing expressions").in_table(table))?;
        statement
            .columns()
            .iter()
            .zip(exprs)
            .map(|(c, expr)| {
                // the type modifier survives for plain column references
                // (`(price)` stays numeric(10,2)); computed values have none
                catalog::column_type(c.type_(), c.type_modifier()).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unsupported,
                        format!("the expression has type {}, which pontoon does not support", c.type_()),
                    )
                    .in_column(expr.clone())
                    .in_table(table)
                })
            })
            .collect()
    }

    async fn estimate_rows(&mut self, table: &str) -> Result<u64> {
        let row = self
            .session
            .client
            .query_opt(
                "SELECT c.reltuples::float8 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relname = $1 \
                 AND c.relkind IN ('r', 'p')",
                &[&table],
            )
            .await
            .map_err(|e| pg_error(e, "estimating rows").in_table(table))?;
        let Some(row) = row else {
            return Err(Error::schema(format!("table {table} does not exist")).in_table(table));
        };
        let estimate: f64 = row.get(0);
        if estimate >= 0.0 {
            return Ok(estimate as u64);
        }
        // never vacuumed or analyzed: count
        let row = self
            .session
            .client
            .query_one(&format!("SELECT count(*) FROM {}", quote_ident(table)), &[])
            .await
            .map_err(|e| pg_error(e, "counting rows").in_table(table))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn key_after(&mut self, scan: &ScanSpec, after: Option<&[Value]>, step: u64) -> Result<Option<Vec<Value>>> {
        if scan.key.is_empty() {
            return Err(
                Error::schema("the table has no key to walk (no primary key and no key given)").in_table(&scan.table)
            );
        }
        let range = KeyRange { after: after.map(<[Value]>::to_vec), upto: None };
        let keys = column_list(&scan.key);
        let sql = format!(
            "SELECT {keys} FROM {}{} ORDER BY {keys} LIMIT 1 OFFSET {}",
            quote_ident(&scan.table),
            where_clause(&scan_conditions(scan, &range)),
            step.max(1) - 1
        );
        let names: Vec<&str> = scan.key.iter().map(String::as_str).collect();
        let mut rows = self.fetch(&sql, "walking the key", &names).await.map_err(|e| e.in_table(&scan.table))?;
        Ok(rows.pop())
    }

    /// `min` and `max` of one integer key column, answered from the primary key
    /// index's two ends.
    async fn key_span(&mut self, scan: &ScanSpec) -> Result<Option<(i64, i64)>> {
        let ([key], [ColumnType::Int { .. }]) = (scan.key.as_slice(), scan.key_types.as_slice()) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT min({k})::int8, max({k})::int8 FROM {}{}",
            quote_ident(&scan.table),
            where_clause(&scan_conditions(scan, &KeyRange::ALL)),
            k = quote_ident(key)
        );
        let row = self
            .session
            .client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(|e| crate::errors::pg_error(e, "finding the key's span").in_table(&scan.table))?;
        let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(min.zip(max))
    }

    async fn partitions(
        &mut self,
        table: &str,
        column: &str,
        _ty: &ColumnType,
        filter: Option<&str>,
    ) -> Result<Vec<(Value, u64)>> {
        let conditions: Vec<String> = filter.map(|f| format!("({f})")).into_iter().collect();
        let col = quote_ident(column);
        let sql = format!(
            "SELECT {col}, count(*) FROM {}{} GROUP BY {col} ORDER BY 2, 1",
            quote_ident(table),
            where_clause(&conditions)
        );
        let rows = self.fetch(&sql, "counting partitions", &[column, "count"]).await.map_err(|e| e.in_table(table))?;
        rows.into_iter()
            .map(|mut r| {
                let count = match r.pop() {
                    Some(Value::Int(n)) => n as u64,
                    _ => return Err(Error::internal("count(*) did not return an integer")),
                };
                Ok((r.pop().unwrap_or(Value::Null), count))
            })
            .collect()
    }

    async fn scan(&mut self, scan: &ScanSpec, range: &KeyRange) -> Result<Vec<Row>> {
        let items = select_list(scan);
        let order = if scan.key.is_empty() { String::new() } else { format!(" ORDER BY {}", column_list(&scan.key)) };
        let sql = format!(
            "SELECT {items} FROM {}{}{order}",
            quote_ident(&scan.table),
            where_clause(&scan_conditions(scan, range)),
        );
        let names: Vec<&str> = scan.select.iter().map(|i| item_name(&i.expr)).collect();
        self.fetch(&sql, "scanning", &names).await.map_err(|e| e.in_table(&scan.table))
    }

    /// `COPY (SELECT ...) TO STDOUT (FORMAT binary)` over the same conditions as
    /// [`PgReader::scan`], without ORDER BY, collected into one buffer; the rows are
    /// counted by walking the stream, which also checks that it is complete.
    async fn scan_raw(&mut self, scan: &ScanSpec, range: &KeyRange) -> Result<Option<RawRows>> {
        let table = scan.table.as_str();
        let mut items = Vec::with_capacity(scan.select.len());
        for item in &scan.select {
            match &item.expr {
                SelectExpr::Column(name) => items.push(quote_ident(name)),
                SelectExpr::Sql(_) => {
                    return Err(Error::internal("a raw scan reads columns only, not SQL expressions").in_table(table));
                }
            }
        }
        let sql = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
            items.join(", "),
            quote_ident(table),
            where_clause(&scan_conditions(scan, range)),
        );
        let what = "scanning";
        let stream = self.session.client.copy_out(&sql).await.map_err(|e| pg_error(e, what).in_table(table))?;
        let mut stream = pin!(stream);
        let mut data = Vec::new();
        while let Some(piece) = stream.try_next().await.map_err(|e| pg_error(e, what).in_table(table))? {
            data.extend_from_slice(&piece);
        }
        let rows = copy_stream::count_rows(&data, Some(scan.select.len())).map_err(|why| {
            Error::internal(format!("{what}: the server's binary COPY stream is malformed: {why}")).in_table(table)
        })?;
        Ok(Some(RawRows { engine: Engine::Postgres, rows, data, keys: Vec::new() }))
    }

    async fn checksum(
        &mut self,
        scan: &ScanSpec,
        range: &KeyRange,
        digest: Digest,
    ) -> Result<Option<pontoon_core::Checksum>> {
        crate::checksum::checksum(&self.session.client, scan, range, digest).await
    }

    async fn checksum_ranges(
        &mut self,
        scan: &ScanSpec,
        bounds: &[Vec<Value>],
        digest: Digest,
    ) -> Result<Option<Vec<pontoon_core::Checksum>>> {
        crate::checksum::checksum_ranges(&self.session.client, scan, bounds, digest).await
    }

    /// `SELECT <select> FROM t WHERE <filter> AND <partition> AND key IN (...)`, one
    /// statement per 1000 keys (`FETCH_KEYS_BATCH`), up to `FETCH_KEYS_PIPELINE` of
    /// them in flight, decoded exactly as [`PgReader::scan`] decodes.
    async fn fetch_keys(&mut self, scan: &ScanSpec, keys: &[Vec<Value>]) -> Result<Vec<Row>> {
        let table = scan.table.as_str();
        if scan.key.is_empty() {
            return Err(Error::schema("the table has no key to fetch rows by").in_table(table));
        }
        if let Some(k) = keys.iter().find(|k| k.len() != scan.key.len()) {
            return Err(Error::internal(format!(
                "a key of {} values for a key of {} columns",
                k.len(),
                scan.key.len()
            ))
            .in_table(table));
        }
        let items = select_list(scan);
        let names: Vec<&str> = scan.select.iter().map(|i| item_name(&i.expr)).collect();
        let base = scan_conditions(scan, &KeyRange::ALL);
        let mut statements = Vec::with_capacity(keys.len().div_ceil(FETCH_KEYS_BATCH));
        for batch in keys.chunks(FETCH_KEYS_BATCH) {
            let mut conditions = base.clone();
            conditions.push(key_in_sql(&scan.key, batch));
            statements.push(format!("SELECT {items} FROM {}{}", quote_ident(table), where_clause(&conditions)));
        }
        let (this, names) = (&*self, &names);
        let mut answers = futures_util::stream::iter(statements)
            .map(|sql| async move { this.fetch(&sql, "fetching rows by key", names).await })
            .buffered(FETCH_KEYS_PIPELINE);
        let mut rows = Vec::with_capacity(keys.len());
        while let Some(part) = answers.try_next().await.map_err(|e| e.in_table(table))? {
            rows.extend(part);
        }
        Ok(rows)
    }
}
