//! What `pontoon verify` keeps: runs, the chunks each run compared (so an interrupted
//! verify continues after its last compared chunk) and the differences it found,
//! per repair round. Differences are stored by key, kind and column names only; the
//! values go to the report file, never here.

use pontoon_core::{KeyRange, Result, Value};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{StateStore, from_json, to_json};

pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS verify_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'running',
        rows INTEGER NOT NULL DEFAULT 0,
        differences INTEGER,
        rounds INTEGER NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        finished_at TEXT
    );
    CREATE TABLE IF NOT EXISTS verify_chunks (
        run INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        range TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        rows INTEGER NOT NULL DEFAULT 0,
        differences INTEGER NOT NULL DEFAULT 0,
        fast INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run, table_name, seq)
    );
    CREATE TABLE IF NOT EXISTS verify_diffs (
        run INTEGER NOT NULL,
        round INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        columns TEXT NOT NULL,
        found_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE INDEX IF NOT EXISTS verify_diffs_run ON verify_diffs (run, round);";

/// The scope of the one verify run that collects incremental verify's differences
/// (keys the sync applied, checked afterwards); it never finishes.
pub const CHANGES_SCOPE: &str = "changes applied by the sync";

/// One difference as the state store keeps it: which row (source table, key in the
/// source key's order), what kind (`missing`, `extra`, `changed`) and, for
/// `changed`, the target columns that differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDiff {
    pub table: String,
    pub key: Vec<Value>,
    pub kind: String,
    pub columns: Vec<String>,
}

/// A chunk of a verify run: planned (its range stored before it is compared, so a
/// resumed run compares exactly the ranges planned) and then compared (`done`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedChunk {
    pub seq: u64,
    pub range: KeyRange,
    pub done: bool,
    pub rows: u64,
    pub differences: u64,
    /// Settled by the databases' checksums alone.
    pub fast: bool,
}

