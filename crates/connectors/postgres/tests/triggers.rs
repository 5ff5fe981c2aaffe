//! Trigger capture (`CaptureMode::Triggers`) against a real PostgreSQL server.

use std::time::{Duration, Instant};

use pontoon_core::capture::{Capture, CaptureBatch, CaptureMode, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp};
use pontoon_core::{ColumnType, Connector, ErrorKind, Position, ScanSpec, SecretUrl, SelectExpr, SelectItem, Value};
use pontoon_postgres::PgConnector;
use pontoon_testsupport::{TestDb, pg_db};

const WAIT: Duration = Duration::from_secs(2);

fn connector_at(url: &str) -> PgConnector {
    PgConnector::new(&SecretUrl::new(url)).expect("valid URL")
}

/// The test's job id: its database's name (unique on the server), at most 40 chars.
fn job_of(db: &TestDb) -> String {
    db.name.chars().take(40).collect()
}

fn capture_at(url: &str, job: &str) -> Box<dyn Capture> {
    connector_at(url).capture(&CaptureSpec { mode: CaptureMode::Triggers, job: job.into() }).expect("capture")
}

fn capture(db: &TestDb) -> Box<dyn Capture> {
    capture_at(&db.url, &job_of(db))
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn ev(table: &str, key: Vec<Value>, op: ChangeOp) -> ChangeEvent {
    ChangeEvent { table: table.into(), key, op }
}

fn orders() -> CaptureTable {
    CaptureTable { table: "orders".into(), key: vec!["id".into()], key_types: vec![ColumnType::I64] }
}

fn lines() -> CaptureTable {
    CaptureTable {
        table: "lines".into(),
        key: vec!["tenant".into(), "n".into()],
        key_types: vec![ColumnType::TEXT, ColumnType::I32],
    }
}

const SCHEMA: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, note text);
                      CREATE TABLE lines (tenant text, n int, qty int, PRIMARY KEY (tenant, n));";

fn seq(p: &Position) -> i64 {
    match p {
        Position::TriggerSeq { seq } => *seq,
        other => panic!("not a trigger position: {other}"),
    }
}

/// Reads batches until one comes back empty; checks that positions never move back.
async fn read_all(cap: &mut Box<dyn Capture>, from: &Position) -> (Vec<ChangeEvent>, Position) {
    let mut position = from.clone();
    let mut events = Vec::new();
    loop {
        let batch = cap.read(&position, 1000, Duration::from_millis(300)).await.unwrap();
        assert!(batch.ddl.is_none(), "unexpected DDL: {:?}", batch.ddl);
        assert!(seq(&batch.position) >= seq(&position), "position moved back: {position} -> {}", batch.position);
        position = batch.position;
        if batch.events.is_empty() {
            return (events, position);
        }
        events.extend(batch.events);
    }
}

/// Reads one batch, waiting for it.
async fn read_one(cap: &mut Box<dyn Capture>, from: &Position) -> CaptureBatch {
    cap.read(from, 1000, WAIT).await.unwrap()
}

fn log_rows(db: &TestDb) -> String {
    db.sql(&format!("SELECT count(*) FROM pontoon_log_{}", job_of(db)))
}

