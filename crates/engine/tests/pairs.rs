//! Every engine pair copies every value type exactly, against real servers; verify
//! finds no false difference in what was copied, finds every injected one, and
//! repairs them.
//!
//! The source table is created and filled through the source connector from a list
//! of expected values (the truth); after `copy`, the target is read back and every
//! value is compared with the truth, one by one. Keys include zero and negatives; a
//! second table has a composite (text, int) key; chunks are small so a table spans
//! many chunks and several workers. Then `verify` must report zero differences;
//! differences are written into the target (a missing row, an extra row, one changed
//! value in every column, NULL instead of an empty string, and a JSON document with
//! its keys reordered, which is not a difference); `verify` must report exactly the
//! real ones, and after `verify --repair` the target must equal the truth again,
//! value by value.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pontoon_engine::connect::connector;
use pontoon_engine::copy::{CopyContext, copy};
use pontoon_engine::core::value::{parse_date, parse_time, parse_timestamp, parse_uuid};
use pontoon_engine::core::{
    Column, ColumnType, Connector, Decimal, Engine, KeyRange, Row, ScanSpec, SecretUrl, TableSchema, Value,
};
use pontoon_engine::job::Job;
use pontoon_engine::plan::plan;
use pontoon_engine::progress::Progress;
use pontoon_engine::retry::RetryPolicy;
use pontoon_engine::state::StateStore;
use pontoon_engine::verify::{VerifyContext, VerifyOptions, VerifyReport, verify};
use pontoon_testsupport::{TempDir, TestDb, mysql_db, pg_db, temp_dir};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Pg,
    My,
    Lite,
}

/// A database of one engine, alive for the test.
struct Side {
    url: String,
    _db: Option<TestDb>,
    _dir: Option<TempDir>,
}

fn side(kind: Kind, role: &str) -> Side {
    match kind {
        Kind::Pg => {
            let db = pg_db();
            Side { url: db.url.clone(), _db: Some(db), _dir: None }
        }
        Kind::My => {
            let db = mysql_db();
            Side { url: db.url.clone(), _db: Some(db), _dir: None }
        }
        Kind::Lite => {
            let dir = temp_dir(&format!("pontoon-pair-{role}"));
            Side {
                url: format!("sqlite:{}", dir.path().join(format!("{role}.db")).display()),
                _db: None,
                _dir: Some(dir),
            }
        }
    }
}

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), ty, nullable, native: String::new(), has_default: false }
}

fn dec(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).expect("decimal"))
}

fn ts(s: &str) -> i64 {
    parse_timestamp(s).expect("timestamp").0
}

/// The all-types table. Unsigned columns only where the source engine has them.
fn all_types_schema(source: Kind) -> TableSchema {
    let mut columns = vec![
        col("id", ColumnType::I64, false),
        col("b", ColumnType::Bool, true),
        col("i16", ColumnType::Int { bytes: 2, unsigned: false }, true),
        col("i32", ColumnType::I32, true),
        col("i64", ColumnType::I64, true),
        col("f32", ColumnType::Float32, true),
        col("f64", ColumnType::Float64, true),
        col("d_small", ColumnType::Decimal { precision: Some(10), scale: Some(3) }, true),
        col("d_big", ColumnType::Decimal { precision: Some(38), scale: Some(10) }, true),
        col("txt", ColumnType::TEXT, true),
        col("vc", ColumnType::Text { max_chars: Some(20) }, true),
        col("bin", ColumnType::Bytes { max_bytes: None }, true),
        col("d", ColumnType::Date, true),
        col("t", ColumnType::Time, true),
        col("ts", ColumnType::Timestamp, true),
        col("tstz", ColumnType::TimestampTz, true),
        col("j", ColumnType::Json, true),
        col("u", ColumnType::Uuid, true),
    ];
    if !matches!(source, Kind::Pg) {
        columns.push(col("u8", ColumnType::Int { bytes: 1, unsigned: true }, true));
        columns.push(col("u32", ColumnType::Int { bytes: 4, unsigned: true }, true));
        columns.push(col("u64", ColumnType::Int { bytes: 8, unsigned: true }, true));
    }
    TableSchema { name: "all_types".into(), columns, primary_key: vec!["id".into()] }
}

