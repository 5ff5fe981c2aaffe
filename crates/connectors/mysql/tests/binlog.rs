//! MariaDB native capture (the row binlog) against a real MariaDB 10.11: the shared test
//! server (ROW binlog, FULL images, shared by every test database, so each test checks
//! that it sees its own database only) and private servers for global settings.

use std::time::{Duration, Instant};

use pontoon_core::capture::{Capture, CaptureBatch, CaptureMode, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp};
use pontoon_core::{
    ColumnType, Connector, ErrorKind, KeyRange, Position, ScanSpec, SecretUrl, SelectExpr, SelectItem, Value,
};
use pontoon_mysql::MysqlConnector;
use pontoon_testsupport::{BusyCpu, MariaDbServer, TestDb, mysql_db};

fn connector(db: &TestDb) -> MysqlConnector {
    MysqlConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL")
}

/// A job id unique to the test database.
fn job(db: &TestDb) -> String {
    db.name.to_ascii_lowercase().chars().take(40).collect()
}

fn native(db: &TestDb) -> Box<dyn Capture> {
    connector(db).capture(&CaptureSpec { mode: CaptureMode::Native, job: job(db) }).expect("native capture")
}

/// Capture tables keyed by their primary keys, typed as the reader describes them.
async fn tables(db: &TestDb, names: &[&str]) -> Vec<CaptureTable> {
    let mut reader = connector(db).reader().await.unwrap();
    let mut out = Vec::new();
    for name in names {
        let schema = reader.describe(name).await.unwrap().unwrap_or_else(|| panic!("table {name}"));
        let key_types = schema.primary_key.iter().map(|k| schema.column(k).expect("key column").ty.clone()).collect();
        out.push(CaptureTable { table: name.to_string(), key: schema.primary_key.clone(), key_types });
    }
    out
}

/// The binlog's end now, as the server says.
fn master(db: &TestDb) -> Position {
    let out = db.server().admin_sql("SHOW MASTER STATUS");
    let mut cells = out.lines().last().expect("a status row").split('\t');
    let file = cells.next().unwrap().to_string();
    let offset = cells.next().unwrap().parse().unwrap();
    Position::Binlog { file, offset }
}

fn is_after(a: &Position, b: &Position) -> bool {
    a.compare(b).expect("binlog positions") == std::cmp::Ordering::Greater
}

/// Reads from `from` until `want` events arrived (at most 30 s), in batches of at most
/// `max_events`; checks that no batch position moves backward and that none holds a DDL.
/// Returns the non-empty batches and the last position.
async fn batches(
    cap: &mut dyn Capture,
    from: &Position,
    want: usize,
    max_events: usize,
) -> (Vec<CaptureBatch>, Position) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at = from.clone();
    let mut got = Vec::new();
    let mut count = 0;
    while count < want {
        assert!(Instant::now() < deadline, "only {count} of {want} events arrived: {got:?}");
        let batch = cap.read(&at, max_events, Duration::from_millis(500)).await.unwrap();
        assert!(batch.ddl.is_none(), "unexpected DDL: {:?}", batch.ddl);
        at.advance_to(batch.position.clone()).expect("positions never move backward");
        if !batch.events.is_empty() {
            count += batch.events.len();
            got.push(batch);
        }
    }
    (got, at)
}

async fn events(cap: &mut dyn Capture, from: &Position, want: usize) -> (Vec<ChangeEvent>, Position) {
    let (got, at) = batches(cap, from, want, 10_000).await;
    (got.into_iter().flat_map(|b| b.events).collect(), at)
}

