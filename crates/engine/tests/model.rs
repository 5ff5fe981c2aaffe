//! A model test of the online migration's one promise (DESIGN.md, "Correctness
//! model"): when the source is quiet and sync has drained, target == source through
//! the mapping, for every key. No lost update, no resurrected delete, no duplicate.
//!
//! The real engine (`run::start_capture`, `run::run`: planner, copy workers, syncer,
//! copy tracker, state store) runs against an in-memory fake database defined here:
//!
//! - the **source** holds two tables (`a` with a `where` filter, `b` partitioned by a
//!   nullable tenant column) and a trigger-style change log: every write appends
//!   `(seq, table, key, op)` in the same atomic step, once capture is installed;
//! - the **target** applies each `upsert`/`apply` call atomically (all rows or none);
//! - every fake I/O call takes a seeded-random time on the virtual clock before and
//!   after its atomic step (a read's snapshot is older than its return; a write may
//!   have committed when its caller is dropped), now and then a long one, plus a
//!   per-row transfer time (a bulk chunk is slow, the syncer's few keys are quick),
//!   and may fail with a transient error before or after that step (an unknown
//!   outcome), so the planner, the copy workers, the syncer and the application
//!   really interleave;
//! - an **application** task writes random inserts, updates and deletes (one to
//!   three rows per transaction across both tables, hot keys, deleted keys coming
//!   back, rows leaving and entering the filter and moving between partitions)
//!   while the migration runs, and goes on while the migration is down;
//! - **crashes**: the migration future is dropped after a random number of fake I/O
//!   steps (every task it spawned is aborted at its current await point, like
//!   `kill -9`), or stopped gracefully (the stop flag, as on Ctrl-C), then started
//!   again with the same state store and the same target, one to three times per
//!   case.
//!
//! The promise is checked at every quiet moment: when a run's copy is done, the
//! application is held until the sync has drained, and again after the application
//! has stopped and one last run has drained (checking early catches a stale write
//! before a later change to the same key hides it). Each check compares the target
//! with the source key by key, checks that the sync checkpoints form one chain from
//! P0 to the end of the change log without moving backward (across restarts), that
//! the source never released changes beyond the checkpoint, and that every chunk was
//! checkpointed exactly once, with ranges that cover each partition's key space.
//!
//! Each case runs on a current-thread runtime with a paused clock: a discrete-event
//! simulation in which idle waits (the syncer's idle read, the tracker's re-checks,
//! retry backoff) cost no real time, and which replays from the case's seed (nearly:
//! the engine's lag measurement reads the wall clock, but makes no call into the fake).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use pontoon_engine::copy::CopyContext;
use pontoon_engine::core::capture::{
    Capture, CaptureBatch, CaptureMode, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp,
};
use pontoon_engine::core::{
    Column, ColumnType, Connector, Engine, Error, ErrorKind, KeyRange, Limits, Position, Reader, Result, Row, ScanSpec,
    SelectExpr, TableSchema, Value, Writer,
};
use pontoon_engine::job::Job;
use pontoon_engine::progress::Progress;
use pontoon_engine::retry::RetryPolicy;
use pontoon_engine::run::{self, RunReport};
use pontoon_engine::state::StateStore;
use pontoon_engine::sync::{SyncProgress, Until};
use pontoon_engine::track::CopyTracker;
use proptest::prelude::*;
use tokio::sync::{Notify, oneshot, watch};

// ---------------------------------------------------------------------------------
// Seeded randomness: latencies, faults, crashes
// ---------------------------------------------------------------------------------

/// SplitMix64: small, seeded, good enough to pick latencies and rows.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Decides how long each fake I/O call takes (on the virtual clock), which ones
/// fail, and when the migration crashes.
#[derive(Debug)]
struct Chaos {
    inner: Mutex<ChaosState>,
}

