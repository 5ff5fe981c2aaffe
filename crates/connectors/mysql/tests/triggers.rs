//! Trigger capture (`TriggerCapture`) against a real MariaDB 10.11: a fresh database
//! per test on the shared server, the job named after it.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use pontoon_core::capture::{Capture, CaptureBatch, CaptureMode, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp};
use pontoon_core::{
    ColumnType, Connector, ErrorKind, KeyRange, Position, ScanSpec, SecretUrl, SelectExpr, SelectItem, Value,
};
use pontoon_mysql::MysqlConnector;
use pontoon_testsupport::{MariaDbServer, TestDb, mysql_db};

fn connector(db: &TestDb) -> MysqlConnector {
    MysqlConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL")
}

fn spec(db: &TestDb) -> CaptureSpec {
    CaptureSpec { mode: CaptureMode::Triggers, job: db.name.clone() }
}

fn capture(db: &TestDb) -> Box<dyn Capture> {
    connector(db).capture(&spec(db)).expect("trigger capture")
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

/// The capture table of a table as the reader describes it.
async fn captured(db: &TestDb, table: &str) -> CaptureTable {
    let schema = connector(db).reader().await.unwrap().describe(table).await.unwrap().expect("table exists");
    CaptureTable {
        table: table.into(),
        key: schema.primary_key.clone(),
        key_types: schema.primary_key.iter().map(|k| schema.column(k).unwrap().ty.clone()).collect(),
    }
}

fn ev(table: &str, key: Vec<Value>, op: ChangeOp) -> ChangeEvent {
    ChangeEvent { table: table.into(), key, op }
}

fn seq(p: &Position) -> i64 {
    match p {
        Position::TriggerSeq { seq } => *seq,
        other => panic!("not a trigger position: {other}"),
    }
}

/// Reads until `want` events arrived (or 10 seconds passed), checking that the
/// position never moves backward; returns the events and the last position.
async fn read_events(cap: &mut dyn Capture, from: &Position, want: usize) -> (Vec<ChangeEvent>, Position) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    let mut at = from.clone();
    while events.len() < want && Instant::now() < deadline {
        let batch = cap.read(&at, 1000, Duration::from_millis(200)).await.unwrap();
        assert!(batch.ddl.is_none(), "unexpected DDL {:?}", batch.ddl);
        assert!(seq(&batch.position) >= seq(&at), "position moved backward: {} -> {}", at, batch.position);
        events.extend(batch.events);
        at = batch.position;
    }
    (events, at)
}

/// Reads once more, expecting nothing new.
async fn read_nothing(cap: &mut dyn Capture, from: &Position) -> Position {
    let batch = cap.read(from, 1000, Duration::from_millis(700)).await.unwrap();
    assert_eq!(batch.events, vec![], "no change expected");
    assert!(batch.ddl.is_none(), "unexpected DDL {:?}", batch.ddl);
    assert!(seq(&batch.position) >= seq(from));
    batch.position
}

/// Reads until a batch carries a DDL (or 10 seconds passed).
async fn read_until_ddl(cap: &mut dyn Capture, from: &Position) -> (Vec<ChangeEvent>, CaptureBatch) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    let mut at = from.clone();
    loop {
        let batch = cap.read(&at, 1000, Duration::from_millis(300)).await.unwrap();
        assert!(seq(&batch.position) >= seq(&at));
        events.extend(batch.events.clone());
        if batch.ddl.is_some() {
            return (events, batch);
        }
        assert!(Instant::now() < deadline, "no DDL came back");
        at = batch.position;
    }
}

async fn conn(db: &TestDb) -> mysql_async::Conn {
    let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&db.url).unwrap()).await.unwrap();
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    c
}

fn two_tables(db: &TestDb) {
    db.sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);
         CREATE TABLE items (code varchar(20) NOT NULL, n int NOT NULL, qty int, PRIMARY KEY (code, n))",
    );
}

