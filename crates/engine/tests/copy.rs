//! Copy features against real servers: partitions, the mapping, existing target
//! tables, idempotent re-copies, the throttle. Results are checked with SQL run by
//! the engines' own clients.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pontoon_engine::connect::connector;
use pontoon_engine::copy::{CopyContext, CopyReport, copy};
use pontoon_engine::core::{ErrorKind, Value};
use pontoon_engine::job::Job;
use pontoon_engine::plan::plan;
use pontoon_engine::progress::Progress;
use pontoon_engine::retry::RetryPolicy;
use pontoon_engine::state::StateStore;
use pontoon_engine::status::status;
use pontoon_testsupport::{mysql_db, pg_db, temp_dir};

async fn run_job(
    dir: &Path,
    source: &str,
    target: &str,
    rest: &str,
) -> pontoon_engine::core::Result<(Job, CopyReport)> {
    let path = dir.join("job.toml");
    std::fs::write(&path, format!("[source]\nurl = \"{source}\"\n[target]\nurl = \"{target}\"\n{rest}")).unwrap();
    let job = Job::load(&path).expect("valid job");
    let s = connector(&job.source, &job.base_dir)?;
    let t = connector(&job.target, &job.base_dir)?;
    let plan = plan(&job, s.as_ref(), t.as_ref()).await?;
    let ctx = CopyContext {
        source: s,
        target: t,
        state: Arc::new(StateStore::open(&job.state_path())?),
        settings: job.copy.clone(),
        progress: Arc::new(Progress::new(
            plan.tables.iter().map(|t| (t.job.source.clone(), t.target_name().into(), t.estimated_rows)),
        )),
        stop: Arc::new(AtomicBool::new(false)),
        retry: RetryPolicy::default(),
        tracker: Default::default(),
    };
    let report = copy(&ctx, &plan).await?;
    Ok((job, report))
}

#[tokio::test]
async fn partitions_go_smallest_first_with_progress_per_partition() {
    let src = pg_db();
    src.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, tenant text, amount int);
         INSERT INTO orders SELECT g, CASE WHEN g <= 500 THEN 'big' WHEN g <= 550 THEN 'mid' WHEN g <= 555 THEN 'small'
                                           WHEN g <= 557 THEN 'tiny' ELSE NULL END, g
         FROM generate_series(1, 560) g;",
    );
    let dst = pg_db();
    let dir = temp_dir("pontoon-copy-part");
    let (job, report) = run_job(
        dir.path(),
        &src.url,
        &dst.url,
        "[copy]\nchunk_rows = 100\nworkers = 1\n[[tables]]\nsource = \"orders\"\npartition_by = \"tenant\"\n",
    )
    .await
    .unwrap();
    assert!(!report.failed(), "{report:?}");
    assert_eq!(dst.sql("SELECT count(*) FROM orders"), "560");
    let state = StateStore::open(&job.state_path()).unwrap();
    // chunks were planned per partition, smallest partition first
    let order: Vec<Value> = state.chunks("orders").unwrap().into_iter().filter_map(|c| c.partition).collect();
    let mut firsts: Vec<Value> = Vec::new();
    for p in order {
        if firsts.last() != Some(&p) {
            firsts.push(p);
        }
    }
    assert_eq!(
        firsts,
        vec![
            Value::Text("tiny".into()),
            Value::Null,
            Value::Text("small".into()),
            Value::Text("mid".into()),
            Value::Text("big".into())
        ]
    );
    let st = status(&state).unwrap();
    let counts: Vec<(String, u64, u64)> =
        st[0].partitions.iter().map(|p| (p.partition.to_string(), p.rows_copied, p.chunks)).collect();
    assert_eq!(
        counts,
        vec![
            ("tiny".into(), 2, 1),
            ("NULL".into(), 3, 1),
            ("small".into(), 5, 1),
            ("mid".into(), 50, 1),
            ("big".into(), 500, 6)
        ]
    );
}

