//! Trigger-based change capture (`[sync] capture = "triggers"`): PostgreSQL triggers
//! record every change of a captured table in a change-log table, and the syncer reads
//! that log as a queue.
//!
//! # What `start` installs (in `current_schema()`, all named after the job)
//!
//! - `pontoon_log_<job>`: the change log. `seq` (identity), `tbl` (the captured
//!   table's name), `key` (for I/U/D: a JSON array of the key's values in key order;
//!   for X: the DDL statement), `op` (`I`, `U`, `D`, `T` for TRUNCATE, `X` for DDL),
//!   `xid` (the writing transaction, so that a read returns whole transactions) and
//!   `at` (`clock_timestamp()`). Released rows are deleted.
//! - `pontoon_tables_<job>`: the captured tables with their oid, key columns and key
//!   types (to decode logged keys) and a fingerprint of their columns.
//! - Per table a trigger function `pontoon_<job>_<table>` and the triggers
//!   `pontoon_<job>_<table>_{ins,upd,del}` (AFTER ... FOR EACH ROW) and `_trunc`
//!   (AFTER TRUNCATE FOR EACH STATEMENT). An UPDATE logs the new key, and the old key
//!   (as a delete) when the key changed. Names longer than PostgreSQL's 63 bytes keep
//!   a prefix of the table name and a hash of it.
//! - With a superuser role: the event triggers `pontoon_<job>_ddl` (ddl_command_end)
//!   and `pontoon_<job>_drop` (sql_drop) calling `pontoon_<job>`, which log an `X`
//!   row with `current_query()` for ALTER TABLE or DROP TABLE of a captured table.
//!   Without superuser (event triggers need it) a read compares the fingerprint of the
//!   captured tables' columns instead and reports a change without its statement.
//!
//! Functions are `SECURITY DEFINER` with `search_path = pg_catalog, pg_temp`, so the
//! application's roles need no privilege on the log. Every object carries the comment
//! `pontoon trigger capture of job <job>`; `cleanup` drops exactly the objects of this
//! job found by name and comment, in a fresh process too.
//!
//! # Keys
//!
//! A key is logged in a form that decodes back to exactly the `Value` the reader's
//! scan produces: text types as JSON strings (padding of `char(n)` kept), `json` and
//! `jsonb` as their text, every other type as the hex of its binary send function
//! (`int8send`, `numeric_send`, ...), decoded by the very decoder of scans
//! ([`crate::decode::decode`]). None of these depends on the writing session's
//! settings (time zone, DateStyle, extra_float_digits, client encoding).
//!
//! # Queue semantics (DESIGN.md, commit order)
//!
//! A sequence value is taken at insert, not at commit: a long transaction can commit
//! seq 5 after seq 6 was read. So `read` does not read "after a position": it returns
//! the oldest committed log rows (ORDER BY seq) that it has not returned yet, with all
//! rows of their transactions, and remembers what it returned; `release(upto)` deletes
//! exactly the rows it returned with `seq <= upto`. A late committer below `upto`
//! stays in the log until a read returns it. After a restart the memory is empty and
//! everything still in the log is delivered again (applying is idempotent). The
//! batch position is `max(from, newest seq returned)`, so it never moves backward.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pontoon_core::capture::{Backlog, Capture, CaptureBatch, CaptureTable, ChangeEvent, ChangeOp, DdlEvent};
use pontoon_core::{Error, ErrorKind, Position, Result, Value};
use tokio_postgres::types::{Oid, Type};
use tokio_postgres::{Client, Transaction};

use crate::PgConnector;
use crate::catalog::column_type;
use crate::errors::pg_error;
use crate::session::Session;
use crate::sql::{quote_ident, quote_string};

/// PostgreSQL's longest identifier, in bytes.
const NAME_BYTES: usize = 63;
/// How often an idle `read` looks at the log again.
const POLL: Duration = Duration::from_millis(50);
/// How long `start` and `cleanup` wait for a table lock (creating a trigger waits for
/// the table's writers, and the writers behind it wait too) before giving up with a
/// transient error.
const LOCK_TIMEOUT: &str = "10s";
/// Log rows counted exactly by `backlog`; above, the seq span estimates.
const BACKLOG_COUNT_CAP: i64 = 100_000;

/// The comment that marks every object of a job.
fn marker(job: &str) -> String {
    format!("pontoon trigger capture of job {job}")
}

/// A job id as `CaptureSpec` promises it: `[a-z0-9_]{1,40}`.
pub(crate) fn check_job(job: &str) -> Result<()> {
    if job.is_empty()
        || job.len() > 40
        || !job.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::config(format!(
            "the sync job name `{job}` must be 1 to 40 characters of a-z, 0-9 and _ (it names the capture's objects)"
        )));
    }
    Ok(())
}

/// FNV-1a, 32 bits: a stable hash for shortened names.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// `pontoon_<job>_<table><suffix>`, within 63 bytes: when too long, the table part is
/// a prefix of the name and a hash of the whole name.
pub fn object_name(job: &str, table: &str, suffix: &str) -> String {
    let full = format!("pontoon_{job}_{table}{suffix}");
    if full.len() <= NAME_BYTES {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(table.as_bytes()));
    let fixed = "pontoon_".len() + job.len() + 1 + hash.len() + suffix.len();
    let mut room = NAME_BYTES.saturating_sub(fixed + 1);
    while !table.is_char_boundary(room.min(table.len())) {
        room -= 1;
    }
    let prefix = &table[..room.min(table.len())];
    if prefix.is_empty() {
        format!("pontoon_{job}_{hash}{suffix}")
    } else {
        format!("pontoon_{job}_{prefix}_{hash}{suffix}")
    }
}

