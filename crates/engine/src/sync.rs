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
use std::time::{Duration, Instant};

use pontoon_core::capture::{Capture, CaptureBatch, CaptureSpec, CaptureTable};
use pontoon_core::convert::fit;
use pontoon_core::{Connector, Error, ErrorKind, Limits, Position, Reader, Result, Row, SelectExpr, Value, Writer};
use pontoon_state::{StateStore, SyncLag};

use crate::copy::fit_rows;
use crate::plan::{Plan, TablePlan};
use crate::retry::RetryPolicy;
use crate::track::CopyTracker;
use crate::verify::{ChangeSampler, now_micros};

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

/// Runs the sync from the checkpointed position until stopped (or caught up): each
/// batch is read and re-read ([`prepare`]), then written and checkpointed
/// ([`write_batch`]). Where the capture allows it ([`Capture::reads_ahead`]), the
/// next batch is prepared while one is written: its re-read still starts after the
/// previous one's, and batches are still written and checkpointed in order.
pub async fn sync(ctx: &SyncContext, until: Until) -> Result<SyncReport> {
    let tables: HashMap<&str, &TablePlan> = ctx.plan.tables.iter().map(|t| (t.scan.table.as_str(), t)).collect();
    let capture_tables = capture_tables(&ctx.plan);
    let mut source = SourceConns::default();
    let mut writer: Option<Box<dyn Writer>> = None;
    let mut last_lag = Instant::now() - LAG_EVERY;
    let (mut events_total, mut batches_total) = (0u64, 0u64);
    let stopped = || ctx.stop.load(Ordering::Relaxed);
    // a batch may end the sync if it is empty: a drain was requested and the copy
    // was done before the batch was read
    let drain_may_end = || until.drain_requested() && ctx.progress.copy_done.load(Ordering::Relaxed);
    // the batch read ahead: where it was read from, whether it may end the sync
    let mut ahead: Option<(Position, bool, Result<Option<Prepared>>)> = None;
    loop {
        let from = current_position(&ctx.state)?;
        if stopped() {
            return Ok(SyncReport { events: events_total, batches: batches_total, position: from.to_string() });
        }
        let (may_end, prepared) = match ahead.take() {
            Some((at, may_end, prepared)) if at == from => (may_end, prepared?),
            _ => {
                let may_end = drain_may_end();
                (may_end, prepare(ctx, &mut source, &tables, &capture_tables, &from, may_end).await?)
            }
        };
        let Some(prepared) = prepared else {
            // stopped while waiting for the copy: nothing of this batch was written
            continue;
        };
        let batch = &prepared.batch;
        let write = async {
            let started = Instant::now();
            write_batch(ctx, &mut writer, &prepared).await.map(|()| started.elapsed().as_millis() as u64)
        };
        let read_ahead = !batch.events.is_empty()
            && batch.ddl.is_none()
            && source.capture.as_deref().is_some_and(|c| c.reads_ahead());
        let write_ms = if read_ahead {
            let next = batch.position.clone();
            let next_may_end = drain_may_end();
            let read = prepare(ctx, &mut source, &tables, &capture_tables, &next, next_may_end);
            let (written, read) = tokio::join!(write, read);
            ahead = Some((next, next_may_end, read));
            written?
        } else {
            write.await?
        };
        let keys = prepared.tables.iter().map(|t| t.keys.len() as u64).sum();
        if batch.position != from || !batch.events.is_empty() {
            ctx.state.checkpoint_sync(
                &from,
                &batch.position,
                batch.events.len() as u64,
                keys,
                batch.committed_at_micros,
            )?;
            release(&mut source, &batch.position).await;
            if let Some(sampler) = &ctx.changes {
                for t in &prepared.tables {
                    sampler.offer(&t.tp.scan.table, &t.keys);
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
                read_ms = prepared.read_ms,
                fetch_ms = prepared.fetch_ms,
                write_ms,
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
            measure_lag(ctx, &mut source, &prepared, caught_up).await;
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

/// The source side of the syncer (capture and re-reads), rebuilt after a transient
/// error.
#[derive(Default)]
struct SourceConns {
    capture: Option<Box<dyn Capture>>,
    reader: Option<Box<dyn Reader>>,
}

impl SourceConns {
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
}

/// A batch read from the capture with its rows re-read and fitted, ready to write.
struct Prepared<'p> {
    batch: CaptureBatch,
    /// When the read began (microseconds since the epoch).
    read_at_micros: i64,
    read_ms: u64,
    fetch_ms: u64,
    tables: Vec<PreparedTable<'p>>,
}

/// One table's part of a [`Prepared`] batch.
struct PreparedTable<'p> {
    tp: &'p TablePlan,
    write: Arc<pontoon_core::TableSchema>,
    /// The batch's distinct keys of the table, in first-seen order.
    keys: Vec<Vec<Value>>,
    rows: Vec<Row>,
    deletes: Vec<Vec<Value>>,
}

/// Reads the batch after `from`, waits per table until the copy allows applying it
/// (rule 3), re-reads the current source rows of its distinct keys through the
/// mapping and filter (rule 2) and fits them to the target. `None`: a stop request
/// came while waiting for the copy. A batch that `may_end` the sync does not wait
/// for changes: coming back empty (caught up) is all it has to find out.
async fn prepare<'p>(
    ctx: &SyncContext,
    source: &mut SourceConns,
    tables: &HashMap<&'p str, &'p TablePlan>,
    capture_tables: &[CaptureTable],
    from: &Position,
    may_end: bool,
) -> Result<Option<Prepared<'p>>> {
    let read_started = Instant::now();
    let read_at_micros = now_micros();
    let wait = if may_end { Duration::ZERO } else { IDLE_WAIT };
    let batch = read_batch(ctx, source, capture_tables, from, wait).await?;
    let read_ms = read_started.elapsed().as_millis() as u64;
    let fetch_started = Instant::now();
    // distinct keys per table, in first-seen order
    let mut by_table: Vec<(&'p TablePlan, Vec<Vec<Value>>)> = Vec::new();
    let mut seen: HashMap<&str, HashSet<&[Value]>> = HashMap::new();
    for e in &batch.events {
        let Some(&tp) = tables.get(e.table.as_str()) else { continue };
        if seen.entry(tp.scan.table.as_str()).or_default().insert(&e.key) {
            match by_table.iter_mut().find(|(t, _)| std::ptr::eq(*t, tp)) {
                Some((_, keys)) => keys.push(e.key.clone()),
                None => by_table.push((tp, vec![e.key.clone()])),
            }
        }
    }
    let limits = ctx.target.limits();
    let mut prepared = Vec::with_capacity(by_table.len());
    for (tp, keys) in by_table {
        let name = tp.scan.table.as_str();
        let stopped = || ctx.stop.load(Ordering::Relaxed);
        let Some(write) = ctx.tracker.wait_applicable(name, &stopped).await? else {
            return Ok(None);
        };
        let (rows, deletes) = reread(ctx, source, tp, &write, &limits, &keys).await.map_err(|e| e.in_table(name))?;
        prepared.push(PreparedTable { tp, write, keys, rows, deletes });
    }
    let fetch_ms = fetch_started.elapsed().as_millis() as u64;
    Ok(Some(Prepared { batch, read_at_micros, read_ms, fetch_ms, tables: prepared }))
}

async fn read_batch(
    ctx: &SyncContext,
    source: &mut SourceConns,
    tables: &[CaptureTable],
    from: &Position,
    wait: Duration,
) -> Result<CaptureBatch> {
    let mut backoff = ctx.retry.backoff();
    loop {
        let attempt = async { source.capture(ctx, tables).await?.read(from, ctx.batch_events, wait).await }.await;
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
                source.capture = None;
                backoff.retry_after("read changes", e).await?;
            }
        }
    }
}

