//! Trigger capture for MariaDB (`[sync] capture = "triggers"`).
//!
//! `start` creates the change log `pontoon_log_<job>` (InnoDB: `seq` auto-increment,
//! `tbl`, `key_json`, `op`, `at`) and three `AFTER INSERT / UPDATE / DELETE ... FOR EACH
//! ROW` triggers per captured table, `pontoon_<job>_<table>_{ins,upd,del}`. A trigger
//! logs the row's key as a JSON array of strings, one per key column, each in a form
//! that decodes back to exactly the [`Value`] `Reader::scan` gives for the column
//! ([`KeyEncoding`]); an UPDATE logs the new key, and the old key too when it differs
//! byte for byte (a key changed only in case under a case-insensitive collation is
//! still logged twice: the syncer re-reads both).
//!
//! **Queue semantics.** A log row's `seq` is taken when the row is inserted, not when
//! its transaction commits, so a long transaction can commit seq 5 after seq 6 was
//! read. `read` therefore returns the oldest committed log rows (`ORDER BY seq LIMIT
//! n`) that it has not returned yet in this process (the returned-but-unreleased seqs
//! are kept in memory), whatever the `from` position; `release` deletes exactly the
//! rows it returned up to a position, so a late committer below that position stays
//! in the log until it is read. After a restart the memory is empty and everything
//! still in the log is delivered again (applying is idempotent). Positions are
//! `TriggerSeq(max(from, largest seq returned))` and never move backward.
//!
//! **DDL.** MariaDB has no DDL triggers. At most every [`DDL_CHECK_INTERVAL`] a read
//! compares a fingerprint of each captured table (its columns from
//! `information_schema.COLUMNS`, and the InnoDB table ids, which TRUNCATE TABLE and
//! table rebuilds change) with the one taken when its triggers were installed (kept
//! in a comment in the trigger bodies, so a restart compares with the install, not
//! with the restart). A change comes back as a [`DdlEvent`] whose statement is what
//! `SHOW CREATE TABLE` gives now (the statement that made the change is not visible
//! to triggers), `DROP TABLE t` for a table that is gone, or the name of a pontoon
//! trigger that was dropped. Only log rows known to predate the change are returned
//! before it: rows up to the largest seq committed before a check that still saw the
//! old fingerprint (a DDL waits for every transaction that wrote the table, so those
//! rows are older than the DDL); later rows wait for the next check.
//!
//! Caveats the engine documentation must carry: TRUNCATE TABLE fires no trigger (it is
//! reported as a table change when the PROCESS privilege lets pontoon read InnoDB's
//! table ids); changes made by foreign key cascades fire no trigger (preflight refuses
//! such tables); `CREATE TRIGGER` waits for a metadata lock on the table (at most
//! [`LOCK_WAIT_SECONDS`], then a transient error).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};
use pontoon_core::capture::{
    Backlog, Capture, CaptureBatch, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp, DdlEvent,
};
use pontoon_core::value::{parse_date, parse_time, parse_timestamp, parse_uuid};
use pontoon_core::{ColumnType, Decimal, Error, ErrorKind, Position, Result, Value};

use crate::catalog::{fetch, number, text};
use crate::sql::{quote, string_literal};
use crate::{MysqlConnector, error};

/// How often a read compares the captured tables' fingerprints at most.
pub const DDL_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often a read polls the log while it waits for changes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long `CREATE TRIGGER` and `DROP TRIGGER` wait for the table's metadata lock
/// (open transactions on the table hold it) before failing with a transient error.
pub const LOCK_WAIT_SECONDS: u32 = 10;
/// MariaDB's longest identifier, in characters.
const MAX_IDENT_CHARS: usize = 64;
/// At most this many seqs in one `DELETE` of `release`.
const MAX_RELEASE_SEQS: usize = 1_000;
/// `backlog` counts rows exactly up to this many, then estimates from the seq range.
const BACKLOG_EXACT_ROWS: u64 = 100_000;

/// The change log table of a job.
pub fn log_table(job: &str) -> String {
    format!("pontoon_log_{job}")
}

/// The statement a trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TriggerOp {
    Insert,
    Update,
    Delete,
}

impl TriggerOp {
    const ALL: [TriggerOp; 3] = [TriggerOp::Insert, TriggerOp::Update, TriggerOp::Delete];

    fn suffix(self) -> &'static str {
        match self {
            TriggerOp::Insert => "ins",
            TriggerOp::Update => "upd",
            TriggerOp::Delete => "del",
        }
    }

    fn event(self) -> &'static str {
        match self {
            TriggerOp::Insert => "INSERT",
            TriggerOp::Update => "UPDATE",
            TriggerOp::Delete => "DELETE",
        }
    }
}

