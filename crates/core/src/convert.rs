//! Fitting a value into a target column: the one place that decides whether a target
//! can hold a value. Nothing is truncated or rounded: a value that does not fit is an
//! error that names the column (the caller adds the table and key).

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Column, ColumnType};
use crate::value::{Decimal, MICROS_PER_DAY, Value, format_uuid, parse_uuid};

/// What a target engine can hold beyond what its column types say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Text may contain a NUL character (PostgreSQL: no).
    pub text_nul: bool,
    /// Floats may be NaN or infinite (MariaDB: no; SQLite: infinities only).
    pub float_nan: bool,
    pub float_infinity: bool,
    /// Floats keep the sign of zero (MariaDB and SQLite store -0.0 as 0).
    pub float_negative_zero: bool,
    /// Decimals may be NaN or infinite (PostgreSQL only).
    pub decimal_special: bool,
    /// Inclusive range of DATE, in days since 1970-01-01.
    pub date_days: (i64, i64),
    /// Inclusive range of TIME, in microseconds.
    pub time_micros: (i64, i64),
    /// Inclusive range of TIMESTAMP and TIMESTAMPTZ, in microseconds since the epoch.
    pub timestamp_micros: (i64, i64),
}

impl Limits {
    /// No limit beyond the column types (useful in tests and for SQLite-like targets).
    pub const NONE: Limits = Limits {
        text_nul: true,
        float_nan: true,
        float_infinity: true,
        float_negative_zero: true,
        decimal_special: true,
        date_days: (i32::MIN as i64, i32::MAX as i64),
        time_micros: (i64::MIN, i64::MAX),
        timestamp_micros: (i64::MIN, i64::MAX),
    };
}

fn range_err(column: &Column, why: impl Into<String>) -> Error {
    Error::new(ErrorKind::ValueRange, why).in_column(column.name.clone())
}