#[derive(Debug)]
struct ChaosState {
    rng: Rng,
    /// Fake I/O steps so far (two per call: before and after its atomic step).
    ios: u64,
    /// Fires once `ios` reaches the number.
    crash_at: Option<(u64, oneshot::Sender<()>)>,
    /// Most milliseconds one step of a fake call takes (slow calls aside).
    max_latency_ms: u64,
    /// Microseconds to move one row (see `transfer`).
    row_micros: u64,
    /// Transient failures per thousand steps, once armed.
    fault_per_mille: u64,
    faults_armed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Chaos {
    fn new(seed: u64, max_latency_ms: u64, row_micros: u64, fault_per_mille: u64) -> Chaos {
        Chaos {
            inner: Mutex::new(ChaosState {
                rng: Rng(seed),
                ios: 0,
                crash_at: None,
                max_latency_ms,
                row_micros,
                fault_per_mille,
                faults_armed: false,
            }),
        }
    }

    /// One step of a fake I/O call: it takes a random time on the (paused, virtual)
    /// clock, now and then a long one (a lock wait, a slow round trip); zero is one
    /// scheduler turn.
    async fn pause(&self) {
        let millis = {
            let mut s = lock(&self.inner);
            s.ios += 1;
            let ios = s.ios;
            if s.crash_at.as_ref().is_some_and(|(at, _)| ios >= *at)
                && let Some((_, tx)) = s.crash_at.take()
            {
                let _ = tx.send(());
            }
            let max = s.max_latency_ms;
            if s.rng.chance(10) { 5 + s.rng.below(40) } else { s.rng.below(max + 1) }
        };
        if millis == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }

    /// Moving `rows` rows over the wire: a bulk chunk takes much longer than the
    /// syncer's few keys.
    async fn transfer(&self, rows: usize) {
        let micros = rows as u64 * lock(&self.inner).row_micros;
        if micros >= 500 {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
    }

    /// Maybe a transient error (connection lost, deadlock), which the engine retries.
    fn fault(&self, what: &str) -> Result<()> {
        let mut s = lock(&self.inner);
        let p = s.fault_per_mille;
        if s.faults_armed && s.rng.chance(p) {
            return Err(Error::new(ErrorKind::Transient, format!("injected fault in {what}")));
        }
        Ok(())
    }

    fn arm_faults(&self, on: bool) {
        lock(&self.inner).faults_armed = on;
    }

    fn crash_after(&self, steps: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut s = lock(&self.inner);
        s.crash_at = Some((s.ios + steps, tx));
        rx
    }
}

// ---------------------------------------------------------------------------------
// The fake database
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Table {
    schema: TableSchema,
    /// Keyed by the single integer primary key (column 0), values in column order.
    rows: BTreeMap<i64, Row>,
}

#[derive(Debug, Clone)]
struct LogEntry {
    seq: i64,
    table: String,
    key: i64,
    op: ChangeOp,
}

#[derive(Debug, Default)]
struct DbState {
    tables: BTreeMap<String, Table>,
    /// The "triggers" are installed: writes append to `log`.
    capturing: bool,
    log: Vec<LogEntry>,
    last_seq: i64,
    /// Everything up to here was released (deleted from the log).
    released: i64,
    /// What was committed or read, in order (for the deterministic test).
    trace: Vec<(&'static str, String, Vec<i64>)>,
}

impl DbState {
    fn table(&self, name: &str) -> Result<&Table> {
        self.tables.get(name).ok_or_else(|| Error::schema(format!("no table {name}")))
    }

    fn table_mut(&mut self, name: &str) -> Result<&mut Table> {
        self.tables.get_mut(name).ok_or_else(|| Error::schema(format!("no table {name}")))
    }

    fn log_change(&mut self, table: &str, key: i64, op: ChangeOp) {
        if self.capturing {
            self.last_seq += 1;
            self.log.push(LogEntry { seq: self.last_seq, table: table.to_string(), key, op });
        }
    }
}

/// Holds the first target write of rows containing `key` until released.
#[derive(Debug)]
struct Gate {
    key: i64,
    reached: Arc<Notify>,
    release: Arc<Notify>,
}

#[derive(Debug)]
struct Db {
    state: Mutex<DbState>,
    /// The last sequence number of the change log, for idle reads to wait on.
    log_end: watch::Sender<i64>,
    gate: Mutex<Option<Gate>>,
}

impl Db {
    fn new() -> Db {
        Db { state: Mutex::new(DbState::default()), log_end: watch::Sender::new(0), gate: Mutex::new(None) }
    }

    fn state(&self) -> MutexGuard<'_, DbState> {
        lock(&self.state)
    }

    fn create(&self, schema: TableSchema) {
        self.state().tables.insert(schema.name.clone(), Table { schema, rows: BTreeMap::new() });
    }

    /// One source transaction: the row changes and their change-log entries, at once.
    /// `None` deletes the row (a delete that matches nothing fires no trigger).
    fn transaction(&self, changes: &[(&str, i64, Option<Row>)]) {
        let mut st = self.state();
        for (table, key, row) in changes {
            let rows = &mut st.tables.get_mut(*table).expect("source table").rows;
            let op = match row {
                Some(r) => match rows.insert(*key, r.clone()) {
                    Some(_) => ChangeOp::Update,
                    None => ChangeOp::Insert,
                },
                None => match rows.remove(key) {
                    Some(_) => ChangeOp::Delete,
                    None => continue,
                },
            };
            st.log_change(table, *key, op);
        }
        let end = st.last_seq;
        drop(st);
        self.log_end.send_replace(end);
    }

    fn rows(&self, table: &str) -> BTreeMap<i64, Row> {
        self.state().tables.get(table).map(|t| t.rows.clone()).unwrap_or_default()
    }
}

fn key_of(v: &[Value]) -> Result<i64> {
    match v {
        [Value::Int(k)] => Ok(*k),
        other => Err(Error::internal(format!("the fake has single integer keys, got {other:?}"))),
    }
}

/// The filters the fake understands: `<column> <op> <integer>`.
#[derive(Debug, Clone, Copy)]
struct Filter {
    column: usize,
    op: &'static str,
    value: i64,
}

impl Filter {
    fn parse(sql: &str, schema: &TableSchema) -> Result<Filter> {
        let bad = || Error::new(ErrorKind::Database, format!("the fake cannot evaluate `{sql}`"));
        let parts: Vec<&str> = sql.split_whitespace().collect();
        let [column, op, value] = parts[..] else { return Err(bad()) };
        let column = schema.position(column).ok_or_else(bad)?;
        let op = [">=", ">", "<=", "<", "=", "<>"].into_iter().find(|o| *o == op).ok_or_else(bad)?;
        Ok(Filter { column, op, value: value.parse().map_err(|_| bad())? })
    }

    fn eval(&self, row: &Row) -> bool {
        let Value::Int(x) = row[self.column] else { return false }; // NULL: unknown, not true
        match self.op {
            ">=" => x >= self.value,
            ">" => x > self.value,
            "<=" => x <= self.value,
            "<" => x < self.value,
            "=" => x == self.value,
            _ => x != self.value,
        }
    }
}

/// The rows of a scan (filter, partition, projection) whose key passes `keep`,
/// ordered by key, with their keys.
fn select(st: &DbState, scan: &ScanSpec, keep: impl Fn(i64) -> bool) -> Result<Vec<(i64, Row)>> {
    let t = st.table(&scan.table)?;
    if scan.key.len() != 1 || t.schema.position(&scan.key[0]) != Some(0) {
        return Err(Error::internal(format!("the fake's key is column 0, not {:?}", scan.key)));
    }
    let filter = scan.filter.as_deref().map(|f| Filter::parse(f, &t.schema)).transpose()?;
    let partition = match &scan.partition {
        Some(p) => Some((
            t.schema.position(&p.column).ok_or_else(|| Error::schema(format!("no column {}", p.column)))?,
            p.value.clone(),
        )),
        None => None,
    };
    let projection = scan
        .select
        .iter()
        .map(|s| match &s.expr {
            SelectExpr::Column(c) => t.schema.position(c).ok_or_else(|| Error::schema(format!("no column {c}"))),
            SelectExpr::Sql(sql) => Err(Error::new(ErrorKind::Unsupported, format!("the fake has no SQL: {sql}"))),
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(t.rows
        .iter()
        .filter(|(k, row)| {
            keep(**k) && filter.is_none_or(|f| f.eval(row)) && partition.as_ref().is_none_or(|(i, v)| row[*i] == *v)
        })
        .map(|(k, row)| (*k, projection.iter().map(|&i| row[i].clone()).collect()))
        .collect())
}

fn in_range(range: &KeyRange) -> Result<impl Fn(i64) -> bool + use<>> {
    let after = range.after.as_deref().map(key_of).transpose()?;
    let upto = range.upto.as_deref().map(key_of).transpose()?;
    Ok(move |k: i64| after.is_none_or(|a| k > a) && upto.is_none_or(|u| k <= u))
}

/// One side of the migration as the engine sees it.
#[derive(Clone)]
struct FakeConnector {
    db: Arc<Db>,
    chaos: Arc<Chaos>,
    /// What the capture says to [`Capture::reads_ahead`] (its log is positional either
    /// way: a sequence assigned in the write's atomic step, kept until released).
    reads_ahead: bool,
}

impl fmt::Debug for FakeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FakeConnector")
    }
}

#[async_trait]
impl Connector for FakeConnector {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn limits(&self) -> Limits {
        Limits::NONE
    }

    fn native_type(&self, ty: &ColumnType) -> String {
        ty.to_string()
    }

    async fn reader(&self) -> Result<Box<dyn Reader>> {
        self.chaos.pause().await;
        self.chaos.fault("connect")?;
        Ok(Box::new(self.clone()))
    }

    async fn writer(&self) -> Result<Box<dyn Writer>> {
        self.chaos.pause().await;
        self.chaos.fault("connect")?;
        Ok(Box::new(self.clone()))
    }

    fn capture(&self, spec: &CaptureSpec) -> Result<Box<dyn Capture>> {
        match spec.mode {
            CaptureMode::Triggers => Ok(Box::new(self.clone())),
            CaptureMode::Native => Err(Error::new(ErrorKind::Unsupported, "the fake has trigger capture only")),
        }
    }
}

impl FakeConnector {
    /// A read-only call: its snapshot is taken between two pauses.
    async fn observe<T>(&self, what: &str, f: impl FnOnce(&DbState) -> Result<T>) -> Result<T> {
        self.chaos.pause().await;
        self.chaos.fault(what)?;
        let out = f(&self.db.state())?;
        self.chaos.pause().await;
        Ok(out)
    }

    /// A write: all of it or nothing at the atomic step; a fault after the step is an
    /// error with an unknown outcome (the write did commit).
    async fn commit<T>(&self, what: &str, f: impl FnOnce(&mut DbState) -> Result<T>) -> Result<T> {
        self.chaos.pause().await;
        self.chaos.fault(what)?;
        let out = f(&mut self.db.state())?;
        self.chaos.pause().await;
        self.chaos.fault(what)?;
        Ok(out)
    }

    /// Holds a write containing the gate's key until the test releases it.
    async fn gate(&self, keys: &[i64]) {
        let gate = lock(&self.db.gate).take_if(|g| keys.contains(&g.key));
        if let Some(g) = gate {
            g.reached.notify_one();
            g.release.notified().await;
        }
    }
}

/// Upserts rows given in `schema`'s column order into the target table of that name.
fn upsert_rows(st: &mut DbState, schema: &TableSchema, rows: &[Row]) -> Result<Vec<i64>> {
    let t = st.table_mut(&schema.name)?;
    let positions = schema
        .columns
        .iter()
        .map(|c| t.schema.position(&c.name).ok_or_else(|| Error::schema(format!("no column {}", c.name))))
        .collect::<Result<Vec<usize>>>()?;
    let key_at = schema.position(&schema.primary_key[0]).ok_or_else(|| Error::internal("no key column"))?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        let key = key_of(std::slice::from_ref(&row[key_at]))?;
        let mut full = t.rows.get(&key).cloned().unwrap_or_else(|| vec![Value::Null; t.schema.columns.len()]);
        for (v, &p) in row.iter().zip(&positions) {
            full[p] = v.clone();
        }
        t.rows.insert(key, full);
        keys.push(key);
    }
    Ok(keys)
}

fn row_keys(schema: &TableSchema, rows: &[Row]) -> Vec<i64> {
    let at = schema.position(&schema.primary_key[0]).unwrap_or(0);
    rows.iter()
        .filter_map(|r| match r[at] {
            Value::Int(k) => Some(k),
            _ => None,
        })
        .collect()
}

#[async_trait]
impl Reader for FakeConnector {
    async fn list_tables(&mut self) -> Result<Vec<String>> {
        self.observe("list_tables", |st| Ok(st.tables.keys().cloned().collect())).await
    }

    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        self.observe("describe", |st| Ok(st.tables.get(table).map(|t| t.schema.clone()))).await
    }