/// `pontoon_<job>_<table>_<op>`, or, when that is longer than MariaDB's 64 characters,
/// its first characters followed by `_<hash of job and table>_<op>`, so that names
/// stay unique per job and table. `cleanup` recognizes a trigger by its name *and*
/// the table it is on, so it never takes another job's trigger for its own.
pub fn trigger_name(job: &str, table: &str, op: TriggerOp) -> String {
    let full = format!("pontoon_{job}_{table}_{}", op.suffix());
    if full.chars().count() <= MAX_IDENT_CHARS {
        return full;
    }
    let hash = fnv1a(format!("{job}\0{table}").as_bytes()) as u32;
    let tail = format!("_{hash:08x}_{}", op.suffix());
    let head: String = format!("pontoon_{job}_{table}").chars().take(MAX_IDENT_CHARS - tail.len()).collect();
    head + &tail
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions (it is stored in
/// trigger names and bodies).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How a key column is written into the log's JSON (always a string or null) so that
/// it decodes back to exactly the [`Value`] the reader gives for the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyEncoding {
    /// Integers (signed, unsigned above 2^63, `year`) as decimal text.
    Integer,
    /// `tinyint(1)`: `0` or `1`.
    Bool,
    /// `float`: the float's exact double, shortest round-trip text.
    Float32,
    /// `double`: shortest round-trip text.
    Float64,
    /// DECIMAL as text, scale kept (`-12.5000`).
    Decimal,
    /// Text (char, varchar, text, enum, set) converted to utf8mb4.
    Text,
    /// A JSON key column (text).
    Json,
    /// Bytes (binary, varbinary, blob) in hex: no character set can change them.
    Hex,
    /// A uuid held as text (`uuid` type, `char(36)`).
    UuidText,
    /// A uuid held as 16 bytes (`binary(16)`), in hex.
    UuidHex,
    /// `date`: `YYYY-MM-DD`.
    Date,
    /// `time`: `[-]HHH:MM:SS[.ffffff]`.
    Time,
    /// `datetime`: `YYYY-MM-DD HH:MM:SS[.ffffff]` (no time zone).
    Datetime,
    /// `timestamp`: seconds since the epoch with fraction (`UNIX_TIMESTAMP`), so the
    /// writing session's time zone does not matter.
    Epoch,
}

impl KeyEncoding {
    /// The encoding of a key column of reader type `ty` and MariaDB `DATA_TYPE` `data_type`.
    fn of(ty: &ColumnType, data_type: &str) -> KeyEncoding {
        let binary = matches!(data_type, "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob");
        match ty {
            ColumnType::Bool => KeyEncoding::Bool,
            ColumnType::Int { .. } => KeyEncoding::Integer,
            ColumnType::Float32 => KeyEncoding::Float32,
            ColumnType::Float64 => KeyEncoding::Float64,
            ColumnType::Decimal { .. } => KeyEncoding::Decimal,
            ColumnType::Text { .. } => KeyEncoding::Text,
            ColumnType::Json => KeyEncoding::Json,
            ColumnType::Bytes { .. } => KeyEncoding::Hex,
            ColumnType::Uuid if binary => KeyEncoding::UuidHex,
            ColumnType::Uuid => KeyEncoding::UuidText,
            ColumnType::Date => KeyEncoding::Date,
            ColumnType::Time => KeyEncoding::Time,
            ColumnType::Timestamp => KeyEncoding::Datetime,
            ColumnType::TimestampTz => KeyEncoding::Epoch,
        }
    }

    /// The SQL expression of a column reference (`NEW.`id``) in this encoding.
    fn sql(self, column: &str) -> String {
        match self {
            KeyEncoding::Integer
            | KeyEncoding::Bool
            | KeyEncoding::Float64
            | KeyEncoding::Decimal
            | KeyEncoding::Date
            | KeyEncoding::Time
            | KeyEncoding::Datetime => format!("CAST({column} AS CHAR)"),
            KeyEncoding::Float32 => format!("CAST(CAST({column} AS DOUBLE) AS CHAR)"),
            KeyEncoding::Text | KeyEncoding::Json | KeyEncoding::UuidText => format!("CONVERT({column} USING utf8mb4)"),
            KeyEncoding::Hex | KeyEncoding::UuidHex => format!("HEX({column})"),
            KeyEncoding::Epoch => format!("CAST(UNIX_TIMESTAMP({column}) AS CHAR)"),
        }
    }

    /// The value of one logged string (`None`: JSON null).
    fn decode(self, s: Option<&str>) -> std::result::Result<Value, String> {
        let Some(s) = s else {
            return Ok(Value::Null);
        };
        let bad = || format!("`{s}` is not a {self:?} key value");
        Ok(match self {
            KeyEncoding::Integer => match s.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::from_u64(s.parse::<u64>().map_err(|_| bad())?),
            },
            KeyEncoding::Bool => match s {
                "0" => Value::Bool(false),
                "1" => Value::Bool(true),
                _ => return Err(bad()),
            },
            KeyEncoding::Float32 => Value::F32(s.parse::<f64>().map_err(|_| bad())? as f32),
            KeyEncoding::Float64 => Value::F64(s.parse::<f64>().map_err(|_| bad())?),
            KeyEncoding::Decimal => Value::Decimal(Decimal::parse(s).ok_or_else(bad)?),
            KeyEncoding::Text => Value::Text(s.to_string()),
            KeyEncoding::Json => Value::Json(s.to_string()),
            KeyEncoding::Hex => Value::Bytes(unhex(s).ok_or_else(bad)?),
            KeyEncoding::UuidHex => {
                let bytes = unhex(s).ok_or_else(bad)?;
                match <[u8; 16]>::try_from(bytes.as_slice()) {
                    Ok(u) => Value::Uuid(u),
                    // the reader parses a value of another length as text
                    Err(_) => {
                        let text = String::from_utf8(bytes).map_err(|_| bad())?;
                        Value::Uuid(parse_uuid(&text).ok_or_else(bad)?)
                    }
                }
            }
            KeyEncoding::UuidText => Value::Uuid(parse_uuid(s).ok_or_else(bad)?),
            KeyEncoding::Date => Value::Date(parse_date(s).ok_or_else(bad)?),
            KeyEncoding::Time => Value::Time(parse_time(s).ok_or_else(bad)?),
            KeyEncoding::Datetime => match parse_timestamp(s) {
                Some((micros, false)) => Value::Timestamp(micros),
                _ => return Err(bad()),
            },
            KeyEncoding::Epoch => Value::TimestampTz(epoch_micros(s).ok_or_else(bad)?),
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `1711852200.123456` (seconds since the epoch, up to six fraction digits) in
/// microseconds.
fn epoch_micros(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) || secs.starts_with('-') {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    secs.checked_mul(1_000_000)?.checked_add(frac)
}

/// One key column of a captured table.
#[derive(Debug, Clone)]
struct KeyColumn {
    name: String,
    encoding: KeyEncoding,
}

/// What a table looked like when its triggers were installed: a hash of its columns
/// and one of its InnoDB table ids (`None` without the PROCESS privilege).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    columns: u64,
    storage: Option<u64>,
}

impl Fingerprint {
    /// The comment a trigger body carries.
    fn marker(&self, job: &str) -> String {
        let storage = self.storage.map_or_else(|| "unknown".to_string(), |s| format!("{s:016x}"));
        format!("/* pontoon capture job={job} columns={:016x} storage={storage} */", self.columns)
    }

    /// The fingerprint in a trigger body written by [`Fingerprint::marker`].
    fn from_body(body: &str) -> Option<Fingerprint> {
        let field = |name: &str| {
            let from = body.find(&format!(" {name}="))? + name.len() + 2;
            body[from..].split_whitespace().next()
        };
        let columns = u64::from_str_radix(field("columns")?, 16).ok()?;
        let storage = u64::from_str_radix(field("storage")?, 16).ok();
        Some(Fingerprint { columns, storage })
    }
}

/// A captured table: its key and its fingerprint at install.
#[derive(Debug, Clone)]
struct Captured {
    key: Vec<KeyColumn>,
    baseline: Fingerprint,
}

/// A DDL found and not yet returned.
#[derive(Debug, Clone)]
struct PendingDdl {
    table: String,
    statement: String,
}

/// What the DDL watch knows.
#[derive(Debug, Default)]
struct Watch {
    checked_at: Option<Instant>,
    /// Log rows up to this seq predate any DDL not yet seen; `None`: none known yet.
    safe_seq: Option<i64>,
    ddl: Option<PendingDdl>,
}

/// Trigger capture of one job on one MariaDB database. See the module documentation.
pub struct TriggerCapture {
    connector: MysqlConnector,
    job: String,
    conn: Option<Conn>,
    tables: BTreeMap<String, Captured>,
    /// Seqs returned by `read` and not yet released.
    returned: BTreeSet<i64>,
    watch: Watch,
}

impl std::fmt::Debug for TriggerCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerCapture")
            .field("database", &self.connector.database)
            .field("job", &self.job)
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .field("returned", &self.returned.len())
            .finish_non_exhaustive()
    }
}

impl TriggerCapture {
    /// Creating it does no I/O.
    pub fn new(connector: MysqlConnector, spec: &CaptureSpec) -> TriggerCapture {
        TriggerCapture {
            connector,
            job: spec.job.clone(),
            conn: None,
            tables: BTreeMap::new(),
            returned: BTreeSet::new(),
            watch: Watch::default(),
        }
    }

    fn log(&self) -> String {
        log_table(&self.job)
    }

    fn database(&self) -> &str {
        &self.connector.database
    }

    /// The connection, opened (and set up for DDL) on first use; the caller gives it
    /// back with [`TriggerCapture::give_back`].
    async fn take_conn(&mut self) -> Result<Conn> {
        match self.conn.take() {
            Some(conn) => Ok(conn),
            None => {
                let mut conn = self.connector.connect().await?;
                conn.query_drop(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}"))
                    .await
                    .map_err(error::map)?;
                Ok(conn)
            }
        }
    }

    /// Keeps the connection unless the call failed in a way that may have broken it.
    fn give_back<T>(&mut self, conn: Conn, result: &Result<T>) {
        if !matches!(result, Err(e) if e.is_transient()) {
            self.conn = Some(conn);
        }
    }

    async fn start_with(&mut self, conn: &mut Conn, tables: &[CaptureTable]) -> Result<Position> {
        let db = self.database().to_string();
        let log = self.log();
        // every table and key column first: nothing is installed for a bad list
        let mut keys: BTreeMap<String, Vec<KeyColumn>> = BTreeMap::new();
        for t in tables {
            keys.insert(t.table.clone(), key_columns(conn, &db, t).await?);
        }
        conn.query_drop(create_log_sql(&self.job)).await.map_err(|e| error::map(e).in_table(&log))?;
        let before = max_seq(conn, &log).await?;
        let names: Vec<String> = keys.keys().cloned().collect();
        let now = fingerprints(conn, &db, &names).await?;
        let installed = installed_triggers(conn, &db).await?;
        let mut captured = BTreeMap::new();
        for (table, key) in keys {
            let current = now.get(&table).cloned().ok_or_else(|| {
                Error::schema("the table disappeared while its capture was installed").in_table(&table)
            })?;
            // an installed trigger keeps the fingerprint of its install
            let baseline = TriggerOp::ALL
                .iter()
                .filter_map(|op| installed.get(&trigger_name(&self.job, &table, *op)))
                .filter(|(on, _)| *on == table)
                .find_map(|(_, body)| Fingerprint::from_body(body))
                .unwrap_or(current);
            for op in TriggerOp::ALL {
                let name = trigger_name(&self.job, &table, op);
                match installed.get(&name) {
                    Some((on, _)) if *on == table => continue,
                    Some((on, _)) => {
                        return Err(Error::config(format!(
                            "trigger {name} is already on table {on}: job names {} and the one that installed it \
                             collide; use another [sync] name",
                            self.job
                        ))
                        .in_table(&table));
                    }
                    None => {}
                }
                let sql = trigger_sql(&self.job, &table, op, &key, &baseline);
                conn.query_drop(sql).await.map_err(|e| error::map(e).in_table(&table))?;
                tracing::info!(trigger = %name, table = %table, "installed capture trigger");
            }
            captured.insert(table, Captured { key, baseline });
        }
        self.tables = captured;
        self.watch = Watch { checked_at: Some(Instant::now()), safe_seq: None, ddl: None };
        // a table changed since its triggers were installed (while pontoon was down)
        let mut changed = None;
        for (table, c) in &self.tables {
            if let Some(what) = difference(&c.baseline, now.get(table)) {
                changed = Some((table.clone(), what));
                break;
            }
        }
        match changed {
            Some((table, what)) => {
                let statement = ddl_statement(conn, &table, what).await?;
                self.watch.ddl = Some(PendingDdl { table, statement });
            }
            None => self.watch.safe_seq = before,
        }
        let seq = max_seq(conn, &log).await?.unwrap_or(0);
        Ok(Position::TriggerSeq { seq })
    }

    /// Compares the fingerprints when [`DDL_CHECK_INTERVAL`] has passed since the last
    /// check: records a DDL, or moves `safe_seq` to the log's largest seq committed
    /// before the check.
    async fn watch_ddl(&mut self, conn: &mut Conn) -> Result<()> {
        if self.watch.ddl.is_some() || self.watch.checked_at.is_some_and(|at| at.elapsed() < DDL_CHECK_INTERVAL) {
            return Ok(());
        }
        let db = self.database().to_string();
        let before = max_seq(conn, &self.log()).await?;
        let names: Vec<String> = self.tables.keys().cloned().collect();
        let now = fingerprints(conn, &db, &names).await?;
        let installed = installed_triggers(conn, &db).await?;
        self.watch.checked_at = Some(Instant::now());
        let mut found = None;
        for (table, c) in &self.tables {
            if let Some(what) = difference(&c.baseline, now.get(table)) {
                found = Some((table.clone(), what));
                break;
            }
            let missing = TriggerOp::ALL
                .iter()
                .map(|op| trigger_name(&self.job, table, *op))
                .find(|name| installed.get(name).is_none_or(|(on, _)| on != table));
            if let Some(name) = missing {
                found = Some((table.clone(), Change::TriggerGone(name)));
                break;
            }
        }
        match found {
            Some((table, what)) => {
                let statement = ddl_statement(conn, &table, what).await?;
                tracing::warn!(table = %table, "schema change on a captured table");
                self.watch.ddl = Some(PendingDdl { table, statement });
            }
            None => {
                if let Some(seq) = before {
                    self.watch.safe_seq = Some(self.watch.safe_seq.map_or(seq, |s| s.max(seq)));
                }
            }
        }
        Ok(())
    }

    async fn read_with(
        &mut self,
        conn: &mut Conn,
        from: &Position,
        max_events: usize,
        wait: Duration,
    ) -> Result<CaptureBatch> {
        let Position::TriggerSeq { seq: from_seq } = *from else {
            return Err(Error::internal(format!("trigger capture cannot read from position {from}")));
        };
        if self.tables.is_empty() {
            return Err(Error::internal("trigger capture read before start"));
        }
        let deadline = Instant::now() + wait;
        let limit = max_events.max(1);
        loop {
            self.watch_ddl(conn).await?;
            let rows = match self.watch.safe_seq {
                Some(upto) => self.next_rows(conn, upto, limit).await?,
                None => Vec::new(),
            };
            let drained = rows.len() < limit;
            if !rows.is_empty() || self.watch.ddl.is_some() || Instant::now() >= deadline {
                let mut batch = self.batch(rows, from_seq)?;
                // once the rows before it are out, the DDL comes with every batch: nothing
                // after it is ever returned by this capture
                if drained && let Some(ddl) = &self.watch.ddl {
                    batch.ddl = Some(DdlEvent {
                        table: ddl.table.clone(),
                        statement: ddl.statement.clone(),
                        position: batch.position.clone(),
                    });
                }
                return Ok(batch);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(POLL_INTERVAL)).await;
        }
    }

    /// The oldest committed log rows with seq <= `upto` not returned yet.
    async fn next_rows(&mut self, conn: &mut Conn, upto: i64, limit: usize) -> Result<Vec<LogRow>> {
        let mut conds = vec![format!("seq <= {upto}")];
        for (a, b) in runs(&self.returned) {
            conds.push(if a == b { format!("seq <> {a}") } else { format!("seq NOT BETWEEN {a} AND {b}") });
        }
        let sql = format!(
            "SELECT seq, tbl, key_json, op, `at` FROM {} WHERE {} ORDER BY seq LIMIT {limit}",
            quote(&self.log()),
            conds.join(" AND ")
        );
        // the text protocol: the statement changes with every read, preparing it would
        // cost a round trip and a cached statement each time
        let rows: Vec<mysql_async::Row> = conn.query(sql).await.map_err(|e| error::map(e).in_table(self.log()))?;
        rows.into_iter().map(|r| LogRow::of(r.unwrap())).collect()
    }

    /// The batch of these rows: events of captured tables, positioned after `from`.
    fn batch(&mut self, rows: Vec<LogRow>, from_seq: i64) -> Result<CaptureBatch> {
        let mut events = Vec::with_capacity(rows.len());
        let mut newest = None;
        let mut last = from_seq;
        for row in &rows {
            last = last.max(row.seq);
            newest = newest.max(Some(row.at));
            let Some(captured) = self.tables.get(&row.table) else {
                // a table no longer captured (an earlier start): released with the batch
                tracing::debug!(table = %row.table, seq = row.seq, "change of a table not captured now, skipped");
                continue;
            };
            let key = decode_key(&row.key, &captured.key).map_err(|why| {
                Error::schema(format!(
                    "change log {} row {} has a key that does not decode: {why}",
                    self.log(),
                    row.seq
                ))
                .in_table(&row.table)
            })?;
            events.push(ChangeEvent { table: row.table.clone(), key, op: row.op });
        }
        self.returned.extend(rows.iter().map(|r| r.seq));
        Ok(CaptureBatch {
            events,
            position: Position::TriggerSeq { seq: last },
            ddl: None,
            committed_at_micros: newest,
        })
    }

    async fn release_with(&mut self, conn: &mut Conn, upto: &Position) -> Result<()> {
        let Position::TriggerSeq { seq: upto } = *upto else {
            return Err(Error::internal(format!("trigger capture cannot release up to position {upto}")));
        };
        let done: Vec<i64> = self.returned.range(..=upto).copied().collect();
        for chunk in done.chunks(MAX_RELEASE_SEQS) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let sql = format!("DELETE FROM {} WHERE seq IN ({})", quote(&self.log()), list.join(","));
            conn.query_drop(sql).await.map_err(|e| error::map(e).in_table(self.log()))?;
            for seq in chunk {
                self.returned.remove(seq);
            }
        }
        Ok(())
    }

    async fn backlog_with(&mut self, conn: &mut Conn) -> Result<Backlog> {
        let log = quote(&self.log());
        let sql = format!(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM {log} LIMIT {}) AS c), min(seq), max(seq) FROM {log}",
            BACKLOG_EXACT_ROWS + 1
        );
        let rows = fetch(conn, &sql, Vec::new()).await.map_err(|e| e.in_table(self.log()))?;
        let row = rows.first();
        let cell = |i: usize| row.and_then(|r| r.get(i)).and_then(number);
        let mut rows_in_log = cell(0).unwrap_or(0);
        if rows_in_log > BACKLOG_EXACT_ROWS
            && let (Some(lo), Some(hi)) = (cell(1), cell(2))
        {
            rows_in_log = hi.saturating_sub(lo) + 1;
        }
        let returned = self.returned.len() as u64;
        Ok(Backlog { events: Some(rows_in_log.saturating_sub(returned)), bytes: None })
    }

    async fn cleanup_with(&mut self, conn: &mut Conn) -> Result<Vec<String>> {
        let db = self.database().to_string();
        let mut removed = Vec::new();
        let installed = installed_triggers(conn, &db).await?;
        // by name and table, or by the job in the body: a RENAME TABLE takes the
        // triggers along, and one left behind would fail every write once the log is gone
        let marker = format!("pontoon capture job={} columns=", self.job);
        let mut ours: Vec<(&String, &String)> = installed
            .iter()
            .filter(|(name, (table, body))| {
                body.contains(&marker) || TriggerOp::ALL.iter().any(|op| trigger_name(&self.job, table, *op) == **name)
            })
            .map(|(name, (table, _))| (name, table))
            .collect();
        ours.sort();
        for (name, table) in ours {
            conn.query_drop(format!("DROP TRIGGER IF EXISTS {}", quote(name)))
                .await
                .map_err(|e| error::map(e).in_table(table))?;
            removed.push(format!("trigger {name} on {table}"));
        }
        let log = self.log();
        if table_exists(conn, &db, &log).await? {
            conn.query_drop(format!("DROP TABLE IF EXISTS {}", quote(&log))).await.map_err(error::map)?;
            removed.push(format!("table {log}"));
        }
        self.tables.clear();
        self.returned.clear();
        self.watch = Watch::default();
        Ok(removed)
    }

    async fn preflight_with(&mut self, conn: &mut Conn, tables: &[CaptureTable]) -> Result<()> {
        let db = self.database().to_string();
        let log = self.log();
        let mut problems = Vec::new();
        for t in tables {
            if let Err(e) = key_columns(conn, &db, t).await {
                if e.kind() != ErrorKind::Schema {
                    return Err(e);
                }
                problems.push(format!("table {}: {}", t.table, e.message()));
                continue;
            }
            if !has_unique_not_null_key(conn, &db, &t.table).await? {
                problems.push(format!(
                    "table {}: no primary key or unique NOT NULL key, so a change cannot name its row; add a primary key",
                    t.table
                ));
            }
        }
        problems.extend(cascading_foreign_keys(conn, &db, tables).await?);
        let installed = installed_triggers(conn, &db).await?;
        for t in tables {
            for op in TriggerOp::ALL {
                let name = trigger_name(&self.job, &t.table, op);
                if let Some((on, _)) = installed.get(&name)
                    && *on != t.table
                {
                    problems.push(format!(
                        "trigger {name} already exists on table {on}: another job's name collides with job {}; \
                         set another [sync] name",
                        self.job
                    ));
                }
            }
        }
        problems.extend(privilege_problems(conn, &db, &log, tables).await?);
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(format!(
            "MariaDB database {db} refuses trigger capture for job {}:\n- {}",
            self.job,
            problems.join("\n- ")
        )))
    }
}

