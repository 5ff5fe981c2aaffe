//! `Reader::checksum` against a real MariaDB: equal rows give equal checksums
//! whatever the table, column names and insertion order; every single change of a
//! value, a missing and an extra row change it; it covers exactly the rows `scan`
//! returns.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use pontoon_core::{
    Checksum, ColumnType, Connector, Digest, KeyRange, PartitionFilter, Reader, ScanSpec, SecretUrl, SelectExpr,
    SelectItem, Value,
};
use pontoon_mysql::MysqlConnector;
use pontoon_testsupport::{TestDb, mysql_db};

async fn reader(db: &TestDb) -> Box<dyn Reader> {
    MysqlConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL").reader().await.expect("reader connects")
}

/// Every column of `table` in order, keyed by its primary key (types from `describe`).
async fn spec(r: &mut Box<dyn Reader>, table: &str) -> ScanSpec {
    let schema = r.describe(table).await.unwrap().unwrap_or_else(|| panic!("{table} exists"));
    ScanSpec::every_column(&schema, &schema.primary_key)
}

async fn checksum(r: &mut Box<dyn Reader>, scan: &ScanSpec, range: &KeyRange) -> Checksum {
    r.checksum(scan, range, Digest::Native).await.unwrap().expect("MariaDB computes checksums of columns")
}

const ALL_TYPES: &str = "id int PRIMARY KEY, i1 tinyint, i2 smallint, i3 mediumint, i4 int, i8 bigint, \
     u8 bigint unsigned, b tinyint(1), n decimal(12,2), f4 float, f8 double, t text, vc varchar(20), ch char(5), \
     e enum('x','y'), j json, vb varbinary(16), bl blob, d date, tm time(6), dt datetime(6), ts timestamp(6) NULL, \
     u uuid, y year";

/// The same columns under other names.
const ALL_TYPES_RENAMED: &str = "k int PRIMARY KEY, c1 tinyint, c2 smallint, c3 mediumint, c4 int, c5 bigint, \
     c6 bigint unsigned, c7 tinyint(1), c8 decimal(12,2), c9 float, c10 double, c11 text, c12 varchar(20), \
     c13 char(5), c14 enum('x','y'), c15 json, c16 varbinary(16), c17 blob, c18 date, c19 time(6), \
     c20 datetime(6), c21 timestamp(6) NULL, c22 uuid, c23 year";

/// One row per line: every type at ordinary values, extremes, NULL, '' and 'NULL',
/// 4-byte UTF-8, a value with the separator.
const ROWS: [&str; 6] = [
    "(1, 1, 1, 1, 1, 1, 1, true, 1.50, 1, 1, '', 'a,b', 'x', 'y', '{\"a\": 1}', x'00ff', x'00', '2024-02-29', \
      '12:34:56.789012', '2024-01-01 00:00:00.000001', '2024-01-01 00:00:00.000001', \
      'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 2024)",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
      NULL, NULL, NULL, NULL, NULL, NULL)",
    "(3, -128, -32768, -8388608, -2147483648, -9223372036854775808, 0, false, -0.01, -2.5e-38, \
      -2.2250738585072014e-308, 'NULL', '😀é', 'abc', 'x', '[]', x'', x'', '1000-01-01', '-838:59:59.999999', \
      '1000-01-01 00:00:00', '1970-01-02 00:00:01', '00000000-0000-0000-0000-000000000000', 1901)",
    "(4, 127, 32767, 8388607, 2147483647, 9223372036854775807, 18446744073709551615, true, 9999999999.99, \
      3.40282e38, 1.7976931348623157e308, 'N', '', '', NULL, '{\"b\":[1,2]}', x'deadbeef', x'ff', '9999-12-31', \
      '838:59:59.999999', '9999-12-31 23:59:59.999999', '2038-01-18 03:14:07.999999', \
      'ffffffff-ffff-ffff-ffff-ffffffffffff', 2155)",
    "(5, 0, 0, 0, 0, 4294967296, 4294967296, false, 0.00, 1.0000001, 1.0000000000000002, 'tab\tnew\nline\\\\', \
      'it''s', 'é', 'y', '\"s\"', x'0a', x'0a', '1970-01-01', '00:00:00.000001', '1970-01-01 00:00:00', \
      '2000-01-01 00:00:00', '01234567-89ab-4def-8123-456789abcdef', 2000)",
    "(6, 0, 0, 0, 0, 0, 0, false, 0, 0, 0, '0', '0', '0', 'x', '0', x'30', x'30', '2000-01-01', '00:00', \
      '2000-01-01 00:00', '2000-01-01 00:00', '00000000-0000-0000-0000-000000000001', 0)",
];

