//! The PostgreSQL connector against a real PostgreSQL server (pontoon-testsupport).

use pontoon_core::value::{MICROS_PER_DAY, days_from_civil, parse_uuid};
use pontoon_core::{
    Column, ColumnType, Connector, Decimal, Engine, ErrorKind, KeyRange, PartitionFilter, RawRows, Reader, Row,
    ScanSpec, SecretUrl, SelectExpr, SelectItem, TableSchema, Value, Writer,
};
use pontoon_postgres::{PgConnector, copy_stream};
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

/// The error of a result whose success value has no `Debug`.
fn err<T>(r: pontoon_core::Result<T>) -> pontoon_core::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), native: String::new(), ty, nullable: true, has_default: false }
}

fn int(bytes: u8) -> ColumnType {
    ColumnType::Int { bytes, unsigned: false }
}

fn dec(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).unwrap())
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn date(y: i64, m: u32, d: u32) -> Value {
    Value::Date(days_from_civil(y, m, d) as i32)
}

fn micros(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, us: i64) -> i64 {
    days_from_civil(y, mo, d) * MICROS_PER_DAY + ((h * 60 + mi) * 60 + s) * 1_000_000 + us
}

fn uuid(s: &str) -> Value {
    Value::Uuid(parse_uuid(s).unwrap())
}

/// Reads every column of `schema` in key order.
fn spec_of(schema: &TableSchema) -> ScanSpec {
    ScanSpec::every_column(schema, &schema.primary_key)
}

/// Rows from per-column value lists (shorter lists are padded with NULL), with the
/// row number as the first column.
fn rows_of(columns: &[Vec<Value>]) -> Vec<Row> {
    let n = columns.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| {
            let mut row = vec![Value::Int(i as i64)];
            row.extend(columns.iter().map(|c| c.get(i).cloned().unwrap_or(Value::Null)));
            row
        })
        .collect()
}

#[tokio::test]
async fn describe_maps_every_supported_type() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE all_types (
            a smallint NOT NULL, b integer, c bigint DEFAULT 5, d real, e double precision,
            f numeric(12,3), g numeric, h boolean, i text, j varchar(20), k char(3), l name,
            m bytea, n date, o time, p timestamp, q timestamptz, r json, s jsonb, t uuid,
            u integer GENERATED ALWAYS AS IDENTITY, v integer GENERATED ALWAYS AS (b * 2) STORED,
            w timestamp(3), x character varying,
            PRIMARY KEY (t, a));
         ALTER TABLE all_types DROP COLUMN x;
         CREATE TABLE \"Mixed \"\"Case\"\"\" (id int PRIMARY KEY);
         CREATE TABLE measurements (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE measurements_2024 PARTITION OF measurements
             FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE VIEW a_view AS SELECT 1 AS one;
         CREATE SCHEMA other; CREATE TABLE other.hidden (id int);",
    );
    let mut r = reader(&db).await;
    assert_eq!(r.list_tables().await.unwrap(), vec!["Mixed \"Case\"", "all_types", "measurements"]);
    assert!(r.describe("a_view").await.unwrap().is_none());
    assert!(r.describe("hidden").await.unwrap().is_none());
    assert!(r.describe("missing").await.unwrap().is_none());
    assert_eq!(r.describe("Mixed \"Case\"").await.unwrap().unwrap().primary_key, vec!["id"]);
    let s = r.describe("all_types").await.unwrap().unwrap();
    assert_eq!(s.name, "all_types");
    assert_eq!(s.primary_key, vec!["t", "a"]);
    let expect: Vec<(&str, ColumnType, &str)> = vec![
        ("a", int(2), "smallint"),
        ("b", ColumnType::I32, "integer"),
        ("c", ColumnType::I64, "bigint"),
        ("d", ColumnType::Float32, "real"),
        ("e", ColumnType::Float64, "double precision"),
        ("f", ColumnType::Decimal { precision: Some(12), scale: Some(3) }, "numeric(12,3)"),
        ("g", ColumnType::Decimal { precision: None, scale: None }, "numeric"),
        ("h", ColumnType::Bool, "boolean"),
        ("i", ColumnType::TEXT, "text"),
        ("j", ColumnType::Text { max_chars: Some(20) }, "character varying(20)"),
        ("k", ColumnType::Text { max_chars: Some(3) }, "character(3)"),
        ("l", ColumnType::TEXT, "name"),
        ("m", ColumnType::Bytes { max_bytes: None }, "bytea"),
        ("n", ColumnType::Date, "date"),
        ("o", ColumnType::Time, "time without time zone"),
        ("p", ColumnType::Timestamp, "timestamp without time zone"),
        ("q", ColumnType::TimestampTz, "timestamp with time zone"),
        ("r", ColumnType::Json, "json"),
        ("s", ColumnType::Json, "jsonb"),
        ("t", ColumnType::Uuid, "uuid"),
        ("u", ColumnType::I32, "integer"),
        ("v", ColumnType::I32, "integer"),
        ("w", ColumnType::Timestamp, "timestamp(3) without time zone"),
    ];
    let got: Vec<(&str, ColumnType, &str)> =
        s.columns.iter().map(|c| (c.name.as_str(), c.ty.clone(), c.native.as_str())).collect();
    assert_eq!(got, expect);
    let flags: Vec<(&str, bool, bool)> = s
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.nullable, c.has_default))
        .filter(|(n, ..)| ["a", "b", "c", "t", "u", "v"].contains(n))
        .collect();
    assert_eq!(
        flags,
        vec![
            ("a", false, false),
            ("b", true, false),
            ("c", true, true),
            ("t", false, false),
            ("u", false, true),
            ("v", true, true),
        ]
    );
    // the writer describes the same way
    let mut w = writer(&db).await;
    assert_eq!(w.describe("all_types").await.unwrap().unwrap(), s);

    let types = r
        .describe_exprs(
            "all_types",
            &["b + 1".into(), "f".into(), "i || 'x'".into(), "now()".into(), "f * 2".into(), "s -> 'k'".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        types,
        vec![
            ColumnType::I32,
            ColumnType::Decimal { precision: Some(12), scale: Some(3) },
            ColumnType::TEXT,
            ColumnType::TimestampTz,
            ColumnType::Decimal { precision: None, scale: None },
            ColumnType::Json,
        ]
    );
    let e = r.describe_exprs("all_types", &["ARRAY[b]".into()]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = r.describe_exprs("all_types", &["nope + 1".into()]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
}

#[tokio::test]
async fn unsupported_types_name_the_column() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, tags int4[]);
         CREATE TABLE u (id int PRIMARY KEY, span interval);
         CREATE TABLE v (id int PRIMARY KEY, n numeric(5,-2));",
    );
    let mut r = reader(&db).await;
    let e = r.describe("t").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(e.location().column.as_deref(), Some("tags"));
    assert_eq!(e.location().table.as_deref(), Some("t"));
    assert!(e.to_string().contains("integer[]"), "{e}");
    let e = r.describe("u").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("column span") && e.to_string().contains("interval"));
    let e = r.describe("v").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("numeric(5,-2)"), "{e}");
}

