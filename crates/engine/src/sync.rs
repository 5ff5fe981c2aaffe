//! The syncer: replays every change captured since P0 into the target.
//!
//! One batch at a time, in log order (so applies to one key are never reordered):
//! 1. read a batch of change events (table + key) from the capture, from the
//!    checkpointed position;
//! 2. per table, wait until the copy running beside the sync has no chunk in flight
//!    that was in flight when the batch was read ([`CopyTracker`], rule 3);
//! 3. re-read the current source rows of the batch's distinct keys through the job's
//!    mapping and filter (rule 2), fit them to the target, and in one target
//!    transaction upsert the rows found and delete the keys not found (gone, or out
//!    of the filter), with the `version_column` guard when set;
//! 4. checkpoint the batch's end position after the commit (rule 5), then let the
//!    capture release it.
//!
//! A DDL statement on a migrated table stops the sync after the events before it,
//! naming the table and the statement. Transient errors are retried with backoff
//! on fresh connections (and a fresh capture); a crash replays at most one batch,
//! which is idempotent because every apply re-reads the source.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pontoon_core::capture::{Capture, CaptureBatch, CaptureSpec, CaptureTable};
use pontoon_core::convert::fit;
use pontoon_core::{Connector, Error, ErrorKind, Limits, Position, Reader, Result, Row, SelectExpr, Value, Writer};
use pontoon_state::{StateStore, SyncLag};

use crate::copy::fit_rows;
use crate::plan::{Plan, TablePlan};
use crate::retry::RetryPolicy;
use crate::track::CopyTracker;
use crate::verify::ChangeSampler;

/// How long an idle read waits for new changes.
const IDLE_WAIT: Duration = Duration::from_millis(300);
/// How often the lag is measured and stored while syncing.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Live sync counters for the progress display (lock-free).
#[derive(Debug, Default)]
pub struct SyncProgress {
    pub events: AtomicU64,
    /// Last measured backlog in events (`u64::MAX`: unknown).
    pub behind_events: AtomicU64,
    /// Last measured lag in milliseconds (`-1`: unknown).
    pub lag_millis: AtomicI64,
    /// The copy beside the sync has finished.
    pub copy_done: AtomicBool,
    /// Incremental verify: applied keys compared on both sides, and those that differ.
    pub verified_keys: AtomicU64,
    pub verify_differences: AtomicU64,
}

impl SyncProgress {
    pub fn new() -> SyncProgress {
        SyncProgress { behind_events: AtomicU64::new(u64::MAX), lag_millis: AtomicI64::new(-1), ..Default::default() }
    }
}

/// When the syncer returns by itself (it always returns when `stop` is set).
#[derive(Debug, Clone)]
pub enum Until {
    /// Only when stopped.
    Stopped,
    /// Once the flag is set, the copy is done, and a read that started after both
    /// finds nothing new: the target has every change committed before the flag
    /// was set (`pontoon run --drain` sets it at once; the demo when its writer stops).
    Drained(Arc<AtomicBool>),
}

impl Until {
    fn drain_requested(&self) -> bool {
        match self {
            Until::Stopped => false,
            Until::Drained(flag) => flag.load(Ordering::Relaxed),
        }
    }
}

/// Everything a sync needs.
#[derive(Debug, Clone)]
pub struct SyncContext {
    pub source: Arc<dyn Connector>,
    pub target: Arc<dyn Connector>,
    pub state: Arc<StateStore>,
    pub plan: Arc<Plan>,
    pub spec: CaptureSpec,
    pub tracker: Arc<CopyTracker>,
    pub stop: Arc<AtomicBool>,
    pub retry: RetryPolicy,
    pub batch_events: usize,
    pub progress: Arc<SyncProgress>,
    /// Incremental verify: receives a share of the keys applied.
    pub changes: Option<ChangeSampler>,
}

/// What a sync run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    pub events: u64,
    pub batches: u64,
    pub position: String,
}

