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
            My::Bytes(b) => Decimal::from_text(utf8(b)?)
                .map(Value::Decimal)
                .ok_or_else(|| Error::schema("MariaDB returned a malformed decimal")),
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

/// What a target column's native type says beyond its portable type, read once per
/// batch rather than once per value: the checks [`check`] makes and the spellings
/// [`encode_text`] needs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    ty: ColumnType,
    /// The native type, for messages.
    native: String,
    /// `char(n)`: MariaDB drops trailing spaces.
    char_length: Option<u32>,
    /// `binary(n)`: MariaDB pads shorter values with zero bytes.
    binary_length: Option<u32>,
    /// `float(M,D)`, `double(M,D)`: MariaDB rounds to `D` decimals.
    float_decimals: Option<u32>,
    /// Fraction digits of a time, datetime or timestamp column.
    fraction_digits: Option<u32>,
    /// A `year` column: maps 1..99 to 1970..2069, and the text `0` to 2000.
    year: bool,
}

impl Target {
    pub(crate) fn of(column: &Column) -> Target {
        let native = column.native.as_str();
        Target {
            ty: column.ty.clone(),
            native: native.to_string(),
            char_length: types::char_length(native).filter(|n| *n > 0),
            binary_length: types::binary_length(native),
            float_decimals: types::float_decimals(native),
            fraction_digits: types::fractional_digits(native).filter(|d| *d < 6),
            year: types::is_year(native),
        }
    }

    /// Marks the column as a `year` column (known from the catalog when the schema
    /// given to the writer does not spell the native type).
    pub(crate) fn set_year(&mut self) {
        self.year = true;
    }
}

/// Checks what the target's type cannot say in portable terms and MariaDB would change
/// without an error: fraction digits of times and timestamps, trailing spaces in
/// `char(n)`, short values in `binary(n)`, two-digit years, -0.0, floats rounded to a
/// column's decimals.
pub(crate) fn check(v: &Value, target: &Target) -> Result<()> {
    match v {
        Value::Int(i) if target.year && !(*i == 0 || (1901..=2155).contains(i)) => {
            Err(range(format!("{i} is not a year MariaDB's {} holds as it is (0 or 1901..2155)", target.native)))
        }
        Value::UInt(u) if target.year && !(*u == 0 || (1901..=2155).contains(u)) => {
            Err(range(format!("{u} is not a year MariaDB's {} holds as it is (0 or 1901..2155)", target.native)))
        }
        Value::F32(f) => {
            refuse_negative_zero(*f as f64, target)?;
            refuse_float_rounding(*f as f64, target)
        }
        Value::F64(d) => {
            refuse_negative_zero(*d, target)?;
            refuse_float_rounding(*d, target)
        }
        Value::Text(s) if target.char_length.is_some() && s.ends_with(' ') => Err(range(format!(
            "text ending in spaces cannot be stored in {}: MariaDB drops trailing spaces",
            target.native
        ))),
        Value::Bytes(b) if target.binary_length.is_some_and(|n| b.len() < n as usize) => Err(range(format!(
            "{} bytes cannot be stored in {}: MariaDB pads them with zero bytes",
            b.len(),
            target.native
        ))),
        Value::Timestamp(t) | Value::TimestampTz(t) | Value::Time(t) => check_fraction(*t, target),
        _ => Ok(()),
    }
}

/// Encodes a value (already fitted by the engine) as a parameter for the target
/// column, after [`check`].
pub(crate) fn encode(v: &Value, target: &Target) -> Result<My> {
    check(v, target)?;
    encode_key(v, target)
}

/// Encodes a value as a parameter for the target column without [`check`]: for a key
/// to match (a `DELETE ... WHERE key IN (...)`), where a value the column could not
/// hold simply matches no row.
pub(crate) fn encode_key(v: &Value, target: &Target) -> Result<My> {
    Ok(match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(*b as i64),
        Value::Int(i) => match target.ty {
            ColumnType::Float32 => My::Float(*i as f32),
            ColumnType::Float64 => My::Double(*i as f64),
            _ => My::Int(*i),
        },
        Value::UInt(u) => My::UInt(*u),
        Value::F32(f) => match target.ty {
            ColumnType::Float64 => My::Double(*f as f64),
            _ => My::Float(*f),
        },
        Value::F64(d) => My::Double(*d),
        Value::Decimal(d) => My::Bytes(d.as_str().as_bytes().to_vec()),
        Value::Text(s) | Value::Json(s) => My::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Uuid(u) => match target.ty {
            ColumnType::Bytes { .. } => My::Bytes(u.to_vec()),
            _ => My::Bytes(format_uuid(u).into_bytes()),
        },
        Value::Date(d) => {
            let (y, m, day) = calendar(*d as i64)?;
            My::Date(y, m, day, 0, 0, 0, 0)
        }
        Value::Timestamp(t) | Value::TimestampTz(t) => {
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
            let abs = t.unsigned_abs();
            let us = (abs % 1_000_000) as u32;
            let secs = abs / 1_000_000;
            let days = u32::try_from(secs / 86_400).map_err(|_| range("the time is out of range"))?;
            My::Time(*t < 0, days, (secs / 3600 % 24) as u8, (secs / 60 % 60) as u8, (secs % 60) as u8, us)
        }
    })
}

