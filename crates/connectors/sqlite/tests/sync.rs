//! The sync's read and write paths on SQLite: `Reader::fetch_keys` (re-reading
//! changed rows by key) and `Writer::apply` (one transaction of upserts and deletes,
//! with the version guard).

mod common;

use pontoon_core::value::{parse_date, parse_timestamp, parse_uuid};
use pontoon_core::{
    ColumnType, Connector, Decimal, ErrorKind, KeyRange, PartitionFilter, SelectExpr, SelectItem, TableSchema, Value,
};
use pontoon_sqlite::SqliteConnector;

use common::{TempDir, col, scan_of, schema};

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// Sorts rows by their debug form, to compare row sets regardless of order.
fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// `pairs (a BIGINT, b VARCHAR(40), tenant TEXT, PRIMARY KEY (a, b))` with text keys
/// that differ only in case, trailing space, NUL, quotes or 4-byte UTF-8.
async fn pairs(dir: &TempDir) -> (SqliteConnector, TableSchema, Vec<Vec<Value>>) {
    let c = dir.connector();
    let s = schema(
        &c,
        "pairs",
        vec![
            col("a", ColumnType::I64, false),
            col("b", ColumnType::Text { max_chars: Some(40) }, false),
            col("tenant", ColumnType::TEXT, true),
        ],
        &["a", "b"],
    );
    let mut rows = Vec::new();
    for a in [-5, 0, 7] {
        for b in ["", "A", "a", "a ", "a\0b", "a'b", "é", "😀", "x'); DROP TABLE pairs; --"] {
            let tenant = if a < 0 { "neg" } else { "pos" };
            rows.push(vec![Value::Int(a), text(b), text(tenant)]);
        }
    }
    let mut w = c.writer().await.unwrap();
    w.create_table(&s).await.unwrap();
    w.upsert(&s, &rows).await.unwrap();
    (c, s, rows)
}