fn insert(table: &str, rows: &[&str]) -> String {
    format!("INSERT INTO {table} VALUES {};", rows.join(", "))
}

#[tokio::test]
async fn equal_rows_give_equal_checksums_whatever_the_table_names_and_order() {
    let db = mysql_db();
    let reversed: Vec<&str> = ROWS.iter().rev().copied().collect();
    db.sql(&format!(
        "CREATE TABLE src ({ALL_TYPES}); CREATE TABLE dst ({ALL_TYPES_RENAMED}); {} {}",
        insert("src", &ROWS),
        insert("dst", &reversed)
    ));
    let mut r = reader(&db).await;
    let src = spec(&mut r, "src").await;
    let dst = spec(&mut r, "dst").await;
    let all = checksum(&mut r, &src, &KeyRange::ALL).await;
    assert_eq!(all.rows, ROWS.len() as u64);
    assert_eq!(checksum(&mut r, &dst, &KeyRange::ALL).await, all);
    let int = |i| Some(vec![Value::Int(i)]);
    let ranges = [
        KeyRange { after: int(2), upto: None },
        KeyRange { after: None, upto: int(3) },
        KeyRange { after: int(1), upto: int(5) },
        KeyRange { after: int(6), upto: None },
    ];
    let mut sums = Vec::new();
    for range in &ranges {
        let a = checksum(&mut r, &src, range).await;
        assert_eq!(checksum(&mut r, &dst, range).await, a, "{range:?}");
        sums.push(a);
    }
    assert_eq!(sums[0].rows, 4);
    assert_eq!(sums[3], Checksum { rows: 0, hash: 0 });
    // disjoint ranges add up: the hash is a sum of row hashes
    let head = checksum(&mut r, &src, &KeyRange { after: None, upto: int(2) }).await;
    assert_eq!(head.rows + sums[0].rows, all.rows);
    assert_eq!(head.hash.wrapping_add(sums[0].hash), all.hash);
    // a second reader, a second database: the same
    let other = mysql_db();
    other.sql(&format!("CREATE TABLE copy ({ALL_TYPES}); {}", insert("copy", &reversed)));
    let mut r2 = reader(&other).await;
    let copy = spec(&mut r2, "copy").await;
    assert_eq!(checksum(&mut r2, &copy, &KeyRange::ALL).await, all);
}

#[tokio::test]
async fn composite_keys_and_sub_ranges() {
    let db = mysql_db();
    let rows = ["(1, 'a', 0.5)", "(1, 'b', NULL)", "(2, 'a', -1)", "(3, '', 2)", "(3, 'a', 3)", "(3, 'ab', 4)"];
    let reversed: Vec<&str> = rows.iter().rev().copied().collect();
    db.sql(&format!(
        "CREATE TABLE ck (a int, b varchar(10), v double, PRIMARY KEY (a, b));
         CREATE TABLE ck2 (x int, y varchar(10), z double, PRIMARY KEY (x, y)); {} {}",
        insert("ck", &rows),
        insert("ck2", &reversed)
    ));
    let mut r = reader(&db).await;
    let a = spec(&mut r, "ck").await;
    let b = spec(&mut r, "ck2").await;
    let key = |i, s: &str| Some(vec![Value::Int(i), Value::Text(s.into())]);
    for (range, rows) in [
        (KeyRange::ALL, 6),
        (KeyRange { after: key(1, "a"), upto: None }, 5),
        (KeyRange { after: None, upto: key(3, "") }, 4),
        (KeyRange { after: key(1, "b"), upto: key(3, "a") }, 3),
    ] {
        let sa = checksum(&mut r, &a, &range).await;
        assert_eq!(sa.rows, rows, "{range:?}");
        assert_eq!(checksum(&mut r, &b, &range).await, sa, "{range:?}");
        assert_eq!(r.scan(&a, &range).await.unwrap().len() as u64, rows, "{range:?}");
    }
}