/// Inserts, updates, deletes and key-changing updates on two tables (one with a
/// composite text+int key) arrive in order with their keys and ops; a rolled-back
/// transaction produces nothing; the keys find their rows through `fetch_keys`.
#[tokio::test]
async fn changes_arrive_with_their_keys_and_ops() {
    let db = pg_db();
    db.sql(SCHEMA);
    let mut cap = capture(&db);
    cap.preflight(&[orders(), lines()], 3600).await.unwrap();
    let p0 = cap.start(&[orders(), lines()]).await.unwrap();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    db.sql(
        "INSERT INTO orders VALUES (1, 'a'), (2, 'b');
         UPDATE orders SET note = 'c' WHERE id = 1;
         DELETE FROM orders WHERE id = 2;
         UPDATE orders SET id = 10 WHERE id = 1;
         BEGIN; INSERT INTO orders VALUES (99, 'never'); DELETE FROM orders WHERE id = 10; ROLLBACK;
         INSERT INTO lines VALUES ('Acme ', 1, 5), ('😀 it''s', 2, 6);
         UPDATE lines SET n = 3 WHERE n = 2;
         UPDATE lines SET qty = 7 WHERE tenant = 'Acme ';
         DELETE FROM lines WHERE n = 1;",
    );
    let batch = read_one(&mut cap, &p0).await;
    let at = batch.committed_at_micros.expect("a commit time");
    assert!(at >= started - 5_000_000 && at <= started + 60_000_000, "{at} vs {started}");
    let (mut events, end) = read_all(&mut cap, &batch.position).await;
    events.splice(0..0, batch.events);
    let o = |id| vec![Value::Int(id)];
    let l = |t: &str, n| vec![text(t), Value::Int(n)];
    assert_eq!(
        events,
        vec![
            ev("orders", o(1), ChangeOp::Insert),
            ev("orders", o(2), ChangeOp::Insert),
            ev("orders", o(1), ChangeOp::Update),
            ev("orders", o(2), ChangeOp::Delete),
            ev("orders", o(1), ChangeOp::Delete),
            ev("orders", o(10), ChangeOp::Update),
            ev("lines", l("Acme ", 1), ChangeOp::Insert),
            ev("lines", l("😀 it's", 2), ChangeOp::Insert),
            ev("lines", l("😀 it's", 2), ChangeOp::Delete),
            ev("lines", l("😀 it's", 3), ChangeOp::Update),
            ev("lines", l("Acme ", 1), ChangeOp::Update),
            ev("lines", l("Acme ", 1), ChangeOp::Delete),
        ]
    );
    assert!(seq(&end) > seq(&p0));
    // the keys find their rows
    let mut reader = connector_at(&db.url).reader().await.unwrap();
    let spec = ScanSpec {
        table: "lines".into(),
        select: vec![SelectItem { expr: SelectExpr::Column("qty".into()), ty: ColumnType::I32 }],
        key: vec!["tenant".into(), "n".into()],
        key_types: vec![ColumnType::TEXT, ColumnType::I32],
        filter: None,
        partition: None,
    };
    let keys: Vec<Vec<Value>> = events.iter().filter(|e| e.table == "lines").map(|e| e.key.clone()).collect();
    assert_eq!(reader.fetch_keys(&spec, &keys).await.unwrap(), vec![vec![Value::Int(6)]]);
    cap.cleanup().await.unwrap();
}

/// Keys of every type come back exactly as `Reader::scan` decodes them, whatever the
/// writing session's time zone, date style, float digits or bytea output.
#[tokio::test]
async fn keys_of_every_type_decode_as_scan_decodes() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE every (a smallint, b int, c bigint, d numeric(20,5), e text, f varchar(8), g char(4),
             h bytea, i date, j time, k timestamp, l timestamptz, m uuid, n boolean, o float8, p real, q name,
             v int,
             PRIMARY KEY (a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q));
         CREATE TABLE docs (doc jsonb PRIMARY KEY, v int);",
    );
    let cols = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q"];
    let mut reader = connector_at(&db.url).reader().await.unwrap();
    let schema = reader.describe("every").await.unwrap().unwrap();
    let key_types: Vec<ColumnType> = cols.iter().map(|c| schema.column(c).unwrap().ty.clone()).collect();
    let every = CaptureTable { table: "every".into(), key: cols.iter().map(|c| c.to_string()).collect(), key_types };
    let docs = CaptureTable { table: "docs".into(), key: vec!["doc".into()], key_types: vec![ColumnType::Json] };
    let mut cap = capture(&db);
    let p0 = cap.start(&[every.clone(), docs.clone()]).await.unwrap();
    db.sql(
        "SET TimeZone = 'America/New_York'; SET DateStyle = 'German, DMY'; SET extra_float_digits = -15;
         SET bytea_output = 'escape'; SET IntervalStyle = 'sql_standard';
         INSERT INTO every VALUES
           (-32768, 2147483647, -9223372036854775808, -12345678901234.56789, 'it''s 😀', 'x ', 'ab',
            '\\x00ff27', '0044-03-15 BC', '23:59:59.999999', '2024-02-29 12:34:56.123456',
            '1969-12-31 23:59:59.999999+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true,
            0.1, 3.4028235e38, 'name', 1),
           (0, 0, 0, 0, '', '', '', '', '2024-01-01', '00:00', '2000-01-01', '2000-01-01 00:00+05', 
            '00000000-0000-0000-0000-000000000000', false, '-0', 'NaN', '', 2);
         INSERT INTO docs VALUES ('{\"b\": [1, 2.50], \"a\": \"é\"}', 1);",
    );
    let (events, _) = read_all(&mut cap, &p0).await;
    let scan_keys = |table: &CaptureTable| ScanSpec {
        table: table.table.clone(),
        select: table
            .key
            .iter()
            .zip(&table.key_types)
            .map(|(k, ty)| SelectItem { expr: SelectExpr::Column(k.clone()), ty: ty.clone() })
            .collect(),
        key: table.key.clone(),
        key_types: table.key_types.clone(),
        filter: None,
        partition: None,
    };
    for table in [&every, &docs] {
        let mut scanned = reader.scan(&scan_keys(table), &pontoon_core::KeyRange::ALL).await.unwrap();
        let mut logged: Vec<Vec<Value>> =
            events.iter().filter(|e| e.table == table.table).map(|e| e.key.clone()).collect();
        assert!(!scanned.is_empty());
        scanned.sort_by_key(|k| format!("{k:?}"));
        logged.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(logged, scanned, "{}", table.table);
        let found = reader.fetch_keys(&scan_keys(table), &logged).await.unwrap();
        assert_eq!(found.len(), scanned.len(), "{}", table.table);
    }
    cap.cleanup().await.unwrap();
}

