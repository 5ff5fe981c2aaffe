//! Every engine pair copies every value type exactly, against real servers.
//!
//! The source table is created and filled through the source connector from a list
//! of expected values (the truth); after `copy`, the target is read back and every
//! value is compared with the truth, one by one. Keys include zero and negatives; a
//! second table has a composite (text, int) key; chunks are small so a table spans
//! many chunks and several workers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pontoon_engine::connect::connector;
use pontoon_engine::copy::{CopyContext, copy};
use pontoon_engine::core::value::{parse_date, parse_time, parse_timestamp, parse_uuid};
use pontoon_engine::core::{
    Column, ColumnType, Connector, Decimal, Engine, KeyRange, Row, ScanSpec, SecretUrl, SelectExpr, SelectItem,
    TableSchema, Value,
};
use pontoon_engine::job::Job;
use pontoon_engine::plan::plan;
use pontoon_engine::progress::Progress;
use pontoon_engine::retry::RetryPolicy;
use pontoon_engine::state::StateStore;
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
    let spec = ScanSpec {
        table: table.into(),
        select: schema
            .columns
            .iter()
            .map(|c| SelectItem { expr: SelectExpr::Column(c.name.clone()), ty: c.ty.clone() })
            .collect(),
        key: schema.primary_key.clone(),
        key_types: schema.primary_key.iter().map(|k| schema.column(k).unwrap().ty.clone()).collect(),
        filter: None,
        partition: None,
    };
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
        "[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n[copy]\nworkers = 3\nchunk_rows = 47\n",
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

    for (schema, rows) in [(&all_schema, &all_rows), (&composite_schema(), &comp_rows)] {
        let (tschema, mut got) = read_all(t.as_ref(), &schema.name).await;
        assert_eq!(
            tschema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
        );
        let key_pos: Vec<usize> = schema.primary_key.iter().map(|k| schema.position(k).unwrap()).collect();
        let engines = (s.engine(), t.engine());
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

    // the state store says every chunk was copied exactly once
    let state = StateStore::open(&job.state_path()).unwrap();
    for table in ["all_types", "regions"] {
        for c in state.chunks(table).unwrap() {
            assert!(c.done && c.completions == 1 && c.attempts == 1, "{table} chunk {}: {c:?}", c.seq);
        }
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