/// One change log row.
#[derive(Debug)]
struct LogRow {
    seq: i64,
    table: String,
    key: String,
    op: ChangeOp,
    at: i64,
}

impl LogRow {
    /// A row read with the text protocol (every cell text).
    fn of(cells: Vec<My>) -> Result<LogRow> {
        let [seq, table, key, op, at]: [My; 5] =
            cells.try_into().map_err(|_| Error::internal("a change log row of an unexpected shape"))?;
        let seq: i64 = text(&seq)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::internal("a change log seq that is not an integer"))?;
        let table = text(&table).unwrap_or_default();
        let key = text(&key).unwrap_or_default();
        let op = match text(&op).as_deref() {
            Some("I") => ChangeOp::Insert,
            Some("U") => ChangeOp::Update,
            Some("D") => ChangeOp::Delete,
            other => return Err(Error::internal(format!("change log row {seq} has op {other:?}"))),
        };
        let at = text(&at)
            .and_then(|s| parse_timestamp(&s))
            .map(|(micros, _)| micros)
            .ok_or_else(|| Error::internal(format!("change log row {seq} has no valid time")))?;
        Ok(LogRow { seq, table, key, op, at })
    }
}

/// The key values of a logged JSON array.
fn decode_key(json: &str, key: &[KeyColumn]) -> std::result::Result<Vec<Value>, String> {
    let items: Vec<Option<String>> =
        serde_json::from_str(json).map_err(|e| format!("`{json}` is not a JSON array of strings: {e}"))?;
    if items.len() != key.len() {
        return Err(format!("`{json}` has {} values for a key of {} columns", items.len(), key.len()));
    }
    items
        .iter()
        .zip(key)
        .map(|(item, k)| k.encoding.decode(item.as_deref()).map_err(|e| format!("{}: {e}", k.name)))
        .collect()
}