/// Each change, made to a copy of the table, and why it must be seen.
const CHANGES: [(&str, &str); 35] = [
    ("'' -> NULL", "UPDATE c SET t = NULL WHERE id = 1"),
    ("NULL -> ''", "UPDATE c SET t = '' WHERE id = 2"),
    ("'NULL' -> NULL", "UPDATE c SET t = NULL WHERE id = 3"),
    ("'N' -> NULL", "UPDATE c SET t = NULL WHERE id = 4"),
    ("NULL -> 0 (int)", "UPDATE c SET i4 = 0 WHERE id = 2"),
    ("0 -> NULL (int)", "UPDATE c SET i4 = NULL WHERE id = 6"),
    ("tinyint", "UPDATE c SET i1 = 2 WHERE id = 1"),
    ("smallint", "UPDATE c SET i2 = 2 WHERE id = 1"),
    ("mediumint", "UPDATE c SET i3 = 2 WHERE id = 1"),
    ("int", "UPDATE c SET i4 = -1 WHERE id = 1"),
    ("bigint 2^32 -> 1", "UPDATE c SET i8 = 1 WHERE id = 5"),
    ("bigint unsigned 2^64-1 -> 2^64-2", "UPDATE c SET u8 = 18446744073709551614 WHERE id = 4"),
    ("bool", "UPDATE c SET b = NOT b WHERE id = 1"),
    ("decimal last digit", "UPDATE c SET n = 1.51 WHERE id = 1"),
    ("float last bit", "UPDATE c SET f4 = 1.0000001 WHERE id = 1"),
    ("double last bit", "UPDATE c SET f8 = 1.0000000000000002 WHERE id = 1"),
    ("double last bit down", "UPDATE c SET f8 = 1 WHERE id = 5"),
    ("double smallest normal -> its neighbour", "UPDATE c SET f8 = -2.225073858507201e-308 WHERE id = 3"),
    ("unicode NFC -> NFD", "UPDATE c SET vc = CONCAT('😀e', _utf8mb4 x'cc81') WHERE id = 3"),
    ("char(5)", "UPDATE c SET ch = 'y' WHERE id = 1"),
    ("enum", "UPDATE c SET e = 'x' WHERE id = 1"),
    ("json whitespace (kept as text)", "UPDATE c SET j = '{\"a\":1}' WHERE id = 1"),
    ("varbinary one byte", "UPDATE c SET vb = x'01ff' WHERE id = 1"),
    ("blob '' -> NULL", "UPDATE c SET bl = NULL WHERE id = 3"),
    ("date", "UPDATE c SET d = '2024-03-01' WHERE id = 1"),
    ("time one microsecond", "UPDATE c SET tm = '12:34:56.789013' WHERE id = 1"),
    ("datetime one microsecond", "UPDATE c SET dt = '2024-01-01 00:00:00.000002' WHERE id = 1"),
    ("timestamp one microsecond", "UPDATE c SET ts = ts + INTERVAL 1 MICROSECOND WHERE id = 1"),
    ("uuid last nibble", "UPDATE c SET u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12' WHERE id = 1"),
    ("year", "UPDATE c SET y = 2025 WHERE id = 1"),
    ("missing row", "DELETE FROM c WHERE id = 4"),
    ("extra row", "INSERT INTO c (id) VALUES (100)"),
    ("key changed", "UPDATE c SET id = 7 WHERE id = 6"),
    (
        "two rows swap their text (each column keeps its values)",
        "UPDATE c SET t = IF(id = 1, 'N', '') WHERE id IN (1, 4)",
    ),
    ("the same change in two rows", "UPDATE c SET b = NOT b WHERE id IN (1, 4)"),
];

