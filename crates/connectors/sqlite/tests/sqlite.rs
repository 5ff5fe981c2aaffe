//! SQLite connector against real database files in a temporary directory.

mod common;

use std::path::Path;

use pontoon_core::value::{days_from_civil, parse_timestamp, parse_uuid};
use pontoon_core::{
    Column, ColumnType, Connector, Decimal, ErrorKind, KeyRange, PartitionFilter, SecretUrl, SelectExpr, SelectItem,
    TableSchema, Value,
};
use pontoon_sqlite::SqliteConnector;

use common::{TempDir, col, scan_of, schema};

fn dec(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).unwrap())
}

fn ts(s: &str) -> i64 {
    parse_timestamp(s).unwrap().0
}

fn int(bytes: u8, unsigned: bool) -> ColumnType {
    ColumnType::Int { bytes, unsigned }
}

#[tokio::test]
async fn describe_maps_every_declared_type() {
    let dir = TempDir::new("describe");
    dir.raw()
        .execute_batch(
            "CREATE TABLE every (
                b1 BOOLEAN, b2 bool,
                i8 TINYINT NOT NULL, u8 TINYINT UNSIGNED, i16 SMALLINT, i24 MEDIUMINT,
                i32 INT, u32 int unsigned, i64a INTEGER, i64b BIGINT, u64 BIGINT UNSIGNED,
                f32 FLOAT, f64a REAL, f64b DOUBLE, f64c DOUBLE PRECISION,
                d1 DECIMAL(10,2), d2 NUMERIC(12, 4), d3 DECIMAL_TEXT(30,6), d4 DECIMAL,
                d5 NUMERIC(5), d6 decimal_text,
                t1 VARCHAR(20) NOT NULL, t2 CHAR(3), t3 NVARCHAR(7), t4 TEXT, t5 CLOB,
                bl BLOB, da DATE, ti TIME, ts1 DATETIME, ts2 TIMESTAMP, tz TIMESTAMPTZ,
                j1 JSON, j2 JSON_TEXT, u UUID DEFAULT 'x',
                PRIMARY KEY (t1, i8));
             CREATE TABLE rowid_alias (id INTEGER PRIMARY KEY AUTOINCREMENT, n TEXT);
             CREATE TABLE no_key (a TEXT, b INT);
             CREATE TABLE not_alias (id INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID;
             CREATE TABLE odd (a TEXT, shape GEOMETRY);
             CREATE TABLE untyped (a TEXT, b);
             CREATE VIEW v AS SELECT * FROM no_key;
             INSERT INTO rowid_alias (n) VALUES ('x');",
        )
        .unwrap();
    let mut r = dir.connector().reader().await.unwrap();
    assert_eq!(r.list_tables().await.unwrap(), ["every", "no_key", "not_alias", "odd", "rowid_alias", "untyped"]);

    let s = r.describe("every").await.unwrap().unwrap();
    let decimal = |p, s| ColumnType::Decimal { precision: p, scale: s };
    let expected = [
        ("b1", ColumnType::Bool),
        ("b2", ColumnType::Bool),
        ("i8", int(1, false)),
        ("u8", int(1, true)),
        ("i16", int(2, false)),
        ("i24", int(3, false)),
        ("i32", int(4, false)),
        ("u32", int(4, true)),
        ("i64a", int(8, false)),
        ("i64b", int(8, false)),
        ("u64", int(8, true)),
        ("f32", ColumnType::Float32),
        ("f64a", ColumnType::Float64),
        ("f64b", ColumnType::Float64),
        ("f64c", ColumnType::Float64),
        ("d1", decimal(Some(10), Some(2))),
        ("d2", decimal(Some(12), Some(4))),
        ("d3", decimal(Some(30), Some(6))),
        ("d4", decimal(None, None)),
        ("d5", decimal(Some(5), Some(0))),
        ("d6", decimal(None, None)),
        ("t1", ColumnType::Text { max_chars: Some(20) }),
        ("t2", ColumnType::Text { max_chars: Some(3) }),
        ("t3", ColumnType::Text { max_chars: Some(7) }),
        ("t4", ColumnType::TEXT),
        ("t5", ColumnType::TEXT),
        ("bl", ColumnType::Bytes { max_bytes: None }),
        ("da", ColumnType::Date),
        ("ti", ColumnType::Time),
        ("ts1", ColumnType::Timestamp),
        ("ts2", ColumnType::Timestamp),
        ("tz", ColumnType::TimestampTz),
        ("j1", ColumnType::Json),
        ("j2", ColumnType::Json),
        ("u", ColumnType::Uuid),
    ];
    let got: Vec<(&str, ColumnType)> = s.columns.iter().map(|c| (c.name.as_str(), c.ty.clone())).collect();
    assert_eq!(got, expected);
    assert_eq!(s.primary_key, ["t1", "i8"]);
    let c = |name| s.column(name).unwrap();
    assert_eq!(c("d2").native, "NUMERIC(12, 4)");
    assert_eq!(c("u64").native, "BIGINT UNSIGNED");
    assert!(!c("i8").nullable && !c("t1").nullable && c("u8").nullable);
    assert!(c("u").has_default && !c("t4").has_default);

    let s = r.describe("ROWID_ALIAS").await.unwrap().unwrap();
    assert_eq!(s.name, "rowid_alias");
    assert_eq!(s.primary_key, ["id"]);
    assert!(s.column("id").unwrap().has_default);
    let s = r.describe("not_alias").await.unwrap().unwrap();
    assert!(!s.column("id").unwrap().has_default);
    let s = r.describe("no_key").await.unwrap().unwrap();
    assert!(s.primary_key.is_empty());

    assert_eq!(r.describe("missing").await.unwrap(), None);
    assert_eq!(r.describe("v").await.unwrap(), None);

    for (table, column, word) in [("odd", "shape", "GEOMETRY"), ("untyped", "b", "no declared type")] {
        let e = r.describe(table).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert_eq!(e.location().table.as_deref(), Some(table));
        assert_eq!(e.location().column.as_deref(), Some(column));
        assert!(e.to_string().contains(word), "{e}");
    }
}

