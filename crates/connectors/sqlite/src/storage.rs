//! Portable values <-> SQLite's storage classes (NULL, INTEGER, REAL, TEXT, BLOB).
//!
//! One storage form per portable value, used both to write rows and to bind key values
//! in range predicates, so that comparisons in SQL meet values as they are stored:
//! booleans are the integers 0/1, decimals canonical text, dates, times and timestamps
//! ISO 8601 text with six fraction digits (`+00:00` for `timestamptz`), UUIDs
//! hyphenated lower-case text. Reading accepts that form and the other forms SQLite's
//! affinities produce from it (a `DECIMAL(10,2)` column turns `'12.30'` into the real
//! `12.3`), decoding by the column's declared type.

use std::borrow::Cow;

use pontoon_core::value::{
    format_date, format_time, format_timestamp, format_uuid, parse_date, parse_time, parse_timestamp, parse_uuid,
};
use pontoon_core::{ColumnType, Decimal, Error, ErrorKind, Result, Value};
use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};

/// A value in the form SQLite stores it, ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stored<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(&'a [u8]),
}

impl ToSql for Stored<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Stored::Null => ValueRef::Null,
            Stored::Integer(i) => ValueRef::Integer(*i),
            Stored::Real(f) => ValueRef::Real(*f),
            Stored::Text(s) => ValueRef::Text(s.as_bytes()),
            Stored::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn range(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ValueRange, message)
}

/// The storage form of `value`. Fails (without naming the column; the caller does)
/// for what SQLite cannot hold: integers above `i64::MAX` and NaN, which SQLite would
/// silently store as NULL.
pub(crate) fn encode(value: &Value) -> Result<Stored<'_>> {
    Ok(match value {
        Value::Null => Stored::Null,
        Value::Bool(b) => Stored::Integer(i64::from(*b)),
        Value::Int(i) => Stored::Integer(*i),
        Value::UInt(_) => {
            return Err(range("SQLite cannot hold an integer above 9223372036854775807"));
        }
        Value::F32(f) => real(f64::from(*f))?,
        Value::F64(f) => real(*f)?,
        Value::Decimal(d) => Stored::Text(Cow::Borrowed(d.as_str())),
        Value::Text(s) | Value::Json(s) => Stored::Text(Cow::Borrowed(s)),
        Value::Bytes(b) => Stored::Blob(b),
        Value::Date(d) => Stored::Text(Cow::Owned(format_date(*d))),
        Value::Time(t) => Stored::Text(Cow::Owned(format_time(*t))),
        Value::Timestamp(t) => Stored::Text(Cow::Owned(format_timestamp(*t))),
        Value::TimestampTz(t) => Stored::Text(Cow::Owned(format!("{}+00:00", format_timestamp(*t)))),
        Value::Uuid(u) => Stored::Text(Cow::Owned(format_uuid(u))),
    })
}

fn real(f: f64) -> Result<Stored<'static>> {
    if f.is_nan() {
        return Err(range("SQLite cannot hold NaN (it would store NULL)"));
    }
    Ok(Stored::Real(f))
}

/// The name of a storage class, for messages.
fn class(v: &ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

/// Text of a real as Rust's shortest round-trip form (`0.1`, `1.0`, `1e300`).
fn real_text(f: f64) -> String {
    format!("{f:?}")
}

fn utf8<'a>(bytes: &'a [u8], ty: &ColumnType) -> Result<&'a str> {
    std::str::from_utf8(bytes)
        .map_err(|_| range(format!("a TEXT value that is not valid UTF-8 cannot be read as {ty}")))
}

