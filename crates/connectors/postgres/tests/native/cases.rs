// The native capture's tests, included by `wal2json.rs` and `pgoutput.rs`, which set
// `PLUGIN`: the output plugin a new slot decodes with.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pontoon_core::capture::{Capture, CaptureMode, CaptureSpec, CaptureTable, ChangeEvent, ChangeOp, DdlEvent};
use pontoon_core::{
    Connector, ErrorKind, KeyRange, Position, Reader, ScanSpec, SecretUrl, SelectExpr, SelectItem, Value,
};
use pontoon_postgres::{PgConnector, Plugin, LogicalCapture};
use pontoon_testsupport::{BusyCpu, PgServer, TestDb, pg_db};

fn connector(url: &str) -> PgConnector {
    PgConnector::new(&SecretUrl::new(url)).expect("valid URL")
}

/// The job of a test: its database's name (unique, `[a-z0-9_]`).
fn job_of(db: &TestDb) -> String {
    db.name.to_lowercase()
}

fn capture(db: &TestDb) -> LogicalCapture {
    LogicalCapture::new(connector(&db.url), job_of(db)).with_plugin(PLUGIN)
}

fn slot_of(db: &TestDb) -> String {
    format!("pontoon_{}", job_of(db))
}

/// Drops the test's slot when the test ends, passed or failed: a forgotten slot
/// holds WAL on the shared server.
struct SlotGuard<'a>(&'a TestDb);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_sql(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'",
            slot_of(self.0)
        ));
    }
}

/// Capture descriptions of tables as the reader describes them (key = primary key).
async fn tables(db: &TestDb, names: &[&str]) -> Vec<CaptureTable> {
    let mut reader = connector(&db.url).connect_reader().await.expect("reader connects");
    let mut out = Vec::new();
    for name in names {
        let schema = reader.describe(name).await.expect("describe").expect("table exists");
        let key_types = schema.primary_key.iter().map(|k| schema.column(k).expect("key column").ty.clone()).collect();
        out.push(CaptureTable { table: name.to_string(), key: schema.primary_key.clone(), key_types });
    }
    out
}

fn lsn(p: &Position) -> u64 {
    match p {
        Position::PgLsn { lsn } => *lsn,
        other => panic!("not an LSN: {other}"),
    }
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

/// What a run of reads collected.
#[derive(Debug)]
struct Collected {
    events: Vec<ChangeEvent>,
    position: Position,
    ddl: Option<DdlEvent>,
    committed_at_micros: Option<i64>,
}

/// Reads from `from`, each read from the position the last one returned, until
/// `enough` holds for the events so far or a DDL arrives (15 s at most). Checks that
/// positions never move backward.
async fn read_until(
    cap: &mut dyn Capture,
    from: &Position,
    max_events: usize,
    enough: impl Fn(&[ChangeEvent]) -> bool,
) -> Collected {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Collected { events: Vec::new(), position: from.clone(), ddl: None, committed_at_micros: None };
    loop {
        let batch = cap.read(&got.position, max_events, Duration::from_millis(500)).await.expect("read");
        assert!(lsn(&batch.position) >= lsn(&got.position), "position moved backward: {batch:?}");
        got.events.extend(batch.events);
        got.position = batch.position;
        got.committed_at_micros = batch.committed_at_micros.or(got.committed_at_micros);
        if batch.ddl.is_some() {
            got.ddl = batch.ddl;
            return got;
        }
        if enough(&got.events) {
            return got;
        }
        assert!(Instant::now() < deadline, "timed out waiting for changes; got {:?}", got.events);
    }
}

fn at_least(n: usize) -> impl Fn(&[ChangeEvent]) -> bool {
    move |events: &[ChangeEvent]| events.len() >= n
}

fn slot_rows(db: &TestDb) -> String {
    db.sql(&format!("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '{}%'", slot_of(db)))
}

fn setup_orders_and_lines(db: &TestDb) {
    db.sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text); \
         CREATE TABLE lines (region text, n int, qty int, PRIMARY KEY (region, n));",
    );
}