/// Every portable type, as the engine would create it on an SQLite target.
fn every_type_columns() -> Vec<Column> {
    vec![
        col("id", ColumnType::I64, false),
        col("flag", ColumnType::Bool, true),
        col("i8", int(1, false), true),
        col("u8", int(1, true), true),
        col("i16", int(2, false), true),
        col("u16", int(2, true), true),
        col("i24", int(3, false), true),
        col("u24", int(3, true), true),
        col("i32", int(4, false), true),
        col("u32", int(4, true), true),
        col("i64", int(8, false), true),
        col("u64", int(8, true), true),
        col("f32", ColumnType::Float32, true),
        col("f64", ColumnType::Float64, true),
        col("money", ColumnType::Decimal { precision: Some(10), scale: Some(2) }, true),
        col("big", ColumnType::Decimal { precision: Some(40), scale: Some(10) }, true),
        col("anynum", ColumnType::Decimal { precision: None, scale: None }, true),
        col("name", ColumnType::Text { max_chars: Some(10) }, true),
        col("body", ColumnType::TEXT, true),
        col("data", ColumnType::Bytes { max_bytes: None }, true),
        col("day", ColumnType::Date, true),
        col("at", ColumnType::Time, true),
        col("ts", ColumnType::Timestamp, true),
        col("tstz", ColumnType::TimestampTz, true),
        col("doc", ColumnType::Json, true),
        col("uid", ColumnType::Uuid, true),
    ]
}

