//! SQLite declared types <-> portable [`ColumnType`]s (`docs/type-mapping.md`), and the
//! column affinity SQLite derives from a declared type.
//!
//! SQLite has no column types, only a declared type (free text) from which it derives an
//! affinity, and five storage classes per value. The declared type is what tells
//! pontoon how to read a column; the affinity is what SQLite will do to a value written
//! into it (see [`Affinity`]).

use pontoon_core::ColumnType;

/// What SQLite does to a value stored in a column, derived from the declared type by
/// the rules of <https://sqlite.org/datatype3.html#determination_of_column_affinity>.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    /// Text that looks like a number becomes one; reals without a fraction become
    /// integers.
    Integer,
    /// Numbers become text.
    Text,
    /// Nothing is converted.
    Blob,
    /// Like NUMERIC, but integers become reals.
    Real,
    /// Text that looks like a number becomes an integer or a real (losing digits beyond
    /// what a double holds, and trailing fraction zeros); integral reals become integers.
    Numeric,
}

impl Affinity {
    /// The affinity of a column declared with `declared`, in SQLite's order of rules.
    pub(crate) fn of(declared: &str) -> Affinity {
        let d = declared.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Affinity::Text
        } else if d.contains("BLOB") || d.trim().is_empty() {
            Affinity::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// True when SQLite may convert a value written into the column into a number
    /// (INTEGER, REAL and NUMERIC affinity).
    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, Affinity::Integer | Affinity::Real | Affinity::Numeric)
    }
}

/// The portable type of a column declared as `declared`, or `None` when pontoon does
/// not map that declared type (including an empty one).
///
/// The names of `docs/type-mapping.md` are recognized case-insensitively, plus the
/// spellings SQLite's own documentation lists as examples (`INT2`, `INT8`,
/// `UNSIGNED BIG INT`, `CHARACTER(n)`, `VARYING CHARACTER(n)`, `NCHAR(n)`,
/// `NATIVE CHARACTER(n)`, `CHARACTER VARYING(n)`). `UNSIGNED` anywhere makes an
/// integer type unsigned (and is refused on any other type). Integer widths follow
/// the name: `TINYINT` 8 bits, `SMALLINT`/`INT2` 16, `MEDIUMINT` 24, `INT` 32 (what
/// pontoon creates for a 32-bit integer, so that a created table reads back the same),
/// `INTEGER`/`BIGINT`/`INT8` 64 (`INTEGER` is SQLite's own 64-bit integer, the rowid
/// type). A width in parentheses after an integer, float or time type (`INT(11)`,
/// `DATETIME(6)`) is a display hint and ignored.
pub(crate) fn column_type(declared: &str) -> Option<ColumnType> {
    let upper = declared.trim().to_ascii_uppercase();
    let (head, args, tail) = match upper.find('(') {
        Some(open) => {
            let close = open + upper[open..].find(')')?;
            (&upper[..open], &upper[open + 1..close], &upper[close + 1..])
        }
        None => (upper.as_str(), "", ""),
    };
    let mut unsigned = false;
    let mut words = Vec::new();
    for w in head.split_whitespace().chain(tail.split_whitespace()) {
        if w == "UNSIGNED" {
            unsigned = true;
        } else {
            words.push(w);
        }
    }
    let name = words.join(" ");
    let args: Vec<u32> = if args.trim().is_empty() {
        Vec::new()
    } else {
        args.split(',').map(|a| a.trim().parse::<u32>().ok()).collect::<Option<Vec<u32>>>()?
    };
    let int = |bytes: u8| Some(ColumnType::Int { bytes, unsigned });
    let ty = match name.as_str() {
        "TINYINT" => return int(1),
        "SMALLINT" | "INT2" => return int(2),
        "MEDIUMINT" => return int(3),
        "INT" => return int(4),
        "INTEGER" | "BIGINT" | "INT8" | "BIG INT" => return int(8),
        "BOOLEAN" | "BOOL" => ColumnType::Bool,
        "FLOAT" => ColumnType::Float32,
        "REAL" | "DOUBLE" | "DOUBLE PRECISION" => ColumnType::Float64,
        "DECIMAL" | "NUMERIC" | "DECIMAL_TEXT" => match args.as_slice() {
            [] => ColumnType::Decimal { precision: None, scale: None },
            [p] => ColumnType::Decimal { precision: Some(*p), scale: Some(0) },
            [p, s] if s <= p => ColumnType::Decimal { precision: Some(*p), scale: Some(*s) },
            _ => return None,
        },
        "VARCHAR" | "CHAR" | "NVARCHAR" | "CHARACTER" | "NCHAR" | "VARYING CHARACTER" | "NATIVE CHARACTER"
        | "CHARACTER VARYING" => match args.as_slice() {
            [] => ColumnType::TEXT,
            [n] => ColumnType::Text { max_chars: Some(*n) },
            _ => return None,
        },
        "TEXT" | "CLOB" => ColumnType::TEXT,
        "BLOB" => ColumnType::Bytes { max_bytes: None },
        "DATE" => ColumnType::Date,
        "TIME" => ColumnType::Time,
        "DATETIME" | "TIMESTAMP" => ColumnType::Timestamp,
        "TIMESTAMPTZ" => ColumnType::TimestampTz,
        "JSON" | "JSON_TEXT" => ColumnType::Json,
        "UUID" => ColumnType::Uuid,
        _ => return None,
    };
    if unsigned { None } else { Some(ty) }
}