/// Decodes one stored cell as a value of the column's portable type `ty`. Errors are
/// `ValueRange` errors without a column (the caller adds it) and never show the value.
pub(crate) fn decode(v: ValueRef<'_>, ty: &ColumnType) -> Result<Value> {
    use ValueRef as R;
    if let R::Null = v {
        return Ok(Value::Null);
    }
    let cannot = |v: &ValueRef<'_>| Err(range(format!("a {} value cannot be read as {ty}", class(v))));
    match ty {
        ColumnType::Bool => match v {
            R::Integer(0) => Ok(Value::Bool(false)),
            R::Integer(1) => Ok(Value::Bool(true)),
            _ => {
                Err(range(format!("a {} value is not a boolean (SQLite booleans are the integers 0 and 1)", class(&v))))
            }
        },
        ColumnType::Int { bytes, unsigned } => match v {
            R::Integer(i) => {
                let (lo, hi) = ColumnType::int_range(*bytes, *unsigned);
                if (lo..=hi).contains(&i128::from(i)) {
                    Ok(Value::Int(i))
                } else {
                    Err(range(format!("an integer out of range for {ty} ({lo}..{hi})")))
                }
            }
            other => Err(range(format!("a {} value is not an integer ({ty})", class(&other)))),
        },
        ColumnType::Float32 => {
            let f = match v {
                R::Real(f) => f,
                R::Integer(i) => {
                    exact_int_as_f64(i).ok_or_else(|| range("an INTEGER value that float32 cannot hold exactly"))?
                }
                other => return cannot(&other),
            };
            let narrow = f as f32;
            if f64::from(narrow).to_bits() == f.to_bits() {
                Ok(Value::F32(narrow))
            } else {
                Err(range("a REAL value that float32 cannot hold exactly"))
            }
        }
        ColumnType::Float64 => match v {
            R::Real(f) => Ok(Value::F64(f)),
            R::Integer(i) => exact_int_as_f64(i)
                .map(Value::F64)
                .ok_or_else(|| range("an INTEGER value that float64 cannot hold exactly")),
            other => cannot(&other),
        },
        ColumnType::Decimal { scale, .. } => {
            let d = match v {
                R::Text(b) => Decimal::parse(utf8(b, ty)?)
                    .ok_or_else(|| range(format!("a TEXT value that is not a decimal number ({ty})")))?,
                R::Integer(i) => Decimal::from_i128(i128::from(i)),
                // A NUMERIC-affinity column (`DECIMAL(10,2)`) stores '12.30' as 12.3:
                // the shortest text of the double, rescaled to the declared scale.
                R::Real(f) => Decimal::parse(&format!("{f}"))
                    .ok_or_else(|| range(format!("a REAL value that is not a decimal number ({ty})")))?,
                other => return cannot(&other),
            };
            match scale {
                Some(s) if !d.is_special() => d
                    .with_scale(*s)
                    .map(Value::Decimal)
                    .ok_or_else(|| range(format!("a decimal with more than {s} fraction digits ({ty})"))),
                _ => Ok(Value::Decimal(d)),
            }
        }
        ColumnType::Text { .. } => match v {
            R::Text(b) => Ok(Value::Text(utf8(b, ty)?.to_string())),
            R::Integer(i) => Ok(Value::Text(i.to_string())),
            R::Real(f) => Ok(Value::Text(real_text(f))),
            other => cannot(&other),
        },
        ColumnType::Bytes { .. } => match v {
            R::Blob(b) | R::Text(b) => Ok(Value::Bytes(b.to_vec())),
            other => cannot(&other),
        },
        ColumnType::Date => match v {
            R::Text(b) => parse_date(utf8(b, ty)?)
                .map(Value::Date)
                .ok_or_else(|| range("a TEXT value that is not a date (YYYY-MM-DD)")),
            other => cannot(&other),
        },
        ColumnType::Time => match v {
            R::Text(b) => parse_time(utf8(b, ty)?)
                .map(Value::Time)
                .ok_or_else(|| range("a TEXT value that is not a time (HH:MM:SS.ffffff)")),
            other => cannot(&other),
        },
        // Text with an offset in a column without time zone is taken in UTC, as
        // SQLite's own date functions do.
        ColumnType::Timestamp => match v {
            R::Text(b) => parse_timestamp(utf8(b, ty)?)
                .map(|(t, _)| Value::Timestamp(t))
                .ok_or_else(|| range("a TEXT value that is not a timestamp (YYYY-MM-DD HH:MM:SS.ffffff)")),
            other => cannot(&other),
        },
        ColumnType::TimestampTz => match v {
            R::Text(b) => match parse_timestamp(utf8(b, ty)?) {
                Some((t, true)) => Ok(Value::TimestampTz(t)),
                Some((_, false)) => Err(range("a timestamp without a UTC offset cannot be read as timestamptz")),
                None => {
                    Err(range("a TEXT value that is not a timestamp with offset (YYYY-MM-DD HH:MM:SS.ffffff+00:00)"))
                }
            },
            other => cannot(&other),
        },
        ColumnType::Json => match v {
            R::Text(b) => Ok(Value::Json(utf8(b, ty)?.to_string())),
            R::Integer(i) => Ok(Value::Json(i.to_string())),
            R::Real(f) => Ok(Value::Json(real_text(f))),
            other => cannot(&other),
        },
        ColumnType::Uuid => match v {
            R::Text(b) => {
                parse_uuid(utf8(b, ty)?).map(Value::Uuid).ok_or_else(|| range("a TEXT value that is not a UUID"))
            }
            R::Blob(b) => <[u8; 16]>::try_from(b)
                .map(Value::Uuid)
                .map_err(|_| range("a BLOB value that is not 16 bytes cannot be read as uuid")),
            other => cannot(&other),
        },
    }
}

