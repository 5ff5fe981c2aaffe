//! The MariaDB connector against a real MariaDB 10.11: the shared test server, a fresh
//! database per test (`pontoon_testsupport::mysql_db`).

use pontoon_core::convert::fit;
use pontoon_core::value::{parse_date, parse_time, parse_timestamp, parse_uuid};
use pontoon_core::{
    Column, ColumnType, Connector, Decimal, ErrorKind, KeyRange, PartitionFilter, Result, Row, ScanSpec, SecretUrl,
    SelectExpr, SelectItem, TableSchema, Value, Writer,
};
use pontoon_mysql::MysqlConnector;
use pontoon_testsupport::{MariaDbServer, PASSWORD, TestDb, USER, mysql_db};

fn connector(db: &TestDb) -> MysqlConnector {
    MysqlConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL")
}

/// `load` and `insert` tests of a writer test `async fn name(load_min_rows: usize)`:
/// every batch through `LOAD DATA LOCAL`, every batch through INSERT.
macro_rules! on_both_paths {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn load() {
                super::$name(0).await
            }

            #[tokio::test]
            async fn insert() {
                super::$name(usize::MAX).await
            }
        }
    };
}

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), native: String::new(), ty, nullable, has_default: false }
}

fn int(bytes: u8, unsigned: bool) -> ColumnType {
    ColumnType::Int { bytes, unsigned }
}

fn dec(p: u32, s: u32) -> ColumnType {
    ColumnType::Decimal { precision: Some(p), scale: Some(s) }
}

fn text(n: u32) -> ColumnType {
    ColumnType::Text { max_chars: Some(n) }
}

/// A scan of every column of `schema`, read as the schema's own types, by `key`.
fn spec(schema: &TableSchema, key: &[&str]) -> ScanSpec {
    ScanSpec::every_column(schema, &key.iter().map(|k| k.to_string()).collect::<Vec<_>>())
}

/// What the engine does before writing: fit every value to the target's described
/// columns, then upsert.
async fn write_fitted(connector: &MysqlConnector, writer: &mut dyn Writer, table: &str, rows: &[Row]) -> Result<u64> {
    let target = writer.describe(table).await?.expect("target table exists");
    let limits = connector.limits();
    let fitted = rows
        .iter()
        .map(|r| r.iter().cloned().zip(&target.columns).map(|(v, c)| fit(v, c, &limits)).collect::<Result<Row>>())
        .collect::<Result<Vec<Row>>>()?;
    writer.upsert(&target, &fitted).await
}

fn date(s: &str) -> Value {
    Value::Date(parse_date(s).expect("date"))
}

fn time(s: &str) -> Value {
    Value::Time(parse_time(s).expect("time"))
}

fn ts(s: &str) -> Value {
    Value::Timestamp(parse_timestamp(s).expect("timestamp").0)
}

fn tstz(s: &str) -> Value {
    Value::TimestampTz(parse_timestamp(s).expect("timestamp").0)
}

fn decimal(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).expect("decimal"))
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

#[tokio::test]
async fn describe_maps_every_supported_type() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE every (
            id int unsigned NOT NULL AUTO_INCREMENT,
            flag tinyint(1) NOT NULL DEFAULT 0,
            yes_no boolean,
            i1 tinyint, u1 tinyint unsigned, i2 smallint, u2 smallint unsigned,
            i3 mediumint, u3 mediumint unsigned, i4 int, i8 bigint, u8 bigint unsigned,
            f float, d double, dec1 decimal(10,3), dec2 decimal(65,30),
            c char(4), vc varchar(20) NOT NULL, tt tinytext, tx text, mt mediumtext, lt longtext,
            e enum('a','bb'), s set('x','y'),
            bn binary(16), vb varbinary(300), tb tinyblob, bb blob, mb mediumblob, lb longblob,
            dt date, tm time(6), dtm datetime(6), ts timestamp(6) NULL DEFAULT NULL,
            j json, u uuid, y year,
            PRIMARY KEY (id, vc)
        )",
    );
    let mut reader = connector(&db).reader().await.unwrap();
    let schema = reader.describe("every").await.unwrap().expect("table exists");
    let expected: Vec<(&str, ColumnType)> = vec![
        ("id", int(4, true)),
        ("flag", ColumnType::Bool),
        ("yes_no", ColumnType::Bool),
        ("i1", int(1, false)),
        ("u1", int(1, true)),
        ("i2", int(2, false)),
        ("u2", int(2, true)),
        ("i3", int(3, false)),
        ("u3", int(3, true)),
        ("i4", int(4, false)),
        ("i8", int(8, false)),
        ("u8", int(8, true)),
        ("f", ColumnType::Float32),
        ("d", ColumnType::Float64),
        ("dec1", dec(10, 3)),
        ("dec2", dec(65, 30)),
        ("c", text(4)),
        ("vc", text(20)),
        ("tt", ColumnType::TEXT),
        ("tx", ColumnType::TEXT),
        ("mt", ColumnType::TEXT),
        ("lt", ColumnType::TEXT),
        ("e", text(2)),
        ("s", text(3)),
        ("bn", ColumnType::Bytes { max_bytes: Some(16) }),
        ("vb", ColumnType::Bytes { max_bytes: Some(300) }),
        ("tb", ColumnType::Bytes { max_bytes: None }),
        ("bb", ColumnType::Bytes { max_bytes: None }),
        ("mb", ColumnType::Bytes { max_bytes: None }),
        ("lb", ColumnType::Bytes { max_bytes: None }),
        ("dt", ColumnType::Date),
        ("tm", ColumnType::Time),
        ("dtm", ColumnType::Timestamp),
        ("ts", ColumnType::TimestampTz),
        ("j", ColumnType::Json),
        ("u", ColumnType::Uuid),
        ("y", int(2, false)),
    ];
    let got: Vec<(&str, ColumnType)> = schema.columns.iter().map(|c| (c.name.as_str(), c.ty.clone())).collect();
    assert_eq!(got, expected);
    assert_eq!(schema.primary_key, vec!["id", "vc"]);
    let id = schema.column("id").unwrap();
    assert!(id.has_default && !id.nullable);
    assert_eq!(id.native, "int(10) unsigned");
    let flag = schema.column("flag").unwrap();
    assert!(flag.has_default && !flag.nullable);
    assert!(schema.column("i1").unwrap().nullable);
    assert_eq!(schema.column("u8").unwrap().native, "bigint(20) unsigned");
    assert_eq!(reader.describe("missing").await.unwrap(), None);
    // names are exact, not case-insensitive
    assert_eq!(reader.describe("EVERY").await.unwrap(), None);
}

