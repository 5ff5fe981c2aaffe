//! `pontoon verify`: compares the source, read through the job's mapping, with the
//! target, field by field, and (`--repair`) re-copies what differs until nothing does.
//!
//! Per table, chunk by chunk along the source's key index (`Reader::key_after`):
//!
//! 1. fast path: both sides' checksums of the chunk; equal checksums settle it.
//!    Same engine, identity mapping and identical column types: the databases
//!    compute the engine's own digest (`Reader::checksum`, `Digest::Native`).
//!    Otherwise, when every column pair is of a kind `Digest::Portable` hashes
//!    (integers, text, decimals, ...) and one side's database computes it (MariaDB),
//!    that side does and the other side's rows are read and hashed by pontoon
//!    (`Digest::of_rows`): half the rows read and decoded;
//! 2. otherwise both sides are scanned at the same time, the source rows are fitted to
//!    the target's columns (`convert::fit`: what a copy would have written) and compared
//!    with the target rows after normalizing what engines store differently
//!    ([`same_value`]: decimal scale, JSON key order, timestamp with or without zone);
//! 3. every differing key is read again from both sides by key (which also settles
//!    keys that two collations place in different chunks) and, while a sync of the job
//!    runs, only after the sync has applied everything committed before the chunk was
//!    read (DESIGN.md, correctness rule 6): only differences that persist are reported;
//! 4. the chunk and its differences are stored in one state store transaction, so an
//!    interrupted verify continues after its last compared chunk.
//!
//! Differences go to the state store (key, kind, column names) and to the report file
//! (JSON lines, with both values); values never go to logs. `--repair` re-reads each
//! differing key from the source and applies it to the target as the sync does
//! (`Writer::apply`: upsert or delete, one transaction per table), checks those keys
//! again, and repeats until none is left or the round limit is reached.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pontoon_core::convert::fit;
use pontoon_core::{
    Checksum, Connector, Digest, Error, ErrorKind, KeyRange, Limits, PartitionFilter, Reader, Result, Row, ScanSpec,
    SelectExpr, TableSchema, Value,
};
use pontoon_state::{CHANGES_SCOPE, StateStore, StoredDiff, VerifiedChunk};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::job::VerifySettings;
use crate::plan::{Plan, TablePlan, write_schema};
use crate::retry::RetryPolicy;

/// How long a differing key may wait for a running sync to pass the moment it was
/// read before it is reported anyway.
const LIVE_WAIT_LIMIT: Duration = Duration::from_secs(300);
/// How often a differing key is read again while a sync runs before it is reported.
const LIVE_RECHECKS: usize = 3;
/// Margin for the sync's idle read and clock granularity when deciding whether the
/// sync has passed a moment.
const LIVE_MARGIN_MICROS: i64 = 1_000_000;

#[derive(Debug)]
pub struct VerifyContext {
    pub source: Arc<dyn Connector>,
    pub target: Arc<dyn Connector>,
    pub state: Arc<StateStore>,
    pub settings: VerifySettings,
    pub retry: RetryPolicy,
    /// Set to stop after the chunk in hand (Ctrl-C): the run continues next time.
    pub stop: Arc<AtomicBool>,
    /// The report file (JSON lines): truncated by a new run, appended to by a resumed one.
    pub report_path: PathBuf,
    /// A sync of this job is running: differing keys are checked again once it has
    /// passed the moment they were read.
    pub live: bool,
    /// The job's name, for the webhook's summary.
    pub job_name: String,
}

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only this table (source or target name).
    pub table: Option<String>,
    /// Only this partition value (as printed by `status`) of the table's `partition_by`.
    pub partition: Option<String>,
    pub repair: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub rows_compared: u64,
    /// Differences left (after the last repair round, if any).
    pub differences: u64,
    /// Differences as first found.
    pub found: u64,
    pub tables: Vec<TableVerifyReport>,
    pub rounds: Vec<RoundReport>,
    pub report: String,
    /// This run continued an interrupted one.
    pub resumed: bool,
    /// Stopped by a request before the end (resume by running again).
    pub stopped: bool,
    /// The webhook could not be reached (the differences are reported anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TableVerifyReport {
    pub table: String,
    pub target: String,
    pub rows_compared: u64,
    pub chunks: u64,
    /// Chunks settled by the databases' checksums, without reading rows.
    pub chunks_by_checksum: u64,
    /// Keys that differed when their chunk was read but agreed when read again (rows
    /// changing meanwhile, or placed in another chunk by the other side's collation);
    /// counted by this invocation only.
    pub settled_on_recheck: u64,
    pub missing: u64,
    pub extra: u64,
    pub changed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: u32,
    pub repaired_keys: u64,
    pub differences_left: u64,
}

/// What kind of difference a key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// In the source (through the mapping and filter), not in the target.
    Missing,
    /// In the target, not in the source.
    Extra,
    /// In both, with different values in some columns.
    Changed,
}

impl DiffKind {
    fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Changed => "changed",
        }
    }

    fn parse(s: &str) -> Option<DiffKind> {
        Some(match s {
            "missing" => DiffKind::Missing,
            "extra" => DiffKind::Extra,
            "changed" => DiffKind::Changed,
            _ => return None,
        })
    }
}

/// One confirmed difference, with the values (for the report file only).
#[derive(Debug, Clone)]
struct Difference {
    kind: DiffKind,
    /// Key values in the source key's order.
    key: Vec<Value>,
    /// The source row fitted to the target's columns (missing, changed).
    source: Option<Row>,
    /// The target row (extra, changed).
    target: Option<Row>,
    /// Positions of the differing columns (changed).
    columns: Vec<usize>,
}

/// One table as verify reads it: the plan, the target's write schema and the scans
/// of both sides.
struct Side<'p> {
    tp: &'p TablePlan,
    write: TableSchema,
    source_scan: ScanSpec,
    target_scan: ScanSpec,
    /// How both sides' checksums of a chunk are had, if they can be.
    fast: Option<Fast>,
}

