//! The copier: chunked, parallel, throttled, resumable copy of existing rows.
//!
//! 1. **Prepare** each table: create the target table if missing and check a stored
//!    plan still matches the job (fingerprint).
//! 2. **Plan** (one task): walk the source's key index to cut each table into chunks
//!    of `chunk_rows` rows (per partition, smallest partition first), storing every
//!    chunk before it is queued. Workers start on the first chunks while the walk
//!    goes on. A resumed run continues the walk from the last stored boundary, so
//!    every run copies exactly the chunks the first one planned.
//! 3. **Copy**: N workers, each with its own source and target connection, take the
//!    next chunk, read it, fit every value to the target column (`convert::fit`: a
//!    value the target cannot hold stops that table with table, key and column named,
//!    before anything of the chunk is written), write it in one target transaction
//!    (idempotent upsert), and only then checkpoint the chunk. When source and target
//!    are the same engine and every target column has exactly the source column's
//!    type, the chunk travels in the engine's own bulk format instead
//!    (`Reader::scan_raw`), with nothing to decode or fit.
//! 4. Transient errors are retried with backoff on a fresh connection; a permanent
//!    error stops its table (the other tables go on); a stop request lets every
//!    worker finish the chunk in hand and checkpoint it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pontoon_core::convert::fit;
use pontoon_core::{
    Connector, Error, ErrorKind, KeyRange, Limits, PartitionFilter, RawRows, Reader, Result, Row, ScanSpec, SelectExpr,
    TableSchema, Value, Writer,
};
use pontoon_state::{ChunkPlan, ChunkRecord, StateStore, TableState};
use serde::Serialize;
use tokio::sync::Notify;

use crate::job::CopySettings;
use crate::plan::{Plan, TablePlan, write_schema};
use crate::progress::{Phase, Progress};
use crate::retry::RetryPolicy;
use crate::throttle::Throttle;
use crate::track::CopyTracker;

/// What a copy run did, per table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub target: String,
    /// Rows written by this run.
    pub rows: u64,
    pub chunks_copied: u64,
    /// Chunks finished by an earlier run and not copied again.
    pub chunks_skipped: u64,
    pub chunks_total: u64,
    /// How this run's chunks travelled: `raw` (the engine's own bulk format, same
    /// engine and identical column types), `rows` (decoded and fitted value by
    /// value), `mixed`, or `none` when this run copied no chunk.
    pub path: &'static str,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub rows: u64,
    pub tables: Vec<TableReport>,
    pub seconds: f64,
    pub interrupted: bool,
}

impl CopyReport {
    pub fn failed(&self) -> bool {
        self.tables.iter().any(|t| t.error.is_some())
    }
}

/// Everything a copy run needs.
#[derive(Debug, Clone)]
pub struct CopyContext {
    pub source: Arc<dyn Connector>,
    pub target: Arc<dyn Connector>,
    pub state: Arc<StateStore>,
    pub settings: CopySettings,
    pub progress: Arc<Progress>,
    /// Set to stop after the chunks in hand (Ctrl-C, SIGTERM).
    pub stop: Arc<AtomicBool>,
    pub retry: RetryPolicy,
    /// Told which tables are ready and which chunks are in flight, for a sync
    /// running beside the copy (`pontoon run`).
    pub tracker: Arc<CopyTracker>,
}

/// One table, ready to copy.
#[derive(Debug)]
struct Table {
    plan: TablePlan,
    /// The target's actual columns, in the scan's order.
    write: TableSchema,
    /// Chunks may travel in the engine's bulk format (see [`raw_eligible`]);
    /// cleared when the reader says the engine has none.
    raw: AtomicBool,
    /// Chunks finished by earlier runs.
    skipped: u64,
    /// What this run actually wrote: raw chunks, decoded chunks.
    wrote_raw: AtomicBool,
    wrote_rows: AtomicBool,
}