/// Every portable type, through `create_table`, `upsert` and `scan`.
fn every_type_schema() -> TableSchema {
    TableSchema {
        name: "round_trip".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("b", ColumnType::Bool, true),
            col("i1", int(1, false), true),
            col("u1", int(1, true), true),
            col("i2", int(2, false), true),
            col("u2", int(2, true), true),
            col("i3", int(3, false), true),
            col("u3", int(3, true), true),
            col("i4", int(4, false), true),
            col("u4", int(4, true), true),
            col("i8", int(8, false), true),
            col("u8", int(8, true), true),
            col("f32", ColumnType::Float32, true),
            col("f64", ColumnType::Float64, true),
            col("d65", dec(65, 30), true),
            col("d10", dec(10, 3), true),
            col("t", ColumnType::TEXT, true),
            col("vc", text(20), true),
            col("vb", ColumnType::Bytes { max_bytes: Some(300) }, true),
            col("bl", ColumnType::Bytes { max_bytes: None }, true),
            col("dt", ColumnType::Date, true),
            col("tm", ColumnType::Time, true),
            col("ts", ColumnType::Timestamp, true),
            col("tz", ColumnType::TimestampTz, true),
            col("j", ColumnType::Json, true),
            col("u", ColumnType::Uuid, true),
        ],
        primary_key: vec!["id".into()],
    }
}

fn every_type_rows() -> Vec<Row> {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = (0..=255u8).rev().collect();
    let nines = |n: usize| "9".repeat(n);
    vec![
        vec![
            Value::Int(-1),
            Value::Bool(false),
            Value::Int(-128),
            Value::Int(0),
            Value::Int(-32_768),
            Value::Int(0),
            Value::Int(-8_388_608),
            Value::Int(0),
            Value::Int(i32::MIN as i64),
            Value::Int(0),
            Value::Int(i64::MIN),
            Value::Int(0),
            Value::F32(-f32::MIN_POSITIVE),
            Value::F64(-f64::from_bits(1)),
            decimal(&format!("-{}.{}", nines(35), nines(30))),
            decimal("-9999999.999"),
            t("4-byte 😀 and ñ, quote ' backslash \\ nul \0 end"),
            t(""),
            Value::Bytes(all_bytes.clone()),
            Value::Bytes(reversed),
            date("1000-01-01"),
            time("-838:59:59.999999"),
            ts("1000-01-01 00:00:00.000001"),
            tstz("1969-12-31 23:59:59.999999"),
            Value::Json(r#"{"a": [1, 2.5, "x"], "b": null}"#.into()),
            Value::Uuid(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()),
        ],
        vec![
            Value::Int(0),
            Value::Bool(true),
            Value::Int(127),
            Value::Int(255),
            Value::Int(32_767),
            Value::Int(65_535),
            Value::Int(8_388_607),
            Value::Int(16_777_215),
            Value::Int(i32::MAX as i64),
            Value::Int(u32::MAX as i64),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::F32(f32::MAX),
            Value::F64(f64::from_bits(1)),
            decimal(&format!("{}.{}", nines(35), nines(30))),
            decimal("9999999.999"),
            t(""),
            Value::Null,
            Value::Bytes(Vec::new()),
            Value::Bytes(all_bytes),
            date("9999-12-31"),
            time("838:59:59"),
            ts("9999-12-31 23:59:59.999999"),
            tstz("2024-03-01 12:34:56.123456"),
            Value::Json("[]".into()),
            Value::Uuid([0xff; 16]),
        ],
        vec![
            Value::Int(7),
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
            Value::F32(f32::from_bits(1)),
            Value::F64(0.1),
            decimal("0.000000000000000000000000000001"),
            decimal("0.010"),
            Value::Null,
            t("twenty chars: 😀😀😀😀😀"),
            Value::Null,
            Value::Null,
            date("1970-01-01"),
            time("00:00:00"),
            ts("1970-01-01 00:00:00"),
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        vec![
            Value::Int(8),
            Value::Bool(true),
            Value::Int(-1),
            Value::Int(1),
            Value::Int(-1),
            Value::Int(1),
            Value::Int(-1),
            Value::Int(1),
            Value::Int(-1),
            Value::Int(1),
            Value::Int(-1),
            Value::Int(1 << 62),
            Value::F32(0.1),
            Value::F64(f64::MAX),
            decimal("-0.000000000000000000000000000001"),
            decimal("-0.001"),
            t("x"),
            t(" padded "),
            Value::Bytes(vec![0]),
            Value::Bytes(vec![0, 0, 0]),
            date("2000-02-29"),
            time("-00:00:00.000001"),
            ts("2000-02-29 23:59:59.5"),
            tstz("9999-12-31 23:59:59.999999"),
            Value::Json(r#""a string with \"quotes\"""#.into()),
            Value::Uuid([0; 16]),
        ],
    ]
}

on_both_paths!(every_value_type_round_trips_exactly);
async fn every_value_type_round_trips_exactly(load_min_rows: usize) {
    let db = mysql_db();
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let schema = every_type_schema();
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&schema).await.unwrap();
    let target = writer.describe("round_trip").await.unwrap().unwrap();
    let natives: Vec<&str> = target.columns.iter().map(|c| c.native.as_str()).collect();
    assert_eq!(
        natives,
        vec![
            "bigint(20)",
            "tinyint(1)",
            "tinyint(4)",
            "tinyint(3) unsigned",
            "smallint(6)",
            "smallint(5) unsigned",
            "mediumint(9)",
            "mediumint(8) unsigned",
            "int(11)",
            "int(10) unsigned",
            "bigint(20)",
            "bigint(20) unsigned",
            "float",
            "double",
            "decimal(65,30)",
            "decimal(10,3)",
            "longtext",
            "varchar(20)",
            "varbinary(300)",
            "longblob",
            "date",
            "time(6)",
            "datetime(6)",
            "datetime(6)",
            "json",
            "uuid",
        ]
    );
    // timestamptz is kept in UTC in a datetime(6)
    assert_eq!(target.column("tz").unwrap().ty, ColumnType::Timestamp, "datetime(6) describes as timestamp");
    let rows = every_type_rows();
    assert_eq!(write_fitted(&c, writer.as_mut(), "round_trip", &rows).await.unwrap(), rows.len() as u64);
    let mut reader = c.reader().await.unwrap();
    let back = reader.scan(&spec(&schema, &["id"]), &KeyRange::ALL).await.unwrap();
    let mut expected = rows.clone();
    expected.sort_by_key(|r| match r[0] {
        Value::Int(i) => i,
        _ => unreachable!(),
    });
    assert_eq!(back.len(), expected.len());
    for (got, want) in back.iter().zip(&expected) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g, w, "row {:?}, column {}", want[0], schema.columns[i].name);
        }
    }
    // the server holds what was meant, not just what reads back the same
    assert_eq!(
        db.sql("SELECT dt, tm, ts, hex(u8), tz FROM round_trip WHERE id = 0"),
        "9999-12-31\t838:59:59.000000\t9999-12-31 23:59:59.999999\tFFFFFFFFFFFFFFFF\t2024-03-01 12:34:56.123456"
    );

    // MariaDB stores -0.0 as 0.0: refused rather than changed, by `fit` (the limits)
    // and by the writer itself when given the value unfitted
    let target = writer.describe("round_trip").await.unwrap().expect("table");
    for (column, value) in [("f32", Value::F32(-0.0)), ("f64", Value::F64(-0.0))] {
        let mut row: Row = vec![Value::Null; schema.columns.len()];
        row[0] = Value::Int(100);
        row[schema.position(column).unwrap()] = value;
        let e = write_fitted(&c, writer.as_mut(), "round_trip", std::slice::from_ref(&row)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().column.as_deref(), Some(column), "{e}");
        let e = writer.upsert(&target, &[row]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().column.as_deref(), Some(column), "{e}");
        assert_eq!(e.location().key, Some(vec![Value::Int(100)]), "{e}");
    }
    assert_eq!(db.sql("SELECT count(*) FROM round_trip"), "4");
}

