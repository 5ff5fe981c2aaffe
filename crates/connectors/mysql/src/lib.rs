//! pontoon-mysql: the MariaDB (and MySQL protocol) connector.
//!
//! A [`MysqlConnector`] is built from a `mysql://user:pass@host:port/db` URL without I/O
//! and hands out [`pontoon_core::Reader`]s and [`pontoon_core::Writer`]s, each on its own
//! `mysql_async` connection. Every session runs in strict SQL mode (bad values are
//! errors, never silent truncations), in UTC and in `utf8mb4`. The catalog is read from
//! `information_schema` (`catalog`), column types are mapped both ways as documented in
//! `docs/type-mapping.md` (`types`), rows are read with the binary protocol and decoded
//! by source type (`values`), keyset predicates are rendered with literals (`sql`), and
//! writes are `LOAD DATA LOCAL INFILE ... REPLACE` fed from memory (multi-row prepared
//! `INSERT ... ON DUPLICATE KEY UPDATE` for small batches, for tables a `REPLACE` would
//! harm, and when the server refuses `LOAD DATA LOCAL`), in one transaction that fails
//! on any server warning. Server error codes are mapped to portable
//! [`pontoon_core::ErrorKind`]s in `error`.
//!
//! For online sync, readers re-read rows by key (`fetch_keys`, one `IN` statement per
//! 1000 keys), writers apply a batch of upserts and deletes in one transaction with an
//! optional version guard (`apply`), and [`MysqlConnector`] hands out change captures:
//! [`TriggerCapture`] (a change log filled by triggers, `triggers`) and
//! [`BinlogCapture`] (the row binlog, `binlog`).
//!
//! For `pontoon verify`, readers compute a key range's row count and order-independent
//! hash in the server (`Reader::checksum`, module `checksum`): one `SELECT COUNT(*),
//! SUM(<CRC32C of each row's canonical text>)`, so no row leaves the server.

mod binlog;
mod catalog;
mod checksum;
mod error;
mod reader;
mod sql;
mod triggers;
mod types;
mod values;
mod writer;

use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use pontoon_core::capture::{Capture, CaptureMode, CaptureSpec};
use pontoon_core::value::{MICROS_PER_DAY, days_from_civil};
use pontoon_core::{
    ColumnType, Connector, Digest, Engine, Error, Limits, Reader, Result, SecretUrl, Writer, redact_url,
};

pub use binlog::BinlogCapture;
pub use reader::MysqlReader;
pub use triggers::TriggerCapture;
pub use writer::MysqlWriter;

/// The session settings every connection runs before its first statement.
///
/// `NO_AUTO_VALUE_ON_ZERO` keeps an explicit key `0` in an `AUTO_INCREMENT` column
/// (instead of generating a new id); strict mode turns bad values into errors; UTC makes
/// `timestamp` columns read and write as UTC; autocommit (whatever the server's
/// default) keeps each scan its own fresh snapshot.
const SESSION_SETUP: [&str; 2] = [
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
     time_zone = '+00:00', autocommit = 1",
    "SET NAMES utf8mb4",
];

/// How long opening a connection (TCP, login and session setup) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A MariaDB database named by a `mysql://` URL. Creating it does no I/O.
#[derive(Clone)]
pub struct MysqlConnector {
    opts: Opts,
    /// The URL without its password, for messages.
    shown: String,
    database: String,
    /// When writers use `LOAD DATA LOCAL`.
    load: writer::LoadSettings,
}

impl MysqlConnector {
    /// Parses `mysql://user:pass@host:port/db`. The database is required: it is the
    /// schema whose tables are read or written. A malformed URL is a
    /// [`pontoon_core::ErrorKind::Config`] error that never shows the password.
    pub fn new(url: &SecretUrl) -> Result<MysqlConnector> {
        let shown = redact_url(url.expose());
        let opts = Opts::from_url(url.expose()).map_err(|e| {
            // The URL error of mysql_async never repeats the URL; ours shows it redacted.
            Error::config(format!("invalid MariaDB URL {shown}: {e}"))
        })?;
        let Some(database) = opts.db_name().map(str::to_string) else {
            return Err(Error::config(format!(
                "the MariaDB URL {shown} names no database (mysql://user:password@host:port/database)"
            )));
        };
        // Statements are cached per connection: the writer's batch statement is
        // prepared once. The connection goes where the URL says: mysql_async would
        // otherwise switch a loopback TCP connection to the server's unix socket, where
        // the same user name may be another account ('app'@'localhost').
        let explicit_socket = url.expose().contains("prefer_socket=");
        let mut builder = OptsBuilder::from_opts(opts).stmt_cache_size(64);
        if !explicit_socket {
            builder = builder.prefer_socket(false);
        }
        let opts = Opts::from(builder);
        Ok(MysqlConnector { opts, shown, database, load: writer::LoadSettings::default() })
    }

