//! Helpers shared by the SQLite connector's test files: a temporary directory holding
//! the database file, and schemas and scans as the engine builds them.

// Each test file uses a part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pontoon_core::{Column, ColumnType, Connector, ScanSpec, SecretUrl, TableSchema};
use pontoon_sqlite::SqliteConnector;

/// A directory removed when the test ends.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "pontoon-sqlite-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn db_path(&self) -> PathBuf {
        self.0.join("test.db")
    }

    pub fn connector(&self) -> SqliteConnector {
        SqliteConnector::new(&SecretUrl::new("sqlite:test.db"), self.path()).unwrap()
    }

    /// A plain connection for setting up data with SQL (or acting as the application).
    pub fn raw(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.db_path()).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), native: String::new(), ty, nullable, has_default: false }
}

/// A schema as the engine would hand it to `create_table`/`upsert` (native types
/// filled in by the connector).
pub fn schema(c: &SqliteConnector, name: &str, cols: Vec<Column>, key: &[&str]) -> TableSchema {
    TableSchema {
        name: name.into(),
        columns: cols
            .into_iter()
            .map(|mut col| {
                col.native = c.native_type(&col.ty);
                col
            })
            .collect(),
        primary_key: key.iter().map(|k| k.to_string()).collect(),
    }
}

/// A scan of every column of `schema`, by its primary key.
pub fn scan_of(schema: &TableSchema) -> ScanSpec {
    ScanSpec::every_column(schema, &schema.primary_key)
}