/// Copies every table of `plan`. Returns the report; tables that failed carry their
/// error in it (the run goes on with the other tables). Errors of the run itself
/// (state store, preparation) are returned as `Err`.
pub async fn copy(ctx: &CopyContext, plan: &Plan) -> Result<CopyReport> {
    let started = Instant::now();
    let mut tables = Vec::new();
    let mut queue = VecDeque::new();
    let mut to_plan = Vec::new();
    let mut conns = Conns::default();
    for (i, tp) in plan.tables.iter().enumerate() {
        ctx.progress.tables[i].set_phase(Phase::Planning);
        let mut backoff = ctx.retry.backoff();
        let name = &tp.job.source;
        let (write, planned) = loop {
            match prepare(ctx, tp, &mut conns).await {
                Ok(prepared) => break prepared,
                Err(e) => {
                    conns = Conns::default();
                    if let Err(e) = backoff.retry_after("prepare table", e).await {
                        let e = e.in_table(name);
                        ctx.tracker.failed(name, &e.to_string());
                        return Err(e);
                    }
                }
            }
        };
        ctx.tracker.prepared(name, &write);
        let chunks = ctx.state.chunks(name)?;
        let skipped = chunks.iter().filter(|c| c.done).count() as u64;
        let progress = &ctx.progress.tables[i];
        progress.chunks_total.store(chunks.len() as u64, Ordering::Relaxed);
        progress.chunks_done.store(skipped, Ordering::Relaxed);
        let pending: Vec<ChunkRecord> = chunks.into_iter().filter(|c| !c.done).collect();
        if !planned {
            to_plan.push(i);
        }
        if !planned || !pending.is_empty() {
            ctx.state.set_table_state(name, TableState::Copying, None)?;
            progress.set_phase(Phase::Waiting);
        } else {
            progress.set_phase(Phase::Done);
        }
        queue.extend(pending.into_iter().map(|c| (i, c)));
        let raw = raw_eligible(ctx.source.as_ref(), ctx.target.as_ref(), tp, &write);
        if raw {
            tracing::info!(table = %name, "identical column types: chunks may travel in the engine's bulk format");
        }
        tables.push(Table {
            plan: tp.clone(),
            write,
            raw: AtomicBool::new(raw),
            skipped,
            wrote_raw: AtomicBool::new(false),
            wrote_rows: AtomicBool::new(false),
        });
    }
    drop(conns);

    let shared = Arc::new(Shared {
        queue: Mutex::new(queue),
        planning: AtomicBool::new(!to_plan.is_empty()),
        more: Notify::new(),
        failed: Mutex::new(HashMap::new()),
        fatal: Mutex::new(None),
        copied: Mutex::new(HashMap::new()),
        tables,
        throttle: Throttle::new(ctx.settings.max_rows_per_second),
        limits: ctx.target.limits(),
    });
    let mut set = tokio::task::JoinSet::new();
    if !to_plan.is_empty() {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        set.spawn(async move { planner(ctx, shared, to_plan).await });
    }
    for id in 0..ctx.settings.workers.max(1) {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        set.spawn(async move { worker(id, ctx, shared).await });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            return Err(Error::internal(format!("a copy task panicked: {e}")));
        }
    }
    if let Some(e) = lock(&shared.fatal)?.take() {
        return Err(e);
    }
    report(ctx, &shared, started)
}

/// The report, from the state store (the truth) and this run's counters.
fn report(ctx: &CopyContext, shared: &Shared, started: Instant) -> Result<CopyReport> {
    let failed = lock(&shared.failed)?.clone();
    let copied = lock(&shared.copied)?.clone();
    let mut tables = Vec::new();
    let mut interrupted = false;
    for (i, t) in shared.tables.iter().enumerate() {
        let name = &t.plan.job.source;
        let (chunks_copied, rows) = copied.get(&i).copied().unwrap_or((0, 0));
        let planned = ctx.state.table(name)?.is_some_and(|r| r.planned);
        let chunks = ctx.state.chunks(name)?;
        let complete = planned && chunks.iter().all(|c| c.done);
        let (state, error) = match failed.get(&i) {
            Some(msg) => {
                ctx.state.set_table_state(name, TableState::Failed, Some(msg))?;
                ctx.progress.tables[i].set_phase(Phase::Failed);
                ("failed", Some(msg.clone()))
            }
            None if complete => {
                ctx.state.set_table_state(name, TableState::Copied, None)?;
                ctx.progress.tables[i].set_phase(Phase::Done);
                ("copied", None)
            }
            None => {
                interrupted = true;
                ("copying", None)
            }
        };
        tables.push(TableReport {
            table: name.clone(),
            target: t.plan.target_name().to_string(),
            rows,
            chunks_copied,
            chunks_skipped: t.skipped,
            chunks_total: chunks.len() as u64,
            path: match (t.wrote_raw.load(Ordering::Relaxed), t.wrote_rows.load(Ordering::Relaxed)) {
                (true, false) => "raw",
                (false, true) => "rows",
                (true, true) => "mixed",
                (false, false) => "none",
            },
            state,
            error,
        });
    }
    Ok(CopyReport {
        rows: tables.iter().map(|t| t.rows).sum(),
        tables,
        seconds: started.elapsed().as_secs_f64(),
        interrupted,
    })
}