/// Inserts, updates, deletes and key-changing updates on two tables (one with a
/// composite text + int key) arrive with their keys and ops, in commit order; a
/// changed key yields the old and the new key.
#[tokio::test]
async fn changes_arrive_with_their_keys_and_ops() {
    let db = mysql_db();
    two_tables(&db);
    let mut cap = capture(&db);
    let tables = [captured(&db, "orders").await, captured(&db, "items").await];
    cap.preflight(&tables, 60).await.unwrap();
    let p0 = cap.start(&tables).await.unwrap();
    // a second start reuses what the first installed
    let p0 = {
        let again = cap.start(&tables).await.unwrap();
        assert!(seq(&again) >= seq(&p0));
        again
    };
    let before = pontoon_core::value::MICROS_PER_SECOND
        * std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    db.sql(
        "INSERT INTO orders VALUES (1, 'a'), (2, 'b');
         INSERT INTO items VALUES ('x''y', 1, 5), ('🦀', 2, 6);
         UPDATE orders SET note = 'c' WHERE id = 1;
         UPDATE items SET n = 3 WHERE code = '🦀';
         UPDATE orders SET id = 20 WHERE id = 2;
         DELETE FROM items WHERE code = 'x''y';
         DELETE FROM orders WHERE id = 1",
    );
    let (events, at) = read_events(cap.as_mut(), &p0, 11).await;
    let lk = |code: &str, n: i64| vec![t(code), int(n)];
    assert_eq!(
        events,
        vec![
            ev("orders", vec![int(1)], ChangeOp::Insert),
            ev("orders", vec![int(2)], ChangeOp::Insert),
            ev("items", lk("x'y", 1), ChangeOp::Insert),
            ev("items", lk("🦀", 2), ChangeOp::Insert),
            ev("orders", vec![int(1)], ChangeOp::Update),
            ev("items", lk("🦀", 2), ChangeOp::Update),
            ev("items", lk("🦀", 3), ChangeOp::Update),
            ev("orders", vec![int(2)], ChangeOp::Update),
            ev("orders", vec![int(20)], ChangeOp::Update),
            ev("items", lk("x'y", 1), ChangeOp::Delete),
            ev("orders", vec![int(1)], ChangeOp::Delete),
        ]
    );
    assert!(seq(&at) > seq(&p0));
    read_nothing(cap.as_mut(), &at).await;

    // the commit time of the newest change is reported (UTC, microseconds)
    db.sql("INSERT INTO orders VALUES (3, 'd')");
    let batch = loop {
        let b = cap.read(&at, 10, Duration::from_secs(2)).await.unwrap();
        if !b.events.is_empty() {
            break b;
        }
    };
    let when = batch.committed_at_micros.expect("a commit time");
    assert!(when >= before - 5_000_000 && when < before + 120_000_000, "{when} vs {before}");
    cap.cleanup().await.unwrap();
}

/// A rolled-back transaction leaves nothing in the log.
#[tokio::test]
async fn a_rolled_back_transaction_produces_nothing() {
    let db = mysql_db();
    two_tables(&db);
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "orders").await]).await.unwrap();
    let mut c = conn(&db).await;
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (1, 'gone')").await.unwrap();
    c.query_drop("UPDATE orders SET id = 2").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (3, 'kept')").await.unwrap();
    let (events, at) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(3)], ChangeOp::Insert)]);
    read_nothing(cap.as_mut(), &at).await;
    cap.cleanup().await.unwrap();
}

