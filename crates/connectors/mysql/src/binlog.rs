//! MariaDB native change capture: the row binlog, read the way a replica reads it.
//!
//! [`BinlogCapture`] asks the server for its binlog from a file and offset (`SHOW MASTER
//! STATUS` at `start`, the syncer's checkpoint afterwards) on one `mysql_async` connection
//! registered as a replica under a server id of its own, and keeps that stream open across
//! `read` calls. Events are grouped into transactions: MariaDB's GTID event (sent raw thanks
//! to `@mariadb_slave_capability=4`) or a `BEGIN` opens one, an XID event, `COMMIT` or
//! `ROLLBACK` closes it, a standalone statement (DDL) is its own. A transaction's row events
//! are buffered and delivered when it closes, so every position handed out lies between
//! transactions: the offset after the closing event (its header's `log_pos`) in the file
//! named by the last ROTATE. A transaction that rolled back is never in the binlog.
//!
//! The binlog holds every database of the server: a TABLE_MAP names the schema and table of
//! the row events after it, and only tables of the connection's database that are captured
//! are decoded; everything else only moves the position. Row events carry neither column
//! names (`binlog_row_metadata=MINIMAL`) nor signedness, so the key columns are found by
//! ordinal position and typed from `information_schema.COLUMNS`, read at `start` *after*
//! the start position is taken (a DDL in between shows up in the stream). Rows are walked
//! with per-column widths computed once per table map and only the key columns are decoded,
//! into exactly the [`Value`]s the reader's scan produces (through `values::decode`). No SQL
//! runs per event.
//!
//! A DDL statement on a captured table (ALTER, DROP, RENAME, TRUNCATE, CREATE OR REPLACE,
//! CREATE/DROP INDEX, DROP DATABASE) ends the batch before it: row images would no longer
//! match the columns read at `start`. A change to a captured table logged as a statement
//! (a session with another `binlog_format`) has no keys to read: it is an error, never a
//! silent gap. A read that fails after whole transactions returns them and meets the
//! failure again on the next read.
//!
//! Nothing is installed on the server: `release` has nothing to free (binlog files expire by
//! the server's `binlog_expire_logs_seconds`) and `cleanup` finds nothing to remove.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, QueryEvent, RotateEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Row, Value as My};
use pontoon_core::capture::{
    Backlog, Capture, CaptureBatch, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp, DdlEvent,
};
use pontoon_core::value::MICROS_PER_SECOND;
use pontoon_core::{ColumnType, Error, ErrorKind, Position, Result, Value};
use tracing::{debug, warn};

use crate::catalog::{fetch, number, text};
use crate::{MysqlConnector, error, types, values};

/// How often the server sends a heartbeat on an idle stream (`@master_heartbeat_period`).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A stream that sent nothing, not even a heartbeat, for this long is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// Once a batch holds events, how long to wait for more before returning it.
const LINGER: Duration = Duration::from_millis(5);
/// How long a read with nothing to return waits for the stream to reach the binlog's
/// end as it was when the read began.
const BEHIND_LIMIT: Duration = Duration::from_secs(120);

/// Binlog event type codes (`log_event.h`); MariaDB's own start at 160.
mod kind {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const EXECUTE_LOAD_QUERY: u8 = 18;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    pub const XA_PREPARE: u8 = 38;
    pub const MARIA_GTID: u8 = 162;
    /// `QUERY_COMPRESSED_EVENT` up to `DELETE_ROWS_COMPRESSED_EVENT` (`log_bin_compress`).
    pub const MARIA_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
}

/// `LOG_EVENT_ARTIFICIAL_F`: an event the server made up for the stream; its `log_pos`
/// is no position in the file.
const ARTIFICIAL: u16 = 0x20;
/// MariaDB GTID event flag: the group is one statement without BEGIN/COMMIT (DDL).
const GTID_STANDALONE: u8 = 1;

/// Native (binlog) capture of one job on one MariaDB database. Creating it does no I/O.
pub struct BinlogCapture {
    connector: MysqlConnector,
    job: String,
    /// The replica server id the stream registers with, chosen at the first connection
    /// and kept, so a reconnection replaces this capture's own earlier dump thread.
    server_id: Option<u32>,
    /// A connection for catalog queries and `SHOW` statements.
    control: Option<Conn>,
    /// What `start` read: the captured tables and their key columns.
    captured: Option<Arc<Captured>>,
    /// The open binlog stream, if any.
    live: Option<Live>,
}

impl std::fmt::Debug for BinlogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogCapture")
            .field("job", &self.job)
            .field("database", &self.connector.database)
            .field("server_id", &self.server_id)
            .field("streaming_from", &self.live.as_ref().map(|l| l.committed.to_string()))
            .finish_non_exhaustive()
    }
}

impl BinlogCapture {
    /// Creating it does no I/O.
    pub fn new(connector: MysqlConnector, spec: CaptureSpec) -> BinlogCapture {
        BinlogCapture { connector, job: spec.job, server_id: None, control: None, captured: None, live: None }
    }

    /// The control connection (opened when missing). Give it back with [`Self::keep`].
    async fn control(&mut self) -> Result<Conn> {
        match self.control.take() {
            Some(conn) => Ok(conn),
            None => self.connector.connect().await,
        }
    }

    /// Keeps the control connection for the next call unless it failed as broken.
    fn keep<T>(&mut self, conn: Conn, result: &Result<T>) {
        if !matches!(result, Err(e) if e.is_transient()) {
            self.control = Some(conn);
        }
    }

    /// Opens a binlog stream at `file`:`offset`.
    async fn open(&mut self, at: Pos, captured: Arc<Captured>) -> Result<Live> {
        let mut conn = self.connector.connect().await?;
        let server_id = match self.server_id {
            Some(id) => id,
            None => {
                let source: Option<u64> = conn.query_first("SELECT @@server_id").await.map_err(error::map)?;
                let id = stream_server_id(&self.job, source.unwrap_or(0));
                self.server_id = Some(id);
                id
            }
        };
        // Capability 4 (GTID) keeps MariaDB from rewriting its GTID events into BEGIN
        // queries; the heartbeat keeps an idle stream talking.
        conn.query_drop(format!(
            "SET @mariadb_slave_capability = 4, @master_heartbeat_period = {}",
            HEARTBEAT.as_nanos()
        ))
        .await
        .map_err(error::map)?;
        let request = BinlogStreamRequest::new(server_id).with_filename(at.file.as_bytes()).with_pos(at.offset);
        let stream = conn.get_binlog_stream(request).await.map_err(|e| stream_error(e, &at))?;
        debug!(job = %self.job, server_id, position = %at, "binlog stream opened");
        Ok(Live::new(stream, at, captured))
    }

    fn refusal(&self, problems: Vec<String>) -> Error {
        Error::config(format!(
            "MariaDB at {} cannot be captured from its binlog (job {}):\n  - {}",
            self.connector.shown,
            self.job,
            problems.join("\n  - ")
        ))
    }
}

/// A replica server id for one stream: a hash of the job, the process and a counter
/// (never 0, 1 or the source's own id), so that streams of different jobs or processes
/// never share one (the server would end the older stream).
fn stream_server_id(job: &str, source_id: u64) -> u32 {
    static STREAMS: AtomicU32 = AtomicU32::new(0);
    let mut hasher = DefaultHasher::new();
    (job, std::process::id(), STREAMS.fetch_add(1, Ordering::Relaxed)).hash(&mut hasher);
    let mut id = (hasher.finish() % (u32::MAX as u64 - 2)) as u32 + 2;
    if u64::from(id) == source_id {
        id = if id == u32::MAX { 2 } else { id + 1 };
    }
    id
}

#[async_trait]
impl Capture for BinlogCapture {
    async fn preflight(&mut self, tables: &[CaptureTable], copy_seconds: u64) -> Result<()> {
        let mut conn = self.control().await?;
        let result = problems(&mut conn, &self.connector.database, tables, copy_seconds).await;
        self.keep(conn, &result);
        let problems = result?;
        if problems.is_empty() { Ok(()) } else { Err(self.refusal(problems)) }
    }

