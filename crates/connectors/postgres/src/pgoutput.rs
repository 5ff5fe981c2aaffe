//! Decoding the messages of `pgoutput`, PostgreSQL's built-in output plugin
//! (logical replication protocol version 1), into [`Decoded`] changes.
//!
//! The plugin describes each relation once per stream (`R`: its columns) before the
//! first change to it, and then sends changes by relation id, each with a tuple of
//! column values in text (the type's output function, with the stream's session
//! settings) or marked null or "unchanged TOASTed value". Only the columns of the
//! publication's column list arrive: pontoon publishes the key and replica identity
//! columns, so a change is a few bytes whatever the width of the row.

use std::collections::HashMap;

use pontoon_core::{Error, Result};

use crate::PG_EPOCH_OFFSET_MICROS;
use crate::logical::{Cell, Col, Decoded};

/// A relation as the stream described it.
#[derive(Debug)]
struct Relation {
    schema: String,
    name: String,
    columns: Vec<String>,
}

/// The state of one stream's decoding: the relations described so far.
#[derive(Debug, Default)]
pub(crate) struct PgOutput {
    relations: HashMap<u32, Relation>,
}

/// Reads the fields of one message.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn short() -> Error {
    Error::internal("pgoutput sent a message shorter than its fields")
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(short)?;
        let part = &self.bytes[self.at..end];
        self.at = end;
        Ok(part)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| short())?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| short())?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| short())?))
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<&'a str> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|&b| b == 0).ok_or_else(short)?;
        let s =
            std::str::from_utf8(&rest[..len]).map_err(|_| Error::internal("pgoutput sent a name that is not UTF-8"))?;
        self.at += len + 1;
        Ok(s)
    }

    /// `TupleData`: the values of the relation's columns, by name.
    fn tuple(&mut self, relation: &'a Relation) -> Result<Vec<Col<'a>>> {
        let n = usize::from(self.u16()?);
        if n > relation.columns.len() {
            return Err(Error::internal(format!(
                "pgoutput sent {n} values for relation {} of {} columns",
                relation.name,
                relation.columns.len()
            )));
        }
        let mut columns = Vec::with_capacity(n);
        for name in &relation.columns[..n] {
            let cell = match self.u8()? {
                b'n' => Cell::Null,
                b'u' => Cell::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let text = std::str::from_utf8(self.take(len)?)
                        .map_err(|_| Error::internal("pgoutput sent a value that is not UTF-8").in_column(name))?;
                    Cell::Text(text)
                }
                kind => {
                    return Err(
                        Error::internal(format!("pgoutput sent a value of kind {:?}", kind as char)).in_column(name)
                    );
                }
            };
            columns.push(Col { name, cell });
        }
        Ok(columns)
    }
}