/// Verifies the tables of `plan` (and repairs them with `--repair`).
pub async fn verify(ctx: &VerifyContext, plan: &Plan, options: &VerifyOptions) -> Result<VerifyReport> {
    let tables: Vec<&TablePlan> = match &options.table {
        None => plan.tables.iter().collect(),
        Some(name) => {
            let found: Vec<&TablePlan> =
                plan.tables.iter().filter(|t| &t.job.source == name || t.target_name() == name).collect();
            if found.is_empty() {
                let known: Vec<&str> = plan.tables.iter().map(|t| t.job.source.as_str()).collect();
                return Err(Error::config(format!(
                    "table `{name}` is not part of the job (its tables: {})",
                    known.join(", ")
                )));
            }
            found
        }
    };
    if options.partition.is_some() && tables.len() != 1 {
        return Err(Error::config("--partition needs --table: a partition value belongs to one table"));
    }
    let scope = json!({
        "tables": tables.iter().map(|t| (t.job.source.clone(), t.fingerprint())).collect::<Vec<_>>(),
        "partition": options.partition,
    })
    .to_string();
    let (run, resumed) = ctx.state.open_verify_run(&scope)?;
    let mut report_file = ReportFile::open(&ctx.report_path, resumed)?;
    let limits = ctx.target.limits();

    let mut table_reports = Vec::new();
    let mut sides = Vec::new();
    let mut stopped = false;
    for tp in &tables {
        let side = prepare_side(ctx, tp, options.partition.as_deref()).await?;
        let (report, was_stopped) =
            verify_table(ctx, &side, &limits, run, &mut report_file).await.map_err(|e| e.in_table(&tp.job.source))?;
        table_reports.push(report);
        sides.push(side);
        if was_stopped {
            stopped = true;
            break;
        }
    }
    // every difference of the run so far, including those of a resumed run's first part
    let found_diffs = ctx.state.verify_diffs_found(run)?;
    for r in &mut table_reports {
        let mine = found_diffs.iter().filter(|d| d.table == r.table);
        (r.missing, r.extra, r.changed) = (0, 0, 0);
        for d in mine {
            match DiffKind::parse(&d.kind) {
                Some(DiffKind::Missing) => r.missing += 1,
                Some(DiffKind::Extra) => r.extra += 1,
                _ => r.changed += 1,
            }
        }
    }
    let found = found_diffs.len() as u64;
    let mut left = ctx.state.verify_diffs(run)?.len() as u64;
    let mut rounds = Vec::new();
    if options.repair && !stopped && left > 0 {
        let first_round = ctx.state.verify_run(run)?.map(|r| r.rounds).unwrap_or(0) + 1;
        for round in first_round..first_round + ctx.settings.rounds {
            if ctx.stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            let r = repair_round(ctx, &sides, &limits, run, round, &mut report_file).await?;
            left = r.differences_left;
            rounds.push(r);
            if left == 0 {
                break;
            }
        }
    }
    report_file.flush()?;
    let rows_compared = ctx.state.verify_run(run)?.map(|r| r.rows).unwrap_or(0);
    if !stopped {
        ctx.state.finish_verify_run(run, left)?;
    }
    let mut report = VerifyReport {
        rows_compared,
        differences: left,
        found,
        tables: table_reports,
        rounds,
        report: ctx.report_path.display().to_string(),
        resumed,
        stopped,
        alert_error: None,
    };
    if found > 0
        && !stopped
        && let Some(url) = &ctx.settings.webhook
    {
        let body = json!({
            "job": ctx.job_name,
            "event": "verify_differences",
            "rows_compared": report.rows_compared,
            "differences_found": report.found,
            "differences_left": report.differences,
            "tables": report.tables,
            "rounds": report.rounds,
            "report": report.report,
        });
        if let Err(e) = crate::alert::post_json(url, &body, Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "could not send the verify summary to the webhook");
            report.alert_error = Some(e.to_string());
        }
    }
    Ok(report)
}

/// The scans of both sides of a table, as verify reads them.
async fn prepare_side<'p>(ctx: &VerifyContext, tp: &'p TablePlan, partition: Option<&str>) -> Result<Side<'p>> {
    let target_name = tp.target_name();
    let mut reader = ctx.target.reader().await?;
    let actual = reader.describe(target_name).await?.ok_or_else(|| {
        Error::schema(format!("target table `{target_name}` does not exist: copy it before verifying it"))
            .in_table(&tp.job.source)
    })?;
    let write = write_schema(tp, &actual).map_err(|e| e.in_table(&tp.job.source))?;
    let mut source_scan = tp.scan.clone();
    let mut target_scan = ScanSpec::every_column(&write, &write.primary_key);
    if let Some(value) = partition {
        let Some(column) = &tp.job.partition_by else {
            return Err(Error::config(format!("table `{}` has no partition_by in the job", tp.job.source)));
        };
        let source_col = tp.source.column(column).ok_or_else(|| Error::internal("partition column vanished"))?;
        let mut source_reader = ctx.source.reader().await?;
        let values =
            source_reader.partitions(&tp.job.source, column, &source_col.ty, tp.scan.filter.as_deref()).await?;
        let value = values.into_iter().map(|(v, _)| v).find(|v| v.to_string() == value).ok_or_else(|| {
            Error::config(format!("table `{}` has no partition `{value}` of `{column}`", tp.job.source))
        })?;
        let target_col = tp
            .scan
            .select
            .iter()
            .position(|s| matches!(&s.expr, SelectExpr::Column(c) if c == column))
            .map(|p| write.columns[p].name.clone())
            .ok_or_else(|| {
                Error::config(format!(
                    "table `{}`: --partition needs the partition column `{column}` copied to the target",
                    tp.job.source
                ))
            })?;
        source_scan.partition = Some(PartitionFilter { column: column.clone(), value: value.clone() });
        target_scan.partition = Some(PartitionFilter { column: target_col, value });
    }
    let fast = fast_path(ctx.source.as_ref(), ctx.target.as_ref(), tp, &write);
    Ok(Side { tp, write, source_scan, target_scan, fast })
}

/// The digest of verify's fast path and where each side's checksum is computed.
#[derive(Debug, Clone, Copy)]
struct Fast {
    digest: Digest,
    /// The (source, target) database computes its checksum; otherwise pontoon reads
    /// that side's rows and hashes them.
    in_db: (bool, bool),
}

impl Fast {
    /// What each side's task reads for a chunk's checksum.
    fn reads(self) -> (Read, Read) {
        let read = |in_db| if in_db { Read::Checksum(self.digest) } else { Read::HashedRows(self.digest) };
        (read(self.in_db.0), read(self.in_db.1))
    }
}

/// The fast path of a table: the engine's own digest where a copy would pass rows
/// through untouched (same engine, identity mapping, identical types); else the
/// portable digest where every column pair is of a kind it hashes and at least one
/// side's database computes it.
fn fast_path(source: &dyn Connector, target: &dyn Connector, tp: &TablePlan, write: &TableSchema) -> Option<Fast> {
    let can = |c: &dyn Connector, d: Digest| c.digests().contains(&d);
    if can(source, Digest::Native)
        && can(target, Digest::Native)
        && crate::copy::raw_eligible(source, target, tp, write)
    {
        return Some(Fast { digest: Digest::Native, in_db: (true, true) });
    }
    let portable = tp.scan.select.iter().zip(&write.columns).all(|(item, target)| match &item.expr {
        SelectExpr::Column(_) => Digest::portable(&item.ty, &target.ty),
        SelectExpr::Sql(_) => false,
    });
    let in_db = (can(source, Digest::Portable), can(target, Digest::Portable));
    (portable && (in_db.0 || in_db.1)).then_some(Fast { digest: Digest::Portable, in_db })
}

/// What one side's reading task gets.
#[derive(Debug, Clone, Copy)]
enum Read {
    Rows,
    /// The database's checksum.
    Checksum(Digest),
    /// The rows, hashed here.
    HashedRows(Digest),
}

