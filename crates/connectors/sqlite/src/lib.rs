//! pontoon-sqlite: SQLite as a source and as a target.
//!
//! SQLite has no column types, only declared types and five storage classes per value.
//! This crate reads a column by its declared type (mapped to a portable [`ColumnType`]
//! as `docs/type-mapping.md` says) and accepts whatever SQLite's affinities made of the
//! stored value. It writes every portable value in one storage form (booleans as 0/1,
//! decimals and JSON as text in the TEXT-affinity types `DECIMAL_TEXT` and `JSON_TEXT`,
//! dates and times as ISO 8601 text with six fraction digits, UUIDs as hyphenated
//! text) and binds key values in that same form, so range predicates compare what is
//! stored. What SQLite would silently alter is refused with an error naming table, key
//! and column: NaN (stored as NULL), -0.0 in a REAL column (stored as 0), integers
//! above `i64::MAX`, decimals a NUMERIC-affinity column would round.
//!
//! A [`SqliteConnector`] is built from a URL without I/O; its [`Reader`] opens the file
//! read-only and its [`Writer`] read-write in WAL mode, creating it if missing. As a
//! sync source it captures changes with triggers ([`TriggerCapture`]: a log table
//! filled by triggers on the captured tables).
//! rusqlite is synchronous, so every call runs on tokio's blocking pool.

mod catalog;
mod conn;
mod error;
mod reader;
mod storage;
mod triggers;
mod types;
mod writer;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pontoon_core::capture::{Capture, CaptureMode, CaptureSpec};
use pontoon_core::value::{MICROS_PER_DAY, MICROS_PER_SECOND, days_from_civil};
use pontoon_core::{ColumnType, Connector, Engine, Error, Limits, Reader, Result, SecretUrl, Writer, redact_url};

pub use reader::SqliteReader;
pub use triggers::TriggerCapture;
pub use writer::SqliteWriter;

/// One SQLite database file, from an `sqlite:` URL.
#[derive(Debug, Clone)]
pub struct SqliteConnector {
    path: PathBuf,
}

impl SqliteConnector {
    /// Parses `sqlite:path`, `sqlite://path` or `sqlite:///abs/path` (the scheme in any
    /// case). A relative path is relative to `base_dir`, the job file's directory.
    /// Everything after the scheme is the file name (no `?` options are interpreted).
    /// In-memory databases are refused: every connection would see its own. No I/O.
    pub fn new(url: &SecretUrl, base_dir: &Path) -> Result<SqliteConnector> {
        let raw = url.expose();
        let rest = raw
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("sqlite:"))
            .map(|_| &raw[7..])
            .ok_or_else(|| Error::config(format!("{} is not an sqlite: URL", redact_url(raw))))?;
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(Error::config(format!("SQLite URL {} names no database file", redact_url(raw))));
        }
        if path == ":memory:" || path.starts_with("file:") {
            return Err(Error::config(format!(
                "SQLite URL {} must name a database file (in-memory and file: URIs are not supported)",
                redact_url(raw)
            )));
        }
        Ok(SqliteConnector { path: conn::resolve(path, base_dir) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// 838:59:59.999999, the TIME range pontoon shares with MariaDB.
const TIME_MAX_MICROS: i64 = (838 * 3600 + 59 * 60 + 59) * MICROS_PER_SECOND + 999_999;

#[async_trait]
impl Connector for SqliteConnector {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    /// SQLite stores NaN as NULL, so NaN is refused; dates and timestamps stay within
    /// four-digit years so that their text sorts in time order.
    fn limits(&self) -> Limits {
        let first_day = days_from_civil(0, 1, 1);
        let last_day = days_from_civil(9999, 12, 31);
        Limits {
            text_nul: true,
            float_nan: false,
            float_infinity: true,
            float_negative_zero: false,
            decimal_special: true,
            date_days: (first_day, last_day),
            time_micros: (-TIME_MAX_MICROS, TIME_MAX_MICROS),
            timestamp_micros: (first_day * MICROS_PER_DAY, (last_day + 1) * MICROS_PER_DAY - 1),
        }
    }

    fn native_type(&self, ty: &ColumnType) -> String {
        types::native_type(ty)
    }

    async fn reader(&self) -> Result<Box<dyn Reader>> {
        let conn = conn::open_reader(self.path.clone()).await?;
        Ok(Box::new(SqliteReader::new(conn)))
    }

    async fn writer(&self) -> Result<Box<dyn Writer>> {
        let conn = conn::open_writer(self.path.clone()).await?;
        Ok(Box::new(SqliteWriter::new(conn)))
    }

    /// `triggers` only ([`TriggerCapture`]): SQLite keeps no change log of its own.
    fn capture(&self, spec: &CaptureSpec) -> Result<Box<dyn Capture>> {
        let valid = !spec.job.is_empty()
            && spec.job.len() <= 40
            && spec.job.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::config(format!(
                "sync job name `{}` must be 1 to 40 characters of a-z, 0-9 and _ (it names the change log table and \
                 triggers)",
                spec.job
            )));
        }
        match spec.mode {
            CaptureMode::Triggers => Ok(Box::new(TriggerCapture::new(self.path.clone(), spec))),
            CaptureMode::Native => Err(Error::config(format!(
                "SQLite database {} has no native change log to capture from: use capture = \"triggers\" in [sync]",
                self.path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(url: &str) -> Result<PathBuf> {
        SqliteConnector::new(&SecretUrl::new(url), Path::new("/jobs")).map(|c| c.path)
    }

    #[test]
    fn urls() {
        assert_eq!(path_of("sqlite:shop.db").unwrap(), Path::new("/jobs/shop.db"));
        assert_eq!(path_of("sqlite://data/shop.db").unwrap(), Path::new("/jobs/data/shop.db"));
        assert_eq!(path_of("sqlite:///var/shop.db").unwrap(), Path::new("/var/shop.db"));
        assert_eq!(path_of("SQLITE:/var/shop.db").unwrap(), Path::new("/var/shop.db"));
        assert!(path_of("sqlite:").is_err());
        assert!(path_of("sqlite://").is_err());
        assert!(path_of("sqlite::memory:").is_err());
        assert!(path_of("postgres://a:b@h/db").unwrap_err().to_string().contains("a:***@h"));
        assert!(path_of("sql").is_err());
    }

    #[test]
    fn limits_are_four_digit_years() {
        let c = SqliteConnector::new(&SecretUrl::new("sqlite:x.db"), Path::new("/")).unwrap();
        let l = c.limits();
        assert_eq!(pontoon_core::value::format_date(l.date_days.0 as i32), "0000-01-01");
        assert_eq!(pontoon_core::value::format_date(l.date_days.1 as i32), "9999-12-31");
        assert_eq!(pontoon_core::value::format_timestamp(l.timestamp_micros.1), "9999-12-31 23:59:59.999999");
        assert_eq!(pontoon_core::value::format_time(l.time_micros.0), "-838:59:59.999999");
    }
}