#[tokio::test]
async fn every_single_change_changes_the_checksum() {
    let db = mysql_db();
    let mut setup = format!("CREATE TABLE src ({ALL_TYPES}); {}", insert("src", &ROWS));
    for (i, (_, change)) in CHANGES.iter().enumerate() {
        setup.push_str(&format!(
            "\nCREATE TABLE c{i} LIKE src; INSERT INTO c{i} SELECT * FROM src ORDER BY id DESC; {};",
            change.replace(" c ", &format!(" c{i} "))
        ));
    }
    db.sql(&setup);
    let mut r = reader(&db).await;
    let src = spec(&mut r, "src").await;
    let original = checksum(&mut r, &src, &KeyRange::ALL).await;
    let mut seen = Vec::new();
    for (i, (why, _)) in CHANGES.iter().enumerate() {
        let copy = ScanSpec { table: format!("c{i}"), ..src.clone() };
        let changed = checksum(&mut r, &copy, &KeyRange::ALL).await;
        assert_ne!(changed, original, "not seen: {why}");
        seen.push(changed.hash);
    }
    // and no two changes look alike
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), CHANGES.len());
}

#[tokio::test]
async fn values_never_shift_between_columns() {
    let db = mysql_db();
    // each case: two columns of a type, and two rows that spread the same values
    // over them differently
    let cases = [
        ("text", "'a,b', 'c'", "'a', 'b,c'"),
        ("text", "'a', ''", "'', 'a'"),
        ("text", "'a', NULL", "NULL, 'a'"),
        ("text", "'', NULL", "NULL, ''"),
        ("text", "'N', NULL", "NULL, 'N'"),
        ("varchar(10)", "'a,', 'b'", "'a', ',b'"),
        ("double", "NULL, 0", "0, NULL"),
        ("float", "1, 2", "2, 1"),
        ("int", "NULL, 0", "0, NULL"),
        ("decimal(5,2)", "1.00, 10.00", "11.00, 0.00"),
        ("varbinary(4)", "x'01', x''", "x'', x'01'"),
        ("datetime(6)", "NULL, '2000-01-01'", "'2000-01-01', NULL"),
        ("uuid", "NULL, '00000000-0000-0000-0000-000000000000'", "'00000000-0000-0000-0000-000000000000', NULL"),
    ];
    let mut sql = String::new();
    for (i, (ty, x, y)) in cases.iter().enumerate() {
        sql.push_str(&format!(
            "CREATE TABLE x{i} (id int PRIMARY KEY, a {ty}, b {ty}); INSERT INTO x{i} VALUES (1, {x});
             CREATE TABLE y{i} (id int PRIMARY KEY, a {ty}, b {ty}); INSERT INTO y{i} VALUES (1, {y});"
        ));
    }
    db.sql(&sql);
    let mut r = reader(&db).await;
    for (i, case) in cases.iter().enumerate() {
        let x = spec(&mut r, &format!("x{i}")).await;
        let y = spec(&mut r, &format!("y{i}")).await;
        assert_ne!(checksum(&mut r, &x, &KeyRange::ALL).await, checksum(&mut r, &y, &KeyRange::ALL).await, "{case:?}");
    }
}