/// The table of every value type, as the engine would create it.
fn every_type_schema() -> TableSchema {
    TableSchema {
        name: "every_type".into(),
        columns: vec![
            Column { nullable: false, ..col("id", ColumnType::I64) },
            col("i16", int(2)),
            col("i32", ColumnType::I32),
            col("i64", ColumnType::I64),
            col("u64", ColumnType::Int { bytes: 8, unsigned: true }),
            col("big", ColumnType::Decimal { precision: None, scale: None }),
            col("money", ColumnType::Decimal { precision: Some(15), scale: Some(3) }),
            col("f32", ColumnType::Float32),
            col("f64", ColumnType::Float64),
            col("flag", ColumnType::Bool),
            col("body", ColumnType::TEXT),
            col("short", ColumnType::Text { max_chars: Some(5) }),
            col("blob", ColumnType::Bytes { max_bytes: None }),
            col("day", ColumnType::Date),
            col("clock", ColumnType::Time),
            col("at", ColumnType::Timestamp),
            col("at_tz", ColumnType::TimestampTz),
            col("doc", ColumnType::Json),
            col("uid", ColumnType::Uuid),
        ],
        primary_key: vec!["id".into()],
    }
}

fn every_type_values() -> Vec<Vec<Value>> {
    let all_bytes: Vec<u8> = (0..=255).collect();
    vec![
        // i16, i32, i64
        vec![Value::Int(-32768), Value::Int(32767), Value::Int(0)],
        vec![Value::Int(i32::MIN as i64), Value::Int(i32::MAX as i64), Value::Int(-1)],
        vec![Value::Int(i64::MIN), Value::Int(i64::MAX), Value::Int(0)],
        // u64 (numeric(20,0))
        vec![Value::UInt(u64::MAX), Value::Int(0), Value::Int(i64::MAX)],
        // big (numeric)
        vec![
            dec("1234567890123456789012345678901234567890"),
            dec("-0.0000000000000000000000000000000000000001"),
            dec("NaN"),
            dec("Infinity"),
            dec("-Infinity"),
            dec("0"),
            dec("10000.0000"),
            dec("-99999999999999999999.99999999999999999999"),
        ],
        // money (numeric(15,3))
        vec![dec("123456789012.345"), dec("-0.001"), dec("0.000"), dec("NaN"), dec("1.500")],
        // f32
        vec![
            Value::F32(f32::NAN),
            Value::F32(f32::INFINITY),
            Value::F32(f32::NEG_INFINITY),
            Value::F32(-0.0),
            Value::F32(f32::from_bits(1)),
            Value::F32(0.1),
            Value::F32(f32::MAX),
            Value::F32(f32::MIN_POSITIVE),
        ],
        // f64
        vec![
            Value::F64(f64::NAN),
            Value::F64(f64::INFINITY),
            Value::F64(f64::NEG_INFINITY),
            Value::F64(-0.0),
            Value::F64(f64::from_bits(1)),
            Value::F64(0.1),
            Value::F64(f64::MAX),
            Value::F64(1.0 / 3.0),
        ],
        // flag
        vec![Value::Bool(true), Value::Bool(false)],
        // body
        vec![text("😀 𝄞 naïve"), text(""), Value::Null, text("it's a \\ back'slash\nnew line\ttab")],
        // short (varchar(5))
        vec![text("😀😀😀😀😀"), text(""), text("abcde")],
        // blob
        vec![Value::Bytes(all_bytes), Value::Bytes(vec![]), Value::Null, Value::Bytes(vec![0])],
        // day
        vec![
            date(1, 1, 1),
            date(-43, 3, 15),
            date(1970, 1, 1),
            date(1999, 12, 31),
            date(2000, 1, 1),
            date(-4713, 11, 24),
            date(5_874_897, 12, 31),
            date(9999, 12, 31),
        ],
        // clock
        vec![
            Value::Time(0),
            Value::Time(86_400_000_000),
            Value::Time(86_399_999_999),
            Value::Time(12 * 3_600_000_000 + 1),
        ],
        // at
        vec![
            Value::Timestamp(micros(2024, 2, 29, 23, 59, 59, 999_999)),
            Value::Timestamp(-1),
            Value::Timestamp(micros(1, 1, 1, 0, 0, 0, 0)),
            Value::Timestamp(micros(-43, 3, 15, 12, 0, 0, 1)),
            Value::Timestamp(micros(1969, 7, 20, 20, 17, 40, 123_456)),
            Value::Timestamp(micros(-4713, 11, 24, 0, 0, 0, 0)),
            Value::Timestamp(i64::MAX),
            Value::Timestamp(0),
        ],
        // at_tz
        vec![
            Value::TimestampTz(micros(2024, 3, 31, 1, 30, 0, 1)),
            Value::TimestampTz(-1),
            Value::TimestampTz(micros(1900, 1, 1, 0, 0, 0, 0)),
            Value::TimestampTz(micros(-1000, 6, 1, 0, 0, 0, 999_999)),
        ],
        // doc
        vec![
            Value::Json(r#"{"b": [1, 2.50, "x"], "a": {"z": null, "y": true}}"#.into()),
            Value::Json(r#""a string with \"quotes\" and 😀""#.into()),
            Value::Json("[]".into()),
            Value::Json("123.4500".into()),
        ],
        // uid
        vec![
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            uuid("00000000-0000-0000-0000-000000000000"),
            uuid("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ],
    ]
}

fn json(v: &Value) -> serde_json::Value {
    match v {
        Value::Json(s) => serde_json::from_str(s).unwrap(),
        other => panic!("not json: {other:?}"),
    }
}

#[tokio::test]
async fn every_value_type_round_trips() {
    let db = pg_db();
    let schema = every_type_schema();
    let mut w = writer(&db).await;
    w.create_table(&schema).await.unwrap();
    // what create_table made
    let made = w.describe("every_type").await.unwrap().unwrap();
    let natives: Vec<&str> = made.columns.iter().map(|c| c.native.as_str()).collect();
    assert_eq!(
        natives,
        vec![
            "bigint",
            "smallint",
            "integer",
            "bigint",
            "numeric(20,0)",
            "numeric",
            "numeric(15,3)",
            "real",
            "double precision",
            "boolean",
            "text",
            "character varying(5)",
            "bytea",
            "date",
            "time without time zone",
            "timestamp without time zone",
            "timestamp with time zone",
            "jsonb",
            "uuid",
        ]
    );
    assert!(!made.columns[0].nullable && made.columns[1].nullable);
    assert_eq!(made.primary_key, vec!["id"]);

    let rows = rows_of(&every_type_values());
    assert_eq!(w.upsert(&schema, &rows).await.unwrap(), rows.len() as u64);

    let mut r = reader(&db).await;
    let back = r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap();
    assert_eq!(back.len(), rows.len());
    let u64_col = schema.position("u64").unwrap();
    let doc_col = schema.position("doc").unwrap();
    for (written, read) in rows.iter().zip(&back) {
        for (i, (a, b)) in written.iter().zip(read).enumerate() {
            let name = &schema.columns[i].name;
            if i == doc_col && !a.is_null() {
                assert_eq!(json(a), json(b), "column {name}");
            } else if i == u64_col {
                // numeric(20,0) reads back as a decimal
                let expect = match a {
                    Value::UInt(u) => dec(&u.to_string()),
                    Value::Int(n) => dec(&n.to_string()),
                    other => other.clone(),
                };
                assert_eq!(&expect, b, "column {name}");
            } else {
                assert_eq!(a, b, "column {name} of row {:?}", written[0]);
            }
        }
    }

    // PostgreSQL's own rendering of what was written (the encoder is not only
    // checked against its own decoder)
    let shown = db.sql(
        "SELECT big::text, money::text, day::text, clock::text, at::text, at_tz::text
         FROM every_type WHERE id = 1",
    );
    assert_eq!(
        shown,
        "-0.0000000000000000000000000000000000000001|-0.001|0044-03-15 BC|24:00:00\
         |1969-12-31 23:59:59.999999|1969-12-31 23:59:59.999999+00"
    );
    let shown = db.sql(
        "SELECT f32::text, f64::text, length(blob), md5(blob), octet_length(body), body
         FROM every_type WHERE id = 0",
    );
    assert_eq!(shown, "NaN|NaN|256|e2c865db4162bed963bfaa9ef6ac18f0|16|😀 𝄞 naïve");
    let shown = db.sql("SELECT at::text, day::text FROM every_type WHERE id IN (3, 5) ORDER BY id");
    assert_eq!(shown, "0044-03-15 12:00:00.000001 BC|1999-12-31\n4714-11-24 00:00:00 BC|4714-11-24 BC");
}

#[tokio::test]
async fn values_written_by_sql_decode_exactly() {
    // independent of the encoder: PostgreSQL parses the text, the reader decodes
    let db = pg_db();
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, n numeric, d date, ts timestamp, tz timestamptz,
                         tm time, j json, jb jsonb, c char(4), nm name, f4 real, f8 float8,
                         b bytea, u uuid);
         INSERT INTO t VALUES
           (1, '12345.678', '2000-01-01', '1999-12-31 23:59:59.999999', '2024-06-01 12:00:00+02',
            '24:00', '{\"b\": 1,  \"a\": 2}', '{\"b\": 1, \"a\": 2}', 'ab', 'a name',
            '0.1', '-0', '\\x00ff', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'),
           (2, '-0.00010', '0001-01-01 BC', '0001-01-01 00:00:00 BC', '1970-01-01 00:00:00+00',
            '00:00:00.000001', '[1,2]', '[1, 2]', '', '', 'Infinity', '1e-320', '', NULL),
           (3, '1e30', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let mut r = reader(&db).await;
    let schema = r.describe("t").await.unwrap().unwrap();
    let rows = r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap();
    assert_eq!(
        rows[0],
        vec![
            Value::Int(1),
            dec("12345.678"),
            date(2000, 1, 1),
            Value::Timestamp(micros(1999, 12, 31, 23, 59, 59, 999_999)),
            Value::TimestampTz(micros(2024, 6, 1, 10, 0, 0, 0)),
            Value::Time(86_400_000_000),
            Value::Json("{\"b\": 1,  \"a\": 2}".into()),
            Value::Json("{\"a\": 2, \"b\": 1}".into()),
            text("ab  "),
            text("a name"),
            Value::F32(0.1),
            Value::F64(-0.0),
            Value::Bytes(vec![0, 255]),
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ]
    );
    assert_eq!(
        rows[1],
        vec![
            Value::Int(2),
            dec("-0.00010"),
            date(0, 1, 1),
            Value::Timestamp(micros(0, 1, 1, 0, 0, 0, 0)),
            Value::TimestampTz(0),
            Value::Time(1),
            Value::Json("[1,2]".into()),
            Value::Json("[1, 2]".into()),
            text("    "),
            text(""),
            Value::F32(f32::INFINITY),
            Value::F64(1e-320),
            Value::Bytes(vec![]),
            Value::Null,
        ]
    );
    assert_eq!(rows[2][1], dec("1000000000000000000000000000000"));
    assert!(rows[2][2..].iter().all(Value::is_null));

    // infinite dates and timestamps cannot be represented: an error naming the column
    db.sql("UPDATE t SET d = 'infinity' WHERE id = 3");
    let e = r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap_err();
    assert_eq!(e.location().column.as_deref(), Some("d"));
    assert!(e.to_string().contains("infinite date"), "{e}");
    db.sql("UPDATE t SET d = NULL, tz = '-infinity' WHERE id = 3");
    let e = r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap_err();
    assert_eq!(e.location().column.as_deref(), Some("tz"));
}

#[tokio::test]
async fn writer_encodes_for_the_actual_column_types() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, j json, small smallint, c char(3), nm name,
                         ts3 timestamp(3), n2 numeric(6,2), big numeric(20,0), f8 float8,
                         s varchar(4));",
    );
    let mut w = writer(&db).await;
    let schema = w.describe("t").await.unwrap().unwrap();
    let row = vec![
        Value::Int(1),
        Value::Json(r#"{"keep":  "my",   "spacing": 1}"#.into()),
        Value::Int(-7),
        text("ab"),
        text("nm"),
        Value::Timestamp(micros(2024, 1, 1, 0, 0, 1, 123_000)),
        dec("1.5"),
        Value::UInt(u64::MAX),
        Value::F32(0.1),
        text("😀é"),
    ];
    w.upsert(&schema, std::slice::from_ref(&row)).await.unwrap();
    let mut r = reader(&db).await;
    let back = r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap();
    assert_eq!(
        back[0],
        vec![
            Value::Int(1),
            Value::Json(r#"{"keep":  "my",   "spacing": 1}"#.into()),
            Value::Int(-7),
            text("ab "),
            text("nm"),
            Value::Timestamp(micros(2024, 1, 1, 0, 0, 1, 123_000)),
            dec("1.50"),
            dec("18446744073709551615"),
            Value::F64(0.1f32 as f64),
            text("😀é"),
        ]
    );

    // values PostgreSQL would change or refuse: errors naming the column, no value shown
    let cases: Vec<(usize, Value, &str)> = vec![
        (2, Value::Int(40_000), "small"),
        (5, Value::Timestamp(micros(2024, 1, 1, 0, 0, 1, 123_456)), "ts3"),
        (6, dec("1.555"), "n2"),
        (3, text("abcd"), "c"),
        (9, text("abcde"), "s"),
        (4, text("nul\0inside"), "nm"),
    ];
    for (i, v, column) in cases {
        let mut bad = row.clone();
        bad[0] = Value::Int(2);
        bad[i] = v;
        let e = w.upsert(&schema, &[bad]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().column.as_deref(), Some(column), "{e}");
        assert_eq!(e.location().key, Some(vec![Value::Int(2)]), "{e}");
        assert_eq!(e.location().table.as_deref(), Some("t"), "{e}");
        assert!(!e.to_string().contains("40000") && !e.to_string().contains("nul"));
    }
    // a value of the wrong kind is a schema error
    let mut bad = row.clone();
    bad[1] = Value::Bool(true);
    let e = w.upsert(&schema, &[bad]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("j"));
    // numeric overflow is caught by PostgreSQL (class 22)
    let mut bad = row.clone();
    bad[6] = dec("123456.00");
    let e = w.upsert(&schema, &[bad]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert!(e.to_string().contains("22003"), "{e}");
    // located by the server's COPY context
    assert_eq!(e.location().column.as_deref(), Some("n2"), "{e}");
    assert_eq!(e.location().key, Some(vec![Value::Int(1)]), "{e}");
    // NULL into NOT NULL: the server names the column
    let mut bad = row.clone();
    bad[0] = Value::Null;
    let e = w.upsert(&schema, &[bad]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Database, "{e}");
    assert!(e.to_string().contains("23502"), "{e}");
    assert_eq!(e.location().column.as_deref(), Some("id"), "{e}");
    // nothing of the failed batches was written
    assert_eq!(db.sql("SELECT count(*) FROM t"), "1");
    // and the connection is still good
    let mut good = row.clone();
    good[0] = Value::Int(3);
    w.upsert(&schema, &[good]).await.unwrap();
    assert_eq!(db.sql("SELECT count(*) FROM t"), "2");
}

/// A batch of many megabytes goes out in many `COPY` messages: every value arrives
/// (NULL and '' kept apart across message boundaries), and an error far into the
/// batch, found by our encoder or by the server, still names that row's key and
/// leaves nothing written.
#[tokio::test]
async fn large_batches_are_written_exactly_and_fail_whole() {
    let db = pg_db();
    db.sql("CREATE TABLE big (id int PRIMARY KEY, t text, b bytea, n numeric(10,2), s smallint)");
    let mut w = writer(&db).await;
    let schema = w.describe("big").await.unwrap().unwrap();
    let row = |i: i64| -> Row {
        vec![
            Value::Int(i),
            match i % 3 {
                0 => Value::Null,
                1 => text(""),
                _ => text(&"é".repeat((i % 200 + 1) as usize)),
            },
            if i % 5 == 0 { Value::Null } else { Value::Bytes(vec![(i % 256) as u8; (i % 97) as usize]) },
            dec(&format!("{}.{:02}", i, i % 100)),
            Value::Int(i % 30_000),
        ]
    };
    let rows: Vec<Row> = (0..30_000).map(row).collect();
    assert_eq!(w.upsert(&schema, &rows).await.unwrap(), 30_000);
    let back = reader(&db).await.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap();
    assert_eq!(back, rows);
    assert_eq!(
        db.sql("SELECT count(*) FILTER (WHERE t IS NULL), count(*) FILTER (WHERE t = '') FROM big"),
        "10000|10000"
    );

    db.sql("TRUNCATE big");
    // our encoder refuses a value (NUL in text) in row 25,000: the pieces before it
    // were sent, the COPY is abandoned
    let mut bad = rows.clone();
    bad[25_000][1] = text("a\0b");
    let e = w.upsert(&schema, &bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().key, Some(vec![Value::Int(25_000)]), "{e}");
    assert_eq!(e.location().column.as_deref(), Some("t"), "{e}");
    // the server refuses one (numeric overflow) in row 27,000: located by its COPY context
    let mut bad = rows.clone();
    bad[27_000][3] = dec("123456789.00");
    let e = w.upsert(&schema, &bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().key, Some(vec![Value::Int(27_000)]), "{e}");
    assert_eq!(e.location().column.as_deref(), Some("n"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM big"), "0");
    // the connection is still good
    assert_eq!(w.upsert(&schema, &rows).await.unwrap(), 30_000);
    assert_eq!(db.sql("SELECT count(*) FROM big"), "30000");
}

/// The rows through the writer's `BulkEncoder`.
async fn encode(w: &mut Box<dyn Writer>, schema: &TableSchema, rows: &[Row]) -> pontoon_core::Result<RawRows> {
    // a used buffer: its bytes must not leak into the encoding
    let mut e = w.bulk_encoder(schema, vec![0xff; 100]).await?.expect("PostgreSQL has a bulk encoder");
    for row in rows {
        e.push(row)?;
    }
    Ok(e.finish())
}

/// Rows encoded ahead of the write by the writer's `BulkEncoder` (the copy's path
/// for decoded rows) arrive exactly as `upsert` writes them; the encoder refuses what
/// `upsert` refuses, and an error the server finds names the row's key.
#[tokio::test]
async fn bulk_encoded_rows_are_written_exactly() {
    let db = pg_db();
    db.sql("CREATE TABLE enc (id int PRIMARY KEY, t text, n numeric(10,2), ts timestamp(3), j jsonb)");
    let mut w = writer(&db).await;
    let schema = w.describe("enc").await.unwrap().unwrap();
    let rows: Vec<Row> = (0..20_000i64)
        .map(|i| {
            vec![
                Value::Int(i),
                match i % 3 {
                    0 => Value::Null,
                    1 => text(""),
                    _ => text(&format!("row {i} 😀 {}", "x".repeat((i % 300) as usize))),
                },
                dec(&format!("-{}.{:02}", i, i % 100)),
                Value::Timestamp(micros(2024, 2, 29, 23, 59, 59, (i % 1000) * 1000)),
                Value::Json(format!(r#"{{"i": {i}}}"#)),
            ]
        })
        .collect();
    let raw = encode(&mut w, &schema, &rows).await.unwrap();
    assert_eq!(raw.rows, 20_000);
    assert_eq!(copy_stream::count_rows(&raw.data, Some(5)), Ok(20_000));
    assert_eq!(raw.key(19_999, 1), Some(vec![Value::Int(19_999)]));
    assert_eq!(w.upsert_raw(&schema, &raw).await.unwrap(), 20_000);
    let back = reader(&db).await.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap();
    assert_eq!(back, rows);
    // again: the rows exist, the staging path upserts them
    assert_eq!(w.upsert_raw(&schema, &raw).await.unwrap(), 20_000);
    assert_eq!(db.sql("SELECT count(*) FROM enc"), "20000");

    // the encoder refuses what upsert refuses (a fraction timestamp(3) would round)
    let mut bad = rows.clone();
    bad[123][3] = Value::Timestamp(micros(2024, 1, 1, 0, 0, 0, 1));
    let e = encode(&mut w, &schema, &bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("ts"), "{e}");
    // a value only the server refuses (numeric overflow) names the row's key
    db.sql("TRUNCATE enc");
    let mut bad = rows.clone();
    bad[17_000][2] = dec("123456789.00");
    let raw = encode(&mut w, &schema, &bad).await.unwrap();
    let e = w.upsert_raw(&schema, &raw).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().key, Some(vec![Value::Int(17_000)]), "{e}");
    assert_eq!(e.location().column.as_deref(), Some("n"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM enc"), "0");
}

#[tokio::test]
async fn limits_are_postgres_limits() {
    let db = pg_db();
    let c = connector(&db);
    let limits = c.limits();
    let schema = TableSchema {
        name: "edges".into(),
        columns: vec![
            Column { nullable: false, ..col("id", ColumnType::I32) },
            col("d", ColumnType::Date),
            col("ts", ColumnType::Timestamp),
            col("tm", ColumnType::Time),
        ],
        primary_key: vec!["id".into()],
    };
    let mut w = writer(&db).await;
    w.create_table(&schema).await.unwrap();
    let (dmin, dmax) = limits.date_days;
    let (tmin, tmax) = limits.timestamp_micros;
    let (_, time_max) = limits.time_micros;
    let ok = vec![
        vec![Value::Int(1), Value::Date(dmin as i32), Value::Timestamp(tmin), Value::Time(time_max)],
        vec![Value::Int(2), Value::Date(dmax as i32), Value::Timestamp(tmax), Value::Time(0)],
    ];
    w.upsert(&schema, &ok).await.unwrap();
    let mut r = reader(&db).await;
    assert_eq!(r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap(), ok);
    // one step beyond each limit: PostgreSQL refuses (a value range error)
    for (i, v) in [
        (1, Value::Date(dmin as i32 - 1)),
        (1, Value::Date(dmax as i32 + 1)),
        (2, Value::Timestamp(tmin - 1)),
        (3, Value::Time(time_max + 1)),
        (3, Value::Time(-1)),
    ] {
        let mut row = vec![Value::Int(3), Value::Null, Value::Null, Value::Null];
        row[i] = v;
        let fine = vec![Value::Int(10), Value::Null, Value::Null, Value::Null];
        let e = w.upsert(&schema, &[fine, row]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        // the second row of the batch, in the column the server names
        assert_eq!(e.location().key, Some(vec![Value::Int(3)]), "{e}");
        assert_eq!(e.location().column.as_deref(), Some(schema.columns[i].name.as_str()), "{e}");
    }
    assert_eq!(c.native_type(&ColumnType::Json), "jsonb");
    assert_eq!(c.engine(), pontoon_core::Engine::Postgres);
}

#[tokio::test]
async fn upserting_twice_leaves_each_key_once_with_the_last_values() {
    let db = pg_db();
    let schema = TableSchema {
        name: "items".into(),
        columns: vec![
            Column { nullable: false, ..col("id", ColumnType::I64) },
            col("name", ColumnType::TEXT),
            col("qty", ColumnType::I32),
        ],
        primary_key: vec!["id".into()],
    };
    let mut w = writer(&db).await;
    w.create_table(&schema).await.unwrap();
    let rows = |from: i64, to: i64, tag: &str| -> Vec<Row> {
        (from..=to).map(|i| vec![Value::Int(i), text(&format!("{tag}{i}")), Value::Int(i * 2)]).collect()
    };
    assert_eq!(w.upsert(&schema, &rows(1, 1000, "a")).await.unwrap(), 1000);
    // overlapping keys: the direct COPY conflicts and the batch is redone as an upsert
    assert_eq!(w.upsert(&schema, &rows(501, 1500, "b")).await.unwrap(), 1000);
    // the very same rows again
    assert_eq!(w.upsert(&schema, &rows(501, 1500, "b")).await.unwrap(), 1000);
    assert_eq!(db.sql("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM items"), "1500|1500|1|1500");
    assert_eq!(db.sql("SELECT count(*) FROM items WHERE name = 'a' || id AND id <= 500"), "500");
    assert_eq!(db.sql("SELECT count(*) FROM items WHERE name = 'b' || id AND id > 500"), "1000");
    // a key twice in one batch: the last one wins
    let batch = vec![
        vec![Value::Int(7), text("first"), Value::Null],
        vec![Value::Int(7), text("second"), Value::Int(1)],
        vec![Value::Int(2000), text("new"), Value::Int(0)],
    ];
    assert_eq!(w.upsert(&schema, &batch).await.unwrap(), 3);
    assert_eq!(db.sql("SELECT id, name, qty FROM items WHERE id IN (7, 2000) ORDER BY id"), "7|second|1\n2000|new|0");
    // new rows after conflicts still land (through the staging path for a while)
    for k in 0..12 {
        let start = 3000 + k * 10;
        w.upsert(&schema, &rows(start, start + 9, "c")).await.unwrap();
    }
    assert_eq!(db.sql("SELECT count(*) FROM items"), "1621");

    // a table whose columns are all key columns: DO NOTHING
    let tags = TableSchema {
        name: "tags".into(),
        columns: vec![
            Column { nullable: false, ..col("item", ColumnType::I64) },
            Column { nullable: false, ..col("tag", ColumnType::TEXT) },
        ],
        primary_key: vec!["item".into(), "tag".into()],
    };
    w.create_table(&tags).await.unwrap();
    let t = vec![vec![Value::Int(1), text("x")], vec![Value::Int(1), text("y")]];
    w.upsert(&tags, &t).await.unwrap();
    w.upsert(&tags, &t).await.unwrap();
    assert_eq!(db.sql("SELECT count(*) FROM tags"), "2");

    // creating an existing table fails
    assert!(w.create_table(&tags).await.is_err());
}

/// (a int, b text) with a in -2..=2 and b in ["", "a", "b", "it's"], plus a filler.
async fn composite_table(db: &TestDb) -> (TableSchema, Vec<Vec<Value>>) {
    db.sql(
        "CREATE TABLE pairs (a int NOT NULL, b text COLLATE \"C\" NOT NULL, tenant int,
                             PRIMARY KEY (a, b));
         INSERT INTO pairs
           SELECT a, b, CASE WHEN a < 0 THEN NULL ELSE a % 2 END
           FROM generate_series(-2, 2) a, unnest(ARRAY['', 'a', 'b', 'it''s']) b;",
    );
    let mut r = reader(db).await;
    let schema = r.describe("pairs").await.unwrap().unwrap();
    let mut keys = Vec::new();
    for a in -2..=2 {
        for b in ["", "a", "b", "it's"] {
            keys.push(vec![Value::Int(a), text(b)]);
        }
    }
    (schema, keys)
}

#[tokio::test]
async fn key_after_walks_a_composite_key() {
    let db = pg_db();
    let (schema, keys) = composite_table(&db).await;
    let mut r = reader(&db).await;
    let mut spec = spec_of(&schema);
    spec.select.truncate(2);

    // step 3: boundaries at the 3rd, 6th, ... key
    let mut after: Option<Vec<Value>> = None;
    let mut bounds = Vec::new();
    while let Some(k) = r.key_after(&spec, after.as_deref(), 3).await.unwrap() {
        bounds.push(k.clone());
        after = Some(k);
    }
    let expect: Vec<Vec<Value>> = keys.iter().skip(2).step_by(3).cloned().collect();
    assert_eq!(bounds, expect);
    // step 1 visits every key
    let mut after: Option<Vec<Value>> = None;
    let mut all = Vec::new();
    while let Some(k) = r.key_after(&spec, after.as_deref(), 1).await.unwrap() {
        all.push(k.clone());
        after = Some(k);
    }
    assert_eq!(all, keys);
    // past the end
    assert_eq!(r.key_after(&spec, Some(&keys[18]), 2).await.unwrap(), None);
    assert_eq!(r.key_after(&spec, Some(&keys[18]), 1).await.unwrap(), Some(keys[19].clone()));
    // within a filter
    spec.filter = Some("a <> 0 AND b <> 'a'".into());
    let filtered: Vec<&Vec<Value>> = keys.iter().filter(|k| k[0] != Value::Int(0) && k[1] != text("a")).collect();
    assert_eq!(r.key_after(&spec, None, 7).await.unwrap().as_ref(), Some(filtered[6]));
    // the chunks built from the boundaries cover every row exactly once
    spec.filter = None;
    let mut ranges = Vec::new();
    let mut prev: Option<Vec<Value>> = None;
    for b in &bounds {
        ranges.push(KeyRange { after: prev.clone(), upto: Some(b.clone()) });
        prev = Some(b.clone());
    }
    ranges.push(KeyRange { after: prev, upto: None });
    let mut seen = Vec::new();
    for range in &ranges {
        seen.extend(r.scan(&spec, range).await.unwrap());
    }
    assert_eq!(seen, keys);
}

#[tokio::test]
async fn scan_returns_exactly_the_rows_of_a_range() {
    let db = pg_db();
    let (schema, keys) = composite_table(&db).await;
    let mut r = reader(&db).await;
    let mut spec = spec_of(&schema);
    spec.select = vec![
        SelectItem { expr: SelectExpr::Column("b".into()), ty: ColumnType::TEXT },
        SelectItem { expr: SelectExpr::Sql("a * 10".into()), ty: ColumnType::I32 },
        SelectItem { expr: SelectExpr::Column("a".into()), ty: ColumnType::I32 },
    ];
    let range = KeyRange { after: Some(keys[4].clone()), upto: Some(keys[11].clone()) };
    let rows = r.scan(&spec, &range).await.unwrap();
    let expect: Vec<Row> = keys[5..=11]
        .iter()
        .map(|k| {
            let Value::Int(a) = k[0] else { unreachable!() };
            vec![k[1].clone(), Value::Int(a * 10), k[0].clone()]
        })
        .collect();
    assert_eq!(rows, expect);
    // open ends
    let upto = KeyRange { after: None, upto: Some(keys[0].clone()) };
    assert_eq!(r.scan(&spec, &upto).await.unwrap().len(), 1);
    let after = KeyRange { after: Some(keys[17].clone()), upto: None };
    assert_eq!(r.scan(&spec, &after).await.unwrap().len(), 2);
    assert_eq!(r.scan(&spec, &KeyRange::ALL).await.unwrap().len(), 20);
    // filter and partition
    spec.filter = Some("b IN ('a', 'it''s')".into());
    spec.partition = Some(PartitionFilter { column: "tenant".into(), value: Value::Int(0) });
    let rows = r.scan(&spec, &KeyRange::ALL).await.unwrap();
    let got: Vec<(Value, Value)> = rows.into_iter().map(|r| (r[2].clone(), r[0].clone())).collect();
    assert_eq!(
        got,
        vec![
            (Value::Int(0), text("a")),
            (Value::Int(0), text("it's")),
            (Value::Int(2), text("a")),
            (Value::Int(2), text("it's")),
        ]
    );
    spec.partition = Some(PartitionFilter { column: "tenant".into(), value: Value::Null });
    assert_eq!(r.scan(&spec, &KeyRange::ALL).await.unwrap().len(), 4);

    // errors: a missing table or column is a schema error, a data exception a range error
    let mut bad = spec.clone();
    bad.table = "nope".into();
    let e = r.scan(&bad, &KeyRange::ALL).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert!(e.to_string().contains("42P01"), "{e}");
    let mut bad = spec.clone();
    bad.filter = Some("nope = 1".into());
    assert_eq!(r.scan(&bad, &KeyRange::ALL).await.unwrap_err().kind(), ErrorKind::Schema);
    let mut bad = spec.clone();
    bad.filter = Some("b::int > 0".into());
    bad.partition = None;
    let e = r.scan(&bad, &KeyRange::ALL).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    // the offending value is not in the message
    assert!(!e.to_string().contains("it's"), "{e}");
}

#[tokio::test]
async fn key_literals_of_every_key_type_bound_scans() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE k (d date, ts timestamp, tz timestamptz, u uuid, by bytea, n numeric,
                         f float8, bo bool, t time, PRIMARY KEY (d, ts, tz, u, by, n, f, bo, t));
         INSERT INTO k VALUES
           ('0044-03-15 BC', '0001-01-01 00:00:00 BC', '1969-12-31 23:59:59.999999+00',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff27', 'NaN', 'NaN', true, '24:00'),
           ('0044-03-15 BC', '0001-01-01 00:00:00 BC', '1969-12-31 23:59:59.999999+00',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff27', 'NaN', 'NaN', true, '23:00'),
           ('2024-01-01', '2024-01-01', '2024-01-01', gen_random_uuid(), '', -1.5, -0.0, false, '00:00');",
    );
    let mut r = reader(&db).await;
    let schema = r.describe("k").await.unwrap().unwrap();
    let spec = spec_of(&schema);
    let first = r.key_after(&spec, None, 1).await.unwrap().unwrap();
    let second = r.key_after(&spec, Some(&first), 1).await.unwrap().unwrap();
    assert_eq!(second[8], Value::Time(86_400_000_000));
    assert_eq!(first[0], date(-43, 3, 15));
    let third = r.key_after(&spec, Some(&second), 1).await.unwrap().unwrap();
    assert_eq!(third[0], date(2024, 1, 1));
    assert_eq!(r.key_after(&spec, Some(&third), 1).await.unwrap(), None);
    // each key is found by the literal of itself
    for key in [&first, &second, &third] {
        let range = KeyRange { after: None, upto: Some(key.clone()) };
        let rows = r.scan(&spec, &range).await.unwrap();
        assert_eq!(rows.last().unwrap(), key);
    }
}

#[tokio::test]
async fn partitions_count_smallest_first() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, tenant text, amount int);
         INSERT INTO orders VALUES
           (1, 'big', 1), (2, 'big', 2), (3, 'big', 3), (4, 'small', 4),
           (5, NULL, 5), (6, NULL, 6), (7, 'mid''s', 70), (8, 'mid''s', 80);",
    );
    let mut r = reader(&db).await;
    let p = r.partitions("orders", "tenant", &ColumnType::TEXT, None).await.unwrap();
    assert_eq!(p, vec![(text("small"), 1), (text("mid's"), 2), (Value::Null, 2), (text("big"), 3),]);
    let p = r.partitions("orders", "tenant", &ColumnType::TEXT, Some("amount < 70")).await.unwrap();
    assert_eq!(p, vec![(text("small"), 1), (Value::Null, 2), (text("big"), 3)]);
    // the partition values select their rows
    let schema = r.describe("orders").await.unwrap().unwrap();
    let mut spec = spec_of(&schema);
    spec.partition = Some(PartitionFilter { column: "tenant".into(), value: text("mid's") });
    let rows = r.scan(&spec, &KeyRange::ALL).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], Value::Int(7));
}

#[tokio::test]
async fn estimates_rows() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY);
         INSERT INTO t SELECT generate_series(1, 1234);",
    );
    let mut r = reader(&db).await;
    // never analyzed: counted
    assert_eq!(r.estimate_rows("t").await.unwrap(), 1234);
    db.sql("INSERT INTO t SELECT generate_series(1235, 2000); ANALYZE t;");
    assert_eq!(r.estimate_rows("t").await.unwrap(), 2000);
    assert_eq!(r.estimate_rows("missing").await.unwrap_err().kind(), ErrorKind::Schema);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://someone:s3cret-pw@127.0.0.1:{port}/db");
    let c = PgConnector::new(&SecretUrl::new(url)).unwrap();
    let e = err(c.reader().await);
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.is_transient());
    assert!(!e.to_string().contains("s3cret-pw"), "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    let e = err(c.writer().await);
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_error_without_the_password() {
    let db = pg_db();
    let url = db.url.replacen(&format!(":{}@", pontoon_testsupport::PASSWORD), ":wr0ng-pw@", 1);
    assert_ne!(url, db.url);
    let c = PgConnector::new(&SecretUrl::new(url)).unwrap();
    let e = err(c.reader().await);
    assert_eq!(e.kind(), ErrorKind::Database, "{e}");
    assert!(!e.is_transient());
    let msg = e.to_string();
    assert!(!msg.contains("wr0ng-pw"), "{msg}");
    assert!(msg.contains(pontoon_testsupport::USER), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");
    assert!(msg.contains("28P01"), "{msg}");
}

#[tokio::test]
async fn a_terminated_session_is_transient() {
    let db = pg_db();
    let mut r = reader(&db).await;
    r.list_tables().await.unwrap();
    db.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'pontoon'",
    );
    // the termination notice may arrive a moment later
    let mut result = r.list_tables().await;
    for _ in 0..50 {
        if result.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        result = r.list_tables().await;
    }
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
}

#[tokio::test]
async fn numerics_of_every_shape_match_postgres_text() {
    // a simple deterministic generator: no dependency, same cases every run
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let mut texts = Vec::new();
    for _ in 0..600 {
        let int_len = next(30) as usize;
        let frac_len = next(25) as usize;
        let mut digits = |len: usize| -> String {
            (0..len)
                .map(|_| {
                    // runs of zeros are where base-10000 groups go wrong
                    if next(3) == 0 { '0' } else { char::from(b'0' + next(10) as u8) }
                })
                .collect()
        };
        let int = digits(int_len);
        let frac = digits(frac_len);
        let sign = if next(2) == 0 { "-" } else { "" };
        let text = match (int.is_empty(), frac.is_empty()) {
            (true, true) => "0".to_string(),
            (_, true) => format!("{sign}{int}"),
            (true, false) => format!("{sign}0.{frac}"),
            (false, false) => format!("{sign}{int}.{frac}"),
        };
        texts.push(Decimal::parse(&text).unwrap());
    }
    let db = pg_db();
    let schema = TableSchema {
        name: "nums".into(),
        columns: vec![
            Column { nullable: false, ..col("id", ColumnType::I32) },
            col("n", ColumnType::Decimal { precision: None, scale: None }),
        ],
        primary_key: vec!["id".into()],
    };
    let mut w = writer(&db).await;
    w.create_table(&schema).await.unwrap();
    let rows: Vec<Row> =
        texts.iter().enumerate().map(|(i, d)| vec![Value::Int(i as i64), Value::Decimal(d.clone())]).collect();
    w.upsert(&schema, &rows).await.unwrap();
    // PostgreSQL prints exactly the canonical text we sent
    let shown = db.sql("SELECT n::text FROM nums ORDER BY id");
    let expect: Vec<&str> = texts.iter().map(Decimal::as_str).collect();
    assert_eq!(shown.lines().collect::<Vec<_>>(), expect);
    // and the reader decodes it back
    let mut r = reader(&db).await;
    assert_eq!(r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap(), rows);
}

/// `count(*)` and a digest of every row as PostgreSQL prints it, in `order`.
fn digest(db: &TestDb, table: &str, order: &str) -> String {
    db.sql(&format!("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {order})) FROM {table} t"))
}

fn raw_of(r: Option<RawRows>) -> RawRows {
    r.expect("PostgreSQL has a raw format")
}

/// `(after, upto]` of a single integer key.
fn ids(after: i64, upto: i64) -> KeyRange {
    KeyRange { after: Some(vec![Value::Int(after)]), upto: Some(vec![Value::Int(upto)]) }
}

#[tokio::test]
async fn a_raw_copy_of_every_type_is_exact() {
    let (src, dst) = (pg_db(), pg_db());
    let schema = every_type_schema();
    let mut ws = writer(&src).await;
    let mut wd = writer(&dst).await;
    ws.create_table(&schema).await.unwrap();
    wd.create_table(&schema).await.unwrap();
    let rows = rows_of(&every_type_values());
    ws.upsert(&schema, &rows).await.unwrap();
    // values larger than the pieces the writer sends, and a row of NULLs
    src.sql(
        "INSERT INTO every_type (id, body, blob)
           SELECT 100, string_agg(md5(i::text), ''), decode(string_agg(md5(i::text), ''), 'hex')
           FROM generate_series(1, 40000) i;
         INSERT INTO every_type (id) VALUES (101);",
    );
    let mut r = reader(&src).await;
    let raw = raw_of(r.scan_raw(&spec_of(&schema), &KeyRange::ALL).await.unwrap());
    assert_eq!(raw.engine, Engine::Postgres);
    assert_eq!(raw.rows, rows.len() as u64 + 2);
    assert!(raw.data.starts_with(copy_stream::SIGNATURE));
    assert!(raw.data.len() > 1_000_000, "{raw:?}");
    assert_eq!(wd.upsert_raw(&schema, &raw).await.unwrap(), raw.rows);
    let expect = digest(&src, "every_type", "id");
    assert!(expect.starts_with("10|"), "{expect}");
    assert_eq!(digest(&dst, "every_type", "id"), expect);
    // the decoded path reads the same values from both
    let mut rd = reader(&dst).await;
    assert_eq!(
        rd.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap(),
        r.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap()
    );

    // the types create_table does not make: json, char(n), name, timestamp(3),
    // numeric(p,s), a composite key
    let ddl = "CREATE TABLE extra (a smallint NOT NULL, t uuid NOT NULL, f numeric(12,3),
                                   j varchar(20), k char(3), l name, o time, r json,
                                   w timestamp(3), tz timestamptz, PRIMARY KEY (t, a));";
    src.sql(ddl);
    dst.sql(ddl);
    src.sql(
        "INSERT INTO extra VALUES
           (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 123456789.125, 'é😀', 'ab', 'a name', '24:00',
            '{\"keep\":  \"my\",   \"spacing\": 1}', '2024-01-01 00:00:01.123', '0044-03-15 12:00:00 BC'),
           (-1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'NaN', '', '', '', '00:00:00.000001',
            '[]', '4714-11-24 00:00:00 BC', 'infinity'),
           (2, '00000000-0000-0000-0000-000000000000', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let extra = r.describe("extra").await.unwrap().unwrap();
    let raw = raw_of(r.scan_raw(&spec_of(&extra), &KeyRange::ALL).await.unwrap());
    assert_eq!(raw.rows, 3);
    assert_eq!(wd.upsert_raw(&extra, &raw).await.unwrap(), 3);
    let expect = digest(&src, "extra", "t, a");
    assert!(expect.starts_with("3|"), "{expect}");
    assert_eq!(digest(&dst, "extra", "t, a"), expect);
}

#[tokio::test]
async fn raw_scans_respect_range_filter_and_partition() {
    let (src, dst) = (pg_db(), pg_db());
    let (schema, keys) = composite_table(&src).await;
    dst.sql("CREATE TABLE pairs (a int NOT NULL, b text COLLATE \"C\" NOT NULL, tenant int, PRIMARY KEY (a, b));");
    let mut r = reader(&src).await;
    let mut rd = reader(&dst).await;
    let mut w = writer(&dst).await;
    let mut spec = spec_of(&schema);

    // each case: exactly the rows the decoded scan returns, counted right
    let mut cases: Vec<(Option<&str>, Option<PartitionFilter>, KeyRange, usize)> = vec![
        (None, None, KeyRange::ALL, 20),
        (None, None, KeyRange { after: Some(keys[4].clone()), upto: Some(keys[11].clone()) }, 7),
        (None, None, KeyRange { after: None, upto: Some(keys[0].clone()) }, 1),
        (None, None, KeyRange { after: Some(keys[17].clone()), upto: None }, 2),
        (
            Some("b IN ('a', 'it''s')"),
            Some(PartitionFilter { column: "tenant".into(), value: Value::Int(0) }),
            KeyRange::ALL,
            4,
        ),
        (Some("b <> ''"), Some(PartitionFilter { column: "tenant".into(), value: Value::Null }), KeyRange::ALL, 6),
        (
            Some("b <> 'b'"),
            Some(PartitionFilter { column: "tenant".into(), value: Value::Int(1) }),
            KeyRange { after: Some(keys[4].clone()), upto: Some(keys[19].clone()) },
            3,
        ),
    ];
    // empty: past the end, and a range the filter excludes
    cases.push((None, None, KeyRange { after: Some(keys[19].clone()), upto: None }, 0));
    cases.push((Some("a > 5"), None, KeyRange { after: Some(keys[2].clone()), upto: Some(keys[9].clone()) }, 0));
    for (filter, partition, range, n) in cases {
        spec.filter = filter.map(str::to_string);
        spec.partition = partition;
        let expect = r.scan(&spec, &range).await.unwrap();
        assert_eq!(expect.len(), n, "{filter:?} {range:?}");
        let raw = raw_of(r.scan_raw(&spec, &range).await.unwrap());
        assert_eq!(raw.rows, n as u64, "{filter:?} {range:?}");
        if n == 0 {
            assert_eq!(raw.data, copy_stream::EMPTY);
        }
        dst.sql("TRUNCATE pairs");
        assert_eq!(w.upsert_raw(&schema, &raw).await.unwrap(), n as u64);
        assert_eq!(rd.scan(&spec_of(&schema), &KeyRange::ALL).await.unwrap(), expect, "{filter:?} {range:?}");
    }
    // a column subset in another order
    spec.filter = None;
    spec.partition = None;
    spec.select.reverse();
    let raw = raw_of(r.scan_raw(&spec, &KeyRange::ALL).await.unwrap());
    assert_eq!(raw.rows, 20);
    spec.select.truncate(2);
    let raw = raw_of(r.scan_raw(&spec, &KeyRange::ALL).await.unwrap());
    assert_eq!(raw.rows, 20);

    // errors: an SQL item is not for raw scans, a missing table is a schema error
    let mut bad = spec_of(&schema);
    bad.select.push(SelectItem { expr: SelectExpr::Sql("a * 10".into()), ty: ColumnType::I32 });
    let e = err(r.scan_raw(&bad, &KeyRange::ALL).await);
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert_eq!(e.location().table.as_deref(), Some("pairs"));
    let mut bad = spec_of(&schema);
    bad.table = "nope".into();
    let e = err(r.scan_raw(&bad, &KeyRange::ALL).await);
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert_eq!(e.location().table.as_deref(), Some("nope"));
    assert!(e.to_string().contains("42P01"), "{e}");
    let mut bad = spec_of(&schema);
    bad.filter = Some("b::int > 0".into());
    let e = err(r.scan_raw(&bad, &KeyRange::ALL).await);
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert!(!e.to_string().contains("it's"), "{e}");
    // the connection is still good
    assert_eq!(raw_of(r.scan_raw(&spec_of(&schema), &KeyRange::ALL).await.unwrap()).rows, 20);
    // rows of another engine are refused
    let foreign = RawRows { engine: Engine::Mysql, rows: 1, data: vec![1, 2, 3], keys: Vec::new() };
    let e = w.upsert_raw(&schema, &foreign).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
}

fn items_schema() -> TableSchema {
    TableSchema {
        name: "items".into(),
        columns: vec![
            Column { nullable: false, ..col("id", ColumnType::I64) },
            col("name", ColumnType::TEXT),
            col("qty", ColumnType::I32),
        ],
        primary_key: vec!["id".into()],
    }
}

#[tokio::test]
async fn raw_upserts_leave_each_key_once_with_the_last_values() {
    let (src, dst) = (pg_db(), pg_db());
    let schema = items_schema();
    writer(&src).await.create_table(&schema).await.unwrap();
    let mut w = writer(&dst).await;
    w.create_table(&schema).await.unwrap();
    src.sql("INSERT INTO items SELECT i, 'a' || i, i * 2 FROM generate_series(1, 1000) i");
    let spec = spec_of(&schema);
    let mut r = reader(&src).await;
    let same = |src: &TestDb, dst: &TestDb, rows: &str| {
        let expect = digest(src, "items", "id");
        assert!(expect.starts_with(&format!("{rows}|")), "{expect}");
        assert_eq!(digest(dst, "items", "id"), expect);
    };

    // new rows: the direct path
    let raw = raw_of(r.scan_raw(&spec, &ids(0, 1000)).await.unwrap());
    assert_eq!(w.upsert_raw(&schema, &raw).await.unwrap(), 1000);
    same(&src, &dst, "1000");
    // the same chunk after the source changed: a conflict, redone through staging
    src.sql("UPDATE items SET name = 'b' || id, qty = NULL WHERE id % 3 = 0");
    let changed = raw_of(r.scan_raw(&spec, &ids(0, 1000)).await.unwrap());
    assert_ne!(changed.data, raw.data);
    assert_eq!(w.upsert_raw(&schema, &changed).await.unwrap(), 1000);
    same(&src, &dst, "1000");
    // and once more, unchanged
    assert_eq!(w.upsert_raw(&schema, &changed).await.unwrap(), 1000);
    same(&src, &dst, "1000");
    // partly written before
    src.sql(
        "INSERT INTO items SELECT i, 'c' || i, i FROM generate_series(1001, 1500) i;
         UPDATE items SET qty = -qty WHERE id BETWEEN 900 AND 1000;",
    );
    let mixed = raw_of(r.scan_raw(&spec, &ids(800, 1500)).await.unwrap());
    assert_eq!(w.upsert_raw(&schema, &mixed).await.unwrap(), 700);
    same(&src, &dst, "1500");
    // new chunks after the conflicts: through staging for a while, then direct again
    src.sql("INSERT INTO items SELECT i, 'd' || i, i FROM generate_series(2001, 2120) i");
    for k in 0..12 {
        let start = 2000 + k * 10;
        let raw = raw_of(r.scan_raw(&spec, &ids(start, start + 10)).await.unwrap());
        assert_eq!(w.upsert_raw(&schema, &raw).await.unwrap(), 10);
    }
    same(&src, &dst, "1620");

    // a fresh writer: a chunk that exists already, then one that does not
    let mut w2 = writer(&dst).await;
    src.sql("UPDATE items SET name = 'e' || id WHERE id <= 100");
    let existing = raw_of(r.scan_raw(&spec, &ids(0, 100)).await.unwrap());
    assert_eq!(w2.upsert_raw(&schema, &existing).await.unwrap(), 100);
    src.sql("INSERT INTO items SELECT i, 'f' || i, i FROM generate_series(3001, 3050) i");
    let new = raw_of(r.scan_raw(&spec, &ids(3000, 3050)).await.unwrap());
    assert_eq!(w2.upsert_raw(&schema, &new).await.unwrap(), 50);
    same(&src, &dst, "1670");
    // and the other way round
    let mut w3 = writer(&dst).await;
    src.sql("INSERT INTO items SELECT i, 'g' || i, i FROM generate_series(4001, 4050) i");
    let new = raw_of(r.scan_raw(&spec, &ids(4000, 4050)).await.unwrap());
    assert_eq!(w3.upsert_raw(&schema, &new).await.unwrap(), 50);
    src.sql("UPDATE items SET qty = 7 WHERE id > 3000");
    let existing = raw_of(r.scan_raw(&spec, &ids(3000, 4050)).await.unwrap());
    assert_eq!(w3.upsert_raw(&schema, &existing).await.unwrap(), 100);
    same(&src, &dst, "1720");
    // raw and decoded batches mix on one writer
    src.sql("UPDATE items SET name = 'h' WHERE id = 1");
    let decoded = r.scan(&spec, &ids(0, 10)).await.unwrap();
    assert_eq!(w3.upsert(&schema, &decoded).await.unwrap(), 10);
    same(&src, &dst, "1720");
}

#[tokio::test]
async fn raw_write_errors_name_the_column_but_no_value() {
    let (src, dst) = (pg_db(), pg_db());
    let schema = items_schema();
    writer(&src).await.create_table(&schema).await.unwrap();
    src.sql("INSERT INTO items VALUES (1, 'secret-one', 1), (2, 'secret-two', NULL), (3, 'secret-three', 3)");
    dst.sql("CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int NOT NULL)");
    let mut r = reader(&src).await;
    let mut w = writer(&dst).await;
    let raw = raw_of(r.scan_raw(&spec_of(&schema), &KeyRange::ALL).await.unwrap());
    assert_eq!(raw.rows, 3);
    let e = w.upsert_raw(&schema, &raw).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Database, "{e}");
    assert!(e.to_string().contains("23502"), "{e}");
    assert_eq!(e.location().column.as_deref(), Some("qty"), "{e}");
    assert_eq!(e.location().table.as_deref(), Some("items"), "{e}");
    assert_eq!(e.location().key, None, "{e}");
    assert!(e.to_string().contains("of the raw batch"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
    // the same through the staging path (the rows exist already)
    dst.sql("INSERT INTO items VALUES (1, 'x', 0), (2, 'x', 0), (3, 'x', 0)");
    let e = w.upsert_raw(&schema, &raw).await.unwrap_err();
    assert_eq!(e.location().column.as_deref(), Some("qty"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
    // a truncated stream is refused by the server
    src.sql("UPDATE items SET qty = 0");
    let good = raw_of(r.scan_raw(&spec_of(&schema), &KeyRange::ALL).await.unwrap());
    let mut cut = good.clone();
    cut.data.truncate(good.data.len() - 5);
    let e = w.upsert_raw(&schema, &cut).await.unwrap_err();
    assert!(e.to_string().contains("22P04"), "{e}");
    // nothing of the failed batches was written, and the connection is still good
    assert_eq!(dst.sql("SELECT count(*), min(name), max(name) FROM items"), "3|x|x");
    assert_eq!(w.upsert_raw(&schema, &good).await.unwrap(), 3);
    assert_eq!(digest(&dst, "items", "id"), digest(&src, "items", "id"));
}
