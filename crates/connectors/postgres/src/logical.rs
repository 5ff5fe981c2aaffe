//! Native change capture for PostgreSQL: logical decoding through a replication
//! slot, streamed over the replication protocol ([`crate::replication`]), decoded by
//! `pgoutput` (built in; through a publication of the captured tables' key columns,
//! [`crate::pgoutput`]) or, where pontoon may not publish the tables, by the wal2json
//! plugin ([`crate::wal2json`]); see [`Plugin`]. Both are turned into the same
//! messages ([`Decoded`]) and assembled into batches here.
//!
//! A logical replication slot `pontoon_<job>` keeps the WAL from the moment it was
//! created. The first [`Capture::read`] starts streaming the slot from the read's
//! position; the server decodes each transaction once, as it commits, and keeps
//! sending while the syncer applies, and each following read goes on where the last
//! one ended (a read from any other position, e.g. a retry, starts a new stream).
//! [`Capture::release`] confirms a position on the stream, which moves the slot
//! (`pg_replication_slot_advance` when no stream is open). A position is the end LSN
//! of a transaction's commit record: a read from position `p` skips every
//! transaction whose commit ends at or before `p`, so after a crash (the slot may
//! lie behind the checkpoint) the released part is not delivered twice, and a read
//! from an earlier position delivers the same transactions again. A read returns
//! whole transactions: after the transaction that reaches its event limit, or once
//! the server has decoded the WAL flushed when the read began (it reports its
//! position on request), or, with nothing to return, at the deadline. So a read
//! that returns no events has seen everything committed before it began, and its
//! position moves up to what the server reported (pgoutput sends nothing for
//! transactions of other tables).
//!
//! Keys come from the key columns of the new row for inserts and updates, and from
//! the old key (the replica identity) for deletes and key-changing updates, parsed
//! from the plugin's text into exactly the [`Value`]s the reader decodes from the
//! binary format.
//!
//! Logical decoding carries no DDL. With superuser rights `start` installs event
//! triggers `pontoon_<job>_ddl` (`ddl_command_end`) and `pontoon_<job>_drop`
//! (`sql_drop`) that record ALTER/DROP of tables (and new partitions) in the table
//! `pontoon_ddl_<job>`, which is decoded with the captured tables: the record sits in
//! the WAL exactly where the DDL happened. `TRUNCATE` arrives from the plugin itself.
//! Without superuser rights a fingerprint of the captured tables' columns (kept in
//! the same table, so it survives restarts) is compared at every poll instead; such a
//! change is reported at the read's starting position, with no statement text.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pontoon_core::capture::{Backlog, Capture, CaptureBatch, CaptureTable, ChangeEvent, ChangeOp, DdlEvent};
use pontoon_core::value::{MICROS_PER_DAY, parse_date, parse_time, parse_uuid};
use pontoon_core::{ColumnType, Decimal, Error, ErrorKind, Position, Result, Value};
use serde_json::value::RawValue;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Config};

use crate::PgConnector;
use crate::errors::pg_error;
use crate::pgoutput::PgOutput;
use crate::replication::{self, WalStream};
use crate::session::Session;
use crate::sql::quote_ident;
use crate::wal2json::{self, key_values};

/// How long a read waits for the rest of a transaction the stream is sending.
const MID_TRANSACTION_WAIT: Duration = Duration::from_secs(120);
/// How often a read that waits for the server to decode asks for its position.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long a read waits for the server to report a new position.
const SILENT_SERVER_WAIT: Duration = Duration::from_secs(120);
/// How long preflight lets a test slot wait for running transactions.
const CHECK_SLOT_TIMEOUT: &str = "30s";
/// How long preflight samples the WAL write rate.
const WAL_SAMPLE: Duration = Duration::from_millis(300);
/// The longest DDL statement text kept in a [`DdlEvent`].
const MAX_STATEMENT_CHARS: usize = 2000;
/// `command_tag` of the rows that hold table fingerprints (non-superuser mode).
const FINGERPRINT_TAG: &str = "pontoon fingerprint";
/// How many of the transaction ids `$1` (32-bit, recent) a new snapshot does not see
/// yet. The full id takes the epoch of the snapshot's `xmax`, or the one before when
/// the id is above `xmax`'s low half (it was assigned before the wraparound).
const NOT_VISIBLE_SQL: &str = "SELECT count(*)::int8 FROM pg_catalog.pg_current_snapshot() s, \
     LATERAL (SELECT pg_catalog.pg_snapshot_xmax(s)::text::int8 AS xmax) m, unnest($1::int8[]) x \
     WHERE NOT pg_catalog.pg_visible_in_snapshot(\
       ((((m.xmax >> 32) - (x >= (m.xmax & 4294967295))::int) << 32) | x)::text::xid8, s)";

/// How long a decoded transaction may take to become visible before the read fails.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The replication slot of a job.
pub fn slot_name(job: &str) -> String {
    format!("pontoon_{job}")
}

/// The table that records schema changes (and fingerprints) of a job.
pub fn ddl_table_name(job: &str) -> String {
    format!("pontoon_ddl_{job}")
}

/// The `ddl_command_end` event trigger of a job, and the name of its function.
pub fn ddl_trigger_name(job: &str) -> String {
    format!("pontoon_{job}_ddl")
}

/// The `sql_drop` event trigger of a job.
pub fn drop_trigger_name(job: &str) -> String {
    format!("pontoon_{job}_drop")
}

/// The temporary slot preflight creates to see whether wal2json loads.
fn check_slot_name(job: &str) -> String {
    format!("pontoon_{job}_check")
}

/// PostgreSQL logical decoding with wal2json as a [`Capture`] (see the module docs).
///
/// Creating it does no I/O; it opens its own connection on first use and again after
/// the connection was lost.
pub struct LogicalCapture {
    config: Config,
    redacted: String,
    job: String,
    session: Option<Session>,
    watch: Option<Watch>,
    /// The open replication stream, the position the next read goes on from, and
    /// the stream's pgoutput decoding state.
    stream: Option<(WalStream, u64, PgOutput)>,
    /// The slot's output plugin, known once `start` has found or created the slot.
    plugin: Option<Plugin>,
    /// The plugin a new slot gets when both could serve (tests choose; else pgoutput).
    prefer: Plugin,
    /// How many bytes of decoded changes may wait in memory for a read.
    buffered: usize,
}

impl std::fmt::Debug for LogicalCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalCapture").field("url", &self.redacted).field("job", &self.job).finish()
    }
}

/// The output plugin that decodes the slot.
///
/// `pgoutput` is built into PostgreSQL and, through a publication `pontoon_<job>` of
/// the captured tables with only their key and replica identity columns, sends a few
/// bytes per change whatever the width of the row (wal2json prints every column as
/// JSON: on the drain benchmark about 370 bytes per change of a narrow table against
/// 20, and a third less CPU on the server). Creating a publication needs the tables'
/// ownership (or superuser) and `CREATE` on the database, and each table (each
/// partition of a partitioned one) needs a replica identity (else the source's own
/// UPDATEs and DELETEs would fail once the table is published). Where any of that is
/// missing, a new slot uses wal2json. A partitioned table is published through its
/// root (`publish_via_partition_root`): its changes arrive under the root's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    PgOutput,
    Wal2Json,
}

impl Plugin {
    fn name(self) -> &'static str {
        match self {
            Plugin::PgOutput => "pgoutput",
            Plugin::Wal2Json => "wal2json",
        }
    }

    fn of(name: &str) -> Option<Plugin> {
        match name {
            "pgoutput" => Some(Plugin::PgOutput),
            "wal2json" => Some(Plugin::Wal2Json),
            _ => None,
        }
    }
}

/// The publication of a job's pgoutput slot (the slot's name).
pub fn publication_name(job: &str) -> String {
    slot_name(job)
}

/// A captured table.
#[derive(Debug, Clone)]
struct Watched {
    table: String,
    key: Vec<String>,
    key_types: Vec<ColumnType>,
}

/// How schema changes are noticed.
#[derive(Debug)]
enum DdlWatch {
    /// Event triggers write to the DDL table, which is decoded with the changes.
    EventTriggers,
    /// Fingerprints of the captured tables as of the job's first start, by table index.
    Fingerprints(Vec<String>),
}

/// What `start` learned about the captured tables.
#[derive(Debug)]
struct Watch {
    schema: String,
    tables: Vec<Watched>,
    /// Relation names as wal2json shows them (tables and their partitions).
    by_name: HashMap<String, usize>,
    by_oid: HashMap<i64, usize>,
    ddl_table: String,
    /// The `add-tables` option.
    add_tables: String,
    ddl: DdlWatch,
}

fn pg_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| pg_error(e, what)
}

impl LogicalCapture {
    /// A capture for `job` on the connector's database. Creating it does no I/O; a
    /// job id that cannot name a replication slot (`[a-z0-9_]{1,40}`) is refused by
    /// the first call.
    pub fn new(connector: PgConnector, job: String) -> LogicalCapture {
        LogicalCapture {
            config: connector.config,
            redacted: connector.redacted,
            job,
            session: None,
            watch: None,
            stream: None,
            plugin: None,
            prefer: Plugin::PgOutput,
            buffered: replication::BUFFERED,
        }
    }

    /// At most `bytes` of decoded changes wait in memory for a read (48 MB unless
    /// set); then the server waits with decoding.
    pub fn with_buffer(mut self, bytes: usize) -> LogicalCapture {
        self.buffered = bytes;
        self
    }

    /// A new slot uses `plugin` where it can (pgoutput needs a publication, see
    /// [`Plugin`]); an existing slot keeps the plugin it has.
    pub fn with_plugin(mut self, plugin: Plugin) -> LogicalCapture {
        self.prefer = plugin;
        self
    }

    /// The output plugin of the slot, once [`Capture::start`] has run.
    pub fn plugin(&self) -> Option<Plugin> {
        self.plugin
    }

    fn slot(&self) -> String {
        slot_name(&self.job)
    }