enum Got {
    Rows(Vec<Row>),
    Checksum(Option<Checksum>),
}

async fn read_side(reader: &mut dyn Reader, scan: &ScanSpec, range: &KeyRange, read: Read) -> Result<Got> {
    Ok(match read {
        Read::Rows => Got::Rows(reader.scan(scan, range).await?),
        Read::Checksum(digest) => Got::Checksum(reader.checksum(scan, range, digest).await?),
        Read::HashedRows(digest) => Got::Checksum(digest.of_rows(&reader.scan(scan, range).await?)),
    })
}

/// Both sides' readers, opened again after a transient error.
#[derive(Default)]
struct Readers {
    source: Option<Box<dyn Reader>>,
    target: Option<Box<dyn Reader>>,
}

impl Readers {
    async fn both(&mut self, ctx: &VerifyContext) -> Result<(&mut dyn Reader, &mut dyn Reader)> {
        if self.source.is_none() {
            self.source = Some(ctx.source.reader().await?);
        }
        if self.target.is_none() {
            self.target = Some(ctx.target.reader().await?);
        }
        match (self.source.as_deref_mut(), self.target.as_deref_mut()) {
            (Some(s), Some(t)) => Ok((s, t)),
            _ => Err(Error::internal("no reader")),
        }
    }

    /// Runs `attempt` with these readers, retrying transient errors on fresh
    /// connections (`what` names the work in the retry's log line).
    async fn retrying<T>(
        &mut self,
        ctx: &VerifyContext,
        what: &str,
        mut attempt: impl AsyncFnMut(&mut Readers) -> Result<T>,
    ) -> Result<T> {
        let mut backoff = ctx.retry.backoff();
        loop {
            match attempt(self).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *self = Readers::default();
                    backoff.retry_after(what, e).await?;
                }
            }
        }
    }

    /// Both sides' rows of `range`.
    async fn scan_both(
        &mut self,
        ctx: &VerifyContext,
        side: &Side<'_>,
        range: &KeyRange,
    ) -> Result<(Vec<Row>, Vec<Row>)> {
        match self.read_both(ctx, side, range, (Read::Rows, Read::Rows)).await? {
            (Ok(Got::Rows(source)), Ok(Got::Rows(target))) => Ok((source, target)),
            (Err(e), _) | (_, Err(e)) => Err(e),
            _ => Err(Error::internal("a side read no rows")),
        }
    }

    /// What `reads` asks of each side in `range`, each side read (and decoded) by a
    /// task of its own, so the two decodings run on two threads.
    async fn read_both(
        &mut self,
        ctx: &VerifyContext,
        side: &Side<'_>,
        range: &KeyRange,
        reads: (Read, Read),
    ) -> Result<(Result<Got>, Result<Got>)> {
        self.both(ctx).await?;
        let (Some(mut source), Some(mut target)) = (self.source.take(), self.target.take()) else {
            return Err(Error::internal("no reader"));
        };
        let (source_scan, target_scan) = (side.source_scan.clone(), side.target_scan.clone());
        let (r1, r2) = (range.clone(), range.clone());
        let s = tokio::spawn(async move {
            let got = read_side(source.as_mut(), &source_scan, &r1, reads.0).await;
            (source, got)
        });
        let t = tokio::spawn(async move {
            let got = read_side(target.as_mut(), &target_scan, &r2, reads.1).await;
            (target, got)
        });
        let (s, t) = tokio::join!(s, t);
        let lost = |e: tokio::task::JoinError| Error::internal(format!("a reading task failed: {e}"));
        let (source, source_got) = s.map_err(lost)?;
        let (target, target_got) = t.map_err(lost)?;
        (self.source, self.target) = (Some(source), Some(target));
        Ok((source_got, target_got))
    }
}

/// Compares one table chunk by chunk, `workers` chunks at a time, continuing a run:
/// first its planned chunks not yet compared, then the walk of the key index after
/// the last planned chunk. Each chunk's range is stored before it is compared.
/// Returns the table's report and whether a stop request ended it early.
async fn verify_table(
    ctx: &VerifyContext,
    side: &Side<'_>,
    limits: &Limits,
    run: i64,
    report: &mut ReportFile,
) -> Result<(TableVerifyReport, bool)> {
    let tp = side.tp;
    let table = tp.job.source.as_str();
    let chunks = ctx.state.verified_chunks(run, table)?;
    let done = chunks.iter().filter(|c| c.done);
    let mut out = TableVerifyReport {
        table: table.to_string(),
        target: tp.target_name().to_string(),
        rows_compared: done.clone().map(|c| c.rows).sum(),
        chunks: done.clone().count() as u64,
        chunks_by_checksum: done.filter(|c| c.fast).count() as u64,
        ..Default::default()
    };
    let mut todo: VecDeque<(u64, KeyRange)> =
        chunks.iter().filter(|c| !c.done).map(|c| (c.seq, c.range.clone())).collect();
    // where the walk of the key index goes on: None when every chunk is planned
    let mut walk: Option<Option<Vec<Value>>> = match chunks.last() {
        None => Some(None),
        Some(c) => c.range.upto.clone().map(Some),
    };
    let mut next_seq = chunks.len() as u64;
    let workers = ctx.settings.workers.max(1);
    let mut readers: Vec<Readers> = (0..workers).map(|_| Readers::default()).collect();
    // Where both databases checksum key ranges in one scan of the table (PostgreSQL,
    // one integer key), the whole table is planned first and settled in one pass;
    // only the chunks whose checksums differ are compared row by row.
    let mut checksum_each = side.fast.is_some();
    let mut differing: HashMap<u64, u64> = HashMap::new();
    if let Some(fast) = side.fast {
        let mut pass = None;
        if chunks.is_empty()
            && let Some(ranges) = equal_width_ranges(ctx, side, &mut readers[0]).await?
        {
            // ranges of `chunk_rows` rows where the databases checksum them all in one
            // scan; else every FAST_CHUNK_FACTOR of them are one chunk (a statement each)
            let unplanned: Vec<VerifiedChunk> = (0..)
                .zip(&ranges)
                .map(|(seq, range)| VerifiedChunk {
                    seq,
                    range: range.clone(),
                    done: false,
                    rows: 0,
                    differences: 0,
                    fast: false,
                })
                .collect();
            pass = checksum_pass(ctx, side, fast, &mut readers[0], &unplanned).await?;
            let ranges = if pass.is_some() { ranges } else { merged(ranges, FAST_CHUNK_FACTOR) };
            let planned: Vec<(u64, KeyRange)> = (0..).zip(ranges).collect();
            for part in planned.chunks(256) {
                ctx.state.plan_verify_chunks(run, table, part)?;
            }
            next_seq = planned.len() as u64;
            todo.extend(planned);
            walk = None;
        }
        let mut planned = Vec::new();
        while let Some(after) = walk.take() {
            if ctx.stop.load(Ordering::Relaxed) {
                walk = Some(after);
                break;
            }
            let upto = next_boundary(ctx, side, &mut readers[0], &after).await?;
            walk = upto.clone().map(Some);
            planned.push((next_seq, KeyRange { after, upto }));
            next_seq += 1;
            if planned.len() == 256 {
                ctx.state.plan_verify_chunks(run, table, &planned)?;
                todo.extend(planned.drain(..));
            }
        }
        ctx.state.plan_verify_chunks(run, table, &planned)?;
        todo.extend(planned);
        // a resumed run: its planned chunks, in one scan where the databases can
        if pass.is_none() && !chunks.is_empty() {
            let stored = ctx.state.verified_chunks(run, table)?;
            pass = checksum_pass(ctx, side, fast, &mut readers[0], &stored).await?;
        }
        if let Some((settled, differ)) = pass {
            differing = differ;
            let settled: HashMap<u64, u64> = settled.into_iter().collect();
            for (seq, range) in todo.iter().filter(|(seq, _)| settled.contains_key(seq)) {
                let rows = settled[seq];
                let done =
                    VerifiedChunk { seq: *seq, range: range.clone(), done: true, rows, differences: 0, fast: true };
                ctx.state.verify_chunk_done(run, table, &done, &[])?;
                out.rows_compared += rows;
                out.chunks += 1;
                out.chunks_by_checksum += 1;
            }
            todo.retain(|(seq, _)| !settled.contains_key(seq));
            // the others differ: straight to their rows
            checksum_each = false;
        }
    }
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            return Ok((out, true));
        }
        // plan up to `workers` more chunks (stored before they are compared)
        let mut planned = Vec::new();
        while todo.len() + planned.len() < workers
            && let Some(after) = walk.take()
        {
            let upto = next_boundary(ctx, side, &mut readers[0], &after).await?;
            walk = upto.clone().map(Some);
            planned.push((next_seq, KeyRange { after, upto }));
            next_seq += 1;
        }
        ctx.state.plan_verify_chunks(run, table, &planned)?;
        todo.extend(planned);
        if todo.is_empty() {
            return Ok((out, false));
        }
        let batch: Vec<(u64, KeyRange)> = todo.drain(..todo.len().min(workers)).collect();
        let results =
            futures_util::future::join_all(batch.into_iter().zip(readers.iter_mut()).map(|((seq, range), r)| {
                let known = match differing.get(&seq) {
                    Some(&rows) => Known::Differs { rows },
                    None if checksum_each => Known::Nothing,
                    None => Known::Differs { rows: 0 },
                };
                compare_chunk(ctx, side, limits, r, seq, range, known)
            }))
            .await;
        for result in results {
            let (chunk, diffs, settled) = result?;
            let stored: Vec<StoredDiff> = diffs.iter().map(|d| stored(side, d)).collect();
            for d in &diffs {
                report.write(side, d, 0)?;
            }
            ctx.state.verify_chunk_done(run, table, &chunk, &stored)?;
            out.rows_compared += chunk.rows;
            out.chunks += 1;
            out.chunks_by_checksum += u64::from(chunk.fast);
            out.settled_on_recheck += settled;
        }
    }
}