#[tokio::test]
async fn changes_arrive_in_commit_order_with_their_keys() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    // through the connector, as the engine builds it
    let spec = CaptureSpec { mode: CaptureMode::Native, job: job_of(&db) };
    let mut cap = connector(&db.url).capture(&spec).expect("native capture");
    let t = tables(&db, &["orders", "lines"]).await;
    cap.preflight(&t, 1).await.expect("preflight passes");
    let p0 = cap.start(&t).await.expect("start");
    assert_eq!(cap.start(&t).await.expect("second start"), p0, "a second start reuses the slot");

    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    db.sql(
        "INSERT INTO orders VALUES (1, 'a'), (2, 'b'); \
         INSERT INTO lines VALUES ('eu', 1, 5), ('É''s 😀 ', 2, 6); \
         UPDATE orders SET note = 'c' WHERE id = 1; \
         UPDATE orders SET id = 20 WHERE id = 2; \
         UPDATE lines SET n = 3 WHERE region = 'eu'; \
         DELETE FROM orders WHERE id = 1; \
         BEGIN; INSERT INTO orders VALUES (99, 'x'); DELETE FROM lines; ROLLBACK; \
         INSERT INTO orders VALUES (3, 'd');",
    );
    let got = read_until(cap.as_mut(), &p0, 1000, at_least(11)).await;
    let eu = |n| vec![text("eu"), int(n)];
    assert_eq!(
        got.events,
        [
            ev("orders", vec![int(1)], ChangeOp::Insert),
            ev("orders", vec![int(2)], ChangeOp::Insert),
            ev("lines", eu(1), ChangeOp::Insert),
            ev("lines", vec![text("É's 😀 "), int(2)], ChangeOp::Insert),
            ev("orders", vec![int(1)], ChangeOp::Update),
            ev("orders", vec![int(2)], ChangeOp::Delete),
            ev("orders", vec![int(20)], ChangeOp::Update),
            ev("lines", eu(1), ChangeOp::Delete),
            ev("lines", eu(3), ChangeOp::Update),
            ev("orders", vec![int(1)], ChangeOp::Delete),
            ev("orders", vec![int(3)], ChangeOp::Insert),
        ]
    );
    assert!(got.ddl.is_none());
    assert!(lsn(&got.position) > lsn(&p0));
    let committed = got.committed_at_micros.expect("commit time");
    assert!((committed - before).abs() < 60_000_000, "commit time {committed} is not near {before}");

    // nothing more: the rolled-back transaction left nothing behind
    let idle = cap.read(&got.position, 1000, Duration::from_millis(300)).await.unwrap();
    assert!(idle.events.is_empty(), "{idle:?}");
    assert!(lsn(&idle.position) >= lsn(&got.position));
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn key_values_equal_what_the_reader_reads() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    db.sql(
        "CREATE TABLE k (n numeric, b bytea, d date, ts timestamp, tz timestamptz, u uuid, t text, tm time, \
            c char(4), s smallint, f float8, r real, bo bool, v varchar(10), \
            PRIMARY KEY (n, b, d, ts, tz, u, t, tm, c, s, f, r, bo, v)); \
         CREATE TABLE special (n numeric PRIMARY KEY, note text);",
    );
    let mut cap = capture(&db);
    let t = tables(&db, &["k", "special"]).await;
    let p0 = cap.start(&t).await.unwrap();
    db.sql(
        "INSERT INTO k VALUES \
           (12345678901234567890.123456789012, '\\x00ff10', '0044-03-15 BC', '2024-01-02 03:04:05.123456', \
            '2024-01-02 03:04:05.123456+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'it''s \"q\" \\ é 😀', \
            '24:00:00', 'ab', -32768, 0.1, 3.4e38, true, 'x'), \
           (1.50, '', '10000-01-01', '0001-01-01 00:00:00 BC', '1969-12-31 23:59:59.999999+00', \
            '00000000-0000-0000-0000-000000000000', '', '00:00:00.000001', 'x', 1, '-0', 1e-45, false, ''), \
           (-0.001, '\\x', '1970-01-01', '1970-01-01 00:00:00', '0001-01-01 00:00:00+00 BC', \
            'ffffffff-ffff-ffff-ffff-ffffffffffff', E'tab\\there\\nnewline', '12:34:56.5', 'abcd', 32767, \
            1e300, -1.5, true, 'ünïcödé'); \
         INSERT INTO special VALUES ('NaN', 'a'), ('Infinity', 'b'), ('-Infinity', 'c'), (0, 'd'); \
         DELETE FROM k;",
    );
    // 3 inserts and 3 deletes in k; special: NaN and the infinities (wal2json prints
    // them as null: 3 candidates each), and 0
    let special = if PLUGIN == Plugin::Wal2Json { 9 } else { 3 };
    let got = read_until(&mut cap, &p0, 1000, at_least(6 + special + 1)).await;

    let mut reader = connector(&db.url).connect_reader().await.unwrap();
    // the rows are gone from k; compare with what the reader reads after putting them back
    db.sql(
        "INSERT INTO k VALUES \
           (12345678901234567890.123456789012, '\\x00ff10', '0044-03-15 BC', '2024-01-02 03:04:05.123456', \
            '2024-01-02 03:04:05.123456+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'it''s \"q\" \\ é 😀', \
            '24:00:00', 'ab', -32768, 0.1, 3.4e38, true, 'x'), \
           (1.50, '', '10000-01-01', '0001-01-01 00:00:00 BC', '1969-12-31 23:59:59.999999+00', \
            '00000000-0000-0000-0000-000000000000', '', '00:00:00.000001', 'x', 1, '-0', 1e-45, false, ''), \
           (-0.001, '\\x', '1970-01-01', '1970-01-01 00:00:00', '0001-01-01 00:00:00+00 BC', \
            'ffffffff-ffff-ffff-ffff-ffffffffffff', E'tab\\there\\nnewline', '12:34:56.5', 'abcd', 32767, \
            1e300, -1.5, true, 'ünïcödé');",
    );
    for ct in &t {
        let describe = reader.describe(&ct.table).await.unwrap().unwrap();
        let spec = ScanSpec {
            table: ct.table.clone(),
            select: ct
                .key
                .iter()
                .map(|k| SelectItem { expr: SelectExpr::Column(k.clone()), ty: describe.column(k).unwrap().ty.clone() })
                .collect(),
            key: ct.key.clone(),
            key_types: ct.key_types.clone(),
            filter: None,
            partition: None,
        };
        let scanned: Vec<Vec<Value>> = reader.scan(&spec, &KeyRange::ALL).await.unwrap();
        let captured: Vec<Vec<Value>> =
            got.events.iter().filter(|e| e.table == ct.table).map(|e| e.key.clone()).collect();
        // every key the reader reads is among the captured keys, value for value
        for row in &scanned {
            assert!(captured.contains(row), "{}: the reader's key {row:?} was not captured: {captured:?}", ct.table);
        }
        // and the captured keys find the rows through fetch_keys
        let fetched = reader.fetch_keys(&spec, &captured).await.expect("fetch_keys");
        assert_eq!(fetched.len(), scanned.len(), "{}: fetch_keys by captured keys", ct.table);
    }
    let k_events: Vec<&ChangeEvent> = got.events.iter().filter(|e| e.table == "k").collect();
    assert_eq!(k_events.len(), 6);
    assert_eq!(k_events.iter().filter(|e| e.op == ChangeOp::Delete).count(), 3);
    // the deletes carry the same keys as the inserts
    let inserted: Vec<&Vec<Value>> = k_events[..3].iter().map(|e| &e.key).collect();
    let deleted: Vec<&Vec<Value>> = k_events[3..].iter().map(|e| &e.key).collect();
    for key in &deleted {
        assert!(inserted.contains(key), "{key:?}");
    }
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_restarted_capture_reuses_its_slot_and_delivers_again() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut first = capture(&db);
    let p0 = first.start(&t).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1, 'a'); INSERT INTO orders VALUES (2, 'b');");
    let got = read_until(&mut first, &p0, 1000, at_least(2)).await;
    let p1 = got.position.clone();
    drop(first); // a crash: nothing released

    db.sql("INSERT INTO orders VALUES (3, 'c');");
    let mut second = capture(&db);
    let again = second.start(&t).await.unwrap();
    assert_eq!(slot_rows(&db), slot_of(&db), "the slot is reused, not duplicated");
    assert_eq!(again, p0, "nothing was released, so the slot is still at P0");

    let all = read_until(&mut second, &p0, 1000, at_least(3)).await;
    let ids: Vec<Vec<Value>> = all.events.iter().map(|e| e.key.clone()).collect();
    assert_eq!(ids, [vec![int(1)], vec![int(2)], vec![int(3)]], "read from P0 delivers everything again");

    // from the checkpoint P1 the slot lies behind: what P1 covers is skipped, also
    // when a poll holds nothing but skipped transactions (batches of one event)
    drop(second); // a crash while streaming: its WAL sender ends and frees the slot
    let mut third = capture(&db);
    third.preflight(&t, 1).await.expect("preflight passes with the job's slot in place");
    third.start(&t).await.unwrap();
    let rest = read_until(&mut third, &p1, 1, at_least(1)).await;
    let ids: Vec<Vec<Value>> = rest.events.iter().map(|e| e.key.clone()).collect();
    assert_eq!(ids, [vec![int(3)]]);
    third.cleanup().await.unwrap();
}

