//! What a [`Reader::checksum`](crate::Reader::checksum) hashes, and the portable
//! digest computed from rows that were read, for an engine that cannot compute it
//! in SQL at the speed of a scan.

use crate::connector::Checksum;
use crate::scan::Row;
use crate::schema::ColumnType;
use crate::value::{Value, format_date, format_uuid};

/// What a [`Reader::checksum`](crate::Reader::checksum) hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// The engine's own row hash, over every column type it has: comparable only
    /// with a checksum from the same engine.
    Native,
    /// A row text whose hash MariaDB computes in SQL at the speed of its own
    /// checksum and pontoon from rows it read (from any engine,
    /// [`Digest::of_rows`]): comparable across engines, for the column types of
    /// [`Digest::portable`] only.
    ///
    /// The row text is the selected columns' texts joined by `,`:
    ///
    /// - NULL is `N` (no other value's text is);
    /// - an integer is its decimal text, a bool `1` or `0`, a decimal its text with
    ///   its scale (`1.50`), a date `YYYY-MM-DD`, a UUID 36 lowercase characters;
    /// - text (as UTF-8) and bytes are the decimal CRC32C of their bytes (a `,`
    ///   inside a value cannot shift the columns).
    ///
    /// Each text identifies its value within the column's kind, so two rows with the
    /// same text hold equal values. The row hash is the CRC32C of the row text;
    /// `hash` is the rows' sum modulo 2^64 (a sum, not an XOR: equal rows add up
    /// instead of cancelling out). A changed row goes unseen only if its CRC32C
    /// collides, about once in 2^32 (pt-table-checksum's strength).
    ///
    /// This is MariaDB's [`Digest::Native`] text for these types, with text
    /// converted to UTF-8: MariaDB sums it in the scan as cheaply as its own, where
    /// PostgreSQL has no CRC32C and its `md5` costs five times its native checksum,
    /// so PostgreSQL's rows are read and hashed by pontoon instead.
    Portable,
}

impl Digest {
    /// Whether a source column of type `source` and a target column of type
    /// `target` can be compared by [`Digest::Portable`] texts: both of one of its
    /// kinds (integers of any width and sign, for instance).
    pub fn portable(source: &ColumnType, target: &ColumnType) -> bool {
        use ColumnType as T;
        matches!(
            (source, target),
            (T::Int { .. }, T::Int { .. })
                | (T::Bool, T::Bool)
                | (T::Decimal { .. }, T::Decimal { .. })
                | (T::Text { .. }, T::Text { .. })
                | (T::Bytes { .. }, T::Bytes { .. })
                | (T::Date, T::Date)
                | (T::Uuid, T::Uuid)
        )
    }

    /// The checksum of `rows` by this digest, as a database computes it over the
    /// same values; `None` for [`Digest::Native`] (each engine's own) and for a row
    /// holding a value of a kind [`Digest::Portable`] does not hash.
    pub fn of_rows(self, rows: &[Row]) -> Option<Checksum> {
        if self == Digest::Native {
            return None;
        }
        let mut text = String::new();
        let mut hash = 0u64;
        for row in rows {
            text.clear();
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                portable_text(v, &mut text)?;
            }
            hash = hash.wrapping_add(u64::from(crc32c(text.as_bytes())));
        }
        Some(Checksum { rows: rows.len() as u64, hash })
    }
}

/// Appends `v`'s [`Digest::Portable`] text, or `None` for a kind it does not hash.
fn portable_text(v: &Value, out: &mut String) -> Option<()> {
    use std::fmt::Write as _;
    match v {
        Value::Null => out.push('N'),
        Value::Bool(b) => out.push(if *b { '1' } else { '0' }),
        Value::Int(i) => write!(out, "{i}").ok()?,
        Value::UInt(u) => write!(out, "{u}").ok()?,
        Value::Decimal(d) => out.push_str(d.as_str()),
        Value::Date(d) => out.push_str(&format_date(*d)),
        Value::Uuid(u) => out.push_str(&format_uuid(u)),
        Value::Text(s) => write!(out, "{}", crc32c(s.as_bytes())).ok()?,
        Value::Bytes(b) => write!(out, "{}", crc32c(b)).ok()?,
        Value::F32(_)
        | Value::F64(_)
        | Value::Json(_)
        | Value::Time(_)
        | Value::Timestamp(_)
        | Value::TimestampTz(_) => {
            return None;
        }
    }
    Some(())
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as MariaDB's `CRC32C()`
/// and the SSE4.2 instruction compute it; slicing by 8 bytes.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = CRC_TABLES[7][(lo & 0xff) as usize]
            ^ CRC_TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ CRC_TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ CRC_TABLES[4][(lo >> 24) as usize]
            ^ CRC_TABLES[3][(hi & 0xff) as usize]
            ^ CRC_TABLES[2][((hi >> 8) & 0xff) as usize]
            ^ CRC_TABLES[1][((hi >> 16) & 0xff) as usize]
            ^ CRC_TABLES[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = CRC_TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// `CRC_TABLES[0]` is the byte-at-a-time table; `CRC_TABLES[k][b]` is the CRC of
/// byte `b` followed by `k` zero bytes.
static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Decimal, parse_date, parse_uuid};

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        // every length through the 8-byte slices and the remainder agrees with the
        // bytewise definition
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8).collect();
        for n in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..n] {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
                }
            }
            assert_eq!(crc32c(&data[..n]), !crc, "{n} bytes");
        }
    }

    #[test]
    fn row_texts_are_the_documented_ones() {
        let row = vec![
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Bool(true),
            Value::Decimal(Decimal::parse("1.50").unwrap()),
            Value::Date(parse_date("0999-01-31").unwrap()),
            Value::Uuid(parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").unwrap()),
            Value::Text("a,b".into()),
            Value::Bytes(vec![]),
            Value::Null,
        ];
        let text = format!(
            "-5,18446744073709551615,1,1.50,0999-01-31,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,{},0,N",
            crc32c(b"a,b")
        );
        let got = Digest::Portable.of_rows(std::slice::from_ref(&row)).unwrap();
        assert_eq!(got, Checksum { rows: 1, hash: u64::from(crc32c(text.as_bytes())) });
        assert_eq!(Digest::Portable.of_rows(&[row.clone(), row]).unwrap().hash, 2 * got.hash);
        assert_eq!(Digest::Portable.of_rows(&[]), Some(Checksum { rows: 0, hash: 0 }));
        assert_eq!(Digest::Portable.of_rows(&[vec![Value::F64(1.0)]]), None);
        assert_eq!(Digest::Native.of_rows(&[vec![Value::Int(1)]]), None);
    }
}
