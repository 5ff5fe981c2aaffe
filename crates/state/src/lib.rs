//! pontoon-state: the job's state store, the single source of truth for progress.
//!
//! Concepts: a table's copy is split into **chunks** (a key range, optionally inside
//! one partition) planned once and stored, so a resumed run reads exactly the same
//! ranges. A chunk is marked done only after the target committed its rows
//! (checkpoint after commit); a crash in between makes the chunk run again, which is
//! harmless because target writes are idempotent. The store is an SQLite file in WAL
//! mode with `synchronous = NORMAL`: a checkpoint that returned survives `kill -9`;
//! after a power loss the last checkpoints may be gone, which only makes their
//! chunks copy again (idempotently). A chunk is never marked done before its rows
//! are committed, because the checkpoint is written after the target's commit. No
//! secret is ever written here.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Mutex;

use pontoon_core::{Error, ErrorKind, KeyRange, Position, Result, Value};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

mod verify;

pub use verify::{CHANGES_SCOPE, StoredDiff, VerifiedChunk, VerifyRunRecord};

const SCHEMA_VERSION: i64 = 1;

/// The lifecycle of one table's copy. Transitions: `Planned -> Copying -> Copied`;
/// `Copying -> Failed` on a permanent error; `Failed -> Copying` when run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    Planned,
    Copying,
    Copied,
    Failed,
}

impl TableState {
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Planned => "planned",
            TableState::Copying => "copying",
            TableState::Copied => "copied",
            TableState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<TableState> {
        Ok(match s {
            "planned" => TableState::Planned,
            "copying" => TableState::Copying,
            "copied" => TableState::Copied,
            "failed" => TableState::Failed,
            other => {
                return Err(state_err(format!("unknown table state `{other}` in the state store")));
            }
        })
    }
}

/// A chunk to plan: a key range, optionally inside one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPlan {
    pub partition: Option<Value>,
    pub range: KeyRange,
    /// Estimated rows (exact when planned by walking the key index).
    pub rows_estimate: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub seq: u64,
    pub partition: Option<Value>,
    pub range: KeyRange,
    pub rows_estimate: u64,
    pub done: bool,
    /// Rows written by the run that finished the chunk.
    pub rows: u64,
    /// How many times a run started this chunk.
    pub attempts: u64,
    /// How many times a run checkpointed this chunk (more than one would mean a
    /// finished chunk was copied again).
    pub completions: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRecord {
    pub name: String,
    pub target: String,
    pub state: TableState,
    /// A fingerprint of what is copied (mapping, filter, key): a resume refuses a
    /// job whose table definition changed since the chunks were planned.
    pub fingerprint: String,
    pub error: Option<String>,
    /// Every chunk is planned (the key walk reached the end of the table).
    pub planned: bool,
}

/// Progress of one partition (or of the whole table when it has no partitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionProgress {
    pub partition: Option<Value>,
    pub chunks: u64,
    pub chunks_done: u64,
    pub rows_estimate: u64,
    pub rows_copied: u64,
}

/// Held while a run works on a job (`copy`, `run`): a second pontoon on the same
/// state store is refused instead of racing the first. Released on drop, and by
/// the OS when the process dies (`kill -9` leaves no stale lock).
#[derive(Debug)]
pub struct JobLock {
    _file: std::fs::File,
}

impl JobLock {
    /// Takes the lock beside the state store (`<state>.lock`): one pontoon copies or
    /// syncs a job at a time.
    pub fn acquire(state_path: &Path) -> Result<JobLock> {
        JobLock::take(
            format!("{}.lock", state_path.display()),
            "another pontoon is running this job (it holds {}); stop it first, or wait for it to finish",
        )
    }

    /// Takes the verify lock (`<state>.verify.lock`): one `pontoon verify` of a job at
    /// a time (a verify may run beside the job's sync).
    pub fn acquire_verify(state_path: &Path) -> Result<JobLock> {
        JobLock::take(
            format!("{}.verify.lock", state_path.display()),
            "another pontoon verify of this job is running (it holds {}); wait for it to finish",
        )
    }

