//! The `pontoon` command: argument parsing, progress display and output formats.
//! All migration logic lives in `pontoon-engine`.
//!
//! Exit codes (DESIGN.md "Contracts"): 0 success, 1 failed, 2 bad usage or bad job
//! file, 3 verification found differences. `--json` prints one JSON object as the
//! last line of stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use pontoon_engine::copy::{CopyContext, CopyReport, copy};
use pontoon_engine::core::{Connector, Error, ErrorKind};
use pontoon_engine::job::Job;
use pontoon_engine::plan::{Plan, plan};
use pontoon_engine::progress::Progress;
use pontoon_engine::retry::RetryPolicy;
use pontoon_engine::run::{RunReport, start_capture};
use pontoon_engine::state::{JobLock, StateStore};
use pontoon_engine::sync::{SyncProgress, Until};
use pontoon_engine::track::CopyTracker;
use pontoon_engine::verify::{VerifyContext, VerifyOptions, verify};
use pontoon_engine::{connect, demo, status};
use serde_json::json;

mod display;

#[derive(Parser, Debug)]
#[command(name = "pontoon", version, about = "Move a live system's data from an old database to a new one")]
struct Cli {
    /// Print one JSON object on the last line of stdout.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the job file, introspect both sides and print what would be done. Writes nothing.
    Plan { job: PathBuf },
    /// Copy every selected table (resumable: run again after an interruption).
    Copy {
        job: PathBuf,
        /// Override `[copy] workers`.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Online migration: start change capture, copy, then sync every change until stopped
    /// (Ctrl-C / SIGTERM: finish the batch in hand and exit 0; run again to continue).
    Run {
        job: PathBuf,
        /// Override `[copy] workers`.
        #[arg(long)]
        workers: Option<usize>,
        /// Exit once the copy is done and the sync has caught up with the source.
        #[arg(long)]
        drain: bool,
    },
    /// Remove everything pontoon installed on the source for this job (triggers, change-log
    /// tables, replication slots) and say what was removed.
    Cleanup { job: PathBuf },
    /// Show what has been copied, per table and per partition, and where the sync stands.
    Status { job: PathBuf },
    /// Compare the source (through the mapping) with the target field by field; record each
    /// difference in the state store and the report file. Exit code 3 when differences remain.
    /// Resumable: run again after an interruption to continue.
    Verify {
        job: PathBuf,
        /// Only this table (source or target name).
        #[arg(long)]
        table: Option<String>,
        /// Only this partition value of the table's `partition_by` (needs --table).
        #[arg(long)]
        partition: Option<String>,
        /// Re-copy every differing key from the source and verify it again, round after
        /// round, until nothing differs or `[verify] rounds` is reached.
        #[arg(long)]
        repair: bool,
        /// The report file (JSON lines); default `<job>.verify.jsonl` beside the job file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Build a sample shop on embedded SQLite and migrate it (no server needed).
    Demo {
        /// Where the demo databases go.
        #[arg(long, default_value = "pontoon-demo")]
        dir: PathBuf,
        /// Size of the shop relative to the default (about a million rows).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = if e.kind() == ErrorKind::Config { 2 } else { 1 };
        Failure { code, message: e.to_string() }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logs(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        // the drivers log statements with their parameters (row values) at debug
        _ => "debug,tokio_postgres=info,mysql_async=info,mysql_common=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PONTOON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // colours only on a terminal: a log redirected to a file stays plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Plan { job } => cmd_plan(&job, cli.json).await,
        Command::Copy { job, workers } => cmd_copy(&job, workers, cli.json).await,
        Command::Run { job, workers, drain } => cmd_run(&job, workers, drain, cli.json).await,
        Command::Cleanup { job } => cmd_cleanup(&job, cli.json).await,
        Command::Status { job } => cmd_status(&job, cli.json),
        Command::Verify { job, table, partition, repair, report } => {
            let options = VerifyOptions { table, partition, repair };
            cmd_verify(&job, options, report, cli.json).await
        }
        Command::Demo { dir, scale } => cmd_demo(&dir, scale, cli.json).await,
    }
}

fn load_job(path: &Path) -> Result<Job, Failure> {
    Job::load(path).map_err(|e| Failure { code: 2, message: e.to_string() })
}

struct Sides {
    source: Arc<dyn Connector>,
    target: Arc<dyn Connector>,
}

fn sides(job: &Job) -> Result<Sides, Failure> {
    Ok(Sides {
        source: connect::connector(&job.source, &job.base_dir)?,
        target: connect::connector(&job.target, &job.base_dir)?,
    })
}

async fn cmd_plan(path: &Path, json: bool) -> Result<u8, Failure> {
    let job = load_job(path)?;
    let s = sides(&job)?;
    let plan = plan(&job, s.source.as_ref(), s.target.as_ref()).await?;
    let report = pontoon_engine::plan::report(&plan, &job, s.source.as_ref(), s.target.as_ref()).await?;
    display::print_plan(&report, &job);
    if json {
        println!("{}", json!({ "source": job.source.to_string(), "target": job.target.to_string(), "tables": report }));
    }
    Ok(0)
}

async fn cmd_copy(path: &Path, workers: Option<usize>, json: bool) -> Result<u8, Failure> {
    let job = load_job_with_workers(path, workers)?;
    let s = sides(&job)?;
    let plan = plan(&job, s.source.as_ref(), s.target.as_ref()).await?;
    let report = run_copy(&job, &s, &plan).await?;
    display::print_copy(&report);
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    }
    Ok(copy_exit_code(&report))
}

fn load_job_with_workers(path: &Path, workers: Option<usize>) -> Result<Job, Failure> {
    let mut job = load_job(path)?;
    if let Some(w) = workers {
        if w == 0 {
            return Err(Failure { code: 2, message: "--workers must be at least 1".into() });
        }
        job.copy.workers = w;
    }
    Ok(job)
}

async fn cmd_run(path: &Path, workers: Option<usize>, drain: bool, json: bool) -> Result<u8, Failure> {
    let job = load_job_with_workers(path, workers)?;
    let s = sides(&job)?;
    let plan = Arc::new(plan(&job, s.source.as_ref(), s.target.as_ref()).await?);
    let until = if drain { Until::Drained(Arc::new(AtomicBool::new(true))) } else { Until::Stopped };
    let report = run_online(&job, &s, plan, until).await?;
    display::print_copy(&report.copy);
    println!(
        "sync ({} capture): {} events applied in {} batches, at {}",
        report.capture, report.sync.events, report.sync.batches, report.sync.position
    );
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    }
    if report.copy.failed() {
        eprintln!("error: the copy of some tables failed (see above); fix the cause and run again to resume");
        return Ok(1);
    }
    eprintln!("stopped: run the same command again to continue from here");
    Ok(0)
}

/// Starts capture, then copies and syncs with progress display and signal handling.
async fn run_online(job: &Job, s: &Sides, plan: Arc<Plan>, until: Until) -> Result<RunReport, Failure> {
    let (ctx, _lock) = copy_context(job, s, &plan)?;
    let spec = start_capture(job, s.source.as_ref(), &plan, &ctx).await?;
    let sync_progress = Arc::new(SyncProgress::new());
    spawn_signal_handler(ctx.stop.clone(), "finishing the chunks and the sync batch in hand");
    let display = display::ProgressDisplay::start(ctx.progress.clone(), Some(sync_progress.clone()));
    // incremental verify, when `[verify] changes` asks for it, beside the sync
    let changes = (job.verify.changes > 0.0)
        .then(|| verify_context(job, s, ctx.state.clone(), ctx.stop.clone(), true, "verify-changes", None));
    let result = pontoon_engine::run::run(&ctx, plan, spec, job.sync.batch_events, sync_progress, until, changes).await;
    display.finish().await;
    Ok(result?)
}

async fn cmd_cleanup(path: &Path, json: bool) -> Result<u8, Failure> {
    let job = load_job(path)?;
    let s = sides(&job)?;
    let removed = pontoon_engine::run::cleanup(&job, s.source.as_ref()).await?;
    if removed.is_empty() {
        println!("nothing to remove: pontoon has nothing installed on {} for job `{}`", job.source, job.sync.name);
    }
    for r in &removed {
        println!("removed {r}");
    }
    if json {
        println!("{}", json!({ "removed": removed }));
    }
    Ok(0)
}

fn copy_exit_code(report: &CopyReport) -> u8 {
    if report.failed() {
        eprintln!("error: the copy of some tables failed (see above); fix the cause and run again to resume");
        1
    } else if report.interrupted {
        eprintln!("interrupted: run the same command again to resume");
        1
    } else {
        0
    }
}

/// The context of a copy or run, with the job's lock (held until the context's
/// lock is dropped, when the command ends).
fn copy_context(job: &Job, s: &Sides, plan: &Plan) -> Result<(CopyContext, JobLock), Failure> {
    let lock = JobLock::acquire(&job.state_path())?;
    let state = Arc::new(StateStore::open(&job.state_path())?);
    let progress = Arc::new(Progress::new(
        plan.tables.iter().map(|t| (t.job.source.clone(), t.target_name().to_string(), t.estimated_rows)),
    ));
    let ctx = CopyContext {
        source: s.source.clone(),
        target: s.target.clone(),
        state,
        settings: job.copy.clone(),
        progress,
        stop: Arc::new(AtomicBool::new(false)),
        retry: RetryPolicy::default(),
        tracker: Arc::new(CopyTracker::new()),
    };
    Ok((ctx, lock))
}

/// Runs the copy with progress display and Ctrl-C / SIGTERM handling.
async fn run_copy(job: &Job, s: &Sides, plan: &Plan) -> Result<CopyReport, Failure> {
    let (ctx, _lock) = copy_context(job, s, plan)?;
    spawn_signal_handler(ctx.stop.clone(), "finishing the chunks in hand");
    let display = display::ProgressDisplay::start(ctx.progress.clone(), None);
    let result = copy(&ctx, plan).await;
    display.finish().await;
    Ok(result?)
}

fn spawn_signal_handler(stop: Arc<AtomicBool>, what: &'static str) {
    tokio::spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("stopping: {what} (signal again to abort)");
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

async fn cmd_verify(path: &Path, options: VerifyOptions, report: Option<PathBuf>, json: bool) -> Result<u8, Failure> {
    let job = load_job(path)?;
    let s = sides(&job)?;
    let state_path = job.state_path();
    let _verify_lock = JobLock::acquire_verify(&state_path)?;
    // The job's own lock tells whether a sync runs meanwhile: then differing keys are
    // checked again once the sync has passed them, and repairs wait for it to stop
    // (a repair writing beside the sync could put back a row the sync just replaced).
    let (job_lock, live) = match JobLock::acquire(&state_path) {
        Ok(lock) => (Some(lock), false),
        Err(e) if e.kind() == ErrorKind::Config => (None, true),
        Err(e) => return Err(e.into()),
    };
    let state = Arc::new(StateStore::open(&state_path)?);
    if live {
        let syncing = state.sync()?.is_some_and(|s| s.state == "running");
        if !syncing {
            return Err(Failure {
                code: 1,
                message: "a pontoon copy of this job is running: verify once it has finished".into(),
            });
        }
        if options.repair {
            return Err(Failure {
                code: 1,
                message: "a pontoon run is syncing this job: stop it before `verify --repair` (the repair \
                          and the sync would write the same rows), then start it again"
                    .into(),
            });
        }
    }
    let plan = plan(&job, s.source.as_ref(), s.target.as_ref()).await?;
    let ctx = verify_context(&job, &s, state, Arc::new(AtomicBool::new(false)), live, "verify", report);
    spawn_signal_handler(ctx.stop.clone(), "finishing the chunk in hand");
    let result = verify(&ctx, &plan, &options).await?;
    drop(job_lock);
    display::print_verify(&result);
    if json {
        println!("{}", serde_json::to_string(&result).unwrap_or_default());
    }
    if result.stopped {
        eprintln!("interrupted: run the same command again to continue after the last compared chunk");
        return Ok(1);
    }
    Ok(if result.differences > 0 { 3 } else { 0 })
}

/// A verify context for `job`; the report goes to `report` or to
/// `<job>.<suffix>.jsonl` beside the job file.
fn verify_context(
    job: &Job,
    s: &Sides,
    state: Arc<StateStore>,
    stop: Arc<AtomicBool>,
    live: bool,
    suffix: &str,
    report: Option<PathBuf>,
) -> VerifyContext {
    let stem = job.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job".into());
    VerifyContext {
        source: s.source.clone(),
        target: s.target.clone(),
        state,
        settings: job.verify.clone(),
        retry: RetryPolicy::default(),
        stop,
        report_path: report.unwrap_or_else(|| job.base_dir.join(format!("{stem}.{suffix}.jsonl"))),
        live,
        job_name: stem,
    }
}

fn cmd_status(path: &Path, json: bool) -> Result<u8, Failure> {
    let job = load_job(path)?;
    let state_path = job.state_path();
    if !state_path.exists() {
        if json {
            println!("{}", json!({ "state": state_path.display().to_string(), "tables": [] }));
        } else {
            println!("nothing copied yet (no state store at {})", state_path.display());
        }
        return Ok(0);
    }
    let state = StateStore::open(&state_path)?;
    let tables = status::status(&state)?;
    let sync = state.sync()?;
    let verify = state.last_verify_run()?;
    let changes = match state.changes_verify_run()? {
        Some(run) => {
            Some(json!({ "keys_differing": state.verify_diffs_found(run.id)?.len(), "since": run.started_at }))
        }
        None => None,
    };
    display::print_status(&tables);
    if let Some(s) = &sync {
        display::print_sync_status(s);
    }
    if let Some(v) = &verify {
        display::print_verify_status(v);
    }
    if let Some(c) = &changes {
        println!("incremental verify (since {}): {} differing keys recorded", c["since"], c["keys_differing"]);
    }
    if json {
        println!(
            "{}",
            json!({
                "state": state_path.display().to_string(),
                "tables": tables,
                "sync": sync,
                "verify": verify,
                "verify_changes": changes,
            })
        );
    }
    Ok(0)
}

async fn cmd_demo(dir: &Path, scale: f64, json: bool) -> Result<u8, Failure> {
    if !(scale > 0.0 && scale <= 100.0) {
        return Err(Failure { code: 2, message: "--scale must be in (0, 100]".into() });
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure { code: 1, message: format!("cannot create {}: {e}", dir.display()) })?;
    for f in
        ["shop_v2.db", "shop_v2.db-wal", "shop_v2.db-shm", "job.pontoon.db", "job.pontoon.db-wal", "job.pontoon.db-shm"]
    {
        let _ = std::fs::remove_file(dir.join(f));
    }
    eprintln!("building the sample shop in {} ...", dir.join("shop.db").display());
    let t = std::time::Instant::now();
    let built = demo::build_shop(dir, scale).await?;
    eprintln!("  {built} rows in {:.1}s", t.elapsed().as_secs_f64());
    let job_path = dir.join("job.toml");
    std::fs::write(&job_path, demo::JOB)
        .map_err(|e| Failure { code: 1, message: format!("cannot write {}: {e}", job_path.display()) })?;
    eprintln!("job file: {}", job_path.display());
    let job = load_job(&job_path)?;
    let s = sides(&job)?;
    let plan = Arc::new(plan(&job, s.source.as_ref(), s.target.as_ref()).await?);
    let report = pontoon_engine::plan::report(&plan, &job, s.source.as_ref(), s.target.as_ref()).await?;
    display::print_plan(&report, &job);

    // online: capture starts before the copy, the shop's application keeps writing
    // through the copy and a few seconds of sync, then stops, and the sync drains
    let (ctx, _lock) = copy_context(&job, &s, &plan)?;
    let spec = start_capture(&job, s.source.as_ref(), &plan, &ctx).await?;
    eprintln!("live writer: inserting, updating and deleting in the shop during the whole migration");
    let writer = demo::LiveWriter::start(dir);
    let sync_progress = Arc::new(SyncProgress::new());
    let drain = Arc::new(AtomicBool::new(false));
    spawn_signal_handler(ctx.stop.clone(), "finishing the chunks and the sync batch in hand");
    let display = display::ProgressDisplay::start(ctx.progress.clone(), Some(sync_progress.clone()));
    let migration = {
        let (ctx, plan, progress, until) =
            (ctx.clone(), plan.clone(), sync_progress.clone(), Until::Drained(drain.clone()));
        let batch = job.sync.batch_events;
        let changes = verify_context(&job, &s, ctx.state.clone(), ctx.stop.clone(), true, "verify-changes", None);
        tokio::spawn(
            async move { pontoon_engine::run::run(&ctx, plan, spec, batch, progress, until, Some(changes)).await },
        )
    };
    while !sync_progress.copy_done.load(Ordering::Relaxed) && !migration.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let writes = writer.stop()?;
    drain.store(true, Ordering::Relaxed);
    let result =
        migration.await.map_err(|e| Failure { code: 1, message: format!("the migration task failed: {e}") })?;
    display.finish().await;
    let result = result?;
    display::print_copy(&result.copy);
    println!(
        "live writer: {} transactions ({} inserts, {} updates, {} deletes) during the copy and sync",
        writes.transactions, writes.inserts, writes.updates, writes.deletes
    );
    println!(
        "sync ({} capture): {} change events applied in {} batches, drained",
        result.capture, result.sync.events, result.sync.batches
    );
    if let Some(c) = &result.changes {
        println!(
            "incremental verify: {} synced keys compared on both sides right after they were applied, {} differ",
            c.keys_checked, c.differences
        );
    }
    // the demo's own SQL comparison, then pontoon verify
    let compared = demo::compare(dir)?;
    let differences: u64 = compared.iter().map(|t| t.differences).sum();
    for t in &compared {
        println!(
            "  {}: {} rows in the shop (through the mapping), {} in the new schema, {} differences",
            t.table, t.source_rows, t.target_rows, t.differences
        );
    }
    let vctx = verify_context(&job, &s, ctx.state.clone(), Arc::new(AtomicBool::new(false)), false, "verify", None);
    let verified = verify(&vctx, &plan, &VerifyOptions::default()).await?;
    display::print_verify(&verified);
    let mut code = copy_exit_code(&result.copy);
    if code == 0 && differences + verified.differences > 0 {
        eprintln!(
            "error: the two sides differ ({differences} rows by the demo's SQL, {} by pontoon verify)",
            verified.differences
        );
        code = 1;
    }
    if code == 0 {
        println!(
            "done: {} migrated online into {}, both sides equal (state: {})",
            dir.join("shop.db").display(),
            dir.join("shop_v2.db").display(),
            job.state_path().display()
        );
        println!("try: pontoon status {}", job_path.display());
    }
    if json {
        println!(
            "{}",
            json!({
                "rows": result.copy.rows,
                "copy": result.copy,
                "sync": result.sync,
                "changes": result.changes,
                "writer": writes,
                "compared": compared,
                "verify": verified,
            })
        );
    }
    Ok(code)
}
