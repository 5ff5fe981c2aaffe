//! MariaDB errors in portable terms: the server's error codes decide the
//! [`ErrorKind`] (and with it the retry policy), the message keeps the server's text and
//! code but never a row value or the password.

use mysql_async::{DriverError, Opts};
use pontoon_core::{Error, ErrorKind};

/// Server error codes worth retrying: deadlock, lock wait timeout, record changed
/// under snapshot isolation, server shutdown, connection killed, too many
/// connections, server gone away, connection lost.
const TRANSIENT: &[u16] = &[1213, 1205, 1020, 1053, 1927, 1040, 2006, 2013];

/// Server error codes meaning a value the column cannot hold: data too long, out of
/// range, incorrect value, NULL into NOT NULL (INSERT; `LOAD DATA`), data truncated,
/// invalid characters.
const VALUE_RANGE: &[u16] = &[1406, 1264, 1366, 1292, 1048, 1263, 1265, 1300];

/// Server error codes meaning the schema is not what was expected: no such table,
/// unknown column.
const SCHEMA: &[u16] = &[1146, 1054];

/// Login refused: access denied (password, database, socket authentication).
const ACCESS_DENIED: &[u16] = &[1045, 1044, 1698];

/// The portable kind of a server error code.
pub(crate) fn kind_of(code: u16) -> ErrorKind {
    if TRANSIENT.contains(&code) {
        ErrorKind::Transient
    } else if VALUE_RANGE.contains(&code) {
        ErrorKind::ValueRange
    } else if SCHEMA.contains(&code) {
        ErrorKind::Schema
    } else {
        ErrorKind::Database
    }
}

/// An error of an established connection.
pub(crate) fn map(e: mysql_async::Error) -> Error {
    match e {
        mysql_async::Error::Server(s) => server(s.code, &s.message),
        mysql_async::Error::Io(io) => {
            Error::new(ErrorKind::Transient, format!("connection to MariaDB failed: {io}")).with_source(io)
        }
        mysql_async::Error::Driver(d) => driver(d),
        mysql_async::Error::Url(u) => Error::config(format!("invalid MariaDB URL: {u}")),
        mysql_async::Error::Other(o) => Error::new(ErrorKind::Database, format!("MariaDB driver error: {o}")),
    }
}

fn driver(d: DriverError) -> Error {
    match d {
        DriverError::ConnectionClosed | DriverError::PacketOutOfOrder | DriverError::UnexpectedPacket { .. } => {
            Error::new(ErrorKind::Transient, format!("connection to MariaDB broken: {d}"))
        }
        // The value is not shown: it is someone's data.
        DriverError::FromValue { .. } | DriverError::FromRow { .. } => {
            Error::internal("MariaDB returned a value of an unexpected type".to_string())
        }
        DriverError::Params(_)
        | DriverError::MixedParams
        | DriverError::StmtParamsMismatch { .. }
        | DriverError::StmtParamsNumberExceedsLimit { .. } => {
            Error::internal(format!("MariaDB statement parameters: {d}"))
        }
        other => Error::new(ErrorKind::Database, format!("MariaDB driver error: {other}")),
    }
}

/// A server error (or warning) with its code, its text with values hidden, and the
/// column it names, if any.
pub(crate) fn server(code: u16, message: &str) -> Error {
    let kind = kind_of(code);
    let text = hide_values(message);
    let mut err = Error::new(kind, format!("{text} (MariaDB error {code})"));
    if let Some(column) = column_in(message) {
        err = err.in_column(column);
    }
    err
}

/// An error while opening a connection: unreachable servers are
/// [`ErrorKind::Connect`] (retried), a refused login is permanent and names the user
/// and host (never the password).
pub(crate) fn connect_error(e: mysql_async::Error, opts: &Opts, shown_url: &str) -> Error {
    let user = opts.user().unwrap_or("");
    let host = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    match e {
        mysql_async::Error::Server(s) if ACCESS_DENIED.contains(&s.code) => Error::new(
            ErrorKind::Database,
            format!(
                "MariaDB at {host} refused the login of user '{user}': {} (MariaDB error {}); \
                 check the user, password and grants in {shown_url}",
                s.message, s.code
            ),
        ),
        mysql_async::Error::Server(s) if kind_of(s.code) == ErrorKind::Transient => Error::new(
            ErrorKind::Connect,
            format!("could not connect to MariaDB at {host}: {} (MariaDB error {})", s.message, s.code),
        ),
        mysql_async::Error::Server(s) => Error::new(
            ErrorKind::Database,
            format!(
                "MariaDB at {host} refused the connection to {shown_url}: {} (MariaDB error {})",
                s.message, s.code
            ),
        ),
        mysql_async::Error::Io(io) => {
            Error::new(ErrorKind::Connect, format!("could not connect to MariaDB at {host} ({shown_url}): {io}"))
                .with_source(io)
        }
        mysql_async::Error::Driver(
            d @ (DriverError::ConnectionClosed | DriverError::PacketOutOfOrder | DriverError::UnexpectedPacket { .. }),
        ) => Error::new(ErrorKind::Connect, format!("could not connect to MariaDB at {host} ({shown_url}): {d}")),
        other => {
            let e = map(other);
            Error::new(e.kind(), format!("could not connect to MariaDB at {host} ({shown_url}): {}", e.message()))
        }
    }
}