/// The names of a job's objects (not per table).
#[derive(Debug, Clone)]
struct Names {
    /// `current_schema()`, quoted.
    schema: String,
    /// The schema's name as it is.
    schema_name: String,
    log: String,
    registry: String,
    event_function: String,
    ddl_trigger: String,
    drop_trigger: String,
}

impl Names {
    fn new(job: &str, schema: &str) -> Names {
        Names {
            schema: quote_ident(schema),
            schema_name: schema.to_string(),
            log: format!("pontoon_log_{job}"),
            registry: format!("pontoon_tables_{job}"),
            event_function: format!("pontoon_{job}"),
            ddl_trigger: format!("pontoon_{job}_ddl"),
            drop_trigger: format!("pontoon_{job}_drop"),
        }
    }

    /// `"schema"."name"`.
    fn qualified(&self, name: &str) -> String {
        format!("{}.{}", self.schema, quote_ident(name))
    }
}

/// How a key column is written into the log and read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyForm {
    /// The text itself, as a JSON string (text, varchar, char(n) with its padding, name).
    Text,
    /// The document's text (json, jsonb).
    Json,
    /// The hex of the type's binary send function, decoded as scans decode.
    Binary,
}

fn key_form(ty: &Type) -> KeyForm {
    match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => KeyForm::Text,
        Type::JSON | Type::JSONB => KeyForm::Json,
        _ => KeyForm::Binary,
    }
}

/// Decodes one logged key value of wire type `ty`.
fn decode_key_value(ty: &Type, logged: &str) -> std::result::Result<Value, String> {
    match key_form(ty) {
        KeyForm::Text => Ok(Value::Text(logged.to_string())),
        KeyForm::Json => Ok(Value::Json(logged.to_string())),
        KeyForm::Binary => {
            if !logged.len().is_multiple_of(2) {
                return Err("the logged value is not hex".into());
            }
            let bytes = (0..logged.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(logged.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .map_err(|_| "the logged value is not hex".to_string())?;
            crate::decode::decode(ty, &bytes)
        }
    }
}

/// A key column of a captured table, as the catalog describes it.
#[derive(Debug, Clone)]
struct KeyColumn {
    name: String,
    ty: Oid,
    /// `"schema"."send function"` of the type.
    send: String,
}

impl KeyColumn {
    /// The SQL that logs this column of `NEW` or `OLD`.
    fn logged(&self, record: &str) -> Result<String> {
        let column = format!("{record}.{}", quote_ident(&self.name));
        let ty = Type::from_oid(self.ty).filter(|t| column_type(t, -1).is_some()).ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, "the key column's type cannot be captured").in_column(self.name.clone())
        })?;
        Ok(match key_form(&ty) {
            KeyForm::Text => column,
            KeyForm::Json => format!("{column}::pg_catalog.text"),
            KeyForm::Binary => format!("pg_catalog.encode({}({column}), 'hex')", self.send),
        })
    }
}

/// A captured table as the catalog describes it now.
#[derive(Debug, Clone)]
struct TableInfo {
    oid: Oid,
    keys: Vec<KeyColumn>,
}

/// The SQL fingerprint of a table's name and columns, for `relid` (a column or
/// parameter reference). NULL when the table is gone.
fn fingerprint_sql(relid: &str) -> String {
    format!(
        "(SELECT pg_catalog.md5(c.relname::text || ':' || pg_catalog.string_agg(a.attname::text || ' ' || \
         a.atttypid::text || ' ' || a.atttypmod::text || ' ' || a.attnotnull::text, ',' ORDER BY a.attnum)) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
         AND a.attnum > 0 AND NOT a.attisdropped WHERE c.oid = {relid} GROUP BY c.relname)"
    )
}

/// A `$tag$` that does not occur in `body`.
fn dollar_quote(body: &str) -> String {
    let mut n = 0;
    loop {
        let tag = if n == 0 { "$pontoon$".to_string() } else { format!("$pontoon{n}$") };
        if !body.contains(&tag) {
            return format!("{tag}{body}{tag}");
        }
        n += 1;
    }
}

/// Trigger capture of one job on one PostgreSQL database (see the module doc).
///
/// Creating it does no I/O; it connects on first use and reconnects after a lost
/// connection. It remembers the log rows `read` returned until they are released.
pub struct TriggerCapture {
    connector: PgConnector,
    job: String,
    session: Option<Session>,
    names: Option<Names>,
    /// Seqs returned by `read` and not yet released.
    returned: BTreeSet<i64>,
    /// The seq of a TRUNCATE or DDL row reported by `read` and not yet released.
    reported_ddl: Option<i64>,
    /// Key wire types per captured table, from `pontoon_tables_<job>`.
    key_types: HashMap<String, Vec<Type>>,
    /// Whether DDL is logged by event triggers (else read compares fingerprints);
    /// `None` until looked up.
    event_triggers: Option<bool>,
}

impl std::fmt::Debug for TriggerCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerCapture")
            .field("job", &self.job)
            .field("url", &self.connector.redacted_url())
            .field("returned", &self.returned.len())
            .finish()
    }
}

fn seq_of(position: &Position) -> Result<i64> {
    match position {
        Position::TriggerSeq { seq } => Ok(*seq),
        other => Err(Error::internal(format!("trigger capture was given the position {other} of another kind"))),
    }
}

impl TriggerCapture {
    /// Creating it does no I/O.
    pub fn new(connector: PgConnector, job: String) -> TriggerCapture {
        TriggerCapture {
            connector,
            job,
            session: None,
            names: None,
            returned: BTreeSet::new(),
            reported_ddl: None,
            key_types: HashMap::new(),
            event_triggers: None,
        }
    }

