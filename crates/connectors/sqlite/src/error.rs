//! SQLite errors in portable terms: result codes mapped to [`ErrorKind`]s.
//!
//! SQLite's messages name tables and columns, never values, so they are kept as the
//! error's source and shown to the operator.

use pontoon_core::{Error, ErrorKind};
use rusqlite::ErrorCode;
use rusqlite::ffi;

/// Converts a driver error: busy/locked is transient (worth retrying), a NOT NULL
/// violation or an oversized value is a value the target cannot hold, a missing
/// table or column is a schema problem, a file that cannot be opened or read is a
/// connection problem, anything else is a database error.
pub(crate) fn db_error(err: rusqlite::Error) -> Error {
    let kind = kind_of(&err);
    let mut e = Error::new(kind, format!("SQLite: {err}"));
    if kind == ErrorKind::ValueRange
        && let Some(column) = not_null_column(&err)
    {
        e = e.in_column(column);
    }
    e.with_source(err)
}

/// The SQLite result code and message of a driver error, if SQLite reported it.
/// (`SqlInputError` is how rusqlite reports an error at a token of the SQL text.)
fn failure(err: &rusqlite::Error) -> Option<(ffi::Error, &str)> {
    match err {
        rusqlite::Error::SqliteFailure(f, message) => Some((*f, message.as_deref().unwrap_or(""))),
        rusqlite::Error::SqlInputError { error, msg, .. } => Some((*error, msg.as_str())),
        _ => None,
    }
}

fn kind_of(err: &rusqlite::Error) -> ErrorKind {
    let Some((failure, message)) = failure(err) else {
        return ErrorKind::Database;
    };
    match failure.code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SchemaChanged => ErrorKind::Transient,
        ErrorCode::ConstraintViolation if failure.extended_code == ffi::SQLITE_CONSTRAINT_NOTNULL => {
            ErrorKind::ValueRange
        }
        ErrorCode::TooBig => ErrorKind::ValueRange,
        ErrorCode::CannotOpen
        | ErrorCode::SystemIoFailure
        | ErrorCode::PermissionDenied
        | ErrorCode::FileLockingProtocolFailed => ErrorKind::Connect,
        ErrorCode::Unknown if is_schema_message(message) => ErrorKind::Schema,
        _ => ErrorKind::Database,
    }
}

/// SQLITE_ERROR is generic: the message tells a schema problem from the rest.
fn is_schema_message(message: &str) -> bool {
    message.starts_with("no such table")
        || message.starts_with("no such column")
        || message.contains("has no column named")
        || message.contains("already exists")
        || message.contains("does not match any PRIMARY KEY or UNIQUE constraint")
}

/// `NOT NULL constraint failed: t.c` names the column.
fn not_null_column(err: &rusqlite::Error) -> Option<String> {
    let (_, message) = failure(err)?;
    let qualified = message.strip_prefix("NOT NULL constraint failed: ")?;
    Some(qualified.rsplit_once('.').map_or(qualified, |(_, c)| c).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32, message: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message.into()))
    }

    #[test]
    fn kinds() {
        let kind = |code, msg| db_error(failure(code, msg)).kind();
        assert_eq!(kind(ffi::SQLITE_BUSY, "database is locked"), ErrorKind::Transient);
        assert_eq!(kind(ffi::SQLITE_LOCKED, "database table is locked"), ErrorKind::Transient);
        assert_eq!(kind(ffi::SQLITE_CANTOPEN, "unable to open"), ErrorKind::Connect);
        assert_eq!(kind(ffi::SQLITE_IOERR_READ, "disk I/O error"), ErrorKind::Connect);
        assert_eq!(kind(ffi::SQLITE_ERROR, "no such table: t"), ErrorKind::Schema);
        assert_eq!(kind(ffi::SQLITE_ERROR, "no such column: c"), ErrorKind::Schema);
        assert_eq!(kind(ffi::SQLITE_ERROR, "near \"x\": syntax error"), ErrorKind::Database);
        assert_eq!(kind(ffi::SQLITE_CONSTRAINT_UNIQUE, "UNIQUE constraint failed: t.a"), ErrorKind::Database);
        let e = db_error(failure(ffi::SQLITE_CONSTRAINT_NOTNULL, "NOT NULL constraint failed: t.name"));
        assert_eq!(e.kind(), ErrorKind::ValueRange);
        assert_eq!(e.location().column.as_deref(), Some("name"));
        assert_eq!(e.to_string(), "column name: SQLite: NOT NULL constraint failed: t.name");
    }
}