#[tokio::test]
async fn release_forgets_what_was_applied() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    db.sql("INSERT INTO orders VALUES (1, 'a');");
    let got = read_until(&mut cap, &p0, 1000, at_least(1)).await;
    let p1 = got.position.clone();
    cap.release(&p1).await.unwrap();
    // the stream confirms in the background: the server takes it a moment later
    let confirmed = || {
        db.sql(&format!(
            "SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = '{}'",
            slot_of(&db)
        ))
        .parse::<u64>()
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while confirmed() < lsn(&p1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(confirmed(), lsn(&p1), "the slot moved to the released position");
    cap.release(&p0).await.expect("releasing an older position is a no-op");

    let idle = cap.read(&p1, 1000, Duration::from_millis(200)).await.unwrap();
    assert!(idle.events.is_empty());
    // past p1 only over a transaction of no captured table (autovacuum's ANALYZE of
    // this database, say)
    assert!(lsn(&idle.position) >= lsn(&p1), "the idle read went back to {} from {p1}", idle.position);

    db.sql("INSERT INTO orders SELECT g, repeat('x', 100) FROM generate_series(2, 1001) g;");
    let written = db.sql(&format!("SELECT pg_current_wal_lsn() - '{}'", pg_lsn_text(&p1)));
    let backlog = cap.backlog(&p1).await.unwrap();
    assert!(
        backlog.bytes.expect("bytes") >= written.parse::<u64>().unwrap(),
        "backlog {backlog:?} is below the {written} bytes written since the release"
    );

    // read from P0 again: the released change is gone, the new ones are there
    let next = read_until(&mut cap, &p0, 5000, at_least(1000)).await;
    assert_eq!(next.events.len(), 1000);
    assert!(next.events.iter().all(|e| e.key != vec![int(1)]), "a released change came back");
    assert!(lsn(&next.position) > lsn(&p1));
    cap.release(&next.position).await.unwrap();
    let after = cap.backlog(&next.position).await.unwrap().bytes.expect("bytes");
    let bound = db.sql(&format!("SELECT pg_current_wal_lsn() - '{}'", pg_lsn_text(&next.position)));
    assert!(after <= bound.parse::<u64>().unwrap(), "backlog {after} after release exceeds {bound}");
    cap.cleanup().await.unwrap();
}

fn pg_lsn_text(p: &Position) -> String {
    let l = lsn(p);
    format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)
}

