//! PostgreSQL's binary `COPY` format, walked without decoding a value: the rows of a
//! stream read by `COPY ... TO STDOUT (FORMAT binary)` are counted, and the stream is
//! checked to be complete, before it is handed on as [`RawRows`](pontoon_core::RawRows).
//!
//! The format: the 11-byte signature `PGCOPY\n\377\r\n\0`, an int32 of flags (bits
//! 16-31 are critical: a reader must refuse a stream that sets one it does not know),
//! an int32 header-extension length and that many bytes; then the tuples, each an
//! int16 field count followed by, per field, an int32 length (-1 for NULL) and that
//! many bytes; then the trailer, a field count of -1. All integers are big-endian.
//!
//! The writer builds such streams from decoded rows ([`write_header`], [`write_row`],
//! [`write_trailer`]), each field encoded by [`crate::encode::encode`].

use bytes::{BufMut, BytesMut};
use pontoon_core::{Error, Result, Value};
use tokio_postgres::types::IsNull;

use crate::encode::{TargetColumn, encode};

/// The signature every binary `COPY` stream starts with.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A complete binary `COPY` stream of no rows: header and trailer.
pub const EMPTY: &[u8; 21] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\xff\xff";

/// Appends the header: the signature, no flags, no header extension.
pub fn write_header(out: &mut BytesMut) {
    out.put_slice(SIGNATURE);
    out.put_i32(0);
    out.put_i32(0);
}

/// Appends the trailer.
pub fn write_trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// Appends one tuple: `row`'s values encoded for `columns` (as many), each checked by
/// the encoder. On an error `out` holds part of the tuple: the stream is to be
/// abandoned.
pub fn write_row(row: &[Value], columns: &[TargetColumn], out: &mut BytesMut) -> Result<()> {
    let count = i16::try_from(columns.len())
        .map_err(|_| Error::internal(format!("{} columns are more than a COPY row holds", columns.len())))?;
    if row.len() != columns.len() {
        return Err(Error::internal(format!("a row of {} values for {} columns", row.len(), columns.len())));
    }
    out.put_i16(count);
    for (value, column) in row.iter().zip(columns) {
        let at = out.len();
        out.put_i32(0);
        match encode(value, column, out)? {
            IsNull::Yes => {
                out.truncate(at);
                out.put_i32(-1);
            }
            IsNull::No => {
                let len = out.len() - at - 4;
                let len = i32::try_from(len).map_err(|_| {
                    Error::new(pontoon_core::ErrorKind::ValueRange, format!("a value of {len} bytes is too large"))
                        .in_column(column.name.clone())
                })?;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
    }
    Ok(())
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            _ => Err(format!(
                "the stream ends inside {what} (byte {} of {}; {n} more expected)",
                self.pos,
                self.data.len()
            )),
        }
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The number of rows of a complete binary `COPY` stream (header, rows, trailer and
/// nothing after it), each of `fields` fields when given. Otherwise says what is
/// wrong, by position, never showing data.
pub fn count_rows(data: &[u8], fields: Option<usize>) -> Result<u64, String> {
    let mut c = Cursor { data, pos: 0 };
    if c.take(SIGNATURE.len(), "the signature")? != SIGNATURE {
        return Err("the stream does not start with the binary COPY signature".into());
    }
    let flags = c.i32("the header flags")? as u32;
    if flags & 0xffff_0000 != 0 {
        return Err(format!("the header sets critical flags {flags:#010x}"));
    }
    let extension = c.i32("the header extension length")?;
    let extension = usize::try_from(extension).map_err(|_| format!("negative header extension length {extension}"))?;
    c.take(extension, "the header extension")?;
    let mut rows = 0u64;
    loop {
        let at = c.pos;
        let count = c.i16("a row's field count")?;
        if count == -1 {
            if c.pos != data.len() {
                return Err(format!("{} bytes follow the trailer", data.len() - c.pos));
            }
            return Ok(rows);
        }
        let count = usize::try_from(count).map_err(|_| format!("negative field count {count} at byte {at}"))?;
        if let Some(fields) = fields
            && count != fields
        {
            return Err(format!("row {} has {count} fields, not {fields}", rows + 1));
        }
        for _ in 0..count {
            let at = c.pos;
            let len = c.i32("a field length")?;
            if len == -1 {
                continue;
            }
            let len = usize::try_from(len).map_err(|_| format!("negative field length {len} at byte {at}"))?;
            c.take(len, "a field")?;
        }
        rows += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of the rows given (`None`: a NULL field).
    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend(0i32.to_be_bytes());
        for row in rows {
            out.extend((row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend((b.len() as i32).to_be_bytes());
                        out.extend(*b);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    #[test]
    fn counts_rows() {
        assert_eq!(count_rows(EMPTY, Some(3)), Ok(0));
        assert_eq!(stream(&[]), EMPTY);
        let data =
            stream(&[vec![Some(&[0, 0, 0, 1]), None, Some(b"")], vec![Some(&[0, 0, 0, 2]), Some(b"text"), None]]);
        assert_eq!(count_rows(&data, Some(3)), Ok(2));
        assert_eq!(count_rows(&data, None), Ok(2));
        assert!(count_rows(&data, Some(2)).unwrap_err().contains("3 fields"));
        // zero-column rows are rows
        assert_eq!(count_rows(&stream(&[vec![], vec![]]), Some(0)), Ok(2));
    }

    #[test]
    fn a_header_extension_is_skipped() {
        let mut data = SIGNATURE.to_vec();
        data.extend(0i32.to_be_bytes());
        data.extend(3i32.to_be_bytes());
        data.extend([1, 2, 3]);
        data.extend(1i16.to_be_bytes());
        data.extend((-1i32).to_be_bytes());
        data.extend((-1i16).to_be_bytes());
        assert_eq!(count_rows(&data, Some(1)), Ok(1));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = stream(&[vec![Some(b"abc"), None], vec![Some(b""), Some(&[7; 9])]]);
        for end in 0..data.len() {
            assert!(count_rows(&data[..end], Some(2)).is_err(), "cut at {end}");
        }
    }

    #[test]
    fn malformed_streams_are_errors() {
        let good = stream(&[vec![Some(b"abc")]]);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(count_rows(&bad, None).unwrap_err().contains("signature"));
        // an OID column (bit 16) or any other critical flag
        let mut bad = good.clone();
        bad[12] = 1;
        assert!(count_rows(&bad, None).unwrap_err().contains("critical"));
        // bytes after the trailer
        let mut bad = good.clone();
        bad.push(0);
        assert!(count_rows(&bad, None).unwrap_err().contains("follow the trailer"));
        // a negative length other than -1
        let mut bad = good.clone();
        bad[21..25].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(count_rows(&bad, None).unwrap_err().contains("negative field length"));
        // a negative field count other than -1
        let mut bad = good.clone();
        bad[19..21].copy_from_slice(&(-3i16).to_be_bytes());
        assert!(count_rows(&bad, None).unwrap_err().contains("negative field count"));
        // a length beyond the end
        let mut bad = good;
        bad[21..25].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(count_rows(&bad, None).unwrap_err().contains("ends inside a field"));
    }
}