    async fn describe_exprs(&mut self, _table: &str, _exprs: &[String]) -> Result<Vec<ColumnType>> {
        Err(Error::new(ErrorKind::Unsupported, "the fake has no SQL expressions"))
    }

    async fn estimate_rows(&mut self, table: &str) -> Result<u64> {
        self.observe("estimate_rows", |st| Ok(st.table(table)?.rows.len() as u64)).await
    }

    async fn key_after(&mut self, scan: &ScanSpec, after: Option<&[Value]>, step: u64) -> Result<Option<Vec<Value>>> {
        let after = after.map(key_of).transpose()?;
        let rows = self.observe("key_after", |st| select(st, scan, |k| after.is_none_or(|a| k > a))).await?;
        let nth = usize::try_from(step.max(1) - 1).unwrap_or(usize::MAX);
        Ok(rows.get(nth).map(|(k, _)| vec![Value::Int(*k)]))
    }

    async fn partitions(
        &mut self,
        table: &str,
        column: &str,
        _ty: &ColumnType,
        filter: Option<&str>,
    ) -> Result<Vec<(Value, u64)>> {
        self.observe("partitions", |st| {
            let t = st.table(table)?;
            let col = t.schema.position(column).ok_or_else(|| Error::schema(format!("no column {column}")))?;
            let filter = filter.map(|f| Filter::parse(f, &t.schema)).transpose()?;
            let mut counts: Vec<(Value, u64)> = Vec::new();
            for row in t.rows.values().filter(|r| filter.is_none_or(|f| f.eval(r))) {
                match counts.iter_mut().find(|(v, _)| *v == row[col]) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((row[col].clone(), 1)),
                }
            }
            counts.sort_by_key(|(_, n)| *n);
            Ok(counts)
        })
        .await
    }

    async fn scan(&mut self, scan: &ScanSpec, range: &KeyRange) -> Result<Vec<Row>> {
        let keep = in_range(range)?;
        let rows = self.observe("scan", |st| select(st, scan, keep)).await?;
        self.chaos.transfer(rows.len()).await;
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    async fn fetch_keys(&mut self, scan: &ScanSpec, keys: &[Vec<Value>]) -> Result<Vec<Row>> {
        let keys = keys.iter().map(|k| key_of(k)).collect::<Result<Vec<i64>>>()?;
        let rows = self.observe("fetch_keys", |st| select(st, scan, |k| keys.contains(&k))).await?;
        self.chaos.transfer(rows.len()).await;
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }
}