#[tokio::test]
async fn mapping_renames_excludes_computes_and_filters() {
    let src = mysql_db();
    src.sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, order_no varchar(20) NOT NULL, amount decimal(10,2) NOT NULL,
                              status varchar(10) NOT NULL, legacy_flag tinyint);
         INSERT INTO orders SELECT seq, CONCAT('N-', seq), seq * 1.25, IF(seq % 4 = 0, 'draft', 'paid'), 1 FROM seq_1_to_400;",
    );
    let dst = pg_db();
    let dir = temp_dir("pontoon-copy-map");
    let (_, report) = run_job(
        dir.path(),
        &src.url,
        &dst.url,
        r#"[copy]
chunk_rows = 64
[[tables]]
source = "orders"
target = "orders_v2"
where = "status <> 'draft'"
exclude = ["legacy_flag"]
[tables.columns]
order_number = "order_no"
amount_cents = { sql = "amount * 100" }
"#,
    )
    .await
    .unwrap();
    assert!(!report.failed(), "{report:?}");
    assert_eq!(report.rows, 300);
    let cols = dst.sql(
        "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'orders_v2'",
    );
    assert_eq!(
        cols,
        "id:bigint,order_number:character varying,amount:numeric,status:character varying,amount_cents:numeric"
    );
    assert_eq!(dst.sql("SELECT count(*) FROM orders_v2 WHERE status = 'draft'"), "0");
    assert_eq!(
        dst.sql("SELECT count(*) FROM orders_v2 WHERE amount_cents <> amount * 100 OR order_number <> 'N-' || id"),
        "0"
    );
    assert_eq!(dst.sql("SELECT amount::text || ' ' || amount_cents::text FROM orders_v2 WHERE id = 3"), "3.75 375.00");
}

#[tokio::test]
async fn an_existing_target_table_is_used_as_it_is() {
    let src = pg_db();
    src.sql("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 50) g;");
    let dst = mysql_db();
    dst.sql(
        "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(40), note varchar(10), created tinyint NOT NULL DEFAULT 7);
         INSERT INTO items (id, name, note) VALUES (1, 'old', 'keep me');",
    );
    let dir = temp_dir("pontoon-copy-existing");
    let (_, report) = run_job(dir.path(), &src.url, &dst.url, "").await.unwrap();
    assert!(!report.failed(), "{report:?}");
    // the table was not recreated: its own columns and defaults remain
    assert_eq!(dst.sql("SELECT count(*) FROM items"), "50");
    assert_eq!(dst.sql("SELECT CONCAT(name, '|', note, '|', created) FROM items WHERE id = 1"), "n1|keep me|7");
    assert_eq!(dst.sql("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'items' AND COLUMN_NAME = 'name'"), "varchar(40)");

    // an incompatible existing table is refused before anything is written
    let dst2 = mysql_db();
    dst2.sql("CREATE TABLE items (id bigint PRIMARY KEY, name date)");
    let dir2 = temp_dir("pontoon-copy-incompatible");
    let err = run_job(dir2.path(), &src.url, &dst2.url, "").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("target column `items.name` is date and cannot hold the source's text"), "{err}");
    assert_eq!(dst2.sql("SELECT count(*) FROM items"), "0");
}

#[tokio::test]
async fn copying_again_leaves_each_row_once_with_the_newest_values() {
    let src = pg_db();
    src.sql("CREATE TABLE t (a int, b text, v int, PRIMARY KEY (a, b)); INSERT INTO t SELECT g % 10, 'k' || g, g FROM generate_series(-100, 100) g;");
    let dst = pg_db();
    let dir = temp_dir("pontoon-copy-twice");
    let (job, first) = run_job(dir.path(), &src.url, &dst.url, "[copy]\nchunk_rows = 30\n").await.unwrap();
    assert_eq!(first.rows, 201);
    src.sql("UPDATE t SET v = v + 1000 WHERE a < 0");
    // a fresh run (no state) writes every chunk again over the existing rows
    std::fs::remove_file(job.state_path()).unwrap();
    let (_, second) = run_job(dir.path(), &src.url, &dst.url, "[copy]\nchunk_rows = 30\n").await.unwrap();
    assert_eq!(second.rows, 201);
    let q = "SELECT count(*) || ' ' || sum(v) || ' ' || md5(string_agg(a || b || v, ',' ORDER BY a, b)) FROM t";
    assert_eq!(dst.sql(q), src.sql(q));
}