/// The commit-order problem: transaction A logs seq n and commits after B logged and
/// committed n + 1. B is read first; releasing B's position must not delete A's
/// row; A is read once it commits.
#[tokio::test]
async fn a_late_committer_is_read_after_a_later_seq_was_released() {
    let db = mysql_db();
    two_tables(&db);
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "orders").await]).await.unwrap();
    let mut a = conn(&db).await;
    let mut b = conn(&db).await;
    a.query_drop("START TRANSACTION").await.unwrap();
    a.query_drop("INSERT INTO orders VALUES (1, 'A, long')").await.unwrap();
    b.query_drop("INSERT INTO orders VALUES (2, 'B, quick')").await.unwrap();

    let (events, p1) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(2)], ChangeOp::Insert)]);
    let p1 = read_nothing(cap.as_mut(), &p1).await;
    cap.release(&p1).await.unwrap();

    a.query_drop("COMMIT").await.unwrap();
    let log = format!("pontoon_log_{}", db.name);
    assert_eq!(db.sql(&format!("SELECT key_json FROM {log}")), r#"["1"]"#, "A's row survived the release");
    let (events, p2) = read_events(cap.as_mut(), &p1, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(1)], ChangeOp::Insert)]);
    assert!(seq(&p2) >= seq(&p1), "position moved backward");
    cap.release(&p2).await.unwrap();
    assert_eq!(db.sql(&format!("SELECT count(*) FROM {log}")), "0");
    cap.cleanup().await.unwrap();
}

/// After a crash (a new capture object), everything not released is delivered
/// again, from an earlier position; what was released is not.
#[tokio::test]
async fn unreleased_changes_are_delivered_again_after_a_restart() {
    let db = mysql_db();
    two_tables(&db);
    let tables = [captured(&db, "orders").await, captured(&db, "items").await];
    let mut cap = capture(&db);
    let p0 = cap.start(&tables).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1, 'a')");
    let (first, p1) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(first, vec![ev("orders", vec![int(1)], ChangeOp::Insert)]);
    cap.release(&p1).await.unwrap();
    db.sql("INSERT INTO orders VALUES (2, 'b'); INSERT INTO items VALUES ('k', 1, 1)");
    let (second, p2) = read_events(cap.as_mut(), &p1, 2).await;
    assert_eq!(second.len(), 2);
    // read but not released: the process dies here
    drop(cap);

    let mut cap = capture(&db);
    let p = cap.start(&tables).await.unwrap();
    assert!(seq(&p) >= seq(&p1));
    let (again, p3) = read_events(cap.as_mut(), &p1, 2).await;
    assert_eq!(again, second, "the unreleased changes again, and only them");
    assert!(seq(&p3) >= seq(&p2));
    read_nothing(cap.as_mut(), &p3).await;
    cap.release(&p3).await.unwrap();
    drop(cap);

    // released changes are gone for good
    let mut cap = capture(&db);
    let p = cap.start(&tables).await.unwrap();
    read_nothing(cap.as_mut(), &p).await;
    cap.cleanup().await.unwrap();
}