#[tokio::test]
async fn fetch_keys_finds_exactly_the_asked_composite_text_keys() {
    let dir = TempDir::new("fetch-pairs");
    let (c, s, rows) = pairs(&dir).await;
    let mut r = c.reader().await.unwrap();
    let scan = scan_of(&s);

    // Every other row, plus keys that do not exist (a case variant of an existing
    // text with another integer, and a text with a trailing space that is not there).
    let wanted: Vec<Vec<Value>> = rows.iter().step_by(2).cloned().collect();
    let mut keys: Vec<Vec<Value>> = wanted.iter().map(|row| row[..2].to_vec()).collect();
    keys.push(vec![Value::Int(1), text("A")]);
    keys.push(vec![Value::Int(-5), text("😀 ")]);
    let got = r.fetch_keys(&scan, &keys).await.unwrap();
    assert_eq!(sorted(got), sorted(wanted.clone()));

    // The table survived the key that looks like an injection.
    assert_eq!(r.estimate_rows("pairs").await.unwrap(), rows.len() as u64);

    // The filter and the partition are applied too.
    let all_keys: Vec<Vec<Value>> = rows.iter().map(|row| row[..2].to_vec()).collect();
    let filtered = pontoon_core::ScanSpec { filter: Some("b <> 'a'".into()), ..scan.clone() };
    let got = r.fetch_keys(&filtered, &all_keys).await.unwrap();
    let expected: Vec<Vec<Value>> = rows.iter().filter(|row| row[1] != text("a")).cloned().collect();
    assert_eq!(sorted(got), sorted(expected));
    let partition = pontoon_core::ScanSpec {
        partition: Some(PartitionFilter { column: "tenant".into(), value: text("neg") }),
        ..filtered
    };
    let got = r.fetch_keys(&partition, &all_keys).await.unwrap();
    let expected: Vec<Vec<Value>> =
        rows.iter().filter(|row| row[1] != text("a") && row[2] == text("neg")).cloned().collect();
    assert_eq!(sorted(got), sorted(expected));

    assert!(r.fetch_keys(&scan, &[]).await.unwrap().is_empty());
    let e = r.fetch_keys(&scan, &[vec![Value::Int(1)]]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert_eq!(e.location().table.as_deref(), Some("pairs"));
}

#[tokio::test]
async fn fetch_keys_splits_many_keys_and_returns_each_row_once() {
    let dir = TempDir::new("fetch-many");
    let c = dir.connector();
    let s = schema(&c, "many", vec![col("id", ColumnType::I64, false), col("v", ColumnType::TEXT, true)], &["id"]);
    let mut w = c.writer().await.unwrap();
    w.create_table(&s).await.unwrap();
    let rows: Vec<Vec<Value>> = (0..3000).map(|i| vec![Value::Int(i), text(&format!("v{i}"))]).collect();
    w.upsert(&s, &rows).await.unwrap();

    // 2,501 keys (three statements, the last one padded) with duplicates and a
    // missing key; a computed column in the select list.
    let mut keys: Vec<Vec<Value>> = (0..2500).map(|i| vec![Value::Int(i * 7 % 3000)]).collect();
    keys.push(vec![Value::Int(99_999)]);
    keys.extend(keys[..10].to_vec());
    let mut scan = scan_of(&s);
    scan.select.push(SelectItem { expr: SelectExpr::Sql("id * 2".into()), ty: ColumnType::I64 });
    let mut r = c.reader().await.unwrap();
    let got = r.fetch_keys(&scan, &keys).await.unwrap();
    let mut ids: Vec<i64> = got
        .iter()
        .map(|row| match (&row[0], &row[2]) {
            (Value::Int(id), Value::Int(twice)) => {
                assert_eq!(*twice, id * 2);
                *id
            }
            other => panic!("unexpected row {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<i64> = (0..2500).map(|i| i * 7 % 3000).collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(ids, expected);
}

/// Keys of every type a key column may have are found by the values `scan` decoded.
#[tokio::test]
async fn fetch_keys_finds_keys_of_every_type_as_scan_decodes_them() {
    let dir = TempDir::new("fetch-types");
    let c = dir.connector();
    let dec = |s| Value::Decimal(Decimal::parse(s).unwrap());
    let uuid = |s| Value::Uuid(parse_uuid(s).unwrap());
    let cases: Vec<(ColumnType, Vec<Value>)> = vec![
        (
            ColumnType::Bytes { max_bytes: None },
            vec![Value::Bytes(vec![]), Value::Bytes(vec![0, 255, 1]), Value::Bytes(b"A".to_vec())],
        ),
        (
            ColumnType::Uuid,
            vec![uuid("00000000-0000-0000-0000-000000000000"), uuid("f81d4fae-7dec-11d0-a765-00a0c91e6bf6")],
        ),
        (
            ColumnType::Date,
            vec![Value::Date(parse_date("0001-01-01").unwrap()), Value::Date(parse_date("2024-02-29").unwrap())],
        ),
        (
            ColumnType::Timestamp,
            vec![Value::Timestamp(parse_timestamp("2024-01-01 00:00:00.000001").unwrap().0), Value::Timestamp(0)],
        ),
        (
            ColumnType::Decimal { precision: Some(30), scale: Some(4) },
            vec![dec("-1.5000"), dec("12345678901234567890.1234")],
        ),
        (ColumnType::Float64, vec![Value::F64(0.1), Value::F64(-1e300), Value::F64(f64::INFINITY)]),
        (ColumnType::Bool, vec![Value::Bool(false), Value::Bool(true)]),
    ];
    let mut w = c.writer().await.unwrap();
    let mut r = c.reader().await.unwrap();
    for (i, (ty, keys)) in cases.into_iter().enumerate() {
        let name = format!("k{i}");
        let s = schema(&c, &name, vec![col("k", ty.clone(), false), col("n", ColumnType::I64, true)], &["k"]);
        w.create_table(&s).await.unwrap();
        let rows: Vec<Vec<Value>> =
            keys.iter().enumerate().map(|(n, k)| vec![k.clone(), Value::Int(n as i64)]).collect();
        w.upsert(&s, &rows).await.unwrap();
        let scan = scan_of(&s);
        let scanned = r.scan(&scan, &KeyRange::ALL).await.unwrap();
        let scanned_keys: Vec<Vec<Value>> = scanned.iter().map(|row| vec![row[0].clone()]).collect();
        let got = r.fetch_keys(&scan, &scanned_keys).await.unwrap();
        assert_eq!(sorted(got), sorted(rows), "{ty}");
    }
}

/// `orders (id BIGINT, amount DECIMAL_TEXT(12,2) NOT NULL, v <version type>)`.
async fn versioned(c: &SqliteConnector, name: &str, version: ColumnType) -> TableSchema {
    let s = schema(
        c,
        name,
        vec![
            col("id", ColumnType::I64, false),
            col("amount", ColumnType::Decimal { precision: Some(12), scale: Some(2) }, false),
            col("v", version, true),
        ],
        &["id"],
    );
    c.writer().await.unwrap().create_table(&s).await.unwrap();
    s
}

fn amount(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).unwrap())
}

async fn all_rows(c: &SqliteConnector, s: &TableSchema) -> Vec<Vec<Value>> {
    c.reader().await.unwrap().scan(&scan_of(s), &KeyRange::ALL).await.unwrap()
}

#[tokio::test]
async fn apply_upserts_and_deletes_in_one_call() {
    let dir = TempDir::new("apply");
    let c = dir.connector();
    let (_, s, rows) = pairs(&dir).await;
    let mut w = c.writer().await.unwrap();
    let changed = vec![Value::Int(0), text("a "), text("changed")];
    let new = vec![Value::Int(8), text("😀"), text("new")];
    let deletes =
        vec![vec![Value::Int(-5), text("a\0b")], vec![Value::Int(0), text("A")], vec![Value::Int(3), text("gone")]];
    let n = w.apply(&s, &[changed.clone(), new.clone()], &deletes, None).await.unwrap();
    assert_eq!(n, 4, "two rows written, two deleted (the third key is not there)");
    let mut expected: Vec<Vec<Value>> = rows
        .into_iter()
        .filter(|row| !deletes.iter().any(|k| k[..] == row[..2]))
        .map(|row| if row[..2] == changed[..2] { changed.clone() } else { row })
        .collect();
    expected.push(new);
    assert_eq!(sorted(all_rows(&c, &s).await), sorted(expected));
    assert_eq!(w.apply(&s, &[], &[], None).await.unwrap(), 0);
}

#[tokio::test]
async fn version_guard_keeps_newer_rows() {
    let dir = TempDir::new("guard");
    let c = dir.connector();
    let mut w = c.writer().await.unwrap();
    let ts = |s: &str| Value::Timestamp(parse_timestamp(s).unwrap().0);
    let dec = |s: &str| Value::Decimal(Decimal::parse(s).unwrap());
    // Integers, timestamps (ISO text) and decimals in a numeric-affinity column (a
    // user's DECIMAL(10,2), stored as numbers: 9.5 < 10 although '9.50' > '10.00').
    let user_decimal = ColumnType::Decimal { precision: Some(10), scale: Some(2) };
    let cases: Vec<(ColumnType, [Value; 3])> = vec![
        (ColumnType::I64, [Value::Int(4), Value::Int(5), Value::Int(6)]),
        (
            ColumnType::Timestamp,
            [ts("2024-05-01 09:59:59.999999"), ts("2024-05-01 10:00:00"), ts("2024-05-01 10:00:00.000001")],
        ),
        (user_decimal.clone(), [dec("9.50"), dec("10.00"), dec("10.01")]),
    ];
    for (i, (ty, [older, same, newer])) in cases.into_iter().enumerate() {
        let name = format!("guarded{i}");
        let mut s = versioned(&c, &name, ty.clone()).await;
        if ty == user_decimal {
            dir.raw().execute_batch(&format!("DROP TABLE {name}; CREATE TABLE {name} (id BIGINT PRIMARY KEY, amount DECIMAL_TEXT(12,2) NOT NULL, v DECIMAL(10,2))")).unwrap();
            s = c.reader().await.unwrap().describe(&name).await.unwrap().unwrap();
        }
        let row = |id: i64, a: &str, v: &Value| vec![Value::Int(id), amount(a), v.clone()];
        // Target: id 1 at version `same`, id 2 with a NULL version.
        w.upsert(&s, &[row(1, "1.00", &same), row(2, "2.00", &Value::Null)]).await.unwrap();

        w.apply(&s, &[row(1, "-1.00", &older), row(2, "2.50", &older), row(3, "3.00", &older)], &[], Some("v"))
            .await
            .unwrap();
        assert_eq!(
            all_rows(&c, &s).await,
            [row(1, "1.00", &same), row(2, "2.50", &older), row(3, "3.00", &older)],
            "{ty}: an older row does not replace a newer one; a NULL target version and a missing row are written"
        );
        w.apply(&s, &[row(1, "1.10", &same)], &[], Some("v")).await.unwrap();
        assert_eq!(all_rows(&c, &s).await[0], row(1, "1.10", &same), "{ty}: an equal version replaces");
        w.apply(&s, &[row(1, "1.20", &newer)], &[], Some("v")).await.unwrap();
        assert_eq!(all_rows(&c, &s).await[0], row(1, "1.20", &newer), "{ty}: a newer version replaces");
        // A row whose own version is NULL does not replace a row that has one.
        w.apply(&s, &[row(1, "0.00", &Value::Null)], &[vec![Value::Int(3)]], Some("v")).await.unwrap();
        assert_eq!(
            all_rows(&c, &s).await,
            [row(1, "1.20", &newer), row(2, "2.50", &older)],
            "{ty}: deletes are not guarded"
        );
    }
}

#[tokio::test]
async fn version_columns_that_do_not_order_are_refused() {
    let dir = TempDir::new("guard-refused");
    let c = dir.connector();
    let mut w = c.writer().await.unwrap();
    for (name, ty, word) in [
        ("by_text_decimal", ColumnType::Decimal { precision: Some(20), scale: Some(0) }, "DECIMAL_TEXT"),
        ("by_time", ColumnType::Time, "TIME"),
        ("by_json", ColumnType::Json, "JSON"),
    ] {
        let s = versioned(&c, name, ty).await;
        let row = vec![Value::Int(1), amount("1.00"), Value::Null];
        let e = w.apply(&s, &[row], &[], Some("v")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert_eq!(e.location().table.as_deref(), Some(name));
        assert_eq!(e.location().column.as_deref(), Some("v"));
        let message = e.to_string();
        assert!(message.contains(name) && message.contains("version column v") && message.contains(word), "{message}");
        assert!(all_rows(&c, &s).await.is_empty());
    }
    let s = versioned(&c, "plain", ColumnType::I64).await;
    let e =
        w.apply(&s, &[vec![Value::Int(1), amount("1.00"), Value::Null]], &[], Some("updated_at")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("updated_at") && e.to_string().contains("plain"), "{e}");
}

#[tokio::test]
async fn a_failing_value_leaves_nothing_of_the_batch() {
    let dir = TempDir::new("apply-atomic");
    let c = dir.connector();
    let s = versioned(&c, "orders", ColumnType::I64).await;
    let mut w = c.writer().await.unwrap();
    let row = |id: i64, a: &str, v: i64| vec![Value::Int(id), amount(a), Value::Int(v)];
    w.upsert(&s, &[row(1, "1.00", 1), row(2, "2.00", 1)]).await.unwrap();

    // Row 3 has a NULL amount (NOT NULL): the upsert of row 1 before it and the delete
    // of row 2 after it are rolled back with it.
    let bad = vec![Value::Int(3), Value::Null, Value::Int(1)];
    for version in [None, Some("v")] {
        let e = w.apply(&s, &[row(1, "9.00", 2), bad.clone()], &[vec![Value::Int(2)]], version).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
        assert_eq!(e.location().table.as_deref(), Some("orders"));
        assert_eq!(e.location().key.as_deref(), Some(&[Value::Int(3)][..]));
        assert_eq!(all_rows(&c, &s).await, [row(1, "1.00", 1), row(2, "2.00", 1)]);
    }
    // A delete key SQLite cannot hold fails the batch too.
    let e = w.apply(&s, &[row(1, "9.00", 2)], &[vec![Value::UInt(u64::MAX)]], None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueRange, "{e}");
    assert_eq!(all_rows(&c, &s).await, [row(1, "1.00", 1), row(2, "2.00", 1)]);
}
