//! The source side: catalog, estimates, key boundaries and key-range scans read with
//! the binary protocol (the fastest MariaDB reader measured).

use async_trait::async_trait;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use pontoon_core::{
    ColumnType, Digest, Error, KeyRange, Reader, Result, Row, ScanSpec, SelectExpr, TableSchema, Value,
};

use crate::sql::{key_list, keys_where_clause, quote, select_list, where_clause};
use crate::{catalog, error, types, values};

/// A connection reading one MariaDB database. See [`pontoon_core::Reader`].
pub struct MysqlReader {
    conn: Conn,
    database: String,
}

impl std::fmt::Debug for MysqlReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlReader").field("database", &self.database).field("connection_id", &self.conn.id()).finish()
    }
}

impl MysqlReader {
    pub(crate) fn new(conn: Conn, database: String) -> MysqlReader {
        MysqlReader { conn, database }
    }

    /// Runs a query with the binary protocol and decodes each row by `types`; a cell
    /// that cannot be decoded is an error naming `names[i]`.
    async fn query_rows(&mut self, sql: &str, types: &[&ColumnType], names: &[String]) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        self.query_each(sql, types, names, &mut |row| {
            rows.push(row);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// [`MysqlReader::query_rows`], each row handed to `each` as it is decoded.
    async fn query_each(
        &mut self,
        sql: &str,
        types: &[&ColumnType],
        names: &[String],
        each: &mut (dyn FnMut(Row) -> Result<()> + Send),
    ) -> Result<u64> {
        let mut result = self.conn.exec_iter(sql, ()).await.map_err(error::map)?;
        let mut n = 0;
        while let Some(row) = result.next().await.map_err(error::map)? {
            let cells = row.unwrap();
            if cells.len() != types.len() {
                return Err(Error::internal(format!(
                    "MariaDB returned {} columns, {} were selected",
                    cells.len(),
                    types.len()
                )));
            }
            let mut out = Vec::with_capacity(cells.len());
            for (i, cell) in cells.into_iter().enumerate() {
                out.push(values::decode(cell, types[i]).map_err(|e| e.in_column(&names[i]))?);
            }
            each(out)?;
            n += 1;
        }
        Ok(n)
    }
}

/// At most this many keys in one `fetch_keys` statement (its text stays far below
/// the server's packet limit for keys of up to a few kilobytes each).
const MAX_FETCH_KEYS: usize = 1_000;

/// The name an output column goes by in errors: the column, or the expression.
fn item_name(expr: &SelectExpr) -> String {
    match expr {
        SelectExpr::Column(c) => c.clone(),
        SelectExpr::Sql(e) => format!("({e})"),
    }
}

#[async_trait]
impl Reader for MysqlReader {
    async fn list_tables(&mut self) -> Result<Vec<String>> {
        catalog::list_tables(&mut self.conn, &self.database).await
    }

    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        catalog::describe(&mut self.conn, &self.database, table).await
    }

    async fn describe_exprs(&mut self, table: &str, exprs: &[String]) -> Result<Vec<ColumnType>> {
        if exprs.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = exprs.iter().map(|e| format!("({e})")).collect();
        let sql = format!("SELECT {} FROM {} LIMIT 0", list.join(", "), quote(table));
        let result = self.conn.exec_iter(sql.as_str(), ()).await.map_err(|e| error::map(e).in_table(table))?;
        let columns = result.columns().unwrap_or_else(|| Vec::new().into());
        let mut out = Vec::with_capacity(columns.len());
        for (col, expr) in columns.iter().zip(exprs) {
            out.push(types::from_result_column(col).map_err(|e| e.in_column(format!("({expr})")).in_table(table))?);
        }
        result.drop_result().await.map_err(|e| error::map(e).in_table(table))?;
        if out.len() != exprs.len() {
            return Err(Error::internal(format!(
                "MariaDB described {} columns for {} expressions",
                out.len(),
                exprs.len()
            ))
            .in_table(table));
        }
        Ok(out)
    }

    async fn estimate_rows(&mut self, table: &str) -> Result<u64> {
        catalog::estimate_rows(&mut self.conn, &self.database, table).await
    }

    async fn key_after(&mut self, scan: &ScanSpec, after: Option<&[Value]>, step: u64) -> Result<Option<Vec<Value>>> {
        let range = KeyRange { after: after.map(<[Value]>::to_vec), upto: None };
        let keys = key_list(&scan.key);
        let sql = format!(
            "SELECT {keys} FROM {}{} ORDER BY {keys} LIMIT 1 OFFSET {}",
            quote(&scan.table),
            where_clause(scan, &range),
            step.max(1) - 1
        );
        let types: Vec<&ColumnType> = scan.key_types.iter().collect();
        let mut rows = self.query_rows(&sql, &types, &scan.key).await.map_err(|e| e.in_table(&scan.table))?;
        Ok(rows.pop())
    }

    /// `MIN` and `MAX` of one signed integer key column: InnoDB reads the two ends of
    /// the clustered index (a walk of it would read every row's page).
    async fn key_span(&mut self, scan: &ScanSpec) -> Result<Option<(i64, i64)>> {
        let ([key], [ColumnType::Int { unsigned: false, .. }]) = (scan.key.as_slice(), scan.key_types.as_slice())
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT MIN({k}), MAX({k}) FROM {}{}",
            quote(&scan.table),
            where_clause(scan, &KeyRange::ALL),
            k = quote(key)
        );
        let types = [&ColumnType::I64, &ColumnType::I64];
        let names = ["min".to_string(), "max".to_string()];
        let rows = self.query_rows(&sql, &types, &names).await.map_err(|e| e.in_table(&scan.table))?;
        Ok(match rows.first().map(Vec::as_slice) {
            Some([Value::Int(min), Value::Int(max)]) => Some((*min, *max)),
            _ => None,
        })
    }

