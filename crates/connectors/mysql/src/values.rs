//! Cells both ways: `mysql_async` binary-protocol values decoded into portable
//! [`Value`]s by source column type, and portable values encoded as statement
//! parameters by target column type. Errors name no value (the caller adds the column).

use mysql_async::Value as My;
use pontoon_core::value::{
    MICROS_PER_DAY, MICROS_PER_SECOND, civil_from_days, days_from_civil, format_uuid, parse_uuid,
};
use pontoon_core::{Column, ColumnType, Decimal, Error, ErrorKind, Result, Value};

use crate::types;

fn range(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ValueRange, message)
}

fn wire_kind(v: &My) -> &'static str {
    match v {
        My::NULL => "NULL",
        My::Bytes(_) => "string",
        My::Int(_) => "integer",
        My::UInt(_) => "unsigned integer",
        My::Float(_) => "float",
        My::Double(_) => "double",
        My::Date(..) => "date/time",
        My::Time(..) => "time",
    }
}

fn mismatch(v: &My, ty: &ColumnType) -> Error {
    Error::schema(format!("MariaDB returned a {} value for a column read as {ty}", wire_kind(v)))
}

fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| range("the text is not valid UTF-8"))
}

/// Decodes one binary-protocol cell read from a column of source type `ty`.
pub(crate) fn decode(v: My, ty: &ColumnType) -> Result<Value> {
    if let My::NULL = v {
        return Ok(Value::Null);
    }
    match ty {
        ColumnType::Bool => match v {
            My::Int(0) | My::UInt(0) => Ok(Value::Bool(false)),
            My::Int(1) | My::UInt(1) => Ok(Value::Bool(true)),
            My::Int(i) => Err(range(format!("{i} is not a boolean (0 or 1)"))),
            My::UInt(u) => Err(range(format!("{u} is not a boolean (0 or 1)"))),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Int { .. } => match v {
            My::Int(i) => Ok(Value::Int(i)),
            My::UInt(u) => Ok(Value::from_u64(u)),
            My::Bytes(b) => {
                let s = utf8(b)?;
                if let Ok(i) = s.parse::<i64>() {
                    Ok(Value::Int(i))
                } else if let Ok(u) = s.parse::<u64>() {
                    Ok(Value::from_u64(u))
                } else {
                    Err(Error::schema(format!(
                        "MariaDB returned a string that is not an integer for a column read as {ty}"
                    )))
                }
            }
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Float32 => match v {
            My::Float(f) => Ok(Value::F32(f)),
            My::Double(d) if (d as f32) as f64 == d || d.is_nan() => Ok(Value::F32(d as f32)),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Float64 => match v {
            My::Double(d) => Ok(Value::F64(d)),
            My::Float(f) => Ok(Value::F64(f as f64)),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Decimal { .. } => match v {
            My::Bytes(b) => {
                let s = utf8(b)?;
                Decimal::parse(&s)
                    .map(Value::Decimal)
                    .ok_or_else(|| Error::schema("MariaDB returned a malformed decimal"))
            }
            My::Int(i) => Ok(Value::Decimal(Decimal::from_i128(i as i128))),
            My::UInt(u) => Ok(Value::Decimal(Decimal::from_i128(u as i128))),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Text { .. } => match v {
            My::Bytes(b) => Ok(Value::Text(utf8(b)?)),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Json => match v {
            My::Bytes(b) => Ok(Value::Json(utf8(b)?)),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Bytes { .. } => match v {
            My::Bytes(b) => Ok(Value::Bytes(b)),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Uuid => match v {
            My::Bytes(b) if b.len() == 16 => Ok(Value::Uuid(b.try_into().expect("16 bytes"))),
            My::Bytes(b) => {
                let s = utf8(b)?;
                parse_uuid(&s).map(Value::Uuid).ok_or_else(|| range("the value is not a UUID"))
            }
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Date => match v {
            My::Date(y, m, d, 0, 0, 0, 0) => {
                let days = civil_days(y, m, d)?;
                i32::try_from(days).map(Value::Date).map_err(|_| range("the date is out of range"))
            }
            My::Date(..) => Err(range("a date with a time of day")),
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => match v {
            My::Date(y, m, d, h, mi, s, us) => {
                let days = civil_days(y, m, d)?;
                if h > 23 || mi > 59 || s > 59 || us > 999_999 {
                    return Err(range("the time of day is invalid"));
                }
                let micros = days * MICROS_PER_DAY
                    + ((h as i64 * 60 + mi as i64) * 60 + s as i64) * MICROS_PER_SECOND
                    + us as i64;
                Ok(if *ty == ColumnType::Timestamp { Value::Timestamp(micros) } else { Value::TimestampTz(micros) })
            }
            v => Err(mismatch(&v, ty)),
        },
        ColumnType::Time => match v {
            My::Time(neg, days, h, m, s, us) => {
                let micros =
                    (((days as i64 * 24 + h as i64) * 60 + m as i64) * 60 + s as i64) * MICROS_PER_SECOND + us as i64;
                Ok(Value::Time(if neg { -micros } else { micros }))
            }
            v => Err(mismatch(&v, ty)),
        },
    }
}

/// Days since 1970 of a calendar date read from MariaDB, refusing zero dates
/// (`0000-00-00`, `2024-00-10`) and dates that do not exist (`2024-02-30`).
fn civil_days(y: u16, m: u8, d: u8) -> Result<i64> {
    if m == 0 || d == 0 {
        return Err(range("a zero date (0000-00-00 or a zero month or day) has no portable value"));
    }
    let days = days_from_civil(y as i64, m as u32, d as u32);
    if m > 12 || civil_from_days(days) != (y as i64, m as u32, d as u32) {
        return Err(range("the date does not exist in the calendar"));
    }
    Ok(days)
}

/// Encodes a value (already fitted by the engine) as a parameter for `column` of
/// the target table. Checks what the target's type cannot say in portable terms:
/// fraction digits of times and timestamps, trailing spaces in `char(n)`.
pub(crate) fn encode(v: &Value, column: &Column) -> Result<My> {
    Ok(match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(*b as i64),
        Value::Int(i) => {
            if types::is_year(&column.native) && !(*i == 0 || (1901..=2155).contains(i)) {
                return Err(range(format!(
                    "{i} is not a year MariaDB's {} holds as it is (0 or 1901..2155)",
                    column.native
                )));
            }
            match column.ty {
                ColumnType::Float32 => My::Float(*i as f32),
                ColumnType::Float64 => My::Double(*i as f64),
                _ => My::Int(*i),
            }
        }
        Value::UInt(u) => My::UInt(*u),
        Value::F32(f) => {
            refuse_negative_zero(*f as f64, column)?;
            refuse_float_rounding(*f as f64, column)?;
            match column.ty {
                ColumnType::Float64 => My::Double(*f as f64),
                _ => My::Float(*f),
            }
        }
        Value::F64(d) => {
            refuse_negative_zero(*d, column)?;
            refuse_float_rounding(*d, column)?;
            My::Double(*d)
        }
        Value::Decimal(d) => My::Bytes(d.as_str().as_bytes().to_vec()),
        Value::Text(s) => {
            if let Some(n) = types::char_length(&column.native)
                && n > 0
                && s.ends_with(' ')
            {
                return Err(range(format!(
                    "text ending in spaces cannot be stored in {}: MariaDB drops trailing spaces",
                    column.native
                )));
            }
            My::Bytes(s.as_bytes().to_vec())
        }
        Value::Json(s) => My::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => {
            if let Some(n) = types::binary_length(&column.native)
                && b.len() < n as usize
            {
                return Err(range(format!(
                    "{} bytes cannot be stored in {}: MariaDB pads them with zero bytes",
                    b.len(),
                    column.native
                )));
            }
            My::Bytes(b.clone())
        }
        Value::Uuid(u) => match column.ty {
            ColumnType::Bytes { .. } => My::Bytes(u.to_vec()),
            _ => My::Bytes(format_uuid(u).into_bytes()),
        },
        Value::Date(d) => {
            let (y, m, day) = calendar(*d as i64)?;
            My::Date(y, m, day, 0, 0, 0, 0)
        }
        Value::Timestamp(t) | Value::TimestampTz(t) => {
            check_fraction(*t, column)?;
            let days = t.div_euclid(MICROS_PER_DAY);
            let tod = t.rem_euclid(MICROS_PER_DAY);
            let (y, m, d) = calendar(days)?;
            let secs = tod / MICROS_PER_SECOND;
            My::Date(
                y,
                m,
                d,
                (secs / 3600) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (tod % MICROS_PER_SECOND) as u32,
            )
        }
        Value::Time(t) => {
            check_fraction(*t, column)?;
            let abs = t.unsigned_abs();
            let us = (abs % 1_000_000) as u32;
            let secs = abs / 1_000_000;
            let days = u32::try_from(secs / 86_400).map_err(|_| range("the time is out of range"))?;
            My::Time(*t < 0, days, (secs / 3600 % 24) as u8, (secs / 60 % 60) as u8, (secs % 60) as u8, us)
        }
    })
}

/// MariaDB stores -0.0 as 0.0 in `float` and `double` columns (so that a unique
/// index cannot hold both): refuse it rather than change its bits.
fn refuse_negative_zero(f: f64, column: &Column) -> Result<()> {
    if f == 0.0 && f.is_sign_negative() {
        return Err(range(format!("-0.0 cannot be stored in {}: MariaDB would store 0.0", column.native)));
    }
    Ok(())
}

/// MariaDB rounds a value for a `float(M,D)` or `double(M,D)` column to `D` decimals
/// without a warning: refuse a value that rounding would change (the same arithmetic
/// as the server's `truncate_double`).
fn refuse_float_rounding(f: f64, column: &Column) -> Result<()> {
    let Some(dec) = types::float_decimals(&column.native) else {
        return Ok(());
    };
    if !f.is_finite() {
        return Ok(());
    }
    let scale = 10f64.powi(dec as i32);
    let rounded = f.floor() + ((f - f.floor()) * scale).round_ties_even() / scale;
    let stored = if column.ty == ColumnType::Float32 { rounded as f32 as f64 } else { rounded };
    let original = if column.ty == ColumnType::Float32 { f as f32 as f64 } else { f };
    if stored.to_bits() != original.to_bits() {
        return Err(range(format!("{} would round the value to {dec} decimals", column.native)));
    }
    Ok(())
}

fn calendar(days: i64) -> Result<(u16, u8, u8)> {
    let (y, m, d) = civil_from_days(days);
    let y = u16::try_from(y).map_err(|_| range("the year is out of range for MariaDB"))?;
    Ok((y, m as u8, d as u8))
}

/// MariaDB rounds fractional seconds beyond a column's precision without a warning:
/// refuse a value whose fraction the target column cannot hold.
fn check_fraction(micros: i64, column: &Column) -> Result<()> {
    if let Some(digits) = types::fractional_digits(&column.native)
        && digits < 6
    {
        let unit = 10i64.pow(6 - digits);
        if micros.rem_euclid(unit) != 0 {
            return Err(range(format!("the fractional seconds do not fit {} (it would round them)", column.native)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, native: &str) -> Column {
        Column { name: "c".into(), ty, nullable: true, native: native.into(), has_default: false }
    }

    #[test]
    fn times_round_trip() {
        let c = col(ColumnType::Time, "time(6)");
        for t in [
            0i64,
            -1,
            (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999,
            -((838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999),
            25 * 3600 * 1_000_000 + 5,
        ] {
            let w = encode(&Value::Time(t), &c).unwrap();
            assert_eq!(decode(w, &ColumnType::Time).unwrap(), Value::Time(t), "{t}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let c = col(ColumnType::Timestamp, "datetime(6)");
        for t in [0i64, -1, 253_402_300_799_999_999, -30_610_224_000_000_000] {
            let w = encode(&Value::Timestamp(t), &c).unwrap();
            assert_eq!(decode(w, &ColumnType::Timestamp).unwrap(), Value::Timestamp(t));
        }
        let coarse = col(ColumnType::Timestamp, "datetime(3)");
        assert!(encode(&Value::Timestamp(1_000), &coarse).is_ok());
        assert!(encode(&Value::Timestamp(1_001), &coarse).is_err());
    }

    #[test]
    fn bad_cells_are_refused() {
        assert_eq!(decode(My::Int(2), &ColumnType::Bool).unwrap_err().kind(), ErrorKind::ValueRange);
        assert!(decode(My::Date(0, 0, 0, 0, 0, 0, 0), &ColumnType::Date).is_err());
        assert!(decode(My::Date(2023, 2, 29, 0, 0, 0, 0), &ColumnType::Date).is_err());
        assert!(decode(My::Bytes(vec![0xff]), &ColumnType::TEXT).is_err());
        assert!(encode(&Value::Text("a ".into()), &col(ColumnType::Text { max_chars: Some(5) }, "char(5)")).is_err());
        let b16 = col(ColumnType::Bytes { max_bytes: Some(16) }, "binary(16)");
        assert!(encode(&Value::Bytes(vec![1; 16]), &b16).is_ok());
        assert!(encode(&Value::Bytes(vec![1; 15]), &b16).is_err());
        let year = col(ColumnType::Int { bytes: 2, unsigned: false }, "year(4)");
        assert!(encode(&Value::Int(2024), &year).is_ok());
        assert!(encode(&Value::Int(0), &year).is_ok());
        assert!(encode(&Value::Int(99), &year).is_err());
        let fixed = col(ColumnType::Float64, "double(10,2)");
        assert!(encode(&Value::F64(1.25), &fixed).is_ok());
        assert!(encode(&Value::F64(1.255), &fixed).is_err());
        let fixed32 = col(ColumnType::Float32, "float(7,3)");
        assert!(encode(&Value::F32(0.5), &fixed32).is_ok());
        assert!(encode(&Value::F32(0.1234), &fixed32).is_err());
    }
}
