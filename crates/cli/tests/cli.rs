//! The `pontoon` binary against real servers: bad input, refusals that name table,
//! key and column, `kill -9` and resume, a server restarted mid-copy, the demo.
//!
//! Source and target are compared by SQL run through each engine's own client (not
//! by pontoon's code).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pontoon_engine::state::StateStore;
use pontoon_testsupport::{MariaDbServer, PgServer, TestDb, mysql_db, pg_db, temp_dir};

fn pontoon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pontoon")).args(args).stdin(Stdio::null()).output().expect("run pontoon")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Starts `pontoon copy JOB` in the background (stdout and stderr from `out`).
fn spawn_copy(job: &Path, out: fn() -> Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["copy", job.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .spawn()
        .expect("start pontoon copy")
}

fn write_job(dir: &Path, source: &str, target: &str, rest: &str) -> PathBuf {
    let p = dir.join("job.toml");
    std::fs::write(&p, format!("[source]\nurl = \"{source}\"\n[target]\nurl = \"{target}\"\n{rest}")).unwrap();
    p
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a last line")).expect("last line is JSON")
}

/// `id,v,n` lines sorted by id, from PostgreSQL.
fn pg_rows(db: &TestDb, table: &str) -> Vec<String> {
    db.sql(&format!("SELECT id || ',' || coalesce(v, 'NULL') || ',' || n FROM {table} ORDER BY id"))
        .lines()
        .map(String::from)
        .collect()
}

/// The same from MariaDB.
fn my_rows(db: &TestDb, table: &str) -> Vec<String> {
    db.sql(&format!("SELECT CONCAT(id, ',', coalesce(v, 'NULL'), ',', n) FROM {table} ORDER BY id"))
        .lines()
        .map(String::from)
        .collect()
}

fn make_pg_source(db: &TestDb, rows: u64) {
    db.sql(&format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, v text, n integer NOT NULL);
         INSERT INTO accounts SELECT g, CASE WHEN g % 97 = 0 THEN NULL ELSE md5(g::text) END, (g * 7) % 1000
         FROM generate_series(-{half}, {rest}) g;",
        half = rows / 2,
        rest = rows - rows / 2 - 1
    ));
}

#[test]
fn bad_job_file_reports_every_error_with_its_line_and_exits_2() {
    let dir = temp_dir("pontoon-cli-bad");
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        "[source]\nurl = \"oracle://scott:tiger@h/db\"\n[target]\nurl = \"postgres://u:${PONTOON_TEST_UNSET_VAR}@h/db\"\n[copy]\nworkers = 0\nchunk_size = 5\n[[tables]]\ntarget = \"x\"\n",
    )
    .unwrap();
    let out = pontoon(&["plan", job.to_str().unwrap()]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "line 1:",
        "line 4:",
        "PONTOON_TEST_UNSET_VAR is not set",
        "line 6:",
        "line 7:",
        "chunk_size",
        "line 8:",
        "needs `source`",
        "5 errors",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("tiger"), "a password leaked:\n{err}");
}