    /// The connection, opened on first use, and the job's object names.
    async fn connect(&mut self) -> Result<(&mut Client, Names)> {
        check_job(&self.job)?;
        if self.session.as_ref().is_none_or(|s| s.client.is_closed()) {
            self.session = None;
            let session = Session::connect(&self.connector.config, self.connector.redacted_url()).await?;
            // the log queries are small and frequent: compiling them costs more than it saves
            session.client.batch_execute("SET jit = off").await.map_err(|e| pg_error(e, "setting up the session"))?;
            self.session = Some(session);
        }
        let session = self.session.as_mut().expect("connected above");
        let names = match &self.names {
            Some(n) => n.clone(),
            None => {
                let row = session
                    .client
                    .query_one("SELECT current_schema()::text", &[])
                    .await
                    .map_err(|e| pg_error(e, "finding the current schema"))?;
                let schema: Option<String> = row.get(0);
                let schema = schema.ok_or_else(|| {
                    Error::config("the connection has no current schema (search_path names no existing schema)")
                })?;
                let names = Names::new(&self.job, &schema);
                self.names = Some(names.clone());
                names
            }
        };
        Ok((&mut session.client, names))
    }

    /// Forgets the connection after a transient error (the next call reconnects).
    fn after<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && e.is_transient()
        {
            self.session = None;
        }
        result
    }

    async fn read_inner(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let from_seq = seq_of(from)?;
        let deadline = Instant::now() + wait;
        if self.key_types.is_empty() {
            self.load_key_types().await?;
        }
        if self.event_triggers.is_none() {
            let (client, names) = self.connect().await?;
            let found = has_event_triggers(client, &names).await?;
            self.event_triggers = Some(found);
        }
        loop {
            if self.event_triggers == Some(false)
                && let Some(ddl) = self.changed_table(from).await?
            {
                return Ok(CaptureBatch {
                    events: Vec::new(),
                    position: from.clone(),
                    ddl: Some(ddl),
                    committed_at_micros: None,
                });
            }
            let rows = self.head(max_events).await?;
            if !rows.is_empty() {
                return self.batch(from_seq, rows).await;
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

    /// The oldest log rows not returned yet, with every row of their transactions.
    async fn head(&mut self, max_events: usize) -> Result<Vec<LogRow>> {
        let returned: Vec<i64> = self.returned.iter().copied().collect();
        let limit = max_events.max(1) as i64;
        let (client, names) = self.connect().await?;
        let log = names.qualified(&names.log);
        let sql = format!(
            // the transactions of the oldest rows first (an InitPlan), then their rows
            // by the (xid, seq) index: a semi-join here can degrade to a nested loop
            // over the whole log when one transaction dominates it
            "SELECT l.seq, l.tbl, l.op::text, \
                    CASE WHEN l.op IN ('I', 'U', 'D') \
                         THEN ARRAY(SELECT pg_catalog.json_array_elements_text(l.key::json)) END, \
                    l.key, (extract(epoch FROM l.at) * 1000000)::int8 \
             FROM {log} l \
             WHERE l.xid = ANY(ARRAY(SELECT DISTINCT h.xid FROM \
                       (SELECT xid FROM {log} WHERE seq <> ALL($1::int8[]) ORDER BY seq LIMIT $2) h)) \
               AND l.seq <> ALL($1::int8[]) \
             ORDER BY l.seq"
        );
        let rows = client.query(&sql, &[&returned, &limit]).await.map_err(|e| pg_error(e, "reading the change log"))?;
        Ok(rows
            .into_iter()
            .map(|r| LogRow {
                seq: r.get(0),
                table: r.get(1),
                op: r.get(2),
                key: r.get(3),
                text: r.get(4),
                at_micros: r.get(5),
            })
            .collect())
    }

    /// Turns log rows (in seq order) into a batch, stopping at a TRUNCATE or DDL.
    async fn batch(&mut self, from_seq: i64, rows: Vec<LogRow>) -> Result<CaptureBatch> {
        if rows.iter().any(|r| r.key.is_some() && !self.key_types.contains_key(&r.table)) {
            self.load_key_types().await?;
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut newest_at = None;
        let mut ddl = None;
        for row in rows {
            let op = match row.op.as_str() {
                "I" => ChangeOp::Insert,
                "U" => ChangeOp::Update,
                "D" => ChangeOp::Delete,
                "T" | "X" => {
                    let statement = if row.op == "T" {
                        format!("TRUNCATE {}", row.table)
                    } else {
                        row.text.unwrap_or_else(|| format!("ALTER TABLE {}", row.table))
                    };
                    ddl =
                        Some(DdlEvent { table: row.table, statement, position: Position::TriggerSeq { seq: row.seq } });
                    self.reported_ddl = Some(row.seq);
                    break;
                }
                other => {
                    return Err(Error::internal(format!("change log row {} has the unknown op `{other}`", row.seq))
                        .in_table(row.table));
                }
            };
            let types = self.key_types.get(&row.table).ok_or_else(|| {
                Error::internal(format!("change log row {} is about a table this job does not capture", row.seq))
                    .in_table(row.table.clone())
            })?;
            let logged = row.key.unwrap_or_default();
            if logged.len() != types.len() {
                return Err(Error::internal(format!(
                    "change log row {} holds {} key values for a key of {} columns",
                    row.seq,
                    logged.len(),
                    types.len()
                ))
                .in_table(row.table));
            }
            let key = logged
                .iter()
                .zip(types)
                .map(|(text, ty)| decode_key_value(ty, text))
                .collect::<std::result::Result<Vec<Value>, String>>()
                .map_err(|why| {
                    Error::new(ErrorKind::Unsupported, format!("change log row {}: {why}", row.seq))
                        .in_table(row.table.clone())
                })?;
            events.push(ChangeEvent { table: row.table, key, op });
            seqs.push(row.seq);
            newest_at = newest_at.max(row.at_micros);
        }
        let newest = seqs.iter().copied().max().unwrap_or(from_seq);
        self.returned.extend(seqs);
        Ok(CaptureBatch {
            events,
            position: Position::TriggerSeq { seq: from_seq.max(newest) },
            ddl,
            committed_at_micros: newest_at,
        })
    }

    /// Loads the key types of the captured tables from `pontoon_tables_<job>`.
    async fn load_key_types(&mut self) -> Result<()> {
        let job = self.job.clone();
        let (client, names) = self.connect().await?;
        let sql = format!("SELECT tbl, key_types FROM {}", names.qualified(&names.registry));
        let rows = client.query(&sql, &[]).await.map_err(|e| {
            let e = pg_error(e, "reading the captured tables");
            if e.kind() == ErrorKind::Schema {
                Error::new(
                    ErrorKind::State,
                    format!("{}: the capture of job {job} is not installed (run start first)", e.message()),
                )
            } else {
                e
            }
        })?;
        let mut map = HashMap::new();
        for row in rows {
            let table: String = row.get(0);
            let oids: Vec<Oid> = row.get(1);
            let types = oids
                .iter()
                .map(|&oid| {
                    Type::from_oid(oid).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Unsupported,
                            format!("a key column has the type oid {oid}, which cannot be captured"),
                        )
                        .in_table(table.clone())
                    })
                })
                .collect::<Result<Vec<Type>>>()?;
            map.insert(table, types);
        }
        self.key_types = map;
        Ok(())
    }

    /// Without event triggers: the first captured table whose columns changed (or that
    /// is gone), as a DDL event at `from`.
    async fn changed_table(&mut self, from: &Position) -> Result<Option<DdlEvent>> {
        let (client, names) = self.connect().await?;
        let sql = format!(
            "SELECT r.tbl, {fp} IS NULL FROM {} r WHERE r.columns_fp IS DISTINCT FROM {fp} ORDER BY r.tbl LIMIT 1",
            names.qualified(&names.registry),
            fp = fingerprint_sql("r.relid"),
        );
        let row =
            client.query_opt(&sql, &[]).await.map_err(|e| pg_error(e, "comparing the captured tables' columns"))?;
        Ok(row.map(|r| {
            let table: String = r.get(0);
            let gone: bool = r.get(1);
            let statement = if gone {
                format!("DROP TABLE {table} (table gone or renamed; statement not visible without superuser)")
            } else {
                format!("ALTER TABLE {table} (columns changed; statement not visible without superuser)")
            };
            DdlEvent { table, statement, position: from.clone() }
        }))
    }

    async fn start_inner(&mut self, tables: &[CaptureTable]) -> Result<Position> {
        let job = self.job.clone();
        let (client, names) = self.connect().await?;
        let superuser = is_superuser(client).await?;
        let tx = client.transaction().await.map_err(|e| pg_error(e, "starting the capture"))?;
        execute(&tx, &format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"), "setting a lock timeout").await?;
        install_tables(&tx, &names, &job).await?;
        for t in tables {
            let info = table_info(&tx, t).await?;
            install_table(&tx, &names, &job, t, &info).await?;
        }
        if superuser {
            install_event_triggers(&tx, &names, &job).await?;
        } else {
            tracing::info!(
                job = %job,
                "the role is not a superuser: schema changes of captured tables are found by comparing their columns on each read, without the statement"
            );
        }
        let row = tx
            .query_one(&format!("SELECT coalesce(max(seq), 0) FROM {}", names.qualified(&names.log)), &[])
            .await
            .map_err(|e| pg_error(e, "reading the change log's position"))?;
        let seq: i64 = row.get(0);
        tx.commit().await.map_err(|e| pg_error(e, "installing the capture"))?;
        self.event_triggers = Some(superuser);
        self.key_types.clear();
        Ok(Position::TriggerSeq { seq })
    }

    async fn release_inner(&mut self, upto: &Position) -> Result<()> {
        let upto = seq_of(upto)?;
        let mut seqs: Vec<i64> = self.returned.range(..=upto).copied().collect();
        let ddl = self.reported_ddl.filter(|&d| d <= upto);
        seqs.extend(ddl);
        if seqs.is_empty() {
            return Ok(());
        }
        let (client, names) = self.connect().await?;
        let sql = format!("DELETE FROM {} WHERE seq = ANY($1::int8[])", names.qualified(&names.log));
        client.execute(&sql, &[&seqs]).await.map_err(|e| pg_error(e, "releasing change log rows"))?;
        for s in &seqs {
            self.returned.remove(s);
        }
        if ddl.is_some() {
            self.reported_ddl = None;
        }
        Ok(())
    }

    async fn backlog_inner(&mut self) -> Result<Backlog> {
        let returned = self.returned.len() as i64;
        let (client, names) = self.connect().await?;
        let log = names.qualified(&names.log);
        let sql = format!(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM {log} LIMIT {BACKLOG_COUNT_CAP}) s), \
                    (SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM {log})"
        );
        let row = client.query_one(&sql, &[]).await.map_err(|e| pg_error(e, "measuring the change log"))?;
        let (count, span): (i64, i64) = (row.get(0), row.get(1));
        let rows = if count < BACKLOG_COUNT_CAP { count } else { span.max(count) };
        Ok(Backlog { events: Some((rows - returned).max(0) as u64), bytes: None })
    }

    async fn preflight_inner(&mut self, tables: &[CaptureTable]) -> Result<()> {
        let (client, names) = self.connect().await?;
        let mut problems = Vec::new();
        let row = client
            .query_one("SELECT current_user::text, pg_catalog.has_schema_privilege(current_schema(), 'CREATE')", &[])
            .await
            .map_err(|e| pg_error(e, "checking privileges"))?;
        let (role, create): (String, bool) = (row.get(0), row.get(1));
        let schema = &names.schema_name;
        if !create {
            problems.push(format!(
                "schema {schema}: role {role} lacks the CREATE privilege (needed for the change log and the trigger \
                 functions): GRANT CREATE ON SCHEMA {} TO {}",
                names.schema,
                quote_ident(&role)
            ));
        }
        for t in tables {
            problems.extend(table_problems(client, &names, &role, t).await?);
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(format!("trigger capture cannot start:\n- {}", problems.join("\n- "))))
    }

    async fn cleanup_inner(&mut self) -> Result<Vec<String>> {
        let job = self.job.clone();
        let (client, names) = self.connect().await?;
        let marker = marker(&job);
        let tx = client.transaction().await.map_err(|e| pg_error(e, "starting the cleanup"))?;
        execute(&tx, &format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"), "setting a lock timeout").await?;
        let mut removed = Vec::new();
        let rows = tx
            .query(
                "SELECT evtname::text FROM pg_catalog.pg_event_trigger WHERE evtname IN ($1, $2) \
                 AND pg_catalog.obj_description(oid, 'pg_event_trigger') = $3 ORDER BY 1",
                &[&names.ddl_trigger, &names.drop_trigger, &marker],
            )
            .await
            .map_err(|e| pg_error(e, "finding the capture's event triggers"))?;
        for row in rows {
            let name: String = row.get(0);
            execute(&tx, &format!("DROP EVENT TRIGGER {}", quote_ident(&name)), "dropping an event trigger").await?;
            removed.push(format!("event trigger {name}"));
        }
        let functions = tx
            .query(
                "SELECT p.oid, p.proname::text FROM pg_catalog.pg_proc p \
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 AND p.proname LIKE 'pontoon\\_%' AND p.pronargs = 0 \
                 AND pg_catalog.obj_description(p.oid, 'pg_proc') = $2 ORDER BY 2",
                &[&names.schema_name, &marker],
            )
            .await
            .map_err(|e| pg_error(e, "finding the capture's functions"))?;
        let oids: Vec<Oid> = functions.iter().map(|r| r.get(0)).collect();
        let triggers = tx
            .query(
                "SELECT t.tgname::text, c.relname::text FROM pg_catalog.pg_trigger t \
                 JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
                 WHERE t.tgfoid = ANY($1) AND NOT t.tgisinternal ORDER BY 2, 1",
                &[&oids],
            )
            .await
            .map_err(|e| pg_error(e, "finding the capture's triggers"))?;
        // DROP TRIGGER needs the table's ownership, CREATE TRIGGER only the TRIGGER
        // privilege: the triggers go with their function (CASCADE), which needs
        // only the function's ownership. Nothing else depends on these functions.
        for row in triggers {
            let (name, table): (String, String) = (row.get(0), row.get(1));
            removed.push(format!("trigger {name} on {table}"));
        }
        for row in functions {
            let name: String = row.get(1);
            execute(&tx, &format!("DROP FUNCTION {}() CASCADE", names.qualified(&name)), "dropping a function").await?;
            removed.push(format!("function {name}"));
        }
        for table in [&names.log, &names.registry] {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r' \
                     AND pg_catalog.obj_description(c.oid, 'pg_class') = $3",
                    &[&names.schema_name, table, &marker],
                )
                .await
                .map_err(|e| pg_error(e, "finding the capture's tables"))?;
            if exists.is_some() {
                execute(&tx, &format!("DROP TABLE {}", names.qualified(table)), "dropping a table").await?;
                removed.push(format!("table {table}"));
            }
        }
        tx.commit().await.map_err(|e| pg_error(e, "cleaning up the capture"))?;
        self.returned.clear();
        self.reported_ddl = None;
        self.key_types.clear();
        self.event_triggers = None;
        Ok(removed)
    }
}

