//! Mapping tokio-postgres errors to portable [`ErrorKind`]s, which drive the engine's
//! retry policy.
//!
//! By SQLSTATE: class 08 (connection exception), 57P01/57P02/57P03 (shutdown,
//! cannot connect now), 40001 (serialization failure), 40P01 (deadlock), 55P03 (lock
//! not available) and 53300 (too many connections) are transient; class 22 (data
//! exception) is a value range error; 42P01/42703 (undefined table or column) are
//! schema errors; an authentication failure (28000/28P01) is permanent. A lost
//! connection or an I/O error is transient; a server that cannot be reached at all
//! is a connect error.
//!
//! Messages carry what was being done, the server's message and the SQLSTATE. The
//! server's DETAIL and WHERE fields are left out (they can quote row values), and so
//! are quoted values inside data-exception messages.

use pontoon_core::{Error, ErrorKind};

/// Whether a SQLSTATE is worth retrying.
/// 55006 (object in use) is a replication slot still held by the backend of a
/// killed client, which the server ends a moment later.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "53300" | "55006")
}

/// The portable kind of a SQLSTATE.
pub fn kind_of_sqlstate(code: &str) -> ErrorKind {
    if is_transient_sqlstate(code) {
        ErrorKind::Transient
    } else if code.starts_with("22") {
        ErrorKind::ValueRange
    } else if matches!(code, "42P01" | "42703") {
        ErrorKind::Schema
    } else {
        ErrorKind::Database
    }
}

/// Replaces every double-quoted part of a message with `"…"`: PostgreSQL quotes the
/// offending input in data exceptions (`invalid input syntax for type uuid: "..."`).
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push_str("\"…");
    }
    out
}

/// Maps an error of a statement (`what` says which one, e.g. "scan of orders").
pub fn pg_error(err: tokio_postgres::Error, what: &str) -> Error {
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        let kind = kind_of_sqlstate(code);
        let message =
            if code.starts_with("22") { without_quoted_values(db.message()) } else { db.message().to_string() };
        return Error::new(kind, format!("{what}: {message} (SQLSTATE {code})"));
    }
    // An error raised by our own encoder or decoder travels as the driver error's
    // cause: hand it back as it was made (it names the column).
    if std::error::Error::source(&err).is_some_and(|s| s.is::<Error>()) {
        return match err.into_source().map(|s| s.downcast::<Error>()) {
            Some(Ok(own)) => *own,
            _ => Error::internal(format!("{what}: lost the cause of an encoding error")),
        };
    }
    non_db_error(err, what)
}

fn non_db_error(err: tokio_postgres::Error, what: &str) -> Error {
    let io = std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>());
    let text = err.to_string();
    let kind = if err.is_closed()
        || io
        || text.starts_with("error communicating with the server")
        || text.starts_with("error connecting to server")
        || text.starts_with("timeout waiting for server")
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Database
    };
    // the cause (an I/O error, a decoding failure) never holds row values
    let cause = std::error::Error::source(&err).map(|s| format!(": {s}")).unwrap_or_default();
    Error::new(kind, format!("{what}: {text}{cause}")).with_source(err)
}

/// Where in a `COPY` an error happened, from the server's context line
/// `COPY t, line N, column c` (binary COPY never shows the value): the 1-based row
/// number in the batch, and the column if the server names one of `columns`. The
/// column also comes from the error's own column field (a NOT NULL violation).
pub fn copy_location(err: &tokio_postgres::Error, columns: &[String]) -> (Option<usize>, Option<String>) {
    let Some(db) = err.as_db_error() else {
        return (None, None);
    };
    let mut line = None;
    let mut column = db.column().filter(|c| columns.iter().any(|n| n == c)).map(str::to_string);
    if let Some(context) = db.where_()
        && let Some(copy) = context.lines().find(|l| l.starts_with("COPY "))
    {
        if let Some(rest) = copy.split(", line ").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            line = digits.parse().ok();
        }
        if column.is_none()
            && let Some((_, name)) = copy.split_once(", column ")
        {
            column = columns.iter().find(|n| n.as_str() == name).cloned();
        }
    }
    (line, column)
}

/// Maps an error of opening a connection to `user` at `host` (`target` is the URL
/// without its password).
///
/// A server that cannot be reached is [`ErrorKind::Connect`]; a server that says it
/// cannot accept connections right now (57P03, 53300) is transient; a failed login is
/// a permanent [`ErrorKind::Database`] error naming the user and host.
pub fn connect_error(err: tokio_postgres::Error, user: &str, host: &str, target: &str) -> Error {
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        if matches!(code, "28P01" | "28000") {
            return Error::new(
                ErrorKind::Database,
                format!("authentication failed for user {user} at {host}: {} (SQLSTATE {code})", db.message()),
            );
        }
        return Error::new(
            kind_of_sqlstate(code),
            format!("cannot connect to {target}: {} (SQLSTATE {code})", db.message()),
        );
    }
    let text = err.to_string();
    let cause = std::error::Error::source(&err).map(|s| format!(": {s}")).unwrap_or_default();
    let kind = if text.starts_with("authentication error") {
        // e.g. the server asks for a password and the URL has none
        return Error::new(ErrorKind::Database, format!("authentication failed for user {user} at {host}{cause}"));
    } else if text.starts_with("invalid configuration") {
        ErrorKind::Config
    } else {
        ErrorKind::Connect
    };
    Error::new(kind, format!("cannot connect to {target}: {text}{cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(kind_of_sqlstate("08006"), ErrorKind::Transient);
        assert_eq!(kind_of_sqlstate("57P01"), ErrorKind::Transient);
        assert_eq!(kind_of_sqlstate("40P01"), ErrorKind::Transient);
        assert_eq!(kind_of_sqlstate("53300"), ErrorKind::Transient);
        assert_eq!(kind_of_sqlstate("55P03"), ErrorKind::Transient);
        assert_eq!(kind_of_sqlstate("22003"), ErrorKind::ValueRange);
        assert_eq!(kind_of_sqlstate("42P01"), ErrorKind::Schema);
        assert_eq!(kind_of_sqlstate("42703"), ErrorKind::Schema);
        assert_eq!(kind_of_sqlstate("23505"), ErrorKind::Database);
        assert_eq!(kind_of_sqlstate("28P01"), ErrorKind::Database);
    }

    #[test]
    fn quoted_values_are_dropped() {
        assert_eq!(
            without_quoted_values(r#"invalid input syntax for type uuid: "secret""#),
            r#"invalid input syntax for type uuid: "…""#
        );
        assert_eq!(
            without_quoted_values(r#"value "123456" is out of range for type integer"#),
            r#"value "…" is out of range for type integer"#
        );
        assert_eq!(without_quoted_values("date out of range"), "date out of range");
    }
}