/// The tables a capture follows, from the plan.
pub fn capture_tables(plan: &Plan) -> Vec<CaptureTable> {
    plan.tables
        .iter()
        .map(|tp| CaptureTable {
            table: tp.scan.table.clone(),
            key: tp.scan.key.clone(),
            key_types: tp.scan.key_types.clone(),
        })
        .collect()
}

/// Runs the sync from the checkpointed position until stopped (or caught up).
pub async fn sync(ctx: &SyncContext, until: Until) -> Result<SyncReport> {
    let tables: HashMap<&str, &TablePlan> = ctx.plan.tables.iter().map(|t| (t.scan.table.as_str(), t)).collect();
    let capture_tables = capture_tables(&ctx.plan);
    let limits = ctx.target.limits();
    let mut conns = Conns::default();
    let mut last_lag = Instant::now() - LAG_EVERY;
    let (mut events_total, mut batches_total) = (0u64, 0u64);
    let stopped = || ctx.stop.load(Ordering::Relaxed);
    loop {
        let from = current_position(&ctx.state)?;
        if stopped() {
            return Ok(SyncReport { events: events_total, batches: batches_total, position: from.to_string() });
        }
        let may_end = until.drain_requested() && ctx.progress.copy_done.load(Ordering::Relaxed);
        let read_started = Instant::now();
        let batch = read_batch(ctx, &mut conns, &capture_tables, &from).await?;
        let read_ms = read_started.elapsed().as_millis() as u64;
        let started = Instant::now();
        let applied = apply_batch(ctx, &mut conns, &tables, &limits, &batch).await?;
        let Some(applied) = applied else {
            // stopped while waiting for the copy: nothing of this batch was written
            continue;
        };
        let keys = applied.iter().map(|(_, k)| k.len() as u64).sum();
        if batch.position != from || !batch.events.is_empty() {
            ctx.state.checkpoint_sync(
                &from,
                &batch.position,
                batch.events.len() as u64,
                keys,
                batch.committed_at_micros,
            )?;
            release(&mut conns, &batch.position).await;
            if let Some(sampler) = &ctx.changes {
                for (table, keys) in &applied {
                    sampler.offer(table, keys);
                }
            }
        }
        let n = batch.events.len() as u64;
        events_total += n;
        batches_total += u64::from(n > 0);
        ctx.progress.events.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            tracing::debug!(
                events = n,
                keys,
                from = %from,
                to = %batch.position,
                read_ms,
                apply_ms = started.elapsed().as_millis() as u64,
                "batch applied"
            );
        }
        if let Some(ddl) = &batch.ddl {
            let e = Error::new(
                ErrorKind::Schema,
                format!(
                    "DDL on table {} while syncing: `{}`. The sync stopped before it, at {}; the target has \
                     every change up to there. Change the target and the job to match, then start the \
                     migration over (`pontoon cleanup`, a new state store)",
                    ddl.table,
                    ddl.statement.trim(),
                    batch.position
                ),
            )
            .in_table(ddl.table.clone());
            return Err(e);
        }
        let caught_up = n == 0;
        if caught_up || last_lag.elapsed() >= LAG_EVERY {
            measure_lag(ctx, &mut conns, &batch, caught_up).await;
            last_lag = Instant::now();
        }
        if may_end && caught_up {
            return Ok(SyncReport {
                events: events_total,
                batches: batches_total,
                position: batch.position.to_string(),
            });
        }
    }
}

fn current_position(state: &StateStore) -> Result<Position> {
    Ok(state.sync()?.ok_or_else(|| Error::new(ErrorKind::State, "the sync has no recorded start position"))?.position)
}

/// The syncer's connections and capture, rebuilt after a transient error.
#[derive(Default)]
struct Conns {
    capture: Option<Box<dyn Capture>>,
    reader: Option<Box<dyn Reader>>,
    writer: Option<Box<dyn Writer>>,
}