#[tokio::test]
async fn ddl_on_a_captured_table_stops_the_batch() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    db.sql("CREATE TABLE other (id int PRIMARY KEY)");
    let t = tables(&db, &["orders", "lines"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    db.sql(
        "ALTER TABLE other ADD COLUMN z int; \
         CREATE INDEX orders_note ON orders (note); \
         INSERT INTO orders VALUES (1, 'a'); \
         BEGIN; INSERT INTO orders VALUES (2, 'b'); ALTER TABLE orders ADD COLUMN extra int; \
           INSERT INTO orders VALUES (3, 'c'); COMMIT; \
         INSERT INTO orders VALUES (4, 'd');",
    );
    let got = read_until(&mut cap, &p0, 1000, |_| false).await;
    let ddl = got.ddl.clone().expect("a DDL");
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.contains("ADD COLUMN extra"), "{}", ddl.statement);
    let ids: Vec<Vec<Value>> = got.events.iter().map(|e| e.key.clone()).collect();
    assert_eq!(ids, [vec![int(1)], vec![int(2)]], "the events before the DDL, none after");
    assert!(lsn(&got.position) < lsn(&ddl.position), "the batch stops before the DDL's transaction");

    // reading again from the batch's position meets the same DDL; after it, the rest
    let again = cap.read(&got.position, 1000, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.ddl.as_ref().map(|d| &d.statement), Some(&ddl.statement));
    let after = read_until(&mut cap, &ddl.position, 1000, at_least(1)).await;
    assert_eq!(after.events, [ev("orders", vec![int(4)], ChangeOp::Insert)]);

    // TRUNCATE and DROP are reported too
    db.sql("INSERT INTO lines VALUES ('eu', 1, 1); TRUNCATE lines;");
    let truncated = read_until(&mut cap, &after.position, 1000, |_| false).await;
    let ddl = truncated.ddl.expect("truncate");
    assert_eq!((ddl.table.as_str(), ddl.statement.as_str()), ("lines", "TRUNCATE lines"));
    assert_eq!(truncated.events, [ev("lines", vec![text("eu"), int(1)], ChangeOp::Insert)]);
    db.sql("DROP TABLE lines;");
    let dropped = read_until(&mut cap, &ddl.position, 1000, |_| false).await;
    let ddl = dropped.ddl.expect("drop");
    assert_eq!(ddl.table, "lines");
    assert!(ddl.statement.contains("DROP TABLE lines"), "{}", ddl.statement);
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn partitions_report_their_root_table() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    db.sql(
        "CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
         CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu'); \
         CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');",
    );
    let t = tables(&db, &["m"]).await;
    let mut cap = capture(&db);
    cap.preflight(&t, 1).await.expect("preflight");
    let p0 = cap.start(&t).await.unwrap();
    assert_eq!(cap.plugin(), Some(PLUGIN));
    db.sql(
        "INSERT INTO m VALUES (1, 'eu'), (2, 'us'); UPDATE m SET region = 'us' WHERE id = 1; \
         CREATE TABLE m_asia PARTITION OF m FOR VALUES IN ('asia');",
    );
    let got = read_until(&mut cap, &p0, 1000, |_| false).await;
    let pairs: BTreeSet<(String, String)> = got
        .events
        .iter()
        .map(|e| (e.table.clone(), e.key.iter().map(Value::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    assert_eq!(
        pairs,
        [("m", "1,eu"), ("m", "2,us"), ("m", "1,us")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    );
    let ddl = got.ddl.expect("a new partition stops the sync");
    assert_eq!(ddl.table, "m");
    assert!(ddl.statement.contains("m_asia"), "{}", ddl.statement);
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn changes_elsewhere_are_not_reported() {
    let db = pg_db();
    let elsewhere = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    setup_orders_and_lines(&elsewhere);
    db.sql("CREATE SCHEMA other; CREATE TABLE other.orders (id bigint PRIMARY KEY); CREATE TABLE notes (id int);");
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    elsewhere.sql("INSERT INTO orders VALUES (100, 'other database');");
    db.sql(
        "INSERT INTO other.orders VALUES (200); INSERT INTO lines VALUES ('x', 1, 1); INSERT INTO notes VALUES (1); \
         INSERT INTO orders VALUES (1, 'mine');",
    );
    let got = read_until(&mut cap, &p0, 1000, at_least(1)).await;
    assert_eq!(got.events, [ev("orders", vec![int(1)], ChangeOp::Insert)]);
    let idle = cap.read(&got.position, 1000, Duration::from_millis(300)).await.unwrap();
    assert!(idle.events.is_empty(), "{idle:?}");

    // while only other tables are written, reads still move the position (pgoutput
    // sends nothing for those transactions), so released WAL does not pile up
    db.sql("INSERT INTO notes SELECT generate_series(1, 1000);");
    let end = lsn_of(&db.sql("SELECT pg_current_wal_flush_lsn()"));
    let quiet = cap.read(&idle.position, 1000, Duration::from_millis(300)).await.unwrap();
    assert!(quiet.events.is_empty(), "{quiet:?}");
    assert!(lsn(&quiet.position) >= end, "{:?} did not pass the other table's insert at {end:X}", quiet.position);
    cap.cleanup().await.unwrap();
}

/// An LSN as PostgreSQL prints it (`X/Y`).
fn lsn_of(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[tokio::test]
async fn a_partition_without_replica_identity_keeps_its_table_unpublished() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    db.sql(
        "CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
         CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu'); \
         CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us'); \
         ALTER TABLE m_us REPLICA IDENTITY NOTHING; INSERT INTO m VALUES (1, 'us', 'a');",
    );
    let t = tables(&db, &["m"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.expect("start");
    assert_eq!(cap.plugin(), Some(Plugin::Wal2Json));
    assert_eq!(db.sql("SELECT count(*) FROM pg_publication_tables WHERE tablename LIKE 'm%'"), "0");
    db.sql("UPDATE m SET v = 'b' WHERE id = 1; INSERT INTO m VALUES (2, 'eu', 'c');");
    let got = read_until(&mut cap, &p0, 1000, at_least(1)).await;
    assert_eq!(got.events.last(), Some(&ev("m", vec![Value::Int(2), text("eu")], ChangeOp::Insert)));
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_table_without_replica_identity_is_never_published() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    // a unique key but no primary key: no replica identity; publishing its UPDATEs
    // would make the application's UPDATEs fail
    db.sql("CREATE TABLE u (id int NOT NULL UNIQUE, v text); INSERT INTO u VALUES (1, 'a');");
    let t = vec![CaptureTable {
        table: "u".into(),
        key: vec!["id".into()],
        key_types: vec![pontoon_core::ColumnType::I32],
    }];
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.expect("start");
    assert_eq!(cap.plugin(), Some(Plugin::Wal2Json));
    assert_eq!(db.sql("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'u'"), "0");
    db.sql("UPDATE u SET v = 'b' WHERE id = 1; INSERT INTO u VALUES (2, 'c');");
    let got = read_until(&mut cap, &p0, 1000, at_least(1)).await;
    assert_eq!(got.events.last(), Some(&ev("u", vec![Value::Int(2)], ChangeOp::Insert)));
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_large_backlog_reads_in_bounded_batches() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    db.sql(
        "INSERT INTO orders SELECT g, 'bulk' FROM generate_series(1, 20000) g; \
         DO $$ BEGIN FOR i IN 20001..23000 LOOP INSERT INTO orders VALUES (i, 'single'); COMMIT; END LOOP; END $$;",
    );
    let started = Instant::now();
    let mut position = p0.clone();
    let mut seen = BTreeSet::new();
    let mut sizes = Vec::new();
    while seen.len() < 23_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "only {} keys after a minute", seen.len());
        let batch = cap.read(&position, 1000, Duration::from_millis(500)).await.unwrap();
        assert!(lsn(&batch.position) >= lsn(&position));
        sizes.push(batch.events.len());
        for e in &batch.events {
            if let [Value::Int(id)] = e.key[..] {
                seen.insert(id);
            }
        }
        position = batch.position;
        cap.release(&position).await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("23000 events in {} reads, {seconds:.2} s ({:.0} events/s)", sizes.len(), 23_000.0 / seconds);
    assert_eq!(sizes[0], 20_000, "a transaction is never split");
    assert!(sizes[1..].iter().all(|n| *n <= 1000), "{sizes:?}");
    assert_eq!(seen.len(), 23_000);
    cap.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_read_waits_and_wakes_on_a_commit() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    let started = Instant::now();
    let idle = cap.read(&p0, 100, Duration::from_millis(400)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(380), "returned after {:?}", started.elapsed());
    assert!(idle.events.is_empty() && idle.ddl.is_none());
    // it may move over a transaction that changed no captured table (the server's
    // own bookkeeping in this database, now and then)
    assert!(lsn(&idle.position) >= lsn(&p0));

    let url_db = &db;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            url_db.sql("SET synchronous_commit = off; INSERT INTO orders VALUES (7, 'late');");
        });
        let rt = tokio::runtime::Handle::current();
        let started = Instant::now();
        let batch = tokio::task::block_in_place(|| rt.block_on(cap.read(&p0, 100, Duration::from_secs(10)))).unwrap();
        assert_eq!(batch.events, [ev("orders", vec![int(7)], ChangeOp::Insert)]);
        assert!(started.elapsed() < Duration::from_secs(5), "woke after {:?}", started.elapsed());
    });
    cap.cleanup().await.unwrap();
}

