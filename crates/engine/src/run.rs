//! `pontoon run`: the online migration. Start change capture and record P0, then
//! copy and sync side by side, and keep syncing until stopped.
//!
//! Order matters (DESIGN.md, rule 1): capture starts and P0 is stored before the
//! copy reads its first chunk. A resumed run continues from the stored position
//! with the stored capture mode; a state store whose copy ran without capture
//! (`pontoon copy`) is refused, because changes made since were never captured.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use pontoon_core::capture::{CaptureMode, CaptureSpec, CaptureTable};
use pontoon_core::{Connector, Engine, Error, ErrorKind, Result};
use pontoon_state::TableState;
use serde::Serialize;

use crate::copy::{CopyContext, CopyReport, copy};
use crate::job::{Capture, Job};
use crate::plan::Plan;
use crate::sync::{SyncContext, SyncProgress, SyncReport, Until, capture_tables, sync};
use crate::verify::{ChangeSampler, ChangesReport, VerifyContext, verify_changes};

/// Rows per second assumed when estimating the copy's duration for the log
/// retention check (a low figure: the check must not pass by optimism).
const ASSUMED_COPY_ROWS_PER_SECOND: u64 = 50_000;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub capture: &'static str,
    pub copy: CopyReport,
    pub sync: SyncReport,
    /// Incremental verify, when `[verify] changes` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesReport>,
}

fn mode_name(mode: CaptureMode) -> &'static str {
    match mode {
        CaptureMode::Native => "native",
        CaptureMode::Triggers => "triggers",
    }
}

/// Picks the capture mode, runs the preflight checks and starts capture, storing
/// P0 on a first run. Returns the spec the syncer uses.
pub async fn start_capture(job: &Job, source: &dyn Connector, plan: &Plan, copy: &CopyContext) -> Result<CaptureSpec> {
    let state = &copy.state;
    let recorded = state.sync()?;
    let tables = capture_tables(plan);
    // the rows still to copy (a resumed run's finished tables need no retention)
    let mut rows_left = 0;
    for t in &plan.tables {
        if state.table(&t.job.source)?.is_none_or(|r| r.state != TableState::Copied) {
            rows_left += t.estimated_rows;
        }
    }
    let copy_seconds = (rows_left / ASSUMED_COPY_ROWS_PER_SECOND).max(60);
    let wanted = match job.sync.capture {
        Some(Capture::Native) => Some(CaptureMode::Native),
        Some(Capture::Triggers) => Some(CaptureMode::Triggers),
        Some(Capture::Outbox) => {
            return Err(Error::config(format!(
                "{}:{}: `capture = \"outbox\"` is not built yet; use native or triggers",
                job.path.display(),
                job.sync.capture_line
            )));
        }
        Some(Capture::None) => {
            return Err(Error::config(format!(
                "{}:{}: `capture = \"none\"` means no sync: use `pontoon copy` for an offline copy",
                job.path.display(),
                job.sync.capture_line
            )));
        }
        None => None,
    };
    let mode = match (&recorded, wanted) {
        (Some(rec), Some(w)) if rec.mode != mode_name(w) => {
            return Err(Error::config(format!(
                "this job's sync was started with `{}` capture; the job file now says `{}` ({}:{}). Keep `{}`, or \
                 start over (`pontoon cleanup`, a new state store and an empty target)",
                rec.mode,
                mode_name(w),
                job.path.display(),
                job.sync.capture_line,
                rec.mode
            )));
        }
        (Some(rec), _) => {
            if rec.mode == "native" {
                CaptureMode::Native
            } else {
                CaptureMode::Triggers
            }
        }
        (None, Some(w)) => w,
        (None, None) => choose_default(job, source, &tables, copy_seconds).await?,
    };
    let spec = CaptureSpec { mode, job: job.sync.name.clone() };
    let mut capture = source.capture(&spec)?;
    capture.preflight(&tables, copy_seconds).await?;
    if recorded.is_none() && !state.tables()?.is_empty() {
        return Err(Error::config(format!(
            "the state store {} holds a copy made without change capture (`pontoon copy`): changes made on the \
             source since then were not captured. Start the online migration over with a new state store and an \
             empty target",
            job.state_path().display()
        )));
    }
    let mut backoff = copy.retry.backoff();
    let p0 = loop {
        match capture.start(&tables).await {
            Ok(p) => break p,
            Err(e) => {
                capture = source.capture(&spec)?;
                backoff.retry_after("start change capture", e).await?;
            }
        }
    };
    match recorded {
        None => {
            tracing::info!(position = %p0, mode = mode_name(mode), "change capture started (P0)");
            state.begin_sync(mode_name(mode), &p0)?;
        }
        Some(rec) => tracing::info!(position = %rec.position, mode = %rec.mode, "sync resumes"),
    }
    state.set_sync_state("running", None)?;
    Ok(spec)
}

