//! Decoding cells of the binary result format into [`Value`]s by their wire type.
//!
//! [`Cell`] accepts every type and never fails inside the driver: a value it cannot
//! decode becomes an error message, which the reader turns into an error naming the
//! column.

use std::error::Error as StdError;

use pontoon_core::Value;
use tokio_postgres::types::{FromSql, Type};

use crate::{PG_EPOCH_OFFSET_DAYS, PG_EPOCH_OFFSET_MICROS};

/// One decoded cell: the value, or why it could not be decoded (never the value).
#[derive(Debug)]
pub struct Cell(pub Result<Value, String>);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Cell(decode(ty, raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Cell(Ok(Value::Null)))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn fixed<const N: usize>(raw: &[u8], ty: &Type) -> Result<[u8; N], String> {
    raw.try_into().map_err(|_| format!("{ty} value of {} bytes, expected {N}", raw.len()))
}

fn utf8(raw: &[u8], ty: &Type) -> Result<String, String> {
    String::from_utf8(raw.to_vec()).map_err(|_| format!("{ty} value is not valid UTF-8"))
}

/// Decodes one non-NULL value of wire type `ty`.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<Value, String> {
    match *ty {
        Type::BOOL => Ok(Value::Bool(fixed::<1>(raw, ty)?[0] != 0)),
        Type::INT2 => Ok(Value::Int(i16::from_be_bytes(fixed(raw, ty)?) as i64)),
        Type::INT4 => Ok(Value::Int(i32::from_be_bytes(fixed(raw, ty)?) as i64)),
        Type::INT8 => Ok(Value::Int(i64::from_be_bytes(fixed(raw, ty)?))),
        Type::FLOAT4 => Ok(Value::F32(f32::from_be_bytes(fixed(raw, ty)?))),
        Type::FLOAT8 => Ok(Value::F64(f64::from_be_bytes(fixed(raw, ty)?))),
        Type::NUMERIC => crate::numeric::decode(raw).map(Value::Decimal),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => utf8(raw, ty).map(Value::Text),
        Type::BYTEA => Ok(Value::Bytes(raw.to_vec())),
        Type::DATE => {
            let d = i32::from_be_bytes(fixed(raw, ty)?);
            if d == i32::MAX || d == i32::MIN {
                return Err("infinite date not supported".into());
            }
            d.checked_add(PG_EPOCH_OFFSET_DAYS).map(Value::Date).ok_or_else(|| "date out of range".to_string())
        }
        Type::TIME => Ok(Value::Time(i64::from_be_bytes(fixed(raw, ty)?))),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let t = i64::from_be_bytes(fixed(raw, ty)?);
            if t == i64::MAX || t == i64::MIN {
                return Err("infinite timestamp not supported".into());
            }
            let micros = t
                .checked_add(PG_EPOCH_OFFSET_MICROS)
                .ok_or_else(|| "timestamp after 294247 AD cannot be represented".to_string())?;
            Ok(if *ty == Type::TIMESTAMP { Value::Timestamp(micros) } else { Value::TimestampTz(micros) })
        }
        Type::JSON => utf8(raw, ty).map(Value::Json),
        Type::JSONB => match raw.split_first() {
            Some((1, text)) => utf8(text, ty).map(Value::Json),
            Some((v, _)) => Err(format!("unknown jsonb format version {v}")),
            None => Err("empty jsonb value".into()),
        },
        Type::UUID => Ok(Value::Uuid(fixed(raw, ty)?)),
        _ => Err(format!("type {ty} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_shifted() {
        assert_eq!(decode(&Type::DATE, &0i32.to_be_bytes()).unwrap(), Value::Date(10_957));
        assert_eq!(
            decode(&Type::TIMESTAMPTZ, &(-1i64).to_be_bytes()).unwrap(),
            Value::TimestampTz(946_684_799_999_999)
        );
        assert!(decode(&Type::DATE, &i32::MAX.to_be_bytes()).is_err());
        assert!(decode(&Type::TIMESTAMP, &i64::MIN.to_be_bytes()).is_err());
        assert!(decode(&Type::INT4, &[0, 0]).is_err());
    }

    #[test]
    fn jsonb_has_a_version_byte() {
        assert_eq!(decode(&Type::JSONB, b"\x01{}").unwrap(), Value::Json("{}".into()));
        assert!(decode(&Type::JSONB, b"\x02{}").is_err());
    }
}
