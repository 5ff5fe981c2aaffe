//! `Reader::checksum`: the row count and an order-independent hash of a key range,
//! computed by the server in one statement (verify's fast path; no rows are sent).
//!
//! ```sql
//! SELECT COUNT(*), SUM(CRC32C(CONCAT_WS(',', <values>))) FROM t WHERE <filter, partition, key range>
//! ```
//!
//! Each row's canonical text is the selected columns' values joined by `,`, each value
//! as text that cannot contain a `,` and cannot be mistaken for a NULL:
//!
//! - NULL is `N` (`IFNULL(..., 'N')`); no value's text is `N`, so NULL differs from
//!   `''`, `0` and the string `NULL`, and `CONCAT_WS` never skips a column;
//! - text, JSON and bytes are their `CRC32C` (a number over the column's bytes): a `,`
//!   inside a value cannot shift the columns (`('a,b', 'c')` is not `('a', 'b,c')`),
//!   and a long value cannot push the row's text past `max_allowed_packet` (which
//!   would turn it into NULL);
//! - `float` and `double` as `CAST(c AS DOUBLE)`, which MariaDB prints as the
//!   shortest text that reads back to the same double (a `float` widens exactly), so
//!   the last bit counts; a `float`'s own text has 6 digits, and a column's text for
//!   `double(M,D)` has D decimals. MariaDB stores `-0` as `0` and no NaN;
//! - everything else (integers, `decimal` with its scale, dates, times and datetimes
//!   with their fraction digits, `uuid`) by `CONCAT(c)`, its text. A `timestamp` is
//!   printed in the session's time zone, which the connector sets to UTC.
//!   (`CONCAT` first: `IFNULL(uuid_column, 'N')` has type `uuid` and turns `'N'`
//!   into NULL.)
//!
//! The row hash is the text's CRC32C (computed by the CPU's instruction: the whole
//! statement costs about what pt-table-checksum's `CRC32` of `CONCAT_WS` costs,
//! where 64 bits of SHA1 cost twice as much). A difference in one row goes unseen
//! only if its CRC32C collides, about once in 2^32, as with pt-table-checksum; rows
//! are summed, not XORed, so equal changes in two rows do not cancel out, and the
//! row hash is not linear in the rows' values, so values traded between rows do not
//! either. The sum is exact (`DECIMAL`) and taken modulo 2^64 here. A statement
//! that raises a warning (a value turned into NULL on the way would have left the
//! hash) is an error, not a checksum.
//!
//! [`Digest::Portable`] is this digest for its column kinds, with text converted to
//! `utf8mb4` first (its CRC32C is then over UTF-8, as pontoon's own is over rows
//! read from another engine).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use pontoon_core::{Checksum, ColumnType, Digest, Error, KeyRange, Result, ScanSpec, SelectExpr, SelectItem};

use crate::error;
use crate::sql::{quote, where_clause};

/// The checksum of the rows of `range` (see the module documentation), or `None`
/// when the digest cannot hash an item.
pub(crate) async fn checksum(
    conn: &mut Conn,
    scan: &ScanSpec,
    range: &KeyRange,
    digest: Digest,
) -> Result<Option<Checksum>> {
    let Some(sql) = checksum_sql(scan, range, digest) else {
        return Ok(None);
    };
    let table = scan.table.as_str();
    let row: Option<(u64, Option<String>)> = conn.query_first(sql).await.map_err(|e| error::map(e).in_table(table))?;
    // A warning could mean a value became NULL on the way (and left the hash):
    // better no checksum than a wrong one.
    let warnings = conn.get_warnings();
    if warnings > 0 {
        return Err(Error::internal(format!("the checksum query raised {warnings} warning(s)")).in_table(table));
    }
    let Some((rows, sum)) = row else {
        return Err(Error::internal("the checksum query returned no row").in_table(table));
    };
    let hash = match sum {
        None => 0,
        Some(sum) => wrap_sum(&sum).ok_or_else(|| {
            Error::internal("the checksum query returned a sum that is not an integer").in_table(table)
        })?,
    };
    Ok(Some(Checksum { rows, hash }))
}

/// `sum` (a non-negative integer in decimal) modulo 2^64.
fn wrap_sum(sum: &str) -> Option<u64> {
    let n: u128 = sum.parse().ok()?;
    Some(n as u64)
}

/// The statement, or `None` when the digest cannot hash an item.
pub(crate) fn checksum_sql(scan: &ScanSpec, range: &KeyRange, digest: Digest) -> Option<String> {
    let text = row_text(&scan.select, digest)?;
    Some(format!("SELECT COUNT(*), SUM(CRC32C({text})) FROM {}{}", quote(&scan.table), where_clause(scan, range)))
}

/// The canonical text of one row.
fn row_text(select: &[SelectItem], digest: Digest) -> Option<String> {
    let mut values = Vec::with_capacity(select.len());
    for item in select {
        let SelectExpr::Column(name) = &item.expr else {
            return None;
        };
        values.push(value_text(&quote(name), &item.ty, digest)?);
    }
    if values.is_empty() {
        return Some("''".into());
    }
    Some(format!("CONCAT_WS(',', {})", values.join(", ")))
}

/// The text of column `c` (quoted) of type `ty`: never NULL, never containing `,`;
/// `None` for a type the digest does not hash.
fn value_text(c: &str, ty: &ColumnType, digest: Digest) -> Option<String> {
    if digest == Digest::Portable && !Digest::portable(ty, ty) {
        return None;
    }
    Some(match ty {
        ColumnType::Text { .. } if digest == Digest::Portable => {
            format!("IFNULL(CRC32C(CONVERT({c} USING utf8mb4)), 'N')")
        }
        ColumnType::Text { .. } | ColumnType::Json | ColumnType::Bytes { .. } => format!("IFNULL(CRC32C({c}), 'N')"),
        ColumnType::Float32 | ColumnType::Float64 => format!("IFNULL(CONCAT(CAST({c} AS DOUBLE)), 'N')"),
        ColumnType::Bool
        | ColumnType::Int { .. }
        | ColumnType::Decimal { .. }
        | ColumnType::Date
        | ColumnType::Time
        | ColumnType::Timestamp
        | ColumnType::TimestampTz
        | ColumnType::Uuid => format!("IFNULL(CONCAT({c}), 'N')"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, ty: ColumnType) -> SelectItem {
        SelectItem { expr: SelectExpr::Column(name.into()), ty }
    }

    #[test]
    fn sums_wrap_modulo_two_to_the_64() {
        assert_eq!(wrap_sum("0"), Some(0));
        assert_eq!(wrap_sum("18446744073709551615"), Some(u64::MAX));
        assert_eq!(wrap_sum("18446744073709551617"), Some(1));
        assert_eq!(wrap_sum("1.5"), None);
    }

    #[test]
    fn rows_are_joined_values() {
        let select = [item("a`", ColumnType::I32), item("b", ColumnType::TEXT), item("c", ColumnType::Float32)];
        assert_eq!(
            row_text(&select, Digest::Native).unwrap(),
            "CONCAT_WS(',', IFNULL(CONCAT(`a```), 'N'), IFNULL(CRC32C(`b`), 'N'), IFNULL(CONCAT(CAST(`c` AS DOUBLE)), 'N'))"
        );
        assert_eq!(row_text(&[], Digest::Native).unwrap(), "''");
        let expr = SelectItem { expr: SelectExpr::Sql("1".into()), ty: ColumnType::I32 };
        assert_eq!(row_text(&[item("a", ColumnType::I32), expr], Digest::Native), None);
    }
}