    /// The connection, opened (again) when there is none or it was lost.
    async fn client(&mut self) -> Result<&Client> {
        let job = &self.job;
        if job.is_empty()
            || job.len() > 40
            || !job.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::config(format!(
                "job id `{job}` cannot name a replication slot: use 1 to 40 of a-z, 0-9 and _"
            )));
        }
        if self.session.as_ref().is_none_or(|s| s.client.is_closed()) {
            self.session = None;
            let session = Session::connect(&self.config, &self.redacted).await?;
            // wal2json prints values with the session's output settings; the reader's
            // binary values are matched against hex bytea (the session already sets UTC,
            // ISO dates and round-trip floats)
            session
                .client
                .batch_execute("SET bytea_output = 'hex'")
                .await
                .map_err(pg_err("setting up the capture session"))?;
            self.session = Some(session);
        }
        match &self.session {
            Some(s) => Ok(&s.client),
            None => Err(Error::internal("the capture session vanished")),
        }
    }
}

/// `current_schema()`, which holds the captured tables and pontoon's DDL table.
async fn current_schema(client: &Client) -> Result<String> {
    let row = client.query_one("SELECT current_schema()::text", &[]).await.map_err(pg_err("reading the schema"))?;
    row.get::<_, Option<String>>(0).ok_or_else(|| {
        Error::config("the connection has no current schema (search_path names no existing schema)".to_string())
    })
}

async fn is_superuser(client: &Client) -> Result<bool> {
    let row = client
        .query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(pg_err("reading the role's attributes"))?;
    Ok(row.get(0))
}