#[tokio::test]
async fn cleanup_removes_what_start_installed() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    cap.start(&t).await.unwrap();
    assert_eq!(cap.plugin(), Some(PLUGIN));
    let job = job_of(&db);

    // hold the slot from a streaming client: cleanup must end it
    let bin = db.server().bin_dir.join("pg_recvlogical");
    let mut holder = std::process::Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &db.server().port.to_string(), "-U", "pontoon", "-d", &db.name])
        .args(["--slot", &slot_of(&db), "--start", "--no-loop", "-f", "/dev/null"])
        .args(match PLUGIN {
            Plugin::PgOutput => vec!["-o".to_string(), "proto_version=1".into(), "-o".into(), format!("publication_names={}", slot_of(&db))],
            Plugin::Wal2Json => vec![],
        })
        .env("PGPASSWORD", pontoon_testsupport::PASSWORD)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pg_recvlogical starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.sql(&format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{}'", slot_of(&db))) != "t" {
        assert!(Instant::now() < deadline, "pg_recvlogical did not take the slot");
        std::thread::sleep(Duration::from_millis(50));
    }

    // a fresh capture object, as in `pontoon cleanup` after a crash
    let mut fresh = capture(&db);
    let removed = fresh.cleanup().await.expect("cleanup");
    let publication = (PLUGIN == Plugin::PgOutput).then(|| format!("publication pontoon_{job}"));
    assert_eq!(
        removed,
        [
            Some(format!("replication slot pontoon_{job}")),
            publication,
            Some(format!("event trigger pontoon_{job}_ddl")),
            Some(format!("event trigger pontoon_{job}_drop")),
            Some(format!("function pontoon_{job}_ddl()")),
            Some(format!("table pontoon_ddl_{job}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(slot_rows(&db), "", "pg_replication_slots still has the slot");
    let left = db.sql(&format!(
        "SELECT (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pontoon_{job}%') \
              + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'pontoon_{job}%') \
              + (SELECT count(*) FROM pg_class WHERE relname LIKE 'pontoon_ddl_{job}%')"
    ));
    assert_eq!(left, "0");
    assert_eq!(fresh.cleanup().await.unwrap(), Vec::<String>::new(), "a second cleanup removes nothing");
    // DDL still works without the triggers
    db.sql("ALTER TABLE orders ADD COLUMN extra int");
}

#[tokio::test]
async fn preflight_reports_every_refusal_at_once() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    db.sql(&format!(
        "CREATE TABLE good (id int PRIMARY KEY); \
         CREATE TABLE nopk (id int, v text); \
         CREATE TABLE wrongkey (id int PRIMARY KEY, code text NOT NULL UNIQUE); \
         ALTER DATABASE {} SET output_plugin_libraries = 'pgoutput';",
        db.name
    ));
    let mut t = tables(&db, &["good", "wrongkey"]).await;
    t[1].key = vec!["code".into()];
    t[1].key_types = vec![pontoon_core::ColumnType::TEXT];
    t.push(CaptureTable {
        table: "nopk".into(),
        key: vec!["id".into()],
        key_types: vec![pontoon_core::ColumnType::I32],
    });
    t.push(CaptureTable {
        table: "ghost".into(),
        key: vec!["id".into()],
        key_types: vec![pontoon_core::ColumnType::I32],
    });
    let mut cap = capture(&db);
    let err = cap.preflight(&t, 1).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    let message = err.to_string();
    let lines: Vec<&str> = message.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lines.len(), 4, "{message}");
    assert!(lines.iter().any(|l| l.contains("wal2json") && l.contains("output_plugin_libraries")), "{message}");
    if PLUGIN == Plugin::PgOutput {
        // and says why the built-in plugin is no way out
        assert!(message.contains("pgoutput, which it cannot now: table nopk has no replica identity"), "{message}");
    }
    assert!(lines.iter().any(|l| l.contains("table nopk") && l.contains("REPLICA IDENTITY FULL")), "{message}");
    assert!(lines.iter().any(|l| l.contains("table wrongkey") && l.contains("code")), "{message}");
    assert!(lines.iter().any(|l| l.contains("table ghost does not exist")), "{message}");
    assert!(!message.contains("table good"), "{message}");
    assert_eq!(slot_rows(&db), "", "preflight leaves no slot behind");

    db.sql(&format!(
        "ALTER DATABASE {} RESET output_plugin_libraries; ALTER TABLE nopk REPLICA IDENTITY FULL; \
         ALTER TABLE wrongkey REPLICA IDENTITY FULL;",
        db.name
    ));
    t.pop();
    let mut cap = capture(&db);
    cap.preflight(&t, 1).await.expect("fixed: preflight passes");
    assert_eq!(slot_rows(&db), "", "preflight leaves no slot behind");
}

/// Creates a role for one test and drops it when the test ends.
struct Role<'a> {
    db: &'a TestDb,
    name: String,
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        let _ = self.db.try_sql(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'; \
             DROP OWNED BY {name}; DROP ROLE {name};",
            slot_of(self.db),
            name = self.name
        ));
    }
}