/// Appends a value (already fitted by the engine) to `out` as one field of a
/// `LOAD DATA ... CHARACTER SET binary FIELDS TERMINATED BY '\t' ESCAPED BY '\\'`
/// file, after [`check`]; the caller writes the separators.
///
/// NULL is `\N`; text, JSON and bytes are their bytes with `\`, tab, newline and NUL
/// escaped (so an empty string is an empty field, distinct from NULL); integers and
/// decimals are their digits; booleans 0 or 1; floats the shortest text that parses
/// back to the same double (a `float` column is sent the exact double of its value:
/// the server's parse and rounding to float then give back the same bits); dates,
/// datetimes and times as `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS.ffffff` and
/// `[-]HHH:MM:SS.ffffff`; UUIDs hyphenated (16 bytes for a bytes column). A `year`
/// column gets `0000` for 0 (the text `0` would be the year 2000).
pub(crate) fn encode_text(v: &Value, target: &Target, out: &mut Vec<u8>) -> Result<()> {
    use std::io::Write as _;
    check(v, target)?;
    let finite = match v {
        Value::F32(f) => f.is_finite(),
        Value::F64(d) => d.is_finite(),
        _ => true,
    };
    if !finite {
        // the engine's `fit` refuses them first (MariaDB has no such values)
        return Err(range("NaN and infinity cannot be stored in MariaDB"));
    }
    // Writing to a Vec cannot fail.
    let _ = match v {
        Value::Null => {
            out.extend_from_slice(b"\\N");
            Ok(())
        }
        Value::Int(0) | Value::UInt(0) | Value::Bool(false) if target.year => {
            out.extend_from_slice(b"0000");
            Ok(())
        }
        Value::Bool(b) => {
            out.push(if *b { b'1' } else { b'0' });
            Ok(())
        }
        Value::Int(i) => match target.ty {
            // the rounding the binary protocol's float parameter would make
            ColumnType::Float32 => write_double(out, *i as f32 as f64),
            _ => write!(out, "{i}"),
        },
        Value::UInt(u) => write!(out, "{u}"),
        Value::F32(f) => write_double(out, *f as f64),
        Value::F64(d) => write_double(out, *d),
        Value::Decimal(d) => {
            out.extend_from_slice(d.as_str().as_bytes());
            Ok(())
        }
        Value::Text(s) | Value::Json(s) => {
            escape_into(s.as_bytes(), out);
            Ok(())
        }
        Value::Bytes(b) => {
            escape_into(b, out);
            Ok(())
        }
        Value::Uuid(u) => match target.ty {
            ColumnType::Bytes { .. } => {
                escape_into(u, out);
                Ok(())
            }
            _ => {
                out.extend_from_slice(format_uuid(u).as_bytes());
                Ok(())
            }
        },
        Value::Date(d) => {
            let (y, m, day) = calendar(*d as i64)?;
            write!(out, "{y:04}-{m:02}-{day:02}")
        }
        Value::Timestamp(t) | Value::TimestampTz(t) => {
            let (y, m, d) = calendar(t.div_euclid(MICROS_PER_DAY))?;
            let tod = t.rem_euclid(MICROS_PER_DAY);
            let secs = tod / MICROS_PER_SECOND;
            write!(
                out,
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                tod % MICROS_PER_SECOND
            )
        }
        Value::Time(t) => {
            let sign = if *t < 0 { "-" } else { "" };
            let abs = t.unsigned_abs();
            let secs = abs / 1_000_000;
            write!(out, "{sign}{:02}:{:02}:{:02}.{:06}", secs / 3600, secs / 60 % 60, secs % 60, abs % 1_000_000)
        }
    };
    Ok(())
}

/// The shortest decimal text that parses back to exactly `d` (finite).
fn write_double(out: &mut Vec<u8>, d: f64) -> std::io::Result<()> {
    use std::io::Write as _;
    write!(out, "{d:e}")
}