    async fn start(&mut self, tables: &[CaptureTable]) -> Result<Position> {
        let mut conn = self.control().await?;
        let result = async {
            // The position first: a DDL after it is in the stream, one before it is in the
            // catalog read next.
            let p0 = master_status(&mut conn).await?;
            let fold_case = global_variables(&mut conn, &["LOWER_CASE_TABLE_NAMES"])
                .await?
                .get("LOWER_CASE_TABLE_NAMES")
                .is_some_and(|v| v.trim() != "0");
            let columns = load_columns(&mut conn, &self.connector.database).await?;
            let captured = Captured::new(&self.connector.database, fold_case, tables, &columns)?;
            Ok((p0, captured))
        }
        .await;
        self.keep(conn, &result);
        let (p0, captured) = result?;
        self.captured = Some(Arc::new(captured));
        // the stream's table layouts were built from the previous catalog
        self.live = None;
        debug!(job = %self.job, position = %p0, tables = tables.len(), "binlog capture started");
        Ok(p0.position())
    }

    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let Position::Binlog { file, offset } = from else {
            return Err(Error::internal(format!("MariaDB binlog capture cannot read from {from}")));
        };
        let Some(captured) = self.captured.clone() else {
            return Err(Error::internal("MariaDB binlog capture: read before start"));
        };
        let resume = matches!(&self.live, Some(l) if *l.committed.file == **file && l.committed.offset == *offset);
        if !resume {
            self.live = None;
            let at = Pos { file: Arc::from(file.as_str()), offset: *offset };
            self.live = Some(self.open(at, captured).await?);
        }
        // A read that returns nothing must have seen everything committed before it
        // began: the stream has passed the binlog's end as it was then. (Nothing
        // arriving within the wait proves nothing: the dump thread may be busy with
        // another database's large transaction, or waiting for the CPU.)
        let end = {
            let mut conn = self.control().await?;
            let result = master_status(&mut conn).await;
            self.keep(conn, &result);
            result?.position()
        };
        let started = Instant::now();
        let deadline = started + wait;
        let mut events = Vec::new();
        let mut committed_at = None;
        let mut first = true;
        loop {
            let Some(live) = self.live.as_mut() else {
                return Err(Error::internal("MariaDB binlog capture lost its stream"));
            };
            let now = Instant::now();
            if !first && now >= deadline && (!events.is_empty() || live.reached(&end)) {
                break;
            }
            first = false;
            let left = deadline.saturating_duration_since(now);
            // with events in hand and no transaction half read, only wait for what is
            // already arriving; with nothing and the binlog's end not reached, for the
            // next event however long the wait was
            let limit = if !events.is_empty() && live.group.is_none() {
                LINGER.min(left)
            } else if events.is_empty() && !live.reached(&end) {
                left.max(HEARTBEAT)
            } else {
                left
            };
            let event = match tokio::time::timeout(limit, live.stream.next()).await {
                Err(_) if !events.is_empty() || live.reached(&end) => break,
                Err(_) if started.elapsed() > BEHIND_LIMIT => Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "the MariaDB binlog stream is at {} after {} seconds, short of {end}, the binlog's end \
                         when the read began",
                        live.here(),
                        BEHIND_LIMIT.as_secs()
                    ),
                )),
                Err(_) if live.last_heard.elapsed() <= SILENCE_LIMIT => continue,
                Err(_) => Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "the MariaDB binlog stream (at {}) sent nothing, not even a heartbeat, for {} seconds",
                        live.committed,
                        SILENCE_LIMIT.as_secs()
                    ),
                )),
                Ok(None) => Err(Error::new(
                    ErrorKind::Transient,
                    format!("MariaDB ended the binlog stream (at {})", live.committed),
                )),
                Ok(Some(Err(e))) => Err(stream_error(e, &live.committed)),
                Ok(Some(Ok(event))) => {
                    live.last_heard = Instant::now();
                    live.handle(&event, &mut events, &mut committed_at)
                }
            };
            match event {
                Ok(Step::More) => {}
                Ok(Step::Committed) => {
                    if events.len() >= max_events.max(1) {
                        break;
                    }
                }
                Ok(Step::Ddl(ddl)) => {
                    // Read again from here, the stream would have to deliver the DDL again:
                    // the next read reconnects.
                    self.live = None;
                    return Ok(CaptureBatch {
                        events,
                        position: ddl.position.clone(),
                        ddl: Some(ddl),
                        committed_at_micros: committed_at,
                    });
                }
                Err(e) => {
                    // The transactions read before the failure are whole: deliver them and
                    // meet the failure again on the next read, from a new stream.
                    let position = live.committed.position();
                    self.live = None;
                    if events.is_empty() {
                        return Err(e);
                    }
                    debug!(job = %self.job, error = %e, "binlog read stopped early");
                    return Ok(CaptureBatch { events, position, ddl: None, committed_at_micros: committed_at });
                }
            }
        }
        let position = match &self.live {
            Some(live) => live.committed.position(),
            None => return Err(Error::internal("MariaDB binlog capture lost its stream")),
        };
        Ok(CaptureBatch { events, position, ddl: None, committed_at_micros: committed_at })
    }

    fn reads_ahead(&self) -> bool {
        true
    }

    async fn release(&mut self, upto: &Position) -> Result<()> {
        // Nothing is held on the server: MariaDB purges binlog files by its own expiry
        // (`binlog_expire_logs_seconds`), whatever a reader has read.
        debug!(job = %self.job, position = %upto, "binlog capture: nothing to release on the server");
        Ok(())
    }

    async fn backlog(&mut self, from: &Position) -> Result<Backlog> {
        let Position::Binlog { file, offset } = from else {
            return Err(Error::internal(format!("MariaDB binlog capture cannot measure from {from}")));
        };
        let mut conn = self.control().await?;
        let result = binary_logs(&mut conn).await;
        self.keep(conn, &result);
        let mut bytes = 0u64;
        let here = Position::Binlog { file: file.clone(), offset: 0 };
        for (name, size) in result? {
            if name == *file {
                bytes += size.saturating_sub(*offset);
            } else if (Position::Binlog { file: name, offset: 0 }).compare(&here) == Some(std::cmp::Ordering::Greater) {
                bytes += size;
            }
        }
        Ok(Backlog { events: None, bytes: Some(bytes) })
    }

    async fn cleanup(&mut self) -> Result<Vec<String>> {
        // Native capture installs nothing (no table, trigger or slot): nothing to remove.
        Ok(Vec::new())
    }
}

/// A place in the binlog: a file and a byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pos {
    file: Arc<str>,
    offset: u64,
}

impl Pos {
    fn position(&self) -> Position {
        Position::Binlog { file: self.file.to_string(), offset: self.offset }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "binlog:{}:{}", self.file, self.offset)
    }
}

/// A stream error, with a clear word for the position the server no longer has.
fn stream_error(e: mysql_async::Error, at: &Pos) -> Error {
    if let mysql_async::Error::Server(s) = &e
        && s.code == 1236
    {
        return Error::new(
            ErrorKind::Database,
            format!(
                "MariaDB cannot send its binlog from {at}: {} (MariaDB error 1236); the file was purged \
                 (binlog_expire_logs_seconds) or the position is wrong: the sync must start again from a new copy",
                error::hide_values(&s.message)
            ),
        );
    }
    error::map(e)
}

// ---------------------------------------------------------------------------------------
// Server facts: settings, privileges, positions, catalog
// ---------------------------------------------------------------------------------------

/// `SHOW MASTER STATUS`: the end of the binlog.
async fn master_status(conn: &mut Conn) -> Result<Pos> {
    let rows: Vec<Row> = conn.query("SHOW MASTER STATUS").await.map_err(error::map)?;
    let Some(row) = rows.into_iter().next() else {
        return Err(Error::config(
            "MariaDB writes no binlog (log_bin is OFF): start the server with log_bin and binlog_format=ROW \
             for native capture, or use capture = \"triggers\"",
        ));
    };
    let cells = row.unwrap();
    let file = cells.first().and_then(text).unwrap_or_default();
    let offset = cells.get(1).and_then(number);
    match offset {
        Some(offset) if !file.is_empty() => Ok(Pos { file: Arc::from(file), offset }),
        _ => Err(Error::internal("SHOW MASTER STATUS returned no file and position")),
    }
}

/// `SHOW BINARY LOGS`: each binlog file and its size.
async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await.map_err(error::map)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let cells = r.unwrap();
            Some((cells.first().and_then(text)?, cells.get(1).and_then(number)?))
        })
        .collect())
}

/// Global variables by upper-case name (those the server has).
async fn global_variables(conn: &mut Conn, names: &[&str]) -> Result<HashMap<String, String>> {
    let list = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME IN ({list})"
    );
    let rows = fetch(conn, &sql, Vec::new()).await?;
    Ok(rows.iter().filter_map(|r| Some((text(&r[0])?.to_ascii_uppercase(), text(&r[1]).unwrap_or_default()))).collect())
}

/// One column as `information_schema.COLUMNS` describes it, for decoding binlog rows.
#[derive(Debug, Clone)]
struct SourceColumn {
    name: String,
    /// `DATA_TYPE`, lower case.
    data_type: String,
    /// `COLUMN_TYPE` as spelled (enum and set members keep their case).
    column_type: String,
    /// `CHARACTER_SET_NAME`, lower case.
    charset: Option<String>,
}

/// Every column of every table of `database`, by exact table name, in ordinal order.
async fn load_columns(conn: &mut Conn, database: &str) -> Result<HashMap<String, Vec<SourceColumn>>> {
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
        vec![My::Bytes(database.as_bytes().to_vec())],
    )
    .await?;
    let mut tables: HashMap<String, Vec<SourceColumn>> = HashMap::new();
    for r in &rows {
        let Some(table) = text(&r[0]) else { continue };
        tables.entry(table).or_default().push(SourceColumn {
            name: text(&r[1]).unwrap_or_default(),
            data_type: text(&r[2]).unwrap_or_default().to_ascii_lowercase(),
            column_type: text(&r[3]).unwrap_or_default(),
            charset: text(&r[4]).map(|c| c.to_ascii_lowercase()),
        });
    }
    Ok(tables)
}

/// Tables of `database` that have a primary key or a unique key on NOT NULL columns.
async fn keyed_tables(conn: &mut Conn, database: &str) -> Result<Vec<String>> {
    let rows = fetch(
        conn,
        "SELECT s.TABLE_NAME, s.INDEX_NAME, MAX(c.IS_NULLABLE = 'YES') FROM information_schema.STATISTICS s \
         JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME \
         AND c.COLUMN_NAME = s.COLUMN_NAME \
         WHERE s.TABLE_SCHEMA = ? AND s.NON_UNIQUE = 0 GROUP BY s.TABLE_NAME, s.INDEX_NAME",
        vec![My::Bytes(database.as_bytes().to_vec())],
    )
    .await?;
    Ok(rows.iter().filter(|r| number(&r[2]) == Some(0)).filter_map(|r| text(&r[0])).collect())
}