/// The commit-order problem: a transaction that took a lower seq but commits after a
/// higher seq was read and released is still delivered, and releasing the first
/// batch does not delete its row.
#[tokio::test]
async fn a_late_committer_is_delivered_after_a_later_seq_was_released() {
    let db = pg_db();
    db.sql(SCHEMA);
    let mut cap = capture(&db);
    let p0 = cap.start(&[orders()]).await.unwrap();
    let (a, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    a.batch_execute("BEGIN; INSERT INTO orders VALUES (5, 'late')").await.unwrap();
    db.sql("INSERT INTO orders VALUES (6, 'early')");
    let first = read_one(&mut cap, &p0).await;
    assert_eq!(first.events, vec![ev("orders", vec![Value::Int(6)], ChangeOp::Insert)]);
    let (more, p1) = read_all(&mut cap, &first.position).await;
    assert!(more.is_empty());
    // A commits between the read and the release of the batch: the release must
    // not take A's row (its seq is below the released position)
    a.batch_execute("COMMIT").await.unwrap();
    cap.release(&p1).await.unwrap();
    assert_eq!(log_rows(&db), "1");
    let second = read_one(&mut cap, &p1).await;
    assert_eq!(second.events, vec![ev("orders", vec![Value::Int(5)], ChangeOp::Insert)]);
    assert_eq!(seq(&second.position), seq(&p1), "the position does not move back to the late seq");
    cap.release(&second.position).await.unwrap();
    assert_eq!(log_rows(&db), "0");
    cap.cleanup().await.unwrap();
}

/// After a crash (a new capture object) everything not released is delivered again;
/// released changes are not; an idle read waits and returns an empty batch at `from`.
#[tokio::test]
async fn unreleased_changes_are_delivered_again_after_a_restart() {
    let db = pg_db();
    db.sql(SCHEMA);
    let mut cap = capture(&db);
    let p0 = cap.start(&[orders(), lines()]).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1, 'a'), (2, 'b'); INSERT INTO lines VALUES ('t', 1, 1);");
    let (first, p1) = read_all(&mut cap, &p0).await;
    assert_eq!(first.len(), 3);
    drop(cap);
    // a new process: start again (reuses what is installed), read from the checkpoint
    let mut cap = capture(&db);
    let again_p0 = cap.start(&[orders(), lines()]).await.unwrap();
    assert!(seq(&again_p0) >= seq(&p1));
    let (second, p2) = read_all(&mut cap, &p0).await;
    assert_eq!(second, first);
    assert_eq!(seq(&p2), seq(&p1));
    cap.release(&p2).await.unwrap();
    db.sql("INSERT INTO orders VALUES (3, 'c')");
    let (third, p3) = read_all(&mut cap, &p2).await;
    assert_eq!(third, vec![ev("orders", vec![Value::Int(3)], ChangeOp::Insert)]);
    assert!(seq(&p3) > seq(&p2));
    // released changes are gone for a new process too; unreleased ones come back
    let mut cap = capture(&db);
    cap.start(&[orders(), lines()]).await.unwrap();
    let (fourth, _) = read_all(&mut cap, &p3).await;
    assert_eq!(fourth, third);
    // idle: waits about `wait`, returns an empty batch at `from`
    let t = Instant::now();
    let idle = cap.read(&p3, 100, Duration::from_millis(400)).await.unwrap();
    assert!(idle.events.is_empty() && idle.ddl.is_none());
    assert_eq!(idle.position, p3);
    assert!(t.elapsed() >= Duration::from_millis(350), "{:?}", t.elapsed());
    cap.cleanup().await.unwrap();
}