/// Keys of every type come back as `Reader::scan` decodes them, so `fetch_keys`
/// finds the rows: decimal, unsigned bigint above 2^63, bytes with zero bytes and
/// quotes, datetime(6), a timestamp written by a session in another time zone, time,
/// date, uuid, float, double, and text with quotes, NUL and 4-byte UTF-8.
#[tokio::test]
async fn keys_of_every_type_decode_as_the_reader_decodes_them() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE nums (d decimal(30,4), u bigint unsigned, f float, g double, b tinyint(1), PRIMARY KEY (d, u, f, g, b));
         CREATE TABLE bins (k varbinary(20) PRIMARY KEY, fx binary(4) NOT NULL);
         CREATE TABLE times (d date, dt datetime(6), ts timestamp(6) NOT NULL DEFAULT '2000-01-01', tm time(6),
           PRIMARY KEY (d, dt, ts, tm));
         CREATE TABLE ids (u uuid PRIMARY KEY);
         CREATE TABLE words (w varchar(40) COLLATE utf8mb4_nopad_bin PRIMARY KEY)",
    );
    let names = ["nums", "bins", "times", "ids", "words"];
    let mut tables = Vec::new();
    for n in names {
        tables.push(captured(&db, n).await);
    }
    let mut cap = capture(&db);
    cap.preflight(&tables, 60).await.unwrap();
    let p0 = cap.start(&tables).await.unwrap();
    let mut c = conn(&db).await;
    c.query_drop("SET time_zone = '+05:00'").await.unwrap();
    c.query_drop(
        "INSERT INTO nums VALUES (-12.5000, 18446744073709551615, 0.1, 0.30000000000000004, 1),
           (0.0001, 9223372036854775808, 16777216, 1e22, 0), (7, 0, -3.4e38, -5e-324, 1)",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO bins VALUES (x'00', x'01'), (x'0027ff5c22', x'01020304'), (x'', x'')").await.unwrap();
    c.query_drop(
        "INSERT INTO times VALUES ('2024-02-29', '2024-02-29 23:59:59.999999', '2024-03-31 02:30:00.123456', '-838:59:59'),
           ('1000-01-01', '1000-01-01 00:00:00.000001', '1970-01-01 05:00:01', '00:00:00.000001')",
    )
    .await
    .unwrap();
    c.query_drop(
        "INSERT INTO ids VALUES ('123e4567-e89b-12d3-a456-426614174000'), ('00000000-0000-0000-0000-000000000001')",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO words VALUES ('it''s \\\\ \"q\"'), (CONCAT('nul', CHAR(0))), ('😀🦀 '), (''), ('a\\nb')")
        .await
        .unwrap();
    let (events, _) = read_events(cap.as_mut(), &p0, 15).await;
    assert_eq!(events.len(), 15);

    let c = connector(&db);
    let mut reader = c.reader().await.unwrap();
    for (table, ct) in names.iter().zip(&tables) {
        let schema = reader.describe(table).await.unwrap().unwrap();
        let scan = ScanSpec {
            table: table.to_string(),
            select: schema
                .columns
                .iter()
                .map(|c| SelectItem { expr: SelectExpr::Column(c.name.clone()), ty: c.ty.clone() })
                .collect(),
            key: ct.key.clone(),
            key_types: ct.key_types.clone(),
            filter: None,
            partition: None,
        };
        let rows = reader.scan(&scan, &KeyRange::ALL).await.unwrap();
        let mut scanned: Vec<Vec<Value>> = rows.iter().map(|r| r[..ct.key.len()].to_vec()).collect();
        let mut logged: Vec<Vec<Value>> = events.iter().filter(|e| e.table == *table).map(|e| e.key.clone()).collect();
        let order = |v: &mut Vec<Vec<Value>>| v.sort_by_key(|k| format!("{k:?}"));
        order(&mut scanned);
        order(&mut logged);
        assert_eq!(logged, scanned, "{table}: logged keys are the reader's keys");
        let fetched = reader.fetch_keys(&scan, &logged).await.unwrap();
        assert_eq!(fetched.len(), rows.len(), "{table}: every logged key finds its row");
    }
    cap.cleanup().await.unwrap();
}

/// Under a case-insensitive, PAD SPACE collation, an UPDATE that only changes the
/// case or trailing spaces of a key logs both spellings: the syncer re-reads both.
#[tokio::test]
async fn a_key_changed_only_in_case_logs_both_spellings() {
    let db = mysql_db();
    db.sql("CREATE TABLE ci (k varchar(20) COLLATE utf8mb4_general_ci PRIMARY KEY, n int)");
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "ci").await]).await.unwrap();
    db.sql("INSERT INTO ci VALUES ('abc', 1); UPDATE ci SET k = 'ABC'; UPDATE ci SET k = 'ABC ', n = 2; UPDATE ci SET n = 3");
    let (events, _) = read_events(cap.as_mut(), &p0, 6).await;
    assert_eq!(
        events,
        vec![
            ev("ci", vec![t("abc")], ChangeOp::Insert),
            ev("ci", vec![t("abc")], ChangeOp::Update),
            ev("ci", vec![t("ABC")], ChangeOp::Update),
            ev("ci", vec![t("ABC")], ChangeOp::Update),
            ev("ci", vec![t("ABC ")], ChangeOp::Update),
            ev("ci", vec![t("ABC ")], ChangeOp::Update),
        ]
    );
    cap.cleanup().await.unwrap();
}

