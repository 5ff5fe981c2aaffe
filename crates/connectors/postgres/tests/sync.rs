//! The sync's reader and writer paths against a real PostgreSQL server: rows fetched by
//! key (`Reader::fetch_keys`) and batches applied with a version guard (`Writer::apply`).

use pontoon_core::value::{days_from_civil, parse_uuid};
use pontoon_core::{
    Column, ColumnType, Connector, Decimal, ErrorKind, KeyRange, PartitionFilter, Reader, Row, ScanSpec, SecretUrl,
    SelectExpr, SelectItem, TableSchema, Value, Writer,
};
use pontoon_postgres::PgConnector;
use pontoon_testsupport::{TestDb, pg_db};

fn connector(db: &TestDb) -> PgConnector {
    PgConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL")
}

async fn reader(db: &TestDb) -> Box<dyn Reader> {
    connector(db).reader().await.expect("reader connects")
}

async fn writer(db: &TestDb) -> Box<dyn Writer> {
    connector(db).writer().await.expect("writer connects")
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// Reads every column of `schema`.
fn spec_of(schema: &TableSchema) -> ScanSpec {
    ScanSpec::every_column(schema, &schema.primary_key)
}

/// Rows sorted by their Debug text, for order-free comparison.
fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// Each key read back is found again by `fetch_keys`, with exactly the row `scan`
/// returned, for every kind of key value; missing keys are simply absent.
#[tokio::test]
async fn fetch_keys_finds_exactly_the_rows_scan_returns() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE k_text (k text PRIMARY KEY, v int);
         INSERT INTO k_text VALUES ('plain', 1), ('it''s', 2), ('Plain', 3), ('plain ', 4), ('😀 four bytes', 5),
                                   (E'back\\\\slash', 6), ('', 7);
         CREATE TABLE k_char (k char(4) PRIMARY KEY, v int);
         INSERT INTO k_char VALUES ('ab', 1), ('abcd', 2);
         CREATE TABLE k_bytes (k bytea PRIMARY KEY, v int);
         INSERT INTO k_bytes VALUES ('\\x00ff', 1), ('\\x', 2), ('\\x27', 3);
         CREATE TABLE k_uuid (k uuid PRIMARY KEY, v int);
         INSERT INTO k_uuid VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1), ('00000000-0000-0000-0000-000000000000', 2);
         CREATE TABLE k_date (k date PRIMARY KEY, d timestamptz, v int);
         INSERT INTO k_date VALUES ('2024-02-29', '2024-02-29 12:00:00.123456+00', 1), ('0044-03-15 BC', NULL, 2);
         CREATE TABLE k_ts (k timestamp PRIMARY KEY, v int);
         INSERT INTO k_ts VALUES ('2024-02-29 23:59:59.999999', 1), ('1969-12-31 23:59:59', 2);
         CREATE TABLE k_num (k numeric(12,3) PRIMARY KEY, v int);
         INSERT INTO k_num VALUES (1.5, 1), (-0.001, 2), (123456789.000, 3);
         CREATE TABLE k_big (k bigint PRIMARY KEY, v int);
         INSERT INTO k_big VALUES (-9223372036854775808, 1), (9223372036854775807, 2), (0, 3);",
    );
    let mut r = reader(&db).await;
    for table in ["k_text", "k_char", "k_bytes", "k_uuid", "k_date", "k_ts", "k_num", "k_big"] {
        let schema = r.describe(table).await.unwrap().unwrap();
        let spec = spec_of(&schema);
        let all = r.scan(&spec, &KeyRange::ALL).await.unwrap();
        assert!(all.len() >= 2, "{table}");
        let keys: Vec<Vec<Value>> = all.iter().map(|row| vec![row[0].clone()]).collect();
        let found = r.fetch_keys(&spec, &keys).await.unwrap();
        assert_eq!(sorted(found), sorted(all.clone()), "{table}");
        // one key alone finds its row only
        let one = r.fetch_keys(&spec, &keys[1..2]).await.unwrap();
        assert_eq!(one, vec![all[1].clone()], "{table}");
    }
    // missing keys (including case and trailing-space variants of present ones)
    let schema = r.describe("k_text").await.unwrap().unwrap();
    let spec = spec_of(&schema);
    let missing = [text("PLAIN"), text("plain  "), text("nothing"), text("'; DROP TABLE k_text; --")];
    let keys: Vec<Vec<Value>> = missing.iter().map(|k| vec![k.clone()]).collect();
    assert_eq!(r.fetch_keys(&spec, &keys).await.unwrap(), Vec::<Row>::new());
    assert_eq!(db.sql("SELECT count(*) FROM k_text"), "7");
    assert_eq!(r.fetch_keys(&spec, &[]).await.unwrap(), Vec::<Row>::new());
}