impl Conns {
    async fn capture(&mut self, ctx: &SyncContext, tables: &[CaptureTable]) -> Result<&mut dyn Capture> {
        if self.capture.is_none() {
            let mut c = ctx.source.capture(&ctx.spec)?;
            c.start(tables).await?;
            self.capture = Some(c);
        }
        match self.capture.as_deref_mut() {
            Some(x) => Ok(x),
            None => Err(Error::internal("no capture")),
        }
    }

    async fn reader(&mut self, ctx: &SyncContext) -> Result<&mut dyn Reader> {
        if self.reader.is_none() {
            self.reader = Some(ctx.source.reader().await?);
        }
        match self.reader.as_deref_mut() {
            Some(x) => Ok(x),
            None => Err(Error::internal("no reader")),
        }
    }

    async fn writer(&mut self, ctx: &SyncContext) -> Result<&mut dyn Writer> {
        if self.writer.is_none() {
            self.writer = Some(ctx.target.writer().await?);
        }
        match self.writer.as_deref_mut() {
            Some(x) => Ok(x),
            None => Err(Error::internal("no writer")),
        }
    }
}

async fn read_batch(
    ctx: &SyncContext,
    conns: &mut Conns,
    tables: &[CaptureTable],
    from: &Position,
) -> Result<CaptureBatch> {
    let mut backoff = ctx.retry.backoff();
    loop {
        let attempt = async { conns.capture(ctx, tables).await?.read(from, ctx.batch_events, IDLE_WAIT).await }.await;
        match attempt {
            Ok(batch) => {
                if batch.position.compare(from).is_none_or(|o| o.is_lt()) {
                    return Err(Error::internal(format!(
                        "the capture returned position {} behind {from}",
                        batch.position
                    )));
                }
                return Ok(batch);
            }
            Err(e) => {
                conns.capture = None;
                backoff.retry_after("read changes", e).await?;
            }
        }
    }
}