/// ALTER TABLE on a captured table comes back as DDL naming the table with what it
/// is now, after the changes read before it and without the changes after it; a
/// restarted capture reports it again (the fingerprint lives in the triggers).
#[tokio::test]
async fn alter_table_comes_back_as_ddl_after_the_changes_before_it() {
    let db = mysql_db();
    two_tables(&db);
    let tables = [captured(&db, "orders").await, captured(&db, "items").await];
    let mut cap = capture(&db);
    let p0 = cap.start(&tables).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1, 'before')");
    let (events, p1) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(1)], ChangeOp::Insert)]);
    db.sql("INSERT INTO items VALUES ('b', 1, 1); ALTER TABLE orders ADD COLUMN extra int; INSERT INTO orders VALUES (2, 'after', 0)");
    let (events, batch) = read_until_ddl(cap.as_mut(), &p1).await;
    assert!(!events.contains(&ev("orders", vec![int(2)], ChangeOp::Insert)), "a change after the DDL: {events:?}");
    let ddl = batch.ddl.expect("ddl");
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.starts_with("table changed to: CREATE TABLE `orders`"), "{}", ddl.statement);
    assert!(ddl.statement.contains("`extra` int"), "{}", ddl.statement);
    assert_eq!(ddl.position, batch.position);
    // it stays: nothing after it is ever returned
    let again = cap.read(&batch.position, 100, Duration::from_millis(100)).await.unwrap();
    assert!(again.ddl.is_some() && !again.events.contains(&ev("orders", vec![int(2)], ChangeOp::Insert)));
    drop(cap);

    let mut cap = capture(&db);
    let p = cap.start(&tables).await.unwrap();
    let (_, batch) = read_until_ddl(cap.as_mut(), &p).await;
    assert_eq!(batch.ddl.expect("ddl after a restart").table, "orders");
    cap.cleanup().await.unwrap();
}

/// Schema changes that do not change the columns, the key or the stored rows (an
/// index, a comment) are not reported: the sync goes on.
#[tokio::test]
async fn an_added_index_is_not_a_table_change() {
    let db = mysql_db();
    two_tables(&db);
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "orders").await]).await.unwrap();
    db.sql("ALTER TABLE orders ADD INDEX by_note (note(10)); ALTER TABLE orders COMMENT 'x'; INSERT INTO orders VALUES (1, 'a')");
    let (events, at) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(1)], ChangeOp::Insert)]);
    read_nothing(cap.as_mut(), &at).await;
    cap.cleanup().await.unwrap();
}

/// TRUNCATE TABLE fires no trigger; it changes InnoDB's table id, which the capture
/// notices. A dropped table comes back as `DROP TABLE`.
#[tokio::test]
async fn truncate_and_drop_table_come_back_as_ddl() {
    let db = mysql_db();
    two_tables(&db);
    db.sql("INSERT INTO orders VALUES (1, 'x')");
    let tables = [captured(&db, "orders").await, captured(&db, "items").await];
    let mut cap = capture(&db);
    let p0 = cap.start(&tables).await.unwrap();
    let p1 = read_nothing(cap.as_mut(), &p0).await;
    db.sql("TRUNCATE TABLE orders");
    let (_, batch) = read_until_ddl(cap.as_mut(), &p1).await;
    let ddl = batch.ddl.unwrap();
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.starts_with("table emptied or rebuilt (TRUNCATE TABLE"), "{}", ddl.statement);
    cap.cleanup().await.unwrap();

    let mut cap = capture(&db);
    let p0 = cap.start(&tables).await.unwrap();
    let p1 = read_nothing(cap.as_mut(), &p0).await;
    db.sql("DROP TABLE items");
    let (_, batch) = read_until_ddl(cap.as_mut(), &p1).await;
    let ddl = batch.ddl.unwrap();
    assert_eq!((ddl.table.as_str(), ddl.statement.as_str()), ("items", "DROP TABLE `items`"));
    cap.cleanup().await.unwrap();
}