/// Chunks (sequence number, rows) whose checksums agree, and the rows (the larger
/// side's) of those that differ.
type PassResult = (Vec<(u64, u64)>, HashMap<u64, u64>);

/// The one-pass checksums of the chunks of the table (all of them, in key order) on
/// both sides (`Reader::checksum_ranges`), or `None` when either side cannot. Chunks
/// already done are left out of the result.
async fn checksum_pass(
    ctx: &VerifyContext,
    side: &Side<'_>,
    fast: Fast,
    readers: &mut Readers,
    chunks: &[VerifiedChunk],
) -> Result<Option<PassResult>> {
    let bounds: Vec<Vec<Value>> = chunks.iter().filter_map(|c| c.range.upto.clone()).collect();
    if bounds.len() + 1 != chunks.len() || fast.in_db != (true, true) {
        return Ok(None);
    }
    let (s, t) = readers
        .retrying(ctx, "checksum the table's chunks", async |r| {
            let (source, target) = r.both(ctx).await?;
            let (s, t) = tokio::join!(
                source.checksum_ranges(&side.source_scan, &bounds, fast.digest),
                target.checksum_ranges(&side.target_scan, &bounds, fast.digest)
            );
            Ok((s?, t?))
        })
        .await?;
    let (Some(s), Some(t)) = (s, t) else { return Ok(None) };
    if s.len() != chunks.len() || t.len() != chunks.len() {
        return Err(Error::internal("a range checksum pass returned the wrong number of ranges"));
    }
    let (mut equal, mut differ) = (Vec::new(), HashMap::new());
    for (c, (s, t)) in chunks.iter().zip(s.iter().zip(&t)).filter(|(c, _)| !c.done) {
        if s == t {
            equal.push((c.seq, s.rows));
        } else {
            differ.insert(c.seq, s.rows.max(t.rows));
        }
    }
    Ok(Some((equal, differ)))
}

/// `ranges` (consecutive) joined `n` at a time.
fn merged(ranges: Vec<KeyRange>, n: u64) -> Vec<KeyRange> {
    ranges
        .chunks(n.max(1) as usize)
        .map(|group| KeyRange { after: group[0].after.clone(), upto: group[group.len() - 1].upto.clone() })
        .collect()
}

/// The table as ranges of equal key width (about `chunk_rows` rows each where keys
/// are spread evenly), from the key's two ends (`Reader::key_span`), instead of a
/// walk of the whole index; `None` where the source cannot tell the span.
async fn equal_width_ranges(
    ctx: &VerifyContext,
    side: &Side<'_>,
    readers: &mut Readers,
) -> Result<Option<Vec<KeyRange>>> {
    let span = readers
        .retrying(ctx, "find the key's span", async |r| r.both(ctx).await?.0.key_span(&side.source_scan).await)
        .await?;
    let Some((min, max)) = span else { return Ok(None) };
    let count = (side.tp.estimated_rows / ctx.settings.chunk_rows.max(1)).clamp(1, 100_000) as i128;
    let width = ((max as i128 - min as i128) / count + 1).max(1);
    let mut ranges = Vec::new();
    let mut after: Option<Vec<Value>> = None;
    let mut upto = min as i128 - 1 + width;
    while upto < max as i128 {
        let bound = Some(vec![Value::Int(upto as i64)]);
        ranges.push(KeyRange { after: after.take(), upto: bound.clone() });
        after = bound;
        upto += width;
    }
    ranges.push(KeyRange { after, upto: None });
    Ok(Some(ranges))
}

/// How many chunks of `chunk_rows` rows one fast path chunk holds where the
/// databases checksum chunk by chunk: each statement has its cost (MariaDB ->
/// replica, 5M rows: 5.7 s in 483 chunks, 4.4 s in 96), and a differing chunk is
/// read in pieces of `chunk_rows`, each settled by its checksums where they agree.
const FAST_CHUNK_FACTOR: u64 = 5;