/// Replaces the values quoted in a server message (`Incorrect integer value: 'abc'
/// for column ...`, `Duplicate entry '...' for key ...`) with a placeholder.
pub(crate) fn hide_values(message: &str) -> String {
    const MARKERS: [&str; 3] = ["value: '", "entry '", "string: '"];
    let mut out = message.to_string();
    for marker in MARKERS {
        let Some(start) = out.find(marker) else {
            continue;
        };
        let from = start + marker.len();
        let end = out[from..].rfind("' for ").or_else(|| out[from..].rfind('\'')).map(|i| from + i);
        if let Some(end) = end {
            out.replace_range(from - 1..=end, "(value hidden)");
        }
    }
    out
}

/// The column a server message names: `for column 'c'`, ``for column `db`.`t`.`c` ``,
/// `Column 'c' cannot be null`, `Unknown column 'c'`.
pub(crate) fn column_in(message: &str) -> Option<String> {
    for marker in ["for column ", "Column ", "column "] {
        if let Some(i) = message.find(marker)
            && let Some(name) = last_identifier(&message[i + marker.len()..])
        {
            return Some(name);
        }
    }
    None
}

/// The row number in `... at row N` or `Row N was truncated ...` / `Row N doesn't
/// contain data for all columns` (1-based, counting the rows of one statement or of
/// one `LOAD DATA` file).
pub(crate) fn row_in(message: &str) -> Option<usize> {
    let number_after = |marker: &str| {
        let i = message.rfind(marker)?;
        let digits: String = message[i + marker.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    number_after(" at row ").or_else(|| number_after("Row "))
}

/// Parses `'name'` or `` `a`.`b`.`c` `` at the start of `s`; returns the last part.
fn last_identifier(s: &str) -> Option<String> {
    let mut rest = s;
    let mut last = None;
    loop {
        let quote = rest.chars().next()?;
        if quote != '\'' && quote != '`' {
            return last;
        }
        let body = &rest[1..];
        let mut name = String::new();
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == quote {
                if quote == '`' && chars.peek().map(|(_, n)| *n) == Some('`') {
                    name.push('`');
                    chars.next();
                    continue;
                }
                end = Some(i + 1);
                break;
            }
            name.push(c);
        }
        let end = end?;
        last = Some(name);
        rest = &body[end..];
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => return last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(kind_of(1213), ErrorKind::Transient);
        assert_eq!(kind_of(2013), ErrorKind::Transient);
        assert_eq!(kind_of(1406), ErrorKind::ValueRange);
        assert_eq!(kind_of(1048), ErrorKind::ValueRange);
        assert_eq!(kind_of(1263), ErrorKind::ValueRange);
        assert_eq!(kind_of(1146), ErrorKind::Schema);
        assert_eq!(kind_of(1064), ErrorKind::Database);
    }

    #[test]
    fn columns_and_rows_are_found() {
        let m = "Data too long for column 'name' at row 3";
        assert_eq!(column_in(m).as_deref(), Some("name"));
        assert_eq!(row_in(m), Some(3));
        let m = "Incorrect integer value: 'ab'c' for column `shop`.`t`.`qty` at row 12";
        assert_eq!(column_in(m).as_deref(), Some("qty"));
        assert_eq!(row_in(m), Some(12));
        assert_eq!(row_in("Row 7 was truncated; it contained more data than there were input columns"), Some(7));
        assert_eq!(row_in("warning Row 2 doesn't contain data for all columns (MariaDB error 1261)"), Some(2));
        assert_eq!(row_in("Deadlock found"), None);
        assert_eq!(column_in("Column 'a``b' cannot be null").as_deref(), Some("a``b"));
        assert_eq!(column_in("Column `a``b` cannot be null").as_deref(), Some("a`b"));
        assert_eq!(column_in("Unknown column 'zz' in 'field list'").as_deref(), Some("zz"));
        assert_eq!(column_in("Deadlock found"), None);
    }

    #[test]
    fn values_are_hidden() {
        let m = "Incorrect integer value: 'sec'ret' for column `shop`.`t`.`qty` at row 1";
        let h = hide_values(m);
        assert!(!h.contains("sec"), "{h}");
        assert!(h.contains("`qty` at row 1"), "{h}");
        let h = hide_values("Duplicate entry 'x@y.z' for key 'email'");
        assert_eq!(h, "Duplicate entry (value hidden) for key 'email'");
        let h = hide_values("Invalid utf8mb4 character string: 'F09F'");
        assert_eq!(h, "Invalid utf8mb4 character string: (value hidden)");
        let e = server(1366, m);
        assert_eq!(e.kind(), ErrorKind::ValueRange);
        assert_eq!(e.location().column.as_deref(), Some("qty"));
        assert!(!e.to_string().contains("sec"));
    }
}