/// A table without a primary key (or unique NOT NULL key), a missing table, a
/// cascading foreign key: every refusal in one Config error, one line each.
#[tokio::test]
async fn preflight_refuses_tables_it_cannot_capture() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE nokey (a int, b int);
         CREATE TABLE nullable_unique (a int, UNIQUE KEY (a));
         CREATE TABLE unique_ok (a int NOT NULL, UNIQUE KEY (a));
         CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, p int, CONSTRAINT child_fk FOREIGN KEY (p) REFERENCES parent (id) ON DELETE CASCADE)",
    );
    let by = |table: &str, key: &str| CaptureTable {
        table: table.into(),
        key: vec![key.into()],
        key_types: vec![ColumnType::I32],
    };
    let tables = [
        by("nokey", "a"),
        by("nullable_unique", "a"),
        by("unique_ok", "a"),
        by("missing", "id"),
        by("child", "id"),
        by("parent", "id"),
    ];
    let mut cap = capture(&db);
    let e = cap.preflight(&tables, 60).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines.iter().any(|l| l.contains("table nokey") && l.contains("no primary key")), "{text}");
    assert!(lines.iter().any(|l| l.contains("table nullable_unique") && l.contains("no primary key")), "{text}");
    assert!(lines.iter().any(|l| l.contains("table missing") && l.contains("does not exist")), "{text}");
    assert!(
        lines.iter().any(|l| l.contains("table child") && l.contains("child_fk") && l.contains("ON DELETE CASCADE")),
        "{text}"
    );
    assert!(!text.contains("unique_ok") && !text.contains("table parent"), "{text}");
    cap.preflight(&[by("unique_ok", "a"), by("parent", "id")], 60).await.unwrap();
}

/// MariaDB really triggers without foreign key cascades firing them: the reason for
/// the refusal above.
#[tokio::test]
async fn cascaded_deletes_fire_no_trigger() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, p int, FOREIGN KEY (p) REFERENCES parent (id) ON DELETE CASCADE);
         INSERT INTO parent VALUES (1); INSERT INTO child VALUES (10, 1)",
    );
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "child").await]).await.unwrap();
    db.sql("DELETE FROM parent");
    assert_eq!(db.sql("SELECT count(*) FROM child"), "0");
    read_nothing(cap.as_mut(), &p0).await;
    cap.cleanup().await.unwrap();
}

/// A user without the privileges is refused at once, every missing privilege named
/// with the GRANT that fixes it; creating triggers with the binary log on really needs
/// SUPER (or log_bin_trust_function_creators); with the grants, capture works.
#[tokio::test]
async fn preflight_names_missing_privileges_and_super() {
    let db = mysql_db();
    two_tables(&db);
    let user = format!("u_{}", db.name);
    let grantee = format!("'{user}'@'%'");
    db.sql(&format!("CREATE USER {grantee} IDENTIFIED BY 'pw'; GRANT SELECT ON `{}`.* TO {grantee}", db.name));
    let url = db.url.replacen("pontoon:pontoon@", &format!("{user}:pw@"), 1);
    let c = MysqlConnector::new(&SecretUrl::new(url)).unwrap();
    let tables = [captured(&db, "orders").await];
    let mut cap = c.capture(&spec(&db)).unwrap();

    let e = cap.preflight(&tables, 60).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let text = e.to_string();
    assert!(text.contains("lacks TRIGGER on") && text.contains("`orders`"), "{text}");
    assert!(text.contains("CREATE, INSERT, DELETE, DROP on"), "{text}");
    assert!(text.contains("lacks PROCESS"), "{text}");
    assert!(text.contains("lacks SUPER") && text.contains("log_bin_trust_function_creators"), "{text}");
    assert!(!text.contains("pw"), "{text}");

    // global privileges reach new connections only: a new capture after each GRANT
    db.sql(&format!(
        "GRANT SELECT, INSERT, DELETE, CREATE, DROP, TRIGGER ON `{}`.* TO {grantee}; GRANT PROCESS ON *.* TO {grantee}",
        db.name
    ));
    let mut cap = c.capture(&spec(&db)).unwrap();
    let e = cap.preflight(&tables, 60).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(text.lines().filter(|l| l.starts_with("- ")).count(), 1, "{text}");
    assert!(text.contains("lacks SUPER"), "{text}");
    // the refusal is real: MariaDB refuses the trigger
    let e = cap.start(&tables).await.unwrap_err();
    assert!(e.to_string().contains("SUPER"), "{e}");
    assert_eq!(e.location().table.as_deref(), Some("orders"), "{e}");

    db.sql(&format!("GRANT SUPER ON *.* TO {grantee}"));
    let mut cap = c.capture(&spec(&db)).unwrap();
    cap.preflight(&tables, 60).await.unwrap();
    let p0 = cap.start(&tables).await.unwrap();
    db.sql("INSERT INTO orders VALUES (7, 'x')");
    let (events, _) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(7)], ChangeOp::Insert)]);
    assert_eq!(cap.cleanup().await.unwrap().len(), 4);
    db.sql(&format!("DROP USER {grantee}"));
}