/// A read returns whole transactions even beyond `max_events`; the backlog counts
/// the rows not yet returned.
#[tokio::test]
async fn reads_return_whole_transactions_and_the_backlog_counts_what_waits() {
    let db = pg_db();
    db.sql(SCHEMA);
    let mut cap = capture(&db);
    let p0 = cap.start(&[orders()]).await.unwrap();
    assert_eq!(cap.backlog(&p0).await.unwrap().events, Some(0));
    db.sql(
        "BEGIN; INSERT INTO orders SELECT i, 'x' FROM generate_series(1, 5) i; COMMIT;
         INSERT INTO orders VALUES (6, 'y');",
    );
    assert_eq!(cap.backlog(&p0).await.unwrap().events, Some(6));
    let batch = cap.read(&p0, 2, WAIT).await.unwrap();
    let ids: Vec<Value> = batch.events.iter().map(|e| e.key[0].clone()).collect();
    assert_eq!(ids, (1..=5).map(Value::Int).collect::<Vec<_>>());
    assert_eq!(cap.backlog(&batch.position).await.unwrap().events, Some(1));
    let next = cap.read(&batch.position, 2, WAIT).await.unwrap();
    assert_eq!(next.events, vec![ev("orders", vec![Value::Int(6)], ChangeOp::Insert)]);
    cap.cleanup().await.unwrap();
}

/// ALTER TABLE, TRUNCATE and DROP TABLE of a captured table come back as DDL after
/// the events before them and without the events after them; the DDL is reported
/// until it is released. DDL of other tables is not reported.
#[tokio::test]
async fn schema_changes_and_truncate_come_back_as_ddl() {
    let db = pg_db();
    db.sql(&format!("{SCHEMA} CREATE TABLE other (id int PRIMARY KEY);"));
    let mut cap = capture(&db);
    let p0 = cap.start(&[orders(), lines()]).await.unwrap();
    db.sql(
        "INSERT INTO orders VALUES (1, 'a');
         ALTER TABLE other ADD COLUMN x int;
         ALTER TABLE orders ADD COLUMN added int;
         INSERT INTO orders VALUES (2, 'b');",
    );
    let batch = read_one(&mut cap, &p0).await;
    assert_eq!(batch.events, vec![ev("orders", vec![Value::Int(1)], ChangeOp::Insert)]);
    let ddl = batch.ddl.expect("the ALTER TABLE");
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.contains("ALTER TABLE orders ADD COLUMN added int"), "{}", ddl.statement);
    assert!(seq(&ddl.position) > seq(&batch.position));
    // releasing the events keeps the DDL: it is reported again
    cap.release(&batch.position).await.unwrap();
    let again = read_one(&mut cap, &batch.position).await;
    assert!(again.events.is_empty());
    assert_eq!(again.ddl.as_ref().map(|d| d.position.clone()), Some(ddl.position.clone()));
    // once released (the operator went past it), the events after it come
    cap.release(&ddl.position).await.unwrap();
    let after = read_one(&mut cap, &again.position).await;
    assert_eq!(after.events, vec![ev("orders", vec![Value::Int(2)], ChangeOp::Insert)]);
    assert!(after.ddl.is_none());
    cap.release(&after.position).await.unwrap();

    db.sql("INSERT INTO lines VALUES ('t', 1, 1); TRUNCATE lines;");
    let batch = read_one(&mut cap, &after.position).await;
    assert_eq!(batch.events.len(), 1);
    let ddl = batch.ddl.expect("the TRUNCATE");
    assert_eq!((ddl.table.as_str(), ddl.statement.as_str()), ("lines", "TRUNCATE lines"));
    cap.release(&batch.position).await.unwrap();
    cap.release(&ddl.position).await.unwrap();

    db.sql("DROP TABLE lines");
    let batch = read_one(&mut cap, &batch.position).await;
    let ddl = batch.ddl.expect("the DROP TABLE");
    assert_eq!(ddl.table, "lines");
    assert!(ddl.statement.contains("DROP TABLE lines"), "{}", ddl.statement);
    cap.cleanup().await.unwrap();
}