/// Default capture: triggers for SQLite; native where the server allows it,
/// otherwise triggers, saying why.
async fn choose_default(
    job: &Job,
    source: &dyn Connector,
    tables: &[CaptureTable],
    copy_seconds: u64,
) -> Result<CaptureMode> {
    if source.engine() == Engine::Sqlite {
        return Ok(CaptureMode::Triggers);
    }
    let spec = CaptureSpec { mode: CaptureMode::Native, job: job.sync.name.clone() };
    match source.capture(&spec)?.preflight(tables, copy_seconds).await {
        Ok(()) => Ok(CaptureMode::Native),
        Err(e) if e.kind() == ErrorKind::Config => {
            eprintln!(
                "note: native change capture is not possible on this source, so pontoon uses triggers \
                 (set `[sync] capture` to choose):\n{}",
                e.message()
            );
            Ok(CaptureMode::Triggers)
        }
        Err(e) => Err(e),
    }
}

/// Copies and syncs side by side. Returns when stopped (`copy.stop`), when the
/// sync has caught up after the copy (`Until::CaughtUp`), or on an error; either
/// side's error stops the other after the work in hand. With `changes` (a verify
/// context whose `settings.changes` is above 0), incremental verify checks a share
/// of the applied keys beside the sync.
pub async fn run(
    copy_ctx: &CopyContext,
    plan: Arc<Plan>,
    spec: CaptureSpec,
    batch_events: usize,
    progress: Arc<SyncProgress>,
    until: Until,
    changes: Option<VerifyContext>,
) -> Result<RunReport> {
    let (sampler, changes) = match changes.filter(|c| c.settings.changes > 0.0) {
        Some(c) => {
            let (sampler, rx) = ChangeSampler::new(c.settings.changes);
            let dropped = sampler.dropped();
            (Some(sampler), Some((c, rx, dropped)))
        }
        None => (None, None),
    };
    let sync_ctx = SyncContext {
        source: copy_ctx.source.clone(),
        target: copy_ctx.target.clone(),
        state: copy_ctx.state.clone(),
        plan: plan.clone(),
        spec: spec.clone(),
        tracker: copy_ctx.tracker.clone(),
        stop: copy_ctx.stop.clone(),
        retry: copy_ctx.retry,
        batch_events,
        progress: progress.clone(),
        changes: sampler,
    };
    let copying = async {
        let r = copy(copy_ctx, &plan).await;
        match &r {
            Ok(report) if !report.failed() && !report.interrupted => progress.copy_done.store(true, Ordering::Relaxed),
            _ => copy_ctx.stop.store(true, Ordering::Relaxed),
        }
        r
    };
    let syncing = async move {
        // owned, so the sampler's channel closes when the sync ends
        let sync_ctx = sync_ctx;
        let r = sync(&sync_ctx, until).await;
        if r.is_err() {
            copy_ctx.stop.store(true, Ordering::Relaxed);
        }
        r
    };
    let verifying = async {
        let Some((vctx, rx, dropped)) = changes else { return Ok(None) };
        let r = verify_changes(&vctx, &plan, rx, &dropped, &progress).await;
        if r.is_err() {
            copy_ctx.stop.store(true, Ordering::Relaxed);
        }
        r.map(Some)
    };
    let (copied, synced, verified) = tokio::join!(copying, syncing, verifying);
    let state = &copy_ctx.state;
    match &synced {
        Err(e) => state.set_sync_state("failed", Some(&e.to_string()))?,
        Ok(_) => state.set_sync_state("stopped", None)?,
    }
    let copied = copied?;
    let synced = synced?;
    Ok(RunReport { capture: mode_name(spec.mode), copy: copied, sync: synced, changes: verified? })
}

/// `pontoon cleanup`: removes what any capture mode of this job installed on the
/// source. Returns one line per removed object.
pub async fn cleanup(job: &Job, source: &dyn Connector) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for mode in [CaptureMode::Triggers, CaptureMode::Native] {
        let spec = CaptureSpec { mode, job: job.sync.name.clone() };
        match source.capture(&spec) {
            Ok(mut c) => removed.extend(c.cleanup().await?),
            Err(e) if matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::Config) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