/// A composite text+int key, many keys (several statements), with the scan's
/// filter, partition and SQL expressions applied.
#[tokio::test]
async fn fetch_keys_applies_filter_partition_and_expressions_over_many_keys() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE orders (tenant text, id int, region text, amount numeric(10,2), PRIMARY KEY (tenant, id));
         INSERT INTO orders SELECT CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'Acme ' END, i,
                                   CASE WHEN i % 3 = 0 THEN 'eu' ELSE 'us' END, i * 1.25
                            FROM generate_series(1, 2600) i;",
    );
    let mut r = reader(&db).await;
    let spec = ScanSpec {
        table: "orders".into(),
        select: vec![
            SelectItem { expr: SelectExpr::Column("tenant".into()), ty: ColumnType::TEXT },
            SelectItem { expr: SelectExpr::Column("id".into()), ty: ColumnType::I32 },
            SelectItem {
                expr: SelectExpr::Sql("amount * 2".into()),
                ty: ColumnType::Decimal { precision: None, scale: None },
            },
        ],
        key: vec!["tenant".into(), "id".into()],
        key_types: vec![ColumnType::TEXT, ColumnType::I32],
        filter: Some("amount > 10 OR id = 1".into()),
        partition: Some(PartitionFilter { column: "region".into(), value: text("us") }),
    };
    // every key, present or not: (acme, i) exists for even i, (Acme , i) for odd i
    let mut keys = Vec::new();
    for i in 1..=2600i64 {
        keys.push(vec![text("acme"), Value::Int(i)]);
        keys.push(vec![text("Acme "), Value::Int(i)]);
    }
    let found = r.fetch_keys(&spec, &keys).await.unwrap();
    let expected = r.scan(&spec, &KeyRange::ALL).await.unwrap();
    let wanted: usize = (1..=2600).filter(|i| i % 3 != 0 && (*i as f64 * 1.25 > 10.0 || *i == 1)).count();
    assert_eq!(expected.len(), wanted);
    assert_eq!(sorted(found), sorted(expected));
    let one = r.fetch_keys(&spec, &[vec![text("Acme "), Value::Int(1)]]).await.unwrap();
    assert_eq!(one, vec![vec![text("Acme "), Value::Int(1), Value::Decimal(Decimal::parse("2.50").unwrap())]]);
    // a row outside the partition is not returned even by its key
    assert_eq!(r.fetch_keys(&spec, &[vec![text("Acme "), Value::Int(3)]]).await.unwrap(), Vec::<Row>::new());
    // a wrong filter is an error naming the table
    let bad = ScanSpec { filter: Some("no_such_column > 1".into()), ..spec };
    let e = r.fetch_keys(&bad, &keys[..2]).await.unwrap_err();
    assert_eq!(e.location().table.as_deref(), Some("orders"), "{e}");
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), native: String::new(), ty, nullable: true, has_default: false }
}

fn versioned_schema() -> TableSchema {
    TableSchema {
        name: "items".into(),
        columns: vec![col("id", ColumnType::I64), col("name", ColumnType::TEXT), col("version", ColumnType::I64)],
        primary_key: vec!["id".into()],
    }
}

fn item(id: i64, name: &str, version: Option<i64>) -> Row {
    vec![Value::Int(id), text(name), version.map(Value::Int).unwrap_or(Value::Null)]
}

