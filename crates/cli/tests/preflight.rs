//! `pontoon run`'s refusals and stops, against real servers: preflight checks (a
//! table without key, wal_level, binlog format, binlog retention, privileges), the
//! default capture falling back to triggers, DDL on a migrated table while syncing,
//! the `version_column` guard, and `status --json` showing the sync.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pontoon_testsupport::{KillOnDrop, MariaDbServer, PgServer, TestDb, mysql_db, pg_db, temp_dir};

fn pontoon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pontoon")).args(args).stdin(Stdio::null()).output().expect("run pontoon")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn write_job(dir: &Path, source: &str, target: &str, rest: &str) -> PathBuf {
    let p = dir.join("job.toml");
    std::fs::write(&p, format!("[source]\nurl = \"{source}\"\n[target]\nurl = \"{target}\"\n{rest}")).unwrap();
    p
}

fn sync_section(capture: Option<&str>) -> String {
    let name = format!("p{}_{}", std::process::id(), COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    match capture {
        Some(c) => format!("[sync]\ncapture = \"{c}\"\nname = \"{name}\"\n"),
        None => format!("[sync]\nname = \"{name}\"\n"),
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn small_table(db: &TestDb) {
    db.sql(
        "CREATE TABLE items (id int PRIMARY KEY, v varchar(20), updated_at bigint);
         INSERT INTO items VALUES (1, 'one', 10), (2, 'two', 10), (3, 'three', 10);",
    );
}

fn run_drain(job: &Path) -> (Option<i32>, String, String) {
    let out = pontoon(&["run", job.to_str().unwrap(), "--drain", "--json"]);
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

fn cleanup(job: &Path) {
    let out = pontoon(&["cleanup", job.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
}

#[test]
fn a_table_without_primary_key_is_refused_by_name() {
    for (db, capture) in [(pg_db(), "native"), (pg_db(), "triggers"), (mysql_db(), "native"), (mysql_db(), "triggers")]
    {
        db.sql("CREATE TABLE nokey (id int NOT NULL, v text); INSERT INTO nokey VALUES (1, 'a');");
        let dst = pg_db();
        let dir = temp_dir("pontoon-preflight-nokey");
        let job = write_job(
            dir.path(),
            &db.url,
            &dst.url,
            &format!("{}[[tables]]\nsource = \"nokey\"\nkey = [\"id\"]\n", sync_section(Some(capture))),
        );
        let (code, _, err) = run_drain(&job);
        assert_eq!(code, Some(2), "{capture}: {err}");
        assert!(err.contains("nokey"), "{capture}: the refusal must name the table: {err}");
        assert_eq!(dst.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'nokey'").trim(), "0", "nothing copied");
        cleanup(&job);
    }
}

#[test]
fn native_capture_needs_wal_level_logical_and_the_default_falls_back_to_triggers() {
    let server = PgServer::start_private();
    server.info().admin_sql("ALTER SYSTEM SET wal_level = replica");
    server.stop();
    server.start();
    let src = server.create_db();
    small_table(&src);
    let dst = pg_db();

    let dir = temp_dir("pontoon-preflight-wal");
    let job = write_job(dir.path(), &src.url, &dst.url, &sync_section(Some("native")));
    let (code, _, err) = run_drain(&job);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("wal_level"), "the refusal names the setting: {err}");

    let dir = temp_dir("pontoon-preflight-wal-default");
    let job = write_job(dir.path(), &src.url, &dst.url, &sync_section(None));
    let (code, out, err) = run_drain(&job);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("uses triggers") && err.contains("wal_level"), "says why: {err}");
    assert!(out.contains("\"capture\":\"triggers\""), "{out}");
    assert_eq!(dst.sql("SELECT string_agg(v, ',' ORDER BY id) FROM items").trim(), "one,two,three");
    cleanup(&job);
}

#[test]
fn native_capture_needs_row_binlog_and_enough_retention() {
    let server = MariaDbServer::start_private();
    let src = server.create_db();
    small_table(&src);
    server.info().admin_sql("SET GLOBAL binlog_format = 'STATEMENT'; SET GLOBAL binlog_expire_logs_seconds = 30;");
    let dst = pg_db();
    let dir = temp_dir("pontoon-preflight-binlog");
    let job = write_job(dir.path(), &src.url, &dst.url, &sync_section(Some("native")));
    let (code, _, err) = run_drain(&job);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("binlog_format"), "names the format: {err}");
    assert!(err.contains("binlog_expire_logs_seconds"), "names the retention, in the same refusal: {err}");
}

#[test]
fn missing_replication_privilege_is_refused() {
    let src = pg_db();
    small_table(&src);
    let role = format!("weak_{}", src.name);
    src.sql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'weakpw'; GRANT SELECT ON items TO {role}; GRANT USAGE ON SCHEMA public TO {role};"
    ));
    let url = src.url.replacen("pontoon:pontoon@", &format!("{role}:weakpw@"), 1);
    let dst = pg_db();
    let dir = temp_dir("pontoon-preflight-priv");
    let job = write_job(dir.path(), &url, &dst.url, &sync_section(Some("native")));
    let (code, _, err) = run_drain(&job);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.to_uppercase().contains("REPLICATION"), "names the privilege: {err}");
    assert!(!err.contains("weakpw"), "never the password: {err}");
    src.sql(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
}

fn spawn_run(job: &Path, log: &Path) -> KillOnDrop {
    KillOnDrop::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_pontoon")).args(["run", job.to_str().unwrap()]),
        std::fs::File::create(log).unwrap(),
    )
}

fn status_json(job: &Path) -> serde_json::Value {
    let out = pontoon(&["status", job.to_str().unwrap(), "--json"]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{e}");
    serde_json::from_str(o.lines().last().unwrap()).unwrap()
}

fn wait_until(what: &str, child: &mut Child, log: &Path, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("pontoon exited ({s}) before {what}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "timed out: {what}: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
}

enum Src {
    Server(TestDb),
    Lite(PathBuf),
}

impl Src {
    fn url(&self) -> String {
        match self {
            Src::Server(db) => db.url.clone(),
            Src::Lite(p) => format!("sqlite://{}", p.display()),
        }
    }

    fn sql(&self, sql: &str) {
        match self {
            Src::Server(db) => {
                db.sql(sql);
            }
            Src::Lite(p) => rusqlite::Connection::open(p).unwrap().execute_batch(sql).unwrap(),
        }
    }
}

#[test]
fn ddl_on_a_migrated_table_stops_the_sync_naming_table_and_statement() {
    let dir = temp_dir("pontoon-ddl");
    let cases: Vec<(Src, &str)> = vec![
        (Src::Server(pg_db()), "native"),
        (Src::Server(pg_db()), "triggers"),
        (Src::Server(mysql_db()), "native"),
        (Src::Server(mysql_db()), "triggers"),
        (Src::Lite(dir.path().join("ddl.db")), "triggers"),
    ];
    for (i, (src, capture)) in cases.into_iter().enumerate() {
        src.sql(
            "CREATE TABLE items (id int PRIMARY KEY, v varchar(20), updated_at bigint);
             INSERT INTO items VALUES (1, 'one', 10), (2, 'two', 10), (3, 'three', 10);",
        );
        let dst = pg_db();
        let case_dir = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let job = write_job(&case_dir, &src.url(), &dst.url, &sync_section(Some(capture)));
        let log = case_dir.join("run.log");
        let mut run = spawn_run(&job, &log);
        wait_until("the copy", &mut run, &log, || {
            status_json(&job)["tables"].as_array().is_some_and(|t| t.len() == 1 && t[0]["state"] == "copied")
        });
        // a change before the DDL is applied; the DDL stops the sync
        src.sql("UPDATE items SET v = 'uno' WHERE id = 1");
        wait_until("the update", &mut run, &log, || dst.sql("SELECT v FROM items WHERE id = 1").trim() == "uno");
        src.sql("ALTER TABLE items ADD COLUMN extra int");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = run.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = run.kill();
                panic!("{capture}: DDL did not stop the sync: {}", std::fs::read_to_string(&log).unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let log_text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(1), "{capture} case {i}: {log_text}");
        assert!(log_text.contains("items"), "{capture} case {i}: names the table: {log_text}");
        assert!(
            log_text.to_lowercase().contains("extra") || log_text.to_uppercase().contains("ALTER TABLE"),
            "{capture} case {i}: shows the statement: {log_text}"
        );
        let st = status_json(&job);
        assert_eq!(st["sync"]["state"], "failed", "{st}");
        cleanup(&job);
    }
}

#[test]
fn the_version_column_guard_keeps_a_newer_target_row_and_status_shows_the_sync() {
    let src = pg_db();
    small_table(&src);
    let dst = mysql_db();
    let dir = temp_dir("pontoon-version");
    let job = write_job(
        dir.path(),
        &src.url,
        &dst.url,
        &format!("{}[[tables]]\nsource = \"items\"\nversion_column = \"updated_at\"\n", sync_section(Some("triggers"))),
    );
    let (code, _, err) = run_drain(&job);
    assert_eq!(code, Some(0), "{err}");
    // another writer of the target (dual write) made row 1 newer than the source's
    dst.sql("UPDATE items SET v = 'target-newer', updated_at = 99 WHERE id = 1");
    src.sql("UPDATE items SET v = 'source-older', updated_at = 20 WHERE id = 1");
    src.sql("UPDATE items SET v = 'source-newer', updated_at = 20 WHERE id = 2");
    src.sql("DELETE FROM items WHERE id = 3");
    let (code, out, err) = run_drain(&job);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        dst.sql("SELECT GROUP_CONCAT(CONCAT(id, ':', v, ':', updated_at) ORDER BY id) FROM items").trim(),
        "1:target-newer:99,2:source-newer:20",
        "old data never overwrites new data; deletes still apply"
    );
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(report["sync"]["events"].as_u64().unwrap() >= 3, "{report}");

    let st = status_json(&job);
    let sync = &st["sync"];
    assert_eq!(sync["mode"], "triggers", "{st}");
    assert_eq!(sync["state"], "stopped", "{st}");
    assert!(sync["events"].as_u64().unwrap() >= 3, "{st}");
    assert!(sync["position"]["kind"].is_string(), "{st}");
    // drained: the lag is the time since the last, empty, read began (its wait)
    let lag = sync["lag"]["seconds"].as_f64().expect("a measured lag");
    assert!(lag < 1.0, "drained: no lag beyond the last read: {st}");
    cleanup(&job);
}

#[test]
fn a_key_changed_only_in_case_ends_as_one_row_on_either_target() {
    for target in [mysql_db(), pg_db()] {
        let src = mysql_db();
        src.sql(
            "CREATE TABLE tags (name varchar(20) PRIMARY KEY, n int); INSERT INTO tags VALUES ('abc', 1), ('x', 2);",
        );
        let dir = temp_dir("pontoon-case");
        let job = write_job(dir.path(), &src.url, &target.url, &sync_section(Some("triggers")));
        let (code, _, err) = run_drain(&job);
        assert_eq!(code, Some(0), "{err}");
        // the source's collation is case-insensitive: 'abc' and 'ABC' are one key there
        src.sql("UPDATE tags SET name = 'ABC', n = 3 WHERE name = 'abc'");
        let (code, _, err) = run_drain(&job);
        assert_eq!(code, Some(0), "{err}");
        let rows = target.sql("SELECT name, n FROM tags ORDER BY n");
        let rows: Vec<&str> = rows.lines().map(str::trim).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].starts_with('x') && rows[1].starts_with("ABC"), "{rows:?}");
        cleanup(&job);
    }
}
