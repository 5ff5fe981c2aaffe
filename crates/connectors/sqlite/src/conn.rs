//! Opening SQLite connections and running blocking driver calls off the async
//! runtime.
//!
//! rusqlite is synchronous: each reader and writer owns one [`Connection`] behind a
//! mutex and runs every operation on tokio's blocking pool. The mutex is uncontended
//! (a reader or writer serves one task at a time); it exists so the connection can be
//! lent to the blocking thread and survive a cancelled call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pontoon_core::{Error, Result};
use rusqlite::{Connection, OpenFlags};

use crate::error::db_error;

/// How long a statement waits for another connection's lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Prepared statements kept per connection (scans, key walks and upserts of the
/// tables a worker handles).
const STATEMENT_CACHE: usize = 64;

/// A connection shared with the blocking thread pool.
#[derive(Debug, Clone)]
pub(crate) struct Handle(Arc<Mutex<Connection>>);

impl Handle {
    /// Runs `f` with the connection on tokio's blocking pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        blocking(move || {
            // A panic in an earlier call poisons the mutex; the connection itself is
            // still sound (rusqlite rolls back an open transaction on unwind).
            let mut conn = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
    }
}

/// Runs a blocking closure on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("SQLite task failed: {e}")))?
}

/// Opens an existing database read-only.
pub(crate) async fn open_reader(path: PathBuf) -> Result<Handle> {
    blocking(move || {
        if !path.exists() {
            return Err(Error::config(format!("SQLite database {} does not exist", path.display())));
        }
        if path.is_dir() {
            return Err(Error::config(format!("SQLite database {} is a directory", path.display())));
        }
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(db_error)?;
        configure(&conn)?;
        tracing::debug!(path = %path.display(), "opened sqlite database for reading");
        Ok(Handle(Arc::new(Mutex::new(conn))))
    })
    .await
}

/// Opens a database read-write, creating the file if missing, in WAL mode.
pub(crate) async fn open_writer(path: PathBuf) -> Result<Handle> {
    blocking(move || {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(Error::config(format!(
                "directory {} of SQLite database {} does not exist",
                dir.display(),
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_error)?;
        configure(&conn)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)).map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_error)?;
        tracing::debug!(path = %path.display(), "opened sqlite database for writing");
        Ok(Handle(Arc::new(Mutex::new(conn))))
    })
    .await
}

/// Opens an existing source database read-write for change capture, which installs
/// triggers and a log table and deletes released log rows. Unlike [`open_writer`] it
/// neither creates the file nor changes its journal mode (the application's choice).
/// When the file cannot be written, SQLite opens it read-only (see
/// `Connection::is_readonly`).
pub(crate) async fn open_source(path: PathBuf) -> Result<Handle> {
    blocking(move || {
        if !path.is_file() {
            return Err(Error::config(format!("SQLite database {} does not exist", path.display())));
        }
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(db_error)?;
        configure(&conn)?;
        tracing::debug!(path = %path.display(), "opened sqlite database for change capture");
        Ok(Handle(Arc::new(Mutex::new(conn))))
    })
    .await
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The path of a database as given in a URL, resolved against `base_dir`.
pub(crate) fn resolve(path: &str, base_dir: &Path) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) }
}
