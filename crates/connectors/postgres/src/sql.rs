//! SQL text: identifier quoting, key value literals, and the WHERE clause of a scan
//! (filter, partition, key range).
//!
//! Literals are only ever made from key and partition values read from the source
//! itself; sessions run with `standard_conforming_strings = on`, so a string literal
//! only needs its quotes doubled.

use pontoon_core::scan::key_range_sql;
use pontoon_core::value::MICROS_PER_DAY;
use pontoon_core::value::{civil_from_days, format_time, format_uuid};
use pontoon_core::{KeyRange, ScanSpec, SelectExpr, Value};

/// `"name"`, with embedded double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded single quotes doubled.
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A date as PostgreSQL reads it: `YYYY-MM-DD`, with ` BC` for years before 1 AD
/// (the value model counts years astronomically: year 0 is 1 BC).
fn date_text(days: i64) -> (String, &'static str) {
    let (y, m, d) = civil_from_days(days);
    if y <= 0 { (format!("{:04}-{m:02}-{d:02}", 1 - y), " BC") } else { (format!("{y:04}-{m:02}-{d:02}"), "") }
}

fn timestamp_text(micros: i64, zone: &str) -> String {
    let (date, era) = date_text(micros.div_euclid(MICROS_PER_DAY));
    let time = format_time(micros.rem_euclid(MICROS_PER_DAY));
    format!("{date} {time}{zone}{era}")
}

fn float_literal(x: f64, shown: String, ty: &str) -> String {
    if x.is_nan() {
        format!("'NaN'::{ty}")
    } else if x.is_infinite() {
        format!("'{}Infinity'::{ty}", if x < 0.0 { "-" } else { "" })
    } else {
        format!("'{shown}'::{ty}")
    }
}

/// A value as an SQL literal of the matching PostgreSQL type.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        // `-9223372036854775808` would lex as minus a numeric
        Value::Int(i64::MIN) => "'-9223372036854775808'::int8".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::F32(x) => float_literal(*x as f64, format!("{x:?}"), "float4"),
        Value::F64(x) => float_literal(*x, format!("{x:?}"), "float8"),
        Value::Decimal(d) => format!("'{d}'::numeric"),
        Value::Text(s) | Value::Json(s) => quote_string(s),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 * b.len() + 12);
            s.push_str("'\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s.push_str("'::bytea");
            s
        }
        Value::Date(d) => {
            let (date, era) = date_text(*d as i64);
            format!("'{date}{era}'::date")
        }
        Value::Time(t) => format!("'{}'::time", format_time(*t)),
        Value::Timestamp(t) => format!("'{}'::timestamp", timestamp_text(*t, "")),
        Value::TimestampTz(t) => format!("'{}'::timestamptz", timestamp_text(*t, "+00")),
        Value::Uuid(u) => format!("'{}'::uuid", format_uuid(u)),
    }
}

/// ` WHERE a AND b`, or nothing when there is no condition.
pub fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) }
}

/// The conditions of a scan: the job's filter (parenthesized), the partition, and
/// the key range.
pub fn scan_conditions(scan: &ScanSpec, range: &KeyRange) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(filter) = &scan.filter {
        conditions.push(format!("({filter})"));
    }
    if let Some(p) = &scan.partition {
        if p.value.is_null() {
            conditions.push(format!("{} IS NULL", quote_ident(&p.column)));
        } else {
            conditions.push(format!("{} = {}", quote_ident(&p.column), literal(&p.value)));
        }
    }
    if let Some(r) = key_range_sql(&scan.key, range, &quote_ident, &literal) {
        conditions.push(r);
    }
    conditions
}

/// `key IN (...)` over a (composite) key: `"k" IN (1, 2)` or
/// `("a", "b") IN ((1, 'x'), (2, 'y'))`. Literals of key values read from the source
/// are typed ([`literal`]) or left for the server to type by the column (text), so
/// the condition can use the key's index. Each key must have one value per column.
pub fn key_in_sql(key: &[String], keys: &[Vec<Value>]) -> String {
    let tuples: Vec<String> = keys
        .iter()
        .map(|k| {
            let values: Vec<String> = k.iter().map(literal).collect();
            if key.len() == 1 { values.join(", ") } else { format!("({})", values.join(", ")) }
        })
        .collect();
    if key.len() == 1 {
        format!("{} IN ({})", quote_ident(&key[0]), tuples.join(", "))
    } else {
        format!("({}) IN ({})", column_list(key), tuples.join(", "))
    }
}

/// `"k1", "k2"`.
pub fn column_list(names: &[String]) -> String {
    names.iter().map(|n| quote_ident(n)).collect::<Vec<_>>().join(", ")
}

/// One output column of a scan.
pub fn select_expr(expr: &SelectExpr) -> String {
    match expr {
        SelectExpr::Column(name) => quote_ident(name),
        SelectExpr::Sql(sql) => format!("({sql})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pontoon_core::value::{days_from_civil, parse_uuid};

    #[test]
    fn identifiers_and_strings_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(literal(&Value::Text("it's".into())), "'it''s'");
        assert_eq!(literal(&Value::Text(r"a\b".into())), r"'a\b'");
    }

    #[test]
    fn literals_have_types() {
        assert_eq!(literal(&Value::Int(-5)), "-5");
        assert_eq!(literal(&Value::Int(i64::MIN)), "'-9223372036854775808'::int8");
        assert_eq!(literal(&Value::Bytes(vec![0, 255])), r"'\x00ff'::bytea");
        assert_eq!(literal(&Value::Date(days_from_civil(-43, 3, 15) as i32)), "'0044-03-15 BC'::date");
        assert_eq!(literal(&Value::Date(0)), "'1970-01-01'::date");
        assert_eq!(literal(&Value::TimestampTz(-1)), "'1969-12-31 23:59:59.999999+00'::timestamptz");
        assert_eq!(
            literal(&Value::Timestamp(days_from_civil(0, 1, 1) * MICROS_PER_DAY)),
            "'0001-01-01 00:00:00.000000 BC'::timestamp"
        );
        assert_eq!(literal(&Value::F64(f64::NEG_INFINITY)), "'-Infinity'::float8");
        assert_eq!(literal(&Value::F32(0.1)), "'0.1'::float4");
        let u = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(literal(&Value::Uuid(u)), "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid");
    }

    #[test]
    fn key_sets_are_in_lists() {
        let one = vec!["id".to_string()];
        assert_eq!(key_in_sql(&one, &[vec![Value::Int(1)], vec![Value::Int(2)]]), r#""id" IN (1, 2)"#);
        let two = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            key_in_sql(&two, &[vec![Value::Text("x'y".into()), Value::Int(1)]]),
            r#"("a", "b") IN (('x''y', 1))"#
        );
    }
}