#[test]
fn mapping_problems_are_reported_together_with_lines() {
    let src = pg_db();
    src.sql("CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2)); CREATE TABLE nokey (a int);");
    let dir = temp_dir("pontoon-cli-map");
    let job = write_job(
        dir.path(),
        &src.url,
        &format!("sqlite:{}", dir.join("t.db").display()),
        "[[tables]]\nsource = \"orders\"\nexclude = [\"nope\"]\n[tables.columns]\ntotal = \"amount_typo\"\n[[tables]]\nsource = \"missing_table\"\n[[tables]]\nsource = \"nokey\"\n[[tables]]\nsource = \"orders\"\ntarget = \"o2\"\nversion_column = \"amount\"\nexclude = [\"amount\"]\n",
    );
    let out = pontoon(&["plan", job.to_str().unwrap()]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // the job's lines: 1-4 source and target, 5 [[tables]], 7 exclude, 9 total = ..., 10 and 12 [[tables]],
    // 17 version_column of the excluded column
    for needle in [
        "line 7:",
        "`nope` does not exist",
        "line 9:",
        "`amount_typo`",
        "line 10:",
        "`missing_table` does not exist",
        "line 12:",
        "no primary key",
        "line 17:",
        "version_column `amount` must be copied as a column",
        "5 problem(s)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn unreachable_database_is_named_without_its_password() {
    let dir = temp_dir("pontoon-cli-unreach");
    // port 1 on loopback: nothing listens there
    let job = write_job(
        dir.path(),
        "postgres://app:topsecret@127.0.0.1:1/shop",
        &format!("sqlite:{}", dir.join("t.db").display()),
        "",
    );
    for cmd in ["plan", "copy"] {
        let out = pontoon(&[cmd, job.to_str().unwrap()]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("source database postgres://app:***@127.0.0.1:1/shop"), "{cmd}: {err}");
        assert!(!err.contains("topsecret"), "{cmd}: password leaked: {err}");
    }
}

#[test]
fn values_the_target_cannot_hold_stop_their_table_naming_key_and_column() {
    let src = pg_db();
    src.sql(
        "CREATE TABLE people (id int PRIMARY KEY, name text);
         INSERT INTO people SELECT g, 'p' || g FROM generate_series(1, 100) g;
         UPDATE people SET name = 'much too long' WHERE id = 42;
         CREATE TABLE stock (id int PRIMARY KEY, qty bigint);
         INSERT INTO stock SELECT g, g FROM generate_series(-50, 50) g;
         UPDATE stock SET qty = 300 WHERE id = -7;
         CREATE TABLE fine (id int PRIMARY KEY, x int);
         INSERT INTO fine SELECT g, g FROM generate_series(1, 10) g;",
    );
    let dst = mysql_db();
    dst.sql("CREATE TABLE people (id int PRIMARY KEY, name varchar(5)); CREATE TABLE stock (id int PRIMARY KEY, qty tinyint);");
    let dir = temp_dir("pontoon-cli-range");
    let job = write_job(dir.path(), &src.url, &dst.url, "[copy]\nchunk_rows = 1000\n");
    let out = pontoon(&["copy", job.to_str().unwrap(), "--json"]);
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("table people, key (42), column name"), "{err}");
    assert!(err.contains("table stock, key (-7), column qty"), "{err}");
    assert!(!err.contains("much too long"), "row values must not be logged: {err}");
    // nothing of the refused chunks was written; the good table was copied
    assert_eq!(dst.sql("SELECT count(*) FROM people"), "0");
    assert_eq!(dst.sql("SELECT count(*) FROM stock"), "0");
    assert_eq!(dst.sql("SELECT count(*) FROM fine"), "10");
    let report = last_json(&stdout);
    let states: Vec<(String, String)> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["table"].as_str().unwrap().to_string(), t["state"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        states.contains(&("fine".into(), "copied".into())) && states.contains(&("people".into(), "failed".into())),
        "{states:?}"
    );
}

/// MariaDB to PostgreSQL: rows are fitted and encoded for the target as they are
/// read; a value refused by the fit (text too long) or only by PostgreSQL's encoder
/// (a fraction a `timestamp(0)` would round) still stops its table naming key and
/// column, with nothing of the chunk written.
#[test]
fn mariadb_to_postgres_refusals_name_key_and_column() {
    let src = mysql_db();
    src.sql(
        "CREATE TABLE people (id int PRIMARY KEY, name text);
         INSERT INTO people SELECT seq, concat('p', seq) FROM seq_1_to_3000;
         UPDATE people SET name = 'much too long' WHERE id = 2042;
         CREATE TABLE events (id int PRIMARY KEY, at datetime(6));
         INSERT INTO events SELECT seq, '2024-01-01 00:00:00' FROM seq_1_to_3000;
         UPDATE events SET at = '2024-01-01 00:00:00.5' WHERE id = 2007;
         CREATE TABLE fine (id int PRIMARY KEY, x int, t text);
         INSERT INTO fine SELECT seq, seq, IF(seq % 2 = 0, '', NULL) FROM seq_1_to_3000;",
    );
    let dst = pg_db();
    dst.sql("CREATE TABLE people (id int PRIMARY KEY, name varchar(5)); CREATE TABLE events (id int PRIMARY KEY, at timestamp(0));");
    let dir = temp_dir("pontoon-cli-my-pg-range");
    let job = write_job(dir.path(), &src.url, &dst.url, "[copy]\nchunk_rows = 1000\n");
    let out = pontoon(&["copy", job.to_str().unwrap(), "--json"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("table people, key (2042), column name"), "{err}");
    assert!(err.contains("table events, key (2007), column at"), "{err}");
    assert!(!err.contains("much too long"), "row values must not be logged: {err}");
    // the refused chunks wrote nothing (the others may have been copied); NULL and '' kept apart
    assert_eq!(dst.sql("SELECT count(*) FROM people WHERE id BETWEEN 2001 AND 3000"), "0");
    assert_eq!(dst.sql("SELECT count(*) FROM events WHERE id BETWEEN 2001 AND 3000"), "0");
    assert_eq!(dst.sql("SELECT count(*), count(t), count(*) FILTER (WHERE t = '') FROM fine"), "3000|1500|1500");
}

#[test]
fn kill_9_at_random_points_then_resume_copies_every_row_once() {
    let src = pg_db();
    make_pg_source(&src, 120_000);
    let dst = mysql_db();
    let dir = temp_dir("pontoon-cli-kill");
    // throttled so that the kills land in the middle of the copy
    let job = write_job(
        dir.path(),
        &src.url,
        &dst.url,
        "[copy]\nworkers = 2\nchunk_rows = 1000\nmax_rows_per_second = 40000\n",
    );
    let job_s = job.to_str().unwrap();

    let mut seed = std::process::id() as u64 ^ 0x2545_f491_4f6c_dd1d;
    let mut kills = 0;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(100 + seed % 1400);
        let mut child = spawn_copy(&job, Stdio::null);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {delay:?} ({status})");
    }
    assert!(kills > 0, "the copy was never interrupted; the test proves nothing");

    let done_before = StateStore::open(&dir.join("job.pontoon.db"))
        .map(|s| s.chunks("accounts").map(|c| c.iter().filter(|c| c.done).count()).unwrap_or(0))
        .unwrap_or(0);
    let out = pontoon(&["copy", job_s, "--json"]);
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let t = &last_json(&stdout)["tables"][0];
    assert_eq!(t["chunks_skipped"].as_u64().unwrap() as usize, done_before, "finished chunks are skipped");
    assert_eq!(
        t["chunks_copied"].as_u64().unwrap() + t["chunks_skipped"].as_u64().unwrap(),
        t["chunks_total"].as_u64().unwrap()
    );

    let state = StateStore::open(&dir.join("job.pontoon.db")).unwrap();
    let chunks = state.chunks("accounts").unwrap();
    assert!(chunks.len() >= 120, "{} chunks", chunks.len());
    for c in &chunks {
        assert!(c.done, "chunk {} not done", c.seq);
        assert_eq!(
            c.completions, 1,
            "chunk {} was checkpointed {} times: a finished chunk was copied again",
            c.seq, c.completions
        );
    }
    assert_eq!(chunks.iter().map(|c| c.rows).sum::<u64>(), 120_000);
    assert_eq!(my_rows(&dst, "accounts"), pg_rows(&src, "accounts"), "source and target differ");

    let out = pontoon(&["status", job_s, "--json"]);
    let (stdout, _) = text(&out);
    let st = &last_json(&stdout)["tables"][0];
    assert_eq!(st["state"], "copied");
    assert_eq!(st["rows_copied"], 120_000);
}

#[test]
fn target_server_restarted_mid_copy_does_not_fail_the_run() {
    let src = pg_db();
    make_pg_source(&src, 60_000);
    let server = PgServer::start_private();
    let dst = server.create_db();
    let dir = temp_dir("pontoon-cli-restart-target");
    let job = write_job(
        dir.path(),
        &src.url,
        &dst.url,
        "[copy]\nworkers = 2\nchunk_rows = 500\nmax_rows_per_second = 15000\n",
    );
    let child = spawn_copy(&job, Stdio::piped);
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    std::thread::sleep(Duration::from_millis(1000));
    server.start();
    let out = child.wait_with_output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("transient error, retrying") || err.is_empty(), "{err}");
    assert_eq!(pg_rows(&dst, "accounts"), pg_rows(&src, "accounts"));
}