/// One row of the change log.
struct LogRow {
    seq: i64,
    table: String,
    op: String,
    /// The logged key values (I, U, D).
    key: Option<Vec<String>>,
    /// The `key` column as it is: the statement of an X row.
    text: Option<String>,
    at_micros: Option<i64>,
}

async fn execute(tx: &Transaction<'_>, sql: &str, what: &str) -> Result<()> {
    tx.batch_execute(sql).await.map_err(|e| pg_error(e, what))
}

async fn is_superuser(client: &Client) -> Result<bool> {
    let row = client
        .query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(|e| pg_error(e, "looking up the role"))?;
    Ok(row.get(0))
}

async fn has_event_triggers(client: &Client, names: &Names) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = $1 AND evtenabled <> 'D'",
            &[&names.ddl_trigger],
        )
        .await
        .map_err(|e| pg_error(e, "looking up the capture's event trigger"))?;
    Ok(row.is_some())
}

/// Refuses an existing object of a pontoon name that is not this job's (another
/// job's function can have the same name: `pontoon_a_b_c` is job `a`'s function for
/// table `b_c` and job `a_b`'s for table `c`).
fn not_ours(what: &str, name: &str, job: &str) -> Error {
    Error::config(format!(
        "{what} {name} exists and is not part of the trigger capture of job {job}: drop it, or give the sync job \
         another name"
    ))
}

