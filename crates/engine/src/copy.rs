//! The copier: chunked, parallel, throttled, resumable copy of existing rows.
//!
//! 1. **Prepare** each table: create the target table if missing, then plan its
//!    chunks once (walking the source's key index, per partition smallest first)
//!    and store them. A resumed run reuses the stored chunks.
//! 2. **Copy**: N workers, each with its own source and target connection, take the
//!    next unfinished chunk, read it, fit every value to the target column
//!    (`convert::fit`: a value the target cannot hold stops that table with table,
//!    key and column named, before anything of the chunk is written), write it in
//!    one target transaction (idempotent upsert), and only then checkpoint the chunk.
//! 3. Transient errors are retried with backoff on a fresh connection; a permanent
//!    error stops its table (the other tables go on); a stop request lets every
//!    worker finish the chunk in hand and checkpoint it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pontoon_core::convert::fit;
use pontoon_core::{
    Connector, Error, ErrorKind, KeyRange, Limits, PartitionFilter, Reader, Result, Row, TableSchema, Value, Writer,
};
use pontoon_state::{ChunkPlan, ChunkRecord, StateStore, TableState};
use serde::Serialize;

use crate::job::CopySettings;
use crate::plan::{Plan, TablePlan, write_schema};
use crate::progress::{Phase, Progress};
use crate::retry::RetryPolicy;
use crate::throttle::Throttle;

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
}

/// One table, ready to copy.
#[derive(Debug)]
struct Prepared {
    plan: TablePlan,
    write: TableSchema,
    pending: Vec<ChunkRecord>,
    skipped: u64,
    total: u64,
}