#[test]
fn source_server_restarted_mid_copy_does_not_fail_the_run() {
    let server = MariaDbServer::start_private();
    let src = server.create_db();
    src.sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, v varchar(40), n int NOT NULL);
         INSERT INTO accounts SELECT seq, md5(seq), seq % 1000 FROM seq_1_to_60000;",
    );
    let dst = pg_db();
    let dir = temp_dir("pontoon-cli-restart-source");
    let job = write_job(
        dir.path(),
        &src.url,
        &dst.url,
        "[copy]\nworkers = 2\nchunk_rows = 500\nmax_rows_per_second = 15000\n",
    );
    let child = spawn_copy(&job, Stdio::piped);
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    server.kill();
    server.start();
    eprintln!("source restarted in {:?}", t.elapsed());
    let out = child.wait_with_output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(pg_rows(&dst, "accounts"), my_rows(&src, "accounts"));
}

#[test]
fn demo_runs_without_any_server() {
    let dir = temp_dir("pontoon-cli-demo");
    let out = pontoon(&["demo", "--scale", "0.02", "--dir", dir.path().to_str().unwrap(), "--json"]);
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report = last_json(&stdout);
    let src = rusqlite::Connection::open(dir.join("shop.db")).unwrap();
    let dst = rusqlite::Connection::open(dir.join("shop_v2.db")).unwrap();
    let count = |c: &rusqlite::Connection, sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let paid = count(&src, "SELECT count(*) FROM orders WHERE status <> 'draft'");
    assert_eq!(count(&dst, "SELECT count(*) FROM orders_v2"), paid);
    assert_eq!(count(&dst, "SELECT count(*) FROM order_items"), count(&src, "SELECT count(*) FROM order_items"));
    assert_eq!(count(&dst, "SELECT count(*) FROM customers"), count(&src, "SELECT count(*) FROM customers"));
    // computed and renamed columns hold what the mapping says
    assert_eq!(
        count(&dst, "SELECT count(*) FROM orders_v2 WHERE amount_cents <> CAST(round(amount * 100) AS INTEGER)"),
        0
    );
    assert_eq!(count(&dst, "SELECT count(*) FROM customers WHERE country_code <> upper(country)"), 0);
    drop(dst);
    dst_attach_check(&dir.join("shop_v2.db"), &dir.join("shop.db"));
    // the live writer really wrote during the migration, and the sync carried it
    assert!(report["writer"]["transactions"].as_u64().unwrap() > 50, "{}", report["writer"]);
    assert!(report["sync"]["events"].as_u64().unwrap() > 50, "{}", report["sync"]);
    for t in report["compared"].as_array().unwrap() {
        assert_eq!(t["differences"], 0, "{t}");
        assert_eq!(t["source_rows"], t["target_rows"], "{t}");
    }
    // pontoon verify agrees, and incremental verify checked synced keys as they came
    let paid_rows = paid as u64;
    assert_eq!(report["verify"]["differences"], 0, "{}", report["verify"]);
    assert!(report["verify"]["rows_compared"].as_u64().unwrap() > paid_rows, "{}", report["verify"]);
    assert!(report["changes"]["keys_checked"].as_u64().unwrap() > 0, "{}", report["changes"]);
    assert_eq!(report["changes"]["differences"], 0, "{}", report["changes"]);
}

