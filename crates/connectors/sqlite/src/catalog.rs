//! Introspection: the tables of a database and their columns in portable types.

use pontoon_core::{Column, Error, ErrorKind, Result, TableSchema};
use rusqlite::{Connection, OptionalExtension};

use crate::error::db_error;
use crate::types::column_type;

/// Base tables of the `main` schema, sorted by name: neither SQLite's own tables
/// (`sqlite_%`) nor views nor virtual tables.
pub(crate) fn list_tables(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name FROM main.sqlite_schema \
             WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
        )
        .map_err(db_error)?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(db_error)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(db_error)?;
    Ok(names)
}

/// The table's columns (from `PRAGMA table_info`) and primary key, or `None` when the
/// `main` schema has no such base table. Names match as in SQL (ASCII
/// case-insensitively); the schema carries the name as the table was created.
///
/// A column of a declared type pontoon does not map is an `Unsupported` error naming
/// table, column and type. `has_default` is set for columns with a default and for an
/// `INTEGER PRIMARY KEY` of a rowid table (an alias of the rowid, filled by SQLite).
/// Generated columns are not listed (`table_info` hides them): they cannot be written.
pub(crate) fn describe(conn: &Connection, table: &str) -> Result<Option<TableSchema>> {
    let name: Option<String> = conn
        .prepare_cached(
            "SELECT name FROM main.sqlite_schema \
             WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        )
        .and_then(|mut s| s.query_row([table], |row| row.get(0)).optional())
        .map_err(db_error)?;
    let Some(name) = name else {
        return Ok(None);
    };
    let without_rowid: bool = conn
        .prepare_cached("SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main'")
        .and_then(|mut s| s.query_row([&name], |row| row.get::<_, i64>(0)).optional())
        .map_err(db_error)?
        .is_some_and(|wr| wr != 0);

    struct Info {
        name: String,
        declared: String,
        not_null: bool,
        has_default: bool,
        pk: i64,
    }
    let infos = conn
        .prepare_cached(
            "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk \
             FROM pragma_table_info(?1, 'main') ORDER BY cid",
        )
        .and_then(|mut s| {
            s.query_map([&name], |row| {
                Ok(Info {
                    name: row.get(0)?,
                    declared: row.get(1)?,
                    not_null: row.get(2)?,
                    has_default: row.get(3)?,
                    pk: row.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<Info>>>()
        })
        .map_err(db_error)?;

    let pk_count = infos.iter().filter(|i| i.pk > 0).count();
    let mut columns = Vec::with_capacity(infos.len());
    let mut key: Vec<(i64, String)> = Vec::new();
    for info in infos {
        let Some(ty) = column_type(&info.declared) else {
            let why = if info.declared.trim().is_empty() {
                "has no declared type; pontoon needs one to know how to read it".to_string()
            } else {
                format!("declared type {} is not supported (see docs/type-mapping.md)", info.declared)
            };
            return Err(Error::new(ErrorKind::Unsupported, why).in_column(info.name).in_table(name));
        };
        let rowid_alias =
            info.pk > 0 && pk_count == 1 && !without_rowid && info.declared.trim().eq_ignore_ascii_case("INTEGER");
        if info.pk > 0 {
            key.push((info.pk, info.name.clone()));
        }
        columns.push(Column {
            name: info.name,
            ty,
            nullable: !info.not_null,
            native: info.declared,
            has_default: info.has_default || rowid_alias,
        });
    }
    key.sort();
    Ok(Some(TableSchema { name, columns, primary_key: key.into_iter().map(|(_, c)| c).collect() }))
}
