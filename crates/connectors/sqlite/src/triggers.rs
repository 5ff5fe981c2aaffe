//! Change capture with triggers (`capture = "triggers"`), SQLite's only mode: it has
//! no change log of its own.
//!
//! [`Capture::start`] creates, in one transaction, a log table `pontoon_log_<job>`
//! (`seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl, key, op, at`) and on each captured
//! table three triggers `pontoon_<job>_<table>_{ins,upd,del}` (AFTER INSERT / UPDATE
//! / DELETE, FOR EACH ROW) that insert the row's key into it. An UPDATE logs the new
//! key, and first the old key (as `D`) when the key changed. `at` is the trigger's
//! time in microseconds since the epoch (SQLite's clock has millisecond resolution).
//! A third object, `pontoon_schema_<job>`, keeps the captured tables' definitions
//! (see DDL below).
//!
//! **Keys** are a JSON array in key order holding each key cell in its storage class:
//! an integer as a number, text as a string, NULL as null, a blob as
//! `{"hex":"00FF"}`, a real as `{"real":"0.10000000000000001"}` (17 significant
//! digits: exact when the application's SQLite converts exactly, as 3.50 does; 3.40
//! can miss the last digit of extreme values, so a REAL key written through an old
//! SQLite may not be found again). [`Capture::read`]
//! rebuilds the stored cell from it and decodes it by the key column's type exactly as
//! `Reader::scan` does, so events can be passed to `Reader::fetch_keys` as they are.
//! The triggers use SQLite's JSON functions (`json_quote`): every SQLite since 3.38
//! has them built in, and most builds before did.
//!
//! **Queue semantics.** A `seq` is taken when the trigger runs, not at commit. SQLite
//! has one writer at a time, so a lower `seq` cannot commit after a higher one was
//! read, but the reader does not rely on it (the PostgreSQL and MariaDB trigger
//! captures cannot): `read` returns the oldest committed log rows it has not returned
//! yet (`ORDER BY seq LIMIT n`, whatever `from` says), remembers them, and `release`
//! deletes exactly the remembered rows up to the position, by `seq`. A restarted
//! capture remembers nothing, so everything still in the log is delivered again;
//! re-applying is idempotent. The position is the highest `seq` delivered so far.
//!
//! **DDL.** The first `start` records each captured table's `CREATE` statement in
//! `pontoon_schema_<job>` (kept until `cleanup`). Each `read` checks `PRAGMA
//! schema_version` (a header field, cheap); when it changed, it compares the captured
//! tables' statements with the recorded ones and returns the new statement (or
//! `DROP TABLE`) as the batch's DDL, with no events: log rows of the same snapshot may
//! come from either side of the change (they stay in the log). A change made while no
//! capture was running is reported by the first read after `start`.
//!
//! **Limits.** The log holds no transaction id, so a batch is cut at `max_events`
//! by `seq`, possibly inside a transaction (the syncer re-reads current rows, so the
//! target shows part of a transaction for at most one batch). A row that `INSERT OR
//! REPLACE` removes through a UNIQUE constraint other than the key is deleted without
//! its DELETE trigger (SQLite fires it only under `PRAGMA recursive_triggers`), so that
//! deletion is not captured.
//!
//! **Concurrency.** pontoon's connections wait up to 10 s for a lock (busy timeout).
//! In WAL mode reading the log never blocks the application; in rollback-journal mode
//! a read briefly holds a shared lock that delays the application's commit, so the
//! application needs a busy timeout of its own (preflight warns). `start`, `release`
//! and `cleanup` write, and wait for the application's write transaction to end.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pontoon_core::capture::{
    Backlog, Capture, CaptureBatch, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp, DdlEvent,
};
use pontoon_core::{Error, ErrorKind, Position, Result, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::conn::{Handle, open_source};
use crate::error::db_error;
use crate::storage::decode;
use crate::types::quote;

/// How often `read` looks at the log while it waits for changes.
const POLL: Duration = Duration::from_millis(50);

/// The trigger's clock: microseconds since the epoch (millisecond resolution).
const NOW_MICROS: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

/// Trigger-based change capture of one SQLite database for one job.
#[derive(Debug)]
pub struct TriggerCapture {
    path: PathBuf,
    names: Names,
    conn: Option<Handle>,
    /// The captured tables, by the name the triggers write into `tbl`.
    tables: HashMap<String, Captured>,
    /// `PRAGMA schema_version` when the captured tables' statements were last
    /// compared.
    schema_version: i64,
    /// Log rows `read` returned and `release` has not deleted yet.
    returned: BTreeSet<i64>,
}

#[derive(Debug, Clone)]
struct Captured {
    table: CaptureTable,
    /// The table's `CREATE` statement when this job first captured it.
    sql: Option<String>,
}

/// What one look at the log found.
enum Poll {
    /// A captured table's definition changed: its new statement.
    Ddl { table: String, statement: String },
    /// The oldest log rows not returned yet (maybe none), and the schema version
    /// they were read under.
    Rows { rows: Vec<LogRow>, schema_version: i64 },
}

/// One log row with its key cells rebuilt in their storage class.
struct LogRow {
    seq: i64,
    table: String,
    op: String,
    at: i64,
    key: Vec<Cell>,
}

/// A stored key cell, owned.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(*i),
            Cell::Real(f) => ValueRef::Real(*f),
            Cell::Text(s) => ValueRef::Text(s.as_bytes()),
            Cell::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl TriggerCapture {
    /// A capture of the database at `path` for `spec.job` (checked by the caller to
    /// be `[a-z0-9_]{1,40}`). No I/O.
    pub(crate) fn new(path: PathBuf, spec: &CaptureSpec) -> TriggerCapture {
        TriggerCapture {
            path,
            names: Names { job: spec.job.clone() },
            conn: None,
            tables: HashMap::new(),
            schema_version: 0,
            returned: BTreeSet::new(),
        }
    }

    async fn conn(&mut self) -> Result<Handle> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = open_source(self.path.clone()).await?;
        self.conn = Some(c.clone());
        Ok(c)
    }
}