/// Every target row equals its source row through the demo's mapping.
fn dst_attach_check(target: &Path, source: &Path) {
    let c = rusqlite::Connection::open(target).unwrap();
    c.execute("ATTACH DATABASE ?1 AS src", [source.to_str().unwrap()]).unwrap();
    let diff: i64 = c
        .query_row(
            "SELECT
               (SELECT count(*) FROM customers t JOIN src.customers s ON s.id = t.id
                 WHERE t.name IS NOT s.name OR t.email_address IS NOT s.email OR t.country IS NOT s.country OR t.created_at IS NOT s.created_at)
             + (SELECT count(*) FROM orders_v2 t JOIN src.orders s ON s.id = t.id
                 WHERE t.customer_id IS NOT s.customer_id OR t.order_status IS NOT s.status OR t.amount IS NOT s.amount OR t.created_at IS NOT s.created_at)
             + (SELECT count(*) FROM order_items t JOIN src.order_items s ON s.order_id = t.order_id AND s.line_no = t.line_no
                 WHERE t.sku IS NOT s.sku OR t.qty IS NOT s.qty OR t.unit_price IS NOT s.unit_price)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(diff, 0, "rows differ between shop.db and shop_v2.db");
}

#[test]
fn sigterm_finishes_the_chunks_in_hand_and_a_rerun_completes() {
    let src = pg_db();
    make_pg_source(&src, 40_000);
    let dst = pg_db();
    let dir = temp_dir("pontoon-cli-term");
    let job = write_job(
        dir.path(),
        &src.url,
        &dst.url,
        "[copy]\nworkers = 2\nchunk_rows = 1000\nmax_rows_per_second = 10000\n",
    );
    let child = spawn_copy(&job, Stdio::piped);
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted: run the same command again to resume"), "{err}");
    let state = StateStore::open(&dir.join("job.pontoon.db")).unwrap();
    let done = state.chunks("accounts").unwrap().iter().filter(|c| c.done).count();
    assert!(done > 0 && done < 40, "{done} chunks done before the stop");
    // every chunk marked done is really in the target (checkpoint after commit)
    let copied: u64 = dst.sql("SELECT count(*) FROM accounts").parse().unwrap();
    assert!(copied >= done as u64 * 1000, "{copied} rows for {done} chunks");

    let out = pontoon(&["copy", job.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(state.chunks("accounts").unwrap().iter().all(|c| c.done && c.completions == 1));
    assert_eq!(pg_rows(&dst, "accounts"), pg_rows(&src, "accounts"));
}

#[test]
fn plan_prints_the_plan_and_writes_nothing() {
    let src = pg_db();
    src.sql(
        "CREATE TABLE orders (id int, region text, amount numeric(10,2), placed timestamptz, PRIMARY KEY (region, id));
         INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END, g, now() FROM generate_series(1, 3000) g;
         ANALYZE orders;",
    );
    let dir = temp_dir("pontoon-cli-plan");
    let target_file = dir.join("new.db");
    let job = write_job(
        dir.path(),
        &src.url,
        &format!("sqlite:{}", target_file.display()),
        "[copy]\nchunk_rows = 1000\n[[tables]]\nsource = \"orders\"\npartition_by = \"region\"\n[tables.columns]\ncents = { sql = \"amount * 100\", type = \"bigint\" }\n",
    );
    let out = pontoon(&["plan", job.to_str().unwrap(), "--json"]);
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(stdout.contains("orders -> orders (will be created)  key (region, id)"), "{stdout}");
    assert!(stdout.contains("partitioned by region: 2 partitions, smallest first: eu (1000), us (2000)"), "{stdout}");
    let plan = last_json(&stdout);
    let t = &plan["tables"][0];
    assert_eq!(t["estimated_rows"], 3000);
    assert_eq!(t["estimated_chunks"], 3);
    let cols: Vec<(String, String)> = t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["target"].as_str().unwrap().to_string(), c["target_type"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", "INT"),
            ("region", "TEXT"),
            ("amount", "DECIMAL_TEXT(10,2)"),
            ("placed", "TIMESTAMPTZ"),
            ("cents", "BIGINT")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(!target_file.exists(), "plan created the target database");
    assert!(!dir.join("job.pontoon.db").exists(), "plan created a state store");
}

#[test]
fn the_password_appears_in_no_log_no_output_and_not_in_the_state_store() {
    const SECRET: &str = "Zq9-unlikely-Passw0rd";
    let src = pg_db();
    src.sql(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'secret_user') THEN
             CREATE ROLE secret_user LOGIN SUPERUSER PASSWORD '{SECRET}'; END IF; END $$;
         CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g;"
    ));
    let url = src.url.replace("pontoon:pontoon@", "secret_user:${PONTOON_TEST_SECRET}@");
    assert!(url.contains("${PONTOON_TEST_SECRET}"), "{url}");
    let dir = temp_dir("pontoon-cli-secret");
    let job =
        write_job(dir.path(), &url, &format!("sqlite:{}", dir.join("t.db").display()), "[copy]\nchunk_rows = 100\n");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(args)
            .env("PONTOON_TEST_SECRET", SECRET)
            .env("PONTOON_LOG", "debug")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let job_s = job.to_str().unwrap();
    for args in [vec!["plan", job_s, "--json"], vec!["copy", job_s, "--json", "-vv"], vec!["status", job_s, "--json"]] {
        let out = run(&args);
        let (stdout, err) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!stdout.contains(SECRET) && !err.contains(SECRET), "{args:?} printed the password");
        assert!(!err.is_empty() || args[0] != "copy", "debug logs were expected on stderr");
    }
    // the state store and its WAL files, whatever was checkpointed
    let mut state_files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("job.pontoon.db") {
            state_files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{} holds the password",
                path.display()
            );
        }
    }
    assert!(state_files > 0, "no state store written");
    // a wrong password fails clearly, without echoing it
    let out = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["copy", job_s])
        .env("PONTOON_TEST_SECRET", "Wrong-Secret-42")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("secret_user") && !err.contains("Wrong-Secret-42"), "{err}");
}