/// Contiguous runs `(first, last)` of a set of seqs.
fn runs(seqs: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// `CREATE TABLE IF NOT EXISTS pontoon_log_<job>`.
fn create_log_sql(job: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           seq bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           tbl varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
           key_json longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
           op char(1) CHARACTER SET ascii NOT NULL, \
           `at` datetime(6) NOT NULL DEFAULT NOW(6)\
         ) ENGINE=InnoDB COMMENT={}",
        quote(&log_table(job)),
        string_literal(&format!("pontoon trigger capture log of job {job}; `pontoon cleanup` removes it"))
    )
}

/// `CREATE TRIGGER IF NOT EXISTS ... AFTER <op> ON <table> FOR EACH ROW BEGIN ... END`,
/// logging the key (see [`KeyEncoding`]) and, for UPDATE, the old key too when it differs
/// byte for byte. The body carries the table's fingerprint at install.
fn trigger_sql(job: &str, table: &str, op: TriggerOp, key: &[KeyColumn], fingerprint: &Fingerprint) -> String {
    let log = quote(&log_table(job));
    let tbl = string_literal(table);
    let json = |row: &str| {
        let items: Vec<String> = key.iter().map(|k| k.encoding.sql(&format!("{row}.{}", quote(&k.name)))).collect();
        format!("JSON_ARRAY({})", items.join(", "))
    };
    let insert = "INSERT INTO ".to_string() + &log + " (tbl, key_json, op, `at`) VALUES ";
    let body = match op {
        TriggerOp::Insert => format!("{insert}({tbl}, {}, 'I', UTC_TIMESTAMP(6));", json("NEW")),
        TriggerOp::Delete => format!("{insert}({tbl}, {}, 'D', UTC_TIMESTAMP(6));", json("OLD")),
        TriggerOp::Update => format!(
            "DECLARE old_key, new_key longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; \
             SET old_key = {}, new_key = {}; \
             IF CAST(old_key AS BINARY) <> CAST(new_key AS BINARY) THEN \
             {insert}({tbl}, old_key, 'U', UTC_TIMESTAMP(6)), ({tbl}, new_key, 'U', UTC_TIMESTAMP(6)); \
             ELSE {insert}({tbl}, new_key, 'U', UTC_TIMESTAMP(6)); END IF;",
            json("OLD"),
            json("NEW")
        ),
    };
    format!(
        "CREATE TRIGGER IF NOT EXISTS {} AFTER {} ON {} FOR EACH ROW BEGIN {} {body} END",
        quote(&trigger_name(job, table, op)),
        op.event(),
        quote(table),
        fingerprint.marker(job)
    )
}

