//! The sync side of the MariaDB connector against a real MariaDB 10.11: re-reading rows
//! by key (`Reader::fetch_keys`) and applying a batch with deletes and a version guard
//! (`Writer::apply`).

use pontoon_core::value::{parse_date, parse_timestamp, parse_uuid};
use pontoon_core::{
    Column, ColumnType, Connector, Decimal, ErrorKind, KeyRange, PartitionFilter, Row, ScanSpec, SecretUrl, SelectExpr,
    SelectItem, TableSchema, Value,
};
use pontoon_mysql::MysqlConnector;
use pontoon_testsupport::{TestDb, mysql_db};

fn connector(db: &TestDb) -> MysqlConnector {
    MysqlConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL")
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), native: String::new(), ty, nullable, has_default: false }
}

/// A scan of every column of the described table, by `key`.
fn spec(schema: &TableSchema, key: &[&str]) -> ScanSpec {
    ScanSpec::every_column(schema, &key.iter().map(|k| k.to_string()).collect::<Vec<_>>())
}

async fn describe(c: &MysqlConnector, table: &str) -> TableSchema {
    c.reader().await.unwrap().describe(table).await.unwrap().expect("table exists")
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// Single and composite keys, text with quotes, backslashes, NUL and 4-byte UTF-8:
/// `fetch_keys` returns exactly the rows `scan` returns for those keys, decoded the same
/// way, within the scan's filter and partition; missing keys are simply absent.
#[tokio::test]
async fn fetch_keys_returns_the_rows_scan_returns_for_those_keys() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE pairs (a int NOT NULL, b varchar(20) NOT NULL, v int, note text, PRIMARY KEY (a, b));
         INSERT INTO pairs VALUES (1, 'x', 10, 'one'), (1, 'it''s', 11, NULL), (2, 'back\\\\slash', 12, 'two'),
           (2, '🦀 crab', 13, 'crab'), (3, CONCAT('nul', CHAR(0), 'byte'), 14, 'nul'), (-1, '', 15, 'empty')",
    );
    let c = connector(&db);
    let schema = describe(&c, "pairs").await;
    let scan = spec(&schema, &["a", "b"]);
    let mut reader = c.reader().await.unwrap();
    let all = reader.scan(&scan, &KeyRange::ALL).await.unwrap();
    assert_eq!(all.len(), 6);

    let keys: Vec<Vec<Value>> = all.iter().map(|r| r[..2].to_vec()).collect();
    let mut asked = keys.clone();
    asked.push(vec![Value::Int(9), t("missing")]);
    asked.push(vec![Value::Int(1), t("x' OR '1'='1")]);
    let got = reader.fetch_keys(&scan, &asked).await.unwrap();
    assert_eq!(sorted(got), sorted(all.clone()));

    // a subset, in any order, asked twice
    let some = vec![keys[3].clone(), keys[0].clone(), keys[3].clone()];
    let got = reader.fetch_keys(&scan, &some).await.unwrap();
    assert_eq!(sorted(got), sorted(vec![all[3].clone(), all[0].clone()]));

    // the filter and the partition are ANDed: a row outside them is absent
    let narrowed = ScanSpec {
        filter: Some("v <> 13".into()),
        partition: Some(PartitionFilter { column: "a".into(), value: Value::Int(2) }),
        ..scan.clone()
    };
    let got = reader.fetch_keys(&narrowed, &keys).await.unwrap();
    let want: Vec<Row> = all.iter().filter(|r| r[0] == Value::Int(2) && r[2] != Value::Int(13)).cloned().collect();
    assert_eq!(want.len(), 1);
    assert_eq!(got, want);

    // expressions in the select list are evaluated and decoded as scan does
    let exprs = ScanSpec {
        select: vec![
            SelectItem { expr: SelectExpr::Sql("a * 100 + v".into()), ty: ColumnType::I64 },
            SelectItem { expr: SelectExpr::Column("b".into()), ty: ColumnType::TEXT },
        ],
        ..scan.clone()
    };
    let got = reader.fetch_keys(&exprs, &[keys[0].clone()]).await.unwrap();
    assert_eq!(got, reader.scan(&exprs, &KeyRange { after: None, upto: Some(keys[0].clone()) }).await.unwrap());

    assert!(reader.fetch_keys(&scan, &[]).await.unwrap().is_empty());
    let e = reader.fetch_keys(&scan, &[vec![Value::Int(1)]]).await.unwrap_err();
    assert_eq!(e.location().table.as_deref(), Some("pairs"), "{e}");
}

