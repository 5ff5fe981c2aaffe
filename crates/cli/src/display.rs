//! Human output: the plan, progress (bars on a terminal, plain lines otherwise) and
//! summaries. Everything here goes to stderr except the summaries of `plan`,
//! `copy` and `status`, which go to stdout before the `--json` line.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pontoon_engine::copy::CopyReport;
use pontoon_engine::job::Job;
use pontoon_engine::plan::PlanTableReport;
use pontoon_engine::progress::{Phase, Progress};
use pontoon_engine::state::{SyncRecord, VerifyRunRecord};
use pontoon_engine::status::TableStatus;
use pontoon_engine::sync::SyncProgress;
use pontoon_engine::verify::VerifyReport;
use tokio::sync::oneshot;

pub fn print_plan(tables: &[PlanTableReport], job: &Job) {
    println!("source: {}", job.source);
    println!("target: {}", job.target);
    println!(
        "copy:   {} workers, {} rows per chunk{}",
        job.copy.workers,
        job.copy.chunk_rows,
        if job.copy.max_rows_per_second > 0 {
            format!(", at most {} rows/s", job.copy.max_rows_per_second)
        } else {
            String::new()
        }
    );
    for t in tables {
        println!();
        println!(
            "{} -> {}{}  key ({})  ~{} rows  ~{} chunks",
            t.table,
            t.target,
            if t.target_exists { " (exists)" } else { " (will be created)" },
            t.key.join(", "),
            t.estimated_rows,
            t.estimated_chunks
        );
        if let Some(f) = &t.filter {
            println!("  where {f}");
        }
        if let (Some(col), Some(n)) = (&t.partition_by, t.partitions) {
            let first: Vec<String> = t.first_partitions.iter().map(|(v, c)| format!("{v} ({c})")).collect();
            println!("  partitioned by {col}: {n} partitions, smallest first: {}", first.join(", "));
        }
        let w = t.columns.iter().map(|c| c.target.len()).max().unwrap_or(0);
        for c in &t.columns {
            println!(
                "  {}{:w$} <- {:24} {:>20} -> {:16} -> {}",
                if c.key { "*" } else { " " },
                c.target,
                c.source,
                c.source_type,
                c.portable,
                c.target_type,
            );
        }
    }
}

pub fn print_copy(r: &CopyReport) {
    for t in &r.tables {
        let what = match &t.error {
            Some(e) => format!("FAILED: {e}"),
            None if t.path == "raw" => format!("{} (binary pass-through)", t.state),
            None => t.state.to_string(),
        };
        println!(
            "{} -> {}: {} rows in {} chunks ({} already done before, {} in all): {}",
            t.table, t.target, t.rows, t.chunks_copied, t.chunks_skipped, t.chunks_total, what
        );
    }
    let rate = if r.seconds > 0.0 { r.rows as f64 / r.seconds } else { 0.0 };
    println!("copied {} rows in {:.1}s ({:.0} rows/s)", r.rows, r.seconds, rate);
}

pub fn print_verify(r: &VerifyReport) {
    if r.resumed {
        println!("continuing the interrupted verify after its last compared chunk");
    }
    for t in &r.tables {
        let by_checksum =
            if t.chunks_by_checksum > 0 { format!(", {} by checksum", t.chunks_by_checksum) } else { String::new() };
        println!(
            "{} -> {}: {} rows compared in {} chunks{}: {} missing in target, {} extra in target, {} changed",
            t.table, t.target, t.rows_compared, t.chunks, by_checksum, t.missing, t.extra, t.changed
        );
    }
    for round in &r.rounds {
        println!(
            "repair round {}: {} keys copied again, {} differences left",
            round.round, round.repaired_keys, round.differences_left
        );
    }
    if let Some(e) = &r.alert_error {
        eprintln!("warning: the webhook was not notified: {e}");
    }
    match (r.found, r.differences) {
        (0, _) => println!("{} rows compared: no differences", r.rows_compared),
        (found, 0) => println!(
            "{} rows compared: {found} differences found, all repaired (details: {})",
            r.rows_compared, r.report
        ),
        (_, left) => println!("{} rows compared: {left} differences (details: {})", r.rows_compared, r.report),
    }
}

pub fn print_verify_status(v: &VerifyRunRecord) {
    let what = match (v.state.as_str(), v.differences) {
        ("done", Some(0)) => "no differences".to_string(),
        ("done", Some(d)) => format!("{d} differences left"),
        _ => "interrupted or running (run verify again to continue)".to_string(),
    };
    println!("verify (run {}, started {}): {} rows compared, {what}", v.id, v.started_at, v.rows);
}

pub fn print_status(tables: &[TableStatus]) {
    if tables.is_empty() {
        println!("nothing planned yet");
    }
    for t in tables {
        println!(
            "{} -> {}: {}, {}/{} chunks, {} rows copied (~{} planned){}",
            t.table,
            t.target,
            t.state,
            t.chunks_done,
            t.chunks,
            t.rows_copied,
            t.rows_estimate,
            t.error.as_ref().map(|e| format!("\n  error: {e}")).unwrap_or_default()
        );
        for p in &t.partitions {
            println!("  {}: {}/{} chunks, {} rows copied", p.partition, p.chunks_done, p.chunks, p.rows_copied);
        }
    }
}