/// The rows of a planned chunk: `chunk_rows`, times [`FAST_CHUNK_FACTOR`] on the fast path.
fn planned_rows(ctx: &VerifyContext, side: &Side<'_>) -> u64 {
    let factor = if side.fast.is_some() { FAST_CHUNK_FACTOR } else { 1 };
    ctx.settings.chunk_rows.max(1) * factor
}

/// The end of the chunk after `after` on the source's key index (`None`: the table's end).
async fn next_boundary(
    ctx: &VerifyContext,
    side: &Side<'_>,
    readers: &mut Readers,
    after: &Option<Vec<Value>>,
) -> Result<Option<Vec<Value>>> {
    readers
        .retrying(ctx, "plan a chunk", async |r| {
            r.both(ctx).await?.0.key_after(&side.source_scan, after.as_deref(), planned_rows(ctx, side)).await
        })
        .await
}

/// Compares one chunk, retrying transient errors on fresh connections: by checksum
/// where both sides can, else row by row, then checks the differing keys again.
async fn compare_chunk(
    ctx: &VerifyContext,
    side: &Side<'_>,
    limits: &Limits,
    readers: &mut Readers,
    seq: u64,
    range: KeyRange,
    known: Known,
) -> Result<(VerifiedChunk, Vec<Difference>, u64)> {
    readers
        .retrying(ctx, "compare a chunk", async |r| compare_chunk_once(ctx, side, limits, r, seq, &range, known).await)
        .await
        .map_err(|e| e.in_table(&side.tp.job.source))
}

async fn compare_chunk_once(
    ctx: &VerifyContext,
    side: &Side<'_>,
    limits: &Limits,
    readers: &mut Readers,
    seq: u64,
    range: &KeyRange,
    mut known: Known,
) -> Result<(VerifiedChunk, Vec<Difference>, u64)> {
    if let (Known::Nothing, Some(fast)) = (known, side.fast)
        && let Some((s, t)) = checksums(ctx, side, readers, range, fast).await?
    {
        if s == t {
            let chunk =
                VerifiedChunk { seq, range: range.clone(), done: true, rows: s.rows, differences: 0, fast: true };
            return Ok((chunk, Vec::new(), 0));
        }
        known = Known::Differs { rows: s.rows.max(t.rows) };
    }
    // a chunk much larger than `chunk_rows` (a fast path chunk, or an equal-width
    // range over unevenly spread keys) is read in pieces of about `chunk_rows` rows,
    // each settled by its checksums where they agree
    let pieces = match known {
        Known::Differs { rows } if rows > 2 * ctx.settings.chunk_rows => {
            split_range(ctx, side, readers.both(ctx).await?.0, range).await?
        }
        _ => vec![range.clone()],
    };
    let (mut rows, mut first, mut diffs) = (0, 0, Vec::new());
    for piece in &pieces {
        if let (true, Some(fast)) = (pieces.len() > 1, side.fast)
            && let Some((s, t)) = checksums(ctx, side, readers, piece, fast).await?
            && s == t
        {
            rows += s.rows;
            continue;
        }
        let read_at = now_micros();
        let (source_rows, target_rows) = readers.scan_both(ctx, side, piece).await?;
        rows += source_rows.len() as u64;
        let candidates = compare_rows(side, limits, source_rows, target_rows);
        first += candidates.len() as u64;
        let (source, target) = readers.both(ctx).await?;
        diffs.extend(settle(ctx, side, limits, source, target, candidates, read_at).await?);
    }
    let settled = first - diffs.len() as u64;
    let chunk =
        VerifiedChunk { seq, range: range.clone(), done: true, rows, differences: diffs.len() as u64, fast: false };
    Ok((chunk, diffs, settled))
}

/// Both sides' checksums of `range` by the fast path, or `None` when a side cannot
/// checksum it (MariaDB refuses one that raised a warning): the row comparison
/// then decides. A transient error is returned, to be retried.
async fn checksums(
    ctx: &VerifyContext,
    side: &Side<'_>,
    readers: &mut Readers,
    range: &KeyRange,
    fast: Fast,
) -> Result<Option<(Checksum, Checksum)>> {
    let (s, t) = readers.read_both(ctx, side, range, fast.reads()).await?;
    let usable = |r: Result<Got>| match r {
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "no checksum for this chunk: comparing its rows");
            Ok(None)
        }
        Ok(Got::Checksum(c)) => Ok(c),
        Ok(Got::Rows(_)) => Ok(None),
    };
    Ok(usable(s)?.zip(usable(t)?))
}

/// What is known about a chunk before it is compared.
#[derive(Debug, Clone, Copy)]
enum Known {
    Nothing,
    /// Its checksums differ (or cannot settle it); `rows` on the larger side.
    Differs {
        rows: u64,
    },
}