/// Creates (or reuses) the log and the registry of captured tables.
async fn install_tables(tx: &Transaction<'_>, names: &Names, job: &str) -> Result<()> {
    let marker = marker(job);
    for (table, definition) in [
        (
            &names.log,
            "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tbl text NOT NULL, key text, op char(1) NOT NULL, \
             xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(), \
             at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(), UNIQUE (xid, seq)",
        ),
        (
            &names.registry,
            "tbl text PRIMARY KEY, relid oid NOT NULL, key_columns text[] NOT NULL, key_types oid[] NOT NULL, \
             columns_fp text",
        ),
    ] {
        let found = tx
            .query_opt(
                "SELECT c.relkind::text, pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&names.schema_name, table],
            )
            .await
            .map_err(|e| pg_error(e, "looking up the change log"))?;
        match found {
            None => {
                let q = names.qualified(table);
                execute(tx, &format!("CREATE TABLE {q} ({definition})"), "creating the change log").await?;
                execute(tx, &format!("COMMENT ON TABLE {q} IS {}", quote_string(&marker)), "marking the change log")
                    .await?;
            }
            Some(row) => {
                let (kind, comment): (String, Option<String>) = (row.get(0), row.get(1));
                if kind != "r" || comment.as_deref() != Some(marker.as_str()) {
                    return Err(not_ours("relation", table, job));
                }
            }
        }
    }
    Ok(())
}