/// Cleanup, from a fresh capture object, removes every object of the job (checked in
/// the catalog) and names each; a second cleanup removes nothing; another job's
/// capture in the same database is untouched.
#[tokio::test]
async fn cleanup_removes_everything_of_its_job_only_once() {
    let db = pg_db();
    db.sql(SCHEMA);
    let job = job_of(&db);
    let other_job = format!("{}_b", &job[..job.len().min(38)]);
    capture(&db).start(&[orders(), lines()]).await.unwrap();
    let mut other = capture_at(&db.url, &other_job);
    let op0 = other.start(&[orders()]).await.unwrap();
    let catalog = |db: &TestDb, pattern: &str| {
        db.sql(&format!(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE '{pattern}'),
                    (SELECT count(*) FROM pg_proc WHERE proname LIKE '{pattern}'),
                    (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE '{pattern}'),
                    (SELECT count(*) FROM pg_class WHERE relname LIKE '{pattern}' AND relkind = 'r')"
        ))
    };
    // both jobs: 4 + 4 + 4 triggers, 3 + 2 functions, 2 + 2 event triggers, 2 + 2 tables
    assert_eq!(catalog(&db, "pontoon%"), "12|5|4|4");
    let mut removed = capture(&db).cleanup().await.unwrap();
    removed.sort();
    let mut expected = vec![
        format!("event trigger pontoon_{job}_ddl"),
        format!("event trigger pontoon_{job}_drop"),
        format!("function pontoon_{job}"),
        format!("function pontoon_{job}_lines"),
        format!("function pontoon_{job}_orders"),
        format!("table pontoon_log_{job}"),
        format!("table pontoon_tables_{job}"),
    ];
    for table in ["orders", "lines"] {
        for suffix in ["ins", "upd", "del", "trunc"] {
            expected.push(format!("trigger pontoon_{job}_{table}_{suffix} on {table}"));
        }
    }
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(capture(&db).cleanup().await.unwrap(), Vec::<String>::new());
    // only the other job's objects are left, and it still captures
    let other_pattern = format!("pontoon%{other_job}%");
    assert_eq!(catalog(&db, &other_pattern), "4|2|2|2");
    assert_eq!(catalog(&db, "pontoon%"), "4|2|2|2");
    db.sql("INSERT INTO orders VALUES (1, 'a')");
    let (events, _) = read_all(&mut other, &op0).await;
    assert_eq!(events, vec![ev("orders", vec![Value::Int(1)], ChangeOp::Insert)]);
    assert_eq!(other.cleanup().await.unwrap().len(), 10);
    assert_eq!(catalog(&db, "pontoon%"), "0|0|0|0");
    assert_eq!(db.sql("SELECT count(*) FROM orders"), "1");
}

/// Two jobs whose names would give the same function name (`pontoon_a_b_orders` is
/// job a's for table b_orders and job a_b's for table orders) do not take over each
/// other's objects.
#[tokio::test]
async fn a_name_taken_by_another_job_is_refused() {
    let db = pg_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE b_orders (id int PRIMARY KEY);");
    let key = |t: &str| CaptureTable { table: t.into(), key: vec!["id".into()], key_types: vec![ColumnType::I32] };
    let job = job_of(&db);
    let job = &job[..job.len().min(36)];
    let mut a = capture_at(&db.url, job);
    a.start(&[key("b_orders")]).await.unwrap();
    let mut ab = capture_at(&db.url, &format!("{job}_b"));
    let e = ab.start(&[key("orders")]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains(&format!("function pontoon_{job}_b_orders")), "{e}");
    // nothing of the refused start is left
    assert_eq!(ab.cleanup().await.unwrap(), Vec::<String>::new());
    assert_eq!(a.cleanup().await.unwrap().len(), 10);
}