/// An integer-keyed range cut into pieces of about `chunk_rows` rows by walking the
/// source's key index (the walk stops at the range's end: integer keys compare in
/// Rust as in SQL). Other keys: the range whole.
async fn split_range(
    ctx: &VerifyContext,
    side: &Side<'_>,
    source: &mut dyn Reader,
    range: &KeyRange,
) -> Result<Vec<KeyRange>> {
    let int = |k: &Option<Vec<Value>>| match k.as_deref() {
        Some([Value::Int(i)]) => Some(*i),
        _ => None,
    };
    let end = int(&range.upto);
    if range.upto.is_some() && end.is_none() {
        return Ok(vec![range.clone()]);
    }
    let mut pieces = Vec::new();
    let mut after = range.after.clone();
    loop {
        let next = source.key_after(&side.source_scan, after.as_deref(), ctx.settings.chunk_rows).await?;
        let inside = match (int(&next), end) {
            (Some(k), Some(end)) => k < end,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !inside {
            pieces.push(KeyRange { after, upto: range.upto.clone() });
            tracing::debug!(table = %side.tp.job.source, pieces = pieces.len(), "a large differing chunk is read in pieces");
            return Ok(pieces);
        }
        pieces.push(KeyRange { after, upto: next.clone() });
        after = next;
    }
}

/// The candidates (read at `read_at`) that still differ when read again by key;
/// while a sync runs, each read again only after the sync has applied everything
/// committed before the previous read, and again while a key keeps differing (the
/// application may have changed it meanwhile), up to [`LIVE_RECHECKS`] times.
async fn settle(
    ctx: &VerifyContext,
    side: &Side<'_>,
    limits: &Limits,
    source: &mut dyn Reader,
    target: &mut dyn Reader,
    candidates: Vec<Difference>,
    mut read_at: i64,
) -> Result<Vec<Difference>> {
    let mut diffs = candidates;
    for _ in 0..if ctx.live { LIVE_RECHECKS } else { 1 } {
        if diffs.is_empty() {
            break;
        }
        if ctx.live {
            wait_for_sync(ctx, read_at).await?;
        }
        let keys: Vec<Vec<Value>> = diffs.into_iter().map(|d| d.key).collect();
        read_at = now_micros();
        diffs = compare_keys(side, limits, source, target, &keys).await?;
    }
    Ok(diffs)
}

/// Reads `keys` from both sides and compares them: the differences that are there now.
async fn compare_keys(
    side: &Side<'_>,
    limits: &Limits,
    source: &mut dyn Reader,
    target: &mut dyn Reader,
    keys: &[Vec<Value>],
) -> Result<Vec<Difference>> {
    let (s, t) = tokio::join!(source.fetch_keys(&side.source_scan, keys), target.fetch_keys(&side.target_scan, keys));
    Ok(compare_rows(side, limits, s?, t?))
}

/// Compares source rows (not yet fitted) with target rows of the same keys: every key
/// missing, extra or changed. Both sides come in key order, so rows are paired in
/// step while their keys agree (no allocation per row); from the first disagreement
/// on (a missing or extra row, or two collations ordering keys differently) the rest
/// is paired by key.
fn compare_rows(side: &Side<'_>, limits: &Limits, source_rows: Vec<Row>, target_rows: Vec<Row>) -> Vec<Difference> {
    let kp = &side.tp.key_positions;
    let key_of = |row: &Row| -> Vec<Value> { kp.iter().map(|&p| row[p].clone()).collect() };
    let same_key = |a: &Row, b: &Row| kp.iter().all(|&p| same_value(&a[p], &b[p]));
    let mut diffs = Vec::new();
    let mut source_rows = source_rows.into_iter();
    let mut target_rows = target_rows.into_iter().peekable();
    let mut unpaired: Option<(Vec<Value>, Row, Vec<usize>)> = None;
    for row in source_rows.by_ref() {
        let key = key_of(&row);
        let (fitted, unfit) = fit_row(row, &side.write, limits);
        match target_rows.peek() {
            Some(target) if same_key(&fitted, target) => {
                let target = target_rows.next().unwrap_or_default();
                diffs.extend(changed(key, fitted, target, &unfit));
            }
            _ => {
                unpaired = Some((key, fitted, unfit));
                break;
            }
        }
    }
    let Some(first) = unpaired else {
        diffs.extend(target_rows.map(|row| extra(key_of(&row), row)));
        return diffs;
    };
    // the rest, by key
    let mut targets: HashMap<Vec<Value>, Row> = target_rows.map(|row| (normal_key(key_of(&row)), row)).collect();
    let rest = std::iter::once(first).chain(source_rows.map(|row| {
        let key = key_of(&row);
        let (fitted, unfit) = fit_row(row, &side.write, limits);
        (key, fitted, unfit)
    }));
    for (key, fitted, unfit) in rest {
        match targets.remove(&normal_key(key_of(&fitted))) {
            None => diffs.push(Difference {
                kind: DiffKind::Missing,
                key,
                source: Some(fitted),
                target: None,
                columns: vec![],
            }),
            Some(target) => diffs.extend(changed(key, fitted, target, &unfit)),
        }
    }
    let mut extras: Vec<Row> = targets.into_values().collect();
    extras.sort_by_cached_key(|r| format!("{:?}", key_of(r)));
    diffs.extend(extras.into_iter().map(|row| extra(key_of(&row), row)));
    diffs
}

/// The difference of a paired row, if a column differs (or could not be fitted).
fn changed(key: Vec<Value>, fitted: Row, target: Row, unfit: &[usize]) -> Option<Difference> {
    let columns: Vec<usize> =
        (0..fitted.len()).filter(|&i| unfit.contains(&i) || !same_value(&fitted[i], &target[i])).collect();
    if columns.is_empty() {
        return None;
    }
    Some(Difference { kind: DiffKind::Changed, key, source: Some(fitted), target: Some(target), columns })
}

fn extra(key: Vec<Value>, row: Row) -> Difference {
    Difference { kind: DiffKind::Extra, key, source: None, target: Some(row), columns: vec![] }
}

/// A key in the form both sides agree on: decimals without trailing zeros, timestamps
/// with or without zone alike (other values are already alike: the source key was
/// fitted to the target's types).
fn normal_key(key: Vec<Value>) -> Vec<Value> {
    if !key.iter().any(|v| matches!(v, Value::Decimal(_) | Value::TimestampTz(_))) {
        return key;
    }
    key.into_iter()
        .map(|v| match v {
            Value::Decimal(d) => Value::Text(decimal_normal(d.as_str())),
            Value::TimestampTz(t) => Value::Timestamp(t),
            v => v,
        })
        .collect()
}

/// Fits a source row to the target's columns, value by value, in place. A value the
/// target cannot hold is replaced by the reason, and its position returned (a
/// difference: no copy could have written it).
fn fit_row(mut row: Row, write: &TableSchema, limits: &Limits) -> (Row, Vec<usize>) {
    let mut unfit = Vec::new();
    for (i, cell) in row.iter_mut().enumerate() {
        match fit(std::mem::replace(cell, Value::Null), &write.columns[i], limits) {
            Ok(v) => *cell = v,
            Err(e) => {
                *cell = Value::Text(format!("(cannot be stored in the target: {})", e.message()));
                unfit.push(i);
            }
        }
    }
    (row, unfit)
}

/// Whether a fitted source value and a target value are the same data, allowing for
/// what engines store differently: a decimal's trailing zeros (scale), JSON's key
/// order and spacing, a timestamp with or without zone (MariaDB keeps UTC without
/// one), an integer read back as a decimal. Floats compare bit for bit, text byte
/// for byte, NULL only equals NULL (never the empty string).
pub fn same_value(a: &Value, b: &Value) -> bool {
    use Value as V;
    match (a, b) {
        (V::Decimal(x), V::Decimal(y)) => decimal_normal(x.as_str()) == decimal_normal(y.as_str()),
        (V::Decimal(x), V::Int(_) | V::UInt(_)) | (V::Int(_) | V::UInt(_), V::Decimal(x)) => {
            let int = if let V::Decimal(_) = a { b } else { a };
            decimal_normal(x.as_str()) == int.to_string()
        }
        (V::Json(x), V::Json(y)) => {
            x == y
                || match (serde_json::from_str::<serde_json::Value>(x), serde_json::from_str::<serde_json::Value>(y)) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => false,
                }
        }
        (V::Timestamp(x), V::TimestampTz(y)) | (V::TimestampTz(x), V::Timestamp(y)) => x == y,
        _ => a == b,
    }
}

/// Decimal text without the trailing zeros of its fraction (`1.50` -> `1.5`, `2.0` -> `2`).
fn decimal_normal(s: &str) -> String {
    match s.split_once('.') {
        Some((i, f)) => {
            let f = f.trim_end_matches('0');
            if f.is_empty() { i.to_string() } else { format!("{i}.{f}") }
        }
        None => s.to_string(),
    }
}