/// The captured table's oid and key columns, or an error naming what is missing.
async fn table_info(tx: &Transaction<'_>, t: &CaptureTable) -> Result<TableInfo> {
    let row = tx
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind IN ('r', 'p')",
            &[&t.table],
        )
        .await
        .map_err(|e| pg_error(e, "looking up the table").in_table(t.table.clone()))?;
    let oid: Oid =
        row.ok_or_else(|| Error::schema(format!("table {} does not exist", t.table)).in_table(t.table.clone()))?.get(0);
    if t.key.is_empty() {
        return Err(Error::schema("the table has no key to capture changes by").in_table(t.table.clone()));
    }
    let rows = tx
        .query(
            "SELECT a.attname::text, a.atttypid, \
                    pg_catalog.quote_ident(pn.nspname) || '.' || pg_catalog.quote_ident(p.proname) \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
             JOIN pg_catalog.pg_proc p ON p.oid = ty.typsend JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($2)",
            &[&oid, &t.key],
        )
        .await
        .map_err(|e| pg_error(e, "reading the key columns").in_table(t.table.clone()))?;
    let mut by_name: HashMap<String, KeyColumn> = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            (name.clone(), KeyColumn { name, ty: r.get(1), send: r.get(2) })
        })
        .collect();
    let keys = t
        .key
        .iter()
        .map(|k| {
            by_name.remove(k).ok_or_else(|| {
                Error::schema(format!("the table has no key column {k}")).in_column(k.clone()).in_table(t.table.clone())
            })
        })
        .collect::<Result<Vec<KeyColumn>>>()?;
    Ok(TableInfo { oid, keys })
}

/// The trigger function and triggers of one table, and its registry row.
async fn install_table(
    tx: &Transaction<'_>,
    names: &Names,
    job: &str,
    t: &CaptureTable,
    info: &TableInfo,
) -> Result<()> {
    let table = &t.table;
    let in_table = |e: Error| e.in_table(table.clone());
    let marker = marker(job);
    let function = object_name(job, table, "");
    check_function(tx, names, &function, job).await?;
    let new_key: Vec<String> = info.keys.iter().map(|k| k.logged("NEW")).collect::<Result<_>>().map_err(in_table)?;
    let old_key: Vec<String> = info.keys.iter().map(|k| k.logged("OLD")).collect::<Result<_>>().map_err(in_table)?;
    let log = names.qualified(&names.log);
    let tbl = quote_string(table);
    let body = format!(
        "
DECLARE
  old_key text;
  new_key text;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO {log} (tbl, op) VALUES ({tbl}, 'T');
    RETURN NULL;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_key := json_build_array({new})::text;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_key := json_build_array({old})::text;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {log} (tbl, key, op) VALUES ({tbl}, new_key, 'I');
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO {log} (tbl, key, op) VALUES ({tbl}, old_key, 'D');
  ELSIF old_key = new_key THEN
    INSERT INTO {log} (tbl, key, op) VALUES ({tbl}, new_key, 'U');
  ELSE
    INSERT INTO {log} (tbl, key, op) VALUES ({tbl}, old_key, 'D'), ({tbl}, new_key, 'U');
  END IF;
  RETURN NULL;
END
",
        new = new_key.join(", "),
        old = old_key.join(", "),
    );
    let qualified = names.qualified(&function);
    let sql = format!(
        "CREATE OR REPLACE FUNCTION {qualified}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp AS {};
         COMMENT ON FUNCTION {qualified}() IS {}",
        dollar_quote(&body),
        quote_string(&marker)
    );
    execute(tx, &sql, "creating the trigger function").await.map_err(in_table)?;
    let target = names.qualified(table);
    for (suffix, event, level) in [
        ("_ins", "INSERT", "ROW"),
        ("_upd", "UPDATE", "ROW"),
        ("_del", "DELETE", "ROW"),
        ("_trunc", "TRUNCATE", "STATEMENT"),
    ] {
        let trigger = quote_ident(&object_name(job, table, suffix));
        let sql = format!(
            "CREATE OR REPLACE TRIGGER {trigger} AFTER {event} ON {target} FOR EACH {level} EXECUTE FUNCTION {qualified}()"
        );
        execute(tx, &sql, "creating a trigger").await.map_err(in_table)?;
    }
    let key_types: Vec<Oid> = info.keys.iter().map(|k| k.ty).collect();
    let sql = format!(
        "INSERT INTO {} (tbl, relid, key_columns, key_types, columns_fp) VALUES ($1, $2, $3, $4, {}) \
         ON CONFLICT (tbl) DO UPDATE SET key_columns = EXCLUDED.key_columns, key_types = EXCLUDED.key_types",
        names.qualified(&names.registry),
        fingerprint_sql("$2"),
    );
    tx.execute(&sql, &[table, &info.oid, &t.key, &key_types])
        .await
        .map_err(|e| pg_error(e, "registering the captured table").in_table(table.clone()))?;
    Ok(())
}