/// The key columns of a capture table with their encodings; a missing table or key
/// column is a [`ErrorKind::Schema`] error naming it.
async fn key_columns(conn: &mut Conn, db: &str, t: &CaptureTable) -> Result<Vec<KeyColumn>> {
    if t.key.is_empty() || t.key.len() != t.key_types.len() {
        return Err(Error::schema("no key to capture changes by (the job gives none)").in_table(&t.table));
    }
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        vec![param(db), param(&t.table)],
    )
    .await
    .map_err(|e| e.in_table(&t.table))?;
    let columns: HashMap<String, String> = rows
        .iter()
        .filter(|r| text(&r[0]).as_deref() == Some(t.table.as_str()))
        .filter_map(|r| Some((text(&r[1])?, text(&r[2])?.to_ascii_lowercase())))
        .collect();
    if columns.is_empty() {
        return Err(Error::schema("the table does not exist").in_table(&t.table));
    }
    t.key
        .iter()
        .zip(&t.key_types)
        .map(|(name, ty)| match columns.get(name) {
            Some(data_type) => Ok(KeyColumn { name: name.clone(), encoding: KeyEncoding::of(ty, data_type) }),
            None => {
                Err(Error::schema(format!("the key column {name} does not exist")).in_table(&t.table).in_column(name))
            }
        })
        .collect()
}