/// Copies every table of `plan`. Returns the report; tables that failed carry their
/// error in it (the run goes on with the other tables). Errors of the run itself
/// (state store, preparation) are returned as `Err`.
pub async fn copy(ctx: &CopyContext, plan: &Plan) -> Result<CopyReport> {
    let started = Instant::now();
    let mut prepared = Vec::new();
    {
        let mut conns = Conns::default();
        for (i, tp) in plan.tables.iter().enumerate() {
            ctx.progress.tables[i].set_phase(Phase::Planning);
            let mut backoff = ctx.retry.backoff();
            let p = loop {
                match prepare_with(ctx, tp, &mut conns).await {
                    Ok(p) => break p,
                    Err(e) => {
                        conns = Conns::default();
                        backoff.retry_after("prepare table", e).await.map_err(|e| e.in_table(&tp.job.source))?;
                    }
                }
            };
            let tprog = &ctx.progress.tables[i];
            tprog.chunks_total.store(p.total, Ordering::Relaxed);
            tprog.chunks_done.store(p.skipped, Ordering::Relaxed);
            tprog.set_phase(if p.pending.is_empty() { Phase::Done } else { Phase::Waiting });
            prepared.push(p);
        }
    }

    let queue: VecDeque<(usize, ChunkRecord)> =
        prepared.iter().enumerate().flat_map(|(i, p)| p.pending.iter().cloned().map(move |c| (i, c))).collect();
    let shared = Arc::new(Shared {
        queue: Mutex::new(queue),
        failed: Mutex::new(HashMap::new()),
        fatal: Mutex::new(None),
        copied: Mutex::new(HashMap::new()),
        tables: prepared.iter().map(|p| (p.plan.clone(), p.write.clone())).collect(),
        throttle: Throttle::new(ctx.settings.max_rows_per_second),
        limits: ctx.target.limits(),
    });
    let workers = ctx.settings.workers.max(1).min(shared.queue.lock().map(|q| q.len()).unwrap_or(1).max(1));
    let mut set = tokio::task::JoinSet::new();
    for id in 0..workers {
        let ctx = ctx.clone();
        let shared = shared.clone();
        set.spawn(async move { worker(id, ctx, shared).await });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            return Err(Error::internal(format!("a copy worker panicked: {e}")));
        }
    }
    if let Some(e) = shared.fatal.lock().map_err(|_| Error::internal("poisoned"))?.take() {
        return Err(e);
    }

    let failed = shared.failed.lock().map_err(|_| Error::internal("poisoned"))?.clone();
    let copied = shared.copied.lock().map_err(|_| Error::internal("poisoned"))?.clone();
    let mut tables = Vec::new();
    let mut interrupted = false;
    for (i, p) in prepared.iter().enumerate() {
        let name = &p.plan.job.source;
        let (chunks, rows) = copied.get(&i).copied().unwrap_or((0, 0));
        let remaining = p.pending.len() as u64 - chunks;
        let (state, error) = match failed.get(&i) {
            Some(msg) => {
                ctx.state.set_table_state(name, TableState::Failed, Some(msg))?;
                ctx.progress.tables[i].set_phase(Phase::Failed);
                ("failed", Some(msg.clone()))
            }
            None if remaining == 0 => {
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
            target: p.plan.target_name().to_string(),
            rows,
            chunks_copied: chunks,
            chunks_skipped: p.skipped,
            chunks_total: p.total,
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

/// [`prepare`] on the worker-style connections, opened on first use.
async fn prepare_with(ctx: &CopyContext, tp: &TablePlan, conns: &mut Conns) -> Result<Prepared> {
    if conns.reader.is_none() {
        conns.reader = Some(ctx.source.reader().await?);
    }
    if conns.writer.is_none() {
        conns.writer = Some(ctx.target.writer().await?);
    }
    match (conns.reader.as_mut(), conns.writer.as_mut()) {
        (Some(r), Some(w)) => prepare(ctx, tp, r.as_mut(), w.as_mut()).await,
        _ => Err(Error::internal("no connection")),
    }
}

/// Creates the target table if needed, checks the stored plan, and plans chunks the
/// first time. Safe to run again after a failure: planning is all or nothing.
async fn prepare(
    ctx: &CopyContext,
    tp: &TablePlan,
    reader: &mut dyn Reader,
    writer: &mut dyn Writer,
) -> Result<Prepared> {
    let name = &tp.job.source;
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
    let fingerprint = tp.fingerprint();
    match ctx.state.table(name)? {
        Some(rec) if rec.fingerprint != fingerprint => {
            return Err(Error::config(format!(
                "table {name}: the job's mapping, key or filter changed since this table's copy was planned; \
                 copying on would mix two mappings in {}. Remove the state store {} (and the target rows) to start over",
                tp.target_name(),
                "(see `pontoon status`)"
            )));
        }
        Some(_) => {}
        None => {
            let chunks = plan_chunks(ctx, tp, reader).await?;
            tracing::info!(table = %name, chunks = chunks.len(), "planned chunks");
            ctx.state.plan_table(name, tp.target_name(), &fingerprint, &chunks)?;
        }
    }
    let all = ctx.state.chunks(name)?;
    let total = all.len() as u64;
    let pending: Vec<ChunkRecord> = all.into_iter().filter(|c| !c.done).collect();
    let skipped = total - pending.len() as u64;
    if !pending.is_empty() {
        ctx.state.set_table_state(name, TableState::Copying, None)?;
    }
    Ok(Prepared { plan: tp.clone(), write, pending, skipped, total })
}

/// Walks the key index to cut the table into chunks of `chunk_rows` rows; with
/// `partition_by`, per partition, smallest partition first.
async fn plan_chunks(ctx: &CopyContext, tp: &TablePlan, reader: &mut dyn Reader) -> Result<Vec<ChunkPlan>> {
    let step = ctx.settings.chunk_rows.max(1);
    let mut out = Vec::new();
    match &tp.job.partition_by {
        Some(col) => {
            let ty =
                tp.source.column(col).map(|c| c.ty.clone()).ok_or_else(|| Error::schema(format!("no column {col}")))?;
            let parts = reader.partitions(&tp.scan.table, col, &ty, tp.scan.filter.as_deref()).await?;
            for (value, count) in parts {
                let mut scan = tp.scan.clone();
                scan.partition = Some(PartitionFilter { column: col.clone(), value: value.clone() });
                walk(reader, &scan, step, count, Some(value), &mut out).await?;
            }
        }
        None => walk(reader, &tp.scan, step, tp.estimated_rows, None, &mut out).await?,
    }
    Ok(out)
}

async fn walk(
    reader: &mut dyn Reader,
    scan: &pontoon_core::ScanSpec,
    step: u64,
    estimate: u64,
    partition: Option<Value>,
    out: &mut Vec<ChunkPlan>,
) -> Result<()> {
    let mut after: Option<Vec<Value>> = None;
    let mut full = 0u64;
    loop {
        match reader.key_after(scan, after.as_deref(), step).await? {
            Some(k) => {
                out.push(ChunkPlan {
                    partition: partition.clone(),
                    range: KeyRange { after: after.take(), upto: Some(k.clone()) },
                    rows_estimate: step,
                });
                after = Some(k);
                full += 1;
            }
            None => {
                let rest = estimate.saturating_sub(full * step);
                out.push(ChunkPlan { partition, range: KeyRange { after, upto: None }, rows_estimate: rest });
                return Ok(());
            }
        }
    }
}

struct Shared {
    queue: Mutex<VecDeque<(usize, ChunkRecord)>>,
    /// Table index -> error message of the permanent error that stopped it.
    failed: Mutex<HashMap<usize, String>>,
    /// An error that stops the whole run (state store).
    fatal: Mutex<Option<Error>>,
    /// Table index -> (chunks, rows) copied by this run.
    copied: Mutex<HashMap<usize, (u64, u64)>>,
    tables: Vec<(TablePlan, TableSchema)>,
    throttle: Throttle,
    limits: Limits,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
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
}

/// A worker's own connections, opened lazily and dropped after a transient error.
#[derive(Default)]
struct Conns {
    reader: Option<Box<dyn Reader>>,
    writer: Option<Box<dyn Writer>>,
}

async fn worker(id: usize, ctx: CopyContext, shared: Arc<Shared>) {
    let mut conns = Conns::default();
    while !ctx.stop.load(Ordering::Relaxed) {
        if shared.fatal.lock().map(|f| f.is_some()).unwrap_or(true) {
            return;
        }
        let Some((ti, chunk)) = shared.next() else {
            return;
        };
        let (tp, write) = &shared.tables[ti];
        ctx.progress.tables[ti].set_phase(Phase::Copying);
        match copy_chunk(&ctx, &shared, &mut conns, tp, write, &chunk).await {
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
            Err(e) if e.kind() == ErrorKind::State || e.kind() == ErrorKind::Internal => {
                tracing::error!(worker = id, error = %e, "copy stopped");
                if let Ok(mut f) = shared.fatal.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
            Err(e) => {
                tracing::error!(worker = id, table = %tp.job.source, chunk = chunk.seq, error = %e, "table stopped");
                ctx.progress.tables[ti].set_phase(Phase::Failed);
                if let Ok(mut f) = shared.failed.lock() {
                    f.entry(ti).or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Reads, fits, writes and checkpoints one chunk. Returns the rows written.
async fn copy_chunk(
    ctx: &CopyContext,
    shared: &Shared,
    conns: &mut Conns,
    tp: &TablePlan,
    write: &TableSchema,
    chunk: &ChunkRecord,
) -> Result<u64> {
    let table = &tp.job.source;
    ctx.state.start_chunk(table, chunk.seq)?;
    let mut scan = tp.scan.clone();
    scan.partition = chunk
        .partition
        .clone()
        .and_then(|value| tp.job.partition_by.clone().map(|column| PartitionFilter { column, value }));
    let mut backoff = ctx.retry.backoff();
    let rows = loop {
        match read_chunk(ctx, conns, &scan, &chunk.range).await {
            Ok(rows) => break rows,
            Err(e) => {
                conns.reader = None;
                backoff.retry_after("read chunk", e).await.map_err(|e| e.in_table(table))?;
            }
        }
    };
    let rows = fit_rows(rows, tp, write, &shared.limits)?;
    shared.throttle.acquire(rows.len() as u64).await;
    let mut backoff = ctx.retry.backoff();
    let written = loop {
        match write_chunk(ctx, conns, write, &rows).await {
            Ok(n) => break n,
            Err(e) => {
                conns.writer = None;
                backoff.retry_after("write chunk", e).await.map_err(|e| e.in_table(table))?;
            }
        }
    };
    ctx.state.finish_chunk(table, chunk.seq, written)?;
    Ok(written)
}

async fn read_chunk(
    ctx: &CopyContext,
    conns: &mut Conns,
    scan: &pontoon_core::ScanSpec,
    range: &KeyRange,
) -> Result<Vec<Row>> {
    if conns.reader.is_none() {
        conns.reader = Some(ctx.source.reader().await?);
    }
    match conns.reader.as_mut() {
        Some(r) => r.scan(scan, range).await,
        None => Err(Error::internal("no reader")),
    }
}

async fn write_chunk(ctx: &CopyContext, conns: &mut Conns, write: &TableSchema, rows: &[Row]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    if conns.writer.is_none() {
        conns.writer = Some(ctx.target.writer().await?);
    }
    match conns.writer.as_mut() {
        Some(w) => w.upsert(write, rows).await,
        None => Err(Error::internal("no writer")),
    }
}

/// Fits every value to its target column; the first value that does not fit is an
/// error naming table, key and column.
fn fit_rows(mut rows: Vec<Row>, tp: &TablePlan, write: &TableSchema, limits: &Limits) -> Result<Vec<Row>> {
    let is_key: Vec<bool> = (0..write.columns.len()).map(|i| tp.key_positions.contains(&i)).collect();
    for row in &mut rows {
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
                    let key = tp.key_positions.iter().map(|&p| row[p].clone()).collect();
                    return Err(e.at_key(key).in_table(&tp.job.source));
                }
            }
        }
    }
    Ok(rows)
}