/// Refuses to replace a function of this name that belongs to another job or to
/// nobody.
async fn check_function(tx: &Transaction<'_>, names: &Names, function: &str, job: &str) -> Result<()> {
    let row = tx
        .query_opt(
            "SELECT pg_catalog.obj_description(p.oid, 'pg_proc') FROM pg_catalog.pg_proc p \
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = $2 AND p.pronargs = 0",
            &[&names.schema_name, &function],
        )
        .await
        .map_err(|e| pg_error(e, "looking up the trigger function"))?;
    match row {
        Some(r) if r.get::<_, Option<String>>(0).as_deref() != Some(marker(job).as_str()) => {
            Err(not_ours("function", function, job))
        }
        _ => Ok(()),
    }
}

/// The event trigger function (with the captured tables' oids baked in, so it
/// depends on nothing but the log) and the two event triggers.
async fn install_event_triggers(tx: &Transaction<'_>, names: &Names, job: &str) -> Result<()> {
    let marker = marker(job);
    check_function(tx, names, &names.event_function, job).await?;
    let rows = tx
        .query(&format!("SELECT tbl, relid FROM {} ORDER BY tbl", names.qualified(&names.registry)), &[])
        .await
        .map_err(|e| pg_error(e, "reading the captured tables"))?;
    let captured: Vec<String> = rows
        .iter()
        .map(|r| format!("({}::pg_catalog.oid, {})", r.get::<_, Oid>(1), quote_string(&r.get::<_, String>(0))))
        .collect();
    let captured =
        if captured.is_empty() { "(0::pg_catalog.oid, NULL::text)".to_string() } else { captured.join(", ") };
    let log = names.qualified(&names.log);
    let body = format!(
        "
DECLARE
  r record;
BEGIN
  IF TG_EVENT = 'sql_drop' THEN
    FOR r IN SELECT DISTINCT c.tbl FROM pg_event_trigger_dropped_objects() d
             JOIN (VALUES {captured}) AS c(relid, tbl) ON c.relid = d.objid
             WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.object_type = 'table' LOOP
      INSERT INTO {log} (tbl, key, op) VALUES (r.tbl, left(current_query(), 2000), 'X');
    END LOOP;
  ELSE
    FOR r IN SELECT DISTINCT c.tbl FROM pg_event_trigger_ddl_commands() d
             JOIN (VALUES {captured}) AS c(relid, tbl) ON c.relid = d.objid
             WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.command_tag = 'ALTER TABLE' LOOP
      INSERT INTO {log} (tbl, key, op) VALUES (r.tbl, left(current_query(), 2000), 'X');
    END LOOP;
  END IF;
END
"
    );
    let function = names.qualified(&names.event_function);
    let sql = format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp AS {};
         COMMENT ON FUNCTION {function}() IS {}",
        dollar_quote(&body),
        quote_string(&marker)
    );
    execute(tx, &sql, "creating the DDL event trigger function").await?;
    for (name, event) in [(&names.ddl_trigger, "ddl_command_end"), (&names.drop_trigger, "sql_drop")] {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = $1", &[name])
            .await
            .map_err(|e| pg_error(e, "looking up the event trigger"))?;
        if exists.is_none() {
            let sql = format!(
                "CREATE EVENT TRIGGER {q} ON {event} EXECUTE FUNCTION {function}();
                 COMMENT ON EVENT TRIGGER {q} IS {}",
                quote_string(&marker),
                q = quote_ident(name),
            );
            execute(tx, &sql, "creating the DDL event trigger").await?;
        }
    }
    Ok(())
}

