//! What a reader is asked to read: a table through the job's mapping, a key range,
//! optionally one partition. Also the SQL shared by the SQL engines to express a
//! key range (keyset pagination over single or composite keys).

use serde::{Deserialize, Serialize};

use crate::schema::{ColumnType, TableSchema};
use crate::value::Value;

pub type Row = Vec<Value>;

/// One output column of a scan, evaluated on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectExpr {
    /// A source column, by name.
    Column(String),
    /// An SQL expression in the source's dialect (from the job file's `sql = ...`).
    Sql(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectItem {
    pub expr: SelectExpr,
    /// The type of the expression on the source: tells the reader how to decode it.
    pub ty: ColumnType,
}

/// Rows of one partition only: `column = value` (or `IS NULL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionFilter {
    pub column: String,
    pub value: Value,
}

/// A read of one source table through the mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanSpec {
    pub table: String,
    /// Output columns, in target column order.
    pub select: Vec<SelectItem>,
    /// Source key columns, in key order. Rows come back ordered by them.
    pub key: Vec<String>,
    /// The source types of the key columns.
    pub key_types: Vec<ColumnType>,
    /// The job's `where` filter, SQL in the source's dialect.
    pub filter: Option<String>,
    pub partition: Option<PartitionFilter>,
}

impl ScanSpec {
    /// A read of every column of `schema`, as its own types, in column order, by `key`
    /// (a key column the schema lacks is read as text), with no filter.
    pub fn every_column(schema: &TableSchema, key: &[String]) -> ScanSpec {
        ScanSpec {
            table: schema.name.clone(),
            select: schema
                .columns
                .iter()
                .map(|c| SelectItem { expr: SelectExpr::Column(c.name.clone()), ty: c.ty.clone() })
                .collect(),
            key: key.to_vec(),
            key_types: key.iter().map(|k| schema.column(k).map_or(ColumnType::TEXT, |c| c.ty.clone())).collect(),
            filter: None,
            partition: None,
        }
    }
}

/// A key range: keys strictly greater than `after` and at most `upto`; `None` is
/// unbounded on that side. Serialized into the state store, so a resumed run reads
/// exactly the chunks the first run planned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KeyRange {
    pub after: Option<Vec<Value>>,
    pub upto: Option<Vec<Value>>,
}

impl KeyRange {
    pub const ALL: KeyRange = KeyRange { after: None, upto: None };
}

/// Builds the predicate `key > after AND key <= upto` over a (composite) key in the
/// expanded lexicographic form every SQL engine understands:
/// `(a > 1) OR (a = 1 AND b > 2)`. Returns `None` when the range is unbounded.
///
/// `quote` quotes an identifier, `literal` renders a key value as a literal of the
/// engine (key values come from the source itself, never from user input).
pub fn key_range_sql(
    key: &[String],
    range: &KeyRange,
    quote: &dyn Fn(&str) -> String,
    literal: &dyn Fn(&Value) -> String,
) -> Option<String> {
    let cols: Vec<String> = key.iter().map(|k| quote(k)).collect();
    let mut parts = Vec::new();
    // With a composite key, a redundant bound on the first column comes first: it is
    // implied by the lexicographic form, but it lets every engine read one index range
    // (SQLite otherwise merges an index search per OR branch and sorts the result).
    let composite = cols.len() > 1;
    if let Some(after) = &range.after {
        if composite {
            parts.push(format!("{} >= {}", cols[0], literal(&after[0])));
        }
        parts.push(lexicographic(&cols, after, ">", literal));
    }
    if let Some(upto) = &range.upto {
        if composite {
            parts.push(format!("{} <= {}", cols[0], literal(&upto[0])));
        }
        parts.push(lexicographic_inclusive(&cols, upto, literal));
    }
    if parts.is_empty() { None } else { Some(parts.join(" AND ")) }
}

/// `(c1 op v1) OR (c1 = v1 AND c2 op v2) OR ...`
fn lexicographic(cols: &[String], vals: &[Value], op: &str, literal: &dyn Fn(&Value) -> String) -> String {
    let mut ors = Vec::with_capacity(cols.len());
    for i in 0..cols.len() {
        let mut ands: Vec<String> = (0..i).map(|j| format!("{} = {}", cols[j], literal(&vals[j]))).collect();
        ands.push(format!("{} {op} {}", cols[i], literal(&vals[i])));
        ors.push(ands.join(" AND "));
    }
    if ors.len() == 1 { ors.pop().unwrap_or_default() } else { format!("(({}))", ors.join(") OR (")) }
}

/// `key <= vals`: strictly less on some prefix, or equal on all.
fn lexicographic_inclusive(cols: &[String], vals: &[Value], literal: &dyn Fn(&Value) -> String) -> String {
    if cols.len() == 1 {
        return format!("{} <= {}", cols[0], literal(&vals[0]));
    }
    let less = lexicographic(cols, vals, "<", literal);
    let equal: Vec<String> = cols.iter().zip(vals).map(|(c, v)| format!("{c} = {}", literal(v))).collect();
    format!("({less} OR ({}))", equal.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_range_sql() {
        let key = vec!["a".to_string(), "b".to_string()];
        let range = KeyRange {
            after: Some(vec![Value::Int(1), Value::Int(-2)]),
            upto: Some(vec![Value::Int(3), Value::Int(0)]),
        };
        let sql = key_range_sql(&key, &range, &|c| format!("\"{c}\""), &|v| v.to_string()).unwrap();
        assert_eq!(
            sql,
            "\"a\" >= 1 AND ((\"a\" > 1) OR (\"a\" = 1 AND \"b\" > -2)) AND \"a\" <= 3 AND \
             (((\"a\" < 3) OR (\"a\" = 3 AND \"b\" < 0)) OR (\"a\" = 3 AND \"b\" = 0))"
        );
        assert_eq!(key_range_sql(&key, &KeyRange::ALL, &|c| c.to_string(), &|v| v.to_string()), None);
        let single = KeyRange { after: None, upto: Some(vec![Value::Int(0)]) };
        assert_eq!(key_range_sql(&key[..1], &single, &|c| c.to_string(), &|v| v.to_string()).unwrap(), "a <= 0");
    }
}
