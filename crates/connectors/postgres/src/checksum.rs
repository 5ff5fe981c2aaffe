//! `Reader::checksum`: the row count and an order-independent hash of a key range,
//! computed by the server in one statement (verify's fast path; no rows are sent).
//!
//! ```sql
//! SELECT count(*), sum(<row hash>)::text FROM t WHERE <filter, partition, key range>
//! ```
//!
//! The row hash chains PostgreSQL's 64-bit seeded hash functions over the selected
//! columns in order: each column is hashed with the previous column's hash as its
//! seed, so the position of every value counts and no separator can be shifted
//! (there is no text to split). The sum of the row hashes (exact: `sum(int8)` is a
//! numeric) is taken modulo 2^64 here. A sum, not an XOR: two rows that agree in
//! every selected column add up instead of cancelling out.
//!
//! Each value is hashed so that the hash changes whenever the value's bits do:
//!
//! - NULL is hashed as the type's zero or `''` with a marker XORed into the seed,
//!   so it differs from `''`, `0` and the string `NULL`;
//! - `int2`/`int4` and `bool` by `hashint8extended`; an `int8` in two 32-bit halves,
//!   because `hashint8extended` folds the high half into the low one
//!   (`hashint8extended(1)` = `hashint8extended(4294967296)`);
//! - `float4`/`float8` by their hash functions, which hash the IEEE bits, plus a
//!   marker for `-0` (those functions hash `-0` as `0`), mixed once more because they
//!   return the seed itself for a zero; every NaN is one value to PostgreSQL
//!   (`'NaN'::float8` is always the same bits) and hashes alike;
//! - `uuid` by its bytes;
//! - everything else by its text under `COLLATE "C"` (so the hash is over the bytes,
//!   whatever the column's collation): `numeric` keeps its scale (`1.50` and `1.5`
//!   differ: they are different values to `numeric_out` and to the scan), `bytea` in
//!   hex (independent of `bytea_output`), `json` as stored and `jsonb` as printed,
//!   `date`/`time`/`timestamp` in the session's ISO `DateStyle` (the session
//!   sets it), `timestamptz` converted to UTC first (independent of `TimeZone`).
//!   (PostgreSQL's hash functions for these types are not injective:
//!   `hash_numeric` ignores the scale, `timestamp_hash` and `time_hash` fold 64 bits
//!   into 32 as `hashint8extended` does.)
//!
//! Two databases of the same server encoding holding the same values give the same
//! checksum; text hashes over the bytes of the server encoding.
//!
//! There is no [`Digest::Portable`] checksum here: PostgreSQL has no CRC32C, and its
//! `md5` of the row text costs about five times this checksum (9 s against 1.5 s for
//! 5M rows), more than reading the rows and hashing them in pontoon.

use pontoon_core::{Checksum, ColumnType, Digest, Error, KeyRange, Result, ScanSpec, SelectExpr, SelectItem, Value};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::errors::pg_error;
use crate::sql::{quote_ident, scan_conditions, where_clause};

/// XORed into a column's seed when the value is NULL.
const NULL_MARK: i64 = 0x5bd1_e995_2f7c_3a61;
/// XORed into a float column's seed when the value is `-0`.
const NEGATIVE_ZERO_MARK: i64 = 0x27d4_eb2f_1656_67c5;

/// The checksum of the rows of `range` (see the module documentation), or `None`
/// when the scan selects an SQL expression or a column the digest cannot hash.
pub(crate) async fn checksum(
    client: &Client,
    scan: &ScanSpec,
    range: &KeyRange,
    digest: Digest,
) -> Result<Option<Checksum>> {
    let Some(sql) = checksum_sql(scan, range, digest) else {
        return Ok(None);
    };
    let table = scan.table.as_str();
    let what = "computing a checksum";
    let messages = client.simple_query(&sql).await.map_err(|e| pg_error(e, what).in_table(table))?;
    let Some(row) = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    }) else {
        return Err(Error::internal("the checksum query returned no row").in_table(table));
    };
    let rows = row.get(0).and_then(|n| n.parse::<u64>().ok());
    let Some(rows) = rows else {
        return Err(Error::internal("the checksum query returned no row count").in_table(table));
    };
    let hash = match row.get(1) {
        None => 0,
        Some(sum) => wrap_sum(sum).ok_or_else(|| {
            Error::internal("the checksum query returned a sum that is not an integer").in_table(table)
        })?,
    };
    Ok(Some(Checksum { rows, hash }))
}