#[tokio::test]
async fn filter_partition_and_range_restrict_rows_as_scan_does() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE fp (id int PRIMARY KEY, p int, v varchar(10));
         INSERT INTO fp SELECT seq, IF(seq % 5 = 0, NULL, seq % 3), CONCAT('v', seq) FROM seq_1_to_200;",
    );
    let mut r = reader(&db).await;
    let base = spec(&mut r, "fp").await;
    let range = KeyRange { after: Some(vec![Value::Int(20)]), upto: Some(vec![Value::Int(150)]) };
    let cases = [
        (None, None, "id > 20 AND id <= 150"),
        (Some("id % 2 = 0"), None, "id > 20 AND id <= 150 AND id % 2 = 0"),
        (Some("id % 2 = 0"), Some(Value::Int(1)), "id > 20 AND id <= 150 AND id % 2 = 0 AND p = 1"),
        (None, Some(Value::Null), "id > 20 AND id <= 150 AND p IS NULL"),
    ];
    for (i, (filter, partition, same_rows)) in cases.into_iter().enumerate() {
        let scan = ScanSpec {
            filter: filter.map(str::to_string),
            partition: partition.map(|value| PartitionFilter { column: "p".into(), value }),
            ..base.clone()
        };
        let sum = checksum(&mut r, &scan, &range).await;
        let scanned = r.scan(&scan, &range).await.unwrap();
        assert_eq!(sum.rows, scanned.len() as u64, "{same_rows}");
        assert!(sum.rows > 0, "{same_rows}");
        // exactly those rows, alone in a table, have the same checksum
        db.sql(&format!(
            "CREATE TABLE only{i} (id int PRIMARY KEY, p int, v varchar(10)) SELECT * FROM fp WHERE {same_rows}"
        ));
        let only = spec(&mut r, &format!("only{i}")).await;
        assert_eq!(checksum(&mut r, &only, &KeyRange::ALL).await, sum, "{same_rows}");
    }
}

#[tokio::test]
async fn sql_expressions_have_no_checksum() {
    let db = mysql_db();
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 2);");
    let mut r = reader(&db).await;
    let mut scan = spec(&mut r, "t").await;
    scan.select.push(SelectItem { expr: SelectExpr::Sql("v + 1".into()), ty: ColumnType::I32 });
    assert_eq!(r.checksum(&scan, &KeyRange::ALL, Digest::Native).await.unwrap(), None);
}

/// A warning could mean a value turned into NULL and left the hash: no checksum then.
#[tokio::test]
async fn a_query_with_warnings_gives_no_checksum() {
    let db = mysql_db();
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v varchar(10)); INSERT INTO t VALUES (1, 'x1'), (2, '2');");
    let mut r = reader(&db).await;
    let mut scan = spec(&mut r, "t").await;
    assert_eq!(checksum(&mut r, &scan, &KeyRange::ALL).await.rows, 2);
    // 'x1' + 0: "Truncated incorrect DOUBLE value"
    scan.filter = Some("v + 0 >= 0".into());
    let e = r.checksum(&scan, &KeyRange::ALL, Digest::Native).await.unwrap_err();
    assert!(e.to_string().contains("warning"), "{e}");
}