#[async_trait]
impl Writer for FakeConnector {
    async fn describe(&mut self, table: &str) -> Result<Option<TableSchema>> {
        Reader::describe(self, table).await
    }

    async fn create_table(&mut self, schema: &TableSchema) -> Result<()> {
        let mut schema = schema.clone();
        for c in &mut schema.columns {
            if c.native.is_empty() {
                c.native = c.ty.to_string();
            }
        }
        self.commit("create_table", |st| {
            if st.tables.contains_key(&schema.name) {
                return Err(Error::new(ErrorKind::Database, format!("table {} exists", schema.name)));
            }
            st.tables.insert(schema.name.clone(), Table { schema, rows: BTreeMap::new() });
            Ok(())
        })
        .await
    }

    async fn upsert(&mut self, table: &TableSchema, rows: &[Row]) -> Result<u64> {
        self.gate(&row_keys(table, rows)).await;
        self.chaos.transfer(rows.len()).await;
        self.commit("upsert", |st| {
            let keys = upsert_rows(st, table, rows)?;
            st.trace.push(("upsert", table.name.clone(), keys));
            Ok(rows.len() as u64)
        })
        .await
    }

    async fn apply(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Vec<Value>],
        version_column: Option<&str>,
    ) -> Result<u64> {
        let deletes = deletes.iter().map(|k| key_of(k)).collect::<Result<Vec<i64>>>()?;
        self.chaos.transfer(rows.len() + deletes.len()).await;
        self.commit("apply", |st| {
            let rows: Vec<Row> = match version_column {
                None => rows.to_vec(),
                Some(vc) => {
                    // rule 4: never replace a row with an older version
                    let t = st.table(&table.name)?;
                    let (at, tat) = (table.position(vc), t.schema.position(vc));
                    let (Some(at), Some(tat)) = (at, tat) else { return Err(Error::schema("no version column")) };
                    let keys = row_keys(table, rows);
                    rows.iter()
                        .zip(keys)
                        .filter(|(row, k)| match (t.rows.get(k).map(|r| &r[tat]), &row[at]) {
                            (Some(Value::Int(old)), Value::Int(new)) => old <= new,
                            _ => true,
                        })
                        .map(|(row, _)| row.clone())
                        .collect()
                }
            };
            let mut keys = upsert_rows(st, table, &rows)?;
            let t = st.table_mut(&table.name)?;
            for k in &deletes {
                t.rows.remove(k);
            }
            keys.extend(&deletes);
            st.trace.push(("apply", table.name.clone(), keys));
            Ok((rows.len() + deletes.len()) as u64)
        })
        .await
    }
}