/// Re-reads `keys` of one table: the fitted rows to upsert and the fitted keys to
/// delete.
async fn reread(
    ctx: &SyncContext,
    source: &mut SourceConns,
    tp: &TablePlan,
    write: &pontoon_core::TableSchema,
    limits: &Limits,
    keys: &[Vec<Value>],
) -> Result<(Vec<Row>, Vec<Vec<Value>>)> {
    let mut backoff = ctx.retry.backoff();
    let rows = loop {
        match async { source.reader(ctx).await?.fetch_keys(&tp.scan, keys).await }.await {
            Ok(rows) => break rows,
            Err(e) => {
                source.reader = None;
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
    Ok((rows, deletes))
}

/// Writes a prepared batch, table by table, each in one target transaction (with
/// the `version_column` guard when set).
async fn write_batch(ctx: &SyncContext, writer: &mut Option<Box<dyn Writer>>, prepared: &Prepared<'_>) -> Result<()> {
    for t in &prepared.tables {
        let version = version_target_column(t.tp);
        let mut backoff = ctx.retry.backoff();
        loop {
            let attempt = async {
                if writer.is_none() {
                    *writer = Some(ctx.target.writer().await?);
                }
                match writer.as_deref_mut() {
                    Some(w) => w.apply(&t.write, &t.rows, &t.deletes, version).await,
                    None => Err(Error::internal("no writer")),
                }
            }
            .await;
            match attempt {
                Ok(_) => break,
                Err(e) => {
                    *writer = None;
                    backoff.retry_after("apply changes", e).await.map_err(|e| e.in_table(t.tp.scan.table.clone()))?;
                }
            }
        }
    }
    Ok(())
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

async fn release(source: &mut SourceConns, upto: &Position) {
    if let Some(c) = source.capture.as_deref_mut()
        && let Err(e) = c.release(upto).await
    {
        // harmless: the changes stay in the log and are released with the next batch
        tracing::warn!(error = %e, "could not release applied changes from the source's change log");
        source.capture = None;
    }
}

/// Stores how far behind the source the target is: the age of the newest change
/// applied, or, after a batch that came back empty (everything committed before its
/// read began is applied), the time since that read began. `pontoon verify` relies
/// on it: it never says less than the truth.
async fn measure_lag(ctx: &SyncContext, source: &mut SourceConns, prepared: &Prepared<'_>, caught_up: bool) {
    let batch = &prepared.batch;
    let now = now_micros();
    let since = if caught_up { Some(prepared.read_at_micros) } else { batch.committed_at_micros };
    let seconds = since.map(|t| ((now - t) as f64 / 1e6).max(0.0));
    let backlog = match source.capture.as_deref_mut() {
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
