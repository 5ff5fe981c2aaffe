//! Column types both ways (`docs/type-mapping.md`): MariaDB's catalog and result-set
//! metadata to portable [`ColumnType`]s, and portable types to the native types
//! `create_table` uses.

use mysql_async::consts::{ColumnFlags, ColumnType as Wire};
use pontoon_core::{ColumnType, Error, ErrorKind, Result};

/// The largest `varchar(n)` created; longer text becomes `longtext` (n * 4 bytes of
/// utf8mb4 must stay below MariaDB's 65,535-byte row limit).
pub(crate) const MAX_VARCHAR_CHARS: u32 = 16_383;
/// The largest `varbinary(n)` created; longer becomes `longblob`.
pub(crate) const MAX_VARBINARY_BYTES: u32 = 65_535;
/// InnoDB indexes at most this many bytes of a key (all its columns together).
pub(crate) const MAX_KEY_BYTES: u64 = 3_072;

/// The native type `create_table` uses for a portable type (outside a primary key).
pub(crate) fn native_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "tinyint(1)".to_string(),
        ColumnType::Int { bytes, unsigned } => {
            let base = match bytes {
                1 => "tinyint",
                2 => "smallint",
                3 => "mediumint",
                4 => "int",
                _ => "bigint",
            };
            if *unsigned { format!("{base} unsigned") } else { base.to_string() }
        }
        ColumnType::Float32 => "float".to_string(),
        ColumnType::Float64 => "double".to_string(),
        // A precision or scale above MariaDB's (65, 38) is kept as asked: creating
        // the table then fails with the server's message instead of rounding.
        ColumnType::Decimal { precision, scale } => match (precision, scale) {
            (None, None) => "decimal(65,30)".to_string(),
            (Some(p), s) => format!("decimal({p},{})", s.unwrap_or(0)),
            (None, Some(s)) => format!("decimal(65,{s})"),
        },
        ColumnType::Text { max_chars: Some(n) } if *n <= MAX_VARCHAR_CHARS => {
            format!("varchar({n})")
        }
        ColumnType::Text { .. } => "longtext".to_string(),
        ColumnType::Bytes { max_bytes: Some(n) } if *n <= MAX_VARBINARY_BYTES => {
            format!("varbinary({n})")
        }
        ColumnType::Bytes { .. } => "longblob".to_string(),
        ColumnType::Date => "date".to_string(),
        ColumnType::Time => "time(6)".to_string(),
        // MariaDB's `timestamp` ends in 2038: a timestamp with time zone is kept in
        // UTC in a datetime(6) (the session time zone is UTC).
        ColumnType::Timestamp | ColumnType::TimestampTz => "datetime(6)".to_string(),
        ColumnType::Json => "json".to_string(),
        ColumnType::Uuid => "uuid".to_string(),
    }
}

/// The native types of a primary key's columns. InnoDB indexes at most 3072 bytes of
/// a key: text (4 bytes a character in utf8mb4) and bytes columns share what the other
/// key columns leave, the shortest keeping their length, so unbounded text alone
/// becomes `varchar(768)` and unbounded bytes `varbinary(3072)`. A narrowed column
/// still refuses longer values (the engine's fit checks the created type).
pub(crate) fn native_key_types(key: &[&ColumnType]) -> Vec<String> {
    // the bytes the other key columns take
    let fixed: u64 = key
        .iter()
        .map(|ty| match ty {
            ColumnType::Bool => 1,
            ColumnType::Int { bytes, .. } => *bytes as u64,
            ColumnType::Float32 => 4,
            ColumnType::Float64 => 8,
            ColumnType::Decimal { precision, .. } => precision.unwrap_or(65) as u64 / 2 + 1,
            ColumnType::Date => 3,
            ColumnType::Time => 6,
            ColumnType::Timestamp | ColumnType::TimestampTz => 8,
            ColumnType::Uuid => 16,
            ColumnType::Text { .. } | ColumnType::Bytes { .. } | ColumnType::Json => 0,
        })
        .sum();
    // the bytes each text or bytes column wants (u64::MAX: unbounded)
    let mut variable: Vec<(usize, u64)> = key
        .iter()
        .enumerate()
        .filter_map(|(i, ty)| match ty {
            ColumnType::Text { max_chars } => Some((i, max_chars.map_or(u64::MAX, |n| n as u64 * 4))),
            ColumnType::Bytes { max_bytes } => Some((i, max_bytes.map_or(u64::MAX, |n| n as u64))),
            _ => None,
        })
        .collect();
    variable.sort_by_key(|(_, want)| *want);
    let mut budget = MAX_KEY_BYTES.saturating_sub(fixed);
    let mut caps = vec![None; key.len()];
    let count = variable.len() as u64;
    for (done, (i, want)) in variable.iter().enumerate() {
        let share = budget / (count - done as u64);
        let take = (*want).min(share);
        caps[*i] = Some(take);
        budget -= take;
    }
    key.iter()
        .zip(caps)
        .map(|(ty, cap)| match (ty, cap) {
            (ColumnType::Text { max_chars }, Some(cap)) => {
                let chars = (cap / 4) as u32;
                if max_chars.is_some_and(|n| n <= chars) { native_type(ty) } else { format!("varchar({chars})") }
            }
            (ColumnType::Bytes { max_bytes }, Some(cap)) => {
                let bytes = cap as u32;
                if max_bytes.is_some_and(|n| n <= bytes) { native_type(ty) } else { format!("varbinary({bytes})") }
            }
            _ => native_type(ty),
        })
        .collect()
}