fn every_type_rows() -> Vec<Vec<Value>> {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let day = |y, m, d| Value::Date(days_from_civil(y, m, d) as i32);
    let uuid = |s| Value::Uuid(parse_uuid(s).unwrap());
    let time_max = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;
    vec![
        vec![
            Value::Int(1),
            Value::Bool(true),
            Value::Int(-128),
            Value::Int(0),
            Value::Int(-32768),
            Value::Int(0),
            Value::Int(-8_388_608),
            Value::Int(0),
            Value::Int(i32::MIN.into()),
            Value::Int(0),
            Value::Int(i64::MIN),
            Value::Int(0),
            Value::F32(f32::from_bits(1)),
            Value::F64(f64::from_bits(1)),
            dec("12.30"),
            dec("123456789012345678901234567890.1234567890"),
            dec("-0.000000000000000000000000000001"),
            Value::Text("😀 naïve".into()),
            Value::Text(String::new()),
            Value::Bytes(all_bytes.clone()),
            day(1969, 12, 31),
            Value::Time(-time_max),
            Value::Timestamp(ts("1969-12-31 23:59:59.999999")),
            Value::TimestampTz(ts("1900-01-01 00:00:00.000001")),
            Value::Json(r#"{"b": [1, 2.50, "x"], "a": null}"#.into()),
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ],
        vec![
            Value::Int(2),
            Value::Bool(false),
            Value::Int(127),
            Value::Int(255),
            Value::Int(32767),
            Value::Int(65535),
            Value::Int(8_388_607),
            Value::Int(16_777_215),
            Value::Int(i32::MAX.into()),
            Value::Int(u32::MAX.into()),
            Value::Int(i64::MAX),
            Value::Int(i64::MAX),
            Value::F32(0.1),
            Value::F64(0.1),
            dec("-99999999.99"),
            dec("-123456789012345678901234567890.0000000000"),
            dec("NaN"),
            Value::Text("a'b\"c\0d".into()),
            Value::Text("𝄞 four-byte".into()),
            Value::Bytes(Vec::new()),
            day(0, 1, 1),
            Value::Time(time_max),
            Value::Timestamp(ts("0000-01-01 00:00:00")),
            Value::TimestampTz(ts("9999-12-31 23:59:59.999999")),
            Value::Json("123".into()),
            uuid("00000000-0000-0000-0000-000000000000"),
        ],
        vec![
            Value::Int(3),
            Value::Null,
            Value::Int(0),
            Value::Null,
            Value::Int(-1),
            Value::Null,
            Value::Int(0),
            Value::Null,
            Value::Int(0),
            Value::Null,
            Value::Int(0),
            Value::Null,
            Value::F32(f32::INFINITY),
            Value::F64(f64::NEG_INFINITY),
            dec("0.00"),
            dec("0.0000000001"),
            dec("-Infinity"),
            Value::Null,
            Value::Null,
            Value::Null,
            day(9999, 12, 31),
            Value::Time(0),
            Value::Timestamp(ts("2024-02-29 12:34:56.123456")),
            Value::TimestampTz(ts("1969-12-31 23:59:59.999999")),
            Value::Json("\"text\"".into()),
            Value::Null,
        ],
        vec![
            Value::Int(4),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::F32(f32::MAX),
            Value::F64(f64::MIN_POSITIVE / 3.0),
            Value::Null,
            Value::Null,
            dec("12.3000"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            uuid("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ],
    ]
}

#[tokio::test]
async fn every_value_type_round_trips_and_upsert_is_idempotent() {
    let dir = TempDir::new("roundtrip");
    let c = dir.connector();
    let s = schema(&c, "every", every_type_columns(), &["id"]);
    let mut w = c.writer().await.unwrap();
    assert_eq!(w.describe("every").await.unwrap(), None);
    w.create_table(&s).await.unwrap();

    // The created table reads back with the same portable types.
    let created = w.describe("every").await.unwrap().unwrap();
    let types = |s: &TableSchema| s.columns.iter().map(|c| c.ty.clone()).collect::<Vec<_>>();
    assert_eq!(types(&created), types(&s));
    assert_eq!(created.primary_key, ["id"]);
    assert_eq!(created.column("money").unwrap().native, "DECIMAL_TEXT(10,2)");
    let e = w.create_table(&s).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");

    let rows = every_type_rows();
    assert_eq!(w.upsert(&created, &rows).await.unwrap(), 4);

    let mut r = c.reader().await.unwrap();
    let scan = scan_of(&created);
    let back = r.scan(&scan, &KeyRange::ALL).await.unwrap();
    assert_eq!(back.len(), rows.len());
    for (got, want) in back.iter().zip(&rows) {
        for ((g, w), column) in got.iter().zip(want).zip(&created.columns) {
            assert_eq!(g, w, "column {}", column.name);
        }
    }
    assert_eq!(r.estimate_rows("every").await.unwrap(), 4);

    // Decimals are stored as canonical text, not rounded through a double.
    let stored: (String, String) = dir
        .raw()
        .query_row("SELECT typeof(money) || ':' || money, big FROM every WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(stored.0, "text:12.30");
    assert_eq!(stored.1, "123456789012345678901234567890.1234567890");

    // Writing again (twice, with a duplicate key inside the batch) leaves each key
    // once, with the last values.
    let mut newer = rows.clone();
    for row in &mut newer {
        row[18] = Value::Text(format!("v2 of {}", row[0]));
        row[13] = Value::F64(-1.5);
    }
    let mut batch = newer.clone();
    batch.insert(0, newer[3].clone());
    batch[1][18] = Value::Text("stale".into());
    batch.push(newer[0].clone());
    w.upsert(&created, &batch).await.unwrap();
    w.upsert(&created, &newer).await.unwrap();
    let back = r.scan(&scan, &KeyRange::ALL).await.unwrap();
    assert_eq!(back, newer);
    assert_eq!(r.estimate_rows("every").await.unwrap(), 4);
}

#[tokio::test]
async fn values_sqlite_cannot_hold_are_refused_naming_column_and_key() {
    let dir = TempDir::new("refused");
    let c = dir.connector();
    let s = schema(
        &c,
        "t",
        vec![
            col("id", ColumnType::I64, false),
            col("f", ColumnType::Float64, true),
            col("g", ColumnType::Float32, true),
            col("u", int(8, true), true),
            col("n", ColumnType::TEXT, false),
        ],
        &["id"],
    );
    let mut w = c.writer().await.unwrap();
    w.create_table(&s).await.unwrap();
    let ok = vec![Value::Int(1), Value::F64(1.0), Value::F32(1.0), Value::Int(1), Value::Text("x".into())];
    let cases = [
        (1, Value::F64(f64::NAN), "f", "NaN"),
        (2, Value::F32(f32::NAN), "g", "NaN"),
        (1, Value::F64(-0.0), "f", "-0.0"),
        (3, Value::UInt(u64::MAX), "u", "cannot hold"),
        (4, Value::Null, "n", "NOT NULL"),
    ];
    for (i, bad, column, word) in cases {
        let mut row = ok.clone();
        row[0] = Value::Int(7);
        row[i] = bad;
        // A good row before the bad one: the batch is all or nothing.
        let e = w.upsert(&s, &[ok.clone(), row]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().column.as_deref(), Some(column), "{e}");
        assert_eq!(e.location().table.as_deref(), Some("t"));
        assert_eq!(e.location().key.as_deref(), Some(&[Value::Int(7)][..]));
        assert!(e.to_string().contains(word), "{e}");
    }
    let mut r = c.reader().await.unwrap();
    assert_eq!(r.estimate_rows("t").await.unwrap(), 0);

    let e = w.upsert(&TableSchema { primary_key: vec![], ..s.clone() }, std::slice::from_ref(&ok)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema);
    let e = w.upsert(&TableSchema { name: "nope".into(), ..s.clone() }, &[ok]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
}

#[tokio::test]
async fn numeric_affinity_decimal_columns() {
    let dir = TempDir::new("numeric");
    dir.raw()
        .execute_batch(
            "CREATE TABLE m (id INTEGER PRIMARY KEY, price DECIMAL(10,2), wide NUMERIC);
             INSERT INTO m VALUES (1, '12.30', '1.50'), (2, '12.00', '7'), (3, '-0.05', 0.25),
                                  (4, 7, NULL), (5, '99999999.99', NULL);",
        )
        .unwrap();
    let stored: String = dir.raw().query_row("SELECT typeof(price) FROM m WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, "real", "SQLite turned '12.30' into a double");

    let c = dir.connector();
    let mut r = c.reader().await.unwrap();
    let s = r.describe("m").await.unwrap().unwrap();
    let scan = scan_of(&s);
    let back = r.scan(&scan, &KeyRange::ALL).await.unwrap();
    let col = |i: usize| back.iter().map(|row| row[i].clone()).collect::<Vec<_>>();
    assert_eq!(col(1), [dec("12.30"), dec("12.00"), dec("-0.05"), dec("7.00"), dec("99999999.99")]);
    // Without a declared scale there is nothing to restore.
    assert_eq!(col(2), [dec("1.5"), dec("7"), dec("0.25"), Value::Null, Value::Null]);

    // Writing through the writer: what survives the double is accepted, what would be
    // rounded is refused.
    let mut w = c.writer().await.unwrap();
    let row = |id, price: &str| vec![Value::Int(id), dec(price), Value::Null];
    w.upsert(&s, &[row(6, "0.10"), row(7, "-12345678.90")]).await.unwrap();
    let e = w.upsert(&s, &[vec![Value::Int(8), Value::Null, dec("123456789012345678901234567890")]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange);
    assert_eq!(e.location().column.as_deref(), Some("wide"));
    assert!(e.to_string().contains("DECIMAL_TEXT"), "{e}");
    let back = r.scan(&scan, &KeyRange { after: Some(vec![Value::Int(5)]), upto: None }).await.unwrap();
    assert_eq!(back, [row(6, "0.10"), row(7, "-12345678.90")]);
}

#[tokio::test]
async fn undecodable_values_name_the_column() {
    let dir = TempDir::new("undecodable");
    dir.raw()
        .execute_batch(
            "CREATE TABLE x (id INTEGER PRIMARY KEY, n INTEGER, b BOOLEAN, d DATE, tz TIMESTAMPTZ, s SMALLINT);
             INSERT INTO x (id, n) VALUES (1, 'abc');
             INSERT INTO x (id, b) VALUES (2, 2);
             INSERT INTO x (id, d) VALUES (3, '2024-02-30');
             INSERT INTO x (id, tz) VALUES (4, '2024-01-01 10:00:00');
             INSERT INTO x (id, s) VALUES (5, 40000);
             INSERT INTO x (id, n, tz) VALUES (6, '42', '2024-01-01T12:00:00+02:00');",
        )
        .unwrap();
    let mut r = dir.connector().reader().await.unwrap();
    let s = r.describe("x").await.unwrap().unwrap();
    let scan = scan_of(&s);
    for (id, column, word) in [
        (1, "n", "TEXT value is not an integer"),
        (2, "b", "not a boolean"),
        (3, "d", "not a date"),
        (4, "tz", "without a UTC offset"),
        (5, "s", "out of range"),
    ] {
        let range = KeyRange { after: Some(vec![Value::Int(id - 1)]), upto: Some(vec![Value::Int(id)]) };
        let e = r.scan(&scan, &range).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().column.as_deref(), Some(column), "{e}");
        assert_eq!(e.location().table.as_deref(), Some("x"));
        assert!(e.to_string().contains(word), "{e}");
        assert!(!e.to_string().contains("abc") && !e.to_string().contains("40000"));
    }
    let range = KeyRange { after: Some(vec![Value::Int(5)]), upto: None };
    let back = r.scan(&scan, &range).await.unwrap();
    assert_eq!(back[0][1], Value::Int(42));
    assert_eq!(back[0][4], Value::TimestampTz(ts("2024-01-01 10:00:00")));
}

/// Rows of a table with a composite (int, text) key, in key order.
fn composite_rows() -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for a in [i64::MIN, -10, -2, -1, 0, 1, 2, 10] {
        for b in ["", "A", "a", "a\0b", "a'b", "b", "é", "😀"] {
            let tenant = if a < 0 {
                "neg"
            } else if a == 0 {
                "zero"
            } else {
                "pos"
            };
            rows.push(vec![Value::Int(a), Value::Text(b.into()), Value::Text(tenant.into())]);
        }
    }
    rows.sort_by(|x, y| match (x[0].clone(), y[0].clone(), &x[1], &y[1]) {
        (Value::Int(a), Value::Int(b), Value::Text(s), Value::Text(t)) => (a, s).cmp(&(b, t)),
        _ => unreachable!(),
    });
    rows
}

async fn composite_table(dir: &TempDir) -> (SqliteConnector, TableSchema) {
    let c = dir.connector();
    let s = schema(
        &c,
        "pairs",
        vec![
            col("a", ColumnType::I64, false),
            col("b", ColumnType::Text { max_chars: Some(10) }, false),
            col("tenant", ColumnType::TEXT, true),
        ],
        &["a", "b"],
    );
    let mut w = c.writer().await.unwrap();
    w.create_table(&s).await.unwrap();
    let mut rows = composite_rows();
    rows.reverse();
    w.upsert(&s, &rows).await.unwrap();
    (c, s)
}

#[tokio::test]
async fn key_after_walks_a_composite_key() {
    let dir = TempDir::new("keyafter");
    let (c, s) = composite_table(&dir).await;
    let rows = composite_rows();
    let key = |row: &Vec<Value>| row[..2].to_vec();
    let mut r = c.reader().await.unwrap();
    let scan = scan_of(&s);

    for step in [1u64, 3, 7, 64, 65] {
        let mut bounds = Vec::new();
        let mut after: Option<Vec<Value>> = None;
        while let Some(k) = r.key_after(&scan, after.as_deref(), step).await.unwrap() {
            bounds.push(k.clone());
            after = Some(k);
        }
        let expected: Vec<Vec<Value>> = rows.iter().skip(step as usize - 1).step_by(step as usize).map(key).collect();
        assert_eq!(bounds, expected, "step {step}");

        // The chunks between the boundaries hold every row exactly once, in order.
        let mut edges: Vec<Option<Vec<Value>>> = vec![None];
        edges.extend(bounds.into_iter().map(Some));
        edges.push(None);
        let mut all = Vec::new();
        for pair in edges.windows(2) {
            let range = KeyRange { after: pair[0].clone(), upto: pair[1].clone() };
            all.extend(r.scan(&scan, &range).await.unwrap());
        }
        assert_eq!(all, rows, "step {step}");
    }
    // Boundaries right at zero and below.
    let zero = vec![Value::Int(0), Value::Text(String::new())];
    let next = r.key_after(&scan, Some(&zero), 1).await.unwrap();
    assert_eq!(next, Some(vec![Value::Int(0), Value::Text("A".into())]));
    let neg = vec![Value::Int(-1), Value::Text("😀".into())];
    let next = r.key_after(&scan, Some(&neg), 1).await.unwrap();
    assert_eq!(next, Some(zero));
}

#[tokio::test]
async fn scan_returns_exactly_the_range_filter_and_partition() {
    let dir = TempDir::new("scan");
    let (c, s) = composite_table(&dir).await;
    let rows = composite_rows();
    let mut r = c.reader().await.unwrap();
    let mut scan = scan_of(&s);
    let k = |a: i64, b: &str| vec![Value::Int(a), Value::Text(b.into())];
    let range = KeyRange { after: Some(k(-2, "a\0b")), upto: Some(k(1, "a")) };
    let in_range = |row: &&Vec<Value>| {
        let key = (&row[0], &row[1]);
        let after = (&Value::Int(-2), &Value::Text("a\0b".into()));
        let upto = (&Value::Int(1), &Value::Text("a".into()));
        let cmp = |x: (&Value, &Value), y: (&Value, &Value)| match (x, y) {
            ((Value::Int(a), Value::Text(s)), (Value::Int(b), Value::Text(t))) => (a, s).cmp(&(b, t)),
            _ => unreachable!(),
        };
        cmp(key, after).is_gt() && cmp(key, upto).is_le()
    };
    let want: Vec<Vec<Value>> = rows.iter().filter(in_range).cloned().collect();
    assert_eq!(want.first().unwrap()[..2], k(-2, "a'b")[..]);
    assert_eq!(want.last().unwrap()[..2], k(1, "a")[..]);
    assert_eq!(r.scan(&scan, &range).await.unwrap(), want);

    // A filter and a partition narrow the same range.
    scan.filter = Some("b <> 'b'".into());
    scan.partition = Some(PartitionFilter { column: "tenant".into(), value: Value::Text("neg".into()) });
    let want: Vec<Vec<Value>> = rows
        .iter()
        .filter(in_range)
        .filter(|row| row[1] != Value::Text("b".into()) && row[2] == Value::Text("neg".into()))
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(r.scan(&scan, &range).await.unwrap(), want);

    // SQL expressions and a reordered select list.
    scan.partition = None;
    scan.filter = None;
    scan.select = vec![
        SelectItem { expr: SelectExpr::Sql("a * 2".into()), ty: ColumnType::I64 },
        SelectItem { expr: SelectExpr::Column("tenant".into()), ty: ColumnType::TEXT },
    ];
    let got = r.scan(&scan, &KeyRange { after: Some(k(1, "😀")), upto: Some(k(2, "A")) }).await.unwrap();
    assert_eq!(got, [vec![Value::Int(4), Value::Text("pos".into())], vec![Value::Int(4), Value::Text("pos".into())]]);
    let types = r
        .describe_exprs("pairs", &["a % 7".into(), "a / 3.0".into(), "b || 'x'".into(), "NULL".into(), "x'00'".into()])
        .await
        .unwrap();
    assert_eq!(
        types,
        [
            ColumnType::I64,
            ColumnType::Float64,
            ColumnType::TEXT,
            ColumnType::TEXT,
            ColumnType::Bytes { max_bytes: None }
        ]
    );
}

#[tokio::test]
async fn partitions_count_rows_smallest_first() {
    let dir = TempDir::new("partitions");
    let (c, _) = composite_table(&dir).await;
    dir.raw().execute("INSERT INTO pairs VALUES (100, 'x', NULL)", []).unwrap();
    let mut r = c.reader().await.unwrap();
    let text = |s: &str| Value::Text(s.into());
    let parts = r.partitions("pairs", "tenant", &ColumnType::TEXT, None).await.unwrap();
    assert_eq!(parts, [(Value::Null, 1), (text("zero"), 8), (text("pos"), 24), (text("neg"), 32)]);
    let parts = r.partitions("pairs", "tenant", &ColumnType::TEXT, Some("a >= 0")).await.unwrap();
    assert_eq!(parts, [(Value::Null, 1), (text("zero"), 8), (text("pos"), 24)]);

    let e = r.partitions("nope", "tenant", &ColumnType::TEXT, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
}

#[tokio::test]
async fn connecting() {
    let dir = TempDir::new("connect");
    let c = dir.connector();
    assert_eq!(c.path(), dir.path().join("test.db"));

    let Err(e) = c.reader().await else { panic!("reader opened a missing file") };
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(e.to_string(), format!("SQLite database {} does not exist", dir.path().join("test.db").display()));

    // The writer creates the file, in WAL mode.
    let w = c.writer().await.unwrap();
    drop(w);
    let mode: String = dir.raw().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let mut r = c.reader().await.unwrap();
    assert!(r.list_tables().await.unwrap().is_empty());

    let absolute = format!("sqlite://{}", dir.path().join("test.db").display());
    let c2 = SqliteConnector::new(&SecretUrl::new(absolute), Path::new("/elsewhere")).unwrap();
    assert_eq!(c2.path(), c.path());
    c2.reader().await.unwrap();

    let missing_dir = SqliteConnector::new(&SecretUrl::new("sqlite:no/such/dir/x.db"), dir.path()).unwrap();
    let Err(e) = missing_dir.writer().await else { panic!("writer opened a file in a missing directory") };
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}
