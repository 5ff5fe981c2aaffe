//! Trigger-based change capture on SQLite. A second connection in each test plays the
//! application writing the database while pontoon captures it.

mod common;

use std::time::Duration;

use pontoon_core::capture::{Capture, CaptureMode, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp};
use pontoon_core::{ColumnType, Connector, Decimal, ErrorKind, KeyRange, Position, Value};
use pontoon_sqlite::SqliteConnector;

use common::{TempDir, col, scan_of, schema};

const NO_WAIT: Duration = Duration::from_millis(0);
const SHORT: Duration = Duration::from_millis(200);

/// The application: `orders` (rowid alias key) and `lines` (text + int key, WITHOUT
/// ROWID), in WAL mode.
fn app(dir: &TempDir) -> rusqlite::Connection {
    let c = dir.raw();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, amount TEXT, note TEXT);
         CREATE TABLE IF NOT EXISTS lines (sku VARCHAR(20), n INT, qty INT, PRIMARY KEY (sku, n)) WITHOUT ROWID;",
    )
    .unwrap();
    c
}

/// Capture tables as the engine builds them: key and key types from the reader.
async fn tables(c: &SqliteConnector, names: &[&str]) -> Vec<CaptureTable> {
    let mut r = c.reader().await.unwrap();
    let mut out = Vec::new();
    for name in names {
        let s = r.describe(name).await.unwrap().unwrap();
        out.push(CaptureTable {
            table: s.name.clone(),
            key: s.primary_key.clone(),
            key_types: s.primary_key.iter().map(|k| s.column(k).unwrap().ty.clone()).collect(),
        });
    }
    out
}

fn capture(c: &SqliteConnector, job: &str) -> Box<dyn Capture> {
    c.capture(&CaptureSpec { mode: CaptureMode::Triggers, job: job.into() }).unwrap()
}

