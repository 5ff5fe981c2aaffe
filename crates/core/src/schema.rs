//! Portable column types and table schemas.
//!
//! Each connector describes its tables in these terms and maps them back to native
//! DDL; the cross-engine mapping is documented in `docs/type-mapping.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The engines pontoon speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
    Sqlite,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "postgresql",
            Engine::Mysql => "mariadb",
            Engine::Sqlite => "sqlite",
        })
    }
}

/// A column type in portable terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    Bool,
    /// `bytes` is the storage width: 1, 2, 3 (MariaDB MEDIUMINT), 4 or 8.
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Float32,
    Float64,
    /// `precision`/`scale` are `None` for an unconstrained numeric.
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    /// `max_chars` in characters (not bytes); `None` for unbounded text.
    Text {
        max_chars: Option<u32>,
    },
    Bytes {
        max_bytes: Option<u32>,
    },
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Json,
    Uuid,
}

impl ColumnType {
    pub const I64: ColumnType = ColumnType::Int { bytes: 8, unsigned: false };
    pub const I32: ColumnType = ColumnType::Int { bytes: 4, unsigned: false };
    pub const TEXT: ColumnType = ColumnType::Text { max_chars: None };

    /// The inclusive range of an integer type, as `i128` so unsigned 64-bit fits.
    pub fn int_range(bytes: u8, unsigned: bool) -> (i128, i128) {
        let bits = bytes as u32 * 8;
        if unsigned { (0, (1i128 << bits) - 1) } else { (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1) }
    }

    /// True for the integer types.
    pub fn is_integer(&self) -> bool {
        matches!(self, ColumnType::Int { .. })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Int { bytes, unsigned } => {
                write!(f, "int{}{}", *bytes as u32 * 8, if *unsigned { " unsigned" } else { "" })
            }
            ColumnType::Float32 => f.write_str("float32"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::Decimal { precision: Some(p), scale } => {
                write!(f, "decimal({p},{})", scale.unwrap_or(0))
            }
            ColumnType::Decimal { .. } => f.write_str("decimal"),
            ColumnType::Text { max_chars: Some(n) } => write!(f, "text({n})"),
            ColumnType::Text { max_chars: None } => f.write_str("text"),
            ColumnType::Bytes { max_bytes: Some(n) } => write!(f, "bytes({n})"),
            ColumnType::Bytes { max_bytes: None } => f.write_str("bytes"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Time => f.write_str("time"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::TimestampTz => f.write_str("timestamptz"),
            ColumnType::Json => f.write_str("json"),
            ColumnType::Uuid => f.write_str("uuid"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The engine's own spelling of the type (for messages and `plan`).
    pub native: String,
    /// True when the target fills the column itself (default, identity, generated).
    #[serde(default)]
    pub has_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary key column names, in key order; empty when the table has none.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}