    async fn partitions(
        &mut self,
        table: &str,
        column: &str,
        ty: &ColumnType,
        filter: Option<&str>,
    ) -> Result<Vec<(Value, u64)>> {
        let filter = filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default();
        let sql = format!(
            "SELECT {col}, count(*) FROM {}{filter} GROUP BY {col} ORDER BY 2, 1",
            quote(table),
            col = quote(column)
        );
        let count_ty = ColumnType::Int { bytes: 8, unsigned: false };
        let names = [column.to_string(), "count(*)".to_string()];
        let rows = self.query_rows(&sql, &[ty, &count_ty], &names).await.map_err(|e| e.in_table(table))?;
        rows.into_iter()
            .map(|mut r| {
                let count = match r.pop() {
                    Some(Value::Int(n)) => u64::try_from(n).unwrap_or(0),
                    Some(Value::UInt(n)) => n,
                    _ => 0,
                };
                let value = r.pop().unwrap_or(Value::Null);
                Ok((value, count))
            })
            .collect()
    }

    async fn scan(&mut self, scan: &ScanSpec, range: &KeyRange) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        self.scan_each(scan, range, &mut |row| {
            rows.push(row);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    async fn scan_each(
        &mut self,
        scan: &ScanSpec,
        range: &KeyRange,
        each: &mut (dyn FnMut(Row) -> Result<()> + Send),
    ) -> Result<u64> {
        let order = if scan.key.is_empty() { String::new() } else { format!(" ORDER BY {}", key_list(&scan.key)) };
        let sql = format!(
            "SELECT {} FROM {}{}{order}",
            select_list(&scan.select),
            quote(&scan.table),
            where_clause(scan, range),
        );
        let types: Vec<&ColumnType> = scan.select.iter().map(|i| &i.ty).collect();
        let names: Vec<String> = scan.select.iter().map(|i| item_name(&i.expr)).collect();
        self.query_each(&sql, &types, &names, each).await.map_err(|e| e.in_table(&scan.table))
    }

    async fn checksum(
        &mut self,
        scan: &ScanSpec,
        range: &KeyRange,
        digest: Digest,
    ) -> Result<Option<pontoon_core::Checksum>> {
        crate::checksum::checksum(&mut self.conn, scan, range, digest).await
    }

    /// One `SELECT ... WHERE <filter> AND <partition> AND key IN (...)` per
    /// 1000 keys, decoded as `scan` decodes. Keys are literals rendered
    /// by `sql::literal` (text escaped, bytes in hex), so no key can change the
    /// statement. A text key is matched under its column's collation: with a
    /// case-insensitive or PAD SPACE collation (MariaDB's default `utf8mb4_general_ci`),
    /// `'abc'`, `'ABC'` and `'abc '` all name the one row the table holds under that
    /// key, and it comes back with the key as stored, which may be spelled
    /// differently from the key asked for (once, however many spellings were asked).
    async fn fetch_keys(&mut self, scan: &ScanSpec, keys: &[Vec<Value>]) -> Result<Vec<Row>> {
        let in_table = |e: Error| e.in_table(&scan.table);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if scan.key.is_empty() {
            return Err(in_table(Error::schema("rows cannot be fetched by key: the scan has no key")));
        }
        if let Some(bad) = keys.iter().find(|k| k.len() != scan.key.len()) {
            return Err(in_table(Error::internal(format!(
                "a key of {} values for a key of {} columns",
                bad.len(),
                scan.key.len()
            ))));
        }
        let types: Vec<&ColumnType> = scan.select.iter().map(|i| &i.ty).collect();
        let names: Vec<String> = scan.select.iter().map(|i| item_name(&i.expr)).collect();
        let mut rows = Vec::new();
        for chunk in keys.chunks(MAX_FETCH_KEYS) {
            // A locking read: MariaDB sends a transaction's binlog events before InnoDB
            // makes it visible, so a plain re-read right after the event may still see
            // the row as it was (a lost update). A shared lock waits for the writer
            // holding the row (or the key it is inserting) and reads the committed
            // version. The locks are released when the statement ends.
            let sql = format!(
                "SELECT {} FROM {}{} LOCK IN SHARE MODE",
                select_list(&scan.select),
                quote(&scan.table),
                keys_where_clause(scan, chunk)
            );
            rows.extend(self.query_rows(&sql, &types, &names).await.map_err(in_table)?);
        }
        Ok(rows)
    }
}