/// With a version column an upsert never replaces a newer row; an equal or newer
/// version, and a target row without a version, are replaced. Deletes are not
/// guarded. Without a version column, the last write wins.
#[tokio::test]
async fn apply_guards_by_version_and_deletes_unguarded() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, version bigint);
         INSERT INTO items VALUES (1, 'newer', 10), (2, 'same', 10), (3, 'older', 10), (4, 'no version', NULL),
                                  (5, 'to delete', 99), (6, 'untouched', 1);",
    );
    let schema = versioned_schema();
    let mut w = writer(&db).await;
    let rows = vec![
        item(1, "stale", Some(9)),
        item(2, "equal", Some(10)),
        item(3, "fresh", Some(11)),
        item(4, "versioned", Some(1)),
        item(7, "new", Some(1)),
    ];
    let n = w.apply(&schema, &rows, &[vec![Value::Int(5)], vec![Value::Int(404)]], Some("version")).await.unwrap();
    // 2, 3, 4 updated, 7 inserted, 5 deleted; 1 left alone
    assert_eq!(n, 5);
    assert_eq!(
        db.sql("SELECT id, name, version FROM items ORDER BY id"),
        "1|newer|10\n2|equal|10\n3|fresh|11\n4|versioned|1\n6|untouched|1\n7|new|1"
    );
    // without a guard the older row wins
    w.apply(&schema, &[item(1, "forced", Some(1))], &[], None).await.unwrap();
    assert_eq!(db.sql("SELECT name, version FROM items WHERE id = 1"), "forced|1");
    // a key twice in one batch: the last row of it is written
    w.apply(&schema, &[item(8, "first", Some(1)), item(8, "second", Some(1))], &[], Some("version")).await.unwrap();
    assert_eq!(db.sql("SELECT name FROM items WHERE id = 8"), "second");
    // a version column the table does not have is refused, naming it
    let e = w.apply(&schema, &[item(1, "x", Some(1))], &[], Some("updated_at")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert!(e.to_string().contains("updated_at"), "{e}");
}

/// Composite keys, many rows (several statements) and deletes of keys of several
/// types in one batch.
#[tokio::test]
async fn apply_writes_and_deletes_composite_keys_in_batches() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE lines (tenant varchar(10), day date, n int, note text, PRIMARY KEY (tenant, day, n));
         INSERT INTO lines SELECT 'acme', DATE '2024-01-01', i, 'old' FROM generate_series(1, 10) i;",
    );
    let schema = TableSchema {
        name: "lines".into(),
        columns: vec![
            col("tenant", ColumnType::Text { max_chars: Some(10) }),
            col("day", ColumnType::Date),
            col("n", ColumnType::I32),
            col("note", ColumnType::TEXT),
        ],
        primary_key: vec!["tenant".into(), "day".into(), "n".into()],
    };
    let day = Value::Date(days_from_civil(2024, 1, 1) as i32);
    let rows: Vec<Row> = (1..=3000).map(|i| vec![text("acme"), day.clone(), Value::Int(i), text("new")]).collect();
    let deletes: Vec<Vec<Value>> = vec![vec![text("other"), day.clone(), Value::Int(1)]];
    let mut w = writer(&db).await;
    assert_eq!(w.apply(&schema, &rows, &deletes, None).await.unwrap(), 3000);
    assert_eq!(db.sql("SELECT count(*), count(*) FILTER (WHERE note = 'new') FROM lines"), "3000|3000");
    let deletes: Vec<Vec<Value>> = (1..=2500).map(|i| vec![text("acme"), day.clone(), Value::Int(i)]).collect();
    assert_eq!(w.apply(&schema, &[], &deletes, Some("note")).await.unwrap(), 2500);
    assert_eq!(db.sql("SELECT min(n), count(*) FROM lines"), "2501|500");
}

