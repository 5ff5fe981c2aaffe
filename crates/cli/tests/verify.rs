//! `pontoon verify` as a user runs it: exit code 3 and a report naming table, key,
//! column and both values; `--repair` until nothing differs, shown by SQL on both
//! sides; the webhook's summary received by a local listener; an interrupted verify
//! continuing after its last chunk; bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pontoon_engine::state::StateStore;
use pontoon_testsupport::{KillOnDrop, PASSWORD, mysql_db, pg_db, temp_dir};

fn pontoon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pontoon")).args(args).stdin(Stdio::null()).output().expect("run pontoon")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    serde_json::from_str(out.lines().last().expect("a last line")).expect("last line is JSON")
}

fn write_job(dir: &Path, source: &str, target: &str, rest: &str) -> PathBuf {
    let p = dir.join("job.toml");
    std::fs::write(&p, format!("[source]\nurl = \"{source}\"\n[target]\nurl = \"{target}\"\n{rest}")).unwrap();
    p
}

/// A webhook on a local port: answers 200 to one POST and hands back its body.
fn webhook() -> (String, std::thread::JoinHandle<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/T0K3N?channel=db", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        assert!(request_line.starts_with("POST /hooks/T0K3N?channel=db "), "{request_line}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        serde_json::from_slice(&body).unwrap()
    });
    (url, handle)
}