#[tokio::test]
async fn the_throttle_holds_the_rows_per_second_limit() {
    let dir = temp_dir("pontoon-copy-throttle");
    let db = dir.join("s.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000) INSERT INTO t SELECT i, 'x' || i FROM s;",
    )
    .unwrap();
    drop(c);
    let started = Instant::now();
    let (_, report) = run_job(
        dir.path(),
        "sqlite:s.db",
        "sqlite:t.db",
        "[copy]\nchunk_rows = 250\nworkers = 2\nmax_rows_per_second = 1000\n",
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 3000);
    // one second of burst, then 2000 rows at 1000 rows/s
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
}

#[tokio::test]
async fn planning_interrupted_midway_resumes_without_gaps_or_overlaps() {
    let src = pg_db();
    src.sql(
        "CREATE TABLE ev (id int PRIMARY KEY, tenant int, v text);
         INSERT INTO ev SELECT g, g % 3, 'v' || g FROM generate_series(1, 1500) g;",
    );
    let dst = pg_db();
    let dir = temp_dir("pontoon-copy-replan");
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n[copy]\nchunk_rows = 10\nworkers = 1\n[[tables]]\nsource = \"ev\"\npartition_by = \"tenant\"\n",
            src.url, dst.url
        ),
    )
    .unwrap();
    let job = Job::load(&path).unwrap();
    let s = connector(&job.source, &job.base_dir).unwrap();
    let t = connector(&job.target, &job.base_dir).unwrap();
    let plan = plan(&job, s.as_ref(), t.as_ref()).await.unwrap();
    let state = Arc::new(StateStore::open(&job.state_path()).unwrap());
    let ctx = |stop: Arc<AtomicBool>| CopyContext {
        source: s.clone(),
        target: t.clone(),
        state: state.clone(),
        settings: job.copy.clone(),
        progress: Arc::new(Progress::new(
            plan.tables.iter().map(|t| (t.job.source.clone(), t.target_name().into(), 0)),
        )),
        stop,
        retry: RetryPolicy::default(),
        tracker: Default::default(),
    };

    // first run: stopped once about 60 of the ~150 chunks are planned
    let stop = Arc::new(AtomicBool::new(false));
    let first = ctx(stop.clone());
    let progress = first.progress.clone();
    let watcher = tokio::spawn(async move {
        while progress.tables[0].chunks_total.load(std::sync::atomic::Ordering::Relaxed) < 60 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let report = copy(&first, &plan).await.unwrap();
    watcher.await.unwrap();
    assert!(report.interrupted, "{report:?}");
    let record = state.table("ev").unwrap().unwrap();
    assert!(!record.planned, "planning was interrupted");
    let planned_before = state.chunks("ev").unwrap().len();
    assert!((60..150).contains(&planned_before), "{planned_before} chunks planned before the stop");

    // second run: planning resumes where it stopped, the copy completes
    let report = copy(&ctx(Arc::new(AtomicBool::new(false))), &plan).await.unwrap();
    assert!(!report.interrupted && !report.failed(), "{report:?}");
    assert!(state.table("ev").unwrap().unwrap().planned);
    let chunks = state.chunks("ev").unwrap();
    // per partition: the chunks tile the key space, from unbounded to unbounded
    for tenant in 0..3 {
        let mine: Vec<_> = chunks.iter().filter(|c| c.partition == Some(Value::Int(tenant))).collect();
        assert!(mine.first().unwrap().range.after.is_none(), "tenant {tenant} starts unbounded");
        assert!(mine.last().unwrap().range.upto.is_none(), "tenant {tenant} ends unbounded");
        for pair in mine.windows(2) {
            assert_eq!(pair[0].range.upto, pair[1].range.after, "tenant {tenant}: chunks must meet exactly");
        }
    }
    assert!(chunks.iter().all(|c| c.done && c.completions == 1), "every chunk copied exactly once");
    let q = "SELECT count(*) || ' ' || md5(string_agg(concat_ws(':', id, tenant, v), ',' ORDER BY id)) FROM ev";
    assert_eq!(dst.sql(q), src.sql(q));
}