    /// `busy` is the message when the lock is held, `{}` standing for the lock's path.
    fn take(path: String, busy: &str) -> Result<JobLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| state_err(format!("cannot open the job lock {path}")).with_source(e))?;
        match file.try_lock() {
            Ok(()) => Ok(JobLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(ErrorKind::Config, busy.replace("{}", &path))),
            Err(std::fs::TryLockError::Error(e)) => Err(state_err(format!("cannot lock {path}")).with_source(e)),
        }
    }
}

#[derive(Debug)]
pub struct StateStore {
    conn: Mutex<Connection>,
}

fn state_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::State, message)
}

fn db_err(e: rusqlite::Error) -> Error {
    state_err("state store error").with_source(e)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| state_err("cannot encode state").with_source(e))
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| state_err("corrupt state store entry").with_source(e))
}

impl StateStore {
    /// Opens (creating if needed) the state store at `path`.
    pub fn open(path: &Path) -> Result<StateStore> {
        let conn = Connection::open(path)
            .map_err(|e| state_err(format!("cannot open the state store {}", path.display())).with_source(e))?;
        StateStore::init(conn)
    }

    /// An in-memory store, for tests of the engine's logic.
    pub fn in_memory() -> Result<StateStore> {
        StateStore::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> Result<StateStore> {
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        // NORMAL, not FULL: losing the newest checkpoints to a power cut only means
        // copying their chunks again; an fsync per chunk on a slow disk stalls the copy
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tables (
                 name TEXT PRIMARY KEY,
                 target TEXT NOT NULL,
                 state TEXT NOT NULL,
                 fingerprint TEXT NOT NULL,
                 planned INTEGER NOT NULL DEFAULT 0,
                 error TEXT,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );
             CREATE TABLE IF NOT EXISTS chunks (
                 table_name TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 partition TEXT,
                 range TEXT NOT NULL,
                 rows_estimate INTEGER NOT NULL,
                 done INTEGER NOT NULL DEFAULT 0,
                 rows INTEGER NOT NULL DEFAULT 0,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 completions INTEGER NOT NULL DEFAULT 0,
                 finished_at TEXT,
                 PRIMARY KEY (table_name, seq)
             );
             CREATE TABLE IF NOT EXISTS sync (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 mode TEXT NOT NULL,
                 start_position TEXT NOT NULL,
                 position TEXT NOT NULL,
                 events INTEGER NOT NULL DEFAULT 0,
                 batches INTEGER NOT NULL DEFAULT 0,
                 last_commit_micros INTEGER,
                 behind_events INTEGER,
                 behind_bytes INTEGER,
                 lag_seconds REAL,
                 state TEXT NOT NULL DEFAULT 'running',
                 error TEXT,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );
             CREATE TABLE IF NOT EXISTS sync_batches (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 from_position TEXT NOT NULL,
                 to_position TEXT NOT NULL,
                 events INTEGER NOT NULL,
                 keys INTEGER NOT NULL,
                 committed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );",
        )
        .map_err(db_err)?;
        conn.execute_batch(verify::SCHEMA).map_err(db_err)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(db_err)?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(state_err(format!(
                    "state store schema version {v} is not supported by this pontoon (expects {SCHEMA_VERSION})"
                )));
            }
        }
        Ok(StateStore { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| state_err("state store lock poisoned"))?;
        f(&mut conn).map_err(db_err)
    }

    pub fn table(&self, name: &str) -> Result<Option<TableRecord>> {
        Ok(self.select_tables("WHERE name = ?1", [name])?.pop())
    }

    pub fn tables(&self) -> Result<Vec<TableRecord>> {
        self.select_tables("ORDER BY name", [])
    }

    fn select_tables<P: rusqlite::Params>(&self, rest: &str, params: P) -> Result<Vec<TableRecord>> {
        let sql = format!("SELECT name, target, state, fingerprint, error, planned FROM tables {rest}");
        let rows = self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(name, target, state, fingerprint, error, planned)| {
                Ok(TableRecord { name, target, state: TableState::parse(&state)?, fingerprint, error, planned })
            })
            .collect()
    }

    /// Records a table whose chunks are about to be planned. Fails if it exists.
    pub fn begin_table(&self, name: &str, target: &str, fingerprint: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO tables (name, target, state, fingerprint) VALUES (?1, ?2, 'planned', ?3)",
                params![name, target, fingerprint],
            )
        })?;
        Ok(())
    }

    /// Appends planned chunks (numbered after the existing ones) and, with
    /// `planning_done`, marks the table fully planned, in one transaction. Returns the
    /// new chunks' records.
    pub fn add_chunks(&self, name: &str, chunks: &[ChunkPlan], planning_done: bool) -> Result<Vec<ChunkRecord>> {
        let encoded: Vec<(Option<String>, String, u64)> = chunks
            .iter()
            .map(|c| Ok((c.partition.as_ref().map(to_json).transpose()?, to_json(&c.range)?, c.rows_estimate)))
            .collect::<Result<_>>()?;
        let first: i64 = self.with(|c| {
            let tx = c.transaction()?;
            let first: i64 =
                tx.query_row("SELECT coalesce(max(seq) + 1, 0) FROM chunks WHERE table_name = ?1", [name], |r| {
                    r.get(0)
                })?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO chunks (table_name, seq, partition, range, rows_estimate) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (i, (partition, range, est)) in encoded.iter().enumerate() {
                    st.execute(params![name, first + i as i64, partition, range, *est as i64])?;
                }
            }
            if planning_done {
                tx.execute("UPDATE tables SET planned = 1 WHERE name = ?1", [name])?;
            }
            tx.commit()?;
            Ok(first)
        })?;
        Ok(chunks
            .iter()
            .enumerate()
            .map(|(i, c)| ChunkRecord {
                seq: (first + i as i64) as u64,
                partition: c.partition.clone(),
                range: c.range.clone(),
                rows_estimate: c.rows_estimate,
                done: false,
                rows: 0,
                attempts: 0,
                completions: 0,
            })
            .collect())
    }

    /// Records a table and all its chunks at once (`begin_table` + `add_chunks`).
    pub fn plan_table(&self, name: &str, target: &str, fingerprint: &str, chunks: &[ChunkPlan]) -> Result<()> {
        self.begin_table(name, target, fingerprint)?;
        self.add_chunks(name, chunks, true)?;
        Ok(())
    }

    pub fn set_table_state(&self, name: &str, state: TableState, error: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tables SET state = ?2, error = ?3, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
                params![name, state.as_str(), error],
            )
        })?;
        Ok(())
    }

    /// The table's chunks in planned order.
    pub fn chunks(&self, name: &str) -> Result<Vec<ChunkRecord>> {
        let rows = self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, partition, range, rows_estimate, done, rows, attempts, completions
                 FROM chunks WHERE table_name = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map([name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(seq, partition, range, est, done, rows, attempts, completions)| {
                Ok(ChunkRecord {
                    seq: seq as u64,
                    partition: partition.as_deref().map(from_json).transpose()?,
                    range: from_json(&range)?,
                    rows_estimate: est as u64,
                    done,
                    rows: rows as u64,
                    attempts: attempts as u64,
                    completions: completions as u64,
                })
            })
            .collect()
    }

    /// Notes that a run starts copying a chunk.
    pub fn start_chunk(&self, name: &str, seq: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE chunks SET attempts = attempts + 1 WHERE table_name = ?1 AND seq = ?2",
                params![name, seq as i64],
            )
        })?;
        Ok(())
    }

    /// The checkpoint: called only after the target committed the chunk's rows.
    pub fn finish_chunk(&self, name: &str, seq: u64, rows: u64) -> Result<()> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE chunks SET done = 1, rows = ?3, completions = completions + 1,
                        finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE table_name = ?1 AND seq = ?2",
                params![name, seq as i64, rows as i64],
            )
        })?;
        if n != 1 {
            return Err(state_err(format!("chunk {seq} of table {name} is not in the state store")));
        }
        Ok(())
    }

    /// Progress per partition (one entry with `partition: None` for an unpartitioned
    /// table), in planned order.
    pub fn progress(&self, name: &str) -> Result<Vec<PartitionProgress>> {
        let mut out: Vec<PartitionProgress> = Vec::new();
        for c in self.chunks(name)? {
            let idx = match out.iter().position(|p| p.partition == c.partition) {
                Some(i) => i,
                None => {
                    out.push(PartitionProgress {
                        partition: c.partition.clone(),
                        chunks: 0,
                        chunks_done: 0,
                        rows_estimate: 0,
                        rows_copied: 0,
                    });
                    out.len() - 1
                }
            };
            let p = &mut out[idx];
            p.chunks += 1;
            p.rows_estimate += c.rows_estimate;
            if c.done {
                p.chunks_done += 1;
                p.rows_copied += c.rows;
            }
        }
        Ok(out)
    }
}