/// The checksum of 1M rows against pt-table-checksum's query over the same table
/// (`COUNT(*)`, `BIT_XOR(CRC32(CONCAT_WS('#', columns, ISNULL flags)))`): figures for
/// the lead; speed is measured, not asserted.
/// `cargo nextest run -p pontoon-mysql --test checksum --run-ignored only --no-capture`
#[tokio::test]
#[ignore = "benchmark: one million rows"]
async fn bench_one_million_rows_against_pt_table_checksum_query() {
    let db = mysql_db();
    db.sql(
        "SET time_zone = '+00:00';
         CREATE TABLE narrow (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
         INSERT INTO narrow SELECT seq, (seq - 1) DIV 100000 + 1, CAST((seq * 7919) % 100000 AS SIGNED) - 50000,
           LPAD(seq, 84, '-') FROM seq_1_to_1000000;
         CREATE TABLE wide (id bigint PRIMARY KEY, amount decimal(12,2), created_at timestamp(6) NULL, note text,
           doc json, ref uuid, `blob` varbinary(32), ratio double);
         INSERT INTO wide SELECT seq, ((seq * 7919) % 100000000) / 100,
             TIMESTAMP '2020-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL ((seq * 7919) % 1000000) MICROSECOND,
             RPAD(CONCAT('note ', seq, ': '), 100, 'lorem ipsum dolor sit amet, consectetur adipiscing elit '),
             JSON_OBJECT('id', seq, 'tag', CONCAT('tag-', seq % 100), 'qty', seq % 17, 'ok', seq % 2 = 0),
             CONCAT(SUBSTR(MD5(seq), 1, 12), '4', SUBSTR(MD5(seq), 14, 3), '8', SUBSTR(MD5(seq), 18)),
             UNHEX(CONCAT(MD5(seq), MD5(seq + 1))), seq / 7e0
           FROM seq_1_to_1000000;",
    );
    let mut r = reader(&db).await;
    let mut conn = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    for table in ["narrow", "wide"] {
        let scan = spec(&mut r, table).await;
        let columns: Vec<String> = scan.select.iter().map(|i| format!("`{}`", item_name(i))).collect();
        let nullable: Vec<String> = columns[1..].iter().map(|c| format!("ISNULL({c})")).collect();
        let pt_sql = format!(
            "SELECT COUNT(*) AS cnt, COALESCE(LOWER(CONV(BIT_XOR(CAST(CRC32(CONCAT_WS('#', {}, CONCAT({}))) \
             AS UNSIGNED)), 10, 16)), 0) AS crc FROM `{table}` FORCE INDEX(`PRIMARY`)",
            columns.join(", "),
            nullable.join(", ")
        );
        let (mut ours, mut pt) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let start = Instant::now();
            let sum = checksum(&mut r, &scan, &KeyRange::ALL).await;
            ours.push(start.elapsed());
            assert_eq!(sum.rows, 1_000_000);
            let start = Instant::now();
            let _: Option<(u64, String)> = conn.query_first(&pt_sql).await.unwrap();
            pt.push(start.elapsed());
        }
        let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
        eprintln!(
            "{table}, 1M rows: checksum {:.3} s (best of 5; {:.0} rows/s), pt-table-checksum's query {:.3} s; \
             checksum / pt = {:.2}",
            best(&ours).as_secs_f64(),
            1e6 / best(&ours).as_secs_f64(),
            best(&pt).as_secs_f64(),
            best(&ours).as_secs_f64() / best(&pt).as_secs_f64()
        );
    }
}

fn item_name(item: &SelectItem) -> &str {
    match &item.expr {
        SelectExpr::Column(c) | SelectExpr::Sql(c) => c,
    }
}

/// `key_span`: the smallest and largest signed integer key within the filter; no span
/// for other keys or an empty table.
#[tokio::test]
async fn the_key_span_of_an_integer_key() {
    let db = mysql_db();
    db.sql(
        "CREATE TABLE ks (id bigint PRIMARY KEY, v int);
         INSERT INTO ks SELECT CAST(seq AS SIGNED) - 50, seq FROM seq_1_to_200;
         CREATE TABLE kt (id varchar(10) PRIMARY KEY); INSERT INTO kt VALUES ('a');
         CREATE TABLE ke (id int PRIMARY KEY);",
    );
    let mut r = reader(&db).await;
    let scan = spec(&mut r, "ks").await;
    assert_eq!(r.key_span(&scan).await.unwrap(), Some((-49, 150)));
    let filtered = ScanSpec { filter: Some("v % 2 = 0 AND id < 100".into()), ..scan };
    assert_eq!(r.key_span(&filtered).await.unwrap(), Some((-48, 98)));
    let text_key = spec(&mut r, "kt").await;
    assert_eq!(r.key_span(&text_key).await.unwrap(), None);
    let empty = spec(&mut r, "ke").await;
    assert_eq!(r.key_span(&empty).await.unwrap(), None);
}