/// Creates the target table if needed and records the table in the state store, or
/// checks that the recorded plan is for the same mapping. Returns the write schema and
/// whether the table's chunks are all planned. Safe to run again after a failure.
async fn prepare(ctx: &CopyContext, tp: &TablePlan, conns: &mut Conns) -> Result<(TableSchema, bool)> {
    let writer = conns.writer(ctx).await?;
    let actual = match writer.describe(tp.target_name()).await? {
        Some(t) => t,
        None => {
            tracing::info!(table = %tp.target_name(), "creating target table");
            writer.create_table(&tp.wanted).await.map_err(|e| e.in_table(tp.target_name()))?;
            writer.describe(tp.target_name()).await?.ok_or_else(|| {
                Error::schema("target table missing right after it was created").in_table(tp.target_name())
            })?
        }
    };
    let write = write_schema(tp, &actual)?;
    let name = &tp.job.source;
    let fingerprint = tp.fingerprint();
    let planned = match ctx.state.table(name)? {
        Some(rec) if rec.fingerprint != fingerprint => {
            return Err(Error::config(format!(
                "table {name}: the job's mapping, key or filter changed since this table's copy was planned; \
                 copying on would mix two mappings in {}. Start over with a new state store (and an empty target)",
                tp.target_name(),
            )));
        }
        Some(rec) => rec.planned,
        None => {
            ctx.state.begin_table(name, tp.target_name(), &fingerprint)?;
            false
        }
    };
    Ok((write, planned))
}

/// Whether a table's chunks may travel in the engine's bulk format: same engine on
/// both sides, plain columns only, every target column exactly the source column's
/// type and at least as nullable. Then every source value fits by construction (and
/// verify may compare chunks by the databases' checksums).
pub(crate) fn raw_eligible(
    source: &dyn Connector,
    target: &dyn Connector,
    tp: &TablePlan,
    write: &TableSchema,
) -> bool {
    source.engine() == target.engine()
        && tp.scan.select.iter().zip(&write.columns).all(|(item, target)| match &item.expr {
            SelectExpr::Column(c) => tp.source.column(c).is_some_and(|source| {
                source.native == target.native && source.ty == target.ty && (target.nullable || !source.nullable)
            }),
            SelectExpr::Sql(_) => false,
        })
}

struct Shared {
    queue: Mutex<VecDeque<(usize, ChunkRecord)>>,
    /// The planner is still adding chunks.
    planning: AtomicBool,
    /// Wakes idle workers when chunks are queued or planning ends.
    more: Notify,
    /// Table index -> error message of the permanent error that stopped it.
    failed: Mutex<HashMap<usize, String>>,
    /// An error that stops the whole run (state store).
    fatal: Mutex<Option<Error>>,
    /// Table index -> (chunks, rows) copied by this run.
    copied: Mutex<HashMap<usize, (u64, u64)>>,
    tables: Vec<Table>,
    throttle: Throttle,
    limits: Limits,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| Error::internal("a copy task panicked while holding a lock"))
}

impl Shared {
    fn next(&self) -> Option<(usize, ChunkRecord)> {
        let mut q = self.queue.lock().ok()?;
        let failed = self.failed.lock().ok()?;
        while let Some((i, c)) = q.pop_front() {
            if !failed.contains_key(&i) {
                return Some((i, c));
            }
        }
        None
    }

    fn push(&self, table: usize, chunks: Vec<ChunkRecord>) -> Result<()> {
        lock(&self.queue)?.extend(chunks.into_iter().map(|c| (table, c)));
        self.more.notify_waiters();
        Ok(())
    }