/// What keeps one table from being captured: missing table, key or privileges.
async fn table_problems(client: &Client, names: &Names, role: &str, t: &CaptureTable) -> Result<Vec<String>> {
    let table = &t.table;
    let row = client
        .query_opt(
            "SELECT c.oid, pg_catalog.has_table_privilege(c.oid, 'TRIGGER'), pg_catalog.has_table_privilege(c.oid, 'SELECT') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind IN ('r', 'p')",
            &[table],
        )
        .await
        .map_err(|e| pg_error(e, "looking up the table").in_table(table.clone()))?;
    let Some(row) = row else {
        return Ok(vec![format!("table {table}: does not exist in schema {}", names.schema_name)]);
    };
    let (oid, trigger, select): (Oid, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let mut problems = Vec::new();
    let grant = |privilege: &str| format!("GRANT {privilege} ON {} TO {}", names.qualified(table), quote_ident(role));
    if !trigger {
        problems.push(format!(
            "table {table}: role {role} lacks the TRIGGER privilege (needed to install the capture triggers): {}",
            grant("TRIGGER")
        ));
    }
    if !select {
        problems.push(format!("table {table}: role {role} lacks the SELECT privilege: {}", grant("SELECT")));
    }
    // a primary key, or a unique index on NOT NULL columns, over exactly the key
    let keys = client
        .query(
            "SELECT i.indisprimary, pg_catalog.array_agg(a.attname::text ORDER BY a.attname), pg_catalog.bool_and(a.attnotnull) \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
             GROUP BY i.indexrelid, i.indisprimary",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error(e, "reading the table's keys").in_table(table.clone()))?;
    let mut wanted = t.key.clone();
    wanted.sort();
    let has_primary = keys.iter().any(|r| r.get::<_, bool>(0));
    let key_ok = keys.iter().any(|r| r.get::<_, Vec<String>>(1) == wanted && r.get::<_, Option<bool>>(2) == Some(true));
    if t.key.is_empty() || !has_primary && !key_ok {
        problems.push(format!(
            "table {table}: has no primary key (nor a unique key on NOT NULL columns), so its changes cannot be \
             named by key: add one (ALTER TABLE {} ADD PRIMARY KEY (...))",
            names.qualified(table)
        ));
    } else if !key_ok {
        problems.push(format!(
            "table {table}: the key ({}) is not its primary key nor a unique key on NOT NULL columns: use the \
             primary key",
            t.key.join(", ")
        ));
    } else {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod) \
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attname = ANY($2) AND NOT a.attisdropped",
                &[&oid, &t.key],
            )
            .await
            .map_err(|e| pg_error(e, "reading the key columns").in_table(table.clone()))?;
        for r in rows {
            let (name, ty, native): (String, Oid, String) = (r.get(0), r.get(1), r.get(2));
            if Type::from_oid(ty).and_then(|t| column_type(&t, -1)).is_none() {
                problems.push(format!(
                    "table {table}: key column {name} has type {native}, which trigger capture cannot log"
                ));
            }
        }
    }
    Ok(problems)
}

#[async_trait]
impl Capture for TriggerCapture {
    /// Every refusal at once: the schema's CREATE privilege; per table that it exists,
    /// has a primary key (or unique NOT NULL key) that is the job's key, of types the
    /// capture can log, and the TRIGGER and SELECT privileges. A trigger log keeps
    /// changes until they are released, so `copy_seconds` limits nothing.
    async fn preflight(&mut self, tables: &[CaptureTable], _copy_seconds: u64) -> Result<()> {
        let result = self.preflight_inner(tables).await;
        self.after(result)
    }

    /// Creates (or reuses) the log, the registry, the trigger functions and
    /// triggers, and with a superuser role the DDL event triggers, in one
    /// transaction; returns the log's newest seq.
    async fn start(&mut self, tables: &[CaptureTable]) -> Result<Position> {
        let result = self.start_inner(tables).await;
        self.after(result)
    }

    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let result = self.read_inner(from, max_events, wait).await;
        self.after(result)
    }

    /// Deletes the log rows `read` returned with `seq <= upto` (and a reported
    /// TRUNCATE or DDL row at or below `upto`); rows committed late below `upto`
    /// stay until read.
    async fn release(&mut self, upto: &Position) -> Result<()> {
        let result = self.release_inner(upto).await;
        self.after(result)
    }

    /// Log rows not yet returned: counted up to 100,000, estimated by the seq span
    /// above.
    async fn backlog(&mut self, _from: &Position) -> Result<Backlog> {
        let result = self.backlog_inner().await;
        self.after(result)
    }

    /// Drops, in one transaction, the job's event triggers, the triggers calling its
    /// functions, the functions, the log and the registry, each found by name and
    /// the job's comment.
    async fn cleanup(&mut self) -> Result<Vec<String>> {
        let result = self.cleanup_inner().await;
        self.after(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_63_bytes_and_stay_unique() {
        assert_eq!(object_name("j", "orders", "_ins"), "pontoon_j_orders_ins");
        let job = "j".repeat(40);
        let long = "t".repeat(60);
        let a = object_name(&job, &long, "_trunc");
        assert!(a.len() <= 63, "{a}");
        assert!(a.ends_with("_trunc"));
        let mut other = long.clone();
        other.push('x');
        assert_ne!(a, object_name(&job, &other, "_trunc"));
        // multi-byte table names are cut at a character boundary
        let b = object_name("job", &"é".repeat(40), "_del");
        assert!(b.len() <= 63 && b.ends_with("_del"), "{b}");
    }

    #[test]
    fn job_names_are_checked() {
        assert!(check_job("orders_sync_2").is_ok());
        for bad in ["", "Orders", "a-b", "a\"b", &"x".repeat(41)] {
            assert_eq!(check_job(bad).unwrap_err().kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn logged_keys_decode_like_scans() {
        assert_eq!(decode_key_value(&Type::INT8, "000000000000002a").unwrap(), Value::Int(42));
        assert_eq!(decode_key_value(&Type::BPCHAR, "ab  ").unwrap(), Value::Text("ab  ".into()));
        assert_eq!(decode_key_value(&Type::BYTEA, "00ff").unwrap(), Value::Bytes(vec![0, 255]));
        assert_eq!(decode_key_value(&Type::JSONB, "{\"a\": 1}").unwrap(), Value::Json("{\"a\": 1}".into()));
        assert!(decode_key_value(&Type::INT4, "0g000000").is_err());
        assert!(decode_key_value(&Type::INT4, "000").is_err());
    }

    #[test]
    fn dollar_quotes_avoid_the_body() {
        assert_eq!(dollar_quote("x"), "$pontoon$x$pontoon$");
        assert_eq!(dollar_quote("$pontoon$"), "$pontoon1$$pontoon$$pontoon1$");
    }
}