fn ev(table: &str, key: Vec<Value>, op: ChangeOp) -> ChangeEvent {
    ChangeEvent { table: table.to_string(), key, op }
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Nothing more arrives from `from` within a second (other databases' changes only move
/// the position).
async fn assert_quiet(cap: &mut dyn Capture, from: &Position) -> Position {
    let mut at = from.clone();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let batch = cap.read(&at, 100, Duration::from_millis(300)).await.unwrap();
        assert!(batch.events.is_empty() && batch.ddl.is_none(), "unexpected: {batch:?}");
        at.advance_to(batch.position).unwrap();
    }
    at
}

#[tokio::test]
async fn changes_arrive_whole_transactions_in_commit_order_with_their_keys() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note varchar(20));
         CREATE TABLE order_lines (code varchar(20), n int, qty int, PRIMARY KEY (code, n));",
    );
    let mut cap = native(&db);
    let t = tables(&db, &["orders", "order_lines"]).await;
    cap.preflight(&t, 3600).await.unwrap();
    let p0 = cap.start(&t).await.unwrap();
    let before = now_micros();
    db.sql(
        "INSERT INTO orders VALUES (1, 'a'), (2, 'b');
         BEGIN; INSERT INTO order_lines VALUES ('x', 1, 5), ('Y ', 2, 6); UPDATE orders SET note = 'c' WHERE id = 1; COMMIT;
         UPDATE orders SET id = 3 WHERE id = 2;
         UPDATE order_lines SET n = 7 WHERE code = 'x';
         DELETE FROM order_lines WHERE code = 'Y ';
         DELETE FROM orders WHERE id = 1;",
    );
    let backlog = cap.backlog(&p0).await.unwrap();
    assert!(backlog.bytes.unwrap() > 0, "{backlog:?}");

    // one transaction per batch with max_events = 1
    let (got, end) = batches(cap.as_mut(), &p0, 11, 1).await;
    use ChangeOp::*;
    let expected = vec![
        vec![ev("orders", vec![int(1)], Insert), ev("orders", vec![int(2)], Insert)],
        vec![
            ev("order_lines", vec![text("x"), int(1)], Insert),
            ev("order_lines", vec![text("Y "), int(2)], Insert),
            ev("orders", vec![int(1)], Update),
        ],
        vec![ev("orders", vec![int(2)], Delete), ev("orders", vec![int(3)], Update)],
        vec![ev("order_lines", vec![text("x"), int(1)], Delete), ev("order_lines", vec![text("x"), int(7)], Update)],
        vec![ev("order_lines", vec![text("Y "), int(2)], Delete)],
        vec![ev("orders", vec![int(1)], Delete)],
    ];
    let got_events: Vec<Vec<ChangeEvent>> = got.iter().map(|b| b.events.clone()).collect();
    assert_eq!(got_events, expected);
    for b in &got {
        let at = b.committed_at_micros.expect("commit time");
        assert!((at - before).abs() < 120_000_000, "commit time {at} far from now {before}");
    }
    assert!(cap.backlog(&end).await.unwrap().bytes.unwrap() <= backlog.bytes.unwrap());

    // released changes are not read again; nothing else comes
    cap.release(&end).await.unwrap();
    let idle = Instant::now();
    let batch = cap.read(&end, 100, Duration::from_millis(300)).await.unwrap();
    assert!(batch.events.is_empty(), "{batch:?}");
    assert!(idle.elapsed() < Duration::from_secs(5), "an idle read took {:?}", idle.elapsed());
    assert!(!is_after(&end, &batch.position));

    // nothing installed, nothing to remove
    assert_eq!(cap.cleanup().await.unwrap(), Vec::<String>::new());
    assert_eq!(cap.cleanup().await.unwrap(), Vec::<String>::new());
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

#[tokio::test]
async fn rolled_back_changes_are_not_delivered() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    let mut cap = native(&db);
    let t = tables(&db, &["orders"]).await;
    let p0 = cap.start(&t).await.unwrap();
    db.sql(
        "BEGIN; INSERT INTO orders VALUES (10); ROLLBACK;
         INSERT INTO orders VALUES (11);
         BEGIN; INSERT INTO orders VALUES (12); SAVEPOINT s; INSERT INTO orders VALUES (13);
         ROLLBACK TO SAVEPOINT s; COMMIT;",
    );
    let (got, end) = events(cap.as_mut(), &p0, 2).await;
    assert_eq!(got, vec![ev("orders", vec![int(11)], ChangeOp::Insert), ev("orders", vec![int(12)], ChangeOp::Insert)]);
    assert_quiet(cap.as_mut(), &end).await;
}