    fn is_failed(&self, table: usize) -> bool {
        self.failed.lock().map(|f| f.contains_key(&table)).unwrap_or(true)
    }

    fn has_fatal(&self) -> bool {
        self.fatal.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    /// Records an error: state store and internal errors stop the run, others stop
    /// their table.
    fn record_error(&self, table: usize, ctx: &CopyContext, e: Error) {
        if matches!(e.kind(), ErrorKind::State | ErrorKind::Internal) {
            tracing::error!(error = %e, "copy stopped");
            if let Ok(mut f) = self.fatal.lock() {
                f.get_or_insert(e);
            }
        } else {
            tracing::error!(table = %self.tables[table].plan.job.source, error = %e, "table stopped");
            ctx.progress.tables[table].set_phase(Phase::Failed);
            if let Ok(mut f) = self.failed.lock() {
                f.entry(table).or_insert_with(|| e.to_string());
            }
        }
        self.more.notify_waiters();
    }
}

/// A task's own connections, opened lazily and dropped after a transient error.
#[derive(Default)]
struct Conns {
    reader: Option<Box<dyn Reader>>,
    writer: Option<Box<dyn Writer>>,
    /// The memory of the last chunk encoded by the writer's `BulkEncoder`, for the next.
    buffer: Vec<u8>,
}

impl Conns {
    async fn reader(&mut self, ctx: &CopyContext) -> Result<&mut dyn Reader> {
        if self.reader.is_none() {
            self.reader = Some(ctx.source.reader().await?);
        }
        match self.reader.as_deref_mut() {
            Some(r) => Ok(r),
            None => Err(Error::internal("no reader")),
        }
    }

    async fn writer(&mut self, ctx: &CopyContext) -> Result<&mut dyn Writer> {
        if self.writer.is_none() {
            self.writer = Some(ctx.target.writer().await?);
        }
        match self.writer.as_deref_mut() {
            Some(w) => Ok(w),
            None => Err(Error::internal("no writer")),
        }
    }
}

/// Plans the chunks of the tables in `todo`, one table after the other.
async fn planner(ctx: CopyContext, shared: Arc<Shared>, todo: Vec<usize>) {
    let mut conns = Conns::default();
    for ti in todo {
        let mut backoff = ctx.retry.backoff();
        loop {
            if ctx.stop.load(Ordering::Relaxed) || shared.has_fatal() || shared.is_failed(ti) {
                break;
            }
            match plan_chunks(&ctx, &shared, ti, &mut conns).await {
                Ok(()) => break,
                Err(e) => {
                    conns = Conns::default();
                    if let Err(e) = backoff.retry_after("plan chunks", e).await {
                        shared.record_error(ti, &ctx, e.in_table(&shared.tables[ti].plan.job.source));
                        break;
                    }
                }
            }
        }
    }
    shared.planning.store(false, Ordering::Relaxed);
    shared.more.notify_waiters();
}

/// Walks one table's key index from where earlier runs (or attempts) stopped.
async fn plan_chunks(ctx: &CopyContext, shared: &Shared, ti: usize, conns: &mut Conns) -> Result<()> {
    let tp = &shared.tables[ti].plan;
    let name = &tp.job.source;
    let existing = ctx.state.chunks(name)?;
    let reader = conns.reader(ctx).await?;
    let mut walk = Walk { ctx, shared, ti, step: ctx.settings.chunk_rows.max(1) };
    let Some(col) = &tp.job.partition_by else {
        let after = existing.last().and_then(|c| c.range.upto.clone());
        let estimate = tp.estimated_rows.saturating_sub(existing.len() as u64 * walk.step);
        return walk.segment(reader, &tp.scan, None, after, estimate, true).await;
    };
    let ty = tp.source.column(col).map(|c| c.ty.clone()).ok_or_else(|| Error::schema(format!("no column {col}")))?;
    let parts = reader.partitions(&tp.scan.table, col, &ty, tp.scan.filter.as_deref()).await?;
    // A partition is planned when its open-ended last chunk is stored; the one the
    // walk was in continues after its last boundary; the others follow, smallest
    // first (the order of `partitions`, which may differ from an earlier run's).
    let finished: Vec<Value> =
        existing.iter().filter(|c| c.range.upto.is_none()).filter_map(|c| c.partition.clone()).collect();
    let current =
        existing.last().filter(|c| c.range.upto.is_some()).and_then(|c| c.partition.clone().zip(c.range.upto.clone()));
    let mut segments: Vec<(Value, Option<Vec<Value>>, u64)> = Vec::new();
    if let Some((p, after)) = current {
        let count = parts.iter().find(|(v, _)| *v == p).map(|(_, n)| *n).unwrap_or(0);
        segments.push((p, Some(after), count));
    }
    for (value, count) in parts {
        if !finished.contains(&value) && segments.first().is_none_or(|(p, _, _)| *p != value) {
            segments.push((value, None, count));
        }
    }
    if segments.is_empty() {
        ctx.state.add_chunks(name, &[], true)?;
        return Ok(());
    }
    let last = segments.len() - 1;
    for (i, (value, after, count)) in segments.into_iter().enumerate() {
        if ctx.stop.load(Ordering::Relaxed) || shared.is_failed(ti) {
            return Ok(());
        }
        let mut scan = tp.scan.clone();
        scan.partition = Some(PartitionFilter { column: col.clone(), value: value.clone() });
        walk.segment(reader, &scan, Some(value), after, count, i == last).await?;
    }
    Ok(())
}

/// Cuts one key space (a table, or one partition of it) into chunks.
struct Walk<'a> {
    ctx: &'a CopyContext,
    shared: &'a Shared,
    ti: usize,
    step: u64,
}