/// With `log_bin_trust_function_creators = ON` (a private server: it is a global
/// setting), a user without SUPER may create the triggers, and preflight agrees.
#[tokio::test]
async fn trusting_function_creators_replaces_super() {
    let server = MariaDbServer::start_private();
    let db = server.create_db();
    two_tables(&db);
    db.sql(&format!(
        "CREATE USER 'plain'@'%' IDENTIFIED BY 'pw';
         GRANT SELECT, INSERT, DELETE, CREATE, DROP, TRIGGER ON `{}`.* TO 'plain'@'%';
         GRANT PROCESS ON *.* TO 'plain'@'%';
         SET GLOBAL log_bin_trust_function_creators = ON",
        db.name
    ));
    let url = db.url.replacen("pontoon:pontoon@", "plain:pw@", 1);
    let c = MysqlConnector::new(&SecretUrl::new(url)).unwrap();
    let mut cap = c.capture(&spec(&db)).unwrap();
    let tables = [captured(&db, "orders").await];
    cap.preflight(&tables, 60).await.unwrap();
    let p0 = cap.start(&tables).await.unwrap();
    db.sql("INSERT INTO orders VALUES (5, 'x')");
    let (events, _) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(5)], ChangeOp::Insert)]);
    assert_eq!(cap.cleanup().await.unwrap().len(), 4);
}

/// Cleanup finds everything by name, in a fresh capture that never started, removes
/// it (the catalog shows nothing of the job) and says what it removed; a second
/// cleanup removes nothing. Another job's triggers on the same table stay.
#[tokio::test]
async fn cleanup_removes_everything_and_is_idempotent() {
    let db = mysql_db();
    two_tables(&db);
    let tables = [captured(&db, "orders").await, captured(&db, "items").await];
    let mut cap = capture(&db);
    cap.start(&tables).await.unwrap();
    let other = CaptureSpec { mode: CaptureMode::Triggers, job: format!("{}_x", db.name) };
    let mut other_cap = connector(&db).capture(&other).unwrap();
    other_cap.start(&tables[..1]).await.unwrap();
    drop(cap);

    let mut fresh = capture(&db);
    let removed = fresh.cleanup().await.unwrap();
    let j = &db.name;
    let mut want = vec![
        format!("trigger pontoon_{j}_items_del on items"),
        format!("trigger pontoon_{j}_items_ins on items"),
        format!("trigger pontoon_{j}_items_upd on items"),
        format!("trigger pontoon_{j}_orders_del on orders"),
        format!("trigger pontoon_{j}_orders_ins on orders"),
        format!("trigger pontoon_{j}_orders_upd on orders"),
        format!("table pontoon_log_{j}"),
    ];
    want.sort();
    let mut got = removed.clone();
    got.sort();
    assert_eq!(got, want);
    let left = db.sql(&format!(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{j}' ORDER BY 1;
         SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{j}' ORDER BY 1"
    ));
    assert_eq!(
        left,
        format!(
            "pontoon_{j}_x_orders_del\npontoon_{j}_x_orders_ins\npontoon_{j}_x_orders_upd\nitems\norders\npontoon_log_{j}_x"
        )
    );
    assert_eq!(fresh.cleanup().await.unwrap(), Vec::<String>::new());
    assert_eq!(other_cap.cleanup().await.unwrap().len(), 4);
}