/// Changes in another database of the same server, with the same job name, are not
/// reported.
#[tokio::test]
async fn changes_in_another_database_are_not_reported() {
    let db = pg_db();
    let elsewhere = pg_db();
    db.sql(SCHEMA);
    elsewhere.sql(SCHEMA);
    let job = job_of(&db);
    let mut cap = capture_at(&db.url, &job);
    let p0 = cap.start(&[orders()]).await.unwrap();
    let mut theirs = capture_at(&elsewhere.url, &job);
    let t0 = theirs.start(&[orders()]).await.unwrap();
    elsewhere.sql("INSERT INTO orders VALUES (1, 'x')");
    db.sql("INSERT INTO orders VALUES (2, 'y')");
    let (events, _) = read_all(&mut cap, &p0).await;
    assert_eq!(events, vec![ev("orders", vec![Value::Int(2)], ChangeOp::Insert)]);
    let (events, _) = read_all(&mut theirs, &t0).await;
    assert_eq!(events, vec![ev("orders", vec![Value::Int(1)], ChangeOp::Insert)]);
    cap.cleanup().await.unwrap();
    theirs.cleanup().await.unwrap();
}

/// A role that is not a superuser: preflight names every missing privilege and key at
/// once; with the privileges granted, capture works without event triggers, and a
/// column change is found by comparing the columns on read.
#[tokio::test]
async fn a_plain_role_gets_every_refusal_at_once_then_captures_without_event_triggers() {
    let db = pg_db();
    let role = format!("r_{}", db.name);
    db.sql(&format!(
        "{SCHEMA}
         CREATE TABLE nokey (a int, b text);
         CREATE TABLE uniq (code text NOT NULL UNIQUE, v int);
         CREATE ROLE {role} LOGIN PASSWORD 'pw';
         GRANT SELECT ON orders TO {role};"
    ));
    let url = db.url.replacen("pontoon:pontoon@", &format!("{role}:pw@"), 1);
    assert_ne!(url, db.url);
    let job = job_of(&db);
    let mut cap = capture_at(&url, &job);
    let nokey = CaptureTable { table: "nokey".into(), key: vec!["a".into()], key_types: vec![ColumnType::I32] };
    let uniq = CaptureTable { table: "uniq".into(), key: vec!["code".into()], key_types: vec![ColumnType::TEXT] };
    let missing = CaptureTable { table: "missing".into(), key: vec!["id".into()], key_types: vec![ColumnType::I32] };
    let e = cap.preflight(&[orders(), nokey.clone(), missing, uniq.clone()], 60).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let message = e.to_string();
    for expected in [
        format!("schema public: role {role} lacks the CREATE privilege"),
        format!("GRANT CREATE ON SCHEMA \"public\" TO \"{role}\""),
        format!("table orders: role {role} lacks the TRIGGER privilege"),
        format!("GRANT TRIGGER ON \"public\".\"orders\" TO \"{role}\""),
        "table nokey: has no primary key".to_string(),
        format!("table nokey: role {role} lacks the SELECT privilege"),
        "table missing: does not exist".to_string(),
        format!("table uniq: role {role} lacks the TRIGGER privilege"),
        format!("table uniq: role {role} lacks the SELECT privilege"),
    ] {
        assert!(message.contains(&expected), "missing `{expected}` in:\n{message}");
    }
    assert!(!message.contains("table orders: has no primary key"), "{message}");
    assert!(!message.contains("table uniq: has no primary key"), "{message}");
    assert!(!message.contains("pw@"), "{message}");
    assert_eq!(message.lines().count(), 1 + 8, "{message}");

    db.sql(&format!(
        "GRANT CREATE ON SCHEMA public TO {role}; GRANT TRIGGER ON orders, uniq TO {role};
         GRANT SELECT ON uniq TO {role};"
    ));
    cap.preflight(&[orders(), uniq.clone()], 60).await.unwrap();
    let p0 = cap.start(&[orders(), uniq]).await.unwrap();
    // the application's role (here the superuser) needs no privilege on the log
    db.sql("INSERT INTO orders VALUES (1, 'a'); INSERT INTO uniq VALUES ('k', 1);");
    let (events, p1) = read_all(&mut cap, &p0).await;
    assert_eq!(
        events,
        vec![ev("orders", vec![Value::Int(1)], ChangeOp::Insert), ev("uniq", vec![text("k")], ChangeOp::Insert)]
    );
    db.sql("ALTER TABLE orders ADD COLUMN added int");
    let batch = read_one(&mut cap, &p1).await;
    let ddl = batch.ddl.expect("the column change");
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.starts_with("ALTER TABLE orders (columns changed;"), "{}", ddl.statement);
    assert_eq!(batch.position, p1);
    // still reported after a restart
    let mut cap = capture_at(&url, &job);
    cap.start(&[orders()]).await.unwrap();
    assert!(read_one(&mut cap, &p1).await.ddl.is_some());
    let removed = cap.cleanup().await.unwrap();
    assert!(!removed.iter().any(|r| r.starts_with("event trigger")), "{removed:?}");
    assert_eq!(removed.len(), 2 * 4 + 2 + 2, "{removed:?}");
    assert_eq!(cap.cleanup().await.unwrap(), Vec::<String>::new());
    db.sql(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
}