/// The declared type pontoon gives a column of portable type `ty` when it creates a
/// table (the "Creating" table of `docs/type-mapping.md`).
pub(crate) fn native_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int { bytes, unsigned } => {
            let name = match bytes {
                0..=1 => "TINYINT",
                2 => "SMALLINT",
                3 => "MEDIUMINT",
                4 => "INT",
                _ => "BIGINT",
            };
            if *unsigned { format!("{name} UNSIGNED") } else { name.into() }
        }
        ColumnType::Float32 => "FLOAT".into(),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Decimal { precision: Some(p), scale } => format!("DECIMAL_TEXT({p},{})", scale.unwrap_or(0)),
        ColumnType::Decimal { precision: None, .. } => "DECIMAL_TEXT".into(),
        ColumnType::Text { max_chars: Some(n) } => format!("VARCHAR({n})"),
        ColumnType::Text { max_chars: None } => "TEXT".into(),
        ColumnType::Bytes { .. } => "BLOB".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME".into(),
        ColumnType::Timestamp => "DATETIME".into(),
        ColumnType::TimestampTz => "TIMESTAMPTZ".into(),
        ColumnType::Json => "JSON_TEXT".into(),
        ColumnType::Uuid => "UUID".into(),
    }
}

/// Quotes an identifier for SQLite (`"` doubled).
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types() {
        let int = |bytes, unsigned| Some(ColumnType::Int { bytes, unsigned });
        assert_eq!(column_type("int"), int(4, false));
        assert_eq!(column_type("INTEGER"), int(8, false));
        assert_eq!(column_type("bigint unsigned"), int(8, true));
        assert_eq!(column_type("UNSIGNED BIG INT"), int(8, true));
        assert_eq!(column_type("INT(11)"), int(4, false));
        assert_eq!(column_type("TEXT UNSIGNED"), None);
        assert_eq!(
            column_type("decimal_text(10, 2)"),
            Some(ColumnType::Decimal { precision: Some(10), scale: Some(2) })
        );
        assert_eq!(column_type("DECIMAL(2,3)"), None);
        assert_eq!(column_type("varchar(20)"), Some(ColumnType::Text { max_chars: Some(20) }));
        assert_eq!(column_type(""), None);
        assert_eq!(column_type("STRING"), None);
        assert_eq!(column_type("VARCHAR(x)"), None);
    }

    #[test]
    fn affinities() {
        assert_eq!(Affinity::of("DECIMAL_TEXT(10,2)"), Affinity::Text);
        assert_eq!(Affinity::of("JSON_TEXT"), Affinity::Text);
        assert_eq!(Affinity::of("DECIMAL(10,2)"), Affinity::Numeric);
        assert_eq!(Affinity::of("TIMESTAMPTZ"), Affinity::Numeric);
        assert_eq!(Affinity::of("DOUBLE"), Affinity::Real);
        assert_eq!(Affinity::of("BIGINT UNSIGNED"), Affinity::Integer);
        assert_eq!(Affinity::of(""), Affinity::Blob);
    }

    #[test]
    fn created_types_read_back_the_same() {
        let types = [
            ColumnType::Bool,
            ColumnType::Int { bytes: 1, unsigned: true },
            ColumnType::Int { bytes: 3, unsigned: false },
            ColumnType::I32,
            ColumnType::I64,
            ColumnType::Float32,
            ColumnType::Float64,
            ColumnType::Decimal { precision: Some(12), scale: Some(4) },
            ColumnType::Decimal { precision: None, scale: None },
            ColumnType::Text { max_chars: Some(7) },
            ColumnType::TEXT,
            ColumnType::Bytes { max_bytes: None },
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Json,
            ColumnType::Uuid,
        ];
        for ty in types {
            assert_eq!(column_type(&native_type(&ty)), Some(ty.clone()), "{ty}");
        }
    }
}