/// One column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CatalogColumn {
    /// `DATA_TYPE`, lower case (`int`, `varchar`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE`, the full spelling (`int(10) unsigned`, `tinyint(1)`).
    pub column_type: String,
    pub char_max_length: Option<u64>,
    pub numeric_precision: Option<u64>,
    pub numeric_scale: Option<u64>,
}

fn clamp(n: Option<u64>) -> Option<u32> {
    n.map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The portable type of a catalog column. `is_json` says a `longtext` column carries a
/// `json_valid` check (MariaDB's JSON). Unsupported types are an error naming the
/// native type (the caller adds table and column).
pub(crate) fn from_catalog(c: &CatalogColumn, is_json: bool) -> Result<ColumnType> {
    let column_type = c.column_type.to_ascii_lowercase();
    let unsigned = column_type.contains(" unsigned");
    let int = |bytes: u8| Ok(ColumnType::Int { bytes, unsigned });
    match c.data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type == "tinyint(1)" => Ok(ColumnType::Bool),
        "tinyint" => int(1),
        "smallint" => int(2),
        "mediumint" => int(3),
        "int" | "integer" => int(4),
        "bigint" => int(8),
        "year" => Ok(ColumnType::Int { bytes: 2, unsigned: false }),
        "float" => Ok(ColumnType::Float32),
        "double" | "real" | "double precision" => Ok(ColumnType::Float64),
        "decimal" | "numeric" | "fixed" => {
            Ok(ColumnType::Decimal { precision: clamp(c.numeric_precision), scale: clamp(c.numeric_scale).or(Some(0)) })
        }
        "char" | "varchar" => Ok(ColumnType::Text { max_chars: clamp(c.char_max_length) }),
        "longtext" | "mediumtext" | "text" | "tinytext" if is_json => Ok(ColumnType::Json),
        "json" => Ok(ColumnType::Json),
        "tinytext" | "text" | "mediumtext" | "longtext" => Ok(ColumnType::TEXT),
        "enum" | "set" => Ok(ColumnType::Text { max_chars: clamp(c.char_max_length) }),
        "binary" | "varbinary" => Ok(ColumnType::Bytes { max_bytes: clamp(c.char_max_length) }),
        "tinyblob" | "blob" | "mediumblob" | "longblob" => Ok(ColumnType::Bytes { max_bytes: None }),
        "date" => Ok(ColumnType::Date),
        "time" => Ok(ColumnType::Time),
        "datetime" => Ok(ColumnType::Timestamp),
        "timestamp" => Ok(ColumnType::TimestampTz),
        "uuid" => Ok(ColumnType::Uuid),
        _ => Err(Error::new(ErrorKind::Unsupported, format!("MariaDB type {} is not supported", c.column_type))),
    }
}