/// A verify run as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyRunRecord {
    pub id: i64,
    pub scope: String,
    /// `running` (interrupted or in progress) or `done`.
    pub state: String,
    pub rows: u64,
    /// Differences left after the last round; `None` while running.
    pub differences: Option<u64>,
    pub rounds: u32,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl StateStore {
    /// The unfinished verify run of exactly this scope (to continue it), or a new one.
    /// Returns the run id and whether it continues an earlier one.
    pub fn open_verify_run(&self, scope: &str) -> Result<(i64, bool)> {
        self.with(|c| {
            let tx = c.transaction()?;
            let last: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, state FROM verify_runs WHERE scope = ?1 ORDER BY id DESC LIMIT 1",
                    [scope],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let out = match last {
                Some((id, state)) if state == "running" => (id, true),
                _ => {
                    tx.execute("INSERT INTO verify_runs (scope) VALUES (?1)", [scope])?;
                    (tx.last_insert_rowid(), false)
                }
            };
            tx.commit()?;
            Ok(out)
        })
    }

    /// The chunks of `table` that run `run` has planned (compared or not), in order.
    pub fn verified_chunks(&self, run: i64, table: &str) -> Result<Vec<VerifiedChunk>> {
        let rows = self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, range, done, rows, differences, fast FROM verify_chunks \
                 WHERE run = ?1 AND table_name = ?2 ORDER BY seq",
            )?;
            let rows = st.query_map(params![run, table], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get(5)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(seq, range, done, rows, differences, fast)| {
                Ok(VerifiedChunk {
                    seq: seq as u64,
                    range: from_json(&range)?,
                    done,
                    rows: rows as u64,
                    differences: differences as u64,
                    fast,
                })
            })
            .collect()
    }

    /// Stores planned chunks (not yet compared) before they are compared.
    pub fn plan_verify_chunks(&self, run: i64, table: &str, chunks: &[(u64, KeyRange)]) -> Result<()> {
        let encoded = chunks.iter().map(|(seq, r)| Ok((*seq as i64, to_json(r)?))).collect::<Result<Vec<_>>>()?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st =
                    tx.prepare("INSERT INTO verify_chunks (run, table_name, seq, range) VALUES (?1, ?2, ?3, ?4)")?;
                for (seq, range) in &encoded {
                    st.execute(params![run, table, seq, range])?;
                }
            }
            tx.commit()
        })
    }

    /// Records a compared chunk (planned before) and the differences found in it
    /// (round 0), in one transaction: a resumed run neither compares it again nor
    /// loses its differences. A chunk already compared is refused.
    pub fn verify_chunk_done(&self, run: i64, table: &str, chunk: &VerifiedChunk, diffs: &[StoredDiff]) -> Result<()> {
        let encoded = encode_diffs(diffs)?;
        let updated = self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE verify_chunks SET done = 1, rows = ?4, differences = ?5, fast = ?6 \
                 WHERE run = ?1 AND table_name = ?2 AND seq = ?3 AND done = 0",
                params![run, table, chunk.seq as i64, chunk.rows as i64, chunk.differences as i64, chunk.fast],
            )?;
            if n == 1 {
                insert_diffs(&tx, run, 0, &encoded)?;
                tx.execute("UPDATE verify_runs SET rows = rows + ?2 WHERE id = ?1", params![run, chunk.rows as i64])?;
                tx.commit()?;
            }
            Ok(n)
        })?;
        if updated != 1 {
            return Err(crate::state_err(format!(
                "verify chunk {} of table {table} was not planned or was already compared",
                chunk.seq
            )));
        }
        Ok(())
    }

    /// Records differences found outside a chunk (incremental verify: keys the sync
    /// applied, checked afterwards), as found (round 0).
    pub fn record_verify_diffs(&self, run: i64, diffs: &[StoredDiff]) -> Result<()> {
        let encoded = encode_diffs(diffs)?;
        self.with(|c| {
            let tx = c.transaction()?;
            insert_diffs(&tx, run, 0, &encoded)?;
            tx.commit()
        })
    }

    /// Records what is left after repair round `round` (1, 2, ...).
    pub fn verify_round_done(&self, run: i64, round: u32, diffs: &[StoredDiff]) -> Result<()> {
        let encoded = encode_diffs(diffs)?;
        self.with(|c| {
            let tx = c.transaction()?;
            insert_diffs(&tx, run, round, &encoded)?;
            tx.execute("UPDATE verify_runs SET rounds = max(rounds, ?2) WHERE id = ?1", params![run, round])?;
            tx.commit()
        })
    }

    /// The differences of a run's latest round (round 0: as found).
    pub fn verify_diffs(&self, run: i64) -> Result<Vec<StoredDiff>> {
        self.diffs_of_round(run, "(SELECT rounds FROM verify_runs WHERE id = ?1)")
    }

    /// The differences a run found before any repair.
    pub fn verify_diffs_found(&self, run: i64) -> Result<Vec<StoredDiff>> {
        self.diffs_of_round(run, "0")
    }

    fn diffs_of_round(&self, run: i64, round: &str) -> Result<Vec<StoredDiff>> {
        let rows = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT table_name, key, kind, columns FROM verify_diffs WHERE run = ?1 AND round = {round} ORDER BY rowid"
            ))?;
            let rows = st.query_map([run], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(table, key, kind, columns)| {
                Ok(StoredDiff { table, key: from_json(&key)?, kind, columns: from_json(&columns)? })
            })
            .collect()
    }

    /// Marks the run finished with the differences left.
    pub fn finish_verify_run(&self, run: i64, differences: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE verify_runs SET state = 'done', differences = ?2, \
                 finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                params![run, differences as i64],
            )
        })?;
        Ok(())
    }

    /// The newest `pontoon verify` run, if any (not incremental verify's).
    pub fn last_verify_run(&self) -> Result<Option<VerifyRunRecord>> {
        self.select_verify_run("WHERE scope <> ?1 ORDER BY id DESC LIMIT 1", [CHANGES_SCOPE])
    }

    /// The run of incremental verify, if `[verify] changes` was ever on.
    pub fn changes_verify_run(&self) -> Result<Option<VerifyRunRecord>> {
        self.select_verify_run("WHERE scope = ?1 ORDER BY id DESC LIMIT 1", [CHANGES_SCOPE])
    }

    pub fn verify_run(&self, id: i64) -> Result<Option<VerifyRunRecord>> {
        self.select_verify_run("WHERE id = ?1", [id])
    }

    fn select_verify_run(&self, tail: &str, params: impl rusqlite::Params) -> Result<Option<VerifyRunRecord>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT id, scope, state, rows, differences, rounds, started_at, finished_at FROM verify_runs {tail}"
                ),
                params,
                |r| {
                    Ok(VerifyRunRecord {
                        id: r.get(0)?,
                        scope: r.get(1)?,
                        state: r.get(2)?,
                        rows: r.get::<_, i64>(3)? as u64,
                        differences: r.get::<_, Option<i64>>(4)?.map(|d| d as u64),
                        rounds: r.get::<_, i64>(5)? as u32,
                        started_at: r.get(6)?,
                        finished_at: r.get(7)?,
                    })
                },
            )
            .optional()
        })
    }
}