/// The names of what a job installs.
#[derive(Debug, Clone)]
struct Names {
    job: String,
}

impl Names {
    fn log(&self) -> String {
        format!("pontoon_log_{}", self.job)
    }

    /// The table of captured tables' statements at the first start.
    fn schema(&self) -> String {
        format!("pontoon_schema_{}", self.job)
    }

    /// `pontoon_<job>_<table>_<suffix>`.
    fn trigger(&self, table: &str, suffix: &str) -> String {
        format!("pontoon_{}_{table}_{suffix}", self.job)
    }

    /// The prefix of every trigger name of this job.
    fn trigger_prefix(&self) -> String {
        format!("pontoon_{}_", self.job)
    }

    /// Text every trigger body of this job contains (its log table, quoted): tells
    /// this job's triggers from those of a job whose id extends this one's.
    fn trigger_mark(&self) -> String {
        format!("INSERT INTO {}", quote(&self.log()))
    }
}

/// An SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL text of the key of the `row` (`NEW` or `OLD`) as a JSON array (see the
/// module documentation for the form of each cell).
fn key_json(row: &str, key: &[String]) -> String {
    let cells: Vec<String> = key
        .iter()
        .map(|k| {
            let c = format!("{row}.{}", quote(k));
            format!(
                "CASE typeof({c}) WHEN 'integer' THEN CAST({c} AS TEXT) WHEN 'text' THEN json_quote({c}) \
                 WHEN 'blob' THEN '{{\"hex\":\"' || hex({c}) || '\"}}' \
                 WHEN 'real' THEN '{{\"real\":\"' || printf('%!.17g', {c}) || '\"}}' ELSE 'null' END"
            )
        })
        .collect();
    format!("('[' || {} || ']')", cells.join(" || ',' || "))
}

