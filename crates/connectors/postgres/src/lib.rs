//! pontoon-postgres: the PostgreSQL connector.
//!
//! A [`PgConnector`] is built from a `postgres://` URL without I/O and hands out a
//! [`Reader`] and a [`Writer`], each on its own tokio-postgres connection. Every
//! session runs in UTC with ISO dates and round-trip float output. The reader
//! describes tables from `pg_catalog` ([`catalog`]), walks keys and scans key ranges
//! with SQL whose key literals come from [`sql`], and decodes every cell from the
//! binary result format itself ([`decode`]): numerics stay exact text, dates and
//! timestamps are shifted from PostgreSQL's 2000-01-01 epoch to 1970. The writer
//! loads rows by binary `COPY` ([`encode`]) in one transaction and, when the rows were
//! written before (a unique violation), redoes the batch through a staging table with
//! `INSERT ... ON CONFLICT DO UPDATE`. Between two PostgreSQL databases whose columns
//! have the same types, rows can also pass through undecoded: the reader's raw scan
//! returns the server's binary `COPY` stream (rows counted by [`copy_stream`]), and
//! the writer sends it as it is, by the same direct and staging paths. Driver errors
//! are mapped to portable [`ErrorKind`](pontoon_core::ErrorKind)s by SQLSTATE
//! ([`errors`]); messages carry the server's message and SQLSTATE, never row values
//! or the password.
//!
//! For the online sync the reader re-reads rows by key (`Reader::fetch_keys`: `key IN
//! (...)` with the scan's filter and partition, decoded like a scan) and the writer
//! applies a batch in one transaction (`Writer::apply`: deletes by key, then the rows
//! through the staging table and `INSERT ... SELECT ... ON CONFLICT DO UPDATE` whose
//! `WHERE` is the version guard). Changes are captured either by triggers writing a
//! change-log table that is read as a queue ([`triggers`]) or by logical decoding
//! ([`logical`]) through pgoutput and a publication of the captured tables
//! (`pgoutput`) or, where pontoon may not publish them, wal2json (`wal2json`),
//! streamed over the replication protocol (`replication`).
//!
//! For `pontoon verify`, the reader computes a key range's row count and
//! order-independent hash in the server (`Reader::checksum`, module `checksum`): one
//! `SELECT count(*), sum(<row hash>)` whose row hash chains PostgreSQL's 64-bit
//! seeded hash functions over the columns, so no row leaves the server.
//!
//! Tables live in the connection's `current_schema()`; names are used as given and
//! quoted.

pub mod catalog;
mod checksum;
pub mod copy_stream;
pub mod decode;
pub mod encode;
pub mod errors;
pub mod logical;
pub mod numeric;
mod pgoutput;
mod reader;
mod replication;
mod session;
pub mod sql;
pub mod triggers;
mod wal2json;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use pontoon_core::capture::{Capture, CaptureMode, CaptureSpec};
use pontoon_core::value::days_from_civil;
use pontoon_core::{
    ColumnType, Connector, Digest, Engine, Error, Limits, Reader, Result, SecretUrl, Writer, redact_url,
};
use tokio_postgres::Config;

pub use logical::{LogicalCapture, Plugin};
pub use reader::PgReader;
pub use triggers::TriggerCapture;
pub use writer::PgWriter;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// A PostgreSQL database, as configured by a `postgres://user:pass@host:port/db` URL.
///
/// Creating it does no I/O; [`Connector::reader`] and [`Connector::writer`] each
/// open a new connection (without TLS).
#[derive(Clone)]
pub struct PgConnector {
    config: Config,
    /// The URL without its password, for messages.
    redacted: String,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector").field("url", &self.redacted).finish()
    }
}

impl PgConnector {
    /// Parses the URL. A malformed URL, or one without a user or host, is an
    /// [`ErrorKind::Config`](pontoon_core::ErrorKind::Config) error whose message
    /// shows the URL without its password.
    pub fn new(url: &SecretUrl) -> Result<PgConnector> {
        let raw = url.expose();
        let redacted = redact_url(raw);
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err(Error::config(format!(
                "{redacted} is not a PostgreSQL URL (expected postgres://user:password@host:port/database)"
            )));
        }
        let mut config = Config::from_str(raw).map_err(|e| {
            // The parser names the offending part (never its value); keep its cause
            // but not the driver error itself, which carries nothing more.
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            Error::config(format!("invalid PostgreSQL URL {redacted}{cause}"))
        })?;
        if config.get_user().is_none_or(str::is_empty) {
            return Err(Error::config(format!("PostgreSQL URL {redacted} names no user")));
        }
        if config.get_hosts().is_empty() {
            return Err(Error::config(format!("PostgreSQL URL {redacted} names no host")));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(15));
        }
        if config.get_application_name().is_none() {
            config.application_name("pontoon");
        }
        Ok(PgConnector { config, redacted })
    }

    /// The URL without its password.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }
}

/// Days since 1970 of PostgreSQL's first date, 4714-11-24 BC (Julian day 0).
fn pg_min_date() -> i64 {
    days_from_civil(-4713, 11, 24)
}