#[tokio::test]
async fn without_superuser_column_changes_are_seen_by_fingerprint() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    let role = Role { db: &db, name: format!("{}_cap", db.name) };
    db.sql(&format!(
        "CREATE ROLE {r} LOGIN PASSWORD 'capture-pw'; REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        r = role.name
    ));
    let url = format!("postgres://{}:capture-pw@127.0.0.1:{}/{}", role.name, db.server().port, db.name);
    let t = tables(&db, &["orders"]).await;
    let mut cap = LogicalCapture::new(connector(&url), job_of(&db)).with_plugin(PLUGIN);
    let err = cap.preflight(&t, 1).await.expect_err("no REPLICATION, no CREATE");
    let message = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(message.contains(&format!("role {} has neither the REPLICATION", role.name)), "{message}");
    assert!(message.contains("cannot create tables in schema public"), "{message}");

    db.sql(&format!("ALTER ROLE {r} REPLICATION; GRANT CREATE ON SCHEMA public TO {r};", r = role.name));
    cap.preflight(&t, 1).await.expect("preflight passes with REPLICATION");
    let p0 = cap.start(&t).await.expect("start without superuser");
    assert_eq!(cap.plugin(), Some(Plugin::Wal2Json), "a role that owns no captured table cannot publish it");
    db.sql("INSERT INTO orders VALUES (1, 'a');");
    let got = read_until(&mut cap, &p0, 1000, at_least(1)).await;
    assert_eq!(got.events, [ev("orders", vec![int(1)], ChangeOp::Insert)]);
    let no_triggers =
        db.sql(&format!("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pontoon_{}%'", job_of(&db)));
    assert_eq!(no_triggers, "0");

    db.sql("ALTER TABLE orders ADD COLUMN extra int;");
    let batch = cap.read(&got.position, 1000, Duration::from_millis(200)).await.unwrap();
    let ddl = batch.ddl.expect("the column change is noticed");
    assert_eq!(ddl.table, "orders");
    assert!(ddl.statement.contains("columns changed"), "{}", ddl.statement);
    assert_eq!(batch.position, got.position);

    // a restarted capture still notices it (the fingerprint is stored)
    drop(cap);
    let mut restarted = LogicalCapture::new(connector(&url), job_of(&db)).with_plugin(PLUGIN);
    restarted.start(&t).await.unwrap();
    let batch = restarted.read(&got.position, 1000, Duration::from_millis(200)).await.unwrap();
    assert_eq!(batch.ddl.map(|d| d.table), Some("orders".to_string()));

    let removed = restarted.cleanup().await.unwrap();
    assert_eq!(removed, [format!("replication slot {}", slot_of(&db)), format!("table pontoon_ddl_{}", job_of(&db))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_on_a_server_without_logical_decoding() {
    let server = PgServer::start_private();
    server.info().admin_sql(
        "ALTER SYSTEM SET wal_level = 'replica'; ALTER SYSTEM SET max_replication_slots = 1; \
         ALTER SYSTEM SET max_slot_wal_keep_size = '1MB';",
    );
    server.stop();
    server.start();
    server.info().admin_sql("SELECT pg_create_physical_replication_slot('someone_else')");
    let db = server.create_db();
    let busy = server.create_db();
    db.sql("CREATE TABLE good (id int PRIMARY KEY); CREATE TABLE nopk (id int);");
    busy.sql("CREATE TABLE filler (v int)");
    let mut t = tables(&db, &["good"]).await;
    t.push(CaptureTable {
        table: "nopk".into(),
        key: vec!["id".into()],
        key_types: vec![pontoon_core::ColumnType::I32],
    });

    // WAL keeps being written while preflight measures the rate
    let stop = std::sync::atomic::AtomicBool::new(false);
    let message = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                busy.sql("INSERT INTO filler SELECT generate_series(1, 5000)");
            }
        });
        let rt = tokio::runtime::Handle::current();
        let mut cap = capture(&db);
        let result = tokio::task::block_in_place(|| rt.block_on(cap.preflight(&t, 3600)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let err = result.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Config);
        err.to_string()
    });
    let lines: Vec<&str> = message.lines().filter(|l| l.starts_with("- ")).collect();
    assert!(lines.iter().any(|l| l.contains("wal_level is `replica`")), "{message}");
    assert!(lines.iter().any(|l| l.contains("all 1 replication slots")), "{message}");
    assert!(lines.iter().any(|l| l.contains("table nopk")), "{message}");
    assert!(lines.iter().any(|l| l.contains("max_slot_wal_keep_size is 1MB")), "{message}");
    assert_eq!(lines.len(), 4, "{message}");
}