#[async_trait]
impl Capture for FakeConnector {
    async fn preflight(&mut self, tables: &[CaptureTable], _copy_seconds: u64) -> Result<()> {
        // not retried by the engine (a failed preflight ends the run): no injected fault
        self.chaos.pause().await;
        let st = self.db.state();
        for t in tables {
            st.table(&t.table)?;
        }
        Ok(())
    }

    async fn start(&mut self, _tables: &[CaptureTable]) -> Result<Position> {
        self.commit("start capture", |st| {
            st.capturing = true;
            Ok(Position::TriggerSeq { seq: st.last_seq })
        })
        .await
    }

    async fn read(&mut self, from: &Position, max_events: usize, wait: Duration) -> Result<CaptureBatch> {
        let &Position::TriggerSeq { seq: from } = from else {
            return Err(Error::internal(format!("not a trigger position: {from}")));
        };
        let take = |st: &mut DbState| -> Result<CaptureBatch> {
            if from < st.released {
                return Err(Error::internal(format!(
                    "read from trigger:{from}, but changes up to trigger:{} were released: they are lost",
                    st.released
                )));
            }
            if from > st.last_seq {
                return Err(Error::internal(format!("read from trigger:{from}, beyond the log's end")));
            }
            let entries: Vec<LogEntry> =
                st.log.iter().filter(|e| e.seq > from).take(max_events.max(1)).cloned().collect();
            let position = Position::TriggerSeq { seq: entries.last().map_or(from, |e| e.seq) };
            if !entries.is_empty() {
                st.trace.push(("read", String::new(), entries.iter().map(|e| e.key).collect()));
            }
            let events = entries
                .into_iter()
                .map(|e| ChangeEvent { table: e.table, key: vec![Value::Int(e.key)], op: e.op })
                .collect();
            Ok(CaptureBatch { events, position, ddl: None, committed_at_micros: None })
        };
        let mut end = self.db.log_end.subscribe();
        let batch = self.observe_mut("read changes", take).await?;
        if !batch.events.is_empty() {
            return Ok(batch);
        }
        let _ = tokio::time::timeout(wait, end.changed()).await;
        self.observe_mut("read changes", take).await
    }

    async fn release(&mut self, upto: &Position) -> Result<()> {
        let &Position::TriggerSeq { seq: upto } = upto else {
            return Err(Error::internal(format!("not a trigger position: {upto}")));
        };
        self.commit("release", |st| {
            if upto > st.last_seq {
                return Err(Error::internal(format!("release of trigger:{upto}, beyond the log's end")));
            }
            st.log.retain(|e| e.seq > upto);
            st.released = st.released.max(upto);
            Ok(())
        })
        .await
    }

    fn reads_ahead(&self) -> bool {
        self.reads_ahead
    }

    async fn cleanup(&mut self) -> Result<Vec<String>> {
        self.commit("cleanup", |st| {
            st.capturing = false;
            st.log.clear();
            Ok(vec!["fake triggers".to_string()])
        })
        .await
    }
}

impl FakeConnector {
    /// A capture read (the trace is written, nothing else).
    async fn observe_mut<T>(&self, what: &str, f: impl FnOnce(&mut DbState) -> Result<T>) -> Result<T> {
        self.chaos.pause().await;
        self.chaos.fault(what)?;
        let out = f(&mut self.db.state())?;
        self.chaos.pause().await;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// The world: source, target, the job, the application
// ---------------------------------------------------------------------------------

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), native: ty.to_string(), ty, nullable, has_default: false }
}

/// `a`: copied where `v >= 0` (rows move in and out of the filter);
/// `b`: partitioned by a nullable tenant (rows move between partitions).
fn schemas() -> [TableSchema; 2] {
    [
        TableSchema {
            name: "a".into(),
            columns: vec![
                col("id", ColumnType::I64, false),
                col("v", ColumnType::I64, false),
                col("s", ColumnType::TEXT, true),
            ],
            primary_key: vec!["id".into()],
        },
        TableSchema {
            name: "b".into(),
            columns: vec![
                col("id", ColumnType::I64, false),
                col("tenant", ColumnType::I32, true),
                col("s", ColumnType::TEXT, true),
            ],
            primary_key: vec!["id".into()],
        },
    ]
}

const FILTER_A: &str = "v >= 0";

fn random_row(table: &str, key: i64, rng: &mut Rng) -> Row {
    let text = if rng.chance(150) { Value::Null } else { Value::Text(format!("s{}", rng.below(10_000))) };
    match table {
        "a" => vec![Value::Int(key), Value::Int(rng.below(1040) as i64 - 40), text],
        _ => {
            let tenant = match rng.below(5) {
                4 => Value::Null,
                t => Value::Int(t as i64),
            };
            vec![Value::Int(key), tenant, text]
        }
    }
}

#[derive(Debug)]
struct World {
    chaos: Arc<Chaos>,
    source: Arc<Db>,
    target: Arc<Db>,
    job: String,
    reads_ahead: bool,
}

impl World {
    fn new(
        seed: u64,
        latency: (u64, u64),
        fault_per_mille: u64,
        workers: usize,
        chunk_rows: u64,
        batch: usize,
    ) -> World {
        let source = Db::new();
        for s in schemas() {
            source.create(s);
        }
        let job = format!(
            "[source]\nurl = \"sqlite:source.db\"\n[target]\nurl = \"sqlite:target.db\"\n\
             [copy]\nworkers = {workers}\nchunk_rows = {chunk_rows}\n\
             [sync]\ncapture = \"triggers\"\nname = \"model\"\nbatch_events = {batch}\n\
             [[tables]]\nsource = \"a\"\nwhere = \"{FILTER_A}\"\n\
             [[tables]]\nsource = \"b\"\npartition_by = \"tenant\"\n"
        );
        World {
            chaos: Arc::new(Chaos::new(seed, latency.0, latency.1, fault_per_mille)),
            source: Arc::new(source),
            target: Arc::new(Db::new()),
            job,
            // half the cases prepare the next batch while writing one
            reads_ahead: seed % 2 == 1,
        }
    }

