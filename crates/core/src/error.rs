//! The one library error type: a kind that drives the retry policy, a message, the
//! place it happened (table, key, column) and the underlying cause.

use std::fmt;

use crate::value::Value;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms the engine can act on (see [`ErrorKind::is_transient`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job file or a command line argument is wrong (exit code 2).
    Config,
    /// A database could not be reached or refused the login.
    Connect,
    /// Worth retrying: connection lost, server restarting, deadlock, lock wait timeout.
    Transient,
    /// A value the target cannot hold (too long, out of range, would be rounded).
    ValueRange,
    /// Source and target schemas do not fit together, or a table is missing.
    Schema,
    /// A type or feature pontoon does not handle.
    Unsupported,
    /// Any other error reported by a database.
    Database,
    /// The state store failed.
    State,
    /// The run was stopped by a signal.
    Interrupted,
    /// A bug in pontoon.
    Internal,
}

impl ErrorKind {
    /// The retry policy: only these kinds are retried with backoff.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Connect)
    }
}

/// Where an error happened. Key values are shown (they identify a row); other row
/// values never are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Location {
    pub table: Option<String>,
    pub key: Option<Vec<Value>>,
    pub column: Option<String>,
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    location: Location,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), location: Location::default(), source: None }
    }

    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub fn schema(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Schema, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Sets the table unless one is already set (the innermost context wins).
    pub fn in_table(mut self, table: impl Into<String>) -> Error {
        self.location.table.get_or_insert_with(|| table.into());
        self
    }

    pub fn at_key(mut self, key: Vec<Value>) -> Error {
        self.location.key.get_or_insert(key);
        self
    }

    pub fn in_column(mut self, column: impl Into<String>) -> Error {
        self.location.column.get_or_insert_with(|| column.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = &self.location.table {
            parts.push(format!("table {t}"));
        }
        if let Some(k) = &self.location.key {
            let shown: Vec<String> = k.iter().map(|v| v.to_string()).collect();
            parts.push(format!("key ({})", shown.join(", ")));
        }
        if let Some(c) = &self.location.column {
            parts.push(format!("column {c}"));
        }
        if !parts.is_empty() {
            write!(f, "{}: ", parts.join(", "))?;
        }
        f.write_str(&self.message)?;
        if let Some(src) = &self.source {
            let text = src.to_string();
            if !text.is_empty() && !self.message.contains(&text) {
                write!(f, ": {text}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Removes the password from a database URL so it can appear in a message.
///
/// `postgres://app:secret@host/db` becomes `postgres://app:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_table_key_and_column() {
        let e = Error::new(ErrorKind::ValueRange, "value too long for text(5)")
            .in_column("name")
            .at_key(vec![Value::Int(-3), Value::Text("eu".into())])
            .in_table("customers");
        assert_eq!(e.to_string(), "table customers, key (-3, eu), column name: value too long for text(5)");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://app:s3cr3t@127.0.0.1:5432/shop"), "postgres://app:***@127.0.0.1:5432/shop");
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(redact_url("sqlite:shop.db"), "sqlite:shop.db");
        assert_eq!(redact_url("postgres://a:p@ss@h/db"), "postgres://a:***@h/db");
    }
}