#[tokio::test]
async fn changes_in_another_database_are_not_reported_but_move_the_position() {
    let db = mysql_db();
    let other = mysql_db();
    for d in [&db, &other] {
        d.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    }
    let mut cap = native(&db);
    let t = tables(&db, &["orders"]).await;
    let p0 = cap.start(&t).await.unwrap();
    other.sql("INSERT INTO orders VALUES (1), (2); UPDATE orders SET id = 3 WHERE id = 2; DELETE FROM orders;");
    let after_other = master(&db);
    // the position passes the other database's transactions without delivering them
    let mut at = p0.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_after(&after_other, &at) {
        assert!(Instant::now() < deadline, "the position stayed at {at}, before {after_other}");
        let batch = cap.read(&at, 100, Duration::from_millis(300)).await.unwrap();
        assert!(batch.events.is_empty(), "another database's changes were reported: {batch:?}");
        at.advance_to(batch.position).unwrap();
    }
    db.sql("INSERT INTO orders VALUES (7)");
    let (got, _) = events(cap.as_mut(), &at, 1).await;
    assert_eq!(got, vec![ev("orders", vec![int(7)], ChangeOp::Insert)]);
}

#[tokio::test]
async fn a_new_capture_reading_from_a_recorded_position_gets_the_changes_again() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    let t = tables(&db, &["orders"]).await;
    let mut first = native(&db);
    let p0 = first.start(&t).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1); INSERT INTO orders VALUES (2); INSERT INTO orders VALUES (3);");
    let (got, _) = batches(first.as_mut(), &p0, 3, 1).await;
    let after_first = got[0].position.clone();
    drop(first); // a crash

    let mut second = native(&db);
    second.start(&t).await.unwrap();
    let (again, _) = events(second.as_mut(), &after_first, 2).await;
    assert_eq!(again.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), vec![vec![int(2)], vec![int(3)]]);
    let (all, _) = events(second.as_mut(), &p0, 3).await;
    assert_eq!(all.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), vec![vec![int(1)], vec![int(2)], vec![int(3)]]);
}

#[tokio::test]
async fn the_position_follows_a_binlog_rotation() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    let t = tables(&db, &["orders"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1)");
    let (got, _) = batches(cap.as_mut(), &p0, 1, 1).await;
    let after_one = got[0].position.clone();
    db.server().admin_sql("FLUSH BINARY LOGS");
    db.sql("INSERT INTO orders VALUES (2)");
    let (got, end) = events(cap.as_mut(), &after_one, 1).await;
    assert_eq!(got, vec![ev("orders", vec![int(2)], ChangeOp::Insert)]);
    let (Position::Binlog { file: f0, .. }, Position::Binlog { file: f1, .. }) = (&p0, &end) else { unreachable!() };
    assert_ne!(f0, f1, "the position is still in the file before the rotation");
    assert!(is_after(&end, &after_one));

    // a fresh capture resumes from before the rotation, and from after it
    let mut again = native(&db);
    again.start(&t).await.unwrap();
    let (got, _) = events(again.as_mut(), &after_one, 1).await;
    assert_eq!(got, vec![ev("orders", vec![int(2)], ChangeOp::Insert)]);
    db.sql("INSERT INTO orders VALUES (3)");
    let (got, _) = events(again.as_mut(), &end, 1).await;
    assert_eq!(got, vec![ev("orders", vec![int(3)], ChangeOp::Insert)]);
}

#[tokio::test]
async fn a_ddl_on_a_captured_table_ends_the_batch_before_it() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE notes (id int PRIMARY KEY)");
    let t = tables(&db, &["orders"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    db.sql(
        "INSERT INTO orders VALUES (1);
         ALTER TABLE notes ADD COLUMN x int; CREATE TABLE more (id int PRIMARY KEY); DROP TABLE more;
         INSERT INTO orders VALUES (2);
         ALTER TABLE orders ADD COLUMN note varchar(10);
         INSERT INTO orders VALUES (3, 'x');",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at = p0.clone();
    let mut seen = Vec::new();
    let ddl = loop {
        assert!(Instant::now() < deadline, "no DDL after {seen:?}");
        let batch = cap.read(&at, 100, Duration::from_millis(500)).await.unwrap();
        at.advance_to(batch.position.clone()).unwrap();
        seen.extend(batch.events.iter().map(|e| e.key.clone()));
        if let Some(ddl) = batch.ddl {
            assert_eq!(ddl.position, batch.position);
            break ddl;
        }
    };
    assert_eq!(seen, vec![vec![int(1)], vec![int(2)]], "the events before the DDL, none after it");
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.contains("ADD COLUMN note"), "{}", ddl.statement);
    // read again from there: the DDL again, nothing past it
    let again = cap.read(&at, 100, Duration::from_secs(2)).await.unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.ddl.map(|d| d.table), Some("orders".to_string()));
}