/// A name as wal2json's `add-tables` option reads it (`\` escapes `,` `.` `*` and spaces).
fn filter_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        if matches!(c, '\\' | ',' | '.' | '*' | '"' | '\'') || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The relations of a table as logical decoding names them: itself and, for a
/// partitioned table, every partition (oid, name).
async fn relations_of(client: &Client, schema: &str, table: &str) -> Result<Vec<(i64, String)>> {
    let rows = client
        .query(
            "WITH root AS (SELECT c.oid FROM pg_catalog.pg_class c \
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')) \
             SELECT c.oid::int8, c.relname::text FROM root JOIN pg_catalog.pg_class c ON c.oid = root.oid \
             UNION \
             SELECT c.oid::int8, c.relname::text FROM root \
                CROSS JOIN LATERAL pg_catalog.pg_partition_tree(root.oid) t \
                JOIN pg_catalog.pg_class c ON c.oid = t.relid",
            &[&schema, &table],
        )
        .await
        .map_err(|e| pg_error(e, "looking up the table").in_table(table))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Fingerprints of the tables' columns (names, types, nullability) and partitions,
/// by table name; a missing table has none.
async fn fingerprints(client: &Client, schema: &str, tables: &[String]) -> Result<HashMap<String, String>> {
    let rows = client
        .query(
            "WITH root AS (SELECT c.oid, c.relname FROM pg_catalog.pg_class c \
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind IN ('r', 'p')), \
             rel AS (SELECT root.relname AS tname, root.oid FROM root \
                UNION SELECT root.relname, t.relid FROM root \
                CROSS JOIN LATERAL pg_catalog.pg_partition_tree(root.oid) t) \
             SELECT rel.tname::text, md5(string_agg(format('%s:%s:%s:%s:%s:%s', c.oid, c.relname, a.attnum, \
                a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull), ',' \
                ORDER BY c.oid, a.attnum)) \
             FROM rel JOIN pg_catalog.pg_class c ON c.oid = rel.oid \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             GROUP BY rel.tname",
            &[&schema, &tables],
        )
        .await
        .map_err(pg_err("reading the captured tables' columns"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The event trigger function: records ALTER TABLE, DROP of tables and new
/// partitions in the DDL table. A failure to record never fails the DDL itself.
fn ddl_function_sql(schema: &str, function: &str, table: &str, job: &str) -> String {
    let target = format!("{}.{}", quote_ident(schema), quote_ident(table));
    format!(
        "CREATE OR REPLACE FUNCTION {schema_q}.{function_q}() RETURNS event_trigger \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pontoon_ddl$ \
         DECLARE r record; rel oid; \
         BEGIN \
           IF tg_event = 'sql_drop' THEN \
             FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table' LOOP \
               INSERT INTO {target} (command_tag, object_type, schema_name, table_name, relid, statement) \
               VALUES (tg_tag, r.object_type, r.schema_name, r.object_name, r.objid, current_query()); \
             END LOOP; \
           ELSE \
             FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() \
                      WHERE classid = 'pg_class'::regclass AND command_tag IN ('ALTER TABLE', 'CREATE TABLE') \
                      AND object_type IN ('table', 'table column') LOOP \
               rel := r.objid; \
               IF r.command_tag = 'CREATE TABLE' THEN \
                 rel := (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = r.objid LIMIT 1); \
                 CONTINUE WHEN rel IS NULL; \
               END IF; \
               INSERT INTO {target} (command_tag, object_type, schema_name, table_name, relid, statement) \
               SELECT r.command_tag, r.object_type, n.nspname, c.relname, c.oid, current_query() \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel; \
             END LOOP; \
           END IF; \
         EXCEPTION WHEN OTHERS THEN \
           RAISE WARNING 'pontoon job {job}: could not record a schema change: %', SQLERRM; \
         END $pontoon_ddl$",
        schema_q = quote_ident(schema),
        function_q = quote_ident(function),
    )
}

#[async_trait]
impl Capture for LogicalCapture {
    async fn preflight(&mut self, tables: &[CaptureTable], copy_seconds: u64) -> Result<()> {
        let job = self.job.clone();
        let slot = self.slot();
        let (config, redacted) = (self.config.clone(), self.redacted.clone());
        let prefer = self.prefer;
        let client = self.client().await?;
        let mut problems = Vec::new();
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int4, \
                    current_setting('max_slot_wal_keep_size'), \
                    CASE WHEN current_setting('max_slot_wal_keep_size') = '-1' THEN -1 \
                         ELSE pg_size_bytes(current_setting('max_slot_wal_keep_size')) END, \
                    (SELECT count(*)::int4 FROM pg_catalog.pg_replication_slots), \
                    r.rolsuper, r.rolreplication, current_user::text, current_schema()::text, \
                    coalesce(has_schema_privilege(current_schema(), 'CREATE'), false), \
                    s.plugin::text, s.database::text, current_database()::text, s.wal_status \
                 FROM pg_catalog.pg_roles r LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1 \
                 WHERE r.rolname = current_user",
                &[&slot],
            )
            .await
            .map_err(pg_err("reading the server's settings"))?;
        let wal_level: String = row.get(0);
        let max_slots: i32 = row.get(1);
        let keep_text: String = row.get(2);
        let keep_bytes: i64 = row.get(3);
        let used_slots: i32 = row.get(4);
        let superuser: bool = row.get(5);
        let replication: bool = row.get(6);
        let user: String = row.get(7);
        let schema: Option<String> = row.get(8);
        let can_create: bool = row.get(9);
        let slot_plugin: Option<String> = row.get(10);
        let slot_database: Option<String> = row.get(11);
        let database: String = row.get(12);
        let wal_status: Option<String> = row.get(13);

        let logical = wal_level == "logical";
        if !logical {
            problems.push(format!(
                "setting wal_level is `{wal_level}`: logical decoding needs `logical` \
                 (ALTER SYSTEM SET wal_level = logical, then restart the server)"
            ));
        }
        let may_replicate = superuser || replication;
        if !may_replicate {
            problems.push(format!(
                "role {user} has neither the REPLICATION nor the SUPERUSER attribute, which replication slots \
                 need (ALTER ROLE {} REPLICATION)",
                quote_ident(&user)
            ));
        }
        let Some(schema) = schema else {
            problems.push("the connection has no current schema: search_path names no existing schema".into());
            return Err(refusal(&problems));
        };
        if !can_create {
            problems.push(format!(
                "role {user} cannot create tables in schema {schema}, where pontoon keeps {} \
                 (GRANT CREATE ON SCHEMA {} TO {})",
                ddl_table_name(&job),
                quote_ident(&schema),
                quote_ident(&user)
            ));
        }
        let slot_ok = match (&slot_plugin, &slot_database) {
            (None, _) => None,
            (Some(plugin), Some(db)) if Plugin::of(plugin).is_some() && *db == database => {
                if wal_status.as_deref() == Some("lost") {
                    problems.push(lost_slot(&slot));
                }
                Some(true)
            }
            (plugin, db) => {
                problems.push(format!(
                    "replication slot {slot} exists already with plugin {} in database {}: another job or \
                     database uses the name; drop it (SELECT pg_drop_replication_slot('{slot}')) or rename the job",
                    plugin.as_deref().unwrap_or("?"),
                    db.as_deref().unwrap_or("(none: a physical slot)")
                ));
                Some(false)
            }
        };
        if slot_ok.is_none() && used_slots >= max_slots {
            problems.push(format!(
                "all {max_slots} replication slots (setting max_replication_slots) are in use: drop unused slots \
                 (pg_replication_slots) or raise max_replication_slots and restart the server"
            ));
        }

        // which plugin start would take for a new slot (pgoutput is built in), and why
        // not pgoutput
        let (new_plugin, not_pgoutput) = match (prefer, &slot_plugin) {
            (Plugin::PgOutput, None) => match publication_tables(client, &schema, tables).await? {
                Ok(_) => (Plugin::PgOutput, None),
                Err(why) => (Plugin::Wal2Json, Some(why)),
            },
            _ => (Plugin::Wal2Json, None),
        };
        // does wal2json load? a temporary slot says so, or a peek at the job's own slot
        if logical && may_replicate {
            if let Err(e) = replication::check_login(&config, &redacted).await {
                problems.push(format!(
                    "the server refuses a replication connection, which streams the slot's changes: {} (allow \
                     it in pg_hba.conf for this database and user, and keep a WAL sender free: setting \
                     max_wal_senders)",
                    e.message()
                ));
            }
            if slot_ok.is_none() && used_slots < max_slots {
                if new_plugin == Plugin::Wal2Json
                    && let Some(p) = check_plugin_with_temporary_slot(client, &check_slot_name(&job)).await?
                {
                    problems.push(match &not_pgoutput {
                        Some(why) => {
                            format!("{p}; or let pontoon decode with the built-in pgoutput, which it cannot now: {why}")
                        }
                        None => p,
                    });
                }
            } else if slot_ok == Some(true) {
                let pgoutput = slot_plugin.as_deref() == Some("pgoutput");
                if pgoutput && !publication_exists(client, &publication_name(&job)).await? {
                    problems.push(publication_gone(&slot, &publication_name(&job)));
                }
                let peek = match slot_plugin.as_deref().and_then(Plugin::of) {
                    Some(Plugin::PgOutput) => {
                        client
                            .query(
                                "SELECT 1 FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, NULL, 1, \
                                 'proto_version', '1', 'publication_names', $2)",
                                &[&slot, &publication_name(&job)],
                            )
                            .await
                    }
                    _ => {
                        client
                            .query(
                                "SELECT 1 FROM pg_catalog.pg_logical_slot_peek_changes($1, NULL, 1, \
                                 'format-version', '2')",
                                &[&slot],
                            )
                            .await
                    }
                };
                match peek {
                    // held by the backend of a pontoon killed a moment ago: start waits for it
                    Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "55006") => {}
                    Err(e) if pgoutput => problems.push(format!(
                        "replication slot {slot} cannot be decoded through publication {}: {}; run pontoon cleanup \
                         and start the job again",
                        publication_name(&job),
                        e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string())
                    )),
                    Err(e) => problems.push(plugin_problem(&e)),
                    Ok(_) => {}
                }
            }
        }

        for t in tables {
            problems.extend(table_problems(client, &schema, t).await?);
        }

        if keep_bytes >= 0 {
            let rate = wal_bytes_per_second(client).await?;
            let needed = rate * copy_seconds as f64;
            if needed > keep_bytes as f64 {
                problems.push(format!(
                    "setting max_slot_wal_keep_size is {keep_text}, but about {} MB of WAL would be written during \
                     the estimated copy of {copy_seconds} s (measured {:.1} MB/s): the server would drop WAL the \
                     slot still needs; raise it (ALTER SYSTEM SET max_slot_wal_keep_size = '{}MB'; SELECT \
                     pg_reload_conf()) or set it to -1",
                    (needed / 1_048_576.0).ceil() as u64,
                    rate / 1_048_576.0,
                    ((needed * 2.0) / 1_048_576.0).ceil() as u64
                ));
            }
        }

        if problems.is_empty() { Ok(()) } else { Err(refusal(&problems)) }
    }

    async fn start(&mut self, tables: &[CaptureTable]) -> Result<Position> {
        let job = self.job.clone();
        let prefer = self.prefer;
        let slot = self.slot();
        let ddl_table = ddl_table_name(&job);
        let client = self.client().await?;
        let schema = current_schema(client).await?;
        let superuser = is_superuser(client).await?;

        let mut watched = Vec::with_capacity(tables.len());
        let mut by_name = HashMap::new();
        let mut by_oid = HashMap::new();
        let mut filter = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            if t.key.is_empty() || t.key.len() != t.key_types.len() {
                return Err(Error::schema("the table has no key to capture changes by").in_table(&t.table));
            }
            let relations = relations_of(client, &schema, &t.table).await?;
            if relations.is_empty() {
                return Err(
                    Error::schema(format!("table {} does not exist in schema {schema}", t.table)).in_table(&t.table)
                );
            }
            for (oid, name) in relations {
                filter.push(format!("{}.{}", filter_name(&schema), filter_name(&name)));
                by_oid.insert(oid, i);
                by_name.insert(name, i);
            }
            watched.push(Watched { table: t.table.clone(), key: t.key.clone(), key_types: t.key_types.clone() });
        }

        let ddl_q = format!("{}.{}", quote_ident(&schema), quote_ident(&ddl_table));
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {ddl_q} (id bigserial PRIMARY KEY, command_tag text, object_type text, \
                 schema_name text, table_name text, relid bigint, statement text, \
                 recorded_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(|e| pg_error(e, "creating pontoon's DDL log table").in_table(&ddl_table))?;

        let ddl = if superuser {
            let function = ddl_trigger_name(&job);
            client
                .batch_execute(&ddl_function_sql(&schema, &function, &ddl_table, &job))
                .await
                .map_err(pg_err("creating the DDL event trigger function"))?;
            for (name, event) in [(ddl_trigger_name(&job), "ddl_command_end"), (drop_trigger_name(&job), "sql_drop")] {
                let exists = client
                    .query_opt("SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = $1", &[&name])
                    .await
                    .map_err(pg_err("looking up the event trigger"))?
                    .is_some();
                if !exists {
                    client
                        .batch_execute(&format!(
                            "CREATE EVENT TRIGGER {} ON {event} EXECUTE FUNCTION {}.{}()",
                            quote_ident(&name),
                            quote_ident(&schema),
                            quote_ident(&function)
                        ))
                        .await
                        .map_err(|e| pg_error(e, &format!("creating event trigger {name}")))?;
                }
            }
            filter.push(format!("{}.{}", filter_name(&schema), filter_name(&ddl_table)));
            DdlWatch::EventTriggers
        } else {
            // the first start of the job records the fingerprints; later starts compare
            // with them, so a change made while pontoon was down is noticed too
            let names: Vec<String> = watched.iter().map(|w| w.table.clone()).collect();
            let current = fingerprints(client, &schema, &names).await?;
            let stored: HashMap<String, String> = client
                .query(
                    &format!(
                        "SELECT table_name, statement FROM {ddl_q} WHERE command_tag = $1 AND table_name = ANY($2)"
                    ),
                    &[&FINGERPRINT_TAG, &names],
                )
                .await
                .map_err(|e| pg_error(e, "reading stored fingerprints").in_table(&ddl_table))?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut baseline = Vec::with_capacity(names.len());
            for name in &names {
                let now = current.get(name).cloned().unwrap_or_default();
                match stored.get(name) {
                    Some(before) => baseline.push(before.clone()),
                    None => {
                        client
                            .execute(
                                &format!(
                                    "INSERT INTO {ddl_q} (command_tag, schema_name, table_name, statement) \
                                     VALUES ($1, $2, $3, $4)"
                                ),
                                &[&FINGERPRINT_TAG, &schema, name, &now],
                            )
                            .await
                            .map_err(|e| pg_error(e, "storing a fingerprint").in_table(&ddl_table))?;
                        baseline.push(now);
                    }
                }
            }
            DdlWatch::Fingerprints(baseline)
        };

        let publication = publication_name(&job);
        let plugin = match slot_plugin(client, &slot).await? {
            Some(name) => {
                let plugin = Plugin::of(&name).ok_or_else(|| {
                    Error::config(format!(
                        "replication slot {slot} exists with plugin {name}: it belongs to something else; drop it \
                         or rename the job"
                    ))
                })?;
                if plugin == Plugin::PgOutput && !publication_exists(client, &publication).await? {
                    return Err(Error::config(publication_gone(&slot, &publication)));
                }
                plugin
            }
            None if prefer == Plugin::PgOutput => match publication_tables(client, &schema, tables).await? {
                Ok(mut list) => {
                    if matches!(ddl, DdlWatch::EventTriggers) {
                        list.push(ddl_q.clone());
                    }
                    create_publication(client, &publication, &list).await?;
                    Plugin::PgOutput
                }
                Err(why) => {
                    tracing::info!(reason = %why, "decoding with wal2json: pgoutput needs a publication");
                    Plugin::Wal2Json
                }
            },
            None => Plugin::Wal2Json,
        };
        let position = ensure_slot(client, &slot, plugin).await?;
        self.plugin = Some(plugin);
        let at = Position::PgLsn { lsn: position };
        tracing::info!(slot = %slot, plugin = plugin.name(), position = %at, "change capture started");
        self.watch =
            Some(Watch { schema, tables: watched, by_name, by_oid, ddl_table, add_tables: filter.join(","), ddl });
        Ok(Position::PgLsn { lsn: position })
    }

    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let Position::PgLsn { lsn: from_lsn } = *from else {
            return Err(Error::internal(format!("a PostgreSQL slot cannot read from position {from}")));
        };
        let deadline = Instant::now() + wait;
        let slot = self.slot();
        self.client().await?;
        let (Some(session), Some(watch), Some(plugin)) = (&self.session, &self.watch, self.plugin) else {
            return Err(Error::internal("change capture read before start"));
        };
        let client = &session.client;
        if let DdlWatch::Fingerprints(baseline) = &watch.ddl
            && let Some(ddl) = changed_table(client, watch, baseline, from).await?
        {
            return Ok(CaptureBatch {
                events: Vec::new(),
                position: from.clone(),
                ddl: Some(ddl),
                committed_at_micros: None,
            });
        }
        // a stream goes on from where the last read ended; a read from elsewhere
        // (a retry, a restart) starts a new one
        let (mut stream, mut pgoutput) = match self.stream.take() {
            Some((stream, at, pgoutput)) if at == from_lsn => (stream, pgoutput),
            old => {
                if let Some((stream, _, _)) = old {
                    stream.close().await;
                }
                let publication = publication_name(&self.job);
                let options = match plugin {
                    Plugin::Wal2Json => vec![
                        ("format-version", "2"),
                        ("include-timestamp", "1"),
                        ("include-lsn", "1"),
                        ("include-xids", "1"),
                        ("include-types", "0"),
                        ("add-tables", watch.add_tables.as_str()),
                    ],
                    Plugin::PgOutput => vec![("proto_version", "1"), ("publication_names", publication.as_str())],
                };
                let stream =
                    WalStream::start(&self.config, &self.redacted, &slot, from_lsn, &options, self.buffered).await?;
                (stream, PgOutput::default())
            }
        };
        // a read that returns nothing must have seen everything committed before
        // it started: the server has decoded up to the WAL flushed then. (Not "it
        // reported the same position twice": while it replays a large transaction
        // at its commit, or waits for the CPU, its position stands still.)
        let row = client
            .query_one("SELECT pg_catalog.pg_current_wal_flush_lsn()", &[])
            .await
            .map_err(pg_err("reading the WAL position"))?;
        let flushed = u64::from(row.get::<_, PgLsn>(0));
        let mut probed = Instant::now();
        stream.probe();
        let mut report = (stream.sent(), Instant::now());
        let mut last_message = Instant::now();
        let mut assembler = Assembler::new(watch, from_lsn, max_events);
        while !assembler.done {
            let now = Instant::now();
            let sent = stream.sent();
            if sent != report.0 {
                report = (sent, now);
            }
            let caught_up = sent >= flushed;
            // whole transactions only, up to the event limit or everything committed
            // before the read began, whichever comes first; nothing yet: wait
            let until = if assembler.in_transaction() {
                last_message + MID_TRANSACTION_WAIT
            } else if caught_up {
                if assembler.out.events.is_empty() { deadline } else { now }
            } else {
                if now.duration_since(probed) >= PROBE_EVERY {
                    stream.probe();
                    probed = now;
                }
                now + PROBE_EVERY
            };
            match stream.next(until).await.map_err(|e| with_slot(e, &slot))? {
                Some(message) => {
                    last_message = Instant::now();
                    match plugin {
                        Plugin::Wal2Json => {
                            let text = std::str::from_utf8(&message).map_err(|_| {
                                Error::internal(format!(
                                    "wal2json sent a message that is not UTF-8 from replication slot {slot}"
                                ))
                            })?;
                            assembler.push(text).map_err(|e| with_slot(e, &slot))?;
                        }
                        Plugin::PgOutput => {
                            for decoded in pgoutput.decode(&message).map_err(|e| with_slot(e, &slot))? {
                                assembler.apply(decoded).map_err(|e| with_slot(e, &slot))?;
                            }
                        }
                    }
                }
                None if assembler.in_transaction() => {
                    if last_message.elapsed() >= MID_TRANSACTION_WAIT {
                        return Err(Error::new(
                            ErrorKind::Transient,
                            format!(
                                "replication slot {slot} sent nothing for {} s in the middle of a transaction",
                                MID_TRANSACTION_WAIT.as_secs()
                            ),
                        ));
                    }
                }
                None if caught_up && (!assembler.out.events.is_empty() || Instant::now() >= deadline) => break,
                None => {
                    if !caught_up && report.1.elapsed() >= SILENT_SERVER_WAIT {
                        return Err(Error::new(
                            ErrorKind::Transient,
                            format!(
                                "replication slot {slot} has not reported its position for {} s (it is at {}, the \
                                 WAL was flushed up to {})",
                                SILENT_SERVER_WAIT.as_secs(),
                                Position::PgLsn { lsn: stream.sent() },
                                Position::PgLsn { lsn: flushed }
                            ),
                        ));
                    }
                }
            }
        }
        let mut got = assembler.finish();
        wait_visible(client, &got.xids).await.map_err(|e| with_slot(e, &slot))?;
        // after a DDL the stream has gone past the batch's position
        if got.ddl.is_none() {
            // every transaction that ends at or before the server's reported position
            // has been read (pgoutput sends nothing for a transaction of other tables:
            // without this the slot would not move while only they are written)
            got.position = got.position.max(stream.sent());
            self.stream = Some((stream, got.position, pgoutput));
        }
        Ok(CaptureBatch {
            events: got.events,
            position: Position::PgLsn { lsn: got.position },
            ddl: got.ddl,
            committed_at_micros: got.committed_at_micros,
        })
    }

    fn reads_ahead(&self) -> bool {
        true
    }

    async fn release(&mut self, upto: &Position) -> Result<()> {
        let Position::PgLsn { lsn } = *upto else {
            return Err(Error::internal(format!("a PostgreSQL slot cannot release up to position {upto}")));
        };
        if let Some((stream, _, _)) = &self.stream {
            stream.confirm(lsn);
            return Ok(());
        }
        let slot = self.slot();
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT CASE WHEN confirmed_flush_lsn < $2 \
                    THEN (pg_catalog.pg_replication_slot_advance($1, $2)).end_lsn ELSE confirmed_flush_lsn END \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot, &PgLsn::from(lsn)],
            )
            .await
            .map_err(|e| pg_error(e, &format!("advancing replication slot {slot}")))?;
        if row.is_none() {
            return Err(Error::new(
                ErrorKind::Database,
                format!("replication slot {slot} does not exist any more: was it dropped (pontoon cleanup)?"),
            ));
        }
        Ok(())
    }

    async fn backlog(&mut self, from: &Position) -> Result<Backlog> {
        let from_lsn = match from {
            Position::PgLsn { lsn } => *lsn,
            _ => 0,
        };
        let slot = self.slot();
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT greatest(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), \
                    greatest(confirmed_flush_lsn, $2)), 0)::int8 \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot, &PgLsn::from(from_lsn)],
            )
            .await
            .map_err(|e| pg_error(e, &format!("measuring the backlog of replication slot {slot}")))?;
        Ok(Backlog { events: None, bytes: row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|b| b as u64) })
    }

    async fn cleanup(&mut self) -> Result<Vec<String>> {
        let job = self.job.clone();
        let slot = self.slot();
        self.watch = None;
        if let Some((stream, _, _)) = self.stream.take() {
            stream.close().await;
        }
        let client = self.client().await?;
        let mut removed = Vec::new();
        if drop_slot(client, &slot).await? {
            removed.push(format!("replication slot {slot}"));
        }
        let publication = publication_name(&job);
        if publication_exists(client, &publication).await? {
            client
                .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&publication)))
                .await
                .map_err(|e| pg_error(e, &format!("dropping publication {publication}")))?;
            removed.push(format!("publication {publication}"));
        }
        for name in [ddl_trigger_name(&job), drop_trigger_name(&job)] {
            let exists = client
                .query_opt("SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = $1", &[&name])
                .await
                .map_err(pg_err("looking up event triggers"))?
                .is_some();
            if exists {
                client
                    .batch_execute(&format!("DROP EVENT TRIGGER IF EXISTS {}", quote_ident(&name)))
                    .await
                    .map_err(|e| pg_error(e, &format!("dropping event trigger {name}")))?;
                removed.push(format!("event trigger {name}"));
            }
        }
        let schema = current_schema(client).await?;
        let function = ddl_trigger_name(&job);
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 AND p.proname = $2 AND p.pronargs = 0",
                &[&schema, &function],
            )
            .await
            .map_err(pg_err("looking up the event trigger function"))?
            .is_some();
        if exists {
            client
                .batch_execute(&format!(
                    "DROP FUNCTION IF EXISTS {}.{}()",
                    quote_ident(&schema),
                    quote_ident(&function)
                ))
                .await
                .map_err(|e| pg_error(e, &format!("dropping function {function}")))?;
            removed.push(format!("function {function}()"));
        }
        let table = ddl_table_name(&job);
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r'",
                &[&schema, &table],
            )
            .await
            .map_err(pg_err("looking up pontoon's DDL log table"))?
            .is_some();
        if exists {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}.{}", quote_ident(&schema), quote_ident(&table)))
                .await
                .map_err(|e| pg_error(e, "dropping pontoon's DDL log table").in_table(&table))?;
            removed.push(format!("table {table}"));
        }
        Ok(removed)
    }
}