/// The checksums of the ranges that `bounds` split the scan into (see
/// `Reader::checksum_ranges`), in one scan of the table: each row's range is
/// `width_bucket` of its key among the bounds plus one (so a key equal to a bound
/// falls in the range that bound ends). Only for one integer key column. The planner
/// expects a group per key, so for this statement sorting is off (it would sort the
/// table on disk instead of hashing a few hundred groups) and parallel plans cost
/// nothing extra (it would not split the hashing between workers): 553 ms -> 334 ms
/// for 1M rows. JIT compilation is off: it costs each of the three processes a few
/// hundred milliseconds and saves less on one pass of simple expressions.
pub(crate) async fn checksum_ranges(
    client: &Client,
    scan: &ScanSpec,
    bounds: &[Vec<Value>],
    digest: Digest,
) -> Result<Option<Vec<Checksum>>> {
    let Some(sql) = checksum_ranges_sql(scan, bounds, digest) else {
        return Ok(None);
    };
    let table = scan.table.as_str();
    let what = "computing checksums of key ranges";
    let messages = client
        .simple_query(&format!(
            "BEGIN; SET LOCAL enable_sort = off; SET LOCAL jit = off; SET LOCAL parallel_setup_cost = 0; \
             SET LOCAL parallel_tuple_cost = 0; {sql}; COMMIT"
        ))
        .await
        .map_err(|e| pg_error(e, what).in_table(table))?;
    let mut out = vec![Checksum { rows: 0, hash: 0 }; bounds.len() + 1];
    for m in &messages {
        let SimpleQueryMessage::Row(row) = m else { continue };
        let bucket = row.get(0).and_then(|b| b.parse::<usize>().ok()).filter(|b| *b < out.len());
        let rows = row.get(1).and_then(|n| n.parse::<u64>().ok());
        let hash = row.get(2).map(wrap_sum).unwrap_or(Some(0));
        let (Some(bucket), Some(rows), Some(hash)) = (bucket, rows, hash) else {
            return Err(Error::internal("the range checksum query returned a row pontoon cannot read").in_table(table));
        };
        out[bucket] = Checksum { rows, hash };
    }
    Ok(Some(out))
}

/// The statement of [`checksum_ranges`], or `None` when the key is not one integer
/// column or the digest cannot hash an item.
pub(crate) fn checksum_ranges_sql(scan: &ScanSpec, bounds: &[Vec<Value>], digest: Digest) -> Option<String> {
    let ([key], [ColumnType::Int { .. }]) = (scan.key.as_slice(), scan.key_types.as_slice()) else {
        return None;
    };
    // `width_bucket` counts the thresholds <= key; the range of a key counts the
    // bounds < key, that is the thresholds bound + 1 <= key
    let mut thresholds = Vec::with_capacity(bounds.len());
    for b in bounds {
        match b.as_slice() {
            [Value::Int(i)] if *i < i64::MAX => thresholds.push((i + 1).to_string()),
            _ => return None,
        }
    }
    let hash = row_hash(&scan.select, digest)?;
    Some(format!(
        "SELECT width_bucket({}::int8, '{{{}}}'::int8[]), count(*), sum({hash})::text FROM {}{} GROUP BY 1",
        quote_ident(key),
        thresholds.join(","),
        quote_ident(&scan.table),
        where_clause(&scan_conditions(scan, &KeyRange::ALL))
    ))
}