impl PgOutput {
    /// The changes of one message (none for a relation description and for
    /// messages pontoon does not read: origins, types, logical messages).
    pub(crate) fn decode<'a>(&'a mut self, message: &'a [u8]) -> Result<Vec<Decoded<'a>>> {
        let mut f = Fields { bytes: message, at: 0 };
        let tag = f.u8()?;
        if tag == b'R' {
            let id = f.u32()?;
            let schema = f.string()?.to_string();
            let name = f.string()?.to_string();
            let _replica_identity = f.u8()?;
            let n = f.u16()?;
            let mut columns = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let _flags = f.u8()?;
                columns.push(f.string()?.to_string());
                let _type = f.u32()?;
                let _typmod = f.u32()?;
            }
            self.relations.insert(id, Relation { schema, name, columns });
            return Ok(Vec::new());
        }
        let relations = &self.relations;
        let relation = |id: u32| {
            relations
                .get(&id)
                .ok_or_else(|| Error::internal(format!("pgoutput sent a change of undescribed relation {id}")))
        };
        let decoded = match tag {
            b'B' => {
                let _commit_lsn = f.u64()?;
                let at = f.u64()? as i64;
                let xid = f.u32()?;
                Decoded::Begin { end: None, xid: Some(xid), committed_at_micros: Some(at + PG_EPOCH_OFFSET_MICROS) }
            }
            b'C' => {
                let _flags = f.u8()?;
                let _commit_lsn = f.u64()?;
                let end = f.u64()?;
                Decoded::Commit { end: Some(end) }
            }
            b'I' | b'U' | b'D' => {
                let rel = relation(f.u32()?)?;
                let mut old = None;
                let mut new = Vec::new();
                loop {
                    match f.u8()? {
                        b'K' | b'O' => {
                            old = Some(f.tuple(rel)?);
                            if tag == b'D' {
                                break;
                            }
                        }
                        b'N' => {
                            new = f.tuple(rel)?;
                            break;
                        }
                        other => {
                            return Err(Error::internal(format!("pgoutput sent a tuple of kind {:?}", other as char)));
                        }
                    }
                }
                Decoded::Change { schema: &rel.schema, table: &rel.name, action: tag, new, old }
            }
            b'T' => {
                let n = f.u32()?;
                let _options = f.u8()?;
                let mut out = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let rel = relation(f.u32()?)?;
                    out.push(Decoded::Change {
                        schema: &rel.schema,
                        table: &rel.name,
                        action: b'T',
                        new: Vec::new(),
                        old: None,
                    });
                }
                return Ok(out);
            }
            _ => return Ok(Vec::new()),
        };
        Ok(vec![decoded])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(id: u32, schema: &str, name: &str, columns: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(id.to_be_bytes());
        for s in [schema, name] {
            m.extend(s.as_bytes());
            m.push(0);
        }
        m.push(b'd');
        m.extend((columns.len() as u16).to_be_bytes());
        for c in columns {
            m.push(1);
            m.extend(c.as_bytes());
            m.push(0);
            m.extend(23u32.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(m: &mut Vec<u8>, values: &[Option<&str>]) {
        m.extend((values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                None => m.push(b'n'),
                Some(t) => {
                    m.push(b't');
                    m.extend((t.len() as u32).to_be_bytes());
                    m.extend(t.as_bytes());
                }
            }
        }
    }

    fn texts<'a>(cols: &'a [Col<'a>]) -> Vec<(&'a str, Option<&'a str>)> {
        cols.iter()
            .map(|c| {
                (
                    c.name,
                    match c.cell {
                        Cell::Text(t) => Some(t),
                        _ => None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn transactions_and_changes_decode() {
        let mut d = PgOutput::default();
        assert!(d.decode(&relation(7, "public", "t", &["id", "k"])).unwrap().is_empty());

        let mut begin = vec![b'B'];
        begin.extend(0x10u64.to_be_bytes());
        begin.extend(1_000_000i64.to_be_bytes());
        begin.extend(42u32.to_be_bytes());
        match &d.decode(&begin).unwrap()[..] {
            [Decoded::Begin { end: None, xid: Some(42), committed_at_micros: Some(at) }] => {
                assert_eq!(*at, PG_EPOCH_OFFSET_MICROS + 1_000_000)
            }
            other => panic!("{other:?}"),
        }

        // an update that changed the key: old key, then the new row
        let mut update = vec![b'U'];
        update.extend(7u32.to_be_bytes());
        update.push(b'K');
        tuple(&mut update, &[Some("1"), None]);
        update.push(b'N');
        tuple(&mut update, &[Some("2"), Some("x")]);
        match &d.decode(&update).unwrap()[..] {
            [Decoded::Change { schema: "public", table: "t", action: b'U', new, old: Some(old) }] => {
                assert_eq!(texts(new), vec![("id", Some("2")), ("k", Some("x"))]);
                assert_eq!(texts(old), vec![("id", Some("1")), ("k", None)]);
            }
            other => panic!("{other:?}"),
        }

        let mut delete = vec![b'D'];
        delete.extend(7u32.to_be_bytes());
        delete.push(b'K');
        tuple(&mut delete, &[Some("3")]);
        match &d.decode(&delete).unwrap()[..] {
            [Decoded::Change { action: b'D', new, old: Some(old), .. }] => {
                assert!(new.is_empty());
                assert_eq!(texts(old), vec![("id", Some("3"))]);
            }
            other => panic!("{other:?}"),
        }

        let mut truncate = vec![b'T'];
        truncate.extend(1u32.to_be_bytes());
        truncate.push(0);
        truncate.extend(7u32.to_be_bytes());
        assert!(matches!(&d.decode(&truncate).unwrap()[..], [Decoded::Change { table: "t", action: b'T', .. }]));

        let mut commit = vec![b'C', 0];
        commit.extend(0x10u64.to_be_bytes());
        commit.extend(0x38u64.to_be_bytes());
        commit.extend(1_000_000i64.to_be_bytes());
        assert!(matches!(&d.decode(&commit).unwrap()[..], [Decoded::Commit { end: Some(0x38) }]));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut d = PgOutput::default();
        // a change of a relation never described
        let mut insert = vec![b'I'];
        insert.extend(9u32.to_be_bytes());
        insert.push(b'N');
        tuple(&mut insert, &[Some("1")]);
        assert!(d.decode(&insert).unwrap_err().message().contains("undescribed relation 9"));
        // cut short anywhere
        d.decode(&relation(9, "public", "t", &["id"])).unwrap();
        for cut in 1..insert.len() {
            assert!(d.decode(&insert[..cut]).is_err(), "cut at {cut}");
        }
        assert!(d.decode(&insert).is_ok());
        // more values than columns
        let mut wide = vec![b'I'];
        wide.extend(9u32.to_be_bytes());
        wide.push(b'N');
        tuple(&mut wide, &[Some("1"), Some("2")]);
        assert!(d.decode(&wide).is_err());
    }
}