/// Where the sync stands (one per job).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncRecord {
    /// `native` or `triggers`.
    pub mode: String,
    /// P0: where capture started, before the first chunk was read.
    pub start_position: Position,
    /// Everything up to here is applied to the target and committed.
    pub position: Position,
    pub events: u64,
    pub batches: u64,
    /// Commit time on the source of the newest applied change (microseconds since
    /// the epoch), when the capture reports it.
    pub last_commit_micros: Option<i64>,
    pub lag: SyncLag,
    /// `running`, `stopped` or `failed`.
    pub state: String,
    pub error: Option<String>,
    /// When the lag was last measured or the state last changed (a checkpoint does
    /// not count): `lag` holds as of this moment, which `pontoon verify` relies on.
    pub updated_at: String,
}

/// How far the target is behind the source, as last measured by the syncer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SyncLag {
    pub events: Option<u64>,
    pub bytes: Option<u64>,
    pub seconds: Option<f64>,
}

/// One applied batch: the log that shows positions only ever moved forward.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRecord {
    pub from: Position,
    pub to: Position,
    pub events: u64,
    pub keys: u64,
}

/// Applied batches kept in `sync_batches` (older ones are trimmed).
const BATCH_LOG_KEEP: i64 = 100_000;

impl StateStore {
    /// The sync's record, if a sync was ever started with this store.
    pub fn sync(&self) -> Result<Option<SyncRecord>> {
        let row = self.with(|c| {
            c.query_row(
                "SELECT mode, start_position, position, events, batches, last_commit_micros, behind_events,
                        behind_bytes, lag_seconds, state, error, updated_at FROM sync WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<i64>>(7)?, r.get::<_, Option<f64>>(8)?),
                        r.get::<_, String>(9)?,
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, String>(11)?,
                    ))
                },
            )
            .optional()
        })?;
        let Some((mode, start, pos, events, batches, last_commit_micros, lag, state, error, updated_at)) = row else {
            return Ok(None);
        };
        Ok(Some(SyncRecord {
            mode,
            start_position: parse_position(&start)?,
            position: parse_position(&pos)?,
            events: events as u64,
            batches: batches as u64,
            last_commit_micros,
            lag: SyncLag { events: lag.0.map(|v| v as u64), bytes: lag.1.map(|v| v as u64), seconds: lag.2 },
            state,
            error,
            updated_at,
        }))
    }

    /// Records P0 for a new sync. Fails if a sync is already recorded: a resumed run
    /// continues from the recorded position, never from a new P0 (which could skip
    /// changes made while pontoon was stopped).
    pub fn begin_sync(&self, mode: &str, start: &Position) -> Result<()> {
        let start = start.to_string();
        self.with(|c| {
            c.execute(
                "INSERT INTO sync (id, mode, start_position, position) VALUES (1, ?1, ?2, ?2)",
                params![mode, start],
            )
        })?;
        Ok(())
    }

    /// The sync checkpoint, called only after the target committed the batch: moves
    /// the position from `from` to `to` (refusing to move it backward or from
    /// anywhere but the recorded position) and logs the batch, in one transaction.
    pub fn checkpoint_sync(
        &self,
        from: &Position,
        to: &Position,
        events: u64,
        keys: u64,
        last_commit_micros: Option<i64>,
    ) -> Result<()> {
        let current = self.sync()?.ok_or_else(|| state_err("no sync is recorded in the state store"))?.position;
        if &current != from {
            return Err(state_err(format!("sync checkpoint from {from}, but the state store is at {current}")));
        }
        let mut moved = current.clone();
        moved.advance_to(to.clone())?;
        let (from, to) = (from.to_string(), to.to_string());
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE sync SET position = ?1, events = events + ?2, batches = batches + 1,
                        last_commit_micros = coalesce(?3, last_commit_micros) WHERE id = 1",
                params![to, events as i64, last_commit_micros],
            )?;
            let id = tx.query_row(
                "INSERT INTO sync_batches (from_position, to_position, events, keys) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                params![from, to, events as i64, keys as i64],
                |r| r.get::<_, i64>(0),
            )?;
            if id % 1000 == 0 {
                tx.execute("DELETE FROM sync_batches WHERE id <= ?1", [id - BATCH_LOG_KEEP])?;
            }
            tx.commit()
        })?;
        Ok(())
    }

    /// The syncer's latest view of the lag (not a checkpoint).
    pub fn set_sync_lag(&self, lag: &SyncLag) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sync SET behind_events = ?1, behind_bytes = ?2, lag_seconds = ?3,
                        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1",
                params![lag.events.map(|v| v as i64), lag.bytes.map(|v| v as i64), lag.seconds],
            )
        })?;
        Ok(())
    }

    /// `running`, `stopped` or `failed` (with the error). A sync that starts running
    /// forgets the lag of the run before: it is unknown until measured.
    pub fn set_sync_state(&self, state: &str, error: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sync SET state = ?1, error = ?2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        behind_events = CASE WHEN ?1 = 'running' THEN NULL ELSE behind_events END,
                        behind_bytes = CASE WHEN ?1 = 'running' THEN NULL ELSE behind_bytes END,
                        lag_seconds = CASE WHEN ?1 = 'running' THEN NULL ELSE lag_seconds END
                 WHERE id = 1",
                params![state, error],
            )
        })?;
        Ok(())
    }

    /// The log of applied batches, oldest first.
    pub fn sync_batches(&self) -> Result<Vec<BatchRecord>> {
        let rows = self.with(|c| {
            let mut st = c.prepare("SELECT from_position, to_position, events, keys FROM sync_batches ORDER BY id")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(f, t, events, keys)| {
                Ok(BatchRecord {
                    from: parse_position(&f)?,
                    to: parse_position(&t)?,
                    events: events as u64,
                    keys: keys as u64,
                })
            })
            .collect()
    }
}