fn param(s: &str) -> My {
    My::Bytes(s.as_bytes().to_vec())
}

/// The largest committed seq of the log, `None` when it is empty.
async fn max_seq(conn: &mut Conn, log: &str) -> Result<Option<i64>> {
    let rows =
        fetch(conn, &format!("SELECT max(seq) FROM {}", quote(log)), Vec::new()).await.map_err(|e| e.in_table(log))?;
    Ok(rows.first().and_then(|r| number(&r[0])).map(|n| n as i64))
}

async fn table_exists(conn: &mut Conn, db: &str, table: &str) -> Result<bool> {
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        vec![param(db), param(table)],
    )
    .await?;
    Ok(rows.iter().any(|r| text(&r[0]).as_deref() == Some(table)))
}

/// pontoon's triggers in the database: name -> (table, body).
async fn installed_triggers(conn: &mut Conn, db: &str) -> Result<HashMap<String, (String, String)>> {
    let rows = fetch(
        conn,
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS \
         WHERE TRIGGER_SCHEMA = ? AND TRIGGER_NAME LIKE 'pontoon\\_%'",
        vec![param(db)],
    )
    .await?;
    Ok(rows.iter().filter_map(|r| Some((text(&r[0])?, (text(&r[1])?, text(&r[2]).unwrap_or_default())))).collect())
}

/// What changed in a table since its baseline fingerprint.
#[derive(Debug)]
enum Change {
    Dropped,
    Columns,
    Storage,
    TriggerGone(String),
}

fn difference(baseline: &Fingerprint, now: Option<&Fingerprint>) -> Option<Change> {
    let Some(now) = now else {
        return Some(Change::Dropped);
    };
    if now.columns != baseline.columns {
        return Some(Change::Columns);
    }
    match (baseline.storage, now.storage) {
        (Some(a), Some(b)) if a != b => Some(Change::Storage),
        _ => None,
    }
}

/// The statement a [`DdlEvent`] carries for a change: what the table is now.
async fn ddl_statement(conn: &mut Conn, table: &str, change: Change) -> Result<String> {
    Ok(match change {
        Change::Dropped => format!("DROP TABLE {}", quote(table)),
        Change::Columns => format!("table changed to: {}", show_create(conn, table).await?),
        Change::Storage => format!(
            "table emptied or rebuilt (TRUNCATE TABLE, OPTIMIZE TABLE or an ALTER TABLE that copies it), now: {}",
            show_create(conn, table).await?
        ),
        Change::TriggerGone(name) => {
            format!("DROP TRIGGER {}: changes to the table are no longer captured", quote(&name))
        }
    })
}

/// What `SHOW CREATE TABLE` says now (empty if the table is gone meanwhile).
async fn show_create(conn: &mut Conn, table: &str) -> Result<String> {
    match fetch(conn, &format!("SHOW CREATE TABLE {}", quote(table)), Vec::new()).await {
        Ok(rows) => Ok(rows.first().and_then(|r| r.get(1)).and_then(text).unwrap_or_default()),
        Err(e) if e.kind() == ErrorKind::Schema => Ok(String::new()),
        Err(e) => Err(e.in_table(table)),
    }
}

/// The current fingerprints of the tables that exist among `tables`.
async fn fingerprints(conn: &mut Conn, db: &str, tables: &[String]) -> Result<HashMap<String, Fingerprint>> {
    if tables.is_empty() {
        return Ok(HashMap::new());
    }
    let marks = vec!["?"; tables.len()].join(", ");
    let mut params = vec![param(db)];
    params.extend(tables.iter().map(|t| param(t)));
    let rows = fetch(
        conn,
        &format!(
            "SELECT TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, \
             IFNULL(COLLATION_NAME, ''), COLUMN_KEY = 'PRI' \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN ({marks})"
        ),
        params,
    )
    .await?;
    let mut described: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for r in &rows {
        let Some(table) = text(&r[0]).filter(|t| tables.contains(t)) else {
            continue;
        };
        let ordinal = number(&r[1]).unwrap_or(0);
        let parts: Vec<String> = r[2..].iter().map(|c| text(c).unwrap_or_default()).collect();
        described.entry(table).or_default().push((ordinal, parts.join("\u{1f}")));
    }
    let storage = innodb_ids(conn, db, tables).await?;
    Ok(described
        .into_iter()
        .map(|(table, mut columns)| {
            columns.sort();
            let text: Vec<String> = columns.into_iter().map(|(_, c)| c).collect();
            let storage = storage.as_ref().map(|ids| {
                let mut mine: Vec<u64> = ids.iter().filter(|(t, _)| *t == table).map(|(_, id)| *id).collect();
                mine.sort();
                fnv1a(format!("{mine:?}").as_bytes())
            });
            let fp = Fingerprint { columns: fnv1a(text.join("\u{1e}").as_bytes()), storage };
            (table, fp)
        })
        .collect())
}