#[tokio::test]
async fn a_slot_whose_wal_was_removed_is_refused() {
    let server = PgServer::start_private();
    let db = server.create_db();
    db.sql("CREATE TABLE orders (id bigint PRIMARY KEY, note text);");
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    // the slot may keep 1 MB of WAL; write far more and let a checkpoint remove it
    server.info().admin_sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'; SELECT pg_reload_conf();");
    for _ in 0..3 {
        db.sql("INSERT INTO orders SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g; DELETE FROM orders;");
    }
    let status = server.info().admin_sql(&format!(
        "CHECKPOINT; SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
        slot_of(&db)
    ));
    assert_eq!(status, "lost", "the test needs the slot invalidated");

    let err = cap.read(&p0, 100, Duration::from_millis(100)).await.expect_err("a lost slot cannot be read");
    assert!(err.to_string().contains(&slot_of(&db)), "{err}");
    let mut restarted = capture(&db);
    let err = restarted.start(&t).await.expect_err("a lost slot is not reused");
    assert!(err.to_string().contains("invalidated"), "{err}");
    let err = restarted.preflight(&t, 1).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("pontoon cleanup"), "{err}");
    let removed = restarted.cleanup().await.unwrap();
    assert!(removed.contains(&format!("replication slot {}", slot_of(&db))), "{removed:?}");
}