/// Converts `value` into what `column` (a target column) can hold under `limits`,
/// or explains why it cannot.
pub fn fit(value: Value, column: &Column, limits: &Limits) -> Result<Value> {
    use ColumnType as T;
    use Value as V;
    let ty = &column.ty;
    let bad = |why: String| Err(range_err(column, why));
    let mismatch = |v: &Value| {
        Err(Error::new(
            ErrorKind::Schema,
            format!("a {} value cannot be stored in a column of type {}", v.kind_name(), column.native),
        )
        .in_column(column.name.clone()))
    };
    if value.is_null() {
        return if column.nullable {
            Ok(V::Null)
        } else {
            bad(format!("NULL cannot be stored in NOT NULL column of type {}", column.native))
        };
    }
    match ty {
        T::Bool => match value {
            V::Bool(_) => Ok(value),
            V::Int(0) => Ok(V::Bool(false)),
            V::Int(1) => Ok(V::Bool(true)),
            V::Int(i) => bad(format!("integer {i} is not a boolean (0 or 1)")),
            v => mismatch(&v),
        },
        T::Int { bytes, unsigned } => {
            let n: i128 = match &value {
                V::Int(i) => *i as i128,
                V::UInt(u) => *u as i128,
                V::Bool(b) => *b as i128,
                V::Decimal(d) => match d.to_i128() {
                    Some(n) => n,
                    None => return bad(format!("decimal {d} is not an integer")),
                },
                v => return mismatch(v),
            };
            let (lo, hi) = ColumnType::int_range(*bytes, *unsigned);
            if n < lo || n > hi {
                return bad(format!("{n} is out of range for {} ({lo}..{hi})", column.native));
            }
            Ok(if n > i64::MAX as i128 { V::UInt(n as u64) } else { V::Int(n as i64) })
        }
        T::Float32 => {
            let f = match value {
                V::F32(f) => f,
                V::F64(d) => {
                    let f = d as f32;
                    if !(f as f64 == d || d.is_nan()) {
                        return bad(format!("{d:?} cannot be stored in {} without rounding", column.native));
                    }
                    f
                }
                V::Int(i) if i.unsigned_abs() <= 1 << 24 => i as f32,
                v => return mismatch(&v),
            };
            check_float(f as f64, column, limits)?;
            Ok(V::F32(f))
        }
        T::Float64 => {
            let d = match value {
                V::F64(d) => d,
                V::F32(f) => f as f64,
                V::Int(i) if i.unsigned_abs() <= 1 << 53 => i as f64,
                v => return mismatch(&v),
            };
            check_float(d, column, limits)?;
            Ok(V::F64(d))
        }
        T::Decimal { precision, scale } => {
            let d = match value {
                V::Decimal(d) => d,
                V::Int(i) => Decimal::from_i128(i as i128),
                V::UInt(u) => Decimal::from_i128(u as i128),
                v => return mismatch(&v),
            };
            if d.is_special() {
                return if limits.decimal_special {
                    Ok(V::Decimal(d))
                } else {
                    bad(format!("{} cannot hold {d}", column.native))
                };
            }
            let d = match scale {
                Some(s) => match d.with_scale(*s) {
                    Some(d) => d,
                    None => {
                        return bad(format!("{d} has more than {s} decimal places: {} would round it", column.native));
                    }
                },
                None => d,
            };
            if let Some(p) = precision {
                let int_allowed = p.saturating_sub(scale.unwrap_or(0));
                if d.integer_digits() > int_allowed {
                    return bad(format!("{d} is out of range for {}", column.native));
                }
            }
            Ok(V::Decimal(d))
        }
        T::Text { max_chars } => {
            let s = match value {
                V::Text(s) | V::Json(s) => s,
                V::Uuid(u) => format_uuid(&u),
                v @ (V::Decimal(_) | V::Date(_) | V::Time(_) | V::Timestamp(_) | V::TimestampTz(_)) => v.to_string(),
                v => return mismatch(&v),
            };
            if let Some(max) = max_chars {
                // fast path: byte length bounds char count
                if s.len() > *max as usize {
                    let n = s.chars().count();
                    if n > *max as usize {
                        return bad(format!("text of {n} characters is too long for {}", column.native));
                    }
                }
            }
            if !limits.text_nul && s.contains('\0') {
                return bad("text contains a NUL character, which this target cannot store".into());
            }
            Ok(V::Text(s))
        }
        T::Bytes { max_bytes } => {
            let b = match value {
                V::Bytes(b) => b,
                V::Text(s) => s.into_bytes(),
                v => return mismatch(&v),
            };
            if let Some(max) = max_bytes
                && b.len() > *max as usize
            {
                return bad(format!("{} bytes are too long for {}", b.len(), column.native));
            }
            Ok(V::Bytes(b))
        }
        T::Date => match value {
            V::Date(d) => {
                let (lo, hi) = limits.date_days;
                if (d as i64) < lo || (d as i64) > hi {
                    return bad(format!("date {} is out of range for {}", V::Date(d), column.native));
                }
                Ok(V::Date(d))
            }
            v => mismatch(&v),
        },
        T::Time => match value {
            V::Time(t) => {
                let (lo, hi) = limits.time_micros;
                if t < lo || t > hi {
                    return bad(format!("time {} is out of range for {}", V::Time(t), column.native));
                }
                Ok(V::Time(t))
            }
            v => mismatch(&v),
        },
        T::Timestamp | T::TimestampTz => {
            // A timestamp with time zone stored in a column without one is kept in UTC
            // (and the other way round): documented in docs/type-mapping.md.
            let t = match value {
                V::Timestamp(t) | V::TimestampTz(t) => t,
                V::Date(d) => d as i64 * MICROS_PER_DAY,
                v => return mismatch(&v),
            };
            let (lo, hi) = limits.timestamp_micros;
            if t < lo || t > hi {
                return bad(format!("timestamp {} is out of range for {}", V::Timestamp(t), column.native));
            }
            Ok(if *ty == T::Timestamp { V::Timestamp(t) } else { V::TimestampTz(t) })
        }
        T::Json => match value {
            V::Json(s) => Ok(V::Json(s)),
            V::Text(s) => {
                if serde_json::from_str::<serde::de::IgnoredAny>(&s).is_err() {
                    return bad("text is not valid JSON".into());
                }
                Ok(V::Json(s))
            }
            v => mismatch(&v),
        },
        T::Uuid => match value {
            V::Uuid(u) => Ok(V::Uuid(u)),
            V::Text(s) => match parse_uuid(&s) {
                Some(u) => Ok(V::Uuid(u)),
                None => bad("text is not a UUID".into()),
            },
            V::Bytes(b) if b.len() == 16 => Ok(V::Uuid(b.try_into().expect("16 bytes"))),
            v => mismatch(&v),
        },
    }
}

fn check_float(f: f64, column: &Column, limits: &Limits) -> Result<()> {
    if f.is_nan() && !limits.float_nan {
        return Err(range_err(column, format!("NaN cannot be stored in {}", column.native)));
    }
    if f.is_infinite() && !limits.float_infinity {
        return Err(range_err(column, format!("{f} cannot be stored in {}", column.native)));
    }
    if f == 0.0 && f.is_sign_negative() && !limits.float_negative_zero {
        return Err(range_err(column, format!("-0.0 cannot be stored in {}: the target would store 0", column.native)));
    }
    Ok(())
}