/// A renamed table takes its triggers along: the capture reports the old name as
/// dropped, and cleanup still finds the triggers (by the job in their body), so no
/// trigger is left to fail the application's writes once the log table is gone.
#[tokio::test]
async fn cleanup_finds_the_triggers_of_a_renamed_table() {
    let db = mysql_db();
    two_tables(&db);
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "orders").await]).await.unwrap();
    db.sql("RENAME TABLE orders TO orders_old");
    let (_, batch) = read_until_ddl(cap.as_mut(), &p0).await;
    assert_eq!(batch.ddl.unwrap().statement, "DROP TABLE `orders`");
    let removed = capture(&db).cleanup().await.unwrap();
    assert_eq!(removed.len(), 4, "{removed:?}");
    assert!(removed.contains(&format!("trigger pontoon_{}_orders_ins on orders_old", db.name)), "{removed:?}");
    db.sql("INSERT INTO orders_old VALUES (1, 'still writable')");
    assert_eq!(
        db.sql(&format!("SELECT count(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{}'", db.name)),
        "0"
    );
}

/// Changes in another database of the same server, to a table of the same name with
/// the same job name, are not reported.
#[tokio::test]
async fn changes_in_another_database_are_not_reported() {
    let db = mysql_db();
    let other = mysql_db();
    two_tables(&db);
    two_tables(&other);
    let spec = spec(&db);
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "orders").await]).await.unwrap();
    let mut other_cap = connector(&other).capture(&spec).unwrap();
    other_cap.start(&[captured(&other, "orders").await]).await.unwrap();
    other.sql("INSERT INTO orders VALUES (1, 'elsewhere')");
    db.sql("INSERT INTO orders VALUES (2, 'here')");
    let (events, at) = read_events(cap.as_mut(), &p0, 1).await;
    assert_eq!(events, vec![ev("orders", vec![int(2)], ChangeOp::Insert)]);
    read_nothing(cap.as_mut(), &at).await;
    cap.cleanup().await.unwrap();
    other_cap.cleanup().await.unwrap();
}

/// The backlog counts log rows not yet returned; a batch limit is honored.
#[tokio::test]
async fn backlog_counts_rows_not_yet_read() {
    let db = mysql_db();
    two_tables(&db);
    let mut cap = capture(&db);
    let p0 = cap.start(&[captured(&db, "orders").await]).await.unwrap();
    assert_eq!(cap.backlog(&p0).await.unwrap().events, Some(0));
    db.sql("INSERT INTO orders SELECT seq, 'x' FROM seq_1_to_250");
    assert_eq!(cap.backlog(&p0).await.unwrap().events, Some(250));
    let deadline = Instant::now() + Duration::from_secs(10);
    let batch = loop {
        let b = cap.read(&p0, 100, Duration::from_millis(300)).await.unwrap();
        if !b.events.is_empty() || Instant::now() > deadline {
            break b;
        }
    };
    assert_eq!(batch.events.len(), 100);
    assert_eq!(batch.events[0], ev("orders", vec![int(1)], ChangeOp::Insert));
    assert_eq!(cap.backlog(&batch.position).await.unwrap().events, Some(150));
    cap.release(&batch.position).await.unwrap();
    assert_eq!(cap.backlog(&batch.position).await.unwrap().events, Some(150));
    let (rest, _) = read_events(cap.as_mut(), &batch.position, 150).await;
    assert_eq!(rest.len(), 150);
    assert_eq!(rest[0], ev("orders", vec![int(101)], ChangeOp::Insert));
    cap.cleanup().await.unwrap();
}