    /// Writers load batches of at least `rows` rows with `LOAD DATA LOCAL INFILE` and
    /// write smaller ones with prepared `INSERT ... ON DUPLICATE KEY UPDATE` (default:
    /// 200, where `LOAD DATA`'s extra round trip stops costing more than it saves).
    /// `usize::MAX` never uses `LOAD DATA`; 0 always does, where the table allows it.
    pub fn with_load_data_min_rows(mut self, rows: usize) -> MysqlConnector {
        self.load.min_rows = rows;
        self
    }

    /// A `LOAD DATA` statement's file is cut once it passes `bytes` (default 64 MiB):
    /// a larger batch takes several statements in its one transaction.
    pub fn with_load_data_max_bytes(mut self, bytes: usize) -> MysqlConnector {
        self.load.max_bytes = bytes.max(1);
        self
    }

    /// The database (schema) this connector reads and writes.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Opens a connection and runs the session setup.
    async fn connect(&self) -> Result<Conn> {
        let attempt = async {
            let mut conn =
                Conn::new(self.opts.clone()).await.map_err(|e| error::connect_error(e, &self.opts, &self.shown))?;
            for stmt in SESSION_SETUP {
                conn.query_drop(stmt).await.map_err(error::map)?;
            }
            Ok::<Conn, Error>(conn)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                pontoon_core::ErrorKind::Connect,
                format!("could not connect to MariaDB at {} within {} seconds", self.shown, CONNECT_TIMEOUT.as_secs()),
            )),
        }
    }
}

/// Shows the URL without its password (the driver's options would show it).
impl std::fmt::Debug for MysqlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConnector").field("url", &self.shown).finish_non_exhaustive()
    }
}

/// MariaDB's own range limits (see `docs/type-mapping.md`).
fn mariadb_limits() -> Limits {
    let first_day = days_from_civil(1000, 1, 1);
    let last_day = days_from_civil(9999, 12, 31);
    let max_time = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;
    Limits {
        text_nul: true,
        float_nan: false,
        float_infinity: false,
        float_negative_zero: false,
        decimal_special: false,
        date_days: (first_day, last_day),
        time_micros: (-max_time, max_time),
        timestamp_micros: (first_day * MICROS_PER_DAY, last_day * MICROS_PER_DAY + MICROS_PER_DAY - 1),
    }
}

#[async_trait]
impl Connector for MysqlConnector {
    fn engine(&self) -> Engine {
        Engine::Mysql
    }

    fn digests(&self) -> &'static [Digest] {
        &[Digest::Native, Digest::Portable]
    }

    fn limits(&self) -> Limits {
        mariadb_limits()
    }

    fn native_type(&self, ty: &ColumnType) -> String {
        types::native_type(ty)
    }

    async fn reader(&self) -> Result<Box<dyn Reader>> {
        let mut conn = self.connect().await?;
        // Every read is one autocommit statement, so this changes nothing for scans;
        // for the locking re-reads of `fetch_keys` it means record locks only, no gap
        // locks that would hold back the application's inserts.
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.map_err(error::map)?;
        Ok(Box::new(MysqlReader::new(conn, self.database.clone())))
    }

    async fn writer(&self) -> Result<Box<dyn Writer>> {
        let conn = self.connect().await?;
        Ok(Box::new(MysqlWriter::new(conn, self.database.clone(), self.load)))
    }

    fn capture(&self, spec: &CaptureSpec) -> Result<Box<dyn Capture>> {
        match spec.mode {
            CaptureMode::Native => Ok(Box::new(BinlogCapture::new(self.clone(), spec.clone()))),
            CaptureMode::Triggers => Ok(Box::new(TriggerCapture::new(self.clone(), spec))),
        }
    }
}

#[cfg(test)]
mod tests {
    use pontoon_core::ErrorKind;

    use super::*;

    #[test]
    fn bad_urls_are_config_errors_without_password() {
        let e = MysqlConnector::new(&SecretUrl::new("postgres://u:hunter2@h/db")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = MysqlConnector::new(&SecretUrl::new("mysql://u:hunter2@h:99999/db")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = MysqlConnector::new(&SecretUrl::new("mysql://u:hunter2@h:3306")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = MysqlConnector::new(&SecretUrl::new("mysql://u:p%40ss@h:3306/shop")).unwrap();
        assert_eq!(c.database(), "shop");
        assert!(!format!("{c:?}").contains("p%40ss"));
    }

    #[test]
    fn limits_match_the_documented_ranges() {
        let l = mariadb_limits();
        assert_eq!(pontoon_core::value::format_date(l.date_days.0 as i32), "1000-01-01");
        assert_eq!(pontoon_core::value::format_timestamp(l.timestamp_micros.1), "9999-12-31 23:59:59.999999");
        assert_eq!(pontoon_core::value::format_time(l.time_micros.0), "-838:59:59.999999");
    }
}