/// InnoDB's table ids of the tables (a partitioned table has one per partition), from
/// `information_schema.INNODB_SYS_TABLES`, which needs the PROCESS privilege: `None`
/// without it. TRUNCATE TABLE and table rebuilds give a table a new id.
async fn innodb_ids(conn: &mut Conn, db: &str, tables: &[String]) -> Result<Option<Vec<(String, u64)>>> {
    let prefix: String = filename_prefix(db);
    let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%"));
    let rows = match fetch(
        conn,
        "SELECT NAME, TABLE_ID FROM information_schema.INNODB_SYS_TABLES WHERE NAME LIKE ?",
        vec![param(&pattern)],
    )
    .await
    {
        Ok(rows) => rows,
        Err(e) if e.message().contains("(MariaDB error 1227)") => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for r in &rows {
        let (Some(name), Some(id)) = (text(&r[0]), number(&r[1])) else {
            continue;
        };
        let Some((db_part, table_part)) = name.split_once('/') else {
            continue;
        };
        if filename_len(db_part, db) != Some(db_part.len()) {
            continue;
        }
        for t in tables {
            if let Some(n) = filename_len(table_part, t) {
                let rest = &table_part[n..];
                if rest.is_empty() || rest.starts_with("#P#") || rest.starts_with("#p#") {
                    out.push((t.clone(), id));
                }
            }
        }
    }
    Ok(Some(out))
}

/// The longest beginning of `ident`'s file name (MariaDB's `filename` character set)
/// that is certain: its characters up to the first one that is not `[A-Za-z0-9_]`.
fn filename_prefix(ident: &str) -> String {
    ident.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// How many bytes at the start of `encoded` (a name from InnoDB's dictionary, in
/// MariaDB's `filename` character set) spell `ident`, or `None` if they do not.
/// `[A-Za-z0-9_]` stand for themselves, other characters are `@` and four hex digits,
/// except letters that MariaDB writes as `@` and two characters from a table this
/// does not copy: those match any two such characters (a false match can only make
/// a TRUNCATE of another table look like a change of this one).
fn filename_len(encoded: &str, ident: &str) -> Option<usize> {
    let b = encoded.as_bytes();
    let mut i = 0;
    for c in ident.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            if b.get(i) != Some(&(c as u8)) {
                return None;
            }
            i += 1;
            continue;
        }
        if b.get(i) != Some(&b'@') {
            return None;
        }
        i += 1;
        let hex = format!("{:04x}", c as u32);
        if encoded.get(i..i + 4).is_some_and(|h| h.eq_ignore_ascii_case(&hex)) {
            i += 4;
        } else if !c.is_ascii() && b.len() >= i + 2 && (0x30..0x80).contains(&b[i]) && (0x30..0x80).contains(&b[i + 1])
        {
            i += 2;
        } else {
            return None;
        }
    }
    Some(i)
}

/// True if the table has a primary key or a unique index on NOT NULL columns only.
async fn has_unique_not_null_key(conn: &mut Conn, db: &str, table: &str) -> Result<bool> {
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NULLABLE FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
        vec![param(db), param(table)],
    )
    .await
    .map_err(|e| e.in_table(table))?;
    let mut indexes: HashMap<String, bool> = HashMap::new();
    for r in rows.iter().filter(|r| text(&r[0]).as_deref() == Some(table)) {
        let not_null = text(&r[2]).unwrap_or_default().is_empty();
        let entry = indexes.entry(text(&r[1]).unwrap_or_default()).or_insert(true);
        *entry &= not_null;
    }
    Ok(indexes.values().any(|all_not_null| *all_not_null))
}

/// Refusals for foreign keys that change captured tables' rows by cascade: MariaDB
/// fires no trigger for those changes.
async fn cascading_foreign_keys(conn: &mut Conn, db: &str, tables: &[CaptureTable]) -> Result<Vec<String>> {
    let rows = fetch(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE \
         FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? \
         AND (UPDATE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') OR DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT'))",
        vec![param(db)],
    )
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().map(|c| text(c).unwrap_or_default()).collect();
        if !tables.iter().any(|t| t.table == cells[0]) {
            continue;
        }
        let mut actions = Vec::new();
        if cells[4] != "RESTRICT" && cells[4] != "NO ACTION" {
            actions.push(format!("ON DELETE {}", cells[4]));
        }
        if cells[3] != "RESTRICT" && cells[3] != "NO ACTION" {
            actions.push(format!("ON UPDATE {}", cells[3]));
        }
        out.push(format!(
            "table {}: foreign key {} to {} has {}, and MariaDB fires no trigger for the rows a cascade changes, \
             so they would not be synced; make it RESTRICT (the application then changes those rows itself)",
            cells[0],
            cells[1],
            cells[2],
            actions.join(" and ")
        ));
    }
    Ok(out)
}

/// Refusals for privileges the capture needs and the user lacks (privileges granted
/// to the user itself, globally, on the database or on the table; with a role active
/// they cannot be told apart and are not checked).
async fn privilege_problems(conn: &mut Conn, db: &str, log: &str, tables: &[CaptureTable]) -> Result<Vec<String>> {
    let rows =
        fetch(conn, "SELECT CURRENT_USER(), CURRENT_ROLE(), @@log_bin, @@log_bin_trust_function_creators", Vec::new())
            .await?;
    let row = rows.first().ok_or_else(|| Error::internal("no row for CURRENT_USER()"))?;
    let user = text(&row[0]).unwrap_or_default();
    let role = text(&row[1]);
    let log_bin = number(&row[2]).unwrap_or(0) == 1;
    let trust = number(&row[3]).unwrap_or(0) == 1;
    let (name, host) = user.rsplit_once('@').unwrap_or((user.as_str(), "%"));
    let grantee = format!("'{name}'@'{host}'");
    let global: BTreeSet<String> = fetch(
        conn,
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
        vec![param(&grantee)],
    )
    .await?
    .iter()
    .filter_map(|r| text(&r[0]))
    .collect();
    let schema: BTreeSet<String> = fetch(
        conn,
        "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ? AND ? LIKE TABLE_SCHEMA",
        vec![param(&grantee), param(db)],
    )
    .await?
    .iter()
    .filter_map(|r| text(&r[0]))
    .collect();
    let table_rows = fetch(
        conn,
        "SELECT TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES \
         WHERE GRANTEE = ? AND TABLE_SCHEMA = ?",
        vec![param(&grantee), param(db)],
    )
    .await?;
    let on_table: BTreeSet<(String, String)> =
        table_rows.iter().filter_map(|r| Some((text(&r[0])?, text(&r[1])?))).collect();
    let has = |privilege: &str, table: &str| {
        global.contains(privilege)
            || schema.contains(privilege)
            || on_table.contains(&(table.to_string(), privilege.to_string()))
    };
    let mut out = Vec::new();
    let mut check = |privileges: &[&str], table: &str, why: &str| {
        let missing: Vec<&str> = privileges.iter().copied().filter(|p| !has(p, table)).collect();
        if !missing.is_empty() {
            let on = format!("{}.{}", quote(db), quote(table));
            let missing = missing.join(", ");
            out.push(format!("user {grantee} lacks {missing} on {on} ({why}); GRANT {missing} ON {on} TO {grantee}"));
        }
    };
    if role.is_none() {
        for t in tables {
            check(&["SELECT", "TRIGGER"], &t.table, "to read rows and install the capture triggers");
        }
        check(
            &["CREATE", "INSERT", "SELECT", "DELETE", "DROP"],
            log,
            "for the change log table: create it, fill it from the triggers, read, release, clean up",
        );
        if !global.contains("PROCESS") {
            out.push(format!(
                "user {grantee} lacks PROCESS, needed to notice TRUNCATE TABLE on captured tables \
                 (TRUNCATE fires no trigger; pontoon reads InnoDB's table ids); GRANT PROCESS ON *.* TO {grantee}"
            ));
        }
    } else {
        tracing::warn!(role = ?role, "a role is active: privileges for trigger capture are not checked");
    }
    if log_bin && !trust && !global.contains("SUPER") && role.is_none() {
        out.push(format!(
            "user {grantee} lacks SUPER, which MariaDB requires to create triggers while the binary log is on \
             (log_bin = ON) and log_bin_trust_function_creators = OFF; GRANT SUPER ON *.* TO {grantee}, or SET \
             GLOBAL log_bin_trust_function_creators = ON"
        ));
    }
    Ok(out)
}