/// More keys than one statement takes: every one is found, none twice.
#[tokio::test]
async fn fetch_keys_splits_many_keys_into_several_statements() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE many (id bigint PRIMARY KEY, v varchar(10));
         INSERT INTO many SELECT seq, CONCAT('v', seq) FROM seq_1_to_2600",
    );
    let c = connector(&db);
    let schema = describe(&c, "many").await;
    let mut reader = c.reader().await.unwrap();
    let keys: Vec<Vec<Value>> = (0..=2601).rev().map(|i| vec![Value::Int(i)]).collect();
    let got = reader.fetch_keys(&spec(&schema, &["id"]), &keys).await.unwrap();
    assert_eq!(got.len(), 2600);
    let mut ids: Vec<i64> = got
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Int(i), Value::Text(v)) if *v == format!("v{i}") => *i,
            other => panic!("unexpected row {other:?}"),
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=2600).collect::<Vec<_>>());
}

/// Keys of every kind a MariaDB key can be: bytes (with zero bytes and quotes),
/// uuid, date, datetime(6), timestamp(6), decimal, time, unsigned bigint above 2^63.
/// Each key as `scan` decodes it finds its row.
#[tokio::test]
async fn fetch_keys_finds_keys_of_every_type() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE bin_k (k varbinary(16) PRIMARY KEY, n int);
         INSERT INTO bin_k VALUES (x'00', 1), (x'0027ff5c', 2), (x'', 3), (x'61', 4);
         CREATE TABLE fixed_k (k binary(4) PRIMARY KEY, n int);
         INSERT INTO fixed_k VALUES (x'01', 1), (x'01020304', 2);
         CREATE TABLE uuid_k (k uuid PRIMARY KEY, n int);
         INSERT INTO uuid_k VALUES ('123e4567-e89b-12d3-a456-426614174000', 1), ('00000000-0000-0000-0000-000000000001', 2);
         CREATE TABLE time_k (d date, dt datetime(6), ts timestamp(6) NOT NULL DEFAULT '2000-01-01', tm time(6), n int,
           PRIMARY KEY (d, dt, ts, tm));
         INSERT INTO time_k VALUES ('2024-02-29', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.5', '-838:59:59', 1),
           ('1000-01-01', '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01', '00:00:00.000001', 2);
         CREATE TABLE num_k (d decimal(30,4), u bigint unsigned, n int, PRIMARY KEY (d, u));
         INSERT INTO num_k VALUES (-12.5000, 18446744073709551615, 1), (0.0001, 9223372036854775808, 2), (7, 0, 3)",
    );
    let c = connector(&db);
    let mut reader = c.reader().await.unwrap();
    for (table, key) in [
        ("bin_k", &["k"][..]),
        ("fixed_k", &["k"][..]),
        ("uuid_k", &["k"][..]),
        ("time_k", &["d", "dt", "ts", "tm"][..]),
        ("num_k", &["d", "u"][..]),
    ] {
        let schema = describe(&c, table).await;
        let scan = spec(&schema, key);
        let all = reader.scan(&scan, &KeyRange::ALL).await.unwrap();
        assert!(all.len() >= 2, "{table}");
        for row in &all {
            let k = row[..key.len()].to_vec();
            let got = reader.fetch_keys(&scan, std::slice::from_ref(&k)).await.unwrap();
            assert_eq!(got, vec![row.clone()], "{table} key {k:?}");
        }
    }
    // the values are the ones inserted, as the scan decodes them
    let schema = describe(&c, "num_k").await;
    let key = vec![Value::Decimal(Decimal::parse("-12.5000").unwrap()), Value::UInt(u64::MAX)];
    let got = reader.fetch_keys(&spec(&schema, &["d", "u"]), std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(got, vec![vec![key[0].clone(), key[1].clone(), Value::Int(1)]]);
    let schema = describe(&c, "uuid_k").await;
    let key = vec![Value::Uuid(parse_uuid("123e4567-e89b-12d3-a456-426614174000").unwrap())];
    assert_eq!(reader.fetch_keys(&spec(&schema, &["k"]), &[key]).await.unwrap().len(), 1);
    let schema = describe(&c, "time_k").await;
    let key = vec![
        Value::Date(parse_date("2024-02-29").unwrap()),
        Value::Timestamp(parse_timestamp("2024-02-29 23:59:59.999999").unwrap().0),
        Value::TimestampTz(parse_timestamp("2038-01-19 03:14:07.5").unwrap().0),
        Value::Time(-((838 * 60 + 59) * 60 + 59) * 1_000_000),
    ];
    assert_eq!(reader.fetch_keys(&spec(&schema, &["d", "dt", "ts", "tm"]), &[key]).await.unwrap().len(), 1);
    // a binary(4) key is zero-padded: the short key is not the stored one
    let schema = describe(&c, "fixed_k").await;
    assert!(reader.fetch_keys(&spec(&schema, &["k"]), &[vec![Value::Bytes(vec![1])]]).await.unwrap().is_empty());
}