on_both_paths!(a_timestamp_column_reads_and_writes_utc);
async fn a_timestamp_column_reads_and_writes_utc(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE tz (id int PRIMARY KEY, at timestamp(6) NULL DEFAULT NULL)");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let rows = vec![
        vec![Value::Int(1), tstz("2024-03-01 12:34:56.123456")],
        vec![Value::Int(2), tstz("1970-01-01 00:00:01")],
        vec![Value::Int(3), Value::Null],
    ];
    write_fitted(&c, writer.as_mut(), "tz", &rows).await.unwrap();
    let mut reader = c.reader().await.unwrap();
    let schema = reader.describe("tz").await.unwrap().unwrap();
    assert_eq!(schema.column("at").unwrap().ty, ColumnType::TimestampTz);
    let back = reader.scan(&spec(&schema, &["id"]), &KeyRange::ALL).await.unwrap();
    assert_eq!(back, rows);
    assert_eq!(db.sql("SET time_zone = '+00:00'; SELECT at FROM tz WHERE id = 1"), "2024-03-01 12:34:56.123456");
}

on_both_paths!(upsert_twice_keeps_each_key_once_with_the_last_values);
async fn upsert_twice_keeps_each_key_once_with_the_last_values(load_min_rows: usize) {
    let db = mysql_db();
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let schema = TableSchema {
        name: "items".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("name", text(30), true),
            col("qty", ColumnType::I32, true),
        ],
        primary_key: vec!["id".into()],
    };
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&schema).await.unwrap();
    // more rows than one batch holds (2000), so full and partial batches both run
    let first: Vec<Row> = (0..4500).map(|i| vec![Value::Int(i), t(&format!("first {i}")), Value::Int(i)]).collect();
    assert_eq!(writer.upsert(&schema, &first).await.unwrap(), 4500);
    let second: Vec<Row> = (0..4500)
        .map(|i| vec![Value::Int(i), t(&format!("second {i}")), if i % 2 == 0 { Value::Null } else { Value::Int(-i) }])
        .collect();
    assert_eq!(writer.upsert(&schema, &second).await.unwrap(), 4500);
    writer.upsert(&schema, &second[10..20]).await.unwrap();
    let mut reader = c.reader().await.unwrap();
    let back = reader.scan(&spec(&schema, &["id"]), &KeyRange::ALL).await.unwrap();
    assert_eq!(back, second);
    assert!(reader.estimate_rows("items").await.unwrap() > 0);

    // a table whose columns are all key columns
    let keys_only = TableSchema {
        name: "tags".into(),
        columns: vec![col("a", ColumnType::I32, false), col("b", text(5), false)],
        primary_key: vec!["a".into(), "b".into()],
    };
    writer.create_table(&keys_only).await.unwrap();
    let rows = vec![vec![Value::Int(1), t("x")], vec![Value::Int(1), t("y")]];
    writer.upsert(&keys_only, &rows).await.unwrap();
    writer.upsert(&keys_only, &rows).await.unwrap();
    assert_eq!(db.sql("SELECT count(*) FROM tags"), "2");
}

on_both_paths!(key_zero_and_negative_keys_survive_auto_increment);
async fn key_zero_and_negative_keys_survive_auto_increment(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE seq (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, v varchar(10))");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let rows = vec![vec![Value::Int(0), t("zero")], vec![Value::Int(-5), t("neg")], vec![Value::Int(3), t("three")]];
    write_fitted(&c, writer.as_mut(), "seq", &rows).await.unwrap();
    write_fitted(&c, writer.as_mut(), "seq", &rows).await.unwrap();
    assert_eq!(db.sql("SELECT id, v FROM seq ORDER BY id"), "-5\tneg\n0\tzero\n3\tthree");
}

