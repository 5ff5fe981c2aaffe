//! `Reader::checksum` against a real PostgreSQL server: equal rows give equal
//! checksums whatever the table, column names and insertion order; every single
//! change of a value, a missing and an extra row change it; it covers exactly the
//! rows `scan` returns.

use std::time::{Duration, Instant};

use pontoon_core::{
    Checksum, Connector, Digest, KeyRange, PartitionFilter, Reader, ScanSpec, SecretUrl, SelectExpr, SelectItem, Value,
};
use pontoon_postgres::PgConnector;
use pontoon_testsupport::{TestDb, pg_db};

async fn reader(db: &TestDb) -> Box<dyn Reader> {
    PgConnector::new(&SecretUrl::new(db.url.clone())).expect("valid URL").reader().await.expect("reader connects")
}

/// Every column of `table` in order, keyed by its primary key (types from `describe`).
async fn spec(r: &mut Box<dyn Reader>, table: &str) -> ScanSpec {
    let schema = r.describe(table).await.unwrap().unwrap_or_else(|| panic!("{table} exists"));
    ScanSpec::every_column(&schema, &schema.primary_key)
}

async fn checksum(r: &mut Box<dyn Reader>, scan: &ScanSpec, range: &KeyRange) -> Checksum {
    r.checksum(scan, range, Digest::Native).await.unwrap().expect("PostgreSQL computes checksums of columns")
}

const ALL_TYPES: &str = "id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, n numeric(12,2), nu numeric, \
     f4 real, f8 double precision, b boolean, t text, vc varchar(20), ch char(5), by bytea, d date, tm time, \
     ts timestamp, tz timestamptz, j json, jb jsonb, u uuid";

/// The same columns under other names.
const ALL_TYPES_RENAMED: &str = "k int PRIMARY KEY, c1 smallint, c2 integer, c3 bigint, c4 numeric(12,2), \
     c5 numeric, c6 real, c7 double precision, c8 boolean, c9 text, c10 varchar(20), c11 char(5), c12 bytea, \
     c13 date, c14 time, c15 timestamp, c16 timestamptz, c17 json, c18 jsonb, c19 uuid";

/// One row per line: every type at ordinary values, extremes, NULL, '' and 'NULL',
/// -0, NaN, infinities, 4-byte UTF-8.
const ROWS: [&str; 7] = [
    "(1, 1, 1, 1, 1.50, 1.50, 1, 1, true, '', 'a,b', 'x', '\\x00ff', '2024-02-29', '12:34:56.789012', \
      '2024-01-01 00:00:00.000001', '2024-01-01 00:00:00.000001+00', '{\"a\": 1}', '{\"a\": 1.0}', \
      'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
      NULL, NULL)",
    "(3, -32768, -2147483648, -9223372036854775808, -0.01, 0, '-0', '-0', false, 'NULL', '😀é', 'abc  ', '\\x', \
      '0044-03-15 BC', '24:00:00', '1999-12-31 23:59:59.999999', 'infinity', '[]', 'null', \
      '00000000-0000-0000-0000-000000000000')",
    "(4, 32767, 2147483647, 9223372036854775807, 9999999999.99, 123456789012345678901234567890.123456789, \
      3.4028235e38, 1.7976931348623157e308, true, 'N', '', '', '\\xdeadbeef', '5874897-12-31', '00:00', \
      '294276-12-31 23:59:59.999999', '4714-11-24 00:00:00+00 BC', '{\"b\":[1,2]}', '{\"b\":[1,2]}', \
      'ffffffff-ffff-ffff-ffff-ffffffffffff')",
    "(5, 0, 0, 4294967296, 0.00, 'NaN', 'NaN', 'NaN', false, 'tab\tnew\nline\\\\', 'it''s', 'é', '\\x0a', \
      '-infinity', '23:59:59.999999', '-infinity', '2038-01-19 03:14:08+00', '\"s\"', '\"s\"', \
      '01234567-89ab-cdef-0123-456789abcdef')",
    "(6, 7, 7, -1, 0.10, 0.1, 1.0000001, 1.0000000000000002, true, 'x', NULL, NULL, NULL, '1970-01-01', \
      '00:00:00.000001', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '{}', '{}', NULL)",
    "(7, 0, 0, 0, 0, 0, 0, 0, false, '0', '0', '0', '\\x00', '2000-01-01', '00:00', '2000-01-01 00:00', \
      '2000-01-01 00:00+00', '0', '0', '00000000-0000-0000-0000-000000000001')",
];

fn insert(table: &str, rows: &[&str]) -> String {
    format!("INSERT INTO {table} VALUES {};", rows.join(", "))
}