/// `sum` (an integer in decimal, possibly negative) modulo 2^64.
fn wrap_sum(sum: &str) -> Option<u64> {
    let n: i128 = sum.parse().ok()?;
    Some(n as u64)
}

/// The statement, or `None` when the digest cannot hash an item.
pub(crate) fn checksum_sql(scan: &ScanSpec, range: &KeyRange, digest: Digest) -> Option<String> {
    let hash = row_hash(&scan.select, digest)?;
    Some(format!(
        "SELECT count(*), sum({hash})::text FROM {}{}",
        quote_ident(&scan.table),
        where_clause(&scan_conditions(scan, range))
    ))
}

/// The 64-bit hash of one row, or `None` when the digest is not [`Digest::Native`]
/// or an item is an SQL expression: [`record_hash`] where every column's type allows
/// it, else the column hashes chained through their seeds.
fn row_hash(select: &[SelectItem], digest: Digest) -> Option<String> {
    if digest != Digest::Native {
        return None;
    }
    let mut columns = Vec::with_capacity(select.len());
    for item in select {
        let SelectExpr::Column(name) = &item.expr else {
            return None;
        };
        columns.push((quote_ident(name), &item.ty));
    }
    if !columns.is_empty() && columns.iter().all(|(_, ty)| record_hashable(ty)) {
        return Some(record_hash(&columns));
    }
    let mut hash = String::from("0::int8");
    for (c, ty) in &columns {
        hash = column_hash(c, ty, &hash);
    }
    Some(hash)
}

/// Types whose PostgreSQL hash function tells every two values apart (but for a
/// 2^-64 collision): 32-bit and narrower integers, bools and dates by a 32-bit
/// hash, text (under `COLLATE "C"`: its bytes), bytes and UUIDs by their bytes. Not
/// `int8`, `timestamp` and `time` (their 64 bits are folded into 32), floats (`-0`
/// hashes as `0`), `numeric` (the scale is not hashed), JSON.
fn record_hashable(ty: &ColumnType) -> bool {
    match ty {
        ColumnType::Int { bytes, unsigned: false } => *bytes <= 4,
        ColumnType::Bool | ColumnType::Date | ColumnType::Text { .. } | ColumnType::Bytes { .. } | ColumnType::Uuid => {
            true
        }
        _ => false,
    }
}

/// The row hash for [`record_hashable`] columns: `hash_record_extended` of the
/// columns (each value by its type's hash function, combined by position; NULL
/// hashes as 0), one function call instead of one per column. Its combination is
/// linear in the values' hashes, so rows that trade values in a column would sum
/// alike: the row's hash is mixed once more, as the text of the number (an `int8`
/// hash folds 64 bits into 32, and the record hash must be computed once).
fn record_hash(columns: &[(String, &ColumnType)]) -> String {
    let values: Vec<String> = columns
        .iter()
        .map(|(c, ty)| if matches!(ty, ColumnType::Text { .. }) { format!("{c} COLLATE \"C\"") } else { c.clone() })
        .collect();
    format!("hashtextextended(hash_record_extended(ROW({}), 0)::text, 0)", values.join(", "))
}

