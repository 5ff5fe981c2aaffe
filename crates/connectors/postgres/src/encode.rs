//! Encoding [`Value`]s in PostgreSQL's binary format for the target column's actual
//! type, for binary `COPY`.
//!
//! [`Param`] pairs a value with its [`TargetColumn`]. Besides the encoding it checks
//! what PostgreSQL itself would silently change: a numeric with more fraction digits
//! than the column's scale, a time or timestamp finer than the column's precision
//! (both would be rounded), a `char(n)` value longer than `n` (trailing spaces would
//! be cut). Every error names the column and never shows the value.

use std::error::Error as StdError;
use std::fmt;

use bytes::{BufMut, BytesMut};
use pontoon_core::{Decimal, Error, ErrorKind, Result, Value};
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::{PG_EPOCH_OFFSET_DAYS, PG_EPOCH_OFFSET_MICROS};

/// A column of a target table as the writer encodes for it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetColumn {
    pub name: String,
    /// The wire type (`pg_attribute.atttypid`).
    pub ty: Type,
    /// `pg_attribute.atttypmod`: length, precision/scale, or -1.
    pub typmod: i32,
    /// `format_type(atttypid, atttypmod)`, for messages.
    pub native: String,
}

impl TargetColumn {
    fn range_error(&self, message: String) -> Error {
        Error::new(ErrorKind::ValueRange, message).in_column(self.name.clone())
    }

    /// The scale of a `numeric(p,s)` column, `None` when unconstrained.
    fn numeric_scale(&self) -> Option<i32> {
        if self.typmod < 4 {
            return None;
        }
        let s = (self.typmod - 4) & 0x7ff;
        Some((s ^ 1024) - 1024)
    }

    /// The fractional-second digits of a time or timestamp column (6 by default).
    fn time_precision(&self) -> u32 {
        match self.typmod {
            p @ 0..=5 => p as u32,
            _ => 6,
        }
    }

    /// `n` of `varchar(n)` / `char(n)`.
    fn max_chars(&self) -> Option<usize> {
        (self.typmod >= 4).then(|| (self.typmod - 4) as usize)
    }
}

/// A value to be sent as a parameter or COPY field of a [`TargetColumn`].
pub struct Param<'a> {
    pub value: &'a Value,
    pub column: &'a TargetColumn,
}

/// Never shows the value (it is someone's data).
impl fmt::Debug for Param<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Param({} for {})", self.value.kind_name(), self.column.name)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        encode(self.value, self.column, out).map_err(|e| Box::new(e) as _)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.to_sql(ty, out)
    }
}

/// Encodes `value` for `column`; NULL is [`IsNull::Yes`].
pub fn encode(value: &Value, column: &TargetColumn, out: &mut BytesMut) -> Result<IsNull> {
    use Value as V;
    let ty = &column.ty;
    let mismatch = || {
        Error::new(
            ErrorKind::Schema,
            format!("a {} value cannot be written to a column of type {}", value.kind_name(), column.native),
        )
        .in_column(column.name.clone())
    };
    let out_of_range = || column.range_error(format!("integer out of range for {}", column.native));
    match value {
        V::Null => return Ok(IsNull::Yes),
        V::Bool(b) if *ty == Type::BOOL => out.put_u8(*b as u8),
        V::Int(i) => match *ty {
            Type::INT2 => out.put_i16(i16::try_from(*i).map_err(|_| out_of_range())?),
            Type::INT4 => out.put_i32(i32::try_from(*i).map_err(|_| out_of_range())?),
            Type::INT8 => out.put_i64(*i),
            Type::NUMERIC => encode_numeric(&Decimal::from_i128(*i as i128), column, out)?,
            _ => return Err(mismatch()),
        },
        V::UInt(u) => match *ty {
            Type::INT2 | Type::INT4 | Type::INT8 => return Err(out_of_range()),
            Type::NUMERIC => encode_numeric(&Decimal::from_i128(*u as i128), column, out)?,
            _ => return Err(mismatch()),
        },
        V::Decimal(d) if *ty == Type::NUMERIC => encode_numeric(d, column, out)?,
        V::F32(f) => match *ty {
            Type::FLOAT4 => out.put_f32(*f),
            Type::FLOAT8 => out.put_f64(*f as f64),
            _ => return Err(mismatch()),
        },
        V::F64(f) if *ty == Type::FLOAT8 => out.put_f64(*f),
        V::Text(s) | V::Json(s) => match *ty {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                if s.as_bytes().contains(&0) {
                    return Err(
                        column.range_error("text contains a NUL character, which PostgreSQL cannot store".into())
                    );
                }
                if let Some(max) = column.max_chars()
                    && s.len() > max
                    && s.chars().count() > max
                {
                    return Err(column.range_error(format!(
                        "text of {} characters is too long for {}",
                        s.chars().count(),
                        column.native
                    )));
                }
                out.put_slice(s.as_bytes());
            }
            Type::JSON => out.put_slice(s.as_bytes()),
            Type::JSONB => {
                out.put_u8(1);
                out.put_slice(s.as_bytes());
            }
            _ => return Err(mismatch()),
        },
        V::Bytes(b) if *ty == Type::BYTEA => out.put_slice(b),
        V::Date(d) if *ty == Type::DATE => {
            out.put_i32(
                d.checked_sub(PG_EPOCH_OFFSET_DAYS)
                    .ok_or_else(|| column.range_error(format!("date out of range for {}", column.native)))?,
            );
        }
        V::Time(t) if *ty == Type::TIME => {
            check_precision(*t, column)?;
            out.put_i64(*t);
        }
        V::Timestamp(t) | V::TimestampTz(t) if *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ => {
            check_precision(*t, column)?;
            out.put_i64(
                t.checked_sub(PG_EPOCH_OFFSET_MICROS)
                    .ok_or_else(|| column.range_error(format!("timestamp out of range for {}", column.native)))?,
            );
        }
        V::Uuid(u) if *ty == Type::UUID => out.put_slice(u),
        _ => return Err(mismatch()),
    }
    Ok(IsNull::No)
}