    fn connector(&self, db: &Arc<Db>) -> Arc<dyn Connector> {
        Arc::new(FakeConnector { db: db.clone(), chaos: self.chaos.clone(), reads_ahead: self.reads_ahead })
    }

    /// What the target must hold: each source table through the job's mapping.
    fn expected(&self, table: &str) -> BTreeMap<i64, Row> {
        let mut rows = self.source.rows(table);
        if table == "a" {
            let f = Filter::parse(FILTER_A, &schemas()[0]).expect("filter");
            rows.retain(|_, r| f.eval(r));
        }
        rows
    }
}

/// The application: random transactions of one to three rows on both tables, some
/// on a few hot keys, deletes, and deleted keys written again. Waits while `held`.
async fn application(
    source: Arc<Db>,
    mut rng: Rng,
    ops: usize,
    key_space: i64,
    pace: u64,
    mut held: watch::Receiver<bool>,
) {
    for _ in 0..ops {
        let _ = held.wait_for(|h| !*h).await;
        let mut changes = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let table = if rng.below(2) == 0 { "a" } else { "b" };
            let key = if rng.chance(300) { 1 + rng.below(4) as i64 } else { 1 + rng.below(key_space as u64) as i64 };
            let row = if rng.chance(250) { None } else { Some(random_row(table, key, &mut rng)) };
            changes.push((table, key, row));
        }
        source.transaction(&changes);
        if rng.chance(200) {
            tokio::task::yield_now().await; // a burst
        } else {
            tokio::time::sleep(Duration::from_millis(1 + rng.below(pace))).await;
        }
    }
}

/// One `pontoon run` process: plan, start capture (P0 on the first run), then copy
/// and sync side by side until `stop`. Dropping the future is a crash.
async fn migrate(
    w: &World,
    state: &Arc<StateStore>,
    stop: Arc<AtomicBool>,
    progress: Arc<SyncProgress>,
) -> Result<RunReport> {
    let job = Job::parse(Path::new("/model/job.toml"), &w.job, &|_| None).map_err(|e| Error::config(e.to_string()))?;
    let (source, target) = (w.connector(&w.source), w.connector(&w.target));
    // `plan` retries nothing (the CLI reports and exits): no injected faults in it
    w.chaos.arm_faults(false);
    let plan = Arc::new(pontoon_engine::plan::plan(&job, source.as_ref(), target.as_ref()).await?);
    w.chaos.arm_faults(true);
    let ctx = CopyContext {
        source,
        target,
        state: state.clone(),
        settings: job.copy.clone(),
        progress: Arc::new(Progress::new(
            plan.tables.iter().map(|t| (t.job.source.clone(), t.target_name().into(), t.estimated_rows)),
        )),
        stop,
        retry: RetryPolicy {
            first_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            give_up_after: Duration::from_secs(600),
        },
        tracker: Arc::new(CopyTracker::new()),
    };
    let spec = run::start_capture(&job, ctx.source.as_ref(), &plan, &ctx).await?;
    run::run(&ctx, plan, spec, job.sync.batch_events, progress, Until::Stopped, None).await
}

