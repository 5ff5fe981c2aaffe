//! The portable value model: every cell read from any engine becomes a [`Value`].
//!
//! Representations are chosen so that a value survives every engine exactly:
//! decimals are kept as canonical decimal text (never through `f64`), floats compare
//! bit for bit, date and time values are integers (days, microseconds) with no time
//! zone arithmetic hidden inside.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One cell.
///
/// Integers that fit in `i64` are always [`Value::Int`]; [`Value::UInt`] holds only
/// values above `i64::MAX`, so two equal integers always compare equal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Only for values greater than `i64::MAX` (see [`Value::from_u64`]).
    UInt(u64),
    F32(f32),
    F64(f64),
    Decimal(Decimal),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01 (proleptic Gregorian).
    Date(i32),
    /// Microseconds since midnight; MariaDB's TIME may be negative or above 24 hours.
    Time(i64),
    /// Microseconds since 1970-01-01 00:00:00, no time zone.
    Timestamp(i64),
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    TimestampTz(i64),
    /// JSON document as text (not normalized: PostgreSQL `jsonb` reorders keys).
    Json(String),
    Uuid([u8; 16]),
}

impl Value {
    /// An unsigned integer, normalized so that values that fit in `i64` are `Int`.
    pub fn from_u64(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages (never the value itself).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::F32(_) => "float",
            Value::F64(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Timestamp(_) => "timestamp",
            Value::TimestampTz(_) => "timestamptz",
            Value::Json(_) => "json",
            Value::Uuid(_) => "uuid",
        }
    }
}