pub fn print_sync_status(s: &SyncRecord) {
    let lag = [
        s.lag.events.map(|n| format!("{n} events behind")),
        s.lag.bytes.map(|n| format!("{n} bytes of log behind")),
        s.lag.seconds.map(|n| format!("lag {n:.1}s")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    println!(
        "sync ({} capture): {}, {} events applied in {} batches, at {} (started at {}){}{} [{}]",
        s.mode,
        s.state,
        s.events,
        s.batches,
        s.position,
        s.start_position,
        if lag.is_empty() { String::new() } else { format!("; {lag}") },
        s.error.as_ref().map(|e| format!("\n  error: {e}")).unwrap_or_default(),
        s.updated_at
    );
}

/// Renders [`Progress`] until finished: one bar per table on a terminal, a line
/// every five seconds otherwise.
pub struct ProgressDisplay {
    done: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressDisplay {
    /// `sync`: also show the sync's counters and lag (`pontoon run`).
    pub fn start(progress: Arc<Progress>, sync: Option<Arc<SyncProgress>>) -> ProgressDisplay {
        let (tx, rx) = oneshot::channel();
        let task = if std::io::stderr().is_terminal() {
            tokio::spawn(bars(progress, sync, rx))
        } else {
            tokio::spawn(lines(progress, sync, rx))
        };
        ProgressDisplay { done: Some(tx), task }
    }

    pub async fn finish(mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// One line about the sync: events applied, backlog and lag.
pub fn sync_line(s: &SyncProgress) -> String {
    let behind = match s.behind_events.load(Ordering::Relaxed) {
        u64::MAX => String::new(),
        n => format!(", {n} events behind"),
    };
    let lag = match s.lag_millis.load(Ordering::Relaxed) {
        n if n < 0 => String::new(),
        n => format!(", lag {:.1}s", n as f64 / 1000.0),
    };
    let verified = match (s.verified_keys.load(Ordering::Relaxed), s.verify_differences.load(Ordering::Relaxed)) {
        (0, 0) => String::new(),
        (keys, 0) => format!(", {keys} applied keys verified"),
        (keys, d) => format!(", {keys} applied keys verified, {d} DIFFER (see the verify-changes report)"),
    };
    format!("sync: {} events applied{behind}{lag}{verified}", s.events.load(Ordering::Relaxed))
}

async fn bars(progress: Arc<Progress>, sync: Option<Arc<SyncProgress>>, mut done: oneshot::Receiver<()>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:24} {bar:30} {pos:>10}/{len:10} rows {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bars: Vec<ProgressBar> = progress
        .tables
        .iter()
        .map(|t| {
            let b = multi.add(ProgressBar::new(t.rows_estimate.load(Ordering::Relaxed).max(1)));
            b.set_style(style.clone());
            b.set_prefix(t.name.clone());
            b
        })
        .collect();
    let sync_bar = sync.as_ref().map(|_| multi.add(ProgressBar::new_spinner()));
    // rows/s over the last few seconds, per table
    let mut history: Vec<std::collections::VecDeque<(std::time::Instant, u64)>> =
        progress.tables.iter().map(|_| Default::default()).collect();
    loop {
        let now = std::time::Instant::now();
        for ((t, b), h) in progress.tables.iter().zip(&bars).zip(&mut history) {
            let done = t.rows_done.load(Ordering::Relaxed);
            let est = t.rows_estimate.load(Ordering::Relaxed).max(done);
            b.set_length(est.max(1));
            b.set_position(done);
            h.push_back((now, done));
            while h.len() > 2 && now.duration_since(h[0].0) > Duration::from_secs(5) {
                h.pop_front();
            }
            let (t0, r0) = h[0];
            let secs = now.duration_since(t0).as_secs_f64();
            let rate = if secs > 0.0 { (done - r0) as f64 / secs } else { 0.0 };
            let eta = if rate > 0.0 && est > done {
                format!(" eta {}s", ((est - done) as f64 / rate).ceil() as u64)
            } else {
                String::new()
            };
            b.set_message(format!("{rate:>9.0} rows/s{eta} {}", t.phase().as_str()));
        }
        if let (Some(s), Some(b)) = (&sync, &sync_bar) {
            b.set_message(sync_line(s));
            b.tick();
        }
        tokio::select! {
            _ = &mut done => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    for (t, b) in progress.tables.iter().zip(&bars) {
        let done = t.rows_done.load(Ordering::Relaxed);
        if t.phase() == Phase::Done {
            // a `where` filter or a stale estimate: the bar ends at what was copied
            b.set_length(done.max(1));
        }
        b.set_position(done);
        b.abandon_with_message(t.phase().as_str());
    }
    if let (Some(s), Some(b)) = (&sync, &sync_bar) {
        b.abandon_with_message(sync_line(s));
    }
}

async fn lines(progress: Arc<Progress>, sync: Option<Arc<SyncProgress>>, mut done: oneshot::Receiver<()>) {
    let mut last_rows = 0;
    let mut last = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut done => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let rows = progress.rows_done();
        let rate = (rows - last_rows) as f64 / last.elapsed().as_secs_f64().max(0.001);
        last_rows = rows;
        last = std::time::Instant::now();
        let parts: Vec<String> = progress
            .tables
            .iter()
            .filter(|t| t.phase() != Phase::Waiting)
            .map(|t| {
                format!(
                    "{} {} {}/{} chunks {} rows",
                    t.name,
                    t.phase().as_str(),
                    t.chunks_done.load(Ordering::Relaxed),
                    t.chunks_total.load(Ordering::Relaxed),
                    t.rows_done.load(Ordering::Relaxed)
                )
            })
            .collect();
        let sync = sync.as_deref().map(|s| format!("; {}", sync_line(s))).unwrap_or_default();
        eprintln!("progress: {rows} rows, {rate:.0} rows/s; {}{sync}", parts.join("; "));
    }
}
