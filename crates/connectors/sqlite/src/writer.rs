//! The target side: table creation and idempotent batch upserts.
//!
//! A batch is one `BEGIN IMMEDIATE` transaction running one cached prepared
//! `INSERT ... ON CONFLICT (key) DO UPDATE` per row: SQLite has no faster bulk path
//! than a prepared statement in a transaction. A sync batch ([`Writer::apply`]) is
//! the same upsert plus one prepared `DELETE` per deleted key, in one transaction.
//!
//! The version guard of `apply` is `ON CONFLICT (key) DO UPDATE SET ... WHERE
//! t.v IS NULL OR t.v <= excluded.v`: SQLite compares the stored values, so the guard
//! is only meaningful where the storage form orders like the values. It does for
//! booleans, integers and floats (numbers), decimals in a column of numeric affinity
//! (a user's `DECIMAL(p,s)`, stored as numbers), text and UUIDs (by the column's
//! collation; UUIDs as lower-case text sort like their bytes), bytes (bytewise), and
//! dates and timestamps (fixed-width ISO 8601 text with four-digit years, as pontoon
//! writes them; a row another writer stored in another text form, say `T` instead of
//! a space or without fraction digits, does not compare by time). It does not for
//! decimals stored as text (`DECIMAL_TEXT`: `'10'` sorts before `'9'`), times
//! (negative or above 99 hours) and JSON: such a version column is refused. A row
//! whose own version is NULL does not replace a row that has one.
//!
//! Besides the engine's fit rules, the writer refuses what SQLite's column affinity
//! would silently alter (see [`check_affinity`]): -0.0 in a column of REAL, INTEGER or
//! NUMERIC affinity (SQLite stores it as the integer 0), and decimals that a NUMERIC
//! affinity column (a user's `DECIMAL(p,s)`, not pontoon's `DECIMAL_TEXT`) would round
//! through a double.

use async_trait::async_trait;
use pontoon_core::{Column, ColumnType, Decimal, Error, ErrorKind, Result, Row, TableSchema, Value, Writer};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Transaction, TransactionBehavior, params_from_iter};

use crate::catalog;
use crate::conn::Handle;
use crate::error::db_error;
use crate::storage::{Stored, decode, encode};
use crate::types::{Affinity, native_type, quote};

/// Writes an SQLite database through a read-write connection in WAL mode.
#[derive(Debug)]
pub struct SqliteWriter {
    conn: Handle,
}

impl SqliteWriter {
    pub(crate) fn new(conn: Handle) -> SqliteWriter {
        SqliteWriter { conn }
    }
}