/// A slot whose WAL the server removed (it outgrew `max_slot_wal_keep_size`).
fn lost_slot(slot: &str) -> String {
    format!(
        "replication slot {slot} was invalidated (wal_status lost: its WAL outgrew setting max_slot_wal_keep_size), \
         so changes since its position are gone: run pontoon cleanup and start the job again"
    )
}

fn refusal(problems: &[String]) -> Error {
    Error::config(format!(
        "PostgreSQL native capture (logical decoding) cannot run:\n{}",
        problems.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")
    ))
}

fn with_slot(e: Error, slot: &str) -> Error {
    if e.kind() == ErrorKind::Internal {
        Error::internal(format!("replication slot {slot}: {}", e.message()))
    } else {
        e
    }
}

/// The refusal for a plugin that failed to load: the server's message and hint.
fn plugin_problem(e: &tokio_postgres::Error) -> String {
    let (message, hint) = match e.as_db_error() {
        Some(db) => (db.message().to_string(), db.hint().map(|h| format!(" ({h})")).unwrap_or_default()),
        None => (e.to_string(), String::new()),
    };
    format!(
        "output plugin wal2json cannot be used: {message}{hint}; install postgresql-15-wal2json and, on \
         PostgreSQL 15.19 and later, add wal2json to setting output_plugin_libraries \
         (ALTER SYSTEM SET output_plugin_libraries = 'pgoutput, test_decoding, wal2json'; SELECT pg_reload_conf())"
    )
}

/// Creates and drops a temporary wal2json slot; a refusal line if that fails.
async fn check_plugin_with_temporary_slot(client: &Client, name: &str) -> Result<Option<String>> {
    client
        .batch_execute(&format!("SET statement_timeout = '{CHECK_SLOT_TIMEOUT}'"))
        .await
        .map_err(pg_err("setting a statement timeout"))?;
    let created = client
        .query("SELECT 1 FROM pg_catalog.pg_create_logical_replication_slot($1, 'wal2json', true)", &[&name])
        .await;
    let problem = match created {
        Ok(_) => {
            client
                .query("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name])
                .await
                .map_err(|e| pg_error(e, &format!("dropping the test slot {name}")))?;
            None
        }
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "57014") => Some(format!(
            "creating a test replication slot did not finish within {CHECK_SLOT_TIMEOUT}: logical decoding waits \
             for the transactions running when a slot is created; end long-running transactions \
             (pg_stat_activity, state 'idle in transaction') and retry"
        )),
        Err(e) => Some(plugin_problem(&e)),
    };
    client.batch_execute("RESET statement_timeout").await.map_err(pg_err("resetting the statement timeout"))?;
    Ok(problem)
}