impl Walk<'_> {
    /// Plans chunks after `after` to the end of `scan`'s rows; the last one is
    /// open-ended. `last_segment`: that chunk completes the table's planning.
    async fn segment(
        &mut self,
        reader: &mut dyn Reader,
        scan: &ScanSpec,
        partition: Option<Value>,
        mut after: Option<Vec<Value>>,
        estimate: u64,
        last_segment: bool,
    ) -> Result<()> {
        let mut planned = 0u64;
        loop {
            if self.ctx.stop.load(Ordering::Relaxed) || self.shared.is_failed(self.ti) {
                return Ok(());
            }
            let next = reader.key_after(scan, after.as_deref(), self.step).await?;
            let done = next.is_none();
            let rows_estimate = if done { estimate.saturating_sub(planned) } else { self.step };
            let chunk = ChunkPlan {
                partition: partition.clone(),
                range: KeyRange { after, upto: next.clone() },
                rows_estimate,
            };
            self.emit(chunk, done && last_segment)?;
            planned += self.step;
            match next {
                Some(k) => after = Some(k),
                None => return Ok(()),
            }
        }
    }

    /// Stores a chunk, then queues it.
    fn emit(&self, chunk: ChunkPlan, planning_done: bool) -> Result<()> {
        let name = &self.shared.tables[self.ti].plan.job.source;
        let records = self.ctx.state.add_chunks(name, &[chunk], planning_done)?;
        self.ctx.progress.tables[self.ti].chunks_total.fetch_add(records.len() as u64, Ordering::Relaxed);
        self.shared.push(self.ti, records)
    }
}

async fn worker(id: usize, ctx: CopyContext, shared: Arc<Shared>) {
    let mut conns = Conns::default();
    loop {
        if ctx.stop.load(Ordering::Relaxed) || shared.has_fatal() {
            return;
        }
        // registered before looking at the queue, so a push in between is not missed
        let more = shared.more.notified();
        let Some((ti, chunk)) = shared.next() else {
            if !shared.planning.load(Ordering::Relaxed) && lock(&shared.queue).map(|q| q.is_empty()).unwrap_or(true) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), more).await;
            continue;
        };
        ctx.progress.tables[ti].set_phase(Phase::Copying);
        match copy_chunk(&ctx, &shared, &mut conns, ti, &chunk).await {
            Ok(rows) => {
                if let Ok(mut c) = shared.copied.lock() {
                    let e = c.entry(ti).or_default();
                    e.0 += 1;
                    e.1 += rows;
                }
                let p = &ctx.progress.tables[ti];
                p.rows_done.fetch_add(rows, Ordering::Relaxed);
                p.chunks_done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(worker = id, chunk = chunk.seq, "chunk failed");
                shared.record_error(ti, &ctx, e);
            }
        }
    }
}