/// A batch is one transaction: a row the server refuses (a CHECK constraint), or a
/// value the encoder refuses, leaves nothing of the batch written, deletes included;
/// the error names the table (and the key and column when known), never a value.
#[tokio::test]
async fn a_failing_batch_leaves_nothing_written() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text CHECK (name <> 'forbidden'), version smallint);
         INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 1);",
    );
    let schema = TableSchema {
        name: "items".into(),
        columns: vec![
            col("id", ColumnType::I64),
            col("name", ColumnType::TEXT),
            col("version", ColumnType::Int { bytes: 2, unsigned: false }),
        ],
        primary_key: vec!["id".into()],
    };
    let before = db.sql("SELECT * FROM items ORDER BY id");
    let mut w = writer(&db).await;
    let rows = vec![item(1, "changed", Some(2)), item(3, "new", Some(1)), item(4, "forbidden", Some(1))];
    let e = w.apply(&schema, &rows, &[vec![Value::Int(2)]], Some("version")).await.unwrap_err();
    assert_eq!(e.location().table.as_deref(), Some("items"), "{e}");
    assert!(!e.to_string().contains("forbidden"), "{e}");
    assert_eq!(db.sql("SELECT * FROM items ORDER BY id"), before);
    // a value out of range for smallint, found by the encoder: names the key and column
    let rows = vec![item(3, "new", Some(1)), item(5, "big", Some(40_000))];
    let e = w.apply(&schema, &rows, &[vec![Value::Int(2)]], None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().key, Some(vec![Value::Int(5)]), "{e}");
    assert_eq!(e.location().column.as_deref(), Some("version"), "{e}");
    assert!(!e.to_string().contains("40000"), "{e}");
    assert_eq!(db.sql("SELECT * FROM items ORDER BY id"), before);
    // the writer works on after a failed batch
    w.apply(&schema, &[item(3, "new", Some(1))], &[vec![Value::Int(2)]], None).await.unwrap();
    assert_eq!(db.sql("SELECT id FROM items ORDER BY id"), "1\n3");
}

/// Keys of every kind the sync passes along: bytes, uuid and timestamps are found by
/// `fetch_keys` and deleted by `apply` exactly.
#[tokio::test]
async fn apply_deletes_keys_of_every_kind() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE blobs (k bytea, u uuid, t timestamptz, PRIMARY KEY (k, u, t));
         INSERT INTO blobs VALUES ('\\x00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-01 00:00:00.000001+00'),
                                  ('\\x00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-01 00:00:00+00');",
    );
    let mut r = reader(&db).await;
    let schema = r.describe("blobs").await.unwrap().unwrap();
    let u = Value::Uuid(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap());
    let t0 = days_from_civil(2024, 1, 1) * 86_400_000_000;
    let key = vec![Value::Bytes(vec![0]), u, Value::TimestampTz(t0 + 1)];
    assert_eq!(r.fetch_keys(&spec_of(&schema), std::slice::from_ref(&key)).await.unwrap(), vec![key.clone()]);
    let mut w = writer(&db).await;
    assert_eq!(w.apply(&schema, &[], &[key], None).await.unwrap(), 1);
    assert_eq!(db.sql("SELECT t AT TIME ZONE 'UTC' FROM blobs"), "2024-01-01 00:00:00");
}

/// The staging table of `apply` is made once per writer session and holds only the
/// batch in hand: later batches reuse it (no catalog churn at steady state), and a
/// batch with a key twice still keeps its last row.
#[tokio::test]
async fn the_staging_table_lives_for_the_session_and_holds_one_batch() {
    let db = pg_db();
    db.sql("CREATE TABLE items (id bigint PRIMARY KEY, name text, version bigint)");
    let schema = versioned_schema();
    let stages = || {
        db.sql("SELECT string_agg(oid::text, ',') FROM pg_class WHERE relname LIKE 'pontoon_stage%' AND relpersistence = 't'")
    };
    let mut w = writer(&db).await;
    assert_eq!(w.apply(&schema, &[item(1, "a", Some(1)), item(2, "b", Some(1))], &[], None).await.unwrap(), 2);
    let first = stages();
    assert!(!first.is_empty(), "a staging table exists");
    // changed behind the writer's back: a staging table still holding the last batch
    // would write it back
    db.sql("UPDATE items SET name = 'z' WHERE id = 1");
    assert_eq!(w.apply(&schema, &[item(3, "c", Some(1))], &[], None).await.unwrap(), 1);
    assert_eq!(stages(), first, "the same staging table is used again");
    assert_eq!(db.sql("SELECT id, name FROM items ORDER BY id"), "1|z\n2|b\n3|c");
    let twice = [item(1, "x", Some(2)), item(1, "y", Some(3))];
    w.apply(&schema, &twice, &[], None).await.unwrap();
    assert_eq!(db.sql("SELECT id, name, version FROM items ORDER BY id"), "1|y|3\n2|b|1\n3|c|1");
    assert_eq!(stages(), first);
}