/// The privileges of the current user (and its enabled roles) on `*.*`.
async fn global_privileges(conn: &mut Conn) -> Result<(String, Vec<String>)> {
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.map_err(error::map)?;
    let user = user.unwrap_or_default();
    let (name, host) = user.rsplit_once('@').unwrap_or((user.as_str(), "%"));
    let grantee = format!("'{name}'@'{host}'");
    let rows = fetch(
        conn,
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ? \
         OR GRANTEE IN (SELECT CONCAT('''', ROLE_NAME, '''') FROM information_schema.ENABLED_ROLES) \
         OR GRANTEE IN (SELECT CONCAT('''', ROLE_NAME, '''@''''') FROM information_schema.ENABLED_ROLES)",
        vec![My::Bytes(grantee.clone().into_bytes())],
    )
    .await?;
    Ok((grantee, rows.iter().filter_map(|r| text(&r[0])).map(|p| p.to_ascii_uppercase()).collect()))
}

/// Every reason native capture cannot run, one line each.
async fn problems(conn: &mut Conn, database: &str, tables: &[CaptureTable], copy_seconds: u64) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let vars = global_variables(
        conn,
        &[
            "LOG_BIN",
            "BINLOG_FORMAT",
            "BINLOG_ROW_IMAGE",
            "LOG_BIN_COMPRESS",
            "BINLOG_EXPIRE_LOGS_SECONDS",
            "EXPIRE_LOGS_DAYS",
        ],
    )
    .await?;
    let var = |name: &str| vars.get(name).map(|v| v.trim().to_ascii_uppercase()).unwrap_or_default();
    if var("LOG_BIN") != "ON" {
        out.push(
            "log_bin is OFF: MariaDB writes no binlog; start the server with log_bin (and binlog_format=ROW, \
             binlog_row_image=FULL), or use capture = \"triggers\""
                .to_string(),
        );
    }
    let format = var("BINLOG_FORMAT");
    if format != "ROW" {
        out.push(format!(
            "binlog_format is {format}: changes must be logged as rows; SET GLOBAL binlog_format = 'ROW' and set it \
             in the server's configuration (sessions already open keep their old format until they reconnect)"
        ));
    }
    let image = var("BINLOG_ROW_IMAGE");
    if image != "FULL" {
        out.push(format!(
            "binlog_row_image is {image}: row images must hold every column; SET GLOBAL binlog_row_image = 'FULL' \
             and set it in the server's configuration"
        ));
    }
    if var("LOG_BIN_COMPRESS") == "ON" {
        out.push(
            "log_bin_compress is ON: pontoon does not read compressed binlog events; SET GLOBAL log_bin_compress = OFF"
                .to_string(),
        );
    }
    let seconds = var("BINLOG_EXPIRE_LOGS_SECONDS").parse::<u64>().unwrap_or(0);
    let days = var("EXPIRE_LOGS_DAYS").parse::<f64>().unwrap_or(0.0);
    let (retention, setting) = if seconds > 0 {
        (seconds, format!("binlog_expire_logs_seconds is {seconds}"))
    } else {
        ((days * 86_400.0) as u64, format!("expire_logs_days is {days}"))
    };
    if retention > 0 && retention < copy_seconds {
        out.push(format!(
            "{setting}: binlog files are purged after {retention} seconds, sooner than the copy's estimated \
             {copy_seconds} seconds, so changes could be gone before the sync reads them; raise \
             binlog_expire_logs_seconds above {copy_seconds} (0 keeps binlogs until purged by hand)"
        ));
    }

    let (grantee, privileges) = global_privileges(conn).await?;
    let has = |p: &str| privileges.iter().any(|x| x == p || x == "ALL PRIVILEGES");
    if !has("REPLICATION SLAVE") {
        out.push(format!(
            "user {grantee} lacks the REPLICATION SLAVE privilege, needed to read the binlog: \
             GRANT REPLICATION SLAVE ON *.* TO {grantee}"
        ));
    }
    if !has("BINLOG MONITOR") && !has("REPLICATION CLIENT") {
        out.push(format!(
            "user {grantee} lacks the BINLOG MONITOR privilege (REPLICATION CLIENT), needed for SHOW MASTER STATUS \
             and SHOW BINARY LOGS: GRANT BINLOG MONITOR ON *.* TO {grantee}"
        ));
    }

    let columns = load_columns(conn, database).await?;
    let keyed = keyed_tables(conn, database).await?;
    for t in tables {
        let Some(cols) = columns.get(&t.table) else {
            out.push(format!("table {} does not exist in database {database}", t.table));
            continue;
        };
        if !keyed.contains(&t.table) {
            out.push(format!(
                "table {} has no primary key and no unique key on NOT NULL columns: its binlog rows cannot be \
                 matched to keys; add a primary key",
                t.table
            ));
        }
        for k in &t.key {
            match cols.iter().find(|c| c.name.eq_ignore_ascii_case(k)) {
                None => out.push(format!("table {}: key column {k} does not exist", t.table)),
                Some(c) => {
                    if let Err(e) = decodable(c) {
                        out.push(format!("table {} column {k}: {}", t.table, e.message()));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The character sets whose bytes the capture turns into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// utf8mb4, utf8mb3 and ascii: the bytes are UTF-8 already.
    Utf8,
    /// MariaDB's latin1 (Windows-1252, with its five holes mapped to C1 controls).
    Latin1,
    /// No character set: bytes.
    Binary,
}

fn charset_of(c: &SourceColumn) -> Result<Charset> {
    match c.charset.as_deref() {
        None | Some("binary") => Ok(Charset::Binary),
        Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => Ok(Charset::Utf8),
        Some("latin1") => Ok(Charset::Latin1),
        Some(other) => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the key's character set {other} is not decoded from the binlog (utf8mb4, utf8mb3, ascii, latin1 and \
                 binary are); convert the column or use capture = \"triggers\""
            ),
        )),
    }
}

/// Whether a key column's values can be decoded from row images.
fn decodable(c: &SourceColumn) -> Result<()> {
    const TYPES: &[&str] = &[
        "tinyint",
        "smallint",
        "mediumint",
        "int",
        "integer",
        "bigint",
        "year",
        "float",
        "double",
        "real",
        "decimal",
        "numeric",
        "date",
        "time",
        "datetime",
        "timestamp",
        "char",
        "varchar",
        "binary",
        "varbinary",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
        "json",
        "enum",
        "set",
        "uuid",
    ];
    if !TYPES.contains(&c.data_type.as_str()) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("key type {} is not decoded from the binlog", c.column_type),
        ));
    }
    charset_of(c).map(|_| ())
}

// ---------------------------------------------------------------------------------------
// What is captured
// ---------------------------------------------------------------------------------------

/// The captured tables of the connection's database, as `start` read them.
#[derive(Debug)]
struct Captured {
    database: String,
    /// `lower_case_table_names` is not 0: names compare case-insensitively.
    fold_case: bool,
    tables: Vec<TableKeys>,
    by_name: HashMap<String, usize>,
}

/// One captured table: its columns in ordinal order and its key columns.
#[derive(Debug)]
struct TableKeys {
    name: String,
    columns: Vec<SourceColumn>,
    /// Ordinal (0-based) and the reader's type of each key column, in key order.
    key: Vec<(usize, ColumnType)>,
}

impl Captured {
    fn new(
        database: &str,
        fold_case: bool,
        tables: &[CaptureTable],
        columns: &HashMap<String, Vec<SourceColumn>>,
    ) -> Result<Captured> {
        let mut out =
            Captured { database: database.to_string(), fold_case, tables: Vec::new(), by_name: HashMap::new() };
        for t in tables {
            let cols = columns.get(&t.table).ok_or_else(|| {
                Error::schema(format!("table {} does not exist in database {database}", t.table)).in_table(&t.table)
            })?;
            if t.key.is_empty() || t.key.len() != t.key_types.len() {
                return Err(Error::internal(format!("capture of table {} without a key", t.table)));
            }
            let mut key = Vec::with_capacity(t.key.len());
            for (name, ty) in t.key.iter().zip(&t.key_types) {
                let ordinal = cols
                    .iter()
                    .position(|c| c.name == *name)
                    .or_else(|| cols.iter().position(|c| c.name.eq_ignore_ascii_case(name)))
                    .ok_or_else(|| {
                        Error::schema(format!("key column {name} does not exist")).in_table(&t.table).in_column(name)
                    })?;
                decodable(&cols[ordinal]).map_err(|e| e.in_table(&t.table).in_column(name))?;
                key.push((ordinal, ty.clone()));
            }
            out.by_name.insert(out.fold(&t.table), out.tables.len());
            out.tables.push(TableKeys { name: t.table.clone(), columns: cols.clone(), key });
        }
        Ok(out)
    }

    fn fold(&self, name: &str) -> String {
        if self.fold_case { name.to_lowercase() } else { name.to_string() }
    }

    fn is_our_database(&self, schema: &str) -> bool {
        if self.fold_case { schema.eq_ignore_ascii_case(&self.database) } else { schema == self.database }
    }

    /// The index of the captured table `schema`.`table`.
    fn find(&self, schema: &str, table: &str) -> Option<usize> {
        if !self.is_our_database(schema) {
            return None;
        }
        self.by_name.get(&self.fold(table)).copied()
    }
}

// ---------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------

/// What kind of event group is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// BEGIN ... XID/COMMIT/ROLLBACK.
    Transaction,
    /// One statement (a DDL), ended by that statement.
    Standalone,
}

/// What one event did to the read.
#[derive(Debug)]
enum Step {
    More,
    /// A group ended: the committed position moved.
    Committed,
    /// A DDL on a captured table: stop before it.
    Ddl(DdlEvent),
}

/// An open binlog stream and where it stands.
struct Live {
    stream: BinlogStream,
    captured: Arc<Captured>,
    /// File and offset after the last event read.
    file: Arc<str>,
    offset: u64,
    /// After the last complete group: where a read may resume.
    committed: Pos,
    /// Where the open group began.
    group_start: Pos,
    group: Option<Group>,
    /// Changes of the open group, delivered when it commits.
    pending: Vec<ChangeEvent>,
    /// Row layouts by table id (from TABLE_MAP events).
    layouts: HashMap<u64, Layout>,
    /// A FORMAT_DESCRIPTION event was seen (the first, artificial ROTATE comes before it).
    seen_format: bool,
    last_heard: Instant,
}

impl Live {
    fn new(stream: BinlogStream, at: Pos, captured: Arc<Captured>) -> Live {
        Live {
            stream,
            captured,
            file: at.file.clone(),
            offset: at.offset,
            committed: at.clone(),
            group_start: at,
            group: None,
            pending: Vec::new(),
            layouts: HashMap::new(),
            seen_format: false,
            last_heard: Instant::now(),
        }
    }

    fn here(&self) -> Pos {
        Pos { file: self.file.clone(), offset: self.offset }
    }

    /// Whether the stream has read up to `end` (or past it).
    fn reached(&self, end: &Position) -> bool {
        self.here().position().compare(end).is_some_and(|o| o.is_ge())
    }

    fn open_group(&mut self, group: Group) {
        match self.group {
            None => {
                self.group_start = self.here();
                self.group = Some(group);
            }
            // a GTID event followed by BEGIN, or rows after a standalone GTID
            Some(_) => {
                if group == Group::Transaction {
                    self.group = Some(Group::Transaction);
                }
            }
        }
    }

    /// Handles one event; a group's changes go to `out` when it commits.
    fn handle(&mut self, event: &Event, out: &mut Vec<ChangeEvent>, committed_at: &mut Option<i64>) -> Result<Step> {
        let header = event.header();
        let code = header.event_type_raw();
        let step = match code {
            kind::ROTATE => return self.rotate(event),
            kind::HEARTBEAT => return Ok(Step::More),
            kind::FORMAT_DESCRIPTION => {
                self.seen_format = true;
                // table ids are only unique within one server run, and a new file may
                // follow a restart
                self.layouts.clear();
                Step::More
            }
            kind::MARIA_GTID => {
                let flags = event.data().get(12).copied().unwrap_or(0);
                self.open_group(if flags & GTID_STANDALONE != 0 { Group::Standalone } else { Group::Transaction });
                Step::More
            }
            kind::TABLE_MAP => {
                self.open_group(Group::Transaction);
                self.map_table(event.data())?;
                Step::More
            }
            kind::WRITE_ROWS_V1
            | kind::UPDATE_ROWS_V1
            | kind::DELETE_ROWS_V1
            | kind::WRITE_ROWS
            | kind::UPDATE_ROWS
            | kind::DELETE_ROWS => {
                self.open_group(Group::Transaction);
                self.rows(event, code)?;
                Step::More
            }
            kind::XID | kind::XA_PREPARE => Step::Committed,
            kind::QUERY => self.query(event)?,
            kind::EXECUTE_LOAD_QUERY => match event.read_data().map_err(|e| bad_event("EXECUTE_LOAD_QUERY", &e))? {
                // a LOAD DATA logged as a statement
                Some(EventData::ExecuteLoadQueryEvent(q)) => self.statement(q.schema_raw(), q.query_raw())?,
                _ => return Err(bad_data("an EXECUTE_LOAD_QUERY event", &self.here())),
            },
            c if kind::MARIA_COMPRESSED.contains(&c) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the binlog at {} holds a compressed event (log_bin_compress is ON): pontoon cannot read it; \
                         SET GLOBAL log_bin_compress = OFF and start the sync again",
                        self.here()
                    ),
                ));
            }
            _ => Step::More,
        };
        if let Step::Ddl(_) = step {
            return Ok(step);
        }
        let next = header.log_pos() as u64;
        if next > self.offset && header.flags_raw() & ARTIFICIAL == 0 {
            self.offset = next;
        }
        if let Step::Committed = step {
            self.group = None;
            if !self.pending.is_empty() {
                out.append(&mut self.pending);
                *committed_at = Some(header.timestamp() as i64 * MICROS_PER_SECOND);
            }
        }
        if self.group.is_none() {
            self.committed = self.here();
            return Ok(Step::Committed);
        }
        Ok(Step::More)
    }

    fn rotate(&mut self, event: &Event) -> Result<Step> {
        if !self.seen_format {
            // The artificial ROTATE opening the stream names the file asked for, with four
            // bytes of checksum the driver does not strip yet.
            return Ok(Step::More);
        }
        let rotate: RotateEvent<'_> = event.read_event().map_err(|e| bad_event("ROTATE", &e))?;
        let name = std::str::from_utf8(rotate.name_raw())
            .ok()
            .filter(|n| !n.is_empty() && n.chars().all(|c| !c.is_control()))
            .ok_or_else(|| Error::internal("a binlog ROTATE event names no readable file"))?;
        if self.group.is_some() {
            warn!(file = %name, "binlog rotated inside a transaction");
        }
        self.file = Arc::from(name);
        self.offset = rotate.position();
        if self.group.is_none() {
            self.committed = self.here();
            return Ok(Step::Committed);
        }
        Ok(Step::More)
    }

    fn query(&mut self, event: &Event) -> Result<Step> {
        let q: QueryEvent<'_> = event.read_event().map_err(|e| bad_event("QUERY", &e))?;
        self.statement(q.schema_raw(), q.query_raw())
    }

    /// A statement logged as text (`schema` is its default database).
    fn statement(&mut self, schema: &[u8], sql: &[u8]) -> Result<Step> {
        let (first, second) = two_words(sql);
        let is = |w: &[u8], k: &str| w.eq_ignore_ascii_case(k.as_bytes());
        if is(first, "BEGIN") || (is(first, "XA") && (is(second, "START") || is(second, "BEGIN"))) {
            self.open_group(Group::Transaction);
            return Ok(Step::More);
        }
        if is(first, "COMMIT") || (is(first, "ROLLBACK") && !is(second, "TO")) {
            return Ok(Step::Committed);
        }
        if is(first, "XA") {
            return Ok(if is(second, "COMMIT") || is(second, "ROLLBACK") { Step::Committed } else { Step::More });
        }
        if is(first, "SAVEPOINT") || is(first, "ROLLBACK") || is(first, "RELEASE") {
            return Ok(Step::More);
        }
        let text = String::from_utf8_lossy(sql);
        let schema = String::from_utf8_lossy(schema);
        match classify(&text) {
            Statement::Ddl(names) => {
                if let Some(table) = names.iter().find_map(|n| self.captured_name(n, &schema)) {
                    let position = if self.group.is_some() { self.group_start.clone() } else { self.here() };
                    return Ok(Step::Ddl(DdlEvent {
                        table,
                        statement: text.into_owned(),
                        position: position.position(),
                    }));
                }
            }
            Statement::DropDatabase(db) => {
                if self.captured.is_our_database(&db)
                    && let Some(first) = self.captured.tables.first()
                {
                    let position = if self.group.is_some() { self.group_start.clone() } else { self.here() };
                    return Ok(Step::Ddl(DdlEvent {
                        table: first.name.clone(),
                        statement: text.into_owned(),
                        position: position.position(),
                    }));
                }
            }
            Statement::Dml(names) => {
                if let Some(table) = names.iter().find_map(|n| self.captured_name(n, &schema)) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "a change to table {table} was logged as a statement, not as rows (a session ran with \
                             binlog_format other than ROW) at {}: its keys cannot be captured; make every session \
                             use binlog_format=ROW and copy the table again",
                            self.here()
                        ),
                    )
                    .in_table(table));
                }
            }
            Statement::Other => {}
        }
        // Any other statement outside a transaction is a group of its own.
        Ok(if self.group == Some(Group::Transaction) { Step::More } else { Step::Committed })
    }

    /// The captured table a statement's name refers to (`schema` is the statement's
    /// default database).
    fn captured_name(&self, name: &TableName, schema: &str) -> Option<String> {
        let ix = self.captured.find(name.schema.as_deref().unwrap_or(schema), &name.table)?;
        Some(self.captured.tables[ix].name.clone())
    }

    fn map_table(&mut self, data: &[u8]) -> Result<()> {
        let map = TableMap::parse(data)?;
        if let Some(known) = self.layouts.get(&map.table_id)
            && *known.schema == *map.schema
            && *known.table == *map.table
        {
            return Ok(());
        }
        let schema = String::from_utf8_lossy(map.schema);
        let table = String::from_utf8_lossy(map.table);
        let mapped = match self.captured.find(&schema, &table) {
            Some(ix) => Some(Mapped::new(&map, ix, &self.captured.tables[ix])?),
            None => None,
        };
        self.layouts.insert(map.table_id, Layout { schema: map.schema.into(), table: map.table.into(), mapped });
        Ok(())
    }

    fn rows(&mut self, event: &Event, code: u8) -> Result<()> {
        let here = self.here();
        let data = event.data();
        let table_id = data.get(..6).map(le_uint).ok_or_else(|| bad_data("a row event", &here))?;
        let Some(layout) = self.layouts.get(&table_id) else {
            return Err(Error::internal(format!(
                "binlog row event at {here} for table id {table_id} without its table map"
            )));
        };
        let Some(mapped) = &layout.mapped else {
            return Ok(());
        };
        let table = &self.captured.tables[mapped.table];
        let Some(EventData::RowsEvent(rows)) = event.read_data().map_err(|e| bad_event("ROWS", &e))? else {
            return Err(bad_data("a row event", &here));
        };
        if rows.table_id() != table_id {
            return Err(Error::internal(format!(
                "binlog row event at {here}: table id {} is not {table_id}",
                rows.table_id()
            )));
        }
        let columns = rows.num_columns() as usize;
        if columns != mapped.widths.len() {
            return Err(changed_table(&table.name, columns, mapped.widths.len()));
        }
        let before: Option<Vec<bool>> =
            rows.columns_before_image().map(|b| (0..columns).map(|i| i < b.len() && b[i]).collect());
        let after: Option<Vec<bool>> =
            rows.columns_after_image().map(|b| (0..columns).map(|i| i < b.len() && b[i]).collect());
        let mut input = rows.rows_data();
        while !input.is_empty() {
            let old = match &before {
                Some(present) => Some(mapped.image(&mut input, present, table).map_err(|e| e.in_table(&table.name))?),
                None => None,
            };
            let new = match &after {
                Some(present) => Some(mapped.image(&mut input, present, table).map_err(|e| e.in_table(&table.name))?),
                None => None,
            };
            let key = |image: Vec<Option<Value>>, fallback: Option<&Vec<Option<Value>>>| -> Result<Vec<Value>> {
                image
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.or_else(|| fallback.and_then(|f| f[i].clone())).ok_or_else(|| {
                            Error::schema(format!(
                                "the binlog row at {here} lacks key column {} (binlog_row_image is not FULL for some session)",
                                table.columns[table.key[i].0].name
                            ))
                            .in_table(&table.name)
                        })
                    })
                    .collect()
            };
            match (code, old, new) {
                (kind::WRITE_ROWS | kind::WRITE_ROWS_V1, _, Some(new)) => {
                    self.pending.push(ChangeEvent {
                        table: table.name.clone(),
                        key: key(new, None)?,
                        op: ChangeOp::Insert,
                    });
                }
                (kind::DELETE_ROWS | kind::DELETE_ROWS_V1, Some(old), _) => {
                    self.pending.push(ChangeEvent {
                        table: table.name.clone(),
                        key: key(old, None)?,
                        op: ChangeOp::Delete,
                    });
                }
                (kind::UPDATE_ROWS | kind::UPDATE_ROWS_V1, Some(old), Some(new)) => {
                    let new_key = key(new, Some(&old))?;
                    let old_key = key(old, None)?;
                    if old_key != new_key {
                        self.pending.push(ChangeEvent {
                            table: table.name.clone(),
                            key: old_key,
                            op: ChangeOp::Delete,
                        });
                    }
                    self.pending.push(ChangeEvent { table: table.name.clone(), key: new_key, op: ChangeOp::Update });
                }
                _ => return Err(bad_data("a row event", &here)),
            }
        }
        Ok(())
    }
}

fn bad_event(what: &str, e: &std::io::Error) -> Error {
    Error::internal(format!("cannot parse a binlog {what} event: {e}"))
}

fn bad_data(what: &str, at: &Pos) -> Error {
    Error::internal(format!("the binlog at {at} holds {what} pontoon cannot parse"))
}

fn changed_table(table: &str, binlog: usize, catalog: usize) -> Error {
    Error::schema(format!(
        "the binlog's rows of table {table} have {binlog} columns, the catalog read at the start of the capture \
         {catalog}: the table changed without a DDL the capture saw; start the sync again"
    ))
    .in_table(table)
}

/// The first two words of a statement, upper or lower case as written.
fn two_words(sql: &[u8]) -> (&[u8], &[u8]) {
    let word = |s: &[u8]| -> (usize, usize) {
        let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
        let len = s[start..].iter().position(|b| !b.is_ascii_alphabetic()).unwrap_or(s.len() - start);
        (start, start + len)
    };
    let (a, b) = word(sql);
    let rest = &sql[b..];
    let (c, d) = word(rest);
    (&sql[a..b], &rest[c..d])
}

// ---------------------------------------------------------------------------------------
// Table maps and row images
// ---------------------------------------------------------------------------------------

/// Column type codes of table maps (`enum_field_types`).
mod wire {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// A TABLE_MAP event's fields, borrowed from the event.
struct TableMap<'a> {
    table_id: u64,
    schema: &'a [u8],
    table: &'a [u8],
    types: &'a [u8],
    metadata: &'a [u8],
}

impl<'a> TableMap<'a> {
    /// Parses the event body: table id (6 bytes), flags (2), schema and table names
    /// (length byte, name, NUL), column count, types, metadata.
    fn parse(data: &'a [u8]) -> Result<TableMap<'a>> {
        let bad = || Error::internal("a binlog TABLE_MAP event pontoon cannot parse");
        let mut p = 8;
        let name = |p: &mut usize| -> Option<&'a [u8]> {
            let len = *data.get(*p)? as usize;
            let s = data.get(*p + 1..*p + 1 + len)?;
            *p += len + 2;
            Some(s)
        };
        let schema = name(&mut p).ok_or_else(bad)?;
        let table = name(&mut p).ok_or_else(bad)?;
        let count = lenenc(data, &mut p).ok_or_else(bad)? as usize;
        let types = data.get(p..p + count).ok_or_else(bad)?;
        p += count;
        let meta_len = lenenc(data, &mut p).ok_or_else(bad)? as usize;
        let metadata = data.get(p..p + meta_len).ok_or_else(bad)?;
        let table_id = data.get(..6).map(le_uint).ok_or_else(bad)?;
        Ok(TableMap { table_id, schema, table, types, metadata })
    }
}

/// A length-encoded integer at `*p`.
fn lenenc(data: &[u8], p: &mut usize) -> Option<u64> {
    let first = *data.get(*p)?;
    let (len, value) = match first {
        0xfc => (3, le_uint(data.get(*p + 1..*p + 3)?)),
        0xfd => (4, le_uint(data.get(*p + 1..*p + 4)?)),
        0xfe => (9, le_uint(data.get(*p + 1..*p + 9)?)),
        0xfb | 0xff => return None,
        n => (1, n as u64),
    };
    *p += len;
    Some(value)
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

/// What a table id maps to: names (to check that a reused id still means the same
/// table) and, for a captured table, how to read its rows.
#[derive(Debug)]
struct Layout {
    schema: Box<[u8]>,
    table: Box<[u8]>,
    mapped: Option<Mapped>,
}

/// How many bytes a column's value takes in a row image.
#[derive(Debug, Clone, Copy)]
enum Width {
    Fixed(usize),
    /// A little-endian length of this many bytes, then the value.
    Prefixed(usize),
}

/// A captured table's row layout from its table map.
#[derive(Debug)]
struct Mapped {
    /// Index into `Captured::tables`.
    table: usize,
    widths: Vec<Width>,
    /// The key position of each column, if it is a key column.
    key_slot: Vec<Option<usize>>,
    /// How to decode each key column, in key order.
    decoders: Vec<Decoder>,
}

/// The metadata bytes a table map holds for a column type.
fn metadata_len(code: u8) -> Option<usize> {
    use wire::*;
    Some(match code {
        FLOAT | DOUBLE | BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | GEOMETRY | JSON | TIME2 | DATETIME2
        | TIMESTAMP2 => 1,
        VARCHAR | STRING | NEWDECIMAL | BIT | ENUM | SET => 2,
        TINY | SHORT | INT24 | LONG | LONGLONG | YEAR | DATE | NEWDATE | TIME | DATETIME | TIMESTAMP | NULL
        | VAR_STRING | DECIMAL => 0,
        _ => return None,
    })
}

/// A `STRING` column's real type (CHAR, ENUM or SET) and maximum length in bytes.
fn string_meta(meta: &[u8]) -> (u8, usize) {
    let (b0, b1) = (meta[0], meta[1] as usize);
    if b0 & 0x30 != 0x30 { (b0 | 0x30, b1 | ((((b0 & 0x30) ^ 0x30) as usize) << 4)) } else { (b0, b1) }
}

/// Bytes of a packed DECIMAL(precision, scale).
fn decimal_size(precision: usize, scale: usize) -> usize {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let int = precision.saturating_sub(scale);
    int / 9 * 4 + DIG2BYTES[int % 9] + scale / 9 * 4 + DIG2BYTES[scale % 9]
}

fn width(code: u8, meta: &[u8]) -> Option<Width> {
    use wire::*;
    let fsp = |m: &[u8]| (m[0] as usize).div_ceil(2);
    Some(match code {
        TINY | YEAR => Width::Fixed(1),
        SHORT => Width::Fixed(2),
        INT24 | DATE | NEWDATE | TIME => Width::Fixed(3),
        LONG | FLOAT | TIMESTAMP => Width::Fixed(4),
        LONGLONG | DOUBLE | DATETIME => Width::Fixed(8),
        NULL => Width::Fixed(0),
        TIME2 => Width::Fixed(3 + fsp(meta)),
        DATETIME2 => Width::Fixed(5 + fsp(meta)),
        TIMESTAMP2 => Width::Fixed(4 + fsp(meta)),
        NEWDECIMAL => Width::Fixed(decimal_size(meta[0] as usize, meta[1] as usize)),
        BIT => Width::Fixed(meta[1] as usize + usize::from(meta[0] > 0)),
        ENUM | SET => Width::Fixed(meta[1] as usize),
        VARCHAR => Width::Prefixed(if le_uint(meta) > 255 { 2 } else { 1 }),
        VAR_STRING => Width::Prefixed(1),
        STRING => match string_meta(meta) {
            (ENUM | SET, n) => Width::Fixed(n),
            (_, max) => Width::Prefixed(if max > 255 { 2 } else { 1 }),
        },
        BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | GEOMETRY | JSON => Width::Prefixed(meta[0] as usize),
        _ => return None,
    })
}

impl Mapped {
    fn new(map: &TableMap<'_>, index: usize, table: &TableKeys) -> Result<Mapped> {
        if map.types.len() != table.columns.len() {
            return Err(changed_table(&table.name, map.types.len(), table.columns.len()));
        }
        let mut widths = Vec::with_capacity(map.types.len());
        let mut metas = Vec::with_capacity(map.types.len());
        let mut p = 0;
        for (i, &code) in map.types.iter().enumerate() {
            let unknown = || {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("binlog column type {code} (column {} of table {}) is not known", i + 1, table.name),
                )
                .in_table(&table.name)
            };
            let len = metadata_len(code).ok_or_else(unknown)?;
            let meta = map.metadata.get(p..p + len).ok_or_else(|| bad_data_table(&table.name))?;
            p += len;
            widths.push(width(code, meta).ok_or_else(unknown)?);
            metas.push(meta);
        }
        let mut key_slot = vec![None; widths.len()];
        let mut decoders = Vec::with_capacity(table.key.len());
        for (k, (ordinal, _)) in table.key.iter().enumerate() {
            key_slot[*ordinal] = Some(k);
            let column = &table.columns[*ordinal];
            decoders.push(
                Decoder::new(column, map.types[*ordinal], metas[*ordinal])
                    .map_err(|e| e.in_table(&table.name).in_column(&column.name))?,
            );
        }
        Ok(Mapped { table: index, widths, key_slot, decoders })
    }

    /// Reads one row image from `input`: the key values (`None` for a key column the
    /// image does not hold).
    fn image(&self, input: &mut &[u8], present: &[bool], table: &TableKeys) -> Result<Vec<Option<Value>>> {
        let truncated = || Error::internal("a binlog row image ends early");
        let count = present.iter().filter(|p| **p).count();
        let nulls = take(input, count.div_ceil(8)).ok_or_else(truncated)?;
        let mut keys = vec![None; self.decoders.len()];
        let mut bit = 0;
        for (col, &here) in present.iter().enumerate() {
            if !here {
                continue;
            }
            let null = nulls[bit / 8] >> (bit % 8) & 1 == 1;
            bit += 1;
            let slot = self.key_slot[col];
            if null {
                if let Some(k) = slot {
                    keys[k] = Some(Value::Null);
                }
                continue;
            }
            let len = match self.widths[col] {
                Width::Fixed(n) => n,
                Width::Prefixed(n) => {
                    let prefix = take(input, n).ok_or_else(truncated)?;
                    le_uint(prefix) as usize
                }
            };
            let field = take(input, len).ok_or_else(truncated)?;
            if let Some(k) = slot {
                let (ordinal, ty) = &table.key[k];
                keys[k] =
                    Some(self.decoders[k].decode(field, ty).map_err(|e| e.in_column(&table.columns[*ordinal].name))?);
            }
        }
        Ok(keys)
    }
}

fn bad_data_table(table: &str) -> Error {
    Error::internal(format!("a binlog TABLE_MAP event for table {table} pontoon cannot parse")).in_table(table)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Some(head)
}

/// How a key column's bytes in a row image become a [`Value`].
#[derive(Debug, Clone)]
enum Decoder {
    Int {
        bytes: usize,
        unsigned: bool,
    },
    Year,
    Float,
    Double,
    Decimal {
        precision: usize,
        scale: usize,
    },
    Date,
    Time,
    Time2 {
        fsp: u8,
    },
    DateTime,
    DateTime2 {
        fsp: u8,
    },
    Timestamp,
    Timestamp2 {
        fsp: u8,
    },
    /// String bytes in a character set; `pad_to` for `binary(n)` and `uuid` (the
    /// binlog drops the trailing zero bytes of a fixed-size binary value).
    Bytes {
        charset: Charset,
        pad_to: Option<usize>,
    },
    Enum {
        members: Vec<String>,
        bytes: usize,
    },
    Set {
        members: Vec<String>,
        bytes: usize,
    },
}

impl Decoder {
    /// The decoder for a catalog column whose table map says `code` / `meta`; refuses a
    /// binlog type that does not fit the catalog (the table changed).
    fn new(c: &SourceColumn, code: u8, meta: &[u8]) -> Result<Decoder> {
        use wire::*;
        let mismatch = || {
            Error::schema(format!(
                "the binlog has type code {code} for a column of type {}: the table changed without a DDL the \
                 capture saw; start the sync again",
                c.column_type
            ))
        };
        let unsigned = c.column_type.to_ascii_lowercase().contains("unsigned");
        let int =
            |want: u8, bytes: usize| if code == want { Ok(Decoder::Int { bytes, unsigned }) } else { Err(mismatch()) };
        let real = if code == STRING { string_meta(meta).0 } else { code };
        match c.data_type.as_str() {
            "tinyint" => int(TINY, 1),
            "smallint" => int(SHORT, 2),
            "mediumint" => int(INT24, 3),
            "int" | "integer" => int(LONG, 4),
            "bigint" => int(LONGLONG, 8),
            "year" if code == YEAR => Ok(Decoder::Year),
            "float" if code == FLOAT => Ok(Decoder::Float),
            "double" | "real" if code == DOUBLE => Ok(Decoder::Double),
            "decimal" | "numeric" if code == NEWDECIMAL => {
                Ok(Decoder::Decimal { precision: meta[0] as usize, scale: meta[1] as usize })
            }
            "date" if code == DATE || code == NEWDATE => Ok(Decoder::Date),
            "time" if code == TIME2 => Ok(Decoder::Time2 { fsp: meta[0] }),
            "time" if code == TIME => Ok(Decoder::Time),
            "datetime" if code == DATETIME2 => Ok(Decoder::DateTime2 { fsp: meta[0] }),
            "datetime" if code == DATETIME => Ok(Decoder::DateTime),
            "timestamp" if code == TIMESTAMP2 => Ok(Decoder::Timestamp2 { fsp: meta[0] }),
            "timestamp" if code == TIMESTAMP => Ok(Decoder::Timestamp),
            "enum" if real == ENUM => Ok(Decoder::Enum {
                members: members(&c.column_type),
                bytes: meta.get(1).copied().unwrap_or(1) as usize,
            }),
            "set" if real == SET => {
                Ok(Decoder::Set { members: members(&c.column_type), bytes: meta.get(1).copied().unwrap_or(1) as usize })
            }
            "char" | "varchar" | "binary" | "varbinary" | "uuid" if matches!(real, STRING | VARCHAR | VAR_STRING) => {
                // fixed-size binary strings lose their trailing zero bytes in the binlog
                let pad_to = match c.data_type.as_str() {
                    "binary" => types::binary_length(&c.column_type).map(|n| n as usize),
                    "uuid" => Some(16),
                    _ => None,
                };
                Ok(Decoder::Bytes { charset: charset_of(c)?, pad_to })
            }
            "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "json"
                if matches!(code, BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | JSON) =>
            {
                Ok(Decoder::Bytes { charset: charset_of(c)?, pad_to: None })
            }
            _ => {
                decodable(c)?;
                Err(mismatch())
            }
        }
    }

    /// Decodes a field (its bytes without a length prefix) into what the reader's scan
    /// returns for a column read as `ty`.
    fn decode(&self, raw: &[u8], ty: &ColumnType) -> Result<Value> {
        let short = || Error::internal("a binlog field is shorter than its type");
        let cell = match self {
            Decoder::Int { bytes, unsigned } => {
                let bits = le_uint(raw.get(..*bytes).ok_or_else(short)?);
                if *unsigned {
                    My::UInt(bits)
                } else {
                    let shift = 64 - 8 * *bytes as u32;
                    My::Int(((bits << shift) as i64) >> shift)
                }
            }
            Decoder::Year => {
                let y = *raw.first().ok_or_else(short)? as i64;
                My::Int(if y == 0 { 0 } else { 1900 + y })
            }
            Decoder::Float => {
                My::Float(f32::from_le_bytes(raw.get(..4).ok_or_else(short)?.try_into().expect("4 bytes")))
            }
            Decoder::Double => {
                My::Double(f64::from_le_bytes(raw.get(..8).ok_or_else(short)?.try_into().expect("8 bytes")))
            }
            Decoder::Decimal { precision, scale } => {
                My::Bytes(decode_decimal(raw, *precision, *scale).ok_or_else(short)?.into_bytes())
            }
            Decoder::Date => {
                let v = le_uint(raw.get(..3).ok_or_else(short)?);
                My::Date((v >> 9) as u16, ((v >> 5) & 15) as u8, (v & 31) as u8, 0, 0, 0, 0)
            }
            Decoder::Time => {
                let v = le_uint(raw.get(..3).ok_or_else(short)?) as i64;
                let v = (v << 40) >> 40;
                let a = v.unsigned_abs();
                let (h, m, s) = (a / 10_000, a / 100 % 100, a % 100);
                My::Time(v < 0, (h / 24) as u32, (h % 24) as u8, m as u8, s as u8, 0)
            }
            Decoder::Time2 { fsp } => decode_time2(raw, *fsp).ok_or_else(short)?,
            Decoder::DateTime => {
                let v = le_uint(raw.get(..8).ok_or_else(short)?);
                let (d, t) = (v / 1_000_000, v % 1_000_000);
                My::Date(
                    (d / 10_000) as u16,
                    (d / 100 % 100) as u8,
                    (d % 100) as u8,
                    (t / 10_000) as u8,
                    (t / 100 % 100) as u8,
                    (t % 100) as u8,
                    0,
                )
            }
            Decoder::DateTime2 { fsp } => decode_datetime2(raw, *fsp).ok_or_else(short)?,
            Decoder::Timestamp => return timestamp(le_uint(raw.get(..4).ok_or_else(short)?) as i64, 0, ty),
            Decoder::Timestamp2 { fsp } => {
                let secs = be_uint(raw.get(..4).ok_or_else(short)?) as i64;
                let frac = raw.get(4..4 + (*fsp as usize).div_ceil(2)).ok_or_else(short)?;
                let micros = match fsp {
                    1 | 2 => be_uint(frac) as i64 * 10_000,
                    3 | 4 => be_uint(frac) as i64 * 100,
                    5 | 6 => be_uint(frac) as i64,
                    _ => 0,
                };
                return timestamp(secs, micros, ty);
            }
            Decoder::Bytes { charset, pad_to } => match charset {
                Charset::Utf8 => My::Bytes(raw.to_vec()),
                Charset::Latin1 => My::Bytes(latin1_to_utf8(raw).into_bytes()),
                Charset::Binary => {
                    let mut b = raw.to_vec();
                    if let Some(n) = pad_to
                        && b.len() < *n
                    {
                        b.resize(*n, 0);
                    }
                    My::Bytes(b)
                }
            },
            Decoder::Enum { members, bytes } => {
                let index = le_uint(raw.get(..*bytes).ok_or_else(short)?) as usize;
                // index 0 is the empty string MariaDB stores for an invalid value
                let member = index.checked_sub(1).and_then(|i| members.get(i)).map_or("", String::as_str);
                My::Bytes(member.as_bytes().to_vec())
            }
            Decoder::Set { members, bytes } => {
                let bits = le_uint(raw.get(..*bytes).ok_or_else(short)?);
                let chosen: Vec<&str> =
                    members.iter().enumerate().filter(|(i, _)| bits >> i & 1 == 1).map(|(_, m)| m.as_str()).collect();
                My::Bytes(chosen.join(",").into_bytes())
            }
        };
        values::decode(cell, ty)
    }
}

/// A TIMESTAMP (seconds since the epoch, UTC) as the reader reads it in a UTC session.
fn timestamp(secs: i64, micros: i64, ty: &ColumnType) -> Result<Value> {
    if secs == 0 && micros == 0 {
        return Err(Error::new(ErrorKind::ValueRange, "a zero timestamp (0000-00-00 00:00:00) has no portable value"));
    }
    let t = secs * MICROS_PER_SECOND + micros;
    match ty {
        ColumnType::TimestampTz => Ok(Value::TimestampTz(t)),
        ColumnType::Timestamp => Ok(Value::Timestamp(t)),
        other => Err(Error::schema(format!("MariaDB's binlog has a timestamp for a column read as {other}"))),
    }
}

/// MySQL 5.6's TIME2: 3 bytes of sign-offset packed h/m/s, then 0-3 bytes of fraction.
fn decode_time2(raw: &[u8], fsp: u8) -> Option<My> {
    const INT_OFS: i64 = 0x80_0000;
    let int = |r: &[u8]| be_uint(r) as i64 - INT_OFS;
    let packed: i64 = match fsp {
        1 | 2 => {
            let (mut i, mut frac) = (int(raw.get(..3)?), *raw.get(3)? as i64);
            if i < 0 && frac > 0 {
                i += 1;
                frac -= 0x100;
            }
            (i << 24) + frac * 10_000
        }
        3 | 4 => {
            let (mut i, mut frac) = (int(raw.get(..3)?), be_uint(raw.get(3..5)?) as i64);
            if i < 0 && frac > 0 {
                i += 1;
                frac -= 0x1_0000;
            }
            (i << 24) + frac * 100
        }
        5 | 6 => be_uint(raw.get(..6)?) as i64 - 0x8000_0000_0000,
        _ => int(raw.get(..3)?) << 24,
    };
    let neg = packed < 0;
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    let micros = (a & 0xFF_FFFF) as u32;
    let hours = (hms >> 12) & 0x3FF;
    Some(My::Time(neg, (hours / 24) as u32, (hours % 24) as u8, ((hms >> 6) & 63) as u8, (hms & 63) as u8, micros))
}

/// MySQL 5.6's DATETIME2: 5 bytes of offset packed y/m/d h:m:s, then 0-3 bytes of fraction.
fn decode_datetime2(raw: &[u8], fsp: u8) -> Option<My> {
    let ymdhms = be_uint(raw.get(..5)?) as i64 - 0x80_0000_0000;
    let frac = raw.get(5..5 + (fsp as usize).div_ceil(2))?;
    let micros = match fsp {
        1 | 2 => be_uint(frac) * 10_000,
        3 | 4 => be_uint(frac) * 100,
        5 | 6 => be_uint(frac),
        _ => 0,
    } as u32;
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms & 0x1_FFFF;
    Some(My::Date(
        (ym / 13) as u16,
        (ym % 13) as u8,
        (ymd & 31) as u8,
        (hms >> 12) as u8,
        ((hms >> 6) & 63) as u8,
        (hms & 63) as u8,
        micros,
    ))
}

/// A packed DECIMAL(precision, scale) as text (`-12.340`): groups of 9 digits in 4
/// big-endian bytes, shorter leading and trailing groups, the sign in the first bit and
/// negative numbers stored with every bit inverted.
fn decode_decimal(raw: &[u8], precision: usize, scale: usize) -> Option<String> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if scale > precision {
        return None;
    }
    let mut buf = raw.get(..decimal_size(precision, scale))?.to_vec();
    let first = buf.first_mut()?;
    let negative = *first & 0x80 == 0;
    *first ^= 0x80;
    if negative {
        buf.iter_mut().for_each(|b| *b = !*b);
    }
    let mut p = 0;
    let mut group = |n: usize| {
        let v = be_uint(&buf[p..p + n]);
        p += n;
        v
    };
    let int = precision - scale;
    let mut digits = String::with_capacity(precision + 2);
    if !int.is_multiple_of(9) {
        let _ = write!(digits, "{}", group(DIG2BYTES[int % 9]));
    }
    for _ in 0..int / 9 {
        let _ = write!(digits, "{:09}", group(4));
    }
    let int_digits = digits.trim_start_matches('0');
    let mut out = String::with_capacity(precision + 3);
    if negative {
        out.push('-');
    }
    out.push_str(if int_digits.is_empty() { "0" } else { int_digits });
    if scale > 0 {
        out.push('.');
        for _ in 0..scale / 9 {
            let _ = write!(out, "{:09}", group(4));
        }
        if !scale.is_multiple_of(9) {
            let _ = write!(out, "{:0w$}", group(DIG2BYTES[scale % 9]), w = scale % 9);
        }
    }
    Some(out)
}

/// The members of an `enum('a','b')` or `set(...)` column type, in order.
fn members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else { return Vec::new() };
    let mut out = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        member.push(n);
                    }
                }
                c => member.push(c),
            }
        }
        out.push(member);
    }
    out
}

/// MariaDB's latin1 is Windows-1252, its five unassigned bytes mapped to C1 controls.
fn latin1_to_utf8(raw: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02C6}',
        '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}', '\u{0090}', '\u{2018}',
        '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}',
        '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
    ];
    raw.iter().map(|&b| if (0x80..0xA0).contains(&b) { HIGH[(b - 0x80) as usize] } else { b as char }).collect()
}

// ---------------------------------------------------------------------------------------
// Statements in QUERY events
// ---------------------------------------------------------------------------------------

/// A table named in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableName {
    schema: Option<String>,
    table: String,
}

/// What a logged statement does to tables.
#[derive(Debug, PartialEq, Eq)]
enum Statement {
    /// Changes the definition or drops the rows of these tables.
    Ddl(Vec<TableName>),
    DropDatabase(String),
    /// A data change logged as a statement, writing these tables.
    Dml(Vec<TableName>),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word or number, as written.
    Word(String),
    /// A `quoted` identifier, unquoted.
    Quoted(String),
    /// A string literal (its text does not matter).
    Literal,
    Symbol(char),
}

/// Splits SQL into tokens, skipping comments (but reading inside MariaDB's executable
/// `/*! ... */` and `/*M! ... */` comments, whose text is SQL).
fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let skip_line = |i: usize| b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n + 1);
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut j = i + 2;
                if b.get(j) == Some(&b'!') {
                    j += 1;
                } else if b.get(j) == Some(&b'M') && b.get(j + 1) == Some(&b'!') {
                    j += 2;
                } else {
                    i = sql[j..].find("*/").map_or(b.len(), |n| j + n + 2);
                    continue;
                }
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            }
            // the end of an executable comment
            b'*' if b.get(i + 1) == Some(&b'/') => i += 2,
            b'#' => i = skip_line(i),
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => {
                i = skip_line(i)
            }
            b'\'' | b'"' => {
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == b'\\' {
                        j += 2;
                    } else if b[j] == c {
                        if b.get(j + 1) == Some(&c) {
                            j += 2;
                        } else {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                out.push(Token::Literal);
                i = j + 1;
            }
            b'`' => {
                let mut name = String::new();
                let mut j = i + 1;
                loop {
                    match sql[j..].find('`') {
                        None => {
                            name.push_str(&sql[j..]);
                            j = b.len();
                            break;
                        }
                        Some(n) => {
                            name.push_str(&sql[j..j + n]);
                            j += n + 1;
                            if b.get(j) == Some(&b'`') {
                                name.push('`');
                                j += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                out.push(Token::Quoted(name));
                i = j;
            }
            _ if word_byte(c) => {
                let start = i;
                while i < b.len() && word_byte(b[i]) {
                    i += 1;
                }
                out.push(Token::Word(sql[start..i].to_string()));
            }
            _ => {
                out.push(Token::Symbol(c as char));
                i += 1;
            }
        }
    }
    out
}

struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Cursor<'_> {
    /// Consumes a keyword.
    fn kw(&mut self, word: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    /// Consumes a sequence of keywords, or nothing.
    fn kws(&mut self, words: &[&str]) -> bool {
        let start = self.at;
        if words.iter().all(|w| self.kw(w)) {
            return true;
        }
        self.at = start;
        false
    }

    fn symbol(&mut self, c: char) -> bool {
        if self.tokens.get(self.at) == Some(&Token::Symbol(c)) {
            self.at += 1;
            return true;
        }
        false
    }

    fn ident(&mut self) -> Option<String> {
        let name = match self.tokens.get(self.at)? {
            Token::Word(w) | Token::Quoted(w) => w.clone(),
            _ => return None,
        };
        self.at += 1;
        Some(name)
    }

    /// `table` or `schema.table`.
    fn name(&mut self) -> Option<TableName> {
        let first = self.ident()?;
        if self.symbol('.') {
            let table = self.ident()?;
            return Some(TableName { schema: Some(first), table });
        }
        Some(TableName { schema: None, table: first })
    }

    /// Names separated by commas.
    fn names(&mut self) -> Vec<TableName> {
        let mut out = Vec::new();
        while let Some(n) = self.name() {
            out.push(n);
            if !self.symbol(',') {
                break;
            }
        }
        out
    }

    /// Moves past the next `word`; false when there is none.
    fn past(&mut self, word: &str) -> bool {
        while self.at < self.tokens.len() {
            if self.kw(word) {
                return true;
            }
            self.at += 1;
        }
        false
    }
}

/// What a statement found in a QUERY event does to tables.
fn classify(sql: &str) -> Statement {
    let tokens = tokens(sql);
    let mut c = Cursor { tokens: &tokens, at: 0 };
    let ddl = |names: Vec<TableName>| if names.is_empty() { Statement::Other } else { Statement::Ddl(names) };
    if c.kw("ALTER") {
        let _ = c.kw("ONLINE") || c.kw("OFFLINE");
        c.kw("IGNORE");
        if c.kw("TABLE") {
            c.kws(&["IF", "EXISTS"]);
            return ddl(c.name().into_iter().collect());
        }
        return Statement::Other;
    }
    if c.kw("DROP") {
        c.kw("TEMPORARY");
        if c.kw("TABLE") || c.kw("TABLES") {
            c.kws(&["IF", "EXISTS"]);
            return ddl(c.names());
        }
        if c.kw("INDEX") {
            return if c.past("ON") { ddl(c.name().into_iter().collect()) } else { Statement::Other };
        }
        if c.kw("DATABASE") || c.kw("SCHEMA") {
            c.kws(&["IF", "EXISTS"]);
            return c.ident().map_or(Statement::Other, Statement::DropDatabase);
        }
        return Statement::Other;
    }
    if c.kw("RENAME") {
        if !(c.kw("TABLE") || c.kw("TABLES")) {
            return Statement::Other;
        }
        let mut names = Vec::new();
        while let Some(from) = c.name() {
            names.push(from);
            if c.kw("WAIT") {
                c.at += 1;
            }
            c.kw("NOWAIT");
            if !c.kw("TO") {
                break;
            }
            names.extend(c.name());
            if !c.symbol(',') {
                break;
            }
        }
        return ddl(names);
    }
    if c.kw("TRUNCATE") {
        c.kw("TABLE");
        return ddl(c.name().into_iter().collect());
    }
    if c.kw("CREATE") {
        let replace = c.kws(&["OR", "REPLACE"]);
        c.kw("TEMPORARY");
        if c.kw("TABLE") {
            if !replace {
                // a new table, or IF NOT EXISTS on one that is there: no change to a captured one
                return Statement::Other;
            }
            c.kws(&["IF", "NOT", "EXISTS"]);
            return ddl(c.name().into_iter().collect());
        }
        let _ = c.kw("UNIQUE") || c.kw("FULLTEXT") || c.kw("SPATIAL");
        if c.kw("INDEX") && c.past("ON") {
            return ddl(c.name().into_iter().collect());
        }
        return Statement::Other;
    }
    let first = match tokens.first() {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => return Statement::Other,
    };
    // the tables a data change logged as a statement writes
    let mut names = Vec::new();
    match first.as_str() {
        "INSERT" | "REPLACE" => {
            c.at = 1;
            while ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"].iter().any(|w| c.kw(w)) {}
            c.kw("INTO");
            names.extend(c.name());
        }
        "LOAD" if c.past("INTO") => {
            c.kw("TABLE");
            names.extend(c.name());
        }
        "UPDATE" => {
            c.at = 1;
            while ["LOW_PRIORITY", "IGNORE"].iter().any(|w| c.kw(w)) {}
            names = c.names();
            while c.at < tokens.len() && !c.kw("SET") {
                if c.kw("JOIN") {
                    names.extend(c.name());
                } else {
                    c.at += 1;
                }
            }
        }
        "DELETE" => {
            c.at = 1;
            while ["LOW_PRIORITY", "QUICK", "IGNORE"].iter().any(|w| c.kw(w)) {}
            c.kw("FROM");
            names = c.names();
        }
        _ => {}
    }
    if names.is_empty() { Statement::Other } else { Statement::Dml(names) }
}

#[cfg(test)]
mod tests {
    use pontoon_core::value::days_from_civil as civil;

    use super::*;

    fn name(schema: Option<&str>, table: &str) -> TableName {
        TableName { schema: schema.map(str::to_string), table: table.to_string() }
    }

    #[test]
    fn ddl_statements_name_their_tables() {
        let one = |s: Option<&str>, t: &str| Statement::Ddl(vec![name(s, t)]);
        assert_eq!(classify("ALTER TABLE orders ADD COLUMN x int"), one(None, "orders"));
        assert_eq!(classify("alter online ignore table `shop`.`Order Lines` drop x"), one(Some("shop"), "Order Lines"));
        assert_eq!(classify("ALTER TABLE IF EXISTS `a``b` ENGINE=InnoDB"), one(None, "a`b"));
        assert_eq!(classify("/* note */ ALTER /*!50100 TABLE */ t FORCE"), one(None, "t"));
        assert_eq!(
            classify("DROP TABLE `t1`,`s`.`t2` /* generated by server */"),
            Statement::Ddl(vec![name(None, "t1"), name(Some("s"), "t2")])
        );
        assert_eq!(classify("drop temporary table if exists t"), one(None, "t"));
        assert_eq!(classify("TRUNCATE orders"), one(None, "orders"));
        assert_eq!(classify("truncate table s.orders"), one(Some("s"), "orders"));
        assert_eq!(
            classify("RENAME TABLE a TO b, s.c WAIT 5 TO d"),
            Statement::Ddl(vec![name(None, "a"), name(None, "b"), name(Some("s"), "c"), name(None, "d")])
        );
        assert_eq!(classify("CREATE OR REPLACE TABLE t (id int)"), one(None, "t"));
        assert_eq!(classify("CREATE TABLE t (id int)"), Statement::Other);
        assert_eq!(classify("CREATE TABLE IF NOT EXISTS t LIKE u"), Statement::Other);
        assert_eq!(classify("CREATE UNIQUE INDEX i ON t (a)"), one(None, "t"));
        assert_eq!(classify("DROP INDEX `PRIMARY` ON s.t"), one(Some("s"), "t"));
        assert_eq!(classify("DROP DATABASE IF EXISTS `shop`"), Statement::DropDatabase("shop".into()));
        assert_eq!(classify("-- c\nDROP # x\n TABLE t"), one(None, "t"));
        assert_eq!(classify("CREATE VIEW v AS SELECT 1"), Statement::Other);
        assert_eq!(classify("GRANT SELECT ON t TO 'u'@'%'"), Statement::Other);
        assert_eq!(classify("ALTER DATABASE d CHARACTER SET utf8mb4"), Statement::Other);
    }

    #[test]
    fn statement_logged_changes_name_the_written_tables() {
        assert_eq!(
            classify("INSERT INTO orders VALUES ('a''b', \"TABLE x\")"),
            Statement::Dml(vec![name(None, "orders")])
        );
        assert_eq!(classify("update low_priority s.t set a = 1"), Statement::Dml(vec![name(Some("s"), "t")]));
        assert_eq!(classify("DELETE FROM t WHERE id = 1"), Statement::Dml(vec![name(None, "t")]));
        assert_eq!(classify("INSERT t SELECT * FROM u"), Statement::Dml(vec![name(None, "t")]));
        assert_eq!(
            classify("UPDATE a JOIN s.b ON a.id = b.id SET a.x = b.x"),
            Statement::Dml(vec![name(None, "a"), name(Some("s"), "b")])
        );
        assert_eq!(classify("LOAD DATA INFILE 'f' IGNORE INTO TABLE t"), Statement::Dml(vec![name(None, "t")]));
        assert_eq!(classify("SELECT 1"), Statement::Other);
    }

    #[test]
    fn leading_words() {
        assert_eq!(two_words(b"  BEGIN"), (&b"BEGIN"[..], &b""[..]));
        assert_eq!(two_words(b"ROLLBACK TO `sp`"), (&b"ROLLBACK"[..], &b"TO"[..]));
        assert_eq!(two_words(b"XA START 'x'"), (&b"XA"[..], &b"START"[..]));
    }

    #[test]
    fn decimals_decode_as_text() {
        // MySQL's documented example: 1234567890.1234 as DECIMAL(14,4) and its negative
        let pos = [0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2];
        let neg = [0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D];
        assert_eq!(decimal_size(14, 4), 7);
        assert_eq!(decode_decimal(&pos, 14, 4).as_deref(), Some("1234567890.1234"));
        assert_eq!(decode_decimal(&neg, 14, 4).as_deref(), Some("-1234567890.1234"));
        // 0.50 as DECIMAL(5,2): 3 integer digits in 2 bytes, 2 fraction digits in 1 byte
        assert_eq!(decode_decimal(&[0x80, 0x00, 50], 5, 2).as_deref(), Some("0.50"));
        assert_eq!(decode_decimal(&[0x80, 0x00], 4, 0).as_deref(), Some("0"));
        assert_eq!(decode_decimal(&[0x80], 5, 2), None);
    }

    #[test]
    fn temporal_fields_decode() {
        // time(2) '-01:02:03.45' and timestamp(3) 1704164645.678, as MariaDB wrote them
        assert_eq!(decode_time2(&[0x7f, 0xef, 0x7c, 0xd3], 2), Some(My::Time(true, 0, 1, 2, 3, 450_000)));
        assert_eq!(decode_time2(&[0x80, 0x00, 0x00, 0x01], 2), Some(My::Time(false, 0, 0, 0, 0, 10_000)));
        let ts = Decoder::Timestamp2 { fsp: 3 };
        assert_eq!(
            ts.decode(&[0x65, 0x93, 0x7d, 0x25, 0x1a, 0x7c], &ColumnType::TimestampTz).unwrap(),
            Value::TimestampTz(1_704_164_645_678_000)
        );
        // datetime 2024-01-02 03:04:05 packed: ((2024*13+1)<<5 | 2) << 17 | 3<<12 | 4<<6 | 5
        let ymd = ((2024i64 * 13 + 1) << 5) | 2;
        let packed = ((ymd << 17) | (3 << 12) | (4 << 6) | 5) + 0x80_0000_0000;
        let raw = &packed.to_be_bytes()[3..];
        assert_eq!(decode_datetime2(raw, 0), Some(My::Date(2024, 1, 2, 3, 4, 5, 0)));
        assert_eq!(
            Decoder::DateTime2 { fsp: 0 }.decode(raw, &ColumnType::Timestamp).unwrap(),
            Value::Timestamp((civil(2024, 1, 2) * 86_400 + 3 * 3600 + 4 * 60 + 5) * MICROS_PER_SECOND)
        );
    }

    #[test]
    fn integers_take_their_sign_from_the_catalog() {
        let signed = Decoder::Int { bytes: 1, unsigned: false };
        let unsigned = Decoder::Int { bytes: 1, unsigned: true };
        assert_eq!(signed.decode(&[0xff], &ColumnType::Int { bytes: 1, unsigned: false }).unwrap(), Value::Int(-1));
        assert_eq!(unsigned.decode(&[0xff], &ColumnType::Int { bytes: 1, unsigned: true }).unwrap(), Value::Int(255));
        let big = Decoder::Int { bytes: 8, unsigned: true };
        assert_eq!(
            big.decode(&[0xff; 8], &ColumnType::Int { bytes: 8, unsigned: true }).unwrap(),
            Value::UInt(u64::MAX)
        );
        let medium = Decoder::Int { bytes: 3, unsigned: false };
        assert_eq!(
            medium.decode(&[0x00, 0x00, 0x80], &ColumnType::Int { bytes: 3, unsigned: false }).unwrap(),
            Value::Int(-8_388_608)
        );
    }

    #[test]
    fn strings_and_members() {
        assert_eq!(members("enum('x','y z','it''s')"), vec!["x", "y z", "it's"]);
        assert_eq!(latin1_to_utf8(b"caf\xe9 \x80"), "café €");
        let e = Decoder::Enum { members: members("enum('a','b')"), bytes: 1 };
        assert_eq!(e.decode(&[2], &ColumnType::TEXT).unwrap(), Value::Text("b".into()));
        let s = Decoder::Set { members: members("set('a','b','c')"), bytes: 1 };
        assert_eq!(s.decode(&[5], &ColumnType::TEXT).unwrap(), Value::Text("a,c".into()));
        let b = Decoder::Bytes { charset: Charset::Binary, pad_to: Some(4) };
        assert_eq!(
            b.decode(b"a", &ColumnType::Bytes { max_bytes: Some(4) }).unwrap(),
            Value::Bytes(b"a\0\0\0".to_vec())
        );
        assert_eq!(string_meta(&[0xfe, 0x14]), (wire::STRING, 20));
        // char(255) in utf8mb4: 1020 bytes, the high bits folded into the type byte
        assert_eq!(string_meta(&[0xce, 0xfc]), (wire::STRING, 1020));
    }

    #[test]
    fn table_maps_parse() {
        // the table map MariaDB wrote for `zz_probe_bl`.`u` (7 columns)
        let data = [
            0x22, 0x08, 0, 0, 0, 0, 0x01, 0x00, 0x0b, b'z', b'z', b'_', b'p', b'r', b'o', b'b', b'e', b'_', b'b', b'l',
            0, 0x01, b'u', 0, 0x07, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x11, 0x13, 0x0c, 0xfe, 0x10, 0xfe, 0x14, 0xfe, 0x04,
            0xf7, 0x01, 0xf8, 0x01, 0x03, 0x02, 0x7e,
        ];
        let map = TableMap::parse(&data).unwrap();
        assert_eq!(map.table_id, 0x822);
        assert_eq!(map.schema, b"zz_probe_bl");
        assert_eq!(map.table, b"u");
        assert_eq!(map.types.len(), 7);
        assert_eq!(map.metadata, &[0xfe, 0x10, 0xfe, 0x14, 0xfe, 0x04, 0xf7, 0x01, 0xf8, 0x01, 0x03, 0x02]);
        assert!(matches!(width(wire::STRING, &[0xf7, 0x01]), Some(Width::Fixed(1))));
        assert!(matches!(width(wire::STRING, &[0xfe, 0x14]), Some(Width::Prefixed(1))));
        assert!(matches!(width(wire::TIMESTAMP2, &[3]), Some(Width::Fixed(6))));
        assert!(matches!(width(wire::VARCHAR, &[0x00, 0x04]), Some(Width::Prefixed(2))));
    }

    #[test]
    fn stream_ids_avoid_the_source_and_each_other() {
        let a = stream_server_id("job", 1);
        let b = stream_server_id("job", 1);
        assert_ne!(a, b);
        assert!(a >= 2 && b >= 2);
        assert_ne!(stream_server_id("job", a as u64 + 1), 1);
    }
}