/// Appends bytes with LOAD DATA's escapes: `\\`, `\t`, `\n` and `\0` for backslash,
/// tab, newline and NUL (the field and line terminators and the escape character;
/// NUL because the server reads `\0` back as NUL either way).
pub(crate) fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len());
    let mut from = 0;
    for (i, b) in bytes.iter().enumerate() {
        let escaped = match b {
            b'\\' => b'\\',
            b'\t' => b't',
            b'\n' => b'n',
            0 => b'0',
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.push(b'\\');
        out.push(escaped);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

/// MariaDB stores -0.0 as 0.0 in `float` and `double` columns (so that a unique
/// index cannot hold both): refuse it rather than change its bits.
fn refuse_negative_zero(f: f64, target: &Target) -> Result<()> {
    if f == 0.0 && f.is_sign_negative() {
        return Err(range(format!("-0.0 cannot be stored in {}: MariaDB would store 0.0", target.native)));
    }
    Ok(())
}

/// MariaDB rounds a value for a `float(M,D)` or `double(M,D)` column to `D` decimals
/// without a warning: refuse a value that rounding would change (the same arithmetic
/// as the server's `truncate_double`).
fn refuse_float_rounding(f: f64, target: &Target) -> Result<()> {
    let Some(dec) = target.float_decimals else {
        return Ok(());
    };
    if !f.is_finite() {
        return Ok(());
    }
    let scale = 10f64.powi(dec as i32);
    let rounded = f.floor() + ((f - f.floor()) * scale).round_ties_even() / scale;
    let stored = if target.ty == ColumnType::Float32 { rounded as f32 as f64 } else { rounded };
    let original = if target.ty == ColumnType::Float32 { f as f32 as f64 } else { f };
    if stored.to_bits() != original.to_bits() {
        return Err(range(format!("{} would round the value to {dec} decimals", target.native)));
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
fn check_fraction(micros: i64, target: &Target) -> Result<()> {
    if let Some(digits) = target.fraction_digits {
        let unit = 10i64.pow(6 - digits);
        if micros.rem_euclid(unit) != 0 {
            return Err(range(format!("the fractional seconds do not fit {} (it would round them)", target.native)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, native: &str) -> Target {
        Target::of(&Column { name: "c".into(), ty, nullable: true, native: native.into(), has_default: false })
    }

    fn text(v: Value, target: &Target) -> String {
        let mut out = Vec::new();
        encode_text(&v, target, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn load_data_fields() {
        let t = col(ColumnType::TEXT, "longtext");
        assert_eq!(text(Value::Null, &t), r"\N");
        assert_eq!(text(Value::Text(String::new()), &t), "");
        assert_eq!(text(Value::Text(r"\N".into()), &t), r"\\N");
        assert_eq!(text(Value::Text("NULL".into()), &t), "NULL");
        assert_eq!(text(Value::Text("a\tb\nc\\d\0e\rf é😀".into()), &t), "a\\tb\\nc\\\\d\\0e\rf é😀");
        let b = col(ColumnType::Bytes { max_bytes: None }, "longblob");
        let mut out = Vec::new();
        encode_text(&Value::Bytes((0..=255u8).collect()), &b, &mut out).unwrap();
        assert_eq!(out.len(), 256 + 4);
        assert_eq!(&out[..3], b"\\0\x01");
        encode_text(&Value::Uuid([b'\n'; 16]), &b, &mut out).unwrap();
        assert!(out.ends_with(&b"\\n".repeat(16)));
        let i = col(ColumnType::I64, "bigint(20)");
        assert_eq!(text(Value::Int(i64::MIN), &i), "-9223372036854775808");
        assert_eq!(text(Value::UInt(u64::MAX), &i), "18446744073709551615");
        assert_eq!(text(Value::Bool(true), &i), "1");
        let year = col(ColumnType::Int { bytes: 2, unsigned: false }, "year(4)");
        assert_eq!(text(Value::Int(0), &year), "0000");
        assert_eq!(text(Value::Int(2024), &year), "2024");
        let d = col(ColumnType::Date, "date");
        assert_eq!(text(Value::Date(0), &d), "1970-01-01");
        let ts = col(ColumnType::Timestamp, "datetime(6)");
        assert_eq!(text(Value::Timestamp(-1), &ts), "1969-12-31 23:59:59.999999");
        let tm = col(ColumnType::Time, "time(6)");
        assert_eq!(text(Value::Time(-((838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999)), &tm), "-838:59:59.999999");
        assert_eq!(text(Value::Time(1), &tm), "00:00:00.000001");
        let u = col(ColumnType::Uuid, "uuid");
        assert_eq!(text(Value::Uuid([0xab; 16]), &u), "abababab-abab-abab-abab-abababababab");
        let mut out = Vec::new();
        assert!(encode_text(&Value::F64(f64::NAN), &col(ColumnType::Float64, "double"), &mut out).is_err());
        assert!(encode_text(&Value::Text("a ".into()), &col(ColumnType::TEXT, "char(5)"), &mut out).is_err());
    }

    #[test]
    fn float_fields_parse_back_exactly() {
        let f64_col = col(ColumnType::Float64, "double");
        for d in [0.1, -f64::from_bits(1), f64::MAX, f64::MIN_POSITIVE, 1e300, 123.456, -0.5, 1.0] {
            let s = text(Value::F64(d), &f64_col);
            assert_eq!(s.parse::<f64>().unwrap().to_bits(), d.to_bits(), "{s}");
        }
        let f32_col = col(ColumnType::Float32, "float");
        for f in [0.1f32, f32::from_bits(1), f32::MAX, -f32::MIN_POSITIVE, 16_777_217.0] {
            let s = text(Value::F32(f), &f32_col);
            assert_eq!((s.parse::<f64>().unwrap() as f32).to_bits(), f.to_bits(), "{s}");
        }
        // an integer for a float column is rounded to float first, as a float parameter would be
        assert_eq!(text(Value::Int(16_777_217), &f32_col), "1.6777216e7");
        assert_eq!(text(Value::Int(16_777_217), &f64_col), "16777217");
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