fn parse_position(s: &str) -> Result<Position> {
    s.parse::<Position>().map_err(|e| state_err(format!("corrupt sync position in the state store: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_of_a_job_is_refused_while_the_first_holds_the_lock() {
        let dir = std::env::temp_dir().join(format!("pontoon-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.pontoon.db");
        let first = JobLock::acquire(&path).unwrap();
        let e = JobLock::acquire(&path).unwrap_err();
        assert!(e.to_string().contains("another pontoon is running this job"), "{e}");
        drop(first);
        JobLock::acquire(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sync_checkpoints_only_move_forward() {
        let s = StateStore::in_memory().unwrap();
        assert!(s.sync().unwrap().is_none());
        let p0 = Position::TriggerSeq { seq: 5 };
        s.begin_sync("triggers", &p0).unwrap();
        assert!(s.begin_sync("triggers", &Position::TriggerSeq { seq: 9 }).is_err(), "P0 is recorded once");
        let p1 = Position::TriggerSeq { seq: 12 };
        s.checkpoint_sync(&p0, &p1, 7, 4, Some(1_000)).unwrap();
        let back = s.checkpoint_sync(&p1, &Position::TriggerSeq { seq: 11 }, 1, 1, None).unwrap_err();
        assert!(back.to_string().contains("backward"), "{back}");
        let stale = s.checkpoint_sync(&p0, &Position::TriggerSeq { seq: 20 }, 1, 1, None).unwrap_err();
        assert!(stale.to_string().contains("state store is at trigger:12"), "{stale}");
        s.set_sync_lag(&SyncLag { events: Some(3), bytes: None, seconds: Some(0.5) }).unwrap();
        let r = s.sync().unwrap().unwrap();
        assert_eq!((r.start_position, r.position.clone(), r.events, r.batches), (p0.clone(), p1.clone(), 7, 1));
        assert_eq!((r.last_commit_micros, r.lag.events, r.lag.seconds), (Some(1_000), Some(3), Some(0.5)));
        assert_eq!(
            s.sync_batches().unwrap(),
            vec![BatchRecord { from: p0, to: p1, events: 7, keys: 4 }],
            "only the committed checkpoint is logged"
        );
    }

    fn range(a: Option<i64>, b: Option<i64>) -> KeyRange {
        KeyRange { after: a.map(|v| vec![Value::Int(v)]), upto: b.map(|v| vec![Value::Int(v)]) }
    }

    #[test]
    fn chunks_round_trip_and_checkpoint() {
        let s = StateStore::in_memory().unwrap();
        let plan = vec![
            ChunkPlan { partition: Some(Value::Text("eu".into())), range: range(None, Some(0)), rows_estimate: 10 },
            ChunkPlan { partition: Some(Value::Text("eu".into())), range: range(Some(0), None), rows_estimate: 5 },
            ChunkPlan { partition: Some(Value::Null), range: KeyRange::ALL, rows_estimate: 1 },
        ];
        s.plan_table("orders", "orders_v2", "fp1", &plan).unwrap();
        assert!(s.plan_table("orders", "orders_v2", "fp1", &plan).is_err(), "planning twice must fail");
        assert!(s.table("orders").unwrap().unwrap().planned);
        let chunks = s.chunks("orders").unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].range, range(Some(0), None));
        assert_eq!(chunks[2].partition, Some(Value::Null));
        s.start_chunk("orders", 1).unwrap();
        s.finish_chunk("orders", 1, 5).unwrap();
        let chunks = s.chunks("orders").unwrap();
        assert!(chunks[1].done && !chunks[0].done);
        assert_eq!((chunks[1].attempts, chunks[1].completions, chunks[1].rows), (1, 1, 5));
        let p = s.progress("orders").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].chunks, p[0].chunks_done, p[0].rows_copied, p[0].rows_estimate), (2, 1, 5, 15));
        s.set_table_state("orders", TableState::Copied, None).unwrap();
        assert_eq!(s.table("orders").unwrap().unwrap().state, TableState::Copied);
    }

    #[test]
    fn chunks_are_planned_incrementally() {
        let s = StateStore::in_memory().unwrap();
        s.begin_table("t", "t", "fp").unwrap();
        let first = ChunkPlan { partition: None, range: range(None, Some(10)), rows_estimate: 10 };
        let a = s.add_chunks("t", &[first], false).unwrap();
        assert_eq!(a[0].seq, 0);
        assert!(!s.table("t").unwrap().unwrap().planned);
        let rest = [
            ChunkPlan { partition: None, range: range(Some(10), Some(20)), rows_estimate: 10 },
            ChunkPlan { partition: None, range: range(Some(20), None), rows_estimate: 1 },
        ];
        let b = s.add_chunks("t", &rest, true).unwrap();
        assert_eq!(b.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(s.table("t").unwrap().unwrap().planned);
        assert_eq!(s.chunks("t").unwrap(), [a, b].concat());
    }

    #[test]
    fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("pontoon-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        {
            let s = StateStore::open(&path).unwrap();
            s.plan_table("t", "t", "fp", &[ChunkPlan { partition: None, range: KeyRange::ALL, rows_estimate: 3 }])
                .unwrap();
            s.finish_chunk("t", 0, 3).unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        assert!(s.chunks("t").unwrap()[0].done);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