#[async_trait]
impl Capture for TriggerCapture {
    async fn preflight(&mut self, tables: &[CaptureTable], _copy_seconds: u64) -> Result<()> {
        // the log is kept until released: no retention to compare with the copy time
        let mut conn = self.take_conn().await?;
        let result = self.preflight_with(&mut conn, tables).await;
        self.give_back(conn, &result);
        result
    }

    async fn start(&mut self, tables: &[CaptureTable]) -> Result<Position> {
        let mut conn = self.take_conn().await?;
        let result = self.start_with(&mut conn, tables).await;
        self.give_back(conn, &result);
        result
    }

    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let mut conn = self.take_conn().await?;
        let result = self.read_with(&mut conn, from, max_events, wait).await;
        self.give_back(conn, &result);
        result
    }

    async fn release(&mut self, upto: &Position) -> Result<()> {
        let mut conn = self.take_conn().await?;
        let result = self.release_with(&mut conn, upto).await;
        self.give_back(conn, &result);
        result
    }

    async fn backlog(&mut self, _from: &Position) -> Result<Backlog> {
        let mut conn = self.take_conn().await?;
        let result = self.backlog_with(&mut conn).await;
        self.give_back(conn, &result);
        result
    }

    async fn cleanup(&mut self) -> Result<Vec<String>> {
        let mut conn = self.take_conn().await?;
        let result = self.cleanup_with(&mut conn).await;
        self.give_back(conn, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names_fit_and_stay_unique() {
        assert_eq!(trigger_name("j", "orders", TriggerOp::Insert), "pontoon_j_orders_ins");
        let job = "a".repeat(40);
        let long = "t".repeat(64);
        let a = trigger_name(&job, &long, TriggerOp::Update);
        let b = trigger_name(&job, &format!("{}u", "t".repeat(63)), TriggerOp::Update);
        assert_eq!(a.chars().count(), 64);
        assert!(a.ends_with("_upd"), "{a}");
        assert_ne!(a, b);
        let wide = "é".repeat(64);
        assert_eq!(trigger_name("j", &wide, TriggerOp::Delete).chars().count(), 64);
    }

    #[test]
    fn filename_encoding_is_matched() {
        assert_eq!(filename_len("a@0024b", "a$b"), Some(7));
        assert_eq!(filename_len("A@002db@002ec#P#p0", "A-b.c"), Some(13));
        assert_eq!(filename_len("@0x@0h@20ac", "ñá€"), Some(11));
        assert_eq!(filename_len("orders", "order"), Some(5));
        assert_eq!(filename_len("order", "orders"), None);
        assert_eq!(filename_len("a@002db", "a.b"), None);
        assert_eq!(filename_prefix("t_1-x"), "t_1");
    }

    #[test]
    fn fingerprints_survive_the_trigger_body() {
        let fp = Fingerprint { columns: 0xabc, storage: Some(7) };
        let body = format!("BEGIN {} INSERT ... END", fp.marker("j"));
        assert_eq!(Fingerprint::from_body(&body), Some(fp));
        let unknown = Fingerprint { columns: 1, storage: None };
        assert_eq!(Fingerprint::from_body(&unknown.marker("j")), Some(unknown));
        assert_eq!(Fingerprint::from_body("BEGIN END"), None);
    }

    #[test]
    fn logged_keys_decode() {
        let enc = |e: KeyEncoding, s: &str| e.decode(Some(s)).unwrap();
        assert_eq!(enc(KeyEncoding::Integer, "18446744073709551615"), Value::UInt(u64::MAX));
        assert_eq!(enc(KeyEncoding::Integer, "-5"), Value::Int(-5));
        assert_eq!(enc(KeyEncoding::Float32, "0.10000000149011612"), Value::F32(0.1));
        assert_eq!(enc(KeyEncoding::Hex, "00FF27"), Value::Bytes(vec![0, 0xff, 0x27]));
        assert_eq!(enc(KeyEncoding::Epoch, "1711852200.123456"), Value::TimestampTz(1_711_852_200_123_456));
        assert_eq!(enc(KeyEncoding::Epoch, "86400.5"), Value::TimestampTz(86_400_500_000));
        assert_eq!(enc(KeyEncoding::Epoch, "7"), Value::TimestampTz(7_000_000));
        assert!(KeyEncoding::Bool.decode(Some("2")).is_err());
        assert!(KeyEncoding::Hex.decode(Some("0")).is_err());
        assert_eq!(KeyEncoding::Text.decode(None).unwrap(), Value::Null);
        let key = [KeyColumn { name: "a".into(), encoding: KeyEncoding::Text }];
        assert_eq!(decode_key(r#"["a\"b\u0000😀"]"#, &key).unwrap(), vec![Value::Text("a\"b\0😀".into())]);
        assert!(decode_key("[1]", &key).is_err());
        assert!(decode_key(r#"["a","b"]"#, &key).is_err());
    }

    #[test]
    fn returned_seqs_are_excluded_as_runs() {
        let set: BTreeSet<i64> = [1, 2, 3, 5, 7, 8].into_iter().collect();
        assert_eq!(runs(&set), vec![(1, 3), (5, 5), (7, 8)]);
    }
}
