//! The catalog from `information_schema`: tables, columns, primary keys, JSON checks
//! and row estimates of the connection's database.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value as My};
use pontoon_core::{Column, Result, TableSchema};

use crate::error;
use crate::sql::quote;
use crate::types::{self, CatalogColumn};

/// Runs a prepared statement (binary protocol) and returns its rows as raw cells.
pub(crate) async fn fetch(conn: &mut Conn, sql: &str, params: Vec<My>) -> Result<Vec<Vec<My>>> {
    let rows: Vec<Row> = conn.exec(sql, params).await.map_err(error::map)?;
    Ok(rows.into_iter().map(Row::unwrap).collect())
}

fn param(s: &str) -> My {
    My::Bytes(s.as_bytes().to_vec())
}

/// A catalog cell as text (`NULL` is `None`).
pub(crate) fn text(v: &My) -> Option<String> {
    match v {
        My::NULL => None,
        My::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        My::Int(i) => Some(i.to_string()),
        My::UInt(u) => Some(u.to_string()),
        My::Float(f) => Some(f.to_string()),
        My::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true)),
    }
}

/// A catalog cell as a non-negative number (`NULL` or anything else is `None`).
pub(crate) fn number(v: &My) -> Option<u64> {
    match v {
        My::Int(i) => u64::try_from(*i).ok(),
        My::UInt(u) => Some(*u),
        My::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Base tables of `database`, sorted by name.
pub(crate) async fn list_tables(conn: &mut Conn, database: &str) -> Result<Vec<String>> {
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
        vec![param(database)],
    )
    .await?;
    let mut names: Vec<String> = rows.iter().filter_map(|r| text(&r[0])).collect();
    names.sort();
    Ok(names)
}

/// The table's columns (in order) and primary key, or `None` if it does not exist.
pub(crate) async fn describe(conn: &mut Conn, database: &str, table: &str) -> Result<Option<TableSchema>> {
    describe_inner(conn, database, table).await.map_err(|e| e.in_table(table))
}

async fn describe_inner(conn: &mut Conn, database: &str, table: &str) -> Result<Option<TableSchema>> {
    let params = vec![param(database), param(table)];
    // information_schema compares names case-insensitively: keep exact matches only.
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, \
         NUMERIC_PRECISION, NUMERIC_SCALE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
        params.clone(),
    )
    .await?;
    let rows: Vec<Vec<My>> = rows.into_iter().filter(|r| text(&r[0]).as_deref() == Some(table)).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let checks = fetch(
        conn,
        "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
        params.clone(),
    )
    .await?;
    let checks: Vec<String> = checks
        .iter()
        .filter(|r| text(&r[0]).as_deref() == Some(table))
        .filter_map(|r| text(&r[1]))
        .map(|c| normalize_check(&c))
        .collect();
    let mut columns = Vec::with_capacity(rows.len());
    for r in &rows {
        let name = text(&r[1]).unwrap_or_default();
        let catalog = CatalogColumn {
            data_type: text(&r[2]).unwrap_or_default(),
            column_type: text(&r[3]).unwrap_or_default(),
            char_max_length: number(&r[4]),
            numeric_precision: number(&r[5]),
            numeric_scale: number(&r[6]),
        };
        let json_check = normalize_check(&format!("json_valid({})", quote(&name)));
        let is_json = checks.contains(&json_check);
        let ty = types::from_catalog(&catalog, is_json).map_err(|e| e.in_column(name.clone()))?;
        let extra = text(&r[9]).unwrap_or_default().to_ascii_lowercase();
        let has_default = !matches!(r[8], My::NULL)
            || extra.contains("auto_increment")
            || extra.contains("generated")
            || extra.contains("persistent")
            || extra.contains("virtual");
        columns.push(Column {
            native: if is_json { "json".to_string() } else { catalog.column_type.clone() },
            name,
            ty,
            nullable: text(&r[7]).as_deref() == Some("YES"),
            has_default,
        });
    }
    let keys = fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
         ORDER BY SEQ_IN_INDEX",
        params,
    )
    .await?;
    let primary_key =
        keys.iter().filter(|r| text(&r[0]).as_deref() == Some(table)).filter_map(|r| text(&r[1])).collect();
    Ok(Some(TableSchema { name: table.to_string(), columns, primary_key }))
}

/// A check clause without spaces, in lower case outside identifiers.
fn normalize_check(clause: &str) -> String {
    let mut out = String::with_capacity(clause.len());
    let mut in_ident = false;
    for c in clause.chars() {
        if c == '`' {
            in_ident = !in_ident;
            out.push(c);
        } else if in_ident {
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// What the writer needs to know about a table before it loads it with `LOAD DATA`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadFacts {
    /// Columns whose text must be converted by the server: `uuid` (which parses
    /// text only in a character set, not in the `binary` the file is read in) and
    /// text in a character set other than utf8mb4 (the file's bytes are UTF-8).
    pub converted: Vec<String>,
    /// `year` columns (the text `0` would be the year 2000).
    pub years: Vec<String>,
    /// Foreign keys that reference the table, or triggers on it: a `REPLACE` (delete,
    /// then insert) would cascade to other tables or fire delete triggers.
    pub replace_unsafe: bool,
    /// The table was found (facts about a missing table are not worth keeping).
    pub found: bool,
}

/// The [`LoadFacts`] of a table of `database`.
pub(crate) async fn load_facts(conn: &mut Conn, database: &str, table: &str) -> Result<LoadFacts> {
    let params = vec![param(database), param(table)];
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        params.clone(),
    )
    .await?;
    let mut facts = LoadFacts::default();
    for r in rows.iter().filter(|r| text(&r[0]).as_deref() == Some(table)) {
        facts.found = true;
        let name = text(&r[1]).unwrap_or_default();
        let data_type = text(&r[2]).unwrap_or_default().to_ascii_lowercase();
        let charset = text(&r[3]).map(|c| c.to_ascii_lowercase());
        if data_type == "year" {
            facts.years.push(name);
        } else if data_type == "uuid" || charset.is_some_and(|c| c != "utf8mb4" && c != "binary") {
            facts.converted.push(name);
        }
    }
    // Names compare case-insensitively here: a false match only costs the fast path.
    let dependents = fetch(
        conn,
        "SELECT (SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
                 WHERE UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?) \
              + (SELECT count(*) FROM information_schema.TRIGGERS \
                 WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?)",
        vec![param(database), param(table), param(database), param(table)],
    )
    .await?;
    facts.replace_unsafe = dependents.first().and_then(|r| number(&r[0])).unwrap_or(1) > 0;
    Ok(facts)
}

/// The engine's row estimate; a count when the estimate is missing or zero.
pub(crate) async fn estimate_rows(conn: &mut Conn, database: &str, table: &str) -> Result<u64> {
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        vec![param(database), param(table)],
    )
    .await
    .map_err(|e| e.in_table(table))?;
    let estimate =
        rows.iter().filter(|r| text(&r[0]).as_deref() == Some(table)).find_map(|r| number(&r[1])).unwrap_or(0);
    if estimate > 0 {
        return Ok(estimate);
    }
    let sql = format!("SELECT count(*) FROM {}", quote(table));
    let rows = fetch(conn, &sql, Vec::new()).await.map_err(|e| e.in_table(table))?;
    Ok(rows.first().and_then(|r| number(&r[0])).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_checks_are_recognized() {
        assert_eq!(
            normalize_check("JSON_VALID(`Doc Col`)"),
            normalize_check(&format!("json_valid({})", quote("Doc Col")))
        );
        assert_ne!(normalize_check("json_valid(`a`)"), normalize_check("json_valid(`A`)"));
    }
}