#[tokio::test]
async fn a_truncate_of_a_qualified_name_from_another_default_database_is_a_ddl() {
    let db = mysql_db();
    db.sql("CREATE TABLE `Order Lines` (id int PRIMARY KEY)");
    let t = tables(&db, &["Order Lines"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    db.sql(&format!("USE mysql; TRUNCATE TABLE `{}`.`Order Lines`", db.name));
    let batch = cap.read(&p0, 100, Duration::from_secs(5)).await.unwrap();
    let ddl = batch.ddl.expect("TRUNCATE is a DDL");
    assert_eq!(ddl.table, "Order Lines");
    assert!(ddl.statement.to_ascii_uppercase().contains("TRUNCATE"));
}

#[tokio::test]
async fn a_change_logged_as_a_statement_is_refused_not_missed() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE notes (id int PRIMARY KEY)");
    let t = tables(&db, &["orders"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    // one session in STATEMENT format (the global setting stays ROW)
    db.sql(
        "INSERT INTO orders VALUES (1);
         SET SESSION binlog_format = 'STATEMENT'; INSERT INTO notes VALUES (1); INSERT INTO orders VALUES (2);",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at = p0;
    let mut seen = Vec::new();
    let e = loop {
        assert!(Instant::now() < deadline, "the statement-logged change passed unnoticed after {seen:?}");
        match cap.read(&at, 100, Duration::from_millis(500)).await {
            Ok(batch) => {
                seen.extend(batch.events.into_iter().map(|e| e.key));
                at.advance_to(batch.position).unwrap();
            }
            Err(e) => break e,
        }
    };
    assert_eq!(seen, vec![vec![int(1)]]);
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("table orders was logged as a statement"), "{e}");
}

/// Every key type: the capture's key values equal the reader's, so `fetch_keys` finds
/// them. Each table is keyed by one column `k` of the type; `wide` has one column of
/// every kind before its key, so every width of a row image is walked.
#[tokio::test]
async fn key_values_equal_what_the_reader_scans() {
    let db = mysql_db();
    let kinds: &[(&str, &str, &[&str])] = &[
        ("k_tiny", "tinyint", &["-128", "0", "127"]),
        ("k_utiny", "tinyint unsigned", &["0", "255"]),
        ("k_usmall", "smallint unsigned", &["65535", "1"]),
        ("k_med", "mediumint", &["-8388608", "8388607", "-1"]),
        ("k_umed", "mediumint unsigned", &["16777215"]),
        ("k_uint", "int unsigned", &["4294967295", "2147483648"]),
        ("k_big", "bigint", &["-9223372036854775808", "9223372036854775807"]),
        ("k_ubig", "bigint unsigned", &["18446744073709551615", "9223372036854775808", "1"]),
        ("k_bool", "tinyint(1)", &["0", "1"]),
        ("k_year", "year", &["2024", "1901", "2155", "0"]),
        ("k_dec", "decimal(20,4)", &["-1234567890.1234", "0", "0.5", "99.99", "-0.0001"]),
        (
            "k_dec65",
            "decimal(65,30)",
            &[
                "12345678901234567890123456789012345.123456789012345678901234567890",
                "-0.000000000000000000000000000001",
            ],
        ),
        ("k_double", "double", &["-1.5", "3.141592653589793", "1e300"]),
        ("k_float", "float", &["0.1", "-2.5"]),
        ("k_date", "date", &["'1000-01-01'", "'2024-02-29'", "'9999-12-31'"]),
        ("k_time", "time(6)", &["'-838:59:59.999999'", "'-00:00:00.000001'", "'12:34:56.789012'", "'838:59:59'"]),
        ("k_time2", "time(2)", &["'-01:02:03.45'", "'00:00:00.01'", "'-00:00:01.99'"]),
        ("k_time0", "time", &["'-12:00:00'", "'100:00:01'"]),
        ("k_dt", "datetime(6)", &["'1000-01-01 00:00:00'", "'2024-01-02 03:04:05.678901'"]),
        ("k_dt3", "datetime(3)", &["'2024-06-30 23:59:59.5'"]),
        ("k_dt0", "datetime", &["'2024-06-30 23:59:59'"]),
        ("k_ts", "timestamp(3)", &["'2024-01-02 03:04:05.678'", "'1970-01-02 00:00:01'"]),
        ("k_ts0", "timestamp", &["'2038-01-19 03:14:07'"]),
        ("k_char", "char(5)", &["'ab   '", "'x y'", "''"]),
        ("k_char255", "char(255)", &["'long'"]),
        ("k_varchar", "varchar(20)", &["'a '", "'A'", "'😀 é'"]),
        ("k_varchar300", "varchar(300)", &["REPEAT('é', 300)"]),
        ("k_latin", "varchar(10) CHARACTER SET latin1", &["'café'", "'€ ‰'"]),
        ("k_bin", "binary(4)", &["x'61'", "x'61620000'", "x'00000001'"]),
        ("k_varbin", "varbinary(8)", &["x'00'", "x'ff00'"]),
        ("k_uuid", "uuid", &["'6ba7b810-9dad-11d1-80b4-00c04fd430c8'", "'0f0e0d0c-0b0a-4908-8706-050403020100'"]),
        ("k_enum", "enum('x','y z','it''s')", &["'y z'", "'x'", "'it''s'"]),
        ("k_set", "set('a','b','c')", &["'a,c'", "'b'"]),
    ];
    let mut ddl = String::new();
    for (table, ty, _) in kinds {
        ddl.push_str(&format!("CREATE TABLE {table} (k {ty} NOT NULL PRIMARY KEY, extra int);\n"));
    }
    ddl.push_str(
        "CREATE TABLE wide (c1 tinyint, c2 varchar(300), c3 text, c4 decimal(30,10), c5 datetime(3),
           c6 timestamp(6) NULL, c7 time(4), c8 bit(10), c9 enum('a','b'), c10 set('x','y'), c11 json, c12 double,
           c13 float, c14 year, c15 date, c16 blob, c17 char(255), c18 mediumint unsigned, c19 uuid,
           c20 binary(3), c21 varchar(2) CHARACTER SET latin1, c22 longblob, c23 bigint,
           a varchar(10), b int, c date, PRIMARY KEY (a, b, c));
         CREATE TABLE comp (a varchar(10), b int unsigned, c datetime(6), PRIMARY KEY (a, b, c));",
    );
    db.sql(&ddl);
    let mut names: Vec<&str> = kinds.iter().map(|k| k.0).collect();
    names.push("comp");
    let mut t = tables(&db, &names).await;
    // the reader does not describe `bit` columns: the key of `wide` by hand
    t.push(CaptureTable {
        table: "wide".into(),
        key: vec!["a".into(), "b".into(), "c".into()],
        key_types: vec![ColumnType::Text { max_chars: Some(10) }, ColumnType::I32, ColumnType::Date],
    });
    let mut cap = native(&db);
    cap.preflight(&t, 60).await.unwrap();
    let p0 = cap.start(&t).await.unwrap();

    let mut dml = String::new();
    let mut rows = 0;
    for (table, _, values) in kinds {
        for v in *values {
            dml.push_str(&format!("INSERT INTO {table} (k) VALUES ({v});\n"));
            rows += 1;
        }
    }
    dml.push_str(
        "INSERT INTO wide VALUES
           (1, REPEAT('x', 300), 'text', -12345.6789, '2024-01-01 00:00:00.123', '2024-01-01 00:00:00.5',
            '-10:00:00.1234', b'1010101010', 'b', 'x,y', '{\"a\": 1}', 1.5, 2.5, 2024, '2024-01-01', x'0001',
            REPEAT('é', 255), 16777215, '6ba7b810-9dad-11d1-80b4-00c04fd430c8', x'01', 'é', REPEAT('z', 70000), -1,
            'w1', 1, '2024-01-01'),
           (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, 'w2', -2, '1999-12-31');
         UPDATE wide SET c1 = 5, b = b + 10;
         DELETE FROM wide WHERE a = 'w2';
         INSERT INTO comp VALUES ('x ', 4294967295, '2024-01-01 00:00:00.000001'), ('', 0, '1000-01-01');",
    );
    db.sql(&dml);
    // inserts, 2 wide inserts, 2 wide updates changing the key (4 events), 1 delete, 2 comp inserts
    let (got, _) = events(cap.as_mut(), &p0, rows + 2 + 4 + 1 + 2).await;

    let mut reader = connector(&db).reader().await.unwrap();
    for ct in &t {
        let spec = ScanSpec {
            table: ct.table.clone(),
            select: ct
                .key
                .iter()
                .zip(&ct.key_types)
                .map(|(k, ty)| SelectItem { expr: SelectExpr::Column(k.clone()), ty: ty.clone() })
                .collect(),
            key: ct.key.clone(),
            key_types: ct.key_types.clone(),
            filter: None,
            partition: None,
        };
        let scanned = reader.scan(&spec, &KeyRange::ALL).await.unwrap();
        let captured: Vec<&ChangeEvent> =
            got.iter().filter(|e| e.table == ct.table && e.op != ChangeOp::Delete).collect();
        for key in &scanned {
            assert!(
                captured.iter().any(|e| e.key == *key),
                "table {}: the reader's key {key:?} was not captured; captured: {captured:?}",
                ct.table
            );
        }
        if ct.table != "wide" {
            assert_eq!(captured.len(), scanned.len(), "table {}: {captured:?} vs {scanned:?}", ct.table);
        }
    }
    // the wide table: inserts, the key change as delete + update, the delete of the updated key
    let wide: Vec<(ChangeOp, Vec<Value>)> =
        got.iter().filter(|e| e.table == "wide").map(|e| (e.op, e.key.clone())).collect();
    let date = |s: &str| Value::Date(pontoon_core::value::parse_date(s).unwrap());
    use ChangeOp::*;
    assert_eq!(
        wide,
        vec![
            (Insert, vec![text("w1"), int(1), date("2024-01-01")]),
            (Insert, vec![text("w2"), int(-2), date("1999-12-31")]),
            (Delete, vec![text("w1"), int(1), date("2024-01-01")]),
            (Update, vec![text("w1"), int(11), date("2024-01-01")]),
            (Delete, vec![text("w2"), int(-2), date("1999-12-31")]),
            (Update, vec![text("w2"), int(8), date("1999-12-31")]),
            (Delete, vec![text("w2"), int(8), date("1999-12-31")]),
        ]
    );
}

#[tokio::test]
async fn a_large_transaction_arrives_whole_in_one_batch() {
    let db = mysql_db();
    db.sql("CREATE TABLE bulk (id int PRIMARY KEY, pad varchar(50), n bigint)");
    let t = tables(&db, &["bulk"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    let rows = 100_000;
    db.sql(&format!("INSERT INTO bulk SELECT seq, REPEAT('x', 40), seq * 7 FROM seq_1_to_{rows}"));
    let started = Instant::now();
    let (got, _) = batches(cap.as_mut(), &p0, rows, 1000).await;
    let elapsed = started.elapsed();
    assert_eq!(got.len(), 1, "the transaction was split into {} batches", got.len());
    assert_eq!(got[0].events.len(), rows);
    assert_eq!(got[0].events[0].key, vec![int(1)]);
    assert_eq!(got[0].events[rows - 1].key, vec![int(rows as i64)]);
    eprintln!(
        "{rows} row events read and decoded in {elapsed:?} ({:.0} events/s)",
        rows as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn an_empty_read_means_the_stream_has_passed_everything_committed_before_it() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, note varchar(40))");
    db.sql("CREATE TABLE other (id int PRIMARY KEY, pad varchar(200))");
    let t = tables(&db, &["orders"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    // tens of megabytes of another table's rows for the dump thread to send first,
    // then the change that counts
    db.sql("INSERT INTO other SELECT seq, REPEAT('x', 200) FROM seq_1_to_300000");
    db.sql("INSERT INTO orders VALUES (1, 'after the bulk load')");
    let mut at = p0;
    let mut got = Vec::new();
    let started = Instant::now();
    loop {
        let batch = cap.read(&at, 1000, Duration::from_millis(1)).await.unwrap();
        at.advance_to(batch.position).unwrap();
        if batch.events.is_empty() {
            break;
        }
        got.extend(batch.events);
        assert!(started.elapsed() < Duration::from_secs(60), "no end after a minute");
    }
    assert_eq!(
        got,
        [ev("orders", vec![int(1)], ChangeOp::Insert)],
        "a read came back empty before the change committed ahead of it"
    );
}

#[tokio::test]
async fn preflight_refuses_tables_without_a_usable_key() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE nokey (a int, b text);
         CREATE TABLE nullable_unique (a int NULL UNIQUE, b int);
         CREATE TABLE unique_not_null (a int NOT NULL UNIQUE, b int);",
    );
    let int_key =
        |name: &str| CaptureTable { table: name.to_string(), key: vec!["a".into()], key_types: vec![ColumnType::I32] };
    let mut cap = native(&db);
    let e = cap
        .preflight(&[int_key("nokey"), int_key("nullable_unique"), int_key("unique_not_null"), int_key("gone")], 60)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    assert!(msg.contains("table nokey has no primary key"), "{msg}");
    assert!(msg.contains("table nullable_unique has no primary key"), "{msg}");
    assert!(msg.contains("table gone does not exist"), "{msg}");
    assert!(!msg.contains("unique_not_null"), "{msg}");
    // the shared server's settings and the test user's privileges pass
    assert!(!msg.contains("binlog_format") && !msg.contains("privilege"), "{msg}");
    cap.preflight(&[int_key("unique_not_null")], 1_000_000).await.unwrap();
}

/// Drops a user when the test ends, even when it fails.
struct DropUser<'a>(&'a TestDb, String);

impl Drop for DropUser<'_> {
    fn drop(&mut self) {
        let _ = self.0.server().try_admin_sql(&format!("DROP USER IF EXISTS '{}'@'%'", self.1));
    }
}

#[tokio::test]
async fn preflight_refuses_a_user_without_replication_privileges() {
    let db = mysql_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    let user = format!("u{}", db.name.chars().rev().take(20).collect::<String>());
    let _drop = DropUser(&db, user.clone());
    db.server().admin_sql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'secret-pw'; GRANT SELECT ON `{}`.* TO '{user}'@'%'",
        db.name
    ));
    let url = format!("mysql://{user}:secret-pw@127.0.0.1:{}/{}", db.server().port, db.name);
    let restricted = MysqlConnector::new(&SecretUrl::new(url)).unwrap();
    let mut cap = restricted.capture(&CaptureSpec { mode: CaptureMode::Native, job: job(&db) }).unwrap();
    let t = tables(&db, &["orders"]).await;
    let e = cap.preflight(&t, 60).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    assert!(msg.contains(&format!("'{user}'@'%' lacks the REPLICATION SLAVE privilege")), "{msg}");
    assert!(msg.contains("lacks the BINLOG MONITOR privilege"), "{msg}");
    assert!(!msg.contains("secret-pw"), "{msg}");
    let e = cap.start(&t).await.unwrap_err();
    assert!(e.to_string().contains("BINLOG MONITOR"), "{e}");
}