fn ev(table: &str, key: Vec<Value>, op: ChangeOp) -> ChangeEvent {
    ChangeEvent { table: table.into(), key, op }
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn seq(p: &Position) -> i64 {
    match p {
        Position::TriggerSeq { seq } => *seq,
        other => panic!("not a trigger position: {other}"),
    }
}

/// Reads until the log has nothing more, checking that the position never moves
/// backward; returns the events and the last position.
async fn drain(cap: &mut dyn Capture, from: &Position, max_events: usize) -> (Vec<ChangeEvent>, Position) {
    let mut pos = from.clone();
    let mut events = Vec::new();
    loop {
        let batch = cap.read(&pos, max_events, NO_WAIT).await.unwrap();
        assert!(batch.ddl.is_none(), "unexpected DDL {:?}", batch.ddl);
        pos.advance_to(batch.position.clone()).unwrap();
        if batch.events.is_empty() {
            return (events, pos);
        }
        assert!(batch.events.len() <= max_events);
        events.extend(batch.events);
    }
}

/// Names of pontoon's objects in the database (triggers and tables), sorted.
fn pontoon_objects(dir: &TempDir) -> Vec<String> {
    let c = dir.raw();
    let mut stmt = c
        .prepare("SELECT type || ' ' || name FROM sqlite_schema WHERE name LIKE 'pontoon%' ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
}

#[tokio::test]
async fn changes_arrive_with_their_keys_in_commit_order() {
    let dir = TempDir::new("trg-basic");
    let a = app(&dir);
    let c = dir.connector();
    let t = tables(&c, &["orders", "lines"]).await;
    let mut cap = capture(&c, "basic");
    cap.preflight(&t, 3600).await.unwrap();
    let p0 = cap.start(&t).await.unwrap();
    assert_eq!(p0, Position::TriggerSeq { seq: 0 });
    // A second start reuses what the first installed.
    assert_eq!(cap.start(&t).await.unwrap(), p0);

    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    a.execute_batch(
        "INSERT INTO orders (amount, note) VALUES ('1.00', 'x'), ('2.00', 'y');
         INSERT INTO lines VALUES ('😀', 1, 5), ('a''b', 2, 6), ('A', 2, 7);
         UPDATE orders SET note = 'z' WHERE id = 2;
         UPDATE orders SET id = 100 WHERE id = 1;
         UPDATE lines SET sku = 'é' WHERE sku = 'a''b';
         DELETE FROM lines WHERE sku = 'A';
         BEGIN; INSERT INTO orders (id, amount) VALUES (999, '9'); DELETE FROM lines; ROLLBACK;",
    )
    .unwrap();
    assert_eq!(cap.backlog(&p0).await.unwrap().events, Some(11));

    let batch = cap.read(&p0, 1000, SHORT).await.unwrap();
    let expected = vec![
        ev("orders", vec![int(1)], ChangeOp::Insert),
        ev("orders", vec![int(2)], ChangeOp::Insert),
        ev("lines", vec![text("😀"), int(1)], ChangeOp::Insert),
        ev("lines", vec![text("a'b"), int(2)], ChangeOp::Insert),
        ev("lines", vec![text("A"), int(2)], ChangeOp::Insert),
        ev("orders", vec![int(2)], ChangeOp::Update),
        // A key-changing update: the old key, then the new one.
        ev("orders", vec![int(1)], ChangeOp::Delete),
        ev("orders", vec![int(100)], ChangeOp::Update),
        ev("lines", vec![text("a'b"), int(2)], ChangeOp::Delete),
        ev("lines", vec![text("é"), int(2)], ChangeOp::Update),
        ev("lines", vec![text("A"), int(2)], ChangeOp::Delete),
    ];
    assert_eq!(batch.events, expected);
    assert!(batch.ddl.is_none());
    assert!(seq(&batch.position) >= 11);
    let at = batch.committed_at_micros.unwrap();
    assert!(at >= before - 5_000 && at < before + 60_000_000, "committed at {at}, test began at {before}");
    assert_eq!(cap.backlog(&batch.position).await.unwrap().events, Some(0));

    // The keys find the rows through fetch_keys (decoded as scan decodes them).
    let mut r = c.reader().await.unwrap();
    let lines = r.describe("lines").await.unwrap().unwrap();
    let keys: Vec<Vec<Value>> = batch.events.iter().filter(|e| e.table == "lines").map(|e| e.key.clone()).collect();
    let mut found: Vec<Vec<Value>> = r.fetch_keys(&scan_of(&lines), &keys).await.unwrap();
    found.sort_by_key(|row| format!("{row:?}"));
    assert_eq!(found, [vec![text("é"), int(2), int(6)], vec![text("😀"), int(1), int(5)]]);

    // Nothing more; an empty read returns the position it was given.
    let empty = cap.read(&batch.position, 1000, SHORT).await.unwrap();
    assert!(empty.events.is_empty() && empty.ddl.is_none());
    assert_eq!(empty.position, batch.position);
    cap.release(&batch.position).await.unwrap();
    assert!(!cap.cleanup().await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_of_every_type_decode_as_scan_decodes_them() {
    let dir = TempDir::new("trg-types");
    let c = dir.connector();
    let cases: Vec<(ColumnType, Vec<Value>)> = vec![
        (ColumnType::Bytes { max_bytes: None }, vec![Value::Bytes(vec![]), Value::Bytes(vec![0, 255, 1])]),
        (ColumnType::Uuid, vec![Value::Uuid([7; 16])]),
        (ColumnType::Date, vec![Value::Date(-719_528), Value::Date(19_782)]),
        (ColumnType::TimestampTz, vec![Value::TimestampTz(1_714_557_600_000_001)]),
        (
            ColumnType::Decimal { precision: Some(30), scale: Some(4) },
            vec![Value::Decimal(Decimal::parse("-12345678901234567890.5000").unwrap())],
        ),
        (
            ColumnType::Decimal { precision: Some(10), scale: Some(2) },
            vec![Value::Decimal(Decimal::parse("12.30").unwrap())],
        ),
        (
            ColumnType::Float64,
            vec![Value::F64(0.1), Value::F64(-1.7976931348623157e308), Value::F64(f64::NEG_INFINITY)],
        ),
        (ColumnType::Text { max_chars: None }, vec![text(""), text("a\0b"), text("\"\\\n")]),
        (ColumnType::Bool, vec![Value::Bool(true)]),
    ];
    let mut names = Vec::new();
    let mut w = c.writer().await.unwrap();
    for (i, (ty, _)) in cases.iter().enumerate() {
        let name = format!("k{i}");
        let mut s = schema(&c, &name, vec![col("k", ty.clone(), false), col("n", ColumnType::I64, true)], &["k"]);
        if i == 5 {
            // A user's DECIMAL(10,2): numeric affinity, stored as a REAL.
            s.columns[0].native = "DECIMAL(10,2)".into();
        }
        w.create_table(&s).await.unwrap();
        names.push(name);
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = tables(&c, &name_refs).await;
    let mut cap = capture(&c, "types");
    let p0 = cap.start(&t).await.unwrap();
    let mut r = c.reader().await.unwrap();
    for (i, (_, keys)) in cases.iter().enumerate() {
        let s = r.describe(&names[i]).await.unwrap().unwrap();
        let rows: Vec<Vec<Value>> = keys.iter().map(|k| vec![k.clone(), Value::Null]).collect();
        w.upsert(&s, &rows).await.unwrap();
    }
    let (events, _) = drain(cap.as_mut(), &p0, 1000).await;
    for (i, name) in names.iter().enumerate() {
        let s = r.describe(name).await.unwrap().unwrap();
        let mut scanned: Vec<Vec<Value>> =
            r.scan(&scan_of(&s), &KeyRange::ALL).await.unwrap().into_iter().map(|row| vec![row[0].clone()]).collect();
        let mut captured: Vec<Vec<Value>> = events.iter().filter(|e| &e.table == name).map(|e| e.key.clone()).collect();
        scanned.sort_by_key(|k| format!("{k:?}"));
        captured.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(captured, scanned, "{}", cases[i].0);
        assert_eq!(captured.len(), cases[i].1.len());
    }
    cap.cleanup().await.unwrap();
}

/// SQLite has one writer, so a lower seq never commits after a higher one was read;
/// but an open transaction's rows must not be read before they commit, and a release
/// covering a seq that was never returned must not delete it.
#[tokio::test]
async fn uncommitted_rows_wait_for_their_commit_and_release_deletes_only_what_was_read() {
    let dir = TempDir::new("trg-uncommitted");
    let a = app(&dir);
    let c = dir.connector();
    let t = tables(&c, &["orders"]).await;
    let mut cap = capture(&c, "late");
    let p0 = cap.start(&t).await.unwrap();

    a.execute("INSERT INTO orders (id) VALUES (1)", []).unwrap();
    let first = cap.read(&p0, 100, SHORT).await.unwrap();
    assert_eq!(first.events, [ev("orders", vec![int(1)], ChangeOp::Insert)]);

    // The application opens a transaction and inserts; pontoon does not see it.
    let b = dir.raw();
    b.execute_batch("BEGIN; INSERT INTO orders (id) VALUES (2);").unwrap();
    let during = cap.read(&first.position, 100, SHORT).await.unwrap();
    assert!(during.events.is_empty(), "{:?}", during.events);
    assert_eq!(during.position, first.position);
    b.execute_batch("COMMIT").unwrap();

    // A release far beyond what was read deletes only the rows read.
    cap.release(&Position::TriggerSeq { seq: 1_000 }).await.unwrap();
    let after = cap.read(&first.position, 100, SHORT).await.unwrap();
    assert_eq!(after.events, [ev("orders", vec![int(2)], ChangeOp::Insert)]);
    assert!(seq(&after.position) > seq(&first.position));
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_restarted_capture_replays_what_was_not_released() {
    let dir = TempDir::new("trg-restart");
    let a = app(&dir);
    let c = dir.connector();
    let t = tables(&c, &["orders", "lines"]).await;
    let mut cap = capture(&c, "restart");
    let p0 = cap.start(&t).await.unwrap();
    for i in 1..=5 {
        a.execute("INSERT INTO orders (id) VALUES (?1)", [i]).unwrap();
    }
    a.execute("INSERT INTO lines VALUES ('x', 1, 1)", []).unwrap();

    // Small batches: each read returns the next events, none twice.
    let first = cap.read(&p0, 2, NO_WAIT).await.unwrap();
    assert_eq!(first.events.len(), 2);
    let second = cap.read(&first.position, 2, NO_WAIT).await.unwrap();
    assert_eq!(second.events, [2, 3].map(|i| ev("orders", vec![int(i + 1)], ChangeOp::Insert)));
    assert!(seq(&second.position) > seq(&first.position));
    cap.release(&first.position).await.unwrap();

    // A crash: a new capture, started again, reads from the last checkpoint (first)
    // and gets everything not released, including what the old one had read.
    drop(cap);
    let mut cap = capture(&c, "restart");
    cap.start(&t).await.unwrap();
    let (events, end) = drain(cap.as_mut(), &first.position, 2).await;
    let mut expected: Vec<ChangeEvent> = (3..=5).map(|i| ev("orders", vec![int(i)], ChangeOp::Insert)).collect();
    expected.push(ev("lines", vec![text("x"), int(1)], ChangeOp::Insert));
    assert_eq!(events, expected);
    cap.release(&end).await.unwrap();
    assert_eq!(cap.backlog(&end).await.unwrap().events, Some(0));

    // Released changes are gone, for this capture and the next one. The next one
    // captures `orders` only: `lines` is no longer logged.
    let mut cap = capture(&c, "restart");
    let p = cap.start(&t[..1]).await.unwrap();
    assert_eq!(p, end, "the position continues where the log stopped");
    assert!(cap.read(&p, 100, NO_WAIT).await.unwrap().events.is_empty());
    a.execute_batch("INSERT INTO lines VALUES ('y', 1, 1); DELETE FROM orders WHERE id = 5;").unwrap();
    let (events, _) = drain(cap.as_mut(), &p, 100).await;
    assert_eq!(events, [ev("orders", vec![int(5)], ChangeOp::Delete)]);
    assert_eq!(
        pontoon_objects(&dir),
        [
            "table pontoon_log_restart",
            "table pontoon_schema_restart",
            "trigger pontoon_restart_orders_del",
            "trigger pontoon_restart_orders_ins",
            "trigger pontoon_restart_orders_upd",
        ]
    );
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_schema_change_on_a_captured_table_comes_back_as_ddl() {
    let dir = TempDir::new("trg-ddl");
    let a = app(&dir);
    let c = dir.connector();
    let t = tables(&c, &["orders", "lines"]).await;
    let mut cap = capture(&c, "ddl");
    let p0 = cap.start(&t).await.unwrap();

    // A change elsewhere in the schema is not a DDL of a captured table.
    a.execute_batch(
        "CREATE TABLE other (x INT); CREATE INDEX orders_note ON orders (note); INSERT INTO orders (id) VALUES (1);",
    )
    .unwrap();
    let batch = cap.read(&p0, 100, NO_WAIT).await.unwrap();
    assert!(batch.ddl.is_none());
    assert_eq!(batch.events, [ev("orders", vec![int(1)], ChangeOp::Insert)]);
    cap.release(&batch.position).await.unwrap();

    a.execute_batch("INSERT INTO orders (id) VALUES (2); ALTER TABLE orders ADD COLUMN shipped BOOLEAN; INSERT INTO orders (id) VALUES (3);")
        .unwrap();
    let stop = cap.read(&batch.position, 100, NO_WAIT).await.unwrap();
    let ddl = stop.ddl.expect("the ALTER TABLE is reported");
    assert_eq!(ddl.table, "orders");
    assert!(
        ddl.statement.starts_with("CREATE TABLE orders") && ddl.statement.contains("shipped BOOLEAN"),
        "{}",
        ddl.statement
    );
    assert!(stop.events.is_empty(), "no event from either side of the DDL: {:?}", stop.events);
    assert_eq!(stop.position, batch.position);

    // A restarted capture (a new run, or the syncer rebuilding its capture after an
    // error) still reports it: the first definition is kept until cleanup.
    drop(cap);
    let mut cap = capture(&c, "ddl");
    let p = cap.start(&t).await.unwrap();
    let again = cap.read(&p, 100, NO_WAIT).await.unwrap();
    assert_eq!(again.ddl.map(|d| d.table), Some("orders".to_string()));
    assert!(again.events.is_empty());

    // After cleanup, a new capture starts from the new definitions.
    cap.cleanup().await.unwrap();
    let mut cap = capture(&c, "ddl");
    let p = cap.start(&t).await.unwrap();
    assert!(cap.read(&p, 100, NO_WAIT).await.unwrap().ddl.is_none());

    // A change made while no capture runs is reported by the next one.
    drop(cap);
    a.execute("ALTER TABLE lines ADD COLUMN price INT", []).unwrap();
    let mut cap = capture(&c, "ddl");
    let p = cap.start(&t).await.unwrap();
    let between = cap.read(&p, 100, NO_WAIT).await.unwrap().ddl.expect("the ALTER TABLE between runs is reported");
    assert_eq!(between.table, "lines");
    assert!(between.statement.contains("price INT"), "{}", between.statement);

    // A dropped table comes back as DROP TABLE.
    a.execute("DROP TABLE lines", []).unwrap();
    let dropped = cap.read(&p, 100, NO_WAIT).await.unwrap().ddl.expect("the DROP TABLE is reported");
    assert_eq!((dropped.table.as_str(), dropped.statement.as_str()), ("lines", "DROP TABLE \"lines\""));
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn preflight_names_every_problem_at_once() {
    let dir = TempDir::new("trg-preflight");
    let a = app(&dir);
    a.execute_batch(
        "CREATE TABLE no_key (a TEXT, b INT);
         CREATE TABLE keyed_wr (a TEXT PRIMARY KEY, b INT) WITHOUT ROWID;",
    )
    .unwrap();
    let c = dir.connector();
    let mut t = tables(&c, &["orders", "keyed_wr"]).await;
    t.push(CaptureTable { table: "no_key".into(), key: vec!["a".into()], key_types: vec![ColumnType::TEXT] });
    t.push(CaptureTable { table: "missing".into(), key: vec!["id".into()], key_types: vec![ColumnType::I64] });
    t.push(CaptureTable {
        table: "lines".into(),
        key: vec!["sku".into(), "nn".into()],
        key_types: vec![ColumnType::TEXT; 2],
    });
    let mut cap = capture(&c, "pre");
    let e = cap.preflight(&t, 60).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let lines: Vec<&str> = e.message().lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(lines[0].starts_with("table no_key: has no primary key"), "{e}");
    assert!(lines[1].starts_with("table missing: does not exist"), "{e}");
    assert_eq!(lines[2], "table lines: key column nn does not exist");
    // A WITHOUT ROWID table and a rowid table with a declared key are fine.
    cap.preflight(&t[..2], 60).await.unwrap();
    assert!(pontoon_objects(&dir).is_empty(), "preflight installs nothing");
}

#[tokio::test]
async fn a_database_pontoon_cannot_write_is_refused() {
    let dir = TempDir::new("trg-readonly");
    drop(app(&dir));
    let c = dir.connector();
    let t = tables(&c, &["orders"]).await;
    let file = dir.db_path();
    // Write access is taken away by the mode bits, or (for root, who ignores them) by
    // the immutable attribute, removed again when the test ends.
    struct Immutable(std::path::PathBuf);
    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&file, perms).unwrap();
    let _guard = Immutable(file.clone());
    if std::fs::OpenOptions::new().append(true).open(&file).is_ok() {
        let made = std::process::Command::new("chattr").arg("+i").arg(&file).status().is_ok_and(|s| s.success());
        if !made || std::fs::OpenOptions::new().append(true).open(&file).is_ok() {
            eprintln!("skipped: cannot make {} read-only here", file.display());
            return;
        }
    }
    let mut cap = capture(&c, "ro");
    let e = cap.preflight(&t, 60).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("cannot write") && e.to_string().contains("test.db"), "{e}");
}

#[tokio::test]
async fn two_jobs_keep_separate_logs_and_cleanup_removes_only_its_own() {
    let dir = TempDir::new("trg-cleanup");
    let a = app(&dir);
    let c = dir.connector();
    let t = tables(&c, &["orders", "lines"]).await;
    // `shop_x` extends `shop`: its objects must not be taken for `shop`'s.
    let mut shop = capture(&c, "shop");
    let mut shop_x = capture(&c, "shop_x");
    let p_shop = shop.start(&t).await.unwrap();
    let p_x = shop_x.start(&t).await.unwrap();
    a.execute_batch("INSERT INTO orders (id) VALUES (1); INSERT INTO lines VALUES ('k', 1, 1);").unwrap();
    let expected =
        [ev("orders", vec![int(1)], ChangeOp::Insert), ev("lines", vec![text("k"), int(1)], ChangeOp::Insert)];
    let (events, end) = drain(shop.as_mut(), &p_shop, 100).await;
    assert_eq!(events, expected);
    shop.release(&end).await.unwrap();
    assert_eq!(drain(shop_x.as_mut(), &p_x, 100).await.0, expected, "one job's release leaves the other's log");

    // Cleanup from a fresh process that never started.
    let mut fresh = capture(&c, "shop");
    let mut dropped = fresh.cleanup().await.unwrap();
    dropped.sort();
    assert_eq!(
        dropped,
        [
            "table pontoon_log_shop",
            "table pontoon_schema_shop",
            "trigger pontoon_shop_lines_del on lines",
            "trigger pontoon_shop_lines_ins on lines",
            "trigger pontoon_shop_lines_upd on lines",
            "trigger pontoon_shop_orders_del on orders",
            "trigger pontoon_shop_orders_ins on orders",
            "trigger pontoon_shop_orders_upd on orders",
        ]
    );
    assert!(fresh.cleanup().await.unwrap().is_empty(), "a second cleanup removes nothing");
    assert_eq!(
        pontoon_objects(&dir),
        [
            "table pontoon_log_shop_x",
            "table pontoon_schema_shop_x",
            "trigger pontoon_shop_x_lines_del",
            "trigger pontoon_shop_x_lines_ins",
            "trigger pontoon_shop_x_lines_upd",
            "trigger pontoon_shop_x_orders_del",
            "trigger pontoon_shop_x_orders_ins",
            "trigger pontoon_shop_x_orders_upd",
        ]
    );
    // The application still writes, and the other job still captures.
    a.execute("UPDATE orders SET note = 'n' WHERE id = 1", []).unwrap();
    let batch = shop_x.read(&p_x, 100, SHORT).await.unwrap();
    assert_eq!(batch.events, [ev("orders", vec![int(1)], ChangeOp::Update)]);
    assert_eq!(shop_x.cleanup().await.unwrap().len(), 8);
    assert!(pontoon_objects(&dir).is_empty());
    a.execute("DELETE FROM orders", []).unwrap();
}

#[tokio::test]
async fn trigger_names_of_another_job_are_not_taken_over() {
    let dir = TempDir::new("trg-names");
    let a = app(&dir);
    a.execute_batch("CREATE TABLE b_t (id INTEGER PRIMARY KEY); CREATE TABLE t (id INTEGER PRIMARY KEY);").unwrap();
    let c = dir.connector();
    // Job `a` on table `b_t` and job `a_b` on table `t` both want `pontoon_a_b_t_ins`.
    let mut first = capture(&c, "a");
    first.start(&tables(&c, &["b_t"]).await).await.unwrap();
    let mut second = capture(&c, "a_b");
    let t = tables(&c, &["t"]).await;
    let e = second.preflight(&t, 60).await.unwrap_err();
    assert!(e.to_string().contains("a trigger named pontoon_a_b_t_ins (on b_t) exists and is not this job's"), "{e}");
    let e = second.start(&t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(first.cleanup().await.unwrap().len(), 5);
}

#[tokio::test]
async fn native_capture_and_bad_job_names_are_refused() {
    let dir = TempDir::new("trg-modes");
    let c = dir.connector();
    let e = c.capture(&CaptureSpec { mode: CaptureMode::Native, job: "j".into() }).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("capture = \"triggers\""), "{e}");
    for job in ["", "Shop", "a-b", &"x".repeat(41)] {
        let e = c.capture(&CaptureSpec { mode: CaptureMode::Triggers, job: job.into() }).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config, "{job}");
    }
}