/// The portable type of a result-set column (an expression), best effort from the
/// wire type, flags, length and decimals.
pub(crate) fn from_result_column(col: &mysql_async::Column) -> Result<ColumnType> {
    let flags = col.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    // character set 63 is `binary`
    let binary = col.character_set() == 63;
    let length = col.column_length();
    let int = |bytes: u8| Ok(ColumnType::Int { bytes, unsigned });
    match col.column_type() {
        Wire::MYSQL_TYPE_TINY if length == 1 && !unsigned => Ok(ColumnType::Bool),
        Wire::MYSQL_TYPE_TINY => int(1),
        Wire::MYSQL_TYPE_SHORT => int(2),
        Wire::MYSQL_TYPE_INT24 => int(3),
        Wire::MYSQL_TYPE_LONG => int(4),
        Wire::MYSQL_TYPE_LONGLONG => int(8),
        Wire::MYSQL_TYPE_YEAR => Ok(ColumnType::Int { bytes: 2, unsigned: false }),
        Wire::MYSQL_TYPE_FLOAT => Ok(ColumnType::Float32),
        Wire::MYSQL_TYPE_DOUBLE => Ok(ColumnType::Float64),
        Wire::MYSQL_TYPE_DECIMAL | Wire::MYSQL_TYPE_NEWDECIMAL => {
            let scale = col.decimals() as u32;
            // the display length counts the point and, when signed, the sign
            let point = u32::from(scale > 0);
            let sign = u32::from(!unsigned);
            let precision = length.saturating_sub(point + sign).max(scale).max(1);
            Ok(ColumnType::Decimal { precision: Some(precision), scale: Some(scale) })
        }
        Wire::MYSQL_TYPE_VARCHAR | Wire::MYSQL_TYPE_VAR_STRING | Wire::MYSQL_TYPE_STRING => {
            if binary {
                Ok(ColumnType::Bytes { max_bytes: Some(length) })
            } else {
                // the session's result character set is utf8mb4: 4 bytes a character
                Ok(ColumnType::Text { max_chars: Some(length.div_ceil(4)) })
            }
        }
        Wire::MYSQL_TYPE_ENUM | Wire::MYSQL_TYPE_SET => Ok(ColumnType::Text { max_chars: Some(length.div_ceil(4)) }),
        Wire::MYSQL_TYPE_TINY_BLOB
        | Wire::MYSQL_TYPE_BLOB
        | Wire::MYSQL_TYPE_MEDIUM_BLOB
        | Wire::MYSQL_TYPE_LONG_BLOB => {
            if binary {
                Ok(ColumnType::Bytes { max_bytes: None })
            } else {
                Ok(ColumnType::TEXT)
            }
        }
        Wire::MYSQL_TYPE_NULL => Ok(ColumnType::TEXT),
        Wire::MYSQL_TYPE_DATE | Wire::MYSQL_TYPE_NEWDATE => Ok(ColumnType::Date),
        Wire::MYSQL_TYPE_TIME | Wire::MYSQL_TYPE_TIME2 => Ok(ColumnType::Time),
        Wire::MYSQL_TYPE_DATETIME | Wire::MYSQL_TYPE_DATETIME2 => Ok(ColumnType::Timestamp),
        Wire::MYSQL_TYPE_TIMESTAMP | Wire::MYSQL_TYPE_TIMESTAMP2 => Ok(ColumnType::TimestampTz),
        Wire::MYSQL_TYPE_JSON => Ok(ColumnType::Json),
        other => Err(Error::new(ErrorKind::Unsupported, format!("MariaDB result type {other:?} is not supported"))),
    }
}

/// The number of fraction digits of a time, datetime or timestamp column from its
/// native spelling (`datetime(3)` -> 3, `time` -> 0), or `None` for other types.
pub(crate) fn fractional_digits(native: &str) -> Option<u32> {
    let n = native.trim().to_ascii_lowercase();
    let rest = ["datetime", "timestamp", "time"].iter().find_map(|p| n.strip_prefix(p))?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix('(')?.split(')').next()?;
    digits.trim().parse().ok()
}

/// The arguments of a native type spelled `prefix(a[,b])`, e.g. `float(7,3)`.
fn type_args(native: &str, prefix: &str) -> Option<Vec<u32>> {
    let n = native.trim().to_ascii_lowercase();
    let rest = n.strip_prefix(prefix)?.trim_start().strip_prefix('(')?;
    let args = rest.split(')').next()?;
    args.split(',').map(|a| a.trim().parse().ok()).collect()
}