/// A chunk's rows as read: decoded values, the engine's own bulk format, or decoded
/// values fitted and encoded by the writer's [`BulkEncoder`].
enum Payload {
    Rows(Vec<Row>),
    Raw(RawRows),
    Encoded(RawRows),
}

impl Payload {
    fn rows(&self) -> u64 {
        match self {
            Payload::Rows(r) => r.len() as u64,
            Payload::Raw(r) | Payload::Encoded(r) => r.rows,
        }
    }
}

/// Reads, fits, writes and checkpoints one chunk. Returns the rows written.
async fn copy_chunk(
    ctx: &CopyContext,
    shared: &Shared,
    conns: &mut Conns,
    ti: usize,
    chunk: &ChunkRecord,
) -> Result<u64> {
    let table = &shared.tables[ti];
    let tp = &table.plan;
    let name = &tp.job.source;
    ctx.tracker.chunk_started(name, chunk.seq);
    let _in_flight = InFlight { tracker: &ctx.tracker, table: name, seq: chunk.seq };
    ctx.state.start_chunk(name, chunk.seq)?;
    let mut scan = tp.scan.clone();
    scan.partition = chunk
        .partition
        .clone()
        .and_then(|value| tp.job.partition_by.clone().map(|column| PartitionFilter { column, value }));

    let mut payload = None;
    if table.raw.load(Ordering::Relaxed) {
        payload = read(ctx, conns, &scan, &chunk.range, true).await.map_err(|e| e.in_table(name))?;
        if payload.is_none() {
            // the engine has no bulk format: decode from now on
            table.raw.store(false, Ordering::Relaxed);
        }
    }
    let payload = match payload {
        Some(p) => p,
        None => match read_encoded(ctx, conns, &scan, &chunk.range, tp, &table.write, &shared.limits)
            .await
            .map_err(|e| e.in_table(name))?
        {
            Some(raw) => Payload::Encoded(raw),
            None => match read(ctx, conns, &scan, &chunk.range, false).await.map_err(|e| e.in_table(name))? {
                Some(Payload::Rows(rows)) => Payload::Rows(fit_rows(rows, tp, &table.write, &shared.limits)?),
                _ => return Err(Error::internal("a scan returned no rows object")),
            },
        },
    };
    shared.throttle.acquire(payload.rows()).await;
    match payload {
        Payload::Raw(_) => table.wrote_raw.store(true, Ordering::Relaxed),
        Payload::Rows(_) | Payload::Encoded(_) => table.wrote_rows.store(true, Ordering::Relaxed),
    }
    let written = write(ctx, conns, &table.write, &payload).await.map_err(|e| e.in_table(name))?;
    if let Payload::Encoded(raw) = payload {
        conns.buffer = raw.data;
    }
    ctx.state.finish_chunk(name, chunk.seq, written)?;
    Ok(written)
}

/// Tells the tracker a chunk ended, however `copy_chunk` returns: after the
/// checkpoint, or on an error (the write then committed nothing).
struct InFlight<'a> {
    tracker: &'a CopyTracker,
    table: &'a str,
    seq: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.tracker.chunk_ended(self.table, self.seq);
    }
}

/// Reads a chunk, retrying transient errors on a fresh connection. With `raw`,
/// `Ok(None)` means the engine has no bulk format.
async fn read(
    ctx: &CopyContext,
    conns: &mut Conns,
    scan: &ScanSpec,
    range: &KeyRange,
    raw: bool,
) -> Result<Option<Payload>> {
    let mut backoff = ctx.retry.backoff();
    loop {
        let attempt = async {
            let reader = conns.reader(ctx).await?;
            if raw {
                Ok(reader.scan_raw(scan, range).await?.map(Payload::Raw))
            } else {
                Ok(Some(Payload::Rows(reader.scan(scan, range).await?)))
            }
        }
        .await;
        match attempt {
            Ok(p) => return Ok(p),
            Err(e) => {
                conns.reader = None;
                backoff.retry_after("read chunk", e).await?;
            }
        }
    }
}

