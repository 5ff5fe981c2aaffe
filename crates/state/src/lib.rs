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

use pontoon_core::{Error, ErrorKind, KeyRange, Result, Value};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

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
             );",
        )
        .map_err(db_err)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