/// The columns of the replica identity of relation `c` (none for `FULL` and
/// `NOTHING`, or a default identity without a primary key), as a select item.
const IDENTITY_COLUMNS: &str = "ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i \
       CROSS JOIN LATERAL unnest(i.indkey::int2[]) k(attnum) \
       JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
       WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) \
          OR (c.relreplident = 'i' AND i.indisreplident)))";

/// The `FOR TABLE` list of a pgoutput publication of `tables` (each with its key and
/// replica identity columns, or all columns under `REPLICA IDENTITY FULL`), or why
/// the tables cannot be published (see [`Plugin`]).
async fn publication_tables(
    client: &Client,
    schema: &str,
    tables: &[CaptureTable],
) -> Result<std::result::Result<Vec<String>, String>> {
    let row = client
        .query_one(
            "SELECT r.rolsuper, pg_catalog.has_database_privilege(current_database(), 'CREATE') \
             FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(pg_err("reading the role's rights"))?;
    let (superuser, can_publish): (bool, bool) = (row.get(0), row.get(1));
    if !superuser && !can_publish {
        return Ok(Err("the role may not create publications in this database (CREATE on the database)".into()));
    }
    let mut list = Vec::with_capacity(tables.len());
    for t in tables {
        // the table and, when it is partitioned, its partitions: each needs a replica
        // identity, and the column list must hold every identity's columns
        let oids: Vec<i64> = relations_of(client, schema, &t.table).await?.iter().map(|(oid, _)| *oid).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT c.relname::text, c.relreplident::text, pg_catalog.pg_has_role(c.relowner, 'USAGE'), \
                        {IDENTITY_COLUMNS} \
                     FROM pg_catalog.pg_class c WHERE c.oid::int8 = ANY($1)"
                ),
                &[&oids],
            )
            .await
            .map_err(|e| pg_error(e, "reading the replica identity").in_table(&t.table))?;
        if !rows.iter().any(|r| r.get::<_, String>(0) == t.table) {
            return Ok(Err(format!("table {} does not exist", t.table)));
        }
        let mut columns: Vec<String> = t.key.clone();
        let mut full = false;
        for row in &rows {
            let (rel, identity, owned, identity_columns): (String, String, bool, Vec<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if rel == t.table && !superuser && !owned {
                return Ok(Err(format!("the role does not own table {}", t.table)));
            }
            full |= identity == "f";
            if identity != "f" && identity_columns.is_empty() {
                return Ok(Err(format!("table {rel} has no replica identity")));
            }
            for c in identity_columns {
                if !columns.contains(&c) {
                    columns.push(c);
                }
            }
        }
        let name = format!("{}.{}", quote_ident(schema), quote_ident(&t.table));
        list.push(if full {
            name
        } else {
            format!("{name} ({})", columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "))
        });
    }
    Ok(Ok(list))
}

/// Creates the job's publication afresh (a new slot is about to be created, so no
/// slot reads an older one).
async fn create_publication(client: &Client, name: &str, tables: &[String]) -> Result<()> {
    let name = quote_ident(name);
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {name}; CREATE PUBLICATION {name} FOR TABLE {} \
             WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)",
            tables.join(", ")
        ))
        .await
        .map_err(pg_err("creating the publication for pgoutput"))
}

async fn publication_exists(client: &Client, name: &str) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(pg_err("looking up the publication"))?
        .is_some())
}

fn publication_gone(slot: &str, publication: &str) -> String {
    format!(
        "publication {publication}, which replication slot {slot} decodes through, is gone: run pontoon cleanup \
         and start the job again"
    )
}

/// The output plugin of the job's slot, if the slot exists.
async fn slot_plugin(client: &Client, slot: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt("SELECT plugin::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .map_err(|e| pg_error(e, &format!("looking up replication slot {slot}")))?
        .and_then(|r| r.get(0)))
}

/// Refusals for one table: missing, no key, or a replica identity without the key
/// (wal2json silently skips UPDATEs and DELETEs of tables without identity).
async fn table_problems(client: &Client, schema: &str, t: &CaptureTable) -> Result<Vec<String>> {
    let name = &t.table;
    let relations = relations_of(client, schema, name).await?;
    if relations.is_empty() {
        return Ok(vec![format!("table {name} does not exist in schema {schema}")]);
    }
    if t.key.is_empty() {
        return Ok(vec![format!("table {name} has no primary key (nor a key given for it): add a primary key")]);
    }
    let oids: Vec<i64> = relations.iter().map(|(oid, _)| *oid).collect();
    let rows = client
        .query(
            &format!(
                "SELECT c.relname::text, c.relreplident::text, {IDENTITY_COLUMNS} \
                 FROM pg_catalog.pg_class c WHERE c.oid::int8 = ANY($1) AND c.relkind = 'r' ORDER BY c.relname"
            ),
            &[&oids],
        )
        .await
        .map_err(|e| pg_error(e, "reading the replica identity").in_table(name))?;
    let mut problems = Vec::new();
    for r in rows {
        let rel: String = r.get(0);
        let identity: String = r.get(1);
        let columns: Vec<String> = r.get(2);
        let which = if rel == *name { format!("table {name}") } else { format!("table {name} (partition {rel})") };
        if identity == "f" {
            continue;
        }
        if columns.is_empty() {
            problems.push(format!(
                "{which} has no primary key and no replica identity: wal2json silently skips its UPDATEs and \
                 DELETEs; add a primary key or run ALTER TABLE {} REPLICA IDENTITY FULL",
                quote_ident(&rel)
            ));
            continue;
        }
        let missing: Vec<&str> = t.key.iter().filter(|k| !columns.contains(k)).map(String::as_str).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{which}: its replica identity ({}) lacks the sync key column(s) {}, so DELETEs would not carry \
                 the key; run ALTER TABLE {} REPLICA IDENTITY FULL (or USING INDEX on a unique index of the key)",
                columns.join(", "),
                missing.join(", "),
                quote_ident(&rel)
            ));
        }
    }
    Ok(problems)
}

/// WAL bytes written per second, sampled over [`WAL_SAMPLE`].
async fn wal_bytes_per_second(client: &Client) -> Result<f64> {
    let sample = || async {
        let row = client
            .query_one("SELECT pg_catalog.pg_current_wal_lsn()", &[])
            .await
            .map_err(pg_err("reading the WAL position"))?;
        Ok::<_, Error>((u64::from(row.get::<_, PgLsn>(0)), Instant::now()))
    };
    let (a, ta) = sample().await?;
    tokio::time::sleep(WAL_SAMPLE).await;
    let (b, tb) = sample().await?;
    let seconds = (tb - ta).as_secs_f64().max(0.001);
    Ok(b.saturating_sub(a) as f64 / seconds)
}