#[tokio::test]
async fn equal_rows_give_equal_checksums_whatever_the_table_names_and_order() {
    let db = pg_db();
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
        KeyRange { after: int(7), upto: None },
    ];
    let mut sums = Vec::new();
    for range in &ranges {
        let a = checksum(&mut r, &src, range).await;
        assert_eq!(checksum(&mut r, &dst, range).await, a, "{range:?}");
        sums.push(a);
    }
    assert_eq!(sums[0].rows, 5);
    assert_eq!(sums[3], Checksum { rows: 0, hash: 0 });
    // disjoint ranges add up: the hash is a sum of row hashes
    let head = checksum(&mut r, &src, &KeyRange { after: None, upto: int(2) }).await;
    assert_eq!(head.rows + sums[0].rows, all.rows);
    assert_eq!(head.hash.wrapping_add(sums[0].hash), all.hash);
    // a second reader, a second database: the same
    let other = pg_db();
    other.sql(&format!("CREATE TABLE copy ({ALL_TYPES}); {}", insert("copy", &reversed)));
    let mut r2 = reader(&other).await;
    let copy = spec(&mut r2, "copy").await;
    assert_eq!(checksum(&mut r2, &copy, &KeyRange::ALL).await, all);
}

#[tokio::test]
async fn composite_keys_and_sub_ranges() {
    let db = pg_db();
    let rows = ["(1, 'a', 0.5)", "(1, 'b', NULL)", "(2, 'a', -1)", "(3, '', 2)", "(3, 'a', 3)", "(3, 'ab', 4)"];
    let reversed: Vec<&str> = rows.iter().rev().copied().collect();
    db.sql(&format!(
        "CREATE TABLE ck (a int, b text COLLATE \"C\", v float8, PRIMARY KEY (a, b));
         CREATE TABLE ck2 (x int, y text COLLATE \"C\", z float8, PRIMARY KEY (x, y)); {} {}",
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
const CHANGES: [(&str, &str); 34] = [
    ("'' -> NULL", "UPDATE c SET t = NULL WHERE id = 1"),
    ("NULL -> ''", "UPDATE c SET t = '' WHERE id = 2"),
    ("'NULL' -> NULL", "UPDATE c SET t = NULL WHERE id = 3"),
    ("NULL -> 0 (int)", "UPDATE c SET i4 = 0 WHERE id = 2"),
    ("0 -> NULL (int)", "UPDATE c SET i4 = NULL WHERE id = 7"),
    ("smallint", "UPDATE c SET i2 = 2 WHERE id = 1"),
    ("integer", "UPDATE c SET i4 = -1 WHERE id = 1"),
    ("bigint 1 -> 2^32 (hashint8extended folds these together)", "UPDATE c SET i8 = 4294967296 WHERE id = 1"),
    ("bigint -1 -> 2^63-1", "UPDATE c SET i8 = 9223372036854775807 WHERE id = 6"),
    ("numeric(12,2) last digit", "UPDATE c SET n = 1.51 WHERE id = 1"),
    ("numeric 1.50 -> 1.5 (scale kept by untyped numeric)", "UPDATE c SET nu = 1.5 WHERE id = 1"),
    ("numeric NaN -> 0", "UPDATE c SET nu = 0 WHERE id = 5"),
    ("real last bit", "UPDATE c SET f4 = 1.0000001 WHERE id = 1"),
    ("double last bit", "UPDATE c SET f8 = 1.0000000000000002 WHERE id = 1"),
    ("double -0 -> 0", "UPDATE c SET f8 = 0 WHERE id = 3"),
    ("real -0 -> 0", "UPDATE c SET f4 = 0 WHERE id = 3"),
    ("double NaN -> infinity", "UPDATE c SET f8 = 'Infinity' WHERE id = 5"),
    ("bool", "UPDATE c SET b = NOT b WHERE id = 1"),
    ("unicode NFC -> NFD", "UPDATE c SET vc = '😀e' || U&'\\0301' WHERE id = 3"),
    ("char(5)", "UPDATE c SET ch = 'y' WHERE id = 1"),
    ("bytea one byte", "UPDATE c SET by = '\\x01ff' WHERE id = 1"),
    ("bytea '' -> NULL", "UPDATE c SET by = NULL WHERE id = 3"),
    ("date", "UPDATE c SET d = d + 1 WHERE id = 1"),
    ("time one microsecond", "UPDATE c SET tm = '12:34:56.789013' WHERE id = 1"),
    ("timestamp one microsecond", "UPDATE c SET ts = ts + interval '1 microsecond' WHERE id = 1"),
    ("timestamptz one microsecond", "UPDATE c SET tz = tz + interval '1 microsecond' WHERE id = 1"),
    ("json whitespace (json keeps its text)", "UPDATE c SET j = '{\"a\":1}' WHERE id = 1"),
    ("jsonb 1.0 -> 1.00", "UPDATE c SET jb = '{\"a\": 1.00}' WHERE id = 1"),
    ("uuid last nibble", "UPDATE c SET u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12' WHERE id = 1"),
    ("missing row", "DELETE FROM c WHERE id = 4"),
    ("extra row", "INSERT INTO c (id) VALUES (100)"),
    ("key changed", "UPDATE c SET id = 8 WHERE id = 7"),
    (
        "two rows swap their text (each column keeps its values)",
        "UPDATE c SET t = CASE id WHEN 1 THEN 'N' ELSE '' END WHERE id IN (1, 4)",
    ),
    ("the same change in two rows", "UPDATE c SET b = NOT b WHERE id IN (1, 4)"),
];

#[tokio::test]
async fn every_single_change_changes_the_checksum() {
    let db = pg_db();
    let mut setup = format!("CREATE TABLE src ({ALL_TYPES}); {}", insert("src", &ROWS));
    for (i, (_, change)) in CHANGES.iter().enumerate() {
        setup.push_str(&format!(
            "\nCREATE TABLE c{i} ({ALL_TYPES}); INSERT INTO c{i} SELECT * FROM src ORDER BY id DESC; {};",
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
    // the changes to the columns PostgreSQL hashes as one record (integers up to 32
    // bits, bool, text, bytes, date, uuid), through a scan of those columns only
    let record = ["id", "i2", "i4", "b", "t", "vc", "ch", "by", "d", "u"];
    let in_record = |c: &str| record.contains(&c);
    let narrow = ScanSpec {
        select: src
            .select
            .iter()
            .filter(|i| matches!(&i.expr, SelectExpr::Column(c) if in_record(c)))
            .cloned()
            .collect(),
        ..src.clone()
    };
    assert_eq!(narrow.select.len(), record.len());
    let original = checksum(&mut r, &narrow, &KeyRange::ALL).await;
    let mut checked = 0;
    for (i, (why, change)) in CHANGES.iter().enumerate() {
        let column = change.split(" SET ").nth(1).and_then(|s| s.split_whitespace().next());
        if column.is_some_and(|c| !in_record(c)) {
            continue;
        }
        let copy = ScanSpec { table: format!("c{i}"), ..narrow.clone() };
        assert_ne!(checksum(&mut r, &copy, &KeyRange::ALL).await, original, "not seen as a record: {why}");
        checked += 1;
    }
    assert!(checked >= 15, "{checked} changes to record columns");
}

#[tokio::test]
async fn values_never_shift_between_columns() {
    let db = pg_db();
    // each case: two columns of a type, and two rows that spread the same values
    // over them differently
    let cases = [
        ("text", "'a,b', 'c'", "'a', 'b,c'"),
        ("text", "'a', ''", "'', 'a'"),
        ("text", "'a', NULL", "NULL, 'a'"),
        ("text", "'', NULL", "NULL, ''"),
        ("text", "'(a', 'b)'", "'(a,', 'b)'"),
        ("text", "'\"', ''", "'', '\"'"),
        ("float8", "NULL, 0", "0, NULL"),
        ("float8", "'-0', 0", "0, '-0'"),
        ("real", "NULL, 0", "0, NULL"),
        ("int", "NULL, 0", "0, NULL"),
        ("bigint", "NULL, 0", "0, NULL"),
        ("numeric", "1, 10", "11, 0"),
        ("bytea", "'\\x01', '\\x'", "'\\x', '\\x01'"),
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
    let db = pg_db();
    db.sql(
        "CREATE TABLE fp (id int PRIMARY KEY, p int, v text);
         INSERT INTO fp SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE g % 3 END, 'v' || g FROM generate_series(1, 200) g;",
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
            "CREATE TABLE only{i} AS SELECT * FROM fp WHERE {same_rows}; ALTER TABLE only{i} ADD PRIMARY KEY (id)"
        ));
        let only = spec(&mut r, &format!("only{i}")).await;
        assert_eq!(checksum(&mut r, &only, &KeyRange::ALL).await, sum, "{same_rows}");
    }
}

/// One scan's checksums of the ranges between bounds are each range's own checksum,
/// with a filter, keys equal to a bound in the range it ends, negative keys, empty
/// ranges; keys other than one integer column are left to `checksum`.
#[tokio::test]
async fn ranges_in_one_pass_equal_each_range_alone() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE rp (id bigint PRIMARY KEY, v text, f float8);
         INSERT INTO rp SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'v' || g END, g / 3.0 FROM generate_series(-500, 500) g;
         CREATE TABLE tk (id text PRIMARY KEY); INSERT INTO tk VALUES ('a');",
    );
    let mut r = reader(&db).await;
    let base = spec(&mut r, "rp").await;
    let b = |i: i64| vec![Value::Int(i)];
    let bounds = [b(-501), b(-100), b(0), b(1), b(250), b(260), b(499)];
    for filter in [None, Some("id % 3 <> 0".to_string())] {
        let scan = ScanSpec { filter: filter.clone(), ..base.clone() };
        let pass = r.checksum_ranges(&scan, &bounds, Digest::Native).await.unwrap().expect("one integer key: one pass");
        assert_eq!(pass.len(), bounds.len() + 1);
        let mut after = None;
        for (i, got) in pass.iter().enumerate() {
            let upto = bounds.get(i).cloned();
            let range = KeyRange { after: after.clone(), upto: upto.clone() };
            assert_eq!(*got, checksum(&mut r, &scan, &range).await, "range {i} ({range:?}), filter {filter:?}");
            after = upto;
        }
        assert_eq!(pass[0].rows, 0, "no key at or below -501");
        assert_eq!(pass.iter().map(|c| c.rows).sum::<u64>(), checksum(&mut r, &scan, &KeyRange::ALL).await.rows);
    }
    let text_key = spec(&mut r, "tk").await;
    assert_eq!(r.checksum_ranges(&text_key, &[vec![Value::Text("a".into())]], Digest::Native).await.unwrap(), None);
}

#[tokio::test]
async fn sql_expressions_have_no_checksum() {
    let db = pg_db();
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 2);");
    let mut r = reader(&db).await;
    let mut scan = spec(&mut r, "t").await;
    scan.select.push(SelectItem { expr: SelectExpr::Sql("v + 1".into()), ty: pontoon_core::ColumnType::I32 });
    assert_eq!(r.checksum(&scan, &KeyRange::ALL, Digest::Native).await.unwrap(), None);
}

/// The checksum of 1M rows against the plain floor `count(*), sum(hashtext(t::text))`
/// over the same table (figures for the lead; speed is measured, not asserted).
/// `cargo nextest run -p pontoon-postgres --test checksum --run-ignored only --no-capture`
#[tokio::test]
#[ignore = "benchmark: one million rows"]
async fn bench_one_million_rows_against_the_floor_query() {
    let db = pg_db();
    db.sql(
        "CREATE TABLE narrow (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
         INSERT INTO narrow SELECT g, (g - 1) / 100000 + 1, (g::bigint * 7919) % 100000 - 50000, lpad(g::text, 84, '-')
           FROM generate_series(1, 1000000) g;
         CREATE TABLE wide (id bigint PRIMARY KEY, amount numeric(12,2), created_at timestamptz, note text, doc jsonb,
           ref uuid, blob bytea, ratio float8);
         INSERT INTO wide SELECT g, ((g * 7919) % 100000000) / 100.0,
             timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second' + ((g * 7919) % 1000000) * interval '1 microsecond',
             rpad('note ' || g || ': ', 100, 'lorem ipsum dolor sit amet, consectetur adipiscing elit '),
             jsonb_build_object('id', g, 'tag', 'tag-' || (g % 100), 'qty', g % 17, 'ok', g % 2 = 0),
             md5(g::text)::uuid, decode(md5(g::text) || md5((g + 1)::text), 'hex'), g / 7.0
           FROM generate_series(1::bigint, 1000000) g;
         VACUUM ANALYZE narrow; VACUUM ANALYZE wide;",
    );
    let mut r = reader(&db).await;
    let url = &db.url;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for table in ["narrow", "wide"] {
        let scan = spec(&mut r, table).await;
        let floor_sql = format!("SELECT count(*), sum(hashtext(t::text)) FROM {table} t");
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let start = Instant::now();
            let sum = checksum(&mut r, &scan, &KeyRange::ALL).await;
            ours.push(start.elapsed());
            assert_eq!(sum.rows, 1_000_000);
            let start = Instant::now();
            client.simple_query(&floor_sql).await.unwrap();
            floor.push(start.elapsed());
        }
        let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
        eprintln!(
            "{table}, 1M rows: checksum {:.3} s (best of 5; {:.0} rows/s), floor {:.3} s; checksum / floor = {:.2}",
            best(&ours).as_secs_f64(),
            1e6 / best(&ours).as_secs_f64(),
            best(&floor).as_secs_f64(),
            best(&ours).as_secs_f64() / best(&floor).as_secs_f64()
        );
    }
}