fn encode_numeric(d: &Decimal, column: &TargetColumn, out: &mut BytesMut) -> Result<()> {
    if let Some(scale) = column.numeric_scale()
        && scale >= 0
        && d.scale() > scale as u32
        && d.with_scale(scale as u32).is_none()
    {
        return Err(column.range_error(format!(
            "a decimal with {} fraction digits would be rounded by {}",
            d.scale(),
            column.native
        )));
    }
    crate::numeric::encode(d, out).map_err(|m| column.range_error(m))
}

/// Refuses a time or timestamp the column's precision would round.
fn check_precision(micros: i64, column: &TargetColumn) -> Result<()> {
    let p = column.time_precision();
    if p < 6 {
        let unit = 10i64.pow(6 - p);
        if micros % unit != 0 {
            return Err(column.range_error(format!("a value with microseconds would be rounded by {}", column.native)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: Type, typmod: i32) -> TargetColumn {
        TargetColumn { name: "c".into(), native: ty.to_string(), ty, typmod }
    }

    fn enc(v: Value, c: &TargetColumn) -> Result<Vec<u8>> {
        let mut buf = BytesMut::new();
        encode(&v, c, &mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn integers_are_range_checked() {
        let c = col(Type::INT2, -1);
        assert_eq!(enc(Value::Int(-2), &c).unwrap(), vec![0xff, 0xfe]);
        let e = enc(Value::Int(40_000), &c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange);
        assert_eq!(e.location().column.as_deref(), Some("c"));
        assert!(enc(Value::UInt(u64::MAX), &col(Type::NUMERIC, -1)).is_ok());
    }

    #[test]
    fn rounding_is_refused() {
        // numeric(5,2): typmod = (5 << 16 | 2) + 4
        let c = col(Type::NUMERIC, ((5 << 16) | 2) + 4);
        let d = |s| Value::Decimal(Decimal::parse(s).unwrap());
        assert!(enc(d("1.25"), &c).is_ok());
        assert!(enc(d("1.250"), &c).is_ok());
        assert_eq!(enc(d("1.255"), &c).unwrap_err().kind(), ErrorKind::ValueRange);
        let ts0 = col(Type::TIMESTAMP, 0);
        assert!(enc(Value::Timestamp(2_000_000), &ts0).is_ok());
        assert!(enc(Value::Timestamp(2_000_001), &ts0).is_err());
        let ch = col(Type::BPCHAR, 2 + 4);
        assert!(enc(Value::Text("éé".into()), &ch).is_ok());
        assert!(enc(Value::Text("a  ".into()), &ch).is_err());
        assert!(enc(Value::Text("a\0".into()), &col(Type::TEXT, -1)).is_err());
    }

    #[test]
    fn dates_and_timestamps_use_the_2000_epoch() {
        assert_eq!(enc(Value::Date(10_958), &col(Type::DATE, -1)).unwrap(), 1i32.to_be_bytes());
        assert_eq!(
            enc(Value::TimestampTz(0), &col(Type::TIMESTAMPTZ, -1)).unwrap(),
            (-PG_EPOCH_OFFSET_MICROS).to_be_bytes()
        );
        assert_eq!(enc(Value::Bool(true), &col(Type::INT4, -1)).unwrap_err().kind(), ErrorKind::Schema);
    }
}