/// Rows both engines can hold (extremes beyond the common ranges are tested in the
/// connector crates and by the refusal tests). SQLite cannot hold integers above
/// 2^63-1; only PostgreSQL keeps -0.0.
fn all_types_rows(source: Kind, target: Kind, bulk: i64) -> Vec<Row> {
    let sqlite = matches!(source, Kind::Lite) || matches!(target, Kind::Lite);
    let big_u64 = !sqlite;
    // SQLite and MariaDB store -0.0 as 0, so their writers refuse -0.0
    let neg_zero = if matches!((source, target), (Kind::Pg, Kind::Pg)) { -0.0 } else { f32::MIN_POSITIVE };
    let u64_top = if big_u64 { u64::MAX } else { i64::MAX as u64 };
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut rows = vec![
        vec![
            Value::Int(-5),
            Value::Bool(true),
            Value::Int(i16::MIN as i64),
            Value::Int(i32::MIN as i64),
            Value::Int(i64::MIN),
            Value::F32(neg_zero),
            Value::F64(0.1),
            dec("-1234567.125"),
            dec("-1234567890123456789012345678.0123456789"),
            Value::Text("😀 emoji, ünïcödé, 'quotes' \\ backslash\ttab\nnewline".into()),
            Value::Text(String::new()),
            Value::Bytes(all_bytes),
            Value::Date(parse_date("1000-01-01").unwrap()),
            Value::Time(0),
            Value::Timestamp(ts("1000-01-01 00:00:00.000001")),
            Value::TimestampTz(ts("1969-12-31 23:59:59.999999Z")),
            Value::Json(r#"{"b": 1, "a": [1, 2.5, {"c": null}], "s": "😀"}"#.into()),
            Value::Uuid(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()),
        ],
        vec![
            Value::Int(0),
            Value::Bool(false),
            Value::Int(i16::MAX as i64),
            Value::Int(i32::MAX as i64),
            Value::Int(i64::MAX),
            Value::F32(f32::MAX),
            Value::F64(f64::MIN_POSITIVE / 4.0),
            dec("9999999.999"),
            dec("0.0000000001"),
            Value::Text(String::new()),
            Value::Text("exactly twenty chars".into()),
            Value::Bytes(Vec::new()),
            Value::Date(parse_date("9999-12-31").unwrap()),
            Value::Time(parse_time("23:59:59.999999").unwrap()),
            Value::Timestamp(ts("9999-12-31 23:59:59.999999")),
            Value::TimestampTz(ts("2038-01-19 03:14:08.5Z")),
            Value::Json("[]".into()),
            Value::Uuid([0; 16]),
        ],
        {
            let mut r = vec![Value::Int(7)];
            r.extend(std::iter::repeat_n(Value::Null, 17));
            r
        },
    ];
    if !matches!(source, Kind::Pg) {
        rows[0].extend([Value::Int(0), Value::Int(0), Value::Int(0)]);
        rows[1].extend([Value::Int(255), Value::Int(u32::MAX as i64), Value::from_u64(u64_top)]);
        rows[2].extend([Value::Null, Value::Null, Value::Null]);
    }
    for i in 1..=bulk {
        let id = if i % 2 == 0 { i } else { -i - 10 };
        let mut r = vec![
            Value::Int(id),
            Value::Bool(i % 3 == 0),
            Value::Int(i % 30_000),
            Value::Int(i * 1000),
            Value::Int(i * 1_000_000_007),
            Value::F32(i as f32 / 7.0),
            Value::F64(i as f64 / 3.0),
            dec(&format!("{}.{:03}", i, i % 1000)),
            dec(&format!("{}.{:010}", i * 7919, i)),
            Value::Text(format!("row {i} ✓ {}", "x".repeat((i % 50) as usize))),
            if i % 4 == 0 { Value::Null } else { Value::Text(format!("v{i}")) },
            Value::Bytes(vec![(i % 256) as u8; (i % 40) as usize]),
            Value::Date(parse_date("2024-02-29").unwrap() + (i % 400) as i32),
            Value::Time(i * 1_234_567 % 86_400_000_000),
            Value::Timestamp(ts("2024-01-01 00:00:00") + i * 3_600_000_123),
            Value::TimestampTz(ts("1999-12-31 23:00:00Z") + i * 61_000_001),
            Value::Json(format!(r#"{{"n": {i}, "tags": ["a", "b"]}}"#)),
            Value::Uuid({
                let mut u = [0u8; 16];
                u[8..].copy_from_slice(&(i as u64).to_be_bytes());
                u
            }),
        ];
        if !matches!(source, Kind::Pg) {
            r.extend([Value::Int(i % 256), Value::Int(i * 100_000), Value::from_u64(u64_top - i as u64)]);
        }
        rows.push(r);
    }
    rows
}

fn composite_schema() -> TableSchema {
    TableSchema {
        name: "regions".into(),
        columns: vec![
            col("region", ColumnType::Text { max_chars: Some(16) }, false),
            col("n", ColumnType::I32, false),
            col("payload", ColumnType::TEXT, true),
        ],
        primary_key: vec!["region".into(), "n".into()],
    }
}

fn composite_rows() -> Vec<Row> {
    let regions = ["", "A", "B", "a", "a ", "b", "é", "z😀"];
    let mut rows = Vec::new();
    for (ri, r) in regions.iter().enumerate() {
        for n in -20..=20i64 {
            rows.push(vec![Value::Text(r.to_string()), Value::Int(n), Value::Text(format!("{ri}:{n}"))]);
        }
    }
    rows
}

async fn fill(url: &str, base: &Path, schema: &TableSchema, rows: &[Row]) {
    let c = connector(&SecretUrl::new(url), base).expect("connector");
    let mut w = c.writer().await.expect("writer");
    w.create_table(schema).await.expect("create source table");
    for batch in rows.chunks(500) {
        w.upsert(schema, batch).await.expect("fill source");
    }
}

/// Reads a whole table in key order through a connector (used on the target).
async fn read_all(c: &dyn Connector, table: &str) -> (TableSchema, Vec<Row>) {
    let mut r = c.reader().await.expect("reader");
    let schema = r.describe(table).await.expect("describe").expect("target table exists");
    let spec = ScanSpec::every_column(&schema, &schema.primary_key);
    let rows = r.scan(&spec, &KeyRange::ALL).await.expect("scan target");
    (schema, rows)
}

/// The form in which a value must arrive, given the documented mapping
/// (docs/type-mapping.md): JSON compared semantically, `timestamptz` stored by
/// MariaDB (on either side) as a UTC `datetime`, unsigned 64-bit into PostgreSQL as
/// `numeric(20,0)`.
fn expected(v: &Value, engines: (Engine, Engine), target_ty: &ColumnType) -> Value {
    let mysql_involved = engines.0 == Engine::Mysql || engines.1 == Engine::Mysql;
    match (v, target_ty) {
        (Value::Json(s), _) => Value::Json(serde_json::from_str::<serde_json::Value>(s).expect("json").to_string()),
        (Value::TimestampTz(t), _) if mysql_involved => Value::Timestamp(*t),
        (Value::Int(i), ColumnType::Decimal { .. }) => Value::Decimal(Decimal::from_i128(*i as i128)),
        (Value::UInt(u), ColumnType::Decimal { .. }) => Value::Decimal(Decimal::from_i128(*u as i128)),
        _ => v.clone(),
    }
}

fn normalize_read(v: Value) -> Value {
    match v {
        Value::Json(s) => Value::Json(serde_json::from_str::<serde_json::Value>(&s).expect("json").to_string()),
        v => v,
    }
}

fn sort_by_key(rows: &mut [Row], key_positions: &[usize]) {
    rows.sort_by(|a, b| {
        for &k in key_positions {
            let o = format!("{:?}", a[k]).cmp(&format!("{:?}", b[k]));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

async fn round_trip(src: Kind, dst: Kind) {
    let work = temp_dir("pontoon-pair-job");
    let source = side(src, "source");
    let target = side(dst, "target");
    let all_schema = all_types_schema(src);
    let all_rows = all_types_rows(src, dst, 600);
    let comp_rows = composite_rows();
    fill(&source.url, work.path(), &all_schema, &all_rows).await;
    fill(&source.url, work.path(), &composite_schema(), &comp_rows).await;

    let job_text = format!(
        "[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n[copy]\nworkers = 3\nchunk_rows = 47\n\
         [verify]\nchunk_rows = 11\n",
        source.url, target.url
    );
    let job_path = work.path().join("job.toml");
    std::fs::write(&job_path, &job_text).unwrap();
    let job = Job::load(&job_path).expect("job");
    let s = connector(&job.source, &job.base_dir).unwrap();
    let t = connector(&job.target, &job.base_dir).unwrap();
    let plan = plan(&job, s.as_ref(), t.as_ref()).await.expect("plan");
    assert_eq!(plan.tables.len(), 2, "both tables planned");
    let ctx = CopyContext {
        source: s.clone(),
        target: t.clone(),
        state: Arc::new(StateStore::open(&job.state_path()).unwrap()),
        settings: job.copy.clone(),
        progress: Arc::new(Progress::new(
            plan.tables.iter().map(|t| (t.job.source.clone(), t.target_name().into(), t.estimated_rows)),
        )),
        stop: Arc::new(AtomicBool::new(false)),
        retry: RetryPolicy::default(),
        tracker: Default::default(),
    };
    let report = copy(&ctx, &plan).await.expect("copy");
    assert!(!report.failed(), "copy failed: {report:?}");
    assert_eq!(report.rows, (all_rows.len() + comp_rows.len()) as u64);
    let all_report = report.tables.iter().find(|r| r.table == "all_types").unwrap();
    // PostgreSQL -> PostgreSQL keeps the exact types, so its chunks pass through in
    // binary COPY format; every other pair decodes and fits each value
    let expected_path = if matches!((src, dst), (Kind::Pg, Kind::Pg)) { "raw" } else { "rows" };
    assert!(report.tables.iter().all(|t| t.path == expected_path), "{report:?}");
    assert!(all_report.chunks_total > 10, "a table of {} rows in chunks of 47 spans many chunks", all_rows.len());

    let engines = (s.engine(), t.engine());
    let tables = [(all_schema.clone(), all_rows.clone()), (composite_schema(), comp_rows.clone())];
    assert_target_is_truth(t.as_ref(), engines, &tables, (src, dst)).await;
    // the state store says every chunk was copied exactly once
    let state = StateStore::open(&job.state_path()).unwrap();
    for table in ["all_types", "regions"] {
        for c in state.chunks(table).unwrap() {
            assert!(c.done && c.completions == 1 && c.attempts == 1, "{table} chunk {}: {c:?}", c.seq);
        }
    }

    // verify: what was copied has no difference, in any type pair
    let vctx = VerifyContext {
        source: s.clone(),
        target: t.clone(),
        state: Arc::new(StateStore::open(&job.state_path()).unwrap()),
        settings: job.verify.clone(),
        retry: RetryPolicy::default(),
        stop: Arc::new(AtomicBool::new(false)),
        report_path: work.path().join("verify.jsonl"),
        live: false,
        job_name: "pairs".into(),
    };
    let clean = verify(&vctx, &plan, &VerifyOptions::default()).await.expect("verify");
    assert_eq!(
        (clean.differences, clean.rows_compared),
        (0, (all_rows.len() + comp_rows.len()) as u64),
        "{src:?}->{dst:?}: false differences in a faithful copy: {}",
        std::fs::read_to_string(&vctx.report_path).unwrap_or_default()
    );
    assert!(clean.tables.iter().all(|t| t.chunks > 5), "small chunks: {clean:?}");
    // same engine, identical types: the databases' checksums settle every equal chunk
    // (SQLite has no checksum: its chunks are compared row by row)
    if matches!((src, dst), (Kind::Pg, Kind::Pg) | (Kind::My, Kind::My)) {
        assert!(clean.tables.iter().all(|t| t.chunks_by_checksum == t.chunks), "{clean:?}");
    }
    // PostgreSQL <-> MariaDB: `regions` (text and integers) is settled by the
    // portable digest; `all_types` has floats, JSON and times, compared row by row
    if matches!((src, dst), (Kind::Pg, Kind::My) | (Kind::My, Kind::Pg)) {
        let by_checksum = |name: &str| clean.tables.iter().find(|t| t.table == name).map(|t| t.chunks_by_checksum);
        assert_eq!(by_checksum("regions"), clean.tables.iter().find(|t| t.table == "regions").map(|t| t.chunks));
        assert_eq!(by_checksum("all_types"), Some(0), "{clean:?}");
    }

    let injected = inject_differences(t.as_ref(), &all_schema).await;
    let found = verify(&vctx, &plan, &VerifyOptions::default()).await.expect("verify");
    let run = vctx.state.last_verify_run().unwrap().unwrap().id;
    let mut got: Vec<(Vec<Value>, String, Vec<String>)> =
        vctx.state.verify_diffs(run).unwrap().into_iter().map(|d| (d.key, d.kind, d.columns)).collect();
    got.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(got, injected, "{src:?}->{dst:?}: verify found other differences than those injected");
    assert_eq!(found.differences, injected.len() as u64);
    let report_lines = std::fs::read_to_string(&vctx.report_path).unwrap().lines().count();
    assert_eq!(report_lines, injected.len(), "one report line per difference");

    let repaired: VerifyReport =
        verify(&vctx, &plan, &VerifyOptions { repair: true, ..Default::default() }).await.expect("repair");
    assert_eq!(repaired.differences, 0, "{src:?}->{dst:?}: repair left differences: {repaired:?}");
    assert_eq!(repaired.rounds.len(), 1, "{repaired:?}");
    assert_target_is_truth(t.as_ref(), engines, &tables, (src, dst)).await;
}

/// Reads every table of `tables` from the target and compares it with the truth,
/// value by value, through the documented mapping (not through verify's code).
async fn assert_target_is_truth(
    t: &dyn Connector,
    engines: (Engine, Engine),
    tables: &[(TableSchema, Vec<Row>)],
    pair: (Kind, Kind),
) {
    let (src, dst) = pair;
    for (schema, rows) in tables {
        let (tschema, mut got) = read_all(t, &schema.name).await;
        assert_eq!(
            tschema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
        );
        let key_pos: Vec<usize> = schema.primary_key.iter().map(|k| schema.position(k).unwrap()).collect();
        let mut want: Vec<Row> = rows
            .iter()
            .map(|r| r.iter().zip(&tschema.columns).map(|(v, c)| expected(v, engines, &c.ty)).collect())
            .collect();
        got = got.into_iter().map(|r| r.into_iter().map(normalize_read).collect()).collect();
        sort_by_key(&mut want, &key_pos);
        sort_by_key(&mut got, &key_pos);
        assert_eq!(got.len(), want.len(), "{}: row count", schema.name);
        for (g, w) in got.iter().zip(&want) {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_eq!(
                    gv, wv,
                    "{:?}->{:?} table {} key {:?} column {}",
                    src, dst, schema.name, &w[key_pos[0]], schema.columns[i].name
                );
            }
        }
    }
}

/// Writes differences into the target's `all_types` through its writer: row 12 is
/// deleted, row 1000000 added, one bulk row per column gets another value in that
/// column, row 0's empty `txt` becomes NULL, and row 40's JSON is rewritten with its
/// keys in another order (the same document: not a difference). Returns the
/// differences verify must report, as (key, kind, columns), sorted.
async fn inject_differences(t: &dyn Connector, schema: &TableSchema) -> Vec<(Vec<Value>, String, Vec<String>)> {
    let (tschema, rows) = read_all(t, &schema.name).await;
    let by_id = |id: i64| rows.iter().find(|r| r[0] == Value::Int(id)).unwrap_or_else(|| panic!("row {id}")).clone();
    let mut want = Vec::new();
    let mut upserts = Vec::new();
    // one changed value per column, each in its own bulk row (ids 110, 120, ... or the
    // next even one where that column is NULL)
    for (ci, c) in tschema.columns.iter().enumerate().skip(1) {
        let mut id = 100 + 10 * ci as i64;
        let mut row = by_id(id);
        while row[ci].is_null() {
            id += 2;
            row = by_id(id);
        }
        row[ci] = perturb(&row[ci]);
        upserts.push(row);
        want.push((vec![Value::Int(id)], "changed".to_string(), vec![c.name.clone()]));
    }
    let mut row0 = by_id(0);
    let txt = tschema.position("txt").unwrap();
    assert_eq!(row0[txt], Value::Text(String::new()));
    row0[txt] = Value::Null;
    upserts.push(row0);
    want.push((vec![Value::Int(0)], "changed".into(), vec!["txt".into()]));
    let mut reordered = by_id(40);
    let j = tschema.position("j").unwrap();
    reordered[j] = Value::Json(r#"{ "tags" : ["a","b"],"n":40 }"#.into());
    upserts.push(reordered);
    let mut extra = by_id(44);
    extra[0] = Value::Int(1_000_000);
    upserts.push(extra);
    want.push((vec![Value::Int(1_000_000)], "extra".into(), vec![]));
    want.push((vec![Value::Int(12)], "missing".into(), vec![]));
    let mut w = t.writer().await.expect("writer");
    w.apply(&tschema, &upserts, &[vec![Value::Int(12)]], None).await.expect("inject differences");
    want.sort_by_key(|d| format!("{d:?}"));
    want
}

/// Another value of the same type, close to the original (a float's last bit, a
/// microsecond or a second, one character, one byte).
fn perturb(v: &Value) -> Value {
    match v {
        Value::Bool(b) => Value::Bool(!b),
        Value::Int(i) => Value::Int(i ^ 1),
        Value::UInt(u) => Value::from_u64(u ^ 1),
        Value::F32(x) => Value::F32(f32::from_bits(x.to_bits() ^ 1)),
        Value::F64(x) => Value::F64(f64::from_bits(x.to_bits() ^ 1)),
        Value::Decimal(d) => {
            let mut s = d.as_str().to_string();
            let last = s.pop().unwrap();
            s.push(if last == '9' { '8' } else { char::from(last as u8 + 1) });
            dec(&s)
        }
        Value::Text(s) => {
            let mut s = s.clone();
            let last = s.pop().unwrap_or('a');
            s.push(if last == 'Z' { 'Y' } else { 'Z' });
            Value::Text(s)
        }
        Value::Bytes(b) => {
            let mut b = b.clone();
            match b.first_mut() {
                Some(x) => *x ^= 1,
                None => b.push(1),
            }
            Value::Bytes(b)
        }
        Value::Date(d) => Value::Date(d + 1),
        Value::Time(t) => Value::Time((t + 1_000_000) % 86_400_000_000),
        Value::Timestamp(t) => Value::Timestamp(t + 1),
        Value::TimestampTz(t) => Value::TimestampTz(t + 1),
        Value::Json(_) => Value::Json(r#"{"changed": true}"#.into()),
        Value::Uuid(u) => {
            let mut u = *u;
            u[15] ^= 1;
            Value::Uuid(u)
        }
        Value::Null => panic!("no value to change"),
    }
}

#[tokio::test]
async fn pg_to_pg() {
    round_trip(Kind::Pg, Kind::Pg).await;
}

#[tokio::test]
async fn mysql_to_mysql() {
    round_trip(Kind::My, Kind::My).await;
}

#[tokio::test]
async fn mysql_to_pg() {
    round_trip(Kind::My, Kind::Pg).await;
}

#[tokio::test]
async fn pg_to_mysql() {
    round_trip(Kind::Pg, Kind::My).await;
}

#[tokio::test]
async fn sqlite_to_pg() {
    round_trip(Kind::Lite, Kind::Pg).await;
}

#[tokio::test]
async fn sqlite_to_mysql() {
    round_trip(Kind::Lite, Kind::My).await;
}

#[tokio::test]
async fn pg_to_sqlite() {
    round_trip(Kind::Pg, Kind::Lite).await;
}

#[tokio::test]
async fn mysql_to_sqlite() {
    round_trip(Kind::My, Kind::Lite).await;
}

#[tokio::test]
async fn sqlite_to_sqlite() {
    round_trip(Kind::Lite, Kind::Lite).await;
}

/// `Digest::Portable`: MariaDB's checksum of a table equals pontoon's hash of the
/// same values read from PostgreSQL (and from MariaDB); each single change on the
/// MariaDB side (a value in any column, NULL for '', a missing row, text moved
/// between two columns across the separator) makes them differ, and undoing it
/// makes them agree again.
#[tokio::test]
async fn portable_checksums_agree_across_engines_and_see_every_change() {
    use pontoon_engine::core::Digest;
    let work = temp_dir("pontoon-portable");
    let full = all_types_schema(Kind::Pg);
    let keep: Vec<usize> =
        (0..full.columns.len()).filter(|&i| Digest::portable(&full.columns[i].ty, &full.columns[i].ty)).collect();
    assert!(keep.len() >= 10, "most types are portable: {keep:?}");
    let schema = TableSchema {
        name: "portable".into(),
        columns: keep.iter().map(|&i| full.columns[i].clone()).collect(),
        primary_key: vec!["id".into()],
    };
    let project = |r: &Row| -> Row { keep.iter().map(|&i| r[i].clone()).collect() };
    let mut rows: Vec<Row> = all_types_rows(Kind::Pg, Kind::My, 200).iter().map(project).collect();
    let (txt, vc) = (schema.position("txt").unwrap(), schema.position("vc").unwrap());
    rows[1][txt] = Value::Text("a,b".into());
    rows[1][vc] = Value::Text("c".into());
    let (pg, my) = (side(Kind::Pg, "pg"), side(Kind::My, "my"));
    fill(&pg.url, work.path(), &schema, &rows).await;
    fill(&my.url, work.path(), &schema, &rows).await;
    let connect = |url: &str| connector(&SecretUrl::new(url), work.path()).unwrap();
    let (pg_c, my_c) = (connect(&pg.url), connect(&my.url));
    let (mut pg_r, mut my_r) = (pg_c.reader().await.unwrap(), my_c.reader().await.unwrap());
    let pg_scan = {
        let s = pg_r.describe("portable").await.unwrap().unwrap();
        ScanSpec::every_column(&s, &s.primary_key)
    };
    let my_scan = {
        let s = my_r.describe("portable").await.unwrap().unwrap();
        ScanSpec::every_column(&s, &s.primary_key)
    };
    for (p, m) in pg_scan.select.iter().zip(&my_scan.select) {
        assert!(Digest::portable(&p.ty, &m.ty), "{p:?} / {m:?}");
    }
    let of_rows = |rows: &[Row]| Digest::Portable.of_rows(rows).expect("portable types only");
    let pg_sum = of_rows(&pg_r.scan(&pg_scan, &KeyRange::ALL).await.unwrap());
    assert_eq!(pg_sum.rows, rows.len() as u64);
    assert_eq!(of_rows(&my_r.scan(&my_scan, &KeyRange::ALL).await.unwrap()), pg_sum, "read from either engine");
    assert_eq!(portable_sum(my_r.as_mut(), &my_scan).await, pg_sum, "MariaDB's own, of equal values");

    let mut w = my_c.writer().await.unwrap();
    let mut change = async |what: &str, upserts: Vec<Row>, deletes: Vec<Vec<Value>>, undo: Vec<Row>| {
        w.apply(&schema, &upserts, &deletes, None).await.unwrap();
        assert_ne!(portable_sum(my_r.as_mut(), &my_scan).await, pg_sum, "{what} changes the checksum");
        w.apply(&schema, &undo, &[], None).await.unwrap();
        assert_eq!(portable_sum(my_r.as_mut(), &my_scan).await, pg_sum, "{what} undone");
    };
    let bulk = rows.iter().position(|r| r[0] == Value::Int(100)).unwrap();
    for (ci, c) in schema.columns.iter().enumerate().skip(1) {
        let mut row = rows[bulk].clone();
        if row[ci].is_null() {
            row[ci] = rows[0][ci].clone();
        } else {
            row[ci] = perturb(&row[ci]);
        }
        change(&format!("a value of {}", c.name), vec![row], vec![], vec![rows[bulk].clone()]).await;
    }
    let mut null_for_empty = rows[0].clone();
    assert_eq!(null_for_empty[vc], Value::Text(String::new()));
    null_for_empty[vc] = Value::Null;
    change("NULL for ''", vec![null_for_empty], vec![], vec![rows[0].clone()]).await;
    let mut shifted = rows[1].clone();
    shifted[txt] = Value::Text("a".into());
    shifted[vc] = Value::Text("b,c".into());
    change("text moved across the separator", vec![shifted], vec![], vec![rows[1].clone()]).await;
    change("a missing row", vec![], vec![vec![rows[bulk][0].clone()]], vec![rows[bulk].clone()]).await;
}

async fn portable_sum(r: &mut dyn pontoon_engine::core::Reader, scan: &ScanSpec) -> pontoon_engine::core::Checksum {
    let digest = pontoon_engine::core::Digest::Portable;
    r.checksum(scan, &KeyRange::ALL, digest).await.unwrap().expect("the engine computes portable checksums")
}
