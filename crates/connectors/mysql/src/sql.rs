//! MariaDB SQL text: identifier quoting, key values as literals, and the `WHERE` of a
//! scan (filter, partition, key range).

use pontoon_core::scan::key_range_sql;
use pontoon_core::value::{format_date, format_time, format_timestamp, format_uuid};
use pontoon_core::{KeyRange, ScanSpec, SelectExpr, SelectItem, Value};

/// A backquoted identifier (backquotes inside are doubled).
pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A string literal: `\`, `'` and NUL escaped. Without an introducer it takes the
/// connection's character set (utf8mb4) and, compared with a column, the column's own
/// collation.
pub(crate) fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A key value as a MariaDB literal. Key values come from the source itself.
pub(crate) fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        // The exact value of the float as a double literal (an exponent makes it a
        // double rather than a decimal): a float column compares equal to it.
        Value::F32(f) => format!("{:e}", *f as f64),
        Value::F64(d) => format!("{d:e}"),
        Value::Decimal(d) => d.as_str().to_string(),
        Value::Text(s) | Value::Json(s) => string_literal(s),
        Value::Bytes(b) => {
            let mut out = String::with_capacity(b.len() * 2 + 3);
            out.push_str("X'");
            for byte in b {
                out.push_str(&format!("{byte:02X}"));
            }
            out.push('\'');
            out
        }
        Value::Date(d) => format!("'{}'", format_date(*d)),
        Value::Time(t) => format!("'{}'", format_time(*t)),
        // The session runs in UTC, so a `timestamp` column compares in UTC too.
        Value::Timestamp(t) | Value::TimestampTz(t) => format!("'{}'", format_timestamp(*t)),
        Value::Uuid(u) => format!("'{}'", format_uuid(u)),
    }
}

/// The select list of a scan: columns backquoted, expressions parenthesized.
pub(crate) fn select_list(items: &[SelectItem]) -> String {
    items
        .iter()
        .map(|item| match &item.expr {
            SelectExpr::Column(c) => quote(c),
            SelectExpr::Sql(e) => format!("({e})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The comma-separated, quoted key columns.
pub(crate) fn key_list(key: &[String]) -> String {
    key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
}

/// ` WHERE ...` for the scan's filter, partition and key range, or an empty string.
pub(crate) fn where_clause(scan: &ScanSpec, range: &KeyRange) -> String {
    let mut conds = scan_conditions(scan);
    if let Some(r) = key_range_sql(&scan.key, range, &|c| quote(c), &literal) {
        conds.push(r);
    }
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
}

/// ` WHERE ...` for the scan's filter and partition and a key among `keys` (each in
/// `scan.key` order): `k IN (1, 2)` or `(a, b) IN ((1, 'x'), (2, 'y'))`, which MariaDB
/// reads through the key's index as ranges. Text keys are compared under the key
/// column's collation, as every other predicate on the column is.
pub(crate) fn keys_where_clause(scan: &ScanSpec, keys: &[Vec<Value>]) -> String {
    let mut conds = scan_conditions(scan);
    let tuple = |key: &Vec<Value>| {
        let items: Vec<String> = key.iter().map(literal).collect();
        if items.len() == 1 { items.into_iter().next().unwrap_or_default() } else { format!("({})", items.join(", ")) }
    };
    let lhs = if scan.key.len() == 1 { quote(&scan.key[0]) } else { format!("({})", key_list(&scan.key)) };
    let list: Vec<String> = keys.iter().map(tuple).collect();
    conds.push(format!("{lhs} IN ({})", list.join(", ")));
    format!(" WHERE {}", conds.join(" AND "))
}

/// The scan's filter and partition as conditions to AND.
fn scan_conditions(scan: &ScanSpec) -> Vec<String> {
    let mut conds = Vec::new();
    if let Some(filter) = &scan.filter {
        conds.push(format!("({filter})"));
    }
    if let Some(p) = &scan.partition {
        conds.push(partition_condition(&p.column, &p.value));
    }
    conds
}

/// `col = value`, or `col IS NULL` for the NULL partition.
fn partition_condition(column: &str, value: &Value) -> String {
    if value.is_null() {
        format!("{} IS NULL", quote(column))
    } else {
        format!("{} = {}", quote(column), literal(value))
    }
}

#[cfg(test)]
mod tests {
    use pontoon_core::{ColumnType, Decimal, PartitionFilter};

    use super::*;

    #[test]
    fn literals() {
        assert_eq!(quote("a`b"), "`a``b`");
        assert_eq!(literal(&Value::Text("it's \\ a\0".into())), r"'it\'s \\ a\0'");
        assert_eq!(literal(&Value::Bytes(vec![0, 0xab])), "X'00AB'");
        assert_eq!(literal(&Value::Int(-3)), "-3");
        assert_eq!(literal(&Value::F64(0.1)), "1e-1");
        assert_eq!(literal(&Value::F32(0.5)), "5e-1");
        assert_eq!(literal(&Value::Date(0)), "'1970-01-01'");
        assert_eq!(literal(&Value::Time(-1)), "'-00:00:00.000001'");
        assert_eq!(literal(&Value::Decimal(Decimal::parse("-1.50").unwrap())), "-1.50");
    }

    #[test]
    fn where_of_a_partitioned_range() {
        let scan = ScanSpec {
            table: "t".into(),
            select: vec![],
            key: vec!["a".into(), "b".into()],
            key_types: vec![ColumnType::I64, ColumnType::TEXT],
            filter: Some("x > 1".into()),
            partition: Some(PartitionFilter { column: "p".into(), value: Value::Null }),
        };
        let range = KeyRange { after: Some(vec![Value::Int(0), Value::Text("q".into())]), upto: None };
        assert_eq!(
            where_clause(&scan, &range),
            " WHERE (x > 1) AND `p` IS NULL AND `a` >= 0 AND ((`a` > 0) OR (`a` = 0 AND `b` > 'q'))"
        );
        assert_eq!(
            keys_where_clause(&scan, &[vec![Value::Int(1), Value::Text("it's".into())], vec![Value::Int(2), t("b")]]),
            " WHERE (x > 1) AND `p` IS NULL AND (`a`, `b`) IN ((1, 'it\\'s'), (2, 'b'))"
        );
        let single = ScanSpec { key: vec!["a".into()], key_types: vec![ColumnType::I64], ..scan.clone() };
        assert_eq!(
            keys_where_clause(&ScanSpec { filter: None, partition: None, ..single }, &[vec![Value::Int(7)]]),
            " WHERE `a` IN (7)"
        );
        assert_eq!(where_clause(&ScanSpec { filter: None, partition: None, ..scan }, &KeyRange::ALL), "");
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }
}