/// The length of a `char(n)` column (`char(5)` -> 5): MariaDB drops trailing spaces.
pub(crate) fn char_length(native: &str) -> Option<u32> {
    type_args(native, "char")?.first().copied()
}

/// The length of a `binary(n)` column: MariaDB pads shorter values with zero bytes.
pub(crate) fn binary_length(native: &str) -> Option<u32> {
    type_args(native, "binary")?.first().copied()
}

/// The decimals `D` of a `float(M,D)` or `double(M,D)` column, which MariaDB rounds to
/// without a warning.
pub(crate) fn float_decimals(native: &str) -> Option<u32> {
    let args = type_args(native, "float").or_else(|| type_args(native, "double"))?;
    match args[..] {
        [_, d] => Some(d),
        _ => None,
    }
}

/// True for a `year` column, which maps 1..99 to 1970..2069 without a warning.
pub(crate) fn is_year(native: &str) -> bool {
    native.trim().to_ascii_lowercase().starts_with("year")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(data_type: &str, column_type: &str) -> CatalogColumn {
        CatalogColumn { data_type: data_type.into(), column_type: column_type.into(), ..CatalogColumn::default() }
    }

    #[test]
    fn catalog_types() {
        assert_eq!(from_catalog(&cat("tinyint", "tinyint(1)"), false).unwrap(), ColumnType::Bool);
        assert_eq!(
            from_catalog(&cat("tinyint", "tinyint(1) unsigned"), false).unwrap(),
            ColumnType::Int { bytes: 1, unsigned: true }
        );
        assert_eq!(
            from_catalog(&cat("bigint", "bigint(20) unsigned"), false).unwrap(),
            ColumnType::Int { bytes: 8, unsigned: true }
        );
        assert_eq!(from_catalog(&cat("longtext", "longtext"), true).unwrap(), ColumnType::Json);
        let e = from_catalog(&cat("bit", "bit(3)"), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("bit(3)"));
    }

    #[test]
    fn native_types() {
        assert_eq!(native_type(&ColumnType::Text { max_chars: Some(20) }), "varchar(20)");
        assert_eq!(native_type(&ColumnType::Text { max_chars: Some(20_000) }), "longtext");
        assert_eq!(native_key_types(&[&ColumnType::TEXT]), vec!["varchar(768)"]);
        assert_eq!(native_key_types(&[&ColumnType::Bytes { max_bytes: None }]), vec!["varbinary(3072)"]);
        assert_eq!(native_key_types(&[&ColumnType::I32, &ColumnType::TEXT]), vec!["int", "varchar(767)"]);
        let short = ColumnType::Text { max_chars: Some(10) };
        assert_eq!(
            native_key_types(&[&ColumnType::TEXT, &short, &ColumnType::TEXT]),
            vec!["varchar(379)", "varchar(10)", "varchar(379)"]
        );
        assert_eq!(native_type(&ColumnType::Decimal { precision: None, scale: None }), "decimal(65,30)");
        assert_eq!(native_type(&ColumnType::Int { bytes: 8, unsigned: true }), "bigint unsigned");
        assert_eq!(native_type(&ColumnType::TimestampTz), "datetime(6)");
    }

    #[test]
    fn fractions_and_char_lengths() {
        assert_eq!(fractional_digits("datetime(6)"), Some(6));
        assert_eq!(fractional_digits("timestamp"), Some(0));
        assert_eq!(fractional_digits("time(3)"), Some(3));
        assert_eq!(fractional_digits("tinyint"), None);
        assert_eq!(char_length("char(5)"), Some(5));
        assert_eq!(char_length("varchar(5)"), None);
        assert_eq!(binary_length("binary(16)"), Some(16));
        assert_eq!(binary_length("varbinary(16)"), None);
        assert_eq!(float_decimals("float(7,3)"), Some(3));
        assert_eq!(float_decimals("double(10,2) unsigned"), Some(2));
        assert_eq!(float_decimals("double"), None);
        assert_eq!(float_decimals("float(30)"), None);
    }
}