/// Text keys are matched as the database matches them. Under a case-insensitive, PAD
/// SPACE collation (MariaDB's default `utf8mb4_general_ci`) `'abc'`, `'ABC'` and
/// `'abc  '` are one key: asking for any of them returns the one row, spelled as
/// stored, once. Under a binary, NO PAD collation they are different keys.
#[tokio::test]
async fn fetch_keys_matches_text_keys_under_the_column_collation() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE ci (k varchar(20) COLLATE utf8mb4_general_ci PRIMARY KEY, n int);
         INSERT INTO ci VALUES ('Abc', 1), ('x', 2);
         CREATE TABLE bin (k varchar(20) COLLATE utf8mb4_nopad_bin PRIMARY KEY, n int);
         INSERT INTO bin VALUES ('Abc', 1), ('abc', 2), ('abc ', 3)",
    );
    let c = connector(&db);
    let mut reader = c.reader().await.unwrap();
    let ci = spec(&describe(&c, "ci").await, &["k"]);
    for asked in ["abc", "ABC", "Abc", "abc  "] {
        let got = reader.fetch_keys(&ci, &[vec![t(asked)]]).await.unwrap();
        assert_eq!(got, vec![vec![t("Abc"), Value::Int(1)]], "asked for {asked:?}");
    }
    let got = reader.fetch_keys(&ci, &[vec![t("abc")], vec![t("ABC")], vec![t("abc ")]]).await.unwrap();
    assert_eq!(got, vec![vec![t("Abc"), Value::Int(1)]], "one row for three spellings");

    let bin = spec(&describe(&c, "bin").await, &["k"]);
    assert!(reader.fetch_keys(&bin, &[vec![t("ABC")]]).await.unwrap().is_empty());
    let got = reader.fetch_keys(&bin, &[vec![t("abc ")]]).await.unwrap();
    assert_eq!(got, vec![vec![t("abc "), Value::Int(3)]]);
    let got = reader.fetch_keys(&bin, &[vec![t("Abc")], vec![t("abc")]]).await.unwrap();
    assert_eq!(sorted(got), sorted(vec![vec![t("Abc"), Value::Int(1)], vec![t("abc"), Value::Int(2)]]));
}

fn orders_schema() -> TableSchema {
    TableSchema {
        name: "orders".into(),
        // the version column first: the guard must still compare the old version
        columns: vec![
            col("ver", ColumnType::I64, true),
            col("id", ColumnType::I64, false),
            col("name", ColumnType::Text { max_chars: Some(8) }, true),
        ],
        primary_key: vec!["id".into()],
    }
}

fn order(id: i64, ver: Option<i64>, name: &str) -> Row {
    vec![ver.map(Value::Int).unwrap_or(Value::Null), Value::Int(id), t(name)]
}

async fn orders(db: &TestDb) -> MysqlConnector {
    let c = connector(db);
    let mut writer = c.writer().await.unwrap();
    writer.create_table(&orders_schema()).await.unwrap();
    writer
        .upsert(
            &orders_schema(),
            &[
                order(1, Some(10), "one"),
                order(2, Some(10), "two"),
                order(3, None, "three"),
                order(4, Some(10), "four"),
            ],
        )
        .await
        .unwrap();
    c
}

fn contents(db: &TestDb) -> String {
    db.sql("SELECT id, IFNULL(ver, 'null'), name FROM orders ORDER BY id")
}

