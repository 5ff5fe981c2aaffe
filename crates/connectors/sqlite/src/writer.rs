//! The target side: table creation and idempotent batch upserts.
//!
//! A batch is one `BEGIN IMMEDIATE` transaction running one cached prepared
//! `INSERT ... ON CONFLICT (key) DO UPDATE` per row: SQLite has no faster bulk path
//! than a prepared statement in a transaction.
//!
//! Besides the engine's fit rules, the writer refuses what SQLite's column affinity
//! would silently alter (see [`check_affinity`]): -0.0 in a column of REAL, INTEGER or
//! NUMERIC affinity (SQLite stores it as the integer 0), and decimals that a NUMERIC
//! affinity column (a user's `DECIMAL(p,s)`, not pontoon's `DECIMAL_TEXT`) would round
//! through a double.

use async_trait::async_trait;
use pontoon_core::{Column, ColumnType, Decimal, Error, ErrorKind, Result, Row, TableSchema, Value, Writer};
use rusqlite::types::ValueRef;
use rusqlite::{TransactionBehavior, params_from_iter};

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
/// when every column is part of the key).
fn upsert_sql(schema: &TableSchema) -> String {
    let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let key: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
        .collect();
    let action = if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
        quote(&schema.name),
        cols.join(", "),
        params.join(", "),
        key.join(", ")
    )
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
        if table.primary_key.is_empty() {
            return Err(Error::schema("the table has no primary key, which an idempotent upsert needs")
                .in_table(table.name.clone()));
        }
        let key_pos = table
            .primary_key
            .iter()
            .map(|k| {
                table.position(k).ok_or_else(|| {
                    Error::schema(format!("key column {k} is not among the table's columns"))
                        .in_table(table.name.clone())
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
        let sql = upsert_sql(table);
        let schema = table.clone();
        let rows = rows.to_vec();
        self.conn
            .run(move |c| write_rows(c, &sql, &schema, &rows, &key_pos).map_err(|e| e.in_table(schema.name.clone())))
            .await
    }
}

/// Runs the upsert statement for every row in one `BEGIN IMMEDIATE` transaction.
fn write_rows(
    conn: &mut rusqlite::Connection,
    sql: &str,
    schema: &TableSchema,
    rows: &[Row],
    key_pos: &[usize],
) -> Result<u64> {
    let key_of = |row: &Row| key_pos.iter().map(|&i| row[i].clone()).collect();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
    {
        let mut stmt = tx.prepare_cached(sql).map_err(db_error)?;
        let mut bound = Vec::with_capacity(schema.columns.len());
        for row in rows {
            bound.clear();
            for (value, column) in row.iter().zip(&schema.columns) {
                bound.push(bind(value, column).map_err(|e| e.at_key(key_of(row)))?);
            }
            stmt.execute(params_from_iter(&bound)).map_err(|e| db_error(e).at_key(key_of(row)))?;
        }
    }
    tx.commit().map_err(db_error)?;
    Ok(rows.len() as u64)
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
            upsert_sql(&schema),
            "INSERT INTO \"t\"\"x\" (\"a\", \"b\", \"c\") VALUES (?1, ?2, ?3) ON CONFLICT (\"a\", \"b\") DO UPDATE SET \"c\" = excluded.\"c\""
        );
        let keys_only = TableSchema { columns: schema.columns[..2].to_vec(), ..schema };
        assert!(upsert_sql(&keys_only).ends_with("DO NOTHING"));
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