/// Resolves once the run's copy is done (every chunk checkpointed).
async fn copy_done(progress: &SyncProgress) {
    while !progress.copy_done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves once the run's copy is done and the sync checkpoint is at the end of the
/// change log: with a quiet source, the target must now equal the source.
async fn drained(w: &World, state: &StateStore, progress: &SyncProgress) {
    loop {
        let end = Position::TriggerSeq { seq: w.source.state().last_seq };
        let at = state.sync().ok().flatten().map(|s| s.position);
        if progress.copy_done.load(Ordering::Relaxed) && at == Some(end) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the migration until it has drained (the source must be quiet), then stops it.
async fn drain(w: &World, state: &Arc<StateStore>) -> std::result::Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(SyncProgress::new());
    let run = migrate(w, state, stop.clone(), progress.clone());
    tokio::pin!(run);
    let outcome = tokio::time::timeout(Duration::from_secs(3600), async {
        tokio::select! {
            biased;
            r = &mut run => Err(format!("the draining run ended by itself: {r:?}")),
            () = drained(w, state, &progress) => Ok(()),
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(format!(
                "no drain within an hour (virtual): copy done {}, sync at {:?}, log end {}",
                progress.copy_done.load(Ordering::Relaxed),
                state.sync().ok().flatten().map(|s| s.position),
                w.source.state().last_seq
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    match tokio::time::timeout(Duration::from_secs(600), &mut run).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the draining run failed when stopped: {e}")),
        Err(_) => Err("the draining run did not stop".into()),
    }
}

/// The promise and the bookkeeping behind it, checked once source and target are quiet.
fn check(w: &World, state: &StateStore) -> std::result::Result<(), String> {
    let mut problems = Vec::new();
    for table in ["a", "b"] {
        let want = w.expected(table);
        let have = w.target.rows(table);
        let mut keys: Vec<i64> = want.keys().chain(have.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut diffs = Vec::new();
        for k in keys {
            let (s, t) = (want.get(&k), have.get(&k));
            if s != t {
                let what = match (s, t) {
                    (Some(_), None) => "lost (missing on the target)",
                    (None, Some(_)) => "resurrected (on the target, not in the source)",
                    _ => "stale (an older state on the target)",
                };
                diffs.push(format!("{table}[{k}] {what}: source {s:?}, target {t:?}"));
            }
        }
        if !diffs.is_empty() {
            problems.push(format!("{} keys differ in {table}:\n    {}", diffs.len(), diffs.join("\n    ")));
        }
    }

    let rec = state.sync().map_err(|e| e.to_string())?.ok_or("no sync recorded")?;
    let end = Position::TriggerSeq { seq: w.source.state().last_seq };
    if rec.position != end {
        problems.push(format!("sync at {} but the change log ends at {end}", rec.position));
    }
    let mut at = rec.start_position.clone();
    for (i, b) in state.sync_batches().map_err(|e| e.to_string())?.iter().enumerate() {
        if b.from != at {
            problems.push(format!("batch {i} starts at {} but the previous one ended at {at}", b.from));
        }
        if b.to.compare(&b.from).is_none_or(|o| o.is_lt()) {
            problems.push(format!("batch {i} moves backward from {} to {}", b.from, b.to));
        }
        at = b.to.clone();
    }
    if at != rec.position {
        problems.push(format!("the batch log ends at {at} but the sync is at {}", rec.position));
    }
    let released = w.source.state().released;
    if (Position::TriggerSeq { seq: released }).compare(&rec.position).is_some_and(|o| o.is_gt()) {
        problems.push(format!("the change log was released up to {released}, beyond the checkpoint {}", rec.position));
    }

    for table in ["a", "b"] {
        let chunks = state.chunks(table).map_err(|e| e.to_string())?;
        if !state.table(table).map_err(|e| e.to_string())?.is_some_and(|t| t.planned) {
            problems.push(format!("{table}: planning never finished"));
        }
        // per partition, the ranges chain from the start of the key space to its end, once
        let mut chains: Vec<(Option<Value>, Option<Vec<Value>>, bool)> = Vec::new();
        for c in &chunks {
            if !c.done || c.completions != 1 {
                problems.push(format!(
                    "{table} chunk {}: done {}, checkpointed {} times (attempts {})",
                    c.seq, c.done, c.completions, c.attempts
                ));
            }
            match chains.iter_mut().find(|(p, _, _)| *p == c.partition) {
                Some((_, end, closed)) if !*closed && *end == c.range.after => {
                    *end = c.range.upto.clone();
                    *closed = c.range.upto.is_none();
                }
                Some(_) => {
                    problems.push(format!("{table} chunk {} breaks its partition's chain: {:?}", c.seq, c.range))
                }
                None if c.range.after.is_none() => {
                    chains.push((c.partition.clone(), c.range.upto.clone(), c.range.upto.is_none()))
                }
                None => problems.push(format!("{table} chunk {} starts a partition mid-way: {:?}", c.seq, c.range)),
            }
        }
        for (p, end, closed) in chains {
            if !closed {
                problems.push(format!("{table} partition {p:?}: the chunks stop at {end:?}"));
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n  ")) }
}

// ---------------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Interruption {
    /// Fake I/O steps after the (re)start at which the run is interrupted.
    after_steps: u64,
    /// A graceful stop (Ctrl-C: finish the chunks in hand) instead of a crash.
    graceful: bool,
    /// Milliseconds the application has alone before the next start.
    downtime: u32,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    rows_a: usize,
    rows_b: usize,
    app_ops: usize,
    /// Most milliseconds between two application transactions.
    app_pace: u64,
    workers: usize,
    chunk_rows: u64,
    batch_events: usize,
    /// Most milliseconds a fake call's step takes; microseconds to move one row.
    latency: (u64, u64),
    fault_per_mille: u64,
    interruptions: Vec<Interruption>,
}

fn interruption() -> impl Strategy<Value = Interruption> {
    (prop_oneof![3 => 1u64..300, 2 => 1u64..1000, 1 => 1u64..4000], prop::bool::weighted(0.25), 0u32..400)
        .prop_map(|(after_steps, graceful, downtime)| Interruption { after_steps, graceful, downtime })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        0usize..250,
        0usize..250,
        (0usize..400, 1u64..16),
        1usize..=3,
        1u64..24,
        1usize..40,
        (0u64..3, 0u64..1500),
        prop_oneof![Just(0u64), 1u64..25],
        prop::collection::vec(interruption(), 1..=3),
    )
        .prop_map(
            |(
                seed,
                rows_a,
                rows_b,
                (app_ops, app_pace),
                workers,
                chunk_rows,
                batch_events,
                latency,
                fault_per_mille,
                interruptions,
            )| Case {
                seed,
                rows_a,
                rows_b,
                app_ops,
                app_pace,
                workers,
                chunk_rows,
                batch_events,
                latency,
                fault_per_mille,
                interruptions,
            },
        )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
}

fn run_case(case: &Case) -> std::result::Result<(), String> {
    let w = Arc::new(World::new(
        case.seed,
        case.latency,
        case.fault_per_mille,
        case.workers,
        case.chunk_rows,
        case.batch_events,
    ));
    let mut rng = Rng(case.seed ^ 0x005e_ed0f_a991);
    let key_space = ((case.rows_a.max(case.rows_b) * 3 / 2) as i64).max(8);
    for (table, n) in [("a", case.rows_a), ("b", case.rows_b)] {
        let mut changes = Vec::new();
        for _ in 0..n {
            let key = 1 + rng.below(key_space as u64) as i64;
            changes.push((table, key, Some(random_row(table, key, &mut rng))));
        }
        w.source.transaction(&changes); // before capture: not logged
    }
    let state = Arc::new(StateStore::in_memory().map_err(|e| e.to_string())?);
    runtime().block_on(async {
        let (hold, held) = watch::channel(false);
        let app =
            tokio::spawn(application(w.source.clone(), Rng(rng.next()), case.app_ops, key_space, case.app_pace, held));
        for (i, int) in case.interruptions.iter().enumerate() {
            let mut crash = w.chaos.crash_after(int.after_steps);
            let stop = Arc::new(AtomicBool::new(false));
            let progress = Arc::new(SyncProgress::new());
            // boxed, so that dropping it below drops the run itself (and aborts its tasks)
            let mut run = Box::pin(migrate(&w, &state, stop.clone(), progress.clone()));
            // A quiet moment once this run's copy is done: hold the application, let the
            // sync drain, check the promise, let the application go on. A stale write
            // is caught here before a later change to the same key can hide it.
            let quiet = async {
                copy_done(&progress).await;
                hold.send_replace(true);
                drained(&w, &state, &progress).await;
            };
            tokio::pin!(quiet);
            let mut checked = false;
            loop {
                tokio::select! {
                    biased;
                    r = &mut run => return Err(format!("run {i} ended before it was interrupted: {r:?}")),
                    _ = &mut crash => break,
                    () = &mut quiet, if !checked => {
                        checked = true;
                        check(&w, &state).map_err(|e| format!("at the quiet moment of run {i}:\n  {e}"))?;
                        hold.send_replace(false);
                    }
                }
            }
            hold.send_replace(false);
            if int.graceful {
                stop.store(true, Ordering::Relaxed);
                match tokio::time::timeout(Duration::from_secs(600), &mut run).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("run {i} failed when stopped: {e}")),
                    Err(_) => return Err(format!("run {i} did not stop")),
                }
            }
            // else: dropped here, mid-await, like kill -9
            drop(run);
            tokio::time::sleep(Duration::from_millis(int.downtime.into())).await;
        }
        app.await.map_err(|e| format!("the application panicked: {e}"))?;
        drain(&w, &state).await
    })?;
    check(&w, &state)
}

/// Cases per run: 256 take a few seconds in a debug build; `PROPTEST_CASES` asks for
/// more (a deeper search) or fewer.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 300, ..ProptestConfig::default() })]

    /// Copy and sync side by side, with crashes and restarts, converge on the source.
    #[test]
    fn online_migration_converges_on_the_source(case in case()) {
        if let Err(e) = run_case(&case) {
            prop_assert!(false, "{}", e);
        }
    }
}

// ---------------------------------------------------------------------------------
// The interleaving rule 3 exists for, step by step
// ---------------------------------------------------------------------------------

/// A copy chunk reads key 3, then (before its write commits) the application updates
/// key 3 and the syncer reads that change. Applying it at once would let the chunk's
/// older state land over it (a lost update). The syncer must wait for the chunk.
#[test]
fn a_change_read_while_its_chunk_is_writing_waits_for_the_chunk() {
    let w = World::new(7, (1, 100), 0, 1, 5, 100);
    let rows: Vec<(&str, i64, Option<Row>)> =
        (1..=10).map(|k| ("a", k, Some(vec![Value::Int(k), Value::Int(k * 10), Value::Null]))).collect();
    w.source.transaction(&rows);
    let (reached, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    *lock(&w.target.gate) = Some(Gate { key: 3, reached: reached.clone(), release: release.clone() });
    let state = Arc::new(StateStore::in_memory().unwrap());
    let updated = vec![Value::Int(3), Value::Int(111), Value::Text("new".into())];

    runtime().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut run = Box::pin(migrate(&w, &state, stop.clone(), Arc::new(SyncProgress::new())));
        let script = async {
            // the first chunk (keys 1..=5) has read key 3 as (3, 30) and is about to write it
            reached.notified().await;
            w.source.transaction(&[("a", 3, Some(updated.clone()))]);
            // give the syncer all the time it wants: it reads the change and must wait
            tokio::time::sleep(Duration::from_secs(5)).await;
            let st = w.source.state();
            assert!(
                st.trace.iter().any(|(op, _, keys)| *op == "read" && keys.contains(&3)),
                "the syncer should have read the change to key 3 by now"
            );
            drop(st);
            let target = w.target.state();
            assert!(
                !target.trace.iter().any(|(op, _, keys)| *op == "apply" && keys.contains(&3)),
                "the syncer applied key 3 while the chunk that read it earlier was still writing: {:?}",
                target.trace
            );
            drop(target);
            release.notify_one();
        };
        tokio::select! {
            biased;
            r = &mut run => panic!("the run ended: {r:?}"),
            () = script => {}
        }
        stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(60), &mut run).await.expect("stops").expect("runs");
        drop(run);
        drain(&w, &state).await.unwrap();
    });

    let trace = lock(&w.target.state).trace.clone();
    let chunk = trace.iter().position(|(op, _, keys)| *op == "upsert" && keys.contains(&3));
    let apply = trace.iter().position(|(op, _, keys)| *op == "apply" && keys.contains(&3));
    assert!(
        matches!((chunk, apply), (Some(c), Some(a)) if c < a),
        "the chunk's write of key 3 comes first, then the sync's: {trace:?}"
    );
    assert_eq!(w.target.rows("a").get(&3), Some(&updated), "the newer state wins");
    check(&w, &state).unwrap();
}