/// Floats compare bit for bit (so NaN equals the same NaN and `-0.0 != 0.0`): the
/// copy promise is bit-exactness, and this is the equality tests check it with.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (F32(a), F32(b)) => a.to_bits() == b.to_bits(),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b)) => a == b,
            (Text(a), Text(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Time(a), Time(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (TimestampTz(a), TimestampTz(b)) => a == b,
            (Json(a), Json(b)) => a == b,
            (Uuid(a), Uuid(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// Consistent with the bit-for-bit equality above (keys of a sync batch are
/// deduplicated through it).
impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        use Value::*;
        std::mem::discriminant(self).hash(state);
        match self {
            Null => {}
            Bool(v) => v.hash(state),
            Int(v) | Time(v) | Timestamp(v) | TimestampTz(v) => v.hash(state),
            UInt(v) => v.hash(state),
            F32(v) => v.to_bits().hash(state),
            F64(v) => v.to_bits().hash(state),
            Decimal(v) => v.hash(state),
            Text(v) | Json(v) => v.hash(state),
            Bytes(v) => v.hash(state),
            Date(v) => v.hash(state),
            Uuid(v) => v.hash(state),
        }
    }
}

/// Renders a value for humans and for text-based engines (SQLite, SQL literals).
/// Dates, times and timestamps use ISO 8601 with six fractional digits.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::F32(x) => write!(f, "{x:?}"),
            Value::F64(x) => write!(f, "{x:?}"),
            Value::Decimal(d) => f.write_str(d.as_str()),
            Value::Text(s) | Value::Json(s) => f.write_str(s),
            Value::Bytes(b) => {
                f.write_str("\\x")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Value::Date(d) => f.write_str(&format_date(*d)),
            Value::Time(t) => f.write_str(&format_time(*t)),
            Value::Timestamp(t) => f.write_str(&format_timestamp(*t)),
            Value::TimestampTz(t) => write!(f, "{}+00:00", format_timestamp(*t)),
            Value::Uuid(u) => f.write_str(&format_uuid(u)),
        }
    }
}

/// An exact decimal number kept as canonical text: an optional `-`, digits with no
/// leading zeros (but at least one), and an optional `.` followed by the fraction
/// digits (trailing zeros kept: they carry the scale). Also `NaN`, `Infinity`,
/// `-Infinity`, which PostgreSQL's numeric can hold and other engines cannot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Decimal(String);

impl Decimal {
    /// Parses decimal text (optionally with an exponent, as engines print large or
    /// small numbers) into canonical form. Returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Decimal> {
        let t = text.trim();
        match t {
            "NaN" | "nan" => return Some(Decimal("NaN".into())),
            "Infinity" | "inf" | "+Infinity" => return Some(Decimal("Infinity".into())),
            "-Infinity" | "-inf" => return Some(Decimal("-Infinity".into())),
            _ => {}
        }
        let (neg, rest) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
            None => (rest, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits: String = format!("{int_part}{frac_part}");
        // position of the decimal point counted from the left of `digits`
        let mut point = int_part.len() as i64 + exp as i64;
        if point < 0 {
            digits = format!("{}{}", "0".repeat((-point) as usize), digits);
            point = 0;
        }
        if point as usize > digits.len() {
            let pad = point as usize - digits.len();
            digits.push_str(&"0".repeat(pad));
        }
        let (i, f) = digits.split_at(point as usize);
        Some(Self::from_parts(neg, i, f))
    }

    /// [`Decimal::parse`] of owned text, kept without a copy when it is already in
    /// canonical form (as engines send most decimals: `-123.450`, `0.5`).
    pub fn from_text(text: String) -> Option<Decimal> {
        if Self::is_canonical(&text) { Some(Decimal(text)) } else { Self::parse(&text) }
    }

    /// An optional `-` (not before a zero), digits without a leading zero (but at
    /// least one), and optionally a `.` and at least one digit: what `parse` returns
    /// for finite numbers.
    fn is_canonical(text: &str) -> bool {
        let b = text.as_bytes();
        let (neg, digits) = match b.first() {
            Some(b'-') => (true, &b[1..]),
            _ => (false, b),
        };
        let (int, frac) = match digits.iter().position(|&c| c == b'.') {
            Some(i) => (&digits[..i], Some(&digits[i + 1..])),
            None => (digits, None),
        };
        let digits_ok = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
        if !digits_ok(int) || (int.len() > 1 && int[0] == b'0') || frac.is_some_and(|f| !digits_ok(f)) {
            return false;
        }
        let zero = int == b"0" && frac.is_none_or(|f| f.iter().all(|&c| c == b'0'));
        !(neg && zero)
    }

    fn from_parts(neg: bool, int_digits: &str, frac_digits: &str) -> Decimal {
        let int_trim = int_digits.trim_start_matches('0');
        let int_trim = if int_trim.is_empty() { "0" } else { int_trim };
        let is_zero = int_trim == "0" && frac_digits.bytes().all(|b| b == b'0');
        let mut s = String::with_capacity(int_trim.len() + frac_digits.len() + 2);
        if neg && !is_zero {
            s.push('-');
        }
        s.push_str(int_trim);
        if !frac_digits.is_empty() {
            s.push('.');
            s.push_str(frac_digits);
        }
        Decimal(s)
    }

    pub fn from_i128(v: i128) -> Decimal {
        Decimal(v.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for NaN and the infinities.
    pub fn is_special(&self) -> bool {
        matches!(self.0.as_str(), "NaN" | "Infinity" | "-Infinity")
    }

    pub fn is_negative(&self) -> bool {
        self.0.starts_with('-')
    }

    /// Digits before the point (without sign), and after it.
    pub fn parts(&self) -> (&str, &str) {
        let s = self.0.trim_start_matches('-');
        match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        }
    }

    pub fn scale(&self) -> u32 {
        self.parts().1.len() as u32
    }

    /// Number of integer digits (a zero integer part counts as none).
    pub fn integer_digits(&self) -> u32 {
        let (i, _) = self.parts();
        if i == "0" { 0 } else { i.len() as u32 }
    }

    /// The same number with exactly `scale` fraction digits, or `None` when that would
    /// drop a non-zero digit (rounding is never done silently).
    pub fn with_scale(&self, scale: u32) -> Option<Decimal> {
        if self.is_special() {
            return None;
        }
        let (i, f) = self.parts();
        let scale = scale as usize;
        let frac = if f.len() > scale {
            if f[scale..].bytes().any(|b| b != b'0') {
                return None;
            }
            f[..scale].to_string()
        } else {
            format!("{f}{}", "0".repeat(scale - f.len()))
        };
        Some(Self::from_parts(self.is_negative(), i, &frac))
    }

    /// The value as an integer when it has no non-zero fraction digit and fits.
    pub fn to_i128(&self) -> Option<i128> {
        if self.is_special() {
            return None;
        }
        let (i, f) = self.parts();
        if f.bytes().any(|b| b != b'0') || i.len() > 38 {
            return None;
        }
        let v: i128 = i.parse().ok()?;
        Some(if self.is_negative() { -v } else { v })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `HH:MM:SS.ffffff`, with a leading `-` for negative values.
pub fn format_time(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let us = m % 1_000_000;
    let secs = m / 1_000_000;
    format!("{sign}{:02}:{:02}:{:02}.{us:06}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn format_timestamp(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let tod = micros.rem_euclid(MICROS_PER_DAY);
    format!("{} {}", format_date(days as i32), format_time(tod))
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The value of each hex digit, 0xff for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Where the 32 digits of `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` are.
const UUID_DIGITS: [usize; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
    35,
];

/// 32 hex digits, with or without the four hyphens of the usual spelling.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    if b.len() == 36 && b[8] == b'-' && b[13] == b'-' && b[18] == b'-' && b[23] == b'-' {
        // the usual spelling, without a branch per digit
        let mut bad = 0u8;
        for (i, pair) in UUID_DIGITS.chunks_exact(2).enumerate() {
            let (hi, lo) = (HEX[b[pair[0]] as usize], HEX[b[pair[1]] as usize]);
            bad |= hi | lo;
            out[i] = hi << 4 | lo;
        }
        return (bad & 0xf0 == 0).then_some(out);
    }
    if b.len() != 36 && b.len() != 32 {
        return None;
    }
    let mut nibbles = 0usize;
    for &c in b {
        if c == b'-' {
            continue;
        }
        let v = HEX[c as usize];
        if v == 0xff || nibbles == 32 {
            return None;
        }
        out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
        nibbles += 1;
    }
    (nibbles == 32).then_some(out)
}

/// Parses `YYYY-MM-DD` into days since the epoch, checking the calendar.
pub fn parse_date(s: &str) -> Option<i32> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    let y = if neg { -y } else { y };
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

/// Parses `[-]H+:MM[:SS[.ffffff]]` into microseconds. More than six fraction digits
/// are refused (that would be rounding).
pub fn parse_time(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut it = s.splitn(3, ':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let (sec, frac) = match it.next() {
        Some(rest) => match rest.split_once('.') {
            Some((a, b)) => (a.parse::<i64>().ok()?, parse_fraction(b)?),
            None => (rest.parse::<i64>().ok()?, 0),
        },
        None => (0, 0),
    };
    if m > 59 || sec > 59 || h < 0 || m < 0 || sec < 0 {
        return None;
    }
    let v = ((h * 60 + m) * 60 + sec) * MICROS_PER_SECOND + frac;
    Some(if neg { -v } else { v })
}

fn parse_fraction(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    Some(v * 10i64.pow(6 - digits.len() as u32))
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.ffffff][Z|±HH[:MM]]` into microseconds since the
/// epoch, shifted to UTC when an offset is present. The second item tells whether
/// an offset (or `Z`) was present.
pub fn parse_timestamp(s: &str) -> Option<(i64, bool)> {
    let s = s.trim();
    // a leading '-' is a BC year; the date part ends at the first ' ' or 'T' after 8 chars
    let split = s.char_indices().skip(8).find(|(_, c)| *c == ' ' || *c == 'T').map(|(i, _)| i);
    let (date_part, rest) = match split {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, "00:00:00"),
    };
    let days = parse_date(date_part)? as i64;
    let (time_part, offset) = split_offset(rest)?;
    let tod = parse_time(time_part)?;
    if !(0..MICROS_PER_DAY).contains(&tod) {
        return None;
    }
    let local = days * MICROS_PER_DAY + tod;
    match offset {
        Some(off) => Some((local - off, true)),
        None => Some((local, false)),
    }
}

/// Splits a trailing `Z` / `+HH` / `+HH:MM` / `+HHMM` offset off a time string;
/// returns the offset in microseconds.
fn split_offset(s: &str) -> Option<(&str, Option<i64>)> {
    if let Some(t) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((t, Some(0)));
    }
    let Some(pos) = s.rfind(['+', '-']) else {
        return Some((s, None));
    };
    if pos == 0 {
        return Some((s, None));
    }
    let (t, off) = s.split_at(pos);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i64>().ok()?, 0),
        4 => (digits[..2].parse::<i64>().ok()?, digits[2..].parse::<i64>().ok()?),
        _ => return None,
    };
    Some((t.trim_end(), Some(sign * (h * 3600 + m * 60) * MICROS_PER_SECOND)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_canonical_forms() {
        let d = |s| Decimal::parse(s).unwrap().as_str().to_string();
        assert_eq!(d("007.50"), "7.50");
        assert_eq!(d("-0.00"), "0.00");
        assert_eq!(d("+12"), "12");
        assert_eq!(d(".5"), "0.5");
        assert_eq!(d("1.5e3"), "1500");
        assert_eq!(d("1.25E-3"), "0.00125");
        assert_eq!(d("123456789012345678901234567890.123456789"), "123456789012345678901234567890.123456789");
        assert!(Decimal::parse("1.2.3").is_none());
        assert!(Decimal::parse("abc").is_none());
        assert!(Decimal::parse("").is_none());
    }

    #[test]
    fn decimal_rescale_never_rounds() {
        let d = Decimal::parse("12.3").unwrap();
        assert_eq!(d.with_scale(3).unwrap().as_str(), "12.300");
        assert_eq!(Decimal::parse("12.300").unwrap().with_scale(1).unwrap().as_str(), "12.3");
        assert!(Decimal::parse("12.35").unwrap().with_scale(1).is_none());
        assert_eq!(Decimal::parse("-5.5").unwrap().with_scale(0), None);
        assert_eq!(Decimal::parse("-5.0").unwrap().to_i128(), Some(-5));
    }

    #[test]
    fn civil_round_trip_over_a_wide_range() {
        for days in (-800_000i64..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(parse_date("2000-02-29"), Some(10_957 + 59));
        assert_eq!(parse_date("2001-02-29"), None);
    }

    #[test]
    fn timestamps_and_offsets() {
        let (t, tz) = parse_timestamp("2024-03-01 12:34:56.123456").unwrap();
        assert!(!tz);
        assert_eq!(format_timestamp(t), "2024-03-01 12:34:56.123456");
        let (u, tz) = parse_timestamp("2024-03-01T14:34:56.123456+02:00").unwrap();
        assert!(tz);
        assert_eq!(u, t);
        let (z, _) = parse_timestamp("1969-12-31 23:59:59.999999Z").unwrap();
        assert_eq!(z, -1);
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999999");
        assert!(parse_timestamp("2024-03-01 12:34:56.1234567").is_none());
    }

    #[test]
    fn times_and_uuids() {
        assert_eq!(parse_time("-838:59:59.000001"), Some(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 1));
        assert_eq!(format_time(parse_time("24:00:00").unwrap()), "24:00:00.000000");
        let u = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(format_uuid(&u), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    }

    #[test]
    fn owned_decimal_text_is_kept_only_when_canonical() {
        for t in [
            "0",
            "-0",
            "0.0",
            "-0.00",
            "00",
            "01.5",
            "1.",
            ".5",
            "-.5",
            "+1",
            "1e3",
            "1.5E-2",
            "-1",
            "-10.250",
            "123456789012345678901234567890.000000000000000000001",
            "0.000",
            "-0.001",
            "NaN",
            "-Infinity",
            " 1",
            "1 ",
            "",
            "-",
            "1.2.3",
            "1a",
            "٣",
        ] {
            assert_eq!(Decimal::from_text(t.to_string()), Decimal::parse(t), "{t:?}");
        }
    }

    #[test]
    fn uuids_parse_with_or_without_hyphens_and_nothing_else() {
        let u = parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").unwrap();
        assert_eq!(format_uuid(&u), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(parse_uuid("a0eebc999c0b4ef8bb6d6bb9bd380a11"), Some(u));
        // hyphens elsewhere (the general path) still count as separators
        assert_eq!(parse_uuid("a0eebc999c0b-4ef8-bb6d-6bb9-bd380a11"), Some(u));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(parse_uuid(&format_uuid(&all[..16].try_into().unwrap())), Some(all[..16].try_into().unwrap()));
        assert_eq!(parse_uuid(&format_uuid(&[0xff; 16])), Some([0xff; 16]));
        for bad in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "a0eebc99+9c0b-4ef8-bb6d-6bb9bd380a11",
            "+0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a1-",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a-1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd38\u{e9}1",
            "",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn float_equality_is_bitwise() {
        assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
        assert_ne!(Value::F64(0.0), Value::F64(-0.0));
        assert_eq!(Value::from_u64(5), Value::Int(5));
        assert_eq!(Value::from_u64(u64::MAX), Value::UInt(u64::MAX));
    }
}