/// Whether a source column of type `from` may be copied into an existing target
/// column of type `to` at all (individual values are still checked by [`fit`]).
pub fn compatible(from: &ColumnType, to: &ColumnType) -> bool {
    use ColumnType as T;
    match (from, to) {
        (a, b) if a == b => true,
        (T::Bool, T::Bool | T::Int { .. }) => true,
        (T::Int { .. }, T::Bool | T::Int { .. } | T::Decimal { .. } | T::Float32 | T::Float64) => true,
        (T::Decimal { .. }, T::Decimal { .. } | T::Int { .. }) => true,
        (T::Float32 | T::Float64, T::Float32 | T::Float64) => true,
        (T::Text { .. }, T::Text { .. } | T::Bytes { .. } | T::Json | T::Uuid) => true,
        (T::Json | T::Uuid | T::Decimal { .. }, T::Text { .. }) => true,
        (T::Date | T::Time | T::Timestamp | T::TimestampTz, T::Text { .. }) => true,
        (T::Bytes { .. }, T::Bytes { .. } | T::Uuid) => true,
        (T::Date, T::Date | T::Timestamp | T::TimestampTz) => true,
        (T::Timestamp | T::TimestampTz, T::Timestamp | T::TimestampTz) => true,
        (T::Uuid, T::Uuid) | (T::Json, T::Json) | (T::Time, T::Time) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType) -> Column {
        Column { name: "c".into(), native: ty.to_string(), ty, nullable: true, has_default: false }
    }

    #[test]
    fn integers_out_of_range_are_refused() {
        let c = col(ColumnType::Int { bytes: 1, unsigned: false });
        assert_eq!(fit(Value::Int(127), &c, &Limits::NONE).unwrap(), Value::Int(127));
        let e = fit(Value::Int(128), &c, &Limits::NONE).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange);
        assert_eq!(e.location().column.as_deref(), Some("c"));
        let u = col(ColumnType::Int { bytes: 8, unsigned: true });
        assert_eq!(fit(Value::UInt(u64::MAX), &u, &Limits::NONE).unwrap(), Value::UInt(u64::MAX));
        assert!(fit(Value::Int(-1), &u, &Limits::NONE).is_err());
    }

    #[test]
    fn text_length_counts_characters() {
        let c = col(ColumnType::Text { max_chars: Some(3) });
        assert!(fit(Value::Text("😀😀😀".into()), &c, &Limits::NONE).is_ok());
        assert!(fit(Value::Text("abcd".into()), &c, &Limits::NONE).is_err());
        let no_nul = Limits { text_nul: false, ..Limits::NONE };
        assert!(fit(Value::Text("a\0".into()), &c, &no_nul).is_err());
    }

    #[test]
    fn decimals_are_never_rounded() {
        let c = col(ColumnType::Decimal { precision: Some(5), scale: Some(2) });
        let d = |s| Value::Decimal(Decimal::parse(s).unwrap());
        assert_eq!(fit(d("1.5"), &c, &Limits::NONE).unwrap(), d("1.50"));
        assert!(fit(d("1.555"), &c, &Limits::NONE).is_err());
        assert!(fit(d("1000.00"), &c, &Limits::NONE).is_err());
        assert_eq!(fit(d("999.99"), &c, &Limits::NONE).unwrap(), d("999.99"));
    }

    #[test]
    fn floats_keep_bits_or_fail() {
        let c = col(ColumnType::Float32);
        assert!(fit(Value::F64(0.1), &c, &Limits::NONE).is_err());
        assert_eq!(fit(Value::F64(0.5), &c, &Limits::NONE).unwrap(), Value::F32(0.5));
        let strict = Limits { float_nan: false, float_negative_zero: false, ..Limits::NONE };
        assert!(fit(Value::F64(f64::NAN), &col(ColumnType::Float64), &strict).is_err());
        assert!(fit(Value::F32(-0.0), &col(ColumnType::Float32), &strict).is_err());
        assert_eq!(fit(Value::F64(0.0), &col(ColumnType::Float64), &strict).unwrap(), Value::F64(0.0));
        assert_eq!(fit(Value::F64(-0.0), &col(ColumnType::Float64), &Limits::NONE).unwrap(), Value::F64(-0.0));
    }

    #[test]
    fn null_into_not_null_is_refused() {
        let mut c = col(ColumnType::TEXT);
        c.nullable = false;
        assert!(fit(Value::Null, &c, &Limits::NONE).is_err());
        assert_eq!(fit(Value::Text(String::new()), &c, &Limits::NONE).unwrap(), Value::Text(String::new()));
    }
}