/// PostgreSQL's limits (docs/type-mapping.md): no NUL in text, float and numeric NaN
/// and infinities allowed, dates from 4714-11-24 BC to 5874897-12-31, times up to
/// 24:00:00, timestamps from 4714-11-24 BC (the upper end, 294276 AD, lies beyond
/// what a `Value` can hold).
pub fn pg_limits() -> Limits {
    Limits {
        text_nul: false,
        float_nan: true,
        float_infinity: true,
        float_negative_zero: true,
        decimal_special: true,
        date_days: (pg_min_date(), days_from_civil(5_874_897, 12, 31)),
        time_micros: (0, 86_400_000_000),
        timestamp_micros: (pg_min_date() * pontoon_core::value::MICROS_PER_DAY, i64::MAX),
    }
}

/// The PostgreSQL type created for a portable type (docs/type-mapping.md, "Creating").
pub fn pg_native_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int { bytes, unsigned } => match (bytes, unsigned) {
            (1 | 2, false) | (1, true) => "smallint".into(),
            (3 | 4, false) | (2 | 3, true) => "integer".into(),
            (4, true) | (_, false) => "bigint".into(),
            (_, true) => "numeric(20,0)".into(),
        },
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Decimal { precision: Some(p), scale } if (1..=1000).contains(p) => {
            format!("numeric({p},{})", scale.unwrap_or(0))
        }
        ColumnType::Decimal { .. } => "numeric".into(),
        // varchar's limit is 10485760 characters
        ColumnType::Text { max_chars: Some(n) } if (1..=10_485_760).contains(n) => {
            format!("varchar({n})")
        }
        ColumnType::Text { .. } => "text".into(),
        ColumnType::Bytes { .. } => "bytea".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Uuid => "uuid".into(),
    }
}

#[async_trait]
impl Connector for PgConnector {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn digests(&self) -> &'static [Digest] {
        &[Digest::Native]
    }

    fn limits(&self) -> Limits {
        pg_limits()
    }

    fn native_type(&self, ty: &ColumnType) -> String {
        pg_native_type(ty)
    }

    async fn reader(&self) -> Result<Box<dyn Reader>> {
        let session = session::Session::connect(&self.config, &self.redacted).await?;
        Ok(Box::new(PgReader::new(session)))
    }

    async fn writer(&self) -> Result<Box<dyn Writer>> {
        let session = session::Session::connect(&self.config, &self.redacted).await?;
        Ok(Box::new(PgWriter::new(session)))
    }

    /// Trigger capture ([`TriggerCapture`]) or logical decoding
    /// ([`LogicalCapture`]); neither does I/O before `Capture::start`/`preflight`.
    fn capture(&self, spec: &CaptureSpec) -> Result<Box<dyn Capture>> {
        triggers::check_job(&spec.job)?;
        Ok(match spec.mode {
            CaptureMode::Triggers => Box::new(TriggerCapture::new(self.clone(), spec.job.clone())),
            CaptureMode::Native => Box::new(LogicalCapture::new(self.clone(), spec.job.clone())),
        })
    }
}

impl PgConnector {
    /// Opens a reader with its concrete type (the trait's [`Connector::reader`]
    /// boxes it).
    pub async fn connect_reader(&self) -> Result<PgReader> {
        let session = session::Session::connect(&self.config, &self.redacted).await?;
        Ok(PgReader::new(session))
    }

    /// Opens a writer with its concrete type.
    pub async fn connect_writer(&self) -> Result<PgWriter> {
        let session = session::Session::connect(&self.config, &self.redacted).await?;
        Ok(PgWriter::new(session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pontoon_core::ErrorKind;

    #[test]
    fn bad_urls_are_config_errors_without_password() {
        for url in ["mysql://u:hunter2@h/db", "postgres://u:hunter2@h:notaport/db", "postgres://:hunter2@h/db"] {
            let e = PgConnector::new(&SecretUrl::new(url)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let c = PgConnector::new(&SecretUrl::new("postgres://u:hunter2@h:5433/db")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn native_types_follow_the_mapping() {
        let int = |bytes, unsigned| ColumnType::Int { bytes, unsigned };
        assert_eq!(pg_native_type(&int(1, false)), "smallint");
        assert_eq!(pg_native_type(&int(3, false)), "integer");
        assert_eq!(pg_native_type(&int(8, false)), "bigint");
        assert_eq!(pg_native_type(&int(2, true)), "integer");
        assert_eq!(pg_native_type(&int(4, true)), "bigint");
        assert_eq!(pg_native_type(&int(8, true)), "numeric(20,0)");
        assert_eq!(pg_native_type(&ColumnType::Decimal { precision: Some(12), scale: Some(3) }), "numeric(12,3)");
        assert_eq!(pg_native_type(&ColumnType::Text { max_chars: Some(5) }), "varchar(5)");
        assert_eq!(pg_native_type(&ColumnType::Json), "jsonb");
        assert_eq!(pg_native_type(&ColumnType::Float64), "double precision");
    }

    #[test]
    fn limits_match_postgres() {
        let l = pg_limits();
        assert_eq!(pontoon_core::value::format_date(l.date_days.0 as i32), "-4713-11-24");
        assert_eq!(pontoon_core::value::format_date(l.date_days.1 as i32), "5874897-12-31");
        assert!(!l.text_nul && l.float_nan && l.decimal_special);
    }
}