/// A table with a primary key that the job's key does not match, and a key column of
/// a type the capture cannot log, are refused by preflight.
#[tokio::test]
async fn preflight_refuses_a_key_that_is_not_the_tables_key() {
    let db = pg_db();
    db.sql("CREATE TABLE orders (id bigint PRIMARY KEY, note text); CREATE TABLE spans (r int4range PRIMARY KEY);");
    let mut cap = capture(&db);
    let wrong = CaptureTable { table: "orders".into(), key: vec!["note".into()], key_types: vec![ColumnType::TEXT] };
    let spans = CaptureTable { table: "spans".into(), key: vec!["r".into()], key_types: vec![ColumnType::TEXT] };
    let e = cap.preflight(&[wrong, spans], 60).await.unwrap_err();
    let message = e.to_string();
    assert!(message.contains("table orders: the key (note) is not its primary key"), "{message}");
    assert!(message.contains("table spans: key column r has type int4range"), "{message}");
    cap.preflight(&[orders()], 60).await.unwrap();
}

/// A partitioned table is captured through its parent: changes in every partition
/// (and in a partition attached later) are logged under the parent's name, with a
/// key-changing update across partitions as two events.
#[tokio::test]
async fn a_partitioned_table_is_captured_through_its_parent() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE measures (id int, day date, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
         CREATE TABLE measures_2023 PARTITION OF measures FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');",
    );
    let table = CaptureTable {
        table: "measures".into(),
        key: vec!["id".into(), "day".into()],
        key_types: vec![ColumnType::I32, ColumnType::Date],
    };
    let mut cap = capture(&db);
    cap.preflight(std::slice::from_ref(&table), 60).await.unwrap();
    let p0 = cap.start(std::slice::from_ref(&table)).await.unwrap();
    db.sql(
        "CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         INSERT INTO measures VALUES (1, '2023-06-01', 1), (2, '2024-06-01', 2);
         UPDATE measures SET day = '2024-07-01' WHERE id = 1;",
    );
    let (events, _) = read_all(&mut cap, &p0).await;
    let day = |y, m, d| Value::Date(pontoon_core::value::days_from_civil(y, m, d) as i32);
    assert_eq!(
        events,
        vec![
            ev("measures", vec![Value::Int(1), day(2023, 6, 1)], ChangeOp::Insert),
            ev("measures", vec![Value::Int(2), day(2024, 6, 1)], ChangeOp::Insert),
            ev("measures", vec![Value::Int(1), day(2023, 6, 1)], ChangeOp::Delete),
            ev("measures", vec![Value::Int(1), day(2024, 7, 1)], ChangeOp::Insert),
        ]
    );
    cap.cleanup().await.unwrap();
    assert_eq!(db.sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pontoon%'"), "0");
}