/// The three triggers of `table` (name, statement).
fn trigger_sql(names: &Names, t: &CaptureTable) -> Vec<(String, String)> {
    let log = quote(&names.log());
    let tbl = literal(&t.table);
    let on = quote(&t.table);
    let new = key_json("NEW", &t.key);
    let old = key_json("OLD", &t.key);
    let insert = |key: &str, op: &str| {
        format!("INSERT INTO {log} (tbl, key, op, at) VALUES ({tbl}, {key}, '{op}', {NOW_MICROS});")
    };
    let ins = names.trigger(&t.table, "ins");
    let upd = names.trigger(&t.table, "upd");
    let del = names.trigger(&t.table, "del");
    vec![
        (
            ins.clone(),
            format!("CREATE TRIGGER {} AFTER INSERT ON {on} FOR EACH ROW BEGIN {} END", quote(&ins), insert(&new, "I")),
        ),
        (
            upd.clone(),
            format!(
                "CREATE TRIGGER {} AFTER UPDATE ON {on} FOR EACH ROW BEGIN \
                 INSERT INTO {log} (tbl, key, op, at) SELECT {tbl}, {old}, 'D', {NOW_MICROS} WHERE {old} IS NOT {new}; \
                 {} END",
                quote(&upd),
                insert(&new, "U")
            ),
        ),
        (
            del.clone(),
            format!("CREATE TRIGGER {} AFTER DELETE ON {on} FOR EACH ROW BEGIN {} END", quote(&del), insert(&old, "D")),
        ),
    ]
}

/// This job's triggers in the database: (name, table), found by name and body.
fn job_triggers(conn: &Connection, names: &Names) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare(
            "SELECT name, tbl_name FROM main.sqlite_schema WHERE type = 'trigger' \
             AND substr(name, 1, length(?1)) = ?1 AND instr(sql, ?2) > 0 ORDER BY tbl_name, name",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([names.trigger_prefix(), names.trigger_mark()], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_error)?
        .collect::<rusqlite::Result<Vec<(String, String)>>>()
        .map_err(db_error)?;
    Ok(rows)
}

/// A trigger named like one of this job's that is not (another job's, or the
/// user's): (name, table).
fn foreign_trigger(conn: &Connection, names: &Names, name: &str) -> Result<Option<String>> {
    conn.query_row(
        "SELECT tbl_name FROM main.sqlite_schema WHERE type = 'trigger' AND name = ?1 COLLATE NOCASE \
         AND instr(sql, ?2) = 0",
        [name, &names.trigger_mark()],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_error)
}

/// The `CREATE` statement of a base table, or `None` if there is no such table.
fn table_sql(conn: &Connection, table: &str) -> Result<Option<String>> {
    conn.query_row(
        "SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [table],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_error)
}

fn schema_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0)).map_err(db_error)
}

fn log_exists(conn: &Connection, names: &Names) -> Result<bool> {
    Ok(table_sql(conn, &names.log())?.is_some())
}

/// The `CREATE` statement of `table` when this job first captured it: recorded in
/// `pontoon_schema_<job>` at the first `start` and kept until `cleanup`, so that a
/// schema change is reported even when it happened while no capture was running
/// (between runs, or while the syncer rebuilt its capture after an error).
fn first_seen_sql(conn: &Connection, names: &Names, table: &str) -> Result<Option<String>> {
    let schema = quote(&names.schema());
    conn.execute(
        &format!("INSERT OR IGNORE INTO {schema} (tbl, sql) VALUES (?1, ?2)"),
        [Some(table.to_string()), table_sql(conn, table)?],
    )
    .map_err(db_error)?;
    conn.query_row(&format!("SELECT sql FROM {schema} WHERE tbl = ?1"), [table], |r| r.get(0)).map_err(db_error)
}

