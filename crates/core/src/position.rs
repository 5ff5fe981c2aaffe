//! Typed positions in a source's change log. One enum for every capture mode, with
//! `Display`/`FromStr` so a position can be stored as text and shown to the operator.
//!
//! Positions of one kind are totally ordered; a checkpoint never moves backward
//! ([`Position::advance_to`] refuses it).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Where a change stream stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// A PostgreSQL WAL location (LSN), e.g. `0/16B3748`.
    PgLsn { lsn: u64 },
    /// A MariaDB/MySQL binlog file and byte offset.
    Binlog { file: String, offset: u64 },
    /// A sequence number of pontoon's trigger change-log table.
    TriggerSeq { seq: i64 },
}

impl Position {
    /// Orders two positions of the same kind; `None` across kinds (and across binlog
    /// files whose names do not order, which does not happen with MariaDB's numbering).
    pub fn compare(&self, other: &Position) -> Option<Ordering> {
        match (self, other) {
            (Position::PgLsn { lsn: a }, Position::PgLsn { lsn: b }) => Some(a.cmp(b)),
            (Position::Binlog { file: fa, offset: oa }, Position::Binlog { file: fb, offset: ob }) => {
                Some(binlog_index(fa).cmp(&binlog_index(fb)).then_with(|| fa.cmp(fb)).then(oa.cmp(ob)))
            }
            (Position::TriggerSeq { seq: a }, Position::TriggerSeq { seq: b }) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Replaces `self` with `next` if `next` is not behind it. A position moving
    /// backward is an internal error: it would replay changes over newer data.
    pub fn advance_to(&mut self, next: Position) -> Result<()> {
        match self.compare(&next) {
            Some(Ordering::Less | Ordering::Equal) => {
                *self = next;
                Ok(())
            }
            Some(Ordering::Greater) => Err(Error::new(
                ErrorKind::Internal,
                format!("change position would move backward from {self} to {next}"),
            )),
            None => Err(Error::new(ErrorKind::Internal, format!("positions {self} and {next} are of different kinds"))),
        }
    }
}

/// The numeric suffix of a binlog file name (`binlog.000012` -> 12).
fn binlog_index(file: &str) -> u64 {
    file.rsplit('.').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::PgLsn { lsn } => write!(f, "lsn:{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
            Position::Binlog { file, offset } => write!(f, "binlog:{file}:{offset}"),
            Position::TriggerSeq { seq } => write!(f, "trigger:{seq}"),
        }
    }
}

impl FromStr for Position {
    type Err = Error;

    fn from_str(s: &str) -> Result<Position> {
        let bad = || Error::new(ErrorKind::State, format!("not a change position: `{s}`"));
        if let Some(rest) = s.strip_prefix("lsn:") {
            let (hi, lo) = rest.split_once('/').ok_or_else(bad)?;
            let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
            let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
            if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
                return Err(bad());
            }
            return Ok(Position::PgLsn { lsn: (hi << 32) | lo });
        }
        if let Some(rest) = s.strip_prefix("binlog:") {
            let (file, offset) = rest.rsplit_once(':').ok_or_else(bad)?;
            if file.is_empty() {
                return Err(bad());
            }
            return Ok(Position::Binlog { file: file.to_string(), offset: offset.parse().map_err(|_| bad())? });
        }
        if let Some(rest) = s.strip_prefix("trigger:") {
            return Ok(Position::TriggerSeq { seq: rest.parse().map_err(|_| bad())? });
        }
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        for p in [
            Position::PgLsn { lsn: (1 << 32) | 0x016B_3748 },
            Position::Binlog { file: "binlog.000012".into(), offset: 4567 },
            Position::TriggerSeq { seq: -3 },
        ] {
            let text = p.to_string();
            assert_eq!(text.parse::<Position>().unwrap(), p, "{text}");
        }
        assert_eq!(Position::PgLsn { lsn: (1 << 32) | 0x016B_3748 }.to_string(), "lsn:1/16B3748");
        assert!("lsn:zz".parse::<Position>().is_err());
        assert!("binlog::5".parse::<Position>().is_err());
    }

    #[test]
    fn positions_only_move_forward() {
        let mut p = Position::Binlog { file: "binlog.000009".into(), offset: 900 };
        p.advance_to(Position::Binlog { file: "binlog.000010".into(), offset: 4 }).unwrap();
        assert!(p.advance_to(Position::Binlog { file: "binlog.000009".into(), offset: 999 }).is_err());
        assert!(p.advance_to(Position::TriggerSeq { seq: 1 }).is_err());
        let mut l = Position::PgLsn { lsn: 10 };
        l.advance_to(Position::PgLsn { lsn: 10 }).unwrap();
        assert!(l.advance_to(Position::PgLsn { lsn: 9 }).is_err());
    }
}