/// PostgreSQL writes (and flushes) a commit record before the transaction leaves the
/// list of running ones, so logical decoding can hand out a transaction that a new
/// snapshot does not see yet. The sync re-reads every key it is told about at once:
/// an insert just reported must be found, a delete just reported must be gone. Many
/// concurrent writers and busy CPUs widen the window.
#[tokio::test]
async fn a_change_read_from_the_slot_is_seen_by_an_immediate_reread() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    db.sql("CREATE TABLE t (id bigint PRIMARY KEY, v int)");
    let t = tables(&db, &["t"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    let scan = ScanSpec {
        table: "t".into(),
        select: vec![SelectItem { expr: SelectExpr::Column("id".into()), ty: pontoon_core::ColumnType::I64 }],
        key: vec!["id".into()],
        key_types: vec![pontoon_core::ColumnType::I64],
        filter: None,
        partition: None,
    };
    let mut reader = connector(&db.url).connect_reader().await.unwrap();

    const WRITERS: i64 = 16;
    const ROWS: i64 = 250;
    let _busy = BusyCpu::start(4);
    let mut stale = Vec::new();
    let mut at = p0;
    // all inserts, then (once every insert was read) all deletes: a row found or
    // missing can then only be older than the event, never newer
    for sql in ["INSERT INTO t VALUES ($1, 0)", "DELETE FROM t WHERE id = $1"] {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let url = db.url.clone();
            writers.push(tokio::spawn(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                for i in 0..ROWS {
                    client.execute(sql, &[&(w * 1_000_000 + i)]).await.unwrap();
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        while seen < (WRITERS * ROWS) as usize {
            assert!(Instant::now() < deadline, "only {seen} events arrived");
            let batch = cap.read(&at, 50, Duration::from_millis(20)).await.unwrap();
            at = batch.position.clone();
            seen += batch.events.len();
            let keys: Vec<Vec<Value>> = batch.events.iter().map(|e| e.key.clone()).collect();
            let found = reader.fetch_keys(&scan, &keys).await.unwrap();
            for e in &batch.events {
                if (e.op == ChangeOp::Delete) == found.iter().any(|r| r[0] == e.key[0]) {
                    stale.push((e.key[0].clone(), e.op));
                }
            }
            cap.release(&at).await.unwrap();
        }
        for w in writers {
            w.await.unwrap();
        }
    }
    assert!(
        stale.is_empty(),
        "{} re-reads saw the row as it was before the reported change: {:?}",
        stale.len(),
        &stale[..stale.len().min(10)]
    );
}

/// The backend holding the job's slot (the stream's WAL sender), if any.
fn slot_holder(db: &TestDb) -> String {
    db.sql(&format!("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'", slot_of(db)))
}

/// Reads go on over one replication stream, which keeps confirming to the server
/// while nobody reads: here the server gives up on a silent client after two
/// seconds (`wal_sender_timeout`), and the stream holds more than fits in its
/// buffer (1 MB here) while the test sleeps for five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_serves_every_read_and_outlives_a_busy_reader() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    db.server().admin_sql(&format!("ALTER DATABASE \"{}\" SET wal_sender_timeout = '2s'", db.name));
    setup_orders_and_lines(&db);
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db).with_buffer(1 << 20);
    let p0 = cap.start(&t).await.unwrap();
    let idle = cap.read(&p0, 1000, Duration::from_millis(50)).await.unwrap();
    assert!(idle.events.is_empty());
    let holder = slot_holder(&db);
    assert!(!holder.is_empty(), "the read opened a stream");

    // about 40 MB of wal2json text in 100 transactions
    db.sql(
        "DO $$ BEGIN FOR i IN 0..99 LOOP \
           INSERT INTO orders SELECT g, repeat('x', 300) FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g; \
           COMMIT; END LOOP; END $$",
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(slot_holder(&db), holder, "the server kept the stream while nobody read");

    let mut position = idle.position;
    let mut ids = Vec::new();
    let started = Instant::now();
    while ids.len() < 100_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "only {} keys after a minute", ids.len());
        let batch = cap.read(&position, 5000, Duration::from_millis(500)).await.unwrap();
        assert!(batch.events.len() <= 5000 + 1000, "a batch ends after the transaction that fills it");
        ids.extend(batch.events.iter().map(|e| e.key.clone()));
        position = batch.position;
        cap.release(&position).await.unwrap();
    }
    let expected: Vec<Vec<Value>> = (1..=100_000).map(|i| vec![int(i)]).collect();
    assert!(ids == expected, "every insert once, in commit order");
    assert_eq!(slot_holder(&db), holder, "every read went on over the same stream");
    cap.cleanup().await.unwrap();
    assert_eq!(slot_rows(&db), "", "cleanup ended the stream and dropped the slot");
}

/// Streaming needs a replication connection; preflight tries one and says why it is
/// refused (here: no WAL sender may run at all).
#[tokio::test]
async fn preflight_refuses_when_no_replication_connection_is_allowed() {
    let server = PgServer::start_private();
    server.info().admin_sql("ALTER SYSTEM SET max_wal_senders = 0");
    server.stop();
    server.start();
    let db = server.create_db();
    db.sql("CREATE TABLE good (id int PRIMARY KEY)");
    let t = tables(&db, &["good"]).await;
    let err = capture(&db).preflight(&t, 1).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    let message = err.to_string();
    let lines: Vec<&str> = message.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lines.len(), 1, "{message}");
    assert!(lines[0].contains("replication connection") && lines[0].contains("max_wal_senders"), "{message}");
}

/// A read that returns no events has seen every change committed before it began,
/// even while the server is still decoding a large transaction on a table that is
/// not captured: the sync's "caught up" and the drain's end rest on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_read_means_the_server_has_decoded_everything_committed_before_it() {
    let db = pg_db();
    let _slot = SlotGuard(&db);
    setup_orders_and_lines(&db);
    db.sql("CREATE TABLE other (id bigint PRIMARY KEY, note text)");
    let t = tables(&db, &["orders"]).await;
    let mut cap = capture(&db);
    let p0 = cap.start(&t).await.unwrap();
    let idle = cap.read(&p0, 1000, Duration::from_millis(50)).await.unwrap();
    assert!(idle.events.is_empty());

    // about a second of decoding for the server, then the change that counts
    db.sql("INSERT INTO other SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g");
    db.sql("INSERT INTO orders VALUES (1, 'after the bulk load')");
    let mut position = idle.position;
    let mut events = Vec::new();
    let started = Instant::now();
    loop {
        let batch = cap.read(&position, 1000, Duration::from_millis(1)).await.unwrap();
        position = batch.position;
        if batch.events.is_empty() {
            break;
        }
        events.extend(batch.events);
        assert!(started.elapsed() < Duration::from_secs(60), "no end after a minute");
    }
    assert_eq!(
        events,
        [ev("orders", vec![int(1)], ChangeOp::Insert)],
        "a read came back empty before the change committed ahead of it"
    );
    cap.cleanup().await.unwrap();
}
