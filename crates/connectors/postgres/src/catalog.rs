//! What pontoon learns from `pg_catalog`: the tables of the current schema, their
//! columns in portable types, their primary keys, and the exact column types the
//! writer encodes for.

use std::collections::HashMap;

use pontoon_core::{Column, ColumnType, Error, ErrorKind, Result, TableSchema};
use tokio_postgres::Client;
use tokio_postgres::types::{Oid, Type};

use crate::encode::TargetColumn;
use crate::errors::pg_error;

/// The portable type of a PostgreSQL type with its type modifier (-1 for none), or
/// `None` when pontoon does not handle it (docs/type-mapping.md, "Reading").
pub fn column_type(ty: &Type, typmod: i32) -> Option<ColumnType> {
    let length = || (typmod >= 4).then(|| (typmod - 4) as u32);
    Some(match *ty {
        Type::BOOL => ColumnType::Bool,
        Type::INT2 => ColumnType::Int { bytes: 2, unsigned: false },
        Type::INT4 => ColumnType::I32,
        Type::INT8 => ColumnType::I64,
        Type::FLOAT4 => ColumnType::Float32,
        Type::FLOAT8 => ColumnType::Float64,
        Type::NUMERIC if typmod < 4 => ColumnType::Decimal { precision: None, scale: None },
        Type::NUMERIC => {
            let precision = ((typmod - 4) >> 16) & 0xffff;
            // the scale is an 11-bit signed field; a negative scale rounds to tens
            let scale = (((typmod - 4) & 0x7ff) ^ 1024) - 1024;
            if scale < 0 {
                return None;
            }
            ColumnType::Decimal { precision: Some(precision as u32), scale: Some(scale as u32) }
        }
        Type::TEXT | Type::NAME => ColumnType::TEXT,
        Type::VARCHAR | Type::BPCHAR => ColumnType::Text { max_chars: length() },
        Type::BYTEA => ColumnType::Bytes { max_bytes: None },
        Type::DATE => ColumnType::Date,
        Type::TIME => ColumnType::Time,
        Type::TIMESTAMP => ColumnType::Timestamp,
        Type::TIMESTAMPTZ => ColumnType::TimestampTz,
        Type::JSON | Type::JSONB => ColumnType::Json,
        Type::UUID => ColumnType::Uuid,
        _ => return None,
    })
}

fn unsupported(table: &str, column: &str, native: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("type {native} is not supported by pontoon"))
        .in_column(column)
        .in_table(table)
}

/// Ordinary and partitioned tables of `current_schema()`, sorted by name. Partitions
/// of a partitioned table are left out: their rows are read through the parent.
pub async fn list_tables(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
             AND NOT c.relispartition",
            &[],
        )
        .await
        .map_err(|e| pg_error(e, "listing tables"))?;
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    Ok(names)
}

/// The oid of a table of `current_schema()`, or `None`.
async fn table_oid(client: &Client, table: &str) -> Result<Option<Oid>> {
    let row = client
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = $1 \
             AND c.relkind IN ('r', 'p')",
            &[&table],
        )
        .await
        .map_err(|e| pg_error(e, "looking up the table").in_table(table))?;
    Ok(row.map(|r| r.get(0)))
}

struct Attribute {
    name: String,
    oid: Oid,
    typmod: i32,
    native: String,
    not_null: bool,
    has_default: bool,
}

async fn attributes(client: &Client, table: &str, oid: Oid) -> Result<Vec<Attribute>> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, \
                    format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error(e, "reading the columns").in_table(table))?;
    Ok(rows
        .iter()
        .map(|r| Attribute {
            name: r.get(0),
            oid: r.get(1),
            typmod: r.get(2),
            native: r.get(3),
            not_null: r.get(4),
            has_default: r.get(5),
        })
        .collect())
}

/// The table's columns and primary key, or `None` if `current_schema()` has no
/// such table. A column of a type pontoon does not handle is an
/// [`ErrorKind::Unsupported`] error naming it and its type.
pub async fn describe(client: &Client, table: &str) -> Result<Option<TableSchema>> {
    let Some(oid) = table_oid(client, table).await? else {
        return Ok(None);
    };
    let mut columns = Vec::new();
    for a in attributes(client, table, oid).await? {
        let ty = Type::from_oid(a.oid)
            .and_then(|t| column_type(&t, a.typmod))
            .ok_or_else(|| unsupported(table, &a.name, &a.native))?;
        columns.push(Column { name: a.name, ty, nullable: !a.not_null, native: a.native, has_default: a.has_default });
    }
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary \
             ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error(e, "reading the primary key").in_table(table))?;
    let primary_key = rows.iter().map(|r| r.get(0)).collect();
    Ok(Some(TableSchema { name: table.to_string(), columns, primary_key }))
}

/// The exact types of `names` in `table`, in that order, for encoding.
pub async fn target_columns(client: &Client, table: &str, names: &[String]) -> Result<Vec<TargetColumn>> {
    let Some(oid) = table_oid(client, table).await? else {
        return Err(Error::schema(format!("table {table} does not exist in the target schema")).in_table(table));
    };
    let mut by_name: HashMap<String, Attribute> =
        attributes(client, table, oid).await?.into_iter().map(|a| (a.name.clone(), a)).collect();
    names
        .iter()
        .map(|name| {
            let a = by_name.remove(name).ok_or_else(|| {
                Error::schema(format!("table {table} has no column {name}")).in_column(name.clone()).in_table(table)
            })?;
            let ty = Type::from_oid(a.oid)
                .filter(|t| column_type(t, -1).is_some())
                .ok_or_else(|| unsupported(table, name, &a.native))?;
            Ok(TargetColumn { name: a.name, ty, typmod: a.typmod, native: a.native })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typmods_are_decoded() {
        // numeric(12,3)
        assert_eq!(
            column_type(&Type::NUMERIC, ((12 << 16) | 3) + 4),
            Some(ColumnType::Decimal { precision: Some(12), scale: Some(3) })
        );
        // numeric(5,-2) (PostgreSQL 15) is refused
        assert_eq!(column_type(&Type::NUMERIC, ((5 << 16) | 0x7fe) + 4), None);
        assert_eq!(column_type(&Type::VARCHAR, 20 + 4), Some(ColumnType::Text { max_chars: Some(20) }));
        assert_eq!(column_type(&Type::VARCHAR, -1), Some(ColumnType::TEXT));
        assert_eq!(column_type(&Type::INT4_ARRAY, -1), None);
        assert_eq!(column_type(&Type::INTERVAL, -1), None);
    }
}
