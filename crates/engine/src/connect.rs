//! Turns a job's URLs into connectors. The only place that knows every engine crate.

use std::path::Path;
use std::sync::Arc;

use pontoon_core::{Connector, Error, Result, SecretUrl};

/// Builds the connector for `url` (no I/O). Relative SQLite paths are relative to
/// `base_dir`, the job file's directory.
pub fn connector(url: &SecretUrl, base_dir: &Path) -> Result<Arc<dyn Connector>> {
    let raw = url.expose();
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(Arc::new(pontoon_postgres::PgConnector::new(url)?))
    } else if raw.starts_with("mysql://") {
        Ok(Arc::new(pontoon_mysql::MysqlConnector::new(url)?))
    } else if let Some(rest) = raw.strip_prefix("mariadb://") {
        Ok(Arc::new(pontoon_mysql::MysqlConnector::new(&SecretUrl::new(format!("mysql://{rest}")))?))
    } else if raw.starts_with("sqlite:") {
        Ok(Arc::new(pontoon_sqlite::SqliteConnector::new(url, base_dir)?))
    } else {
        Err(Error::config(format!("unsupported database URL {url}: expected postgres://, mysql:// or sqlite:")))
    }
}