/// Waits until the running sync has applied every change committed before `read_at`
/// (microseconds since the epoch), or the sync stopped, or [`LIVE_WAIT_LIMIT`] passed.
async fn wait_for_sync(ctx: &VerifyContext, read_at: i64) -> Result<()> {
    let started = Instant::now();
    loop {
        let Some(sync) = ctx.state.sync()? else { return Ok(()) };
        if sync.state != "running" {
            return Ok(());
        }
        let measured =
            pontoon_core::value::parse_timestamp(sync.updated_at.trim_end_matches('Z')).map(|(t, _)| t).unwrap_or(0);
        let behind = sync.lag.seconds.map(|s| (s * 1e6) as i64);
        if let Some(behind) = behind
            && measured - behind - LIVE_MARGIN_MICROS > read_at
        {
            return Ok(());
        }
        if started.elapsed() > LIVE_WAIT_LIMIT {
            tracing::warn!(
                "the sync did not catch up within {} s; reporting differences as they are",
                LIVE_WAIT_LIMIT.as_secs()
            );
            return Ok(());
        }
        if ctx.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The wall clock in microseconds since the epoch (the unit of commit times).
pub(crate) fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn stored(side: &Side<'_>, d: &Difference) -> StoredDiff {
    StoredDiff {
        table: side.tp.job.source.clone(),
        key: d.key.clone(),
        kind: d.kind.as_str().to_string(),
        columns: d.columns.iter().map(|&i| side.write.columns[i].name.clone()).collect(),
    }
}

/// One repair round: re-copies every key left by the previous round, table by table,
/// then compares those keys again.
async fn repair_round(
    ctx: &VerifyContext,
    sides: &[Side<'_>],
    limits: &Limits,
    run: i64,
    round: u32,
    report: &mut ReportFile,
) -> Result<RoundReport> {
    let left = ctx.state.verify_diffs(run)?;
    let mut remaining_stored = Vec::new();
    let mut repaired = 0u64;
    for side in sides {
        let table = side.tp.job.source.as_str();
        let keys: Vec<Vec<Value>> = left.iter().filter(|d| d.table == table).map(|d| d.key.clone()).collect();
        if keys.is_empty() {
            continue;
        }
        let mut backoff = ctx.retry.backoff();
        let remaining = loop {
            match repair_keys(ctx, side, limits, &keys).await {
                Ok(r) => break r,
                Err(e) => backoff.retry_after("repair differing keys", e).await.map_err(|e| e.in_table(table))?,
            }
        };
        repaired += keys.len() as u64;
        for d in &remaining {
            report.write(side, d, round)?;
            remaining_stored.push(stored(side, d));
        }
    }
    ctx.state.verify_round_done(run, round, &remaining_stored)?;
    Ok(RoundReport { round, repaired_keys: repaired, differences_left: remaining_stored.len() as u64 })
}

/// Re-reads `keys` from the source, writes them to the target as the sync does
/// (upsert what exists, delete what does not), and returns the differences left.
async fn repair_keys(
    ctx: &VerifyContext,
    side: &Side<'_>,
    limits: &Limits,
    keys: &[Vec<Value>],
) -> Result<Vec<Difference>> {
    let mut source = ctx.source.reader().await?;
    let found = source.fetch_keys(&side.source_scan, keys).await?;
    let (rows, gone) = crate::sync::split_found(side.tp, found, keys);
    let rows = crate::copy::fit_rows(rows, side.tp, &side.write, limits)?;
    // deletes first, as `Writer::apply` does within a batch: under a case-insensitive
    // collation a deleted spelling may match a row upserted under its current one
    let mut writer = ctx.target.writer().await?;
    for batch in gone.chunks(1000) {
        writer.apply(&side.write, &[], batch, None).await?;
    }
    for batch in rows.chunks(1000) {
        writer.apply(&side.write, batch, &[], None).await?;
    }
    let mut target = ctx.target.reader().await?;
    compare_keys(side, limits, source.as_mut(), target.as_mut(), keys).await
}

/// Keys the sync has just applied to one table, for incremental verify.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The source table.
    pub table: String,
    pub keys: Vec<Vec<Value>>,
}

/// Hands a share of the keys the sync applies to the incremental verifier, never
/// blocking the sync: when the verifier falls behind, samples are dropped (counted).
#[derive(Debug, Clone)]
pub struct ChangeSampler {
    share: f64,
    tx: mpsc::Sender<Applied>,
    dropped: Arc<AtomicU64>,
}

/// Samples waiting for the incremental verifier before new ones are dropped.
const CHANGE_QUEUE: usize = 64;

impl ChangeSampler {
    /// A sampler of `share` (0 to 1) of the applied keys and the verifier's end.
    pub fn new(share: f64) -> (ChangeSampler, mpsc::Receiver<Applied>) {
        let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
        (ChangeSampler { share, tx, dropped: Arc::default() }, rx)
    }

    /// The count of keys dropped because the verifier fell behind.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Offers the keys just applied to `table` (a source table).
    pub fn offer(&self, table: &str, keys: &[Vec<Value>]) {
        let keys: Vec<Vec<Value>> = if self.share >= 1.0 {
            keys.to_vec()
        } else {
            // a fresh random hash per key: each applied key is picked with probability `share`
            let limit = (self.share * u64::MAX as f64) as u64;
            keys.iter()
                .filter(|k| std::collections::hash_map::RandomState::new().hash_one(k) < limit)
                .cloned()
                .collect()
        };
        if keys.is_empty() {
            return;
        }
        let n = keys.len() as u64;
        if self.tx.try_send(Applied { table: table.to_string(), keys }).is_err() {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// What incremental verify did while the sync ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangesReport {
    pub keys_checked: u64,
    pub differences: u64,
    /// Keys not checked because the verifier fell behind the sync.
    pub keys_skipped: u64,
}

/// The least time between two webhook alerts of incremental verify.
const CHANGES_ALERT_EVERY: Duration = Duration::from_secs(60);

/// Incremental verify (`[verify] changes`): compares each key the sync hands over on
/// both sides right after it was applied; a key that still differs once the sync has
/// passed the moment it was read (rechecked like a full verify's) is recorded in the
/// state store, written to the report, counted in `progress`, and alerted (at most
/// once a minute). Ends when the sync ends (the sampler is dropped).
pub async fn verify_changes(
    ctx: &VerifyContext,
    plan: &Plan,
    mut rx: mpsc::Receiver<Applied>,
    dropped: &AtomicU64,
    progress: &crate::sync::SyncProgress,
) -> Result<ChangesReport> {
    let (run, _) = ctx.state.open_verify_run(CHANGES_SCOPE)?;
    let mut report_file = ReportFile::open(&ctx.report_path, true)?;
    let limits = ctx.target.limits();
    let mut sides: HashMap<&str, Side<'_>> = HashMap::new();
    let mut readers = Readers::default();
    let mut out = ChangesReport::default();
    let mut unsent = 0u64;
    let mut last_alert: Option<Instant> = None;
    while let Some(applied) = rx.recv().await {
        let Some(tp) = plan.tables.iter().find(|t| t.scan.table == applied.table) else { continue };
        if !sides.contains_key(tp.scan.table.as_str()) {
            sides.insert(tp.scan.table.as_str(), prepare_side(ctx, tp, None).await?);
        }
        let side = &sides[tp.scan.table.as_str()];
        // the loop of `Readers::retrying`, written out: this future runs inside the
        // spawned `run::run`, and the compiler cannot prove an async closure's future
        // `Send` for every lifetime of its argument
        let mut backoff = ctx.retry.backoff();
        let diffs = loop {
            let attempt = async {
                let (source, target) = readers.both(ctx).await?;
                let read_at = now_micros();
                let candidates = compare_keys(side, &limits, source, target, &applied.keys).await?;
                settle(ctx, side, &limits, source, target, candidates, read_at).await
            };
            match attempt.await {
                Ok(d) => break d,
                Err(e) => {
                    readers = Readers::default();
                    backoff.retry_after("verify applied changes", e).await.map_err(|e| e.in_table(&applied.table))?;
                }
            }
        };
        out.keys_checked += applied.keys.len() as u64;
        progress.verified_keys.fetch_add(applied.keys.len() as u64, Ordering::Relaxed);
        if diffs.is_empty() {
            continue;
        }
        let stored: Vec<StoredDiff> = diffs.iter().map(|d| stored(side, d)).collect();
        ctx.state.record_verify_diffs(run, &stored)?;
        for d in &diffs {
            report_file.write(side, d, 0)?;
        }
        report_file.flush()?;
        let n = diffs.len() as u64;
        out.differences += n;
        unsent += n;
        progress.verify_differences.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(
            table = %applied.table,
            differences = n,
            report = %ctx.report_path.display(),
            "incremental verify: keys the sync applied differ between source and target"
        );
        if let Some(url) = &ctx.settings.webhook
            && last_alert.is_none_or(|t| t.elapsed() >= CHANGES_ALERT_EVERY)
        {
            let body = json!({
                "job": ctx.job_name,
                "event": "verify_changes_differences",
                "differences": unsent,
                "differences_total": out.differences,
                "keys_checked": out.keys_checked,
                "report": ctx.report_path.display().to_string(),
            });
            match crate::alert::post_json(url, &body, Duration::from_secs(10)).await {
                Ok(()) => unsent = 0,
                Err(e) => tracing::warn!(error = %e, "could not send the incremental verify alert to the webhook"),
            }
            last_alert = Some(Instant::now());
        }
    }
    out.keys_skipped = dropped.load(Ordering::Relaxed);
    Ok(out)
}

/// The report file: one JSON object per difference and round.
struct ReportFile {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl ReportFile {
    fn open(path: &Path, append: bool) -> Result<ReportFile> {
        let file =
            std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(path).map_err(
                |e| {
                    Error::new(ErrorKind::Config, format!("cannot write the verify report {}", path.display()))
                        .with_source(e)
                },
            )?;
        Ok(ReportFile { out: std::io::BufWriter::new(file), path: path.to_path_buf() })
    }

    fn write(&mut self, side: &Side<'_>, d: &Difference, round: u32) -> Result<()> {
        let names: Vec<&str> = side.write.columns.iter().map(|c| c.name.as_str()).collect();
        let key: serde_json::Map<String, serde_json::Value> =
            side.tp.key_positions.iter().zip(&d.key).map(|(&p, v)| (names[p].to_string(), value_json(v))).collect();
        let row_json = |row: &Row| -> serde_json::Value {
            names.iter().zip(row).map(|(n, v)| (n.to_string(), value_json(v))).collect::<serde_json::Map<_, _>>().into()
        };
        let mut line = json!({
            "round": round,
            "table": side.tp.job.source,
            "target_table": side.write.name,
            "key": key,
            "kind": d.kind,
        });
        match d.kind {
            DiffKind::Changed => {
                let (Some(s), Some(t)) = (&d.source, &d.target) else {
                    return Err(Error::internal("changed row without values"));
                };
                line["columns"] = d
                    .columns
                    .iter()
                    .map(|&i| json!({"column": names[i], "source": value_json(&s[i]), "target": value_json(&t[i])}))
                    .collect();
            }
            DiffKind::Missing => line["source_row"] = d.source.as_ref().map(row_json).unwrap_or_default(),
            DiffKind::Extra => line["target_row"] = d.target.as_ref().map(row_json).unwrap_or_default(),
        }
        writeln!(self.out, "{line}").map_err(|e| self.io_err(e))
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.io_err(e))
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Config, format!("cannot write the verify report {}", self.path.display())).with_source(e)
    }
}

/// A value as plain JSON for the report: numbers that JSON holds exactly as numbers,
/// JSON documents as themselves, everything else (decimals, floats, timestamps,
/// bytes as `\x...`) as the text `Display` gives.
fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| s.clone().into()),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use pontoon_core::Decimal;

    use super::*;

    fn dec(s: &str) -> Value {
        Value::Decimal(Decimal::parse(s).unwrap())
    }

    #[test]
    fn values_that_engines_store_differently_are_the_same() {
        assert!(same_value(&dec("1.50"), &dec("1.5")));
        assert!(same_value(&dec("2.000"), &Value::Int(2)));
        assert!(same_value(
            &Value::Json(r#"{"b": 1, "a": [1, 2]}"#.into()),
            &Value::Json(r#"{"a":[1,2],"b":1}"#.into())
        ));
        assert!(same_value(&Value::Timestamp(5), &Value::TimestampTz(5)));
    }

    #[test]
    fn real_differences_stay_differences() {
        assert!(!same_value(&dec("1.5"), &dec("1.51")));
        assert!(!same_value(&dec("-1.5"), &dec("1.5")));
        assert!(!same_value(&Value::Text(String::new()), &Value::Null));
        assert!(!same_value(&Value::F64(0.1), &Value::F64(0.1 + f64::EPSILON)));
        assert!(!same_value(&Value::F64(0.0), &Value::F64(-0.0)));
        assert!(!same_value(&Value::Json(r#"{"a": [1, 2]}"#.into()), &Value::Json(r#"{"a": [2, 1]}"#.into())));
        assert!(!same_value(&Value::Json(r#"{"a": 1}"#.into()), &Value::Json(r#"{"a": "1"}"#.into())));
        assert!(!same_value(&Value::Timestamp(5), &Value::TimestampTz(6)));
        assert!(!same_value(&Value::Text("a".into()), &Value::Text("A".into())));
        assert!(!same_value(&dec("3"), &Value::Int(4)));
    }

    #[test]
    fn report_values_are_plain_json() {
        assert_eq!(value_json(&Value::Int(-3)), json!(-3));
        assert_eq!(value_json(&dec("1.50")), json!("1.50"));
        assert_eq!(value_json(&Value::Json(r#"{"a":1}"#.into())), json!({"a": 1}));
        assert_eq!(value_json(&Value::Bytes(vec![0, 255])), json!("\\x00ff"));
        assert_eq!(value_json(&Value::Null), serde_json::Value::Null);
    }
}