/// The version guard: an older row does not overwrite a newer one; an equal or newer
/// one does; a row whose target version is NULL is overwritten; a new key is
/// inserted; a row with a NULL version does not replace a versioned one.
#[tokio::test]
async fn apply_with_a_version_column_never_writes_old_over_new() {
    let db = mysql_db();
    let c = orders(&db).await;
    let mut writer = c.writer().await.unwrap();
    let rows = vec![
        order(1, Some(9), "older"),
        order(2, Some(10), "equal"),
        order(3, Some(1), "wasnull"),
        order(4, None, "nullver"),
        order(5, Some(1), "new"),
    ];
    writer.apply(&orders_schema(), &rows, &[], Some("ver")).await.unwrap();
    assert_eq!(
        contents(&db),
        "1\t10\tone\n2\t10\tequal\n3\t1\twasnull\n4\t10\tfour\n5\t1\tnew",
        "older and NULL-versioned rows must not overwrite"
    );
    writer.apply(&orders_schema(), &[order(1, Some(11), "newer")], &[], Some("ver")).await.unwrap();
    assert_eq!(db.sql("SELECT ver, name FROM orders WHERE id = 1"), "11\tnewer");

    // without a version column the last write wins, as with upsert
    writer.apply(&orders_schema(), &[order(1, Some(2), "plain")], &[], None).await.unwrap();
    assert_eq!(db.sql("SELECT ver, name FROM orders WHERE id = 1"), "2\tplain");

    let e = writer.apply(&orders_schema(), &[order(1, Some(2), "x")], &[], Some("nope")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema, "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
}

/// Upserts and deletes in one call: deletes are not guarded, a missing key is no error,
/// and the returned count covers both.
#[tokio::test]
async fn apply_upserts_and_deletes_by_key() {
    for load_min_rows in [0, usize::MAX] {
        let db = mysql_db();
        let c = orders(&db).await.with_load_data_min_rows(load_min_rows);
        let mut writer = c.writer().await.unwrap();
        let deletes = vec![vec![Value::Int(1)], vec![Value::Int(3)], vec![Value::Int(99)]];
        let n = writer.apply(&orders_schema(), &[order(2, Some(11), "two'")], &deletes, None).await.unwrap();
        assert_eq!(n, 3, "one row upserted, two deleted");
        assert_eq!(contents(&db), "2\t11\ttwo'\n4\t10\tfour", "load_min_rows {load_min_rows}");
        // an old version does not stop a delete
        writer.apply(&orders_schema(), &[], &[vec![Value::Int(4)]], Some("ver")).await.unwrap();
        assert_eq!(contents(&db), "2\t11\ttwo'");
        assert_eq!(writer.apply(&orders_schema(), &[], &[], Some("ver")).await.unwrap(), 0);
    }

    // composite keys with text, deleted in more than one statement
    let db = mysql_db();
    db.sql(
        "CREATE TABLE pairs (a int, b varchar(10), n int, PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT seq % 7, CONCAT('k', seq), seq FROM seq_1_to_2500",
    );
    let c = connector(&db);
    let schema = describe(&c, "pairs").await;
    let mut writer = c.writer().await.unwrap();
    let deletes: Vec<Vec<Value>> =
        (1..=2500).filter(|i| i % 5 != 0).map(|i| vec![Value::Int(i % 7), t(&format!("k{i}"))]).collect();
    let n = writer.apply(&schema, &[], &deletes, None).await.unwrap();
    assert_eq!(n, 2000);
    assert_eq!(db.sql("SELECT count(*), sum(n % 5) FROM pairs"), "500\t0");
}

/// A value the target refuses anywhere in the batch leaves nothing of the batch
/// written: no upsert and no delete.
#[tokio::test]
async fn apply_is_one_transaction() {
    for (load_min_rows, guard) in [(0, None), (usize::MAX, None), (usize::MAX, Some("ver"))] {
        let db = mysql_db();
        let c = orders(&db).await.with_load_data_min_rows(load_min_rows);
        let before = contents(&db);
        let mut writer = c.writer().await.unwrap();
        let rows = vec![order(1, Some(20), "changed"), order(6, Some(1), "new"), order(7, Some(1), "far too long")];
        let deletes = vec![vec![Value::Int(2)]];
        let e = writer.apply(&orders_schema(), &rows, &deletes, guard).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().table.as_deref(), Some("orders"), "{e}");
        assert_eq!(contents(&db), before, "load_min_rows {load_min_rows} guard {guard:?}");
        // the writer goes on working afterwards
        writer.apply(&orders_schema(), &[order(1, Some(20), "changed")], &deletes, guard).await.unwrap();
        assert_eq!(db.sql("SELECT count(*) FROM orders WHERE id = 2 OR name = 'changed'"), "1");
    }
}