type EncodedDiff<'d> = (&'d str, String, &'d str, String);

fn encode_diffs(diffs: &[StoredDiff]) -> Result<Vec<EncodedDiff<'_>>> {
    diffs.iter().map(|d| Ok((d.table.as_str(), to_json(&d.key)?, d.kind.as_str(), to_json(&d.columns)?))).collect()
}

fn insert_diffs(
    tx: &rusqlite::Transaction<'_>,
    run: i64,
    round: u32,
    diffs: &[EncodedDiff<'_>],
) -> rusqlite::Result<()> {
    let mut st = tx.prepare(
        "INSERT INTO verify_diffs (run, round, table_name, key, kind, columns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (table, key, kind, columns) in diffs {
        st.execute(params![run, round, table, key, kind, columns])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(key: i64, kind: &str) -> StoredDiff {
        StoredDiff { table: "t".into(), key: vec![Value::Int(key)], kind: kind.into(), columns: vec![] }
    }

    fn chunk(seq: u64, upto: i64, differences: u64) -> VerifiedChunk {
        VerifiedChunk {
            seq,
            range: KeyRange { after: None, upto: Some(vec![Value::Int(upto)]) },
            done: true,
            rows: 10,
            differences,
            fast: false,
        }
    }

    fn plan(s: &StateStore, run: i64, c: &VerifiedChunk) {
        s.plan_verify_chunks(run, "t", &[(c.seq, c.range.clone())]).unwrap();
    }

    #[test]
    fn an_interrupted_run_continues_with_its_chunks_and_differences() {
        let s = StateStore::in_memory().unwrap();
        let (run, resumed) = s.open_verify_run("all").unwrap();
        assert!(!resumed);
        plan(&s, run, &chunk(0, 10, 1));
        plan(&s, run, &chunk(1, 20, 0));
        s.verify_chunk_done(run, "t", &chunk(0, 10, 1), &[diff(3, "missing")]).unwrap();
        // the same scope continues the run; its chunk and difference are there
        assert_eq!(s.open_verify_run("all").unwrap(), (run, true));
        let undone = VerifiedChunk { done: false, rows: 0, ..chunk(1, 20, 0) };
        assert_eq!(s.verified_chunks(run, "t").unwrap(), vec![chunk(0, 10, 1), undone], "planned, compared or not");
        assert_eq!(s.verify_diffs(run).unwrap(), vec![diff(3, "missing")]);
        // a chunk is recorded once
        assert!(s.verify_chunk_done(run, "t", &chunk(0, 10, 1), &[]).is_err());
        assert_eq!(s.verify_diffs(run).unwrap().len(), 1, "the failed record added nothing");
        // another scope starts a new run
        let (other, resumed) = s.open_verify_run("table t").unwrap();
        assert!(!resumed && other != run);
    }

    #[test]
    fn repair_rounds_leave_the_latest_differences_and_a_finished_run_is_not_continued() {
        let s = StateStore::in_memory().unwrap();
        let (run, _) = s.open_verify_run("all").unwrap();
        plan(&s, run, &chunk(0, 10, 2));
        s.verify_chunk_done(run, "t", &chunk(0, 10, 2), &[diff(1, "changed"), diff(2, "extra")]).unwrap();
        s.verify_round_done(run, 1, &[diff(2, "extra")]).unwrap();
        assert_eq!(s.verify_diffs(run).unwrap(), vec![diff(2, "extra")]);
        assert_eq!(s.verify_diffs_found(run).unwrap().len(), 2, "what was found stays recorded");
        s.verify_round_done(run, 2, &[]).unwrap();
        assert!(s.verify_diffs(run).unwrap().is_empty());
        s.finish_verify_run(run, 0).unwrap();
        let last = s.last_verify_run().unwrap().unwrap();
        assert_eq!(
            (last.id, last.state.as_str(), last.rows, last.differences, last.rounds),
            (run, "done", 10, Some(0), 2)
        );
        let (next, resumed) = s.open_verify_run("all").unwrap();
        assert!(!resumed && next != run);
    }
}