/// `i` as a double when the conversion is exact.
fn exact_int_as_f64(i: i64) -> Option<f64> {
    let f = i as f64;
    (f as i128 == i128::from(i)).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(p: u32, s: u32) -> ColumnType {
        ColumnType::Decimal { precision: Some(p), scale: Some(s) }
    }

    #[test]
    fn numeric_affinity_decimals_get_their_scale_back() {
        let d = |s| Value::Decimal(Decimal::parse(s).unwrap());
        assert_eq!(decode(ValueRef::Real(12.3), &dec(10, 2)).unwrap(), d("12.30"));
        assert_eq!(decode(ValueRef::Integer(12), &dec(10, 2)).unwrap(), d("12.00"));
        assert_eq!(decode(ValueRef::Real(1e-7), &dec(10, 7)).unwrap(), d("0.0000001"));
        assert_eq!(
            decode(ValueRef::Text(b"NaN"), &dec(10, 2)).unwrap(),
            Value::Decimal(Decimal::parse("NaN").unwrap())
        );
        assert!(decode(ValueRef::Real(0.125), &dec(10, 2)).is_err());
    }

    #[test]
    fn integers_are_range_checked() {
        let u8t = ColumnType::Int { bytes: 1, unsigned: true };
        assert_eq!(decode(ValueRef::Integer(255), &u8t).unwrap(), Value::Int(255));
        assert!(decode(ValueRef::Integer(256), &u8t).is_err());
        assert!(decode(ValueRef::Integer(-1), &u8t).is_err());
        assert!(decode(ValueRef::Real(1.0), &u8t).is_err());
        assert_eq!(decode(ValueRef::Integer(1 << 53), &ColumnType::Float64).unwrap(), Value::F64(9007199254740992.0));
        assert!(decode(ValueRef::Integer(i64::MAX), &ColumnType::Float64).is_err());
        assert!(decode(ValueRef::Real(0.1), &ColumnType::Float32).is_err());
    }

    #[test]
    fn storage_forms() {
        assert_eq!(encode(&Value::TimestampTz(-1)).unwrap(), Stored::Text("1969-12-31 23:59:59.999999+00:00".into()));
        assert_eq!(encode(&Value::Bool(true)).unwrap(), Stored::Integer(1));
        assert!(encode(&Value::F64(f64::NAN)).is_err());
        assert!(encode(&Value::UInt(u64::MAX)).is_err());
    }
}