/// Global settings on a private server: every refusal at once, then a server without a
/// binlog.
#[tokio::test]
async fn preflight_names_every_wrong_server_setting_at_once() {
    let server = MariaDbServer::start_private();
    let db = server.create_db();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    server.info().admin_sql(
        "SET GLOBAL binlog_format = 'STATEMENT'; SET GLOBAL binlog_row_image = 'MINIMAL';
         SET GLOBAL binlog_expire_logs_seconds = 3600; SET GLOBAL log_bin_compress = ON;",
    );
    let t = tables(&db, &["orders"]).await;
    let mut cap = native(&db);
    let e = cap.preflight(&t, 7200).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    for expected in [
        "binlog_format is STATEMENT",
        "binlog_row_image is MINIMAL",
        "log_bin_compress is ON",
        "binlog_expire_logs_seconds is 3600",
    ] {
        assert!(msg.contains(expected), "{expected:?} missing from: {msg}");
    }
    assert!(!msg.contains("log_bin is OFF"), "{msg}");
    // a retention longer than the copy is fine
    server.info().admin_sql(
        "SET GLOBAL binlog_format = 'ROW'; SET GLOBAL binlog_row_image = 'FULL'; SET GLOBAL log_bin_compress = OFF;",
    );
    let mut cap = native(&db);
    cap.preflight(&t, 600).await.unwrap();

    // no binlog at all
    server.stop();
    let cnf = server.info().dir.join("my.cnf");
    let mut text = std::fs::read_to_string(&cnf).unwrap();
    text.push_str("skip-log-bin\n");
    std::fs::write(&cnf, text).unwrap();
    server.start();
    let mut cap = native(&db);
    let e = cap.preflight(&t, 600).await.unwrap_err();
    assert!(e.to_string().contains("log_bin is OFF"), "{e}");
    let e = cap.start(&t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("log_bin is OFF"), "{e}");
}