/// Drops the recorded statements of tables no longer captured.
fn forget_uncaptured(conn: &Connection, names: &Names, tables: &[CaptureTable]) -> Result<()> {
    let schema = quote(&names.schema());
    let recorded: Vec<String> = conn
        .prepare(&format!("SELECT tbl FROM {schema}"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    for tbl in recorded.iter().filter(|r| !tables.iter().any(|t| &t.table == *r)) {
        conn.execute(&format!("DELETE FROM {schema} WHERE tbl = ?1"), [tbl]).map_err(db_error)?;
    }
    Ok(())
}

/// The highest `seq` the log ever handed out (kept by AUTOINCREMENT after the rows
/// are deleted), 0 for none.
fn last_seq(conn: &Connection, names: &Names) -> Result<i64> {
    let seq: Option<i64> = conn
        .query_row("SELECT seq FROM main.sqlite_sequence WHERE name = ?1", [names.log()], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    Ok(seq.unwrap_or(0))
}

/// A set of sequence numbers as a JSON array, bound as one parameter and read with
/// `json_each`.
fn seq_list(seqs: impl Iterator<Item = i64>) -> String {
    let items: Vec<String> = seqs.map(|s| s.to_string()).collect();
    format!("[{}]", items.join(","))
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// The oldest `limit` log rows not in `exclude`, with their key cells.
fn log_rows(conn: &Connection, names: &Names, exclude: &str, limit: usize) -> Result<Vec<LogRow>> {
    let sql = format!(
        "SELECT l.seq, l.tbl, l.op, l.at, j.type, j.atom, \
         CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.hex') END, \
         CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.real') END \
         FROM (SELECT seq, tbl, key, op, at FROM {} WHERE seq NOT IN (SELECT value FROM json_each(?1)) \
               ORDER BY seq LIMIT ?2) AS l \
         LEFT JOIN json_each(l.key) AS j ORDER BY l.seq, j.key",
        quote(&names.log())
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let mut rows = stmt.query(rusqlite::params![exclude, limit.max(1) as i64]).map_err(db_error)?;
    let mut out: Vec<LogRow> = Vec::new();
    while let Some(r) = rows.next().map_err(db_error)? {
        let seq: i64 = r.get(0).map_err(db_error)?;
        if out.last().is_none_or(|l| l.seq != seq) {
            out.push(LogRow {
                seq,
                table: r.get(1).map_err(db_error)?,
                op: r.get(2).map_err(db_error)?,
                at: r.get(3).map_err(db_error)?,
                key: Vec::new(),
            });
        }
        let bad = |what: &str| Error::internal(format!("change log {} row {seq}: {what}", names.log()));
        let kind: Option<String> = r.get(4).map_err(db_error)?;
        let cell = match kind.as_deref() {
            None => return Err(bad("its key is empty")),
            Some("null") => Cell::Null,
            Some("integer") => Cell::Integer(r.get(5).map_err(db_error)?),
            Some("real") => Cell::Real(r.get(5).map_err(db_error)?),
            Some("text") => Cell::Text(r.get(5).map_err(db_error)?),
            Some("object") => {
                let hex: Option<String> = r.get(6).map_err(db_error)?;
                let real: Option<String> = r.get(7).map_err(db_error)?;
                match (hex, real) {
                    (Some(h), None) => Cell::Blob(from_hex(&h).ok_or_else(|| bad("a key blob that is not hex"))?),
                    (None, Some(f)) => {
                        Cell::Real(parse_real(&f).ok_or_else(|| bad("a key real that is not a number"))?)
                    }
                    _ => return Err(bad("a key cell of unknown form")),
                }
            }
            Some(other) => return Err(bad(&format!("a key cell of JSON type {other}"))),
        };
        if let Some(last) = out.last_mut() {
            last.key.push(cell);
        }
    }
    Ok(out)
}

/// A real as SQLite's `printf('%!.17g')` writes it (`Inf`, `-Inf` for infinities).
fn parse_real(s: &str) -> Option<f64> {
    match s {
        "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// One look at the log, in one read transaction so that the schema check and the
/// rows come from the same snapshot.
fn poll(
    conn: &mut Connection,
    names: &Names,
    tables: &[Captured],
    known_version: i64,
    exclude: &str,
    limit: usize,
) -> Result<Poll> {
    let tx = conn.transaction().map_err(db_error)?;
    let version = schema_version(&tx)?;
    if version != known_version {
        for t in tables {
            let now = table_sql(&tx, &t.table.table)?;
            if now != t.sql {
                let statement = now.unwrap_or_else(|| format!("DROP TABLE {}", quote(&t.table.table)));
                return Ok(Poll::Ddl { table: t.table.table.clone(), statement });
            }
        }
    }
    let rows = if log_exists(&tx, names)? { log_rows(&tx, names, exclude, limit)? } else { Vec::new() };
    tx.commit().map_err(db_error)?;
    Ok(Poll::Rows { rows, schema_version: version })
}

/// What preflight finds wrong with one table, one line each.
fn table_problems(conn: &Connection, names: &Names, t: &CaptureTable, out: &mut Vec<String>) -> Result<()> {
    if table_sql(conn, &t.table)?.is_none() {
        out.push(format!("table {}: does not exist in the SQLite database", t.table));
        return Ok(());
    }
    let mut stmt = conn.prepare("SELECT name, pk FROM pragma_table_info(?1, 'main')").map_err(db_error)?;
    let columns = stmt
        .query_map([&t.table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(db_error)?
        .collect::<rusqlite::Result<Vec<(String, i64)>>>()
        .map_err(db_error)?;
    if !columns.iter().any(|(_, pk)| *pk > 0) {
        out.push(format!(
            "table {}: has no primary key (a rowid table without a declared PRIMARY KEY); the change log names \
             rows by key: declare a PRIMARY KEY on it",
            t.table
        ));
    }
    if t.key.is_empty() {
        out.push(format!("table {}: no key columns to capture", t.table));
    }
    for k in &t.key {
        if !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)) {
            out.push(format!("table {}: key column {k} does not exist", t.table));
        }
    }
    for suffix in ["ins", "upd", "del"] {
        let name = names.trigger(&t.table, suffix);
        if let Some(on) = foreign_trigger(conn, names, &name)? {
            out.push(format!(
                "table {}: a trigger named {name} (on {on}) exists and is not this job's; drop it or give the job \
                 another [sync] name",
                t.table
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl Capture for TriggerCapture {
    /// Refuses: a database pontoon cannot write (triggers and a log table are
    /// installed), a missing table, a table without a primary key, a key column that
    /// does not exist, a trigger of another owner with one of this job's names. A
    /// journal mode other than WAL is allowed with a warning. The log table keeps
    /// every change until it is released, so `copy_seconds` needs no retention.
    async fn preflight(&mut self, tables: &[CaptureTable], _copy_seconds: u64) -> Result<()> {
        let path = self.path.clone();
        let conn = self.conn().await.map_err(|e| {
            if e.kind() == ErrorKind::Connect {
                Error::config(format!(
                    "database {}: pontoon cannot open it read-write ({e}); capture = \"triggers\" installs triggers \
                     and a log table: give pontoon write access to the file and its directory",
                    path.display()
                ))
            } else {
                e
            }
        })?;
        let names = self.names.clone();
        let tables = tables.to_vec();
        conn.run(move |c| {
            let mut problems = Vec::new();
            if c.is_readonly(rusqlite::MAIN_DB).map_err(db_error)? {
                problems.push(format!(
                    "database {}: pontoon cannot write it (read-only file or directory); capture = \"triggers\" \
                     installs triggers and a log table: give pontoon write access to the file and its directory",
                    path.display()
                ));
            }
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(db_error)?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(
                    path = %path.display(),
                    journal_mode = %mode,
                    "sqlite source is not in WAL mode: pontoon's reads of the change log briefly delay the \
                     application's commits; the application needs a busy timeout (or switch to journal_mode=WAL)"
                );
            }
            for t in &tables {
                table_problems(c, &names, t, &mut problems)?;
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(Error::config(format!("SQLite change capture cannot start:\n{}", problems.join("\n"))))
            }
        })
        .await
    }

    /// Creates the log table and (re)creates this job's triggers on `tables` in one
    /// transaction, dropping this job's triggers on tables no longer captured, and
    /// returns the highest `seq` handed out so far.
    async fn start(&mut self, tables: &[CaptureTable]) -> Result<Position> {
        if let Some(t) = tables.iter().find(|t| t.key.is_empty() || t.key.len() != t.key_types.len()) {
            return Err(Error::config(format!(
                "{} key columns and {} key types to capture",
                t.key.len(),
                t.key_types.len()
            ))
            .in_table(t.table.clone()));
        }
        let conn = self.conn().await?;
        let names = self.names.clone();
        let tables = tables.to_vec();
        let (captured, version, seq) = conn
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
                tx.execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, \
                     key TEXT NOT NULL, op TEXT NOT NULL, at INTEGER NOT NULL)",
                    quote(&names.log())
                ))
                .map_err(db_error)?;
                let wanted: Vec<String> = tables
                    .iter()
                    .flat_map(|t| ["ins", "upd", "del"].map(|s| names.trigger(&t.table, s).to_ascii_lowercase()))
                    .collect();
                for (name, table) in job_triggers(&tx, &names)? {
                    if !wanted.contains(&name.to_ascii_lowercase()) {
                        tx.execute_batch(&format!("DROP TRIGGER {}", quote(&name))).map_err(db_error)?;
                        tracing::info!(trigger = %name, table = %table, "dropped trigger of a table no longer captured");
                    }
                }
                tx.execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (tbl TEXT PRIMARY KEY, sql TEXT)",
                    quote(&names.schema())
                ))
                .map_err(db_error)?;
                forget_uncaptured(&tx, &names, &tables)?;
                let mut changed_meanwhile = false;
                let mut captured = Vec::with_capacity(tables.len());
                for t in tables {
                    for (name, create) in trigger_sql(&names, &t) {
                        if let Some(on) = foreign_trigger(&tx, &names, &name)? {
                            return Err(Error::config(format!(
                                "a trigger named {name} (on {on}) exists and is not this job's; drop it or give the \
                                 job another [sync] name"
                            ))
                            .in_table(t.table.clone()));
                        }
                        tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote(&name)))
                            .and_then(|()| tx.execute_batch(&create))
                            .map_err(|e| db_error(e).in_table(t.table.clone()))?;
                    }
                    let sql = first_seen_sql(&tx, &names, &t.table)?;
                    changed_meanwhile |= sql != table_sql(&tx, &t.table)?;
                    captured.push(Captured { table: t, sql });
                }
                // A table that changed since the first start is compared at the
                // first read, whatever the schema version.
                let version = if changed_meanwhile { i64::MIN } else { schema_version(&tx)? };
                let seq = last_seq(&tx, &names)?;
                tx.commit().map_err(db_error)?;
                Ok((captured, version, seq))
            })
            .await?;
        tracing::info!(job = %self.names.job, tables = captured.len(), seq, "sqlite trigger capture started");
        self.tables = captured.into_iter().map(|c| (c.table.table.clone(), c)).collect();
        self.schema_version = version;
        self.returned.clear();
        Ok(Position::TriggerSeq { seq })
    }

    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let Position::TriggerSeq { seq: from_seq } = *from else {
            return Err(Error::internal(format!("SQLite trigger capture cannot read from position {from}")));
        };
        if self.tables.is_empty() {
            return Err(Error::internal("SQLite trigger capture read before start"));
        }
        let conn = self.conn().await?;
        let names = self.names.clone();
        let deadline = Instant::now() + wait;
        loop {
            let tables: Vec<Captured> = self.tables.values().cloned().collect();
            let known = self.schema_version;
            let exclude = seq_list(self.returned.iter().copied());
            let names2 = names.clone();
            let found = conn.run(move |c| poll(c, &names2, &tables, known, &exclude, max_events)).await?;
            let rows = match found {
                Poll::Ddl { table, statement } => {
                    tracing::warn!(table = %table, "schema change on a captured table");
                    return Ok(CaptureBatch {
                        events: Vec::new(),
                        position: from.clone(),
                        ddl: Some(DdlEvent { table, statement, position: from.clone() }),
                        committed_at_micros: None,
                    });
                }
                Poll::Rows { rows, schema_version } => {
                    self.schema_version = schema_version;
                    rows
                }
            };
            if !rows.is_empty() {
                return self.batch(from_seq, rows);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(CaptureBatch {
                    events: Vec::new(),
                    position: from.clone(),
                    ddl: None,
                    committed_at_micros: None,
                });
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    /// Deletes the log rows `read` returned with `seq <= upto`, by `seq`: a row with a
    /// lower `seq` that was not read yet stays.
    async fn release(&mut self, upto: &Position) -> Result<()> {
        let Position::TriggerSeq { seq: upto } = *upto else {
            return Err(Error::internal(format!("SQLite trigger capture cannot release position {upto}")));
        };
        let done: Vec<i64> = self.returned.range(..=upto).copied().collect();
        if done.is_empty() {
            return Ok(());
        }
        let conn = self.conn().await?;
        let log = quote(&self.names.log());
        let list = seq_list(done.iter().copied());
        conn.run(move |c| {
            c.execute(&format!("DELETE FROM {log} WHERE seq IN (SELECT value FROM json_each(?1))"), [list])
                .map_err(db_error)
        })
        .await?;
        for s in done {
            self.returned.remove(&s);
        }
        Ok(())
    }

    /// Log rows not returned by `read` yet (whatever `from` says).
    async fn backlog(&mut self, _from: &Position) -> Result<Backlog> {
        let conn = self.conn().await?;
        let names = self.names.clone();
        let exclude = seq_list(self.returned.iter().copied());
        let events = conn
            .run(move |c| {
                if !log_exists(c, &names)? {
                    return Ok(0);
                }
                let sql = format!(
                    "SELECT count(*) FROM {} WHERE seq NOT IN (SELECT value FROM json_each(?1))",
                    quote(&names.log())
                );
                c.query_row(&sql, [exclude], |r| r.get::<_, i64>(0)).map_err(db_error)
            })
            .await?;
        Ok(Backlog { events: Some(events.max(0) as u64), bytes: None })
    }

    /// Drops this job's triggers (found by name and by the log table their body
    /// writes to), its log table and its table of recorded statements, in one
    /// transaction.
    async fn cleanup(&mut self) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        let names = self.names.clone();
        let dropped = conn
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
                let mut dropped = Vec::new();
                for (name, table) in job_triggers(&tx, &names)? {
                    tx.execute_batch(&format!("DROP TRIGGER {}", quote(&name))).map_err(db_error)?;
                    dropped.push(format!("trigger {name} on {table}"));
                }
                for table in [names.log(), names.schema()] {
                    if table_sql(&tx, &table)?.is_some() {
                        tx.execute_batch(&format!("DROP TABLE {}", quote(&table))).map_err(db_error)?;
                        dropped.push(format!("table {table}"));
                    }
                }
                tx.commit().map_err(db_error)?;
                Ok(dropped)
            })
            .await?;
        for item in &dropped {
            tracing::info!(job = %self.names.job, dropped = %item, "sqlite capture cleanup");
        }
        self.tables.clear();
        self.returned.clear();
        Ok(dropped)
    }
}

impl TriggerCapture {
    /// Turns log rows into a batch and remembers them as returned.
    fn batch(&mut self, from_seq: i64, rows: Vec<LogRow>) -> Result<CaptureBatch> {
        let mut events = Vec::with_capacity(rows.len());
        let mut newest = from_seq;
        let mut committed_at = None;
        for row in &rows {
            newest = newest.max(row.seq);
            // Rows of a table no longer captured (from an earlier start) are
            // consumed without an event.
            let Some(captured) = self.tables.get(&row.table) else {
                continue;
            };
            let t = &captured.table;
            if row.key.len() != t.key_types.len() {
                return Err(Error::new(
                    ErrorKind::Schema,
                    format!(
                        "change log row {} has {} key values for {} key columns",
                        row.seq,
                        row.key.len(),
                        t.key.len()
                    ),
                )
                .in_table(t.table.clone()));
            }
            let key = row
                .key
                .iter()
                .zip(&t.key_types)
                .zip(&t.key)
                .map(|((cell, ty), name)| {
                    decode(cell.as_ref(), ty).map_err(|e| e.in_column(name.clone()).in_table(t.table.clone()))
                })
                .collect::<Result<Vec<Value>>>()?;
            let op = match row.op.as_str() {
                "I" => ChangeOp::Insert,
                "U" => ChangeOp::Update,
                "D" => ChangeOp::Delete,
                other => {
                    return Err(
                        Error::internal(format!("change log row {} has op {other}", row.seq)).in_table(t.table.clone())
                    );
                }
            };
            committed_at = committed_at.max(Some(row.at));
            events.push(ChangeEvent { table: t.table.clone(), key, op });
        }
        self.returned.extend(rows.iter().map(|r| r.seq));
        Ok(CaptureBatch {
            events,
            position: Position::TriggerSeq { seq: newest },
            ddl: None,
            committed_at_micros: committed_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UPDATE trigger compares the keys' JSON text bytewise, so a key change
    /// that the column's collation calls equal (`NOCASE`) still logs both keys.
    #[test]
    fn a_case_only_key_change_logs_both_keys() {
        let c = Connection::open_in_memory().unwrap();
        let names = Names { job: "j".into() };
        c.execute_batch(&format!(
            "CREATE TABLE {} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT, key TEXT, op TEXT, at INTEGER); \
             CREATE TABLE t (k TEXT COLLATE NOCASE PRIMARY KEY, v INT);",
            quote(&names.log())
        ))
        .unwrap();
        let t = CaptureTable { table: "t".into(), key: vec!["k".into()], key_types: vec![] };
        for (_, sql) in trigger_sql(&names, &t) {
            c.execute_batch(&sql).unwrap();
        }
        c.execute_batch("INSERT INTO t VALUES ('a', 1); UPDATE t SET v = 2; UPDATE t SET k = 'A'; DELETE FROM t;")
            .unwrap();
        let logged: Vec<(String, String)> = c
            .prepare("SELECT op, key FROM pontoon_log_j ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let pair = |op: &str, key: &str| (op.to_string(), key.to_string());
        assert_eq!(
            logged,
            [
                pair("I", r#"["a"]"#),
                pair("U", r#"["a"]"#),
                pair("D", r#"["a"]"#),
                pair("U", r#"["A"]"#),
                pair("D", r#"["A"]"#)
            ]
        );
    }

    #[test]
    fn hex_and_reals() {
        assert_eq!(from_hex("00FFa0").unwrap(), [0, 255, 160]);
        assert_eq!(from_hex("").unwrap(), Vec::<u8>::new());
        assert!(from_hex("0").is_none() && from_hex("zz").is_none());
        assert_eq!(parse_real("-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_real("0.10000000000000001"), Some(0.1));
    }

    /// Every storage class of a key cell survives the trigger's JSON and the reader's
    /// rebuilding of it, bit for bit.
    #[test]
    fn key_cells_round_trip_through_the_log_json() {
        let c = Connection::open_in_memory().unwrap();
        let names = Names { job: "j".into() };
        c.execute_batch(&format!(
            "CREATE TABLE {} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT, key TEXT, op TEXT, at INTEGER); \
             CREATE TABLE t (a, b, PRIMARY KEY (a, b)) WITHOUT ROWID;",
            quote(&names.log())
        ))
        .unwrap();
        let t = CaptureTable { table: "t".into(), key: vec!["a".into(), "b".into()], key_types: vec![] };
        for (_, sql) in trigger_sql(&names, &t) {
            c.execute_batch(&sql).unwrap();
        }
        let cells: Vec<rusqlite::types::Value> = vec![
            rusqlite::types::Value::Integer(i64::MIN),
            rusqlite::types::Value::Text("a\0\"\\\n\u{1}é😀".into()),
            rusqlite::types::Value::Blob(vec![0, 1, 255]),
            rusqlite::types::Value::Blob(vec![]),
            rusqlite::types::Value::Real(0.1),
            rusqlite::types::Value::Real(-1.7976931348623157e308),
            rusqlite::types::Value::Real(f64::INFINITY),
            rusqlite::types::Value::Real(5e-324),
            rusqlite::types::Value::Text(String::new()),
        ];
        for (i, cell) in cells.iter().enumerate() {
            c.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![cell, i as i64]).unwrap();
        }
        let rows = log_rows(&c, &names, "[]", 100).unwrap();
        assert_eq!(rows.len(), cells.len());
        for (row, cell) in rows.iter().zip(&cells) {
            let got = match &row.key[0] {
                Cell::Null => rusqlite::types::Value::Null,
                Cell::Integer(i) => rusqlite::types::Value::Integer(*i),
                Cell::Real(f) => rusqlite::types::Value::Real(*f),
                Cell::Text(s) => rusqlite::types::Value::Text(s.clone()),
                Cell::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
            };
            match (&got, cell) {
                (rusqlite::types::Value::Real(a), rusqlite::types::Value::Real(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits())
                }
                _ => assert_eq!(&got, cell),
            }
            assert_eq!(row.op, "I");
        }
    }
}