on_both_paths!(too_long_text_is_a_value_range_error_and_nothing_is_written);
async fn too_long_text_is_a_value_range_error_and_nothing_is_written(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE short (id int PRIMARY KEY, name varchar(5), amount decimal(10,3))");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let target = writer.describe("short").await.unwrap().unwrap();
    // written without `fit`: the server's strict mode is the second line
    let rows = vec![vec![Value::Int(1), t("ok"), Value::Null], vec![Value::Int(2), t("toolong"), Value::Null]];
    let e = writer.upsert(&target, &rows).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("name"), "{e}");
    assert_eq!(e.location().table.as_deref(), Some("short"), "{e}");
    assert_eq!(e.location().key, Some(vec![Value::Int(2)]), "{e}");
    assert!(!e.to_string().contains("toolong"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM short"), "0");

    // MariaDB rounds a decimal with a note, not an error: the warning check refuses it
    let rows = vec![vec![Value::Int(3), t("ok"), decimal("1.23456")]];
    let e = writer.upsert(&target, &rows).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("amount"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM short"), "0");

    // the connection is usable afterwards, outside any transaction
    let rows = vec![vec![Value::Int(4), t("fine"), decimal("1.234")]];
    assert_eq!(writer.upsert(&target, &rows).await.unwrap(), 1);
    assert_eq!(db.sql("SELECT id, name, amount FROM short"), "4\tfine\t1.234");
}

on_both_paths!(strict_mode_errors_are_value_range_errors);
async fn strict_mode_errors_are_value_range_errors(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE strict_t (id int PRIMARY KEY, small tinyint NOT NULL, d date)");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let target = writer.describe("strict_t").await.unwrap().unwrap();
    let e = writer.upsert(&target, &[vec![Value::Int(1), Value::Int(300), Value::Null]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("small"), "{e}");
    let e = writer.upsert(&target, &[vec![Value::Int(1), Value::Null, Value::Null]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("small"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM strict_t"), "0");
    // a date before MariaDB's documented range: `fit` with the connector's limits
    // refuses it (the server itself would take it)
    let e = write_fitted(&c, writer.as_mut(), "strict_t", &[vec![Value::Int(1), Value::Int(1), date("0999-12-31")]])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
}

on_both_paths!(created_tables_fit_mariadb_row_and_key_limits);
async fn created_tables_fit_mariadb_row_and_key_limits(load_min_rows: usize) {
    let db = mysql_db();
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let schema = TableSchema {
        name: "wide".into(),
        columns: vec![
            col("id", ColumnType::I32, false),
            col("code", ColumnType::TEXT, false),
            col("a", text(10_000), true),
            col("b", text(10_000), true),
            col("c", ColumnType::Bytes { max_bytes: Some(60_000) }, true),
        ],
        primary_key: vec!["id".into(), "code".into()],
    };
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&schema).await.unwrap();
    let target = writer.describe("wide").await.unwrap().unwrap();
    let natives: Vec<&str> = target.columns.iter().map(|c| c.native.as_str()).collect();
    assert_eq!(natives, vec!["int(11)", "varchar(767)", "longtext", "varchar(10000)", "longblob"]);
    let long = "é".repeat(10_000);
    let rows = vec![vec![Value::Int(-1), t(&"k".repeat(767)), t(&long), t(&long), Value::Bytes(vec![7; 60_000])]];
    write_fitted(&c, writer.as_mut(), "wide", &rows).await.unwrap();
    let mut reader = c.reader().await.unwrap();
    let back = reader.scan(&spec(&schema, &["id", "code"]), &KeyRange::ALL).await.unwrap();
    assert_eq!(back, rows);
    // a key longer than the narrowed key column is refused, not cut
    let too_long = vec![vec![Value::Int(-1), t(&"k".repeat(768)), Value::Null, Value::Null, Value::Null]];
    let e = write_fitted(&c, writer.as_mut(), "wide", &too_long).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("code"), "{e}");
}

/// Keys of the composite-key table, in key order (utf8mb4_nopad_bin: bytewise).
fn composite_keys() -> Vec<(i64, String)> {
    let mut keys = Vec::new();
    for a in -2..=2 {
        for b in ["", "A", "a", "a ", "b"] {
            keys.push((a, b.to_string()));
        }
    }
    keys.sort();
    keys
}

fn key_values(k: &(i64, String)) -> Vec<Value> {
    vec![Value::Int(k.0), t(&k.1)]
}

async fn composite_table(db: &TestDb) -> (MysqlConnector, TableSchema) {
    let c = connector(db);
    let schema = TableSchema {
        name: "pairs".into(),
        columns: vec![
            col("a", ColumnType::I32, false),
            col("b", ColumnType::TEXT, false),
            col("v", ColumnType::I64, true),
        ],
        primary_key: vec!["a".into(), "b".into()],
    };
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&schema).await.unwrap();
    let rows: Vec<Row> = composite_keys()
        .iter()
        .enumerate()
        .map(|(i, k)| vec![Value::Int(k.0), t(&k.1), Value::Int(i as i64)])
        .collect();
    writer.upsert(&schema, &rows).await.unwrap();
    (c, schema)
}

#[tokio::test]
async fn key_after_walks_a_composite_key_with_negative_and_zero_ints() {
    let db = mysql_db();
    let (c, schema) = composite_table(&db).await;
    let keys = composite_keys();
    let scan = spec(&schema, &["a", "b"]);
    let mut reader = c.reader().await.unwrap();

    let mut boundaries = Vec::new();
    let mut after: Option<Vec<Value>> = None;
    while let Some(k) = reader.key_after(&scan, after.as_deref(), 4).await.unwrap() {
        boundaries.push(k.clone());
        after = Some(k);
    }
    let expected: Vec<Vec<Value>> = keys.iter().skip(3).step_by(4).map(key_values).collect();
    assert_eq!(boundaries, expected);
    assert_eq!(reader.key_after(&scan, None, keys.len() as u64).await.unwrap(), Some(key_values(keys.last().unwrap())));
    assert_eq!(reader.key_after(&scan, None, keys.len() as u64 + 1).await.unwrap(), None);
    assert_eq!(
        reader.key_after(&scan, Some(&key_values(&(-1, "a".into()))), 1).await.unwrap(),
        Some(key_values(&(-1, "a ".into())))
    );
    assert_eq!(
        reader.key_after(&scan, Some(&key_values(&(-1, "b".into()))), 1).await.unwrap(),
        Some(key_values(&(0, "".into())))
    );

    // the chunks between the boundaries cover every row exactly once, in order
    let mut edges: Vec<Option<Vec<Value>>> = vec![None];
    edges.extend(boundaries.into_iter().map(Some));
    edges.push(None);
    let mut all = Vec::new();
    for w in edges.windows(2) {
        let range = KeyRange { after: w[0].clone(), upto: w[1].clone() };
        all.extend(reader.scan(&scan, &range).await.unwrap());
    }
    let got: Vec<Vec<Value>> = all.iter().map(|r| r[..2].to_vec()).collect();
    let want: Vec<Vec<Value>> = keys.iter().map(key_values).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn scan_returns_exactly_the_rows_of_a_key_range() {
    let db = mysql_db();
    let (c, schema) = composite_table(&db).await;
    let keys = composite_keys();
    let mut reader = c.reader().await.unwrap();
    let scan = spec(&schema, &["a", "b"]);
    let lo = (-1, "a".to_string());
    let hi = (1, "A".to_string());
    let range = KeyRange { after: Some(key_values(&lo)), upto: Some(key_values(&hi)) };
    let got: Vec<Vec<Value>> = reader.scan(&scan, &range).await.unwrap().into_iter().map(|r| r[..2].to_vec()).collect();
    let want: Vec<Vec<Value>> = keys.iter().filter(|k| **k > lo && **k <= hi).map(key_values).collect();
    assert_eq!(got, want);
    assert!(!want.is_empty());

    // with a filter and a partition
    let filtered = ScanSpec {
        filter: Some("v % 2 = 0".into()),
        partition: Some(PartitionFilter { column: "a".into(), value: Value::Int(0) }),
        ..scan.clone()
    };
    let got = reader.scan(&filtered, &KeyRange::ALL).await.unwrap();
    let want: Vec<Row> = keys
        .iter()
        .enumerate()
        .filter(|(i, k)| k.0 == 0 && i % 2 == 0)
        .map(|(i, k)| vec![Value::Int(k.0), t(&k.1), Value::Int(i as i64)])
        .collect();
    assert_eq!(got, want);

    let parts = reader.partitions("pairs", "a", &ColumnType::I32, Some("v < 12")).await.unwrap();
    // v = 0..11 covers a = -2 (5 rows), -1 (5 rows), 0 (2 rows): smallest count first
    assert_eq!(parts, vec![(Value::Int(0), 2), (Value::Int(-2), 5), (Value::Int(-1), 5)]);
}

on_both_paths!(keys_differing_in_case_or_trailing_space_stay_distinct);
async fn keys_differing_in_case_or_trailing_space_stay_distinct(load_min_rows: usize) {
    let db = mysql_db();
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let schema = TableSchema {
        name: "words".into(),
        columns: vec![col("w", ColumnType::TEXT, false), col("n", ColumnType::I32, true)],
        primary_key: vec!["w".into()],
    };
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&schema).await.unwrap();
    let rows = vec![vec![t("a"), Value::Int(1)], vec![t("A"), Value::Int(2)], vec![t("a "), Value::Int(3)]];
    writer.upsert(&schema, &rows).await.unwrap();
    writer.upsert(&schema, &rows).await.unwrap();
    assert_eq!(db.sql("SELECT count(*) FROM words"), "3");
    let mut reader = c.reader().await.unwrap();
    let back = reader.scan(&spec(&schema, &["w"]), &KeyRange::ALL).await.unwrap();
    assert_eq!(back, vec![vec![t("A"), Value::Int(2)], vec![t("a"), Value::Int(1)], vec![t("a "), Value::Int(3)],]);
    let described = reader.describe("words").await.unwrap().unwrap();
    assert_eq!(described.column("w").unwrap().native, "varchar(768)");
    // a key range over text keys with a quote and a backslash in them
    let range = KeyRange { after: Some(vec![t("A")]), upto: Some(vec![t("a")]) };
    let got = reader.scan(&spec(&schema, &["w"]), &range).await.unwrap();
    assert_eq!(got, vec![vec![t("a"), Value::Int(1)]]);
}

#[tokio::test]
async fn unsupported_types_name_table_and_column() {
    let db = mysql_db();
    db.sql("CREATE TABLE odd (id int PRIMARY KEY, flags bit(3))");
    let mut reader = connector(&db).reader().await.unwrap();
    let e = reader.describe("odd").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(e.location().table.as_deref(), Some("odd"));
    assert_eq!(e.location().column.as_deref(), Some("flags"));
    assert!(e.to_string().contains("bit(3)"), "{e}");
}

#[tokio::test]
async fn bad_source_values_are_errors_naming_the_column() {
    let db = mysql_db();
    db.sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE legacy (id int PRIMARY KEY, ok tinyint(1), born date);
         INSERT INTO legacy VALUES (1, 1, '2000-01-01'), (2, 2, '2000-01-01'), (3, 0, '0000-00-00')",
    );
    let mut reader = connector(&db).reader().await.unwrap();
    let schema = reader.describe("legacy").await.unwrap().unwrap();
    let scan = spec(&schema, &["id"]);
    let upto = |k: i64| KeyRange { after: Some(vec![Value::Int(k - 1)]), upto: Some(vec![Value::Int(k)]) };
    assert_eq!(
        reader.scan(&scan, &upto(1)).await.unwrap(),
        vec![vec![Value::Int(1), Value::Bool(true), date("2000-01-01")]]
    );
    let e = reader.scan(&scan, &upto(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("ok"));
    assert!(e.to_string().contains("is not a boolean"), "{e}");
    let e = reader.scan(&scan, &upto(3)).await.unwrap_err();
    assert_eq!(e.location().column.as_deref(), Some("born"), "{e}");
    assert_eq!(e.location().table.as_deref(), Some("legacy"), "{e}");
    // the reader goes on after an error
    assert_eq!(reader.scan(&scan, &upto(1)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn catalog_estimates_and_expressions() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE b_orders (id bigint PRIMARY KEY, amount decimal(10,2) NOT NULL,
            note varchar(40), paid tinyint(1), at datetime(6), doc json);
         CREATE TABLE a_small (id int PRIMARY KEY);
         CREATE VIEW c_view AS SELECT id FROM a_small;
         INSERT INTO b_orders VALUES (1, 12.50, 'x', 1, '2024-01-01 00:00:00', '{}'),
                                     (2, 0.10, NULL, 0, NULL, NULL)",
    );
    let mut reader = connector(&db).reader().await.unwrap();
    assert_eq!(reader.list_tables().await.unwrap(), vec!["a_small", "b_orders"]);
    assert_eq!(reader.estimate_rows("b_orders").await.unwrap(), 2);
    assert_eq!(reader.estimate_rows("a_small").await.unwrap(), 0);
    let exprs: Vec<String> =
        ["amount * 100", "upper(note)", "id + 1", "paid", "at", "cast(amount as double)", "unhex('00ff')"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let types = reader.describe_exprs("b_orders", &exprs).await.unwrap();
    assert_eq!(types[0], dec(13, 2));
    assert_eq!(types[1], text(40));
    assert!(matches!(types[2], ColumnType::Int { bytes: 8, .. }), "{types:?}");
    assert_eq!(types[3], ColumnType::Bool);
    assert_eq!(types[4], ColumnType::Timestamp);
    assert_eq!(types[5], ColumnType::Float64);
    assert!(matches!(types[6], ColumnType::Bytes { .. }), "{types:?}");
    // the expressions read as their described types
    let scan = ScanSpec {
        table: "b_orders".into(),
        select: exprs
            .iter()
            .zip(&types)
            .map(|(e, ty)| SelectItem { expr: SelectExpr::Sql(e.clone()), ty: ty.clone() })
            .collect(),
        key: vec!["id".into()],
        key_types: vec![ColumnType::I64],
        filter: None,
        partition: None,
    };
    let rows = reader.scan(&scan, &KeyRange::ALL).await.unwrap();
    assert_eq!(
        rows[0],
        vec![
            decimal("1250.00"),
            t("X"),
            Value::Int(2),
            Value::Bool(true),
            ts("2024-01-01 00:00:00"),
            Value::F64(12.5),
            Value::Bytes(vec![0, 0xff]),
        ]
    );
    let e = reader.describe_exprs("b_orders", &["no_such_column".to_string()]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    let e = reader.estimate_rows("missing").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = SecretUrl::new(format!("mysql://u:s3cret@127.0.0.1:{port}/db"));
    let c = MysqlConnector::new(&url).unwrap();
    let Err(e) = c.reader().await else { panic!("connected to a closed port") };
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.is_transient());
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_never_shown() {
    let db = mysql_db();
    let wrong = db.url.replace(&format!("{USER}:{PASSWORD}@"), &format!("{USER}:not-the-password@"));
    assert_ne!(wrong, db.url);
    let c = MysqlConnector::new(&SecretUrl::new(wrong)).unwrap();
    let Err(e) = c.writer().await else { panic!("logged in with a wrong password") };
    assert_eq!(e.kind(), ErrorKind::Database, "{e}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(text.contains(USER) && text.contains("127.0.0.1"), "{text}");
}

/// The rows of `table`, read back by `key` with the table's own described types.
async fn read_back(c: &MysqlConnector, table: &str, key: &[&str]) -> (TableSchema, Vec<Row>) {
    let mut reader = c.reader().await.unwrap();
    let schema = reader.describe(table).await.unwrap().expect("table exists");
    let rows = reader.scan(&spec(&schema, key), &KeyRange::ALL).await.unwrap();
    (schema, rows)
}

on_both_paths!(an_unfitted_too_long_value_is_refused_and_nothing_changes);
/// `LOAD DATA LOCAL` turns a bad value into a warning and truncates it: a value too long
/// for a `varchar(5)`, written WITHOUT the engine's `fit`, is refused on both paths, and
/// the table keeps exactly what it had (earlier statements of the batch included).
async fn an_unfitted_too_long_value_is_refused_and_nothing_changes(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE v5 (id int PRIMARY KEY, name varchar(5), n int)");
    // small statements: the refused row is in a later statement of the transaction
    let c = connector(&db).with_load_data_min_rows(load_min_rows).with_load_data_max_bytes(1_000);
    let mut writer = c.writer().await.unwrap();
    let target = writer.describe("v5").await.unwrap().unwrap();
    let first: Vec<Row> = (0..300).map(|i| vec![Value::Int(i), t(&format!("r{i}")), Value::Int(i)]).collect();
    assert_eq!(writer.upsert(&target, &first).await.unwrap(), 300);
    let before = db.sql("SELECT id, name, n FROM v5 ORDER BY id");

    for bad in ["toolong", "éééééé", "abcde "] {
        let mut second: Vec<Row> = (0..300).map(|i| vec![Value::Int(i), t(&format!("s{i}")), Value::Int(-i)]).collect();
        second.push(vec![Value::Int(1000), t("new"), Value::Null]);
        second[250][1] = t(bad);
        let e = writer.upsert(&target, &second).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{bad}: {e}");
        assert_eq!(e.location().table.as_deref(), Some("v5"), "{e}");
        assert_eq!(e.location().column.as_deref(), Some("name"), "{e}");
        assert_eq!(e.location().key, Some(vec![Value::Int(250)]), "{e}");
        assert!(!e.to_string().contains(bad.trim()), "the value is not shown: {e}");
        assert_eq!(db.sql("SELECT id, name, n FROM v5 ORDER BY id"), before, "{bad}");
    }
    // five characters of two bytes each fit (characters count, not bytes)
    let rows = vec![vec![Value::Int(1), t("ééééé"), Value::Int(1)]];
    writer.upsert(&target, &rows).await.unwrap();
    assert_eq!(db.sql("SELECT name FROM v5 WHERE id = 1"), "ééééé");
}

on_both_paths!(rewriting_a_batch_leaves_each_key_once_with_the_new_values);
/// Writing a batch again with changed values leaves each key once with the new values;
/// within one batch the last row of a key wins.
async fn rewriting_a_batch_leaves_each_key_once_with_the_new_values(load_min_rows: usize) {
    let db = mysql_db();
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let schema = TableSchema {
        name: "accounts".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("name", text(40), true),
            col("balance", dec(12, 2), true),
            col("at", ColumnType::Timestamp, true),
        ],
        primary_key: vec!["id".into()],
    };
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&schema).await.unwrap();
    let schema = writer.describe("accounts").await.unwrap().unwrap();
    let first: Vec<Row> = (0..1000)
        .map(|i| {
            let balance = if i % 3 == 0 { Value::Null } else { decimal(&format!("{i}.25")) };
            vec![Value::Int(i), t(&format!("first {i}")), balance, ts("2024-01-01 00:00:00")]
        })
        .collect();
    writer.upsert(&schema, &first).await.unwrap();
    let second: Vec<Row> = (0..1000)
        .map(|i| {
            let balance = if i % 3 == 1 { Value::Null } else { decimal(&format!("-{i}.50")) };
            vec![Value::Int(i), t(&format!("second\t{i}")), balance, ts("2025-06-30 12:00:00.5")]
        })
        .collect();
    assert_eq!(writer.upsert(&schema, &second).await.unwrap(), 1000);
    let (_, back) = read_back(&c, "accounts", &["id"]).await;
    assert_eq!(back, second);
    assert_eq!(db.sql("SELECT count(*), count(DISTINCT id) FROM accounts"), "1000\t1000");

    // the same key twice in one batch: the last row wins
    let twice = vec![
        vec![Value::Int(5), t("older"), Value::Null, Value::Null],
        vec![Value::Int(5), t("newer"), decimal("1.00"), Value::Null],
    ];
    writer.upsert(&schema, &twice).await.unwrap();
    assert_eq!(db.sql("SELECT name, balance FROM accounts WHERE id = 5"), "newer\t1.00");
    assert_eq!(db.sql("SELECT count(*) FROM accounts"), "1000");
}

on_both_paths!(null_empty_and_markup_text_stay_distinct);
/// NULL and the empty string stay distinct, and text that looks like LOAD DATA's
/// markup (`\N`, `NULL`, tabs, newlines, backslashes) arrives as written.
async fn null_empty_and_markup_text_stay_distinct(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE marks (id int PRIMARY KEY, t longtext, b longblob, v varchar(10) NOT NULL)");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let target = writer.describe("marks").await.unwrap().unwrap();
    let rows: Vec<Row> = vec![
        vec![Value::Int(1), Value::Null, Value::Null, t("")],
        vec![Value::Int(2), t(""), Value::Bytes(Vec::new()), t("x")],
        vec![Value::Int(3), t("\\N"), Value::Bytes(b"\\N".to_vec()), t("NULL")],
        vec![Value::Int(4), t("NULL"), Value::Bytes(b"NULL".to_vec()), t("\\")],
        vec![Value::Int(5), t("a\tb\nc\\d\r\n\0"), Value::Bytes(b"\t\n\\\0\r".to_vec()), t("\\t\\n")],
        vec![Value::Int(6), t("\\"), Value::Bytes(b"\\".to_vec()), t("end\\")],
    ];
    writer.upsert(&target, &rows).await.unwrap();
    let (_, back) = read_back(&c, "marks", &["id"]).await;
    assert_eq!(back, rows);
    assert_eq!(db.sql("SELECT count(*) FROM marks WHERE t IS NULL"), "1");
    assert_eq!(db.sql("SELECT count(*) FROM marks WHERE b IS NULL"), "1");
    assert_eq!(db.sql("SELECT count(*) FROM marks WHERE v = ''"), "1");
    // NULL into a NOT NULL column is refused, not turned into ''
    let e = writer.upsert(&target, &[vec![Value::Int(7), Value::Null, Value::Null, Value::Null]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("v"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM marks"), "6");
}

on_both_paths!(bytes_of_every_value_round_trip);
/// Every byte value, alone and in runs, in blobs and binary columns, with rows large
/// enough that the file spans several packets.
async fn bytes_of_every_value_round_trip(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE raw (id int PRIMARY KEY, b longblob, vb varbinary(300), bn binary(2))");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let target = writer.describe("raw").await.unwrap().unwrap();
    let all: Vec<u8> = (0..=255u8).collect();
    let mut rows: Vec<Row> = (0..=255u8)
        .map(|i| {
            vec![
                Value::Int(i as i64),
                Value::Bytes(vec![i]),
                Value::Bytes(vec![i, i, b'\\', i]),
                Value::Bytes(vec![i, 255 - i]),
            ]
        })
        .collect();
    // about 400 KiB of escapes each: the rows cross the 1 MiB packets
    let heavy: Vec<u8> = all.iter().cycle().take(400_000).copied().collect();
    for k in 0..6 {
        let mut b = heavy.clone();
        b.rotate_left(k * 37);
        rows.push(vec![Value::Int(1000 + k as i64), Value::Bytes(b), Value::Bytes(all.clone()), Value::Null]);
    }
    writer.upsert(&target, &rows).await.unwrap();
    let (_, back) = read_back(&c, "raw", &["id"]).await;
    assert_eq!(back.len(), rows.len());
    for (got, want) in back.iter().zip(&rows) {
        assert!(got == want, "row {:?} differs", want[0]);
    }
}

on_both_paths!(text_is_utf8_and_other_charsets_are_converted);
/// Text reaches a utf8mb4 column byte for byte (4-byte characters included), and a
/// column in another character set gets it converted by the server, as a parameter
/// would be: no mojibake, and a character the column cannot hold is refused.
async fn text_is_utf8_and_other_charsets_are_converted(load_min_rows: usize) {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE cs (id int PRIMARY KEY, u varchar(10) CHARACTER SET utf8mb4, \
         l varchar(10) CHARACTER SET latin1, e enum('é','😀'), j json, g uuid)",
    );
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let target = writer.describe("cs").await.unwrap().unwrap();
    let uuid = Value::Uuid(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap());
    let rows = vec![
        vec![Value::Int(1), t("é😀"), t("é"), t("😀"), Value::Json(r#"{"é": "😀"}"#.into()), uuid.clone()],
        vec![Value::Int(2), t("😀😀😀😀😀😀😀😀😀😀"), t("ÿ\\"), t("é"), Value::Null, Value::Uuid([0; 16])],
    ];
    writer.upsert(&target, &rows).await.unwrap();
    let (_, back) = read_back(&c, "cs", &["id"]).await;
    assert_eq!(back, rows);
    assert_eq!(
        db.sql("SELECT hex(u), hex(l), hex(e), g FROM cs WHERE id = 1"),
        "C3A9F09F9880\tE9\tF09F9880\ta0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    let bad = vec![vec![Value::Int(3), t("x"), t("😀"), Value::Null, Value::Null, Value::Null]];
    let e = writer.upsert(&target, &bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("l"), "{e}");
    let bad = vec![vec![Value::Int(3), t("x"), t("x"), Value::Null, Value::Null, t("not a uuid")]];
    let e = writer.upsert(&target, &bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("g"), "{e}");
    assert_eq!(db.sql("SELECT count(*) FROM cs"), "2");
}

on_both_paths!(year_zero_stays_zero);
/// A `year` column keeps 0 as 0000 (the text `0` would be the year 2000), even when
/// the schema given to the writer does not spell the native type.
async fn year_zero_stays_zero(load_min_rows: usize) {
    let db = mysql_db();
    db.sql("CREATE TABLE years (id int PRIMARY KEY, y year)");
    let c = connector(&db).with_load_data_min_rows(load_min_rows);
    let mut writer = c.writer().await.unwrap();
    let bare = TableSchema {
        name: "years".into(),
        columns: vec![col("id", ColumnType::I32, false), col("y", int(2, false), true)],
        primary_key: vec!["id".into()],
    };
    let rows = vec![
        vec![Value::Int(1), Value::Int(0)],
        vec![Value::Int(2), Value::Int(2024)],
        vec![Value::Int(3), Value::Int(1901)],
        vec![Value::Int(4), Value::Null],
    ];
    writer.upsert(&bare, &rows).await.unwrap();
    assert_eq!(db.sql("SELECT id, y FROM years ORDER BY id"), "1\t0000\n2\t2024\n3\t1901\n4\tNULL");
    // a two-digit year would be moved to 19xx/20xx: refused
    let target = writer.describe("years").await.unwrap().unwrap();
    let e = writer.upsert(&target, &[vec![Value::Int(5), Value::Int(99)]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(e.location().column.as_deref(), Some("y"), "{e}");
}

/// A `REPLACE` deletes before it inserts: a table that a cascading foreign key
/// references, or one with a delete trigger, is written with INSERT ... ON DUPLICATE
/// KEY UPDATE instead, so rewriting its rows touches nothing else.
#[tokio::test]
async fn referenced_and_triggered_tables_are_not_replaced() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE parent (id int PRIMARY KEY, v int);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int,
             FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE);
         CREATE TABLE watched (id int PRIMARY KEY, v int);
         CREATE TABLE deleted (id int);
         CREATE TRIGGER watched_del AFTER DELETE ON watched FOR EACH ROW INSERT INTO deleted VALUES (OLD.id)",
    );
    let c = connector(&db).with_load_data_min_rows(0);
    let mut writer = c.writer().await.unwrap();
    for table in ["parent", "watched"] {
        let target = writer.describe(table).await.unwrap().unwrap();
        let rows: Vec<Row> = (0..300).map(|i| vec![Value::Int(i), Value::Int(i)]).collect();
        writer.upsert(&target, &rows).await.unwrap();
        if table == "parent" {
            db.sql("INSERT INTO child SELECT id, id FROM parent");
        }
        let rows: Vec<Row> = (0..300).map(|i| vec![Value::Int(i), Value::Int(-i)]).collect();
        writer.upsert(&target, &rows).await.unwrap();
        assert_eq!(db.sql(&format!("SELECT count(*), sum(v) FROM {table}")), "300\t-44850");
    }
    assert_eq!(db.sql("SELECT count(*) FROM child"), "300");
    assert_eq!(db.sql("SELECT count(*) FROM deleted"), "0");
}

/// A server with `local_infile` off refuses `LOAD DATA LOCAL`: the writer writes the
/// batch with INSERT instead, and goes on that way.
#[tokio::test]
async fn without_local_infile_the_writer_falls_back_to_insert() {
    let server = MariaDbServer::start_private();
    let db = server.create_db();
    db.sql("SET GLOBAL local_infile = 0");
    let c = connector(&db).with_load_data_min_rows(0);
    let mut writer = c.writer().await.unwrap();
    db.sql("CREATE TABLE plain (id int PRIMARY KEY, name varchar(5))");
    let target = writer.describe("plain").await.unwrap().unwrap();
    for round in 0..2 {
        let rows: Vec<Row> = (0..500).map(|i| vec![Value::Int(i), t(&format!("{round}-{i}"))]).collect();
        assert_eq!(writer.upsert(&target, &rows).await.unwrap(), 500);
    }
    assert_eq!(db.sql("SELECT count(*), max(name) FROM plain"), "500\t1-99");
    let e = writer.upsert(&target, &[vec![Value::Int(1), t("toolong")]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(db.sql("SELECT name FROM plain WHERE id = 1"), "1-1");
}