/// MariaDB writes a transaction to the binlog (and may send it to us) before InnoDB makes
/// it visible. The sync re-reads every key it is told about at once, so a re-read must
/// not see the row as it was before the change: an insert just reported must be found,
/// a delete just reported must be gone. Many concurrent writers and busy CPUs (the
/// group commit leader preempted between the two steps) widen the window; without the
/// locking re-read, this test saw stale rows in half of its runs.
#[tokio::test]
async fn a_change_read_from_the_binlog_is_seen_by_an_immediate_reread() {
    use mysql_async::prelude::Queryable;
    let db = mysql_db();
    db.sql("CREATE TABLE t (id bigint PRIMARY KEY, v int)");
    let t = tables(&db, &["t"]).await;
    let mut cap = native(&db);
    let p0 = cap.start(&t).await.unwrap();
    let scan = ScanSpec {
        table: "t".into(),
        select: vec![SelectItem { expr: SelectExpr::Column("id".into()), ty: ColumnType::I64 }],
        key: vec!["id".into()],
        key_types: vec![ColumnType::I64],
        filter: None,
        partition: None,
    };
    let mut reader = connector(&db).reader().await.unwrap();

    const WRITERS: i64 = 16;
    const ROWS: i64 = 600;
    let _busy = BusyCpu::start(4);
    let pool = mysql_async::Pool::new(db.url.as_str());
    let mut stale = Vec::new();
    let mut at = p0;
    // all inserts, then (once every insert was read) all deletes: a row found or
    // missing can then only be older than the event, never newer
    for sql in ["INSERT INTO t VALUES (?, 0)", "DELETE FROM t WHERE id = ?"] {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let pool = pool.clone();
            writers.push(tokio::spawn(async move {
                let mut conn = pool.get_conn().await.unwrap();
                for i in 0..ROWS {
                    conn.exec_drop(sql, (w * 1_000_000 + i,)).await.unwrap();
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        while seen < (WRITERS * ROWS) as usize {
            assert!(Instant::now() < deadline, "only {seen} events arrived");
            let batch = cap.read(&at, 50, Duration::from_millis(20)).await.unwrap();
            at.advance_to(batch.position.clone()).unwrap();
            seen += batch.events.len();
            let keys: Vec<Vec<Value>> = batch.events.iter().map(|e| e.key.clone()).collect();
            let found = reader.fetch_keys(&scan, &keys).await.unwrap();
            for e in &batch.events {
                if (e.op == ChangeOp::Delete) == found.iter().any(|r| r[0] == e.key[0]) {
                    stale.push((e.key[0].clone(), e.op));
                }
            }
        }
        for w in writers {
            w.await.unwrap();
        }
    }
    pool.disconnect().await.unwrap();
    assert!(
        stale.is_empty(),
        "{} re-reads saw the row as it was before the reported change: {:?}",
        stale.len(),
        &stale[..stale.len().min(10)]
    );
}