/// Applies a batch table by table. Returns the distinct keys per table, or `None`
/// when a stop request came while waiting for the copy (nothing was applied for
/// the tables not reached; the batch is read again next time).
async fn apply_batch<'p>(
    ctx: &SyncContext,
    conns: &mut Conns,
    tables: &HashMap<&str, &'p TablePlan>,
    limits: &Limits,
    batch: &CaptureBatch,
) -> Result<Option<Vec<(&'p str, Vec<Vec<Value>>)>>> {
    // distinct keys per table, in first-seen order
    let mut by_table: Vec<(&'p str, Vec<Vec<Value>>)> = Vec::new();
    let mut seen: HashMap<&str, HashSet<&[Value]>> = HashMap::new();
    for e in &batch.events {
        let Some(tp) = tables.get(e.table.as_str()) else { continue };
        let name = tp.scan.table.as_str();
        if seen.entry(name).or_default().insert(&e.key) {
            match by_table.iter_mut().find(|(t, _)| *t == name) {
                Some((_, keys)) => keys.push(e.key.clone()),
                None => by_table.push((name, vec![e.key.clone()])),
            }
        }
    }
    for (name, keys) in &by_table {
        let tp = tables[name];
        let stopped = || ctx.stop.load(Ordering::Relaxed);
        let Some(write) = ctx.tracker.wait_applicable(name, &stopped).await? else {
            return Ok(None);
        };
        apply_table(ctx, conns, tp, &write, limits, keys).await.map_err(|e| e.in_table(*name))?;
    }
    Ok(Some(by_table))
}

/// Re-reads `keys` of one table and applies what it finds in one transaction.
async fn apply_table(
    ctx: &SyncContext,
    conns: &mut Conns,
    tp: &TablePlan,
    write: &pontoon_core::TableSchema,
    limits: &Limits,
    keys: &[Vec<Value>],
) -> Result<()> {
    let fetch_started = Instant::now();
    let mut backoff = ctx.retry.backoff();
    let rows = loop {
        match async { conns.reader(ctx).await?.fetch_keys(&tp.scan, keys).await }.await {
            Ok(rows) => break rows,
            Err(e) => {
                conns.reader = None;
                backoff.retry_after("re-read changed rows", e).await?;
            }
        }
    };
    let (rows, deletes) = split_found(tp, rows, keys);
    let rows = fit_rows(rows, tp, write, limits)?;
    let deletes = deletes
        .into_iter()
        .map(|key| {
            key.iter()
                .zip(&tp.key_positions)
                .map(|(v, &p)| fit(v.clone(), &write.columns[p], limits))
                .collect::<Result<Vec<Value>>>()
                .map_err(|e| e.at_key(key.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    let version = version_target_column(tp);
    let fetch_ms = fetch_started.elapsed().as_millis() as u64;
    let write_started = Instant::now();
    let mut backoff = ctx.retry.backoff();
    loop {
        let attempt = async { conns.writer(ctx).await?.apply(write, &rows, &deletes, version).await }.await;
        match attempt {
            Ok(_) => {
                let write_ms = write_started.elapsed().as_millis() as u64;
                tracing::debug!(table = %tp.scan.table, keys = keys.len(), fetch_ms, write_ms, "table applied");
                return Ok(());
            }
            Err(e) => {
                conns.writer = None;
                backoff.retry_after("apply changes", e).await?;
            }
        }
    }
}

/// Splits a re-read into the rows to upsert (one per key) and the requested keys
/// with no row any more, which are deleted. A key whose row the database returned
/// under a different spelling (a case-insensitive collation) is both: the old
/// spelling is deleted and the row is written under the one it has now.
pub(crate) fn split_found(tp: &TablePlan, rows: Vec<Row>, keys: &[Vec<Value>]) -> (Vec<Row>, Vec<Vec<Value>>) {
    let mut found: HashSet<Vec<Value>> = HashSet::with_capacity(rows.len());
    let mut unique = Vec::with_capacity(rows.len());
    for row in rows {
        let key: Vec<Value> = tp.key_positions.iter().map(|&p| row[p].clone()).collect();
        if found.insert(key) {
            unique.push(row);
        }
    }
    let gone = keys.iter().filter(|k| !found.contains(*k)).cloned().collect();
    (unique, gone)
}

/// The target column of the job's `version_column` (the plan refuses one that is
/// not copied as a column).
fn version_target_column(tp: &TablePlan) -> Option<&str> {
    let v = tp.job.version_column.as_deref()?;
    tp.scan
        .select
        .iter()
        .position(|s| matches!(&s.expr, SelectExpr::Column(c) if c == v))
        .map(|p| tp.wanted.columns[p].name.as_str())
}

async fn release(conns: &mut Conns, upto: &Position) {
    if let Some(c) = conns.capture.as_deref_mut()
        && let Err(e) = c.release(upto).await
    {
        // harmless: the changes stay in the log and are released with the next batch
        tracing::warn!(error = %e, "could not release applied changes from the source's change log");
        conns.capture = None;
    }
}

async fn measure_lag(ctx: &SyncContext, conns: &mut Conns, batch: &CaptureBatch, caught_up: bool) {
    let now_micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    let seconds =
        if caught_up { Some(0.0) } else { batch.committed_at_micros.map(|t| ((now_micros - t) as f64 / 1e6).max(0.0)) };
    let backlog = match conns.capture.as_deref_mut() {
        Some(c) => c.backlog(&batch.position).await.unwrap_or_default(),
        None => Default::default(),
    };
    let lag = SyncLag { events: backlog.events, bytes: backlog.bytes, seconds };
    ctx.progress.behind_events.store(lag.events.unwrap_or(u64::MAX), Ordering::Relaxed);
    ctx.progress.lag_millis.store(seconds.map(|s| (s * 1000.0) as i64).unwrap_or(-1), Ordering::Relaxed);
    if let Err(e) = ctx.state.set_sync_lag(&lag) {
        tracing::warn!(error = %e, "could not store the sync lag");
    }
}