/// The hash of column `c` (quoted) of type `ty`, seeded with `seed`.
fn column_hash(c: &str, ty: &ColumnType, seed: &str) -> String {
    let seed = format!("{seed} # CASE WHEN {c} IS NULL THEN {NULL_MARK}::int8 ELSE 0 END");
    let text = |expr: String| format!("hashtextextended(coalesce({expr}, '') COLLATE \"C\", {seed})");
    match ty {
        ColumnType::Bool => format!("hashint8extended(coalesce({c}::int4, 0), {seed})"),
        ColumnType::Int { bytes, unsigned: false } if *bytes <= 4 => {
            format!("hashint8extended(coalesce({c}::int8, 0), {seed})")
        }
        // `hashint8extended` is injective on the int4 range only: hash both halves
        ColumnType::Int { .. } => format!(
            "hashint8extended(coalesce({c}::int8 & 4294967295, 0), hashint8extended(coalesce({c}::int8 >> 32, 0), {seed}))"
        ),
        ColumnType::Float32 | ColumnType::Float64 => {
            let f = if *ty == ColumnType::Float32 { "hashfloat4extended" } else { "hashfloat8extended" };
            // `hashfloat8extended(0, seed)` returns the seed itself: mix it once more,
            // or two neighbouring zeros would let their NULL markers trade places
            format!(
                "hashtextextended('' COLLATE \"C\", {f}(coalesce({c}, 0), {seed} # CASE WHEN {c} = 0 AND {c}::text = '-0' \
                 THEN {NEGATIVE_ZERO_MARK}::int8 ELSE 0 END))"
            )
        }
        ColumnType::Uuid => {
            format!("uuid_hash_extended(coalesce({c}, '00000000-0000-0000-0000-000000000000'::uuid), {seed})")
        }
        ColumnType::Bytes { .. } => text(format!("encode({c}, 'hex')")),
        ColumnType::TimestampTz => text(format!("({c} AT TIME ZONE 'UTC')::text")),
        ColumnType::Decimal { .. }
        | ColumnType::Text { .. }
        | ColumnType::Json
        | ColumnType::Date
        | ColumnType::Time
        | ColumnType::Timestamp => text(format!("{c}::text")),
    }
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
        assert_eq!(wrap_sum("-1"), Some(u64::MAX));
        assert_eq!(wrap_sum("18446744073709551617"), Some(1));
        assert_eq!(wrap_sum("-9223372036854775808000000"), Some((-9_223_372_036_854_775_808_000_000i128) as u64));
        assert_eq!(wrap_sum("1.5"), None);
    }

    #[test]
    fn expressions_give_no_statement() {
        let scan = ScanSpec {
            table: "t".into(),
            select: vec![
                item("id", ColumnType::I64),
                SelectItem { expr: SelectExpr::Sql("1".into()), ty: ColumnType::I32 },
            ],
            key: vec!["id".into()],
            key_types: vec![ColumnType::I64],
            filter: None,
            partition: None,
        };
        assert_eq!(checksum_sql(&scan, &KeyRange::ALL, Digest::Native), None);
        assert_eq!(checksum_sql(&scan, &KeyRange::ALL, Digest::Portable), None);
    }

    #[test]
    fn columns_chain_their_seeds() {
        let select = [item("a", ColumnType::Float64), item("b\"", ColumnType::TEXT)];
        let hash = row_hash(&select, Digest::Native).unwrap();
        assert_eq!(
            hash,
            format!(
                "hashtextextended(coalesce(\"b\"\"\"::text, '') COLLATE \"C\", \
                 hashtextextended('' COLLATE \"C\", hashfloat8extended(coalesce(\"a\", 0), 0::int8 # CASE WHEN \"a\" IS NULL \
                 THEN {NULL_MARK}::int8 ELSE 0 END # CASE WHEN \"a\" = 0 AND \"a\"::text = '-0' THEN {NEGATIVE_ZERO_MARK}::int8 \
                 ELSE 0 END)) # CASE WHEN \"b\"\"\" IS NULL THEN {NULL_MARK}::int8 ELSE 0 END)"
            )
        );
    }

    #[test]
    fn narrow_types_hash_as_one_record() {
        let select = [item("a", ColumnType::I32), item("b", ColumnType::TEXT), item("c", ColumnType::Uuid)];
        assert_eq!(
            row_hash(&select, Digest::Native).unwrap(),
            "hashtextextended(hash_record_extended(ROW(\"a\", \"b\" COLLATE \"C\", \"c\"), 0)::text, 0)"
        );
        // one wide integer and the columns chain their hashes
        let with_int8 = [item("a", ColumnType::I64), item("b", ColumnType::TEXT)];
        assert!(!row_hash(&with_int8, Digest::Native).unwrap().contains("hash_record_extended"));
    }
}