/// The slot's confirmed position, creating the slot if it does not exist.
async fn ensure_slot(client: &Client, slot: &str, plugin_wanted: Plugin) -> Result<u64> {
    for _ in 0..2 {
        let row = client
            .query_opt(
                "SELECT s.plugin::text, s.database::text, s.confirmed_flush_lsn, current_database()::text, s.wal_status \
                 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| pg_error(e, &format!("looking up replication slot {slot}")))?;
        if let Some(row) = row {
            let plugin: Option<String> = row.get(0);
            let database: Option<String> = row.get(1);
            let confirmed: Option<PgLsn> = row.get(2);
            let current: String = row.get(3);
            let wal_status: Option<String> = row.get(4);
            let expected = plugin_wanted.name();
            if plugin.as_deref() != Some(expected) || database.as_deref() != Some(current.as_str()) {
                return Err(Error::config(format!(
                    "replication slot {slot} exists with plugin {} in database {}, not {expected} in {current}: it \
                     belongs to something else; drop it or rename the job",
                    plugin.as_deref().unwrap_or("(none)"),
                    database.as_deref().unwrap_or("(none)")
                )));
            }
            if wal_status.as_deref() == Some("lost") {
                return Err(Error::new(ErrorKind::Database, lost_slot(slot)));
            }
            release_stale_holder(client, slot).await?;
            return confirmed
                .map(u64::from)
                .ok_or_else(|| Error::internal(format!("replication slot {slot} has no confirmed position yet")));
        }
        // creating waits for the transactions running now to end
        let created = client
            .query_one(
                "SELECT lsn FROM pg_catalog.pg_create_logical_replication_slot($1, $2)",
                &[&slot, &plugin_wanted.name()],
            )
            .await;
        match created {
            Ok(row) => {
                tracing::info!(slot = %slot, "created replication slot");
                return Ok(u64::from(row.get::<_, PgLsn>(0)));
            }
            // created meanwhile by another process: use it
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42710") => continue,
            Err(e) => return Err(pg_error(e, &format!("creating replication slot {slot}"))),
        }
    }
    Err(Error::internal(format!("replication slot {slot} was created and vanished at once")))
}

/// How long a slot may stay held by another backend before `start` ends it.
const STALE_HOLDER_WAIT: Duration = Duration::from_secs(15);

/// Waits until no backend holds the slot, ending the holder after
/// [`STALE_HOLDER_WAIT`]. The holder is the backend of a pontoon killed in the
/// middle of a read (its query runs on until it tries to answer); the engine
/// holds a lock per job, so no live pontoon of this job can be the holder.
async fn release_stale_holder(client: &Client, slot: &str) -> Result<()> {
    let what = format!("waiting for replication slot {slot} to be free");
    let deadline = Instant::now() + STALE_HOLDER_WAIT;
    loop {
        let pid: Option<i32> = client
            .query_opt("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .map_err(pg_err(&what))?
            .and_then(|r| r.get(0));
        let Some(pid) = pid else { return Ok(()) };
        if Instant::now() >= deadline + STALE_HOLDER_WAIT {
            return Err(Error::new(
                ErrorKind::Transient,
                format!("{what}: backend {pid} still holds it after being asked to end"),
            ));
        }
        if Instant::now() >= deadline {
            tracing::warn!(slot = %slot, pid, "ending the stale backend that still holds the replication slot");
            client.query("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid]).await.map_err(pg_err(&what))?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drops the slot (ending the backend that holds it, if any); false if there was none.
async fn drop_slot(client: &Client, slot: &str) -> Result<bool> {
    let what = format!("dropping replication slot {slot}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .query_opt("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .map_err(pg_err(&what))?;
        let Some(row) = row else {
            return Ok(false);
        };
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!("{what}: backend {pid} still holds it after being asked to end"),
                ));
            }
            client.query("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid]).await.map_err(pg_err(&what))?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        match client.query("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot]).await {
            Ok(_) => return Ok(true),
            // gone meanwhile
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42704") => return Ok(false),
            // taken meanwhile: end its holder on the next round
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "55006") && Instant::now() < deadline => {
                continue;
            }
            Err(e) => return Err(pg_error(e, &what)),
        }
    }
}

/// Non-superuser mode: the first captured table whose fingerprint differs from the
/// baseline, as a DDL event at `from`.
async fn changed_table(
    client: &Client,
    watch: &Watch,
    baseline: &[String],
    from: &Position,
) -> Result<Option<DdlEvent>> {
    let names: Vec<String> = watch.tables.iter().map(|w| w.table.clone()).collect();
    let now = fingerprints(client, &watch.schema, &names).await?;
    for (w, before) in watch.tables.iter().zip(baseline) {
        if now.get(&w.table).map_or("", String::as_str) != before {
            tracing::warn!(table = %w.table, "the columns of a captured table changed");
            return Ok(Some(DdlEvent {
                table: w.table.clone(),
                statement: format!(
                    "ALTER TABLE {} (columns changed; statement not visible without superuser)",
                    w.table
                ),
                position: from.clone(),
            }));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// Decoding wal2json's output
// ---------------------------------------------------------------------------

/// A column value as an output plugin sent it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    /// wal2json: the value's JSON text (numbers keep their precision).
    Json(&'a RawValue),
    /// pgoutput: the type's text output.
    Text(&'a str),
    Null,
    /// pgoutput: an unchanged TOASTed value, not sent.
    Unchanged,
}

/// A named column value of a change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col<'a> {
    pub name: &'a str,
    pub cell: Cell<'a>,
}

/// A message of either output plugin, as the [`Assembler`] takes it.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// `end`: the end of the commit record, when the plugin tells it at the start.
    Begin {
        end: Option<u64>,
        xid: Option<u32>,
        committed_at_micros: Option<i64>,
    },
    Commit {
        end: Option<u64>,
    },
    /// `action`: `I`, `U`, `D` or `T`; `new` the new row's columns, `old` the old
    /// key or row (deletes, and updates that changed the key).
    Change {
        schema: &'a str,
        table: &'a str,
        action: u8,
        new: Vec<Col<'a>>,
        old: Option<Vec<Col<'a>>>,
    },
}

/// What one peek amounted to.
#[derive(Debug, Default)]
struct Assembled {
    events: Vec<ChangeEvent>,
    position: u64,
    ddl: Option<DdlEvent>,
    committed_at_micros: Option<i64>,
    /// The ids of the transactions the events come from.
    xids: Vec<u32>,
}

/// Waits until a new snapshot sees every transaction in `xids`. PostgreSQL flushes a
/// commit record (and so lets it be decoded) before the transaction leaves the list of
/// running ones; the syncer re-reads the rows of a batch at once, and a re-read that
/// still saw the row as it was would lose the change. The wait is usually nothing.
async fn wait_visible(client: &Client, xids: &[u32]) -> Result<()> {
    if xids.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = xids.iter().map(|&x| i64::from(x)).collect();
    let started = Instant::now();
    loop {
        let row = client
            .query_one(NOT_VISIBLE_SQL, &[&ids])
            .await
            .map_err(pg_err("waiting for decoded transactions to become visible"))?;
        let waiting: i64 = row.get(0);
        if waiting == 0 {
            return Ok(());
        }
        if started.elapsed() > VISIBLE_TIMEOUT {
            return Err(Error::internal(format!(
                "{waiting} decoded transactions were still not visible after {} s",
                VISIBLE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Parses `X/Y` (hexadecimal halves).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(((hi as u64) << 32) | lo as u64)
}

/// The transaction being read.
#[derive(Default)]
struct Txn {
    end: u64,
    xid: Option<u32>,
    skip: bool,
    committed_at_micros: Option<i64>,
    events: Vec<ChangeEvent>,
    /// (captured table, statement) of the first DDL in the transaction.
    ddl: Option<(String, String)>,
}

/// Turns peeked rows, fed one at a time in order, into a batch: skips transactions
/// that end at or before `from`, is done after the transaction that reaches
/// `max_events`, and is done at the first DDL on a captured table (the events before
/// it in its transaction are kept; the batch's position stays before that
/// transaction). Only the events are kept, never the rows.
struct Assembler<'w> {
    watch: &'w Watch,
    from: u64,
    max_events: usize,
    out: Assembled,
    txn: Option<Txn>,
    done: bool,
}

impl<'w> Assembler<'w> {
    fn new(watch: &'w Watch, from: u64, max_events: usize) -> Assembler<'w> {
        Assembler {
            watch,
            from,
            max_events,
            out: Assembled { position: from, ..Assembled::default() },
            txn: None,
            done: false,
        }
    }

    /// Feeds one wal2json row.
    fn push(&mut self, text: &str) -> Result<()> {
        if self.done {
            return Ok(());
        }
        // a change nobody wants (a skipped transaction, one stopped at a DDL) is not
        // parsed: after a restart the slot may replay much that was applied already
        if matches!(wal2json::action_of(text), Some(b'I' | b'U' | b'D' | b'T')) && !self.wants_changes() {
            return Ok(());
        }
        wal2json::decode(text, |decoded| self.apply(decoded))
    }

    /// Whether the transaction being read takes changes.
    fn wants_changes(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| !t.skip && t.ddl.is_none())
    }

    /// Feeds one message of either plugin.
    fn apply(&mut self, decoded: Decoded<'_>) -> Result<()> {
        if self.done {
            return Ok(());
        }
        match decoded {
            Decoded::Begin { end, xid, committed_at_micros } => {
                // without the end up front, whether to skip is known at the commit
                let skip = end.is_some_and(|end| end <= self.from);
                let committed_at_micros = if skip { None } else { committed_at_micros };
                self.txn = Some(Txn { end: end.unwrap_or(0), xid, skip, committed_at_micros, ..Txn::default() });
            }
            Decoded::Commit { end } => {
                let Some(mut t) = self.txn.take() else { return Ok(()) };
                if let Some(end) = end {
                    t.end = end;
                }
                if t.skip || t.end <= self.from {
                    return Ok(());
                }
                let out = &mut self.out;
                if !t.events.is_empty() {
                    let xid = t.xid.ok_or_else(|| {
                        Error::internal(
                            "the output plugin sent a BEGIN without the transaction id (option include-xids)",
                        )
                    })?;
                    out.xids.push(xid);
                }
                if let Some((table, statement)) = t.ddl {
                    out.events.extend(t.events);
                    out.ddl = Some(DdlEvent { table, statement, position: Position::PgLsn { lsn: t.end } });
                    out.committed_at_micros = t.committed_at_micros.or(out.committed_at_micros);
                    self.done = true;
                    return Ok(());
                }
                if !t.events.is_empty() {
                    out.committed_at_micros = t.committed_at_micros.or(out.committed_at_micros);
                    out.events.extend(t.events);
                }
                out.position = t.end;
                self.done = out.events.len() >= self.max_events;
            }
            Decoded::Change { schema, table, action, new, old } => {
                if !self.wants_changes() {
                    return Ok(());
                }
                let Some(t) = self.txn.as_mut() else { return Ok(()) };
                decode_change(self.watch, schema, table, action, &new, old.as_deref(), t)?;
            }
        }
        Ok(())
    }

    /// The batch; an unfinished transaction (never: peeks return whole
    /// transactions) is left out.
    fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    fn finish(self) -> Assembled {
        self.out
    }
}

/// Adds the events (or the DDL) of one change to its transaction.
fn decode_change(
    watch: &Watch,
    schema: &str,
    table: &str,
    action: u8,
    new: &[Col<'_>],
    old: Option<&[Col<'_>]>,
    txn: &mut Txn,
) -> Result<()> {
    if schema != watch.schema {
        return Ok(());
    }
    if table == watch.ddl_table {
        if action == b'I'
            && let Some(ddl) = ddl_record(watch, new)?
        {
            txn.ddl = Some(ddl);
        }
        return Ok(());
    }
    let Some(&index) = watch.by_name.get(table) else {
        return Ok(());
    };
    let w = &watch.tables[index];
    let event = |key: Vec<Value>, op: ChangeOp| ChangeEvent { table: w.table.clone(), key, op };
    match action {
        b'T' => txn.ddl = Some((w.table.clone(), format!("TRUNCATE {}", w.table))),
        b'I' => {
            for key in keys_of(w, new, None)? {
                txn.events.push(event(key, ChangeOp::Insert));
            }
        }
        b'U' => {
            let new_keys = keys_of(w, new, old)?;
            // the old key, when the identity holds it and it differs
            if let Some(old_cols) = old
                && w.key
                    .iter()
                    .all(|k| old_cols.iter().any(|c| c.name == k.as_str() && !matches!(c.cell, Cell::Unchanged)))
            {
                for old in keys_of(w, old_cols, None)? {
                    if !new_keys.contains(&old) {
                        txn.events.push(event(old, ChangeOp::Delete));
                    }
                }
            }
            for key in new_keys {
                txn.events.push(event(key, ChangeOp::Update));
            }
        }
        b'D' => {
            for key in keys_of(w, old.unwrap_or_default(), None)? {
                txn.events.push(event(key, ChangeOp::Delete));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The text of a column value (`None` for null, unchanged or not a string).
fn cell_text(cell: Cell<'_>) -> Option<String> {
    match cell {
        Cell::Json(raw) => serde_json::from_str::<Option<String>>(raw.get()).ok()?,
        Cell::Text(t) => Some(t.to_string()),
        Cell::Null | Cell::Unchanged => None,
    }
}

/// A row of the DDL table that is about a captured table: (table, statement).
fn ddl_record(watch: &Watch, columns: &[Col<'_>]) -> Result<Option<(String, String)>> {
    let cell = |name: &str| columns.iter().find(|c| c.name == name).map(|c| c.cell);
    let text = |name: &str| cell(name).and_then(cell_text);
    let tag = text("command_tag").unwrap_or_default();
    if tag == FINGERPRINT_TAG {
        return Ok(None);
    }
    let relid = cell("relid").and_then(|c| match c {
        Cell::Json(raw) => raw.get().parse::<i64>().ok(),
        Cell::Text(t) => t.parse::<i64>().ok(),
        Cell::Null | Cell::Unchanged => None,
    });
    let by_oid = relid.and_then(|oid| watch.by_oid.get(&oid));
    let by_name = match (text("schema_name"), text("table_name")) {
        (Some(s), Some(t)) if s == watch.schema => watch.by_name.get(&t),
        _ => None,
    };
    let Some(&index) = by_oid.or(by_name) else {
        return Ok(None);
    };
    let mut statement = text("statement").filter(|s| !s.trim().is_empty()).unwrap_or(tag);
    if let Some((cut, _)) = statement.char_indices().nth(MAX_STATEMENT_CHARS) {
        statement.truncate(cut);
        statement.push('…');
    }
    Ok(Some((watch.tables[index].table.clone(), statement.trim().to_string())))
}

/// The key(s) of a row: each key column from `columns`, else from `fallback` (an
/// UPDATE omits unchanged TOASTed columns). More than one key only when a numeric
/// or float key column is NaN or infinite (wal2json prints those as `null`).
fn keys_of(w: &Watched, columns: &[Col<'_>], fallback: Option<&[Col<'_>]>) -> Result<Vec<Vec<Value>>> {
    let mut keys: Vec<Vec<Value>> = vec![Vec::with_capacity(w.key.len())];
    for (name, ty) in w.key.iter().zip(&w.key_types) {
        let cell = columns
            .iter()
            .chain(fallback.unwrap_or_default())
            .find(|c| c.name == name.as_str() && !matches!(c.cell, Cell::Unchanged))
            .ok_or_else(|| {
                Error::internal("the output plugin sent a change without the key column")
                    .in_column(name)
                    .in_table(&w.table)
            })?
            .cell;
        let candidates = match cell {
            Cell::Json(raw) => key_values(raw.get(), ty),
            Cell::Text(text) => key_value_text(text, ty).map(|v| vec![v]),
            Cell::Null | Cell::Unchanged => Err("the key column is null".to_string()),
        }
        .map_err(|why| {
            Error::new(ErrorKind::Unsupported, format!("cannot decode a key value from the change log: {why}"))
                .in_column(name)
                .in_table(&w.table)
        })?;
        if candidates.len() == 1 {
            let v = candidates.into_iter().next().unwrap_or(Value::Null);
            for k in &mut keys {
                k.push(v.clone());
            }
        } else {
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    candidates.iter().map(move |v| {
                        let mut k = k.clone();
                        k.push(v.clone());
                        k
                    })
                })
                .collect();
        }
    }
    Ok(keys)
}

/// The value of a key column given PostgreSQL's text for it (the type's output
/// function, ISO dates, hex `bytea`), decoded as the reader decodes the binary
/// value of that type.
pub fn key_value_text(text: &str, ty: &ColumnType) -> Result<Value, String> {
    let bad = |what: &str| format!("not a valid {what}");
    let value = match ty {
        ColumnType::Bool => match text {
            "true" | "t" => Value::Bool(true),
            "false" | "f" => Value::Bool(false),
            _ => return Err(bad("boolean")),
        },
        ColumnType::Int { .. } => Value::Int(text.parse().map_err(|_| bad("integer"))?),
        ColumnType::Float32 => Value::F32(text.parse().map_err(|_| bad("real"))?),
        ColumnType::Float64 => Value::F64(text.parse().map_err(|_| bad("double precision"))?),
        ColumnType::Decimal { .. } => Value::Decimal(Decimal::parse(text).ok_or_else(|| bad("numeric"))?),
        ColumnType::Text { .. } => Value::Text(text.to_string()),
        ColumnType::Json => Value::Json(text.to_string()),
        ColumnType::Bytes { .. } => {
            Value::Bytes(hex_bytes(text.strip_prefix("\\x").unwrap_or(text)).ok_or_else(|| bad("hex bytea"))?)
        }
        ColumnType::Uuid => Value::Uuid(parse_uuid(text).ok_or_else(|| bad("uuid"))?),
        ColumnType::Date => Value::Date(pg_date(text)?),
        ColumnType::Time => Value::Time(parse_time(text).ok_or_else(|| bad("time"))?),
        ColumnType::Timestamp => Value::Timestamp(pg_timestamp(text, false)?),
        ColumnType::TimestampTz => Value::TimestampTz(pg_timestamp(text, true)?),
    };
    Ok(value)
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks_exact(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Splits a trailing ` BC` off.
fn era(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

/// Days since 1970 of PostgreSQL's ISO date text (`YYYY-MM-DD`, ` BC` for years
/// before 1 AD: 1 BC is the value model's year 0).
fn pg_date(text: &str) -> Result<i32, String> {
    let (body, bc) = era(text.trim());
    date_days(body, bc)
}

fn date_days(body: &str, bc: bool) -> Result<i32, String> {
    if body.ends_with("infinity") {
        return Err("infinite date not supported".into());
    }
    let parsed = if bc {
        let (year, rest) = body.split_once('-').ok_or("not a valid date")?;
        let year: i64 = year.parse().map_err(|_| "not a valid date")?;
        parse_date(&format!("{}-{rest}", 1 - year))
    } else {
        parse_date(body)
    };
    parsed.ok_or_else(|| "not a valid date".to_string())
}

/// Microseconds since 1970 of PostgreSQL's ISO timestamp text, shifted to UTC by
/// its offset when `with_zone` (`YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]`).
pub(crate) fn pg_timestamp(text: &str, with_zone: bool) -> Result<i64, String> {
    let (body, bc) = era(text.trim());
    if body.ends_with("infinity") {
        return Err("infinite timestamp not supported".into());
    }
    let (date, time) = body.split_once(' ').ok_or("not a valid timestamp")?;
    let days = date_days(date, bc)? as i64;
    let (time, offset) = if with_zone {
        let at = time.rfind(['+', '-']).ok_or("timestamp without a time zone offset")?;
        let (t, off) = time.split_at(at);
        (t, zone_offset_micros(off).ok_or("not a valid time zone offset")?)
    } else {
        (time, 0)
    };
    let tod = parse_time(time).filter(|t| (0..MICROS_PER_DAY).contains(t)).ok_or("not a valid time of day")?;
    days.checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(tod))
        .and_then(|t| t.checked_sub(offset))
        .ok_or_else(|| "timestamp after 294247 AD cannot be represented".to_string())
}

/// `+HH`, `-HH:MM`, `+HH:MM:SS` in microseconds.
fn zone_offset_micros(text: &str) -> Option<i64> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut seconds = 0i64;
    let mut parts = 0;
    for (i, part) in text[1..].split(':').enumerate() {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) || i > 2 {
            return None;
        }
        seconds += part.parse::<i64>().ok()? * [3600, 60, 1][i];
        parts += 1;
    }
    (parts > 0).then_some(sign * seconds * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pontoon_core::value::days_from_civil;

    fn one(raw: &str, ty: ColumnType) -> Value {
        let mut v = key_values(raw, &ty).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(v.len(), 1, "{raw}");
        v.remove(0)
    }

    fn micros(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, us: i64) -> i64 {
        days_from_civil(y, mo, d) * MICROS_PER_DAY + ((h * 60 + mi) * 60 + s) * 1_000_000 + us
    }

    #[test]
    fn key_values_match_the_reader() {
        assert_eq!(one("42", ColumnType::I64), Value::Int(42));
        assert_eq!(one("-9223372036854775808", ColumnType::I64), Value::Int(i64::MIN));
        assert_eq!(
            one("12345678901234567890.123456789012", ColumnType::Decimal { precision: None, scale: None }),
            Value::Decimal(Decimal::parse("12345678901234567890.123456789012").unwrap())
        );
        assert_eq!(one("1.50", ColumnType::Decimal { precision: None, scale: None }).to_string(), "1.50");
        assert_eq!(one("0.1", ColumnType::Float64), Value::F64(0.1));
        assert_eq!(one("1e+300", ColumnType::Float64), Value::F64(1e300));
        assert_eq!(one("3.4e+38", ColumnType::Float32), Value::F32(3.4e38));
        assert_eq!(one("-0", ColumnType::Float64), Value::F64(-0.0));
        assert_eq!(one(r#""it's \"q\" \\ é 😀""#, ColumnType::TEXT), Value::Text("it's \"q\" \\ é 😀".into()));
        assert_eq!(one(r#""00ff10""#, ColumnType::Bytes { max_bytes: None }), Value::Bytes(vec![0, 255, 16]));
        assert_eq!(one(r#""""#, ColumnType::Bytes { max_bytes: None }), Value::Bytes(vec![]));
        assert_eq!(one("true", ColumnType::Bool), Value::Bool(true));
        assert_eq!(
            one(r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#, ColumnType::Uuid),
            Value::Uuid(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap())
        );
        assert_eq!(one(r#""24:00:00""#, ColumnType::Time), Value::Time(86_400_000_000));
        assert_eq!(one(r#""0044-03-15 BC""#, ColumnType::Date), Value::Date(days_from_civil(-43, 3, 15) as i32));
        assert_eq!(one(r#""10000-01-01""#, ColumnType::Date), Value::Date(days_from_civil(10000, 1, 1) as i32));
        assert_eq!(
            one(r#""2024-01-02 03:04:05.123456""#, ColumnType::Timestamp),
            Value::Timestamp(micros(2024, 1, 2, 3, 4, 5, 123_456))
        );
        assert_eq!(
            one(r#""0001-01-01 00:00:00 BC""#, ColumnType::Timestamp),
            Value::Timestamp(micros(0, 1, 1, 0, 0, 0, 0))
        );
        assert_eq!(
            one(r#""2024-01-02 01:04:05.5+00""#, ColumnType::TimestampTz),
            Value::TimestampTz(micros(2024, 1, 2, 1, 4, 5, 500_000))
        );
        assert_eq!(
            one(r#""2024-01-02 01:04:05-05:30""#, ColumnType::TimestampTz),
            Value::TimestampTz(micros(2024, 1, 2, 6, 34, 5, 0))
        );
        assert_eq!(
            one(r#""0001-01-01 00:00:00+00 BC""#, ColumnType::TimestampTz),
            Value::TimestampTz(micros(0, 1, 1, 0, 0, 0, 0))
        );
        assert_eq!(one(r#""{\"a\": 1}""#, ColumnType::Json), Value::Json("{\"a\": 1}".into()));
    }

    #[test]
    fn nan_and_infinity_keys_have_three_candidates() {
        let d = key_values("null", &ColumnType::Decimal { precision: None, scale: None }).unwrap();
        let names: Vec<String> = d.iter().map(Value::to_string).collect();
        assert_eq!(names, ["NaN", "Infinity", "-Infinity"]);
        assert_eq!(key_values("null", &ColumnType::Float64).unwrap().len(), 3);
        assert!(key_values("null", &ColumnType::I64).is_err());
    }

    #[test]
    fn bad_key_values_are_refused() {
        assert!(key_values(r#""infinity""#, &ColumnType::Date).is_err());
        assert!(key_values(r#""-infinity""#, &ColumnType::Timestamp).is_err());
        assert!(key_values(r#""0fz""#, &ColumnType::Bytes { max_bytes: None }).is_err());
        assert!(key_values("12", &ColumnType::TEXT).is_err());
        assert!(key_values("1.5", &ColumnType::I64).is_err());
    }

    #[test]
    fn lsns_and_filter_names() {
        assert_eq!(parse_lsn("0/80E9440"), Some(0x080E_9440));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("zz"), None);
        assert_eq!(filter_name("we,ird.na me"), r"we\,ird\.na\ me");
    }

    fn watch() -> Watch {
        let tables = vec![
            Watched { table: "orders".into(), key: vec!["id".into()], key_types: vec![ColumnType::I64] },
            Watched {
                table: "lines".into(),
                key: vec!["region".into(), "n".into()],
                key_types: vec![ColumnType::TEXT, ColumnType::I32],
            },
        ];
        Watch {
            schema: "public".into(),
            by_name: [("orders".to_string(), 0), ("lines".to_string(), 1), ("lines_p1".to_string(), 1)].into(),
            by_oid: [(100, 0), (200, 1)].into(),
            tables,
            ddl_table: "pontoon_ddl_j".into(),
            add_tables: String::new(),
            ddl: DdlWatch::EventTriggers,
        }
    }

    /// A BEGIN whose transaction id is its commit's LSN (low half).
    fn begin(end: &str) -> String {
        let xid = parse_lsn(end).unwrap() as u32;
        format!(r#"{{"action":"B","xid":{xid},"timestamp":"2024-01-02 03:04:05.5+00","lsn":"0/1","nextlsn":"{end}"}}"#)
    }

    fn commit(end: &str) -> String {
        format!(r#"{{"action":"C","timestamp":"2024-01-02 03:04:05.5+00","lsn":"0/1","nextlsn":"{end}"}}"#)
    }

    fn insert(table: &str, id: i64) -> String {
        format!(
            r#"{{"action":"I","lsn":"0/1","schema":"public","table":"{table}","columns":[{{"name":"id","value":{id}}},{{"name":"note","value":"x"}}]}}"#
        )
    }

    fn run(rows: &[String], from: u64, max: usize) -> Assembled {
        let watch = watch();
        let mut a = Assembler::new(&watch, from, max);
        for row in rows {
            a.push(row).unwrap();
        }
        a.finish()
    }

    fn keys(a: &Assembled) -> Vec<(String, Vec<Value>, ChangeOp)> {
        a.events.iter().map(|e| (e.table.clone(), e.key.clone(), e.op)).collect()
    }

    #[test]
    fn transactions_at_or_before_from_are_skipped() {
        let rows =
            [begin("0/10"), insert("orders", 1), commit("0/10"), begin("0/20"), insert("orders", 2), commit("0/20")];
        let a = run(&rows, 0x10, 100);
        assert_eq!(keys(&a), [("orders".to_string(), vec![Value::Int(2)], ChangeOp::Insert)]);
        assert_eq!(a.position, 0x20);
        assert_eq!(a.committed_at_micros, Some(micros(2024, 1, 2, 3, 4, 5, 500_000)));
        assert_eq!(a.xids, [0x20], "only the delivered transaction is waited for");
        let a = run(&rows, 0x20, 100);
        assert!(a.events.is_empty() && a.xids.is_empty());
        assert_eq!(a.position, 0x20);
        // a skipped transaction's changes are not even parsed (a replay may be long)
        let unparsable = r#"{"action":"I","columns":[oops"#.to_string();
        let a = run(&[begin("0/10"), unparsable.clone(), commit("0/10"), begin("0/20"), commit("0/20")], 0x10, 100);
        assert_eq!(a.position, 0x20);
        let w = watch();
        let mut delivered = Assembler::new(&w, 0x10, 100);
        delivered.push(&begin("0/20")).unwrap();
        assert!(delivered.push(&unparsable).is_err(), "a delivered transaction's change is parsed");
    }

    #[test]
    fn updates_deletes_and_partitions() {
        let rows = [
            begin("0/30"),
            r#"{"action":"U","schema":"public","table":"lines_p1","columns":[{"name":"region","value":"eu"},{"name":"n","value":2},{"name":"q","value":1.5}],"identity":[{"name":"region","value":"eu"},{"name":"n","value":1}]}"#.to_string(),
            r#"{"action":"D","schema":"public","table":"orders","identity":[{"name":"id","value":7}]}"#.to_string(),
            r#"{"action":"I","schema":"other","table":"orders","columns":[{"name":"id","value":8}]}"#.to_string(),
            r#"{"action":"M","transactional":true,"prefix":"x","content":"y"}"#.to_string(),
            commit("0/30"),
        ];
        let a = run(&rows, 0, 100);
        let eu = |n| vec![Value::Text("eu".into()), Value::Int(n)];
        assert_eq!(
            keys(&a),
            [
                ("lines".to_string(), eu(1), ChangeOp::Delete),
                ("lines".to_string(), eu(2), ChangeOp::Update),
                ("orders".to_string(), vec![Value::Int(7)], ChangeOp::Delete),
            ]
        );
        assert_eq!(a.position, 0x30);
    }

    #[test]
    fn ddl_stops_the_batch_before_its_transaction() {
        let ddl = r#"{"action":"I","schema":"public","table":"pontoon_ddl_j","columns":[{"name":"id","value":1},{"name":"command_tag","value":"ALTER TABLE"},{"name":"object_type","value":"table"},{"name":"schema_name","value":"public"},{"name":"table_name","value":"orders"},{"name":"relid","value":100},{"name":"statement","value":"alter table orders add column x int"}]}"#;
        let rows = [
            begin("0/10"),
            insert("orders", 1),
            commit("0/10"),
            begin("0/20"),
            insert("orders", 2),
            ddl.to_string(),
            insert("orders", 3),
            commit("0/20"),
            begin("0/30"),
            insert("orders", 4),
            commit("0/30"),
        ];
        let a = run(&rows, 0, 100);
        let ids: Vec<Vec<Value>> = a.events.iter().map(|e| e.key.clone()).collect();
        assert_eq!(ids, [vec![Value::Int(1)], vec![Value::Int(2)]]);
        assert_eq!(a.position, 0x10);
        let d = a.ddl.unwrap();
        assert_eq!((d.table.as_str(), d.statement.as_str()), ("orders", "alter table orders add column x int"));
        assert_eq!(d.position, Position::PgLsn { lsn: 0x20 });

        // a DDL on another table, and a truncate
        let other = ddl.replace(r#""value":100"#, r#""value":999"#).replace(r#""value":"orders""#, r#""value":"x""#);
        let rows = [
            begin("0/20"),
            other,
            commit("0/20"),
            begin("0/30"),
            r#"{"action":"T","schema":"public","table":"lines_p1"}"#.to_string(),
            commit("0/30"),
        ];
        let a = run(&rows, 0, 100);
        assert_eq!(a.position, 0x20);
        let d = a.ddl.unwrap();
        assert_eq!((d.table.as_str(), d.statement.as_str()), ("lines", "TRUNCATE lines"));
    }

    #[test]
    fn a_batch_ends_after_the_transaction_that_fills_it() {
        let mut rows = Vec::new();
        for i in 1..=5 {
            let end = format!("0/{i}0");
            rows.extend([begin(&end), insert("orders", i), insert("orders", i + 100), commit(&end)]);
        }
        let a = run(&rows, 0, 3);
        assert_eq!(a.events.len(), 4);
        assert_eq!(a.position, 0x20);
    }
}