/// Writes a chunk in one target transaction, retrying transient errors on a fresh
/// connection (the write is idempotent, so a retry after an unknown outcome is safe).
async fn write(ctx: &CopyContext, conns: &mut Conns, table: &TableSchema, payload: &Payload) -> Result<u64> {
    if payload.rows() == 0 {
        return Ok(0);
    }
    let mut backoff = ctx.retry.backoff();
    loop {
        let attempt = async {
            let writer = conns.writer(ctx).await?;
            match payload {
                Payload::Rows(rows) => writer.upsert(table, rows).await,
                Payload::Raw(raw) | Payload::Encoded(raw) => writer.upsert_raw(table, raw).await,
            }
        }
        .await;
        match attempt {
            Ok(n) => return Ok(n),
            Err(e) => {
                conns.writer = None;
                backoff.retry_after("write chunk", e).await?;
            }
        }
    }
}

/// Reads a chunk and fits each row as it arrives, encoding it at once with the
/// writer's [`BulkEncoder`] (while its values are still in the CPU's cache; the
/// decoded row is then dropped): what `upsert` would send, each value checked as
/// `upsert` checks it, kept in the target's compact encoding. `Ok(None)` when the
/// writer has no encoder. Transient errors are retried from the start of the chunk
/// with a fresh encoder, on fresh connections.
async fn read_encoded(
    ctx: &CopyContext,
    conns: &mut Conns,
    scan: &ScanSpec,
    range: &KeyRange,
    tp: &TablePlan,
    write: &TableSchema,
    limits: &Limits,
) -> Result<Option<RawRows>> {
    let is_key = key_columns(tp, write);
    let mut backoff = ctx.retry.backoff();
    loop {
        let buffer = std::mem::take(&mut conns.buffer);
        let encoder = match conns.writer(ctx).await {
            Ok(w) => w.bulk_encoder(write, buffer).await,
            Err(e) => Err(e),
        };
        let mut encoder = match encoder {
            Ok(Some(encoder)) => encoder,
            Ok(None) => return Ok(None),
            Err(e) => {
                conns.writer = None;
                backoff.retry_after("prepare the write", e).await?;
                continue;
            }
        };
        let attempt = async {
            let reader = conns.reader(ctx).await?;
            reader
                .scan_each(scan, range, &mut |mut row| {
                    fit_row(&mut row, &is_key, tp, write, limits)?;
                    encoder.push(&row).map_err(|e| at_row_key(e, &row, tp))
                })
                .await
        }
        .await;
        match attempt {
            Ok(_) => return Ok(Some(encoder.finish())),
            Err(e) => {
                conns.reader = None;
                backoff.retry_after("read chunk", e).await?;
            }
        }
    }
}

/// Fits every value to its target column; the first value that does not fit is an
/// error naming table, key and column.
pub(crate) fn fit_rows(mut rows: Vec<Row>, tp: &TablePlan, write: &TableSchema, limits: &Limits) -> Result<Vec<Row>> {
    let is_key = key_columns(tp, write);
    for row in &mut rows {
        fit_row(row, &is_key, tp, write, limits)?;
    }
    Ok(rows)
}

fn key_columns(tp: &TablePlan, write: &TableSchema) -> Vec<bool> {
    (0..write.columns.len()).map(|i| tp.key_positions.contains(&i)).collect()
}

/// `e`, located at the table and `row`'s key.
fn at_row_key(e: Error, row: &Row, tp: &TablePlan) -> Error {
    let key = tp.key_positions.iter().map(|&p| row[p].clone()).collect();
    e.at_key(key).in_table(&tp.job.source)
}

/// Fits one row's values in place (see [`fit_rows`]).
fn fit_row(row: &mut Row, is_key: &[bool], tp: &TablePlan, write: &TableSchema, limits: &Limits) -> Result<()> {
    for i in 0..row.len() {
        // a key cell is kept so the error can name the whole key
        let kept = is_key[i].then(|| row[i].clone());
        let v = std::mem::replace(&mut row[i], Value::Null);
        match fit(v, &write.columns[i], limits) {
            Ok(v) => row[i] = v,
            Err(e) => {
                if let Some(k) = kept {
                    row[i] = k;
                }
                return Err(at_row_key(e, row, tp));
            }
        }
    }
    Ok(())
}