/// `CREATE TABLE` for `schema`, with pontoon's native types.
fn create_sql(schema: &TableSchema) -> String {
    let mut parts: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let ty = if c.native.is_empty() { native_type(&c.ty) } else { c.native.clone() };
            format!("{} {ty}{}", quote(&c.name), if c.nullable { "" } else { " NOT NULL" })
        })
        .collect();
    if !schema.primary_key.is_empty() {
        let key: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!("CREATE TABLE {} ({})", quote(&schema.name), parts.join(", "))
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE SET c = excluded.c, ...` (or `DO NOTHING`
/// when every column is part of the key); with a version column, the update only
/// happens `WHERE t.v IS NULL OR t.v <= excluded.v`.
fn upsert_sql(schema: &TableSchema, version_column: Option<&str>) -> String {
    let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let key: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
        .collect();
    let action = match version_column {
        _ if updates.is_empty() => "NOTHING".to_string(),
        None => format!("UPDATE SET {}", updates.join(", ")),
        Some(v) => format!(
            "UPDATE SET {} WHERE {t}.{v} IS NULL OR {t}.{v} <= excluded.{v}",
            updates.join(", "),
            t = quote(&schema.name),
            v = quote(v)
        ),
    };
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
        quote(&schema.name),
        cols.join(", "),
        params.join(", "),
        key.join(", ")
    )
}

/// `DELETE FROM t WHERE k1 = ?1 AND k2 = ?2`.
fn delete_sql(schema: &TableSchema) -> String {
    let conds: Vec<String> =
        schema.primary_key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect();
    format!("DELETE FROM {} WHERE {}", quote(&schema.name), conds.join(" AND "))
}

/// Why SQLite's comparison of a version column's stored values does not follow the
/// order of the values, or `None` when it does (see the module documentation).
fn version_order_problem(column: &Column) -> Option<&'static str> {
    match &column.ty {
        ColumnType::Decimal { .. } if !Affinity::of(&column.native).is_numeric() => {
            Some("its decimals are stored as text, which does not sort by value ('10' before '9')")
        }
        ColumnType::Time => {
            Some("its times are stored as text, which does not sort by time for negative times or 100 hours and more")
        }
        ColumnType::Json => Some("JSON documents have no order"),
        _ => None,
    }
}

/// Checks that `column` of `schema` can guard writes (exists, orders by value).
fn check_version_column(schema: &TableSchema, column: &str) -> Result<()> {
    let Some(c) = schema.column(column) else {
        return Err(Error::config(format!("version column {column} is not a column of table {}", schema.name))
            .in_table(schema.name.clone()));
    };
    if let Some(why) = version_order_problem(c) {
        return Err(Error::config(format!(
            "version column {column} ({}) of table {} cannot guard writes: {why}; choose a column of \
             integers, timestamps or a numeric type",
            c.native, schema.name
        ))
        .in_table(schema.name.clone())
        .in_column(column));
    }
    Ok(())
}

/// Refuses a value that SQLite would silently change on its way into `column`, going
/// by the column's affinity (from its declared type, `Column::native`).
fn check_affinity(value: &Value, column: &Column) -> Result<()> {
    if !Affinity::of(&column.native).is_numeric() {
        return Ok(());
    }
    let negative_zero = match value {
        Value::F32(f) => *f == 0.0 && f.is_sign_negative(),
        Value::F64(f) => *f == 0.0 && f.is_sign_negative(),
        _ => false,
    };
    if negative_zero {
        return Err(Error::new(
            ErrorKind::ValueRange,
            format!(
                "SQLite would store -0.0 as 0 in a column of type {} (numeric affinity loses the sign)",
                column.native
            ),
        ));
    }
    if let Value::Decimal(d) = value
        && !survives_numeric_affinity(d, &column.ty)
    {
        return Err(Error::new(
            ErrorKind::ValueRange,
            format!(
                "SQLite would round this decimal through a double in a column of type {} \
                 (numeric affinity); declare the column DECIMAL_TEXT to keep every digit",
                column.native
            ),
        ));
    }
    Ok(())
}

/// Whether `d`, written as text into a NUMERIC-affinity column, reads back as `d`.
/// SQLite keeps an integer literal that fits in 64 bits as an integer and turns any
/// other number into a double (keeping 15 significant digits), which the reader
/// decodes back with the column's declared scale.
fn survives_numeric_affinity(d: &Decimal, ty: &ColumnType) -> bool {
    if d.is_special() {
        // 'NaN' and 'Infinity' are not numbers to SQLite: they stay text.
        return true;
    }
    let (int_part, frac_part) = d.parts();
    let integer = if frac_part.is_empty() { d.to_i128().and_then(|n| i64::try_from(n).ok()) } else { None };
    let stored = match integer {
        Some(n) => ValueRef::Integer(n),
        None => {
            let digits = format!("{int_part}{frac_part}");
            let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
            match d.as_str().parse::<f64>() {
                Ok(f) if significant <= 15 => ValueRef::Real(f),
                _ => return false,
            }
        }
    };
    matches!(decode(stored, ty), Ok(Value::Decimal(back)) if back == *d)
}

/// The storage form of one cell, with the column named on error.
fn bind<'a>(value: &'a Value, column: &Column) -> Result<Stored<'a>> {
    check_affinity(value, column).and_then(|()| encode(value)).map_err(|e| e.in_column(column.name.clone()))
}

#[async_trait]
impl Writer for SqliteWriter {
    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        let table = table.to_string();
        self.conn.run(move |c| catalog::describe(c, &table)).await
    }

    async fn create_table(&mut self, schema: &TableSchema) -> Result<()> {
        if schema.columns.is_empty() {
            return Err(Error::schema("a table needs at least one column").in_table(schema.name.clone()));
        }
        let sql = create_sql(schema);
        let table = schema.name.clone();
        self.conn
            .run(move |c| {
                c.execute(&sql, []).map_err(|e| db_error(e).in_table(table.clone()))?;
                tracing::info!(table = %table, "created sqlite table");
                Ok(())
            })
            .await
    }

    async fn upsert(&mut self, table: &TableSchema, rows: &[Row]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let key_pos = check_rows(table, rows)?;
        let sql = upsert_sql(table, None);
        let schema = table.clone();
        let rows = rows.to_vec();
        self.conn
            .run(move |c| {
                let run = |c: &mut Connection| -> Result<u64> {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
                    upsert_rows(&tx, &sql, &schema, &rows, &key_pos)?;
                    tx.commit().map_err(db_error)?;
                    Ok(rows.len() as u64)
                };
                run(c).map_err(|e| e.in_table(schema.name.clone()))
            })
            .await
    }

    /// Upserts (guarded by `version_column` when given) and deletes in one
    /// `BEGIN IMMEDIATE` transaction; returns the rows SQLite changed (a row the guard
    /// kept is not counted).
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
        let key_pos = check_rows(table, rows)?;
        if let Some(bad) = deletes.iter().find(|k| k.len() != table.primary_key.len()) {
            return Err(Error::internal(format!(
                "a key of {} values to delete for a key of {} columns",
                bad.len(),
                table.primary_key.len()
            ))
            .in_table(table.name.clone()));
        }
        if let Some(v) = version_column {
            check_version_column(table, v)?;
        }
        let upsert = upsert_sql(table, version_column);
        let delete = delete_sql(table);
        let schema = table.clone();
        let rows = rows.to_vec();
        let deletes = deletes.to_vec();
        self.conn
            .run(move |c| {
                let run = |c: &mut Connection| -> Result<u64> {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
                    // deletes first: under a case-insensitive key a deleted spelling
                    // may match the row being upserted under another one
                    let mut changed = delete_keys(&tx, &delete, &schema, &deletes)?;
                    changed += upsert_rows(&tx, &upsert, &schema, &rows, &key_pos)?;
                    tx.commit().map_err(db_error)?;
                    Ok(changed)
                };
                run(c).map_err(|e| e.in_table(schema.name.clone()))
            })
            .await
    }
}

/// Checks that the table has a primary key and every row its width; returns the
/// positions of the key columns.
fn check_rows(table: &TableSchema, rows: &[Row]) -> Result<Vec<usize>> {
    if table.primary_key.is_empty() {
        return Err(Error::schema("the table has no primary key, which an idempotent upsert needs")
            .in_table(table.name.clone()));
    }
    let key_pos = table
        .primary_key
        .iter()
        .map(|k| {
            table.position(k).ok_or_else(|| {
                Error::schema(format!("key column {k} is not among the table's columns")).in_table(table.name.clone())
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    if let Some(bad) = rows.iter().find(|r| r.len() != table.columns.len()) {
        return Err(Error::internal(format!(
            "a row of {} values for a table of {} columns",
            bad.len(),
            table.columns.len()
        ))
        .in_table(table.name.clone()));
    }
    Ok(key_pos)
}

/// Runs the upsert statement `sql` for every row inside the caller's transaction;
/// returns the rows SQLite changed.
fn upsert_rows(tx: &Transaction<'_>, sql: &str, schema: &TableSchema, rows: &[Row], key_pos: &[usize]) -> Result<u64> {
    let key_of = |row: &Row| key_pos.iter().map(|&i| row[i].clone()).collect();
    let mut stmt = tx.prepare_cached(sql).map_err(db_error)?;
    let mut bound = Vec::with_capacity(schema.columns.len());
    let mut changed = 0;
    for row in rows {
        bound.clear();
        for (value, column) in row.iter().zip(&schema.columns) {
            bound.push(bind(value, column).map_err(|e| e.at_key(key_of(row)))?);
        }
        changed += stmt.execute(params_from_iter(&bound)).map_err(|e| db_error(e).at_key(key_of(row)))? as u64;
    }
    Ok(changed)
}

/// Deletes each key (target key values in primary key order) inside the caller's
/// transaction; returns the rows deleted.
fn delete_keys(tx: &Transaction<'_>, sql: &str, schema: &TableSchema, keys: &[Vec<Value>]) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut stmt = tx.prepare_cached(sql).map_err(db_error)?;
    let mut deleted = 0;
    for key in keys {
        let bound = key
            .iter()
            .zip(&schema.primary_key)
            .map(|(v, k)| encode(v).map_err(|e| e.in_column(k.clone()).at_key(key.clone())))
            .collect::<Result<Vec<Stored<'_>>>>()?;
        deleted += stmt.execute(params_from_iter(&bound)).map_err(|e| db_error(e).at_key(key.clone()))? as u64;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column { name: name.into(), native: native_type(&ty), ty, nullable, has_default: false }
    }

    #[test]
    fn statements() {
        let schema = TableSchema {
            name: "t\"x".into(),
            columns: vec![
                col("a", ColumnType::I64, false),
                col("b", ColumnType::TEXT, false),
                col("c", ColumnType::Json, true),
            ],
            primary_key: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            create_sql(&schema),
            "CREATE TABLE \"t\"\"x\" (\"a\" BIGINT NOT NULL, \"b\" TEXT NOT NULL, \"c\" JSON_TEXT, PRIMARY KEY (\"a\", \"b\"))"
        );
        assert_eq!(
            upsert_sql(&schema, None),
            "INSERT INTO \"t\"\"x\" (\"a\", \"b\", \"c\") VALUES (?1, ?2, ?3) ON CONFLICT (\"a\", \"b\") DO UPDATE SET \"c\" = excluded.\"c\""
        );
        let keys_only = TableSchema { columns: schema.columns[..2].to_vec(), ..schema };
        assert!(upsert_sql(&keys_only, None).ends_with("DO NOTHING"));
        assert!(upsert_sql(&keys_only, Some("b")).ends_with("DO NOTHING"));
    }

    /// Why -0.0 is refused: SQLite itself drops the sign in a REAL-affinity column
    /// (and keeps it only where no affinity applies).
    #[test]
    fn sqlite_stores_negative_zero_as_zero() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (d DOUBLE, f FLOAT, n NUMERIC, b BLOB)").unwrap();
        c.execute("INSERT INTO t VALUES (?1, ?1, ?1, ?1)", [-0.0f64]).unwrap();
        let got: (f64, f64, f64, f64) =
            c.query_row("SELECT d, f, n, b FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
        assert!(got.0.is_sign_positive() && got.1.is_sign_positive() && got.2.is_sign_positive());
        assert!(got.3.is_sign_negative());
    }

    #[test]
    fn numeric_affinity_guard() {
        let user = |p, s| Column {
            name: "d".into(),
            ty: ColumnType::Decimal { precision: Some(p), scale: Some(s) },
            native: format!("DECIMAL({p},{s})"),
            nullable: true,
            has_default: false,
        };
        let d = |s| Value::Decimal(Decimal::parse(s).unwrap());
        assert!(check_affinity(&d("12.30"), &user(10, 2)).is_ok());
        assert!(check_affinity(&d("-0.05"), &user(10, 2)).is_ok());
        assert!(check_affinity(&d("99999999.99"), &user(10, 2)).is_ok());
        assert!(check_affinity(&d("123456789012345678"), &user(30, 0)).is_ok());
        assert!(check_affinity(&d("12345678901234567890"), &user(30, 0)).is_err());
        assert!(check_affinity(&d("1234567890.123456789"), &user(30, 9)).is_err());
        assert!(check_affinity(&d("NaN"), &user(10, 2)).is_ok());
        let text = col("d", ColumnType::Decimal { precision: Some(30), scale: Some(9) }, true);
        assert!(check_affinity(&d("1234567890.123456789"), &text).is_ok());
        assert!(check_affinity(&Value::F64(-0.0), &col("f", ColumnType::Float64, true)).is_err());
        assert!(check_affinity(&Value::F64(0.0), &col("f", ColumnType::Float64, true)).is_ok());
    }
}