/// PostgreSQL to MariaDB: differences written into the target by SQL are reported
/// with exit code 3, each named in the report with its key, column and both values;
/// the webhook receives the summary; `--repair` leaves none, and both sides agree by
/// their own SQL (row count and a hash of every row).
#[test]
fn differences_exit_3_with_a_report_and_repair_leaves_none() {
    let dir = temp_dir("pontoon-verify");
    let src = pg_db();
    let dst = mysql_db();
    src.sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, v text, n numeric(12,2) NOT NULL, at timestamptz, doc jsonb);
         INSERT INTO accounts SELECT g, CASE WHEN g % 97 = 0 THEN NULL ELSE md5(g::text) END, g * 1.25,
             '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', jsonb_build_object('g', g, 'tags', '[1,2]'::jsonb)
         FROM generate_series(1, 20000) g;",
    );
    let (url, hook) = webhook();
    let job = write_job(dir.path(), &src.url, &dst.url, &format!("[verify]\nchunk_rows = 1000\nwebhook = \"{url}\"\n"));
    let job_s = job.to_str().unwrap();
    let out = pontoon(&["copy", job_s]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    dst.sql(
        "DELETE FROM accounts WHERE id = 17;
         UPDATE accounts SET v = 'tampered' WHERE id = 5000;
         UPDATE accounts SET n = n + 0.01 WHERE id = 12000;
         UPDATE accounts SET v = '' WHERE id = 97;
         INSERT INTO accounts VALUES (99999, 'extra', 1, NULL, NULL);",
    );
    let out = pontoon(&["verify", job_s, "--json"]);
    assert_eq!(out.status.code(), Some(3), "differences exit with 3:\n{}\n{}", stdout(&out), stderr(&out));
    let report = last_json(&out);
    assert_eq!((report["differences"].as_u64(), report["rows_compared"].as_u64()), (Some(5), Some(20000)), "{report}");
    let t = &report["tables"][0];
    assert_eq!((t["missing"].as_u64(), t["extra"].as_u64(), t["changed"].as_u64()), (Some(1), Some(1), Some(3)));
    let secret = format!(":{PASSWORD}@");
    assert!(!stdout(&out).contains(&secret) && !stderr(&out).contains(&secret), "a URL with its password was shown");
    assert!(!stdout(&out).contains("tampered"), "values go to the report file, not to the output");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("job.verify.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let by_id = |id: i64| lines.iter().find(|l| l["key"]["id"] == id).unwrap_or_else(|| panic!("key {id}: {lines:?}"));
    assert_eq!(by_id(17)["kind"], "missing");
    assert_eq!(by_id(99999)["kind"], "extra");
    assert_eq!(by_id(99999)["target_row"]["v"], "extra");
    let changed = &by_id(5000)["columns"][0];
    assert_eq!((changed["column"].as_str(), changed["target"].as_str()), (Some("v"), Some("tampered")));
    assert_eq!(changed["source"].as_str().map(str::len), Some(32), "the source's md5 text: {changed}");
    let n = &by_id(12000)["columns"][0];
    assert_eq!(
        (n["column"].as_str(), n["source"].as_str(), n["target"].as_str()),
        (Some("n"), Some("15000.00"), Some("15000.01"))
    );
    let null_vs_empty = &by_id(97)["columns"][0];
    assert_eq!(null_vs_empty["source"], serde_json::Value::Null);
    assert_eq!(null_vs_empty["target"], "");

    let summary = hook.join().expect("the webhook received the summary");
    assert_eq!(summary["differences_found"], 5, "{summary}");
    assert_eq!(summary["tables"][0]["table"], "accounts");
    assert!(!summary.to_string().contains("tampered"), "the summary holds counts, not values");

    // the state store has the differences by key, without values
    let state = StateStore::open(&dir.path().join("job.pontoon.db")).unwrap();
    let run = state.last_verify_run().unwrap().unwrap();
    assert_eq!((run.state.as_str(), run.differences), ("done", Some(5)));
    assert_eq!(state.verify_diffs(run.id).unwrap().len(), 5);

    // --table of a table not in the job is bad usage, named
    let out = pontoon(&["verify", job_s, "--table", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`nope`"), "{}", stderr(&out));

    // the webhook's listener is gone now: the repair still succeeds and says so
    let out = pontoon(&["verify", job_s, "--repair", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    let report = last_json(&out);
    assert_eq!((report["found"].as_u64(), report["differences"].as_u64()), (Some(5), Some(0)), "{report}");
    assert!(report["alert_error"].as_str().is_some_and(|e| !e.contains("T0K3N")), "{report}");

    // independent: each side's own SQL, row count and a hash of every row
    let pg = src.sql(
        "SELECT count(*), sum(('x' || substr(md5(id || '|' || coalesce(v, '<null>') || '|' || n::text || '|' \
         || coalesce(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '<null>')), 1, 15))::bit(60)::bigint) FROM accounts",
    );
    let my = dst.sql(
        "SELECT count(*), sum(CAST(CONV(SUBSTR(MD5(CONCAT(id, '|', coalesce(v, '<null>'), '|', n, '|', \
         coalesce(DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s'), '<null>'))), 1, 15), 16, 10) AS UNSIGNED)) FROM accounts",
    );
    let cells = |s: &str| {
        s.split(['|', '\t', '\n']).map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect::<Vec<_>>()
    };
    assert_eq!(cells(&pg), cells(&my), "count and hash of every row, by each side's SQL");
    let out = pontoon(&["verify", job_s]);
    assert_eq!(out.status.code(), Some(0), "after repair: {}", stdout(&out));
}

/// `kill -9` in the middle of a verify, then the same command: it continues after the
/// last compared chunk (the state store holds each chunk once), and still reports the
/// differences found before the kill.
#[test]
fn an_interrupted_verify_continues_after_its_last_chunk() {
    let dir = temp_dir("pontoon-verify-resume");
    let src = dir.path().join("src.db");
    rusqlite::Connection::open(&src)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t (id integer PRIMARY KEY, name text, price numeric(10,2));
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300000)
             INSERT INTO t SELECT i, 'n' || i, i * 1.5 FROM s;",
        )
        .unwrap();
    let job = write_job(dir.path(), "sqlite:src.db", "sqlite:dst.db", "[verify]\nchunk_rows = 1000\n");
    let job_s = job.to_str().unwrap();
    assert_eq!(pontoon(&["copy", job_s]).status.code(), Some(0));
    let dst = dir.path().join("dst.db");
    rusqlite::Connection::open(&dst).unwrap().execute("UPDATE t SET name = 'x' WHERE id IN (10, 299990)", []).unwrap();

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(["verify", job_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let state_path = dir.path().join("job.pontoon.db");
    let deadline = Instant::now() + Duration::from_secs(120);
    let compared = || {
        StateStore::open(&state_path)
            .ok()
            .and_then(|s| {
                let run = s.last_verify_run().ok().flatten()?;
                Some(s.verified_chunks(run.id, "t").unwrap().iter().filter(|c| c.done).count())
            })
            .unwrap_or(0)
    };
    while compared() < 20 {
        assert!(Instant::now() < deadline, "verify compared no chunks");
        assert!(child.try_wait().unwrap().is_none(), "verify ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = compared();
    assert!(before < 300, "the verify finished before the kill ({before} chunks): the test proves less than it claims");

    let out = pontoon(&["verify", job_s, "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}\n{}", stdout(&out), stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!((report["rows_compared"].as_u64(), report["differences"].as_u64()), (Some(300000), Some(2)));
    let state = StateStore::open(&state_path).unwrap();
    let run = state.last_verify_run().unwrap().unwrap();
    let chunks = state.verified_chunks(run.id, "t").unwrap();
    assert_eq!(report["tables"][0]["chunks"], chunks.len());
    assert!(chunks.windows(2).all(|w| w[1].range.after == w[0].range.upto), "chunks follow each other");
    assert_eq!(chunks.iter().map(|c| c.rows).sum::<u64>(), 300000, "no chunk compared twice, none skipped");
    let keys: Vec<_> = state.verify_diffs(run.id).unwrap().into_iter().map(|d| d.key).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(stdout(&out).contains("continuing the interrupted verify"), "{}", stdout(&out));

    // the run is finished: the next verify starts afresh
    let out = pontoon(&["verify", job_s, "--json"]);
    assert_eq!(last_json(&out)["resumed"], false);
}

/// Incremental verify (`[verify] changes = true`): while `pontoon run` syncs, a target
/// that silently alters what the sync writes (a trigger standing for a bad mapping or
/// a lost write) is caught within seconds, key by key, and alerted; keys written
/// faithfully are not reported.
#[test]
fn incremental_verify_catches_a_target_that_alters_synced_rows_within_seconds() {
    let dir = temp_dir("pontoon-verify-changes");
    let src = pg_db();
    let dst = pg_db();
    src.sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, v text);
         INSERT INTO accounts SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    );
    let (url, hook) = webhook();
    let name = format!("vc{}", std::process::id());
    let job = write_job(
        dir.path(),
        &src.url,
        &dst.url,
        &format!("[sync]\ncapture = \"triggers\"\nname = \"{name}\"\n[verify]\nchanges = true\nwebhook = \"{url}\"\n"),
    );
    let log_path = dir.path().join("run.log");
    let mut run = KillOnDrop::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_pontoon")).args(["run", job.to_str().unwrap()]),
        std::fs::File::create(&log_path).unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let state_path = dir.path().join("job.pontoon.db");
    let wait = |what: &str, run: &mut KillOnDrop, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(run.try_wait().unwrap().is_none(), "pontoon run exited waiting for {what}:\n{}", log_text());
            assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{}", log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let copied = || {
        StateStore::open(&state_path)
            .ok()
            .and_then(|s| s.table("accounts").ok().flatten())
            .is_some_and(|t| t.state == pontoon_engine::state::TableState::Copied)
    };
    wait("the copy", &mut run, &copied);

    // the target now mangles what is written to keys divisible by 7
    dst.sql(
        "CREATE FUNCTION mangle() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.id % 7 = 0 THEN NEW.v := 'mangled'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER mangle BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION mangle();",
    );
    let changed_at = Instant::now();
    src.sql("UPDATE accounts SET v = 'changed' || id WHERE id <= 30");
    let found = || {
        StateStore::open(&state_path)
            .ok()
            .and_then(|s| s.changes_verify_run().ok().flatten().map(|r| s.verify_diffs(r.id).unwrap_or_default()))
            .is_some_and(|d| d.len() >= 4)
    };
    wait("incremental verify's differences", &mut run, &found);
    let within = changed_at.elapsed();
    assert!(within < Duration::from_secs(15), "found only after {within:?}");
    let summary = hook.join().expect("the webhook was alerted");
    assert_eq!(summary["event"], "verify_changes_differences", "{summary}");

    // a moment more: nothing else is reported, then stop cleanly
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill").args(["-TERM", &run.id().to_string()]).status();
    assert_eq!(run.wait().unwrap().code(), Some(0), "{}", log_text());
    let state = StateStore::open(&state_path).unwrap();
    let run_record = state.changes_verify_run().unwrap().unwrap();
    let mut keys: Vec<String> = state
        .verify_diffs(run_record.id)
        .unwrap()
        .iter()
        .map(|d| format!("{:?} {} {:?}", d.key, d.kind, d.columns))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys,
        [
            "[Int(14)] changed [\"v\"]",
            "[Int(21)] changed [\"v\"]",
            "[Int(28)] changed [\"v\"]",
            "[Int(7)] changed [\"v\"]"
        ],
        "exactly the mangled keys"
    );
    let report = std::fs::read_to_string(dir.path().join("job.verify-changes.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(report.lines().next().unwrap()).unwrap();
    assert_eq!(line["columns"][0]["target"], "mangled", "{line}");
    assert!(line["columns"][0]["source"].as_str().unwrap().starts_with("changed"), "{line}");
    assert!(log_text().contains("incremental verify"), "the run's log says so:\n{}", log_text());
    let out = pontoon(&["cleanup", job.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

/// `--table` and `--partition` limit what is compared: a difference in another
/// partition or table is not reported; an unknown partition value is bad usage, named.
#[test]
fn a_partition_of_a_table_is_verified_alone() {
    let dir = temp_dir("pontoon-verify-partition");
    let src = rusqlite::Connection::open(dir.path().join("src.db")).unwrap();
    src.execute_batch(
        "CREATE TABLE orders (id integer PRIMARY KEY, country text NOT NULL, amount numeric(10,2));
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
         INSERT INTO orders SELECT i, CASE i % 3 WHEN 0 THEN 'fr' WHEN 1 THEN 'de' ELSE 'it' END, i FROM s;
         CREATE TABLE notes (id integer PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'a'), (2, 'b');",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "sqlite:src.db",
        "sqlite:dst.db",
        "[verify]\nchunk_rows = 100\n[[tables]]\nsource = \"orders\"\npartition_by = \"country\"\n\
         [[tables]]\nsource = \"notes\"\n",
    );
    let job_s = job.to_str().unwrap();
    assert_eq!(pontoon(&["copy", job_s]).status.code(), Some(0));
    let dst = rusqlite::Connection::open(dir.path().join("dst.db")).unwrap();
    // id 3 is in fr, id 4 in de; notes 1 in the other table
    dst.execute_batch("UPDATE orders SET amount = 0 WHERE id IN (3, 4); UPDATE notes SET body = 'x' WHERE id = 1;")
        .unwrap();

    let out = pontoon(&["verify", job_s, "--table", "orders", "--partition", "fr", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!((report["rows_compared"].as_u64(), report["differences"].as_u64()), (Some(1000), Some(1)), "{report}");
    let line = std::fs::read_to_string(dir.path().join("job.verify.jsonl")).unwrap();
    assert!(line.contains(r#""key":{"id":3}"#) && line.lines().count() == 1, "{line}");

    let out = pontoon(&["verify", job_s, "--table", "notes", "--json"]);
    assert_eq!(
        (last_json(&out)["rows_compared"].as_u64(), last_json(&out)["differences"].as_u64()),
        (Some(2), Some(1))
    );

    let out = pontoon(&["verify", job_s, "--table", "orders", "--partition", "xx"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no partition `xx`"), "{}", stderr(&out));
    let out = pontoon(&["verify", job_s, "--partition", "fr"]);
    assert_eq!(out.status.code(), Some(2), "--partition without --table: {}", stderr(&out));

    let out = pontoon(&["verify", job_s, "--json"]);
    assert_eq!(last_json(&out)["differences"], 3, "all tables, all partitions");
}

/// PostgreSQL to PostgreSQL with one integer key: verify splits the key's span into
/// ranges of equal width and checksums them all in one scan per side; with keys spread
/// unevenly (20,000 dense keys, then 100 keys a trillion away) one range holds almost
/// every row, and when it differs it is read in pieces of about `chunk_rows` rows.
#[test]
fn an_uneven_integer_key_is_checksummed_in_one_pass_and_read_in_pieces() {
    let dir = temp_dir("pontoon-verify-uneven");
    let src = pg_db();
    let dst = pg_db();
    src.sql(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g;
         INSERT INTO t SELECT 1000000000000 + g, 'w' || g FROM generate_series(1, 100) g;
         ANALYZE t;",
    );
    let job = write_job(dir.path(), &src.url, &dst.url, "[verify]\nchunk_rows = 1000\n");
    let job_s = job.to_str().unwrap();
    assert_eq!(pontoon(&["copy", job_s]).status.code(), Some(0));

    let out = pontoon(&["verify", job_s, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = last_json(&out);
    let t = &report["tables"][0];
    assert_eq!(report["rows_compared"], 20100, "{report}");
    assert_eq!(t["chunks_by_checksum"], t["chunks"], "{report}");

    dst.sql("UPDATE t SET v = 'x' WHERE id = 15000; DELETE FROM t WHERE id = 1000000000050;");
    let out = pontoon(&["verify", job_s, "--json", "-vv"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!((report["rows_compared"].as_u64(), report["differences"].as_u64()), (Some(20100), Some(2)), "{report}");
    let pieces = stderr(&out)
        .lines()
        .find(|l| l.contains("read in pieces"))
        .and_then(|l| l.split("pieces=").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no chunk was read in pieces:\n{}", stderr(&out)));
    assert!(pieces >= 15, "the dense range holds 20,000 rows: about 20 pieces of 1,000, got {pieces}");
    let lines = std::fs::read_to_string(dir.path().join("job.verify.jsonl")).unwrap();
    assert!(lines.contains(r#""key":{"id":15000}"#) && lines.contains(r#""key":{"id":1000000000050}"#), "{lines}");
}
