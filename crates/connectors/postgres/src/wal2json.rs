//! Decoding the rows of wal2json (`format-version` 2) into [`Decoded`] changes,
//! for PostgreSQL servers where pontoon cannot publish the captured tables (see
//! [`crate::logical::Plugin`]).
//!
//! Every column of a row arrives as JSON; only the key columns are decoded. Numbers
//! arrive unquoted with full precision and are read from the raw JSON text; `bytea`
//! is hex. wal2json prints numeric and float NaN and infinities as `null`: such a key
//! becomes one event per candidate (NaN, Infinity, -Infinity), which is harmless
//! because the syncer re-reads every key.

use std::borrow::Cow;

use pontoon_core::{ColumnType, Decimal, Error, Result, Value};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::logical::{Cell, Col, Decoded, key_value_text, parse_lsn, pg_timestamp};

/// One row of wal2json `format-version` 2 output (the fields pontoon reads).
#[derive(Debug, Deserialize)]
struct Change<'a> {
    action: &'a str,
    #[serde(default)]
    timestamp: Option<&'a str>,
    #[serde(default)]
    nextlsn: Option<&'a str>,
    #[serde(default)]
    xid: Option<u32>,
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    columns: Option<Vec<Column<'a>>>,
    #[serde(borrow, default)]
    identity: Option<Vec<Column<'a>>>,
}

#[derive(Debug, Deserialize)]
struct Column<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// The value's JSON text as wal2json wrote it (numbers keep their precision).
    #[serde(borrow)]
    value: &'a RawValue,
}

fn cols<'a>(columns: &'a Option<Vec<Column<'a>>>) -> Vec<Col<'a>> {
    columns.iter().flatten().map(|c| Col { name: c.name.as_ref(), cell: Cell::Json(c.value) }).collect()
}

/// The action of a row, read from its start (wal2json writes `action` first).
pub(crate) fn action_of(text: &str) -> Option<u8> {
    let rest = text.strip_prefix("{\"action\":\"")?;
    let b = *rest.as_bytes().first()?;
    (rest.as_bytes().get(1) == Some(&b'"')).then_some(b)
}

fn parse_change(text: &str) -> Result<Change<'_>> {
    // serde_json's message can quote input; keep only where it failed
    serde_json::from_str(text).map_err(|e| {
        Error::internal(format!(
            "wal2json sent a row pontoon cannot parse ({:?} error at column {})",
            e.classify(),
            e.column()
        ))
    })
}

/// Decodes one wal2json row and hands the message, if pontoon reads it, to `f`.
pub(crate) fn decode(text: &str, f: impl FnOnce(Decoded<'_>) -> Result<()>) -> Result<()> {
    let change = parse_change(text)?;
    let action = change.action.bytes().next().unwrap_or(b'?');
    let decoded = match action {
        b'B' => {
            let end = change.nextlsn.and_then(parse_lsn).ok_or_else(|| {
                Error::internal("wal2json sent a BEGIN without the commit's LSN (option include-lsn)")
            })?;
            let committed_at_micros = change.timestamp.and_then(|ts| pg_timestamp(ts, true).ok());
            Decoded::Begin { end: Some(end), xid: change.xid, committed_at_micros }
        }
        b'C' => Decoded::Commit { end: None },
        b'I' | b'U' | b'D' | b'T' => {
            let (Some(schema), Some(table)) = (&change.schema, &change.table) else { return Ok(()) };
            Decoded::Change {
                schema,
                table,
                action,
                new: cols(&change.columns),
                old: change.identity.as_ref().map(|_| cols(&change.identity)),
            }
        }
        // logical messages and anything newer
        _ => return Ok(()),
    };
    f(decoded)
}

fn json_string(raw: &str) -> Result<String, String> {
    serde_json::from_str::<String>(raw).map_err(|_| "expected a JSON string".to_string())
}

/// The values a key column may hold given wal2json's JSON text for it, decoded as
/// the reader decodes the binary value of that type.
pub(crate) fn key_values(raw: &str, ty: &ColumnType) -> Result<Vec<Value>, String> {
    let raw = raw.trim();
    if raw == "null" {
        return match ty {
            ColumnType::Decimal { .. } => Ok(["NaN", "Infinity", "-Infinity"]
                .iter()
                .filter_map(|s| Decimal::parse(s))
                .map(Value::Decimal)
                .collect()),
            ColumnType::Float64 => {
                Ok(vec![Value::F64(f64::NAN), Value::F64(f64::INFINITY), Value::F64(f64::NEG_INFINITY)])
            }
            ColumnType::Float32 => {
                Ok(vec![Value::F32(f32::NAN), Value::F32(f32::INFINITY), Value::F32(f32::NEG_INFINITY)])
            }
            _ => Err("the key column is null".into()),
        };
    }
    // numbers and booleans come unquoted, everything else as a JSON string
    let quoted = raw.starts_with('"');
    let bare = matches!(
        ty,
        ColumnType::Bool
            | ColumnType::Int { .. }
            | ColumnType::Float32
            | ColumnType::Float64
            | ColumnType::Decimal { .. }
    );
    if !quoted && !bare {
        return Err("expected a JSON string".into());
    }
    let text = if quoted { Cow::Owned(json_string(raw)?) } else { Cow::Borrowed(raw) };
    key_value_text(&text, ty).map(|v| vec![v])
}
